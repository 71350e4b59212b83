//! Section 14: a cluster on one PostgreSQL ledger (issue 14). Needs a server:
//! `AGENTFLOW_BENCH_POSTGRES` (or `AGENTFLOW_TEST_POSTGRES`) names an admin URL, e.g.
//! what `.ci/postgres start` prints; each figure gets a database of its own there.
//!
//! - Throughput: `runs` researcher runs (4 tasks each, mock LLM) submitted, then 1, 2
//!   and 4 workers (`runs::worker::work`, one `Host` each, in this process) started at
//!   once; runs/s and tasks/s from the first worker's start to the last run's end.
//! - Children spread over workers: one run spawning `children` children that run
//!   apart (a budget share each, at the deepest level, one LLM call each), offered to
//!   1, 2 and 4 workers; children/s from the first worker's start to the run's end.
//! - Takeover: a run whose worker "died" (its lease held by a holder that stopped
//!   renewing it, the run left mid-way in the ledger) while a worker waits for work;
//!   from the moment the lease expires to the run being claimed, and to the run being
//!   completed by replay.

use agentflow::ledger::Connection;
use agentflow::ledger::leases::{Holder, LEASE_TTL};
use agentflow::runs::worker::{self, SubmitOptions, WorkerOptions};
use agentflow::{Host, HostConfig};
use agentflow_tests::example;
use std::time::{Duration, Instant};

/// What section 14 measured.
pub struct ClusterFigures {
    /// (workers, runs/s, tasks/s)
    pub throughput: Vec<(usize, f64, f64)>,
    /// (workers, offered children/s)
    pub spread: Vec<(usize, f64)>,
    pub claimed: Vec<Duration>,
    pub completed: Vec<Duration>,
}

/// The admin URL of the benchmark's server, if one is configured.
pub fn server() -> Option<String> {
    std::env::var("AGENTFLOW_BENCH_POSTGRES")
        .or_else(|_| std::env::var("AGENTFLOW_TEST_POSTGRES"))
        .ok()
}

