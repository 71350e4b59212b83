//! Budgets shared by the workers of a cluster (PostgreSQL ledgers only): a run's
//! budget owners as rows of `budget_pools`, reserved with conditional updates, so
//! tasks of one run executing on several workers draw on one budget atomically.
//!
//! A row is a budget *owner* ([`crate::supervisor::budget`]): the root (task 1, the
//! run's budget and optional token limit) or a task given a share of its own. Every
//! change is one statement on a connection of its own (like [`super::quotas`]),
//! calling a function of [`FUNCTIONS_SQL`] (atomic under autocommit): a call's
//! reservation adds to `reserved_usd` only `WHERE` what is left covers it — and to the
//! root's `tokens_reserved` only where the run's token limit allows — and writes a
//! *hold* (`budget_holds`: amount, holder, expiry); settling the call removes the hold
//! and moves its amount to spent at the real cost. A child's share is carved out of its
//! spawner's owner the same way and handed back, with what it spent and holds, at its
//! end; its row is then closed (a call of its that settles later was charged to the
//! spawner already, as its hold).
//!
//! A worker that dies mid-call leaves its hold: holds are renewed by their process
//! every heartbeat and one not renewed for [`HOLD_TTL`] is *reclaimed* — counted as
//! spent whole (the call may have been sent), never handed out again — when its pool
//! runs short, when its run ends, or by any live process every few heartbeats. Spending
//! is settled here live, so a run resumed by replay charges nothing again.

use super::leases::{HEARTBEAT, Holder, LEASE_TTL};
use super::{Connection, LedgerError, SqlResult, now_ms};
use rusqlite::{OptionalExtension, params};
use std::sync::Mutex;

