//! What a store holds for one running agent: WASI state (nothing granted), the
//! capability context, the memory limiter, CPU accounting ([`super::cpu`]) and where
//! its instance lives ([`super::pool`]).

use crate::capabilities::{Kill, TaskCtx};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The data of one agent's store.
pub struct AgentState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) task: TaskCtx,
    pub(crate) memory_limit: usize,
    pub(crate) cpu: super::cpu::CpuMeter,
    /// Its pool slot, or its count among the on-demand instances; given back when the
    /// store drops.
    pub(crate) slot: super::pool::PoolSlot,
}

impl AgentState {
    /// Why the agent was stopped, if the host stopped it.
    pub fn kill(&self) -> Option<&Kill> {
        self.task.site.kill.as_ref()
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
            self.task.site.kill = Some(kill);
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
