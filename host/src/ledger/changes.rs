//! Telling a cluster's processes that the ledger changed (PostgreSQL `LISTEN`/`NOTIFY`),
//! so a worker claims a submitted run or an offered task, and a spawner learns its
//! offered child's end, at once rather than at its next poll. Every waiter still polls:
//! a notification only shortens the wait, so a missed one (the listening session was
//! being opened again) costs at most a poll interval. On SQLite — one process — there
//! is nothing to announce and a wait is its poll interval.

use super::{Ledger, SqlResult, Writer, db};
use std::time::Duration;

impl Ledger {
    /// Resolves at the next change another process announces on this PostgreSQL
    /// ledger, or after `most`, whichever comes first (after `most` on SQLite).
    pub async fn changed_within(&self, most: Duration) {
        let Some(url) = db::postgres_url(self.path()) else {
            return tokio::time::sleep(most).await;
        };
        let changes = db::pg_changes(url);
        tokio::select! {
            () = changes.notified() => {}
            () = tokio::time::sleep(most) => {}
        }
    }
}

impl Writer {
    /// Announce a change to the ledger's other processes when this write commits
    /// (PostgreSQL delivers a `NOTIFY` at the commit, never for a rolled-back write);
    /// nothing on SQLite.
    pub(super) fn announce_change(&self) -> SqlResult<()> {
        if self.conn.is_postgres() {
            self.conn.query_row(
                &format!("SELECT pg_notify('{}', '')", db::CHANGES_CHANNEL),
                [],
                |_| Ok(()),
            )?;
        }
        Ok(())
    }
}
