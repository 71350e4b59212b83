//! The ledger's schema on PostgreSQL, and its version.
//!
//! The tables are [`crate::ledger::schema`]'s, translated ([`super::pg_sql::translate_ddl`]),
//! so both backends keep one definition; foreign keys are checked at commit (SQLite
//! checks them per statement, but its write jobs insert in an order PostgreSQL need
//! not follow). The version lives in `agentflow_schema` (PostgreSQL has no
//! `user_version`); hosts and workers starting at once serialize on an advisory lock.
//! The `agent_traces` view (migrations 3 and 4) is SQLite's; PostgreSQL gets its own
//! ([`super::pg_traces`]). Beside the tables come stand-ins for the SQLite functions
//! the ledger's reading queries call (`json_extract`, `json_each`).

use super::PgConnection;
use super::pg_sql::translate_ddl;
use crate::ledger::LedgerError;
use crate::ledger::schema::{MIGRATIONS, SCHEMA, SCHEMA_VERSION};

/// Key of the advisory lock schema changes take (any constant the ledger owns).
const SCHEMA_LOCK: i64 = 0x6167_656e_7466_6c6f; // "agentflo"

/// The tables only a cluster uses (SQLite ledgers have none): created with the schema,
/// and — being new in a release that kept the schema's version — checked for at every
/// start (each creates only what is missing).
const CLUSTER_TABLES: [&str; 5] = [
    crate::ledger::submissions::TABLE_SQL,
    crate::ledger::budgets::TABLE_SQL,
    crate::ledger::run_limits::TABLE_SQL,
    crate::ledger::quotas::TABLE_SQL,
    crate::ledger::offers::TABLE_SQL,
];

/// Columns a cluster table gained after it first shipped — (table, column, type) —
/// added at start where missing (a table that is there already keeps its columns
/// under `CREATE TABLE IF NOT EXISTS`).
const CLUSTER_COLUMNS: [(&str, &str, &str); 2] = [
    ("submissions", "start_failures", "BIGINT NOT NULL DEFAULT 0"),
    ("task_offers", "failures", "BIGINT NOT NULL DEFAULT 0"),
];

/// Add the [`CLUSTER_COLUMNS`] missing from this database's tables.
fn add_missing_columns(conn: &PgConnection) -> Result<(), LedgerError> {
    for (table, column, kind) in CLUSTER_COLUMNS {
        let rows = conn.query(
            &format!(
                "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = '{table}' AND column_name = '{column}'"
            ),
            &[],
        )?;
        let present: i64 = rows.first_row(|r| r.get(0))?;
        if present == 0 {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
        }
    }
    Ok(())
}

/// Migrations whose SQL is SQLite's alone (the `agent_traces` view, which
/// [`super::pg_traces`] defines for PostgreSQL).
const SQLITE_ONLY_MIGRATIONS: &[i64] = &[3, 4];

/// SQLite functions the ledger's queries call, for PostgreSQL: `json_extract(doc,
/// '$.a.b[0]')` as text (numbers convert back on reading), `json_each(doc[, path])`
/// with its `value` column, and `json_valid(doc)`.
const FUNCTIONS: &str = r#"
CREATE OR REPLACE FUNCTION json_extract(doc text, path text) RETURNS text
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT CASE WHEN path = '$' THEN doc
           ELSE (doc::jsonb) #>> regexp_split_to_array(
                    replace(regexp_replace(substr(path, 3), '\[(\d+)\]', '.\1', 'g'), '"', ''), '\.')
           END
