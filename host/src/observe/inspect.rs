//! `agentflow inspect` and `agentflow runs`: render the ledger for people and for
//! `--json` consumers. Every text shown goes through [`clip`], which puts it on one
//! line and escapes the control characters a guest may have put in it.

use crate::ledger::Connection;
use crate::ledger::LedgerError;
use crate::ledger::query::{self, EventRow, RunRow, TaskRow};
use crate::ledger::{EventKind, Status};
use crate::supervisor::constraints::short_reason;
use crate::supervisor::{DecisionKind, HumanWait};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A run with its tasks and each task's steps and calls.
#[derive(Debug, Serialize)]
pub struct RunView {
    pub run: RunRow,
    pub tasks: Vec<TaskView>,
    /// The run's budget in the cluster's database, when its worker shared it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_budget: Option<crate::ledger::budgets::PoolView>,
    /// Its task ids, slots and locks in the cluster's database, likewise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_limits: Option<crate::ledger::run_limits::LimitsView>,
}

/// A task with its reasoning steps and a count of its calls by kind.
#[derive(Debug, Serialize)]
pub struct TaskView {
    #[serde(flatten)]
    pub task: TaskRow,
    pub steps: Vec<serde_json::Value>,
    pub calls: BTreeMap<String, u64>,
    pub refused: Vec<String>,
    /// The scheduler's choice per LLM call, and why.
    pub decisions: Vec<String>,
    /// CPU and time blocked in the host, summed over the task's attempts:
    /// `{cpu_ms, blocked_ms, wall_ms, wall_limit_ms}` (absent before any attempt ended).
    pub usage: Option<serde_json::Value>,
    /// The decision an unfinished task waits for (absent when it waits for none).
    pub waiting: Option<Waiting>,
    /// The worker that executed it, when the run offered it to a cluster's workers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offered_to: Option<crate::ledger::offers::Executor>,
}

/// A decision an unfinished task waits for, as the ledger holds it pending: shown as
/// `waiting: approval 3 (cost over $1)` in place of the task's status.
#[derive(Debug, Serialize)]
pub struct Waiting {
    pub kind: DecisionKind,
    /// The approval, review or conflict id.
    pub id: u64,
    /// Why, in short.
    pub reason: String,
    /// The command that answers it (the first of them).
    pub command: String,
}

impl Waiting {
    fn of(w: HumanWait, reason: String) -> Waiting {
        Waiting {
            kind: w.kind,
            id: w.id,
            reason,
            command: w.commands.into_iter().next().unwrap_or_default(),
        }
    }

    /// `waiting: approval 3 (cost over $1)`.
    pub fn text(&self) -> String {
        format!(
            "waiting: {} {} ({})",
            self.kind.as_str(),
            self.id,
            clip(&self.reason, 60)
        )
    }
}

/// The pending decisions of run `run_id`, by the task that waits for each.
fn pending_decisions(
    conn: &Connection,
    run_id: &str,
) -> Result<BTreeMap<u64, Waiting>, LedgerError> {
    let mut out = BTreeMap::new();
    for a in query::approvals(conn, false)? {
        if a.run_id == run_id {
            let w = HumanWait::approval(run_id, a.task_id, a.id, &a.reason);
            out.insert(a.task_id, Waiting::of(w, short_reason(&a.reason)));
        }
    }
    for r in crate::ledger::reviews::reviews(conn, false)? {
        if r.run_id == run_id {
            let w = HumanWait::review(run_id, r.task_id, r.id, &r.reason);
            let why = format!("{} [{}]", r.validator, r.category);
            out.insert(r.task_id, Waiting::of(w, why));
        }
    }
    for m in crate::ledger::merges::merges(conn, false)? {
        if m.run_id == run_id {
            let w = HumanWait::conflict(run_id, m.parent_task, m.child_task, m.id, "");
            let why = format!("{}: {}", m.category.as_str(), m.subject);
            out.insert(m.parent_task, Waiting::of(w, why));
        }
    }
    Ok(out)
}

