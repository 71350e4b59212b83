//! Tool components: your own wasm code that an operator installs as a tool
//! (`agentflow tools install`) and grants to agents like a built-in (world
//! `agentflow:agent/tool`, `wit/tool.wit`). The host runs each call in a store of the
//! tool's own — never the agent's — with the limits and grants of its manifest
//! (`agentflow-tool.toml`): a preopened directory, outgoing HTTP to allowed hosts, the
//! run's [`kv`]. Everything else is denied. The granted directory is [`DATA_DIR`].
//!
//! Implement [`Tool`] (typed arguments in, typed output and [`Effect`]s out) and export
//! it with [`export_tool!`](crate::export_tool):
//!
//! ```
//! use agentflow_sdk::tool::{self, Call, Description, SideEffect, Tool, ToolError};
//! use serde::Deserialize;
//!
//! struct Greet;
//!
//! #[derive(Deserialize)]
//! struct Args {
//!     name: String,
//! }
//!
//! impl Tool for Greet {
//!     type Args = Args;
//!     type Output = String;
//!
//!     fn describe() -> Description {
//!         Description::new("greet", "Says hello.", SideEffect::None).schema(serde_json::json!({
//!             "type": "object",
//!             "properties": { "name": { "type": "string" } },
//!             "required": ["name"],
//!         }))
//!     }
//!
//!     fn call(_call: &mut Call, args: Args) -> Result<String, ToolError> {
//!         if args.name.is_empty() {
//!             return Err(ToolError::InvalidArgs("`name` is empty".into()));
//!         }
//!         Ok(format!("hello, {}", args.name))
//!     }
//! }
//!
//! agentflow_sdk::export_tool!(Greet);
//!
//! // The whole JSON path runs natively too, so `cargo test` covers it:
//! let done = tool::invoke::<Greet>(&tool::Call::new("key-1", "run-1"), r#"{"name":"ada"}"#);
//! assert_eq!(done.unwrap().output, r#""hello, ada""#);
//! let bad = tool::invoke::<Greet>(&tool::Call::new("key-2", "run-1"), r#"{"nom":"ada"}"#);
//! assert!(matches!(bad, Err(ToolError::InvalidArgs(_))));
//! ```
//!
//! **Effects and undo.** A side-effecting tool reports what it did with
//! [`Call::effect`]; the host records the effects with the result (after the call's
//! `tools.intent`), and a recovery plan hands each one back to the tool's undo
//! operation: a *compensable* tool names that `op` with [`Description::undo`], and is
//! then called with `{"op": <undo>, "effect": <effect>, "original": <args>}` (decode it
//! with [`Undo`]).
//!
//! **Idempotency.** [`Call::idempotency_key`] is stable for one call of one task of one
//! run, and recorded in the intent before the call: if the host crashed after the
//! intent, the call is made again with the same key, and the tool must not do the work
//! twice (see `examples/tools/ticket`).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::tool_wit::agentflow::agent::tool_types as raw;

/// The host's context of one call (re-exported from the interface).
pub use raw::CallContext;
/// What the host receives from a successful call: the output's JSON and the effects'.
pub use raw::CallResult;
/// What [`Tool::describe`] returns (re-exported from the interface): `name`,
/// `description`, `args_schema` (JSON schema), `side_effect`, `undo`.
pub use raw::Description;
/// What calling the tool does to the world (re-exported from the interface).
pub use raw::SideEffect;
/// Why a call failed (re-exported from the interface): `InvalidArgs`, `Denied`, `Failed`.
pub use raw::ToolError;

/// Where the directory granted by the manifest (`[grants] dir`) appears inside the tool.
/// Without that grant the tool has no filesystem at all.
pub const DATA_DIR: &str = "/data";

/// A tool: typed arguments in, a typed output and [`Effect`]s out.
pub trait Tool {
    /// The call's arguments, decoded from its JSON; a decoding error becomes
    /// [`ToolError::InvalidArgs`] naming serde's reason.
    type Args: DeserializeOwned;
    /// The call's output, encoded as JSON for the agent.
    type Output: Serialize;

    /// Name, description, argument schema, side-effect class and undo operation.
    fn describe() -> Description;

    /// Performs one call. Report what it did to the world with [`Call::effect`].
    fn call(call: &mut Call, args: Self::Args) -> Result<Self::Output, ToolError>;
}

impl Description {
    /// A description with an empty-object argument schema and no undo operation.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        side_effect: SideEffect,
    ) -> Description {
        Description {
            name: name.into(),
            description: description.into(),
            args_schema: r#"{"type":"object"}"#.to_string(),
            side_effect,
            undo: None,
        }
    }

    /// The JSON schema of the arguments object (what agents and models see).
    pub fn schema(mut self, schema: serde_json::Value) -> Description {
        self.args_schema = schema.to_string();
        self
    }

    /// The `op` that reverts one effect of this (compensable) tool.
    pub fn undo(mut self, op: impl Into<String>) -> Description {
        self.undo = Some(op.into());
        self
    }
}

/// One call being served: its context and the effects reported so far.
#[derive(Clone, Debug, Default)]
pub struct Call {
    idempotency_key: String,
    run_id: String,
    effects: Vec<Effect>,
}

impl Call {
    /// A call with this idempotency key and run id (the host makes these; tests make
    /// their own).
    pub fn new(idempotency_key: impl Into<String>, run_id: impl Into<String>) -> Call {
        Call {
            idempotency_key: idempotency_key.into(),
            run_id: run_id.into(),
            effects: Vec::new(),
        }
    }

