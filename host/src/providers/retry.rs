//! Bounded retries for the HTTP providers: one helper that sends a request built by
//! a closure, waits and retries on 429 and 5xx (honouring `retry-after-ms` and
//! `retry-after`, capped by the policy), connection failures, timeouts and 2xx
//! answers the provider's parser rejects, maps what is left to a typed
//! [`ProviderError`], and reports every failed attempt.
//!
//! This module is not for request or response shapes (each provider owns its wire
//! format and hands in its parser), nor for budgets or ledgers. It never logs
//! request headers, so API keys cannot leak through its logs.

use super::{ChatResponse, Completion, FailedAttempt, ProviderError};
use serde::Deserialize;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How hard a provider tries before giving up on a transient failure.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so at most `max_retries + 1` requests).
    pub max_retries: u32,
    /// First backoff; doubled after every retry.
    pub initial_backoff_ms: u64,
    /// Upper bound of the exponential backoff.
    pub max_backoff_ms: u64,
    /// Upper bound on how long a `retry-after` or `retry-after-ms` header can make us
    /// wait.
    pub max_retry_after_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_backoff_ms: 200,
            max_backoff_ms: 5000,
            max_retry_after_ms: 30_000,
        }
    }
}

impl RetryPolicy {
    /// Backoff before retry number `attempt + 1` (0-based), without jitter.
    fn backoff_ms(&self, attempt: u32) -> u64 {
        let factor = 1u64.checked_shl(attempt.min(32)).unwrap_or(u64::MAX);
        self.initial_backoff_ms
            .saturating_mul(factor)
            .min(self.max_backoff_ms)
    }
}

/// An HTTP client whose every request (connect, send and read) must finish within
/// `timeout_ms`.
pub(crate) fn http_client(timeout_ms: u64) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(timeout_ms))
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))
}

/// The API key from the config, else from the environment variable `env_var`;
/// empty values count as missing.
pub(crate) fn resolve_api_key(configured: Option<&str>, env_var: &str) -> Option<String> {
    configured
        .map(str::to_string)
        .filter(|k| !k.trim().is_empty())
        .or_else(|| std::env::var(env_var).ok())
        .filter(|k| !k.trim().is_empty())
}

/// Most characters of a response body quoted in an error message.
const EXCERPT_CHARS: usize = 200;

/// A short, single-line excerpt of a response body for error messages.
pub(crate) fn body_excerpt(body: &str) -> String {
    let collapsed = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= EXCERPT_CHARS {
        collapsed
    } else {
        let mut cut: String = collapsed.chars().take(EXCERPT_CHARS).collect();
        cut.push('…');
        cut
    }
}

/// One failed attempt: the error to report if we stop here, the HTTP status if the
/// server answered, whether trying again may help, and how long the server asked us
/// to wait (already capped).
struct Failure {
    error: ProviderError,
    status: Option<u16>,
    retryable: bool,
    wait_ms: Option<u64>,
}

/// Send the request built by `build` until `parse` accepts a 2xx answer or the
/// policy gives up. A 2xx body that `parse` rejects (unparseable, no choices, no
/// content) is retried like a transport error. `provider` only labels log lines.
///
/// The closure is called once per attempt, so it must build a fresh request each
/// time (a `reqwest::RequestBuilder` cannot be reused).
pub(crate) async fn send_with_retry<B, P>(
    policy: &RetryPolicy,
    provider: &str,
    build: B,
    parse: P,
) -> Completion
where
    B: Fn() -> reqwest::RequestBuilder,
    P: Fn(&str) -> Result<ChatResponse, ProviderError>,
{
    let mut failed_attempts = Vec::new();
    let mut attempt: u32 = 0;
    loop {
        let sent = Instant::now();
        let outcome = attempt_once(policy, attempt, build(), &parse).await;
        let latency = sent.elapsed();
        let failure = match outcome {
            Ok(reply) => {
                return Completion {
                    result: Ok(reply),
                    failed_attempts,
                    final_attempt_latency: latency,
                };
            }
            Err(failure) => failure,
        };
        let gives_up = !failure.retryable || attempt >= policy.max_retries;
        let wait_ms = (!gives_up).then(|| {
            failure
                .wait_ms
                .unwrap_or_else(|| policy.backoff_ms(attempt))
        });
        failed_attempts.push(FailedAttempt {
            attempt: attempt + 1,
            status: failure.status,
            error: failure.error.clone(),
            wait_ms,
            latency_ms: latency.as_millis() as u64,
        });
        let Some(wait_ms) = wait_ms else {
            return Completion {
                result: Err(failure.error),
                failed_attempts,
                final_attempt_latency: latency,
            };
        };
        tracing::warn!(
            provider,
            attempt = attempt + 1,
            max_retries = policy.max_retries,
            wait_ms,
            error = %failure.error,
            "LLM provider call failed; retrying"
        );
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        attempt += 1;
    }
}

