//! The supervisor's constraint settings (`[constraints]`) and the pure checks behind
//! them: description normalisation (duplicates), similarity (cycles), approval rules
//! (the fixed ones here; expressions in [`super::approval_expr`]).
//!
//! Similarity is lexical by default: the Jaccard index of the two descriptions'
//! features — their lower-case alphanumeric words and their pairs of adjacent words —
//! so "scrape example.com products" and "Scrape example.com products!" score 1.0 and a
//! child that restates its ancestor's task is caught, while word order and repeats
//! still count ("worker r.1.1" under "worker r.1" scores 0.83, below the default 0.85). With `[constraints.embeddings]` set, the cosine similarity of
//! the two descriptions' embeddings (an OpenAI-compatible `/embeddings` endpoint) is
//! used instead.

use super::approval_expr::{self, SpawnFacts};
use crate::checks::glob;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// `[constraints]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConstraintsConfig {
    /// Tasks of a run executing at once (default 16); more are queued.
    pub max_concurrent_tasks: u32,
    /// Refuse a child whose normalised description equals another task's of the run
    /// (default true); an explicit dedup key always counts.
    pub dedup_descriptions: bool,
    /// Similarity to an ancestor's description at or above which a child is refused as
    /// circular (default 0.85; above 1 disables the check).
    pub similarity_threshold: f64,
    /// Use embeddings instead of lexical similarity.
    pub embeddings: Option<EmbeddingsConfig>,
    /// What happens to a task whose dependency failed or was cancelled: `fail` (default)
    /// or `cancel`.
    pub on_dependency_failure: DependencyFailure,
    /// When a child must wait for a human before it starts.
    pub approval: ApprovalRules,
}

impl Default for ConstraintsConfig {
    fn default() -> Self {
        ConstraintsConfig {
            max_concurrent_tasks: 16,
            dedup_descriptions: true,
            similarity_threshold: 0.85,
            embeddings: None,
            on_dependency_failure: DependencyFailure::Fail,
            approval: ApprovalRules::default(),
        }
    }
}

/// What a failed dependency does to its dependents.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DependencyFailure {
    #[default]
    Fail,
    Cancel,
}

/// `[constraints.embeddings]`: an OpenAI-compatible embeddings endpoint.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsConfig {
    /// Base URL, e.g. `http://localhost:8000/v1` (`/embeddings` is appended).
    pub base_url: String,
    pub model: String,
    /// Environment variable holding the API key, if one is needed.
    #[serde(default)]
    pub api_key_env: Option<String>,
}

/// `[constraints.approval]`: a child needs a human's approval when any rule matches.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalRules {
    /// Its estimated cost (or budget share) is above this (USD).
    pub cost_over_usd: Option<f64>,
    /// It would be deeper than this.
    pub depth_over: Option<u32>,
    /// It means to use one of these tools.
    pub tools: Vec<String>,
    /// Its description matches one of these patterns (`*` matches anything, case-insensitive).
    pub description_matches: Vec<String>,
    /// Any of these CEL expressions over the spawn is true, or gives no boolean (see
    /// [`approval_expr`]). Left out of the stored config when empty, so the context
    /// hash of a run without expressions is what it was before they existed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<String>,
}

impl ApprovalRules {
    /// Refuse an expression that does not compile, naming `[constraints.approval] when`.
    pub fn validate(&self) -> anyhow::Result<()> {
        approval_expr::validate(&self.when)
    }

    /// Why a child needs approval, if it does: the fixed rules first, then `when`.
    pub fn reason(&self, facts: &SpawnFacts) -> Option<String> {
        let SpawnFacts {
            description,
            depth,
            cost_usd: estimated_cost,
            tools,
            ..
        } = *facts;
        if let Some(limit) = self.cost_over_usd
            && estimated_cost > limit
        {
            return Some(format!(
                "estimated cost ${estimated_cost:.4} is over ${limit:.4}"
            ));
        }
        if let Some(limit) = self.depth_over
            && depth > limit
        {
            return Some(format!("depth {depth} is over {limit}"));
        }
        if let Some(t) = tools.iter().find(|t| self.tools.contains(t)) {
            return Some(format!("uses tool `{t}`"));
        }
        if let Some(p) = self
            .description_matches
            .iter()
            .find(|p| glob(p, description))
        {
            return Some(format!("description matches `{p}`"));
        }
        approval_expr::reason(&self.when, facts)
    }
}

/// An approval reason made short for one-line views: `cost over $1` for the cost
/// rule's `estimated cost $1.2000 is over $1.0000`; the other rules' as they are.
pub fn short_reason(reason: &str) -> String {
    if let Some(rest) = reason.strip_prefix("estimated cost $")
        && let Some((_, limit)) = rest.split_once(" is over $")
        && let Ok(limit) = limit.parse::<f64>()
    {
        return format!("cost over ${limit}");
    }
    reason.to_string()
}

/// Lower-case alphanumeric words of a description.
pub fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

