//! Shared helpers for the end-to-end tests (fake servers, fixtures). Not tests
//! themselves, and nothing here is specific to one test module.

pub mod browser;
pub mod cli;
pub mod fake_http;
pub mod guard;
pub mod llm;
pub mod otlp;
pub mod pg;
pub mod python;

use agentflow::ledger::query::{self, EventRow, TaskRow};
use agentflow::{Host, HostConfig, RunOptions, RunReport};
use std::path::{Path, PathBuf};

/// A scratch directory under cargo's test tmpdir, removed on drop (a
/// `tempfile::TempDir` named after the test's label, so a kept one is easy to find).
/// It also owns the PostgreSQL databases its [`TempDir::ledger`]s were given.
pub struct TempDir(
    tempfile::TempDir,
    std::sync::Mutex<std::collections::HashMap<String, pg::PgDb>>,
);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{label}-"))
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        TempDir(dir, Default::default())
    }

    /// The `--db` of the ledger named `name` for this test: the file `name` in this
    /// directory, or — when the suite runs on PostgreSQL (`AGENTFLOW_TEST_LEDGER=postgres`)
    /// — a fresh database of its own on the test server (the same one for the same
    /// name), dropped with this directory.
    pub fn ledger(&self, name: &str) -> PathBuf {
        if !pg::ledgers_on_postgres() {
            return self.join(name);
        }
        let mut dbs = self.1.lock().unwrap();
        let db = dbs.entry(name.to_string()).or_insert_with(|| {
            pg::PgDb::new(name)
                .expect("AGENTFLOW_TEST_LEDGER=postgres needs AGENTFLOW_TEST_POSTGRES")
        });
        db.db()
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.path().join(p)
    }

    /// Write `content` to the file `name` in this directory; its path.
    pub fn file(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }
}

/// Compiled components are cached here across tests (and test runs).
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("component-cache")
}

/// Path of a compiled example agent.
pub fn example(name: &str) -> PathBuf {
    agentflow_tests::example(name)
}

/// A path in the repository (e.g. `examples/refactor/mock-rules.toml`).
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A host on a fresh ledger in `dir`, configured by `toml`.
pub fn host(dir: &TempDir, toml: &str) -> Host {
    let mut config = HostConfig::from_toml(toml).expect("test config");
    config.cache_dir = Some(cache_dir());
    Host::new(config, dir.ledger("ledger.db")).expect("host")
}

/// A new scratch directory named after `label` and a [`host`] on a ledger in it.
pub fn temp_host(label: &str, toml: &str) -> (TempDir, Host) {
    let dir = TempDir::new(label);
    let host = host(&dir, toml);
    (dir, host)
}

/// A host on the ledger `db` with the default configuration (and the test cache).
pub fn host_at(db: &Path) -> anyhow::Result<Host> {
    let config = HostConfig {
        cache_dir: Some(cache_dir()),
        ..Default::default()
    };
    Host::new(config, db)
}

