//! `agentflow:agent/checkpoint`: semantic checkpoints.
//!
//! A save stores the guest's state bytes (content-addressed in `blobs`) with its note
//! and the step count, indexed in `checkpoints` in the same transaction as its event.
//! `load` returns the latest checkpoint of the task.

use super::{Call, TaskCtx};
use crate::bindings::checkpoint::{Checkpoint, Host};
use crate::ledger::{blobs, now_ms};
use rusqlite::params;
use serde_json::json;

impl Host for TaskCtx {
    async fn save(
        &mut self,
        state: Vec<u8>,
        note: String,
    ) -> wasmtime::Result<Result<u32, String>> {
        let started_at = self.admit()?;
        let limit = self.run.limits.max_checkpoint_bytes;
        if state.len() > limit {
            let msg = format!(
                "checkpoint state is {} bytes, more than limits.max_checkpoint_bytes ({limit})",
                state.len()
            );
            let request = json!({ "note": note, "size": state.len() });
            self.record(Call::plain(
                "checkpoint.save",
                false,
                request,
                json!({ "error": msg }),
                started_at,
            ))
            .await?;
            return Ok(Err(msg));
        }
        let number = self.checkpoints + 1;
        let step = self.steps;
        let saved_at = now_ms();
        let hash = blobs::sha256_hex(&state);
        let request =
            json!({ "note": note, "size": state.len(), "state_hash": hash, "step": step });
        let (run_id, task_id) = (self.run.run_id.clone(), self.task_id);
        let (bytes, note_row) = (state.clone(), note.clone());
        self.record_with(
            Call::plain("checkpoint.save", true, request, json!({ "number": number }), started_at),
            move |w, seq| {
                let hash = blobs::put(w.conn(), &bytes)?;
                w.conn().execute(
                    "INSERT INTO checkpoints (run_id, task_id, number, event_seq, note, state_hash, step, saved_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![run_id, task_id as i64, number, seq as i64, note_row, hash, step, saved_at],
                )?;
                Ok(())
            },
        )
        .await?;
        self.checkpoints = number;
        self.last_checkpoint = Some(Checkpoint {
            state,
            note,
            step,
            saved_at_ms: saved_at as u64,
        });
        Ok(Ok(number))
    }

    async fn load(&mut self) -> wasmtime::Result<Option<Checkpoint>> {
        let started_at = self.admit()?;
        let found = self.last_checkpoint.clone();
        let response = match &found {
            Some(c) => json!({ "number": self.checkpoints, "note": c.note, "step": c.step,
                               "state_hash": blobs::sha256_hex(&c.state) }),
            None => serde_json::Value::Null,
        };
        self.record(Call::plain(
            "checkpoint.load",
            true,
            serde_json::Value::Null,
            response,
            started_at,
        ))
        .await?;
        Ok(found)
    }
}
