//! The binary's side of the command line: what clap parses ([`args`]), what the
//! commands print ([`print`]), the host or ledger each command runs on ([`host`]),
//! building agent and validator crates given as directories ([`build`]), writing to a
//! terminal or a pipe ([`out`]), a running run's live progress ([`progress`]), the
//! `tools` subcommands ([`tools`]), `submit` and `worker` ([`cluster`]), and new agent and tool crates from templates
//! ([`new`]).
//! Everything a command computes lives in the `agentflow` library.

pub mod args;
pub mod build;
pub mod cluster;
pub mod host;
pub mod new;
pub mod out;
pub mod print;
pub mod progress;
pub mod tools;
