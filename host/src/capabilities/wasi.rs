//! WASI clocks and random, provided by the host and recorded.
//!
//! wasmtime-wasi asks these for every `wall-clock.now`, `monotonic-clock.now` and
//! random read. They answer from the real clock / OS generator and append the value
//! to the task's [`NondetLog`], which the next recorded host call flushes to the
//! ledger as one `wasi.nondet` event (a read only matters once it can influence an
//! effect, and the trait methods are synchronous). On a replay the recorded values
//! are handed back in order instead ([`NondetLog::set_replay`]); a read of another
//! kind than the one recorded is non-determinism, reported at the next host call.
//!
//! Reads are held compactly ([`NondetRead`], one per WASI call) and recorded in a
//! compact binary form ([`nondet_response`]); what one agent may hold between two host
//! calls is bounded by `limits.max_nondet_bytes`, past which it is stopped.
//!
//! Everything else in WASI is linked with nothing granted: no preopened directories,
//! no environment, no arguments, no sockets.

pub use crate::replay::nondet::{NondetRead, nondet_response, reads_of_event};
use rand::{Rng, SeedableRng, TryRng};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// Host memory one held read is counted as: the entry itself plus its bytes.
fn held_bytes(read: &NondetRead) -> usize {
    std::mem::size_of::<NondetRead>()
        + match read {
            NondetRead::Random(b) | NondetRead::InsecureRandom(b) => b.len(),
            _ => 0,
        }
}

/// Clock and random values read by a guest and not yet written to the ledger, and
/// the recorded values still to hand back during a replay.
///
/// What it holds is bounded: past [`NondetLog::set_limit`] bytes a read is no longer
/// kept, the log reports [`NondetLog::overflowed`], and the host stops the guest at its
/// next host call or tick (within microseconds: every WASI call is a host call).
#[derive(Clone, Default)]
pub struct NondetLog(Arc<Mutex<NondetState>>);

#[derive(Default)]
struct NondetState {
    pending: Vec<NondetRead>,
    pending_bytes: usize,
    /// 0 = unbounded (only before a store sets it).
    limit: usize,
    overflowed: bool,
    replay: VecDeque<NondetRead>,
    divergence: Option<String>,
}

/// Largest random read recorded per call; larger reads trap (see `max_random_size`).
pub const MAX_RANDOM_BYTES: u64 = 1 << 20;

impl NondetLog {
    fn push(&self, read: NondetRead) {
        let mut st = self.0.lock().unwrap();
        let size = held_bytes(&read);
        if st.limit > 0 && st.pending_bytes + size > st.limit {
            st.overflowed = true;
            return;
        }
        st.pending_bytes += size;
        st.pending.push(read);
    }

    /// Bound the bytes of reads held between two recorded calls.
    pub fn set_limit(&self, bytes: usize) {
        self.0.lock().unwrap().limit = bytes;
    }

    /// Whether a read was refused because the held reads reached the limit.
    pub fn overflowed(&self) -> bool {
        self.0.lock().unwrap().overflowed
    }

    /// Take everything recorded so far.
    pub fn take(&self) -> Vec<NondetRead> {
        let mut st = self.0.lock().unwrap();
        st.pending_bytes = 0;
        std::mem::take(&mut st.pending)
    }

    /// Hand these recorded values back, in order, before reading live ones.
    pub fn set_replay(&self, values: VecDeque<NondetRead>) {
        self.0.lock().unwrap().replay = values;
    }

    /// Stop replaying (e.g. when restarting live from a checkpoint).
    pub fn clear_replay(&self) {
        self.0.lock().unwrap().replay.clear();
    }

    /// A divergence seen by a clock or random read, if any.
    pub fn take_divergence(&self) -> Option<String> {
        self.0.lock().unwrap().divergence.take()
    }

