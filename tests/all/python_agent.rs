//! Agents in Python: `examples/python-agent/app.py` built by componentize-py (the pinned
//! version) and run by the `agentflow` binary — its LLM, tool, spawn, wait, trace and
//! checkpoint calls in the ledger, and a run killed mid-way then resumed to the output
//! of an uncrashed run without repeating its tool call.

use crate::support::cli::*;
use crate::support::python;
use crate::support::*;
use agentflow::ledger::query::EventRow;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

const TOPIC: &str = "tide pools";

/// The tests here run one after another: the first compiles the 18 MB component into
/// the shared component cache (minutes in a debug build), the rest load it from there.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The built component (cached under cargo's test tmpdir); a clear failure when
/// componentize-py is missing.
fn component() -> PathBuf {
    python::component(Path::new(env!("CARGO_TARGET_TMPDIR")))
        .unwrap_or_else(|e| panic!("cannot build the Python example agent: {e}"))
}

/// The agent's own config (`examples/python-agent/agentflow.toml`).
fn config() -> PathBuf {
    python::agent_dir().join("agentflow.toml")
}

/// `agentflow run <python agent> --input TOPIC --json` on `db`, with `env`.
fn run(db: &Path, env: &[(&str, String)]) -> Output {
    let mut cmd = agentflow();
    cmd.arg("run")
        .arg(component())
        .args(["--input", TOPIC, "--json", "--config"])
        .arg(config())
        .arg("--db")
        .arg(db);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Events of `kind` in task `task` of the (only) run at `db`.
fn count(db: &Path, task: i64, kind: &str) -> i64 {
    sql(
        db,
        &format!("SELECT COUNT(*) FROM events WHERE task_id = {task} AND kind = '{kind}'"),
    )
}

/// The kinds of the ledger's events in the order they were appended.
fn appended(db: &Path) -> Vec<(i64, String)> {
    let conn = crate::support::connect(db);
    let mut stmt = conn
        .prepare("SELECT task_id, kind FROM events ORDER BY rowid")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn python_agent_calls_the_llm_a_tool_a_child_and_saves_a_checkpoint() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("python-agent");
    let db = dir.ledger("py.db");
    let out = run(&db, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout_json(&out);
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["tasks"], 2, "root and its child: {report}");
    let output: Value = serde_json::from_str(report["output"].as_str().unwrap()).unwrap();
    assert_eq!(output["topic"], TOPIC);
    assert_eq!(output["child"], 2);

    let host = host_at(&db).unwrap();
    let run_id = only_run_id(&db);
    let events = events(&host, &run_id);
    let one = |task: u64, kind: &str| -> EventRow {
        let found: Vec<_> = events
            .iter()
            .filter(|e| e.task_id == task && e.kind == kind)
            .collect();
        assert_eq!(found.len(), 1, "task {task}: one {kind}: {found:?}");
        found[0].clone()
    };
    // The root, in order: its checkpoint looked up, the plan asked of the model, stored
    // with kv (intent first), the child spawned and waited for, the checkpoint saved;
    // a reasoning step after each.
    assert_eq!(
        kinds(&events, 1),
        [
            "checkpoint.load",
            "llm.decision",
            "llm.complete",
            "trace.step",
            "tools.intent",
            "tools.call",
            "trace.step",
            "tasks.spawn",
            "tasks.wait",
            "trace.step",
            "checkpoint.save",
            "trace.step",
        ]
    );
    let plan = one(1, "llm.complete").response["text"].clone();
    assert_eq!(output["plan"], plan, "the plan is the model's answer");
    let put: Value =
        serde_json::from_str(one(1, "tools.call").request["args"].as_str().unwrap()).unwrap();
    assert_eq!(put["op"], "put");
    assert_eq!(put["value"], plan, "the plan went to the kv tool");
    let kv: String = sql(&db, "SELECT value FROM kv WHERE key = 'plan'");
    assert_eq!(kv, plan.as_str().unwrap());
    let spawn = one(1, "tasks.spawn");
    assert_eq!(spawn.request["agent"], "same");
    assert_eq!(spawn.request["input"], format!("child: {TOPIC}"));

    // The child: the same component, reading the plan back and asking the model; what
    // it answered is what the parent's wait returned and put in its output.
    let tasks = tasks(&host, &run_id);
    assert_eq!(tasks[1].parent_id, Some(1));
    assert_eq!(tasks[1].agent, tasks[0].agent, "agent-ref same");
    let got = one(2, "tools.call");
    assert_eq!(
        serde_json::from_str::<Value>(got.response["ok"].as_str().unwrap()).unwrap(),
        plan,
        "the child read the plan back"
    );
    let review = one(2, "llm.complete").response["text"].clone();
    assert_eq!(one(1, "tasks.wait").response["completed"], review);
    assert_eq!(output["review"], review);
    assert_eq!(tasks[1].output.as_deref(), review.as_str());
    assert!(
        !kinds(&events, 2).contains(&"tasks.spawn".to_string()),
        "the child spawns nothing"
    );

    // The checkpoint holds the state the agent saved.
    let saved =
        agentflow::ledger::query::checkpoints(&host.ledger().reader().unwrap(), &run_id, None)
            .unwrap();
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].note, "planned and reviewed");
    let state =
        agentflow::ledger::query::blob(&host.ledger().reader().unwrap(), &saved[0].state_hash)
            .unwrap()
            .unwrap();
    let state: Value = serde_json::from_slice(&state).unwrap();
    assert_eq!(state["plan"], plan);
    assert_eq!(state["review"], review);
}

