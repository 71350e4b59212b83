//! Guest CPU accounting: the CPU time a guest really spent executing, measured with
//! the per-thread CPU clock.
//!
//! A guest runs on a fiber that is resumed by whichever tokio worker polls its task,
//! so the meter samples the clock of the thread it is on at each transition wasmtime
//! reports through its call hook: entering wasm or coming back from the host starts a
//! segment, calling the host or leaving wasm ends one. Within one segment the fiber
//! never switches thread (it only migrates while suspended, and it suspends only inside
//! host calls), so the difference of two samples is CPU time this guest burnt. Time
//! spent in host calls — waiting for an LLM, a child or the ledger — is not charged,
//! and neither is another task's work on the same thread, whatever the guest's pattern
//! of host calls. The epoch callback (every tick) and every host call check the total
//! against `limits.cpu_ms`, so the limit holds within one tick.
//!
//! The meter also keeps the wall time the guest spent outside wasm — in host calls
//! (waiting for an LLM, a child, a sleep) and yielding — which `inspect` shows as the
//! time a task was blocked.
//!
//! Not for: wall-clock limits (`limits.wall_ms`, a timeout around the whole call).

use std::time::{Duration, Instant};

/// CPU time of the calling OS thread, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` through a pointer to a valid,
    // exclusively borrowed local, and `CLOCK_THREAD_CPUTIME_ID` exists on every
    // platform this host supports (Linux, macOS).
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time charged to one guest against its limit.
#[derive(Debug)]
pub struct CpuMeter {
    limit: Duration,
    used_ns: u64,
    /// Thread CPU time when the current segment of guest execution began.
    segment_start: Option<u64>,
    /// When the guest last entered the host, while it is there.
    in_host_since: Option<Instant>,
    host_wait: Duration,
}

impl CpuMeter {
    /// A meter with nothing used yet and the given limit.
    pub fn new(limit: Duration) -> CpuMeter {
        CpuMeter {
            limit,
            used_ns: 0,
            segment_start: None,
            in_host_since: None,
            host_wait: Duration::ZERO,
        }
    }

    /// The guest called into the host (a host call or a tick's yield).
    pub fn enter_host(&mut self) {
        self.in_host_since = Some(Instant::now());
    }

    /// The host returned to the guest.
    pub fn leave_host(&mut self) {
        if let Some(since) = self.in_host_since.take() {
            self.host_wait += since.elapsed();
        }
    }

    /// Wall time spent in host calls and yields so far (the current one included).
    pub fn host_wait(&self) -> Duration {
        self.host_wait + self.in_host_since.map(|s| s.elapsed()).unwrap_or_default()
    }

    /// The guest starts (or resumes) running on this thread.
    pub fn resume(&mut self) {
        self.segment_start = Some(thread_cpu_ns());
    }

    /// The guest stops running on this thread: charge the segment.
    pub fn pause(&mut self) {
        if let Some(start) = self.segment_start.take() {
            self.used_ns += thread_cpu_ns().saturating_sub(start);
        }
    }

    /// The CPU time this guest may spend.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// CPU time charged so far.
    pub fn used(&self) -> Duration {
        Duration::from_nanos(self.used_ns)
    }

    /// Whether the guest has used up its CPU time.
    pub fn exhausted(&self) -> bool {
        self.used() >= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_only_between_resume_and_pause() {
        let mut meter = CpuMeter::new(Duration::from_millis(20));
        let spin = |ms: u64| {
            let start = thread_cpu_ns();
            while thread_cpu_ns() - start < ms * 1_000_000 {
                std::hint::black_box(0u64);
            }
        };
        spin(15); // not running: not charged
        assert_eq!(meter.used(), Duration::ZERO);
        meter.resume();
        spin(10);
        meter.pause();
        let used = meter.used();
        assert!(used >= Duration::from_millis(10), "{used:?}");
        assert!(!meter.exhausted());
        spin(15); // paused again
        assert_eq!(meter.used(), used);
        meter.resume();
        spin(12);
        meter.pause();
        assert!(meter.exhausted(), "{:?}", meter.used());
    }
}
