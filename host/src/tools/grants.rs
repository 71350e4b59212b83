//! Grants per agent, with constraints on arguments: which agent may call which tool,
//! and with what.
//!
//! Two sources, both in `[tools]`:
//! - `grant = ["kv", "workspace"]` (and `--grant`): the tool, for every agent, with
//!   any arguments (the tool's own scope still applies);
//! - `[[tools.grants]]` rules: a tool (or a glob of tool names, e.g. `"fs/*"`), the
//!   agents it is for (`agents`, names as in `[agents]`, the root agent's file stem, or
//!   globs; all when absent), and constraints on the arguments: `paths` (globs the
//!   `path` argument must match, for `workspace`), `hosts` (the `url` argument's host,
//!   for `http_fetch`: exact or `*.example.com`), `args` (for any tool: argument name
//!   → globs its value must match).
//!
//! A call by a task is admitted only if, at **every level** of its chain of agents
//! (the root's agent, then each spawner down to the caller's own), some rule for that
//! agent admits it. So a child never gains a right its parent lacks: whatever it may
//! do, each of its ancestors could do too. The rule that admitted the call at the
//! caller's own level is recorded with the call (`"grant"` in its request).

use super::ToolError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// One `[[tools.grants]]` rule.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRule {
    /// A label for the rule, shown by `inspect` and recorded with each call it admits
    /// (default: `tools.grants[<index>]`).
    #[serde(default)]
    pub name: Option<String>,
    /// The tool's name, or a glob of names (`mcp-server/*`).
    pub tool: String,
    /// Agents the rule is for (names or globs); every agent when empty.
    #[serde(default)]
    pub agents: Vec<String>,
    /// Globs the `path` argument must match (`src/**`), relative to the workspace.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Hosts the `url` argument may name (exact, or `*.example.com`).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Argument name → globs its value must match (strings, or numbers and booleans
    /// as written in JSON).
    #[serde(default)]
    pub args: BTreeMap<String, Vec<String>>,
}

impl GrantRule {
    /// The rule for a plain `grant = [name]` entry: every agent, any arguments.
    fn plain(tool: &str) -> GrantRule {
        GrantRule {
            name: Some(format!("grant {tool}")),
            tool: tool.to_string(),
            ..GrantRule::default()
        }
    }

    /// Whether the rule names tool `name`.
    pub fn names_tool(&self, name: &str) -> bool {
        glob_match(&self.tool, name)
    }

    fn for_agent(&self, agent: &str) -> bool {
        self.agents.is_empty() || self.agents.iter().any(|a| glob_match(a, agent))
    }

