//! Hierarchical budgets that can never be overspent.
//!
//! Every task draws on a budget *owner*: the nearest task on its path to the root
//! that was given its own share (`budget-usd` at spawn), else the root, whose limit is
//! the run's budget. A share is carved out of the spawner's owner when the child is
//! created (the parent can no longer spend it) and handed back, minus what the child
//! spent, when the child ends. Every LLM call reserves its worst-case cost from its
//! owner before it is sent and settles with the real cost after. All checks and
//! reservations happen under one lock, so parallel children cannot race past a limit:
//! the sum of everything spent and reserved never exceeds the run's budget.
//!
//! On a cluster, a run whose tasks execute on several workers keeps the owners'
//! numbers in PostgreSQL instead ([`super::shared_budget`]): this tree then only
//! tells which owner a task draws on.

use super::shared_budget::SharedPool;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

#[derive(Debug, Default, Clone)]
struct Node {
    parent: Option<u64>,
    /// Its own share (the root's is the run budget); `None` draws on an ancestor.
    limit: Option<f64>,
    /// Spent and reserved by the tasks drawing on this owner.
    spent: f64,
    reserved: f64,
    /// Shares carved out for live children.
    carved: f64,
    /// The most ever committed at once (spent + reserved + carved): never above `limit`.
    peak: f64,
}

impl Node {
    fn note_peak(&mut self) {
        self.peak = self.peak.max(self.spent + self.reserved + self.carved);
    }
}

/// Run-wide token accounting (optional `[budget] tokens`).
#[derive(Debug, Default)]
struct Tokens {
    limit: Option<u64>,
    used: u64,
    reserved: u64,
}

/// `[budget]`: the run's total spending limit.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Total USD a run may spend on LLM calls (reserved before each call). Default 1.00.
    #[serde(default = "default_budget")]
    pub usd: f64,
    /// Total tokens (in + out) a run may use on LLM calls, reserved like the cost.
    /// Default: no token limit.
    #[serde(default)]
    pub tokens: Option<u64>,
}

fn default_budget() -> f64 {
    1.0
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            usd: default_budget(),
            tokens: None,
        }
    }
}

/// The run's budget tree, in USD, plus an optional run-wide token limit.
#[derive(Debug)]
pub struct Budget(
    Mutex<HashMap<u64, Node>>,
    Mutex<Tokens>,
    OnceLock<SharedPool>,
);

/// An amount set aside for one call; settle it with [`Budget::settle`].
#[derive(Debug)]
#[must_use]
pub struct Reservation {
    pub(super) owner: u64,
    pub(super) amount: f64,
    pub(super) tokens: u64,
    /// Its hold in the shared pool ([`super::shared_budget`]), until settled.
    pub(super) hold: Option<i64>,
    /// The pool holding it: a reservation dropped unsettled (its call's future
    /// dropped, the task cancelled mid-call) is settled there as spent whole.
    pub(super) pool: Option<SharedPool>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let (Some(pool), Some(_)) = (self.pool.take(), self.hold) {
            pool.settle(self, self.amount, self.tokens);
        }
    }
}

const EPSILON: f64 = 1e-12;

/// Why a budget refused a child's share or a call's reservation.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BudgetError {
    /// A child asked for more than its spawner's owner has left.
    #[error("requested share ${requested:.6} but task {owner}'s budget has ${left:.6} left")]
    Share {
        owner: u64,
        requested: f64,
        left: f64,
    },
    /// The run's token limit would be passed.
    #[error(
        "run token budget {limit}: used {used}, reserved {reserved}; this call may use up to {wanted}"
    )]
    Tokens {
        limit: u64,
        used: u64,
        reserved: u64,
        wanted: u64,
    },
    /// The owner's USD budget (the run's, or a task's share) would be passed.
    #[error(
        "{} ${limit:.6}: spent ${spent:.6}, reserved ${reserved:.6}, carved for children ${carved:.6}; this call may cost up to ${wanted:.6}",
        owner_name(*owner)
    )]
    Usd {
        owner: u64,
        limit: f64,
        spent: f64,
        reserved: f64,
        carved: f64,
        wanted: f64,
    },
    /// The cluster's shared budget could not be read or written.
    #[error("the cluster's shared budget is unavailable: {0}")]
    Unavailable(String),
}

pub(super) fn owner_name(owner: u64) -> String {
    if owner == 1 {
        "run budget".to_string()
    } else {
        format!("task {owner}'s share")
    }
}

impl Budget {
    /// A budget of `limit` USD for the run (the root task, id 1).
    pub fn new(limit: f64) -> Budget {
        Self::with_tokens(limit, None)
    }

    /// A budget of `limit` USD and at most `tokens` tokens for the run.
    pub fn with_tokens(limit: f64, tokens: Option<u64>) -> Budget {
        let mut nodes = HashMap::new();
        nodes.insert(
            1,
            Node {
                limit: Some(limit),
                ..Default::default()
            },
        );
        Budget(
            Mutex::new(nodes),
            Mutex::new(Tokens {
                limit: tokens,
                ..Default::default()
            }),
            OnceLock::new(),
        )
    }

