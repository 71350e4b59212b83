//! The task tree of a run: who spawned whom, each task's outcome (a watch channel
//! `tasks.wait` listens on), recording a task's end, waiting and cancelling (a
//! cancelled task's descendants are cancelled with it).

use super::{RunContext, TaskOutcome};
use crate::ledger::Status;
use std::collections::{HashMap, HashSet};
use tokio::sync::watch;

pub(super) struct TaskNode {
    pub(super) parent: Option<u64>,
    /// The name of the agent the task runs (its grants are looked up by it).
    pub(super) agent: String,
    pub(super) description: String,
    pub(super) children: Vec<u64>,
    pub(super) outcome: watch::Sender<Option<TaskOutcome>>,
    pub(super) abort: Option<tokio::task::AbortHandle>,
}

#[derive(Default)]
pub(super) struct TaskTree {
    pub(super) next_id: u64,
    pub(super) nodes: HashMap<u64, TaskNode>,
    pub(super) dedup: HashMap<String, u64>,
    /// `parent:call-number` → child, so a replaying parent finds its child again.
    pub(super) spawn_keys: HashMap<String, u64>,
    /// Normalised description → task, for duplicate detection.
    pub(super) descriptions: HashMap<String, u64>,
    /// (parent, sequence name) → the last child spawned in that sequence.
    pub(super) sequences: HashMap<(u64, String), u64>,
    /// Tasks whose end is being recorded (the first outcome wins).
    pub(super) finishing: HashSet<u64>,
    /// Per-task wall-clock limits set at spawn.
    pub(super) timeouts: HashMap<u64, u64>,
    /// What spawns asked for their children (memory, CPU), within the run's limits.
    pub(super) needs: HashMap<u64, super::spawn::TaskNeeds>,
    /// Locks each task takes while it runs.
    pub(super) resources: HashMap<u64, Vec<String>>,
    /// Events to record with a task's end, in the same commit (see [`RunContext::defer`]).
    pub(super) deferred: HashMap<u64, Vec<crate::ledger::EventRecord>>,
    /// Components already stored in the ledger's `blobs`.
    pub(super) stored_components: HashSet<String>,
    /// Tasks offered to other workers ([`super::offered`]) whose end is not known here.
    pub(super) offered: HashSet<u64>,
    /// Tasks started by this process: their ends are recorded, or learned, here.
    pub(super) here: HashSet<u64>,
    /// Tasks other processes drive that a task here waits for: their ends are read
    /// from the ledger ([`RunContext::watch_ends_elsewhere`]).
    pub(super) elsewhere: HashSet<u64>,
}

/// Takes task `id` out of [`TaskTree::finishing`] when dropped armed.
struct Unfinished<'a> {
    tree: &'a std::sync::Mutex<TaskTree>,
    id: u64,
    armed: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.tree.lock().unwrap().finishing.remove(&self.id);
        }
    }
}

impl TaskTree {
    /// A receiver of task `id`'s outcome, if the task is known. In a run whose tasks
    /// execute on several workers (`shared`), an open task not started here is one
    /// whose end only the ledger tells: it is watched there.
    pub(super) fn watch(
        &mut self,
        id: u64,
        shared: bool,
    ) -> Option<watch::Receiver<Option<TaskOutcome>>> {
        let node = self.nodes.get(&id)?;
        let rx = node.outcome.subscribe();
        if shared && rx.borrow().is_none() && !self.here.contains(&id) {
            self.elsewhere.insert(id);
        }
        Some(rx)
    }

    pub(super) fn is_ancestor_or_self(&self, candidate: u64, of: u64) -> bool {
        let mut cur = Some(of);
        while let Some(id) = cur {
            if id == candidate {
                return true;
            }
            cur = self.nodes.get(&id).and_then(|n| n.parent);
        }
        false
    }
}

impl RunContext {
    /// The agents of task `id`'s chain of spawners, the root's first and the task's
    /// own last: every one must admit a tool call the task makes.
    pub fn agent_chain(&self, id: u64) -> Vec<String> {
        let tree = self.tree.lock().unwrap();
        let mut chain = Vec::new();
        let mut cur = Some(id);
        while let Some(node) = cur.and_then(|i| tree.nodes.get(&i)) {
            chain.push(node.agent.clone());
            cur = node.parent;
        }
        chain.reverse();
        chain
    }

    /// The outcome of a finished task.
    pub fn outcome(&self, id: u64) -> Option<TaskOutcome> {
        self.tree
            .lock()
            .unwrap()
            .nodes
            .get(&id)
            .and_then(|n| n.outcome.borrow().clone())
    }

