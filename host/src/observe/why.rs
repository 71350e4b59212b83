//! `agentflow why <run> [--task T] [--effect SEQ | --tool NAME]`: why did the run do
//! this? From a side effect — say the `cloud` call that created a resource — walk back
//! through what led to it: the reasoning steps, LLM calls (model, prompt head, reply
//! head), tool results, spawns and children's results that preceded it in its task,
//! then in the parent before the spawn that created that task, and so on up to the
//! root; newest first, with each call's cost and the total.
//!
//! The effect is a `tools.intent` or `tools.call` event: the one at `--effect SEQ`, or
//! the latest call of tool `--tool NAME`, or the latest tool call of all; in task
//! `--task T`, or anywhere in the run (seqs are per task: a seq found in several tasks
//! needs `--task`). A task without tool calls is walked back from its end.
//!
//! Read-only. Every guest text is put on one line, escaped and cut to a head
//! ([`inspect::clip`]), in the JSON too: guests are untrusted.

use super::inspect::{self, clip, usd};
use crate::ledger::Connection;
use crate::ledger::EventKind;
use crate::ledger::query::{self, EventRow, TaskRow};
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

/// The longest head of a guest text kept (characters).
const HEAD: usize = 200;

/// Which effect to start from (the command's flags).
#[derive(Clone, Debug, Default)]
pub struct Target {
    pub task: Option<u64>,
    pub effect: Option<u64>,
    pub tool: Option<String>,
}

/// The walk back from one effect.
#[derive(Debug, Default, Serialize)]
pub struct Why {
    pub run_id: String,
    /// The effect the walk starts from; `None` when the task made no tool call (the
    /// walk then starts at the task's end).
    pub effect: Option<Effect>,
    /// The effect's task, then its ancestors up to the root.
    pub chain: Vec<Link>,
    /// What preceded the effect, newest first.
    pub steps: Vec<Step>,
    /// Totals over `steps`.
    pub llm_calls: usize,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
}

/// A side effect: a tool call, from its intent (if it had one) to its result.
#[derive(Debug, Serialize)]
pub struct Effect {
    pub task_id: u64,
    /// The call's seq, or the intent's when the call has no recorded result.
    pub seq: u64,
    pub intent_seq: Option<u64>,
    pub tool: String,
    pub args: String,
    /// `None` while it is in doubt (an intent without a result).
    pub ok: Option<bool>,
    pub result: Option<String>,
}

/// One task of the chain, and where its part of the walk ends.
#[derive(Debug, Serialize)]
pub struct Link {
    pub task_id: u64,
    pub agent: String,
    pub description: String,
    /// Its events before this seq are listed (the effect's start, or — in an
    /// ancestor — just after the spawn of the next task down); `None`: all of them.
    pub before_seq: Option<u64>,
    /// In an ancestor, the spawn that created the task below it.
    pub spawn_seq: Option<u64>,
}

/// One event of the walk.
#[derive(Debug, Serialize)]
pub struct Step {
    pub task_id: u64,
    pub seq: u64,
    pub kind: EventKind,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    #[serde(flatten)]
    pub detail: Detail,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What an event of the walk says, by kind (heads of its texts).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Detail {
    Reasoning {
        step: Option<u64>,
        thought: String,
        action: String,
        observation: String,
        confidence: Option<f64>,
    },
    Log {
        level: String,
        message: String,
    },
    Llm {
        prompt: String,
        reply: String,
    },
    Tool {
        tool: String,
        args: String,
        result: Option<String>,
    },
    Spawn {
        description: String,
        input: String,
        child: Option<u64>,
    },
    Wait {
        child: Option<u64>,
        outcome: String,
    },
}

/// The kinds of events the walk lists.
const LISTED: &[EventKind] = &[
    EventKind::TraceStep,
    EventKind::TraceLog,
    EventKind::LlmComplete,
    EventKind::ToolsCall,
    EventKind::ToolsIntent,
    EventKind::TasksSpawn,
    EventKind::TasksWait,
];

/// A string field of a payload (`""` when absent or not a string).
fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The idempotency key of a tool intent or call.
fn key_of(e: &EventRow) -> &str {
    field(&e.request, "idempotency_key")
}

/// The intent `call` ran under: the latest `tools.intent` before it with its key.
fn intent_of<'a>(events: &'a [EventRow], call: &EventRow) -> Option<&'a EventRow> {
    events.iter().rev().find(|e| {
        e.kind == EventKind::ToolsIntent
            && e.seq < call.seq
            && !key_of(call).is_empty()
            && key_of(e) == key_of(call)
    })
}

