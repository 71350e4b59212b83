//! The wasmtime side of the host: one engine, one linker, compiled components cached
//! on disk and kept as `InstancePre`s, a pooling allocator, and an epoch ticker.
//!
//! Starting an agent is a fresh `Store` plus `instantiate_async` on a pre-linked
//! component, which costs microseconds. What an agent may do is decided by the
//! capabilities (`crate::capabilities`); this module only runs it, within its limits
//! (see [`execute`]).

pub mod cache;
pub mod cpu;
pub mod execute;
pub mod state;

use crate::bindings::AgentPre;
use crate::supervisor::ComponentRef;
use anyhow::Context as _;
use state::AgentState;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Length of one epoch tick: how often a running guest yields to other agents and its
/// CPU time is checked against its limit.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Agent instances that may be alive at once in one host (pool slots).
pub const DEFAULT_POOL_SLOTS: u32 = 1000;

/// A compiled, pre-linked agent component.
pub struct LoadedAgent {
    /// Display name (file stem or registered name).
    pub name: String,
    /// SHA-256 of the component bytes.
    pub hash: String,
    /// Whether the compiled code came from the on-disk cache.
    pub from_cache: bool,
    /// The component bytes (stored in the ledger so a run can resume from it alone).
    pub bytes: Arc<[u8]>,
    pub(crate) pre: AgentPre<AgentState>,
}

impl LoadedAgent {
    /// The component as the supervisor knows it (name and content).
    pub fn component_ref(&self) -> ComponentRef {
        ComponentRef {
            name: self.name.clone(),
            hash: self.hash.clone(),
            bytes: self.bytes.clone(),
        }
    }
}

/// A compiled, pre-linked validator component.
pub struct LoadedValidator {
    /// SHA-256 of the component bytes.
    pub hash: String,
    pub(crate) pre: crate::bindings::validator::ValidatorPre<AgentState>,
}

/// Engine, linker and the loaded components.
pub struct Runtime {
    engine: Engine,
    linker: Linker<AgentState>,
    cache: cache::ComponentCache,
    loaded: Mutex<HashMap<String, Arc<LoadedAgent>>>,
    /// Validator components by path, compiled once per host.
    validators: Mutex<HashMap<String, Arc<LoadedValidator>>>,
}

