//! The `Host` API's work on runs beyond starting one: what a run stores to be resumed
//! ([`stored`]), the host configuration it was started with ([`recorded`]), driving a
//! run's root task and stopping a run that waits for humans ([`park`]), cancelling a
//! run ([`cancel`]), resuming, forking, recovering and reopening runs ([`resume`]),
//! exporting ended runs to an OpenTelemetry collector ([`telemetry`]), and the installed
//! tool components a run is given ([`tool_builds`]), and the cluster worker that
//! executes runs submitted to a PostgreSQL ledger ([`worker`]), and the tasks its
//! runs offer to the other workers ([`offered`]), with the budgets those runs share
//! in the database ([`pooled`]).

pub mod cancel;
pub(crate) mod lease;
pub mod recorded;

pub(crate) mod offered;
pub(crate) mod park;
pub(crate) mod pooled;
pub(crate) mod resume;
pub(crate) mod stored;
pub mod telemetry;
pub(crate) mod tool_builds;
pub mod worker;
