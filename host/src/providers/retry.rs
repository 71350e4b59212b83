//! Bounded retries for the HTTP providers: one helper that sends a request built by
//! a closure, waits and retries on 429 (honouring `retry-after`), 5xx, connection
//! failures and timeouts, and maps what is left to a typed [`ProviderError`].
//!
//! This module is not for request or response shapes (each provider owns its wire
//! format), nor for budgets or ledgers; it only returns the body of a 2xx answer.
//! It never logs request headers, so API keys cannot leak through its logs.

use super::ProviderError;
use serde::Deserialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How hard a provider tries before giving up on a transient failure.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so at most `max_retries + 1` requests).
    pub max_retries: u32,
    /// First backoff; doubled after every retry.
    pub initial_backoff_ms: u64,
    /// Upper bound of the exponential backoff.
    pub max_backoff_ms: u64,
    /// Upper bound on how long a `retry-after` header can make us wait.
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

/// One failed attempt: the error to report if we stop here, whether trying again
/// may help, and how long the server asked us to wait (already capped).
struct Failure {
    error: ProviderError,
    retryable: bool,
    wait_ms: Option<u64>,
}

/// Send the request built by `build` until it gets a 2xx answer or the policy
/// gives up, and return the 2xx body text. `provider` only labels log lines.
///
/// The closure is called once per attempt, so it must build a fresh request each
/// time (a `reqwest::RequestBuilder` cannot be reused).
pub(crate) async fn send_with_retry<F>(
    policy: &RetryPolicy,
    provider: &str,
    build: F,
) -> Result<String, ProviderError>
where
    F: Fn() -> reqwest::RequestBuilder,
{
    let mut attempt: u32 = 0;
    loop {
        let failure = match build().send().await {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    match response.text().await {
                        Ok(text) => return Ok(text),
                        Err(err) => transport_failure(&err),
                    }
                } else {
                    let retry_after_ms = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after_ms);
                    let body = response.text().await.unwrap_or_default();
                    status_failure(policy, attempt, status.as_u16(), retry_after_ms, &body)
                }
            }
            Err(err) => transport_failure(&err),
        };

        if !failure.retryable || attempt >= policy.max_retries {
            return Err(failure.error);
        }
        let wait_ms = failure
            .wait_ms
            .unwrap_or_else(|| policy.backoff_ms(attempt));
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

/// Classify a non-2xx HTTP answer.
fn status_failure(
    policy: &RetryPolicy,
    attempt: u32,
    status: u16,
    retry_after_ms: Option<u64>,
    body: &str,
) -> Failure {
    let excerpt = body_excerpt(body);
    match status {
        429 => Failure {
            error: ProviderError::RateLimited {
                retry_after_ms: retry_after_ms.unwrap_or_else(|| policy.backoff_ms(attempt)),
            },
            retryable: true,
            wait_ms: retry_after_ms.map(|ms| ms.min(policy.max_retry_after_ms)),
        },
        500..=599 => Failure {
            error: ProviderError::Unavailable(format!("HTTP {status}: {excerpt}")),
            retryable: true,
            wait_ms: None,
        },
        401 | 403 => Failure {
            error: ProviderError::Auth(format!("HTTP {status}: {excerpt}")),
            retryable: false,
            wait_ms: None,
        },
        400..=499 => Failure {
            error: ProviderError::InvalidRequest(format!("HTTP {status}: {excerpt}")),
            retryable: false,
            wait_ms: None,
        },
        _ => Failure {
            error: ProviderError::Unavailable(format!("unexpected HTTP {status}: {excerpt}")),
            retryable: false,
            wait_ms: None,
        },
    }
}

/// Classify a failure to send the request or to read the answer.
fn transport_failure(err: &reqwest::Error) -> Failure {
    if err.is_timeout() {
        Failure {
            error: ProviderError::Timeout,
            retryable: true,
            wait_ms: None,
        }
    } else if err.is_builder() {
        Failure {
            error: ProviderError::InvalidRequest(format!("could not build the request: {err}")),
            retryable: false,
            wait_ms: None,
        }
    } else {
        // Connection refused/reset, a body cut short, a TLS failure: all transient
        // as far as we can tell, so worth another attempt.
        Failure {
            error: ProviderError::Unavailable(format!("connection failed: {}", error_chain(err))),
            retryable: true,
            wait_ms: None,
        }
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

/// Parse a `retry-after` value: delta-seconds, or an IMF-fixdate HTTP date
/// (`Sun, 06 Nov 1994 08:49:37 GMT`). A date in the past means "now".
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

/// Seconds since the Unix epoch of an IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_http_date(value: &str) -> Option<u64> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [_weekday, day, month, year, time, zone] = parts.as_slice() else {
        return None;
    };
    if !zone.eq_ignore_ascii_case("GMT") && !zone.eq_ignore_ascii_case("UTC") {
        return None;
    }
    let day: u64 = day.parse().ok()?;
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as u64 + 1;
    let year: u64 = year.parse().ok()?;
    let hms: Vec<u64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || year < 1970 || *h > 23 || *m > 59 || *s > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant), restricted to years >= 1970.
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
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
        assert_eq!(parse_retry_after_ms("soon"), None);
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
