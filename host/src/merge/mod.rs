//! Merging the work of parallel children back into their parent.
//!
//! Two kinds of work are merged: a child's workspace changes (its copy-on-write view,
//! `crate::tools::overlay`), automatically when the parent waits for it; and text
//! outputs the SDK declares as proposals (`tasks.merge(base, ids)`). Each changed file
//! (or proposal) is one *subject*, compared three ways — the base the child started
//! from, the parent's current version (*ours*) and the child's (*theirs*) — and put in
//! one category:
//!
//! - **trivial**: only one side changed, both made the same change, they differ only
//!   in whitespace, or their hunks do not overlap (a three-way merge by `diffy`) —
//!   merged automatically;
//! - **semantic**: overlapping edits — merged by an LLM given the base, every
//!   revision's diff and its task's description (for text proposals, all N proposals
//!   in one call); its merged text must carry no conflict markers and pass every
//!   validator declared for agent `merge` (judges and components included), or the
//!   conflict becomes critical;
//! - **critical**: a path or diff pattern marked critical (`[merge]`), or the merge
//!   model judging the changes contradictory — escalated to a human
//!   (`agentflow conflicts`, `agentflow resolve`). The join waits for the decision.
//!
//! Every decision is a row of `merges` (with base, ours, theirs and the result in
//! `blobs`) and a `merge.decided` event, committed before it is applied, so a restarted
//! run applies the recorded decision again (applying is idempotent) instead of deciding
//! twice, and a pending conflict survives restarts.
//!
//! The LLM merge of a semantic conflict (prompt, reply, checks) is `llm`; a human's
//! side of critical conflicts is [`resolve`].

mod classify;
mod llm;
pub mod resolve;

pub use classify::{Classified, classify};

pub use llm::{MergeReplyError, parse_merge_reply};

/// How a subject was merged (stored in `merges.category`).
pub use crate::ledger::merges::MergeCategory as Category;
/// One row of `merges`, contents resolved.
pub use crate::ledger::merges::MergeRecord as MergeRow;
use crate::ledger::merges::{self, NewMerge};
use crate::ledger::{Connection, EventKind, EventRecord, MergeStatus, tasks};
use crate::supervisor::{ComponentRef, RunContext};
use crate::tools::overlay::{self, View};
use llm::{Sides, check_merged, llm_merge};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

/// `[merge]`: how parallel work is merged.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MergeConfig {
    /// Model of the LLM merge (default: the highest-quality catalog model).
    pub model: Option<String>,
    /// Workspace paths (globs, `*` wildcard) whose changes always go to a human.
    pub critical_paths: Vec<String>,
    /// Globs over a change's added or removed lines that make it critical.
    pub critical_patterns: Vec<String>,
    /// Merge overlapping edits with the LLM (default); when off they go to a human.
    pub llm: bool,
}

impl Default for MergeConfig {
    fn default() -> Self {
        MergeConfig {
            model: None,
            critical_paths: Vec::new(),
            critical_patterns: Vec::new(),
            llm: true,
        }
    }
}

