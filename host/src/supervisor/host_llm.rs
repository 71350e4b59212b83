//! LLM calls the host makes on a task's behalf — a validator's judge, the merge model —
//! rather than the guest: one prompt to one catalog model, the worst case reserved
//! from the task's budget before the call and settled after it, and the call recorded
//! as an event of the task (its own kind, skipped by replay) whatever the outcome.
//! The provider's failed attempts are recorded before it as `llm.attempt` events of
//! the task, and timed-out ones are charged their estimated prompt (see
//! [`super::llm_attempts`]).

use super::RunContext;
use super::llm_attempts::attempt_records;
use crate::ledger::{EventKind, EventRecord, now_ms};
use crate::providers::{ChatMessage, ChatRequest, Role};
use crate::scheduler::catalog::ModelSpec;
use serde_json::{Value, json};
use std::sync::Arc;

/// One host-made call.
pub struct HostCall<'a> {
    pub task_id: u64,
    pub model: &'a ModelSpec,
    pub prompt: String,
    pub max_output_tokens: u32,
    /// The request's task type (for mock rules and the performance DB).
    pub task_type: &'static str,
    /// The event's kind, e.g. `validation.judge` or `merge.llm`.
    pub kind: EventKind,
    /// Fields the event's request shows besides the prompt.
    pub request: Value,
    /// The task whose budget pays for the call, when not `task_id`'s own: a call made
    /// after `task_id` ended (its share of the budget returned) charges the root's.
    pub budget_task: Option<u64>,
}

/// Why a host-made LLM call has no result.
#[derive(Debug, thiserror::Error)]
pub enum HostCallError {
    #[error("no budget for the {task_type}: {source}")]
    NoBudget {
        task_type: &'static str,
        source: crate::supervisor::budget::BudgetError,
    },
    #[error("the {task_type} call failed: {message}")]
    Provider {
        task_type: &'static str,
        message: String,
    },
    /// The reply did not do (the caller's `interpret` said why).
    #[error("{0}")]
    Rejected(String),
    #[error("cannot record the {task_type} call: {source}")]
    Ledger {
        task_type: &'static str,
        source: crate::ledger::LedgerError,
    },
}

/// Make the call. `interpret` turns the reply's text into the caller's result plus
/// fields to add to the event's response; the event is `ok` when the result is. `Err`
/// says why there is no result: no budget, the provider failed, the reply did not do,
/// or the ledger could not record the call.
pub async fn call<T>(
    run: &Arc<RunContext>,
    c: HostCall<'_>,
    interpret: impl FnOnce(&str) -> (Result<T, String>, Value),
) -> Result<T, HostCallError> {
    let chat = ChatRequest {
        model: c.model.provider_model_id().to_string(),
        messages: vec![ChatMessage {
            role: Role::User,
            content: c.prompt.clone(),
            tool_call_id: None,
        }],
        temperature: Some(0.0),
        max_output_tokens: Some(c.max_output_tokens),
        tools: vec![],
        task_type: Some(c.task_type.into()),
    };
    let price = c.model.price();
    let max_out = c.max_output_tokens as u64;
    let est_in = crate::providers::estimate_tokens(&c.prompt) as u64 + 4;
    let reservation = run
        .budget
        .reserve(
            c.budget_task.unwrap_or(c.task_id),
            price.cost(est_in, max_out),
            est_in + max_out,
        )
        .map_err(|source| HostCallError::NoBudget {
            task_type: c.task_type,
            source,
        })?;
    let started_at = now_ms();
    let completion = run.scheduler.provider(c.model).complete_traced(&chat).await;
    let (attempts, charged) =
        attempt_records(&c.model.name, &completion.failed_attempts, &price, est_in);
    let (result, mut response, tokens, cost) = match completion.result {
        Err(e) => {
            run.budget
                .settle(reservation, charged.cost_usd, charged.tokens);
            (
                Err(HostCallError::Provider {
                    task_type: c.task_type,
                    message: e.to_string(),
                }),
                json!({ "error": e.to_string() }),
                (0, 0),
                0.0,
            )
        }
        Ok(reply) => {
            let cost = price.cost(reply.input_tokens as u64, reply.output_tokens as u64);
            run.budget.settle(
                reservation,
                cost + charged.cost_usd,
                (reply.input_tokens + reply.output_tokens) as u64 + charged.tokens,
            );
            let (result, extra) = interpret(&reply.text);
            let result = result.map_err(HostCallError::Rejected);
            let mut response = json!({ "text": reply.text });
            if let (Some(r), Value::Object(extra)) = (response.as_object_mut(), extra) {
                r.extend(extra);
            }
            (
                result,
                response,
                (reply.input_tokens, reply.output_tokens),
                cost,
            )
        }
    };
    if let (Err(why), Some(r)) = (&result, response.as_object_mut()) {
        r.entry("error").or_insert_with(|| json!(why.to_string()));
    }
    let mut request = c.request;
    if let Some(r) = request.as_object_mut() {
        r.insert("prompt".into(), json!(c.prompt));
    }
    for attempt in attempts {
        let event = EventRecord {
            response_text: None,
            run_id: run.run_id.clone(),
            task_id: c.task_id,
            kind: EventKind::LlmAttempt,
            ok: false,
            request: attempt.request,
            response: attempt.response,
            identity: None,
            model: Some(c.model.name.clone()),
            tokens_in: attempt.tokens_in,
            tokens_out: 0,
            cost_usd: attempt.cost_usd,
            started_at,
            finished_at: now_ms(),
        };
        run.ledger
            .record(event)
            .await
            .map_err(|source| HostCallError::Ledger {
                task_type: c.task_type,
                source,
            })?;
    }
    let event = EventRecord {
        response_text: None,
        run_id: run.run_id.clone(),
        task_id: c.task_id,
        kind: c.kind,
        ok: result.is_ok(),
        request,
        response,
        identity: None,
        model: Some(c.model.name.clone()),
        tokens_in: tokens.0,
        tokens_out: tokens.1,
        cost_usd: cost,
        started_at,
        finished_at: now_ms(),
    };
    run.ledger
        .record(event)
        .await
        .map_err(|source| HostCallError::Ledger {
            task_type: c.task_type,
            source,
        })?;
    result
}
