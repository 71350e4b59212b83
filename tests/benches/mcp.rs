//! Section 11: a tool call through an MCP server next to a built-in tool call — the
//! reference server's `echo` over stdio (`[[tools.mcp]]`) against the built-in `kv`
//! get, both of class `idempotent`, so both take the same recorded path (an intent and
//! a durable result per call), amortised per call from
//! the slope between runs with 1 and N calls (each run starts its own server at its
//! first call), and the cost of that first call (the server's start).

use agentflow::{Host, HostConfig, RunOptions, Status};
use agentflow_tests::example;
use std::path::Path;
use std::time::{Duration, Instant};

/// Per-call figures: MCP echo, built-in kv get, and the MCP server's start.
pub struct McpFigures {
    pub mcp: Vec<Duration>,
    pub builtin: Vec<Duration>,
    pub start: Vec<Duration>,
}

fn host(dir: &Path, entry: &Path) -> Host {
    let toml = format!(
        "[limits]\nmax_host_calls = 100000\ncpu_ms = 600000\n\
         [[tools.mcp]]\nname = \"ev\"\ncommand = \"node\"\nargs = [{}, \"stdio\"]\n\
         allow = [\"echo\"]\neffect = \"idempotent\"\n",
        serde_json::to_string(&entry.display().to_string()).unwrap()
    );
    let mut config = HostConfig::from_toml(&toml).unwrap();
    config.cache_dir = Some(dir.join("cache"));
    Host::new(config, dir.join("bench.db")).unwrap()
}

/// `repeats` measurements of each figure with runs of `n` calls; `None` (the
/// section is skipped) when the reference server is not installed.
pub async fn figures(dir: &Path, n: usize, repeats: usize) -> Option<McpFigures> {
    let entry = agentflow_tests::mcp_everything()?;
    let host = host(dir, &entry);
    let agent = host.runtime().load_file(&example("scripted")).unwrap();
    let grants = RunOptions {
        grants: vec!["ev/echo".into(), "kv".into()],
        ..Default::default()
    };
    let run = |op: serde_json::Value, k: usize| {
        let (host, agent, grants) = (&host, agent.clone(), grants.clone());
        async move {
            let ops = serde_json::Value::Array(vec![op; k]).to_string();
            let t = Instant::now();
            let r = host.run(agent, &ops, grants).await.unwrap();
            assert_eq!(r.status, Status::Completed, "{r:?}");
            t.elapsed()
        }
    };
    let echo = serde_json::json!({"tool": {"name": "ev/echo", "args": {"message": "bench"}}});
    let get = serde_json::json!({"tool": {"name": "kv", "args": {"op": "get", "key": "k"}}});
    run(echo.clone(), 10).await;
    run(get.clone(), 10).await;
    let mut figures = McpFigures {
        mcp: Vec::new(),
        builtin: Vec::new(),
        start: Vec::new(),
    };
    for _ in 0..repeats {
        let none = run(echo.clone(), 0).await;
        let one = run(echo.clone(), 1).await;
        let many = run(echo.clone(), n).await;
        figures.start.push(one.saturating_sub(none));
        figures.mcp.push(many.saturating_sub(one) / (n as u32 - 1));
        let one = run(get.clone(), 1).await;
        let many = run(get.clone(), n).await;
        figures
            .builtin
            .push(many.saturating_sub(one) / (n as u32 - 1));
    }
    Some(figures)
}
