//! Executing a task another worker's run offered to the cluster
//! ([`crate::supervisor`]'s `offered`, [`crate::ledger::offers`]).
//!
//! The claiming worker builds a context of its own for the task's run — the run's
//! stored configuration, the task's budget share as its whole budget — replays what
//! the task recorded before (its previous worker died mid-way) and runs it live from
//! there, renewing its claim every heartbeat. Its end is recorded like any task's,
//! which is how the run's worker learns it. If the task ends elsewhere first (its
//! spawner cancelled it, or the run ended), the execution here stops.

use crate::Host;
use crate::ledger;
use crate::ledger::leases::{HEARTBEAT, Holder};
use crate::ledger::offers::OfferClaim;
use crate::runs::stored;
use crate::supervisor::{TaskOutcome, TaskStart};
use std::time::Duration;

impl Host {
    /// Let this host's runs offer the children that can run apart to the other
    /// workers of its PostgreSQL ledger (a worker's host).
    /// Their budgets are kept in the database, shared by the workers.
    pub(crate) fn offer_tasks_of_its_runs(&self) -> anyhow::Result<()> {
        if let Some(url) = ledger::db::postgres_url(self.ledger.path()) {
            let budgets = ledger::budgets::SharedBudgets::connect(url)?;
            let _ = self.shared_budgets.set(budgets);
        }
        self.offers_tasks
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Execute the offered task `claim` names (claimed by this worker); its outcome,
    /// or `None` when it ended elsewhere first.
    pub(crate) async fn execute_offered(
        &self,
        claim: &OfferClaim,
    ) -> anyhow::Result<Option<TaskOutcome>> {
        let (run_id, id) = (claim.run_id.as_str(), claim.task_id);
        let reader = self.ledger.reader()?;
        let (stored, stored_hash) =
            stored::stored_config(&reader, run_id, self.scheduler.models())?;
        let tasks = ledger::query::resume_tasks(&reader, run_id)?;
        let task = tasks
            .iter()
            .find(|t| t.task_id == id)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("run {run_id} has no task {id}"))?;
        if task.status.is_finished() {
            return Ok(None);
        }
        let agent = self.stored_component(&reader, run_id, &task.component_hash, &task.agent)?;
        let input = stored::blob_text(
            &reader,
            task.run_input_hash.as_ref().unwrap_or(&task.input_hash),
        )?;
        // Its record so far: what a worker that died before recorded, replayed first.
        let events: Vec<_> = stored::replayed_events(&reader, run_id)?
            .into_iter()
            .filter(|e| e.task_id == id)
            .collect();
        let (tools, _, _mcp) = self.run_tool_set(&stored.tools, &stored.tool_builds)?;
        let mut settings = stored.settings(stored_hash, &self.config);
        let shared = ledger::budgets::has_pool(&reader, run_id)?;
        if !shared {
            // A run without a shared pool offers only children with a share of their
            // own: that share is its whole budget here.
            settings.budget_usd = task
                .budget_usd
                .ok_or_else(|| anyhow::anyhow!("offered task {id} of run {run_id} has no share"))?;
            settings.budget_tokens = None;
        }
        let run = self.run_context_with(run_id.to_string(), &stored, tools, settings);
        if run.budget.is_shared() {
            // It draws on the run's pool in the database (its own share, or its
            // spawner's): which one, the run's tasks tell.
            for t in &tasks {
                if let Some(parent) = t.parent_id {
                    let ended = t.status.is_finished();
                    run.budget.register(parent, t.task_id, t.budget_usd, ended);
                }
            }
        }
        run.restore_tree(std::slice::from_ref(&task));
        // (Nothing, with a shared pool: its calls were settled there when made.)
        stored::charge_recorded(&run.budget, &events);
        let replay = stored::replay_start(events, &reader, &self.ledger)?;
        drop(reader);
        let start = TaskStart {
            id,
            depth: task.depth,
            agent: agent.component_ref(),
            input,
            replay: Some(replay),
            slot: None,
        };
        tracing::info!(run = %run_id, task = id, claims = claim.claims, "worker: executing an offered task");
        let outcome = tokio::select! {
            outcome = run.runner.run_task(run.clone(), start) => Some(outcome),
            () = self.ended_in_ledger(run_id, id) => None,
            () = self.renew_claim(run_id, id) => None,
        };
        if let Some(outcome) = &outcome
            && run.finish(id, outcome.clone()).await
        {
            run.tell_ended(id, outcome);
        }
        let run_id = run_id.to_string();
        self.ledger
            .write(move |w| w.close_offer(&run_id, id))
            .await?;
        Ok(outcome)
    }

    /// Resolves once task `id` of `run_id` has ended in the ledger.
    async fn ended_in_ledger(&self, run_id: &str, id: u64) {
        loop {
            self.ledger.changed_within(Duration::from_millis(500)).await;
            let ended = self
                .ledger
                .with_reader(|conn| ledger::offers::task_end(conn, run_id, id));
            if let Ok(Ok(Some(end))) = ended {
                tracing::info!(run = %run_id, task = id, status = %end.status, "worker: the offered task ended elsewhere");
                return;
            }
        }
    }

    /// Renew this worker's claim on task `id` of `run_id` every heartbeat; never
    /// resolves.
    async fn renew_claim(&self, run_id: &str, id: u64) {
        let holder = Holder::this_process();
        let tasks = vec![(run_id.to_string(), id)];
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            let (tasks, holder) = (tasks.clone(), holder.clone());
            if let Err(e) = self
                .ledger
                .write(move |w| w.renew_offers(&tasks, &holder))
                .await
            {
                tracing::warn!(run = %run_id, task = id, error = %e, "renewing an offered task's claim");
            }
        }
    }
}
