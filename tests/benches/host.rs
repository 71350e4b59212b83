//! `cargo bench -p agentflow-tests`: the host's figures, printed in one run.
//!
//! 1. Agent start (instantiate + a trivial `run` of `scripted` with `[]`): raw wasmtime
//!    (`InstancePre` + pooling, same component, WASI only) vs the host (`Host::run` on a
//!    running host: run and task rows in the durable ledger, limits, recording WASI) vs
//!    from nothing (`Host::new` + component load from the on-disk cache + the run).
//! 2. Host-call round trip with the durable ledger on (`trace.log`, and a mock
//!    `llm.complete`), from the per-call slope of runs with 0 and N calls.
//! 3. A tree of 111 agents (root → 10 → 10 each), each doing 5 steps of one mock LLM
//!    call + one `kv` tool call, durable ledger on: wall time, per-step amortised
//!    throughput, and per-call latency from the ledger's timestamps.
//! 4. Scheduler decision latency with 50 models in the catalog (plan: filter, predict,
//!    score; and plan + quota reservation + release).
//! 5. Replay: resuming a task with 10,000 recorded calls, a mix of LLM, `kv` tool and
//!    `trace.log` calls, through `Host::resume` and through the CLI's `agentflow resume`.
//! 6. Spawn decisions with 10,000 tasks already in the run's tree: the whole spawn
//!    from inside the guest (all checks, the ledger commits of the new task and of the
//!    call) with the ledger on disk and on tmpfs, and the supervisor's decision alone
//!    (`spawn.rs`).
//! 7. Validation overhead per task for programmatic validators (json-schema + length +
//!    pattern, their verdicts `validation.result` events in one durable commit): median
//!    run time of a one-task run with and without them, interleaved.
//! 8. Merge: 10 children each change one region of the same 2,000-line workspace file;
//!    the joins (three-way merges into the parent's view, decisions recorded) timed
//!    from inside the guest once every child has signalled it wrote (no sleep timed),
//!    and the bare `diffy` classification of one such merge.
//! 9. 10,000 live agents: a fan-out whose children all wait in `tasks.wait` at once;
//!    the host's resident memory per waiting agent (`live.rs`).
//! 10. The dashboard's run page for a run of 1,111 tasks (a real fan-out): the page
//!     and its JSON over HTTP from `agentflow serve`'s server (`dashboard.rs`).
//! 11. The Python example agent (componentize-py, ~18 MB): its first start, compiling
//!     with an empty component cache, and a warm start from the on-disk cache
//!     (`python.rs`; needs componentize-py, see `.ci/run`).
//! 12. A tool call through an installed tool component next to a built-in tool call:
//!     through an agent (recorded) and alone (`tool_calls.rs`).
//! 13. A tool call through an MCP server (the reference server's `echo` over stdio)
//!     next to a built-in tool call (`kv` get), and the server's start (`mcp.rs`);
//!     skipped with a note when the server is not installed.
//! 14. A cluster on one PostgreSQL ledger: runs/s and tasks/s for 1, 2 and 4 workers
//!     draining submitted runs, and takeover latency after a worker's lease expires
//!     (`cluster.rs`; needs `AGENTFLOW_BENCH_POSTGRES`, e.g. from `.ci/postgres start`).
//!
//! Every figure is printed as the median of its samples with min, max and the number
//! of samples; figures that divide one long run by its count of operations say
//! "amortised" (throughput), and latency figures stand beside them.
//!
//! `AGENTFLOW_BENCH_ONLY=7,8` (any list of section numbers) runs only those sections.
//! `AGENTFLOW_BENCH_NO_CLI=1` leaves out section 5's CLI figure (it builds the CLI).
//!
//! Instruction counts: when `valgrind` is on `PATH`, sections 1, 2, 3 and 5 also print
//! the instructions (callgrind `Ir`, all threads) of one trivial `Host::run`, of one
//! `trace.log` and one `llm.complete` call (a run of 1,000 calls less the trivial run,
//! over 1,000), of one tree and of one resume (of a task with 1,000 recorded calls):
//! figures that repeat on a noisy machine. The bench runs itself again under
//! `valgrind --tool=callgrind` for each (`AGENTFLOW_BENCH_CALLGRIND=start|log|llm|tree|
//! replay`, from under a minute to a few minutes each); see `callgrind.rs` for what is
//! counted and how. Without valgrind those lines say so.

#[path = "callgrind.rs"]
mod callgrind;

