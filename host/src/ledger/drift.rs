//! What `agentflow drift`, `inspect --roi` and `agentflow run`'s live progress read,
//! and how an asynchronous quality evaluation is recorded after its task ended.
//!
//! The first two read the [`super::traces`] view (`agent_traces`, one row per task
//! with its models, validation result and quality score); the progress reads `tasks`
//! with the running totals of their events, so a task's cost grows while it runs.

use super::Connection;
use super::{EventRecord, Ledger, LedgerError, Status, blobs};
use rusqlite::params;
use serde::Serialize;

/// One finished task as drift and ROI see it (a row of `agent_traces`).
#[derive(Clone, Debug, Serialize)]
pub struct TaskResult {
    pub run_id: String,
    pub task_id: u64,
    pub parent_id: Option<u64>,
    pub agent: String,
    pub description: String,
    pub status: Status,
    pub input_hash: String,
    pub output: Option<String>,
    /// `pass`, `fail` or `uncertain` (the task's latest attempt), `None` unvalidated.
    pub validation: Option<String>,
    /// 0..1, `None` when nothing judged the output.
    pub quality: Option<f64>,
    /// The models of the task's LLM calls, in first-use order.
    pub models: Vec<String>,
    pub tokens: i64,
    pub cost_usd: f64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// The view's columns these read.
const RESULT_COLUMNS: &str = "run_id, task_id, parent_id, agent, description, status, input_hash,
    output, validation_result, quality_score, models, tokens_in + tokens_out, cost_usd,
    started_at, finished_at";

fn task_result(r: &super::db::Row<'_>) -> rusqlite::Result<TaskResult> {
    let models: Option<String> = r.get(10)?;
    Ok(TaskResult {
        run_id: r.get(0)?,
        task_id: r.get::<_, i64>(1)? as u64,
        parent_id: r.get::<_, Option<i64>>(2)?.map(|p| p as u64),
        agent: r.get(3)?,
        description: r.get(4)?,
        status: r.get(5)?,
        input_hash: r.get(6)?,
        output: r.get(7)?,
        validation: r.get(8)?,
        quality: r.get(9)?,
        models: models
            .and_then(|m| serde_json::from_str(&m).ok())
            .unwrap_or_default(),
        tokens: r.get(11)?,
        cost_usd: r.get(12)?,
        started_at: r.get(13)?,
        finished_at: r.get(14)?,
    })
}

/// Every task that ended completed or failed — of `agent` only, started at or after
/// `since_ms` when given — ordered by agent, input hash and start: the runs of one
/// agent on one input, oldest first.
pub fn finished_tasks(
    conn: &Connection,
    agent: Option<&str>,
    since_ms: Option<i64>,
) -> Result<Vec<TaskResult>, LedgerError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {RESULT_COLUMNS} FROM {view}
         WHERE status IN ('completed', 'failed')
           AND (CAST(?1 AS TEXT) IS NULL OR agent = ?1)
           AND (CAST(?2 AS BIGINT) IS NULL OR COALESCE(started_at, finished_at, 0) >= ?2)
         ORDER BY agent, input_hash, COALESCE(started_at, finished_at), run_id, task_id",
        view = super::traces::VIEW
    ))?;
    let rows = stmt.query_map(params![agent, since_ms], task_result)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A model version change a provider reported (`llm.model_version_changed`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VersionChange {
    /// When the call that saw it ended.
    pub at: i64,
    pub model: String,
    pub previous: String,
    pub observed: String,
}

/// Every model version change the ledger recorded, oldest first.
pub fn version_changes(conn: &Connection) -> Result<Vec<VersionChange>, LedgerError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT finished_at, json_extract(response, '$.model'),
                json_extract(response, '$.previous'), json_extract(response, '$.observed')
         FROM events WHERE kind = '{}' ORDER BY finished_at",
        super::EventKind::LlmModelVersionChanged.as_str()
    ))?;
    let rows = stmt.query_map([], |r| {
        Ok(VersionChange {
            at: r.get(0)?,
            model: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            previous: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
            observed: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every task of run `run_id` (the full id), by task id.
pub fn run_results(conn: &Connection, run_id: &str) -> Result<Vec<TaskResult>, LedgerError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {RESULT_COLUMNS} FROM {view} WHERE run_id = ?1 ORDER BY task_id",
        view = super::traces::VIEW
    ))?;
    let rows = stmt.query_map([run_id], task_result)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The input task `task_id` ran on (its own, with any `data-from` outputs appended),
/// else the input it was spawned with.
pub fn task_input(
    conn: &Connection,
    run_id: &str,
    task_id: u64,
) -> Result<Option<String>, LedgerError> {
    let hash: Option<String> = conn
        .query_row(
            "SELECT COALESCE(run_input_hash, input_hash) FROM tasks
             WHERE run_id = ?1 AND task_id = ?2",
            params![run_id, task_id as i64],
            |r| r.get(0),
        )
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    let Some(hash) = hash else { return Ok(None) };
    Ok(blobs::get(conn, &hash)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// A task of a run as the live progress shows it: the totals of its events so far.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskProgress {
    pub task_id: u64,
    pub parent_id: Option<u64>,
    pub depth: u32,
    pub agent: String,
    pub description: String,
    pub status: Status,
    pub tokens: i64,
    pub cost_usd: f64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// The tasks of run `run_id` with their running totals, by task id; empty before the
/// run is recorded.
pub fn progress(conn: &Connection, run_id: &str) -> Result<Vec<TaskProgress>, LedgerError> {
    let mut stmt = conn.prepare_cached(
        "SELECT t.task_id, t.parent_id, t.depth, t.agent, t.description, t.status,
                COALESCE(e.tokens, 0), COALESCE(e.cost, 0), t.started_at, t.finished_at
         FROM tasks t LEFT JOIN (
             SELECT task_id, SUM(tokens_in + tokens_out) AS tokens, SUM(cost_usd) AS cost
             FROM events WHERE run_id = ?1 GROUP BY task_id) e ON e.task_id = t.task_id
         WHERE t.run_id = ?1 ORDER BY t.task_id",
    )?;
    let rows = stmt.query_map([run_id], |r| {
        Ok(TaskProgress {
            task_id: r.get::<_, i64>(0)? as u64,
            parent_id: r.get::<_, Option<i64>>(1)?.map(|p| p as u64),
            depth: r.get(2)?,
            agent: r.get(3)?,
            description: r.get(4)?,
            status: r.get(5)?,
            tokens: r.get(6)?,
            cost_usd: r.get(7)?,
            started_at: r.get(8)?,
            finished_at: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

impl Ledger {
    /// Record an evaluation of a task that already ended (`event`, a verdict of its
    /// output) and add what the evaluation cost to the totals: the task's are summed
    /// from its events again, and a run that already ended has its own summed from its
    /// tasks again, as [`Ledger::finish_run`] does. Buffered: the caller does not wait
    /// for the commit; a failure is logged.
    pub async fn record_evaluation(&self, event: EventRecord) -> Result<(), LedgerError> {
        let (run_id, task_id) = (event.run_id.clone(), event.task_id as i64);
        self.write_buffered(
            move |w| {
                w.append_event(event)?;
                w.conn
                    .prepare_cached(
                        "UPDATE tasks SET
                            tokens_in = (SELECT COALESCE(SUM(tokens_in), 0) FROM events e
                                         WHERE e.run_id = ?1 AND e.task_id = ?2),
                            tokens_out = (SELECT COALESCE(SUM(tokens_out), 0) FROM events e
                                          WHERE e.run_id = ?1 AND e.task_id = ?2),
                            cost_usd = (SELECT COALESCE(SUM(cost_usd), 0) FROM events e
                                        WHERE e.run_id = ?1 AND e.task_id = ?2)
                         WHERE run_id = ?1 AND task_id = ?2 AND finished_at IS NOT NULL",
                    )?
                    .execute(params![run_id, task_id])?;
                w.conn
                    .prepare_cached(
                        "UPDATE runs SET
                            tokens_in = (SELECT COALESCE(SUM(tokens_in), 0) FROM tasks WHERE run_id = ?1),
                            tokens_out = (SELECT COALESCE(SUM(tokens_out), 0) FROM tasks WHERE run_id = ?1),
                            cost_usd = (SELECT COALESCE(SUM(cost_usd), 0) FROM tasks WHERE run_id = ?1)
                         WHERE run_id = ?1 AND finished_at IS NOT NULL",
                    )?
                    .execute([&run_id])?;
                Ok(())
            },
            |e| tracing::warn!(error = %e, "cannot record a quality evaluation"),
        )
        .await
    }
}
