//! Per-agent resource limits and their defaults.
//!
//! Every agent (each task of a run) gets its own copy of these limits. The defaults
//! are deliberately conservative: an operator raises them in `[limits]`, never has to
//! lower them to be safe.

use serde::{Deserialize, Serialize};

/// Limits applied to each agent of a run.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory an agent may grow to, in MiB. Default 128: enough for real
    /// agents, small enough that a memory bomb hurts nobody.
    pub memory_mb: u64,
    /// CPU time an agent may spend executing wasm, in milliseconds, measured in
    /// 10 ms epoch ticks (a tick counts when the guest has run wasm for a whole tick
    /// since its last host call; waiting in the host is not charged). Default 10 000.
    /// A guest in an infinite loop is stopped once it has burnt this, and it yields to
    /// other agents every tick meanwhile.
    pub cpu_ms: u64,
    /// Wall-clock time a task may take, including waiting for the LLM, tools and
    /// children, in milliseconds. Default 600 000 (10 minutes).
    pub wall_ms: u64,
    /// Host calls (LLM, tools, spawn, trace, checkpoint) one agent may make. Default 10 000.
    pub max_host_calls: u64,
    /// Largest output an agent may return, in bytes. Default 1 MiB.
    pub max_output_bytes: usize,
    /// Bytes of stdout and of stderr kept per agent; the rest is dropped. Default 64 KiB.
    pub max_stdio_bytes: usize,
    /// Tasks (root included) one run may create. Default 128.
    pub max_tasks: u32,
    /// Deepest a task may be (the root is depth 0). Default 5.
    pub max_depth: u32,
    /// Largest single `checkpoint.save` state, in bytes. Default 4 MiB.
    pub max_checkpoint_bytes: usize,
    /// Bytes kept of each guest text field of `trace.log` (the message) and
    /// `trace.step` (thought, action, observation). Past it the text is cut with a
    /// visible marker, the event records `truncated_bytes`, and the host never prints
    /// more than this. Default 64 KiB. Left out of the stored config when it is the
    /// default, so runs recorded before the key existed keep their context hash.
    #[serde(skip_serializing_if = "is_default_trace_bytes")]
    pub max_trace_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 128,
            cpu_ms: 10_000,
            wall_ms: 600_000,
            max_host_calls: 10_000,
            max_output_bytes: 1 << 20,
            max_stdio_bytes: 64 << 10,
            max_tasks: 128,
            max_depth: 5,
            max_checkpoint_bytes: 4 << 20,
            max_trace_bytes: DEFAULT_MAX_TRACE_BYTES,
        }
    }
}

/// Default of `max_trace_bytes`: 64 KiB per field.
pub const DEFAULT_MAX_TRACE_BYTES: usize = 64 << 10;

fn is_default_trace_bytes(bytes: &usize) -> bool {
    *bytes == DEFAULT_MAX_TRACE_BYTES
}

/// Hard ceiling on `memory_mb`: the pooling allocator reserves this much address
/// space per slot.
pub const MAX_MEMORY_MB: u64 = 4096;

impl Limits {
    /// Reject limits that cannot work, naming the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.memory_mb == 0 || self.memory_mb > MAX_MEMORY_MB {
            anyhow::bail!("[limits] memory_mb must be between 1 and {MAX_MEMORY_MB}");
        }
        if self.cpu_ms < 10 {
            anyhow::bail!("[limits] cpu_ms must be at least 10 (one epoch tick)");
        }
        if self.wall_ms == 0 {
            anyhow::bail!("[limits] wall_ms must be positive");
        }
        if self.max_tasks == 0 {
            anyhow::bail!("[limits] max_tasks must be at least 1 (the root task)");
        }
        if self.max_trace_bytes == 0 {
            anyhow::bail!("[limits] max_trace_bytes must be at least 1");
        }
        Ok(())
    }

    /// Memory cap in bytes.
    pub fn memory_bytes(&self) -> usize {
        (self.memory_mb as usize) << 20
    }
}
