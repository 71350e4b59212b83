//! MCP servers as tools (`[[tools.mcp]]`), against the reference server
//! `@modelcontextprotocol/server-everything` from the npm registry (`.ci/run` installs
//! it under `target/mcp-server`): its tools are granted and called as `server/tool`
//! by the `scripted` agent through the recorded path, refused outside the allow list,
//! replayed on resume without starting the server, restarted after the server died,
//! and stopped with the run. The stdio server is started through `sh`, which appends
//! its pid to a file before becoming the server (`exec`), so a test counts the starts
//! and checks the processes.

use crate::support::cli::*;
use crate::support::*;
use agentflow::Status;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn server_entry() -> PathBuf {
    agentflow_tests::mcp_everything()
        .unwrap_or_else(|| panic!("{}", agentflow_tests::mcp_everything_install_hint()))
}

/// A TOML string.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// `[[tools.mcp]]` server `ev`: the reference server over stdio, logging each start's
/// pid to `starts`; `rest` adds keys to the entry (`allow`, `effects`, …).
fn stdio_server(starts: &Path, rest: &str) -> String {
    let script = format!(
        "echo $$ >> '{}'; exec node '{}' stdio",
        starts.display(),
        server_entry().display()
    );
    format!(
        "[[tools.mcp]]\nname = \"ev\"\ncommand = \"sh\"\nargs = [\"-c\", {}]\n{rest}\n",
        quoted(&script)
    )
}

/// The pids the server was started with, in order.
fn starts(log: &Path) -> Vec<i32> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

/// `/proc/<pid>/stat`'s fields after the command name: state, ppid, pgrp, …
fn stat(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(String::from).collect())
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|f| f[0] != "Z")
}

/// Live processes in process group `group`.
fn group_members(group: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|f| f[0] != "Z" && f[2] == group.to_string()))
        .collect()
}

fn ok(text: &str) -> Value {
    json!({ "ok": text })
}

fn tool(name: &str, args: Value) -> Value {
    json!({ "tool": { "name": name, "args": args } })
}

#[tokio::test]
async fn echo_and_sum_are_recorded_an_error_fails_the_call_and_the_server_stops_with_the_run() {
    let dir = TempDir::new("mcp-calls");
    let log = dir.join("starts.log");
    let config = stdio_server(
        &log,
        "allow = [\"echo\", \"get-sum\"]\n[tools.mcp.effects]\necho = \"none\"",
    );
    let host = host(&dir, &config);
    let ops = json!([
        {"tools_list": null},
        tool("ev/echo", json!({"message": "hello mcp"})),
        tool("ev/get-sum", json!({"a": 2, "b": 40})),
        tool("ev/get-sum", json!({"a": "two", "b": 40})),
        tool("ev/get-env", json!({})),
    ]);
    let (report, results) = run_scripted(&host, ops, grant(&["ev/echo", "ev/get-sum"])).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(results[0], json!(["ev/echo", "ev/get-sum"]));
    assert_eq!(results[1], ok("Echo: hello mcp"));
    assert_eq!(results[2], ok("The sum of 2 and 40 is 42."));
    let invalid = results[3]["err"].as_str().unwrap();
    assert!(
        invalid.contains("Failed") && invalid.contains("Input validation error"),
        "{invalid}"
    );
    // Not in the allow list: no such tool for this run.
    let hidden = results[4]["err"].as_str().unwrap();
    assert!(
        hidden.contains("NotFound") && hidden.contains("ev/get-env"),
        "{hidden}"
    );

    let events = events(&host, &report.run_id);
    // The listing came from the server: its descriptions and schemas, the config's classes.
    let listed = &of_kind(&events, "tools.list")[0].response;
    assert_eq!(listed[0]["name"], "ev/echo");
    assert_eq!(listed[0]["description"], "Echoes back the input string");
    assert_eq!(
        listed[0]["args_schema"]["properties"]["message"]["type"],
        "string"
    );
    assert_eq!(listed[0]["side_effect"], "none");
    assert_eq!(listed[1]["side_effect"], "irreversible");
    // An intent before each (irreversible) get-sum call, none before the read-only echo.
    let intents = of_kind(&events, "tools.intent");
    assert_eq!(intents.len(), 2, "{intents:?}");
    for intent in &intents {
        assert_eq!(intent.request["name"], "ev/get-sum");
        assert_eq!(intent.request["side_effect"], "irreversible");
    }
    let calls = of_kind(&events, "tools.call");
    let names: Vec<&str> = calls
        .iter()
        .map(|c| c.request["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ev/echo", "ev/get-sum", "ev/get-sum", "ev/get-env"]);
    assert_eq!(calls[0].response, ok("Echo: hello mcp"));
    assert_eq!(calls[1].response, ok("The sum of 2 and 40 is 42."));
    assert!(!calls[2].ok);
    assert_eq!(calls[2].response["error_kind"], "failed");
    assert!(intents[1].seq < calls[2].seq && intents[0].seq < calls[1].seq);

    // Started once, for the listing; gone, with its process group, when the run ended.
    let pids = starts(&log);
    assert_eq!(pids.len(), 1, "{pids:?}");
    assert!(!alive(pids[0]), "the MCP server outlived its run");
    assert!(group_members(pids[0]).is_empty());
}

