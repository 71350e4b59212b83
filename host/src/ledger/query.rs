//! Read-side of the ledger: runs, tasks and events for the CLI and tests.
//!
//! Opens its own read-only connections (WAL lets them read while the writer
//! writes). Nothing here writes.

use super::Connection;
use super::{EventKind, LedgerError, Status, blobs};
use rusqlite::{OpenFlags, OptionalExtension, params};
use serde::Serialize;
use std::path::Path;

pub use super::reviews::{ApprovalRow, approval_of, approvals};

/// Open a read-only connection to the ledger at `path`.
pub fn open_reader(path: &Path) -> Result<Connection, LedgerError> {
    if let Some(url) = super::db::postgres_url(path) {
        return super::db::open_postgres(url);
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| LedgerError::Open {
        path: path.to_owned(),
        source,
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// One row of `runs`.
#[derive(Clone, Debug, Serialize)]
pub struct RunRow {
    pub run_id: String,
    pub agent: String,
    pub component_hash: String,
    pub input: String,
    pub status: Status,
    pub output: Option<String>,
    pub error: Option<String>,
    pub budget_usd: Option<f64>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// The run this one is a fork of (`agentflow fork`), and the root event seq it was
    /// forked at.
    pub forked_from: Option<String>,
    pub fork_seq: Option<u64>,
}

/// Which runs [`runs`] lists: at most `limit`, newest first, started at or after
/// `since_ms` (epoch ms), with this status, of this agent.
#[derive(Clone, Debug)]
pub struct RunFilter {
    pub limit: usize,
    pub since_ms: Option<i64>,
    pub status: Option<Status>,
    pub agent: Option<String>,
}

impl RunFilter {
    /// The newest `limit` runs, whatever they are.
    pub fn newest(limit: usize) -> RunFilter {
        RunFilter {
            limit,
            since_ms: None,
            status: None,
            agent: None,
        }
    }
}

/// One row of `tasks`, plus the model it used most.
#[derive(Clone, Debug, Serialize)]
pub struct TaskRow {
    pub task_id: u64,
    pub parent_id: Option<u64>,
    pub depth: u32,
    pub agent: String,
    pub description: String,
    pub status: Status,
    pub output: Option<String>,
    pub error: Option<String>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    pub host_calls: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub model: Option<String>,
}

/// One row of `events`, with blob references resolved.
#[derive(Clone, Debug, Serialize)]
pub struct EventRow {
    pub task_id: u64,
    pub seq: u64,
    pub kind: EventKind,
    pub ok: bool,
    /// Hash of the call's identity, used to match calls on replay.
    pub request_hash: String,
    pub request: serde_json::Value,
    pub response: serde_json::Value,
    pub model: Option<String>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    pub started_at: i64,
    pub finished_at: i64,
}

const RUN_COLUMNS: &str = "run_id, agent, component_hash, input, status, output, error, budget_usd,
    tokens_in, tokens_out, cost_usd, started_at, finished_at, forked_from, fork_seq";

fn run_row(r: &super::db::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        run_id: r.get(0)?,
        agent: r.get(1)?,
        component_hash: r.get(2)?,
        input: r.get(3)?,
        status: r.get(4)?,
        output: r.get(5)?,
        error: r.get(6)?,
        budget_usd: r.get(7)?,
        tokens_in: r.get(8)?,
        tokens_out: r.get(9)?,
        cost_usd: r.get(10)?,
        started_at: r.get(11)?,
        finished_at: r.get(12)?,
        forked_from: r.get(13)?,
        fork_seq: r.get::<_, Option<i64>>(14)?.map(|s| s as u64),
    })
}

/// The runs `filter` selects, newest first; a `running` run whose host stopped shows
/// as [`Status::Interrupted`] (and `--status running` / `interrupted` tell them apart).
pub fn runs(conn: &Connection, filter: &RunFilter) -> Result<Vec<RunRow>, LedgerError> {
    // `interrupted` is never stored: those runs are `running` rows with a stale lease,
    // told apart after the read, so the limit is applied after it too.
    let (stored, split) = match filter.status {
        Some(Status::Interrupted) | Some(Status::Running) => (Some(Status::Running), true),
        other => (other, false),
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT {RUN_COLUMNS} FROM runs
         WHERE (CAST(?2 AS BIGINT) IS NULL OR started_at >= ?2) AND (CAST(?3 AS TEXT) IS NULL OR status = ?3)
           AND (CAST(?4 AS TEXT) IS NULL OR agent = ?4)
         ORDER BY started_at DESC, rowid DESC LIMIT ?1"
    ))?;
    let limit = if split {
        i64::MAX // no limit
    } else {
        i64::try_from(filter.limit).unwrap_or(i64::MAX)
    };
    let mut rows: Vec<RunRow> = stmt
        .query_map(
            params![limit, filter.since_ms, stored, filter.agent],
            run_row,
        )?
        .collect::<Result<_, _>>()?;
    super::leases::mark_interrupted(conn, &mut rows)?;
    if split {
        rows.retain(|r| Some(r.status) == filter.status);
        rows.truncate(filter.limit);
    }
    Ok(rows)
}

