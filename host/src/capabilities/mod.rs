//! The host side of each WIT interface, one module per interface, plus WASI's clocks
//! and random made recordable.
//!
//! Every guest call enters through exactly one of these modules, and every host
//! function takes the same path (`durable.rs`): begin the call (count it against the
//! agent's limit, and when replaying take its recorded result), perform it live
//! (asking the supervisor or a provider), then append it to the ledger — and only then
//! answer the guest. Grants are checked on the first line of the functions that need
//! them.

pub mod checkpoint;
mod durable;
mod kill;
pub mod llm;
pub mod stdio;
pub mod tasks;
pub mod tools;
pub mod trace;
pub mod views;
pub mod wasi;

use crate::ledger::{EventKind, EventRecord, now_ms};
use crate::merge::MergeConfig;
use crate::replay::Replay;
use crate::supervisor::{ComponentRef, RunContext};
pub(crate) use durable::{DurableCall, Recorded};
use serde_json::Value;
use std::sync::Arc;

pub use kill::Kill;

/// Capability state of one running agent (one task), in slices: the durable call path
/// every interface shares ([`CallSite`]) and the state each interface owns. Each WIT
/// interface is linked with a view of only the slices it uses ([`views`]), the way
/// wasmtime-wasi gives each interface its own view of a store.
pub struct TaskCtx {
    pub(crate) site: CallSite,
    pub(crate) trace: TraceState,
    pub(crate) progress: Progress,
    pub(crate) llm: LlmScope,
    pub(crate) tasks: TaskScope,
}

/// The durable call path's state, shared by every interface: whose calls these are,
/// how many there were, the record being replayed, and why the host stopped the agent.
pub struct CallSite {
    pub(crate) run: Arc<RunContext>,
    pub(crate) task_id: u64,
    /// The agents of the task's chain of spawners, the root's first and its own last:
    /// each must admit a tool call ([`crate::tools::grants`]).
    pub(crate) agents: Arc<[String]>,
    /// Clock and random reads not yet written to the ledger.
    pub(crate) nondet: wasi::NondetLog,
    pub(crate) host_calls: u64,
    /// Set when the host stops the agent for breaking a limit.
    pub(crate) kill: Option<Kill>,
    /// The recorded calls still to replay (resume), or `None` when live.
    pub(crate) replay: Option<Replay>,
    /// Set when a replaying guest made a call the ledger did not record.
    pub(crate) diverged: Option<String>,
    /// Set when a side-effecting call's outcome is unknown and the task must stop.
    pub(crate) in_doubt: Option<String>,
    /// Set when this context serves a validator component rather than the task's agent.
    pub(crate) validator: Option<ValidatorScope>,
    /// Approximate bytes of ledger records this agent's calls have caused
    /// (`limits.max_ledger_bytes`).
    pub(crate) ledger_bytes: u64,
    /// Set by the ledger writer when one of this agent's buffered writes failed: the
    /// agent is stopped at its next host call.
    pub(crate) write_failure: Arc<std::sync::OnceLock<String>>,
    /// Digest of what the task has seen: its input, every LLM prompt, every tool
    /// result (a checkpoint's context hash).
    pub(crate) seen: sha2::Sha256,
}

/// `trace`'s state: the reasoning steps so far.
#[derive(Default)]
pub struct TraceState {
    pub(crate) steps: u32,
    /// Every reasoning step so far (step, thought, action, observation, confidence),
    /// for checkpoints. Bounded like the trace events it mirrors: the texts are the
    /// bounded ones, and each step's event counts against `limits.max_ledger_bytes`.
    pub(crate) step_log: Vec<Value>,
}

/// What a checkpoint's host state records of the task's progress, written by the
/// interfaces that make it (`tools`, `tasks`) and by `checkpoint` itself.
#[derive(Default)]
pub struct Progress {
    pub(crate) checkpoints: u32,
    pub(crate) last_checkpoint: Option<crate::bindings::checkpoint::Checkpoint>,
    /// Ledger seqs of this task's side-effecting tool results so far (a read-only
    /// tool's result is buffered and has no seq yet).
    pub(crate) tool_seqs: Vec<u64>,
    /// Children whose completed outcome this task has received.
    pub(crate) children_done: Vec<u64>,
    /// Every successful tool result so far, keyed `name` (then `name#2`, `name#3`, …
    /// for later calls of the same tool), each cut to [`checkpoint::TOOL_OUTPUT_CHARS`].
    pub(crate) tool_outputs: Vec<(String, String)>,
    /// How many of `tool_outputs` each tool name has (filled per name on its first
    /// call, from the list, which a restored checkpoint may have started).
    pub(crate) tool_output_counts: std::collections::HashMap<String, usize>,
}

