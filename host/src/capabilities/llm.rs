//! `agentflow:agent/llm`: language-model completions.
//!
//! Per call: choose the model (the guest's pin, else the configured default, or the
//! quality model for `priority::quality`), price it, reserve the worst-case cost from
//! the run's budget, call the provider, settle the reservation with the real usage,
//! record request and reply, answer the guest. Multi-model scheduling, quotas and
//! health belong to the scheduler (a later layer), not here.

use super::{Call, TaskCtx};
use crate::bindings::llm::{
    FinishReason, Host, LlmError, Message, Priority, Request, Response, Role, ToolCall, Usage,
};
use crate::providers::{self, ChatMessage, ChatRequest, ProviderError, ToolDef};
use serde_json::json;

fn role(r: Role) -> providers::Role {
    match r {
        Role::System => providers::Role::System,
        Role::User => providers::Role::User,
        Role::Assistant => providers::Role::Assistant,
        Role::Tool => providers::Role::Tool,
    }
}

fn priority_name(p: Priority) -> &'static str {
    match p {
        Priority::Balanced => "balanced",
        Priority::Cost => "cost",
        Priority::Quality => "quality",
        Priority::Latency => "latency",
    }
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

fn error_json(e: &LlmError) -> serde_json::Value {
    json!({ "error": format!("{e:?}") })
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
        temperature: req.temperature,
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

impl TaskCtx {
    /// The model for this request, or why there is none.
    fn choose_model(&self, req: &Request) -> Result<String, LlmError> {
        let llm = &self.run.llm;
        let model = match (&req.model, req.priority) {
            (Some(pinned), _) => pinned.clone(),
            (None, Priority::Quality) => llm.quality_model.clone(),
            (None, _) => llm.default_model.clone(),
        };
        if !llm.prices.contains_key(&model) {
            return Err(LlmError::NoViableModel(format!(
                "model `{model}` has no price: add [llm.prices.\"{model}\"] to the config (known: {})",
                llm.prices.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(model)
    }
}

impl Host for TaskCtx {
    async fn complete(&mut self, req: Request) -> wasmtime::Result<Result<Response, LlmError>> {
        let started_at = self.admit()?;
        let mut request_json = json!({
            "priority": priority_name(req.priority),
            "capabilities": req.capabilities,
            "min_context_window": req.min_context_window,
        });
        let model = match self.choose_model(&req) {
            Ok(m) => m,
            Err(e) => {
                request_json["chat"] = serde_json::to_value(to_chat(&req, String::new()))?;
                self.record(Call::plain(
                    "llm.complete",
                    false,
                    request_json,
                    error_json(&e),
                    started_at,
                ))
                .await?;
                return Ok(Err(e));
            }
        };
        let chat = to_chat(&req, model.clone());
        request_json["chat"] = serde_json::to_value(&chat)?;
        let price = self.run.llm.prices[&model];

        // Reserve the worst case: the estimated prompt plus every allowed output token.
        let est_in: u64 = chat
            .messages
            .iter()
            .map(|m| providers::estimate_tokens(&m.content) as u64 + 4)
            .sum();
        let est_out = req
            .max_output_tokens
            .unwrap_or(self.run.llm.default_max_output_tokens) as u64;
        let estimate = price.cost(est_in, est_out);
        let reservation = match self.run.budget.reserve(estimate) {
            Ok(r) => r,
            Err(msg) => {
                let e = LlmError::BudgetExceeded(msg);
                let mut call = Call::plain(
                    "llm.complete",
                    false,
                    request_json,
                    error_json(&e),
                    started_at,
                );
                call.model = Some(model);
                self.record(call).await?;
                return Ok(Err(e));
            }
        };

        let result = self.run.provider.complete(&chat).await;
        let (outcome, call) = match result {
            Ok(reply) => {
                let cost = price.cost(reply.input_tokens as u64, reply.output_tokens as u64);
                self.run.budget.settle(reservation, cost);
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
                    model: model.clone(),
                    usage: Usage {
                        input_tokens: reply.input_tokens,
                        output_tokens: reply.output_tokens,
                        cost_usd: cost,
                    },
                    finish_reason: finish(reply.finish_reason),
                };
                let mut response_json = serde_json::to_value(&reply)?;
                response_json["cost_usd"] = json!(cost);
                let call = Call {
                    kind: "llm.complete",
                    ok: true,
                    request: request_json,
                    response: response_json,
                    model: Some(model),
                    tokens_in: reply.input_tokens,
                    tokens_out: reply.output_tokens,
                    cost_usd: cost,
                    started_at,
                };
                (Ok(response), call)
            }
            Err(err) => {
                self.run.budget.settle(reservation, 0.0);
                let e = provider_error(&err);
                let mut call = Call::plain(
                    "llm.complete",
                    false,
                    request_json,
                    error_json(&e),
                    started_at,
                );
                call.model = Some(model);
                (Err(e), call)
            }
        };
        self.record(call).await?;
        Ok(outcome)
    }
}