/// The normalised form used to detect duplicate descriptions.
pub fn normalise(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The words and adjacent word pairs of a description (lower-case, sorted, each
/// once): what lexical similarity compares.
pub struct Features(Vec<String>);

impl Features {
    /// The features of `text`.
    pub fn of(text: &str) -> Features {
        let words: Vec<String> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(|w| w.to_lowercase())
            .collect();
        let mut out: Vec<String> = words
            .windows(2)
            .map(|p| format!("{} {}", p[0], p[1]))
            .collect();
        out.extend(words);
        out.sort_unstable();
        out.dedup();
        Features(out)
    }

    /// Jaccard similarity of two feature sets (1.0 for two empty ones).
    pub fn similarity(&self, other: &Features) -> f64 {
        let (a, b) = (&self.0, &other.0);
        if a.is_empty() && b.is_empty() {
            return 1.0;
        }
        let (mut i, mut j, mut inter) = (0, 0, 0usize);
        while i < a.len() && j < b.len() {
            match a[i].cmp(&b[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    inter += 1;
                    i += 1;
                    j += 1;
                }
            }
        }
        inter as f64 / (a.len() + b.len() - inter) as f64
    }
}

/// Jaccard similarity of the features (1.0 for two empty descriptions).
pub fn lexical_similarity(a: &str, b: &str) -> f64 {
    Features::of(a).similarity(&Features::of(b))
}

/// Cosine similarities of `text` to each of `others`, by embeddings.
pub async fn embedding_similarities(
    cfg: &EmbeddingsConfig,
    text: &str,
    others: &[String],
) -> anyhow::Result<Vec<f64>> {
    let mut inputs = vec![text.to_string()];
    inputs.extend(others.iter().cloned());
    let mut req = reqwest::Client::new()
        .post(format!("{}/embeddings", cfg.base_url.trim_end_matches('/')))
        .timeout(std::time::Duration::from_secs(30))
        .json(&serde_json::json!({ "model": cfg.model, "input": inputs }));
    if let Some(key) = cfg.api_key_env.as_ref().and_then(|v| std::env::var(v).ok()) {
        req = req.bearer_auth(key);
    }
    let body: serde_json::Value = req.send().await?.error_for_status()?.json().await?;
    let vectors: Vec<Vec<f64>> = body["data"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("embeddings response has no data"))?
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .map(|v| v.iter().filter_map(|x| x.as_f64()).collect())
                .unwrap_or_default()
        })
        .collect();
    if vectors.len() != inputs.len() {
        anyhow::bail!(
            "embeddings response has {} vectors for {} inputs",
            vectors.len(),
            inputs.len()
        );
    }
    let cos = |a: &[f64], b: &[f64]| {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let (na, nb) = (
            a.iter().map(|x| x * x).sum::<f64>().sqrt(),
            b.iter().map(|x| x * x).sum::<f64>().sqrt(),
        );
        if na == 0.0 || nb == 0.0 {
            0.0
        } else {
            dot / (na * nb)
        }
    };
    Ok(vectors[1..].iter().map(|v| cos(&vectors[0], v)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_and_globs() {
        assert_eq!(
            lexical_similarity(
                "Scrape example.com products",
                "scrape EXAMPLE.com products!"
            ),
            1.0
        );
        assert!(lexical_similarity("fanout r.0 at depth 1", "fanout r at depth 2") < 0.85);
        assert!(lexical_similarity("fanout r.0.1 at depth 0", "fanout r.0 at depth 1") < 0.85);
        assert!(lexical_similarity("worker r.1.1", "worker r.1") < 0.85);
        assert!(
            lexical_similarity("Write a network driver", "write a network driver for it") >= 0.6
        );
        assert!(glob("*delete*", "Delete the production database"));
        assert!(glob("deploy *", "deploy web"));
        assert!(!glob("deploy *", "undeploy web"));
        assert_eq!(normalise("  Fetch   the PAGE! "), "fetch the page");
    }

    #[test]
    fn approval_rules_each_trigger() {
        let rules = ApprovalRules {
            cost_over_usd: Some(1.0),
            depth_over: Some(2),
            tools: vec!["workspace".into()],
            description_matches: vec!["*delete*".into()],
            when: vec!["agent == 'deployer'".into()],
        };
        let check = |description: &str, depth, cost_usd, tools: &[String]| {
            rules.reason(&SpawnFacts {
                cost_usd,
                depth,
                tools,
                description,
                agent: "scripted",
            })
        };
        assert!(
            check("fetch", 1, 2.0, &[])
                .unwrap()
                .contains("estimated cost")
        );
        assert!(check("fetch", 3, 0.0, &[]).unwrap().contains("depth 3"));
        assert!(
            check("fetch", 1, 0.0, &["workspace".into()])
                .unwrap()
                .contains("uses tool `workspace`")
        );
        assert!(
            check("Delete old rows", 1, 0.0, &[])
                .unwrap()
                .contains("*delete*")
        );
        assert_eq!(check("fetch", 1, 0.5, &["kv".into()]), None);
        let cost = check("fetch", 1, 1.2, &[]).unwrap();
        assert_eq!(short_reason(&cost), "cost over $1");
        assert_eq!(short_reason("depth 3 is over 2"), "depth 3 is over 2");
        let deployer = SpawnFacts {
            cost_usd: 0.0,
            depth: 1,
            tools: &[],
            description: "fetch",
            agent: "deployer",
        };
        assert_eq!(
            rules.reason(&deployer).unwrap(),
            "expression `agent == 'deployer'` is true"
        );
    }

    #[test]
    fn stored_configs_round_trip_with_and_without_expressions() {
        // A run stored before `when` existed loads, and serialises as it did (the
        // context hash of its resume must not change).
        let old = r#"{"cost_over_usd":1.0,"depth_over":null,"tools":[],"description_matches":[]}"#;
        let rules: ApprovalRules = serde_json::from_str(old).unwrap();
        assert!(rules.when.is_empty());
        assert_eq!(serde_json::to_string(&rules).unwrap(), old);
        let with = ApprovalRules {
            when: vec!["'deploy' in tools".into()],
            ..rules
        };
        let text = serde_json::to_string(&with).unwrap();
        assert_eq!(serde_json::from_str::<ApprovalRules>(&text).unwrap(), with);
        let config: ConstraintsConfig =
            toml::from_str("[approval]\nwhen = [\"depth > 1\"]\n").unwrap();
        assert_eq!(config.approval.when, ["depth > 1"]);
    }
}
