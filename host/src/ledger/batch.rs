//! Batched appends: buffered events become rows of multi-row `INSERT`s.
//!
//! A buffered append ([`Ledger::append_buffered`]) does not run its own statement in
//! its own savepoint. The writer gives the event its sequence number, hashes and
//! serializes it as [`Writer::append_event`] does, and queues the row; the queue is
//! written when it holds [`FLUSH_ROWS`] rows, before any other job runs (so every job
//! reads what was appended before it) and before the group commits. Writing it takes
//! one statement per [`CHUNK`] rows inside one savepoint, in place of three statements
//! per event (savepoint, insert, release).
//!
//! If a chunk fails — another process appended to a task meanwhile, so a sequence
//! number is taken, or a row breaks a constraint — the whole queue is rolled back and
//! written again job by job, each in a savepoint with the single-row insert that takes
//! the next free number: a job's events are written together or not at all, as
//! before, and a failing job reports its error ([`Ledger::append_buffered`]'s
//! `failed`) without undoing the others.

use super::writer::Row;
use super::{Commit, EventRecord, Job, Ledger, LedgerError, SqlResult, Writer};
use std::sync::{Arc, OnceLock};

/// Rows per multi-row `INSERT` (14 parameters each).
const CHUNK: usize = 32;

/// Queued rows written at once, at most.
const FLUSH_ROWS: usize = 256;

/// The rows one buffered job queued, and where its failure is reported.
pub(super) struct QueuedJob {
    rows: Vec<Row>,
    failure: Arc<OnceLock<String>>,
}

impl Writer {
    /// Queue the rows of `events` for the next flush; on an error nothing of them is
    /// queued and the sequence numbers they took are given back.
    fn queue_events(
        &mut self,
        events: Vec<EventRecord>,
        failure: Arc<OnceLock<String>>,
    ) -> SqlResult<()> {
        let mark = self.seq_undo.len();
        let mut rows = Vec::with_capacity(events.len());
        for event in events {
            match self.prepare_row(event) {
                Ok(row) => rows.push(row),
                Err(e) => {
                    self.undo_seqs(mark);
                    return Err(e);
                }
            }
        }
        self.queued_rows += rows.len();
        self.queued.push(QueuedJob { rows, failure });
        if self.queued_rows >= FLUSH_ROWS {
            self.flush_rows();
        }
        Ok(())
    }

    /// Write the queued rows (see the module doc). Failures go to their jobs.
    pub(super) fn flush_rows(&mut self) {
        if self.queued.is_empty() {
            return;
        }
        let jobs = std::mem::take(&mut self.queued);
        self.queued_rows = 0;
        if let Err(e) = self.insert_chunks(&jobs) {
            tracing::debug!(error = %e, "batched append failed; writing job by job");
            for job in jobs {
                if let Err(e) = self.savepoint(|w| {
                    for row in &job.rows {
                        w.insert_row(row)?;
                    }
                    Ok(())
                }) {
                    let _ = job.failure.set(e.to_string());
                }
            }
        }
    }

    /// All queued rows, [`CHUNK`] to a statement, in one savepoint: all or none.
    fn insert_chunks(&mut self, jobs: &[QueuedJob]) -> SqlResult<()> {
        self.conn.prepare_cached("SAVEPOINT batch")?.execute([])?;
        let rows: Vec<&Row> = jobs.iter().flat_map(|j| &j.rows).collect();
        let written = (|| {
            for chunk in rows.chunks(CHUNK) {
                let sql = insert_sql(chunk.len());
                let mut stmt = self.conn.prepare_cached(&sql)?;
                let params: Vec<&dyn rusqlite::ToSql> =
                    chunk.iter().flat_map(|r| r.params()).collect();
                stmt.execute(params.as_slice())?;
            }
            Ok(())
        })();
        match written {
            Ok(()) => {
                self.conn.prepare_cached("RELEASE batch")?.execute([])?;
                Ok(())
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK TO batch; RELEASE batch");
                Err(e)
            }
        }
    }
}

