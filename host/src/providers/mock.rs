//! The `mock` provider: deterministic, offline answers for tests, demos and CI.
//! Scripted rules (inline or from a TOML/JSON rules file) are tried first; when none
//! matches, built-in behaviours answer decomposition, summarisation and plain
//! questions, always giving the same response to the same request.
//!
//! It is not a language model and does not try to look like one beyond the shape of
//! its answers, and it knows nothing about prices (cost is computed by the caller).

use super::{
    ChatRequest, ChatResponse, Completion, FinishReason, LlmProvider, Role, ToolCall,
    estimate_tokens,
};
use anyhow::Context as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `[llm.mock]` settings.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockConfig {
    /// Simulated latency of every call.
    pub latency_ms: u64,
    /// Extra rules loaded from a `.toml` (`[[rules]]` tables) or `.json` (array) file;
    /// they are tried after the inline `rules`.
    pub rules_file: Option<PathBuf>,
    /// Inline rules, tried in order; the first match wins.
    pub rules: Vec<MockRule>,
}

/// A scripted answer. Every condition given must match; absent conditions match all.
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MockRule {
    /// Case-insensitive substring of the last user message.
    #[serde(default)]
    pub contains: Option<String>,
    /// Exact `task_type` of the request.
    #[serde(default)]
    pub task_type: Option<String>,
    /// Exact model of the request.
    #[serde(default)]
    pub model: Option<String>,
    /// Reply text; `{input}` is replaced by the last user message.
    #[serde(default)]
    pub reply: String,
    /// Tool calls to return; when non-empty the finish reason is `tool_calls`.
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// Extra simulated latency of the calls this rule answers (a slow judge, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

impl MockRule {
    fn matches(&self, request: &ChatRequest, last_user: &str) -> bool {
        let contains_ok = self
            .contains
            .as_deref()
            .is_none_or(|needle| last_user.to_lowercase().contains(&needle.to_lowercase()));
        let task_ok = self
            .task_type
            .as_deref()
            .is_none_or(|t| request.task_type.as_deref() == Some(t));
        let model_ok = self.model.as_deref().is_none_or(|m| request.model == m);
        contains_ok && task_ok && model_ok
    }
}

/// Shape of a TOML rules file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rules: Vec<MockRule>,
}

/// The deterministic offline provider.
#[derive(Clone, Debug)]
pub struct MockProvider {
    latency: Duration,
    rules: Vec<MockRule>,
}

impl MockConfig {
    /// The same settings with `rules_file`'s rules appended to the inline `rules`:
    /// what a run records, so resuming it needs neither the file nor the directory
    /// it was started from.
    pub fn inlined(&self) -> anyhow::Result<MockConfig> {
        let mut config = self.clone();
        if let Some(path) = config.rules_file.take() {
            config.rules.extend(load_rules_file(&path)?);
        }
        Ok(config)
    }
}

impl MockProvider {
    /// Build the provider, loading `rules_file` if one is configured.
    pub fn new(config: MockConfig) -> anyhow::Result<Self> {
        let mut rules = config.rules;
        if let Some(path) = &config.rules_file {
            rules.extend(load_rules_file(path)?);
        }
        Ok(Self {
            latency: Duration::from_millis(config.latency_ms),
            rules,
        })
    }

    /// The extra latency of the rule that answers `request` (`delay_ms`), if any.
    fn delay(&self, request: &ChatRequest) -> Option<Duration> {
        let last_user = last_user_message(request);
        self.rules
            .iter()
            .find(|r| r.matches(request, last_user))
            .and_then(|r| r.delay_ms)
            .map(Duration::from_millis)
    }

    /// The answer text and tool calls for `request`, before token accounting.
    fn answer(&self, request: &ChatRequest) -> (String, Vec<ToolCall>) {
        let last_user = last_user_message(request);
        if let Some(rule) = self.rules.iter().find(|r| r.matches(request, last_user)) {
            return (
                rule.reply.replace("{input}", last_user),
                rule.tool_calls.clone(),
            );
        }
        let lower = last_user.to_lowercase();
        let task = request.task_type.as_deref();
        let text = if task == Some("decompose") || lower.contains("sub-questions") {
            decompose(last_user)
        } else if task == Some("summarize") || lower.contains("summar") {
            summarize(last_user)
        } else {
            plain_answer(request, last_user)
        };
        (text, Vec::new())
    }
}

/// Read rules from a `.toml` file (`[[rules]]` tables) or a `.json` file (an array).
fn load_rules_file(path: &Path) -> anyhow::Result<Vec<MockRule>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read mock rules file {}", path.display()))?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("toml") => toml::from_str::<RulesFile>(&text)
            .map(|f| f.rules)
            .with_context(|| format!("invalid mock rules file {} (TOML)", path.display())),
        Some("json") => serde_json::from_str::<Vec<MockRule>>(&text)
            .with_context(|| format!("invalid mock rules file {} (JSON array)", path.display())),
        _ => anyhow::bail!(
            "mock rules file {} must end in .toml or .json ([llm.mock] rules_file)",
            path.display()
        ),
    }
}

/// The content of the last user message, or "" if there is none.
fn last_user_message(request: &ChatRequest) -> &str {
    request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .unwrap_or("")
}

