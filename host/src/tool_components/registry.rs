//! The ledger's registry of installed tool components (`installed_tools`, bytes in
//! `blobs`): installing (the component checked against the `tool` world, described,
//! stored content-addressed), removing, and the tools a run gets from it.
//!
//! A run pins the builds it was granted ([`PinnedTool`], kept with the run's config),
//! so its resume, a fork or a recovery runs exactly those builds — read back from
//! `blobs` — even after a reinstall or a removal, saying so when the installed build
//! changed.

use super::component_tool::{ComponentTool, describe, effective_info};
use super::{Manifest, ToolRuntime};
use crate::ledger::installed_tools::{self, InstalledTool};
use crate::ledger::{Ledger, blobs};
use crate::tools::{BUILTIN_TOOLS, Tool, ToolInfo};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What `install` did.
#[derive(Clone, Debug, Serialize)]
pub struct Installed {
    pub name: String,
    /// SHA-256 hex of the component.
    pub hash: String,
    pub info: ToolInfo,
    pub manifest: Manifest,
    /// The build this one replaced under the same name, if another.
    pub replaced: Option<String>,
}

/// A component tool as a run uses it: the build, its manifest and description then.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PinnedTool {
    pub hash: String,
    pub manifest: Manifest,
    pub info: ToolInfo,
}

/// A run's pinned component tools, by granted name.
pub type Pins = BTreeMap<String, PinnedTool>;

/// The component tools of a run, and their pins.
pub type RunTools = (Vec<Arc<dyn Tool>>, Pins);

/// Check `bytes` against the `tool` world, describe the component and register it
/// under `name` (default: the name it gives itself) with `manifest`.
pub async fn install(
    ledger: &Ledger,
    runtime: &Arc<ToolRuntime>,
    bytes: Vec<u8>,
    name: Option<String>,
    manifest: Manifest,
) -> anyhow::Result<Installed> {
    manifest.validate()?;
    let hash = blobs::sha256_hex(&bytes);
    let pre = runtime.load(&hash, &bytes)?;
    // Deny by default, and say so now rather than at the first call: `kv.get` has no
    // error case, so an ungranted kv would fail each call that reads it.
    let imports = runtime.imports(&bytes, &hash)?;
    if imports.iter().any(|i| i.starts_with("agentflow:agent/kv")) && !manifest.grants.kv {
        anyhow::bail!(
            "the component imports the run's kv store, which its manifest does not grant \
             (add `[grants] kv = true` to the manifest, or pass --manifest)"
        );
    }
    // (HTTP needs no such check: without `http_hosts`, every request is refused with
    // the `HTTP-request-denied` error code the tool can handle.)
    let described = describe(runtime, &pre, &manifest).await?;
    let mut info = effective_info(described, &manifest)?;
    if let Some(n) = name {
        info.name = n;
    }
    check_name(&info.name)?;
    let row = InstalledTool {
        name: info.name.clone(),
        hash: hash.clone(),
        manifest_json: serde_json::to_string(&manifest)?,
        description_json: serde_json::to_string(&info)?,
        installed_at: 0,
    };
    let replaced = ledger.write(move |w| w.install_tool(&row, &bytes)).await?;
    Ok(Installed {
        name: info.name.clone(),
        hash,
        info,
        manifest,
        replaced,
    })
}

/// A name a tool may be installed under: not a built-in's, letters, digits, `_`, `-`.
fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        anyhow::bail!("`{name}` is not a tool name (1 to 64 letters, digits, `_` or `-`)");
    }
    if BUILTIN_TOOLS.contains(&name) {
        anyhow::bail!("`{name}` is a built-in tool's name: install it under another (--name)");
    }
    Ok(())
}

/// Remove tool `name` from the registry (runs that used it keep their build).
pub async fn remove(ledger: &Ledger, name: &str) -> anyhow::Result<()> {
    let owned = name.to_string();
    if !ledger.write(move |w| w.remove_tool(&owned)).await? {
        anyhow::bail!(
            "no tool component `{name}` is installed in {} (see `agentflow tools list`)",
            ledger.name()
        );
    }
    Ok(())
}

/// An installed row's manifest and description.
pub fn parse_row(row: &InstalledTool) -> anyhow::Result<(Manifest, ToolInfo)> {
    let manifest: Manifest = serde_json::from_str(&row.manifest_json)
        .map_err(|e| anyhow::anyhow!("installed tool `{}`: bad manifest: {e}", row.name))?;
    let info: ToolInfo = serde_json::from_str(&row.description_json)
        .map_err(|e| anyhow::anyhow!("installed tool `{}`: bad description: {e}", row.name))?;
    Ok((manifest, info))
}

/// The component tools a run with `grants` uses, and their pins. A name in `pinned`
/// (the run's record) runs that build; another granted name that is installed runs the
/// installed build and is pinned now. Built-in names and those in `skip` (tools the
/// host registered itself) are left to [`crate::tools::ToolSet::build`], as is a name
/// nothing provides (it reports it).
pub fn tools_for_run(
    ledger: &Ledger,
    runtime: &Arc<ToolRuntime>,
    grants: &[String],
    skip: &[String],
    pinned: &BTreeMap<String, PinnedTool>,
) -> anyhow::Result<RunTools> {
    let mut tools: Vec<Arc<dyn Tool>> = Vec::new();
    let mut pins = BTreeMap::new();
    let reader = ledger.reader()?;
    for name in grants {
        if BUILTIN_TOOLS.contains(&name.as_str()) || skip.contains(name) {
            continue;
        }
        let installed = installed_tools::get(&reader, name)?;
        let pin = match (pinned.get(name), installed) {
            (Some(pin), installed) => {
                let now = installed.as_ref().map(|r| r.hash.as_str());
                if now != Some(pin.hash.as_str()) {
                    tracing::warn!(
                        "tool `{name}`: this run uses build sha256:{} (recorded when it started); \
                         the installed build is {} — the run continues with its recorded build",
                        short(&pin.hash),
                        now.map_or("none (removed)".to_string(), |h| format!(
                            "now sha256:{}",
                            short(h)
                        ))
                    );
                }
                pin.clone()
            }
            (None, Some(row)) => {
                let (manifest, info) = parse_row(&row)?;
                PinnedTool {
                    hash: row.hash,
                    manifest,
                    info,
                }
            }
            (None, None) => continue,
        };
        let bytes = installed_tools::component(&reader, &pin.hash)?.ok_or_else(|| {
            anyhow::anyhow!(
                "tool `{name}`: build sha256:{} is missing from the ledger's blobs",
                short(&pin.hash)
            )
        })?;
        let tool = ComponentTool::new(
            runtime.clone(),
            &pin.hash,
            &bytes,
            pin.info.clone(),
            pin.manifest.clone(),
        )
        .map_err(|e| anyhow::anyhow!("tool `{name}`: {e:#}"))?;
        tools.push(Arc::new(tool));
        pins.insert(name.clone(), pin);
    }
    Ok((tools, pins))
}

/// The first 12 hex digits of a hash.
pub fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}
