//! `git`: commits in the run's workspace, which is (or becomes, at the first commit) a
//! git repository of its own (`<workspace>/.git`).
//!
//! - `{"op": "commit", "message": M, "paths": [P, …]}` stages the paths (additions,
//!   changes and deletions under them) and commits exactly them; returns
//!   `{"sha", "branch", "repeated"}` and reports an [`Effect::GitCommit`].
//! - `{"op": "revert", "sha": S}` (or the recorded effect as `effect`, which is how a
//!   recovery plan calls it) runs `git revert --no-edit S`: the undo of `commit`, so
//!   the tool is *compensable*. Reverting a commit already reverted does nothing; a
//!   compensation of an in-doubt commit that never happened has nothing to revert.
//! - `{"op": "log", "n": N}` lists the last commits (`[{"sha", "subject"}]`) and
//!   changes nothing.
//!
//! Each commit carries the call's idempotency key as a trailer (`AgentFlow-Call:`), so a
//! commit re-run after a crash finds the one it already made instead of making a
//! second. Only the root task commits or reverts: the directory is the root's view (a
//! child's writes are in its copy-on-write view until its parent joins it).
//!
//! The `git` program runs with a scrubbed environment — `PATH`, `LANG=C`, a fixed author
//! and committer (`AgentFlow <agentflow@localhost>`), no system or global config — with
//! `GIT_DIR` and `GIT_WORK_TREE` set to the workspace (never a repository around it),
//! and with hooks, fsmonitor and signing turned off. The `workspace` tool refuses
//! `.git/` paths, so a guest cannot plant config or hooks that git would run.

use super::workspace_dir::{WorkspaceDir, normalise};
use super::{Effect, SideEffect, Tool, ToolCallCtx, ToolError, ToolInfo, str_arg};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The author and committer of every commit.
pub const AUTHOR: (&str, &str) = ("AgentFlow", "agentflow@localhost");
/// The branch a new repository starts on.
pub const INITIAL_BRANCH: &str = "main";
/// The trailer that carries a commit's idempotency key.
const KEY_TRAILER: &str = "AgentFlow-Call:";

/// Whether `path` (normalised) is inside the repository's own directory.
pub fn is_git_dir(path: &str) -> bool {
    path == ".git" || path.starts_with(".git/")
}

/// The built-in `git` tool, on the workspace directory.
pub struct GitTool {
    root: PathBuf,
    /// One git process at a time: two would fight over `.git/index.lock`.
    lock: tokio::sync::Mutex<()>,
}

impl GitTool {
    /// The tool on workspace `dir` (created if missing).
    pub fn new(dir: &Path) -> anyhow::Result<GitTool> {
        let dir = WorkspaceDir::open(dir)?;
        Ok(GitTool {
            root: dir.root().to_path_buf(),
            lock: Default::default(),
        })
    }

