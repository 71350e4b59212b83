//! Durable runs: kill the host at every ledger event of a multi-agent run (fault
//! injection) and with a real SIGKILL, resume, and check that every side effect
//! happened exactly once and the outcome is the uncrashed one; divergence and its
//! policies; in-doubt side effects by class; checkpoints.

use crate::support::cli::*;
use crate::support::fake_http::{FakeResponse, FakeServer};
use crate::support::llm::openai_ok;
use crate::support::*;
use agentflow::tools::{SideEffect, Tool, ToolCallCtx, ToolError, ToolInfo};
use agentflow::{ResumeOptions, Status};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The deployer's input: three cloud resources (also the PostgreSQL and cluster tests').
pub(crate) const DEPLOY: &str = r#"{"app": "shop", "resources": 3}"#;

/// `agentflow run <deployer> --input DEPLOY --grant cloud --json --workspace WS --db DB
/// EXTRA…` with `env`, run to completion.
pub(crate) fn deploy(db: &Path, ws: &Path, env: &[(&str, String)], extra: &[&str]) -> Output {
    let mut cmd = agentflow();
    cmd.arg("run")
        .arg(example("deployer"))
        .args([
            "--input",
            DEPLOY,
            "--grant",
            "cloud",
            "--json",
            "--workspace",
        ])
        .arg(ws)
        .arg("--db")
        .arg(db)
        .args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Tool intents at `db` with no recorded result: calls a crash left in doubt.
fn in_doubt_intents(db: &Path) -> usize {
    sql::<i64>(
        db,
        "SELECT COUNT(*) FROM events i WHERE i.kind = 'tools.intent' AND NOT EXISTS (
             SELECT 1 FROM events c WHERE c.run_id = i.run_id AND c.task_id = i.task_id
               AND c.kind = 'tools.call' AND c.seq > i.seq)",
    ) as usize
}

/// LLM calls recorded in the ledger at `db`.
fn llm_calls(db: &Path) -> usize {
    sql::<i64>(
        db,
        "SELECT COUNT(*) FROM events WHERE kind = 'llm.complete'",
    ) as usize
}

