//! `cargo bench -p agentflow-tests`: the host's figures, printed in one run.
//!
//! 1. Agent start (instantiate + a trivial `run`): raw wasmtime (`InstancePre` + pooling,
//!    same component, WASI only) vs the host (`Host::run`: run and task rows in the
//!    durable ledger, limits, recording WASI).
//! 2. Host-call round trip with the durable ledger on (`trace.log`, and a mock
//!    `llm.complete`), from the per-call slope of runs with 0 and N calls.
//! 3. A tree of 111 agents (root → 10 → 10 each), each doing 5 steps of one mock LLM
//!    call + one `kv` tool call, durable ledger on: wall time and per-step cost.
//! 4. Scheduler decision latency with 50 models in the catalog (plan: filter, predict,
//!    score; and plan + quota reservation + release).
//! 5. Replay: resuming a task with 10,000 recorded calls (time to resume, events/s).
//! 6. Spawn decisions with 10,000 tasks already in the run's tree (all checks, the
//!    ledger commit of the new task and of the call, measured from inside the guest).
//! 7. Validation overhead per task for programmatic validators (json-schema + length +
//!    pattern, their verdicts `validation.result` events in one durable commit): median
//!    run time of a one-task run with and without them, interleaved.
//! 8. Merge: 10 children each change one region of the same 2,000-line workspace file;
//!    the joins (three-way merges into the parent's view, decisions recorded) timed
//!    from inside the guest, and the bare `diffy` classification of one such merge.
//!
//! `AGENTFLOW_BENCH_ONLY=7,8` (any list of section numbers) runs only those sections.

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

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn raw_start(iterations: u32) -> Duration {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(100)
        .total_memories(100)
        .total_tables(400)
        .total_core_instances(400);
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).unwrap();
    let component = Component::from_file(&engine, example("hostile")).unwrap();
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
            .call_async(&mut store, ("ok".to_string(),))
            .await
            .unwrap();
        assert_eq!(out.unwrap(), "fine");
    };
    for _ in 0..20 {
        once().await;
    }
    let start = Instant::now();
    for _ in 0..iterations {
        once().await;
    }
    start.elapsed() / iterations
}

fn host(dir: &std::path::Path, toml: &str) -> Host {
    let mut config = HostConfig::from_toml(toml).unwrap();
    config.cache_dir = Some(dir.join("cache"));
    Host::new(config, dir.join("bench.db")).unwrap()
}

async fn host_start(iterations: u32) -> Duration {
    let dir = scratch("start");
    let host = host(&dir, "");
    let agent = host.runtime().load_file(&example("hostile")).unwrap();
    for _ in 0..10 {
        host.run(agent.clone(), "ok", RunOptions::default())
            .await
            .unwrap();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        let r = host
            .run(agent.clone(), "ok", RunOptions::default())
            .await
            .unwrap();
        assert_eq!(r.status, Status::Completed);
    }
    start.elapsed() / iterations
}

