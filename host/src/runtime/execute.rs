//! Run one attempt at a task: a fresh store, the agent instantiated from its
//! `InstancePre`, `run` called with the task's input, under the run's limits.
//!
//! Limits enforced here: memory (the store's `ResourceLimiter`), CPU (epoch ticks:
//! the guest yields to other agents every tick and is stopped when its CPU budget is
//! spent), wall-clock time (a timeout around the whole call that stops while the task
//! is blocked on a human, [`crate::supervisor::waits`]), output size, and the
//! stdout/stderr bounds. Whatever happens — trap, limit, bad output — becomes a
//! [`TaskOutcome`] with a clear message; the host itself never goes down with a guest.
//! Validating the output, retrying and escalating is the layer above
//! ([`crate::attempts`]).

use super::LoadedAgent;
use super::state::AgentState;
use crate::capabilities::checkpoint::Restart;
use crate::capabilities::stdio::BoundedCapture;
use crate::capabilities::{Kill, TaskCtx, wasi};
use crate::ledger::{EventKind, EventRecord};
use crate::supervisor::{ReplayStart, RunContext, TaskOutcome};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::ResourceTable;
use wasmtime::{CallHook, Engine, Store, UpdateDeadline};

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
pub struct Attempt {
    pub outcome: TaskOutcome,
    /// The replay diverged: the non-determinism error.
    pub diverged: Option<String>,
}

/// How one attempt starts: replaying a record, restarting from a checkpoint, with
/// validator feedback, on an escalated model or at a retry's temperature.
#[derive(Default)]
pub struct AttemptSetup {
    pub replay: Option<ReplayStart>,
    pub restart: Option<Restart>,
    pub slot: Option<crate::supervisor::shared_limits::TaskSlot>,
    pub feedback: Option<String>,
    pub model: Option<String>,
    /// The temperature every LLM call of the attempt is made at (a `temperature` retry).
    pub temperature: Option<f64>,
}

