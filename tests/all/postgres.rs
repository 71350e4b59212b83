//! The PostgreSQL ledger (issue 14): the same agents, commands and crash guarantees
//! as on SQLite, against a real PostgreSQL server. `.ci/run` starts a throwaway server
//! (`.ci/postgres start`) and passes its URL in `AGENTFLOW_TEST_POSTGRES`; each test
//! makes a database of its own there. Without the variable these tests say so and
//! pass without running (a developer machine without PostgreSQL), unless
//! `AGENTFLOW_REQUIRE_POSTGRES=1`, which `.ci/run` sets.

use crate::durability::deploy;
use crate::support::cli::*;
pub(crate) use crate::support::pg::PgDb;
use crate::support::*;
use serde_json::Value;
use std::path::Path;
use std::process::Output;

const QUESTION: &str = "Why sandbox AI agents?";

fn researcher(db: &Path) -> Output {
    agentflow()
        .args(["run"])
        .arg(example("researcher"))
        .args(["--input", QUESTION, "--json", "--db"])
        .arg(db)
        .output()
        .unwrap()
}

/// A run on PostgreSQL gives the output a run on SQLite gives, and the reading
/// commands — runs, inspect, events, checkpoints, approvals, reviews, conflicts,
/// metrics, drift, why, diff, recover, check — read it back; `backup` points to
/// `pg_dump`.
#[test]
fn an_agent_runs_on_postgres_and_every_reading_command_reads_it() {
    let Some(pg) = PgDb::new("reading") else {
        return;
    };
    let dir = TempDir::new("pg-reading");
    let on_sqlite = researcher(&dir.join("l.db"));
    assert!(on_sqlite.status.success(), "{}", stderr(&on_sqlite));
    let on_postgres = researcher(&pg.db());
    assert!(on_postgres.status.success(), "{}", stderr(&on_postgres));
    let (sqlite_run, pg_run) = (stdout_json(&on_sqlite), stdout_json(&on_postgres));
    assert_eq!(
        pg_run["output"], sqlite_run["output"],
        "same output on both backends"
    );
    assert_eq!(pg_run["status"], "completed");
    let run_id = pg_run["run_id"].as_str().unwrap().to_owned();

    // The ledger's rows are in PostgreSQL, as on SQLite.
    let tasks: i64 = pg.one("SELECT COUNT(*) FROM tasks WHERE status = 'completed'");
    assert_eq!(tasks, 4);
    let pg_events: i64 = pg.one("SELECT COUNT(*) FROM events");
    let sqlite_events: i64 = sql(&dir.join("l.db"), "SELECT COUNT(*) FROM events");
    assert_eq!(pg_events, sqlite_events, "the same events recorded");
    let blobs: i64 = pg.one("SELECT COUNT(*) FROM blobs");
    assert!(blobs >= 1, "the component is stored as a blob");

    let runs = agentflow_on(&pg.db(), ["runs", "--json"]);
    assert!(runs.status.success(), "{}", stderr(&runs));
    let listed = stdout_json(&runs);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["run_id"], run_id.as_str());

    for args in [
        vec!["inspect", &run_id],
        vec!["events", &run_id],
        vec!["checkpoints", &run_id],
        vec!["approvals", "--all"],
        vec!["reviews", "--all"],
        vec!["conflicts", "--all"],
        vec!["metrics"],
        vec!["drift"],
    ] {
        let out = agentflow_on(&pg.db(), &args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let inspect = stdout(&agentflow_on(&pg.db(), ["inspect", &run_id]));
    assert!(inspect.contains("researcher"), "{inspect}");
    let events = stdout(&agentflow_on(&pg.db(), ["events", &run_id]));
    assert!(events.contains("llm.complete"), "{events}");

    // A run with side effects: `why` walks back from one, `diff` compares two runs,
    // `recover` prints a plan, `check` checks the database.
    std::fs::create_dir_all(dir.join("ws")).unwrap();
    let deployed = deploy(&pg.db(), &dir.join("ws"), &[], &[]);
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    let deploy_id = stdout_json(&deployed)["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let why = agentflow_on(&pg.db(), ["why", &deploy_id]);
    assert!(why.status.success(), "{}", stderr(&why));
    assert!(stdout(&why).contains("tasks.spawn"), "{}", stdout(&why));
    let diff = agentflow_on(&pg.db(), ["diff", &run_id, &deploy_id]);
    assert!(diff.status.success(), "{}", stderr(&diff));
    assert!(stdout(&diff).contains("divergence"), "{}", stdout(&diff));
    let plan = agentflow_on(&pg.db(), ["recover", &deploy_id]);
    assert!(
        stdout(&plan).contains("nothing to recover"),
        "{}",
        stdout(&plan)
    );
    let check = agentflow()
        .arg("check")
        .arg(&pg.url)
        .arg("--json")
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
    let check = stdout_json(&check);
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["runs"], 2, "{check}");
    let backup = agentflow()
        .arg("backup")
        .arg(&pg.url)
        .arg(dir.join("copy.db"))
        .output()
        .unwrap();
    assert!(!backup.status.success());
    assert!(stderr(&backup).contains("pg_dump"), "{}", stderr(&backup));
}

/// The host killed at the ledger's crash points on PostgreSQL — mid tool effect, at a
/// spawn, at the barrier, after buffered writes, after the root finished — and the run
/// resumed from the PostgreSQL ledger: every cloud resource created exactly once
/// (counted where the cloud tool acts), the uncrashed run's output, every task once.
#[test]
fn crashes_at_the_ledgers_points_resume_from_postgres_with_each_effect_once() {
    let Some(_) = PgDb::new("probe") else { return };
    let base = TempDir::new("pg-crash-base");
    std::fs::create_dir_all(base.join("ws")).unwrap();
    let baseline = deploy(&base.join("b.db"), &base.join("ws"), &[], &[]);
    assert!(baseline.status.success(), "{}", stderr(&baseline));
    let baseline = stdout_json(&baseline);
    let mut points: Vec<(String, String)> = Vec::new();
    for (point, count) in [
        ("tool-effect", 3),
        ("spawn-created", 3),
        ("root-finished", 1),
        ("buffered-unflushed", 4),
        ("barrier", 3),
    ] {
        for k in 1..=count {
            points.push((point.into(), k.to_string()));
        }
    }
    let mut duplicates = 0;
    for (point, k) in &points {
        let label = format!("at {point} #{k}");
        let pg = PgDb::new("crash").unwrap();
        let dir = TempDir::new("pg-crash");
        let ws = dir.join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        let env = [
            ("AGENTFLOW_CRASH_AT", point.clone()),
            ("AGENTFLOW_CRASH_AT_COUNT", k.clone()),
        ];
        let crashed = deploy(&pg.db(), &ws, &env, &[]);
        assert!(!crashed.status.success(), "{label}: the host was killed");
        assert!(
            stderr(&crashed).contains(&format!("aborting at point `{point}` (hit {k})")),
            "{label}: {}",
            stderr(&crashed)
        );
        let in_doubt: i64 = pg.one(
            "SELECT COUNT(*) FROM events i WHERE i.kind = 'tools.intent' AND NOT EXISTS (
                 SELECT 1 FROM events c WHERE c.run_id = i.run_id AND c.task_id = i.task_id
                   AND c.kind = 'tools.call' AND c.seq > i.seq)",
        );
        let run_id: String = pg.one("SELECT run_id FROM runs");
        let resumed = agentflow_on(&pg.db(), ["resume", &run_id, "--json"]);
        assert!(resumed.status.success(), "{label}: {}", stderr(&resumed));
        let resumed = stdout_json(&resumed);
        assert_eq!(
            resumed["output"], baseline["output"],
            "{label}: the uncrashed output"
        );
        duplicates += check_effects(&pg, &ws, &label, in_doubt as usize);
    }
    println!(
        "postgres crash test: {} crash points, {duplicates} duplicated side effects",
        points.len()
    );
    assert_eq!(duplicates, 0);
}

