//! Language-model completions through the host.
//!
//! The host picks a model (unless one is pinned), reserves budget before sending,
//! and records the reply in the run's ledger before the agent sees it.
//!
//! ```ignore
//! use agentflow_sdk::llm::{Request, Priority};
//! let plan: Vec<String> = Request::new()
//!     .system("You plan research.")
//!     .user("Split 'why is the sky blue' into 3 sub-questions as a JSON array.")
//!     .task_type("decompose")
//!     .priority(Priority::Quality)
//!     .send()?
//!     .json()?;
//! ```

use serde::de::DeserializeOwned;

use crate::Error;
use crate::wit::agentflow::agent::llm as raw;

/// Why the model stopped (re-exported from the interface).
pub use raw::FinishReason;
/// Why a call failed (re-exported from the interface).
pub use raw::LlmError;
/// What the host optimises for when it chooses a model (re-exported from the interface).
pub use raw::Priority;
/// Who wrote a message (re-exported from the interface).
pub use raw::Role;

/// One message of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// The text.
    pub content: String,
    /// For [`Role::Tool`] messages: the id of the tool call this answers.
    pub tool_call_id: Option<String>,
}

/// A completion request; build it with the chained methods and [`send`](Request::send) it.
#[derive(Debug, Clone)]
pub struct Request {
    messages: Vec<Message>,
    model: Option<String>,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    priority: Priority,
    capabilities: Vec<String>,
    min_context: Option<u32>,
    task_type: Option<String>,
    tools: Vec<(String, String, String)>,
    allow_fallback: bool,
    max_cost_usd: Option<f64>,
    max_latency_ms: Option<u32>,
    max_wait_ms: Option<u32>,
    min_quality: Option<f32>,
}

