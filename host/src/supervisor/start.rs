//! Starting a task: wait for its dependencies and its approval (blocked on them, see
//! [`super::waits`]), take its locks (shared resources, mutual exclusion) and an
//! execution slot, then hand it to the [`super::TaskRunner`]; and rebuilding the tree
//! of a run being resumed.

use super::constraints::{self, DependencyFailure};
use super::shared_limits::{SharedLock, TaskSlot};
use super::spawn::{Dependency, parse_deps};
use super::tree::TaskNode;
use super::{ComponentRef, ReplayStart, RunContext, TaskOutcome, TaskStart};
use crate::ledger::{ApprovalStatus, Status};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedMutexGuard, watch};

/// Longest pause between two looks at a shared slot or lock that was busy.
const MOST_PATIENT_POLL: Duration = Duration::from_millis(250);

/// A lock a task holds while it runs, let go of when dropped.
enum HeldLock {
    Local(#[allow(dead_code)] OwnedMutexGuard<()>),
    Shared(#[allow(dead_code)] SharedLock),
}

/// Whether a task may have to wait for a human before it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Approval {
    /// Spawned by this host without an approval request: nothing to read.
    NotNeeded,
    /// Spawned with a request, or restored from the ledger: the ledger says.
    MayNeed,
}

impl RunContext {
    fn lock_for(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Wait until a human decides on task `id`'s approval, if it needs one. `Err` is
    /// the outcome of a denied (or unreadable) request.
    async fn await_approval(&self, id: u64) -> Result<(), TaskOutcome> {
        let waiting_for = format!(
            "approval of task {id} of run {} (agentflow approvals)",
            self.run_id
        );
        self.ledger
            .poll_decision(
                &waiting_for,
                |conn| {
                    Ok(
                        match crate::ledger::query::approval_of(conn, &self.run_id, id)? {
                            None => Some(Ok(())),
                            Some(a) if a.status == ApprovalStatus::Approved => Some(Ok(())),
                            Some(a) if a.status == ApprovalStatus::Denied => {
                                Some(Err(TaskOutcome::Failed(format!(
                                    "denied by a human (approval {}): {}",
                                    a.id,
                                    a.note.unwrap_or_default()
                                ))))
                            }
                            Some(_) => None,
                        },
                    )
                },
                |conn| {
                    // Pending: the task waits for a human from here on, without a slot.
                    let a = crate::ledger::query::approval_of(conn, &self.run_id, id)?;
                    let (approval, reason) = a.map(|a| (a.id, a.reason)).unwrap_or_default();
                    Ok(self.waits_for_human(super::HumanWait::approval(
                        &self.run_id,
                        id,
                        approval,
                        &reason,
                    )))
                },
            )
            .await
            .unwrap_or_else(|e| Err(TaskOutcome::Failed(format!("cannot read approvals: {e}"))))
    }

    /// Run the root task to its outcome — or to `Cancelled` the moment an operator
    /// cancels it (`agentflow cancel`), dropping what it was doing.
    pub async fn run_root(self: &Arc<Self>, start: TaskStart) -> TaskOutcome {
        let id = start.id;
        tokio::select! {
            outcome = self.runner.run_task(self.clone(), start) => outcome,
            () = self.cancelled(id) => TaskOutcome::Cancelled,
        }
    }

    /// Take a task slot for task `task` (queueing when all are busy): one of the
    /// run's semaphore here, or of the cluster's rows for a run whose tasks execute on
    /// several workers ([`super::shared_limits`]).
    pub async fn take_slot(&self, task: u64) -> Option<TaskSlot> {
        let Some(pool) = self.budget.pool() else {
            let permit = self.slots.clone().acquire_owned().await.ok()?;
            return Some(TaskSlot::local(permit));
        };
        let max = u64::from(self.settings.constraints.max_concurrent_tasks.max(1));
        let mut pause = Duration::from_millis(10);
        loop {
            if let Some(slot) = pool.try_slot(task, max) {
                return Some(slot);
            }
            self.ledger.changed_within(pause).await;
            pause = (pause * 2).min(MOST_PATIENT_POLL);
        }
    }

    /// Take the locks `names` (sorted) for task `id`, waiting for their holders.
    async fn take_locks(&self, id: u64, names: &[String]) -> Vec<HeldLock> {
        let mut held = Vec::new();
        for name in names {
            let Some(pool) = self.budget.pool() else {
                let lock = self.lock_for(name);
                let guard = match lock.clone().try_lock_owned() {
                    Ok(guard) => guard,
                    Err(_) => {
                        // Blocked on the holder: while it waits for a human (a review,
                        // a conflict), so does this task.
                        let _blocked = self.lock_holder(name).map(|h| self.blocked_on(id, vec![h]));
                        lock.lock_owned().await
                    }
                };
                self.hold_lock(name, id);
                held.push(HeldLock::Local(guard));
                continue;
            };
            let mut pause = Duration::from_millis(10);
            let lock = loop {
                match pool.try_lock(name, id) {
                    Ok(lock) => break lock,
                    Err(holder) => {
                        let _blocked = holder.map(|h| self.blocked_on(id, vec![h]));
                        self.ledger.changed_within(pause).await;
                        pause = (pause * 2).min(MOST_PATIENT_POLL);
                    }
                }
            };
            held.push(HeldLock::Shared(lock));
        }
        held
    }

    /// Start task `id` on its own tokio task: wait for its dependencies (and for a
    /// human, when `approval` says it may need one), then run it (replaying its record
    /// first when resuming; `run_input` is the input it already started with, if it
    /// had started).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_task(
        self: &Arc<Self>,
        id: u64,
        depth: u32,
        agent: ComponentRef,
        input: String,
        rx_deps: Vec<(u64, bool, watch::Receiver<Option<TaskOutcome>>)>,
        run_input: Option<String>,
        replay: Option<ReplayStart>,
        approval: Approval,
    ) {
        let run = self.clone();
        self.mark_live(id);
        self.tree.lock().unwrap().here.insert(id);
        let handle = tokio::spawn(async move {
            let mut input = input;
            let deps: Vec<u64> = rx_deps.iter().map(|(dep, _, _)| *dep).collect();
            let blocked = run.blocked_on(id, deps);
            for (dep_id, data, mut rx) in rx_deps {
                let outcome = rx
                    .wait_for(|o| o.is_some())
                    .await
                    .ok()
                    .and_then(|o| o.clone());
                match outcome {
                    Some(TaskOutcome::Completed(out)) => {
                        if data {
                            input.push_str("\n\n");
                            input.push_str(&out);
                        }
                    }
                    other => {
                        let outcome = match run.settings.constraints.on_dependency_failure {
                            DependencyFailure::Fail => TaskOutcome::Failed(format!(
                                "dependency task {dep_id} did not complete: {other:?}"
                            )),
                            DependencyFailure::Cancel => TaskOutcome::Cancelled,
                        };
                        drop(blocked);
                        run.finish(id, outcome).await;
                        return;
                    }
                }
            }
            drop(blocked);
            if approval == Approval::MayNeed
                && let Err(outcome) = run.await_approval(id).await
            {
                run.finish(id, outcome).await;
                return;
            }
            let input = run_input.unwrap_or(input);
            if run.budget.is_shared() && run.runs_apart(id, depth) {
                // Another worker executes it — taking its locks and slot there — and
                // records its end ([`super::offered`]), on the input composed here
                // (its dependencies' outputs included).
                let outcome = run.run_apart(id, input).await;
                run.ended_elsewhere(id, outcome).await;
                return;
            }
            run.run_here(id, depth, agent, input, replay).await;
        });
        if let Some(node) = self.tree.lock().unwrap().nodes.get_mut(&id) {
            node.abort = Some(handle.abort_handle());
        }
    }

