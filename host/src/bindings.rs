//! Host bindings generated from `wit/`: world `agentflow:agent/agent` (agents),
//! world `agentflow:agent/validator` (validator components, [`validator`]) and world
//! `agentflow:agent/tool` (tool components, [`tool`]).
//!
//! `bindgen!` runs here and nowhere else; the capability modules implement the
//! generated `Host` traits, one module per interface. Every import is async (it may
//! wait for the ledger, a provider or a child) and trappable (a host failure such as
//! an unwritable ledger stops the guest instead of lying to it).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "agent",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use self::agentflow::agent::{checkpoint, llm, tasks, tools, trace};

/// World `validator`: imports `tools` and `trace` — the very interfaces of the agent
/// world (mapped with `with:`), so the same `Host` impls on `TaskCtx` serve both.
pub mod validator {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "validator",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "agentflow:agent/tools": super::agentflow::agent::tools,
            "agentflow:agent/trace": super::agentflow::agent::trace,
        },
    });
}

/// World `tool`: a tool component. It imports only `kv` (answered by
/// `crate::tool_components`, from the run's kv table when its manifest grants it) and
/// the WASI its manifest grants; it exports `describe` and `call`.
pub mod tool {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "tool",
        imports: { default: async | trappable },
        exports: { default: async },
    });

    pub use self::agentflow::agent::{kv, tool_types};
}
