//! The `agentflow` binary: run (text and --json), runs, inspect, errors and exit codes,
//! and a real OpenAI-compatible provider (a local fake server) behind it.

use crate::support::cli::*;
use crate::support::fake_http::{FakeResponse, FakeServer};
use crate::support::llm::openai_ok;
use crate::support::*;

#[test]
fn run_json_runs_and_inspect() {
    let dir = TempDir::new("cli");
    let db = dir.ledger("cli.db");
    let out = run_example(
        &db,
        "researcher",
        ["--input", "Why sandbox agents?", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout_json(&out);
    for key in [
        "run_id",
        "status",
        "output",
        "tasks",
        "tokens",
        "cost_usd",
        "duration_ms",
    ] {
        assert!(report.get(key).is_some(), "missing {key}: {report}");
    }
    assert_eq!(report["status"], "completed");
    assert_eq!(report["tasks"], 4);
    let run_id = report["run_id"].as_str().unwrap();

    let plain = run_example(&db, "hello", ["--input", "there"]);
    assert!(plain.status.success());
    assert!(stdout(&plain).contains("there"));
    assert!(
        stderr(&plain).contains("tasks 1"),
        "summary on stderr: {}",
        stderr(&plain)
    );

    let runs = stdout_json(&agentflow_on(&db, ["runs", "--json"]));
    assert_eq!(runs.as_array().unwrap().len(), 2);

    let inspect = agentflow_on(&db, ["inspect", &run_id[..8]]);
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    let text = stdout(&inspect);
    assert!(text.starts_with(&format!("run {}", &run_id[..8])), "{text}");
    assert!(
        text.contains("├─ task 2")
            && text.contains("mock-small")
            && text.contains("step 1 thought"),
        "{text}"
    );

    let view = stdout_json(&agentflow_on(&db, ["inspect", run_id, "--json"]));
    assert_eq!(view["tasks"].as_array().unwrap().len(), 4);
}

#[test]
fn errors_are_one_line_with_nonzero_exit() {
    let dir = TempDir::new("cli-errors");
    let db = dir.ledger("e.db");
    let junk = dir.file("junk.wasm", b"not wasm at all");
    let out = agentflow_on(&db, ["run", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("not a WebAssembly file"), "{err}");

    let bad_config = dir.file("bad.toml", "[limits]\nmemroy_mb = 3\n");
    let out = agentflow()
        .arg("run")
        .arg(example("hello"))
        .arg("--config")
        .arg(&bad_config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("memroy_mb"), "{}", stderr(&out));

    // A failing agent: exit 1, the reason on stderr.
    let out = run_example(&db, "hostile", ["--input", "trap"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("agent trapped"));

    let out = agentflow_on(&db, ["inspect", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no run `nope`"));
}

#[test]
fn run_against_an_openai_compatible_server() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(FakeServer::start(vec![
        FakeResponse::json(429, r#"{"error":"slow down"}"#).with_header("retry-after", "1"),
        openai_ok("gpt-test", "Hello from the server", 1000, 500),
    ]));
    let dir = TempDir::new("cli-openai");
    let config = dir.file(
        "openai.toml",
        format!(
            "[llm]\nprovider = \"openai\"\n[llm.openai]\nbase_url = \"{}/v1\"\napi_key = \"sk-secret-123\"\n[llm.prices.gpt-test]\ninput_per_mtok = 2.0\noutput_per_mtok = 8.0\n",
            server.url()
        ),
    );
    let db = dir.ledger("o.db");
    let out = agentflow()
        .env("AGENTFLOW_LOG", "trace")
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
    assert_eq!(report["output"], "Hello from the server");
    assert_eq!(report["tokens"], 1500);
    let cost = report["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - (1000.0 * 2.0 + 500.0 * 8.0) / 1e6).abs() < 1e-9,
        "{cost}"
    );
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "429 then retried");
    assert_eq!(reqs[1].path, "/v1/chat/completions");
    assert_eq!(
        reqs[1].header("authorization"),
        Some("Bearer sk-secret-123")
    );
    // `agentflow models` shows the call, read back from the performance DB.
    let models = agentflow_on(
        &db,
        ["models", "--json", "--config", config.to_str().unwrap()],
    );
    assert!(models.status.success(), "{}", stderr(&models));
    let models = stdout_json(&models);
    assert_eq!(models[0]["name"], "gpt-test");
    assert_eq!(
        models[0]["stats"]["calls"], 1,
        "the provider retried the 429 itself: one call"
    );
    // The key never lands in the ledger, the performance DB or the host's output
    // (its most verbose logs, the HTTP client's included).
    let needle = b"sk-secret-123";
    assert!(
        stderr(&out).contains("DEBUG"),
        "the trace log was on: {}",
        stderr(&out)
    );
    let perf = agentflow::scheduler::perf::path_for_ledger(&db, &cache_dir());
    assert!(perf.exists(), "{} was written", perf.display());
    let mut places = vec![
        ("stdout of run".to_string(), out.stdout.clone()),
        ("stderr of run".to_string(), out.stderr.clone()),
        (
            "stdout of models".to_string(),
            serde_json::to_vec(&models).unwrap(),
        ),
    ];
    for file in [
        db.clone(),
        dir.join("o.db-wal"),
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
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the key is in {place}"
        );
    }
}

/// A guest blocked in `sleep` holds its slot until `wall_ms`: the default is printed
/// before a run, `--timeout` sets it, and `inspect` shows the time blocked.
#[test]
fn timeout_bounds_a_sleeping_guest_and_inspect_shows_blocked_time() {
    let dir = TempDir::new("cli-timeout");
    let db = dir.ledger("t.db");
    let sleeper = r#"[{"sleep_ms": 20000}]"#;
    let mut run = agentflow(); // builds the binary the first time: not timed
    run.arg("run")
        .arg(example("scripted"))
        .args(["--input", sleeper, "--timeout", "1500ms", "--db"])
        .arg(&db);
    let started = std::time::Instant::now();
    let out = run.output().unwrap();
    let took = started.elapsed();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("limits: cpu 10s (cpu_ms), wall 1.5s per task (wall_ms, --timeout)"),
        "the limits are shown before the run: {err}"
    );
    assert!(
        err.contains("wall-clock time limit exceeded (1500 ms"),
        "{err}"
    );
    assert!(took < std::time::Duration::from_secs(15), "took {took:?}");
    let out = agentflow_on(&db, ["inspect", &only_run_id(&db)]);
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.contains("blocked in host calls"))
        .unwrap_or_else(|| panic!("no usage line: {text}"));
    // Blocked for (about) the whole 1.5 s, using next to no CPU.
    let secs = |label: &str| -> f64 {
        let rest = &line[line.find(label).unwrap() + label.len()..];
        rest.trim_start()
            .split('s')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(secs("blocked in host calls") >= 1.4, "{line}");
    assert!(secs("cpu") < 1.0, "{line}");
    assert!(line.contains("of 1.500s"), "{line}");
    // A bad duration is one clear line.
    let out = agentflow()
        .arg("run")
        .arg(example("scripted"))
        .args(["--timeout", "30"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("give a unit"), "{}", stderr(&out));
}

/// A guest's texts reach the host's stderr and `inspect` escaped: a newline, carriage
/// return or terminal escape in them cannot start or overwrite a host log line.
#[test]
fn guest_text_cannot_forge_host_log_lines() {
    const FORGED: &str = "2026-12-01T00:00:00Z  INFO agentflow: run completed";
    let dir = TempDir::new("cli-forge");
    let db = dir.ledger("forge.db");
    let out = agentflow()
        .env("AGENTFLOW_LOG", "info")
        .env("NO_COLOR", "1")
        .arg("run")
        .arg(example("hostile"))
        .args(["--input", "log-forge", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_not_forged(&err, FORGED);
    assert!(
        err.contains(&format!("harmless\\n{FORGED}\\r\\u{{1b}}[2K{FORGED}")),
        "the log line and the failure are shown escaped: {err}"
    );
    let runs = stdout_json(&agentflow_on(&db, ["runs", "--json"]));
    let run_id = runs[0]["run_id"].as_str().unwrap();
    let inspect = agentflow_on(&db, ["inspect", run_id]);
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    let shown = stdout(&inspect);
    assert_not_forged(&shown, FORGED);
    assert!(shown.contains("harmless"), "{shown}");
}

/// No line of `text` is (or, through a carriage return or escape, overwrites with)
/// the forged one.
fn assert_not_forged(text: &str, forged: &str) {
    for line in text.lines() {
        assert!(!line.starts_with(forged), "forged line printed: {text}");
    }
    assert!(!text.contains('\r'), "raw carriage return printed: {text}");
    assert!(!text.contains('\u{1b}'), "raw escape printed: {text}");
}

/// 168 MB of trace logs leave the host's stderr (and its ledger) bounded by
/// `[limits] max_trace_bytes` (64 KiB per message by default).
#[test]
fn trace_flood_does_not_flood_the_hosts_stderr() {
    let dir = TempDir::new("cli-flood");
    let db = dir.ledger("flood.db");
    let out = agentflow()
        .env("AGENTFLOW_LOG", "info")
        .env("NO_COLOR", "1")
        .arg("run")
        .arg(example("hostile"))
        .args(["--input", "log-flood", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "flooded");
    assert!(
        out.stderr.len() < 21 * ((64 << 10) + 400),
        "{} bytes on stderr",
        out.stderr.len()
    );
    assert!(stderr(&out).contains("max_trace_bytes"));
}

/// The CLI's rough edges: a missing `--db` directory, clap's value errors, ambiguous
/// and wildcard-looking run ids, sub-cent costs, readable errors and the duration.
#[test]
fn cli_edges_missing_dir_one_line_errors_prefixes_costs_and_durations() {
    let dir = TempDir::new("cli-edges");
    // --db in a directory that does not exist: an error, and nothing is created.
    let missing = dir.join("no-such-dir");
    let out = agentflow()
        .arg("run")
        .arg(example("hello"))
        .arg("--db")
        .arg(missing.join("a.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert!(!missing.exists(), "the directory was created");
    // A clap value error is one line.
    let out = agentflow()
        .arg("run")
        .arg(example("hello"))
        .args(["--max-depth", "deep"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--max-depth"), "{err}");

    // A run with a refused tool call, on the mock model.
    let db = dir.ledger("e.db");
    let ops = r#"[{"llm": {"prompt": "hi"}}, {"tool": {"name": "kv", "args": {"op": "get", "key": "k"}}}]"#;
    let out = run_example(&db, "scripted", ["--input", ops, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout_json(&out);
    let run_id = report["run_id"].as_str().unwrap().to_string();
    let cost = report["cost_usd"].as_f64().unwrap();
    assert!(cost > 0.0 && cost < 0.001, "a sub-cent cost: {cost}");
    let inspect = |id: &str| agentflow_on(&db, ["inspect", id]);
    let out = inspect(&run_id);
    let text = stdout(&out);
    let run_line = text.lines().next().unwrap();
    let shown: f64 = run_line
        .split_whitespace()
        .find_map(|w| w.strip_prefix('$'))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (shown - cost).abs() <= cost * 0.1,
        "inspect shows ${shown} for a cost of {cost}: {run_line}"
    );
    let ms = report["duration_ms"].as_u64().unwrap();
    assert!(
        run_line.contains(&format!("{:.3}s", ms as f64 / 1000.0)),
        "the same duration as --json ({ms} ms): {run_line}"
    );
    assert!(
        text.contains("tools.call refused: not-granted:"),
        "errors in their readable form: {text}"
    );
    assert!(!text.contains("NotGranted("), "no Debug forms: {text}");

    // A second run whose id shares a prefix with the first: the prefix is ambiguous.
    let conn = crate::support::connect(&db);
    let twin = format!("{}{}", &run_id[..6], "f".repeat(26));
    conn.execute_batch(&format!(
        "CREATE TEMP TABLE t AS SELECT * FROM runs WHERE run_id = '{run_id}';
         UPDATE t SET run_id = '{twin}'; INSERT INTO runs SELECT * FROM t;"
    ))
    .unwrap();
    drop(conn);
    let out = inspect(&run_id[..6]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("ambiguous") && err.contains(&run_id) && err.contains(&twin),
        "{err}"
    );
    // The full id still finds it; `%` and `_` are characters, not wildcards.
    assert!(inspect(&run_id).status.success());
    for pattern in ["%", "_", &format!("{}%", &run_id[..2])] {
        let out = inspect(pattern);
        assert_eq!(out.status.code(), Some(2), "{pattern}");
        assert!(
            stderr(&out).contains("no run"),
            "{pattern}: {}",
            stderr(&out)
        );
    }
}
