//! The performance DB: per model × task type, what calls cost and how they went.
//!
//! A SQLite file beside the ledger (`<ledger>-perf.db`). Each finished LLM call adds a
//! row (tokens in/out, latency, cost, error); validators (a later layer) add quality
//! scores through [`PerfDb::record_quality`]; version changes reported by providers are
//! kept too. The scheduler predicts a call's tokens from the history of the same model
//! and task type, and blends quality scores into the model's prior. Aggregates live in
//! memory (loaded at open) so a decision never waits for SQL. This is statistics, not
//! the write-ahead record — `synchronous = NORMAL` is enough here.

use rusqlite::{Connection, params};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
    pub ok: bool,
    pub error: Option<String>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub latency_ms: u64,
    pub cost_usd: f64,
}

/// The performance database.
pub struct PerfDb {
    path: PathBuf,
    conn: Mutex<Connection>,
    calls: Mutex<HashMap<(String, String), Aggregate>>,
    quality: Mutex<HashMap<String, (u64, f64)>>,
}

/// Path of the performance DB that goes with a ledger file.
pub fn path_for_ledger(ledger: &Path) -> PathBuf {
    let stem = ledger
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "agentflow".into());
    ledger.with_file_name(format!("{stem}-perf.db"))
}

impl PerfDb {
    /// Open (or create) the DB and load its aggregates.
    pub fn open(path: &Path) -> anyhow::Result<PerfDb> {
        let conn = Connection::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open performance DB {}: {e}", path.display()))?;
        conn.execute_batch(SCHEMA)?;
        let mut calls = HashMap::new();
        {
            let mut stmt = conn.prepare(
                "SELECT model, task_type, COUNT(*), SUM(1 - ok), SUM(tokens_in), SUM(tokens_out), SUM(latency_ms), SUM(cost_usd)
                 FROM calls GROUP BY model, task_type",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                    Aggregate {
                        calls: r.get::<_, i64>(2)? as u64,
                        errors: r.get::<_, i64>(3)? as u64,
                        tokens_in: r.get::<_, i64>(4)? as u64,
                        tokens_out: r.get::<_, i64>(5)? as u64,
                        latency_ms: r.get::<_, i64>(6)? as u64,
                        cost_usd: r.get(7)?,
                    },
                ))
            })?;
            for row in rows {
                let (k, v) = row?;
                calls.insert(k, v);
            }
        }
        let mut quality = HashMap::new();
        {
            let mut stmt =
                conn.prepare("SELECT model, COUNT(*), SUM(score) FROM quality GROUP BY model")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    (r.get::<_, i64>(1)? as u64, r.get::<_, f64>(2)?),
                ))
            })?;
            for row in rows {
                let (k, v) = row?;
                quality.insert(k, v);
            }
        }
        Ok(PerfDb {
            path: path.to_owned(),
            conn: Mutex::new(conn),
            calls: Mutex::new(calls),
            quality: Mutex::new(quality),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Record one finished call.
    pub fn record_call(&self, stat: &CallStat<'_>) {
        {
            let mut calls = self.calls.lock().unwrap();
            let agg = calls
                .entry((stat.model.to_string(), stat.task_type.to_string()))
                .or_default();
            agg.calls += 1;
            agg.errors += u64::from(!stat.ok);
            agg.tokens_in += stat.tokens_in;
            agg.tokens_out += stat.tokens_out;
            agg.latency_ms += stat.latency_ms;
            agg.cost_usd += stat.cost_usd;
        }
        let conn = self.conn.lock().unwrap();
        let result = conn.execute(
            "INSERT INTO calls (model, task_type, ok, error, tokens_in, tokens_out, latency_ms, cost_usd, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                stat.model,
                stat.task_type,
                stat.ok,
                stat.error,
                stat.tokens_in as i64,
                stat.tokens_out as i64,
                stat.latency_ms as i64,
                stat.cost_usd,
                crate::ledger::now_ms()
            ],
        );
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot write performance DB");
        }
    }

    /// Record a quality score (0..1) for a model's output on a task type.
    pub fn record_quality(
        &self,
        model: &str,
        task_type: &str,
        score: f64,
        source: &str,
    ) -> anyhow::Result<()> {
        if !(0.0..=1.0).contains(&score) {
            anyhow::bail!("quality score must be within 0..1, got {score}");
        }
        {
            let mut q = self.quality.lock().unwrap();
            let e = q.entry(model.to_string()).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += score;
        }
        self.conn.lock().unwrap().execute(
            "INSERT INTO quality (model, task_type, score, source, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![model, task_type, score, source, crate::ledger::now_ms()],
        )?;
        Ok(())
    }

    /// Record a model version change.
    pub fn record_version(&self, model: &str, previous: &str, observed: &str) {
        let _ = self.conn.lock().unwrap().execute(
            "INSERT INTO model_versions (model, previous, observed, at) VALUES (?1, ?2, ?3, ?4)",
            params![model, previous, observed, crate::ledger::now_ms()],
        );
    }

    /// Save a model's health snapshot (JSON) for `agentflow models`.
    pub fn save_health(&self, model: &str, snapshot: &serde_json::Value) {
        let _ = self.conn.lock().unwrap().execute(
            "INSERT INTO health (model, snapshot, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (model) DO UPDATE SET snapshot = excluded.snapshot, updated_at = excluded.updated_at",
            params![model, snapshot.to_string(), crate::ledger::now_ms()],
        );
    }

    /// History of a model on a task type.
    pub fn aggregate(&self, model: &str, task_type: &str) -> Aggregate {
        self.calls
            .lock()
            .unwrap()
            .get(&(model.to_string(), task_type.to_string()))
            .copied()
            .unwrap_or_default()
    }

    /// Quality: the prior blended with recorded scores (the prior counts as two scores).
    pub fn quality(&self, model: &str, prior: f64) -> f64 {
        match self.quality.lock().unwrap().get(model) {
            Some((n, sum)) => (prior * 2.0 + sum) / (2.0 + *n as f64),
            None => prior,
        }
    }
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

/// Read the stored statistics of `model`.
pub fn stored_stats(conn: &Connection, model: &str) -> rusqlite::Result<StoredStats> {
    let now = crate::ledger::now_ms();
    let mut s = conn.query_row(
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
    (s.tokens_last_minute, s.requests_last_minute) = conn.query_row(
        "SELECT COALESCE(SUM(tokens_in + tokens_out), 0), COUNT(*) FROM calls WHERE model = ?1 AND at >= ?2",
        params![model, now - 60_000],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
    )?;
    s.quality_scores = conn.query_row(
        "SELECT COUNT(*) FROM quality WHERE model = ?1",
        [model],
        |r| r.get::<_, i64>(0),
    )? as u64;
    let mut stmt = conn.prepare(
        "SELECT previous, observed, at FROM model_versions WHERE model = ?1 ORDER BY id",
    )?;
    s.version_changes = stmt
        .query_map([model], |r| {
            Ok(serde_json::json!({ "previous": r.get::<_, String>(0)?, "observed": r.get::<_, String>(1)?, "at": r.get::<_, i64>(2)? }))
        })?
        .collect::<Result<_, _>>()?;
    s.health = conn
        .query_row(
            "SELECT snapshot FROM health WHERE model = ?1",
            [model],
            |r| r.get::<_, String>(0),
        )
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    Ok(s)
}

impl PerfDb {
    /// All in-memory aggregates.
    pub fn all_aggregates(&self) -> Vec<((String, String), Aggregate)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}
