//! Sub-agents. Each child runs concurrently in its own sandbox under the run's
//! limits (maximum depth, maximum tasks, total budget).
//!
//! ```ignore
//! let ids = questions.iter()
//!     .map(|q| Spawn::new(q, q).spawn())
//!     .collect::<Result<Vec<_>, _>>()?;
//! for outcome in tasks::wait_all(&ids) {
//!     let answer = outcome.into_result()?;
//! }
//! ```

use crate::Error;
use crate::wit::agentflow::agent::tasks as raw;

/// Why a spawn was refused (re-exported from the interface).
pub use raw::SpawnError;

/// Identifier of a task inside the run (the root task is 1).
pub type TaskId = u64;

/// How a child task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It returned this output.
    Completed(String),
    /// It failed with this message.
    Failed(String),
    /// It was cancelled.
    Cancelled,
    /// The id does not name a task this caller spawned.
    UnknownTask,
}

impl Outcome {
    /// Whether the task completed.
    pub fn is_completed(&self) -> bool {
        matches!(self, Outcome::Completed(_))
    }

    /// The output of a completed task; an [`Error::Other`] describing any other outcome.
    pub fn into_result(self) -> Result<String, Error> {
        match self {
            Outcome::Completed(s) => Ok(s),
            Outcome::Failed(m) => Err(Error::Other(format!("task failed: {m}"))),
            Outcome::Cancelled => Err(Error::Other("task cancelled".into())),
            Outcome::UnknownTask => Err(Error::Other("unknown task".into())),
        }
    }
}

impl From<raw::Outcome> for Outcome {
    fn from(o: raw::Outcome) -> Self {
        match o {
            raw::Outcome::Completed(s) => Outcome::Completed(s),
            raw::Outcome::Failed(s) => Outcome::Failed(s),
            raw::Outcome::Cancelled => Outcome::Cancelled,
            raw::Outcome::UnknownTask => Outcome::UnknownTask,
        }
    }
}

/// A child task to start; build it with the chained methods and [`spawn`](Spawn::spawn) it.
#[derive(Debug, Clone)]
pub struct Spawn {
    description: String,
    input: String,
    agent: Option<String>,
    dedup_key: Option<String>,
    budget_usd: Option<f64>,
    depends_on: Vec<raw::Dependency>,
    resources: Vec<String>,
    sequence: Option<String>,
    fail_fast: bool,
    timeout_ms: Option<u32>,
    estimated_cost_usd: Option<f64>,
    tools: Vec<String>,
    validators: Vec<String>,
    memory_mb: Option<u32>,
    cpu_ms: Option<u32>,
    reasoning: Option<String>,
}

impl Spawn {
    /// A child running this same component on `input`; `description` says what it is
    /// for, in a sentence (shown by `agentflow inspect`).
    pub fn new(description: impl Into<String>, input: impl Into<String>) -> Self {
        Spawn {
            description: description.into(),
            input: input.into(),
            agent: None,
            dedup_key: None,
            budget_usd: None,
            depends_on: Vec::new(),
            resources: Vec::new(),
            sequence: None,
            fail_fast: false,
            timeout_ms: None,
            estimated_cost_usd: None,
            tools: Vec::new(),
            validators: Vec::new(),
            memory_mb: None,
            cpu_ms: None,
            reasoning: None,
        }
    }

    /// Never runs at the same time as task `id` (MutualExclusion).
    pub fn exclusive_with(mut self, id: TaskId) -> Self {
        self.depends_on.push(raw::Dependency::ExclusiveWith(id));
        self
    }

