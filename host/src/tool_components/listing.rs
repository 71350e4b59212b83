//! `agentflow tools list`: one [`ToolListing`] row per tool a run on this ledger can be
//! granted — the built-ins, the installed components, and (a `source` of its own) the
//! MCP servers' tools once they are configured — with effect class, version and grants.

use super::registry::parse_row;
use crate::ledger::Connection;
use crate::ledger::installed_tools;
use crate::tools::SideEffect;
use serde::Serialize;

/// Where a tool comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Compiled into the host.
    Builtin,
    /// An installed tool component.
    Component,
    /// A tool of an MCP server (`[[tools.mcp]]`).
    Mcp,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Builtin => "builtin",
            Source::Component => "component",
            Source::Mcp => "mcp",
        }
    }
}

/// One row of `agentflow tools list`.
#[derive(Clone, Debug, Serialize)]
pub struct ToolListing {
    pub name: String,
    pub source: Source,
    pub side_effect: SideEffect,
    /// The host's version for a built-in, `sha256:…` for a component, the server for MCP.
    pub version: String,
    /// What the tool may reach, in one line.
    pub grants: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undo: Option<String>,
    /// When it was installed (ms since the epoch), for components.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installed_at: Option<i64>,
    /// Who a host config (`tools list --config`) grants it to: one entry per grant
    /// rule naming it, `label: agents (constraints)`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub granted_to: Vec<String>,
}

impl ToolListing {
    /// Fill [`ToolListing::granted_to`] from a config's grants.
    pub fn with_grants(mut self, grants: &crate::tools::grants::Grants) -> ToolListing {
        self.granted_to = grants
            .rules()
            .filter(|(_, rule)| rule.names_tool(&self.name))
            .map(|(label, rule)| format!("{label}: {}", rule.summary()))
            .collect();
        self
    }
}

/// The built-in tools: class, undo, what configures their reach, description.
type Builtin = (
    &'static str,
    SideEffect,
    Option<&'static str>,
    &'static str,
    &'static str,
);

const BUILTINS: &[Builtin] = &[
    (
        "kv",
        SideEffect::Idempotent,
        None,
        "the run's kv table",
        "Get or put text values in the run's private key-value store.",
    ),
    (
        "workspace",
        SideEffect::Irreversible,
        None,
        "--workspace DIR / [tools] workspace",
        "Read, write, append and list files in the run's workspace directory.",
    ),
    (
        "http_fetch",
        SideEffect::None,
        None,
        "[tools] http_allow_hosts",
        "HTTP GET a URL on an allowed host; returns status and body.",
    ),
    (
        "cloud",
        SideEffect::Idempotent,
        Some("destroy"),
        "state in the workspace",
        "Provision (create), remove (destroy) or check (health) a simulated cloud resource.",
    ),
    (
        "git",
        SideEffect::Compensable,
        Some("revert"),
        "the workspace's git repository",
        "Commit files of the workspace to its git repository, revert a commit, or list commits.",
    ),
];

/// Rows for the built-in tools.
pub fn builtins() -> Vec<ToolListing> {
    BUILTINS
        .iter()
        .map(|(name, class, undo, grants, description)| ToolListing {
            name: name.to_string(),
            source: Source::Builtin,
            side_effect: *class,
            version: format!("agentflow {}", env!("CARGO_PKG_VERSION")),
            grants: grants.to_string(),
            description: description.to_string(),
            undo: undo.map(str::to_string),
            installed_at: None,
            granted_to: Vec::new(),
        })
        .collect()
}

/// Rows for the tool components installed in the ledger `conn` reads.
pub fn components(conn: &Connection) -> anyhow::Result<Vec<ToolListing>> {
    let mut rows = Vec::new();
    for row in installed_tools::list(conn)? {
        let (manifest, info) = parse_row(&row)?;
        rows.push(ToolListing {
            name: row.name.clone(),
            source: Source::Component,
            side_effect: info.side_effect,
            version: format!("sha256:{}", row.hash),
            grants: manifest.grants_summary(),
            description: info.description,
            undo: info.undo,
            installed_at: Some(row.installed_at),
            granted_to: Vec::new(),
        });
    }
    Ok(rows)
}

/// Every tool of the ledger `conn` reads: built-ins, then installed components.
/// (MCP servers' tools are appended by their own module, as rows with
/// [`Source::Mcp`].)
pub fn all(conn: &Connection) -> anyhow::Result<Vec<ToolListing>> {
    let mut rows = builtins();
    rows.extend(components(conn)?);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::Tool;

    #[test]
    fn the_builtin_rows_match_the_tools() {
        let rows = builtins();
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, crate::tools::BUILTIN_TOOLS);
        let kv = crate::tools::kv::KvTool.info();
        assert_eq!(rows[0].side_effect, kv.side_effect);
        assert_eq!(rows[0].description, kv.description);
    }
}