thread_local! {
    /// The task type of requests that name none ([`set_default_task_type`]).
    static DEFAULT_TASK_TYPE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Name the task type of every later request of this agent that names none: the agent
/// says once what kind of work it does ("summarize", "classify"), and the host routes
/// and predicts its calls by that type's history.
pub fn set_default_task_type(t: impl Into<String>) {
    DEFAULT_TASK_TYPE.with(|d| *d.borrow_mut() = Some(t.into()));
}

impl Default for Request {
    fn default() -> Self {
        Self::new()
    }
}

impl Request {
    /// An empty request: no messages, host-chosen model, [`Priority::Balanced`].
    pub fn new() -> Self {
        Request {
            messages: Vec::new(),
            model: None,
            temperature: None,
            max_tokens: None,
            priority: Priority::Balanced,
            capabilities: Vec::new(),
            min_context: None,
            task_type: None,
            tools: Vec::new(),
            allow_fallback: false,
            max_cost_usd: None,
            max_latency_ms: None,
            max_wait_ms: None,
            min_quality: None,
        }
    }

    fn push(mut self, role: Role, content: String, tool_call_id: Option<String>) -> Self {
        self.messages.push(Message {
            role,
            content,
            tool_call_id,
        });
        self
    }

    /// Appends a system message.
    pub fn system(self, content: impl Into<String>) -> Self {
        self.push(Role::System, content.into(), None)
    }

    /// Appends a user message.
    pub fn user(self, content: impl Into<String>) -> Self {
        self.push(Role::User, content.into(), None)
    }

    /// Appends an assistant message (an earlier reply of the model).
    pub fn assistant(self, content: impl Into<String>) -> Self {
        self.push(Role::Assistant, content.into(), None)
    }

    /// Appends the result of the tool call `call_id` (see [`Response::tool_calls`]).
    pub fn tool_result(self, call_id: impl Into<String>, content: impl Into<String>) -> Self {
        self.push(Role::Tool, content.into(), Some(call_id.into()))
    }

    /// Puts a checkpoint's restart context ("continue from step N; here is what you
    /// already did") first in the request, as a system message: a task restarted from
    /// a checkpoint continues instead of starting over.
    pub fn continue_from<T>(mut self, saved: &crate::checkpoint::Saved<T>) -> Self {
        self.messages.insert(
            0,
            Message {
                role: Role::System,
                content: saved.restart_context.clone(),
                tool_call_id: None,
            },
        );
        self
    }

    /// Appends an arbitrary message.
    pub fn message(mut self, message: Message) -> Self {
        self.messages.push(message);
        self
    }

    /// Pins the model by name instead of letting the host choose.
    pub fn model(mut self, name: impl Into<String>) -> Self {
        self.model = Some(name.into());
        self
    }

    /// Sampling temperature.
    pub fn temperature(mut self, t: f32) -> Self {
        self.temperature = Some(t);
        self
    }

    /// Maximum number of output tokens.
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = Some(n);
        self
    }

    /// What matters most when the host chooses the model.
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = p;
        self
    }

    /// Requires a capability of the chosen model, e.g. `"function-calling"` or `"vision"`.
    pub fn capability(mut self, c: impl Into<String>) -> Self {
        self.capabilities.push(c.into());
        self
    }

    /// With a pinned [`model`](Self::model): let the host fall back to another model
    /// when the pinned one is unavailable or fails.
    pub fn allow_fallback(mut self, allow: bool) -> Self {
        self.allow_fallback = allow;
        self
    }

    /// Refuse models whose worst-case cost for this call exceeds `usd`.
    pub fn max_cost(mut self, usd: f64) -> Self {
        self.max_cost_usd = Some(usd);
        self
    }

    /// Refuse models whose p95 latency exceeds `ms`.
    pub fn max_latency_ms(mut self, ms: u32) -> Self {
        self.max_latency_ms = Some(ms);
        self
    }

    /// When every suitable model is out of quota, wait up to `ms` instead of failing.
    pub fn max_wait_ms(mut self, ms: u32) -> Self {
        self.max_wait_ms = Some(ms);
        self
    }

    /// Refuse models whose quality on this request's task type (0..1) is below `q`.
    pub fn min_quality(mut self, q: f32) -> Self {
        self.min_quality = Some(q);
        self
    }

    /// Minimum context window the chosen model must have, in tokens.
    pub fn min_context(mut self, tokens: u32) -> Self {
        self.min_context = Some(tokens);
        self
    }

    /// Free-form task type ("decompose", "summarize", ...) used for routing and statistics.
    pub fn task_type(mut self, t: impl Into<String>) -> Self {
        self.task_type = Some(t.into());
        self
    }

    /// Offers the model a function it may ask to call; `schema` is the JSON schema of
    /// its arguments.
    pub fn tool(
        mut self,
        name: impl Into<String>,
        description: impl Into<String>,
        schema: serde_json::Value,
    ) -> Self {
        self.tools
            .push((name.into(), description.into(), schema.to_string()));
        self
    }

    /// The messages added so far.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// Sends the request through the host.
    pub fn send(&self) -> Result<Response, Error> {
        let req = raw::Request {
            messages: self
                .messages
                .iter()
                .map(|m| raw::Message {
                    role: m.role,
                    content: m.content.clone(),
                    tool_call_id: m.tool_call_id.clone(),
                })
                .collect(),
            model: self.model.clone(),
            temperature: self.temperature,
            max_output_tokens: self.max_tokens,
            priority: self.priority,
            capabilities: self.capabilities.clone(),
            min_context_window: self.min_context,
            allow_fallback: self.allow_fallback,
            max_cost_usd: self.max_cost_usd,
            max_latency_ms: self.max_latency_ms,
            max_wait_ms: self.max_wait_ms,
            min_quality: self.min_quality,
            task_type: self
                .task_type
                .clone()
                .or_else(|| DEFAULT_TASK_TYPE.with(|d| d.borrow().clone())),
            tools: self
                .tools
                .iter()
                .map(|(name, description, schema)| raw::ToolDefinition {
                    name: name.clone(),
                    description: description.clone(),
                    parameters_schema: schema.clone(),
                })
                .collect(),
        };
        let r = raw::complete(&req)?;
        Ok(Response {
            text: r.text,
            tool_calls: r
                .tool_calls
                .into_iter()
                .map(|c| ToolCall {
                    id: c.id,
                    name: c.name,
                    arguments: c.arguments,
                })
                .collect(),
            model: r.model,
            input_tokens: r.usage.input_tokens,
            output_tokens: r.usage.output_tokens,
            cost_usd: r.usage.cost_usd,
            finish_reason: r.finish_reason,
        })
    }
}

