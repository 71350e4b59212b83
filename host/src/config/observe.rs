//! The `[observe]` section: what the host does to let operators judge its runs beyond
//! recording them — `evaluate = "judge"`, an asynchronous quality evaluation of every
//! task's output after the task ended ([`crate::attempts::evaluate`]).
//!
//! ```toml
//! [observe]
//! evaluate = "judge"          # score each completed task's output in the background
//! evaluate_model = "mock-large"  # default: the best catalog model other than the producer's
//! evaluate_rubric = "Is the answer correct and complete?"
//! evaluate_threshold = 7.0    # a score under it is recorded as a failed verdict
//! evaluate_wait_ms = 30000    # how long a closing host waits for evaluations still running
//! ```
//!
//! Host-own: a run does not record it for resume comparisons (see
//! [`crate::runs::recorded`]); evaluating or not changes no task's outcome.

use serde::{Deserialize, Serialize};

/// How a completed task's output is evaluated after the task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Evaluate {
    /// Not at all (the default).
    None,
    /// By an LLM judge, in the background.
    Judge,
}

/// `[observe]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObserveConfig {
    /// `"judge"` to score every completed task's output in the background.
    pub evaluate: Evaluate,
    /// The judge's catalog model; default: the highest-quality catalog model other
    /// than the one that produced the output.
    pub evaluate_model: Option<String>,
    /// What the judge checks; default [`DEFAULT_RUBRIC`].
    pub evaluate_rubric: Option<String>,
    /// Score (0–10) at or above which the verdict is `pass`; default 7.
    pub evaluate_threshold: Option<f64>,
    /// How long closing the host (the CLI's exit) waits for evaluations still running;
    /// those still running then are abandoned (logged). Default 30 s.
    pub evaluate_wait_ms: u64,
}

/// The judge's criteria when `evaluate_rubric` is not set.
pub const DEFAULT_RUBRIC: &str = "Does the output do what the task asked, correctly and completely? Penalise errors, \
     omissions and claims the output does not support.";

impl Default for ObserveConfig {
    fn default() -> Self {
        ObserveConfig {
            evaluate: Evaluate::None,
            evaluate_model: None,
            evaluate_rubric: None,
            evaluate_threshold: None,
            evaluate_wait_ms: 30_000,
        }
    }
}

impl ObserveConfig {
    /// Reject values that cannot work.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(t) = self.evaluate_threshold
            && !(0.0..=10.0).contains(&t)
        {
            anyhow::bail!("[observe] evaluate_threshold must be between 0 and 10");
        }
        Ok(())
    }
}
