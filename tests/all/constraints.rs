//! Task trees under constraints: each spawn check and its typed error, hierarchical
//! budgets under a 50-child race, every dependency type, approvals (also across a
//! host restart), per-task timeouts.

use crate::support::cli::*;
use crate::support::*;
use agentflow::{RunOptions, Status};
use serde_json::{Value, json};

fn spawn(desc: &str, input: Value, extra: Value) -> Value {
    let input = match input {
        Value::String(s) => s,
        other => other.to_string(),
    };
    let mut s = json!({"description": desc, "input": input});
    if let (Some(m), Some(x)) = (s.as_object_mut(), extra.as_object()) {
        for (k, v) in x {
            m.insert(k.clone(), v.clone());
        }
    }
    json!({ "spawn": s })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_cycles_and_budget_shares_are_typed_refusals() {
    let (_dir, host) = temp_host("con-checks", "");
    let grandchild = json!([{"spawn": {"description": "Research the history of the Rust language again", "input": ""}}]);
    let ops = json!([
        spawn("Fetch the page", json!(""), json!({})),
        spawn("fetch the PAGE!", json!(""), json!({})),
        spawn("research the history of the rust language", grandchild, json!({})),
        {"wait": 3},
        spawn("big spender", json!(""), json!({"budget_usd": 5.0})),
        spawn("small spender", json!(""), json!({"budget_usd": 0.25})),
    ]);
    let (report, r) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(r[0]["ok"], 2);
    assert!(
        r[1]["err"].as_str().unwrap().contains("DuplicateTask(2)"),
        "{}",
        r[1]
    );
    let nested = r[3]["completed"].as_str().unwrap();
    assert!(
        nested.contains("CircularDependency(3)"),
        "the grandchild restates its parent: {nested}"
    );
    assert!(
        r[4]["err"].as_str().unwrap().contains("BudgetExceeded"),
        "{}",
        r[4]
    );
    assert!(r[5]["ok"].is_u64());
    // The refusals are visible to an operator.
    let text = inspect_text(&host, &report.run_id);
    assert!(
        text.contains("tasks.spawn refused: duplicate-task"),
        "{text}"
    );
}

/// Two slots: the root holds one while it spawns, the first sleeper the other (it
/// signals through `kv` that it runs, and holds on until the root says `go`), so a
/// fail-fast spawn is refused then, and the other sleepers queue rather than fail. A
/// gauge the sleepers enter and leave proves at most two ever run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_queues_children_and_fail_fast_refuses() {
    let (_dir, mut host) = temp_host(
        "con-concurrency",
        "[constraints]\nmax_concurrent_tasks = 2\n",
    );
    let gauge = Gauge::default();
    host.register_tool(std::sync::Arc::new(gauge.clone()));
    let sleeper = |i: usize| {
        Gauge::around(
            "sleepers",
            &format!("sleeper {i}"),
            vec![
                json!({"tool": {"name": "kv", "args": {"op": "put", "key": format!("running-{i}"), "value": "yes"}}}),
                json!({"wait_kv": {"key": "go", "timeout_ms": 20000}}),
            ],
        )
    };
    let tools = json!({"tools": ["kv", "gauge"]});
    let mut ops: Vec<Value> = (0..4)
        .map(|i| spawn(&format!("sleeper {i}"), sleeper(i), tools.clone()))
        .collect();
    ops.push(json!({"wait_kv": {"key": "running-0", "timeout_ms": 20000}}));
    ops.push(spawn("impatient", json!(""), json!({"fail_fast": true})));
    ops.push(json!({"tool": {"name": "kv", "args": {"op": "put", "key": "go", "value": "now"}}}));
    ops.extend((2..6).map(|id| json!({"wait": id})));
    let (report, r) = run_scripted(&host, json!(ops), grant(&["kv", "gauge"])).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert!(
        r[5]["err"].as_str().unwrap().contains("ResourceExhausted"),
        "{}",
        r[5]
    );
    let t = tasks(&host, &report.run_id);
    let children: Vec<_> = t.iter().filter(|t| t.parent_id == Some(1)).collect();
    assert_eq!(children.len(), 4);
    assert!(
        children.iter().all(|c| c.status == Status::Completed),
        "queued, not refused"
    );
    let most = gauge.max("sleepers");
    assert!(
        (1..=2).contains(&most),
        "at most two sleepers ran at once ({most})"
    );
}

