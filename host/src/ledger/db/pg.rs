//! A PostgreSQL connection with the ledger's synchronous call shape.
//!
//! `tokio-postgres` is async: its connection task runs on a small runtime of its own
//! (one thread shared by every PostgreSQL connection of the process), and the ledger's
//! synchronous callers — the writer thread, the CLI, capabilities reading on a tokio
//! worker — wait on the client's futures with `futures_executor::block_on`, which
//! does not nest runtimes. Statements are translated from the ledger's SQLite dialect
//! once ([`super::pg_sql`]) and prepared once per connection.
//!
//! Inside a transaction PostgreSQL aborts the whole transaction on any failed
//! statement, where SQLite fails only the statement; the ledger's writer relies on
//! the latter (a duplicate sequence number is retried with the next one), so an
//! `INSERT` inside a transaction runs under a savepoint of its own.
//!
//! A session the server dropped (a restart, a failover, an operator's
//! `pg_terminate_backend`) is opened again at the next statement, so a long-lived
//! worker outlives it. Not inside a transaction: its statements fail until the
//! caller ends it — a `COMMIT` reports the loss, a `ROLLBACK` succeeds — so nothing
//! of a lost transaction is ever half-written on the new session.

use super::pg_sql;
use super::pg_value::{self, Param, PgRows};
use rusqlite::ToSql;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::LazyLock;

/// Whether `db` names a PostgreSQL database rather than a SQLite file.
fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// The PostgreSQL URL `--db` gave, if it gave one rather than a SQLite file's path.
pub fn postgres_url(db: &std::path::Path) -> Option<&str> {
    db.to_str().filter(|s| is_postgres_url(s))
}

/// The runtime that drives every PostgreSQL connection's socket.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("agentflow-postgres")
        .enable_all()
        .build()
        .expect("start the PostgreSQL runtime")
});

/// The listener of each database this process waits on ([`changes`]).
static LISTENERS: LazyLock<std::sync::Mutex<HashMap<String, std::sync::Arc<tokio::sync::Notify>>>> =
    LazyLock::new(Default::default);

/// The channel a ledger's processes announce changes on ([`changes`]).
pub const CHANGES_CHANNEL: &str = "agentflow_changes";

