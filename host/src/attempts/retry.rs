//! `[retry]`: what to do when a task's output fails validation — per category, one
//! strategy or a chain of them (attempt 2 uses the first, attempt 3 the second, …, the
//! last repeating) — and the temperatures of `temperature` retries.
//!
//! The config is read through a lenient shape ([`RawRetry`]) and checked here, so
//! every error names its key (`[retry] semantic[1]: unknown strategy …`). A single
//! strategy is written (and stored in run configs) as a plain string, as before
//! chains existed, so older configs and ledgers read back unchanged.

use crate::checks::Category;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// What to do when validation fails, per category (`[retry]`).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Fail the task.
    #[default]
    None,
    /// Run it again as it was: no feedback, pinned to the model that answered the
    /// failed attempt (when a single model answered all its LLM calls).
    Same,
    /// Run it again with the validator's feedback added to every LLM prompt.
    Feedback,
    /// Like `same`, with every LLM call at the `[retry] temperature` for that attempt
    /// (default [`DEFAULT_RETRY_TEMPERATURE`]), whatever the agent asked.
    Temperature,
    /// Run it again on the highest-quality model of the catalog, with the feedback.
    Escalate,
    /// Wait (durably) for a human's decision: `agentflow retry ID --note ...` runs it
    /// again with the note as feedback, `agentflow reject ID` fails it.
    Human,
}

impl Strategy {
    /// Every strategy, as written in the config.
    pub const ALL: [Strategy; 6] = [
        Strategy::None,
        Strategy::Same,
        Strategy::Feedback,
        Strategy::Temperature,
        Strategy::Escalate,
        Strategy::Human,
    ];

    /// The name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::None => "none",
            Strategy::Same => "same",
            Strategy::Feedback => "feedback",
            Strategy::Temperature => "temperature",
            Strategy::Escalate => "escalate",
            Strategy::Human => "human",
        }
    }

    fn parse(name: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the retried attempt's LLM prompts carry the validator's feedback.
    pub fn gives_feedback(self) -> bool {
        matches!(
            self,
            Strategy::Feedback | Strategy::Escalate | Strategy::Human
        )
    }
}

/// The temperature of a `temperature` retry when `[retry] temperature` is not set.
pub const DEFAULT_RETRY_TEMPERATURE: f64 = 1.0;

/// The highest temperature `[retry] temperature` accepts.
pub const MAX_RETRY_TEMPERATURE: f64 = 2.0;

/// A category's strategies, never empty: the retried attempt `n` (2, 3, …) uses the
/// `n - 1`-th, the last one repeating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain(Vec<Strategy>);

impl Chain {
    /// One strategy for every retry.
    pub fn one(s: Strategy) -> Chain {
        Chain(vec![s])
    }

    /// The strategies in order.
    pub fn strategies(&self) -> &[Strategy] {
        &self.0
    }

    /// The strategy of attempt `attempt` (the first retry is attempt 2).
    pub fn for_attempt(&self, attempt: u32) -> Strategy {
        let i = (attempt.saturating_sub(2) as usize).min(self.0.len() - 1);
        self.0[i]
    }
}

impl Serialize for Chain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }
}

/// `[retry]`: bounded, budget-aware retries of tasks whose output failed validation.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(try_from = "RawRetry")]
pub struct RetryConfig {
    /// Attempts per task, the first included (default 1: no retries).
    pub max_attempts: u32,
    pub syntactic: Chain,
    pub semantic: Chain,
    pub partial: Chain,
    #[serde(rename = "hallucinated-success")]
    pub hallucinated_success: Chain,
    pub degraded: Chain,
    /// Temperatures of `temperature` retries: attempt `n` uses the `n - 1`-th, the
    /// last repeating; empty means [`DEFAULT_RETRY_TEMPERATURE`]. Not written when
    /// empty, so configs recorded before it existed compare equal.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "one_or_many")]
    pub temperature: Vec<f64>,
}

