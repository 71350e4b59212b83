//! The writer thread: its loop (groups, linger, the synced commit of the barrier),
//! each job's savepoint, and the statements every write shares — appending an event
//! with the next sequence number of its task, inserting a task, storing a blob.

use super::Connection;
use super::{
    Commit, EventRecord, Job, LINGER, MAX_GROUP, NewTask, SqlResult, SyncMode, Writer, blobs,
    identity_hash, now_ms,
};
use rusqlite::params;
use std::collections::HashMap;
use std::sync::mpsc;

/// Blobs at least this large are remembered as stored by the writer.
const KNOWN_BLOB_MIN: usize = 4096;

impl Writer {
    /// The write connection (inside the current group transaction).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Store bytes in `blobs` (once) and return their hash.
    pub fn put_blob(&self, bytes: &[u8]) -> SqlResult<String> {
        blobs::put(&self.conn, bytes)
    }

    /// Store bytes whose hash the caller knows (a component's) in `blobs`. A large
    /// blob this writer has stored before is not sent to SQLite again (a component
    /// is megabytes).
    pub fn put_blob_hashed(&mut self, hash: &str, bytes: &[u8]) -> SqlResult<()> {
        debug_assert_eq!(
            blobs::sha256_hex(bytes),
            hash,
            "a blob's hash is its content's"
        );
        if !self.known_blobs.contains(hash) {
            blobs::put_hashed(&self.conn, hash, bytes)?;
            // Only large blobs are remembered: small ones are cheap to re-insert.
            // Forgotten on any rollback (`savepoint`, a failed commit).
            if bytes.len() >= KNOWN_BLOB_MIN {
                self.known_blobs.insert(hash.to_string());
            }
        }
        Ok(())
    }

    /// Insert a new task (status `pending`), its input and component into `blobs`.
    pub(super) fn insert_task(&mut self, task: &NewTask) -> SqlResult<()> {
        let input_hash = blobs::put(&self.conn, task.input.as_bytes())?;
        if let Some(bytes) = &task.component {
            self.put_blob_hashed(&task.component_hash, bytes)?;
        }
        self.conn.prepare_cached(
            "INSERT INTO tasks (run_id, task_id, parent_id, depth, agent, component_hash, description, status, input_hash,
                                spawn_key, dedup_key, depends_on, budget_usd, resources, timeout_ms, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        )?.execute(params![task.run_id, task.task_id as i64, task.parent_id.map(|p| p as i64), task.depth, task.agent,
                    task.component_hash, task.description, input_hash, task.spawn_key, task.dedup_key,
                    task.depends_on, task.budget_usd, task.resources, task.timeout_ms.map(|t| t as i64), now_ms()],
        )?;
        Ok(())
    }

    /// Forget the cached next sequence number of a task that ended.
    pub(super) fn forget_task(&mut self, run_id: &str, task_id: u64) {
        let key = (run_id.to_string(), task_id);
        if let Some(old) = self.next_seq.remove(&key) {
            self.seq_undo.push((key, Some(old)));
        }
    }

    /// Undo the changes to `next_seq` made after `mark` (a length of `seq_undo`).
    pub(super) fn undo_seqs(&mut self, mark: usize) {
        while self.seq_undo.len() > mark {
            let (key, old) = self.seq_undo.pop().expect("longer than mark");
            match old {
                Some(v) => self.next_seq.insert(key, v),
                None => self.next_seq.remove(&key),
            };
        }
    }

    /// Run one statement without parameters, prepared once per connection.
    fn statement(&self, sql: &str) -> SqlResult<()> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    /// Run `f` in a savepoint of its own: if it fails, what it wrote is undone and the
    /// rest of its group still commits.
    pub(super) fn savepoint<R>(
        &mut self,
        f: impl FnOnce(&mut Writer) -> SqlResult<R>,
    ) -> SqlResult<R> {
        // Every job reads what was appended before it.
        self.flush_rows();
        self.conn.prepare_cached("SAVEPOINT job")?.execute([])?;
        let mark = self.seq_undo.len();
        match f(self) {
            Ok(r) => {
                self.conn.prepare_cached("RELEASE job")?.execute([])?;
                Ok(r)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK TO job; RELEASE job");
                self.undo_seqs(mark);
                self.known_blobs.clear();
                Err(e)
            }
        }
    }

    /// Append an event inside the current transaction, assigning the next sequence
    /// number of its task.
    pub fn append_event(&mut self, event: EventRecord) -> SqlResult<u64> {
        let row = self.prepare_row(event)?;
        self.insert_row(&row)
    }

