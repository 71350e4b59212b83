//! The write-ahead ledger: every run, task and host call, in SQLite.
//!
//! One writer thread owns the only write connection. Callers send it closures; each
//! write says how it must be committed ([`Commit`]), after the durability class of
//! what it records ([`kinds::Durability`]):
//!
//! * [`Commit::Durable`] — the caller's reply is sent only once the transaction
//!   holding the write has committed and, with `[ledger] sync = "full"` (the
//!   default), been fsynced. Effects the world can see (tool intents and results,
//!   spawns, humans' decisions, run and task ends) are written this way.
//! * [`Commit::Visible`] — the reply waits for the commit (readers see the write)
//!   but not for an fsync: a run's start, a barrier before reading back.
//! * [`Commit::Buffered`] — the caller does not wait at all: the write joins the
//!   open group, which commits within [`LINGER`] or as soon as a caller waits. LLM
//!   replies, trace steps, clock/random reads and the other buffered kinds.
//!
//! **The output-commit barrier.** The writer runs jobs in the order they were sent,
//! one transaction at a time, and an fsync of SQLite's write-ahead log makes every
//! earlier commit durable too. So a durable write is never on disk without every
//! write sent before it: each effect intent, each wait for a human and each run end
//! is a barrier that makes the run's earlier buffered events durable first. After a
//! crash, a buffered event that was not yet durable is simply missing: a reply not
//! yet durable is asked again (and paid again) on resume, and nothing outside the
//! host can have depended on it, because nothing leaves the host before a barrier.
//!
//! Appends that arrive together share one transaction (group commit), which keeps
//! the fsync count low when many agents run at once. Sequence numbers are assigned by
//! the writer from committed state, never from a caller-side buffer.
//!
//! Reading (`agentflow runs`, `inspect`) uses separate read-only connections; see
//! [`query`]. Code that reads back what it may just have written buffered calls
//! [`Ledger::flush`] first. This module is not for deciding *what* to record: that
//! is the capabilities' job.
//!
//! Every SQL statement of the host is in this module: other modules call typed
//! functions — [`Writer`] methods inside a write job, functions taking a read
//! [`Connection`] — grouped by topic: [`kv`], [`workspace`] (copy-on-write views),
//! [`merges`], [`reviews`] (approvals and reviews), [`checkpoints`], [`validators`],
//! [`tasks`], [`fork`], [`query_events`] (the `events` listing), [`traces`] (the
//! `agent_traces` view), [`drift`] (drift, cost against quality, live progress, async
//! evaluations), [`dashboard`] (what `agentflow serve` shows beyond those), and
//! [`perf`] (the performance DB beside the ledger).

mod batch;
pub mod blobs;
pub mod budgets;
pub mod cancels;
mod changes;
pub mod checkpoints;
mod commit;
pub mod dashboard;
pub mod db;
pub mod drift;
mod error;
pub mod existing;
pub mod fault;
pub mod fork;
pub mod installed_tools;
pub mod integrity;
pub mod kinds;
pub mod kv;
pub mod leases;
pub mod merges;
pub mod offers;
pub mod perf;
pub mod query;
pub mod query_events;
pub mod quotas;
mod records;
pub mod reviews;
pub mod run_limits;
pub mod schema;
mod status;
pub mod submissions;
pub mod tasks;
pub mod traces;
pub mod validators;
pub mod workspace;
mod writer;

pub use commit::{Commit, LINGER, LedgerConfig, SyncMode};
/// A connection to the ledger: a read connection from [`Ledger::reader`] or
/// [`Ledger::with_reader`], or the writer's inside a write job. Callers pass it to the
/// typed functions of this module; they never run statements on it themselves.
pub use db::{Connection, postgres_url};
pub use error::{LedgerError, SqlError, SqlResult};
pub use kinds::EventKind;
pub use records::{EventRecord, NewRun, NewTask, RunTotals};
use rusqlite::params;
pub use status::{ApprovalStatus, MergeStatus, ReviewStatus, Status};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};
use writer::Reply;

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

/// Most buffered writes queued and not yet committed; past it, a buffered write
/// waits for its commit (backpressure on a guest that logs faster than the disk).
const MAX_IN_FLIGHT: usize = 16_384;

/// A job for the writer thread.
struct Job {
    commit: Commit,
    run: Box<dyn FnOnce(&mut Writer) + Send>,
}

