//! The ledger's metrics: RED (rate, errors, duration) per model and per agent, tokens
//! and cost, tasks and runs by status, budget used — computed from the whole ledger,
//! so every process reading the same file reports the same totals. [`read`] makes
//! them; [`super::metrics_export`] writes them as Prometheus text (`/metrics`) and as
//! an OTLP metrics request.
//!
//! Counters and histograms are cumulative over the ledger's life (their start is its
//! first run); gauges (`agentflow.tasks`, `agentflow.runs`) count rows by their
//! current status.

use crate::ledger::{Connection, EventKind, LedgerError};
use std::collections::{BTreeMap, HashMap};

/// Bucket bounds (seconds) of the duration histograms.
pub const DURATION_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Bucket bounds of `agentflow.budget.used` (spent / limit).
pub const RATIO_BOUNDS: &[f64] = &[0.1, 0.25, 0.5, 0.75, 0.9, 1.0];

/// What a family measures and how it adds up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// Monotonic, cumulative.
    Counter,
    /// A current value.
    Gauge,
    /// A distribution over these bucket bounds.
    Histogram(&'static [f64]),
}

/// A label: its Prometheus name and its OpenTelemetry attribute key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    pub prom: &'static str,
    pub otel: &'static str,
}

pub const AGENT: Label = Label {
    prom: "agent",
    otel: "agentflow.agent",
};
pub const MODEL: Label = Label {
    prom: "model",
    otel: "gen_ai.request.model",
};
pub const PROVIDER: Label = Label {
    prom: "provider",
    otel: "gen_ai.provider.name",
};
pub const TOKEN_TYPE: Label = Label {
    prom: "type",
    otel: "gen_ai.token.type",
};
pub const TOOL: Label = Label {
    prom: "tool",
    otel: "gen_ai.tool.name",
};
pub const STATUS: Label = Label {
    prom: "status",
    otel: "agentflow.status",
};

/// One series' labels, in a fixed order.
pub type Labels = Vec<(Label, String)>;

/// One series' value.
#[derive(Clone, Debug, PartialEq)]
pub enum Point {
    Number(f64),
    /// `counts[i]`: observations in bucket `i` (not cumulative; the last is `+Inf`).
    Histogram {
        counts: Vec<u64>,
        sum: f64,
        count: u64,
    },
}

/// A metric and its series.
#[derive(Clone, Debug)]
pub struct Family {
    /// The OpenTelemetry name, e.g. `agentflow.llm.calls`.
    pub name: &'static str,
    /// The Prometheus name, e.g. `agentflow_llm_calls_total` (a histogram's base name).
    pub prom: &'static str,
    pub help: &'static str,
    /// UCUM unit: `s`, `USD`, `{call}`, …
    pub unit: &'static str,
    pub kind: Kind,
    pub series: BTreeMap<Labels, Point>,
}

impl Family {
    fn new(
        name: &'static str,
        prom: &'static str,
        unit: &'static str,
        kind: Kind,
        help: &'static str,
    ) -> Family {
        Family {
            name,
            prom,
            help,
            unit,
            kind,
            series: BTreeMap::new(),
        }
    }

    /// Add `v` to a counter's or gauge's series.
    pub fn add(&mut self, labels: &Labels, v: f64) {
        match self
            .series
            .entry(labels.clone())
            .or_insert(Point::Number(0.0))
        {
            Point::Number(n) => *n += v,
            Point::Histogram { .. } => unreachable!("add on histogram {}", self.name),
        }
    }

    /// Record one observation in a histogram's series.
    pub fn observe(&mut self, labels: &Labels, v: f64) {
        let Kind::Histogram(bounds) = self.kind else {
            unreachable!("observe on {}", self.name)
        };
        let point = self
            .series
            .entry(labels.clone())
            .or_insert_with(|| Point::Histogram {
                counts: vec![0; bounds.len() + 1],
                sum: 0.0,
                count: 0,
            });
        if let Point::Histogram { counts, sum, count } = point {
            let bucket = bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len());
            counts[bucket] += 1;
            *sum += v;
            *count += 1;
        }
    }
}

/// The ledger's metrics at one moment.
#[derive(Clone, Debug)]
pub struct LedgerMetrics {
    pub families: Vec<Family>,
    /// When the counters started: the ledger's first run (ms since the epoch).
    pub start_ms: i64,
    /// When they were read.
    pub now_ms: i64,
}

impl LedgerMetrics {
    /// The family called `name` (OpenTelemetry name).
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }
}