/// The tables, in SQLite's dialect (translated for PostgreSQL with the rest of the
/// schema, [`super::db`]).
pub const TABLE_SQL: &str = "CREATE TABLE IF NOT EXISTS budget_pools (
    run_id          TEXT    NOT NULL,
    task_id         INTEGER NOT NULL,
    limit_usd       REAL    NOT NULL,
    spent_usd       REAL    NOT NULL DEFAULT 0,
    reserved_usd    REAL    NOT NULL DEFAULT 0,
    carved_usd      REAL    NOT NULL DEFAULT 0,
    peak_usd        REAL    NOT NULL DEFAULT 0,
    token_limit     INTEGER,
    tokens_used     INTEGER NOT NULL DEFAULT 0,
    tokens_reserved INTEGER NOT NULL DEFAULT 0,
    closed          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, task_id)
);
CREATE TABLE IF NOT EXISTS budget_holds (
    id         INTEGER PRIMARY KEY,
    run_id     TEXT    NOT NULL,
    owner_id   INTEGER NOT NULL,
    task_id    INTEGER NOT NULL,
    usd        REAL    NOT NULL,
    tokens     INTEGER NOT NULL,
    host       TEXT    NOT NULL,
    pid        INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS budget_holds_by_run ON budget_holds(run_id, expires_at)";

/// A reservation and a settle, each one statement (one round trip, atomic under
/// autocommit: the rows they update stay locked until its end). `reserve` returns the
/// hold's id, or -1 (the run's tokens do not fit) or -2 (the owner's USD does not).
/// Created — or replaced — at every start ([`super::db`]).
pub const FUNCTIONS_SQL: &str = r#"
CREATE OR REPLACE FUNCTION agentflow_budget_apply(p_run text, p_owner bigint,
    free_usd double precision, free_tokens bigint, add_usd double precision, add_tokens bigint)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE budget_pools SET reserved_usd = GREATEST(reserved_usd - free_usd, 0),
           spent_usd = spent_usd + add_usd,
           peak_usd = GREATEST(peak_usd, spent_usd + add_usd + GREATEST(reserved_usd - free_usd, 0) + carved_usd)
     WHERE run_id = p_run AND task_id = p_owner AND closed = 0;
    UPDATE budget_pools SET tokens_reserved = GREATEST(tokens_reserved - free_tokens, 0),
           tokens_used = tokens_used + add_tokens
     WHERE run_id = p_run AND task_id = 1;
END
$fn$;
CREATE OR REPLACE FUNCTION agentflow_budget_reserve(p_run text, p_owner bigint, p_task bigint,
    p_usd double precision, p_tokens bigint, p_host text, p_pid bigint, p_expires bigint)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    hold bigint;
BEGIN
    UPDATE budget_pools SET tokens_reserved = tokens_reserved + p_tokens
     WHERE run_id = p_run AND task_id = 1
       AND (token_limit IS NULL OR tokens_used + tokens_reserved + p_tokens <= token_limit);
    IF NOT FOUND THEN
        RETURN -1;
    END IF;
    UPDATE budget_pools SET reserved_usd = reserved_usd + p_usd,
           peak_usd = GREATEST(peak_usd, spent_usd + reserved_usd + carved_usd + p_usd)
     WHERE run_id = p_run AND task_id = p_owner
       AND limit_usd - spent_usd - reserved_usd - carved_usd + 1e-12 >= p_usd;
    IF NOT FOUND THEN
        UPDATE budget_pools SET tokens_reserved = tokens_reserved - p_tokens
         WHERE run_id = p_run AND task_id = 1;
        RETURN -2;
    END IF;
    INSERT INTO budget_holds (run_id, owner_id, task_id, usd, tokens, host, pid, expires_at)
    VALUES (p_run, p_owner, p_task, p_usd, p_tokens, p_host, p_pid, p_expires)
    RETURNING id INTO hold;
    RETURN hold;
END
$fn$;
CREATE OR REPLACE FUNCTION agentflow_budget_carve(p_run text, p_owner bigint, p_child bigint,
    p_share double precision)
RETURNS boolean LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE budget_pools SET carved_usd = carved_usd + p_share,
           peak_usd = GREATEST(peak_usd, spent_usd + reserved_usd + carved_usd + p_share)
     WHERE run_id = p_run AND task_id = p_owner
       AND limit_usd - spent_usd - reserved_usd - carved_usd + 1e-12 >= p_share;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO budget_pools (run_id, task_id, limit_usd) VALUES (p_run, p_child, p_share)
    ON CONFLICT (run_id, task_id) DO NOTHING;
    RETURN true;
END
$fn$;
CREATE OR REPLACE FUNCTION agentflow_budget_close(p_run text, p_owner bigint, p_child bigint)
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    share double precision;
    used double precision;
BEGIN
    -- Locked until the end: a second hand-back (the executing worker's and the
    -- spawner's) reads the closed row, not the share again.
    SELECT limit_usd, spent_usd + reserved_usd INTO share, used FROM budget_pools
     WHERE run_id = p_run AND task_id = p_child AND closed = 0 FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE budget_pools SET limit_usd = 0, spent_usd = 0, reserved_usd = 0, closed = 1
     WHERE run_id = p_run AND task_id = p_child;
    UPDATE budget_pools SET carved_usd = GREATEST(carved_usd - share, 0),
           spent_usd = spent_usd + used
     WHERE run_id = p_run AND task_id = p_owner;
END
$fn$;
CREATE OR REPLACE FUNCTION agentflow_budget_reclaim(p_run text, p_now bigint)
RETURNS integer LANGUAGE plpgsql AS $fn$
DECLARE
    stale record;
    reclaimed integer := 0;
BEGIN
    -- Holds not renewed in time (their process stopped), of one run or (NULL) all:
    -- counted as spent whole.
    FOR stale IN DELETE FROM budget_holds
                  WHERE (p_run IS NULL OR run_id = p_run) AND expires_at < p_now
                  RETURNING run_id, owner_id, usd, tokens LOOP
        PERFORM agentflow_budget_apply(stale.run_id, stale.owner_id, stale.usd, stale.tokens,
                                       stale.usd, stale.tokens);
        reclaimed := reclaimed + 1;
    END LOOP;
    RETURN reclaimed;
END
$fn$;
CREATE OR REPLACE FUNCTION agentflow_budget_settle(p_run text, p_owner bigint, p_hold bigint,
    p_usd double precision, p_tokens bigint, p_cost double precision, p_used bigint)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM budget_holds WHERE id = p_hold;
    IF FOUND THEN
        PERFORM agentflow_budget_apply(p_run, p_owner, p_usd, p_tokens, p_cost, p_used);
    ELSE
        -- Reclaimed meanwhile, charged whole: only a cost above the hold is added.
        PERFORM agentflow_budget_apply(p_run, p_owner, 0, 0,
            GREATEST(p_cost - p_usd, 0), GREATEST(p_used - p_tokens, 0));
    END IF;
END
$fn$;
"#;

/// A hold not renewed for this long belongs to a process that stopped.
pub const HOLD_TTL: std::time::Duration = LEASE_TTL;

/// Every this many heartbeats, a process reclaims the stale holds of every run.
const RECLAIM_EVERY: u64 = 5;

/// One owner's numbers.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct PoolRow {
    pub limit_usd: f64,
    pub spent_usd: f64,
    pub reserved_usd: f64,
    pub carved_usd: f64,
    pub peak_usd: f64,
    pub token_limit: Option<u64>,
    pub tokens_used: u64,
    pub tokens_reserved: u64,
}

impl PoolRow {
    /// What is left to reserve or carve.
    pub fn left(&self) -> f64 {
        self.limit_usd - self.spent_usd - self.reserved_usd - self.carved_usd
    }
}

/// Why a reservation or a share does not fit.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// The run's token limit: its row.
    Tokens(PoolRow),
    /// The owner's USD: its row.
    Usd(PoolRow),
}

