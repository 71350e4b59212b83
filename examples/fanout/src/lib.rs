//! `fanout`: a synthetic workload for the benchmark and tests. Input
//! `{"depth": d, "fanout": f, "steps": s}`. For each of the `s` steps it makes one
//! model call and stores the reply with the `kv` tool; then, if `d > 0`, it spawns
//! `f` children of this same component with depth `d - 1` and waits for them.
//! Output: `{"tasks": n}`, the number of tasks in this subtree (itself included).
//! Children also get an optional `"path"` (root: `"r"`, children `"r.0"`, `"r.1"`,
//! ...) so that each task's `kv` keys, `d{depth}-s{step}-{8 hex digits of hash(path)}`,
//! are distinct and deterministic.
//! Bad input, a failed call or a failed child fails the run.

use agentflow_sdk::prelude::*;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Params {
    depth: u32,
    fanout: u32,
    steps: u32,
    #[serde(default = "root_path")]
    path: String,
}

fn root_path() -> String {
    "r".to_string()
}

/// FNV-1a, 32 bits: stable across builds and runs.
fn fnv32(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn run(input: String) -> Result<String, Error> {
    let p: Params = serde_json::from_str(&input).map_err(|e| {
        Error::other(format!(
            "bad input (want {{\"depth\",\"fanout\",\"steps\"}}): {e}"
        ))
    })?;
    let depth = p.depth;
    for i in 0..p.steps {
        let reply = llm::ask(format!("step {i} of task at depth {depth}"))?;
        let tag = format!("{:08x}", fnv32(&p.path));
        tools::call(
            "kv",
            &json!({"op": "put", "key": format!("d{depth}-s{i}-{tag}"), "value": reply}),
        )?;
    }
    let mut tasks_total: u64 = 1;
    if depth > 0 && p.fanout > 0 {
        let ids = (0..p.fanout)
            .map(|k| {
                let path = format!("{}.{k}", p.path);
                let input =
                    json!({"depth": depth - 1, "fanout": p.fanout, "steps": p.steps, "path": path});
                Spawn::new(
                    format!("fanout {path} at depth {}", depth - 1),
                    input.to_string(),
                )
                .spawn()
            })
            .collect::<Result<Vec<_>, _>>()?;
        for outcome in tasks::wait_all(&ids) {
            let out = outcome.into_result()?;
            let v: serde_json::Value = serde_json::from_str(&out)?;
            tasks_total += v["tasks"]
                .as_u64()
                .ok_or_else(|| Error::other(format!("child output without a task count: {out}")))?;
        }
    }
    Ok(json!({ "tasks": tasks_total }).to_string())
}

export_agent!(run);
