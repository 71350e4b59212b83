//! Provider failures as real providers send them, seen through a whole run: garbage
//! 2xx answers retried then counted against the model's health (the scheduler falls
//! back), every failed attempt recorded as an `llm.attempt` event and shown by
//! `inspect`, the performance DB getting the answering attempt's latency rather than
//! the retry waits, timed-out attempts' prompts estimated and charged, and a resume
//! over a ledger holding `llm.attempt` events. Providers are local fake servers.

use crate::support::cli::*;
use crate::support::fake_http::{FakeResponse, FakeServer};
use crate::support::llm::{openai_ok, reply_from};
use crate::support::*;
use agentflow::{RunOptions, Status};
use serde_json::{Value, json};

/// A catalog of `primary` (cheap, good: chosen first) on `primary_url` with
/// `primary_retry` and `primary_timeout_ms`, plus `backup` on `backup_url` when given.
fn catalog(
    primary_url: &str,
    primary_retry: &str,
    primary_timeout_ms: u64,
    backup_url: Option<&str>,
) -> String {
    let mut toml = format!(
        r#"
[llm.endpoints.a.openai]
base_url = "{primary_url}/v1"
timeout_ms = {primary_timeout_ms}
retry = {primary_retry}
[[llm.models]]
name = "primary"
provider = "a"
input_per_mtok = 100.0
output_per_mtok = 100.0
quality = 0.9
expected_latency_ms = 100
"#
    );
    if let Some(url) = backup_url {
        toml.push_str(&format!(
            r#"
[llm.endpoints.b.openai]
base_url = "{url}/v1"
retry = {{ max_retries = 0 }}
[[llm.models]]
name = "backup"
provider = "b"
input_per_mtok = 200.0
output_per_mtok = 200.0
quality = 0.5
expected_latency_ms = 500
"#
        ));
    }
    toml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_200s_are_retried_then_count_against_health_and_fall_back() {
    let garbage = FakeServer::start(vec![
        FakeResponse::text(200, "<html>502 from an upstream proxy</html>"),
        FakeResponse::json(200, r#"{"choices":[]}"#),
    ])
    .await;
    let good = FakeServer::start(vec![reply_from("backup-v1", 10, 5)]).await;
    let retry = "{ max_retries = 2, initial_backoff_ms = 10 }";
    let (_dir, host) = temp_host(
        "pf-garbage",
        &catalog(&garbage.url(), retry, 5_000, Some(&good.url())),
    );
    let (report, results) = run_scripted(
        &host,
        json!([{"llm": {"prompt": "hello"}}]),
        RunOptions::default(),
    )
    .await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(results[0]["ok"]["model"], "backup", "{results:?}");
    assert_eq!(garbage.request_count(), 3, "one try and two retries");

    let events = events(&host, &report.run_id);
    let attempts = of_kind(&events, "llm.attempt");
    assert_eq!(attempts.len(), 3);
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a.model.as_deref(), Some("primary"));
        assert_eq!(a.request["attempt"], i + 1);
        assert_eq!(a.response["status"], 200);
        assert_eq!(a.response["error_kind"], "malformed-response");
        assert_eq!(a.response["wait_ms"].is_null(), i == 2, "{}", a.response);
    }

    let status = host.scheduler().status();
    let primary = status.iter().find(|s| s.spec.name == "primary").unwrap();
    assert_eq!(primary.health.consecutive_failures, 1);
    assert!(primary.health.error_rate > 0.99, "{:?}", primary.health);
    assert_eq!(primary.stats.errors, 1);
    let backup = status.iter().find(|s| s.spec.name == "backup").unwrap();
    assert_eq!((backup.stats.calls, backup.stats.errors), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_are_events_shown_by_inspect_and_waits_are_not_latency() {
    let busy_then_fast = FakeServer::start(vec![
        FakeResponse::json(429, r#"{"error":"slow down"}"#).with_header("retry-after", "1"),
        FakeResponse::json(429, r#"{"error":"slow down"}"#).with_header("retry-after", "1"),
        reply_from("primary-v1", 10, 5).with_delay(10),
    ])
    .await;
    let (_dir, host) = temp_host(
        "pf-attempts",
        &catalog(&busy_then_fast.url(), "{ max_retries = 3 }", 5_000, None),
    );
    let (report, results) = run_scripted(
        &host,
        json!([{"llm": {"prompt": "hello"}}]),
        RunOptions::default(),
    )
    .await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(results[0]["ok"]["model"], "primary", "{results:?}");

    let events = events(&host, &report.run_id);
    let attempts = of_kind(&events, "llm.attempt");
    assert_eq!(attempts.len(), 2);
    for a in &attempts {
        assert_eq!(a.task_id, 1, "recorded under the calling task");
        assert_eq!(a.response["status"], 429);
        assert_eq!(a.response["wait_ms"], 1000);
        assert_eq!(a.response["tokens_estimated"], false);
        assert!(a.response["latency_ms"].as_u64().unwrap() < 1000);
        assert_eq!(a.cost_usd, 0.0, "a 429 is not billed");
    }
    let complete = of_kind(&events, "llm.complete").remove(0);
    let latency = complete.response["latency_ms"].as_u64().unwrap();
    let duration = complete.response["duration_ms"].as_u64().unwrap();
    assert!(latency < 1000, "the answering attempt alone: {latency} ms");
    assert!(
        duration >= 1900,
        "the call includes both waits: {duration} ms"
    );

    // The performance DB and health see the fast attempt, not the ~2 s of waiting.
    let perf = host.scheduler().perf().aggregate("primary", "default");
    assert_eq!((perf.calls, perf.errors), (1, 0));
    assert!(perf.latency_ms < 1000, "{perf:?}");
    let status = host.scheduler().status();
    let primary = status.iter().find(|s| s.spec.name == "primary").unwrap();
    assert!(
        primary.health.p95_ms.unwrap() < 1000,
        "{:?}",
        primary.health
    );

    let text = inspect_text(&host, &report.run_id);
    for n in [1, 2] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("↻ llm attempt {n} on primary: 429 ")))
            .unwrap_or_else(|| panic!("no line for attempt {n}:\n{text}"));
        assert!(line.contains("waited 1.0s"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_attempts_are_estimated_and_charged_to_the_budget() {
    let slow_then_fast = FakeServer::start(vec![
        reply_from("primary-v1", 10, 5).with_delay(2_000),
        reply_from("primary-v1", 10, 5).with_delay(2_000),
        reply_from("primary-v1", 10, 5),
    ])
    .await;
    let retry = "{ max_retries = 1, initial_backoff_ms = 10 }";
    let (_dir, host) = temp_host(
        "pf-timeout",
        &catalog(&slow_then_fast.url(), retry, 300, None),
    );
    let budget = 1.0;
    let (report, results) = run_scripted(
        &host,
        json!([{"llm": {"prompt": "hello"}}, {"llm": {"prompt": "again"}}]),
        RunOptions {
            budget_usd: Some(budget),
            ..RunOptions::default()
        },
    )
    .await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert!(
        results[0]["err"].as_str().unwrap().contains("Timeout"),
        "{results:?}"
    );
    assert_eq!(results[1]["ok"]["model"], "primary", "{results:?}");

    let events = events(&host, &report.run_id);
    let decisions = of_kind(&events, "llm.decision");
    let prompt_tokens = decisions[0].request["scheduling"]["estimated_input_tokens"]
        .as_i64()
        .unwrap();
    let attempts = of_kind(&events, "llm.attempt");
    assert_eq!(attempts.len(), 2, "both attempts timed out");
    let mut charged = 0.0;
    for a in &attempts {
        assert_eq!(a.response["error_kind"], "timeout");
        assert!(a.response["status"].is_null());
        assert_eq!(
            a.response["tokens_estimated"], true,
            "usage unknown, estimated"
        );
        assert_eq!(a.tokens_in, prompt_tokens);
        let expected = prompt_tokens as f64 * 100.0 / 1e6;
        assert!((a.cost_usd - expected).abs() < 1e-12, "{}", a.cost_usd);
        charged += a.cost_usd;
    }
    assert!(charged > 0.0);

    // The budget was charged: the second call saw less left than the run's budget.
    let left = decisions[1].request["scheduling"]["budget_remaining"]
        .as_f64()
        .unwrap();
    assert!(
        (left - (budget - charged)).abs() < 1e-9,
        "{left} vs {budget} - {charged}"
    );
    // And the run's cost counts the estimate besides the answered call.
    let answered = of_kind(&events, "llm.complete")
        .iter()
        .map(|e| e.cost_usd)
        .sum::<f64>();
    assert!(
        (report.cost_usd - (answered + charged)).abs() < 1e-9,
        "{} vs {answered} + {charged}",
        report.cost_usd
    );
    let text = inspect_text(&host, &report.run_id);
    assert!(
        text.contains(&format!("~{prompt_tokens} prompt tokens estimated")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_attempt_events_are_host_bookkeeping_not_guest_calls() {
    let server = FakeServer::start(vec![
        FakeResponse::json(503, "{}").with_header("retry-after-ms", "20"),
        reply_from("primary-v1", 10, 5),
    ])
    .await;
    let (_dir, host) = temp_host(
        "pf-aux",
        &catalog(&server.url(), "{ max_retries = 1 }", 5_000, None),
    );
    let (report, _) = run_scripted(
        &host,
        json!([{"llm": {"prompt": "hello"}}]),
        RunOptions::default(),
    )
    .await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert!(!agentflow::ledger::EventKind::from("llm.attempt").is_replayed());
    let events = events(&host, &report.run_id);
    assert_eq!(of_kind(&events, "llm.attempt").len(), 1);
    let (replay, _) = agentflow::replay::Replay::from_events(events);
    assert_eq!(replay.remaining(), 1, "replay sees only the llm.complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_judges_timed_out_attempt_is_recorded_and_charged_to_its_task() {
    let producer = FakeServer::start(vec![reply_from("primary-v1", 10, 5)]).await;
    let judge_reply = openai_ok("judge-v1", "score: 9", 50, 3);
    let judge = FakeServer::start(vec![judge_reply.clone().with_delay(2_000), judge_reply]).await;
    let dir = TempDir::new("pf-judge");
    let mut toml = catalog(&producer.url(), "{ max_retries = 0 }", 5_000, None);
    toml.push_str(&format!(
        r#"
[llm.endpoints.j.openai]
base_url = "{}/v1"
timeout_ms = 300
retry = {{ max_retries = 1, initial_backoff_ms = 10 }}
[[llm.models]]
name = "judge"
provider = "j"
input_per_mtok = 300.0
output_per_mtok = 300.0
quality = 0.4
expected_latency_ms = 900
[[validators]]
kind = "judge"
agents = ["hello"]
model = "judge"
rubric = "The greeting must be friendly."
"#,
        judge.url()
    ));
    let host = host(&dir, &toml);
    let report = host
        .run_file(&example("hello"), "world", RunOptions::default())
        .await
        .unwrap();
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(
        judge.request_count(),
        2,
        "the judge's call was retried once"
    );
    let events = events(&host, &report.run_id);
    let attempts = of_kind(&events, "llm.attempt");
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    let attempt = &attempts[0];
    assert_eq!(
        (attempt.task_id, attempt.model.as_deref()),
        (1, Some("judge"))
    );
    assert_eq!(attempt.response["error_kind"], "timeout");
    assert_eq!(attempt.response["tokens_estimated"], true);
    assert!(
        attempt.tokens_in > 0 && attempt.cost_usd > 0.0,
        "{attempt:?}"
    );
    let judged = of_kind(&events, "validation.judge").remove(0);
    assert!(judged.ok, "{:?}", judged.response);
    let recorded: f64 = events.iter().map(|e| e.cost_usd).sum();
    assert!((report.cost_usd - recorded).abs() < 1e-9);
    assert!(report.cost_usd >= attempt.cost_usd + judged.cost_usd);
}

/// `agentflow run` of the scripted agent, killed after `crash_after` ledger events if set.
fn run_cli(
    config: &std::path::Path,
    db: &std::path::Path,
    ops: &str,
    crash_after: Option<u64>,
) -> std::process::Output {
    let mut cmd = agentflow();
    cmd.arg("run")
        .arg(example("scripted"))
        .args(["--input", ops, "--json", "--config"])
        .arg(config)
        .arg("--db")
        .arg(db);
    if let Some(n) = crash_after {
        cmd.env("AGENTFLOW_CRASH_AFTER_EVENTS", n.to_string());
    }
    cmd.output().unwrap()
}

fn output_of(out: &std::process::Output) -> Value {
    stdout_json(out)["output"].clone()
}

#[test]
fn a_run_with_failed_attempts_resumes_after_a_crash_at_every_event() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let script = || {
        vec![
            FakeResponse::json(429, "{}").with_header("retry-after-ms", "30"),
            reply_from("primary-v1", 10, 5),
        ]
    };
    let ops = json!([{"llm": {"prompt": "first"}}, {"llm": {"prompt": "second"}}]).to_string();
    let base_dir = TempDir::new("pf-resume-base");
    let server = rt.block_on(FakeServer::start(script()));
    let config = base_dir.file(
        "c.toml",
        catalog(&server.url(), "{ max_retries = 2 }", 5_000, None),
    );
    let db = base_dir.ledger("b.db");
    let baseline = run_cli(&config, &db, &ops, None);
    assert!(baseline.status.success(), "{}", stderr(&baseline));
    let baseline_output = output_of(&baseline);
    let total: u64 = sql(&db, "SELECT COUNT(*) FROM events");
    let attempts: u64 = sql(
        &db,
        "SELECT COUNT(*) FROM events WHERE kind = 'llm.attempt'",
    );
    assert_eq!(attempts, 1);

    let shown = stdout(&agentflow_on(&db, ["inspect", &only_run_id(&db)]));
    assert!(
        shown.contains("↻ llm attempt 1 on primary: 429 "),
        "{shown}"
    );

    for k in 1..=total {
        let dir = TempDir::new("pf-resume");
        let server = rt.block_on(FakeServer::start(script()));
        let config = dir.file(
            "c.toml",
            catalog(&server.url(), "{ max_retries = 2 }", 5_000, None),
        );
        let db = dir.ledger("r.db");
        let crashed = run_cli(&config, &db, &ops, Some(k));
        assert!(
            !crashed.status.success(),
            "after event {k}: the host was killed"
        );
        let resumed = agentflow_on(
            &db,
            [
                "resume",
                &only_run_id(&db),
                "--json",
                "--config",
                config.to_str().unwrap(),
            ],
        );
        assert!(
            resumed.status.success(),
            "after event {k}: {}",
            stderr(&resumed)
        );
        assert_eq!(output_of(&resumed), baseline_output, "after event {k}");
    }
}
