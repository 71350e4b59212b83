//! Validators: programmatic checks, hallucinated success from the ledger, an LLM judge;
//! verdicts recorded, shown by inspect, fed to the performance DB.

use crate::support::cli::*;
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
    let (_dir, host) = temp_host(
        "val-prog",
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
    let text = inspect_text(&host, &hello.run_id);
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
        workspace: Some(ws),
        ..grant(&["cloud"])
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
        let (_dir, host) = temp_host(
            "val-judge",
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
    for (toml, expected) in [
        ("kind = \"component\"", "component needs `component`"),
        ("kind = \"outcome\"", "outcome needs either `tool`"),
        (
            "kind = \"outcome\"\ntool = \"cloud\"\ncomponent = \"x.wasm\"",
            "outcome needs either `tool`",
        ),
        (
            "kind = \"pattern\"\ngrnat = [\"kv\"]",
            "unknown field `grnat`",
        ),
    ] {
        let err = agentflow::HostConfig::from_toml(&format!("[[validators]]\n{toml}\n"))
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains(expected), "{err:#}");
    }
    let err = agentflow::HostConfig::from_toml("[retry]\nsemantic = \"ask\"\n")
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("human"), "{err:#}");
    assert_eq!(
        agentflow::attempts::parse_score("Score: 8.5 because"),
        Some(8.5)
    );
    assert_eq!(agentflow::attempts::parse_score("no number"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_validators_feedback_passes() {
    let (_dir, host) = temp_host(
        "val-retry-feedback",
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
    let (_dir, host) = temp_host(
        "val-retry-escalate",
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
    let toml = r#"
[[validators]]
agents = ["hello"]
kind = "pattern"
must_match = ["never*"]
[retry]
max_attempts = 4
semantic = "feedback"
"#;
    let (_dir, host) = temp_host("val-retry-bounded", toml);
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
    let (_dir2, host2) = temp_host("val-retry-budget", toml);
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
    assert_eq!(
        attempts, 1,
        "the budget covers one attempt's reservation; the retry's does not fit after it"
    );
    let error = report.error.clone().unwrap_or_default();
    assert!(
        error.contains("budget") || error.to_lowercase().contains("budgetexceeded"),
        "the budget is why it stopped: {error}"
    );
    assert!(report.cost_usd <= 0.00012 + 1e-12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_a_retry_resumes_without_redoing_finished_attempts() {
    let (dir, host) = temp_host(
        "val-retry-resume",
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
    let conn = crate::support::connect(dir.ledger("ledger.db"));
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
/// `agentflow eval` counts a judge's false positives and negatives against labels. The
/// judge here is a keyword mock (it likes any output mentioning "assert"), so this
/// checks the counting and the rates, not a model's judgement; and the threshold's
/// boundary: a score equal to `threshold` passes, one below fails.
fn judge_calibration_counts_a_keyword_mock_judges_errors_and_its_threshold_boundary() {
    let dir = TempDir::new("val-eval");
    // The mock judge likes any output that mentions an assertion.
    let config = dir.file(
        "judge.toml",
        r#"
[llm.mock]
rules = [{ task_type = "judge", contains = "at-threshold", reply = "score: 7" }, { task_type = "judge", contains = "under-threshold", reply = "score: 6" }, { task_type = "judge", contains = "assert", reply = "score: 9" }, { task_type = "judge", reply = "score: 2" }]
[[validators]]
kind = "judge"
rubric = "A test must check the behaviour it claims to test."
threshold = 7
"#,
    );
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
    let labelled = dir.file("labelled.jsonl", text);
    let eval = |file: &std::path::Path, format: &[&str]| {
        let (config, file) = (config.to_str().unwrap(), file.to_str().unwrap());
        agentflow_on(
            &dir.ledger("e.db"),
            ["eval", config, file].iter().chain(format),
        )
    };
    let out = eval(&labelled, &["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout_json(&out);
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
    let text = stdout(&eval(&labelled, &[]));
    assert!(text.contains("false-positive rate 25.0%"));

    // The boundary: scored exactly 7 (the threshold) passes, 6 fails.
    let rows = [
        ("at-threshold output", "pass"),
        ("under-threshold output", "fail"),
    ];
    let text: String = rows
        .iter()
        .map(|(out, label)| {
            json!({"task": "write a test for add", "output": out, "label": label}).to_string()
                + "\n"
        })
        .collect();
    let boundary = dir.file("boundary.jsonl", text);
    let report = stdout_json(&eval(&boundary, &["--json"]));
    assert_eq!(report["examples"], 2);
    assert_eq!(
        report["false_negatives"], 0,
        "a score of 7 passes: {report}"
    );
    assert_eq!(report["false_positives"], 0, "a score of 6 fails: {report}");
}

// ---- validator components, outcome validators, human reviews, per-task validators ----

fn probe_config(extra: &str) -> String {
    format!(
        r#"
[tools]
grant = ["kv"]
[llm.mock]
rules = [{{ contains = "say bad", reply = "this is probe:bad" }}]
[[validators]]
name = "probe-granted"
agents = ["scripted"]
kind = "component"
component = {:?}
grant = ["kv", "workspace"]
{extra}
"#,
        example("probe-validator").to_str().unwrap()
    )
}

fn validator_calls(host: &agentflow::Host, run: &str) -> Vec<agentflow::ledger::query::EventRow> {
    of_kind(&events(host, run), "validator.call")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_component_passes_or_fails_with_its_category() {
    let (_dir, host) = temp_host("val-component", &probe_config(""));
    let (ok, _) = run_scripted(&host, json!([{"log": "x"}]), RunOptions::default()).await;
    assert_eq!(ok.status, Status::Completed, "{ok:?}");
    let r = results(&host, &ok.run_id);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["result"]["verdict"], "pass");
    // Its trace step is recorded under the task, as the validator's.
    let calls = validator_calls(&host, &ok.run_id);
    assert!(
        calls
            .iter()
            .any(|e| e.request["call"] == "trace.step" && e.request["validator"] == "probe-granted"),
        "{calls:?}"
    );

    let (bad, _) = run_scripted(
        &host,
        json!([{"llm": {"prompt": "say bad"}}]),
        RunOptions::default(),
    )
    .await;
    assert_eq!(bad.status, Status::Failed);
    let err = bad.error.unwrap();
    assert!(
        err.starts_with("validation failed [partial] probe-granted: the output contains probe:bad"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_component_uses_granted_tools_and_is_denied_the_others() {
    // probe-denied has no `grant`: deny by default, although the run has kv.
    let (_dir, host) = temp_host(
        "val-component-tools",
        &probe_config(&format!(
            "[[validators]]\nname = \"probe-denied\"\nagents = [\"scripted\"]\nkind = \"component\"\ncomponent = {:?}\n",
            example("probe-validator").to_str().unwrap()
        )),
    );
    let put = |v: &str| json!({"tool": {"name": "kv", "args": {"op": "put", "key": "verdict", "value": v}}});
    let (ok, _) = run_scripted(
        &host,
        json!([put("pass"), {"log": "probe:kv"}]),
        RunOptions::default(),
    )
    .await;
    assert_eq!(ok.status, Status::Completed, "{ok:?}");
    let r = results(&host, &ok.run_id);
    assert_eq!(r[0]["result"]["verdict"], "pass", "{r:?}");
    assert_eq!(r[1]["result"]["verdict"], "uncertain", "{r:?}");
    let why = r[1]["result"]["reason"].as_str().unwrap();
    assert!(why.contains("NotGranted"), "{why}");
    assert!(why.contains("not in this validator's `grant`"), "{why}");
    let calls = validator_calls(&host, &ok.run_id);
    let tool_calls: Vec<_> = calls
        .iter()
        .filter(|e| e.request["call"] == "tools.call")
        .collect();
    assert_eq!(tool_calls.len(), 2, "{calls:?}");
    assert!(
        tool_calls
            .iter()
            .any(|e| e.ok && e.request["validator"] == "probe-granted")
    );
    assert!(
        tool_calls
            .iter()
            .any(|e| !e.ok && e.request["validator"] == "probe-denied")
    );
    // Validator calls do not count as the agent's tool use.
    assert_eq!(
        events(&host, &ok.run_id)
            .iter()
            .filter(|e| e.kind == "tools.call")
            .count(),
        1
    );

    let (bad, _) = run_scripted(
        &host,
        json!([put("nope"), {"log": "probe:kv"}]),
        RunOptions::default(),
    )
    .await;
    assert_eq!(bad.status, Status::Failed);
    let err = bad.error.unwrap();
    assert!(
        err.starts_with("validation failed [semantic] probe-granted: kv says the verdict is"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_validator_component_is_uncertain_and_the_host_keeps_going() {
    let (_dir, host) = temp_host(
        "val-component-hostile",
        &probe_config("[limits]\ncpu_ms = 300\n"),
    );
    let (trapped, _) =
        run_scripted(&host, json!([{"log": "probe:trap"}]), RunOptions::default()).await;
    assert_eq!(trapped.status, Status::Completed, "{trapped:?}");
    let r = results(&host, &trapped.run_id);
    assert_eq!(r[0]["result"]["verdict"], "uncertain");
    let why = r[0]["result"]["reason"].as_str().unwrap();
    assert!(why.contains("validator component trapped"), "{why}");
    assert!(
        why.contains("told to trap"),
        "the panic message from stderr: {why}"
    );

    let started = std::time::Instant::now();
    let (looped, _) =
        run_scripted(&host, json!([{"log": "probe:loop"}]), RunOptions::default()).await;
    assert_eq!(looped.status, Status::Completed, "{looped:?}");
    let r = results(&host, &looped.run_id);
    assert_eq!(r[0]["result"]["verdict"], "uncertain");
    let why = r[0]["result"]["reason"].as_str().unwrap();
    assert!(why.contains("CPU time limit exceeded"), "{why}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));

    // The host is fine: the next run validates normally.
    let (ok, _) = run_scripted(&host, json!([{"log": "x"}]), RunOptions::default()).await;
    assert_eq!(results(&host, &ok.run_id)[0]["result"]["verdict"], "pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_validator_component_is_a_clear_error_before_the_run() {
    let dir = TempDir::new("val-component-malformed");
    let junk = dir.file("junk.wasm", b"not wasm at all");
    for (component, expected) in [
        (junk.clone(), "not a WebAssembly file"),
        (example("hello"), "validator components may import only"),
        (dir.join("missing.wasm"), "cannot read validator component"),
    ] {
        let host = host(
            &dir,
            &format!(
                "[[validators]]\nname = \"broken\"\nkind = \"component\"\ncomponent = {:?}\n",
                component.to_str().unwrap()
            ),
        );
        let err = host
            .run_file(&example("scripted"), "[]", RunOptions::default())
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("[[validators]] broken"), "{msg}");
        assert!(msg.contains(expected), "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_outcome_check_rolls_back_the_subtree() {
    let dir = TempDir::new("val-outcome");
    let ws = dir.join("ws");
    let host = host(
        &dir,
        &format!(
            r#"
[tools]
grant = ["cloud"]
workspace = {:?}
[[validators]]
name = "deployed-healthy"
kind = "outcome"
root_only = true
tool = "cloud"
args = {{ op = "health", id = "{{effect.id}}" }}
"#,
            ws.to_str().unwrap()
        ),
    );
    let create =
        |r: &str| json!({"tool": {"name": "cloud", "args": {"op": "create", "resource": r}}});
    let child = json!([create("unhealthy-db")]).to_string();
    let ops = json!([create("web"), {"spawn_wait": {"description": "database", "input": child}}]);
    let (report, _) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Failed);
    let err = report.error.unwrap();
    assert!(
        err.starts_with("validation failed [degraded] deployed-healthy: `cloud` reports"),
        "{err}"
    );
    assert!(
        err.contains("rolled back 2 of 2 effect(s) of tasks [1, 2]"),
        "{err}"
    );
    let log = std::fs::read_to_string(ws.join("cloud.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 4, "{log}");
    assert!(lines[0].starts_with("create web "), "{log}");
    assert!(lines[1].starts_with("create unhealthy-db "), "{log}");
    let id_of = |line: &str| {
        line.split_whitespace()
            .nth(2)
            .unwrap()
            .trim_start_matches("id=")
            .to_string()
    };
    // Newest effect first: the database (the child's), then the web server.
    assert!(
        lines[2].starts_with(&format!("destroy {}", id_of(lines[1]))),
        "{log}"
    );
    assert!(
        lines[3].starts_with(&format!("destroy {}", id_of(lines[0]))),
        "{log}"
    );
    let ev = events(&host, &report.run_id);
    assert_eq!(
        ev.iter()
            .filter(|e| e.kind == "recovery.compensate" && e.ok)
            .count(),
        2
    );
    assert!(ev.iter().any(|e| e.kind == "validation.outcome" && !e.ok));
    assert!(ev.iter().any(|e| e.kind == "validation.rollback" && e.ok));

    // An outcome check by a validator component: it fails, the task is rolled back.
    let ws3 = dir.join("ws3");
    let host3 = crate::support::host(
        &dir,
        &format!(
            "[tools]\ngrant = [\"cloud\"]\nworkspace = {:?}\n[llm.mock]\nrules = [{{ contains = \"say bad\", reply = \"probe:bad\" }}]\n\
             [[validators]]\nname = \"probe-outcome\"\nkind = \"outcome\"\ncomponent = {:?}\n",
            ws3.to_str().unwrap(),
            example("probe-validator").to_str().unwrap()
        ),
    );
    let (bad, _) = run_scripted(
        &host3,
        json!([create("web"), {"llm": {"prompt": "say bad"}}]),
        RunOptions::default(),
    )
    .await;
    let err = bad.error.unwrap_or_default();
    assert!(
        err.starts_with("validation failed [degraded] probe-outcome: the output contains probe:bad; rolled back 1 of 1"),
        "{err}"
    );
    let log = std::fs::read_to_string(ws3.join("cloud.log")).unwrap();
    assert!(log.lines().nth(1).unwrap().starts_with("destroy "), "{log}");

    // Healthy resources pass, and nothing is destroyed.
    let ws2 = dir.join("ws2");
    let host2 = crate::support::host(
        &dir,
        &format!(
            "[tools]\ngrant = [\"cloud\"]\nworkspace = {:?}\n[[validators]]\nkind = \"outcome\"\ntool = \"cloud\"\nargs = {{ op = \"health\", id = \"{{effect.id}}\" }}\n",
            ws2.to_str().unwrap()
        ),
    );
    let (ok, _) = run_scripted(&host2, json!([create("web")]), RunOptions::default()).await;
    assert_eq!(ok.status, Status::Completed, "{ok:?}");
    let log = std::fs::read_to_string(ws2.join("cloud.log")).unwrap();
    assert_eq!(log.lines().count(), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_carries_its_own_validators_from_the_spawn() {
    let (_dir, host) = temp_host("val-spawned", "");
    let never = json!({"name": "says-never", "kind": "pattern", "must_match": ["*never*"]});
    let ops = json!([
        {"spawn_wait": {"description": "checked child", "input": "", "validators": [never]}},
        {"spawn_wait": {"description": "unchecked child", "input": ""}},
        {"spawn": {"description": "bad validator", "input": "", "validators": [{"kind": "judge"}]}},
        {"spawn": {"description": "agent-chosen component", "input": "",
                   "validators": [{"kind": "component", "component": "/tmp/x.wasm"}]}},
    ]);
    let (report, results_) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let failed = results_[0]["failed"].as_str().unwrap();
    assert!(
        failed.starts_with("validation failed [semantic] says-never: does not match `*never*`"),
        "{results_:?}"
    );
    assert_eq!(results_[1]["completed"], "child:");
    let e = results_[2]["err"].as_str().unwrap();
    assert!(
        e.contains("InvalidRequest") && e.contains("judge needs `rubric`"),
        "{e}"
    );
    let e = results_[3]["err"].as_str().unwrap();
    assert!(
        e.contains("InvalidRequest") && e.contains("only be configured by the operator"),
        "{e}"
    );
    // Durable: stored with the child before it started (a resume reads them back).
    let conn = host.ledger().reader().unwrap();
    let stored: String = conn
        .query_row(
            "SELECT validators FROM task_validators WHERE run_id = ?1 AND task_id = 2",
            [&report.run_id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(stored.contains("says-never"), "{stored}");
    let r: Vec<_> = events(&host, &report.run_id)
        .into_iter()
        .filter(|e| e.kind == "validation.result")
        .map(|e| e.task_id)
        .collect();
    assert_eq!(r, vec![2], "only the checked child was validated");
}

#[test]
fn a_childs_own_validators_survive_a_crash_before_it_starts() {
    let dir = TempDir::new("val-spawned-crash");
    let db = dir.ledger("s.db");
    let never = json!({"name": "says-never", "kind": "pattern", "must_match": ["*never*"]});
    let ops = json!([
        {"spawn_wait": {"description": "checked child", "input": "", "validators": [never]}}
    ])
    .to_string();
    // The host dies once the child's row (and its validators) are in the ledger, before
    // the child ever runs: only the ledger can tell the resumed host about them.
    let crashed = agentflow()
        .arg("run")
        .arg(example("scripted"))
        .args(["--input", &ops, "--db"])
        .arg(&db)
        .env("AGENTFLOW_CRASH_AT", "spawn-created")
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    let resumed = agentflow_on(&db, ["resume", &only_run_id(&db), "--json"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let report = stdout_json(&resumed);
    let results: Vec<serde_json::Value> =
        serde_json::from_str(report["output"].as_str().unwrap()).unwrap();
    let failed = results[0]["failed"].as_str().unwrap_or_default();
    assert!(
        failed.starts_with("validation failed [semantic] says-never"),
        "{results:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_human_can_reject_a_failed_output() {
    let dir = TempDir::new("val-human-reject");
    let host = std::sync::Arc::new(host(
        &dir,
        r#"
[[validators]]
name = "revised"
agents = ["hello"]
kind = "pattern"
must_match = ["*revised*"]
[retry]
max_attempts = 3
semantic = "human"
"#,
    ));
    let h = host.clone();
    let run = tokio::spawn(async move {
        h.run_file(&example("hello"), "world", RunOptions::default())
            .await
            .unwrap()
    });
    let mut pending = Vec::new();
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        pending =
            agentflow::attempts::review::list(&host.ledger().reader().unwrap(), false).unwrap();
        if !pending.is_empty() {
            break;
        }
    }
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].validator, "revised");
    assert_eq!(pending[0].category, "semantic");
    let ledger = host.ledger().clone();
    let id = pending[0].id;
    tokio::task::spawn_blocking(move || {
        agentflow::attempts::review::decide_blocking(
            &ledger,
            id,
            false,
            Some("not shippable".into()),
        )
    })
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    let report = run.await.unwrap();
    assert_eq!(report.status, Status::Failed);
    let err = report.error.unwrap();
    assert!(
        err.contains(&format!("rejected by a human (review {id}): not shippable")),
        "{err}"
    );
}

#[test]
fn a_human_review_survives_a_host_restart() {
    let dir = TempDir::new("val-human-restart");
    let db = dir.ledger("h.db");
    let config = dir.file(
        "c.toml",
        r#"
[llm.mock]
rules = [{ contains = "guidance from a human reviewer: say revised", reply = "A revised, friendly greeting." }]
[[validators]]
name = "revised"
agents = ["hello"]
kind = "pattern"
must_match = ["*revised*"]
[retry]
max_attempts = 2
semantic = "human"
"#,
    );
    let config_arg = config.to_str().unwrap();
    let mut child = spawn_example(&db, "hello", ["--input", "world", "--config", config_arg]);
    let pending = wait_for_listing("reviews", &db);
    assert_eq!(pending[0]["task_id"], 1, "{pending}");
    assert_eq!(pending[0]["attempt"], 1, "{pending}");
    assert!(pending[0]["reason"].as_str().unwrap().contains("*revised*"));
    child.kill().unwrap(); // SIGKILL while the task waits for the human
    child.wait().unwrap();
    let id = pending[0]["id"].to_string();
    let decided = agentflow_on(&db, ["retry", &id, "--note", "say revised"]);
    assert!(decided.status.success(), "{}", stderr(&decided));
    let report = resume_only_run(&db, &config);
    let run_id = report["run_id"].as_str().unwrap().to_string();
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["output"], "A revised, friendly greeting.");
    let conn = crate::support::connect(&db);
    let kinds: Vec<String> = conn
        .prepare("SELECT kind FROM events WHERE run_id = ?1 AND kind IN ('review.requested','review.decided','validation.retry') ORDER BY seq")
        .unwrap()
        .query_map([&run_id], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        kinds,
        vec!["review.requested", "review.decided", "validation.retry"]
    );
    let strategy: String = conn
        .query_row(
            "SELECT json_extract(response, '$.strategy') FROM events WHERE run_id = ?1 AND kind = 'validation.retry'",
            [&run_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(strategy, "human");
    let text = stdout(&agentflow_on(&db, ["reviews", "--all"]));
    assert!(
        text.contains(" retry ") && text.contains("note: say revised"),
        "{text}"
    );
    let text = stdout(&agentflow_on(&db, ["inspect", &run_id]));
    assert!(
        text.contains(&format!("review {id} decided: retry — say revised")),
        "{text}"
    );
    let again = agentflow_on(&db, ["reject", &id]);
    assert_eq!(again.status.code(), Some(2), "already decided");
}

/// The testwriter example's own config, its paths made absolute, written into `dir`.
fn testwriter_config(dir: &TempDir) -> std::path::PathBuf {
    let config = std::fs::read_to_string(repo_path("examples/testwriter/agentflow.toml"))
        .unwrap()
        .replace(
            "\"examples/testwriter/mock-rules.toml\"",
            &format!(
                "{:?}",
                repo_path("examples/testwriter/mock-rules.toml")
                    .to_str()
                    .unwrap()
            ),
        )
        .replace(
            "\"examples/testwriter/workspace\"",
            &format!(
                "{:?}",
                repo_path("examples/testwriter/workspace").to_str().unwrap()
            ),
        )
        .replace(
            "\"examples/assert-check\"",
            // A crate directory: `agentflow run` builds the validator like an agent.
            &format!("{:?}", repo_path("examples/assert-check").to_str().unwrap()),
        );
    dir.file("agentflow.toml", config)
}

#[test]
fn a_crash_after_a_validator_component_ran_resumes_without_confusing_its_calls() {
    let dir = TempDir::new("val-component-crash");
    let db = dir.ledger("c.db");
    let config = testwriter_config(&dir);
    // Attempt 1 (its LLM call, the validator's calls, the failed verdict, the retry
    // marker) is 8 events; the host dies one event into attempt 2.
    let crashed = agentflow()
        .arg("run")
        .arg(example("testwriter"))
        .args(["--input", "fn parse_port(s: &str) -> Option<u16>", "--db"])
        .arg(&db)
        .arg("--config")
        .arg(&config)
        .env("AGENTFLOW_CRASH_AFTER_EVENTS", "9")
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    let conn = crate::support::connect(&db);
    let count = |kind: &str| -> i64 {
        conn.query_row("SELECT COUNT(*) FROM events WHERE kind = ?1", [kind], |r| {
            r.get(0)
        })
        .unwrap()
    };
    assert_eq!(
        count("validation.retry"),
        1,
        "the crash came after the retry"
    );
    assert!(count("validator.call") >= 1);
    let report = resume_only_run(&db, &config);
    assert_eq!(report["status"], "completed", "{report}");
    assert!(report["output"].as_str().unwrap().contains("assert_eq!"));
    // Attempt 1 replayed (its validator's events skipped), not redone; no divergence.
    let models: Vec<String> = conn
        .prepare("SELECT model FROM events WHERE kind = 'llm.complete' ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(models, vec!["mock-small", "mock-large"], "{models:?}");
    assert_eq!(count("replay.diverged"), 0);
    assert_eq!(count("validation.retry"), 1);
}

#[test]
fn the_testwriter_example_retries_an_assertless_test_on_a_better_model() {
    let dir = TempDir::new("val-testwriter");
    let db = dir.ledger("t.db");
    let config_path = testwriter_config(&dir);
    let out = run_example(
        &db,
        "testwriter",
        [
            "--input",
            "fn parse_port(s: &str) -> Option<u16>",
            "--json",
            "--config",
            config_path.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout_json(&out);
    assert_eq!(report["status"], "completed", "{report}");
    assert!(
        report["output"]
            .as_str()
            .unwrap()
            .contains("assert_eq!(parse_port(\"8080\"), Some(8080));")
    );
    let conn = crate::support::connect(&db);
    let rows: Vec<(String, String)> = conn
        .prepare("SELECT kind, response FROM events WHERE kind IN ('validation.result', 'validation.retry') ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(
        rows[0].1.contains("\"verdict\":\"fail\"") && rows[0].1.contains("assert nothing"),
        "{rows:?}"
    );
    assert!(
        rows[0].1.contains("\"model\":\"mock-small\"")
            || rows[0].1.contains("\"model\":\"mock-fast\""),
        "{rows:?}"
    );
    assert_eq!(rows[1].0, "validation.retry");
    assert!(
        rows[1].1.contains("\"model\":\"mock-large\"")
            && rows[1].1.contains("\"strategy\":\"escalate\""),
        "{rows:?}"
    );
    // The passing verdict is credited to the model of the attempt that produced it.
    assert!(
        rows[2].1.contains("\"verdict\":\"pass\"")
            && rows[2].1.contains("\"model\":\"mock-large\""),
        "{rows:?}"
    );
    // Then `tests-run` compiled the test with the workspace's code and ran it.
    assert!(
        rows[3].1.contains("\"verdict\":\"pass\"") && rows[3].1.contains("\"exit\":0"),
        "{rows:?}"
    );
}
