//! Single facts about tasks for other modules (a task's parent, its description), and
//! re-opening tasks and runs that ended so they run again (`agentflow resume
//! --retry-failed`, `recover --apply`). The lifecycle writes (create, start, finish) are [`Ledger`](super::Ledger)
//! methods; whole task rows are read through [`query`](super::query).

use super::{Connection, SqlResult, Writer};
use rusqlite::{OptionalExtension, params};

/// The parent of task `task_id` (`None` for the root, or a task that does not exist).
pub fn parent_of(conn: &Connection, run_id: &str, task_id: u64) -> SqlResult<Option<u64>> {
    Ok(conn
        .prepare_cached("SELECT parent_id FROM tasks WHERE run_id = ?1 AND task_id = ?2")?
        .query_row(params![run_id, task_id as i64], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .optional()?
        .flatten()
        .map(|p| p as u64))
}

/// The description of task `task_id` (`None` if there is no such task).
pub fn description_of(conn: &Connection, run_id: &str, task_id: u64) -> SqlResult<Option<String>> {
    conn.query_row(
        "SELECT description FROM tasks WHERE run_id = ?1 AND task_id = ?2",
        params![run_id, task_id as i64],
        |r| r.get::<_, String>(0),
    )
    .optional()
}

impl Writer {
    /// Set task `task_id` running again, clearing how it ended.
    pub fn reopen_task(&self, run_id: &str, task_id: u64) -> SqlResult<()> {
        self.conn.execute(
            "UPDATE tasks SET status = 'running', error = NULL, output = NULL, finished_at = NULL
             WHERE run_id = ?1 AND task_id = ?2",
            params![run_id, task_id as i64],
        )?;
        Ok(())
    }

    /// Set run `run_id` running again, clearing how it ended.
    pub fn reopen_run(&self, run_id: &str) -> SqlResult<()> {
        self.conn.execute(
            "UPDATE runs SET status = 'running', error = NULL, output = NULL, finished_at = NULL
             WHERE run_id = ?1",
            [run_id],
        )?;
        Ok(())
    }
}
