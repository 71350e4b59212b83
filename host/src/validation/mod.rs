//! Validators: checking a task's output before it counts.
//!
//! Declared in config (`[[validators]]`, optionally per agent), they run in order,
//! cheapest first — programmatic checks (JSON schema subset, length bounds, patterns),
//! then the ledger check for hallucinated success (the output claims an effect whose
//! tool the ledger shows never succeeded in the task's subtree), then an LLM judge with
//! a rubric (by default on a different model than the one that produced the output).
//! Each verdict — `pass`, `fail(reason)` or `uncertain(reason)`, with a category
//! (syntactic, semantic, partial, hallucinated-success, degraded) — is a
//! `validation.result` event, shown by `agentflow inspect`, and feeds the quality
//! scores of the producing model in the performance DB. The first failure fails the
//! task with its category and reason.
//!
//! Validator components (`kind = "component"`, [`component`]) check outputs with a
//! platform team's own wasm code; outcome validators (`kind = "outcome"`, [`outcome`])
//! check the world after the task's side effects and roll the task's subtree back
//! when it is wrong; a child may carry its own validators from its spawn request
//! ([`spawned`]); and a failure can wait for a human's decision ([`review`]).

pub mod calibrate;
pub mod component;
pub mod outcome;
pub mod review;
pub mod schema;
pub mod spawned;

use crate::ledger::{EventRecord, query};
use crate::supervisor::RunContext;
use crate::supervisor::constraints::glob;
use crate::supervisor::host_llm::{self, HostCall};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;

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

    fn rank(&self) -> u8 {
        match self.kind.as_str() {
            "claims" | "component" => 1,
            "judge" => 2,
            "outcome" => 3,
            _ => 0,
        }
    }

    fn default_category(&self) -> Category {
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

/// What to do when validation fails, per category (`[retry]`).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Fail the task.
    #[default]
    None,
    /// Run it again with the validator's feedback added to every LLM prompt.
    Feedback,
    /// Run it again on the highest-quality model of the catalog, with the feedback.
    Escalate,
    /// Wait (durably) for a human's decision: `agentflow retry ID --note ...` runs it
    /// again with the note as feedback, `agentflow reject ID` fails it.
    Human,
}

/// `[retry]`: bounded, budget-aware retries of tasks whose output failed validation.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts per task, the first included (default 1: no retries).
    pub max_attempts: u32,
    pub syntactic: Strategy,
    pub semantic: Strategy,
    pub partial: Strategy,
    #[serde(rename = "hallucinated-success")]
    pub hallucinated_success: Strategy,
    pub degraded: Strategy,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 1,
            syntactic: Strategy::Feedback,
            semantic: Strategy::Escalate,
            partial: Strategy::Feedback,
            hallucinated_success: Strategy::Feedback,
            degraded: Strategy::Escalate,
        }
    }
}

