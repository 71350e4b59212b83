//! A run's budget kept in the cluster's PostgreSQL ledger
//! ([`crate::ledger::budgets`]), for a run whose tasks execute on several workers.
//!
//! [`super::budget::Budget`] keeps its tree (which owner each task draws on) and
//! hands every number to this pool: carving a share, reserving before a call,
//! settling after it, handing a share back. Each is one short transaction, so the
//! workers executing the run's tasks draw on one budget atomically. When the
//! database cannot be reached, a reservation or share is refused (nothing is spent
//! unaccounted); a settle or hand-back that fails leaves the amount reserved (counted
//! as spent), which errs on the side of never overspending.

use super::budget::{BudgetError, Reservation, owner_name};
use crate::ledger::budgets::{Refusal, SharedBudgets};
use std::sync::Arc;

/// One run's numbers in the shared pool.
#[derive(Clone)]
pub struct SharedPool {
    pub(super) budgets: Arc<SharedBudgets>,
    pub(super) run_id: String,
}

impl std::fmt::Debug for SharedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedPool({})", self.run_id)
    }
}

impl SharedPool {
    /// The pool of `run_id` in `budgets` (opened already).
    pub fn new(budgets: Arc<SharedBudgets>, run_id: String) -> SharedPool {
        SharedPool { budgets, run_id }
    }

    /// Carve `share` for `child` out of `owner`.
    pub(super) fn carve(&self, owner: u64, child: u64, share: f64) -> Result<(), BudgetError> {
        match self.budgets.carve(&self.run_id, owner, child, share) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(row)) => Err(BudgetError::Share {
                owner,
                requested: share,
                left: row.left(),
            }),
            Err(e) => Err(BudgetError::Unavailable(e.to_string())),
        }
    }

    /// Hand `child`'s share back to `owner`.
    pub(super) fn close(&self, owner: u64, child: u64) {
        if let Err(e) = self.budgets.close(&self.run_id, owner, child) {
            tracing::warn!(run = %self.run_id, task = child, error = %e, "handing a share back to the shared budget: it stays carved");
        }
    }

    /// Reserve `usd` and `tokens` on `owner` for a call of `task`: the hold.
    pub(super) fn reserve(
        &self,
        owner: u64,
        task: u64,
        usd: f64,
        tokens: u64,
    ) -> Result<i64, BudgetError> {
        match self.budgets.reserve(&self.run_id, owner, task, usd, tokens) {
            Ok(Ok(hold)) => Ok(hold),
            Ok(Err(Refusal::Tokens(root))) => Err(BudgetError::Tokens {
                limit: root.token_limit.unwrap_or_default(),
                used: root.tokens_used,
                reserved: root.tokens_reserved,
                wanted: tokens,
            }),
            Ok(Err(Refusal::Usd(row))) => Err(BudgetError::Usd {
                owner,
                limit: row.limit_usd,
                spent: row.spent_usd,
                reserved: row.reserved_usd,
                carved: row.carved_usd,
                wanted: usd,
            }),
            Err(e) => Err(BudgetError::Unavailable(e.to_string())),
        }
    }

    /// Settle `reservation` at `actual` USD and `tokens`.
    pub(super) fn settle(&self, reservation: &Reservation, actual: f64, tokens: u64) {
        let Some(hold) = reservation.hold else { return };
        let settled = self.budgets.settle(
            &self.run_id,
            reservation.owner,
            hold,
            (reservation.amount, reservation.tokens),
            (actual, tokens),
        );
        if let Err(e) = settled {
            tracing::warn!(run = %self.run_id, hold, error = %e, "settling a call in the shared budget: it stays reserved until reclaimed");
        }
    }

    /// What `owner` has left (nothing, when it cannot be read).
    pub(super) fn remaining(&self, owner: u64) -> f64 {
        match self.budgets.row(&self.run_id, owner) {
            Ok(Some(row)) => row.left().max(0.0),
            Ok(None) => 0.0,
            Err(e) => {
                tracing::warn!(run = %self.run_id, owner = %owner_name(owner), error = %e, "reading the shared budget");
                0.0
            }
        }
    }

    /// The run's limit, what it spent and the most it had committed at once — the
    /// holds of stopped workers counted as spent first (their calls may have been
    /// sent).
    pub(super) fn root_summary(&self) -> (f64, f64, f64) {
        if let Err(e) = self.budgets.reclaim(&self.run_id) {
            tracing::warn!(run = %self.run_id, error = %e, "reclaiming stopped workers' holds");
        }
        let root = self.budgets.row(&self.run_id, 1);
        let spent = self.budgets.spent(&self.run_id);
        match (root, spent) {
            (Ok(Some(root)), Ok(spent)) => (root.limit_usd, spent, root.peak_usd),
            (root, spent) => {
                tracing::warn!(run = %self.run_id, ?root, ?spent, "reading the shared budget's summary");
                (0.0, 0.0, 0.0)
            }
        }
    }
}