    /// Run `git ARGS` in the workspace; its stdout, or the error with its stderr.
    async fn git(&self, args: &[&str]) -> Result<String, ToolError> {
        let mut cmd = tokio::process::Command::new("git");
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("LANG", "C")
            .env("HOME", &self.root)
            .env("GIT_DIR", self.root.join(".git"))
            .env("GIT_WORK_TREE", &self.root)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", AUTHOR.0)
            .env("GIT_AUTHOR_EMAIL", AUTHOR.1)
            .env("GIT_COMMITTER_NAME", AUTHOR.0)
            .env("GIT_COMMITTER_EMAIL", AUTHOR.1)
            .current_dir(&self.root)
            .args([
                "-c",
                "core.hooksPath=/dev/null",
                "-c",
                "core.fsmonitor=false",
                "-c",
                "commit.gpgSign=false",
            ])
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = cmd
            .output()
            .await
            .map_err(|e| ToolError::Failed(format!("cannot run git: {e}")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            let mut why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if why.is_empty() {
                why = String::from_utf8_lossy(&out.stdout).trim().to_string();
            }
            Err(ToolError::Failed(format!("git {}: {why}", args[0])))
        }
    }

    /// Make the workspace a repository if it is not one.
    async fn ensure_repo(&self) -> Result<(), ToolError> {
        if !self.root.join(".git").exists() {
            self.git(&["init", "-q", "-b", INITIAL_BRANCH]).await?;
        }
        Ok(())
    }

    /// The newest commit with a message line matching `regex` (basic), if any.
    async fn find(&self, regex: &str) -> Result<Option<String>, ToolError> {
        if self
            .git(&["rev-parse", "--verify", "-q", "HEAD"])
            .await
            .is_err()
        {
            return Ok(None); // no commit yet
        }
        let grep = format!("--grep={regex}");
        let found = self.git(&["log", "-n", "1", &grep, "--format=%H"]).await?;
        Ok((!found.is_empty()).then_some(found))
    }

    async fn head(&self) -> Result<(String, String), ToolError> {
        let sha = self.git(&["rev-parse", "HEAD"]).await?;
        let branch = self
            .git(&["rev-parse", "--abbrev-ref", "HEAD"])
            .await
            .unwrap_or_default();
        Ok((sha, branch))
    }

    async fn commit(&self, ctx: &ToolCallCtx, args: &Value) -> Result<Value, ToolError> {
        let message = str_arg(args, "message")?.trim();
        if message.is_empty() || message.len() > 10_000 {
            return Err(ToolError::InvalidArgs(
                "`message` must be 1 to 10000 bytes".into(),
            ));
        }
        let paths = args["paths"]
            .as_array()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ToolError::InvalidArgs("`paths` must be a non-empty list".into()))?;
        let mut normalised = Vec::new();
        for p in paths {
            let p = p
                .as_str()
                .ok_or_else(|| ToolError::InvalidArgs("`paths` are strings".into()))?;
            let n = normalise(p).map_err(|e| ToolError::Denied(e.to_string()))?;
            if n.is_empty() || is_git_dir(&n) {
                return Err(ToolError::Denied(format!(
                    "path `{p}`: name files or directories of the workspace (not its root or .git)"
                )));
            }
            normalised.push(n);
        }
        let trailer = format!("{KEY_TRAILER} {}", ctx.idempotency_key);
        let _one = self.lock.lock().await;
        self.ensure_repo().await?;
        let this_call = format!("^{}$", escape_regex(&trailer));
        if let Some(sha) = self.find(&this_call).await? {
            let branch = self.head().await?.1;
            return Ok(self.report(ctx, sha, branch, true));
        }
        let mut add = vec!["add", "-A", "--"];
        add.extend(normalised.iter().map(String::as_str));
        self.git(&add).await?;
        let full = format!("{message}\n\n{trailer}");
        let mut commit = vec!["commit", "-q", "-m", &full, "--"];
        commit.extend(normalised.iter().map(String::as_str));
        self.git(&commit).await?;
        let (sha, branch) = self.head().await?;
        Ok(self.report(ctx, sha, branch, false))
    }

    async fn revert(&self, ctx: &ToolCallCtx, args: &Value) -> Result<Value, ToolError> {
        let sha = args["sha"]
            .as_str()
            .or_else(|| args["effect"]["sha"].as_str());
        let Some(sha) = sha else {
            if args.get("effect").is_some_and(Value::is_null) {
                // The compensation of an in-doubt commit whose result was never recorded.
                return Ok(json!({ "reverted": null, "note": "no recorded commit to revert" }));
            }
            return Err(ToolError::InvalidArgs("missing string field `sha`".into()));
        };
        if !(7..=64).contains(&sha.len()) || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ToolError::InvalidArgs(format!(
                "`{sha}` is not a commit sha"
            )));
        }
        let _one = self.lock.lock().await;
        self.ensure_repo().await?;
        let full = self
            .git(&["rev-parse", "--verify", &format!("{sha}^{{commit}}")])
            .await?;
        if let Some(done) = self.find(&format!("This reverts commit {full}\\.")).await? {
            let branch = self.head().await?.1;
            let mut out = self.report(ctx, done, branch, true);
            out["reverted"] = json!(full);
            return Ok(out);
        }
        self.git(&["revert", "--no-edit", &full]).await?;
        let (new, branch) = self.head().await?;
        let mut out = self.report(ctx, new, branch, false);
        out["reverted"] = json!(full);
        Ok(out)
    }

    /// Report the commit `sha` made (or found) by this call.
    fn report(&self, ctx: &ToolCallCtx, sha: String, branch: String, repeated: bool) -> Value {
        ctx.emit(Effect::GitCommit {
            repo: self.root.display().to_string(),
            sha: sha.clone(),
            branch: branch.clone(),
        });
        json!({ "sha": sha, "branch": branch, "repeated": repeated })
    }

    async fn log(&self, args: &Value) -> Result<Value, ToolError> {
        let n = args["n"].as_u64().unwrap_or(10).clamp(1, 1000).to_string();
        let _one = self.lock.lock().await;
        if !self.root.join(".git").exists()
            || self
                .git(&["rev-parse", "--verify", "-q", "HEAD"])
                .await
                .is_err()
        {
            return Ok(json!([]));
        }
        let text = self.git(&["log", "-n", &n, "--format=%H %s"]).await?;
        Ok(Value::Array(
            text.lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(sha, subject)| json!({ "sha": sha, "subject": subject }))
                .collect(),
        ))
    }
}