#[path = "cluster.rs"]
mod cluster;
#[path = "dashboard.rs"]
mod dashboard;
#[path = "live.rs"]
mod live;
#[path = "mcp.rs"]
mod mcp;
#[path = "python.rs"]
mod python;
#[path = "spawn.rs"]
mod spawn;
#[path = "tool_calls.rs"]
mod tool_calls;

use agentflow::{Host, HostConfig, RunOptions, Status};
use agentflow_tests::example;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

struct RawState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for RawState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn fmt(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

/// Samples of one figure.
struct Samples(Vec<Duration>);

impl Samples {
    fn median(&self) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        v[v.len() / 2]
    }

    /// `median (min …, max …, n=…)`.
    fn line(&self) -> String {
        let (min, max) = (
            self.0.iter().min().copied().unwrap_or_default(),
            self.0.iter().max().copied().unwrap_or_default(),
        );
        format!(
            "{:>10}  (min {}, max {}, n={})",
            fmt(self.median()),
            fmt(min),
            fmt(max),
            self.0.len()
        )
    }
}

/// A scratch directory under cargo's tmpdir, removed when dropped.
struct Scratch(tempfile::TempDir);

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        self.0.path()
    }
}

/// A scratch directory on tmpfs (`/dev/shm`) where there is one, else like [`scratch`].
fn tmpfs_scratch(name: &str) -> Scratch {
    match tempfile::Builder::new()
        .prefix(&format!("bench-{name}-"))
        .tempdir_in("/dev/shm")
    {
        Ok(dir) => Scratch(dir),
        Err(_) => scratch(name),
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = tempfile::Builder::new()
        .prefix(&format!("bench-{name}-"))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    Scratch(dir)
}

async fn raw_start(iterations: u32) -> Samples {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(100)
        .total_memories(100)
        .total_tables(400)
        .total_core_instances(400);
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).unwrap();
    // `scripted` with input `[]` makes no host call: the trivial run of every start
    // figure. (Its imports of agentflow interfaces are stubbed as traps here.)
    let component = Component::from_file(&engine, example("scripted")).unwrap();
    let mut linker = Linker::<RawState>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    linker.define_unknown_imports_as_traps(&component).unwrap();
    let pre = linker.instantiate_pre(&component).unwrap();
    let once = async || {
        let mut store = Store::new(
            &engine,
            RawState {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        );
        let instance = pre.instantiate_async(&mut store).await.unwrap();
        let run = instance
            .get_typed_func::<(String,), (Result<String, String>,)>(&mut store, "run")
            .unwrap();
        let (out,) = run
            .call_async(&mut store, ("[]".to_string(),))
            .await
            .unwrap();
        assert_eq!(out.unwrap(), "[]");
    };
    for _ in 0..20 {
        once().await;
    }
    let mut samples = Vec::new();
    for _ in 0..iterations {
        let start = Instant::now();
        once().await;
        samples.push(start.elapsed());
    }
    Samples(samples)
}

fn host(dir: &std::path::Path, toml: &str) -> Host {
    let mut config = HostConfig::from_toml(toml).unwrap();
    config.cache_dir = Some(dir.join("cache"));
    if callgrind::wants_on_demand() {
        config.runtime.allocator = agentflow::runtime::Allocator::OnDemand;
    }
    Host::new(config, dir.join("bench.db")).unwrap()
}

async fn host_start(iterations: u32, toml: &str) -> Samples {
    let dir = scratch("start");
    let host = host(&dir, toml);
    let agent = host.runtime().load_file(&example("scripted")).unwrap();
    for _ in 0..10 {
        host.run(agent.clone(), "[]", RunOptions::default())
            .await
            .unwrap();
    }
    let mut samples = Vec::new();
    for _ in 0..iterations {
        let start = Instant::now();
        let r = callgrind::start(host.run(agent.clone(), "[]", RunOptions::default()))
            .await
            .unwrap();
        assert_eq!(r.status, Status::Completed);
        samples.push(start.elapsed());
    }
    Samples(samples)
}

/// A start from nothing but the files: `Host::new` on a fresh ledger, the component
/// loaded (its compiled code from the on-disk cache) and one trivial run.
async fn cold_start(iterations: u32) -> Samples {
    let cache = scratch("cold-cache");
    let mut samples = Vec::new();
    for i in 0..iterations + 2 {
        let dir = scratch(&format!("cold-{i}"));
        let start = Instant::now();
        let config = HostConfig {
            cache_dir: Some(cache.to_path_buf()),
            ..Default::default()
        };
        let host = Host::new(config, dir.join("bench.db")).unwrap();
        let r = host
            .run_file(&example("scripted"), "[]", RunOptions::default())
            .await
            .unwrap();
        assert_eq!(r.status, Status::Completed);
        if i >= 2 {
            samples.push(start.elapsed()); // the first two fill the component cache
        }
    }
    Samples(samples)
}

/// Amortised cost of one host call: the slope between a run with no calls and one with
/// `n`, measured `repeats` times.
async fn call_round_trip(
    part: &str,
    op: serde_json::Value,
    n: usize,
    repeats: usize,
    extra_toml: &str,
) -> Samples {
    let mut samples = Vec::new();
    for _ in 0..repeats {
        samples.push(call_slope(part, op.clone(), n, extra_toml).await);
    }
    Samples(samples)
}

/// `part`: the callgrind child's name for this call (`log`, `llm`; see [`callgrind::calls`]).
async fn call_slope(part: &str, op: serde_json::Value, n: usize, extra_toml: &str) -> Duration {
    let dir = scratch("calls");
    let host = host(
        &dir,
        &format!(
            "[limits]\nmax_host_calls = 100000\ncpu_ms = 600000\n[budget]\nusd = 100.0\n{extra_toml}"
        ),
    );
    let agent = host.runtime().load_file(&example("scripted")).unwrap();
    let ops = |k: usize| serde_json::Value::Array(vec![op.clone(); k]).to_string();
    host.run(agent.clone(), &ops(10), RunOptions::default())
        .await
        .unwrap();
    let t0 = Instant::now();
    host.run(agent.clone(), &ops(0), RunOptions::default())
        .await
        .unwrap();
    let base = t0.elapsed();
    let t1 = Instant::now();
    let r = callgrind::calls(
        part,
        host.run(agent.clone(), &ops(n), RunOptions::default()),
    )
    .await
    .unwrap();
    assert_eq!(r.status, Status::Completed, "{r:?}");
    (t1.elapsed().saturating_sub(base)) / n as u32
}

/// The tree `repeats` times: wall times, tasks, events of the last run, and the
/// per-call latencies (LLM and tool calls) from the last run's ledger timestamps.
async fn trees(repeats: usize, extra_toml: &str) -> (Samples, u64, i64, Samples) {
    let mut walls = Vec::new();
    let (mut tasks, mut events, mut latencies) = (0, 0, Vec::new());
    for i in 0..repeats {
        let (wall, t, e, lat) = tree(i, extra_toml).await;
        walls.push(wall);
        (tasks, events, latencies) = (t, e, lat);
    }
    (Samples(walls), tasks, events, Samples(latencies))
}

async fn tree(i: usize, extra_toml: &str) -> (Duration, u64, i64, Vec<Duration>) {
    let dir = scratch(&format!("tree-{i}"));
    let host = host(
        &dir,
        &format!("[limits]\nmax_tasks = 200\n[budget]\nusd = 100.0\n{extra_toml}"),
    );
    let agent = host.runtime().load_file(&example("fanout")).unwrap();
    let opts = RunOptions {
        grants: vec!["kv".into()],
        ..Default::default()
    };
    let start = Instant::now();
    let r = callgrind::tree(host.run(agent, r#"{"depth": 2, "fanout": 10, "steps": 5}"#, opts))
        .await
        .unwrap();
    let wall = start.elapsed();
    assert_eq!(r.status, Status::Completed, "{r:?}");
    let conn = host.ledger().reader().unwrap();
    let events: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM events WHERE run_id = ?1",
            [&r.run_id],
            |row| row.get(0),
        )
        .unwrap();
    let latencies: Vec<Duration> = conn
        .prepare(
            "SELECT finished_at - started_at FROM events
             WHERE run_id = ?1 AND kind IN ('llm.complete', 'tools.call')",
        )
        .unwrap()
        .query_map([&r.run_id], |row| row.get::<_, i64>(0))
        .unwrap()
        .map(|ms| Duration::from_millis(ms.unwrap().max(0) as u64))
        .collect();
    (wall, r.tasks, events, latencies)
}

/// Scheduler decisions, amortised over batches of `iterations`: plan alone, and plan +
/// quota reservation + release; `batches` samples each.
async fn decision_latency(iterations: u32, batches: usize) -> (Samples, Samples) {
    let (mut plans, mut decides) = (Vec::new(), Vec::new());
    for _ in 0..batches {
        let (p, d) = decision_batch(iterations).await;
        plans.push(p);
        decides.push(d);
    }
    (Samples(plans), Samples(decides))
}

async fn decision_batch(iterations: u32) -> (Duration, Duration) {
    use agentflow::scheduler::{Priority, SchedRequest};
    let dir = scratch("decide");
    let mut toml = String::new();
    for i in 0..50 {
        toml.push_str(&format!(
            "[[llm.models]]\nname = \"m{i}\"\nprovider = \"mock\"\ninput_per_mtok = {}\noutput_per_mtok = {}\n\
             quality = {}\nexpected_latency_ms = {}\ncontext_window = {}\ncapabilities = [\"function-calling\"]\ntpm = 1000000000\n",
            0.1 + i as f64 * 0.2,
            0.3 + i as f64 * 0.6,
            0.3 + (i % 7) as f64 * 0.1,
            100 + (i * 37) % 2000,
            if i % 5 == 0 { 8_000 } else { 128_000 },
        ));
    }
    let host = host(&dir, &toml);
    let scheduler = host.scheduler();
    let req = SchedRequest {
        estimated_input_tokens: 1200,
        max_output_tokens: 512,
        priority: Priority::Balanced,
        capabilities: vec!["function-calling".into()],
        min_context_window: None,
        task_type: Some("summarize".into()),
        pinned: None,
        allow_fallback: true,
        max_cost_usd: None,
        max_latency_ms: None,
        max_wait_ms: None,
        budget_remaining: 100.0,
        min_quality: None,
        agent: None,
    };
    let start = Instant::now();
    for _ in 0..iterations {
        let plan = scheduler.plan(&req).unwrap();
        assert_eq!(plan.candidates.len(), 50);
    }
    let plan_only = start.elapsed() / iterations;
    let start = Instant::now();
    for _ in 0..iterations {
        let plan = scheduler.plan(&req).unwrap();
        let grant = scheduler.acquire(&plan, &req, &[]).await.unwrap();
        scheduler.release(&grant);
    }
    (plan_only, start.elapsed() / iterations)
}

/// Set: section 5 leaves out its CLI figure, which needs `cargo build --release -p
/// agentflow` (with the bench's features unified differently, a rebuild of most of the
/// tree, 15+ minutes on 2 cores the first time).
const NO_CLI_ENV: &str = "AGENTFLOW_BENCH_NO_CLI";

/// The `agentflow` binary, built once (release) for the CLI resume figure.
fn agentflow_bin() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "agentflow",
            "--bin",
            "agentflow",
        ])
        .status()
        .expect("cargo build agentflow");
    assert!(status.success());
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../release/agentflow")
}