/// Each resource's cloud call happened once (one more only for a call the crash left
/// in doubt), none is missing, and the ledger holds each task's effects once.
fn check_effects(pg: &PgDb, ws: &Path, label: &str, in_doubt: usize) -> usize {
    let calls = std::fs::read_to_string(ws.join("cloud.calls")).unwrap_or_default();
    let log = std::fs::read_to_string(ws.join("cloud.log")).unwrap_or_default();
    let mut invocations = 0;
    for i in 1..=3 {
        let create = format!("create shop-node-{i} ");
        invocations += calls.lines().filter(|l| l.starts_with(&create)).count();
        assert!(
            log.lines().any(|l| l.starts_with(&create)),
            "{label}: resource {i} lost"
        );
    }
    let conn = pg.conn();
    let count = |kind: &str, task: i64| -> i64 {
        conn.query_row(
            "SELECT COUNT(*) FROM events WHERE kind = ?1 AND task_id = ?2",
            rusqlite::params![kind, task],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(
        count("tasks.spawn", 1),
        3,
        "{label}: no spawn lost or repeated"
    );
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
    }
    let completed: i64 = pg.one("SELECT COUNT(*) FROM tasks WHERE status = 'completed'");
    assert_eq!(completed, 4, "{label}: every task completed once");
    let status: String = pg.one("SELECT status FROM runs");
    assert_eq!(status, "completed", "{label}");
    invocations.saturating_sub(3).saturating_sub(in_doubt)
}

/// A second host on the same PostgreSQL database sees the first one's runs; a database
/// of an older schema is migrated by the first host that opens it; one a newer
/// agentflow wrote is refused with a clear error.
#[test]
fn hosts_share_one_database_and_a_newer_schema_is_refused() {
    let Some(pg) = PgDb::new("shared") else {
        return;
    };
    use agentflow::ledger::dashboard::{ledger_fingerprint, run_fingerprint};
    let a = researcher(&pg.db());
    // What `agentflow serve` polls to push live updates changes with the second run.
    let seen = ledger_fingerprint(&pg.conn()).unwrap();
    let b = researcher(&pg.db());
    assert!(a.status.success() && b.status.success(), "{}", stderr(&b));
    assert_ne!(ledger_fingerprint(&pg.conn()).unwrap(), seen);
    let a_id = stdout_json(&a)["run_id"].as_str().unwrap().to_owned();
    let page = run_fingerprint(&pg.conn(), &a_id).unwrap();
    assert!(
        page.as_deref().is_some_and(|f| f.starts_with("completed/")),
        "{page:?}"
    );
    let listed = stdout_json(&agentflow_on(&pg.db(), ["runs", "--json"]));
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    let newest: Value = listed[0].clone();
    assert_eq!(newest["run_id"], stdout_json(&b)["run_id"]);

    // Back to schema 4 (before `installed_tools`): opening it runs migration 5.
    pg.conn()
        .execute_batch(
            "DELETE FROM agentflow_schema; INSERT INTO agentflow_schema (version) VALUES (4);
             DROP TABLE installed_tools",
        )
        .unwrap();
    let old = agentflow()
        .arg("check")
        .arg(&pg.url)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(
        stdout_json(&old)["schema_version"],
        4,
        "check changes nothing"
    );
    let listed = agentflow_on(&pg.db(), ["tools", "list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let version: i64 = pg.one("SELECT MAX(version) FROM agentflow_schema");
    assert_eq!(version, agentflow::ledger::schema::SCHEMA_VERSION);
    let tools: i64 = pg.one("SELECT COUNT(*) FROM installed_tools");
    assert_eq!(tools, 0, "the migration created the table");
    let runs_kept: i64 = pg.one("SELECT COUNT(*) FROM runs");
    assert_eq!(runs_kept, 2, "and kept the runs");
    // A cluster table of an earlier release, without a column added since: the next
    // host to open the database adds it.
    pg.conn()
        .execute_batch("ALTER TABLE submissions DROP COLUMN start_failures")
        .unwrap();
    assert!(agentflow_on(&pg.db(), ["runs"]).status.success());
    let added: i64 = pg.one(
        "SELECT COUNT(*) FROM information_schema.columns
          WHERE table_name = 'submissions' AND column_name = 'start_failures'",
    );
    assert_eq!(added, 1, "the missing column was added");

    pg.conn()
        .execute_batch("INSERT INTO agentflow_schema (version) VALUES (999)")
        .unwrap();
    let refused = agentflow_on(&pg.db(), ["runs"]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("newer"), "{}", stderr(&refused));
}

/// A URL that reaches no server is an error naming it (without its password).
#[test]
fn an_unreachable_postgres_url_is_a_clear_error() {
    let out = agentflow_on(
        Path::new("postgres://agentflow:secret@127.0.0.1:1/nowhere"),
        ["runs"],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("127.0.0.1:1/nowhere"), "{err}");
    assert!(
        !err.contains("secret"),
        "the password is not printed: {err}"
    );
}
