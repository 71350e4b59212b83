//! The `kv` table: each run's private key-value store (the built-in `kv` tool).
//!
//! The tool reads and writes through the writer, so a `get` sees every `put` the run
//! made before it; [`get`] also serves read connections (`query::kv_get`).

use super::{Connection, SqlResult, Writer, now_ms};
use rusqlite::{OptionalExtension, params};

/// The value of `key` in run `run_id`'s store.
pub fn get(conn: &Connection, run_id: &str, key: &str) -> SqlResult<Option<String>> {
    conn.prepare_cached("SELECT value FROM kv WHERE run_id = ?1 AND key = ?2")?
        .query_row(params![run_id, key], |r| r.get(0))
        .optional()
}

impl Writer {
    /// The value of `key` in run `run_id`'s store, as of this transaction.
    pub fn kv_get(&self, run_id: &str, key: &str) -> SqlResult<Option<String>> {
        get(&self.conn, run_id, key)
    }

    /// Set `key` of run `run_id`'s store to `value`.
    pub fn kv_put(&self, run_id: &str, key: &str, value: &str) -> SqlResult<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO kv (run_id, key, value, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )?
            .execute(params![run_id, key, value, now_ms()])?;
        Ok(())
    }
}
