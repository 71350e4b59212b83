//! Ledger integrity: a damaged, unversioned-but-intact, newer or table-less ledger
//! before replay; `agentflow check` and `backup`; the `.db` file alone after a clean
//! exit; a run killed between its run row and its root task.

use crate::support::cli::*;
use crate::support::*;
use agentflow::ledger::{Ledger, schema};
use agentflow::tools::{SideEffect, Tool, ToolCallCtx, ToolError, ToolInfo};
use agentflow::{Host, ResumeOptions, RunOptions, Status};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A side-effecting tool that counts how often it really ran.
struct Counter(Arc<AtomicU64>);

#[async_trait::async_trait]
impl Tool for Counter {
    fn info(&self) -> ToolInfo {
        ToolInfo {
            name: "counter".into(),
            description: "counts".into(),
            args_schema: json!({}),
            side_effect: SideEffect::Idempotent,
            undo: None,
        }
    }
    async fn call(&self, _ctx: &ToolCallCtx, _args: Value) -> Result<String, ToolError> {
        Ok(self.0.fetch_add(1, Ordering::SeqCst).to_string())
    }
}

/// A host on `db` with the counting tool installed.
fn counting_host(db: &Path, runs: &Arc<AtomicU64>) -> anyhow::Result<Host> {
    let mut host = host_at(db)?;
    host.register_tool(Arc::new(Counter(runs.clone())));
    Ok(host)
}

/// Run the counter once, then make the run look as if its host had crashed before the
/// end: the run and its root unfinished, their results gone, the tool call recorded.
async fn crashed_run(db: &Path, runs: &Arc<AtomicU64>) -> String {
    let host = counting_host(db, runs).unwrap();
    let ops = json!([{"tool": {"name": "counter", "args": {}}}, {"log": "after"}]);
    let (report, _) = run_scripted(&host, ops, grant(&["counter"])).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    drop(host);
    sql_batch(
        db,
        "UPDATE runs SET status = 'running', output = NULL, finished_at = NULL;
         UPDATE tasks SET status = 'running', output = NULL, finished_at = NULL;",
    );
    report.run_id
}

/// `agentflow check DB --json`: its exit code and report.
fn check(db: &Path) -> (Option<i32>, Value) {
    let out = agentflow()
        .args(["check", "--json"])
        .arg(db)
        .output()
        .unwrap();
    (out.status.code(), stdout_json(&out))
}

/// `agentflow runs --json --db DB`: the run ids listed.
fn listed_runs(db: &Path) -> Vec<String> {
    let out = agentflow_on(db, ["runs", "--json"]);
    assert!(out.status.success(), "runs: {}", stderr(&out));
    stdout_json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_events_table_is_refused_not_recreated_and_replayed_live() {
    let dir = TempDir::new("integrity-drop");
    let db = dir.join("ledger.db");
    let runs = Arc::new(AtomicU64::new(0));
    let run_id = crashed_run(&db, &runs).await;
    sql_batch(&db, "DROP TABLE events");

    let refused = match counting_host(&db, &runs) {
        Ok(host) => host.resume(&run_id, ResumeOptions::default()).await.err(),
        Err(e) => Some(e),
    };
    let error = format!("{:#}", refused.expect("resume must refuse the ledger"));
    assert!(
        error.contains("table `events` is missing") && error.contains("restore it from a backup"),
        "{error}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the tool was not run again");
    let recreated: i64 = sql(
        &db,
        "SELECT COUNT(*) FROM sqlite_master WHERE name = 'events'",
    );
    assert_eq!(recreated, 0, "the table is not silently re-created");

    let out = agentflow_on(&db, ["resume", &run_id]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("table `events` is missing"),
        "{}",
        stderr(&out)
    );
    let (code, report) = check(&db);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["ok"], false);
    assert_eq!(report["missing_tables"], json!(["events"]));
    let text = stdout(&agentflow().arg("check").arg(&db).output().unwrap());
    assert!(
        text.contains("problem    table `events` is missing") && text.contains("DAMAGED"),
        "{text}"
    );
}