    /// An event as the row to insert: its task's next sequence number (taken now),
    /// its replay hash, its payloads serialized (long strings moved to `blobs`).
    pub(super) fn prepare_row(&mut self, mut event: EventRecord) -> SqlResult<Row> {
        let key = (event.run_id.clone(), event.task_id);
        let seq = match self.next_seq.get(&key) {
            Some(s) => *s,
            None => {
                // Rows still queued are in no table yet: write them first.
                self.flush_rows();
                self.max_seq(&event.run_id, event.task_id)? + 1
            }
        };
        // The replay key hashes the identity, else the request as the guest's call made
        // it (before long strings move to blobs); without an identity the request's
        // text serves both the hash and the row when no string moved.
        let (request_hash, request_text) = match &event.identity {
            Some(identity) => (identity_hash(identity), None),
            None => {
                let text = json_text(&event.request);
                (blobs::sha256_hex(text.as_bytes()), Some(text))
            }
        };
        let request = match (
            blobs::externalize(&self.conn, &mut event.request)?,
            request_text,
        ) {
            (false, Some(text)) => text,
            _ => json_text(&event.request),
        };
        let response = match event.response_text.take() {
            Some(text) => text,
            None => {
                blobs::externalize(&self.conn, &mut event.response)?;
                json_text(&event.response)
            }
        };
        let old = self.next_seq.insert(key.clone(), seq + 1);
        self.seq_undo.push((key, old));
        self.group_events += 1;
        Ok(Row {
            run_id: event.run_id,
            task_id: event.task_id as i64,
            seq: seq as i64,
            kind: event.kind,
            status: if event.ok { "ok" } else { "error" },
            request,
            response,
            request_hash,
            model: event.model,
            tokens_in: event.tokens_in,
            tokens_out: event.tokens_out,
            cost_usd: event.cost_usd,
            started_at: event.started_at,
            finished_at: event.finished_at,
        })
    }

    /// The highest sequence number task `task_id` of run `run_id` has in the table.
    fn max_seq(&self, run_id: &str, task_id: u64) -> SqlResult<u64> {
        let max: i64 = self.conn.query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?1 AND task_id = ?2",
            params![run_id, task_id as i64],
            |r| r.get(0),
        )?;
        Ok(max as u64)
    }

    /// Insert one prepared row; returns the sequence number it was stored under.
    pub(super) fn insert_row(&mut self, row: &Row) -> SqlResult<u64> {
        let insert = |params: &[&dyn rusqlite::ToSql]| {
            self.conn
            .prepare_cached(
                "INSERT INTO events (run_id, task_id, seq, kind, status, request, response, request_hash, model,
                                     tokens_in, tokens_out, cost_usd, started_at, finished_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?
            .execute(params)
        };
        // Another process (the CLI deciding an approval or a conflict while this host
        // runs) may have appended to the task since the sequence was cached: take the
        // next free number then.
        match insert(&row.params()) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                let seq = self.max_seq(&row.run_id, row.task_id as u64)? + 1;
                let seq_param = seq as i64;
                let mut params = row.params();
                params[2] = &seq_param;
                insert(&params)?;
                let key = (row.run_id.clone(), row.task_id as u64);
                if self.next_seq.get(&key).is_none_or(|next| *next <= seq) {
                    let old = self.next_seq.insert(key.clone(), seq + 1);
                    self.seq_undo.push((key, old));
                }
                Ok(seq)
            }
            other => {
                other?;
                Ok(row.seq as u64)
            }
        }
    }
}

/// An event as stored: the columns of its `events` row.
pub(super) struct Row {
    pub run_id: String,
    pub task_id: i64,
    pub seq: i64,
    pub kind: crate::ledger::EventKind,
    pub status: &'static str,
    pub request: String,
    pub response: String,
    pub request_hash: String,
    pub model: Option<String>,
    pub tokens_in: u32,
    pub tokens_out: u32,
    pub cost_usd: f64,
    pub started_at: i64,
    pub finished_at: i64,
}

impl Row {
    /// The row's values in the column order of the `INSERT`s.
    pub fn params(&self) -> [&dyn rusqlite::ToSql; 14] {
        [
            &self.run_id,
            &self.task_id,
            &self.seq,
            &self.kind,
            &self.status,
            &self.request,
            &self.response,
            &self.request_hash,
            &self.model,
            &self.tokens_in,
            &self.tokens_out,
            &self.cost_usd,
            &self.started_at,
            &self.finished_at,
        ]
    }
}