fn one_or_many<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
    match v {
        [one] => one.serialize(s),
        many => many.serialize(s),
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 1,
            syntactic: Chain::one(Strategy::Feedback),
            semantic: Chain::one(Strategy::Escalate),
            partial: Chain::one(Strategy::Feedback),
            hallucinated_success: Chain::one(Strategy::Feedback),
            degraded: Chain::one(Strategy::Escalate),
            temperature: Vec::new(),
        }
    }
}

impl RetryConfig {
    /// The strategies for a category.
    pub fn chain(&self, c: Category) -> &Chain {
        match c {
            Category::Syntactic => &self.syntactic,
            Category::Semantic => &self.semantic,
            Category::Partial => &self.partial,
            Category::HallucinatedSuccess => &self.hallucinated_success,
            Category::Degraded => &self.degraded,
        }
    }

    /// The strategy of attempt `attempt` (2 for the first retry) after a failure of
    /// category `c`.
    pub fn strategy(&self, c: Category, attempt: u32) -> Strategy {
        self.chain(c).for_attempt(attempt)
    }

    /// The temperature of attempt `attempt` when its strategy is `temperature`.
    pub fn temperature_for(&self, attempt: u32) -> f64 {
        let i = attempt.saturating_sub(2) as usize;
        match self.temperature.get(i).or(self.temperature.last()) {
            Some(t) => *t,
            None => DEFAULT_RETRY_TEMPERATURE,
        }
    }
}

/// `[retry]` as written: any values, checked by [`RetryConfig::try_from`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    max_attempts: Option<u32>,
    syntactic: Option<Value>,
    semantic: Option<Value>,
    partial: Option<Value>,
    #[serde(rename = "hallucinated-success")]
    hallucinated_success: Option<Value>,
    degraded: Option<Value>,
    temperature: Option<Value>,
}

fn chain(key: &str, value: Option<Value>, default: &Chain) -> Result<Chain, String> {
    let expected = Strategy::ALL.map(Strategy::as_str).join(", ");
    let one = |key: String, v: &Value| match v {
        Value::String(name) => Strategy::parse(name).ok_or_else(|| {
            format!("[retry] {key}: unknown strategy `{name}` (expected one of {expected})")
        }),
        other => Err(format!(
            "[retry] {key}: expected a strategy name ({expected}), got {other}"
        )),
    };
    match value {
        None => Ok(default.clone()),
        Some(Value::Array(items)) if items.is_empty() => Err(format!(
            "[retry] {key}: the list is empty; give at least one strategy"
        )),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| one(format!("{key}[{i}]"), v))
            .collect::<Result<_, _>>()
            .map(Chain),
        Some(v) => one(key.to_string(), &v).map(Chain::one),
    }
}

fn temperatures(value: Option<Value>) -> Result<Vec<f64>, String> {
    let one = |key: String, v: &Value| match v.as_f64() {
        Some(t) if t.is_finite() && (0.0..=MAX_RETRY_TEMPERATURE).contains(&t) => Ok(t),
        Some(t) => Err(format!(
            "[retry] {key}: {t} is out of range (0 to {MAX_RETRY_TEMPERATURE})"
        )),
        None => Err(format!(
            "[retry] {key}: expected a number or a list of numbers, got {v}"
        )),
    };
    match value {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) if items.is_empty() => {
            Err("[retry] temperature: the list is empty; give at least one temperature".into())
        }
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| one(format!("temperature[{i}]"), v))
            .collect(),
        Some(v) => Ok(vec![one("temperature".into(), &v)?]),
    }
}

impl TryFrom<RawRetry> for RetryConfig {
    type Error = String;

