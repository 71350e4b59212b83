//! Values between the ledger's SQLite-typed code and PostgreSQL's strict types.
//!
//! Parameters arrive as rusqlite `ToSql` values (integer, real, text, blob, null) and
//! are encoded for whatever type PostgreSQL inferred for each placeholder ([`Param`]).
//! Result columns are decoded from PostgreSQL's binary format into rusqlite `Value`s
//! ([`PgRows`]) — booleans as 0/1, `NUMERIC` (what `SUM` of integers gives) as an
//! integer when it has no fraction, `JSONB` as its text — and converted with the same
//! `FromSql` as SQLite's columns ([`convert`]); text that holds a number converts to
//! a number, as SQLite's `json_extract` gives one. Errors become `rusqlite::Error`s.

use bytes::{BufMut, BytesMut};
use rusqlite::ToSql;
use rusqlite::types::{FromSql, FromSqlError, ToSqlOutput, Type as SqliteType, Value, ValueRef};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql as PgFromSql, IsNull, ToSql as PgToSql, Type};

type BoxError = Box<dyn std::error::Error + Sync + Send>;

/// A PostgreSQL error as a rusqlite error: a unique or other constraint violation as
/// SQLite's, anything else as a generic error carrying PostgreSQL's message.
pub fn sql_error(e: tokio_postgres::Error, sql: &str) -> rusqlite::Error {
    let code = match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE,
        Some(c) if c.code().starts_with("23") => rusqlite::ffi::SQLITE_CONSTRAINT,
        _ => rusqlite::ffi::SQLITE_ERROR,
    };
    let message = match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {} (in `{}`)", db.message(), head(sql)),
        None => format!("PostgreSQL: {e}"),
    };
    rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some(message))
}

/// The start of a statement, for error messages.
fn head(sql: &str) -> String {
    let flat = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(120) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

/// One parameter, owned, encoded for the type PostgreSQL inferred.
#[derive(Debug)]
pub struct Param(Value);

impl Param {
    /// The parameters as the driver takes them.
    pub fn refs(values: &[Param]) -> Vec<&(dyn PgToSql + Sync)> {
        values.iter().map(|v| v as &(dyn PgToSql + Sync)).collect()
    }
}

/// The statement's parameters as owned values, after checking their count.
pub fn params(
    stmt: &tokio_postgres::Statement,
    given: &[&dyn ToSql],
) -> rusqlite::Result<Vec<Param>> {
    if given.len() != stmt.params().len() {
        return Err(rusqlite::Error::InvalidParameterCount(
            given.len(),
            stmt.params().len(),
        ));
    }
    given
        .iter()
        .map(|p| {
            Ok(Param(match p.to_sql()? {
                ToSqlOutput::Borrowed(v) => v.into(),
                ToSqlOutput::Owned(v) => v,
                other => {
                    return Err(rusqlite::Error::ToSqlConversionFailure(
                        format!("unsupported parameter for PostgreSQL: {other:?}").into(),
                    ));
                }
            }))
        })
        .collect()
}

impl PgToSql for Param {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match &self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) => match *ty {
                Type::INT8 => enc(i, ty, out),
                Type::INT4 => enc(i32::try_from(*i)?, ty, out),
                Type::INT2 => enc(i16::try_from(*i)?, ty, out),
                Type::FLOAT8 => enc(*i as f64, ty, out),
                Type::FLOAT4 => enc(*i as f32, ty, out),
                Type::BOOL => enc(*i != 0, ty, out),
                _ => text(&i.to_string(), ty, out),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => enc(f, ty, out),
                Type::FLOAT4 => enc(*f as f32, ty, out),
                Type::INT8 if f.fract() == 0.0 => enc(*f as i64, ty, out),
                _ => text(&f.to_string(), ty, out),
            },
            Value::Text(s) => text(s, ty, out),
            Value::Blob(b) => match *ty {
                Type::BYTEA => enc(b, ty, out),
                _ => text(std::str::from_utf8(b)?, ty, out),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// `v` encoded by the driver for `ty`.
fn enc<T: PgToSql>(v: T, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    v.to_sql(ty, out)
}

/// Text bound to a placeholder of type `ty`.
fn text(s: &str, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    match *ty {
        Type::JSONB => {
            out.put_u8(1); // the binary format's version
            out.put_slice(s.as_bytes());
            Ok(IsNull::No)
        }
        Type::INT8 => enc(s.parse::<i64>()?, ty, out),
        Type::INT4 => enc(s.parse::<i32>()?, ty, out),
        Type::FLOAT8 => enc(s.parse::<f64>()?, ty, out),
        Type::BYTEA => enc(s.as_bytes(), ty, out),
        _ => {
            out.put_slice(s.as_bytes());
            Ok(IsNull::No)
        }
    }
}

/// A column's raw bytes in PostgreSQL's binary format.
struct Raw<'a>(&'a [u8]);

impl<'a> PgFromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Raw<'a>, BoxError> {
        Ok(Raw(raw))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A query's rows, decoded.
pub struct PgRows {
    pub names: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl PgRows {
    /// Decode every column of `rows`.
    pub fn decode(
        stmt: &tokio_postgres::Statement,
        rows: Vec<tokio_postgres::Row>,
    ) -> rusqlite::Result<PgRows> {
        let names = stmt.columns().iter().map(|c| c.name().to_owned()).collect();
        let types: Vec<Type> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(types.len());
            for (i, ty) in types.iter().enumerate() {
                let raw: Option<Raw> = row.try_get(i).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(i, SqliteType::Null, Box::new(e))
                })?;
                values.push(match raw {
                    None => Value::Null,
                    Some(Raw(bytes)) => decode(ty, bytes).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(i, SqliteType::Null, e)
                    })?,
                });
            }
            out.push(values);
        }
        Ok(PgRows { names, rows: out })
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> super::Row<'_> {
        super::Row::Postgres(&self.rows[i], &self.names)
    }

    /// The first row through `f`; `QueryReturnedNoRows` when there is none.
    pub fn first_row<T>(
        self,
        f: impl FnOnce(&super::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        if self.rows.is_empty() {
            return Err(rusqlite::Error::QueryReturnedNoRows);
        }
        f(&self.row(0))
    }
}