/// `value` as JSON text. `serde_json::to_string` writes into a byte buffer; `Value`'s
/// `Display` (`.to_string()`) goes through the formatting machinery, token by token,
/// and cost about twice as many instructions on the writer's path.
fn json_text(value: &serde_json::Value) -> String {
    serde_json::to_string(value).expect("a JSON value always serializes")
}

/// A job's reply, sent once its group's commit is known.
pub(super) type Reply = Box<dyn FnOnce(&Result<(), String>) + Send>;

/// The writer thread: takes jobs in order and commits them in groups. A group
/// commits as soon as the queue is empty and some caller waits for it; a group of
/// buffered writes only stays open up to [`LINGER`] for more to join. A durable job
/// arriving while the open group is not synced first commits that group, then starts
/// a synced one (SQLite applies `synchronous` per transaction, from its start).
pub(super) fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>, sync: SyncMode) {
    // Room for every statement the writer repeats (rusqlite keeps 16 by default).
    conn.set_prepared_statement_cache_capacity(64);
    let mut writer = Writer {
        conn,
        next_seq: HashMap::new(),
        seq_undo: Vec::new(),
        pending_replies: Vec::new(),
        group_events: 0,
        known_blobs: Default::default(),
        queued: Vec::new(),
        queued_rows: 0,
    };
    let mut synced_now = true; // the PRAGMAS open the connection with FULL
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        let synced = sync == SyncMode::Full && first.commit == Commit::Durable;
        if synced != synced_now {
            let pragma = if synced {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            if let Err(e) = writer.conn.execute_batch(pragma) {
                tracing::error!(error = %e, "cannot set the ledger's synchronous mode");
            }
            synced_now = synced;
        }
        let begin = writer.statement("BEGIN IMMEDIATE");
        let opened = std::time::Instant::now();
        let mut waited_for = first.commit != Commit::Buffered;
        let mut buffered = usize::from(!waited_for);
        (first.run)(&mut writer);
        if buffered > 0 {
            crate::ledger::fault::point("buffered-unflushed");
        }
        let mut jobs = 1;
        while jobs < MAX_GROUP && !crate::ledger::fault::crash_due(writer.group_events) {
            let next = if waited_for {
                rx.try_recv().ok()
            } else {
                let left = LINGER.saturating_sub(opened.elapsed());
                rx.recv_timeout(left).ok()
            };
            let Some(job) = next else { break };
            if job.commit == Commit::Durable && buffered > 0 {
                // The barrier: buffered writes are pending and a durable one arrives.
                crate::ledger::fault::point("barrier");
            }
            if job.commit == Commit::Durable && !synced && sync == SyncMode::Full {
                // This group's buffered writes commit now, and the durable job's
                // synced commit makes them durable with it.
                carried = Some(job);
                break;
            }
            let is_buffered = job.commit == Commit::Buffered;
            waited_for |= !is_buffered;
            (job.run)(&mut writer);
            jobs += 1;
            if is_buffered {
                buffered += 1;
                crate::ledger::fault::point("buffered-unflushed");
            }
        }
        writer.flush_rows();
        let commit = begin
            .and_then(|_| writer.statement("COMMIT"))
            .map_err(|e| e.to_string());
        if commit.is_err() {
            let _ = writer.conn.execute_batch("ROLLBACK");
            writer.undo_seqs(0);
            writer.known_blobs.clear();
            tracing::error!(error = ?commit, "ledger commit failed");
        } else {
            // Fault injection (tests): may abort the process right after this commit.
            crate::ledger::fault::events_committed(writer.group_events);
        }
        writer.seq_undo.clear();
        writer.group_events = 0;
        let replies = std::mem::take(&mut writer.pending_replies);
        for reply in replies {
            reply(&commit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Ledger, LedgerConfig};

    /// The `synchronous` setting each kind of write commits under.
    fn modes(sync: SyncMode) -> Vec<(Commit, i64)> {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open_with(dir.path().join("l.db"), &LedgerConfig { sync }).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let read = |w: &mut Writer| w.conn().query_row("PRAGMA synchronous", [], |r| r.get(0));
        rt.block_on(async {
            let (tx, rx) = std::sync::mpsc::channel();
            ledger
                .write_buffered(
                    move |w| {
                        tx.send(read(w)?).unwrap();
                        Ok(())
                    },
                    |e| panic!("{e}"),
                )
                .await
                .unwrap();
            let durable = ledger.write(read).await.unwrap();
            let visible = ledger.write_as(Commit::Visible, read).await.unwrap();
            let buffered = rx.recv().unwrap();
            vec![
                (Commit::Buffered, buffered),
                (Commit::Durable, durable),
                (Commit::Visible, visible),
            ]
        })
    }

    #[test]
    fn only_durable_writes_are_fsynced_and_only_with_sync_full() {
        // SQLite's values: 1 = NORMAL (no fsync on commit in WAL mode), 2 = FULL.
        assert_eq!(
            modes(SyncMode::Full),
            vec![
                (Commit::Buffered, 1),
                (Commit::Durable, 2),
                (Commit::Visible, 1)
            ]
        );
        assert_eq!(
            modes(SyncMode::Normal),
            vec![
                (Commit::Buffered, 1),
                (Commit::Durable, 1),
                (Commit::Visible, 1)
            ]
        );
    }

    /// The replay key of an event without an identity is the hash of its request as
    /// the call made it, whether or not a long string of it moved to `blobs`; the row
    /// holds the request as stored (the reference in place of the long string).
    #[test]
    fn an_events_request_hash_is_taken_before_its_strings_move_to_blobs() {
        use crate::ledger::{EventKind, EventRecord};
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path().join("l.db")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let short = serde_json::json!({ "message": "short", "n": [1, 2.5, null] });
        let long = serde_json::json!({ "message": "x".repeat(blobs::INLINE_LIMIT + 1) });
        let identity = serde_json::json!({ "only": "this" });
        rt.block_on(ledger.write(|w| {
            w.conn().execute_batch(
                "INSERT INTO runs (run_id, agent, component_hash, input, status, config_json,
                                   context_hash, started_at)
                     VALUES ('run', 'a', 'c', 'in', 'running', '{}', 'h', 1);
                 INSERT INTO blobs (hash, size, data) VALUES ('ih', 2, x'6869');
                 INSERT INTO tasks (run_id, task_id, parent_id, depth, agent, component_hash,
                                    description, status, input_hash, tokens_in, tokens_out,
                                    cost_usd, created_at)
                     VALUES ('run', 1, NULL, 0, 'a', 'c', 't', 'running', 'ih', 0, 0, 0, 1),
                            ('run', 2, 1, 1, 'a', 'c', 't', 'running', 'ih', 0, 0, 0, 1),
                            ('run', 3, 1, 1, 'a', 'c', 't', 'running', 'ih', 0, 0, 0, 1);",
            )
        }))
        .unwrap();
        let cases = [
            (short.clone(), None, identity_hash(&short), false),
            (long.clone(), None, identity_hash(&long), true),
            (
                long.clone(),
                Some(identity.clone()),
                identity_hash(&identity),
                true,
            ),
        ];
        for (i, (request, id, expected_hash, moved)) in cases.into_iter().enumerate() {
            let mut event = EventRecord::note(
                "run",
                i as u64 + 1,
                EventKind::TraceLog,
                true,
                request.clone(),
                serde_json::Value::Null,
            );
            event.identity = id;
            rt.block_on(ledger.write(move |w| w.append_event(event)))
                .unwrap();
            let (hash, stored): (String, String) = ledger
                .with_reader(|c| {
                    c.query_row(
                        "SELECT request_hash, request FROM events WHERE task_id = ?1",
                        [i as i64 + 1],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                })
                .unwrap()
                .unwrap();
            assert_eq!(hash, expected_hash, "case {i}");
            assert_eq!(stored.contains("$blob"), moved, "case {i}: {stored}");
            if !moved {
                assert_eq!(stored, request.to_string(), "case {i}");
            }
        }
    }

    #[test]
    fn a_failed_buffered_write_is_reported_and_does_not_undo_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path().join("l.db")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let failure = std::sync::Arc::new(std::sync::OnceLock::new());
        let slot = failure.clone();
        rt.block_on(async {
            ledger
                .write_buffered(|w| w.put_blob(b"kept").map(|_| ()), |e| panic!("{e}"))
                .await
                .unwrap();
            ledger
                .write_buffered(
                    |w| {
                        w.conn()
                            .execute("INSERT INTO no_such_table VALUES (1)", [])?;
                        Ok(())
                    },
                    move |e| {
                        let _ = slot.set(e);
                    },
                )
                .await
                .unwrap();
            ledger.flush().await.unwrap();
        });
        assert!(failure.get().unwrap().contains("no_such_table"));
        let kept = ledger
            .with_reader(|c| blobs::get(c, &blobs::sha256_hex(b"kept")))
            .unwrap()
            .unwrap();
        assert_eq!(kept.as_deref(), Some(&b"kept"[..]));
    }
}