/// State owned by the writer thread.
pub struct Writer {
    conn: Connection,
    next_seq: HashMap<(String, u64), u64>,
    /// Changes to `next_seq` since the group began, oldest first, to undo them when a
    /// job's savepoint or the group's transaction rolls back.
    seq_undo: Vec<((String, u64), Option<u64>)>,
    /// Replies of the current group, sent once it has committed.
    pending_replies: Vec<Reply>,
    /// Events appended in the current group (for fault injection).
    group_events: u64,
    /// Blobs known to be stored already (hashes), so large repeated payloads — a
    /// run's component above all — are not bound and re-inserted every time.
    known_blobs: std::collections::HashSet<String>,
    /// Buffered appends waiting to be written as multi-row inserts ([`batch`]).
    queued: Vec<batch::QueuedJob>,
    /// Rows in `queued`.
    queued_rows: usize,
}

/// Handle to the ledger; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    jobs: mpsc::Sender<Job>,
    path: PathBuf,
    /// Read connections kept for [`Ledger::with_reader`] (a fresh connection parses
    /// the schema on its first query, which costs more than most hot-path reads).
    readers: std::sync::Arc<std::sync::Mutex<Vec<Connection>>>,
    /// Buffered writes sent and not yet committed.
    in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Set once [`Ledger::quick_check_once`] found the file sound.
    checked: std::sync::Arc<std::sync::atomic::AtomicBool>,
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
    // One pass over the task's events for all four totals (four subqueries read every
    // row four times: 11 M instructions at the end of a 1,000-call task).
    format!(
        "UPDATE tasks SET status = ?3, output = ?4, error = ?5, finished_at = ?6,
            tokens_in = t.tokens_in, tokens_out = t.tokens_out, cost_usd = t.cost_usd,
            host_calls = t.host_calls
         FROM (SELECT COALESCE(SUM(tokens_in), 0) AS tokens_in,
                      COALESCE(SUM(tokens_out), 0) AS tokens_out,
                      COALESCE(SUM(cost_usd), 0) AS cost_usd,
                      COUNT(*) FILTER (WHERE kind NOT IN ({not_calls})) AS host_calls
               FROM events WHERE run_id = ?1 AND task_id = ?2) AS t
         WHERE run_id = ?1 AND task_id = ?2"
    )
});

/// Most jobs committed in one transaction.
const MAX_GROUP: usize = 4096;

impl Ledger {
    /// Open (or create) the ledger at `path` with the default settings
    /// (`sync = "full"`) and start its writer thread.
    pub fn open(path: impl AsRef<Path>) -> Result<Ledger, LedgerError> {
        Ledger::open_with(path, &LedgerConfig::default())
    }

    /// Open (or create) the ledger at `path` with `config` and start its writer thread.
    pub fn open_with(path: impl AsRef<Path>, config: &LedgerConfig) -> Result<Ledger, LedgerError> {
        let path = path.as_ref().to_owned();
        // A mistyped `--db` directory is an error, not a new tree of directories.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && db::postgres_url(&path).is_none()
            && !dir.is_dir()
        {
            return Err(LedgerError::NoDirectory {
                path: path.clone(),
                dir: dir.to_path_buf(),
            });
        }
        let conn = db::open_for_writing(&path)?;
        schema::prepare(&conn, &path)?;
        let (jobs, rx) = mpsc::channel::<Job>();
        let sync = config.sync;
        std::thread::Builder::new()
            .name("agentflow-ledger".into())
            .spawn(move || writer::writer_loop(conn, rx, sync))
            .expect("spawn ledger writer thread");
        Ok(Ledger {
            jobs,
            path,
            readers: Default::default(),
            in_flight: Default::default(),
            checked: Default::default(),
        })
    }

    /// Path of the database file (or the PostgreSQL URL).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ledger as messages name it: its file, or its URL without the password.
    pub fn name(&self) -> String {
        db::redact(&self.path.to_string_lossy())
    }