/// One non-null column value of type `ty`.
fn decode(ty: &Type, raw: &[u8]) -> Result<Value, BoxError> {
    Ok(match *ty {
        Type::BOOL => Value::Integer(i64::from(bool::from_sql(ty, raw)?)),
        Type::INT2 => Value::Integer(i64::from(i16::from_sql(ty, raw)?)),
        Type::INT4 => Value::Integer(i64::from(i32::from_sql(ty, raw)?)),
        Type::INT8 => Value::Integer(i64::from_sql(ty, raw)?),
        Type::OID => Value::Integer(i64::from(u32::from_sql(ty, raw)?)),
        Type::FLOAT4 => Value::Real(f64::from(f32::from_sql(ty, raw)?)),
        Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
        Type::NUMERIC => numeric(raw)?,
        Type::BYTEA => Value::Blob(raw.to_vec()),
        Type::JSONB => Value::Text(String::from_utf8(
            raw.get(1..).unwrap_or_default().to_vec(),
        )?),
        _ => Value::Text(String::from_utf8(raw.to_vec())?),
    })
}

/// A `NUMERIC` in its binary format (base-10000 digits): an integer when it has no
/// fraction and fits, a real otherwise.
fn numeric(raw: &[u8]) -> Result<Value, BoxError> {
    let word = |i: usize| -> Result<i16, BoxError> {
        let b = raw.get(i * 2..i * 2 + 2).ok_or("truncated NUMERIC")?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    };
    let (ndigits, weight, sign, scale) = (word(0)? as usize, word(1)?, word(2)? as u16, word(3)?);
    if sign == 0xC000 {
        return Ok(Value::Real(f64::NAN));
    }
    let mut whole: i128 = 0;
    let mut real = 0f64;
    let mut exact = true;
    for i in 0..ndigits {
        let digit = word(4 + i)?;
        let power = i32::from(weight) - i as i32;
        real += f64::from(digit) * 10000f64.powi(power);
        if power >= 0 {
            whole = whole
                .checked_mul(10000)
                .and_then(|w| w.checked_add(i128::from(digit)))
                .ok_or("NUMERIC too large")?;
        } else if digit != 0 {
            exact = false;
        }
    }
    // Digits end before the units: scale the whole part up to them.
    let last_power = i32::from(weight) - ndigits as i32 + 1;
    if exact && last_power > 0 {
        for _ in 0..last_power {
            whole = whole.checked_mul(10000).ok_or("NUMERIC too large")?;
        }
    }
    let negative = sign == 0x4000;
    if exact
        && scale == 0
        && let Ok(i) = i64::try_from(whole)
    {
        return Ok(Value::Integer(if negative { -i } else { i }));
    }
    Ok(Value::Real(if negative { -real } else { real }))
}

/// The position of a column given by position or by name.
pub fn column_at(names: &[String], idx: Result<usize, &str>) -> rusqlite::Result<usize> {
    match idx {
        Ok(i) if i < names.len() => Ok(i),
        Ok(i) => Err(rusqlite::Error::InvalidColumnIndex(i)),
        Err(name) => names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .ok_or_else(|| rusqlite::Error::InvalidColumnName(name.to_owned())),
    }
}

/// Column `i`'s value as `T`. Text that holds a number converts to the number when
/// `T` wants one (SQLite's `json_extract` returns numbers; its PostgreSQL stand-in
/// returns text).
pub fn convert<T: FromSql>(i: usize, value: &Value) -> rusqlite::Result<T> {
    match T::column_result(ValueRef::from(value)) {
        Ok(v) => Ok(v),
        Err(FromSqlError::InvalidType) => {
            if let Value::Text(s) = value {
                let number = match s.parse::<i64>() {
                    Ok(n) => Some(Value::Integer(n)),
                    Err(_) => s.parse::<f64>().ok().map(Value::Real),
                };
                if let Some(n) = number
                    && let Ok(v) = T::column_result(ValueRef::from(&n))
                {
                    return Ok(v);
                }
            }
            Err(rusqlite::Error::InvalidColumnType(
                i,
                format!("column {i}"),
                ValueRef::from(value).data_type(),
            ))
        }
        Err(FromSqlError::OutOfRange(n)) => Err(rusqlite::Error::IntegralValueOutOfRange(i, n)),
        Err(e) => Err(rusqlite::Error::FromSqlConversionFailure(
            i,
            ValueRef::from(value).data_type(),
            Box::new(e),
        )),
    }
}
