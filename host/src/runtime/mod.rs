//! The wasmtime side of the host: an engine with a pooling allocator and its linker,
//! compiled components cached on disk and kept as `InstancePre`s, an on-demand engine
//! for agents beyond the pool ([`pool`]), and an epoch ticker.
//!
//! Starting an agent is a fresh `Store` plus `instantiate_async` on a pre-linked
//! component, which costs microseconds. What an agent may do is decided by the
//! capabilities (`crate::capabilities`); this module only runs it, within its limits
//! (see [`execute`]).

pub mod cache;
pub mod cpu;
pub mod execute;
pub mod pool;
pub mod state;

use crate::bindings::AgentPre;
use crate::supervisor::ComponentRef;
use anyhow::Context as _;
use state::AgentState;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use pool::{Allocator, InstanceCounts, RuntimeConfig};

/// Length of one epoch tick: how often a running guest yields to other agents and its
/// CPU time is checked against its limit.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

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
    /// The same component compiled and linked for on-demand instances, when first needed.
    on_demand: Mutex<Option<AgentPre<AgentState>>>,
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
    /// The same component compiled and linked for on-demand instances, when first needed.
    on_demand: Mutex<Option<crate::bindings::validator::ValidatorPre<AgentState>>>,
    bytes: Arc<[u8]>,
}

/// The engine of on-demand instances, its linker and its compiled components' cache.
struct OnDemand {
    engine: Engine,
    linker: Linker<AgentState>,
    cache: cache::ComponentCache,
}

/// Engines, linkers and the loaded components.
pub struct Runtime {
    /// Instances in pool slots.
    engine: Engine,
    linker: Linker<AgentState>,
    /// Instances beyond the pool; built the first time the pool is full.
    on_demand: OnceLock<OnDemand>,
    placement: pool::Placement,
    /// `[runtime] allocator = "on-demand"`: memories reserve only what they use.
    small_memories: bool,
    cache: cache::ComponentCache,
    cache_dir: Option<PathBuf>,
    loaded: Mutex<HashMap<String, Arc<LoadedAgent>>>,
    /// Validator components by path, compiled once per host.
    validators: Mutex<HashMap<String, Arc<LoadedValidator>>>,
}

impl Runtime {
    /// Build the engine (a pool of `config.pool_instances` slots, epoch interruption)
    /// and the linker (WASI p2 with nothing granted, plus the agentflow capabilities).
    pub fn new(cache_dir: Option<PathBuf>, config: &RuntimeConfig) -> anyhow::Result<Arc<Runtime>> {
        config.validate()?;
        let small_memories = config.allocator == pool::Allocator::OnDemand;
        let (engine, placement) = if small_memories {
            // No pool: every instance is the main engine's, on demand.
            let engine = engine(InstanceAllocationStrategy::OnDemand, true)?;
            (engine, pool::Placement::unbounded())
        } else {
            let slots = config.pool_instances;
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(slots)
                .total_core_instances(slots * 4)
                .total_memories(slots * 2)
                .total_tables(slots * 4)
                .total_stacks(slots)
                .max_memory_size((crate::supervisor::limits::MAX_MEMORY_MB as usize) << 20)
                .max_unused_warm_slots(64);
            let engine = engine(InstanceAllocationStrategy::Pooling(pool), false)?;
            (engine, pool::Placement::new(slots))
        };
        let linker = linker(&engine)?;
        let cache = cache::ComponentCache::new(&engine, cache_dir.clone());
        let runtime = Arc::new(Runtime {
            engine,
            linker,
            on_demand: OnceLock::new(),
            placement,
            small_memories,
            cache,
            cache_dir,
            loaded: Mutex::new(HashMap::new()),
            validators: Mutex::new(HashMap::new()),
        });
        start_epoch_ticker(Arc::downgrade(&runtime));
        Ok(runtime)
    }

    /// The engine of pooled instances.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Live instances, pooled and on demand.
    pub fn instances(&self) -> InstanceCounts {
        self.placement.counts()
    }

    /// The on-demand engine and its linker, built on first use.
    fn on_demand(&self) -> anyhow::Result<&OnDemand> {
        if let Some(d) = self.on_demand.get() {
            return Ok(d);
        }
        let engine = engine(InstanceAllocationStrategy::OnDemand, self.small_memories)?;
        let linker = linker(&engine)?;
        let cache = cache::ComponentCache::new(&engine, self.cache_dir.clone());
        Ok(self.on_demand.get_or_init(|| OnDemand {
            engine,
            linker,
            cache,
        }))
    }

    /// `agent` compiled and linked for on-demand instances (once; from the on-disk
    /// cache when it holds it).
    pub(crate) fn on_demand_agent(
        &self,
        agent: &LoadedAgent,
    ) -> anyhow::Result<AgentPre<AgentState>> {
        self.on_demand_pre(&agent.on_demand, &agent.hash, &agent.bytes, pre_link)
    }

    /// `validator` compiled and linked for on-demand instances, like
    /// [`Self::on_demand_agent`].
    pub(crate) fn on_demand_validator(
        &self,
        validator: &LoadedValidator,
    ) -> anyhow::Result<crate::bindings::validator::ValidatorPre<AgentState>> {
        self.on_demand_pre(
            &validator.on_demand,
            &validator.hash,
            &validator.bytes,
            validator_pre,
        )
    }

