//! Section 9 of the bench: many live agents at once, and what each costs the host.
//!
//! The root of one run spawns a blocker (task 2) and `n` children of `scripted`. Each
//! child checks in at a `gate` tool registered by the bench, then waits in
//! `tasks.wait` for the blocker, which holds in the gate until the bench lets it go.
//! Once every child has checked in, all `n` are live instances blocked in the host:
//! the bench reads the host's resident set then (`/proc/self/status`: VmRSS, and the
//! peak VmHWM since just before the run) and divides its growth over the resident set
//! before the run by the number of live agents. Then it opens the gate and checks that
//! every child completed.
//!
//! The run's limits are raised in its config (`max_tasks`, the root's
//! `max_host_calls`); the instance pool keeps its default size, so most children run
//! in on-demand instances beyond it (`[runtime] pool_instances`). A watchdog thread
//! aborts the bench past 6 GiB of resident memory or 5 minutes.

use agentflow::tools::{SideEffect, Tool, ToolCallCtx, ToolError, ToolInfo};
use agentflow::{Host, HostConfig, RunOptions, Status};
use agentflow_tests::example;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Children check in (`{"op": "arrive"}`); the blocker holds (`{"op": "hold"}`)
/// until the bench opens the gate.
#[derive(Default)]
struct Gate {
    arrived: AtomicUsize,
    open: tokio::sync::Notify,
    opened: AtomicBool,
}

#[async_trait::async_trait]
impl Tool for Gate {
    fn info(&self) -> ToolInfo {
        ToolInfo {
            name: "gate".into(),
            description: "bench gate: children check in, the blocker holds until opened".into(),
            args_schema: serde_json::json!({}),
            side_effect: SideEffect::None,
            undo: None,
        }
    }

    async fn call(&self, _ctx: &ToolCallCtx, args: serde_json::Value) -> Result<String, ToolError> {
        if args["op"] == "hold" {
            while !self.opened.load(Ordering::SeqCst) {
                let notified = self.open.notified();
                if self.opened.load(Ordering::SeqCst) {
                    break;
                }
                notified.await;
            }
            return Ok("open".into());
        }
        Ok(self.arrived.fetch_add(1, Ordering::SeqCst).to_string())
    }
}

/// A field of `/proc/self/status` in KiB (`VmRSS:`, `VmHWM:`).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Memory maps of this process (`vm.max_map_count` bounds them).
fn memory_maps() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.lines().count())
        .unwrap_or(0)
}

/// Abort the whole bench if it grows past `max_kib` of resident memory or runs longer
/// than `max_time`; stops when `done` is set.
fn watchdog(max_kib: u64, max_time: Duration, done: Arc<AtomicBool>) {
    let started = Instant::now();
    std::thread::spawn(move || {
        while !done.load(Ordering::SeqCst) {
            let rss = status_kib("VmRSS:");
            if rss > max_kib || started.elapsed() > max_time {
                eprintln!(
                    "live-agents guard: {} MiB resident after {:?}; aborting the bench",
                    rss >> 10,
                    started.elapsed()
                );
                std::process::abort();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

/// What section 9 prints.
pub struct LiveReport {
    pub agents: usize,
    pub rss_before_kib: u64,
    pub rss_waiting_kib: u64,
    pub hwm_kib: u64,
    pub maps: usize,
    pub pooled: u64,
    pub on_demand: u64,
    pub all_waiting_after: Duration,
    pub total: Duration,
}

impl LiveReport {
    /// Resident memory per live agent, KiB: the growth over the host at rest.
    pub fn per_agent_kib(&self) -> f64 {
        self.rss_waiting_kib.saturating_sub(self.rss_before_kib) as f64 / self.agents as f64
    }
}

/// `n` children live at once, all blocked in `tasks.wait`.
pub async fn live_agents(dir: &std::path::Path, n: usize) -> LiveReport {
    let done = Arc::new(AtomicBool::new(false));
    watchdog(6 << 20, Duration::from_secs(300), done.clone());
    let toml = format!(
        "[limits]\nmax_tasks = {}\nmax_host_calls = {}\n[budget]\nusd = 100.0\n",
        n + 2,
        2 * n + 10
    );
    let mut config = HostConfig::from_toml(&toml).unwrap();
    config.cache_dir = Some(dir.join("cache"));
    let mut host = Host::new(config, dir.join("bench.db")).unwrap();
    let gate = Arc::new(Gate::default());
    host.register_tool(gate.clone());
    let agent = host.runtime().load_file(&example("scripted")).unwrap();
    // A host at rest: the component compiled, one trivial run done.
    let r = host
        .run(agent.clone(), "[]", RunOptions::default())
        .await
        .unwrap();
    assert_eq!(r.status, Status::Completed, "{r:?}");

    let hold = serde_json::json!([{"tool": {"name": "gate", "args": {"op": "hold"}}}]);
    let child = serde_json::json!([
        {"tool": {"name": "gate", "args": {"op": "arrive"}}},
        {"wait": 2},
        {"fail_if_err": null},
    ])
    .to_string();
    let mut ops =
        vec![serde_json::json!({"spawn": {"description": "blocker", "input": hold.to_string()}})];
    ops.extend((0..n).map(|i| {
        serde_json::json!({"spawn": {"description": format!("live child {i}"), "input": child}})
    }));
    ops.extend((0..n).map(|i| serde_json::json!({"wait": 3 + i})));
    ops.push(serde_json::json!({"wait": 2}));
    let input = serde_json::Value::Array(ops).to_string();

    let rss_before_kib = status_kib("VmRSS:");
    let _ = std::fs::write("/proc/self/clear_refs", "5"); // reset VmHWM to VmRSS
    let started = Instant::now();
    let opts = RunOptions {
        grants: vec!["gate".into()],
        ..Default::default()
    };
    let run = {
        let host = &host;
        async move { host.run(agent, &input, opts).await }
    };
    let observe = async {
        let mut last_note = Instant::now();
        while gate.arrived.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if last_note.elapsed() > Duration::from_secs(10) {
                last_note = Instant::now();
                eprintln!(
                    "   … {:?}: {} of {n} children waiting, {} MiB resident",
                    started.elapsed(),
                    gate.arrived.load(Ordering::SeqCst),
                    status_kib("VmRSS:") >> 10
                );
            }
        }
        let all_waiting_after = started.elapsed();
        // The last children to check in are entering `tasks.wait`.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss = status_kib("VmRSS:");
        let maps = memory_maps();
        let live = host.runtime().instances();
        gate.opened.store(true, Ordering::SeqCst);
        gate.open.notify_waiters();
        (all_waiting_after, rss, maps, live)
    };
    let (report, (all_waiting_after, rss_waiting_kib, maps, live)) = tokio::join!(run, observe);
    let report = report.unwrap();
    let total = started.elapsed();
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let results: Vec<serde_json::Value> =
        serde_json::from_str(report.output.as_deref().unwrap()).unwrap();
    let completed = results
        .iter()
        .filter(|r| r.get("completed").is_some())
        .count();
    assert_eq!(completed, n + 1, "every child and the blocker completed");
    let hwm_kib = status_kib("VmHWM:");
    done.store(true, Ordering::SeqCst);
    LiveReport {
        agents: n,
        rss_before_kib,
        rss_waiting_kib,
        hwm_kib,
        maps,
        pooled: live.pooled,
        on_demand: live.on_demand,
        all_waiting_after,
        total,
    }
}