/// Fifty children race for one budget. Every reply runs to `max_tokens`, so each
/// call costs exactly what it reserved: without check-and-reserve under one lock,
/// parallel calls would pass the limit. The run must spend the budget down to less
/// than one call, never past it, and never have more committed at once than it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_children_never_overspend_one_budget() {
    let long_reply = "spend ".repeat(4000);
    let (_dir, host) = temp_host(
        "con-budget-race",
        &format!(
            "[limits]\nmax_tasks = 64\n[constraints]\nmax_concurrent_tasks = 64\n\
             [[llm.mock.rules]]\ncontains = \"call\"\nreply = \"{long_reply}\"\n"
        ),
    );
    let budget = 0.02;
    // Each child keeps asking for expensive calls until refused.
    let child: Vec<Value> = (0..6).map(|i| json!({"llm": {"prompt": format!("call {i}"), "max_tokens": 2000, "priority": "quality"}})).collect();
    let child = json!(child);
    let mut ops: Vec<Value> = (0..50)
        .map(|i| spawn(&format!("child number {i}"), child.clone(), json!({})))
        .collect();
    ops.extend((2..52).map(|id| json!({"wait": id})));
    let opts = RunOptions {
        budget_usd: Some(budget),
        ..Default::default()
    };
    let (report, r) = run_scripted(&host, json!(ops), opts).await;
    // The budget is checked first: whatever else went wrong, it must hold.
    let all = events(&host, &report.run_id);
    let spent: f64 = all.iter().map(|e| e.cost_usd).sum();
    assert!(spent <= budget + 1e-12, "spent {spent} > budget {budget}");
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let outputs: Vec<Value> = r[50..]
        .iter()
        .map(|o| serde_json::from_str(o["completed"].as_str().expect("completed")).unwrap())
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for out in &outputs {
        for call in out.as_array().unwrap() {
            if call["ok"].is_object() {
                assert_eq!(
                    call["ok"]["output_tokens"], 2000,
                    "every reply hits max_tokens"
                );
                ok += 1;
            } else if call["err"]
                .as_str()
                .unwrap_or("")
                .contains("BudgetExceeded")
            {
                refused += 1;
            }
        }
    }
    let one_call = all
        .iter()
        .filter(|e| e.kind == "llm.complete")
        .map(|e| e.cost_usd)
        .fold(0.0, f64::max);
    let summary = all
        .iter()
        .find(|e| e.kind == "budget.summary")
        .expect("the run records its budget summary");
    let peak = summary.response["peak_committed_usd"].as_f64().unwrap();
    println!(
        "budget race: 50 children, {ok} calls admitted, {refused} refused, spent ${spent:.6} \
         of ${budget} (one call ${one_call:.6}), peak committed ${peak:.6}"
    );
    assert!(
        spent > budget - one_call,
        "the budget was used up to less than one call: spent {spent}, one call {one_call}"
    );
    assert!(
        peak <= budget + 1e-12,
        "committed {peak} at once > budget {budget}"
    );
    assert!(
        ok > 0 && refused > 0,
        "the race was real: {ok} admitted, {refused} refused"
    );
    assert_eq!(ok + refused, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_childs_share_caps_its_subtree() {
    let (_dir, host) = temp_host("con-share", "");
    let child = json!([
        {"llm": {"prompt": "fits", "max_tokens": 100}},
        {"llm": {"prompt": "does not fit", "max_tokens": 100000, "priority": "quality"}},
    ]);
    let ops = json!([spawn("capped", child, json!({"budget_usd": 0.001})), {"wait": 2}]);
    let (report, r) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed);
    let out: Value = serde_json::from_str(r[1]["completed"].as_str().unwrap()).unwrap();
    assert!(out[0]["ok"].is_object());
    let err = out[1]["err"].as_str().unwrap();
    assert!(
        err.contains("BudgetExceeded") && err.contains("budget left $0.000"),
        "the share, not the run budget: {err}"
    );
}

