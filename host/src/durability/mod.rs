//! Durable runs: resume after a crash by replaying the ledger, detect divergence,
//! handle side effects whose outcome is in doubt, and inject faults for crash tests.
//!
//! The write side of durability is the ledger's write-ahead rule (every result is
//! committed before the guest sees it; side-effecting tool calls commit an intent
//! first). This module is the read side: turning a ledger back into running tasks.

pub mod fault;
pub mod fork;
pub mod nondet;
pub mod recovery;
pub mod reopen;
pub mod replay;

/// What to do when a replaying guest makes a call the ledger did not record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DivergencePolicy {
    /// Fail the task with the non-determinism error (default).
    #[default]
    Fail,
    /// Restart the guest live from its last semantic checkpoint; the history after it
    /// stays in the ledger as history.
    FromCheckpoint,
}
