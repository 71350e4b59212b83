//! What a run stores about its configuration — enough to resume it from the ledger —
//! and the hash of what decides its behaviour, which a resume must match.

use crate::ledger::query::StoredEvent;
use crate::runtime::LoadedAgent;
use crate::{Host, durability};
use crate::{attempts, checks, ledger, merge, replay, scheduler, supervisor, tools};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

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

/// Run `run_id`'s stored configuration, with `catalog` (this host's model catalog) in
/// place of the recorded one, and the context hash it was stored with.
pub(crate) fn stored_config(
    reader: &ledger::Connection,
    run_id: &str,
    catalog: &[scheduler::catalog::ModelSpec],
) -> anyhow::Result<(StoredRunConfig, String)> {
    let (config_json, hash) = ledger::query::run_config(reader, run_id)?
        .ok_or_else(|| anyhow::anyhow!("run {run_id} has no stored config"))?;
    let mut stored: StoredRunConfig = serde_json::from_str(&config_json)
        .map_err(|e| anyhow::anyhow!("run {run_id} was recorded by an incompatible host: {e}"))?;
    stored.catalog = catalog.to_vec();
    Ok((stored, hash))
}

/// The text of blob `hash` (empty when the ledger has none).
pub(crate) fn blob_text(reader: &ledger::Connection, hash: &str) -> anyhow::Result<String> {
    let bytes = ledger::query::blob(reader, hash)?.unwrap_or_default();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Every event of run `run_id` a resume reads, with the payloads replay needs.
pub(crate) fn replayed_events(
    reader: &ledger::Connection,
    run_id: &str,
) -> anyhow::Result<Vec<StoredEvent>> {
    Ok(ledger::query::stored_events(reader, run_id, |kind| {
        replay::Replay::reads_payloads_of(kind) || *kind == ledger::EventKind::TaskReopened
    })?)
}

/// Charge what `events` spent to the run's budget (only the events that spent).
pub(crate) fn charge_recorded<'a>(
    budget: &supervisor::budget::Budget,
    events: impl IntoIterator<Item = &'a StoredEvent>,
) {
    for e in events {
        let tokens = (e.tokens_in + e.tokens_out) as u64;
        if e.cost_usd != 0.0 || tokens != 0 {
            budget.charge(e.task_id, e.cost_usd, tokens);
        }
    }
}

/// How a task replays its record `events` (one task's, in order): the attempts a
/// re-run superseded dropped, the first attempt replayed, the later ones after it.
pub(crate) fn replay_start(
    events: Vec<StoredEvent>,
    reader: &ledger::Connection,
    ledger: &ledger::Ledger,
) -> anyhow::Result<supervisor::ReplayStart> {
    let events = durability::reopen::without_superseded(events);
    let mut attempts = replay::Replay::attempts_stored(events, reader, ledger)?;
    let (replay, nondet, _) = attempts.remove(0);
    Ok(supervisor::ReplayStart {
        replay,
        nondet,
        later: attempts,
    })
}

impl Host {
    /// Load component `hash` of run `run_id` (agent `name`) from the ledger's blobs.
    pub(crate) fn stored_component(
        &self,
        reader: &ledger::Connection,
        run_id: &str,
        hash: &str,
        name: &str,
    ) -> anyhow::Result<Arc<LoadedAgent>> {
        let bytes = ledger::query::blob(reader, hash)?.ok_or_else(|| {
            anyhow::anyhow!("component {hash} of run {run_id} is missing from the ledger")
        })?;
        self.runtime.load_bytes(name, &bytes)
    }
}
