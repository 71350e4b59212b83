//! OpenTelemetry: real runs exported over OTLP/HTTP to a receiver in the test process
//! (decoded with `opentelemetry-proto`) — the span tree, names and GenAI attributes
//! checked against the ledger; `agentflow export-otlp` replaying the same spans; a dead
//! or silent collector neither failing nor holding up a run; and the Prometheus text
//! of the ledger's metrics, counted against the ledger.

use crate::support::cli::*;
use crate::support::otlp::{Receiver, attr, black_hole, dead_url, hex_id};
use crate::support::*;
use agentflow::Status;
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const DEPLOY: &str = r#"{"app": "shop", "resources": 2}"#;
const PLAN: &str = r#"["shop-db", "shop-web"]"#;

/// The deployer's config: the planning reply, a length validator on every task, and
/// `extra`.
fn deploy_config(dir: &TempDir, extra: &str) -> PathBuf {
    dir.file(
        "deploy.toml",
        format!(
            "[[llm.mock.rules]]\ntask_type = \"plan\"\nreply = '{PLAN}'\n\
             [[validators]]\nname = \"bounded\"\nkind = \"length\"\nagents = [\"deployer\"]\n\
             max_chars = 100000\n{extra}"
        ),
    )
}

/// Run the deployer through the CLI with `config`; the output and the run id.
fn deploy(dir: &TempDir, db: &Path, config: &Path) -> (std::process::Output, String) {
    deploy_with(dir, db, config, &[])
}

/// [`deploy`] with these environment variables set.
fn deploy_with(
    dir: &TempDir,
    db: &Path,
    config: &Path,
    env: &[(&str, &str)],
) -> (std::process::Output, String) {
    let ws = dir.join("ws");
    let out = agentflow()
        .arg("run")
        .arg(example("deployer"))
        .args([
            "--input",
            DEPLOY,
            "--grant",
            "cloud",
            "--json",
            "--workspace",
        ])
        .arg(&ws)
        .arg("--config")
        .arg(config)
        .arg("--db")
        .arg(db)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let run_id = stdout_json(&out)["run_id"].as_str().unwrap().to_string();
    (out, run_id)
}

/// Spans by hex span id.
fn by_id(spans: &[Span]) -> HashMap<String, &Span> {
    spans.iter().map(|s| (hex_id(&s.span_id), s)).collect()
}

/// The task span of task `task`.
fn task_span(spans: &[Span], task: u64) -> &Span {
    spans
        .iter()
        .find(|s| {
            s.name.starts_with("invoke_agent ")
                && attr(&s.attributes, "agentflow.task_id") == json!(task)
        })
        .unwrap_or_else(|| panic!("no span of task {task}"))
}

fn count(db: &Path, query: &str) -> i64 {
    sql(db, query)
}

/// A span without its timing-independent identity: name, ids, parent, times,
/// attributes, events — what must be equal between a live export and a replay.
fn identity(s: &Span) -> Value {
    let attrs: BTreeMap<String, Value> = s
        .attributes
        .iter()
        .map(|kv| (kv.key.clone(), attr(&s.attributes, &kv.key)))
        .collect();
    json!({
        "name": s.name, "trace": hex_id(&s.trace_id), "id": hex_id(&s.span_id),
        "parent": hex_id(&s.parent_span_id), "start": s.start_time_unix_nano,
        "end": s.end_time_unix_nano, "attrs": attrs, "events": s.events.len(),
        "status": s.status.as_ref().map(|st| st.code),
    })
}

