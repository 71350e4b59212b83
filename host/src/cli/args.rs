//! The `agentflow` command line as clap parses it: the subcommands, their flags, and
//! the value parsers that turn arguments into library types. Nothing here runs.

use agentflow::ledger::Status;
use agentflow::replay::DivergencePolicy;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Run AI agents compiled to WebAssembly components: sandboxed, budgeted, recorded.
#[derive(Parser)]
#[command(name = "agentflow", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// `--db`, shared by every command that works on a ledger.
#[derive(Args)]
pub struct Db {
    /// Ledger database: a SQLite file (its performance history is kept beside it), or
    /// a `postgres://` URL (a cluster's shared ledger).
    #[arg(
        long = "db",
        id = "db",
        value_name = "DB",
        env = "AGENTFLOW_DB",
        default_value = "agentflow.db"
    )]
    pub path: PathBuf,
}

/// The agent and its input, shared by `run` and `submit`.
#[derive(Args)]
pub struct AgentInput {
    /// Path to a component (.wasm) or to an agent crate directory.
    pub agent: PathBuf,
    /// The agent's input.
    #[arg(long, conflicts_with = "input_file")]
    pub input: Option<String>,
    /// Read the agent's input from a file: its bytes as they are, a final newline
    /// included (UTF-8).
    #[arg(long, value_name = "FILE")]
    pub input_file: Option<PathBuf>,
}

/// What a run is granted and held to, shared by `run` and `submit`.
#[derive(Args)]
pub struct RunLimits {
    /// Grant a tool to the run (kv, workspace, http_fetch, or an installed tool
    /// component's name); repeatable.
    #[arg(long = "grant", value_name = "TOOL")]
    pub grants: Vec<String>,
    /// Directory the workspace tool may use.
    #[arg(long)]
    pub workspace: Option<PathBuf>,
    /// Deepest allowed sub-agent (root = 0).
    #[arg(long)]
    pub max_depth: Option<u32>,
    /// Total USD the run may spend on LLM calls.
    #[arg(long)]
    pub budget_usd: Option<f64>,
    /// Tasks of the run executing at once (more are queued).
    #[arg(long)]
    pub max_concurrency: Option<u32>,
    /// Children whose estimated cost is over this (USD) wait for a human's approval.
    #[arg(long)]
    pub require_approval_over_usd: Option<f64>,
}

