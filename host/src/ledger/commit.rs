//! How a ledger write is committed ([`Commit`]), and the `[ledger]` settings that
//! decide what a durable commit survives ([`LedgerConfig`], [`SyncMode`]).

/// How a write is committed, and what its caller waits for (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// Wait until committed and, with `sync = "full"`, fsynced.
    Durable,
    /// Wait until committed (visible to readers), not for an fsync.
    Visible,
    /// Do not wait: committed with the next group, within [`LINGER`].
    Buffered,
}

/// `[ledger]`: how the ledger file is written.
#[derive(Clone, Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// When a durable write is on disk: see [`SyncMode`].
    #[serde(default)]
    pub sync: SyncMode,
}

/// `[ledger] sync`: SQLite's `synchronous` setting for durable writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Every durable commit fsyncs the write-ahead log: a durable write survives a
    /// process crash *and* a power loss or kernel panic (default).
    #[default]
    Full,
    /// No fsync on commit (`synchronous = NORMAL` in WAL mode): a committed write
    /// survives a crash of the host process (it is in the OS's page cache), but a
    /// power loss may lose the last commits — the ledger stays consistent, never
    /// corrupt. The exactly-once guarantee for effects then holds for process
    /// crashes only.
    Normal,
}

/// How long the writer keeps a group of buffered writes open for more to join
/// before it commits them, when no caller is waiting.
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(2);