    /// Whether task `id` has finished.
    pub fn is_finished(&self, id: u64) -> bool {
        self.tree
            .lock()
            .unwrap()
            .nodes
            .get(&id)
            .is_some_and(|n| n.outcome.borrow().is_some())
    }

    /// Record `events` of task `id` together with its end, in one commit: for records
    /// that are recomputed when lost (a crash before the end resumes the task, which
    /// produces them again), such as the verdicts of validators that passed.
    pub fn defer(&self, id: u64, events: Vec<crate::ledger::EventRecord>) {
        self.tree
            .lock()
            .unwrap()
            .deferred
            .entry(id)
            .or_default()
            .extend(events);
    }

    /// Record a task's end (durably) and wake whoever waits for it. The first outcome
    /// wins (a cancelled task stays cancelled).
    /// Whether this call recorded it (`false`: the task had ended already).
    pub async fn finish(&self, id: u64, outcome: TaskOutcome) -> bool {
        self.finish_as(id, outcome, crate::ledger::Commit::Durable)
            .await
    }

    /// Tell the runner that task `id` ended as `outcome` ([`super::TaskRunner::ended`]),
    /// once [`RunContext::finish`] recorded it.
    pub fn tell_ended(self: &std::sync::Arc<Self>, id: u64, outcome: &TaskOutcome) {
        self.runner.ended(self, id, outcome);
    }

    /// [`RunContext::finish`], committed as `commit` says: the root's end is
    /// [`crate::ledger::Commit::Buffered`] when the run's end, durable, follows it.
    pub async fn finish_as(
        &self,
        id: u64,
        outcome: TaskOutcome,
        commit: crate::ledger::Commit,
    ) -> bool {
        self.end(id, outcome, Some(commit)).await
    }

    /// Task `id` ended as `outcome`, its end already recorded by the worker that
    /// executed it ([`super::offered`]): wake whoever waits, as [`RunContext::finish`]
    /// does, without recording it again.
    pub(super) async fn ended_elsewhere(&self, id: u64, outcome: TaskOutcome) -> bool {
        self.end(id, outcome, None).await
    }

    /// Record (as `commit` says, unless `None`) the end of task `id` and wake whoever
    /// waits for it, once; whether this call ended it.
    async fn end(
        &self,
        id: u64,
        outcome: TaskOutcome,
        commit: Option<crate::ledger::Commit>,
    ) -> bool {
        // The end is recorded in the ledger before anyone waiting is woken, so what a
        // dependent does next is always after its dependency's end in the ledger.
        let first = {
            let mut tree = self.tree.lock().unwrap();
            let open = tree
                .nodes
                .get(&id)
                .is_some_and(|n| n.outcome.borrow().is_none());
            open && tree.finishing.insert(id)
        };
        if !first {
            return false;
        }
        // Dropped before the end is known here (its caller's future dropped while the
        // end is being recorded), the next `end` — the recorded one read back — may
        // still finish it.
        let mut unfinished = Unfinished {
            tree: &self.tree,
            id,
            armed: true,
        };
        let (status, output, error) = match outcome.clone() {
            TaskOutcome::Completed(out) => (Status::Completed, Some(out), None),
            TaskOutcome::Failed(e) => (Status::Failed, None, Some(e)),
            TaskOutcome::Cancelled => (Status::Cancelled, None, None),
        };
        let events = self
            .tree
            .lock()
            .unwrap()
            .deferred
            .remove(&id)
            .unwrap_or_default();
        let mut outcome = outcome;
        let recorded = match commit {
            None => Ok(true),
            // The root's end, the run's end to follow: never ended by anyone else.
            Some(commit @ crate::ledger::Commit::Buffered) => self
                .ledger
                .finish_task(
                    self.run_id.clone(),
                    id,
                    status,
                    output,
                    error,
                    events,
                    commit,
                )
                .await
                .map(|()| true),
            Some(commit) => {
                self.ledger
                    .finish_open_task(
                        self.run_id.clone(),
                        id,
                        status,
                        output,
                        error,
                        events,
                        commit,
                    )
                    .await
            }
        };
        let mut spent_elsewhere = None;
        match recorded {
            Ok(true) => {}
            // Ended first by the other side of an offered task: that end stands.
            Ok(false) => {
                let end = self
                    .ledger
                    .with_reader(|c| crate::ledger::offers::task_end(c, &self.run_id, id));
                if let Ok(Ok(Some(end))) = end {
                    tracing::info!(run = %self.run_id, task = id, status = %end.status, "the task's end was recorded elsewhere first");
                    spent_elsewhere = Some(end.spent_usd);
                    outcome = super::offered::outcome_of(end);
                }
            }
            Err(e) => {
                tracing::error!(run = %self.run_id, task = id, error = %e, "cannot record task end")
            }
        }
        let offered = self.tree.lock().unwrap().offered.remove(&id);
        if offered && commit.is_some() {
            // Ended here (cancelled) while another worker may be executing it: what it
            // spent there is not all recorded yet (a call may be in flight), so unless
            // its own end came first, its whole share counts as spent.
            // A worker that claims it after this end sees it ended and runs nothing.
            let claimed = || {
                let claims = self
                    .ledger
                    .with_reader(|c| crate::ledger::offers::claims(c, &self.run_id, id));
                !matches!(claims, Ok(Ok(0)))
            };
            let spent = match spent_elsewhere {
                Some(spent) => spent,
                None if claimed() => self.budget.own_share(id).unwrap_or(0.0),
                None => 0.0,
            };
            self.budget.settle_elsewhere(id, spent);
        }
        self.budget.close_child(id);
        {
            let tree = self.tree.lock().unwrap();
            if let Some(node) = tree.nodes.get(&id) {
                node.outcome.send_replace(Some(outcome));
            }
        }
        unfinished.armed = false;
        self.mark_finished(id);
        true
    }

