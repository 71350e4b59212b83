//! The records the ledger writes: a new run, a new task, one host call (event), and
//! the totals a run's end returns.

use super::{EventKind, now_ms};

/// A new run.
#[derive(Clone, Debug)]
pub struct NewRun {
    pub run_id: String,
    pub agent: String,
    pub component_hash: String,
    pub input: String,
    pub config_json: String,
    /// Hash of what determines the run's behaviour (component, input, config).
    pub context_hash: String,
    pub budget_usd: Option<f64>,
    /// The component itself, stored in `blobs` so the run can be resumed from the ledger alone.
    pub component: std::sync::Arc<[u8]>,
}

/// A run's totals as recorded with its end ([`super::Ledger::finish_run`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunTotals {
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    pub started_at: i64,
    pub finished_at: i64,
    /// What the events a fork copied into the run cost the original run.
    pub copied_cost_usd: f64,
}

/// A new task of a run.
#[derive(Clone, Debug)]
pub struct NewTask {
    pub run_id: String,
    pub task_id: u64,
    pub parent_id: Option<u64>,
    pub depth: u32,
    pub agent: String,
    pub component_hash: String,
    pub description: String,
    pub input: String,
    /// `parent:call-number` of the spawn that created it: unique per run, so a parent
    /// replaying after a crash finds its child instead of spawning a twin.
    pub spawn_key: Option<String>,
    pub dedup_key: Option<String>,
    /// JSON list of dependencies (`{"after": id}` / `{"data_from": id}`).
    pub depends_on: String,
    /// The component, when it is not yet in `blobs`.
    pub component: Option<std::sync::Arc<[u8]>>,
    /// Its own budget share (USD), if it was given one.
    pub budget_usd: Option<f64>,
    /// JSON list of the locks it takes while running (resources, exclusions).
    pub resources: String,
    /// Its own wall-clock limit (ms).
    pub timeout_ms: Option<u64>,
}

/// One host call, as appended to `events`.
#[derive(Clone, Debug)]
pub struct EventRecord {
    pub run_id: String,
    pub task_id: u64,
    /// `interface.function`, e.g. `llm.complete`, `tools.call`, `wasi.nondet`.
    pub kind: EventKind,
    pub ok: bool,
    pub request: serde_json::Value,
    pub response: serde_json::Value,
    /// The response already serialized, stored as is in place of `response` (then
    /// `Null`): for large structured replies the host builds itself, such as a
    /// scheduler decision with its candidate reports, serialized straight from their
    /// types rather than through a JSON tree the writer serializes and frees. Its
    /// strings must be short: none is moved to `blobs`.
    pub response_text: Option<String>,
    /// What identifies the call for replay matching (hashed into `request_hash`);
    /// `None` means the whole request.
    pub identity: Option<serde_json::Value>,
    pub model: Option<String>,
    pub tokens_in: u32,
    pub tokens_out: u32,
    pub cost_usd: f64,
    pub started_at: i64,
    pub finished_at: i64,
}

impl EventRecord {
    /// An event without model usage (no model, tokens or cost), timed now.
    pub fn note(
        run_id: impl Into<String>,
        task_id: u64,
        kind: EventKind,
        ok: bool,
        request: serde_json::Value,
        response: serde_json::Value,
    ) -> EventRecord {
        let now = now_ms();
        EventRecord {
            run_id: run_id.into(),
            task_id,
            kind,
            ok,
            request,
            response,
            response_text: None,
            identity: None,
            model: None,
            tokens_in: 0,
            tokens_out: 0,
            cost_usd: 0.0,
            started_at: now,
            finished_at: now,
        }
    }
}