/// `--json`, shared by every command that prints a result.
#[derive(Args)]
pub struct Json {
    /// Print JSON on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `--detach`, shared by `run` and `resume`.
#[derive(Args)]
pub struct Detach {
    /// Stop when every task waits for a human (approval, review, conflict): the run
    /// stays unfinished, exit status 3; decide, then `agentflow resume RUN`.
    #[arg(long = "detach", visible_alias = "no-wait")]
    pub on: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run an agent (a .wasm component, or a Rust agent crate directory to build first).
    Run {
        #[command(flatten)]
        agent: AgentInput,
        #[command(flatten)]
        db: Db,
        /// Host configuration (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        limits: RunLimits,
        /// When a resumed task's replay diverges: fail or from-checkpoint.
        #[arg(long, value_parser = parse_policy)]
        on_divergence: Option<DivergencePolicy>,
        /// Wall-clock time each task may take (sets [limits] wall_ms; default 10m), e.g.
        /// 30s, 500ms, 2h.
        #[arg(long, value_parser = agentflow::supervisor::limits::parse_duration_ms, value_name = "DURATION")]
        timeout: Option<u64>,
        /// Show no progress on stderr (by default: the live task tree on a terminal,
        /// one line per task start and end otherwise).
        #[arg(long, short = 'q')]
        quiet: bool,
        #[command(flatten)]
        detach: Detach,
        #[command(flatten)]
        out: Json,
    },
    /// Resume a run that did not finish (crash, kill): replay its ledger, continue live.
    Resume {
        /// Run id (or a unique prefix).
        run: String,
        #[command(flatten)]
        db: Db,
        /// Host configuration (TOML). Default: the one the run was started with, as
        /// recorded in the ledger; a file that differs is refused, key by key.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Resume even if the component or the configuration changed.
        #[arg(long)]
        allow_changed: bool,
        /// Run this component instead of the one stored with the run.
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Continue a failed run: re-run its failed tasks, replaying their recorded
        /// calls up to where each failure began.
        #[arg(long)]
        retry_failed: bool,
        #[command(flatten)]
        detach: Detach,
        #[command(flatten)]
        out: Json,
    },
    /// Print a run's recovery plan (Resume / Rollback / RequiresHuman per task); with
    /// --apply, run the rollbacks and resume the run when nothing needs a human.
    Recover {
        /// Run id (or a unique prefix).
        run: String,
        #[command(flatten)]
        db: Db,
        /// Host configuration (TOML): tools for the rollbacks, providers for the resume.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Run the rollbacks and resume the run, instead of only printing the plan.
        #[arg(long)]
        apply: bool,
        #[command(flatten)]
        out: Json,
    },
    /// Cancel a run, or with --task a subtree: its host stops the tasks (or, with no
    /// live host, the ledger marks them cancelled); compensations are offered, not run.
    Cancel {
        /// Run id (or a unique prefix).
        run: String,
        /// Cancel this task and its descendants instead of the whole run.
        #[arg(long)]
        task: Option<u64>,
        /// Why (recorded as the tasks' error).
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        db: Db,
        #[command(flatten)]
        out: Json,
    },
    /// Settle a side effect in doubt after a crash (`recover` says RequiresHuman): say
    /// whether the call happened, then resume the run.
    Settle {
        /// Run id (or a unique prefix).
        run: String,
        /// The in-doubt intent's event seq (shown by `agentflow recover`).
        intent: u64,
        /// The call acted: the guest gets --result (JSON; default null) on resume.
        #[arg(
            long,
            conflicts_with = "did_not_happen",
            required_unless_present = "did_not_happen"
        )]
        happened: bool,
        /// The call did not act: it runs again on resume.
        #[arg(long)]
        did_not_happen: bool,
        /// The call's result as the guest should see it (JSON), with --happened.
        #[arg(long, requires = "happened", value_name = "JSON")]
        result: Option<String>,
        /// Why (recorded with the answer).
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        db: Db,
        #[command(flatten)]
        out: Json,
    },
    /// Start a new run that replays <run> up to root event --at and continues live
    /// (optionally pinned to another model): "what would it have done with …?"
    Fork {
        /// Run id (or a unique prefix).
        run: String,
        /// Root task event seq to replay up to (see `agentflow events <run> --task 1`).
        #[arg(long, value_name = "SEQ")]
        at: u64,
        /// Model every live LLM call of the fork uses.
        #[arg(long)]
        model: Option<String>,
        /// Fork even though the run made side-effecting calls after --at: the fork
        /// makes them again, live.
        #[arg(long)]
        live_effects: bool,
        #[command(flatten)]
        db: Db,
        /// Host configuration (TOML): providers and model catalog.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        out: Json,
    },
    /// Compare two runs: the first divergence (by event seq) and the differences in
    /// outcome, cost, tokens.
    Diff {
        /// The first run's id (or a unique prefix).
        a: String,
        /// The second run's id (or a unique prefix).
        b: String,
        #[command(flatten)]
        db: Db,
        #[command(flatten)]
        out: Json,
    },
    /// Calibrate a judge: run the first judge validator of <judge-config> over labelled
    /// outputs (JSON lines `{task, output, label: pass|fail}`) and report its
    /// false-positive and false-negative rates.
    Eval {
        /// Host configuration (TOML) with a `[[validators]]` entry of kind "judge".
        judge_config: PathBuf,
        /// The labelled outputs: JSON lines `{task, output, label: pass|fail}`.
        labelled: PathBuf,
        #[command(flatten)]
        db: Db,
        #[command(flatten)]
        out: Json,
    },
    /// List merge conflicts waiting for a human (or every merge with --all), with each
    /// side's diff against the common base and the reasoning.
    Conflicts {
        #[command(flatten)]
        db: Db,
        /// Every merge, not only the pending conflicts.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        out: Json,
    },
    /// Resolve a pending conflict: keep one task's version (`--take TASK`) or use a
    /// file's content (`--file F`); the waiting join continues (resume the run if its
    /// host stopped).
    #[command(group(clap::ArgGroup::new("resolution").required(true).args(["take", "file"])))]
    Resolve {
        /// Conflict id (see `agentflow conflicts`).
        id: u64,
        /// Keep this task's version (the parent's or the child's task id).
        #[arg(long, value_name = "TASK")]
        take: Option<u64>,
        /// Use this file's content as the resolution.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Why, kept with the decision.
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        db: Db,
    },
    /// List approval requests (pending ones, or all with --all).
    Approvals {
        #[command(flatten)]
        db: Db,
        /// Every request, decided ones too.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        out: Json,
    },
    /// Approve a pending request: the waiting task starts (resume the run if its host stopped).
    Approve {
        /// Approval id (see `agentflow approvals`).
        id: u64,
        /// Why, kept with the decision.
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        db: Db,
    },
    /// Deny a pending request: the waiting task fails with the note.
    Deny {
        /// Approval id (see `agentflow approvals`).
        id: u64,
        /// Why: the task fails with it.
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        db: Db,
    },
    /// List validation failures waiting for a human (`[retry] <category> = "human"`),
    /// pending ones or all with --all.
    Reviews {
        #[command(flatten)]
        db: Db,
        /// Every review, decided ones too.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        out: Json,
    },
    /// Retry the task of a pending review, with --note as guidance for the new attempt
    /// (resume the run if its host stopped).
    Retry {
        /// Review id (see `agentflow reviews`).
        id: u64,
        /// Guidance for the new attempt.
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        db: Db,
    },
    /// Reject the output of a pending review: the task fails with the note.
    Reject {
        /// Review id (see `agentflow reviews`).
        id: u64,
        /// Why: the task fails with it.
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        db: Db,
    },
    /// List a run's semantic checkpoints.
    Checkpoints {
        /// Run id (or a unique prefix).
        run: String,
        #[command(flatten)]
        db: Db,
        #[command(flatten)]
        out: Json,
    },
    /// List runs, newest first, with their start time (UTC); forks are marked with the
    /// run and seq they were forked at.
    Runs {
        #[command(flatten)]
        db: Db,
        /// List at most this many runs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only runs started at or after WHEN: a UTC date or date-time (2026-12-01,
        /// 2026-12-01T09:30Z) or a duration ago (30m, 2h, 7d).
        #[arg(long, value_name = "WHEN", value_parser = parse_since)]
        since: Option<i64>,
        /// Only runs with this status: running, interrupted (its host stopped),
        /// completed, failed or cancelled.
        #[arg(long, value_parser = parse_status)]
        status: Option<Status>,
        /// Only runs of this agent (its name as the list shows it).
        #[arg(long)]
        agent: Option<String>,
        #[command(flatten)]
        out: Json,
    },
    /// List a run's events: task, seq, kind, status, model, tokens and cost of each
    /// (the seqs `fork --at` takes).
    Events {
        /// Run id (or a unique prefix).
        run: String,
        /// Only this task's events (the root is task 1).
        #[arg(long)]
        task: Option<u64>,
        #[command(flatten)]
        db: Db,
        #[command(flatten)]
        out: Json,
    },
    /// Create a crate to start from (`new agent NAME`, `new tool NAME`) that tests and builds.
    #[command(subcommand)]
    New(super::new::NewCommand),
    /// Print a shell completion script, e.g. `agentflow completions bash >
    /// ~/.local/share/bash-completion/completions/agentflow`.
    Completions {
        /// The shell: bash, elvish, fish, powershell or zsh.
        shell: clap_complete::Shell,
    },
    /// Serve the web dashboard: runs, each run's cost tree (live), pending decisions
    /// to approve, retry or resolve, and the models. Loopback only unless --token.
    Serve {
        #[command(flatten)]
        db: Db,
        /// Address to listen on (port 0: any free port, printed on stderr).
        #[arg(long, default_value = "127.0.0.1:7878")]
        addr: std::net::SocketAddr,
        /// Require `Authorization: Bearer TOKEN` on every request (a browser opens
        /// /?token=TOKEN once); needed to listen off loopback. At least 16 characters.
        #[arg(long, env = "AGENTFLOW_SERVE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Host configuration (TOML) holding the model catalog the models page shows;
        /// default: the built-in mock catalog.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Show the model catalog with each model's health, quota use and statistics.
    Models {
        /// Host configuration (TOML) holding the catalog; default: the built-in mock catalog.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        db: Db,
        #[command(flatten)]
        out: Json,
    },
    /// Check a ledger: integrity (PRAGMA quick_check), schema version, the runs that
    /// can be resumed. Exit status 1 when it is damaged.
    Check {
        /// The ledger database (a SQLite file, or a `postgres://` URL).
        db: PathBuf,
        #[command(flatten)]
        out: Json,
    },
    /// Copy a ledger to a new file: one consistent snapshot, even while hosts write to
    /// it, complete without its -wal file. The copy is checked like `agentflow check`.
    Backup {
        /// The ledger database.
        db: PathBuf,
        /// The new file to write (never overwritten).
        to: PathBuf,
        #[command(flatten)]
        out: Json,
    },
    /// Why did the run do this? From a side effect (a tool call), walk back through the
    /// reasoning steps, LLM calls, tool results and spawns that led to it, in its task
    /// and its ancestors, newest first, with cost.
    Why {
        /// Run id (or a unique prefix).
        run: String,
        /// The effect's task (default: any task of the run).
        #[arg(long)]
        task: Option<u64>,
        /// The effect's event seq, as `agentflow events` lists it: a tools.intent or
        /// tools.call (default: the latest tool call).
        #[arg(long, value_name = "SEQ", conflicts_with = "tool")]
        effect: Option<u64>,
        /// Start from the latest call of this tool.
        #[arg(long, value_name = "NAME")]
        tool: Option<String>,
        #[command(flatten)]
        db: Db,
        #[command(flatten)]
        out: Json,
    },
    /// Print the ledger's metrics in the Prometheus text format (what the dashboard's
    /// /metrics serves): LLM and tool calls, errors and latency per agent and model,
    /// tokens, cost, tasks and runs by status, budget used.
    Metrics {
        #[command(flatten)]
        db: Db,
    },
    /// Send a run's spans (run, tasks, LLM and tool calls, validations, merges, with the
    /// reasoning steps) to an OpenTelemetry collector over OTLP/HTTP — the spans a live
    /// export sent, ids included.
    #[command(name = "export-otlp")]
    ExportOtlp {
        /// Run id (or a unique prefix).
        run: String,
        /// OTLP/HTTP base URL (spans go to URL/v1/traces); default `[observe]
        /// otlp_endpoint` of --config, else OTEL_EXPORTER_OTLP_ENDPOINT.
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// Host configuration (TOML) whose `[observe]` section to use.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        db: Db,
        #[command(flatten)]
        out: Json,
    },
    /// Show a run's task tree: model, cost, tokens, duration and reasoning steps.
    Inspect {
        /// Run id (or a unique prefix).
        run: String,
        /// Instead: each task's cost against its validation verdict and quality score,
        /// the expensive-but-worthless tasks first.
        #[arg(long)]
        roi: bool,
        #[command(flatten)]
        db: Db,
        #[command(flatten)]
        out: Json,
    },
    /// Install, list and remove tool components (`agentflow tools install <tool.wasm |
    /// crate-dir>`, `tools list`, `tools remove NAME`).
    Tools {
        #[command(subcommand)]
        command: super::tools::ToolsCommand,
    },
    /// Queue a run for the workers of a PostgreSQL ledger, without executing it; prints its run id.
    Submit(super::cluster::SubmitArgs),
    /// Execute the runs submitted to a PostgreSQL ledger; take over those whose worker stopped.
    Worker(super::cluster::WorkerArgs),
    /// How the same agent's outputs and validation pass rates changed across runs and
    /// models, for each input it ran on more than once; and per model and UTC day, the
    /// failure rate and quality score of the tasks that used it.
    Drift {
        /// Only this agent (its name as `agentflow runs` shows it).
        #[arg(long)]
        agent: Option<String>,
        /// Only tasks started at or after WHEN: a UTC date or date-time (2026-12-01,
        /// 2026-12-01T09:30Z) or a duration ago (30m, 2h, 7d).
        #[arg(long, value_name = "WHEN", value_parser = parse_since)]
        since: Option<i64>,
        #[command(flatten)]
        db: Db,
        #[command(flatten)]
        out: Json,
    },
}