/// `text` as a basic regular expression matching exactly it.
fn escape_regex(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if ".[]\\*^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether the calling task is the run's root (the only one whose view is the directory).
fn is_root(ctx: &ToolCallCtx) -> Result<bool, ToolError> {
    ctx.ledger
        .with_reader(|conn| crate::ledger::tasks::parent_of(conn, &ctx.run_id, ctx.task_id))
        .map_err(|e| ToolError::Failed(format!("cannot read the ledger: {e}")))?
        .map(|parent| parent.is_none())
        .map_err(|e| ToolError::Failed(format!("cannot read the ledger: {e}")))
}

#[async_trait::async_trait]
impl Tool for GitTool {
    fn info(&self) -> ToolInfo {
        ToolInfo {
            name: "git".into(),
            description: "Commit files of the workspace to its git repository, revert a commit, or list commits."
                .into(),
            args_schema: json!({
                "type": "object",
                "properties": {
                    "op": { "enum": ["commit", "revert", "log"] },
                    "message": { "type": "string" },
                    "paths": { "type": "array", "items": { "type": "string" } },
                    "sha": { "type": "string" },
                    "n": { "type": "integer" }
                },
                "required": ["op"]
            }),
            side_effect: SideEffect::Compensable,
            undo: Some("revert".into()),
        }
    }

    fn side_effect_of(&self, args: &Value) -> SideEffect {
        match args.get("op").and_then(Value::as_str) {
            Some("log") => SideEffect::None,
            _ => SideEffect::Compensable,
        }
    }

    async fn call(&self, ctx: &ToolCallCtx, args: Value) -> Result<String, ToolError> {
        let op = str_arg(&args, "op")?;
        let result = match op {
            "log" => self.log(&args).await?,
            "commit" | "revert" => {
                if !is_root(ctx)? {
                    return Err(ToolError::Denied(format!(
                        "only the root task may {op}: a child's writes are in its own view until its parent joins it"
                    )));
                }
                if op == "commit" {
                    self.commit(ctx, &args).await?
                } else {
                    self.revert(ctx, &args).await?
                }
            }
            other => {
                return Err(ToolError::InvalidArgs(format!(
                    "unknown op `{other}` (commit, revert or log)"
                )));
            }
        };
        Ok(result.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(base: &Path, key: &str) -> ToolCallCtx {
        ToolCallCtx {
            run_id: "r".into(),
            task_id: 1,
            ledger: crate::ledger::Ledger::open(base.join("ledger.db")).unwrap(),
            idempotency_key: key.into(),
            effects: Default::default(),
        }
    }

    /// A commit or revert re-run with its call's key (a retry after a crash) finds
    /// what it made the first time; keys that share a prefix are different calls.
    #[test]
    fn commits_and_reverts_are_made_once_per_call() {
        let scratch = tempfile::tempdir().unwrap();
        let base = scratch.path();
        let tool = GitTool::new(&base.join("ws")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let call = |key: &str, args: Value| -> Result<Value, ToolError> {
            let out = rt.block_on(tool.call(&ctx(base, key), args))?;
            Ok(serde_json::from_str(&out).unwrap())
        };
        std::fs::write(base.join("ws/a.txt"), "one").unwrap();
        let commit = json!({"op": "commit", "message": "m", "paths": ["a.txt"]});
        let first = call("r:1:1", commit.clone()).unwrap();
        let again = call("r:1:1", commit.clone()).unwrap();
        assert_eq!(
            (&again["sha"], again["repeated"].as_bool()),
            (&first["sha"], Some(true))
        );
        // Nothing changed since: a new call has nothing to commit.
        let err = call("r:1:10", commit.clone()).unwrap_err();
        assert!(err.to_string().contains("git commit"), "{err}");
        std::fs::write(base.join("ws/a.txt"), "two").unwrap();
        let second = call("r:1:10", commit).unwrap();
        assert_ne!(second["sha"], first["sha"]);
        let sha = second["sha"].as_str().unwrap();
        let undo = json!({"op": "revert", "effect": {"type": "GitCommit", "sha": sha}});
        let reverted = call("r/1/undo-3", undo.clone()).unwrap();
        assert_eq!(reverted["reverted"], sha);
        assert_eq!(
            std::fs::read_to_string(base.join("ws/a.txt")).unwrap(),
            "one"
        );
        let twice = call("r/1/undo-3", undo).unwrap();
        assert_eq!(
            (&twice["sha"], twice["repeated"].as_bool()),
            (&reverted["sha"], Some(true))
        );
        let none = call("k", json!({"op": "revert", "effect": null})).unwrap();
        assert_eq!(none["reverted"], Value::Null);
        for bad in [
            json!({"op": "revert", "sha": "--help"}),
            json!({"op": "revert"}),
        ] {
            assert!(matches!(call("k", bad), Err(ToolError::InvalidArgs(_))));
        }
        let log = call("k", json!({"op": "log", "n": 5})).unwrap();
        assert_eq!(log.as_array().unwrap().len(), 3, "{log}");
    }
}