$fn$;
CREATE OR REPLACE FUNCTION json_each(doc text, path text DEFAULT '$') RETURNS TABLE(value text)
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT jsonb_array_elements_text(COALESCE(json_extract(doc, path), '[]')::jsonb)
$fn$;
CREATE OR REPLACE FUNCTION json_valid(doc text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    PERFORM doc::jsonb;
    RETURN doc IS NOT NULL;
EXCEPTION WHEN others THEN
    RETURN false;
END
$fn$;
"#;

/// Bring the PostgreSQL database to [`SCHEMA_VERSION`]: create the schema in an empty
/// database, run the pending migrations of an older one (the same steps as SQLite's,
/// translated), refuse one a newer agentflow wrote.
pub fn prepare(conn: &PgConnection, url: &str) -> Result<(), LedgerError> {
    conn.execute_batch("BEGIN")?;
    match create_or_check(conn, url) {
        Ok(()) => Ok(conn.execute_batch("COMMIT")?),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn create_or_check(conn: &PgConnection, url: &str) -> Result<(), LedgerError> {
    conn.query(&format!("SELECT pg_advisory_xact_lock({SCHEMA_LOCK})"), &[])?;
    create_or_check_tables(conn, url)?;
    // The shared budgets' statements, new in a release that kept the schema's version:
    // replaced at every start (under the lock above), after their tables.
    conn.execute_batch(crate::ledger::budgets::FUNCTIONS_SQL)?;
    Ok(conn.execute_batch(crate::ledger::run_limits::FUNCTIONS_SQL)?)
}

fn create_or_check_tables(conn: &PgConnection, url: &str) -> Result<(), LedgerError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS agentflow_schema (version BIGINT NOT NULL)")?;
    let rows = conn.query("SELECT MAX(version) FROM agentflow_schema", &[])?;
    let found: Option<i64> = rows.first_row(|r| r.get(0))?;
    match found {
        Some(v) if v > SCHEMA_VERSION => Err(LedgerError::NewerSchema {
            path: super::pg::redact(url).into(),
            found: v,
            known: SCHEMA_VERSION,
        }),
        Some(v) if v == SCHEMA_VERSION => {
            for table in CLUSTER_TABLES {
                conn.execute_batch(&translate_ddl(table))?;
            }
            add_missing_columns(conn)
        }
        Some(v) => {
            tracing::info!(
                from = v,
                to = SCHEMA_VERSION,
                "migrating the PostgreSQL ledger"
            );
            conn.execute_batch(&migration_sql(v))?;
            conn.execute(
                "INSERT INTO agentflow_schema (version) VALUES (?1)",
                &[&SCHEMA_VERSION as &dyn rusqlite::ToSql],
            )?;
            Ok(())
        }
        None => {
            conn.execute_batch(&schema_sql())?;
            conn.execute(
                "INSERT INTO agentflow_schema (version) VALUES (?1)",
                &[&SCHEMA_VERSION as &dyn rusqlite::ToSql],
            )?;
            Ok(())
        }
    }
}

/// The whole schema at [`SCHEMA_VERSION`] in PostgreSQL's dialect: the SQLite schema,
/// its migrations and the cluster's tables, one statement at a time.
pub fn schema_sql() -> String {
    let migrations = migrations_after(0);
    dialect(
        std::iter::once(SCHEMA.to_owned())
            .chain(migrations)
            .collect(),
    )
}

/// What brings a database at schema `from` to [`SCHEMA_VERSION`]: the migrations
/// after it, then the cluster's tables, the functions and the view (each statement
/// creates only what is missing, or replaces a function or view).
pub fn migration_sql(from: i64) -> String {
    dialect(migrations_after(from).collect())
}

/// The SQL (SQLite's dialect) of the migrations after schema `from` that PostgreSQL
/// runs.
fn migrations_after(from: i64) -> impl Iterator<Item = String> {
    MIGRATIONS
        .iter()
        .filter(move |m| m.to > from && !SQLITE_ONLY_MIGRATIONS.contains(&m.to))
        .map(|m| (m.sql)())
}

/// `sources` (SQLite's dialect) and the cluster's tables in PostgreSQL's, after the
/// function stand-ins and followed by the `agent_traces` view.
fn dialect(mut sources: Vec<String>) -> String {
    sources.extend(CLUSTER_TABLES.map(str::to_owned));
    // Comments go first: one of them holds a `;`.
    let mut statements: Vec<String> = sources
        .iter()
        .flat_map(|source| {
            let uncommented: String = source
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .map(|l| format!("{l}\n"))
                .collect();
            uncommented
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    // `blobs` first: PostgreSQL resolves a `REFERENCES` when the table is created.
    statements.sort_by_key(|s| !s.contains("CREATE TABLE blobs"));
    let mut sql = String::from(FUNCTIONS);
    for statement in statements {
        let statement = translate_ddl(&statement)
            .replace("CREATE VIEW IF NOT EXISTS", "CREATE OR REPLACE VIEW")
            .replace("CREATE VIEW", "CREATE OR REPLACE VIEW")
            .replace("CREATE TABLE IF NOT EXISTS", "CREATE TABLE")
            .replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS")
            .replace("CREATE INDEX IF NOT EXISTS", "CREATE INDEX")
            .replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS");
        sql.push_str(&deferred_references(&statement));
        sql.push_str(";\n");
    }
    sql.push_str(&super::pg_traces::view_sql());
    sql.push_str(";\n");
    sql
}

/// Every `REFERENCES t(c)` checked at commit.
fn deferred_references(statement: &str) -> String {
    let mut out = String::new();
    let mut rest = statement;
    while let Some(at) = rest.find("REFERENCES ") {
        let Some(close) = rest[at..].find(')') else {
            break;
        };
        let end = at + close + 1;
        out.push_str(&rest[..end]);
        out.push_str(" DEFERRABLE INITIALLY DEFERRED");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_translates_with_blobs_first_and_deferred_references() {
        let sql = schema_sql();
        let blobs = sql.find("CREATE TABLE IF NOT EXISTS blobs").unwrap();
        let tasks = sql.find("CREATE TABLE IF NOT EXISTS tasks").unwrap();
        assert!(blobs < tasks, "{sql}");
        assert!(sql.contains("REFERENCES runs(run_id) DEFERRABLE INITIALLY DEFERRED"));
        assert!(sql.contains("CREATE TABLE IF NOT EXISTS submissions"));
        assert!(sql.contains("CREATE TABLE IF NOT EXISTS quota_use"));
        assert!(!sql.contains(" BLOB"), "{sql}");
        assert!(sql.contains("CREATE TABLE IF NOT EXISTS installed_tools"));
        assert!(sql.contains("CREATE OR REPLACE VIEW agent_traces"));
    }

    #[test]
    fn a_migration_runs_only_the_steps_after_its_version() {
        let sql = migration_sql(4);
        assert!(
            sql.contains("CREATE TABLE IF NOT EXISTS installed_tools"),
            "{sql}"
        );
        assert!(!sql.contains("CREATE TABLE IF NOT EXISTS leases"), "{sql}");
        assert!(!sql.contains("CREATE TABLE IF NOT EXISTS runs"), "{sql}");
        assert!(sql.contains("CREATE TABLE IF NOT EXISTS submissions"));
        assert!(migration_sql(1).contains("CREATE TABLE IF NOT EXISTS leases"));
    }
}
