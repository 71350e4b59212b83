//! The example agents run through the host on the default (mock) configuration.

use crate::support::*;
use agentflow::{RunOptions, Status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_makes_one_llm_call_and_returns_its_reply() {
    let (_dir, host) = temp_host("hello", "");
    let report = host
        .run_file(&example("hello"), "world", RunOptions::default())
        .await
        .unwrap();
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let out = report.output.unwrap();
    assert!(
        out.contains("world"),
        "reply should mention the input: {out}"
    );
    assert_eq!(report.tasks, 1);
    assert!(report.tokens > 0 && report.cost_usd > 0.0);
    let events = events(&host, &report.run_id);
    assert_eq!(
        kinds(&events, 1),
        vec!["llm.decision", "llm.complete", "trace.step"]
    );
    let llm = events.iter().find(|e| e.kind == "llm.complete").unwrap();
    assert_eq!(llm.response["text"].as_str().unwrap(), out);
    assert_eq!(llm.model.as_deref(), Some("mock-small"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn researcher_spawns_one_child_per_sub_question_and_summarises() {
    let (_dir, host) = temp_host("researcher", "");
    let report = host
        .run_file(
            &example("researcher"),
            "Why sandbox agents?",
            RunOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert!(report.output.as_deref().unwrap().starts_with("Summary:"));
    assert_eq!(report.tasks, 4, "root + 3 sub-agents");
    let conn = host.ledger().reader().unwrap();
    let tasks = agentflow::ledger::query::tasks(&conn, &report.run_id).unwrap();
    assert_eq!(tasks.len(), 4);
    for t in &tasks[1..] {
        assert_eq!(t.parent_id, Some(1));
        assert_eq!(t.depth, 1);
        assert_eq!(t.status, Status::Completed);
    }
    // Children ran concurrently: all three were spawned before the first wait.
    let events = events(&host, &report.run_id);
    let root = kinds(&events, 1);
    let first_wait = root.iter().position(|k| k == "tasks.wait").unwrap();
    assert_eq!(
        root[..first_wait]
            .iter()
            .filter(|k| *k == "tasks.spawn")
            .count(),
        3
    );
    assert!(root.iter().filter(|k| *k == "trace.step").count() >= 3);
    let checkpoints: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM checkpoints WHERE run_id = ?1",
            [&report.run_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(checkpoints, 1);
    // The run totals are the sum of the task totals.
    let sum: i64 = tasks.iter().map(|t| t.tokens_in + t.tokens_out).sum();
    assert_eq!(sum as u64, report.tokens);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_builds_a_tree_and_uses_kv() {
    let (_dir, host) = temp_host("fanout", "");
    let input = r#"{"depth": 2, "fanout": 3, "steps": 2}"#;
    let report = host
        .run_file(&example("fanout"), input, grant(&["kv"]))
        .await
        .unwrap();
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(report.tasks, 1 + 3 + 9);
    let out: serde_json::Value = serde_json::from_str(report.output.as_deref().unwrap()).unwrap();
    assert_eq!(out["tasks"], 13);
    let conn = host.ledger().reader().unwrap();
    let keys: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM kv WHERE run_id = ?1",
            [&report.run_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(keys, 13 * 2, "one kv put per step per task");
}
