//! Is a ledger fit to replay from? `agentflow check` (integrity, schema version, the
//! runs that can be resumed; on PostgreSQL too) and `agentflow backup` (a consistent
//! copy of a SQLite ledger while hosts write to it; PostgreSQL has `pg_dump`).
//!
//! Everything here reads the ledger through a read-only connection and never
//! migrates or repairs it: a check must not change what it reports on.

use super::Connection;
use super::{LedgerError, query, schema};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What `agentflow check` found.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub path: PathBuf,
    /// True when the ledger can be used: it passes `quick_check`, its version is known
    /// and it has every table of that version.
    pub ok: bool,
    /// The rows of `PRAGMA quick_check` (`["ok"]` for a healthy file; always `["ok"]`
    /// on PostgreSQL, which checks its own pages).
    pub quick_check: Vec<String>,
    /// `PRAGMA user_version` (0: unversioned, migrated when a host opens it).
    pub schema_version: Option<i64>,
    /// The newest version this agentflow knows.
    pub known_version: i64,
    /// Tables the ledger's version must have but it lacks.
    pub missing_tables: Vec<String>,
    /// Number of runs recorded.
    pub runs: usize,
    /// Runs that did not finish (status `running`): the ones `agentflow resume` would
    /// continue, once the ledger is `ok`.
    pub resumable: Vec<ResumableRun>,
    /// What is wrong, one sentence each (empty when `ok`).
    pub problems: Vec<String>,
}

/// A run `agentflow resume` would continue.
#[derive(Clone, Debug, Serialize)]
pub struct ResumableRun {
    pub run_id: String,
    pub agent: String,
    pub input: String,
    pub started_at: i64,
    /// Its tasks, and how many of them have not finished.
    pub tasks: i64,
    pub unfinished_tasks: i64,
}

/// The rows `PRAGMA quick_check` returns (`["ok"]` when it found nothing wrong).
pub fn quick_check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    if conn.is_postgres() {
        return Ok(vec!["ok".into()]); // PostgreSQL checks its pages itself
    }
    let mut stmt = conn.prepare("PRAGMA quick_check")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.collect()
}

/// Check the ledger at `path` (a file, or a PostgreSQL URL) without changing it.
pub fn check(path: &Path) -> Result<CheckReport, LedgerError> {
    let postgres = super::db::postgres_url(path).is_some();
    if !postgres && !path.is_file() {
        return Err(LedgerError::NoLedger {
            path: path.to_owned(),
        });
    }
    let conn = query::open_reader(path)?;
    let mut report = CheckReport {
        path: super::db::redact(&path.to_string_lossy()).into(),
        ok: false,
        quick_check: Vec::new(),
        schema_version: None,
        known_version: schema::SCHEMA_VERSION,
        missing_tables: Vec::new(),
        runs: 0,
        resumable: Vec::new(),
        problems: Vec::new(),
    };
    match quick_check(&conn) {
        Ok(rows) => report.quick_check = rows,
        Err(e) => report
            .problems
            .push(format!("cannot read the file as a ledger: {e}")),
    }
    if !report.problems.is_empty() {
        return Ok(report);
    }
    if report.quick_check != ["ok"] {
        report.problems.push(format!(
            "PRAGMA quick_check found damage: {}",
            report.quick_check.join("; ")
        ));
    }
    check_schema(&conn, &mut report)?;
    if report
        .missing_tables
        .iter()
        .all(|t| t != "runs" && t != "tasks")
    {
        match resumable(&conn) {
            Ok((runs, resumable)) => {
                report.runs = runs;
                report.resumable = resumable;
            }
            Err(e) => report.problems.push(format!("cannot list its runs: {e}")),
        }
    }
    report.ok = report.problems.is_empty();
    Ok(report)
}

/// The version and the tables it must have.
fn check_schema(conn: &Connection, report: &mut CheckReport) -> Result<(), LedgerError> {
    let version = schema::version(conn)?;
    report.schema_version = Some(version);
    if !schema::is_known(version) {
        report.problems.push(format!(
            "ledger schema version {version} is newer than this agentflow (knows up to {})",
            schema::SCHEMA_VERSION
        ));
        return Ok(());
    }
    let present = schema::tables(conn)?;
    if version == 0 && present.is_empty() {
        return Ok(()); // an empty file: the first host to open it creates the schema
    }
    report.missing_tables = schema::expected_tables(version)
        .into_iter()
        .filter(|t| !present.iter().any(|p| p == t))
        .map(str::to_string)
        .collect();
    for t in &report.missing_tables {
        report.problems.push(format!("table `{t}` is missing"));
    }
    Ok(())
}

