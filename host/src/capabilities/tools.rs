//! `agentflow:agent/tools`: list and call the tools granted to the run.
//!
//! Grants are checked first: an ungranted tool is absent from `list` and refused by
//! `call` with the grant to add. A tool with side effects gets an **intent** committed
//! before it runs (`tools.intent`: tool, arguments, idempotency key, side-effect
//! class, undo), then its result and the typed effects it reports (`tools.call`). A
//! tool component's build (`"build": "sha256:…"`) is in both requests; replay matches
//! calls by name and arguments only.
//!
//! On replay, a recorded intent followed by its result is answered from the ledger.
//! An intent with no result is *in doubt* — the tool may or may not have acted:
//! read-only and idempotent tools run again with the same idempotency key; for
//! compensable and irreversible ones the task stops, and `agentflow recover` plans
//! what to do; once a human settles it (`agentflow settle`), the settlement is its
//! result — or, when the call did not happen, the call runs live again.

use super::{DurableCall, Recorded, views::ToolsView};
use crate::bindings::tools::{Host, SideEffect, ToolError, ToolInfo};
use crate::ledger::EventKind;
use crate::replay::RecordedCall;
use crate::tools::{self as tool_impl, ToolCallCtx};
use serde_json::{Value, json};

fn side_effect(s: tool_impl::SideEffect) -> SideEffect {
    match s {
        tool_impl::SideEffect::None => SideEffect::None,
        tool_impl::SideEffect::Idempotent => SideEffect::Idempotent,
        tool_impl::SideEffect::Compensable => SideEffect::Compensable,
        tool_impl::SideEffect::Irreversible => SideEffect::Irreversible,
    }
}

fn error_json(e: &tool_impl::ToolError) -> Value {
    let (kind, msg) = match e {
        tool_impl::ToolError::NotGranted(m) => ("not-granted", m),
        tool_impl::ToolError::NotFound(m) => ("not-found", m),
        tool_impl::ToolError::InvalidArgs(m) => ("invalid-args", m),
        tool_impl::ToolError::Denied(m) => ("denied", m),
        tool_impl::ToolError::Failed(m) => ("failed", m),
    };
    json!({ "error": format!("{e:?}"), "error_kind": kind, "detail": msg })
}

/// The guest-visible result of a recorded `tools.call`; a trap only when the ledger
/// cannot be read.
fn replayed_result(rec: &RecordedCall) -> wasmtime::Result<Result<String, ToolError>> {
    let mut response = rec.response()?;
    if let Some(Value::String(out)) = response.get_mut("ok") {
        return Ok(Ok(std::mem::take(out)));
    }
    let detail = response["detail"].as_str().unwrap_or_default().to_string();
    Ok(Err(
        match response["error_kind"].as_str().unwrap_or_default() {
            "not-granted" => ToolError::NotGranted(detail),
            "not-found" => ToolError::NotFound(detail),
            "invalid-args" => ToolError::InvalidArgs(detail),
            "denied" => ToolError::Denied(detail),
            _ => ToolError::Failed(detail),
        },
    ))
}

fn to_wit(e: tool_impl::ToolError) -> ToolError {
    match e {
        tool_impl::ToolError::NotGranted(m) => ToolError::NotGranted(m),
        tool_impl::ToolError::NotFound(m) => ToolError::NotFound(m),
        tool_impl::ToolError::InvalidArgs(m) => ToolError::InvalidArgs(m),
        tool_impl::ToolError::Denied(m) => ToolError::Denied(m),
        tool_impl::ToolError::Failed(m) => ToolError::Failed(m),
    }
}

fn class_name(s: tool_impl::SideEffect) -> &'static str {
    match s {
        tool_impl::SideEffect::None => "none",
        tool_impl::SideEffect::Idempotent => "idempotent",
        tool_impl::SideEffect::Compensable => "compensable",
        tool_impl::SideEffect::Irreversible => "irreversible",
    }
}

