//! Showing an operator what happened: the run list and the task tree of a run with
//! model, cost, tokens, duration and the recorded reasoning steps, a run's events, the
//! difference between two runs, the model catalog, the times the CLI shows and takes,
//! what led to a side effect ([`why`]), how the same agent's answers drifted across
//! runs and models ([`drift`]), each task's cost against its quality ([`roi`]), a
//! running run's live progress ([`progress`]); a run as OpenTelemetry spans ([`otel`])
//! and the ledger's metrics ([`metrics`]) as Prometheus text or OTLP
//! ([`metrics_export`]).
//!
//! Read-only: everything here comes from the ledger.

pub mod diff;
pub mod drift;
pub mod events;
pub mod inspect;
pub mod metrics;
pub mod metrics_export;
pub mod models;
pub mod otel;
pub mod progress;
pub mod roi;
pub mod when;
pub mod why;
