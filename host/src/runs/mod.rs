//! The `Host` API's work on runs beyond starting one: what a run stores to be resumed
//! ([`stored`]), driving a run's root task and stopping a run that waits for humans
//! ([`park`]), and resuming, forking, recovering and reopening runs ([`resume`]).

pub(crate) mod park;
pub(crate) mod resume;
pub(crate) mod stored;
