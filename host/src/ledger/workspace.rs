//! The `workspace_files` table: what each task wrote in its copy-on-write view of the
//! workspace (`crate::tools::overlay`), one row per task and path, with the content
//! the task's parent had when the task first touched the path (its *base*). Contents
//! live in `blobs`; the rows hold their hashes.

use super::{Connection, SqlResult, Writer, now_ms};
use rusqlite::{OptionalExtension, params};

/// One row of `workspace_files`: a path a task wrote (or froze by reading it).
#[derive(Clone, Debug, PartialEq)]
pub struct FileRow {
    pub path: String,
    /// The parent's content when the task first touched the path (`None`: it had none).
    pub base_hash: Option<String>,
    pub content_hash: String,
}

/// The hash of what task `task` has at `path` in its own view, if it touched it.
pub fn file_hash(
    conn: &Connection,
    run_id: &str,
    task: u64,
    path: &str,
) -> SqlResult<Option<String>> {
    conn.prepare_cached(
        "SELECT content_hash FROM workspace_files WHERE run_id = ?1 AND task_id = ?2 AND path = ?3",
    )?
    .query_row(params![run_id, task as i64, path], |r| r.get(0))
    .optional()
}

/// The paths task `task` touched in its own view, by path.
pub fn files(conn: &Connection, run_id: &str, task: u64) -> SqlResult<Vec<FileRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT path, base_hash, content_hash FROM workspace_files
         WHERE run_id = ?1 AND task_id = ?2 ORDER BY path",
    )?;
    stmt.query_map(params![run_id, task as i64], |r| {
        Ok(FileRow {
            path: r.get(0)?,
            base_hash: r.get(1)?,
            content_hash: r.get(2)?,
        })
    })?
    .collect()
}

impl Writer {
    /// Freeze what task `task` read at `path`: the content `hash` becomes both its base
    /// and its content.
    pub fn snapshot_workspace_file(
        &self,
        run_id: &str,
        task: u64,
        path: &str,
        hash: &str,
    ) -> SqlResult<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO workspace_files (run_id, task_id, path, base_hash, content_hash, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
            )?
            .execute(params![run_id, task as i64, path, hash, now_ms()])?;
        Ok(())
    }

    /// Whether task `task` has touched `path` in its own view.
    pub fn has_workspace_file(&self, run_id: &str, task: u64, path: &str) -> SqlResult<bool> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT 1 FROM workspace_files WHERE run_id = ?1 AND task_id = ?2 AND path = ?3",
            )?
            .query_row(params![run_id, task as i64, path], |_| Ok(true))
            .optional()?
            .unwrap_or(false))
    }

    /// Set the content of a path task `task` has already touched.
    pub fn update_workspace_file(
        &self,
        run_id: &str,
        task: u64,
        path: &str,
        hash: &str,
    ) -> SqlResult<()> {
        self.conn
            .prepare_cached(
                "UPDATE workspace_files SET content_hash = ?4, updated_at = ?5
                 WHERE run_id = ?1 AND task_id = ?2 AND path = ?3",
            )?
            .execute(params![run_id, task as i64, path, hash, now_ms()])?;
        Ok(())
    }

    /// Record the first write of `path` by task `task`, with the base it changed.
    pub fn insert_workspace_file(
        &self,
        run_id: &str,
        task: u64,
        path: &str,
        base_hash: Option<&str>,
        hash: &str,
    ) -> SqlResult<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO workspace_files (run_id, task_id, path, base_hash, content_hash, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![run_id, task as i64, path, base_hash, hash, now_ms()])?;
        Ok(())
    }
}
