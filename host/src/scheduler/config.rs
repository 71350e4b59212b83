//! `[llm.scheduler]` and `[llm.quotas.NAME]`: the scheduler's scoring weights, breaker,
//! quota window and per-provider quotas.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Scoring weights for one priority.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    pub cost: f64,
    pub quality: f64,
    pub latency: f64,
}

/// Per-provider quota (`[llm.quotas.NAME]`).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    pub tpm: Option<u64>,
    pub rpm: Option<u64>,
    /// Input tokens per minute, where the provider limits them apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub itpm: Option<u64>,
    /// Output tokens per minute, where the provider limits them apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otpm: Option<u64>,
}

/// `[llm.scheduler]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Weights by priority name (`balanced`, `cost`, `quality`, `latency`).
    pub weights: BTreeMap<String, Weights>,
    /// Consecutive failures that open a model's circuit breaker (default 3).
    pub breaker_failures: u32,
    /// How long an open breaker stays open before a half-open probe, ms (default 30 000).
    pub breaker_cooldown_ms: u64,
    /// Length of the quota window, ms (default 60 000: tokens *per minute*).
    pub quota_window_ms: u64,
    /// Latency/error samples kept per model (default 100).
    pub health_window: usize,
    /// Calls of a model × task type needed before history replaces the prompt estimate (default 3).
    pub min_history: u64,
    /// Models tried per call: the choice plus fallbacks (default 2).
    pub max_attempts: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        let mut weights = BTreeMap::new();
        let w = |cost, quality, latency| Weights {
            cost,
            quality,
            latency,
        };
        weights.insert("balanced".into(), w(0.4, 0.3, 0.3));
        weights.insert("cost".into(), w(0.6, 0.2, 0.2));
        weights.insert("quality".into(), w(0.1, 0.7, 0.2));
        weights.insert("latency".into(), w(0.2, 0.1, 0.7));
        SchedulerConfig {
            weights,
            breaker_failures: 3,
            breaker_cooldown_ms: 30_000,
            quota_window_ms: 60_000,
            health_window: 100,
            min_history: 3,
            max_attempts: 2,
        }
    }
}
