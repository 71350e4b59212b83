//! What the commands print: a run's report, a ledger check, the listings of
//! approvals, checkpoints and conflicts, a calibration, an operator's decision. Text
//! for people (every table through [`Table`]), or JSON with `--json`. Guest text is
//! escaped before it reaches the terminal.

use crate::cli::out::{out, outln};
use agentflow::attempts::calibrate::Calibration;
use agentflow::guest_text::escape_guest_text;
use agentflow::ledger::MergeStatus;
use agentflow::ledger::integrity::{self, CheckReport};
use agentflow::ledger::query::{ApprovalRow, CheckpointRow};
use agentflow::merge::MergeRow;
use agentflow::observe::inspect;
use agentflow::supervisor::HumanWait;
use agentflow::table::Table;
use agentflow::{RunReport, Status};
use serde::Serialize;
use std::path::Path;
use std::process::ExitCode;

/// `value` as one line of JSON with `--json`, else `text(value)` as it is.
pub fn json_or<T: Serialize + ?Sized>(
    json: bool,
    value: &T,
    text: impl FnOnce(&T) -> String,
) -> anyhow::Result<ExitCode> {
    if json {
        outln!("{}", serde_json::to_string(value)?)?;
    } else {
        out!("{}", text(value))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A run's report: the output on stdout and a summary on stderr, or one JSON object.
/// Exit status 0 when the run completed, 3 when it stopped waiting for humans (`--detach`:
/// the decisions to make and their commands on stderr), else 1.
pub fn report(report: &RunReport, json: bool, db: &Path) -> anyhow::Result<ExitCode> {
    let mut report = report.clone();
    for w in &mut report.waiting {
        w.commands = w.commands.iter().map(|c| on_db(c, db)).collect();
    }
    let report = &report;
    if json {
        outln!("{}", serde_json::to_string(report)?)?;
    } else {
        if let Some(output) = &report.output {
            outln!("{output}")?;
        }
        eprintln!(
            "run {}  {}  tasks {}  tokens {}  cost {}  {:.3}s",
            report.run_id,
            match report.status {
                Status::Completed => "ok",
                Status::Failed => "failed",
                Status::Cancelled => "cancelled",
                Status::Waiting => "waiting",
                _ => "?",
            },
            report.tasks,
            inspect::group_digits(report.tokens as i64),
            if report.copied_cost_usd > 0.0 {
                format!(
                    "{} ({} copied from the forked run, {} new)",
                    inspect::usd(report.cost_usd),
                    inspect::usd(report.copied_cost_usd),
                    inspect::usd(report.new_cost_usd)
                )
            } else {
                inspect::usd(report.cost_usd)
            },
            report.duration_ms as f64 / 1000.0
        );
        if let Some(e) = &report.error {
            eprintln!("agentflow: agent failed: {}", escape_guest_text(e));
        }
    }
    if report.status == Status::Waiting {
        eprintln!(
            "agentflow: run {} waits for a human; decide, then continue it with: {}",
            report.run_id,
            on_db(&format!("agentflow resume {}", report.run_id), db)
        );
        for w in &report.waiting {
            eprintln!("  {}", wait_line(w));
        }
    }
    Ok(match report.status {
        Status::Completed => ExitCode::SUCCESS,
        Status::Waiting => ExitCode::from(3),
        _ => ExitCode::from(1),
    })
}

/// `command --db DB`, the path quoted when it has to be.
pub fn on_db(command: &str, db: &Path) -> String {
    let db = db.display().to_string();
    if db
        .chars()
        .any(|c| c.is_whitespace() || "'\"$`\\".contains(c))
    {
        format!("{command} --db '{}'", db.replace('\'', "'\\''"))
    } else {
        format!("{command} --db {db}")
    }
}

/// What a task waits for and how to answer, on one line: `task 3 waits for approval 3
/// (why): agentflow approve 3 --db X | …` (the commands as given).
pub fn wait_line(w: &HumanWait) -> String {
    format!(
        "task {} waits for {} ({}): {}",
        w.task_id,
        w.what(),
        escape_guest_text(&w.reason),
        w.commands.join(" | ")
    )
}

/// The CLI's notice that a task started waiting for a human, on stderr (at any log
/// level: the operator has to act on it).
pub fn notice(w: &HumanWait, db: &Path) {
    let mut w = w.clone();
    w.commands = w.commands.iter().map(|c| on_db(c, db)).collect();
    eprintln!(
        "agentflow: run {}: {}",
        &w.run_id[..w.run_id.len().min(8)],
        wait_line(&w)
    );
}

/// A ledger check; exit status 1 when the ledger is damaged.
pub fn check(report: &CheckReport, json: bool) -> anyhow::Result<ExitCode> {
    json_or(json, report, integrity::render)?;
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A recovery plan and, with `--apply`, what was run and resumed.
pub fn recovery(
    plan: &agentflow::durability::recovery::Plan,
    compensations: usize,
    resumed: Option<&RunReport>,
    apply: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if json {
        outln!(
            "{}",
            serde_json::json!({ "plan": plan, "compensations_run": compensations, "resumed": resumed })
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    out!("{}", agentflow::durability::recovery::render(plan))?;
    if apply {
        outln!("applied: {compensations} compensation(s) run")?;
        if let Some(r) = resumed {
            outln!("resumed: run {} {:?}", r.run_id, r.status)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A judge's calibration: its false-positive and false-negative rates.
pub fn calibration(report: &Calibration) -> String {
    format!(
        "judge {} (threshold {}) on {} labelled outputs\n\
         false-positive rate {:.1}% ({} bad passed of {}), false-negative rate {:.1}% ({} good failed of {}), {} uncertain\n",
        report.model,
        report.threshold,
        report.examples,
        report.false_positive_rate * 100.0,
        report.false_positives,
        report.false_positives + report.true_negatives,
        report.false_negative_rate * 100.0,
        report.false_negatives,
        report.false_negatives + report.true_positives,
        report.uncertain
    )
}

/// The approvals as a table.
pub fn approvals(rows: &[ApprovalRow]) -> String {
    let mut table = Table::new()
        .left("id")
        .left("run")
        .left("task")
        .left("status")
        .right("est. cost")
        .left("reason / description");
    for a in rows {
        table.row([
            a.id.to_string(),
            a.run_id.clone(),
            a.task_id.to_string(),
            a.status.to_string(),
            inspect::usd(a.estimated_cost_usd),
            format!(
                "{} / \"{}\"",
                escape_guest_text(&a.reason),
                escape_guest_text(&a.description)
            ),
        ]);
    }
    table.render()
}

/// What `export-otlp` sent.
pub fn exported(e: &agentflow::runs::telemetry::Exported) -> String {
    format!(
        "exported {} spans of run {} to {} (trace id {})\n",
        e.spans, e.run_id, e.endpoint, e.trace_id
    )
}

/// A run's checkpoints as a table.
pub fn checkpoints(rows: &[CheckpointRow]) -> String {
    let mut table = Table::new()
        .left("task")
        .left("#")
        .left("seq")
        .left("step")
        .right("bytes")
        .left("note");
    for c in rows {
        table.row([
            c.task_id.to_string(),
            c.number.to_string(),
            c.event_seq.to_string(),
            c.step.to_string(),
            c.state_size.to_string(),
            escape_guest_text(&c.note).into_owned(),
        ]);
    }
    table.render()
}

/// What an operator's decision did (`approved approval 3: run … task 2`), or the
/// error when nothing was pending under `id` (`listing` is the command that shows what is).
pub fn decided(
    verb: &str,
    what: &str,
    id: u64,
    decided: Option<(String, u64)>,
    listing: &str,
    db: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    match decided {
        Some((run, task)) => {
            outln!("{verb} {what} {id}: run {run} task {task}")?;
            next_step(db, &run);
            Ok(ExitCode::SUCCESS)
        }
        None => anyhow::bail!("no pending {what} {id} (see `agentflow {listing}`)"),
    }
}

/// Merge conflicts as text (with each side's diff against the base) or JSON.
pub fn conflicts(rows: &[MergeRow], json: bool) -> anyhow::Result<ExitCode> {
    use agentflow::merge::resolve::diff;
    if json {
        let out: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id, "run_id": r.run_id, "parent_task": r.parent_task,
                    "child_task": r.child_task, "subject": r.subject, "category": r.category,
                    "status": r.status, "reasoning": r.reasoning, "resolution": r.resolution,
                    "ours_diff": diff(r.base.as_deref(), r.ours.as_deref()),
                    "theirs_diff": diff(r.base.as_deref(), Some(&r.theirs)),
                })
            })
            .collect();
        outln!("{}", serde_json::to_string(&out)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        outln!("no pending conflicts")?;
    }
    for r in rows {
        outln!(
            "conflict {} [{}] {}: {} of run {} (parent task {} ← child task {})\n  why: {}",
            r.id,
            r.category.as_str(),
            r.status,
            escape_guest_text(&r.subject),
            r.run_id,
            r.parent_task,
            r.child_task,
            escape_guest_text(&r.reasoning)
        )?;
        if let Some(res) = &r.resolution {
            outln!("  resolution: {}", escape_guest_text(res))?;
        }
        outln!(
            "  --- task {} (parent) vs base:\n{}",
            r.parent_task,
            indent(&diff(r.base.as_deref(), r.ours.as_deref()))
        )?;
        outln!(
            "  --- task {} (child) vs base:\n{}",
            r.child_task,
            indent(&diff(r.base.as_deref(), Some(&r.theirs)))
        )?;
        if r.status == MergeStatus::Pending {
            outln!(
                "  resolve: agentflow resolve {} --take {} | --take {} | --file F",
                r.id,
                r.parent_task,
                r.child_task
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Each line of `text` indented, its control characters escaped.
fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {}", escape_guest_text(l)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A resolved conflict, with the resolution it was given.
pub fn resolved(id: u64, row: MergeRow, db: &std::path::Path) -> anyhow::Result<ExitCode> {
    outln!(
        "resolved conflict {id} ({}) of run {}: {}",
        row.subject,
        row.run_id,
        row.resolution.unwrap_or_default()
    )?;
    next_step(db, &row.run_id);
    Ok(ExitCode::SUCCESS)
}

/// On stderr, once a human decided: who continues run `run` — the live host that
/// holds its lease, or the operator with `agentflow resume`.
fn next_step(db: &std::path::Path, run: &str) {
    let live = agentflow::ledger::existing::reader(db)
        .ok()
        .and_then(|conn| agentflow::ledger::leases::live(&conn, run).ok().flatten())
        .is_some();
    if live {
        eprintln!("agentflow: the host running run {run} continues it");
    } else {
        eprintln!(
            "agentflow: no host is running run {run}: continue it with `agentflow resume {run} --db {}`",
            db.display()
        );
    }
}

/// The error for a run id (or prefix) that names no run of the ledger `db`.
pub fn no_run(run: &str, db: &std::path::Path) -> anyhow::Error {
    anyhow::anyhow!("no run `{run}` in {} (see `agentflow runs`)", db.display())
}

/// A settled in-doubt call, and the command that continues its run.
pub fn settled(s: &agentflow::durability::settle::Settled) -> String {
    format!(
        "settled: `{}` (task {}, intent seq {}) {}; recorded as event {}\ncontinue with: {}\n",
        s.tool,
        s.task_id,
        s.intent_seq,
        if s.happened {
            "happened"
        } else {
            "did not happen: it runs again"
        },
        s.result_seq,
        s.next
    )
}

/// A command-line mistake as one line (help and version print as clap renders them).
pub fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let text = e.to_string();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("bad arguments");
    let mut line = first.strip_prefix("error: ").unwrap_or(first).to_string();
    // The indented lines right after it belong on the one line too: the arguments
    // "the following required arguments were not provided:" lists, the "[possible
    // values: …]" of an invalid value.
    let listed: Vec<&str> = lines
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    if !listed.is_empty() {
        let separator = if line.ends_with(':') { ", " } else { " " };
        line = format!("{line} {}", listed.join(separator));
    }
    eprintln!("agentflow: error: {line} (see `agentflow --help`)");
    ExitCode::from(2)
}
