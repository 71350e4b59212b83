//! The `task_validators` table: the validators a spawn request gave its child (a JSON
//! list of validator configs), stored before the child starts so a resumed run
//! validates it as the original would have. What they mean is the validation
//! layer's business; here they are text.

use super::{Connection, SqlResult, Writer};
use rusqlite::{OptionalExtension, params};

/// The validators (JSON) stored for task `task_id`, if it has any.
pub fn of_task(conn: &Connection, run_id: &str, task_id: u64) -> SqlResult<Option<String>> {
    conn.query_row(
        "SELECT validators FROM task_validators WHERE run_id = ?1 AND task_id = ?2",
        params![run_id, task_id as i64],
        |r| r.get(0),
    )
    .optional()
}

impl Writer {
    /// Store (or replace) the validators (JSON) of task `task_id`.
    pub fn store_task_validators(&self, run_id: &str, task_id: u64, json: &str) -> SqlResult<()> {
        self.conn.execute(
            "INSERT INTO task_validators (run_id, task_id, validators) VALUES (?1, ?2, ?3)
             ON CONFLICT (run_id, task_id) DO UPDATE SET validators = excluded.validators",
            params![run_id, task_id as i64, json],
        )?;
        Ok(())
    }
}