    /// The next recorded read, if replaying and it is of kind `kind`. A recorded read
    /// of another kind means the guest diverged: replay stops and the divergence is kept.
    fn replayed(&self, kind: &str) -> Option<NondetRead> {
        let mut st = self.0.lock().unwrap();
        let front = st.replay.front()?;
        if front.kind() == kind {
            return st.replay.pop_front();
        }
        st.divergence = Some(format!(
            "the guest read {kind} where the ledger recorded {}",
            front.kind()
        ));
        st.replay.clear();
        None
    }
}

/// The wall clock, recorded.
pub struct RecordingWallClock(pub NondetLog);

impl HostWallClock for RecordingWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        if let Some(NondetRead::Wall(ns)) = self.0.replayed("wall_ns") {
            return Duration::from_nanos(ns);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.0.push(NondetRead::Wall(now.as_nanos() as u64));
        now
    }
}

/// The monotonic clock (nanoseconds since the agent started), recorded. After a
/// replay it continues from the last replayed value, so it never goes backwards.
pub struct RecordingMonotonicClock {
    log: NondetLog,
    base: Mutex<(u64, Instant)>,
}

impl RecordingMonotonicClock {
    /// A monotonic clock starting at zero now.
    pub fn new(log: NondetLog) -> Self {
        RecordingMonotonicClock {
            log,
            base: Mutex::new((0, Instant::now())),
        }
    }
}

impl HostMonotonicClock for RecordingMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        if let Some(NondetRead::Monotonic(ns)) = self.log.replayed("monotonic_ns") {
            *self.base.lock().unwrap() = (ns, Instant::now());
            return ns;
        }
        let (base, at) = *self.base.lock().unwrap();
        let ns = base + at.elapsed().as_nanos() as u64;
        self.log.push(NondetRead::Monotonic(ns));
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
        let bytes = bytes.to_vec();
        self.log.push(if self.label == "random" {
            NondetRead::Random(bytes)
        } else {
            NondetRead::InsecureRandom(bytes)
        });
    }

    /// Fill `dst` from the replay if a recorded value of the same size is next.
    fn take_replayed(&self, dst: &mut [u8]) -> bool {
        match self.log.replayed(self.label).and_then(|read| match read {
            NondetRead::Random(b) | NondetRead::InsecureRandom(b) => Some(b),
            _ => None,
        }) {
            Some(bytes) if bytes.len() == dst.len() => {
                dst.copy_from_slice(&bytes);
                true
            }
            Some(bytes) => {
                let mut st = self.log.0.lock().unwrap();
                st.divergence = Some(format!(
                    "the guest read {} random bytes where the ledger recorded {}",
                    dst.len(),
                    bytes.len()
                ));
                st.replay.clear();
                false
            }
            None => false,
        }
    }
}

impl TryRng for RecordingRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut buf = [0u8; 4];
        if self.take_replayed(&mut buf) {
            return Ok(u32::from_le_bytes(buf));
        }
        let v = self.inner.next_u32();
        self.record(&v.to_le_bytes());
        Ok(v)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut buf = [0u8; 8];
        if self.take_replayed(&mut buf) {
            return Ok(u64::from_le_bytes(buf));
        }
        let v = self.inner.next_u64();
        self.record(&v.to_le_bytes());
        Ok(v)
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        if self.take_replayed(dst) {
            return Ok(());
        }
        self.inner.fill_bytes(dst);
        self.record(dst);
        Ok(())
    }
}

/// Build the WASI context of one agent: nothing granted, host clocks and random
/// recorded into `log`, stdout/stderr into bounded captures.
pub fn build_ctx(
    log: &NondetLog,
    stdout: crate::capabilities::stdio::BoundedCapture,
    stderr: crate::capabilities::stdio::BoundedCapture,
) -> wasmtime_wasi::WasiCtx {
    let seed: u128 = match log.replayed("insecure_seed") {
        Some(NondetRead::InsecureSeed(seed)) => seed,
        _ => {
            let seed: u128 = rand::random();
            log.push(NondetRead::InsecureSeed(seed));
            seed
        }
    };
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
