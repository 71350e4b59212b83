//! Tasks offered to a cluster's workers (PostgreSQL ledgers only): how a child task
//! spawned on one worker runs on another.
//!
//! The worker executing a task offers a child (a row of `task_offers`) instead of
//! running it, when the child can run apart: always in a run whose budget and limits
//! are rows every worker sees ([`super::budgets`], [`super::run_limits`]) — the
//! worker executing the child offers the child's own children in turn — else only a
//! child at the run's deepest level with a share of its own ([`crate::supervisor`]
//! decides). Any worker claims an open offer with `FOR UPDATE
//! SKIP LOCKED` (two workers never claim the same one), renews its lease every
//! heartbeat while it executes the task, records the task's end like any task's
//! (`tasks.status`), and closes the offer. The spawner reads that end from the
//! ledger. A claim whose lease went stale (its worker died) is claimed again and the
//! task resumed by replay; an offer whose task ended meanwhile (cancelled by its
//! spawner, or its run over) is closed by the next claim that meets it.

use super::leases::Holder;
use super::{SqlResult, Writer, now_ms};
use rusqlite::{OptionalExtension, params};

/// The table, in SQLite's dialect (translated for PostgreSQL with the rest of the
/// schema, [`super::db`]).
pub const TABLE_SQL: &str = "CREATE TABLE IF NOT EXISTS task_offers (
    run_id       TEXT    NOT NULL,
    task_id      INTEGER NOT NULL,
    offered_at   INTEGER NOT NULL,
    host         TEXT,
    pid          INTEGER,
    heartbeat_at INTEGER,
    claims       INTEGER NOT NULL DEFAULT 0,
    done_at      INTEGER,
    failures     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, task_id)
);
CREATE INDEX IF NOT EXISTS task_offers_open ON task_offers(offered_at) WHERE done_at IS NULL";

/// Candidates one claim looks at.
const CANDIDATES: i64 = 64;

/// An offered task a worker claimed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferClaim {
    pub run_id: String,
    pub task_id: u64,
    /// How many times it was claimed, this claim included (more than 1: its worker
    /// stopped, so it is resumed by replay).
    pub claims: i64,
}

