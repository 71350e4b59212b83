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
//!
//! A resume reads a run's whole record in one query ([`Replay::attempts_stored`]) and
//! matches calls in memory. The calls' requests and responses stay the text the ledger
//! stored until a replayed call reads them, so only what is read is parsed, and a long
//! string moved to `blobs` is read from the ledger only when its call is replayed.

pub mod nondet;

use crate::ledger::query::{EventRow, StoredEvent, StoredJson};
use crate::ledger::{Connection, EventKind, Ledger, LedgerError};
use nondet::{NondetRead, reads_of_event};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::VecDeque;

/// One recorded host call. Its request and response stay as the ledger stored them
/// until a replayed call reads them ([`RecordedCall::request`],
/// [`RecordedCall::response`]): most replayed calls read one of them or none.
#[derive(Clone, Debug)]
pub struct RecordedCall {
    pub seq: u64,
    pub kind: EventKind,
    pub ok: bool,
    pub request_hash: String,
    pub model: Option<String>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    request: Payload,
    response: Payload,
    /// Where the payloads' blob references are read from, when they have any.
    blobs: Option<Blobs>,
}

/// A recorded payload: parsed already, or as stored.
#[derive(Clone, Debug)]
enum Payload {
    Parsed(Value),
    Stored(StoredJson),
}

/// The run's ledger, read for the blobs of a call's payloads when they are read.
#[derive(Clone)]
struct Blobs(Ledger);

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blobs({})", self.0.name())
    }
}

impl RecordedCall {
    /// The recorded request, parsed, its blobs read.
    pub fn request(&self) -> Result<Value, LedgerError> {
        self.read(&self.request)
    }

    /// The recorded response, parsed, its blobs read.
    pub fn response(&self) -> Result<Value, LedgerError> {
        self.read(&self.response)
    }

    /// The recorded response decoded as `T` (straight from the stored text when it
    /// has no blobs); the inner error when it does not decode.
    pub fn response_as<T: DeserializeOwned>(
        &self,
    ) -> Result<Result<T, serde_json::Error>, LedgerError> {
        match &self.response {
            Payload::Stored(text) if !text.has_blob_refs() => {
                Ok(serde_json::from_str(text.as_str()))
            }
            _ => Ok(serde_json::from_value(self.response()?)),
        }
    }

    fn read(&self, payload: &Payload) -> Result<Value, LedgerError> {
        match (payload, &self.blobs) {
            (Payload::Parsed(value), _) => Ok(value.clone()),
            (Payload::Stored(text), Some(Blobs(ledger))) if text.has_blob_refs() => {
                ledger.with_reader(|conn| text.resolve(conn))?
            }
            (Payload::Stored(text), _) => Ok(text.parse()),
        }
    }
}

/// The recorded calls of one task, consumed in order.
#[derive(Debug, Default)]
pub struct Replay {
    calls: VecDeque<RecordedCall>,
}

/// One attempt at a task as recorded: its calls, its clock/random values, and the
/// `validation.retry` marker that started it (none for the first).
pub type RecordedAttempt = (Replay, VecDeque<NondetRead>, Option<Value>);

/// An event on its way into a replay.
trait Source {
    fn kind(&self) -> &EventKind;
    fn seq(&self) -> u64;
    /// The response, for the events replay reads as it builds (clock/random reads,
    /// attempt markers).
    fn response_now(&self) -> Result<Value, LedgerError>;
    fn into_call(self) -> RecordedCall;
}

impl Source for EventRow {
    fn kind(&self) -> &EventKind {
        &self.kind
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn response_now(&self) -> Result<Value, LedgerError> {
        Ok(self.response.clone())
    }
    fn into_call(self) -> RecordedCall {
        RecordedCall {
            seq: self.seq,
            kind: self.kind,
            ok: self.ok,
            request_hash: self.request_hash,
            model: self.model,
            tokens_in: self.tokens_in,
            tokens_out: self.tokens_out,
            cost_usd: self.cost_usd,
            request: Payload::Parsed(self.request),
            response: Payload::Parsed(self.response),
            blobs: None,
        }
    }
}

/// A stored event with where to read its blobs: now (`conn`), or when a replayed
/// call reads its payloads (`ledger`).
struct Stored<'a> {
    event: StoredEvent,
    conn: &'a Connection,
    ledger: &'a Ledger,
}

