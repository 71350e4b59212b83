//! Run-level recovery over the ledger: plan what to do about failed and in-doubt
//! tasks ([`recovery`]) over the task graph ([`graph`]: upstream, downstream, revert
//! order), record a human's answer about an in-doubt effect ([`settle`]), fork a run at
//! an event ([`fork`]), and reopen a failed run's failed tasks for a re-run ([`reopen`]).
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
