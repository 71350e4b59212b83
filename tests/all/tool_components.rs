//! Tool components (world `tool`): installed on a ledger with `agentflow tools
//! install`, listed and removed; called by agents through the recorded path with their
//! build; run in stores of their own under their manifest's limits and grants.

use crate::support::cli::{agentflow_on, stderr, stdout, stdout_json};
use crate::support::*;
use agentflow::tool_components::{Manifest, registry};
use agentflow::{Host, RunOptions, Status};
use serde_json::{Value, json};
use std::path::Path;

/// The probe tool component (`examples/tools/probe-tool`).
fn probe() -> std::path::PathBuf {
    example("probe-tool")
}

/// The SHA-256 of a file, as the registry keys it.
fn sha256_of(path: &Path) -> String {
    agentflow::ledger::blobs::sha256_hex(&std::fs::read(path).unwrap())
}

/// Install the probe on `host`'s ledger with the manifest `toml`.
async fn install_probe(host: &Host, toml: &str) -> registry::Installed {
    let manifest: Manifest = toml::from_str(toml).expect("test manifest");
    let runtime = host.tool_runtime().unwrap();
    registry::install(
        host.ledger(),
        &runtime,
        std::fs::read(probe()).unwrap(),
        None,
        manifest,
    )
    .await
    .expect("install probe")
}

/// A scripted op calling the probe with `args`.
fn probe_op(args: Value) -> Value {
    json!({"tool": {"name": "probe", "args": args}})
}

