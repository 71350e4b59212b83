//! Continuing a failed run (`agentflow resume --retry-failed`, `recover --apply`):
//! which tasks to re-run and how much of each one's record to replay.
//!
//! A failed task is re-run when every task above it failed too (a parent that
//! completed has already dealt with the failure; re-running its child would change
//! nothing it saw). Each re-run task replays its record — tools are not run again, the
//! LLM is not asked again, clock and random give the recorded values — up to where its
//! failure began, then continues live:
//! * a task that saw a re-run child fail (`tasks.wait` answered `failed`) stops
//!   replaying just before that wait, so it waits for the child's new outcome;
//! * a task whose last call was a failed LLM call (the provider was down, a quota was
//!   spent) makes that call again live — an LLM call changes nothing in the world;
//! * anything else (a trap, a limit, a failed tool) replays in full, so no recorded
//!   effect is ever repeated.
//!
//! The cut is a `task.reopened` event naming the last replayed sequence number; the
//! events between the cut and the marker are kept in the ledger for the record but
//! never replayed again ([`without_superseded`]).

use crate::ledger::query::{EventRow, ResumeTask, StoredEvent};
use crate::ledger::{EventKind, EventRecord, SqlResult, Status, Writer};
use serde_json::json;
use std::collections::{HashMap, HashSet};

/// One task to re-run and where its replay stops.
#[derive(Clone, Debug, PartialEq)]
pub struct Reopen {
    pub task_id: u64,
    /// The last recorded sequence number the re-run replays (0: none).
    pub keep_through: u64,
    pub previous_error: Option<String>,
}

/// Which failed tasks of a run to re-run, each with its cut.
pub fn plan(tasks: &[ResumeTask], events: &[EventRow]) -> Vec<Reopen> {
    let by_id: HashMap<u64, &ResumeTask> = tasks.iter().map(|t| (t.task_id, t)).collect();
    let failed_up_to_root = |t: &ResumeTask| {
        let mut at = Some(t);
        let mut seen = HashSet::new();
        while let Some(task) = at {
            if task.status != Status::Failed || !seen.insert(task.task_id) {
                return false;
            }
            at = task.parent_id.and_then(|p| by_id.get(&p).copied());
        }
        true
    };
    let reopened: HashSet<u64> = tasks
        .iter()
        .filter(|t| failed_up_to_root(t))
        .map(|t| t.task_id)
        .collect();
    let is_call = |e: &&EventRow| e.kind.is_replayed();
    let mut out: Vec<Reopen> = tasks
        .iter()
        .filter(|t| reopened.contains(&t.task_id))
        .map(|t| {
            let own: Vec<&EventRow> =
                without_superseded(events.iter().filter(|e| e.task_id == t.task_id).collect());
            let calls: Vec<&EventRow> = own.iter().copied().filter(is_call).collect();
            let saw_child_fail = calls.iter().find(|e| {
                e.kind == EventKind::TasksWait
                    && e.request["task_id"]
                        .as_u64()
                        .is_some_and(|c| reopened.contains(&c))
                    && e.response.get("failed").is_some()
            });
            let cut_before = match (saw_child_fail, calls.last()) {
                (Some(wait), _) => Some(wait.seq),
                (None, Some(last)) if !last.ok && last.kind.as_str().starts_with("llm.") => {
                    Some(last.seq)
                }
                _ => None,
            };
            let keep_through = match cut_before {
                Some(seq) => own
                    .iter()
                    .map(|e| e.seq)
                    .filter(|s| *s < seq)
                    .max()
                    .unwrap_or(0),
                None => own.iter().map(|e| e.seq).max().unwrap_or(0),
            };
            Reopen {
                task_id: t.task_id,
                keep_through,
                previous_error: t.error.clone(),
            }
        })
        .collect();
    out.sort_by_key(|r| r.task_id);
    out
}

/// Record the re-runs: a `task.reopened` marker per task, the tasks and the run
/// marked running again. Runs inside the caller's transaction.
pub fn apply(w: &mut Writer, run_id: &str, reopen: &[Reopen]) -> SqlResult<()> {
    for r in reopen {
        w.append_event(EventRecord::note(
            run_id.to_string(),
            r.task_id,
            EventKind::TaskReopened,
            true,
            json!({ "keep_through_seq": r.keep_through }),
            json!({ "previous_error": r.previous_error }),
        ))?;
        w.reopen_task(run_id, r.task_id)?;
    }
    w.reopen_run(run_id)
}

/// What [`without_superseded`] reads of an event: where it is, and for a
/// `task.reopened` marker, the last sequence number the re-run keeps.
pub trait Cut {
    fn task_and_seq(&self) -> (u64, u64);
    /// `Some(keep_through)` for a `task.reopened` marker, `None` for anything else.
    fn keep_through(&self) -> Option<u64>;
}

impl Cut for EventRow {
    fn task_and_seq(&self) -> (u64, u64) {
        (self.task_id, self.seq)
    }
    fn keep_through(&self) -> Option<u64> {
        (self.kind == EventKind::TaskReopened)
            .then(|| self.request["keep_through_seq"].as_u64().unwrap_or(0))
    }
}

impl Cut for StoredEvent {
    fn task_and_seq(&self) -> (u64, u64) {
        (self.task_id, self.seq)
    }
    fn keep_through(&self) -> Option<u64> {
        // The marker's request is small and never in `blobs`: parsed as stored.
        (self.kind == EventKind::TaskReopened).then(|| {
            self.request.parse()["keep_through_seq"]
                .as_u64()
                .unwrap_or(0)
        })
    }
}

impl<T: Cut> Cut for &T {
    fn task_and_seq(&self) -> (u64, u64) {
        (**self).task_and_seq()
    }
    fn keep_through(&self) -> Option<u64> {
        (**self).keep_through()
    }
}

/// A task's events without those a `task.reopened` marker superseded (recorded after
/// its cut and before it): what a replay of the task may use.
pub fn without_superseded<E: Cut>(events: Vec<E>) -> Vec<E> {
    let cuts: Vec<(u64, u64, u64)> = events
        .iter()
        .filter_map(|e| {
            let (task, seq) = e.task_and_seq();
            e.keep_through().map(|keep| (task, keep, seq))
        })
        .collect();
    if cuts.is_empty() {
        return events;
    }
    events
        .into_iter()
        .filter(|e| !superseded(&cuts, e.task_and_seq()))
        .collect()
}

/// Whether the event at `(task, seq)` lies between a cut `(task, keep_through,
/// marker_seq)` and its marker.
fn superseded(cuts: &[(u64, u64, u64)], (task_id, seq): (u64, u64)) -> bool {
    cuts.iter()
        .any(|(task, keep, marker)| task_id == *task && seq > *keep && seq < *marker)
}
