//! Validating a task's output: every applicable validator in order, cheapest first,
//! each verdict a `validation.result` event (shown by `agentflow inspect`, and feeding
//! the producing model's quality scores in the performance DB). The first failure
//! fails the task with its category and reason.

use super::{Runner, component, outcome};
use crate::checks::{
    Category, Failure, JudgeCheck, ValidatorConfig, ValidatorKind, Verdict, glob, programmatic,
};
use crate::ledger::{EventKind, EventRecord, query};
use crate::supervisor::RunContext;
use crate::supervisor::host_llm::{self, HostCall};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;

/// What the ledger says about the output being validated: the tools that succeeded in
/// the subtree of `task_id` (read only `with_tools`, for claims), and the model used
/// most by the task's current attempt (after its last `validation.retry`) with the
/// task type it was asked for. Reads only the events of the tasks concerned.
pub(crate) fn ledger_facts(
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
        if e.kind == EventKind::ValidationRetry {
            models.clear();
            task_type = None;
        }
        if e.kind == EventKind::LlmComplete && e.ok {
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
                if e.kind == EventKind::ToolsCall
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
    spec: &JudgeCheck,
    producer: Option<&str>,
    input: &str,
    output: &str,
) -> (Verdict, Option<f64>) {
    let scheduler = &run.scheduler;
    let Some(model) = judge_model(scheduler, spec, producer) else {
        return (
            Verdict::Uncertain("no judge model in the catalog".into()),
            None,
        );
    };
    let threshold = spec.threshold();
    let call = HostCall {
        task_id,
        model: &model,
        prompt: judge_prompt(spec, input, output),
        max_output_tokens: 300,
        task_type: "judge",
        kind: EventKind::ValidationJudge,
        request: json!({ "validator": v.label(), "threshold": threshold }),
        budget_task: None,
    };
    match ask_judge(run, call).await {
        Err(why) => (Verdict::Uncertain(why.to_string()), None),
        Ok(scored) => scored.verdict(threshold),
    }
}

/// A judge's answer: its score (0–10) and the head of its reply.
pub(crate) struct Scored {
    pub score: f64,
    pub excerpt: String,
}

impl Scored {
    /// The verdict at `threshold`, with the score.
    pub(crate) fn verdict(self, threshold: f64) -> (Verdict, Option<f64>) {
        let s = self.score;
        if s >= threshold {
            (Verdict::Pass, Some(s))
        } else {
            (
                Verdict::Fail(format!("judge score {s} < {threshold}: {}", self.excerpt)),
                Some(s),
            )
        }
    }
}

/// Make a judge's call and read its score (a reply without one is rejected).
pub(crate) async fn ask_judge(
    run: &Arc<RunContext>,
    call: HostCall<'_>,
) -> Result<Scored, host_llm::HostCallError> {
    host_llm::call(run, call, |text| {
        let score = parse_score(text);
        let excerpt: String = text.chars().take(300).collect();
        let result = match score {
            Some(score) => Ok(Scored { score, excerpt }),
            None => Err(format!("the judge gave no score: {excerpt}")),
        };
        (result, json!({ "score": score }))
    })
    .await
}

/// The judge's model: the configured one, else the highest-quality catalog model other
/// than the producer's.
pub(crate) fn judge_model(
    scheduler: &crate::scheduler::Scheduler,
    spec: &JudgeCheck,
    producer: Option<&str>,
) -> Option<crate::scheduler::catalog::ModelSpec> {
    match &spec.model {
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
pub(crate) fn judge_prompt(spec: &JudgeCheck, input: &str, output: &str) -> String {
    format!(
        "You are a strict judge.\nTask given to the agent:\n{input}\n\nThe agent's output:\n{output}\n\n\
         Criteria:\n{}\n\nReply with a line `score: N` (N from 0 to 10) followed by your reasons.",
        spec.rubric
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
    runner: &Runner,
    run: &Arc<RunContext>,
    task_id: u64,
    agent: &Arc<crate::runtime::LoadedAgent>,
    input: &str,
    output: &str,
) -> Result<(), Failure> {
    // The root has no spawn request: without configured validators it needs no reading.
    let configured = run.settings.validators.iter().any(|v| {
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
            .with_reader(|conn| crate::checks::spawned::of_task(conn, &run.run_id, task_id))
            .unwrap_or_default()
    };
    let validators: Vec<&ValidatorConfig> = run
        .settings
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
    check_all(runner, run, task_id, agent, validators, input, output, None).await
}

/// Check a merged text (task `task_id`'s, `subject` what was merged) with every
/// validator declared for agent `merge`. Verdicts are recorded under the task, marked
/// with the merge's subject; they feed no model's quality score (the merge model's
/// call is the host's, not the task's).
pub async fn validate_merge(
    runner: &Runner,
    run: &Arc<RunContext>,
    task_id: u64,
    agent: &Arc<crate::runtime::LoadedAgent>,
    input: &str,
    text: &str,
) -> Result<(), Failure> {
    let validators: Vec<&ValidatorConfig> = run
        .settings
        .validators
        .iter()
        .filter(|v| v.agents.iter().any(|a| a == "merge"))
        .collect();
    check_all(
        runner,
        run,
        task_id,
        agent,
        validators,
        input,
        text,
        Some(input),
    )
    .await
}

/// Run `validators` on `output`, cheapest first. `merge`: the subject when the output
/// is a merged text rather than the task's own output.
#[allow(clippy::too_many_arguments)]
async fn check_all(
    runner: &Runner,
    run: &Arc<RunContext>,
    task_id: u64,
    agent: &Arc<crate::runtime::LoadedAgent>,
    mut validators: Vec<&ValidatorConfig>,
    input: &str,
    output: &str,
    merge: Option<&str>,
) -> Result<(), Failure> {
    if validators.is_empty() {
        return Ok(());
    }
    validators.sort_by_key(|v| v.rank());
    let with_tools = validators
        .iter()
        .any(|v| matches!(v.kind, ValidatorKind::Claims(_)));
    // The facts include buffered events (the model that produced the output): read
    // them once the task's writes have committed.
    let _ = run.ledger.flush().await;
    let (tools, producer, task_type) = run
        .ledger
        .with_reader(|conn| ledger_facts(run, Some(conn), task_id, with_tools))
        .unwrap_or_default();
    // A merged text was produced by the merge model, not by the task's model.
    let producer = producer.filter(|_| merge.is_none());
    // Verdicts of cheap validators are committed together, before any validator that
    // calls out (judge, component, outcome) and before the result is returned.
    let mut pending: Vec<EventRecord> = Vec::new();
    for v in validators {
        if v.rank() > 0 {
            flush(run, &mut pending).await?;
        }
        let mut category = v.category.unwrap_or_else(|| v.default_category());
        let (verdict, score) = match &v.kind {
            ValidatorKind::Component(_) => {
                let (verdict, reported) =
                    component::check(runner, run, task_id, agent, v, input, output).await;
                if v.category.is_none()
                    && let Some(c) = reported
                {
                    category = c;
                }
                (verdict, None)
            }
            ValidatorKind::Outcome(_) => (
                outcome::check(runner, run, task_id, agent, v, input, output).await,
                None,
            ),
            ValidatorKind::Claims(c) => {
                let unbacked = c
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
                        c.expected_tools
                            .iter()
                            .find(|t| !tools.contains(*t))
                            .map(|t| format!("expected tool `{t}` never succeeded"))
                    });
                (unbacked.map_or(Verdict::Pass, Verdict::Fail), None)
            }
            ValidatorKind::Judge(spec) => {
                judge(run, task_id, v, spec, producer.as_deref(), input, output).await
            }
            ValidatorKind::JsonSchema(_) | ValidatorKind::Length(_) | ValidatorKind::Pattern(_) => {
                (programmatic(v, output), None)
            }
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
            EventKind::ValidationResult,
            !matches!(verdict, Verdict::Fail(_)),
            json!({ "validator": v.label(), "kind": v.kind.name(), "merge": merge }),
            json!({ "result": verdict, "category": category, "score": score, "model": producer }),
        );
        pending.push(event);
        if let Verdict::Fail(mut reason) = verdict {
            flush(run, &mut pending).await?;
            if let ValidatorKind::Outcome(_) = v.kind {
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
    // that resumes the task, and validation runs again. A merge's verdicts are not
    // part of the task's end: they are committed with the merge's decision.
    if merge.is_some() {
        return flush(run, &mut pending).await;
    }
    run.defer(task_id, pending);
    Ok(())
}