async fn call_round_trip(op: serde_json::Value, n: usize) -> Duration {
    let dir = scratch("calls");
    let host = host(
        &dir,
        "[limits]\nmax_host_calls = 100000\ncpu_ms = 600000\n[budget]\nusd = 100.0\n",
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
    let r = host
        .run(agent.clone(), &ops(n), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(r.status, Status::Completed, "{r:?}");
    (t1.elapsed().saturating_sub(base)) / n as u32
}

async fn tree() -> (Duration, u64, i64) {
    let dir = scratch("tree");
    let host = host(&dir, "[limits]\nmax_tasks = 200\n[budget]\nusd = 100.0\n");
    let agent = host.runtime().load_file(&example("fanout")).unwrap();
    let opts = RunOptions {
        grants: vec!["kv".into()],
        ..Default::default()
    };
    let start = Instant::now();
    let r = host
        .run(agent, r#"{"depth": 2, "fanout": 10, "steps": 5}"#, opts)
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
    (wall, r.tasks, events)
}

async fn decision_latency(iterations: u32) -> (Duration, Duration) {
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

async fn resume_10k() -> (Duration, Duration, u64) {
    let dir = scratch("replay");
    let host = host(&dir, "[limits]\nmax_host_calls = 100000\ncpu_ms = 600000\n");
    let agent = host.runtime().load_file(&example("scripted")).unwrap();
    let n = 10_000;
    let ops = serde_json::Value::Array(
        (0..n)
            .map(|i| serde_json::json!({"log": format!("call {i}")}))
            .collect(),
    )
    .to_string();
    let start = Instant::now();
    let r = host.run(agent, &ops, RunOptions::default()).await.unwrap();
    let live = start.elapsed();
    assert_eq!(r.status, Status::Completed, "{r:?}");
    // Make it look interrupted right after its last call: the task replays all 10,000.
    let conn = rusqlite::Connection::open(dir.join("bench.db")).unwrap();
    conn.execute("DELETE FROM events WHERE kind = 'task.stdio'", [])
        .unwrap();
    conn.execute("UPDATE runs SET status = 'running', output = NULL", [])
        .unwrap();
    conn.execute("UPDATE tasks SET status = 'running', output = NULL", [])
        .unwrap();
    let events: u64 = conn
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    drop(conn);
    let start = Instant::now();
    let resumed = host
        .resume(&r.run_id, agentflow::ResumeOptions::default())
        .await
        .unwrap();
    let resume = start.elapsed();
    assert_eq!(resumed.output, r.output, "the replay reproduces the run");
    (live, resume, events)
}

async fn spawn_with_10k_tasks() -> (Duration, u32) {
    let dir = scratch("spawn10k");
    let host = host(
        &dir,
        "[limits]\nmax_tasks = 20000\nmax_host_calls = 20000\nwall_ms = 600000\n[constraints]\nmax_concurrent_tasks = 16\n",
    );
    let agent = host.runtime().load_file(&example("scripted")).unwrap();
    let (before, measured) = (10_000u32, 500u32);
    // Every task waits on a long-sleeping blocker, so none runs: what is measured is
    // the spawn decision itself (all checks) plus its ledger commits.
    let blocker = serde_json::json!([{"sleep_ms": 600000}]).to_string();
    let mut ops: Vec<serde_json::Value> =
        vec![serde_json::json!({"spawn": {"description": "blocker", "input": blocker}})];
    ops.extend((0..before).map(|i| {
        serde_json::json!({"spawn": {"description": format!("prefill {i}"), "input": "", "after": [2]}})
    }));
    ops.push(serde_json::json!({"clock": null}));
    ops.extend((0..measured).map(|i| {
        serde_json::json!({"spawn": {"description": format!("measured {i}"), "input": "", "after": [2]}})
    }));
    ops.push(serde_json::json!({"clock": null}));
    let r = host
        .run(
            agent,
            &serde_json::Value::Array(ops).to_string(),
            RunOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, Status::Completed, "{r:?}");
    let results: Vec<serde_json::Value> =
        serde_json::from_str(r.output.as_deref().unwrap()).unwrap();
    let t0 = results[before as usize + 1].as_u64().unwrap();
    let t1 = results[(before + measured + 2) as usize].as_u64().unwrap();
    assert!(
        results[before as usize + 2]["ok"].is_u64(),
        "{}",
        results[before as usize + 2]
    );
    (Duration::from_millis(t1 - t0) / measured, measured)
}

/// Median wall time of a one-task `scripted` run (output `[]`) without and with three
/// programmatic validators, runs interleaved so drift hits both alike.
async fn validation_overhead(iterations: usize) -> (Duration, Duration) {
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
    a.sort();
    b.sort();
    (a[a.len() / 2], b[b.len() / 2])
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

async fn merge_10_children() -> (Duration, Duration) {
    let dir = scratch("merge");
    let ws = dir.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("big.rs"), merge_versions(0).0).unwrap();
    let host = host(&dir, "");
    let mut ops = Vec::new();
    for k in 0..10 {
        let (_, mine) = merge_versions(k);
        let child_ops = serde_json::json!([{"tool": {"name": "workspace",
            "args": {"op": "write", "path": "big.rs", "content": mine}}}]);
        ops.push(
            serde_json::json!({"spawn": {"description": format!("change region {k}"),
                                              "input": child_ops.to_string()}}),
        );
    }
    ops.push(serde_json::json!({"sleep_ms": 2000}));
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
                grants: vec!["workspace".into()],
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
    let (t0, t1) = (results[11].as_u64().unwrap(), results[22].as_u64().unwrap());
    let joins = Duration::from_millis(t1 - t0);
    // The bare classification of the last merge: base, nine changes merged, the tenth.
    let (base, tenth) = merge_versions(9);
    let mut ours = base.clone();
    for k in 0..9 {
        ours = diffy::merge(&base, &ours, &merge_versions(k).1).unwrap();
    }
    let config = agentflow::merge::MergeConfig::default();
    let start = Instant::now();
    for _ in 0..20 {
        let c =
            agentflow::merge::classify(&config, Some("big.rs"), Some(&base), Some(&ours), &tenth);
        assert!(matches!(c, agentflow::merge::Classified::Trivial { .. }));
    }
    (joins, start.elapsed() / 20)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "agentflow host benchmark ({} cores)",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        );
        let only = std::env::var("AGENTFLOW_BENCH_ONLY").unwrap_or_default();
        let want = |n: &str| only.is_empty() || only.split(',').any(|s| s.trim() == n);
        if want("1") {
            let raw = raw_start(2000).await;
            let full = host_start(300).await;
            println!("1. agent start (instantiate + trivial run)");
            println!(
                "   raw wasmtime InstancePre + pooling       {:>12}",
                fmt(raw)
            );
            println!(
                "   host: Host::run (run+task rows, durable) {:>12}",
                fmt(full)
            );
        }
        if want("2") {
            let log = call_round_trip(serde_json::json!({"log": "x"}), 2000).await;
            let llm = call_round_trip(
                serde_json::json!({"llm": {"prompt": "hi", "max_tokens": 16}}),
                1000,
            )
            .await;
            println!("2. host-call round trip, durable ledger on (fsync per commit)");
            println!(
                "   trace.log                                {:>12}",
                fmt(log)
            );
            println!(
                "   llm.complete (mock provider)             {:>12}",
                fmt(llm)
            );
        }
        if want("3") {
            let (wall, tasks, events) = tree().await;
            let steps = tasks * 5;
            println!("3. tree of {tasks} agents × 5 steps (mock LLM + kv tool), durable ledger on");
            println!(
                "   total wall time                          {:>12}",
                fmt(wall)
            );
            println!(
                "   per step (1 LLM + 1 tool call)           {:>12}",
                fmt(wall / steps as u32)
            );
            println!("   ledger events written                    {:>12}", events);
        }
        if want("4") {
            let (plan, decide) = decision_latency(5000).await;
            println!("4. scheduler decision, 50 models in the catalog");
            println!(
                "   plan (filter, predict, score)            {:>12}",
                fmt(plan)
            );
            println!(
                "   plan + quota reservation + release       {:>12}",
                fmt(decide)
            );
        }
        if want("5") {
            let (live, resume, events) = resume_10k().await;
            println!("5. resume a task with 10,000 recorded calls (trace.log)");
            println!(
                "   original live run                        {:>12}",
                fmt(live)
            );
            println!(
                "   resume (load ledger + replay all)        {:>12}",
                fmt(resume)
            );
            println!(
                "   replay speed                             {:>9.0} ev/s",
                events as f64 / resume.as_secs_f64()
            );
        }
        if want("6") {
            let (per_spawn, n) = spawn_with_10k_tasks().await;
            println!("6. spawn decision with 10,000 tasks in the tree ({n} spawns measured)");
            println!(
                "   per spawn (all checks + ledger commits)  {:>12}",
                fmt(per_spawn)
            );
        }
        if want("7") {
            let (plain, checked) = validation_overhead(300).await;
            println!(
                "7. validation overhead per task: json-schema + length + pattern (median of 300)"
            );
            println!(
                "   one-task run, no validators              {:>12}",
                fmt(plain)
            );
            println!(
                "   one-task run, 3 programmatic validators  {:>12}",
                fmt(checked)
            );
            println!(
                "   overhead per task                        {:>12}",
                fmt(checked.saturating_sub(plain))
            );
        }
        if want("8") {
            let (joins, classify) = merge_10_children().await;
            println!("8. merge: 10 children each change one region of a 2,000-line file");
            println!(
                "   10 joins (3-way merge into the workspace) {:>11}",
                fmt(joins)
            );
            println!(
                "   one 3-way classification (diffy)         {:>12}",
                fmt(classify)
            );
        }
    });
}
