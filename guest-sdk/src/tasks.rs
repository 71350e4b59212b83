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
        }
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

/// Cancels a child and its descendants; `false` if it had already finished.
pub fn cancel(id: TaskId) -> bool {
    raw::cancel(id)
}
