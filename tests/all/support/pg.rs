//! PostgreSQL databases for the tests (issue 14): a database of its own per test on
//! the server `.ci/postgres start` runs, whose URL comes in `AGENTFLOW_TEST_POSTGRES`.
//! With `AGENTFLOW_TEST_LEDGER=postgres` every test's ledger is such a database
//! ([`crate::support::TempDir::ledger`]): the whole suite runs against PostgreSQL.

use agentflow::ledger::Connection;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether this test run puts every ledger on PostgreSQL (`AGENTFLOW_TEST_LEDGER=postgres`).
pub fn ledgers_on_postgres() -> bool {
    match std::env::var("AGENTFLOW_TEST_LEDGER").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("AGENTFLOW_TEST_LEDGER={other}: expected sqlite or postgres"),
    }
}

/// A database of its own on the test server, dropped with this value.
pub struct PgDb {
    admin: String,
    name: String,
    pub url: String,
}

impl PgDb {
    /// A fresh database, or `None` when no test server is configured.
    pub fn new(label: &str) -> Option<PgDb> {
        let Ok(admin) = std::env::var("AGENTFLOW_TEST_POSTGRES") else {
            assert!(
                std::env::var("AGENTFLOW_REQUIRE_POSTGRES").is_err(),
                "AGENTFLOW_REQUIRE_POSTGRES is set but AGENTFLOW_TEST_POSTGRES is not"
            );
            eprintln!(
                "note: AGENTFLOW_TEST_POSTGRES is not set: PostgreSQL test `{label}` not run"
            );
            return None;
        };
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(32)
            .collect();
        let name = format!(
            "af_{label}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let conn = Connection::connect_postgres(&admin).expect("connect to the test server");
        conn.execute_batch(&format!("DROP DATABASE IF EXISTS {name}"))
            .unwrap();
        conn.execute_batch(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let base = admin.rsplit_once('/').expect("a URL with a database").0;
        let url = format!("{base}/{name}");
        Some(PgDb { admin, name, url })
    }

    /// `--db` for this database.
    pub fn db(&self) -> PathBuf {
        PathBuf::from(&self.url)
    }

    /// A connection to this database.
    pub fn conn(&self) -> Connection {
        Connection::connect_postgres(&self.url).unwrap()
    }

    /// The first column of the only row of `query`.
    pub fn one<T: rusqlite::types::FromSql>(&self, query: &str) -> T {
        self.conn().query_row(query, [], |r| r.get(0)).unwrap()
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Ok(conn) = Connection::connect_postgres(&self.admin) {
            let _ = conn.execute_batch(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}
