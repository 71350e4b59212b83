//! Run one task: a fresh store, the agent instantiated from its `InstancePre`, `run`
//! called with the task's input, under the run's limits.
//!
//! Limits enforced here: memory (the store's `ResourceLimiter`), CPU (epoch ticks:
//! the guest yields to other agents every tick and is stopped when its CPU budget is
//! spent), wall-clock time (a timeout around the whole call), output size, and the
//! stdout/stderr bounds. Whatever happens — trap, limit, bad output — becomes a
//! [`TaskOutcome`] with a clear message; the host itself never goes down with a guest.

use super::LoadedAgent;
use super::state::{AgentState, Kill};
use super::stdio::BoundedCapture;
use crate::bindings::checkpoint::Checkpoint;
use crate::capabilities::{TaskCtx, wasi};
use crate::durability::DivergencePolicy;
use crate::ledger::EventRecord;
use crate::supervisor::{ReplayStart, RunContext, TaskOutcome};
use crate::validation::Strategy;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::ResourceTable;
use wasmtime::{CallHook, Store, UpdateDeadline};

/// Longest error message kept from a trap.
const MAX_ERROR_CHARS: usize = 2000;

fn shorten(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// How one attempt at running a task ended.
struct Attempt {
    outcome: TaskOutcome,
    /// The replay diverged: the non-determinism error.
    diverged: Option<String>,
}

/// How one attempt starts: replaying a record, restarting from a checkpoint, with
/// validator feedback or on an escalated model.
#[derive(Default)]
struct AttemptSetup {
    replay: Option<ReplayStart>,
    restart: Option<(u32, Checkpoint)>,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    feedback: Option<String>,
    model: Option<String>,
}

/// Execute task `task_id` of `run` — replaying its record first when `replay` is given
/// — and return how it ended. Does not record the end itself (the caller does, through
/// `RunContext::finish`). A replay that diverges fails the task, or restarts it live
/// from its last checkpoint, as the run's divergence policy says. A completed output
/// passes the run's validators; a failure is retried (with the validator's feedback,
/// or on a better model) as `[retry]` allows and the budget permits — each retry a
/// `validation.retry` event that a resume replays like the rest.
pub async fn execute_task(
    run: Arc<RunContext>,
    task_id: u64,
    depth: u32,
    agent: Arc<LoadedAgent>,
    input: String,
    mut replay: Option<ReplayStart>,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
) -> TaskOutcome {
    if let Err(e) = run
        .ledger
        .start_task(run.run_id.clone(), task_id, input.clone())
        .await
    {
        return TaskOutcome::Failed(format!("cannot record task start: {e}"));
    }
    let mut later: std::collections::VecDeque<_> = replay
        .as_mut()
        .map(|r| std::mem::take(&mut r.later))
        .unwrap_or_default()
        .into();
    let mut setup = AttemptSetup {
        replay,
        slot,
        ..Default::default()
    };
    let mut attempt = 1;
    loop {
        let result = run_once(&run, task_id, depth, &agent, &input, setup).await;
        let outcome = match result.diverged {
            Some(divergence) => {
                return after_divergence(&run, task_id, depth, &agent, &input, divergence).await;
            }
            None => result.outcome,
        };
        let TaskOutcome::Completed(output) = outcome else {
            return outcome;
        };
        // A later attempt is already recorded: this one failed validation before a crash.
        if let Some((replay, nondet, marker)) = later.pop_front() {
            let marker = marker.unwrap_or_default();
            setup = AttemptSetup {
                replay: Some(ReplayStart {
                    replay,
                    nondet,
                    later: Vec::new(),
                }),
                slot: run.take_slot().await,
                feedback: marker["feedback"].as_str().map(str::to_string),
                model: marker["model"].as_str().map(str::to_string),
                ..Default::default()
            };
            attempt += 1;
            continue;
        }
        let failure =
            match crate::validation::validate(&run, task_id, &agent, &input, &output).await {
                Ok(()) => return TaskOutcome::Completed(output),
                Err(failure) => failure,
            };
        let strategy = run.retry.strategy(failure.category);
        if attempt >= run.retry.max_attempts || strategy == Strategy::None {
            return TaskOutcome::Failed(failure.to_string());
        }
        if run.budget.remaining(task_id) <= 0.0 {
            return TaskOutcome::Failed(format!("{failure}; no budget left to retry"));
        }
        let human = match strategy {
            Strategy::Human => {
                match crate::validation::review::await_decision(
                    &run, task_id, attempt, &failure, &output,
                )
                .await
                {
                    Ok(note) => note.map(|n| format!("Guidance from a human reviewer: {n}\n")),
                    Err(why) => return TaskOutcome::Failed(why),
                }
            }
            _ => None,
        };
        let excerpt: String = output.chars().take(1000).collect();
        let feedback = format!(
            "{}Feedback on your previous attempt: it was rejected by the validator `{}` ({}): {}\nYour previous answer was:\n{excerpt}\nProduce a corrected answer.",
            human.as_deref().unwrap_or_default(),
            failure.validator,
            failure.category.as_str(),
            failure.reason
        );
        let model = match strategy {
            Strategy::Escalate => {
                let mut models: Vec<_> = run.scheduler.models().to_vec();
                models.sort_by(|a, b| {
                    b.quality
                        .partial_cmp(&a.quality)
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
                models.first().map(|m| m.name.clone())
            }
            _ => None,
        };
        let marker = json!({
            "attempt": attempt + 1,
            "strategy": strategy,
            "category": failure.category,
            "validator": failure.validator,
            "reason": failure.reason,
            "feedback": feedback,
            "model": model,
        });
        let event = EventRecord {
            model: model.clone(),
            ..EventRecord::note(
                run.run_id.clone(),
                task_id,
                "validation.retry",
                true,
                serde_json::Value::Null,
                marker,
            )
        };
        if let Err(e) = run.ledger.append(event).await {
            return TaskOutcome::Failed(format!("{failure}; cannot record the retry: {e}"));
        }
        tracing::info!(run = %run.run_id, task = task_id, attempt = attempt + 1, ?strategy, "retrying after a validation failure");
        setup = AttemptSetup {
            slot: run.take_slot().await,
            feedback: Some(feedback),
            model,
            ..Default::default()
        };
        attempt += 1;
    }
}

/// A replay diverged: record it, then fail or restart from the last checkpoint.
async fn after_divergence(
    run: &Arc<RunContext>,
    task_id: u64,
    depth: u32,
    agent: &Arc<LoadedAgent>,
    input: &str,
    divergence: String,
) -> TaskOutcome {
    let restart = match run.divergence {
        DivergencePolicy::Fail => None,
        DivergencePolicy::FromCheckpoint => last_checkpoint(run, task_id),
    };
    let note = json!({ "error": divergence, "policy": run.divergence,
                       "restart_from_checkpoint": restart.as_ref().map(|(n, c)| json!({ "number": n, "note": c.note, "step": c.step })) });
    let event = EventRecord::note(
        run.run_id.clone(),
        task_id,
        "replay.diverged",
        false,
        serde_json::Value::Null,
        note,
    );
    if let Err(e) = run.ledger.append(event).await {
        return TaskOutcome::Failed(format!("{divergence}; and the ledger failed: {e}"));
    }
    match restart {
        None if run.divergence == DivergencePolicy::FromCheckpoint => {
            TaskOutcome::Failed(format!("{divergence} (no checkpoint to restart from)"))
        }
        None => TaskOutcome::Failed(divergence),
        Some(checkpoint) => {
            let setup = AttemptSetup {
                restart: Some(checkpoint),
                slot: run.take_slot().await,
                ..Default::default()
            };
            let outcome = run_once(run, task_id, depth, agent, input, setup)
                .await
                .outcome;
            validated(run, task_id, agent, input, outcome).await
        }
    }
}

/// Pass a completed task's output through the run's validators (no retries).
async fn validated(
    run: &Arc<RunContext>,
    task_id: u64,
    agent: &Arc<LoadedAgent>,
    input: &str,
    outcome: TaskOutcome,
) -> TaskOutcome {
    match outcome {
        TaskOutcome::Completed(output) => {
            match crate::validation::validate(run, task_id, agent, input, &output).await {
                Ok(()) => TaskOutcome::Completed(output),
                Err(failure) => TaskOutcome::Failed(failure.to_string()),
            }
        }
        other => other,
    }
}

/// The task's latest checkpoint in the ledger, with its number.
fn last_checkpoint(run: &RunContext, task_id: u64) -> Option<(u32, Checkpoint)> {
    let conn = run.ledger.reader().ok()?;
    let row = crate::ledger::query::checkpoints(&conn, &run.run_id, Some(task_id))
        .ok()?
        .pop()?;
    let state = crate::ledger::query::blob(&conn, &row.state_hash).ok()??;
    Some((
        row.number,
        Checkpoint {
            state,
            note: row.note,
            step: row.step,
            saved_at_ms: row.saved_at as u64,
        },
    ))
}

async fn run_once(
    run: &Arc<RunContext>,
    task_id: u64,
    depth: u32,
    agent: &Arc<LoadedAgent>,
    input: &str,
    setup: AttemptSetup,
) -> Attempt {
    let AttemptSetup {
        replay,
        restart,
        slot,
        feedback,
        model,
    } = setup;
    let limits = run.limits.clone();
    let mut task = TaskCtx::new(run.clone(), task_id, depth, agent.clone());
    task.slot = slot;
    task.feedback = feedback;
    task.model_override = model;
    if let Some(start) = replay {
        task.nondet.set_replay(start.nondet);
        task.replay = Some(start.replay);
    }
    if let Some((number, checkpoint)) = restart {
        task.checkpoints = number;
        task.steps = checkpoint.step;
        task.last_checkpoint = Some(checkpoint);
    }
    let stdout = BoundedCapture::new(limits.max_stdio_bytes);
    let stderr = BoundedCapture::new(limits.max_stdio_bytes);
    let mut store = new_store(run, task, stdout.clone(), stderr.clone());

    let call = async {
        let instance = agent.pre.instantiate_async(&mut store).await?;
        instance.call_run(&mut store, input).await
    };
    let wall_ms = run.timeout_ms(task_id);
    let attempt_started = std::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_millis(wall_ms), call).await;

    let (stderr_text, _) = stderr.contents();
    let outcome = match result {
        Err(_) => TaskOutcome::Failed(format!(
            "wall-clock time limit exceeded ({wall_ms} ms: limits.wall_ms or the spawn's timeout-ms)"
        )),
        Ok(Ok(Ok(_)))
            if store
                .data()
                .task
                .replay
                .as_ref()
                .is_some_and(|r| r.remaining() > 0) =>
        {
            let replay = store.data().task.replay.as_ref().expect("checked");
            let next = replay.peek().expect("remaining > 0");
            let msg = format!(
                "non-determinism: the guest finished, but the ledger recorded {} more call(s), next {}",
                replay.remaining(),
                crate::durability::replay::describe(&next.kind, &next.request_hash, Some(next.seq))
            );
            store.data_mut().task.diverged = Some(msg.clone());
            TaskOutcome::Failed(msg)
        }
        Ok(Ok(Ok(output))) => {
            if output.len() > limits.max_output_bytes {
                TaskOutcome::Failed(format!(
                    "output too large: {} bytes (limits.max_output_bytes = {})",
                    output.len(),
                    limits.max_output_bytes
                ))
            } else {
                TaskOutcome::Completed(output)
            }
        }
        Ok(Ok(Err(message))) => TaskOutcome::Failed(shorten(message, limits.max_output_bytes)),
        Ok(Err(_)) if store.data().task.diverged.is_some() => {
            TaskOutcome::Failed(store.data().task.diverged.clone().unwrap_or_default())
        }
        Ok(Err(_)) if store.data().task.in_doubt.is_some() => {
            TaskOutcome::Failed(store.data().task.in_doubt.clone().unwrap_or_default())
        }
        Ok(Err(err)) => {
            let mut msg = match store.data().kill() {
                Some(kill) => format!("stopped by the host: {kill}"),
                None => match err.downcast_ref::<wasmtime::Trap>() {
                    Some(trap) => format!("agent trapped: {trap}"),
                    None => format!("agent failed: {err:#}"),
                },
            };
            let tail = stderr_text.trim();
            if !tail.is_empty() && store.data().kill().is_none() {
                let start = tail.len().saturating_sub(500);
                let start = (start..tail.len())
                    .find(|i| tail.is_char_boundary(*i))
                    .unwrap_or(0);
                msg.push_str(&format!(" (stderr: {})", &tail[start..]));
            }
            TaskOutcome::Failed(shorten(msg, MAX_ERROR_CHARS))
        }
    };

    // Flush the last clock/random reads, keep what the guest printed and what it used
    // (CPU, time blocked in the host), as auxiliary events replay skips.
    let mut tail_events: Vec<EventRecord> = Vec::new();
    if let Some(e) = store.data().task.nondet_event() {
        tail_events.push(e);
    }
    let (out_text, out_dropped) = stdout.contents();
    if !out_text.is_empty() || !stderr_text.is_empty() {
        let (_, err_dropped) = stderr.contents();
        tail_events.push(EventRecord::note(
            run.run_id.clone(),
            task_id,
            "task.stdio",
            true,
            serde_json::Value::Null,
            json!({
                "stdout": out_text, "stdout_dropped_bytes": out_dropped,
                "stderr": stderr_text, "stderr_dropped_bytes": err_dropped,
            }),
        ));
    }
    let cpu = &store.data().cpu;
    tail_events.push(EventRecord::note(
        run.run_id.clone(),
        task_id,
        "task.usage",
        true,
        serde_json::Value::Null,
        json!({
            "cpu_ms": cpu.used().as_millis() as u64,
            "blocked_ms": cpu.host_wait().as_millis() as u64,
            "wall_ms": attempt_started.elapsed().as_millis() as u64,
            "wall_limit_ms": wall_ms,
        }),
    ));
    let diverged = store.data().task.diverged.clone();
    drop(store);
    if !tail_events.is_empty() {
        let result = run
            .ledger
            .write(move |w| {
                for e in tail_events {
                    w.append_event(e)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = result {
            tracing::error!(run = %run.run_id, task = task_id, error = %e, "cannot record task stdio");
        }
    }
    Attempt { outcome, diverged }
}

/// A fresh store for one guest — an agent, or a validator component — under the run's
/// limits: WASI with nothing granted (its clocks and random recorded through the
/// task's log), the memory limiter, and CPU accounting ([`super::cpu`]) that stops the
/// guest once it has burnt `limits.cpu_ms` of real CPU time (it yields to other agents
/// every tick meanwhile). Every host call is also where a guest that flooded the host
/// with clock/random reads is stopped (`limits.max_nondet_bytes`).
pub(crate) fn new_store(
    run: &Arc<RunContext>,
    task: TaskCtx,
    stdout: BoundedCapture,
    stderr: BoundedCapture,
) -> Store<AgentState> {
    let limits = &run.limits;
    task.nondet.set_limit(limits.max_nondet_bytes);
    let state = AgentState {
        wasi: wasi::build_ctx(&task.nondet, stdout, stderr),
        table: ResourceTable::new(),
        task,
        memory_limit: limits.memory_bytes(),
        cpu: super::cpu::CpuMeter::new(Duration::from_millis(limits.cpu_ms)),
    };
    let mut store = Store::new(run.runtime.engine(), state);
    store.limiter(|s| s);
    store.call_hook(|mut ctx, hook| {
        let s = ctx.data_mut();
        match hook {
            CallHook::CallingWasm => s.cpu.resume(),
            CallHook::ReturningFromHost => {
                s.cpu.leave_host();
                s.cpu.resume();
            }
            CallHook::ReturningFromWasm => s.cpu.pause(),
            CallHook::CallingHost => {
                s.cpu.pause();
                s.cpu.enter_host();
                if s.task.kill.is_none() {
                    stop_if_over_limits(s)?;
                }
            }
        }
        Ok(())
    });
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        // The call hook has charged the guest up to this libcall.
        stop_if_over_limits(ctx.data_mut())?;
        Ok(UpdateDeadline::Yield(1))
    });
    store
}

/// Stop the guest (a trap naming the limit) if it has used up its CPU time, held too
/// many clock/random reads in the host or caused too many bytes of ledger records.
fn stop_if_over_limits(s: &mut AgentState) -> wasmtime::Result<()> {
    let kill = if s.cpu.exhausted() {
        Kill::Cpu {
            limit_ms: s.task.run.limits.cpu_ms,
        }
    } else if s.task.nondet.overflowed() {
        Kill::NondetBuffer {
            limit_bytes: s.task.run.limits.max_nondet_bytes,
        }
    } else if s.task.ledger_bytes > s.task.run.limits.max_ledger_bytes {
        Kill::LedgerBytes {
            limit_bytes: s.task.run.limits.max_ledger_bytes,
        }
    } else {
        return Ok(());
    };
    let msg = kill.to_string();
    s.task.kill = Some(kill);
    Err(wasmtime::format_err!("{msg}"))
}