/// Add one attempt's `task.usage` record into the task's total.
fn add_usage(total: &mut Option<serde_json::Value>, attempt: &serde_json::Value) {
    let total = total.get_or_insert_with(|| serde_json::json!({}));
    for key in ["cpu_ms", "blocked_ms", "wall_ms"] {
        let sum = total[key].as_u64().unwrap_or(0) + attempt[key].as_u64().unwrap_or(0);
        total[key] = sum.into();
    }
    total["wall_limit_ms"] = attempt["wall_limit_ms"].clone();
}

fn seconds(ms: u64) -> String {
    format!("{:.3}s", ms as f64 / 1000.0)
}

/// Load everything `inspect` shows for a run (id or unique prefix).
pub fn load(conn: &Connection, run: &str) -> Result<Option<RunView>, LedgerError> {
    let Some(mut run) = query::run(conn, run)? else {
        return Ok(None);
    };
    crate::ledger::leases::mark_interrupted(conn, std::slice::from_mut(&mut run))?;
    let tasks = query::tasks(conn, &run.run_id)?;
    let events = query::events(conn, &run.run_id, None)?;
    let mut waiting = pending_decisions(conn, &run.run_id)?;
    let mut executors = crate::ledger::offers::executors(conn, &run.run_id)?;
    let mut by_task: BTreeMap<u64, Vec<EventRow>> = BTreeMap::new();
    for e in events {
        by_task.entry(e.task_id).or_default().push(e);
    }
    let tasks = tasks
        .into_iter()
        .map(|task| {
            let evs = by_task.remove(&task.task_id).unwrap_or_default();
            let mut calls = BTreeMap::new();
            let mut steps = Vec::new();
            let mut refused = Vec::new();
            let mut decisions = Vec::new();
            let mut usage = None;
            for e in &evs {
                if e.kind == EventKind::TaskUsage {
                    add_usage(&mut usage, &e.response);
                    continue;
                }
                if e.kind == EventKind::ValidationResult {
                    let verdict = e.response["result"]["verdict"].as_str().unwrap_or("?");
                    let mark = match verdict {
                        "pass" => "✓",
                        "fail" => "✗",
                        _ => "?",
                    };
                    decisions.push(format!(
                        "{mark} validator {} [{}] {}{}",
                        e.request["validator"].as_str().unwrap_or("?"),
                        e.response["category"].as_str().unwrap_or("?"),
                        verdict,
                        e.response["result"]["reason"]
                            .as_str()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    ));
                }
                match e.kind {
                    EventKind::ValidatorCall
                        if e.request["call"] == EventKind::TraceStep.as_str() =>
                    {
                        decisions.push(format!(
                            "  validator {} thought: {}",
                            e.request["validator"].as_str().unwrap_or("?"),
                            e.request["request"]["thought"].as_str().unwrap_or("")
                        ));
                    }
                    EventKind::ValidationRollback => decisions.push(format!(
                        "↺ outcome validator {} failed{}",
                        e.request["validator"].as_str().unwrap_or("?"),
                        e.response["result"].as_str().unwrap_or("")
                    )),
                    EventKind::ReviewRequested => decisions.push(format!(
                        "⏸ review {} asked of a human (attempt {}): {}",
                        e.request["review_id"],
                        e.request["attempt"],
                        e.response["reason"].as_str().unwrap_or("")
                    )),
                    EventKind::ReviewDecided => decisions.push(format!(
                        "review {} decided: {}{}",
                        e.request["review_id"],
                        e.response["decision"].as_str().unwrap_or("?"),
                        e.response["note"]
                            .as_str()
                            .map(|n| format!(" — {n}"))
                            .unwrap_or_default()
                    )),
                    _ => {}
                }
                if e.kind == EventKind::LlmDecision {
                    decisions.push(format!(
                        "llm #{} → {}: {}",
                        e.seq,
                        e.response
                            .get("chosen")
                            .and_then(|v| v.as_str())
                            .unwrap_or("?"),
                        e.response
                            .get("reason")
                            .and_then(|v| v.as_str())
                            .unwrap_or("")
                    ));
                }
                if e.kind == EventKind::LlmAttempt {
                    decisions.push(attempt_line(e));
                }
                if e.kind == EventKind::TasksSpawn
                    && let Some(why) = e.request["decomposition_reasoning"].as_str()
                {
                    let child = e.response["task_id"]
                        .as_u64()
                        .map_or("(refused)".to_string(), |id| format!("task {id}"));
                    decisions.push(format!(
                        "spawn #{} → {child}, decomposed because: {why}",
                        e.seq
                    ));
                }
                if e.kind == EventKind::ToolsCall
                    && let Some(grant) = e.request["grant"].as_str()
                {
                    decisions.push(format!(
                        "tool `{}` #{} admitted by grant `{grant}`",
                        e.request["name"].as_str().unwrap_or("?"),
                        e.seq
                    ));
                }
                if e.kind == EventKind::MergeDecided || e.kind == EventKind::MergeResolved {
                    decisions.push(merge_line(e));
                }
                *calls.entry(e.kind.to_string()).or_insert(0) += 1;
                if e.kind == EventKind::TraceStep {
                    steps.push(e.request.clone());
                }
                if !e.ok
                    && (e.kind == EventKind::TasksSpawn
                        || e.kind == EventKind::LlmComplete
                        || e.kind == EventKind::ToolsCall)
                {
                    refused.push(format!("{} refused: {}", e.kind, error_text(&e.response)));
                }
            }
            let waiting = match task.status.is_finished() {
                true => None,
                false => waiting.remove(&task.task_id),
            };
            TaskView {
                offered_to: executors.remove(&task.task_id),
                task,
                steps,
                calls,
                refused,
                decisions,
                usage,
                waiting,
            }
        })
        .collect();
    let shared_budget = crate::ledger::budgets::view(conn, &run.run_id)?;
    let shared_limits = crate::ledger::run_limits::view(conn, &run.run_id)?;
    Ok(Some(RunView {
        run,
        tasks,
        shared_budget,
        shared_limits,
    }))
}