impl Writer {
    /// Offer task `task_id` of `run_id` to the workers (again: nothing changes).
    pub fn offer_task(&self, run_id: &str, task_id: u64) -> SqlResult<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO task_offers (run_id, task_id, offered_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (run_id, task_id) DO NOTHING",
            )?
            .execute(params![run_id, task_id as i64, now_ms()])?;
        self.announce_change()
    }

    /// Claim the oldest open offer nobody executes, for `holder`. Offers whose task
    /// has ended are closed on the way.
    /// Only offers of the runs `only` names, if given (a draining worker finishes the
    /// runs in its hands).
    pub fn claim_offer(
        &self,
        holder: &Holder,
        only: Option<&[String]>,
    ) -> SqlResult<Option<OfferClaim>> {
        let now = now_ms();
        let only = only.map(|runs| serde_json::to_string(runs).unwrap_or_else(|_| "[]".into()));
        let candidates = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT o.run_id, o.task_id, o.claims, o.host, o.pid, o.heartbeat_at, t.status
                 FROM task_offers o
                 LEFT JOIN tasks t ON t.run_id = o.run_id AND t.task_id = o.task_id
                 WHERE o.done_at IS NULL
                   AND (?2::text IS NULL
                        OR o.run_id IN (SELECT jsonb_array_elements_text(?2::jsonb)))
                 ORDER BY o.offered_at, o.run_id, o.task_id
                 LIMIT ?1
                 FOR UPDATE OF o SKIP LOCKED",
            )?;
            stmt.query_map(params![CANDIDATES, only], |r| {
                let holder = match r.get::<_, Option<String>>(3)? {
                    Some(host) => Some((
                        Holder {
                            host,
                            pid: r.get(4)?,
                        },
                        r.get::<_, i64>(5)?,
                    )),
                    None => None,
                };
                Ok((
                    OfferClaim {
                        run_id: r.get(0)?,
                        task_id: r.get::<_, i64>(1)? as u64,
                        claims: r.get::<_, i64>(2)? + 1,
                    },
                    holder,
                    r.get::<_, Option<String>>(6)?,
                ))
            })?
            .collect::<SqlResult<Vec<_>>>()?
        };
        for (claim, held, status) in candidates {
            if status
                .as_deref()
                .is_some_and(|s| matches!(s, "completed" | "failed" | "cancelled"))
            {
                self.close_offer(&claim.run_id, claim.task_id)?;
                continue;
            }
            if held.is_some_and(|(h, beat)| !is_stale(&h, beat, now)) {
                continue; // a live worker executes it
            }
            self.conn
                .prepare_cached(
                    "UPDATE task_offers SET host = ?3, pid = ?4, heartbeat_at = ?5,
                            claims = claims + 1
                     WHERE run_id = ?1 AND task_id = ?2",
                )?
                .execute(params![
                    claim.run_id,
                    claim.task_id as i64,
                    holder.host,
                    holder.pid,
                    now
                ])?;
            return Ok(Some(claim));
        }
        Ok(None)
    }

    /// Renew `holder`'s claims on `tasks` (run id, task id).
    pub fn renew_offers(&self, tasks: &[(String, u64)], holder: &Holder) -> SqlResult<()> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE task_offers SET heartbeat_at = ?3
             WHERE run_id = ?1 AND task_id = ?2 AND host = ?4 AND pid = ?5",
        )?;
        let now = now_ms();
        for (run_id, task_id) in tasks {
            stmt.execute(params![
                run_id,
                *task_id as i64,
                now,
                holder.host,
                holder.pid
            ])?;
        }
        Ok(())
    }

    /// Give up `holder`'s claim on the offer of `task` (run id, task id; every offer
    /// it has not finished with `None`): free to be claimed again at once.
    pub fn release_offers(&self, task: Option<(&str, u64)>, holder: &Holder) -> SqlResult<usize> {
        let (run_id, task_id) = task.map_or((None, None), |(r, t)| (Some(r), Some(t as i64)));
        let released = self
            .conn
            .prepare_cached(
                "UPDATE task_offers SET host = NULL, pid = NULL, heartbeat_at = NULL
                 WHERE host = ?1 AND pid = ?2 AND done_at IS NULL
                   AND (CAST(?3 AS TEXT) IS NULL OR (run_id = ?3 AND task_id = ?4))",
            )?
            .execute(params![holder.host, holder.pid, run_id, task_id])?;
        self.announce_change()?;
        Ok(released)
    }

    /// Count a failure of this worker to execute task `task_id` of `run_id` (its
    /// component or record unreadable here, say) and, below `most` failures, let its
    /// claim go: how many failures it has had. At `most` the claim is kept, for the
    /// caller to record the task's end (nobody claims it meanwhile). Takeovers after
    /// a worker died are claims, not failures.
    pub fn offer_failed(
        &self,
        run_id: &str,
        task_id: u64,
        holder: &Holder,
        most: i64,
    ) -> SqlResult<i64> {
        let failures = self.conn.query_row(
            "UPDATE task_offers SET failures = failures + 1 WHERE run_id = ?1 AND task_id = ?2
             RETURNING failures",
            params![run_id, task_id as i64],
            |r| r.get(0),
        )?;
        if failures < most {
            self.release_offers(Some((run_id, task_id)), holder)?;
        }
        Ok(failures)
    }

    /// Close the offer of a task that ended.
    pub fn close_offer(&self, run_id: &str, task_id: u64) -> SqlResult<()> {
        self.conn
            .prepare_cached(
                "UPDATE task_offers SET done_at = ?3
                 WHERE run_id = ?1 AND task_id = ?2 AND done_at IS NULL",
            )?
            .execute(params![run_id, task_id as i64, now_ms()])?;
        Ok(())
    }
}

/// Whether a claim renewed at `beat` by `holder` is stale: not renewed within the
/// lease TTL, or its process of this machine is gone.
fn is_stale(holder: &Holder, beat: i64, now: i64) -> bool {
    super::leases::Lease {
        holder: holder.clone(),
        heartbeat_at: beat,
    }
    .is_stale(now)
}

