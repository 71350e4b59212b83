//! A run of the ledger as OpenTelemetry spans: the one conversion both the live
//! export at a run's end and `agentflow export-otlp` use, so the two send the same
//! spans.
//!
//! Everything comes from the record: start and end times are the recorded
//! timestamps, the trace id is the run id (its 32 hex digits; other ids are hashed),
//! and span ids are derived from (run, task, seq) — a re-export sends the same ids.
//!
//! The tree: the run's span (`run {agent}`), under it the root task's span
//! (`invoke_agent {agent}`), under each task the spans of the tasks it spawned and of
//! its LLM calls (`chat {model}`), tool calls (`execute_tool {tool}`), validation
//! verdicts (`validate {validator}`) and merges of children's work (`merge {subject}`).
//! Attributes follow the OpenTelemetry GenAI conventions (`gen_ai.operation.name`,
//! `gen_ai.request.model`, `gen_ai.provider.name`, `gen_ai.usage.input_tokens`, …)
//! plus `agentflow.*` ones (run and task ids, `agentflow.cost_usd`); a task's reasoning
//! steps (`trace.step`) are events of its span. The README lists them all.

use crate::ledger::query::{self, EventRow, RunRow, TaskRow};
use crate::ledger::{Connection, EventKind, LedgerError, Status};
use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status as SpanStatus, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest text put in one attribute (characters); longer ones are cut with `…`.
pub const MAX_TEXT: usize = 2048;

/// The instrumentation scope of every span and metric the host exports.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("agentflow")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// The trace id of run `run_id`: the id itself when it is 32 hex digits (as the host
/// makes them), so a backend finds a run's trace by its id; a hash of it otherwise.
pub fn trace_id(run_id: &str) -> TraceId {
    if run_id.len() == 32
        && let Ok(n) = u128::from_str_radix(run_id, 16)
        && n != 0
    {
        return TraceId::from(n);
    }
    let digest = Sha256::digest(format!("agentflow-trace:{run_id}"));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    TraceId::from_bytes(bytes)
}

/// The span id of event `seq` of task `task` of the run; `(task, 0)` is the task's
/// own span and `(0, 0)` the run's.
pub fn span_id(run_id: &str, task: u64, seq: u64) -> SpanId {
    let digest = Sha256::digest(format!("agentflow-span:{run_id}/{task}/{seq}"));
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    if bytes == [0; 8] {
        bytes[7] = 1;
    }
    SpanId::from_bytes(bytes)
}

/// A recorded time (ms since the epoch) as a `SystemTime`.
fn at(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// `text` cut to [`MAX_TEXT`] characters.
fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

fn kv(key: &'static str, value: impl Into<Value>) -> KeyValue {
    KeyValue::new(key, value)
}

fn text_kv(key: &'static str, text: &str) -> KeyValue {
    KeyValue::new(key, clip(text))
}

/// A JSON value as text: a string as is, anything else as JSON.
fn json_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The spans of run `run` (an id or a unique prefix), parents before children; `None`
/// when the ledger has no such run.
pub fn run_spans(conn: &Connection, run: &str) -> Result<Option<Vec<SpanData>>, LedgerError> {
    let Some(run) = query::run(conn, run)? else {
        return Ok(None);
    };
    let tasks = query::tasks(conn, &run.run_id)?;
    let events = query::events(conn, &run.run_id, None)?;
    let providers = providers_of(conn, &run.run_id)?;
    Ok(Some(Spans::new(&run, &providers).build(&tasks, &events)))
}

/// Model name → provider name, from the catalog the run recorded.
pub fn providers_of(
    conn: &Connection,
    run_id: &str,
) -> Result<HashMap<String, String>, LedgerError> {
    let mut out = HashMap::new();
    if let Some((config, _)) = query::run_config(conn, run_id)? {
        let config: serde_json::Value = serde_json::from_str(&config).unwrap_or_default();
        for m in config["catalog"].as_array().into_iter().flatten() {
            if let (Some(name), Some(provider)) = (m["name"].as_str(), m["provider"].as_str()) {
                out.insert(name.to_string(), provider.to_string());
            }
        }
    }
    Ok(out)
}

/// What an LLM call event was for (`agentflow.llm.purpose`): `None` for other kinds.
pub fn llm_purpose(kind: &EventKind) -> Option<&'static str> {
    match kind {
        EventKind::LlmComplete => Some("agent"),
        EventKind::LlmAttempt => Some("failed_attempt"),
        EventKind::ValidationJudge => Some("judge"),
        EventKind::MergeLlm => Some("merge"),
        _ => None,
    }
}

