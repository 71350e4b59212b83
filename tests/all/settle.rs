//! In-doubt effects can be settled: after a crash between an irreversible call's
//! intent and its result, `recover --apply` says what it waits for and exits 3,
//! `agentflow settle` records whether the call happened, and `resume` continues
//! accordingly — the call is not repeated when it happened, and runs once when it did
//! not. `fork` refuses to re-make side effects after its fork point unless told to.

use crate::support::cli::*;
use crate::support::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Output;

/// Append a line to a workspace file (an irreversible call), then read the file.
fn append_then_read() -> String {
    json!([
        {"tool": {"name": "workspace", "args": {"op": "append", "path": "log.txt", "content": "one line\n"}}},
        {"tool": {"name": "workspace", "args": {"op": "read", "path": "log.txt"}}},
    ])
    .to_string()
}

fn run_script(dir: &TempDir, env: &[(&str, &str)]) -> Output {
    let mut cmd = agentflow();
    cmd.arg("run")
        .arg(example("scripted"))
        .args([
            "--input",
            &append_then_read(),
            "--json",
            "--grant",
            "workspace",
        ])
        .arg("--workspace")
        .arg(dir.join("ws"))
        .arg("--db")
        .arg(dir.ledger("run.db"))
        .envs(env.iter().copied());
    cmd.output().unwrap()
}

/// The scripted agent's per-operation results in a `--json` report.
fn results(report: &Value) -> Vec<Value> {
    serde_json::from_str(report["output"].as_str().expect("an output")).unwrap()
}

fn intent_seq(db: &Path) -> String {
    sql::<i64>(db, "SELECT seq FROM events WHERE kind = 'tools.intent'").to_string()
}

#[test]
fn a_call_that_happened_is_settled_and_not_repeated() {
    let dir = TempDir::new("settle-happened");
    let db = dir.ledger("run.db");
    // The host dies after the append acted, before its result was recorded.
    let crashed = run_script(
        &dir,
        &[
            ("AGENTFLOW_CRASH_AT", "tool-effect"),
            ("AGENTFLOW_CRASH_AT_COUNT", "1"),
        ],
    );
    assert!(!crashed.status.success(), "{}", stderr(&crashed));
    let run = only_run_id(&db);
    let plan = stdout_json(&agentflow_on(&db, ["recover", &run, "--json"]));
    let action = &plan["plan"]["tasks"][0]["action"];
    assert_eq!(action["type"], "RequiresHuman", "{plan}");
    let seq = intent_seq(&db);
    assert!(
        action["settle"]
            .as_str()
            .unwrap()
            .starts_with(&format!("agentflow settle {run} {seq} --happened")),
        "{action}"
    );

    let apply = agentflow_on(&db, ["recover", &run, "--apply"]);
    assert_eq!(apply.status.code(), Some(3), "{}", stderr(&apply));
    assert!(
        stderr(&apply).contains("waits for a human") && stderr(&apply).contains("agentflow settle"),
        "{}",
        stderr(&apply)
    );

    let bad = agentflow_on(
        &db,
        ["settle", &run, &seq, "--happened", "--result", "{not json"],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("--result must be JSON"),
        "{}",
        stderr(&bad)
    );

    let settled = agentflow_on(
        &db,
        [
            "settle",
            &run,
            &seq,
            "--happened",
            "--result",
            r#"{"written":9}"#,
            "--note",
            "checked the file",
        ],
    );
    assert!(settled.status.success(), "{}", stderr(&settled));
    assert!(
        stdout(&settled).contains(&format!("continue with: agentflow resume {run}")),
        "{}",
        stdout(&settled)
    );
    let again = agentflow_on(&db, ["settle", &run, &seq, "--did-not-happen"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("not in doubt"),
        "{}",
        stderr(&again)
    );
    let plan = stdout_json(&agentflow_on(&db, ["recover", &run, "--json"]));
    assert!(
        !plan.to_string().contains("RequiresHuman"),
        "settled: nothing waits for a human now: {plan}"
    );

    let resumed = agentflow_on(&db, ["resume", &run, "--json"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let report = stdout_json(&resumed);
    assert_eq!(report["status"], "completed", "{report}");
    let results = results(&report);
    assert_eq!(
        results[0],
        json!({"ok": r#"{"written":9}"#}),
        "the human's result"
    );
    assert_eq!(
        results[1],
        json!({"ok": "one line\n"}),
        "the append was not made again"
    );
}

#[test]
fn a_call_that_did_not_happen_runs_once_on_resume() {
    // Where the append's intent lands in an uncrashed run's record.
    let base = TempDir::new("settle-base");
    assert!(run_script(&base, &[]).status.success());
    let through_intent: i64 = sql(
        &base.ledger("run.db"),
        "SELECT COUNT(*) FROM events WHERE seq <= (SELECT seq FROM events WHERE kind = 'tools.intent')",
    );
    let dir = TempDir::new("settle-not-happened");
    let db = dir.ledger("run.db");
    // The host dies right after the intent is committed: the append never ran.
    let crashed = run_script(
        &dir,
        &[("AGENTFLOW_CRASH_AFTER_EVENTS", &through_intent.to_string())],
    );
    assert!(!crashed.status.success());
    let run = only_run_id(&db);
    let seq = intent_seq(&db);
    let settled = agentflow_on(&db, ["settle", &run, &seq, "--did-not-happen"]);
    assert!(settled.status.success(), "{}", stderr(&settled));
    let resumed = agentflow_on(&db, ["resume", &run, "--json"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let report = stdout_json(&resumed);
    assert_eq!(report["status"], "completed", "{report}");
    let results = results(&report);
    assert_eq!(results[0]["ok"], r#"{"written":9}"#, "the append ran live");
    assert_eq!(results[1], json!({"ok": "one line\n"}), "exactly once");
    let intents: i64 = sql(
        &db,
        "SELECT COUNT(*) FROM events WHERE kind = 'tools.intent'",
    );
    assert_eq!(intents, 2, "the live call recorded its own intent");
}

#[test]
fn fork_refuses_to_make_side_effects_again_unless_told() {
    let dir = TempDir::new("fork-effects");
    let db = dir.ledger("run.db");
    let out = run_script(&dir, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = only_run_id(&db);
    let seq: i64 = sql(&db, "SELECT seq FROM events WHERE kind = 'tools.intent'");
    let before = (seq - 1).to_string();
    let refused = agentflow_on(&db, ["fork", &run, "--at", &before, "--json"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    let err = stderr(&refused);
    assert!(
        err.contains("side-effecting")
            && err.contains(&format!("workspace (task 1, seq {seq})"))
            && err.contains("--live-effects"),
        "{err}"
    );
    assert_eq!(
        sql::<i64>(&db, "SELECT COUNT(*) FROM runs"),
        1,
        "a refused fork makes no run"
    );
    let last: i64 = sql(&db, "SELECT MAX(seq) FROM events WHERE task_id = 1");
    let at_end = agentflow_on(&db, ["fork", &run, "--at", &last.to_string(), "--json"]);
    assert!(
        at_end.status.success(),
        "nothing after the end: {}",
        stderr(&at_end)
    );
    let live = agentflow_on(
        &db,
        ["fork", &run, "--at", &before, "--live-effects", "--json"],
    );
    assert!(live.status.success(), "{}", stderr(&live));
    let forked = stdout_json(&live);
    assert_eq!(forked["status"], "completed");
}
