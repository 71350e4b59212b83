//! `agentflow:agent/trace`: the agent's reasoning steps and log lines.
//!
//! Steps are numbered per task and recorded in the ledger, where `agentflow inspect`
//! shows them under their task; log lines also go to the host's `tracing` output.

use super::{Call, TaskCtx};
use crate::bindings::trace::{Host, Level};
use serde_json::json;

impl Host for TaskCtx {
    async fn step(
        &mut self,
        thought: String,
        action: String,
        observation: String,
        confidence: f32,
    ) -> wasmtime::Result<()> {
        let started_at = self.admit()?;
        self.steps += 1;
        let confidence = if confidence.is_finite() {
            confidence.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let identity = json!({ "thought": thought, "action": action, "observation": observation });
        self.step_log
            .push(json!({ "step": self.steps, "thought": thought, "action": action }));
        if self.step_log.len() > 20 {
            self.step_log.remove(0);
        }
        if self.replayed("trace.step", &identity)?.is_some() {
            return Ok(());
        }
        let request = json!({
            "step": self.steps,
            "thought": thought,
            "action": action,
            "observation": observation,
            "confidence": confidence,
        });
        self.record(
            Call::plain(
                "trace.step",
                true,
                request,
                serde_json::Value::Null,
                started_at,
            )
            .with_identity(identity),
        )
        .await?;
        Ok(())
    }

    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let started_at = self.admit()?;
        let identity = json!({ "level": format!("{level:?}"), "message": message });
        if self.replayed("trace.log", &identity)?.is_some() {
            return Ok(());
        }
        let (run, task) = (&self.run.run_id, self.task_id);
        let level_name = match level {
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
        };
        let request = json!({ "level": level_name, "message": message });
        self.record(
            Call::plain(
                "trace.log",
                true,
                request,
                serde_json::Value::Null,
                started_at,
            )
            .with_identity(identity),
        )
        .await?;
        Ok(())
    }
}