/// The description of a task, for the merge model and for operators.
fn description(conn: &Connection, run_id: &str, task: u64) -> String {
    tasks::description_of(conn, run_id, task)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Which merge a decision is part of: the run, the parent task (and its component,
/// whose work a merged text becomes) and the config.
pub struct Join<'a> {
    pub run: &'a Arc<RunContext>,
    pub cfg: &'a MergeConfig,
    pub parent: u64,
    pub agent: &'a ComponentRef,
}

/// One child's version of one subject, against the base and the parent's current one.
struct Versions {
    child: u64,
    subject: String,
    /// The subject is a workspace path (critical paths apply), not a proposal.
    is_path: bool,
    base: Option<String>,
    ours: Option<String>,
    theirs: String,
}

/// The decision already recorded for a child's subject, if any (a restarted run).
fn recorded(j: &Join<'_>, child: u64, subject: &str) -> anyhow::Result<Option<MergeRow>> {
    Ok(j.run
        .ledger
        .with_reader(|conn| merges::merge_of(conn, &j.run.run_id, j.parent, child, subject))??)
}

/// Ask the merge model for one text that keeps every revision of `subject`, and check
/// it: `(Semantic, text, why)`, or `(Critical, None, why not)`.
async fn semantic(
    j: &Join<'_>,
    subject: &str,
    base: &str,
    revisions: Vec<(u64, &str)>,
) -> anyhow::Result<(Category, Option<String>, String)> {
    let labels: Vec<String> = j.run.ledger.with_reader(|conn| {
        revisions
            .iter()
            .map(|(task, _)| format!("task {task}: {}", description(conn, &j.run.run_id, *task)))
            .collect()
    })?;
    let sides = Sides {
        subject,
        base,
        revisions: labels
            .into_iter()
            .zip(&revisions)
            .map(|(label, (_, text))| (label, *text))
            .collect(),
    };
    Ok(match llm_merge(j.run, j.cfg, j.parent, &sides).await {
        Ok((text, why)) => match check_merged(j.run, j.parent, j.agent, subject, &text).await {
            Ok(()) => (Category::Semantic, Some(text), why),
            Err(failed) => (
                Category::Critical,
                None,
                format!("the LLM merge was rejected: {failed} (its reasoning: {why})"),
            ),
        },
        Err(why) => (Category::Critical, None, why),
    })
}

/// Decide one subject (or return the decision already recorded) and record it.
async fn decide(j: &Join<'_>, v: Versions) -> anyhow::Result<MergeRow> {
    if let Some(row) = recorded(j, v.child, &v.subject)? {
        return Ok(row);
    }
    let classified = classify(
        j.cfg,
        v.is_path.then_some(v.subject.as_str()),
        v.base.as_deref(),
        v.ours.as_deref(),
        &v.theirs,
    );
    let (category, result, reasoning) = match classified {
        Classified::Unchanged => (Category::Unchanged, v.ours.clone(), "unchanged".to_string()),
        Classified::Trivial { result, why } => (Category::Trivial, Some(result), why),
        Classified::Critical { why } => (Category::Critical, None, why),
        Classified::Conflict { .. } if !j.cfg.llm => (
            Category::Critical,
            None,
            "overlapping edits and the LLM merge is off ([merge] llm = false)".into(),
        ),
        Classified::Conflict { .. } => {
            let revisions = vec![
                (j.parent, v.ours.as_deref().unwrap_or_default()),
                (v.child, v.theirs.as_str()),
            ];
            semantic(
                j,
                &v.subject,
                v.base.as_deref().unwrap_or_default(),
                revisions,
            )
            .await?
        }
    };
    record(j, v, category, result, reasoning).await
}

/// Record a decision: a `merges` row and a `merge.decided` event, committed together.
async fn record(
    j: &Join<'_>,
    v: Versions,
    category: Category,
    result: Option<String>,
    reasoning: String,
) -> anyhow::Result<MergeRow> {
    let (run, parent, child) = (j.run, j.parent, v.child);
    let status = if result.is_some() {
        MergeStatus::Merged
    } else {
        MergeStatus::Pending
    };
    let mut row = MergeRow {
        id: 0,
        run_id: run.run_id.clone(),
        parent_task: parent,
        child_task: child,
        subject: v.subject,
        category,
        status,
        base: v.base,
        ours: v.ours,
        theirs: v.theirs,
        result,
        reasoning,
        resolution: None,
    };
    let recorded = row.clone();
    row.id = run
        .ledger
        .write(move |w| {
            let MergeRow {
                run_id,
                subject,
                base,
                ours,
                theirs,
                result,
                reasoning,
                ..
            } = recorded;
            let id = w.insert_merge(&NewMerge {
                run_id: &run_id,
                parent_task: parent,
                child_task: child,
                subject: &subject,
                category: category.as_str(),
                status,
                base: base.as_deref(),
                ours: ours.as_deref(),
                theirs: &theirs,
                result: result.as_deref(),
                reasoning: &reasoning,
            })?;
            w.append_event(EventRecord::note(
                run_id.clone(),
                parent,
                EventKind::MergeDecided,
                status == MergeStatus::Merged,
                json!({ "merge_id": id, "child": child, "subject": subject }),
                json!({ "category": category, "status": status, "reasoning": reasoning }),
            ))?;
            Ok(id)
        })
        .await?;
    tracing::info!(run = %run.run_id, parent, child, merge = row.id, category = category.as_str(), "merge decided");
    crate::ledger::fault::point("merge-decided");
    Ok(row)
}

/// Wait until a human has resolved merge `id`; returns the resolved row.
async fn wait_resolved(run: &RunContext, id: u64) -> anyhow::Result<MergeRow> {
    let waiting_for = format!(
        "critical conflict {id} of run {} (agentflow conflicts / resolve)",
        run.run_id
    );
    let row = run
        .ledger
        .poll_decision(
            &waiting_for,
            |conn| {
                // A row that vanished cannot be decided: return it as it was (None).
                Ok(match merges::merge(conn, id)? {
                    Some(row) if row.status == MergeStatus::Pending => None,
                    other => Some(other),
                })
            },
            // Pending: the parent waits for a human (inside `tasks.wait` or
            // `tasks.merge`, which gave its slot back).
            |conn| {
                let row = merges::merge(conn, id)?;
                let (parent, child, reason) = row
                    .map(|r| {
                        let why = format!("{}: {}", r.category.as_str(), r.subject);
                        (r.parent_task, r.child_task, why)
                    })
                    .unwrap_or_default();
                Ok(run.waits_for_human(crate::supervisor::HumanWait::conflict(
                    &run.run_id,
                    parent,
                    child,
                    id,
                    &reason,
                )))
            },
        )
        .await?;
    row.ok_or_else(|| anyhow::anyhow!("merge {id} vanished from the ledger"))
}

/// Write a decided result into a view (idempotent).
async fn apply(run: &RunContext, view: &View, path: &str, text: String) -> anyhow::Result<()> {
    let (view, path) = (view.clone(), path.to_string());
    run.ledger
        .write(move |w| view.write(w, &path, &text).map(|_| ()))
        .await?;
    Ok(())
}

/// Merge child `child`'s workspace changes into its parent's view — the join of a
/// `tasks.wait` that saw the child complete. Waits while a critical conflict is
/// pending, unless `partial`: then everything else is merged and the pending
/// conflicts are returned (see [`take_pending`]).
pub async fn join_workspace(
    run: &Arc<RunContext>,
    cfg: &MergeConfig,
    parent: u64,
    agent: &ComponentRef,
    child: u64,
    partial: bool,
) -> anyhow::Result<Vec<MergeRow>> {
    let Some(root) = run.tools.workspace_dir() else {
        return Ok(Vec::new());
    };
    let files = run
        .ledger
        .with_reader(|conn| overlay::own_files(conn, &run.run_id, child))??;
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let j = Join {
        run,
        cfg,
        parent,
        agent,
    };
    let view = run
        .ledger
        .with_reader(|conn| View::of(conn, root, &run.run_id, parent))??;
    let mut pending = Vec::new();
    for file in files {
        let ours = run
            .ledger
            .with_reader(|conn| view.read(conn, &file.path))??;
        let versions = Versions {
            child,
            subject: file.path.clone(),
            is_path: true,
            base: file.base,
            ours,
            theirs: file.content,
        };
        let row = decide(&j, versions).await?;
        match (&row.result, row.category) {
            (_, Category::Unchanged) => {}
            (Some(result), _) => apply(run, &view, &row.subject, result.clone()).await?,
            (None, _) => pending.push(row),
        }
    }
    if partial {
        return Ok(pending);
    }
    for row in pending {
        let row = wait_resolved(run, row.id).await?;
        if let Some(result) = row.result {
            apply(run, &view, &row.subject, result).await?;
        }
    }
    Ok(Vec::new())
}

/// Apply the conflicts partial joins of task `parent` left pending and it never took,
/// each once a human has decided it.
pub async fn finish_partial(run: &Arc<RunContext>, parent: u64, ids: &[u64]) -> anyhow::Result<()> {
    for id in ids {
        if let Err(why) = take_pending(run, parent, *id).await? {
            tracing::warn!(run = %run.run_id, task = parent, merge = id, "pending merge not applied: {why}");
        }
    }
    Ok(())
}

/// Take conflict `id` a partial join of task `parent` left pending: wait for a human's
/// decision and apply it to the parent's view. `Ok(Err(why))`: not such a conflict.
pub async fn take_pending(
    run: &Arc<RunContext>,
    parent: u64,
    id: u64,
) -> anyhow::Result<Result<String, String>> {
    let row = run.ledger.with_reader(|conn| merges::merge(conn, id))??;
    let Some(row) = row.filter(|r| r.run_id == run.run_id && r.parent_task == parent) else {
        return Ok(Err(format!("merge {id} is not a conflict of this task")));
    };
    if row.subject.starts_with("proposal@") {
        return Ok(Err(format!("merge {id} is a proposal merge, not a file")));
    }
    let Some(root) = run.tools.workspace_dir() else {
        return Ok(Err("the run has no workspace".into()));
    };
    let row = resolved(run, row).await?;
    let Some(text) = row.result else {
        return Ok(Err(format!("merge {id} was decided without a text")));
    };
    let view = run
        .ledger
        .with_reader(|conn| View::of(conn, root, &run.run_id, parent))??;
    apply(run, &view, &row.subject, text.clone()).await?;
    Ok(Ok(text))
}

/// What merging text proposals produced.
#[derive(Clone, Debug, PartialEq)]
pub struct ProposalMerge {
    pub text: String,
    pub category: Category,
    pub reasoning: Vec<String>,
}

/// Merge the completed outputs of children `ids` of `parent`, each a proposed revision
/// of `base`. Proposals that merge without judgement (unchanged, identical, whitespace,
/// non-overlapping) are folded in order; if any overlap, the merge model gets them
/// **all at once** — the base and every proposal's diff — and its one merged text
/// decides every overlapping proposal. `call` distinguishes merges of the same
/// children.
pub async fn merge_proposals(
    j: &Join<'_>,
    call: u64,
    base: &str,
    ids: &[u64],
) -> anyhow::Result<Result<ProposalMerge, String>> {
    let run = j.run;
    let conn = run.ledger.reader()?;
    let mut outputs: Vec<(u64, String)> = Vec::with_capacity(ids.len());
    for &id in ids {
        let is_child = tasks::parent_of(&conn, &run.run_id, id)? == Some(j.parent);
        if !is_child {
            return Ok(Err(format!("task {id} is not a child of this task")));
        }
        match run.outcome(id) {
            Some(crate::supervisor::TaskOutcome::Completed(out)) => outputs.push((id, out)),
            Some(other) => {
                return Ok(Err(format!("task {id} has no output to merge: {other:?}")));
            }
            None => {
                return Ok(Err(format!(
                    "task {id} has not finished (wait for it first)"
                )));
            }
        }
    }
    let subject = format!("proposal@{call}");
    let versions = |child: u64, ours: &str, theirs: &str| Versions {
        child,
        subject: subject.clone(),
        is_path: false,
        base: Some(base.to_string()),
        ours: Some(ours.to_string()),
        theirs: theirs.to_string(),
    };
    let mut current = base.to_string();
    let mut rows: Vec<MergeRow> = Vec::new();
    let mut overlapping: Vec<&(u64, String)> = Vec::new();
    for out in &outputs {
        let (id, theirs) = (out.0, out.1.as_str());
        let row = match recorded(j, id, &subject)? {
            Some(row) => row,
            None => match classify(j.cfg, None, Some(base), Some(&current), theirs) {
                // Decided below, together with every other overlapping proposal.
                Classified::Conflict { .. } if j.cfg.llm => {
                    overlapping.push(out);
                    continue;
                }
                _ => decide(j, versions(id, &current, theirs)).await?,
            },
        };
        let row = resolved(run, row).await?;
        if let Some(result) = &row.result {
            current = result.clone();
        }
        rows.push(row);
    }
    if !overlapping.is_empty() {
        // One LLM merge of every proposal (the folded ones too: the model sees each
        // change against the base).
        let revisions: Vec<(u64, &str)> = outputs.iter().map(|(id, t)| (*id, t.as_str())).collect();
        let (category, result, why) = semantic(j, &subject, base, revisions).await?;
        let together: Vec<u64> = outputs.iter().map(|(id, _)| *id).collect();
        let why = format!("merged with tasks {together:?} in one LLM merge: {why}");
        for (id, theirs) in overlapping {
            let row = record(
                j,
                versions(*id, &current, theirs),
                category,
                result.clone(),
                why.clone(),
            )
            .await?;
            let row = resolved(run, row).await?;
            if let Some(result) = &row.result {
                current = result.clone();
            }
            rows.push(row);
        }
    }
    rows.sort_by_key(|r| ids.iter().position(|id| *id == r.child_task));
    let category = rows
        .iter()
        .map(|r| r.category)
        .max()
        .unwrap_or(Category::Unchanged);
    let reasoning = rows
        .iter()
        .map(|row| {
            let decided = match &row.resolution {
                Some(r) => format!("{}; resolved: {r}", row.reasoning),
                None => row.reasoning.clone(),
            };
            format!(
                "task {}: {}: {decided}",
                row.child_task,
                row.category.as_str()
            )
        })
        .collect();
    Ok(Ok(ProposalMerge {
        text: current,
        category,
        reasoning,
    }))
}

/// `row`, or once a human has resolved it, its resolved form.
async fn resolved(run: &RunContext, row: MergeRow) -> anyhow::Result<MergeRow> {
    if row.result.is_none() && row.status == MergeStatus::Pending {
        return wait_resolved(run, row.id).await;
    }
    Ok(row)
}
