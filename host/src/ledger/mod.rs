//! The write-ahead ledger: every run, task and host call, in SQLite.
//!
//! One writer thread owns the only write connection. Callers send it closures and
//! wait for the reply, which is sent only after the transaction holding their write
//! has committed (`synchronous=FULL`), so a result is durable before the guest sees
//! it. Appends that arrive together share one transaction (group commit), which keeps
//! the fsync count low when many agents run at once. Sequence numbers are assigned by
//! the writer from committed state, never from a caller-side buffer.
//!
//! Reading (`agentflow runs`, `inspect`) uses separate read-only connections; see
//! [`query`]. This module is not for deciding *what* to record: that is the
//! capabilities' job.
//!
//! Every SQL statement of the host is in this module: other modules call typed
//! functions — [`Writer`] methods inside a write job, functions taking a read
//! [`Connection`] — grouped by topic: [`kv`], [`workspace`] (copy-on-write views),
//! [`merges`], [`reviews`] (approvals and reviews), [`checkpoints`], [`validators`],
//! [`tasks`], [`fork`], and [`perf`] (the performance DB beside the ledger).

pub mod blobs;
pub mod checkpoints;
mod error;
pub mod existing;
pub mod fault;
pub mod fork;
pub mod integrity;
pub mod kinds;
pub mod kv;
pub mod merges;
pub mod perf;
pub mod query;
pub mod reviews;
pub mod schema;
mod status;
pub mod tasks;
pub mod validators;
pub mod workspace;
mod writer;

pub use error::{LedgerError, SqlError, SqlResult};
pub use kinds::EventKind;
/// A connection to the ledger: a read connection from [`Ledger::reader`] or
/// [`Ledger::with_reader`], or the writer's inside a write job. Callers pass it to the
/// typed functions of this module; they never run statements on it themselves.
pub use rusqlite::Connection;
use rusqlite::params;
pub use status::{ApprovalStatus, MergeStatus, ReviewStatus, Status};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The replay-matching hash of a call's identity (canonical JSON, SHA-256).
pub fn identity_hash(identity: &serde_json::Value) -> String {
    blobs::sha256_hex_json(identity)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new run.
#[derive(Clone, Debug)]
pub struct NewRun {
    pub run_id: String,
    pub agent: String,
    pub component_hash: String,
    pub input: String,
    pub config_json: String,
    /// Hash of what determines the run's behaviour (component, input, config).
    pub context_hash: String,
    pub budget_usd: Option<f64>,
    /// The component itself, stored in `blobs` so the run can be resumed from the ledger alone.
    pub component: std::sync::Arc<[u8]>,
}

/// A new task of a run.
#[derive(Clone, Debug)]
pub struct NewTask {
    pub run_id: String,
    pub task_id: u64,
    pub parent_id: Option<u64>,
    pub depth: u32,
    pub agent: String,
    pub component_hash: String,
    pub description: String,
    pub input: String,
    /// `parent:call-number` of the spawn that created it: unique per run, so a parent
    /// replaying after a crash finds its child instead of spawning a twin.
    pub spawn_key: Option<String>,
    pub dedup_key: Option<String>,
    /// JSON list of dependencies (`{"after": id}` / `{"data_from": id}`).
    pub depends_on: String,
    /// The component, when it is not yet in `blobs`.
    pub component: Option<std::sync::Arc<[u8]>>,
    /// Its own budget share (USD), if it was given one.
    pub budget_usd: Option<f64>,
    /// JSON list of the locks it takes while running (resources, exclusions).
    pub resources: String,
    /// Its own wall-clock limit (ms).
    pub timeout_ms: Option<u64>,
}

/// One host call, as appended to `events`.
#[derive(Clone, Debug)]
pub struct EventRecord {
    pub run_id: String,
    pub task_id: u64,
    /// `interface.function`, e.g. `llm.complete`, `tools.call`, `wasi.nondet`.
    pub kind: EventKind,
    pub ok: bool,
    pub request: serde_json::Value,
    pub response: serde_json::Value,
    /// What identifies the call for replay matching (hashed into `request_hash`);
    /// `None` means the whole request.
    pub identity: Option<serde_json::Value>,
    pub model: Option<String>,
    pub tokens_in: u32,
    pub tokens_out: u32,
    pub cost_usd: f64,
    pub started_at: i64,
    pub finished_at: i64,
}

impl EventRecord {
    /// An event without model usage (no model, tokens or cost), timed now.
    pub fn note(
        run_id: impl Into<String>,
        task_id: u64,
        kind: EventKind,
        ok: bool,
        request: serde_json::Value,
        response: serde_json::Value,
    ) -> EventRecord {
        let now = now_ms();
        EventRecord {
            run_id: run_id.into(),
            task_id,
            kind,
            ok,
            request,
            response,
            identity: None,
            model: None,
            tokens_in: 0,
            tokens_out: 0,
            cost_usd: 0.0,
            started_at: now,
            finished_at: now,
        }
    }
}

type Job = Box<dyn FnOnce(&mut Writer) + Send>;

/// State owned by the writer thread.
pub struct Writer {
    conn: Connection,
    next_seq: HashMap<(String, u64), u64>,
    /// Replies of the current group, sent once it has committed.
    pending_replies: Vec<Reply>,
    /// Events appended in the current group (for fault injection).
    group_events: u64,
}

/// Handle to the ledger; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    jobs: mpsc::Sender<Job>,
    path: PathBuf,
    /// Read connections kept for [`Ledger::with_reader`] (a fresh connection parses
    /// the schema on its first query, which costs more than most hot-path reads).
    readers: std::sync::Arc<std::sync::Mutex<Vec<Connection>>>,
}