/// The shared budgets of one PostgreSQL ledger, for one process.
pub struct SharedBudgets {
    conn: Mutex<Connection>,
    holder: Holder,
}

impl SharedBudgets {
    /// Shared budgets on the PostgreSQL ledger at `url` (a connection of its own);
    /// this process's holds are renewed every heartbeat while the runtime runs.
    pub fn connect(url: &str) -> Result<std::sync::Arc<SharedBudgets>, LedgerError> {
        let budgets = std::sync::Arc::new(SharedBudgets {
            conn: Mutex::new(super::db::open_postgres(url)?),
            holder: Holder::this_process(),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = std::sync::Arc::downgrade(&budgets);
            runtime.spawn(async move {
                for beat in 1u64.. {
                    tokio::time::sleep(HEARTBEAT).await;
                    let Some(budgets) = weak.upgrade() else {
                        return;
                    };
                    let renewed = tokio::task::spawn_blocking(move || {
                        budgets.renew_holds()?;
                        budgets.renew_limits()?;
                        // Now and then, the holds stopped workers left in any run.
                        if beat.is_multiple_of(RECLAIM_EVERY) {
                            budgets.reclaim_everywhere()?;
                        }
                        Ok::<_, rusqlite::Error>(())
                    })
                    .await;
                    if let Ok(Err(e)) = renewed {
                        tracing::warn!(error = %e, "renewing budget holds");
                    }
                }
            });
        }
        Ok(budgets)
    }

    /// Open the root pool of `run_id` (a run starting): `limit` USD, at most `tokens`;
    /// and its task counter ([`super::run_limits`]: the root is task 1). Nothing
    /// changes when it is open already.
    pub fn open(&self, run_id: &str, limit: f64, tokens: Option<u64>) -> SqlResult<()> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO budget_pools (run_id, task_id, limit_usd, token_limit)
             VALUES (?1, 1, ?2, ?3) ON CONFLICT (run_id, task_id) DO NOTHING",
            params![run_id, limit, tokens.map(|t| t as i64)],
        )?;
        conn.execute(
            "INSERT INTO run_counters (run_id, next_task) VALUES (?1, 2)
             ON CONFLICT (run_id) DO NOTHING",
            [run_id],
        )?;
        Ok(())
    }

    /// The connection, for one statement.
    pub(super) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap()
    }

    /// The process whose holds, slots and locks these are.
    pub(super) fn holder(&self) -> &Holder {
        &self.holder
    }

    /// The numbers of owner `task_id` of `run_id`.
    pub fn row(&self, run_id: &str, task_id: u64) -> SqlResult<Option<PoolRow>> {
        row(&self.conn(), run_id, task_id)
    }

    /// What the whole run spent (every owner's spending).
    pub fn spent(&self, run_id: &str) -> SqlResult<f64> {
        self.conn().query_row(
            "SELECT COALESCE(SUM(spent_usd), 0) FROM budget_pools WHERE run_id = ?1",
            [run_id],
            |r| r.get(0),
        )
    }

    /// Carve a share of `share` USD for `child` out of `owner`'s pool, or say why not.
    pub fn carve(
        &self,
        run_id: &str,
        owner: u64,
        child: u64,
        share: f64,
    ) -> SqlResult<Result<(), PoolRow>> {
        let conn = self.conn();
        let carved: bool = conn
            .prepare_cached("SELECT agentflow_budget_carve(?1, ?2, ?3, ?4)")?
            .query_row(params![run_id, owner as i64, child as i64, share], |r| {
                r.get(0)
            })?;
        if carved {
            return Ok(Ok(()));
        }
        Ok(Err(row(&conn, run_id, owner)?.unwrap_or_default()))
    }

    /// `child` (which had a share) ended: hand its share back to `owner`, charging what
    /// it spent and what its live holds may still spend. Its pool is closed (nothing
    /// fits in it any more); closing it again changes nothing.
    pub fn close(&self, run_id: &str, owner: u64, child: u64) -> SqlResult<()> {
        self.conn
            .lock()
            .unwrap()
            .prepare_cached("SELECT agentflow_budget_close(?1, ?2, ?3)")?
            .query_row(params![run_id, owner as i64, child as i64], |_| Ok(()))
    }

    /// Reserve `usd` from `owner`'s pool and `tokens` from the run's token limit for a
    /// call of `task`: the hold's id, or why it does not fit. Holds of stopped
    /// processes are reclaimed first when it does not.
    pub fn reserve(
        &self,
        run_id: &str,
        owner: u64,
        task: u64,
        usd: f64,
        tokens: u64,
    ) -> SqlResult<Result<i64, Refusal>> {
        let first = self.reserve_once(run_id, owner, task, usd, tokens)?;
        if first.is_ok() || self.reclaim(run_id)? == 0 {
            return Ok(first);
        }
        self.reserve_once(run_id, owner, task, usd, tokens)
    }

    fn reserve_once(
        &self,
        run_id: &str,
        owner: u64,
        task: u64,
        usd: f64,
        tokens: u64,
    ) -> SqlResult<Result<i64, Refusal>> {
        let conn = self.conn();
        let hold: i64 = conn
            .prepare_cached("SELECT agentflow_budget_reserve(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?
            .query_row(
                params![
                    run_id,
                    owner as i64,
                    task as i64,
                    usd,
                    tokens as i64,
                    self.holder.host,
                    self.holder.pid as i64,
                    now_ms() + HOLD_TTL.as_millis() as i64
                ],
                |r| r.get(0),
            )?;
        Ok(match hold {
            -1 => Err(Refusal::Tokens(row(&conn, run_id, 1)?.unwrap_or_default())),
            -2 => Err(Refusal::Usd(row(&conn, run_id, owner)?.unwrap_or_default())),
            hold => Ok(hold),
        })
    }

    /// Settle hold `hold` (`usd` and `tokens` reserved on `owner`) at the real cost.
    /// A hold reclaimed meanwhile was charged whole: only a cost above it is added.
    pub fn settle(
        &self,
        run_id: &str,
        owner: u64,
        hold: i64,
        reserved: (f64, u64),
        actual: (f64, u64),
    ) -> SqlResult<()> {
        let (usd, tokens) = reserved;
        let (cost, used) = actual;
        self.conn
            .lock()
            .unwrap()
            .prepare_cached("SELECT agentflow_budget_settle(?1, ?2, ?3, ?4, ?5, ?6, ?7)")?
            .query_row(
                params![
                    run_id,
                    owner as i64,
                    hold,
                    usd,
                    tokens as i64,
                    cost,
                    used as i64
                ],
                |_| Ok(()),
            )
    }

    /// Count the holds of `run_id` not renewed in time as spent whole; how many.
    pub fn reclaim(&self, run_id: &str) -> SqlResult<usize> {
        self.reclaim_in(Some(run_id))
    }

    /// [`SharedBudgets::reclaim`] for every run; how many holds.
    pub fn reclaim_everywhere(&self) -> SqlResult<usize> {
        self.reclaim_in(None)
    }

    fn reclaim_in(&self, run_id: Option<&str>) -> SqlResult<usize> {
        let reclaimed: i64 = self
            .conn
            .lock()
            .unwrap()
            .prepare_cached("SELECT agentflow_budget_reclaim(?1, ?2)")?
            .query_row(params![run_id, now_ms()], |r| r.get(0))?;
        if reclaimed > 0 {
            tracing::warn!(run = ?run_id, holds = reclaimed, "stopped workers' budget holds count as spent");
        }
        Ok(reclaimed as usize)
    }

    /// Push the expiry of this process's holds on.
    fn renew_holds(&self) -> SqlResult<usize> {
        self.conn().execute(
            "UPDATE budget_holds SET expires_at = ?3 WHERE host = ?1 AND pid = ?2",
            params![
                self.holder.host,
                self.holder.pid,
                now_ms() + HOLD_TTL.as_millis() as i64
            ],
        )
    }
}

