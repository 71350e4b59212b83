//! Write AgentFlow agents in Rust.
//!
//! An agent is a WebAssembly component (target `wasm32-wasip2`) that exports one
//! function, `run(input) -> result<output, error>`, and reaches the world only
//! through the host: language models ([`llm`]), granted tools ([`tools`]),
//! sub-agents ([`tasks`]), its reasoning trace ([`trace`]) and semantic
//! checkpoints ([`checkpoint`]). This crate wraps those imports in typed,
//! builder-style APIs; you never touch the raw bindings.
//!
//! A complete agent (`crate-type = ["cdylib"]`, built with
//! `cargo build --release --target wasm32-wasip2`):
//!
//! ```no_run
//! use agentflow_sdk::prelude::*;
//!
//! fn run(topic: String) -> Result<String, Error> {
//!     trace::info(format!("writing a haiku about {topic}"));
//!     let reply = Request::new()
//!         .system("You are a poet. Answer with a haiku only.")
//!         .user(format!("Write a haiku about {topic}."))
//!         .priority(Priority::Cost)
//!         .max_tokens(100)
//!         .send()?;
//!     trace::step("asked for a haiku", "llm", &reply.text, 0.9);
//!     Ok(reply.text)
//! }
//!
//! export_agent!(run);
//! # fn main() {}
//! ```
//!
//! Errors from every host call convert into [`Error`] with `?`; the agent function
//! may return any error type that implements [`std::fmt::Display`], whose text
//! becomes the run's failure message.
//!
//! The same crate writes the two other kinds of components the host runs: validators
//! ([`validator`], [`export_validator!`]) and tool components ([`tool`],
//! [`export_tool!`]), which operators install with `agentflow tools install` and grant
//! to agents like the built-in tools.

#![warn(missing_docs)]

// Lets the generated bindings name this crate as `agentflow_sdk` both here and in
// the crates that expand `export_agent!`.
extern crate self as agentflow_sdk;

/// Raw bindings generated from `wit/`. Not part of the stable API: use the typed
/// modules instead.
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod wit {
    wit_bindgen::generate!({
        // The one WIT package of the project, shared with the host.
        path: "../wit",
        world: "agent",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "agentflow_sdk::wit",
        runtime_path: "agentflow_sdk::__private::wit_bindgen::rt",
    });
}

/// Raw bindings of world `validator`, sharing the `tools` and `trace` bindings above.
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod validator_wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "validator",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "agentflow_sdk::validator_wit",
        runtime_path: "agentflow_sdk::__private::wit_bindgen::rt",
        with: {
            "agentflow:agent/tools@0.1.0": crate::wit::agentflow::agent::tools,
            "agentflow:agent/trace@0.1.0": crate::wit::agentflow::agent::trace,
        },
    });
}

/// Raw bindings of world `tool` (tool components). Not part of the stable API: use
/// [`tool`] instead.
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod tool_wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "tool",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "agentflow_sdk::tool_wit",
        runtime_path: "agentflow_sdk::__private::wit_bindgen::rt",
    });
}

pub mod checkpoint;
mod error;
pub mod llm;
pub mod tasks;
pub mod tool;
pub mod tools;
pub mod trace;
pub mod validator;

pub use error::{Error, LlmError, SpawnError, ToolError};
pub use llm::ask;

/// The items most agents need: `use agentflow_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::checkpoint::{self, Saved};
    pub use crate::export_agent;
    pub use crate::llm::{self, Priority, Request, Response, ToolCall, ask};
    pub use crate::tasks::{self, Outcome, Spawn, TaskId};
    pub use crate::tools::{self, ToolInfo};
    pub use crate::trace;
    pub use crate::{Error, LlmError, SpawnError, ToolError};
}

/// Support code for [`export_agent!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    /// Runs the agent function and turns its error into the run's failure text.
    #[inline]
    pub fn run_agent<E: core::fmt::Display>(
        input: String,
        f: fn(String) -> Result<String, E>,
    ) -> Result<String, String> {
        f(input).map_err(|e| e.to_string())
    }
}

/// Exports a function `fn(String) -> Result<String, E>` (with `E: Display`) as the
/// component's `run`. Use it once per agent crate, at the crate root or in any module.
///
/// ```ignore
/// fn run(input: String) -> Result<String, agentflow_sdk::Error> { Ok(input) }
/// agentflow_sdk::export_agent!(run);
/// ```
#[macro_export]
macro_rules! export_agent {
    ($f:path) => {
        const _: () = {
            #[doc(hidden)]
            struct __AgentflowAgent;

            impl $crate::wit::Guest for __AgentflowAgent {
                fn run(
                    input: ::std::string::String,
                ) -> ::core::result::Result<::std::string::String, ::std::string::String> {
                    $crate::__private::run_agent(input, $f)
                }
            }

            $crate::wit::export!(__AgentflowAgent);
        };
    };
}
