//! The multi-model scheduler: priorities, hard constraints, fallbacks, circuit
//! breaker, 429 cooldowns, timeouts, version changes, quotas, history, transparency.
//! Real HTTP providers are local fake servers started by the tests.

use crate::support::fake_http::{FakeResponse, FakeServer};
use crate::support::llm::reply_from;
use crate::support::*;
use agentflow::{Host, RunOptions, Status};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A config with two OpenAI-compatible endpoints: `primary` (good, cheap model) and
/// `backup`, no provider-level retries so failures reach the scheduler at once.
fn two_endpoints(primary: &FakeServer, backup: &FakeServer, extra: &str) -> String {
    format!(
        r#"
[llm.scheduler]
breaker_failures = 2
breaker_cooldown_ms = 1500
[llm.endpoints.a.openai]
base_url = "{}/v1"
timeout_ms = 300
retry = {{ max_retries = 0 }}
[llm.endpoints.b.openai]
base_url = "{}/v1"
retry = {{ max_retries = 0 }}
[[llm.models]]
name = "primary"
provider = "a"
input_per_mtok = 0.1
output_per_mtok = 0.1
quality = 0.9
expected_latency_ms = 100
[[llm.models]]
name = "backup"
provider = "b"
input_per_mtok = 1.0
output_per_mtok = 1.0
quality = 0.5
expected_latency_ms = 500
{extra}
"#,
        primary.url(),
        backup.url()
    )
}

