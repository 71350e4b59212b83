//! Waits for a human, as the supervisor tracks them: a task waiting for an approval, a
//! review or the resolution of a merge conflict, and the tasks blocked on other tasks
//! (`tasks.wait` on a child, a child's dependencies or a lock's holder before it
//! starts).
//!
//! A task is *blocked on a human* while it is in a human wait itself, or while it waits
//! for a task that is (transitively). Three things follow from that:
//!
//! - its wall-clock limit pauses ([`RunContext::within_wall_limit`]): nobody answering
//!   for an hour does not time the task or its waiting ancestors out;
//! - the operator is told, once, what it waits for and the command that answers it
//!   ([`NoticeSink`], set by the CLI);
//! - a run whose live tasks are *all* blocked on a human is *parked*: nothing can move
//!   until someone decides, and no call with an effect is in flight, so a host may stop
//!   it there ([`RunContext::park_when_all_wait`], `run --detach`) and a later `resume`
//!   replays each task's record and continues once the decision is in the ledger.
//!
//! Execution slots are not held across a human wait: an approval is waited for before
//! the task takes its slot, a review between attempts (each attempt takes a slot of
//! its own), a conflict inside `tasks.wait`/`tasks.merge`, which give theirs back.

use super::RunContext;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What kind of decision a task waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionKind {
    /// A spawn matched `[constraints.approval]`: `agentflow approve`/`deny`.
    Approval,
    /// An output failed validation under `[retry] … = "human"`: `agentflow retry`/`reject`.
    Review,
    /// A critical merge conflict: `agentflow resolve`.
    Conflict,
}

impl DecisionKind {
    /// The lowercase name (`approval`, `review`, `conflict`).
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Approval => "approval",
            DecisionKind::Review => "review",
            DecisionKind::Conflict => "conflict",
        }
    }
}

/// A decision a task of a run waits for, and the commands that give it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HumanWait {
    pub run_id: String,
    /// The waiting task (for a conflict: the parent whose join waits).
    pub task_id: u64,
    pub kind: DecisionKind,
    /// The approval, review or conflict id the commands take.
    pub id: u64,
    /// Why a human is asked.
    pub reason: String,
    /// The commands that answer it, each without `--db`.
    pub commands: Vec<String>,
}

impl HumanWait {
    /// Task `task_id` waits for approval `id`.
    pub fn approval(run_id: &str, task_id: u64, id: u64, reason: &str) -> HumanWait {
        HumanWait {
            run_id: run_id.to_string(),
            task_id,
            kind: DecisionKind::Approval,
            id,
            reason: reason.to_string(),
            commands: vec![
                format!("agentflow approve {id}"),
                format!("agentflow deny {id} --note \"why\""),
            ],
        }
    }

    /// Task `task_id` waits for review `id` of its failed output.
    pub fn review(run_id: &str, task_id: u64, id: u64, reason: &str) -> HumanWait {
        HumanWait {
            run_id: run_id.to_string(),
            task_id,
            kind: DecisionKind::Review,
            id,
            reason: reason.to_string(),
            commands: vec![
                format!("agentflow retry {id} --note \"guidance\""),
                format!("agentflow reject {id} --note \"why\""),
            ],
        }
    }

    /// Task `parent` waits for conflict `id` with its child `child` to be resolved.
    pub fn conflict(run_id: &str, parent: u64, child: u64, id: u64, reason: &str) -> HumanWait {
        HumanWait {
            run_id: run_id.to_string(),
            task_id: parent,
            kind: DecisionKind::Conflict,
            id,
            reason: reason.to_string(),
            commands: vec![
                format!("agentflow resolve {id} --take {parent}"),
                format!("agentflow resolve {id} --take {child}"),
                format!("agentflow resolve {id} --file F"),
            ],
        }
    }

    /// `approval 3`.
    pub fn what(&self) -> String {
        format!("{} {}", self.kind.as_str(), self.id)
    }
}

/// Where the host tells its operator that a task started waiting for a human (the CLI
/// prints it on stderr). Called once per wait, when it turns out to be pending.
pub type NoticeSink = Arc<dyn Fn(&HumanWait) + Send + Sync>;

