//! Agents and validators given as Rust crate directories: built for `wasm32-wasip2`
//! with cargo (which reports on the process's stderr), so that `agentflow run` takes
//! a crate as readily as a `.wasm` component.

use agentflow::checks::ValidatorConfig;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// The component to run for `agent`: the file itself, or what building the crate
/// directory produced.
pub fn component(agent: PathBuf) -> anyhow::Result<PathBuf> {
    if agent.is_dir() {
        build_agent_crate(&agent)
    } else {
        Ok(agent)
    }
}

/// Validator components given as crate directories are built like agents.
pub fn build_validator_crates(validators: &mut [ValidatorConfig]) -> anyhow::Result<()> {
    for v in validators {
        if let Some(component) = v.component_mut()
            && Path::new(component).is_dir()
        {
            *component = build_agent_crate(Path::new(component))?
                .display()
                .to_string();
        }
    }
    Ok(())
}

/// Build an agent crate for wasm32-wasip2 and return the component's path.
pub fn build_agent_crate(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.exists() {
        bail!(
            "{} is a directory without Cargo.toml: pass a .wasm file or an agent crate",
            dir.display()
        );
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("agentflow: building {} for wasm32-wasip2 …", dir.display());
    let output = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !output.status.success() {
        bail!(
            "building {} failed (is the target installed? run `rustup target add wasm32-wasip2`)",
            dir.display()
        );
    }
    // The component is the `.wasm` that cargo reports for this crate's artifact.
    let local = manifest.canonicalize().ok();
    let mut found = None;
    for message in cargo_metadata::Message::parse_stream(output.stdout.as_slice()) {
        let Ok(cargo_metadata::Message::CompilerArtifact(artifact)) = message else {
            continue;
        };
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
    found.ok_or_else(|| {
        anyhow::anyhow!(
            "cargo built {} but produced no .wasm (is it a cdylib?)",
            dir.display()
        )
    })
}
