//! Retry strategies end to end, on the `hello` example with a pattern validator:
//! `same` (a plain re-run), `temperature` (the retried attempt's LLM calls at the
//! configured temperature, recorded in the request and the `validation.retry` marker),
//! chains of strategies across attempts, and a crash in a `temperature` attempt that
//! resumes by replaying it.

use crate::support::cli::*;
use crate::support::*;
use agentflow::ledger::query::EventRow;
use agentflow::{RunOptions, Status};
use serde_json::{Value, json};

/// The run's `llm.complete` and `validation.retry` events, in order.
async fn run_hello(
    label: &str,
    toml: &str,
) -> (agentflow::RunReport, Vec<EventRow>, Vec<EventRow>) {
    let (_dir, host) = temp_host(label, toml);
    let report = host
        .run_file(&example("hello"), "world", RunOptions::default())
        .await
        .unwrap();
    let ev = events(&host, &report.run_id);
    (
        report,
        of_kind(&ev, "llm.complete"),
        of_kind(&ev, "validation.retry"),
    )
}

fn temperatures(calls: &[EventRow]) -> Vec<Value> {
    calls
        .iter()
        .map(|c| c.request["chat"]["temperature"].clone())
        .collect()
}

fn messages(call: &EventRow) -> Value {
    call.request["chat"]["messages"].clone()
}

