//! Built-in tools and grants: deny by default, scopes enforced per call.

use crate::support::fake_http::{FakeResponse, FakeServer};
use crate::support::*;
use agentflow::{RunOptions, Status};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ungranted_tools_are_invisible_and_refused() {
    let (_dir, host) = temp_host("tools-deny", "");
    let ops = json!([
        {"tools_list": null},
        {"tool": {"name": "kv", "args": {"op": "put", "key": "a", "value": "b"}}},
        {"tool": {"name": "nonexistent", "args": {}}},
    ]);
    let (report, results) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed);
    assert_eq!(results[0], json!([]));
    let refused = results[1]["err"].as_str().unwrap();
    assert!(
        refused.contains("NotGranted") && refused.contains("--grant kv"),
        "{refused}"
    );
    assert!(results[2]["err"].as_str().unwrap().contains("NotFound"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_puts_and_gets_within_the_run() {
    let (_dir, host) = temp_host("tools-kv", "");
    let ops = json!([
        {"tools_list": null},
        {"tool": {"name": "kv", "args": {"op": "get", "key": "colour"}}},
        {"tool": {"name": "kv", "args": {"op": "put", "key": "colour", "value": "green"}}},
        {"tool": {"name": "kv", "args": {"op": "get", "key": "colour"}}},
        {"tool": {"name": "kv", "args": {"op": "explode", "key": "colour"}}},
    ]);
    let (report, results) = run_scripted(&host, ops, grant(&["kv"])).await;
    assert_eq!(report.status, Status::Completed);
    assert_eq!(results[0], json!(["kv"]));
    assert_eq!(results[1]["ok"], "null");
    assert_eq!(results[3]["ok"], "\"green\"");
    assert!(results[4]["err"].as_str().unwrap().contains("InvalidArgs"));
    // Another run does not see this run's store.
    let (_, other) = run_scripted(
        &host,
        json!([{"tool": {"name": "kv", "args": {"op": "get", "key": "colour"}}}]),
        grant(&["kv"]),
    )
    .await;
    assert_eq!(other[0]["ok"], "null");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_stays_inside_its_directory() {
    let (dir, host) = temp_host("tools-workspace", "");
    let ws = dir.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(dir.join("secret.txt"), "top secret").unwrap();
    std::os::unix::fs::symlink(dir.path(), ws.join("escape")).unwrap();
    let w = |args: serde_json::Value| json!({"tool": {"name": "workspace", "args": args}});
    let ops = json!([
        w(json!({"op": "write", "path": "notes/a.txt", "content": "one\n"})),
        w(json!({"op": "append", "path": "notes/a.txt", "content": "two\n"})),
        w(json!({"op": "read", "path": "notes/a.txt"})),
        w(json!({"op": "list", "path": "notes"})),
        w(json!({"op": "read", "path": "../secret.txt"})),
        w(json!({"op": "read", "path": "/etc/passwd"})),
        w(json!({"op": "read", "path": "escape/secret.txt"})),
        w(json!({"op": "write", "path": "escape/planted.txt", "content": "x"})),
    ]);
    let opts = RunOptions {
        workspace: Some(ws.clone()),
        ..grant(&["workspace"])
    };
    let (report, results) = run_scripted(&host, ops, opts).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(results[2]["ok"], "one\ntwo\n");
    assert_eq!(results[3]["ok"], "[\"a.txt\"]");
    #[allow(clippy::needless_range_loop)]
    for i in 4..8 {
        assert!(
            results[i]["err"].as_str().unwrap().contains("Denied"),
            "op {i}: {:?}",
            results[i]
        );
    }
    assert_eq!(
        std::fs::read_to_string(ws.join("notes/a.txt")).unwrap(),
        "one\ntwo\n"
    );
    assert!(!dir.join("planted.txt").exists());
}

/// Every way out of the workspace, tried by the root task (the directory itself), by a
/// child (its copy-on-write view reads through to the directory) and by a join (a
/// merge writes the directory): dangling and live symlinks, a symlinked parent
/// directory, a hard link, `..` and absolute paths. Nothing outside is read, created
/// or changed. (The race of a symlink swapped in mid-call is
/// `tools::workspace_dir::tests::a_symlink_swapped_in_during_writes_never_leads_out`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_links_and_paths_out_are_refused_for_root_child_and_join() {
    let (dir, host) = temp_host("tools-ws-links", "");
    let (ws, outside) = (dir.join("ws"), dir.join("outside"));
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "top secret").unwrap();
    std::os::unix::fs::symlink(outside.join("c.txt"), ws.join("evil")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), ws.join("live")).unwrap();
    std::os::unix::fs::symlink(&outside, ws.join("outdir")).unwrap();
    std::fs::hard_link(outside.join("secret.txt"), ws.join("hard")).unwrap();
    let w = |args: serde_json::Value| json!({"tool": {"name": "workspace", "args": args}});
    let probes = json!([
        w(json!({"op": "write", "path": "evil", "content": "pwned"})),
        w(json!({"op": "append", "path": "evil", "content": "pwned"})),
        w(json!({"op": "read", "path": "live"})),
        w(json!({"op": "write", "path": "live", "content": "pwned"})),
        w(json!({"op": "write", "path": "outdir/new.txt", "content": "pwned"})),
        w(json!({"op": "read", "path": "outdir/secret.txt"})),
        w(json!({"op": "list", "path": "outdir"})),
        w(json!({"op": "read", "path": "hard"})),
        w(json!({"op": "write", "path": "hard", "content": "pwned"})),
        w(json!({"op": "append", "path": "hard", "content": "pwned"})),
        w(json!({"op": "write", "path": "../x.txt", "content": "pwned"})),
        w(json!({"op": "read", "path": "/etc/passwd"})),
    ]);
    let reads = json!([
        w(json!({"op": "read", "path": "live"})),
        w(json!({"op": "read", "path": "outdir/secret.txt"})),
        w(json!({"op": "read", "path": "hard"})),
    ]);
    let mut ops = probes.as_array().unwrap().clone();
    ops.push(json!({"spawn_wait": {"description": "reader", "input": reads.to_string(), "tools": ["workspace"]}}));
    let opts = || RunOptions {
        workspace: Some(ws.clone()),
        ..grant(&["workspace"])
    };
    let (report, results) = run_scripted(&host, json!(ops), opts()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    for (i, r) in results[..12].iter().enumerate() {
        let err = r["err"].as_str().unwrap_or_default();
        assert!(err.contains("Denied"), "root op {i}: {r}");
    }
    // The child's reads fall through its view to the directory: refused there too.
    let child = results[12].to_string();
    assert!(
        !child.contains("top secret"),
        "a child read outside: {child}"
    );
    assert_eq!(child.matches("no such file").count(), 3, "{child}");

    // A child writes `evil` in its own view (the ledger); the join must not follow it.
    let child_write = json!([w(
        json!({"op": "write", "path": "evil", "content": "pwned"})
    )]);
    let ops = json!([{"spawn_wait": {"description": "writer", "input": child_write.to_string(), "tools": ["workspace"]}}]);
    let (report, _) = run_scripted(&host, ops, opts()).await;
    assert_eq!(report.status, Status::Failed, "{report:?}");
    let err = report.error.unwrap_or_default();
    assert!(err.contains("leaves the workspace"), "{err}");

    assert!(!outside.join("c.txt").exists(), "created through a symlink");
    assert!(!outside.join("new.txt").exists());
    assert!(!dir.join("x.txt").exists());
    assert_eq!(
        std::fs::read_to_string(outside.join("secret.txt")).unwrap(),
        "top secret"
    );
    // The host still serves the workspace normally.
    let (report, results) = run_scripted(
        &host,
        json!([w(
            json!({"op": "write", "path": "ok.txt", "content": "fine"})
        )]),
        opts(),
    )
    .await;
    assert_eq!(report.status, Status::Completed, "{report:?} {results:?}");
    assert_eq!(std::fs::read_to_string(ws.join("ok.txt")).unwrap(), "fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_fetch_allows_only_listed_public_hosts() {
    let server = FakeServer::start(vec![FakeResponse::text(200, "hello from the fake")]).await;
    let url = format!("{}/page", server.url());
    let fetch = |u: &str| json!({"tool": {"name": "http_fetch", "args": {"url": u}}});
    let ops = json!([
        fetch(&url),
        fetch("http://example.invalid/"),
        fetch("file:///etc/passwd")
    ]);

    // Listed, but loopback: refused unless private addresses are allowed.
    let dir = TempDir::new("tools-http");
    let strict = host(&dir, "[tools]\nhttp_allow_hosts = [\"127.0.0.1\"]\n");
    let (_, results) = run_scripted(&strict, ops.clone(), grant(&["http_fetch"])).await;
    let err = results[0]["err"].as_str().unwrap();
    assert!(err.contains("Denied") && err.contains("private"), "{err}");
    assert!(
        results[1]["err"]
            .as_str()
            .unwrap()
            .contains("not on the allowlist")
    );
    assert!(results[2]["err"].as_str().unwrap().contains("Denied"));
    assert_eq!(server.requests().len(), 0, "nothing reached the server");

    let dir2 = TempDir::new("tools-http-open");
    let open = host(&dir2, ALLOW_LOCAL_HTTP);
    let (_, results) = run_scripted(&open, ops, grant(&["http_fetch"])).await;
    let body: serde_json::Value = serde_json::from_str(results[0]["ok"].as_str().unwrap()).unwrap();
    assert_eq!(body["status"], 200);
    assert_eq!(body["body"], "hello from the fake");
    assert_eq!(server.requests()[0].method, "GET");
}

/// IP literals that name a private address in another form: each is refused before any
/// connection, with the reason and the config key in the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_fetch_refuses_private_addresses_in_every_form() {
    let cases = [
        ("[::127.0.0.1]", "IPv4-compatible"),
        ("[::ffff:127.0.0.1]", "IPv4-mapped"),
        ("[64:ff9b::7f00:1]", "NAT64"),
        ("[64:ff9b::a9fe:a9fe]", "cloud metadata"),
        ("[2002:7f00:1::]", "6to4"),
        ("[2001:0:4136:e378:8000:63bf:3fff:fdd2]", "Teredo"),
        ("[fec0::1]", "site-local"),
        ("[fd00::1]", "unique-local"),
        ("[fe80::1]", "link-local"),
        ("[::1]", "loopback"),
        ("169.254.169.254", "cloud metadata"),
        ("100.64.0.1", "CGNAT"),
        ("198.18.0.1", "benchmarking"),
        ("240.0.0.1", "reserved"),
        ("192.0.0.8", "IETF protocol assignments"),
        ("0.0.0.0", "this network"),
    ];
    let hosts: Vec<_> = cases.iter().map(|(h, _)| h.to_string()).collect();
    let config = format!(
        "[tools]\nhttp_allow_hosts = {}\n",
        serde_json::to_string(&hosts).unwrap()
    );
    let ops: Vec<_> = cases
        .iter()
        .map(|(h, _)| json!({"tool": {"name": "http_fetch", "args": {"url": format!("http://{h}:9/")}}}))
        .collect();
    let dir = TempDir::new("tools-http-forms");
    let strict = host(&dir, &config);
    let (report, results) = run_scripted(&strict, json!(ops), grant(&["http_fetch"])).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    for ((h, reason), result) in cases.iter().zip(&results) {
        let err = result["err"]
            .as_str()
            .unwrap_or_else(|| panic!("{h}: {result}"));
        assert!(err.contains("Denied"), "{h}: {err}");
        assert!(err.contains(reason), "{h}: `{err}` should name `{reason}`");
        assert!(
            err.contains("[tools] http_allow_private"),
            "{h}: `{err}` should name the key"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granting_an_unknown_tool_or_workspace_without_dir_is_a_clear_error() {
    let (_dir, host) = temp_host("tools-bad-grant", "");
    let err = host
        .run_file(&example("hello"), "x", grant(&["rm_rf"]))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("unknown tool `rm_rf`"), "{err}");
    let err = host
        .run_file(&example("hello"), "x", grant(&["workspace"]))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("--workspace"), "{err}");
}
