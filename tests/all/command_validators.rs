//! Command validators (`[[validators]] kind = "command"`): an operator's program run on
//! the task's workspace view in a sandboxed subprocess — exit status to verdict, output
//! tail to reason and retry feedback; timeout (the whole process group killed), memory
//! limit, no network, scrubbed environment; never from a guest's spawn request.

use crate::support::cli::*;
use crate::support::*;
use agentflow::{RunOptions, Status};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The `validation.result` responses of a run, with the validator's name and task.
fn verdicts(host: &agentflow::Host, run: &str) -> Vec<(u64, String, Value)> {
    of_kind(&events(host, run), "validation.result")
        .into_iter()
        .map(|e| {
            let name = e.request["validator"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (e.task_id, name, e.response)
        })
        .collect()
}

/// The testwriter example's config with its paths made absolute, its validator
/// component the built one, and (if given) other mock rules.
fn testwriter_config(rules: Option<&std::path::Path>) -> String {
    let rules = rules
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| repo_path("examples/testwriter/mock-rules.toml"));
    std::fs::read_to_string(repo_path("examples/testwriter/agentflow.toml"))
        .unwrap()
        .replace(
            "\"examples/testwriter/mock-rules.toml\"",
            &format!("{:?}", rules.to_str().unwrap()),
        )
        .replace(
            "\"examples/testwriter/workspace\"",
            &format!(
                "{:?}",
                repo_path("examples/testwriter/workspace").to_str().unwrap()
            ),
        )
        .replace(
            "\"examples/assert-check\"",
            &format!("{:?}", example("assert-check").to_str().unwrap()),
        )
}

/// Why this machine cannot cut a command off the network (no root, no user
/// namespaces), if it cannot. There commands are not run: the network test checks that
/// refusal, the others are skipped.
fn without_isolation() -> Option<String> {
    let why = agentflow::checks::sandbox::net_isolation().err()?;
    eprintln!("no network namespaces on this machine ({why}): command validators are refused here");
    Some(why)
}

const INPUT: &str = "fn parse_port(s: &str) -> Option<u16>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_testwriter_example_compiles_and_runs_the_test_it_wrote() {
    if without_isolation().is_some() {
        return;
    }
    let (_dir, host) = temp_host("cmd-testwriter", &testwriter_config(None));
    let started = Instant::now();
    let report = host
        .run_file(&example("testwriter"), INPUT, RunOptions::default())
        .await
        .unwrap();
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let v = verdicts(&host, &report.run_id);
    let names: Vec<(&str, &str)> = v
        .iter()
        .map(|(_, n, r)| (n.as_str(), r["result"]["verdict"].as_str().unwrap()))
        .collect();
    // Attempt 1's assertless test is caught by assert-check; attempt 2's passes both,
    // and its test really ran (rustc, then the test binary).
    assert_eq!(
        names,
        [
            ("asserts", "fail"),
            ("asserts", "pass"),
            ("tests-run", "pass")
        ],
        "{v:?}"
    );
    let ran = &v[2].2;
    assert_eq!(ran["command"]["exit"], 0, "{ran}");
    assert!(
        ran["command"]["workspace_bytes"].as_u64().unwrap() > 100,
        "port.rs copied: {ran}"
    );
    let text = inspect_text(&host, &report.run_id);
    assert!(
        text.contains("✓ validator tests-run [semantic] pass"),
        "{text}"
    );
    eprintln!("testwriter with tests-run: {:?}", started.elapsed());
}

/// A test that fails (exit 101: semantic) and one that does not compile (exit 2:
/// syntactic, by `syntactic_exit_codes`): each fails its attempt with the end of the
/// output as the reason, and the model's next prompt carries it — the mock models
/// answer with a correct test only when the feedback quotes the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_test_fails_the_attempt_and_its_output_reaches_the_retry() {
    if without_isolation().is_some() {
        return;
    }
    let dir = TempDir::new("cmd-feedback");
    let good = "```rust\n#[test]\nfn ports() {\n    assert_eq!(parse_port(\"8080\"), Some(8080));\n    assert_eq!(parse_port(\"80a\"), None);\n}\n```";
    let rules = dir.file(
        "rules.toml",
        format!(
            r#"
[[rules]]
contains = "right: Some(80)"
reply = """{good}"""
[[rules]]
contains = "cannot find function `parse_prot`"
reply = """{good}"""
[[rules]]
contains = "for: fn typo"
reply = """```rust
#[test]
fn ports() {{ assert_eq!(parse_prot("1"), Some(1)); }}
```"""
[[rules]]
reply = """```rust
#[test]
fn ports() {{ assert_eq!(parse_port("80a"), Some(80)); }}
```"""
"#
        ),
    );
    let host = host(&dir, &testwriter_config(Some(&rules)));
    for (input, category, expected) in [
        (
            INPUT,
            "semantic",
            ["exited with status 101", "right: Some(80)"],
        ),
        (
            "fn typo",
            "syntactic",
            ["exited with status 2", "cannot find function `parse_prot`"],
        ),
    ] {
        let report = host
            .run_file(&example("testwriter"), input, RunOptions::default())
            .await
            .unwrap();
        assert_eq!(report.status, Status::Completed, "{input}: {report:?}");
        let v = verdicts(&host, &report.run_id);
        let failed = v
            .iter()
            .find(|(_, n, r)| n == "tests-run" && r["result"]["verdict"] == "fail")
            .unwrap_or_else(|| panic!("{input}: no failed tests-run: {v:?}"));
        let reason = failed.2["result"]["reason"].as_str().unwrap();
        assert_eq!(failed.2["category"], category, "{input}: {reason}");
        for e in expected {
            assert!(reason.contains(e), "{input}: {e:?} not in {reason}");
        }
        assert_eq!(v.last().unwrap().2["result"]["verdict"], "pass", "{v:?}");
        // The retried attempt's prompt quoted the output.
        let llm = of_kind(&events(&host, &report.run_id), "llm.complete");
        assert_eq!(llm.len(), 2, "{input}");
        assert!(
            llm[1].request.to_string().contains(expected[1]),
            "{input}: {}",
            llm[1].request
        );
    }
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(marker))
        .collect()
}

