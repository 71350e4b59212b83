//! Copying a run's record into a new run, for `agentflow fork` (the durability layer
//! decides what a fork is and records it; this is the copy).
//!
//! The copy takes the root task's events up to a cut (never between a tool intent and
//! its result), every child spawned within that prefix with all its descendants and
//! their whole records, and the checkpoints of what was copied.

use super::{EventKind, SqlResult, Writer, now_ms};
use rusqlite::params;

/// What [`Writer::copy_run_prefix`] copied.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PrefixCopy {
    /// The root event the copy ends with (the requested one, or the one before it when
    /// that is a tool intent).
    pub cut: u64,
    /// What the copied events cost the original run.
    pub cost_usd: f64,
    pub tokens: i64,
}

const TASK_COLUMNS: &str = "task_id, parent_id, depth, agent, component_hash, description, status, input_hash,
    spawn_key, dedup_key, depends_on, run_input_hash, output, error, tokens_in, tokens_out, cost_usd,
    host_calls, created_at, started_at, finished_at";

const EVENT_COLUMNS: &str =
    "task_id, seq, kind, status, request, response, request_hash, model, tokens_in,
    tokens_out, cost_usd, started_at, finished_at";

/// What the events copied into run `run_id` by a fork cost the original run (0 for
/// a run that is not a fork). Through the kind index: a run's root may have many
/// events, and none of them is `fork.copied` in a run that is not a fork.
pub fn copied_cost(conn: &super::Connection, run_id: &str) -> SqlResult<f64> {
    conn.prepare_cached(
        "SELECT COALESCE(SUM(CAST(json_extract(response, '$.cost_usd') AS DOUBLE PRECISION)), 0.0)
         FROM events INDEXED BY events_by_kind
         WHERE run_id = ?1 AND kind = ?2 AND task_id = 1",
    )?
    .query_row(params![run_id, EventKind::ForkCopied], |r| r.get(0))
}

impl Writer {
    /// Create run `new_run_id` (running, with `config_json` and `context_hash`, and
    /// recording where it came from) holding the prefix of run `run_id` up to root
    /// event `at`.
    pub fn copy_run_prefix(
        &self,
        run_id: &str,
        new_run_id: &str,
        at: u64,
        config_json: &str,
        context_hash: &str,
    ) -> SqlResult<PrefixCopy> {
        let conn = &self.conn;
        // Never cut between an intent and its result: cut before the intent instead.
        let kind_at: Option<EventKind> = conn
            .query_row(
                "SELECT kind FROM events WHERE run_id = ?1 AND task_id = 1 AND seq = ?2",
                params![run_id, at as i64],
                |r| r.get(0),
            )
            .ok();
        let cut = if kind_at == Some(EventKind::ToolsIntent) {
            at.saturating_sub(1)
        } else {
            at
        };
        conn.execute(
            "INSERT INTO runs (run_id, agent, component_hash, input, status, config_json, context_hash,
                               forked_from, fork_seq, budget_usd, started_at)
             SELECT ?2, agent, component_hash, input, 'running', ?3, ?4, run_id, ?5, budget_usd, ?6
             FROM runs WHERE run_id = ?1",
            params![run_id, new_run_id, config_json, context_hash, cut as i64, now_ms()],
        )?;
        // Children spawned in the prefix, and all their descendants.
        let mut copied: Vec<i64> = Vec::new();
        {
            let mut stmt = conn.prepare(
                "SELECT json_extract(response, '$.task_id') FROM events
                 WHERE run_id = ?1 AND task_id = 1 AND kind = ?3 AND status = 'ok' AND seq <= ?2",
            )?;
            let mut frontier: Vec<i64> = stmt
                .query_map(params![run_id, cut as i64, EventKind::TasksSpawn], |r| {
                    r.get(0)
                })?
                .collect::<Result<_, _>>()?;
            let mut children =
                conn.prepare("SELECT task_id FROM tasks WHERE run_id = ?1 AND parent_id = ?2")?;
            while let Some(id) = frontier.pop() {
                copied.push(id);
                let kids: Vec<i64> = children
                    .query_map(params![run_id, id], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                frontier.extend(kids);
            }
        }
        conn.execute(
            &format!(
                "INSERT INTO tasks (run_id, {TASK_COLUMNS})
                 SELECT ?2, task_id, parent_id, depth, agent, component_hash, description, 'running', input_hash,
                        spawn_key, dedup_key, depends_on, run_input_hash, NULL, NULL, 0, 0, 0, 0, created_at, started_at, NULL
                 FROM tasks WHERE run_id = ?1 AND task_id = 1"
            ),
            params![run_id, new_run_id],
        )?;
        conn.execute(
            &format!(
                "INSERT INTO events (run_id, {EVENT_COLUMNS}) SELECT ?2, {EVENT_COLUMNS}
                 FROM events WHERE run_id = ?1 AND task_id = 1 AND seq <= ?3"
            ),
            params![run_id, new_run_id, cut as i64],
        )?;
        const CHECKPOINTS: &str = "INSERT INTO checkpoints (run_id, task_id, number, event_seq, note, state_hash, step, host_state, saved_at)
             SELECT ?2, task_id, number, event_seq, note, state_hash, step, host_state, saved_at FROM checkpoints
             WHERE run_id = ?1 AND task_id = ?3 AND event_seq <= ?4";
        conn.execute(CHECKPOINTS, params![run_id, new_run_id, 1i64, cut as i64])?;
        for id in &copied {
            conn.execute(
                &format!("INSERT INTO tasks (run_id, {TASK_COLUMNS}) SELECT ?2, {TASK_COLUMNS} FROM tasks WHERE run_id = ?1 AND task_id = ?3"),
                params![run_id, new_run_id, id],
            )?;
            conn.execute(
                &format!("INSERT INTO events (run_id, {EVENT_COLUMNS}) SELECT ?2, {EVENT_COLUMNS} FROM events WHERE run_id = ?1 AND task_id = ?3"),
                params![run_id, new_run_id, id],
            )?;
            conn.execute(CHECKPOINTS, params![run_id, new_run_id, id, i64::MAX])?;
        }
        let (cost_usd, tokens): (f64, i64) = conn.query_row(
            "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(tokens_in + tokens_out), 0)
             FROM events WHERE run_id = ?1",
            [new_run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(PrefixCopy {
            cut,
            cost_usd,
            tokens,
        })
    }
}
