//! The ledger's database connection, over either backend: SQLite (the embedded
//! default, a file) or PostgreSQL (`--db postgres://…`, issue 14, [`pg`]).
//!
//! [`Connection`], [`Statement`] and [`Row`] have the shape of the rusqlite calls the
//! ledger makes (`execute`, `query_row`, `prepare_cached`, `query_map`, `row.get`), so
//! every statement function of the ledger is written once. On SQLite each call goes
//! straight to rusqlite; on PostgreSQL the statement is translated once ([`pg_sql`]),
//! prepared and cached, its parameters encoded for the types PostgreSQL inferred and
//! its rows decoded into SQLite's dynamic values ([`pg_value`]), so the same
//! `FromSql`/`ToSql` conversions serve both. Errors stay `rusqlite::Error` (a
//! PostgreSQL unique violation is a SQLite constraint violation), so callers handle
//! one error type.

mod pg;
mod pg_schema;
mod pg_sql;
mod pg_traces;
mod pg_value;

pub use pg::{CHANGES_CHANNEL, PgConnection, changes as pg_changes, postgres_url, redact};
pub use pg_schema::prepare as prepare_postgres;
use rusqlite::ToSql;
use rusqlite::types::{FromSql, Value, ValueRef};

/// The result of a ledger statement.
type SqlResult<T> = rusqlite::Result<T>;

/// A connection to the ledger's database.
pub enum Connection {
    Sqlite(rusqlite::Connection),
    Postgres(PgConnection),
}

impl Connection {
    /// Connect to the PostgreSQL database at `url`.
    pub fn connect_postgres(url: &str) -> SqlResult<Connection> {
        PgConnection::connect(url)
            .map(Connection::Postgres)
            .map_err(|e| pg_value::sql_error(e, "connect"))
    }

    /// Open (or create) the SQLite file at `path`.
    pub fn open(path: impl AsRef<std::path::Path>) -> SqlResult<Connection> {
        rusqlite::Connection::open(path).map(Connection::Sqlite)
    }

    /// Open the SQLite file at `path` with `flags`.
    pub fn open_with_flags(
        path: impl AsRef<std::path::Path>,
        flags: rusqlite::OpenFlags,
    ) -> SqlResult<Connection> {
        rusqlite::Connection::open_with_flags(path, flags).map(Connection::Sqlite)
    }

    /// A private in-memory SQLite database (tests).
    pub fn open_in_memory() -> SqlResult<Connection> {
        rusqlite::Connection::open_in_memory().map(Connection::Sqlite)
    }

    /// Whether this is a PostgreSQL connection.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Connection::Postgres(_))
    }

    /// Run one statement; the number of rows it changed.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> SqlResult<usize> {
        match self {
            Connection::Sqlite(c) => params.with(|p| c.execute(sql, p)),
            Connection::Postgres(c) => params.with(|p| c.execute(sql, p)),
        }
    }

    /// Run statements separated by `;`, without parameters.
    pub fn execute_batch(&self, sql: &str) -> SqlResult<()> {
        match self {
            Connection::Sqlite(c) => c.execute_batch(sql),
            Connection::Postgres(c) => c.execute_batch(sql),
        }
    }

    /// The first row of a query, through `f`; `QueryReturnedNoRows` when there is none.
    pub fn query_row<T, P, F>(&self, sql: &str, params: P, f: F) -> SqlResult<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> SqlResult<T>,
    {
        match self {
            Connection::Sqlite(c) => params.with(|p| c.query_row(sql, p, |r| f(&Row::Sqlite(r)))),
            Connection::Postgres(c) => {
                let rows = params.with(|p| c.query(sql, p))?;
                rows.first_row(f)
            }
        }
    }

    /// Prepare a statement.
    pub fn prepare(&self, sql: &str) -> SqlResult<Statement<'_>> {
        match self {
            Connection::Sqlite(c) => c.prepare(sql).map(Statement::Sqlite),
            Connection::Postgres(c) => Ok(Statement::Postgres(c, sql.to_owned())),
        }
    }

    /// Prepare a statement through the connection's statement cache.
    pub fn prepare_cached(&self, sql: &str) -> SqlResult<Statement<'_>> {
        match self {
            Connection::Sqlite(c) => c.prepare_cached(sql).map(Statement::SqliteCached),
            Connection::Postgres(c) => Ok(Statement::Postgres(c, sql.to_owned())),
        }
    }

    /// The id of the row the last `INSERT` on this connection created.
    pub fn last_insert_rowid(&self) -> i64 {
        match self {
            Connection::Sqlite(c) => c.last_insert_rowid(),
            Connection::Postgres(c) => c.last_insert_id(),
        }
    }

    /// How long a statement waits for a lock another connection holds (SQLite; a
    /// PostgreSQL statement waits for row locks by itself).
    pub fn busy_timeout(&self, wait: std::time::Duration) -> SqlResult<()> {
        match self {
            Connection::Sqlite(c) => c.busy_timeout(wait),
            Connection::Postgres(_) => Ok(()),
        }
    }

    /// How many prepared statements the SQLite cache keeps.
    pub fn set_prepared_statement_cache_capacity(&self, capacity: usize) {
        if let Connection::Sqlite(c) = self {
            c.set_prepared_statement_cache_capacity(capacity)
        }
    }
}