/// One line for a failed LLM attempt, e.g. `↻ llm attempt 1 on m: 429 rate limited
/// … after 12 ms, waited 1.0s`; a timed-out attempt adds its estimated charge.
fn attempt_line(e: &EventRow) -> String {
    let r = &e.response;
    let status = r["status"]
        .as_u64()
        .map(|s| format!("{s} "))
        .unwrap_or_default();
    let next = match r["wait_ms"].as_u64() {
        Some(ms) => format!("waited {:.1}s", ms as f64 / 1000.0),
        None => "gave up".to_string(),
    };
    let estimate = if r["tokens_estimated"] == true {
        format!(
            "; ~{} prompt tokens estimated, ${:.6} charged",
            e.tokens_in, e.cost_usd
        )
    } else {
        String::new()
    };
    format!(
        "↻ llm attempt {} on {}: {status}{} after {} ms, {next}{estimate}",
        e.request["attempt"].as_u64().unwrap_or(0),
        e.model.as_deref().unwrap_or("?"),
        clip(r["error"].as_str().unwrap_or("?"), 80),
        r["latency_ms"].as_u64().unwrap_or(0),
    )
}

/// One line for a merge decision or a human's resolution.
fn merge_line(e: &EventRow) -> String {
    let what = format!(
        "task {} {}",
        e.request["child"].as_u64().unwrap_or(0),
        e.request["subject"].as_str().unwrap_or("?")
    );
    if e.kind == EventKind::MergeResolved {
        return format!(
            "⇄ merge {what}: resolved by a human: {}",
            e.response["resolution"].as_str().unwrap_or("")
        );
    }
    format!(
        "⇄ merge {what}: {} {} — {}",
        e.response["category"].as_str().unwrap_or("?"),
        e.response["status"].as_str().unwrap_or("?"),
        clip(e.response["reasoning"].as_str().unwrap_or(""), 120)
    )
}

/// `s` on one line (runs of whitespace become one space), control characters escaped,
/// cut to `max` characters.
pub(crate) fn clip(s: &str, max: usize) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let one_line = crate::guest_text::escape_guest_text(&one_line).into_owned();
    if one_line.chars().count() > max {
        format!("{}…", one_line.chars().take(max).collect::<String>())
    } else {
        one_line
    }
}

