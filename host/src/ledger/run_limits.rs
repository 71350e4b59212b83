//! A cluster run's limits beside its budget (PostgreSQL ledgers only): the run's
//! task ids and duplicate keys, its execution slots (`max_concurrent_tasks`) and its
//! locks (shared resources, mutual exclusion) as rows, so tasks of one run spawning
//! and executing on several workers share them atomically.
//!
//! - `run_counters`: one row per run, the next task id. Every spawn of the run claims
//!   its id here (`agentflow_task_claim`, one statement under the row's lock), checking
//!   and recording its duplicate keys (`run_dedup`: the dedup key, the normalised
//!   description) and the run's task limit in the same statement.
//! - `run_slots`: one row per execution slot in use (task, holder process, expiry);
//!   `agentflow_slot_take` counts the live ones under the run's counter lock and
//!   adds one only below the limit.
//! - `run_locks`: one row per lock held (name, task, holder process, expiry), taken
//!   with a conditional upsert.
//!
//! Slots and locks are renewed by their process every heartbeat, with its budget
//! holds ([`super::budgets`]); those of a process that stopped expire after
//! [`super::budgets::HOLD_TTL`] and are free again (the task that held them is
//! resumed elsewhere and takes them anew). Letting go of a slot when all were in use
//! announces a change, so waiters on other workers look again at once; a lock's
//! waiters look again within a quarter second.

use super::budgets::{HOLD_TTL, SharedBudgets};
use super::{SqlResult, now_ms};
use rusqlite::{OptionalExtension, params};

/// The tables, in SQLite's dialect (translated for PostgreSQL with the rest of the
/// schema, [`super::db`]).
pub const TABLE_SQL: &str = "CREATE TABLE IF NOT EXISTS run_counters (
    run_id    TEXT    NOT NULL PRIMARY KEY,
    next_task INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS run_dedup (
    run_id     TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    task_id    INTEGER NOT NULL,
    claimed_at INTEGER NOT NULL DEFAULT 0,
    spawn_key  TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, key)
);
CREATE TABLE IF NOT EXISTS run_slots (
    id         INTEGER PRIMARY KEY,
    run_id     TEXT    NOT NULL,
    task_id    INTEGER NOT NULL,
    host       TEXT    NOT NULL,
    pid        INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS run_slots_by_run ON run_slots(run_id, expires_at);
CREATE TABLE IF NOT EXISTS run_locks (
    run_id     TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    task_id    INTEGER NOT NULL,
    host       TEXT    NOT NULL,
    pid        INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, name)
)";

/// Claiming a task id and taking a slot, each one statement. `agentflow_task_claim`
/// returns the new id, or minus the task a check key belongs to, or 0 (the run has its
/// `p_max` tasks). A key's claim stands once its task exists, or for five seconds while
/// it is being created, against other spawns: the same spawn made again (its spawner
/// resumed after dying before its task was recorded: `p_spawn` is the spawn's key,
/// recorded as the key `s:<spawn key>`) gets the id it claimed before and takes its
/// keys over, and a claim whose task never came is dead after the five seconds. A run without a counter row (its pool opened by an older host) gets
/// one from its recorded tasks and dedup keys. `agentflow_slot_take` returns the slot's
/// id, or -1 when `p_max` are in use.
pub const FUNCTIONS_SQL: &str = r#"
CREATE OR REPLACE FUNCTION agentflow_run_counter(p_run text) RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    v_next bigint;
BEGIN
    SELECT next_task INTO v_next FROM run_counters WHERE run_id = p_run FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO run_counters (run_id, next_task)
        SELECT p_run, COALESCE(MAX(task_id), 0) + 1 FROM tasks WHERE run_id = p_run
        ON CONFLICT (run_id) DO NOTHING;
        INSERT INTO run_dedup (run_id, key, task_id)
        SELECT p_run, 'k:' || dedup_key, MIN(task_id) FROM tasks
         WHERE run_id = p_run AND dedup_key IS NOT NULL GROUP BY dedup_key
        ON CONFLICT DO NOTHING;
        SELECT next_task INTO v_next FROM run_counters WHERE run_id = p_run FOR UPDATE;
    END IF;
    RETURN v_next;
