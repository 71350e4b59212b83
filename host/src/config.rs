//! Host configuration: the TOML file given with `--config`, merged with CLI flags.
//!
//! Every field has a safe default, so an empty file (or none) is a valid config: the
//! built-in mock LLM, no tools granted, no network, conservative limits. Unknown keys
//! are rejected so a typo does not silently fall back to a default.
//!
//! Each section's type lives in the module it configures (`[llm]` in
//! [`crate::scheduler::catalog`], `[tools]` in [`crate::tools`], `[limits]` in
//! [`crate::supervisor::limits`], …); this module only assembles them. A section that
//! configures no single module below it lives beside this file (`[observe]`, [`observe`]).

pub mod observe;

pub use crate::durability::DurabilityConfig;
pub use crate::ledger::{LedgerConfig, SyncMode};
pub use crate::providers::Price;
pub use crate::scheduler::catalog::LlmConfig;
pub use crate::supervisor::budget::BudgetConfig;
pub use crate::supervisor::limits::Limits;
pub use crate::tools::ToolsConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The whole host configuration.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
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
    pub validators: Vec<crate::checks::ValidatorConfig>,
    /// Retries of tasks whose output failed validation (`[retry]`).
    #[serde(default)]
    pub retry: crate::attempts::RetryConfig,
    /// How parallel children's work is merged (`[merge]`).
    #[serde(default)]
    pub merge: crate::merge::MergeConfig,
    /// Durability settings (`[durability]`).
    #[serde(default)]
    pub durability: DurabilityConfig,
    /// How the ledger file is written: `sync = "full" | "normal"` (`[ledger]`).
    #[serde(default)]
    pub ledger: LedgerConfig,
    /// The wasmtime instance pool (`[runtime]`).
    #[serde(default)]
    pub runtime: crate::runtime::RuntimeConfig,
    /// Operators' view of runs beyond the ledger: background quality evaluation
    /// (`[observe]`).
    #[serde(default)]
    pub observe: observe::ObserveConfig,
    /// Where compiled components are cached; default `$XDG_CACHE_HOME/agentflow` or
    /// `~/.cache/agentflow`.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
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
        self.runtime.validate()?;
        self.constraints.approval.validate()?;
        self.observe.validate()?;
        self.tools.validate()?;
        if let Some(provider) = &self.llm.providers.provider {
            crate::providers::check_name(provider, &self.llm.endpoints)
                .map_err(|e| anyhow::anyhow!("[llm] provider: {e}"))?;
        }
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
