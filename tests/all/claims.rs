//! README claims that no other test backed (issue 15, item 6): `[limits] wall_ms` and
//! `max_checkpoint_bytes` from the config, `http_fetch` without redirects, with its
//! body cap and its `*.domain` allowlist entries, and the `agentflow run` flags
//! `--max-depth`, `--budget-usd`, `--max-concurrency`, `--require-approval-over-usd`
//! (with `deny`) and `--input-file`; and provider keys kept out of the logs, the ledger
//! and the performance DB (an Anthropic key from the environment here, an OpenAI key
//! from the config in `cli::run_against_an_openai_compatible_server`).

use crate::support::cli::*;
use crate::support::fake_http::{FakeResponse, FakeServer};
use crate::support::llm::{anthropic_ok, openai_ok};
use crate::support::*;
use agentflow::{RunOptions, Status};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

fn fetch(url: &str) -> Value {
    json!({"tool": {"name": "http_fetch", "args": {"url": url}}})
}

/// The JSON the `http_fetch` tool answered with (panics on a refusal).
fn fetched(result: &Value) -> Value {
    let text = result["ok"]
        .as_str()
        .unwrap_or_else(|| panic!("http_fetch failed: {result}"));
    serde_json::from_str(text).unwrap()
}

/// `agentflow run <scripted> --input OPS --json <extra> --db DB`: the exit code, the
/// JSON report and stderr.
fn run_scripted_cli(db: &Path, ops: &Value, extra: &[&str]) -> (Option<i32>, Value, String) {
    let ops = ops.to_string();
    let out = run_example(
        db,
        "scripted",
        ["--input", &ops, "--json"].iter().chain(extra),
    );
    (out.status.code(), stdout_json(&out), stderr(&out))
}

/// The scripted agent's per-operation results from a `--json` report.
fn results_of(report: &Value) -> Vec<Value> {
    let output = report["output"]
        .as_str()
        .unwrap_or_else(|| panic!("no output: {report}"));
    serde_json::from_str(output).unwrap()
}

/// `[limits] wall_ms` from the config file bounds a task blocked in a host call: it
/// fails promptly with the wall-clock error naming the key, and a task well within
/// the limit completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_wall_ms_stops_a_sleeping_task_naming_the_key() {
    let (_dir, host) = temp_host("claims-wall", "[limits]\nwall_ms = 1500\n");
    let started = Instant::now();
    let (report, _) =
        run_scripted(&host, json!([{"sleep_ms": 30000}]), RunOptions::default()).await;
    let took = started.elapsed();
    assert_eq!(report.status, Status::Failed, "{report:?}");
    let err = report.error.as_deref().unwrap();
    assert!(
        err.contains("wall-clock time limit exceeded (1500 ms") && err.contains("limits.wall_ms"),
        "{err}"
    );
    assert!(
        took >= Duration::from_millis(1500),
        "stopped early: {took:?}"
    );
    assert!(took < Duration::from_secs(20), "not promptly: {took:?}");
    let tasks = tasks(&host, &report.run_id);
    assert_eq!(tasks[0].status, Status::Failed);
    assert!(
        tasks[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("limits.wall_ms"),
        "{:?}",
        tasks[0].error
    );

    let (report, results) =
        run_scripted(&host, json!([{"sleep_ms": 10}]), RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(results, vec![Value::Null]);
}

/// `[limits] max_checkpoint_bytes`: a state over the cap is refused with an error that
/// names the key (and is not stored); one under it is saved and loads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_over_max_checkpoint_bytes_are_refused_naming_the_key() {
    let (_dir, host) = temp_host(
        "claims-checkpoint",
        "[limits]\nmax_checkpoint_bytes = 1000\n",
    );
    // The SDK saves the state as JSON: a string of N characters is N + 2 bytes.
    let small = "s".repeat(990); // 992 bytes
    let big = "b".repeat(999); // 1001 bytes
    let ops = json!([
        {"save": {"state": small, "note": "fits"}},
        {"save": {"state": big, "note": "too big"}},
        {"load": null},
    ]);
    let (report, r) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(r[0]["ok"], 1, "{}", r[0]);
    let refused = r[1]["err"]
        .as_str()
        .unwrap_or_else(|| panic!("the big state was saved: {}", r[1]));
    assert!(
        refused.contains("1001 bytes")
            && refused.contains("limits.max_checkpoint_bytes")
            && refused.contains("1000"),
        "{refused}"
    );
    assert_eq!(
        r[2],
        json!(small),
        "the last stored checkpoint is the small one"
    );
    let conn = host.ledger().reader().unwrap();
    let saved = agentflow::ledger::query::checkpoints(&conn, &report.run_id, None).unwrap();
    assert_eq!(saved.len(), 1, "only the small state is a checkpoint");
    let refusals: Vec<_> = events(&host, &report.run_id)
        .into_iter()
        .filter(|e| e.kind == "checkpoint.save" && !e.ok)
        .collect();
    assert_eq!(refusals.len(), 1, "the refusal is recorded");
}

