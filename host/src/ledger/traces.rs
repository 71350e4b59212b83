//! The `agent_traces` view (schema version 3, redefined at 4): one row per task, with what it cost,
//! how its output was judged, and its reasoning trace — the steps the agent recorded
//! (`trace.step`) interleaved, in the order they happened, with the tool calls they
//! led to — so that
//!
//! ```sql
//! SELECT reasoning_trace FROM agent_traces WHERE task_id = 3;
//! ```
//!
//! answers "what was it thinking" with plain `sqlite3`. The README documents the
//! columns; keep the two in step.
//!
//! The SQL is built from the kinds' names ([`EventKind::as_str`]), which live in one
//! place. It avoids newer SQLite syntax (no `->>`, no `ORDER BY` inside an
//! aggregate), so an operator's older `sqlite3` can still read the ledger: a view it
//! could not parse would make the whole schema unreadable.
//!
//! Strings longer than [`super::blobs::INLINE_LIMIT`] are stored in `blobs` behind a
//! `{"$blob": hash}` reference; the view resolves the reference for every text field
//! it shows (a step's thought, action and observation, a tool's name, arguments,
//! result and error, a validator's reason). Text nested deeper in a payload is not
//! shown by the view.

use super::EventKind;

/// The view's name.
pub const VIEW: &str = "agent_traces";

/// The text at JSON `path` of the payload column `col`, with a `{"$blob": hash}`
/// reference there resolved from `blobs`.
fn text(col: &str, path: &str) -> String {
    format!(
        "COALESCE((SELECT CAST(b.data AS TEXT) FROM blobs b \
           WHERE b.hash = json_extract({col}, '{path}.\"$blob\"')), \
         json_extract({col}, '{path}'))"
    )
}

