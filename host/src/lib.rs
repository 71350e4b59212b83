//! AgentFlow: a host that runs AI agents compiled to WebAssembly components —
//! sandboxed, budgeted and recorded.
//!
//! An agent is a `wasm32-wasip2` component of the `agentflow:agent/agent` world. It
//! reaches the world only through the host's capabilities (LLM, tools, sub-agents,
//! trace, checkpoints); every call is appended to a SQLite ledger before the guest sees
//! its result. This crate is the library behind the `agentflow` CLI.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use agentflow::{Host, HostConfig, RunOptions};
//! let host = Host::new(HostConfig::default(), "agentflow.db")?;
//! let report = host
//!     .run_file("hello.wasm".as_ref(), "world", RunOptions::default())
//!     .await?;
//! println!("{} {:?}: {:?}", report.run_id, report.status, report.output);
//! # Ok(()) }
//! ```

pub mod bindings;
pub mod capabilities;
pub mod config;
pub mod durability;
pub mod guest_text;
pub mod ledger;
pub mod merge;
pub mod observe;
pub mod providers;
pub mod runtime;
pub mod scheduler;
pub mod supervisor;
pub mod tools;
pub mod validation;

pub use config::HostConfig;
pub use ledger::Status;

use ledger::{Ledger, NewRun};
use runtime::{LoadedAgent, Runtime};
use scheduler::Scheduler;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use supervisor::{RunContext, TaskOutcome};
use tools::{Tool, ToolSet};

/// Per-run choices on top of the host config (CLI flags).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Extra tools to grant (added to `[tools] grant`).
    pub grants: Vec<String>,
    /// Workspace directory for the `workspace` tool.
    pub workspace: Option<PathBuf>,
    /// Override `[limits] max_depth`.
    pub max_depth: Option<u32>,
    /// Override `[budget] usd`.
    pub budget_usd: Option<f64>,
    /// Override `[durability] on_divergence`.
    pub on_divergence: Option<durability::DivergencePolicy>,
    /// Override `[constraints] max_concurrent_tasks`.
    pub max_concurrency: Option<u32>,
    /// Override `[constraints.approval] cost_over_usd`.
    pub approval_over_usd: Option<f64>,
}

/// Choices for resuming a run.
#[derive(Clone, Debug, Default)]
pub struct ResumeOptions {
    /// Resume even though the component or the behaviour-relevant config changed.
    pub allow_changed: bool,
    /// Run this component instead of the one stored with the run (its hash is part of
    /// the run's context, so a different one needs `allow_changed`).
    pub agent_file: Option<PathBuf>,
    /// Continue a failed run: re-run its failed tasks, replaying their records up to
    /// where each failure began ([`durability::reopen`]).
    pub retry_failed: bool,
}

/// What a run stores about its configuration, enough to resume it from the ledger.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
struct StoredRunConfig {
    limits: runtime::limits::Limits,
    budget_usd: f64,
    tools: config::ToolsConfig,
    agents: std::collections::BTreeMap<String, PathBuf>,
    on_divergence: durability::DivergencePolicy,
    catalog: Vec<scheduler::catalog::ModelSpec>,
    /// A fork's model: every live LLM call is pinned to it.
    #[serde(default)]
    model_override: Option<String>,
    /// The spawn rules.
    #[serde(default)]
    constraints: supervisor::constraints::ConstraintsConfig,
    /// Run-wide token limit.
    #[serde(default)]
    budget_tokens: Option<u64>,
    /// Output validators.
    #[serde(default, deserialize_with = "validation::stored_validators")]
    validators: Vec<validation::ValidatorConfig>,
    /// Retries after validation failures.
    #[serde(default)]
    retry: validation::RetryConfig,
    /// How parallel work is merged (`[merge]`).
    #[serde(default)]
    merge: merge::MergeConfig,
}

/// Hash of what decides a run's behaviour: the component, the input, the limits and
/// grants, the registered agents and the model catalog.
fn context_hash(component_hash: &str, input: &str, config: &StoredRunConfig) -> String {
    let catalog: Vec<_> = config
        .catalog
        .iter()
        .map(|m| serde_json::json!([m.name, m.provider, m.provider_model_id()]))
        .collect();
    let behaviour = serde_json::json!({
        "limits": config.limits,
        "tools": config.tools,
        "agents": config.agents,
        "catalog": catalog,
        "model_override": config.model_override,
        "constraints": config.constraints,
    });
    ledger::blobs::sha256_hex(format!("{component_hash}\n{input}\n{behaviour}").as_bytes())
}

