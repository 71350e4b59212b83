//! [`ComponentTool`]: an installed tool component as a [`crate::tools::Tool`], so its
//! calls take the built-ins' recorded path (grant, intent, result, replay, undo).
//!
//! Each call (and `describe`) runs on its own tokio task in a fresh store of the tool
//! engine, never the agent's: the manifest's memory limit through the store's limiter,
//! its timeout around the whole call (the guest yields at every epoch tick, so a
//! spinning tool is stopped on time), WASI with the manifest's grants only
//! ([`super::state`]). Whatever the tool does — trap, spin, allocate without end,
//! report a malformed effect — fails that call with [`ToolError::Failed`], and
//! dropping the call (its agent stopped) stops the tool.

use super::ToolRuntime;
use super::manifest::{self, Manifest};
use super::state::{KvAccess, ToolState};
use crate::bindings::tool::ToolPre;
use crate::bindings::tool::tool_types::{self as wit, CallContext};
use crate::tools::{Effect, SideEffect, Tool, ToolCallCtx, ToolError, ToolInfo};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::Store;

/// Longest stderr tail put into a failure's message.
const STDERR_TAIL: usize = 500;

/// An installed tool component, ready to call.
pub struct ComponentTool {
    runtime: Arc<ToolRuntime>,
    pre: ToolPre<ToolState>,
    info: ToolInfo,
    /// SHA-256 hex of the component (its build).
    hash: String,
    manifest: Arc<Manifest>,
}

/// What a call reported: its output and effects, or the error; and the effects of the
/// host's own work for it (kv writes), which happened either way.
struct CallOutcome {
    result: Result<(String, Vec<String>), ToolError>,
    host_effects: Vec<Effect>,
}

fn side_effect(s: wit::SideEffect) -> SideEffect {
    match s {
        wit::SideEffect::None => SideEffect::None,
        wit::SideEffect::Idempotent => SideEffect::Idempotent,
        wit::SideEffect::Compensable => SideEffect::Compensable,
        wit::SideEffect::Irreversible => SideEffect::Irreversible,
    }
}

impl ComponentTool {
    /// The component `hash` (`bytes`) as tool `info` (its description as installed,
    /// under its installed name and effective class) with `manifest`.
    pub fn new(
        runtime: Arc<ToolRuntime>,
        hash: &str,
        bytes: &[u8],
        info: ToolInfo,
        manifest: Manifest,
    ) -> anyhow::Result<ComponentTool> {
        let pre = runtime.load(hash, bytes)?;
        Ok(ComponentTool {
            runtime,
            pre,
            info,
            hash: hash.to_string(),
            manifest: Arc::new(manifest),
        })
    }

    /// The component's SHA-256 (hex).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Its manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Call the component's `call` with `args_json` on its own task.
    async fn invoke(&self, kv: Option<KvAccess>, ctx: CallContext, args_json: String) -> CallOutcome {
        let engine = self.runtime.engine().clone();
        let pre = self.pre.clone();
        let manifest = self.manifest.clone();
        let name = self.info.name.clone();
        let task = tokio::spawn(async move {
            let state = match ToolState::new(&manifest, kv) {
                Ok(s) => s,
                Err(e) => {
                    return CallOutcome {
                        result: Err(ToolError::Failed(format!("tool `{name}`: {e:#}"))),
                        host_effects: Vec::new(),
                    };
                }
            };
            let mut store = new_store(&engine, state);
            let timeout = Duration::from_millis(manifest.limits.timeout_ms);
            let run = async {
                let instance = pre.instantiate_async(&mut store).await?;
                instance.call_call(&mut store, &ctx, &args_json).await
            };
            let ran = tokio::time::timeout(timeout, run).await;
            let host_effects = std::mem::take(&mut store.data_mut().host_effects);
            let result = match ran {
                Err(_) => Err(ToolError::Failed(format!(
                    "tool `{name}` timed out after {} ms ([limits] timeout_ms of its manifest)",
                    manifest.limits.timeout_ms
                ))),
                Ok(Err(trap)) => Err(ToolError::Failed(failure(&name, &store, &trap))),
                Ok(Ok(Err(e))) => Err(match e {
                    wit::ToolError::InvalidArgs(m) => ToolError::InvalidArgs(m),
                    wit::ToolError::Denied(m) => ToolError::Denied(m),
                    wit::ToolError::Failed(m) => ToolError::Failed(m),
                }),
                Ok(Ok(Ok(r))) => Ok((r.output, r.effects)),
            };
            CallOutcome {
                result,
                host_effects,
            }
        });
        // Dropping this call (its agent was stopped) stops the tool too.
        let _stop = AbortOnDrop(task.abort_handle());
        match task.await {
            Ok(outcome) => outcome,
            Err(e) => CallOutcome {
                result: Err(ToolError::Failed(format!(
                    "tool `{}` failed in the host: {e}",
                    self.info.name
                ))),
                host_effects: Vec::new(),
            },
        }
    }
}

/// Aborts a tokio task when dropped (a no-op once it has finished).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A store for one call: the memory limiter, and a yield at every epoch tick so the
/// call's timeout can fire while the guest spins.
fn new_store(engine: &wasmtime::Engine, state: ToolState) -> Store<ToolState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| s);
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    store
}

