//! A cluster on one PostgreSQL ledger (issue 14): `agentflow submit` queues runs,
//! `agentflow worker` processes claim and execute them, and a worker killed with
//! SIGKILL mid-run loses its runs to the others, which resume them by replay — every
//! side effect once, the output of an uncrashed run. Needs the test server of
//! [`crate::postgres`].

use crate::durability::{DEPLOY, deploy};
use crate::postgres::PgDb;
use crate::support::cli::*;
use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// `agentflow submit <example agent> ARGS --db URL`: the run id it printed.
pub(crate) fn submit(pg: &PgDb, agent: &str, args: &[&str]) -> String {
    let out = agentflow()
        .arg("submit")
        .arg(example(agent))
        .args(args)
        .args(["--db", &pg.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "submit: {}", stderr(&out));
    let run_id = stdout(&out).trim().to_string();
    assert_eq!(run_id.len(), 32, "a run id: {run_id}");
    run_id
}

/// A worker process (its stderr in `dir/worker-N.log`).
pub(crate) fn worker(pg: &PgDb, dir: &Path, n: usize, config: &Path, idle_exit: &str) -> Child {
    worker_with(pg, dir, n, config, &["--exit-when-idle", idle_exit])
}

/// A worker process with `args` (its stderr in `dir/worker-N.log`).
fn worker_with(pg: &PgDb, dir: &Path, n: usize, config: &Path, args: &[&str]) -> Child {
    let log = std::fs::File::create(dir.join(format!("worker-{n}.log"))).unwrap();
    agentflow()
        .args(["worker", "--slots", "1", "--db", &pg.url])
        .args(args)
        .arg("--config")
        .arg(config)
        .env("AGENTFLOW_LOG", "agentflow=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Wait until no submission is open (every run finished); panics after `limit`.
pub(crate) fn wait_for_the_queue(pg: &PgDb, dir: &Path, limit: Duration) {
    let started = Instant::now();
    loop {
        let open: i64 = pg.one("SELECT COUNT(*) FROM submissions WHERE finished_at IS NULL");
        if open == 0 {
            return;
        }
        if started.elapsed() > limit {
            let logs: String = (0..64)
                .filter_map(|n| std::fs::read_to_string(dir.join(format!("worker-{n}.log"))).ok())
                .collect::<Vec<_>>()
                .join("\n---\n");
            panic!("{open} submissions still open after {limit:?}; worker logs:\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Submitted runs wait until a worker claims them; two workers share the queue, each
/// run is executed once and completes with the output `agentflow run` gives.
#[test]
fn submitted_runs_are_executed_once_by_a_pool_of_workers() {
    let Some(pg) = PgDb::new("pool") else { return };
    let dir = TempDir::new("cluster-pool");
    let config = dir.file("w.toml", "[llm.mock]\nlatency_ms = 300\n");
    let direct = agentflow()
        .args(["run"])
        .arg(example("researcher"))
        .args(["--input", "q0", "--json", "--config"])
        .arg(&config)
        .arg("--db")
        .arg(dir.join("direct.db"))
        .output()
        .unwrap();
    assert!(direct.status.success(), "{}", stderr(&direct));
    let mut ids: Vec<String> = (0..4)
        .map(|i| submit(&pg, "researcher", &["--input", &format!("q{i}")]))
        .collect();
    let queued: i64 = pg.one("SELECT COUNT(*) FROM runs");
    assert_eq!(queued, 0, "submit executes nothing");
    let listing = agentflow_on(&pg.db(), ["runs"]);
    assert!(
        stderr(&listing).contains("4 submitted run(s) wait for a worker"),
        "{}",
        stderr(&listing)
    );
    // Each run takes over a second (5 LLM calls of 300 ms, 3 of them in parallel), so
    // the second worker is up before the first could have drained the queue.
    let mut workers: Vec<Child> = (0..2)
        .map(|n| worker(&pg, dir.path(), n, &config, "2"))
        .collect();
    ids.extend((4..6).map(|i| submit(&pg, "researcher", &["--input", &format!("q{i}")])));
    wait_for_the_queue(&pg, dir.path(), Duration::from_secs(120));
    for w in &mut workers {
        assert!(w.wait().unwrap().success(), "a worker exits when idle");
    }
    let completed: i64 = pg.one("SELECT COUNT(*) FROM runs WHERE status = 'completed'");
    assert_eq!(completed, 6);
    let claims: i64 = pg.one("SELECT SUM(claims) FROM submissions");
    assert_eq!(claims, 6, "each run claimed once");
    let listed = stdout_json(&agentflow_on(&pg.db(), ["runs", "--json"]));
    let listed: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    for id in &ids {
        assert!(listed.contains(&id.as_str()), "run {id} listed");
    }
    let first: String = pg
        .conn()
        .query_row(
            "SELECT output FROM runs WHERE run_id = ?1",
            [&ids[0]],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        Some(first.as_str()),
        stdout_json(&direct)["output"].as_str()
    );
    let holders: i64 = pg.one("SELECT COUNT(DISTINCT pid) FROM leases");
    assert_eq!(holders, 2, "both workers executed runs");
}

/// Three workers execute deployer runs (three cloud resources each, created by a
/// side-effecting tool) while workers are killed with SIGKILL at random moments, at
/// least 20 times with runs in their hands, and replaced. Every run completes with the
/// uncrashed output; each resource is really created once (the cloud's API log counts
/// every call; a call a killed worker left in doubt is re-sent with its idempotency
/// key and seen as a repeat, never created twice); each task's effects are recorded
/// once.
#[test]
fn workers_killed_mid_run_are_taken_over_by_replay_with_each_effect_once() {
    let Some(pg) = PgDb::new("takeover") else {
        return;
    };
    let dir = TempDir::new("cluster-takeover");
    let config = dir.file("w.toml", "[llm.mock]\nlatency_ms = 150\n");
    let base = dir.join("base");
    std::fs::create_dir_all(base.join("ws")).unwrap();
    let config_args = ["--config", config.to_str().unwrap()];
    let baseline = deploy(&base.join("b.db"), &base.join("ws"), &[], &config_args);
    assert!(baseline.status.success(), "{}", stderr(&baseline));
    let baseline = stdout_json(&baseline);

    // Runs are submitted as the workers take them, so there is always work in hand.
    let (mut ids, mut workspaces) = (Vec::new(), Vec::<PathBuf>::new());
    let submit_deploy = |ids: &mut Vec<String>, workspaces: &mut Vec<PathBuf>| {
        let ws = dir.path().join(format!("ws-{}", workspaces.len()));
        std::fs::create_dir_all(&ws).unwrap();
        let args = [
            "--input",
            DEPLOY,
            "--grant",
            "cloud",
            "--workspace",
            ws.to_str().unwrap(),
        ];
        ids.push(submit(&pg, "deployer", &args));
        workspaces.push(ws);
    };
    for _ in 0..6 {
        submit_deploy(&mut ids, &mut workspaces);
    }
    let mut next = 0;
    let mut workers: Vec<(usize, Child)> = (0..3)
        .map(|_| {
            next += 1;
            (next, worker(&pg, dir.path(), next, &config, "3"))
        })
        .collect();
    // Kill a worker holding a run at a pseudo-random moment, 20 times or more.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut random = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let (mut kills, started) = (0, Instant::now());
    while kills < 20 && started.elapsed() < Duration::from_secs(200) {
        let open: i64 = pg.one("SELECT COUNT(*) FROM submissions WHERE finished_at IS NULL");
        if open < 4 {
            submit_deploy(&mut ids, &mut workspaces);
        }
        std::thread::sleep(Duration::from_millis(100 + random(600)));
        let slot = random(3) as usize;
        let pid = workers[slot].1.id();
        let open_held: i64 = pg
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM leases l JOIN runs r ON r.run_id = l.run_id
                 WHERE l.pid = ?1 AND r.status = 'running'",
                [pid as i64],
                |r| r.get(0),
            )
            .unwrap();
        if open_held == 0 {
            continue;
        }
        workers[slot].1.kill().unwrap(); // SIGKILL
        workers[slot].1.wait().unwrap();
        kills += 1;
        next += 1;
        workers[slot] = (next, worker(&pg, dir.path(), next, &config, "3"));
    }
    let runs = ids.len();
    assert!(
        kills >= 20,
        "only {kills} kills hit a worker with a run in its hands"
    );
    wait_for_the_queue(&pg, dir.path(), Duration::from_secs(240));
    for (_, w) in &mut workers {
        let _ = w.wait();
    }

    let conn = pg.conn();
    let (mut repeats, mut taken_over) = (0, 0);
    for (id, ws) in ids.iter().zip(&workspaces) {
        let (status, output, claims, error): (String, Option<String>, i64, Option<String>) = conn
            .query_row(
                "SELECT r.status, r.output, s.claims, r.error FROM runs r
                   JOIN submissions s USING (run_id) WHERE r.run_id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(status, "completed", "run {id}: {error:?}");
        assert_eq!(
            output.as_deref(),
            baseline["output"].as_str(),
            "run {id}: the uncrashed output"
        );
        taken_over += usize::from(claims > 1);
        let calls = std::fs::read_to_string(ws.join("cloud.calls")).unwrap_or_default();
        let log = std::fs::read_to_string(ws.join("cloud.log")).unwrap_or_default();
        for i in 1..=3 {
            let create = format!("create shop-node-{i} ");
            let created: Vec<&str> = calls.lines().filter(|l| l.starts_with(&create)).collect();
            // The cloud's state (`cloud.log`) holds each resource once: created once.
            assert_eq!(
                log.lines().filter(|l| l.starts_with(&create)).count(),
                1,
                "run {id}: resource {i} in the cloud once: {calls}"
            );
            // Its API log (`cloud.calls`) is written just before the state: a worker
            // killed between the two leaves a call that created nothing, answered
            // `repeated=false` again when the call in doubt is re-sent.
            let real = created
                .iter()
                .filter(|l| l.ends_with("repeated=false"))
                .count();
            assert!(real >= 1, "run {id}: resource {i} created: {calls}");
            repeats += created.len() - real;
        }
        for child in 2..=4 {
            let recorded: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM events WHERE run_id = ?1 AND task_id = ?2 AND kind = 'tools.call'",
                    rusqlite::params![id, child],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(
                recorded, 1,
                "run {id}: child {child} tool result recorded once"
            );
        }
    }
    println!(
        "cluster takeover: {runs} runs, {kills} workers killed mid-run, {taken_over} runs taken over, \
         {repeats} in-doubt calls re-sent as repeats, 0 resources created twice"
    );
    assert!(taken_over >= 1, "some run was taken over");
}

/// A submitted run whose child needs a human's approval waits on its worker; the
/// worker is killed while it waits, another one takes the run over (and waits in its
/// turn), `agentflow approvals` lists the request from the PostgreSQL ledger and
/// `agentflow approve`, another process, decides it: the run goes on on the second
/// worker and completes, the child once.
#[test]
fn a_human_decision_from_the_cli_reaches_the_run_after_its_worker_changed() {
    let Some(pg) = PgDb::new("approval") else {
        return;
    };
    let dir = TempDir::new("cluster-approval");
    let config = dir.file("w.toml", "");
    let ops = serde_json::json!([
        {"spawn": {"description": "pricey", "input": "", "estimated_cost": 0.9}},
        {"wait": 2},
    ]);
    let run_id = submit(
        &pg,
        "scripted",
        &[
            "--input",
            &ops.to_string(),
            "--require-approval-over-usd",
            "0.5",
        ],
    );
    let mut first = worker(&pg, dir.path(), 1, &config, "30");
    let pending = wait_for_listing("approvals", &pg.db());
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{pending}");
    assert_eq!(pending[0]["run_id"], run_id.as_str());
    first.kill().unwrap();
    first.wait().unwrap();
    let mut second = worker(&pg, dir.path(), 2, &config, "1");
    // The second worker holds the run once it has claimed it.
    let started = Instant::now();
    while pg.one::<i64>("SELECT claims FROM submissions") < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the run was not taken over"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let id = pending[0]["id"].to_string();
    let approved = agentflow_on(&pg.db(), ["approve", &id, "--note", "go"]);
    assert!(approved.status.success(), "{}", stderr(&approved));
    wait_for_the_queue(&pg, dir.path(), Duration::from_secs(60));
    assert!(second.wait().unwrap().success());
    let status: String = pg.one("SELECT status FROM runs");
    assert_eq!(status, "completed");
    let child: String = pg.one("SELECT status FROM tasks WHERE task_id = 2");
    assert_eq!(child, "completed", "the approved child ran");
    let spawns: i64 = pg.one("SELECT COUNT(*) FROM events WHERE kind = 'tasks.spawn'");
    assert_eq!(spawns, 1, "the spawn recorded once across the two workers");
}

/// Three workers share one model's token quota (250 tokens per 1 s window, 25 tokens
/// a call): reserved in PostgreSQL, no window of the quota's length holds more than
/// 250 tokens of the workers' reservations together (each decision records the time
/// its cluster reservation was stamped at), nor sees more arrive at the provider — where each
/// worker alone would let 250 through.
#[test]
fn a_token_quota_holds_across_the_workers() {
    use crate::support::fake_http::FakeServer;
    use crate::support::llm::reply_from;
    let Some(pg) = PgDb::new("quota") else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(FakeServer::start(vec![reply_from("quota-model", 5, 20)]));
    let dir = TempDir::new("cluster-quota");
    let config = dir.file(
        "w.toml",
        format!(
            "[llm.scheduler]\nquota_window_ms = 1000\n[llm.endpoints.q.openai]\nbase_url = \"{}/v1\"\n\
             [[llm.models]]\nname = \"metered\"\nprovider = \"q\"\ninput_per_mtok = 1.0\n\
             output_per_mtok = 1.0\ntpm = 250\n",
            server.url()
        ),
    );
    let call = serde_json::json!({"llm": {"prompt": "quota test call", "max_tokens": 20, "max_wait_ms": 30000}});
    let ops = serde_json::Value::Array(vec![call; 8]).to_string();
    for _ in 0..3 {
        submit(&pg, "scripted", &["--input", &ops]);
    }
    let mut workers: Vec<Child> = (0..3)
        .map(|n| worker(&pg, dir.path(), n, &config, "2"))
        .collect();
    wait_for_the_queue(&pg, dir.path(), Duration::from_secs(120));
    for w in &mut workers {
        assert!(w.wait().unwrap().success());
    }
    let completed: i64 = pg.one("SELECT COUNT(*) FROM runs WHERE status = 'completed'");
    assert_eq!(completed, 3);
    let holders: i64 = pg.one("SELECT COUNT(DISTINCT pid) FROM leases");
    assert!(holders >= 2, "the runs ran on several workers ({holders})");
    assert_eq!(server.requests().len(), 24);
    let conn = pg.conn();
    let mut reserved: Vec<i64> = conn
        .prepare("SELECT response FROM events WHERE kind = 'llm.decision'")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|text| {
            let decision: serde_json::Value = serde_json::from_str(&text.unwrap()).unwrap();
            decision["reservation"]["at_ms"].as_i64().unwrap()
        })
        .collect();
    reserved.sort_unstable();
    if reserved.len() != 24 {
        let per_run: Vec<(String, String, i64)> = conn
            .prepare(
                "SELECT run_id, kind, COUNT(*) FROM events GROUP BY run_id, kind ORDER BY 1, 2",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let claims: String =
            pg.one("SELECT string_agg(run_id || ':' || claims, ' ') FROM submissions");
        panic!(
            "{} decisions, not 24: {per_run:?}; claims {claims}",
            reserved.len()
        );
    }
    let worst = most_in_a_window(&reserved, 998);
    assert!(
        worst * 25 <= 250,
        "a window held {} tokens of reservations",
        worst * 25
    );
    let arrivals: Vec<std::time::Instant> = server.requests().iter().map(|r| r.at).collect();
    let seen = most_in_a_window(&arrivals, Duration::from_millis(800));
    assert!(
        seen * 25 <= 250,
        "the provider saw {} tokens in a window",
        seen * 25
    );
}

/// `POST /api/submit` on `agentflow serve` queues a run as `agentflow submit` does, and
/// a worker executes it. An API client of a server with `--token` sends the token as
/// `Authorization: Bearer` and needs no CSRF token; the cookie a browser holds still
/// needs one. A body that is not a component is refused before anything is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_queues_runs_over_http() {
    use base64::Engine as _;
    let Some(pg) = PgDb::new("http_submit") else {
        return;
    };
    let dir = TempDir::new("cluster-http");
    let token = "an-operator-token-long-enough";
    let dashboard = crate::support::browser::Dashboard::start(&pg.db(), &["--token", token]);
    let http = reqwest::Client::new();
    let component = std::fs::read(example("researcher")).unwrap();
    let body = |component: &[u8]| {
        serde_json::json!({
            "agent": "researcher",
            "component_base64": base64::engine::general_purpose::STANDARD.encode(component),
            "input": "q-over-http",
            "options": { "budget_usd": 0.5 },
        })
    };
    let post = |body: &serde_json::Value| http.post(dashboard.at("/api/submit")).json(body);
    // Refused before the body is read: a small body, so the server's early answer
    // never races a client still sending megabytes (hyper then drops the connection).
    let anonymous = post(&body(b"small")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let by_cookie = post(&body(b"small"))
        .header("cookie", format!("agentflow_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        by_cookie.status(),
        403,
        "a cookie still needs the CSRF token"
    );
    let not_a_component = post(&body(b"not a wasm component"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(not_a_component.status(), 400);
    let why = not_a_component.text().await.unwrap();
    assert!(why.contains("error"), "{why}");
    let open: i64 = pg.one("SELECT COUNT(*) FROM submissions");
    assert_eq!(open, 0, "nothing queued by refused requests");

    let accepted = post(&body(&component))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 201);
    let run_id = accepted.json::<serde_json::Value>().await.unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(run_id.len(), 32, "{run_id}");
    let started: i64 = pg.one("SELECT COUNT(*) FROM runs");
    assert_eq!(started, 0, "submit executes nothing");

    let config = dir.file("w.toml", "[llm.mock]\n");
    let mut w = worker(&pg, dir.path(), 0, &config, "1");
    wait_for_the_queue(&pg, dir.path(), Duration::from_secs(120));
    assert!(w.wait().unwrap().success());
    let (status, budget): (String, f64) = pg
        .conn()
        .query_row(
            "SELECT status, budget_usd FROM runs WHERE run_id = ?1",
            [&run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(status, "completed");
    assert_eq!(budget, 0.5, "the options travelled with the submission");
}

/// A worker outlives its database sessions: the server drops every session of the
/// ledger's database (`pg_terminate_backend`, what a restart or a failover does to
/// clients) while the worker waits for work, and the worker goes on — it executes
/// the run submitted afterwards, on sessions opened anew.
#[test]
fn a_worker_goes_on_when_the_database_drops_its_sessions() {
    let Some(pg) = PgDb::new("sessions") else {
        return;
    };
    let dir = TempDir::new("cluster-sessions");
    let config = dir.file("w.toml", "[llm.mock]\n");
    let mut w = worker(&pg, dir.path(), 0, &config, "6");
    let first = submit(&pg, "researcher", &["--input", "before"]);
    wait_for_the_queue(&pg, dir.path(), Duration::from_secs(60));
    let dropped: i64 = pg.one(
        "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()) AS t",
    );
    assert!(dropped >= 1, "the worker's sessions were dropped");
    let second = submit(&pg, "researcher", &["--input", "after"]);
    wait_for_the_queue(&pg, dir.path(), Duration::from_secs(60));
    assert!(
        w.wait().unwrap().success(),
        "the worker exits when idle, not on the loss"
    );
    for run_id in [&first, &second] {
        let status: String = pg
            .conn()
            .query_row("SELECT status FROM runs WHERE run_id = ?1", [run_id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(status, "completed", "run {run_id}");
    }
    let log = std::fs::read_to_string(dir.join("worker-0.log")).unwrap();
    assert!(log.contains("reconnected"), "{log}");
}

/// Wait until `query` (one number) is at least 1; panics after a minute.
fn wait_for(pg: &PgDb, query: &str, run_id: &str) {
    let started = Instant::now();
    while pg
        .conn()
        .query_row(query, [run_id], |r| r.get::<_, i64>(0))
        .unwrap()
        < 1
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{query} for {run_id}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A worker told to stop (SIGTERM) claims nothing more and lets the run in hand
/// finish; with no time left to drain (`--drain-secs 0`) it hands its run back —
/// lease let go before it exits, not 15 s later — and the next worker resumes it by
/// replay to completion.
#[test]
fn a_stopped_worker_drains_or_hands_its_runs_back() {
    let Some(pg) = PgDb::new("drain") else {
        return;
    };
    let dir = TempDir::new("cluster-drain");
    let config = dir.file("w.toml", "[llm.mock]\nlatency_ms = 400\n");
    let term = |w: &Child| unsafe {
        libc::kill(w.id() as i32, libc::SIGTERM);
    };
    let log = |n: usize| std::fs::read_to_string(dir.join(&format!("worker-{n}.log"))).unwrap();

    let mut patient = worker_with(&pg, dir.path(), 0, &config, &["--drain-secs", "60"]);
    let a = submit(&pg, "researcher", &["--input", "a"]);
    wait_for(&pg, "SELECT COUNT(*) FROM runs WHERE run_id = ?1", &a);
    let b = submit(&pg, "researcher", &["--input", "b"]);
    term(&patient);
    assert!(patient.wait().unwrap().success(), "{}", log(0));
    let status = |run_id: &str| -> Option<String> {
        pg.conn()
            .query_row("SELECT status FROM runs WHERE run_id = ?1", [run_id], |r| {
                r.get(0)
            })
            .ok()
    };
    assert_eq!(status(&a).as_deref(), Some("completed"), "{}", log(0));
    assert_eq!(
        status(&b),
        None,
        "nothing claimed once stopping: {}",
        log(0)
    );
    assert!(log(0).contains("handed back 0"), "{}", log(0));

    let mut hasty = worker_with(&pg, dir.path(), 1, &config, &["--drain-secs", "0"]);
    wait_for(&pg, "SELECT COUNT(*) FROM events WHERE run_id = ?1", &b);
    term(&hasty);
    assert!(hasty.wait().unwrap().success(), "{}", log(1));
    assert!(log(1).contains("handed back 1"), "{}", log(1));
    assert_eq!(status(&b).as_deref(), Some("running"));
    let leases: i64 = pg
        .conn()
        .query_row("SELECT COUNT(*) FROM leases WHERE run_id = ?1", [&b], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(leases, 0, "the lease was let go");

    let mut next = worker(&pg, dir.path(), 2, &config, "2");
    wait_for_the_queue(&pg, dir.path(), Duration::from_secs(60));
    assert!(next.wait().unwrap().success());
    assert_eq!(status(&b).as_deref(), Some("completed"), "{}", log(2));
    let claims: i64 = pg
        .conn()
        .query_row(
            "SELECT claims FROM submissions WHERE run_id = ?1",
            [&b],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(claims, 2, "claimed, handed back, claimed and resumed");
    assert!(log(2).contains("resuming run"), "{}", log(2));
}

/// Children run on other workers, and one budget holds across them: a run with a
/// $0.015 budget spawns 51 children at its deepest level, each asking for a $0.00038
/// share of its own — one of them taking another's output as its input — and making
/// four LLM calls (each reserves $0.000304 and costs
/// about $0.00005, so a share fits two). The run's worker carves each share out
/// of the run's budget before offering the child (so only the shares that fit are
/// given), the children are claimed by all three workers, and each worker holds the
/// child it executes to its share. Checked in the ledger: every child that started
/// completed once, no child spent more than its share, the run spent less than its
/// budget, and at least one child was refused a call by its share on a worker other
/// than the run's.
#[test]
fn children_spread_over_the_workers_stay_within_one_budget() {
    let Some(pg) = PgDb::new("spread") else {
        return;
    };
    let dir = TempDir::new("cluster-spread");
    let config = dir.file("w.toml", "[llm.mock]\nlatency_ms = 100\n");
    let call = |k: usize, i: usize| serde_json::json!({"llm": {"prompt": format!("child {k} call {i}"), "model": "mock-small", "max_tokens": 200}});
    let mut ops: Vec<serde_json::Value> = (0..50)
        .map(|k| {
            // A pause first: no child ends (handing back its unspent share) before
            // the root has asked for every share, however slow the machine.
            let child: Vec<_> = std::iter::once(serde_json::json!({"sleep_ms": 3000}))
                .chain((0..4).map(|i| call(k, i)))
                .collect();
            serde_json::json!({"spawn": {
                "description": format!("child {k}"),
                "input": serde_json::Value::Array(child).to_string(),
                "budget_usd": 0.00038,
            }})
        })
        .collect();
    // Task 3 takes task 2's output as its input (`data-from`): composed on the run's
    // worker, run on whichever worker claims it.
    ops.insert(
        1,
        serde_json::json!({"spawn": {
            "description": "takes child 0's output",
            "input": "from child 0:",
            "data_from": [2],
            "budget_usd": 0.00038,
        }}),
    );
    ops.extend((2..53).map(|id| serde_json::json!({ "wait": id })));
    let input = serde_json::Value::Array(ops).to_string();
    let run_id = submit(
        &pg,
        "scripted",
        &[
            "--input",
            &input,
            "--max-depth",
            "1",
            "--budget-usd",
            "0.015",
        ],
    );
    let mut workers: Vec<Child> = (0..3)
        .map(|n| worker(&pg, dir.path(), n, &config, "3"))
        .collect();
    wait_for_the_queue(&pg, dir.path(), Duration::from_secs(240));
    for w in &mut workers {
        assert!(w.wait().unwrap().success());
    }
    let conn = pg.conn();
    let status: String = conn
        .query_row(
            "SELECT status FROM runs WHERE run_id = ?1",
            [&run_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(status, "completed");
    let children: Vec<(i64, String, f64, f64)> = conn
        .prepare(
            "SELECT t.task_id, t.status, t.budget_usd,
                    (SELECT COALESCE(SUM(e.cost_usd), 0) FROM events e
                      WHERE e.run_id = t.run_id AND e.task_id = t.task_id)
             FROM tasks t WHERE t.run_id = ?1 AND t.task_id > 1 ORDER BY t.task_id",
        )
        .unwrap()
        .query_map([&run_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        children.len() > 10 && children.len() < 50,
        "only the shares that fit the run's budget were given: {} children",
        children.len()
    );
    for (id, status, share, spent) in &children {
        assert_eq!(status, "completed", "task {id}");
        assert!(
            spent <= &(share + 1e-12),
            "task {id} spent ${spent} of a ${share} share"
        );
    }
    let total: f64 = pg.one(&format!(
        "SELECT COALESCE(SUM(cost_usd), 0) FROM events WHERE run_id = '{run_id}'"
    ));
    assert!(total <= 0.015, "the run spent ${total} of $0.015");
    let executors: i64 = pg.one(&format!(
        "SELECT COUNT(DISTINCT pid) FROM task_offers WHERE run_id = '{run_id}'"
    ));
    let offered: i64 = pg.one(&format!(
        "SELECT COUNT(*) FROM task_offers WHERE run_id = '{run_id}' AND done_at IS NOT NULL"
    ));
    assert_eq!(
        offered as usize,
        children.len(),
        "every child was offered and closed"
    );
    assert!(executors >= 2, "the children ran on {executors} worker(s)");
    let ends: i64 = pg.one(&format!(
        "SELECT COUNT(*) FROM events WHERE run_id = '{run_id}' AND kind = 'llm.complete'"
    ));
    assert!(ends > 0);
    let refused: i64 = pg.one(&format!(
        "SELECT COUNT(*) FROM tasks WHERE run_id = '{run_id}' AND task_id > 1
           AND output LIKE '%budget left%'"
    ));
    assert!(refused >= 1, "a child's share refused a call");
    let own: String = pg
        .conn()
        .query_row(
            "SELECT l.pid::text FROM leases l WHERE l.run_id = ?1",
            [&run_id],
            |r| r.get(0),
        )
        .unwrap();
    let elsewhere: i64 = pg.one(&format!(
        "SELECT COUNT(*) FROM task_offers WHERE run_id = '{run_id}' AND pid::text <> '{own}'"
    ));
    assert!(
        elsewhere >= 1,
        "children ran on workers other than the run's"
    );
    let (output, offers): (String, i64) = pg
        .conn()
        .query_row(
            "SELECT t.output, (SELECT COUNT(*) FROM task_offers o
                                WHERE o.run_id = t.run_id AND o.task_id = t.task_id)
             FROM tasks t WHERE t.run_id = ?1 AND t.task_id = 3",
            [&run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        offers, 1,
        "the child with a data dependency was offered too"
    );
    assert!(
        output.starts_with("child:from child 0:") && output.contains("child 0 call 0"),
        "it ran on its dependency's output: {output}"
    );
    // `inspect` says which worker executed each offered child.
    let inspect = agentflow()
        .args(["inspect", &run_id, "--db", &pg.url])
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    let text = stdout(&inspect);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("offered to the workers: executed by "))
        .collect();
    assert_eq!(lines.len(), children.len(), "{text}");
    let pids: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l.split("(pid ").nth(1))
        .collect();
    assert_eq!(pids.len() as i64, executors, "{text}");
}

/// Offered children are taken over like runs: runs whose children each make an LLM
/// call, create a cloud resource (a side effect) and make another call go to three
/// workers; a worker that holds an offered child or a run is SIGKILLed at random
/// moments and replaced, 20 times or more (8 or more holding an offered child). Its offered children are claimed again once their claims go
/// stale and resumed by replay, its runs resumed by another worker (which waits for
/// the children still running elsewhere rather than running them again). Every run
/// completes with the output of an uncrashed run; every resource is created once;
/// every child's tool result and LLM replies are recorded once. Half the children
/// draw on the run's pool, half on shares of their own: the pool in PostgreSQL has
/// everything recorded charged and never more than the run's budget committed.
#[test]
fn offered_children_are_taken_over_when_their_worker_dies() {
    let Some(pg) = PgDb::new("offer_takeover") else {
        return;
    };
    let dir = TempDir::new("cluster-offer-takeover");
    let config = dir.file("w.toml", "[llm.mock]\nlatency_ms = 250\n");
    let children = 6;
    let mut ops: Vec<serde_json::Value> = (0..children)
        .map(|k| {
            let child = serde_json::json!([
                {"llm": {"prompt": format!("plan node {k}"), "model": "mock-small", "max_tokens": 100}},
                {"tool": {"name": "cloud", "args": {"op": "create", "resource": format!("node-{k}")}}},
                {"fail_if_err": null},
                {"llm": {"prompt": format!("report node {k}"), "model": "mock-small", "max_tokens": 100}},
            ]);
            // Half with a share of their own, half drawing on the run's pool.
            let mut spawn = serde_json::json!({
                "description": format!("provision node {k}"),
                "input": child.to_string(),
            });
            if k % 2 == 0 {
                spawn["budget_usd"] = serde_json::json!(0.002);
            }
            serde_json::json!({ "spawn": spawn })
        })
        .collect();
    ops.extend((2..2 + children).map(|id| serde_json::json!({ "wait": id })));
    let input = serde_json::Value::Array(ops).to_string();
    let args = |ws: &Path| -> Vec<String> {
        [
            "--input",
            &input,
            "--max-depth",
            "1",
            "--budget-usd",
            "0.05",
            "--grant",
            "cloud",
            "--workspace",
            ws.to_str().unwrap(),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let base = dir.join("base");
    std::fs::create_dir_all(&base).unwrap();
    let baseline = agentflow()
        .arg("run")
        .arg(example("scripted"))
        .args(args(&base))
        .arg("--json")
        .arg("--config")
        .arg(&config)
        .arg("--db")
        .arg(dir.join("base.db"))
        .output()
        .unwrap();
    assert!(baseline.status.success(), "{}", stderr(&baseline));
    let baseline = stdout_json(&baseline)["output"]
        .as_str()
        .unwrap()
        .to_owned();

    let (mut ids, mut workspaces) = (Vec::new(), Vec::<PathBuf>::new());
    let submit_one = |ids: &mut Vec<String>, workspaces: &mut Vec<PathBuf>| {
        let ws = dir.path().join(format!("ws-{}", workspaces.len()));
        std::fs::create_dir_all(&ws).unwrap();
        let args = args(&ws);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ids.push(submit(&pg, "scripted", &args));
        workspaces.push(ws);
    };
    for _ in 0..3 {
        submit_one(&mut ids, &mut workspaces);
    }
    let mut next = 0;
    let mut workers: Vec<Child> = (0..3)
        .map(|_| {
            next += 1;
            worker(&pg, dir.path(), next, &config, "3")
        })
        .collect();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut random = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let (mut kills, mut offer_kills, started) = (0, 0, Instant::now());
    while (kills < 20 || offer_kills < 8) && started.elapsed() < Duration::from_secs(180) {
        let open: i64 = pg.one("SELECT COUNT(*) FROM submissions WHERE finished_at IS NULL");
        if open < 2 {
            submit_one(&mut ids, &mut workspaces);
        }
        std::thread::sleep(Duration::from_millis(100 + random(500)));
        let slot = random(3) as usize;
        let pid = workers[slot].id() as i64;
        let (offers, runs): (i64, i64) = pg
            .conn()
            .query_row(
                "SELECT (SELECT COUNT(*) FROM task_offers WHERE pid = ?1 AND done_at IS NULL),
                        (SELECT COUNT(*) FROM leases l JOIN runs r ON r.run_id = l.run_id
                          WHERE l.pid = ?1 AND r.status = 'running')",
                [pid],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        if offers + runs == 0 {
            continue;
        }
        workers[slot].kill().unwrap(); // SIGKILL
        workers[slot].wait().unwrap();
        kills += 1;
        offer_kills += usize::from(offers > 0);
        next += 1;
        workers[slot] = worker(&pg, dir.path(), next, &config, "3");
    }
    assert!(
        kills >= 20 && offer_kills >= 8,
        "{kills} kills, {offer_kills} of a worker holding an offered child"
    );
    wait_for_the_queue(&pg, dir.path(), Duration::from_secs(240));
    for w in &mut workers {
        let _ = w.wait();
    }
    let conn = pg.conn();
    let mut repeats = 0;
    for (id, ws) in ids.iter().zip(&workspaces) {
        let (status, output): (String, Option<String>) = conn
            .query_row(
                "SELECT status, output FROM runs WHERE run_id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        if status != "completed" {
            let said: Vec<String> = (0..=next)
                .filter_map(|n| std::fs::read_to_string(dir.join(&format!("worker-{n}.log"))).ok())
                .flat_map(|log| log.lines().map(String::from).collect::<Vec<_>>())
                .filter(|l| l.contains(id.as_str()))
                .collect();
            panic!(
                "run {id} is {status}; the workers said:\n{}",
                said.join("\n")
            );
        }
        assert_eq!(
            output.as_deref().map(without_repeat_flags),
            Some(without_repeat_flags(&baseline)),
            "run {id}"
        );
        // The run's pool, after kills mid-call: everything recorded is charged (and
        // calls in doubt whole), never more than the run's budget committed.
        let (spent, reserved, peak): (f64, f64, f64) = conn
            .query_row(
                "SELECT SUM(spent_usd), SUM(reserved_usd), MAX(peak_usd) FROM budget_pools
                  WHERE run_id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        let recorded: f64 = conn
            .query_row(
                "SELECT COALESCE(SUM(cost_usd), 0) FROM events WHERE run_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            spent >= recorded - 1e-9,
            "run {id}: pool ${spent} < recorded ${recorded}"
        );
        assert!(
            spent + reserved <= 0.05 + 1e-9 && peak <= 0.05 + 1e-9,
            "run {id}"
        );
        let calls = std::fs::read_to_string(ws.join("cloud.calls")).unwrap_or_default();
        let log = std::fs::read_to_string(ws.join("cloud.log")).unwrap_or_default();
        for k in 0..children {
            let create = format!("create node-{k} ");
            let made: Vec<&str> = calls.lines().filter(|l| l.starts_with(&create)).collect();
            // Created once: in the cloud's state once (see the run takeover test for
            // why its API log may show a second `repeated=false` call).
            assert_eq!(
                log.lines().filter(|l| l.starts_with(&create)).count(),
                1,
                "run {id}: node {k} in the cloud once: {calls}"
            );
            let real = made
                .iter()
                .filter(|l| l.ends_with("repeated=false"))
                .count();
            assert!(real >= 1, "run {id}: node {k} created: {calls}");
            repeats += made.len() - real;
            for (kind, once) in [("tools.call", 1), ("llm.complete", 2)] {
                let recorded: i64 = conn
                    .query_row(
                        "SELECT COUNT(*) FROM events WHERE run_id = ?1 AND task_id = ?2 AND kind = ?3",
                        rusqlite::params![id, (k + 2) as i64, kind],
                        |r| r.get(0),
                    )
                    .unwrap();
                assert_eq!(recorded, once, "run {id}: child {} {kind}", k + 2);
            }
        }
    }
    let taken_over: i64 = pg.one("SELECT COUNT(*) FROM task_offers WHERE claims > 1");
    println!(
        "offered children: {} runs, {kills} workers killed ({offer_kills} holding an offered child), \
         {taken_over} offered children taken over, {repeats} in-doubt calls re-sent as repeats, \
         0 resources created twice",
        ids.len()
    );
    assert!(taken_over >= 1, "an offered child was taken over");
    // `inspect` shows it.
    let (run, task, claims): (String, i64, i64) = conn
        .query_row(
            "SELECT run_id, task_id, claims FROM task_offers WHERE claims > 1 LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let inspect = agentflow()
        .args(["inspect", &run, "--db", &pg.url])
        .output()
        .unwrap();
    let text = stdout(&inspect);
    assert!(
        text.contains(&format!("claimed {claims} times (taken over)")),
        "task {task}: {text}"
    );
}

/// `output` with the cloud's `repeated` flags cleared: a create in doubt when its worker
/// died is sent again by the worker that takes over, and the cloud — which did nothing
/// the second time — answers `"repeated": true` (the test counts those apart, and checks
/// each resource was created once).
pub(crate) fn without_repeat_flags(output: &str) -> String {
    let (mut out, mut rest) = (String::new(), output);
    while let Some(at) = rest.find("repeated") {
        let after = &rest[at + "repeated".len()..];
        let quoting = after.len() - after.trim_start_matches(['\\', '"']).len();
        out.push_str(&rest[..at + "repeated".len() + quoting]);
        rest = &after[quoting..];
        if let Some(tail) = rest.strip_prefix(":true") {
            out.push_str(":false");
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// An offered child cancelled by its spawner while another worker executes it hands
/// back to the run's pool (in PostgreSQL) its share minus what it spent there and what
/// its call in flight holds — never the part it may have spent (the budget is never
/// handed out twice), nor more than that: a second share that fits only if the unspent
/// part came back is given. The cancel is the end the ledger keeps (the other worker's
/// end, written later, is refused).
#[test]
fn a_cancelled_offered_child_hands_back_only_what_it_did_not_spend_or_hold() {
    use serde_json::{Value, json};
    let Some(pg) = PgDb::new("cancel_offered") else {
        return;
    };
    let dir = TempDir::new("cluster-cancel-offered");
    let config = dir.file("w.toml", "[llm.mock]\nlatency_ms = 600\n");
    // At most 50 output tokens a call: a worst case of about $0.00008.
    let calls: Vec<Value> = (0..8)
        .map(|i| json!({"llm": {"prompt": format!("call {i}"), "model": "mock-small", "max_tokens": 50}}))
        .collect();
    let ops = json!([
        {"spawn": {"description": "long child", "input": Value::Array(calls).to_string(), "budget_usd": 0.0006}},
        {"sleep_ms": 2000},
        {"cancel": 2},
        // Fits only if the long child's unspent share came back ($0.0004 is left if
        // the whole $0.0006 counted as spent).
        {"spawn": {"description": "second child", "input": "[]", "budget_usd": 0.0005}},
    ]);
    let run_id = submit(
        &pg,
        "scripted",
        &[
            "--input",
            &ops.to_string(),
            "--max-depth",
            "1",
            "--budget-usd",
            "0.001",
        ],
    );
    let mut workers: Vec<Child> = (0..2)
        .map(|n| worker(&pg, dir.path(), n, &config, "3"))
        .collect();
    wait_for_the_queue(&pg, dir.path(), Duration::from_secs(120));
    for w in &mut workers {
        assert!(w.wait().unwrap().success());
    }
    let conn = pg.conn();
    let (status, output): (String, String) = conn
        .query_row(
            "SELECT status, output FROM runs WHERE run_id = ?1",
            [&run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(status, "completed");
    let results: Vec<Value> = serde_json::from_str(&output).unwrap();
    assert_eq!(results[0]["ok"], 2, "{output}");
    assert_eq!(results[2], json!(true), "cancelled: {output}");
    assert_eq!(results[3]["ok"], 3, "the unspent part came back: {output}");
    let (child, spent, claims): (String, f64, i64) = conn
        .query_row(
            "SELECT t.status, t.cost_usd, o.claims FROM tasks t
               JOIN task_offers o USING (run_id, task_id)
              WHERE t.run_id = ?1 AND t.task_id = 2",
            [&run_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(child, "cancelled", "the cancel is the end kept");
    assert_eq!(claims, 1, "another worker executed it");
    assert!(
        spent > 0.0,
        "it spent on the other worker before the cancel"
    );
    let calls: i64 = pg.one(&format!(
        "SELECT COUNT(*) FROM events WHERE run_id = '{run_id}' AND task_id = 2 AND kind = 'llm.complete'"
    ));
    assert!((1..8).contains(&calls), "cancelled mid-way: {calls} calls");
    // The run's pool: both shares handed back; charged what the child recorded, plus
    // at most the call it had in flight (a worst case of $0.0001 with its prompt).
    let recorded: f64 = pg.one(&format!(
        "SELECT COALESCE(SUM(cost_usd), 0) FROM events WHERE run_id = '{run_id}'"
    ));
    let (root_spent, carved, holds): (f64, f64, i64) = conn
        .query_row(
            "SELECT spent_usd, carved_usd,
                    (SELECT COUNT(*) FROM budget_holds h WHERE h.run_id = p.run_id)
               FROM budget_pools p WHERE run_id = ?1 AND task_id = 1",
            [&run_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert!(carved.abs() < 1e-12, "shares handed back: {carved}");
    assert!(
        root_spent >= recorded - 1e-12 && root_spent <= recorded + 0.0001,
        "the run's pool was charged ${root_spent} for ${recorded} recorded"
    );
    assert_eq!(holds, 0, "no hold left");
}

/// A change one process commits wakes another process's waiter at once
/// (PostgreSQL `LISTEN`/`NOTIFY`), not at the end of its poll interval: a waiter
/// with a 60 s interval sees a run submitted by the CLI well before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitted_run_wakes_a_waiting_process_at_once() {
    let Some(pg) = PgDb::new("notify") else {
        return;
    };
    let ledger = agentflow::ledger::Ledger::open(pg.db()).unwrap();
    // The first wait starts the listening session.
    ledger.changed_within(Duration::from_millis(500)).await;
    let waiter = tokio::spawn(async move {
        let started = std::time::Instant::now();
        ledger.changed_within(Duration::from_secs(60)).await;
        started.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let url = pg.url.clone();
    let submitted = tokio::task::spawn_blocking(move || {
        agentflow()
            .arg("submit")
            .arg(example("hello"))
            .args(["--input", "wake up", "--db", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(submitted.status.success(), "{}", stderr(&submitted));
    let waited = waiter.await.unwrap();
    assert!(
        waited < Duration::from_secs(30),
        "the waiter slept its whole interval: {waited:?}"
    );
}

/// A run that cannot start (its component in the database is damaged) is given up
/// after three failed starts — counted apart from claims, which takeovers raise — and
/// left for an operator, instead of going round the workers for ever.
#[test]
fn a_run_that_cannot_start_is_given_up_after_three_failed_starts() {
    let Some(pg) = PgDb::new("give_up") else {
        return;
    };
    let dir = TempDir::new("cluster-give-up");
    let config = dir.file("w.toml", "");
    let run_id = submit(&pg, "hello", &["--input", "never runs"]);
    pg.conn()
        .execute_batch(
            "UPDATE blobs SET data = CAST('not a component' AS BYTEA)
              WHERE hash = (SELECT component_hash FROM submissions)",
        )
        .unwrap();
    let mut w = worker(&pg, dir.path(), 0, &config, "2");
    assert!(w.wait().unwrap().success());
    let (failures, claims, closed): (i64, i64, bool) = pg
        .conn()
        .query_row(
            "SELECT start_failures, claims, finished_at IS NOT NULL FROM submissions",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((failures, claims, closed), (3, 3, true));
    let log = std::fs::read_to_string(dir.join("worker-0.log")).unwrap();
    assert!(
        log.contains("giving the run up") && log.contains(&run_id),
        "{log}"
    );
}

/// An offered child no worker can execute (its component in the database damaged
/// after the run's worker loaded it) is recorded failed after three failures —
/// counted apart from claims, which takeovers raise — and its spawner goes on.
#[test]
fn an_offered_child_no_worker_can_run_fails_after_three_failures() {
    use serde_json::json;
    let Some(pg) = PgDb::new("offer_give_up") else {
        return;
    };
    let dir = TempDir::new("cluster-offer-give-up");
    let config = dir.file("w.toml", "");
    let ops = json!([
        {"sleep_ms": 1500},
        {"spawn": {"description": "never runs", "input": "[]"}},
        {"wait": 2},
    ]);
    let run_id = submit(
        &pg,
        "scripted",
        &["--input", &ops.to_string(), "--max-depth", "1"],
    );
    let mut w = worker(&pg, dir.path(), 0, &config, "3");
    wait_for(
        &pg,
        "SELECT COUNT(*) FROM runs WHERE run_id = ?1 AND status = 'running'",
        &run_id,
    );
    pg.conn()
        .execute_batch(
            "UPDATE blobs SET data = CAST('not a component' AS BYTEA)
              WHERE hash = (SELECT component_hash FROM submissions)",
        )
        .unwrap();
    assert!(w.wait().unwrap().success());
    let (status, error, failures, claims): (String, String, i64, i64) = pg
        .conn()
        .query_row(
            "SELECT t.status, t.error, o.failures, o.claims FROM tasks t
               JOIN task_offers o USING (run_id, task_id)
              WHERE t.run_id = ?1 AND t.task_id = 2",
            [&run_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (status.as_str(), failures, claims),
        ("failed", 3, 3),
        "{error}"
    );
    assert!(
        error.contains("no worker could run it (3 failures)"),
        "{error}"
    );
    let run: String = pg.one(&format!(
        "SELECT status FROM runs WHERE run_id = '{run_id}'"
    ));
    assert_eq!(run, "completed", "the spawner went on");
}
