//! Forking a run: "what would it have done with a different model?"
//!
//! `fork(run, at)` makes a new run that shares the original's component, input and
//! config, and a copy of its record up to the root task's event `at`: the root's
//! events with `seq <= at` (never splitting a tool intent from its result), and every
//! child spawned within that prefix with its whole record. Resuming the new run then
//! replays that prefix and continues live from there — with another model if one is
//! given. The new run records where it came from (`forked_from`, `fork_seq`).

use crate::ledger::{EventKind, Ledger, LedgerError};

/// Copy the prefix of `run_id` up to root event `at` into a new run `new_run_id` with
/// the given config and context hash. Returns the seq actually used as the cut.
pub async fn copy_prefix(
    ledger: &Ledger,
    run_id: String,
    new_run_id: String,
    at: u64,
    config_json: String,
    context_hash: String,
) -> Result<u64, LedgerError> {
    ledger
        .write(move |w| {
            let copy = w.copy_run_prefix(&run_id, &new_run_id, at, &config_json, &context_hash)?;
            // What the copied record cost the original run, so the fork's report can
            // tell it apart from what the fork spends itself.
            w.append_event(crate::ledger::EventRecord::note(
                new_run_id.clone(),
                1,
                EventKind::ForkCopied,
                true,
                serde_json::json!({ "from": run_id, "through_seq": copy.cut }),
                serde_json::json!({ "cost_usd": copy.cost_usd, "tokens": copy.tokens }),
            ))?;
            Ok(copy.cut)
        })
        .await
}