/// `CREATE VIEW IF NOT EXISTS agent_traces …`: what migration 3 runs, and what a new
/// ledger gets with the rest of the schema.
pub fn view_sql() -> String {
    let step = EventKind::TraceStep.as_str();
    let call = EventKind::ToolsCall.as_str();
    let llm = EventKind::LlmComplete.as_str();
    let verdict = EventKind::ValidationResult.as_str();
    let retry = EventKind::ValidationRetry.as_str();
    // The same task's events: `e` ranges over them in the subqueries below.
    let of_task = "e.run_id = t.run_id AND e.task_id = t.task_id";
    // Validation verdicts of the task's latest attempt (a retry starts a new one).
    let latest_attempt = format!(
        "{of_task} AND e.kind = '{verdict}' AND e.seq > COALESCE((SELECT MAX(r.seq) FROM events r \
           WHERE r.run_id = t.run_id AND r.task_id = t.task_id AND r.kind = '{retry}'), 0)"
    );
    let verdict_of = "json_extract(e.response, '$.result.verdict')";
    let step_entry = format!(
        "json_object('seq', e.seq, 'step', json_extract(e.request, '$.step'), \
           'thought', {thought}, 'action', {action}, 'observation', {observation}, \
           'confidence', round(json_extract(e.request, '$.confidence'), 4))",
        thought = text("e.request", "$.thought"),
        action = text("e.request", "$.action"),
        observation = text("e.request", "$.observation"),
    );
    let tool_entry = format!(
        "json_object('seq', e.seq, 'tool', {name}, 'args', {args}, \
           'ok', json(CASE e.status WHEN 'ok' THEN 'true' ELSE 'false' END), \
           'result', {result}, 'error', COALESCE({detail}, {error}))",
        name = text("e.request", "$.name"),
        args = text("e.request", "$.args"),
        result = text("e.response", "$.ok"),
        detail = text("e.response", "$.detail"),
        error = text("e.response", "$.error"),
    );
    let verdict_entry = format!(
        "json_object('seq', e.seq, 'validator', json_extract(e.request, '$.validator'), \
           'kind', json_extract(e.request, '$.kind'), 'verdict', {verdict_of}, \
           'reason', {reason}, 'category', json_extract(e.response, '$.category'), \
           'score', json_extract(e.response, '$.score'))",
        reason = text("e.response", "$.result.reason"),
    );
    // `+e.kind` in `models` keeps SQLite on the primary key (the task's own events)
    // instead of `events_by_kind` (every LLM call of the run, for each task): 0.06 s
    // against 0.002 s for 401 tasks, seconds on thousands.
    format!(
        "CREATE VIEW IF NOT EXISTS {VIEW} AS
SELECT t.run_id, t.task_id, t.parent_id, t.depth, t.agent, t.description, t.status,
    (SELECT json_group_array(model) FROM (
        SELECT e.model AS model FROM events e
        WHERE {of_task} AND +e.kind = '{llm}' AND e.model IS NOT NULL
        GROUP BY e.model ORDER BY MIN(e.seq))) AS models,
    t.started_at, t.finished_at, t.finished_at - t.started_at AS duration_ms,
    t.tokens_in, t.tokens_out, t.cost_usd, t.input_hash, t.output, t.error,
    (SELECT CASE WHEN COUNT(*) = 0 THEN NULL
                 WHEN SUM({verdict_of} = 'fail') > 0 THEN 'fail'
                 WHEN SUM({verdict_of} = 'uncertain') > 0 THEN 'uncertain'
                 ELSE 'pass' END
     FROM events e WHERE {latest_attempt}) AS validation_result,
    (SELECT AVG(CASE WHEN json_extract(e.response, '$.score') IS NOT NULL
                         THEN json_extract(e.response, '$.score') / 10.0
                     WHEN {verdict_of} = 'pass' THEN 1.0
                     WHEN {verdict_of} = 'fail' THEN 0.0
                     ELSE 0.5 END)
     FROM events e WHERE {latest_attempt}) AS quality_score,
    (SELECT json_group_array(json(entry)) FROM (
        SELECT {verdict_entry} AS entry FROM events e
        WHERE {of_task} AND e.kind = '{verdict}' ORDER BY e.seq)) AS validation,
    (SELECT json_group_array(json(entry)) FROM (
        SELECT CASE e.kind WHEN '{step}' THEN {step_entry} ELSE {tool_entry} END AS entry
        FROM events e WHERE {of_task} AND e.kind IN ('{step}', '{call}') ORDER BY e.seq))
        AS reasoning_trace
FROM tasks t;"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Connection;
    use crate::ledger::blobs;
    use rusqlite::params;
    use serde_json::{Value, json};

    /// A ledger with the schema and one task (3 of run `r`, parent 1).
    fn ledger() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(super::super::schema::SCHEMA).unwrap();
        conn.execute_batch(&view_sql()).unwrap();
        conn.execute_batch(
            "INSERT INTO runs (run_id, agent, component_hash, input, status, config_json,
                               context_hash, started_at)
                 VALUES ('r', 'a', 'c', 'in', 'completed', '{}', 'h', 1);
             INSERT INTO blobs (hash, size, data) VALUES ('ih', 2, x'6869');
             INSERT INTO tasks (run_id, task_id, parent_id, depth, agent, component_hash,
                                description, status, input_hash, output, tokens_in,
                                tokens_out, cost_usd, created_at, started_at, finished_at)
                 VALUES ('r', 3, 1, 1, 'a', 'c', 'provision db', 'completed', 'ih', 'done',
                         30, 12, 0.25, 100, 100, 350);",
        )
        .unwrap();
        conn
    }

    /// Append an event to task 3, its long strings moved to `blobs` as the writer does.
    fn event(conn: &Connection, seq: i64, kind: EventKind, ok: bool, req: Value, resp: Value) {
        let (mut req, mut resp) = (req, resp);
        blobs::externalize(conn, &mut req).unwrap();
        blobs::externalize(conn, &mut resp).unwrap();
        conn.execute(
            "INSERT INTO events (run_id, task_id, seq, kind, status, request, response,
                                 request_hash, model, started_at, finished_at)
             VALUES ('r', 3, ?1, ?2, ?3, ?4, ?5, 'x', ?6, 0, 0)",
            params![
                seq,
                kind,
                if ok { "ok" } else { "error" },
                req.to_string(),
                resp.to_string(),
                (kind == EventKind::LlmComplete).then_some(format!("m{}", seq % 2)),
            ],
        )
        .unwrap();
    }

    fn column(conn: &Connection, col: &str) -> Value {
        // `task_id = '3'`: a quoted id matches, as the README's query writes it.
        let text: Option<String> = conn
            .query_row(
                &format!("SELECT CAST({col} AS TEXT) FROM agent_traces WHERE task_id = '3'"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        text.map_or(Value::Null, |t| {
            serde_json::from_str(&t).unwrap_or(Value::String(t))
        })
    }

    fn step(thought: &str, observation: &str) -> Value {
        json!({ "step": 1, "thought": thought, "action": "tool:cloud.create",
                "observation": observation, "confidence": 0.800000011920929 })
    }

    #[test]
    fn the_trace_interleaves_steps_and_tool_calls_in_order_and_resolves_blobs() {
        let conn = ledger();
        let long = "x".repeat(blobs::INLINE_LIMIT + 10);
        event(
            &conn,
            1,
            EventKind::LlmComplete,
            true,
            json!({}),
            json!({"text": "plan"}),
        );
        event(
            &conn,
            2,
            EventKind::TraceStep,
            true,
            step("plan it", "db"),
            Value::Null,
        );
        event(
            &conn,
            3,
            EventKind::ToolsCall,
            true,
            json!({"name": "cloud", "args": "{\"op\":\"create\"}"}),
            json!({"ok": "{\"id\":\"res-1\"}"}),
        );
        event(
            &conn,
            4,
            EventKind::TraceStep,
            true,
            step(&long, "res-1"),
            Value::Null,
        );
        event(
            &conn,
            5,
            EventKind::ToolsCall,
            false,
            json!({"name": "cloud", "args": "{}"}),
            json!({"error": "Failed(..)", "error_kind": "failed", "detail": "quota"}),
        );
        event(
            &conn,
            6,
            EventKind::LlmComplete,
            true,
            json!({}),
            json!({"text": "ok"}),
        );
        event(
            &conn,
            7,
            EventKind::LlmComplete,
            true,
            json!({}),
            json!({"text": "ok"}),
        );

        let trace = column(&conn, "reasoning_trace");
        assert_eq!(
            trace,
            json!([
                {"seq": 2, "step": 1, "thought": "plan it", "action": "tool:cloud.create",
                 "observation": "db", "confidence": 0.8},
                {"seq": 3, "tool": "cloud", "args": "{\"op\":\"create\"}", "ok": true,
                 "result": "{\"id\":\"res-1\"}", "error": null},
                {"seq": 4, "step": 1, "thought": long, "action": "tool:cloud.create",
                 "observation": "res-1", "confidence": 0.8},
                {"seq": 5, "tool": "cloud", "args": "{}", "ok": false, "result": null,
                 "error": "quota"},
            ])
        );
        assert!(
            sqlite_text(&conn, "SELECT request FROM events WHERE seq = 4").contains("$blob"),
            "the long thought was stored as a blob reference"
        );
        assert_eq!(column(&conn, "models"), json!(["m1", "m0"]));
        assert_eq!(column(&conn, "duration_ms"), json!(250));
        assert_eq!(column(&conn, "cost_usd"), json!(0.25));
        assert_eq!(column(&conn, "input_hash"), json!("ih"));
        assert_eq!(column(&conn, "parent_id"), json!(1));
        assert_eq!(column(&conn, "validation_result"), Value::Null);
        assert_eq!(column(&conn, "quality_score"), Value::Null);
        assert_eq!(column(&conn, "validation"), json!([]));
    }

    fn sqlite_text(conn: &Connection, sql: &str) -> String {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn validation_and_quality_are_those_of_the_latest_attempt() {
        let conn = ledger();
        let verdict = |seq, v: Value, score: Value| {
            let ok = v["verdict"] != "fail";
            event(
                &conn,
                seq,
                EventKind::ValidationResult,
                ok,
                json!({"validator": format!("v{seq}"), "kind": "judge"}),
                json!({"result": v, "category": "semantic", "score": score, "model": "m"}),
            );
        };
        verdict(1, json!({"verdict": "fail", "reason": "wrong"}), json!(2.0));
        event(
            &conn,
            2,
            EventKind::ValidationRetry,
            true,
            json!({}),
            json!({}),
        );
        assert_eq!(
            column(&conn, "validation_result"),
            Value::Null,
            "no verdict yet"
        );
        verdict(3, json!({"verdict": "pass"}), Value::Null);
        verdict(4, json!({"verdict": "pass"}), json!(8.0));
        assert_eq!(column(&conn, "validation_result"), json!("pass"));
        let quality = column(&conn, "quality_score").as_f64().unwrap();
        assert!((quality - 0.9).abs() < 1e-9, "{quality}");
        let all = column(&conn, "validation");
        assert_eq!(all.as_array().map(Vec::len), Some(3), "{all}");
        assert_eq!(all[0]["verdict"], "fail");
        assert_eq!(all[0]["reason"], "wrong");
        assert_eq!(all[0]["score"], 2.0);
        verdict(
            5,
            json!({"verdict": "uncertain", "reason": "?"}),
            Value::Null,
        );
        assert_eq!(column(&conn, "validation_result"), json!("uncertain"));
        verdict(6, json!({"verdict": "fail", "reason": "no"}), Value::Null);
        assert_eq!(column(&conn, "validation_result"), json!("fail"));
    }
}
