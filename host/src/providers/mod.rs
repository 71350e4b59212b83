//! LLM providers behind one trait: `mock` (deterministic, offline, the default),
//! `openai` (any OpenAI-compatible chat-completions endpoint) and `anthropic`
//! (Messages API).
//!
//! This module knows nothing about wasmtime, the ledger or budgets: it turns a
//! [`ChatRequest`] into a [`ChatResponse`] or a typed [`ProviderError`], with bounded
//! retries for 429, 5xx (honouring `retry-after` / `retry-after-ms`), timeouts and
//! 2xx answers it cannot understand, and reports every failed attempt in a
//! [`Completion`]. Choosing the model, reserving budget and recording the call (and
//! its failed attempts) is the `llm` capability's job.

pub mod anthropic;
pub mod mock;
pub mod openai;
mod retry;

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use retry::RetryPolicy;

/// A model's price, USD per million tokens.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
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

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    /// For [`Role::Tool`] messages: the id of the tool call this message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// A function the model may ask to call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolDef {
    pub name: String,
    pub description: String,
    /// JSON schema of the arguments, as text.
    pub parameters_schema: String,
}

/// A request as sent to one provider: the model is already chosen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    /// f64, so a retry's configured temperature is sent and recorded as written; a
    /// guest's f32 widens to the value it always recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
}

/// A tool call the model asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON-encoded arguments.
    pub arguments: String,
}

/// Why the model stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    Other,
}

/// A provider's answer. Cost is computed by the caller from the price table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    /// The model that answered, as the provider reports it.
    pub model: String,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub finish_reason: FinishReason,
}

/// Typed provider failures, after the provider's own bounded retries.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum ProviderError {
    /// Still 429 after the retries; how long the provider last asked to wait.
    #[error("rate limited by the provider (retry after {retry_after_ms} ms)")]
    RateLimited { retry_after_ms: u64 },
    /// 5xx or a connection failure after the retries.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// No answer within the timeout, after the retries.
    #[error("provider timed out")]
    Timeout,
    /// 4xx other than 429 (bad request, unknown model, ...).
    #[error("provider rejected the request: {0}")]
    InvalidRequest(String),
    /// 401/403: missing or wrong API key. The key itself is never included.
    #[error("provider authentication failed: {0}")]
    Auth(String),
    /// A 2xx answer whose body could not be understood.
    #[error("malformed provider response: {0}")]
    Malformed(String),
}

/// One attempt of a provider call that failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedAttempt {
    /// 1 for the first request of the call, 2 for the first retry, ...
    pub attempt: u32,
    /// The HTTP status, when the server answered at all.
    pub status: Option<u16>,
    pub error: ProviderError,
    /// How long the provider waited before the next attempt; `None` when it gave up.
    pub wait_ms: Option<u64>,
    /// How long this attempt itself took (sending, waiting for and reading the answer).
    pub latency_ms: u64,
}

/// What one provider call did: its result, the attempts that failed on the way
/// (the last one is the error when the call failed), and how long the attempt that
/// produced the result took, without the failed attempts and waits before it.
#[derive(Clone, Debug)]
pub struct Completion {
    pub result: Result<ChatResponse, ProviderError>,
    pub failed_attempts: Vec<FailedAttempt>,
    pub final_attempt_latency: Duration,
}

impl Completion {
    /// A call made of one attempt that started at `sent`.
    pub fn single(result: Result<ChatResponse, ProviderError>, sent: Instant) -> Completion {
        let latency = sent.elapsed();
        let failed_attempts = match &result {
            Ok(_) => Vec::new(),
            Err(error) => vec![FailedAttempt {
                attempt: 1,
                status: None,
                error: error.clone(),
                wait_ms: None,
                latency_ms: latency.as_millis() as u64,
            }],
        };
        Completion {
            result,
            failed_attempts,
            final_attempt_latency: latency,
        }
    }
}

impl ProviderError {
    /// A short, stable name of the variant for the ledger (`rate-limited`, `timeout`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::RateLimited { .. } => "rate-limited",
            ProviderError::Unavailable(_) => "provider-unavailable",
            ProviderError::Timeout => "timeout",
            ProviderError::InvalidRequest(_) => "invalid-request",
            ProviderError::Auth(_) => "auth",
            ProviderError::Malformed(_) => "malformed-response",
        }
    }
}

