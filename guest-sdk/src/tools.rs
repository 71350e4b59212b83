//! Tools the operator granted to this run. Ungranted tools are invisible to
//! [`list`] and refused by [`call`] with [`ToolError::NotGranted`].

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::wit::agentflow::agent::tools as raw;

/// What calling a tool does to the world (re-exported from the interface).
pub use raw::SideEffect;
/// Why a tool call failed (re-exported from the interface).
pub use raw::ToolError;
/// A granted tool: `name`, `description`, `args_schema` (JSON schema) and
/// `side_effect` (re-exported from the interface).
pub use raw::ToolInfo;

/// The tools granted to this run.
pub fn list() -> Vec<ToolInfo> {
    raw::list()
}

/// Calls a tool with `args` encoded as JSON; returns the tool's result text (usually JSON).
pub fn call<A: Serialize + ?Sized>(name: &str, args: &A) -> Result<String, Error> {
    let json = serde_json::to_string(args)?;
    Ok(raw::call(name, &json)?)
}

/// Calls a tool and decodes its JSON result.
pub fn call_json<R: DeserializeOwned, A: Serialize + ?Sized>(
    name: &str,
    args: &A,
) -> Result<R, Error> {
    let out = call(name, args)?;
    serde_json::from_str(&out).map_err(|e| {
        Error::Json(format!(
            "result of tool `{name}` is not the expected JSON: {e}"
        ))
    })
}