#[tokio::test]
async fn a_tool_outside_the_allow_list_cannot_be_granted_and_starts_nothing() {
    let dir = TempDir::new("mcp-refused");
    let log = dir.join("starts.log");
    let host = host(&dir, &stdio_server(&log, "allow = [\"echo\"]"));
    let err = host
        .run_file(&example("scripted"), "[]", grant(&["ev/get-env"]))
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("cannot grant `ev/get-env`") && msg.contains("does not expose `get-env`"),
        "{msg}"
    );
    assert!(starts(&log).is_empty());
    // An entry without an allow list is refused when the config is read.
    let no_allow = "[[tools.mcp]]\nname = \"ev\"\ncommand = \"node\"\n";
    let err = agentflow::HostConfig::from_toml(no_allow).unwrap_err();
    assert!(
        err.to_string().contains("none are exposed by default"),
        "{err}"
    );
}

#[tokio::test]
async fn a_killed_server_is_started_again_by_the_next_call() {
    let dir = TempDir::new("mcp-restart");
    let log = dir.join("starts.log");
    let host = host(&dir, &stdio_server(&log, "allow = [\"echo\"]"));
    let db = dir.ledger("ledger.db");
    // Kill the server once the first call's result is recorded, while the agent sleeps.
    let killer = {
        let (log, db) = (log.clone(), db.clone());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                let recorded = Some(crate::support::connect(&db)).and_then(|c| {
                    c.busy_timeout(std::time::Duration::from_secs(5)).ok()?;
                    c.query_row(
                        "SELECT count(*) FROM events WHERE kind = 'tools.call'",
                        [],
                        |r| r.get::<_, i64>(0),
                    )
                    .ok()
                });
                if recorded.unwrap_or(0) >= 1 {
                    let pid = starts(&log)[0];
                    // SAFETY: kill(2) on the server's pid.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return Some(pid);
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            None
        })
    };
    let ops = json!([
        tool("ev/echo", json!({"message": "one"})),
        {"sleep_ms": 2000},
        tool("ev/echo", json!({"message": "two"})),
    ]);
    let (report, results) = run_scripted(&host, ops, grant(&["ev/echo"])).await;
    let killed = killer.join().unwrap().expect("the first call was recorded");
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(results[0], ok("Echo: one"));
    assert_eq!(results[2], ok("Echo: two"));
    let pids = starts(&log);
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert_eq!(pids[0], killed);
    assert_ne!(pids[0], pids[1]);
    assert!(!alive(pids[1]), "the restarted server outlived its run");
}

