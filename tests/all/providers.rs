//! End-to-end tests of the LLM providers: `openai` and `anthropic` against a scripted
//! local HTTP server (success, retries and the server's waits on 429/5xx/529, garbage
//! 2xx answers, the report of failed attempts, typed errors, tool calls, key
//! redaction) and the deterministic `mock` provider (rules, built-ins, truncation,
//! latency).
//!
//! They never reach a real API and need no API key.

use crate::support::fake_http::*;
use crate::support::llm;
use agentflow::providers::anthropic::{AnthropicConfig, AnthropicProvider};
use agentflow::providers::mock::{MockConfig, MockProvider, MockRule};
use agentflow::providers::openai::{OpenAiConfig, OpenAiProvider};
use agentflow::providers::{
    ChatMessage, ChatRequest, FailedAttempt, FinishReason, LlmProvider, ProviderError, RetryPolicy,
    Role, ToolCall, ToolDef,
};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// An environment variable no test sets, so configs never pick up a real key.
const UNSET_ENV: &str = "AGENTFLOW_TEST_UNSET_API_KEY";

fn fast_retry(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        initial_backoff_ms: 10,
        max_backoff_ms: 50,
        max_retry_after_ms: 5_000,
    }
}

fn msg(role: Role, content: &str) -> ChatMessage {
    ChatMessage {
        role,
        content: content.to_string(),
        tool_call_id: None,
    }
}

fn request(model: &str, user: &str) -> ChatRequest {
    ChatRequest {
        model: model.to_string(),
        messages: vec![msg(Role::System, "You are terse."), msg(Role::User, user)],
        temperature: Some(0.2),
        max_output_tokens: Some(256),
        tools: Vec::new(),
        task_type: None,
    }
}

fn weather_tool() -> ToolDef {
    ToolDef {
        name: "get_weather".to_string(),
        description: "Current weather for a city".to_string(),
        parameters_schema:
            r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#
                .to_string(),
    }
}

// ---------------------------------------------------------------- openai

/// An OpenAI provider (with a key) on `server`.
fn openai(server: &FakeServer, retry: RetryPolicy, timeout_ms: u64) -> OpenAiProvider {
    OpenAiProvider::new(OpenAiConfig {
        base_url: format!("{}/v1", server.url()),
        api_key: Some("sk-test-openai-secret".to_string()),
        api_key_env: UNSET_ENV.to_string(),
        timeout_ms,
        retry,
    })
    .expect("openai provider")
}

/// The OpenAI tests' answer: `text` from `gpt-test-0613`, 21 + 7 tokens.
fn openai_ok(text: &str) -> FakeResponse {
    llm::openai_ok("gpt-test-0613", text, 21, 7)
}

#[tokio::test]
async fn openai_success_sends_request_and_parses_reply() {
    let server = FakeServer::start(vec![openai_ok("Paris.")]).await;
    let provider = openai(&server, fast_retry(0), 5_000);
    assert_eq!(provider.name(), "openai");

    let response = provider
        .complete(&request("gpt-test", "Capital of France?"))
        .await
        .unwrap();
    assert_eq!(response.text, "Paris.");
    assert_eq!(response.model, "gpt-test-0613");
    assert_eq!(response.input_tokens, 21);
    assert_eq!(response.output_tokens, 7);
    assert_eq!(response.finish_reason, FinishReason::Stop);
    assert!(response.tool_calls.is_empty());

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer sk-test-openai-secret")
    );
    let body = sent.json();
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["max_tokens"], 256);
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][0]["content"], "You are terse.");
    assert_eq!(body["messages"][1]["role"], "user");
    assert_eq!(body["messages"][1]["content"], "Capital of France?");
    assert!(body.get("tools").is_none());
}

#[tokio::test]
async fn openai_without_key_sends_no_authorization_header() {
    let server = FakeServer::start(vec![openai_ok("hi")]).await;
    let provider = OpenAiProvider::new(OpenAiConfig {
        base_url: server.url(),
        api_key: None,
        api_key_env: UNSET_ENV.to_string(),
        ..OpenAiConfig::default()
    })
    .unwrap();
    provider.complete(&request("local", "hello")).await.unwrap();
    let sent = &server.requests()[0];
    assert_eq!(sent.path, "/chat/completions");
    assert_eq!(sent.header("authorization"), None);
}

