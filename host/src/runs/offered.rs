//! Executing a task another worker's run offered to the cluster
//! ([`crate::supervisor`]'s `offered`, [`crate::ledger::offers`]).
//!
//! The claiming worker builds a context of its own for the task's run — the run's
//! stored configuration and, for a run whose budget, slots, locks and task ids are the
//! cluster's, its whole task tree as recorded (else the task's budget share as its
//! whole budget) — replays what the task recorded before (its previous worker died
//! mid-way) and runs it live from there, renewing its claim every heartbeat. The
//! children it spawns are offered in turn; those a previous worker spawned and that
//! are still open are waited for again. Its end is recorded like any task's, which is
//! how its spawner learns it. If the task ends elsewhere first (its spawner cancelled
//! it), an ancestor is cancelled or the run ended, the execution here stops and the
//! task is cancelled with its children — whose own workers then stop theirs.

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
    /// or `None` when it ended elsewhere first (or was cut off: cancelled above, its
    /// run ended — then it is cancelled here with everything it spawned).
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
        let ancestors = ancestors(&tasks, id);
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
        let shared = ledger::budgets::has_pool(&reader, run_id)?;
        // A run of this worker's, or one it executes another task of: the task runs in
        // that context (the run's tree, tools and limits are there already).
        // (A first execution only: one taken over replays spawns a fresh tree knows.)
        let live = self
            .live_run(run_id)
            .filter(|_| shared && claim.claims == 1);
        let (run, _mcp) = match live {
            Some(run) => {
                run.learn_task(id);
                (run, None)
            }
            None => {
                let (tools, _, mcp) = self.run_tool_set(&stored.tools, &stored.tool_builds)?;
                let mut settings = stored.settings(stored_hash, &self.config);
                if !shared {
                    // A run without a shared pool offers only children with a share of
                    // their own: that share is its whole budget here.
                    settings.budget_usd = task.budget_usd.ok_or_else(|| {
                        anyhow::anyhow!("offered task {id} of run {run_id} has no share")
                    })?;
                    settings.budget_tokens = None;
                }
                let run = self.run_context_with(run_id.to_string(), &stored, tools, settings);
                if run.budget.is_shared() {
                    // The whole run as recorded: its ancestors (whose grants hold here
                    // too), the tasks its spawns may depend on; it draws on the run's
                    // pool in the database (its own share, or its spawner's), which
                    // one the run's tasks tell.
                    run.restore_tree_to_execute(&tasks);
                } else {
                    run.restore_tree(std::slice::from_ref(&task));
                }
                (run, Some(mcp))
            }
        };
        let shared = run.budget.is_shared();
        // (Nothing, with a shared pool: its calls were settled there when made.)
        stored::charge_recorded(&run.budget, &events);
        let replay = stored::replay_start(events, &reader, &self.ledger)?;
        // Its children a worker that died before spawned, still open: offered (their
        // ends are waited for here again) or waiting for their dependencies.
        let mut resumed = 0;
        for child in tasks
            .iter()
            .filter(|t| t.parent_id == Some(id) && !t.status.is_finished())
        {
            let child_agent =
                self.stored_component(&reader, run_id, &child.component_hash, &child.agent)?;
            let run_input = match &child.run_input_hash {
                Some(h) => Some(stored::blob_text(&reader, h)?),
                None => None,
            };
            let child_input = stored::blob_text(&reader, &child.input_hash)?;
            let nothing = stored::replay_start(Vec::new(), &reader, &self.ledger)?;
            let agent = child_agent.component_ref();
            run.resume_task(child, agent, child_input, run_input, nothing);
            resumed += 1;
        }
        drop(reader);
        tracing::info!(run = %run_id, task = id, claims = claim.claims, children = resumed, "worker: executing an offered task");
        let depth = task.depth;
        let stopped = self
            .ledger
            .with_reader(|conn| ledger::offers::cut_off(conn, run_id, id, &ancestors))??;
        if stopped.is_some() {
            tracing::info!(run = %run_id, task = id, why = stopped, "worker: the offered task stops before it starts");
            run.cancel(None, id).await;
            let run_id = run_id.to_string();
            self.ledger
                .write(move |w| w.close_offer(&run_id, id))
                .await?;
            return Ok(None);
        }
        let executed = async {
            if shared {
                // Its locks and execution slot are taken here, from the cluster's rows.
                return run
                    .run_here(id, depth, agent.component_ref(), input, Some(replay))
                    .await;
            }
            // The spawner holds its locks and slot.
            let start = TaskStart {
                id,
                depth,
                agent: agent.component_ref(),
                input,
                replay: Some(replay),
                slot: None,
            };
            let outcome = run.runner.run_task(run.clone(), start).await;
            if run.finish(id, outcome.clone()).await {
                run.tell_ended(id, &outcome);
            }
            outcome
        };
        let outcome = tokio::select! {
            biased;
            outcome = executed => Some(outcome),
            () = self.cut_off(run_id, id, &ancestors) => None,
            () = self.renew_claim(run_id, id) => None,
        };
        if outcome.is_none() {
            // Cancelled as a unit: its children (and through their workers, theirs).
            run.cancel(None, id).await;
        }
        let run_id = run_id.to_string();
        self.ledger
            .write(move |w| w.close_offer(&run_id, id))
            .await?;
        Ok(outcome)
    }

    /// Resolves once task `id` of `run_id` must stop ([`ledger::offers::cut_off`]):
    /// looked at every half second (not at every change announced in the cluster:
    /// with many tasks in flight, that is many reads for nothing).
    async fn cut_off(&self, run_id: &str, id: u64, ancestors: &[u64]) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let why = self
                .ledger
                .with_reader(|conn| ledger::offers::cut_off(conn, run_id, id, ancestors));
            if let Ok(Ok(Some(why))) = why {
                tracing::info!(run = %run_id, task = id, why, "worker: the offered task stops");
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

/// The ancestors of task `id` among `tasks`, its parent first.
fn ancestors(tasks: &[ledger::query::ResumeTask], id: u64) -> Vec<u64> {
    let parents: std::collections::HashMap<u64, Option<u64>> =
        tasks.iter().map(|t| (t.task_id, t.parent_id)).collect();
    let mut chain = Vec::new();
    let mut cur = parents.get(&id).copied().flatten();
    while let Some(p) = cur {
        if chain.contains(&p) {
            break;
        }
        chain.push(p);
        cur = parents.get(&p).copied().flatten();
    }
    chain
}
