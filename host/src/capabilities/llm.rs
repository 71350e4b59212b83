//! `agentflow:agent/llm`: language-model completions.
//!
//! Per call: the scheduler plans (filters the catalog, predicts tokens, scores by the
//! request's priority); then for the best model with quota — and, if it fails, the
//! next one as a fallback within the same call — the run's budget reserves the
//! worst-case cost, the decision is recorded in the ledger (candidates, scores,
//! reservation, reason), the provider is called, quota/budget/health are settled with
//! the real usage, and the reply is recorded before the guest sees it.
//!
//! Every attempt the provider made that failed (a 429, a 5xx, a timeout, a 2xx it
//! could not use) is recorded as an `llm.attempt` event, and a timed-out attempt's
//! estimated prompt is charged to the budget (see [`crate::supervisor::llm_attempts`]).
//! Health and the performance DB get the latency of the attempt that answered, not
//! the retry waits.

use super::{Call, views::LlmView};
use crate::bindings::llm::{
    FinishReason, Host, LlmError, Message, Priority, Request, Response, Role, ToolCall, Usage,
};
use crate::ledger::EventKind;
use crate::providers::Price;
use crate::providers::{self, ChatMessage, ChatRequest, FailedAttempt, ProviderError, ToolDef};
use crate::scheduler::{self, SchedError, SchedRequest};
use crate::supervisor::llm_attempts::{AttemptCharge, attempt_records};
use serde_json::json;
use std::time::Instant;

fn role(r: Role) -> providers::Role {
    match r {
        Role::System => providers::Role::System,
        Role::User => providers::Role::User,
        Role::Assistant => providers::Role::Assistant,
        Role::Tool => providers::Role::Tool,
    }
}

fn priority(p: Priority) -> scheduler::Priority {
    match p {
        Priority::Balanced => scheduler::Priority::Balanced,
        Priority::Cost => scheduler::Priority::Cost,
        Priority::Quality => scheduler::Priority::Quality,
        Priority::Latency => scheduler::Priority::Latency,
    }
}

fn sched_error(e: SchedError) -> LlmError {
    match e {
        SchedError::NoViableModel(m) => LlmError::NoViableModel(m),
        SchedError::ModelUnavailable(m) => LlmError::ModelUnavailable(m),
        SchedError::QuotaExhausted(m) => LlmError::QuotaExhausted(m),
        SchedError::BudgetExceeded(m) => LlmError::BudgetExceeded(m),
    }
}

/// Whether another model may succeed where this one failed.
fn worth_a_fallback(e: &ProviderError) -> bool {
    !matches!(e, ProviderError::InvalidRequest(_))
}

fn finish(f: providers::FinishReason) -> FinishReason {
    match f {
        providers::FinishReason::Stop => FinishReason::Stop,
        providers::FinishReason::Length => FinishReason::Length,
        providers::FinishReason::ToolCalls => FinishReason::ToolCalls,
        providers::FinishReason::ContentFilter => FinishReason::ContentFilter,
        providers::FinishReason::Other => FinishReason::Other,
    }
}

fn provider_error(e: &ProviderError) -> LlmError {
    match e {
        ProviderError::RateLimited { retry_after_ms } => {
            LlmError::RateLimited((*retry_after_ms).min(u32::MAX as u64) as u32)
        }
        ProviderError::Unavailable(m) => LlmError::ProviderUnavailable(m.clone()),
        ProviderError::Auth(m) => {
            LlmError::ProviderUnavailable(format!("authentication failed: {m}"))
        }
        ProviderError::Timeout => LlmError::Timeout,
        ProviderError::InvalidRequest(m) => LlmError::InvalidRequest(m.clone()),
        ProviderError::Malformed(m) => LlmError::MalformedResponse(m.clone()),
    }
}

/// An error as recorded: readable, and typed enough to be handed back on replay.
fn error_json(e: &LlmError) -> serde_json::Value {
    let (kind, detail) = match e {
        LlmError::NoViableModel(m) => ("no-viable-model", json!(m)),
        LlmError::ModelUnavailable(m) => ("model-unavailable", json!(m)),
        LlmError::QuotaExhausted(m) => ("quota-exhausted", json!(m)),
        LlmError::BudgetExceeded(m) => ("budget-exceeded", json!(m)),
        LlmError::RateLimited(ms) => ("rate-limited", json!(ms)),
        LlmError::ProviderUnavailable(m) => ("provider-unavailable", json!(m)),
        LlmError::Timeout => ("timeout", json!(null)),
        LlmError::InvalidRequest(m) => ("invalid-request", json!(m)),
        LlmError::MalformedResponse(m) => ("malformed-response", json!(m)),
        LlmError::Denied(m) => ("denied", json!(m)),
    };
    json!({ "error": format!("{e:?}"), "error_kind": kind, "detail": detail })
}

