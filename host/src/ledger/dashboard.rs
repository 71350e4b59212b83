//! The SQL behind `agentflow serve`'s pages that the other readers do not already
//! have: the `agent_traces` columns of a whole run, the run's side effects (tool
//! intents paired with their results), the fingerprints the live pages poll, and the
//! latency percentiles and quality-by-day of the models page (from the performance DB
//! beside the ledger, or from the recorded LLM calls when it has none).
//!
//! Read-only, like [`super::query`].

use super::Connection;
use super::{EventKind, LedgerError, blobs, traces};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// A read-only connection for one page: [`super::query::open_reader`] with the file
/// memory-mapped (256 MiB at most) and a 32 MiB page cache, so a large run's page reads
/// its rows without a system call per page.
pub fn open_page_reader(path: &std::path::Path) -> Result<Connection, LedgerError> {
    let conn = super::query::open_reader(path)?;
    conn.execute_batch("PRAGMA mmap_size = 268435456; PRAGMA cache_size = -32768;")?;
    Ok(conn)
}

/// What `agent_traces` says of one task, beyond the `tasks` row.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TraceColumns {
    /// The models of its LLM calls, in the order first used.
    pub models: Vec<String>,
    /// `pass`, `fail`, `uncertain`, or `None` when no validator ran.
    pub validation_result: Option<String>,
    /// 0..1, the mean over the latest attempt's verdicts; `None` when none.
    pub quality_score: Option<f64>,
    /// Every verdict: `{seq, validator, kind, verdict, reason, category, score}`.
    pub validation: Vec<Value>,
    /// The reasoning steps interleaved with the tool calls they led to.
    pub reasoning_trace: Vec<Value>,
}

/// The `agent_traces` columns of every task of run `run_id`, by task id.
pub fn trace_columns(
    conn: &Connection,
    run_id: &str,
) -> Result<BTreeMap<u64, TraceColumns>, LedgerError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT task_id, validation_result, quality_score, validation, reasoning_trace, models
         FROM {} WHERE run_id = ?1",
        traces::VIEW
    ))?;
    let parse = |text: Option<String>| -> Vec<Value> {
        text.and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    };
    let rows = stmt.query_map([run_id], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, Option<f64>>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<String>>(5)?,
        ))
    })?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (task, result, quality, validation, trace, models) = row?;
        out.insert(
            task,
            TraceColumns {
                models: models
                    .and_then(|m| serde_json::from_str(&m).ok())
                    .unwrap_or_default(),
                validation_result: result,
                quality_score: quality,
                validation: parse(validation),
                reasoning_trace: parse(trace),
            },
        );
    }
    Ok(out)
}

/// A side effect of a run: a tool intent (recorded before a side-effecting call) and
/// what became of it.
#[derive(Clone, Debug, Serialize)]
pub struct SideEffect {
    pub task_id: u64,
    /// The intent's seq.
    pub seq: u64,
    pub tool: String,
    pub args: String,
    /// The tool's class: `idempotent`, `compensable` or `irreversible`.
    pub class: String,
    /// `done`, `failed`, `in doubt` (an intent with no result), `settled: happened`
    /// or `settled: did not happen` (a human's answer, `agentflow settle`).
    pub state: String,
    /// The result's seq, when there is one.
    pub result_seq: Option<u64>,
    /// The result (or the error), as recorded.
    pub result: Option<String>,
    pub idempotency_key: String,
}