/// A JSON array of three sub-questions about the question in `message`.
fn decompose(message: &str) -> String {
    // ASCII lowercasing keeps byte offsets, so the marker position is valid in `message`.
    let marker = "question:";
    let question = match message.to_ascii_lowercase().rfind(marker) {
        Some(at) => &message[at + marker.len()..],
        None => message,
    };
    let question = question.trim();
    let topic = question.strip_suffix('?').unwrap_or(question).trim();
    let topic = if topic.is_empty() {
        "this topic"
    } else {
        topic
    };
    const INTERROGATIVES: &[&str] = &[
        "why", "what", "how", "when", "where", "who", "which", "is", "are", "does", "do", "can",
        "should", "will", "would",
    ];
    let first_word = topic
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let subs = if INTERROGATIVES.contains(&first_word.as_str()) {
        // Already a question: ask about its background, evidence and practice instead.
        [
            format!("What background is needed to answer \"{topic}?\""),
            format!("What evidence bears on \"{topic}?\""),
            format!("What do practitioners conclude about \"{topic}?\""),
        ]
    } else {
        [
            format!("What is {topic}?"),
            format!("Why does {topic} matter?"),
            format!("How is {topic} done in practice?"),
        ]
    };
    serde_json::to_string(&subs).expect("an array of strings always serialises")
}

/// Most characters of the condensed text after "Summary: ".
const SUMMARY_CHARS: usize = 600;

/// "Summary: " and the first sentence of each non-empty line after the first (the
/// instruction), or of the first line when it is the only one.
fn summarize(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let body = if lines.len() > 1 {
        &lines[1..]
    } else {
        &lines[..]
    };
    let condensed = body
        .iter()
        .map(|line| first_sentence(line))
        .collect::<Vec<_>>()
        .join(" ");
    let condensed: String = condensed.chars().take(SUMMARY_CHARS).collect();
    format!("Summary: {condensed}")
}

/// The text up to and including the first `.`, `!` or `?` that ends a sentence.
fn first_sentence(line: &str) -> &str {
    let mut chars = line.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if matches!(c, '.' | '!' | '?') && chars.peek().is_none_or(|(_, next)| next.is_whitespace())
        {
            return &line[..at + c.len_utf8()];
        }
    }
    line
}

/// Fixed closing sentences of the plain answer, chosen by a hash of the request.
const ANSWERS: [&str; 4] = [
    "The short answer is that it depends on the context, but the main factors are well understood.",
    "Most sources agree on the basics; the details vary with the specific situation.",
    "It comes down to a few key ideas, which can be checked step by step.",
    "There is no single answer, but a careful look at the evidence points to a clear trend.",
];

/// `Answer to "<start of the question>": <one of ANSWERS>`.
fn plain_answer(request: &ChatRequest, last_user: &str) -> String {
    let mut hasher = Sha256::new();
    for message in &request.messages {
        let role = serde_json::to_string(&message.role).unwrap_or_default();
        hasher.update(role.as_bytes());
        hasher.update([0]);
        hasher.update(message.content.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let index = usize::from(digest[0]) % ANSWERS.len();
    let head: String = last_user.chars().take(120).collect();
    format!("Answer to \"{head}\": {}", ANSWERS[index])
}

/// The longest prefix of `text` of at most `max_bytes` bytes ending on a char boundary.
fn truncate_at_char_boundary(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[async_trait::async_trait]
impl LlmProvider for MockProvider {
    fn name(&self) -> &str {
        "mock"
    }

    async fn complete_traced(&self, request: &ChatRequest) -> Completion {
        let sent = Instant::now();
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if let Some(delay) = self.delay(request) {
            tokio::time::sleep(delay).await;
        }
        let (mut text, tool_calls) = self.answer(request);
        let input_tokens = request
            .messages
            .iter()
            .map(|m| estimate_tokens(&m.content) + 4)
            .sum();
        let mut output_tokens = estimate_tokens(&text);
        let mut finish_reason = if tool_calls.is_empty() {
            FinishReason::Stop
        } else {
            FinishReason::ToolCalls
        };
        if let Some(limit) = request.max_output_tokens
            && output_tokens > limit
        {
            let max_bytes = usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .saturating_mul(4);
            text = truncate_at_char_boundary(&text, max_bytes).to_string();
            output_tokens = limit;
            finish_reason = FinishReason::Length;
        }
        let reply = ChatResponse {
            text,
            tool_calls,
            model: request.model.clone(),
            input_tokens,
            output_tokens,
            finish_reason,
        };
        Completion::single(Ok(reply), sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sentence_stops_at_sentence_end() {
        assert_eq!(first_sentence("A b. C d."), "A b.");
        assert_eq!(first_sentence("v1.2 is out! Yes."), "v1.2 is out!");
        assert_eq!(first_sentence("no end"), "no end");
    }

    #[test]
    fn decompose_uses_last_question_marker() {
        let out = decompose("Split into sub-questions.\nQuestion: Why is the sky blue?");
        let subs: Vec<String> = serde_json::from_str(&out).unwrap();
        assert_eq!(
            subs[0],
            "What background is needed to answer \"Why is the sky blue?\""
        );
        assert_eq!(subs.len(), 3);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_at_char_boundary("héllo", 2), "h");
        assert_eq!(truncate_at_char_boundary("abc", 10), "abc");
    }
}
