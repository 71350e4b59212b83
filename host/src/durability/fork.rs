//! Forking a run: "what would it have done with a different model?"
//!
//! `fork(run, at)` makes a new run that shares the original's component, input and
//! config, and a copy of its record up to the root task's event `at`: the root's
//! events with `seq <= at` (never splitting a tool intent from its result), and every
//! child spawned within that prefix with its whole record. Resuming the new run then
//! replays that prefix and continues live from there — with another model if one is
//! given. The new run records where it came from (`forked_from`, `fork_seq`).

use crate::ledger::{Ledger, LedgerError};
use rusqlite::params;

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
            let conn = w.conn();
            // Never cut between an intent and its result: cut before the intent instead.
            let kind_at: Option<String> = conn
                .query_row(
                    "SELECT kind FROM events WHERE run_id = ?1 AND task_id = 1 AND seq = ?2",
                    params![run_id, at as i64],
                    |r| r.get(0),
                )
                .ok();
            let cut = if kind_at.as_deref() == Some("tools.intent") { at.saturating_sub(1) } else { at };
            conn.execute(
                "INSERT INTO runs (run_id, agent, component_hash, input, status, config_json, context_hash,
                                   forked_from, fork_seq, budget_usd, started_at)
                 SELECT ?2, agent, component_hash, input, 'running', ?3, ?4, run_id, ?5, budget_usd, ?6
                 FROM runs WHERE run_id = ?1",
                params![run_id, new_run_id, config_json, context_hash, cut as i64, crate::ledger::now_ms()],
            )?;
            // Children spawned in the prefix, and all their descendants.
            let mut copied: Vec<i64> = Vec::new();
            {
                let mut stmt = conn.prepare(
                    "SELECT json_extract(response, '$.task_id') FROM events
                     WHERE run_id = ?1 AND task_id = 1 AND kind = 'tasks.spawn' AND status = 'ok' AND seq <= ?2",
                )?;
                let mut frontier: Vec<i64> =
                    stmt.query_map(params![run_id, cut as i64], |r| r.get(0))?.collect::<Result<_, _>>()?;
                let mut children = conn.prepare("SELECT task_id FROM tasks WHERE run_id = ?1 AND parent_id = ?2")?;
                while let Some(id) = frontier.pop() {
                    copied.push(id);
                    let kids: Vec<i64> =
                        children.query_map(params![run_id, id], |r| r.get(0))?.collect::<Result<_, _>>()?;
                    frontier.extend(kids);
                }
            }
            const TASK_COLUMNS: &str = "task_id, parent_id, depth, agent, component_hash, description, status, input_hash,
                spawn_key, dedup_key, depends_on, run_input_hash, output, error, tokens_in, tokens_out, cost_usd,
                host_calls, created_at, started_at, finished_at";
            conn.execute(
                &format!(
                    "INSERT INTO tasks (run_id, {TASK_COLUMNS})
                     SELECT ?2, task_id, parent_id, depth, agent, component_hash, description, 'running', input_hash,
                            spawn_key, dedup_key, depends_on, run_input_hash, NULL, NULL, 0, 0, 0, 0, created_at, started_at, NULL
                     FROM tasks WHERE run_id = ?1 AND task_id = 1"
                ),
                params![run_id, new_run_id],
            )?;
            const EVENT_COLUMNS: &str = "task_id, seq, kind, status, request, response, request_hash, model, tokens_in,
                tokens_out, cost_usd, started_at, finished_at";
            conn.execute(
                &format!(
                    "INSERT INTO events (run_id, {EVENT_COLUMNS}) SELECT ?2, {EVENT_COLUMNS}
                     FROM events WHERE run_id = ?1 AND task_id = 1 AND seq <= ?3"
                ),
                params![run_id, new_run_id, cut as i64],
            )?;
            for id in &copied {
                conn.execute(
                    &format!("INSERT INTO tasks (run_id, {TASK_COLUMNS}) SELECT ?2, {TASK_COLUMNS} FROM tasks WHERE run_id = ?1 AND task_id = ?3"),
                    params![run_id, new_run_id, id],
                )?;
                conn.execute(
                    &format!("INSERT INTO events (run_id, {EVENT_COLUMNS}) SELECT ?2, {EVENT_COLUMNS} FROM events WHERE run_id = ?1 AND task_id = ?3"),
                    params![run_id, new_run_id, id],
                )?;
            }
            conn.execute(
                "INSERT INTO checkpoints (run_id, task_id, number, event_seq, note, state_hash, step, host_state, saved_at)
                 SELECT ?2, task_id, number, event_seq, note, state_hash, step, host_state, saved_at FROM checkpoints
                 WHERE run_id = ?1 AND ((task_id = 1 AND event_seq <= ?3) OR task_id IN (SELECT value FROM json_each(?4)))",
                params![run_id, new_run_id, cut as i64, serde_json::to_string(&copied).unwrap_or_default()],
            )?;
            // What the copied record cost the original run, so the fork's report can
            // tell it apart from what the fork spends itself.
            let (cost, tokens): (f64, i64) = w.conn().query_row(
                "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(tokens_in + tokens_out), 0)
                 FROM events WHERE run_id = ?1",
                [&new_run_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            w.append_event(crate::ledger::EventRecord::note(
                new_run_id.clone(),
                1,
                "fork.copied",
                true,
                serde_json::json!({ "from": run_id, "through_seq": cut }),
                serde_json::json!({ "cost_usd": cost, "tokens": tokens }),
            ))?;
            Ok(cut)
        })
        .await
}
