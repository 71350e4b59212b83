//! What the ledger fails with: [`LedgerError`] for its operations, and [`SqlError`] /
//! [`SqlResult`] for its statements — the error of the closures passed to
//! [`Ledger::write`](super::Ledger::write) and of the typed statement functions, so
//! callers need not name the SQLite library.

use std::path::PathBuf;

/// The error a ledger statement fails with.
pub type SqlError = rusqlite::Error;

/// The result of a ledger statement.
pub type SqlResult<T> = Result<T, SqlError>;

/// Errors from the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("ledger commit failed: {0}")]
    Commit(String),
    #[error("ledger writer has stopped")]
    WriterGone,
    #[error("cannot open ledger at {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "ledger at {path} is unversioned and its meta table says schema version {found}; \
         this agentflow migrates only unversioned ledgers of schema 2 (is it an agentflow ledger?)"
    )]
    SchemaVersion { path: PathBuf, found: String },
    #[error(
        "ledger schema version {found} is newer than this agentflow (knows up to {known}): \
         {path} was written by a newer agentflow; use that one"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error(
        "ledger at {path} is damaged: table `{table}` is missing (schema version {version}); \
         refusing to use it, since replaying without its record would re-run recorded calls live; \
         restore it from a backup (`agentflow check {path}` shows what is wrong)"
    )]
    MissingTable {
        path: PathBuf,
        table: &'static str,
        version: i64,
    },
    #[error(
        "ledger at {path} failed its integrity check (PRAGMA quick_check: {detail}); \
         refusing to replay from it; restore it from a backup (`agentflow check {path}` shows what is wrong)"
    )]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "could not checkpoint the ledger's WAL into {path} (another process is still using it); \
         its runs are safe in {path}-wal until that process exits"
    )]
    CheckpointBusy { path: PathBuf },
    #[error("no ledger at {path} (check the path; run an agent first to create one)")]
    NoLedger { path: PathBuf },
    #[error("cannot create a ledger at {path}: directory {dir} does not exist (create it first)")]
    NoDirectory { path: PathBuf, dir: PathBuf },
    #[error("run id prefix `{prefix}` is ambiguous: it matches {}{} (give more characters)",
            candidates.join(", "), if *more { ", …" } else { "" })]
    AmbiguousRun {
        prefix: String,
        candidates: Vec<String>,
        more: bool,
    },
    #[error("backup target {path} exists: pick a new file (a backup never overwrites one)")]
    BackupExists { path: PathBuf },
    #[error(
        "a PostgreSQL ledger is backed up by PostgreSQL: `pg_dump` (one consistent snapshot \
         while workers write), or the server's base backups and WAL archiving"
    )]
    PostgresBackup,
}