#[test]
fn python_agent_killed_mid_run_resumes_to_the_same_output_without_repeating_its_tool_call() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("python-crash");
    let baseline_db = dir.ledger("baseline.db");
    let baseline = run(&baseline_db, &[]);
    assert!(baseline.status.success(), "{}", stderr(&baseline));
    let baseline = stdout_json(&baseline);
    let order = appended(&baseline_db);

    // Kill the host right after the root's kv put is recorded: the tool has acted, the
    // child has not finished, the checkpoint is not saved.
    let tool_call = order
        .iter()
        .position(|(task, kind)| *task == 1 && kind == "tools.call")
        .expect("the root's tool call");
    let db = dir.ledger("crashed.db");
    let crashed = run(
        &db,
        &[("AGENTFLOW_CRASH_AFTER_EVENTS", (tool_call + 1).to_string())],
    );
    assert!(!crashed.status.success(), "the host was killed");
    assert!(
        stderr(&crashed).contains("AGENTFLOW_CRASH_AFTER_EVENTS"),
        "{}",
        stderr(&crashed)
    );
    assert_eq!(count(&db, 1, "tools.call"), 1, "the tool call is recorded");
    assert_eq!(count(&db, 1, "checkpoint.save"), 0, "killed mid-way");
    let status: String = sql(&db, "SELECT status FROM runs");
    assert_eq!(status, "running", "the run did not finish");
    assert!(
        appended(&db).len() < order.len(),
        "the crash came before the end of the run"
    );

    let resumed = resume_only_run(&db, &config());
    assert_eq!(resumed["status"], "completed", "{resumed}");
    assert_eq!(
        resumed["output"], baseline["output"],
        "the uncrashed output"
    );
    assert_eq!(
        count(&db, 1, "tools.intent"),
        1,
        "the tool was not called again"
    );
    assert_eq!(
        count(&db, 1, "tools.call"),
        1,
        "the tool was not called again"
    );
    assert_eq!(
        count(&db, 1, "llm.complete"),
        1,
        "the LLM call was replayed"
    );
    assert_eq!(count(&db, 1, "tasks.spawn"), 1, "one child");
    assert_eq!(count(&db, 1, "checkpoint.save"), 1);
    let tasks: i64 = sql(&db, "SELECT COUNT(*) FROM tasks WHERE status = 'completed'");
    assert_eq!(tasks, 2);
}
