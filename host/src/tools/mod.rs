//! Tools a run can be granted: the built-in `kv`, `workspace`, `http_fetch`, `cloud`
//! and `git`, plus any tool a platform team registers through
//! [`crate::Host::register_tool`] or installs as a component (`crate::tool_components`,
//! which the host hands to [`ToolSet::build`] like a registered tool).
//!
//! Deny by default: a run sees only the tools it was granted (`--grant NAME` or
//! `[tools] grant`); the others are invisible to `tools.list` and refused by
//! `tools.call` with an error naming the grant to add. Each tool checks its own scope
//! (workspace paths, allowed hosts) on every call.

pub mod cloud;
pub mod git;
pub mod grants;
pub mod http_fetch;
pub mod ip_policy;
pub mod kv;
pub mod mcp_config;
pub mod overlay;
pub mod workspace;
pub mod workspace_dir;

use crate::ledger::Ledger;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// `[tools]`: which built-in tools a run is granted, and their scopes.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsConfig {
    /// Tools granted to every agent with any arguments (`kv`, `workspace`, …). Nothing
    /// is granted by default.
    #[serde(default)]
    pub grant: Vec<String>,
    /// Grants per agent, with constraints on arguments (`[[tools.grants]]`, see
    /// [`grants`]).
    #[serde(default)]
    pub grants: Vec<grants::GrantRule>,
    /// Directory the `workspace` tool may read and write (`--workspace DIR`).
    #[serde(default)]
    pub workspace: Option<PathBuf>,
    /// Hosts `http_fetch` may GET (exact names, or `*.example.com`).
    #[serde(default)]
    pub http_allow_hosts: Vec<String>,
    /// Allow `http_fetch` to reach private, loopback and link-local addresses. Off by default.
    #[serde(default)]
    pub http_allow_private: bool,
    /// Largest body `http_fetch` returns, in bytes (default 1 MiB).
    #[serde(default)]
    pub http_max_bytes: Option<usize>,
    /// MCP servers whose tools may be granted as `server/tool` (`[[tools.mcp]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp: Vec<mcp_config::McpServerConfig>,
}

impl ToolsConfig {
    /// Check the parts that can be wrong on their own (`[[tools.mcp]]`).
    pub fn validate(&self) -> anyhow::Result<()> {
        mcp_config::validate(&self.mcp)
    }
}

/// Names of the built-in tools.
pub const BUILTIN_TOOLS: &[&str] = &["kv", "workspace", "http_fetch", "cloud", "git"];

/// What calling a tool does to the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SideEffect {
    None,
    Idempotent,
    Compensable,
    Irreversible,
}

/// A tool's description, as `tools.list` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ToolInfo {
    pub name: String,
    pub description: String,
    pub args_schema: serde_json::Value,
    pub side_effect: SideEffect,
    /// For tools whose effects can be reverted: the `op` that reverts one effect
    /// (called with the effect's record), used by recovery plans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<String>,
}

/// A typed record of something a tool did to the world.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "type")]
pub enum Effect {
    GitCommit {
        repo: String,
        sha: String,
        branch: String,
    },
    FileModified {
        path: String,
        hash: String,
    },
    APICall {
        endpoint: String,
        method: String,
        status: u16,
    },
    DatabaseMutation {
        table: String,
        op: DbOp,
    },
    CloudResource {
        provider: String,
        id: String,
        action: String,
    },
}

/// What a [`Effect::DatabaseMutation`] did to its table. Serialized as the lowercase
/// word; `put`, which the `kv` tool recorded before the operation was typed, reads as
/// `upsert`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DbOp {
    Insert,
    Update,
    Delete,
    #[serde(alias = "put")]
    Upsert,
    /// A change of the schema (create, alter, drop).
    Schema,
}

/// Why a tool call failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ToolError {
    #[error("tool not granted: {0}")]
    NotGranted(String),
    #[error("no such tool: {0}")]
    NotFound(String),
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
    #[error("denied: {0}")]
    Denied(String),
    #[error("tool failed: {0}")]
    Failed(String),
}

/// What a tool knows about the call it serves.
pub struct ToolCallCtx {
    pub run_id: String,
    pub task_id: u64,
    pub ledger: Ledger,
    /// Stable per (run, task, call sequence) and recorded in the intent before the
    /// call: tools with side effects use it to make retries harmless.
    pub idempotency_key: String,
    /// Effects the tool reports through [`ToolCallCtx::emit`].
    pub effects: std::sync::Mutex<Vec<Effect>>,
}

impl ToolCallCtx {
    /// Report an effect on the world; it is recorded with the call's result.
    pub fn emit(&self, effect: Effect) {
        self.effects.lock().unwrap().push(effect);
    }
}

