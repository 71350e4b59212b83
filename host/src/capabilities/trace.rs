//! `agentflow:agent/trace`: the agent's reasoning steps and log lines.
//!
//! Steps are numbered per task and recorded in the ledger, where `agentflow inspect`
//! shows them under their task; log lines also go to the host's `tracing` output.
//! Each guest text field is kept up to `[limits] max_trace_bytes` (the rest is cut
//! with a marker and counted in the event's `truncated_bytes`), and what the host
//! prints is escaped, so a guest can neither flood the ledger and the host's stderr
//! nor forge a host log line.

use super::views::TraceView;
use crate::bindings::trace::{Host, Level};
use crate::guest_text::{escape_guest_text, truncate_guest_text};
use crate::ledger::EventKind;
use serde_json::json;

impl TraceView<'_> {
    /// `text` bounded by `[limits] max_trace_bytes`, adding the bytes cut to `dropped`.
    fn bounded(&self, text: &str, dropped: &mut usize) -> String {
        let (kept, cut) = truncate_guest_text(text, self.site.run.settings.limits.max_trace_bytes);
        *dropped += cut;
        kept.into_owned()
    }
}

/// A recorded trace request, with `truncated_bytes` when anything was cut.
fn with_truncation(mut request: serde_json::Value, dropped: usize) -> serde_json::Value {
    if dropped > 0 {
        request["truncated_bytes"] = json!(dropped);
    }
    request
}

/// Send a guest's (already bounded) log line to the host's `tracing` output, escaped;
/// since escaping can lengthen it, it is cut again to no more than `max_bytes` or its
/// bounded length. Returns the level's name.
fn emit(level: Level, run: &str, task: u64, message: &str, max_bytes: usize) -> &'static str {
    let escaped = escape_guest_text(message);
    let (message, _) = truncate_guest_text(&escaped, max_bytes.max(message.len()));
    match level {
        Level::Debug => {
            tracing::debug!(run = %run, task, "{message}");
            "debug"
        }
        Level::Info => {
            tracing::info!(run = %run, task, "{message}");
            "info"
        }
        Level::Warn => {
            tracing::warn!(run = %run, task, "{message}");
            "warn"
        }
        Level::Error => {
            tracing::error!(run = %run, task, "{message}");
            "error"
        }
    }
}

impl Host for TraceView<'_> {
    async fn step(
        &mut self,
        thought: String,
        action: String,
        observation: String,
        confidence: f32,
    ) -> wasmtime::Result<()> {
        // Replay matches what the guest asked, so the identity keeps the full texts.
        let identity = json!({ "thought": thought, "action": action, "observation": observation });
        let mut call = self.site.begin(EventKind::TraceStep, identity)?;
        self.trace.steps += 1;
        let confidence = if confidence.is_finite() {
            confidence.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let mut dropped = 0;
        let thought = self.bounded(&thought, &mut dropped);
        let action = self.bounded(&action, &mut dropped);
        let observation = self.bounded(&observation, &mut dropped);
        self.trace.step_log.push(json!({
            "step": self.trace.steps,
            "thought": thought,
            "action": action,
            "observation": observation,
            "confidence": confidence,
        }));
        if call.replayed().is_some() {
            return Ok(());
        }
        let request = json!({
            "step": self.trace.steps,
            "thought": thought,
            "action": action,
            "observation": observation,
            "confidence": confidence,
        });
        let request = with_truncation(request, dropped);
        call.finish(self.site, true, request, serde_json::Value::Null)
            .await?;
        Ok(())
    }

    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let identity = json!({ "level": format!("{level:?}"), "message": message });
        let mut call = self.site.begin(EventKind::TraceLog, identity)?;
        if call.replayed().is_some() {
            return Ok(());
        }
        let mut dropped = 0;
        let message = self.bounded(&message, &mut dropped);
        let max_bytes = self.site.run.settings.limits.max_trace_bytes;
        let level_name = emit(
            level,
            &self.site.run.run_id,
            self.site.task_id,
            &message,
            max_bytes,
        );
        let request = json!({ "level": level_name, "message": message });
        let request = with_truncation(request, dropped);
        call.finish(self.site, true, request, serde_json::Value::Null)
            .await?;
        Ok(())
    }
}
