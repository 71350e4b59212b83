//! Hostile guests are contained with a clear error, and the host keeps serving other
//! agents meanwhile.

use crate::support::*;
use agentflow::{Host, RunOptions, RunReport, Status};
use std::time::{Duration, Instant};

const LIMITS: &str = r#"
[limits]
cpu_ms = 500
memory_mb = 64
max_tasks = 20
max_depth = 3
wall_ms = 30000
max_stdio_bytes = 4096
"#;

async fn hostile(host: &Host, mode: &str) -> RunReport {
    host.run_file(&example("hostile"), mode, RunOptions::default())
        .await
        .unwrap()
}

fn failed_with(report: &RunReport, needle: &str) {
    assert_eq!(report.status, Status::Failed, "{report:?}");
    let err = report.error.as_deref().unwrap();
    assert!(
        err.contains(needle),
        "error `{err}` should contain `{needle}`"
    );
    assert!(
        !err.contains('\n') || err.len() < 2100,
        "error is short: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_is_stopped_while_another_agent_runs() {
    let (_dir, host) = temp_host("hostile-loop", LIMITS);
    let started = Instant::now();
    let looping = async {
        let r = hostile(&host, "loop").await;
        (r, started.elapsed())
    };
    let normal = async {
        let r = host
            .run_file(&example("hello"), "neighbour", RunOptions::default())
            .await
            .unwrap();
        (r, started.elapsed())
    };
    let ((looped, loop_after), (ok, ok_after)) = tokio::join!(looping, normal);
    failed_with(&looped, "CPU time limit exceeded");
    assert_eq!(ok.status, Status::Completed, "{ok:?}");
    assert!(
        ok_after < loop_after,
        "the neighbour finished while the loop ran ({ok_after:?} < {loop_after:?})"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the loop was stopped promptly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_hits_the_memory_cap() {
    let (_dir, host) = temp_host("hostile-memory", LIMITS);
    failed_with(&hostile(&host, "memory").await, "memory limit exceeded");
    // The host is still fine.
    assert_eq!(hostile(&host, "ok").await.output.as_deref(), Some("fine"));
}

/// `[runtime] allocator = "on-demand"` (no pool, small memory reservations, as
/// under valgrind): agents run, and the memory cap and the CPU limit hold there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_on_demand_allocator_runs_agents_under_the_same_limits() {
    let config = format!("{LIMITS}\n[runtime]\nallocator = \"on-demand\"\n");
    let (_dir, host) = temp_host("hostile-on-demand", &config);
    failed_with(&hostile(&host, "memory").await, "memory limit exceeded");
    failed_with(&hostile(&host, "loop").await, "CPU time limit exceeded");
    assert_eq!(hostile(&host, "ok").await.output.as_deref(), Some("fine"));
    let live = host.runtime().instances();
    assert_eq!(live.peak_on_demand, 0, "no second engine: {live:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traps_and_panics_become_failed_tasks() {
    let (_dir, host) = temp_host("hostile-trap", LIMITS);
    failed_with(&hostile(&host, "trap").await, "agent trapped");
    let panicked = hostile(&host, "panic").await;
    failed_with(&panicked, "agent trapped");
    failed_with(&panicked, "boom");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_bomb_is_capped_by_max_tasks_and_depth() {
    let (_dir, host) = temp_host("hostile-spawn", LIMITS);
    let report = hostile(&host, "spawn-bomb").await;
    assert!(report.tasks <= 20, "max_tasks holds: {report:?}");
    let tasks = tasks(&host, &report.run_id);
    assert!(tasks.len() <= 20);
    assert!(tasks.iter().all(|t| t.depth <= 3), "max_depth holds");
    let refused = events(&host, &report.run_id)
        .into_iter()
        .filter(|e| e.kind == "tasks.spawn" && !e.ok)
        .count();
    assert!(
        refused > 0,
        "spawns past the limits were refused with typed errors"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_output_is_refused() {
    // Enough memory to build the 64 MiB string, so the output limit is what stops it.
    let (_dir, host) = temp_host("hostile-output", "[limits]\nmemory_mb = 512\n");
    failed_with(&hostile(&host, "big-output").await, "output too large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_flood_is_bounded() {
    let (_dir, host) = temp_host(
        "hostile-stdout",
        "[limits]\nmax_stdio_bytes = 4096\ncpu_ms = 60000\n",
    );
    let report = hostile(&host, "stdout-flood").await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let stdio = first_event(&host, &report.run_id, "task.stdio");
    assert_eq!(stdio.response["stdout"].as_str().unwrap().len(), 4096);
    assert!(stdio.response["stdout_dropped_bytes"].as_u64().unwrap() > 1_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_files_no_env_no_sockets() {
    let (_dir, host) = temp_host("hostile-sandbox", LIMITS);
    let file = hostile(&host, "read-file").await;
    assert!(
        file.output.as_deref().unwrap().starts_with("error:"),
        "{file:?}"
    );
    let env = hostile(&host, "read-env").await;
    assert_eq!(env.output.as_deref(), Some("env: 0 vars, args: 0"));
    // A real listener on loopback: the guest still cannot reach it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let socket = hostile(&host, &format!("socket:{addr}")).await;
    assert!(
        socket.output.as_deref().unwrap().starts_with("error:"),
        "{socket:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_components_are_refused_clearly() {
    let (_dir, host) = temp_host("hostile-malformed", "");
    let rt = host.runtime();
    let err = rt
        .load_bytes("junk", b"definitely not wasm")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a WebAssembly file"), "{err}");
    // A core module (empty) is not a component.
    let err = rt
        .load_bytes("core", b"\0asm\x01\0\0\0")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a component"), "{err}");
    // An empty component does not export `run`.
    let err = format!(
        "{:#}",
        rt.load_bytes("empty", b"\0asm\x0d\0\x01\0").err().unwrap()
    );
    assert!(err.contains("run"), "{err}");
    // A truncated real component.
    let bytes = std::fs::read(example("hello")).unwrap();
    let err = format!(
        "{:#}",
        rt.load_bytes("cut", &bytes[..bytes.len() / 2])
            .err()
            .unwrap()
    );
    assert!(err.contains("invalid component"), "{err}");
}

/// Run `agentflow run <hostile> --input MODE` as its own process under a memory guard:
/// its resident set is sampled every 10 ms (the kernel's high-water mark included) and
/// the process is killed past 1 GiB or 90 s. Returns the JSON report and the peak RSS.
fn guarded_cli_run(dir: &TempDir, mode: &str, limits: &str) -> (serde_json::Value, u64) {
    let config = dir.file("agentflow.toml", limits);
    let mut child = crate::support::cli::agentflow()
        .arg("run")
        .arg(example("hostile"))
        .args(["--input", mode, "--json", "--db"])
        .arg(dir.ledger("flood.db"))
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let field = |status: &str, name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let started = Instant::now();
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = std::fs::read_to_string(&status_file) {
            peak = peak
                .max(field(&status, "VmRSS:"))
                .max(field(&status, "VmHWM:"));
        }
        if peak > 1 << 30 || started.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "guard: `{mode}` reached {} MiB after {:?}; killed",
                peak >> 20,
                started.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("`{mode}`: no JSON report ({e}): {:?}", out.stdout));
    (report, peak)
}

/// A guest that reads the clock (or random) in a tight loop, never calling anything
/// else, used to make the host buffer every read until it had several GiB. Now the
/// reads the host holds are bounded by `limits.max_nondet_bytes`: the guest is stopped
/// with an error naming it, the host stays small and the recorded event is bounded.
#[test]
fn clock_and_random_floods_are_stopped_and_the_host_stays_small() {
    for mode in ["clock-flood", "random-flood"] {
        let dir = TempDir::new(mode);
        let limits = "[limits]\ncpu_ms = 60000\nmemory_mb = 64\nmax_nondet_bytes = 4194304\n";
        let (report, peak) = guarded_cli_run(&dir, mode, limits);
        assert_eq!(report["status"], "failed", "{mode}: {report}");
        let err = report["error"].as_str().unwrap_or_default();
        assert!(
            err.contains("limits.max_nondet_bytes"),
            "{mode}: error names the limit: {err}"
        );
        assert!(
            peak < 300 << 20,
            "{mode}: host peak RSS {} MiB (bound 300 MiB)",
            peak >> 20
        );
        // The ledger holds a bounded record of the reads.
        let mut ledger_bytes = 0;
        for f in ["flood.db", "flood.db-wal"] {
            ledger_bytes += std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
        }
        assert!(
            ledger_bytes < 32 << 20,
            "{mode}: ledger is {} MiB",
            ledger_bytes >> 20
        );
        eprintln!(
            "{mode}: stopped ({err}); peak host RSS {} MiB, ledger {} KiB",
            peak >> 20,
            ledger_bytes >> 10
        );
    }
}

/// A guest that spins in ~2 ms bursts with a cheap host call after each used to be
/// charged nothing (a tick was skipped when a host call happened in it): now its real
/// CPU time is charged, and `cpu_ms` stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_limit_holds_however_often_the_guest_calls_the_host() {
    let (_dir, host) = temp_host(
        "hostile-cpu-dodge",
        "[limits]\ncpu_ms = 1000\nmax_host_calls = 1000000\nwall_ms = 120000\n",
    );
    let started = Instant::now();
    let report = hostile(&host, "cpu-dodge:2").await;
    let took = started.elapsed();
    failed_with(&report, "CPU time limit exceeded (1000 ms");
    let calls = of_kind(&events(&host, &report.run_id), "trace.log").len();
    assert!(
        calls > 100,
        "the guest called the host often ({calls} calls) and was still charged"
    );
    assert!(
        took < Duration::from_secs(60),
        "stopped after {took:?} of wall time"
    );
}

/// 20 × 8 MiB trace logs and an 8 MiB step: the ledger keeps `[limits] max_trace_bytes`
/// (default 64 KiB) of each field, with a marker and the bytes dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_flood_is_bounded_in_the_ledger() {
    const CAP: usize = 64 << 10;
    const BIG: usize = 8 << 20;
    // Hashing 168 MB for replay identities takes a debug build a while on a busy
    // machine: the wall-clock limit is not what this test is about.
    let (_dir, host) = temp_host(
        "hostile-log-flood",
        &LIMITS.replace("wall_ms = 30000", "wall_ms = 300000"),
    );
    let report = hostile(&host, "log-flood").await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(report.output.as_deref(), Some("flooded"));
    let evs = events(&host, &report.run_id);
    let logs: Vec<_> = evs.iter().filter(|e| e.kind == "trace.log").collect();
    assert_eq!(logs.len(), 20);
    for e in &logs {
        let message = e.request["message"].as_str().unwrap();
        assert!(message.len() <= CAP + 200, "{} bytes kept", message.len());
        assert!(message.contains("truncated") && message.contains("max_trace_bytes"));
        assert_eq!(e.request["truncated_bytes"], BIG - CAP);
    }
    let step = evs.iter().find(|e| e.kind == "trace.step").unwrap();
    for field in ["thought", "action", "observation"] {
        assert!(step.request[field].as_str().unwrap().len() <= CAP + 200);
    }
    assert_eq!(step.request["truncated_bytes"], 3 * (BIG - CAP));
    let conn = host.ledger().reader().unwrap();
    let stored: i64 = conn
        .query_row(
            "SELECT COALESCE(SUM(size), 0) FROM blobs
              WHERE hash != (SELECT component_hash FROM runs WHERE run_id = ?1)",
            [&report.run_id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        stored < 2 << 20,
        "{stored} bytes of blobs for 168 MB of trace"
    );
}

/// A guest that puts distinct 1 MiB values into `kv` forever would fill the disk
/// through the ledger; `limits.max_ledger_bytes` stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_flood_through_kv_is_stopped_by_the_ledger_quota() {
    let (dir, host) = temp_host(
        "hostile-kv-flood",
        "[limits]\nmax_ledger_bytes = 8388608\nmemory_mb = 64\ncpu_ms = 60000\n",
    );
    let report = host
        .run_file(&example("hostile"), "kv-flood", grant(&["kv"]))
        .await
        .unwrap();
    failed_with(&report, "limits.max_ledger_bytes");
    let puts = of_kind(&events(&host, &report.run_id), "tools.call").len();
    // Each put is recorded twice (its intent, then its result, both naming the value;
    // the ledger stores the value once), so 8 MiB of records is about four puts.
    assert!(
        (3..=5).contains(&puts),
        "stopped right after 8 MiB of records ({puts} puts of 1 MiB)"
    );
    let mut bytes = 0;
    for f in ["ledger.db", "ledger.db-wal"] {
        bytes += std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
    }
    assert!(bytes < 64 << 20, "ledger is {} MiB", bytes >> 20);
    // The host goes on serving.
    assert_eq!(hostile(&host, "ok").await.output.as_deref(), Some("fine"));
}