/// Poll the scheduler's view of `model` until `ready` holds (at most 10 s): tests wait
/// for the state they need, not for a guessed duration.
async fn wait_for_model(
    host: &Host,
    model: &str,
    ready: impl Fn(&agentflow::scheduler::health::HealthView) -> bool,
) {
    let started = std::time::Instant::now();
    loop {
        let status = host.scheduler().status();
        let m = status.iter().find(|s| s.spec.name == model).unwrap();
        if ready(&m.health) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{model} never got there: {:?}",
            m.health
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn llm_once(host: &Host, op: Value) -> (agentflow::RunReport, Value) {
    let (report, results) = run_scripted(host, json!([{ "llm": op }]), RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    (report, results[0].clone())
}

fn chosen(host: &Host, run_id: &str) -> Vec<String> {
    events(host, run_id)
        .iter()
        .filter(|e| e.kind == "llm.decision")
        .map(|e| e.response["chosen"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_changes_the_choice() {
    let (_dir, host) = temp_host("sched-priority", "");
    let mut picks = Vec::new();
    for p in ["balanced", "cost", "quality", "latency"] {
        let (_, r) = llm_once(&host, json!({"prompt": "hi", "priority": p})).await;
        picks.push(r["ok"]["model"].as_str().unwrap().to_string());
    }
    assert_eq!(
        picks,
        ["mock-small", "mock-small", "mock-large", "mock-fast"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_constraints_filter_the_catalog() {
    let (_dir, host) = temp_host("sched-constraints", "");
    let model = |r: &Value| {
        r["ok"]["model"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| r["err"].to_string())
    };
    let (_, r) = llm_once(
        &host,
        json!({"prompt": "see this", "capabilities": ["vision"]}),
    )
    .await;
    assert_eq!(model(&r), "mock-large");
    let (_, r) = llm_once(&host, json!({"prompt": "long", "min_context": 150000})).await;
    assert_eq!(model(&r), "mock-large");
    let (_, r) = llm_once(&host, json!({"prompt": "huge", "min_context": 300000})).await;
    assert!(
        model(&r).contains("NoViableModel") && model(&r).contains("context window"),
        "{r}"
    );
    let (_, r) = llm_once(
        &host,
        json!({"prompt": "cheap", "max_tokens": 100, "max_cost": 0.0000001}),
    )
    .await;
    assert!(
        model(&r).contains("NoViableModel") && model(&r).contains("max $"),
        "{r}"
    );
    let (_, r) = llm_once(&host, json!({"prompt": "fast", "max_latency_ms": 200})).await;
    assert_eq!(model(&r), "mock-fast");
    let (_, r) = llm_once(
        &host,
        json!({"prompt": "pinned", "model": "mock-fast", "priority": "quality"}),
    )
    .await;
    assert_eq!(model(&r), "mock-fast");
    let (_, r) = llm_once(&host, json!({"prompt": "x", "model": "gpt-9"})).await;
    assert!(model(&r).contains("not in the catalog"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_fall_back_then_open_the_breaker_then_probe() {
    let bad = FakeServer::start(vec![FakeResponse::json(500, r#"{"error":"boom"}"#)]).await;
    let good = FakeServer::start(vec![reply_from("backup-v1", 10, 5)]).await;
    let (_dir, host) = temp_host("sched-breaker", &two_endpoints(&bad, &good, ""));

    // Two calls: primary (best score) fails, the fallback answers within the same call.
    for expected_bad_requests in [1, 2] {
        let (report, r) = llm_once(&host, json!({"prompt": "hello"})).await;
        assert_eq!(r["ok"]["model"], "backup", "{r}");
        assert_eq!(chosen(&host, &report.run_id), ["primary", "backup"]);
        assert_eq!(bad.requests().len(), expected_bad_requests);
    }
    // Two consecutive failures opened the breaker: primary is skipped outright.
    let (report, r) = llm_once(&host, json!({"prompt": "hello"})).await;
    assert_eq!(r["ok"]["model"], "backup");
    assert_eq!(chosen(&host, &report.run_id), ["backup"]);
    assert_eq!(bad.requests().len(), 2);
    let decision = first_event(&host, &report.run_id, "llm.decision");
    let primary = decision.response["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["model"] == "primary")
        .unwrap()
        .clone();
    assert!(
        primary["excluded"]
            .as_str()
            .unwrap()
            .contains("circuit open"),
        "{primary}"
    );

    // A pinned model that is unavailable is a typed error, or the fallback when allowed.
    let (_, r) = llm_once(&host, json!({"prompt": "hello", "model": "primary"})).await;
    assert!(
        r["err"].as_str().unwrap().contains("ModelUnavailable"),
        "{r}"
    );
    let (_, r) = llm_once(
        &host,
        json!({"prompt": "hello", "model": "primary", "allow_fallback": true}),
    )
    .await;
    assert_eq!(r["ok"]["model"], "backup");

    // After the cooldown one half-open probe goes to primary; it fails and re-opens.
    // Wait for the scheduler to say so, not for a guessed time.
    wait_for_model(&host, "primary", |h| {
        serde_json::to_value(h.breaker).unwrap() == "half-open"
    })
    .await;
    let (report, r) = llm_once(&host, json!({"prompt": "hello"})).await;
    assert_eq!(r["ok"]["model"], "backup");
    assert_eq!(bad.requests().len(), 3, "exactly one probe");
    let decision = first_event(&host, &report.run_id, "llm.decision");
    assert_eq!(decision.response["reservation"]["probe"], true);
    let status = host.scheduler().status();
    let p = status.iter().find(|s| s.spec.name == "primary").unwrap();
    assert_eq!(serde_json::to_value(p.health.breaker).unwrap(), "open");
    assert!(p.health.error_rate > 0.99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_cool_the_model_down_for_retry_after() {
    let busy = FakeServer::start(vec![
        FakeResponse::json(429, r#"{"error":"slow down"}"#).with_header("retry-after", "1"),
        reply_from("primary-v1", 10, 5),
    ])
    .await;
    let good = FakeServer::start(vec![reply_from("backup-v1", 10, 5)]).await;
    let (_dir, host) = temp_host("sched-429", &two_endpoints(&busy, &good, ""));
    let (_, r) = llm_once(&host, json!({"prompt": "hello"})).await;
    assert_eq!(r["ok"]["model"], "backup", "429 falls back within the call");
    let (report, r) = llm_once(&host, json!({"prompt": "hello"})).await;
    assert_eq!(r["ok"]["model"], "backup");
    assert_eq!(busy.requests().len(), 1, "cooling down: not asked again");
    let skipped = first_event(&host, &report.run_id, "llm.decision");
    assert!(
        skipped
            .response
            .to_string()
            .contains("cooling down after a 429"),
        "{}",
        skipped.response
    );
    wait_for_model(&host, "primary", |h| h.cooldown_ms == 0).await;
    let (_, r) = llm_once(&host, json!({"prompt": "hello"})).await;
    assert_eq!(r["ok"]["model"], "primary", "back after retry-after");
    assert_eq!(busy.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_replies_time_out_and_fall_back() {
    let slow = FakeServer::start(vec![reply_from("primary-v1", 10, 5).with_delay(2000)]).await;
    let good = FakeServer::start(vec![reply_from("backup-v1", 10, 5)]).await;
    let (_dir, host) = temp_host("sched-timeout", &two_endpoints(&slow, &good, ""));
    let started = Instant::now();
    let (report, r) = llm_once(&host, json!({"prompt": "hello"})).await;
    assert_eq!(r["ok"]["model"], "backup");
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "the 300 ms timeout cut the slow call"
    );
    let complete = first_event(&host, &report.run_id, "llm.complete");
    assert!(
        complete.response["failed_attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("timed out")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_version_changes_are_recorded_and_visible() {
    let server = FakeServer::start(vec![
        reply_from("primary-2024-01", 10, 5),
        reply_from("primary-2024-06", 10, 5),
    ])
    .await;
    let toml = two_endpoints(&server, &server, "");
    let (dir, host) = temp_host("sched-version", &toml);
    let (first, _) = llm_once(&host, json!({"prompt": "a"})).await;
    let (second, _) = llm_once(&host, json!({"prompt": "b"})).await;
    assert!(
        !events(&host, &first.run_id)
            .iter()
            .any(|e| e.kind == "llm.model_version_changed")
    );
    let change = first_event(&host, &second.run_id, "llm.model_version_changed");
    assert_eq!(change.response["previous"], "primary-2024-01");
    assert_eq!(change.response["observed"], "primary-2024-06");
    let mut config = agentflow::HostConfig::from_toml(&toml).unwrap();
    config.cache_dir = Some(cache_dir());
    let models = agentflow::observe::models::load(&config, &dir.ledger("ledger.db")).unwrap();
    let primary = models.iter().find(|m| m.spec.name == "primary").unwrap();
    assert_eq!(primary.stats.version_changes.len(), 1);
    assert_eq!(primary.stats.calls, 2);
    let table = agentflow::observe::models::render(&models);
    assert!(table.contains("primary-2024-06 (1 change(s))"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_parallel_agents_never_exceed_the_token_quota_in_any_window() {
    // Every call uses exactly 25 tokens (5 in, 20 out); 250 tokens per 1 s window.
    let server = FakeServer::start(vec![reply_from("quota-model", 5, 20)]).await;
    let toml = format!(
        r#"
[limits]
max_tasks = 32
[llm.scheduler]
quota_window_ms = 1000
[llm.endpoints.q.openai]
base_url = "{}/v1"
[[llm.models]]
name = "metered"
provider = "q"
input_per_mtok = 1.0
output_per_mtok = 1.0
tpm = 250
"#,
        server.url()
    );
    let (_dir, host) = temp_host("sched-quota", &toml);
    let call =
        json!({"llm": {"prompt": "quota test call", "max_tokens": 20, "max_wait_ms": 30000}});
    let child = json!([call, call, call]).to_string();
    let spawns: Vec<Value> = (0..20)
        .map(|i| json!({"spawn": {"description": format!("agent {i}"), "input": child}}))
        .collect();
    let waits: Vec<Value> = (2..22).map(|id| json!({"wait": id})).collect();
    let ops: Vec<Value> = spawns.into_iter().chain(waits).collect();
    let started = Instant::now();
    let (report, results) = run_scripted(&host, json!(ops), RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    for r in &results[20..] {
        let out = r["completed"].as_str().expect("child completed");
        assert!(
            !out.contains("err"),
            "every call got through, waiting for quota: {out}"
        );
    }
    assert_eq!(server.requests().len(), 60);
    // The guarantee is on reservations: by the time each was made (recorded in its
    // decision event), no window of the quota's length holds more than 250 tokens.
    let mut reserved: Vec<i64> = events(&host, &report.run_id)
        .iter()
        .filter(|e| e.kind == "llm.decision")
        .map(|e| e.response["reservation"]["at_ms"].as_i64().unwrap())
        .collect();
    reserved.sort_unstable();
    assert_eq!(reserved.len(), 60);
    let worst_reserved = most_in_a_window(&reserved, 998);
    assert!(
        worst_reserved * 25 <= 250,
        "a window held {} tokens of reservations",
        worst_reserved * 25
    );
    // Seen from the provider, allowing for transit jitter under load.
    let arrivals: Vec<Instant> = server.requests().iter().map(|r| r.at).collect();
    // Any window of the quota's length (less 20 ms for transit jitter) saw at most 10 calls.
    let worst = most_in_a_window(&arrivals, Duration::from_millis(800));
    assert!(worst * 25 <= 250, "a window saw {} tokens", worst * 25);
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "60 calls at 10 per second take ≥ 5 windows"
    );
    println!(
        "quota test: 60 calls, busiest window {} calls = {} tokens (quota 250), {:?}",
        worst,
        worst * 25,
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_without_waiting_is_a_typed_error() {
    let (_dir, host) = temp_host(
        "sched-quota-err",
        r#"
[[llm.models]]
name = "tiny"
provider = "mock"
input_per_mtok = 1.0
output_per_mtok = 1.0
rpm = 1
"#,
    );
    let (_, results) = run_scripted(
        &host,
        json!([{"llm": {"prompt": "one"}}, {"llm": {"prompt": "two"}}]),
        RunOptions::default(),
    )
    .await;
    assert!(results[0]["ok"].is_object());
    assert!(
        results[1]["err"]
            .as_str()
            .unwrap()
            .contains("QuotaExhausted"),
        "{}",
        results[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_predicts_tokens_and_quality_scores_count() {
    let (_dir, host) = temp_host("sched-history", "");
    let op = json!({"llm": {"prompt": "Summarize this:\nfirst line.\nsecond line.", "task_type": "summarize"}});
    let (report, _) = run_scripted(&host, json!([op, op, op, op]), RunOptions::default()).await;
    let decisions = of_kind(&events(&host, &report.run_id), "llm.decision");
    let prediction = |d: &agentflow::ledger::query::EventRow| {
        d.response["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["model"] == "mock-small")
            .unwrap()["prediction"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(prediction(&decisions[0]), "prompt-length estimate");
    // All four calls are the same agent's: its own history predicts the fourth.
    assert_eq!(
        prediction(&decisions[3]),
        "history of 3 `summarize` calls by agent `scripted`"
    );

    for _ in 0..6 {
        host.scheduler()
            .record_quality("mock-small", "summarize", 0.0, "test-validator")
            .unwrap();
    }
    let (_, r) = llm_once(&host, json!({"prompt": "again"})).await;
    assert_eq!(
        r["ok"]["model"], "mock-fast",
        "a poor quality record moves the balanced choice"
    );
    assert!(
        host.scheduler()
            .record_quality("mock-small", "x", 1.5, "bad")
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_the_model_chosen_per_call_and_why() {
    let (_dir, host) = temp_host("sched-inspect", "");
    let (report, _) = llm_once(&host, json!({"prompt": "hi", "priority": "quality"})).await;
    let text = inspect_text(&host, &report.run_id);
    assert!(
        text.contains("→ mock-large: mock-large ranks first for priority Quality"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_catalogs_are_clear_errors() {
    let dir = TempDir::new("sched-bad");
    let err = |toml: &str| {
        let mut config = agentflow::HostConfig::from_toml(toml).map_err(|e| e.to_string())?;
        config.cache_dir = Some(cache_dir());
        Host::new(config, dir.ledger("x.db"))
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    };
    let e = err("[[llm.models]]\nname = \"m\"\nprovider = \"nowhere\"\ninput_per_mtok = 1.0\noutput_per_mtok = 1.0\n").unwrap_err();
    assert!(e.contains("unknown provider `nowhere`"), "{e}");
    let twice = "[[llm.models]]\nname = \"m\"\nprovider = \"mock\"\ninput_per_mtok = 1.0\noutput_per_mtok = 1.0\n";
    let e = err(&format!("{twice}{twice}")).unwrap_err();
    assert!(e.contains("listed twice"), "{e}");
    let e = err("[llm.scheduler]\nbreaker_failurs = 3\n").unwrap_err();
    assert!(e.contains("breaker_failurs"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_quotas_span_all_its_models() {
    let (_dir, host) = temp_host("sched-provider-quota", "[llm.quotas.mock]\nrpm = 2\n");
    let ops = json!([
        {"llm": {"prompt": "a", "priority": "cost"}},
        {"llm": {"prompt": "b", "priority": "quality"}},
        {"llm": {"prompt": "c", "priority": "latency"}},
    ]);
    let (_, results) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(results[0]["ok"]["model"], "mock-small");
    assert_eq!(results[1]["ok"]["model"], "mock-large");
    let err = results[2]["err"].as_str().unwrap();
    assert!(
        err.contains("QuotaExhausted") && err.contains("requests in the window"),
        "{err}"
    );
}