/// The error text of a failed event's response.
fn error_of(e: &EventRow) -> String {
    let r = &e.response;
    ["detail", "error", "message"]
        .iter()
        .find_map(|k| json_text(&r[*k]))
        .unwrap_or_else(|| format!("{} failed", e.kind))
}

/// Builds one run's spans.
struct Spans<'a> {
    run: &'a RunRow,
    providers: &'a HashMap<String, String>,
    trace: TraceId,
    scope: InstrumentationScope,
}

impl<'a> Spans<'a> {
    fn new(run: &'a RunRow, providers: &'a HashMap<String, String>) -> Spans<'a> {
        Spans {
            run,
            providers,
            trace: trace_id(&run.run_id),
            scope: scope(),
        }
    }

    fn span(
        &self,
        id: SpanId,
        parent: SpanId,
        name: String,
        (start, end): (i64, i64),
        attributes: Vec<KeyValue>,
        status: SpanStatus,
    ) -> SpanData {
        let context = SpanContext::new(
            self.trace,
            id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        SpanData {
            span_context: context,
            parent_span_id: parent,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: name.into(),
            start_time: at(start),
            end_time: at(end.max(start)),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }

    /// The ids every span of the run carries.
    fn ids(&self, task: Option<u64>) -> Vec<KeyValue> {
        let mut out = vec![kv("agentflow.run_id", self.run.run_id.clone())];
        if let Some(t) = task {
            out.push(kv("agentflow.task_id", t as i64));
        }
        out
    }

    fn build(&self, tasks: &[TaskRow], events: &[EventRow]) -> Vec<SpanData> {
        let run = self.run;
        let last_event = events.iter().map(|e| e.finished_at).max();
        let run_end = run.finished_at.or(last_event).unwrap_or(run.started_at);
        let mut attrs = self.ids(None);
        attrs.extend([
            kv("agentflow.agent", run.agent.clone()),
            kv("agentflow.status", run.status.as_str()),
            kv("agentflow.cost_usd", run.cost_usd),
            kv("gen_ai.usage.input_tokens", run.tokens_in),
            kv("gen_ai.usage.output_tokens", run.tokens_out),
            kv("agentflow.tasks", tasks.len() as i64),
        ]);
        if let Some(b) = run.budget_usd {
            attrs.push(kv("agentflow.budget_usd", b));
        }
        if let Some(f) = &run.forked_from {
            attrs.push(kv("agentflow.forked_from", f.clone()));
        }
        let run_span = span_id(&run.run_id, 0, 0);
        let mut out = vec![self.span(
            run_span,
            SpanId::INVALID,
            format!("run {}", run.agent),
            (run.started_at, run_end),
            attrs,
            status_of(run.status, run.error.as_deref()),
        )];
        let mut by_task: HashMap<u64, Vec<&EventRow>> = HashMap::new();
        for e in events {
            by_task.entry(e.task_id).or_default().push(e);
        }
        let known: std::collections::HashSet<u64> = tasks.iter().map(|t| t.task_id).collect();
        for task in tasks {
            let evs = by_task.remove(&task.task_id).unwrap_or_default();
            let parent = match task.parent_id {
                Some(p) if known.contains(&p) => span_id(&run.run_id, p, 0),
                _ => run_span,
            };
            out.extend(self.task_spans(task, parent, &evs, run_end));
        }
        out
    }

    /// The span of `task` (with its reasoning steps as events) and those of its calls.
    fn task_spans(
        &self,
        task: &TaskRow,
        parent: SpanId,
        events: &[&EventRow],
        run_end: i64,
    ) -> Vec<SpanData> {
        let run_id = &self.run.run_id;
        let me = span_id(run_id, task.task_id, 0);
        let start = task
            .started_at
            .or(events.first().map(|e| e.started_at))
            .unwrap_or(self.run.started_at);
        let end = task
            .finished_at
            .or(events.iter().map(|e| e.finished_at).max())
            .unwrap_or(run_end);
        let mut attrs = self.ids(Some(task.task_id));
        attrs.extend([
            kv("gen_ai.operation.name", "invoke_agent"),
            kv("gen_ai.agent.name", task.agent.clone()),
            kv("agentflow.agent", task.agent.clone()),
            text_kv("agentflow.description", &task.description),
            kv("agentflow.depth", task.depth as i64),
            kv("agentflow.status", task.status.as_str()),
            kv("agentflow.cost_usd", task.cost_usd),
            kv("gen_ai.usage.input_tokens", task.tokens_in),
            kv("gen_ai.usage.output_tokens", task.tokens_out),
        ]);
        if let Some(p) = task.parent_id {
            attrs.push(kv("agentflow.parent_task_id", p as i64));
        }
        if let Some(m) = &task.model {
            attrs.push(kv("gen_ai.request.model", m.clone()));
        }
        let mut own = self.span(
            me,
            parent,
            format!("invoke_agent {}", task.agent),
            (start, end),
            attrs,
            status_of(task.status, task.error.as_deref()),
        );
        let mut out = Vec::new();
        for e in events {
            if let Some(event) = step_event(e) {
                own.events.events.push(event);
            } else if let Some(span) = self.call_span(task.task_id, me, e) {
                out.push(span);
            }
        }
        out.insert(0, own);
        out
    }

    /// The span of an LLM call, tool call, validation verdict or merge; `None` for the
    /// other kinds.
    fn call_span(&self, task: u64, parent: SpanId, e: &EventRow) -> Option<SpanData> {
        let mut attrs = self.ids(Some(task));
        attrs.push(kv("agentflow.seq", e.seq as i64));
        let failed = || SpanStatus::error(clip(&error_of(e)));
        let (name, status) = if let Some(purpose) = llm_purpose(&e.kind) {
            let model = e.model.clone().unwrap_or_default();
            let provider = self.providers.get(&model).cloned().unwrap_or_default();
            attrs.extend([
                kv("gen_ai.operation.name", "chat"),
                kv("gen_ai.request.model", model.clone()),
                kv("gen_ai.provider.name", provider.clone()),
                kv("gen_ai.system", provider),
                kv("gen_ai.usage.input_tokens", e.tokens_in),
                kv("gen_ai.usage.output_tokens", e.tokens_out),
                kv("agentflow.cost_usd", e.cost_usd),
                kv("agentflow.llm.purpose", purpose),
            ]);
            if let Some(m) = e.response["model"].as_str() {
                attrs.push(kv("gen_ai.response.model", m.to_string()));
            }
            if let Some(f) = e.response["finish_reason"].as_str() {
                let reasons = vec![StringValue::from(f.to_string())];
                attrs.push(kv(
                    "gen_ai.response.finish_reasons",
                    Value::Array(reasons.into()),
                ));
            }
            let status = if e.ok { SpanStatus::Unset } else { failed() };
            if !e.ok {
                attrs.push(kv(
                    "error.type",
                    e.response["error_kind"]
                        .as_str()
                        .unwrap_or("error")
                        .to_string(),
                ));
            }
            (format!("chat {model}"), status)
        } else {
            match e.kind {
                EventKind::ToolsCall | EventKind::RecoveryCompensate => {
                    let tool = e.request["name"].as_str().unwrap_or("tool").to_string();
                    attrs.extend([
                        kv("gen_ai.operation.name", "execute_tool"),
                        kv("gen_ai.tool.name", tool.clone()),
                    ]);
                    if let Some(args) = json_text(&e.request["args"]) {
                        attrs.push(text_kv("agentflow.tool.args", &args));
                    }
                    if e.kind == EventKind::RecoveryCompensate {
                        attrs.push(kv("agentflow.tool.compensation", true));
                    }
                    if !e.ok {
                        let kind = e.response["error_kind"].as_str().unwrap_or("error");
                        attrs.push(kv("error.type", kind.to_string()));
                    }
                    let status = if e.ok { SpanStatus::Unset } else { failed() };
                    (format!("execute_tool {tool}"), status)
                }
                EventKind::ValidationResult => {
                    let validator = e.request["validator"].as_str().unwrap_or("validator");
                    let verdict = e.response["result"]["verdict"].as_str().unwrap_or("");
                    attrs.extend([
                        kv("agentflow.validator", validator.to_string()),
                        kv("agentflow.verdict", verdict.to_string()),
                    ]);
                    if let Some(k) = e.request["kind"].as_str() {
                        attrs.push(kv("agentflow.validator.kind", k.to_string()));
                    }
                    if let Some(c) = e.response["category"].as_str() {
                        attrs.push(kv("agentflow.validation.category", c.to_string()));
                    }
                    if let Some(s) = e.response["score"].as_f64() {
                        attrs.push(kv("agentflow.validation.score", s));
                    }
                    let status = match json_text(&e.response["result"]["reason"]) {
                        Some(reason) if verdict == "fail" => SpanStatus::error(clip(&reason)),
                        _ if verdict == "fail" => SpanStatus::error("validation failed"),
                        _ => SpanStatus::Unset,
                    };
                    (format!("validate {validator}"), status)
                }
                EventKind::MergeDecided | EventKind::MergeResolved => {
                    let subject = json_text(&e.request["subject"]).unwrap_or_default();
                    attrs.push(text_kv("agentflow.merge.subject", &subject));
                    if let Some(child) = e.request["child"].as_i64() {
                        attrs.push(kv("agentflow.merge.child_task", child));
                    }
                    if let Some(id) = e.request["merge_id"].as_i64() {
                        attrs.push(kv("agentflow.merge.id", id));
                    }
                    for key in ["category", "status"] {
                        if let Some(v) = e.response[key].as_str() {
                            let k = if key == "category" {
                                "agentflow.merge.category"
                            } else {
                                "agentflow.merge.status"
                            };
                            attrs.push(kv(k, v.to_string()));
                        }
                    }
                    if e.kind == EventKind::MergeResolved {
                        attrs.push(kv("agentflow.merge.resolved", true));
                    }
                    (format!("merge {subject}"), SpanStatus::Unset)
                }
                _ => return None,
            }
        };
        let id = span_id(&self.run.run_id, task, e.seq);
        Some(self.span(
            id,
            parent,
            name,
            (e.started_at, e.finished_at),
            attrs,
            status,
        ))
    }
}

/// A reasoning step (`trace.step`) as a span event; `None` for other kinds.
fn step_event(e: &EventRow) -> Option<Event> {
    if e.kind != EventKind::TraceStep {
        return None;
    }
    let r = &e.request;
    let mut attrs = vec![kv("agentflow.seq", e.seq as i64)];
    if let Some(step) = r["step"].as_i64() {
        attrs.push(kv("agentflow.step", step));
    }
    for (key, field) in [
        ("agentflow.thought", "thought"),
        ("agentflow.action", "action"),
        ("agentflow.observation", "observation"),
    ] {
        if let Some(t) = json_text(&r[field]) {
            attrs.push(text_kv(key, &t));
        }
    }
    if let Some(c) = r["confidence"].as_f64() {
        // Recorded from an f32: rounded so 0.8 reads 0.8.
        attrs.push(kv("agentflow.confidence", (c * 1e4).round() / 1e4));
    }
    Some(Event::new(
        "agentflow.reasoning_step",
        at(e.started_at),
        attrs,
        0,
    ))
}

/// A run's or task's status as a span status.
fn status_of(status: Status, error: Option<&str>) -> SpanStatus {
    match status {
        Status::Failed => SpanStatus::error(clip(error.unwrap_or("failed"))),
        Status::Completed => SpanStatus::Ok,
        _ => SpanStatus::Unset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_id_is_its_trace_id_and_span_ids_are_stable_and_distinct() {
        let run = "0123456789abcdef0123456789abcdef";
        assert_eq!(trace_id(run).to_string(), run);
        assert_eq!(trace_id("not-hex"), trace_id("not-hex"));
        assert_ne!(trace_id("not-hex"), TraceId::INVALID);
        assert_eq!(span_id(run, 2, 5), span_id(run, 2, 5));
        let ids: std::collections::HashSet<SpanId> = [(0, 0), (1, 0), (1, 1), (2, 0), (11, 0)]
            .iter()
            .map(|(t, s)| span_id(run, *t, *s))
            .collect();
        assert_eq!(ids.len(), 5);
        assert_ne!(span_id(run, 1, 0), span_id("another", 1, 0));
    }

    #[test]
    fn long_texts_are_clipped_on_a_char_boundary() {
        let long = "é".repeat(MAX_TEXT + 5);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), MAX_TEXT + 1);
        assert!(clipped.ends_with('…'));
        assert_eq!(clip("short"), "short");
    }
}