/// `INSERT INTO events … VALUES (…), (…)` for `rows` rows: one text per size, so at
/// most two sizes (a full chunk and the rest) are prepared and cached per flush.
fn insert_sql(rows: usize) -> String {
    let one = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    format!(
        "INSERT INTO events (run_id, task_id, seq, kind, status, request, response, request_hash, model,
                             tokens_in, tokens_out, cost_usd, started_at, finished_at)
         VALUES {}",
        vec![one; rows].join(", ")
    )
}

impl Ledger {
    /// Send a buffered job: `run` does its part and returns where its own failure is
    /// (or will be, by the group's commit) reported; `failed` hears of it, or of the
    /// group's failed commit. Backpressure as [`Ledger::write_buffered`].
    pub(super) async fn send_buffered(
        &self,
        run: impl FnOnce(&mut Writer) -> std::sync::Arc<std::sync::OnceLock<String>> + Send + 'static,
        failed: impl FnOnce(String) + Send + 'static,
    ) -> Result<(), LedgerError> {
        use std::sync::atomic::Ordering;
        let queued = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = self.in_flight.clone();
        let job = Job {
            commit: Commit::Buffered,
            run: Box::new(move |w: &mut Writer| {
                let failure = run(w);
                w.pending_replies
                    .push(Box::new(move |commit: &Result<(), String>| {
                        in_flight.fetch_sub(1, Ordering::Relaxed);
                        let error = match (commit, failure.get()) {
                            (Ok(()), None) => return,
                            (Ok(()), Some(e)) => e.clone(),
                            (Err(e), _) => e.clone(),
                        };
                        tracing::error!(error = %error, "buffered ledger write failed");
                        failed(error)
                    }));
            }),
        };
        self.jobs.send(job).map_err(|_| LedgerError::WriterGone)?;
        if queued >= super::MAX_IN_FLIGHT {
            self.flush().await?;
        }
        Ok(())
    }