/// One run by id, or by a unique prefix of its id.
pub fn run(conn: &Connection, id_or_prefix: &str) -> Result<Option<RunRow>, LedgerError> {
    // A literal prefix comparison: `%` and `_` in what the user typed are characters,
    // not wildcards.
    const SHOWN: usize = 5;
    let mut stmt = conn.prepare(&format!(
        "SELECT {RUN_COLUMNS} FROM runs
         WHERE run_id = ?1 OR substr(run_id, 1, length(?1)) = ?1
         ORDER BY run_id = ?1 DESC, started_at LIMIT {}",
        SHOWN + 1
    ))?;
    let rows: Vec<RunRow> = stmt
        .query_map(params![id_or_prefix], run_row)?
        .collect::<Result<_, _>>()?;
    if rows.len() <= 1 || rows[0].run_id == id_or_prefix {
        return Ok(rows.into_iter().next());
    }
    Err(LedgerError::AmbiguousRun {
        prefix: id_or_prefix.to_string(),
        more: rows.len() > SHOWN,
        candidates: rows.into_iter().take(SHOWN).map(|r| r.run_id).collect(),
    })
}

/// The tasks of a run, by id.
pub fn tasks(conn: &Connection, run_id: &str) -> Result<Vec<TaskRow>, LedgerError> {
    let mut stmt = conn.prepare(
        "SELECT t.task_id, t.parent_id, t.depth, t.agent, t.description, t.status, t.output, t.error,
                t.tokens_in, t.tokens_out, t.cost_usd, t.host_calls, t.started_at, t.finished_at,
                (SELECT model FROM events e WHERE e.run_id = t.run_id AND e.task_id = t.task_id
                   AND e.model IS NOT NULL GROUP BY model ORDER BY COUNT(*) DESC LIMIT 1)
         FROM tasks t WHERE t.run_id = ?1 ORDER BY t.task_id",
    )?;
    let rows = stmt.query_map([run_id], |r| {
        Ok(TaskRow {
            task_id: r.get::<_, i64>(0)? as u64,
            parent_id: r.get::<_, Option<i64>>(1)?.map(|p| p as u64),
            depth: r.get(2)?,
            agent: r.get(3)?,
            description: r.get(4)?,
            status: r.get(5)?,
            output: r.get(6)?,
            error: r.get(7)?,
            tokens_in: r.get(8)?,
            tokens_out: r.get(9)?,
            cost_usd: r.get(10)?,
            host_calls: r.get(11)?,
            started_at: r.get(12)?,
            finished_at: r.get(13)?,
            model: r.get(14)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The events of a run (or of one task), in task then sequence order, with large
/// strings resolved from `blobs`.
pub fn events(
    conn: &Connection,
    run_id: &str,
    task_id: Option<u64>,
) -> Result<Vec<EventRow>, LedgerError> {
    let mut stmt = conn.prepare_cached(
        "SELECT task_id, seq, kind, status, request, response, model, tokens_in, tokens_out, cost_usd,
                started_at, finished_at, request_hash
         FROM events WHERE run_id = ?1 AND (CAST(?2 AS BIGINT) IS NULL OR task_id = ?2) ORDER BY task_id, seq",
    )?;
    let rows = stmt.query_map(params![run_id, task_id.map(|t| t as i64)], |r| {
        let request: String = r.get(4)?;
        let response: String = r.get(5)?;
        Ok(EventRow {
            task_id: r.get::<_, i64>(0)? as u64,
            seq: r.get::<_, i64>(1)? as u64,
            kind: r.get(2)?,
            ok: r.get::<_, String>(3)? == "ok",
            request: serde_json::from_str(&request).unwrap_or(serde_json::Value::Null),
            response: serde_json::from_str(&response).unwrap_or(serde_json::Value::Null),
            model: r.get(6)?,
            tokens_in: r.get(7)?,
            tokens_out: r.get(8)?,
            cost_usd: r.get(9)?,
            started_at: r.get(10)?,
            finished_at: r.get(11)?,
            request_hash: r.get(12)?,
        })
    })?;
    let mut out: Vec<EventRow> = rows.collect::<Result<_, _>>()?;
    for e in &mut out {
        blobs::internalize(conn, &mut e.request)?;
        blobs::internalize(conn, &mut e.response)?;
    }
    Ok(out)
}

/// A JSON payload of an event row (`request`, `response`) as stored: text whose long
/// strings may be `{"$blob": hash}` references into `blobs` ([`blobs::externalize`]).
/// A replay keeps it as text and parses it — loading its blobs — only when a replayed
/// call reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredJson(Box<str>);

impl StoredJson {
    /// A payload as stored.
    pub fn new(text: &str) -> StoredJson {
        StoredJson(text.into())
    }

    /// The stored text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the text may hold blob references. A test on the text (the key as
    /// serde_json writes it), so a string `"$blob"` says yes too, which only costs a
    /// lookup that finds nothing to resolve.
    pub fn has_blob_refs(&self) -> bool {
        self.0.contains("\"$blob\"")
    }

    /// The payload parsed, blob references left as they are (`Null` if the text is not
    /// JSON, as [`events`] reads it).
    pub fn parse(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }

    /// The payload parsed with its blob references resolved from `conn`: what
    /// [`EventRow`] holds.
    pub fn resolve(&self, conn: &Connection) -> Result<serde_json::Value, LedgerError> {
        let mut value = self.parse();
        if self.has_blob_refs() {
            blobs::internalize(conn, &mut value)?;
        }
        Ok(value)
    }
}

/// One row of `events` as a replay reads it: what matching and answering a call
/// needs, the payloads as stored ([`StoredJson`]) — no timestamps, nothing parsed.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub task_id: u64,
    pub seq: u64,
    pub kind: EventKind,
    pub ok: bool,
    /// Hash of the call's identity, used to match calls on replay.
    pub request_hash: String,
    pub request: StoredJson,
    pub response: StoredJson,
    pub model: Option<String>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
}

/// Column `i` of a row as borrowed text.
fn text_at<'r>(r: &'r super::db::Row<'_>, i: usize) -> rusqlite::Result<&'r str> {
    Ok(r.get_ref(i)?.as_str()?)
}

/// The events of a run in task then sequence order, for replaying it: one query, the
/// payloads left as stored and their blobs unread (see [`StoredJson`]); those of an
/// event whose kind `wants_payloads` refuses are left empty, unread.
pub fn stored_events(
    conn: &Connection,
    run_id: &str,
    wants_payloads: impl Fn(&EventKind) -> bool,
) -> Result<Vec<StoredEvent>, LedgerError> {
    let mut stmt = conn.prepare_cached(
        "SELECT task_id, seq, kind, status, request, response, model, tokens_in, tokens_out, cost_usd,
                request_hash
         FROM events WHERE run_id = ?1 ORDER BY task_id, seq",
    )?;
    let mut rows = stmt.query([run_id])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let r = &r;
        let kind = EventKind::parse(text_at(r, 2)?);
        let (request, response) = if wants_payloads(&kind) {
            (
                StoredJson::new(text_at(r, 4)?),
                StoredJson::new(text_at(r, 5)?),
            )
        } else {
            Default::default()
        };
        out.push(StoredEvent {
            task_id: r.get::<_, i64>(0)? as u64,
            seq: r.get::<_, i64>(1)? as u64,
            kind,
            ok: text_at(r, 3)? == "ok",
            request,
            response,
            model: r.get(6)?,
            tokens_in: r.get(7)?,
            tokens_out: r.get(8)?,
            cost_usd: r.get(9)?,
            request_hash: r.get(10)?,
        });
    }
    Ok(out)
}

/// A value of the run's key-value store.
pub fn kv_get(conn: &Connection, run_id: &str, key: &str) -> Result<Option<String>, LedgerError> {
    Ok(super::kv::get(conn, run_id, key)?)
}

/// A blob by hash.
pub fn blob(conn: &Connection, hash: &str) -> Result<Option<Vec<u8>>, LedgerError> {
    Ok(blobs::get(conn, hash)?)
}

/// What resuming a run needs to know about one of its tasks.
#[derive(Clone, Debug)]
pub struct ResumeTask {
    pub task_id: u64,
    pub parent_id: Option<u64>,
    pub depth: u32,
    pub agent: String,
    pub component_hash: String,
    pub description: String,
    pub status: Status,
    pub input_hash: String,
    pub run_input_hash: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub spawn_key: Option<String>,
    pub dedup_key: Option<String>,
    pub depends_on: String,
    pub budget_usd: Option<f64>,
    pub resources: String,
    pub timeout_ms: Option<u64>,
}

/// The tasks `roots` and all their descendants among `tasks`.
pub fn subtree(
    tasks: &[ResumeTask],
    roots: impl IntoIterator<Item = u64>,
) -> std::collections::HashSet<u64> {
    let mut found = std::collections::HashSet::new();
    let mut frontier: Vec<u64> = roots.into_iter().collect();
    while let Some(id) = frontier.pop() {
        if found.insert(id) {
            frontier.extend(
                tasks
                    .iter()
                    .filter(|t| t.parent_id == Some(id))
                    .map(|t| t.task_id),
            );
        }
    }
    found
}

/// All tasks of a run, for resuming it.
pub fn resume_tasks(conn: &Connection, run_id: &str) -> Result<Vec<ResumeTask>, LedgerError> {
    let mut stmt = conn.prepare(
        "SELECT task_id, parent_id, depth, agent, component_hash, description, status, input_hash, run_input_hash,
                output, error, spawn_key, dedup_key, depends_on, budget_usd, resources, timeout_ms
         FROM tasks WHERE run_id = ?1 ORDER BY task_id",
    )?;
    let rows = stmt.query_map([run_id], |r| {
        Ok(ResumeTask {
            task_id: r.get::<_, i64>(0)? as u64,
            parent_id: r.get::<_, Option<i64>>(1)?.map(|p| p as u64),
            depth: r.get(2)?,
            agent: r.get(3)?,
            component_hash: r.get(4)?,
            description: r.get(5)?,
            status: r.get(6)?,
            input_hash: r.get(7)?,
            run_input_hash: r.get(8)?,
            output: r.get(9)?,
            error: r.get(10)?,
            spawn_key: r.get(11)?,
            dedup_key: r.get(12)?,
            depends_on: r.get(13)?,
            budget_usd: r.get(14)?,
            resources: r.get(15)?,
            timeout_ms: r.get::<_, Option<i64>>(16)?.map(|t| t as u64),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The run's stored config and context hash.
pub fn run_config(
    conn: &Connection,
    run_id: &str,
) -> Result<Option<(String, String)>, LedgerError> {
    Ok(conn
        .query_row(
            "SELECT config_json, context_hash FROM runs WHERE run_id = ?1",
            [run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// The checkpoint state saved by event `seq` of a task.
pub fn checkpoint_state(
    conn: &Connection,
    run_id: &str,
    task_id: u64,
    seq: u64,
) -> Result<Option<Vec<u8>>, LedgerError> {
    let hash: Option<String> = conn
        .query_row(
            "SELECT state_hash FROM checkpoints WHERE run_id = ?1 AND task_id = ?2 AND event_seq = ?3",
            params![run_id, task_id as i64, seq as i64],
            |r| r.get(0),
        )
        .optional()?;
    match hash {
        Some(h) => blob(conn, &h),
        None => Ok(None),
    }
}

/// One row of `checkpoints`.
#[derive(Clone, Debug, Serialize)]
pub struct CheckpointRow {
    pub task_id: u64,
    pub number: u32,
    pub event_seq: u64,
    pub note: String,
    pub step: u32,
    pub state_hash: String,
    pub state_size: i64,
    pub host_state: serde_json::Value,
    pub saved_at: i64,
}

/// The checkpoints of the run `id_or_prefix` names (see [`run`]), oldest first;
/// `None` when no run has that id.
pub fn run_checkpoints(
    conn: &Connection,
    id_or_prefix: &str,
) -> Result<Option<Vec<CheckpointRow>>, LedgerError> {
    match run(conn, id_or_prefix)? {
        Some(row) => Ok(Some(checkpoints(conn, &row.run_id, None)?)),
        None => Ok(None),
    }
}

/// The checkpoints of a run (or of one task), oldest first.
pub fn checkpoints(
    conn: &Connection,
    run_id: &str,
    task_id: Option<u64>,
) -> Result<Vec<CheckpointRow>, LedgerError> {
    let mut stmt = conn.prepare(
        "SELECT c.task_id, c.number, c.event_seq, c.note, c.step, c.state_hash, b.size, c.host_state, c.saved_at
         FROM checkpoints c JOIN blobs b ON b.hash = c.state_hash
         WHERE c.run_id = ?1 AND (CAST(?2 AS BIGINT) IS NULL OR c.task_id = ?2) ORDER BY c.task_id, c.number",
    )?;
    let rows = stmt.query_map(params![run_id, task_id.map(|t| t as i64)], |r| {
        Ok(CheckpointRow {
            task_id: r.get::<_, i64>(0)? as u64,
            number: r.get(1)?,
            event_seq: r.get::<_, i64>(2)? as u64,
            note: r.get(3)?,
            step: r.get(4)?,
            state_hash: r.get(5)?,
            state_size: r.get(6)?,
            host_state: serde_json::from_str(&r.get::<_, String>(7)?).unwrap_or_default(),
            saved_at: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether cancel request `id` was carried out ([`super::cancels`]).
pub fn is_cancel_done(conn: &Connection, id: i64) -> Result<bool, LedgerError> {
    super::cancels::is_done(conn, id)
}