/// How many runs there are, and the ones `Host::resume` would continue (status
/// `running`: it refuses completed, failed and cancelled runs).
fn resumable(conn: &Connection) -> rusqlite::Result<(usize, Vec<ResumableRun>)> {
    let runs: i64 = conn.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))?;
    let mut stmt = conn.prepare(
        "SELECT r.run_id, r.agent, r.input, r.started_at,
                (SELECT COUNT(*) FROM tasks t WHERE t.run_id = r.run_id),
                (SELECT COUNT(*) FROM tasks t WHERE t.run_id = r.run_id
                   AND t.status NOT IN ('completed', 'failed', 'cancelled'))
         FROM runs r WHERE r.status = 'running' ORDER BY r.started_at, r.rowid",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(ResumableRun {
            run_id: r.get(0)?,
            agent: r.get(1)?,
            input: r.get(2)?,
            started_at: r.get(3)?,
            tasks: r.get(4)?,
            unfinished_tasks: r.get(5)?,
        })
    })?;
    Ok((runs as usize, rows.collect::<Result<_, _>>()?))
}

/// The report as text for the terminal.
pub fn render(report: &CheckReport) -> String {
    let mut out = format!("ledger     {}\n", report.path.display());
    let integrity = if report.quick_check.is_empty() {
        "not checked".to_string()
    } else {
        report.quick_check.join("; ")
    };
    let how = if super::db::postgres_url(&report.path).is_some() {
        "PostgreSQL checks its own pages"
    } else {
        "PRAGMA quick_check"
    };
    out += &format!("integrity  {integrity} ({how})\n");
    let version = match report.schema_version {
        Some(0) => format!(
            "0 (unversioned: migrated to {} when a host opens it)",
            report.known_version
        ),
        Some(v) if v == report.known_version => format!("{v} (current)"),
        Some(v) => format!("{v} (this agentflow knows up to {})", report.known_version),
        None => "unknown".into(),
    };
    out += &format!("schema     version {version}\n");
    let resumable = if report.ok {
        "resumable"
    } else {
        "unfinished (not resumable from this file)"
    };
    out += &format!(
        "runs       {} recorded, {} {resumable}\n",
        report.runs,
        report.resumable.len()
    );
    for r in &report.resumable {
        let input: String = r.input.chars().take(40).collect();
        out += &format!(
            "  {}  {} \"{}\"  {} task(s), {} unfinished  → agentflow resume {}\n",
            &r.run_id[..r.run_id.len().min(8)],
            r.agent,
            input,
            r.tasks,
            r.unfinished_tasks,
            r.run_id
        );
    }
    for p in &report.problems {
        out += &format!("problem    {p}\n");
    }
    out += &format!("status     {}\n", verdict(report));
    out
}

/// The one-line verdict: ok, or what to do.
fn verdict(report: &CheckReport) -> &'static str {
    let newer = report
        .schema_version
        .is_some_and(|v| v > report.known_version);
    if report.ok {
        "ok"
    } else if newer && report.problems.len() == 1 {
        "NOT USABLE by this agentflow: use the newer agentflow that wrote it"
    } else {
        "DAMAGED: agentflow refuses to replay from it; restore a copy made with `agentflow backup`"
    }
}

/// Copy the ledger at `from` to the new file `to` (`VACUUM INTO`): one consistent
/// snapshot, even while hosts write to it, complete in one file. Returns the copy's
/// check.
pub fn backup(from: &Path, to: &Path) -> Result<CheckReport, LedgerError> {
    if super::db::postgres_url(from).is_some() {
        return Err(LedgerError::PostgresBackup);
    }
    if !from.is_file() {
        return Err(LedgerError::NoLedger {
            path: from.to_owned(),
        });
    }
    if to.exists() {
        return Err(LedgerError::BackupExists {
            path: to.to_owned(),
        });
    }
    let target = to.to_str().ok_or_else(|| LedgerError::Open {
        path: to.to_owned(),
        source: rusqlite::Error::InvalidPath(to.to_owned()),
    })?;
    let conn = query::open_reader(from)?;
    conn.execute("VACUUM INTO ?1", [target])?;
    drop(conn);
    check(to)
}