    /// Resolves once task `id` is cancelled (an operator's `agentflow cancel`); never
    /// for a task that ends otherwise.
    pub async fn cancelled(&self, id: u64) {
        let rx = {
            let tree = self.tree.lock().unwrap();
            tree.nodes.get(&id).map(|n| n.outcome.subscribe())
        };
        if let Some(mut rx) = rx
            && rx
                .wait_for(|o| matches!(o, Some(TaskOutcome::Cancelled)))
                .await
                .is_ok()
        {
            return;
        }
        std::future::pending::<()>().await
    }

    /// Wait for task `id`; `None` if the caller may not wait for it (unknown, itself
    /// or one of its ancestors, which would deadlock).
    pub async fn wait(&self, caller: u64, id: u64) -> Option<TaskOutcome> {
        self.learn_task(id);
        let mut rx = {
            let mut tree = self.tree.lock().unwrap();
            if !tree.nodes.contains_key(&id) || tree.is_ancestor_or_self(id, caller) {
                return None;
            }
            tree.watch(id, self.budget.is_shared())?
        };
        // Blocked on `id`: while it waits for a human, so does the caller's wall clock.
        let _blocked = self.blocked_on(caller, vec![id]);
        rx.wait_for(|o| o.is_some())
            .await
            .ok()
            .and_then(|o| o.clone())
    }

    /// Cancel task `id` and all its descendants; false if it had already finished or
    /// may not be cancelled by `caller` (itself or an ancestor).
    pub async fn cancel(&self, caller: Option<u64>, id: u64) -> bool {
        let targets: Vec<u64> = {
            let tree = self.tree.lock().unwrap();
            let Some(node) = tree.nodes.get(&id) else {
                return false;
            };
            if let Some(c) = caller
                && tree.is_ancestor_or_self(id, c)
            {
                return false;
            }
            if node.outcome.borrow().is_some() {
                return false;
            }
            let mut order = Vec::new();
            let mut stack = vec![id];
            while let Some(t) = stack.pop() {
                order.push(t);
                if let Some(n) = tree.nodes.get(&t) {
                    stack.extend(n.children.iter().copied());
                }
            }
            for t in &order {
                if let Some(abort) = tree.nodes.get(t).and_then(|n| n.abort.as_ref()) {
                    abort.abort();
                }
            }
            order
        };
        for t in targets.into_iter().rev() {
            self.finish(t, TaskOutcome::Cancelled).await;
        }
        true
    }

    /// Cancel every task that has not finished (used when the root returns).
    pub async fn cancel_unfinished(&self) -> usize {
        let open: Vec<u64> = {
            let tree = self.tree.lock().unwrap();
            let mut ids: Vec<u64> = tree
                .nodes
                .iter()
                .filter(|(_, n)| n.outcome.borrow().is_none() && n.parent.is_some())
                .map(|(id, _)| *id)
                .collect();
            ids.sort_unstable();
            ids
        };
        let mut n = 0;
        for id in open {
            if self.cancel(None, id).await {
                n += 1;
            }
        }
        n
    }
}
