//! A cluster worker (`agentflow worker`): executes the runs submitted to a
//! PostgreSQL ledger ([`crate::ledger::submissions`]), up to `slots` at once, on this
//! process's [`Host`].
//!
//! The worker claims a submission (and with it the run's lease) in one transaction,
//! then starts the run under the submitted run id — or, when the run exists already
//! because the worker that held it stopped, resumes it by replay: recorded LLM
//! replies and tool results are read back, not asked again, and a side effect that
//! was in doubt when that worker died is handled by its recovery class. The host's
//! heartbeat renews the leases of the runs it executes, so a worker that dies loses
//! them when they go stale and another worker claims them. A worker outlives the
//! database dropping its sessions: a claim that fails is tried again, with backoff,
//! on a session opened anew.

use crate::ledger::offers::OfferClaim;
use crate::ledger::submissions::{Claim, NewSubmission};
use crate::ledger::{self, Ledger, leases::Holder};
use crate::runtime::Runtime;
use crate::{Host, ResumeOptions, RunOptions, RunReport};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A submitted run's options: what `agentflow run` takes beside the component and
/// the input, stored as JSON with the submission.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SubmitOptions {
    #[serde(default)]
    pub grants: Vec<String>,
    pub workspace: Option<PathBuf>,
    pub max_depth: Option<u32>,
    pub budget_usd: Option<f64>,
    pub max_concurrency: Option<u32>,
    pub approval_over_usd: Option<f64>,
}

/// How a worker works.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Runs executed at once; [`OFFERED_PER_SLOT`] times as many offered tasks are
    /// executed beside them.
    pub slots: usize,
    /// How long to wait before looking for work again when there was none.
    pub poll: Duration,
    /// Stop once there has been nothing to do for this long (`None`: never).
    pub exit_when_idle: Option<Duration>,
    /// Once told to stop: how long the runs in hand may take to finish before they
    /// are handed back to the other workers.
    pub drain: Duration,
}

/// What a worker did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WorkerSummary {
    pub started: u64,
    pub resumed: u64,
    pub completed: u64,
    pub failed: u64,
    /// Tasks offered by other workers' runs that this worker executed.
    pub tasks: u64,
    /// Runs (and offered tasks) still in hand when the drain ran out: their leases let go, for another
    /// worker to resume by replay at once.
    pub handed_back: u64,
}

/// Offered tasks executed at once per slot: they mostly wait — for their LLM calls and
/// for the children they offered in turn — and what executes at once is bounded by
/// each run's `max_concurrent_tasks`, kept in the cluster's database.
const OFFERED_PER_SLOT: usize = 16;

/// One run or task of `run_id` less in hand.
fn let_go(in_hand: &mut std::collections::HashMap<String, usize>, run_id: &str) {
    if let Some(n) = in_hand.get_mut(run_id) {
        *n -= 1;
        if *n == 0 {
            in_hand.remove(run_id);
        }
    }
}

/// An offered task given up after this many failures to execute it (recorded failed
/// for its spawner); claims after its workers died do not count.
const MAX_OFFER_FAILURES: i64 = 3;

/// A run given up after this many failed starts (it is left for an operator's
/// `agentflow resume`), so a run that cannot start does not go round the workers.
/// Failed starts, not claims: a run taken over again and again because its workers
/// were killed is not one that cannot start.
const MAX_START_FAILURES: i64 = 3;

/// Queue a run of the component `bytes` for the workers on `ledger`; returns its run
/// id. `runtime` checks first that the bytes are a component of the agent world (and
/// compiles them into its cache).
pub async fn submit(
    runtime: &Runtime,
    ledger: &Ledger,
    agent: &str,
    bytes: Vec<u8>,
    input: &str,
    options: &SubmitOptions,
) -> anyhow::Result<String> {
    if !ledger.is_postgres() {
        anyhow::bail!(
            "submit queues runs for `agentflow worker` processes sharing a PostgreSQL ledger: \
             pass --db postgres://… (on a SQLite ledger, `agentflow run` executes it here)"
        );
    }
    // A file that is not a component of the agent world is refused before it is queued.
    runtime.load_bytes(agent, &bytes)?;
    let new = NewSubmission {
        run_id: crate::new_run_id(),
        agent: agent.to_string(),
        component_hash: ledger::blobs::sha256_hex(&bytes),
        input: input.to_string(),
        options: serde_json::to_string(options)?,
    };
    let run_id = new.run_id.clone();
    ledger.write(move |w| w.submit(&new, &bytes)).await?;
    Ok(run_id)
}

