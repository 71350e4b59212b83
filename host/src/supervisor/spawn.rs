//! `tasks.spawn` as the supervisor decides it: six checks, in this order, each refusal
//! a typed error the guest can handle — depth → duplicates (dedup key, or the same
//! normalised description; and the run's task limit) → concurrency (over
//! `max_concurrent_tasks` the child is queued, unless it asked to fail fast) → budget
//! (the spawner's remaining share) → cycles (too similar to an ancestor's description)
//! → approval (the child waits for a human) — then the child is recorded in the ledger
//! and started ([`RunContext::start_task`]).

use super::start::Approval;
use super::tree::{TaskNode, TaskTree};
use super::{ComponentRef, RunContext, constraints};
use crate::ledger::NewTask;
use crate::ledger::run_limits::TaskClaim;
use std::sync::Arc;
use tokio::sync::watch;

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
    /// Resources the child asks for (memory MiB, CPU ms), within the run's limits.
    pub needs: TaskNeeds,
}

/// What a spawn asks for its child, checked against the run's limits: the child runs
/// with these instead of them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TaskNeeds {
    pub memory_mb: Option<u64>,
    pub cpu_ms: Option<u64>,
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

impl RunContext {
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
                let path = self.settings.agents.get(name).ok_or_else(|| {
                    SpawnRefusal::UnknownAgent(format!(
                        "`{name}` is not registered (add it under [agents]; known: {})",
                        self.settings
                            .agents
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
                self.runner
                    .load_agent(path)
                    .map_err(|e| SpawnRefusal::UnknownAgent(format!("`{name}`: {e:#}")))?
            }
        };
        let depth = parent_depth + 1;
        let c = &self.settings.constraints;
        let norm = constraints::normalise(&req.description);
        self.check_depth(depth)?;
        self.check_needs(&req.needs)?;
        // One look at the tree for the checks that read it. The lexical cycle check is
        // made here too (it reads only the spawner's ancestors), but reported in its
        // place, after concurrency and budget.
        let (cycle, ancestors) = {
            let tree = self.tree.lock().unwrap();
            self.check_duplicate(&tree, &req, &norm)?;
            self.check_task_count(&tree)?;
            match &c.embeddings {
                _ if c.similarity_threshold > 1.0 => (None, Vec::new()),
                None => (
                    lexical_cycle(&tree, parent, &req.description, c.similarity_threshold),
                    Vec::new(),
                ),
                Some(_) => (None, ancestor_chain(&tree, parent)),
            }
        };
        self.check_concurrency(&req)?;
        self.check_budget(parent, &req)?;
        if let Some(ancestor) = cycle {
            return Err(SpawnRefusal::CircularDependency(ancestor));
        }
        self.check_cycles(&req, &ancestors).await?;
        let estimated = req.estimated_cost_usd.or(req.budget_usd).unwrap_or(0.0);
        // `agent` in approval expressions: the `[agents]` name asked for, else the
        // spawner's own component's name.
        let agent_name = match &req.agent {
            AgentChoice::Named(name) => name.as_str(),
            AgentChoice::Same => agent.name.as_str(),
        };
        let approval = c
            .approval
            .reason(&super::approval_expr::SpawnFacts {
                cost_usd: estimated,
                depth,
                tools: &req.tools,
                description: &req.description,
                agent: agent_name,
            })
            .map(|reason| {
                // The one thing an approver must know: approving cannot make it fit.
                let (whole, _, _) = self.budget.root_summary();
                if estimated > whole {
                    format!(
                        "{reason}; the estimate ${estimated:.4} is more than the run's whole \
                         budget of ${whole:.4}"
                    )
                } else {
                    reason
                }
            });

        let mut depends_on = req.depends_on.clone();
        for d in &depends_on {
            let (Dependency::After(dep)
            | Dependency::DataFrom(dep)
            | Dependency::ExclusiveWith(dep)) = d;
            self.learn_task(*dep);
        }
        let (id, rx_deps, component, agent_label) = {
            let mut tree = self.tree.lock().unwrap();
            // Re-check what a concurrent spawn may have changed since the first look.
            self.check_duplicate(&tree, &req, &norm)?;
            self.check_task_count(&tree)?;
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
                if !tree.nodes.contains_key(&dep_id) {
                    return Err(SpawnRefusal::InvalidRequest(format!(
                        "dependency on unknown task {dep_id}"
                    )));
                }
                if tree.is_ancestor_or_self(dep_id, parent) {
                    return Err(SpawnRefusal::InvalidRequest(format!(
                        "task {dep_id} is an ancestor of the spawner: depending on it would deadlock"
                    )));
                }
                if !matches!(d, Dependency::ExclusiveWith(_))
                    && let Some(rx) = tree.watch(dep_id, self.budget.is_shared())
                {
                    deps.push((dep_id, matches!(d, Dependency::DataFrom(_)), rx));
                }
            }
            // The agent's name, which its grants are looked up by: the `[agents]` name
            // asked for; a child running the same component is its spawner's agent.
            let agent_label = match &req.agent {
                AgentChoice::Named(name) => name.clone(),
                AgentChoice::Same => tree
                    .nodes
                    .get(&parent)
                    .map_or_else(|| agent.name.clone(), |n| n.agent.clone()),
            };
            let id = match self.budget.pool() {
                None => tree.next_id,
                // Spawns on other workers claim ids and duplicate keys of this run too.
                Some(pool) => self.claim_shared_id(pool, &req, &norm, &spawn_key)?,
            };
            if let Err(e) = self.budget.add_child(parent, id, req.budget_usd) {
                if let Some(pool) = self.budget.pool() {
                    pool.unclaim_task(id);
                }
                return Err(SpawnRefusal::BudgetExceeded(e.to_string()));
            }
            tree.next_id = tree.next_id.max(id + 1);
            tree.nodes.insert(
                id,
                TaskNode {
                    parent: Some(parent),
                    // The `[agents]` name asked for; a child running the same
                    // component is the same agent as its spawner.
                    agent: agent_label.clone(),
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
            // The component goes into the ledger's blobs with the first task running it.
            let component = if tree.stored_components.contains(&agent.hash) {
                None
            } else {
                tree.stored_components.insert(agent.hash.clone());
                Some(agent.bytes.clone())
            };
            (id, deps, component, agent_label)
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
        // Committed without an fsync: the parent's `tasks.spawn`, durable, follows it.
        let created = self
            .ledger
            .create_task_as(
                NewTask {
                    run_id: self.run_id.clone(),
                    task_id: id,
                    parent_id: Some(parent),
                    depth,
                    agent: agent_label,
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
                },
                crate::ledger::Commit::Visible,
            )
            .await;
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
                .map(|_| ()),
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
            if let Some(pool) = self.budget.pool() {
                pool.unclaim_task(id);
            }
            return Err(SpawnRefusal::InvalidRequest(format!("ledger: {e}")));
        }
        crate::ledger::fault::point("spawn-created");
        {
            let mut tree = self.tree.lock().unwrap();
            if let Some(t) = req.timeout_ms {
                tree.timeouts.insert(id, t);
            }
            if req.needs != TaskNeeds::default() {
                tree.needs.insert(id, req.needs);
            }
            tree.resources.insert(id, resources);
        }
        let approval = match approval {
            Some(_) => Approval::MayNeed,
            None => Approval::NotNeeded,
        };
        self.start_task(id, depth, agent, req.input, rx_deps, None, None, approval);
        Ok(id)
    }

    /// Check 1, depth: a child may not be deeper than `limits.max_depth`.
    /// Check 1b, resources: what the child asks for must fit the run's limits.
    fn check_needs(&self, needs: &TaskNeeds) -> Result<(), SpawnRefusal> {
        let limits = &self.settings.limits;
        for (what, asked, limit) in [
            ("memory-mb", needs.memory_mb, limits.memory_mb),
            ("cpu-ms", needs.cpu_ms, limits.cpu_ms),
        ] {
            match asked {
                Some(0) => {
                    return Err(SpawnRefusal::InvalidRequest(format!(
                        "{what} must be above 0"
                    )));
                }
                Some(n) if n > limit => {
                    return Err(SpawnRefusal::InvalidRequest(format!(
                        "{what} {n} is more than the run allows each agent (limits.{} = {limit})",
                        what.replace('-', "_")
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn check_depth(&self, depth: u32) -> Result<(), SpawnRefusal> {
        if depth > self.settings.limits.max_depth {
            return Err(SpawnRefusal::MaxDepthExceeded(
                self.settings.limits.max_depth,
            ));
        }
        Ok(())
    }

    /// Check 2, duplicates: the same dedup key, or (with `dedup_descriptions`) the same
    /// normalised description as a task of the run.
    fn check_duplicate(
        &self,
        tree: &TaskTree,
        req: &SpawnRequest,
        norm: &str,
    ) -> Result<(), SpawnRefusal> {
        if let Some(existing) = req.dedup_key.as_ref().and_then(|k| tree.dedup.get(k)) {
            return Err(SpawnRefusal::DuplicateTask(*existing));
        }
        if self.settings.constraints.dedup_descriptions
            && req.dedup_key.is_none()
            && let Some(existing) = tree.descriptions.get(norm)
        {
            return Err(SpawnRefusal::DuplicateTask(*existing));
        }
        Ok(())
    }

    /// A new task's id from the cluster's counter of this run, where its duplicate
    /// checks and task limit are made again against the tasks spawned on every worker
    /// (the tree here knows only those spawned or recorded before it was restored).
    fn claim_shared_id(
        &self,
        pool: &super::shared_budget::SharedPool,
        req: &SpawnRequest,
        norm: &str,
        spawn_key: &str,
    ) -> Result<u64, SpawnRefusal> {
        let description = format!("d:{norm}");
        let mut keys = vec![description.clone()];
        let check = match &req.dedup_key {
            Some(key) => {
                keys.push(format!("k:{key}"));
                vec![format!("k:{key}")]
            }
            None if self.settings.constraints.dedup_descriptions => vec![description],
            None => Vec::new(),
        };
        let max = u64::from(self.settings.limits.max_tasks);
        match pool.claim_task(spawn_key, &check, &keys, max) {
            Ok(TaskClaim::Id(id)) => Ok(id),
            Ok(TaskClaim::Duplicate(of)) => Err(SpawnRefusal::DuplicateTask(of)),
            Ok(TaskClaim::Full) => Err(SpawnRefusal::TooManyTasks(self.settings.limits.max_tasks)),
            Err(e) => Err(SpawnRefusal::ResourceExhausted(e)),
        }
    }

    /// The run's task count stays within `limits.max_tasks` (part of 2).
    fn check_task_count(&self, tree: &TaskTree) -> Result<(), SpawnRefusal> {
        if tree.nodes.len() as u64 >= self.settings.limits.max_tasks as u64 {
            return Err(SpawnRefusal::TooManyTasks(self.settings.limits.max_tasks));
        }
        Ok(())
    }

    /// Check 3, concurrency: over `max_concurrent_tasks` the child is queued, unless it
    /// asked to fail fast.
    fn check_concurrency(&self, req: &SpawnRequest) -> Result<(), SpawnRefusal> {
        let max = self.settings.constraints.max_concurrent_tasks.max(1);
        let full = match self.budget.pool() {
            Some(pool) => req.fail_fast && pool.slots_full(u64::from(max)),
            None => req.fail_fast && self.slots.available_permits() == 0,
        };
        if full {
            return Err(SpawnRefusal::ResourceExhausted(format!(
                "all {} task slots are busy (constraints.max_concurrent_tasks)",
                self.settings.constraints.max_concurrent_tasks
            )));
        }
        Ok(())
    }

    /// Check 4, budget: a requested share must fit what the spawner has left; without one,
    /// the spawner must have something left.
    fn check_budget(&self, parent: u64, req: &SpawnRequest) -> Result<(), SpawnRefusal> {
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
        Ok(())
    }

    /// Check 5, cycles, by embeddings (when `[constraints.embeddings]` is set): a
    /// description too similar to an ancestor's is a loop. The lexical check is
    /// [`lexical_cycle`], made under the tree's lock.
    async fn check_cycles(
        &self,
        req: &SpawnRequest,
        ancestors: &[(u64, String)],
    ) -> Result<(), SpawnRefusal> {
        let c = &self.settings.constraints;
        let Some(cfg) = &c.embeddings else {
            return Ok(());
        };
        if ancestors.is_empty() {
            return Ok(());
        }
        let descriptions: Vec<String> = ancestors.iter().map(|(_, d)| d.clone()).collect();
        let scores = constraints::embedding_similarities(cfg, &req.description, &descriptions)
            .await
            .map_err(|e| SpawnRefusal::InvalidRequest(format!("embeddings endpoint: {e:#}")))?;
        if let Some(((id, _), _)) = ancestors
            .iter()
            .zip(&scores)
            .find(|(_, s)| **s >= c.similarity_threshold)
        {
            return Err(SpawnRefusal::CircularDependency(*id));
        }
        Ok(())
    }
}

/// Check 5, cycles, lexically: the nearest of the spawner and its ancestors whose
/// description is at least `threshold` similar to `description`.
fn lexical_cycle(tree: &TaskTree, parent: u64, description: &str, threshold: f64) -> Option<u64> {
    let features = constraints::Features::of(description);
    let mut cur = Some(parent);
    while let Some(id) = cur {
        let node = &tree.nodes[&id];
        if features.similarity(&constraints::Features::of(&node.description)) >= threshold {
            return Some(id);
        }
        cur = node.parent;
    }
    None
}

/// The spawner and its ancestors, nearest first, with their descriptions.
fn ancestor_chain(tree: &TaskTree, parent: u64) -> Vec<(u64, String)> {
    let mut chain = Vec::new();
    let mut cur = Some(parent);
    while let Some(id) = cur {
        let node = &tree.nodes[&id];
        chain.push((id, node.description.clone()));
        cur = node.parent;
    }
    chain
}
