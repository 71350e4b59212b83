//! Building: agent crates given to `agentflow run` as directories (a crate of its own
//! builds into the shared target directory under the cache dir; a compile error is
//! shown as the compiler's first error), and the test suite itself staying warm (the
//! CLI tests' binary is the test build's, so nothing is compiled again for it).

use crate::support::cli::*;
use crate::support::*;
use std::path::{Path, PathBuf};

/// A copy of the `hello` example as a crate of its own named `name` in `dir` (its own
/// workspace, the SDK by absolute path, the examples' lock file so nothing is
/// resolved anew), with `extra` appended to its source.
fn agent_crate(dir: &TempDir, name: &str, extra: &str) -> PathBuf {
    let root = dir.join(name);
    std::fs::create_dir_all(root.join("src")).unwrap();
    let sdk = repo_path("guest-sdk").canonicalize().unwrap();
    std::fs::write(
        root.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nagentflow-sdk = {{ path = {:?} }}\n\
             serde = {{ version = \"1\", features = [\"derive\"] }}\nserde_json = \"1\"\n\n\
             [profile.release]\nopt-level = \"s\"\ndebug = false\nstrip = true\n\n\
             # Its own workspace (it sits inside this repository's target directory).\n[workspace]\n",
            sdk.to_str().unwrap()
        ),
    )
    .unwrap();
    std::fs::copy(repo_path("examples/Cargo.lock"), root.join("Cargo.lock")).unwrap();
    let source = std::fs::read_to_string(repo_path("examples/hello/src/lib.rs")).unwrap();
    std::fs::write(root.join("src/lib.rs"), format!("{source}\n{extra}\n")).unwrap();
    root
}

/// `agentflow run <crate>` with the cache directory `cache`.
fn run_crate(dir: &Path, cache: &Path, db: &Path) -> std::process::Output {
    agentflow()
        .env("AGENTFLOW_CACHE_DIR", cache)
        .env_remove("CARGO_TARGET_DIR")
        .arg("run")
        .arg(dir)
        .args(["--input", "crate", "--db"])
        .arg(db)
        .output()
        .unwrap()
}

/// Two agent crates outside `examples/` build into `<cache>/target`: the second
/// compiles only itself, not the SDK and its dependencies again.
#[test]
fn agent_crates_share_one_target_directory() {
    let dir = TempDir::new("build-shared");
    let cache = cache_dir().join("shared-target-test");
    let first = agent_crate(&dir, "first-agent", "");
    let out = run_crate(&first, &cache, &dir.ledger("a.db"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Greet crate"), "{}", stdout(&out));
    assert!(
        !first.join("target").exists(),
        "built in the crate's own target/"
    );
    let wasm = cache.join("target/wasm32-wasip2/release/first_agent.wasm");
    assert!(wasm.exists(), "{} was built", wasm.display());

    let second = agent_crate(&dir, "second-agent", "");
    let out = run_crate(&second, &cache, &dir.ledger("b.db"));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let compiled: Vec<&str> = err.lines().filter(|l| l.contains("Compiling ")).collect();
    assert!(
        compiled.iter().all(|l| l.contains("second-agent")),
        "only the new crate compiles: {compiled:?}"
    );
    assert!(!second.join("target").exists());
}

/// A crate that does not compile: the error is the compiler's first error, not a
/// guess about the target.
#[test]
fn a_compile_error_shows_the_compilers_first_error() {
    let dir = TempDir::new("build-error");
    let cache = cache_dir().join("shared-target-test");
    let broken = agent_crate(
        &dir,
        "broken-agent",
        "fn broken() -> u32 {\n    \"not a number\"\n}",
    );
    let out = run_crate(&broken, &cache, &dir.ledger("e.db"));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let last = err.trim().lines().last().unwrap();
    assert!(
        last.starts_with("agentflow: error: building")
            && last.contains("failed: error[E0308]: mismatched types (src/lib.rs:"),
        "{err}"
    );
    assert!(!last.contains("target installed"), "{last}");
    // The compiler's full report is shown too, as rustc renders it.
    assert!(err.contains("expected `u32`, found `&str`"), "{err}");
}

/// The CLI tests take the binary from the test build itself: asking for it compiles
/// nothing more, and the binary is there and current.
#[test]
fn the_cli_binary_comes_from_the_test_build() {
    let build = || {
        let out = test_build().output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stderr(&out)
    };
    build(); // compiles what this test run did not (when started for one package)
    let again = build();
    let compiled: Vec<&str> = again.lines().filter(|l| l.contains("Compiling ")).collect();
    assert!(compiled.is_empty(), "rebuilt: {compiled:?}");
    let out = agentflow().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("agentflow "),
        "{out:?}"
    );
}