/// What a finished run reports.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub status: Status,
    pub output: Option<String>,
    pub error: Option<String>,
    pub tasks: u64,
    pub tokens: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// The run's whole cost as the ledger records it (a fork's included).
    pub cost_usd: f64,
    /// For a fork: the part of `cost_usd` copied from the original run's record (spent
    /// there, not again); 0 otherwise.
    pub copied_cost_usd: f64,
    /// `cost_usd` less `copied_cost_usd`: what this run spent itself.
    pub new_cost_usd: f64,
    pub duration_ms: u64,
}

/// The host: runtime, ledger, provider and tools. One per process is typical; it
/// can run many agents at once.
pub struct Host {
    config: HostConfig,
    runtime: Arc<Runtime>,
    ledger: Ledger,
    scheduler: Arc<Scheduler>,
    registered_tools: Vec<Arc<dyn Tool>>,
    /// Set by [`Host::close`], which has checkpointed the ledger already.
    closed: bool,
}

impl Host {
    /// A host with the given config and ledger file.
    pub fn new(config: HostConfig, db: impl AsRef<Path>) -> anyhow::Result<Host> {
        config.validate()?;
        let runtime = Runtime::new(Some(config.cache_dir()))?;
        let ledger = Ledger::open(db.as_ref())?;
        let scheduler = Arc::new(build_scheduler(&config, db.as_ref())?);
        Ok(Host {
            config,
            runtime,
            ledger,
            scheduler,
            registered_tools: Vec::new(),
            closed: false,
        })
    }