/// Run options granting these tools.
pub fn grant(tools: &[&str]) -> RunOptions {
    RunOptions {
        grants: tools.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// `[tools]` allowing `http_fetch` to reach the local fake servers.
pub const ALLOW_LOCAL_HTTP: &str =
    "[tools]\nhttp_allow_hosts = [\"127.0.0.1\"]\nhttp_allow_private = true\n";

/// Run the `scripted` agent with these operations; returns the report and the parsed
/// per-operation results (empty when the run failed).
pub async fn run_scripted(
    host: &Host,
    ops: serde_json::Value,
    opts: RunOptions,
) -> (RunReport, Vec<serde_json::Value>) {
    let report = host
        .run_file(&example("scripted"), &ops.to_string(), opts)
        .await
        .expect("run");
    let results = report
        .output
        .as_deref()
        .map(|o| serde_json::from_str(o).expect("scripted output is JSON"))
        .unwrap_or_default();
    (report, results)
}

/// All events of a run.
pub fn events(host: &Host, run_id: &str) -> Vec<EventRow> {
    let conn = host.ledger().reader().unwrap();
    query::events(&conn, run_id, None).unwrap()
}

/// The events of one kind, in order.
pub fn of_kind(events: &[EventRow], kind: &str) -> Vec<EventRow> {
    events.iter().filter(|e| e.kind == kind).cloned().collect()
}

/// The first event of `kind` in a run (panics if there is none).
pub fn first_event(host: &Host, run_id: &str, kind: &str) -> EventRow {
    events(host, run_id)
        .into_iter()
        .find(|e| e.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} event in run {run_id}"))
}

/// All tasks of a run.
pub fn tasks(host: &Host, run_id: &str) -> Vec<TaskRow> {
    query::tasks(&host.ledger().reader().unwrap(), run_id).unwrap()
}

/// `inspect`'s text view of a run.
pub fn inspect_text(host: &Host, run_id: &str) -> String {
    let conn = host.ledger().reader().unwrap();
    let view = agentflow::observe::inspect::load(&conn, run_id)
        .unwrap()
        .unwrap();
    agentflow::observe::inspect::render(&view)
}

/// The single value `query` selects from the ledger file `db` (its first row).
pub fn sql<T: rusqlite::types::FromSql>(db: &Path, query: &str) -> T {
    connect(db).query_row(query, [], |r| r.get(0)).unwrap()
}

/// A connection to the ledger `db` (a SQLite file or a PostgreSQL URL).
pub fn connect(db: impl AsRef<Path>) -> agentflow::ledger::Connection {
    let db = db.as_ref();
    match agentflow::ledger::postgres_url(db) {
        Some(url) => agentflow::ledger::Connection::connect_postgres(url).unwrap(),
        None => agentflow::ledger::Connection::open(db).unwrap(),
    }
}

/// Whether the ledger `db` holds a run yet (it may not exist yet).
pub fn has_a_run(db: &Path) -> bool {
    if agentflow::ledger::postgres_url(db).is_none() && !db.exists() {
        return false;
    }
    connect(db)
        .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get::<_, i64>(0))
        .is_ok_and(|n| n > 0)
}

/// Run these SQL statements on the ledger file `db` (to damage or rewind it).
pub fn sql_batch(db: &Path, statements: &str) {
    connect(db).execute_batch(statements).unwrap();
}

/// The id of the (first) run in the ledger file `db`.
pub fn only_run_id(db: &Path) -> String {
    sql(db, "SELECT run_id FROM runs")
}

/// The kinds of a task's events, without clock/random flushes and the closing
/// resource-usage and budget records.
pub fn kinds(events: &[EventRow], task: u64) -> Vec<String> {
    const NOT_CALLS: &[&str] = &["wasi.nondet", "task.usage", "budget.summary"];
    events
        .iter()
        .filter(|e| e.task_id == task && !NOT_CALLS.contains(&e.kind.as_str()))
        .map(|e| e.kind.to_string())
        .collect()
}

/// A test tool that measures concurrency exactly, so tests check ordering and limits
/// with counters the tasks update instead of timestamps and sleeps:
/// `{"op": "enter"|"leave", "key": K, "who": W}`. It keeps, per key, how many tasks are
/// inside and the most that ever were, and one log of every enter/leave in order.
#[derive(Clone, Default)]
pub struct Gauge(std::sync::Arc<std::sync::Mutex<GaugeState>>);

#[derive(Default)]
pub struct GaugeState {
    pub active: std::collections::HashMap<String, i64>,
    pub max: std::collections::HashMap<String, i64>,
    /// `(op, key, who)` in the order they happened.
    pub log: Vec<(String, String, String)>,
}

impl Gauge {
    /// The most tasks ever inside `key` at once.
    pub fn max(&self, key: &str) -> i64 {
        self.0.lock().unwrap().max.get(key).copied().unwrap_or(0)
    }

    /// Position of `op` by `who` in the log.
    pub fn position(&self, op: &str, who: &str) -> usize {
        let st = self.0.lock().unwrap();
        st.log
            .iter()
            .position(|(o, _, w)| o == op && w == who)
            .unwrap_or_else(|| panic!("no {op} by {who} in {:?}", st.log))
    }

    /// The scripted ops that enter `key` as `who`, run `inner`, and leave.
    pub fn around(key: &str, who: &str, inner: Vec<serde_json::Value>) -> serde_json::Value {
        let g = |op: &str| serde_json::json!({"tool": {"name": "gauge", "args": {"op": op, "key": key, "who": who}}});
        let mut ops = vec![g("enter")];
        ops.extend(inner);
        ops.push(g("leave"));
        serde_json::Value::Array(ops)
    }
}

#[async_trait::async_trait]
impl agentflow::tools::Tool for Gauge {
    fn info(&self) -> agentflow::tools::ToolInfo {
        agentflow::tools::ToolInfo {
            name: "gauge".into(),
            description: "test concurrency gauge".into(),
            args_schema: serde_json::json!({}),
            side_effect: agentflow::tools::SideEffect::None,
            undo: None,
        }
    }

    async fn call(
        &self,
        _ctx: &agentflow::tools::ToolCallCtx,
        args: serde_json::Value,
    ) -> Result<String, agentflow::tools::ToolError> {
        let field = |k: &str| args[k].as_str().unwrap_or_default().to_string();
        let (op, key, who) = (field("op"), field("key"), field("who"));
        let mut st = self.0.lock().unwrap();
        let now = {
            let active = st.active.entry(key.clone()).or_default();
            *active += if op == "enter" { 1 } else { -1 };
            *active
        };
        let max = st.max.entry(key.clone()).or_default();
        *max = (*max).max(now);
        st.log.push((op, key, who));
        Ok(now.to_string())
    }
}

/// The `ticket` example tool's files under `<dir>/data/tickets`, parsed.
pub fn tickets(dir: &TempDir) -> Vec<serde_json::Value> {
    let Ok(entries) = std::fs::read_dir(dir.join("data/tickets")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .collect()
}

/// The most of `times` (in the order they happened) that fall in one window: from one
/// of them to less than `width` later. What a quota test holds against the quota.
pub fn most_in_a_window<T, D>(times: &[T], width: D) -> usize
where
    T: Copy + std::ops::Sub<Output = D>,
    D: PartialOrd + Copy,
{
    (0..times.len())
        .map(|i| times[i..].iter().filter(|&&t| t - times[i] < width).count())
        .max()
        .unwrap_or(0)
}

/// The most of `spans` (start, end) open at once; an end and a start at the same
/// instant do not overlap.
pub fn most_at_once(spans: impl IntoIterator<Item = (i64, i64)>) -> usize {
    let mut edges: Vec<(i64, i32)> = spans
        .into_iter()
        .flat_map(|(start, end)| [(start, 1), (end, -1)])
        .collect();
    edges.sort();
    let (mut open, mut most) = (0i32, 0i32);
    for (_, delta) in edges {
        open += delta;
        most = most.max(open);
    }
    most as usize
}