/// The writer's connection to the ledger at `path`: a PostgreSQL URL, or a SQLite file
/// (created when missing) with the ledger's pragmas.
pub(super) fn open_for_writing(
    path: &std::path::Path,
) -> Result<Connection, crate::ledger::LedgerError> {
    use crate::ledger::LedgerError;
    if let Some(url) = postgres_url(path) {
        return open_postgres(url);
    }
    let conn = Connection::open(path).map_err(|source| LedgerError::Open {
        path: path.to_owned(),
        source,
    })?;
    conn.execute_batch(crate::ledger::schema::PRAGMAS)?;
    Ok(conn)
}

/// A connection to the PostgreSQL ledger at `url`; failing, an error naming the URL
/// without its password.
pub fn open_postgres(url: &str) -> Result<Connection, crate::ledger::LedgerError> {
    Connection::connect_postgres(url).map_err(|source| crate::ledger::LedgerError::Open {
        path: redact(url).into(),
        source,
    })
}

/// A prepared statement.
pub enum Statement<'c> {
    Sqlite(rusqlite::Statement<'c>),
    SqliteCached(rusqlite::CachedStatement<'c>),
    /// PostgreSQL prepares (and caches) the statement on first use, by its SQL.
    Postgres(&'c PgConnection, String),
}

impl<'c> Statement<'c> {
    fn sqlite(&mut self) -> Option<&mut rusqlite::Statement<'c>> {
        match self {
            Statement::Sqlite(s) => Some(s),
            Statement::SqliteCached(s) => Some(s),
            Statement::Postgres(..) => None,
        }
    }

    /// Run the statement; the number of rows it changed.
    pub fn execute<P: Params>(&mut self, params: P) -> SqlResult<usize> {
        if let Statement::Postgres(c, sql) = self {
            return params.with(|p| c.execute(sql, p));
        }
        let s = self.sqlite().expect("a SQLite statement");
        params.with(|p| s.execute(p))
    }

    /// Whether the query returns at least one row.
    pub fn exists<P: Params>(&mut self, params: P) -> SqlResult<bool> {
        if let Statement::Postgres(c, sql) = self {
            return Ok(!params.with(|p| c.query(sql, p))?.rows.is_empty());
        }
        let s = self.sqlite().expect("a SQLite statement");
        params.with(|p| s.exists(p))
    }

    /// The first row through `f`; `QueryReturnedNoRows` when there is none.
    pub fn query_row<T, P, F>(&mut self, params: P, f: F) -> SqlResult<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> SqlResult<T>,
    {
        if let Statement::Postgres(c, sql) = self {
            return params.with(|p| c.query(sql, p))?.first_row(f);
        }
        let s = self.sqlite().expect("a SQLite statement");
        params.with(|p| s.query_row(p, |r| f(&Row::Sqlite(r))))
    }

    /// Every row through `f`.
    pub fn query_map<T, P, F>(&mut self, params: P, mut f: F) -> SqlResult<MappedRows<T>>
    where
        P: Params,
        F: FnMut(&Row<'_>) -> SqlResult<T>,
    {
        // Collected at once on both backends: every caller reads all the rows.
        if let Statement::Postgres(c, sql) = self {
            let rows = params.with(|p| c.query(sql, p))?;
            let mapped = (0..rows.rows.len())
                .map(|i| f(&rows.row(i)))
                .collect::<Vec<_>>();
            return Ok(MappedRows(mapped.into_iter()));
        }
        let s = self.sqlite().expect("a SQLite statement");
        let mapped = params.with(|p| {
            s.query_map(p, |r| Ok(f(&Row::Sqlite(r))))
                .map(|rows| rows.map(|r| r.and_then(|inner| inner)).collect::<Vec<_>>())
        })?;
        Ok(MappedRows(mapped.into_iter()))
    }

    /// The rows, to step through with [`Rows::next`].
    pub fn query<P: Params>(&mut self, params: P) -> SqlResult<Rows<'_>> {
        if let Statement::Postgres(c, sql) = self {
            let rows = params.with(|p| c.query(sql, p))?;
            return Ok(Rows::Postgres(rows, 0));
        }
        let s = self.sqlite().expect("a SQLite statement");
        // rusqlite's `Rows` borrows the parameters only while binding them.
        params.with(|p| s.query(p)).map(Rows::Sqlite)
    }
}

/// The rows of [`Statement::query_map`], each through the caller's function.
pub struct MappedRows<T>(std::vec::IntoIter<SqlResult<T>>);

impl<T> Iterator for MappedRows<T> {
    type Item = SqlResult<T>;
    fn next(&mut self) -> Option<SqlResult<T>> {
        self.0.next()
    }
}

/// The rows of [`Statement::query`].
pub enum Rows<'s> {
    Sqlite(rusqlite::Rows<'s>),
    Postgres(pg_value::PgRows, usize),
}

impl Rows<'_> {
    /// The next row, `None` after the last. (Not `Iterator::next`: each row borrows
    /// from the rows, as rusqlite's do.)
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> SqlResult<Option<Row<'_>>> {
        match self {
            Rows::Sqlite(rows) => Ok(rows.next()?.map(Row::Sqlite)),
            Rows::Postgres(rows, at) => {
                if *at >= rows.rows.len() {
                    return Ok(None);
                }
                *at += 1;
                Ok(Some(rows.row(*at - 1)))
            }
        }
    }
}