    /// `Err` with why the arguments fall outside the rule's constraints.
    fn check_args(&self, args: &Value) -> Result<(), String> {
        if !self.paths.is_empty() {
            let raw = args.get("path").and_then(Value::as_str).unwrap_or("");
            let Some(path) = normalize_path(raw) else {
                return Err(format!("path `{raw}` leaves the workspace"));
            };
            if !self.paths.iter().any(|g| glob_match(g, &path)) {
                return Err(format!(
                    "path `{path}` is outside {} (allowed: {})",
                    self.label_or_tool(),
                    self.paths.join(", ")
                ));
            }
        }
        if !self.hosts.is_empty() {
            let url = args.get("url").and_then(Value::as_str).unwrap_or("");
            let host = url_host(url).unwrap_or_default();
            if !self.hosts.iter().any(|h| host_matches(h, &host)) {
                return Err(format!(
                    "host `{host}` is outside {} (allowed: {})",
                    self.label_or_tool(),
                    self.hosts.join(", ")
                ));
            }
        }
        for (key, globs) in &self.args {
            let value = match args.get(key) {
                Some(Value::String(s)) => s.clone(),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
                Some(_) | None => {
                    return Err(format!(
                        "argument `{key}` must be a string or number for {}",
                        self.label_or_tool()
                    ));
                }
            };
            if !globs.iter().any(|g| glob_match(g, &value)) {
                return Err(format!(
                    "argument `{key}` = `{value}` is outside {} (allowed: {})",
                    self.label_or_tool(),
                    globs.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Whom the rule grants its tool, and within what, in one line: `writer (paths
    /// src/**)`, `every agent`.
    pub fn summary(&self) -> String {
        let mut out = if self.agents.is_empty() {
            "every agent".to_string()
        } else {
            self.agents.join(", ")
        };
        let mut limits = Vec::new();
        if !self.paths.is_empty() {
            limits.push(format!("paths {}", self.paths.join(" ")));
        }
        if !self.hosts.is_empty() {
            limits.push(format!("hosts {}", self.hosts.join(" ")));
        }
        for (key, globs) in &self.args {
            limits.push(format!("{key} {}", globs.join(" ")));
        }
        if !limits.is_empty() {
            out.push_str(&format!(" ({})", limits.join("; ")));
        }
        out
    }

    fn label_or_tool(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("the grant of `{}`", self.tool))
    }
}

/// The run's grant rules: plain grants first, then `[[tools.grants]]` in order.
#[derive(Clone, Debug, Default)]
pub struct Grants {
    rules: Vec<(String, GrantRule)>,
}

impl Grants {
    /// The rules of `grant` (plain names) and `grants` (rules), each with its label.
    pub fn new(plain: &[String], rules: &[GrantRule]) -> Grants {
        let mut out: Vec<(String, GrantRule)> = Vec::new();
        for name in plain {
            let rule = GrantRule::plain(name);
            out.push((rule.name.clone().unwrap_or_default(), rule));
        }
        for (i, rule) in rules.iter().enumerate() {
            let label = rule
                .name
                .clone()
                .unwrap_or_else(|| format!("tools.grants[{i}]"));
            let mut rule = rule.clone();
            rule.name = Some(label.clone());
            out.push((label, rule));
        }
        Grants { rules: out }
    }

    /// Every rule, with its label.
    pub fn rules(&self) -> impl Iterator<Item = (&str, &GrantRule)> {
        self.rules.iter().map(|(l, r)| (l.as_str(), r))
    }

    /// Whether some rule lets `agent` call tool `name` (with some arguments).
    pub fn visible_to(&self, agent: &str, name: &str) -> bool {
        self.rules
            .iter()
            .any(|(_, r)| r.names_tool(name) && r.for_agent(agent))
    }

    /// The label of the first rule that admits `agent` calling `name` with `args`.
    fn admit_one(&self, agent: &str, name: &str, args: &Value) -> Result<&str, ToolError> {
        let mut refusals = Vec::new();
        for (label, rule) in &self.rules {
            if !rule.names_tool(name) || !rule.for_agent(agent) {
                continue;
            }
            match rule.check_args(args) {
                Ok(()) => return Ok(label),
                Err(why) => refusals.push(why),
            }
        }
        if refusals.is_empty() {
            Err(ToolError::NotGranted(format!(
                "`{name}` is not granted to agent `{agent}` (add a [[tools.grants]] rule for it, \
                 or grant it to every agent with --grant {name} or [tools] grant)"
            )))
        } else {
            Err(ToolError::Denied(format!(
                "agent `{agent}` may not make this call: {}",
                refusals.join("; ")
            )))
        }
    }

    /// Admit a call of `name` with `args` by the last agent of `chain` (root first):
    /// every level must admit it. Returns the caller's own admitting rule's label.
    pub fn admit(&self, chain: &[String], name: &str, args: &Value) -> Result<String, ToolError> {
        if chain.is_empty() {
            // Deny by default: a caller outside the task tree holds nothing.
            return Err(ToolError::NotGranted(format!(
                "`{name}`: the caller is not a task of this run"
            )));
        }
        let mut own = String::new();
        for (i, agent) in chain.iter().enumerate() {
            let label = self.admit_one(agent, name, args).map_err(|e| {
                if i + 1 == chain.len() {
                    return e;
                }
                // An ancestor lacks the right: the child cannot have it either.
                let why = match e {
                    ToolError::NotGranted(m) | ToolError::Denied(m) => m,
                    other => other.to_string(),
                };
                ToolError::Denied(format!(
                    "a sub-agent never holds a right its spawner lacks, and spawner agent \
                     `{agent}` cannot make this call: {why}"
                ))
            })?;
            own = label.to_string();
        }
        Ok(own)
    }

    /// Whether every agent of `chain` may call `name` with some arguments.
    pub fn visible_to_chain(&self, chain: &[String], name: &str) -> bool {
        !chain.is_empty() && chain.iter().all(|a| self.visible_to(a, name))
    }
}

/// A workspace path as the rules see it: relative, with `.` and `..` resolved
/// lexically (`src/../x` is `x`); `None` when it climbs above the workspace.
fn normalize_path(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.trim().split(['/', '\\']) {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    Some(parts.join("/"))
}

/// The lowercase host of an http(s) URL.
fn url_host(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    let host = url.host_str()?;
    Some(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase(),
    )
}

fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.ends_with(&format!(".{suffix}")),
        None => pattern == host,
    }
}

/// Glob match: `**` matches anything, `*` anything but `/`, `?` one character but
/// `/`; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    glob_at(&p, &t)
}

fn glob_at(p: &[char], t: &[char]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some('*') if p.get(1) == Some(&'*') => {
            // `**/` also matches no directory at all.
            let rest = &p[2..];
            if let Some(after_slash) = rest.strip_prefix(&['/'])
                && glob_at(after_slash, t)
            {
                return true;
            }
            (0..=t.len()).any(|i| glob_at(rest, &t[i..]))
        }
        Some('*') => {
            let rest = &p[1..];
            for i in 0..=t.len() {
                if glob_at(rest, &t[i..]) {
                    return true;
                }
                if t.get(i) == Some(&'/') {
                    break;
                }
            }
            false
        }
        Some('?') => t.first().is_some_and(|c| *c != '/') && glob_at(&p[1..], &t[1..]),
        Some(c) => t.first() == Some(c) && glob_at(&p[1..], &t[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn globs_match_paths_and_names() {
        assert!(glob_match("src/**", "src/a/b.rs"));
        assert!(glob_match("src/**", "src/"));
        assert!(!glob_match("src/**", "tests/a.rs"));
        assert!(glob_match("src/*.rs", "src/a.rs"));
        assert!(!glob_match("src/*.rs", "src/a/b.rs"));
        assert!(glob_match("**/*.md", "README.md"));
        assert!(glob_match("**/*.md", "docs/x/y.md"));
        assert!(glob_match("everything/*", "everything/echo"));
        assert!(!glob_match("everything/*", "other/echo"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "a/c"));
        assert!(glob_match("kv", "kv"));
        assert!(!glob_match("kv", "kvx"));
    }

    fn rules() -> Grants {
        let toml = r#"
            [[grants]]
            tool = "workspace"
            agents = ["root"]
            [[grants]]
            name = "writer-src"
            tool = "workspace"
            agents = ["writer"]
            paths = ["src/**"]
            [[grants]]
            tool = "echo/*"
            args = { message = ["hello*"] }
        "#;
        #[derive(Deserialize)]
        struct T {
            grants: Vec<GrantRule>,
        }
        let t: T = toml::from_str(toml).unwrap();
        Grants::new(&["kv".into()], &t.grants)
    }

    #[test]
    fn every_level_of_the_chain_must_admit_the_call() {
        let g = rules();
        let root = vec!["root".to_string()];
        let writer = vec!["root".to_string(), "writer".to_string()];
        let in_src = json!({"op": "write", "path": "./src/lib.rs"});
        let outside = json!({"op": "write", "path": "secrets.txt"});
        assert_eq!(
            g.admit(&root, "workspace", &outside).unwrap(),
            "tools.grants[0]"
        );
        assert_eq!(
            g.admit(&writer, "workspace", &in_src).unwrap(),
            "writer-src"
        );
        let err = g.admit(&writer, "workspace", &outside).unwrap_err();
        assert!(
            matches!(err, ToolError::Denied(ref m) if m.contains("src/**")),
            "{err:?}"
        );
        let sneaky = json!({"op": "write", "path": "src/../secrets.txt"});
        assert!(g.admit(&writer, "workspace", &sneaky).is_err());
        let above = json!({"op": "write", "path": "src/../../x"});
        assert!(g.admit(&writer, "workspace", &above).is_err());
        // kv is granted to everyone.
        assert_eq!(g.admit(&writer, "kv", &json!({})).unwrap(), "grant kv");
        // A writer spawned by a writer still has the rule; one spawned by an agent
        // without workspace rights gets nothing, whatever its own rules say.
        let via_other = vec!["other".to_string(), "writer".to_string()];
        let err = g.admit(&via_other, "workspace", &in_src).unwrap_err();
        assert!(
            matches!(err, ToolError::Denied(ref m) if m.contains("spawner agent `other`")),
            "{err:?}"
        );
        // Not granted at all: the caller's own level says so.
        let err = g
            .admit(&["other".to_string()], "workspace", &in_src)
            .unwrap_err();
        assert!(matches!(err, ToolError::NotGranted(_)), "{err:?}");
    }

    #[test]
    fn argument_constraints_match_values() {
        let g = rules();
        let who = vec!["anyone".to_string()];
        assert!(
            g.admit(&who, "echo/echo", &json!({"message": "hello there"}))
                .is_ok()
        );
        assert!(matches!(
            g.admit(&who, "echo/echo", &json!({"message": "bye"})),
            Err(ToolError::Denied(_))
        ));
        assert!(matches!(
            g.admit(&who, "echo/echo", &json!({})),
            Err(ToolError::Denied(_))
        ));
        assert!(g.visible_to_chain(&who, "echo/add"));
        assert!(!g.visible_to_chain(&who, "workspace"));
    }

    #[test]
    fn hosts_constrain_the_url() {
        let rule = GrantRule {
            tool: "http_fetch".into(),
            hosts: vec!["*.example.com".into(), "api.test".into()],
            ..GrantRule::default()
        };
        let g = Grants::new(&[], &[rule]);
        let who = vec!["a".to_string()];
        assert!(
            g.admit(
                &who,
                "http_fetch",
                &json!({"url": "https://x.example.com/a"})
            )
            .is_ok()
        );
        assert!(
            g.admit(&who, "http_fetch", &json!({"url": "http://API.test/"}))
                .is_ok()
        );
        assert!(
            g.admit(&who, "http_fetch", &json!({"url": "http://evil.test/"}))
                .is_err()
        );
    }
}
