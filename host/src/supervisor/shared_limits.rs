//! A cluster run's execution slots, locks and task ids kept in its PostgreSQL ledger
//! ([`crate::ledger::run_limits`]), beside its budget ([`super::shared_budget`]): a run
//! whose tasks spawn and execute on several workers holds `max_concurrent_tasks`,
//! mutual exclusion, its task limit and its duplicate checks across all of them.
//!
//! A run without a shared pool keeps them in memory ([`super::RunContext`]'s
//! semaphore and locks, its task tree).

use super::shared_budget::SharedPool;
use crate::ledger::run_limits::TaskClaim;
use tokio::sync::OwnedSemaphorePermit;

/// An execution slot of a run, held until dropped.
pub struct TaskSlot(SlotKind);

enum SlotKind {
    /// A permit of the run's semaphore in this process.
    Local(#[allow(dead_code)] OwnedSemaphorePermit),
    /// A row of the cluster's `run_slots`, of a run allowing `max` at once.
    Shared { pool: SharedPool, id: i64, max: u64 },
}

impl TaskSlot {
    /// A slot of the run's semaphore in this process.
    pub(super) fn local(permit: OwnedSemaphorePermit) -> TaskSlot {
        TaskSlot(SlotKind::Local(permit))
    }
}

impl std::fmt::Debug for TaskSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            SlotKind::Local(_) => write!(f, "TaskSlot(local)"),
            SlotKind::Shared { id, .. } => write!(f, "TaskSlot(shared {id})"),
        }
    }
}

impl Drop for TaskSlot {
    fn drop(&mut self) {
        if let SlotKind::Shared { pool, id, max } = &self.0
            && let Err(e) = pool.budgets.release_slot(*id, *max)
        {
            tracing::warn!(run = %pool.run_id, slot = id, error = %e, "letting go of a shared task slot: it is free once it expires");
        }
    }
}

/// A lock of the run held in the cluster's `run_locks`, let go of when dropped.
pub(super) struct SharedLock {
    pool: SharedPool,
    name: String,
    task: u64,
}

impl Drop for SharedLock {
    fn drop(&mut self) {
        if let Err(e) = self
            .pool
            .budgets
            .release_lock(&self.pool.run_id, &self.name, self.task)
        {
            tracing::warn!(run = %self.pool.run_id, lock = %self.name, error = %e, "letting go of a shared lock: it is free once it expires");
        }
    }
}

impl SharedPool {
    /// Claim the next task id of the run for spawn `spawn_key`
    /// ([`crate::ledger::run_limits::TaskClaim`]), unless a key of `check` is another
    /// spawn's or the run has `max_tasks`; `keys` become the new task's.
    pub(super) fn claim_task(
        &self,
        spawn_key: &str,
        check: &[String],
        keys: &[String],
        max_tasks: u64,
    ) -> Result<TaskClaim, String> {
        self.budgets
            .claim_task(&self.run_id, spawn_key, check, keys, max_tasks)
            .map_err(|e| format!("the cluster's task counter is unavailable: {e}"))
    }

    /// Task `id` was not created after all: its duplicate keys are free again.
    pub(super) fn unclaim_task(&self, id: u64) {
        if let Err(e) = self.budgets.unclaim_task(&self.run_id, id) {
            tracing::warn!(run = %self.run_id, task = id, error = %e, "freeing a task's duplicate keys");
        }
    }

    /// Take a slot for `task` if fewer than `max` are in use anywhere.
    pub(super) fn try_slot(&self, task: u64, max: u64) -> Option<TaskSlot> {
        match self.budgets.take_slot(&self.run_id, task, max) {
            Ok(Some(id)) => Some(TaskSlot(SlotKind::Shared {
                pool: self.clone(),
                id,
                max,
            })),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(run = %self.run_id, task, error = %e, "taking a shared task slot");
                None
            }
        }
    }

    /// Whether every one of the `max` slots is in use.
    pub(super) fn slots_full(&self, max: u64) -> bool {
        match self.budgets.slots_in_use(&self.run_id) {
            Ok(used) => used >= max,
            Err(e) => {
                tracing::warn!(run = %self.run_id, error = %e, "counting shared task slots");
                true
            }
        }
    }

    /// Take lock `name` for `task`: the lock, or the task holding it.
    pub(super) fn try_lock(&self, name: &str, task: u64) -> Result<SharedLock, Option<u64>> {
        match self.budgets.take_lock(&self.run_id, name, task) {
            Ok(None) => Ok(SharedLock {
                pool: self.clone(),
                name: name.to_string(),
                task,
            }),
            Ok(Some(holder)) => Err(Some(holder)),
            Err(e) => {
                tracing::warn!(run = %self.run_id, task, lock = name, error = %e, "taking a shared lock");
                Err(None)
            }
        }
    }
}