/// The side effects of run `run_id`, in task then seq order.
pub fn side_effects(conn: &Connection, run_id: &str) -> Result<Vec<SideEffect>, LedgerError> {
    let mut stmt = conn.prepare(
        "SELECT task_id, seq, kind, status, request, response FROM events
         WHERE run_id = ?1 AND kind IN (?2, ?3) ORDER BY task_id, seq",
    )?;
    let rows = stmt.query_map(
        params![
            run_id,
            EventKind::ToolsIntent.as_str(),
            EventKind::ToolsCall.as_str()
        ],
        |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, EventKind>(2)?,
                r.get::<_, String>(3)? == "ok",
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        },
    )?;
    let mut out: Vec<SideEffect> = Vec::new();
    // The effect still waiting for its result, by (task, idempotency key).
    let mut open: BTreeMap<(u64, String), usize> = BTreeMap::new();
    for row in rows {
        let (task_id, seq, kind, ok, request, response) = row?;
        let mut request: Value = serde_json::from_str(&request).unwrap_or(Value::Null);
        let key = request["idempotency_key"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if kind == EventKind::ToolsIntent {
            blobs::internalize(conn, &mut request)?;
            let text = |v: &Value| match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            open.insert((task_id, key.clone()), out.len());
            out.push(SideEffect {
                task_id,
                seq,
                tool: text(&request["name"]),
                args: text(&request["args"]),
                class: request["side_effect"]
                    .as_str()
                    .unwrap_or("irreversible")
                    .to_string(),
                state: "in doubt".into(),
                result_seq: None,
                result: None,
                idempotency_key: key,
            });
            continue;
        }
        let Some(i) = open.remove(&(task_id, key)) else {
            continue; // a call without an intent: no side effect
        };
        let mut response: Value = serde_json::from_str(&response).unwrap_or(Value::Null);
        blobs::internalize(conn, &mut response)?;
        let effect = &mut out[i];
        effect.result_seq = Some(seq);
        effect.state = match response["settled"]["happened"].as_bool() {
            Some(true) => "settled: happened".into(),
            Some(false) => "settled: did not happen".into(),
            None if ok => "done".into(),
            None => "failed".into(),
        };
        let shown = ["ok", "error", "detail"]
            .iter()
            .map(|k| &response[*k])
            .find(|v| !v.is_null())
            .unwrap_or(&response);
        effect.result = Some(match shown {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    }
    Ok(out)
}

/// A value that changes whenever something shown on run `run_id`'s page does: its
/// newest event, its status, its tasks' statuses, its pending decisions. `None` when
/// there is no such run.
pub fn run_fingerprint(conn: &Connection, run_id: &str) -> Result<Option<String>, LedgerError> {
    // PostgreSQL has no rowid (the events' count stands for the newest one there),
    // `group_concat` or `total`, and will not mix an integer and '' in a COALESCE.
    let sql = if conn.is_postgres() {
        "SELECT r.status || '/' || COALESCE(r.finished_at::text, '')
            || '/' || (SELECT COUNT(*) FROM events WHERE run_id = r.run_id)
            || '/' || (SELECT COUNT(*) || ':' || COALESCE(string_agg(status, ',' ORDER BY task_id), '')
                       FROM tasks WHERE run_id = r.run_id)
            || '/' || (SELECT COUNT(*) FROM approvals WHERE run_id = r.run_id AND status = 'pending')
            || '/' || (SELECT COUNT(*) FROM reviews WHERE run_id = r.run_id AND status = 'pending')
            || '/' || (SELECT COUNT(*) FROM merges WHERE run_id = r.run_id AND status = 'pending')
         FROM runs r WHERE r.run_id = ?1"
    } else {
        "SELECT r.status || '/' || COALESCE(r.finished_at, '')
            || '/' || (SELECT COALESCE(MAX(rowid), 0) || ':' || COUNT(*) FROM events WHERE run_id = r.run_id)
            || '/' || (SELECT COUNT(*) || ':' || group_concat(status, ',') FROM tasks WHERE run_id = r.run_id)
            || '/' || (SELECT COUNT(*) FROM approvals WHERE run_id = r.run_id AND status = 'pending')
            || '/' || (SELECT COUNT(*) FROM reviews WHERE run_id = r.run_id AND status = 'pending')
            || '/' || (SELECT COUNT(*) FROM merges WHERE run_id = r.run_id AND status = 'pending')
         FROM runs r WHERE r.run_id = ?1"
    };
    Ok(conn
        .query_row(sql, [run_id], |r| r.get::<_, String>(0))
        .optional()?)
}

/// A value that changes whenever the run list may: a run started or ended, an event
/// was committed, a decision was asked for or made.
pub fn ledger_fingerprint(conn: &Connection) -> Result<String, LedgerError> {
    let (finished, newest_event) = if conn.is_postgres() {
        ("COALESCE(SUM(finished_at), 0)", "COUNT(*)")
    } else {
        ("total(finished_at)", "COALESCE(MAX(rowid), 0)")
    };
    Ok(conn.query_row(
        &format!(
            "SELECT (SELECT COUNT(*) || ':' || {finished} FROM runs)
            || '/' || (SELECT {newest_event} FROM events)
            || '/' || (SELECT COUNT(*) FROM approvals WHERE status = 'pending')
            || '/' || (SELECT COUNT(*) FROM reviews WHERE status = 'pending')
            || '/' || (SELECT COUNT(*) FROM merges WHERE status = 'pending')"
        ),
        [],
        |r| r.get::<_, String>(0),
    )?)
}

/// Latency percentiles of one model's successful calls.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    /// Where the samples come from: `perf` (the performance DB) or `ledger` (the
    /// recorded `llm.complete` events).
    pub source: &'static str,
}

/// One model's quality scores and calls on one day (UTC).
#[derive(Clone, Debug, Serialize)]
pub struct Day {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub quality_scores: u64,
    pub quality_mean: Option<f64>,
    pub calls: u64,
    pub errors: u64,
}

/// The nearest-rank percentile `p` (0..100) of sorted `values`.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn latency_of(mut values: Vec<u64>, source: &'static str) -> Latency {
    values.sort_unstable();
    Latency {
        samples: values.len() as u64,
        p50_ms: percentile(&values, 50.0),
        p95_ms: percentile(&values, 95.0),
        source,
    }
}

