//! Ledger replay over arbitrary event rows: `Replay::from_events` and `attempts` never
//! panic, agree with each other, keep every non-auxiliary call in order, and describing
//! a recorded call for a divergence message never panics. `reads_of_event` never panics
//! on arbitrary JSON or base64 data, and the compact encoding round-trips both ways:
//! `reads_of_event(nondet_response(x)) == x`, and data that decodes re-encodes to the
//! same bytes.
#![no_main]

use agentflow::replay::nondet::{NondetRead, nondet_response, reads_of_event};
use agentflow::ledger::EventKind;
use agentflow::replay::{Replay, describe};
use agentflow::ledger::query::EventRow;
use arbitrary::Arbitrary;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

#[derive(Arbitrary, Debug, Clone, PartialEq)]
enum Read {
    Wall(u64),
    Monotonic(u64),
    Random(Vec<u8>),
    InsecureRandom(Vec<u8>),
    InsecureSeed(u128),
}

impl From<Read> for NondetRead {
    fn from(r: Read) -> NondetRead {
        match r {
            Read::Wall(n) => NondetRead::Wall(n),
            Read::Monotonic(n) => NondetRead::Monotonic(n),
            Read::Random(b) => NondetRead::Random(b),
            Read::InsecureRandom(b) => NondetRead::InsecureRandom(b),
            Read::InsecureSeed(s) => NondetRead::InsecureSeed(s),
        }
    }
}

/// Arbitrary JSON, a few levels deep.
#[derive(Arbitrary, Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn value(&self, depth: u32) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => json!(b),
            Json::Int(n) => json!(n),
            Json::UInt(n) => json!(n),
            Json::Float(f) => json!(f),
            Json::Str(s) => json!(s),
            _ if depth > 4 => Value::Null,
            Json::Array(items) => Value::Array(items.iter().map(|j| j.value(depth + 1)).collect()),
            Json::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.value(depth + 1)))
                    .collect(),
            ),
        }
    }
}

/// The response of a `wasi.nondet` event, in the forms a ledger may hold.
#[derive(Arbitrary, Debug)]
enum Nondet {
    /// What the host writes.
    Compact(Vec<Read>),
    /// The compact tag with arbitrary (base64-encoded) bytes.
    RawData(Vec<u8>),
    /// The compact tag with arbitrary text as its data.
    RawText(String),
    /// The earlier form: one-key objects.
    Legacy(Vec<(u8, Json)>),
    /// Anything.
    Any(Json),
}

const LEGACY_KEYS: [&str; 5] = [
    "wall_ns",
    "monotonic_ns",
    "random",
    "insecure_random",
    "insecure_seed",
];

impl Nondet {
    fn value(&self) -> Value {
        match self {
            Nondet::Compact(reads) => {
                let reads: Vec<NondetRead> = reads.iter().cloned().map(Into::into).collect();
                nondet_response(&reads)
            }
            Nondet::RawData(bytes) => json!({
                "format": "nondet-v2",
                "data": base64::engine::general_purpose::STANDARD.encode(bytes),
            }),
            Nondet::RawText(text) => json!({ "format": "nondet-v2", "data": text }),
            Nondet::Legacy(items) => Value::Array(
                items
                    .iter()
                    .map(|(k, v)| json!({ LEGACY_KEYS[*k as usize % 5]: v.value(1) }))
                    .collect(),
            ),
            Nondet::Any(j) => j.value(0),
        }
    }
}

const KINDS: [&str; 10] = [
    "wasi.nondet",
    "validation.retry",
    "llm.complete",
    "tools.call",
    "checkpoint.save",
    "agents.spawn",
    "llm.decision",
    "task.stdio",
    "merge.decided",
    "tools.intent",
];

#[derive(Arbitrary, Debug)]
struct Event {
    kind: u8,
    other_kind: String,
    ok: bool,
    request_hash: String,
    request: Json,
    response: Json,
    nondet: Nondet,
    model: Option<String>,
    tokens_in: i64,
    tokens_out: i64,
    cost_usd: f64,
}

impl Event {
    fn row(&self, seq: u64) -> EventRow {
        let kind = match KINDS.get(self.kind as usize) {
            Some(k) => k.to_string(),
            None => self.other_kind.clone(),
        };
        let response = if kind == "wasi.nondet" {
            self.nondet.value()
        } else {
            self.response.value(0)
        };
        EventRow {
            task_id: 1,
            seq,
            kind: EventKind::from(kind),
            ok: self.ok,
            request_hash: self.request_hash.clone(),
            request: self.request.value(0),
            response,
            model: self.model.clone(),
            tokens_in: self.tokens_in,
            tokens_out: self.tokens_out,
            cost_usd: self.cost_usd,
            started_at: 0,
            finished_at: 0,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    events: Vec<Event>,
    reads: Vec<Read>,
    data: Vec<u8>,
    any: Json,
}

fn round_trip(reads: &[NondetRead]) {
    let event = nondet_response(reads);
    assert_eq!(event["reads"], reads.len());
    let back = reads_of_event(&event).expect("the host's own encoding decodes");
    assert_eq!(back, reads, "decode(encode(x)) != x");
}

fuzz_target!(|input: Input| {
    // The compact encoding round-trips from reads...
    let reads: Vec<NondetRead> = input.reads.iter().cloned().map(Into::into).collect();
    round_trip(&reads);
    // ...and from bytes: what decodes re-encodes to the same bytes.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&input.data);
    let raw = json!({ "format": "nondet-v2", "data": b64 });
    if let Ok(decoded) = reads_of_event(&raw) {
        assert_eq!(
            nondet_response(&decoded)["data"],
            raw["data"],
            "encode(decode(b)) != b"
        );
        round_trip(&decoded);
    }
    // Arbitrary JSON never panics; what it yields round-trips.
    if let Ok(decoded) = reads_of_event(&input.any.value(0)) {
        round_trip(&decoded);
    }

    let rows: Vec<EventRow> = input
        .events
        .iter()
        .take(64)
        .enumerate()
        .map(|(i, e)| e.row(i as u64 + 1))
        .collect();
    let mut expected_calls = Vec::new();
    let mut expected_reads = Vec::new();
    for row in &rows {
        if row.kind == "wasi.nondet" {
            if let Ok(reads) = reads_of_event(&row.response) {
                round_trip(&reads);
                expected_reads.extend(reads);
            }
        } else if row.kind.is_replayed() {
            expected_calls.push(row.seq);
        }
    }

    let (mut replay, nondet) = Replay::from_events(rows.clone());
    assert_eq!(replay.remaining(), expected_calls.len());
    assert_eq!(Vec::from(nondet), expected_reads);
    let mut seen = Vec::new();
    while let Some(call) = replay.pop() {
        let _ = describe(&call.kind, &call.request_hash, Some(call.seq));
        let _ = describe(&call.kind, &call.request_hash, None);
        seen.push(call.seq);
    }
    assert_eq!(seen, expected_calls, "calls out of order or lost");

    let retries = rows.iter().filter(|r| r.kind == "validation.retry").count();
    let attempts = Replay::attempts(rows);
    assert_eq!(attempts.len(), retries + 1);
    let mut attempt_calls = Vec::new();
    let mut attempt_reads = Vec::new();
    for (i, (mut replay, nondet, marker)) in attempts.into_iter().enumerate() {
        assert_eq!(marker.is_some(), i > 0);
        while let Some(call) = replay.pop() {
            attempt_calls.push(call.seq);
        }
        attempt_reads.extend(nondet);
    }
    assert_eq!(attempt_calls, expected_calls);
    assert_eq!(attempt_reads, expected_reads);
});
