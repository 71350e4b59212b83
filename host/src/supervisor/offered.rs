//! Children that run on another worker of a cluster ([`crate::ledger::offers`]).
//!
//! On a PostgreSQL ledger, a run executed by a worker offers its children to the
//! workers instead of running them here. A worker's run keeps its budget, execution
//! slots, locks, task ids and duplicate keys in the cluster's database
//! ([`super::shared_budget`], [`super::shared_limits`]), so *every* child is offered —
//! children that spawn too: the worker that executes one offers its children in
//! turn, and the limits hold wherever the tasks run. The child's dependencies and
//! approval are waited for here, its input (with the outputs of its `data-from`
//! dependencies) composed and recorded before the offer; its locks and slot are taken
//! by the worker that executes it. A run without those rows (resumed from a host
//! before them) offers only a child at its deepest level (it spawns nothing) with a
//! share of its own, when it has no token limit, and takes the child's locks and slot
//! here. Either way the offer then waits for the task's end in the ledger, recorded by
//! the worker that claimed it. The ends of tasks other workers drive that a task here
//! waits for (a dependency on a sibling's subtree, say) are read from the ledger too
//! ([`RunContext::share_limits`]).

use super::{RunContext, TaskOutcome};
use crate::ledger::{Status, offers};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Longest pause between two looks at an offered task's end.
const MOST_PATIENT_POLL: Duration = Duration::from_millis(500);

impl RunContext {
    /// Offer the children that can run apart to the cluster's workers (a worker's
    /// runs, on a PostgreSQL ledger).
    pub fn offer_tasks(&self) {
        if self.ledger.is_postgres() {
            self.offers_tasks.store(true, Ordering::Relaxed);
        }
    }

    /// Whether every child of this run is offered to the cluster's workers (a
    /// worker's run whose limits are the cluster's).
    pub fn offers_children(&self) -> bool {
        self.offers_tasks.load(Ordering::Relaxed) && self.budget.is_shared()
    }

    /// Whether task `id` at `depth` is offered rather than run here: every child of a
    /// run whose budget, slots, locks and task ids are the cluster's (a worker's run,
    /// [`super::shared_limits`]); of a run without (resumed from a host before shared
    /// pools), only a child at the deepest level (it spawns nothing) with a share of its
    /// own, when the run has no token limit.
    pub(super) fn runs_apart(&self, id: u64, depth: u32) -> bool {
        id != 1
            && self.offers_tasks.load(Ordering::Relaxed)
            && (self.budget.is_shared()
                || (depth >= self.settings.limits.max_depth
                    && self.settings.budget_tokens.is_none()
                    && self.budget.own_share(id).is_some()))
    }

    /// Offer task `id`, to run on `input`, and wait for its end, recorded by the
    /// worker that executes it (or recorded here, when the offer cannot be written).
    pub(super) async fn run_apart(self: &Arc<Self>, id: u64, input: String) -> TaskOutcome {
        // Its end, if recorded here (a cancel), counts its whole share as spent.
        self.tree.lock().unwrap().offered.insert(id);
        // The input it runs on goes first (the offer's commit makes it durable): the
        // executing worker reads it, as a resumed task reads the input it started on.
        let started = self.ledger.start_task(self.run_id.clone(), id, input).await;
        let run_id = self.run_id.clone();
        let offered = match started {
            Ok(()) => self.ledger.write(move |w| w.offer_task(&run_id, id)).await,
            Err(e) => Err(e),
        };
        if let Err(e) = offered {
            self.tree.lock().unwrap().offered.remove(&id);
            // Nobody else will record this end: record it here.
            let outcome = TaskOutcome::Failed(format!("cannot offer the task to the workers: {e}"));
            self.finish(id, outcome.clone()).await;
            return outcome;
        }
        let mut pause = Duration::from_millis(20);
        loop {
            let end = self
                .ledger
                .with_reader(|conn| offers::task_end(conn, &self.run_id, id));
            match end {
                Ok(Ok(Some(end))) => {
                    self.budget.settle_elsewhere(id, end.spent_usd);
                    return outcome_of(end);
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(run = %self.run_id, task = id, error = %e, "reading an offered task's end")
                }
                Err(e) => {
                    tracing::warn!(run = %self.run_id, task = id, error = %e, "reading an offered task's end")
                }
            }
            self.ledger.changed_within(pause).await;
            pause = (pause * 2).min(MOST_PATIENT_POLL);
        }
    }
}

