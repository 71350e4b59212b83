//! Run a task to its outcome: attempts, validation, retries, human review, escalation
//! and outcome checks, above the runtime (which runs one attempt in a fresh store,
//! [`crate::runtime::execute`]).
//!
//! A completed output passes the run's validators ([`validate()`]): programmatic checks
//! ([`crate::checks`]), the ledger check for hallucinated success, validator components
//! ([`component`]), operators' commands on the task's workspace view ([`command`]), an
//! LLM judge, outcome checks that roll a task's subtree back when
//! the world is wrong ([`outcome`]). A failure is retried as `[retry]` says
//! ([`retry`]) — as it was, at another temperature, with the validator's feedback, on
//! a better model, or after a human's decision ([`review`]) — each category's
//! strategies chained across attempts. After a task ended, its output may be scored
//! in the background ([`evaluate`], `[observe] evaluate = "judge"`).

pub mod calibrate;
pub mod command;
pub mod component;
pub mod evaluate;
pub mod outcome;
pub mod retry;
pub mod review;
pub mod validate;

use crate::capabilities::checkpoint::Restart;
use crate::ledger::{EventKind, EventRecord};
use crate::merge::MergeConfig;
use crate::replay::DivergencePolicy;
use crate::runtime::execute::{AttemptSetup, run_once};
use crate::runtime::{LoadedAgent, Runtime};
use crate::supervisor::{
    ComponentRef, ReplayStart, RunContext, TaskOutcome, TaskRunner, TaskStart,
};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

pub use retry::{Chain, RetryConfig, Strategy};
pub use validate::{parse_score, validate};

/// Runs a run's tasks for its supervisor: the runtime that instantiates components,
/// the run's `[retry]` rules and its `[merge]` settings (for the capabilities), and
/// the background evaluation of completed tasks, when configured.
pub struct Runner {
    pub runtime: Arc<Runtime>,
    pub retry: RetryConfig,
    pub merge: Arc<MergeConfig>,
    pub evaluator: Option<Arc<evaluate::Evaluator>>,
}

#[async_trait::async_trait]
impl TaskRunner for Runner {
    fn load_agent(&self, path: &Path) -> anyhow::Result<ComponentRef> {
        Ok(self.runtime.load_file(path)?.component_ref())
    }

    fn ended(&self, run: &Arc<RunContext>, id: u64, outcome: &TaskOutcome) {
        if let (Some(evaluator), TaskOutcome::Completed(output)) = (&self.evaluator, outcome) {
            evaluator.spawn(run.clone(), id, output.clone());
        }
    }

    async fn run_task(&self, run: Arc<RunContext>, start: TaskStart) -> TaskOutcome {
        let agent = match self.runtime.get(&start.agent) {
            Ok(agent) => agent,
            Err(e) => return TaskOutcome::Failed(format!("cannot load the component: {e:#}")),
        };
        execute_task(
            self,
            run,
            start.id,
            start.depth,
            agent,
            start.input,
            start.replay,
            start.slot,
        )
        .await
    }

    async fn validate_merged(
        &self,
        run: Arc<RunContext>,
        task_id: u64,
        agent: &ComponentRef,
        input: &str,
        text: &str,
    ) -> Result<(), String> {
        let agent = self
            .runtime
            .get(agent)
            .map_err(|e| format!("cannot load the component: {e:#}"))?;
        validate::validate_merge(self, &run, task_id, &agent, input, text)
            .await
            .map_err(|f| f.to_string())
    }
}