    fn try_from(raw: RawRetry) -> Result<Self, String> {
        let d = RetryConfig::default();
        Ok(RetryConfig {
            max_attempts: raw.max_attempts.unwrap_or(d.max_attempts),
            syntactic: chain("syntactic", raw.syntactic, &d.syntactic)?,
            semantic: chain("semantic", raw.semantic, &d.semantic)?,
            partial: chain("partial", raw.partial, &d.partial)?,
            hallucinated_success: chain(
                "hallucinated-success",
                raw.hallucinated_success,
                &d.hallucinated_success,
            )?,
            degraded: chain("degraded", raw.degraded, &d.degraded)?,
            temperature: temperatures(raw.temperature)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<RetryConfig, String> {
        #[derive(Deserialize)]
        struct Doc {
            retry: RetryConfig,
        }
        toml::from_str::<Doc>(toml_text)
            .map(|d| d.retry)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_single_strategy_is_a_chain_of_one_and_reads_back_as_a_string() {
        let c = parse("[retry]\nmax_attempts = 3\nsemantic = \"same\"\n").unwrap();
        assert_eq!(c.max_attempts, 3);
        assert_eq!(c.semantic, Chain::one(Strategy::Same));
        assert_eq!(c.strategy(Category::Semantic, 2), Strategy::Same);
        assert_eq!(c.strategy(Category::Semantic, 9), Strategy::Same);
        // Unset categories keep their defaults.
        assert_eq!(c.syntactic, Chain::one(Strategy::Feedback));
        assert_eq!(c.degraded, Chain::one(Strategy::Escalate));
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["semantic"], "same");
        assert!(json.get("temperature").is_none(), "unset: not written");
    }

    #[test]
    fn a_list_is_applied_in_order_and_its_last_strategy_repeats() {
        let c = parse(
            "[retry]\nmax_attempts = 6\nsemantic = [\"same\", \"temperature\", \"escalate\"]\n",
        )
        .unwrap();
        let order: Vec<_> = (2..=6).map(|n| c.strategy(Category::Semantic, n)).collect();
        assert_eq!(
            order,
            [
                Strategy::Same,
                Strategy::Temperature,
                Strategy::Escalate,
                Strategy::Escalate,
                Strategy::Escalate
            ]
        );
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(
            json["semantic"],
            serde_json::json!(["same", "temperature", "escalate"])
        );
        let back: RetryConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn a_stored_config_of_the_old_shape_reads_back() {
        let old = serde_json::json!({
            "max_attempts": 2, "syntactic": "feedback", "semantic": "escalate",
            "partial": "feedback", "hallucinated-success": "human", "degraded": "none"
        });
        let c: RetryConfig = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(c.hallucinated_success, Chain::one(Strategy::Human));
        assert_eq!(c.degraded, Chain::one(Strategy::None));
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            old,
            "written back the same"
        );
    }

    #[test]
    fn temperatures_are_one_number_or_one_per_attempt() {
        let c = parse("[retry]\nsemantic = \"temperature\"\n").unwrap();
        assert_eq!(c.temperature_for(2), DEFAULT_RETRY_TEMPERATURE);
        let c = parse("[retry]\ntemperature = 0.9\n").unwrap();
        assert_eq!((c.temperature_for(2), c.temperature_for(5)), (0.9, 0.9));
        assert_eq!(serde_json::to_value(&c).unwrap()["temperature"], 0.9);
        let c = parse("[retry]\ntemperature = [0.5, 1, 1.5]\n").unwrap();
        let ts: Vec<_> = (2..=6).map(|n| c.temperature_for(n)).collect();
        assert_eq!(ts, [0.5, 1.0, 1.5, 1.5, 1.5]);
        let back: RetryConfig = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, needle) in [
            (
                "semantic = \"again\"",
                "[retry] semantic: unknown strategy `again`",
            ),
            (
                "syntactic = [\"same\", \"twice\"]",
                "[retry] syntactic[1]: unknown strategy `twice`",
            ),
            ("partial = []", "[retry] partial: the list is empty"),
            ("degraded = 3", "[retry] degraded: expected a strategy name"),
            (
                "hallucinated-success = [1]",
                "[retry] hallucinated-success[0]: expected a strategy name",
            ),
            (
                "temperature = 2.5",
                "[retry] temperature: 2.5 is out of range",
            ),
            (
                "temperature = -0.1",
                "[retry] temperature: -0.1 is out of range",
            ),
            (
                "temperature = [0.7, \"hot\"]",
                "[retry] temperature[1]: expected a number",
            ),
            ("temperature = []", "[retry] temperature: the list is empty"),
            (
                "temperature = \"warm\"",
                "[retry] temperature: expected a number",
            ),
            ("tempreature = 0.9", "unknown field `tempreature`"),
        ] {
            let err = parse(&format!("[retry]\n{text}\n")).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