const NEVER_PASSES: &str = r#"
[[validators]]
name = "never"
agents = ["hello"]
kind = "pattern"
must_match = ["never*"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_retry_reruns_without_feedback_on_the_same_model() {
    let toml = format!("{NEVER_PASSES}[retry]\nmax_attempts = 2\nsemantic = \"same\"\n");
    let (report, calls, retries) = run_hello("retry-same", &toml).await;
    assert_eq!(report.status, Status::Failed, "{report:?}");
    assert_eq!(calls.len(), 2, "one LLM call per attempt");
    let models: Vec<_> = calls.iter().map(|c| c.model.clone().unwrap()).collect();
    assert_eq!(models, ["mock-small", "mock-small"]);
    assert_eq!(
        messages(&calls[1]),
        messages(&calls[0]),
        "the same prompt: no feedback added"
    );
    assert_eq!(temperatures(&calls), [Value::Null, Value::Null]);
    assert_eq!(retries.len(), 1);
    let marker = &retries[0].response;
    assert_eq!(marker["strategy"], "same");
    assert_eq!(marker["attempt"], 2);
    assert_eq!(marker["feedback"], Value::Null);
    assert_eq!(
        marker["model"], "mock-small",
        "pinned to the failed attempt's model (the scheduler, having seen the failure, would move)"
    );
    assert_eq!(marker["temperature"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temperature_retry_sends_and_records_the_configured_temperature() {
    let toml = format!(
        "{NEVER_PASSES}[retry]\nmax_attempts = 2\nsemantic = \"temperature\"\ntemperature = 0.9\n"
    );
    let (report, calls, retries) = run_hello("retry-temperature", &toml).await;
    assert_eq!(report.status, Status::Failed, "{report:?}");
    assert_eq!(calls.len(), 2);
    // `hello` asks for no temperature: the first attempt sends none, the retry 0.9.
    assert_eq!(temperatures(&calls), [Value::Null, json!(0.9)]);
    assert_eq!(messages(&calls[1]), messages(&calls[0]), "no feedback");
    assert_eq!(calls[1].model.as_deref(), Some("mock-small"));
    let marker = &retries[0].response;
    assert_eq!(marker["strategy"], "temperature");
    assert_eq!(marker["temperature"], json!(0.9));
    assert_eq!(marker["feedback"], Value::Null);
    assert_eq!(marker["model"], "mock-small");

    // Without `temperature =`, the default.
    let toml = format!("{NEVER_PASSES}[retry]\nmax_attempts = 2\nsemantic = \"temperature\"\n");
    let (_, calls, retries) = run_hello("retry-temperature-default", &toml).await;
    assert_eq!(temperatures(&calls), [Value::Null, json!(1.0)]);
    assert_eq!(retries[0].response["temperature"], json!(1.0));
}

const CHAIN: &str = r#"
[llm.mock]
rules = [{ model = "mock-large", reply = "LARGE: a careful greeting." }]
[[validators]]
name = "large"
agents = ["hello"]
kind = "pattern"
must_match = ["LARGE*"]
[retry]
max_attempts = 5
semantic = ["same", "temperature", "escalate"]
temperature = [0.3, 0.7]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_applies_its_strategies_in_order_across_attempts() {
    let (report, calls, retries) = run_hello("retry-chain", CHAIN).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(report.output.as_deref(), Some("LARGE: a careful greeting."));
    let strategies: Vec<_> = retries
        .iter()
        .map(|r| {
            (
                r.response["attempt"].clone(),
                r.response["strategy"].clone(),
            )
        })
        .collect();
    assert_eq!(
        strategies,
        [
            (json!(2), json!("same")),
            (json!(3), json!("temperature")),
            (json!(4), json!("escalate"))
        ],
        "attempt 2 the first, 3 the second, 4 the third; 4 passed so no 5th"
    );
    let models: Vec<_> = calls.iter().map(|c| c.model.clone().unwrap()).collect();
    assert_eq!(
        models,
        ["mock-small", "mock-small", "mock-small", "mock-large"]
    );
    // Attempt 3 is the second retry: the second temperature of the list.
    assert_eq!(
        temperatures(&calls),
        [Value::Null, Value::Null, json!(0.7), Value::Null]
    );
    let with_feedback: Vec<bool> = calls
        .iter()
        .map(|c| {
            messages(c)
                .to_string()
                .contains("rejected by the validator `large`")
        })
        .collect();
    assert_eq!(with_feedback, [false, false, false, true]);
}

#[test]
fn a_crash_in_a_temperature_attempt_resumes_by_replaying_it() {
    let dir = TempDir::new("retry-temperature-crash");
    let config = dir.file(
        "agentflow.toml",
        r#"
[llm.mock]
rules = [{ model = "mock-large", reply = "LARGE: a careful greeting." }]
[[validators]]
agents = ["hello"]
kind = "pattern"
must_match = ["LARGE*"]
[retry]
max_attempts = 3
semantic = ["temperature", "escalate"]
temperature = 0.9
"#,
    );
    let run = |db: &std::path::Path, crash_after: Option<usize>| {
        let mut cmd = agentflow();
        cmd.arg("run")
            .arg(example("hello"))
            .args(["--input", "world", "--json", "--db"])
            .arg(db)
            .arg("--config")
            .arg(&config);
        if let Some(n) = crash_after {
            cmd.env("AGENTFLOW_CRASH_AFTER_EVENTS", n.to_string());
        }
        cmd.output().unwrap()
    };
    let kinds = |db: &std::path::Path| -> Vec<String> {
        let conn = crate::support::connect(db);
        let mut stmt = conn
            .prepare("SELECT kind FROM events ORDER BY seq")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    // An uncrashed run, to know where the temperature attempt's LLM reply falls.
    let reference_db = dir.ledger("reference.db");
    let reference = run(&reference_db, None);
    assert!(reference.status.success(), "{}", stderr(&reference));
    let reference_report = stdout_json(&reference);
    let reference_kinds = kinds(&reference_db);
    let second_llm = reference_kinds
        .iter()
        .enumerate()
        .filter(|(_, k)| *k == "llm.complete")
        .nth(1)
        .map(|(i, _)| i)
        .expect("a second attempt");
    // Die right after the temperature attempt's LLM reply is committed.
    let db = dir.ledger("crashed.db");
    let crashed = run(&db, Some(second_llm + 1));
    assert!(!crashed.status.success());
    assert_eq!(kinds(&db), reference_kinds[..=second_llm], "cut as planned");
    let temperature_sent: Value = serde_json::from_str(&sql::<String>(
        &db,
        "SELECT request FROM events WHERE kind = 'llm.complete' ORDER BY seq DESC LIMIT 1",
    ))
    .unwrap();
    assert_eq!(temperature_sent["chat"]["temperature"], json!(0.9));

    let report = resume_only_run(&db, &config);
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["output"], reference_report["output"]);
    let count = |kind: &str| -> i64 {
        sql(
            &db,
            &format!("SELECT COUNT(*) FROM events WHERE kind = '{kind}'"),
        )
    };
    assert_eq!(
        count("replay.diverged"),
        0,
        "the temperature attempt replayed"
    );
    assert_eq!(count("llm.complete"), 3, "no LLM call re-sent");
    assert_eq!(count("validation.retry"), 2);
    let conn = crate::support::connect(&db);
    let markers: Vec<(String, Option<f64>)> = conn
        .prepare("SELECT response FROM events WHERE kind = 'validation.retry' ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|r| {
            let v: Value = serde_json::from_str(&r.unwrap()).unwrap();
            (
                v["strategy"].as_str().unwrap().to_string(),
                v["temperature"].as_f64(),
            )
        })
        .collect();
    assert_eq!(
        markers,
        [("temperature".into(), Some(0.9)), ("escalate".into(), None)]
    );
}

#[test]
fn a_bad_retry_value_is_a_config_error_naming_its_key() {
    let dir = TempDir::new("retry-bad-config");
    for (text, key) in [
        (
            "semantic = [\"same\", \"again\"]",
            "[retry] semantic[1]: unknown strategy `again`",
        ),
        ("temperature = 3", "[retry] temperature: 3 is out of range"),
    ] {
        let path = dir.file("bad.toml", format!("[retry]\n{text}\n"));
        let err = agentflow::HostConfig::from_file(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{text}: {err}");
        assert!(err.contains("bad.toml"), "{err}");
    }
    // The README's example reads.
    let ok = agentflow::HostConfig::from_toml(
        "[retry]\nmax_attempts = 4\nsemantic = [\"same\", \"temperature\", \"escalate\"]\ntemperature = [0.7, 1.0]\n",
    )
    .unwrap();
    assert_eq!(ok.retry.temperature, [0.7, 1.0]);
}