    /// Append `events` (buffered kinds) without waiting, as one job: written together
    /// with the group's other buffered appends (see [`batch`](self)), committed with
    /// the group. If writing them fails — or the group's commit — `failed` is called
    /// with the error. Backpressure as [`Ledger::write_buffered`].
    pub async fn append_buffered(
        &self,
        events: Vec<EventRecord>,
        failed: impl FnOnce(String) + Send + 'static,
    ) -> Result<(), LedgerError> {
        self.send_buffered(
            move |w| {
                let failure = Arc::new(OnceLock::new());
                if let Err(e) = w.queue_events(events, failure.clone()) {
                    let _ = failure.set(e.to_string());
                }
                failure
            },
            failed,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use crate::ledger::{EventKind, EventRecord, Ledger};
    use std::sync::{Arc, Mutex};

    fn ledger_with_task(dir: &std::path::Path) -> Ledger {
        let ledger = Ledger::open(dir.join("l.db")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(ledger.write(|w| {
            w.conn().execute_batch(
                "INSERT INTO runs (run_id, agent, component_hash, input, status, config_json,
                                   context_hash, started_at)
                     VALUES ('run', 'a', 'c', 'in', 'running', '{}', 'h', 1);
                 INSERT INTO blobs (hash, size, data) VALUES ('ih', 2, x'6869');
                 INSERT INTO tasks (run_id, task_id, parent_id, depth, agent, component_hash,
                                    description, status, input_hash, tokens_in, tokens_out,
                                    cost_usd, created_at)
                     VALUES ('run', 1, NULL, 0, 'a', 'c', 't', 'running', 'ih', 0, 0, 0, 1);",
            )
        }))
        .unwrap();
        ledger
    }

    fn log(task_id: u64, message: &str) -> EventRecord {
        EventRecord::note(
            "run",
            task_id,
            EventKind::TraceLog,
            true,
            serde_json::json!({ "message": message }),
            serde_json::Value::Null,
        )
    }

    /// `(seq, message)` of task 1's events, in order.
    fn stored(ledger: &Ledger) -> Vec<(i64, String)> {
        ledger
            .with_reader(|c| {
                let mut stmt = c.prepare(
                    "SELECT seq, json_extract(request, '$.message') FROM events
                     WHERE run_id = 'run' AND task_id = 1 ORDER BY seq",
                )?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<Result<Vec<_>, _>>()
            })
            .unwrap()
            .unwrap()
    }

    #[test]
    fn batched_appends_keep_their_order_and_take_the_next_free_number_after_another_writer() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger_with_task(dir.path());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let failures = Arc::new(Mutex::new(Vec::new()));
        let append = |events: Vec<EventRecord>| {
            let failures = failures.clone();
            rt.block_on(ledger.append_buffered(events, move |e| failures.lock().unwrap().push(e)))
                .unwrap();
        };
        // 40 events: more than one multi-row chunk.
        for i in 0..20 {
            append(vec![log(1, &format!("a{i}")), log(1, &format!("b{i}"))]);
        }
        rt.block_on(ledger.flush()).unwrap();
        let rows = stored(&ledger);
        assert_eq!(rows.len(), 40);
        assert!(
            rows.iter()
                .enumerate()
                .all(|(i, (seq, _))| *seq == i as i64 + 1)
        );
        assert_eq!(rows[0].1, "a0");
        assert_eq!(rows[39].1, "b19");
        // Another process appends seq 41 behind the writer's back (the CLI deciding an
        // approval): the batch fails on the taken number and is written job by job.
        let other = rusqlite::Connection::open(dir.path().join("l.db")).unwrap();
        other
            .execute(
                "INSERT INTO events (run_id, task_id, seq, kind, status, request, response,
                                     request_hash, started_at, finished_at)
                 VALUES ('run', 1, 41, ?1, 'ok', '{\"message\":\"cli\"}', 'null', 'h', 1, 1)",
                [EventKind::TraceLog],
            )
            .unwrap();
        append(vec![log(1, "c")]);
        append(vec![log(1, "d")]);
        rt.block_on(ledger.flush()).unwrap();
        let rows = stored(&ledger);
        let tail: Vec<_> = rows[40..].iter().map(|(s, m)| (*s, m.as_str())).collect();
        assert_eq!(tail, vec![(41, "cli"), (42, "c"), (43, "d")]);
        assert!(failures.lock().unwrap().is_empty(), "{failures:?}");
    }

    #[test]
    fn a_failing_batched_job_reports_its_error_and_writes_none_of_its_events() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger_with_task(dir.path());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let failures = Arc::new(Mutex::new(Vec::new()));
        rt.block_on(async {
            let f = failures.clone();
            ledger
                .append_buffered(vec![log(1, "kept")], move |e| {
                    f.lock().unwrap().push(("a", e))
                })
                .await
                .unwrap();
            // Task 99 does not exist: its row breaks the foreign key, and the job's
            // first event (task 1) goes with it.
            let f = failures.clone();
            ledger
                .append_buffered(vec![log(1, "lost"), log(99, "orphan")], move |e| {
                    f.lock().unwrap().push(("b", e))
                })
                .await
                .unwrap();
            let f = failures.clone();
            ledger
                .append_buffered(vec![log(1, "after")], move |e| {
                    f.lock().unwrap().push(("c", e))
                })
                .await
                .unwrap();
            ledger.flush().await.unwrap();
        });
        let messages: Vec<String> = stored(&ledger).into_iter().map(|(_, m)| m).collect();
        assert_eq!(messages, vec!["kept", "after"]);
        let failures = failures.lock().unwrap();
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert_eq!(failures[0].0, "b");
        assert!(failures[0].1.contains("FOREIGN KEY"), "{}", failures[0].1);
    }
}