/// A run's shared budget, for operators: the run's own pool and how many calls
/// hold part of it now.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PoolView {
    #[serde(flatten)]
    pub root: PoolRow,
    /// Spent by every owner (the run and its children's open shares).
    pub spent_usd_total: f64,
    pub holds: i64,
    /// Holds their process stopped renewing (counted as spent when the pool next runs
    /// short, or the run ends).
    pub stale_holds: i64,
}

/// Whether `run_id` has a shared budget (never on SQLite).
pub fn has_pool(conn: &Connection, run_id: &str) -> SqlResult<bool> {
    if !conn.is_postgres() {
        return Ok(false);
    }
    Ok(row(conn, run_id, 1)?.is_some())
}

/// The shared budget of `run_id`, if it has one (never on SQLite).
pub fn view(conn: &Connection, run_id: &str) -> SqlResult<Option<PoolView>> {
    if !conn.is_postgres() {
        return Ok(None);
    }
    let Some(root) = row(conn, run_id, 1)? else {
        return Ok(None);
    };
    let (spent_usd_total, holds, stale_holds) = conn.query_row(
        "SELECT (SELECT COALESCE(SUM(spent_usd), 0) FROM budget_pools WHERE run_id = ?1),
                (SELECT COUNT(*) FROM budget_holds WHERE run_id = ?1),
                (SELECT COUNT(*) FROM budget_holds WHERE run_id = ?1 AND expires_at < ?2)",
        params![run_id, now_ms()],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    Ok(Some(PoolView {
        root,
        spent_usd_total,
        holds,
        stale_holds,
    }))
}

/// The numbers of owner `task_id` of `run_id`.
fn row(conn: &Connection, run_id: &str, task_id: u64) -> SqlResult<Option<PoolRow>> {
    conn.query_row(
        "SELECT limit_usd, spent_usd, reserved_usd, carved_usd, peak_usd, token_limit,
                tokens_used, tokens_reserved
           FROM budget_pools WHERE run_id = ?1 AND task_id = ?2",
        params![run_id, task_id as i64],
        |r| {
            Ok(PoolRow {
                limit_usd: r.get(0)?,
                spent_usd: r.get(1)?,
                reserved_usd: r.get(2)?,
                carved_usd: r.get(3)?,
                peak_usd: r.get(4)?,
                token_limit: r.get::<_, Option<i64>>(5)?.map(|t| t as u64),
                tokens_used: r.get::<_, i64>(6)? as u64,
                tokens_reserved: r.get::<_, i64>(7)? as u64,
            })
        },
    )
    .optional()
}
