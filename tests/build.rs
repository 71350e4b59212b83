//! Builds every example agent (`examples/`, its own cargo workspace) for
//! wasm32-wasip2 and tells the tests where the components are. Tests therefore
//! always run the current sources, never checked-in binaries.

use cargo_metadata::Message;
use cargo_metadata::camino::Utf8Path;
use std::collections::BTreeSet;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let examples = root.join("examples");
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"))
        .join("wasm-examples");
    // Not the whole `examples/` directory: building an example crate with `agentflow
    // run examples/<crate>` writes `examples/target`, which would rerun this script
    // (and relink every test) on the next `cargo test`.
    for dir in [
        "examples/Cargo.toml",
        "examples/Cargo.lock",
        "guest-sdk/src",
        "guest-sdk/Cargo.toml",
        "wit",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    // Each example crate (not `examples/target`, which has no Cargo.toml), and the tool
    // components under `examples/tools/`.
    let tools = std::fs::read_dir(examples.join("tools"))
        .into_iter()
        .flatten();
    for entry in std::fs::read_dir(&examples).unwrap().chain(tools).flatten() {
        if entry.path().join("Cargo.toml").is_file() {
            println!(
                "cargo:rerun-if-changed={}",
                entry.path().join("src").display()
            );
            println!(
                "cargo:rerun-if-changed={}",
                entry.path().join("Cargo.toml").display()
            );
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--manifest-path",
    ])
    .arg(examples.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir)
    .current_dir(&root);
    // Settings meant for the host build must not leak into the guest build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    // Cargo says where it put each component: no guessing of its target-dir layout.
    cmd.arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("cannot run cargo to build the example agents");
    let stdout = child.stdout.take().unwrap();
    let mut components = Vec::new();
    for message in Message::parse_stream(BufReader::new(stdout)) {
        if let Message::CompilerArtifact(artifact) =
            message.expect("cannot read cargo's build messages")
        {
            components.extend(
                artifact
                    .filenames
                    .into_iter()
                    .filter(|f| f.extension() == Some("wasm")),
            );
        }
    }
    let status = child.wait().expect("cargo did not finish");
    if !status.success() {
        panic!(
            "building the example agents for wasm32-wasip2 failed. If the target is missing, run:\n    \
             rustup target add wasm32-wasip2"
        );
    }
    // `tests/lib.rs` finds each example as `<crate>.wasm` in one directory.
    let dirs: BTreeSet<&Utf8Path> = components.iter().filter_map(|f| f.parent()).collect();
    let [out] = dirs.into_iter().collect::<Vec<_>>()[..] else {
        panic!("expected the example components in one directory, cargo reported {components:?}");
    };
    println!("cargo:rustc-env=AGENTFLOW_EXAMPLES_WASM_DIR={out}");
}