/// Run one attempt at task `task_id`.
#[allow(clippy::too_many_arguments)]
pub async fn run_once(
    runtime: &super::Runtime,
    merge: &Arc<crate::merge::MergeConfig>,
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
        temperature,
    } = setup;
    let limits = run.settings.limits.clone();
    let mut task = TaskCtx::new(
        run.clone(),
        task_id,
        depth,
        agent.component_ref(),
        merge.clone(),
    );
    task.tasks.slot = slot;
    task.llm.feedback = feedback;
    task.llm.agent = agent.name.clone();
    task.llm.model_override = model;
    task.llm.temperature = temperature;
    if let Some(start) = replay {
        task.site.nondet.set_replay(start.nondet);
        task.site.replay = Some(start.replay);
    }
    {
        use sha2::Digest;
        task.site.seen.update(input.as_bytes());
    }
    if let Some(restart) = restart {
        restart.seed(&mut task.trace, &mut task.progress, &mut task.site.seen);
    }
    let stdout = BoundedCapture::new(limits.max_stdio_bytes);
    let stderr = BoundedCapture::new(limits.max_stdio_bytes);
    let mut store = runtime.new_store(task, stdout.clone(), stderr.clone());

    let call = async {
        let instance = runtime.instantiate_agent(&mut store, agent).await?;
        instance.call_run(&mut store, input).await
    };
    let wall_ms = run.timeout_ms(task_id);
    let attempt_started = std::time::Instant::now();
    // The clock stops while the task is blocked on a human ([`crate::supervisor::waits`]).
    let (result, counted) = run
        .within_wall_limit(task_id, Duration::from_millis(wall_ms), call)
        .await;

    let (stderr_text, _) = stderr.contents();
    let outcome = match result {
        None => TaskOutcome::Failed(format!(
            "wall-clock time limit exceeded ({wall_ms} ms: limits.wall_ms or the spawn's timeout-ms)"
        )),
        Some(Ok(Ok(_)))
            if store
                .data()
                .task
                .site
                .replay
                .as_ref()
                .is_some_and(|r| r.remaining() > 0) =>
        {
            let replay = store.data().task.site.replay.as_ref().expect("checked");
            let next = replay.peek().expect("remaining > 0");
            let msg = format!(
                "non-determinism: the guest finished, but the ledger recorded {} more call(s), next {}",
                replay.remaining(),
                crate::replay::describe(&next.kind, &next.request_hash, Some(next.seq))
            );
            store.data_mut().task.site.diverged = Some(msg.clone());
            TaskOutcome::Failed(msg)
        }
        Some(Ok(Ok(output))) => {
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
        Some(Ok(Err(message))) => TaskOutcome::Failed(shorten(message, limits.max_output_bytes)),
        Some(Err(_)) if store.data().task.site.diverged.is_some() => {
            TaskOutcome::Failed(store.data().task.site.diverged.clone().unwrap_or_default())
        }
        Some(Err(_)) if store.data().task.site.in_doubt.is_some() => {
            TaskOutcome::Failed(store.data().task.site.in_doubt.clone().unwrap_or_default())
        }
        Some(Err(err)) => {
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

    // Conflicts a partial join left pending and the guest never took: its outcome
    // counts only once a human has decided them and they are in its view.
    let partial = std::mem::take(&mut store.data_mut().task.tasks.partial_merges);
    let outcome = match outcome {
        TaskOutcome::Completed(output) if !partial.is_empty() => {
            match crate::merge::finish_partial(run, task_id, &partial).await {
                Ok(()) => TaskOutcome::Completed(output),
                Err(e) => TaskOutcome::Failed(format!("cannot apply a pending merge: {e:#}")),
            }
        }
        other => other,
    };

    // Flush the last clock/random reads, keep what the guest printed and what it used
    // (CPU, time blocked in the host), as auxiliary events replay skips.
    let mut tail_events: Vec<EventRecord> = Vec::new();
    if let Some(e) = store.data().task.site.nondet_event() {
        tail_events.push(e);
    }
    let (out_text, out_dropped) = stdout.contents();
    if !out_text.is_empty() || !stderr_text.is_empty() {
        let (_, err_dropped) = stderr.contents();
        tail_events.push(EventRecord::note(
            run.run_id.clone(),
            task_id,
            EventKind::TaskStdio,
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
        EventKind::TaskUsage,
        true,
        serde_json::Value::Null,
        json!({
            "cpu_ms": cpu.used().as_millis() as u64,
            "blocked_ms": cpu.host_wait().as_millis() as u64,
            "wall_ms": attempt_started.elapsed().as_millis() as u64,
            // Of it, the time blocked on a human, which the limit does not count.
            "human_wait_ms": attempt_started.elapsed().saturating_sub(counted).as_millis() as u64,
            "wall_limit_ms": wall_ms,
        }),
    ));
    let diverged = store.data().task.site.diverged.clone();
    // A buffered write of the agent failed after its last host call: the record is
    // incomplete, so the task cannot count as completed.
    let outcome = match (store.data().task.site.write_failure.get(), outcome) {
        (Some(e), TaskOutcome::Completed(_)) => {
            TaskOutcome::Failed(format!("ledger write failed, stopping the agent: {e}"))
        }
        (_, outcome) => outcome,
    };
    drop(store);
    if !tail_events.is_empty() {
        // Buffered: the task's end, durable, follows them.
        let result = run
            .ledger
            .write_buffered(
                move |w| {
                    for e in tail_events {
                        w.append_event(e)?;
                    }
                    Ok(())
                },
                |_| {},
            )
            .await;
        if let Err(e) = result {
            tracing::error!(run = %run.run_id, task = task_id, error = %e, "cannot record task stdio");
        }
    }
    Attempt { outcome, diverged }
}

impl super::Runtime {
    /// A fresh store for one guest — an agent, or a validator component — under the
    /// run's limits, in a pool slot when one is free and on demand otherwise
    /// ([`super::pool`]): WASI with nothing granted (its clocks and random recorded
    /// through the task's log), the memory limiter, and CPU accounting ([`super::cpu`])
    /// that stops the guest once it has burnt `limits.cpu_ms` of real CPU time (it
    /// yields to other agents every tick meanwhile). Every host call is also where a
    /// guest that flooded the host with clock/random reads is stopped
    /// (`limits.max_nondet_bytes`).
    pub(crate) fn new_store(
        &self,
        task: TaskCtx,
        stdout: BoundedCapture,
        stderr: BoundedCapture,
    ) -> Store<AgentState> {
        let limits = &task.site.run.settings.limits;
        task.site.nondet.set_limit(limits.max_nondet_bytes);
        // A child's spawn may have asked for less than the run's limits.
        let (memory_limit, cpu_ms) = task.site.run.task_limits(task.site.task_id);
        let state = AgentState {
            wasi: wasi::build_ctx(&task.site.nondet, stdout, stderr),
            table: ResourceTable::new(),
            memory_limit,
            cpu: super::cpu::CpuMeter::new(Duration::from_millis(cpu_ms)),
            task,
            slot: self.placement.take(),
        };
        // Building the on-demand engine fails only if wasmtime cannot build an engine
        // at all, which `Runtime::new` has done once already (instantiating then
        // reports the error).
        let engine = if state.slot.is_pooled() {
            self.engine()
        } else {
            self.on_demand().map_or(self.engine(), |d| &d.engine)
        };
        configured_store(engine, state)
    }

    /// Instantiate `agent` in `store`; when the pool has no room for it after all, the
    /// agent moves to an on-demand instance.
    pub(crate) async fn instantiate_agent(
        &self,
        store: &mut Store<AgentState>,
        agent: &LoadedAgent,
    ) -> wasmtime::Result<crate::bindings::Agent> {
        if store.data().slot.is_pooled() {
            match agent.pre.instantiate_async(&mut *store).await {
                Err(e) if super::pool::is_pool_full(&e) => self.move_on_demand(store)?,
                other => return other,
            }
        }
        let pre = self
            .on_demand_agent(agent)
            .map_err(|e| wasmtime::format_err!("{e:#}"))?;
        pre.instantiate_async(store).await
    }

    /// Instantiate a validator component in `store`, like [`Self::instantiate_agent`].
    pub(crate) async fn instantiate_validator(
        &self,
        store: &mut Store<AgentState>,
        validator: &super::LoadedValidator,
    ) -> wasmtime::Result<crate::bindings::validator::Validator> {
        if store.data().slot.is_pooled() {
            match validator.pre.instantiate_async(&mut *store).await {
                Err(e) if super::pool::is_pool_full(&e) => self.move_on_demand(store)?,
                other => return other,
            }
        }
        let pre = self
            .on_demand_validator(validator)
            .map_err(|e| wasmtime::format_err!("{e:#}"))?;
        pre.instantiate_async(store).await
    }

    /// Replace a pooled store whose instantiation found no room by an on-demand one
    /// holding the same state.
    fn move_on_demand(&self, store: &mut Store<AgentState>) -> wasmtime::Result<()> {
        let d = self
            .on_demand()
            .map_err(|e| wasmtime::format_err!("{e:#}"))?;
        let placeholder = {
            let t = &store.data().task;
            AgentState {
                wasi: wasmtime_wasi::WasiCtx::builder().build(),
                table: ResourceTable::new(),
                task: TaskCtx::new(
                    t.site.run.clone(),
                    t.site.task_id,
                    t.tasks.depth,
                    t.tasks.agent.clone(),
                    t.tasks.merge.clone(),
                ),
                memory_limit: 0,
                cpu: super::cpu::CpuMeter::new(Duration::ZERO),
                slot: self.placement.on_demand(),
            }
        };
        let mut state = std::mem::replace(store.data_mut(), placeholder);
        // The pool permit goes with the old store, the on-demand count with the state.
        std::mem::swap(&mut state.slot, &mut store.data_mut().slot);
        *store = configured_store(&d.engine, state);
        Ok(())
    }
}

/// A store for `state` with the limiter, the CPU accounting call hook and the epoch
/// callback.
fn configured_store(engine: &Engine, state: AgentState) -> Store<AgentState> {
    let mut store = Store::new(engine, state);
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
                if s.task.site.kill.is_none() {
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
            limit_ms: s.cpu.limit().as_millis() as u64,
        }
    } else if s.task.site.nondet.overflowed() {
        Kill::NondetBuffer {
            limit_bytes: s.task.site.run.settings.limits.max_nondet_bytes,
        }
    } else if s.task.site.ledger_bytes > s.task.site.run.settings.limits.max_ledger_bytes {
        Kill::LedgerBytes {
            limit_bytes: s.task.site.run.settings.limits.max_ledger_bytes,
        }
    } else {
        return Ok(());
    };
    let msg = kill.to_string();
    s.task.site.kill = Some(kill);
    Err(wasmtime::format_err!("{msg}"))
}
