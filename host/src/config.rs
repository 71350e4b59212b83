//! Host configuration: the TOML file given with `--config`, merged with CLI flags.
//!
//! Every field has a safe default, so an empty file (or none) is a valid config: the
//! built-in mock LLM, no tools granted, no network, conservative limits. Unknown keys
//! are rejected so a typo does not silently fall back to a default.

use crate::providers::ProvidersConfig;
use crate::runtime::limits::Limits;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The whole host configuration.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Per-agent resource limits (`[limits]`).
    #[serde(default)]
    pub limits: Limits,
    /// LLM provider and models (`[llm]`).
    #[serde(default)]
    pub llm: LlmConfig,
    /// Tool grants (`[tools]`).
    #[serde(default)]
    pub tools: ToolsConfig,
    /// Run-wide budget (`[budget]`).
    #[serde(default)]
    pub budget: BudgetConfig,
    /// Agents children may spawn by name: `name = "path/to/agent.wasm"` (`[agents]`).
    #[serde(default)]
    pub agents: BTreeMap<String, PathBuf>,
    /// Spawn rules: concurrency, duplicates, cycles, dependencies, approvals (`[constraints]`).
    #[serde(default)]
    pub constraints: crate::supervisor::constraints::ConstraintsConfig,
    /// Output validators (`[[validators]]`), run on each task's output in order.
    #[serde(default)]
    pub validators: Vec<crate::validation::ValidatorConfig>,
    /// Retries of tasks whose output failed validation (`[retry]`).
    #[serde(default)]
    pub retry: crate::validation::RetryConfig,
    /// How parallel children's work is merged (`[merge]`).
    #[serde(default)]
    pub merge: crate::merge::MergeConfig,
    /// Durability settings (`[durability]`).
    #[serde(default)]
    pub durability: DurabilityConfig,
    /// Where compiled components are cached; default `$XDG_CACHE_HOME/agentflow` or
    /// `~/.cache/agentflow`.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

/// `[llm]`: providers, the model catalog, quotas and the scheduler's settings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// `provider`, `[llm.mock]`, `[llm.openai]`, `[llm.anthropic]`.
    #[serde(flatten)]
    pub providers: ProvidersConfig,
    /// Further provider endpoints by name, e.g. `[llm.endpoints.local.openai]` with
    /// `base_url = ...`; catalog models name them in `provider`.
    #[serde(default)]
    pub endpoints: BTreeMap<String, crate::providers::EndpointConfig>,
    /// The model catalog (`[[llm.models]]`); built in for the mock provider.
    #[serde(default)]
    pub models: Vec<crate::scheduler::catalog::ModelSpec>,
    /// Prices in USD per million tokens, by model name (`[llm.prices.NAME]`), for a
    /// config without `[[llm.models]]`: each priced model joins the catalog on `provider`.
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    /// Quotas per provider name (`[llm.quotas.NAME] tpm = .., rpm = ..`).
    #[serde(default)]
    pub quotas: BTreeMap<String, crate::scheduler::QuotaConfig>,
    /// Scoring weights, breaker, quota window (`[llm.scheduler]`).
    #[serde(default)]
    pub scheduler: crate::scheduler::SchedulerConfig,
    /// Output tokens assumed when a request gives no `max-output-tokens`, for budgets
    /// and quotas (default 1024).
    #[serde(default = "default_max_output")]
    pub default_max_output_tokens: u32,
}

fn default_max_output() -> u32 {
    1024
}

/// A model's price, USD per million tokens.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl Price {
    /// Cost of a call with these token counts.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input_per_mtok + output_tokens as f64 * self.output_per_mtok)
            / 1_000_000.0
    }
}

/// `[tools]`: which built-in tools a run is granted, and their scopes.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsConfig {
    /// Granted tool names (`kv`, `workspace`, `http_fetch`). Nothing is granted by default.
    #[serde(default)]
    pub grant: Vec<String>,
    /// Directory the `workspace` tool may read and write (`--workspace DIR`).
    #[serde(default)]
    pub workspace: Option<PathBuf>,
    /// Hosts `http_fetch` may GET (exact names, or `*.example.com`).
    #[serde(default)]
    pub http_allow_hosts: Vec<String>,
    /// Allow `http_fetch` to reach private, loopback and link-local addresses. Off by default.
    #[serde(default)]
    pub http_allow_private: bool,
    /// Largest body `http_fetch` returns, in bytes (default 1 MiB).
    #[serde(default)]
    pub http_max_bytes: Option<usize>,
}

/// `[durability]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurabilityConfig {
    /// When a resumed task's replay diverges: `fail` (default) or `from-checkpoint`.
    #[serde(default)]
    pub on_divergence: crate::durability::DivergencePolicy,
}

/// `[budget]`: the run's total spending limit.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Total USD a run may spend on LLM calls (reserved before each call). Default 1.00.
    #[serde(default = "default_budget")]
    pub usd: f64,
    /// Total tokens (in + out) a run may use on LLM calls, reserved like the cost.
    /// Default: no token limit.
    #[serde(default)]
    pub tokens: Option<u64>,
}

fn default_budget() -> f64 {
    1.0
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            usd: default_budget(),
            tokens: None,
        }
    }
}

impl HostConfig {
    /// Read a config file; errors name the file and the offending key.
    pub fn from_file(path: &Path) -> anyhow::Result<HostConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        Self::from_toml(&text)
            .map_err(|e| anyhow::anyhow!("invalid config {}: {e}", path.display()))
    }

    /// The config file at `path` (`--config`), or the defaults without one.
    pub fn from_file_or_default(path: Option<&Path>) -> anyhow::Result<HostConfig> {
        match path {
            Some(path) => Self::from_file(path),
            None => Ok(HostConfig::default()),
        }
    }

    /// Parse a config from TOML text.
    pub fn from_toml(text: &str) -> anyhow::Result<HostConfig> {
        let config: HostConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reject values that cannot work, with the key to fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.limits.validate()?;
        for v in &self.validators {
            v.validate()?;
        }
        if !(self.budget.usd.is_finite() && self.budget.usd >= 0.0) {
            anyhow::bail!("[budget] usd must be a non-negative number");
        }
        Ok(())
    }

    /// Directory of the compiled-component cache.
    pub fn cache_dir(&self) -> PathBuf {
        if let Some(dir) = &self.cache_dir {
            return dir.clone();
        }
        if let Ok(dir) = std::env::var("AGENTFLOW_CACHE_DIR") {
            return PathBuf::from(dir);
        }
        if let Ok(dir) = std::env::var("XDG_CACHE_HOME") {
            return PathBuf::from(dir).join("agentflow");
        }
        if let Ok(home) = std::env::var("HOME") {
            return PathBuf::from(home).join(".cache").join("agentflow");
        }
        std::env::temp_dir().join("agentflow-cache")
    }
}