impl Runtime {
    /// Build the engine (pooling allocator, epoch interruption) and the linker (WASI
    /// p2 with nothing granted, plus the agentflow capabilities).
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<Arc<Runtime>> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(DEFAULT_POOL_SLOTS)
            .total_core_instances(DEFAULT_POOL_SLOTS * 4)
            .total_memories(DEFAULT_POOL_SLOTS * 2)
            .total_tables(DEFAULT_POOL_SLOTS * 4)
            .total_stacks(DEFAULT_POOL_SLOTS)
            .max_memory_size((crate::supervisor::limits::MAX_MEMORY_MB as usize) << 20)
            .max_unused_warm_slots(64);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .wasm_component_model(true)
            .memory_reservation(8 << 30)
            .memory_guard_size(64 << 10)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("wasmtime engine: {e}"))?;
        let mut linker = Linker::<AgentState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
        add_capabilities(&mut linker)?;
        let cache = cache::ComponentCache::new(&engine, cache_dir);
        let runtime = Arc::new(Runtime {
            engine,
            linker,
            cache,
            loaded: Mutex::new(HashMap::new()),
            validators: Mutex::new(HashMap::new()),
        });
        start_epoch_ticker(Arc::downgrade(&runtime));
        Ok(runtime)
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Load an agent component from a file.
    pub fn load_file(&self, path: &Path) -> anyhow::Result<Arc<LoadedAgent>> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read agent {}", path.display()))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "agent".into());
        self.load_bytes(&name, &bytes)
            .with_context(|| format!("cannot load agent {}", path.display()))
    }

    /// The compiled form of a component the supervisor names: the one already loaded
    /// with that hash, or compiled now from its bytes.
    pub fn get(&self, agent: &ComponentRef) -> anyhow::Result<Arc<LoadedAgent>> {
        if let Some(loaded) = self.loaded.lock().unwrap().get(&agent.hash) {
            return Ok(loaded.clone());
        }
        self.load_bytes(&agent.name, &agent.bytes)
    }

    /// Load an agent component from bytes; identical bytes are compiled once.
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> anyhow::Result<Arc<LoadedAgent>> {
        let hash = crate::ledger::blobs::sha256_hex(bytes);
        if let Some(agent) = self.loaded.lock().unwrap().get(&hash) {
            return Ok(agent.clone());
        }
        let (component, from_cache) = self.compile(&hash, bytes)?;
        let pre = self.pre_link(&component)?;
        let agent = Arc::new(LoadedAgent {
            name: name.to_string(),
            hash: hash.clone(),
            from_cache,
            bytes: Arc::from(bytes),
            pre,
        });
        self.loaded.lock().unwrap().insert(hash, agent.clone());
        Ok(agent)
    }

    /// Check that `bytes` are a component and compile them (or load them from the
    /// on-disk cache).
    fn compile(&self, hash: &str, bytes: &[u8]) -> anyhow::Result<(Component, bool)> {
        if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
            anyhow::bail!("not a WebAssembly file (bad magic number)");
        }
        if bytes[4..8] != [0x0d, 0x00, 0x01, 0x00] {
            anyhow::bail!(
                "this is a core WebAssembly module, not a component: build the agent for the \
                 wasm32-wasip2 target (cargo build --target wasm32-wasip2)"
            );
        }
        let (component, from_cache) = self
            .cache
            .load(&self.engine, hash, bytes)
            .map_err(|e| anyhow::anyhow!("invalid component: {e:#}"))?;
        Ok((component, from_cache))
    }

    /// Load a validator component (world `agentflow:agent/validator`) from a file;
    /// each path is read, compiled and linked once per host.
    pub fn load_validator(&self, path: &Path) -> anyhow::Result<Arc<LoadedValidator>> {
        let key = path.display().to_string();
        if let Some(v) = self.validators.lock().unwrap().get(&key) {
            return Ok(v.clone());
        }
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read validator component {}", path.display()))?;
        let hash = crate::ledger::blobs::sha256_hex(&bytes);
        let (component, _) = self.compile(&hash, &bytes)?;
        // Deny by default: a validator reaches the world only through tools and trace.
        for (name, _) in component.component_type().imports(&self.engine) {
            if name.starts_with("agentflow:agent/")
                && !name.starts_with("agentflow:agent/tools")
                && !name.starts_with("agentflow:agent/trace")
            {
                anyhow::bail!(
                    "validator components may import only agentflow:agent/tools and agentflow:agent/trace \
                     (and wasi:*), not `{name}`"
                );
            }
        }
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            anyhow::anyhow!(
                "the component does not fit the agentflow:agent/validator world: {e}\n\
                 (validators may import only wasi:* p2 interfaces, agentflow:agent/tools and \
                 agentflow:agent/trace, and must export `validate`)"
            )
        })?;
        let pre = crate::bindings::validator::ValidatorPre::new(instance_pre).map_err(|e| {
            anyhow::anyhow!(
                "the component does not export `validate: func(task: string, output: string) -> report` \
                 (is it an agent rather than a validator?): {e}"
            )
        })?;
        let loaded = Arc::new(LoadedValidator { hash, pre });
        self.validators.lock().unwrap().insert(key, loaded.clone());
        Ok(loaded)
    }

    fn pre_link(&self, component: &Component) -> anyhow::Result<AgentPre<AgentState>> {
        let instance_pre = self.linker.instantiate_pre(component).map_err(|e| {
            anyhow::anyhow!(
                "the component does not fit the agentflow:agent/agent world: {e}\n\
                 (agents may import only wasi:* p2 interfaces and agentflow:agent/*, and must export `run`)"
            )
        })?;
        AgentPre::new(instance_pre).map_err(|e| {
            anyhow::anyhow!("the component does not export `run: func(input: string) -> result<string, string>`: {e}")
        })
    }
}

/// Advance the engine's epoch every [`EPOCH_TICK`] while the runtime is alive.
fn start_epoch_ticker(runtime: Weak<Runtime>) {
    std::thread::Builder::new()
        .name("agentflow-epoch".into())
        .spawn(move || {
            while let Some(rt) = runtime.upgrade() {
                let engine = rt.engine.clone();
                drop(rt);
                engine.increment_epoch();
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawn epoch ticker");
}

/// Add the agentflow capabilities to a linker: each interface with its own view of the
/// task's state ([`crate::capabilities::views`]).
fn add_capabilities(linker: &mut Linker<AgentState>) -> anyhow::Result<()> {
    use crate::bindings::{checkpoint, llm, tasks, tools, trace};
    use crate::capabilities::views::{HasCheckpoint, HasLlm, HasTasks, HasTools, HasTrace};
    let linked = llm::add_to_linker::<AgentState, HasLlm>(linker, |s| s.task.llm_view())
        .and_then(|()| {
            tools::add_to_linker::<AgentState, HasTools>(linker, |s| s.task.tools_view())
        })
        .and_then(|()| {
            tasks::add_to_linker::<AgentState, HasTasks>(linker, |s| s.task.tasks_view())
        })
        .and_then(|()| {
            trace::add_to_linker::<AgentState, HasTrace>(linker, |s| s.task.trace_view())
        })
        .and_then(|()| {
            checkpoint::add_to_linker::<AgentState, HasCheckpoint>(linker, |s| {
                s.task.checkpoint_view()
            })
        });
    linked.map_err(|e| anyhow::anyhow!("linking agentflow capabilities: {e}"))
}