#[test]
fn install_list_and_remove_through_the_cli() {
    let dir = TempDir::new("tools-cli");
    let db = dir.ledger("ledger.db");
    let manifest = dir.file(
        "probe.toml",
        "[grants]\nkv = true\n[limits]\ntimeout_ms = 2000\n",
    );
    let hash = sha256_of(&probe());

    let out = agentflow_on(
        &db,
        [
            "tools".as_ref(),
            "install".as_ref(),
            probe().as_os_str(),
            "--manifest".as_ref(),
            manifest.as_os_str(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("installed tool `probe`") && text.contains(&hash[..12]),
        "{text}"
    );

    // The same build again, renamed, with a stricter class.
    let strict = dir.file(
        "strict.toml",
        "side_effect = \"irreversible\"\n[grants]\nkv = true\n",
    );
    let out = agentflow_on(
        &db,
        [
            "tools".as_ref(),
            "install".as_ref(),
            probe().as_os_str(),
            "--name".as_ref(),
            "probe2".as_ref(),
            "--manifest".as_ref(),
            strict.as_os_str(),
            "--json".as_ref(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout_json(&out)["name"], "probe2");

    let listed = stdout_json(&agentflow_on(&db, ["tools", "list", "--json"]));
    let rows = listed.as_array().unwrap();
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {listed}"))
            .clone()
    };
    for builtin in ["kv", "workspace", "http_fetch", "cloud", "git"] {
        assert_eq!(row(builtin)["source"], "builtin");
    }
    let p = row("probe");
    assert_eq!(p["source"], "component");
    assert_eq!(p["side_effect"], "idempotent");
    assert_eq!(p["version"], format!("sha256:{hash}"));
    assert_eq!(p["grants"], "kv");
    assert_eq!(row("probe2")["side_effect"], "irreversible");

    let text = stdout(&agentflow_on(&db, ["tools", "list"]));
    let line = text.lines().find(|l| l.starts_with("probe ")).unwrap();
    assert!(
        line.contains("component") && line.contains("idempotent") && line.contains(&hash[..12]),
        "{text}"
    );
    // The component is stored content-addressed in the ledger itself.
    let stored: i64 = sql(
        &db,
        &format!("SELECT size FROM blobs WHERE hash = '{hash}'"),
    );
    assert_eq!(stored as u64, std::fs::metadata(probe()).unwrap().len());

    let out = agentflow_on(&db, ["tools", "remove", "probe"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = stdout_json(&agentflow_on(&db, ["tools", "list", "--json"]));
    assert!(
        !listed
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "probe"),
        "{listed}"
    );
    let again = agentflow_on(&db, ["tools", "remove", "probe"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("no tool component `probe` is installed"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn wrong_components_and_manifests_are_refused_with_clear_errors() {
    let dir = TempDir::new("tools-refused");
    let db = dir.ledger("ledger.db");
    let install = |file: &Path, extra: &[&str]| {
        let mut args: Vec<std::ffi::OsString> = vec!["tools".into(), "install".into(), file.into()];
        args.extend(extra.iter().map(Into::into));
        agentflow_on(&db, args)
    };
    let expect_error = |out: std::process::Output, wanted: &str| {
        assert!(!out.status.success(), "accepted: {}", stdout(&out));
        let err = stderr(&out);
        assert!(err.contains(wanted), "wanted `{wanted}` in: {err}");
    };
    // An agent is not a tool.
    expect_error(
        install(&example("hello"), &[]),
        "does not fit the agentflow:agent/tool world",
    );
    // A file that is no WebAssembly at all.
    let garbage = dir.file("garbage.wasm", "this is not wasm");
    expect_error(install(&garbage, &[]), "not a WebAssembly file");
    // The probe imports kv: without the grant it is refused.
    expect_error(install(&probe(), &[]), "[grants] kv = true");
    // A manifest may only make the class stricter.
    let lax = dir.file("lax.toml", "side_effect = \"none\"\n[grants]\nkv = true\n");
    let lax = lax.to_str().unwrap();
    expect_error(install(&probe(), &["--manifest", lax]), "laxer");
    let bad = dir.file("bad.toml", "[grants]\nkv = true\nnetwork = true\n");
    expect_error(
        install(&probe(), &["--manifest", bad.to_str().unwrap()]),
        "unknown field `network`",
    );
    // Nothing was installed.
    let listed = stdout_json(&agentflow_on(&db, ["tools", "list", "--json"]));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["source"] == "builtin"),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_calls_an_installed_tool_and_the_call_is_recorded_with_its_build() {
    let (_dir, host) = temp_host("tools-component-call", "");
    let installed = install_probe(&host, "[grants]\nkv = true\n").await;
    let build = format!("sha256:{}", installed.hash);

    // Not granted: the agent cannot see or call it.
    let (report, results) = run_scripted(
        &host,
        json!([{"tools_list": null}, probe_op(json!({"op": "echo", "text": "hi"}))]),
        RunOptions::default(),
    )
    .await;
    assert_eq!(report.status, Status::Completed);
    assert_eq!(results[0], json!([]));
    assert!(
        results[1]["err"].as_str().unwrap().contains("Not"),
        "{results:?}"
    );

    let (report, results) = run_scripted(
        &host,
        json!([
            {"tools_list": null},
            probe_op(json!({"op": "echo", "text": "hi"})),
            probe_op(json!({"op": "fail"})),
            probe_op(json!({"op": "effects", "effects": [
                "{\"type\": \"APICall\", \"endpoint\": \"https://x.test/a\", \"method\": \"POST\", \"status\": 201}"
            ]})),
            probe_op(json!({"op": "effects", "effects": ["{\"type\": \"Teleported\"}"]})),
        ]),
        grant(&["probe"]),
    )
    .await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(results[0], json!(["probe"]));
    let echoed: Value = serde_json::from_str(results[1]["ok"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["text"], "hi");
    assert_eq!(echoed["run"], report.run_id.as_str());
    assert!(
        echoed["key"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/1/", report.run_id)),
        "{echoed}"
    );
    assert!(
        results[2]["err"].as_str().unwrap().contains("told to fail"),
        "{results:?}"
    );
    assert_eq!(results[3]["ok"], "ok");
    let malformed = results[4]["err"].as_str().unwrap();
    assert!(
        malformed.contains("malformed effect") && malformed.contains("Teleported"),
        "{malformed}"
    );

    let evs = events(&host, &report.run_id);
    let intents = of_kind(&evs, "tools.intent");
    let calls = of_kind(&evs, "tools.call");
    assert_eq!(intents.len(), 4, "an idempotent tool's calls have intents");
    assert_eq!(calls.len(), 4);
    for (intent, call) in intents.iter().zip(&calls) {
        assert!(intent.seq < call.seq);
        assert_eq!(intent.request["build"], build.as_str());
        assert_eq!(intent.request["side_effect"], "idempotent");
        assert_eq!(call.request["build"], build.as_str());
        assert_eq!(call.request["name"], "probe");
    }
    assert_eq!(
        calls[2].response["effects"],
        json!([{"type": "APICall", "endpoint": "https://x.test/a", "method": "POST", "status": 201}])
    );
    assert!(!calls[3].ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_tool_fails_only_its_own_call() {
    let (_dir, host) = temp_host("tools-hostile", "");
    install_probe(
        &host,
        "[grants]\nkv = true\n[limits]\nmemory_mb = 16\ntimeout_ms = 700\n",
    )
    .await;
    let started = std::time::Instant::now();
    let (report, results) = run_scripted(
        &host,
        json!([
            probe_op(json!({"op": "loop"})),
            probe_op(json!({"op": "bomb"})),
            probe_op(json!({"op": "trap"})),
            probe_op(json!({"op": "echo", "text": "still here"})),
        ]),
        grant(&["probe"]),
    )
    .await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let err = |i: usize| results[i]["err"].as_str().unwrap_or_default().to_string();
    assert!(
        err(0).contains("Failed") && err(0).contains("timed out after 700 ms"),
        "{results:?}"
    );
    assert!(err(1).contains("memory limit exceeded"), "{results:?}");
    assert!(
        err(2).contains("trapped") && err(2).contains("told to trap"),
        "{results:?}"
    );
    let echoed: Value = serde_json::from_str(results[3]["ok"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["text"], "still here");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_and_directory_grants_are_enforced() {
    let (dir, host) = temp_host("tools-grants", "");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("in.txt"), "from the host").unwrap();
    std::fs::write(dir.join("secret.txt"), "top secret").unwrap();

    // Read-only directory, kv granted.
    install_probe(
        &host,
        &format!(
            "[grants]\nkv = true\ndir = {:?}\n",
            data.display().to_string()
        ),
    )
    .await;
    let (report, results) = run_scripted(
        &host,
        json!([
            {"tool": {"name": "kv", "args": {"op": "put", "key": "colour", "value": "green"}}},
            probe_op(json!({"op": "kv_get", "key": "colour"})),
            probe_op(json!({"op": "kv_set", "key": "shape", "value": "round"})),
            {"tool": {"name": "kv", "args": {"op": "get", "key": "shape"}}},
            probe_op(json!({"op": "read", "path": "in.txt"})),
            probe_op(json!({"op": "write", "path": "out.txt", "content": "x"})),
            probe_op(json!({"op": "read", "path": "../secret.txt"})),
        ]),
        grant(&["kv", "probe"]),
    )
    .await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(results[1]["ok"], "\"green\"", "{results:?}");
    assert_eq!(results[2]["ok"], "\"ok\"", "{results:?}");
    assert_eq!(results[3]["ok"], "\"round\"", "{results:?}");
    assert_eq!(results[4]["ok"], "from the host", "{results:?}");
    assert!(
        results[5]["err"].as_str().unwrap().contains("cannot write"),
        "{results:?}"
    );
    assert!(!data.join("out.txt").exists());
    assert!(
        results[6]["err"].as_str().unwrap().contains("cannot read"),
        "{results:?}"
    );
    // The tool's kv write is recorded as an effect of its call.
    let calls = of_kind(&events(&host, &report.run_id), "tools.call");
    let kv_set = calls
        .iter()
        .find(|c| c.request["args"].as_str().unwrap().contains("kv_set"))
        .unwrap();
    assert_eq!(kv_set.response["effects"][0]["table"], "kv");

    // Read-write directory: the write lands, with its effect.
    let (_dir2, host2) = temp_host("tools-grants-rw", "");
    install_probe(
        &host2,
        &format!(
            "[grants]\nkv = true\nread_only = false\ndir = {:?}\n",
            data.display().to_string()
        ),
    )
    .await;
    let (report, results) = run_scripted(
        &host2,
        json!([probe_op(
            json!({"op": "write", "path": "out.txt", "content": "written"})
        )]),
        grant(&["probe"]),
    )
    .await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(results[0]["ok"], "\"written\"", "{results:?}");
    assert_eq!(
        std::fs::read_to_string(data.join("out.txt")).unwrap(),
        "written"
    );
    let call = first_event(&host2, &report.run_id, "tools.call");
    assert_eq!(call.response["effects"][0]["type"], "FileModified");
    assert_eq!(call.response["effects"][0]["path"], "/data/out.txt");

    // No directory granted: nothing to read.
    let (_dir3, host3) = temp_host("tools-grants-none", "");
    install_probe(&host3, "[grants]\nkv = true\n").await;
    let (_, results) = run_scripted(
        &host3,
        json!([probe_op(json!({"op": "read", "path": "in.txt"}))]),
        grant(&["probe"]),
    )
    .await;
    assert!(
        results[0]["err"].as_str().unwrap().contains("cannot read"),
        "{results:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_http_reaches_only_the_allowed_hosts() {
    use crate::support::fake_http::{FakeResponse, FakeServer};
    let server = FakeServer::start(vec![FakeResponse::text(200, "hello from the fake")]).await;
    let url = format!("{}/page", server.url());
    let port = url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let fetch = |u: &str| probe_op(json!({"op": "fetch", "url": u}));

    let (_dir, host) = temp_host("tools-http", "");
    install_probe(
        &host,
        "[grants]\nkv = true\nhttp_hosts = [\"127.0.0.1\"]\nhttp_allow_private = true\n",
    )
    .await;
    let (report, results) = run_scripted(
        &host,
        json!([
            fetch(&url),
            fetch(&format!("http://localhost:{port}/page")),
            fetch("http://example.com/"),
        ]),
        grant(&["probe"]),
    )
    .await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(results[0]["ok"], "200 hello from the fake", "{results:?}");
    for i in [1, 2] {
        assert!(
            results[i]["err"]
                .as_str()
                .unwrap()
                .contains("HttpRequestDenied"),
            "{results:?}"
        );
    }
    assert_eq!(server.requests().len(), 1);
    assert_eq!(server.requests()[0].path, "/page");

    // The host is listed, but it is a loopback address: refused by default.
    let (_dir2, host2) = temp_host("tools-http-private", "");
    install_probe(
        &host2,
        "[grants]\nkv = true\nhttp_hosts = [\"127.0.0.1\"]\n",
    )
    .await;
    let (_, results) = run_scripted(&host2, json!([fetch(&url)]), grant(&["probe"])).await;
    assert!(
        results[0]["err"]
            .as_str()
            .unwrap()
            .contains("DestinationIpProhibited"),
        "{results:?}"
    );
    assert_eq!(server.requests().len(), 1);
}
