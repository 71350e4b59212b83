//! Token-per-minute and request-per-minute quotas as sliding windows.
//!
//! A token bucket of capacity C refilled at C per minute lets up to 2C through in
//! some 60-second window (a full bucket spent at once, then a minute of refill).
//! Providers count per rolling window, so this keeps a log of reservations and
//! admits a new one only if the reservations in the last window plus it stay within
//! the limit: no window of the configured length ever sees more than the quota. A
//! reservation is made for the worst case before the call (prompt estimate + maximum
//! output) and reconciled with the real usage after it. Where a provider limits input
//! and output tokens separately (`itpm`, `otpm`), each side is counted on its own too.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Entry {
    id: u64,
    at: Instant,
    input: u64,
    output: u64,
}

/// One sliding-window quota (tokens — in all, and input and output apart — and
/// requests).
#[derive(Debug)]
pub struct Window {
    tpm: Option<u64>,
    rpm: Option<u64>,
    itpm: Option<u64>,
    otpm: Option<u64>,
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
            itpm: None,
            otpm: None,
            length,
            entries: VecDeque::new(),
            next_id: 1,
        }
    }

    /// The same window also limiting input and output tokens apart (none = unlimited).
    pub fn with_split(mut self, itpm: Option<u64>, otpm: Option<u64>) -> Window {
        self.itpm = itpm;
        self.otpm = otpm;
        self
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
            self.entries.iter().map(|e| e.input + e.output).sum(),
            self.entries.len() as u64,
        )
    }

    /// Whether a call of `input` + `output` tokens would fit now.
    pub fn check(&mut self, input: u64, output: u64, now: Instant) -> Result<(), Refusal> {
        let tokens = input + output;
        let (used_tokens, used_requests) = self.usage(now);
        let retry_at = self.entries.front().map(|e| e.at + self.length);
        for (side, limit, wanted, used) in [
            (
                "input",
                self.itpm,
                input,
                self.entries.iter().map(|e| e.input).sum::<u64>(),
            ),
            (
                "output",
                self.otpm,
                output,
                self.entries.iter().map(|e| e.output).sum::<u64>(),
            ),
        ] {
            let Some(limit) = limit else { continue };
            if wanted > limit {
                return Err(Refusal {
                    reason: format!(
                        "a call of up to {wanted} {side} tokens can never fit a quota of {limit}"
                    ),
                    retry_at: None,
                });
            }
            if used + wanted > limit {
                return Err(Refusal {
                    reason: format!(
                        "{used}+{wanted} {side} tokens would exceed {limit} in the window"
                    ),
                    retry_at,
                });
            }
        }
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

    /// Record a reservation of `input` + `output` tokens (after [`Window::check`]
    /// passed); returns its id.
    pub fn add(&mut self, input: u64, output: u64, now: Instant) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push_back(Entry {
            id,
            at: now,
            input,
            output,
        });
        id
    }

    /// Replace a reservation's input and output tokens with the real counts (it keeps
    /// its time).
    pub fn reconcile(&mut self, id: u64, input: u64, output: u64) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.id == id) {
            e.input = input;
            e.output = output;
        }
    }

    /// Take a reservation back as if it was never made (its request no longer counts).
    pub fn withdraw(&mut self, id: u64) {
        self.entries.retain(|e| e.id != id);
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
            if w.check(100, 0, now).is_ok() {
                w.add(100, 0, now);
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
        let id = w.add(900, 0, now);
        assert!(w.check(200, 0, now).is_err());
        w.reconcile(id, 100, 0);
        assert!(w.check(200, 0, now).is_ok());
        w.add(200, 0, now);
        let refusal = w.check(1, 0, now).unwrap_err();
        assert!(refusal.reason.contains("requests"));
        assert_eq!(refusal.retry_at, Some(now + Duration::from_secs(60)));
    }

    #[test]
    fn a_withdrawn_reservation_counts_neither_tokens_nor_its_request() {
        let now = Instant::now();
        let mut w = Window::new(Some(1000), Some(1), Duration::from_secs(60));
        let id = w.add(900, 0, now);
        assert!(w.check(1, 0, now).is_err());
        w.withdraw(id);
        assert_eq!(w.usage(now), (0, 0));
        assert!(w.check(1000, 0, now).is_ok());
    }

    #[test]
    fn input_and_output_tokens_are_limited_apart() {
        let now = Instant::now();
        let mut w =
            Window::new(None, None, Duration::from_secs(60)).with_split(Some(1000), Some(100));
        let id = w.add(500, 80, now);
        // Output is the scarce side: 80 + 30 > 100, though the input would fit.
        let refusal = w.check(100, 30, now).unwrap_err();
        assert!(
            refusal.reason.contains("output tokens"),
            "{}",
            refusal.reason
        );
        assert!(w.check(400, 20, now).is_ok());
        assert!(w.check(600, 0, now).unwrap_err().reason.contains("input"));
        assert!(w.check(0, 101, now).unwrap_err().retry_at.is_none());
        // The reply used fewer output tokens than reserved: room again.
        w.reconcile(id, 500, 10);
        assert!(w.check(100, 30, now).is_ok());
    }
}