END
$fn$;
CREATE OR REPLACE FUNCTION agentflow_task_claim(p_run text, p_check text, p_keys text,
    p_max bigint, p_spawn text)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    v_next bigint;
    v_now bigint;
    v_id bigint;
    dup bigint;
BEGIN
    v_next := agentflow_run_counter(p_run);
    v_now := (extract(epoch from clock_timestamp()) * 1000)::bigint;
    -- A key is taken by a task that exists, or by one being created (claimed in the
    -- last seconds), but not by a claim whose task never came (its spawner died), nor
    -- by the same spawn made again (its spawner resumed).
    SELECT d.task_id INTO dup FROM run_dedup d
     WHERE d.run_id = p_run AND d.key IN (SELECT jsonb_array_elements_text(p_check::jsonb))
       AND d.spawn_key <> p_spawn
       AND (d.claimed_at > v_now - 5000
            OR EXISTS (SELECT 1 FROM tasks t WHERE t.run_id = p_run AND t.task_id = d.task_id))
     LIMIT 1;
    IF FOUND THEN
        RETURN -dup;
    END IF;
    -- The same spawn made again gets the id it claimed before (its task never came).
    SELECT task_id INTO v_id FROM run_dedup WHERE run_id = p_run AND key = 's:' || p_spawn;
    IF NOT FOUND THEN
        IF v_next > p_max THEN
            RETURN 0;
        END IF;
        UPDATE run_counters SET next_task = v_next + 1 WHERE run_id = p_run;
        v_id := v_next;
    END IF;
    INSERT INTO run_dedup (run_id, key, task_id, claimed_at, spawn_key)
    SELECT p_run, k, v_id, v_now, p_spawn
      FROM (SELECT jsonb_array_elements_text(p_keys::jsonb) AS k
            UNION SELECT 's:' || p_spawn) AS keys
    ON CONFLICT (run_id, key) DO UPDATE
       SET task_id = excluded.task_id, claimed_at = excluded.claimed_at,
           spawn_key = excluded.spawn_key
     WHERE run_dedup.spawn_key = excluded.spawn_key
        OR (run_dedup.claimed_at <= v_now - 5000
            AND NOT EXISTS (SELECT 1 FROM tasks t
                             WHERE t.run_id = run_dedup.run_id AND t.task_id = run_dedup.task_id));
    RETURN v_id;
END
$fn$;
CREATE OR REPLACE FUNCTION agentflow_slot_take(p_run text, p_task bigint, p_max bigint,
    p_host text, p_pid bigint, p_now bigint, p_expires bigint)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    used bigint;
    slot bigint;
BEGIN
    PERFORM agentflow_run_counter(p_run);
    DELETE FROM run_slots WHERE run_id = p_run AND expires_at < p_now;
    SELECT COUNT(*) INTO used FROM run_slots WHERE run_id = p_run;
    IF used >= p_max THEN
        RETURN -1;
    END IF;
    INSERT INTO run_slots (run_id, task_id, host, pid, expires_at)
    VALUES (p_run, p_task, p_host, p_pid, p_expires) RETURNING id INTO slot;
    RETURN slot;
END
$fn$;
CREATE OR REPLACE FUNCTION agentflow_slot_release(p_slot bigint, p_max bigint)
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_run text;
    used bigint;
BEGIN
    DELETE FROM run_slots WHERE id = p_slot RETURNING run_id INTO v_run;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- All were in use: someone may be waiting for this one.
    SELECT COUNT(*) INTO used FROM run_slots WHERE run_id = v_run;
    IF used + 1 >= p_max THEN
        PERFORM pg_notify('agentflow_changes', '');
    END IF;
END
$fn$;
"#;

/// What claiming a task id found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskClaim {
    /// The new task's id.
    Id(u64),
    /// A check key belongs to this task already.
    Duplicate(u64),
    /// The run has its maximum of tasks.
    Full,
}

