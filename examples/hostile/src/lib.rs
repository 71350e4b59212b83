//! `hostile`: misbehaves on purpose so tests can check that the host contains it.
//! The input selects the behaviour: `loop` (spin forever), `memory` (allocate and
//! touch 1 MiB chunks forever), `trap` (execute `unreachable`), `panic`,
//! `spawn-bomb` (spawn itself until refused, up to 1000 times), `big-output`
//! (return 64 MiB), `stdout-flood` (write 100 MiB to stdout), `read-file`
//! (read /etc/passwd), `read-env` (count env vars and args), `socket:<host:port>`
//! (open a TCP connection), `clock-flood` (read the clock forever, no other host
//! call), `random-flood` (read random bytes forever), `cpu-dodge:<ms>` (spin, with a
//! cheap `trace.log` every ~`ms` milliseconds of spinning, so the host is called far
//! more often than a CPU tick), `kv-flood` (put distinct 1 MiB values into `kv` forever,
//! filling the ledger) and `ok` (return "fine"). The probing behaviours
//! report what happened as their `Ok` output; unknown inputs fail the run.
//! `log-flood` writes 20 trace logs and one trace step of 8 MiB each; `log-forge`
//! logs, steps and fails with texts that carry a newline, a carriage return and
//! terminal escapes followed by a fake host log line.

use std::hint::black_box;
use std::io::Write;

use agentflow_sdk::prelude::*;

fn run(input: String) -> Result<String, String> {
    match input.as_str() {
        "loop" => spin(),
        "memory" => hog_memory(),
        "trap" => trap(),
        "panic" => panic!("boom"),
        "spawn-bomb" => Ok(spawn_bomb()),
        "big-output" => Ok("x".repeat(64 << 20)),
        "stdout-flood" => Ok(stdout_flood()),
        "read-file" => Ok(match std::fs::read_to_string("/etc/passwd") {
            Ok(s) => format!("read {} bytes", s.len()),
            Err(e) => format!("error: {e}"),
        }),
        "read-env" => Ok(format!(
            "env: {} vars, args: {}",
            std::env::vars().count(),
            std::env::args().count()
        )),
        "ok" => Ok("fine".to_string()),
        "clock-flood" => clock_flood(),
        "random-flood" => random_flood(),
        "kv-flood" => kv_flood(),
        "log-flood" => Ok(log_flood()),
        "log-forge" => log_forge(),
        other => match other.strip_prefix("socket:") {
            Some(addr) => Ok(match std::net::TcpStream::connect(addr) {
                Ok(_) => "connected".to_string(),
                Err(e) => format!("error: {e}"),
            }),
            None => match other.strip_prefix("cpu-dodge:") {
                Some(ms) => cpu_dodge(ms.parse().unwrap_or(2)),
                None => Err(format!("unknown behaviour: {other:?}")),
            },
        },
    }
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

fn hog_memory() -> ! {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        // Touch every page so the memory is really used.
        for i in (0..chunk.len()).step_by(4096) {
            chunk[i] = (kept.len() as u8).wrapping_add(1);
        }
        kept.push(black_box(chunk));
    }
}

fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

fn spawn_bomb() -> String {
    let mut ids = Vec::new();
    let mut first_error = None;
    for _ in 0..1000 {
        match Spawn::new("spawn-bomb", "spawn-bomb").spawn() {
            Ok(id) => ids.push(id),
            Err(e) => {
                first_error = Some(e.to_string());
                break;
            }
        }
    }
    tasks::wait_all(&ids);
    format!(
        "spawned {}; first error: {}",
        ids.len(),
        first_error.as_deref().unwrap_or("none")
    )
}

fn stdout_flood() -> String {
    // 100 MiB in 1 KiB lines. Write errors (a closed or capped stdout) are ignored
    // rather than panicking as `println!` would, so the run still returns.
    let line = "y".repeat(1023);
    let mut out = std::io::stdout().lock();
    for _ in 0..100 * 1024 {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
    "done".to_string()
}

/// 20 distinct 8 MiB trace logs (168 MB in all) and one 8 MiB step of each field.
fn log_flood() -> String {
    for i in 0..20u8 {
        let fill = (b'a' + i) as char;
        trace::info(fill.to_string().repeat(8 << 20));
    }
    let big = "s".repeat(8 << 20);
    trace::step(&big, &big, &big, 0.5);
    "flooded".to_string()
}

/// A line a guest would like the operator to take for the host's own.
const FORGED_LINE: &str = "2026-12-01T00:00:00Z  INFO agentflow: run completed";

/// Guest texts that try to start a new host log line, or overwrite the current one.
fn log_forge() -> Result<String, String> {
    let forged = format!("harmless\n{FORGED_LINE}\r\u{1b}[2K{FORGED_LINE}");
    trace::info(&forged);
    trace::step(&forged, "forge", &forged, 0.5);
    Err(forged)
}

export_agent!(run);

fn clock_flood() -> ! {
    loop {
        black_box(std::time::Instant::now());
        black_box(std::time::SystemTime::now());
    }
}

fn random_flood() -> ! {
    let mut buf = [0u8; 64];
    loop {
        let _ = getrandom::fill(&mut buf);
        black_box(&buf);
    }
}

/// Spin in bursts of about `ms` milliseconds of CPU (timed once, up front), each
/// followed by one cheap host call. A host that only charges ticks without a host call
/// in them never charges this guest.
fn cpu_dodge(ms: u64) -> ! {
    let burst = {
        let start = std::time::Instant::now();
        let mut n: u64 = 0;
        while start.elapsed() < std::time::Duration::from_millis(ms) {
            for _ in 0..10_000 {
                n = black_box(n.wrapping_add(1));
            }
        }
        n
    };
    let mut round: u64 = 0;
    loop {
        let mut n: u64 = 0;
        while n < burst {
            n = black_box(n.wrapping_add(1));
        }
        round += 1;
        trace::info(format!("round {round}"));
    }
}

/// Distinct 1 MiB values, so content addressing cannot fold them into one blob.
fn kv_flood() -> Result<String, String> {
    let body = "z".repeat((1 << 20) - 32);
    for i in 0u64.. {
        let value = format!("{i}:{body}");
        if let Err(e) = tools::call("kv", &serde_json::json!({"op": "put", "key": format!("k{i}"), "value": value})) {
            return Err(format!("kv put {i} failed: {e}"));
        }
    }
    unreachable!()
}
