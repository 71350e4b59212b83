//! Section 6 of the bench: spawn decisions with 10,000 tasks already in the run's tree.
//!
//! Measured two ways:
//!
//! - From inside the guest (`scripted`, its clock read before and after 500 spawns):
//!   the whole `tasks.spawn` — all checks, the child's task row and the call's event,
//!   each a durable ledger commit today — with the ledger on disk, and again on tmpfs
//!   (`/dev/shm`, where an fsync costs next to nothing) to separate the CPU cost from
//!   the disk's.
//! - On the host, without a guest: [`RunContext::spawn`] called directly on a ledger on
//!   tmpfs, interleaved with [`Ledger::create_task`] of an equal task row. Their
//!   difference is the supervisor's decision alone (the six checks, the task tree,
//!   starting the child's tokio task), without the ledger.
//!
//! Every child depends on a blocker that never finishes, so none of them runs: what is
//! timed is the spawn, not the children's work.

use agentflow::ledger::{Ledger, NewRun, NewTask};
use agentflow::supervisor::{
    AgentChoice, ComponentRef, Dependency, RunContext, RunServices, RunSettings, SpawnRequest,
    TaskOutcome, TaskRunner, TaskStart,
};
use agentflow::{Host, HostConfig, RunOptions, Status};
use agentflow_tests::example;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BEFORE: u32 = 10_000;
const MEASURED: u32 = 500;

/// Per spawn, as the guest sees it, with the ledger in `dir`.
pub async fn from_the_guest(dir: &Path) -> Duration {
    let mut config = HostConfig::from_toml(
        "[limits]\nmax_tasks = 20000\nmax_host_calls = 20000\nwall_ms = 600000\n[constraints]\nmax_concurrent_tasks = 16\n",
    )
    .unwrap();
    config.cache_dir = Some(dir.join("cache"));
    let host = Host::new(config, dir.join("bench.db")).unwrap();
    let agent = host.runtime().load_file(&example("scripted")).unwrap();
    let blocker = serde_json::json!([{"sleep_ms": 600000}]).to_string();
    let mut ops: Vec<serde_json::Value> =
        vec![serde_json::json!({"spawn": {"description": "blocker", "input": blocker}})];
    ops.extend((0..BEFORE).map(|i| {
        serde_json::json!({"spawn": {"description": format!("prefill {i}"), "input": "", "after": [2]}})
    }));
    ops.push(serde_json::json!({"clock": null}));
    ops.extend((0..MEASURED).map(|i| {
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
    let t0 = results[BEFORE as usize + 1].as_u64().unwrap();
    let t1 = results[(BEFORE + MEASURED + 2) as usize].as_u64().unwrap();
    assert!(
        results[BEFORE as usize + 2]["ok"].is_u64(),
        "{}",
        results[BEFORE as usize + 2]
    );
    Duration::from_millis(t1 - t0) / MEASURED
}

/// Runs nothing: the blocker (and so every child) stays pending.
struct NeverRuns;

#[async_trait::async_trait]
impl TaskRunner for NeverRuns {
    fn load_agent(&self, _path: &Path) -> anyhow::Result<ComponentRef> {
        anyhow::bail!("no agents by name in this bench")
    }

    async fn run_task(&self, _run: Arc<RunContext>, _start: TaskStart) -> TaskOutcome {
        std::future::pending().await
    }

    async fn validate_merged(
        &self,
        _run: Arc<RunContext>,
        _task_id: u64,
        _agent: &ComponentRef,
        _input: &str,
        _text: &str,
    ) -> Result<(), String> {
        Err("this bench merges nothing".into())
    }
}

fn request(description: String) -> SpawnRequest {
    SpawnRequest {
        description,
        agent: AgentChoice::Same,
        input: String::new(),
        dedup_key: None,
        budget_usd: None,
        depends_on: vec![Dependency::After(2)],
        resources: Vec::new(),
        sequence: None,
        fail_fast: false,
        timeout_ms: None,
        estimated_cost_usd: None,
        tools: Vec::new(),
        validators: Vec::new(),
        needs: Default::default(),
    }
}

/// `RunContext::spawn` and an equal `Ledger::create_task`, each timed `MEASURED`
/// times (interleaved) after `BEFORE` spawns, with the ledger in `dir`.
pub async fn on_the_host(dir: &Path) -> (super::Samples, super::Samples) {
    let mut config = HostConfig::from_toml("").unwrap();
    config.cache_dir = Some(dir.join("cache"));
    let host = Host::new(config, dir.join("bench.db")).unwrap();
    let agent = host
        .runtime()
        .load_file(&example("scripted"))
        .unwrap()
        .component_ref();
    let ledger: Ledger = host.ledger().clone();
    let mut settings = RunSettings {
        limits: Default::default(),
        budget_usd: 100.0,
        budget_tokens: None,
        agents: Default::default(),
        context_hash: "bench".into(),
        divergence: Default::default(),
        model_override: None,
        constraints: Default::default(),
        validators: Vec::new(),
        default_max_output_tokens: 1024,
    };
    settings.limits.max_tasks = BEFORE + MEASURED + 10;
    let services = RunServices {
        ledger: ledger.clone(),
        scheduler: host.scheduler().clone(),
        tools: agentflow::tools::ToolSet::build(&Default::default(), &[]).unwrap(),
        runner: Arc::new(NeverRuns),
    };
    let run_id = "spawn-bench".to_string();
    let run = RunContext::new(run_id.clone(), services, settings);
    let root = run.register_root(&agent, "");
    ledger
        .create_run(
            NewRun {
                run_id: run_id.clone(),
                agent: agent.name.clone(),
                component_hash: agent.hash.clone(),
                input: String::new(),
                config_json: "{}".into(),
                context_hash: "bench".into(),
                budget_usd: Some(100.0),
                component: agent.bytes.clone(),
            },
            root,
        )
        .await
        .unwrap();
    let spawn = |i: u32, description: String| {
        let run = run.clone();
        let agent = agent.clone();
        async move {
            run.spawn(1, 0, &agent, request(description), format!("1:{i}"))
                .await
                .unwrap()
        }
    };
    let mut blocker = request("blocker".into());
    blocker.depends_on.clear();
    assert_eq!(
        run.spawn(1, 0, &agent, blocker, "1:0".into())
            .await
            .unwrap(),
        2
    );
    for i in 0..BEFORE {
        spawn(i + 1, format!("prefill {i}")).await;
    }
    let (mut spawns, mut rows) = (Vec::new(), Vec::new());
    for i in 0..MEASURED {
        let start = Instant::now();
        spawn(BEFORE + 1 + i, format!("measured {i}")).await;
        spawns.push(start.elapsed());
        let row = NewTask {
            run_id: run_id.clone(),
            task_id: 1_000_000 + i as u64,
            parent_id: Some(1),
            depth: 1,
            agent: agent.name.clone(),
            component_hash: agent.hash.clone(),
            description: format!("row {i}"),
            input: String::new(),
            spawn_key: Some(format!("row:{i}")),
            dedup_key: None,
            depends_on: r#"[{"after":2}]"#.into(),
            component: None,
            budget_usd: None,
            resources: "[]".into(),
            timeout_ms: None,
        };
        let start = Instant::now();
        ledger.create_task(row).await.unwrap();
        rows.push(start.elapsed());
    }
    run.cancel_unfinished().await;
    (super::Samples(spawns), super::Samples(rows))
}
