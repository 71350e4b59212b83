//! What a decision says about each catalog model: its scores, its predicted tokens and
//! cost, and why it was excluded — the `candidates` of an `llm.decision` event.
//!
//! A plan reports on every model of the catalog on every call, so the report is built
//! without copying or formatting: names are shared with the catalog ([`Name`]), and the
//! explanations ([`Prediction`], [`Exclusion`]) are values that become text only when
//! shown or serialized (as the same strings they always were).

use super::health::Unavailable;
use serde::{Serialize, Serializer};
use std::fmt;
use std::sync::Arc;

/// A catalog name (model or provider), shared by every report that shows it; serialized
/// as a plain string.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Name(Arc<str>);

impl Name {
    pub(super) fn new(name: &str) -> Name {
        Name(Arc::from(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// The viable models of a plan, best first: positions in the catalog, shown (and
/// serialized) as the models' names, which it shares with the catalog.
#[derive(Clone)]
pub struct Ranked {
    names: Arc<[String]>,
    order: Vec<usize>,
}

impl Ranked {
    pub(super) fn new(names: Arc<[String]>, order: Vec<usize>) -> Ranked {
        Ranked { names, order }
    }

    /// The names, best first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &String> + ExactSizeIterator + Clone {
        self.order.iter().map(|&i| &self.names[i])
    }

    /// The best.
    pub fn first(&self) -> Option<&String> {
        self.iter().next()
    }

    /// How many models are viable.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Catalog position and name of each, best first.
    pub(super) fn positions(&self) -> impl Iterator<Item = (usize, &String)> {
        self.order.iter().map(|&i| (i, &self.names[i]))
    }
}

impl fmt::Debug for Ranked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Ranked {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// How one catalog model fared in a decision.
#[derive(Clone, Debug, Serialize)]
pub struct CandidateReport {
    pub model: Name,
    pub provider: Name,
    pub score: Option<f64>,
    pub cost_score: f64,
    pub quality_score: f64,
    pub latency_score: f64,
    pub predicted_output_tokens: u64,
    pub prediction: Prediction,
    pub predicted_cost_usd: f64,
    pub worst_case_cost_usd: f64,
    pub latency_ms: u64,
    pub quality: f64,
    pub excluded: Option<Exclusion>,
}

/// Where a candidate's predicted output tokens come from; shown (and serialized) as
/// `history of N `task` calls` or `prompt-length estimate`.
#[derive(Clone, Debug, PartialEq)]
pub enum Prediction {
    /// The average output of `calls` successful calls of the model on `task_type` (by
    /// `agent` only, when it has enough of its own).
    History {
        calls: u64,
        task_type: Arc<str>,
        agent: Option<Arc<str>>,
    },
    /// Too little history: the prompt's length (at least 64), capped by the maximum.
    PromptLength,
}

impl fmt::Display for Prediction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prediction::History {
                calls,
                task_type,
                agent: None,
            } => write!(f, "history of {calls} `{task_type}` calls"),
            Prediction::History {
                calls,
                task_type,
                agent: Some(agent),
            } => write!(
                f,
                "history of {calls} `{task_type}` calls by agent `{agent}`"
            ),
            Prediction::PromptLength => f.write_str("prompt-length estimate"),
        }
    }
}

impl Serialize for Prediction {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Why a candidate cannot take the call (the first hard constraint it fails); shown
/// (and serialized) as a sentence.
#[derive(Clone, Debug, PartialEq)]
pub enum Exclusion {
    /// Another model is pinned and the request allows no fallback.
    Pinned,
    /// The context window is smaller than the call needs.
    ContextWindow { window: u32, needed: u64 },
    /// The model lacks some of the capabilities the request names (all of them shown).
    Capabilities(Arc<[String]>),
    /// The model's quality on the task type is below the request's minimum.
    MinQuality { quality: f64, min: f64 },
    /// The call's worst-case cost is above the request's maximum.
    MaxCost { worst: f64, max: f64 },
    /// The model's p95 latency is above the request's maximum.
    MaxLatency { p95_ms: u64, max_ms: u64 },
    /// The call's worst-case cost is above what the run's budget has left.
    Budget { worst: f64, left: f64 },
    /// Health: cooling down after a 429, circuit open, or its probe in flight.
    Unavailable(Unavailable),
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exclusion::Pinned => f.write_str("another model is pinned"),
            Exclusion::ContextWindow { window, needed } => {
                write!(f, "context window {window} < needed {needed}")
            }
            Exclusion::Capabilities(needed) => write!(f, "lacks capabilities {needed:?}"),
            Exclusion::MinQuality { quality, min } => {
                write!(f, "quality {quality:.2} < min {min:.2}")
            }
            Exclusion::MaxCost { worst, max } => {
                write!(f, "worst-case cost ${worst:.6} > max ${max:.6}")
            }
            Exclusion::MaxLatency { p95_ms, max_ms } => {
                write!(f, "p95 latency {p95_ms} ms > max {max_ms} ms")
            }
            Exclusion::Budget { worst, left } => {
                write!(f, "worst-case cost ${worst:.6} > budget left ${left:.6}")
            }
            Exclusion::Unavailable(why) => fmt::Display::fmt(why, f),
        }
    }
}

impl Serialize for Exclusion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each explanation reads (and serializes) exactly as the text decisions recorded
    /// when it was formatted eagerly.
    #[test]
    fn explanations_read_as_before() {
        let caps: Arc<[String]> = vec!["vision".to_string(), "json-mode".to_string()].into();
        let cases = [
            (Exclusion::Pinned, "another model is pinned"),
            (
                Exclusion::ContextWindow {
                    window: 32_000,
                    needed: 300_000,
                },
                "context window 32000 < needed 300000",
            ),
            (
                Exclusion::Capabilities(caps),
                r#"lacks capabilities ["vision", "json-mode"]"#,
            ),
            (
                Exclusion::MaxCost {
                    worst: 0.001_234_56,
                    max: 0.000_000_1,
                },
                "worst-case cost $0.001235 > max $0.000000",
            ),
            (
                Exclusion::MaxLatency {
                    p95_ms: 400,
                    max_ms: 200,
                },
                "p95 latency 400 ms > max 200 ms",
            ),
            (
                Exclusion::Budget {
                    worst: 0.5,
                    left: 0.25,
                },
                "worst-case cost $0.500000 > budget left $0.250000",
            ),
            (
                Exclusion::Unavailable(Unavailable::CircuitOpen {
                    failures: 3,
                    ms_left: 120,
                }),
                "circuit open after 3 consecutive failures (120 ms left)",
            ),
            (
                Exclusion::Unavailable(Unavailable::ProbeInFlight),
                "circuit half-open: a probe call is in flight",
            ),
        ];
        for (exclusion, text) in cases {
            assert_eq!(exclusion.to_string(), text);
            assert_eq!(serde_json::to_value(&exclusion).unwrap(), text);
        }
        let history = Prediction::History {
            calls: 3,
            task_type: "summarize".into(),
            agent: None,
        };
        assert_eq!(
            serde_json::to_value(&history).unwrap(),
            "history of 3 `summarize` calls"
        );
        assert_eq!(
            serde_json::to_value(Prediction::PromptLength).unwrap(),
            "prompt-length estimate"
        );
        let name = Name::new("mock-small");
        assert_eq!(serde_json::to_value(&name).unwrap(), "mock-small");
        assert_eq!(format!("{name} {name:?}"), r#"mock-small "mock-small""#);
    }
}
