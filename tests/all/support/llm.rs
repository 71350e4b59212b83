//! Successful replies of the LLM APIs the fake servers stand in for (OpenAI chat
//! completions, Anthropic messages), shaped as the real services send them.

use super::fake_http::FakeResponse;
use serde_json::json;

/// An OpenAI chat-completion body: `text` from `model`, with this token usage.
fn openai_body(model: &str, text: &str, prompt_tokens: u32, completion_tokens: u32) -> String {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        }
    })
    .to_string()
}

/// A 200 answer with an [`openai_body`].
pub fn openai_ok(
    model: &str,
    text: &str,
    prompt_tokens: u32,
    completion_tokens: u32,
) -> FakeResponse {
    FakeResponse::json(
        200,
        openai_body(model, text, prompt_tokens, completion_tokens),
    )
}

/// A 200 OpenAI answer "reply from MODEL" from `model`, with this token usage.
pub fn reply_from(model: &str, prompt_tokens: u32, completion_tokens: u32) -> FakeResponse {
    openai_ok(
        model,
        &format!("reply from {model}"),
        prompt_tokens,
        completion_tokens,
    )
}

/// A 200 answer with an Anthropic message: `text` from `model`, with this token usage.
pub fn anthropic_ok(
    model: &str,
    text: &str,
    input_tokens: u32,
    output_tokens: u32,
) -> FakeResponse {
    FakeResponse::json(
        200,
        json!({
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}
        })
        .to_string(),
    )
}