    /// The model scheduler (catalog, health, quotas, performance DB).
    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }

    /// Install a tool; runs still have to be granted it by name.
    pub fn register_tool(&mut self, tool: Arc<dyn Tool>) {
        self.registered_tools.push(tool);
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The wasmtime runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The configuration.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Load a component file and run it.
    pub async fn run_file(
        &self,
        path: &Path,
        input: &str,
        opts: RunOptions,
    ) -> anyhow::Result<RunReport> {
        let agent = self.runtime.load_file(path)?;
        self.run(agent, input, opts).await
    }

    /// Run a loaded agent to completion: record the run, execute the root task (which
    /// may spawn children), cancel children left running, record the end.
    pub async fn run(
        &self,
        agent: Arc<LoadedAgent>,
        input: &str,
        opts: RunOptions,
    ) -> anyhow::Result<RunReport> {
        let started = Instant::now();
        let mut limits = self.config.limits.clone();
        if let Some(d) = opts.max_depth {
            limits.max_depth = d;
        }
        limits.validate()?;
        validation::component::preload(&self.runtime, &self.config.validators)?;
        let budget_usd = opts.budget_usd.unwrap_or(self.config.budget.usd);
        if !(budget_usd.is_finite() && budget_usd >= 0.0) {
            anyhow::bail!("--budget-usd must be a non-negative number");
        }
        let mut tools_config = self.config.tools.clone();
        for g in &opts.grants {
            if !tools_config.grant.contains(g) {
                tools_config.grant.push(g.clone());
            }
        }
        if opts.workspace.is_some() {
            tools_config.workspace = opts.workspace.clone();
        }
        let stored = StoredRunConfig {
            limits,
            budget_usd,
            tools: tools_config,
            agents: self.config.agents.clone(),
            on_divergence: opts
                .on_divergence
                .unwrap_or(self.config.durability.on_divergence),
            catalog: self.scheduler.models().to_vec(),
            model_override: None,
            budget_tokens: self.config.budget.tokens,
            validators: self.config.validators.clone(),
            retry: self.config.retry.clone(),
            merge: self.config.merge.clone(),
            constraints: {
                let mut c = self.config.constraints.clone();
                if let Some(n) = opts.max_concurrency {
                    c.max_concurrent_tasks = n;
                }
                if let Some(x) = opts.approval_over_usd {
                    c.approval.cost_over_usd = Some(x);
                }
                c
            },
        };
        let tools = ToolSet::build(&stored.tools, &self.registered_tools)?;
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let hash = context_hash(&agent.hash, input, &stored);
        let new_run = NewRun {
            run_id: run_id.clone(),
            agent: agent.name.clone(),
            component_hash: agent.hash.clone(),
            input: input.to_string(),
            config_json: serde_json::to_string(&stored)?,
            context_hash: hash.clone(),
            budget_usd: Some(budget_usd),
            component: agent.bytes.clone(),
        };
        let run = self.run_context(run_id, &stored, tools, hash);
        let root_task = run.register_root(&agent, input);
        let root = root_task.task_id;
        self.ledger.create_run(new_run, root_task).await?;
        self.run_root(run, root, agent, input, started).await
    }

    /// Execute root task `root` live from `input`, then conclude the run.
    async fn run_root(
        &self,
        run: Arc<RunContext>,
        root: u64,
        agent: Arc<LoadedAgent>,
        input: &str,
        started: Instant,
    ) -> anyhow::Result<RunReport> {
        let slot = run.take_slot().await;
        let outcome = runtime::execute::execute_task(
            run.clone(),
            root,
            0,
            agent,
            input.to_string(),
            None,
            slot,
        )
        .await;
        self.conclude(run, started, outcome).await
    }

    fn run_context(
        &self,
        run_id: String,
        stored: &StoredRunConfig,
        tools: ToolSet,
        hash: String,
    ) -> Arc<RunContext> {
        RunContext::new(
            run_id,
            self.ledger.clone(),
            self.runtime.clone(),
            self.scheduler.clone(),
            self.config.llm.default_max_output_tokens,
            tools,
            stored.limits.clone(),
            (stored.budget_usd, stored.budget_tokens),
            stored.agents.clone(),
            hash,
            stored.on_divergence,
            stored.model_override.clone(),
            stored.constraints.clone(),
            stored.validators.clone(),
            stored.retry.clone(),
            stored.merge.clone(),
        )
    }

    /// Fork a run at root event `at`: a new run replays the original's record up to
    /// there and continues live, with every live LLM call pinned to `model` if given.
    /// Returns the new run's report.
    pub async fn fork(
        &self,
        run_id: &str,
        at: u64,
        model: Option<String>,
    ) -> anyhow::Result<RunReport> {
        self.ledger.quick_check()?;
        let reader = self.ledger.reader()?;
        let row = ledger::query::run(&reader, run_id)?.ok_or_else(|| {
            anyhow::anyhow!("no run `{run_id}` in {}", self.ledger.path().display())
        })?;
        if let Some(m) = &model
            && self.scheduler.model(m).is_none()
        {
            anyhow::bail!("--model {m}: not in the model catalog (see `agentflow models`)");
        }
        let (config_json, _) = ledger::query::run_config(&reader, &row.run_id)?
            .ok_or_else(|| anyhow::anyhow!("run {} has no stored config", row.run_id))?;
        let mut stored: StoredRunConfig = serde_json::from_str(&config_json)?;
        stored.catalog = self.scheduler.models().to_vec();
        stored.model_override = model;
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

    /// Record the root's end: cancel children left running, finish the run, report.
    async fn conclude(
        &self,
        run: Arc<RunContext>,
        started: Instant,
        outcome: TaskOutcome,
    ) -> anyhow::Result<RunReport> {
        let run_id = run.run_id.clone();
        // How the budget was used, for operators and for tests of the reservation
        // discipline: the most ever committed at once never passes the limit.
        let (limit, spent, peak) = run.budget.root_summary();
        let summary = ledger::EventRecord::note(
            run_id.clone(),
            1,
            "budget.summary",
            true,
            serde_json::Value::Null,
            serde_json::json!({ "limit_usd": limit, "spent_usd": spent, "peak_committed_usd": peak }),
        );
        self.ledger.append(summary).await?;
        run.finish(1, outcome.clone()).await;
        let orphans = run.cancel_unfinished().await;
        if orphans > 0 {
            tracing::info!(run = %run_id, orphans, "cancelled children the root did not wait for");
        }
        durability::fault::point("root-finished");
        let (status, output, error) = match outcome {
            TaskOutcome::Completed(o) => (Status::Completed, Some(o), None),
            TaskOutcome::Failed(e) => (Status::Failed, None, Some(e)),
            TaskOutcome::Cancelled => (Status::Cancelled, None, None),
        };
        self.ledger
            .finish_run(run_id.clone(), status, output.clone(), error.clone())
            .await?;
        let reader = self.ledger.reader()?;
        let row = ledger::query::run(&reader, &run_id)?
            .ok_or_else(|| anyhow::anyhow!("run {run_id} vanished from the ledger"))?;
        let copied = ledger::query::events(&reader, &run_id, Some(1))?
            .iter()
            .filter(|e| e.kind == "fork.copied")
            .filter_map(|e| e.response["cost_usd"].as_f64())
            .sum::<f64>();
        Ok(RunReport {
            run_id,
            status,
            output,
            error,
            tasks: run.task_count(),
            tokens: (row.tokens_in + row.tokens_out) as u64,
            tokens_in: row.tokens_in as u64,
            tokens_out: row.tokens_out as u64,
            cost_usd: row.cost_usd,
            copied_cost_usd: copied,
            new_cost_usd: (row.cost_usd - copied).max(0.0),
            // The ledger's own start and end, so `inspect` shows the same duration.
            duration_ms: row
                .finished_at
                .map(|end| (end - row.started_at).max(0) as u64)
                .unwrap_or_else(|| started.elapsed().as_millis() as u64),
        })
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
        let tools = ToolSet::build(&stored.tools, &self.registered_tools)?;
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
        } else if plan.run_status == "running" {
            Some(self.resume(&plan.run_id, ResumeOptions::default()).await?)
        } else if plan.run_status == "failed" && resumes {
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
    /// The ledger must pass `PRAGMA quick_check` first: replaying from a damaged record
    /// could re-run recorded calls live. A run killed before its root task was written
    /// starts that task from the recorded input.
    pub async fn resume(&self, run_id: &str, opts: ResumeOptions) -> anyhow::Result<RunReport> {
        let started = Instant::now();
        self.ledger.quick_check()?;
        let reader = self.ledger.reader()?;
        let row = ledger::query::run(&reader, run_id)?.ok_or_else(|| {
            anyhow::anyhow!("no run `{run_id}` in {}", self.ledger.path().display())
        })?;
        let run_id = row.run_id.clone();
        if row.status == "failed" && opts.retry_failed {
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
        if row.status != "running" {
            let hint = if row.status == "failed" {
                " (pass --retry-failed to re-run its failed tasks)"
            } else {
                ""
            };
            anyhow::bail!(
                "run {run_id} is {}: only runs that did not finish can be resumed{hint}",
                row.status
            );
        }
        let (config_json, stored_hash) = ledger::query::run_config(&reader, &run_id)?
            .ok_or_else(|| anyhow::anyhow!("run {run_id} has no stored config"))?;
        let mut stored: StoredRunConfig = serde_json::from_str(&config_json).map_err(|e| {
            anyhow::anyhow!("run {run_id} was recorded by an incompatible host: {e}")
        })?;
        let load_stored = |hash: &str, name: &str| -> anyhow::Result<Arc<LoadedAgent>> {
            let bytes = ledger::query::blob(&reader, hash)?.ok_or_else(|| {
                anyhow::anyhow!("component {hash} of run {run_id} is missing from the ledger")
            })?;
            self.runtime.load_bytes(name, &bytes)
        };
        let root_agent = match &opts.agent_file {
            Some(path) => self.runtime.load_file(path)?,
            None => load_stored(&row.component_hash, &row.agent)?,
        };
        stored.catalog = self.scheduler.models().to_vec();
        let hash_now = context_hash(&root_agent.hash, &row.input, &stored);
        if hash_now != stored_hash && !opts.allow_changed {
            anyhow::bail!(
                "run {run_id} was started with a different context (component {} now {}, or a different model catalog): \
                 refusing to resume, since replay would diverge; pass --allow-changed to resume anyway",
                &row.component_hash[..12],
                &root_agent.hash[..12]
            );
        }
        let tools = ToolSet::build(&stored.tools, &self.registered_tools)?;
        let run = self.run_context(run_id.clone(), &stored, tools, stored_hash);
        let tasks = ledger::query::resume_tasks(&reader, &run_id)?;
        if tasks.is_empty() {
            return self
                .start_missing_root(run, root_agent, &row.input, started)
                .await;
        }
        let all_events = ledger::query::events(&reader, &run_id, None)?;
        run.restore_tree(&tasks);
        for e in &all_events {
            run.budget
                .charge(e.task_id, e.cost_usd, (e.tokens_in + e.tokens_out) as u64);
        }
        let mut by_task: std::collections::HashMap<u64, Vec<ledger::query::EventRow>> =
            std::collections::HashMap::new();
        for e in all_events {
            by_task.entry(e.task_id).or_default().push(e);
        }
        for events in by_task.values_mut() {
            *events = durability::reopen::without_superseded(std::mem::take(events));
        }
        let replay_for = |task_id: u64, events: Vec<ledger::query::EventRow>| {
            let mut attempts = durability::replay::Replay::attempts(events);
            for (replay, _, _) in attempts.iter_mut() {
                replay.attach_states(|c| {
                    ledger::query::checkpoint_state(&reader, &run_id, task_id, c.seq)
                        .ok()
                        .flatten()
                });
            }
            let (replay, nondet, _) = attempts.remove(0);
            supervisor::ReplayStart {
                replay,
                nondet,
                later: attempts,
            }
        };
        let text = |hash: &str| -> anyhow::Result<String> {
            Ok(
                String::from_utf8_lossy(&ledger::query::blob(&reader, hash)?.unwrap_or_default())
                    .into_owned(),
            )
        };
        let mut root = None;
        let mut resumed = 0;
        for t in &tasks {
            if matches!(t.status.as_str(), "completed" | "failed" | "cancelled") {
                continue;
            }
            let parent_done = t.parent_id.is_some_and(|p| run.is_finished(p));
            if parent_done {
                continue; // an orphan: cancelled when the run concludes
            }
            let agent = if t.component_hash == row.component_hash {
                root_agent.clone()
            } else {
                load_stored(&t.component_hash, &t.agent)?
            };
            let input = text(&t.input_hash)?;
            let run_input = match &t.run_input_hash {
                Some(h) => Some(text(h)?),
                None => None,
            };
            let replay = replay_for(t.task_id, by_task.remove(&t.task_id).unwrap_or_default());
            if t.parent_id.is_none() {
                root = Some((agent, run_input.unwrap_or(input), replay));
            } else {
                run.resume_task(t, agent, input, run_input, replay);
                resumed += 1;
            }
        }
        tracing::info!(run = %run_id, children = resumed, root = root.is_some(), "resuming");
        let outcome = match root {
            Some((agent, input, replay)) => {
                let slot = run.take_slot().await;
                runtime::execute::execute_task(run.clone(), 1, 0, agent, input, Some(replay), slot)
                    .await
            }
            None => run
                .outcome(1)
                .ok_or_else(|| anyhow::anyhow!("run {run_id} has no root task"))?,
        };
        self.conclude(run, started, outcome).await
    }
}

impl Host {
    /// Resume a run whose host was killed after writing the run but before its root
    /// task (ledgers of hosts that wrote the two apart): nothing of it ran, so the
    /// root starts live from the recorded input.
    async fn start_missing_root(
        &self,
        run: Arc<RunContext>,
        agent: Arc<LoadedAgent>,
        input: &str,
        started: Instant,
    ) -> anyhow::Result<RunReport> {
        tracing::info!(run = %run.run_id, "the run has no root task yet: starting it from the recorded input");
        let root = run.create_root(&agent, input).await?;
        self.run_root(run, root, agent, input, started).await
    }

    /// Close the host: checkpoint the ledger's write-ahead log into the database file
    /// (waiting up to 5 s for other connections), so the `.db` file alone holds every
    /// run. The CLI calls this before it exits; dropping a host tries the same briefly.
    pub fn close(mut self) -> Result<(), ledger::LedgerError> {
        self.closed = true;
        self.ledger.checkpoint(std::time::Duration::from_secs(5))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        if let Err(e) = self
            .ledger
            .checkpoint(std::time::Duration::from_millis(200))
        {
            tracing::debug!(error = %e, "ledger checkpoint on drop skipped");
        }
    }
}

/// Build the scheduler: the catalog, one provider per provider name it uses, the
/// quotas, and the performance DB beside the ledger.
fn build_scheduler(config: &HostConfig, ledger_path: &Path) -> anyhow::Result<Scheduler> {
    let llm = &config.llm;
    let models = scheduler::catalog::catalog(llm);
    let mut providers: std::collections::HashMap<String, Arc<dyn providers::LlmProvider>> =
        std::collections::HashMap::new();
    for m in &models {
        if !providers.contains_key(&m.provider) {
            let p = providers::build_named(&m.provider, &llm.providers, &llm.endpoints)
                .map_err(|e| anyhow::anyhow!("[[llm.models]] `{}`: {e:#}", m.name))?;
            providers.insert(m.provider.clone(), p);
        }
    }
    let perf = scheduler::perf::PerfDb::open(&scheduler::perf::path_for_ledger(ledger_path))?;
    Scheduler::new(models, providers, &llm.quotas, llm.scheduler.clone(), perf)
}
