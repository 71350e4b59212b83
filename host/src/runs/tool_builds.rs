//! The tools a run is given beyond the built-ins: those the host registered, plus the
//! installed tool components it was granted — the builds pinned in its record when it
//! resumes ([`crate::tool_components::registry::tools_for_run`]).

use crate::Host;
use crate::tool_components::{ToolRuntime, registry};
use crate::tools::{BUILTIN_TOOLS, ToolSet, ToolsConfig};
use std::collections::BTreeMap;
use std::sync::Arc;

impl Host {
    /// The engine of tool components, built on first use.
    pub fn tool_runtime(&self) -> anyhow::Result<Arc<ToolRuntime>> {
        if let Some(rt) = self.tool_runtime.get() {
            return Ok(rt.clone());
        }
        let rt = ToolRuntime::new(Some(self.config.cache_dir()))?;
        Ok(self.tool_runtime.get_or_init(|| rt).clone())
    }

    /// The run's tool set for `config`: the built-ins it grants, the registered tools,
    /// and the component tools it grants (`pinned`'s builds first); with the pins of
    /// those components. Installed tools it does not grant are known to it, so calling
    /// one names the grant to add.
    pub(crate) fn run_tool_set(
        &self,
        config: &ToolsConfig,
        pinned: &BTreeMap<String, registry::PinnedTool>,
    ) -> anyhow::Result<(
        ToolSet,
        BTreeMap<String, registry::PinnedTool>,
        crate::mcp::McpRun,
    )> {
        let installed = self
            .ledger
            .with_reader(crate::ledger::installed_tools::names)??;
        // Every tool a grant names: plain grants, and `[[tools.grants]]` rules (a glob
        // takes the installed tools it matches).
        let mut names: Vec<String> = config.grant.clone();
        for rule in &config.grants {
            if rule.tool.contains(['*', '?']) {
                names.extend(installed.iter().filter(|n| rule.names_tool(n)).cloned());
            } else {
                names.push(rule.tool.clone());
            }
        }
        names.sort();
        names.dedup();
        // The run's MCP servers (none started yet), stopped when the returned `McpRun`
        // is shut down or dropped.
        let mcp = crate::mcp::McpRun::for_run(config)?;
        let mcp_names: Vec<String> = mcp.tools().iter().map(|t| t.info().name).collect();
        names.retain(|n| !mcp_names.contains(n));
        let (mut available, pins) = self.run_tools(&names, pinned)?;
        available.extend(mcp.tools().iter().cloned());
        Ok((
            ToolSet::build(config, &available)?.with_known(installed),
            pins,
            mcp,
        ))
    }

    /// The registered tools and the component tools among `grants` (`pinned`'s builds
    /// first), with the pins of those components; no engine is built when no grant
    /// names a component.
    fn run_tools(
        &self,
        grants: &[String],
        pinned: &BTreeMap<String, registry::PinnedTool>,
    ) -> anyhow::Result<registry::RunTools> {
        let registered: Vec<String> = self
            .registered_tools
            .iter()
            .map(|t| t.info().name)
            .collect();
        let mut available = self.registered_tools.clone();
        let wants_component = grants
            .iter()
            .any(|g| !BUILTIN_TOOLS.contains(&g.as_str()) && !registered.contains(g));
        if !wants_component {
            return Ok((available, BTreeMap::new()));
        }
        let runtime = self.tool_runtime()?;
        let (components, pins) =
            registry::tools_for_run(&self.ledger, &runtime, grants, &registered, pinned)?;
        available.extend(components);
        Ok((available, pins))
    }
}
