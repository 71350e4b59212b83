//! The `[observe]` section: what the host does to let operators judge its runs beyond
//! recording them — `evaluate = "judge"`, an asynchronous quality evaluation of every
//! task's output after the task ended ([`crate::attempts::evaluate`]), and
//! `otlp_endpoint`, exporting runs as OpenTelemetry traces and metrics
//! ([`crate::runs::telemetry`]).
//!
//! ```toml
//! [observe]
//! evaluate = "judge"          # score each completed task's output in the background
//! evaluate_model = "mock-large"  # default: the best catalog model other than the producer's
//! evaluate_rubric = "Is the answer correct and complete?"
//! evaluate_threshold = 7.0    # a score under it is recorded as a failed verdict
//! evaluate_wait_ms = 30000    # how long a closing host waits for evaluations still running
//! otlp_endpoint = "http://collector:4318"  # default: $OTEL_EXPORTER_OTLP_ENDPOINT
//! service_name = "agentflow"  # default: $OTEL_SERVICE_NAME, else agentflow
//! metrics_interval_s = 60     # a long-lived host's metric exports
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
    /// OTLP/HTTP base URL (`http://collector:4318`): spans go to `/v1/traces`, metrics
    /// to `/v1/metrics`. Without it, `OTEL_EXPORTER_OTLP_ENDPOINT`; without both,
    /// nothing is exported. Machine-local: not recorded with a run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// The exported `service.name`; default `OTEL_SERVICE_NAME`, else `agentflow`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// Seconds between metric exports of a long-lived host (default 60); metrics are
    /// also exported when the host closes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_interval_s: Option<u64>,
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
            otlp_endpoint: None,
            service_name: None,
            metrics_interval_s: None,
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
        if let Some(e) = &self.otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            anyhow::bail!("[observe] otlp_endpoint must be an http:// or https:// URL, not `{e}`");
        }
        if self.metrics_interval_s == Some(0) {
            anyhow::bail!("[observe] metrics_interval_s must be at least 1");
        }
        Ok(())
    }

    /// The OTLP base URL: `otlp_endpoint`, else `OTEL_EXPORTER_OTLP_ENDPOINT`; `None`
    /// when neither is set (or set empty).
    pub fn endpoint(&self) -> Option<String> {
        self.otlp_endpoint
            .clone()
            .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .filter(|e| !e.is_empty())
    }

    /// The `service.name` of what is exported.
    pub fn service(&self) -> String {
        self.service_name
            .clone()
            .or_else(|| std::env::var("OTEL_SERVICE_NAME").ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "agentflow".into())
    }
}
