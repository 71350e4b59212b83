//! The performance DB: per model × task type, what LLM calls cost and how they went.
//!
//! A SQLite file beside the ledger (`<ledger>-perf.db`), separate from the write-ahead
//! record: statistics, kept with `synchronous = NORMAL`. Its tables: `calls` (one row per
//! finished call), `quality` (validators' scores), `model_versions` (version changes
//! providers reported) and `health` (each model's latest health snapshot). The scheduler
//! keeps the aggregates in memory (`crate::scheduler::perf`); this is their storage.

use super::{SqlResult, now_ms};
use rusqlite::{Connection, OpenFlags, params};
use serde::Serialize;
use std::path::Path;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA busy_timeout = 5000;
CREATE TABLE IF NOT EXISTS calls (
    id          INTEGER PRIMARY KEY,
    model       TEXT    NOT NULL,
    task_type   TEXT    NOT NULL,
    ok          INTEGER NOT NULL,
    error       TEXT,
    tokens_in   INTEGER NOT NULL,
    tokens_out  INTEGER NOT NULL,
    latency_ms  INTEGER NOT NULL,
    cost_usd    REAL    NOT NULL,
    at          INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_by_model ON calls(model, at);
CREATE TABLE IF NOT EXISTS quality (
    id        INTEGER PRIMARY KEY,
    model     TEXT NOT NULL,
    task_type TEXT NOT NULL,
    score     REAL NOT NULL,
    source    TEXT NOT NULL,
    at        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS model_versions (
    id       INTEGER PRIMARY KEY,
    model    TEXT NOT NULL,
    previous TEXT NOT NULL,
    observed TEXT NOT NULL,
    at       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS health (
    model       TEXT PRIMARY KEY,
    snapshot    TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
";

/// Running sums for one model × task type.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Aggregate {
    pub calls: u64,
    pub errors: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub latency_ms: u64,
    pub cost_usd: f64,
}

/// One finished call.
#[derive(Clone, Debug)]
pub struct CallStat<'a> {
    pub model: &'a str,
    pub task_type: &'a str,
    /// The agent that made the call (its component's or `[agents]` name; empty for
    /// calls the host makes itself).
    pub agent: &'a str,
    pub ok: bool,
    pub error: Option<String>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub latency_ms: u64,
    pub cost_usd: f64,
}

/// The totals of one model × task type, as stored.
#[derive(Clone, Debug)]
pub struct CallTotals {
    pub model: String,
    pub task_type: String,
    pub agent: String,
    pub totals: Aggregate,
}

/// The quality scores of one model on one task type, as stored.
#[derive(Clone, Debug)]
pub struct QualityTotals {
    pub model: String,
    pub task_type: String,
    pub scores: u64,
    pub sum: f64,
}

/// Per-model statistics read back from a performance DB file (for `agentflow models`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct StoredStats {
    pub calls: u64,
    pub errors: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: f64,
    pub avg_latency_ms: Option<u64>,
    pub tokens_last_minute: u64,
    pub requests_last_minute: u64,
    pub quality_scores: u64,
    pub version_changes: Vec<serde_json::Value>,
    pub health: Option<serde_json::Value>,
}

/// A buffered health snapshot: makes its JSON text when written.
type HealthText = Box<dyn FnOnce() -> String + Send>;

/// An open performance DB.
///
/// Finished calls (and health snapshots) are buffered and inserted in one transaction
/// per [`FLUSH_ROWS`] calls or [`FLUSH_AFTER`] (checked at the next call), at the end
/// of each run, and when the store is dropped:
/// an LLM call on the agents' path costs a push, not a commit. A crash loses at most
/// the buffered statistics, which only inform the scheduler's estimates.
pub struct PerfStore {
    conn: Connection,
    pending: std::cell::RefCell<Vec<PendingCall>>,
    /// Each model's latest health snapshot not yet written, with its time.
    pending_health: std::cell::RefCell<std::collections::HashMap<String, (HealthText, i64)>>,
    flushed_at: std::cell::Cell<std::time::Instant>,
}

/// Most finished calls buffered before they are inserted.
pub const FLUSH_ROWS: usize = 256;
/// Longest a finished call stays buffered while calls keep coming.
pub const FLUSH_AFTER: std::time::Duration = std::time::Duration::from_millis(250);

/// A finished call waiting to be inserted.
struct PendingCall {
    model: String,
    task_type: String,
    agent: String,
    ok: bool,
    error: Option<String>,
    tokens_in: u64,
    tokens_out: u64,
    latency_ms: u64,
    cost_usd: f64,
    at: i64,
}

impl PerfStore {
    /// Open (or create) the DB at `path`; [`PerfStore::create_tables`] makes it usable.
    pub fn open(path: &Path) -> SqlResult<PerfStore> {
        Ok(PerfStore::with(Connection::open(path)?))
    }

    /// Open an existing DB read-only (for `agentflow models`).
    pub fn open_read_only(path: &Path) -> SqlResult<PerfStore> {
        Ok(PerfStore::with(Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?))
    }

    /// Set the pragmas and create the tables that are missing.
    pub fn create_tables(&self) -> SqlResult<()> {
        self.conn.execute_batch(SCHEMA)?;
        // Added after the first release: which agent made each call.
        let has_agent: bool = self.conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('calls') WHERE name = 'agent'",
            [],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )?;
        if !has_agent {
            match self
                .conn
                .execute_batch("ALTER TABLE calls ADD COLUMN agent TEXT NOT NULL DEFAULT ''")
            {
                // Another process opening the same new file added it first (two
                // hosts of one PostgreSQL ledger starting together on a machine).
                Err(rusqlite::Error::SqliteFailure(_, Some(msg)))
                    if msg.starts_with("duplicate column name") => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// The stored totals per model × task type.
    pub fn call_totals(&self) -> SqlResult<Vec<CallTotals>> {
        self.flush()?;
        let mut stmt = self.conn.prepare(
            "SELECT model, task_type, COUNT(*), SUM(1 - ok), SUM(tokens_in), SUM(tokens_out), SUM(latency_ms), SUM(cost_usd), agent
             FROM calls GROUP BY model, task_type, agent",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(CallTotals {
                model: r.get(0)?,
                task_type: r.get(1)?,
                agent: r.get(8)?,
                totals: Aggregate {
                    calls: r.get::<_, i64>(2)? as u64,
                    errors: r.get::<_, i64>(3)? as u64,
                    tokens_in: r.get::<_, i64>(4)? as u64,
                    tokens_out: r.get::<_, i64>(5)? as u64,
                    latency_ms: r.get::<_, i64>(6)? as u64,
                    cost_usd: r.get(7)?,
                },
            })
        })?;
        rows.collect()
    }

    /// The stored quality scores per model.
    pub fn quality_totals(&self) -> SqlResult<Vec<QualityTotals>> {
        let mut stmt = self.conn.prepare(
            "SELECT model, task_type, COUNT(*), SUM(score) FROM quality GROUP BY model, task_type",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(QualityTotals {
                model: r.get(0)?,
                task_type: r.get(1)?,
                scores: r.get::<_, i64>(2)? as u64,
                sum: r.get(3)?,
            })
        })?;
        rows.collect()
    }

    fn with(conn: Connection) -> PerfStore {
        PerfStore {
            conn,
            pending: Default::default(),
            pending_health: Default::default(),
            flushed_at: std::cell::Cell::new(std::time::Instant::now()),
        }
    }

    /// Record one finished call (buffered: see [`PerfStore`]).
    pub fn insert_call(&self, stat: &CallStat<'_>) -> SqlResult<()> {
        let len = {
            let mut pending = self.pending.borrow_mut();
            pending.push(PendingCall {
                model: stat.model.to_string(),
                task_type: stat.task_type.to_string(),
                agent: stat.agent.to_string(),
                ok: stat.ok,
                error: stat.error.clone(),
                tokens_in: stat.tokens_in,
                tokens_out: stat.tokens_out,
                latency_ms: stat.latency_ms,
                cost_usd: stat.cost_usd,
                at: now_ms(),
            });
            pending.len()
        };
        if len >= FLUSH_ROWS || self.flushed_at.get().elapsed() >= FLUSH_AFTER {
            self.flush()?;
        }
        Ok(())
    }

    /// Insert the buffered finished calls, in one transaction.
    pub fn flush(&self) -> SqlResult<()> {
        self.flushed_at.set(std::time::Instant::now());
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        let health = std::mem::take(&mut *self.pending_health.borrow_mut());
        if pending.is_empty() && health.is_empty() {
            return Ok(());
        }
        let tx = self.conn.unchecked_transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO calls (model, task_type, ok, error, tokens_in, tokens_out, latency_ms, cost_usd, at, agent)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for c in &pending {
                insert.execute(params![
                    c.model,
                    c.task_type,
                    c.ok,
                    c.error,
                    c.tokens_in as i64,
                    c.tokens_out as i64,
                    c.latency_ms as i64,
                    c.cost_usd,
                    c.at,
                    c.agent
                ])?;
            }
            let mut upsert = tx.prepare_cached(
                "INSERT INTO health (model, snapshot, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (model) DO UPDATE SET snapshot = excluded.snapshot, updated_at = excluded.updated_at",
            )?;
            for (model, (snapshot, at)) in health {
                upsert.execute(params![model, snapshot(), at])?;
            }
        }
        tx.commit()
    }

    /// Record a quality score of a model's output on a task type.
    pub fn insert_quality(
        &self,
        model: &str,
        task_type: &str,
        score: f64,
        source: &str,
    ) -> SqlResult<()> {
        self.conn.execute(
            "INSERT INTO quality (model, task_type, score, source, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![model, task_type, score, source, now_ms()],
        )?;
        Ok(())
    }

    /// Record a model version change.
    pub fn insert_version(&self, model: &str, previous: &str, observed: &str) -> SqlResult<()> {
        self.conn.execute(
            "INSERT INTO model_versions (model, previous, observed, at) VALUES (?1, ?2, ?3, ?4)",
            params![model, previous, observed, now_ms()],
        )?;
        Ok(())
    }

    /// Save a model's health snapshot, replacing the previous one; `snapshot` makes its
    /// JSON text.
    ///
    /// Buffered like finished calls: only each model's latest snapshot is written (and
    /// only that one's text made), at the next flush.
    pub fn save_health(
        &self,
        model: &str,
        snapshot: impl FnOnce() -> String + Send + 'static,
    ) -> SqlResult<()> {
        let entry = (Box::new(snapshot) as HealthText, now_ms());
        let mut pending = self.pending_health.borrow_mut();
        match pending.get_mut(model) {
            Some(slot) => *slot = entry,
            None => {
                pending.insert(model.to_string(), entry);
            }
        }
        Ok(())
    }

    /// The stored statistics of `model`.
    pub fn stored_stats(&self, model: &str) -> SqlResult<StoredStats> {
        self.flush()?;
        let now = now_ms();
        let mut s = self.conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(1 - ok), 0), COALESCE(SUM(tokens_in), 0), COALESCE(SUM(tokens_out), 0),
                    COALESCE(SUM(cost_usd), 0), AVG(CASE WHEN ok THEN latency_ms END)
             FROM calls WHERE model = ?1",
            [model],
            |r| {
                Ok(StoredStats {
                    calls: r.get::<_, i64>(0)? as u64,
                    errors: r.get::<_, i64>(1)? as u64,
                    tokens_in: r.get::<_, i64>(2)? as u64,
                    tokens_out: r.get::<_, i64>(3)? as u64,
                    cost_usd: r.get(4)?,
                    avg_latency_ms: r.get::<_, Option<f64>>(5)?.map(|v| v as u64),
                    ..Default::default()
                })
            },
        )?;
        (s.tokens_last_minute, s.requests_last_minute) = self.conn.query_row(
            "SELECT COALESCE(SUM(tokens_in + tokens_out), 0), COUNT(*) FROM calls WHERE model = ?1 AND at >= ?2",
            params![model, now - 60_000],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )?;
        s.quality_scores = self.conn.query_row(
            "SELECT COUNT(*) FROM quality WHERE model = ?1",
            [model],
            |r| r.get::<_, i64>(0),
        )? as u64;
        let mut stmt = self.conn.prepare(
            "SELECT previous, observed, at FROM model_versions WHERE model = ?1 ORDER BY id",
        )?;
        s.version_changes = stmt
            .query_map([model], |r| {
                Ok(serde_json::json!({ "previous": r.get::<_, String>(0)?, "observed": r.get::<_, String>(1)?, "at": r.get::<_, i64>(2)? }))
            })?
            .collect::<Result<_, _>>()?;
        s.health = self
            .conn
            .query_row(
                "SELECT snapshot FROM health WHERE model = ?1",
                [model],
                |r| r.get::<_, String>(0),
            )
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        Ok(s)
    }
}

impl Drop for PerfStore {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "cannot write the performance DB's last calls");
        }
    }
}
