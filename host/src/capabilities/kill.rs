//! Why the host stopped an agent: the limit it broke, as the guest's trap and the
//! task's error name it.

/// Why the host stopped an agent, when it did.
#[derive(Clone, Debug, PartialEq)]
pub enum Kill {
    /// Burnt its CPU time (`limits.cpu_ms`).
    Cpu { limit_ms: u64 },
    /// Tried to grow memory past `limits.memory_mb`.
    Memory { limit_mb: u64, wanted_bytes: usize },
    /// Made more than `limits.max_host_calls` host calls.
    HostCalls { limit: u64 },
    /// Read the clock or random so much between two host calls that the reads the
    /// host holds for the ledger passed `limits.max_nondet_bytes`.
    NondetBuffer { limit_bytes: usize },
    /// Its host calls' records passed `limits.max_ledger_bytes`.
    LedgerBytes { limit_bytes: u64 },
}

impl std::fmt::Display for Kill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kill::Cpu { limit_ms } => {
                write!(f, "CPU time limit exceeded ({limit_ms} ms, limits.cpu_ms)")
            }
            Kill::Memory {
                limit_mb,
                wanted_bytes,
            } => write!(
                f,
                "memory limit exceeded (tried to grow to {} MiB, limit {limit_mb} MiB, limits.memory_mb)",
                wanted_bytes >> 20
            ),
            Kill::HostCalls { limit } => {
                write!(
                    f,
                    "host call limit exceeded ({limit} calls, limits.max_host_calls)"
                )
            }
            Kill::NondetBuffer { limit_bytes } => write!(
                f,
                "clock/random read limit exceeded ({limit_bytes} bytes of reads held by the host \
                 between two host calls, limits.max_nondet_bytes)"
            ),
            Kill::LedgerBytes { limit_bytes } => write!(
                f,
                "ledger quota exceeded (its host calls recorded more than {limit_bytes} bytes, \
                 limits.max_ledger_bytes)"
            ),
        }
    }
}
