//! `refactor`: parallel edits of one codebase, merged by the host (seed §7).
//!
//! The root seeds the granted workspace with `src/pricing.rs` and `deploy/limits.toml`
//! (when missing), asks the model for a plan of edits, and spawns one sub-agent per
//! edit. Each sub-agent works in its own copy-on-write view of the workspace: it reads
//! the file, asks the model to rewrite one function (or the whole file), splices the
//! answer in and writes it back — no sibling sees its half-done work. When the root
//! waits for each child, the host merges the child's changes into the workspace:
//! non-overlapping edits merge trivially, overlapping edits of the same function go to
//! the merge model, and a change to a path marked critical (`[merge] critical_paths`)
//! waits for a human (`agentflow conflicts`, `agentflow resolve`). The root then reports
//! the merged file.
//!
//! Run: `agentflow run examples/refactor --config examples/refactor/agentflow.toml
//! --workspace /tmp/refactor-ws --input "Harden the pricing module"`, and in another
//! terminal `agentflow conflicts` / `agentflow resolve ID --take TASK`.
//!
//! Input: free text (root); a sub-agent gets an [`Edit`] as JSON.

use agentflow_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The code the run starts from.
const PRICING: &str = "//! Pricing rules.

pub fn price(unit_cents: u64, quantity: u64) -> u64 {
    unit_cents * quantity
}

/// Sales tax in basis points.
pub const TAX_BPS: u64 = 800;

pub fn tax(amount_cents: u64) -> u64 {
    amount_cents * TAX_BPS / 10_000
}
";

const LIMITS: &str = "max_order_cents = 1000000\n";

/// One edit, given to a sub-agent.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Edit {
    file: String,
    /// The function to rewrite; `None` rewrites the whole file.
    #[serde(default)]
    function: Option<String>,
    change: String,
}

fn read(path: &str) -> Result<Option<String>, Error> {
    match tools::call("workspace", &json!({ "op": "read", "path": path })) {
        Ok(text) => Ok(Some(text)),
        Err(Error::Tool(ToolError::Failed(_))) => Ok(None),
        Err(e) => Err(e),
    }
}

fn write(path: &str, content: &str) -> Result<(), Error> {
    tools::call(
        "workspace",
        &json!({ "op": "write", "path": path, "content": content }),
    )?;
    Ok(())
}

/// The line range of `pub fn name(` up to its closing `}` at column 0.
fn function_span(lines: &[&str], name: &str) -> Option<(usize, usize)> {
    let start = lines
        .iter()
        .position(|l| l.starts_with(&format!("pub fn {name}(")))?;
    let end = start + lines[start..].iter().position(|l| *l == "}")?;
    Some((start, end))
}

fn apply(edit: Edit) -> Result<String, Error> {
    let text =
        read(&edit.file)?.ok_or_else(|| Error::other(format!("{} does not exist", edit.file)))?;
    let new_text = match &edit.function {
        Some(name) => {
            let lines: Vec<&str> = text.lines().collect();
            let (start, end) = function_span(&lines, name)
                .ok_or_else(|| Error::other(format!("no function {name} in {}", edit.file)))?;
            let reply = Request::new()
                .system("You edit Rust code. Reply with the rewritten function only.")
                .user(format!(
                    "Rewrite this function so that it {}.\n\n{}",
                    edit.change,
                    lines[start..=end].join("\n")
                ))
                .task_type("edit")
                .max_tokens(300)
                .send()?;
            let mut out: Vec<&str> = lines[..start].to_vec();
            out.extend(reply.text.trim_end().lines());
            out.extend(&lines[end + 1..]);
            out.join("\n") + "\n"
        }
        None => {
            let reply = Request::new()
                .system("You edit configuration files. Reply with the whole new file only.")
                .user(format!(
                    "Change this file so that it {}.\n\n{text}",
                    edit.change
                ))
                .task_type("edit")
                .max_tokens(300)
                .send()?;
            reply.text.trim_end().to_string() + "\n"
        }
    };
    write(&edit.file, &new_text)?;
    trace::step(
        format!("{} in {}", edit.change, edit.file),
        "tool:workspace.write",
        format!("{} bytes", new_text.len()),
        0.8,
    );
    Ok(format!("edited {}: {}", edit.file, edit.change))
}

fn plan(goal: String) -> Result<String, Error> {
    for (path, seed) in [("src/pricing.rs", PRICING), ("deploy/limits.toml", LIMITS)] {
        if read(path)?.is_none() {
            write(path, seed)?;
        }
    }
    let reply = Request::new()
        .system("You plan code edits. Reply with a JSON array of {file, function, change}.")
        .user(format!(
            "Plan the edits for this goal: {goal}\nFiles: src/pricing.rs (fn price, fn tax), deploy/limits.toml"
        ))
        .task_type("plan")
        .max_tokens(400)
        .send()?;
    let edits: Vec<Edit> = reply.json()?;
    let mut ids = Vec::new();
    for edit in &edits {
        let id = Spawn::new(
            format!("{} ({})", edit.change, edit.file),
            serde_json::to_string(edit).map_err(|e| Error::Json(e.to_string()))?,
        )
        .tool("workspace")
        .spawn()?;
        ids.push(id);
    }
    let mut lines = Vec::new();
    for (id, outcome) in ids.iter().zip(tasks::wait_all(&ids)) {
        lines.push(match outcome {
            Outcome::Completed(s) => format!("task {id}: {s}"),
            other => format!("task {id}: {other:?}"),
        });
    }
    let merged = read("src/pricing.rs")?.unwrap_or_default();
    let limits = read("deploy/limits.toml")?.unwrap_or_default();
    Ok(format!(
        "{}\n\n== src/pricing.rs ==\n{merged}\n== deploy/limits.toml ==\n{limits}",
        lines.join("\n")
    ))
}

fn run(input: String) -> Result<String, String> {
    let result = match serde_json::from_str::<Edit>(&input) {
        Ok(edit) => apply(edit),
        Err(_) => plan(input),
    };
    result.map_err(|e| e.to_string())
}

export_agent!(run);