/// `llm`'s scope for this attempt.
#[derive(Default)]
pub struct LlmScope {
    /// The agent making the calls (its component's or `[agents]` name), whose own
    /// history predicts them first.
    pub(crate) agent: String,
    /// Validator feedback from a failed attempt, added to every LLM prompt of this one.
    pub(crate) feedback: Option<String>,
    /// The model every LLM call of this attempt is pinned to (an escalated retry).
    pub(crate) model_override: Option<String>,
    /// The temperature every LLM call of this attempt is made at, whatever the guest
    /// asked (a `temperature` retry).
    pub(crate) temperature: Option<f64>,
}

/// `tasks`' scope: where the task sits in the tree and what its children inherit.
pub struct TaskScope {
    pub(crate) depth: u32,
    /// The component this task runs (children spawned with `agent-ref::same` reuse it).
    pub(crate) agent: ComponentRef,
    /// How children's work is merged into this task's (`[merge]`).
    pub(crate) merge: Arc<MergeConfig>,
    /// The task's execution slot; given back while it waits for a child.
    pub(crate) slot: Option<crate::supervisor::shared_limits::TaskSlot>,
    /// Conflicts partial joins left pending and the task has not taken yet: waited
    /// for and applied when the task finishes.
    pub(crate) partial_merges: Vec<u64>,
}

/// A validator component's scope: who it is and the tools it may call. Its calls are
/// recorded under the validated task as `validator.call` events, which replay skips.
pub(crate) struct ValidatorScope {
    pub label: String,
    /// The validator's `grant`, already intersected with the run's granted tools.
    pub grant: Vec<String>,
}

/// One host call as the capabilities describe it to [`TaskCtx::record`].
pub(crate) struct Call {
    pub kind: EventKind,
    pub ok: bool,
    pub request: Value,
    pub response: Value,
    /// The response already serialized, in place of `response` (see
    /// [`EventRecord::response_text`]).
    pub response_text: Option<String>,
    pub model: Option<String>,
    pub tokens_in: u32,
    pub tokens_out: u32,
    pub cost_usd: f64,
    pub started_at: i64,
    /// What identifies the call for replay (default: the request).
    pub identity: Option<Value>,
    /// How durable its record must be, when not its kind's class: a read-only tool's
    /// result is buffered, though `tools.call` is an effect's kind.
    pub durability: Option<crate::ledger::kinds::Durability>,
}

impl Call {
    /// A call without model usage.
    pub fn plain(
        kind: EventKind,
        ok: bool,
        request: Value,
        response: Value,
        started_at: i64,
    ) -> Call {
        Call {
            kind,
            ok,
            request,
            response,
            response_text: None,
            model: None,
            tokens_in: 0,
            tokens_out: 0,
            cost_usd: 0.0,
            started_at,
            identity: None,
            durability: None,
        }
    }

    /// A call without model usage whose response is already JSON text (short strings
    /// only: see [`EventRecord::response_text`]).
    pub fn plain_text(
        kind: EventKind,
        ok: bool,
        request: Value,
        response_text: String,
        started_at: i64,
    ) -> Call {
        Call {
            response_text: Some(response_text),
            ..Call::plain(kind, ok, request, Value::Null, started_at)
        }
    }

    /// Set the identity used for replay matching.
    pub fn with_identity(mut self, identity: Value) -> Call {
        self.identity = Some(identity);
        self
    }
}

impl TaskCtx {
    pub(crate) fn new(
        run: Arc<RunContext>,
        task_id: u64,
        depth: u32,
        agent: ComponentRef,
        merge: Arc<MergeConfig>,
    ) -> TaskCtx {
        let agents = run.agent_chain(task_id).into();
        TaskCtx {
            site: CallSite {
                run,
                task_id,
                agents,
                nondet: wasi::NondetLog::default(),
                host_calls: 0,
                kill: None,
                replay: None,
                diverged: None,
                in_doubt: None,
                validator: None,
                ledger_bytes: 0,
                write_failure: Default::default(),
                seen: Default::default(),
            },
            trace: TraceState::default(),
            progress: Progress::default(),
            llm: LlmScope::default(),
            tasks: TaskScope {
                depth,
                agent,
                merge,
                slot: None,
                partial_merges: Vec::new(),
            },
        }
    }
}

impl CallSite {
    /// Whether this context may call tool `name`: any granted tool for an agent, only
    /// the validator's own grant for a validator component.
    pub(crate) fn tool_allowed(&self, name: &str) -> bool {
        self.validator
            .as_ref()
            .is_none_or(|v| v.grant.iter().any(|g| g == name))
    }

    /// A validator's events become `validator.call` (the original kind and request
    /// inside), so that replaying the task never mistakes them for the agent's calls.
    fn scoped(&self, mut e: EventRecord) -> EventRecord {
        if let Some(v) = &self.validator {
            e.request =
                serde_json::json!({ "validator": v.label, "call": e.kind, "request": e.request });
            e.kind = EventKind::ValidatorCall;
            e.identity = None;
        }
        e
    }

