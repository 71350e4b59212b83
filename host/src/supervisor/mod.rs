//! The supervisor of a run: its task tree, its budgets and the rules every spawn passes.
//!
//! `tasks.spawn` checks, in this order, each refusal a typed error the guest can handle:
//! depth → duplicates (dedup key, or the same normalised description) → concurrency
//! (over `max_concurrent_tasks` the child is queued, unless it asked to fail fast) →
//! budget (the run's, and the spawner's remaining share) → cycles (too similar to an
//! ancestor's description) → approval (the child waits for a human). A child is
//! recorded in the ledger before it starts and runs on its own tokio task, in its own
//! store, after its dependencies (`after`, `data-from`, `exclusive-with`, shared
//! resources, sequences) allow it. Its outcome reaches `tasks.wait` through a watch
//! channel. Cancelling a task cancels its descendants.

pub mod budget;
pub mod constraints;
pub mod host_llm;
pub mod limits;
pub mod llm_attempts;

use crate::ledger::{Ledger, NewTask, Status};
use crate::scheduler::Scheduler;
use crate::tools::ToolSet;
use budget::Budget;
use constraints::{ConstraintsConfig, DependencyFailure};
use limits::Limits;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

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
    pub slot: Option<OwnedSemaphorePermit>,
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
}

/// How a task ended.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskOutcome {
    Completed(String),
    Failed(String),
    Cancelled,
}

/// Which component a child runs.
#[derive(Clone, Debug)]
pub enum AgentChoice {
    Same,
    Named(String),
}

/// A dependency of a child on another task of the run.
#[derive(Clone, Copy, Debug)]
pub enum Dependency {
    After(u64),
    DataFrom(u64),
    ExclusiveWith(u64),
}

/// A spawn request, as the supervisor sees it.
#[derive(Clone, Debug)]
pub struct SpawnRequest {
    pub description: String,
    pub agent: AgentChoice,
    pub input: String,
    pub dedup_key: Option<String>,
    pub budget_usd: Option<f64>,
    pub depends_on: Vec<Dependency>,
    pub resources: Vec<String>,
    pub sequence: Option<String>,
    pub fail_fast: bool,
    pub timeout_ms: Option<u64>,
    pub estimated_cost_usd: Option<f64>,
    pub tools: Vec<String>,
    /// Validators of the child's output, in addition to the run's.
    pub validators: Vec<crate::checks::ValidatorConfig>,
}

/// Why a spawn was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SpawnRefusal {
    #[error("max depth {0} exceeded")]
    MaxDepthExceeded(u32),
    #[error("run already has its maximum of {0} tasks")]
    TooManyTasks(u32),
    #[error("budget exceeded: {0}")]
    BudgetExceeded(String),
    #[error("duplicate of task {0}")]
    DuplicateTask(u64),
    #[error("unknown agent: {0}")]
    UnknownAgent(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    #[error("too similar to ancestor task {0}")]
    CircularDependency(u64),
}

struct TaskNode {
    parent: Option<u64>,
    description: String,
    children: Vec<u64>,
    outcome: watch::Sender<Option<TaskOutcome>>,
    abort: Option<tokio::task::AbortHandle>,
}

#[derive(Default)]
struct TaskTree {
    next_id: u64,
    nodes: HashMap<u64, TaskNode>,
    dedup: HashMap<String, u64>,
    /// `parent:call-number` → child, so a replaying parent finds its child again.
    spawn_keys: HashMap<String, u64>,
    /// Normalised description → task, for duplicate detection.
    descriptions: HashMap<String, u64>,
    /// (parent, sequence name) → the last child spawned in that sequence.
    sequences: HashMap<(u64, String), u64>,
    /// Tasks whose end is being recorded (the first outcome wins).
    finishing: HashSet<u64>,
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

fn deps_json(deps: &[Dependency]) -> String {
    serde_json::Value::Array(
        deps.iter()
            .map(|d| match d {
                Dependency::After(i) => serde_json::json!({ "after": i }),
                Dependency::DataFrom(i) => serde_json::json!({ "data_from": i }),
                Dependency::ExclusiveWith(i) => serde_json::json!({ "exclusive_with": i }),
            })
            .collect(),
    )
    .to_string()
}

/// Parse the `depends_on` column.
pub fn parse_deps(text: &str) -> Vec<Dependency> {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            d.get("after")
                .and_then(|i| i.as_u64())
                .map(Dependency::After)
                .or_else(|| {
                    d.get("data_from")
                        .and_then(|i| i.as_u64())
                        .map(Dependency::DataFrom)
                })
                .or_else(|| {
                    d.get("exclusive_with")
                        .and_then(|i| i.as_u64())
                        .map(Dependency::ExclusiveWith)
                })
        })
        .collect()
}