/// Each family: OpenTelemetry name, Prometheus name, unit, kind, help — in the order
/// they are shown.
#[rustfmt::skip]
const FAMILIES: &[(&str, &str, &str, Kind, &str)] = &[
    ("agentflow.llm.calls", "agentflow_llm_calls_total", "{call}", Kind::Counter,
     "LLM calls (failed provider attempts, judges' and merges' calls included), per agent, model and provider."),
    ("agentflow.llm.errors", "agentflow_llm_errors_total", "{call}", Kind::Counter,
     "LLM calls that failed."),
    ("agentflow.llm.duration", "agentflow_llm_duration_seconds", "s", Kind::Histogram(DURATION_BOUNDS),
     "LLM call latency."),
    ("agentflow.llm.tokens", "agentflow_llm_tokens_total", "{token}", Kind::Counter,
     "Tokens of LLM calls, by type (input, output)."),
    ("agentflow.llm.cost", "agentflow_llm_cost_usd_total", "USD", Kind::Counter,
     "Cost of LLM calls in US dollars."),
    ("agentflow.tool.calls", "agentflow_tool_calls_total", "{call}", Kind::Counter,
     "Tool calls (compensations included), per agent and tool."),
    ("agentflow.tool.errors", "agentflow_tool_errors_total", "{call}", Kind::Counter,
     "Tool calls that failed."),
    ("agentflow.tool.duration", "agentflow_tool_duration_seconds", "s", Kind::Histogram(DURATION_BOUNDS),
     "Tool call latency."),
    ("agentflow.tasks", "agentflow_tasks", "{task}", Kind::Gauge,
     "Tasks by agent and current status."),
    ("agentflow.task.duration", "agentflow_task_duration_seconds", "s", Kind::Histogram(DURATION_BOUNDS),
     "Duration of finished tasks, per agent."),
    ("agentflow.runs", "agentflow_runs", "{run}", Kind::Gauge,
     "Runs by agent and current status."),
    ("agentflow.run.cost", "agentflow_run_cost_usd_total", "USD", Kind::Counter,
     "Cost of runs in US dollars (a fork's copied cost included), per agent."),
    ("agentflow.budget.used", "agentflow_budget_used_ratio", "1", Kind::Histogram(RATIO_BOUNDS),
     "Share of its budget a finished run spent, per agent."),
];

/// The families, empty.
fn families() -> Vec<Family> {
    FAMILIES
        .iter()
        .map(|&(name, prom, unit, kind, help)| Family::new(name, prom, unit, kind, help))
        .collect()
}

/// The kinds counted as LLM calls.
const LLM_KINDS: [EventKind; 4] = [
    EventKind::LlmComplete,
    EventKind::LlmAttempt,
    EventKind::ValidationJudge,
    EventKind::MergeLlm,
];

