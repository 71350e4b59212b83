//! `deployer`: the Terraform story. The root asks the model to plan N cloud resources
//! for an app, checkpoints the plan, and spawns one sub-agent per resource; each
//! sub-agent provisions its resource with the side-effecting `cloud` tool (which
//! appends one line to `cloud.log` in the granted workspace and records a
//! CloudResource effect) and asks the model to describe it. The root waits for all,
//! checkpoints what was built, and summarises. Run with `--grant cloud --workspace DIR`.
//!
//! Input: `{"app": "shop", "resources": 3}` (root) — a sub-agent gets
//! `{"provision": "<resource name>"}`.

use agentflow_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    Provision { provision: String },
    Plan { app: String, resources: u32 },
}

#[derive(Serialize, Deserialize)]
struct Progress {
    planned: Vec<String>,
    built: Vec<String>,
}

fn provision(resource: String) -> Result<String, Error> {
    let created: serde_json::Value =
        tools::call_json("cloud", &json!({ "op": "create", "resource": resource }))?;
    let id = created["id"].as_str().unwrap_or("?").to_string();
    trace::step(
        format!("provision {resource}"),
        "tool:cloud.create",
        &id,
        1.0,
    );
    let description = Request::new()
        .user(format!(
            "Describe the cloud resource {resource} ({id}) in one sentence."
        ))
        .task_type("describe")
        .max_tokens(80)
        .send()?;
    Ok(format!("{resource}={id}: {}", description.text))
}

fn plan(app: String, count: u32) -> Result<String, Error> {
    let reply = Request::new()
        .system("You are a cloud architect. Reply with a JSON array of resource names only.")
        .user(format!("Plan {count} cloud resources for the app {app}."))
        .task_type("plan")
        .max_tokens(200)
        .send()?;
    let mut names: Vec<String> = reply
        .json::<Vec<String>>()
        .unwrap_or_default()
        .into_iter()
        .map(|n| n.split_whitespace().collect::<Vec<_>>().join("-"))
        .filter(|n| !n.is_empty())
        .collect();
    if names.len() != count as usize {
        // The model did not give a usable plan: fall back to a deterministic one.
        names = (1..=count).map(|i| format!("{app}-node-{i}")).collect();
    }
    trace::step(
        format!("plan {count} resources for {app}"),
        "llm:plan",
        names.join(", "),
        0.8,
    );
    checkpoint::save(
        &Progress {
            planned: names.clone(),
            built: vec![],
        },
        format!("planned {count} resources"),
    )?;

    let ids: Vec<TaskId> = names
        .iter()
        .map(|n| {
            Spawn::new(
                format!("provision {n}"),
                json!({ "provision": n }).to_string(),
            )
            .spawn()
        })
        .collect::<Result<_, _>>()?;
    let mut built = Vec::new();
    for (name, outcome) in names.iter().zip(tasks::wait_all(&ids)) {
        let line = outcome.into_result()?;
        trace::step(format!("{name} provisioned"), "tasks:wait", &line, 1.0);
        built.push(line);
    }
    checkpoint::save(
        &Progress {
            planned: names.clone(),
            built: built.clone(),
        },
        "all resources built; summarising",
    )?;
    let summary = Request::new()
        .user(format!(
            "Summarize this deployment of {app}:\n{}",
            built.join("\n")
        ))
        .task_type("summarize")
        .max_tokens(300)
        .send()?;
    Ok(format!(
        "deployed {} resources for {app}\n{}",
        built.len(),
        summary.text
    ))
}

fn run(input: String) -> Result<String, Error> {
    match serde_json::from_str::<Input>(&input)
        .map_err(|e| Error::other(format!("bad input: {e}")))?
    {
        Input::Provision {
            provision: resource,
        } => provision(resource),
        Input::Plan { app, resources } => plan(app, resources),
    }
}

export_agent!(run);