/// Thousands separators: 4210 → "4,210".
pub fn group_digits(n: i64) -> String {
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A duration to the millisecond, as `--json` reports it (`duration_ms`).
fn duration(start: Option<i64>, end: Option<i64>) -> String {
    match (start, end) {
        (Some(s), Some(e)) => format!("{:.3}s", (e - s) as f64 / 1000.0),
        _ => "…".into(),
    }
}

/// A cost in USD: four decimals, or as many as it takes to show two significant
/// digits of a sub-cent cost (`$0.000015`), never rounding a real cost to `$0.0000`.
pub fn usd(x: f64) -> String {
    if x == 0.0 || x.abs() >= 0.001 {
        return format!("${x:.4}");
    }
    let decimals = ((-x.abs().log10()).ceil() as usize + 1).min(12);
    format!("${x:.decimals$}")
}

/// A recorded host-call error as a person reads it: the WIT error's name and its
/// detail (`provider-unavailable: connection refused`), not the Rust `Debug` form.
pub fn error_text(response: &serde_json::Value) -> String {
    match response.get("error_kind").and_then(|k| k.as_str()) {
        Some(kind) => match response.get("detail") {
            Some(serde_json::Value::String(d)) if !d.is_empty() => format!("{kind}: {d}"),
            Some(serde_json::Value::Null) | None => kind.to_string(),
            Some(d) => format!("{kind}: {d}"),
        },
        None => response
            .get("error")
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string(),
    }
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Completed => "ok",
        other => other.as_str(),
    }
}

