//! `agentflow:agent/checkpoint`: semantic checkpoints.
//!
//! A save stores the guest's state bytes (content-addressed in `blobs`) with its note,
//! plus what the host knows at that point (`host_state`): the step number, every
//! reasoning step so far (thought, action, observation, confidence), a name → result
//! map of the tool outputs so far (and the ledger seqs of the side-effecting ones), the
//! children finished so far, the **context hash** of what the task had seen (its input,
//! every LLM prompt, every tool result) and the run's context hash — indexed in
//! `checkpoints` in the same transaction as its event. `load` returns the latest
//! checkpoint of the task — after a restart from a checkpoint, the one the task
//! restarts from — with a ready **restart context** ("continue from step N; here is
//! what you already did") for the agent to prepend to its next LLM request.

use super::views::CheckpointView;
use super::{Progress, TraceState};
use crate::bindings::checkpoint::{Checkpoint, Host};
use crate::ledger::checkpoints::NewCheckpoint;
use crate::ledger::{EventKind, blobs, now_ms};
use serde_json::{Value, json};
use sha2::Digest;
use std::fmt::Write as _;

/// How much of each tool result a checkpoint keeps (characters); the full result
/// stays in the ledger.
pub const TOOL_OUTPUT_CHARS: usize = 2_000;

/// `text` cut to [`TOOL_OUTPUT_CHARS`], marked when cut.
pub(crate) fn cut(text: &str) -> String {
    match text.char_indices().nth(TOOL_OUTPUT_CHARS) {
        None => text.to_string(),
        Some((at, _)) => format!(
            "{}… [{} more bytes in the ledger]",
            &text[..at],
            text.len() - at
        ),
    }
}

/// A restart from a checkpoint: its number, the checkpoint as the guest loads it and
/// the host state saved with it.
pub struct Restart {
    pub number: u32,
    pub checkpoint: Checkpoint,
    pub host_state: Value,
}

