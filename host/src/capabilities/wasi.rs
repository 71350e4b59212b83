//! WASI clocks and random, provided by the host and recorded.
//!
//! wasmtime-wasi asks these for every `wall-clock.now`, `monotonic-clock.now` and
//! random read. They answer from the real clock / OS generator and append the value
//! to the task's [`NondetLog`], which the next recorded host call flushes to the
//! ledger as one `wasi.nondet` event (a read only matters once it can influence an
//! effect, and the trait methods are synchronous). A replay can therefore hand the
//! guest the same values. Everything else in WASI is linked with nothing granted: no
//! preopened directories, no environment, no arguments, no sockets.

use rand::{Rng, SeedableRng, TryRng};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// Clock and random values read by a guest and not yet written to the ledger.
#[derive(Clone, Default)]
pub struct NondetLog(Arc<Mutex<Vec<Value>>>);

/// Largest random read recorded per call; larger reads trap (see `max_random_size`).
pub const MAX_RANDOM_BYTES: u64 = 1 << 20;

impl NondetLog {
    fn push(&self, v: Value) {
        self.0.lock().unwrap().push(v);
    }

    /// Take everything recorded so far.
    pub fn take(&self) -> Vec<Value> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// The wall clock, recorded.
pub struct RecordingWallClock(pub NondetLog);

impl HostWallClock for RecordingWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.0.push(json!({ "wall_ns": now.as_nanos() as u64 }));
        now
    }
}

/// The monotonic clock (nanoseconds since the agent started), recorded.
pub struct RecordingMonotonicClock {
    log: NondetLog,
    start: Instant,
}

impl RecordingMonotonicClock {
    /// A monotonic clock starting at zero now.
    pub fn new(log: NondetLog) -> Self {
        RecordingMonotonicClock {
            log,
            start: Instant::now(),
        }
    }
}

impl HostMonotonicClock for RecordingMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        let ns = self.start.elapsed().as_nanos() as u64;
        self.log.push(json!({ "monotonic_ns": ns }));
        ns
    }
}

/// A random generator whose output is recorded (hex) under `label`.
pub struct RecordingRng {
    log: NondetLog,
    label: &'static str,
    inner: rand::rngs::StdRng,
}

impl RecordingRng {
    /// A generator seeded from the OS, recording under `label`.
    pub fn new(log: NondetLog, label: &'static str) -> Self {
        RecordingRng {
            log,
            label,
            inner: rand::rngs::StdRng::from_rng(&mut rand::rng()),
        }
    }

    fn record(&self, bytes: &[u8]) {
        self.log.push(json!({ self.label: hex::encode(bytes) }));
    }
}

impl TryRng for RecordingRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let v = self.inner.next_u32();
        self.record(&v.to_le_bytes());
        Ok(v)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let v = self.inner.next_u64();
        self.record(&v.to_le_bytes());
        Ok(v)
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.inner.fill_bytes(dst);
        self.record(dst);
        Ok(())
    }
}

/// Build the WASI context of one agent: nothing granted, host clocks and random
/// recorded into `log`, stdout/stderr into bounded captures.
pub fn build_ctx(
    log: &NondetLog,
    stdout: crate::runtime::stdio::BoundedCapture,
    stderr: crate::runtime::stdio::BoundedCapture,
) -> wasmtime_wasi::WasiCtx {
    let seed: u128 = rand::random();
    log.push(json!({ "insecure_seed": seed.to_string() }));
    let mut builder = wasmtime_wasi::WasiCtx::builder();
    builder
        .stdout(stdout)
        .stderr(stderr)
        .wall_clock(RecordingWallClock(log.clone()))
        .monotonic_clock(RecordingMonotonicClock::new(log.clone()))
        .secure_random(RecordingRng::new(log.clone(), "random"))
        .insecure_random(RecordingRng::new(log.clone(), "insecure_random"))
        .insecure_random_seed(seed)
        .max_random_size(MAX_RANDOM_BYTES)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    builder.build()
}
