//! `agentflow:agent/tools`: list and call the tools granted to the run.
//!
//! Grants are checked first: an ungranted tool is absent from `list` and refused by
//! `call` with the grant to add. The call and its result are recorded before the
//! result reaches the guest.

use super::{Call, TaskCtx};
use crate::bindings::tools::{Host, SideEffect, ToolError, ToolInfo};
use crate::tools::{self as tool_impl, ToolCallCtx};
use serde_json::json;

fn side_effect(s: tool_impl::SideEffect) -> SideEffect {
    match s {
        tool_impl::SideEffect::None => SideEffect::None,
        tool_impl::SideEffect::Idempotent => SideEffect::Idempotent,
        tool_impl::SideEffect::Compensable => SideEffect::Compensable,
        tool_impl::SideEffect::Irreversible => SideEffect::Irreversible,
    }
}

fn tool_error(e: tool_impl::ToolError) -> ToolError {
    match e {
        tool_impl::ToolError::NotGranted(m) => ToolError::NotGranted(m),
        tool_impl::ToolError::NotFound(m) => ToolError::NotFound(m),
        tool_impl::ToolError::InvalidArgs(m) => ToolError::InvalidArgs(m),
        tool_impl::ToolError::Denied(m) => ToolError::Denied(m),
        tool_impl::ToolError::Failed(m) => ToolError::Failed(m),
    }
}

impl Host for TaskCtx {
    async fn list(&mut self) -> wasmtime::Result<Vec<ToolInfo>> {
        let started_at = self.admit()?;
        let infos = self.run.tools.list();
        let names: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
        self.record(Call::plain(
            "tools.list",
            true,
            serde_json::Value::Null,
            json!(names),
            started_at,
        ))
        .await?;
        Ok(infos
            .into_iter()
            .map(|i| ToolInfo {
                name: i.name,
                description: i.description,
                args_schema: i.args_schema.to_string(),
                side_effect: side_effect(i.side_effect),
            })
            .collect())
    }

    async fn call(
        &mut self,
        name: String,
        args_json: String,
    ) -> wasmtime::Result<Result<String, ToolError>> {
        let started_at = self.admit()?;
        let request = json!({ "name": name, "args": args_json });
        let result = match self.run.tools.get(&name) {
            Err(e) => Err(e),
            Ok(tool) => match serde_json::from_str::<serde_json::Value>(&args_json) {
                Err(e) => Err(tool_impl::ToolError::InvalidArgs(format!(
                    "arguments are not JSON: {e}"
                ))),
                Ok(args) => {
                    let ctx = ToolCallCtx {
                        run_id: self.run.run_id.clone(),
                        task_id: self.task_id,
                        ledger: self.run.ledger.clone(),
                        idempotency_key: format!(
                            "{}/{}/{}",
                            self.run.run_id, self.task_id, self.host_calls
                        ),
                    };
                    tool.call(&ctx, args).await
                }
            },
        };
        let response = match &result {
            Ok(out) => json!({ "ok": out }),
            Err(e) => json!({ "error": format!("{e:?}") }),
        };
        self.record(Call::plain(
            "tools.call",
            result.is_ok(),
            request,
            response,
            started_at,
        ))
        .await?;
        Ok(result.map_err(tool_error))
    }
}