impl Restart {
    /// Rebuild a checkpoint read back from the ledger (`state`, `note`, `step`,
    /// `saved_at`, `host_state` as saved).
    pub fn from_saved(
        number: u32,
        state: Vec<u8>,
        note: String,
        step: u32,
        saved_at_ms: u64,
        host_state: Value,
    ) -> Restart {
        let checkpoint = Checkpoint {
            state,
            context_hash: host_state["task_context_hash"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            restart_context: restart_context(&note, step, &host_state),
            note,
            step,
            saved_at_ms,
        };
        Restart {
            number,
            checkpoint,
            host_state,
        }
    }

    /// Seed a restarted task's capability state from the checkpoint: its step count,
    /// steps and tool outputs (so later checkpoints carry them too), and its digest of
    /// what it has seen (chained from the checkpoint's context hash).
    pub(crate) fn seed(
        self,
        trace: &mut TraceState,
        progress: &mut Progress,
        seen: &mut sha2::Sha256,
    ) {
        trace.steps = self.checkpoint.step;
        trace.step_log = self.host_state["steps"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        progress.tool_outputs = self.host_state["tool_results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p[0].as_str()?.to_string(), p[1].as_str()?.to_string())))
            .collect();
        progress.tool_output_counts.clear();
        seen.update(self.checkpoint.context_hash.as_bytes());
        progress.checkpoints = self.number;
        progress.last_checkpoint = Some(self.checkpoint);
    }
}

/// The text a task restarted from a checkpoint prepends to its next LLM request:
/// where it stopped, its reasoning steps and its tool results up to the save.
pub fn restart_context(note: &str, step: u32, host_state: &Value) -> String {
    let mut out = format!(
        "You are continuing a task from its checkpoint at step {step} (\"{note}\"). \
         Do not repeat what is below: continue from step {}.\n",
        step + 1
    );
    let steps = host_state["steps"].as_array().cloned().unwrap_or_default();
    if !steps.is_empty() {
        out.push_str("\nWhat you already did:\n");
    }
    for s in &steps {
        let _ = writeln!(
            out,
            "Step {}: thought: {} | action: {} | observation: {} | confidence: {:.2}",
            s["step"],
            s["thought"].as_str().unwrap_or(""),
            s["action"].as_str().unwrap_or(""),
            s["observation"].as_str().unwrap_or(""),
            s["confidence"].as_f64().unwrap_or(0.0)
        );
    }
    let results = host_state["tool_results"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !results.is_empty() {
        out.push_str("\nTool results so far:\n");
    }
    for r in &results {
        let _ = writeln!(
            out,
            "- {}: {}",
            r[0].as_str().unwrap_or("?"),
            r[1].as_str().unwrap_or("")
        );
    }
    out
}

impl CheckpointView<'_> {
    /// What the host knows at a save, for `host_state`.
    fn host_state(&self, step: u32) -> Value {
        json!({
            "step": step,
            "steps": self.trace.step_log,
            "tool_results": self.progress.tool_outputs,
            "tool_outputs": self.progress.tool_seqs,
            "children_done": self.progress.children_done,
            "task_context_hash": hex::encode(self.site.seen.clone().finalize()),
            "context_hash": self.site.run.settings.context_hash,
        })
    }
}

impl Host for CheckpointView<'_> {
    async fn save(
        &mut self,
        state: Vec<u8>,
        note: String,
    ) -> wasmtime::Result<Result<u32, String>> {
        let hash = blobs::sha256_hex(&state);
        let identity = json!({ "note": note, "state_hash": hash });
        let mut call = self.site.begin(EventKind::CheckpointSave, identity)?;
        let limit = self.site.run.settings.limits.max_checkpoint_bytes;
        if state.len() > limit {
            let msg = format!(
                "checkpoint state is {} bytes, more than limits.max_checkpoint_bytes ({limit})",
                state.len()
            );
            if call.replayed().is_some() {
                return Ok(Err(msg));
            }
            let request = json!({ "note": note, "size": state.len() });
            call.finish(self.site, false, request, json!({ "error": msg }))
                .await?;
            return Ok(Err(msg));
        }
        if let Some(rec) = call.replayed() {
            let response = rec.response()?;
            if !rec.ok {
                return Ok(Err(response["error"]
                    .as_str()
                    .unwrap_or("checkpoint refused")
                    .to_string()));
            }
            let number = response["number"].as_u64().unwrap_or(0) as u32;
            let request = rec.request()?;
            let step = request["step"].as_u64().unwrap_or(self.trace.steps as u64) as u32;
            // The replayed task has rebuilt the same steps and results: the same context.
            let restart = Restart::from_saved(
                number,
                state,
                note,
                step,
                request["saved_at"].as_u64().unwrap_or(0),
                self.host_state(step),
            );
            self.progress.checkpoints = number;
            self.progress.last_checkpoint = Some(restart.checkpoint);
            return Ok(Ok(number));
        }
        let number = self.progress.checkpoints + 1;
        let step = self.trace.steps;
        let saved_at = now_ms();
        let host_state = self.host_state(step);
        let request =
            json!({ "note": note, "size": state.len(), "state_hash": hash, "step": step });
        let (run_id, task_id) = (self.site.run.run_id.clone(), self.site.task_id);
        let (bytes, note_row) = (state.clone(), note.clone());
        let host_text = host_state.to_string();
        // The host state is recorded with every checkpoint: count it like the events.
        self.site.ledger_bytes += host_text.len() as u64;
        call.finish_with(
            self.site,
            true,
            request,
            json!({ "number": number }),
            move |w, seq| {
                w.save_checkpoint(&NewCheckpoint {
                    run_id: &run_id,
                    task_id,
                    number,
                    event_seq: seq,
                    note: &note_row,
                    state: &bytes,
                    step,
                    host_state: &host_text,
                    saved_at,
                })
            },
        )
        .await?;
        let restart = Restart::from_saved(number, state, note, step, saved_at as u64, host_state);
        self.progress.checkpoints = number;
        self.progress.last_checkpoint = Some(restart.checkpoint);
        Ok(Ok(number))
    }

    async fn load(&mut self) -> wasmtime::Result<Option<Checkpoint>> {
        let mut call = self
            .site
            .begin(EventKind::CheckpointLoad, serde_json::Value::Null)?;
        let found = self.progress.last_checkpoint.clone();
        if call.replayed().is_some() {
            return Ok(found);
        }
        let response = match &found {
            Some(c) => json!({ "number": self.progress.checkpoints, "note": c.note, "step": c.step,
                               "state_hash": blobs::sha256_hex(&c.state) }),
            None => serde_json::Value::Null,
        };
        call.finish(self.site, true, serde_json::Value::Null, response)
            .await?;
        Ok(found)
    }
}