impl RunContext {
    /// Keep this run's budget, slots, locks and task ids in the cluster's `pool`
    /// ([`super::shared_limits`]), and from now on learn from the ledger the ends of
    /// the tasks other workers drive that a task here waits for.
    pub fn share_limits(self: &Arc<Self>, pool: super::shared_budget::SharedPool) {
        self.budget.share(pool);
        let weak = Arc::downgrade(self);
        let ledger = self.ledger.clone();
        tokio::spawn(async move {
            loop {
                ledger.changed_within(MOST_PATIENT_POLL).await;
                let Some(run) = weak.upgrade() else {
                    return;
                };
                run.learn_ends_elsewhere();
            }
        });
    }

    /// Whether task `id` is known here — learning it (and its ancestors unknown here)
    /// from the ledger, in a run whose tasks execute on several workers, when it was
    /// spawned elsewhere after this process read the run (a grandchild of another
    /// worker's child, say): its end is then watched there, and its budget owner known.
    pub fn learn_task(&self, id: u64) -> bool {
        if self.tree.lock().unwrap().nodes.contains_key(&id) {
            return true;
        }
        if !self.budget.is_shared() {
            return false;
        }
        let tasks = self
            .ledger
            .with_reader(|conn| crate::ledger::query::resume_tasks(conn, &self.run_id));
        let Ok(Ok(tasks)) = tasks else {
            return false;
        };
        let by_id: std::collections::HashMap<u64, _> =
            tasks.into_iter().map(|t| (t.task_id, t)).collect();
        let mut tree = self.tree.lock().unwrap();
        let mut next = Some(id);
        while let Some(task) = next.and_then(|i| by_id.get(&i)) {
            if tree.nodes.contains_key(&task.task_id) {
                break;
            }
            let outcome = match task.status {
                Status::Completed => Some(TaskOutcome::Completed(
                    task.output.clone().unwrap_or_default(),
                )),
                Status::Failed => Some(TaskOutcome::Failed(task.error.clone().unwrap_or_default())),
                Status::Cancelled => Some(TaskOutcome::Cancelled),
                _ => None,
            };
            if let Some(parent) = task.parent_id {
                let ended = outcome.is_some();
                self.budget
                    .register(parent, task.task_id, task.budget_usd, ended);
            }
            tree.nodes.insert(
                task.task_id,
                super::TaskNode {
                    parent: task.parent_id,
                    agent: task.agent.clone(),
                    description: task.description.clone(),
                    children: Vec::new(),
                    outcome: tokio::sync::watch::channel(outcome).0,
                    abort: None,
                },
            );
            // What it holds while it runs, and how long it may: as a restored tree has.
            if let Some(ms) = task.timeout_ms {
                tree.timeouts.insert(task.task_id, ms);
            }
            let names: Vec<String> = serde_json::from_str(&task.resources).unwrap_or_default();
            tree.resources.insert(task.task_id, names);
            next = task.parent_id;
        }
        tree.nodes.contains_key(&id)
    }

    /// Read the ends of the watched tasks other workers drive from the ledger, and
    /// wake whoever waits for those that ended.
    fn learn_ends_elsewhere(&self) {
        let ids: Vec<u64> = self
            .tree
            .lock()
            .unwrap()
            .elsewhere
            .iter()
            .copied()
            .collect();
        for id in ids {
            let end = self
                .ledger
                .with_reader(|conn| offers::task_end(conn, &self.run_id, id));
            let Ok(Ok(Some(end))) = end else { continue };
            let mut tree = self.tree.lock().unwrap();
            tree.elsewhere.remove(&id);
            if let Some(node) = tree.nodes.get(&id)
                && node.outcome.borrow().is_none()
            {
                node.outcome.send_replace(Some(outcome_of(end)));
            }
        }
    }
}

/// The outcome a task's recorded end stands for.
pub(super) fn outcome_of(end: offers::TaskEnd) -> TaskOutcome {
    match end.status {
        Status::Completed => TaskOutcome::Completed(end.output.unwrap_or_default()),
        Status::Cancelled => TaskOutcome::Cancelled,
        _ => TaskOutcome::Failed(end.error.unwrap_or_default()),
    }
}
