//! `kv`: a key-value store private to the run, kept in the ledger's `kv` table.
//!
//! `{"op": "get", "key": K}` returns the value (JSON `null` when absent);
//! `{"op": "put", "key": K, "value": V}` stores V (text) and returns `"ok"`.
//! Writes commit before the guest sees the answer, like every ledger write.

use super::{SideEffect, Tool, ToolCallCtx, ToolError, ToolInfo, str_arg};
use serde_json::json;

/// Largest key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// The built-in `kv` tool.
pub struct KvTool;

#[async_trait::async_trait]
impl Tool for KvTool {
    fn info(&self) -> ToolInfo {
        ToolInfo {
            name: "kv".into(),
            description: "Get or put text values in the run's private key-value store.".into(),
            args_schema: json!({
                "type": "object",
                "properties": {
                    "op": { "enum": ["get", "put"] },
                    "key": { "type": "string" },
                    "value": { "type": "string" }
                },
                "required": ["op", "key"]
            }),
            side_effect: SideEffect::Idempotent,
            undo: None,
        }
    }

    async fn call(&self, ctx: &ToolCallCtx, args: serde_json::Value) -> Result<String, ToolError> {
        let op = str_arg(&args, "op")?;
        let key = str_arg(&args, "key")?.to_string();
        if key.len() > MAX_KEY_BYTES {
            return Err(ToolError::InvalidArgs(format!(
                "key longer than {MAX_KEY_BYTES} bytes"
            )));
        }
        let run_id = ctx.run_id.clone();
        match op {
            "get" => {
                let value: Option<String> = ctx
                    .ledger
                    .write(move |w| w.kv_get(&run_id, &key))
                    .await
                    .map_err(|e| ToolError::Failed(e.to_string()))?;
                Ok(serde_json::to_string(&value).unwrap_or_else(|_| "null".into()))
            }
            "put" => {
                let value = match args.get("value") {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => return Err(ToolError::InvalidArgs("missing field `value`".into())),
                };
                if value.len() > MAX_VALUE_BYTES {
                    return Err(ToolError::InvalidArgs(format!(
                        "value longer than {MAX_VALUE_BYTES} bytes"
                    )));
                }
                ctx.ledger
                    .write(move |w| w.kv_put(&run_id, &key, &value))
                    .await
                    .map_err(|e| ToolError::Failed(e.to_string()))?;
                ctx.emit(super::Effect::DatabaseMutation {
                    table: "kv".into(),
                    op: super::DbOp::Upsert,
                });
                Ok("\"ok\"".into())
            }
            other => Err(ToolError::InvalidArgs(format!(
                "unknown op `{other}` (get or put)"
            ))),
        }
    }
}