#[test]
fn a_resumed_run_replays_mcp_results_without_starting_the_server() {
    let dir = TempDir::new("mcp-resume");
    let log = dir.join("starts.log");
    let db = dir.ledger("run.db");
    let config = dir.file(
        "agentflow.toml",
        stdio_server(&log, "allow = [\"echo\", \"get-sum\"]"),
    );
    let ops = json!([
        tool("ev/echo", json!({"message": "before the crash"})),
        tool("ev/get-sum", json!({"a": 1, "b": 2})),
        tool("kv", json!({"op": "put", "key": "k", "value": "v"})),
    ])
    .to_string();
    // The host dies once the kv put acted, before its result was recorded.
    let crashed = agentflow()
        .arg("run")
        .arg(example("scripted"))
        .args(["--input", &ops, "--json"])
        .args([
            "--grant",
            "ev/echo",
            "--grant",
            "ev/get-sum",
            "--grant",
            "kv",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--db")
        .arg(&db)
        .env("AGENTFLOW_CRASH_AT", "tool-effect")
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "{}", stderr(&crashed));
    let pids = starts(&log);
    assert_eq!(pids.len(), 1, "{pids:?}");
    // The dead host's server saw its stdin close and exited.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while alive(pids[0]) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        !alive(pids[0]),
        "the crashed host's MCP server is still running"
    );

    let report = resume_only_run(&db, &config);
    assert_eq!(report["status"], "completed", "{report}");
    let results: Vec<Value> = serde_json::from_str(report["output"].as_str().unwrap()).unwrap();
    assert_eq!(results[0], ok("Echo: before the crash"));
    assert_eq!(results[1], ok("The sum of 1 and 2 is 3."));
    assert_eq!(results[2], ok("\"ok\""));
    // Replayed from the ledger: the server was not started again, nor called twice.
    assert_eq!(starts(&log).len(), 1);
    let calls: i64 = sql(
        &db,
        "SELECT count(*) FROM events WHERE kind = 'tools.call' AND request LIKE '%\"ev/%'",
    );
    assert_eq!(calls, 2);
}

#[test]
fn env_references_reach_the_server_but_neither_the_ledger_nor_the_hosts_other_variables() {
    let dir = TempDir::new("mcp-env");
    let log = dir.join("starts.log");
    let db = dir.ledger("run.db");
    let config = dir.file(
        "agentflow.toml",
        stdio_server(
            &log,
            "allow = [\"get-env\"]\neffects = { get-env = \"none\" }\n\
             env = { MCP_TOKEN = \"${AGENTFLOW_TEST_MCP_SECRET}\" }",
        ),
    );
    let ops = json!([tool("ev/get-env", json!({}))]).to_string();
    let out = agentflow()
        .arg("run")
        .arg(example("scripted"))
        .args(["--input", &ops, "--json", "--grant", "ev/get-env"])
        .arg("--config")
        .arg(&config)
        .arg("--db")
        .arg(&db)
        .env("AGENTFLOW_TEST_MCP_SECRET", "s3cret-4711")
        .env("AGENTFLOW_TEST_HOST_ONLY", "host-only-value")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout_json(&out);
    let results: Vec<Value> = serde_json::from_str(report["output"].as_str().unwrap()).unwrap();
    let env: Value = serde_json::from_str(results[0]["ok"].as_str().unwrap()).unwrap();
    assert_eq!(env["MCP_TOKEN"], "s3cret-4711");
    assert!(env.get("AGENTFLOW_TEST_HOST_ONLY").is_none(), "{env}");
    assert!(env.get("PATH").is_some());
    let recorded: String = sql(&db, "SELECT config_json FROM runs");
    assert!(
        recorded.contains("${AGENTFLOW_TEST_MCP_SECRET}"),
        "{recorded}"
    );
    assert!(!recorded.contains("s3cret-4711"));
}

/// The reference server over streamable HTTP on a free port, killed on drop.
struct HttpServer {
    child: std::process::Child,
    port: u16,
}