/// Checks of one crashed-and-resumed run; returns (duplicates, losses) of side effects.
///
/// Effects are counted where they happen: `cloud.calls` has one line per real
/// invocation of the cloud API (the tool itself skips a repeated idempotency key in
/// `cloud.log`, which would hide a host that re-ran recorded calls). Each resource
/// needs one invocation; an extra one is allowed only for a call the crash left in
/// doubt (`in_doubt`: intents without a result when the host died) — any other is a
/// duplicated side effect. A resource missing from `cloud.log` is a lost one. After a
/// crash at the `tool-effect` point (the tool acted, its result not recorded) the
/// in-doubt call must have been re-invoked and seen as a repeat by the cloud.
fn check_run(
    db: &Path,
    ws: &Path,
    baseline: &Value,
    label: &str,
    in_doubt: usize,
) -> (usize, usize) {
    let calls = std::fs::read_to_string(ws.join("cloud.calls")).unwrap_or_default();
    let log = std::fs::read_to_string(ws.join("cloud.log")).unwrap_or_default();
    let mut invocations = 0;
    let mut losses = 0;
    for i in 1..=3 {
        let create = format!("create shop-node-{i} ");
        invocations += calls.lines().filter(|l| l.starts_with(&create)).count();
        losses += usize::from(!log.lines().any(|l| l.starts_with(&create)));
    }
    let duplicates = invocations.saturating_sub(3).saturating_sub(in_doubt);
    if label.starts_with("at tool-effect") {
        assert!(
            calls.lines().any(|l| l.ends_with("repeated=true")),
            "{label}: the call that acted before the crash was re-invoked as a repeat"
        );
    }
    let conn = crate::support::connect(db);
    let run_id = only_run_id(db);
    let (status, output): (String, Option<String>) = conn
        .query_row(
            "SELECT status, output FROM runs WHERE run_id = ?1",
            [&run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(status, "completed", "{label}");
    assert_eq!(
        output.as_deref(),
        baseline["output"].as_str(),
        "{label}: same outcome as the uncrashed run"
    );
    let count = |kind: &str, task: i64| -> i64 {
        conn.query_row(
            "SELECT COUNT(*) FROM events WHERE run_id = ?1 AND kind = ?2 AND task_id = ?3",
            rusqlite::params![run_id, kind, task],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(
        count("tasks.spawn", 1),
        3,
        "{label}: no spawn lost or repeated"
    );
    assert_eq!(count("llm.complete", 1), 2, "{label}: root LLM calls");
    for child in 2..=4 {
        assert_eq!(
            count("tools.call", child),
            1,
            "{label}: child {child} tool result once"
        );
        assert_eq!(
            count("tools.intent", child),
            1,
            "{label}: child {child} intent once"
        );
        assert_eq!(
            count("llm.complete", child),
            1,
            "{label}: child {child} LLM call once"
        );
    }
    let tasks: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM tasks WHERE run_id = ?1 AND status = 'completed'",
            [&run_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tasks, 4, "{label}: every task completed once");
    (duplicates, losses)
}

#[test]
fn crash_at_every_ledger_event_of_a_multi_agent_run_then_resume() {
    // The LLM is a real HTTP provider (a local fake server), so the requests the host
    // sends are counted where they arrive.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(FakeServer::start(vec![openai_reply("resource ready")]));
    let config_dir = TempDir::new("crash-config");
    let config = config_dir.file("llm.toml", one_endpoint(&server));
    let config_args = ["--config", config.to_str().unwrap()];
    let base_dir = TempDir::new("crash-baseline");
    let baseline = deploy(
        &base_dir.ledger("b.db"),
        &base_dir.join("ws"),
        &[],
        &config_args,
    );
    assert!(baseline.status.success());
    let baseline_requests = server.requests().len();
    let baseline = stdout_json(&baseline);
    let total: u64 = sql(&base_dir.ledger("b.db"), "SELECT COUNT(*) FROM events");
    assert!(total >= 30, "a multi-agent run with many events ({total})");

    let mut points: Vec<(String, String, String)> = (1..=total)
        .map(|k| {
            (
                format!("after event {k}"),
                "AGENTFLOW_CRASH_AFTER_EVENTS".to_string(),
                k.to_string(),
            )
        })
        .collect();
    // Named points, each at hits 1..=count. The last two are the ledger's own: a
    // buffered write (an LLM reply, a trace step, a clock read) that ran in the
    // writer's open transaction but is not yet committed, and the barrier — a durable
    // write (a tool intent, a spawn, a task's end) arriving while buffered writes are
    // still uncommitted. A crash there loses the buffered writes: the LLM calls are
    // asked again on resume (counted above), and no effect is lost or repeated.
    for (point, count) in [
        ("tool-effect", 3),
        ("spawn-created", 3),
        ("root-finished", 1),
        ("buffered-unflushed", 12),
        ("barrier", 3),
    ] {
        for k in 1..=count {
            points.push((
                format!("at {point} #{k}"),
                "AGENTFLOW_CRASH_AT".into(),
                format!("{point}:{k}"),
            ));
        }
    }
    let (mut kills, mut duplicates, mut losses) = (0, 0, 0);
    for (label, var, value) in &points {
        let dir = TempDir::new("crash");
        let (db, ws) = (dir.ledger("c.db"), dir.join("ws"));
        let env: Vec<(&str, String)> = match value.split_once(':') {
            Some((point, k)) => vec![
                (var.as_str(), point.to_string()),
                ("AGENTFLOW_CRASH_AT_COUNT", k.to_string()),
            ],
            None => vec![(var.as_str(), value.clone())],
        };
        let crashed = deploy(&db, &ws, &env, &config_args);
        assert!(!crashed.status.success(), "{label}: the host was killed");
        let marker = match value.split_once(':') {
            Some((point, k)) => format!("aborting at point `{point}` (hit {k})"),
            None => format!("(AGENTFLOW_CRASH_AFTER_EVENTS={value})"),
        };
        let err = stderr(&crashed);
        assert!(
            err.contains(&marker),
            "{label}: the crash happened at its point: {err}"
        );
        kills += 1;
        let in_doubt = in_doubt_intents(&db);
        let recorded_llm = llm_calls(&db);
        let before_resume = server.settled_request_count(std::time::Duration::from_millis(100));
        let resumed = agentflow_on(
            &db,
            ["resume", &only_run_id(&db), "--json"]
                .iter()
                .chain(&config_args),
        );
        assert_eq!(
            server.requests().len() - before_resume,
            baseline_requests - recorded_llm,
            "{label}: the resume sent exactly the LLM calls not yet recorded"
        );
        assert!(resumed.status.success(), "{label}: {}", stderr(&resumed));
        assert_eq!(
            stdout_json(&resumed)["output"],
            baseline["output"],
            "{label}"
        );
        let (d, l) = check_run(&db, &ws, &baseline, label, in_doubt);
        duplicates += d;
        losses += l;
    }
    println!(
        "crash test: {} crash points ({total} event positions + {} named points), {kills} kills, {duplicates} duplicated side effects, {losses} lost",
        points.len(),
        points.len() as u64 - total
    );
    assert_eq!((duplicates, losses), (0, 0));
}

/// `[ledger] sync = "normal"` (no fsync on commit) keeps the guarantee for a crash of
/// the host process: killed at the ledger's own points and mid-effect, every resumed
/// run completes with each side effect exactly once.
#[test]
fn sync_normal_survives_process_crashes_at_the_barrier_and_mid_effect() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(FakeServer::start(vec![openai_reply("resource ready")]));
    let config_dir = TempDir::new("sync-normal-config");
    let toml = format!("{}\n[ledger]\nsync = \"normal\"\n", one_endpoint(&server));
    let config = config_dir.file("llm.toml", toml);
    let config_args = ["--config", config.to_str().unwrap()];
    let base_dir = TempDir::new("sync-normal-baseline");
    let baseline = deploy(
        &base_dir.ledger("b.db"),
        &base_dir.join("ws"),
        &[],
        &config_args,
    );
    assert!(baseline.status.success(), "{}", stderr(&baseline));
    let baseline = stdout_json(&baseline);
    for (point, k) in [
        ("barrier", 1),
        ("buffered-unflushed", 4),
        ("tool-effect", 2),
        ("root-finished", 1),
    ] {
        let label = format!("sync=normal, at {point} #{k}");
        let dir = TempDir::new("sync-normal");
        let (db, ws) = (dir.ledger("c.db"), dir.join("ws"));
        let env = [
            ("AGENTFLOW_CRASH_AT", point.to_string()),
            ("AGENTFLOW_CRASH_AT_COUNT", k.to_string()),
        ];
        let crashed = deploy(&db, &ws, &env, &config_args);
        assert!(!crashed.status.success(), "{label}: the host was killed");
        assert!(
            stderr(&crashed).contains(&format!("aborting at point `{point}` (hit {k})")),
            "{label}: {}",
            stderr(&crashed)
        );
        let in_doubt = in_doubt_intents(&db);
        let resumed = agentflow_on(
            &db,
            ["resume", &only_run_id(&db), "--json"]
                .iter()
                .chain(&config_args),
        );
        assert!(resumed.status.success(), "{label}: {}", stderr(&resumed));
        assert_eq!(
            stdout_json(&resumed)["output"],
            baseline["output"],
            "{label}"
        );
        assert_eq!(check_run(&db, &ws, &baseline, &label, in_doubt), (0, 0));
    }
}

#[test]
fn sigkill_a_running_host_then_resume() {
    let dir = TempDir::new("sigkill");
    let config = dir.file("slow.toml", "[llm.mock]\nlatency_ms = 150\n");
    let base = TempDir::new("sigkill-base");
    let baseline = stdout_json(&deploy(
        &base.ledger("b.db"),
        &base.join("ws"),
        &[],
        &["--config", config.to_str().unwrap()],
    ));
    let (db, ws) = (dir.ledger("k.db"), dir.join("ws"));
    let mut child = spawn_example(
        &db,
        "deployer",
        [
            "--input",
            DEPLOY,
            "--grant",
            "cloud",
            "--workspace",
            ws.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    // Wait until the children are provisioning, then SIGKILL.
    let started = std::time::Instant::now();
    loop {
        let events: i64 = Ok::<_, rusqlite::Error>(crate::support::connect(&db))
            .and_then(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM events WHERE kind = 'tools.intent'",
                    [],
                    |r| r.get(0),
                )
            })
            .unwrap_or(0);
        if events >= 1 || started.elapsed().as_secs() > 20 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL on unix
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed mid-run");
    let in_doubt = in_doubt_intents(&db);
    let resumed = resume_only_run(&db, &config);
    assert_eq!(resumed["output"], baseline["output"]);
    assert_eq!(check_run(&db, &ws, &baseline, "sigkill", in_doubt), (0, 0));
}

/// A `scripted` run of two LLM calls killed after its 4th ledger event; its run id.
fn crashed_two_call_run(db: &Path) -> String {
    let ops = json!([{"llm": {"prompt": "first"}}, {"llm": {"prompt": "second"}}]).to_string();
    let crashed = agentflow()
        .arg("run")
        .arg(example("scripted"))
        .args(["--input", &ops, "--db"])
        .arg(db)
        .env("AGENTFLOW_CRASH_AFTER_EVENTS", "4")
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    only_run_id(db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_component_is_refused_or_diverges() {
    let dir = TempDir::new("diverge");
    let db = dir.ledger("d.db");
    let run_id = crashed_two_call_run(&db);
    let host = host_at(&db).unwrap();
    let changed = ResumeOptions {
        allow_changed: false,
        agent_file: Some(example("hello")),
        ..Default::default()
    };
    let err = host
        .resume(&run_id, changed)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("different context") && err.contains("--allow-changed"),
        "{err}"
    );
    let forced = ResumeOptions {
        allow_changed: true,
        agent_file: Some(example("hello")),
        ..Default::default()
    };
    let report = host.resume(&run_id, forced).await.unwrap();
    assert_eq!(report.status, Status::Failed);
    let error = report.error.unwrap();
    assert!(
        error.contains("non-determinism: the guest called llm.complete")
            && error.contains("but the ledger recorded llm.complete"),
        "{error}"
    );
    let events = events(&host, &run_id);
    assert!(events.iter().any(|e| e.kind == "replay.diverged"));
    assert!(
        host.resume(&run_id, ResumeOptions::default())
            .await
            .err()
            .unwrap()
            .to_string()
            .contains("only runs that did not finish")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_checkpoint_policy_restarts_the_guest_from_its_last_checkpoint() {
    let dir = TempDir::new("from-checkpoint");
    let db = dir.ledger("f.db");
    let ops = json!([
        {"load": null},
        {"save": {"state": {"done": "planning"}, "note": "planned"}},
        {"llm": {"prompt": "a"}},
        {"llm": {"prompt": "b"}},
    ])
    .to_string();
    let crashed = agentflow()
        .arg("run")
        .arg(example("scripted"))
        .args([
            "--input",
            &ops,
            "--on-divergence",
            "from-checkpoint",
            "--db",
        ])
        .arg(&db)
        .env("AGENTFLOW_CRASH_AFTER_EVENTS", "6")
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    let run_id = only_run_id(&db);
    // Make the recorded `llm a` differ from what the guest will ask: a divergence.
    sql_batch(
        &db,
        "UPDATE events SET request_hash = 'tampered' WHERE kind = 'llm.complete'",
    );
    let host = host_at(&db).unwrap();
    let report = host
        .resume(&run_id, ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let results: Vec<Value> = serde_json::from_str(report.output.as_deref().unwrap()).unwrap();
    assert_eq!(
        results[0],
        json!({"done": "planning"}),
        "the restarted guest loads its checkpoint"
    );
    let diverged = first_event(&host, &run_id, "replay.diverged");
    assert_eq!(diverged.response["policy"], "from-checkpoint");
    assert_eq!(
        diverged.response["restart_from_checkpoint"]["note"],
        "planned"
    );
}

/// A tool of a given side-effect class that counts how often it really ran.
struct Counting {
    class: SideEffect,
    runs: Arc<AtomicU64>,
    keys: Arc<std::sync::Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl Tool for Counting {
    fn info(&self) -> ToolInfo {
        ToolInfo {
            name: "counter".into(),
            description: "counts".into(),
            args_schema: json!({}),
            side_effect: self.class,
            undo: (self.class == SideEffect::Compensable).then(|| "undo".to_string()),
        }
    }
    async fn call(&self, ctx: &ToolCallCtx, args: Value) -> Result<String, ToolError> {
        if args["op"] == "undo" {
            self.keys
                .lock()
                .unwrap()
                .push(format!("undo {}", ctx.idempotency_key));
            return Ok("undone".into());
        }
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.keys.lock().unwrap().push(ctx.idempotency_key.clone());
        ctx.emit(agentflow::tools::Effect::APICall {
            endpoint: "counter".into(),
            method: "POST".into(),
            status: 200,
        });
        Ok("counted".into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_doubt_side_effects_are_handled_by_class() {
    for (class, rerun) in [
        (SideEffect::None, true),
        (SideEffect::Idempotent, true),
        (SideEffect::Compensable, false),
        (SideEffect::Irreversible, false),
    ] {
        let (dir, mut host) = temp_host("in-doubt", "");
        let runs = Arc::new(AtomicU64::new(0));
        let keys = Arc::new(std::sync::Mutex::new(Vec::new()));
        host.register_tool(Arc::new(Counting {
            class,
            runs: runs.clone(),
            keys: keys.clone(),
        }));
        let (report, _) = run_scripted(
            &host,
            json!([{"tool": {"name": "counter", "args": {}}}, {"log": "after"}]),
            grant(&["counter"]),
        )
        .await;
        assert_eq!(report.status, Status::Completed);
        // Recreate the state of a crash after the tool acted but before its result was
        // recorded: drop the result and everything after it, mark the run unfinished.
        let conn = crate::support::connect(dir.ledger("ledger.db"));
        let result_seq: i64 = conn
            .query_row(
                "SELECT seq FROM events WHERE kind = 'tools.call'",
                [],
                |r| r.get(0),
            )
            .unwrap_or_else(|_| panic!("{class:?}: a result"));
        let intents: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM events WHERE kind = 'tools.intent'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if class == SideEffect::None {
            assert_eq!(intents, 0, "read-only calls need no intent");
            conn.execute("DELETE FROM events WHERE seq >= ?1", [result_seq])
                .unwrap();
        } else {
            assert_eq!(intents, 1, "{class:?}: an intent before the call");
            conn.execute("DELETE FROM events WHERE seq >= ?1", [result_seq])
                .unwrap();
        }
        conn.execute("UPDATE runs SET status = 'running', output = NULL", [])
            .unwrap();
        conn.execute("UPDATE tasks SET status = 'running', output = NULL", [])
            .unwrap();
        drop(conn);
        let resumed = host
            .resume(&report.run_id, ResumeOptions::default())
            .await
            .unwrap();
        if rerun {
            assert_eq!(resumed.status, Status::Completed, "{class:?}: {resumed:?}");
            assert_eq!(runs.load(Ordering::SeqCst), 2, "{class:?}: run again");
            let keys = keys.lock().unwrap();
            assert_eq!(keys[0], keys[1], "{class:?}: with the same idempotency key");
        } else {
            assert_eq!(resumed.status, Status::Failed, "{class:?}");
            let error = resumed.error.unwrap();
            assert!(
                error.contains("in doubt") && error.contains("agentflow recover"),
                "{class:?}: {error}"
            );
            assert_eq!(
                runs.load(Ordering::SeqCst),
                1,
                "{class:?}: never silently re-run"
            );
            // The recovery plan: roll back a compensable call, call a human for an irreversible one.
            let (plan, _, _) = host.recover(&report.run_id, false).await.unwrap();
            let text = agentflow::durability::recovery::render(&plan);
            if class == SideEffect::Compensable {
                assert!(
                    text.contains("Rollback")
                        && text.contains("counter → undo")
                        && text.contains("(in doubt)"),
                    "{text}"
                );
                let (_, compensations, _) = host.recover(&report.run_id, true).await.unwrap();
                assert_eq!(compensations, 1);
                assert!(
                    keys.lock().unwrap().iter().any(|k| k.starts_with("undo ")),
                    "the compensation ran"
                );
                let ev = events(&host, &report.run_id);
                assert!(ev.iter().any(|e| e.kind == "recovery.compensate" && e.ok));
                let (again, _, _) = host.recover(&report.run_id, false).await.unwrap();
                assert!(
                    !agentflow::durability::recovery::render(&again).contains("Rollback"),
                    "applied once"
                );
            } else {
                assert!(
                    text.contains("RequiresHuman") && text.contains("irreversible tool `counter`"),
                    "{text}"
                );
                // The in-doubt call is the root's: nothing waits for it or depends on it.
                assert_eq!(plan.tasks[0].task_id, 1);
                assert!(plan.tasks[0].downstream.is_empty(), "{plan:?}");
                assert!(!text.contains("downstream affected"), "{text}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_with_compensable_effects_rolls_back_in_reverse_order() {
    let (_dir, mut host) = temp_host("rollback", "");
    let runs = Arc::new(AtomicU64::new(0));
    let keys = Arc::new(std::sync::Mutex::new(Vec::new()));
    host.register_tool(Arc::new(Counting {
        class: SideEffect::Compensable,
        runs: runs.clone(),
        keys: keys.clone(),
    }));
    let ops = json!([
        {"tool": {"name": "counter", "args": {"n": 1}}},
        {"tool": {"name": "counter", "args": {"n": 2}}},
        {"fail": "half-way"}
    ]);
    let (report, _) = run_scripted(&host, ops, grant(&["counter"])).await;
    assert_eq!(report.status, Status::Failed);
    let (plan, compensations, resumed) = host.recover(&report.run_id, true).await.unwrap();
    let agentflow::durability::recovery::Action::Rollback { side_effects, .. } =
        &plan.tasks[0].action
    else {
        panic!("{plan:?}")
    };
    assert_eq!(side_effects.len(), 2);
    assert!(side_effects[0].seq > side_effects[1].seq, "newest first");
    assert_eq!(compensations, 2);
    assert!(resumed.is_none(), "a failed run is not resumed");
    let undo: Vec<String> = keys
        .lock()
        .unwrap()
        .iter()
        .filter(|k| k.starts_with("undo"))
        .cloned()
        .collect();
    assert_eq!(undo.len(), 2);
    assert!(
        undo[0] > undo[1],
        "the later effect is undone first: {undo:?}"
    );
}

#[test]
fn checkpoints_carry_host_state_and_are_listed() {
    let dir = TempDir::new("checkpoints");
    let db = dir.ledger("c.db");
    let out = deploy(&db, &dir.join("ws"), &[], &[]);
    assert!(out.status.success());
    let run_id = only_run_id(&db);
    let list = stdout_json(&agentflow_on(&db, ["checkpoints", &run_id, "--json"]));
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["note"], "planned 3 resources");
    assert_eq!(list[1]["note"], "all resources built; summarising");
    assert_eq!(list[1]["host_state"]["children_done"], json!([2, 3, 4]));
    assert!(list[1]["host_state"]["step"].as_u64().unwrap() >= 4);
    assert!(
        list[1]["host_state"]["context_hash"]
            .as_str()
            .unwrap()
            .len()
            == 64
    );
    let text = stdout(&agentflow_on(&db, ["checkpoints", &run_id]));
    assert!(text.contains("planned 3 resources"));
}

#[test]
fn fork_with_another_model_and_diff() {
    let dir = TempDir::new("fork");
    let db = dir.ledger("f.db");
    let config = dir.file(
        "c.toml",
        "[[llm.mock.rules]]\nmodel = \"mock-large\"\nreply = \"LARGE says: {input}\"\n",
    );
    let ops = json!([
        {"llm": {"prompt": "first"}},
        {"step": {"thought": "t", "action": "a", "observation": "o", "confidence": 0.5}},
        {"llm": {"prompt": "second"}},
    ])
    .to_string();
    let run = |args: &[&str]| {
        let out = agentflow()
            .args(args)
            .arg("--db")
            .arg(&db)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout_json(&out)
    };
    let original = run(&[
        "run",
        example("scripted").to_str().unwrap(),
        "--input",
        &ops,
        "--json",
    ]);
    let a = original["run_id"].as_str().unwrap().to_string();
    // The root's trace.step is seq 4: replay up to it, then the second call goes live.
    let conn = crate::support::connect(&db);
    let at: i64 = conn
        .query_row(
            "SELECT seq FROM events WHERE run_id = ?1 AND task_id = 1 AND kind = 'trace.step'",
            [&a],
            |r| r.get(0),
        )
        .unwrap();
    let forked = run(&[
        "fork",
        &a,
        "--at",
        &at.to_string(),
        "--model",
        "mock-large",
        "--json",
    ]);
    let b = forked["run_id"].as_str().unwrap().to_string();
    let results: Vec<Value> = serde_json::from_str(forked["output"].as_str().unwrap()).unwrap();
    let before: Vec<Value> = serde_json::from_str(original["output"].as_str().unwrap()).unwrap();
    assert_eq!(results[0], before[0], "the prefix is replayed, not re-sent");
    assert_eq!(results[2]["ok"]["model"], "mock-large");
    assert_eq!(results[2]["ok"]["text"], "LARGE says: second");
    let (forked_from, fork_seq): (String, i64) = conn
        .query_row(
            "SELECT forked_from, fork_seq FROM runs WHERE run_id = ?1",
            [&b],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((forked_from.as_str(), fork_seq), (a.as_str(), at));
    // The fork's cost tells the copied prefix (the first call, spent by the original)
    // from what it spent itself (the second call, on the larger model).
    let first_call: f64 = conn
        .query_row(
            "SELECT cost_usd FROM events WHERE run_id = ?1 AND task_id = 1 AND kind = 'llm.complete' ORDER BY seq LIMIT 1",
            [&a],
            |r| r.get(0),
        )
        .unwrap();
    let (copied, new, total) = (
        forked["copied_cost_usd"].as_f64().unwrap(),
        forked["new_cost_usd"].as_f64().unwrap(),
        forked["cost_usd"].as_f64().unwrap(),
    );
    assert!(first_call > 0.0);
    assert!(
        (copied - first_call).abs() < 1e-12,
        "copied {copied} = {first_call}"
    );
    assert!(new > 0.0 && (copied + new - total).abs() < 1e-9, "{forked}");
    assert_eq!(original["copied_cost_usd"], 0.0);

    let diff = stdout_json(&agentflow_on(&db, ["diff", &a, &b, "--json"]));
    assert_eq!(diff["first_divergence"]["task_id"], 1);
    // Named by event seq, as `agentflow events` lists it and `fork --at` takes it.
    let second_call: i64 = conn
        .query_row(
            "SELECT MAX(seq) FROM events WHERE run_id = ?1 AND task_id = 1 AND kind = 'llm.complete'",
            [&a],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(diff["first_divergence"]["seq"], second_call);
    assert_eq!(diff["first_divergence"]["a"]["seq"], second_call);
    assert!(diff["first_divergence"].get("call").is_none(), "{diff}");
    assert_eq!(diff["first_divergence"]["b"]["model"], "mock-large");
    let text = stdout(&agentflow_on(&db, ["diff", &a, &b]));
    assert!(
        text.contains(&format!("first divergence: task 1 at seq {second_call}\n")),
        "{text}"
    );
    assert!(!text.contains(", call "), "one numbering: {text}");
    assert_eq!(diff["same_output"], false);
    assert!(
        diff["cost_delta_usd"].as_f64().unwrap() > 0.0,
        "the large model costs more"
    );
    let text = stdout(&agentflow_on(&db, ["diff", &a, &a]));
    assert!(text.contains("no divergence"));
}

/// One OpenAI-compatible endpoint with no provider retries, so a 500 fails the call.
fn one_endpoint(server: &FakeServer) -> String {
    format!(
        r#"
[llm.endpoints.a.openai]
base_url = "{}/v1"
retry = {{ max_retries = 0 }}
[[llm.models]]
name = "only"
provider = "a"
input_per_mtok = 1.0
output_per_mtok = 1.0
"#,
        server.url()
    )
}

/// A reply of the `only` model.
fn openai_reply(text: &str) -> FakeResponse {
    openai_ok("only", text, 10, 5)
}

/// A root that makes a tool call, then waits for a child whose LLM call fails (the
/// provider is down) and fails with it.
fn failing_tree() -> Value {
    let child = json!([{"llm": {"prompt": "hi"}}, {"fail_if_err": null}]);
    json!([
        {"tool": {"name": "kv", "args": {"op": "put", "key": "k", "value": "v"}}},
        {"spawn_wait": {"description": "asker", "input": child.to_string()}},
        {"fail_if_err": null},
    ])
}

fn count(host: &agentflow::Host, run_id: &str, task: u64, kind: &str) -> usize {
    events(host, run_id)
        .iter()
        .filter(|e| e.task_id == task && e.kind == kind)
        .count()
}

/// `failing_tree` run against a provider that is down for one request, then answers
/// `reply`: the server, the scratch dir, the host and the failed run's report.
async fn failed_tree_run(
    label: &str,
    reply: &str,
) -> (FakeServer, TempDir, agentflow::Host, agentflow::RunReport) {
    let server = FakeServer::start(vec![
        FakeResponse::text(500, "provider down"),
        openai_reply(reply),
    ])
    .await;
    let (dir, host) = temp_host(label, &one_endpoint(&server));
    let (failed, _) = run_scripted(&host, failing_tree(), grant(&["kv"])).await;
    assert_eq!(failed.status, Status::Failed, "{failed:?}");
    (server, dir, host, failed)
}

/// A run that failed because its provider was down is continued with
/// `resume --retry-failed`: the failed child and the root that failed with it re-run,
/// replaying what succeeded (the tool call is not made again) and making the failed
/// LLM call again live, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_is_continued_by_retry_failed() {
    let (server, _dir, host, failed) = failed_tree_run("retry-failed", "hello again").await;
    assert_eq!(server.requests().len(), 1);
    // A plain resume refuses a failed run, and says how to continue it.
    let err = host
        .resume(&failed.run_id, ResumeOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("--retry-failed"), "{err}");

    let retry = ResumeOptions {
        retry_failed: true,
        ..Default::default()
    };
    let report = host.resume(&failed.run_id, retry).await.unwrap();
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(report.run_id, failed.run_id, "the same run continues");
    let results: Vec<Value> = serde_json::from_str(report.output.as_deref().unwrap()).unwrap();
    let child: Vec<Value> =
        serde_json::from_str(results[1]["completed"].as_str().unwrap()).unwrap();
    assert_eq!(child[0]["ok"]["text"], "hello again");
    // The failed LLM call was made again, once; the tool call was replayed, not re-run.
    assert_eq!(server.requests().len(), 2);
    assert_eq!(count(&host, &report.run_id, 1, "tools.call"), 1);
    assert_eq!(count(&host, &report.run_id, 1, "task.reopened"), 1);
    assert_eq!(count(&host, &report.run_id, 2, "task.reopened"), 1);
    assert_eq!(count(&host, &report.run_id, 2, "llm.complete"), 2);
    // Nothing is left to retry.
    let again = ResumeOptions {
        retry_failed: true,
        ..Default::default()
    };
    assert!(host.resume(&report.run_id, again).await.is_err());
}

/// `recover --apply` on a failed run whose plan says "resume" continues it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_apply_resumes_a_failed_run_whose_plan_says_resume() {
    let (server, _dir, host, failed) = failed_tree_run("recover-failed", "back").await;
    let (plan, _) = host
        .recover(&failed.run_id, false)
        .await
        .map(|(p, n, _)| (p, n))
        .unwrap();
    assert!(
        plan.tasks.iter().all(|t| matches!(
            t.action,
            agentflow::durability::recovery::Action::Resume { .. }
        )),
        "{plan:?}"
    );
    let (_, compensations, report) = host.recover(&failed.run_id, true).await.unwrap();
    assert_eq!(compensations, 0);
    let report = report.expect("the run was resumed");
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(server.requests().len(), 2);
}

/// The wall-clock reads recorded for task 1, in order, in milliseconds.
fn recorded_wall_ms(db: &Path, run_id: &str) -> Vec<u64> {
    let conn = crate::support::connect(db);
    let events = agentflow::ledger::query::events(&conn, run_id, Some(1)).unwrap();
    events
        .iter()
        .filter(|e| e.kind == "wasi.nondet")
        .flat_map(|e| agentflow::replay::nondet::reads_of_event(&e.response).unwrap())
        .filter_map(|r| match r {
            agentflow::replay::nondet::NondetRead::Wall(ns) => Some(ns / 1_000_000),
            _ => None,
        })
        .collect()
}

/// Clock and random reads replay: a run killed after its reads were recorded resumes
/// with the recorded clock values (not the clock at resume time), and a fork that
/// replays a prefix sees the original's clock and random values.
#[test]
fn recorded_clock_and_random_reads_replay_identically() {
    let dir = TempDir::new("nondet-replay");
    let db = dir.ledger("n.db");
    let ops = json!([
        {"clock": null},
        {"random": null},
        {"sleep_ms": 20},
        {"clock": null},
        {"llm": {"prompt": "first"}},
        {"llm": {"prompt": "second"}},
    ])
    .to_string();
    let run = |args: &[&str], crash_after: Option<u32>| {
        let mut cmd = agentflow();
        cmd.args(args).arg("--db").arg(&db);
        if let Some(n) = crash_after {
            cmd.env("AGENTFLOW_CRASH_AFTER_EVENTS", n.to_string());
        }
        cmd.output().unwrap()
    };
    let scripted = example("scripted");
    let scripted = scripted.to_str().unwrap();
    let original = stdout_json(&run(&["run", scripted, "--input", &ops, "--json"], None));
    let a = original["run_id"].as_str().unwrap().to_string();
    let before: Vec<Value> = serde_json::from_str(original["output"].as_str().unwrap()).unwrap();

    // A fork replaying through the first LLM call sees the same clock and random.
    let conn = crate::support::connect(&db);
    let at: i64 = conn
        .query_row(
            "SELECT seq FROM events WHERE run_id = ?1 AND task_id = 1 AND kind = 'llm.complete' ORDER BY seq LIMIT 1",
            [&a],
            |r| r.get(0),
        )
        .unwrap();
    drop(conn);
    std::thread::sleep(std::time::Duration::from_millis(30)); // the real clock moves on
    let forked = stdout_json(&run(&["fork", &a, "--at", &at.to_string(), "--json"], None));
    let after: Vec<Value> = serde_json::from_str(forked["output"].as_str().unwrap()).unwrap();
    assert_eq!(after[0], before[0], "first clock read replayed");
    assert_eq!(after[1], before[1], "random replayed");
    assert_eq!(after[3], before[3], "second clock read replayed");

    // Killed once the first LLM call (and the reads before it) is recorded, then resumed.
    let crashed = run(&["run", scripted, "--input", &ops, "--json"], Some(4));
    assert!(!crashed.status.success(), "the crash happened");
    let b: String = sql(&db, "SELECT run_id FROM runs WHERE status = 'running'");
    let recorded = recorded_wall_ms(&db, &b);
    assert_eq!(
        recorded.len(),
        2,
        "both clock reads were recorded before the crash"
    );
    std::thread::sleep(std::time::Duration::from_millis(30));
    let resumed = stdout_json(&run(&["resume", &b, "--json"], None));
    assert_eq!(resumed["status"], "completed", "{resumed}");
    let out: Vec<Value> = serde_json::from_str(resumed["output"].as_str().unwrap()).unwrap();
    assert_eq!(
        out[0],
        json!(recorded[0]),
        "the recorded clock, not today's"
    );
    assert_eq!(out[3], json!(recorded[1]));
    assert_eq!(
        recorded_wall_ms(&db, &b),
        recorded,
        "replayed reads were not recorded again"
    );
}

/// A run resumed under a different model catalog is refused (its replay would ask other
/// models), unless the operator says `--allow-changed`.
#[test]
fn a_changed_model_catalog_is_refused_on_resume() {
    let dir = TempDir::new("catalog-changed");
    let db = dir.ledger("c.db");
    let run_id = crashed_two_call_run(&db);
    let config = dir.file(
        "more-models.toml",
        "[[llm.models]]\nname = \"mock-extra\"\nprovider = \"mock\"\ninput_per_mtok = 0.5\noutput_per_mtok = 0.5\n",
    );
    let resume = |extra: &[&str]| {
        agentflow()
            .args(["resume", &run_id, "--json", "--db"])
            .arg(&db)
            .arg("--config")
            .arg(&config)
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = resume(&[]);
    assert_eq!(refused.status.code(), Some(2));
    let err = stderr(&refused);
    assert!(
        err.contains("different configuration")
            && err.contains("llm.models: recorded")
            && err.contains("--allow-changed"),
        "{err}"
    );
    let forced = resume(&["--allow-changed"]);
    assert_eq!(stdout_json(&forced)["status"], "completed");
}

/// `agentflow recover <run> --apply` through the CLI continues a failed run whose plan
/// says resume (the provider was down, then came back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_apply_through_the_cli_continues_a_failed_run() {
    let server = FakeServer::start(vec![
        FakeResponse::text(500, "provider down"),
        openai_reply("back"),
    ])
    .await;
    let dir = TempDir::new("recover-cli");
    let db = dir.ledger("r.db");
    let config = dir.file("c.toml", one_endpoint(&server));
    let cli = |args: Vec<String>| {
        let mut cmd = agentflow();
        cmd.args(&args)
            .arg("--db")
            .arg(&db)
            .arg("--config")
            .arg(&config);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
    };
    let input = failing_tree().to_string();
    let failed = cli(vec![
        "run".into(),
        example("scripted").display().to_string(),
        "--grant".into(),
        "kv".into(),
        "--input".into(),
        input,
        "--json".into(),
    ])
    .await
    .unwrap();
    let failed = stdout_json(&failed);
    assert_eq!(failed["status"], "failed", "{failed}");
    let run_id = failed["run_id"].as_str().unwrap().to_string();
    let plan = cli(vec!["recover".into(), run_id.clone()]).await.unwrap();
    let plan = stdout(&plan);
    assert!(plan.contains("Resume"), "{plan}");
    let applied = cli(vec![
        "recover".into(),
        run_id.clone(),
        "--apply".into(),
        "--json".into(),
    ])
    .await
    .unwrap();
    assert!(applied.status.success(), "{}", stderr(&applied));
    let applied = stdout_json(&applied);
    assert_eq!(applied["resumed"]["status"], "completed", "{applied}");
    assert_eq!(applied["resumed"]["run_id"], run_id.as_str());
    assert_eq!(server.requests().len(), 2);
}