/// The tree as text, e.g. `run 7f3a… researcher "Why?"  $0.0123  4,210 tok  0.8s  ok`.
pub fn render(view: &RunView) -> String {
    let mut out = String::new();
    let r = &view.run;
    let _ = writeln!(
        out,
        "run {} {} \"{}\"  {}  {} tok  {}  {}",
        &r.run_id[..r.run_id.len().min(8)],
        r.agent,
        clip(&r.input, 60),
        usd(r.cost_usd),
        group_digits(r.tokens_in + r.tokens_out),
        duration(Some(r.started_at), r.finished_at),
        status_word(r.status)
    );
    if let Some(e) = &r.error {
        let _ = writeln!(out, "  error: {}", clip(e, 200));
    }
    if let Some(pool) = &view.shared_budget {
        let p = &pool.root;
        let tokens = match p.token_limit {
            Some(limit) => format!(
                "; tokens {} of {} used, {} reserved",
                group_digits(p.tokens_used as i64),
                group_digits(limit as i64),
                group_digits(p.tokens_reserved as i64)
            ),
            None => String::new(),
        };
        let stale = match pool.stale_holds {
            0 => String::new(),
            n => format!(" ({n} of stopped workers)"),
        };
        let _ = writeln!(
            out,
            "  budget shared by the workers: {} spent of {}, {} held by {} call(s) in flight{stale}, {} in children's shares, at most {} committed at once{tokens}",
            usd(pool.spent_usd_total),
            usd(p.limit_usd),
            usd(p.reserved_usd),
            pool.holds,
            usd(p.carved_usd),
            usd(p.peak_usd),
        );
    }
    if let Some(l) = view.shared_limits.as_ref().filter(|l| l.slots_in_use > 0) {
        let locks: Vec<String> = (l.locks.iter())
            .map(|k| {
                format!(
                    "`{}` by task {} ({} pid {})",
                    k.name, k.task_id, k.host, k.pid
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "  limits shared by the workers: {} task slot(s) in use; locks held: {}",
            l.slots_in_use,
            if locks.is_empty() {
                "none".into()
            } else {
                locks.join(", ")
            }
        );
    }
    if r.status == Status::Waiting {
        let _ = writeln!(
            out,
            "  waiting: no host runs it while it waits for a human; answer the decisions below, then `agentflow resume {}`",
            r.run_id
        );
    }
    if r.status == Status::Interrupted {
        let _ = writeln!(
            out,
            "  interrupted: its host stopped before the run ended; continue it with `agentflow resume {}`",
            r.run_id
        );
    }
    let mut children: BTreeMap<Option<u64>, Vec<&TaskView>> = BTreeMap::new();
    for t in &view.tasks {
        children.entry(t.task.parent_id).or_default().push(t);
    }
    fn walk(
        out: &mut String,
        children: &BTreeMap<Option<u64>, Vec<&TaskView>>,
        parent: Option<u64>,
        prefix: &str,
    ) {
        let Some(kids) = children.get(&parent) else {
            return;
        };
        for (i, t) in kids.iter().enumerate() {
            let last = i + 1 == kids.len();
            let (branch, cont) = if last {
                ("└─ ", "    ")
            } else {
                ("├─ ", "│   ")
            };
            let tk = &t.task;
            let _ = writeln!(
                out,
                "{prefix}{branch}task {} \"{}\"  {}  {}  {} tok  {}  {}",
                tk.task_id,
                clip(&tk.description, 50),
                tk.model.as_deref().unwrap_or("-"),
                usd(tk.cost_usd),
                group_digits(tk.tokens_in + tk.tokens_out),
                duration(tk.started_at, tk.finished_at),
                match &t.waiting {
                    Some(w) => w.text(),
                    None => status_word(tk.status).to_string(),
                }
            );
            let inner = format!("{prefix}{cont}");
            if let Some(u) = &t.usage {
                let ms = |k: &str| u[k].as_u64().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "{inner}   cpu {} · blocked in host calls {} · wall {} of {} (limits.wall_ms / --timeout)",
                    seconds(ms("cpu_ms")),
                    seconds(ms("blocked_ms")),
                    seconds(ms("wall_ms")),
                    seconds(ms("wall_limit_ms"))
                );
            }
            if let Some(o) = &t.offered_to {
                let _ = writeln!(
                    out,
                    "{inner}   offered to the workers: {}{}",
                    match (&o.host, o.pid) {
                        (Some(host), Some(pid)) => format!("executed by {host} (pid {pid})"),
                        _ => "not claimed".to_string(),
                    },
                    match o.claims {
                        0 | 1 => String::new(),
                        n => format!(", claimed {n} times (taken over)"),
                    }
                );
            }
            if let Some(e) = &tk.error {
                let _ = writeln!(out, "{inner}   error: {}", clip(e, 160));
            }
            for r in &t.refused {
                let _ = writeln!(out, "{inner}   ✗ {}", clip(r, 160));
            }
            for d in &t.decisions {
                let _ = writeln!(out, "{inner}   {}", clip(d, 160));
            }
            for s in &t.steps {
                let get = |k: &str| s.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
                let _ = writeln!(
                    out,
                    "{inner}   step {} thought \"{}\" → action {} → \"{}\" ({:.2})",
                    s.get("step").and_then(|v| v.as_u64()).unwrap_or(0),
                    clip(&get("thought"), 60),
                    clip(&get("action"), 30),
                    clip(&get("observation"), 60),
                    s.get("confidence").and_then(|v| v.as_f64()).unwrap_or(0.0)
                );
            }
            walk(out, children, Some(tk.task_id), &inner);
        }
    }
    walk(&mut out, &children, None, "");
    out
}

/// The run list as a table: start time (UTC), forks marked with their origin.
pub fn render_runs(runs: &[RunRow]) -> String {
    let mut table = crate::table::Table::new()
        .left("run")
        .left("started (UTC)")
        .left("agent")
        .left("status")
        .right("cost")
        .right("tokens")
        .right("time")
        .left("input");
    for r in runs {
        // A fork is marked with where it came from: `fork of 855562fe@4`.
        let run = match (&r.forked_from, r.fork_seq) {
            (Some(from), Some(seq)) => {
                let from: String = from.chars().take(8).collect();
                format!("{}  fork of {from}@{seq}", r.run_id)
            }
            _ => r.run_id.clone(),
        };
        table.row([
            run,
            super::when::utc(r.started_at),
            clip(&r.agent, 14),
            r.status.to_string(),
            usd(r.cost_usd),
            group_digits(r.tokens_in + r.tokens_out),
            duration(Some(r.started_at), r.finished_at),
            clip(&r.input, 40),
        ]);
    }
    table.render()
}
