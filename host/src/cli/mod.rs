//! The binary's side of the command line: what clap parses ([`args`]), what the
//! commands print ([`print`]) and the host or ledger each command runs on ([`host`]).
//! Everything a command computes lives in the `agentflow` library.

pub mod args;
pub mod host;
pub mod print;
