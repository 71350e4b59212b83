//! Single facts about tasks for other modules (a task's parent, its description), and
//! re-opening tasks and runs that ended so they run again (`agentflow resume
//! --retry-failed`, `recover --apply`), and recording a task's end only once
//! ([`Ledger::finish_open_task`]). The other lifecycle writes (create, start, finish)
//! are [`Ledger`] methods; whole task rows are read through [`query`](super::query).

use super::{
    Commit, Connection, EventRecord, FINISH_TASK_SQL, Ledger, LedgerError, SqlResult, Status,
    Writer, now_ms,
};
use rusqlite::{OptionalExtension, params};

impl Ledger {
    /// Record how task `task_id` ended, as [`Ledger::finish_task`] does, unless its end
    /// is in the ledger already — written by the other side of a task offered to
    /// another worker: its spawner cancelling it while its worker finished it, or the
    /// other way round. Whether this call recorded it; when not, nothing was written
    /// and the end already there stands. The check and the write are one transaction
    /// (on PostgreSQL the first `UPDATE` holds the row until the commit, and a
    /// concurrent one finds it ended).
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_open_task(
        &self,
        run_id: String,
        task_id: u64,
        status: Status,
        output: Option<String>,
        error: Option<String>,
        events: Vec<EventRecord>,
        commit: Commit,
    ) -> Result<bool, LedgerError> {
        self.write_as(commit, move |w| {
            let open = w
                .conn
                .prepare_cached(
                    "UPDATE tasks SET finished_at = ?3 WHERE run_id = ?1 AND task_id = ?2
                       AND status NOT IN ('completed', 'failed', 'cancelled')",
                )?
                .execute(params![run_id, task_id as i64, now_ms()])?;
            if open == 0 {
                return Ok(false);
            }
            w.record_task_end(&run_id, task_id, status, output, error, events)?;
            Ok(true)
        })
        .await
    }
}

impl Writer {
    /// Write task `task_id`'s end: its deferred `events`, then its status, output or
    /// error and the totals summed from its events ([`Ledger::finish_task`]).
    pub(super) fn record_task_end(
        &mut self,
        run_id: &str,
        task_id: u64,
        status: Status,
        output: Option<String>,
        error: Option<String>,
        events: Vec<EventRecord>,
    ) -> SqlResult<()> {
        for e in events {
            self.append_event(e)?;
        }
        self.conn
            .prepare_cached(&FINISH_TASK_SQL)?
            .execute(params![
                run_id,
                task_id as i64,
                status.as_str(),
                output,
                error,
                now_ms()
            ])?;
        self.forget_task(run_id, task_id);
        self.announce_change()
    }
}

/// The parent of task `task_id` (`None` for the root, or a task that does not exist).
pub fn parent_of(conn: &Connection, run_id: &str, task_id: u64) -> SqlResult<Option<u64>> {
    Ok(conn
        .prepare_cached("SELECT parent_id FROM tasks WHERE run_id = ?1 AND task_id = ?2")?
        .query_row(params![run_id, task_id as i64], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .optional()?
        .flatten()
        .map(|p| p as u64))
}

/// The description of task `task_id` (`None` if there is no such task).
pub fn description_of(conn: &Connection, run_id: &str, task_id: u64) -> SqlResult<Option<String>> {
    conn.query_row(
        "SELECT description FROM tasks WHERE run_id = ?1 AND task_id = ?2",
        params![run_id, task_id as i64],
        |r| r.get::<_, String>(0),
    )
    .optional()
}

impl Writer {
    /// Set task `task_id` running again, clearing how it ended.
    pub fn reopen_task(&self, run_id: &str, task_id: u64) -> SqlResult<()> {
        self.conn.execute(
            "UPDATE tasks SET status = 'running', error = NULL, output = NULL, finished_at = NULL
             WHERE run_id = ?1 AND task_id = ?2",
            params![run_id, task_id as i64],
        )?;
        Ok(())
    }

    /// Set run `run_id` running again, clearing how it ended.
    pub fn reopen_run(&self, run_id: &str) -> SqlResult<()> {
        self.conn.execute(
            "UPDATE runs SET status = 'running', error = NULL, output = NULL, finished_at = NULL
             WHERE run_id = ?1",
            [run_id],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::ledger::{Commit, Ledger, Status};

    /// The first end recorded stands: a second `finish_open_task` writes nothing and
    /// says so, where `finish_task` would overwrite it.
    #[test]
    fn a_tasks_first_recorded_end_stands() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path().join("l.db")).unwrap();
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
                     VALUES ('run', 1, NULL, 0, 'a', 'c', 't', 'running', 'ih', 0, 0, 0, 1),
                            ('run', 2, 1, 1, 'a', 'c', 't', 'running', 'ih', 0, 0, 0, 1);",
            )
        }))
        .unwrap();
        let end = |status: Status, output: Option<&str>| {
            rt.block_on(ledger.finish_open_task(
                "run".into(),
                2,
                status,
                output.map(String::from),
                None,
                Vec::new(),
                Commit::Durable,
            ))
            .unwrap()
        };
        assert!(
            end(Status::Completed, Some("done")),
            "the first end is recorded"
        );
        assert!(!end(Status::Cancelled, None), "the second is not");
        let row: (String, Option<String>) = ledger
            .with_reader(|c| {
                c.query_row(
                    "SELECT status, output FROM tasks WHERE run_id = 'run' AND task_id = 2",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .unwrap()
            .unwrap();
        assert_eq!(row, ("completed".to_string(), Some("done".to_string())));
        // Reopened (a re-run of a failed task), it can end again.
        rt.block_on(ledger.write(|w| w.reopen_task("run", 2)))
            .unwrap();
        assert!(end(Status::Failed, None));
    }
}
