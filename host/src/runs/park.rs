//! Driving a run's root task, and stopping a run that waits for humans: with
//! `detach` ([`crate::RunOptions::detach`]), once every live task of the run is
//! blocked on a human decision ([`crate::supervisor::waits`]) the host stops instead
//! of waiting. Nothing is recorded for the stopped tasks: the run stays `running` in
//! the ledger, every wait for a human is in it (approval, review or merge rows, each
//! made durable before the wait began), and [`Host::resume`] replays each task's
//! record and continues once the decisions are in.

use crate::ledger::{self, Status};
use crate::supervisor::{HumanWait, RunContext, TaskStart};
use crate::{Host, RunReport};
use std::sync::Arc;

impl Host {
    /// Run the root task `start` to its outcome and conclude the run; with `detach`,
    /// park the run instead when everything in it waits for a human first.
    pub(crate) async fn drive_root(
        &self,
        run: Arc<RunContext>,
        start: TaskStart,
        detach: bool,
    ) -> anyhow::Result<RunReport> {
        run.mark_live(start.id);
        let root = run.run_root(start);
        if !detach {
            let outcome = root.await;
            return self.conclude(run, outcome).await;
        }
        let parked = tokio::select! {
            biased;
            outcome = root => Err(outcome),
            waits = run.park_when_all_wait() => Ok(waits),
        };
        match parked {
            Err(outcome) => self.conclude(run, outcome).await,
            Ok(waits) => self.park(run, waits).await,
        }
    }

    /// Report a run whose every task waits for a human, its tasks stopped where they
    /// wait: the ledger flushed, the status `waiting`, with the decisions.
    async fn park(
        &self,
        run: Arc<RunContext>,
        waiting: Vec<HumanWait>,
    ) -> anyhow::Result<RunReport> {
        self.ledger.flush().await?;
        self.scheduler.flush_stats();
        let run_id = run.run_id.clone();
        let conn = self.ledger.reader()?;
        let row = ledger::query::run(&conn, &run_id)?
            .ok_or_else(|| anyhow::anyhow!("run {run_id} vanished from the ledger"))?;
        let (mut tokens_in, mut tokens_out, mut cost_usd) = (0u64, 0u64, 0.0);
        for e in ledger::query::events(&conn, &run_id, None)? {
            tokens_in += e.tokens_in.max(0) as u64;
            tokens_out += e.tokens_out.max(0) as u64;
            cost_usd += e.cost_usd;
        }
        let copied_cost_usd = ledger::fork::copied_cost(&conn, &run_id)?;
        tracing::info!(run = %run_id, decisions = waiting.len(), "every task waits for a human: stopping (resume the run once decided)");
        Ok(RunReport {
            status: Status::Waiting,
            output: None,
            error: None,
            tasks: run.task_count(),
            tokens: tokens_in + tokens_out,
            tokens_in,
            tokens_out,
            cost_usd,
            copied_cost_usd,
            new_cost_usd: (cost_usd - copied_cost_usd).max(0.0),
            duration_ms: (ledger::now_ms() - row.started_at).max(0) as u64,
            waiting,
            run_id,
        })
    }
}
