//! What a store holds for one running agent: WASI state (nothing granted), the
//! capability context, the memory limiter and CPU accounting ([`super::cpu`]).

use crate::capabilities::TaskCtx;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Why the host stopped an agent, when it did.
#[derive(Clone, Debug, PartialEq)]
pub enum Kill {
    /// Burnt its CPU time (`limits.cpu_ms`).
    Cpu { limit_ms: u64 },
    /// Tried to grow memory past `limits.memory_mb`.
    Memory { limit_mb: u64, wanted_bytes: usize },
    /// Made more than `limits.max_host_calls` host calls.
    HostCalls { limit: u64 },
    /// Read the clock or random so much between two host calls that the reads the
    /// host holds for the ledger passed `limits.max_nondet_bytes`.
    NondetBuffer { limit_bytes: usize },
    /// Its host calls' records passed `limits.max_ledger_bytes`.
    LedgerBytes { limit_bytes: u64 },
}

impl std::fmt::Display for Kill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kill::Cpu { limit_ms } => {
                write!(f, "CPU time limit exceeded ({limit_ms} ms, limits.cpu_ms)")
            }
            Kill::Memory {
                limit_mb,
                wanted_bytes,
            } => write!(
                f,
                "memory limit exceeded (tried to grow to {} MiB, limit {limit_mb} MiB, limits.memory_mb)",
                wanted_bytes >> 20
            ),
            Kill::HostCalls { limit } => {
                write!(
                    f,
                    "host call limit exceeded ({limit} calls, limits.max_host_calls)"
                )
            }
            Kill::NondetBuffer { limit_bytes } => write!(
                f,
                "clock/random read limit exceeded ({limit_bytes} bytes of reads held by the host \
                 between two host calls, limits.max_nondet_bytes)"
            ),
            Kill::LedgerBytes { limit_bytes } => write!(
                f,
                "ledger quota exceeded (its host calls recorded more than {limit_bytes} bytes, \
                 limits.max_ledger_bytes)"
            ),
        }
    }
}

/// The data of one agent's store.
pub struct AgentState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) task: TaskCtx,
    pub(crate) memory_limit: usize,
    pub(crate) cpu: super::cpu::CpuMeter,
}

impl AgentState {
    /// Why the agent was stopped, if the host stopped it.
    pub fn kill(&self) -> Option<&Kill> {
        self.task.kill.as_ref()
    }
}

impl WasiView for AgentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime::ResourceLimiter for AgentState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            let kill = Kill::Memory {
                limit_mb: (self.memory_limit >> 20) as u64,
                wanted_bytes: desired,
            };
            let msg = kill.to_string();
            self.task.kill = Some(kill);
            return Err(wasmtime::format_err!("{msg}"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}