/// One row of a result.
pub enum Row<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    /// The row's values and the result's column names.
    Postgres(&'r [Value], &'r [String]),
}

/// A column of a row: its position or its name.
pub trait ColumnIndex {
    /// The position, or the name, of the column.
    fn column(&self) -> Result<usize, &str>;
}

impl ColumnIndex for usize {
    fn column(&self) -> Result<usize, &str> {
        Ok(*self)
    }
}

impl ColumnIndex for &str {
    fn column(&self) -> Result<usize, &str> {
        Err(self)
    }
}

impl Row<'_> {
    /// Column `idx` converted to `T`.
    pub fn get<I: ColumnIndex, T: FromSql>(&self, idx: I) -> SqlResult<T> {
        match self {
            Row::Sqlite(r) => match idx.column() {
                Ok(i) => r.get(i),
                Err(name) => r.get(name),
            },
            Row::Postgres(values, names) => {
                let i = pg_value::column_at(names, idx.column())?;
                pg_value::convert(i, &values[i])
            }
        }
    }

    /// Column `idx` as stored, borrowed.
    pub fn get_ref<I: ColumnIndex>(&self, idx: I) -> SqlResult<ValueRef<'_>> {
        match self {
            Row::Sqlite(r) => match idx.column() {
                Ok(i) => r.get_ref(i),
                Err(name) => r.get_ref(name),
            },
            Row::Postgres(values, names) => {
                let i = pg_value::column_at(names, idx.column())?;
                Ok(ValueRef::from(&values[i]))
            }
        }
    }
}

/// A statement's parameters: what rusqlite takes (`params![…]`, `[a, b]`, `(a, b)`,
/// `[]`, a slice of `&dyn ToSql`), handed to either backend as one slice.
pub trait Params {
    /// Call `f` with the parameters.
    fn with<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R;
}

impl Params for &[&dyn ToSql] {
    fn with<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
        f(self)
    }
}

impl Params for [&(dyn ToSql + Send + Sync); 0] {
    fn with<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
        f(&[])
    }
}

impl<T: ToSql + ?Sized, const N: usize> Params for &[&T; N] {
    fn with<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
        let refs: Vec<&dyn ToSql> = self.iter().map(|p| p as &dyn ToSql).collect();
        f(&refs)
    }
}

macro_rules! array_params {
    ($($n:literal)*) => {$(
        impl<T: ToSql> Params for [T; $n] {
            fn with<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
                let refs: Vec<&dyn ToSql> = self.iter().map(|p| p as &dyn ToSql).collect();
                f(&refs)
            }
        }
    )*};
}
array_params!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);

macro_rules! tuple_params {
    ($(($($t:ident $i:tt),*))*) => {$(
        impl<$($t: ToSql),*> Params for ($($t,)*) {
            fn with<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
                f(&[$(&self.$i as &dyn ToSql),*])
            }
        }
    )*};
}
tuple_params! {
    (A 0)
    (A 0, B 1)
    (A 0, B 1, C 2)
    (A 0, B 1, C 2, D 3)
    (A 0, B 1, C 2, D 3, E 4)
    (A 0, B 1, C 2, D 3, E 4, F 5)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6)
    (A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7)
}

/// `.optional()` on a single-row result, as rusqlite's `OptionalExtension` (re-exported
/// so ledger code imports one name whichever backend runs).
pub use rusqlite::OptionalExtension;
