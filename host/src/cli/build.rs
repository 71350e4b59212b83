//! Agents and validators given as Rust crate directories: built for `wasm32-wasip2`
//! with cargo, so that `agentflow run` takes a crate as readily as a `.wasm` component.
//!
//! Cargo reports its progress on the process's stderr and the compiler's diagnostics
//! come back as JSON, printed as rustc renders them; a failed build's error is the
//! compiler's first error. A crate that is a workspace of its own (one made with
//! `cargo new`) builds into one shared target directory under the cache directory
//! (`<cache>/target`), so the SDK's dependencies are compiled once per machine, not
//! once per agent; a member of a larger workspace (`examples/`) builds in its
//! workspace's target directory, and `CARGO_TARGET_DIR` or a cargo config's
//! `build.target-dir` win over both.

use agentflow::checks::ValidatorConfig;
use anyhow::{Context, bail};
use cargo_metadata::Message;
use cargo_metadata::diagnostic::{Diagnostic, DiagnosticLevel};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The component to run for `agent`: the file itself, or what building the crate
/// directory produced.
pub fn component(agent: PathBuf, cache_dir: &Path) -> anyhow::Result<PathBuf> {
    if agent.is_dir() {
        build_agent_crate(&agent, cache_dir)
    } else {
        Ok(agent)
    }
}

/// Validator components given as crate directories are built like agents.
pub fn build_validator_crates(
    validators: &mut [ValidatorConfig],
    cache_dir: &Path,
) -> anyhow::Result<()> {
    for v in validators {
        if let Some(component) = v.component_mut()
            && Path::new(component).is_dir()
        {
            *component = build_agent_crate(Path::new(component), cache_dir)?
                .display()
                .to_string();
        }
    }
    Ok(())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// `cargo`, without the variables `cargo run` sets for the binary it runs (the quick
/// start runs `agentflow` that way): build scripts may watch them
/// (`rerun-if-env-changed`), and an installed `agentflow` would then rebuild what
/// `cargo run -p agentflow` built, and back.
fn cargo_command() -> Command {
    let mut command = Command::new(cargo());
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "OUT_DIR",
            ]
            .contains(&name)
        {
            command.env_remove(name);
        }
    }
    command
}

/// Build an agent crate for wasm32-wasip2 and return the component's path.
pub fn build_agent_crate(dir: &Path, cache_dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.exists() {
        bail!(
            "{} is a directory without Cargo.toml: pass a .wasm file or a crate directory",
            dir.display()
        );
    }
    eprintln!("agentflow: building {} for wasm32-wasip2 …", dir.display());
    let mut command = cargo_command();
    command
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json",
            "--manifest-path",
        ])
        .arg(&manifest);
    if let Some(target_dir) = shared_target_dir(&manifest, cache_dir) {
        command.arg("--target-dir").arg(target_dir);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot run cargo")?;
    let stdout = child.stdout.take().context("cargo's stdout")?;
    // The component is the `.wasm` that cargo reports for this crate's artifact.
    let local = manifest.canonicalize().ok();
    let mut found = None;
    let mut first_error = None;
    for message in Message::parse_stream(BufReader::new(stdout)) {
        match message.context("cannot read cargo's build messages")? {
            Message::CompilerMessage(m) => {
                if let Some(rendered) = &m.message.rendered {
                    eprint!("{rendered}");
                }
                if first_error.is_none() && is_error(&m.message) {
                    first_error = Some(headline(&m.message));
                }
            }
            Message::CompilerArtifact(artifact) => {
                if artifact.manifest_path.as_std_path().canonicalize().ok() != local {
                    continue;
                }
                if let Some(wasm) = artifact
                    .filenames
                    .into_iter()
                    .rfind(|f| f.extension() == Some("wasm"))
                {
                    found = Some(wasm.into_std_path_buf());
                }
            }
            _ => {}
        }
    }
    let status = child.wait().context("cargo did not finish")?;
    if !status.success() {
        match first_error {
            Some(error) => bail!("building {} failed: {error}", dir.display()),
            None => bail!(
                "cargo could not build {} (its error is above)",
                dir.display()
            ),
        }
    }
    found.ok_or_else(|| {
        anyhow::anyhow!(
            "cargo built {} but produced no .wasm (is it a cdylib?)",
            dir.display()
        )
    })
}

fn is_error(d: &Diagnostic) -> bool {
    matches!(d.level, DiagnosticLevel::Error | DiagnosticLevel::Ice)
}

/// A compiler error on one line, as rustc starts it (`error[E0425]: cannot find value
/// `x` in this scope`) with where (`src/lib.rs:5:9`); a missing guest target adds how
/// to install it.
fn headline(d: &Diagnostic) -> String {
    let first = d
        .rendered
        .as_deref()
        .and_then(|r| r.lines().next())
        .map(str::to_string)
        .unwrap_or_else(|| format!("error: {}", d.message));
    let mut line = match d.spans.iter().find(|s| s.is_primary) {
        Some(s) => format!(
            "{first} ({}:{}:{})",
            s.file_name, s.line_start, s.column_start
        ),
        None => first,
    };
    let target_missing = d.code.as_ref().is_some_and(|c| c.code == "E0463")
        && d.message.contains("`core`")
        || d.children
            .iter()
            .any(|c| c.message.contains("target may not be installed"));
    if target_missing {
        line.push_str(" — is the target installed? run `rustup target add wasm32-wasip2`");
    }
    line
}

/// The shared target directory for a crate that is a workspace of its own and would
/// otherwise build in its own `target/`; `None` (cargo decides) for a member of a
/// larger workspace, or when `CARGO_TARGET_DIR` or a cargo config names a target
/// directory, or when cargo cannot read the manifest (the build then says why).
fn shared_target_dir(manifest: &Path, cache_dir: &Path) -> Option<PathBuf> {
    if std::env::var_os("CARGO_TARGET_DIR").is_some() {
        return None;
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .cargo_path(cargo())
        .manifest_path(manifest)
        .no_deps()
        .exec()
        .ok()?;
    let root = metadata.workspace_root.as_std_path();
    let own_workspace = manifest.parent()?.canonicalize().ok()? == root.canonicalize().ok()?;
    let default_target = metadata.target_directory.as_std_path() == root.join("target");
    (own_workspace && default_target).then(|| cache_dir.join("target"))
}