/// `http_fetch` does not follow redirects: the 302 itself is the answer, and the path
/// it points to is never requested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_fetch_returns_a_redirect_without_following_it() {
    let server = FakeServer::start(vec![
        FakeResponse::text(302, "moved").with_header("location", "/second"),
        FakeResponse::text(200, "the second page"),
    ])
    .await;
    let (_dir, host) = temp_host("claims-http-redirect", ALLOW_LOCAL_HTTP);
    let ops = json!([fetch(&format!("{}/first", server.url()))]);
    let (report, r) = run_scripted(&host, ops, grant(&["http_fetch"])).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let answer = fetched(&r[0]);
    assert_eq!(answer["status"], 302, "{answer}");
    assert_eq!(answer["body"], "moved");
    let paths: Vec<String> = server.requests().into_iter().map(|q| q.path).collect();
    assert_eq!(
        paths,
        vec!["/first".to_string()],
        "/second was never requested"
    );
}

/// `[tools] http_max_bytes` caps the body: a longer one is cut to exactly the cap and
/// marked `truncated`; a shorter one arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_fetch_truncates_the_body_at_http_max_bytes() {
    let long = "0123456789".repeat(500); // 5000 bytes
    let server = FakeServer::start(vec![
        FakeResponse::text(200, long.clone()),
        FakeResponse::text(200, "short"),
    ])
    .await;
    let (_dir, host) = temp_host(
        "claims-http-cap",
        &format!("{ALLOW_LOCAL_HTTP}http_max_bytes = 100\n"),
    );
    let url = format!("{}/big", server.url());
    let (report, r) = run_scripted(
        &host,
        json!([fetch(&url), fetch(&url)]),
        grant(&["http_fetch"]),
    )
    .await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let big = fetched(&r[0]);
    assert_eq!(big["truncated"], true, "{big}");
    assert_eq!(big["body"].as_str().unwrap(), &long[..100]);
    let small = fetched(&r[1]);
    assert_eq!(small["truncated"], false, "{small}");
    assert_eq!(small["body"], "short");
}

/// A `*.domain` allowlist entry admits subdomains only: not the bare domain, not a
/// name that merely ends in the same letters. The refusals come before any name
/// lookup. A matching name gets past the allowlist (`*.localhost` names are loopback
/// or unresolvable, so no connection leaves the machine; the exact matching is also
/// `tools::http_fetch::tests::wildcard_entries_match_subdomains_only`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_fetch_wildcard_entries_admit_subdomains_only() {
    let (_dir, host) = temp_host(
        "claims-http-wildcard",
        "[tools]\nhttp_allow_hosts = [\"*.example.test\", \"*.localhost\"]\n",
    );
    let ops = json!([
        fetch("http://example.test/"),
        fetch("http://evil-example.test/"),
        fetch("http://example.test.evil.test/"),
        fetch("http://localhost:9/"),
        fetch("http://a.localhost:9/"),
    ]);
    let (report, r) = run_scripted(&host, ops, grant(&["http_fetch"])).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    for (i, name) in [
        "example.test",
        "evil-example.test",
        "example.test.evil.test",
        "localhost",
    ]
    .iter()
    .enumerate()
    {
        let err = r[i]["err"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: {}", r[i]));
        assert!(
            err.contains("Denied")
                && err.contains(&format!("host `{name}` is not on the allowlist"))
                && err.contains("[tools] http_allow_hosts"),
            "{name}: {err}"
        );
    }
    let err = r[4]["err"]
        .as_str()
        .unwrap_or_else(|| panic!("a.localhost: {}", r[4]));
    assert!(!err.contains("not on the allowlist"), "{err}");
    assert!(
        err.contains("cannot resolve `a.localhost`") || err.contains("loopback"),
        "past the allowlist, stopped by the lookup or the private-address check: {err}"
    );
}

