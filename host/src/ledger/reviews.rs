//! Humans' decisions on tasks: `approvals` (a task waits for a go-ahead before it
//! starts; `agentflow approvals`, `approve`, `deny`) and `reviews` (a failed output
//! waits for a retry-or-reject; `agentflow reviews`, `retry`, `reject`). Requests and
//! decisions are written by the writer; a waiting host reads the decision from a read
//! connection of its own ([`Ledger::poll_decision`]).

use super::Connection;
use super::{
    ApprovalStatus, EventKind, EventRecord, Ledger, LedgerError, ReviewStatus, SqlResult, Writer,
    now_ms,
};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

/// The SQL condition that the task of a row of `table` has not ended: a decision
/// whose task ended (cancelled with its run, say) waits for nobody, so it is neither
/// listed as pending nor decided.
fn task_open(table: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM tasks t WHERE t.run_id = {table}.run_id AND t.task_id = {table}.task_id \
         AND t.status IN ('completed', 'failed', 'cancelled'))"
    )
}

impl Ledger {
    /// Ask a human to approve task `task_id` before it starts; returns the approval id.
    /// An `approval.requested` event is appended to the task.
    pub async fn request_approval(
        &self,
        run_id: String,
        task_id: u64,
        reason: String,
        estimated_cost_usd: f64,
        description: String,
    ) -> Result<u64, LedgerError> {
        self.write(move |w| {
            w.conn.execute(
                "INSERT INTO approvals (run_id, task_id, description, reason, estimated_cost_usd, status, requested_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6)",
                params![run_id, task_id as i64, description, reason, estimated_cost_usd, now_ms()],
            )?;
            let id = w.conn.last_insert_rowid() as u64;
            w.append_event(EventRecord::note(run_id, task_id, EventKind::ApprovalRequested, true, serde_json::json!({ "approval_id": id, "reason": reason, "estimated_cost_usd": estimated_cost_usd }), serde_json::Value::Null))?;
            Ok(id)
        })
        .await
    }

    /// Decide a pending approval (by id); the decision is appended to the task's events.
    /// Returns `(run_id, task_id)`, or `None` if no pending approval has that id.
    pub async fn decide_approval(
        &self,
        id: u64,
        approve: bool,
        note: Option<String>,
    ) -> Result<Option<(String, u64)>, LedgerError> {
        self.write(move |w| {
            let found: Option<(String, i64)> = w
                .conn
                .query_row(
                    &format!(
                        "SELECT run_id, task_id FROM approvals WHERE id = ?1 AND status = 'pending' AND {}",
                        task_open("approvals")
                    ),
                    [id as i64],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((run_id, task_id)) = found else {
                return Ok(None);
            };
            let status = if approve {
                ApprovalStatus::Approved
            } else {
                ApprovalStatus::Denied
            };
            w.conn.execute(
                "UPDATE approvals SET status = ?2, note = ?3, decided_at = ?4 WHERE id = ?1",
                params![id as i64, status, note, now_ms()],
            )?;
            w.append_event(EventRecord::note(
                run_id.clone(),
                task_id as u64,
                EventKind::ApprovalDecided,
                approve,
                serde_json::json!({ "approval_id": id }),
                serde_json::json!({ "decision": status, "note": note }),
            ))?;
            Ok(Some((run_id, task_id as u64)))
        })
        .await
    }

    /// Blocking variant of [`Ledger::decide_approval`], for the CLI.
    pub fn decide_approval_blocking(
        &self,
        id: u64,
        approve: bool,
        note: Option<String>,
    ) -> Result<Option<(String, u64)>, LedgerError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|_| LedgerError::WriterGone)?
            .block_on(self.decide_approval(id, approve, note))
    }
}

/// One row of `approvals`.
#[derive(Clone, Debug, Serialize)]
pub struct ApprovalRow {
    pub id: u64,
    pub run_id: String,
    pub task_id: u64,
    pub description: String,
    pub reason: String,
    pub estimated_cost_usd: f64,
    pub status: ApprovalStatus,
    pub note: Option<String>,
    pub requested_at: i64,
    pub decided_at: Option<i64>,
}

fn approval_row(r: &super::db::Row<'_>) -> rusqlite::Result<ApprovalRow> {
    Ok(ApprovalRow {
        id: r.get::<_, i64>(0)? as u64,
        run_id: r.get(1)?,
        task_id: r.get::<_, i64>(2)? as u64,
        description: r.get(3)?,
        reason: r.get(4)?,
        estimated_cost_usd: r.get(5)?,
        status: r.get(6)?,
        note: r.get(7)?,
        requested_at: r.get(8)?,
        decided_at: r.get(9)?,
    })
}

const APPROVAL_COLUMNS: &str = "id, run_id, task_id, description, reason, estimated_cost_usd, status, note, requested_at, decided_at";

/// The approval request of a task, if it has one.
pub fn approval_of(
    conn: &Connection,
    run_id: &str,
    task_id: u64,
) -> Result<Option<ApprovalRow>, LedgerError> {
    Ok(conn
        .query_row(
            &format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE run_id = ?1 AND task_id = ?2"),
            params![run_id, task_id as i64],
            approval_row,
        )
        .optional()?)
}

