//! Output checks the host can run by itself: the `[[validators]]` config, verdicts and
//! failure categories, and the programmatic validators (JSON schema subset, length
//! bounds, glob patterns) that need nothing but the output.
//!
//! Declared in config (`[[validators]]`, optionally per agent), validators run in order,
//! cheapest first — programmatic checks (this module), then the ledger check for
//! hallucinated success, validator components, an LLM judge and outcome checks, which
//! need a running task and live in [`crate::attempts`]. A child may carry its own
//! validators from its spawn request ([`spawned`]).

pub mod schema;
pub mod spawned;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What kind of failure a validator detects.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    Syntactic,
    Semantic,
    Partial,
    HallucinatedSuccess,
    Degraded,
}

impl Category {
    /// The category's name, as in config and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Syntactic => "syntactic",
            Category::Semantic => "semantic",
            Category::Partial => "partial",
            Category::HallucinatedSuccess => "hallucinated-success",
            Category::Degraded => "degraded",
        }
    }
}

/// A claim the output may make, and the tool whose success must back it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// Glob (`*` wildcard, case-insensitive) matched against the output.
    pub pattern: String,
    /// The tool that must have succeeded in the task's subtree.
    pub tool: String,
}

/// One `[[validators]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ValidatorConfig {
    /// Display name (default: the kind).
    #[serde(default)]
    pub name: Option<String>,
    /// Agents (component names) it applies to; empty: all.
    #[serde(default)]
    pub agents: Vec<String>,
    /// Root task only (the run's output) instead of every task.
    #[serde(default)]
    pub root_only: bool,
    /// `json-schema`, `length`, `pattern`, `claims` or `judge`.
    pub kind: String,
    /// Overrides the kind's default category.
    #[serde(default)]
    pub category: Option<Category>,
    /// json-schema: the schema (subset, see `schema`).
    #[serde(default)]
    pub schema: Option<Value>,
    /// length: bounds in characters.
    #[serde(default)]
    pub min_chars: Option<usize>,
    #[serde(default)]
    pub max_chars: Option<usize>,
    /// pattern: globs the output must / must not match.
    #[serde(default)]
    pub must_match: Vec<String>,
    #[serde(default)]
    pub must_not_match: Vec<String>,
    /// claims: output patterns and the tools that must back them.
    #[serde(default)]
    pub claims: Vec<Claim>,
    /// claims: tools the agent is expected to have used successfully, claim or not.
    #[serde(default)]
    pub expected_tools: Vec<String>,
    /// judge: the criteria.
    #[serde(default)]
    pub rubric: Option<String>,
    /// judge: the lowest passing score, 0–10 (default 7).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// judge: the model (default: the highest-quality catalog model other than the producer's).
    #[serde(default)]
    pub model: Option<String>,
    /// component (and outcome): the validator component (`.wasm`, world `validator`;
    /// `agentflow run` also takes a crate directory and builds it).
    #[serde(default)]
    pub component: Option<String>,
    /// component (and outcome): tools the component may call, if the run has them too.
    #[serde(default)]
    pub grant: Vec<String>,
    /// outcome: the tool that checks the world after the task (must be granted to the run).
    #[serde(default)]
    pub tool: Option<String>,
    /// outcome: the tool's arguments; `{output}` and `{effect.id}` are filled in.
    #[serde(default)]
    pub args: Option<Value>,
}

impl ValidatorConfig {
    pub(crate) fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.kind.clone())
    }

    pub(crate) fn rank(&self) -> u8 {
        match self.kind.as_str() {
            "claims" | "component" => 1,
            "judge" => 2,
            "outcome" => 3,
            _ => 0,
        }
    }

    pub(crate) fn default_category(&self) -> Category {
        match self.kind.as_str() {
            "json-schema" => Category::Syntactic,
            "length" => Category::Partial,
            "claims" => Category::HallucinatedSuccess,
            "outcome" => Category::Degraded,
            _ => Category::Semantic,
        }
    }

    /// Reject entries that cannot work, naming the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        match self.kind.as_str() {
            "json-schema" if self.schema.is_none() => {
                anyhow::bail!("[[validators]] json-schema needs `schema`")
            }
            "judge" if self.rubric.is_none() => {
                anyhow::bail!("[[validators]] judge needs `rubric`")
            }
            "component" if self.component.is_none() => {
                anyhow::bail!("[[validators]] component needs `component` (path to a .wasm)")
            }
            "outcome" if self.tool.is_some() == self.component.is_some() => {
                anyhow::bail!(
                    "[[validators]] outcome needs either `tool` (with `args`) or `component`"
                )
            }
            "json-schema" | "length" | "pattern" | "claims" | "judge" | "component" | "outcome" => {
                Ok(())
            }
            other => anyhow::bail!(
                "[[validators]] kind `{other}`: expected json-schema, length, pattern, claims, judge, component or outcome"
            ),
        }
    }
}

/// Why validation failed a task.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub category: Category,
    pub validator: String,
    pub reason: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "validation failed [{}] {}: {}",
            self.category.as_str(),
            self.validator,
            self.reason
        )
    }
}

/// A validator's verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail(String),
    Uncertain(String),
}

pub(crate) fn programmatic(v: &ValidatorConfig, output: &str) -> Verdict {
    match v.kind.as_str() {
        "json-schema" => match serde_json::from_str::<Value>(output) {
            Err(e) => Verdict::Fail(format!("output is not JSON: {e}")),
            Ok(value) => match schema::check(v.schema.as_ref().expect("validated"), &value, "") {
                Ok(()) => Verdict::Pass,
                Err(why) => Verdict::Fail(why.to_string()),
            },
        },
        "length" => {
            let n = output.chars().count();
            if v.min_chars.is_some_and(|m| n < m) {
                Verdict::Fail(format!(
                    "{n} characters, fewer than {}",
                    v.min_chars.unwrap_or(0)
                ))
            } else if v.max_chars.is_some_and(|m| n > m) {
                Verdict::Fail(format!(
                    "{n} characters, more than {}",
                    v.max_chars.unwrap_or(0)
                ))
            } else {
                Verdict::Pass
            }
        }
        "pattern" => {
            if let Some(p) = v.must_match.iter().find(|p| !glob(p, output)) {
                Verdict::Fail(format!("does not match `{p}`"))
            } else if let Some(p) = v.must_not_match.iter().find(|p| glob(p, output)) {
                Verdict::Fail(format!("matches forbidden `{p}`"))
            } else {
                Verdict::Pass
            }
        }
        _ => Verdict::Uncertain("not a programmatic validator".into()),
    }
}

/// Case-insensitive glob with `*`.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.to_lowercase(), text.to_lowercase());
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == t;
    }
    let mut rest = t.as_str();
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(pos) = rest.find(part) else {
                return false;
            };
            rest = &rest[pos + part.len()..];
        }
    }
    true
}