/// Claim and execute submitted runs until idle for `exit_when_idle`, or until `stop`
/// resolves (a signal): then no more runs are claimed, the runs in hand get
/// `opts.drain` to finish, and those still running are handed back — stopped here
/// and their leases let go, so another worker resumes them by replay at once rather
/// than when the leases would go stale. After a hand-back the caller must end the
/// process (or drop the host) without delay: the host's tasks of those runs must not
/// go on beside the worker that resumes them.
pub async fn work(
    host: &Host,
    opts: &WorkerOptions,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<WorkerSummary> {
    if !host.ledger().is_postgres() {
        anyhow::bail!(
            "a worker executes the runs submitted to a PostgreSQL ledger: pass --db postgres://…"
        );
    }
    host.offer_tasks_of_its_runs()?;
    let holder = Holder::this_process();
    let mut summary = WorkerSummary::default();
    let mut running = FuturesUnordered::new();
    // Tasks other workers' runs offered, executed here (`OFFERED_PER_SLOT` per slot).
    let mut tasks = FuturesUnordered::new();
    let mut idle_since = Instant::now();
    // Waited after a claim failed (the database unreachable): doubles to 5 s.
    let mut backoff = opts.poll;
    let mut drain_until: Option<tokio::time::Instant> = None;
    // The runs this worker executes, or executes a task of: how many of each.
    let mut in_hand: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    tokio::pin!(stop);
    loop {
        while drain_until.is_none() && running.len() < opts.slots.max(1) {
            let holder = holder.clone();
            let claim = match host
                .ledger()
                .write(move |w| w.claim_submission(&holder))
                .await
            {
                Ok(claim) => {
                    backoff = opts.poll;
                    claim
                }
                Err(e) => {
                    // The session is opened again at the next statement
                    // ([`ledger::db`]): keep the runs in hand, try again later.
                    tracing::warn!(error = %e, retry_in = ?backoff, "worker: cannot claim work");
                    tokio::time::sleep(backoff).await;
                    backoff =
                        (backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
                    break;
                }
            };
            let Some(claim) = claim else { break };
            if claim.resume {
                summary.resumed += 1;
            } else {
                summary.started += 1;
            }
            *in_hand.entry(claim.run_id.clone()).or_default() += 1;
            let run_id = claim.run_id.clone();
            running.push(async move { (run_id, execute(host, claim).await) });
        }
        while tasks.len() < opts.slots.max(1) * OFFERED_PER_SLOT {
            let holder = holder.clone();
            // Draining: only the tasks of the runs in hand, so that they can finish.
            let only: Option<Vec<String>> = drain_until.map(|_| in_hand.keys().cloned().collect());
            if only.as_ref().is_some_and(Vec::is_empty) {
                break;
            }
            match host
                .ledger()
                .write(move |w| w.claim_offer(&holder, only.as_deref()))
                .await
            {
                Ok(Some(claim)) => {
                    summary.tasks += 1;
                    *in_hand.entry(claim.run_id.clone()).or_default() += 1;
                    let run_id = claim.run_id.clone();
                    tasks.push(async move {
                        execute_task(host, claim).await;
                        run_id
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "worker: cannot claim an offered task");
                    break;
                }
            }
        }
        if running.is_empty() && tasks.is_empty() {
            let idle = opts
                .exit_when_idle
                .is_some_and(|idle| idle_since.elapsed() >= idle);
            if idle || drain_until.is_some() {
                return Ok(summary);
            }
        }
        let drained = async {
            match drain_until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some((run_id, ended)) = running.next() => {
                idle_since = Instant::now();
                let_go(&mut in_hand, &run_id);
                match ended {
                    Some(report) if report.status == ledger::Status::Completed => summary.completed += 1,
                    _ => summary.failed += 1,
                }
            }
            Some(run_id) = tasks.next() => {
                idle_since = Instant::now();
                let_go(&mut in_hand, &run_id);
            }
            () = &mut stop, if drain_until.is_none() => {
                tracing::info!(runs = running.len(), drain = ?opts.drain, "worker: stopping: no more claims, draining");
                drain_until = Some(tokio::time::Instant::now() + opts.drain);
            }
            () = drained => {
                summary.handed_back = (running.len() + tasks.len()) as u64;
                drop(running);
                drop(tasks);
                let holder = holder.clone();
                host.ledger()
                    .write(move |w| {
                        w.release_offers(None, &holder)?;
                        w.release_leases(None, &holder)
                    })
                    .await?;
                tracing::warn!(runs = summary.handed_back, "worker: drain ran out: runs handed back");
                return Ok(summary);
            }
            () = host.ledger().changed_within(opts.poll) => {}
        }
    }
}

/// Start or resume the claimed run; its report, or `None` when it could not run.
async fn execute(host: &Host, claim: Claim) -> Option<RunReport> {
    let verb = if claim.resume { "resuming" } else { "starting" };
    tracing::info!(run = %claim.run_id, agent = %claim.agent, claims = claim.claims, "worker: {verb} run");
    let result = if claim.resume {
        host.resume(&claim.run_id, ResumeOptions::default()).await
    } else {
        start(host, &claim).await
    };
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            tracing::error!(run = %claim.run_id, error = format!("{e:#}"), "worker: run {verb} failed");
            let (run_id, holder) = (claim.run_id.clone(), Holder::this_process());
            let _ = host
                .ledger()
                .write(move |w| {
                    let failures = w.count_start_failure(&run_id)?;
                    if failures >= MAX_START_FAILURES {
                        tracing::error!(run = %run_id, failures, "worker: giving the run up (resume it with `agentflow resume`)");
                        w.finish_submission(&run_id)
                    } else {
                        // Claimable again (here or elsewhere) without waiting for
                        // the lease to go stale: it may have been a passing failure.
                        w.release_leases(Some(&run_id), &holder).map(drop)
                    }
                })
                .await;
            return None;
        }
    };
    tracing::info!(run = %claim.run_id, status = %report.status, "worker: run ended");
    let run_id = claim.run_id.clone();
    if let Err(e) = host
        .ledger()
        .write(move |w| w.finish_submission(&run_id))
        .await
    {
        tracing::error!(run = %claim.run_id, error = %e, "worker: cannot close the submission");
    }
    Some(report)
}

/// Execute a claimed offered task; failures are logged (the run's worker reads the
/// task's end, or the claim goes stale and another worker takes it).
async fn execute_task(host: &Host, claim: OfferClaim) {
    match host.execute_offered(&claim).await {
        Ok(Some(outcome)) => {
            tracing::info!(run = %claim.run_id, task = claim.task_id, ?outcome, "worker: offered task ended");
        }
        Ok(None) => {}
        Err(e) => {
            let error = format!("{e:#}");
            tracing::error!(run = %claim.run_id, task = claim.task_id, error, "worker: offered task failed to run");
            let (run_id, id) = (claim.run_id.clone(), claim.task_id);
            let holder = Holder::this_process();
            let failures = {
                let (run_id, holder) = (run_id.clone(), holder.clone());
                host.ledger()
                    .write(move |w| w.offer_failed(&run_id, id, &holder, MAX_OFFER_FAILURES))
                    .await
            };
            match failures {
                Ok(failures) if failures >= MAX_OFFER_FAILURES => {
                    // Its spawner reads this end and goes on.
                    let why = format!("no worker could run it ({failures} failures): {error}");
                    let _ = host
                        .ledger()
                        .finish_task(
                            run_id.clone(),
                            id,
                            ledger::Status::Failed,
                            None,
                            Some(why),
                            Vec::new(),
                            ledger::Commit::Durable,
                        )
                        .await;
                    let _ = host
                        .ledger()
                        .write(move |w| w.close_offer(&run_id, id))
                        .await;
                }
                // Its claim was let go: another worker (or this one) tries again.
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(run = %claim.run_id, task = id, error = %e, "counting an offered task's failure");
                    let _ = host
                        .ledger()
                        .write(move |w| w.release_offers(Some((&run_id, id)), &holder).map(drop))
                        .await;
                }
            }
        }
    }
}

/// Start a claimed run that has not started yet: its component comes from the ledger.
async fn start(host: &Host, claim: &Claim) -> anyhow::Result<RunReport> {
    let bytes = host
        .ledger()
        .with_reader(|conn| ledger::query::blob(conn, &claim.component_hash))??
        .ok_or_else(|| {
            anyhow::anyhow!(
                "component {} is missing from the ledger",
                claim.component_hash
            )
        })?;
    let agent = host.runtime().load_bytes(&claim.agent, &bytes)?;
    let options: SubmitOptions = serde_json::from_str(&claim.options)?;
    let run = RunOptions {
        grants: options.grants,
        workspace: options.workspace,
        max_depth: options.max_depth,
        budget_usd: options.budget_usd,
        max_concurrency: options.max_concurrency,
        approval_over_usd: options.approval_over_usd,
        run_id: Some(claim.run_id.clone()),
        ..RunOptions::default()
    };
    host.run(agent, &claim.input, run).await
}
