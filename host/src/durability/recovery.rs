//! Recovery plans: what to do, per failed or in-doubt task of a run, and applying
//! them (`agentflow recover <run> [--apply]`).
//!
//! * **Resume** — the task can continue from its last checkpoint (or its start):
//!   nothing it did to the world is in doubt.
//! * **Rollback** — the task's side effects can be reverted: each recorded effect of a
//!   tool with an `undo` operation, plus an in-doubt call of a compensable tool (its
//!   undo is harmless if it never acted). Applying runs the compensations in reverse
//!   order and records each as a `recovery.compensate` event.
//! * **RequiresHuman** — an irreversible tool may or may not have acted; a person must
//!   check the affected system before anything else happens.
//!
//! A failed task is planned with its whole subtree: a rollback reverts the effects of
//! the task and its descendants in reverse dependency order (whatever built on a task
//! is undone first), and a subtree with a completed effect of an irreversible tool —
//! which nothing can undo — needs a human instead. Each plan lists the completed
//! upstream tasks its work built on and every downstream task its failure reaches
//! (ancestors, dependents, and tasks waiting on a mutual exclusion), from
//! [`TaskGraph`].

use super::graph::TaskGraph;
use crate::ledger::query::{self, EventRow, ResumeTask};
use crate::ledger::{EventKind, EventRecord, Ledger, Status, now_ms};
use crate::tools::{ToolCallCtx, ToolSet};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashSet};

/// One side effect a rollback reverts.
#[derive(Clone, Debug, Serialize)]
pub struct Revert {
    pub task_id: u64,
    pub seq: u64,
    pub tool: String,
    pub undo: String,
    /// The recorded effect, or `null` for an in-doubt call.
    pub effect: Value,
    pub args: Value,
    pub in_doubt: bool,
}

/// What to do about one task.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type")]
pub enum Action {
    Resume {
        from_checkpoint: Option<u32>,
        note: Option<String>,
    },
    Rollback {
        tasks: Vec<u64>,
        side_effects: Vec<Revert>,
    },
    RequiresHuman {
        reason: String,
        affected_systems: Vec<String>,
        /// The command that records the human's answer ([`super::settle`]).
        settle: String,
    },
}

/// The plan for one task.
#[derive(Clone, Debug, Serialize)]
pub struct TaskPlan {
    pub task_id: u64,
    pub description: String,
    pub state: String,
    pub action: Action,
    /// Completed tasks whose results this task's work built on (`after`, `data_from`,
    /// transitively): they stand, and are not re-run.
    #[serde(default)]
    pub upstream: Vec<u64>,
    /// Every task this one's failure reaches ([`TaskGraph::downstream`]).
    pub downstream: Vec<u64>,
}

/// A run's recovery plan.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub run_id: String,
    pub run_status: Status,
    pub tasks: Vec<TaskPlan>,
}

/// Whether `event` is the recorded result of tool intent `intent` (a later
/// `tools.call` of the same task and call identity; a human's settlement is one).
pub(crate) fn answers(event: &EventRow, intent: &EventRow) -> bool {
    event.kind == EventKind::ToolsCall
        && event.task_id == intent.task_id
        && event.seq > intent.seq
        && event.request_hash == intent.request_hash
}

/// The intent at the end of a task's record that has no result, if any.
fn dangling_intent(events: &[&EventRow]) -> Option<EventRow> {
    let last_intent = events
        .iter()
        .rposition(|e| e.kind == EventKind::ToolsIntent)?;
    let intent = events[last_intent];
    let answered = events[last_intent + 1..].iter().any(|e| answers(e, intent));
    (!answered).then(|| intent.clone())
}

/// The recorded effects of one task's successful tool calls that an `undo` operation
/// can revert, oldest first (`evs`: the task's events).
pub fn reverts(task_id: u64, evs: &[&EventRow]) -> Vec<Revert> {
    let mut out: Vec<Revert> = Vec::new();
    for e in evs {
        if e.kind != EventKind::ToolsCall || !e.ok {
            continue;
        }
        let intent = evs.iter().find(|i| {
            i.kind == EventKind::ToolsIntent && i.request_hash == e.request_hash && i.seq < e.seq
        });
        let Some(undo) = intent.and_then(|i| i.request["undo"].as_str()) else {
            continue;
        };
        for effect in e.response["effects"].as_array().into_iter().flatten() {
            out.push(Revert {
                task_id,
                seq: e.seq,
                tool: e.request["name"].as_str().unwrap_or_default().into(),
                undo: undo.into(),
                effect: effect.clone(),
                args: serde_json::from_str(e.request["args"].as_str().unwrap_or("null"))
                    .unwrap_or(Value::Null),
                in_doubt: false,
            });
        }
    }
    out
}

