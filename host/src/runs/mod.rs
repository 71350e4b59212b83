//! The `Host` API's work on runs beyond starting one: what a run stores to be resumed
//! ([`stored`]) and resuming, forking, recovering and reopening runs ([`resume`]).

pub(crate) mod resume;
pub(crate) mod stored;
