//! Section 10 of the bench: the dashboard's run page for a run of over 1,000 tasks.
//!
//! A real fan-out (`fanout`, depth 3 × fanout 10: 1,111 tasks, each one mock LLM call
//! and one `kv` tool call with its intent) is recorded in a ledger on disk; then the
//! dashboard (`agentflow::serve::serve`, the server `agentflow serve` runs) listens on
//! loopback in this process, and the bench times, over HTTP with a fresh connection,
//! what a browser fetches to draw the run page: `GET /runs/{id}` (the page) and
//! `GET /api/runs/{id}` (the whole tree: tasks, traces, effects, merges, decisions).
//! The script and stylesheet are static and cached, so they are not counted.

use agentflow::serve::{ServeOptions, serve};
use agentflow::{Host, HostConfig, RunOptions, Status};
use agentflow_tests::example;
use std::time::{Duration, Instant};

/// What section 10 measured.
pub struct RunPage {
    pub tasks: u64,
    pub events: u64,
    pub api_bytes: usize,
    /// Page + API, per load.
    pub loads: Vec<Duration>,
}

/// Record the fan-out in `dir`, serve it, and load its run page `samples` times.
pub async fn run_page(dir: &std::path::Path, samples: u32) -> RunPage {
    let toml = "[limits]\nmax_tasks = 2000\n[constraints]\nmax_concurrent_tasks = 128\n[tools]\ngrant = [\"kv\"]\n";
    let mut config = HostConfig::from_toml(toml).unwrap();
    config.cache_dir = Some(dir.join("cache"));
    let db = dir.join("dash.db");
    let host = Host::new(config, &db).unwrap();
    let report = host
        .run_file(
            &example("fanout"),
            r#"{"depth": 3, "fanout": 10, "steps": 1}"#,
            RunOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let run_id = report.run_id.clone();
    host.close().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let options = ServeOptions {
        db: db.clone(),
        addr: "127.0.0.1:0".parse().unwrap(),
        token: None,
        config: HostConfig::default(),
    };
    tokio::spawn(async move {
        serve(options, move |at| tx.send(at).unwrap())
            .await
            .unwrap()
    });
    let at = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let base = format!("http://{at}");
    let mut loads = Vec::new();
    let mut api_bytes = 0;
    let mut tasks = 0;
    // One warm-up load (the OS page cache), then the samples.
    for i in 0..=samples {
        // A new client each time: no connection kept alive from the last load.
        let http = reqwest::Client::new();
        let start = Instant::now();
        let page = http
            .get(format!("{base}/runs/{run_id}"))
            .send()
            .await
            .unwrap();
        assert!(page.status().is_success());
        let html = page.text().await.unwrap();
        assert!(html.contains("agentflow-csrf"));
        let api = http
            .get(format!("{base}/api/runs/{run_id}"))
            .send()
            .await
            .unwrap();
        assert!(api.status().is_success());
        let body = api.bytes().await.unwrap();
        let elapsed = start.elapsed();
        if i > 0 {
            loads.push(elapsed);
        }
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        tasks = doc["tasks"].as_array().unwrap().len() as u64;
        api_bytes = body.len();
    }
    let events = agentflow::ledger::query::events(
        &agentflow::ledger::query::open_reader(&db).unwrap(),
        &run_id,
        None,
    )
    .unwrap()
    .len() as u64;
    RunPage {
        tasks,
        events,
        api_bytes,
        loads,
    }
}
