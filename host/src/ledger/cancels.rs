//! Operators' requests to cancel a run or a subtree that a live host is executing
//! (`agentflow cancel`): written by the CLI, carried out by the host holding the run's
//! lease at its next heartbeat, then marked done.

use super::{Connection, LedgerError, SqlResult, Writer, now_ms};
use rusqlite::params;

/// One request not yet carried out.
#[derive(Clone, Debug)]
pub struct CancelRequest {
    pub id: i64,
    pub run_id: String,
    pub task_id: u64,
}

impl Writer {
    /// Ask the host executing `run_id` to cancel task `task_id` and its descendants.
    pub fn request_cancel(&self, run_id: &str, task_id: u64, note: Option<&str>) -> SqlResult<i64> {
        self.conn.execute(
            "INSERT INTO cancel_requests (run_id, task_id, note, requested_at) VALUES (?1, ?2, ?3, ?4)",
            params![run_id, task_id as i64, note, now_ms()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Mark request `id` carried out.
    pub fn cancel_done(&self, id: i64) -> SqlResult<()> {
        self.conn.execute(
            "UPDATE cancel_requests SET done_at = ?2 WHERE id = ?1",
            params![id, now_ms()],
        )?;
        Ok(())
    }
}

/// The requests not yet carried out for any of `run_ids`.
pub fn pending(conn: &Connection, run_ids: &[String]) -> Result<Vec<CancelRequest>, LedgerError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, run_id, task_id FROM cancel_requests WHERE run_id = ?1 AND done_at IS NULL ORDER BY id",
    )?;
    let mut out = Vec::new();
    for run_id in run_ids {
        let rows = stmt.query_map([run_id], |r| {
            Ok(CancelRequest {
                id: r.get(0)?,
                run_id: r.get(1)?,
                task_id: r.get::<_, i64>(2)? as u64,
            })
        })?;
        for row in rows {
            out.push(row?);
        }
    }
    Ok(out)
}

/// Whether request `id` was carried out.
pub fn is_done(conn: &Connection, id: i64) -> Result<bool, LedgerError> {
    Ok(conn.query_row(
        "SELECT done_at IS NOT NULL FROM cancel_requests WHERE id = ?1",
        [id],
        |r| r.get(0),
    )?)
}
