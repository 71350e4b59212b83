//! The supervisor of a run: its task tree, its budgets and the rules every spawn passes.
//!
//! `tasks.spawn` passes six checks (`spawn.rs`); a child is recorded in the ledger before
//! it starts and runs on its own tokio task after its dependencies (`after`,
//! `data-from`, `exclusive-with`, shared resources, sequences) allow it (`start.rs`).
//! Its outcome reaches `tasks.wait` through the task tree (`tree.rs`); cancelling a task
//! cancels its descendants. The supervisor decides and records; running a task is the
//! [`TaskRunner`]'s, implemented by the layers above ([`crate::attempts`]).

pub mod approval_expr;
pub mod budget;
pub mod constraints;
pub mod host_llm;
pub mod limits;
pub mod llm_attempts;
mod offered;
pub mod shared_budget;
pub mod shared_limits;
mod spawn;
mod start;
mod tree;
pub mod waits;

use tree::{TaskNode, TaskTree};

pub use spawn::{AgentChoice, Dependency, SpawnRefusal, SpawnRequest, TaskNeeds, parse_deps};
pub use waits::{DecisionKind, HumanWait, NoticeSink};

use crate::ledger::{Ledger, NewTask};
use crate::scheduler::Scheduler;
use crate::tools::ToolSet;
use budget::Budget;
use constraints::ConstraintsConfig;
use limits::Limits;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, watch};

/// A component a task runs, as the supervisor knows it: its name and content. Its
/// compiled form belongs to the runtime ([`crate::runtime::Runtime::get`]).
#[derive(Clone, Debug)]
pub struct ComponentRef {
    /// Display name (file stem or registered name).
    pub name: String,
    /// SHA-256 of the component bytes.
    pub hash: String,
    /// The component bytes (stored in the ledger so a run can resume from it alone).
    pub bytes: Arc<[u8]>,
}

/// What the layer that runs tasks needs to start one.
pub struct TaskStart {
    pub id: u64,
    pub depth: u32,
    pub agent: ComponentRef,
    pub input: String,
    /// The task's record to replay first, when resuming.
    pub replay: Option<ReplayStart>,
    /// Its execution slot, already taken.
    pub slot: Option<shared_limits::TaskSlot>,
}

/// What runs tasks for the supervisor. Implemented above it ([`crate::attempts`]), so
/// that the supervisor decides and records while the layers above instantiate the
/// component, validate the output and retry.
#[async_trait::async_trait]
pub trait TaskRunner: Send + Sync {
    /// Load a component registered under `[agents]`, from its file.
    fn load_agent(&self, path: &Path) -> anyhow::Result<ComponentRef>;
    /// Run a task to its outcome. Does not record the end ([`RunContext::finish`] does).
    async fn run_task(&self, run: Arc<RunContext>, start: TaskStart) -> TaskOutcome;
    /// Check a merged text — work of task `task_id`, whose component is `agent` — with
    /// every validator declared for agent `merge`; `Err` says which failed and why.
    async fn validate_merged(
        &self,
        run: Arc<RunContext>,
        task_id: u64,
        agent: &ComponentRef,
        input: &str,
        text: &str,
    ) -> Result<(), String>;
    /// Task `id` ended as `outcome`, its end recorded: for work after a task that must
    /// not hold it (or its run) up, such as a background quality evaluation. Called
    /// once per task end that was recorded; must not block. The default does nothing.
    fn ended(&self, _run: &Arc<RunContext>, _id: u64, _outcome: &TaskOutcome) {}
}

/// How a task ended.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskOutcome {
    Completed(String),
    Failed(String),
    Cancelled,
}

/// What a task resumes with: its recorded calls and clock/random values.
pub struct ReplayStart {
    pub replay: crate::replay::Replay,
    pub nondet: VecDeque<crate::replay::nondet::NondetRead>,
    /// Later attempts (after `validation.retry` markers): calls, values, marker.
    pub later: Vec<(
        crate::replay::Replay,
        VecDeque<crate::replay::nondet::NondetRead>,
        Option<serde_json::Value>,
    )>,
}

/// What a run was configured with, as the supervisor and the capabilities read it
/// (the stored run config's slice below the runtime).
#[derive(Clone, Debug)]
pub struct RunSettings {
    pub limits: Limits,
    /// The run's spending limit in USD, and in tokens if any.
    pub budget_usd: f64,
    pub budget_tokens: Option<u64>,
    /// Agents spawnable by name (`[agents]`).
    pub agents: BTreeMap<String, PathBuf>,
    /// Hash of the component, input and behaviour-relevant config of the run.
    pub context_hash: String,
    /// What to do when a replay diverges.
    pub divergence: crate::replay::DivergencePolicy,
    /// A fork's model: live LLM calls are pinned to it.
    pub model_override: Option<String>,
    /// The spawn rules (`[constraints]`).
    pub constraints: ConstraintsConfig,
    /// Output validators (`[[validators]]`).
    pub validators: Vec<crate::checks::ValidatorConfig>,
    /// Output tokens assumed for budgets and quotas when a request sets no maximum.
    pub default_max_output_tokens: u32,
}

/// The services a run uses: its ledger, the model scheduler and tools (shared with
/// the host's other runs), and what runs its tasks.
pub struct RunServices {
    pub ledger: Ledger,
    pub scheduler: Arc<Scheduler>,
    pub tools: ToolSet,
    pub runner: Arc<dyn TaskRunner>,
}

