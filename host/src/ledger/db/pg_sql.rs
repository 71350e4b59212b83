//! The ledger's SQL, written for SQLite, as PostgreSQL takes it.
//!
//! Most of the ledger's statements are standard SQL both engines run. What differs is
//! rewritten here, once per statement (the result is cached with the prepared
//! statement): placeholders (`?1`, `?` → `$1`), `INSERT OR IGNORE` (→ `ON CONFLICT DO
//! NOTHING`), `BEGIN IMMEDIATE`, `rowid` (→ `ctid`, the physical row order), the
//! `PRAGMA`s (dropped) and, for DDL, the column types. SQLite functions the ledger's
//! reading queries use (`json_extract`, `json_each`…) are provided as PostgreSQL
//! functions by [`super::pg_schema`].

/// `sql` in PostgreSQL's dialect.
pub fn translate(sql: &str) -> String {
    let unhinted = without_index_hints(sql);
    let sql = unhinted.as_str();
    let mut out = String::with_capacity(sql.len() + 16);
    let mut next_param = 0u32;
    let mut chars = sql.chars().peekable();
    let mut word = String::new();
    let mut ignore = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        flush_word(&mut word, &mut out, &mut ignore);
        match c {
            '\'' | '"' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let n = match digits.parse::<u32>() {
                    Ok(n) => n,
                    Err(_) => next_param + 1,
                };
                next_param = next_param.max(n);
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    flush_word(&mut word, &mut out, &mut ignore);
    if ignore {
        let body = out.trim_end().trim_end_matches(';').to_owned();
        out = format!("{body} ON CONFLICT DO NOTHING");
    }
    out
}

/// `sql` without SQLite's `INDEXED BY name` hints (PostgreSQL's planner picks).
fn without_index_hints(sql: &str) -> String {
    let mut out = sql.to_owned();
    while let Some(at) = out.find("INDEXED BY ") {
        let name_at = at + "INDEXED BY ".len();
        let end = out[name_at..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(out.len(), |n| name_at + n);
        out.replace_range(at..end, "");
    }
    out
}

/// Append `word`, rewritten where PostgreSQL spells it differently.
fn flush_word(word: &mut String, out: &mut String, ignore: &mut bool) {
    if word.is_empty() {
        return;
    }
    let upper = word.to_ascii_uppercase();
    let previous = out
        .trim_end()
        .rsplit(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .next()
        .unwrap_or("");
    match upper.as_str() {
        // `INSERT OR IGNORE INTO` → `INSERT INTO … ON CONFLICT DO NOTHING`.
        "OR" if previous.eq_ignore_ascii_case("INSERT") => {}
        "IGNORE" if out.trim_end().to_ascii_uppercase().ends_with("INSERT") => *ignore = true,
        "IMMEDIATE" | "DEFERRED" | "EXCLUSIVE" if previous.eq_ignore_ascii_case("BEGIN") => {}
        "ROWID" => out.push_str("ctid"),
        _ => out.push_str(word),
    }
    word.clear();
}

/// Statements separated by `;` without parameters, translated; `PRAGMA`s dropped.
pub fn translate_batch(sql: &str) -> String {
    sql.split_inclusive(';')
        .filter(|s| !s.trim_start().to_ascii_uppercase().starts_with("PRAGMA"))
        .map(translate)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `sql` is an `INSERT`.
pub fn is_insert(sql: &str) -> bool {
    sql.trim_start()
        .get(..6)
        .is_some_and(|w| w.eq_ignore_ascii_case("INSERT"))
}

/// SQLite DDL as PostgreSQL's: `INTEGER` → `BIGINT` (SQLite's integers are 64-bit),
/// `REAL` → `DOUBLE PRECISION`, `BLOB` → `BYTEA`, and an `id INTEGER PRIMARY KEY`
/// (SQLite's rowid alias) → an identity column.
pub fn translate_ddl(sql: &str) -> String {
    let mut out = Vec::new();
    for line in sql.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("--") {
            continue;
        }
        let mut words: Vec<String> = Vec::new();
        let tokens: Vec<&str> = line
            .split_inclusive(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
            .collect();
        let mut i = 0;
        while i < tokens.len() {
            let token = tokens[i];
            let bare = token
                .trim_end_matches(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')');
            let tail = &token[bare.len()..];
            let upper = bare.to_ascii_uppercase();
            let rest: String = tokens[i + 1..].concat().to_ascii_uppercase();
            let replaced = match upper.as_str() {
                "INTEGER" if rest.trim_start().starts_with("PRIMARY KEY") => {
                    "BIGINT GENERATED BY DEFAULT AS IDENTITY".to_owned()
                }
                "INTEGER" => "BIGINT".to_owned(),
                "REAL" => "DOUBLE PRECISION".to_owned(),
                "BLOB" => "BYTEA".to_owned(),
                _ => bare.to_owned(),
            };
            words.push(format!("{replaced}{tail}"));
            i += 1;
        }
        out.push(words.concat());
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_as_sqlite_numbers_them() {
        assert_eq!(
            translate("SELECT a FROM t WHERE b = ?1 AND c = ?2"),
            "SELECT a FROM t WHERE b = $1 AND c = $2"
        );
        assert_eq!(translate("VALUES (?, ?, ?)"), "VALUES ($1, $2, $3)");
        assert_eq!(
            translate("WHERE a = '?1' AND b = ?1"),
            "WHERE a = '?1' AND b = $1"
        );
    }

    #[test]
    fn sqlite_only_words_are_rewritten() {
        let ignore = translate("INSERT OR IGNORE INTO blobs (hash) VALUES (?1)");
        assert_eq!(
            ignore.split_whitespace().collect::<Vec<_>>().join(" "),
            "INSERT INTO blobs (hash) VALUES ($1) ON CONFLICT DO NOTHING"
        );
        assert_eq!(translate("BEGIN IMMEDIATE").trim(), "BEGIN");
        assert_eq!(
            translate("FROM events INDEXED BY by_kind WHERE"),
            "FROM events  WHERE"
        );
        assert_eq!(
            translate("ORDER BY started_at DESC, rowid DESC"),
            "ORDER BY started_at DESC, ctid DESC"
        );
        assert_eq!(
            translate_batch("PRAGMA foreign_keys = ON;\nSAVEPOINT job").trim(),
            "SAVEPOINT job"
        );
    }

    #[test]
    fn ddl_types_become_postgres_types() {
        let ddl = translate_ddl(
            "CREATE TABLE t (\n    id INTEGER PRIMARY KEY,\n    n INTEGER NOT NULL,\n    r REAL,\n    b BLOB\n);",
        );
        assert_eq!(
            ddl,
            "CREATE TABLE t (\n    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,\n    n BIGINT NOT NULL,\n    r DOUBLE PRECISION,\n    b BYTEA\n);"
        );
    }
}