/// Mark the run interrupted right after its last call, so a resume replays it all.
fn make_interrupted(db: &std::path::Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute("UPDATE runs SET status = 'running', output = NULL", [])
        .unwrap();
    conn.execute("UPDATE tasks SET status = 'running', output = NULL", [])
        .unwrap();
}

/// A task with 10,000 recorded calls, a mix of LLM calls, `kv` tool calls (each with
/// its intent) and `trace.log`: the live run, then resumes that replay all of it —
/// through `Host::resume` and through the CLI's `agentflow resume` (process start,
/// ledger open, component load from the cache, replay) — `repeats` times each.
async fn resume_mix(repeats: usize) -> (Duration, Samples, Samples, u64) {
    let dir = scratch("replay");
    let toml = "[limits]\nmax_host_calls = 100000\ncpu_ms = 600000\n[budget]\nusd = 1000.0\n";
    let host = host(&dir, toml);
    let agent = host.runtime().load_file(&example("scripted")).unwrap();
    let n = callgrind::replay_calls(10_000);
    let ops = serde_json::Value::Array(
        (0..n)
            .map(|i| match i % 3 {
                0 => serde_json::json!({"llm": {"prompt": format!("call {i}"), "max_tokens": 16}}),
                1 => serde_json::json!({"tool": {"name": "kv", "args": {"op": "put", "key": format!("k{i}"), "value": "v"}}}),
                _ => serde_json::json!({"log": format!("call {i}")}),
            })
            .collect(),
    )
    .to_string();
    let opts = RunOptions {
        grants: vec!["kv".into()],
        ..Default::default()
    };
    let start = Instant::now();
    let r = host.run(agent, &ops, opts).await.unwrap();
    let live = start.elapsed();
    assert_eq!(r.status, Status::Completed, "{r:?}");
    let db = dir.join("bench.db");
    let events: u64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    let mut library = Vec::new();
    for _ in 0..repeats {
        make_interrupted(&db);
        let start = Instant::now();
        let resumed =
            callgrind::replay(host.resume(&r.run_id, agentflow::ResumeOptions::default()))
                .await
                .unwrap();
        library.push(start.elapsed());
        assert_eq!(resumed.output, r.output, "the replay reproduces the run");
    }
    drop(host);
    let mut cli = Vec::new();
    if std::env::var_os(NO_CLI_ENV).is_some() {
        return (live, Samples(library), Samples(cli), events);
    }
    let bin = agentflow_bin();
    for _ in 0..repeats {
        make_interrupted(&db);
        let start = Instant::now();
        let out = std::process::Command::new(&bin)
            .args(["resume", &r.run_id, "--json", "--db"])
            .arg(&db)
            .env("AGENTFLOW_CACHE_DIR", dir.join("cache"))
            .output()
            .unwrap();
        cli.push(start.elapsed());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (live, Samples(library), Samples(cli), events)
}

/// Median wall time of a one-task `scripted` run (output `[]`) without and with three
/// programmatic validators, runs interleaved so drift hits both alike.
async fn validation_overhead(iterations: usize) -> (Samples, Samples) {
    let plain_dir = scratch("val-plain");
    let plain = host(&plain_dir, "");
    let checked_dir = scratch("val-checked");
    let checked = host(
        &checked_dir,
        r#"
[[validators]]
kind = "json-schema"
schema = { type = "array", maxItems = 10 }
[[validators]]
kind = "length"
min_chars = 2
max_chars = 10000
[[validators]]
kind = "pattern"
must_match = ["[*"]
must_not_match = ["*TODO*"]
"#,
    );
    let agent_a = plain.runtime().load_file(&example("scripted")).unwrap();
    let agent_b = checked.runtime().load_file(&example("scripted")).unwrap();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..iterations + 10 {
        for (host, agent, times) in [(&plain, &agent_a, &mut a), (&checked, &agent_b, &mut b)] {
            let start = Instant::now();
            let r = host
                .run(agent.clone(), "[]", RunOptions::default())
                .await
                .unwrap();
            assert_eq!(r.status, Status::Completed, "{r:?}");
            if i >= 10 {
                times.push(start.elapsed());
            }
        }
    }
    let recorded: i64 = checked
        .ledger()
        .reader()
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM events WHERE kind = 'validation.result' AND status = 'ok'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        recorded as usize,
        3 * (iterations + 10),
        "every verdict recorded"
    );
    (Samples(a), Samples(b))
}

