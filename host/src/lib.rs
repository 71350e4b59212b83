//! AgentFlow: a host that runs AI agents compiled to WebAssembly components —
//! sandboxed, budgeted and recorded.
//!
//! An agent is a `wasm32-wasip2` component of the `agentflow:agent/agent` world. It
//! reaches the world only through the host's capabilities (LLM, tools, sub-agents,
//! trace, checkpoints); every call is appended to a SQLite ledger before the guest sees
//! its result. This crate is the library behind the `agentflow` CLI.
//!
//! # Layers
//!
//! The modules form layers, bottom first; a module uses only the layers below it, and
//! `.ci/run` checks that (`python3 .ci/layers.py host/src --order …`, the order below).
//! They follow a guest call's data flow: a capability asks the layers below it, and the
//! ledger records.
//!
//! 1. `guest_text`, [`table`], `bindings` — escaping guest text; the one text-table
//!    printer; the WIT bindings.
//! 2. [`ledger`] — the SQLite record: runs, tasks, events and their kinds, blobs. Owns
//!    all SQL; knows nothing of durability policy.
//! 3. [`replay`] — matching a resumed guest's calls against the record; clock/random.
//! 4. [`providers`] — LLM providers behind one trait; prices.
//! 5. [`scheduler`] — which model takes each call: catalog, health, quotas, `[llm]`.
//! 6. [`tools`] — built-in and registered tools, their grants (`[tools]`).
//! 7. [`checks`] — the `[[validators]]` config and checks needing only the output.
//! 8. [`supervisor`] — what a guest call asks of the run: task tree, budgets, limits,
//!    spawn constraints. Runs tasks through a [`supervisor::TaskRunner`] from above.
//! 9. [`durability`] — run-level recovery: in-doubt effects, forks, reopening.
//! 10. [`merge`] — merging children's work into their parent's.
//! 11. [`capabilities`] — the host side of each WIT interface, one module each, all
//!     through one record/replay path (`capabilities::durable`).
//! 12. [`runtime`] — wasmtime: engine, component cache, store, one attempt at a task.
//! 13. [`tool_components`] — tools shipped as components of the `tool` world: their
//!     own engine and a fresh store per call, the manifest's grants and limits, the
//!     ledger's registry of installed tools (`agentflow tools install/list/remove`).
//! 14. [`mcp`] — MCP servers as tools (`[[tools.mcp]]`): each run's servers, started
//!     lazily, restarted when they die, stopped with the run.
//! 15. [`attempts`] — a task to its outcome: validate, retry, review, escalate,
//!     outcome checks; implements the supervisor's `TaskRunner`.
//! 16. [`config`] — assembles the config sections into [`HostConfig`] (and holds
//!     `[observe]`, which configures no single layer below).
//! 17. [`observe`] — reading the ledger for operators: inspect, diff, models, why,
//!     drift, cost against quality, a running run's progress; runs as OpenTelemetry
//!     spans, the ledger's metrics.
//! 18. `runs` and this file — the [`Host`] API (the OTLP exporter too); above it, the
//!     CLI (`main.rs`).
//! 19. [`serve`] — the web dashboard (`agentflow serve`): the ledger read and decided
//!     on from a browser, and the ledger's metrics for Prometheus (`/metrics`).
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

pub mod attempts;
pub mod bindings;
pub mod capabilities;
pub mod checks;
pub mod config;
pub mod durability;
pub mod guest_text;
pub mod ledger;
pub mod mcp;
pub mod merge;
pub mod observe;
pub mod providers;
pub mod replay;
pub mod runs;
pub mod runtime;
pub mod scheduler;
pub mod serve;
pub mod supervisor;
pub mod table;
pub mod tool_components;
pub mod tools;

pub use config::HostConfig;
pub use ledger::Status;

use ledger::{EventKind, Ledger, NewRun};
use runs::stored::{StoredRunConfig, context_hash};
use runtime::{LoadedAgent, Runtime};
use scheduler::Scheduler;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    pub on_divergence: Option<replay::DivergencePolicy>,
    /// Override `[constraints] max_concurrent_tasks`.
    pub max_concurrency: Option<u32>,
    /// Override `[constraints.approval] cost_over_usd`.
    pub approval_over_usd: Option<f64>,
    /// The new run's id (32 lowercase hex digits, as [`new_run_id`] makes), so the
    /// caller can name the run before it ends; a fresh one when `None`.
    pub run_id: Option<String>,
    /// Stop when every task of the run waits for a human (the report's status is then
    /// [`Status::Waiting`]; [`Host::resume`] continues once decided). Without it the
    /// host waits for the decisions.
    pub detach: bool,
}

