//! Token-per-minute and request-per-minute quotas as sliding windows.
//!
//! A token bucket of capacity C refilled at C per minute lets up to 2C through in
//! some 60-second window (a full bucket spent at once, then a minute of refill).
//! Providers count per rolling window, so this keeps a log of reservations and
//! admits a new one only if the reservations in the last window plus it stay within
//! the limit: no window of the configured length ever sees more than the quota. A
//! reservation is made for the worst case before the call (prompt estimate + maximum
//! output) and reconciled with the real usage after it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Entry {
    id: u64,
    at: Instant,
    tokens: u64,
}

/// One sliding-window quota (tokens and requests).
#[derive(Debug)]
pub struct Window {
    tpm: Option<u64>,
    rpm: Option<u64>,
    length: Duration,
    entries: VecDeque<Entry>,
    next_id: u64,
}

/// Why a reservation does not fit now, and when it might.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub reason: String,
    /// Earliest moment the oldest entry leaves the window.
    pub retry_at: Option<Instant>,
}

impl Window {
    /// A window of `length` allowing `tpm` tokens and `rpm` requests (none = unlimited).
    pub fn new(tpm: Option<u64>, rpm: Option<u64>, length: Duration) -> Window {
        Window {
            tpm,
            rpm,
            length,
            entries: VecDeque::new(),
            next_id: 1,
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(front) = self.entries.front() {
            if now.duration_since(front.at) >= self.length {
                self.entries.pop_front();
            } else {
                break;
            }
        }
    }

    /// Tokens and requests counted in the current window.
    pub fn usage(&mut self, now: Instant) -> (u64, u64) {
        self.expire(now);
        (
            self.entries.iter().map(|e| e.tokens).sum(),
            self.entries.len() as u64,
        )
    }

    /// Whether `tokens` more would fit now.
    pub fn check(&mut self, tokens: u64, now: Instant) -> Result<(), Refusal> {
        let (used_tokens, used_requests) = self.usage(now);
        let retry_at = self.entries.front().map(|e| e.at + self.length);
        if let Some(rpm) = self.rpm
            && used_requests + 1 > rpm
        {
            return Err(Refusal {
                reason: format!("{used_requests}/{rpm} requests in the window"),
                retry_at,
            });
        }
        if let Some(tpm) = self.tpm {
            if tokens > tpm {
                return Err(Refusal {
                    reason: format!(
                        "a call of up to {tokens} tokens can never fit a quota of {tpm}"
                    ),
                    retry_at: None,
                });
            }
            if used_tokens + tokens > tpm {
                return Err(Refusal {
                    reason: format!(
                        "{used_tokens}+{tokens} tokens would exceed {tpm} in the window"
                    ),
                    retry_at,
                });
            }
        }
        Ok(())
    }

    /// Record a reservation (after [`Window::check`] passed); returns its id.
    pub fn add(&mut self, tokens: u64, now: Instant) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push_back(Entry {
            id,
            at: now,
            tokens,
        });
        id
    }

    /// Replace a reservation's tokens with the real count (it keeps its time).
    pub fn reconcile(&mut self, id: u64, actual_tokens: u64) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.id == id) {
            e.tokens = actual_tokens;
        }
    }

    /// The limits.
    pub fn limits(&self) -> (Option<u64>, Option<u64>) {
        (self.tpm, self.rpm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_the_quota_in_any_window() {
        let start = Instant::now();
        let len = Duration::from_secs(60);
        let mut w = Window::new(Some(1000), None, len);
        let mut admitted = Vec::new();
        // Try 100 tokens every second for five minutes.
        for s in 0..300u64 {
            let now = start + Duration::from_secs(s);
            if w.check(100, now).is_ok() {
                w.add(100, now);
                admitted.push(s);
            }
        }
        for (i, &t) in admitted.iter().enumerate() {
            let in_window = admitted[i..].iter().take_while(|&&u| u < t + 60).count();
            assert!(
                in_window * 100 <= 1000,
                "window at {t}s saw {in_window} calls"
            );
        }
        assert!(
            admitted.len() >= 40,
            "the quota is used, not starved: {}",
            admitted.len()
        );
    }

    #[test]
    fn reconcile_frees_unused_tokens_and_rpm_counts_requests() {
        let now = Instant::now();
        let mut w = Window::new(Some(1000), Some(2), Duration::from_secs(60));
        let id = w.add(900, now);
        assert!(w.check(200, now).is_err());
        w.reconcile(id, 100);
        assert!(w.check(200, now).is_ok());
        w.add(200, now);
        let refusal = w.check(1, now).unwrap_err();
        assert!(refusal.reason.contains("requests"));
        assert_eq!(refusal.retry_at, Some(now + Duration::from_secs(60)));
    }
}
