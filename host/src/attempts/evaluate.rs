//! Asynchronous quality evaluation (`[observe] evaluate = "judge"`): once a task has
//! completed and its end is recorded, an LLM judge scores its output in the
//! background — a spawned tokio task that neither the task, nor its parent waiting
//! for it, nor the run's end waits for.
//!
//! The judge is the judge validator's machinery ([`mod@super::validate`]: the same prompt,
//! model choice and `score: N` reading), its call a host-made call of the task
//! ([`crate::supervisor::host_llm`]): a `validation.judge` event of the task, with its
//! tokens and cost. The cost is reserved from the run's budget at the root (the task
//! has returned its share already), and counted in the task's and the run's totals in
//! the ledger, even when the run ended before the evaluation did
//! ([`crate::ledger::Ledger::record_evaluation`]); the [`crate::RunReport`] of a run
//! whose evaluations were still running does not include them.
//!
//! The result is recorded where quality scores are: a `validation.result` event of
//! the task (validator `evaluate:judge`, kind `evaluate`, its `score` 0–10, verdict
//! `pass` at or above the threshold), which `agent_traces.quality_score` and
//! `validation_result`, `inspect`, `drift` and `inspect --roi` read; and the producing
//! model's quality in the performance DB, as a validator's verdict is. A failed
//! evaluation (no budget, provider error, no score in the reply) is recorded as a
//! failed `validation.judge` event and logged; it never changes the task's outcome.
//!
//! [`Outstanding`] counts the evaluations still running, so that a host about to exit
//! can wait for them a bounded time ([`crate::Host::wait_for_evaluations`]).

use super::validate::{Scored, ask_judge, judge_model, judge_prompt, ledger_facts};
use crate::checks::{JudgeCheck, Verdict};
use crate::ledger::{EventKind, EventRecord};
use crate::supervisor::RunContext;
use crate::supervisor::host_llm::{HostCall, HostCallError};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The validator label of an evaluation's verdicts.
pub const LABEL: &str = "evaluate:judge";

/// The evaluations of a host still running.
pub struct Outstanding(watch::Sender<usize>);

impl Default for Outstanding {
    fn default() -> Self {
        Outstanding(watch::channel(0).0)
    }
}

/// One running evaluation; its drop counts it done.
struct Running(Arc<Outstanding>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Outstanding {
    fn begin(self: &Arc<Self>) -> Running {
        self.0.send_modify(|n| *n += 1);
        Running(self.clone())
    }

    /// How many are running now.
    pub fn running(&self) -> usize {
        *self.0.borrow()
    }

    /// Wait until none is running, or `bound` passed; how many still run then.
    pub async fn wait(&self, bound: Duration) -> usize {
        let mut rx = self.0.subscribe();
        let _ = tokio::time::timeout(bound, rx.wait_for(|n| *n == 0)).await;
        self.running()
    }
}

/// Scores completed tasks' outputs in the background.
pub struct Evaluator {
    /// The judge: rubric, threshold, model.
    pub judge: JudgeCheck,
    pub outstanding: Arc<Outstanding>,
}

impl Evaluator {
    /// Evaluate task `task_id`'s `output` in the background.
    pub fn spawn(self: &Arc<Self>, run: Arc<RunContext>, task_id: u64, output: String) {
        let running = self.outstanding.begin();
        let me = self.clone();
        tokio::spawn(async move {
            let _running = running;
            if let Err(e) = me.evaluate(&run, task_id, &output).await {
                tracing::warn!(run = %run.run_id, task = task_id, error = %e,
                    "the quality evaluation failed (the task is unaffected)");
            }
        });
    }

    async fn evaluate(
        &self,
        run: &Arc<RunContext>,
        task_id: u64,
        output: &str,
    ) -> anyhow::Result<()> {
        // The task's LLM calls (the producing model) may still be buffered.
        run.ledger.flush().await?;
        let (input, (_, producer, task_type)) = run.ledger.with_reader(|conn| {
            (
                crate::ledger::drift::task_input(conn, &run.run_id, task_id),
                ledger_facts(run, Some(conn), task_id, false),
            )
        })?;
        let input = input?.unwrap_or_default();
        let Some(model) = judge_model(&run.scheduler, &self.judge, producer.as_deref()) else {
            self.record_failure(run, task_id, "no judge model in the catalog")
                .await;
            anyhow::bail!("no judge model in the catalog");
        };
        let threshold = self.judge.threshold();
        let call = HostCall {
            task_id,
            model: &model,
            prompt: judge_prompt(&self.judge, &input, output),
            max_output_tokens: 300,
            task_type: "evaluate",
            kind: EventKind::ValidationJudge,
            request: json!({ "validator": LABEL, "threshold": threshold }),
            budget_task: Some(1),
        };
        let scored: Scored = match ask_judge(run, call).await {
            Ok(scored) => scored,
            Err(e) => {
                // A provider's failure and a reply without a score are recorded by the
                // call itself; the others are not.
                if matches!(
                    e,
                    HostCallError::NoBudget { .. } | HostCallError::Ledger { .. }
                ) {
                    self.record_failure(run, task_id, &e.to_string()).await;
                }
                return Err(e.into());
            }
        };
        let (verdict, score) = scored.verdict(threshold);
        if let Some(producer) = &producer {
            let _ = run.scheduler.record_quality(
                producer,
                task_type.as_deref().unwrap_or("default"),
                score.unwrap_or(0.0) / 10.0,
                &format!("validator:{LABEL}"),
            );
        }
        let event = EventRecord::note(
            run.run_id.clone(),
            task_id,
            EventKind::ValidationResult,
            !matches!(verdict, Verdict::Fail(_)),
            json!({ "validator": LABEL, "kind": "evaluate" }),
            json!({ "result": verdict, "category": "semantic", "score": score,
                    "model": producer, "judge": model.name }),
        );
        run.ledger.record_evaluation(event).await?;
        Ok(())
    }

    /// Record that the evaluation of `task_id` could not be made, and why.
    async fn record_failure(&self, run: &Arc<RunContext>, task_id: u64, why: &str) {
        let event = EventRecord::note(
            run.run_id.clone(),
            task_id,
            EventKind::ValidationJudge,
            false,
            json!({ "validator": LABEL }),
            json!({ "error": why }),
        );
        if let Err(e) = run.ledger.record_evaluation(event).await {
            tracing::warn!(error = %e, "cannot record a failed quality evaluation");
        }
    }
}
