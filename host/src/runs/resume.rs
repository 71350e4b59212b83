//! Resuming a run from the ledger, and what builds on it: forking a run at an event,
//! recovering a run with side effects in doubt, re-running a failed run's failed tasks.

use crate::durability;
use crate::ledger::{self, Status};
use crate::runs::recorded;
use crate::runs::stored::{self, StoredRunConfig, context_hash};
use crate::runtime::LoadedAgent;
use crate::supervisor::{self, RunContext};
use crate::{Host, ResumeOptions, RunReport};
use std::sync::Arc;

impl Host {
    /// Fork a run at root event `at`: a new run replays the original's record up to
    /// there and continues live, with every live LLM call pinned to `model` if given.
    /// Returns the new run's report.
    ///
    /// Refused when the original performed side effects after the fork point (the
    /// fork would perform them again, live) unless `live_effects`.
    pub async fn fork(
        &self,
        run_id: &str,
        at: u64,
        model: Option<String>,
        live_effects: bool,
    ) -> anyhow::Result<RunReport> {
        self.ledger.quick_check_once()?;
        let reader = self.ledger.reader()?;
        let row = ledger::query::run(&reader, run_id)?
            .ok_or_else(|| anyhow::anyhow!("no run `{run_id}` in {}", self.ledger.name()))?;
        if let Some(m) = &model
            && self.scheduler.model(m).is_none()
        {
            anyhow::bail!("--model {m}: not in the model catalog (see `agentflow models`)");
        }
        let last = ledger::query_events::last_seq(&reader, &row.run_id, 1)?.unwrap_or(0);
        if at > last {
            anyhow::bail!(
                "--at {at} is beyond the end of run {}: its root task's events are seq 1 to \
                 {last} (see `agentflow events {} --task 1`)",
                row.run_id,
                row.run_id
            );
        }
        let later = durability::fork::effects_after(&reader, &row.run_id, at)?;
        if !later.is_empty() && !live_effects {
            let calls: Vec<String> = later
                .iter()
                .map(|e| format!("{} (task {}, seq {})", e.tool, e.task_id, e.seq))
                .collect();
            anyhow::bail!(
                "run {} made {} side-effecting call(s) after event {at}: {}; a fork continues live \
                 from there and would make them again — fork at an earlier event, or pass \
                 --live-effects to let it",
                row.run_id,
                later.len(),
                calls.join(", ")
            );
        }
        let (config_json, _) = ledger::query::run_config(&reader, &row.run_id)?
            .ok_or_else(|| anyhow::anyhow!("run {} has no stored config", row.run_id))?;
        let mut stored: StoredRunConfig = serde_json::from_str(&config_json)?;
        stored.catalog = self.scheduler.models().to_vec();
        stored.model_override = model;
        // A fork is a new run: it runs on this host's configuration and records it.
        stored.host = Some(self.recorded_config.clone());
        let hash = context_hash(&row.component_hash, &row.input, &stored);
        let new_id = uuid::Uuid::new_v4().simple().to_string();
        durability::fork::copy_prefix(
            &self.ledger,
            row.run_id.clone(),
            new_id.clone(),
            at,
            serde_json::to_string(&stored)?,
            hash,
        )
        .await?;
        self.resume(&new_id, ResumeOptions::default()).await
    }

    /// Compute a run's recovery plan; with `apply`, run its rollbacks (compensations in
    /// reverse order, the rolled-back tasks then cancelled) and, when the run is still
    /// unfinished and nothing needs a human, resume it. Returns the plan, the number of
    /// compensations run and the resumed run's report.
    pub async fn recover(
        &self,
        run_id: &str,
        apply: bool,
    ) -> anyhow::Result<(durability::recovery::Plan, usize, Option<RunReport>)> {
        let reader = self.ledger.reader()?;
        let plan = durability::recovery::plan(&reader, run_id)?;
        if !apply {
            return Ok((plan, 0, None));
        }
        let (config_json, _) = ledger::query::run_config(&reader, &plan.run_id)?
            .ok_or_else(|| anyhow::anyhow!("run {} has no stored config", plan.run_id))?;
        let stored: StoredRunConfig = serde_json::from_str(&config_json)?;
        let (tools, _, _mcp) = self.run_tool_set(&stored.tools, &stored.tool_builds)?;
        let done = durability::recovery::apply_rollbacks(&plan, &tools, &self.ledger).await?;
        for t in &plan.tasks {
            if let durability::recovery::Action::Rollback { tasks, .. } = &t.action {
                for id in tasks {
                    self.ledger
                        .finish_task(
                            plan.run_id.clone(),
                            *id,
                            Status::Cancelled,
                            None,
                            Some("rolled back by recovery".into()),
                            Vec::new(),
                            ledger::Commit::Durable,
                        )
                        .await?;
                }
            }
        }
        let needs_human = plan
            .tasks
            .iter()
            .any(|t| matches!(t.action, durability::recovery::Action::RequiresHuman { .. }));
        // A failed run whose plan says to resume continues: its failed tasks re-run.
        let resumes = plan
            .tasks
            .iter()
            .any(|t| matches!(t.action, durability::recovery::Action::Resume { .. }));
        let report = if needs_human {
            None
        } else if plan.run_status == Status::Running {
            Some(self.resume(&plan.run_id, ResumeOptions::default()).await?)
        } else if plan.run_status == Status::Failed && resumes {
            let options = ResumeOptions {
                retry_failed: true,
                ..Default::default()
            };
            Some(self.resume(&plan.run_id, options).await?)
        } else {
            None
        };
        Ok((plan, done, report))
    }