impl ToolsView<'_> {
    /// Run a granted tool live with `key`, then record its result (and effects).
    async fn run_tool(
        &mut self,
        call: DurableCall,
        name: &str,
        args_json: &str,
        key: String,
        grant: Option<&str>,
    ) -> wasmtime::Result<Result<String, ToolError>> {
        let tool = self.site.run.tools.get(name);
        let mut request = json!({ "name": name, "args": args_json, "idempotency_key": key });
        if let Some(grant) = grant {
            request["grant"] = json!(grant);
        }
        // An installed tool component's build: the run's record says which one acted.
        if let Some(build) = tool.as_ref().ok().and_then(|t| t.build()) {
            request["build"] = json!(build);
        }
        // A read-only tool changed nothing in the world: its result is buffered like an
        // LLM reply (asked again if a crash loses it). Any other's is an effect.
        let read_only = tool.as_ref().map_or(true, |t| {
            t.info().side_effect == tool_impl::SideEffect::None
        });
        let ctx = ToolCallCtx {
            run_id: self.site.run.run_id.clone(),
            task_id: self.site.task_id,
            ledger: self.site.run.ledger.clone(),
            idempotency_key: key,
            effects: Default::default(),
        };
        let result = match tool {
            Err(e) => Err(e),
            Ok(tool) => match serde_json::from_str::<Value>(args_json) {
                Err(e) => Err(tool_impl::ToolError::InvalidArgs(format!(
                    "arguments are not JSON: {e}"
                ))),
                Ok(args) => tool.call(&ctx, args).await,
            },
        };
        let effects = std::mem::take(&mut *ctx.effects.lock().unwrap());
        if !effects.is_empty() {
            crate::ledger::fault::point("tool-effect");
        }
        let mut response = match &result {
            Ok(out) => json!({ "ok": out }),
            Err(e) => error_json(e),
        };
        if !effects.is_empty() {
            response["effects"] = json!(effects);
        }
        let mut event = call.call(result.is_ok(), request, response);
        if read_only {
            event.durability = Some(crate::ledger::kinds::Durability::Buffered);
        }
        // An effect's result is written durably and has its seq; a read-only one's
        // is buffered, and the checkpoints' list of tool results keeps effects only.
        if let Some(seq) = call.finish_call(self.site, event).await? {
            self.progress.tool_seqs.push(seq);
        }
        Ok(result.map_err(to_wit))
    }
}

impl Host for ToolsView<'_> {
    async fn list(&mut self) -> wasmtime::Result<Vec<ToolInfo>> {
        let mut call = self.site.begin(EventKind::ToolsList, Value::Null)?;
        let to_wit = |i: tool_impl::ToolInfo| ToolInfo {
            name: i.name,
            description: i.description,
            args_schema: i.args_schema.to_string(),
            side_effect: side_effect(i.side_effect),
        };
        if let Some(rec) = call.replayed() {
            // Answered from the record, so a replay asks no MCP server for its listing
            // (nor starts one).
            if let Ok(infos) = rec.response_as::<Vec<tool_impl::ToolInfo>>()? {
                return Ok(infos.into_iter().map(to_wit).collect());
            }
            let mut infos = self.site.run.tools.list();
            infos.retain(|i| self.visible(&i.name));
            return Ok(infos.into_iter().map(to_wit).collect());
        }
        let mut infos = self.site.run.tools.describe().await;
        infos.retain(|i| self.visible(&i.name));
        call.finish(self.site, true, Value::Null, json!(infos))
            .await?;
        Ok(infos.into_iter().map(to_wit).collect())
    }

    async fn call(
        &mut self,
        name: String,
        args_json: String,
    ) -> wasmtime::Result<Result<String, ToolError>> {
        let result = self.call_tool(&name, args_json).await?;
        if let Ok(out) = &result {
            self.note_output(&name, out);
        }
        Ok(result)
    }
}