/// The commands a human must run before the plan can go on: one `agentflow settle`
/// per in-doubt call that only a human can decide.
pub fn waits_for_human(plan: &Plan) -> Vec<&str> {
    plan.tasks
        .iter()
        .filter_map(|t| match &t.action {
            Action::RequiresHuman { settle, .. } => Some(settle.as_str()),
            _ => None,
        })
        .collect()
}

/// The completed calls of irreversible tools among `evs` (one task's events): effects
/// no compensation can undo.
fn irreversible_done<'e>(evs: &[&'e EventRow]) -> Vec<&'e EventRow> {
    evs.iter()
        .filter(|e| e.kind == EventKind::ToolsCall && e.ok)
        .filter(|e| {
            evs.iter().any(|i| {
                i.kind == EventKind::ToolsIntent
                    && i.seq < e.seq
                    && i.request_hash == e.request_hash
                    && i.request["side_effect"] == "irreversible"
            })
        })
        .copied()
        .collect()
}

fn tool_and_args(e: &EventRow) -> String {
    format!(
        "{} {}",
        e.request["name"].as_str().unwrap_or("?"),
        e.request["args"].as_str().unwrap_or("")
    )
}

/// Compute the recovery plan of a run.
pub fn plan(conn: &crate::ledger::Connection, run_id: &str) -> anyhow::Result<Plan> {
    let run = query::run(conn, run_id)?.ok_or_else(|| anyhow::anyhow!("no run `{run_id}`"))?;
    let tasks = query::resume_tasks(conn, &run.run_id)?;
    let events = query::events(conn, &run.run_id, None)?;
    let checkpoints = query::checkpoints(conn, &run.run_id, None)?;
    let graph = TaskGraph::new(&tasks);
    let events_of =
        |id: u64| -> Vec<&EventRow> { events.iter().filter(|e| e.task_id == id).collect() };
    let unfinished = |t: &ResumeTask| matches!(t.status, Status::Pending | Status::Running);
    let mut candidates: Vec<&ResumeTask> = tasks
        .iter()
        .filter(|t| t.status == Status::Failed || unfinished(t) && run.status == Status::Running)
        .collect();
    // Ancestors first: a failed task's plan covers its subtree.
    candidates.sort_by_key(|t| (t.depth, t.task_id));
    // The in-doubt call at the end of each candidate's record, with its class.
    let in_doubt = |t: &ResumeTask| {
        dangling_intent(&events_of(t.task_id)).and_then(|i| {
            let class = i.request["side_effect"].as_str()?.to_string();
            (class == "compensable" || class == "irreversible").then_some((i, class))
        })
    };
    let own_plans: HashSet<u64> = candidates
        .iter()
        .filter(|t| in_doubt(t).is_some())
        .map(|t| t.task_id)
        .collect();
    let mut covered: HashSet<u64> = HashSet::new();
    let mut plans = Vec::new();
    for t in candidates {
        if covered.contains(&t.task_id) && !own_plans.contains(&t.task_id) {
            continue;
        }
        let evs = events_of(t.task_id);
        let doubt = in_doubt(t);
        // The subtree this plan covers: the task and its descendants, except those with
        // an in-doubt call of their own (they are planned on their own).
        let subtree: BTreeSet<u64> = graph
            .subtree(t.task_id)
            .into_iter()
            .filter(|id| *id == t.task_id || !own_plans.contains(id))
            .collect();
        let already_compensated = subtree.iter().any(|id| {
            events_of(*id)
                .iter()
                .any(|e| e.kind == EventKind::RecoveryCompensate)
        });
        let state = match (&doubt, unfinished(t)) {
            (Some((_, c)), _) => format!("in doubt ({c} call)"),
            (_, true) => "interrupted".into(),
            _ => format!("failed: {}", t.error.clone().unwrap_or_default()),
        };
        let action = match &doubt {
            Some((i, class)) if class == "irreversible" => Action::RequiresHuman {
                reason: format!(
                    "irreversible tool `{}` may or may not have acted (intent seq {}, idempotency key {})",
                    i.request["name"].as_str().unwrap_or("?"),
                    i.seq,
                    i.request["idempotency_key"].as_str().unwrap_or("?")
                ),
                affected_systems: vec![tool_and_args(i)],
                settle: format!(
                    "agentflow settle {} {} --happened [--result JSON] | --did-not-happen",
                    run.run_id, i.seq
                ),
            },
            Some((i, _)) if !already_compensated => {
                let mut side_effects = reverts(t.task_id, &evs);
                side_effects.push(Revert {
                    task_id: t.task_id,
                    seq: i.seq,
                    tool: i.request["name"].as_str().unwrap_or_default().into(),
                    undo: i.request["undo"].as_str().unwrap_or_default().into(),
                    effect: Value::Null,
                    args: serde_json::from_str(i.request["args"].as_str().unwrap_or("null"))
                        .unwrap_or(Value::Null),
                    in_doubt: true,
                });
                side_effects.sort_by_key(|r| std::cmp::Reverse(r.seq));
                Action::Rollback {
                    tasks: vec![t.task_id],
                    side_effects,
                }
            }
            _ if unfinished(t) || already_compensated => resume_action(&checkpoints, t.task_id),
            _ => {
                // A failed task: what its subtree did to the world decides.
                let order = graph.revert_order(&subtree);
                let irreversible: Vec<(u64, &EventRow)> = order
                    .iter()
                    .flat_map(|id| {
                        irreversible_done(&events_of(*id))
                            .into_iter()
                            .map(move |e| (*id, e))
                    })
                    .collect();
                let side_effects: Vec<Revert> = order
                    .iter()
                    .flat_map(|id| {
                        let mut r = reverts(*id, &events_of(*id));
                        r.reverse();
                        r
                    })
                    .collect();
                covered.extend(subtree.iter().copied());
                if !irreversible.is_empty() {
                    let calls: Vec<String> = irreversible
                        .iter()
                        .map(|(id, e)| {
                            format!(
                                "`{}` (task {id} seq {})",
                                e.request["name"].as_str().unwrap_or("?"),
                                e.seq
                            )
                        })
                        .collect();
                    Action::RequiresHuman {
                        reason: format!(
                            "the task failed after irreversible tool {} acted: its effects cannot \
                             be undone{}",
                            calls.join(", "),
                            if side_effects.is_empty() {
                                String::new()
                            } else {
                                format!(
                                    " ({} other effect(s) could be, but not the whole subtree)",
                                    side_effects.len()
                                )
                            }
                        ),
                        affected_systems: irreversible
                            .iter()
                            .map(|(_, e)| tool_and_args(e))
                            .collect(),
                        settle: format!(
                            "agentflow resume {} --retry-failed (re-runs the failed tasks; recorded \
                             effects are replayed, not repeated)",
                            run.run_id
                        ),
                    }
                } else if side_effects.is_empty() {
                    resume_action(&checkpoints, t.task_id)
                } else {
                    Action::Rollback {
                        tasks: order,
                        side_effects,
                    }
                }
            }
        };
        plans.push(TaskPlan {
            task_id: t.task_id,
            description: t.description.clone(),
            state,
            action,
            upstream: graph.completed_upstream(&subtree),
            downstream: graph.downstream(t.task_id, &subtree),
        });
    }
    Ok(Plan {
        run_id: run.run_id,
        run_status: run.status,
        tasks: plans,
    })
}