    /// Mark a failed run's failed tasks for a re-run ([`durability::reopen`]); returns
    /// how many. The run is `running` again afterwards, ready for [`Host::resume`].
    pub async fn reopen_failed(&self, run_id: &str) -> anyhow::Result<usize> {
        let reader = self.ledger.reader()?;
        let tasks = ledger::query::resume_tasks(&reader, run_id)?;
        let events = ledger::query::events(&reader, run_id, None)?;
        let reopen = durability::reopen::plan(&tasks, &events);
        if reopen.is_empty() {
            anyhow::bail!("run {run_id} has no failed task to re-run");
        }
        let count = reopen.len();
        let run_id = run_id.to_string();
        self.ledger
            .write(move |w| durability::reopen::apply(w, &run_id, &reopen))
            .await?;
        Ok(count)
    }

    /// Resume a run that did not finish (the host crashed or was killed): every
    /// unfinished task is re-instantiated and replays its recorded calls — LLM calls
    /// are not re-sent, tools not re-run, clock and random give the recorded values —
    /// then continues live. Finished tasks are not re-run.
    ///
    /// The ledger must pass `PRAGMA quick_check` first (once per host, at its first
    /// resume): replaying from a damaged record could re-run recorded calls live. A run killed before its root task was written
    /// starts that task from the recorded input.
    pub async fn resume(&self, run_id: &str, opts: ResumeOptions) -> anyhow::Result<RunReport> {
        self.ledger.quick_check_once()?;
        let reader = self.ledger.reader()?;
        let row = ledger::query::run(&reader, run_id)?
            .ok_or_else(|| anyhow::anyhow!("no run `{run_id}` in {}", self.ledger.name()))?;
        let run_id = row.run_id.clone();
        if row.status == Status::Failed && opts.retry_failed {
            drop(reader);
            let reopened = self.reopen_failed(&run_id).await?;
            tracing::info!(run = %run_id, tasks = reopened, "re-running failed tasks");
            return Box::pin(self.resume(
                &run_id,
                ResumeOptions {
                    retry_failed: false,
                    ..opts
                },
            ))
            .await;
        }
        if row.status != Status::Running {
            let hint = if row.status == Status::Failed {
                " (pass --retry-failed to re-run its failed tasks)"
            } else {
                ""
            };
            anyhow::bail!(
                "run {run_id} is {}: only runs that did not finish can be resumed{hint}",
                row.status
            );
        }
        if let Some(lease) = ledger::leases::live(&reader, &run_id)?
            && &lease.holder != self.leases.holder()
        {
            anyhow::bail!(
                "run {run_id} is being executed by host `{}` (pid {}, heartbeat {} s ago): resuming \
                 it now would run it twice; resume it once that host stopped",
                lease.holder.host,
                lease.holder.pid,
                (ledger::now_ms() - lease.heartbeat_at) / 1000
            );
        }
        let (stored, stored_hash) =
            stored::stored_config(&reader, &run_id, self.scheduler.models())?;
        if let Some(recorded) = &stored.host {
            let changes = recorded::changes(recorded, &self.recorded_config);
            if !changes.is_empty() && !opts.allow_changed {
                anyhow::bail!(
                    "run {run_id} was started with a different configuration; refusing to resume \
                     (leave out --config to resume on the recorded one, or pass --allow-changed \
                     to resume on this one):{}",
                    recorded::describe(&changes)
                );
            }
            if !changes.is_empty() {
                tracing::warn!(run = %run_id, "resuming on a changed configuration:{}", recorded::describe(&changes));
            }
        }
        let root_agent = match &opts.agent_file {
            Some(path) => self.runtime.load_file(path)?,
            None => self.stored_component(&reader, &run_id, &row.component_hash, &row.agent)?,
        };
        let hash_now = context_hash(&root_agent.hash, &row.input, &stored);
        if hash_now != stored_hash && !opts.allow_changed {
            anyhow::bail!(
                "run {run_id} was started with a different context (component {} now {}, or a different model catalog): \
                 refusing to resume, since replay would diverge; pass --allow-changed to resume anyway",
                &row.component_hash[..12],
                &root_agent.hash[..12]
            );
        }
        // The run's MCP servers are killed when `_mcp` drops, whichever way this returns.
        let (tools, _, _mcp) = self.run_tool_set(&stored.tools, &stored.tool_builds)?;
        let run = self.run_context(run_id.clone(), &stored, tools, stored_hash);
        let _lease = self.leases.take(&run).await?;
        let tasks = ledger::query::resume_tasks(&reader, &run_id)?;
        if tasks.is_empty() {
            return self
                .start_missing_root(run, root_agent, &row.input, opts.detach)
                .await;
        }
        // One query for the run's whole record, reading only the payloads the replay
        // and the reopen cuts use; they stay text until replayed.
        let all_events = stored::replayed_events(&reader, &run_id)?;
        run.restore_tree(&tasks);
        run.restore_needs(all_events.iter().filter_map(|e| {
            if e.kind != ledger::EventKind::TasksSpawn || !e.ok {
                return None;
            }
            let child = e.response.parse()["task_id"].as_u64()?;
            Some((child, e.request.parse()))
        }));
        let mut by_task: std::collections::HashMap<u64, Vec<ledger::query::StoredEvent>> =
            std::collections::HashMap::new();
        stored::charge_recorded(&run.budget, &all_events);
        for e in all_events {
            by_task.entry(e.task_id).or_default().push(e);
        }
        let replay_for = |events| stored::replay_start(events, &reader, &self.ledger);
        let text = |hash: &str| stored::blob_text(&reader, hash);
        let mut root = None;
        let mut resumed = 0;
        let offers_children = run.offers_children();
        for t in &tasks {
            if t.status.is_finished() {
                continue;
            }
            let parent_done = t.parent_id.is_some_and(|p| run.is_finished(p));
            if parent_done {
                continue; // an orphan: cancelled when the run concludes
            }
            if offers_children && t.parent_id.is_some_and(|p| p != 1) {
                continue; // spawned by an offered task: waited for by its worker
            }
            let agent = if t.component_hash == row.component_hash {
                root_agent.clone()
            } else {
                self.stored_component(&reader, &run_id, &t.component_hash, &t.agent)?
            };
            let run_input = match &t.run_input_hash {
                Some(h) => Some(text(h)?),
                None => None,
            };
            let replay = replay_for(by_task.remove(&t.task_id).unwrap_or_default())?;
            if t.parent_id.is_none() {
                let input = match run_input {
                    Some(input) => input,
                    None => text(&t.input_hash)?,
                };
                root = Some((agent, input, replay));
            } else {
                let input = text(&t.input_hash)?;
                run.resume_task(t, agent.component_ref(), input, run_input, replay);
                resumed += 1;
            }
        }
        tracing::info!(run = %run_id, children = resumed, root = root.is_some(), "resuming");
        let outcome = match root {
            Some((agent, input, replay)) => {
                let slot = run.take_slot(1).await;
                let start = supervisor::TaskStart {
                    id: 1,
                    depth: 0,
                    agent: agent.component_ref(),
                    input,
                    replay: Some(replay),
                    slot,
                };
                return self.drive_root(run, start, opts.detach).await;
            }
            None => run
                .outcome(1)
                .ok_or_else(|| anyhow::anyhow!("run {run_id} has no root task"))?,
        };
        self.conclude(run, outcome).await
    }

    /// Resume a run whose host was killed after writing the run but before its root
    /// task (ledgers of hosts that wrote the two apart): nothing of it ran, so the
    /// root starts live from the recorded input.
    async fn start_missing_root(
        &self,
        run: Arc<RunContext>,
        agent: Arc<LoadedAgent>,
        input: &str,
        detach: bool,
    ) -> anyhow::Result<RunReport> {
        tracing::info!(run = %run.run_id, "the run has no root task yet: starting it from the recorded input");
        let root = run.create_root(&agent.component_ref(), input).await?;
        self.run_root(run, root, agent, input, detach).await
    }
}
