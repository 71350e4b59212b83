//! `workspace`: read, write, append and list files under the one directory the
//! operator granted (`--workspace DIR`).
//!
//! Paths are relative to that directory. Absolute paths, `..` components and
//! symlinks that lead outside it are refused, so a guest can touch nothing else.
//!
//! Only the root task writes the directory itself. Every other task works in its own
//! copy-on-write view (`super::overlay`), merged into its parent's when the parent
//! waits for it (`crate::merge`).

use super::overlay::View;
use super::{SideEffect, Tool, ToolCallCtx, ToolError, ToolInfo, str_arg};
use serde_json::json;
use std::path::{Component, Path, PathBuf};

/// Largest file `read` returns, in bytes.
pub const MAX_READ_BYTES: u64 = 4 << 20;

/// The built-in `workspace` tool, rooted at one directory.
pub struct WorkspaceTool {
    root: PathBuf,
}

impl WorkspaceTool {
    /// A workspace rooted at `dir` (created if missing).
    pub fn new(dir: &Path) -> anyhow::Result<WorkspaceTool> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create workspace {}: {e}", dir.display()))?;
        let root = dir
            .canonicalize()
            .map_err(|e| anyhow::anyhow!("bad workspace {}: {e}", dir.display()))?;
        Ok(WorkspaceTool { root })
    }

    /// The directory this workspace is rooted at.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolve a guest path inside the root, or refuse it; also returns the normalised
    /// relative path (`/`-separated, "" for the root) that names it in task views.
    fn resolve(&self, rel: &str) -> Result<(PathBuf, String), ToolError> {
        let rel_path = Path::new(rel);
        let mut clean = PathBuf::new();
        for c in rel_path.components() {
            match c {
                Component::Normal(part) => clean.push(part),
                Component::CurDir => {}
                _ => {
                    return Err(ToolError::Denied(format!(
                        "path `{rel}` leaves the workspace (absolute paths and `..` are not allowed)"
                    )));
                }
            }
        }
        let full = self.root.join(&clean);
        // Follow symlinks on the longest existing prefix and check it stays inside.
        let mut existing = full.clone();
        while !existing.exists() {
            if !existing.pop() {
                break;
            }
        }
        let real = existing
            .canonicalize()
            .map_err(|e| ToolError::Failed(format!("cannot resolve `{rel}`: {e}")))?;
        if !real.starts_with(&self.root) {
            return Err(ToolError::Denied(format!(
                "path `{rel}` resolves outside the workspace"
            )));
        }
        let key = clean
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        Ok((full, key))
    }

    /// The calling task's view, from the ledger.
    fn view(&self, ctx: &ToolCallCtx) -> Result<View, ToolError> {
        ctx.ledger
            .with_reader(|conn| View::of(conn, &self.root, &ctx.run_id, ctx.task_id))
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
                    .write(move |w| view.read_snapshot(w.conn(), &key))
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
                            view.read_snapshot(w.conn(), &key)?.unwrap_or_default() + &content
                        } else {
                            content
                        };
                        view.write(w.conn(), &key, &text)
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

fn io_err(e: std::io::Error) -> ToolError {
    ToolError::Failed(e.to_string())
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
        let (path, key) = self.resolve(path_arg)?;
        let view = self.view(ctx)?;
        if !view.is_root() {
            return self.call_in_view(ctx, view, op, path_arg, key, &args).await;
        }
        match op {
            "read" => {
                let meta = tokio::fs::metadata(&path).await.map_err(io_err)?;
                if meta.len() > MAX_READ_BYTES {
                    return Err(ToolError::Failed(format!(
                        "file larger than {MAX_READ_BYTES} bytes"
                    )));
                }
                tokio::fs::read_to_string(&path).await.map_err(io_err)
            }
            "write" | "append" => {
                let content = str_arg(&args, "content")?;
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent).await.map_err(io_err)?;
                }
                if op == "write" {
                    tokio::fs::write(&path, content).await.map_err(io_err)?;
                } else {
                    use tokio::io::AsyncWriteExt;
                    let mut f = tokio::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .await
                        .map_err(io_err)?;
                    f.write_all(content.as_bytes()).await.map_err(io_err)?;
                    f.sync_data().await.map_err(io_err)?;
                }
                let after = tokio::fs::read(&path).await.map_err(io_err)?;
                ctx.emit(super::Effect::FileModified {
                    path: path_arg.to_string(),
                    hash: crate::ledger::blobs::sha256_hex(&after),
                });
                Ok(json!({ "written": content.len() }).to_string())
            }
            "list" => {
                let mut entries = tokio::fs::read_dir(&path).await.map_err(io_err)?;
                let mut names = Vec::new();
                while let Some(e) = entries.next_entry().await.map_err(io_err)? {
                    let mut name = e.file_name().to_string_lossy().into_owned();
                    if e.file_type().await.map(|t| t.is_dir()).unwrap_or(false) {
                        name.push('/');
                    }
                    names.push(name);
                }
                names.sort();
                Ok(serde_json::to_string(&names).unwrap_or_default())
            }
            other => Err(ToolError::InvalidArgs(format!(
                "unknown op `{other}` (read, write, append or list)"
            ))),
        }
    }
}
