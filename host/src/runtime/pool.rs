//! Where an agent's instance lives: a slot of the pooling allocator when one is free,
//! else an on-demand instance (`[runtime]`).
//!
//! The pool makes starting an agent cheap (its memory, tables and fiber stack are
//! reserved up front and reused), but it is finite, and a full pool must never fail a
//! task. Waiting for a slot is not an answer: a parent blocked in `tasks.wait` keeps
//! its instance, so once parents hold every slot their queued children would never
//! start — a deadlock. So a task that finds the pool full starts in an on-demand
//! instance instead: a second engine that maps the instance's memory and fiber stack
//! when it starts and unmaps them when it ends, and copies the component's initial
//! memory image into it rather than mapping it copy-on-write, which saves two memory
//! maps per instance (the per-process limit on maps, `vm.max_map_count`, is what
//! bounds the live agents of a host). A component is compiled for that engine the
//! first time it needs it (or loaded from the on-disk cache). That path costs some
//! microseconds more per start and nothing while the pool has room.
//!
//! Each live agent costs about 5 memory maps on demand (its linear memory and its
//! fiber stack, each with a guard) and about 6.5 in the pool (measured: 50,102 maps
//! for 10,000 waiting agents); with the default `vm.max_map_count` of 65,530 one host
//! holds roughly 11,500 live agents. Past that,
//! or past the 128 TiB of address space (8 GiB reserved per linear memory), creating
//! an instance fails and the task fails with wasmtime's error.
//!
//! A pool permit ([`PoolSlot`]) is taken before instantiating and lives in the store,
//! so it is returned when the store drops, together with the wasmtime slot. Should a
//! component need more core instances, memories or tables than a slot's share, the
//! pooled instantiation fails with wasmtime's `PoolConcurrencyLimitError` and the
//! caller moves the agent to the on-demand engine ([`is_pool_full`]).
//!
//! Not for: execution slots of a run (`[constraints] max_concurrent_tasks`, which
//! bound how many tasks *execute* at once and are given back while a task waits).

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default of `[runtime] pool_instances`.
pub const DEFAULT_POOL_INSTANCES: u32 = 1000;

/// Address space each linear memory reserves (pooled or on-demand): 8 GiB, so that
/// wasmtime elides the bounds checks of 32-bit memories.
pub const MEMORY_RESERVATION: u64 = 8 << 30;

/// `[runtime]`: the wasmtime instance pool.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Agent instances (tasks and validator components running at once, over all
    /// runs of the host) kept in the pooling allocator. Default 1000. More live agents
    /// than this still run: each one beyond the pool gets an on-demand instance.
    ///
    /// What a slot costs is address space reserved when the host starts, not memory:
    /// 2 linear memories of 8 GiB + 64 KiB guard, 4 tables of 20,000 elements
    /// (160 KiB each), one 2 MiB fiber stack + a guard page — about 16 GiB of virtual
    /// address space per slot, 16 TiB for the default 1000 (Linux gives a process
    /// 128 TiB). Resident memory is only what a live agent touches (see the README's
    /// "live agents" figure); when an agent ends its pages are given back, except for
    /// up to 64 recently freed slots kept warm for reuse. The pool also holds 2 memory
    /// maps per slot for its stacks' guard pages (`vm.max_map_count`, default 65,530).
    pub pool_instances: u32,
    /// How agent instances get their memory: `"pooling"` (default: the pool above,
    /// 8 GiB reserved per linear memory so wasmtime elides bounds checks) or
    /// `"on-demand"` (no pool; each memory reserves only what it uses, and guest code
    /// checks bounds). On-demand is for a process with little address space — under
    /// `ulimit -v`, or under valgrind, which gives a program about 128 GiB, where
    /// the pool cannot even be created; starts and guest memory accesses are slower.
    pub allocator: Allocator,
}

/// `[runtime] allocator`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Allocator {
    /// The pooling allocator of `pool_instances` slots, on-demand beyond it.
    #[default]
    Pooling,
    /// Every instance on demand, with small memory reservations.
    OnDemand,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            pool_instances: DEFAULT_POOL_INSTANCES,
            allocator: Allocator::Pooling,
        }
    }
}

impl RuntimeConfig {
    /// Reject a pool that cannot work, naming the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        // 16 GiB of address space per slot: 4096 slots take half of a 47-bit space.
        if self.pool_instances == 0 || self.pool_instances > 4096 {
            anyhow::bail!("[runtime] pool_instances must be between 1 and 4096");
        }
        Ok(())
    }
}

/// Live instances of the host right now, and the most ever at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstanceCounts {
    /// In pool slots.
    pub pooled: u64,
    /// On-demand, because the pool was full.
    pub on_demand: u64,
    /// The most on-demand instances alive at once since the host started.
    pub peak_on_demand: u64,
}

/// Pool permits and the count of on-demand instances.
pub(crate) struct Placement {
    permits: Arc<Semaphore>,
    size: u64,
    on_demand: Arc<AtomicU64>,
    peak_on_demand: Arc<AtomicU64>,
}

/// Where one store's instance lives; dropped with the store.
pub(crate) enum PoolSlot {
    /// A pool slot is reserved for it.
    Pooled(#[allow(dead_code)] OwnedSemaphorePermit),
    /// It is (or will be) an on-demand instance.
    OnDemand(Arc<AtomicU64>),
}

impl PoolSlot {
    pub(crate) fn is_pooled(&self) -> bool {
        matches!(self, PoolSlot::Pooled(_))
    }
}

impl Drop for PoolSlot {
    fn drop(&mut self) {
        if let PoolSlot::OnDemand(count) = self {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Placement {
    pub(crate) fn new(size: u32) -> Placement {
        Placement {
            permits: Arc::new(Semaphore::new(size as usize)),
            size: size as u64,
            on_demand: Arc::default(),
            peak_on_demand: Arc::default(),
        }
    }

    /// Places without a bound, for a runtime whose main engine allocates on demand
    /// (`[runtime] allocator = "on-demand"`): its instances count as `pooled`.
    pub(crate) fn unbounded() -> Placement {
        let size = Semaphore::MAX_PERMITS;
        Placement {
            permits: Arc::new(Semaphore::new(size)),
            size: size as u64,
            on_demand: Arc::default(),
            peak_on_demand: Arc::default(),
        }
    }

    /// A pool slot if one is free, else an on-demand place. Never waits.
    pub(crate) fn take(&self) -> PoolSlot {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => PoolSlot::Pooled(permit),
            Err(_) => self.on_demand(),
        }
    }

    /// An on-demand place (the pool is full, or the component does not fit a slot).
    pub(crate) fn on_demand(&self) -> PoolSlot {
        let now = self.on_demand.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_on_demand.fetch_max(now, Ordering::Relaxed);
        PoolSlot::OnDemand(self.on_demand.clone())
    }

    pub(crate) fn counts(&self) -> InstanceCounts {
        InstanceCounts {
            pooled: self.size - self.permits.available_permits() as u64,
            on_demand: self.on_demand.load(Ordering::Relaxed),
            peak_on_demand: self.peak_on_demand.load(Ordering::Relaxed),
        }
    }
}

/// Whether an instantiation failed because the pool had no room for it.
pub(crate) fn is_pool_full(e: &wasmtime::Error) -> bool {
    e.is::<wasmtime::PoolConcurrencyLimitError>()
}