/// Approvals: pending ones (of tasks that have not ended) only, unless `all`.
pub fn approvals(conn: &Connection, all: bool) -> Result<Vec<ApprovalRow>, LedgerError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE ?1 OR (status = 'pending' AND {}) ORDER BY id",
        task_open("approvals")
    ))?;
    let rows = stmt.query_map([all], approval_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One row of `reviews`.
#[derive(Clone, Debug, Serialize)]
pub struct ReviewRow {
    pub id: u64,
    pub run_id: String,
    pub task_id: u64,
    pub attempt: u32,
    pub validator: String,
    pub category: String,
    pub reason: String,
    pub output: String,
    pub status: ReviewStatus,
    pub note: Option<String>,
    pub requested_at: i64,
    pub decided_at: Option<i64>,
}

const REVIEW_COLUMNS: &str = "id, run_id, task_id, attempt, validator, category, reason, output, status, note, requested_at, decided_at";

fn review_row(r: &super::db::Row<'_>) -> rusqlite::Result<ReviewRow> {
    Ok(ReviewRow {
        id: r.get::<_, i64>(0)? as u64,
        run_id: r.get(1)?,
        task_id: r.get::<_, i64>(2)? as u64,
        attempt: r.get::<_, i64>(3)? as u32,
        validator: r.get(4)?,
        category: r.get(5)?,
        reason: r.get(6)?,
        output: r.get(7)?,
        status: r.get(8)?,
        note: r.get(9)?,
        requested_at: r.get(10)?,
        decided_at: r.get(11)?,
    })
}

/// Reviews: pending ones (of tasks that have not ended) only unless `all`, oldest first.
pub fn reviews(conn: &Connection, all: bool) -> SqlResult<Vec<ReviewRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {REVIEW_COLUMNS} FROM reviews WHERE ?1 OR (status = 'pending' AND {}) ORDER BY id",
        task_open("reviews")
    ))?;
    let rows = stmt.query_map([all], review_row)?;
    rows.collect()
}

/// Where a review stands: `pending`, `retry` or `rejected`, with the reviewer's note.
#[derive(Clone, Debug, PartialEq)]
pub struct ReviewDecision {
    pub status: ReviewStatus,
    pub note: Option<String>,
}

/// The status and note of review `id` (`None` if there is no such review).
pub fn review_decision(conn: &Connection, id: u64) -> SqlResult<Option<ReviewDecision>> {
    conn.query_row(
        "SELECT status, note FROM reviews WHERE id = ?1",
        [id as i64],
        |r| {
            Ok(ReviewDecision {
                status: r.get(0)?,
                note: r.get(1)?,
            })
        },
    )
    .optional()
}

/// A review to ask for: attempt `attempt` of a task failed `validator`.
#[derive(Clone, Debug)]
pub struct NewReview<'a> {
    pub run_id: &'a str,
    pub task_id: u64,
    pub attempt: u32,
    pub validator: &'a str,
    pub category: &'a str,
    pub reason: &'a str,
    pub output: &'a str,
}

impl Writer {
    /// The id of the review of `attempt` of task `task_id`, if one was asked for.
    pub fn review_of(&self, run_id: &str, task_id: u64, attempt: u32) -> SqlResult<Option<u64>> {
        let id: Option<i64> = self
            .conn
            .query_row(
                "SELECT id FROM reviews WHERE run_id = ?1 AND task_id = ?2 AND attempt = ?3",
                params![run_id, task_id as i64, attempt],
                |r| r.get(0),
            )
            .optional()?;
        Ok(id.map(|id| id as u64))
    }

    /// Record a pending review; returns its id.
    pub fn insert_review(&self, review: &NewReview<'_>) -> SqlResult<u64> {
        let NewReview {
            run_id,
            task_id,
            attempt,
            validator,
            category,
            reason,
            output,
        } = *review;
        self.conn.execute(
            "INSERT INTO reviews (run_id, task_id, attempt, validator, category, reason, output, status, requested_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8)",
            params![run_id, task_id as i64, attempt, validator, category, reason, output, now_ms()],
        )?;
        Ok(self.conn.last_insert_rowid() as u64)
    }

    /// The run and task of review `id` while it is pending (`None` otherwise).
    pub fn pending_review(&self, id: u64) -> SqlResult<Option<(String, u64)>> {
        let found: Option<(String, i64)> = self
            .conn
            .query_row(
                &format!(
                    "SELECT run_id, task_id FROM reviews WHERE id = ?1 AND status = 'pending' AND {}",
                    task_open("reviews")
                ),
                [id as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(found.map(|(run_id, task_id)| (run_id, task_id as u64)))
    }

    /// Record the decision on review `id` (`retry` or `rejected`) with its note.
    pub fn decide_review(
        &self,
        id: u64,
        status: ReviewStatus,
        note: Option<&str>,
    ) -> SqlResult<()> {
        self.conn.execute(
            "UPDATE reviews SET status = ?2, note = ?3, decided_at = ?4 WHERE id = ?1",
            params![id as i64, status, note, now_ms()],
        )?;
        Ok(())
    }
}