/// Read connections [`Ledger::with_reader`] keeps for reuse.
const MAX_IDLE_READERS: usize = 4;

/// Records a task's end with its totals. `host_calls` counts the guest's calls: every
/// event but those of a kind whose replay class is not [`kinds::ReplayClass::Call`] —
/// those that accompany a call, and the intents recorded before side-effecting tool calls.
static FINISH_TASK_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let not_calls = EventKind::ALL
        .iter()
        .filter(|k| k.replay_class() != kinds::ReplayClass::Call)
        .map(|k| format!("'{k}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "UPDATE tasks SET status = ?3, output = ?4, error = ?5, finished_at = ?6,
            tokens_in = (SELECT COALESCE(SUM(tokens_in), 0) FROM events e WHERE e.run_id = ?1 AND e.task_id = ?2),
            tokens_out = (SELECT COALESCE(SUM(tokens_out), 0) FROM events e WHERE e.run_id = ?1 AND e.task_id = ?2),
            cost_usd = (SELECT COALESCE(SUM(cost_usd), 0) FROM events e WHERE e.run_id = ?1 AND e.task_id = ?2),
            host_calls = (SELECT COUNT(*) FROM events e WHERE e.run_id = ?1 AND e.task_id = ?2
                          AND e.kind NOT IN ({not_calls}))
         WHERE run_id = ?1 AND task_id = ?2"
    )
});

/// Most jobs committed in one transaction.
const MAX_GROUP: usize = 512;

fn open_connection(path: &Path) -> Result<Connection, LedgerError> {
    let conn = Connection::open(path).map_err(|source| LedgerError::Open {
        path: path.to_owned(),
        source,
    })?;
    conn.execute_batch(schema::PRAGMAS)?;
    Ok(conn)
}

