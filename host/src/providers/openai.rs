//! The `openai` provider: any OpenAI-compatible `POST {base_url}/chat/completions`
//! endpoint (OpenAI itself, vLLM, Ollama, llama.cpp server, ...). It maps a
//! [`ChatRequest`] to the wire format, sends it with bounded retries and parses the
//! first choice into a [`ChatResponse`]; an answer without choices, or whose choice
//! has neither content, a refusal nor tool calls, is malformed (and retried).
//!
//! It is not for streaming, multiple choices or the Responses API, and it does not
//! choose models or compute cost. A missing API key is allowed (local servers need
//! none); then no `Authorization` header is sent.

use super::retry::{body_excerpt, http_client, resolve_api_key, send_with_retry};
use super::{
    ChatRequest, ChatResponse, Completion, FinishReason, LlmProvider, ProviderError, RetryPolicy,
    Role, ToolCall, estimate_tokens,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// `[llm.openai]` settings.
#[derive(Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiConfig {
    /// API root, without the trailing `/chat/completions`.
    pub base_url: String,
    /// The key itself; prefer `api_key_env` so it stays out of config files. Never
    /// serialized: a run's recorded config (and so the ledger) holds no secret.
    #[serde(skip_serializing)]
    pub api_key: Option<String>,
    /// Environment variable read when `api_key` is not set.
    pub api_key_env: String,
    /// Deadline of one attempt (connect, send and read).
    pub timeout_ms: u64,
    pub retry: RetryPolicy,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com/v1".to_string(),
            api_key: None,
            api_key_env: "OPENAI_API_KEY".to_string(),
            timeout_ms: 60_000,
            retry: RetryPolicy::default(),
        }
    }
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_key_env", &self.api_key_env)
            .field("timeout_ms", &self.timeout_ms)
            .field("retry", &self.retry)
            .finish()
    }
}

/// Client of one OpenAI-compatible endpoint.
pub struct OpenAiProvider {
    client: reqwest::Client,
    url: String,
    api_key: Option<String>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("retry", &self.retry)
            .finish()
    }
}

impl OpenAiProvider {
    /// Build the provider; the key comes from `api_key`, else from `api_key_env`.
    pub fn new(config: OpenAiConfig) -> anyhow::Result<Self> {
        let api_key = resolve_api_key(config.api_key.as_deref(), &config.api_key_env);
        Ok(Self {
            client: http_client(config.timeout_ms)?,
            url: format!("{}/chat/completions", config.base_url.trim_end_matches('/')),
            api_key,
            retry: config.retry,
        })
    }
}

/// The request body for `request`, or `InvalidRequest` if a tool schema is not JSON.
fn request_body(request: &ChatRequest) -> Result<Value, ProviderError> {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| {
            let role = match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
            };
            let mut message = json!({ "role": role, "content": m.content });
            if let Some(id) = &m.tool_call_id {
                message["tool_call_id"] = json!(id);
            }
            message
        })
        .collect();
    let mut body = json!({ "model": request.model, "messages": messages });
    if let Some(temperature) = request.temperature {
        body["temperature"] = json!(temperature);
    }
    if let Some(max_tokens) = request.max_output_tokens {
        body["max_tokens"] = json!(max_tokens);
    }
    if !request.tools.is_empty() {
        let tools = request
            .tools
            .iter()
            .map(|tool| {
                Ok(json!({
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": parse_schema(&tool.name, &tool.parameters_schema)?,
                    }
                }))
            })
            .collect::<Result<Vec<_>, ProviderError>>()?;
        body["tools"] = Value::Array(tools);
    }
    Ok(body)
}

/// A tool's JSON schema; an empty schema means "no arguments".
pub(crate) fn parse_schema(tool: &str, schema: &str) -> Result<Value, ProviderError> {
    if schema.trim().is_empty() {
        return Ok(json!({ "type": "object", "properties": {} }));
    }
    serde_json::from_str(schema).map_err(|e| {
        ProviderError::InvalidRequest(format!("tool `{tool}` has an invalid JSON schema: {e}"))
    })
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    model: Option<String>,
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
    /// Set instead of `content` when the model refuses (structured outputs).
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    /// A JSON string per the API; some local servers send an object instead.
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u32>,
    #[serde(default)]
    completion_tokens: Option<u32>,
}

/// Parse a 2xx body into a [`ChatResponse`].
fn parse_response(request: &ChatRequest, body: &str) -> Result<ChatResponse, ProviderError> {
    let wire: WireResponse = serde_json::from_str(body)
        .map_err(|e| ProviderError::Malformed(format!("{e} (body: {})", body_excerpt(body))))?;
    let choice = wire
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| ProviderError::Malformed("no choices in the response".to_string()))?;
    let no_tool_calls = choice.message.tool_calls.as_ref().is_none_or(Vec::is_empty);
    let refused = choice.message.content.is_none() && choice.message.refusal.is_some();
    if choice.message.content.is_none() && !refused && no_tool_calls {
        return Err(ProviderError::Malformed(format!(
            "the choice has neither content nor tool calls (body: {})",
            body_excerpt(body)
        )));
    }
    let text = choice
        .message
        .content
        .or(choice.message.refusal)
        .unwrap_or_default();
    let tool_calls: Vec<ToolCall> = choice
        .message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(index, call)| ToolCall {
            id: call.id.unwrap_or_else(|| format!("call_{index}")),
            name: call.function.name,
            arguments: match call.function.arguments {
                None | Some(Value::Null) => "{}".to_string(),
                Some(Value::String(s)) => s,
                Some(other) => other.to_string(),
            },
        })
        .collect();
    let finish_reason = match choice.finish_reason.as_deref() {
        _ if refused => FinishReason::ContentFilter,
        Some("stop") => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    };
    let usage = wire.usage.unwrap_or(WireUsage {
        prompt_tokens: None,
        completion_tokens: None,
    });
    let input_tokens = usage.prompt_tokens.unwrap_or_else(|| {
        request
            .messages
            .iter()
            .map(|m| estimate_tokens(&m.content) + 4)
            .sum()
    });
    let output_tokens = usage.completion_tokens.unwrap_or_else(|| {
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
impl LlmProvider for OpenAiProvider {
    fn name(&self) -> &str {
        "openai"
    }

    async fn complete_traced(&self, request: &ChatRequest) -> Completion {
        let sent = std::time::Instant::now();
        let body = match request_body(request) {
            Ok(body) => body,
            Err(error) => return Completion::single(Err(error), sent),
        };
        send_with_retry(
            &self.retry,
            self.name(),
            || {
                let builder = self.client.post(&self.url).json(&body);
                match &self.api_key {
                    Some(key) => builder.bearer_auth(key),
                    None => builder,
                }
            },
            |text| parse_response(request, text),
        )
        .await
    }
}