/// Resume a task from its last checkpoint, or from its start.
fn resume_action(checkpoints: &[query::CheckpointRow], task_id: u64) -> Action {
    let last = checkpoints.iter().rfind(|c| c.task_id == task_id);
    Action::Resume {
        from_checkpoint: last.map(|c| c.number),
        note: last.map(|c| c.note.clone()),
    }
}

/// Run the compensations of every Rollback in the plan, newest effect first, each
/// recorded as a `recovery.compensate` event. Returns how many ran.
pub async fn apply_rollbacks(
    plan: &Plan,
    tools: &ToolSet,
    ledger: &Ledger,
) -> anyhow::Result<usize> {
    let mut done = 0;
    for t in &plan.tasks {
        let Action::Rollback { side_effects, .. } = &t.action else {
            continue;
        };
        for r in side_effects {
            let tool = tools.get(&r.tool).map_err(|e| {
                anyhow::anyhow!(
                    "cannot compensate with `{}`: {e} (grant it to the recovery)",
                    r.tool
                )
            })?;
            let mut args = json!({ "op": r.undo, "effect": r.effect, "original": r.args });
            if let Some(id) = r.effect.get("id") {
                args["id"] = id.clone();
            }
            let key = format!("{}/{}/undo-{}", plan.run_id, r.task_id, r.seq);
            let ctx = ToolCallCtx {
                run_id: plan.run_id.clone(),
                task_id: r.task_id,
                ledger: ledger.clone(),
                idempotency_key: key,
                effects: Default::default(),
            };
            let started_at = now_ms();
            let result = tool.call(&ctx, args.clone()).await;
            let effects = std::mem::take(&mut *ctx.effects.lock().unwrap());
            ledger
                .append(EventRecord {
                    response_text: None,
                    started_at,
                    ..EventRecord::note(
                        plan.run_id.clone(),
                        r.task_id,
                        EventKind::RecoveryCompensate,
                        result.is_ok(),
                        json!({ "tool": r.tool, "args": args, "reverts_seq": r.seq }),
                        match &result {
                            Ok(out) => json!({ "ok": out, "effects": effects }),
                            Err(e) => json!({ "error": e.to_string() }),
                        },
                    )
                })
                .await?;
            result.map_err(|e| {
                anyhow::anyhow!("compensation `{}` of seq {} failed: {e}", r.undo, r.seq)
            })?;
            done += 1;
        }
    }
    Ok(done)
}

