//! Judge calibration (`agentflow eval <judge-config> <labelled.jsonl>`): run a judge
//! over outputs a person has labelled and report how often it is wrong — false
//! positives (bad outputs it passes) and false negatives (good outputs it fails).
//!
//! Each line of the labelled file is `{"task": "...", "output": "...", "label": "pass"|"fail"}`.
//! The judge is the first `kind = "judge"` entry of the config's `[[validators]]`, on
//! the config's model catalog. Calibration calls are not part of any run, so they are
//! not in the ledger; they are recorded in the performance DB like any LLM call.

use super::validate::{judge_model, judge_prompt, parse_score};
use crate::checks::ValidatorConfig;
use crate::providers::{ChatMessage, ChatRequest, Role};
use crate::scheduler::Scheduler;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Deserialize)]
struct Labelled {
    task: String,
    output: String,
    label: String,
}

/// One judged example.
#[derive(Debug, Serialize)]
pub struct Judged {
    pub line: usize,
    pub label: String,
    pub score: Option<f64>,
    pub verdict: String,
}

/// The calibration figures.
#[derive(Debug, Serialize)]
pub struct Calibration {
    pub model: String,
    pub threshold: f64,
    pub examples: usize,
    pub true_positives: usize,
    pub true_negatives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
    pub uncertain: usize,
    /// Bad outputs passed / bad outputs judged.
    pub false_positive_rate: f64,
    /// Good outputs failed / good outputs judged.
    pub false_negative_rate: f64,
    pub results: Vec<Judged>,
}

/// The judge [`calibrate`] runs: the first `kind = "judge"` entry of `[[validators]]`.
pub fn first_judge(validators: &[ValidatorConfig]) -> Option<&ValidatorConfig> {
    validators.iter().find(|v| v.judge().is_some())
}

/// Run `judge` over the labelled file.
pub async fn calibrate(
    scheduler: &Scheduler,
    judge: &ValidatorConfig,
    labelled: &Path,
) -> anyhow::Result<Calibration> {
    let text = std::fs::read_to_string(labelled)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", labelled.display()))?;
    let spec = judge
        .judge()
        .ok_or_else(|| anyhow::anyhow!("validator `{}` is not a judge", judge.label()))?;
    let model = judge_model(scheduler, spec, None)
        .ok_or_else(|| anyhow::anyhow!("no judge model in the catalog"))?;
    let threshold = spec.threshold();
    let provider = scheduler.provider(&model);
    let mut results = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let ex: Labelled = serde_json::from_str(line).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}: expected {{task, output, label}}: {e}",
                labelled.display(),
                i + 1
            )
        })?;
        if ex.label != "pass" && ex.label != "fail" {
            anyhow::bail!(
                "{}:{}: label must be \"pass\" or \"fail\"",
                labelled.display(),
                i + 1
            );
        }
        let chat = ChatRequest {
            model: model.provider_model_id().to_string(),
            messages: vec![ChatMessage {
                role: Role::User,
                content: judge_prompt(spec, &ex.task, &ex.output),
                tool_call_id: None,
            }],
            temperature: Some(0.0),
            max_output_tokens: Some(300),
            tools: vec![],
            task_type: Some("judge".into()),
        };
        let score = match provider.complete(&chat).await {
            Ok(reply) => parse_score(&reply.text),
            Err(e) => {
                tracing::warn!(line = i + 1, error = %e, "judge call failed");
                None
            }
        };
        let verdict = match score {
            None => "uncertain",
            Some(s) if s >= threshold => "pass",
            Some(_) => "fail",
        };
        results.push(Judged {
            line: i + 1,
            label: ex.label,
            score,
            verdict: verdict.into(),
        });
    }
    let count = |label: &str, verdict: &str| {
        results
            .iter()
            .filter(|r| r.label == label && r.verdict == verdict)
            .count()
    };
    let (tp, tn, fp, fnn) = (
        count("pass", "pass"),
        count("fail", "fail"),
        count("fail", "pass"),
        count("pass", "fail"),
    );
    let uncertain = results.iter().filter(|r| r.verdict == "uncertain").count();
    let rate = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    Ok(Calibration {
        model: model.name.clone(),
        threshold,
        examples: results.len(),
        true_positives: tp,
        true_negatives: tn,
        false_positives: fp,
        false_negatives: fnn,
        uncertain,
        false_positive_rate: rate(fp, fp + tn),
        false_negative_rate: rate(fnn, fnn + tp),
        results,
    })
}