/// Each model's latency percentiles over the successful calls in the performance DB
/// `perf` (an open read connection to `<ledger>-perf.db`).
pub fn perf_latencies(perf: &Connection) -> Result<BTreeMap<String, Latency>, LedgerError> {
    let mut stmt = perf.prepare("SELECT model, latency_ms FROM calls WHERE ok = 1")?;
    let mut by_model: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (model, ms) = row?;
        by_model.entry(model).or_default().push(ms.max(0) as u64);
    }
    Ok(by_model
        .into_iter()
        .map(|(m, v)| (m, latency_of(v, "perf")))
        .collect())
}

/// Each model's latency percentiles over the successful `llm.complete` events of the
/// ledger (their recorded start and end).
pub fn ledger_latencies(conn: &Connection) -> Result<BTreeMap<String, Latency>, LedgerError> {
    let mut stmt = conn.prepare(
        "SELECT model, finished_at - started_at FROM events
         WHERE kind = ?1 AND status = 'ok' AND model IS NOT NULL",
    )?;
    let mut by_model: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let rows = stmt.query_map([EventKind::LlmComplete.as_str()], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (model, ms) = row?;
        by_model.entry(model).or_default().push(ms.max(0) as u64);
    }
    Ok(by_model
        .into_iter()
        .map(|(m, v)| (m, latency_of(v, "ledger")))
        .collect())
}