/// A trap's message: why the host stopped the tool if it did, else the trap, with
/// the tail of the tool's stderr.
fn failure(name: &str, store: &Store<ToolState>, err: &wasmtime::Error) -> String {
    let state = store.data();
    let mut msg = match &state.stopped {
        Some(why) => format!("tool `{name}` stopped by the host: {why}"),
        None => match err.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => format!("tool `{name}` trapped: {trap}"),
            None => format!("tool `{name}` failed: {err:#}"),
        },
    };
    let (stderr, _) = state.stderr.contents();
    let tail = stderr.trim();
    if !tail.is_empty() {
        let start = tail.len().saturating_sub(STDERR_TAIL);
        let start = (start..tail.len())
            .find(|i| tail.is_char_boundary(*i))
            .unwrap_or(0);
        msg.push_str(&format!(" (stderr: {})", &tail[start..]));
    }
    msg
}

/// Run the component's `describe` in a fresh store with `manifest`'s limits, and check
/// what it says: a name, a JSON-object schema, an undo for a compensable tool.
pub async fn describe(
    runtime: &Arc<ToolRuntime>,
    pre: &ToolPre<ToolState>,
    manifest: &Manifest,
) -> anyhow::Result<ToolInfo> {
    let engine = runtime.engine().clone();
    let pre = pre.clone();
    let manifest = manifest.clone();
    let timeout = Duration::from_millis(manifest.limits.timeout_ms);
    let described = tokio::spawn(async move {
        let mut store = new_store(&engine, ToolState::new(&manifest, None)?);
        let run = async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_describe(&mut store).await
        };
        match tokio::time::timeout(timeout, run).await {
            Err(_) => anyhow::bail!("`describe` timed out after {} ms", timeout.as_millis()),
            Ok(Err(e)) => anyhow::bail!("`describe` failed: {}", failure("describe", &store, &e)),
            Ok(Ok(d)) => Ok(d),
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("`describe` failed in the host: {e}"))??;
    let name = described.name.trim().to_string();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c)) {
        anyhow::bail!(
            "the tool describes itself as `{}`: a tool name is letters, digits, `_` and `-`",
            described.name
        );
    }
    let args_schema: serde_json::Value = serde_json::from_str(&described.args_schema)
        .map_err(|e| anyhow::anyhow!("the tool's args-schema is not JSON: {e}"))?;
    if !args_schema.is_object() {
        anyhow::bail!("the tool's args-schema is not a JSON object");
    }
    let class = side_effect(described.side_effect);
    if class == SideEffect::Compensable && described.undo.as_deref().is_none_or(str::is_empty) {
        anyhow::bail!(
            "the tool says it is compensable but names no undo operation (describe's `undo`)"
        );
    }
    Ok(ToolInfo {
        name,
        description: described.description,
        args_schema,
        side_effect: class,
        undo: described.undo.filter(|u| !u.is_empty()),
    })
}

/// The class the tool is recorded under: its own, or its manifest's stricter one.
pub fn effective_info(mut info: ToolInfo, manifest: &Manifest) -> anyhow::Result<ToolInfo> {
    info.side_effect = manifest.effective_side_effect(info.side_effect)?;
    if info.side_effect == SideEffect::Irreversible {
        // Nothing undoes an irreversible call: recovery must not plan with its undo.
        info.undo = None;
    }
    Ok(info)
}

#[async_trait::async_trait]
impl Tool for ComponentTool {
    fn info(&self) -> ToolInfo {
        self.info.clone()
    }

    fn build(&self) -> Option<String> {
        Some(format!("sha256:{}", self.hash))
    }

    async fn call(&self, ctx: &ToolCallCtx, args: serde_json::Value) -> Result<String, ToolError> {
        let kv = KvAccess {
            ledger: ctx.ledger.clone(),
            run_id: ctx.run_id.clone(),
        };
        let call_ctx = CallContext {
            idempotency_key: ctx.idempotency_key.clone(),
            run_id: ctx.run_id.clone(),
        };
        let outcome = self.invoke(Some(kv), call_ctx, args.to_string()).await;
        for e in outcome.host_effects {
            ctx.emit(e);
        }
        let (output, effects) = outcome.result?;
        let mut parsed = Vec::with_capacity(effects.len());
        for text in &effects {
            let effect: Effect = serde_json::from_str(text).map_err(|e| {
                let mut shown: String = text.chars().take(200).collect();
                if shown.len() < text.len() {
                    shown.push('…');
                }
                ToolError::Failed(format!(
                    "tool `{}` reported a malformed effect `{shown}`: {e} (an effect is the JSON of one of the host's \
                     Effect records, e.g. {{\"type\": \"FileModified\", \"path\": \"…\", \"hash\": \"…\"}})",
                    self.info.name
                ))
            })?;
            parsed.push(effect);
        }
        for e in parsed {
            ctx.emit(e);
        }
        Ok(output)
    }
}

/// The manifest's class name for `s` (re-exported for listings).
pub fn class_name(s: SideEffect) -> &'static str {
    manifest::side_effect_name(s)
}
