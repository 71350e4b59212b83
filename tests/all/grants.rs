//! Grants per agent, with constraints (`[[tools.grants]]`): a sub-agent holds only the
//! rights its own rules give it *and* every spawner above it holds; argument
//! constraints (workspace paths) are enforced per call; the ledger and `inspect` name
//! the grant that admitted each call.

use crate::support::*;
use agentflow::{RunOptions, Status};
use serde_json::{Value, json};

/// A child's results (the scripted child's output is its own JSON array).
fn child_results(result: &Value) -> Vec<Value> {
    let out = result["completed"]
        .as_str()
        .unwrap_or_else(|| panic!("child did not complete: {result}"));
    serde_json::from_str(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_agent_holds_fewer_rights_than_its_parent_and_never_more() {
    let dir = TempDir::new("grants-chain");
    let workspace = dir.join("ws");
    std::fs::create_dir_all(&workspace).unwrap();
    let config = format!(
        r#"
[agents]
writer = {scripted:?}
reader = {scripted:?}

[tools]
workspace = {workspace:?}
grant = ["kv"]

# The root agent (the `scripted` component's file stem) may write anywhere.
[[tools.grants]]
name = "root-workspace"
tool = "workspace"
agents = ["scripted"]

# A writer may write only under src/.
[[tools.grants]]
name = "writer-src"
tool = "workspace"
agents = ["writer"]
paths = ["src/**"]

# A reader's own rule names http_fetch, which the root lacks: it never gets it.
[[tools.grants]]
name = "reader-fetch"
tool = "http_fetch"
agents = ["reader"]
"#,
        scripted = example("scripted"),
    );
    let host = host(&dir, &config);
    let writer_ops = json!([
        {"tool": {"name": "workspace", "args": {"op": "write", "path": "src/a.txt", "content": "a"}}},
        {"tool": {"name": "workspace", "args": {"op": "write", "path": "secrets.txt", "content": "x"}}},
        {"tool": {"name": "workspace", "args": {"op": "write", "path": "./src/../secrets.txt", "content": "x"}}},
        {"tools_list": null},
    ]);
    let reader_ops = json!([
        {"tool": {"name": "http_fetch", "args": {"url": "http://example.com/"}}},
        {"tool": {"name": "workspace", "args": {"op": "read", "path": "top.txt"}}},
        {"tool": {"name": "kv", "args": {"op": "put", "key": "k", "value": "v"}}},
        {"tools_list": null},
    ]);
    let ops = json!([
        {"tool": {"name": "workspace", "args": {"op": "write", "path": "top.txt", "content": "t"}}},
        {"spawn_wait": {"description": "write sources", "input": writer_ops.to_string(), "agent": "writer"}},
        {"spawn_wait": {"description": "read things", "input": reader_ops.to_string(), "agent": "reader"}},
        {"tools_list": null},
    ]);
    let (report, results) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert!(
        results[0].get("ok").is_some(),
        "root writes anywhere: {}",
        results[0]
    );

    let writer = child_results(&results[1]);
    assert!(
        writer[0].get("ok").is_some(),
        "writer in src/: {}",
        writer[0]
    );
    let denied = writer[1]["err"].as_str().unwrap_or_default();
    assert!(
        denied.contains("Denied") && denied.contains("src/**"),
        "writer outside src/ is denied by its rule: {denied}"
    );
    assert!(
        writer[2]["err"].as_str().is_some(),
        "a path escaping src/ through .. is refused: {}",
        writer[2]
    );
    let writer_tools: Vec<&str> = writer[3]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(writer_tools, ["kv", "workspace"], "the writer's tools");

    let reader = child_results(&results[2]);
    let fetch = reader[0]["err"].as_str().unwrap_or_default();
    assert!(
        fetch.contains("Denied") && fetch.contains("spawner agent `scripted`"),
        "a right the parent lacks is refused, naming the parent: {fetch}"
    );
    let read = reader[1]["err"].as_str().unwrap_or_default();
    assert!(
        read.contains("NotGranted") && read.contains("reader"),
        "the reader has no workspace rule of its own: {read}"
    );
    assert!(
        reader[2].get("ok").is_some(),
        "kv is everyone's: {}",
        reader[2]
    );
    let reader_tools: Vec<&str> = reader[3]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        reader_tools,
        ["kv"],
        "http_fetch is invisible to the reader"
    );
    let root_tools: Vec<&str> = results[3]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(root_tools, ["kv", "workspace"], "the root's tools");

    // The world: only the admitted writes happened.
    assert!(workspace.join("top.txt").is_file());
    assert!(workspace.join("src/a.txt").is_file());
    assert!(!workspace.join("secrets.txt").exists());

    // The ledger names the grant that admitted each call, in the intent and the result.
    let evs = events(&host, &report.run_id);
    let grants_of = |kind: &str| -> Vec<(u64, String, String)> {
        of_kind(&evs, kind)
            .iter()
            .filter(|e| e.ok)
            .map(|e| {
                (
                    e.task_id,
                    e.request["name"].as_str().unwrap_or_default().to_string(),
                    e.request["grant"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    let calls = grants_of("tools.call");
    assert!(
        calls.contains(&(1, "workspace".into(), "root-workspace".into())),
        "{calls:?}"
    );
    assert!(
        calls.contains(&(2, "workspace".into(), "writer-src".into())),
        "{calls:?}"
    );
    assert!(
        calls.contains(&(3, "kv".into(), "grant kv".into())),
        "{calls:?}"
    );
    let intents = grants_of("tools.intent");
    assert!(
        intents.contains(&(2, "workspace".into(), "writer-src".into())),
        "{intents:?}"
    );
    // Refusals are recorded as failed calls without a grant.
    let refused = of_kind(&evs, "tools.call")
        .into_iter()
        .filter(|e| !e.ok)
        .count();
    assert_eq!(refused, 4, "two writer refusals, two reader refusals");

    let text = inspect_text(&host, &report.run_id);
    assert!(
        text.contains("admitted by grant `writer-src`"),
        "inspect shows the grant: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argument_constraints_and_globs_admit_only_matching_calls() {
    let dir = TempDir::new("grants-args");
    let config = r#"
[[tools.grants]]
tool = "k*"
args = { key = ["public/*"], op = ["get", "put"] }
"#;
    let host = host(&dir, config);
    let ops = json!([
        {"tool": {"name": "kv", "args": {"op": "put", "key": "public/a", "value": "1"}}},
        {"tool": {"name": "kv", "args": {"op": "put", "key": "private/a", "value": "1"}}},
        {"tool": {"name": "kv", "args": {"op": "get", "key": "public/a/b"}}},
        {"tools_list": null},
    ]);
    let (report, results) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert!(results[0].get("ok").is_some(), "{}", results[0]);
    let err = results[1]["err"].as_str().unwrap_or_default();
    assert!(
        err.contains("Denied") && err.contains("private/a") && err.contains("tools.grants[0]"),
        "{err}"
    );
    assert!(
        results[2]["err"].as_str().is_some(),
        "`*` stops at /: {}",
        results[2]
    );
    assert_eq!(results[3], json!(["kv"]));
}

#[test]
fn a_grant_of_an_unknown_tool_is_refused_when_the_run_starts() {
    let dir = TempDir::new("grants-unknown");
    let host = host(&dir, "[[tools.grants]]\ntool = \"nope\"\n");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(host.run_file(&example("scripted"), "[]", RunOptions::default()))
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("cannot grant unknown tool `nope`"),
        "{err:#}"
    );
}