/// Send one request and parse its answer, or classify why that failed.
async fn attempt_once<P>(
    policy: &RetryPolicy,
    attempt: u32,
    request: reqwest::RequestBuilder,
    parse: &P,
) -> Result<ChatResponse, Failure>
where
    P: Fn(&str) -> Result<ChatResponse, ProviderError>,
{
    let response = request.send().await.map_err(|e| transport_failure(&e))?;
    let status = response.status().as_u16();
    if !response.status().is_success() {
        let server_wait_ms = server_wait_ms(response.headers());
        let body = response.text().await.unwrap_or_default();
        return Err(status_failure(
            policy,
            attempt,
            status,
            server_wait_ms,
            &body,
        ));
    }
    let body = response.text().await.map_err(|e| transport_failure(&e))?;
    parse(&body).map_err(|error| Failure {
        // A 2xx nobody can use: the next attempt may well be fine.
        retryable: matches!(error, ProviderError::Malformed(_)),
        error,
        status: Some(status),
        wait_ms: None,
    })
}

/// How long the server asked us to wait: `retry-after-ms` (milliseconds, fractions
/// allowed, as OpenAI sends it), else `retry-after` (seconds or an HTTP date).
fn server_wait_ms(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    header("retry-after-ms")
        .and_then(parse_retry_after_ms_header)
        .or_else(|| header(reqwest::header::RETRY_AFTER.as_str()).and_then(parse_retry_after_ms))
}

/// Parse a `retry-after-ms` value: non-negative milliseconds, rounded up.
fn parse_retry_after_ms_header(value: &str) -> Option<u64> {
    let millis: f64 = value.trim().parse().ok()?;
    (millis.is_finite() && millis >= 0.0).then(|| millis.ceil() as u64)
}

/// Classify a non-2xx HTTP answer. The server's wait (`server_wait_ms`) is honoured
/// on 429 and on every 5xx (503, Anthropic's 529, ...), capped by the policy.
fn status_failure(
    policy: &RetryPolicy,
    attempt: u32,
    status: u16,
    server_wait_ms: Option<u64>,
    body: &str,
) -> Failure {
    let excerpt = body_excerpt(body);
    let capped_wait = server_wait_ms.map(|ms| ms.min(policy.max_retry_after_ms));
    let failure = |error, retryable, wait_ms| Failure {
        error,
        status: Some(status),
        retryable,
        wait_ms,
    };
    match status {
        429 => failure(
            ProviderError::RateLimited {
                retry_after_ms: server_wait_ms.unwrap_or_else(|| policy.backoff_ms(attempt)),
            },
            true,
            capped_wait,
        ),
        500..=599 => failure(
            ProviderError::Unavailable(format!("HTTP {status}: {excerpt}")),
            true,
            capped_wait,
        ),
        401 | 403 => failure(
            ProviderError::Auth(format!("HTTP {status}: {excerpt}")),
            false,
            None,
        ),
        400..=499 => failure(
            ProviderError::InvalidRequest(format!("HTTP {status}: {excerpt}")),
            false,
            None,
        ),
        _ => failure(
            ProviderError::Unavailable(format!("unexpected HTTP {status}: {excerpt}")),
            false,
            None,
        ),
    }
}

