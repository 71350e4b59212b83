//! `scripted`: a generic test driver. Its input is a JSON array of operations
//! (externally tagged, e.g. `[{"llm": {"prompt": "hi"}}, {"tools_list": null}]`),
//! executed in order; its output is a JSON array with one result per operation.
//! Each operation exercises one host import (or WASI clocks/randomness), and host
//! errors are reported as `{"err": "<Debug of the error>"}` results instead of
//! failing the run; only `{"fail": "msg"}` fails it, and `{"fail_if_err": null}` when
//! the operation before it gave an error or a failed child. An input that is not a JSON
//! array (e.g. the `""` a test gives a child) is echoed back as `child:<input>`.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{SystemTime, UNIX_EPOCH};

use agentflow_sdk::prelude::*;
use agentflow_sdk::tasks::MergeCategory;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Op {
    Llm(LlmOp),
    ToolsList,
    Tool {
        name: String,
        #[serde(default)]
        args: Value,
    },
    Step(StepOp),
    Log(String),
    Save {
        state: Value,
        #[serde(default)]
        note: String,
    },
    Load,
    /// The latest checkpoint's step, context hash and restart context.
    LoadContext,
    Spawn(SpawnOp),
    Wait(TaskId),
    /// Wait without blocking on critical conflicts; the result lists those left pending.
    WaitPartial(TaskId),
    /// Take every conflict the last `wait_partial` left pending (waits for humans).
    TakePending,
    SpawnWait(SpawnOp),
    Cancel(TaskId),
    /// Merge completed children's outputs as proposals over `base`.
    Merge {
        base: String,
        ids: Vec<TaskId>,
    },
    Fail(String),
    /// Fail the run if the previous operation's result was an error or a failed child.
    FailIfErr,
    Clock,
    Random,
    /// Sleep this many milliseconds (WASI monotonic clock).
    SleepMs(u64),
    /// Poll the run's `kv` store until `key` is set (another task's signal), up to
    /// `timeout_ms`; the result is the value, or `null` on timeout.
    WaitKv { key: String, timeout_ms: u64 },
    /// Wait for every child this script spawned (with `spawn`), in spawn order; the
    /// result lists their outcomes.
    WaitAll,
}

