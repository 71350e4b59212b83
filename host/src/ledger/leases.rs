//! Which host holds each unfinished run, so a run whose host died reads as
//! `interrupted` rather than `running` forever.
//!
//! A host takes a run's lease when it starts or resumes the run (`leases`: the host's
//! name and process id) and renews it every [`HEARTBEAT`] while the run is in its
//! hands. A `running` run is **interrupted** when its lease is older than
//! [`LEASE_TTL`], or when its holder ran on this machine and that process is gone (so
//! a crash shows at once on the machine that crashed) — or **waiting** when a human
//! decision of it is pending (`run --detach` parked it). A run without a lease
//! (started by a host from before leases) reads as it is stored.

use super::query::RunRow;
use super::{Connection, LedgerError, SqlResult, Status, Writer, now_ms};
use rusqlite::{OptionalExtension, params};
use std::time::Duration;

/// How often a host renews the leases of the runs it executes.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// A lease not renewed for this long belongs to a host that stopped.
pub const LEASE_TTL: Duration = Duration::from_secs(15);

/// Who holds a lease: a host process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
}

impl Holder {
    /// This process on this machine.
    pub fn this_process() -> Holder {
        Holder {
            host: machine_name(),
            pid: std::process::id(),
        }
    }

    /// Whether this holder is known to be gone: a process of this machine that no
    /// longer exists. Unknown (another machine, no `/proc`) is not gone.
    fn is_gone(&self) -> bool {
        let proc_fs = std::path::Path::new("/proc/self");
        self.host == machine_name()
            && proc_fs.exists()
            && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

/// This machine's name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`).
fn machine_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl Writer {
    /// Take (or take over) the lease of `run_id` for `holder`, renewed now.
    pub fn take_lease(&self, run_id: &str, holder: &Holder) -> SqlResult<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO leases (run_id, host, pid, heartbeat_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (run_id) DO UPDATE SET host = ?2, pid = ?3, heartbeat_at = ?4",
            )?
            .execute(params![run_id, holder.host, holder.pid, now_ms()])?;
        Ok(())
    }

    /// Let go of the lease `holder` holds on `run_id` (every lease it holds with
    /// `None`): the runs are free to be claimed at once instead of when the lease
    /// would go stale. Only for runs the holder no longer executes.
    pub fn release_leases(&self, run_id: Option<&str>, holder: &Holder) -> SqlResult<usize> {
        let released = self
            .conn
            .prepare_cached(
                "DELETE FROM leases WHERE host = ?2 AND pid = ?3
                   AND (CAST(?1 AS TEXT) IS NULL OR run_id = ?1)",
            )?
            .execute(params![run_id, holder.host, holder.pid])?;
        self.announce_change()?;
        Ok(released)
    }

    /// Renew the leases `holder` holds on `run_ids`.
    pub fn renew_leases(&self, run_ids: &[String], holder: &Holder) -> SqlResult<()> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE leases SET heartbeat_at = ?2 WHERE run_id = ?1 AND host = ?3 AND pid = ?4",
        )?;
        let now = now_ms();
        for id in run_ids {
            stmt.execute(params![id, now, holder.host, holder.pid])?;
        }
        Ok(())
    }
}

/// A run's lease as stored.
#[derive(Clone, Debug)]
pub struct Lease {
    pub holder: Holder,
    pub heartbeat_at: i64,
}

impl Lease {
    /// Whether the run's host stopped: the lease expired, or its process is gone.
    pub fn is_stale(&self, now: i64) -> bool {
        now - self.heartbeat_at > LEASE_TTL.as_millis() as i64 || self.holder.is_gone()
    }
}

/// The lease of `run_id`, if it has one.
pub fn lease(conn: &Connection, run_id: &str) -> Result<Option<Lease>, LedgerError> {
    let mut stmt =
        conn.prepare_cached("SELECT host, pid, heartbeat_at FROM leases WHERE run_id = ?1")?;
    Ok(stmt
        .query_row([run_id], |r| {
            Ok(Lease {
                holder: Holder {
                    host: r.get(0)?,
                    pid: r.get(1)?,
                },
                heartbeat_at: r.get(2)?,
            })
        })
        .optional()?)
}

/// The lease of `run_id` while its host is alive (not stale): that host executes
/// the run now.
pub fn live(conn: &Connection, run_id: &str) -> Result<Option<Lease>, LedgerError> {
    Ok(lease(conn, run_id)?.filter(|l| !l.is_stale(now_ms())))
}

/// Show each `running` run of `rows` whose host stopped as [`Status::Waiting`] when
/// a human decision of it is pending (a run parked by `run --detach`, or whose host
/// died while it waited), else as [`Status::Interrupted`].
pub fn mark_interrupted(conn: &Connection, rows: &mut [RunRow]) -> Result<(), LedgerError> {
    let now = now_ms();
    for row in rows.iter_mut().filter(|r| r.status == Status::Running) {
        if lease(conn, &row.run_id)?.is_some_and(|l| l.is_stale(now)) {
            row.status = if waits_for_a_human(conn, &row.run_id)? {
                Status::Waiting
            } else {
                Status::Interrupted
            };
        }
    }
    Ok(())
}

/// Whether run `run_id` has a pending approval, review or merge conflict.
fn waits_for_a_human(conn: &Connection, run_id: &str) -> Result<bool, LedgerError> {
    let mut stmt = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM approvals WHERE run_id = ?1 AND status = 'pending')
             OR EXISTS (SELECT 1 FROM reviews WHERE run_id = ?1 AND status = 'pending')
             OR EXISTS (SELECT 1 FROM merges WHERE run_id = ?1 AND status = 'pending')",
    )?;
    Ok(stmt.query_row([run_id], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_stale_when_old_or_when_its_process_is_gone() {
        let now = now_ms();
        let live = Lease {
            holder: Holder::this_process(),
            heartbeat_at: now,
        };
        assert!(!live.is_stale(now));
        let old = Lease {
            heartbeat_at: now - LEASE_TTL.as_millis() as i64 - 1,
            ..live.clone()
        };
        assert!(old.is_stale(now));
        // A pid far above any pid_max: no such process on this machine.
        let gone = Lease {
            holder: Holder {
                pid: u32::MAX - 7,
                ..Holder::this_process()
            },
            heartbeat_at: now,
        };
        assert_eq!(
            gone.is_stale(now),
            std::path::Path::new("/proc/self").exists()
        );
        let elsewhere = Lease {
            holder: Holder {
                host: "another-machine".into(),
                pid: u32::MAX - 7,
            },
            heartbeat_at: now,
        };
        assert!(
            !elsewhere.is_stale(now),
            "another machine's process: by its heartbeat"
        );
    }
}