/// One LLM backend.
#[async_trait::async_trait]
pub trait LlmProvider: Send + Sync {
    /// Short name used in config and in the ledger (`mock`, `openai`, `anthropic`).
    fn name(&self) -> &str;
    /// Send one request, retrying transient failures within the provider's policy,
    /// and report every attempt that failed.
    async fn complete_traced(&self, request: &ChatRequest) -> Completion;
    /// Send one request, retrying transient failures within the provider's policy.
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        self.complete_traced(request).await.result
    }
}

/// Provider selection and settings, as found under `[llm]` in the host config.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersConfig {
    /// `mock` (default), `openai` or `anthropic`.
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub mock: mock::MockConfig,
    #[serde(default)]
    pub openai: openai::OpenAiConfig,
    #[serde(default)]
    pub anthropic: anthropic::AnthropicConfig,
}

/// A named provider endpoint (`[llm.endpoints.NAME.openai]` and so on), for catalogs
/// that route to several servers of the same kind.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub enum EndpointConfig {
    #[serde(rename = "openai")]
    OpenAi(openai::OpenAiConfig),
    #[serde(rename = "anthropic")]
    Anthropic(anthropic::AnthropicConfig),
    #[serde(rename = "mock")]
    Mock(mock::MockConfig),
}

/// Build the provider called `name`: a built-in kind (`mock`, `openai`, `anthropic`,
/// configured by `[llm.mock]` etc.) or an endpoint from `[llm.endpoints]`. Errors name
/// the config key to fix.
pub fn build_named(
    name: &str,
    config: &ProvidersConfig,
    endpoints: &std::collections::BTreeMap<String, EndpointConfig>,
) -> anyhow::Result<Arc<dyn LlmProvider>> {
    if let Some(endpoint) = endpoints.get(name) {
        return Ok(match endpoint.clone() {
            EndpointConfig::OpenAi(c) => Arc::new(openai::OpenAiProvider::new(c)?),
            EndpointConfig::Anthropic(c) => Arc::new(anthropic::AnthropicProvider::new(c)?),
            EndpointConfig::Mock(c) => Arc::new(mock::MockProvider::new(c)?),
        });
    }
    match name {
        "mock" => Ok(Arc::new(mock::MockProvider::new(config.mock.clone())?)),
        "openai" => Ok(Arc::new(openai::OpenAiProvider::new(
            config.openai.clone(),
        )?)),
        "anthropic" => Ok(Arc::new(anthropic::AnthropicProvider::new(
            config.anthropic.clone(),
        )?)),
        other => Err(unknown_provider(other, endpoints)),
    }
}

/// Whether `name` names a provider: a built-in kind or an `[llm.endpoints]` entry.
/// The error says which names there are.
pub fn check_name(
    name: &str,
    endpoints: &std::collections::BTreeMap<String, EndpointConfig>,
) -> anyhow::Result<()> {
    if BUILT_IN.contains(&name) || endpoints.contains_key(name) {
        Ok(())
    } else {
        Err(unknown_provider(name, endpoints))
    }
}

/// The provider kinds every config has.
const BUILT_IN: [&str; 3] = ["mock", "openai", "anthropic"];

fn unknown_provider(
    name: &str,
    endpoints: &std::collections::BTreeMap<String, EndpointConfig>,
) -> anyhow::Error {
    let mut names: Vec<String> = BUILT_IN.iter().map(|n| format!("`{n}`")).collect();
    names.extend(
        endpoints
            .keys()
            .map(|n| format!("`{n}` ([llm.endpoints.{n}])")),
    );
    let last = names.pop().unwrap_or_default();
    anyhow::anyhow!(
        "unknown provider `{name}`: the providers are {} or {last}{}",
        names.join(", "),
        if endpoints.is_empty() {
            " (or a name you add under [llm.endpoints])"
        } else {
            ""
        }
    )
}

/// Rough token estimate used for budgeting before a call (about four bytes a token).
pub fn estimate_tokens(text: &str) -> u32 {
    (text.len() as u32).div_ceil(4).max(1)
}