fn in_list(kinds: &[EventKind]) -> String {
    kinds
        .iter()
        .map(|k| format!("'{}'", k.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Model name → provider, from the catalogs the runs recorded (the latest run's wins).
fn providers(conn: &Connection) -> Result<HashMap<String, String>, LedgerError> {
    let mut stmt = conn.prepare(
        "SELECT json_extract(c.value, '$.name'), json_extract(c.value, '$.provider')
         FROM runs r, json_each(r.config_json, '$.catalog') c
         WHERE json_valid(r.config_json) ORDER BY r.started_at",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Option<String>>(0)?,
            r.get::<_, Option<String>>(1)?,
        ))
    })?;
    let mut out = HashMap::new();
    for row in rows {
        if let (Some(model), Some(provider)) = row? {
            out.insert(model, provider);
        }
    }
    Ok(out)
}

/// The ledger's metrics now.
pub fn read(conn: &Connection) -> Result<LedgerMetrics, LedgerError> {
    let mut fams = families();
    let providers = providers(conn)?;
    let idx = |fams: &[Family], name: &str| fams.iter().position(|f| f.name == name).unwrap();
    let (calls, errors, latency, tokens, cost) = (
        idx(&fams, "agentflow.llm.calls"),
        idx(&fams, "agentflow.llm.errors"),
        idx(&fams, "agentflow.llm.duration"),
        idx(&fams, "agentflow.llm.tokens"),
        idx(&fams, "agentflow.llm.cost"),
    );
    let join = "JOIN tasks t ON t.run_id = e.run_id AND t.task_id = e.task_id";
    let mut stmt = conn.prepare(&format!(
        "SELECT t.agent, e.model, e.status, e.finished_at - e.started_at, e.tokens_in,
                e.tokens_out, e.cost_usd
         FROM events e {join} WHERE e.kind IN ({}) AND e.model IS NOT NULL",
        in_list(&LLM_KINDS)
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (agent, model): (String, String) = (r.get(0)?, r.get(1)?);
        let provider = providers.get(&model).cloned().unwrap_or_default();
        let labels = vec![(AGENT, agent), (MODEL, model), (PROVIDER, provider)];
        fams[calls].add(&labels, 1.0);
        if r.get::<_, String>(2)? != "ok" {
            fams[errors].add(&labels, 1.0);
        }
        fams[latency].observe(&labels, r.get::<_, i64>(3)?.max(0) as f64 / 1000.0);
        for (i, ty) in [(4, "input"), (5, "output")] {
            let mut l = labels.clone();
            l.push((TOKEN_TYPE, ty.to_string()));
            fams[tokens].add(&l, r.get::<_, i64>(i)? as f64);
        }
        fams[cost].add(&labels, r.get(6)?);
    }
    drop(rows);
    drop(stmt);

    let (calls, errors, latency) = (
        idx(&fams, "agentflow.tool.calls"),
        idx(&fams, "agentflow.tool.errors"),
        idx(&fams, "agentflow.tool.duration"),
    );
    let tool_kinds = [EventKind::ToolsCall, EventKind::RecoveryCompensate];
    let mut stmt = conn.prepare(&format!(
        "SELECT t.agent, COALESCE(json_extract(e.request, '$.name'), ''), e.status,
                e.finished_at - e.started_at
         FROM events e {join} WHERE e.kind IN ({}) AND json_valid(e.request)",
        in_list(&tool_kinds)
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let labels = vec![
            (AGENT, r.get::<_, String>(0)?),
            (TOOL, r.get::<_, String>(1)?),
        ];
        fams[calls].add(&labels, 1.0);
        if r.get::<_, String>(2)? != "ok" {
            fams[errors].add(&labels, 1.0);
        }
        fams[latency].observe(&labels, r.get::<_, i64>(3)?.max(0) as f64 / 1000.0);
    }
    drop(rows);
    drop(stmt);

    let tasks = idx(&fams, "agentflow.tasks");
    let mut stmt = conn.prepare("SELECT agent, status, COUNT(*) FROM tasks GROUP BY 1, 2")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let labels = vec![
            (AGENT, r.get::<_, String>(0)?),
            (STATUS, r.get::<_, String>(1)?),
        ];
        fams[tasks].add(&labels, r.get::<_, i64>(2)? as f64);
    }
    drop(rows);
    drop(stmt);
    let durations = idx(&fams, "agentflow.task.duration");
    let mut stmt = conn.prepare(
        "SELECT agent, finished_at - started_at FROM tasks
         WHERE finished_at IS NOT NULL AND started_at IS NOT NULL",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let labels = vec![(AGENT, r.get::<_, String>(0)?)];
        fams[durations].observe(&labels, r.get::<_, i64>(1)?.max(0) as f64 / 1000.0);
    }
    drop(rows);
    drop(stmt);

    let (runs, run_cost, budget) = (
        idx(&fams, "agentflow.runs"),
        idx(&fams, "agentflow.run.cost"),
        idx(&fams, "agentflow.budget.used"),
    );
    let mut stmt = conn
        .prepare("SELECT agent, status, cost_usd, budget_usd, finished_at IS NOT NULL FROM runs")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let agent: String = r.get(0)?;
        let labels = vec![(AGENT, agent.clone()), (STATUS, r.get::<_, String>(1)?)];
        fams[runs].add(&labels, 1.0);
        let spent: f64 = r.get(2)?;
        let by_agent = vec![(AGENT, agent)];
        fams[run_cost].add(&by_agent, spent);
        if let (Some(limit), true) = (r.get::<_, Option<f64>>(3)?, r.get::<_, bool>(4)?)
            && limit > 0.0
        {
            fams[budget].observe(&by_agent, spent / limit);
        }
    }
    drop(rows);
    drop(stmt);

    let now_ms = crate::ledger::now_ms();
    let start_ms: Option<i64> =
        conn.query_row("SELECT MIN(started_at) FROM runs", [], |r| r.get(0))?;
    Ok(LedgerMetrics {
        families: fams,
        start_ms: start_ms.unwrap_or(now_ms).min(now_ms),
        now_ms,
    })
}
