//! What a run stores about its configuration — enough to resume it from the ledger —
//! and the hash of what decides its behaviour, which a resume must match.

use crate::{attempts, checks, ledger, merge, replay, scheduler, supervisor, tools};
use serde::Serialize;
use std::path::PathBuf;

/// What a run stores about its configuration, enough to resume it from the ledger.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub(crate) struct StoredRunConfig {
    pub(crate) limits: supervisor::limits::Limits,
    pub(crate) budget_usd: f64,
    pub(crate) tools: tools::ToolsConfig,
    pub(crate) agents: std::collections::BTreeMap<String, PathBuf>,
    pub(crate) on_divergence: replay::DivergencePolicy,
    pub(crate) catalog: Vec<scheduler::catalog::ModelSpec>,
    /// A fork's model: every live LLM call is pinned to it.
    #[serde(default)]
    pub(crate) model_override: Option<String>,
    /// The spawn rules.
    #[serde(default)]
    pub(crate) constraints: supervisor::constraints::ConstraintsConfig,
    /// Run-wide token limit.
    #[serde(default)]
    pub(crate) budget_tokens: Option<u64>,
    /// Output validators.
    #[serde(default, deserialize_with = "checks::stored_validators")]
    pub(crate) validators: Vec<checks::ValidatorConfig>,
    /// Retries after validation failures.
    #[serde(default)]
    pub(crate) retry: attempts::RetryConfig,
    /// How parallel work is merged (`[merge]`).
    #[serde(default)]
    pub(crate) merge: merge::MergeConfig,
    /// The host configuration the run was started with ([`super::recorded`]); absent
    /// in runs of hosts that did not record it.
    #[serde(default)]
    pub(crate) host: Option<serde_json::Value>,
    /// The builds of the installed tool components the run was granted, pinned when it
    /// started: its resume, forks and recovery run these, whatever is installed then.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub(crate) tool_builds:
        std::collections::BTreeMap<String, crate::tool_components::registry::PinnedTool>,
}

/// Hash of what decides a run's behaviour: the component, the input, the limits and
/// grants, the registered agents and the model catalog.
pub(crate) fn context_hash(component_hash: &str, input: &str, config: &StoredRunConfig) -> String {
    let catalog: Vec<_> = config
        .catalog
        .iter()
        .map(|m| serde_json::json!([m.name, m.provider, m.provider_model_id()]))
        .collect();
    let behaviour = serde_json::json!({
        "limits": config.limits,
        "tools": config.tools,
        "agents": config.agents,
        "catalog": catalog,
        "model_override": config.model_override,
        "constraints": config.constraints,
    });
    ledger::blobs::sha256_hex(format!("{component_hash}\n{input}\n{behaviour}").as_bytes())
}

impl StoredRunConfig {
    /// The supervisor's settings for a run with this config and context hash.
    pub(crate) fn settings(
        &self,
        context_hash: String,
        host: &crate::config::HostConfig,
    ) -> supervisor::RunSettings {
        supervisor::RunSettings {
            limits: self.limits.clone(),
            budget_usd: self.budget_usd,
            budget_tokens: self.budget_tokens,
            agents: self.agents.clone(),
            context_hash,
            divergence: self.on_divergence,
            model_override: self.model_override.clone(),
            constraints: self.constraints.clone(),
            validators: self.validators.clone(),
            default_max_output_tokens: host.llm.default_max_output_tokens,
        }
    }
}