impl SharedBudgets {
    /// Claim the next task id of `run_id` for the spawn `spawn_key`, unless a key of
    /// `check` is another spawn's or the run has `max_tasks` tasks; `keys` are
    /// recorded as the new task's.
    pub fn claim_task(
        &self,
        run_id: &str,
        spawn_key: &str,
        check: &[String],
        keys: &[String],
        max_tasks: u64,
    ) -> SqlResult<TaskClaim> {
        let json = |keys: &[String]| serde_json::to_string(keys).unwrap_or_else(|_| "[]".into());
        let claimed: i64 = self
            .conn()
            .prepare_cached("SELECT agentflow_task_claim(?1, ?2, ?3, ?4, ?5)")?
            .query_row(
                params![run_id, json(check), json(keys), max_tasks as i64, spawn_key],
                |r| r.get(0),
            )?;
        Ok(match claimed {
            0 => TaskClaim::Full,
            n if n < 0 => TaskClaim::Duplicate(n.unsigned_abs()),
            n => TaskClaim::Id(n as u64),
        })
    }

    /// Task `task_id` of `run_id` was not created after all: its keys are free again.
    pub fn unclaim_task(&self, run_id: &str, task_id: u64) -> SqlResult<()> {
        self.conn().execute(
            "DELETE FROM run_dedup WHERE run_id = ?1 AND task_id = ?2",
            params![run_id, task_id as i64],
        )?;
        Ok(())
    }

    /// Take an execution slot of `run_id` for `task`, if fewer than `max` are in use:
    /// the slot's id.
    pub fn take_slot(&self, run_id: &str, task: u64, max: u64) -> SqlResult<Option<i64>> {
        let holder = self.holder();
        let now = now_ms();
        let slot: i64 = self
            .conn()
            .prepare_cached("SELECT agentflow_slot_take(?1, ?2, ?3, ?4, ?5, ?6, ?7)")?
            .query_row(
                params![
                    run_id,
                    task as i64,
                    max as i64,
                    holder.host,
                    holder.pid as i64,
                    now,
                    now + HOLD_TTL.as_millis() as i64
                ],
                |r| r.get(0),
            )?;
        Ok((slot >= 0).then_some(slot))
    }

    /// How many execution slots of `run_id` are in use.
    pub fn slots_in_use(&self, run_id: &str) -> SqlResult<u64> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM run_slots WHERE run_id = ?1 AND expires_at >= ?2",
            params![run_id, now_ms()],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Let go of slot `slot` of a run allowing `max` at once (the workers are told
    /// when all were in use: someone may be waiting for it).
    pub fn release_slot(&self, slot: i64, max: u64) -> SqlResult<()> {
        self.conn()
            .prepare_cached("SELECT agentflow_slot_release(?1, ?2)")?
            .query_row(params![slot, max as i64], |_| Ok(()))
    }

    /// Take lock `name` of `run_id` for `task`: `None` when taken, else the task that
    /// holds it. A row only its holder lets go of, or its expiry frees: even the same
    /// task (resumed elsewhere after its worker died) waits for its old row to expire.
    pub fn take_lock(&self, run_id: &str, name: &str, task: u64) -> SqlResult<Option<u64>> {
        let holder = self.holder();
        let now = now_ms();
        let conn = self.conn();
        let taken = conn
            .prepare_cached(
                "INSERT INTO run_locks (run_id, name, task_id, host, pid, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (run_id, name) DO UPDATE
                    SET task_id = excluded.task_id, host = excluded.host, pid = excluded.pid,
                        expires_at = excluded.expires_at
                  WHERE run_locks.expires_at < ?7
                 RETURNING task_id",
            )?
            .query_row(
                params![
                    run_id,
                    name,
                    task as i64,
                    holder.host,
                    holder.pid as i64,
                    now + HOLD_TTL.as_millis() as i64,
                    now
                ],
                |_| Ok(()),
            )
            .optional()?;
        if taken.is_some() {
            return Ok(None);
        }
        let holder: Option<i64> = conn
            .query_row(
                "SELECT task_id FROM run_locks WHERE run_id = ?1 AND name = ?2",
                params![run_id, name],
                |r| r.get(0),
            )
            .optional()?;
        // Let go of between the two statements: look again.
        Ok(Some(holder.map_or(task, |h| h as u64)))
    }

    /// Task `task` lets go of lock `name` of `run_id`. (Nobody is told: a task
    /// waiting for a lock looks again within a quarter second.)
    pub fn release_lock(&self, run_id: &str, name: &str, task: u64) -> SqlResult<()> {
        self.conn().execute(
            "DELETE FROM run_locks WHERE run_id = ?1 AND name = ?2 AND task_id = ?3",
            params![run_id, name, task as i64],
        )?;
        Ok(())
    }

    /// Push the expiry of this process's slots and locks on (with its holds).
    pub(super) fn renew_limits(&self) -> SqlResult<()> {
        let holder = self.holder();
        let expires = now_ms() + HOLD_TTL.as_millis() as i64;
        let conn = self.conn();
        for table in ["run_slots", "run_locks"] {
            conn.execute(
                &format!("UPDATE {table} SET expires_at = ?3 WHERE host = ?1 AND pid = ?2"),
                params![holder.host, holder.pid, expires],
            )?;
        }
        Ok(())
    }
}

/// A lock held, for operators.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LockView {
    pub name: String,
    pub task_id: u64,
    pub host: String,
    pub pid: u32,
}

