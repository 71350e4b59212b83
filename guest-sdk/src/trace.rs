//! The agent's reasoning trace: why it did what it did. Kept in the run's ledger
//! and shown by `agentflow inspect`.

use crate::wit::agentflow::agent::trace as raw;

/// Log level (re-exported from the interface).
pub use raw::Level;

/// Records one reasoning step: what the agent thought, what it did, what it saw,
/// and how sure it is (`0.0..=1.0`; clamped).
pub fn step(
    thought: impl AsRef<str>,
    action: impl AsRef<str>,
    observation: impl AsRef<str>,
    confidence: f32,
) {
    let confidence = if confidence.is_nan() {
        0.0
    } else {
        confidence.clamp(0.0, 1.0)
    };
    raw::step(
        thought.as_ref(),
        action.as_ref(),
        observation.as_ref(),
        confidence,
    );
}

/// Logs a message at `level`.
pub fn log(level: Level, message: impl AsRef<str>) {
    raw::log(level, message.as_ref());
}

/// Logs at debug level.
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message);
}

/// Logs at info level.
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message);
}

/// Logs at warn level.
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message);
}

/// Logs at error level.
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message);
}
