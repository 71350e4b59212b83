//! Run-level recovery over the ledger: settle side effects whose outcome is in doubt
//! after a crash ([`recovery`]) and record a human's answer about one ([`settle`]),
//! over the task graph ([`graph`]: upstream, downstream, revert order), fork a run at
//! an event ([`fork`]), and reopen a failed run's failed tasks for a
//! re-run ([`reopen`]).
//!
//! The write side of durability is the ledger's write-ahead rule (every result is
//! committed before the guest sees it; side-effecting tool calls commit an intent
//! first); matching a resumed guest's calls against the record is [`crate::replay`].

pub mod fork;
pub mod graph;
pub mod recovery;
pub mod reopen;
pub mod settle;

pub use crate::replay::DivergencePolicy;

/// `[durability]`.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DurabilityConfig {
    /// When a resumed task's replay diverges: `fail` (default) or `from-checkpoint`.
    #[serde(default)]
    pub on_divergence: DivergencePolicy,
}
