//! A tool component's manifest (`agentflow-tool.toml`): what it is granted and the
//! limits each call runs under. Deny by default: an empty manifest grants nothing.
//!
//! ```toml
//! # Optional: a stricter side-effect class than the component declares.
//! side_effect = "irreversible"
//!
//! [grants]
//! dir = "/srv/tickets"     # preopened as /data in the tool (absolute, or relative to the manifest)
//! read_only = false        # the directory is read-only unless this is false
//! kv = true                # the run's kv store through the `kv` import
//! http_hosts = ["api.example.com", "*.example.org"]  # outgoing HTTP to these hosts only
//! http_allow_private = false  # private/loopback addresses (off by default)
//!
//! [limits]
//! memory_mb = 64           # linear memory (default 64, at most 1024)
//! timeout_ms = 10000       # wall-clock time of one call (default 10 s, at most 10 min)
//! ```

use crate::tools::SideEffect;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file name of a tool crate's manifest.
pub const MANIFEST_FILE: &str = "agentflow-tool.toml";

/// Where the granted directory appears inside the tool.
pub const GUEST_DIR: &str = "/data";

/// Default linear memory of one call, in MiB.
pub const DEFAULT_MEMORY_MB: u64 = 64;
/// Largest linear memory a manifest may grant, in MiB.
pub const MAX_MEMORY_MB: u64 = 1024;
/// Default wall-clock time of one call, in ms.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Longest wall-clock time a manifest may grant, in ms.
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// A tool component's manifest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// A stricter side-effect class than the component's own (never a laxer one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side_effect: Option<String>,
    #[serde(default)]
    pub grants: Grants,
    #[serde(default)]
    pub limits: Limits,
}

/// What the tool may reach beyond its arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// A host directory preopened as [`GUEST_DIR`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Whether the directory is read-only (the default).
    #[serde(default = "yes")]
    pub read_only: bool,
    /// The run's kv store.
    #[serde(default)]
    pub kv: bool,
    /// Hosts outgoing HTTP may reach (exact names, or `*.example.com`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_hosts: Vec<String>,
    /// Allow private, loopback and link-local addresses.
    #[serde(default)]
    pub http_allow_private: bool,
}

fn yes() -> bool {
    true
}

impl Default for Grants {
    fn default() -> Self {
        Grants {
            dir: None,
            read_only: true,
            kv: false,
            http_hosts: Vec::new(),
            http_allow_private: false,
        }
    }
}

/// The limits of one call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_memory_mb() -> u64 {
    DEFAULT_MEMORY_MB
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: DEFAULT_MEMORY_MB,
            timeout_ms: DEFAULT_TIMEOUT_MS,
        }
    }
}

/// How strict a class is: a manifest may only move up this order.
fn strictness(s: SideEffect) -> u8 {
    match s {
        SideEffect::None => 0,
        SideEffect::Idempotent => 1,
        SideEffect::Compensable => 2,
        SideEffect::Irreversible => 3,
    }
}

/// A side-effect class from its name.
pub fn parse_side_effect(s: &str) -> Option<SideEffect> {
    match s {
        "none" => Some(SideEffect::None),
        "idempotent" => Some(SideEffect::Idempotent),
        "compensable" => Some(SideEffect::Compensable),
        "irreversible" => Some(SideEffect::Irreversible),
        _ => None,
    }
}

/// A side-effect class's name.
pub fn side_effect_name(s: SideEffect) -> &'static str {
    match s {
        SideEffect::None => "none",
        SideEffect::Idempotent => "idempotent",
        SideEffect::Compensable => "compensable",
        SideEffect::Irreversible => "irreversible",
    }
}