/// A fresh database on the server; its URL.
fn fresh_database(admin: &str, name: &str) -> String {
    let conn = Connection::connect_postgres(admin).unwrap();
    conn.execute_batch(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .unwrap();
    conn.execute_batch(&format!("CREATE DATABASE {name}"))
        .unwrap();
    format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
}

fn host(url: &str, cache: &std::path::Path) -> Host {
    let config = HostConfig {
        cache_dir: Some(cache.to_path_buf()),
        ..HostConfig::default()
    };
    Host::new(config, url).unwrap()
}

fn one<T: rusqlite::types::FromSql>(url: &str, sql: &str) -> T {
    Connection::connect_postgres(url)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

fn options(idle: Duration) -> WorkerOptions {
    WorkerOptions {
        slots: 2,
        poll: Duration::from_millis(200),
        exit_when_idle: Some(idle),
        drain: Duration::ZERO,
    }
}

/// Runs/s and tasks/s of `workers` workers draining `runs` submitted runs.
async fn throughput(
    admin: &str,
    cache: &std::path::Path,
    workers: usize,
    runs: usize,
) -> (f64, f64) {
    let url = fresh_database(admin, &format!("agentflow_bench_{workers}w"));
    let bytes = std::fs::read(example("researcher")).unwrap();
    let submitter = host(&url, cache);
    for i in 0..runs {
        let input = format!("question {i}");
        worker::submit(
            submitter.runtime(),
            submitter.ledger(),
            "researcher",
            bytes.clone(),
            &input,
            &SubmitOptions::default(),
        )
        .await
        .unwrap();
    }
    let seconds = drain(&url, cache, workers, &options(Duration::from_millis(500))).await;
    let done: i64 = one(&url, "SELECT COUNT(*) FROM runs WHERE status = 'completed'");
    assert_eq!(done as usize, runs, "every submitted run completed");
    let tasks: i64 = one(&url, "SELECT COUNT(*) FROM tasks");
    (runs as f64 / seconds, tasks as f64 / seconds)
}

/// Start `workers` workers (one `Host` each, in this process) on `url` until the queue
/// is drained; seconds from their start to the last run's end.
async fn drain(url: &str, cache: &std::path::Path, workers: usize, opts: &WorkerOptions) -> f64 {
    let hosts: Vec<Host> = (0..workers).map(|_| host(url, cache)).collect();
    let started = agentflow::ledger::now_ms();
    futures_util::future::join_all(
        hosts
            .iter()
            .map(|h| worker::work(h, opts, std::future::pending())),
    )
    .await;
    let ended: i64 = one(url, "SELECT MAX(finished_at) FROM runs");
    (ended - started) as f64 / 1000.0
}

/// Children/s of one run whose `children` children are offered to `workers` workers.
async fn spread(admin: &str, cache: &std::path::Path, workers: usize, children: usize) -> f64 {
    let url = fresh_database(admin, &format!("agentflow_bench_spread_{workers}w"));
    let bytes = std::fs::read(example("scripted")).unwrap();
    let mut ops: Vec<serde_json::Value> = (0..children)
        .map(|k| {
            let child = serde_json::json!([{"llm": {"prompt": format!("child {k}")}}]);
            serde_json::json!({"spawn": {
                "description": format!("child {k}"),
                "input": child.to_string(),
                "budget_usd": 0.01,
            }})
        })
        .collect();
    ops.extend((2..2 + children).map(|id| serde_json::json!({ "wait": id })));
    let submitter = host(&url, cache);
    let run_options = SubmitOptions {
        max_depth: Some(1),
        budget_usd: Some(children as f64),
        max_concurrency: Some(children as u32),
        ..SubmitOptions::default()
    };
    let input = serde_json::Value::Array(ops).to_string();
    worker::submit(
        submitter.runtime(),
        submitter.ledger(),
        "scripted",
        bytes,
        &input,
        &run_options,
    )
    .await
    .unwrap();
    let opts = WorkerOptions {
        slots: 4,
        ..options(Duration::from_millis(500))
    };
    let seconds = drain(&url, cache, workers, &opts).await;
    let offered: i64 = one(
        &url,
        "SELECT COUNT(*) FROM task_offers WHERE done_at IS NOT NULL",
    );
    assert_eq!(offered as usize, children, "every child was offered");
    children as f64 / seconds
}

/// One takeover: lease expiry → claimed, → completed.
async fn takeover(admin: &str, cache: &std::path::Path, i: usize) -> (Duration, Duration) {
    let url = fresh_database(admin, &format!("agentflow_bench_takeover_{i}"));
    let bytes = std::fs::read(example("researcher")).unwrap();
    let h = host(&url, cache);
    let run_id = worker::submit(
        h.runtime(),
        h.ledger(),
        "researcher",
        bytes,
        "why?",
        &SubmitOptions::default(),
    )
    .await
    .unwrap();
    // The run executes once, then is put back mid-way (its tasks unfinished, every
    // call recorded), its lease held by a worker of another machine that stopped.
    worker::work(&h, &options(Duration::ZERO), std::future::pending())
        .await
        .unwrap();
    let conn = Connection::connect_postgres(&url).unwrap();
    conn.execute_batch(
        "UPDATE runs SET status = 'running', output = NULL, finished_at = NULL;
         UPDATE tasks SET status = 'running', output = NULL, finished_at = NULL WHERE task_id = 1;
         UPDATE submissions SET finished_at = NULL, claims = 1",
    )
    .unwrap();
    let dead = Holder {
        host: "a-worker-that-died".into(),
        pid: 1,
    };
    let expires_in = Duration::from_millis(700);
    let heartbeat =
        agentflow::ledger::now_ms() - LEASE_TTL.as_millis() as i64 + expires_in.as_millis() as i64;
    conn.execute(
        "UPDATE leases SET host = ?1, pid = ?2, heartbeat_at = ?3",
        rusqlite::params![dead.host, dead.pid, heartbeat],
    )
    .unwrap();
    let worker_host = host(&url, cache);
    let expiry = Instant::now() + expires_in;
    let watch = async {
        let mut claimed = None;
        loop {
            let claims: i64 = one(&url, "SELECT claims FROM submissions");
            if claims > 1 && claimed.is_none() {
                claimed = Some(Instant::now().saturating_duration_since(expiry));
            }
            let status: String = conn
                .query_row(
                    "SELECT status FROM runs WHERE run_id = ?1",
                    [&run_id],
                    |r| r.get(0),
                )
                .unwrap();
            if status == "completed" {
                let done = Instant::now().saturating_duration_since(expiry);
                return (claimed.unwrap_or(done), done);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let waiting = options(Duration::from_secs(2));
    let (figures, _) = tokio::join!(
        watch,
        worker::work(&worker_host, &waiting, std::future::pending())
    );
    figures
}

/// Section 14's figures, or `None` without a server.
pub async fn figures(
    dir: &std::path::Path,
    runs: usize,
    takeovers: usize,
) -> Option<ClusterFigures> {
    let admin = server()?;
    let cache = dir.join("cache");
    let mut throughput_figures = Vec::new();
    for workers in [1, 2, 4] {
        let (r, t) = throughput(&admin, &cache, workers, runs).await;
        throughput_figures.push((workers, r, t));
    }
    let mut spread_figures = Vec::new();
    for workers in [1, 2, 4] {
        spread_figures.push((workers, spread(&admin, &cache, workers, 60).await));
    }
    let (mut claimed, mut completed) = (Vec::new(), Vec::new());
    for i in 0..takeovers {
        let (c, d) = takeover(&admin, &cache, i).await;
        claimed.push(c);
        completed.push(d);
    }
    Some(ClusterFigures {
        throughput: throughput_figures,
        spread: spread_figures,
        claimed,
        completed,
    })
}