/// The plan as text.
pub fn render(plan: &Plan) -> String {
    use crate::guest_text::escape_guest_text as esc;
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "recovery plan for run {} ({})",
        plan.run_id, plan.run_status
    );
    if plan.tasks.is_empty() {
        let _ = writeln!(
            out,
            "  nothing to recover: no failed, in-doubt or interrupted task"
        );
    }
    for t in &plan.tasks {
        let _ = writeln!(
            out,
            "task {} \"{}\": {}",
            t.task_id,
            esc(&t.description),
            t.state
        );
        match &t.action {
            Action::Resume {
                from_checkpoint: Some(n),
                note,
            } => {
                let _ = writeln!(
                    out,
                    "  → Resume {{ from checkpoint {n} \"{}\" }}",
                    esc(note.as_deref().unwrap_or(""))
                );
            }
            Action::Resume {
                from_checkpoint: None,
                ..
            } => {
                let _ = writeln!(out, "  → Resume {{ from the start, replaying its record }}");
            }
            Action::Rollback {
                tasks,
                side_effects,
            } => {
                let _ = writeln!(
                    out,
                    "  → Rollback {{ tasks {tasks:?}, revert in this order: }}"
                );
                for r in side_effects {
                    let _ = writeln!(
                        out,
                        "      seq {} {} → {}({}){}",
                        r.seq,
                        r.tool,
                        r.undo,
                        if r.effect.is_null() {
                            r.args.to_string()
                        } else {
                            r.effect.to_string()
                        },
                        if r.in_doubt { " (in doubt)" } else { "" }
                    );
                }
            }
            Action::RequiresHuman {
                reason,
                affected_systems,
                settle,
            } => {
                let _ = writeln!(
                    out,
                    "  → RequiresHuman {{ {}; affected: {} }}",
                    esc(reason),
                    esc(&affected_systems.join(", "))
                );
                let _ = writeln!(out, "    once checked: {settle}");
            }
        }
        if !t.upstream.is_empty() {
            let _ = writeln!(
                out,
                "  upstream completed (kept, not re-run): tasks {:?}",
                t.upstream
            );
        }
        if !t.downstream.is_empty() {
            let _ = writeln!(out, "  downstream affected: tasks {:?}", t.downstream);
        }
    }
    out
}
