//! The one path of every host function: admit → replay-or-execute → record.
//!
//! A host function begins a [`DurableCall`] with [`CallSite::begin`] (or
//! [`CallSite::begin_effect`] for a call with side effects). Beginning counts the call
//! against `limits.max_host_calls` and, while the task replays its record, matches it
//! against the next recorded call (kind and identity hash): a match is returned as
//! [`Recorded::Result`] for the function to answer the guest with, instead of running
//! the call again. Live, the function does its own work and ends the call with
//! [`DurableCall::finish`] (or [`DurableCall::finish_call`] for model usage), which
//! appends it to the ledger — with the clock and random reads made since the last
//! call — before the guest sees the result.
//!
//! This is the shape of Golem's durable call session: a new WIT function brings its
//! own logic and one session; the kind and identity are given once, at the start.

use super::{Call, CallSite};
use crate::ledger::{EventKind, now_ms};
use crate::replay::{RecordedCall, describe};
use serde_json::Value;

/// What the record says about a call being begun.
pub(crate) enum Recorded {
    /// Not in the record (or the task is live): run it.
    Live,
    /// The recorded result: answer the guest with it, without running the call.
    Result(RecordedCall),
    /// A side effect whose intent was recorded but not its result: the host stopped
    /// while the effect may or may not have happened. Holds the intent.
    InDoubt(RecordedCall),
}

/// A host call between its start and its record.
pub(crate) struct DurableCall {
    kind: EventKind,
    identity: Value,
    /// When the call started (ms since the epoch).
    pub started_at: i64,
    /// What the record holds for it.
    pub recorded: Recorded,
}

impl DurableCall {
    /// The recorded result when replaying; `None` when the call must run live (or is
    /// in doubt: see [`DurableCall::recorded`]).
    pub fn replayed(&mut self) -> Option<RecordedCall> {
        match std::mem::replace(&mut self.recorded, Recorded::Live) {
            Recorded::Result(rec) => Some(rec),
            other => {
                self.recorded = other;
                None
            }
        }
    }

    /// The call's event, to complete (model usage, cost) and pass to
    /// [`DurableCall::finish_call`], which adds the identity.
    pub fn call(&self, ok: bool, request: Value, response: Value) -> Call {
        Call::plain(self.kind.clone(), ok, request, response, self.started_at)
    }

    /// Record the live call's result; returns its sequence number when the call is an
    /// effect (written durably), `None` when it was buffered (see [`CallSite::record`]).
    pub async fn finish(
        self,
        site: &mut CallSite,
        ok: bool,
        request: Value,
        response: Value,
    ) -> wasmtime::Result<Option<u64>> {
        let call = self
            .call(ok, request, response)
            .with_identity(self.identity);
        site.record(call).await
    }

    /// Like [`DurableCall::finish`], running `extra` in the same transaction with the
    /// event's sequence number (e.g. to index a checkpoint).
    pub async fn finish_with<F>(
        self,
        site: &mut CallSite,
        ok: bool,
        request: Value,
        response: Value,
        extra: F,
    ) -> wasmtime::Result<Option<u64>>
    where
        F: FnOnce(&mut crate::ledger::Writer, u64) -> crate::ledger::SqlResult<()> + Send + 'static,
    {
        let call = self
            .call(ok, request, response)
            .with_identity(self.identity);
        site.record_with(call, extra).await
    }

    /// Record the live call's result given as a whole [`Call`] (model usage, cost);
    /// its kind, identity and start are the session's.
    pub async fn finish_call(
        self,
        site: &mut CallSite,
        call: Call,
    ) -> wasmtime::Result<Option<u64>> {
        let call = Call {
            kind: self.kind,
            identity: Some(self.identity),
            started_at: self.started_at,
            ..call
        };
        site.record(call).await
    }

