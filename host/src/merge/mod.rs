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
//! - **semantic**: overlapping edits — merged by an LLM given the base, both diffs and
//!   both tasks' descriptions; its merged text must carry no conflict markers and pass
//!   the validators declared for agent `merge`, or the conflict becomes critical;
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

mod llm;
pub mod resolve;

pub use llm::{MergeReplyError, parse_merge_reply};

use crate::checks::glob;
/// How a subject was merged (stored in `merges.category`).
pub use crate::ledger::merges::MergeCategory as Category;
/// One row of `merges`, contents resolved.
pub use crate::ledger::merges::MergeRecord as MergeRow;
use crate::ledger::merges::{self, NewMerge};
use crate::ledger::{Connection, EventKind, EventRecord, MergeStatus, tasks};
use crate::supervisor::RunContext;
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

/// What the three versions of a subject call for, before any LLM is asked.
#[derive(Clone, Debug, PartialEq)]
pub enum Classified {
    /// The child changed nothing.
    Unchanged,
    /// Merged without judgement.
    Trivial { result: String, why: String },
    /// A human must decide.
    Critical { why: String },
    /// Overlapping edits: `diffy`'s output with conflict markers.
    Conflict { marked: String },
}

/// The lines a change adds or removes, as text.
fn changed_lines(from: &str, to: &str) -> String {
    diffy::create_patch(from, to)
        .to_string()
        .lines()
        .filter(|l| {
            (l.starts_with('+') && !l.starts_with("+++"))
                || (l.starts_with('-') && !l.starts_with("---"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn squash_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Classify one subject. `path` is the workspace path (`None` for text proposals).
pub fn classify(
    config: &MergeConfig,
    path: Option<&str>,
    base: Option<&str>,
    ours: Option<&str>,
    theirs: &str,
) -> Classified {
    if base == Some(theirs) {
        return Classified::Unchanged;
    }
    if let Some(p) = path.and_then(|p| config.critical_paths.iter().find(|g| glob(g, p))) {
        return Classified::Critical {
            why: format!("path matches critical `{p}`"),
        };
    }
    let base_text = base.unwrap_or_default();
    if !config.critical_patterns.is_empty() {
        let theirs_change = changed_lines(base_text, theirs);
        let ours_change = ours
            .map(|o| changed_lines(base_text, o))
            .unwrap_or_default();
        for change in [&theirs_change, &ours_change] {
            if let Some(p) = config
                .critical_patterns
                .iter()
                .find(|g| change.lines().any(|l| glob(g, l)))
            {
                return Classified::Critical {
                    why: format!("a change matches critical pattern `{p}`"),
                };
            }
        }
    }
    if ours == base {
        return Classified::Trivial {
            result: theirs.to_string(),
            why: "only this task changed it".into(),
        };
    }
    let ours_text = ours.unwrap_or_default();
    if ours_text == theirs {
        return Classified::Trivial {
            result: theirs.to_string(),
            why: "both made the same change".into(),
        };
    }
    if squash_whitespace(ours_text) == squash_whitespace(theirs) {
        return Classified::Trivial {
            result: ours_text.to_string(),
            why: "the versions differ only in whitespace".into(),
        };
    }
    match diffy::merge(base_text, ours_text, theirs) {
        Ok(result) => Classified::Trivial {
            result,
            why: "the changes touch different lines".into(),
        },
        Err(marked) => Classified::Conflict { marked },
    }
}

/// The description of a task, for the merge model and for operators.
fn description(conn: &Connection, run_id: &str, task: u64) -> String {
    tasks::description_of(conn, run_id, task)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Decide one subject (or return the decision already recorded) and record it.
#[allow(clippy::too_many_arguments)]
async fn decide(
    run: &Arc<RunContext>,
    cfg: &MergeConfig,
    parent: u64,
    child: u64,
    subject: &str,
    path: Option<&str>,
    base: Option<String>,
    ours: Option<String>,
    theirs: String,
) -> anyhow::Result<MergeRow> {
    let recorded = run
        .ledger
        .with_reader(|conn| merges::merge_of(conn, &run.run_id, parent, child, subject))??;
    if let Some(row) = recorded {
        return Ok(row);
    }
    let classified = classify(cfg, path, base.as_deref(), ours.as_deref(), &theirs);
    let (category, result, reasoning) = match classified {
        Classified::Unchanged => (Category::Unchanged, ours.clone(), "unchanged".to_string()),
        Classified::Trivial { result, why } => (Category::Trivial, Some(result), why),
        Classified::Critical { why } => (Category::Critical, None, why),
        Classified::Conflict { .. } if !cfg.llm => (
            Category::Critical,
            None,
            "overlapping edits and the LLM merge is off ([merge] llm = false)".into(),
        ),
        Classified::Conflict { .. } => {
            let labels = run.ledger.with_reader(|conn| {
                (
                    description(conn, &run.run_id, parent),
                    description(conn, &run.run_id, child),
                )
            })?;
            let sides = Sides {
                subject,
                base: base.as_deref().unwrap_or_default(),
                ours: ours.as_deref().unwrap_or_default(),
                theirs: &theirs,
                ours_label: format!("task {parent}: {}", labels.0),
                theirs_label: format!("task {child}: {}", labels.1),
            };
            match llm_merge(run, cfg, parent, &sides).await {
                Ok((text, why)) => match check_merged(run, &text) {
                    Ok(()) => (Category::Semantic, Some(text), why),
                    Err(failed) => (
                        Category::Critical,
                        None,
                        format!("the LLM merge was rejected: {failed} (its reasoning: {why})"),
                    ),
                },
                Err(why) => (Category::Critical, None, why),
            }
        }
    };
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
        subject: subject.to_string(),
        category,
        status,
        base,
        ours,
        theirs,
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
/// `tasks.wait` that saw the child complete. Waits while a critical conflict is pending.
pub async fn join_workspace(
    run: &Arc<RunContext>,
    cfg: &MergeConfig,
    parent: u64,
    child: u64,
) -> anyhow::Result<()> {
    let Some(root) = run.tools.workspace_dir() else {
        return Ok(());
    };
    let files = run
        .ledger
        .with_reader(|conn| overlay::own_files(conn, &run.run_id, child))??;
    if files.is_empty() {
        return Ok(());
    }
    let view = run
        .ledger
        .with_reader(|conn| View::of(conn, root, &run.run_id, parent))??;
    let mut pending = Vec::new();
    for file in files {
        let ours = run
            .ledger
            .with_reader(|conn| view.read(conn, &file.path))??;
        let row = decide(
            run,
            cfg,
            parent,
            child,
            &file.path,
            Some(&file.path),
            file.base,
            ours,
            file.content,
        )
        .await?;
        match (&row.result, row.category) {
            (_, Category::Unchanged) => {}
            (Some(result), _) => apply(run, &view, &row.subject, result.clone()).await?,
            (None, _) => pending.push(row.id),
        }
    }
    for id in pending {
        let row = wait_resolved(run, id).await?;
        if let Some(result) = row.result {
            apply(run, &view, &row.subject, result).await?;
        }
    }
    Ok(())
}

/// What merging text proposals produced.
#[derive(Clone, Debug, PartialEq)]
pub struct ProposalMerge {
    pub text: String,
    pub category: Category,
    pub reasoning: Vec<String>,
}

/// Merge the completed outputs of children `ids` of `parent`, each a proposed revision
/// of `base`, in order. `call` distinguishes merges of the same children.
pub async fn merge_proposals(
    run: &Arc<RunContext>,
    cfg: &MergeConfig,
    parent: u64,
    call: u64,
    base: &str,
    ids: &[u64],
) -> anyhow::Result<Result<ProposalMerge, String>> {
    let conn = run.ledger.reader()?;
    let mut current = base.to_string();
    let mut worst = Category::Unchanged;
    let mut reasoning = Vec::new();
    for &id in ids {
        let is_child = tasks::parent_of(&conn, &run.run_id, id)? == Some(parent);
        if !is_child {
            return Ok(Err(format!("task {id} is not a child of this task")));
        }
        let output = match run.outcome(id) {
            Some(crate::supervisor::TaskOutcome::Completed(out)) => out,
            Some(other) => {
                return Ok(Err(format!("task {id} has no output to merge: {other:?}")));
            }
            None => {
                return Ok(Err(format!(
                    "task {id} has not finished (wait for it first)"
                )));
            }
        };
        let subject = format!("proposal@{call}");
        let mut row = decide(
            run,
            cfg,
            parent,
            id,
            &subject,
            None,
            Some(base.to_string()),
            Some(current.clone()),
            output,
        )
        .await?;
        if row.result.is_none() {
            row = wait_resolved(run, row.id).await?;
        }
        if let Some(result) = row.result {
            current = result;
        }
        worst = worst.max(row.category);
        let decided = match &row.resolution {
            Some(r) => format!("{}; resolved: {r}", row.reasoning),
            None => row.reasoning.clone(),
        };
        reasoning.push(format!("task {id}: {}: {decided}", row.category.as_str()));
    }
    Ok(Ok(ProposalMerge {
        text: current,
        category: worst,
        reasoning,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "fn a() {\n    1\n}\n\nfn b() {\n    2\n}\n";

    #[test]
    fn categories() {
        let c = MergeConfig {
            critical_paths: vec!["migrations/*".into()],
            critical_patterns: vec!["*drop table*".into()],
            ..Default::default()
        };
        let ours = BASE.replace("    1", "    10");
        let theirs_far = BASE.replace("    2", "    20");
        let theirs_same_line = BASE.replace("    1", "    11");
        assert_eq!(
            classify(&c, Some("x.rs"), Some(BASE), Some(BASE), BASE),
            Classified::Unchanged
        );
        assert!(matches!(
            classify(&c, Some("x.rs"), Some(BASE), Some(BASE), &ours),
            Classified::Trivial { .. }
        ));
        match classify(&c, Some("x.rs"), Some(BASE), Some(&ours), &theirs_far) {
            Classified::Trivial { result, .. } => {
                assert!(result.contains("    10") && result.contains("    20"))
            }
            other => panic!("{other:?}"),
        }
        let spaced = ours.replace("fn a() {", "fn a()  {");
        assert!(matches!(
            classify(&c, Some("x.rs"), Some(BASE), Some(&ours), &spaced),
            Classified::Trivial { .. }
        ));
        assert!(matches!(
            classify(&c, Some("x.rs"), Some(BASE), Some(&ours), &theirs_same_line),
            Classified::Conflict { .. }
        ));
        assert!(matches!(
            classify(&c, Some("migrations/1.sql"), Some(BASE), Some(BASE), &ours),
            Classified::Critical { .. }
        ));
        assert!(matches!(
            classify(&c, Some("x.sql"), Some(""), Some(""), "DROP TABLE users;\n"),
            Classified::Critical { .. }
        ));
    }
}