/// The result of `intent`: the first `tools.call` after it with its key.
fn call_of<'a>(events: &'a [EventRow], intent: &EventRow) -> Option<&'a EventRow> {
    events.iter().find(|e| {
        e.kind == EventKind::ToolsCall && e.seq > intent.seq && key_of(e) == key_of(intent)
    })
}

/// The prompt of an `llm.complete`: its last user message (else its last message).
fn prompt_of(request: &Value) -> String {
    let messages = request["chat"]["messages"].as_array();
    let messages = messages.map(Vec::as_slice).unwrap_or_default();
    let last = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .or(messages.last());
    last.map(|m| field(m, "content")).unwrap_or("").to_string()
}

/// The reply of an `llm.complete`: its text, else the tool calls it asked for.
fn reply_of(response: &Value) -> String {
    let text = field(response, "text");
    let calls: Vec<&str> = response["tool_calls"]
        .as_array()
        .map(|c| c.iter().map(|c| field(c, "name")).collect())
        .unwrap_or_default();
    if text.is_empty() && !calls.is_empty() {
        return format!("tool calls: {}", calls.join(", "));
    }
    text.to_string()
}

/// A tool result as text: its output, or its error.
fn tool_result(e: &EventRow) -> Option<String> {
    match (e.ok, &e.response["ok"]) {
        (true, Value::String(s)) => Some(clip(s, HEAD)),
        (true, v) if !v.is_null() => Some(clip(&v.to_string(), HEAD)),
        _ => None,
    }
}

/// What a task's wait got back from its child (`completed: …`, `failed: …`, `cancelled`).
fn outcome_of(response: &Value) -> String {
    match response.as_object().and_then(|m| m.iter().next()) {
        Some((k, Value::String(s))) => format!("{k}: {s}"),
        Some((k, v)) => format!("{k}: {v}"),
        None => response
            .as_str()
            .map_or_else(|| response.to_string(), str::to_string),
    }
}

fn step_of(e: &EventRow) -> Step {
    let detail = match e.kind {
        EventKind::TraceStep => Detail::Reasoning {
            step: e.request["step"].as_u64(),
            thought: clip(field(&e.request, "thought"), HEAD),
            action: clip(field(&e.request, "action"), HEAD),
            observation: clip(field(&e.request, "observation"), HEAD),
            confidence: e.request["confidence"]
                .as_f64()
                .map(|c| (c * 10_000.0).round() / 10_000.0),
        },
        EventKind::TraceLog => Detail::Log {
            level: clip(field(&e.request, "level"), 10),
            message: clip(field(&e.request, "message"), HEAD),
        },
        EventKind::LlmComplete => Detail::Llm {
            prompt: clip(&prompt_of(&e.request), HEAD),
            reply: clip(&reply_of(&e.response), HEAD),
        },
        EventKind::TasksSpawn => Detail::Spawn {
            description: clip(field(&e.request, "description"), HEAD),
            input: clip(field(&e.request, "input"), HEAD),
            child: e.response["task_id"].as_u64(),
        },
        EventKind::TasksWait => Detail::Wait {
            child: e.request["task_id"].as_u64(),
            outcome: clip(&outcome_of(&e.response), HEAD),
        },
        _ => Detail::Tool {
            tool: clip(field(&e.request, "name"), HEAD),
            args: clip(field(&e.request, "args"), HEAD),
            result: tool_result(e),
        },
    };
    Step {
        task_id: e.task_id,
        seq: e.seq,
        kind: e.kind.clone(),
        ok: e.ok,
        model: e.model.as_deref().map(|m| clip(m, 80)),
        tokens_in: e.tokens_in,
        tokens_out: e.tokens_out,
        cost_usd: e.cost_usd,
        detail,
        error: (!e.ok && e.kind != EventKind::ToolsIntent)
            .then(|| clip(&inspect::error_text(&e.response), HEAD)),
    }
}