    /// Stable for this call across a crash and the call's repetition: use it to make a
    /// repeated call harmless.
    pub fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }

    /// The calling run.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Reports one effect on the world; recorded with the call's result.
    pub fn effect(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    /// The effects reported so far.
    pub fn effects(&self) -> &[Effect] {
        &self.effects
    }
}

impl From<CallContext> for Call {
    fn from(ctx: CallContext) -> Call {
        Call::new(ctx.idempotency_key, ctx.run_id)
    }
}

/// A typed record of something a tool did to the world: the host's `Effect`
/// (`host/src/tools/mod.rs`), serialized the same way (`{"type": "FileModified", ...}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Effect {
    /// A commit made on a branch.
    GitCommit {
        /// The repository.
        repo: String,
        /// The commit's id.
        sha: String,
        /// The branch it was made on.
        branch: String,
    },
    /// A file written; `hash` is the SHA-256 (lowercase hex) of its new content.
    FileModified {
        /// The file, as the tool names it (e.g. relative to its directory).
        path: String,
        /// SHA-256 of the content written, lowercase hex.
        hash: String,
    },
    /// A request to an API that changed something.
    #[allow(clippy::upper_case_acronyms)]
    APICall {
        /// The URL or endpoint name.
        endpoint: String,
        /// The HTTP method (or the API's verb).
        method: String,
        /// The response status.
        status: u16,
    },
    /// Rows of a table changed.
    DatabaseMutation {
        /// The table.
        table: String,
        /// What happened to it.
        op: DbOp,
    },
    /// A cloud resource created, changed or deleted.
    CloudResource {
        /// The provider (e.g. `aws`).
        provider: String,
        /// The resource's id.
        id: String,
        /// What was done (e.g. `create`).
        action: String,
    },
}

/// What an [`Effect::DatabaseMutation`] did to its table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DbOp {
    /// Rows added.
    Insert,
    /// Rows changed.
    Update,
    /// Rows removed.
    Delete,
    /// Rows added or replaced.
    Upsert,
    /// The schema changed (create, alter, drop).
    Schema,
}

/// The arguments of an undo call, `{"op": <undo>, "effect": <effect>, "original": <args>}`:
/// the effect to revert and the arguments of the call that made it. Decode it inside your
/// `Args` (e.g. as the fields of the undo op's variant) or on its own.
#[derive(Clone, Debug, Deserialize)]
pub struct Undo<A = serde_json::Value> {
    /// The effect to revert, as the tool reported it.
    pub effect: Effect,
    /// The arguments of the call that made it, when the host has them.
    #[serde(default)]
    pub original: Option<A>,
}

/// Runs `T` on one call's JSON arguments, as the exported `call` does: decodes the
/// arguments, calls [`Tool::call`], encodes the output and the effects. Works natively,
/// so a tool's `cargo test` can go through the same path as the host.
pub fn invoke<T: Tool>(call: &Call, args_json: &str) -> Result<CallResult, ToolError> {
    let args: T::Args = serde_json::from_str(args_json)
        .map_err(|e| ToolError::InvalidArgs(format!("{e} (arguments: {args_json})")))?;
    let mut call = call.clone();
    call.effects.clear();
    let output = T::call(&mut call, args)?;
    let output = serde_json::to_string(&output)
        .map_err(|e| ToolError::Failed(format!("cannot encode the output as JSON: {e}")))?;
    let effects = call
        .effects
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ToolError::Failed(format!("cannot encode an effect as JSON: {e}")))?;
    Ok(CallResult { output, effects })
}

/// The run's private key-value store (the built-in `kv` tool's table), for tools whose
/// manifest grants `kv = true`. Without that grant the host refuses: `set` returns the
/// refusal and `get` fails the call. Off wasm (native tests) both panic: keep kv access
/// at the edge of your tool's logic.
pub mod kv {
    use crate::tool_wit::agentflow::agent::kv as raw;
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    /// The value of `key`, if set.
    pub fn get(key: &str) -> Option<String> {
        raw::get(key)
    }

    /// Sets `key` to `value`; the host's refusal (e.g. a size limit) is the error.
    pub fn set(key: &str, value: &str) -> Result<(), String> {
        raw::set(key, value)
    }

    /// The value of `key` decoded from JSON; `Ok(None)` if unset.
    pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, String> {
        match get(key) {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| format!("kv key `{key}` is not the expected JSON: {e}")),
        }
    }

    /// Sets `key` to `value` encoded as JSON.
    pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), String> {
        let text = serde_json::to_string(value).map_err(|e| e.to_string())?;
        set(key, &text)
    }
}

/// Exports a type implementing [`Tool`] as the component's `describe` and `call`
/// (world `agentflow:agent/tool`). Use it once per tool crate.
///
/// ```ignore
/// struct Calculator;
/// impl agentflow_sdk::tool::Tool for Calculator { /* ... */ }
/// agentflow_sdk::export_tool!(Calculator);
/// ```
#[macro_export]
macro_rules! export_tool {
    ($t:ty) => {
        const _: () = {
            #[doc(hidden)]
            struct __AgentflowTool;

            impl $crate::tool_wit::Guest for __AgentflowTool {
                fn describe() -> $crate::tool::Description {
                    <$t as $crate::tool::Tool>::describe()
                }

                fn call(
                    ctx: $crate::tool::CallContext,
                    args_json: ::std::string::String,
                ) -> ::core::result::Result<$crate::tool::CallResult, $crate::tool::ToolError>
                {
                    $crate::tool::invoke::<$t>(&$crate::tool::Call::from(ctx), &args_json)
                }
            }

            $crate::tool_wit::export!(__AgentflowTool);
        };
    };
}