    fn event(&self, call: Call) -> EventRecord {
        self.scoped(EventRecord {
            response_text: call.response_text,
            run_id: self.run.run_id.clone(),
            task_id: self.task_id,
            kind: call.kind,
            ok: call.ok,
            request: call.request,
            response: call.response,
            model: call.model,
            tokens_in: call.tokens_in,
            tokens_out: call.tokens_out,
            cost_usd: call.cost_usd,
            started_at: call.started_at,
            finished_at: now_ms(),
            identity: call.identity,
        })
    }

    /// Append a finished host call to the ledger — preceded, in the same transaction,
    /// by the clock and random reads the guest made since the last call — as its
    /// kind's durability class says (see [`crate::ledger`]):
    ///
    /// * an effect (a tool intent or result, a spawn) returns its sequence number
    ///   once committed durably, so the host never hands a guest the result of an
    ///   effect it has not recorded; its commit is the barrier that makes every
    ///   earlier buffered write of the run durable too;
    /// * anything else is buffered: sent to the writer without waiting (`None`). A
    ///   buffered write that fails stops the agent at its next host call.
    ///
    /// A ledger failure stops the agent.
    pub(crate) async fn record(&mut self, call: Call) -> wasmtime::Result<Option<u64>> {
        if is_durable(&call) {
            return self.record_with(call, |_, _| Ok(())).await;
        }
        // A buffered call: its events join the writer's batched appends.
        self.check_writes()?;
        let (nondet, event) = self.events_of(call);
        let slot = self.write_failure.clone();
        self.run
            .ledger
            .append_buffered(nondet.into_iter().chain([event]).collect(), move |e| {
                let _ = slot.set(e);
            })
            .await
            .map_err(|e| wasmtime::format_err!("ledger write failed, stopping the agent: {e}"))?;
        Ok(None)
    }

    /// The call's event and, before it, the clock/random reads made since the last
    /// call; counts their bytes against `limits.max_ledger_bytes` (enforced at the
    /// guest's next host call: what happened is recorded first).
    fn events_of(&mut self, call: Call) -> (Option<EventRecord>, EventRecord) {
        let nondet = self.nondet_event();
        let event = self.event(call);
        self.ledger_bytes += [Some(&event), nondet.as_ref()]
            .into_iter()
            .flatten()
            .map(|e| {
                crate::ledger::blobs::approx_json_bytes(&e.request)
                    + crate::ledger::blobs::approx_json_bytes(&e.response)
                    + e.response_text.as_ref().map_or(0, |t| t.len() as u64)
            })
            .sum::<u64>();
        (nondet, event)
    }

    /// Like [`CallSite::record`], running `extra` in the same transaction with the
    /// event's sequence number (e.g. to index a checkpoint).
    pub(crate) async fn record_with<F>(
        &mut self,
        call: Call,
        extra: F,
    ) -> wasmtime::Result<Option<u64>>
    where
        F: FnOnce(&mut crate::ledger::Writer, u64) -> crate::ledger::SqlResult<()> + Send + 'static,
    {
        self.check_writes()?;
        let durable = is_durable(&call);
        let (nondet, event) = self.events_of(call);
        let write = move |w: &mut crate::ledger::Writer| {
            if let Some(n) = nondet {
                w.append_event(n)?;
            }
            let seq = w.append_event(event)?;
            extra(w, seq)?;
            Ok(seq)
        };
        let failed = |e: crate::ledger::LedgerError| {
            wasmtime::format_err!("ledger write failed, stopping the agent: {e}")
        };
        if durable {
            return self.run.ledger.write(write).await.map(Some).map_err(failed);
        }
        let slot = self.write_failure.clone();
        self.run
            .ledger
            .write_buffered(
                move |w| write(w).map(|_| ()),
                move |e| {
                    let _ = slot.set(e);
                },
            )
            .await
            .map_err(failed)?;
        Ok(None)
    }

    /// Stop the agent if one of its buffered ledger writes has failed.
    pub(crate) fn check_writes(&self) -> wasmtime::Result<()> {
        match self.write_failure.get() {
            Some(e) => Err(wasmtime::format_err!(
                "ledger write failed, stopping the agent: {e}"
            )),
            None => Ok(()),
        }
    }

    /// The pending clock/random reads as one `wasi.nondet` event, if there are any.
    pub(crate) fn nondet_event(&self) -> Option<EventRecord> {
        let reads = self.nondet.take();
        if reads.is_empty() {
            return None;
        }
        Some(self.scoped(EventRecord::note(
            self.run.run_id.clone(),
            self.task_id,
            EventKind::WasiNondet,
            true,
            Value::Null,
            wasi::nondet_response(&reads),
        )))
    }
}

/// Whether `call` is an effect, written durably before its caller goes on: by the
/// class of the call itself, also for a validator's call (recorded as
/// `validator.call`): a validator's side effect is durable like an agent's.
fn is_durable(call: &Call) -> bool {
    call.durability.unwrap_or_else(|| call.kind.durability())
        == crate::ledger::kinds::Durability::Effect
}