/// Everything the tasks of one run share: its services, its settings, its budget and
/// its task tree.
pub struct RunContext {
    pub run_id: String,
    pub ledger: Ledger,
    /// Chooses the model of every LLM call (shared by all runs of the host).
    pub scheduler: Arc<Scheduler>,
    pub tools: ToolSet,
    /// Runs the tasks this supervisor starts.
    pub runner: Arc<dyn TaskRunner>,
    pub settings: RunSettings,
    pub budget: Budget,
    /// One permit per task allowed to execute at once.
    pub slots: Arc<Semaphore>,
    /// Locks for shared resources and mutual exclusion, by name.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    tree: Mutex<TaskTree>,
    /// Who waits for a human, and for which tasks ([`waits`]).
    waits: Mutex<waits::WaitState>,
    /// Bumped when whether a task is blocked on a human may have changed.
    waits_changed: watch::Sender<u64>,
    /// Where to tell the operator that a task waits for a human.
    notices: std::sync::OnceLock<NoticeSink>,
    /// Children that can run apart are offered to the cluster's workers ([`offered`]).
    offers_tasks: std::sync::atomic::AtomicBool,
}

impl RunContext {
    /// A run with an empty task tree.
    pub fn new(run_id: String, services: RunServices, settings: RunSettings) -> Arc<RunContext> {
        let RunServices {
            ledger,
            scheduler,
            tools,
            runner,
        } = services;
        Arc::new(RunContext {
            run_id,
            ledger,
            scheduler,
            tools,
            runner,
            budget: Budget::with_tokens(settings.budget_usd, settings.budget_tokens),
            slots: Arc::new(Semaphore::new(
                settings.constraints.max_concurrent_tasks.max(1) as usize,
            )),
            settings,
            locks: Mutex::new(HashMap::new()),
            tree: Mutex::new(TaskTree {
                next_id: 1,
                ..Default::default()
            }),
            waits: Mutex::new(waits::WaitState::default()),
            waits_changed: watch::channel(0).0,
            notices: std::sync::OnceLock::new(),
            offers_tasks: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Tell the operator through `sink` when a task of this run starts waiting for a
    /// human (once per run context; later calls are ignored).
    pub fn set_notices(&self, sink: NoticeSink) {
        let _ = self.notices.set(sink);
    }

    /// Register the root task (id 1) in the tree and return its record, for the
    /// caller to write together with the run (`Ledger::create_run`).
    pub fn register_root(&self, agent: &ComponentRef, input: &str) -> NewTask {
        let id = {
            let mut tree = self.tree.lock().unwrap();
            let id = tree.next_id;
            tree.next_id += 1;
            tree.nodes.insert(
                id,
                TaskNode {
                    parent: None,
                    agent: agent.name.clone(),
                    description: "root".into(),
                    children: Vec::new(),
                    outcome: watch::channel(None).0,
                    abort: None,
                },
            );
            id
        };
        self.tree
            .lock()
            .unwrap()
            .stored_components
            .insert(agent.hash.clone());
        NewTask {
            run_id: self.run_id.clone(),
            task_id: id,
            parent_id: None,
            depth: 0,
            agent: agent.name.clone(),
            component_hash: agent.hash.clone(),
            description: "root".into(),
            input: input.to_string(),
            spawn_key: None,
            dedup_key: None,
            depends_on: "[]".into(),
            component: None,
            budget_usd: None,
            resources: "[]".into(),
            timeout_ms: None,
        }
    }

    /// Register the root task and record it on its own (a resumed run that has none:
    /// its host was killed between writing the run and the task); returns its id.
    pub async fn create_root(&self, agent: &ComponentRef, input: &str) -> anyhow::Result<u64> {
        let mut task = self.register_root(agent, input);
        task.component = Some(agent.bytes.clone()); // `--agent` may name a new one
        let id = task.task_id;
        self.ledger.create_task(task).await?;
        Ok(id)
    }

    /// Number of tasks created so far.
    pub fn task_count(&self) -> u64 {
        self.tree.lock().unwrap().nodes.len() as u64
    }

    /// The wall-clock limit of a task, in ms.
    /// Task `id`'s memory (bytes) and CPU (ms) limits: what its spawn asked for, else
    /// the run's.
    pub fn task_limits(&self, id: u64) -> (usize, u64) {
        let needs = self
            .tree
            .lock()
            .unwrap()
            .needs
            .get(&id)
            .copied()
            .unwrap_or_default();
        let limits = &self.settings.limits;
        (
            needs.memory_mb.map_or(limits.memory_bytes(), |mb| {
                (mb.min(limits.memory_mb) as usize) << 20
            }),
            needs
                .cpu_ms
                .map_or(limits.cpu_ms, |ms| ms.min(limits.cpu_ms)),
        )
    }

    /// Restore what the spawns of a resumed run asked for their children, from their
    /// recorded `tasks.spawn` requests.
    pub fn restore_needs(&self, spawns: impl IntoIterator<Item = (u64, serde_json::Value)>) {
        let mut tree = self.tree.lock().unwrap();
        for (child, request) in spawns {
            let needs = spawn::TaskNeeds {
                memory_mb: request["memory_mb"].as_u64(),
                cpu_ms: request["cpu_ms"].as_u64(),
            };
            if needs != spawn::TaskNeeds::default() {
                tree.needs.insert(child, needs);
            }
        }
    }

    pub fn timeout_ms(&self, id: u64) -> u64 {
        let own = self.tree.lock().unwrap().timeouts.get(&id).copied();
        own.map_or(self.settings.limits.wall_ms, |t| {
            t.min(self.settings.limits.wall_ms)
        })
    }
}
