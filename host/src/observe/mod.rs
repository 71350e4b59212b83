//! Showing an operator what happened: the run list and the task tree of a run with
//! model, cost, tokens, duration and the recorded reasoning steps.
//!
//! Read-only: everything here comes from the ledger.

pub mod diff;
pub mod inspect;
pub mod models;
