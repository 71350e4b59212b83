//! Runs submitted to a cluster of workers (`agentflow submit`, `agentflow worker`;
//! PostgreSQL ledgers only): the queue they wait in, and how a worker claims one.
//!
//! A submission is a row of `submissions` — the run id it will have, the component
//! (its bytes in `blobs`, so a worker needs only the database URL), the input and the
//! run's options. A worker claims the oldest submission nobody executes: in one
//! transaction it locks candidate rows with `FOR UPDATE SKIP LOCKED` (two workers
//! never claim the same row, and neither waits for the other) and takes the run's
//! lease ([`super::leases`]), which its host then renews every heartbeat. "Nobody
//! executes it" means no lease, or a stale one — the holder stopped renewing it, or
//! was a process of this machine that is gone — so a run whose worker died is claimed
//! again and resumed by replay: tools that ran are not run again. A submission ends
//! when its run has finished (completed, failed or cancelled).

use super::leases::{Holder, Lease};
use super::{Connection, SqlResult, Writer, now_ms};
use rusqlite::params;

/// The table, in SQLite's dialect (translated for PostgreSQL with the rest of the
/// schema, [`super::db`]).
pub const TABLE_SQL: &str = "CREATE TABLE IF NOT EXISTS submissions (
    run_id         TEXT    PRIMARY KEY,
    agent          TEXT    NOT NULL,
    component_hash TEXT    NOT NULL REFERENCES blobs(hash),
    input          TEXT    NOT NULL,
    options        TEXT    NOT NULL,
    submitted_at   INTEGER NOT NULL,
    claims         INTEGER NOT NULL DEFAULT 0,
    claimed_at     INTEGER,
    finished_at    INTEGER,
    start_failures INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS submissions_open ON submissions(submitted_at) WHERE finished_at IS NULL";

/// Candidates one claim looks at (the oldest open submissions not locked by another
/// worker's claim).
const CANDIDATES: i64 = 64;

/// A run to submit.
#[derive(Clone, Debug)]
pub struct NewSubmission {
    pub run_id: String,
    pub agent: String,
    pub component_hash: String,
    pub input: String,
    /// The run's options (JSON, as the CLI's `submit` wrote them).
    pub options: String,
}

/// A submission a worker claimed: start it (`resume == false`) or resume it.
#[derive(Clone, Debug)]
pub struct Claim {
    pub run_id: String,
    pub agent: String,
    pub component_hash: String,
    pub input: String,
    pub options: String,
    /// The run exists already: its worker stopped, so it is resumed by replay.
    pub resume: bool,
    /// How many times it was claimed, this claim included.
    pub claims: i64,
}

impl Writer {
    /// Queue a run (its component stored in `blobs` first).
    pub fn submit(&mut self, new: &NewSubmission, component: &[u8]) -> SqlResult<()> {
        self.put_blob_hashed(&new.component_hash, component)?;
        self.conn
            .prepare_cached(
                "INSERT INTO submissions (run_id, agent, component_hash, input, options, submitted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                new.run_id,
                new.agent,
                new.component_hash,
                new.input,
                new.options,
                now_ms()
            ])?;
        self.announce_change()
    }

    /// Claim the oldest open submission nobody executes, for `holder`: its lease is
    /// taken in the same transaction. Submissions whose run has finished are closed
    /// on the way.
    pub fn claim_submission(&mut self, holder: &Holder) -> SqlResult<Option<Claim>> {
        let now = now_ms();
        let candidates = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT s.run_id, s.agent, s.component_hash, s.input, s.options, s.claims,
                        r.status, l.host, l.pid, l.heartbeat_at
                 FROM submissions s
                 LEFT JOIN runs r ON r.run_id = s.run_id
                 LEFT JOIN leases l ON l.run_id = s.run_id
                 WHERE s.finished_at IS NULL
                 ORDER BY s.submitted_at, s.run_id
                 LIMIT ?1
                 FOR UPDATE OF s SKIP LOCKED",
            )?;
            stmt.query_map([CANDIDATES], |r| {
                let lease = match r.get::<_, Option<String>>(7)? {
                    Some(host) => Some(Lease {
                        holder: Holder {
                            host,
                            pid: r.get(8)?,
                        },
                        heartbeat_at: r.get(9)?,
                    }),
                    None => None,
                };
                Ok((
                    Claim {
                        run_id: r.get(0)?,
                        agent: r.get(1)?,
                        component_hash: r.get(2)?,
                        input: r.get(3)?,
                        options: r.get(4)?,
                        claims: r.get::<_, i64>(5)? + 1,
                        resume: false,
                    },
                    r.get::<_, Option<String>>(6)?,
                    lease,
                ))
            })?
            .collect::<SqlResult<Vec<_>>>()?
        };
        for (mut claim, status, lease) in candidates {
            if status.as_deref().is_some_and(|s| s != "running") {
                self.conn
                    .prepare_cached("UPDATE submissions SET finished_at = ?2 WHERE run_id = ?1")?
                    .execute(params![claim.run_id, now])?;
                continue;
            }
            if lease.is_some_and(|l| !l.is_stale(now)) {
                continue; // a live worker executes it
            }
            claim.resume = status.is_some();
            self.take_lease(&claim.run_id, holder)?;
            self.conn
                .prepare_cached(
                    "UPDATE submissions SET claims = claims + 1, claimed_at = ?2 WHERE run_id = ?1",
                )?
                .execute(params![claim.run_id, now])?;
            return Ok(Some(claim));
        }
        Ok(None)
    }

    /// Count a failed start (or resume) of `run_id`'s run; how many there have been.
    /// Claims count takeovers too (a worker killed mid-run); these only failures.
    pub fn count_start_failure(&mut self, run_id: &str) -> SqlResult<i64> {
        self.conn.query_row(
            "UPDATE submissions SET start_failures = start_failures + 1 WHERE run_id = ?1
             RETURNING start_failures",
            params![run_id],
            |r| r.get(0),
        )
    }

    /// Close the submission of `run_id` (its run finished).
    pub fn finish_submission(&mut self, run_id: &str) -> SqlResult<()> {
        self.conn
            .prepare_cached(
                "UPDATE submissions SET finished_at = ?2 WHERE run_id = ?1 AND finished_at IS NULL",
            )?
            .execute(params![run_id, now_ms()])?;
        Ok(())
    }
}

/// Submitted runs no worker has started yet (0 on a ledger without submissions: SQLite).
pub fn queued(conn: &Connection) -> SqlResult<i64> {
    if !conn.is_postgres() {
        return Ok(0);
    }
    conn.query_row(
        "SELECT COUNT(*) FROM submissions s WHERE s.finished_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.run_id = s.run_id)",
        [],
        |r| r.get(0),
    )
}