#[tokio::test]
async fn openai_429_honours_retry_after() {
    let server = FakeServer::start(vec![
        FakeResponse::json(429, r#"{"error":{"message":"slow down"}}"#)
            .with_header("retry-after", "1"),
        openai_ok("done"),
    ])
    .await;
    let provider = openai(&server, fast_retry(3), 5_000);
    let started = Instant::now();
    let response = provider.complete(&request("m", "q")).await.unwrap();
    assert_eq!(response.text, "done");
    assert_eq!(server.request_count(), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited only {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn openai_429_every_time_is_rate_limited() {
    let server = FakeServer::start(vec![
        FakeResponse::json(429, "{}").with_header("retry-after", "0"),
    ])
    .await;
    let provider = openai(&server, fast_retry(2), 5_000);
    let err = provider.complete(&request("m", "q")).await.unwrap_err();
    assert_eq!(err, ProviderError::RateLimited { retry_after_ms: 0 });
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn openai_500_exhausts_retries_as_unavailable() {
    let server = FakeServer::start(vec![FakeResponse::json(500, r#"{"error":"boom"}"#)]).await;
    let provider = openai(&server, fast_retry(2), 5_000);
    let err = provider.complete(&request("m", "q")).await.unwrap_err();
    match err {
        ProviderError::Unavailable(detail) => {
            assert!(detail.contains("500"), "{detail}");
            assert!(detail.contains("boom"), "{detail}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn openai_timeout_is_typed() {
    let server = FakeServer::start(vec![openai_ok("late").with_delay(2_000)]).await;
    let provider = openai(&server, fast_retry(1), 300);
    let started = Instant::now();
    let err = provider.complete(&request("m", "q")).await.unwrap_err();
    assert_eq!(err, ProviderError::Timeout);
    assert_eq!(server.request_count(), 2);
    assert!(started.elapsed() < Duration::from_millis(1_900));
}

#[tokio::test]
async fn openai_malformed_body_is_typed() {
    let server = FakeServer::start(vec![FakeResponse::json(200, "{not json")]).await;
    let provider = openai(&server, fast_retry(2), 5_000);
    let err = provider.complete(&request("m", "q")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Malformed(_)), "{err:?}");
    assert_eq!(
        server.request_count(),
        3,
        "a malformed 2xx is retried like a transport error, within max_retries"
    );

    let server = FakeServer::start(vec![FakeResponse::json(200, r#"{"choices":[]}"#)]).await;
    let provider = openai(&server, fast_retry(0), 5_000);
    let err = provider.complete(&request("m", "q")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Malformed(_)), "{err:?}");
}

#[tokio::test]
async fn openai_401_is_auth_and_not_retried() {
    let server = FakeServer::start(vec![FakeResponse::json(
        401,
        r#"{"error":{"message":"Incorrect API key provided"}}"#,
    )])
    .await;
    let provider = openai(&server, fast_retry(3), 5_000);
    let err = provider.complete(&request("m", "q")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Auth(_)), "{err:?}");
    assert!(!err.to_string().contains("sk-test-openai-secret"));
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn openai_400_is_invalid_request() {
    let server = FakeServer::start(vec![FakeResponse::json(
        400,
        r#"{"error":"unknown model"}"#,
    )])
    .await;
    let provider = openai(&server, fast_retry(3), 5_000);
    let err = provider.complete(&request("m", "q")).await.unwrap_err();
    match err {
        ProviderError::InvalidRequest(detail) => assert!(detail.contains("unknown model")),
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn openai_tool_calls_are_parsed_and_tools_sent() {
    let server = FakeServer::start(vec![FakeResponse::json(
        200,
        serde_json::json!({
            "model": "gpt-test",
            "choices": [{
                "message": {
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [{
                        "id": "call_abc",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}
                    }]
                },
                "finish_reason": "tool_calls"
            }]
        })
        .to_string(),
    )])
    .await;
    let provider = openai(&server, fast_retry(0), 5_000);
    let mut req = request("gpt-test", "Weather in Oslo?");
    req.tools.push(weather_tool());
    req.messages.push(ChatMessage {
        role: Role::Tool,
        content: "sunny".to_string(),
        tool_call_id: Some("call_prev".to_string()),
    });
    let response = provider.complete(&req).await.unwrap();
    assert_eq!(response.text, "");
    assert_eq!(response.finish_reason, FinishReason::ToolCalls);
    assert_eq!(
        response.tool_calls,
        vec![ToolCall {
            id: "call_abc".to_string(),
            name: "get_weather".to_string(),
            arguments: r#"{"city":"Oslo"}"#.to_string(),
        }]
    );
    // No usage in the answer: tokens are estimated, never zero.
    assert!(response.input_tokens > 0 && response.output_tokens > 0);

    let body = server.requests()[0].json();
    assert_eq!(body["tools"][0]["type"], "function");
    assert_eq!(body["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(
        body["tools"][0]["function"]["parameters"]["required"][0],
        "city"
    );
    assert_eq!(body["messages"][2]["role"], "tool");
    assert_eq!(body["messages"][2]["tool_call_id"], "call_prev");
}

// ---------------------------------------------------------------- anthropic

/// An Anthropic provider (with a key) on `server`.
fn anthropic(server: &FakeServer, retry: RetryPolicy, timeout_ms: u64) -> AnthropicProvider {
    AnthropicProvider::new(AnthropicConfig {
        base_url: server.url(),
        api_key: Some("sk-ant-test-secret".to_string()),
        api_key_env: UNSET_ENV.to_string(),
        timeout_ms,
        retry,
        ..AnthropicConfig::default()
    })
    .expect("anthropic provider")
}

/// The Anthropic tests' answer: `text` from `claude-test-20250101`, 30 + 5 tokens.
fn anthropic_ok(text: &str) -> FakeResponse {
    llm::anthropic_ok("claude-test-20250101", text, 30, 5)
}

#[tokio::test]
async fn anthropic_success_sends_request_and_parses_reply() {
    let server = FakeServer::start(vec![anthropic_ok("Paris.")]).await;
    let provider = anthropic(&server, fast_retry(0), 5_000);
    assert_eq!(provider.name(), "anthropic");

    let response = provider
        .complete(&request("claude-test", "Capital of France?"))
        .await
        .unwrap();
    assert_eq!(response.text, "Paris.");
    assert_eq!(response.model, "claude-test-20250101");
    assert_eq!(response.input_tokens, 30);
    assert_eq!(response.output_tokens, 5);
    assert_eq!(response.finish_reason, FinishReason::Stop);

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some("sk-ant-test-secret"));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    let body = sent.json();
    assert_eq!(body["model"], "claude-test");
    assert_eq!(body["max_tokens"], 256);
    assert_eq!(body["system"], "You are terse.");
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);
    assert_eq!(body["messages"][0]["role"], "user");
    assert_eq!(body["messages"][0]["content"], "Capital of France?");
}

#[tokio::test]
async fn anthropic_requires_a_key() {
    let err = AnthropicProvider::new(AnthropicConfig {
        api_key: None,
        api_key_env: UNSET_ENV.to_string(),
        ..AnthropicConfig::default()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("anthropic provider needs an API key"), "{err}");
    assert!(err.contains(UNSET_ENV), "{err}");
}

#[tokio::test]
async fn anthropic_default_max_tokens_is_sent() {
    let server = FakeServer::start(vec![anthropic_ok("ok")]).await;
    let provider = anthropic(&server, fast_retry(0), 5_000);
    let mut req = request("claude-test", "hi");
    req.max_output_tokens = None;
    provider.complete(&req).await.unwrap();
    assert_eq!(server.requests()[0].json()["max_tokens"], 1024);
}

#[tokio::test]
async fn anthropic_429_honours_retry_after() {
    let server = FakeServer::start(vec![
        FakeResponse::json(
            429,
            r#"{"type":"error","error":{"type":"rate_limit_error"}}"#,
        )
        .with_header("retry-after", "1"),
        anthropic_ok("done"),
    ])
    .await;
    let provider = anthropic(&server, fast_retry(3), 5_000);
    let started = Instant::now();
    let response = provider.complete(&request("m", "q")).await.unwrap();
    assert_eq!(response.text, "done");
    assert_eq!(server.request_count(), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited only {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn anthropic_500_exhausts_retries_as_unavailable() {
    let server = FakeServer::start(vec![FakeResponse::json(529, r#"{"type":"overloaded"}"#)]).await;
    let provider = anthropic(&server, fast_retry(2), 5_000);
    let err = provider.complete(&request("m", "q")).await.unwrap_err();
    match err {
        ProviderError::Unavailable(detail) => assert!(detail.contains("529"), "{detail}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn anthropic_timeout_is_typed() {
    let server = FakeServer::start(vec![anthropic_ok("late").with_delay(2_000)]).await;
    let provider = anthropic(&server, fast_retry(1), 300);
    let err = provider.complete(&request("m", "q")).await.unwrap_err();
    assert_eq!(err, ProviderError::Timeout);
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn anthropic_malformed_body_is_typed() {
    let server = FakeServer::start(vec![FakeResponse::json(200, r#"{"content": 5}"#)]).await;
    let provider = anthropic(&server, fast_retry(2), 5_000);
    let err = provider.complete(&request("m", "q")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Malformed(_)), "{err:?}");
    assert_eq!(server.request_count(), 3, "retried within max_retries");

    let server = FakeServer::start(vec![FakeResponse::json(200, r#"{"content": []}"#)]).await;
    let provider = anthropic(&server, fast_retry(0), 5_000);
    let err = provider.complete(&request("m", "q")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Malformed(_)), "{err:?}");
}

#[tokio::test]
async fn anthropic_401_is_auth_and_not_retried() {
    let server = FakeServer::start(vec![FakeResponse::json(
        401,
        r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
    )])
    .await;
    let provider = anthropic(&server, fast_retry(3), 5_000);
    let err = provider.complete(&request("m", "q")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Auth(_)), "{err:?}");
    assert!(!err.to_string().contains("sk-ant-test-secret"));
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn anthropic_tool_calls_are_parsed_and_tools_sent() {
    let server = FakeServer::start(vec![FakeResponse::json(
        200,
        serde_json::json!({
            "model": "claude-test",
            "content": [
                {"type": "text", "text": "Let me check. "},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 50, "output_tokens": 20}
        })
        .to_string(),
    )])
    .await;
    let provider = anthropic(&server, fast_retry(0), 5_000);
    let mut req = request("claude-test", "Weather in Oslo?");
    req.tools.push(weather_tool());
    req.messages.push(msg(Role::Assistant, "Calling tools."));
    for (id, result) in [("toolu_a", "sunny"), ("toolu_b", "12C")] {
        req.messages.push(ChatMessage {
            role: Role::Tool,
            content: result.to_string(),
            tool_call_id: Some(id.to_string()),
        });
    }
    let response = provider.complete(&req).await.unwrap();
    assert_eq!(response.text, "Let me check. ");
    assert_eq!(response.finish_reason, FinishReason::ToolCalls);
    assert_eq!(response.tool_calls.len(), 1);
    assert_eq!(response.tool_calls[0].id, "toolu_1");
    assert_eq!(response.tool_calls[0].name, "get_weather");
    let args: serde_json::Value = serde_json::from_str(&response.tool_calls[0].arguments).unwrap();
    assert_eq!(args, serde_json::json!({"city": "Oslo"}));

    let body = server.requests()[0].json();
    assert_eq!(body["tools"][0]["name"], "get_weather");
    assert_eq!(
        body["tools"][0]["description"],
        "Current weather for a city"
    );
    assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(messages[1]["role"], "assistant");
    // Both tool results go into one user message of tool_result blocks.
    assert_eq!(messages[2]["role"], "user");
    assert_eq!(messages[2]["content"][0]["type"], "tool_result");
    assert_eq!(messages[2]["content"][0]["tool_use_id"], "toolu_a");
    assert_eq!(messages[2]["content"][0]["content"], "sunny");
    assert_eq!(messages[2]["content"][1]["tool_use_id"], "toolu_b");
}

#[test]
fn config_debug_redacts_api_keys() {
    let openai = OpenAiConfig {
        api_key: Some("sk-very-secret-openai".to_string()),
        ..OpenAiConfig::default()
    };
    let anthropic = AnthropicConfig {
        api_key: Some("sk-ant-very-secret".to_string()),
        ..AnthropicConfig::default()
    };
    let shown = format!("{openai:?} {anthropic:?}");
    assert!(!shown.contains("sk-very-secret-openai"), "{shown}");
    assert!(!shown.contains("sk-ant-very-secret"), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");

    let provider = AnthropicProvider::new(anthropic).unwrap();
    assert!(!format!("{provider:?}").contains("sk-ant-very-secret"));
}

#[test]
fn configs_deserialize_with_defaults() {
    let openai: OpenAiConfig =
        toml::from_str("base_url = \"http://localhost:8000/v1\"\n[retry]\nmax_retries = 1\n")
            .unwrap();
    assert_eq!(openai.base_url, "http://localhost:8000/v1");
    assert_eq!(openai.api_key_env, "OPENAI_API_KEY");
    assert_eq!(openai.timeout_ms, 60_000);
    assert_eq!(openai.retry.max_retries, 1);
    assert_eq!(openai.retry.initial_backoff_ms, 200);

    let anthropic: AnthropicConfig = toml::from_str("").unwrap();
    assert_eq!(anthropic.base_url, "https://api.anthropic.com");
    assert_eq!(anthropic.version, "2023-06-01");
    assert_eq!(anthropic.default_max_tokens, 1024);
    assert_eq!(anthropic.retry.max_retry_after_ms, 30_000);
}

// ---------------------------------------------------------------- failures as real providers send them

/// `t` seconds after the Unix epoch as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(t: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (days, secs) = (t / 86_400, t % 86_400);
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[test]
fn http_date_formats_like_the_rfc_example() {
    assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
}

/// Time `provider` takes to get through the script, and the reply.
async fn timed(provider: &dyn LlmProvider) -> (Duration, agentflow::providers::Completion) {
    let started = Instant::now();
    let completion = provider.complete_traced(&request("m", "q")).await;
    (started.elapsed(), completion)
}

#[tokio::test]
async fn openai_503_honours_retry_after_seconds() {
    let server = FakeServer::start(vec![
        FakeResponse::json(503, r#"{"error":"overloaded"}"#).with_header("retry-after", "1"),
        openai_ok("done"),
    ])
    .await;
    let provider = openai(&server, fast_retry(3), 5_000);
    let (elapsed, completion) = timed(&provider).await;
    assert_eq!(completion.result.unwrap().text, "done");
    assert!(
        elapsed >= Duration::from_millis(950),
        "waited only {elapsed:?}"
    );
    assert_eq!(completion.failed_attempts[0].wait_ms, Some(1000));
}

#[tokio::test]
async fn openai_503_honours_retry_after_as_an_http_date() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let server = FakeServer::start(vec![
        FakeResponse::json(503, "{}").with_header("retry-after", http_date(now + 2)),
        openai_ok("done"),
    ])
    .await;
    let provider = openai(&server, fast_retry(3), 5_000);
    let (elapsed, completion) = timed(&provider).await;
    assert_eq!(completion.result.unwrap().text, "done");
    // Whole seconds: 2 s from `now`, read within the same or the next second.
    assert!(
        elapsed >= Duration::from_millis(950),
        "waited only {elapsed:?}"
    );
    assert!(elapsed < Duration::from_millis(3_500), "waited {elapsed:?}");
}

#[tokio::test]
async fn anthropic_529_honours_retry_after_ms() {
    let server = FakeServer::start(vec![
        FakeResponse::json(
            529,
            r#"{"type":"error","error":{"type":"overloaded_error"}}"#,
        )
        .with_header("retry-after-ms", "450.5"),
        anthropic_ok("done"),
    ])
    .await;
    let provider = anthropic(&server, fast_retry(3), 5_000);
    let (elapsed, completion) = timed(&provider).await;
    assert_eq!(completion.result.unwrap().text, "done");
    assert!(
        elapsed >= Duration::from_millis(440),
        "waited only {elapsed:?}"
    );
    let first = &completion.failed_attempts[0];
    assert_eq!((first.status, first.wait_ms), (Some(529), Some(451)));
}

#[tokio::test]
async fn openai_429_prefers_retry_after_ms_for_sub_second_waits() {
    let server = FakeServer::start(vec![
        FakeResponse::json(429, "{}")
            .with_header("retry-after", "3")
            .with_header("retry-after-ms", "250"),
        openai_ok("done"),
    ])
    .await;
    let provider = openai(&server, fast_retry(3), 5_000);
    let (elapsed, completion) = timed(&provider).await;
    assert_eq!(completion.result.unwrap().text, "done");
    assert!(
        elapsed >= Duration::from_millis(240) && elapsed < Duration::from_millis(2_000),
        "waited {elapsed:?}"
    );
}

#[tokio::test]
async fn server_waits_on_5xx_are_capped_by_the_policy() {
    let server = FakeServer::start(vec![
        FakeResponse::json(503, "{}").with_header("retry-after", "3600"),
        openai_ok("done"),
    ])
    .await;
    let retry = RetryPolicy {
        max_retry_after_ms: 200,
        ..fast_retry(3)
    };
    let provider = openai(&server, retry, 5_000);
    let (elapsed, completion) = timed(&provider).await;
    assert_eq!(completion.result.unwrap().text, "done");
    assert!(
        elapsed >= Duration::from_millis(190) && elapsed < Duration::from_millis(2_000),
        "waited {elapsed:?}"
    );
    assert_eq!(completion.failed_attempts[0].wait_ms, Some(200));
}

#[tokio::test]
async fn openai_garbage_and_empty_200s_are_retried_then_answered() {
    let server = FakeServer::start(vec![
        FakeResponse::text(200, "<html>upstream hiccup</html>"),
        FakeResponse::json(200, r#"{"choices":[]}"#),
        FakeResponse::json(200, r#"{"choices":[{"message":{"role":"assistant"}}]}"#),
        openai_ok("finally"),
    ])
    .await;
    let provider = openai(&server, fast_retry(3), 5_000);
    let (_, completion) = timed(&provider).await;
    assert_eq!(completion.result.unwrap().text, "finally");
    assert_eq!(server.request_count(), 4);
    let attempts = &completion.failed_attempts;
    assert_eq!(attempts.len(), 3);
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a.attempt, i as u32 + 1);
        assert_eq!(a.status, Some(200));
        assert!(matches!(a.error, ProviderError::Malformed(_)), "{a:?}");
        assert!(a.wait_ms.is_some());
    }
}

#[tokio::test]
async fn openai_refusal_is_an_answer_not_a_malformed_reply() {
    let server = FakeServer::start(vec![FakeResponse::json(
        200,
        r#"{"choices":[{"message":{"role":"assistant","content":null,"refusal":"I can't help with that."},"finish_reason":"stop"}]}"#,
    )])
    .await;
    let provider = openai(&server, fast_retry(2), 5_000);
    let response = provider.complete(&request("m", "q")).await.unwrap();
    assert_eq!(response.text, "I can't help with that.");
    assert_eq!(response.finish_reason, FinishReason::ContentFilter);
    assert_eq!(server.request_count(), 1, "not retried");
}

#[tokio::test]
async fn every_failed_attempt_is_reported_with_status_wait_and_latency() {
    let server = FakeServer::start(vec![
        FakeResponse::json(429, "{}").with_header("retry-after-ms", "60"),
        FakeResponse::json(502, "bad gateway").with_delay(40),
        openai_ok("late").with_delay(1_000),
    ])
    .await;
    let provider = openai(&server, fast_retry(2), 300);
    let (_, completion) = timed(&provider).await;
    assert_eq!(completion.result.unwrap_err(), ProviderError::Timeout);
    let attempts: Vec<&FailedAttempt> = completion.failed_attempts.iter().collect();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert_eq!(
        (attempts[0].status, attempts[0].wait_ms),
        (Some(429), Some(60))
    );
    assert_eq!(attempts[1].status, Some(502));
    assert_eq!(attempts[1].wait_ms, Some(20), "backoff doubles: 10, 20");
    assert!(attempts[1].latency_ms >= 40, "{:?}", attempts[1]);
    assert_eq!(attempts[2].status, None);
    assert_eq!(attempts[2].error, ProviderError::Timeout);
    assert_eq!(
        attempts[2].wait_ms, None,
        "the last attempt waits for nothing"
    );
    assert!(attempts[2].latency_ms >= 290, "{:?}", attempts[2]);
}

#[tokio::test]
async fn the_final_attempt_latency_excludes_earlier_waits() {
    let server = FakeServer::start(vec![
        FakeResponse::json(429, "{}").with_header("retry-after-ms", "1000"),
        openai_ok("fast"),
    ])
    .await;
    let provider = openai(&server, fast_retry(1), 5_000);
    let (elapsed, completion) = timed(&provider).await;
    assert!(completion.result.is_ok());
    assert!(elapsed >= Duration::from_millis(1000), "{elapsed:?}");
    assert!(
        completion.final_attempt_latency < Duration::from_millis(800),
        "{:?}",
        completion.final_attempt_latency
    );
}

// ---------------------------------------------------------------- mock

fn mock(config: MockConfig) -> MockProvider {
    MockProvider::new(config).expect("mock provider")
}

#[tokio::test]
async fn mock_is_deterministic() {
    let provider = mock(MockConfig::default());
    assert_eq!(provider.name(), "mock");
    let req = request("mock-small", "What is the tallest mountain?");
    let first = provider.complete(&req).await.unwrap();
    let second = provider.complete(&req).await.unwrap();
    assert_eq!(first, second);
    assert!(
        first
            .text
            .starts_with("Answer to \"What is the tallest mountain?\": "),
        "{}",
        first.text
    );
    assert_eq!(first.model, "mock-small");
    assert_eq!(first.finish_reason, FinishReason::Stop);
    // estimate_tokens per message + 4 each.
    let expected_input: u32 = req
        .messages
        .iter()
        .map(|m| agentflow::providers::estimate_tokens(&m.content) + 4)
        .sum();
    assert_eq!(first.input_tokens, expected_input);
    assert_eq!(
        first.output_tokens,
        agentflow::providers::estimate_tokens(&first.text)
    );
}

#[tokio::test]
async fn mock_decompose_returns_three_sub_questions() {
    let provider = mock(MockConfig::default());
    let mut req = request(
        "mock",
        "Break this into sub-questions.\nQuestion: solar power adoption?",
    );
    let by_text = provider.complete(&req).await.unwrap();
    let subs: Vec<String> = serde_json::from_str(&by_text.text).unwrap();
    assert_eq!(
        subs,
        vec![
            "What is solar power adoption?",
            "Why does solar power adoption matter?",
            "How is solar power adoption done in practice?",
        ]
    );

    req.messages = vec![msg(Role::User, "  quantum computing  ")];
    req.task_type = Some("decompose".to_string());
    let by_task = provider.complete(&req).await.unwrap();
    let subs: Vec<String> = serde_json::from_str(&by_task.text).unwrap();
    assert_eq!(subs.len(), 3);
    assert_eq!(subs[0], "What is quantum computing?");
}

#[tokio::test]
async fn mock_summarize_condenses_lines() {
    let provider = mock(MockConfig::default());
    let req = request(
        "mock",
        "Summarize these findings:\nSolar is cheap. It got cheaper.\n\nWind is steady! Mostly.",
    );
    let response = provider.complete(&req).await.unwrap();
    assert_eq!(response.text, "Summary: Solar is cheap. Wind is steady!");
}

#[tokio::test]
async fn mock_rule_from_config_wins() {
    let provider = mock(MockConfig {
        rules: vec![
            MockRule {
                contains: Some("WEATHER".to_string()),
                task_type: None,
                model: Some("other-model".to_string()),
                reply: "not me".to_string(),
                tool_calls: Vec::new(),
                delay_ms: None,
            },
            MockRule {
                contains: Some("WEATHER".to_string()),
                task_type: None,
                model: None,
                reply: "You asked: {input}".to_string(),
                tool_calls: vec![ToolCall {
                    id: "call_1".to_string(),
                    name: "get_weather".to_string(),
                    arguments: r#"{"city":"Oslo"}"#.to_string(),
                }],
                delay_ms: None,
            },
        ],
        ..MockConfig::default()
    });
    let response = provider
        .complete(&request("mock", "weather in Oslo? (sub-questions please)"))
        .await
        .unwrap();
    assert_eq!(
        response.text,
        "You asked: weather in Oslo? (sub-questions please)"
    );
    assert_eq!(response.finish_reason, FinishReason::ToolCalls);
    assert_eq!(response.tool_calls[0].name, "get_weather");
}

#[tokio::test]
async fn mock_rules_file_in_toml_loads() {
    let file = tempfile::Builder::new()
        .prefix("agentflow-mock-rules-")
        .suffix(".toml")
        .tempfile()
        .unwrap();
    let path = file.path().to_path_buf();
    std::fs::write(
        &path,
        r#"
[[rules]]
task_type = "classify"
reply = "positive"

[[rules]]
contains = "ping"
reply = "pong"
"#,
    )
    .unwrap();
    let provider = mock(MockConfig {
        rules_file: Some(path.clone()),
        ..MockConfig::default()
    });
    let mut req = request("mock", "Ping!");
    assert_eq!(provider.complete(&req).await.unwrap().text, "pong");
    req.task_type = Some("classify".to_string());
    assert_eq!(provider.complete(&req).await.unwrap().text, "positive");
}

#[tokio::test]
async fn mock_rules_file_in_json_loads_and_errors_name_the_file() {
    let file = tempfile::Builder::new()
        .prefix("agentflow-mock-rules-")
        .suffix(".json")
        .tempfile()
        .unwrap();
    let path = file.path().to_path_buf();
    std::fs::write(&path, r#"[{"contains": "ping", "reply": "pong"}]"#).unwrap();
    let provider = mock(MockConfig {
        rules_file: Some(path.clone()),
        ..MockConfig::default()
    });
    assert_eq!(
        provider
            .complete(&request("mock", "ping"))
            .await
            .unwrap()
            .text,
        "pong"
    );

    std::fs::write(&path, "[{\"reply\": 5}]").unwrap();
    let err = MockProvider::new(MockConfig {
        rules_file: Some(path.clone()),
        ..MockConfig::default()
    })
    .unwrap_err();
    assert!(
        format!("{err:#}").contains(&path.display().to_string()),
        "{err:#}"
    );

    let scratch = tempfile::tempdir().unwrap();
    let missing = scratch.path().join("no-such-rules-file.toml");
    let err = MockProvider::new(MockConfig {
        rules_file: Some(missing.clone()),
        ..MockConfig::default()
    })
    .unwrap_err();
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn mock_truncates_to_max_output_tokens() {
    let provider = mock(MockConfig::default());
    let mut req = request("mock", "Tell me everything about rivers in Europe");
    req.max_output_tokens = Some(5);
    let response = provider.complete(&req).await.unwrap();
    assert_eq!(response.finish_reason, FinishReason::Length);
    assert_eq!(response.output_tokens, 5);
    assert!(response.text.len() <= 20, "{}", response.text);
    assert!(response.text.starts_with("Answer to"));
}

#[tokio::test]
async fn mock_latency_is_honoured() {
    let provider = mock(MockConfig {
        latency_ms: 150,
        ..MockConfig::default()
    });
    let started = Instant::now();
    provider.complete(&request("mock", "hi")).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));
}
