//! Token and request quotas shared by every host on one PostgreSQL ledger (a cluster
//! of workers): the reservations of the last window, per scope (`model:NAME`,
//! `provider:NAME`), in `quota_use`.
//!
//! A host's scheduler keeps its own sliding windows ([`crate::scheduler::quota`]);
//! on a shared ledger it also reserves here, so the hosts together stay within each
//! quota. A reservation is a short transaction of its own, on a connection of its own
//! (not the writer's group transaction, which holds other jobs): it locks its scopes
//! (transaction-level advisory locks, taken in name order, so two hosts never wait for
//! each other in a cycle), sums what the window holds, inserts its rows only when
//! they fit, and commits — the next host's reservation sees them.

use super::{Connection, LedgerError, SqlResult, now_ms};
use rusqlite::params;
use std::sync::Mutex;

/// The table, in SQLite's dialect (translated for PostgreSQL with the rest of the
/// schema, [`super::db`]).
pub const TABLE_SQL: &str = "CREATE TABLE IF NOT EXISTS quota_use (
    id     INTEGER PRIMARY KEY,
    scope  TEXT    NOT NULL,
    at     INTEGER NOT NULL,
    input  INTEGER NOT NULL,
    output INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS quota_use_by_scope ON quota_use(scope, at)";

/// One quota to reserve against: its scope and limits per window.
#[derive(Clone, Debug)]
pub struct SharedLimit {
    pub scope: String,
    pub tpm: Option<u64>,
    pub rpm: Option<u64>,
    pub itpm: Option<u64>,
    pub otpm: Option<u64>,
}

/// Why a shared reservation does not fit now, and in how long it might.
#[derive(Clone, Debug, PartialEq)]
pub struct SharedRefusal {
    pub reason: String,
    pub retry_in_ms: u64,
}

/// The quotas a host shares with the others on its PostgreSQL ledger.
pub struct SharedQuotas {
    conn: Mutex<Connection>,
}

impl SharedQuotas {
    /// Shared quotas on the PostgreSQL ledger at `url` (its own connection).
    pub fn connect(url: &str) -> Result<SharedQuotas, LedgerError> {
        Ok(SharedQuotas {
            conn: Mutex::new(super::db::open_postgres(url)?),
        })
    }

    /// Reserve `input` + `output` tokens and one request on every quota of `limits`
    /// for a window of `window_ms`: the reservations' ids and the time they were
    /// stamped at, or why they do not fit.
    pub fn reserve(
        &self,
        limits: &[SharedLimit],
        window_ms: i64,
        input: u64,
        output: u64,
    ) -> SqlResult<Result<(Vec<i64>, i64), SharedRefusal>> {
        let conn = self.conn.lock().unwrap();
        conn.execute_batch("BEGIN")?;
        let reserved = reserve_in(&conn, limits, window_ms, input, output);
        let end = if matches!(reserved, Ok(Ok(_))) {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        conn.execute_batch(end)?;
        reserved
    }

    /// Set reservations to what the call used (0 and 0 when it failed or never ran:
    /// the request still counts), and forget those older than `window_ms`.
    pub fn reconcile(&self, ids: &[i64], input: u64, output: u64, window_ms: i64) -> SqlResult<()> {
        let conn = self.conn.lock().unwrap();
        let mut stmt =
            conn.prepare_cached("UPDATE quota_use SET input = ?2, output = ?3 WHERE id = ?1")?;
        for id in ids {
            stmt.execute(params![id, input as i64, output as i64])?;
        }
        conn.prepare_cached("DELETE FROM quota_use WHERE at < ?1")?
            .execute([now_ms() - 2 * window_ms])?;
        Ok(())
    }
}

/// [`SharedQuotas::reserve`] inside its transaction.
fn reserve_in(
    conn: &Connection,
    limits: &[SharedLimit],
    window_ms: i64,
    input: u64,
    output: u64,
) -> SqlResult<Result<(Vec<i64>, i64), SharedRefusal>> {
    let mut ordered: Vec<&SharedLimit> = limits.iter().collect();
    ordered.sort_by(|a, b| a.scope.cmp(&b.scope));
    for limit in &ordered {
        conn.query_row(
            "SELECT pg_advisory_xact_lock(hashtext(?1))",
            [&limit.scope],
            |_| Ok(()),
        )?;
    }
    // The time once the locks are held: a reservation that waited for another host's
    // is stamped when it is made, not when it started waiting (so the call it admits
    // is sent right after its stamp, whoever waited longest).
    let now = now_ms();
    for limit in &ordered {
        let (used_in, used_out, requests, oldest): (i64, i64, i64, i64) = conn
            .prepare_cached(
                "SELECT COALESCE(SUM(input), 0), COALESCE(SUM(output), 0), COUNT(*),
                            COALESCE(MIN(at), 0)
                     FROM quota_use WHERE scope = ?1 AND at > ?2",
            )?
            .query_row(params![limit.scope, now - window_ms], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?;
        let (used_in, used_out) = (used_in as u64, used_out as u64);
        let over = [
            (limit.tpm, used_in + used_out, input + output, "tokens"),
            (limit.itpm, used_in, input, "input tokens"),
            (limit.otpm, used_out, output, "output tokens"),
            (limit.rpm, requests as u64, 1, "requests"),
        ]
        .into_iter()
        .find(|(cap, used, more, _)| cap.is_some_and(|cap| used + more > cap));
        if let Some((cap, used, _, what)) = over {
            return Ok(Err(SharedRefusal {
                reason: format!(
                    "{}: {used}/{} {what} in the window across the cluster",
                    limit.scope,
                    cap.unwrap_or_default()
                ),
                retry_in_ms: (oldest + window_ms - now).max(1) as u64,
            }));
        }
    }
    let mut ids = Vec::with_capacity(ordered.len());
    for limit in &ordered {
        ids.push(
            conn.prepare_cached(
                "INSERT INTO quota_use (scope, at, input, output) VALUES (?1, ?2, ?3, ?4)
                         RETURNING id",
            )?
            .query_row(
                params![limit.scope, now, input as i64, output as i64],
                |r| r.get(0),
            )?,
        );
    }
    Ok(Ok((ids, now)))
}
