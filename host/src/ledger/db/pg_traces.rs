//! The `agent_traces` view on PostgreSQL: the columns and JSON of
//! [`crate::ledger::traces`]'s SQLite view, written with PostgreSQL's JSON functions
//! (`json_build_object` and `json_agg … ORDER BY`, which keep keys and entries in
//! order, where SQLite has `json_object` and `json_group_array`). JSON arrays are
//! text columns, as on SQLite.

use crate::ledger::EventKind;
use crate::ledger::traces::VIEW;

/// The JSON value at `path` (`a.b`) of the payload column `col`, typed as stored.
fn value(col: &str, path: &str) -> String {
    format!("({col}::jsonb #> '{{{path}}}')")
}

/// The text at `path` of `col` as a JSON string, with a `{"$blob": hash}` reference
/// there resolved from `blobs`.
fn text(col: &str, path: &str) -> String {
    format!(
        "to_jsonb(COALESCE((SELECT convert_from(b.data, 'UTF8') FROM blobs b \
           WHERE b.hash = ({col}::jsonb #>> '{{{path},$blob}}')), ({col}::jsonb #>> '{{{path}}}')))"
    )
}

/// `CREATE OR REPLACE VIEW agent_traces …` for PostgreSQL.
pub fn view_sql() -> String {
    let step = EventKind::TraceStep.as_str();
    let call = EventKind::ToolsCall.as_str();
    let llm = EventKind::LlmComplete.as_str();
    let verdict = EventKind::ValidationResult.as_str();
    let retry = EventKind::ValidationRetry.as_str();
    let of_task = "e.run_id = t.run_id AND e.task_id = t.task_id";
    let latest_attempt = format!(
        "{of_task} AND e.kind = '{verdict}' AND e.seq > COALESCE((SELECT MAX(r.seq) FROM events r \
           WHERE r.run_id = t.run_id AND r.task_id = t.task_id AND r.kind = '{retry}'), 0)"
    );
    let verdict_of = "(e.response::jsonb #>> '{result,verdict}')";
    let score = "(e.response::jsonb #>> '{score}')";
    let step_entry = format!(
        "json_build_object('seq', e.seq, 'step', {step_no}, 'thought', {thought}, \
           'action', {action}, 'observation', {observation}, \
           'confidence', round((e.request::jsonb #>> '{{confidence}}')::numeric, 4))",
        step_no = value("e.request", "step"),
        thought = text("e.request", "thought"),
        action = text("e.request", "action"),
        observation = text("e.request", "observation"),
    );
    let tool_entry = format!(
        "json_build_object('seq', e.seq, 'tool', {name}, 'args', {args}, \
           'ok', e.status = 'ok', 'result', {result}, 'error', COALESCE({detail}, {error}))",
        name = text("e.request", "name"),
        args = text("e.request", "args"),
        result = text("e.response", "ok"),
        detail = text("e.response", "detail"),
        error = text("e.response", "error"),
    );
    let verdict_entry = format!(
        "json_build_object('seq', e.seq, 'validator', {validator}, 'kind', {kind}, \
           'verdict', {verdict_value}, 'reason', {reason}, 'category', {category}, \
           'score', {score_value})",
        validator = value("e.request", "validator"),
        kind = value("e.request", "kind"),
        verdict_value = value("e.response", "result,verdict"),
        reason = text("e.response", "result,reason"),
        category = value("e.response", "category"),
        score_value = value("e.response", "score"),
    );
    format!(
        "CREATE OR REPLACE VIEW {VIEW} AS
SELECT t.run_id, t.task_id, t.parent_id, t.depth, t.agent, t.description, t.status,
    (SELECT COALESCE(json_agg(m.model ORDER BY m.first_seq), '[]')::text FROM (
        SELECT e.model AS model, MIN(e.seq) AS first_seq FROM events e
        WHERE {of_task} AND e.kind = '{llm}' AND e.model IS NOT NULL
        GROUP BY e.model) m) AS models,
    t.started_at, t.finished_at, t.finished_at - t.started_at AS duration_ms,
    t.tokens_in, t.tokens_out, t.cost_usd, t.input_hash, t.output, t.error,
    (SELECT CASE WHEN COUNT(*) = 0 THEN NULL
                 WHEN COUNT(*) FILTER (WHERE {verdict_of} = 'fail') > 0 THEN 'fail'
                 WHEN COUNT(*) FILTER (WHERE {verdict_of} = 'uncertain') > 0 THEN 'uncertain'
                 ELSE 'pass' END
     FROM events e WHERE {latest_attempt}) AS validation_result,
    (SELECT AVG(CASE WHEN {score} IS NOT NULL THEN {score}::double precision / 10.0
                     WHEN {verdict_of} = 'pass' THEN 1.0
                     WHEN {verdict_of} = 'fail' THEN 0.0
                     ELSE 0.5 END)::double precision
     FROM events e WHERE {latest_attempt}) AS quality_score,
    (SELECT COALESCE(json_agg(v.entry ORDER BY v.seq), '[]')::text FROM (
        SELECT e.seq, {verdict_entry} AS entry FROM events e
        WHERE {of_task} AND e.kind = '{verdict}') v) AS validation,
    (SELECT COALESCE(json_agg(s.entry ORDER BY s.seq), '[]')::text FROM (
        SELECT e.seq, CASE e.kind WHEN '{step}' THEN {step_entry} ELSE {tool_entry} END AS entry
        FROM events e WHERE {of_task} AND e.kind IN ('{step}', '{call}')) s) AS reasoning_trace
FROM tasks t"
    )
}
