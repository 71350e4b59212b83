//! The `merges` table: one row per merged subject (a workspace path or a text
//! proposal) of a child's work into its parent's, with the base, both sides and the
//! result in `blobs`. `crate::merge` decides; this records and reads its decisions,
//! and a human's resolution of a pending one.

use super::{Connection, MergeStatus, SqlResult, Writer, blobs, now_ms};
use rusqlite::params;
use serde::{Deserialize, Serialize};

/// How a subject was merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MergeCategory {
    Unchanged,
    Trivial,
    Semantic,
    Critical,
}

impl MergeCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            MergeCategory::Unchanged => "unchanged",
            MergeCategory::Trivial => "trivial",
            MergeCategory::Semantic => "semantic",
            MergeCategory::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> MergeCategory {
        match s {
            "unchanged" => MergeCategory::Unchanged,
            "trivial" => MergeCategory::Trivial,
            "semantic" => MergeCategory::Semantic,
            _ => MergeCategory::Critical,
        }
    }
}

/// One row of `merges`, contents resolved from `blobs`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MergeRecord {
    pub id: u64,
    pub run_id: String,
    pub parent_task: u64,
    pub child_task: u64,
    pub subject: String,
    pub category: MergeCategory,
    pub status: MergeStatus,
    pub base: Option<String>,
    pub ours: Option<String>,
    pub theirs: String,
    pub result: Option<String>,
    pub reasoning: String,
    pub resolution: Option<String>,
}

const MERGE_COLUMNS: &str = "id, run_id, parent_task, child_task, subject, category, status, \
     base_hash, ours_hash, theirs_hash, result_hash, reasoning, resolution";

fn merge_row(conn: &Connection, r: &super::db::Row<'_>) -> SqlResult<MergeRecord> {
    let text = |h: Option<String>| h.map(|h| blobs::text(conn, &h)).transpose();
    Ok(MergeRecord {
        id: r.get::<_, i64>(0)? as u64,
        run_id: r.get(1)?,
        parent_task: r.get::<_, i64>(2)? as u64,
        child_task: r.get::<_, i64>(3)? as u64,
        subject: r.get(4)?,
        category: MergeCategory::parse(&r.get::<_, String>(5)?),
        status: r.get(6)?,
        base: text(r.get(7)?)?,
        ours: text(r.get(8)?)?,
        theirs: blobs::text(conn, &r.get::<_, String>(9)?)?,
        result: text(r.get(10)?)?,
        reasoning: r.get(11)?,
        resolution: r.get(12)?,
    })
}

/// Rows of `merges` matching a `WHERE` clause, oldest first.
fn rows(
    conn: &Connection,
    clause: &str,
    args: impl super::db::Params,
) -> SqlResult<Vec<MergeRecord>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {MERGE_COLUMNS} FROM merges WHERE {clause} ORDER BY id"
    ))?;
    let raw = stmt.query_map(args, |r| merge_row(conn, r))?;
    raw.collect()
}

/// Pending merges (or all of them with `all`), oldest first.
pub fn merges(conn: &Connection, all: bool) -> SqlResult<Vec<MergeRecord>> {
    rows(conn, "?1 OR status = 'pending'", [all])
}

/// Merge `id`, if there is one.
pub fn merge(conn: &Connection, id: u64) -> SqlResult<Option<MergeRecord>> {
    Ok(rows(conn, "id = ?1", [id as i64])?.pop())
}

/// The merge recorded for `subject` of child `child` into `parent`, if there is one.
pub fn merge_of(
    conn: &Connection,
    run_id: &str,
    parent: u64,
    child: u64,
    subject: &str,
) -> SqlResult<Option<MergeRecord>> {
    Ok(rows(
        conn,
        "run_id = ?1 AND parent_task = ?2 AND child_task = ?3 AND subject = ?4",
        params![run_id, parent as i64, child as i64, subject],
    )?
    .pop())
}

/// A merge decision to record (its texts go to `blobs`).
#[derive(Clone, Debug)]
pub struct NewMerge<'a> {
    pub run_id: &'a str,
    pub parent_task: u64,
    pub child_task: u64,
    pub subject: &'a str,
    pub category: &'a str,
    pub status: MergeStatus,
    pub base: Option<&'a str>,
    pub ours: Option<&'a str>,
    pub theirs: &'a str,
    pub result: Option<&'a str>,
    pub reasoning: &'a str,
}

impl Writer {
    /// Record a merge decision; returns its id.
    pub fn insert_merge(&self, m: &NewMerge<'_>) -> SqlResult<u64> {
        let put = |t: Option<&str>| t.map(|t| self.put_blob(t.as_bytes())).transpose();
        let (b, o, r) = (put(m.base)?, put(m.ours)?, put(m.result)?);
        let t = self.put_blob(m.theirs.as_bytes())?;
        self.conn.execute(
            "INSERT INTO merges (run_id, parent_task, child_task, subject, category, status,
               base_hash, ours_hash, theirs_hash, result_hash, reasoning, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                m.run_id,
                m.parent_task as i64,
                m.child_task as i64,
                m.subject,
                m.category,
                m.status,
                b,
                o,
                t,
                r,
                m.reasoning,
                now_ms()
            ],
        )?;
        Ok(self.conn.last_insert_rowid() as u64)
    }

    /// Resolve pending merge `id` with `text` (stored in `blobs`) and how it was
    /// resolved. Returns whether it was still pending (and is now resolved).
    pub fn resolve_merge(&self, id: u64, text: &str, resolution: &str) -> SqlResult<bool> {
        let hash = self.put_blob(text.as_bytes())?;
        let n = self.conn.execute(
            "UPDATE merges SET status = 'resolved', result_hash = ?2, resolution = ?3, decided_at = ?4
             WHERE id = ?1 AND status = 'pending'",
            params![id as i64, hash, resolution, now_ms()],
        )?;
        Ok(n == 1)
    }
}
