//! Typed effects and decisions: every effect kind (`FileModified`, `DatabaseMutation`
//! with its typed operation, `APICall`, `CloudResource`, `GitCommit`) recorded by a real
//! run's tool calls; the `git` tool's commits reverted by a recovery plan; and a spawn's
//! decomposition reasoning recorded and shown by `inspect`.

use crate::support::fake_http::{FakeResponse, FakeServer};
use crate::support::*;
use agentflow::{RunOptions, Status};
use serde_json::{Value, json};
use std::path::Path;

fn tool(name: &str, args: Value) -> Value {
    json!({"tool": {"name": name, "args": args}})
}

/// `git ARGS` in `repo` (for checking what the tool did).
fn git(repo: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The effects the run's successful tool calls recorded, in order.
fn recorded_effects(host: &agentflow::Host, run: &str) -> Vec<Value> {
    of_kind(&events(host, run), "tools.call")
        .into_iter()
        .filter(|e| e.ok)
        .flat_map(|e| {
            e.response["effects"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

/// A host granting every built-in tool that has an effect, on workspace `ws`, with
/// `http_fetch` allowed to reach the local fake server.
fn effects_host(dir: &TempDir, ws: &Path) -> agentflow::Host {
    host(
        dir,
        &format!(
            "{ALLOW_LOCAL_HTTP}grant = [\"workspace\", \"kv\", \"http_fetch\", \"cloud\", \"git\"]\nworkspace = {:?}\n",
            ws.to_str().unwrap()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_effect_kind_is_recorded_by_a_real_run() {
    let dir = TempDir::new("effects-all");
    let ws = dir.join("ws");
    let host = effects_host(&dir, &ws);
    let server = FakeServer::start(vec![FakeResponse::text(200, "pong")]).await;
    let ops = json!([
        tool(
            "workspace",
            json!({"op": "write", "path": "src/a.txt", "content": "one\n"})
        ),
        tool("kv", json!({"op": "put", "key": "k", "value": "v"})),
        tool(
            "http_fetch",
            json!({"url": format!("{}/ping", server.url())})
        ),
        tool("cloud", json!({"op": "create", "resource": "web"})),
        tool(
            "git",
            json!({"op": "commit", "message": "Add a.txt", "paths": ["src"]})
        ),
        tool("git", json!({"op": "log"})),
        // The repository's own directory is the git tool's, not the agent's.
        tool(
            "workspace",
            json!({"op": "write", "path": ".git/config", "content": "[core]\n"})
        ),
        tool(
            "git",
            json!({"op": "commit", "message": "escape", "paths": ["../x"]})
        ),
    ]);
    let (report, results) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let effects = recorded_effects(&host, &report.run_id);
    let of_type = |t: &str| -> Vec<&Value> { effects.iter().filter(|e| e["type"] == t).collect() };
    for t in [
        "FileModified",
        "DatabaseMutation",
        "APICall",
        "CloudResource",
        "GitCommit",
    ] {
        assert_eq!(of_type(t).len(), 1, "{t}: {effects:?}");
    }
    let file = of_type("FileModified")[0];
    assert_eq!(file["path"], "src/a.txt");
    assert_eq!(
        file["hash"].as_str().unwrap().len(),
        64,
        "a sha-256 of the content: {file}"
    );
    assert_eq!(
        of_type("DatabaseMutation")[0],
        &json!({"type": "DatabaseMutation", "table": "kv", "op": "upsert"})
    );
    let api = of_type("APICall")[0];
    assert_eq!(
        (api["method"].as_str(), api["status"].as_u64()),
        (Some("GET"), Some(200))
    );
    assert!(api["endpoint"].as_str().unwrap().contains("/ping"), "{api}");
    let cloud = of_type("CloudResource")[0];
    assert_eq!(
        (&cloud["provider"], &cloud["action"]),
        (&json!("simcloud"), &json!("create"))
    );
    assert!(cloud["id"].as_str().unwrap().starts_with("res-"), "{cloud}");

    // The commit is real: the workspace is a repository, HEAD is the recorded sha.
    let commit = of_type("GitCommit")[0];
    let head = git(&ws, &["rev-parse", "HEAD"]);
    assert_eq!(commit["sha"], head.as_str(), "{commit}");
    assert_eq!(commit["branch"], "main");
    assert_eq!(
        Path::new(commit["repo"].as_str().unwrap()),
        ws.canonicalize().unwrap()
    );
    assert_eq!(
        git(&ws, &["show", "-s", "--format=%an <%ae>|%s", "HEAD"]),
        "AgentFlow <agentflow@localhost>|Add a.txt"
    );
    assert_eq!(
        git(&ws, &["show", "--format=", "--name-only", "HEAD"]),
        "src/a.txt"
    );
    assert!(git(&ws, &["show", "-s", "--format=%b", "HEAD"]).contains("AgentFlow-Call: "));
    let log: Value = serde_json::from_str(results[5]["ok"].as_str().unwrap()).unwrap();
    assert_eq!(log[0]["sha"], head.as_str(), "{results:?}");
    let denied = results[6]["err"].as_str().unwrap();
    assert!(
        denied.contains("Denied") && denied.contains("only the git tool"),
        "{denied}"
    );
    assert!(
        results[7]["err"].as_str().unwrap().contains("Denied"),
        "{results:?}"
    );
    // A commit is compensable: its intent names `revert` as the undo.
    let intent = of_kind(&events(&host, &report.run_id), "tools.intent")
        .into_iter()
        .find(|e| e.request["name"] == "git")
        .expect("the commit's intent");
    assert_eq!(
        (&intent.request["side_effect"], &intent.request["undo"]),
        (&json!("compensable"), &json!("revert")),
        "{}",
        intent.request
    );
}

/// A task that committed and then failed is rolled back: the plan reverts its commits
/// newest first with `git revert`, each a `recovery.compensate` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_tasks_commits_are_reverted_by_recovery() {
    let dir = TempDir::new("effects-git-rollback");
    let ws = dir.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("keep.txt"), "kept\n").unwrap();
    let host = effects_host(&dir, &ws);
    let ops = json!([
        tool("git", json!({"op": "commit", "message": "Base", "paths": ["keep.txt"]})),
        {"fail_if_err": null},
    ]);
    let (base, _) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(base.status, Status::Completed, "{base:?}");
    let base_sha = git(&ws, &["rev-parse", "HEAD"]);
    let ops = json!([
        tool("workspace", json!({"op": "write", "path": "a.txt", "content": "v1\n"})),
        tool("git", json!({"op": "commit", "message": "One", "paths": ["a.txt"]})),
        tool("workspace", json!({"op": "write", "path": "a.txt", "content": "v2\n"})),
        tool("git", json!({"op": "commit", "message": "Two", "paths": ["a.txt"]})),
        {"fail": "the deployment check failed"},
    ]);
    let (report, _) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Failed, "{report:?}");
    let shas: Vec<String> = recorded_effects(&host, &report.run_id)
        .iter()
        .filter(|e| e["type"] == "GitCommit")
        .map(|e| e["sha"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(shas.len(), 2);

    let (plan, done, _) = host.recover(&report.run_id, true).await.unwrap();
    assert_eq!(done, 2, "{plan:?}");
    let compensations = of_kind(&events(&host, &report.run_id), "recovery.compensate");
    let reverted: Vec<&str> = compensations
        .iter()
        .map(|e| {
            assert!(e.ok, "{:?}", e.response);
            assert_eq!(e.request["args"]["op"], "revert");
            e.request["args"]["effect"]["sha"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        reverted,
        [shas[1].as_str(), shas[0].as_str()],
        "newest first"
    );
    assert_eq!(
        git(&ws, &["log", "--format=%s", &format!("{base_sha}..HEAD")]),
        "Revert \"One\"\nRevert \"Two\"\nTwo\nOne"
    );
    assert!(
        !ws.join("a.txt").exists(),
        "the tree is back at the base commit"
    );
    assert_eq!(git(&ws, &["diff", "--stat", &base_sha, "HEAD"]), "");
    // Each compensation reported the revert commit it made.
    assert_eq!(
        compensations[1].response["effects"][0]["sha"],
        git(&ws, &["rev-parse", "HEAD"]).as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawn_records_why_the_parent_decomposed() {
    let (_dir, host) = temp_host("effects-decomposition", "");
    let why = "two independent halves; each fits one model call";
    let ops = json!([
        {"spawn_wait": {"description": "first half", "input": "", "reasoning": why}},
        {"spawn_wait": {"description": "second half", "input": ""}},
    ]);
    let (report, _) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let spawns = of_kind(&events(&host, &report.run_id), "tasks.spawn");
    assert_eq!(spawns[0].request["decomposition_reasoning"], why);
    assert!(
        spawns[1].request.get("decomposition_reasoning").is_none(),
        "absent when not given, so older records keep their identity: {}",
        spawns[1].request
    );
    let text = inspect_text(&host, &report.run_id);
    assert!(
        text.contains(&format!(
            "spawn #{} → task 2, decomposed because: {why}",
            spawns[0].seq
        )),
        "{text}"
    );
}