#[test]
fn a_run_is_exported_live_as_a_span_tree_with_genai_attributes_and_replayed_identically() {
    let receiver = Receiver::start();
    let dir = TempDir::new("otel-live");
    let db = dir.ledger("ledger.db");
    let config = deploy_config(
        &dir,
        &format!(
            "[observe]\notlp_endpoint = \"{}\"\nservice_name = \"otel-test\"\n",
            receiver.url()
        ),
    );
    let (_, run_id) = deploy(&dir, &db, &config);
    // The CLI flushes the exporter before it exits: everything is there already.
    let spans = receiver.spans();
    assert!(
        !spans.is_empty(),
        "no spans received: {:?}",
        receiver.posts()
    );
    let posts = receiver.posts();
    assert!(
        posts
            .iter()
            .all(|p| p.content_type == "application/x-protobuf"),
        "{posts:?}"
    );
    let request = &receiver.trace_requests()[0];
    let resource = request.resource_spans[0].resource.as_ref().unwrap();
    assert_eq!(attr(&resource.attributes, "service.name"), "otel-test");
    assert_eq!(
        request.resource_spans[0].scope_spans[0]
            .scope
            .as_ref()
            .unwrap()
            .name,
        "agentflow"
    );

    // One trace, whose id is the run id.
    assert!(
        spans.iter().all(|s| hex_id(&s.trace_id) == run_id),
        "trace id = run id"
    );
    let ids = by_id(&spans);
    assert_eq!(ids.len(), spans.len(), "span ids are unique");

    // The run span is the one root; the root task under it; the children under the root.
    let roots: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "one root span");
    let run = roots[0];
    assert_eq!(run.name, "run deployer");
    assert_eq!(attr(&run.attributes, "agentflow.run_id"), json!(run_id));
    assert_eq!(attr(&run.attributes, "agentflow.status"), "completed");
    let started: i64 = sql(
        &db,
        &format!("SELECT started_at FROM runs WHERE run_id = '{run_id}'"),
    );
    let finished: i64 = sql(
        &db,
        &format!("SELECT finished_at FROM runs WHERE run_id = '{run_id}'"),
    );
    assert_eq!(
        run.start_time_unix_nano,
        started as u64 * 1_000_000,
        "recorded start"
    );
    assert_eq!(
        run.end_time_unix_nano,
        finished as u64 * 1_000_000,
        "recorded end"
    );
    let cost: f64 = sql(
        &db,
        &format!("SELECT cost_usd FROM runs WHERE run_id = '{run_id}'"),
    );
    assert!(
        (attr(&run.attributes, "agentflow.cost_usd")
            .as_f64()
            .unwrap()
            - cost)
            .abs()
            < 1e-12
    );

    let root = task_span(&spans, 1);
    assert_eq!(root.name, "invoke_agent deployer");
    assert_eq!(root.parent_span_id, run.span_id);
    assert_eq!(
        attr(&root.attributes, "gen_ai.operation.name"),
        "invoke_agent"
    );
    assert_eq!(attr(&root.attributes, "gen_ai.agent.name"), "deployer");
    let tasks = count(&db, "SELECT COUNT(*) FROM tasks");
    assert_eq!(tasks, 3);
    for task in 2..=tasks as u64 {
        let child = task_span(&spans, task);
        assert_eq!(
            child.parent_span_id, root.span_id,
            "task {task} under the root task"
        );
        assert_eq!(
            attr(&child.attributes, "agentflow.parent_task_id"),
            json!(1)
        );
        let description: String = sql(
            &db,
            &format!("SELECT description FROM tasks WHERE task_id = {task}"),
        );
        assert_eq!(
            attr(&child.attributes, "agentflow.description"),
            json!(description)
        );
    }

    // Every LLM call is a `chat` span under its task, with the ledger's model, tokens, cost.
    let llm: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name.starts_with("chat "))
        .collect();
    assert_eq!(
        llm.len() as i64,
        count(
            &db,
            "SELECT COUNT(*) FROM events WHERE kind = 'llm.complete'"
        )
    );
    for s in &llm {
        let a = &s.attributes;
        let task = attr(a, "agentflow.task_id").as_u64().unwrap();
        let seq = attr(a, "agentflow.seq").as_u64().unwrap();
        assert_eq!(
            s.parent_span_id,
            task_span(&spans, task).span_id,
            "{} under task {task}",
            s.name
        );
        let (model, tin, tout, cost): (String, i64, i64, f64) = crate::support::connect(&db)
            .query_row(
                "SELECT model, tokens_in, tokens_out, cost_usd FROM events WHERE task_id = ?1 AND seq = ?2",
                [task, seq],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(s.name, format!("chat {model}"));
        assert_eq!(attr(a, "gen_ai.operation.name"), "chat");
        assert_eq!(attr(a, "gen_ai.request.model"), json!(model));
        assert_eq!(attr(a, "gen_ai.provider.name"), "mock");
        assert_eq!(attr(a, "gen_ai.usage.input_tokens"), json!(tin));
        assert_eq!(attr(a, "gen_ai.usage.output_tokens"), json!(tout));
        assert!((attr(a, "agentflow.cost_usd").as_f64().unwrap() - cost).abs() < 1e-12);
        assert_eq!(attr(a, "agentflow.run_id"), json!(run_id));
    }

    // Tool calls under the children; validation verdicts under their tasks.
    let tools: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "execute_tool cloud")
        .collect();
    assert_eq!(
        tools.len() as i64,
        count(&db, "SELECT COUNT(*) FROM events WHERE kind = 'tools.call'")
    );
    for s in &tools {
        assert_eq!(attr(&s.attributes, "gen_ai.tool.name"), "cloud");
        let parent = ids[&hex_id(&s.parent_span_id)];
        assert!(parent.name.starts_with("invoke_agent "), "{}", parent.name);
        assert_ne!(parent.span_id, root.span_id, "the children call the cloud");
    }
    let verdicts: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "validate bounded")
        .collect();
    assert_eq!(
        verdicts.len() as i64,
        count(
            &db,
            "SELECT COUNT(*) FROM events WHERE kind = 'validation.result'"
        )
    );
    assert!(verdicts.len() >= 3, "each task's output was validated");
    for s in &verdicts {
        assert_eq!(attr(&s.attributes, "agentflow.verdict"), "pass");
        assert_eq!(attr(&s.attributes, "agentflow.validator.kind"), "length");
    }

    // The reasoning steps are events of their task's span.
    let steps: Vec<_> = root
        .events
        .iter()
        .filter(|e| e.name == "agentflow.reasoning_step")
        .collect();
    assert_eq!(
        steps.len() as i64,
        count(
            &db,
            "SELECT COUNT(*) FROM events WHERE kind = 'trace.step' AND task_id = 1"
        )
    );
    let plan = &steps[0];
    assert_eq!(
        attr(&plan.attributes, "agentflow.thought"),
        "plan 2 resources for shop"
    );
    assert_eq!(attr(&plan.attributes, "agentflow.action"), "llm:plan");
    assert_eq!(
        attr(&plan.attributes, "agentflow.observation"),
        "shop-db, shop-web"
    );
    assert_eq!(attr(&plan.attributes, "agentflow.confidence"), json!(0.8));

    // The metrics came too, counting what the ledger holds.
    let metrics = receiver
        .latest_metrics()
        .expect("metrics exported at close");
    let metrics_request = receiver.latest_metrics_request().unwrap();
    let metrics_resource = metrics_request.resource_metrics[0]
        .resource
        .as_ref()
        .unwrap();
    assert_eq!(
        attr(&metrics_resource.attributes, "service.name"),
        "otel-test"
    );
    let calls = sum_points(&metrics, "agentflow.llm.calls");
    assert_eq!(
        calls,
        count(
            &db,
            "SELECT COUNT(*) FROM events WHERE kind = 'llm.complete'"
        )
    );
    assert_eq!(
        sum_points(&metrics, "agentflow.llm.tokens"),
        count(
            &db,
            "SELECT SUM(tokens_in + tokens_out) FROM events WHERE kind = 'llm.complete'"
        )
    );
    assert_eq!(sum_points(&metrics, "agentflow.tasks"), tasks);
    let latency = metrics
        .iter()
        .find(|m| m.name == "agentflow.llm.duration")
        .unwrap();
    let Some(metric::Data::Histogram(h)) = &latency.data else {
        panic!("{latency:?}")
    };
    assert_eq!(
        h.data_points.iter().map(|p| p.count).sum::<u64>() as i64,
        calls
    );
    assert_eq!(latency.unit, "s");

    // `export-otlp` replays the same spans, ids and times included.
    let replay = Receiver::start();
    let out = agentflow_on(
        &db,
        [
            "export-otlp",
            &run_id,
            "--endpoint",
            &replay.url(),
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = stdout_json(&out);
    assert_eq!(summary["spans"], json!(spans.len()));
    assert_eq!(summary["trace_id"], json!(run_id));
    let live: Vec<Value> = spans.iter().map(identity).collect();
    let replayed: Vec<Value> = replay.spans().iter().map(identity).collect();
    assert_eq!(live, replayed, "a replay sends what the live export sent");
}

/// The sum of a counter's or gauge's data points.
fn sum_points(metrics: &[Metric], name: &str) -> i64 {
    let m = metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no metric {name}"));
    let points = match &m.data {
        Some(metric::Data::Sum(s)) => {
            assert!(s.is_monotonic);
            &s.data_points
        }
        Some(metric::Data::Gauge(g)) => &g.data_points,
        other => panic!("{name}: {other:?}"),
    };
    points
        .iter()
        .map(|p| match p.value {
            Some(number_data_point::Value::AsInt(i)) => i,
            Some(number_data_point::Value::AsDouble(d)) => d as i64,
            None => 0,
        })
        .sum()
}

fn write(path: &str, content: &str) -> Value {
    json!({"tool": {"name": "workspace", "args": {"op": "write", "path": path, "content": content}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grandchildren_and_merges_are_spans_under_the_tasks_that_made_them() {
    let receiver = Receiver::start();
    let dir = TempDir::new("otel-tree");
    std::fs::create_dir_all(dir.join("ws")).unwrap();
    let host = host(
        &dir,
        &format!("[observe]\notlp_endpoint = \"{}\"\n", receiver.url()),
    );
    // Root 1 spawns child 2, which spawns grandchild 3; the child writes a file that
    // is merged into the root's view when the root waits for it.
    let grandchild = json!([{"llm": {"prompt": "hello"}}]);
    let child = json!([
        write("notes.txt", "from the child"),
        {"spawn": {"description": "grandchild", "input": grandchild.to_string()}},
        {"wait": 3},
    ]);
    let ops = json!([
        {"spawn": {"description": "child", "input": child.to_string()}},
        {"wait": 2},
    ]);
    let opts = agentflow::RunOptions {
        workspace: Some(dir.join("ws")),
        ..grant(&["workspace"])
    };
    let (report, _) = run_scripted(&host, ops, opts).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert!(
        host.flush_telemetry(Duration::from_secs(10)),
        "exported in time"
    );
    let spans = receiver.spans();
    let (root, child, grandchild) = (
        task_span(&spans, 1),
        task_span(&spans, 2),
        task_span(&spans, 3),
    );
    assert_eq!(child.parent_span_id, root.span_id);
    assert_eq!(
        grandchild.parent_span_id, child.span_id,
        "run → task → child task → grandchild"
    );
    let run = spans.iter().find(|s| s.parent_span_id.is_empty()).unwrap();
    assert_eq!(root.parent_span_id, run.span_id);

    let merges: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name.starts_with("merge "))
        .collect();
    let db = dir.ledger("ledger.db");
    assert_eq!(
        merges.len() as i64,
        count(
            &db,
            "SELECT COUNT(*) FROM events WHERE kind = 'merge.decided'"
        )
    );
    assert!(!merges.is_empty(), "the child's file was merged");
    let merge = merges[0];
    assert_eq!(
        merge.parent_span_id, root.span_id,
        "merged into the root's view"
    );
    assert_eq!(
        attr(&merge.attributes, "agentflow.merge.child_task"),
        json!(2)
    );
    let category: String = sql(&db, "SELECT category FROM merges LIMIT 1");
    assert_eq!(
        attr(&merge.attributes, "agentflow.merge.category"),
        json!(category)
    );

    let tool = spans
        .iter()
        .find(|s| s.name == "execute_tool workspace")
        .expect("tool span");
    assert_eq!(tool.parent_span_id, child.span_id);
    let llm = spans
        .iter()
        .find(|s| s.name.starts_with("chat "))
        .expect("llm span");
    assert_eq!(llm.parent_span_id, grandchild.span_id);
}

#[test]
fn a_dead_collector_neither_fails_nor_holds_up_a_run_and_is_reported_once() {
    let dir = TempDir::new("otel-dead");
    let db = dir.ledger("ledger.db");
    // Warm up (component cache), then time a run without and one with a dead endpoint.
    let plain = deploy_config(&dir, "");
    deploy(&dir, &db, &plain);
    let start = Instant::now();
    deploy(&dir, &db, &plain);
    let without = start.elapsed();
    // The endpoint from the environment, as an operator's shell would set it.
    let start = Instant::now();
    let dead = dead_url();
    let (out, run_id) = deploy_with(
        &dir,
        &db,
        &plain,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", dead.as_str())],
    );
    let with = start.elapsed();
    assert_eq!(stdout_json(&out)["status"], "completed");
    let status: String = sql(
        &db,
        &format!("SELECT status FROM runs WHERE run_id = '{run_id}'"),
    );
    assert_eq!(status, "completed");
    let err = stderr(&out);
    assert_eq!(err.matches("not exported").count(), 1, "one warning: {err}");
    assert!(err.contains("runs go on unaffected"), "{err}");
    eprintln!("deployer run: {without:?} without an endpoint, {with:?} with a dead one");
    assert!(
        with < without + Duration::from_millis(1500),
        "a dead endpoint costs {with:?} against {without:?}"
    );
    // `export-otlp` to it is an error, not a success.
    let out = agentflow_on(&db, ["export-otlp", &run_id, "--endpoint", &dead_url()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("OTLP export"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_does_not_hold_up_the_run() {
    let hole = black_hole();
    let (_dir, host) = temp_host(
        "otel-silent",
        &format!("[observe]\notlp_endpoint = \"http://{}\"\n", hole.addr),
    );
    let input = r#"{"depth": 1, "fanout": 2, "steps": 1}"#;
    // An export the run waited for would take the exporter's 5 s request timeout: the
    // collector accepts the connection and never answers.
    for _ in 0..2 {
        let start = Instant::now();
        let report = host
            .run_file(&example("fanout"), input, grant(&["kv"]))
            .await
            .unwrap();
        let took = start.elapsed();
        assert_eq!(report.status, Status::Completed);
        assert!(took < Duration::from_secs(5), "the run took {took:?}");
    }
    // The export was attempted, and hangs there.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hole.accepted() == 0 {
        assert!(Instant::now() < deadline, "no export reached the collector");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A flush gives up when told to.
    let start = Instant::now();
    assert!(!host.flush_telemetry(Duration::from_millis(300)));
    assert!(start.elapsed() < Duration::from_secs(2));
}

/// The samples of a Prometheus text: `name{labels}` → value; checks the format on the way.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    let mut typed: HashMap<String, String> = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&ty), "{line}");
            typed.insert(name.to_string(), ty.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').unwrap();
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "metric name {name}"
        );
        let family = typed.keys().find(|f| {
            name == f.as_str()
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name == format!("{f}{s}"))
        });
        assert!(family.is_some(), "{name} has no TYPE line before it");
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{series}");
            for pair in labels[1..labels.len() - 1].split("\",") {
                let (k, v) = pair.split_once('=').unwrap();
                assert!(
                    k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{k}"
                );
                assert!(v.starts_with('"'), "{pair}");
            }
        }
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        assert!(
            samples.insert(series.to_string(), v).is_none(),
            "duplicate {series}"
        );
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_text_counts_what_the_ledger_holds_per_model_and_per_agent() {
    let (dir, host) = temp_host("otel-prom", "");
    let fanout = r#"{"depth": 1, "fanout": 2, "steps": 2}"#;
    for _ in 0..2 {
        let r = host
            .run_file(&example("fanout"), fanout, grant(&["kv"]))
            .await
            .unwrap();
        assert_eq!(r.status, Status::Completed);
    }
    let (report, _) = run_scripted(
        &host,
        json!([{"llm": {"prompt": "hi"}}]),
        Default::default(),
    )
    .await;
    assert_eq!(report.status, Status::Completed);
    let failed = host
        .run_file(&example("fanout"), "not json", grant(&["kv"]))
        .await
        .unwrap();
    assert_eq!(failed.status, Status::Failed);
    let db = dir.ledger("ledger.db");
    let conn = crate::support::connect(&db);
    let text = agentflow::observe::metrics_export::prometheus_text(&conn).unwrap();
    let samples = parse_prometheus(&text);
    let printed = agentflow_on(&db, ["metrics"]);
    assert!(printed.status.success(), "{}", stderr(&printed));
    assert_eq!(
        stdout(&printed),
        text,
        "`agentflow metrics` prints the same text"
    );

    // LLM calls, tokens and cost per agent and model, as the ledger counts them.
    let mut stmt = conn
        .prepare(
            "SELECT t.agent, e.model, COUNT(*), SUM(e.tokens_in), SUM(e.tokens_out), SUM(e.cost_usd)
             FROM events e JOIN tasks t USING (run_id, task_id)
             WHERE e.kind = 'llm.complete' GROUP BY 1, 2",
        )
        .unwrap();
    let rows: Vec<(String, String, i64, i64, i64, f64)> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        rows.iter().any(|r| r.0 == "fanout") && rows.iter().any(|r| r.0 == "scripted"),
        "{rows:?}"
    );
    for (agent, model, calls, tin, tout, cost) in &rows {
        let l = format!("agent=\"{agent}\",model=\"{model}\",provider=\"mock\"");
        assert_eq!(
            samples[&format!("agentflow_llm_calls_total{{{l}}}")],
            *calls as f64,
            "{text}"
        );
        assert_eq!(
            samples[&format!("agentflow_llm_tokens_total{{{l},type=\"input\"}}")],
            *tin as f64
        );
        assert_eq!(
            samples[&format!("agentflow_llm_tokens_total{{{l},type=\"output\"}}")],
            *tout as f64
        );
        assert!((samples[&format!("agentflow_llm_cost_usd_total{{{l}}}")] - cost).abs() < 1e-9);
        assert_eq!(
            samples[&format!("agentflow_llm_duration_seconds_count{{{l}}}")],
            *calls as f64
        );
        assert_eq!(
            samples[&format!("agentflow_llm_duration_seconds_bucket{{{l},le=\"+Inf\"}}")],
            *calls as f64
        );
    }
    let all_calls: f64 = samples
        .iter()
        .filter(|(k, _)| k.starts_with("agentflow_llm_calls_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        all_calls,
        count(
            &db,
            "SELECT COUNT(*) FROM events WHERE kind = 'llm.complete'"
        ) as f64
    );

    // Buckets are cumulative, in order, up to `+Inf` = `_count`.
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("agentflow_task_duration_seconds_bucket{agent=\"fanout\""))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    let finished = count(
        &db,
        "SELECT COUNT(*) FROM tasks WHERE agent = 'fanout' AND finished_at IS NOT NULL",
    );
    assert_eq!(buckets.last().copied(), Some(finished as f64));
    assert_eq!(
        samples["agentflow_task_duration_seconds_count{agent=\"fanout\"}"],
        finished as f64
    );

    // Tool calls per agent and tool, and tasks and runs by agent and status.
    let kv_calls = count(&db, "SELECT COUNT(*) FROM events WHERE kind = 'tools.call'");
    assert_eq!(
        samples["agentflow_tool_calls_total{agent=\"fanout\",tool=\"kv\"}"],
        kv_calls as f64
    );
    let fanout_tasks = count(
        &db,
        "SELECT COUNT(*) FROM tasks WHERE agent = 'fanout' AND status = 'completed'",
    );
    assert_eq!(fanout_tasks, 6);
    assert_eq!(
        samples["agentflow_tasks{agent=\"fanout\",status=\"completed\"}"],
        fanout_tasks as f64
    );
    assert_eq!(
        samples["agentflow_tasks{agent=\"fanout\",status=\"failed\"}"],
        1.0
    );
    assert_eq!(
        samples["agentflow_runs{agent=\"fanout\",status=\"completed\"}"],
        2.0
    );
    assert_eq!(
        samples["agentflow_runs{agent=\"fanout\",status=\"failed\"}"],
        1.0
    );
    assert_eq!(
        samples["agentflow_runs{agent=\"scripted\",status=\"completed\"}"],
        1.0
    );
    assert_eq!(
        samples["agentflow_budget_used_ratio_count{agent=\"fanout\"}"],
        3.0
    );

    // The CLI's view of the same run agrees: `agentflow events` lists its LLM calls.
    let run_id = report.run_id;
    let out = agentflow_on(&db, ["events", &run_id, "--json"]);
    let events = stdout_json(&out);
    let listed = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "llm.complete")
        .count();
    let model: String = sql(
        &db,
        &format!("SELECT model FROM events WHERE run_id = '{run_id}' AND kind = 'llm.complete'"),
    );
    assert_eq!(
        samples[&format!(
            "agentflow_llm_calls_total{{agent=\"scripted\",model=\"{model}\",provider=\"mock\"}}"
        )],
        listed as f64
    );
}
