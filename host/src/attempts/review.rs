//! The "ask a human" retry strategy (`[retry] semantic = "human"`, any category).
//!
//! When a task's output fails validation and its strategy is `human`, the task waits
//! — durably, in the ledger's `reviews` table, one row per (run, task, attempt) — for
//! an operator's decision from the CLI: `agentflow reviews` lists the pending ones,
//! `agentflow retry ID --note "..."` runs the task again with the note as feedback,
//! `agentflow reject ID --note "..."` fails it. The request and the decision are
//! `review.requested` / `review.decided` events of the task.
//!
//! The wait survives a host restart: a resumed run replays the task, its output fails
//! validation again, and the same review row (already decided, or still pending) is
//! found instead of a new one being asked for.

use crate::checks::Failure;
use crate::ledger::reviews::{self, NewReview, ReviewDecision};
use crate::ledger::{
    Connection, EventKind, EventRecord, Ledger, LedgerError, ReviewStatus, SqlResult,
};
use crate::supervisor::{HumanWait, RunContext};
use serde_json::json;
use std::sync::Arc;

pub use crate::ledger::reviews::ReviewRow;

/// Reviews, pending ones only unless `all`, oldest first.
pub fn list(conn: &Connection, all: bool) -> SqlResult<Vec<ReviewRow>> {
    reviews::reviews(conn, all)
}

/// The reviews as a table, each row followed by the output's excerpt and the decision
/// to make (or the note it was made with).
pub fn render(rows: &[ReviewRow]) -> String {
    use crate::guest_text::escape_guest_text;
    let mut table = crate::table::Table::new()
        .left("id")
        .left("run")
        .left("task")
        .left("attempt")
        .left("status")
        .left("validator [category]: reason");
    for r in rows {
        let reason: String = r.reason.chars().take(160).collect();
        table.row([
            r.id.to_string(),
            r.run_id.clone(),
            r.task_id.to_string(),
            r.attempt.to_string(),
            r.status.to_string(),
            format!(
                "{} [{}]: {}",
                r.validator,
                r.category,
                escape_guest_text(&reason)
            ),
        ]);
    }
    let mut lines = table.lines().into_iter();
    let mut out = lines.next().unwrap_or_default() + "\n";
    for (r, line) in rows.iter().zip(lines) {
        out += &line;
        out += "\n";
        let excerpt: String = r
            .output
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(160)
            .collect();
        out += &format!("      output: {}\n", escape_guest_text(&excerpt));
        if r.status == ReviewStatus::Pending {
            out += &format!(
                "      decide: agentflow retry {} --note \"guidance\" | agentflow reject {} --note \"why\"\n",
                r.id, r.id
            );
        } else if let Some(note) = &r.note {
            out += &format!("      note: {}\n", escape_guest_text(note));
        }
    }
    out
}

/// Ask for (or find, after a restart) the review of `attempt` of task `task_id`.
async fn request(
    run: &RunContext,
    task_id: u64,
    attempt: u32,
    failure: &Failure,
    output: &str,
) -> Result<u64, LedgerError> {
    let (run_id, validator, category, reason, output) = (
        run.run_id.clone(),
        failure.validator.clone(),
        failure.category.as_str().to_string(),
        failure.reason.clone(),
        output.to_string(),
    );
    run.ledger
        .write(move |w| {
            if let Some(id) = w.review_of(&run_id, task_id, attempt)? {
                return Ok(id);
            }
            let id = w.insert_review(&NewReview {
                run_id: &run_id,
                task_id,
                attempt,
                validator: &validator,
                category: &category,
                reason: &reason,
                output: &output,
            })?;
            w.append_event(EventRecord::note(
                run_id,
                task_id,
                EventKind::ReviewRequested,
                true,
                json!({ "review_id": id, "attempt": attempt }),
                json!({ "validator": validator, "category": category, "reason": reason }),
            ))?;
            Ok(id)
        })
        .await
}

/// How waiting for a human's review ends when it gives no retry: each carries the
/// task's failure message.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ReviewEnd {
    /// The human rejected the output.
    #[error("{0}")]
    Rejected(String),
    /// The review could not be asked for or read.
    #[error("{0}")]
    Ledger(String),
}

/// Wait for a human's decision on the failed `attempt` of task `task_id`. `Ok` is the
/// reviewer's note (the retry's feedback), `Err` the task's failure message.
pub async fn await_decision(
    run: &Arc<RunContext>,
    task_id: u64,
    attempt: u32,
    failure: &Failure,
    output: &str,
) -> Result<Option<String>, ReviewEnd> {
    let id = request(run, task_id, attempt, failure, output)
        .await
        .map_err(|e| ReviewEnd::Ledger(format!("{failure}; cannot ask for a review: {e}")))?;
    let waiting_for = format!(
        "review {id} of task {task_id} of run {} (agentflow reviews)",
        run.run_id
    );
    let decided = run
        .ledger
        .poll_decision(
            &waiting_for,
            |conn| {
                Ok(match reviews::review_decision(conn, id)? {
                    Some(d) if d.status == ReviewStatus::Pending => None,
                    other => Some(other),
                })
            },
            // Pending: the task waits for a human from here on, without a slot (the
            // attempt's went with its store).
            |_| {
                let reason = format!(
                    "{} [{}]: {}",
                    failure.validator,
                    failure.category.as_str(),
                    failure.reason
                );
                Ok(run.waits_for_human(HumanWait::review(&run.run_id, task_id, id, &reason)))
            },
        )
        .await
        .map_err(|e| ReviewEnd::Ledger(format!("{failure}; cannot read review {id}: {e}")))?;
    match decided {
        Some(ReviewDecision {
            status: ReviewStatus::Retry,
            note,
        }) => Ok(note),
        Some(ReviewDecision { note, .. }) => Err(ReviewEnd::Rejected(format!(
            "{failure}; rejected by a human (review {id}){}",
            note.map(|n| format!(": {n}")).unwrap_or_default()
        ))),
        None => Err(ReviewEnd::Ledger(format!(
            "{failure}; review {id} disappeared"
        ))),
    }
}

/// Decide a pending review: retry (with `note` as feedback) or reject. Returns
/// `(run_id, task_id)`, or `None` if no pending review has that id.
pub fn decide_blocking(
    ledger: &Ledger,
    id: u64,
    retry: bool,
    note: Option<String>,
) -> Result<Option<(String, u64)>, LedgerError> {
    ledger.write_blocking(move |w| {
        let Some((run_id, task_id)) = w.pending_review(id)? else {
            return Ok(None);
        };
        let status = if retry {
            ReviewStatus::Retry
        } else {
            ReviewStatus::Rejected
        };
        w.decide_review(id, status, note.as_deref())?;
        w.append_event(EventRecord::note(
            run_id.clone(),
            task_id,
            EventKind::ReviewDecided,
            retry,
            json!({ "review_id": id }),
            json!({ "decision": status, "note": note }),
        ))?;
        Ok(Some((run_id, task_id)))
    })
}
