//! `agentflow diff <run-a> <run-b>`: where two runs (typically a run and its fork)
//! first differ, and how their outcomes, costs and tokens compare.
//!
//! Calls are compared task by task in sequence order, on what the guest asked (kind,
//! request hash) and what it got back (response, model); clock/random flushes and
//! scheduler decisions are left out. Calls are named by their event seq, as
//! `agentflow events` lists them and `fork --at` takes them.

use crate::ledger::Connection;
use crate::ledger::EventKind;
use crate::ledger::LedgerError;
use crate::ledger::query::{self, EventRow, RunRow};
use serde::Serialize;
use std::fmt::Write as _;

/// One side of a divergence.
#[derive(Debug, Serialize)]
pub struct CallView {
    pub seq: u64,
    pub kind: EventKind,
    pub model: Option<String>,
    pub response: String,
}

/// The first call at which the runs differ.
#[derive(Debug, Serialize)]
pub struct Divergence {
    pub task_id: u64,
    /// The event seq of the differing call in run a (in run b when a has no such
    /// call): the numbering of `agentflow events` and `fork --at`. Each side's own seq
    /// is in `a` and `b` (a fork's record has one more event, `fork.copied`).
    pub seq: u64,
    pub a: Option<CallView>,
    pub b: Option<CallView>,
}

/// The comparison.
#[derive(Debug, Serialize)]
pub struct Diff {
    pub a: RunRow,
    pub b: RunRow,
    pub first_divergence: Option<Divergence>,
    pub same_output: bool,
    pub cost_delta_usd: f64,
    pub tokens_delta: i64,
}

fn view(e: &EventRow) -> CallView {
    let mut response = e.response.to_string();
    if response.len() > 160 {
        let mut cut = 160;
        while !response.is_char_boundary(cut) {
            cut -= 1;
        }
        response.truncate(cut);
        response.push('…');
    }
    CallView {
        seq: e.seq,
        kind: e.kind.clone(),
        model: e.model.clone(),
        response,
    }
}

/// A response without what varies between identical calls (latency).
fn comparable(v: &serde_json::Value) -> serde_json::Value {
    let mut v = v.clone();
    if let Some(map) = v.as_object_mut() {
        map.remove("latency_ms");
    }
    v
}

fn calls(conn: &Connection, run: &str, task: u64) -> Result<Vec<EventRow>, LedgerError> {
    Ok(query::events(conn, run, Some(task))?
        .into_iter()
        .filter(|e| e.kind.is_replayed())
        .collect())
}

/// Compare runs `a` and `b` (ids or unique prefixes).
pub fn diff(conn: &Connection, a: &str, b: &str) -> anyhow::Result<Diff> {
    let ra = query::run(conn, a)?.ok_or_else(|| anyhow::anyhow!("no run `{a}`"))?;
    let rb = query::run(conn, b)?.ok_or_else(|| anyhow::anyhow!("no run `{b}`"))?;
    let mut task_ids: Vec<u64> = query::tasks(conn, &ra.run_id)?
        .into_iter()
        .chain(query::tasks(conn, &rb.run_id)?)
        .map(|t| t.task_id)
        .collect();
    task_ids.sort_unstable();
    task_ids.dedup();
    let mut first = None;
    for task in task_ids {
        let (ca, cb) = (
            calls(conn, &ra.run_id, task)?,
            calls(conn, &rb.run_id, task)?,
        );
        for i in 0..ca.len().max(cb.len()) {
            let (ea, eb) = (ca.get(i), cb.get(i));
            let same = match (ea, eb) {
                (Some(x), Some(y)) => {
                    x.kind == y.kind
                        && x.request_hash == y.request_hash
                        && comparable(&x.response) == comparable(&y.response)
                        && x.model == y.model
                }
                _ => false,
            };
            if !same {
                first = Some(Divergence {
                    task_id: task,
                    seq: ea.or(eb).map_or(0, |e| e.seq),
                    a: ea.map(view),
                    b: eb.map(view),
                });
                break;
            }
        }
        if first.is_some() {
            break;
        }
    }
    Ok(Diff {
        same_output: ra.output == rb.output && ra.status == rb.status,
        cost_delta_usd: rb.cost_usd - ra.cost_usd,
        tokens_delta: (rb.tokens_in + rb.tokens_out) - (ra.tokens_in + ra.tokens_out),
        first_divergence: first,
        a: ra,
        b: rb,
    })
}

/// The comparison as text.
pub fn render(d: &Diff) -> String {
    let mut out = String::new();
    for (label, r) in [("a", &d.a), ("b", &d.b)] {
        let _ = writeln!(
            out,
            "{label}: run {} {}  ${:.6}  {} tok",
            r.run_id,
            r.status,
            r.cost_usd,
            r.tokens_in + r.tokens_out
        );
    }
    match &d.first_divergence {
        None => {
            let _ = writeln!(out, "no divergence: the same calls with the same results");
        }
        Some(div) => {
            let _ = writeln!(
                out,
                "first divergence: task {} at seq {}",
                div.task_id, div.seq
            );
            for (label, side) in [("a", &div.a), ("b", &div.b)] {
                match side {
                    Some(c) => {
                        let _ = writeln!(
                            out,
                            "  {label}: seq {} {} [{}] → {}",
                            c.seq,
                            c.kind,
                            c.model.as_deref().unwrap_or("-"),
                            c.response
                        );
                    }
                    None => {
                        let _ = writeln!(out, "  {label}: (no such call)");
                    }
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "outcome: {}; cost {:+.6} USD; tokens {:+}",
        if d.same_output {
            "same output"
        } else {
            "different output"
        },
        d.cost_delta_usd,
        d.tokens_delta
    );
    out
}