/// The 2,000-line file and the version child `k` writes (one line changed in its region).
fn merge_versions(k: usize) -> (String, String) {
    let base: String = (0..2000)
        .map(|i| format!("let line_{i} = {i};\n"))
        .collect();
    let line = k * 200 + 100;
    let mine = base.replace(
        &format!("let line_{line} = {line};\n"),
        &format!("let line_{line} = {line} * 2; // child {k}\n"),
    );
    (base, mine)
}

async fn merges(repeats: usize) -> (Samples, Samples) {
    let (mut joins, mut classify) = (Vec::new(), Vec::new());
    for i in 0..repeats {
        let (j, c) = merge_10_children(i).await;
        joins.push(j);
        classify.extend(c);
    }
    (Samples(joins), Samples(classify))
}

async fn merge_10_children(i: usize) -> (Duration, Vec<Duration>) {
    let dir = scratch(&format!("merge-{i}"));
    let ws = dir.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("big.rs"), merge_versions(0).0).unwrap();
    let host = host(&dir, "");
    let mut ops = Vec::new();
    for k in 0..10 {
        let (_, mine) = merge_versions(k);
        let child_ops = serde_json::json!([
            {"tool": {"name": "workspace", "args": {"op": "write", "path": "big.rs", "content": mine}}},
            {"tool": {"name": "kv", "args": {"op": "put", "key": format!("done-{k}"), "value": "yes"}}},
        ]);
        ops.push(
            serde_json::json!({"spawn": {"description": format!("change region {k}"),
                                              "input": child_ops.to_string()}}),
        );
    }
    // Wait until every child has written (its kv signal), so the timed waits are the
    // joins alone, not the children's work or a guessed sleep.
    for k in 0..10 {
        ops.push(serde_json::json!({"wait_kv": {"key": format!("done-{k}"), "timeout_ms": 60000}}));
    }
    ops.push(serde_json::json!("clock"));
    for id in 2..12 {
        ops.push(serde_json::json!({"wait": id}));
    }
    ops.push(serde_json::json!("clock"));
    let report = host
        .run_file(
            &example("scripted"),
            &serde_json::Value::Array(ops).to_string(),
            RunOptions {
                grants: vec!["workspace".into(), "kv".into()],
                workspace: Some(ws.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let results: Vec<serde_json::Value> =
        serde_json::from_str(report.output.as_deref().unwrap()).unwrap();
    let merged = std::fs::read_to_string(ws.join("big.rs")).unwrap();
    assert_eq!(
        merged.matches("// child").count(),
        10,
        "all ten changes merged"
    );
    let (t0, t1) = (results[20].as_u64().unwrap(), results[31].as_u64().unwrap());
    let joins = Duration::from_millis(t1 - t0);
    // The bare classification of the last merge: base, nine changes merged, the tenth.
    let (base, tenth) = merge_versions(9);
    let mut ours = base.clone();
    for k in 0..9 {
        ours = diffy::merge(&base, &ours, &merge_versions(k).1).unwrap();
    }
    let config = agentflow::merge::MergeConfig::default();
    let mut classify = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let c =
            agentflow::merge::classify(&config, Some("big.rs"), Some(&base), Some(&ours), &tenth);
        classify.push(start.elapsed());
        assert!(matches!(c, agentflow::merge::Classified::Trivial { .. }));
    }
    (joins, classify)
}

/// `[ledger] sync = "normal"`: no fsync on commit (process crashes only).
const SYNC_NORMAL: &str = "[ledger]\nsync = \"normal\"\n";
/// The tree with its concurrency limit raised above its size (default 16).
const WIDE: &str = "[constraints]\nmax_concurrent_tasks = 128\n";

/// Print a figure's target and the figure it replaces (this machine, before issue 18).
fn was(target: &str, before: &str) {
    println!("      target {target}; was {before}");
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "agentflow host benchmark ({} cores); each figure: median (min, max, n=samples)",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        );
        let only = std::env::var("AGENTFLOW_BENCH_ONLY").unwrap_or_default();
        let want = |n: &str| only.is_empty() || only.split(',').any(|s| s.trim() == n);
        match callgrind::child_part().as_deref() {
            // A callgrind child of section 1 or 2 does only its measured run.
            Some("start") => {
                host_start(1, "").await;
            }
            Some(part @ ("log" | "llm")) => {
                let op = match part {
                    "log" => serde_json::json!({"log": "x"}),
                    _ => serde_json::json!({"llm": {"prompt": "hi", "max_tokens": 16}}),
                };
                call_slope(part, op, callgrind::CALLS, "").await;
            }
            _ => {}
        }
        if want("1") {
            let raw = raw_start(2000).await;
            let warm = host_start(300, "").await;
            let warm_normal = host_start(300, SYNC_NORMAL).await;
            let cold = cold_start(20).await;
            let target = raw.median() * 2 + Duration::from_micros(150);
            println!("1. agent start (instantiate + trivial run), latency per start");
            println!("   raw wasmtime InstancePre + pooling         {}", raw.line());
            println!("   Host::run on a running host (durable run)   {}", warm.line());
            was(&format!("≤ 2× raw + 150 µs = {}; the run's end is one fsync", fmt(target)), "2.51 ms");
            println!("   Host::run, [ledger] sync = \"normal\"        {}", warm_normal.line());
            was(&format!("≤ {}", fmt(target)), "2.51 ms (sync full)");
            println!("   Host::new + component load (cache) + run    {}", cold.line());
            callgrind::report("1", "start", "one Host::run (trivial agent)");
        }
        if want("2") {
            let log_op = serde_json::json!({"log": "x"});
            let llm_op = serde_json::json!({"llm": {"prompt": "hi", "max_tokens": 16}});
            let log = call_round_trip("log", log_op.clone(), 10_000, 5, "").await;
            let llm = call_round_trip("llm", llm_op.clone(), 1000, 5, "").await;
            let log_normal = call_round_trip("", log_op, 10_000, 5, SYNC_NORMAL).await;
            let llm_normal = call_round_trip("", llm_op, 1000, 5, SYNC_NORMAL).await;
            println!("2. host-call round trip, durable ledger on; amortised per call (slope of a run with N calls over one with none)");
            println!("   trace.log (N=10000)                         {}", log.line());
            was("≤ 5 µs", "141 µs (N=2000)");
            println!("   llm.complete, mock provider (N=1000)        {}", llm.line());
            was("≤ 25 µs", "542.7 µs");
            println!("   trace.log, sync = \"normal\"                 {}", log_normal.line());
            println!("   llm.complete, sync = \"normal\"              {}", llm_normal.line());
            callgrind::report_calls();
        }
        if want("3") {
            let (walls, tasks, events, latency) = trees(3, "").await;
            let steps = tasks as u32 * 5;
            let per_step = Samples(walls.0.iter().map(|w| *w / steps).collect());
            let (normal, ..) = trees(3, SYNC_NORMAL).await;
            let (wide, ..) = trees(3, WIDE).await;
            let (wide_normal, ..) = trees(3, &format!("{WIDE}{SYNC_NORMAL}")).await;
            println!("3. tree of {tasks} agents × 5 steps (mock LLM + kv tool), durable ledger on");
            println!("   total wall time                             {}", walls.line());
            was("≤ 25 ms", "277.7 ms");
            println!("   per step, amortised throughput (wall/steps) {}", per_step.line());
            println!("   per call latency (ledger timestamps, 1 ms)  {}", latency.line());
            println!("   ledger events written per run               {events:>10}");
            println!("   total wall time, sync = \"normal\"          {}", normal.line());
            println!("   total, max_concurrent_tasks = 128           {}", wide.line());
            println!("   total, 128 concurrent, sync = \"normal\"    {}", wide_normal.line());
            callgrind::report("3", "tree", "one tree");
        }
        if want("4") {
            let (plan, decide) = decision_latency(1000, 5).await;
            println!("4. scheduler decision, 50 models in the catalog; amortised over batches of 1000");
            println!("   plan (filter, predict, score)               {}", plan.line());
            was("≤ 15 µs", "20.4 µs");
            println!("   plan + quota reservation + release          {}", decide.line());
        }
        if want("5") {
            let (live, library, cli, events) = resume_mix(3).await;
            let rate = |d: Duration| events as f64 / d.as_secs_f64();
            println!("5. resume a task with 10,000 recorded calls (1/3 LLM, 1/3 kv tool + intent, 1/3 trace.log; {events} events)");
            println!("   original live run                           {:>10}", fmt(live));
            println!("   Host::resume (load ledger + replay all)     {}", library.line());
            if cli.0.is_empty() {
                println!("   agentflow resume (CLI process)              left out ({NO_CLI_ENV} is set)");
                println!(
                    "   replay speed, median                        {:>7.0} ev/s (library)",
                    rate(library.median())
                );
            } else {
                println!("   agentflow resume (CLI process, replay all)  {}", cli.line());
                println!(
                    "   replay speed, median                        {:>7.0} ev/s (library), {:.0} ev/s (CLI)",
                    rate(library.median()),
                    rate(cli.median())
                );
            }
            callgrind::report("5", "replay", callgrind::REPLAY_LABEL);
        }
        if want("6") {
            let disk = spawn::from_the_guest(&scratch("spawn10k")).await;
            let shm = tmpfs_scratch("spawn10k-shm");
            let tmpfs = spawn::from_the_guest(&shm).await;
            let (spawns, rows) = spawn::on_the_host(&tmpfs_scratch("spawn10k-host")).await;
            println!("6. spawn decision with 10,000 tasks in the tree");
            println!("   from the guest, amortised over 500 spawns (1 run):");
            println!("   per spawn, ledger on disk (checks + commits) {:>10}", fmt(disk));
            println!("   per spawn, ledger on tmpfs (no fsync cost)   {:>10}", fmt(tmpfs));
            println!("   on the host, ledger on tmpfs, per call:");
            println!("   RunContext::spawn (decision + task row)     {}", spawns.line());
            println!("   Ledger::create_task of an equal row          {}", rows.line());
            println!(
                "   decision alone (difference of medians)      {:>10}",
                fmt(spawns.median().saturating_sub(rows.median()))
            );
        }
        if want("7") {
            let (plain, checked) = validation_overhead(300).await;
            println!("7. validation overhead per task: json-schema + length + pattern");
            println!("   one-task run, no validators                 {}", plain.line());
            println!("   one-task run, 3 programmatic validators     {}", checked.line());
            println!(
                "   overhead per task (difference of medians)   {:>10}",
                fmt(checked.median().saturating_sub(plain.median()))
            );
        }
        if want("8") {
            let (joins, classify) = merges(3).await;
            println!("8. merge: 10 children each change one region of a 2,000-line file");
            println!("   10 joins (3-way merge into the workspace)   {}", joins.line());
            println!("   one 3-way classification (diffy)            {}", classify.line());
        }
        if want("9") {
            let n = std::env::var("AGENTFLOW_BENCH_LIVE_AGENTS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(10_000);
            let r = live::live_agents(&tmpfs_scratch("live"), n).await;
            println!("9. {} live agents, each waiting in tasks.wait (default pool, limits raised in the run's config)", r.agents);
            println!("   all children waiting after                  {:>10}", fmt(r.all_waiting_after));
            println!("   whole run (spawn, wait, release, join)      {:>10}", fmt(r.total));
            println!(
                "   host RSS at rest → all waiting              {:>7} MiB → {} MiB (peak {} MiB)",
                r.rss_before_kib >> 10,
                r.rss_waiting_kib >> 10,
                r.hwm_kib >> 10
            );
            println!("   RSS per waiting agent                       {:>7.0} KiB", r.per_agent_kib());
            println!(
                "   instances: pooled {}, on demand {}; memory maps {}",
                r.pooled, r.on_demand, r.maps
            );
        }
        if want("10") {
            let r = dashboard::run_page(&scratch("dashboard"), 10).await;
            let loads = Samples(r.loads);
            println!(
                "10. dashboard run page of a {}-task run ({} events): GET /runs/ID + GET /api/runs/ID ({} KiB), new connection each",
                r.tasks,
                r.events,
                r.api_bytes >> 10
            );
            println!("   page + JSON, per load                       {}", loads.line());
            println!("      target < 1 s");
        }
        if want("11")
            && let Some(r) = python::starts(2, 10).await
        {
            println!("11. Python agent ({:.1} MB component, componentize-py)", r.bytes as f64 / 1e6);
            println!("   first start: compile, empty cache           {}", r.compile.line());
            println!("   warm start: Host::new + cache load + run    {}", r.warm_run.line());
            println!("   of which the load from the cache            {}", r.warm_load.line());
        }
        if want("12") {
            let f = tool_calls::tool_calls(5, 300).await;
            println!("12. tool call: installed component (probe echo) vs built-in (kv get), both idempotent");
            println!("   through an agent, recorded (intent + result), amortised per call (N=300):");
            println!("   built-in kv                                 {}", f.agent_builtin.line());
            println!("   tool component                              {}", f.agent_component.line());
            println!("   the tool alone (Tool::call, nothing recorded), per call:");
            println!("   built-in kv (a ledger read)                 {}", f.alone_builtin.line());
            println!("   tool component (fresh store + instantiate)  {}", f.alone_component.line());
        }
        if want("13") {
            match mcp::figures(&scratch("mcp"), 200, 5).await {
                None => println!(
                    "13. MCP tool call: skipped, {}",
                    agentflow_tests::mcp_everything_install_hint()
                ),
                Some(f) => {
                    println!("13. tool call through the recorded path (idempotent: intent + durable result); amortised per call (slope of runs with 1 and N=200 calls)");
                    println!("   MCP server-everything echo (stdio)          {}", Samples(f.mcp).line());
                    println!("   built-in kv get                             {}", Samples(f.builtin).line());
                    println!("   first MCP call of a run (server start)      {}", Samples(f.start).line());
                }
            }
        }
        if want("14") {
            match cluster::figures(&scratch("cluster"), 40, 5).await {
                None => println!(
                    "14. cluster: skipped, set AGENTFLOW_BENCH_POSTGRES to a PostgreSQL admin URL (`.ci/postgres start` prints one)"
                ),
                Some(f) => {
                    println!("14. cluster on one PostgreSQL ledger: 40 submitted researcher runs (4 tasks each, mock LLM), workers of 2 slots in this process");
                    for (workers, runs, tasks) in &f.throughput {
                        println!("   {workers} worker(s)                                  {runs:>7.1} runs/s  {tasks:>7.1} tasks/s");
                    }
                    println!("   one run's 60 children offered (one LLM call each, 4 task slots per worker):");
                    for (workers, children) in &f.spread {
                        println!("   {workers} worker(s)                                  {children:>7.1} children/s");
                    }
                    println!("   takeover: lease expiry → run claimed         {}", Samples(f.claimed).line());
                    println!("   takeover: lease expiry → run completed (replay) {}", Samples(f.completed).line());
                }
            }
        }
    });
}