    /// Run task `id` here, its dependencies and approval behind it: take its locks
    /// (shared resources, mutual exclusion: every one in name order, so no deadlock
    /// between tasks, its own included) and an execution slot, run it, record its end.
    /// A child offered to the cluster by a run without a shared pool is offered
    /// holding them, and its end is recorded by the worker that executes it.
    pub(crate) async fn run_here(
        self: &Arc<Self>,
        id: u64,
        depth: u32,
        agent: ComponentRef,
        input: String,
        replay: Option<ReplayStart>,
    ) -> TaskOutcome {
        let mut names = self
            .tree
            .lock()
            .unwrap()
            .resources
            .get(&id)
            .cloned()
            .unwrap_or_default();
        names.push(format!("task:{id}"));
        names.sort();
        names.dedup();
        let locks = self.take_locks(id, &names).await;
        let slot = self.take_slot(id).await;
        if !self.budget.is_shared() && self.runs_apart(id, depth) {
            let outcome = self.run_apart(id, input).await;
            drop(slot);
            self.release_locks(&names, id);
            drop(locks);
            self.ended_elsewhere(id, outcome.clone()).await;
            return outcome;
        }
        let start = TaskStart {
            id,
            depth,
            agent,
            input,
            replay,
            slot,
        };
        let outcome = self.runner.run_task(self.clone(), start).await;
        self.release_locks(&names, id);
        drop(locks);
        if self.finish(id, outcome.clone()).await {
            self.tell_ended(id, &outcome);
        }
        outcome
    }

