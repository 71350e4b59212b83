//! Status tells the truth: `run` names its run id at the start; a run whose host died
//! shows as `interrupted` (with the command that resumes it), not `running` forever;
//! a live host's run cannot be resumed a second time; `agentflow cancel` stops a run
//! through its live host, or marks an interrupted one cancelled, offering (not
//! running) the compensations of what it already did.

use crate::support::cli::*;
use crate::support::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// `agentflow run scripted OPS --grant cloud` (its state in the workspace `ws`) in the
/// background, its output piped.
fn start_script(db: &Path, ws: &Path, ops: Value) -> Child {
    agentflow()
        .arg("run")
        .arg(example("scripted"))
        .args([
            "--input",
            &ops.to_string(),
            "--json",
            "--grant",
            "cloud",
            "--db",
        ])
        .arg(db)
        .arg("--workspace")
        .arg(ws)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Poll `query` on `db` until it returns a positive count (20 s at most; then the
/// host is stopped and its output shown).
fn wait_until(db: &Path, query: &str, host: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if db.exists() || agentflow::ledger::postgres_url(db).is_some() {
            let conn = crate::support::connect(db);
            if conn
                .query_row(query, [], |r| r.get::<_, i64>(0))
                .is_ok_and(|n| n > 0)
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    host.kill().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(host.stderr.as_mut().unwrap(), &mut err).unwrap();
    panic!("timed out waiting for: {query}; the host said: {err}");
}

fn run_status(db: &Path) -> String {
    let runs = stdout_json(&agentflow_on(db, ["runs", "--json"]));
    runs[0]["status"].as_str().unwrap().to_string()
}

#[test]
fn a_killed_hosts_run_shows_interrupted_and_cancel_offers_its_compensations() {
    let dir = TempDir::new("status-killed");
    let db = dir.ledger("k.db");
    let mut host = start_script(
        &db,
        &dir.join("ws"),
        json!([
            {"tool": {"name": "cloud", "args": {"op": "create", "resource": "db"}}},
            {"sleep_ms": 60000},
        ]),
    );
    wait_until(
        &db,
        "SELECT COUNT(*) FROM events WHERE kind = 'tools.call'",
        &mut host,
    );
    let run = only_run_id(&db);
    assert_eq!(run_status(&db), "running", "its host is alive");
    host.kill().unwrap();
    let out = host.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("agentflow: run {run} started")),
        "the run id comes first: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(run_status(&db), "interrupted", "its host is gone");
    let inspect = stdout(&agentflow_on(&db, ["inspect", &run]));
    assert!(
        inspect.contains("interrupted") && inspect.contains(&format!("agentflow resume {run}")),
        "{inspect}"
    );

    let cancelled = agentflow_on(&db, ["cancel", &run, "--note", "not needed", "--json"]);
    assert!(cancelled.status.success(), "{}", stderr(&cancelled));
    let report = stdout_json(&cancelled);
    assert_eq!(report["by_host"], false);
    assert_eq!(report["tasks"], json!([1]));
    let offered = &report["compensations_offered"][0];
    assert_eq!(
        (offered["tool"].as_str(), offered["undo"].as_str()),
        (Some("cloud"), Some("destroy")),
        "{report}"
    );
    assert_eq!(run_status(&db), "cancelled");
    assert_eq!(
        sql::<i64>(
            &db,
            "SELECT COUNT(*) FROM events WHERE kind = 'recovery.compensate'"
        ),
        0,
        "offered, not run"
    );
    let again = agentflow_on(&db, ["cancel", &run]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("nothing to cancel"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn a_live_run_cannot_be_resumed_twice_and_is_cancelled_through_its_host() {
    let dir = TempDir::new("status-live");
    let db = dir.ledger("l.db");
    let mut host = start_script(
        &db,
        &dir.join("ws"),
        json!([{"log": "working"}, {"sleep_ms": 60000}]),
    );
    wait_until(&db, "SELECT COUNT(*) FROM leases", &mut host);
    wait_until(
        &db,
        "SELECT COUNT(*) FROM events WHERE kind = 'trace.log'",
        &mut host,
    );
    let run = only_run_id(&db);
    let second = agentflow_on(&db, ["resume", &run]);
    assert_eq!(second.status.code(), Some(2), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("is being executed by host"),
        "{}",
        stderr(&second)
    );

    let started = Instant::now();
    let cancelled = agentflow_on(&db, ["cancel", &run, "--json"]);
    assert!(cancelled.status.success(), "{}", stderr(&cancelled));
    assert_eq!(stdout_json(&cancelled)["by_host"], true);
    let out = host.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the host stopped the run, not its 60 s sleep"
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["status"], "cancelled", "{report}");
    assert_eq!(run_status(&db), "cancelled");
}
