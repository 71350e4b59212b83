//! Tool components: tools shipped as WebAssembly components of the `tool` world
//! (`wit/tool.wit`), installed on a ledger with `agentflow tools install` and called by
//! agents through the same recorded path as the built-in tools
//! ([`crate::capabilities`]'s `tools`): each is a [`ComponentTool`], a
//! [`crate::tools::Tool`].
//!
//! A tool component never runs in an agent's store. Every call gets a fresh store of
//! its own on this module's engine ([`ToolRuntime`]), instantiated from an
//! `InstancePre` kept per component hash (compiled once, through the host's on-disk
//! component cache), with the limits of its manifest ([`manifest`]): linear memory, a
//! wall-clock timeout (the guest yields every epoch tick, so a spinning tool is stopped
//! on time), and WASI with nothing but what the manifest grants — a preopened
//! directory, the run's kv store ([`state`]), outgoing HTTP to allowed hosts
//! ([`http`]). A trap, a timeout or a memory bomb fails that call only.
//!
//! [`registry`] installs, lists and removes them; [`listing`] is the one row type of
//! `agentflow tools list` (built-in, component and — later — MCP tools).

pub mod component_tool;
pub mod http;
pub mod listing;
pub mod manifest;
pub mod registry;
pub mod state;

pub use component_tool::ComponentTool;
pub use manifest::Manifest;

use crate::bindings::tool::{Tool as ToolWorld, ToolPre};
use crate::runtime::cache::ComponentCache;
use state::ToolState;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

/// The engine, linker and compiled components of tool components. One per host.
pub struct ToolRuntime {
    engine: Engine,
    linker: Linker<ToolState>,
    cache: ComponentCache,
    /// Pre-linked components by SHA-256.
    pres: Mutex<HashMap<String, ToolPre<ToolState>>>,
}

impl ToolRuntime {
    /// An engine for tool components (instances allocated on demand, epoch
    /// interruption), compiling through the component cache in `cache_dir`.
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<Arc<ToolRuntime>> {
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .wasm_component_model(true)
            .memory_reservation(crate::runtime::pool::MEMORY_RESERVATION)
            .memory_guard_size(64 << 10);
        let engine =
            Engine::new(&config).map_err(|e| anyhow::anyhow!("tool component engine: {e}"))?;
        let mut linker = Linker::<ToolState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking WASI for tools: {e}"))?;
        ToolWorld::add_to_linker::<ToolState, HasSelf<ToolState>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("linking the tool world: {e}"))?;
        http::add_to_linker(&mut linker)?;
        let cache = ComponentCache::new(&engine, cache_dir);
        let runtime = Arc::new(ToolRuntime {
            engine,
            linker,
            cache,
            pres: Mutex::new(HashMap::new()),
        });
        start_epoch_ticker(Arc::downgrade(&runtime));
        Ok(runtime)
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The component with SHA-256 `hash` (`bytes`), checked against the `tool` world,
    /// compiled (or loaded from the cache) and pre-linked once.
    pub fn load(&self, hash: &str, bytes: &[u8]) -> anyhow::Result<ToolPre<ToolState>> {
        if let Some(pre) = self.pres.lock().unwrap().get(hash) {
            return Ok(pre.clone());
        }
        if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
            anyhow::bail!("not a WebAssembly file (bad magic number)");
        }
        if bytes[4..8] != [0x0d, 0x00, 0x01, 0x00] {
            anyhow::bail!(
                "this is a core WebAssembly module, not a component: build the tool for the \
                 wasm32-wasip2 target (cargo build --release --target wasm32-wasip2)"
            );
        }
        let (component, _) = self
            .cache
            .load(&self.engine, hash, bytes)
            .map_err(|e| anyhow::anyhow!("invalid component: {e:#}"))?;
        let pre = self.link(&component)?;
        self.pres
            .lock()
            .unwrap()
            .insert(hash.to_string(), pre.clone());
        Ok(pre)
    }

    fn link(&self, component: &Component) -> anyhow::Result<ToolPre<ToolState>> {
        for (name, _) in component.component_type().imports(&self.engine) {
            let allowed = name.starts_with("wasi:")
                || name.starts_with("agentflow:agent/kv")
                || name.starts_with("agentflow:agent/tool-types");
            if !allowed {
                anyhow::bail!(
                    "the component does not fit the agentflow:agent/tool world: it imports `{name}` \
                     (tool components may import only wasi:* and agentflow:agent/kv — is it an agent?)"
                );
            }
        }
        let instance_pre = self.linker.instantiate_pre(component).map_err(|e| {
            anyhow::anyhow!(
                "the component does not fit the agentflow:agent/tool world: {e}\n\
                 (tool components may import only wasi:* p2 interfaces and agentflow:agent/kv)"
            )
        })?;
        ToolPre::new(instance_pre).map_err(|e| {
            anyhow::anyhow!(
                "the component does not export the tool world's `describe` and `call` \
                 (is it an agent or a validator?): {e}"
            )
        })
    }

    /// The names of the interfaces component `hash` (`bytes`) imports.
    pub fn imports(&self, bytes: &[u8], hash: &str) -> anyhow::Result<Vec<String>> {
        let (component, _) = self
            .cache
            .load(&self.engine, hash, bytes)
            .map_err(|e| anyhow::anyhow!("invalid component: {e:#}"))?;
        Ok(component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect())
    }
}

/// Advance the tool engine's epoch every [`crate::runtime::EPOCH_TICK`] while the
/// runtime is alive: each tick a running tool yields, so its timeout can stop it.
fn start_epoch_ticker(runtime: Weak<ToolRuntime>) {
    std::thread::Builder::new()
        .name("agentflow-tool-epoch".into())
        .spawn(move || {
            while let Some(rt) = runtime.upgrade() {
                let engine = rt.engine.clone();
                drop(rt);
                engine.increment_epoch();
                std::thread::sleep(crate::runtime::EPOCH_TICK);
            }
        })
        .expect("spawn tool epoch ticker");
}
