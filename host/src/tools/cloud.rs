//! `cloud`: a simulated cloud provider for demos and crash tests. It keeps its state
//! in `cloud.log` in the run's workspace, one line per action (and every invocation,
//! repeats included, in `cloud.calls`, the simulated cloud's API log).
//!
//! `{"op": "create", "resource": NAME}` provisions a resource and returns its id;
//! `{"op": "destroy", "id": ID}` removes one (the undo of `create`). Every line carries
//! the call's idempotency key, and an action whose key is already in the log is not
//! repeated — so re-running an in-doubt call after a crash is harmless, which is what
//! makes the tool *idempotent* (with `destroy` as its compensation for rollbacks).
//!
//! `{"op": "health", "id": ID}` reads the log and writes nothing: a resource exists
//! from its `create` line until a `destroy` line; it is healthy unless its name starts
//! with `unhealthy-` — the deterministic way to simulate a deployment that came up
//! broken (for outcome validators). Returns
//! `{"id", "resource", "exists", "healthy"}`; an unknown or destroyed id is not healthy.

use super::{Effect, SideEffect, Tool, ToolCallCtx, ToolError, ToolInfo, str_arg};
use serde_json::json;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// The built-in `cloud` tool, writing to `<workspace>/cloud.log`.
pub struct CloudTool {
    log: PathBuf,
}

impl CloudTool {
    /// A simulated cloud whose state lives in `dir`.
    pub fn new(dir: &Path) -> anyhow::Result<CloudTool> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create workspace {}: {e}", dir.display()))?;
        Ok(CloudTool {
            log: dir.join("cloud.log"),
        })
    }
}

impl CloudTool {
    /// The state of resource `id` as the log tells it.
    async fn health(&self, id: &str) -> Result<String, ToolError> {
        let text = match tokio::fs::read_to_string(&self.log).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(failed(e)),
        };
        let mut resource: Option<String> = None;
        let mut exists = false;
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("create"), Some(name), Some(field)) if field == format!("id={id}") => {
                    resource = Some(name.to_string());
                    exists = true;
                }
                (Some("destroy"), Some(gone), _) if gone == id => exists = false,
                _ => {}
            }
        }
        let healthy = exists
            && resource
                .as_deref()
                .is_some_and(|r| !r.starts_with("unhealthy-"));
        Ok(
            json!({ "id": id, "resource": resource, "exists": exists, "healthy": healthy })
                .to_string(),
        )
    }
}

/// The `id` argument. Ids are single words like the log's fields: one with a newline
/// would write lines of its own into the log (a forged `create`, or another call's
/// idempotency key).
fn id_arg(args: &serde_json::Value) -> Result<&str, ToolError> {
    let id = str_arg(args, "id")?;
    if id.is_empty() || id.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(ToolError::InvalidArgs(
            "ids are non-empty, without spaces or control characters".into(),
        ));
    }
    Ok(id)
}

fn failed(e: std::io::Error) -> ToolError {
    ToolError::Failed(e.to_string())
}

#[async_trait::async_trait]
impl Tool for CloudTool {
    fn info(&self) -> ToolInfo {
        ToolInfo {
            name: "cloud".into(),
            description:
                "Provision (create), remove (destroy) or check (health) a simulated cloud resource."
                    .into(),
            args_schema: json!({
                "type": "object",
                "properties": {
                    "op": { "enum": ["create", "destroy", "health"] },
                    "resource": { "type": "string" },
                    "id": { "type": "string" }
                },
                "required": ["op"]
            }),
            side_effect: SideEffect::Idempotent,
            undo: Some("destroy".into()),
        }
    }

    async fn call(&self, ctx: &ToolCallCtx, args: serde_json::Value) -> Result<String, ToolError> {
        let op = str_arg(&args, "op")?;
        if op == "health" {
            return self.health(id_arg(&args)?).await;
        }
        let (id, line) = match op {
            "create" => {
                let resource = str_arg(&args, "resource")?;
                if resource.is_empty() || resource.contains(char::is_whitespace) {
                    return Err(ToolError::InvalidArgs(
                        "resource names are non-empty, without spaces".into(),
                    ));
                }
                let id = format!(
                    "res-{}",
                    &crate::ledger::blobs::sha256_hex(resource.as_bytes())[..10]
                );
                let line = format!("create {resource} id={id} key={}\n", ctx.idempotency_key);
                (id, line)
            }
            "destroy" => {
                let id = id_arg(&args)?.to_string();
                let line = format!("destroy {id} key={}\n", ctx.idempotency_key);
                (id, line)
            }
            other => {
                return Err(ToolError::InvalidArgs(format!(
                    "unknown op `{other}` (create, destroy or health)"
                )));
            }
        };
        let existing = match tokio::fs::read_to_string(&self.log).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(failed(e)),
        };
        let marker = format!(" key={}\n", ctx.idempotency_key);
        let repeated = existing.contains(&marker);
        // The simulated cloud's API log: every invocation, repeats included, so a test
        // can count real calls (`cloud.log` holds each action once).
        let call = format!("{} repeated={repeated}\n", line.trim_end());
        let mut calls = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log.with_file_name("cloud.calls"))
            .await
            .map_err(failed)?;
        calls.write_all(call.as_bytes()).await.map_err(failed)?;
        if !repeated {
            let mut f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .await
                .map_err(failed)?;
            f.write_all(line.as_bytes()).await.map_err(failed)?;
            f.sync_data().await.map_err(failed)?;
        }
        ctx.emit(Effect::CloudResource {
            provider: "simcloud".into(),
            id: id.clone(),
            action: op.into(),
        });
        Ok(json!({ "id": id, "action": op, "repeated": repeated }).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_write_lines_of_their_own() {
        // `destroy` wrote any id into cloud.log, so an id with a newline added a forged
        // `create` line with another call's key (the tool_call fuzz target checks this).
        let scratch = tempfile::tempdir().unwrap();
        let base = scratch.path();
        let ctx = ToolCallCtx {
            run_id: "r".into(),
            task_id: 1,
            ledger: crate::ledger::Ledger::open(base.join("ledger.db")).unwrap(),
            idempotency_key: "r:1:1".into(),
            effects: Default::default(),
        };
        let tool = CloudTool::new(&base.join("ws")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let forged = "res-1 key=r:1:1\ncreate evil id=res-0000000000";
        for (op, id) in [
            ("destroy", forged),
            ("destroy", ""),
            ("health", "a\tb"),
            ("destroy", "a\u{0}b"),
        ] {
            let args = serde_json::json!({ "op": op, "id": id });
            let result = rt.block_on(tool.call(&ctx, args));
            assert!(
                matches!(result, Err(ToolError::InvalidArgs(_))),
                "{op} {id:?}: {result:?}"
            );
        }
        assert!(!base.join("ws/cloud.log").exists(), "nothing was written");
        let ok =
            rt.block_on(tool.call(&ctx, serde_json::json!({ "op": "destroy", "id": "res-1" })));
        assert!(ok.is_ok(), "{ok:?}");
        let log = std::fs::read_to_string(base.join("ws/cloud.log")).unwrap();
        assert_eq!(log, "destroy res-1 key=r:1:1\n");
    }
}
