//! `[[tools.mcp]]`: the MCP servers whose tools a run may be granted, as the config
//! file declares them (the client that talks to them is [`crate::mcp`]).
//!
//! ```toml
//! [[tools.mcp]]
//! name = "github"                       # tools appear as `github/<tool>`
//! command = "npx"                       # a stdio server: command, args, env …
//! args = ["-y", "@modelcontextprotocol/server-github"]
//! env = { GITHUB_TOKEN = "${GITHUB_TOKEN}" }   # from the operator's environment
//! # url = "https://mcp.example.com/mcp" # … or a streamable HTTP server
//! allow = ["search_issues", "create_issue"]   # required; ["*"] exposes every tool
//! effect = "irreversible"               # the default class of its tools (the default)
//! effects = { search_issues = "none" }  # per tool
//! ```
//!
//! Deny by default: a server exposes only the tools its `allow` list names (or all,
//! with an explicit `["*"]`), each tool is assumed irreversible unless `effect` or
//! `effects` says otherwise, and a run still has to be granted `server/tool`.
//! `${VAR}` references in `env` and `bearer_token` are kept as written in the config a
//! run records; they are read from the host's environment only when the server starts.

use super::SideEffect;
use std::collections::{BTreeMap, BTreeSet};

/// One `[[tools.mcp]]` entry.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// The server's name: its tools are granted and called as `name/tool`.
    pub name: String,
    /// A stdio server: the program to start (looked up on `PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment of the server process; values may reference the host's
    /// environment as `${VAR}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory of the server process (default: the host's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<std::path::PathBuf>,
    /// A streamable HTTP server: its endpoint (`http://` or `https://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// For `url`: the bearer token to send, usually a `${VAR}` reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<String>,
    /// The server's tools to expose (its own names), or `["*"]` for all. Required.
    #[serde(default)]
    pub allow: Vec<String>,
    /// The side-effect class of its tools (default `irreversible`).
    #[serde(default = "irreversible")]
    pub effect: SideEffect,
    /// Per-tool side-effect classes, overriding `effect`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub effects: BTreeMap<String, SideEffect>,
    /// How long starting the server or one call may take, in milliseconds (default 60 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

fn irreversible() -> SideEffect {
    SideEffect::Irreversible
}

/// Default bound on starting a server and on one call.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;

impl McpServerConfig {
    /// Whether `allow` exposes the server's tool `tool`.
    pub fn allows(&self, tool: &str) -> bool {
        self.allow.iter().any(|a| a == "*" || a == tool)
    }

    /// Whether `allow` is `["*"]`.
    pub fn allows_all(&self) -> bool {
        self.allow.iter().any(|a| a == "*")
    }

    /// The side-effect class of the server's tool `tool`.
    pub fn effect_of(&self, tool: &str) -> SideEffect {
        self.effects.get(tool).copied().unwrap_or(self.effect)
    }

    /// The bound on starting the server and on one call.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS))
    }

    /// Where the server lives, for messages: `stdio: cmd args…` or the URL.
    pub fn endpoint(&self) -> String {
        match (&self.command, &self.url) {
            (Some(cmd), _) => {
                let mut s = format!("stdio: {cmd}");
                for a in &self.args {
                    s.push(' ');
                    s.push_str(a);
                }
                s
            }
            (None, Some(url)) => url.clone(),
            (None, None) => String::new(),
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        let at = format!("[[tools.mcp]] `{}`", self.name);
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        {
            anyhow::bail!(
                "[[tools.mcp]] name `{}` must be non-empty letters, digits, `_`, `-` or `.` \
                 (its tools are called `name/tool`)",
                self.name
            );
        }
        match (&self.command, &self.url) {
            (Some(_), Some(_)) => {
                anyhow::bail!("{at}: give either `command` (stdio) or `url` (HTTP), not both")
            }
            (None, None) => anyhow::bail!(
                "{at}: give `command` (a stdio server) or `url` (a streamable HTTP server)"
            ),
            (Some(cmd), None) => {
                if cmd.trim().is_empty() {
                    anyhow::bail!("{at}: `command` is empty");
                }
                if self.bearer_token.is_some() {
                    anyhow::bail!("{at}: `bearer_token` is for `url` servers; pass it in `env`");
                }
            }
            (None, Some(url)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    anyhow::bail!("{at}: `url` must start with http:// or https://, not `{url}`");
                }
                if !self.args.is_empty() || !self.env.is_empty() || self.cwd.is_some() {
                    anyhow::bail!("{at}: `args`, `env` and `cwd` are for `command` servers");
                }
            }
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                anyhow::bail!("{at}: env name `{key}` is not a variable name");
            }
            references(value).map_err(|e| anyhow::anyhow!("{at}: env {key}: {e}"))?;
        }
        if let Some(token) = &self.bearer_token {
            references(token).map_err(|e| anyhow::anyhow!("{at}: bearer_token: {e}"))?;
        }
        if self.allow.is_empty() {
            anyhow::bail!(
                "{at}: list the server's tools to expose in `allow` (or `allow = [\"*\"]` for \
                 all of them); none are exposed by default"
            );
        }
        if self.allows_all() && self.allow.len() > 1 {
            anyhow::bail!("{at}: `allow` is either [\"*\"] or a list of tool names, not both");
        }
        for tool in &self.allow {
            if tool.is_empty() {
                anyhow::bail!("{at}: `allow` has an empty tool name");
            }
        }
        if !self.allows_all() {
            for tool in self.effects.keys() {
                if !self.allows(tool) {
                    anyhow::bail!(
                        "{at}: `effects` names `{tool}`, which `allow` does not expose (allow: {})",
                        self.allow.join(", ")
                    );
                }
            }
        }
        if self.timeout_ms == Some(0) {
            anyhow::bail!("{at}: `timeout_ms` must be positive");
        }
        Ok(())
    }
}

