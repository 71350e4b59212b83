//! The web dashboard (`agentflow serve`) in a real browser: headless Chromium driven
//! over WebDriver against the `agentflow serve` binary, on ledgers that real runs
//! wrote — some of them still running in another process. Screenshots go to
//! `target/test-artifacts/dashboard/`.
//!
//! Also without a browser: the guards (CSRF, Host, the bearer token, the refusal to
//! listen off loopback without one).

use crate::support::browser::{Browser, Dashboard, one_at_a_time};
use crate::support::cli::*;
use crate::support::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn spawn_op(description: &str, input: &str) -> Value {
    json!({"spawn": {"description": description, "input": input}})
}

fn step(thought: &str, action: &str, observation: &str) -> Value {
    json!({"step": {"thought": thought, "action": action, "observation": observation, "confidence": 0.75}})
}

/// `agentflow run <example scripted> --input OPS ARGS --db DB` in the background, its
/// output kept.
fn start_scripted(db: &Path, ops: &Value, args: &[&str]) -> Child {
    agentflow()
        .arg("run")
        .arg(example("scripted"))
        .args(["--input", &ops.to_string()])
        .args(args)
        .arg("--db")
        .arg(db)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The id of the ledger's only run, once the dashboard lists it (up to 20 s).
async fn first_run(dashboard: &Dashboard) -> String {
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(dashboard.at("/api/runs")).await
            && let Ok(Value::Array(runs)) = r.json::<Value>().await
            && let Some(id) = runs.first().and_then(|r| r["run_id"].as_str())
        {
            return id.to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no run appeared in the dashboard within 20 s");
}

/// Wait for `child` to exit (up to 60 s); its output.
fn finish(child: Child) -> std::process::Output {
    let started = Instant::now();
    let mut child = child;
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// A finished run with reasoning steps, an LLM call, a side effect and a child whose
/// description and output are hostile markup: the run page draws the cost tree, and
/// the markup is text. The runs list filters; the models page shows the mock model's
/// latency. The researcher's run page is the README's screenshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_page_draws_the_cost_tree_and_shows_guest_markup_as_text() {
    let _one = one_at_a_time().await;
    let dir = TempDir::new("dash-tree");
    let db = dir.ledger("d.db");
    let ops = json!([
        step("the plan needs <b>one</b> helper", "spawn", "helper spawned"),
        {"llm": {"prompt": "summarise the plan"}},
        spawn_op("helper <script>window.pwned = 1</script>", "<img src=x onerror=\"window.pwned = 2\"><script>window.pwned = 3</script>"),
        {"wait": 2},
        {"tool": {"name": "kv", "args": {"op": "put", "key": "plan", "value": "done"}}},
    ]);
    let out = finish(start_scripted(&db, &ops, &["--grant", "kv"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let checks = dir.file(
        "checks.toml",
        "[[validators]]\nkind = \"length\"\nmin_chars = 1\n[[validators]]\nkind = \"pattern\"\nmust_not_match = [\"*TODO*\"]\n",
    );
    let researched = run_example(
        &db,
        "researcher",
        [
            "--input",
            "Why is the sky blue?",
            "--config",
            checks.to_str().unwrap(),
        ],
    );
    assert!(researched.status.success(), "{}", stderr(&researched));
    let dashboard = Dashboard::start(&db, &[]);
    let runs: Value = reqwest::get(dashboard.at("/api/runs?agent=scripted"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = runs[0]["run_id"].as_str().unwrap().to_string();
    let api: Value = reqwest::get(dashboard.at(&format!("/api/runs/{run_id}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["tasks"].as_array().unwrap().len(), 2, "{api}");
    assert_eq!(
        api["tasks"][0]["reasoning_trace"][0]["thought"],
        "the plan needs <b>one</b> helper"
    );
    assert_eq!(api["effects"][0]["tool"], "kv");
    assert_eq!(api["effects"][0]["state"], "done");

    let browser = Browser::start().await;
    // The runs list, filtered by agent and status.
    browser
        .open(&dashboard.at("/"), &format!("tr[data-run=\"{run_id}\"]"))
        .await;
    let list = browser.text("#runs").await;
    assert!(
        list.contains("scripted") && list.contains("researcher"),
        "{list}"
    );
    browser
        .open(&dashboard.at("/?agent=researcher"), "tr.run-row")
        .await;
    assert!(!browser.text("#runs").await.contains("scripted"));
    browser
        .open(&dashboard.at("/?status=failed"), "#runs td.muted")
        .await;
    assert_eq!(browser.text("#runs").await, "No runs match.");

    // The run page: totals, then the tree.
    browser
        .open(&dashboard.at(&format!("/runs/{run_id}")), "#task-2")
        .await;
    let root = browser.text("#task-1").await;
    for shown in [
        "mock-small",
        "Step 1: the plan needs <b>one</b> helper",
        "action: spawn → observation: helper spawned (confidence 0.75)",
        "tool kv",
    ] {
        assert!(root.contains(shown), "`{shown}` not in:\n{root}");
    }
    let cost = browser.text("#total-cost").await;
    assert!(cost.starts_with("$0.0000"), "{cost}");
    assert!(browser.text("#effects").await.contains("idempotent"));
    let child = browser.text("#task-2 .desc").await;
    assert_eq!(child, "helper <script>window.pwned = 1</script>");
    // Open the output and the events: the hostile output is text, nothing ran.
    browser
        .client
        .execute(
            "document.querySelectorAll('#task-2 details').forEach(d => d.open = true); return 1",
            vec![],
        )
        .await
        .unwrap();
    browser.wait_for("#task-2 .events-body table").await;
    let output = browser.text("#task-2 .task-output").await;
    assert!(
        output.contains("<script>window.pwned = 3</script>"),
        "{output}"
    );
    let probe = browser
        .client
        .execute(
            "return [String(window.pwned), document.querySelectorAll('script').length, \
             document.querySelectorAll('main img').length]",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        probe,
        json!(["undefined", 1, 0]),
        "guest markup became HTML"
    );
    let events = browser.text("#task-2 .events-body").await;
    assert!(events.contains("task.usage"), "{events}");
    browser.screenshot("hostile-run").await;

    // The models page: the mock model's calls and latency percentiles.
    browser
        .open(&dashboard.at("/models"), "tr[data-model=\"mock-small\"]")
        .await;
    let model = browser.text("tr[data-model=\"mock-small\"]").await;
    assert!(model.contains("mock"), "{model}");
    let p50 = browser.text("tr[data-model=\"mock-small\"] .p50").await;
    assert!(p50.parse::<u64>().is_ok(), "p50 `{p50}`");
    browser.screenshot("models").await;

    // The researcher's run: the README's screenshot (tall enough for the tree).
    browser.client.set_window_size(1280, 1400).await.unwrap();
    let researcher = runs_of(&dashboard, "researcher").await;
    browser
        .open(&dashboard.at(&format!("/runs/{researcher}")), "#task-2")
        .await;
    let root = browser.text("#task-1").await;
    assert!(root.contains("Step 1: decompose"), "{root}");
    assert!(root.contains("validation pass"), "{root}");
    assert_eq!(browser.text("#total-quality .v").await, "100%");
    browser.screenshot("run-page").await;
    browser.close().await;
}

async fn runs_of(dashboard: &Dashboard, agent: &str) -> String {
    let runs: Value = reqwest::get(dashboard.at(&format!("/api/runs?agent={agent}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    runs[0]["run_id"].as_str().unwrap().to_string()
}

/// A run in another process: the open run page grows a task as the run spawns it
/// (no reload), shows the approval its new child waits for, and once approved in the
/// browser, the run finishes — with the ledger events `agentflow approve` writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_run_grows_in_the_page_and_an_approval_in_the_browser_finishes_it() {
    let _one = one_at_a_time().await;
    let dir = TempDir::new("dash-live");
    let db = dir.ledger("l.db");
    let config = dir.file(
        "c.toml",
        "[constraints.approval]\ndescription_matches = [\"*gated*\"]\n",
    );
    let browser = Browser::start().await;
    let ops = json!([
        step("first the harmless part", "spawn", "started"),
        spawn_op("harmless part", ""),
        {"wait": 2},
        {"sleep_ms": 6000},
        step("now the gated part", "spawn", "asks a human"),
        spawn_op("gated deploy to production", ""),
        {"wait": 3},
    ]);
    let host = start_scripted(&db, &ops, &["--config", config.to_str().unwrap()]);
    // The ledger exists once the run started; the dashboard needs it.
    let started = Instant::now();
    while !has_a_run(&db) && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let dashboard = Dashboard::start(&db, &[]);
    let run_id = first_run(&dashboard).await;
    browser
        .open(&dashboard.at(&format!("/runs/{run_id}")), "#task-2")
        .await;
    browser
        .client
        .execute("window.notReloaded = 42; return 1", vec![])
        .await
        .unwrap();
    assert_eq!(
        browser.text("#task-3").await,
        "",
        "task 3 was there before the run spawned it"
    );
    assert_eq!(browser.text("#run-status").await, "running");
    // The run spawns task 3, which waits for approval: the page shows both, live.
    browser.wait_for("#task-3").await;
    let approve = "#approval-1 button[data-action=\"approve\"]";
    browser.wait_for(approve).await;
    assert!(
        browser
            .text("#task-3")
            .await
            .contains("waiting: approval 1")
    );
    browser.screenshot("live-waiting").await;
    browser.click(approve).await;
    browser
        .wait_for("#run-status[data-status=\"completed\"]")
        .await;
    let still = browser
        .client
        .execute("return window.notReloaded", vec![])
        .await
        .unwrap();
    assert_eq!(still, json!(42), "the page was reloaded");
    assert!(browser.text("#task-3").await.contains("completed"));
    browser.screenshot("live-approved").await;
    browser.close().await;
    let out = finish(host);
    assert!(out.status.success(), "{}", stderr(&out));
    // The same record as `agentflow approve 1`.
    let approvals = stdout_json(&agentflow_on(&db, ["approvals", "--all", "--json"]));
    assert_eq!(approvals[0]["status"], "approved", "{approvals}");
    let events = stdout(&agentflow_on(&db, ["events", &run_id, "--task", "3"]));
    assert!(events.contains("approval.decided"), "{events}");
}

/// A join that waits for a human on a critical file: the decisions page shows both
/// sides' diffs; taking the child's version there lets the running host finish, and
/// the run page lists the merge as critical and resolved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_conflict_resolved_in_the_browser_lets_the_run_finish() {
    let _one = one_at_a_time().await;
    let dir = TempDir::new("dash-merge");
    let db = dir.ledger("m.db");
    let ws = dir.join("ws");
    std::fs::create_dir_all(ws.join("deploy")).unwrap();
    std::fs::write(ws.join("deploy/prod.toml"), "replicas = 2\n").unwrap();
    let config = dir.file("c.toml", "[merge]\ncritical_paths = [\"deploy/*\"]\n");
    let write = json!({"tool": {"name": "workspace", "args": {"op": "write", "path": "deploy/prod.toml", "content": "replicas = 20\n"}}});
    let ops = json!([
        {"spawn": {"description": "scale production up", "input": json!([write]).to_string()}},
        {"wait": 2},
    ]);
    let browser = Browser::start().await;
    let host = start_scripted(
        &db,
        &ops,
        &[
            "--config",
            config.to_str().unwrap(),
            "--grant",
            "workspace",
            "--workspace",
            ws.to_str().unwrap(),
        ],
    );
    let pending = wait_for_listing("conflicts", &db);
    assert_eq!(pending[0]["subject"], "deploy/prod.toml", "{pending}");
    let dashboard = Dashboard::start(&db, &[]);
    let take = ".decision.conflict button[data-action=\"take\"][data-task=\"2\"]";
    browser.open(&dashboard.at("/decisions"), take).await;
    let shown = browser.text(".decision.conflict").await;
    assert!(
        shown.contains("+replicas = 20") && shown.contains("critical"),
        "{shown}"
    );
    browser.screenshot("conflict").await;
    browser.click(take).await;
    browser.wait_for("p#decisions").await;
    assert_eq!(
        browser.text("p#decisions").await,
        "Nothing waits for a human."
    );
    let out = finish(host);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(ws.join("deploy/prod.toml")).unwrap(),
        "replicas = 20\n"
    );
    let run_id = only_run_id(&db);
    browser
        .open(&dashboard.at(&format!("/runs/{run_id}")), "#merges")
        .await;
    let merges = browser.text("#merges").await;
    assert!(
        merges.contains("critical") && merges.contains("resolved"),
        "{merges}"
    );
    browser.close().await;
}

/// The guards, over plain HTTP: a POST without the page's CSRF token, or from another
/// origin, is refused (403) and decides nothing; a non-loopback Host is refused; with
/// the token from the page the same POST decides. Off loopback `serve` needs
/// `--token`; with one, requests need it (bearer or the cookie `?token=` sets), and
/// a browser gets in through `?token=`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_host_and_token_guards_refuse_what_they_should() {
    let dir = TempDir::new("dash-guard");
    let db = dir.ledger("g.db");
    let config = dir.file("c.toml", "[constraints.approval]\ndepth_over = 0\n");
    let ops = json!([spawn_op("needs a human", ""), {"wait": 2}]);
    let parked = finish(start_scripted(
        &db,
        &ops,
        &["--config", config.to_str().unwrap(), "--detach"],
    ));
    assert_eq!(parked.status.code(), Some(3), "{}", stderr(&parked));
    let dashboard = Dashboard::start(&db, &[]);
    let http = reqwest::Client::new();
    let page = http
        .get(dashboard.at("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"agentflow-csrf\" content=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let approve = dashboard.at("/api/approvals/1/approve");
    let attempts: [(&str, Vec<(&str, String)>); 4] = [
        ("no CSRF header", vec![]),
        (
            "a wrong CSRF token",
            vec![("x-agentflow-csrf", "0".repeat(32))],
        ),
        (
            "another origin",
            vec![
                ("x-agentflow-csrf", csrf.clone()),
                ("origin", "http://evil.example".into()),
            ],
        ),
        (
            "a cross-site fetch",
            vec![
                ("x-agentflow-csrf", csrf.clone()),
                ("sec-fetch-site", "cross-site".into()),
            ],
        ),
    ];
    for (what, headers) in attempts {
        let mut req = http.post(&approve).json(&json!({}));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403, "{what}");
    }
    let pending = stdout_json(&agentflow_on(&db, ["approvals", "--json"]));
    assert_eq!(
        pending.as_array().unwrap().len(),
        1,
        "a refused POST decided"
    );
    let rebound = http
        .get(dashboard.at("/api/runs"))
        .header("host", "attacker.example:7878")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    let origin = dashboard.url.clone();
    let ok = http
        .post(&approve)
        .header("x-agentflow-csrf", &csrf)
        .header("origin", &origin)
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"note": "ok from the dashboard"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let decided: Value = ok.json().await.unwrap();
    assert_eq!(decided["continued_by_host"], false, "{decided}");
    assert!(
        decided["next"]
            .as_str()
            .unwrap()
            .contains("agentflow resume")
    );
    let all = stdout_json(&agentflow_on(&db, ["approvals", "--all", "--json"]));
    assert_eq!(all[0]["status"], "approved");
    assert_eq!(all[0]["note"], "ok from the dashboard");
    let again = http
        .post(&approve)
        .header("x-agentflow-csrf", &csrf)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404, "decided twice");
    drop(dashboard);

    // Off loopback without a token: refused, saying why.
    let refused = agentflow_on(&db, ["serve", "--addr", "0.0.0.0:0"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("without --token"),
        "{}",
        stderr(&refused)
    );
    // With a token: every request needs it.
    let token = "correct-horse-battery-staple";
    let guarded = Dashboard::start(&db, &["--token", token]);
    let bare = http.get(guarded.at("/api/runs")).send().await.unwrap();
    assert_eq!(bare.status(), 401);
    let bearer = http
        .get(guarded.at("/api/runs"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let wrong = http
        .get(guarded.at("/api/runs"))
        .bearer_auth("not-the-token-at-all")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let _one = one_at_a_time().await;
    let browser = Browser::start().await;
    browser.client.goto(&guarded.at("/")).await.unwrap();
    assert!(browser.text("body").await.contains("needs its token"));
    browser
        .open(&guarded.at(&format!("/?token={token}")), "tr.run-row")
        .await;
    let url = browser.client.current_url().await.unwrap();
    assert!(!url.as_str().contains("token"), "{url}");
    browser.close().await;
}

/// `/metrics` serves the ledger's metrics as Prometheus text: what `agentflow metrics`
/// prints, with Prometheus' content type (no browser needed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_for_a_prometheus_scraper() {
    let dir = TempDir::new("dash-metrics");
    let db = dir.ledger("m.db");
    let out = run_example(&db, "researcher", ["--input", "Why scrape?"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dashboard = Dashboard::start(&db, &[]);
    let response = reqwest::get(dashboard.at("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let served = response.text().await.unwrap();
    let printed = stdout(&agentflow_on(&db, ["metrics"]));
    let calls = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("agentflow_llm_calls_total{"))
            .map(str::to_string)
            .collect()
    };
    assert!(!calls(&served).is_empty(), "{served}");
    assert_eq!(calls(&served), calls(&printed));
}
