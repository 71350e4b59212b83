//! The model catalog: every model the scheduler may route to, with its provider,
//! price, context window, capabilities, quality prior, expected latency and quotas.
//!
//! Comes from `[[llm.models]]` in the config. Without it, the catalog is built in:
//! three mock models (so everything works offline), or — for a config that only names
//! a provider, a default model and prices — one entry per priced model on that provider.

use crate::providers::{EndpointConfig, Price, ProvidersConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `[llm]`: providers, the model catalog, quotas and the scheduler's settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// `provider`, `[llm.mock]`, `[llm.openai]`, `[llm.anthropic]`.
    #[serde(flatten)]
    pub providers: ProvidersConfig,
    /// Further provider endpoints by name, e.g. `[llm.endpoints.local.openai]` with
    /// `base_url = ...`; catalog models name them in `provider`.
    #[serde(default)]
    pub endpoints: BTreeMap<String, EndpointConfig>,
    /// The model catalog (`[[llm.models]]`); built in for the mock provider.
    #[serde(default)]
    pub models: Vec<ModelSpec>,
    /// Prices in USD per million tokens, by model name (`[llm.prices.NAME]`), for a
    /// config without `[[llm.models]]`: each priced model joins the catalog on `provider`.
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    /// Quotas per provider name (`[llm.quotas.NAME] tpm = .., rpm = ..`).
    #[serde(default)]
    pub quotas: BTreeMap<String, super::QuotaConfig>,
    /// Scoring weights, breaker, quota window (`[llm.scheduler]`).
    #[serde(default)]
    pub scheduler: super::SchedulerConfig,
    /// Output tokens assumed when a request gives no `max-output-tokens`, for budgets
    /// and quotas (default 1024).
    #[serde(default = "default_max_output")]
    pub default_max_output_tokens: u32,
}

fn default_max_output() -> u32 {
    1024
}

/// The settings of a config without `[llm]` (or with none at all): as an empty `[llm]`
/// table parses. A derived `Default` gave `default_max_output_tokens = 0`, so a request
/// without `max-output-tokens` reserved no output tokens against budgets and quotas.
impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            providers: ProvidersConfig::default(),
            endpoints: BTreeMap::new(),
            models: Vec::new(),
            prices: BTreeMap::new(),
            quotas: BTreeMap::new(),
            scheduler: super::SchedulerConfig::default(),
            default_max_output_tokens: default_max_output(),
        }
    }
}

impl LlmConfig {
    /// The same settings with every mock rules file read into its inline rules
    /// ([`crate::providers::mock::MockConfig::inlined`]).
    pub fn inlined(&self) -> anyhow::Result<LlmConfig> {
        let mut config = self.clone();
        config.providers.mock = config.providers.mock.inlined()?;
        for endpoint in config.endpoints.values_mut() {
            if let EndpointConfig::Mock(mock) = endpoint {
                *mock = mock.inlined()?;
            }
        }
        Ok(config)
    }
}

/// One `[[llm.models]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Name guests pin and the ledger shows.
    pub name: String,
    /// Provider: `mock`, `openai`, `anthropic`, or an endpoint named under `[llm.endpoints]`.
    pub provider: String,
    /// Model id sent to the provider (default: `name`).
    #[serde(default)]
    pub model_id: Option<String>,
    /// Version the operator expects; a different version reported by the provider is recorded.
    #[serde(default)]
    pub version: Option<String>,
    /// USD per million input tokens.
    pub input_per_mtok: f64,
    /// USD per million output tokens.
    pub output_per_mtok: f64,
    /// Context window in tokens (default 128 000).
    #[serde(default = "default_context")]
    pub context_window: u32,
    /// Capabilities such as `function-calling`, `vision`, `json-mode`.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Quality prior in 0..1 (default 0.5), blended with validator scores from the performance DB.
    #[serde(default = "default_quality")]
    pub quality: f64,
    /// Expected latency in ms (default 1000), replaced by observed percentiles once known.
    #[serde(default = "default_latency")]
    pub expected_latency_ms: u64,
    /// Tokens per minute this model may use (none = unlimited).
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Requests per minute this model may take (none = unlimited).
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Input tokens per minute, where the provider limits them apart (none = unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub itpm: Option<u64>,
    /// Output tokens per minute, where the provider limits them apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otpm: Option<u64>,
}

