//! The ledger's SQLite schema, created (idempotently) when a ledger is opened.
//!
//! The README documents these tables for operators who query the ledger with
//! `sqlite3`; keep the two in step. Timestamps are milliseconds since the Unix epoch.

/// Bumped on every incompatible schema change.
pub const SCHEMA_VERSION: i64 = 2;

/// Connection settings: WAL so readers never block the writer, `synchronous=FULL` so a
/// committed append survives power loss, foreign keys on.
pub const PRAGMAS: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
PRAGMA foreign_keys = ON;
PRAGMA busy_timeout = 5000;
";

/// Tables and indexes.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS runs (
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

CREATE TABLE IF NOT EXISTS tasks (
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

CREATE TABLE IF NOT EXISTS events (
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
CREATE INDEX IF NOT EXISTS events_by_kind ON events(run_id, kind);

CREATE TABLE IF NOT EXISTS blobs (
    hash TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    data BLOB NOT NULL
);

CREATE TABLE IF NOT EXISTS approvals (
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

CREATE TABLE IF NOT EXISTS kv (
    run_id     TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE TABLE IF NOT EXISTS checkpoints (
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
CREATE TABLE IF NOT EXISTS workspace_files (
    run_id       TEXT    NOT NULL,
    task_id      INTEGER NOT NULL,
    path         TEXT    NOT NULL,
    base_hash    TEXT,
    content_hash TEXT    NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (run_id, task_id, path)
);

-- Merges of a child's work into its parent: one row per changed file (or text proposal).
CREATE TABLE IF NOT EXISTS merges (
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
CREATE VIEW IF NOT EXISTS event_summary AS
    SELECT run_id, task_id, seq, kind, status, model, tokens_in, tokens_out, cost_usd,
           finished_at - started_at AS duration_ms, substr(request, 1, 120) AS request_head
    FROM events;

-- Validation failures waiting for a human's decision (`[retry] ... = human`).
CREATE TABLE IF NOT EXISTS reviews (
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
CREATE TABLE IF NOT EXISTS task_validators (
    run_id     TEXT    NOT NULL,
    task_id    INTEGER NOT NULL,
    validators TEXT    NOT NULL,
    PRIMARY KEY (run_id, task_id)
);
";
