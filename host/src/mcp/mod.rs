//! MCP servers as tools (`[[tools.mcp]]`, configured in [`crate::tools::mcp_config`]).
//!
//! Each tool a server's `allow` list exposes is a [`crate::tools::Tool`] named
//! `server/tool`, granted and called like any other: through the recorded path of
//! `agentflow:agent/tools` (an intent before a side-effecting call, the result recorded
//! before the agent sees it, replayed on resume). A run gets its own servers
//! ([`McpRun`]): none starts before a listing or a call needs it — so a fully replayed
//! resume starts none — a dead one is started again by the next call, and all are
//! stopped when the run ends.

pub mod server;
pub mod tool;

use crate::tools::mcp_config::McpServerConfig;
use crate::tools::{SideEffect, Tool, ToolsConfig};
use server::McpServer;
use std::sync::Arc;

/// The MCP servers and tools of one run. Dropping it kills the servers still running;
/// [`McpRun::shutdown`] also waits for them.
pub struct McpRun {
    servers: Vec<Arc<McpServer>>,
    tools: Vec<Arc<dyn Tool>>,
}

impl McpRun {
    /// The MCP tools a run with `config` can be granted: every tool a server's `allow`
    /// list names, and for a server allowing `*`, each granted `server/tool`. Starts
    /// nothing. An error for a grant of a server's tool its `allow` list leaves out.
    pub fn for_run(config: &ToolsConfig) -> anyhow::Result<McpRun> {
        let mut servers = Vec::new();
        let mut tools: Vec<Arc<dyn Tool>> = Vec::new();
        for s in &config.mcp {
            let server = Arc::new(McpServer::new(s.clone()));
            let mut names: Vec<&str> = if s.allows_all() {
                Vec::new()
            } else {
                s.allow.iter().map(String::as_str).collect()
            };
            for grant in &config.grant {
                let Some((name, tool)) = grant.split_once('/') else {
                    continue;
                };
                if name != s.name {
                    continue;
                }
                if !s.allows(tool) {
                    anyhow::bail!(
                        "cannot grant `{grant}`: MCP server `{name}` does not expose `{tool}` \
                         (its `allow` list: {}); add it there to expose it",
                        s.allow.join(", ")
                    );
                }
                if !names.contains(&tool) {
                    names.push(tool);
                }
            }
            for tool in names {
                tools.push(Arc::new(tool::McpTool::new(server.clone(), tool)));
            }
            servers.push(server);
        }
        Ok(McpRun { servers, tools })
    }

    /// The run's MCP tools, for [`crate::tools::ToolSet::build`].
    pub fn tools(&self) -> &[Arc<dyn Tool>] {
        &self.tools
    }

    /// The run's servers.
    pub fn servers(&self) -> &[Arc<McpServer>] {
        &self.servers
    }

    /// Stop every server of the run and wait until their processes are gone.
    pub async fn shutdown(&self) {
        for s in &self.servers {
            s.stop().await;
        }
    }
}

impl Drop for McpRun {
    fn drop(&mut self) {
        for s in &self.servers {
            s.stop_now();
        }
    }
}

/// One MCP tool as `agentflow tools list` shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct McpToolRow {
    /// `server/tool`.
    pub name: String,
    pub side_effect: SideEffect,
    /// `mcp:<server>`.
    pub source: String,
    /// Whether the server's `allow` list exposes it (only exposed tools can be granted).
    pub allowed: bool,
    pub description: String,
}

/// The tools of the configured MCP servers, as rows for `agentflow tools list`: each
/// server is started, asked for its tools and stopped. A server that cannot be reached
/// gives the rows its `allow` list names and an error message.
pub async fn tool_rows(servers: &[McpServerConfig]) -> (Vec<McpToolRow>, Vec<String>) {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for config in servers {
        let row = |tool: &str, description: String| McpToolRow {
            name: format!("{}/{tool}", config.name),
            side_effect: config.effect_of(tool),
            source: format!("mcp:{}", config.name),
            allowed: config.allows(tool),
            description,
        };
        let server = McpServer::new(config.clone());
        match server.list_tools().await {
            Ok(tools) => {
                for t in tools.iter() {
                    let description = t.description.as_deref().unwrap_or_default();
                    rows.push(row(&t.name, description.to_string()));
                }
                for tool in &config.allow {
                    if tool != "*" && !tools.iter().any(|t| t.name == *tool) {
                        errors.push(format!(
                            "MCP server `{}` does not offer `{tool}`, which its `allow` list names",
                            config.name
                        ));
                    }
                }
            }
            Err(e) => {
                errors.push(e.to_string());
                for tool in config.allow.iter().filter(|t| *t != "*") {
                    rows.push(row(tool, String::new()));
                }
            }
        }
        server.stop().await;
    }
    (rows, errors)
}
