//! The `anthropic` provider: Anthropic's Messages API (`POST {base_url}/v1/messages`).
//! It maps a [`ChatRequest`] to the wire format (system messages to the top-level
//! `system`, tool results to `tool_result` blocks), sends it with bounded retries and
//! parses the content blocks into a [`ChatResponse`]; an answer with no content
//! blocks and no stop reason is malformed (and retried).
//!
//! It is not for streaming, images, prompt caching or extended thinking, and it does
//! not choose models or compute cost. It refuses to start without an API key.

use super::openai::parse_schema;
use super::retry::{body_excerpt, http_client, resolve_api_key, send_with_retry};
use super::{
    ChatRequest, ChatResponse, Completion, FinishReason, LlmProvider, ProviderError, RetryPolicy,
    Role, ToolCall, estimate_tokens,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// `[llm.anthropic]` settings.
#[derive(Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnthropicConfig {
    /// API root, without the trailing `/v1/messages`.
    pub base_url: String,
    /// The key itself; prefer `api_key_env` so it stays out of config files. Never
    /// serialized: a run's recorded config (and so the ledger) holds no secret.
    #[serde(skip_serializing)]
    pub api_key: Option<String>,
    /// Environment variable read when `api_key` is not set.
    pub api_key_env: String,
    /// Value of the `anthropic-version` header.
    pub version: String,
    /// Deadline of one attempt (connect, send and read).
    pub timeout_ms: u64,
    /// `max_tokens` sent when the request sets no `max_output_tokens` (the API
    /// requires one).
    pub default_max_tokens: u32,
    pub retry: RetryPolicy,
}

impl Default for AnthropicConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.anthropic.com".to_string(),
            api_key: None,
            api_key_env: "ANTHROPIC_API_KEY".to_string(),
            version: "2023-06-01".to_string(),
            timeout_ms: 60_000,
            default_max_tokens: 1024,
            retry: RetryPolicy::default(),
        }
    }
}

impl std::fmt::Debug for AnthropicConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_key_env", &self.api_key_env)
            .field("version", &self.version)
            .field("timeout_ms", &self.timeout_ms)
            .field("default_max_tokens", &self.default_max_tokens)
            .field("retry", &self.retry)
            .finish()
    }
}

/// Client of the Anthropic Messages API.
pub struct AnthropicProvider {
    client: reqwest::Client,
    url: String,
    /// The key as a header value marked sensitive (kept out of reqwest's debug output).
    api_key: reqwest::header::HeaderValue,
    version: String,
    default_max_tokens: u32,
    retry: RetryPolicy,
}

impl std::fmt::Debug for AnthropicProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicProvider")
            .field("url", &self.url)
            .field("api_key", &"<redacted>")
            .field("version", &self.version)
            .field("default_max_tokens", &self.default_max_tokens)
            .field("retry", &self.retry)
            .finish()
    }
}

impl AnthropicProvider {
    /// Build the provider; the key comes from `api_key`, else from `api_key_env`.
    pub fn new(config: AnthropicConfig) -> anyhow::Result<Self> {
        let Some(api_key) = resolve_api_key(config.api_key.as_deref(), &config.api_key_env) else {
            anyhow::bail!(
                "anthropic provider needs an API key: set {} or [llm.anthropic] api_key",
                config.api_key_env
            );
        };
        let mut api_key = reqwest::header::HeaderValue::from_str(api_key.trim()).map_err(|_| {
            anyhow::anyhow!("the anthropic API key contains characters not allowed in a header")
        })?;
        api_key.set_sensitive(true);
        Ok(Self {
            client: http_client(config.timeout_ms)?,
            url: format!("{}/v1/messages", config.base_url.trim_end_matches('/')),
            api_key,
            version: config.version,
            default_max_tokens: config.default_max_tokens,
            retry: config.retry,
        })
    }

