//! Outcome validators (`kind = "outcome"`): after a task's side effects, check the
//! world rather than the text — with a tool call (`tool`, `args`) or a validator
//! component (`component`) — and when the world is wrong, roll the task's subtree back.
//!
//! A tool check must be granted to the run (deny by default). Its `args` may contain
//! `{output}` (the task's output) and `{effect.id}`: the check then runs once per
//! resource id the subtree's tool calls reported (newest first), and fails on the first
//! bad one. A tool answer fails the check when it is a JSON object with
//! `"healthy": false` or `"ok": false`, or when the tool itself fails; a refused call
//! (not granted, bad arguments) is `uncertain`. Each check is a `validation.outcome`
//! event.
//!
//! On failure, [`roll_back`] compensates every recorded, revertible effect of the
//! subtree newest first, through `durability::recovery` (each a
//! `recovery.compensate` event, so `agentflow recover` never reverts them twice), and
//! the task fails with the validator's category (default `degraded`).

use super::Runner;
use crate::checks::{OutcomeCheck, ValidatorConfig, ValidatorKind, Verdict};
use crate::durability::recovery::{self, Action, Plan, TaskPlan};
use crate::ledger::{EventKind, EventRecord, Status, query};
use crate::runtime::LoadedAgent;
use crate::supervisor::RunContext;
use crate::tools::{ToolCallCtx, ToolError};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;

/// Task `task_id` and its descendants.
pub(crate) fn subtree(conn: &crate::ledger::Connection, run_id: &str, task_id: u64) -> Vec<u64> {
    let tasks = query::tasks(conn, run_id).unwrap_or_default();
    let mut out = vec![task_id];
    let mut seen: HashSet<u64> = HashSet::from([task_id]);
    loop {
        let before = out.len();
        for t in &tasks {
            if t.parent_id.is_some_and(|p| seen.contains(&p)) && seen.insert(t.task_id) {
                out.push(t.task_id);
            }
        }
        if out.len() == before {
            return out;
        }
    }
}

/// The ids of resources the subtree's successful tool calls reported, newest first.
fn effect_ids(run: &RunContext, task_id: u64) -> Vec<String> {
    let Ok(conn) = run.ledger.reader() else {
        return Vec::new();
    };
    let tasks = subtree(&conn, &run.run_id, task_id);
    let mut events: Vec<_> = query::events(&conn, &run.run_id, None)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| tasks.contains(&e.task_id) && e.kind == EventKind::ToolsCall && e.ok)
        .collect();
    events.sort_by_key(|e| std::cmp::Reverse((e.finished_at, e.seq)));
    let mut ids = Vec::new();
    for e in events {
        for effect in e.response["effects"].as_array().into_iter().flatten() {
            if let Some(id) = effect["id"].as_str()
                && effect["action"] != "destroy"
                && !ids.iter().any(|i| i == id)
            {
                ids.push(id.to_string());
            }
        }
    }
    ids
}

