//! The example `ticket` tool component (compensable, `close` as its undo) under
//! crashes: a host killed after a ticket call's intent resumes into exactly one ticket,
//! with the build the run started with even when another is installed under the name
//! since; and a failed run's recovery plan closes the tickets it opened.

use crate::support::cli::*;
use crate::support::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// A ledger with the ticket tool installed (tickets under `<dir>/data`); its path.
fn ledger_with_ticket(dir: &TempDir) -> PathBuf {
    let db = dir.ledger("run.db");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let manifest = dir.file(
        "ticket.toml",
        "[grants]\ndir = \"data\"\nread_only = false\n[limits]\ntimeout_ms = 5000\n",
    );
    let out = agentflow_on(
        &db,
        [
            "tools".as_ref(),
            "install".as_ref(),
            example("ticket").as_os_str(),
            "--manifest".as_ref(),
            manifest.as_os_str(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    db
}

/// `agentflow run scripted OPS --grant ticket --json`, with `env`.
fn run_ops(db: &Path, ops: &Value, env: &[(&str, &str)]) -> std::process::Output {
    agentflow()
        .arg("run")
        .arg(example("scripted"))
        .args([
            "--input",
            &ops.to_string(),
            "--grant",
            "ticket",
            "--json",
            "--db",
        ])
        .arg(db)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn results(report: &Value) -> Vec<Value> {
    serde_json::from_str(report["output"].as_str().expect("an output")).unwrap()
}

fn ticket_op(args: Value) -> Value {
    json!({"tool": {"name": "ticket", "args": args}})
}

#[test]
fn a_ticket_call_crashed_after_its_intent_opens_exactly_one_ticket_after_resume() {
    let dir = TempDir::new("ticket-crash");
    let db = ledger_with_ticket(&dir);
    let ticket_build =
        agentflow::ledger::blobs::sha256_hex(&std::fs::read(example("ticket")).unwrap());
    let ops = json!([
        ticket_op(json!({"op": "open", "title": "printer on fire"})),
        ticket_op(json!({"op": "list"})),
    ]);
    // The host dies after the ticket tool acted, before its result is recorded.
    let crashed = run_ops(&db, &ops, &[("AGENTFLOW_CRASH_AT", "tool-effect")]);
    assert!(!crashed.status.success(), "{}", stderr(&crashed));
    assert_eq!(tickets(&dir).len(), 1, "the tool acted before the crash");
    let run = only_run_id(&db);
    let intent: String = sql(
        &db,
        "SELECT request FROM events WHERE kind = 'tools.intent'",
    );
    let intent: Value = serde_json::from_str(&intent).unwrap();
    assert_eq!(intent["build"], format!("sha256:{ticket_build}"));
    assert_eq!(intent["side_effect"], "compensable");
    assert_eq!(intent["undo"], "close");
    let calls: i64 = sql(&db, "SELECT COUNT(*) FROM events WHERE kind = 'tools.call'");
    assert_eq!(calls, 0, "no result recorded");

    // Meanwhile another component is installed under the name: the run keeps its build.
    let other = dir.file("probe.toml", "[grants]\nkv = true\n");
    let reinstall = agentflow_on(
        &db,
        [
            "tools".as_ref(),
            "install".as_ref(),
            example("probe-tool").as_os_str(),
            "--name".as_ref(),
            "ticket".as_ref(),
            "--manifest".as_ref(),
            other.as_os_str(),
        ],
    );
    assert!(reinstall.status.success(), "{}", stderr(&reinstall));

    // An operator who wrongly says the call did not happen: it runs again, live, with
    // the same idempotency key — and the tool answers with the ticket it already made.
    let seq: i64 = sql(&db, "SELECT seq FROM events WHERE kind = 'tools.intent'");
    let settled = agentflow_on(&db, ["settle", &run, &seq.to_string(), "--did-not-happen"]);
    assert!(settled.status.success(), "{}", stderr(&settled));
    let resumed = agentflow_on(&db, ["resume", &run, "--json"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let warning = stderr(&resumed);
    assert!(
        warning.contains(&format!(
            "this run uses build sha256:{}",
            &ticket_build[..12]
        )) && warning.contains("now sha256:"),
        "{warning}"
    );
    let report = stdout_json(&resumed);
    assert_eq!(report["status"], "completed", "{report}");
    let results = results(&report);
    let opened: Value = serde_json::from_str(results[0]["ok"].as_str().unwrap()).unwrap();
    let listed: Value = serde_json::from_str(results[1]["ok"].as_str().unwrap()).unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "exactly one ticket: {listed}"
    );
    assert_eq!(listed[0]["id"], opened["id"]);
    assert_eq!(opened["opened_by"], intent["idempotency_key"]);
    assert_eq!(tickets(&dir).len(), 1);
    // Every call of the resumed run names the ticket build, not the one installed now
    // (the human's settlement, recorded as the in-doubt call's result, names none).
    let builds: Vec<String> = crate::support::connect(&db)
        .prepare("SELECT json_extract(request, '$.build') FROM events WHERE kind IN ('tools.intent', 'tools.call')")
        .unwrap()
        .query_map([], |r| r.get::<_, Option<String>>(0))
        .unwrap()
        .filter_map(Result::unwrap)
        .collect();
    assert!(builds.len() >= 4, "{builds:?}");
    assert!(
        builds
            .iter()
            .all(|b| *b == format!("sha256:{ticket_build}")),
        "{builds:?}"
    );
}

#[test]
fn a_failed_runs_recovery_closes_the_tickets_it_opened() {
    let dir = TempDir::new("ticket-recover");
    let db = ledger_with_ticket(&dir);
    let ops = json!([
        ticket_op(json!({"op": "open", "title": "disk full"})),
        {"fail": "the agent gave up after opening a ticket"},
    ]);
    let failed = run_ops(&db, &ops, &[]);
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    let run = only_run_id(&db);
    let open = tickets(&dir);
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["status"], "open");

    let plan = stdout_json(&agentflow_on(&db, ["recover", &run, "--json"]));
    let action = &plan["plan"]["tasks"][0]["action"];
    assert_eq!(action["type"], "Rollback", "{plan}");
    let revert = &action["side_effects"][0];
    assert_eq!(revert["tool"], "ticket");
    assert_eq!(revert["undo"], "close");
    assert_eq!(revert["effect"]["type"], "FileModified");
    assert_eq!(
        revert["effect"]["path"],
        format!("tickets/{}.json", open[0]["id"].as_str().unwrap())
    );

    let applied = agentflow_on(&db, ["recover", &run, "--apply", "--json"]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    let closed = tickets(&dir);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0]["status"], "closed", "{closed:?}");
    let compensations: i64 = sql(
        &db,
        "SELECT COUNT(*) FROM events WHERE kind = 'recovery.compensate' AND status = 'ok'",
    );
    assert_eq!(compensations, 1);
}
