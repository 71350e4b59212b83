//! Showing an operator what happened: the run list and the task tree of a run with
//! model, cost, tokens, duration and the recorded reasoning steps ([`inspect`]), how
//! two runs differ ([`diff`]), the model catalog ([`models`]), and what led to a side
//! effect ([`why`]).
//!
//! Read-only: everything here comes from the ledger.

pub mod diff;
pub mod inspect;
pub mod models;
pub mod why;