    /// The component `hash` (`bytes`) compiled for the on-demand engine and linked by
    /// `link`, kept in `slot` after the first time.
    fn on_demand_pre<P: Clone>(
        &self,
        slot: &std::sync::Mutex<Option<P>>,
        hash: &str,
        bytes: &[u8],
        link: impl FnOnce(&Linker<AgentState>, &Component) -> anyhow::Result<P>,
    ) -> anyhow::Result<P> {
        let mut slot = slot.lock().unwrap();
        if let Some(pre) = slot.as_ref() {
            return Ok(pre.clone());
        }
        let d = self.on_demand()?;
        let (component, _) = d
            .cache
            .load(&d.engine, hash, bytes)
            .map_err(|e| anyhow::anyhow!("on-demand engine: {e:#}"))?;
        let pre = link(&d.linker, &component)?;
        Ok(slot.insert(pre).clone())
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
        let pre = pre_link(&self.linker, &component)?;
        let agent = Arc::new(LoadedAgent {
            name: name.to_string(),
            hash: hash.clone(),
            from_cache,
            bytes: Arc::from(bytes),
            pre,
            on_demand: Mutex::new(None),
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
        // An interface of types alone (`tool-types`, which a guest linking the SDK's
        // tool bindings carries) grants nothing and is allowed.
        for (name, item) in component.component_type().imports(&self.engine) {
            let types_only = match &item.ty {
                wasmtime::component::types::ComponentItem::ComponentInstance(i) => {
                    i.exports(&self.engine).all(|(_, e)| {
                        matches!(
                            e.ty,
                            wasmtime::component::types::ComponentItem::Type(_)
                                | wasmtime::component::types::ComponentItem::Resource(_)
                        )
                    })
                }
                _ => false,
            };
            if name.starts_with("agentflow:agent/")
                && !types_only
                && !name.starts_with("agentflow:agent/tools")
                && !name.starts_with("agentflow:agent/trace")
            {
                anyhow::bail!(
                    "validator components may import only agentflow:agent/tools and agentflow:agent/trace \
                     (and wasi:*), not `{name}`"
                );
            }
        }
        let pre = validator_pre(&self.linker, &component)?;
        let loaded = Arc::new(LoadedValidator {
            hash,
            pre,
            on_demand: Mutex::new(None),
            bytes: Arc::from(bytes),
        });
        self.validators.lock().unwrap().insert(key, loaded.clone());
        Ok(loaded)
    }
}

/// An engine with the host's settings (epoch interruption, 8 GiB memory reservations
/// with a 64 KiB guard) and the given allocation strategy. The pooled engine maps a
/// component's initial memory image copy-on-write (shared pages, quick reuse of warm
/// slots); the on-demand one copies it into each instance instead, which takes two
/// memory maps fewer per instance — what bounds how many a process can hold
/// (`vm.max_map_count`). That setting is part of the compiled code, so each engine
/// compiles (and caches) its own.
/// An engine allocating instances with `strategy`. With `small_memories` a linear
/// memory reserves only what it holds (and 1 MiB to grow in place), so guest code
/// checks bounds; otherwise each reserves [`pool::MEMORY_RESERVATION`].
fn engine(strategy: InstanceAllocationStrategy, small_memories: bool) -> anyhow::Result<Engine> {
    let cow = matches!(strategy, InstanceAllocationStrategy::Pooling(_));
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .wasm_component_model(true)
        .memory_guard_size(64 << 10)
        .memory_init_cow(cow)
        .allocation_strategy(strategy);
    if small_memories {
        config
            .memory_reservation(0)
            .memory_reservation_for_growth(1 << 20);
    } else {
        config.memory_reservation(pool::MEMORY_RESERVATION);
    }
    Engine::new(&config).map_err(|e| anyhow::anyhow!("wasmtime engine: {e}"))
}

/// The linker: WASI p2 with nothing granted, plus the agentflow capabilities.
fn linker(engine: &Engine) -> anyhow::Result<Linker<AgentState>> {
    let mut linker = Linker::<AgentState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
    add_capabilities(&mut linker)?;
    Ok(linker)
}

fn pre_link(
    linker: &Linker<AgentState>,
    component: &Component,
) -> anyhow::Result<AgentPre<AgentState>> {
    let instance_pre = linker.instantiate_pre(component).map_err(|e| {
        anyhow::anyhow!(
            "the component does not fit the agentflow:agent/agent world: {e}\n\
             (agents may import only wasi:* p2 interfaces and agentflow:agent/*, and must export `run`)"
        )
    })?;
    AgentPre::new(instance_pre).map_err(|e| {
        anyhow::anyhow!("the component does not export `run: func(input: string) -> result<string, string>`: {e}")
    })
}

fn validator_pre(
    linker: &Linker<AgentState>,
    component: &Component,
) -> anyhow::Result<crate::bindings::validator::ValidatorPre<AgentState>> {
    let instance_pre = linker.instantiate_pre(component).map_err(|e| {
        anyhow::anyhow!(
            "the component does not fit the agentflow:agent/validator world: {e}\n\
             (validators may import only wasi:* p2 interfaces, agentflow:agent/tools and \
             agentflow:agent/trace, and must export `validate`)"
        )
    })?;
    crate::bindings::validator::ValidatorPre::new(instance_pre).map_err(|e| {
        anyhow::anyhow!(
            "the component does not export `validate: func(task: string, output: string) -> report` \
             (is it an agent rather than a validator?): {e}"
        )
    })
}

/// Advance the engines' epochs every [`EPOCH_TICK`] while the runtime is alive.
fn start_epoch_ticker(runtime: Weak<Runtime>) {
    std::thread::Builder::new()
        .name("agentflow-epoch".into())
        .spawn(move || {
            while let Some(rt) = runtime.upgrade() {
                let engine = rt.engine.clone();
                let on_demand = rt.on_demand.get().map(|d| d.engine.clone());
                drop(rt);
                engine.increment_epoch();
                if let Some(e) = on_demand {
                    e.increment_epoch();
                }
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
