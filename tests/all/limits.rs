//! Run-level limits seen by the guest as typed errors: budget, depth, task count,
//! host calls; and cancellation.

use crate::support::*;
use agentflow::{RunOptions, Status};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_calls_past_the_budget_are_refused_before_they_are_sent() {
    use crate::support::fake_http::FakeServer;
    use crate::support::llm::openai_ok;
    // The provider is a real HTTP endpoint, so "never sent" is observed where it counts.
    let server = FakeServer::start(vec![openai_ok("only", "cheap", 10, 5)]).await;
    let (_dir, host) = temp_host(
        "limits-budget",
        &format!(
            "[llm.endpoints.a.openai]\nbase_url = \"{}/v1\"\n[[llm.models]]\nname = \"only\"\nprovider = \"a\"\ninput_per_mtok = 1.0\noutput_per_mtok = 1.0\n",
            server.url()
        ),
    );
    let ops = json!([{"llm": {"prompt": "cheap", "max_tokens": 10}}, {"llm": {"prompt": "too much", "max_tokens": 100000}}]);
    let opts = RunOptions {
        budget_usd: Some(0.01),
        ..Default::default()
    };
    let (report, results) = run_scripted(&host, ops, opts).await;
    assert_eq!(report.status, Status::Completed);
    assert!(results[0]["ok"].is_object(), "{results:?}");
    assert!(
        results[1]["err"]
            .as_str()
            .unwrap()
            .contains("BudgetExceeded"),
        "{results:?}"
    );
    assert!(report.cost_usd <= 0.01);
    assert_eq!(
        server.requests().len(),
        1,
        "only the call that fit reached the provider"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_and_task_limits_are_typed_spawn_errors() {
    let (_dir, host) = temp_host("limits-depth", "[limits]\nmax_tasks = 3\n");
    let child = |n: u32| json!({"spawn": {"description": format!("child {n}"), "input": ""}});
    let (report, results) = run_scripted(
        &host,
        json!([child(1), child(2), child(3)]),
        RunOptions {
            max_depth: Some(1),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert!(results[0]["ok"].is_u64());
    assert!(results[1]["ok"].is_u64());
    assert!(
        results[2]["err"].as_str().unwrap().contains("TooManyTasks"),
        "{results:?}"
    );

    let nested = json!([{"spawn_wait": {"description": "grandchild", "input": "[{\"spawn\": {\"description\": \"too deep\", \"input\": \"\"}}]"}}]);
    let (_, results) = run_scripted(
        &host,
        nested,
        RunOptions {
            max_depth: Some(1),
            ..Default::default()
        },
    )
    .await;
    let inner = results[0]["completed"].as_str().expect("child completed");
    assert!(inner.contains("MaxDepthExceeded"), "{inner}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_key_returns_the_existing_task() {
    let (_dir, host) = temp_host("limits-dedup", "");
    let spawn = json!({"spawn": {"description": "same work", "input": "", "dedup_key": "k"}});
    let (_, results) = run_scripted(&host, json!([spawn, spawn]), RunOptions::default()).await;
    let first = results[0]["ok"].as_u64().unwrap();
    assert!(
        results[1]["err"]
            .as_str()
            .unwrap()
            .contains(&format!("DuplicateTask({first})")),
        "{results:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_call_limit_stops_the_agent() {
    let (_dir, host) = temp_host("limits-calls", "[limits]\nmax_host_calls = 5\n");
    let ops: Vec<_> = (0..10)
        .map(|i| json!({"log": format!("line {i}")}))
        .collect();
    let (report, _) = run_scripted(&host, json!(ops), RunOptions::default()).await;
    assert_eq!(report.status, Status::Failed);
    assert!(
        report
            .error
            .unwrap()
            .contains("host call limit exceeded (5 calls")
    );
}

/// Cancelling a spawned child (queued or already running: the test does not wait to
/// know) ends it as `cancelled`, and a second cancel reports it finished. A child's
/// descendants are covered by `constraints::cancelling_a_child_cancels_its_descendants`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_spawned_child() {
    let hostile = example("hostile");
    let toml = format!(
        "[limits]\ncpu_ms = 20000\n[agents]\nspinner = {:?}\n",
        hostile.to_str().unwrap()
    );
    let (_dir, host) = temp_host("limits-cancel", &toml);
    let ops = json!([
        {"spawn": {"description": "spin", "input": "loop", "agent": "spinner"}},
        {"clock": null},
        {"cancel": 2},
        {"wait": 2},
        {"cancel": 2},
    ]);
    let started = std::time::Instant::now();
    let (report, results) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(results[2], json!(true));
    assert_eq!(results[3], json!("cancelled"));
    assert_eq!(results[4], json!(false), "already finished");
    assert!(started.elapsed().as_secs() < 10);
    let tasks = tasks(&host, &report.run_id);
    assert_eq!(tasks[1].status, Status::Cancelled);
}
