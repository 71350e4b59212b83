//! Agents and validators given as Rust crate directories: built for `wasm32-wasip2`
//! with cargo (which reports on the process's stderr), so that `agentflow run` takes
//! a crate as readily as a `.wasm` component.

use crate::checks::ValidatorConfig;
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
        if let Some(dir) = v.component.as_deref().map(PathBuf::from)
            && dir.is_dir()
        {
            v.component = Some(build_agent_crate(&dir)?.display().to_string());
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
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut found = None;
    for line in stdout.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let is_local = msg["manifest_path"]
            .as_str()
            .map(|m| Path::new(m).canonicalize().ok() == manifest.canonicalize().ok())
            .unwrap_or(false);
        if !is_local {
            continue;
        }
        for f in msg["filenames"].as_array().into_iter().flatten() {
            if let Some(f) = f.as_str().filter(|f| f.ends_with(".wasm")) {
                found = Some(PathBuf::from(f));
            }
        }
    }
    found.ok_or_else(|| {
        anyhow::anyhow!(
            "cargo built {} but produced no .wasm (is it a cdylib?)",
            dir.display()
        )
    })
}