/// The events of the run's tasks, read once each.
struct Events<'c> {
    conn: &'c Connection,
    run_id: String,
    by_task: HashMap<u64, Vec<EventRow>>,
}

impl Events<'_> {
    fn of(&mut self, task: u64) -> anyhow::Result<&[EventRow]> {
        if !self.by_task.contains_key(&task) {
            let events = query::events(self.conn, &self.run_id, Some(task))?;
            self.by_task.insert(task, events);
        }
        Ok(&self.by_task[&task])
    }
}

/// The tool calls and intents of `tasks` that `target` asks for, as (task, seq,
/// finished_at).
fn candidates(
    events: &mut Events<'_>,
    tasks: &[u64],
    target: &Target,
) -> anyhow::Result<Vec<(u64, u64, i64)>> {
    let mut out = Vec::new();
    for &task in tasks {
        for e in events.of(task)? {
            let effect = e.kind == EventKind::ToolsCall || e.kind == EventKind::ToolsIntent;
            let wanted = match (&target.effect, &target.tool) {
                // Any event of the named task (to say what it is), else tool events.
                (Some(seq), _) => e.seq == *seq && (effect || target.task.is_some()),
                (None, Some(name)) => effect && field(&e.request, "name") == name,
                (None, None) => effect,
            };
            if wanted {
                out.push((task, e.seq, e.finished_at));
            }
        }
    }
    Ok(out)
}

/// The effect `target` names: (task, seq of its event), or `None` for "no tool call,
/// walk back from the end of the task".
fn find_effect(
    events: &mut Events<'_>,
    tasks: &[TaskRow],
    target: &Target,
) -> anyhow::Result<Option<(u64, u64)>> {
    let ids: Vec<u64> = match target.task {
        Some(t) => vec![t],
        None => tasks.iter().map(|t| t.task_id).collect(),
    };
    let found = candidates(events, &ids, target)?;
    let where_ = match target.task {
        Some(t) => format!("task {t} of run {}", events.run_id),
        None => format!("run {}", events.run_id),
    };
    if let Some(seq) = target.effect {
        let [(task, seq, _)] = found[..] else {
            if found.is_empty() {
                anyhow::bail!("no tool call or intent #{seq} in {where_}");
            }
            let tasks: Vec<String> = found.iter().map(|f| f.0.to_string()).collect();
            anyhow::bail!(
                "event #{seq} is in several tasks of run {} ({}): give --task",
                events.run_id,
                tasks.join(", ")
            );
        };
        let kind = events
            .of(task)?
            .iter()
            .find(|e| e.seq == seq)
            .map(|e| &e.kind);
        if let Some(kind) =
            kind.filter(|k| **k != EventKind::ToolsCall && **k != EventKind::ToolsIntent)
        {
            anyhow::bail!(
                "event #{seq} of task {task} is a {kind}, not a side effect: give the seq of a tools.intent or tools.call"
            );
        }
        return Ok(Some((task, seq)));
    }
    let latest = found
        .iter()
        .max_by_key(|(task, seq, finished)| (*finished, *seq, *task));
    match (latest, &target.tool) {
        (Some((task, seq, _)), _) => Ok(Some((*task, *seq))),
        (None, Some(name)) => anyhow::bail!("no call of tool `{name}` in {where_}"),
        (None, None) => Ok(None),
    }
}

