//! `POST /api/submit`: `agentflow submit` over HTTP — queue a run for the workers of
//! a PostgreSQL ledger ([`crate::runs::worker`]) without executing it here.
//!
//! The body is JSON: `{"agent": NAME, "component_base64": …, "input": …, "options":
//! {…}}` (`options` as `agentflow submit`'s flags: `grants`, `budget_usd`,
//! `max_depth`, `max_concurrency`, `approval_over_usd`, `workspace`). The component is
//! compiled first, so a file that is not a component of the agent world is refused
//! (400) before anything is queued; the answer is `201 {"run_id": …}`. The route
//! passes the dashboard's guard like every POST: an API client of a server started
//! with `--token` sends `Authorization: Bearer T` (see [`super::guard`]).

use super::State;
use super::api::{ApiError, ApiResult};
use crate::ledger::existing;
use crate::runs::worker::{self, SubmitOptions};
use axum::Json;
use axum::http::StatusCode;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The largest request body `POST /api/submit` reads (a component in base64).
pub const MAX_BODY_BYTES: usize = 128 << 20;

/// A run to queue.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    /// The agent's name, as runs list it.
    pub agent: String,
    /// The component's bytes, base64 (standard alphabet, padded).
    pub component_base64: String,
    #[serde(default)]
    pub input: String,
    #[serde(default)]
    pub options: SubmitOptions,
}

/// A queued run.
#[derive(Debug, Serialize)]
pub struct Submitted {
    pub run_id: String,
}

fn bad_request(why: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, why)
}

/// Whether `name` can name an agent: 1–64 letters, digits, `-`, `_` or `.`.
fn valid_agent_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `POST /api/submit`.
pub async fn submit(
    axum::extract::State(state): axum::extract::State<State>,
    Json(body): Json<SubmitBody>,
) -> ApiResult<(StatusCode, Json<Submitted>)> {
    if !valid_agent_name(&body.agent) {
        return Err(bad_request(format!(
            "agent name {:?}: use 1 to 64 letters, digits, `-`, `_` or `.`",
            body.agent
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body.component_base64.as_bytes())
        .map_err(|e| bad_request(format!("component_base64 is not base64: {e}")))?;
    let handle = tokio::runtime::Handle::current();
    let run_id = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let ledger = existing::open(&state.db)?;
        let runtime = state.runtime()?;
        handle.block_on(worker::submit(
            &runtime,
            &ledger,
            &body.agent,
            bytes,
            &body.input,
            &body.options,
        ))
    })
    .await
    .map_err(|e| anyhow::anyhow!("submit thread: {e}"))?
    .map_err(|e| bad_request(format!("{e:#}")))?;
    Ok((StatusCode::CREATED, Json(Submitted { run_id })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_are_short_and_plain() {
        for ok in ["researcher", "a", "my-agent_2.v1"] {
            assert!(valid_agent_name(ok), "{ok}");
        }
        for bad in ["", "a b", "../x", "é", &"x".repeat(65)] {
            assert!(!valid_agent_name(bad), "{bad}");
        }
    }
}
