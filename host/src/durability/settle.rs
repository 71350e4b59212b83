//! Settling a side effect whose outcome is in doubt (`agentflow settle`): a human who
//! checked the affected system records whether the call happened.
//!
//! A crash between a tool's intent and its result leaves the call in doubt; for a
//! compensable or irreversible tool the resumed task stops there and the recovery
//! plan says `RequiresHuman`. The human's answer is recorded as the intent's result —
//! a `tools.call` event with the intent's identity, so a replay matches it like any
//! result — marked `settled`:
//! * **happened** — the result is the one the human gives (`--result`, JSON; `null`
//!   when none) and the guest receives it on replay: the tool is not run again;
//! * **did not happen** — the resumed guest's call runs live again, with a new intent
//!   and the same idempotency key.
//!
//! Then `agentflow resume` continues the run (with `--retry-failed` when the in-doubt
//! task already failed).

use crate::ledger::query::{self, EventRow};
use crate::ledger::{EventKind, EventRecord, Ledger, Status};
use serde_json::{Value, json};

/// The human's answer about an in-doubt call.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// The call acted; its result as the guest should see it (`None`: JSON `null`).
    Happened { result: Option<Value> },
    /// The call did not act: run it again.
    DidNotHappen,
}

/// What a settlement recorded.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Settled {
    pub run_id: String,
    pub task_id: u64,
    /// The intent settled and the result event recorded for it.
    pub intent_seq: u64,
    pub result_seq: u64,
    pub tool: String,
    pub happened: bool,
    /// The command that continues the run.
    pub next: String,
}

/// Whether a recorded `tools.call` response is a settlement saying the call did not
/// happen: the resumed guest's call then runs live.
pub fn did_not_happen(response: &Value) -> bool {
    response["settled"]["happened"] == json!(false)
}

/// Record `answer` for the in-doubt intent at `intent_seq` of run `run` (an id or a
/// unique prefix). Errors say why the event cannot be settled: not an intent, already
/// answered, a finished run.
pub async fn settle(
    ledger: &Ledger,
    run: &str,
    intent_seq: u64,
    answer: Answer,
    note: Option<String>,
) -> anyhow::Result<Settled> {
    let reader = ledger.reader()?;
    let row = query::run(&reader, run)?
        .ok_or_else(|| anyhow::anyhow!("no run `{run}` in {}", ledger.name()))?;
    if row.status == Status::Completed || row.status == Status::Cancelled {
        anyhow::bail!(
            "run {} is {}: nothing of it is in doubt",
            row.run_id,
            row.status
        );
    }
    let events = query::events(&reader, &row.run_id, None)?;
    let intent = in_doubt_intent(&events, intent_seq).map_err(|why| {
        anyhow::anyhow!(
            "event {intent_seq} of run {} cannot be settled: {why} (see `agentflow recover {}`)",
            row.run_id,
            row.run_id
        )
    })?;
    let tool = intent.request["name"].as_str().unwrap_or("?").to_string();
    let happened = matches!(answer, Answer::Happened { .. });
    let settled =
        json!({ "by": "human", "happened": happened, "note": note, "intent_seq": intent_seq });
    let response = match answer {
        Answer::Happened { result } => {
            let result = result.unwrap_or(Value::Null);
            let text = match result {
                Value::String(s) => s,
                other => other.to_string(),
            };
            json!({ "ok": text, "settled": settled })
        }
        Answer::DidNotHappen => json!({
            "error_kind": "failed",
            "detail": "settled: the call did not happen; it runs again on resume",
            "settled": settled,
        }),
    };
    let request = json!({
        "name": intent.request["name"],
        "args": intent.request["args"],
        "idempotency_key": intent.request["idempotency_key"],
    });
    let identity = json!({ "name": intent.request["name"], "args": intent.request["args"] });
    let result_seq = ledger
        .append(EventRecord {
            response_text: None,
            identity: Some(identity),
            ..EventRecord::note(
                row.run_id.clone(),
                intent.task_id,
                EventKind::ToolsCall,
                happened,
                request,
                response,
            )
        })
        .await?;
    let next = if row.status == Status::Failed {
        format!("agentflow resume {} --retry-failed", row.run_id)
    } else {
        format!("agentflow resume {}", row.run_id)
    };
    Ok(Settled {
        run_id: row.run_id,
        task_id: intent.task_id,
        intent_seq,
        result_seq,
        tool,
        happened,
        next,
    })
}

/// The intent at `seq` when nothing answered it yet; else why not.
fn in_doubt_intent(events: &[EventRow], seq: u64) -> Result<&EventRow, String> {
    let event = events
        .iter()
        .find(|e| e.seq == seq)
        .ok_or_else(|| "the run has no such event".to_string())?;
    if event.kind != EventKind::ToolsIntent {
        return Err(format!("it is a `{}` event, not a tool intent", event.kind));
    }
    let answer = events.iter().find(|e| super::recovery::answers(e, event));
    match answer {
        Some(e) => Err(format!(
            "its result is recorded already (event {}): it is not in doubt",
            e.seq
        )),
        None => Ok(event),
    }
}