/// A tool.
#[async_trait::async_trait]
pub trait Tool: Send + Sync {
    /// Name, description, argument schema, side-effect class.
    fn info(&self) -> ToolInfo;
    /// The description `tools.list` shows, which a tool described elsewhere (an MCP
    /// server's) may have to fetch; `None` when the tool turns out not to exist.
    /// Default: [`Tool::info`].
    async fn describe(&self) -> Option<ToolInfo> {
        Some(self.info())
    }
    /// What this particular call does to the world (default: the tool's class). A tool
    /// whose operations differ — reads next to writes — says so per call, so reads need
    /// no intent and an in-doubt write is handled by what it really is.
    fn side_effect_of(&self, _args: &serde_json::Value) -> SideEffect {
        self.info().side_effect
    }
    /// Which build of the tool runs (`sha256:…` of an installed tool component), recorded
    /// with each of its calls; `None` for tools compiled into the host.
    fn build(&self) -> Option<String> {
        None
    }
    /// Perform one call with parsed JSON arguments.
    async fn call(&self, ctx: &ToolCallCtx, args: serde_json::Value) -> Result<String, ToolError>;
}

/// The tools one run was granted.
#[derive(Clone, Default)]
pub struct ToolSet {
    granted: BTreeMap<String, Arc<dyn Tool>>,
    known: Vec<String>,
    /// Which agent may call which of them, with what ([`grants`]).
    grants: grants::Grants,
    /// The granted workspace directory, when `workspace` is granted.
    workspace_dir: Option<workspace_dir::WorkspaceDir>,
}

impl ToolSet {
    /// Build the run's tool set from config and the registered tools. Errors name
    /// the grant that cannot be honoured.
    pub fn build(config: &ToolsConfig, registered: &[Arc<dyn Tool>]) -> anyhow::Result<ToolSet> {
        let mut available: BTreeMap<String, Arc<dyn Tool>> = BTreeMap::new();
        for tool in registered {
            available.insert(tool.info().name, tool.clone());
        }
        let mut known: Vec<String> = BUILTIN_TOOLS.iter().map(|s| s.to_string()).collect();
        known.extend(available.keys().cloned());
        let mut granted = BTreeMap::new();
        let mut workspace_dir = None;
        // Exact names must be constructible; a glob (`server/*`) takes the tools it
        // matches and can be constructed with this config.
        let mut wanted: Vec<(String, bool)> = Vec::new();
        let rule_tools = config.grants.iter().map(|r| &r.tool);
        for pattern in config.grant.iter().chain(rule_tools) {
            if pattern.contains(['*', '?']) {
                for name in &known {
                    if grants::glob_match(pattern, name) && !wanted.iter().any(|(n, _)| n == name) {
                        wanted.push((name.clone(), false));
                    }
                }
            } else if let Some(w) = wanted.iter_mut().find(|(n, _)| n == pattern) {
                w.1 = true;
            } else {
                wanted.push((pattern.clone(), true));
            }
        }
        for (name, exact) in &wanted {
            if granted.contains_key(name) {
                continue;
            }
            let built = Self::construct(name, config, &available, &known);
            let tool = match built {
                Ok((tool, dir)) => {
                    if dir.is_some() {
                        workspace_dir = dir;
                    }
                    tool
                }
                Err(e) if *exact => return Err(e),
                Err(_) => continue,
            };
            granted.insert(name.clone(), tool);
        }
        Ok(ToolSet {
            granted,
            known,
            grants: grants::Grants::new(&config.grant, &config.grants),
            workspace_dir,
        })
    }

    /// Construct granted tool `name` (and the workspace directory, for `workspace`).
    fn construct(
        name: &str,
        config: &ToolsConfig,
        available: &BTreeMap<String, Arc<dyn Tool>>,
        known: &[String],
    ) -> anyhow::Result<(Arc<dyn Tool>, Option<workspace_dir::WorkspaceDir>)> {
        let mut workspace_dir = None;
        let tool: Arc<dyn Tool> = match name {
            "kv" => Arc::new(kv::KvTool),
            "workspace" => {
                let dir = config.workspace.as_ref().ok_or_else(|| {
                    anyhow::anyhow!("the workspace tool needs a directory: pass --workspace DIR or set [tools] workspace")
                })?;
                let tool = workspace::WorkspaceTool::new(dir)?;
                workspace_dir = Some(tool.dir().clone());
                Arc::new(tool)
            }
            "http_fetch" => Arc::new(http_fetch::HttpFetchTool::new(config)?),
            "cloud" => {
                let dir = config.workspace.as_ref().ok_or_else(|| {
                    anyhow::anyhow!("the cloud tool keeps its state in the workspace: pass --workspace DIR or set [tools] workspace")
                })?;
                Arc::new(cloud::CloudTool::new(dir)?)
            }
            "git" => {
                let dir = config.workspace.as_ref().ok_or_else(|| {
                    anyhow::anyhow!("the git tool commits in the workspace: pass --workspace DIR or set [tools] workspace")
                })?;
                Arc::new(git::GitTool::new(dir)?)
            }
            other => available.get(other).cloned().ok_or_else(|| {
                anyhow::anyhow!(
                    "cannot grant unknown tool `{other}` (available: {})",
                    known.join(", ")
                )
            })?,
        };
        Ok((tool, workspace_dir))
    }

