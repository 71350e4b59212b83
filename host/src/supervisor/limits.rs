//! Per-agent resource limits and their defaults.
//!
//! Every agent (each task of a run) gets its own copy of these limits. The defaults
//! are deliberately conservative: an operator raises them in `[limits]`, never has to
//! lower them to be safe.

use serde::{Deserialize, Serialize};

/// Why a command-line duration could not be read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct BadDuration(pub String);

/// Limits applied to each agent of a run.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory an agent may grow to, in MiB. Default 128: enough for real
    /// agents, small enough that a memory bomb hurts nobody.
    pub memory_mb: u64,
    /// CPU time an agent may spend executing wasm, in milliseconds: the real CPU time
    /// of the thread running it, sampled at every host call and every 10 ms tick
    /// (waiting in the host is not charged, whatever the pattern of calls). Default
    /// 10 000. A guest in an infinite loop is stopped within one tick of burning this,
    /// and it yields to other agents every tick meanwhile.
    pub cpu_ms: u64,
    /// Wall-clock time a task may take, including waiting for the LLM, tools and
    /// children, in milliseconds. Default 600 000 (10 minutes); `agentflow run
    /// --timeout 30s` sets it per run. A guest blocked in `sleep` holds its execution
    /// slot until then; `inspect` shows how long each task was blocked.
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
    /// Bytes of clock and random reads the host may hold for one agent between two of
    /// its host calls (they are recorded with the next call). Each read costs its size
    /// in host memory (a clock read about 40 bytes, a random read its length plus 40).
    /// A guest past it is stopped. Default 4 MiB. Left out of the stored config when it
    /// is the default, so runs recorded before the key existed keep their context hash.
    #[serde(skip_serializing_if = "is_default_nondet_bytes")]
    pub max_nondet_bytes: usize,
    /// Bytes of ledger records one agent may cause (requests and responses of its host
    /// calls, clock/random reads), so a guest cannot fill the disk through the ledger
    /// (e.g. a loop of large, distinct `kv` puts). Past it the agent is stopped at its
    /// next host call. Default 256 MiB. Left out of the stored config when default.
    #[serde(skip_serializing_if = "is_default_ledger_bytes")]
    pub max_ledger_bytes: u64,
    /// Bytes kept of each guest text field of `trace.log` (the message) and
    /// `trace.step` (thought, action, observation). Past it the text is cut with a
    /// visible marker, the event records `truncated_bytes`, and the host never prints
    /// more than this. Default 64 KiB. Left out of the stored config when it is the
    /// default, so runs recorded before the key existed keep their context hash.
    #[serde(skip_serializing_if = "is_default_trace_bytes")]
    pub max_trace_bytes: usize,
}

/// Default of `max_nondet_bytes`.
pub const DEFAULT_MAX_NONDET_BYTES: usize = 4 << 20;

fn is_default_nondet_bytes(n: &usize) -> bool {
    *n == DEFAULT_MAX_NONDET_BYTES
}

/// Default of `max_ledger_bytes`.
pub const DEFAULT_MAX_LEDGER_BYTES: u64 = 256 << 20;

fn is_default_ledger_bytes(n: &u64) -> bool {
    *n == DEFAULT_MAX_LEDGER_BYTES
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
            max_nondet_bytes: DEFAULT_MAX_NONDET_BYTES,
            max_ledger_bytes: DEFAULT_MAX_LEDGER_BYTES,
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
        if self.max_nondet_bytes < 4096 {
            anyhow::bail!("[limits] max_nondet_bytes must be at least 4096");
        }
        if self.max_tasks == 0 {
            anyhow::bail!("[limits] max_tasks must be at least 1 (the root task)");
        }
        if self.max_trace_bytes == 0 {
            anyhow::bail!("[limits] max_trace_bytes must be at least 1");
        }
        Ok(())
    }

    /// The limits a person needs to know before a run, on one line.
    pub fn summary(&self) -> String {
        format!(
            "limits: cpu {} (cpu_ms), wall {} per task (wall_ms, --timeout), memory {} MiB (memory_mb), {} tasks (max_tasks)",
            format_ms(self.cpu_ms),
            format_ms(self.wall_ms),
            self.memory_mb,
            self.max_tasks
        )
    }

    /// Memory cap in bytes.
    pub fn memory_bytes(&self) -> usize {
        (self.memory_mb as usize) << 20
    }
}

/// A duration for people: `1500` → `1.5s`, `600000` → `10m`.
pub fn format_ms(ms: u64) -> String {
    match ms {
        ms if ms % 3_600_000 == 0 && ms > 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 && ms > 0 => format!("{}m", ms / 60_000),
        ms if ms >= 1000 => format!("{}s", ms as f64 / 1000.0),
        ms => format!("{ms}ms"),
    }
}

/// Parse a duration given on the command line: a number with a unit, `ms`, `s`, `m`
/// or `h` (`500ms`, `30s`, `1.5m`, `2h`). Returns milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, BadDuration> {
    duration_ms(text).map_err(BadDuration)
}

fn duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{text}`: give a unit, e.g. 30s, 500ms, 10m or 2h"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a number then ms, s, m or h"))?;
    let scale = match unit {
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        other => return Err(format!("`{text}`: unknown unit `{other}` (ms, s, m or h)")),
    };
    let ms = (value * scale).round();
    if !(1.0..=u64::MAX as f64).contains(&ms) {
        return Err(format!("`{text}`: must be at least 1ms"));
    }
    Ok(ms as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_print_back() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("1.5m"), Ok(90_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert!(parse_duration_ms("30").unwrap_err().0.contains("unit"));
        assert!(
            parse_duration_ms("3d")
                .unwrap_err()
                .0
                .contains("unknown unit")
        );
        assert!(parse_duration_ms("0s").is_err());
        assert!(parse_duration_ms("s").is_err());
        assert_eq!(format_ms(600_000), "10m");
        assert_eq!(format_ms(1500), "1.5s");
        assert_eq!(format_ms(10_000), "10s");
        assert_eq!(format_ms(250), "250ms");
        assert!(Limits::default().summary().contains("wall 10m per task"));
    }
}
