//! The `Host` API's work on runs beyond starting one: what a run stores to be resumed
//! ([`stored`]), the host configuration it was started with ([`recorded`]), and
//! resuming, forking, recovering and reopening runs ([`resume`]).

pub mod cancel;
pub(crate) mod lease;
pub mod recorded;

pub(crate) mod resume;
pub(crate) mod stored;
