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

#[cfg(test)]
mod tests {
    use crate::ledger::{Ledger, NewRun, NewTask};

    /// Item 3 of issue 18: the run row, its root task and the component blob reach the
    /// file in one commit. `PRAGMA data_version`, read on another connection, moves
    /// once for each commit made by someone else.
    #[test]
    fn a_run_starts_with_one_commit_holding_its_row_its_root_task_and_its_component() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path().join("l.db")).unwrap();
        let reader = ledger.reader().unwrap();
        let version = || -> i64 {
            reader
                .query_row("PRAGMA data_version", [], |r| r.get(0))
                .unwrap()
        };
        let before = version();
        let component: std::sync::Arc<[u8]> = b"\0asm-not-really".to_vec().into();
        let hash = crate::ledger::blobs::sha256_hex(&component);
        let run = NewRun {
            run_id: "r1".into(),
            agent: "a".into(),
            component_hash: hash.clone(),
            input: "in".into(),
            config_json: "{}".into(),
            context_hash: "h".into(),
            budget_usd: None,
            component,
        };
        let root = NewTask {
            run_id: "r1".into(),
            task_id: 1,
            parent_id: None,
            depth: 0,
            agent: "a".into(),
            component_hash: hash.clone(),
            description: "root".into(),
            input: "in".into(),
            spawn_key: None,
            dedup_key: None,
            depends_on: "[]".into(),
            component: None,
            budget_usd: None,
            resources: "[]".into(),
            timeout_ms: None,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(ledger.create_run(run, root)).unwrap();
        assert_eq!(version() - before, 1, "the run's start took one commit");
        let count = |sql: &str| -> i64 { reader.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("SELECT COUNT(*) FROM runs WHERE run_id = 'r1'"), 1);
        assert_eq!(count("SELECT COUNT(*) FROM tasks WHERE run_id = 'r1'"), 1);
        let blobs: i64 = reader
            .query_row("SELECT COUNT(*) FROM blobs WHERE hash = ?1", [&hash], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(blobs, 1);
    }
}
