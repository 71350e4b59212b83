//! Output checks the host can run by itself: the `[[validators]]` config, verdicts and
//! failure categories, and the programmatic validators (JSON schema subset, length
//! bounds, glob patterns) that need nothing but the output.
//!
//! Declared in config (`[[validators]]`, optionally per agent), validators run in order,
//! cheapest first — programmatic checks (this module), then the ledger check for
//! hallucinated success, validator components, operators' commands, an LLM judge and
//! outcome checks, which need a running task and live in [`crate::attempts`]. A
//! command validator's config is [`command`], the subprocess it runs in [`sandbox`]. A
//! child may carry its own validators from its spawn request ([`spawned`]).
//!
//! [`glob`] is the one pattern language of the config (`description_matches`, the
//! validators' `must_match`/`must_not_match` and `claims`, `[merge]`'s critical paths and
//! lines): only `*` is special, case is ignored, and it runs on free text (a model's
//! output, a task's description, a diff line) more often than on paths. It is
//! hand-written rather than `globset`, whose path globs give `?`, `[…]`, `{a,b}` and `\`
//! a meaning: existing patterns such as `*what?*` or `*[TODO]*` would change what they
//! match or stop compiling, and its case folding is ASCII-only where this one folds
//! Unicode. The matcher is the twenty lines at the end of this file.

pub mod command;
pub mod config;
mod flat;
pub mod sandbox;
pub mod schema;
pub mod spawned;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use command::CommandCheck;
pub use config::{
    ClaimsCheck, ComponentCheck, JsonSchemaCheck, JudgeCheck, LengthCheck, OutcomeCheck,
    PatternCheck, ValidatorConfig, ValidatorKind, stored_validators,
};

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
    match &v.kind {
        ValidatorKind::JsonSchema(s) => match serde_json::from_str::<Value>(output) {
            Err(e) => Verdict::Fail(format!("output is not JSON: {e}")),
            Ok(value) => match schema::check(&s.schema, &value, "") {
                Ok(()) => Verdict::Pass,
                Err(why) => Verdict::Fail(why.to_string()),
            },
        },
        ValidatorKind::Length(l) => {
            let n = output.chars().count();
            if let Some(min) = l.min_chars.filter(|m| n < *m) {
                Verdict::Fail(format!("{n} characters, fewer than {min}"))
            } else if let Some(max) = l.max_chars.filter(|m| n > *m) {
                Verdict::Fail(format!("{n} characters, more than {max}"))
            } else {
                Verdict::Pass
            }
        }
        ValidatorKind::Pattern(p) => {
            if let Some(p) = p.must_match.iter().find(|p| !glob(p, output)) {
                Verdict::Fail(format!("does not match `{p}`"))
            } else if let Some(p) = p.must_not_match.iter().find(|p| glob(p, output)) {
                Verdict::Fail(format!("matches forbidden `{p}`"))
            } else {
                Verdict::Pass
            }
        }
        _ => Verdict::Uncertain("not a programmatic validator".into()),
    }
}

/// Case-insensitive glob with `*` (matching any text, `/` and newlines included); every
/// other character is literal.
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
