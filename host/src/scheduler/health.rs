//! Per-model health: recent latency and errors, rate-limit cooldowns, a circuit
//! breaker, and the model version the provider reports.
//!
//! Breaker: after `breaker_failures` consecutive failures the model is *open*
//! (skipped) for `breaker_cooldown`; then it is *half-open*: exactly one call is let
//! through as a probe — success closes the breaker, failure opens it again. A 429
//! cools the model down for the provider's `retry-after` without counting towards the
//! breaker (the model is healthy, just busy).

use serde::Serialize;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Circuit-breaker state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Breaker {
    Closed,
    Open,
    HalfOpen,
}

/// How a call may use a model right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Normal,
    /// The half-open probe: its outcome decides the breaker.
    Probe,
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    latency_ms: u64,
    ok: bool,
}

/// A version change the provider reported.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VersionChange {
    pub model: String,
    pub previous: String,
    pub observed: String,
}

/// Health of one model.
#[derive(Debug)]
pub struct Health {
    samples: VecDeque<Sample>,
    window: usize,
    /// Successful samples in `samples`, and their p50 and p95 latencies: kept up to
    /// date on every sample (one sort), as every decision reads the p95 for every model
    /// and every call's health snapshot both.
    ok_samples: usize,
    ok_p50: Option<u64>,
    ok_p95: Option<u64>,
    consecutive_failures: u32,
    breaker: Breaker,
    open_until: Option<Instant>,
    probe_in_flight: bool,
    cooldown_until: Option<Instant>,
    observed_version: Option<String>,
    pub calls: u64,
    pub errors: u64,
}

/// A snapshot for `agentflow models` and decision reports.
#[derive(Clone, Debug, Serialize)]
pub struct HealthView {
    pub breaker: Breaker,
    pub consecutive_failures: u32,
    pub cooldown_ms: u64,
    pub error_rate: f64,
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    pub samples: usize,
    pub observed_version: Option<String>,
}

/// Why a model takes no call now.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Unavailable {
    #[error("cooling down after a 429 for {ms_left} ms more")]
    CoolingDown { ms_left: u64 },
    #[error("circuit open after {failures} consecutive failures ({ms_left} ms left)")]
    CircuitOpen { failures: u32, ms_left: u64 },
    #[error("circuit half-open: a probe call is in flight")]
    ProbeInFlight,
}

impl Health {
    /// A healthy model with an empty history of at most `window` samples. The first
    /// model version the provider reports becomes the baseline; later different ones
    /// are changes.
    pub fn new(window: usize) -> Health {
        Health {
            samples: VecDeque::new(),
            window: window.max(1),
            ok_samples: 0,
            ok_p50: None,
            ok_p95: None,
            consecutive_failures: 0,
            breaker: Breaker::Closed,
            open_until: None,
            probe_in_flight: false,
            cooldown_until: None,
            observed_version: None,
            calls: 0,
            errors: 0,
        }
    }

    /// Whether a call may go to this model now, or why not.
    pub fn admit(&mut self, now: Instant) -> Result<Admission, Unavailable> {
        if let Some(until) = self.cooldown_until {
            if now < until {
                return Err(Unavailable::CoolingDown {
                    ms_left: until.duration_since(now).as_millis() as u64,
                });
            }
            self.cooldown_until = None;
        }
        match self.breaker {
            Breaker::Closed => Ok(Admission::Normal),
            Breaker::Open => {
                let until = self.open_until.unwrap_or(now);
                if now < until {
                    Err(Unavailable::CircuitOpen {
                        failures: self.consecutive_failures,
                        ms_left: until.duration_since(now).as_millis() as u64,
                    })
                } else {
                    self.breaker = Breaker::HalfOpen;
                    self.probe_in_flight = false;
                    self.admit(now)
                }
            }
            Breaker::HalfOpen if self.probe_in_flight => Err(Unavailable::ProbeInFlight),
            Breaker::HalfOpen => Ok(Admission::Probe),
        }
    }

    /// Give back an unused probe.
    pub fn release_probe(&mut self) {
        self.probe_in_flight = false;
    }

    /// Mark the half-open probe as taken.
    pub fn take_probe(&mut self) {
        self.probe_in_flight = true;
    }

    fn push(&mut self, sample: Sample) {
        self.calls += 1;
        if !sample.ok {
            self.errors += 1;
        }
        self.samples.push_back(sample);
        while self.samples.len() > self.window {
            self.samples.pop_front();
        }
        let mut latencies: Vec<u64> = self
            .samples
            .iter()
            .filter(|s| s.ok)
            .map(|s| s.latency_ms)
            .collect();
        latencies.sort_unstable();
        self.ok_samples = latencies.len();
        self.ok_p50 = percentile(&latencies, 0.5);
        self.ok_p95 = percentile(&latencies, 0.95);
    }