    /// Keep this run's numbers in `pool` from now on (set once, before any task).
    pub fn share(&self, pool: SharedPool) {
        let _ = self.2.set(pool);
    }

    /// Whether the numbers live in a cluster's shared pool.
    pub fn is_shared(&self) -> bool {
        self.2.get().is_some()
    }

    /// The cluster's shared pool the numbers live in, if they do.
    pub fn pool(&self) -> Option<&SharedPool> {
        self.2.get()
    }

    /// The owner `task` draws on.
    pub(super) fn owner_of(&self, task: u64) -> u64 {
        Self::owner(&self.0.lock().unwrap(), task)
    }

    fn owner(nodes: &HashMap<u64, Node>, task: u64) -> u64 {
        let mut cur = task;
        loop {
            match nodes.get(&cur) {
                Some(n) if n.limit.is_some() => return cur,
                Some(n) => match n.parent {
                    Some(p) => cur = p,
                    None => return 1,
                },
                None => return 1,
            }
        }
    }

    fn available(n: &Node) -> f64 {
        n.limit.unwrap_or(0.0) - n.spent - n.reserved - n.carved
    }

    /// Register a child; with a share, carve it out of the parent's owner (or refuse).
    pub fn add_child(
        &self,
        parent: u64,
        child: u64,
        share: Option<f64>,
    ) -> Result<(), BudgetError> {
        let mut nodes = self.0.lock().unwrap();
        if let (Some(share), Some(pool)) = (share, self.2.get()) {
            pool.carve(Self::owner(&nodes, parent), child, share)?;
        } else if let Some(share) = share {
            let owner = Self::owner(&nodes, parent);
            let node = nodes.get_mut(&owner).expect("owners exist");
            let left = Self::available(node);
            if share > left + EPSILON {
                return Err(BudgetError::Share {
                    owner,
                    requested: share,
                    left,
                });
            }
            node.carved += share;
            node.note_peak();
        }
        nodes.insert(
            child,
            Node {
                parent: Some(parent),
                limit: share,
                ..Default::default()
            },
        );
        Ok(())
    }

    /// Register task `child` of a run being resumed, with the share it was given and
    /// whether it ended: what it carved is in the shared pool already, if the run has
    /// one (an ended child's share is handed back again there — a no-op unless its
    /// worker died between recording the end and handing it back); else carved (and
    /// handed back, when it ended) here.
    pub fn restore_child(&self, parent: u64, child: u64, share: Option<f64>, ended: bool) {
        if let Some(pool) = self.2.get() {
            if ended && share.is_some() {
                pool.close(self.owner_of(parent), child);
            }
            self.register(parent, child, share, ended);
            return;
        }
        let _ = self.add_child(parent, child, share);
        if ended {
            self.close_child(child);
        }
    }

    /// Register task `child` of a run whose numbers are in a shared pool, only to tell
    /// which owner its tasks draw on (a worker executing one of the run's tasks).
    pub fn register(&self, parent: u64, child: u64, share: Option<f64>, ended: bool) {
        let limit = if ended { share.map(|_| 0.0) } else { share };
        self.0.lock().unwrap().insert(
            child,
            Node {
                parent: Some(parent),
                limit,
                ..Default::default()
            },
        );
    }

    /// A child ended: hand its share back to its parent's owner, charging what it spent.
    pub fn close_child(&self, child: u64) {
        let mut nodes = self.0.lock().unwrap();
        let Some(node) = nodes.get(&child).cloned() else {
            return;
        };
        let (Some(share), Some(parent)) = (node.limit, node.parent) else {
            return;
        };
        if child == 1 {
            return;
        }
        let owner = Self::owner(&nodes, parent);
        if let Some(pool) = self.2.get() {
            if share > 0.0 {
                pool.close(owner, child);
            }
            if let Some(n) = nodes.get_mut(&child) {
                n.limit = Some(0.0);
            }
            return;
        }
        if let Some(o) = nodes.get_mut(&owner) {
            o.carved = (o.carved - share).max(0.0);
            o.spent += node.spent + node.reserved;
        }
        if let Some(n) = nodes.get_mut(&child) {
            n.limit = Some(0.0);
            n.spent = 0.0;
            n.reserved = 0.0;
        }
    }

    /// Reserve `amount` USD and `tokens` tokens for a call of `task`, or say why it
    /// does not fit.
    pub fn reserve(&self, task: u64, amount: f64, tokens: u64) -> Result<Reservation, BudgetError> {
        if let Some(pool) = self.2.get() {
            let owner = self.owner_of(task);
            let hold = pool.reserve(owner, task, amount, tokens)?;
            return Ok(Reservation {
                owner,
                amount,
                tokens,
                hold: Some(hold),
                pool: Some(pool.clone()),
            });
        }
        let mut nodes = self.0.lock().unwrap();
        let mut tok = self.1.lock().unwrap();
        if let Some(limit) = tok.limit
            && tok.used + tok.reserved + tokens > limit
        {
            return Err(BudgetError::Tokens {
                limit,
                used: tok.used,
                reserved: tok.reserved,
                wanted: tokens,
            });
        }
        let owner = Self::owner(&nodes, task);
        let node = nodes.get_mut(&owner).expect("owners exist");
        let left = Self::available(node);
        if amount > left + EPSILON {
            return Err(BudgetError::Usd {
                owner,
                limit: node.limit.unwrap_or(0.0),
                spent: node.spent,
                reserved: node.reserved,
                carved: node.carved,
                wanted: amount,
            });
        }
        node.reserved += amount;
        node.note_peak();
        tok.reserved += tokens;
        Ok(Reservation {
            owner,
            amount,
            tokens,
            hold: None,
            pool: None,
        })
    }