fn error_from_json(v: &serde_json::Value) -> LlmError {
    let text = || v["detail"].as_str().unwrap_or_default().to_string();
    match v["error_kind"].as_str().unwrap_or_default() {
        "no-viable-model" => LlmError::NoViableModel(text()),
        "model-unavailable" => LlmError::ModelUnavailable(text()),
        "quota-exhausted" => LlmError::QuotaExhausted(text()),
        "budget-exceeded" => LlmError::BudgetExceeded(text()),
        "rate-limited" => LlmError::RateLimited(v["detail"].as_u64().unwrap_or(0) as u32),
        "provider-unavailable" => LlmError::ProviderUnavailable(text()),
        "timeout" => LlmError::Timeout,
        "invalid-request" => LlmError::InvalidRequest(text()),
        "malformed-response" => LlmError::MalformedResponse(text()),
        _ => LlmError::Denied(text()),
    }
}

/// The guest-visible result of a recorded `llm.complete` (the reply decoded straight
/// from the stored text); a trap only when the ledger cannot be read.
fn replayed_result(
    rec: &crate::replay::RecordedCall,
) -> wasmtime::Result<Result<Response, LlmError>> {
    if !rec.ok {
        return Ok(Err(error_from_json(&rec.response()?)));
    }
    let reply: providers::ChatResponse = match rec.response_as()? {
        Ok(r) => r,
        Err(e) => {
            return Ok(Err(LlmError::MalformedResponse(format!(
                "recorded reply unreadable: {e}"
            ))));
        }
    };
    Ok(Ok(Response {
        text: reply.text,
        tool_calls: reply
            .tool_calls
            .into_iter()
            .map(|c| ToolCall {
                id: c.id,
                name: c.name,
                arguments: c.arguments,
            })
            .collect(),
        model: rec.model.clone().unwrap_or(reply.model),
        usage: Usage {
            input_tokens: reply.input_tokens,
            output_tokens: reply.output_tokens,
            cost_usd: rec.cost_usd,
        },
        finish_reason: finish(reply.finish_reason),
    }))
}

/// The `llm.attempt` events of a provider call's failed attempts on `model`, and
/// what they are charged in total.
fn attempt_events(
    model: &str,
    attempts: &[FailedAttempt],
    price: &Price,
    prompt_tokens: u64,
    started_at: i64,
) -> (Vec<Call>, AttemptCharge) {
    let (records, charged) = attempt_records(model, attempts, price, prompt_tokens);
    let calls = records
        .into_iter()
        .map(|record| {
            let mut call = Call::plain(
                EventKind::LlmAttempt,
                false,
                record.request,
                record.response,
                started_at,
            );
            call.model = Some(model.to_string());
            call.tokens_in = record.tokens_in;
            call.cost_usd = record.cost_usd;
            call
        })
        .collect();
    (calls, charged)
}

/// An `llm.decision` event's response: why this attempt went to this model. Its own
/// fields are in the alphabetical order a JSON tree's keys were written in; the
/// candidate reports' fields come in their declared order.
#[derive(serde::Serialize)]
struct Decision<'a> {
    attempt: usize,
    candidates: &'a [crate::scheduler::CandidateReport],
    chosen: &'a str,
    fallbacks: Vec<&'a String>,
    priority: scheduler::Priority,
    reason: String,
    reservation: Reservation,
    weights: &'a crate::scheduler::Weights,
}

/// The quota and budget an attempt reserved.
#[derive(serde::Serialize)]
struct Reservation {
    at_ms: i64,
    probe: bool,
    tokens: u64,
    usd: f64,
    waited_ms: u64,
}

fn to_chat(req: &Request, model: String) -> ChatRequest {
    ChatRequest {
        model,
        messages: req
            .messages
            .iter()
            .map(|m: &Message| ChatMessage {
                role: role(m.role),
                content: m.content.clone(),
                tool_call_id: m.tool_call_id.clone(),
            })
            .collect(),
        temperature: req.temperature.map(f64::from),
        max_output_tokens: req.max_output_tokens,
        tools: req
            .tools
            .iter()
            .map(|t| ToolDef {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters_schema: t.parameters_schema.clone(),
            })
            .collect(),
        task_type: req.task_type.clone(),
    }
}

/// The capabilities a request needs: those it names, and `function-calling` when it
/// offers the model tools — if the catalog declares that capability at all (a catalog
/// that never names it is taken to call functions everywhere).
fn required_capabilities(req: &Request, scheduler: &crate::scheduler::Scheduler) -> Vec<String> {
    let mut needed = req.capabilities.clone();
    const CALLS: &str = "function-calling";
    let calls = |caps: &[String]| caps.iter().any(|c| c.eq_ignore_ascii_case(CALLS));
    if !req.tools.is_empty()
        && !calls(&needed)
        && scheduler.models().iter().any(|m| calls(&m.capabilities))
    {
        needed.push(CALLS.to_string());
    }
    needed
}

