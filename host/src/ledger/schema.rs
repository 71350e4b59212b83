//! The ledger's SQLite schema and its numbered migrations.
//!
//! The version lives in `PRAGMA user_version`. A brand new file gets [`SCHEMA`], the
//! tables of version 2 and the `agent_traces` view of version 3 (redefined at version 4,
//! [`super::traces`]) at
//! [`SCHEMA_VERSION`]; an older ledger is brought up by [`MIGRATIONS`], one transaction
//! each. Nothing is ever re-created behind the operator's back: a ledger whose version
//! is newer than this host knows, or that lacks a table its version must have, is
//! refused (replaying without its record would re-run recorded calls live).
//!
//! Hand-written rather than `rusqlite_migration`. That crate's model is "version N =
//! the first N migrations ran, from an empty file", which is not this ledger's: version 0
//! is either a new file (which gets [`SCHEMA`] whole) or an unversioned ledger of an
//! earlier host (migrated, after its `meta` row is checked), and a new file never
//! replays history. It also reads `user_version` before opening its (deferred)
//! transaction, while here the version is read again inside `BEGIN IMMEDIATE`, because
//! a host and the `agentflow` CLI may open one ledger at once. Its versions that build
//! with this rusqlite (0.37) stop at 2.3. What is left for it to do is the loop in
//! `upgrade`.
//!
//! The README documents these tables for operators who query the ledger with
//! `sqlite3`; keep the two in step. Timestamps are milliseconds since the Unix epoch.

use super::Connection;
use super::LedgerError;
use rusqlite::OptionalExtension;
use std::path::Path;

/// The schema version this host writes (`PRAGMA user_version`). Version 0 is the
/// unversioned ledger of hosts from before migrations (its tables match version 1).
pub const SCHEMA_VERSION: i64 = 5;

/// The `meta.schema_version` value unversioned ledgers carry; any other value there
/// means the file was not written by an agentflow this host can migrate.
const LEGACY_META_VERSION: &str = "2";

/// One step of the schema's history: run `sql()` on a ledger at version `to - 1`, which
/// then is at version `to` and has `adds_tables` too. (A function, because a view's
/// SQL names event kinds, which are built from [`super::EventKind`].) Its SQL creates
/// only what is missing (`IF NOT EXISTS`): a new file runs every migration after
/// [`SCHEMA`].
pub struct Migration {
    pub to: i64,
    pub what: &'static str,
    pub sql: fn() -> String,
    pub adds_tables: &'static [&'static str],
}

/// Every migration, in order; the last one's `to` is [`SCHEMA_VERSION`].
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        to: 1,
        what: "version the ledger (user_version) and restore its derived index and view",
        sql: || {
            "CREATE INDEX IF NOT EXISTS events_by_kind ON events(run_id, kind);
          CREATE VIEW IF NOT EXISTS event_summary AS
              SELECT run_id, task_id, seq, kind, status, model, tokens_in, tokens_out, cost_usd,
                     finished_at - started_at AS duration_ms, substr(request, 1, 120) AS request_head
              FROM events;".to_string()
        },
        adds_tables: &[],
    },
    Migration {
        to: 2,
        what: "leases: which host holds each unfinished run (interrupted runs); operators' cancel requests",
        sql: || LEASES.to_string(),
        adds_tables: &["leases", "cancel_requests"],
    },
    Migration {
        to: 3,
        what: "the agent_traces view: one row per task with its reasoning trace",
        sql: super::traces::view_sql,
        adds_tables: &[],
    },
    Migration {
        to: 4,
        what: "agent_traces reads each task's models through its own events (30x faster on big runs)",
        sql: || {
            format!(
                "DROP VIEW IF EXISTS {};\n{}",
                super::traces::VIEW,
                super::traces::view_sql()
            )
        },
        adds_tables: &[],
    },
    Migration {
        to: 5,
        what: "installed_tools: the tool components installed with `agentflow tools install`",
        sql: || super::installed_tools::TABLE_SQL.to_string(),
        adds_tables: &["installed_tools"],
    },
];