impl RetryConfig {
    /// The strategy for a category.
    pub fn strategy(&self, c: Category) -> Strategy {
        match c {
            Category::Syntactic => self.syntactic,
            Category::Semantic => self.semantic,
            Category::Partial => self.partial,
            Category::HallucinatedSuccess => self.hallucinated_success,
            Category::Degraded => self.degraded,
        }
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
                Err(why) => Verdict::Fail(why),
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

/// What the ledger says about the output being validated: the tools that succeeded in
/// the subtree of `task_id` (read only `with_tools`, for claims), and the model used
/// most by the task's current attempt (after its last `validation.retry`) with the
/// task type it was asked for. Reads only the events of the tasks concerned.
fn ledger_facts(
    run: &RunContext,
    conn: Option<&crate::ledger::Connection>,
    task_id: u64,
    with_tools: bool,
) -> (HashSet<String>, Option<String>, Option<String>) {
    let Some(conn) = conn else {
        return Default::default();
    };
    let own = query::events(conn, &run.run_id, Some(task_id)).unwrap_or_default();
    let mut models: std::collections::HashMap<String, usize> = Default::default();
    let mut task_type = None;
    for e in &own {
        if e.kind == "validation.retry" {
            models.clear();
            task_type = None;
        }
        if e.kind == "llm.complete" && e.ok {
            if let Some(m) = &e.model {
                *models.entry(m.clone()).or_default() += 1;
            }
            task_type = e.request["chat"]["task_type"]
                .as_str()
                .map(str::to_string)
                .or(task_type);
        }
    }
    let mut tools = HashSet::new();
    if with_tools {
        let mut add = |events: &[query::EventRow]| {
            for e in events {
                if e.kind == "tools.call"
                    && e.ok
                    && let Some(name) = e.request["name"].as_str()
                {
                    tools.insert(name.to_string());
                }
            }
        };
        add(&own);
        for t in outcome::subtree(conn, &run.run_id, task_id)
            .into_iter()
            .skip(1)
        {
            add(&query::events(conn, &run.run_id, Some(t)).unwrap_or_default());
        }
    }
    let model = models
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
        .map(|(m, _)| m);
    (tools, model, task_type)
}

/// Append the verdicts gathered so far in one ledger commit.
async fn flush(run: &RunContext, pending: &mut Vec<EventRecord>) -> Result<(), Failure> {
    if pending.is_empty() {
        return Ok(());
    }
    let events = std::mem::take(pending);
    let validator = events[0].request["validator"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    run.ledger
        .write(move |w| {
            for e in events {
                w.append_event(e)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| Failure {
            category: Category::Degraded,
            validator,
            reason: format!("cannot record validation: {e}"),
        })
}

async fn judge(
    run: &Arc<RunContext>,
    task_id: u64,
    v: &ValidatorConfig,
    producer: Option<&str>,
    input: &str,
    output: &str,
) -> (Verdict, Option<f64>) {
    let scheduler = &run.scheduler;
    let Some(model) = judge_model(scheduler, v, producer) else {
        return (
            Verdict::Uncertain("no judge model in the catalog".into()),
            None,
        );
    };
    let threshold = v.threshold.unwrap_or(7.0);
    let call = HostCall {
        task_id,
        model: &model,
        prompt: judge_prompt(v, input, output),
        max_output_tokens: 300,
        task_type: "judge",
        kind: "validation.judge",
        request: json!({ "validator": v.label(), "threshold": threshold }),
    };
    let scored = host_llm::call(run, call, |text| {
        let score = parse_score(text);
        let excerpt: String = text.chars().take(300).collect();
        let result = match score {
            Some(s) => Ok((s, excerpt)),
            None => Err(format!("the judge gave no score: {excerpt}")),
        };
        (result, json!({ "score": score }))
    })
    .await;
    match scored {
        Err(why) => (Verdict::Uncertain(why), None),
        Ok((s, _)) if s >= threshold => (Verdict::Pass, Some(s)),
        Ok((s, excerpt)) => (
            Verdict::Fail(format!("judge score {s} < {threshold}: {excerpt}")),
            Some(s),
        ),
    }
}

/// The judge's model: the configured one, else the highest-quality catalog model other
/// than the producer's.
pub(crate) fn judge_model(
    scheduler: &crate::scheduler::Scheduler,
    v: &ValidatorConfig,
    producer: Option<&str>,
) -> Option<crate::scheduler::catalog::ModelSpec> {
    match &v.model {
        Some(m) => scheduler.model(m).cloned(),
        None => {
            let mut models: Vec<_> = scheduler
                .models()
                .iter()
                .filter(|m| Some(m.name.as_str()) != producer)
                .collect();
            models.sort_by(|a, b| {
                b.quality
                    .partial_cmp(&a.quality)
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            models
                .first()
                .map(|m| (*m).clone())
                .or_else(|| scheduler.models().first().cloned())
        }
    }
}

/// The judge's prompt for one output.
pub(crate) fn judge_prompt(v: &ValidatorConfig, input: &str, output: &str) -> String {
    format!(
        "You are a strict judge.\nTask given to the agent:\n{input}\n\nThe agent's output:\n{output}\n\n\
         Criteria:\n{}\n\nReply with a line `score: N` (N from 0 to 10) followed by your reasons.",
        v.rubric.as_deref().unwrap_or_default()
    )
}

/// `score: N` (or `N/10`) in a judge's reply.
pub fn parse_score(text: &str) -> Option<f64> {
    let lower = text.to_lowercase();
    let at = lower.find("score")?;
    let rest = &lower[at + 5..];
    let start = rest.find(|c: char| c.is_ascii_digit())?;
    let num: String = rest[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    num.parse::<f64>().ok().filter(|s| (0.0..=10.0).contains(s))
}

/// Run the validators that apply to task `task_id` on its output. `Err` is the failure
/// that fails the task.
pub async fn validate(
    run: &Arc<RunContext>,
    task_id: u64,
    agent: &Arc<crate::runtime::LoadedAgent>,
    input: &str,
    output: &str,
) -> Result<(), Failure> {
    // The root has no spawn request: without configured validators it needs no reading.
    let configured = run.validators.iter().any(|v| {
        (v.agents.is_empty() || v.agents.iter().any(|a| *a == agent.name))
            && (!v.root_only || task_id == 1)
    });
    if task_id == 1 && !configured {
        return Ok(());
    }
    let own = if task_id == 1 {
        Vec::new()
    } else {
        run.ledger
            .with_reader(|conn| spawned::of_task(conn, &run.run_id, task_id))
            .unwrap_or_default()
    };
    let mut validators: Vec<&ValidatorConfig> = run
        .validators
        .iter()
        .filter(|v| {
            (v.agents.is_empty() || v.agents.iter().any(|a| *a == agent.name))
                && (!v.root_only || task_id == 1)
        })
        .chain(own.iter())
        .collect();
    if validators.is_empty() {
        return Ok(());
    }
    validators.sort_by_key(|v| v.rank());
    let with_tools = validators.iter().any(|v| v.kind == "claims");
    let (tools, producer, task_type) = run
        .ledger
        .with_reader(|conn| ledger_facts(run, Some(conn), task_id, with_tools))
        .unwrap_or_default();
    // Verdicts of cheap validators are committed together, before any validator that
    // calls out (judge, component, outcome) and before the result is returned.
    let mut pending: Vec<EventRecord> = Vec::new();
    for v in validators {
        if v.rank() > 0 {
            flush(run, &mut pending).await?;
        }
        let mut category = v.category.unwrap_or_else(|| v.default_category());
        let (verdict, score) = match v.kind.as_str() {
            "component" => {
                let (verdict, reported) =
                    component::check(run, task_id, agent, v, input, output).await;
                if v.category.is_none()
                    && let Some(c) = reported
                {
                    category = c;
                }
                (verdict, None)
            }
            "outcome" => (
                outcome::check(run, task_id, agent, v, input, output).await,
                None,
            ),
            "claims" => {
                let unbacked = v
                    .claims
                    .iter()
                    .find(|c| glob(&c.pattern, output) && !tools.contains(&c.tool))
                    .map(|c| {
                        format!(
                            "the output claims `{}` but tool `{}` never succeeded",
                            c.pattern, c.tool
                        )
                    })
                    .or_else(|| {
                        v.expected_tools
                            .iter()
                            .find(|t| !tools.contains(*t))
                            .map(|t| format!("expected tool `{t}` never succeeded"))
                    });
                (unbacked.map_or(Verdict::Pass, Verdict::Fail), None)
            }
            "judge" => judge(run, task_id, v, producer.as_deref(), input, output).await,
            _ => (programmatic(v, output), None),
        };
        let quality = match (&verdict, score) {
            (_, Some(s)) => s / 10.0,
            (Verdict::Pass, None) => 1.0,
            (Verdict::Fail(_), None) => 0.0,
            (Verdict::Uncertain(_), None) => 0.5,
        };
        if let Some(model) = &producer {
            let _ = run.scheduler.record_quality(
                model,
                task_type.as_deref().unwrap_or("default"),
                quality,
                &format!("validator:{}", v.label()),
            );
        }
        let event = EventRecord::note(
            run.run_id.clone(),
            task_id,
            "validation.result",
            !matches!(verdict, Verdict::Fail(_)),
            json!({ "validator": v.label(), "kind": v.kind }),
            json!({ "result": verdict, "category": category, "score": score, "model": producer }),
        );
        pending.push(event);
        if let Verdict::Fail(mut reason) = verdict {
            flush(run, &mut pending).await?;
            if v.kind == "outcome" {
                reason.push_str(&outcome::roll_back(run, task_id, &v.label()).await);
            }
            return Err(Failure {
                category,
                validator: v.label(),
                reason,
            });
        }
    }
    // Every validator passed. Their verdicts need not hold the task up: they are
    // committed with the task's end, which the caller records next; a crash before
    // that resumes the task, and validation runs again.
    run.defer(task_id, pending);
    Ok(())
}
