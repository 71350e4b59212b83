//! `workspace`: read, write, append and list files under the one directory the
//! operator granted (`--workspace DIR`).
//!
//! Paths are relative to that directory. Every access goes through a capability-style
//! handle on it ([`WorkspaceDir`]): absolute paths, `..` components, symlinks that lead
//! outside (dangling ones too, and ones swapped in mid-call) and files with other hard
//! links are refused, so a guest can touch nothing else. `.git/` is refused too: it is
//! the `git` tool's repository.
//!
//! Only the root task writes the directory itself. Every other task works in its own
//! copy-on-write view (`super::overlay`), merged into its parent's when the parent
//! waits for it (`crate::merge`).

use super::overlay::View;
use super::workspace_dir::{WorkspaceDir, WorkspaceError, normalise};
use super::{SideEffect, Tool, ToolCallCtx, ToolError, ToolInfo, str_arg};
use serde_json::json;
use std::path::Path;

/// Largest file `read` returns, in bytes.
pub const MAX_READ_BYTES: u64 = 4 << 20;

/// The built-in `workspace` tool, rooted at one directory.
pub struct WorkspaceTool {
    dir: WorkspaceDir,
}

impl WorkspaceTool {
    /// A workspace rooted at `dir` (created if missing).
    pub fn new(dir: &Path) -> anyhow::Result<WorkspaceTool> {
        Ok(WorkspaceTool {
            dir: WorkspaceDir::open(dir)?,
        })
    }

    /// The directory this workspace is rooted at.
    pub fn root(&self) -> &Path {
        self.dir.root()
    }

    /// The capability handle on the directory.
    pub fn dir(&self) -> &WorkspaceDir {
        &self.dir
    }

    /// The calling task's view, from the ledger.
    fn view(&self, ctx: &ToolCallCtx) -> Result<View, ToolError> {
        ctx.ledger
            .with_reader(|conn| View::of(conn, &self.dir, &ctx.run_id, ctx.task_id))
            .map_err(|e| ToolError::Failed(format!("cannot read the ledger: {e}")))?
            .map_err(|e| ToolError::Failed(format!("cannot read the task's view: {e}")))
    }

    /// A call from a task other than the root: served from its copy-on-write view.
    async fn call_in_view(
        &self,
        ctx: &ToolCallCtx,
        view: View,
        op: &str,
        path_arg: &str,
        key: String,
        args: &serde_json::Value,
    ) -> Result<String, ToolError> {
        let ledger_err = |e: crate::ledger::LedgerError| ToolError::Failed(e.to_string());
        match op {
            "read" => {
                let text = ctx
                    .ledger
                    .write(move |w| view.read_snapshot(w, &key))
                    .await
                    .map_err(ledger_err)?
                    .ok_or_else(|| ToolError::Failed(format!("no such file: `{path_arg}`")))?;
                if text.len() as u64 > MAX_READ_BYTES {
                    return Err(ToolError::Failed(format!(
                        "file larger than {MAX_READ_BYTES} bytes"
                    )));
                }
                Ok(text)
            }
            "write" | "append" => {
                let content = str_arg(args, "content")?.to_string();
                let written = content.len();
                let append = op == "append";
                let hash = ctx
                    .ledger
                    .write(move |w| {
                        let text = if append {
                            view.read_snapshot(w, &key)?.unwrap_or_default() + &content
                        } else {
                            content
                        };
                        view.write(w, &key, &text)
                    })
                    .await
                    .map_err(ledger_err)?;
                ctx.emit(super::Effect::FileModified {
                    path: path_arg.to_string(),
                    hash,
                });
                Ok(json!({ "written": written }).to_string())
            }
            "list" => {
                let names = ctx
                    .ledger
                    .with_reader(|conn| view.list(conn, &key))
                    .map_err(ledger_err)?
                    .map_err(|e| ToolError::Failed(e.to_string()))?;
                Ok(serde_json::to_string(&names).unwrap_or_default())
            }
            other => Err(ToolError::InvalidArgs(format!(
                "unknown op `{other}` (read, write, append or list)"
            ))),
        }
    }
}

fn ws_err(e: WorkspaceError) -> ToolError {
    if e.is_denial() {
        ToolError::Denied(e.to_string())
    } else {
        ToolError::Failed(e.to_string())
    }
}

/// Run blocking file I/O off the async workers.
async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, WorkspaceError> + Send + 'static,
) -> Result<R, ToolError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ToolError::Failed(format!("workspace I/O task failed: {e}")))?
        .map_err(ws_err)
}

#[async_trait::async_trait]
impl Tool for WorkspaceTool {
    fn info(&self) -> ToolInfo {
        ToolInfo {
            name: "workspace".into(),
            description: "Read, write, append and list files in the run's workspace directory."
                .into(),
            args_schema: json!({
                "type": "object",
                "properties": {
                    "op": { "enum": ["read", "write", "append", "list"] },
                    "path": { "type": "string", "description": "relative to the workspace" },
                    "content": { "type": "string" }
                },
                "required": ["op"]
            }),
            side_effect: SideEffect::Irreversible,
            undo: None,
        }
    }

    /// Reads and listings change nothing; writing the same content again is harmless;
    /// appending twice is not.
    fn side_effect_of(&self, args: &serde_json::Value) -> SideEffect {
        match args.get("op").and_then(|o| o.as_str()) {
            Some("write") => SideEffect::Idempotent,
            Some("append") => SideEffect::Irreversible,
            _ => SideEffect::None,
        }
    }

    async fn call(&self, ctx: &ToolCallCtx, args: serde_json::Value) -> Result<String, ToolError> {
        let op = str_arg(&args, "op")?;
        let path_arg = args.get("path").and_then(|v| v.as_str()).unwrap_or(".");
        let key = normalise(path_arg).map_err(ws_err)?;
        if super::git::is_git_dir(&key) {
            // Config or hooks planted there would be run by the `git` tool's git.
            return Err(ToolError::Denied(format!(
                "`{path_arg}` is the repository's own directory, which only the git tool changes"
            )));
        }
        let view = self.view(ctx)?;
        if !view.is_root() {
            return self.call_in_view(ctx, view, op, path_arg, key, &args).await;
        }
        let dir = self.dir.clone();
        match op {
            "read" => {
                let bytes = blocking(move || dir.read(&key, MAX_READ_BYTES))
                    .await?
                    .ok_or_else(|| ToolError::Failed(format!("no such file: `{path_arg}`")))?;
                String::from_utf8(bytes)
                    .map_err(|_| ToolError::Failed(format!("`{path_arg}` is not UTF-8 text")))
            }
            "write" | "append" => {
                let content = str_arg(&args, "content")?.to_string();
                let written = content.len();
                let append = op == "append";
                let after = blocking(move || dir.write(&key, content.as_bytes(), append)).await?;
                ctx.emit(super::Effect::FileModified {
                    path: path_arg.to_string(),
                    hash: crate::ledger::blobs::sha256_hex(&after),
                });
                Ok(json!({ "written": written }).to_string())
            }
            "list" => {
                let names = blocking(move || dir.list(&key))
                    .await?
                    .ok_or_else(|| ToolError::Failed(format!("no such directory: `{path_arg}`")))?;
                Ok(serde_json::to_string(&names).unwrap_or_default())
            }
            other => Err(ToolError::InvalidArgs(format!(
                "unknown op `{other}` (read, write, append or list)"
            ))),
        }
    }
}
