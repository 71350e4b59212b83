//! Semantic checkpoints: the agent's own state (JSON-encoded) plus a note on what
//! it was doing. A resumed task finds its latest checkpoint with [`load`]; the host
//! adds what it knew at the save — the reasoning steps and tool results so far, as a
//! ready "continue from step N" text ([`Saved::restart_context`]) that
//! [`crate::llm::Request::continue_from`] puts in front of the next LLM request.
//!
//! ```ignore
//! #[derive(Serialize, Deserialize, Default)]
//! struct State { done: Vec<String> }
//! let saved = checkpoint::load::<State>();
//! let mut request = llm::Request::new();
//! if let Some(saved) = &saved {
//!     request = request.continue_from(saved); // "continue from step N, you already did …"
//! }
//! let mut state = saved.map(|s| s.state).unwrap_or_default();
//! state.done.push("step 1".into());
//! checkpoint::save(&state, "finished step 1")?;
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::wit::agentflow::agent::checkpoint as raw;

/// A loaded checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved<T> {
    /// The decoded state.
    pub state: T,
    /// The note saved with it.
    pub note: String,
    /// Number of reasoning steps recorded when it was saved.
    pub step: u32,
    /// Wall-clock time of the save, milliseconds since the Unix epoch.
    pub saved_at_ms: u64,
    /// Hash of what the task had seen at the save: its input, every LLM prompt, every
    /// tool result.
    pub context_hash: String,
    /// "Continue from step N; here is what you already did": the reasoning steps and
    /// tool results up to the save, to prepend to the next LLM request.
    pub restart_context: String,
}

/// Saves `state` (as JSON) with a note; returns the checkpoint's sequence number
/// within the task.
pub fn save<T: Serialize + ?Sized>(state: &T, note: impl AsRef<str>) -> Result<u32, Error> {
    let bytes = serde_json::to_vec(state)?;
    raw::save(&bytes, note.as_ref()).map_err(Error::Checkpoint)
}

/// The latest checkpoint of this task, or `None` if there is none or its state does
/// not decode as `T` (use [`try_load`] to tell the two apart).
pub fn load<T: DeserializeOwned>() -> Option<Saved<T>> {
    try_load().ok().flatten()
}

/// The latest checkpoint of this task; `Err` if its state does not decode as `T`.
pub fn try_load<T: DeserializeOwned>() -> Result<Option<Saved<T>>, Error> {
    let Some(c) = load_raw() else { return Ok(None) };
    let state = serde_json::from_slice(&c.state)
        .map_err(|e| Error::Json(format!("checkpoint state does not decode: {e}")))?;
    Ok(Some(Saved {
        state,
        note: c.note,
        step: c.step,
        saved_at_ms: c.saved_at_ms,
        context_hash: c.context_hash,
        restart_context: c.restart_context,
    }))
}

/// The latest checkpoint with its state as raw bytes.
pub fn load_raw() -> Option<Saved<Vec<u8>>> {
    raw::load().map(|c| Saved {
        state: c.state,
        note: c.note,
        step: c.step,
        saved_at_ms: c.saved_at_ms,
        context_hash: c.context_hash,
        restart_context: c.restart_context,
    })
}