fn default_context() -> u32 {
    128_000
}
fn default_quality() -> f64 {
    0.5
}
fn default_latency() -> u64 {
    1000
}

impl ModelSpec {
    /// Whether the model has a token or request quota of its own.
    pub fn has_quota(&self) -> bool {
        self.tpm.is_some() || self.rpm.is_some() || self.itpm.is_some() || self.otpm.is_some()
    }

    /// The price of this model.
    pub fn price(&self) -> Price {
        Price {
            input_per_mtok: self.input_per_mtok,
            output_per_mtok: self.output_per_mtok,
        }
    }

    /// The id sent to the provider.
    pub fn provider_model_id(&self) -> &str {
        self.model_id.as_deref().unwrap_or(&self.name)
    }

    /// Whether the model has every capability in `needed`.
    pub fn has_capabilities(&self, needed: &[String]) -> bool {
        needed
            .iter()
            .all(|c| self.capabilities.iter().any(|m| m.eq_ignore_ascii_case(c)))
    }

    fn mock(
        name: &str,
        price: (f64, f64),
        context: u32,
        caps: &[&str],
        quality: f64,
        latency: u64,
    ) -> ModelSpec {
        ModelSpec {
            name: name.into(),
            provider: "mock".into(),
            model_id: None,
            version: Some("1".into()),
            input_per_mtok: price.0,
            output_per_mtok: price.1,
            context_window: context,
            capabilities: caps.iter().map(|s| s.to_string()).collect(),
            quality,
            expected_latency_ms: latency,
            tpm: None,
            rpm: None,
            itpm: None,
            otpm: None,
        }
    }
}

/// The built-in mock catalog: a cheap model, a strong one and a fast one.
pub fn builtin_mock_models() -> Vec<ModelSpec> {
    vec![
        ModelSpec::mock(
            "mock-small",
            (0.5, 1.5),
            128_000,
            &["function-calling"],
            0.6,
            400,
        ),
        ModelSpec::mock(
            "mock-large",
            (5.0, 15.0),
            200_000,
            &["function-calling", "vision"],
            0.9,
            1500,
        ),
        ModelSpec::mock("mock-fast", (1.0, 3.0), 32_000, &[], 0.5, 150),
    ]
}

/// The catalog for a config: `[[llm.models]]`, else derived from the provider and prices.
pub fn catalog(llm: &LlmConfig) -> Vec<ModelSpec> {
    if !llm.models.is_empty() {
        return llm.models.clone();
    }
    let provider = llm
        .providers
        .provider
        .clone()
        .unwrap_or_else(|| "mock".into());
    let mut models = if provider == "mock" {
        builtin_mock_models()
    } else {
        Vec::new()
    };
    for (name, price) in &llm.prices {
        if let Some(m) = models.iter_mut().find(|m| &m.name == name) {
            m.input_per_mtok = price.input_per_mtok;
            m.output_per_mtok = price.output_per_mtok;
            continue;
        }
        models.push(ModelSpec {
            name: name.clone(),
            provider: provider.clone(),
            model_id: None,
            version: None,
            input_per_mtok: price.input_per_mtok,
            output_per_mtok: price.output_per_mtok,
            context_window: default_context(),
            capabilities: vec!["function-calling".into()],
            quality: default_quality(),
            expected_latency_ms: default_latency(),
            tpm: None,
            rpm: None,
            itpm: None,
            otpm: None,
        });
    }
    models
}

#[cfg(test)]
mod tests {
    use super::LlmConfig;

    /// No `[llm]` at all and an empty `[llm]` table mean the same settings.
    #[test]
    fn the_default_llm_settings_are_those_of_an_empty_llm_table() {
        let parsed: LlmConfig = toml::from_str("").unwrap();
        let default = LlmConfig::default();
        assert_eq!(default.default_max_output_tokens, 1024);
        assert_eq!(
            serde_json::to_value(&default).unwrap(),
            serde_json::to_value(&parsed).unwrap()
        );
    }
}