/// The effect at `seq` of `task`, with its intent and result paired up; the seq the
/// walk starts before.
fn effect_at(events: &[EventRow], task: u64, seq: u64) -> Option<(Effect, u64)> {
    let e = events.iter().find(|e| e.seq == seq)?;
    let (intent, call) = if e.kind == EventKind::ToolsIntent {
        (Some(e), call_of(events, e))
    } else {
        (intent_of(events, e), Some(e))
    };
    let first = intent.unwrap_or(e);
    let effect = Effect {
        task_id: task,
        seq: call.unwrap_or(e).seq,
        intent_seq: intent.map(|i| i.seq),
        tool: clip(field(&first.request, "name"), HEAD),
        args: clip(field(&first.request, "args"), HEAD),
        ok: call.map(|c| c.ok),
        result: call.and_then(|c| match c.ok {
            true => tool_result(c),
            false => Some(clip(&inspect::error_text(&c.response), HEAD)),
        }),
    };
    Some((effect, first.seq))
}

/// The events of one task the walk lists: those before `before` (all when `None`),
/// newest first; an intent only when its call has no recorded result (in doubt).
fn listed_steps(events: &[EventRow], before: Option<u64>) -> Vec<Step> {
    events
        .iter()
        .rev()
        .filter(|e| before.is_none_or(|b| e.seq < b) && LISTED.contains(&e.kind))
        .filter(|e| e.kind != EventKind::ToolsIntent || call_of(events, e).is_none())
        .map(step_of)
        .collect()
}

/// Walk back from `target` in run `run` (id or unique prefix); `None` when no run has
/// that id.
pub fn why(conn: &Connection, run: &str, target: &Target) -> anyhow::Result<Option<Why>> {
    let Some(run) = query::run(conn, run)? else {
        return Ok(None);
    };
    let tasks = query::tasks(conn, &run.run_id)?;
    let by_id: HashMap<u64, &TaskRow> = tasks.iter().map(|t| (t.task_id, t)).collect();
    if let Some(t) = target.task
        && !by_id.contains_key(&t)
    {
        anyhow::bail!("run {} has no task {t}", run.run_id);
    }
    let mut events = Events {
        conn,
        run_id: run.run_id.clone(),
        by_task: HashMap::new(),
    };
    let root = tasks
        .iter()
        .find(|t| t.parent_id.is_none())
        .map(|t| t.task_id);
    let (mut task, effect, mut before) = match find_effect(&mut events, &tasks, target)? {
        Some((task, seq)) => {
            let (effect, start) = effect_at(events.of(task)?, task, seq)
                .ok_or_else(|| anyhow::anyhow!("no event #{seq} in task {task}"))?;
            (task, Some(effect), Some(start))
        }
        None => match target.task.or(root) {
            Some(task) => (task, None, None),
            None => anyhow::bail!("run {} has no tasks", run.run_id),
        },
    };
    let mut why = Why {
        run_id: run.run_id.clone(),
        effect,
        ..Why::default()
    };
    let mut spawn_seq = None;
    let mut seen = HashSet::new();
    while seen.insert(task) {
        why.steps.extend(listed_steps(events.of(task)?, before));
        let row = by_id.get(&task);
        why.chain.push(Link {
            task_id: task,
            agent: row.map(|t| clip(&t.agent, 80)).unwrap_or_default(),
            description: row.map(|t| clip(&t.description, HEAD)).unwrap_or_default(),
            before_seq: before,
            spawn_seq,
        });
        let Some(parent) = row.and_then(|t| t.parent_id) else {
            break;
        };
        let spawn = events.of(parent)?.iter().find(|e| {
            e.kind == EventKind::TasksSpawn && e.response["task_id"].as_u64() == Some(task)
        });
        spawn_seq = spawn.map(|s| s.seq);
        before = spawn.map(|s| s.seq + 1);
        task = parent;
    }
    for s in &why.steps {
        why.llm_calls += usize::from(s.kind == EventKind::LlmComplete);
        why.tokens_in += s.tokens_in;
        why.tokens_out += s.tokens_out;
        why.cost_usd += s.cost_usd;
    }
    Ok(Some(why))
}

