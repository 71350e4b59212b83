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
pub mod ledger;
pub mod observe;
pub mod providers;
pub mod runtime;
pub mod scheduler;
pub mod supervisor;
pub mod tools;

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
    pub cost_usd: f64,
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
        let tools = ToolSet::build(&tools_config, &self.registered_tools)?;
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let config_json = serde_json::json!({
            "limits": limits,
            "budget_usd": budget_usd,
            "grants": tools.granted_names(),
            "workspace": tools_config.workspace,
            "models": self.scheduler.models().iter().map(|m| &m.name).collect::<Vec<_>>(),
        })
        .to_string();
        self.ledger
            .create_run(NewRun {
                run_id: run_id.clone(),
                agent: agent.name.clone(),
                component_hash: agent.hash.clone(),
                input: input.to_string(),
                config_json,
                budget_usd: Some(budget_usd),
            })
            .await?;
        let run = RunContext::new(
            run_id.clone(),
            self.ledger.clone(),
            self.runtime.clone(),
            self.scheduler.clone(),
            self.config.llm.default_max_output_tokens,
            tools,
            limits,
            budget_usd,
            self.config.agents.clone(),
        );
        let root = run.create_root(&agent, input).await?;
        let outcome =
            runtime::execute::execute_task(run.clone(), root, 0, agent, input.to_string()).await;
        run.finish(root, outcome.clone()).await;
        let orphans = run.cancel_unfinished().await;
        if orphans > 0 {
            tracing::info!(run = %run_id, orphans, "cancelled children the root did not wait for");
        }
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
            duration_ms: started.elapsed().as_millis() as u64,
        })
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