    /// Name `names` (tools installed but not granted) as known, so calling one is
    /// refused as not granted, with the grant to add, rather than as not found.
    pub fn with_known(mut self, names: impl IntoIterator<Item = String>) -> ToolSet {
        for name in names {
            if !self.known.contains(&name) {
                self.known.push(name);
            }
        }
        self
    }

    /// The granted tool `name`'s description, if granted.
    pub fn info(&self, name: &str) -> Option<ToolInfo> {
        self.granted.get(name).map(|t| t.info())
    }

    /// The side-effect class of calling granted tool `name` with `args_json`.
    pub fn side_effect_of(&self, name: &str, args_json: &str) -> Option<SideEffect> {
        let tool = self.granted.get(name)?;
        let args = serde_json::from_str(args_json).unwrap_or(serde_json::Value::Null);
        Some(tool.side_effect_of(&args))
    }

    /// Descriptions of the granted tools.
    pub fn list(&self) -> Vec<ToolInfo> {
        self.granted.values().map(|t| t.info()).collect()
    }

    /// Descriptions of the granted tools as [`Tool::describe`] gives them (an MCP
    /// tool's from its server, which this may start).
    pub async fn describe(&self) -> Vec<ToolInfo> {
        let mut out = Vec::with_capacity(self.granted.len());
        for tool in self.granted.values() {
            if let Some(info) = tool.describe().await {
                out.push(info);
            }
        }
        out
    }

    /// The granted tool `name`, or the error to give the guest.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Tool>, ToolError> {
        if let Some(tool) = self.granted.get(name) {
            return Ok(tool.clone());
        }
        if self.known.iter().any(|k| k == name) {
            Err(ToolError::NotGranted(format!(
                "`{name}` is not granted to this run (grant it with --grant {name} or [tools] grant)"
            )))
        } else {
            Err(ToolError::NotFound(name.to_string()))
        }
    }

    /// The workspace directory, if the `workspace` tool is granted.
    pub fn workspace_dir(&self) -> Option<&workspace_dir::WorkspaceDir> {
        self.workspace_dir.as_ref()
    }

    /// Admit a call of `name` with `args` by the last agent of `chain` (the agents
    /// from the root's down to the caller's): the label of the rule that admitted it at
    /// the caller's level, or the error to give the guest ([`grants`]).
    pub fn admit(
        &self,
        chain: &[String],
        name: &str,
        args: &serde_json::Value,
    ) -> Result<String, ToolError> {
        self.get(name)?;
        self.grants.admit(chain, name, args)
    }

    /// The grant rules, with their labels.
    pub fn grants(&self) -> &grants::Grants {
        &self.grants
    }

    /// Names of the granted tools.
    pub fn granted_names(&self) -> Vec<String> {
        self.granted.keys().cloned().collect()
    }
}

/// Read a required string argument.
pub(crate) fn str_arg<'a>(args: &'a serde_json::Value, key: &str) -> Result<&'a str, ToolError> {
    args.get(key)
        .and_then(|v| v.as_str())
        .ok_or_else(|| ToolError::InvalidArgs(format!("missing string field `{key}`")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_mutations_carry_a_typed_op_and_read_earlier_records() {
        let typed = Effect::DatabaseMutation {
            table: "kv".into(),
            op: DbOp::Upsert,
        };
        let json = serde_json::to_value(&typed).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "DatabaseMutation", "table": "kv", "op": "upsert"})
        );
        // What the kv tool recorded before the op was typed.
        let earlier = serde_json::json!({"type": "DatabaseMutation", "table": "kv", "op": "put"});
        assert_eq!(serde_json::from_value::<Effect>(earlier).unwrap(), typed);
        for op in ["insert", "update", "delete", "schema"] {
            let e = serde_json::json!({"type": "DatabaseMutation", "table": "t", "op": op});
            let back = serde_json::to_value(serde_json::from_value::<Effect>(e.clone()).unwrap());
            assert_eq!(back.unwrap(), e);
        }
        let bad = serde_json::json!({"type": "DatabaseMutation", "table": "t", "op": "truncate"});
        assert!(serde_json::from_value::<Effect>(bad).is_err());
    }
}
