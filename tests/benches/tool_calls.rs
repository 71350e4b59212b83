//! Section 11: a tool call through a tool component next to a built-in tool call.
//!
//! The probe component (`examples/tools/probe-tool`, `{"op": "echo"}`) and the built-in
//! `kv` tool (`{"op": "get"}`) are both idempotent, so through an agent each call is an
//! intent plus a result in the durable ledger; the difference is the component's own
//! cost — a fresh store, instantiation from its `InstancePre`, the call — which the
//! second pair of figures measures alone (`Tool::call`, nothing recorded).

use super::{Samples, host, scratch};
use agentflow::tool_components::{Manifest, registry};
use agentflow::tools::{Tool, ToolCallCtx};
use agentflow::{Host, RunOptions, Status};
use agentflow_tests::example;
use serde_json::json;
use std::time::{Duration, Instant};

/// The four figures: through an agent (built-in, component), then alone (same).
pub struct ToolFigures {
    pub agent_builtin: Samples,
    pub agent_component: Samples,
    pub alone_builtin: Samples,
    pub alone_component: Samples,
}

async fn install_probe(host: &Host) {
    let manifest: Manifest = toml::from_str("[grants]\nkv = true\n").unwrap();
    registry::install(
        host.ledger(),
        &host.tool_runtime().unwrap(),
        std::fs::read(example("probe-tool")).unwrap(),
        None,
        manifest,
    )
    .await
    .unwrap();
}

/// Per-call cost through the `scripted` agent: the slope between runs with 0 and `n`
/// calls of `tool` with `args`.
async fn agent_slope(host: &Host, tool: &str, args: serde_json::Value, n: usize) -> Duration {
    let agent = host.runtime().load_file(&example("scripted")).unwrap();
    let op = json!({"tool": {"name": tool, "args": args}});
    let ops = |k: usize| serde_json::Value::Array(vec![op.clone(); k]).to_string();
    let opts = || RunOptions {
        grants: vec![tool.to_string()],
        ..Default::default()
    };
    host.run(agent.clone(), &ops(10), opts()).await.unwrap();
    let t0 = Instant::now();
    host.run(agent.clone(), &ops(0), opts()).await.unwrap();
    let base = t0.elapsed();
    let t1 = Instant::now();
    let r = host.run(agent.clone(), &ops(n), opts()).await.unwrap();
    assert_eq!(r.status, Status::Completed, "{r:?}");
    t1.elapsed().saturating_sub(base) / n as u32
}

/// `iterations` direct calls of `tool`, each timed.
async fn alone(host: &Host, tool: &dyn Tool, args: serde_json::Value, iterations: u32) -> Samples {
    let ctx = ToolCallCtx {
        run_id: "bench".into(),
        task_id: 1,
        ledger: host.ledger().clone(),
        idempotency_key: "bench/1/1".into(),
        effects: Default::default(),
    };
    for _ in 0..20 {
        tool.call(&ctx, args.clone()).await.unwrap();
    }
    let mut samples = Vec::new();
    for _ in 0..iterations {
        let t = Instant::now();
        tool.call(&ctx, args.clone()).await.unwrap();
        samples.push(t.elapsed());
    }
    Samples(samples)
}

pub async fn tool_calls(repeats: usize, n: usize) -> ToolFigures {
    let dir = scratch("tools");
    let host = host(
        &dir,
        "[limits]\nmax_host_calls = 100000\ncpu_ms = 600000\n[budget]\nusd = 100.0\n",
    );
    install_probe(&host).await;
    let kv_get = json!({"op": "get", "key": "k"});
    let echo = json!({"op": "echo", "text": "hi"});
    let (mut builtin, mut component) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        builtin.push(agent_slope(&host, "kv", kv_get.clone(), n).await);
        component.push(agent_slope(&host, "probe", echo.clone(), n).await);
    }
    let (tools, _) = registry::tools_for_run(
        host.ledger(),
        &host.tool_runtime().unwrap(),
        &["probe".to_string()],
        &[],
        &Default::default(),
    )
    .unwrap();
    let alone_builtin = alone(&host, &agentflow::tools::kv::KvTool, kv_get, 500).await;
    let alone_component = alone(&host, tools[0].as_ref(), echo, 500).await;
    ToolFigures {
        agent_builtin: Samples(builtin),
        agent_component: Samples(component),
        alone_builtin,
        alone_component,
    }
}
