//! Forking a run: "what would it have done with a different model?"
//!
//! `fork(run, at)` makes a new run that shares the original's component, input and
//! config, and a copy of its record up to the root task's event `at`: the root's
//! events with `seq <= at` (never splitting a tool intent from its result), and every
//! child spawned within that prefix with its whole record. Resuming the new run then
//! replays that prefix and continues live from there — with another model if one is
//! given. The new run records where it came from (`forked_from`, `fork_seq`).

use crate::ledger::{EventKind, Ledger, LedgerError};

/// Copy the prefix of `run_id` up to root event `at` into a new run `new_run_id` with
/// the given config and context hash. Returns the seq actually used as the cut.
pub async fn copy_prefix(
    ledger: &Ledger,
    run_id: String,
    new_run_id: String,
    at: u64,
    config_json: String,
    context_hash: String,
) -> Result<u64, LedgerError> {
    ledger
        .write(move |w| {
            let copy = w.copy_run_prefix(&run_id, &new_run_id, at, &config_json, &context_hash)?;
            // What the copied record cost the original run, so the fork's report can
            // tell it apart from what the fork spends itself.
            w.append_event(crate::ledger::EventRecord::note(
                new_run_id.clone(),
                1,
                EventKind::ForkCopied,
                true,
                serde_json::json!({ "from": run_id, "through_seq": copy.cut }),
                serde_json::json!({ "cost_usd": copy.cost_usd, "tokens": copy.tokens }),
            ))?;
            Ok(copy.cut)
        })
        .await
}

/// A side effect the original run performed after a fork point: the fork, continuing
/// live from there, would perform it again.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LaterEffect {
    pub task_id: u64,
    pub seq: u64,
    pub tool: String,
}

/// The side-effecting tool calls (their intents) of run `run_id` that a fork at root
/// event `at` does not copy: the root's after the cut, and every call of a task the
/// root spawned after it (with its descendants). The cut follows
/// [`copy_prefix`]: an intent at `at` is cut before.
pub fn effects_after(
    conn: &crate::ledger::Connection,
    run_id: &str,
    at: u64,
) -> anyhow::Result<Vec<LaterEffect>> {
    use crate::ledger::query;
    let events = query::events(conn, run_id, None)?;
    let tasks = query::resume_tasks(conn, run_id)?;
    let at_intent = events
        .iter()
        .any(|e| e.task_id == 1 && e.seq == at && e.kind == EventKind::ToolsIntent);
    let cut = if at_intent { at.saturating_sub(1) } else { at };
    // The tasks a fork copies whole: the root's children spawned within the prefix,
    // and their descendants.
    let spawned_in_prefix = events
        .iter()
        .filter(|e| e.task_id == 1 && e.seq <= cut && e.kind == EventKind::TasksSpawn && e.ok)
        .filter_map(|e| e.response["task_id"].as_u64());
    let copied = query::subtree(&tasks, spawned_in_prefix);
    Ok(events
        .iter()
        .filter(|e| e.kind == EventKind::ToolsIntent)
        .filter(|e| {
            if e.task_id == 1 {
                e.seq > cut
            } else {
                !copied.contains(&e.task_id)
            }
        })
        .map(|e| LaterEffect {
            task_id: e.task_id,
            seq: e.seq,
            tool: e.request["name"].as_str().unwrap_or("?").to_string(),
        })
        .collect())
}