    /// Record a success; returns a version change if the provider reported a new one.
    pub fn success(
        &mut self,
        model: &str,
        latency: Duration,
        observed_version: &str,
    ) -> Option<VersionChange> {
        self.push(Sample {
            latency_ms: latency.as_millis() as u64,
            ok: true,
        });
        self.consecutive_failures = 0;
        self.breaker = Breaker::Closed;
        self.open_until = None;
        self.probe_in_flight = false;
        let change = match &self.observed_version {
            Some(prev) if prev != observed_version && !observed_version.is_empty() => {
                Some(VersionChange {
                    model: model.to_string(),
                    previous: prev.clone(),
                    observed: observed_version.to_string(),
                })
            }
            _ => None,
        };
        if !observed_version.is_empty() {
            self.observed_version = Some(observed_version.to_string());
        }
        change
    }

    /// Record a failure. `retry_after` (a 429) cools the model down instead of counting
    /// towards the breaker.
    pub fn failure(
        &mut self,
        latency: Duration,
        retry_after: Option<Duration>,
        now: Instant,
        threshold: u32,
        cooldown: Duration,
    ) {
        self.push(Sample {
            latency_ms: latency.as_millis() as u64,
            ok: false,
        });
        self.probe_in_flight = false;
        if let Some(wait) = retry_after {
            self.cooldown_until = Some(now + wait.max(Duration::from_millis(100)));
            if self.breaker == Breaker::HalfOpen {
                self.breaker = Breaker::Open;
                self.open_until = Some(now + cooldown);
            }
            return;
        }
        self.consecutive_failures += 1;
        if self.breaker == Breaker::HalfOpen || self.consecutive_failures >= threshold {
            self.breaker = Breaker::Open;
            self.open_until = Some(now + cooldown);
        }
    }

    /// Observed p95 latency once there are at least `min` successful samples.
    pub fn p95_if(&self, min: usize) -> Option<u64> {
        if self.ok_samples >= min {
            self.ok_p95
        } else {
            None
        }
    }

    /// A snapshot.
    pub fn view(&self, now: Instant) -> HealthView {
        let errors = self.samples.iter().filter(|s| !s.ok).count();
        HealthView {
            breaker: match (self.breaker, self.open_until) {
                (Breaker::Open, Some(until)) if now >= until => Breaker::HalfOpen,
                (b, _) => b,
            },
            consecutive_failures: self.consecutive_failures,
            cooldown_ms: self
                .cooldown_until
                .map(|u| u.saturating_duration_since(now).as_millis() as u64)
                .unwrap_or(0),
            error_rate: if self.samples.is_empty() {
                0.0
            } else {
                errors as f64 / self.samples.len() as f64
            },
            p50_ms: self.ok_p50,
            p95_ms: self.ok_p95,
            samples: self.samples.len(),
            observed_version: self.observed_version.clone(),
        }
    }
}

/// The `p` quantile (nearest rank) of `sorted`, `None` if it is empty.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    let last = sorted.len().checked_sub(1)?;
    let idx = (last as f64 * p).round() as usize;
    Some(sorted[idx.min(last)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_then_half_opens_for_one_probe() {
        let t0 = Instant::now();
        let cool = Duration::from_millis(100);
        let mut h = Health::new(10);
        for _ in 0..3 {
            assert_eq!(h.admit(t0), Ok(Admission::Normal));
            h.failure(Duration::from_millis(5), None, t0, 3, cool);
        }
        assert!(
            h.admit(t0)
                .unwrap_err()
                .to_string()
                .contains("circuit open")
        );
        let later = t0 + cool;
        assert_eq!(h.admit(later), Ok(Admission::Probe));
        h.take_probe();
        assert!(h.admit(later).unwrap_err().to_string().contains("probe"));
        h.failure(Duration::from_millis(5), None, later, 3, cool);
        assert!(h.admit(later).is_err(), "a failed probe re-opens");
        let again = later + cool;
        assert_eq!(h.admit(again), Ok(Admission::Probe));
        h.take_probe();
        assert!(h.success("m", Duration::from_millis(5), "v1").is_none());
        assert_eq!(h.admit(again), Ok(Admission::Normal));
    }

    #[test]
    fn rate_limit_cools_down_and_versions_are_tracked() {
        let t0 = Instant::now();
        let mut h = Health::new(10);
        assert!(
            h.success("m", Duration::from_millis(10), "v1").is_none(),
            "first report is the baseline"
        );
        h.failure(
            Duration::ZERO,
            Some(Duration::from_secs(2)),
            t0,
            3,
            Duration::from_secs(30),
        );
        assert!(
            h.admit(t0 + Duration::from_secs(1))
                .unwrap_err()
                .to_string()
                .contains("429")
        );
        assert_eq!(h.admit(t0 + Duration::from_secs(2)), Ok(Admission::Normal));
        let change = h.success("m", Duration::from_millis(10), "v2").unwrap();
        assert_eq!(
            (change.previous.as_str(), change.observed.as_str()),
            ("v1", "v2")
        );
        assert!(h.success("m", Duration::from_millis(10), "v2").is_none());
    }
}