/// A fresh run id: 32 lowercase hex digits.
pub fn new_run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
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
    /// Stop again when every task waits for a human, as [`RunOptions::detach`].
    pub detach: bool,
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
    /// The run's whole cost as the ledger records it when the run ends (a fork's
    /// included; background quality evaluations still running then are not).
    pub cost_usd: f64,
    /// For a fork: the part of `cost_usd` copied from the original run's record (spent
    /// there, not again); 0 otherwise.
    pub copied_cost_usd: f64,
    /// `cost_usd` less `copied_cost_usd`: what this run spent itself.
    pub new_cost_usd: f64,
    pub duration_ms: u64,
    /// With status [`Status::Waiting`]: the decisions the run waits for, with the
    /// commands that give them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<supervisor::HumanWait>,
}

/// The host: runtime, ledger, provider and tools. One per process is typical; it
/// can run many agents at once.
pub struct Host {
    config: HostConfig,
    /// `config` as each run records it ([`runs::recorded`]).
    recorded_config: serde_json::Value,
    /// The leases on the runs this host executes.
    leases: Arc<runs::lease::LeaseKeeper>,
    runtime: Arc<Runtime>,
    ledger: Ledger,
    scheduler: Arc<Scheduler>,
    registered_tools: Vec<Arc<dyn Tool>>,
    /// The engine of installed tool components, built when a run first needs one.
    tool_runtime: std::sync::OnceLock<Arc<tool_components::ToolRuntime>>,
    /// Told when a task starts waiting for a human.
    notices: Option<supervisor::NoticeSink>,
    /// Scores completed tasks in the background (`[observe] evaluate = "judge"`).
    evaluator: Option<Arc<attempts::evaluate::Evaluator>>,
    /// Set by [`Host::close`], which has checkpointed the ledger already.
    closed: bool,
    /// The OTLP exporter, when `[observe]` names an endpoint ([`runs::telemetry`]).
    telemetry: Option<runs::telemetry::Telemetry>,
    /// A cluster worker's host: its runs offer the children that can run apart to
    /// the other workers ([`runs::offered`]).
    offers_tasks: std::sync::atomic::AtomicBool,
    /// The connection to the budgets runs keep in the cluster's database, once a run
    /// needs it ([`runs::pooled`]).
    shared_budgets: std::sync::OnceLock<Arc<ledger::budgets::SharedBudgets>>,
    /// Contexts of runs with their limits in the cluster's database ([`runs::pooled`]).
    live_runs: std::sync::Mutex<std::collections::HashMap<String, std::sync::Weak<RunContext>>>,
}