/// Who waits for what in a run.
#[derive(Default)]
pub(super) struct WaitState {
    /// Tasks started and not finished (each has a tokio task, or is the root).
    live: HashSet<u64>,
    /// Tasks in a human wait.
    human: HashMap<u64, HumanWait>,
    /// Tasks waiting for other tasks (`tasks.wait`, dependencies, a lock's holder).
    blocked_on: HashMap<u64, Vec<u64>>,
    /// The task holding each lock (shared resource, mutual exclusion) taken.
    holders: HashMap<String, u64>,
}

impl WaitState {
    /// Whether `task` is blocked on a human, itself or through the tasks it waits for.
    fn on_human(&self, task: u64) -> bool {
        if self.human.is_empty() {
            return false;
        }
        let mut seen = HashSet::new();
        let mut stack = vec![task];
        while let Some(t) = stack.pop() {
            if !seen.insert(t) {
                continue;
            }
            if self.human.contains_key(&t) {
                return true;
            }
            if let Some(on) = self.blocked_on.get(&t) {
                stack.extend(on.iter().copied());
            }
        }
        false
    }

    /// The pending decisions, when every live task is blocked on one.
    fn parked(&self) -> Option<Vec<HumanWait>> {
        if self.human.is_empty() || self.live.is_empty() {
            return None;
        }
        if !self.live.iter().all(|t| self.on_human(*t)) {
            return None;
        }
        let mut waits: Vec<HumanWait> = self.human.values().cloned().collect();
        waits.sort_by_key(|w| (w.task_id, w.id));
        Some(waits)
    }
}

/// A registered wait of one task, removed when dropped (also when the waiting future
/// is dropped: a cancelled task, a stopped host).
pub struct WaitGuard<'a> {
    run: &'a RunContext,
    task: u64,
    human: bool,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.run.change_waits(self.task, |w| {
            if self.human {
                w.human.remove(&self.task);
            } else {
                w.blocked_on.remove(&self.task);
            }
        });
    }
}

impl RunContext {
    /// Apply `change` to the wait state of the run; wake the wall clocks and the
    /// parked watcher when it changed whether `task` is blocked on a human.
    fn change_waits(&self, task: u64, change: impl FnOnce(&mut WaitState)) {
        let flipped = {
            let mut w = self.waits.lock().unwrap();
            let before = w.on_human(task);
            change(&mut w);
            before != w.on_human(task)
        };
        if flipped {
            self.waits_changed.send_modify(|v| *v += 1);
        }
    }

    /// Task `id` is started (it runs until [`RunContext::finish`]).
    pub fn mark_live(&self, id: u64) {
        self.waits.lock().unwrap().live.insert(id);
    }

    /// Task `id` has finished.
    pub(super) fn mark_finished(&self, id: u64) {
        let wake = {
            let mut w = self.waits.lock().unwrap();
            w.live.remove(&id);
            !w.human.is_empty()
        };
        if wake {
            self.waits_changed.send_modify(|v| *v += 1);
        }
    }

    /// The task holding lock `name`, if one does.
    pub(super) fn lock_holder(&self, name: &str) -> Option<u64> {
        self.waits.lock().unwrap().holders.get(name).copied()
    }

    /// Task `id` holds lock `name`.
    pub(super) fn hold_lock(&self, name: &str, id: u64) {
        self.waits
            .lock()
            .unwrap()
            .holders
            .insert(name.to_string(), id);
    }

    /// Task `id` lets go of the locks `names`.
    pub(super) fn release_locks(&self, names: &[String], id: u64) {
        let mut w = self.waits.lock().unwrap();
        for name in names {
            if w.holders.get(name) == Some(&id) {
                w.holders.remove(name);
            }
        }
    }

