//! A human's side of critical conflicts: listing the pending ones with each side's diff
//! (`agentflow conflicts`) and deciding one (`agentflow resolve`). The decision is a
//! ledger update plus a `merge.resolved` event; the waiting join (in a running host, or
//! in the next `agentflow resume`) picks it up and applies it.

use super::MergeRow;
use crate::ledger::merges;
use crate::ledger::{Connection, EventKind, EventRecord, Ledger, MergeStatus, SqlResult};
use serde_json::json;

/// How a human resolves a conflict.
#[derive(Clone, Debug)]
pub enum Decision {
    /// Keep one task's version: the parent's (ours) or the child's (theirs).
    Take(u64),
    /// Use this text.
    Text(String),
}

/// Pending conflicts (or all merges with `all`), oldest first.
pub fn conflicts(conn: &Connection, all: bool) -> SqlResult<Vec<MergeRow>> {
    merges::merges(conn, all)
}

/// A unified diff from `from` to `to`.
pub fn diff(from: Option<&str>, to: Option<&str>) -> String {
    diffy::create_patch(from.unwrap_or_default(), to.unwrap_or_default()).to_string()
}

/// Resolve pending conflict `id`. Errors name what is wrong (unknown id, already
/// decided, a task that is neither side).
pub fn resolve(
    ledger: &Ledger,
    id: u64,
    decision: Decision,
    note: Option<String>,
) -> anyhow::Result<MergeRow> {
    let conn = ledger.reader()?;
    let row = merges::merge(&conn, id)?
        .ok_or_else(|| anyhow::anyhow!("no conflict with id {id} (see agentflow conflicts)"))?;
    if row.status != MergeStatus::Pending {
        anyhow::bail!("conflict {id} is not pending (it is {})", row.status);
    }
    let (text, how) = match decision {
        Decision::Take(task) if task == row.parent_task => (
            row.ours.clone().unwrap_or_default(),
            format!("took task {task}'s version (the parent's)"),
        ),
        Decision::Take(task) if task == row.child_task => (
            row.theirs.clone(),
            format!("took task {task}'s version (the child's)"),
        ),
        Decision::Take(task) => anyhow::bail!(
            "task {task} is not a side of conflict {id}: take {} (parent) or {} (child)",
            row.parent_task,
            row.child_task
        ),
        Decision::Text(text) => (text, "a human supplied the merged text".to_string()),
    };
    let resolution = match &note {
        Some(n) => format!("{how}: {n}"),
        None => how,
    };
    let (run_id, parent, child, subject) = (
        row.run_id.clone(),
        row.parent_task,
        row.child_task,
        row.subject.clone(),
    );
    let updated = ledger.write_blocking(move |w| {
        let resolved = w.resolve_merge(id, &text, &resolution)?;
        if resolved {
            w.append_event(EventRecord::note(
                run_id,
                parent,
                EventKind::MergeResolved,
                true,
                json!({ "merge_id": id, "child": child, "subject": subject }),
                json!({ "resolution": resolution }),
            ))?;
        }
        Ok(resolved)
    })?;
    if !updated {
        anyhow::bail!("conflict {id} was decided meanwhile");
    }
    let conn = ledger.reader()?;
    Ok(merges::merge(&conn, id)?.expect("just updated"))
}
