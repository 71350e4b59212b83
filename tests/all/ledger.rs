//! The ledger: every host call present, in the guest's order; everything before an
//! effect committed before the effect runs (the output-commit barrier); large texts
//! stored once.

use crate::support::*;
use agentflow::tools::{SideEffect, Tool, ToolCallCtx, ToolError, ToolInfo};
use agentflow::{RunOptions, Status};
use serde_json::json;
use std::sync::Arc;

/// A side-effecting tool that looks at the ledger *on disk* (a separate read
/// connection) and reports which events of the calling task are committed at the
/// moment it runs.
struct LedgerProbe;

#[async_trait::async_trait]
impl Tool for LedgerProbe {
    fn info(&self) -> ToolInfo {
        ToolInfo {
            name: "probe".into(),
            description: "count committed events of the caller".into(),
            args_schema: json!({}),
            side_effect: SideEffect::Idempotent,
            undo: None,
        }
    }

    async fn call(&self, ctx: &ToolCallCtx, _args: serde_json::Value) -> Result<String, ToolError> {
        let conn = crate::support::connect(ctx.ledger.path());
        let kinds: Vec<String> = conn
            .prepare("SELECT kind FROM events WHERE run_id = ?1 AND task_id = ?2 AND kind != 'wasi.nondet' ORDER BY seq")
            .unwrap()
            .query_map(rusqlite::params![ctx.run_id, ctx.task_id as i64], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        Ok(serde_json::to_string(&kinds).unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_before_an_effect_is_committed_before_it_runs_and_in_order() {
    let (_dir, mut host) = temp_host("ledger-order", "");
    host.register_tool(Arc::new(LedgerProbe));
    let ops = json!([
        {"llm": {"prompt": "first"}},
        {"tool": {"name": "probe", "args": {}}},
        {"step": {"thought": "t", "action": "a", "observation": "o", "confidence": 0.5}},
        {"clock": null},
        {"tool": {"name": "probe", "args": {}}},
        {"save": {"state": {"n": 1}, "note": "after probe"}},
        {"load": null},
        {"tools_list": null},
        {"tool": {"name": "probe", "args": {}}},
    ]);
    let (report, results) = run_scripted(&host, ops, grant(&["probe"])).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    // LLM replies, trace steps, checkpoints and the like are buffered (the guest does
    // not wait for their commit), but a side effect runs only once its intent — and
    // with it everything the task did before — is committed: the probe sees it all.
    let seen = |i: usize| -> Vec<String> {
        serde_json::from_str(results[i]["ok"].as_str().unwrap()).unwrap()
    };
    assert_eq!(
        seen(1),
        vec!["llm.decision", "llm.complete", "tools.intent"]
    );
    assert_eq!(
        seen(4),
        vec![
            "llm.decision",
            "llm.complete",
            "tools.intent",
            "tools.call",
            "trace.step",
            "tools.intent"
        ]
    );
    assert_eq!(
        seen(8),
        vec![
            "llm.decision",
            "llm.complete",
            "tools.intent",
            "tools.call",
            "trace.step",
            "tools.intent",
            "tools.call",
            "checkpoint.save",
            "checkpoint.load",
            "tools.list",
            "tools.intent"
        ]
    );
    // The final ledger has every call in the guest's order, with dense sequence numbers.
    let events = events(&host, &report.run_id);
    assert_eq!(
        kinds(&events, 1),
        vec![
            "llm.decision",
            "llm.complete",
            "tools.intent",
            "tools.call",
            "trace.step",
            "tools.intent",
            "tools.call",
            "checkpoint.save",
            "checkpoint.load",
            "tools.list",
            "tools.intent",
            "tools.call"
        ]
    );
    let seqs: Vec<u64> = events
        .iter()
        .filter(|e| e.task_id == 1)
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    // The clock read was recorded (as a nondeterministic input) before the next call.
    let clock_pos = events
        .iter()
        .position(|e| e.kind == "wasi.nondet" && e.response.to_string().contains("wall_ns"));
    let second_probe = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == "tools.call")
        .nth(1)
        .unwrap()
        .0;
    assert!(clock_pos.unwrap() < second_probe);
    // The checkpoint loaded is the one saved.
    assert_eq!(results[6], json!({"n": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_large_context_is_stored_once() {
    let (_dir, host) = temp_host("ledger-blobs", "");
    let long = "context ".repeat(500);
    let ops = json!([
        {"llm": {"prompt": long}},
        {"llm": {"prompt": long}},
        {"llm": {"prompt": long}},
    ]);
    let (report, _) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let conn = host.ledger().reader().unwrap();
    let hash = agentflow::ledger::blobs::sha256_hex(long.as_bytes());
    let (count, size): (i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM blobs WHERE hash = ?1",
            [&hash],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((count, size), (1, long.len() as i64));
    // Every event row refers to it instead of repeating it, and reads resolve it.
    let inline: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM events WHERE request LIKE '%context context context%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(inline, 0);
    let events = events(&host, &report.run_id);
    let llm: Vec<_> = events.iter().filter(|e| e.kind == "llm.complete").collect();
    assert_eq!(llm.len(), 3);
    assert_eq!(
        llm[0].request["chat"]["messages"][0]["content"]
            .as_str()
            .unwrap(),
        long
    );
}

/// A resume replays calls whose recorded payloads are in `blobs` (a long LLM reply, a
/// long tool result, long requests), which it reads only as those calls replay: the
/// guest gets the recorded values back and nothing runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_replays_payloads_stored_as_blobs() {
    let dir = TempDir::new("ledger-blob-replay");
    let host = host(&dir, "");
    let long = "word ".repeat(120);
    let ops = json!([
        {"llm": {"prompt": format!("Summarize:\n{long}"), "max_tokens": 2000}},
        {"tool": {"name": "kv", "args": {"op": "put", "key": "k", "value": long}}},
        {"tool": {"name": "kv", "args": {"op": "get", "key": "k"}}},
        {"log": long},
        {"save": {"state": {"text": long}, "note": "long"}},
        {"load": null},
    ]);
    let (report, results) = run_scripted(&host, ops, grant(&["kv"])).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let reply = results[0]["ok"]["text"].as_str().unwrap();
    assert!(
        reply.len() > 256 && reply.starts_with("Summary: word"),
        "{reply}"
    );
    assert_eq!(results[2], json!({"ok": json!(long).to_string()}));
    assert_eq!(results[5], json!({"text": long}));
    let db = dir.ledger("ledger.db");
    let in_blobs = |kind: &str| -> i64 {
        sql(
            &db,
            &format!(
                "SELECT COUNT(*) FROM events WHERE kind = '{kind}' AND response LIKE '%\"$blob\"%'"
            ),
        )
    };
    assert_eq!(in_blobs("llm.complete"), 1, "the reply is a blob reference");
    assert_eq!(
        in_blobs("tools.call"),
        1,
        "the `get` result is a blob reference"
    );
    let calls =
        "SELECT COUNT(*) FROM events WHERE kind IN ('llm.complete', 'tools.call', 'tools.intent')";
    let recorded: i64 = sql(&db, calls);
    drop(host);

    sql_batch(
        &db,
        "UPDATE runs SET status = 'running', output = NULL, finished_at = NULL;
         UPDATE tasks SET status = 'running', output = NULL, finished_at = NULL;",
    );
    let host = host_at(&db).unwrap();
    let resumed = host
        .resume(&report.run_id, agentflow::ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(resumed.status, Status::Completed, "{resumed:?}");
    assert_eq!(
        resumed.output, report.output,
        "the same values, read back from blobs"
    );
    assert_eq!(sql::<i64>(&db, calls), recorded, "nothing ran again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_and_tasks_record_status_and_totals() {
    let (_dir, host) = temp_host("ledger-runs", "");
    let (ok, _) = run_scripted(
        &host,
        json!([{"llm": {"prompt": "x"}}]),
        RunOptions::default(),
    )
    .await;
    let (failed, _) = run_scripted(
        &host,
        json!([{"fail": "on purpose"}]),
        RunOptions::default(),
    )
    .await;
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.error.as_deref(), Some("on purpose"));
    let conn = host.ledger().reader().unwrap();
    let runs =
        agentflow::ledger::query::runs(&conn, &agentflow::ledger::query::RunFilter::newest(10))
            .unwrap();
    assert_eq!(runs.len(), 2);
    let ok_row = runs.iter().find(|r| r.run_id == ok.run_id).unwrap();
    assert_eq!(ok_row.status, Status::Completed);
    assert!(ok_row.tokens_in > 0 && ok_row.cost_usd > 0.0 && ok_row.finished_at.is_some());
    let failed_row = runs.iter().find(|r| r.run_id == failed.run_id).unwrap();
    assert_eq!(failed_row.status, Status::Failed);
    assert_eq!(failed_row.error.as_deref(), Some("on purpose"));
}
