//! Drift and value: `agentflow drift` over real runs of the `hello` example whose mock
//! model changes its answer (and its name) between runs, `inspect --roi` on a `fanout`
//! run whose children an asynchronous judge scores, and `[observe] evaluate = "judge"`
//! recording a quality score for every task without holding the run up.

use crate::support::cli::*;
use crate::support::*;
use agentflow::ledger::Status;

use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// A config for `hello` whose only model is `model`, answering greetings with `reply`,
/// and a validator passing only greetings that start with "Hello".
fn hello_config(model: &str, reply: &str) -> String {
    format!(
        r#"[[llm.models]]
name = "{model}"
provider = "mock"
input_per_mtok = 1.0
output_per_mtok = 2.0

[[llm.mock.rules]]
task_type = "greet"
reply = "{reply}"

[[validators]]
name = "polite"
agents = ["hello"]
kind = "pattern"
must_match = ["Hello*"]
"#
    )
}

/// `agentflow run hello --input INPUT --config <config> --json` on `db`: the run id.
fn run_hello(dir: &TempDir, db: &Path, input: &str, config: &str) -> String {
    let config = dir.file(&format!("{}.toml", agentflow::new_run_id()), config);
    let out = run_example(
        db,
        "hello",
        [
            "--input",
            input,
            "--json",
            "--quiet",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let report = stdout_json(&out);
    report["run_id"].as_str().unwrap().to_string()
}

fn drift_json(db: &Path, args: &[&str]) -> Value {
    let out = agentflow_on(db, ["drift", "--json"].iter().chain(args));
    assert!(out.status.success(), "{}", stderr(&out));
    stdout_json(&out)
}

#[test]
fn drift_flags_the_changed_output_with_the_model_change_and_pass_rates_from_the_ledger() {
    let dir = TempDir::new("drift-hello");
    let db = dir.ledger("ledger.db");
    let old = hello_config("m-old", "Hello, world!");
    let first = run_hello(&dir, &db, "world", &old);
    let second = run_hello(&dir, &db, "world", &old);
    let third = run_hello(
        &dir,
        &db,
        "world",
        &hello_config("m-new", "Goodbye, world."),
    );
    // Another input, once: nothing to compare it with.
    run_hello(&dir, &db, "moon", &old);
    let status = |run: &str| -> String {
        sql(
            &db,
            &format!("SELECT status FROM runs WHERE run_id = '{run}'"),
        )
    };
    assert_eq!(
        [status(&first), status(&second), status(&third)],
        ["completed", "completed", "failed"],
        "the new model's answer fails validation"
    );

    let report = drift_json(&db, &[]);
    let groups = report["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "only `world` ran more than once: {report}");
    let g = &groups[0];
    assert_eq!(g["agent"], "hello");
    assert_eq!(
        (&g["tasks"], &g["runs"], &g["distinct_outputs"]),
        (&json!(3), &json!(3), &json!(2))
    );
    assert_eq!((&g["validated"], &g["passed"]), (&json!(3), &json!(2)));
    assert_eq!(g["models"], json!(["m-old", "m-new"]));
    assert_eq!(g["output_changed"], true);
    assert_eq!(g["validation_changed"], true);
    // The pass rate is the ledger's: what `agent_traces` says of these tasks.
    let input_hash = g["input_hash"].as_str().unwrap();
    let from_sql: f64 = sql(
        &db,
        &format!(
            "SELECT AVG(CASE WHEN validation_result = 'pass' THEN 1.0 ELSE 0.0 END) FROM agent_traces
             WHERE agent = 'hello' AND input_hash = '{input_hash}'"
        ),
    );
    let pass_rate = g["pass_rate"].as_f64().unwrap();
    assert!((pass_rate - from_sql).abs() < 1e-9 && (pass_rate - 2.0 / 3.0).abs() < 1e-9);
    let changes = g["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{g}");
    assert_eq!(changes[0]["run_id"], third.as_str());
    assert_eq!(changes[0]["model_change"], "m-old → m-new");
    assert_eq!(changes[0]["validation"], "pass → fail");

    // Per model and day: the old model's three tasks (two on `world`, one on `moon`)
    // passed; the new model's one failed.
    let models: Vec<(String, u64, u64)> = report["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["model"].as_str().unwrap().to_string(),
                m["tasks"].as_u64().unwrap(),
                m["failed"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        models,
        [("m-new".to_string(), 1, 1), ("m-old".to_string(), 3, 0)]
    );

    let text = stdout(&agentflow_on(&db, ["drift"]));
    assert!(text.contains("OUTPUT+PASS"), "{text}");
    assert!(text.contains("model m-old → m-new"), "{text}");
    assert!(text.contains("67% (2/3)"), "{text}");
    // Filters: another agent, or only tasks from after the runs.
    assert!(
        drift_json(&db, &["--agent", "fanout"])["groups"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let later = drift_json(&db, &["--since", "2099-01-01"]);
    assert!(later["groups"].as_array().unwrap().is_empty(), "{later}");
    assert!(later["models"].as_array().unwrap().is_empty(), "{later}");
}

/// `[observe] evaluate = "judge"`, the judge answering after `delay_ms`: a low score
/// for the child on path `r.1`, none at all for `r.2` when `unscored`, else a high one.
fn judged_config(delay_ms: u64, unscored: bool) -> String {
    let mut toml = format!(
        r#"[observe]
evaluate = "judge"

[[llm.mock.rules]]
task_type = "evaluate"
contains = "r.1"
reply = "score: 2 - it says nothing useful"
delay_ms = {delay_ms}
"#
    );
    if unscored {
        toml.push_str(&format!(
            "\n[[llm.mock.rules]]\ntask_type = \"evaluate\"\ncontains = \"r.2\"\n\
             reply = \"I would rather not say\"\ndelay_ms = {delay_ms}\n"
        ));
    }
    toml.push_str(&format!(
        "\n[[llm.mock.rules]]\ntask_type = \"evaluate\"\nreply = \"score: 9 - fine\"\n\
         delay_ms = {delay_ms}\n"
    ));
    toml
}

const FANOUT: &str = r#"{"depth": 1, "fanout": 3, "steps": 1}"#;

#[test]
fn roi_puts_the_expensive_worthless_child_first_with_subtree_costs() {
    let dir = TempDir::new("drift-roi");
    let db = dir.ledger("ledger.db");
    let config = dir.file("judge.toml", judged_config(0, false));
    let out = run_example(
        &db,
        "fanout",
        [
            "--input",
            FANOUT,
            "--grant",
            "kv",
            "--json",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let run_id = stdout_json(&out)["run_id"].as_str().unwrap().to_string();
    let out = agentflow_on(&db, ["inspect", &run_id, "--roi", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let roi = stdout_json(&out);
    let tasks = roi["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 4, "{roi}");
    assert_eq!(tasks[0]["description"], "fanout r.1 at depth 0", "{roi}");
    assert_eq!(tasks[0]["validation"], "fail");
    assert_eq!(tasks[0]["flag"], "EXPENSIVE, LOW VALUE");
    assert!(tasks[0]["waste_usd"].as_f64().unwrap() > 0.0);
    for t in &tasks[1..] {
        assert_eq!(t["validation"], "pass", "{t}");
        assert!(t["flag"].is_null(), "{t}");
        assert!(
            t["waste_usd"].as_f64().unwrap() <= tasks[0]["waste_usd"].as_f64().unwrap(),
            "sorted by waste: {roi}"
        );
    }
    // The root's subtree is the whole run, judge calls included.
    let root = tasks.iter().find(|t| t["task_id"] == 1).unwrap();
    let run_cost: f64 = sql(
        &db,
        &format!("SELECT cost_usd FROM runs WHERE run_id = '{run_id}'"),
    );
    assert!(
        (root["subtree_cost_usd"].as_f64().unwrap() - run_cost).abs() < 1e-12,
        "{root} vs {run_cost}"
    );
    let text = stdout(&agentflow_on(&db, ["inspect", &run_id, "--roi"]));
    let first_row = text.lines().nth(2).unwrap_or_default();
    assert!(
        first_row.contains("fanout r.1") && first_row.contains("EXPENSIVE, LOW VALUE"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_judge_scores_every_task_after_it_ended_without_delaying_the_run() {
    const DELAY_MS: u64 = 3000;
    let (dir, host) = temp_host("drift-evaluate", &judged_config(DELAY_MS, true));
    let started = Instant::now();
    let report = host
        .run_file(&example("fanout"), FANOUT, grant(&["kv"]))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert!(
        took < Duration::from_millis(DELAY_MS),
        "the run waited for its judge: {took:?}"
    );
    assert_eq!(
        host.evaluations_running(),
        4,
        "every task is being evaluated"
    );
    let db = dir.ledger("ledger.db");
    let scores = |db: &Path| -> i64 {
        sql(
            db,
            "SELECT COUNT(*) FROM agent_traces WHERE quality_score IS NOT NULL",
        )
    };
    assert_eq!(scores(&db), 0, "no score before the judge answered");

    assert_eq!(host.wait_for_evaluations(Duration::from_secs(20)).await, 0);
    host.ledger().flush().await.unwrap();
    let conn = crate::support::connect(&db);
    let rows: Vec<(i64, Option<f64>, String, i64)> = conn
        .prepare(
            "SELECT task_id, quality_score, status, finished_at FROM agent_traces
             WHERE run_id = ?1 ORDER BY task_id",
        )
        .unwrap()
        .query_map([&report.run_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let description = |task: i64| -> String {
        sql(
            &db,
            &format!(
                "SELECT description FROM tasks WHERE run_id = '{}' AND task_id = {task}",
                report.run_id
            ),
        )
    };
    for (task, quality, status, finished_at) in &rows {
        assert_eq!(status, "completed", "an evaluation never fails its task");
        let expected = match description(*task).as_str() {
            "fanout r.1 at depth 0" => Some(0.2),
            // The judge gave no score: recorded as a failed judge call, no quality.
            "fanout r.2 at depth 0" => None,
            _ => Some(0.9),
        };
        assert_eq!(
            quality.map(|q| (q * 100.0).round() / 100.0),
            expected,
            "task {task}"
        );
        // Every judge record comes after the task's end.
        let (first_judged, judge_cost): (Option<i64>, f64) = conn
            .query_row(
                "SELECT MIN(started_at), COALESCE(SUM(cost_usd), 0) FROM events
                 WHERE run_id = ?1 AND task_id = ?2 AND kind = 'validation.judge'",
                rusqlite::params![report.run_id, task],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert!(
            first_judged.unwrap() >= *finished_at,
            "task {task}: judged before its end"
        );
        assert!(judge_cost > 0.0, "task {task}: the judge's call is paid");
    }
    let failed_judge: i64 = sql(
        &db,
        "SELECT COUNT(*) FROM events WHERE kind = 'validation.judge' AND status = 'error'",
    );
    assert_eq!(
        failed_judge, 1,
        "the unscored reply is recorded as a failure"
    );
    // The judge's cost is in the run's total, which the report (made before the
    // evaluations ended) did not include.
    let (run_cost, task_costs): (f64, f64) = conn
        .query_row(
            "SELECT cost_usd, (SELECT SUM(cost_usd) FROM tasks t WHERE t.run_id = r.run_id)
             FROM runs r WHERE run_id = ?1",
            [&report.run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!((run_cost - task_costs).abs() < 1e-12);
    assert!(
        run_cost > report.cost_usd,
        "{run_cost} vs {}",
        report.cost_usd
    );
}