/// Version 2's tables: a run's host and its last heartbeat ([`super::leases`]), and
/// operators' cancel requests for a live host ([`super::cancels`]).
const LEASES: &str = "CREATE TABLE IF NOT EXISTS leases (
    run_id       TEXT    PRIMARY KEY,
    host         TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cancel_requests (
    id           INTEGER PRIMARY KEY,
    run_id       TEXT    NOT NULL,
    task_id      INTEGER NOT NULL,
    note         TEXT,
    requested_at INTEGER NOT NULL,
    done_at      INTEGER
);";

/// The tables of an unversioned (version 0) ledger, which hold its record.
const BASE_TABLES: &[&str] = &[
    "meta",
    "runs",
    "tasks",
    "events",
    "blobs",
    "approvals",
    "kv",
    "checkpoints",
    "workspace_files",
    "merges",
    "reviews",
    "task_validators",
];

/// The tables a ledger at `version` must have.
pub fn expected_tables(version: i64) -> Vec<&'static str> {
    let added = MIGRATIONS
        .iter()
        .filter(|m| m.to <= version)
        .flat_map(|m| m.adds_tables.iter().copied());
    BASE_TABLES.iter().copied().chain(added).collect()
}

/// Whether this host knows schema `version` (0, the unversioned ledger, up to
/// [`SCHEMA_VERSION`]).
pub fn is_known(version: i64) -> bool {
    (0..=SCHEMA_VERSION).contains(&version)
}

/// The ledger's schema version (`PRAGMA user_version`; on PostgreSQL the newest row
/// of `agentflow_schema`, 0 without one).
pub fn version(conn: &Connection) -> rusqlite::Result<i64> {
    if conn.is_postgres() {
        return conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM agentflow_schema",
            [],
            |r| r.get(0),
        );
    }
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// The names of the ledger's tables.
pub fn tables(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let sql = if conn.is_postgres() {
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
    } else {
        "SELECT name FROM sqlite_master WHERE type = 'table'"
    };
    let mut stmt = conn.prepare(sql)?;
    let names = stmt.query_map([], |r| r.get(0))?;
    names.collect()
}

/// The first table a ledger at `version` must have but `conn` lacks.
pub fn missing_table(conn: &Connection, version: i64) -> rusqlite::Result<Option<&'static str>> {
    let present = tables(conn)?;
    Ok(expected_tables(version)
        .into_iter()
        .find(|t| !present.iter().any(|p| p == t)))
}