/// Overwrite the root page of index `index` with garbage, in the file itself (after
/// emptying the WAL into it).
fn corrupt_index(db: &Path, index: &str) {
    let (page_size, root): (i64, i64) = {
        let conn = rusqlite::Connection::open(db).unwrap();
        let busy: i64 = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .unwrap();
        assert_eq!(busy, 0, "nothing else uses the ledger");
        let page_size = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        let root = conn
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = ?1",
                [index],
                |r| r.get(0),
            )
            .unwrap();
        (page_size, root)
    };
    let wal = db.with_extension("db-wal");
    assert!(
        std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) == 0,
        "the WAL was checkpointed"
    );
    let mut bytes = std::fs::read(db).unwrap();
    let at = ((root - 1) * page_size) as usize;
    bytes[at..at + page_size as usize].fill(0xEE);
    std::fs::write(db, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_failing_quick_check_is_refused_before_replay() {
    let dir = TempDir::new("integrity-corrupt");
    let db = dir.join("ledger.db");
    let runs = Arc::new(AtomicU64::new(0));
    let run_id = crashed_run(&db, &runs).await;
    corrupt_index(&db, "events_by_kind");

    let host = counting_host(&db, &runs).unwrap();
    let error = format!(
        "{:#}",
        host.resume(&run_id, ResumeOptions::default())
            .await
            .expect_err("a damaged ledger is refused")
    );
    assert!(
        error.contains("failed its integrity check") && error.contains("quick_check"),
        "{error}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "nothing ran again");
    drop(host);

    let (code, report) = check(&db);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["ok"], false);
    assert_ne!(report["quick_check"], json!(["ok"]), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unversioned_ledger_is_migrated_and_still_resumes_and_inspects() {
    let dir = TempDir::new("integrity-migrate");
    let db = dir.join("ledger.db");
    let runs = Arc::new(AtomicU64::new(0));
    let run_id = crashed_run(&db, &runs).await;
    // What hosts before migrations left: today's tables, no user_version, the old
    // meta row, and (say) the index lost.
    sql_batch(
        &db,
        "PRAGMA user_version = 0;
             INSERT INTO meta (key, value) VALUES ('schema_version', '2');
             DROP INDEX events_by_kind;",
    );
    let (code, report) = check(&db);
    assert_eq!(code, Some(0), "an old ledger is not damaged: {report}");
    assert_eq!(report["schema_version"], 0);

    let host = counting_host(&db, &runs).unwrap();
    assert_eq!(
        sql::<i64>(&db, "PRAGMA user_version"),
        schema::SCHEMA_VERSION
    );
    let index: i64 = sql(
        &db,
        "SELECT COUNT(*) FROM sqlite_master WHERE name = 'events_by_kind'",
    );
    assert_eq!(index, 1, "the migration restored the index");
    let view: i64 = sql(
        &db,
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'view' AND name = 'agent_traces'",
    );
    assert_eq!(view, 1, "migration 3 added the agent_traces view");
    let resumed = host
        .resume(&run_id, ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(resumed.status, Status::Completed, "{resumed:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "replayed, not re-run");
    drop(host);

    let out = agentflow_on(&db, ["inspect", &run_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (code, report) = check(&db);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["schema_version"], schema::SCHEMA_VERSION);
}

#[test]
fn new_files_get_the_current_schema_and_newer_or_incomplete_ones_are_refused() {
    let dir = TempDir::new("integrity-version");
    for db in [dir.join("absent.db"), dir.join("empty.db")] {
        if db.ends_with("empty.db") {
            std::fs::File::create(&db).unwrap();
        }
        drop(Ledger::open(&db).unwrap());
        assert_eq!(
            sql::<i64>(&db, "PRAGMA user_version"),
            schema::SCHEMA_VERSION
        );
        let conn = agentflow::ledger::Connection::open(&db).unwrap();
        assert_eq!(schema::missing_table(&conn, 1).unwrap(), None);
        let (code, report) = check(&db);
        assert_eq!(code, Some(0), "{report}");
        assert_eq!(report["resumable"], json!([]));
    }

    let newer = dir.join("empty.db");
    sql_batch(&newer, "PRAGMA user_version = 7");
    let error = Ledger::open(&newer).err().expect("refused").to_string();
    assert!(
        error.contains(&format!(
            "ledger schema version 7 is newer than this agentflow (knows up to {})",
            schema::SCHEMA_VERSION
        )),
        "{error}"
    );
    let (code, report) = check(&newer);
    assert_eq!(code, Some(1), "{report}");

    let incomplete = dir.join("absent.db");
    sql_batch(&incomplete, "DROP TABLE checkpoints");
    let error = Ledger::open(&incomplete)
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("table `checkpoints` is missing"), "{error}");
    sql_batch(&incomplete, "PRAGMA user_version = 0");
    let error = Ledger::open(&incomplete)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains("table `checkpoints` is missing"),
        "an unversioned ledger is not completed silently either: {error}"
    );

    let garbage = dir.join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    let (code, report) = check(&garbage);
    assert_eq!(code, Some(1), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_lists_the_resumable_runs() {
    let dir = TempDir::new("integrity-check");
    let db = dir.join("ledger.db");
    let runs = Arc::new(AtomicU64::new(0));
    let crashed = crashed_run(&db, &runs).await;
    let host = counting_host(&db, &runs).unwrap();
    let (done, _) = run_scripted(&host, json!([{"log": "hi"}]), RunOptions::default()).await;
    drop(host);

    let (code, report) = check(&db);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["ok"], true);
    assert_eq!(report["quick_check"], json!(["ok"]));
    assert_eq!(report["schema_version"], schema::SCHEMA_VERSION);
    assert_eq!(report["runs"], 2);
    let resumable: Vec<&str> = report["resumable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(resumable, [crashed.as_str()], "not {}", done.run_id);

    let text = stdout(&agentflow().arg("check").arg(&db).output().unwrap());
    assert!(
        text.contains(&format!("agentflow resume {crashed}")) && text.contains("status     ok"),
        "{text}"
    );
}

/// `agentflow run hello --json --db DB`: the run id.
fn run_hello(db: &Path, input: &str) -> String {
    let out = run_example(db, "hello", ["--input", input, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout_json(&out)["run_id"].as_str().unwrap().to_string()
}

#[test]
fn after_a_cli_run_the_db_file_alone_lists_the_run() {
    let dir = TempDir::new("integrity-wal");
    let db = dir.join("cli.db");
    let first = run_hello(&db, "first");
    // Another connection stays open (a dashboard, an `sqlite3` shell), so the CLI's
    // connections closing is not the last close that would fold the WAL in by itself.
    let watcher = rusqlite::Connection::open(&db).unwrap();
    let seen: i64 = watcher
        .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(seen, 1);
    let second = run_hello(&db, "second");
    let wal = dir.join("cli.db-wal");
    assert_eq!(
        std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0),
        0,
        "the WAL was checkpointed into the file"
    );

    let elsewhere = TempDir::new("integrity-wal-copy");
    let copy = elsewhere.join("copy.db");
    std::fs::copy(&db, &copy).unwrap();
    drop(watcher);
    let mut listed = listed_runs(&copy);
    listed.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(listed, expected);
}

#[test]
fn backup_while_another_process_writes() {
    let dir = TempDir::new("integrity-backup");
    let db = dir.join("ledger.db");
    let first = run_example(&db, "hello", ["--input", "first"]);
    assert!(first.status.success(), "{}", stderr(&first));
    // A second process writes for a while: many steps with sleeps between them.
    let ops: Vec<Value> = (0..60)
        .flat_map(|i| [json!({"log": format!("step {i}")}), json!({"sleep_ms": 25})])
        .collect();
    let mut writer = spawn_example(&db, "scripted", ["--input", &Value::Array(ops).to_string()]);
    let mut started = false;
    for _ in 0..400 {
        let count: i64 = sql(
            &db,
            "SELECT COUNT(*) FROM events e JOIN runs r USING (run_id) WHERE r.status = 'running'",
        );
        if count >= 5 {
            started = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(started, "the second run is writing");

    let copy = dir.join("backup.db");
    let out = agentflow()
        .args(["backup", "--json"])
        .arg(&db)
        .arg(&copy)
        .output()
        .unwrap();
    let still_running = writer.try_wait().unwrap().is_none();
    assert!(out.status.success(), "backup: {}", stderr(&out));
    let report = stdout_json(&out);
    assert_eq!(report["ok"], true, "{report}");
    assert!(writer.wait().unwrap().success());
    assert!(
        still_running,
        "the backup ran while the other process wrote"
    );

    let elsewhere = TempDir::new("integrity-backup-copy");
    let moved = elsewhere.join("moved.db");
    std::fs::copy(&copy, &moved).unwrap();
    let (code, checked) = check(&moved);
    assert_eq!(code, Some(0), "{checked}");
    assert_eq!(checked["runs"], 2, "{checked}");
    assert_eq!(
        checked["resumable"].as_array().unwrap().len(),
        1,
        "the writing run, unfinished in the snapshot: {checked}"
    );
    assert_eq!(listed_runs(&moved).len(), 2);

    let again = agentflow()
        .arg("backup")
        .arg(&db)
        .arg(&copy)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_before_its_root_task_resumes_from_its_input() {
    let dir = TempDir::new("integrity-rootless");
    let db = dir.join("ledger.db");
    let runs = Arc::new(AtomicU64::new(0));
    let host = counting_host(&db, &runs).unwrap();
    let ops = json!([{"tool": {"name": "counter", "args": {}}}, {"log": "after"}]);
    let (done, _) = run_scripted(&host, ops, grant(&["counter"])).await;
    assert_eq!(done.status, Status::Completed);
    // The state an older host left when killed between writing the run and its root:
    // a run row, no task, nothing recorded.
    sql_batch(
        &db,
        "DELETE FROM events; DELETE FROM tasks;
             UPDATE runs SET status = 'running', output = NULL, finished_at = NULL;",
    );
    drop(host); // a fresh host: nothing cached about the run
    let host = counting_host(&db, &runs).unwrap();
    let resumed = host
        .resume(&done.run_id, ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(resumed.status, Status::Completed, "{resumed:?}");
    let results: Value = serde_json::from_str(resumed.output.as_deref().unwrap()).unwrap();
    assert_eq!(results[0], json!({"ok": "1"}), "{results}");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "the root ran, live");
    let tasks: i64 = sql(&db, "SELECT COUNT(*) FROM tasks WHERE parent_id IS NULL");
    assert_eq!(tasks, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_run_and_its_root_task_are_written_in_one_transaction() {
    let dir = TempDir::new("integrity-atomic");
    let db = dir.join("ledger.db");
    let runs = Arc::new(AtomicU64::new(0));
    let host = counting_host(&db, &runs).unwrap();
    // Make writing the root task fail: the run row must not stay behind without it.
    sql_batch(
        &db,
        "CREATE TRIGGER no_tasks BEFORE INSERT ON tasks
             BEGIN SELECT RAISE(ABORT, 'injected: cannot write the root task'); END;",
    );
    let error = host
        .run_file(&example("hello"), "x", RunOptions::default())
        .await
        .expect_err("the root task cannot be written");
    assert!(format!("{error:#}").contains("injected"), "{error:#}");
    assert_eq!(sql::<i64>(&db, "SELECT COUNT(*) FROM runs"), 0);

    sql_batch(&db, "DROP TRIGGER no_tasks");
    let report = host
        .run_file(&example("hello"), "x", RunOptions::default())
        .await
        .unwrap();
    assert_eq!(report.status, Status::Completed);
    let both: i64 = sql(
        &db,
        "SELECT COUNT(*) FROM runs r JOIN tasks t ON t.run_id = r.run_id AND t.task_id = 1",
    );
    assert_eq!(both, 1);
}
