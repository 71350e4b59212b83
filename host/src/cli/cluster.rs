//! `agentflow submit` and `agentflow worker`: runs queued in a PostgreSQL ledger and
//! executed by a pool of worker processes ([`agentflow::runs::worker`]).

use super::args::{AgentInput, Db, RunLimits};
use super::build;
use super::host::with_host;
use agentflow::HostConfig;
use agentflow::runs::worker::{self, SubmitOptions, WorkerOptions};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// `agentflow submit`.
#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    agent: AgentInput,
    #[command(flatten)]
    db: Db,
    /// The run's grants and limits (`--workspace` is a directory of the worker's machine).
    #[command(flatten)]
    limits: RunLimits,
    /// Print `{"run_id": …}` instead of the bare run id.
    #[arg(long)]
    json: bool,
}

/// `agentflow worker`.
#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    db: Db,
    /// Host configuration (TOML): providers, models, tools, limits.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Runs executed at once; as many tasks other workers' runs offer are executed
    /// beside them.
    #[arg(long, default_value_t = 2)]
    slots: usize,
    /// Stop after this many seconds with nothing to do (default: run until stopped).
    #[arg(long, value_name = "SECS")]
    exit_when_idle: Option<f64>,
    /// On SIGTERM or Ctrl-C: claim nothing more and give the runs in hand this many
    /// seconds to finish; the rest are handed back to the other workers at once.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    drain_secs: f64,
}

/// Queue a run; prints its id.
pub fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let config = HostConfig::default();
    let cache_dir = config.cache_dir();
    let input = super::args::input(args.agent.input, args.agent.input_file)?;
    let wasm = build::component(args.agent.agent, &cache_dir)?;
    let name = wasm
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "agent".into());
    let bytes = std::fs::read(&wasm)?;
    let limits = args.limits;
    let options = SubmitOptions {
        grants: limits.grants,
        workspace: limits.workspace,
        max_depth: limits.max_depth,
        budget_usd: limits.budget_usd,
        max_concurrency: limits.max_concurrency,
        approval_over_usd: limits.require_approval_over_usd,
    };
    let run_id = with_host(config, &args.db.path, async |host| {
        worker::submit(
            host.runtime(),
            host.ledger(),
            &name,
            bytes,
            &input,
            &options,
        )
        .await
    })?;
    if args.json {
        println!("{}", serde_json::json!({ "run_id": run_id }));
    } else {
        println!("{run_id}");
    }
    Ok(())
}

/// Execute submitted runs until killed (or idle).
pub fn work(args: WorkerArgs) -> anyhow::Result<()> {
    let mut config = HostConfig::from_file_or_default(args.config.as_deref())?;
    let cache_dir = config.cache_dir();
    build::build_validator_crates(&mut config.validators, &cache_dir)?;
    let opts = WorkerOptions {
        slots: args.slots,
        poll: Duration::from_millis(200),
        exit_when_idle: args.exit_when_idle.map(Duration::from_secs_f64),
        drain: Duration::from_secs_f64(args.drain_secs.max(0.0)),
    };
    eprintln!(
        "agentflow worker: pid {}, {} slot(s), ledger {}",
        std::process::id(),
        opts.slots,
        agentflow::ledger::db::redact(&args.db.path.to_string_lossy())
    );
    let summary = with_host(config, &args.db.path, async |host| {
        let summary = worker::work(host, &opts, stop_signal()).await?;
        if summary.handed_back > 0 {
            // Their tasks must not go on beside the worker that resumes them.
            report(&summary);
            std::process::exit(0);
        }
        Ok(summary)
    })?;
    report(&summary);
    Ok(())
}

fn report(summary: &worker::WorkerSummary) {
    eprintln!(
        "agentflow worker: started {}, resumed {}, completed {}, failed {}, offered tasks executed {}, handed back {}",
        summary.started,
        summary.resumed,
        summary.completed,
        summary.failed,
        summary.tasks,
        summary.handed_back
    );
}

/// Resolves at SIGTERM (what service managers and `kill` send) or Ctrl-C. The
/// handlers are installed now, not when first polled: a signal from here on stops the
/// worker rather than killing it.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            (term, _) => {
                tracing::warn!(error = ?term.err(), "cannot listen for SIGTERM: Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