    /// Rebuild the task tree of a run being resumed: every task of the ledger, with
    /// the outcome of those that finished (the shares of those that ended handed back).
    pub fn restore_tree(&self, tasks: &[crate::ledger::query::ResumeTask]) {
        self.restore_nodes(tasks, true);
    }

    /// [`RunContext::restore_tree`] for a worker executing one task of a run whose
    /// budget is the cluster's: the budget only learns which owner each task draws on
    /// (the run's own worker hands shares back).
    pub fn restore_tree_to_execute(&self, tasks: &[crate::ledger::query::ResumeTask]) {
        self.restore_nodes(tasks, false);
    }

    fn restore_nodes(&self, tasks: &[crate::ledger::query::ResumeTask], hand_back: bool) {
        let mut tree = self.tree.lock().unwrap();
        for t in tasks {
            let outcome = match t.status {
                Status::Completed => {
                    Some(TaskOutcome::Completed(t.output.clone().unwrap_or_default()))
                }
                Status::Failed => Some(TaskOutcome::Failed(t.error.clone().unwrap_or_default())),
                Status::Cancelled => Some(TaskOutcome::Cancelled),
                Status::Pending | Status::Running | Status::Interrupted | Status::Waiting => None,
            };
            let outcome_known = outcome.is_some();
            tree.nodes.insert(
                t.task_id,
                TaskNode {
                    parent: t.parent_id,
                    agent: t.agent.clone(),
                    description: t.description.clone(),
                    children: Vec::new(),
                    outcome: watch::channel(outcome).0,
                    abort: None,
                },
            );
            if let Some(k) = &t.dedup_key {
                tree.dedup.insert(k.clone(), t.task_id);
            }
            if let Some(k) = &t.spawn_key {
                tree.spawn_keys.insert(k.clone(), t.task_id);
            }
            if let Some(parent) = t.parent_id {
                tree.descriptions
                    .entry(constraints::normalise(&t.description))
                    .or_insert(t.task_id);
                if hand_back {
                    self.budget
                        .restore_child(parent, t.task_id, t.budget_usd, outcome_known);
                } else {
                    self.budget
                        .register(parent, t.task_id, t.budget_usd, outcome_known);
                }
            }
            if let Some(ms) = t.timeout_ms {
                tree.timeouts.insert(t.task_id, ms);
            }
            let names: Vec<String> = serde_json::from_str(&t.resources).unwrap_or_default();
            tree.resources.insert(t.task_id, names);
            tree.next_id = tree.next_id.max(t.task_id + 1);
        }
        for t in tasks {
            if let Some(p) = t.parent_id.and_then(|p| tree.nodes.get_mut(&p)) {
                p.children.push(t.task_id);
            }
        }
        for t in tasks {
            tree.stored_components.insert(t.component_hash.clone());
        }
    }

    /// Resume an unfinished non-root task (its dependencies, then a replay of its record).
    pub fn resume_task(
        self: &Arc<Self>,
        task: &crate::ledger::query::ResumeTask,
        agent: ComponentRef,
        input: String,
        run_input: Option<String>,
        replay: ReplayStart,
    ) {
        let rx_deps = {
            let mut tree = self.tree.lock().unwrap();
            let shared = self.budget.is_shared();
            parse_deps(&task.depends_on)
                .into_iter()
                .filter_map(|d| {
                    let (dep, data) = match d {
                        Dependency::After(i) => (i, false),
                        Dependency::DataFrom(i) => (i, true),
                        Dependency::ExclusiveWith(_) => return None,
                    };
                    tree.watch(dep, shared).map(|rx| (dep, data, rx))
                })
                .collect()
        };
        self.start_task(
            task.task_id,
            task.depth,
            agent,
            input,
            rx_deps,
            run_input,
            Some(replay),
            Approval::MayNeed,
        );
    }
}
