//! Checkpoints a restart can use (issue 16, item 4): a checkpoint carries every
//! reasoning step (observation and confidence included), a name → result map of the
//! tool outputs and a context hash of what the task had seen; a task restarted from it
//! gets a ready "continue from step N" context, which the SDK puts first in its next
//! LLM request.

use crate::support::cli::*;
use crate::support::*;
use agentflow::Status;
use serde_json::{Value, json};

fn ops() -> Value {
    json!([
        {"load_context": null},
        {"step": {"thought": "plan the trip", "action": "remember the city",
                  "observation": "Lisbon chosen", "confidence": 0.8}},
        {"tool": {"name": "kv", "args": {"op": "put", "key": "city", "value": "Lisbon"}}},
        {"tool": {"name": "kv", "args": {"op": "get", "key": "city"}}},
        {"step": {"thought": "book it", "action": "look up trains",
                  "observation": "two trains a day", "confidence": 0.6}},
        {"save": {"state": {"at": "booking"}, "note": "planned"}},
        {"load_context": null},
        {"llm": {"prompt": "which train?", "continue_from_checkpoint": true}},
    ])
}

/// The first message of each recorded `llm.complete` request of the run.
fn first_llm_messages(db: &std::path::Path, run_id: &str) -> Vec<Value> {
    let host = host_at(db).unwrap();
    of_kind(&events(&host, run_id), "llm.complete")
        .iter()
        .map(|e| e.request["chat"]["messages"][0].clone())
        .collect()
}

#[test]
fn a_checkpoint_carries_steps_tool_results_and_a_context_hash() {
    let dir = TempDir::new("checkpoint-context");
    let db = dir.ledger("c.db");
    let out = agentflow()
        .arg("run")
        .arg(example("scripted"))
        .args(["--input", &ops().to_string(), "--grant", "kv", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results[0], Value::Null, "no checkpoint yet");
    let loaded = &results[6];
    assert_eq!(loaded["step"], 2);
    let context = loaded["restart_context"].as_str().unwrap();
    for want in [
        "continue from step 3",
        "Step 1: thought: plan the trip | action: remember the city | observation: Lisbon chosen | confidence: 0.80",
        "Step 2: thought: book it | action: look up trains | observation: two trains a day | confidence: 0.60",
        "- kv: ",
        "- kv#2: \"Lisbon\"",
    ] {
        assert!(context.contains(want), "missing {want:?} in:\n{context}");
    }
    let hash = loaded["context_hash"].as_str().unwrap();
    assert_eq!(hash.len(), 64, "{hash}");

    // The ledger's host state holds the same, and the next LLM request starts with it.
    let run_id = only_run_id(&db);
    let host = host_at(&db).unwrap();
    let conn = host.ledger().reader().unwrap();
    let saved = agentflow::ledger::query::checkpoints(&conn, &run_id, None).unwrap();
    let state = &saved[0].host_state;
    assert_eq!(state["task_context_hash"], hash);
    assert_eq!(state["steps"].as_array().unwrap().len(), 2);
    assert_eq!(state["steps"][0]["observation"], "Lisbon chosen");
    assert_eq!(state["tool_results"][1], json!(["kv#2", "\"Lisbon\""]));
    let first = first_llm_messages(&db, &run_id);
    assert_eq!(first[0]["role"], "system", "{first:?}");
    assert_eq!(first[0]["content"], context);

    // Another run that saw something else (another city) has another context hash.
    let other = ops().to_string().replace("Lisbon", "Porto");
    let out = agentflow()
        .arg("run")
        .arg(example("scripted"))
        .args(["--input", &other, "--grant", "kv", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(results[6]["context_hash"], hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_restarted_from_a_checkpoint_is_told_what_it_already_did() {
    let dir = TempDir::new("checkpoint-restart");
    let db = dir.ledger("r.db");
    // Crash right after the checkpoint (events: clock/random reads, load, step, put
    // intent and result, get intent and result, step, save = 9, load = 10), then make the recorded first step differ from what the guest will
    // send: the replay diverges and the task restarts from its checkpoint.
    let crashed = agentflow()
        .arg("run")
        .arg(example("scripted"))
        .args([
            "--input",
            &ops().to_string(),
            "--grant",
            "kv",
            "--on-divergence",
            "from-checkpoint",
            "--db",
        ])
        .arg(&db)
        .env("AGENTFLOW_CRASH_AFTER_EVENTS", "10")
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    let run_id = only_run_id(&db);
    let host = host_at(&db).unwrap();
    let conn = host.ledger().reader().unwrap();
    let saved = agentflow::ledger::query::checkpoints(&conn, &run_id, None).unwrap();
    assert_eq!(saved.len(), 1, "the crash came after the checkpoint");
    let saved_hash = saved[0].host_state["task_context_hash"].clone();
    drop(conn);
    sql_batch(
        &db,
        "UPDATE events SET request_hash = 'tampered' WHERE kind = 'trace.step'",
    );
    let report = host
        .resume(&run_id, agentflow::ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let results: Vec<Value> = serde_json::from_str(report.output.as_deref().unwrap()).unwrap();
    // The restarted guest's first call finds the checkpoint and what led to it.
    let restarted = &results[0];
    assert_eq!(restarted["step"], 2, "{restarted}");
    assert_eq!(restarted["context_hash"], saved_hash);
    let context = restarted["restart_context"].as_str().unwrap();
    assert!(
        context.contains("continue from step 3")
            && context.contains("observation: Lisbon chosen")
            && context.contains("- kv#2: \"Lisbon\""),
        "{context}"
    );
    // Its steps go on from the checkpoint's number, and its next checkpoint carries
    // the steps from before the restart too.
    let conn = host.ledger().reader().unwrap();
    let saved = agentflow::ledger::query::checkpoints(&conn, &run_id, None).unwrap();
    let last = &saved.last().unwrap().host_state;
    let steps: Vec<u64> = last["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4]);
    assert_ne!(last["task_context_hash"], saved_hash);
    let first = first_llm_messages(&db, &run_id);
    let last_first = first.last().unwrap();
    assert_eq!(last_first["role"], "system");
    assert!(
        last_first["content"]
            .as_str()
            .unwrap()
            .contains("continue from step 5"),
        "{last_first}"
    );
}
