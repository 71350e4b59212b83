//! Validator components: `[[validators]] kind = "component"` (and outcome validators
//! with a `component`), wasm components of world `agentflow:agent/validator`
//! (`wit/validator.wit`) that platform teams write to check outputs their own way.
//!
//! A validator component is sandboxed exactly like an agent: its own store built by
//! `Runtime::new_store` — the run's memory and CPU limits, WASI with
//! nothing granted — and the run's wall-clock limit around the call. It may call only
//! the tools in its `grant` that the run was granted too (deny by default: with no
//! `grant` it has no tools), through the same `tools`/`trace` host implementations
//! agents use. Everything it does is recorded under the validated task as
//! `validator.call` events (the original call kind and request inside), which replay
//! skips: validators always run live.
//!
//! A validator that traps, loops past its CPU limit, times out or cannot be loaded
//! yields `uncertain` with the reason — it never fails the task on its own and never
//! takes the host down. It runs in an execution slot of the run, like a task.
//! Components are compiled and linked once per host
//! ([`crate::runtime::Runtime::load_validator`]), through the on-disk component cache.

use super::Runner;
use crate::bindings::validator as wit;
use crate::capabilities::stdio::BoundedCapture;
use crate::capabilities::{TaskCtx, ValidatorScope};
use crate::checks::{Category, ValidatorConfig, Verdict};
use crate::runtime::{LoadedAgent, LoadedValidator, Runtime};
use crate::supervisor::RunContext;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Longest reason a validator component may give, in characters.
pub const MAX_REASON_CHARS: usize = 4000;

/// Load the component a validator config names (once per host), with an error that
/// names the validator and the file.
pub fn load(runtime: &Runtime, v: &ValidatorConfig) -> anyhow::Result<Arc<LoadedValidator>> {
    let path = v
        .component()
        .ok_or_else(|| anyhow::anyhow!("[[validators]] {}: no `component` to load", v.label()))?;
    runtime.load_validator(Path::new(path)).map_err(|e| {
        anyhow::anyhow!(
            "[[validators]] {}: cannot load validator component {path}: {e:#}",
            v.label()
        )
    })
}

/// Load every validator component of `validators`: a bad one is a config error before
/// the run starts, not a surprise at its end.
pub fn preload(runtime: &Runtime, validators: &[ValidatorConfig]) -> anyhow::Result<()> {
    for v in validators.iter().filter(|v| v.component().is_some()) {
        load(runtime, v)?;
    }
    Ok(())
}

fn category(c: wit::Category) -> Category {
    match c {
        wit::Category::Syntactic => Category::Syntactic,
        wit::Category::Semantic => Category::Semantic,
        wit::Category::Partial => Category::Partial,
        wit::Category::HallucinatedSuccess => Category::HallucinatedSuccess,
        wit::Category::Degraded => Category::Degraded,
    }
}

/// Run validator component `v` on `output` (of task `task_id`, given `input`). Returns
/// its verdict and the category it reported, if any.
pub async fn check(
    runner: &Runner,
    run: &Arc<RunContext>,
    task_id: u64,
    agent: &Arc<LoadedAgent>,
    v: &ValidatorConfig,
    input: &str,
    output: &str,
) -> (Verdict, Option<Category>) {
    let loaded = match load(&runner.runtime, v) {
        Ok(l) => l,
        Err(e) => return (Verdict::Uncertain(format!("{e:#}")), None),
    };
    let granted = run.tools.granted_names();
    let grant: Vec<String> = v
        .grant()
        .iter()
        .filter(|g| granted.contains(g))
        .cloned()
        .collect();
    let mut task = TaskCtx::new(
        run.clone(),
        task_id,
        0,
        agent.component_ref(),
        runner.merge.clone(),
    );
    task.site.validator = Some(ValidatorScope {
        label: v.label(),
        grant,
    });
    // A validator component is a running guest like any other: it takes an execution
    // slot, so `max_concurrent_tasks` bounds validators too.
    let _slot = run.take_slot(task_id).await;
    let stdout = BoundedCapture::new(run.settings.limits.max_stdio_bytes);
    let stderr = BoundedCapture::new(run.settings.limits.max_stdio_bytes);
    let mut store = runner.runtime.new_store(task, stdout, stderr.clone());
    let call = async {
        let instance = runner
            .runtime
            .instantiate_validator(&mut store, &loaded)
            .await?;
        instance.call_validate(&mut store, input, output).await
    };
    let wall_ms = run.settings.limits.wall_ms;
    let result = tokio::time::timeout(Duration::from_millis(wall_ms), call).await;
    let verdict = match result {
        Err(_) => (
            Verdict::Uncertain(format!(
                "validator component timed out after {wall_ms} ms (limits.wall_ms)"
            )),
            None,
        ),
        Ok(Err(err)) => {
            let mut why = match store.data().kill() {
                Some(kill) => format!("validator component stopped by the host: {kill}"),
                None => match err.downcast_ref::<wasmtime::Trap>() {
                    Some(trap) => format!("validator component trapped: {trap}"),
                    None => format!("validator component failed: {err:#}"),
                },
            };
            let (text, _) = stderr.contents();
            let tail: String = text.trim().chars().rev().take(300).collect();
            if !tail.is_empty() && store.data().kill().is_none() {
                why.push_str(&format!(
                    " (stderr: {})",
                    tail.chars().rev().collect::<String>()
                ));
            }
            (Verdict::Uncertain(why), None)
        }
        Ok(Ok(report)) => {
            // The reason is the guest's text: bounded before it reaches the ledger and
            // the next attempt's prompt.
            let bounded = |r: String| -> String {
                if r.chars().count() > MAX_REASON_CHARS {
                    r.chars().take(MAX_REASON_CHARS).collect::<String>() + "…"
                } else {
                    r
                }
            };
            let verdict = match report.verdict {
                wit::Verdict::Pass => Verdict::Pass,
                wit::Verdict::Fail(reason) => Verdict::Fail(bounded(reason)),
                wit::Verdict::Uncertain(reason) => Verdict::Uncertain(bounded(reason)),
            };
            (verdict, report.category.map(category))
        }
    };
    // The validator's last clock/random reads, recorded as its own (`validator.call`).
    if let Some(e) = store.data().task.site.nondet_event()
        && let Err(e) = run.ledger.record(e).await
    {
        tracing::error!(run = %run.run_id, task = task_id, error = %e, "cannot record a validator's clock reads");
    }
    verdict
}