/// Each model's quality scores and calls by day (UTC), oldest first, from the
/// performance DB `perf`.
pub fn perf_days(perf: &Connection) -> Result<BTreeMap<String, Vec<Day>>, LedgerError> {
    let mut stmt = perf.prepare(
        "SELECT model, day, SUM(scores), SUM(score_sum), SUM(calls), SUM(errors) FROM (
             SELECT model, date(at / 1000, 'unixepoch') AS day, 1 AS scores, score AS score_sum,
                    0 AS calls, 0 AS errors FROM quality
             UNION ALL
             SELECT model, date(at / 1000, 'unixepoch'), 0, 0, 1, 1 - ok FROM calls)
         GROUP BY model, day ORDER BY model, day",
    )?;
    let mut out: BTreeMap<String, Vec<Day>> = BTreeMap::new();
    let rows = stmt.query_map([], |r| {
        let scores = r.get::<_, i64>(2)? as u64;
        let sum: f64 = r.get(3)?;
        Ok((
            r.get::<_, String>(0)?,
            Day {
                day: r.get(1)?,
                quality_scores: scores,
                quality_mean: (scores > 0).then(|| sum / scores as f64),
                calls: r.get::<_, i64>(4)? as u64,
                errors: r.get::<_, i64>(5)? as u64,
            },
        ))
    })?;
    for row in rows {
        let (model, day) = row?;
        out.entry(model).or_default().push(day);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ledger with the schema, run `r` and its task 1.
    fn ledger() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(super::super::schema::SCHEMA).unwrap();
        conn.execute_batch(&traces::view_sql()).unwrap();
        conn.execute_batch(
            "INSERT INTO runs (run_id, agent, component_hash, input, status, config_json,
                               context_hash, started_at)
                 VALUES ('r', 'a', 'c', 'in', 'running', '{}', 'h', 1);
             INSERT INTO blobs (hash, size, data) VALUES ('ih', 2, x'6869');
             INSERT INTO tasks (run_id, task_id, parent_id, depth, agent, component_hash,
                                description, status, input_hash, tokens_in, tokens_out,
                                cost_usd, created_at)
                 VALUES ('r', 1, NULL, 0, 'a', 'c', 'root', 'running', 'ih', 0, 0, 0, 1);",
        )
        .unwrap();
        conn
    }

    fn event(conn: &Connection, seq: i64, kind: EventKind, ok: bool, req: Value, resp: Value) {
        conn.execute(
            "INSERT INTO events (run_id, task_id, seq, kind, status, request, response,
                                 request_hash, started_at, finished_at)
             VALUES ('r', 1, ?1, ?2, ?3, ?4, ?5, 'x', 0, 0)",
            params![
                seq,
                kind,
                if ok { "ok" } else { "error" },
                req.to_string(),
                resp.to_string()
            ],
        )
        .unwrap();
    }

    fn intent(key: &str, class: &str) -> Value {
        serde_json::json!({"name": "cloud", "args": "{}", "idempotency_key": key, "side_effect": class})
    }

    #[test]
    fn side_effects_pair_intents_with_results_and_the_fingerprint_moves() {
        let conn = ledger();
        let before = run_fingerprint(&conn, "r").unwrap().unwrap();
        assert_eq!(run_fingerprint(&conn, "nope").unwrap(), None);
        event(
            &conn,
            1,
            EventKind::ToolsIntent,
            true,
            intent("k1", "irreversible"),
            Value::Null,
        );
        event(
            &conn,
            2,
            EventKind::ToolsCall,
            true,
            intent("k1", "irreversible"),
            serde_json::json!({"ok": "created vm-1"}),
        );
        event(
            &conn,
            3,
            EventKind::ToolsIntent,
            true,
            intent("k2", "compensable"),
            Value::Null,
        );
        event(
            &conn,
            4,
            EventKind::ToolsCall,
            false,
            intent("k2", "compensable"),
            serde_json::json!({"error": "quota"}),
        );
        event(
            &conn,
            5,
            EventKind::ToolsIntent,
            true,
            intent("k3", "irreversible"),
            Value::Null,
        );
        event(
            &conn,
            6,
            EventKind::ToolsIntent,
            true,
            intent("k4", "compensable"),
            Value::Null,
        );
        event(
            &conn,
            7,
            EventKind::ToolsCall,
            true,
            intent("k4", "compensable"),
            serde_json::json!({"settled": {"happened": false}}),
        );
        // A call without an intent (a tool with no side effect) is none.
        event(
            &conn,
            8,
            EventKind::ToolsCall,
            true,
            serde_json::json!({"name": "kv"}),
            serde_json::json!({"ok": "v"}),
        );
        let effects = side_effects(&conn, "r").unwrap();
        let states: Vec<(u64, &str, &str)> = effects
            .iter()
            .map(|e| (e.seq, e.class.as_str(), e.state.as_str()))
            .collect();
        assert_eq!(
            states,
            [
                (1, "irreversible", "done"),
                (3, "compensable", "failed"),
                (5, "irreversible", "in doubt"),
                (6, "compensable", "settled: did not happen"),
            ]
        );
        assert_eq!(effects[0].result.as_deref(), Some("created vm-1"));
        assert_eq!(effects[1].result.as_deref(), Some("quota"));
        let after = run_fingerprint(&conn, "r").unwrap().unwrap();
        assert_ne!(before, after);
        assert_eq!(run_fingerprint(&conn, "r").unwrap().unwrap(), after);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 95.0), Some(95));
        assert_eq!(percentile(&[7], 95.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
        let l = latency_of(vec![30, 10, 20], "perf");
        assert_eq!((l.p50_ms, l.p95_ms, l.samples), (Some(20), Some(30), 3));
    }
}