impl Ledger {
    /// Open (or create) the ledger at `path` and start its writer thread.
    pub fn open(path: impl AsRef<Path>) -> Result<Ledger, LedgerError> {
        let path = path.as_ref().to_owned();
        // A mistyped `--db` directory is an error, not a new tree of directories.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(LedgerError::NoDirectory {
                path: path.clone(),
                dir: dir.to_path_buf(),
            });
        }
        let conn = open_connection(&path)?;
        schema::prepare(&conn, &path)?;
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("agentflow-ledger".into())
            .spawn(move || writer_loop(conn, rx))
            .expect("spawn ledger writer thread");
        Ok(Ledger {
            jobs,
            path,
            readers: Default::default(),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `PRAGMA quick_check` on the ledger; `Damaged` with what it found unless "ok".
    pub fn quick_check(&self) -> Result<(), LedgerError> {
        let conn = self.reader()?;
        let found = integrity::quick_check(&conn)?;
        if found == ["ok"] {
            return Ok(());
        }
        Err(LedgerError::Damaged {
            path: self.path.clone(),
            detail: found.join("; "),
        })
    }

    /// Copy everything in the write-ahead log into the database file and truncate the
    /// log (`PRAGMA wal_checkpoint(TRUNCATE)`), so the `.db` file alone holds every
    /// committed run. Waits up to `wait` for other connections to let go.
    pub fn checkpoint(&self, wait: std::time::Duration) -> Result<(), LedgerError> {
        // Never create the file: a host dropped after its ledger was removed does nothing.
        let conn = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| LedgerError::Open {
            path: self.path.clone(),
            source,
        })?;
        conn.busy_timeout(wait)?;
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy != 0 {
            return Err(LedgerError::CheckpointBusy {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// A new read-only connection for queries.
    pub fn reader(&self) -> Result<Connection, LedgerError> {
        query::open_reader(&self.path)
    }

    /// Wait for a decision another process records in the ledger — a human deciding
    /// an approval, a review or a conflict from the CLI: `check` reads it (`None` while
    /// it is pending) every 100 ms on a read connection of its own. `waiting_for` is
    /// logged once, when the first check finds nothing decided yet.
    pub async fn poll_decision<T>(
        &self,
        waiting_for: &str,
        mut check: impl FnMut(&Connection) -> Result<Option<T>, LedgerError>,
    ) -> Result<T, LedgerError> {
        let conn = self.reader()?;
        let mut announced = false;
        loop {
            if let Some(decided) = check(&conn)? {
                return Ok(decided);
            }
            if !announced {
                tracing::info!("waiting for a human: {waiting_for}");
                announced = true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Run `f` with a pooled read connection (on the calling thread; keep it short).
    pub fn with_reader<R>(&self, f: impl FnOnce(&Connection) -> R) -> Result<R, LedgerError> {
        let idle = self.readers.lock().unwrap().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.reader()?,
        };
        let result = f(&conn);
        let mut idle = self.readers.lock().unwrap();
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        Ok(result)
    }

    /// Run `f` on the writer thread inside the current group transaction and return
    /// its result once that transaction has committed.
    pub async fn write<R, F>(&self, f: F) -> Result<R, LedgerError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Writer) -> SqlResult<R> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(f, tx)?;
        rx.await.map_err(|_| LedgerError::WriterGone)?
    }

    /// Blocking variant of [`Ledger::write`], for code outside the async runtime.
    pub fn write_blocking<R, F>(&self, f: F) -> Result<R, LedgerError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Writer) -> SqlResult<R> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(f, tx)?;
        rx.blocking_recv().map_err(|_| LedgerError::WriterGone)?
    }

    fn submit<R, F>(
        &self,
        f: F,
        reply: tokio::sync::oneshot::Sender<Result<R, LedgerError>>,
    ) -> Result<(), LedgerError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Writer) -> SqlResult<R> + Send + 'static,
    {
        let job: Job = Box::new(move |w: &mut Writer| {
            // Each job runs in its own savepoint so one failing job does not undo the
            // others of its group. The reply is held until the group commits.
            let result = w.savepoint(f);
            w.pending_replies
                .push(Box::new(move |commit: &Result<(), String>| {
                    let out = match (commit, result) {
                        (Ok(()), r) => r.map_err(LedgerError::from),
                        (Err(e), _) => Err(LedgerError::Commit(e.clone())),
                    };
                    let _ = reply.send(out);
                }));
        });
        self.jobs.send(job).map_err(|_| LedgerError::WriterGone)
    }

    /// Record a new run together with its root task, in one transaction: a run is
    /// never on disk without the task that resume starts from.
    pub async fn create_run(&self, run: NewRun, root: NewTask) -> Result<(), LedgerError> {
        self.write(move |w| {
            blobs::put(&w.conn, &run.component)?;
            w.conn.execute(
                "INSERT INTO runs (run_id, agent, component_hash, input, status, config_json, context_hash, budget_usd, started_at)
                 VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7, ?8)",
                params![run.run_id, run.agent, run.component_hash, run.input, run.config_json, run.context_hash, run.budget_usd, now_ms()],
            )?;
            w.insert_task(&root)
        })
        .await
    }

    /// Record the end of a run with its totals (summed over its tasks).
    pub async fn finish_run(
        &self,
        run_id: String,
        status: Status,
        output: Option<String>,
        error: Option<String>,
    ) -> Result<(), LedgerError> {
        self.write(move |w| {
            w.conn.execute(
                "UPDATE runs SET status = ?2, output = ?3, error = ?4, finished_at = ?5,
                    tokens_in = (SELECT COALESCE(SUM(tokens_in), 0) FROM tasks WHERE run_id = ?1),
                    tokens_out = (SELECT COALESCE(SUM(tokens_out), 0) FROM tasks WHERE run_id = ?1),
                    cost_usd = (SELECT COALESCE(SUM(cost_usd), 0) FROM tasks WHERE run_id = ?1)
                 WHERE run_id = ?1",
                params![run_id, status.as_str(), output, error, now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    /// Record a new task (status `pending`); its input goes to `blobs`.
    pub async fn create_task(&self, task: NewTask) -> Result<(), LedgerError> {
        self.write(move |w| w.insert_task(&task)).await
    }

    /// Mark a task as running with the input it runs on (its own, plus the outputs of
    /// `data-from` dependencies). A resumed task keeps its first start time; a task that
    /// already ended (say, cancelled while it was starting) is never set back to running.
    pub async fn start_task(
        &self,
        run_id: String,
        task_id: u64,
        run_input: String,
    ) -> Result<(), LedgerError> {
        self.write(move |w| {
            let hash = blobs::put(&w.conn, run_input.as_bytes())?;
            w.conn.execute(
                "UPDATE tasks SET status = 'running', started_at = COALESCE(started_at, ?3), run_input_hash = ?4
                 WHERE run_id = ?1 AND task_id = ?2 AND status IN ('pending', 'running')",
                params![run_id, task_id as i64, now_ms(), hash],
            )?;
            Ok(())
        })
        .await
    }

    /// Record how a task ended. Its totals are summed from its events, so they are
    /// right even for a task that was cancelled mid-call.
    pub async fn finish_task(
        &self,
        run_id: String,
        task_id: u64,
        status: Status,
        output: Option<String>,
        error: Option<String>,
        events: Vec<EventRecord>,
    ) -> Result<(), LedgerError> {
        self.write(move |w| {
            for e in events {
                w.append_event(e)?;
            }
            w.conn.prepare_cached(&FINISH_TASK_SQL)?.execute(params![
                run_id,
                task_id as i64,
                status.as_str(),
                output,
                error,
                now_ms()
            ])?;
            Ok(())
        })
        .await
    }

    /// Append one host call; returns its sequence number within the task. Returns
    /// only once the event is committed.
    pub async fn append(&self, event: EventRecord) -> Result<u64, LedgerError> {
        self.write(move |w| w.append_event(event)).await
    }
}

type Reply = Box<dyn FnOnce(&Result<(), String>) + Send>;

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>) {
    let mut writer = Writer {
        conn,
        next_seq: HashMap::new(),
        pending_replies: Vec::new(),
        group_events: 0,
    };
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let begin = writer.conn.execute_batch("BEGIN IMMEDIATE");
        let seq_backup = writer.next_seq.clone();
        for job in group {
            job(&mut writer);
        }
        let commit = begin
            .and_then(|_| writer.conn.execute_batch("COMMIT"))
            .map_err(|e| e.to_string());
        if commit.is_err() {
            let _ = writer.conn.execute_batch("ROLLBACK");
            writer.next_seq = seq_backup;
            tracing::error!(error = ?commit, "ledger commit failed");
        } else {
            // Fault injection (tests): may abort the process right after this commit.
            crate::ledger::fault::events_committed(writer.group_events);
        }
        writer.group_events = 0;
        let replies = std::mem::take(&mut writer.pending_replies);
        for reply in replies {
            reply(&commit);
        }
    }
}