/// Bring the ledger at `path` to [`SCHEMA_VERSION`]: create the schema in a new file,
/// run pending migrations in an older one, refuse a newer or damaged one.
pub fn prepare(conn: &Connection, path: &Path) -> Result<(), LedgerError> {
    if let Connection::Postgres(pg) = conn {
        return super::db::prepare_postgres(pg, &path.to_string_lossy());
    }
    let found = version(conn)?;
    check_known(path, found)?;
    if found == SCHEMA_VERSION {
        return require_tables(conn, path, found);
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    match upgrade(conn, path) {
        Ok(()) => Ok(conn.execute_batch("COMMIT")?),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Refuse a version this host does not know.
fn check_known(path: &Path, found: i64) -> Result<(), LedgerError> {
    if !is_known(found) {
        return Err(LedgerError::NewerSchema {
            path: path.to_owned(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Refuse a ledger that lacks a table its version must have.
fn require_tables(conn: &Connection, path: &Path, version: i64) -> Result<(), LedgerError> {
    match missing_table(conn, version)? {
        Some(table) => Err(LedgerError::MissingTable {
            path: path.to_owned(),
            table,
            version,
        }),
        None => Ok(()),
    }
}

/// A new file's schema: [`SCHEMA`] (the version-1 tables), then what every migration
/// adds — each migration's SQL creates only what is missing (`IF NOT EXISTS`), so on
/// a new file it adds exactly its tables, indexes and views.
fn create_new(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    for m in MIGRATIONS {
        conn.execute_batch(&(m.sql)())?;
    }
    Ok(())
}

/// Inside the write transaction of [`prepare`] (another process may have migrated
/// the file meanwhile, so the version is read again).
fn upgrade(conn: &Connection, path: &Path) -> Result<(), LedgerError> {
    let found = version(conn)?;
    check_known(path, found)?;
    if found == 0 && tables(conn)?.is_empty() {
        create_new(conn)?;
        set_version(conn, SCHEMA_VERSION)?;
        return Ok(());
    }
    if found == 0 {
        check_legacy_meta(conn, path)?;
    }
    require_tables(conn, path, found)?;
    for m in MIGRATIONS.iter().filter(|m| m.to > found) {
        tracing::info!(ledger = %path.display(), to = m.to, what = m.what, "migrating the ledger");
        conn.execute_batch(&(m.sql)())?;
        set_version(conn, m.to)?;
    }
    require_tables(conn, path, SCHEMA_VERSION)
}

/// An unversioned ledger must carry the `meta.schema_version` every earlier host wrote.
fn check_legacy_meta(conn: &Connection, path: &Path) -> Result<(), LedgerError> {
    let has_meta = tables(conn)?.iter().any(|t| t == "meta");
    if !has_meta {
        return Ok(()); // reported by require_tables, naming the table
    }
    let value: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    match value {
        Some(v) if v != LEGACY_META_VERSION => Err(LedgerError::SchemaVersion {
            path: path.to_owned(),
            found: v,
        }),
        _ => Ok(()),
    }
}

fn set_version(conn: &Connection, version: i64) -> rusqlite::Result<()> {
    // PRAGMA takes no parameters; `version` is an integer, never text from outside.
    conn.execute_batch(&format!("PRAGMA user_version = {version}"))
}

/// Connection settings: WAL so readers never block the writer, `synchronous=FULL` so a
/// committed append survives power loss, foreign keys on.
pub const PRAGMAS: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
PRAGMA foreign_keys = ON;
PRAGMA busy_timeout = 5000;
";

/// The whole current schema, for a brand new ledger (no `IF NOT EXISTS`: a file that
/// already has tables goes through [`MIGRATIONS`] instead).
pub const SCHEMA: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE runs (
    run_id         TEXT PRIMARY KEY,
    agent          TEXT NOT NULL,
    component_hash TEXT NOT NULL,
    input          TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('running','completed','failed','cancelled')),
    output         TEXT,
    error          TEXT,
    config_json    TEXT NOT NULL,
    context_hash   TEXT NOT NULL,
    forked_from    TEXT,
    fork_seq       INTEGER,
    budget_usd     REAL,
    tokens_in      INTEGER NOT NULL DEFAULT 0,
    tokens_out     INTEGER NOT NULL DEFAULT 0,
    cost_usd       REAL    NOT NULL DEFAULT 0,
    started_at     INTEGER NOT NULL,
    finished_at    INTEGER
);

CREATE TABLE tasks (
    run_id         TEXT    NOT NULL REFERENCES runs(run_id),
    task_id        INTEGER NOT NULL,
    parent_id      INTEGER,
    depth          INTEGER NOT NULL,
    agent          TEXT    NOT NULL,
    component_hash TEXT    NOT NULL,
    description    TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('pending','running','completed','failed','cancelled')),
    input_hash     TEXT    NOT NULL REFERENCES blobs(hash),
    spawn_key      TEXT,
    dedup_key      TEXT,
    depends_on     TEXT    NOT NULL DEFAULT '[]',
    run_input_hash TEXT,
    budget_usd     REAL,
    resources      TEXT    NOT NULL DEFAULT '[]',
    timeout_ms     INTEGER,
    output         TEXT,
    error          TEXT,
    tokens_in      INTEGER NOT NULL DEFAULT 0,
    tokens_out     INTEGER NOT NULL DEFAULT 0,
    cost_usd       REAL    NOT NULL DEFAULT 0,
    host_calls     INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    started_at     INTEGER,
    finished_at    INTEGER,
    PRIMARY KEY (run_id, task_id),
    UNIQUE (run_id, spawn_key)
);

CREATE TABLE events (
    run_id       TEXT    NOT NULL,
    task_id      INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('ok','error')),
    request      TEXT    NOT NULL,
    response     TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,
    model        TEXT,
    tokens_in    INTEGER NOT NULL DEFAULT 0,
    tokens_out   INTEGER NOT NULL DEFAULT 0,
    cost_usd     REAL    NOT NULL DEFAULT 0,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER NOT NULL,
    PRIMARY KEY (run_id, task_id, seq),
    FOREIGN KEY (run_id, task_id) REFERENCES tasks(run_id, task_id)
);
CREATE INDEX events_by_kind ON events(run_id, kind);

CREATE TABLE blobs (
    hash TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    data BLOB NOT NULL
);

CREATE TABLE approvals (
    id                 INTEGER PRIMARY KEY,
    run_id             TEXT    NOT NULL,
    task_id            INTEGER NOT NULL,
    description        TEXT    NOT NULL,
    reason             TEXT    NOT NULL,
    estimated_cost_usd REAL    NOT NULL,
    status             TEXT    NOT NULL CHECK (status IN ('pending','approved','denied')),
    note               TEXT,
    requested_at       INTEGER NOT NULL,
    decided_at         INTEGER,
    UNIQUE (run_id, task_id)
);

CREATE TABLE kv (
    run_id     TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE TABLE checkpoints (
    run_id     TEXT    NOT NULL,
    task_id    INTEGER NOT NULL,
    number     INTEGER NOT NULL,
    event_seq  INTEGER NOT NULL,
    note       TEXT    NOT NULL,
    state_hash TEXT    NOT NULL REFERENCES blobs(hash),
    step       INTEGER NOT NULL,
    host_state TEXT    NOT NULL DEFAULT '{}',
    saved_at   INTEGER NOT NULL,
    PRIMARY KEY (run_id, task_id, number)
);

-- Copy-on-write views of the granted workspace: a task other than the root writes here,
-- not to the directory; reads fall through to the parent's view and finally the disk.
CREATE TABLE workspace_files (
    run_id       TEXT    NOT NULL,
    task_id      INTEGER NOT NULL,
    path         TEXT    NOT NULL,
    base_hash    TEXT,
    content_hash TEXT    NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (run_id, task_id, path)
);

-- Merges of a child's work into its parent: one row per changed file (or text proposal).
CREATE TABLE merges (
    id          INTEGER PRIMARY KEY,
    run_id      TEXT    NOT NULL,
    parent_task INTEGER NOT NULL,
    child_task  INTEGER NOT NULL,
    subject     TEXT    NOT NULL,
    category    TEXT    NOT NULL CHECK (category IN ('unchanged','trivial','semantic','critical')),
    status      TEXT    NOT NULL CHECK (status IN ('merged','pending','resolved')),
    base_hash   TEXT,
    ours_hash   TEXT,
    theirs_hash TEXT    NOT NULL,
    result_hash TEXT,
    reasoning   TEXT    NOT NULL,
    resolution  TEXT,
    created_at  INTEGER NOT NULL,
    decided_at  INTEGER,
    UNIQUE (run_id, parent_task, child_task, subject)
);

-- Events with their large strings resolved is what most queries want; see README.
CREATE VIEW event_summary AS
    SELECT run_id, task_id, seq, kind, status, model, tokens_in, tokens_out, cost_usd,
           finished_at - started_at AS duration_ms, substr(request, 1, 120) AS request_head
    FROM events;

-- Validation failures waiting for a human's decision (`[retry] ... = human`).
CREATE TABLE reviews (
    id           INTEGER PRIMARY KEY,
    run_id       TEXT    NOT NULL,
    task_id      INTEGER NOT NULL,
    attempt      INTEGER NOT NULL,
    validator    TEXT    NOT NULL,
    category     TEXT    NOT NULL,
    reason       TEXT    NOT NULL,
    output       TEXT    NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('pending','retry','rejected')),
    note         TEXT,
    requested_at INTEGER NOT NULL,
    decided_at   INTEGER,
    UNIQUE (run_id, task_id, attempt)
);

-- Validators a child carries from its spawn request (JSON array of ValidatorConfig).
CREATE TABLE task_validators (
    run_id     TEXT    NOT NULL,
    task_id    INTEGER NOT NULL,
    validators TEXT    NOT NULL,
    PRIMARY KEY (run_id, task_id)
);
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_one_by_one_up_to_the_current_version() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.to, i as i64 + 1, "migration {}: {}", i + 1, m.what);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.to), Some(SCHEMA_VERSION));
    }

    fn has_view(conn: &Connection, name: &str) -> bool {
        conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'view' AND name = ?1",
            [name],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            == 1
    }

    /// A task of run `r` whose one trace step reads back through `agent_traces`.
    fn trace_of_one_step(conn: &Connection) -> String {
        conn.execute_batch(&format!(
            "INSERT INTO runs (run_id, agent, component_hash, input, status, config_json,
                               context_hash, started_at)
                 VALUES ('r', 'a', 'c', '', 'running', '{{}}', 'h', 1);
             INSERT INTO blobs (hash, size, data) VALUES ('ih', 0, x'');
             INSERT INTO tasks (run_id, task_id, depth, agent, component_hash, description,
                                status, input_hash, created_at)
                 VALUES ('r', 1, 0, 'a', 'c', 'root', 'running', 'ih', 1);
             INSERT INTO events (run_id, task_id, seq, kind, status, request, response,
                                 request_hash, started_at, finished_at)
                 VALUES ('r', 1, 1, '{}', 'ok',
                         '{{\"step\":1,\"thought\":\"t\",\"action\":\"a\",\"observation\":\"o\",\"confidence\":1.0}}',
                         'null', 'x', 1, 1);",
            super::super::EventKind::TraceStep
        ))
        .unwrap();
        conn.query_row(
            "SELECT reasoning_trace FROM agent_traces WHERE task_id = '1'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    const ONE_STEP: &str =
        r#"[{"seq":1,"step":1,"thought":"t","action":"a","observation":"o","confidence":1.0}]"#;

    #[test]
    fn a_new_ledger_gets_the_agent_traces_view() {
        let conn = Connection::open_in_memory().unwrap();
        prepare(&conn, Path::new(":memory:")).unwrap();
        assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION);
        assert!(has_view(&conn, "agent_traces"));
        assert!(has_view(&conn, "event_summary"));
        assert_eq!(trace_of_one_step(&conn), ONE_STEP);
    }

    #[test]
    fn migrations_3_and_4_add_the_agent_traces_view_to_a_version_2_ledger() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(LEASES).unwrap();
        set_version(&conn, 2).unwrap();
        assert!(!has_view(&conn, "agent_traces"));
        prepare(&conn, Path::new(":memory:")).unwrap();
        assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION);
        assert!(has_view(&conn, "agent_traces"));
        assert_eq!(trace_of_one_step(&conn), ONE_STEP);
        // Preparing again (another process, a later open) leaves it as it is.
        prepare(&conn, Path::new(":memory:")).unwrap();
        assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn migration_4_redefines_a_version_3_view() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(LEASES).unwrap();
        let old = super::super::traces::view_sql().replace("+e.kind", "e.kind");
        conn.execute_batch(&old).unwrap();
        set_version(&conn, 3).unwrap();
        prepare(&conn, Path::new(":memory:")).unwrap();
        assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION);
        let sql: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'agent_traces'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(sql.contains("+e.kind"), "{sql}");
        assert_eq!(trace_of_one_step(&conn), ONE_STEP);
    }

    #[test]
    fn a_new_schema_has_every_expected_table_and_migrations_create_only_new_ones() {
        let conn = Connection::open_in_memory().unwrap();
        create_new(&conn).unwrap();
        assert_eq!(missing_table(&conn, SCHEMA_VERSION).unwrap(), None);
        for m in MIGRATIONS {
            for part in (m.sql)().split("CREATE TABLE ").skip(1) {
                let part = part.trim_start_matches("IF NOT EXISTS ");
                let name = part
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .next();
                assert!(
                    name.is_some_and(|n| m.adds_tables.contains(&n)),
                    "migration {} creates {name:?} without listing it in adds_tables",
                    m.to
                );
            }
        }
    }
}