    /// Task `task` waits for the tasks `on` until the guard is dropped.
    pub fn blocked_on(&self, task: u64, on: Vec<u64>) -> WaitGuard<'_> {
        self.change_waits(task, |w| {
            w.blocked_on.insert(task, on);
        });
        WaitGuard {
            run: self,
            task,
            human: false,
        }
    }

    /// Task `wait.task_id` waits for a human until the guard is dropped; the operator
    /// is told.
    pub fn waits_for_human(&self, wait: HumanWait) -> WaitGuard<'_> {
        let task = wait.task_id;
        tracing::info!(run = %self.run_id, task, "waiting for a human: {} ({})", wait.what(), wait.reason);
        if let Some(sink) = self.notices.get() {
            sink(&wait);
        }
        self.change_waits(task, |w| {
            w.human.insert(task, wait);
        });
        WaitGuard {
            run: self,
            task,
            human: true,
        }
    }

    /// The decisions the run waits for now.
    pub fn human_waits(&self) -> Vec<HumanWait> {
        let mut waits: Vec<HumanWait> =
            self.waits.lock().unwrap().human.values().cloned().collect();
        waits.sort_by_key(|w| (w.task_id, w.id));
        waits
    }

    /// Whether task `id` is blocked on a human now.
    pub fn is_blocked_on_human(&self, id: u64) -> bool {
        self.waits.lock().unwrap().on_human(id)
    }

    /// Resolves once every live task of the run is blocked on a human, having stopped
    /// the run's task tree where each task waits — recording nothing: the run stays
    /// unfinished in the ledger, for `resume` — and returns the pending decisions. The
    /// root task, run by the caller, is the caller's to drop.
    pub async fn park_when_all_wait(&self) -> Vec<HumanWait> {
        let mut changed = self.waits_changed.subscribe();
        loop {
            {
                let waits = self.waits.lock().unwrap();
                if let Some(pending) = waits.parked() {
                    // Still under the lock, which a task takes to leave a wait: none
                    // has gone on past its decision (nor to any call) before it stops.
                    for node in self.tree.lock().unwrap().nodes.values() {
                        if let Some(abort) = &node.abort {
                            abort.abort();
                        }
                    }
                    return pending;
                }
            }
            if changed.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Run `fut`, one attempt at task `task`, within its wall-clock limit `limit`:
    /// `None` when the limit passed first. The clock stops while the task is blocked
    /// on a human. Also returns the time counted against the limit.
    pub async fn within_wall_limit<F: Future>(
        &self,
        task: u64,
        limit: Duration,
        fut: F,
    ) -> (Option<F::Output>, Duration) {
        // The sender lives in `self`: `changed()` cannot fail while this runs.
        let mut changed = self.waits_changed.subscribe();
        let mut fut = std::pin::pin!(fut);
        let mut used = Duration::ZERO;
        loop {
            let paused = self.is_blocked_on_human(task);
            let since = Instant::now();
            if paused {
                tokio::select! {
                    biased;
                    out = &mut fut => return (Some(out), used),
                    _ = changed.changed() => {}
                }
            } else {
                let left = limit.saturating_sub(used);
                tokio::select! {
                    biased;
                    out = &mut fut => return (Some(out), used + since.elapsed()),
                    _ = tokio::time::sleep(left) => return (None, limit),
                    _ = changed.changed() => used += since.elapsed(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(task: u64) -> HumanWait {
        HumanWait::approval("r", task, task, "why")
    }

    #[test]
    fn blocked_on_a_human_is_transitive_and_parked_needs_every_live_task() {
        let mut w = WaitState::default();
        w.live.extend([1, 2, 3]);
        w.blocked_on.insert(1, vec![2]);
        w.blocked_on.insert(2, vec![3]);
        assert!(!w.on_human(1));
        w.human.insert(3, wait(3));
        assert!(w.on_human(1) && w.on_human(2) && w.on_human(3));
        assert_eq!(w.parked().unwrap(), vec![wait(3)]);
        w.live.insert(4); // a sibling still runs
        assert!(w.parked().is_none());
        w.blocked_on.insert(4, vec![1]);
        assert!(w.parked().is_some());
        w.blocked_on.insert(3, vec![1]); // a cycle ends
        w.human.clear();
        assert!(!w.on_human(1) && w.parked().is_none());
    }
}
