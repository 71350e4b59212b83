//! Waiting for humans: a wait for an approval or a conflict does not count against the
//! wall-clock limit of the tasks blocked on it (through `tasks.wait`, a dependency)
//! nor hold an execution slot; the host says what it waits for (a notice, `inspect`);
//! `run --detach` stops a run whose every task waits for a human — an approval, a
//! review, a conflict, or a lock held by a task that does — with exit status 3, and
//! `resume` continues it once decided.

use crate::support::cli::*;
use crate::support::*;
use agentflow::supervisor::{DecisionKind, HumanWait};
use agentflow::{RunOptions, Status};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Poll the ledger until it holds a pending approval; panics after 20 s.
async fn pending_approval(host: &agentflow::Host) -> agentflow::ledger::query::ApprovalRow {
    for _ in 0..400 {
        let conn = host.ledger().reader().unwrap();
        if let Some(a) = agentflow::ledger::query::approvals(&conn, false)
            .unwrap()
            .pop()
        {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no approval was asked for within 20 s");
}

/// The root waits for a child that waits for a grandchild needing approval; nobody
/// answers for longer than `wall_ms` (2 s). Neither waiting ancestor times out, the
/// operator is told (a notice with the command), `inspect` shows the grandchild as
/// waiting, and once approved the run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_approval_longer_than_wall_ms_then_approve_completes() {
    let (_dir, mut host) = temp_host(
        "wait-wall",
        "[limits]\nwall_ms = 2000\n[constraints.approval]\ncost_over_usd = 0.5\n",
    );
    let notices: Arc<Mutex<Vec<HumanWait>>> = Arc::default();
    let seen = notices.clone();
    host.set_notices(Arc::new(move |w| seen.lock().unwrap().push(w.clone())));
    let host = Arc::new(host);
    let grandchild = spawn("expensive part", json!(""), json!({"estimated_cost": 0.9}));
    let child = json!([grandchild, {"wait": 3}]);
    let ops = json!([spawn("delegate the work", child, json!({})), {"wait": 2}]);
    let h = host.clone();
    let run = tokio::spawn(async move {
        h.run_file(
            &example("scripted"),
            &ops.to_string(),
            RunOptions::default(),
        )
        .await
        .unwrap()
    });
    let approval = pending_approval(&host).await;
    assert_eq!(approval.task_id, 3);
    let asked = Instant::now();
    // Nobody answers for longer than wall_ms: with the clock running, the root and the
    // child (blocked on the grandchild) would have failed by now.
    while asked.elapsed() < Duration::from_millis(3500) {
        assert!(!run.is_finished(), "the run ended while a human was asked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = inspect_text(&host, &approval.run_id);
    assert!(
        text.contains(&format!(
            "waiting: approval {} (cost over $0.5)",
            approval.id
        )),
        "{text}"
    );
    let waits = notices.lock().unwrap().clone();
    assert_eq!(waits.len(), 1, "{waits:?}");
    assert_eq!(waits[0].kind, DecisionKind::Approval);
    assert_eq!((waits[0].task_id, waits[0].id), (3, approval.id));
    assert_eq!(
        waits[0].commands[0],
        format!("agentflow approve {}", approval.id)
    );
    host.ledger()
        .decide_approval(approval.id, true, None)
        .await
        .unwrap();
    let report = run.await.unwrap();
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let results: Vec<Value> = serde_json::from_str(report.output.as_deref().unwrap()).unwrap();
    let child: Vec<Value> =
        serde_json::from_str(results[1]["completed"].as_str().unwrap()).unwrap();
    assert_eq!(child[1]["completed"], "child:", "{child:?}");
    // The wall-clock records: the root's wait for a human is not counted against it.
    let usage = of_kind(&events(&host, &report.run_id), "task.usage");
    let root = usage.iter().find(|e| e.task_id == 1).unwrap();
    assert!(
        root.response["human_wait_ms"].as_u64().unwrap() >= 3000,
        "{}",
        root.response
    );
    // Decided: nothing waits any more.
    let text = inspect_text(&host, &report.run_id);
    assert!(!text.contains("waiting:"), "{text}");
}

/// One execution slot: a child waiting for approval does not hold it, so its sibling
/// runs (and completes) before anyone decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_waiting_for_approval_holds_no_execution_slot() {
    let (_dir, host) = temp_host(
        "wait-slot",
        "[constraints]\nmax_concurrent_tasks = 1\n[constraints.approval]\ndescription_matches = [\"*gated*\"]\n",
    );
    let host = Arc::new(host);
    let sibling =
        json!([{"tool": {"name": "kv", "args": {"op": "put", "key": "sibling", "value": "ran"}}}]);
    let ops = json!([
        spawn("gated work", json!(""), json!({})),
        spawn("sibling work", sibling, json!({})),
        {"wait": 3},
        {"wait": 2},
    ]);
    let h = host.clone();
    let run = tokio::spawn(async move {
        h.run_file(&example("scripted"), &ops.to_string(), grant(&["kv"]))
            .await
            .unwrap()
    });
    let approval = pending_approval(&host).await;
    assert_eq!(approval.task_id, 2);
    // Decide only once the sibling has completed (or after 20 s, to end the test).
    let mut sibling_done = false;
    for _ in 0..400 {
        let done = tasks(&host, &approval.run_id)
            .iter()
            .any(|t| t.task_id == 3 && t.status == Status::Completed);
        if done {
            sibling_done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let still_pending =
        agentflow::ledger::query::approvals(&host.ledger().reader().unwrap(), false)
            .unwrap()
            .len();
    host.ledger()
        .decide_approval(approval.id, true, None)
        .await
        .unwrap();
    let report = run.await.unwrap();
    assert!(
        sibling_done,
        "the sibling never ran while task 2 waited for approval"
    );
    assert_eq!(still_pending, 1, "the sibling ran before the decision");
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let results: Vec<Value> = serde_json::from_str(report.output.as_deref().unwrap()).unwrap();
    assert_eq!(results[3]["completed"], "child:");
}

/// `run --detach`: the only child waits for approval, the root for it, so the host
/// stops (exit 3, status waiting, the approve command on stderr); `inspect` shows the
/// wait; `approve` then `resume` finishes the run.
#[test]
fn run_detach_stops_waiting_then_approve_and_resume_finish() {
    let dir = TempDir::new("wait-detach");
    let db = dir.ledger("d.db");
    let config = dir.file("c.toml", "[constraints.approval]\ndepth_over = 0\n");
    let ops = json!([spawn("needs a human", json!(""), json!({})), {"wait": 2}]).to_string();
    let config_arg = config.to_str().unwrap();
    let started = Instant::now();
    let out = run_example(
        &db,
        "scripted",
        ["--input", &ops, "--config", config_arg, "--detach"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60));
    let approve = format!("agentflow approve 1 --db {}", db.display());
    assert!(
        err.contains("waits for approval 1 (depth 1 is over 0)"),
        "{err}"
    );
    assert!(err.contains(&approve), "{err}");
    assert!(err.contains("  waiting  "), "the report's status: {err}");
    let run_id = only_run_id(&db);
    assert!(
        err.contains(&format!("agentflow resume {run_id} --db")),
        "{err}"
    );
    let status: String = sql(&db, "SELECT status FROM runs");
    assert_eq!(status, "running", "the run stays unfinished in the ledger");
    let runs = stdout_json(&agentflow_on(&db, ["runs", "--json"]));
    assert_eq!(
        runs[0]["status"], "waiting",
        "its host is gone, a human decision pending: waiting, not interrupted"
    );
    let text = stdout(&agentflow_on(&db, ["inspect", &run_id]));
    assert!(
        text.contains("waiting: approval 1 (depth 1 is over 0)")
            && text.contains(&format!("then `agentflow resume {run_id}`")),
        "{text}"
    );
    let inspected = stdout_json(&agentflow_on(&db, ["inspect", &run_id, "--json"]));
    let child = &inspected["tasks"][1];
    assert_eq!(child["waiting"]["kind"], "approval", "{child}");
    assert_eq!(child["waiting"]["id"], 1, "{child}");
    // Resuming before anyone decided parks it again, with the same decision.
    let again = agentflow_on(&db, ["resume", &run_id, "--detach", "--json"]);
    assert_eq!(again.status.code(), Some(3), "{}", stderr(&again));
    let report = stdout_json(&again);
    assert_eq!(report["status"], "waiting", "{report}");
    assert_eq!(report["waiting"][0]["commands"][0], approve, "{report}");
    let results = approve_1_then_resume(&db, &config);
    assert_eq!(results[0]["ok"], 2);
    assert_eq!(results[1]["completed"], "child:", "{results:?}");
    let spawns: i64 = sql(
        &db,
        "SELECT COUNT(*) FROM events WHERE kind = 'tasks.spawn'",
    );
    assert_eq!(spawns, 1, "the spawn was replayed, not made again");
}

/// `run --detach` while the root's output waits for a human review (`[retry] semantic
/// = "human"`): exit 3 with the retry command; `retry`, then `resume`, completes it
/// with the reviewer's guidance.
#[test]
fn run_detach_on_a_review_then_retry_and_resume_finish() {
    let dir = TempDir::new("wait-detach-review");
    let db = dir.ledger("r.db");
    let config = dir.file(
        "c.toml",
        r#"
[llm.mock]
rules = [{ contains = "guidance from a human reviewer: say revised", reply = "A revised, friendly greeting." }]
[[validators]]
name = "revised"
agents = ["hello"]
kind = "pattern"
must_match = ["*revised*"]
[retry]
max_attempts = 2
semantic = "human"
"#,
    );
    let config_arg = config.to_str().unwrap();
    let out = run_example(
        &db,
        "hello",
        ["--input", "world", "--config", config_arg, "--no-wait"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("task 1 waits for review 1 (revised [semantic]"),
        "{err}"
    );
    let retry = format!(
        "agentflow retry 1 --note \"guidance\" --db {}",
        db.display()
    );
    assert!(err.contains(&retry), "{err}");
    let run_id = only_run_id(&db);
    let text = stdout(&agentflow_on(&db, ["inspect", &run_id]));
    assert!(
        text.contains("waiting: review 1 (revised [semantic])"),
        "{text}"
    );
    let decided = agentflow_on(&db, ["retry", "1", "--note", "say revised"]);
    assert!(decided.status.success(), "{}", stderr(&decided));
    let report = resume_only_run(&db, &config);
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["output"], "A revised, friendly greeting.");
}

/// `run --detach` while a join waits for a human to resolve a critical conflict: exit
/// 3 with the resolve commands; `resolve`, then `resume`, completes it.
#[test]
fn run_detach_on_a_conflict_then_resolve_and_resume_finish() {
    let dir = TempDir::new("wait-detach-conflict");
    let db = dir.ledger("m.db");
    let ws = dir.join("ws");
    std::fs::create_dir_all(ws.join("deploy")).unwrap();
    std::fs::write(ws.join("deploy/prod.toml"), "replicas = 2\n").unwrap();
    let config = dir.file("c.toml", "[merge]\ncritical_paths = [\"deploy/*\"]\n");
    let write = json!([{"tool": {"name": "workspace", "args": {"op": "write", "path": "deploy/prod.toml", "content": "replicas = 20\n"}}}]);
    let ops = json!([
        spawn("scale production up", write, json!({})),
        {"wait": 2},
        {"tool": {"name": "workspace", "args": {"op": "read", "path": "deploy/prod.toml"}}},
    ])
    .to_string();
    let out = run_example(
        &db,
        "scripted",
        [
            "--input",
            &ops,
            "--config",
            config.to_str().unwrap(),
            "--grant",
            "workspace",
            "--workspace",
            ws.to_str().unwrap(),
            "--detach",
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("task 1 waits for conflict 1 (critical: deploy/prod.toml)"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "agentflow resolve 1 --take 2 --db {}",
            db.display()
        )),
        "{err}"
    );
    let run_id = only_run_id(&db);
    let text = stdout(&agentflow_on(&db, ["inspect", &run_id]));
    assert!(
        text.contains("waiting: conflict 1 (critical: deploy/prod.toml)"),
        "{text}"
    );
    let resolved = agentflow_on(&db, ["resolve", "1", "--take", "2"]);
    assert!(resolved.status.success(), "{}", stderr(&resolved));
    let report = resume_only_run(&db, &config);
    assert_eq!(report["status"], "completed", "{report}");
    let results: Vec<Value> = serde_json::from_str(report["output"].as_str().unwrap()).unwrap();
    assert_eq!(results[2]["ok"], "replicas = 20\n", "{results:?}");
}

/// A child still waiting for approval when its run ends is cancelled with it: its
/// approval is no longer pending (not listed, and `approve` says there is nothing to
/// approve) instead of being "approved" for a task that will never run.
#[test]
fn an_approval_whose_task_ended_is_not_pending() {
    let dir = TempDir::new("wait-moot");
    let db = dir.ledger("m.db");
    let config = dir.file("c.toml", "[constraints.approval]\ndepth_over = 0\n");
    let ops = json!([spawn("needs a human", json!(""), json!({}))]).to_string();
    let out = run_example(
        &db,
        "scripted",
        ["--input", &ops, "--config", config.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let status: String = sql(&db, "SELECT status FROM tasks WHERE task_id = 2");
    assert_eq!(status, "cancelled");
    let listed = stdout_json(&agentflow_on(&db, ["approvals", "--json"]));
    assert_eq!(listed, json!([]), "{listed}");
    let all = stdout_json(&agentflow_on(&db, ["approvals", "--all", "--json"]));
    assert_eq!(all[0]["status"], "pending", "{all}");
    let approve = agentflow_on(&db, ["approve", "1"]);
    assert_eq!(approve.status.code(), Some(2), "{}", stdout(&approve));
    assert!(stderr(&approve).contains("no pending approval 1"));
}

/// `agentflow run <scripted> ARGS --db DB`, which must exit within 60 s (a host that
/// fails to see its run parked would wait for the human forever).
fn run_scripted_within_60s(db: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut child = agentflow()
        .arg("run")
        .arg(example("scripted"))
        .args(args)
        .arg("--db")
        .arg(db)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("the host did not stop within 60 s: {}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The root waits for a child whose dependency waits for approval: blocked through the
/// dependency, neither the root's clock nor the dependent's runs (`wall_ms` 2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_through_a_dependency_on_a_task_awaiting_approval_does_not_time_out() {
    let (_dir, host) = temp_host(
        "wait-dep",
        "[limits]\nwall_ms = 2000\n[constraints.approval]\ndescription_matches = [\"*gated*\"]\n",
    );
    let host = Arc::new(host);
    let ops = json!([
        spawn("gated work", json!(""), json!({})),
        spawn("then the rest", json!(""), json!({"after": [2]})),
        {"wait": 3},
    ]);
    let h = host.clone();
    let run = tokio::spawn(async move {
        h.run_file(
            &example("scripted"),
            &ops.to_string(),
            RunOptions::default(),
        )
        .await
        .unwrap()
    });
    let approval = pending_approval(&host).await;
    let asked = Instant::now();
    while asked.elapsed() < Duration::from_millis(3500) {
        assert!(!run.is_finished(), "the run ended while a human was asked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    host.ledger()
        .decide_approval(approval.id, true, None)
        .await
        .unwrap();
    let report = run.await.unwrap();
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let results: Vec<Value> = serde_json::from_str(report.output.as_deref().unwrap()).unwrap();
    assert_eq!(results[2]["completed"], "child:", "{results:?}");
}

/// `--detach` stops only when *every* task waits for a human: a sibling still working
/// (1.5 s of sleep) finishes first, and is recorded completed, not cut off.
#[test]
fn run_detach_waits_for_the_tasks_still_working() {
    let dir = TempDir::new("wait-detach-sibling");
    let db = dir.ledger("s.db");
    let config = dir.file(
        "c.toml",
        "[constraints.approval]\ndescription_matches = [\"*gated*\"]\n",
    );
    let ops = json!([
        spawn("gated work", json!(""), json!({})),
        spawn("slow sibling", json!([{"sleep_ms": 1500}]), json!({})),
        {"wait": 3},
        {"wait": 2},
    ])
    .to_string();
    let config_arg = config.to_str().unwrap();
    let out = run_scripted_within_60s(&db, &["--input", &ops, "--config", config_arg, "--detach"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let sibling: String = sql(&db, "SELECT status FROM tasks WHERE task_id = 3");
    assert_eq!(sibling, "completed");
    let waits: i64 = sql(
        &db,
        "SELECT COUNT(*) FROM events WHERE task_id = 1 AND kind = 'tasks.wait'",
    );
    assert_eq!(waits, 1, "the root's wait for the sibling is recorded");
    let results = approve_1_then_resume(&db, &config);
    assert!(results[2]["completed"].is_string(), "{results:?}");
    assert_eq!(results[3]["completed"], "child:", "{results:?}");
}

/// A task waiting for a human review holds its shared resource; a sibling queued for
/// that resource is blocked on it, and so is the root waiting for the sibling: the run
/// is parked (`--detach` stops). Rejecting the output and resuming finishes the run.
#[test]
fn run_detach_sees_a_task_queued_behind_a_lock_held_by_a_waiting_task() {
    let dir = TempDir::new("wait-detach-lock");
    let db = dir.ledger("l.db");
    let config = dir.file(
        "c.toml",
        "[retry]\nmax_attempts = 2\nsemantic = \"human\"\n",
    );
    let never = json!({"name": "says-never", "kind": "pattern", "must_match": ["*never*"]});
    let signal =
        json!([{"tool": {"name": "kv", "args": {"op": "put", "key": "holder", "value": "in"}}}]);
    let ops = json!([
        spawn("checked holder", signal, json!({"resources": ["db"], "validators": [never]})),
        // The holder runs (so holds the resource) before its sibling is spawned.
        {"wait_kv": {"key": "holder", "timeout_ms": 30000}},
        spawn("queued behind it", json!(""), json!({"resources": ["db"]})),
        {"wait": 3},
        {"wait": 2},
    ])
    .to_string();
    let config_arg = config.to_str().unwrap();
    let out = run_scripted_within_60s(
        &db,
        &[
            "--input", &ops, "--config", config_arg, "--grant", "kv", "--detach",
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("task 2 waits for review 1"), "{err}");
    let queued: String = sql(&db, "SELECT status FROM tasks WHERE task_id = 3");
    assert_eq!(queued, "pending", "still queued for the resource");
    let rejected = agentflow_on(&db, ["reject", "1", "--note", "no"]);
    assert!(rejected.status.success(), "{}", stderr(&rejected));
    let report = resume_only_run(&db, &config);
    assert_eq!(report["status"], "completed", "{report}");
    let results: Vec<Value> = serde_json::from_str(report["output"].as_str().unwrap()).unwrap();
    assert_eq!(results[3]["completed"], "child:", "{results:?}");
    assert!(
        results[4]["failed"]
            .as_str()
            .unwrap()
            .contains("rejected by a human (review 1): no"),
        "{results:?}"
    );
}

/// The root's own join waits for a human to resolve a critical conflict — inside its
/// `tasks.wait`, so inside its timed call — for longer than `wall_ms` (2 s): its clock
/// stops meanwhile, and once resolved the run completes with the chosen version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_waiting_for_a_conflict_longer_than_wall_ms_then_resolve_completes() {
    let dir = TempDir::new("wait-conflict-wall");
    std::fs::create_dir_all(dir.join("ws/deploy")).unwrap();
    std::fs::write(dir.join("ws/deploy/prod.toml"), "replicas = 2\n").unwrap();
    let host = Arc::new(host(
        &dir,
        "[limits]\nwall_ms = 2000\n[merge]\ncritical_paths = [\"deploy/*\"]\n",
    ));
    let write = json!([{"tool": {"name": "workspace", "args": {"op": "write", "path": "deploy/prod.toml", "content": "replicas = 20\n"}}}]);
    let ops = json!([
        spawn("scale production up", write, json!({})),
        {"wait": 2},
        {"tool": {"name": "workspace", "args": {"op": "read", "path": "deploy/prod.toml"}}},
    ]);
    let options = RunOptions {
        workspace: Some(dir.join("ws")),
        ..grant(&["workspace"])
    };
    let h = host.clone();
    let run = tokio::spawn(async move {
        h.run_file(&example("scripted"), &ops.to_string(), options)
            .await
            .unwrap()
    });
    let mut pending = Vec::new();
    for _ in 0..400 {
        let conn = host.ledger().reader().unwrap();
        pending = agentflow::merge::resolve::conflicts(&conn, false).unwrap();
        if !pending.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pending.len(), 1, "no conflict went to a human");
    let asked = Instant::now();
    while asked.elapsed() < Duration::from_millis(3500) {
        assert!(!run.is_finished(), "the run ended while a human was asked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = inspect_text(&host, &pending[0].run_id);
    assert!(
        text.contains(&format!(
            "waiting: conflict {} (critical: deploy/prod.toml)",
            pending[0].id
        )),
        "{text}"
    );
    let (ledger, id) = (host.ledger().clone(), pending[0].id);
    tokio::task::spawn_blocking(move || {
        agentflow::merge::resolve::resolve(
            &ledger,
            id,
            agentflow::merge::resolve::Decision::Take(2),
            None,
        )
    })
    .await
    .unwrap()
    .unwrap();
    let report = run.await.unwrap();
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let results: Vec<Value> = serde_json::from_str(report.output.as_deref().unwrap()).unwrap();
    assert_eq!(results[2]["ok"], "replicas = 20\n", "{results:?}");
}

/// `agentflow approve 1` on a run whose host stopped (it says to resume), then
/// `agentflow resume`: the run completes; the scripted agent's per-op results.
fn approve_1_then_resume(db: &std::path::Path, config: &std::path::Path) -> Vec<Value> {
    let approved = agentflow_on(db, ["approve", "1"]);
    assert!(approved.status.success(), "{}", stderr(&approved));
    assert!(
        stderr(&approved).contains(&format!(
            "continue it with `agentflow resume {}",
            only_run_id(db)
        )),
        "{}",
        stderr(&approved)
    );
    let report = resume_only_run(db, config);
    assert_eq!(report["status"], "completed", "{report}");
    serde_json::from_str(report["output"].as_str().unwrap()).unwrap()
}