#[derive(Deserialize)]
struct LlmOp {
    prompt: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    task_type: Option<String>,
    /// `balanced` (default), `cost`, `quality` or `latency`.
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    min_context: Option<u32>,
    #[serde(default)]
    allow_fallback: bool,
    #[serde(default)]
    max_cost: Option<f64>,
    #[serde(default)]
    max_latency_ms: Option<u32>,
    #[serde(default)]
    max_wait_ms: Option<u32>,
    /// Put the latest checkpoint's restart context first in the request.
    #[serde(default)]
    continue_from_checkpoint: bool,
    #[serde(default)]
    min_quality: Option<f32>,
    /// Functions offered to the model (names; any arguments).
    #[serde(default)]
    tools: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StepOp {
    thought: String,
    action: String,
    observation: String,
    confidence: f32,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SpawnOp {
    description: String,
    input: String,
    dedup_key: Option<String>,
    budget_usd: Option<f64>,
    agent: Option<String>,
    after: Vec<TaskId>,
    data_from: Vec<TaskId>,
    exclusive_with: Vec<TaskId>,
    resources: Vec<String>,
    sequence: Option<String>,
    fail_fast: bool,
    timeout_ms: Option<u32>,
    estimated_cost: Option<f64>,
    tools: Vec<String>,
    /// Validator configs (JSON objects, or strings passed through as they are).
    validators: Vec<Value>,
    memory_mb: Option<u32>,
    cpu_ms: Option<u32>,
    /// Why the parent splits this off (`Spawn::reasoning`).
    reasoning: Option<String>,
}

impl SpawnOp {
    fn spawn(&self) -> Result<TaskId, Error> {
        let mut s = Spawn::new(self.description.as_str(), self.input.as_str());
        if let Some(why) = &self.reasoning {
            s = s.reasoning(why.as_str());
        }
        for id in &self.after {
            s = s.after(*id);
        }
        for id in &self.data_from {
            s = s.data_from(*id);
        }
        for id in &self.exclusive_with {
            s = s.exclusive_with(*id);
        }
        for r in &self.resources {
            s = s.resource(r.as_str());
        }
        if let Some(q) = &self.sequence {
            s = s.sequence(q.as_str());
        }
        if self.fail_fast {
            s = s.fail_fast();
        }
        if let Some(mb) = self.memory_mb {
            s = s.memory_mb(mb);
        }
        if let Some(ms) = self.cpu_ms {
            s = s.cpu_ms(ms);
        }
        if let Some(t) = self.timeout_ms {
            s = s.timeout_ms(t);
        }
        if let Some(c) = self.estimated_cost {
            s = s.estimated_cost(c);
        }
        for t in &self.tools {
            s = s.tool(t.as_str());
        }
        for v in &self.validators {
            s = s.validator(match v {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            });
        }
        if let Some(k) = &self.dedup_key {
            s = s.dedup_key(k.as_str());
        }
        if let Some(b) = self.budget_usd {
            s = s.budget_usd(b);
        }
        if let Some(a) = &self.agent {
            s = s.agent(a.as_str());
        }
        s.spawn()
    }
}

fn err(e: Error) -> Value {
    json!({ "err": format!("{e:?}") })
}

thread_local! {
    /// The conflicts the last `wait_partial` left pending.
    static PENDING: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The children `spawn` made, for `wait_all`.
    static SPAWNED: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn outcome(o: Outcome) -> Value {
    match o {
        Outcome::Completed(s) => json!({ "completed": s }),
        Outcome::Failed(s) => json!({ "failed": s }),
        Outcome::Cancelled => json!("cancelled"),
        Outcome::UnknownTask => json!("unknown"),
    }
}

fn run(input: String) -> Result<String, String> {
    let Ok(Value::Array(raw_ops)) = serde_json::from_str::<Value>(&input) else {
        return Ok(format!("child:{input}"));
    };
    let mut results: Vec<Value> = Vec::with_capacity(raw_ops.len());
    for (i, raw) in raw_ops.into_iter().enumerate() {
        let op: Op = serde_json::from_value(raw).map_err(|e| format!("bad op #{i}: {e}"))?;
        if matches!(op, Op::FailIfErr) {
            if let Some(last) = results.last()
                && (last.get("err").is_some() || last.get("failed").is_some())
            {
                return Err(format!("op #{i}: the previous operation failed: {last}"));
            }
            results.push(Value::Null);
            continue;
        }
        results.push(execute(op)?);
    }
    Ok(Value::Array(results).to_string())
}

fn execute(op: Op) -> Result<Value, String> {
    Ok(match op {
        Op::Llm(o) => {
            let mut req = Request::new().user(o.prompt);
            if o.continue_from_checkpoint
                && let Some(saved) = checkpoint::load_raw()
            {
                req = req.continue_from(&saved);
            }
            if let Some(m) = o.model {
                req = req.model(m);
            }
            if let Some(n) = o.max_tokens {
                req = req.max_tokens(n);
            }
            if let Some(t) = o.task_type {
                req = req.task_type(t);
            }
            match o.priority.as_deref() {
                None | Some("balanced") => {}
                Some("cost") => req = req.priority(Priority::Cost),
                Some("quality") => req = req.priority(Priority::Quality),
                Some("latency") => req = req.priority(Priority::Latency),
                Some(other) => return Err(format!("unknown priority `{other}`")),
            }
            for c in o.capabilities {
                req = req.capability(c);
            }
            if let Some(n) = o.min_context {
                req = req.min_context(n);
            }
            req = req.allow_fallback(o.allow_fallback);
            if let Some(c) = o.max_cost {
                req = req.max_cost(c);
            }
            if let Some(l) = o.max_latency_ms {
                req = req.max_latency_ms(l);
            }
            if let Some(w) = o.max_wait_ms {
                req = req.max_wait_ms(w);
            }
            if let Some(q) = o.min_quality {
                req = req.min_quality(q);
            }
            for t in o.tools {
                req = req.tool(t, "a test function", json!({"type": "object"}));
            }
            match req.send() {
                Ok(r) => json!({ "ok": {
                    "text": r.text,
                    "model": r.model,
                    "input_tokens": r.input_tokens,
                    "output_tokens": r.output_tokens,
                    "cost_usd": r.cost_usd,
                }}),
                Err(e) => err(e),
            }
        }
        Op::ToolsList => json!(
            tools::list()
                .into_iter()
                .map(|t| t.name)
                .collect::<Vec<_>>()
        ),
        Op::Tool { name, args } => match tools::call(&name, &args) {
            Ok(s) => json!({ "ok": s }),
            Err(e) => err(e),
        },
        Op::Step(s) => {
            trace::step(s.thought, s.action, s.observation, s.confidence);
            Value::Null
        }
        Op::Log(msg) => {
            trace::info(msg);
            Value::Null
        }
        Op::Save { state, note } => match checkpoint::save(&state, note) {
            Ok(n) => json!({ "ok": n }),
            Err(e) => err(e),
        },
        Op::Load => checkpoint::load::<Value>()
            .map(|s| s.state)
            .unwrap_or(Value::Null),
        Op::LoadContext => checkpoint::load_raw()
            .map(|s| json!({ "step": s.step, "context_hash": s.context_hash, "restart_context": s.restart_context }))
            .unwrap_or(Value::Null),
        Op::Spawn(s) => match s.spawn() {
            Ok(id) => {
                SPAWNED.with(|all| all.borrow_mut().push(id));
                json!({ "ok": id })
            }
            Err(e) => err(e),
        },
        Op::WaitAll => {
            let ids = SPAWNED.with(|all| all.borrow().clone());
            json!(ids.into_iter().map(|id| outcome(tasks::wait(id))).collect::<Vec<_>>())
        }
        Op::Wait(id) => outcome(tasks::wait(id)),
        Op::WaitPartial(id) => {
            let (o, pending) = tasks::wait_partial(id);
            let listed: Vec<Value> = pending
                .iter()
                .map(|p| json!({ "id": p.id, "subject": p.subject, "reason": p.reason }))
                .collect();
            PENDING.with(|all| *all.borrow_mut() = pending.iter().map(|p| p.id).collect());
            json!({ "outcome": outcome(o), "pending": listed })
        }
        Op::TakePending => {
            let ids = PENDING.with(|all| std::mem::take(&mut *all.borrow_mut()));
            let taken: Vec<Value> = ids
                .into_iter()
                .map(|id| match tasks::take_merge(id) {
                    Ok(text) => json!({ "ok": text }),
                    Err(e) => err(e),
                })
                .collect();
            json!(taken)
        }
        Op::SleepMs(ms) => {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Value::Null
        }
        Op::WaitKv { key, timeout_ms } => {
            let start = std::time::Instant::now();
            loop {
                match tools::call("kv", &json!({"op": "get", "key": key})) {
                    Ok(v) if v != "null" => break json!(v),
                    Ok(_) => {}
                    Err(e) => break err(e),
                }
                if start.elapsed() > std::time::Duration::from_millis(timeout_ms) {
                    break Value::Null;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        Op::SpawnWait(s) => match s.spawn() {
            Ok(id) => outcome(tasks::wait(id)),
            Err(e) => err(e),
        },
        Op::Cancel(id) => json!(tasks::cancel(id)),
        Op::Merge { base, ids } => match tasks::merge(&base, &ids) {
            Ok(m) => json!({
                "text": m.text,
                "category": match m.category {
                    MergeCategory::Unchanged => "unchanged",
                    MergeCategory::Trivial => "trivial",
                    MergeCategory::Semantic => "semantic",
                    MergeCategory::Critical => "critical",
                },
                "reasoning": m.reasoning,
            }),
            Err(e) => err(e),
        },
        Op::Fail(msg) => return Err(msg),
        Op::FailIfErr => Value::Null,
        Op::Clock => {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            json!(ms)
        }
        Op::Random => json!(RandomState::new().hash_one(0x5eed_u64)),
    })
}

export_agent!(run);
