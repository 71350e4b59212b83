//! The end-to-end test binary: one binary so the suite links once. Each module is a
//! topic; the guests are the real example agents built by the build script.

mod support;

mod approval_expressions;
mod builds;
mod checkpoints;
mod claims;
mod cli;
mod cli_unix;
mod cluster;
mod cluster_budgets;
mod command_validators;
mod constraints;
mod dashboard;
mod drift;
mod durability;
mod effects;
mod grants;
mod guests;
mod hostile;
mod integrity;
mod ledger;
mod limits;
mod mcp;
mod merge;
mod merge_complete;
mod otel;
mod postgres;
mod provider_failures;
mod providers;
mod python_agent;
mod recovery_graph;
mod retry_strategies;
mod run_status;
mod same_run;
mod scaffold;
mod scheduler;
mod scheduling_complete;
mod settle;
mod tool_components;
mod tool_crashes;
mod tool_examples;
mod tools;
mod validation;
mod waits;
mod why;
