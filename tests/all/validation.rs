//! Validators: programmatic checks, hallucinated success from the ledger, an LLM judge;
//! verdicts recorded, shown by inspect, fed to the performance DB.

use crate::support::*;
use agentflow::{RunOptions, Status};
use serde_json::json;

fn results(host: &agentflow::Host, run: &str) -> Vec<serde_json::Value> {
    events(host, run)
        .into_iter()
        .filter(|e| e.kind == "validation.result")
        .map(|e| e.response)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn programmatic_validators_pass_or_fail_with_a_category() {
    let dir = TempDir::new("val-prog");
    let host = host(
        &dir,
        r#"
[[validators]]
name = "is-array"
agents = ["scripted"]
kind = "json-schema"
schema = { type = "array", minItems = 1 }
[[validators]]
kind = "length"
agents = ["scripted"]
max_chars = 10000
[[validators]]
name = "greets"
agents = ["hello"]
kind = "pattern"
must_match = ["*answer to*"]
must_not_match = ["*TODO*"]
[[validators]]
name = "object-only"
agents = ["hello"]
kind = "json-schema"
schema = { type = "object" }
"#,
    );
    let (ok, _) = run_scripted(&host, json!([{"log": "x"}]), RunOptions::default()).await;
    assert_eq!(ok.status, Status::Completed, "{ok:?}");
    let r = results(&host, &ok.run_id);
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|v| v["result"]["verdict"] == "pass"));

    let hello = host
        .run_file(&example("hello"), "world", RunOptions::default())
        .await
        .unwrap();
    assert_eq!(hello.status, Status::Failed);
    let err = hello.error.unwrap();
    assert!(
        err.starts_with("validation failed [syntactic] object-only: output is not JSON"),
        "{err}"
    );
    let r = results(&host, &hello.run_id);
    assert_eq!(
        r[0]["result"]["verdict"], "pass",
        "the pattern ran first and passed"
    );
    assert_eq!(r[1]["category"], "syntactic");
    let conn = host.ledger().reader().unwrap();
    let text = agentflow::observe::inspect::render(
        &agentflow::observe::inspect::load(&conn, &hello.run_id)
            .unwrap()
            .unwrap(),
    );
    assert!(
        text.contains("✓ validator greets [semantic] pass")
            && text.contains("✗ validator object-only [syntactic] fail"),
        "{text}"
    );
    // Failures feed the producing model's quality score.
    assert!(host.scheduler().perf().quality("mock-small", 0.6) < 0.6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimed_effects_must_be_in_the_ledger() {
    let dir = TempDir::new("val-claims");
    let ws = dir.join("ws");
    let host = host(
        &dir,
        r#"
[[validators]]
name = "deploy-claims"
kind = "claims"
root_only = true
claims = [{ pattern = "*deployed*", tool = "cloud" }, { pattern = "*greet*", tool = "cloud" }]
"#,
    );
    let opts = RunOptions {
        grants: vec!["cloud".into()],
        workspace: Some(ws),
        ..Default::default()
    };
    let deployed = host
        .run_file(
            &example("deployer"),
            r#"{"app": "shop", "resources": 2}"#,
            opts,
        )
        .await
        .unwrap();
    assert_eq!(
        deployed.status,
        Status::Completed,
        "the children's cloud calls back the claim: {deployed:?}"
    );
    let hello = host
        .run_file(&example("hello"), "greet the world", RunOptions::default())
        .await
        .unwrap();
    assert_eq!(hello.status, Status::Failed);
    let err = hello.error.unwrap();
    assert!(
        err.contains("[hallucinated-success]") && err.contains("tool `cloud` never succeeded"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_judge_on_another_model_scores_the_output() {
    for (reply, status) in [
        ("score: 3 - the test asserts nothing", Status::Failed),
        ("Score: 9/10, thorough", Status::Completed),
        ("looks fine", Status::Completed),
    ] {
        let dir = TempDir::new("val-judge");
        let host = host(
            &dir,
            &format!(
                r#"
[llm.mock]
rules = [{{ task_type = "judge", reply = "{reply}" }}]
[[validators]]
kind = "judge"
agents = ["hello"]
rubric = "The greeting must be friendly."
threshold = 7
"#
            ),
        );
        let report = host
            .run_file(&example("hello"), "world", RunOptions::default())
            .await
            .unwrap();
        assert_eq!(report.status, status, "{reply}: {report:?}");
        let ev = events(&host, &report.run_id);
        let judge = ev.iter().find(|e| e.kind == "validation.judge").unwrap();
        assert_eq!(
            judge.model.as_deref(),
            Some("mock-large"),
            "not the producer's model"
        );
        assert!(
            judge.request["prompt"]
                .as_str()
                .unwrap()
                .contains("The greeting must be friendly.")
        );
        let verdict = results(&host, &report.run_id)[0]["result"]["verdict"].clone();
        let expected = match reply {
            "looks fine" => "uncertain",
            _ if status == Status::Failed => "fail",
            _ => "pass",
        };
        assert_eq!(verdict, expected, "{reply}");
    }
}

#[test]
fn bad_validators_are_config_errors() {
    let err = agentflow::HostConfig::from_toml("[[validators]]\nkind = \"json-schema\"\n")
        .err()
        .unwrap();
    assert!(err.to_string().contains("needs `schema`"), "{err}");
    let err = agentflow::HostConfig::from_toml("[[validators]]\nkind = \"vibes\"\n")
        .err()
        .unwrap();
    assert!(err.to_string().contains("kind `vibes`"), "{err}");
    assert_eq!(
        agentflow::validation::parse_score("Score: 8.5 because"),
        Some(8.5)
    );
    assert_eq!(agentflow::validation::parse_score("no number"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_validators_feedback_passes() {
    let dir = TempDir::new("val-retry-feedback");
    let host = host(
        &dir,
        r#"
[llm.mock]
rules = [{ contains = "feedback on your previous attempt", reply = "A revised, friendly greeting." }]
[[validators]]
name = "revised"
agents = ["hello"]
kind = "pattern"
must_match = ["*revised*"]
[retry]
max_attempts = 3
semantic = "feedback"
"#,
    );
    let report = host
        .run_file(&example("hello"), "world", RunOptions::default())
        .await
        .unwrap();
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(
        report.output.as_deref(),
        Some("A revised, friendly greeting.")
    );
    let ev = events(&host, &report.run_id);
    let retries: Vec<_> = ev.iter().filter(|e| e.kind == "validation.retry").collect();
    assert_eq!(retries.len(), 1);
    assert_eq!(retries[0].response["strategy"], "feedback");
    let verdicts: Vec<_> = results(&host, &report.run_id)
        .iter()
        .map(|r| r["result"]["verdict"].clone())
        .collect();
    assert_eq!(verdicts, vec![json!("fail"), json!("pass")]);
    let second_call = ev
        .iter()
        .filter(|e| e.kind == "llm.complete")
        .nth(1)
        .unwrap();
    let messages = second_call.request["chat"]["messages"].as_array().unwrap();
    assert!(
        messages.last().unwrap()["content"]
            .as_str()
            .unwrap()
            .contains("rejected by the validator `revised`")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_escalates_to_a_better_model() {
    let dir = TempDir::new("val-retry-escalate");
    let host = host(
        &dir,
        r#"
[llm.mock]
rules = [{ model = "mock-large", reply = "LARGE: a careful greeting." }]
[[validators]]
agents = ["hello"]
kind = "pattern"
must_match = ["LARGE*"]
[retry]
max_attempts = 2
semantic = "escalate"
"#,
    );
    let report = host
        .run_file(&example("hello"), "world", RunOptions::default())
        .await
        .unwrap();
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let models: Vec<_> = events(&host, &report.run_id)
        .into_iter()
        .filter(|e| e.kind == "llm.complete")
        .map(|e| e.model.unwrap())
        .collect();
    assert_eq!(models, vec!["mock-small", "mock-large"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_bounded_and_stop_when_the_budget_runs_out() {
    let dir = TempDir::new("val-retry-bounded");
    let toml = r#"
[[validators]]
agents = ["hello"]
kind = "pattern"
must_match = ["never*"]
[retry]
max_attempts = 4
semantic = "feedback"
"#;
    let host = host(&dir, toml);
    let report = host
        .run_file(&example("hello"), "world", RunOptions::default())
        .await
        .unwrap();
    assert_eq!(report.status, Status::Failed);
    let ev = events(&host, &report.run_id);
    assert_eq!(
        ev.iter().filter(|e| e.kind == "validation.retry").count(),
        3,
        "4 attempts in all"
    );
    // A budget that covers about one attempt stops the loop early.
    let dir2 = TempDir::new("val-retry-budget");
    let host2 = crate::support::host(&dir2, toml);
    let opts = RunOptions {
        budget_usd: Some(0.00012),
        ..Default::default()
    };
    let report = host2
        .run_file(&example("hello"), "world", opts)
        .await
        .unwrap();
    assert_eq!(report.status, Status::Failed);
    let attempts = events(&host2, &report.run_id)
        .iter()
        .filter(|e| e.kind == "llm.complete" && e.ok)
        .count();
    assert!(
        attempts < 4,
        "the budget stopped the retries after {attempts} attempts"
    );
    assert!(report.cost_usd <= 0.00012 + 1e-12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_a_retry_resumes_without_redoing_finished_attempts() {
    let dir = TempDir::new("val-retry-resume");
    let host = host(
        &dir,
        r#"
[llm.mock]
rules = [{ contains = "feedback on your previous attempt", reply = "A revised, friendly greeting." }]
[[validators]]
agents = ["hello"]
kind = "pattern"
must_match = ["*revised*"]
[retry]
max_attempts = 3
semantic = "feedback"
"#,
    );
    let report = host
        .run_file(&example("hello"), "world", RunOptions::default())
        .await
        .unwrap();
    assert_eq!(report.status, Status::Completed);
    // Cut the record right after the second attempt's LLM reply, as a crash would.
    let conn = rusqlite::Connection::open(dir.join("ledger.db")).unwrap();
    let cut: i64 = conn
        .query_row(
            "SELECT MAX(seq) FROM events WHERE kind = 'llm.complete'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    conn.execute("DELETE FROM events WHERE seq > ?1", [cut])
        .unwrap();
    conn.execute("UPDATE runs SET status = 'running', output = NULL", [])
        .unwrap();
    conn.execute("UPDATE tasks SET status = 'running', output = NULL", [])
        .unwrap();
    drop(conn);
    let resumed = host
        .resume(&report.run_id, agentflow::ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(resumed.status, Status::Completed, "{resumed:?}");
    assert_eq!(resumed.output, report.output);
    let ev = events(&host, &report.run_id);
    assert_eq!(
        ev.iter().filter(|e| e.kind == "llm.complete").count(),
        2,
        "no LLM call re-sent"
    );
    assert_eq!(
        ev.iter().filter(|e| e.kind == "validation.retry").count(),
        1,
        "the retry not repeated"
    );
}

#[test]
fn judge_calibration_reports_false_positive_and_negative_rates() {
    let dir = TempDir::new("val-eval");
    let config = dir.join("judge.toml");
    // The mock judge likes any output that mentions an assertion.
    std::fs::write(
        &config,
        r#"
[llm.mock]
rules = [{ task_type = "judge", contains = "assert", reply = "score: 9" }, { task_type = "judge", reply = "score: 2" }]
[[validators]]
kind = "judge"
rubric = "A test must check the behaviour it claims to test."
threshold = 7
"#,
    )
    .unwrap();
    let labelled = dir.join("labelled.jsonl");
    let rows = [
        (r#"assert_eq!(add(2, 2), 4);"#, "pass"),
        (r#"assert!(parse("x").is_err());"#, "pass"),
        (r#"let _ = add(2, 2); // checks nothing"#, "pass"),
        (r#"// assert nothing, just run it"#, "fail"),
        (r#"fn test() {}"#, "fail"),
        (r#"println!("ok");"#, "fail"),
        (r#"let x = 1;"#, "fail"),
    ];
    let text: String = rows
        .iter()
        .map(|(out, label)| {
            json!({"task": "write a test for add", "output": out, "label": label}).to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&labelled, text).unwrap();
    let out = crate::cli::agentflow()
        .arg("eval")
        .arg(&config)
        .arg(&labelled)
        .args(["--json", "--db"])
        .arg(dir.join("e.db"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["examples"], 7);
    assert_eq!(
        report["false_positives"], 1,
        "the comment that says 'assert' fools it"
    );
    assert_eq!(
        report["false_negatives"], 1,
        "a weak but acceptable test is failed"
    );
    assert!((report["false_positive_rate"].as_f64().unwrap() - 0.25).abs() < 1e-9);
    assert!((report["false_negative_rate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(report["model"], "mock-large");
    let text = crate::cli::agentflow()
        .arg("eval")
        .arg(&config)
        .arg(&labelled)
        .arg("--db")
        .arg(dir.join("e.db"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("false-positive rate 25.0%"));
}