impl Host for LlmView<'_> {
    async fn complete(&mut self, req: Request) -> wasmtime::Result<Result<Response, LlmError>> {
        let mut template = to_chat(&req, String::new());
        if let Some(t) = self.llm.temperature {
            template.temperature = Some(t);
        }
        if let Some(feedback) = &self.llm.feedback {
            template.messages.push(ChatMessage {
                role: providers::Role::User,
                content: feedback.clone(),
                tool_call_id: None,
            });
        }
        // What the guest asked, independent of host state (budget, health): the replay key.
        let identity =
            json!({ "chat": template, "pin": req.model, "allow_fallback": req.allow_fallback });
        // What the task has seen, for checkpoints' context hash: the prompt, streamed into
        // the digest (no copy of it on the call's path).
        let _ = serde_json::to_writer(&mut self.site.seen, &identity);
        let mut durable = self.site.begin(EventKind::LlmComplete, identity)?;
        if let Some(rec) = durable.replayed() {
            return replayed_result(&rec);
        }
        let estimated_input_tokens: u64 = template
            .messages
            .iter()
            .map(|m| providers::estimate_tokens(&m.content) as u64 + 4)
            .sum();
        let sreq = SchedRequest {
            estimated_input_tokens,
            max_output_tokens: req
                .max_output_tokens
                .unwrap_or(self.site.run.settings.default_max_output_tokens)
                as u64,
            priority: priority(req.priority),
            capabilities: required_capabilities(&req, &self.site.run.scheduler),
            min_context_window: req.min_context_window,
            task_type: req.task_type.clone(),
            pinned: self
                .llm
                .model_override
                .clone()
                .or_else(|| self.site.run.settings.model_override.clone())
                .or_else(|| req.model.clone()),
            allow_fallback: (req.model.is_none()
                && self.site.run.settings.model_override.is_none()
                && self.llm.model_override.is_none())
                || req.allow_fallback,
            max_cost_usd: req.max_cost_usd,
            max_latency_ms: req.max_latency_ms.map(u64::from),
            max_wait_ms: req.max_wait_ms.map(u64::from),
            budget_remaining: self.site.run.budget.remaining(self.site.task_id),
            min_quality: req.min_quality.map(f64::from),
            agent: Some(self.llm.agent.clone()).filter(|a| !a.is_empty()),
        };
        // Serialized once: the call's request and each attempt's decision carry copies
        // (`json!` would serialize a `Value` again, node by node).
        let scheduling = serde_json::to_value(&sreq)?;
        let mut request_json = json!({ "chat": template });
        request_json["scheduling"] = scheduling.clone();
        let started_at = durable.started_at;
        let scheduler = self.site.run.scheduler.clone();

        let plan = match scheduler.plan(&sreq) {
            Ok(plan) => plan,
            Err(e) => {
                let e = sched_error(e);
                durable
                    .finish(self.site, false, request_json, error_json(&e))
                    .await?;
                return Ok(Err(e));
            }
        };

        let mut tried: Vec<String> = Vec::new();
        let mut failures: Vec<serde_json::Value> = Vec::new();
        let mut last_error: Option<LlmError> = None;
        let attempts = if sreq.allow_fallback {
            scheduler.max_attempts()
        } else {
            1
        };
        while tried.len() < attempts {
            let grant = match scheduler.acquire(&plan, &sreq, &tried).await {
                Ok(g) => g,
                Err(e) => {
                    last_error.get_or_insert(sched_error(e));
                    break;
                }
            };
            tried.push(grant.model.clone());
            let spec = scheduler
                .model(&grant.model)
                .expect("granted models are in the catalog")
                .clone();
            let price = spec.price();
            let worst = price.cost(sreq.estimated_input_tokens, sreq.max_output_tokens);
            let reservation = match self.site.run.budget.reserve(
                self.site.task_id,
                worst,
                sreq.estimated_input_tokens + sreq.max_output_tokens,
            ) {
                Ok(r) => r,
                Err(msg) => {
                    scheduler.release(&grant);
                    last_error = Some(LlmError::BudgetExceeded(msg.to_string()));
                    continue;
                }
            };
            let fallbacks: Vec<&String> = plan
                .ranked
                .iter()
                .filter(|m| !tried.contains(m))
                .take(attempts - tried.len())
                .collect();
            let reason = if tried.len() == 1 {
                format!(
                    "{} ranks first for priority {:?}{}",
                    grant.model,
                    plan.priority,
                    if grant.skipped.is_empty() {
                        String::new()
                    } else {
                        format!(" after skipping {:?}", grant.skipped)
                    }
                )
            } else {
                format!("fallback after {} failed", tried[tried.len() - 2])
            };
            // Serialized straight from the plan's types: as a JSON tree, the candidate
            // reports cost more to build, write and free than the rest of the call.
            let decision = serde_json::to_string(&Decision {
                attempt: tried.len(),
                candidates: &plan.candidates,
                chosen: &grant.model,
                fallbacks,
                priority: plan.priority,
                reason,
                reservation: Reservation {
                    at_ms: grant.reserved_at_ms,
                    probe: grant.probe,
                    tokens: grant.reserved_tokens,
                    usd: worst,
                    waited_ms: grant.waited_ms,
                },
                weights: &plan.weights,
            })?;
            let mut decision_call = Call::plain_text(
                EventKind::LlmDecision,
                true,
                serde_json::Value::Object(serde_json::Map::from_iter([(
                    "scheduling".to_string(),
                    scheduling.clone(),
                )])),
                decision,
                started_at,
            );
            decision_call.model = Some(grant.model.clone());
            self.site.record(decision_call).await?;

            let chat = ChatRequest {
                model: spec.provider_model_id().to_string(),
                ..template.clone()
            };
            let provider = scheduler.provider(&spec);
            let sent = Instant::now();
            let completion = provider.complete_traced(&chat).await;
            let duration = sent.elapsed();
            let (attempt_calls, charged) = attempt_events(
                &grant.model,
                &completion.failed_attempts,
                &price,
                sreq.estimated_input_tokens,
                started_at,
            );
            match completion.result {
                Ok(reply) => {
                    let latency = completion.final_attempt_latency;
                    let cost = price.cost(reply.input_tokens as u64, reply.output_tokens as u64);
                    self.site.run.budget.settle(
                        reservation,
                        cost + charged.cost_usd,
                        (reply.input_tokens + reply.output_tokens) as u64 + charged.tokens,
                    );
                    let change = scheduler.succeeded(
                        &grant,
                        sreq.task_type.as_deref(),
                        sreq.agent.as_deref().unwrap_or(""),
                        &reply,
                        latency,
                        cost,
                    );
                    for call in attempt_calls {
                        self.site.record(call).await?;
                    }
                    if let Some(change) = &change {
                        self.site
                            .record(Call::plain(
                                EventKind::LlmModelVersionChanged,
                                true,
                                json!({ "model": grant.model }),
                                json!(change),
                                started_at,
                            ))
                            .await?;
                    }
                    let response = Response {
                        text: reply.text.clone(),
                        tool_calls: reply
                            .tool_calls
                            .iter()
                            .map(|c| ToolCall {
                                id: c.id.clone(),
                                name: c.name.clone(),
                                arguments: c.arguments.clone(),
                            })
                            .collect(),
                        model: grant.model.clone(),
                        usage: Usage {
                            input_tokens: reply.input_tokens,
                            output_tokens: reply.output_tokens,
                            cost_usd: cost,
                        },
                        finish_reason: finish(reply.finish_reason),
                    };
                    let mut response_json = serde_json::to_value(&reply)?;
                    response_json["cost_usd"] = json!(cost);
                    response_json["latency_ms"] = json!(latency.as_millis() as u64);
                    response_json["duration_ms"] = json!(duration.as_millis() as u64);
                    if !failures.is_empty() {
                        response_json["failed_attempts"] = json!(failures);
                    }
                    let event = Call {
                        model: Some(grant.model.clone()),
                        tokens_in: reply.input_tokens,
                        tokens_out: reply.output_tokens,
                        cost_usd: cost,
                        ..durable.call(true, request_json, response_json)
                    };
                    durable.finish_call(self.site, event).await?;
                    return Ok(Ok(response));
                }
                Err(err) => {
                    self.site
                        .run
                        .budget
                        .settle(reservation, charged.cost_usd, charged.tokens);
                    scheduler.failed(
                        &grant,
                        sreq.task_type.as_deref(),
                        sreq.agent.as_deref().unwrap_or(""),
                        &err,
                        completion.final_attempt_latency,
                    );
                    for call in attempt_calls {
                        self.site.record(call).await?;
                    }
                    failures.push(json!({
                        "model": grant.model,
                        "error": err.to_string(),
                        "attempts": completion.failed_attempts.len(),
                    }));
                    let retry = worth_a_fallback(&err);
                    last_error = Some(provider_error(&err));
                    if !retry {
                        break;
                    }
                }
            }
        }
        let e = last_error
            .unwrap_or_else(|| LlmError::NoViableModel("no model could take the call".into()));
        let mut response = error_json(&e);
        response["failed_attempts"] = json!(failures);
        let mut event = durable.call(false, request_json, response);
        event.model = tried.last().cloned();
        durable.finish_call(self.site, event).await?;
        Ok(Err(e))
    }
}