/// What a run holds of its shared limits now, for operators (`agentflow inspect`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct LimitsView {
    /// Task ids claimed so far (the next one less one).
    pub tasks_claimed: u64,
    pub slots_in_use: u64,
    pub locks: Vec<LockView>,
}

/// The shared limits of `run_id`, if its tasks keep them in the database (never on
/// SQLite). Slots and locks of stopped processes are left out.
pub fn view(conn: &super::Connection, run_id: &str) -> SqlResult<Option<LimitsView>> {
    if !conn.is_postgres() {
        return Ok(None);
    }
    let next: Option<i64> = conn
        .query_row(
            "SELECT next_task FROM run_counters WHERE run_id = ?1",
            [run_id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(next) = next else {
        return Ok(None);
    };
    let now = now_ms();
    let slots_in_use: i64 = conn.query_row(
        "SELECT COUNT(*) FROM run_slots WHERE run_id = ?1 AND expires_at >= ?2",
        params![run_id, now],
        |r| r.get(0),
    )?;
    let mut stmt = conn.prepare_cached(
        "SELECT name, task_id, host, pid FROM run_locks
          WHERE run_id = ?1 AND expires_at >= ?2 ORDER BY name",
    )?;
    let locks = stmt
        .query_map(params![run_id, now], |r| {
            Ok(LockView {
                name: r.get(0)?,
                task_id: r.get::<_, i64>(1)? as u64,
                host: r.get(2)?,
                pid: r.get::<_, i64>(3)? as u32,
            })
        })?
        .collect::<SqlResult<Vec<_>>>()?;
    Ok(Some(LimitsView {
        tasks_claimed: (next - 1).max(0) as u64,
        slots_in_use: slots_in_use as u64,
        locks,
    }))
}

#[cfg(test)]
mod tests {
    /// The statements are split at `;` outside function bodies' quoting only: a
    /// comment holding one would cut a body in two.
    #[test]
    fn no_comment_in_the_functions_holds_a_statement_end() {
        for sql in [super::FUNCTIONS_SQL, crate::ledger::budgets::FUNCTIONS_SQL] {
            for line in sql.lines().filter(|l| l.trim_start().starts_with("--")) {
                assert!(!line.contains(';'), "{line}");
            }
        }
    }

    #[test]
    fn a_released_slot_is_announced_on_the_ledgers_channel() {
        assert!(super::FUNCTIONS_SQL.contains(&format!(
            "pg_notify('{}'",
            crate::ledger::db::CHANGES_CHANNEL
        )));
    }
}