/// Check every `[[tools.mcp]]` entry and that their names are distinct.
pub fn validate(servers: &[McpServerConfig]) -> anyhow::Result<()> {
    let mut names = BTreeSet::new();
    for s in servers {
        s.validate()?;
        if !names.insert(s.name.as_str()) {
            anyhow::bail!("[[tools.mcp]] name `{}` is used twice", s.name);
        }
    }
    Ok(())
}

/// The variables `${VAR}` references in `value` name; an error for a malformed one.
pub fn references(value: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`${{` without a closing `}}` in `{value}`"))?;
        let name = &after[..end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("`${{{name}}}` is not a variable reference"));
        }
        out.push(name.to_string());
        rest = &after[end + 1..];
    }
    Ok(out)
}

/// `value` with each `${VAR}` replaced by the host's environment variable; an error
/// naming the first one that is not set.
pub fn expand(value: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`${{` without a closing `}}` in `{value}`"))?;
        let name = &after[..end];
        let v =
            std::env::var(name).map_err(|_| format!("environment variable `{name}` is not set"))?;
        out.push_str(&v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> anyhow::Result<Vec<McpServerConfig>> {
        #[derive(serde::Deserialize)]
        struct T {
            tools: super::super::ToolsConfig,
        }
        let t: T = toml::from_str(toml)?;
        validate(&t.tools.mcp)?;
        Ok(t.tools.mcp)
    }

    #[test]
    fn a_stdio_server_parses_with_deny_by_default_classes() {
        let s = parse(
            "[[tools.mcp]]\nname = \"ev\"\ncommand = \"node\"\nargs = [\"x.js\"]\n\
             env = { T = \"${HOME}\" }\nallow = [\"echo\", \"add\"]\n\
             [tools.mcp.effects]\necho = \"none\"\n",
        )
        .unwrap();
        assert_eq!(s[0].effect_of("echo"), SideEffect::None);
        assert_eq!(s[0].effect_of("add"), SideEffect::Irreversible);
        assert!(s[0].allows("add") && !s[0].allows("other"));
    }

    #[test]
    fn bad_entries_get_errors_that_name_the_fix() {
        let cases = [
            ("name = \"a\"\nallow = [\"*\"]", "give `command`"),
            (
                "name = \"a\"\ncommand = \"x\"",
                "none are exposed by default",
            ),
            (
                "name = \"a/b\"\ncommand = \"x\"\nallow = [\"*\"]",
                "must be non-empty",
            ),
            (
                "name = \"a\"\ncommand = \"x\"\nurl = \"http://h\"\nallow = [\"*\"]",
                "not both",
            ),
            (
                "name = \"a\"\nurl = \"ftp://h\"\nallow = [\"*\"]",
                "http://",
            ),
            (
                "name = \"a\"\ncommand = \"x\"\nallow = [\"e\"]\neffects = { f = \"none\" }",
                "`effects` names `f`",
            ),
            (
                "name = \"a\"\ncommand = \"x\"\nallow = [\"*\"]\nenv = { K = \"${NO\" }",
                "without a closing",
            ),
            (
                "name = \"a\"\ncommand = \"x\"\nallow = [\"*\"]\neffect = \"sometimes\"",
                "unknown variant",
            ),
        ];
        for (entry, wanted) in cases {
            let err = parse(&format!("[[tools.mcp]]\n{entry}\n")).unwrap_err();
            assert!(format!("{err:#}").contains(wanted), "{entry}: {err:#}");
        }
        let twice = "[[tools.mcp]]\nname = \"a\"\ncommand = \"x\"\nallow = [\"*\"]\n";
        let err = parse(&format!("{twice}{twice}")).unwrap_err();
        assert!(err.to_string().contains("used twice"), "{err}");
    }

    #[test]
    fn references_expand_from_the_environment_and_name_a_missing_one() {
        assert_eq!(references("a${X}b${Y_2}").unwrap(), ["X", "Y_2"]);
        assert!(references("${a b}").is_err());
        let home = std::env::var("PATH").unwrap();
        assert_eq!(expand("<${PATH}>").unwrap(), format!("<{home}>"));
        let err = expand("${AGENTFLOW_SURELY_UNSET_VARIABLE}").unwrap_err();
        assert!(err.contains("AGENTFLOW_SURELY_UNSET_VARIABLE"), "{err}");
    }
}