/// Every dependency type orders children, checked with a gauge the children enter
/// and leave (exact counts and order, no timestamps): each child holds for 200 ms
/// inside, so a broken constraint would show as an overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dependency_type_orders_children() {
    let (_dir, mut host) = temp_host("con-deps", "");
    let gauge = Gauge::default();
    host.register_tool(std::sync::Arc::new(gauge.clone()));
    let hold = |key: &str, who: &str| Gauge::around(key, who, vec![json!({"sleep_ms": 200})]);
    let t = |extra: Value| {
        let mut e = extra;
        e["tools"] = json!(["gauge"]);
        e
    };
    let ops = json!([
        spawn("first", hold("order", "first"), t(json!({}))),                                  // 2
        spawn("after first", hold("order", "after first"), t(json!({"after": [2]}))),          // 3
        spawn("gets data", json!("input"), json!({"data_from": [2]})),                         // 4 (not JSON → echoes)
        spawn("exclusive one", hold("exclusive", "excl-one"), t(json!({}))),                        // 5
        spawn("exclusive two", hold("exclusive", "excl-two"), t(json!({"exclusive_with": [5]}))),   // 6
        spawn("db writer a", hold("db", "a"), t(json!({"resources": ["db"]}))),                // 7
        spawn("db writer b", hold("db", "b"), t(json!({"resources": ["db"]}))),                // 8
        spawn("step one", hold("migrate", "step-one"), t(json!({"sequence": "migrate"}))),          // 9
        spawn("step two", hold("migrate", "step-two"), t(json!({"sequence": "migrate"}))),          // 10
        spawn("step three", hold("migrate", "step-three"), t(json!({"sequence": "migrate"}))),      // 11
        {"wait": 3}, {"wait": 4}, {"wait": 6}, {"wait": 8}, {"wait": 11}, {"wait": 10}, {"wait": 9}, {"wait": 7}, {"wait": 5},
    ]);
    let (report, r) = run_scripted(&host, ops, grant(&["gauge"])).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert!(
        gauge.position("leave", "first") < gauge.position("enter", "after first"),
        "Sequential"
    );
    let data = r[11]["completed"].as_str().unwrap();
    assert!(
        data.starts_with("child:input") && data.contains(r#"[{"ok":"1"},null,{"ok":"0"}]"#),
        "DataDependency gets the output: {data}"
    );
    assert_eq!(gauge.max("exclusive"), 1, "MutualExclusion");
    assert_eq!(gauge.max("db"), 1, "ConflictingResources");
    assert_eq!(gauge.max("migrate"), 1, "RequiredSequence: one at a time");
    assert!(
        gauge.position("leave", "step-one") < gauge.position("enter", "step-two")
            && gauge.position("leave", "step-two") < gauge.position("enter", "step-three"),
        "RequiredSequence: in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dependency_fails_or_cancels_its_dependents() {
    for (policy, expected) in [("fail", Status::Failed), ("cancel", Status::Cancelled)] {
        let (_dir, host) = temp_host(
            "con-depfail",
            &format!("[constraints]\non_dependency_failure = \"{policy}\"\n"),
        );
        let ops = json!([
            spawn("breaks", json!([{"fail": "broken"}]), json!({})),
            spawn("needs it", json!(""), json!({"after": [2]})),
            {"wait": 3},
        ]);
        let (report, _) = run_scripted(&host, ops, RunOptions::default()).await;
        let t = tasks(&host, &report.run_id);
        assert_eq!(t[2].status, expected, "{policy}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_task_timeouts_stop_slow_children() {
    let (_dir, host) = temp_host("con-timeout", "");
    let ops = json!([spawn("slow", json!([{"sleep_ms": 5000}]), json!({"timeout_ms": 200})), {"wait": 2}]);
    let started = std::time::Instant::now();
    let (_, r) = run_scripted(&host, ops, RunOptions::default()).await;
    assert!(
        r[1]["failed"]
            .as_str()
            .unwrap()
            .contains("wall-clock time limit exceeded (200 ms"),
        "{}",
        r[1]
    );
    assert!(started.elapsed().as_secs() < 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_hold_a_child_until_a_human_decides() {
    let (_dir, host) = temp_host(
        "con-approve",
        "[constraints.approval]\ncost_over_usd = 0.5\ndescription_matches = [\"*delete*\"]\n",
    );
    let ledger = host.ledger().clone();
    let decider = tokio::spawn(async move {
        let mut decided = 0;
        while decided < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let conn = ledger.reader().unwrap();
            for a in agentflow::ledger::query::approvals(&conn, false).unwrap() {
                let approve = a.reason.contains("estimated cost");
                // $0.90 of the run's $1: within the whole budget, nothing more to say.
                assert!(!a.reason.contains("whole budget"), "{}", a.reason);
                ledger
                    .decide_approval(a.id, approve, Some("checked by test".into()))
                    .await
                    .unwrap();
                decided += 1;
            }
        }
    });
    let ops = json!([
        spawn("expensive", json!(""), json!({"estimated_cost": 0.9})),
        spawn("delete the old index", json!(""), json!({})),
        spawn("cheap", json!(""), json!({"estimated_cost": 0.1})),
        {"wait": 2}, {"wait": 3}, {"wait": 4},
    ]);
    let (report, r) = run_scripted(&host, ops, RunOptions::default()).await;
    decider.await.unwrap();
    assert_eq!(report.status, Status::Completed);
    assert_eq!(r[3]["completed"], "child:");
    assert!(
        r[4]["failed"]
            .as_str()
            .unwrap()
            .contains("denied by a human")
            && r[4]["failed"].as_str().unwrap().contains("checked by test")
    );
    assert_eq!(r[5]["completed"], "child:", "no rule matched: no wait");
    let kinds = kinds(&events(&host, &report.run_id), 3);
    assert!(
        kinds.contains(&"approval.requested".to_string())
            && kinds.contains(&"approval.decided".to_string())
    );
}

#[test]
fn approvals_survive_a_host_restart() {
    let dir = TempDir::new("con-approve-restart");
    let db = dir.ledger("a.db");
    let config = dir.file("c.toml", "[constraints.approval]\ndepth_over = 0\n");
    let ops = json!([spawn("needs a human", json!(""), json!({})), {"wait": 2}]).to_string();
    let config_arg = config.to_str().unwrap();
    let mut child = spawn_example(&db, "scripted", ["--input", &ops, "--config", config_arg]);
    let pending = wait_for_listing("approvals", &db);
    assert_eq!(pending[0]["task_id"], 2, "{pending}");
    assert!(
        pending[0]["reason"]
            .as_str()
            .unwrap()
            .contains("depth 1 is over 0")
    );
    child.kill().unwrap(); // the host stops while the child waits
    child.wait().unwrap();
    let id = pending[0]["id"].to_string();
    let approved = agentflow_on(&db, ["approve", &id, "--note", "ok"]);
    assert!(approved.status.success(), "{}", stderr(&approved));
    let report = resume_only_run(&db, &config);
    let results: Vec<Value> = serde_json::from_str(report["output"].as_str().unwrap()).unwrap();
    assert_eq!(results[1]["completed"], "child:");
    let again = agentflow_on(&db, ["approve", &id]);
    assert_eq!(again.status.code(), Some(2), "already decided");
}

fn webscraper_config(extra: &str) -> String {
    let rules = repo_path("examples/webscraper/mock-rules.toml");
    format!(
        "[limits]\nmax_depth = 3\n[budget]\nusd = 0.05\n[llm.mock]\nrules_file = {:?}\n{extra}",
        rules.to_str().unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webscraper_runaway_hits_the_depth_limit_and_falls_back() {
    let (_dir, host) = temp_host("con-webscraper", &webscraper_config(""));
    let report = host
        .run_file(
            &example("webscraper"),
            "Scrape product prices from shop.example.com",
            RunOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(report.tasks, 4, "root + 3 levels: MaxTreeDepth(3)");
    let out = report.output.unwrap();
    assert!(
        out.contains("pragmatic plan (spawn: maximum depth exceeded (limit 3))"),
        "{out}"
    );
    let text = inspect_text(&host, &report.run_id);
    assert!(
        text.contains("✗ tasks.spawn refused: max-depth-exceeded: 3"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webscraper_expensive_delegation_waits_for_approval_and_a_denial_falls_back() {
    let (_dir, host) = temp_host(
        "con-webscraper-approval",
        &webscraper_config("[constraints.approval]\ncost_over_usd = 1.0\n"),
    );
    let ledger = host.ledger().clone();
    let denier = tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let conn = ledger.reader().unwrap();
            if let Some(a) = agentflow::ledger::query::approvals(&conn, false)
                .unwrap()
                .into_iter()
                .next()
            {
                ledger
                    .decide_approval(a.id, false, Some("no drivers in this project".into()))
                    .await
                    .unwrap();
                return a;
            }
        }
    });
    let report = host
        .run_file(
            &example("webscraper"),
            "Scrape product prices from shop.example.com",
            RunOptions::default(),
        )
        .await
        .unwrap();
    let approval = denier.await.unwrap();
    assert_eq!(approval.description, "Write a network card driver");
    assert!(
        approval
            .reason
            .contains("estimated cost $1.6000 is over $1.0000"),
        "{}",
        approval.reason
    );
    // The webscraper's run budget is $0.05: approving cannot make the estimate fit,
    // and the request says so.
    assert!(
        approval
            .reason
            .contains("the estimate $1.6000 is more than the run's whole budget of $0.0500"),
        "{}",
        approval.reason
    );
    assert_eq!(report.status, Status::Completed);
    let out = report.output.unwrap();
    assert!(
        out.contains("denied by a human") && out.contains("no drivers in this project"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_token_budget_refuses_calls_that_would_exceed_it() {
    let (_dir, host) = temp_host("con-tokens", "[budget]\ntokens = 300\n");
    let call = json!({"llm": {"prompt": "hello", "max_tokens": 100}});
    let calls: Vec<Value> = (0..10).map(|_| call.clone()).collect();
    let (report, r) = run_scripted(&host, json!(calls), RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed);
    let refused: Vec<&Value> = r
        .iter()
        .filter(|x| {
            x["err"]
                .as_str()
                .is_some_and(|e| e.contains("token budget"))
        })
        .collect();
    assert!(!refused.is_empty(), "{r:?}");
    assert!(report.tokens <= 300, "{} tokens", report.tokens);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycles_can_be_judged_by_an_embeddings_endpoint() {
    use crate::support::fake_http::{FakeResponse, FakeServer};
    // Every text embeds to the same vector: everything is similar to everything.
    let body = json!({"data": [{"embedding": [1.0, 0.0]}, {"embedding": [1.0, 0.0]}]}).to_string();
    let server = FakeServer::start(vec![FakeResponse::json(200, body)]).await;
    let (_dir, host) = temp_host(
        "con-embeddings",
        &format!(
            "[constraints.embeddings]\nbase_url = \"{}/v1\"\nmodel = \"embed-test\"\n",
            server.url()
        ),
    );
    let (_, r) = run_scripted(
        &host,
        json!([spawn("anything at all", json!(""), json!({}))]),
        RunOptions::default(),
    )
    .await;
    assert!(
        r[0]["err"]
            .as_str()
            .unwrap()
            .contains("CircularDependency(1)"),
        "{}",
        r[0]
    );
    let req = &server.requests()[0];
    assert_eq!(req.path, "/v1/embeddings");
    assert_eq!(req.json()["input"], json!(["anything at all", "root"]));
}

/// A child that has spawned a grandchild (a spinning agent) and is waiting for it is
/// cancelled: both end `cancelled`, the grandchild stopped while it ran. The child
/// signals through the run's `kv` store once the grandchild exists, so the root cancels
/// at the right moment without guessing with sleeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_child_cancels_its_descendants() {
    let hostile = example("hostile");
    let toml = format!(
        "[limits]\ncpu_ms = 30000\n[agents]\nspinner = {:?}\n",
        hostile.to_str().unwrap()
    );
    let (_dir, host) = temp_host("limits-cancel-tree", &toml);
    let child = json!([
        {"spawn": {"description": "grandchild", "input": "loop", "agent": "spinner"}},
        {"tool": {"name": "kv", "args": {"op": "put", "key": "grandchild", "value": "spawned"}}},
        {"wait": 3},
    ]);
    let ops = json!([
        {"spawn": {"description": "child", "input": child.to_string(), "tools": ["kv"]}},
        {"wait_kv": {"key": "grandchild", "timeout_ms": 20000}},
        {"cancel": 2},
        {"wait": 2},
    ]);
    let started = std::time::Instant::now();
    let (report, results) = run_scripted(&host, ops, grant(&["kv"])).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(
        results[1],
        json!("\"spawned\""),
        "the grandchild existed: {results:?}"
    );
    assert_eq!(results[2], json!(true));
    assert_eq!(results[3], json!("cancelled"));
    let tasks = tasks(&host, &report.run_id);
    assert_eq!(tasks.len(), 3);
    assert_eq!(tasks[1].status, Status::Cancelled, "the child");
    assert_eq!(tasks[2].status, Status::Cancelled, "the grandchild");
    assert!(
        tasks[2].started_at.is_some(),
        "the grandchild was running when cancelled"
    );
    assert!(
        started.elapsed().as_secs() < 20,
        "promptly, not by the CPU limit"
    );
}