/// A function call the model asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// Answer it with [`Request::tool_result`] using this id.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// JSON-encoded arguments.
    pub arguments: String,
}

impl ToolCall {
    /// Decodes the arguments.
    pub fn args<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_str(&self.arguments)?)
    }
}

/// The model's reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The reply text (may be empty when the model only asks for tool calls).
    pub text: String,
    /// Function calls the model asked for.
    pub tool_calls: Vec<ToolCall>,
    /// The model that answered.
    pub model: String,
    /// Prompt tokens billed.
    pub input_tokens: u32,
    /// Completion tokens billed.
    pub output_tokens: u32,
    /// What the call cost, in USD.
    pub cost_usd: f64,
    /// Why the model stopped.
    pub finish_reason: FinishReason,
}

impl Response {
    /// Decodes the reply text as JSON. Tolerates a ```` ```json ```` fenced block and
    /// prose around a single JSON object or array.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        parse_json(&self.text)
    }
}

/// Decodes JSON out of model text: the whole text, else the first fenced block, else
/// the span from the first `{`/`[` to the last matching `}`/`]`.
pub fn parse_json<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    let trimmed = text.trim();
    let first_err = match serde_json::from_str(trimmed) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    if let Some(block) = fenced_block(trimmed)
        && let Ok(v) = serde_json::from_str(block.trim())
    {
        return Ok(v);
    }
    for (open, close) in [('{', '}'), ('[', ']')] {
        if let (Some(start), Some(end)) = (trimmed.find(open), trimmed.rfind(close))
            && start < end
            && let Ok(v) = serde_json::from_str(&trimmed[start..=end])
        {
            return Ok(v);
        }
    }
    Err(Error::Json(format!(
        "reply is not the expected JSON: {first_err}"
    )))
}

/// The body of the first ```` ``` ```` fenced block, without its language tag.
fn fenced_block(text: &str) -> Option<&str> {
    let start = text.find("```")?;
    let after = &text[start + 3..];
    // Skip the info string ("json", "JSON", ...) up to the end of the line.
    let body_start = after.find('\n').map(|i| i + 1).unwrap_or(0);
    let body = &after[body_start..];
    let end = body.find("```").unwrap_or(body.len());
    Some(&body[..end])
}

/// Asks the model one question (a single user message, host-chosen model) and
/// returns the reply text.
pub fn ask(prompt: impl Into<String>) -> Result<String, Error> {
    Ok(Request::new().user(prompt).send()?.text)
}

#[cfg(test)]
mod tests {
    use super::parse_json;

    #[test]
    fn parses_plain_fenced_and_embedded_json() {
        let v: Vec<String> = parse_json(r#"["a","b"]"#).unwrap();
        assert_eq!(v, ["a", "b"]);
        let v: Vec<String> = parse_json("Sure:\n```json\n[\"a\", \"b\"]\n```\nDone.").unwrap();
        assert_eq!(v, ["a", "b"]);
        let v: Vec<u32> = parse_json("```\n[1,2]\n```").unwrap();
        assert_eq!(v, [1, 2]);
        let v: serde_json::Value = parse_json("Here it is: {\"x\": 1} hope it helps").unwrap();
        assert_eq!(v["x"], 1);
        assert!(parse_json::<Vec<String>>("no json here").is_err());
    }
}
