//! The `agentflow` command line: parse, call the library, print. No logic lives here:
//! the flags are in [`cli::args`], the output in [`cli::print`], and what a command
//! computes in the `agentflow` library.

mod cli;

use agentflow::attempts::{calibrate, review};
use agentflow::durability::settle;
use agentflow::guest_text::escape_guest_text;
use agentflow::ledger::{existing, integrity, query, query_events};
use agentflow::merge::resolve::{self, Decision};
use agentflow::observe::{self, inspect};
use agentflow::runs::telemetry;
use agentflow::{HostConfig, ResumeOptions, RunOptions};
use clap::Parser;
use cli::args::{Cli, Command};
use cli::build;
use cli::host::{with_host, with_ledger, with_ledger_async};
use cli::out::outln;
use cli::print::usage_error;
use cli::print::{self, json_or, no_run};
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AGENTFLOW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(cli::out::colour_stderr())
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
            db,
            config,
            limits: granted,
            on_divergence,
            timeout,
            quiet,
            detach,
            out,
        } => {
            let mut config = HostConfig::from_file_or_default(config.as_deref())?;
            if let Some(ms) = timeout {
                config.limits.wall_ms = ms;
            }
            let limits = config.limits.summary();
            let cache_dir = config.cache_dir();
            build::build_validator_crates(&mut config.validators, &cache_dir)?;
            let input = cli::args::input(agent.input, agent.input_file)?;
            let wasm = build::component(agent.agent, &cache_dir)?;
            let options = RunOptions {
                grants: granted.grants,
                workspace: granted.workspace,
                max_depth: granted.max_depth,
                budget_usd: granted.budget_usd,
                on_divergence,
                max_concurrency: granted.max_concurrency,
                approval_over_usd: granted.require_approval_over_usd,
                run_id: Some(agentflow::new_run_id()),
                detach: detach.on,
            };
            let run_id = options.run_id.clone().unwrap_or_default();
            // Printed before the host closes: closing waits for background evaluations.
            with_host(config, &db.path, async |host| {
                // The component loads first: a file that is not one starts no run.
                let agent = host.runtime().load_file(&wasm)?;
                if !quiet {
                    eprintln!(
                        "agentflow: run {run_id} started (ledger {})",
                        agentflow::ledger::db::redact(&db.path.to_string_lossy())
                    );
                }
                let live = cli::progress::Live::start(
                    &db.path,
                    &run_id,
                    cli::progress::Mode::for_stderr(quiet),
                );
                let report = host.run(agent, &input, options).await;
                live.stop();
                let report = report?;
                if !out.json && !quiet {
                    eprintln!("{limits}");
                }
                print::report(&report, out.json, &db.path)
            })
        }
        Command::Resume {
            run,
            db,
            config,
            allow_changed,
            agent,
            retry_failed,
            detach,
            out,
        } => {
            existing::require(&db.path)?;
            let config = run_config(config.as_deref(), &db.path, &run)?;
            let options = ResumeOptions {
                allow_changed,
                agent_file: agent,
                retry_failed,
                detach: detach.on,
            };
            let report = with_host(config, &db.path, async |host| {
                host.resume(&run, options).await
            })?;
            print::report(&report, out.json, &db.path)
        }
        Command::Recover {
            run,
            db,
            config,
            apply,
            out,
        } => {
            existing::require(&db.path)?;
            let config = run_config(config.as_deref(), &db.path, &run)?;
            let (plan, compensations, resumed) = with_host(config, &db.path, async |host| {
                host.recover(&run, apply).await
            })?;
            print::recovery(&plan, compensations, resumed.as_ref(), apply, out.json)?;
            let waits = agentflow::durability::recovery::waits_for_human(&plan);
            if apply && !waits.is_empty() {
                eprintln!(
                    "agentflow: run {} waits for a human: check the affected system, then {}",
                    plan.run_id,
                    waits.join("; and ")
                );
                return Ok(ExitCode::from(3));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Fork {
            run,
            at,
            model,
            live_effects,
            db,
            config,
            out,
        } => {
            existing::require(&db.path)?;
            let config = run_config(config.as_deref(), &db.path, &run)?;
            let report = with_host(config, &db.path, async |host| {
                host.fork(&run, at, model, live_effects).await
            })?;
            print::report(&report, out.json, &db.path)
        }
        Command::Settle {
            run,
            intent,
            happened,
            did_not_happen: _,
            result,
            note,
            db,
            out,
        } => {
            let answer = if happened {
                let result = match result {
                    Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
                        anyhow::anyhow!("--result must be JSON (quote a string: '\"done\"'): {e}")
                    })?),
                    None => None,
                };
                settle::Answer::Happened { result }
            } else {
                settle::Answer::DidNotHappen
            };
            existing::require(&db.path)?;
            let settled = with_ledger_async(&db.path, async |l| {
                settle::settle(l, &run, intent, answer, note).await
            })?;
            json_or(out.json, &settled, print::settled)
        }
        Command::Cancel {
            run,
            task,
            note,
            db,
            out,
        } => {
            existing::require(&db.path)?;
            let cancelled = with_ledger_async(&db.path, async |l| {
                agentflow::runs::cancel::cancel(l, &run, task, note).await
            })?;
            json_or(out.json, &cancelled, agentflow::runs::cancel::render)
        }
        Command::Diff { a, b, db, out } => {
            let d = observe::diff::diff(&existing::reader(&db.path)?, &a, &b)?;
            json_or(out.json, &d, observe::diff::render)
        }
        Command::Eval {
            judge_config,
            labelled,
            db,
            out,
        } => {
            let config = HostConfig::from_file(&judge_config)?;
            let judge = calibrate::first_judge(&config.validators)
                .cloned()
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{} has no [[validators]] entry of kind \"judge\"",
                        judge_config.display()
                    )
                })?;
            let report = with_host(config, &db.path, async |host| {
                calibrate::calibrate(host.scheduler(), &judge, &labelled).await
            })?;
            json_or(out.json, &report, print::calibration)
        }
        Command::Approvals { db, all, out } => {
            let rows = query::approvals(&existing::reader(&db.path)?, all)?;
            json_or(out.json, &rows[..], print::approvals)
        }
        Command::Reviews { db, all, out } => {
            let rows = review::list(&existing::reader(&db.path)?, all)?;
            json_or(out.json, &rows[..], review::render)
        }
        Command::Retry { id, note, db } => {
            let decided = with_ledger(&db.path, |l| {
                Ok(review::decide_blocking(l, id, true, note)?)
            })?;
            print::decided("retrying", "review", id, decided, "reviews", &db.path)
        }
        Command::Reject { id, note, db } => {
            let decided = with_ledger(&db.path, |l| {
                Ok(review::decide_blocking(l, id, false, note)?)
            })?;
            print::decided("rejected", "review", id, decided, "reviews", &db.path)
        }
        Command::Conflicts { db, all, out } => {
            let rows = resolve::conflicts(&existing::reader(&db.path)?, all)?;
            print::conflicts(&rows, out.json)
        }
        Command::Resolve {
            id,
            take,
            file,
            note,
            db,
        } => {
            existing::require(&db.path)?;
            let decision = match (take, file) {
                (Some(task), _) => Decision::Take(task),
                (None, Some(f)) => Decision::Text(
                    std::fs::read_to_string(&f)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?,
                ),
                // clap requires one of them.
                (None, None) => anyhow::bail!("give --take TASK or --file F"),
            };
            let row = with_ledger(&db.path, |l| resolve::resolve(l, id, decision, note))?;
            print::resolved(id, row, &db.path)
        }
        Command::Approve { id, note, db } => {
            let decided =
                with_ledger(
                    &db.path,
                    |l| Ok(l.decide_approval_blocking(id, true, note)?),
                )?;
            print::decided("approved", "approval", id, decided, "approvals", &db.path)
        }
        Command::Deny { id, note, db } => {
            let decided = with_ledger(&db.path, |l| {
                Ok(l.decide_approval_blocking(id, false, note)?)
            })?;
            print::decided("denied", "approval", id, decided, "approvals", &db.path)
        }
        Command::Checkpoints { run, db, out } => {
            let rows = query::run_checkpoints(&existing::reader(&db.path)?, &run)?
                .ok_or_else(|| no_run(&run, &db.path))?;
            json_or(out.json, &rows[..], print::checkpoints)
        }
        Command::Runs {
            db,
            limit,
            since,
            status,
            agent,
            out,
        } => {
            let filter = query::RunFilter {
                limit,
                since_ms: since,
                status,
                agent,
            };
            let reader = existing::reader(&db.path)?;
            let runs = query::runs(&reader, &filter)?;
            let queued = agentflow::ledger::submissions::queued(&reader)?;
            if queued > 0 && !out.json {
                eprintln!("agentflow: {queued} submitted run(s) wait for a worker");
            }
            json_or(out.json, &runs[..], inspect::render_runs)
        }
        Command::Events { run, task, db, out } => {
            let reader = existing::reader(&db.path)?;
            let row = query::run(&reader, &run)?.ok_or_else(|| no_run(&run, &db.path))?;
            let events = query_events::event_lines(&reader, &row.run_id, task)?;
            if events.is_empty()
                && let Some(task) = task
            {
                anyhow::bail!("run {} has no task {task}", row.run_id);
            }
            json_or(out.json, &events[..], observe::events::render)
        }
        Command::New(what) => cli::new::run(what),
        Command::Completions { shell } => {
            // Into a buffer first: clap_complete panics on a failed write.
            let mut script = Vec::new();
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "agentflow", &mut script);
            cli::out::write(format_args!("{}", String::from_utf8_lossy(&script)))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            db,
            addr,
            token,
            config,
        } => {
            let options = agentflow::serve::ServeOptions {
                db: db.path,
                addr,
                token,
                config: HostConfig::from_file_or_default(config.as_deref())?,
            };
            let db = options.db.display().to_string();
            let guarded = match options.token {
                Some(_) => "; every request needs the token (a browser: open /?token=TOKEN once)",
                None => "",
            };
            tokio::runtime::Runtime::new()?.block_on(agentflow::serve::serve(options, |at| {
                eprintln!(
                    "agentflow: dashboard of {db} at http://{at}/ (Ctrl-C stops it){guarded}"
                );
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Models { config, db, out } => {
            let config = HostConfig::from_file_or_default(config.as_deref())?;
            let models = observe::models::load(&config, &db.path)?;
            json_or(out.json, &models[..], observe::models::render)
        }
        Command::Check { db, out } => print::check(&integrity::check(&db)?, out.json),
        Command::Backup { db, to, out } => {
            let report = integrity::backup(&db, &to)?;
            if !out.json {
                outln!("backed up {} to {}", db.display(), to.display())?;
            }
            print::check(&report, out.json)
        }
        Command::Why {
            run,
            task,
            effect,
            tool,
            db,
            out,
        } => {
            let target = observe::why::Target { task, effect, tool };
            let why = observe::why::why(&existing::reader(&db.path)?, &run, &target)?
                .ok_or_else(|| no_run(&run, &db.path))?;
            json_or(out.json, &why, observe::why::render)
        }
        Command::Metrics { db } => {
            let text = observe::metrics_export::prometheus_text(&existing::reader(&db.path)?)?;
            cli::out::write(format_args!("{text}"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ExportOtlp {
            run,
            endpoint,
            config,
            db,
            out,
        } => {
            let mut observe = HostConfig::from_file_or_default(config.as_deref())?.observe;
            if endpoint.is_some() {
                observe.otlp_endpoint = endpoint;
            }
            let target = telemetry::Target::of(&observe).ok_or_else(|| {
                anyhow::anyhow!(
                    "no OTLP endpoint: give --endpoint URL, [observe] otlp_endpoint or \
                     OTEL_EXPORTER_OTLP_ENDPOINT"
                )
            })?;
            let exported = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(telemetry::export_run(&db.path, &run, target))?;
            json_or(out.json, &exported, print::exported)
        }
        Command::Inspect { run, roi, db, out } => {
            let reader = existing::reader(&db.path)?;
            if roi {
                let report =
                    observe::roi::load(&reader, &run)?.ok_or_else(|| no_run(&run, &db.path))?;
                return json_or(out.json, &report, observe::roi::render);
            }
            let view = inspect::load(&reader, &run)?.ok_or_else(|| no_run(&run, &db.path))?;
            json_or(out.json, &view, inspect::render)
        }
        Command::Tools { command } => cli::tools::run(command),
        Command::Submit(args) => cli::cluster::submit(args).map(|()| ExitCode::SUCCESS),
        Command::Worker(args) => cli::cluster::work(args).map(|()| ExitCode::SUCCESS),
        Command::Drift {
            agent,
            since,
            db,
            out,
        } => {
            let filter = observe::drift::DriftFilter {
                agent,
                since_ms: since,
            };
            let report = observe::drift::drift(&existing::reader(&db.path)?, &filter)?;
            json_or(out.json, &report, observe::drift::render)
        }
    }
}

/// The configuration to resume, recover or fork run `run` with: the `--config` file
/// (its validator crates built) when given — `resume` then refuses it if it differs
/// from the recorded one — else the configuration the run was started with.
fn run_config(
    path: Option<&std::path::Path>,
    db: &std::path::Path,
    run: &str,
) -> anyhow::Result<HostConfig> {
    if let Some(path) = path {
        let mut config = HostConfig::from_file(path)?;
        let cache_dir = config.cache_dir();
        build::build_validator_crates(&mut config.validators, &cache_dir)?;
        return Ok(config);
    }
    Ok(match agentflow::runs::recorded::of_run(db, run)? {
        Some(config) => config,
        None => {
            tracing::warn!(
                run,
                "the run recorded no configuration (an older host): using the defaults; give --config"
            );
            HostConfig::default()
        }
    })
}