impl HttpServer {
    fn start() -> HttpServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("node")
            .arg(server_entry())
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let server = HttpServer { child, port };
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("the streamable HTTP server did not listen on port {port}");
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_streamable_http_transport_serves_the_same_tools() {
    let server = HttpServer::start();
    let dir = TempDir::new("mcp-http");
    let config = format!(
        "[[tools.mcp]]\nname = \"web\"\nurl = \"http://127.0.0.1:{}/mcp\"\n\
         allow = [\"echo\", \"get-sum\"]\neffect = \"none\"\n",
        server.port
    );
    let host = host(&dir, &config);
    let ops = json!([
        {"tools_list": null},
        tool("web/echo", json!({"message": "over http"})),
        tool("web/get-sum", json!({"a": 20, "b": 22})),
    ]);
    let (report, results) = run_scripted(&host, ops, grant(&["web/echo", "web/get-sum"])).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(results[0], json!(["web/echo", "web/get-sum"]));
    assert_eq!(results[1], ok("Echo: over http"));
    assert_eq!(results[2], ok("The sum of 20 and 22 is 42."));
}

#[tokio::test]
async fn tool_rows_list_every_server_tool_with_its_class_and_whether_it_is_allowed() {
    let dir = TempDir::new("mcp-rows");
    let log = dir.join("starts.log");
    let config = agentflow::HostConfig::from_toml(&stdio_server(
        &log,
        "allow = [\"echo\", \"get-sum\", \"no-such-tool\"]\neffects = { echo = \"none\" }",
    ))
    .unwrap();
    let (rows, errors) = agentflow::mcp::tool_rows(&config.tools.mcp).await;
    let row = |name: &str| rows.iter().find(|r| r.name == name).unwrap();
    assert_eq!(
        row("ev/echo").side_effect,
        agentflow::tools::SideEffect::None
    );
    assert!(row("ev/echo").allowed);
    assert_eq!(row("ev/echo").source, "mcp:ev");
    assert_eq!(
        row("ev/get-sum").side_effect,
        agentflow::tools::SideEffect::Irreversible
    );
    assert!(!row("ev/get-env").allowed);
    assert!(!row("ev/get-env").description.is_empty());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("`no-such-tool`"), "{errors:?}");
    let pids = starts(&log);
    assert_eq!(pids.len(), 1);
    assert!(!alive(pids[0]));
}

/// `agentflow tools list --config`: the built-ins, the configured MCP server's tools
/// (exposed or not by its `allow`), and who the config's grants give each tool to.
#[test]
fn tools_list_with_a_config_shows_mcp_tools_and_who_is_granted_what() {
    let dir = TempDir::new("mcp-list-grants");
    let log = dir.join("starts.log");
    let config = format!(
        "[tools]\ngrant = [\"kv\"]\n\n[[tools.grants]]\nname = \"echo-hello\"\ntool = \"ev/*\"\n\
         agents = [\"writer\"]\nargs = {{ message = [\"hello*\"] }}\n\n{}",
        stdio_server(
            &log,
            "allow = [\"echo\", \"get-sum\"]\neffects = { echo = \"none\" }"
        )
    );
    let config_path = dir.file("agentflow.toml", &config);
    let db = dir.ledger("ledger.db");
    let config_arg = config_path.display().to_string();
    let out = agentflow_on(&db, ["tools", "list", "--json", "--config", &config_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = stdout_json(&out);
    let row = |name: &str| -> Value {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no row {name}: {rows}"))
    };
    let echo = row("ev/echo");
    assert_eq!(echo["source"], "mcp");
    assert_eq!(echo["side_effect"], "none");
    assert_eq!(
        echo["granted_to"],
        json!(["echo-hello: writer (message hello*)"]),
        "{echo}"
    );
    assert_eq!(row("ev/get-sum")["side_effect"], "irreversible");
    assert!(
        row("ev/get-env")["grants"]
            .as_str()
            .unwrap()
            .contains("cannot be granted"),
        "a tool outside `allow` is listed as such"
    );
    assert_eq!(row("kv")["granted_to"], json!(["grant kv: every agent"]));
    assert!(row("workspace").get("granted_to").is_none());
    // The table has the column too; the server was started for the listing and stopped.
    let text = agentflow_on(&db, ["tools", "list", "--config", &config_arg]);
    assert!(stdout(&text).contains("GRANTED TO"), "{}", stdout(&text));
    assert!(
        stdout(&text).contains("echo-hello: writer"),
        "{}",
        stdout(&text)
    );
    for pid in starts(&log) {
        assert!(!alive(pid), "server {pid} stopped after listing");
    }
}
