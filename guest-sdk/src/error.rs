//! The SDK's error type.

use core::fmt;

/// Why a language-model call failed (re-exported from the interface).
pub use crate::wit::agentflow::agent::llm::LlmError;
/// Why a child task could not be spawned (re-exported from the interface).
pub use crate::wit::agentflow::agent::tasks::SpawnError;
/// Why a tool call failed (re-exported from the interface).
pub use crate::wit::agentflow::agent::tools::ToolError;

/// Every failure a host call can report. `?` converts the typed interface errors,
/// `serde_json` errors and strings into it, and it implements `Display`, so an
/// agent function can simply return `Result<String, Error>`.
///
/// The typed variants stay matchable:
///
/// ```ignore
/// match agentflow_sdk::ask("hi") {
///     Err(Error::Llm(LlmError::BudgetExceeded(why))) => { /* degrade gracefully */ }
///     other => { /* ... */ }
/// }
/// ```
#[derive(Debug, Clone)]
pub enum Error {
    /// A language-model call failed.
    Llm(LlmError),
    /// A tool call failed.
    Tool(ToolError),
    /// A child task could not be spawned.
    Spawn(SpawnError),
    /// JSON encoding or decoding failed (arguments, replies, checkpoint state).
    Json(String),
    /// The host refused to save a checkpoint.
    Checkpoint(String),
    /// Anything else, including failed or cancelled child tasks.
    Other(String),
}

impl Error {
    /// An [`Error::Other`] with this message.
    pub fn other(msg: impl Into<String>) -> Self {
        Error::Other(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Llm(e) => write!(f, "llm: {}", llm_error_text(e)),
            Error::Tool(e) => write!(f, "tool: {}", tool_error_text(e)),
            Error::Spawn(e) => write!(f, "spawn: {}", spawn_error_text(e)),
            Error::Json(m) => write!(f, "json: {m}"),
            Error::Checkpoint(m) => write!(f, "checkpoint: {m}"),
            Error::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

fn llm_error_text(e: &LlmError) -> String {
    match e {
        LlmError::NoViableModel(m) => format!("no viable model: {m}"),
        LlmError::ModelUnavailable(m) => format!("model unavailable: {m}"),
        LlmError::QuotaExhausted(m) => format!("quota exhausted: {m}"),
        LlmError::BudgetExceeded(m) => format!("budget exceeded: {m}"),
        LlmError::RateLimited(ms) => format!("rate limited (retry after {ms} ms)"),
        LlmError::ProviderUnavailable(m) => format!("provider unavailable: {m}"),
        LlmError::Timeout => "timeout".to_string(),
        LlmError::InvalidRequest(m) => format!("invalid request: {m}"),
        LlmError::MalformedResponse(m) => format!("malformed response: {m}"),
        LlmError::Denied(m) => format!("denied: {m}"),
    }
}

fn tool_error_text(e: &ToolError) -> String {
    match e {
        ToolError::NotGranted(m) => format!("not granted: {m}"),
        ToolError::NotFound(m) => format!("not found: {m}"),
        ToolError::InvalidArgs(m) => format!("invalid arguments: {m}"),
        ToolError::Denied(m) => format!("denied: {m}"),
        ToolError::Failed(m) => format!("failed: {m}"),
    }
}

fn spawn_error_text(e: &SpawnError) -> String {
    match e {
        SpawnError::MaxDepthExceeded(n) => format!("maximum depth exceeded (limit {n})"),
        SpawnError::TooManyTasks(n) => format!("too many tasks (limit {n})"),
        SpawnError::BudgetExceeded(m) => format!("budget exceeded: {m}"),
        SpawnError::DuplicateTask(id) => format!("duplicate task (existing task {id})"),
        SpawnError::UnknownAgent(m) => format!("unknown agent: {m}"),
        SpawnError::InvalidRequest(m) => format!("invalid request: {m}"),
        SpawnError::ResourceExhausted(m) => format!("resource exhausted: {m}"),
        SpawnError::CircularDependency(id) => {
            format!("circular: too similar to ancestor task {id}")
        }
    }
}

impl From<LlmError> for Error {
    fn from(e: LlmError) -> Self {
        Error::Llm(e)
    }
}

impl From<ToolError> for Error {
    fn from(e: ToolError) -> Self {
        Error::Tool(e)
    }
}

impl From<SpawnError> for Error {
    fn from(e: SpawnError) -> Self {
        Error::Spawn(e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Json(e.to_string())
    }
}

impl From<String> for Error {
    fn from(m: String) -> Self {
        Error::Other(m)
    }
}

impl From<&str> for Error {
    fn from(m: &str) -> Self {
        Error::Other(m.to_string())
    }
}

impl From<fmt::Error> for Error {
    fn from(e: fmt::Error) -> Self {
        Error::Other(e.to_string())
    }
}