    /// Whether the ledger is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        db::postgres_url(&self.path).is_some()
    }

    /// [`Ledger::quick_check`] the first time it is called on this ledger handle (a
    /// host resuming many runs checks its file once: it is the file's only writer
    /// from then on, and a full check reads the whole file).
    pub fn quick_check_once(&self) -> Result<(), LedgerError> {
        use std::sync::atomic::Ordering;
        if self.checked.load(Ordering::Acquire) {
            return Ok(());
        }
        self.quick_check()?;
        self.checked.store(true, Ordering::Release);
        Ok(())
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
        if self.is_postgres() {
            return Ok(()); // PostgreSQL keeps its own log
        }
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
    /// an approval, a review or a conflict from the CLI — after making every earlier
    /// write durable (the barrier before a wait for a human): `check` reads it (`None` while
    /// it is pending) every 100 ms on a read connection of its own. When the first check
    /// finds nothing decided yet, `waiting_for` is logged and `on_pending` called; what
    /// it returns (e.g. a guard registering the wait) is kept until the decision comes.
    pub async fn poll_decision<T, G>(
        &self,
        waiting_for: &str,
        mut check: impl FnMut(&Connection) -> Result<Option<T>, LedgerError>,
        on_pending: impl FnOnce(&Connection) -> Result<G, LedgerError>,
    ) -> Result<T, LedgerError> {
        // A wait for a human is a barrier: what the run did before it is durable first.
        self.write(|_| Ok(())).await?;
        let conn = self.reader()?;
        let mut on_pending = Some(on_pending);
        let mut pending = None;
        loop {
            if let Some(decided) = check(&conn)? {
                drop(pending);
                return Ok(decided);
            }
            if let Some(announce) = on_pending.take() {
                tracing::info!("waiting for a human: {waiting_for}");
                pending = Some(announce(&conn)?);
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
    /// its result once that transaction has committed durably ([`Commit::Durable`]).
    pub async fn write<R, F>(&self, f: F) -> Result<R, LedgerError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Writer) -> SqlResult<R> + Send + 'static,
    {
        self.write_as(Commit::Durable, f).await
    }

    /// Like [`Ledger::write`], committed as `commit` says: [`Commit::Buffered`] here
    /// still waits for the commit (use [`Ledger::write_buffered`] not to wait).
    pub async fn write_as<R, F>(&self, commit: Commit, f: F) -> Result<R, LedgerError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Writer) -> SqlResult<R> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let commit = match commit {
            Commit::Buffered => Commit::Visible,
            other => other,
        };
        self.submit(commit, f, tx)?;
        rx.await.map_err(|_| LedgerError::WriterGone)?
    }

    /// Send `f` to the writer without waiting for it ([`Commit::Buffered`]): it runs
    /// after every write sent before it and commits with its group, at the latest
    /// within [`LINGER`], or with the next durable write (the barrier). If it fails —
    /// itself or its group's commit — `failed` is called with the error.
    ///
    /// When too many buffered writes are waiting for the disk, this waits for this
    /// one's commit instead (backpressure).
    pub async fn write_buffered<F>(
        &self,
        f: F,
        failed: impl FnOnce(String) + Send + 'static,
    ) -> Result<(), LedgerError>
    where
        F: FnOnce(&mut Writer) -> SqlResult<()> + Send + 'static,
    {
        self.send_buffered(
            move |w| {
                let failure = std::sync::Arc::new(std::sync::OnceLock::new());
                if let Err(e) = w.savepoint(f) {
                    let _ = failure.set(e.to_string());
                }
                failure
            },
            failed,
        )
        .await
    }

    /// Wait until every write sent before this call has committed, so a read
    /// connection sees them (no fsync is waited for).
    pub async fn flush(&self) -> Result<(), LedgerError> {
        self.write_as(Commit::Visible, |_| Ok(())).await
    }

    /// Blocking variant of [`Ledger::write`], for code outside the async runtime.
    pub fn write_blocking<R, F>(&self, f: F) -> Result<R, LedgerError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Writer) -> SqlResult<R> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Commit::Durable, f, tx)?;
        rx.blocking_recv().map_err(|_| LedgerError::WriterGone)?
    }

    fn submit<R, F>(
        &self,
        commit: Commit,
        f: F,
        reply: tokio::sync::oneshot::Sender<Result<R, LedgerError>>,
    ) -> Result<(), LedgerError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Writer) -> SqlResult<R> + Send + 'static,
    {
        let run = Box::new(move |w: &mut Writer| {
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
        self.jobs
            .send(Job { commit, run })
            .map_err(|_| LedgerError::WriterGone)
    }

    /// Record a new run together with its root task, in one transaction (one
    /// commit): a run is never on disk without the task that resume starts from.
    /// The commit is [`Commit::Visible`] — committed before the agent starts, so a
    /// crash at any later point leaves a run to resume, but not fsynced: nothing
    /// outside the host depends on a run's start, and its first effect (or its end)
    /// makes it durable.
    pub async fn create_run(&self, run: NewRun, root: NewTask) -> Result<(), LedgerError> {
        self.write_as(Commit::Visible, move |w| {
            w.put_blob_hashed(&run.component_hash, &run.component)?;
            w.conn.prepare_cached(
                "INSERT INTO runs (run_id, agent, component_hash, input, status, config_json, context_hash, budget_usd, started_at)
                 VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7, ?8)",
            )?.execute(
                params![run.run_id, run.agent, run.component_hash, run.input, run.config_json, run.context_hash, run.budget_usd, now_ms()],
            )?;
            w.take_lease(&run.run_id, &leases::Holder::this_process())?;
            w.insert_task(&root)
        })
        .await
    }

    /// Record the end of a run with its totals (summed over its tasks), durably, and
    /// return them as stored — `None` if the run is not in the ledger.
    pub async fn finish_run(
        &self,
        run_id: String,
        status: Status,
        output: Option<String>,
        error: Option<String>,
    ) -> Result<Option<RunTotals>, LedgerError> {
        self.write(move |w| {
            let totals = w
                .conn
                .prepare_cached(
                    "UPDATE runs SET status = ?2, output = ?3, error = ?4, finished_at = ?5,
                        tokens_in = (SELECT COALESCE(SUM(tokens_in), 0) FROM tasks WHERE run_id = ?1),
                        tokens_out = (SELECT COALESCE(SUM(tokens_out), 0) FROM tasks WHERE run_id = ?1),
                        cost_usd = (SELECT COALESCE(SUM(cost_usd), 0) FROM tasks WHERE run_id = ?1)
                     WHERE run_id = ?1
                     RETURNING tokens_in, tokens_out, cost_usd, started_at, finished_at",
                )?
                .query_row(
                    params![run_id, status.as_str(), output, error, now_ms()],
                    |r| {
                        Ok(RunTotals {
                            tokens_in: r.get(0)?,
                            tokens_out: r.get(1)?,
                            cost_usd: r.get(2)?,
                            started_at: r.get(3)?,
                            finished_at: r.get(4)?,
                            copied_cost_usd: 0.0,
                        })
                    },
                );
            let mut totals = match totals {
                Ok(t) => t,
                Err(rusqlite::Error::QueryReturnedNoRows) => return Ok(None),
                Err(e) => return Err(e),
            };
            totals.copied_cost_usd = fork::copied_cost(&w.conn, &run_id)?;
            Ok(Some(totals))
        })
        .await
    }

    /// Record a new task (status `pending`); its input goes to `blobs`.
    pub async fn create_task(&self, task: NewTask) -> Result<(), LedgerError> {
        self.write(move |w| w.insert_task(&task)).await
    }

    /// Record a new task like [`Ledger::create_task`], committed as `commit` says. A
    /// spawn creates its child [`Commit::Visible`]: the durable `tasks.spawn` event
    /// that follows is the barrier that makes the row durable.
    pub async fn create_task_as(&self, task: NewTask, commit: Commit) -> Result<(), LedgerError> {
        self.write_as(commit, move |w| w.insert_task(&task)).await
    }

    /// Mark a task as running with the input it runs on (its own, plus the outputs of
    /// `data-from` dependencies). A resumed task keeps its first start time; a task that
    /// already ended (say, cancelled while it was starting) is never set back to running.
    ///
    /// Buffered ([`Commit::Buffered`]): the start is made durable by the task's first
    /// effect or its end; a failure is logged.
    pub async fn start_task(
        &self,
        run_id: String,
        task_id: u64,
        run_input: String,
    ) -> Result<(), LedgerError> {
        self.write_buffered(
            move |w| {
                let hash = w.put_blob(run_input.as_bytes())?;
                w.conn
                    .prepare_cached(
                        "UPDATE tasks SET status = 'running', started_at = COALESCE(started_at, ?3), run_input_hash = ?4
                         WHERE run_id = ?1 AND task_id = ?2 AND status IN ('pending', 'running')",
                    )?
                    .execute(params![run_id, task_id as i64, now_ms(), hash])?;
                Ok(())
            },
            |_| {},
        )
        .await
    }

    /// Record how a task ended. Its totals are summed from its events, so they are
    /// right even for a task that was cancelled mid-call.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_task(
        &self,
        run_id: String,
        task_id: u64,
        status: Status,
        output: Option<String>,
        error: Option<String>,
        events: Vec<EventRecord>,
        commit: Commit,
    ) -> Result<(), LedgerError> {
        let write = move |w: &mut Writer| {
            w.record_task_end(&run_id, task_id, status, output, error, events)
        };
        match commit {
            // The root's end, when the run's end follows: no wait at all.
            Commit::Buffered => self.write_buffered(write, |_| {}).await,
            _ => self.write_as(commit, write).await,
        }
    }

    /// Append one host call; returns its sequence number within the task. Returns
    /// only once the event is committed durably.
    pub async fn append(&self, event: EventRecord) -> Result<u64, LedgerError> {
        self.write(move |w| w.append_event(event)).await
    }

    /// Append an event as its kind's durability class says: an effect as
    /// [`Ledger::append`] does; a buffered kind without waiting (a failure is logged).
    pub async fn record(&self, event: EventRecord) -> Result<(), LedgerError> {
        match event.kind.durability() {
            kinds::Durability::Effect => self.append(event).await.map(|_| ()),
            kinds::Durability::Buffered => self.append_buffered(vec![event], |_| {}).await,
        }
    }
}
