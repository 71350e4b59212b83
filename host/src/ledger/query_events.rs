//! Read-side of the ledger for `agentflow events`: a run's events one line each (seq,
//! kind, status, model, tokens, cost, time), without their payloads, and the last seq
//! of a task (what `agentflow fork --at` may name).

use super::Connection;
use super::{EventKind, LedgerError};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

/// One event of a run, without its request and response.
#[derive(Clone, Debug, Serialize)]
pub struct EventLine {
    pub task_id: u64,
    pub seq: u64,
    pub kind: EventKind,
    /// `ok` or `error`.
    pub status: String,
    pub model: Option<String>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    pub started_at: i64,
    pub finished_at: i64,
}

/// The events of run `run_id` (its full id), or of its task `task_id`, in task then
/// seq order.
pub fn event_lines(
    conn: &Connection,
    run_id: &str,
    task_id: Option<u64>,
) -> Result<Vec<EventLine>, LedgerError> {
    let mut stmt = conn.prepare(
        "SELECT task_id, seq, kind, status, model, tokens_in, tokens_out, cost_usd, started_at,
                finished_at
         FROM events WHERE run_id = ?1 AND (CAST(?2 AS BIGINT) IS NULL OR task_id = ?2) ORDER BY task_id, seq",
    )?;
    let rows = stmt.query_map(params![run_id, task_id.map(|t| t as i64)], |r| {
        Ok(EventLine {
            task_id: r.get::<_, i64>(0)? as u64,
            seq: r.get::<_, i64>(1)? as u64,
            kind: r.get(2)?,
            status: r.get(3)?,
            model: r.get(4)?,
            tokens_in: r.get(5)?,
            tokens_out: r.get(6)?,
            cost_usd: r.get(7)?,
            started_at: r.get(8)?,
            finished_at: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The highest event seq of task `task_id` of run `run_id`; `None` when it has none.
pub fn last_seq(conn: &Connection, run_id: &str, task_id: u64) -> Result<Option<u64>, LedgerError> {
    let seq: Option<i64> = conn
        .query_row(
            "SELECT MAX(seq) FROM events WHERE run_id = ?1 AND task_id = ?2",
            params![run_id, task_id as i64],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    Ok(seq.map(|s| s as u64))
}