    /// Record the intent of a side-effecting call before it runs (`intent_kind`, e.g.
    /// `tools.intent`): a crash after this and before the result leaves it in doubt.
    pub async fn write_intent(
        &self,
        site: &mut CallSite,
        intent_kind: EventKind,
        request: Value,
    ) -> wasmtime::Result<Option<u64>> {
        let call = Call::plain(intent_kind, true, request, Value::Null, self.started_at)
            .with_identity(self.identity.clone());
        site.record(call).await
    }
}

impl CallSite {
    /// Begin host call `kind`, identified for replay by `identity` (what the guest
    /// asked, independent of host state).
    pub(crate) fn begin(
        &mut self,
        kind: EventKind,
        identity: Value,
    ) -> wasmtime::Result<DurableCall> {
        let started_at = self.admit()?;
        let recorded = match self.replayed(&kind, &identity)? {
            Some(rec) => Recorded::Result(rec),
            None => Recorded::Live,
        };
        Ok(DurableCall {
            kind,
            identity,
            started_at,
            recorded,
        })
    }

    /// Begin a side-effecting host call whose intent is recorded first as
    /// `intent_kind`: when replaying, a recorded intent is followed by its result, or
    /// the call is [`Recorded::InDoubt`].
    pub(crate) fn begin_effect(
        &mut self,
        kind: EventKind,
        intent_kind: EventKind,
        identity: Value,
    ) -> wasmtime::Result<DurableCall> {
        let intent_next = self
            .replay
            .as_ref()
            .and_then(|r| r.peek())
            .is_some_and(|r| r.kind == intent_kind);
        if !intent_next {
            return self.begin(kind, identity);
        }
        let started_at = self.admit()?;
        let Some(intent) = self.replayed(&intent_kind, &identity)? else {
            unreachable!("an intent was next")
        };
        let recorded = match self.replayed(&kind, &identity)? {
            Some(rec) => Recorded::Result(rec),
            None => Recorded::InDoubt(intent),
        };
        Ok(DurableCall {
            kind,
            identity,
            started_at,
            recorded,
        })
    }

    /// During a replay: the recorded result of this call, after checking that the
    /// guest made the same call as recorded (kind and identity hash). `None` when
    /// live — including the moment the record runs out, from which on the task is live.
    fn replayed(
        &mut self,
        kind: &EventKind,
        identity: &Value,
    ) -> wasmtime::Result<Option<RecordedCall>> {
        if self.replay.is_none() {
            return Ok(None);
        }
        if let Some(why) = self.nondet.take_divergence() {
            return Err(self.diverge(format!("non-determinism in clock/random reads: {why}")));
        }
        let hash = crate::ledger::identity_hash(identity);
        let replay = self.replay.as_mut().expect("checked above");
        match replay.peek() {
            None => {
                self.replay = None;
                Ok(None)
            }
            Some(rec) if rec.kind == *kind && rec.request_hash == hash => Ok(replay.pop()),
            Some(rec) => {
                let msg = format!(
                    "non-determinism: the guest called {} but the ledger recorded {}",
                    describe(kind, &hash, None),
                    describe(&rec.kind, &rec.request_hash, Some(rec.seq))
                );
                Err(self.diverge(msg))
            }
        }
    }

    /// Record a divergence and return the trap that stops the guest.
    pub(crate) fn diverge(&mut self, msg: String) -> wasmtime::Error {
        self.diverged = Some(msg.clone());
        self.replay = None;
        wasmtime::format_err!("{msg}")
    }

    /// Count one host call; past `limits.max_host_calls` the agent is stopped (trap),
    /// as it is after a failed buffered write of its. Returns the call's start time.
    fn admit(&mut self) -> wasmtime::Result<i64> {
        self.check_writes()?;
        self.host_calls += 1;
        let limit = self.run.settings.limits.max_host_calls;
        if self.host_calls > limit {
            let kill = super::Kill::HostCalls { limit };
            let msg = kill.to_string();
            self.kill = Some(kill);
            return Err(wasmtime::format_err!("{msg}"));
        }
        Ok(now_ms())
    }
}