/// `--max-depth N`: a spawn at depth N + 1 is refused with `max-depth-exceeded(N)`
/// (the default, 5, would allow it), and `inspect` shows the refusal.
#[test]
fn cli_max_depth_refuses_a_spawn_past_it() {
    let dir = TempDir::new("claims-cli-depth");
    let db = dir.ledger("d.db");
    let grandchild = json!([{"spawn": {"description": "grandchild", "input": ""}}]).to_string();
    let ops = json!([{"spawn_wait": {"description": "child", "input": grandchild}}]);
    let (code, report, err) = run_scripted_cli(&db, &ops, &["--max-depth", "1"]);
    assert_eq!(code, Some(0), "{err}");
    let r = results_of(&report);
    let inner = r[0]["completed"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", r[0]));
    assert!(inner.contains("MaxDepthExceeded(1)"), "{inner}");
    assert_eq!(report["tasks"], 2, "the grandchild was never created");
    let run_id = report["run_id"].as_str().unwrap();
    let text = stdout(&agentflow_on(&db, ["inspect", run_id]));
    assert!(
        text.contains("tasks.spawn refused: max-depth-exceeded: 1"),
        "{text}"
    );

    // One level deeper is allowed with --max-depth 2.
    let (code, report, err) = run_scripted_cli(&db, &ops, &["--max-depth", "2"]);
    assert_eq!(code, Some(0), "{err}");
    let r = results_of(&report);
    let inner: Vec<Value> = serde_json::from_str(r[0]["completed"].as_str().unwrap()).unwrap();
    assert!(inner[0]["ok"].is_u64(), "{inner:?}");
    assert_eq!(report["tasks"], 3);
}

/// `--budget-usd X`: an LLM call whose worst case does not fit is refused with
/// `budget-exceeded` and never sent (the provider is a local fake server that counts
/// requests); with room in the budget the same call reaches the server.
#[test]
fn cli_budget_usd_refuses_the_llm_call_before_it_is_sent() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(FakeServer::start(vec![openai_ok(
        "gpt-test",
        "paid answer",
        10,
        5,
    )]));
    let dir = TempDir::new("claims-cli-budget");
    let config = dir.file(
        "c.toml",
        format!(
            "[llm]\nprovider = \"openai\"\n[llm.openai]\nbase_url = \"{}/v1\"\n[llm.prices.gpt-test]\ninput_per_mtok = 2.0\noutput_per_mtok = 8.0\n",
            server.url()
        ),
    );
    let config = config.to_str().unwrap();
    let db = dir.ledger("b.db");
    let ops = json!([{"llm": {"prompt": "hello", "max_tokens": 1000}}]);
    // Worst case ≈ 1000 × $8/Mtok = $0.008: over a budget of $0.001.
    let (code, report, err) =
        run_scripted_cli(&db, &ops, &["--budget-usd", "0.001", "--config", config]);
    assert_eq!(code, Some(0), "{err}");
    let r = results_of(&report);
    let refused = r[0]["err"].as_str().unwrap_or_else(|| panic!("{}", r[0]));
    assert!(refused.contains("BudgetExceeded"), "{refused}");
    assert_eq!(server.request_count(), 0, "the refused call was sent");
    assert_eq!(report["cost_usd"], 0.0);

    let (code, report, err) =
        run_scripted_cli(&db, &ops, &["--budget-usd", "0.05", "--config", config]);
    assert_eq!(code, Some(0), "{err}");
    let r = results_of(&report);
    assert_eq!(r[0]["ok"]["text"], "paid answer", "{}", r[0]);
    assert_eq!(server.request_count(), 1);
}

