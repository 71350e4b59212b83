//! Host bindings generated from `wit/` (world `agentflow:agent/agent`).
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