/// Classify a failure to send the request or to read the answer.
fn transport_failure(err: &reqwest::Error) -> Failure {
    let (error, retryable) = if err.is_timeout() {
        (ProviderError::Timeout, true)
    } else if err.is_builder() {
        (
            ProviderError::InvalidRequest(format!("could not build the request: {err}")),
            false,
        )
    } else {
        // Connection refused/reset, a body cut short, a TLS failure: all transient
        // as far as we can tell, so worth another attempt.
        (
            ProviderError::Unavailable(format!("connection failed: {}", error_chain(err))),
            true,
        )
    };
    Failure {
        error,
        status: None,
        retryable,
        wait_ms: None,
    }
}

/// `err` and its sources on one line (reqwest's own message is often just "error
/// sending request").
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Parse a `retry-after` value: delta-seconds, or an HTTP date (IMF-fixdate
/// `Sun, 06 Nov 1994 08:49:37 GMT`, or the obsolete RFC 850 and asctime forms that
/// RFC 9110 asks recipients to accept). A date in the past means "now".
fn parse_retry_after_ms(value: &str) -> Option<u64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(seconds.saturating_mul(1000));
    }
    if let Ok(seconds) = value.parse::<f64>()
        && seconds.is_finite()
        && seconds >= 0.0
    {
        return Some((seconds * 1000.0) as u64);
    }
    let at = parse_http_date(value)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(at.saturating_sub(now).saturating_mul(1000))
}

/// Seconds since the Unix epoch of an HTTP date (`httpdate` checks the weekday
/// against the date and refuses impossible ones such as 31 Feb).
fn parse_http_date(value: &str) -> Option<u64> {
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(UNIX_EPOCH).ok()?.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_retry_after_forms() {
        assert_eq!(parse_retry_after_ms("2"), Some(2000));
        assert_eq!(parse_retry_after_ms("0.5"), Some(500));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(0)
        );
        // The obsolete forms name the same instant; a wrong weekday is no date.
        assert_eq!(
            parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Sun Nov  6 08:49:37 1994"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Mon, 06 Nov 1994 08:49:37 GMT"), None);
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let wait = parse_retry_after_ms(&later).unwrap();
        assert!((118_000..=120_000).contains(&wait), "{wait}");
        assert_eq!(parse_retry_after_ms("soon"), None);
        assert_eq!(parse_retry_after_ms_header("250"), Some(250));
        assert_eq!(parse_retry_after_ms_header(" 12.2 "), Some(13));
        assert_eq!(parse_retry_after_ms_header("-1"), None);
    }

    #[test]
    fn retry_after_ms_wins_over_retry_after() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("retry-after", "2".parse().unwrap());
        assert_eq!(server_wait_ms(&headers), Some(2000));
        headers.insert("retry-after-ms", "150.5".parse().unwrap());
        assert_eq!(server_wait_ms(&headers), Some(151));
    }

    #[test]
    fn server_waits_count_on_5xx_and_are_capped() {
        let policy = RetryPolicy::default();
        let overloaded = status_failure(&policy, 0, 529, Some(700), "overloaded");
        assert_eq!(
            (overloaded.wait_ms, overloaded.retryable),
            (Some(700), true)
        );
        let huge = status_failure(&policy, 0, 503, Some(3_600_000), "");
        assert_eq!(huge.wait_ms, Some(policy.max_retry_after_ms));
        let limited = status_failure(&policy, 0, 429, Some(3_600_000), "");
        assert_eq!(limited.wait_ms, Some(policy.max_retry_after_ms));
        assert_eq!(
            limited.error,
            ProviderError::RateLimited {
                retry_after_ms: 3_600_000
            }
        );
    }

    #[test]
    fn backoff_is_exponential_and_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff_ms(0), 200);
        assert_eq!(policy.backoff_ms(1), 400);
        assert_eq!(policy.backoff_ms(10), 5000);
        assert_eq!(policy.backoff_ms(100), 5000);
    }
}
