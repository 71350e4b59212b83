//! The budgets of a cluster's runs kept in its PostgreSQL ledger
//! ([`crate::supervisor::shared_budget`], [`crate::ledger::budgets`]): a worker's new
//! run opens its pool; any host that takes a run with a pool in hand — a worker taking
//! it over or executing one of its offered tasks, an operator's `agentflow resume` —
//! draws on the same pool.

use crate::supervisor::RunContext;
use crate::supervisor::shared_budget::SharedPool;
use crate::{Host, ledger};
use std::sync::Arc;

impl Host {
    /// Open the pool of `run`, a new run of a worker: its budget is the cluster's,
    /// drawn on by every worker that executes one of its tasks. (Other hosts' new runs
    /// keep their budgets in memory.)
    pub(crate) async fn open_shared_pool(&self, run: &Arc<RunContext>) -> anyhow::Result<()> {
        let offers = self.offers_tasks.load(std::sync::atomic::Ordering::Relaxed);
        let Some(budgets) = self.shared_budgets.get().filter(|_| offers) else {
            return Ok(());
        };
        let (id, settings) = (run.run_id.clone(), &run.settings);
        let (usd, tokens) = (settings.budget_usd, settings.budget_tokens);
        let opened = budgets.clone();
        tokio::task::spawn_blocking(move || opened.open(&id, usd, tokens)).await??;
        run.share_limits(SharedPool::new(budgets.clone(), run.run_id.clone()));
        self.register_live_run(run);
        Ok(())
    }

    /// The pool in the cluster's database that `run_id` draws on, if it has one (a
    /// worker's run — taken over by a worker, one of its tasks offered here, or resumed
    /// by an operator's `agentflow resume`: it goes on drawing on the same pool).
    pub(crate) fn shared_pool_of(&self, run_id: &str) -> Option<SharedPool> {
        if !self.ledger.is_postgres() {
            return None;
        }
        let has_pool = self
            .ledger
            .with_reader(|conn| ledger::budgets::has_pool(conn, run_id))
            .map_err(anyhow::Error::from)
            .and_then(|has| Ok(has?));
        let connected = match has_pool {
            Ok(false) => return None,
            Ok(true) => match self.shared_budgets.get() {
                Some(budgets) => Ok(budgets.clone()),
                None => ledger::db::postgres_url(self.ledger.path())
                    .ok_or_else(|| anyhow::anyhow!("no PostgreSQL URL"))
                    .and_then(|url| Ok(ledger::budgets::SharedBudgets::connect(url)?))
                    .map(|budgets| self.shared_budgets.get_or_init(|| budgets).clone()),
            },
            Err(e) => Err(e),
        };
        match connected {
            Ok(budgets) => Some(SharedPool::new(budgets, run_id.to_string())),
            Err(e) => {
                tracing::warn!(run = %run_id, error = %e, "reading the shared budget: this run's budget stays in this process");
                None
            }
        }
    }

    /// Remember `run` (its limits in the cluster's database) while it lives: the
    /// offered tasks of its run this host claims execute in it.
    pub(crate) fn register_live_run(&self, run: &Arc<RunContext>) {
        let mut live = self.live_runs.lock().unwrap();
        live.retain(|_, r| r.strong_count() > 0);
        live.insert(run.run_id.clone(), Arc::downgrade(run));
    }

    /// The live context of `run_id` on this host, if it has one.
    pub(crate) fn live_run(&self, run_id: &str) -> Option<Arc<RunContext>> {
        self.live_runs.lock().unwrap().get(run_id)?.upgrade()
    }
}
