//! Scheduling, complete (issue 16, item 5), through real guests: `min_quality` from the
//! request, quality per model × task type, routing a request with tools to a model
//! that calls functions, input and output TPM apart, prediction from the same agent's
//! history, and per-spawn memory and CPU requests checked against the run's limits.

use crate::support::*;
use agentflow::{RunOptions, Status};
use serde_json::{Value, json};

/// Two models: `weak` is cheap and the scheduler's first choice, `strong` is not.
const CATALOG: &str = r#"
[[llm.models]]
name = "weak"
provider = "mock"
input_per_mtok = 0.1
output_per_mtok = 0.1
quality = 0.4

[[llm.models]]
name = "strong"
provider = "mock"
input_per_mtok = 10.0
output_per_mtok = 10.0
quality = 0.9
capabilities = ["function-calling"]
"#;

fn models_of(host: &agentflow::Host, run_id: &str) -> Vec<String> {
    of_kind(&events(host, run_id), "llm.complete")
        .iter()
        .map(|e| e.model.clone().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_quality_and_tools_route_the_call_to_a_model_that_fits() {
    let (_dir, host) = temp_host("sched-route", CATALOG);
    let ops = json!([
        {"llm": {"prompt": "plain", "priority": "cost"}},
        {"llm": {"prompt": "picky", "priority": "cost", "min_quality": 0.8}},
    ]);
    let (report, results) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(results[0]["ok"]["model"], "weak");
    assert_eq!(results[1]["ok"]["model"], "strong", "{}", results[1]);
    // The decision says why the cheap model was passed over.
    let decisions = of_kind(&events(&host, &report.run_id), "llm.decision");
    let why = decisions[1].response.to_string();
    assert!(why.contains("quality 0.40 < min 0.80"), "{why}");

    // Nothing good enough: a clear refusal, not a silent downgrade.
    let ops = json!([{"llm": {"prompt": "too picky", "min_quality": 0.95}}]);
    let (report, results) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed);
    let err = results[0]["err"].as_str().unwrap_or_default();
    assert!(
        err.contains("NoViableModel") && err.contains("min 0.95"),
        "{}",
        results[0]
    );
    assert!(
        models_of(&host, &report.run_id)
            .iter()
            .all(|m| m.is_empty())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_scores_count_per_task_type() {
    // Validators scored `weak` high on `classify` and low on `summarize` (in the
    // performance DB beside the ledger, as earlier runs would have left it).
    let dir = TempDir::new("sched-quality");
    {
        let path =
            agentflow::scheduler::perf::path_for_ledger(&dir.ledger("ledger.db"), &cache_dir());
        let perf = agentflow::scheduler::perf::PerfDb::open(&path).unwrap();
        for _ in 0..20 {
            perf.record_quality("weak", "classify", 1.0, "test")
                .unwrap();
            perf.record_quality("weak", "summarize", 0.0, "test")
                .unwrap();
        }
    }
    let host = host(&dir, CATALOG);
    let ops = json!([
        {"llm": {"prompt": "a", "priority": "cost", "task_type": "classify", "min_quality": 0.8}},
        {"llm": {"prompt": "b", "priority": "cost", "task_type": "summarize", "min_quality": 0.3}},
    ]);
    let (report, results) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(
        results[0]["ok"]["model"], "weak",
        "good at classify: {}",
        results[0]
    );
    assert_eq!(
        results[1]["ok"]["model"], "strong",
        "poor at summarize: {}",
        results[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_offering_tools_goes_to_a_model_that_calls_functions() {
    let (_dir, host) = temp_host("sched-tools", CATALOG);
    let ops = json!([
        {"llm": {"prompt": "no tools", "priority": "cost"}},
        {"llm": {"prompt": "with tools", "priority": "cost", "tools": ["lookup"]}},
    ]);
    let (report, results) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(results[0]["ok"]["model"], "weak");
    assert_eq!(results[1]["ok"]["model"], "strong", "{}", results[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_tokens_have_their_own_quota() {
    // `weak` may take many input tokens a minute but only 300 output tokens: two
    // calls reserving 200 output tokens each cannot both go to it.
    let config = format!("{CATALOG}\n[llm.quotas.mock]\notpm = 300\nitpm = 100000\n");
    let (_dir, host) = temp_host("sched-otpm", &config);
    let ops = json!([
        {"llm": {"prompt": "one", "priority": "cost", "max_tokens": 200}},
        {"llm": {"prompt": "two", "priority": "cost", "max_tokens": 200}},
    ]);
    let (report, results) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert!(results[0]["ok"].is_object(), "{}", results[0]);
    // The reply used far fewer output tokens than reserved: the window was
    // reconciled, so the second call fits the output quota again.
    assert!(results[1]["ok"].is_object(), "{}", results[1]);

    let ops = json!([
        {"llm": {"prompt": "too long", "max_tokens": 400}},
    ]);
    let (_report, results) = run_scripted(&host, ops, RunOptions::default()).await;
    let err = results[0]["err"].as_str().unwrap_or_default();
    assert!(
        err.contains("400 output tokens can never fit a quota of 300"),
        "{}",
        results[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawns_ask_for_memory_and_cpu_within_the_run_limits() {
    let config = format!(
        "[limits]\nmemory_mb = 128\ncpu_ms = 20000\n[agents]\nhostile = {:?}\n",
        example("hostile")
    );
    let (_dir, host) = temp_host("sched-needs", &config);
    let ops = json!([
        {"spawn_wait": {"description": "hog within 16 MiB", "input": "memory", "agent": "hostile", "memory_mb": 16}},
        {"spawn_wait": {"description": "spin within 300 ms", "input": "loop", "agent": "hostile", "cpu_ms": 300}},
        {"spawn": {"description": "greedy", "input": "ok", "agent": "hostile", "memory_mb": 4096}},
        {"spawn": {"description": "nothing", "input": "ok", "agent": "hostile", "cpu_ms": 0}},
        {"spawn_wait": {"description": "fits", "input": "ok", "agent": "hostile", "memory_mb": 64, "cpu_ms": 1000}},
    ]);
    let started = std::time::Instant::now();
    let (report, results) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let failed = |v: &Value| v["failed"].as_str().unwrap_or_default().to_string();
    assert!(
        failed(&results[0]).contains("limit 16 MiB"),
        "the child's own memory limit: {}",
        results[0]
    );
    assert!(
        failed(&results[1]).contains("300"),
        "the child's own CPU limit: {}",
        results[1]
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "stopped at 300 ms of CPU, not the run's 20 s"
    );
    let err = |v: &Value| v["err"].as_str().unwrap_or_default().to_string();
    assert!(
        err(&results[2]).contains(
            "memory-mb 4096 is more than the run allows each agent (limits.memory_mb = 128)"
        ),
        "{}",
        results[2]
    );
    assert!(
        err(&results[3]).contains("cpu-ms must be above 0"),
        "{}",
        results[3]
    );
    assert_eq!(results[4]["completed"], "fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_own_history_predicts_its_calls() {
    let (_dir, host) = temp_host("sched-predict", CATALOG);
    let call = json!([{"llm": {"prompt": "brief me", "task_type": "brief"}}]);
    let mut last = String::new();
    for _ in 0..4 {
        let (report, _) = run_scripted(&host, call.clone(), RunOptions::default()).await;
        let decisions = of_kind(&events(&host, &report.run_id), "llm.decision");
        last = decisions[0].response.to_string();
    }
    assert!(
        last.contains("calls by agent `scripted`"),
        "the fourth call is predicted from the agent's own calls: {last}"
    );
}
