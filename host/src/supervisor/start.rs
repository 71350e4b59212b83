//! Starting a task: wait for its dependencies and its approval (blocked on them, see
//! [`super::waits`]), take its locks (shared resources, mutual exclusion) and an
//! execution slot, then hand it to the [`super::TaskRunner`]; and rebuilding the tree
//! of a run being resumed.

use super::constraints::{self, DependencyFailure};
use super::spawn::{Dependency, parse_deps};
use super::tree::TaskNode;
use super::{ComponentRef, ReplayStart, RunContext, TaskOutcome, TaskStart};
use crate::ledger::{ApprovalStatus, Status};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, watch};

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

    /// Take a task slot (queueing when all are busy).
    pub async fn take_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
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
            // Shared resources and mutual exclusion: every lock in name order (no
            // deadlock between tasks), including this task's own.
            let mut names = run
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
            let mut guards = Vec::new();
            for name in &names {
                let lock = run.lock_for(name);
                let guard = match lock.clone().try_lock_owned() {
                    Ok(guard) => guard,
                    Err(_) => {
                        // Blocked on the holder: while it waits for a human (a review,
                        // a conflict), so does this task.
                        let _blocked = run.lock_holder(name).map(|h| run.blocked_on(id, vec![h]));
                        lock.lock_owned().await
                    }
                };
                run.hold_lock(name, id);
                guards.push(guard);
            }
            let slot = run.take_slot().await;
            if run.runs_apart(id, depth) {
                // Another worker executes it and records its end ([`super::offered`]),
                // on the input composed here (its dependencies' outputs included).
                let input = run_input.unwrap_or(input);
                let outcome = run.run_apart(id, input).await;
                drop(slot);
                run.release_locks(&names, id);
                drop(guards);
                run.ended_elsewhere(id, outcome).await;
                return;
            }
            let input = run_input.unwrap_or(input);
            let start = TaskStart {
                id,
                depth,
                agent,
                input,
                replay,
                slot,
            };
            let outcome = run.runner.run_task(run.clone(), start).await;
            run.release_locks(&names, id);
            drop(guards);
            if run.finish(id, outcome.clone()).await {
                run.tell_ended(id, &outcome);
            }
        });
        if let Some(node) = self.tree.lock().unwrap().nodes.get_mut(&id) {
            node.abort = Some(handle.abort_handle());
        }
    }

    /// Rebuild the task tree of a run being resumed: every task of the ledger, with
    /// the outcome of those that finished.
    pub fn restore_tree(&self, tasks: &[crate::ledger::query::ResumeTask]) {
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
                self.budget
                    .restore_child(parent, t.task_id, t.budget_usd, outcome_known);
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
            let tree = self.tree.lock().unwrap();
            parse_deps(&task.depends_on)
                .into_iter()
                .filter_map(|d| {
                    let (dep, data) = match d {
                        Dependency::After(i) => (i, false),
                        Dependency::DataFrom(i) => (i, true),
                        Dependency::ExclusiveWith(_) => return None,
                    };
                    tree.nodes
                        .get(&dep)
                        .map(|n| (dep, data, n.outcome.subscribe()))
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