/// A config with one command validator for the `scripted` agent.
fn command_config(entry: &str) -> String {
    format!(
        "[[validators]]\nname = \"cmd\"\nkind = \"command\"\nagents = [\"scripted\"]\n{entry}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_past_its_timeout_is_killed_with_every_process_it_started() {
    if without_isolation().is_some() {
        return;
    }
    // A background sleep and a foreground one, both in the command's process group.
    let marker = "30.0417";
    let (_dir, host) = temp_host(
        "cmd-timeout",
        &command_config(&format!(
            "command = [\"sh\", \"-c\", \"echo started; sleep {marker} & sleep {marker}\"]\ntimeout_ms = 500"
        )),
    );
    let started = Instant::now();
    let (report, _) = run_scripted(&host, json!([{"log": "x"}]), RunOptions::default()).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.status, Status::Failed, "{report:?}");
    let err = report.error.unwrap();
    assert!(
        err.contains("timed out after 500 ms (`timeout_ms`); its processes were killed")
            && err.contains("started"),
        "{err}"
    );
    let v = verdicts(&host, &report.run_id);
    assert_eq!(v[0].2["command"]["exit"], "timeout", "{v:?}");
    let deadline = Instant::now() + Duration::from_secs(3);
    while !processes_with(marker).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(processes_with(marker), Vec::<String>::new(), "left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_past_its_memory_limit_fails() {
    if without_isolation().is_some() {
        return;
    }
    let allocate = "command = [\"perl\", \"-e\", \"$x = 'a' x (300 << 20); print length $x\"]";
    let (_dir, host) = temp_host(
        "cmd-memory",
        &command_config(&format!("{allocate}\nmemory_mb = 64")),
    );
    let (report, _) = run_scripted(&host, json!([{"log": "x"}]), RunOptions::default()).await;
    assert_eq!(report.status, Status::Failed, "{report:?}");
    let err = report.error.unwrap();
    assert!(
        err.contains("Out of memory") && err.contains("the memory limit is 64 MiB"),
        "{err}"
    );
    // The same command within a larger limit passes: the limit made the difference.
    let (_dir, roomy) = temp_host(
        "cmd-memory-ok",
        &command_config(&format!("{allocate}\nmemory_mb = 2048")),
    );
    let (report, _) = run_scripted(&roomy, json!([{"log": "x"}]), RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_cannot_reach_the_network() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected");
    // The same command outside the sandbox does connect.
    let outside = std::process::Command::new("bash")
        .args(["-c", &connect])
        .output()
        .unwrap();
    assert!(outside.status.success(), "{outside:?}");
    let _ = listener.accept().expect("the control connection");
    let (_dir, host) = temp_host(
        "cmd-network",
        &command_config(&format!("command = [\"bash\", \"-c\", {connect:?}]")),
    );
    let (report, _) = run_scripted(&host, json!([{"log": "x"}]), RunOptions::default()).await;
    if let Some(why) = without_isolation() {
        // Not run at all rather than run with network: uncertain, with the reason.
        let v = verdicts(&host, &report.run_id);
        assert_eq!(v[0].2["result"]["verdict"], "uncertain", "{v:?}");
        let reason = v[0].2["result"]["reason"].as_str().unwrap();
        assert!(
            reason.contains("refusing to run a command validator with network access")
                && reason.contains(&why),
            "{reason}"
        );
    } else {
        assert_eq!(report.status, Status::Failed, "{report:?}");
        let err = report.error.unwrap();
        assert!(
            err.contains("exited with status 1") && err.contains("Network is unreachable"),
            "{err}"
        );
        assert!(!err.contains("\nconnected"), "{err}");
    }
    let accepted = listener.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the sandboxed command reached the listener: {accepted:?}"
    );
}

/// Through the CLI, so that the host's environment can carry a secret: the command
/// sees only PATH, HOME (a scratch directory), LANG, TMPDIR, the variables its `env`
/// lists and the AGENTFLOW_ files; the task's output is also its stdin.
#[test]
fn a_command_sees_a_scrubbed_environment() {
    if without_isolation().is_some() {
        return;
    }
    let dir = TempDir::new("cmd-env");
    let config = dir.file(
        "agentflow.toml",
        command_config(
            "command = [\"sh\", \"-c\", \"env | sort; echo stdin:; cat; exit 1\"]\nenv = [\"AGENTFLOW_TEST_ALLOWED\"]\noutput_tail_bytes = 8000",
        ),
    );
    let db = dir.ledger("env.db");
    let out = agentflow()
        .arg("run")
        .arg(example("scripted"))
        .args(["--input", r#"[{"log": "x"}]"#, "--config"])
        .arg(&config)
        .arg("--db")
        .arg(&db)
        .env("AGENTFLOW_TEST_SECRET", "hunter2")
        .env("AGENTFLOW_TEST_ALLOWED", "visible")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let host = host_at(&db).unwrap();
    let v = verdicts(&host, &only_run_id(&db));
    let reason = v[0].2["result"]["reason"].as_str().unwrap();
    let env: Vec<&str> = reason
        .lines()
        .skip_while(|l| !l.starts_with("AGENTFLOW_"))
        .take_while(|l| *l != "stdin:")
        .collect();
    let names: Vec<&str> = env.iter().map(|l| l.split('=').next().unwrap()).collect();
    assert_eq!(
        names,
        [
            "AGENTFLOW_INPUT",
            "AGENTFLOW_OUTPUT",
            "AGENTFLOW_TEST_ALLOWED",
            "HOME",
            "LANG",
            "PATH",
            "PWD",
            "TMPDIR"
        ],
        "{reason}"
    );
    assert!(
        reason.contains("AGENTFLOW_TEST_ALLOWED=visible"),
        "{reason}"
    );
    assert!(!reason.contains("hunter2"), "{reason}");
    assert!(
        env.iter()
            .any(|l| l.starts_with("HOME=") && l.ends_with("/home")),
        "{reason}"
    );
    assert!(
        reason.contains("stdin:\n["),
        "the output on stdin: {reason}"
    );
}

/// A child's command validator runs on the child's own view: the directory's files and
/// what the child wrote in its copy-on-write view, which the directory never sees when
/// the child fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_childs_command_runs_on_the_childs_view_of_the_workspace() {
    if without_isolation().is_some() {
        return;
    }
    let dir = TempDir::new("cmd-view");
    let ws = dir.join("ws");
    std::fs::create_dir_all(ws.join("sub")).unwrap();
    std::fs::write(ws.join("sub/base.txt"), "base-content\n").unwrap();
    let host = host(
        &dir,
        &format!(
            "[tools]\ngrant = [\"workspace\"]\nworkspace = {:?}\n{}",
            ws.to_str().unwrap(),
            command_config("command = [\"sh\", \"-c\", \"cat sub/base.txt notes.txt; exit 1\"]")
        ),
    );
    let write = json!([{"tool": {"name": "workspace",
        "args": {"op": "write", "path": "notes.txt", "content": "child-wrote\n"}}}]);
    let ops = json!([{"spawn_wait": {"description": "writer", "input": write.to_string()}}]);
    let (report, _) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Failed, "{report:?}");
    let v = verdicts(&host, &report.run_id);
    let reason = |task: u64| {
        v.iter()
            .find(|(t, _, _)| *t == task)
            .map(|(_, _, r)| r["result"]["reason"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("task {task} not validated: {v:?}"))
    };
    let child = reason(2);
    assert!(child.contains("base-content\nchild-wrote"), "{child}");
    let root = reason(1);
    assert!(
        root.contains("base-content") && !root.contains("child-wrote"),
        "the failed child's write stayed in its view: {root}"
    );
    assert!(!ws.join("notes.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_ask_for_a_command_validator() {
    let (_dir, host) = temp_host("cmd-guest", "");
    let ops = json!([
        {"spawn": {"description": "agent-chosen command", "input": "",
                   "validators": [{"kind": "command", "command": ["sh", "-c", "touch /tmp/pwned"]}]}},
    ]);
    let (report, results) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let e = results[0]["err"].as_str().unwrap();
    assert!(
        e.contains("InvalidRequest")
            && e.contains("kind `command` can only be configured by the operator"),
        "{e}"
    );
    assert_eq!(
        tasks(&host, &report.run_id).len(),
        1,
        "no child was created"
    );
}