/// `--max-concurrency N`: the run's tasks never execute more than N at once. Each
/// child records a log line as its first host call and another as its last, with a
/// sleep between; every ledger append is committed in order (the events' rowid), so
/// counting the children between their two records bounds how many held a slot
/// together — without comparing clocks. With a higher limit the same measure sees
/// more of them at once, so it would notice the flag being ignored.
#[test]
fn cli_max_concurrency_bounds_the_children_running_at_once() {
    let dir = TempDir::new("claims-cli-concurrency");
    let db = dir.ledger("c.db");
    let child = json!([{"log": "start"}, {"sleep_ms": 600}, {"log": "end"}]).to_string();
    let mut ops: Vec<Value> = (0..6)
        .map(|i| json!({"spawn": {"description": format!("sleeper {i}"), "input": child}}))
        .collect();
    ops.extend((2..8).map(|id| json!({"wait": id})));
    let ops = json!(ops);
    let peak = |limit: &str| -> usize {
        let (code, report, err) = run_scripted_cli(&db, &ops, &["--max-concurrency", limit]);
        assert_eq!(code, Some(0), "{err}");
        let r = results_of(&report);
        assert!(
            r[6..].iter().all(|w| w["completed"].is_string()),
            "every child completed (queued, not refused): {r:?}"
        );
        max_overlap(&db, report["run_id"].as_str().unwrap())
    };
    let bounded = peak("2");
    assert!(
        bounded <= 2,
        "{bounded} children ran at once under --max-concurrency 2"
    );
    assert_eq!(bounded, 2, "the limit is used: two children overlap");
    let wider = peak("6");
    assert!(
        wider > 2,
        "with room for six, more than two overlap ({wider})"
    );
}

