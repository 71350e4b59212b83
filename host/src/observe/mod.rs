//! Showing an operator what happened: the run list and the task tree of a run with
//! model, cost, tokens, duration and the recorded reasoning steps, and the table printer
//! of every listing.
//!
//! Read-only: everything here comes from the ledger.

pub mod diff;
pub mod inspect;
pub mod models;