/// Notified at each change announced on `url`'s [`CHANGES_CHANNEL`] (a run submitted,
/// a task offered or ended, a lease or claim let go). The first call for a database
/// starts its listener: one session of its own, `LISTEN`ing, opened again a second
/// after the server drops it. A missed notification only costs a waiter its poll
/// interval (they all poll too).
pub fn changes(url: &str) -> std::sync::Arc<tokio::sync::Notify> {
    let mut listeners = LISTENERS.lock().unwrap();
    if let Some(notify) = listeners.get(url) {
        return notify.clone();
    }
    let notify = std::sync::Arc::new(tokio::sync::Notify::new());
    listeners.insert(url.to_owned(), notify.clone());
    let (url, wake) = (url.to_owned(), notify.clone());
    RUNTIME.spawn(async move {
        loop {
            if let Err(e) = listen(&url, &wake).await {
                if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME) {
                    // The database is gone (dropped): nothing left to listen to.
                    LISTENERS.lock().unwrap().remove(&url);
                    return;
                }
                tracing::debug!(error = %e, "PostgreSQL listener: reconnecting");
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
    notify
}

/// One listening session: wakes `wake`'s waiters at each notification until the
/// session ends.
async fn listen(
    url: &str,
    wake: &std::sync::Arc<tokio::sync::Notify>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let relay = wake.clone();
    // The session's messages: notifications wake the waiters; it ends with them.
    let session = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => relay.notify_waiters(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}"))
        .await?;
    // Whatever changed while no session listened.
    wake.notify_waiters();
    let ended = session.await;
    drop(client);
    ended.unwrap_or(Ok(()))
}

/// Most statements one connection keeps prepared (the batch inserts' SQL varies
/// with their row count; everything else is a fixed set).
const MAX_PREPARED: usize = 256;

/// One PostgreSQL session (opened again when the server drops it).
pub struct PgConnection {
    url: String,
    client: RefCell<tokio_postgres::Client>,
    prepared: RefCell<HashMap<String, tokio_postgres::Statement>>,
    /// Set between `BEGIN` and `COMMIT`/`ROLLBACK`, however they were sent.
    in_transaction: Cell<bool>,
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..scheme + 3], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Wait for `fut` on the calling thread.
fn wait<T>(fut: impl std::future::Future<Output = T>) -> T {
    futures_executor::block_on(fut)
}

/// The error of a statement sent inside a transaction the server dropped.
fn lost_transaction() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
        Some("PostgreSQL: the connection was lost inside a transaction; it was rolled back".into()),
    )
}

/// Whether `statement` ends a transaction.
fn ends_transaction(statement: &str) -> bool {
    let word = statement.trim().to_ascii_uppercase();
    word == "COMMIT" || word == "END" || word == "ROLLBACK"
}

impl PgConnection {
    /// Connect to `url` (`postgres://user:password@host:port/db`).
    pub fn connect(url: &str) -> Result<PgConnection, tokio_postgres::Error> {
        Ok(PgConnection {
            client: RefCell::new(Self::open(url)?),
            url: url.to_owned(),
            prepared: RefCell::default(),
            in_transaction: Cell::new(false),
        })
    }

    /// A new session to `url`, its socket driven by [`RUNTIME`].
    fn open(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let owned = url.to_owned();
        wait(RUNTIME.spawn(async move {
            let (client, connection) =
                tokio_postgres::connect(&owned, tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "PostgreSQL connection closed");
                }
            });
            Ok::<_, tokio_postgres::Error>(client)
        }))
        .expect("the PostgreSQL runtime runs")
    }

    /// The session, opened again first if the server dropped it (outside a
    /// transaction; inside one, the statement fails — see the module's doc).
    fn client(&self) -> rusqlite::Result<std::cell::Ref<'_, tokio_postgres::Client>> {
        if self.client.borrow().is_closed() {
            if self.in_transaction.get() {
                return Err(lost_transaction());
            }
            let fresh = Self::open(&self.url).map_err(|e| pg_value::sql_error(e, "connect"))?;
            tracing::warn!(db = %redact(&self.url), "the PostgreSQL session was lost: reconnected");
            *self.client.borrow_mut() = fresh;
            self.prepared.borrow_mut().clear();
        }
        Ok(self.client.borrow())
    }

    /// The prepared form of `sql` (translated and prepared on first use).
    fn statement(&self, sql: &str) -> rusqlite::Result<tokio_postgres::Statement> {
        // The session first: opening it anew forgets the statements of the old one.
        let client = self.client()?;
        if let Some(s) = self.prepared.borrow().get(sql) {
            return Ok(s.clone());
        }
        let translated = pg_sql::translate(sql);
        let stmt =
            wait(client.prepare(&translated)).map_err(|e| pg_value::sql_error(e, &translated))?;
        let mut prepared = self.prepared.borrow_mut();
        if prepared.len() >= MAX_PREPARED {
            prepared.clear();
        }
        prepared.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }

    /// Run one statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, params: &[&dyn ToSql]) -> rusqlite::Result<usize> {
        let stmt = self.statement(sql)?;
        let values = pg_value::params(&stmt, params)?;
        let refs = Param::refs(&values);
        let guarded = self.in_transaction.get() && pg_sql::is_insert(sql);
        if guarded {
            self.simple("SAVEPOINT agentflow_statement")?;
        }
        match wait(self.client()?.execute(&stmt, &refs)) {
            Ok(n) => {
                self.note_transaction(sql);
                if guarded {
                    self.simple("RELEASE SAVEPOINT agentflow_statement")?;
                }
                Ok(n as usize)
            }
            Err(e) => {
                if guarded {
                    self.simple("ROLLBACK TO SAVEPOINT agentflow_statement")?;
                    self.simple("RELEASE SAVEPOINT agentflow_statement")?;
                }
                Err(pg_value::sql_error(e, sql))
            }
        }
    }

    /// Run a query; its rows decoded.
    pub fn query(&self, sql: &str, params: &[&dyn ToSql]) -> rusqlite::Result<PgRows> {
        let stmt = self.statement(sql)?;
        let values = pg_value::params(&stmt, params)?;
        let refs = Param::refs(&values);
        let rows =
            wait(self.client()?.query(&stmt, &refs)).map_err(|e| pg_value::sql_error(e, sql))?;
        PgRows::decode(&stmt, rows)
    }

    /// Run parameterless statements (`BEGIN`, DDL, `SAVEPOINT`…) in the ledger's dialect.
    pub fn execute_batch(&self, sql: &str) -> rusqlite::Result<()> {
        let translated = pg_sql::translate_batch(sql);
        if translated.trim().is_empty() {
            return Ok(());
        }
        if self.in_transaction.get() && self.client.borrow().is_closed() {
            // The transaction went with the session: ending it is all that is left.
            if translated.split(';').any(ends_transaction) {
                self.in_transaction.set(false);
            }
            if translated.trim().eq_ignore_ascii_case("ROLLBACK") {
                return Ok(());
            }
            return Err(lost_transaction());
        }
        self.simple(&translated)?;
        for statement in translated.split(';') {
            self.note_transaction(statement);
        }
        Ok(())
    }

    /// Follow `BEGIN` and `COMMIT`/`ROLLBACK`, however they were sent.
    fn note_transaction(&self, statement: &str) {
        let word = statement.trim().to_ascii_uppercase();
        if word.starts_with("BEGIN") || word.starts_with("START TRANSACTION") {
            self.in_transaction.set(true);
        } else if ends_transaction(&word) {
            self.in_transaction.set(false);
        }
    }

    fn simple(&self, sql: &str) -> rusqlite::Result<()> {
        wait(self.client()?.batch_execute(sql)).map_err(|e| pg_value::sql_error(e, sql))
    }

    /// The value the session's last identity/sequence default produced (`lastval()`).
    pub fn last_insert_id(&self) -> i64 {
        let client = match self.client() {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "lastval() after an insert");
                return 0;
            }
        };
        match wait(client.query_one("SELECT lastval()", &[])) {
            Ok(row) => row.get::<_, i64>(0),
            Err(e) => {
                tracing::error!(error = %e, "lastval() after an insert");
                0
            }
        }
    }
}