fn fill(args: &Value, output: &str, id: Option<&str>) -> Value {
    match args {
        Value::String(s) => {
            let s = s.replace("{output}", output);
            Value::String(match id {
                Some(id) => s.replace("{effect.id}", id),
                None => s,
            })
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| fill(v, output, id)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), fill(v, output, id)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Check the world after task `task_id`: the validator's tool, or its component.
pub async fn check(
    runner: &Runner,
    run: &Arc<RunContext>,
    task_id: u64,
    agent: &Arc<LoadedAgent>,
    v: &ValidatorConfig,
    input: &str,
    output: &str,
) -> Verdict {
    let ValidatorKind::Outcome(OutcomeCheck {
        tool: Some(name),
        args,
        ..
    }) = &v.kind
    else {
        return super::component::check(runner, run, task_id, agent, v, input, output)
            .await
            .0;
    };
    let tool = match run.tools.get(name) {
        Ok(t) => t,
        Err(e) => return Verdict::Uncertain(format!("outcome tool `{name}`: {e}")),
    };
    let args = args.clone().unwrap_or(Value::Object(Default::default()));
    let per_effect = args.to_string().contains("{effect.id}");
    let targets: Vec<Option<String>> = if per_effect {
        let ids = effect_ids(run, task_id);
        if ids.is_empty() {
            return Verdict::Uncertain(format!(
                "outcome check `{}` names {{effect.id}} but the task reported no resource",
                v.label()
            ));
        }
        ids.into_iter().map(Some).collect()
    } else {
        vec![None]
    };
    for (i, target) in targets.iter().enumerate() {
        let args = fill(&args, output, target.as_deref());
        let ctx = ToolCallCtx {
            run_id: run.run_id.clone(),
            task_id,
            ledger: run.ledger.clone(),
            idempotency_key: format!("{}/{task_id}/outcome-{}-{i}", run.run_id, v.label()),
            effects: Default::default(),
        };
        let started_at = crate::ledger::now_ms();
        let result = tool.call(&ctx, args.clone()).await;
        let verdict = match &result {
            Ok(text) => {
                let answer: Value = serde_json::from_str(text).unwrap_or(Value::Null);
                if answer["healthy"] == json!(false) || answer["ok"] == json!(false) {
                    Verdict::Fail(format!("`{name}` reports {text}"))
                } else {
                    Verdict::Pass
                }
            }
            Err(ToolError::Failed(m)) => Verdict::Fail(format!("`{name}` failed: {m}")),
            Err(e) => Verdict::Uncertain(format!("`{name}` refused the check: {e}")),
        };
        let event = EventRecord {
            response_text: None,
            started_at,
            ..EventRecord::note(
                run.run_id.clone(),
                task_id,
                EventKind::ValidationOutcome,
                !matches!(verdict, Verdict::Fail(_)),
                json!({ "validator": v.label(), "tool": name, "args": args }),
                match &result {
                    Ok(out) => json!({ "ok": out }),
                    Err(e) => json!({ "error": e.to_string() }),
                },
            )
        };
        if let Err(e) = run.ledger.record(event).await {
            return Verdict::Uncertain(format!("cannot record the outcome check: {e}"));
        }
        if !matches!(verdict, Verdict::Pass) {
            return verdict;
        }
    }
    Verdict::Pass
}

/// Roll back task `task_id`'s subtree after a failed outcome check: compensate its
/// recorded, revertible effects newest first. Returns a summary to append to the
/// failure's reason.
pub async fn roll_back(run: &Arc<RunContext>, task_id: u64, validator: &str) -> String {
    let Ok(conn) = run.ledger.reader() else {
        return "; rollback impossible: cannot read the ledger".into();
    };
    let tasks = subtree(&conn, &run.run_id, task_id);
    let events = query::events(&conn, &run.run_id, None).unwrap_or_default();
    let mut side_effects = Vec::new();
    for t in &tasks {
        let evs: Vec<_> = events.iter().filter(|e| e.task_id == *t).collect();
        let done: HashSet<u64> = evs
            .iter()
            .filter(|e| e.kind == EventKind::RecoveryCompensate)
            .filter_map(|e| e.request["reverts_seq"].as_u64())
            .collect();
        for r in recovery::reverts(*t, &evs) {
            if done.contains(&r.seq) {
                continue;
            }
            let at = evs
                .iter()
                .find(|e| e.seq == r.seq)
                .map_or(0, |e| e.finished_at);
            side_effects.push((at, r));
        }
    }
    side_effects.sort_by_key(|(at, r)| std::cmp::Reverse((*at, r.task_id, r.seq)));
    let side_effects: Vec<_> = side_effects.into_iter().map(|(_, r)| r).collect();
    let count = side_effects.len();
    let plan = Plan {
        run_id: run.run_id.clone(),
        run_status: Status::Running,
        tasks: vec![TaskPlan {
            task_id,
            description: format!("outcome validator `{validator}` failed"),
            state: "outcome check failed".into(),
            action: Action::Rollback {
                tasks: tasks.clone(),
                side_effects,
            },
            upstream: Vec::new(),
            downstream: Vec::new(),
        }],
    };
    let result = recovery::apply_rollbacks(&plan, &run.tools, &run.ledger).await;
    let summary = match &result {
        Ok(n) => format!("; rolled back {n} of {count} effect(s) of tasks {tasks:?}"),
        Err(e) => format!("; rollback incomplete: {e}"),
    };
    let event = EventRecord::note(
        run.run_id.clone(),
        task_id,
        EventKind::ValidationRollback,
        result.is_ok(),
        json!({ "validator": validator, "tasks": tasks }),
        json!({ "effects": count, "result": summary }),
    );
    if let Err(e) = run.ledger.record(event).await {
        tracing::error!(run = %run.run_id, task = task_id, error = %e, "cannot record a rollback");
    }
    summary
}