    /// Uses `resource`: children sharing a resource never run at the same time
    /// (ConflictingResources).
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resources.push(resource.into());
        self
    }

    /// Runs after the caller's earlier children of the same sequence, in spawn order
    /// (RequiredSequence).
    pub fn sequence(mut self, name: impl Into<String>) -> Self {
        self.sequence = Some(name.into());
        self
    }

    /// Fails with [`SpawnError::ResourceExhausted`] instead of queueing when the run is
    /// at its concurrency limit.
    pub fn fail_fast(mut self) -> Self {
        self.fail_fast = true;
        self
    }

    /// Wall-clock limit for the child, in milliseconds.
    pub fn timeout_ms(mut self, ms: u32) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    /// The child's memory limit in MiB (at most the run's `limits.memory_mb`, or the
    /// spawn is refused).
    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.memory_mb = Some(mb);
        self
    }

    /// The child's CPU time limit in ms (at most the run's `limits.cpu_ms`, or the
    /// spawn is refused).
    pub fn cpu_ms(mut self, ms: u32) -> Self {
        self.cpu_ms = Some(ms);
        self
    }

    /// What the child is expected to cost, for approval rules.
    pub fn estimated_cost(mut self, usd: f64) -> Self {
        self.estimated_cost_usd = Some(usd);
        self
    }

    /// A tool the child means to use, for approval rules.
    pub fn tool(mut self, name: impl Into<String>) -> Self {
        self.tools.push(name.into());
        self
    }

    /// A validator for the child's output, as the JSON of a `[[validators]]` entry
    /// (e.g. `{"kind": "length", "min_chars": 10}`); applied in addition to the
    /// configured validators. A bad one makes the spawn fail with
    /// [`SpawnError::InvalidRequest`].
    pub fn validator(mut self, config_json: impl Into<String>) -> Self {
        self.validators.push(config_json.into());
        self
    }

    /// Why the work is split off into this child instead of done by the caller (its
    /// decomposition reasoning): recorded with the spawn, shown by `agentflow inspect`.
    pub fn reasoning(mut self, why: impl Into<String>) -> Self {
        self.reasoning = Some(why.into());
        self
    }

    /// Runs the agent registered under `name` in the host configuration instead of
    /// this component.
    pub fn agent(mut self, name: impl Into<String>) -> Self {
        self.agent = Some(name.into());
        self
    }

    /// Tasks of the same run with the same key are the same task: a second spawn
    /// fails with [`SpawnError::DuplicateTask`] naming the existing one.
    pub fn dedup_key(mut self, key: impl Into<String>) -> Self {
        self.dedup_key = Some(key.into());
        self
    }

    /// Sets aside this much of the caller's budget for the child, in USD.
    pub fn budget_usd(mut self, usd: f64) -> Self {
        self.budget_usd = Some(usd);
        self
    }

    /// Starts only after task `id` has completed.
    pub fn after(mut self, id: TaskId) -> Self {
        self.depends_on.push(raw::Dependency::After(id));
        self
    }

    /// Starts after task `id` has completed, with its output appended to the input.
    pub fn data_from(mut self, id: TaskId) -> Self {
        self.depends_on.push(raw::Dependency::DataFrom(id));
        self
    }

    /// Starts the child; it runs concurrently until [`wait`]ed for.
    pub fn spawn(&self) -> Result<TaskId, Error> {
        let req = raw::SpawnRequest {
            description: self.description.clone(),
            agent: match &self.agent {
                None => raw::AgentRef::Same,
                Some(name) => raw::AgentRef::Named(name.clone()),
            },
            input: self.input.clone(),
            dedup_key: self.dedup_key.clone(),
            budget_usd: self.budget_usd,
            depends_on: self.depends_on.clone(),
            resources: self.resources.clone(),
            sequence: self.sequence.clone(),
            fail_fast: self.fail_fast,
            timeout_ms: self.timeout_ms,
            estimated_cost_usd: self.estimated_cost_usd,
            tools: self.tools.clone(),
            validators: self.validators.clone(),
            memory_mb: self.memory_mb,
            cpu_ms: self.cpu_ms,
            decomposition_reasoning: self.reasoning.clone(),
        };
        Ok(raw::spawn(&req)?)
    }
}

/// Waits for a child to finish.
pub fn wait(id: TaskId) -> Outcome {
    raw::wait(id).into()
}

/// Waits for each child in turn (they run concurrently meanwhile); outcomes are in
/// the order of `ids`.
pub fn wait_all(ids: &[TaskId]) -> Vec<Outcome> {
    ids.iter().map(|&id| wait(id)).collect()
}

/// A critical conflict a partial join left for a human (re-exported from the interface).
pub use raw::PendingMerge;

/// Waits for a child like [`wait`], but a critical conflict in its workspace changes
/// does not block the join: everything else is merged now, and the critical files —
/// still at this task's version — are returned pending. Take each with [`take_merge`]
/// when the work needs it; any not taken is applied when this task finishes, before
/// its output counts.
///
/// ```ignore
/// let (outcome, pending) = tasks::wait_partial(child);
/// // … go on with everything that does not touch the pending files …
/// for p in pending {
///     let decided = tasks::take_merge(p.id)?; // waits for the human's decision
/// }
/// ```
pub fn wait_partial(id: TaskId) -> (Outcome, Vec<PendingMerge>) {
    let joined = raw::wait_partial(id);
    (joined.outcome.into(), joined.pending)
}

/// Waits until a human has decided pending conflict `id` (from [`wait_partial`]) and
/// applies the decision to this task's workspace; returns the decided text.
pub fn take_merge(id: u64) -> Result<String, Error> {
    raw::take_merge(id).map_err(Error::Other)
}

/// Cancels a child and its descendants; `false` if it had already finished.
pub fn cancel(id: TaskId) -> bool {
    raw::cancel(id)
}

/// How proposals were merged (re-exported from the interface).
pub use raw::{MergeCategory, MergeResult};

/// Merges the outputs of completed children `ids`, each a proposed revision of `base`,
/// by three-way diff: non-overlapping edits merge automatically, overlapping ones go to
/// the host's merge model, critical ones to a human (the call waits for the decision).
///
/// ```ignore
/// let ids = [a, b, c];
/// tasks::wait_all(&ids);
/// let merged = tasks::merge(&draft, &ids)?;
/// ```
pub fn merge(base: &str, ids: &[TaskId]) -> Result<MergeResult, Error> {
    raw::merge(base, ids).map_err(Error::Other)
}
