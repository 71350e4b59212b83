//! Replaying a task from the ledger.
//!
//! A resumed task runs its guest again from the start. Every host call it makes is
//! matched against the next recorded call of that task — by kind and by the hash of
//! the call's identity — and answered with the recorded result instead of being
//! performed: LLM calls are not re-sent, tools not re-run, children not re-spawned.
//! Clock and random reads are answered from the recorded `wasi.nondet` values in the
//! same way. When the record runs out, the task simply continues live. A call that
//! does not match is non-determinism: the guest (or its config) changed.
//!
//! The guest re-executes from the start, so a result that was recorded but never
//! reached the guest (a crash right after the commit) is simply delivered during the
//! replay — the guest had not acted on it yet, so there is nothing to diverge from.

pub mod nondet;

use crate::ledger::EventKind;
use crate::ledger::query::EventRow;
use nondet::{NondetRead, reads_of_event};
use serde_json::Value;
use std::collections::VecDeque;

/// One recorded host call.
#[derive(Clone, Debug)]
pub struct RecordedCall {
    pub seq: u64,
    pub kind: EventKind,
    pub ok: bool,
    pub request_hash: String,
    pub request: Value,
    pub response: Value,
    pub model: Option<String>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    /// For `checkpoint.save`: the saved state.
    pub state: Option<Vec<u8>>,
}

/// The recorded calls of one task, consumed in order.
#[derive(Debug, Default)]
pub struct Replay {
    calls: VecDeque<RecordedCall>,
}

impl Replay {
    /// Split a task's events into the calls to replay and the clock/random values.
    pub fn from_events(events: Vec<EventRow>) -> (Replay, VecDeque<NondetRead>) {
        let mut calls = VecDeque::new();
        let mut nondet = VecDeque::new();
        for e in events {
            if e.kind == EventKind::WasiNondet {
                match reads_of_event(&e.response) {
                    Ok(reads) => nondet.extend(reads),
                    // Left out: the guest's reads go live there and the replay reports
                    // the divergence they cause.
                    Err(why) => tracing::warn!(seq = e.seq, %why, "unreadable wasi.nondet event"),
                }
                continue;
            }
            if !e.kind.is_replayed() {
                continue;
            }
            calls.push_back(RecordedCall {
                seq: e.seq,
                kind: e.kind,
                ok: e.ok,
                request_hash: e.request_hash,
                request: e.request,
                response: e.response,
                model: e.model,
                tokens_in: e.tokens_in,
                tokens_out: e.tokens_out,
                cost_usd: e.cost_usd,
                state: None,
            });
        }
        (Replay { calls }, nondet)
    }

    /// Split a task's events into attempts at its `validation.retry` markers: each
    /// attempt's calls, clock/random values, and the marker that started it (none for
    /// the first).
    pub fn attempts(events: Vec<EventRow>) -> Vec<(Replay, VecDeque<NondetRead>, Option<Value>)> {
        let mut out = Vec::new();
        let mut current = Vec::new();
        let mut marker = None;
        for e in events {
            if e.kind == EventKind::ValidationRetry {
                let (r, n) = Replay::from_events(std::mem::take(&mut current));
                out.push((r, n, marker.take()));
                marker = Some(e.response.clone());
                continue;
            }
            current.push(e);
        }
        let (r, n) = Replay::from_events(current);
        out.push((r, n, marker));
        out
    }

    /// The next recorded call.
    pub fn peek(&self) -> Option<&RecordedCall> {
        self.calls.front()
    }

    /// Take the next recorded call.
    pub fn pop(&mut self) -> Option<RecordedCall> {
        self.calls.pop_front()
    }

    /// Recorded calls not yet replayed.
    pub fn remaining(&self) -> usize {
        self.calls.len()
    }

    /// Attach checkpoint states (by event seq) so replayed saves restore them.
    pub fn attach_states(&mut self, mut state_of: impl FnMut(&RecordedCall) -> Option<Vec<u8>>) {
        for c in self
            .calls
            .iter_mut()
            .filter(|c| c.kind == EventKind::CheckpointSave && c.ok)
        {
            c.state = state_of(c);
        }
    }
}

/// Describe a call (of kind `kind`) for a non-determinism error.
pub fn describe(kind: impl std::fmt::Display, hash: &str, seq: Option<u64>) -> String {
    // The first 12 characters, not bytes: a damaged ledger's hash need not be hex.
    let short: String = hash.chars().take(12).collect();
    match seq {
        Some(seq) => format!("{kind} (request {short}, seq {seq})"),
        None => format!("{kind} (request {short})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_shortens_hashes_that_are_not_hex() {
        // Found by fuzzing (replay_events): slicing the first 12 bytes of a hash from a
        // damaged or edited ledger panicked inside a multi-byte character.
        let hash = "aaaaaaaaaaaébbbb";
        assert_eq!(
            describe(EventKind::ToolsCall, hash, Some(3)),
            "tools.call (request aaaaaaaaaaaé, seq 3)"
        );
        assert_eq!(
            describe(EventKind::LlmComplete, "abc", None),
            "llm.complete (request abc)"
        );
    }
}

/// What to do when a replaying guest makes a call the ledger did not record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DivergencePolicy {
    /// Fail the task with the non-determinism error (default).
    #[default]
    Fail,
    /// Restart the guest live from its last semantic checkpoint; the history after it
    /// stays in the ledger as history.
    FromCheckpoint,
}
