//! `agentflow:agent/checkpoint`: semantic checkpoints.
//!
//! A save stores the guest's state bytes (content-addressed in `blobs`) with its note,
//! plus what the host knows at that point (`host_state`: the step number, the recent
//! reasoning steps, the ledger seqs of the tool outputs so far, the children finished
//! so far, the run's context hash), indexed in `checkpoints` in the same transaction
//! as its event. `load` returns the latest checkpoint of the task — after a resume
//! from a checkpoint, the one the task restarts from.

use super::views::CheckpointView;
use crate::bindings::checkpoint::{Checkpoint, Host};
use crate::ledger::checkpoints::NewCheckpoint;
use crate::ledger::{EventKind, blobs, now_ms};
use serde_json::json;

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
            self.progress.checkpoints = number;
            self.progress.last_checkpoint = Some(Checkpoint {
                state,
                note,
                step: request["step"].as_u64().unwrap_or(self.trace.steps as u64) as u32,
                saved_at_ms: request["saved_at"].as_u64().unwrap_or(0),
            });
            return Ok(Ok(number));
        }
        let number = self.progress.checkpoints + 1;
        let step = self.trace.steps;
        let saved_at = now_ms();
        let host_state = json!({
            "step": step,
            "recent_steps": self.trace.step_log,
            "tool_outputs": self.progress.tool_seqs,
            "children_done": self.progress.children_done,
            "context_hash": self.site.run.settings.context_hash,
        });
        let request =
            json!({ "note": note, "size": state.len(), "state_hash": hash, "step": step });
        let (run_id, task_id) = (self.site.run.run_id.clone(), self.site.task_id);
        let (bytes, note_row) = (state.clone(), note.clone());
        let host_state = host_state.to_string();
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
                    host_state: &host_state,
                    saved_at,
                })
            },
        )
        .await?;
        self.progress.checkpoints = number;
        self.progress.last_checkpoint = Some(Checkpoint {
            state,
            note,
            step,
            saved_at_ms: saved_at as u64,
        });
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