impl Manifest {
    /// Read a manifest file; a relative `dir` is taken relative to the file and made
    /// absolute, so the installed manifest does not depend on where it was installed from.
    pub fn from_file(path: &Path) -> anyhow::Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read tool manifest {}: {e}", path.display()))?;
        let mut manifest: Manifest = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("tool manifest {}: {e}", path.display()))?;
        if let Some(dir) = &manifest.grants.dir
            && dir.is_relative()
        {
            let base = path.parent().unwrap_or(Path::new("."));
            manifest.grants.dir = Some(base.join(dir));
        }
        manifest.validate()?;
        Ok(manifest)
    }

    /// Check the limits, the class override and the granted directory.
    pub fn validate(&self) -> anyhow::Result<()> {
        let l = &self.limits;
        if l.memory_mb == 0 || l.memory_mb > MAX_MEMORY_MB {
            anyhow::bail!(
                "[limits] memory_mb = {}: must be 1 to {MAX_MEMORY_MB}",
                l.memory_mb
            );
        }
        if l.timeout_ms == 0 || l.timeout_ms > MAX_TIMEOUT_MS {
            anyhow::bail!(
                "[limits] timeout_ms = {}: must be 1 to {MAX_TIMEOUT_MS}",
                l.timeout_ms
            );
        }
        if let Some(s) = &self.side_effect
            && parse_side_effect(s).is_none()
        {
            anyhow::bail!(
                "side_effect = `{s}`: expected none, idempotent, compensable or irreversible"
            );
        }
        if let Some(dir) = &self.grants.dir
            && !dir.is_dir()
        {
            anyhow::bail!(
                "[grants] dir = {}: not a directory (create it first)",
                dir.display()
            );
        }
        for host in &self.grants.http_hosts {
            if host.is_empty() || host.contains(['/', ':', ' ']) {
                anyhow::bail!(
                    "[grants] http_hosts: `{host}` is not a host name (no scheme, port or path)"
                );
            }
        }
        Ok(())
    }

    /// The class a call of this tool has: the component's own, or the manifest's when
    /// it is stricter. A laxer override is an error.
    pub fn effective_side_effect(&self, declared: SideEffect) -> anyhow::Result<SideEffect> {
        let Some(name) = &self.side_effect else {
            return Ok(declared);
        };
        let wanted = parse_side_effect(name)
            .ok_or_else(|| anyhow::anyhow!("side_effect = `{name}`: unknown class"))?;
        if strictness(wanted) < strictness(declared) {
            anyhow::bail!(
                "side_effect = `{name}` is laxer than the tool's own class `{}`: a manifest may only make it stricter",
                side_effect_name(declared)
            );
        }
        Ok(wanted)
    }

    /// The grants as one short line (`tools list`).
    pub fn grants_summary(&self) -> String {
        let g = &self.grants;
        let mut parts = Vec::new();
        if let Some(dir) = &g.dir {
            let mode = if g.read_only { "ro" } else { "rw" };
            parts.push(format!("dir {} ({mode})", dir.display()));
        }
        if g.kv {
            parts.push("kv".into());
        }
        if !g.http_hosts.is_empty() {
            parts.push(format!("http {}", g.http_hosts.join(",")));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join("; ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_manifest_grants_nothing_and_has_safe_limits() {
        let m: Manifest = toml::from_str("").unwrap();
        assert_eq!(m.grants.dir, None);
        assert!(m.grants.read_only);
        assert!(!m.grants.kv);
        assert!(m.grants.http_hosts.is_empty());
        assert_eq!(m.limits, Limits::default());
        m.validate().unwrap();
        assert_eq!(m.grants_summary(), "none");
    }

    #[test]
    fn the_class_may_only_get_stricter() {
        let m = Manifest {
            side_effect: Some("irreversible".into()),
            ..Default::default()
        };
        assert_eq!(
            m.effective_side_effect(SideEffect::Compensable).unwrap(),
            SideEffect::Irreversible
        );
        let lax = Manifest {
            side_effect: Some("none".into()),
            ..Default::default()
        };
        let err = lax.effective_side_effect(SideEffect::Idempotent).unwrap_err();
        assert!(err.to_string().contains("laxer"), "{err}");
    }

    #[test]
    fn bad_limits_unknown_keys_and_hosts_are_refused() {
        let too_big: Manifest = toml::from_str("[limits]\nmemory_mb = 99999").unwrap();
        assert!(too_big.validate().is_err());
        assert!(toml::from_str::<Manifest>("[grants]\nnetwork = true").is_err());
        let url: Manifest = toml::from_str("[grants]\nhttp_hosts = [\"http://x\"]").unwrap();
        assert!(url.validate().is_err());
    }
}