/// How many times task `task_id` of `run_id` was claimed by a worker (0: never, or
/// never offered).
pub fn claims(conn: &super::Connection, run_id: &str, task_id: u64) -> SqlResult<i64> {
    Ok(conn
        .query_row(
            "SELECT claims FROM task_offers WHERE run_id = ?1 AND task_id = ?2",
            params![run_id, task_id as i64],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// Who executed a task offered to the cluster: the worker holding (or last holding)
/// its claim, and how many claims it took (more than one: taken over).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Executor {
    pub host: Option<String>,
    pub pid: Option<i64>,
    pub claims: i64,
}

/// The executors of run `run_id`'s offered tasks, by task (none on SQLite).
pub fn executors(
    conn: &super::Connection,
    run_id: &str,
) -> SqlResult<std::collections::HashMap<u64, Executor>> {
    if !conn.is_postgres() {
        return Ok(Default::default());
    }
    let mut stmt = conn
        .prepare_cached("SELECT task_id, host, pid, claims FROM task_offers WHERE run_id = ?1")?;
    let rows = stmt.query_map([run_id], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            Executor {
                host: r.get(1)?,
                pid: r.get(2)?,
                claims: r.get(3)?,
            },
        ))
    })?;
    rows.collect()
}

/// How a task ended, and what it spent.
#[derive(Clone, Debug)]
pub struct TaskEnd {
    pub status: super::Status,
    pub output: Option<String>,
    pub error: Option<String>,
    pub spent_usd: f64,
}

/// How task `task_id` of `run_id` ended; `None` while it has not.
pub fn task_end(
    conn: &super::Connection,
    run_id: &str,
    task_id: u64,
) -> SqlResult<Option<TaskEnd>> {
    let row: Option<(String, Option<String>, Option<String>)> = conn
        .query_row(
            "SELECT status, output, error FROM tasks WHERE run_id = ?1 AND task_id = ?2",
            params![run_id, task_id as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((status, output, error)) = row else {
        return Ok(None);
    };
    let status = match status.as_str() {
        "completed" => super::Status::Completed,
        "failed" => super::Status::Failed,
        "cancelled" => super::Status::Cancelled,
        _ => return Ok(None),
    };
    let spent_usd: f64 = conn.query_row(
        "SELECT COALESCE(SUM(cost_usd), 0) FROM events WHERE run_id = ?1 AND task_id = ?2",
        params![run_id, task_id as i64],
        |r| r.get(0),
    )?;
    Ok(Some(TaskEnd {
        status,
        output,
        error,
        spent_usd,
    }))
}

/// Why an offered task's execution must stop, if it must: the task ended (`"ended"`),
/// one of its `ancestors` was cancelled (`"cancelled above"`: a cancel reaches a task's
/// descendants wherever they run), or its run ended (`"run ended"`).
pub fn cut_off(
    conn: &super::Connection,
    run_id: &str,
    task_id: u64,
    ancestors: &[u64],
) -> SqlResult<Option<&'static str>> {
    if task_end(conn, run_id, task_id)?.is_some() {
        return Ok(Some("ended"));
    }
    let run_open: Option<String> = conn
        .query_row("SELECT status FROM runs WHERE run_id = ?1", [run_id], |r| {
            r.get(0)
        })
        .optional()?;
    if run_open.is_some_and(|s| s != "running") {
        return Ok(Some("run ended"));
    }
    if ancestors.is_empty() {
        return Ok(None);
    }
    let ids: Vec<String> = ancestors.iter().map(u64::to_string).collect();
    let cancelled: i64 = conn.query_row(
        &format!(
            "SELECT COUNT(*) FROM tasks WHERE run_id = ?1 AND status = 'cancelled'
               AND task_id IN ({})",
            ids.join(", ")
        ),
        [run_id],
        |r| r.get(0),
    )?;
    Ok((cancelled > 0).then_some("cancelled above"))
}
