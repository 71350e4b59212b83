//! What the run page shows, as one JSON document (`GET /api/runs/{id}`): the run's
//! totals, its tasks as `agentflow inspect` loads them ([`crate::observe::inspect`])
//! with the `agent_traces` columns (models, validation, quality, the reasoning trace),
//! its merges with their categories, its side effects with their class and state, and
//! the decisions it waits for.

use crate::ledger::dashboard::{self, SideEffect, TraceColumns};
use crate::ledger::query::ApprovalRow;
use crate::ledger::reviews::ReviewRow;
use crate::ledger::{Connection, MergeStatus, Status, leases, merges, query, reviews};
use crate::merge::resolve;
use crate::observe::inspect::{self, RunView, TaskView};
use serde::Serialize;

/// The run page's document.
#[derive(Serialize)]
pub struct RunPage {
    pub run: crate::ledger::query::RunRow,
    pub totals: Totals,
    /// A live host holds the run's lease (it is being worked on now).
    pub live: bool,
    pub tasks: Vec<TaskPage>,
    pub merges: Vec<Merge>,
    pub effects: Vec<SideEffect>,
    pub pending: Pending,
}

/// The run's figures at the top of its page.
#[derive(Serialize)]
pub struct Totals {
    pub cost_usd: f64,
    pub tokens: i64,
    /// Until now for an unfinished run.
    pub duration_ms: i64,
    /// The mean quality score of the tasks that have one (0..1).
    pub quality: Option<f64>,
    pub tasks: usize,
    /// Tasks by status (`completed`: 7, …).
    pub by_status: std::collections::BTreeMap<String, usize>,
}

/// One task: what `inspect` shows, and what `agent_traces` adds.
#[derive(Serialize)]
pub struct TaskPage {
    #[serde(flatten)]
    pub view: TaskView,
    #[serde(flatten)]
    pub trace: TraceColumns,
    pub duration_ms: Option<i64>,
}

/// A merge decision, without the texts (the conflicts list has the diffs).
#[derive(Serialize)]
pub struct Merge {
    pub id: u64,
    pub parent_task: u64,
    pub child_task: u64,
    pub subject: String,
    pub category: &'static str,
    pub status: MergeStatus,
    pub reasoning: String,
    pub resolution: Option<String>,
}

/// The decisions waiting for a human (of one run, or of the ledger).
#[derive(Default, Serialize)]
pub struct Pending {
    pub approvals: Vec<ApprovalRow>,
    pub reviews: Vec<ReviewRow>,
    pub conflicts: Vec<Conflict>,
}

/// A pending merge conflict, with each side's diff against the base.
#[derive(Serialize)]
pub struct Conflict {
    pub id: u64,
    pub run_id: String,
    pub parent_task: u64,
    pub child_task: u64,
    pub subject: String,
    pub category: &'static str,
    pub reasoning: String,
    pub ours_diff: String,
    pub theirs_diff: String,
}

/// The pending decisions of run `run_id`, or of every run when `None`. A decision
/// whose task has ended is not pending (the readers leave those out).
pub fn pending(conn: &Connection, run_id: Option<&str>) -> anyhow::Result<Pending> {
    let of_run = |r: &str| run_id.is_none_or(|id| id == r);
    let approvals = query::approvals(conn, false)?
        .into_iter()
        .filter(|a| of_run(&a.run_id))
        .collect();
    let reviews = reviews::reviews(conn, false)?
        .into_iter()
        .filter(|r| of_run(&r.run_id))
        .collect();
    let conflicts = merges::merges(conn, false)?
        .into_iter()
        .filter(|m| of_run(&m.run_id))
        .map(|m| Conflict {
            ours_diff: resolve::diff(m.base.as_deref(), m.ours.as_deref()),
            theirs_diff: resolve::diff(m.base.as_deref(), Some(&m.theirs)),
            id: m.id,
            run_id: m.run_id,
            parent_task: m.parent_task,
            child_task: m.child_task,
            subject: m.subject,
            category: m.category.as_str(),
            reasoning: m.reasoning,
        })
        .collect();
    Ok(Pending {
        approvals,
        reviews,
        conflicts,
    })
}

/// The run page of run `run` (an id or a unique prefix); `None` when no run matches.
pub fn load(conn: &Connection, run: &str) -> anyhow::Result<Option<RunPage>> {
    let Some(RunView { run, tasks, .. }) = inspect::load(conn, run)? else {
        return Ok(None);
    };
    let mut traces = dashboard::trace_columns(conn, &run.run_id)?;
    let now = crate::ledger::now_ms();
    let tasks: Vec<TaskPage> = tasks
        .into_iter()
        .map(|view| TaskPage {
            trace: traces.remove(&view.task.task_id).unwrap_or_default(),
            duration_ms: view
                .task
                .started_at
                .map(|s| view.task.finished_at.unwrap_or(now) - s),
            view,
        })
        .collect();
    let scores: Vec<f64> = tasks.iter().filter_map(|t| t.trace.quality_score).collect();
    let mut by_status = std::collections::BTreeMap::new();
    for t in &tasks {
        *by_status
            .entry(t.view.task.status.as_str().to_string())
            .or_insert(0) += 1;
    }
    let totals = Totals {
        cost_usd: run.cost_usd,
        tokens: run.tokens_in + run.tokens_out,
        duration_ms: run.finished_at.unwrap_or(now) - run.started_at,
        quality: (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64),
        tasks: tasks.len(),
        by_status,
    };
    let merges = merges::merges(conn, true)?
        .into_iter()
        .filter(|m| m.run_id == run.run_id)
        .map(|m| Merge {
            id: m.id,
            parent_task: m.parent_task,
            child_task: m.child_task,
            subject: m.subject,
            category: m.category.as_str(),
            status: m.status,
            reasoning: m.reasoning,
            resolution: m.resolution,
        })
        .collect();
    let live = run.status == Status::Running && leases::live(conn, &run.run_id)?.is_some();
    Ok(Some(RunPage {
        effects: dashboard::side_effects(conn, &run.run_id)?,
        pending: pending(conn, Some(&run.run_id))?,
        totals,
        live,
        tasks,
        merges,
        run,
    }))
}