    /// The request body for `request`.
    fn request_body(&self, request: &ChatRequest) -> Result<Value, ProviderError> {
        let mut system: Vec<&str> = Vec::new();
        let mut messages: Vec<Value> = Vec::new();
        for m in &request.messages {
            match m.role {
                Role::System => system.push(&m.content),
                Role::User => messages.push(json!({ "role": "user", "content": m.content })),
                Role::Assistant => {
                    messages.push(json!({ "role": "assistant", "content": m.content }))
                }
                Role::Tool => {
                    let id = m.tool_call_id.as_deref().ok_or_else(|| {
                        ProviderError::InvalidRequest(
                            "a tool message has no tool_call_id".to_string(),
                        )
                    })?;
                    let block = json!({
                        "type": "tool_result",
                        "tool_use_id": id,
                        "content": m.content,
                    });
                    // Results of parallel tool calls belong in one user message.
                    match messages.last_mut() {
                        Some(last) if is_tool_result_message(last) => {
                            if let Some(blocks) = last["content"].as_array_mut() {
                                blocks.push(block);
                            }
                        }
                        _ => messages.push(json!({ "role": "user", "content": [block] })),
                    }
                }
            }
        }
        let max_tokens = request.max_output_tokens.unwrap_or(self.default_max_tokens);
        let mut body = json!({
            "model": request.model,
            "max_tokens": max_tokens,
            "messages": messages,
        });
        if !system.is_empty() {
            body["system"] = json!(system.join("\n\n"));
        }
        if let Some(temperature) = request.temperature {
            body["temperature"] = json!(temperature);
        }
        if !request.tools.is_empty() {
            let tools = request
                .tools
                .iter()
                .map(|tool| {
                    Ok(json!({
                        "name": tool.name,
                        "description": tool.description,
                        "input_schema": parse_schema(&tool.name, &tool.parameters_schema)?,
                    }))
                })
                .collect::<Result<Vec<_>, ProviderError>>()?;
            body["tools"] = Value::Array(tools);
        }
        Ok(body)
    }
}

/// Whether `message` is a user message made of `tool_result` blocks.
fn is_tool_result_message(message: &Value) -> bool {
    message["role"] == "user"
        && message["content"]
            .as_array()
            .is_some_and(|blocks| blocks.iter().all(|b| b["type"] == "tool_result"))
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    model: Option<String>,
    content: Vec<WireBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u32>,
    #[serde(default)]
    output_tokens: Option<u32>,
}

/// Parse a 2xx body into a [`ChatResponse`].
fn parse_response(request: &ChatRequest, body: &str) -> Result<ChatResponse, ProviderError> {
    let wire: WireResponse = serde_json::from_str(body)
        .map_err(|e| ProviderError::Malformed(format!("{e} (body: {})", body_excerpt(body))))?;
    if wire.content.is_empty() && wire.stop_reason.is_none() {
        return Err(ProviderError::Malformed(format!(
            "no content blocks and no stop reason (body: {})",
            body_excerpt(body)
        )));
    }
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in wire.content {
        match block {
            WireBlock::Text { text: part } => text.push_str(&part),
            WireBlock::ToolUse { id, name, input } => {
                let arguments = match input {
                    Value::Null => "{}".to_string(),
                    other => other.to_string(),
                };
                tool_calls.push(ToolCall {
                    id,
                    name,
                    arguments,
                });
            }
            WireBlock::Other => {}
        }
    }
    let finish_reason = match wire.stop_reason.as_deref() {
        Some("end_turn" | "stop_sequence") => FinishReason::Stop,
        Some("max_tokens") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    };
    let usage = wire.usage.unwrap_or(WireUsage {
        input_tokens: None,
        output_tokens: None,
    });
    let input_tokens = usage.input_tokens.unwrap_or_else(|| {
        request
            .messages
            .iter()
            .map(|m| estimate_tokens(&m.content) + 4)
            .sum()
    });
    let output_tokens = usage.output_tokens.unwrap_or_else(|| {
        estimate_tokens(&text)
            + tool_calls
                .iter()
                .map(|c| estimate_tokens(&c.arguments))
                .sum::<u32>()
    });
    Ok(ChatResponse {
        text,
        tool_calls,
        model: wire.model.unwrap_or_else(|| request.model.clone()),
        input_tokens,
        output_tokens,
        finish_reason,
    })
}

#[async_trait::async_trait]
impl LlmProvider for AnthropicProvider {
    fn name(&self) -> &str {
        "anthropic"
    }

    async fn complete_traced(&self, request: &ChatRequest) -> Completion {
        let sent = std::time::Instant::now();
        let body = match self.request_body(request) {
            Ok(body) => body,
            Err(error) => return Completion::single(Err(error), sent),
        };
        send_with_retry(
            &self.retry,
            self.name(),
            || {
                self.client
                    .post(&self.url)
                    .header("x-api-key", self.api_key.clone())
                    .header("anthropic-version", &self.version)
                    .json(&body)
            },
            |text| parse_response(request, text),
        )
        .await
    }
}