/// The agent's input: `--input`, the content of `--input-file`, or empty.
pub fn input(text: Option<String>, file: Option<PathBuf>) -> anyhow::Result<String> {
    Ok(match (text, file) {
        (Some(text), _) => text,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read input file {}", path.display()))?,
        (None, None) => String::new(),
    })
}

fn parse_since(s: &str) -> Result<i64, String> {
    agentflow::observe::when::parse_since(s, agentflow::ledger::now_ms())
}

fn parse_status(s: &str) -> Result<Status, String> {
    Status::parse(s)
        .filter(|s| *s != Status::Pending)
        .ok_or_else(|| {
            format!("`{s}`: expected running, interrupted, completed, failed or cancelled")
        })
}

fn parse_policy(s: &str) -> Result<DivergencePolicy, String> {
    match s {
        "fail" => Ok(DivergencePolicy::Fail),
        "from-checkpoint" => Ok(DivergencePolicy::FromCheckpoint),
        other => Err(format!("`{other}`: expected fail or from-checkpoint")),
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// `agentflow <command> --help` explains every command, argument and option.
    #[test]
    fn every_command_and_option_has_help_text() {
        let cli = Cli::command();
        cli.clone().debug_assert();
        let mut missing = Vec::new();
        for command in cli.get_subcommands() {
            if command.get_about().is_none() {
                missing.push(command.get_name().to_string());
            }
            for arg in command.get_arguments() {
                if arg.get_help().is_none() && !arg.is_hide_set() {
                    missing.push(format!("{} {}", command.get_name(), arg.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
