//! The `agentflow` binary answers `--version` and `--help`.
//!
//! Also why this file exists: a package's integration tests make `cargo test` build its
//! binaries, so `cargo test --workspace` leaves `target/debug/agentflow` built with the
//! workspace's unified features. The end-to-end tests (`tests/all/support/cli.rs`) run
//! that binary; building it with `cargo build -p agentflow` instead resolved features
//! without the test crates' dev-dependencies and recompiled most of the tree.

use std::process::Command;

fn agentflow(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agentflow"))
        .args(args)
        .output()
        .expect("run the agentflow binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn version_names_the_package_version() {
    let (ok, out) = agentflow(&["--version"]);
    assert!(ok);
    assert_eq!(
        out.trim(),
        format!("agentflow {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_the_main_commands() {
    let (ok, out) = agentflow(&["--help"]);
    assert!(ok, "{out}");
    for command in ["run", "resume", "inspect", "runs", "tools", "serve"] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(command)),
            "`{command}` in:\n{out}"
        );
    }
}