/// Everything the tasks of one run share.
pub struct RunContext {
    pub run_id: String,
    pub ledger: Ledger,
    /// Runs the tasks this supervisor starts.
    pub runner: Arc<dyn TaskRunner>,
    /// Chooses the model of every LLM call (shared by all runs of the host).
    pub scheduler: Arc<Scheduler>,
    /// Output tokens assumed for budgets and quotas when a request sets no maximum.
    pub default_max_output_tokens: u32,
    pub tools: ToolSet,
    pub limits: Limits,
    pub budget: Budget,
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
    /// One permit per task allowed to execute at once.
    pub slots: Arc<Semaphore>,
    /// Locks for shared resources and mutual exclusion, by name.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per-task wall-clock limits set at spawn.
    timeouts: Mutex<HashMap<u64, u64>>,
    /// Locks each task takes while it runs.
    resources: Mutex<HashMap<u64, Vec<String>>>,
    /// Events to record with a task's end, in the same commit (see [`RunContext::defer`]).
    deferred: Mutex<HashMap<u64, Vec<crate::ledger::EventRecord>>>,
    /// Components already stored in the ledger's `blobs`.
    stored_components: Mutex<HashSet<String>>,
    tree: Mutex<TaskTree>,
}

impl RunContext {
    /// A run with an empty task tree.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        run_id: String,
        ledger: Ledger,
        runner: Arc<dyn TaskRunner>,
        scheduler: Arc<Scheduler>,
        default_max_output_tokens: u32,
        tools: ToolSet,
        limits: Limits,
        (budget_usd, budget_tokens): (f64, Option<u64>),
        agents: BTreeMap<String, PathBuf>,
        context_hash: String,
        divergence: crate::replay::DivergencePolicy,
        model_override: Option<String>,
        constraints: ConstraintsConfig,
        validators: Vec<crate::checks::ValidatorConfig>,
    ) -> Arc<RunContext> {
        Arc::new(RunContext {
            run_id,
            ledger,
            runner,
            scheduler,
            default_max_output_tokens,
            tools,
            limits,
            budget: Budget::with_tokens(budget_usd, budget_tokens),
            agents,
            context_hash,
            divergence,
            model_override,
            validators,
            slots: Arc::new(Semaphore::new(
                constraints.max_concurrent_tasks.max(1) as usize
            )),
            constraints,
            locks: Mutex::new(HashMap::new()),
            timeouts: Mutex::new(HashMap::new()),
            resources: Mutex::new(HashMap::new()),
            stored_components: Mutex::new(HashSet::new()),
            deferred: Mutex::new(HashMap::new()),
            tree: Mutex::new(TaskTree {
                next_id: 1,
                ..Default::default()
            }),
        })
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
                    description: "root".into(),
                    children: Vec::new(),
                    outcome: watch::channel(None).0,
                    abort: None,
                },
            );
            id
        };
        self.stored_components
            .lock()
            .unwrap()
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

    fn is_ancestor_or_self(tree: &TaskTree, candidate: u64, of: u64) -> bool {
        let mut cur = Some(of);
        while let Some(id) = cur {
            if id == candidate {
                return true;
            }
            cur = tree.nodes.get(&id).and_then(|n| n.parent);
        }
        false
    }

    /// Check and start a child of `parent`. On success the child is recorded and running
    /// (or waiting for its dependencies).
    pub async fn spawn(
        self: &Arc<Self>,
        parent: u64,
        parent_depth: u32,
        parent_agent: &ComponentRef,
        req: SpawnRequest,
        spawn_key: String,
    ) -> Result<u64, SpawnRefusal> {
        // A parent resumed after a crash that struck between creating this child and
        // recording the spawn finds the child it already made.
        if let Some(existing) = self.tree.lock().unwrap().spawn_keys.get(&spawn_key) {
            return Ok(*existing);
        }
        // The agent is resolved (and maybe compiled) before taking the lock.
        let agent = match &req.agent {
            AgentChoice::Same => parent_agent.clone(),
            AgentChoice::Named(name) => {
                let path = self.agents.get(name).ok_or_else(|| {
                    SpawnRefusal::UnknownAgent(format!(
                        "`{name}` is not registered (add it under [agents]; known: {})",
                        self.agents.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                })?;
                self.runner
                    .load_agent(path)
                    .map_err(|e| SpawnRefusal::UnknownAgent(format!("`{name}`: {e:#}")))?
            }
        };
        let depth = parent_depth + 1;
        let c = &self.constraints;
        // 1. depth
        if depth > self.limits.max_depth {
            return Err(SpawnRefusal::MaxDepthExceeded(self.limits.max_depth));
        }
        let norm = constraints::normalise(&req.description);
        let ancestors: Vec<(u64, String)> = {
            let tree = self.tree.lock().unwrap();
            // 2. duplicates
            Self::check_duplicate(&tree, &req, &norm, c.dedup_descriptions)?;
            if tree.nodes.len() as u64 >= self.limits.max_tasks as u64 {
                return Err(SpawnRefusal::TooManyTasks(self.limits.max_tasks));
            }
            let mut chain = Vec::new();
            let mut cur = Some(parent);
            while let Some(id) = cur {
                let node = &tree.nodes[&id];
                chain.push((id, node.description.clone()));
                cur = node.parent;
            }
            chain
        };
        // 3. concurrency
        if req.fail_fast && self.slots.available_permits() == 0 {
            return Err(SpawnRefusal::ResourceExhausted(format!(
                "all {} task slots are busy (constraints.max_concurrent_tasks)",
                c.max_concurrent_tasks
            )));
        }
        // 4. budget
        let left = self.budget.remaining(parent);
        if let Some(share) = req.budget_usd {
            if !(share.is_finite() && share >= 0.0) {
                return Err(SpawnRefusal::InvalidRequest(
                    "budget-usd must be a non-negative number".into(),
                ));
            }
            if share > left + 1e-12 {
                return Err(SpawnRefusal::BudgetExceeded(format!(
                    "requested share ${share:.6} but the spawner has ${left:.6} left"
                )));
            }
        } else if left <= 0.0 {
            return Err(SpawnRefusal::BudgetExceeded(
                "the spawner has no budget left".into(),
            ));
        }
        // 5. cycles
        if c.similarity_threshold <= 1.0 {
            let descriptions: Vec<String> = ancestors.iter().map(|(_, d)| d.clone()).collect();
            let scores = match &c.embeddings {
                Some(cfg) => {
                    constraints::embedding_similarities(cfg, &req.description, &descriptions)
                        .await
                        .map_err(|e| {
                            SpawnRefusal::InvalidRequest(format!("embeddings endpoint: {e:#}"))
                        })?
                }
                None => descriptions
                    .iter()
                    .map(|d| constraints::lexical_similarity(&req.description, d))
                    .collect(),
            };
            if let Some(((id, _), _)) = ancestors
                .iter()
                .zip(&scores)
                .find(|(_, s)| **s >= c.similarity_threshold)
            {
                return Err(SpawnRefusal::CircularDependency(*id));
            }
        }
        // 6. approval
        let estimated = req.estimated_cost_usd.or(req.budget_usd).unwrap_or(0.0);
        let approval = c
            .approval
            .reason(&req.description, depth, estimated, &req.tools);

        let mut depends_on = req.depends_on.clone();
        let (id, rx_deps) = {
            let mut tree = self.tree.lock().unwrap();
            // Re-check what a concurrent spawn may have changed since the first look.
            Self::check_duplicate(&tree, &req, &norm, c.dedup_descriptions)?;
            if tree.nodes.len() as u64 >= self.limits.max_tasks as u64 {
                return Err(SpawnRefusal::TooManyTasks(self.limits.max_tasks));
            }
            if let Some(name) = &req.sequence
                && let Some(prev) = tree.sequences.get(&(parent, name.clone()))
            {
                depends_on.push(Dependency::After(*prev));
            }
            let mut deps = Vec::new();
            for d in &depends_on {
                let dep_id = match d {
                    Dependency::After(i)
                    | Dependency::DataFrom(i)
                    | Dependency::ExclusiveWith(i) => *i,
                };
                let node = tree.nodes.get(&dep_id).ok_or_else(|| {
                    SpawnRefusal::InvalidRequest(format!("dependency on unknown task {dep_id}"))
                })?;
                if Self::is_ancestor_or_self(&tree, dep_id, parent) {
                    return Err(SpawnRefusal::InvalidRequest(format!(
                        "task {dep_id} is an ancestor of the spawner: depending on it would deadlock"
                    )));
                }
                if !matches!(d, Dependency::ExclusiveWith(_)) {
                    deps.push((
                        dep_id,
                        matches!(d, Dependency::DataFrom(_)),
                        node.outcome.subscribe(),
                    ));
                }
            }
            let id = tree.next_id;
            self.budget
                .add_child(parent, id, req.budget_usd)
                .map_err(SpawnRefusal::BudgetExceeded)?;
            tree.next_id += 1;
            tree.nodes.insert(
                id,
                TaskNode {
                    parent: Some(parent),
                    description: req.description.clone(),
                    children: Vec::new(),
                    outcome: watch::channel(None).0,
                    abort: None,
                },
            );
            if let Some(p) = tree.nodes.get_mut(&parent) {
                p.children.push(id);
            }
            if let Some(key) = &req.dedup_key {
                tree.dedup.insert(key.clone(), id);
            }
            tree.descriptions.entry(norm).or_insert(id);
            if let Some(name) = &req.sequence {
                tree.sequences.insert((parent, name.clone()), id);
            }
            tree.spawn_keys.insert(spawn_key.clone(), id);
            (id, deps)
        };
        let mut resources: Vec<String> = req
            .resources
            .iter()
            .map(|r| format!("resource:{r}"))
            .collect();
        for d in &depends_on {
            if let Dependency::ExclusiveWith(x) = d {
                resources.push(format!("task:{x}"));
            }
        }
        let component = {
            let mut stored = self.stored_components.lock().unwrap();
            if stored.insert(agent.hash.clone()) {
                Some(agent.bytes.clone())
            } else {
                None
            }
        };
        let created = self
            .ledger
            .create_task(NewTask {
                run_id: self.run_id.clone(),
                task_id: id,
                parent_id: Some(parent),
                depth,
                agent: agent.name.clone(),
                component_hash: agent.hash.clone(),
                description: req.description.clone(),
                input: req.input.clone(),
                spawn_key: Some(spawn_key),
                dedup_key: req.dedup_key.clone(),
                depends_on: deps_json(&depends_on),
                component,
                budget_usd: req.budget_usd,
                resources: serde_json::to_string(&resources).unwrap_or_default(),
                timeout_ms: req.timeout_ms,
            })
            .await
            .map_err(|e| e.to_string());
        let recorded = match (created, &approval) {
            (Ok(()), Some(reason)) => self
                .ledger
                .request_approval(
                    self.run_id.clone(),
                    id,
                    reason.clone(),
                    estimated,
                    req.description.clone(),
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            (other, _) => other,
        };
        let recorded = match recorded {
            Ok(()) => {
                crate::checks::spawned::store(&self.ledger, &self.run_id, id, &req.validators).await
            }
            other => other,
        };
        if let Err(e) = recorded {
            self.tree.lock().unwrap().nodes.remove(&id);
            self.budget.close_child(id);
            return Err(SpawnRefusal::InvalidRequest(format!("ledger: {e}")));
        }
        if let Some(t) = req.timeout_ms {
            self.timeouts.lock().unwrap().insert(id, t);
        }
        crate::ledger::fault::point("spawn-created");
        self.resources.lock().unwrap().insert(id, resources);
        self.start_task(id, depth, agent, req.input, rx_deps, None, None);
        Ok(id)
    }

    fn check_duplicate(
        tree: &TaskTree,
        req: &SpawnRequest,
        norm: &str,
        by_description: bool,
    ) -> Result<(), SpawnRefusal> {
        if let Some(existing) = req.dedup_key.as_ref().and_then(|k| tree.dedup.get(k)) {
            return Err(SpawnRefusal::DuplicateTask(*existing));
        }
        if by_description
            && req.dedup_key.is_none()
            && let Some(existing) = tree.descriptions.get(norm)
        {
            return Err(SpawnRefusal::DuplicateTask(*existing));
        }
        Ok(())
    }

    /// The wall-clock limit of a task, in ms.
    pub fn timeout_ms(&self, id: u64) -> u64 {
        let own = self.timeouts.lock().unwrap().get(&id).copied();
        own.map_or(self.limits.wall_ms, |t| t.min(self.limits.wall_ms))
    }

    fn lock_for(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Wait until a human decides on task `id`'s approval, if it needs one. `Err` is
    /// the outcome of a denied (or unreadable) request.
    async fn await_approval(&self, id: u64) -> Result<(), TaskOutcome> {
        let waiting_for = format!(
            "approval of task {id} of run {} (agentflow approvals)",
            self.run_id
        );
        self.ledger
            .poll_decision(&waiting_for, |conn| {
                Ok(
                    match crate::ledger::query::approval_of(conn, &self.run_id, id)? {
                        None => Some(Ok(())),
                        Some(a) if a.status == "approved" => Some(Ok(())),
                        Some(a) if a.status == "denied" => Some(Err(TaskOutcome::Failed(format!(
                            "denied by a human (approval {}): {}",
                            a.id,
                            a.note.unwrap_or_default()
                        )))),
                        Some(_) => None,
                    },
                )
            })
            .await
            .unwrap_or_else(|e| Err(TaskOutcome::Failed(format!("cannot read approvals: {e}"))))
    }

    /// Take a task slot (queueing when all are busy).
    pub async fn take_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }

    /// Start task `id` on its own tokio task: wait for its dependencies, then run it
    /// (replaying its record first when resuming; `run_input` is the input it already
    /// started with, if it had started).
    #[allow(clippy::too_many_arguments)]
    fn start_task(
        self: &Arc<Self>,
        id: u64,
        depth: u32,
        agent: ComponentRef,
        input: String,
        rx_deps: Vec<(u64, bool, watch::Receiver<Option<TaskOutcome>>)>,
        run_input: Option<String>,
        replay: Option<ReplayStart>,
    ) {
        let run = self.clone();
        let handle = tokio::spawn(async move {
            let mut input = input;
            for (dep_id, data, mut rx) in rx_deps {
                let outcome = rx
                    .wait_for(|o| o.is_some())
                    .await
                    .ok()
                    .and_then(|o| o.clone());
                match outcome {
                    Some(TaskOutcome::Completed(out)) => {
                        if data {
                            input.push_str("\n\n");
                            input.push_str(&out);
                        }
                    }
                    other => {
                        let outcome = match run.constraints.on_dependency_failure {
                            DependencyFailure::Fail => TaskOutcome::Failed(format!(
                                "dependency task {dep_id} did not complete: {other:?}"
                            )),
                            DependencyFailure::Cancel => TaskOutcome::Cancelled,
                        };
                        run.finish(id, outcome).await;
                        return;
                    }
                }
            }
            if let Err(outcome) = run.await_approval(id).await {
                run.finish(id, outcome).await;
                return;
            }
            // Shared resources and mutual exclusion: every lock in name order (no
            // deadlock between tasks), including this task's own.
            let mut names = run
                .resources
                .lock()
                .unwrap()
                .get(&id)
                .cloned()
                .unwrap_or_default();
            names.push(format!("task:{id}"));
            names.sort();
            names.dedup();
            let mut guards = Vec::new();
            for name in &names {
                guards.push(run.lock_for(name).lock_owned().await);
            }
            let slot = run.take_slot().await;
            let input = run_input.unwrap_or(input);
            let start = TaskStart {
                id,
                depth,
                agent,
                input,
                replay,
                slot,
            };
            let outcome = run.runner.run_task(run.clone(), start).await;
            drop(guards);
            run.finish(id, outcome).await;
        });
        if let Some(node) = self.tree.lock().unwrap().nodes.get_mut(&id) {
            node.abort = Some(handle.abort_handle());
        }
    }

    /// Rebuild the task tree of a run being resumed: every task of the ledger, with
    /// the outcome of those that finished.
    pub fn restore_tree(&self, tasks: &[crate::ledger::query::ResumeTask]) {
        let mut tree = self.tree.lock().unwrap();
        for t in tasks {
            let outcome = match t.status.as_str() {
                "completed" => Some(TaskOutcome::Completed(t.output.clone().unwrap_or_default())),
                "failed" => Some(TaskOutcome::Failed(t.error.clone().unwrap_or_default())),
                "cancelled" => Some(TaskOutcome::Cancelled),
                _ => None,
            };
            let outcome_known = outcome.is_some();
            tree.nodes.insert(
                t.task_id,
                TaskNode {
                    parent: t.parent_id,
                    description: t.description.clone(),
                    children: Vec::new(),
                    outcome: watch::channel(outcome).0,
                    abort: None,
                },
            );
            if let Some(k) = &t.dedup_key {
                tree.dedup.insert(k.clone(), t.task_id);
            }
            if let Some(k) = &t.spawn_key {
                tree.spawn_keys.insert(k.clone(), t.task_id);
            }
            if let Some(parent) = t.parent_id {
                tree.descriptions
                    .entry(constraints::normalise(&t.description))
                    .or_insert(t.task_id);
                let _ = self.budget.add_child(parent, t.task_id, t.budget_usd);
                if outcome_known {
                    self.budget.close_child(t.task_id);
                }
            }
            if let Some(ms) = t.timeout_ms {
                self.timeouts.lock().unwrap().insert(t.task_id, ms);
            }
            let names: Vec<String> = serde_json::from_str(&t.resources).unwrap_or_default();
            self.resources.lock().unwrap().insert(t.task_id, names);
            tree.next_id = tree.next_id.max(t.task_id + 1);
        }
        for t in tasks {
            if let Some(p) = t.parent_id.and_then(|p| tree.nodes.get_mut(&p)) {
                p.children.push(t.task_id);
            }
        }
        let mut stored = self.stored_components.lock().unwrap();
        for t in tasks {
            stored.insert(t.component_hash.clone());
        }
    }

    /// Resume an unfinished non-root task (its dependencies, then a replay of its record).
    pub fn resume_task(
        self: &Arc<Self>,
        task: &crate::ledger::query::ResumeTask,
        agent: ComponentRef,
        input: String,
        run_input: Option<String>,
        replay: ReplayStart,
    ) {
        let rx_deps = {
            let tree = self.tree.lock().unwrap();
            parse_deps(&task.depends_on)
                .into_iter()
                .filter_map(|d| {
                    let (dep, data) = match d {
                        Dependency::After(i) => (i, false),
                        Dependency::DataFrom(i) => (i, true),
                        Dependency::ExclusiveWith(_) => return None,
                    };
                    tree.nodes
                        .get(&dep)
                        .map(|n| (dep, data, n.outcome.subscribe()))
                })
                .collect()
        };
        self.start_task(
            task.task_id,
            task.depth,
            agent,
            input,
            rx_deps,
            run_input,
            Some(replay),
        );
    }

    /// The outcome of a finished task.
    pub fn outcome(&self, id: u64) -> Option<TaskOutcome> {
        self.tree
            .lock()
            .unwrap()
            .nodes
            .get(&id)
            .and_then(|n| n.outcome.borrow().clone())
    }

    /// Whether task `id` has finished.
    pub fn is_finished(&self, id: u64) -> bool {
        self.tree
            .lock()
            .unwrap()
            .nodes
            .get(&id)
            .is_some_and(|n| n.outcome.borrow().is_some())
    }

    /// Record `events` of task `id` together with its end, in one commit: for records
    /// that are recomputed when lost (a crash before the end resumes the task, which
    /// produces them again), such as the verdicts of validators that passed.
    pub fn defer(&self, id: u64, events: Vec<crate::ledger::EventRecord>) {
        self.deferred
            .lock()
            .unwrap()
            .entry(id)
            .or_default()
            .extend(events);
    }

    /// Record a task's end and wake whoever waits for it. The first outcome wins (a
    /// cancelled task stays cancelled).
    pub async fn finish(&self, id: u64, outcome: TaskOutcome) {
        // The end is recorded in the ledger before anyone waiting is woken, so what a
        // dependent does next is always after its dependency's end in the ledger.
        let first = {
            let mut tree = self.tree.lock().unwrap();
            let open = tree
                .nodes
                .get(&id)
                .is_some_and(|n| n.outcome.borrow().is_none());
            open && tree.finishing.insert(id)
        };
        if !first {
            return;
        }
        self.budget.close_child(id);
        let (status, output, error) = match outcome.clone() {
            TaskOutcome::Completed(out) => (Status::Completed, Some(out), None),
            TaskOutcome::Failed(e) => (Status::Failed, None, Some(e)),
            TaskOutcome::Cancelled => (Status::Cancelled, None, None),
        };
        let events = self
            .deferred
            .lock()
            .unwrap()
            .remove(&id)
            .unwrap_or_default();
        if let Err(e) = self
            .ledger
            .finish_task(self.run_id.clone(), id, status, output, error, events)
            .await
        {
            tracing::error!(run = %self.run_id, task = id, error = %e, "cannot record task end");
        }
        let tree = self.tree.lock().unwrap();
        if let Some(node) = tree.nodes.get(&id) {
            node.outcome.send_replace(Some(outcome));
        }
    }

    /// Wait for task `id`; `None` if the caller may not wait for it (unknown, itself
    /// or one of its ancestors, which would deadlock).
    pub async fn wait(&self, caller: u64, id: u64) -> Option<TaskOutcome> {
        let mut rx = {
            let tree = self.tree.lock().unwrap();
            if !tree.nodes.contains_key(&id) || Self::is_ancestor_or_self(&tree, id, caller) {
                return None;
            }
            tree.nodes[&id].outcome.subscribe()
        };
        rx.wait_for(|o| o.is_some())
            .await
            .ok()
            .and_then(|o| o.clone())
    }

    /// Cancel task `id` and all its descendants; false if it had already finished or
    /// may not be cancelled by `caller` (itself or an ancestor).
    pub async fn cancel(&self, caller: Option<u64>, id: u64) -> bool {
        let targets: Vec<u64> = {
            let tree = self.tree.lock().unwrap();
            let Some(node) = tree.nodes.get(&id) else {
                return false;
            };
            if let Some(c) = caller
                && Self::is_ancestor_or_self(&tree, id, c)
            {
                return false;
            }
            if node.outcome.borrow().is_some() {
                return false;
            }
            let mut order = Vec::new();
            let mut stack = vec![id];
            while let Some(t) = stack.pop() {
                order.push(t);
                if let Some(n) = tree.nodes.get(&t) {
                    stack.extend(n.children.iter().copied());
                }
            }
            for t in &order {
                if let Some(abort) = tree.nodes.get(t).and_then(|n| n.abort.as_ref()) {
                    abort.abort();
                }
            }
            order
        };
        for t in targets.into_iter().rev() {
            self.finish(t, TaskOutcome::Cancelled).await;
        }
        true
    }

    /// Cancel every task that has not finished (used when the root returns).
    pub async fn cancel_unfinished(&self) -> usize {
        let open: Vec<u64> = {
            let tree = self.tree.lock().unwrap();
            let mut ids: Vec<u64> = tree
                .nodes
                .iter()
                .filter(|(_, n)| n.outcome.borrow().is_none() && n.parent.is_some())
                .map(|(id, _)| *id)
                .collect();
            ids.sort_unstable();
            ids
        };
        let mut n = 0;
        for id in open {
            if self.cancel(None, id).await {
                n += 1;
            }
        }
        n
    }
}
