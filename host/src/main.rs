//! The `agentflow` command line: parse, call the library, print. No logic lives here.

use agentflow::guest_text::escape_guest_text;
use agentflow::ledger::{Ledger, integrity, query};
use agentflow::observe::inspect;
use agentflow::{Host, HostConfig, RunOptions, Status};
use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Run AI agents compiled to WebAssembly components: sandboxed, budgeted, recorded.
#[derive(Parser)]
#[command(name = "agentflow", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an agent (a .wasm component, or a Rust agent crate directory to build first).
    Run {
        /// Path to a component (.wasm) or to an agent crate directory.
        agent: PathBuf,
        /// The agent's input.
        #[arg(long, conflicts_with = "input_file")]
        input: Option<String>,
        /// Read the agent's input from a file.
        #[arg(long)]
        input_file: Option<PathBuf>,
        /// Ledger database.
        #[arg(long, default_value = "agentflow.db")]
        db: PathBuf,
        /// Host configuration (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Grant a tool to the run (kv, workspace, http_fetch); repeatable.
        #[arg(long = "grant", value_name = "TOOL")]
        grants: Vec<String>,
        /// Directory the workspace tool may use.
        #[arg(long)]
        workspace: Option<PathBuf>,
        /// Deepest allowed sub-agent (root = 0).
        #[arg(long)]
        max_depth: Option<u32>,
        /// Total USD the run may spend on LLM calls.
        #[arg(long)]
        budget_usd: Option<f64>,
        /// Tasks of the run executing at once (more are queued).
        #[arg(long)]
        max_concurrency: Option<u32>,
        /// Children whose estimated cost is over this (USD) wait for a human's approval.
        #[arg(long)]
        require_approval_over_usd: Option<f64>,
        /// When a resumed task's replay diverges: fail or from-checkpoint.
        #[arg(long, value_parser = parse_policy)]
        on_divergence: Option<agentflow::durability::DivergencePolicy>,
        /// Wall-clock time each task may take (sets [limits] wall_ms; default 10m), e.g.
        /// 30s, 500ms, 2h.
        #[arg(long, value_parser = agentflow::runtime::limits::parse_duration_ms, value_name = "DURATION")]
        timeout: Option<u64>,
        /// Print one JSON object on stdout instead of the output and a summary.
        #[arg(long)]
        json: bool,
    },
    /// Resume a run that did not finish (crash, kill): replay its ledger, continue live.
    Resume {
        /// Run id (or a unique prefix).
        run: String,
        #[arg(long, default_value = "agentflow.db")]
        db: PathBuf,
        /// Host configuration (TOML): providers and model catalog.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Resume even if the component or behaviour-relevant config changed.
        #[arg(long)]
        allow_changed: bool,
        /// Run this component instead of the one stored with the run.
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Continue a failed run: re-run its failed tasks, replaying their recorded
        /// calls up to where each failure began.
        #[arg(long)]
        retry_failed: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print a run's recovery plan (Resume / Rollback / RequiresHuman per task); with
    /// --apply, run the rollbacks and resume the run when nothing needs a human.
    Recover {
        run: String,
        #[arg(long, default_value = "agentflow.db")]
        db: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        apply: bool,
        #[arg(long)]
        json: bool,
    },
    /// Start a new run that replays <run> up to root event --at and continues live
    /// (optionally pinned to another model): "what would it have done with …?"
    Fork {
        run: String,
        /// Root task event seq to replay up to (see `agentflow inspect --json`).
        #[arg(long)]
        at: u64,
        /// Model every live LLM call of the fork uses.
        #[arg(long)]
        model: Option<String>,
        #[arg(long, default_value = "agentflow.db")]
        db: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Compare two runs: the first divergence and the differences in outcome, cost, tokens.
    Diff {
        a: String,
        b: String,
        #[arg(long, default_value = "agentflow.db")]
        db: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Calibrate a judge: run the first judge validator of <judge-config> over labelled
    /// outputs (JSON lines `{task, output, label: pass|fail}`) and report its
    /// false-positive and false-negative rates.
    Eval {
        judge_config: PathBuf,
        labelled: PathBuf,
        #[arg(long, default_value = "agentflow.db")]
        db: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List merge conflicts waiting for a human (or every merge with --all), with each
    /// side's diff against the common base and the reasoning.
    Conflicts {
        #[arg(long, default_value = "agentflow.db")]
        db: PathBuf,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Resolve a pending conflict: keep one task's version (`--take TASK`) or use a
    /// file's content (`--file F`); the waiting join continues (resume the run if its
    /// host stopped).
    Resolve {
        id: u64,
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        take: Option<u64>,
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long)]
        note: Option<String>,
        #[arg(long, default_value = "agentflow.db")]
        db: PathBuf,
    },
    /// List approval requests (pending ones, or all with --all).
    Approvals {
        #[arg(long, default_value = "agentflow.db")]
        db: PathBuf,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending request: the waiting task starts (resume the run if its host stopped).
    Approve {
        id: u64,
        #[arg(long)]
        note: Option<String>,
        #[arg(long, default_value = "agentflow.db")]
        db: PathBuf,
    },
    /// Deny a pending request: the waiting task fails with the note.
    Deny {
        id: u64,
        #[arg(long)]
        note: Option<String>,
        #[arg(long, default_value = "agentflow.db")]
        db: PathBuf,
    },
    /// List validation failures waiting for a human (`[retry] <category> = "human"`),
    /// pending ones or all with --all.
    Reviews {
        #[arg(long, default_value = "agentflow.db")]
        db: PathBuf,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Retry the task of a pending review, with --note as guidance for the new attempt
    /// (resume the run if its host stopped).
    Retry {
        id: u64,
        #[arg(long)]
        note: Option<String>,
        #[arg(long, default_value = "agentflow.db")]
        db: PathBuf,
    },
    /// Reject the output of a pending review: the task fails with the note.
    Reject {
        id: u64,
        #[arg(long)]
        note: Option<String>,
        #[arg(long, default_value = "agentflow.db")]
        db: PathBuf,
    },
    /// List a run's semantic checkpoints.
    Checkpoints {
        run: String,
        #[arg(long, default_value = "agentflow.db")]
        db: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List runs, newest first.
    Runs {
        #[arg(long, default_value = "agentflow.db")]
        db: PathBuf,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Show the model catalog with each model's health, quota use and statistics.
    Models {
        /// Host configuration (TOML) holding the catalog; default: the built-in mock catalog.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value = "agentflow.db")]
        db: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Check a ledger: integrity (PRAGMA quick_check), schema version, the runs that
    /// can be resumed. Exit status 1 when it is damaged.
    Check {
        /// The ledger database.
        db: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Copy a ledger to a new file: one consistent snapshot, even while hosts write to
    /// it, complete without its -wal file. The copy is checked like `agentflow check`.
    Backup {
        /// The ledger database.
        db: PathBuf,
        /// The new file to write (never overwritten).
        to: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Show a run's task tree: model, cost, tokens, duration and reasoning steps.
    Inspect {
        /// Run id (or a unique prefix).
        run: String,
        #[arg(long, default_value = "agentflow.db")]
        db: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AGENTFLOW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("agentflow: error: {}", escape_guest_text(&msg));
            ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<ExitCode> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return Ok(usage_error(e)),
    };
    match cli.command {
        Command::Run {
            agent,
            input,
            input_file,
            db,
            config,
            grants,
            workspace,
            max_depth,
            budget_usd,
            on_divergence,
            max_concurrency,
            require_approval_over_usd,
            timeout,
            json,
        } => {
            let mut config = load_config(config.as_deref())?;
            if let Some(ms) = timeout {
                config.limits.wall_ms = ms;
            }
            let limits = config.limits.summary();
            build_validator_crates(&mut config)?;
            let input = match (input, input_file) {
                (Some(text), _) => text,
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read input file {}", path.display()))?,
                (None, None) => String::new(),
            };
            let wasm = if agent.is_dir() {
                build_agent_crate(&agent)?
            } else {
                agent
            };
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime.block_on(async {
                let host = Host::new(config, &db)?;
                let report = host
                    .run_file(
                        &wasm,
                        &input,
                        RunOptions {
                            grants,
                            workspace,
                            max_depth,
                            budget_usd,
                            on_divergence,
                            max_concurrency,
                            approval_over_usd: require_approval_over_usd,
                        },
                    )
                    .await;
                close(host);
                report
            })?;
            if !json {
                eprintln!("{limits}");
            }
            print_report(&report, json)
        }
        Command::Resume {
            run,
            db,
            config,
            allow_changed,
            agent,
            retry_failed,
            json,
        } => {
            let config = load_config(config.as_deref())?;
            require_ledger(&db)?;
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime.block_on(async {
                let host = Host::new(config, &db)?;
                let report = host
                    .resume(
                        &run,
                        agentflow::ResumeOptions {
                            allow_changed,
                            agent_file: agent,
                            retry_failed,
                        },
                    )
                    .await;
                close(host);
                report
            })?;
            print_report(&report, json)
        }
        Command::Recover {
            run,
            db,
            config,
            apply,
            json,
        } => {
            let config = load_config(config.as_deref())?;
            require_ledger(&db)?;
            let runtime = tokio::runtime::Runtime::new()?;
            let (plan, compensations, report) = runtime.block_on(async {
                let host = Host::new(config, &db)?;
                let result = host.recover(&run, apply).await;
                close(host);
                result
            })?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "plan": plan, "compensations_run": compensations, "resumed": report })
                );
            } else {
                print!("{}", agentflow::durability::recovery::render(&plan));
                if apply {
                    println!("applied: {compensations} compensation(s) run");
                    if let Some(r) = &report {
                        println!("resumed: run {} {:?}", r.run_id, r.status);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Fork {
            run,
            at,
            model,
            db,
            config,
            json,
        } => {
            let config = load_config(config.as_deref())?;
            require_ledger(&db)?;
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime.block_on(async {
                let host = Host::new(config, &db)?;
                let report = host.fork(&run, at, model).await;
                close(host);
                report
            })?;
            print_report(&report, json)
        }
        Command::Diff { a, b, db, json } => {
            let conn = open_existing(&db)?;
            let d = agentflow::observe::diff::diff(&conn, &a, &b)?;
            if json {
                println!("{}", serde_json::to_string(&d)?);
            } else {
                print!("{}", agentflow::observe::diff::render(&d));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval {
            judge_config,
            labelled,
            db,
            json,
        } => {
            let config = HostConfig::from_file(&judge_config)?;
            let judge = config
                .validators
                .iter()
                .find(|v| v.judge().is_some())
                .cloned()
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{} has no [[validators]] entry of kind \"judge\"",
                        judge_config.display()
                    )
                })?;
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime.block_on(async {
                let host = Host::new(config, &db)?;
                agentflow::validation::calibrate::calibrate(host.scheduler(), &judge, &labelled)
                    .await
            })?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "judge {} (threshold {}) on {} labelled outputs",
                    report.model, report.threshold, report.examples
                );
                println!(
                    "false-positive rate {:.1}% ({} bad passed of {}), false-negative rate {:.1}% ({} good failed of {}), {} uncertain",
                    report.false_positive_rate * 100.0,
                    report.false_positives,
                    report.false_positives + report.true_negatives,
                    report.false_negative_rate * 100.0,
                    report.false_negatives,
                    report.false_negatives + report.true_positives,
                    report.uncertain
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Approvals { db, all, json } => {
            let conn = open_existing(&db)?;
            let rows = query::approvals(&conn, all)?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                println!(
                    "{:<5} {:<34} {:<5} {:<9} {:>10}  reason / description",
                    "id", "run", "task", "status", "est. cost"
                );
                for a in &rows {
                    println!(
                        "{:<5} {:<34} {:<5} {:<9} {:>10}  {} / \"{}\"",
                        a.id,
                        a.run_id,
                        a.task_id,
                        a.status,
                        inspect::usd(a.estimated_cost_usd),
                        escape_guest_text(&a.reason),
                        escape_guest_text(&a.description)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Reviews { db, all, json } => {
            let conn = open_existing(&db)?;
            let rows = agentflow::validation::review::list(&conn, all)?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                print!("{}", agentflow::validation::review::render(&rows));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Retry { id, note, db } => review(&db, id, true, note),
        Command::Reject { id, note, db } => review(&db, id, false, note),
        Command::Conflicts { db, all, json } => {
            let conn = open_existing(&db)?;
            let rows = agentflow::merge::resolve::conflicts(&conn, all)?;
            print_conflicts(&rows, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Resolve {
            id,
            take,
            file,
            note,
            db,
        } => {
            require_ledger(&db)?;
            let decision = match (take, file) {
                (Some(task), _) => agentflow::merge::resolve::Decision::Take(task),
                (None, Some(f)) => agentflow::merge::resolve::Decision::Text(
                    std::fs::read_to_string(&f)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?,
                ),
                (None, None) => bail!("give --take TASK or --file F"),
            };
            let ledger = Ledger::open(&db)?;
            let row = agentflow::merge::resolve::resolve(&ledger, id, decision, note)?;
            checkpoint(&ledger);
            println!(
                "resolved conflict {id} ({}) of run {}: {}",
                row.subject,
                row.run_id,
                row.resolution.unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Approve { id, note, db } => decide(&db, id, true, note),
        Command::Deny { id, note, db } => decide(&db, id, false, note),
        Command::Checkpoints { run, db, json } => {
            let conn = open_existing(&db)?;
            let row = query::run(&conn, &run)?.ok_or_else(|| {
                anyhow::anyhow!("no run `{run}` in {} (see `agentflow runs`)", db.display())
            })?;
            let checkpoints = query::checkpoints(&conn, &row.run_id, None)?;
            if json {
                println!("{}", serde_json::to_string(&checkpoints)?);
            } else {
                println!(
                    "{:<6} {:<4} {:<6} {:<6} {:>8}  note",
                    "task", "#", "seq", "step", "bytes"
                );
                for c in &checkpoints {
                    println!(
                        "{:<6} {:<4} {:<6} {:<6} {:>8}  {}",
                        c.task_id,
                        c.number,
                        c.event_seq,
                        c.step,
                        c.state_size,
                        escape_guest_text(&c.note)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs { db, limit, json } => {
            let conn = open_existing(&db)?;
            let runs = query::runs(&conn, limit)?;
            if json {
                println!("{}", serde_json::to_string(&runs)?);
            } else {
                print!("{}", inspect::render_runs(&runs));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Models { config, db, json } => {
            let config = load_config(config.as_deref())?;
            let models = agentflow::observe::models::load(&config, &db)?;
            if json {
                println!("{}", serde_json::to_string(&models)?);
            } else {
                print!("{}", agentflow::observe::models::render(&models));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { db, json } => {
            let report = integrity::check(&db)?;
            print_check(&report, json)
        }
        Command::Backup { db, to, json } => {
            let report = integrity::backup(&db, &to)?;
            if !json {
                println!("backed up {} to {}", db.display(), to.display());
            }
            print_check(&report, json)
        }
        Command::Inspect { run, db, json } => {
            let conn = open_existing(&db)?;
            let view = inspect::load(&conn, &run)?.ok_or_else(|| {
                anyhow::anyhow!("no run `{run}` in {} (see `agentflow runs`)", db.display())
            })?;
            if json {
                println!("{}", serde_json::to_string(&view)?);
            } else {
                print!("{}", inspect::render(&view));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Print merge conflicts as text (with diffs) or JSON.
fn print_conflicts(rows: &[agentflow::merge::MergeRow], json: bool) -> anyhow::Result<()> {
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
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no pending conflicts");
    }
    for r in rows {
        println!(
            "conflict {} [{}] {}: {} of run {} (parent task {} ← child task {})\n  why: {}",
            r.id,
            r.category.as_str(),
            r.status,
            escape_guest_text(&r.subject),
            r.run_id,
            r.parent_task,
            r.child_task,
            escape_guest_text(&r.reasoning)
        );
        if let Some(res) = &r.resolution {
            println!("  resolution: {}", escape_guest_text(res));
        }
        println!(
            "  --- task {} (parent) vs base:\n{}",
            r.parent_task,
            indent(&diff(r.base.as_deref(), r.ours.as_deref()))
        );
        println!(
            "  --- task {} (child) vs base:\n{}",
            r.child_task,
            indent(&diff(r.base.as_deref(), Some(&r.theirs)))
        );
        if r.status == "pending" {
            println!(
                "  resolve: agentflow resolve {} --take {} | --take {} | --file F",
                r.id, r.parent_task, r.child_task
            );
        }
    }
    Ok(())
}

/// Each line of `text` indented, its control characters escaped.
fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {}", escape_guest_text(l)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Approve or deny a pending approval.
fn decide(db: &Path, id: u64, approve: bool, note: Option<String>) -> anyhow::Result<ExitCode> {
    require_ledger(db)?;
    let ledger = Ledger::open(db)?;
    let decided = ledger.decide_approval_blocking(id, approve, note)?;
    checkpoint(&ledger);
    match decided {
        Some((run, task)) => {
            println!(
                "{} approval {id}: run {run} task {task}",
                if approve { "approved" } else { "denied" }
            );
            Ok(ExitCode::SUCCESS)
        }
        None => bail!("no pending approval {id} (see `agentflow approvals`)"),
    }
}

/// Retry or reject a pending review.
fn review(db: &Path, id: u64, retry: bool, note: Option<String>) -> anyhow::Result<ExitCode> {
    require_ledger(db)?;
    let ledger = Ledger::open(db)?;
    let decided = agentflow::validation::review::decide_blocking(&ledger, id, retry, note)?;
    checkpoint(&ledger);
    match decided {
        Some((run, task)) => {
            println!(
                "{} review {id}: run {run} task {task}",
                if retry { "retrying" } else { "rejected" }
            );
            Ok(ExitCode::SUCCESS)
        }
        None => bail!("no pending review {id} (see `agentflow reviews`)"),
    }
}

/// Print a ledger check; exit status 1 when the ledger is damaged.
fn print_check(report: &integrity::CheckReport, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        print!("{}", integrity::render(report));
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Close a host before exiting: its ledger's WAL goes into the `.db` file, so the file
/// alone holds every run. Failing to is worth a warning, not an error: nothing is lost.
fn close(host: Host) {
    if let Err(e) = host.close() {
        eprintln!("agentflow: warning: {e}");
    }
}

/// [`close`] for the commands that open only the ledger.
fn checkpoint(ledger: &Ledger) {
    if let Err(e) = ledger.checkpoint(std::time::Duration::from_secs(5)) {
        eprintln!("agentflow: warning: {e}");
    }
}

/// The host configuration from `--config`, or the defaults.
fn load_config(path: Option<&Path>) -> anyhow::Result<HostConfig> {
    match path {
        Some(path) => HostConfig::from_file(path),
        None => Ok(HostConfig::default()),
    }
}

/// Refuse to go on without an existing ledger.
fn require_ledger(db: &Path) -> anyhow::Result<()> {
    if !db.exists() {
        bail!("no ledger at {} (pass --db)", db.display());
    }
    Ok(())
}

fn parse_policy(s: &str) -> Result<agentflow::durability::DivergencePolicy, String> {
    match s {
        "fail" => Ok(agentflow::durability::DivergencePolicy::Fail),
        "from-checkpoint" => Ok(agentflow::durability::DivergencePolicy::FromCheckpoint),
        other => Err(format!("`{other}`: expected fail or from-checkpoint")),
    }
}

/// A command-line mistake as one line (help and version print as clap renders them).
fn usage_error(e: clap::Error) -> ExitCode {
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
    let first = text.lines().next().unwrap_or("bad arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("agentflow: error: {first} (see `agentflow --help`)");
    ExitCode::from(2)
}

/// Print a run's report: the output on stdout and a summary on stderr, or one JSON object.
fn print_report(report: &agentflow::RunReport, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        if let Some(out) = &report.output {
            println!("{out}");
        }
        eprintln!(
            "run {}  {}  tasks {}  tokens {}  cost {}  {:.3}s",
            report.run_id,
            match report.status {
                Status::Completed => "ok",
                Status::Failed => "failed",
                Status::Cancelled => "cancelled",
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
    Ok(if report.status == Status::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn open_existing(db: &Path) -> anyhow::Result<rusqlite::Connection> {
    if !db.exists() {
        bail!(
            "no ledger at {} (run an agent first, or pass --db)",
            db.display()
        );
    }
    // Opening through `Ledger` creates or checks the schema.
    let ledger = Ledger::open(db)?;
    Ok(ledger.reader()?)
}

/// Validator components given as crate directories are built like agents.
fn build_validator_crates(config: &mut HostConfig) -> anyhow::Result<()> {
    for v in &mut config.validators {
        if let Some(component) = v.component_mut()
            && Path::new(component).is_dir()
        {
            *component = build_agent_crate(Path::new(component))?
                .display()
                .to_string();
        }
    }
    Ok(())
}

/// Build an agent crate for wasm32-wasip2 and return the component's path.
fn build_agent_crate(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.exists() {
        bail!(
            "{} is a directory without Cargo.toml: pass a .wasm file or an agent crate",
            dir.display()
        );
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("agentflow: building {} for wasm32-wasip2 …", dir.display());
    let output = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !output.status.success() {
        bail!(
            "building {} failed (is the target installed? run `rustup target add wasm32-wasip2`)",
            dir.display()
        );
    }
    // The component is the `.wasm` that cargo reports for this crate's artifact.
    let local = manifest.canonicalize().ok();
    let mut found = None;
    for message in cargo_metadata::Message::parse_stream(output.stdout.as_slice()) {
        let Ok(cargo_metadata::Message::CompilerArtifact(artifact)) = message else {
            continue;
        };
        if artifact.manifest_path.as_std_path().canonicalize().ok() != local {
            continue;
        }
        if let Some(wasm) = artifact
            .filenames
            .into_iter()
            .rfind(|f| f.extension() == Some("wasm"))
        {
            found = Some(wasm.into_std_path_buf());
        }
    }
    found.ok_or_else(|| {
        anyhow::anyhow!(
            "cargo built {} but produced no .wasm (is it a cdylib?)",
            dir.display()
        )
    })
}