impl ToolsView<'_> {
    /// Whether `tools.list` shows tool `name` here: to an agent, when its whole chain
    /// of spawners may call it; to a validator, when its own `grant` names it.
    fn visible(&self, name: &str) -> bool {
        self.site.tool_allowed(name)
            && (self.site.validator.is_some()
                || (self.site.run.tools)
                    .grants()
                    .visible_to_chain(&self.site.agents, name))
    }

    /// A guest's tool call: granted, recorded, replayed (see the module docs).
    async fn call_tool(
        &mut self,
        name: &str,
        args_json: String,
    ) -> wasmtime::Result<Result<String, ToolError>> {
        let name = name.to_string();
        let identity = json!({ "name": name, "args": args_json });
        let class = self.site.run.tools.side_effect_of(&name, &args_json);
        let effectful = class.is_some_and(|c| c != tool_impl::SideEffect::None);
        let mut call = if effectful {
            self.site
                .begin_effect(EventKind::ToolsCall, EventKind::ToolsIntent, identity)?
        } else {
            self.site.begin(EventKind::ToolsCall, identity)?
        };
        if !self.site.tool_allowed(&name) {
            // A validator component asked for a tool outside its own grant.
            let err = tool_impl::ToolError::NotGranted(format!(
                "`{name}` is not in this validator's `grant` (add it there and grant it to the run)"
            ));
            let request = json!({ "name": name, "args": args_json });
            call.finish(self.site, false, request, error_json(&err))
                .await?;
            return Ok(Err(to_wit(err)));
        }
        // Which grant admits this agent's call (a validator's own `grant` was checked
        // above). A refusal is recorded like any failed call; a replayed call's record
        // says what happened then.
        let admitted = match &self.site.validator {
            Some(_) => Ok(None),
            None => {
                let args = serde_json::from_str::<Value>(&args_json).unwrap_or(Value::Null);
                (self.site.run.tools)
                    .admit(&self.site.agents, &name, &args)
                    .map(Some)
            }
        };
        if let Err(err) = &admitted
            && call.replayed().is_none()
            && !matches!(call.recorded, Recorded::InDoubt(_))
        {
            let request = json!({ "name": name, "args": args_json });
            call.finish(self.site, false, request, error_json(err))
                .await?;
            return Ok(Err(to_wit(err.clone())));
        }
        if let Some(rec) = call.replayed() {
            // A human settled the in-doubt call as never having happened
            // (`agentflow settle --did-not-happen`): it runs live, as below.
            if !crate::durability::settle::did_not_happen(&rec.response()?) {
                self.progress.tool_seqs.push(rec.seq);
                return replayed_result(&rec);
            }
        }
        // From here the call runs live (again): only with a grant that admits it now.
        let grant = match admitted {
            Ok(grant) => grant,
            Err(err) => {
                let msg = format!(
                    "tool `{name}` may not run again: {err} (the run's grants changed since it was recorded)"
                );
                self.site.in_doubt = Some(msg.clone());
                return Err(wasmtime::format_err!("{msg}"));
            }
        };
        let key = format!(
            "{}/{}/{}",
            self.site.run.run_id, self.site.task_id, self.site.host_calls
        );
        if let Recorded::InDoubt(intent) = &call.recorded {
            // The record ends at the intent: did the tool act? Decide by its class.
            let request = intent.request()?;
            let class = request["side_effect"]
                .as_str()
                .unwrap_or("irreversible")
                .to_string();
            let recorded_key = request["idempotency_key"]
                .as_str()
                .unwrap_or(&key)
                .to_string();
            if class == "none" || class == "idempotent" {
                tracing::info!(run = %self.site.run.run_id, task = self.site.task_id, tool = %name, "re-running in-doubt {class} call with its idempotency key");
                return self
                    .run_tool(call, &name, &args_json, recorded_key, grant.as_deref())
                    .await;
            }
            let msg = format!(
                "in doubt: {class} tool `{name}` (intent seq {}, key {recorded_key}) may or may not have acted \
                 before the host stopped; see `agentflow recover {}`",
                intent.seq, self.site.run.run_id
            );
            self.site.in_doubt = Some(msg.clone());
            return Err(wasmtime::format_err!("{msg}"));
        }
        let info = self.site.run.tools.info(&name);
        if let (Some(info), Some(class)) = (info, class.filter(|_| effectful)) {
            let mut intent = json!({
                "name": name,
                "args": args_json,
                "idempotency_key": key,
                "side_effect": class_name(class),
                "undo": info.undo,
                "grant": grant,
            });
            if let Some(build) = self.site.run.tools.get(&name).ok().and_then(|t| t.build()) {
                intent["build"] = json!(build);
            }
            call.write_intent(self.site, EventKind::ToolsIntent, intent)
                .await?;
        }
        self.run_tool(call, &name, &args_json, key, grant.as_deref())
            .await
    }

    /// Remember a tool's result for checkpoints: in the task's seen digest and its
    /// name → result map.
    fn note_output(&mut self, name: &str, out: &str) {
        use sha2::Digest;
        self.site.seen.update(name.as_bytes());
        self.site.seen.update(out.as_bytes());
        let progress = &mut *self.progress;
        // Counted once per name, then kept: a scan per call made a long task quadratic.
        let calls = match progress.tool_output_counts.get_mut(name) {
            Some(calls) => calls,
            None => {
                let calls = (progress.tool_outputs.iter())
                    .filter(|(k, _)| {
                        k == name || k.strip_prefix(name).is_some_and(|r| r.starts_with('#'))
                    })
                    .count();
                progress
                    .tool_output_counts
                    .entry(name.to_string())
                    .or_insert(calls)
            }
        };
        let key = if *calls == 0 {
            name.to_string()
        } else {
            format!("{name}#{}", *calls + 1)
        };
        *calls += 1;
        let kept = super::checkpoint::cut(out);
        progress.tool_outputs.push((key, kept));
    }
}