    /// Release a reservation and charge the real cost and tokens.
    pub fn settle(&self, mut reservation: Reservation, actual: f64, actual_tokens: u64) {
        if let Some(pool) = reservation.pool.take() {
            pool.settle(&reservation, actual, actual_tokens);
            return;
        }
        {
            let mut tok = self.1.lock().unwrap();
            tok.reserved = tok.reserved.saturating_sub(reservation.tokens);
            tok.used += actual_tokens;
        }
        let mut nodes = self.0.lock().unwrap();
        if let Some(n) = nodes.get_mut(&reservation.owner) {
            n.reserved = (n.reserved - reservation.amount).max(0.0);
            n.spent += actual;
            n.note_peak();
        }
    }

    /// Charge an amount already spent by `task` (the recorded calls of a resumed run).
    /// A shared pool charged them when they were settled: nothing to do.
    pub fn charge(&self, task: u64, amount: f64, tokens: u64) {
        if self.is_shared() {
            return;
        }
        self.1.lock().unwrap().used += tokens;
        let mut nodes = self.0.lock().unwrap();
        let owner = Self::owner(&nodes, task);
        if let Some(n) = nodes.get_mut(&owner) {
            n.spent += amount;
        }
    }

    /// The share `task` was given at spawn, if it draws on one of its own.
    pub fn own_share(&self, task: u64) -> Option<f64> {
        self.0.lock().unwrap().get(&task).and_then(|n| n.limit)
    }

    /// `task`, which has its own share, spent `total` USD elsewhere (another worker
    /// executed it): charge what its share does not show yet.
    /// (A shared pool holds what it spent already.)
    pub fn settle_elsewhere(&self, task: u64, total: f64) {
        if self.is_shared() {
            return;
        }
        let mut nodes = self.0.lock().unwrap();
        if let Some(n) = nodes.get_mut(&task)
            && n.limit.is_some()
        {
            n.spent = n.spent.max(total);
            n.note_peak();
        }
    }

    /// What `task` may still spend.
    pub fn remaining(&self, task: u64) -> f64 {
        if let Some(pool) = self.2.get() {
            return pool.remaining(self.owner_of(task));
        }
        let nodes = self.0.lock().unwrap();
        let owner = Self::owner(&nodes, task);
        Self::available(&nodes[&owner]).max(0.0)
    }

    /// The run budget's limit, what the run spent and the most it ever had committed
    /// at once (spent + reserved + carved for children), in USD.
    pub fn root_summary(&self) -> (f64, f64, f64) {
        if let Some(pool) = self.2.get() {
            return pool.root_summary();
        }
        let nodes = self.0.lock().unwrap();
        let root = &nodes[&1];
        (root.limit.unwrap_or(0.0), self_spent(&nodes), root.peak)
    }

    /// Total spent so far by the whole run.
    pub fn spent(&self) -> f64 {
        if let Some(pool) = self.2.get() {
            return pool.root_summary().1;
        }
        self_spent(&self.0.lock().unwrap())
    }
}

fn self_spent(nodes: &HashMap<u64, Node>) -> f64 {
    nodes.values().map(|n| n.spent).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_carved_and_returned() {
        let b = Budget::new(1.0);
        b.add_child(1, 2, Some(0.4)).unwrap();
        assert!((b.remaining(1) - 0.6).abs() < 1e-9);
        assert!(b.add_child(1, 3, Some(0.7)).is_err(), "more than is left");
        b.add_child(2, 4, None).unwrap();
        let r = b.reserve(4, 0.3, 10).unwrap();
        assert!(
            b.reserve(4, 0.2, 10).is_err(),
            "task 4 draws on task 2's share"
        );
        b.settle(r, 0.1, 5);
        assert!((b.remaining(2) - 0.3).abs() < 1e-9);
        b.close_child(4);
        b.close_child(2);
        assert!(
            (b.remaining(1) - 0.9).abs() < 1e-9,
            "unspent share returned"
        );
        assert!((b.spent() - 0.1).abs() < 1e-9);
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn tokens_are_reserved_then_settled() {
        let b = Budget::with_tokens(1.0, Some(100));
        let r = b.reserve(1, 0.0, 80).unwrap();
        assert!(
            b.reserve(1, 0.0, 30)
                .unwrap_err()
                .to_string()
                .contains("token budget")
        );
        b.settle(r, 0.0, 50);
        assert!(b.reserve(1, 0.0, 30).is_ok());
    }
}
