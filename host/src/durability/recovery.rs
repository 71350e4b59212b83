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
//! Each action lists the downstream tasks affected: the task's ancestors (waiting for
//! it) and the tasks that depend on it.

use crate::ledger::query::{self, EventRow, ResumeTask};
use crate::ledger::{EventKind, EventRecord, Ledger, Status, now_ms};
use crate::supervisor::parse_deps;
use crate::tools::{ToolCallCtx, ToolSet};
use serde::Serialize;
use serde_json::{Value, json};

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
    pub downstream: Vec<u64>,
}

/// A run's recovery plan.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub run_id: String,
    pub run_status: Status,
    pub tasks: Vec<TaskPlan>,
}

fn downstream(tasks: &[ResumeTask], id: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut cur = tasks
        .iter()
        .find(|t| t.task_id == id)
        .and_then(|t| t.parent_id);
    while let Some(p) = cur {
        out.push(p);
        cur = tasks
            .iter()
            .find(|t| t.task_id == p)
            .and_then(|t| t.parent_id);
    }
    for t in tasks {
        let deps = parse_deps(&t.depends_on);
        if deps.iter().any(|d| matches!(d, crate::supervisor::Dependency::After(x) | crate::supervisor::Dependency::DataFrom(x) if *x == id)) {
            out.push(t.task_id);
        }
    }
    out
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

/// Compute the recovery plan of a run.
pub fn plan(conn: &crate::ledger::Connection, run_id: &str) -> anyhow::Result<Plan> {
    let run = query::run(conn, run_id)?.ok_or_else(|| anyhow::anyhow!("no run `{run_id}`"))?;
    let tasks = query::resume_tasks(conn, &run.run_id)?;
    let events = query::events(conn, &run.run_id, None)?;
    let checkpoints = query::checkpoints(conn, &run.run_id, None)?;
    let mut plans = Vec::new();
    for t in &tasks {
        let unfinished = matches!(t.status, Status::Pending | Status::Running);
        if !(t.status == Status::Failed || unfinished && run.status == Status::Running) {
            continue;
        }
        let evs: Vec<&EventRow> = events.iter().filter(|e| e.task_id == t.task_id).collect();
        let intent = dangling_intent(&evs);
        let already_compensated = evs.iter().any(|e| e.kind == EventKind::RecoveryCompensate);
        let class = intent
            .as_ref()
            .and_then(|i| i.request["side_effect"].as_str().map(str::to_string));
        let state = match (&class, unfinished) {
            (Some(c), _) if c == "compensable" || c == "irreversible" => {
                format!("in doubt ({c} call)")
            }
            (_, true) => "interrupted".into(),
            _ => format!("failed: {}", t.error.clone().unwrap_or_default()),
        };
        let reverts = || reverts(t.task_id, &evs);
        let action = match class.as_deref() {
            Some("irreversible") => {
                let i = intent.as_ref().expect("class implies an intent");
                Action::RequiresHuman {
                    reason: format!(
                        "irreversible tool `{}` may or may not have acted (intent seq {}, idempotency key {})",
                        i.request["name"].as_str().unwrap_or("?"),
                        i.seq,
                        i.request["idempotency_key"].as_str().unwrap_or("?")
                    ),
                    affected_systems: vec![format!(
                        "{} {}",
                        i.request["name"].as_str().unwrap_or("?"),
                        i.request["args"].as_str().unwrap_or("")
                    )],
                    settle: format!(
                        "agentflow settle {} {} --happened [--result JSON] | --did-not-happen",
                        run.run_id, i.seq
                    ),
                }
            }
            Some("compensable") if !already_compensated => {
                let i = intent.as_ref().expect("class implies an intent");
                let mut side_effects = reverts();
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
            _ => {
                // A failed task that changed the world in revertible ways is rolled back;
                // anything else (interrupted, or nothing to revert) resumes.
                let mut side_effects = if unfinished || already_compensated {
                    Vec::new()
                } else {
                    reverts()
                };
                if side_effects.is_empty() {
                    let last = checkpoints.iter().rfind(|c| c.task_id == t.task_id);
                    Action::Resume {
                        from_checkpoint: last.map(|c| c.number),
                        note: last.map(|c| c.note.clone()),
                    }
                } else {
                    side_effects.sort_by_key(|r| std::cmp::Reverse(r.seq));
                    Action::Rollback {
                        tasks: vec![t.task_id],
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
            downstream: downstream(&tasks, t.task_id),
        });
    }
    Ok(Plan {
        run_id: run.run_id,
        run_status: run.status,
        tasks: plans,
    })
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
        if !t.downstream.is_empty() {
            let _ = writeln!(out, "  downstream affected: tasks {:?}", t.downstream);
        }
    }
    out
}