/// The most children of `run_id` between their first and last `trace.log` record at
/// any point of the ledger's append order.
fn max_overlap(db: &Path, run_id: &str) -> usize {
    let conn = crate::support::connect(db);
    let mut stmt = conn
        .prepare(
            "SELECT task_id, MIN(n), MAX(n) FROM
               (SELECT task_id, ROW_NUMBER() OVER (ORDER BY rowid) AS n FROM events
                 WHERE run_id = ?1 AND kind = 'trace.log') AS appended
              WHERE task_id > 1 GROUP BY task_id",
        )
        .unwrap();
    let spans: Vec<(i64, i64)> = stmt
        .query_map([run_id], |r| Ok((r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(spans.len(), 6, "every child logged");
    crate::support::most_at_once(spans)
}

/// `--require-approval-over-usd X`: a child whose estimated cost is over X waits for a
/// human; `agentflow approvals` lists it with its reason and cost, `agentflow deny`
/// fails it with the note while the run goes on (the parent handles the failure, and a
/// child under X never waits), and the decision cannot be made twice.
#[test]
fn cli_require_approval_over_usd_then_deny_fails_the_child_and_the_run_goes_on() {
    let dir = TempDir::new("claims-cli-deny");
    let db = dir.ledger("a.db");
    let ops = json!([
        {"spawn": {"description": "pricey", "input": "", "estimated_cost": 0.9}},
        {"wait": 2},
        {"spawn": {"description": "cheap", "input": "", "estimated_cost": 0.1}},
        {"wait": 3},
    ]);
    let run = agentflow()
        .arg("run")
        .arg(example("scripted"))
        .args(["--input", &ops.to_string(), "--json", "--db"])
        .arg(&db)
        .args(["--require-approval-over-usd", "0.5"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pending = wait_for_listing("approvals", &db);
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{pending}");
    assert_eq!(pending[0]["task_id"], 2, "{pending}");
    assert_eq!(pending[0]["estimated_cost_usd"], 0.9, "{pending}");
    assert!(
        pending[0]["reason"]
            .as_str()
            .unwrap()
            .contains("estimated cost"),
        "{pending}"
    );
    let id = pending[0]["id"].to_string();
    let denied = agentflow_on(&db, ["deny", &id, "--note", "too pricey"]);
    assert!(denied.status.success(), "{}", stderr(&denied));
    assert!(stdout(&denied).contains(&format!("denied approval {id}")));

    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = stdout_json(&out);
    assert_eq!(report["status"], "completed");
    let r = results_of(&report);
    let failed = r[1]["failed"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", r[1]));
    assert!(
        failed.contains("denied by a human") && failed.contains("too pricey"),
        "{failed}"
    );
    assert_eq!(r[3]["completed"], "child:", "under the threshold: no wait");

    let all = stdout_json(&agentflow_on(&db, ["approvals", "--all", "--json"]));
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    assert_eq!(all[0]["status"], "denied");
    assert_eq!(all[0]["note"], "too pricey");
    let again = agentflow_on(&db, ["deny", &id]);
    assert_eq!(again.status.code(), Some(2), "already decided");
}

/// `--input-file F`: the agent receives F's content exactly (newlines and all); a file
/// that cannot be read, or both `--input` and `--input-file`, is a host error.
#[test]
fn cli_input_file_is_the_agents_input() {
    let dir = TempDir::new("claims-cli-input");
    let db = dir.ledger("i.db");
    let content = "first line\nsecond line: ünïcode\n";
    let file = dir.file("input.txt", content);
    let out = run_example(
        &db,
        "scripted",
        ["--input-file", file.to_str().unwrap(), "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout_json(&out);
    // The scripted agent echoes an input that is not a list of operations.
    assert_eq!(report["output"], format!("child:{content}"));
    let recorded: String = sql(&db, "SELECT input FROM runs");
    assert_eq!(recorded, content);

    let missing = dir.join("missing.txt");
    let out = run_example(&db, "scripted", ["--input-file", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read input file"),
        "{}",
        stderr(&out)
    );
    let out = agentflow()
        .arg("run")
        .arg(example("scripted"))
        .args(["--input", "x", "--input-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// `provider = "anthropic"` with its key taken from `$ANTHROPIC_API_KEY`: the key is
/// sent (`x-api-key`) but appears nowhere in the host's output at its most verbose
/// log level, in `inspect`, in the ledger (and its `-wal`) or in the performance DB.
/// (The same for an OpenAI key in the config file:
/// `cli::run_against_an_openai_compatible_server`.)
#[test]
fn an_anthropic_key_from_the_environment_stays_out_of_logs_ledger_and_perf_db() {
    const KEY: &str = "sk-ant-claims-secret-0451";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(FakeServer::start(vec![anthropic_ok(
        "claude-test",
        "Hello from Anthropic",
        30,
        5,
    )]));
    let dir = TempDir::new("claims-anthropic-key");
    let config = dir.file(
        "a.toml",
        format!(
            "[llm]\nprovider = \"anthropic\"\n[llm.anthropic]\nbase_url = \"{}\"\n[llm.prices.claude-test]\ninput_per_mtok = 3.0\noutput_per_mtok = 15.0\n",
            server.url()
        ),
    );
    let db = dir.ledger("k.db");
    let out = agentflow()
        .env("AGENTFLOW_LOG", "trace")
        .env("ANTHROPIC_API_KEY", KEY)
        .arg("run")
        .arg(example("hello"))
        .args(["--input", "x", "--json", "--config"])
        .arg(&config)
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout_json(&out);
    assert_eq!(report["output"], "Hello from Anthropic");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].header("x-api-key"),
        Some(KEY),
        "the key was used"
    );
    assert!(stderr(&out).contains("TRACE"), "{}", stderr(&out));
    let inspect = agentflow_on(
        &db,
        ["inspect", report["run_id"].as_str().unwrap(), "--json"],
    );
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    let perf = agentflow::scheduler::perf::path_for_ledger(&db, &cache_dir());
    assert!(perf.exists(), "{}", perf.display());
    let mut places = vec![
        ("stdout of run".to_string(), out.stdout.clone()),
        ("stderr of run".to_string(), out.stderr.clone()),
        ("inspect --json".to_string(), inspect.stdout.clone()),
    ];
    for file in [
        db.clone(),
        dir.join("k.db-wal"),
        perf.clone(),
        perf.with_extension("db-wal"),
    ] {
        places.push((
            file.display().to_string(),
            std::fs::read(&file).unwrap_or_default(),
        ));
    }
    for (place, bytes) in places {
        assert!(
            !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
            "the key is in {place}"
        );
    }
}
