//! Failed provider attempts as the ledger and the budget see them: each becomes an
//! `llm.attempt` event of the calling task (status, error, the wait before the next
//! try, the attempt's latency), and a timed-out one is charged its prompt tokens —
//! the provider got the prompt and may have billed it without telling us its usage,
//! so they are estimated (as for budget reservations) and marked `tokens_estimated`.
//!
//! Used by the guest's `llm` capability and by the host's own calls (judges, merges).
//! It builds event parts and sums charges; writing them and settling the budget is
//! the caller's job.

use crate::providers::Price;
use crate::providers::{FailedAttempt, ProviderError};
use serde_json::{Value, json};

/// What failed attempts are charged.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AttemptCharge {
    pub tokens: u64,
    pub cost_usd: f64,
}

/// One failed attempt as the parts of its `llm.attempt` event.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptRecord {
    pub request: Value,
    pub response: Value,
    pub tokens_in: u32,
    pub cost_usd: f64,
}

/// The estimated charge of one failed attempt. Only a timeout may have been billed;
/// any other failure was refused by the server or never reached it, and a 2xx the
/// provider could not parse gave no usage to trust.
pub fn estimated_charge(
    attempt: &FailedAttempt,
    price: &Price,
    prompt_tokens: u64,
) -> AttemptCharge {
    match attempt.error {
        ProviderError::Timeout => AttemptCharge {
            tokens: prompt_tokens,
            cost_usd: price.cost(prompt_tokens, 0),
        },
        _ => AttemptCharge::default(),
    }
}

/// The event parts of the failed attempts of one call to `model` whose prompt is
/// estimated at `prompt_tokens`, and what they are charged in total.
pub fn attempt_records(
    model: &str,
    attempts: &[FailedAttempt],
    price: &Price,
    prompt_tokens: u64,
) -> (Vec<AttemptRecord>, AttemptCharge) {
    let mut total = AttemptCharge::default();
    let records = attempts
        .iter()
        .map(|attempt| {
            let charge = estimated_charge(attempt, price, prompt_tokens);
            total.tokens += charge.tokens;
            total.cost_usd += charge.cost_usd;
            AttemptRecord {
                request: json!({ "model": model, "attempt": attempt.attempt }),
                response: json!({
                    "status": attempt.status,
                    "error": attempt.error.to_string(),
                    "error_kind": attempt.error.kind(),
                    "wait_ms": attempt.wait_ms,
                    "latency_ms": attempt.latency_ms,
                    "tokens_estimated": charge.tokens > 0,
                }),
                tokens_in: u32::try_from(charge.tokens).unwrap_or(u32::MAX),
                cost_usd: charge.cost_usd,
            }
        })
        .collect();
    (records, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(attempt: u32, error: ProviderError) -> FailedAttempt {
        FailedAttempt {
            attempt,
            status: None,
            error,
            wait_ms: Some(10),
            latency_ms: 5,
        }
    }

    #[test]
    fn only_timeouts_are_charged_their_estimated_prompt() {
        let price = Price {
            input_per_mtok: 2.0,
            output_per_mtok: 8.0,
        };
        let attempts = [
            failed(1, ProviderError::RateLimited { retry_after_ms: 10 }),
            failed(2, ProviderError::Timeout),
            failed(3, ProviderError::Malformed("x".into())),
        ];
        let (records, total) = attempt_records("m", &attempts, &price, 1000);
        assert_eq!(total.tokens, 1000);
        assert!((total.cost_usd - 0.002).abs() < 1e-12);
        let estimated: Vec<bool> = records
            .iter()
            .map(|r| r.response["tokens_estimated"] == true)
            .collect();
        assert_eq!(estimated, [false, true, false]);
        assert_eq!(records[1].tokens_in, 1000);
        assert_eq!(records[2].response["error_kind"], "malformed-response");
    }
}