impl Source for Stored<'_> {
    fn kind(&self) -> &EventKind {
        &self.event.kind
    }
    fn seq(&self) -> u64 {
        self.event.seq
    }
    fn response_now(&self) -> Result<Value, LedgerError> {
        self.event.response.resolve(self.conn)
    }
    fn into_call(self) -> RecordedCall {
        let e = self.event;
        let blobs = (e.request.has_blob_refs() || e.response.has_blob_refs())
            .then(|| Blobs(self.ledger.clone()));
        RecordedCall {
            seq: e.seq,
            kind: e.kind,
            ok: e.ok,
            request_hash: e.request_hash,
            model: e.model,
            tokens_in: e.tokens_in,
            tokens_out: e.tokens_out,
            cost_usd: e.cost_usd,
            request: Payload::Stored(e.request),
            response: Payload::Stored(e.response),
            blobs,
        }
    }
}

/// Split a task's events into attempts (at `validation.retry` markers, when
/// `by_attempt`): each attempt's calls and clock/random values, and its marker.
fn split<S: Source>(
    events: impl IntoIterator<Item = S>,
    by_attempt: bool,
) -> Result<Vec<RecordedAttempt>, LedgerError> {
    let mut out = Vec::new();
    let (mut replay, mut nondet, mut marker) = (Replay::default(), VecDeque::new(), None);
    for e in events {
        match e.kind() {
            EventKind::ValidationRetry if by_attempt => {
                let next = Some(e.response_now()?);
                let attempt = std::mem::take(&mut replay);
                out.push((attempt, std::mem::take(&mut nondet), marker));
                marker = next;
            }
            EventKind::WasiNondet => match reads_of_event(&e.response_now()?) {
                Ok(reads) => nondet.extend(reads),
                // Left out: the guest's reads go live there and the replay reports
                // the divergence they cause.
                Err(why) => tracing::warn!(seq = e.seq(), %why, "unreadable wasi.nondet event"),
            },
            kind if kind.is_replayed() => replay.calls.push_back(e.into_call()),
            _ => {}
        }
    }
    out.push((replay, nondet, marker));
    Ok(out)
}

impl Replay {
    /// Split a task's events into the calls to replay and the clock/random values.
    pub fn from_events(events: Vec<EventRow>) -> (Replay, VecDeque<NondetRead>) {
        let (replay, nondet, _) = split(events, false).expect("rows read already").remove(0);
        (replay, nondet)
    }

    /// Split a task's events into attempts at its `validation.retry` markers: each
    /// attempt's calls, clock/random values, and the marker that started it (none for
    /// the first).
    pub fn attempts(events: Vec<EventRow>) -> Vec<RecordedAttempt> {
        split(events, true).expect("rows read already")
    }

    /// [`Replay::attempts`] from a task's stored events ([`crate::ledger::query::stored_events`]):
    /// the clock/random reads and markers are read now (their blobs on `conn`); the
    /// calls keep their payloads as stored, parsed and their blobs read from `ledger`
    /// only when a replayed call reads them.
    pub fn attempts_stored(
        events: Vec<StoredEvent>,
        conn: &Connection,
        ledger: &Ledger,
    ) -> Result<Vec<RecordedAttempt>, LedgerError> {
        let stored = events.into_iter().map(|event| Stored {
            event,
            conn,
            ledger,
        });
        split(stored, true)
    }

    /// Whether a replay reads the payloads of events of `kind`: the calls', the
    /// clock/random reads' and the attempt markers'.
    pub fn reads_payloads_of(kind: &EventKind) -> bool {
        kind.is_replayed() || matches!(kind, EventKind::WasiNondet | EventKind::ValidationRetry)
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
