//! Run-level limits seen by the guest as typed errors: budget, depth, task count,
//! host calls; cancellation; and more live agents than the instance pool holds.

use crate::support::*;
use agentflow::{RunOptions, Status};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// A tool children check in at (`{"op": "arrive"}`) and a blocker holds in
/// (`{"op": "hold"}`) until `expected` children have arrived.
struct Gate {
    expected: usize,
    arrived: AtomicUsize,
    all_in: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl agentflow::tools::Tool for Gate {
    fn info(&self) -> agentflow::tools::ToolInfo {
        agentflow::tools::ToolInfo {
            name: "gate".into(),
            description: "test gate: opens once every child has arrived".into(),
            args_schema: json!({}),
            side_effect: agentflow::tools::SideEffect::None,
            undo: None,
        }
    }

    async fn call(
        &self,
        _ctx: &agentflow::tools::ToolCallCtx,
        args: serde_json::Value,
    ) -> Result<String, agentflow::tools::ToolError> {
        if args["op"] == "hold" {
            loop {
                let notified = self.all_in.notified();
                if self.arrived.load(Ordering::SeqCst) >= self.expected {
                    return Ok("open".into());
                }
                notified.await;
            }
        }
        if self.arrived.fetch_add(1, Ordering::SeqCst) + 1 >= self.expected {
            self.all_in.notify_waiters();
        }
        Ok("in".into())
    }
}

/// More live agents than the instance pool has slots: with `[runtime] pool_instances
/// = 8`, 40 children are alive at once (each checks in at a gate, then waits in
/// `tasks.wait` for a blocker that holds until all 40 are in, so none can end before
/// the last has started). The ones beyond the pool start in on-demand instances:
/// every child completes, none fails for want of a slot. Guarded by the run's
/// `max_tasks`, each agent's `memory_mb`, a 2 GiB bound on the test process's resident
/// set and a time limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_larger_than_the_instance_pool_completes() {
    const CHILDREN: usize = 40;
    let _guard = guard::RssGuard::new("the pool fan-out", 2 << 30);
    let (_dir, mut host) = temp_host(
        "limits-pool",
        "[runtime]\npool_instances = 8\n[limits]\nmax_tasks = 45\nmemory_mb = 64\n",
    );
    let gate = Arc::new(Gate {
        expected: CHILDREN,
        arrived: AtomicUsize::new(0),
        all_in: tokio::sync::Notify::new(),
    });
    host.register_tool(gate.clone());
    let hold = json!([{"tool": {"name": "gate", "args": {"op": "hold"}}}]).to_string();
    let child = json!([
        {"tool": {"name": "gate", "args": {"op": "arrive"}}},
        {"wait": 2},
        {"fail_if_err": null},
    ])
    .to_string();
    let mut ops = vec![json!({"spawn": {"description": "blocker", "input": hold}})];
    ops.extend(
        (0..CHILDREN)
            .map(|i| json!({"spawn": {"description": format!("pool child {i}"), "input": child}})),
    );
    ops.extend((0..CHILDREN).map(|i| json!({"wait": 3 + i})));
    ops.push(json!({"wait": 2}));
    let (report, results) = tokio::time::timeout(
        std::time::Duration::from_secs(180),
        run_scripted(&host, json!(ops), grant(&["gate"])),
    )
    .await
    .expect("guard: the fan-out finished within 180 s");
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let waits = &results[CHILDREN + 1..];
    assert_eq!(waits.len(), CHILDREN + 1);
    for (i, w) in waits.iter().enumerate() {
        assert!(w["completed"].is_string(), "wait #{i}: {w}");
    }
    assert_eq!(gate.arrived.load(Ordering::SeqCst), CHILDREN);
    let tasks = tasks(&host, &report.run_id);
    assert_eq!(tasks.len(), CHILDREN + 2);
    assert!(
        tasks.iter().all(|t| t.status == Status::Completed),
        "{tasks:?}"
    );
    // Root, blocker and 40 children were alive at once: 34 beyond the 8 slots.
    let live = host.runtime().instances();
    assert!(live.peak_on_demand >= 34, "{live:?}");
    assert_eq!((live.pooled, live.on_demand), (0, 0), "all given back");
}
