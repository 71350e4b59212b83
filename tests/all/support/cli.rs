//! Running the `agentflow` binary: built once, pointed at the test component cache;
//! its output as text or JSON; polling its listings and resuming through it.

use super::{cache_dir, example, only_run_id};
use serde_json::Value;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

/// The `agentflow` binary of the test build, for these tests.
pub fn agentflow() -> Command {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    let bin = BIN.get_or_init(|| {
        let status = test_build().status().expect("cargo test --no-run");
        assert!(status.success());
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../debug/agentflow")
    });
    let mut cmd = Command::new(bin);
    cmd.env("AGENTFLOW_CACHE_DIR", cache_dir());
    cmd
}

/// `cargo test --workspace --no-run`: the test build, which builds the `agentflow`
/// binary (for the host's own integration tests) with the workspace's unified features.
/// Under `cargo test --workspace` it is fresh already and compiles nothing; `cargo
/// build -p agentflow` would resolve features without the test crates'
/// dev-dependencies and recompile most of the tree (minutes on 2 cores).
pub fn test_build() -> Command {
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--no-run"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    cmd
}

/// The variables cargo sets for a test it runs (the package's and its build script's),
/// which a shell does not have.
const SET_BY_CARGO_TEST: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

/// A `cargo` command with the environment of the shell that ran `cargo test`: without
/// the variables cargo set for this test. Build scripts watch some of them (ring's
/// `rerun-if-env-changed=CARGO_PKG_NAME`, `OUT_DIR`, …), so a nested build that saw
/// them would rebuild ring, rustls, reqwest and the host, and the next `cargo test`
/// would rebuild them all again.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if SET_BY_CARGO_TEST.contains(&name)
            || name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_EXE_")
        {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// `agentflow ARGS --db DB`, run to completion.
pub fn agentflow_on(db: &Path, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Output {
    agentflow().args(args).arg("--db").arg(db).output().unwrap()
}

/// The command `agentflow run <example AGENT> ARGS --db DB`.
fn example_command(
    db: &Path,
    agent: &str,
    args: impl IntoIterator<Item = impl AsRef<OsStr>>,
) -> Command {
    let mut command = agentflow();
    command
        .arg("run")
        .arg(example(agent))
        .args(args)
        .arg("--db")
        .arg(db);
    command
}

/// `agentflow run <example AGENT> ARGS --db DB`, run to completion.
pub fn run_example(
    db: &Path,
    agent: &str,
    args: impl IntoIterator<Item = impl AsRef<OsStr>>,
) -> Output {
    example_command(db, agent, args).output().unwrap()
}

/// `agentflow run <example AGENT> ARGS --db DB` started in the background, its output
/// discarded.
pub fn spawn_example(
    db: &Path,
    agent: &str,
    args: impl IntoIterator<Item = impl AsRef<OsStr>>,
) -> Child {
    example_command(db, agent, args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The command's stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The command's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The command's stdout parsed as JSON (panics with both streams if it is not).
pub fn stdout_json(o: &Output) -> Value {
    let text = stdout(o);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {text} / {}", stderr(o)))
}

/// Poll `agentflow <listing> --json --db DB` (approvals, conflicts, reviews) until it
/// lists something; `Null` if nothing came within 20 s.
pub fn wait_for_listing(listing: &str, db: &Path) -> Value {
    for _ in 0..400 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let out = agentflow_on(db, [listing, "--json"]);
        if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout)
            && v.as_array().is_some_and(|a| !a.is_empty())
        {
            return v;
        }
    }
    Value::Null
}

/// Resume the ledger's only run with `agentflow resume --json`; the report, after
/// checking the command succeeded.
pub fn resume_only_run(db: &Path, config: &Path) -> Value {
    let run_id = only_run_id(db);
    let resumed = agentflow()
        .args(["resume", &run_id, "--json", "--db"])
        .arg(db)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    serde_json::from_slice(&resumed.stdout).unwrap()
}