/// One line for a step: `#3 llm.complete  m  $0.0001  "prompt" → "reply"`.
fn step_line(s: &Step) -> String {
    let what = match &s.detail {
        Detail::Reasoning {
            step,
            thought,
            action,
            observation,
            confidence,
        } => format!(
            "step {} thought \"{}\" → action {} → \"{}\"{}",
            step.unwrap_or(0),
            clip(thought, 80),
            clip(action, 40),
            clip(observation, 80),
            confidence.map(|c| format!(" ({c:.2})")).unwrap_or_default()
        ),
        Detail::Log { level, message } => format!("{level}: {}", clip(message, 120)),
        Detail::Llm { prompt, reply } => format!(
            "{}  {}  prompt \"{}\" → reply \"{}\"",
            s.model.as_deref().unwrap_or("-"),
            usd(s.cost_usd),
            clip(prompt, 70),
            clip(reply, 90)
        ),
        Detail::Tool { tool, args, result } => format!(
            "{tool} {}{}",
            clip(args, 70),
            result
                .as_deref()
                .map(|r| format!(" → {}", clip(r, 70)))
                .unwrap_or_default()
        ),
        Detail::Spawn {
            description,
            input,
            child,
        } => format!(
            "\"{}\" input {}{}",
            clip(description, 60),
            clip(input, 60),
            child.map(|c| format!(" → task {c}")).unwrap_or_default()
        ),
        Detail::Wait { child, outcome } => format!(
            "task {} → {}",
            child.map_or("?".to_string(), |c| c.to_string()),
            clip(outcome, 100)
        ),
    };
    let error = s
        .error
        .as_deref()
        .map(|e| format!("  ✗ {}", clip(e, 100)))
        .unwrap_or_default();
    format!("#{} {}  {what}{error}", s.seq, s.kind)
}

/// The walk as text: the effect, then each task of the chain with its steps.
pub fn render(why: &Why) -> String {
    let mut out = String::new();
    match &why.effect {
        Some(e) => {
            let state = match (e.ok, &e.result) {
                (None, _) => " (in doubt: no result recorded)".to_string(),
                (Some(false), r) => format!(" ✗ {}", clip(r.as_deref().unwrap_or(""), 100)),
                (Some(true), Some(r)) => format!(" → {}", clip(r, 100)),
                (Some(true), None) => String::new(),
            };
            let _ = writeln!(
                out,
                "why: run {} task {} effect #{}: {} {}{state}",
                why.run_id,
                e.task_id,
                e.seq,
                e.tool,
                clip(&e.args, 100),
            );
        }
        None => {
            let task = why.chain.first().map_or(0, |l| l.task_id);
            let _ = writeln!(
                out,
                "why: run {} task {task} made no tool call: from the end of the task",
                why.run_id
            );
        }
    }
    for link in &why.chain {
        let upto = match (link.spawn_seq, link.before_seq) {
            (Some(spawn), _) => format!("up to spawn #{spawn}"),
            (None, Some(b)) => format!("before #{b}"),
            (None, None) => "all".to_string(),
        };
        let _ = writeln!(
            out,
            "task {} {} \"{}\" ({upto}):",
            link.task_id,
            link.agent,
            clip(&link.description, 60)
        );
        let mut any = false;
        for s in why.steps.iter().filter(|s| s.task_id == link.task_id) {
            let _ = writeln!(out, "  {}", step_line(s));
            any = true;
        }
        if !any {
            let _ = writeln!(out, "  (nothing recorded before it)");
        }
    }
    let _ = writeln!(
        out,
        "total: {} LLM call{}, {} tokens, {}",
        why.llm_calls,
        if why.llm_calls == 1 { "" } else { "s" },
        inspect::group_digits(why.tokens_in + why.tokens_out),
        usd(why.cost_usd)
    );
    out
}