impl Host {
    /// A host with the given config and ledger file.
    pub fn new(config: HostConfig, db: impl AsRef<Path>) -> anyhow::Result<Host> {
        config.validate()?;
        let runtime = Runtime::new(Some(config.cache_dir()), &config.runtime)?;
        let ledger = Ledger::open_with(db.as_ref(), &config.ledger)?;
        let scheduler = Arc::new(build_scheduler(&config, db.as_ref())?);
        let recorded_config = runs::recorded::record(&config)?;
        let leases = runs::lease::LeaseKeeper::new(ledger.clone());
        // Exporting never fails a run: an exporter that cannot start is a warning.
        let telemetry = runs::telemetry::Telemetry::start(&config.observe, db.as_ref())
            .unwrap_or_else(|e| {
                tracing::warn!("OpenTelemetry export disabled: {e:#}");
                None
            });
        let evaluator = evaluator(&config.observe);
        Ok(Host {
            config,
            recorded_config,
            leases,
            runtime,
            ledger,
            scheduler,
            registered_tools: Vec::new(),
            tool_runtime: std::sync::OnceLock::new(),
            notices: None,
            evaluator,
            closed: false,
            telemetry,
            offers_tasks: std::sync::atomic::AtomicBool::new(false),
            shared_budgets: std::sync::OnceLock::new(),
            live_runs: Default::default(),
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

    /// Tell `sink` whenever a task of a run of this host starts waiting for a human
    /// (an approval, a review, a merge conflict): what for, and the commands that answer.
    pub fn set_notices(&mut self, sink: supervisor::NoticeSink) {
        self.notices = Some(sink);
    }

    /// Wait until the background quality evaluations of this host's tasks
    /// (`[observe] evaluate`) are recorded, or `bound` passed; how many still run then.
    /// A run's end does not wait for them: call this before the process exits (the
    /// CLI does, after printing the run's result, bounded by `evaluate_wait_ms`).
    pub async fn wait_for_evaluations(&self, bound: std::time::Duration) -> usize {
        match &self.evaluator {
            Some(e) => e.outstanding.wait(bound).await,
            None => 0,
        }
    }

    /// How many background quality evaluations are running.
    pub fn evaluations_running(&self) -> usize {
        self.evaluator
            .as_ref()
            .map_or(0, |e| e.outstanding.running())
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
        let mut limits = self.config.limits.clone();
        if let Some(d) = opts.max_depth {
            limits.max_depth = d;
        }
        limits.validate()?;
        attempts::component::preload(&self.runtime, &self.config.validators)?;
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
        let mut stored = StoredRunConfig {
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
            host: Some(self.recorded_config.clone()),
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
            tool_builds: Default::default(),
        };
        let (tools, pins, mcp) = self.run_tool_set(&stored.tools, &Default::default())?;
        stored.tool_builds = pins;
        let run_id = match &opts.run_id {
            Some(id) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => id.clone(),
            Some(id) => anyhow::bail!("run id `{id}` is not 32 hex digits"),
            None => new_run_id(),
        };
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
        self.open_shared_pool(&run).await?;
        let root_task = run.register_root(&agent.component_ref(), input);
        let root = root_task.task_id;
        self.ledger.create_run(new_run, root_task).await?;
        let _lease = self.leases.hold(&run);
        let report = self.run_root(run, root, agent, input, opts.detach).await;
        mcp.shutdown().await;
        report
    }

    /// Execute root task `root` live from `input`, then conclude the run.
    async fn run_root(
        &self,
        run: Arc<RunContext>,
        root: u64,
        agent: Arc<LoadedAgent>,
        input: &str,
        detach: bool,
    ) -> anyhow::Result<RunReport> {
        let slot = run.take_slot(1).await;
        let start = supervisor::TaskStart {
            id: root,
            depth: 0,
            agent: agent.component_ref(),
            input: input.to_string(),
            replay: None,
            slot,
        };
        self.drive_root(run, start, detach).await
    }

    fn run_context(
        &self,
        run_id: String,
        stored: &StoredRunConfig,
        tools: ToolSet,
        hash: String,
    ) -> Arc<RunContext> {
        let settings = stored.settings(hash, &self.config);
        self.run_context_with(run_id, stored, tools, settings)
    }

    /// [`Host::run_context`] with `settings` of the caller's.
    fn run_context_with(
        &self,
        run_id: String,
        stored: &StoredRunConfig,
        tools: ToolSet,
        settings: supervisor::RunSettings,
    ) -> Arc<RunContext> {
        let services = supervisor::RunServices {
            ledger: self.ledger.clone(),
            scheduler: self.scheduler.clone(),
            tools,
            runner: Arc::new(attempts::Runner {
                runtime: self.runtime.clone(),
                retry: stored.retry.clone(),
                merge: Arc::new(stored.merge.clone()),
                evaluator: self.evaluator.clone(),
            }),
        };
        let pool = self.shared_pool_of(&run_id);
        let run = RunContext::new(run_id, services, settings);
        if let Some(pool) = pool {
            run.share_limits(pool);
            self.register_live_run(&run);
        }
        if let Some(sink) = &self.notices {
            run.set_notices(sink.clone());
        }
        if self.offers_tasks.load(std::sync::atomic::Ordering::Relaxed) {
            run.offer_tasks();
        }
        run
    }

    /// Record the root's end: cancel children left running, finish the run, report.
    async fn conclude(
        &self,
        run: Arc<RunContext>,
        outcome: TaskOutcome,
    ) -> anyhow::Result<RunReport> {
        let run_id = run.run_id.clone();
        // How the budget was used, for operators and for tests of the reservation
        // discipline: the most ever committed at once never passes the limit.
        let (limit, spent, peak) = run.budget.root_summary();
        let summary = ledger::EventRecord::note(
            run_id.clone(),
            1,
            EventKind::BudgetSummary,
            true,
            serde_json::Value::Null,
            serde_json::json!({ "limit_usd": limit, "spent_usd": spent, "peak_committed_usd": peak }),
        );
        self.ledger.record(summary).await?;
        // Not waited for: the run's end below, durable, is its barrier.
        if run
            .finish_as(1, outcome.clone(), ledger::Commit::Buffered)
            .await
        {
            run.tell_ended(1, &outcome);
        }
        let orphans = run.cancel_unfinished().await;
        if orphans > 0 {
            tracing::info!(run = %run_id, orphans, "cancelled children the root did not wait for");
        }
        ledger::fault::point("root-finished");
        self.scheduler.flush_stats();
        let (status, output, error) = match outcome {
            TaskOutcome::Completed(o) => (Status::Completed, Some(o), None),
            TaskOutcome::Failed(e) => (Status::Failed, None, Some(e)),
            TaskOutcome::Cancelled => (Status::Cancelled, None, None),
        };
        let totals = self
            .ledger
            .finish_run(run_id.clone(), status, output.clone(), error.clone())
            .await?
            .ok_or_else(|| anyhow::anyhow!("run {run_id} vanished from the ledger"))?;
        if let Some(telemetry) = &self.telemetry {
            telemetry.run_ended(&run_id);
        }
        Ok(RunReport {
            run_id,
            status,
            output,
            error,
            tasks: run.task_count(),
            tokens: (totals.tokens_in + totals.tokens_out) as u64,
            tokens_in: totals.tokens_in as u64,
            tokens_out: totals.tokens_out as u64,
            cost_usd: totals.cost_usd,
            copied_cost_usd: totals.copied_cost_usd,
            new_cost_usd: (totals.cost_usd - totals.copied_cost_usd).max(0.0),
            // The ledger's own start and end, so `inspect` shows the same duration.
            duration_ms: (totals.finished_at - totals.started_at).max(0) as u64,
            waiting: Vec::new(),
        })
    }
}

impl Host {
    /// Close the host: checkpoint the ledger's write-ahead log into the database file
    /// (waiting up to 5 s for other connections), so the `.db` file alone holds every
    /// run. The CLI calls this before it exits; dropping a host tries the same briefly.
    /// With an OTLP exporter it first waits (at most 5 s) for the queued exports.
    pub fn close(mut self) -> Result<(), ledger::LedgerError> {
        self.closed = true;
        self.flush_telemetry(runs::telemetry::FLUSH_WAIT);
        self.ledger.checkpoint(std::time::Duration::from_secs(5))
    }
}

impl Host {
    /// Wait up to `wait` for the OTLP exports queued so far (the spans of the runs that
    /// ended, then the metrics); whether they finished in time. `true` without an
    /// exporter. [`Host::close`] does this.
    pub fn flush_telemetry(&self, wait: std::time::Duration) -> bool {
        self.telemetry.as_ref().is_none_or(|t| t.flush(wait))
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

/// The background evaluator `[observe]` asks for, if any.
fn evaluator(
    observe: &config::observe::ObserveConfig,
) -> Option<Arc<attempts::evaluate::Evaluator>> {
    (observe.evaluate == config::observe::Evaluate::Judge).then(|| {
        Arc::new(attempts::evaluate::Evaluator {
            judge: checks::JudgeCheck {
                rubric: observe
                    .evaluate_rubric
                    .clone()
                    .unwrap_or_else(|| config::observe::DEFAULT_RUBRIC.to_string()),
                threshold: observe.evaluate_threshold,
                model: observe.evaluate_model.clone(),
            },
            outstanding: Default::default(),
        })
    })
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
    let perf = scheduler::perf::PerfDb::open(&scheduler::perf::path_for_ledger(
        ledger_path,
        &config.cache_dir(),
    ))?;
    let mut scheduler =
        Scheduler::new(models, providers, &llm.quotas, llm.scheduler.clone(), perf)?;
    // Hosts on one PostgreSQL ledger (a cluster's workers) share their quotas.
    if let Some(url) = ledger::db::postgres_url(ledger_path)
        && scheduler.has_quotas()
    {
        scheduler.share_quotas(ledger::quotas::SharedQuotas::connect(url)?);
    }
    Ok(scheduler)
}