/// Execute task `task_id` of `run` — replaying its record first when `replay` is given
/// — and return how it ended. Does not record the end itself (the caller does, through
/// `RunContext::finish`). A replay that diverges fails the task, or restarts it live
/// from its last checkpoint, as the run's divergence policy says. A completed output
/// passes the run's validators; a failure is retried (with the validator's feedback,
/// or on a better model) as `[retry]` allows and the budget permits — each retry a
/// `validation.retry` event that a resume replays like the rest.
#[allow(clippy::too_many_arguments)]
pub async fn execute_task(
    runner: &Runner,
    run: Arc<RunContext>,
    task_id: u64,
    depth: u32,
    agent: Arc<LoadedAgent>,
    input: String,
    mut replay: Option<ReplayStart>,
    slot: Option<crate::supervisor::shared_limits::TaskSlot>,
) -> TaskOutcome {
    if let Err(e) = run
        .ledger
        .start_task(run.run_id.clone(), task_id, input.clone())
        .await
    {
        return TaskOutcome::Failed(format!("cannot record task start: {e}"));
    }
    let mut later: std::collections::VecDeque<_> = replay
        .as_mut()
        .map(|r| std::mem::take(&mut r.later))
        .unwrap_or_default()
        .into();
    let mut setup = AttemptSetup {
        replay,
        slot,
        ..Default::default()
    };
    let mut attempt = 1;
    loop {
        let result = run_once(
            &runner.runtime,
            &runner.merge,
            &run,
            task_id,
            depth,
            &agent,
            &input,
            setup,
        )
        .await;
        let outcome = match result.diverged {
            Some(divergence) => {
                return after_divergence(runner, &run, task_id, depth, &agent, &input, divergence)
                    .await;
            }
            None => result.outcome,
        };
        let TaskOutcome::Completed(output) = outcome else {
            return outcome;
        };
        // A later attempt is already recorded: this one failed validation before a crash.
        if let Some((replay, nondet, marker)) = later.pop_front() {
            let marker = marker.unwrap_or_default();
            setup = AttemptSetup {
                replay: Some(ReplayStart {
                    replay,
                    nondet,
                    later: Vec::new(),
                }),
                slot: run.take_slot(task_id).await,
                feedback: marker["feedback"].as_str().map(str::to_string),
                model: marker["model"].as_str().map(str::to_string),
                temperature: marker["temperature"].as_f64(),
                ..Default::default()
            };
            attempt += 1;
            continue;
        }
        let failure = match validate(runner, &run, task_id, &agent, &input, &output).await {
            Ok(()) => return TaskOutcome::Completed(output),
            Err(failure) => failure,
        };
        let strategy = runner.retry.strategy(failure.category, attempt + 1);
        if attempt >= runner.retry.max_attempts || strategy == Strategy::None {
            return TaskOutcome::Failed(failure.to_string());
        }
        if run.budget.remaining(task_id) <= 0.0 {
            return TaskOutcome::Failed(format!("{failure}; no budget left to retry"));
        }
        let human = match strategy {
            Strategy::Human => {
                match review::await_decision(&run, task_id, attempt, &failure, &output).await {
                    Ok(note) => note.map(|n| format!("Guidance from a human reviewer: {n}\n")),
                    Err(why) => return TaskOutcome::Failed(why.to_string()),
                }
            }
            _ => None,
        };
        let excerpt: String = output.chars().take(1000).collect();
        let feedback = strategy.gives_feedback().then(|| format!(
            "{}Feedback on your previous attempt: it was rejected by the validator `{}` ({}): {}\nYour previous answer was:\n{excerpt}\nProduce a corrected answer.",
            human.as_deref().unwrap_or_default(),
            failure.validator,
            failure.category.as_str(),
            failure.reason
        ));
        let temperature =
            (strategy == Strategy::Temperature).then(|| runner.retry.temperature_for(attempt + 1));
        let model = match strategy {
            Strategy::Escalate => {
                let mut models: Vec<_> = run.scheduler.models().to_vec();
                models.sort_by(|a, b| {
                    b.quality
                        .partial_cmp(&a.quality)
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
                models.first().map(|m| m.name.clone())
            }
            // A re-run keeps the model the failed attempt was answered by.
            Strategy::Same | Strategy::Temperature => last_attempt_model(&run, task_id).await,
            _ => None,
        };
        let marker = json!({
            "attempt": attempt + 1,
            "strategy": strategy,
            "category": failure.category,
            "validator": failure.validator,
            "reason": failure.reason,
            "feedback": feedback,
            "model": model,
            "temperature": temperature,
        });
        let event = EventRecord {
            response_text: None,
            model: model.clone(),
            ..EventRecord::note(
                run.run_id.clone(),
                task_id,
                EventKind::ValidationRetry,
                true,
                serde_json::Value::Null,
                marker,
            )
        };
        if let Err(e) = run.ledger.record(event).await {
            return TaskOutcome::Failed(format!("{failure}; cannot record the retry: {e}"));
        }
        tracing::info!(run = %run.run_id, task = task_id, attempt = attempt + 1, ?strategy, "retrying after a validation failure");
        setup = AttemptSetup {
            slot: run.take_slot(task_id).await,
            feedback,
            model,
            temperature,
            ..Default::default()
        };
        attempt += 1;
    }
}

/// A replay diverged: record it, then fail or restart from the last checkpoint.
async fn after_divergence(
    runner: &Runner,
    run: &Arc<RunContext>,
    task_id: u64,
    depth: u32,
    agent: &Arc<LoadedAgent>,
    input: &str,
    divergence: String,
) -> TaskOutcome {
    let restart = match run.settings.divergence {
        DivergencePolicy::Fail => None,
        DivergencePolicy::FromCheckpoint => {
            // Checkpoints are buffered writes: read back only what has committed.
            if let Err(e) = run.ledger.flush().await {
                return TaskOutcome::Failed(format!("{divergence}; and the ledger failed: {e}"));
            }
            last_checkpoint(run, task_id)
        }
    };
    let note = json!({ "error": divergence, "policy": run.settings.divergence,
                       "restart_from_checkpoint": restart.as_ref().map(|r| json!({ "number": r.number, "note": r.checkpoint.note, "step": r.checkpoint.step })) });
    let event = EventRecord::note(
        run.run_id.clone(),
        task_id,
        EventKind::ReplayDiverged,
        false,
        serde_json::Value::Null,
        note,
    );
    if let Err(e) = run.ledger.record(event).await {
        return TaskOutcome::Failed(format!("{divergence}; and the ledger failed: {e}"));
    }
    match restart {
        None if run.settings.divergence == DivergencePolicy::FromCheckpoint => {
            TaskOutcome::Failed(format!("{divergence} (no checkpoint to restart from)"))
        }
        None => TaskOutcome::Failed(divergence),
        Some(checkpoint) => {
            let setup = AttemptSetup {
                restart: Some(checkpoint),
                slot: run.take_slot(task_id).await,
                ..Default::default()
            };
            let outcome = run_once(
                &runner.runtime,
                &runner.merge,
                run,
                task_id,
                depth,
                agent,
                input,
                setup,
            )
            .await
            .outcome;
            validated(runner, run, task_id, agent, input, outcome).await
        }
    }
}

/// Pass a completed task's output through the run's validators (no retries).
async fn validated(
    runner: &Runner,
    run: &Arc<RunContext>,
    task_id: u64,
    agent: &Arc<LoadedAgent>,
    input: &str,
    outcome: TaskOutcome,
) -> TaskOutcome {
    match outcome {
        TaskOutcome::Completed(output) => {
            match validate(runner, run, task_id, agent, input, &output).await {
                Ok(()) => TaskOutcome::Completed(output),
                Err(failure) => TaskOutcome::Failed(failure.to_string()),
            }
        }
        other => other,
    }
}

/// The model that answered every LLM call of the task's latest attempt (its calls
/// since its last `validation.retry` marker), if they were all answered by one.
async fn last_attempt_model(run: &RunContext, task_id: u64) -> Option<String> {
    run.ledger.flush().await.ok()?;
    let conn = run.ledger.reader().ok()?;
    let events = crate::ledger::query::events(&conn, &run.run_id, Some(task_id)).ok()?;
    let start = events
        .iter()
        .rposition(|e| e.kind == EventKind::ValidationRetry)
        .map_or(0, |i| i + 1);
    let mut models = events[start..]
        .iter()
        .filter(|e| e.kind == EventKind::LlmComplete && e.ok)
        .filter_map(|e| e.model.clone());
    let first = models.next()?;
    models.all(|m| m == first).then_some(first)
}

/// The task's latest checkpoint in the ledger, ready to restart from.
fn last_checkpoint(run: &RunContext, task_id: u64) -> Option<Restart> {
    let conn = run.ledger.reader().ok()?;
    let row = crate::ledger::query::checkpoints(&conn, &run.run_id, Some(task_id))
        .ok()?
        .pop()?;
    let state = crate::ledger::query::blob(&conn, &row.state_hash).ok()??;
    Some(Restart::from_saved(
        row.number,
        state,
        row.note,
        row.step,
        row.saved_at as u64,
        row.host_state,
    ))
}
