//! `[[validators]] kind = "command"`: an operator's program (a test suite, a linter, a
//! syntax checker) judges a task by its exit status. This file is its config — the argv,
//! limits, environment allow-list and exit-code mapping — and the environment it runs
//! in; [`super::sandbox`] runs it, `crate::attempts::command` gives it the task's
//! workspace view.
//!
//! Operator config only: a spawn request cannot carry one ([`super::spawned`]), since it
//! runs code on the host.

use super::Category;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// Default `timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;
/// Default `memory_mb` (address space: a compiler or an interpreter reserves far more
/// than it touches).
pub const DEFAULT_MEMORY_MB: u64 = 1024;
/// Default `output_tail_bytes`.
pub const DEFAULT_TAIL_BYTES: usize = 4000;
/// Largest `output_tail_bytes`: the tail is the verdict's reason, which goes into the
/// ledger and the next attempt's prompt.
pub const MAX_TAIL_BYTES: usize = 64 * 1024;

/// `kind = "command"`: run `command` on the task's workspace view; exit status 0 passes.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CommandCheck {
    /// The program and its arguments (no shell: `["sh", "-c", "…"]` if one is wanted).
    /// A program without `/` is looked up on the host's `PATH`.
    pub command: Vec<String>,
    /// Wall-clock limit; on expiry the command's whole process group is killed.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Address-space limit of each of its processes (`RLIMIT_AS`), in MiB.
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// Names of host environment variables passed through (the rest is scrubbed).
    #[serde(default)]
    pub env: Vec<String>,
    /// Exit codes that mean a syntactic failure; any other failure is the validator's
    /// category (semantic by default).
    #[serde(default)]
    pub syntactic_exit_codes: Vec<i32>,
    /// How much of the end of its output (stdout and stderr) the verdict keeps.
    #[serde(default)]
    pub output_tail_bytes: Option<usize>,
}

impl CommandCheck {
    /// The wall-clock limit.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS))
    }

    /// The memory limit in MiB.
    pub fn memory_mb(&self) -> u64 {
        self.memory_mb.unwrap_or(DEFAULT_MEMORY_MB)
    }

    /// How many bytes of output the verdict keeps.
    pub fn tail_bytes(&self) -> usize {
        self.output_tail_bytes.unwrap_or(DEFAULT_TAIL_BYTES)
    }

    /// The category an exit code maps to, when the config maps it.
    pub fn category_of_exit(&self, code: i32) -> Option<Category> {
        self.syntactic_exit_codes
            .contains(&code)
            .then_some(Category::Syntactic)
    }

    /// Reject settings that cannot work, naming the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        match self.command.first() {
            None => {
                anyhow::bail!("[[validators]] command: `command` is empty (argv: program first)")
            }
            Some(p) if p.trim().is_empty() => {
                anyhow::bail!("[[validators]] command: `command[0]` names no program")
            }
            _ => {}
        }
        if self.timeout_ms == Some(0) {
            anyhow::bail!("[[validators]] command: `timeout_ms` must be positive");
        }
        if let Some(mb) = self.memory_mb.filter(|mb| !(16..=1 << 20).contains(mb)) {
            anyhow::bail!(
                "[[validators]] command: `memory_mb` = {mb} is out of range (16 to 1048576)"
            );
        }
        if let Some(n) = self.output_tail_bytes.filter(|n| *n > MAX_TAIL_BYTES) {
            anyhow::bail!(
                "[[validators]] command: `output_tail_bytes` = {n} is more than {MAX_TAIL_BYTES}"
            );
        }
        if let Some(bad) = self
            .env
            .iter()
            .find(|n| n.is_empty() || n.contains('=') || n.contains('\0'))
        {
            anyhow::bail!("[[validators]] command: `env` entry {bad:?} is not a variable name");
        }
        Ok(())
    }

    /// The command's whole environment: `PATH` (the host's), `HOME` (`home`, a scratch
    /// directory, unless `env` lists `HOME`), `LANG`, `TMPDIR`, the variables `env` lists
    /// that the host has (`host_var`), and `files` (e.g. `AGENTFLOW_OUTPUT`).
    pub fn environment(
        &self,
        host_var: impl Fn(&str) -> Option<String>,
        home: &Path,
        tmp: &Path,
        files: &[(&str, &Path)],
    ) -> Vec<(String, String)> {
        let path = host_var("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        let mut env = vec![
            ("PATH".to_string(), path),
            ("HOME".to_string(), home.display().to_string()),
            ("LANG".to_string(), "C.UTF-8".to_string()),
            ("TMPDIR".to_string(), tmp.display().to_string()),
        ];
        for name in &self.env {
            if let Some(value) = host_var(name) {
                env.retain(|(n, _)| n != name);
                env.push((name.clone(), value));
            }
        }
        for (name, path) in files {
            env.push((name.to_string(), path.display().to_string()));
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: serde_json::Value) -> CommandCheck {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn settings_are_checked_and_default() {
        let c = check(serde_json::json!({"command": ["true"]}));
        c.validate().unwrap();
        assert_eq!(
            (c.timeout(), c.memory_mb(), c.tail_bytes()),
            (Duration::from_secs(60), 1024, 4000)
        );
        for (json, expected) in [
            (serde_json::json!({"command": []}), "`command` is empty"),
            (serde_json::json!({"command": [" "]}), "names no program"),
            (
                serde_json::json!({"command": ["t"], "timeout_ms": 0}),
                "`timeout_ms`",
            ),
            (
                serde_json::json!({"command": ["t"], "memory_mb": 1}),
                "`memory_mb` = 1",
            ),
            (
                serde_json::json!({"command": ["t"], "output_tail_bytes": 1 << 20}),
                "`output_tail_bytes`",
            ),
            (
                serde_json::json!({"command": ["t"], "env": ["A=b"]}),
                "not a variable name",
            ),
        ] {
            let err = check(json.clone()).validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{json}: {err}");
        }
        let c = check(serde_json::json!({"command": ["t"], "syntactic_exit_codes": [2]}));
        assert_eq!(c.category_of_exit(2), Some(Category::Syntactic));
        assert_eq!(c.category_of_exit(1), None);
    }

    #[test]
    fn the_environment_is_the_allow_list_and_nothing_else() {
        let c =
            check(serde_json::json!({"command": ["t"], "env": ["RUSTUP_HOME", "UNSET", "HOME"]}));
        let host = |n: &str| match n {
            "PATH" => Some("/bin".to_string()),
            "RUSTUP_HOME" => Some("/r".to_string()),
            "HOME" => Some("/root".to_string()),
            "SECRET" => Some("s3cret".to_string()),
            _ => None,
        };
        let env = c.environment(
            host,
            Path::new("/t/home"),
            Path::new("/t/tmp"),
            &[("AGENTFLOW_OUTPUT", Path::new("/t/output"))],
        );
        let names: Vec<_> = env.iter().map(|(n, v)| format!("{n}={v}")).collect();
        assert_eq!(
            names,
            [
                "PATH=/bin",
                "LANG=C.UTF-8",
                "TMPDIR=/t/tmp",
                "RUSTUP_HOME=/r",
                "HOME=/root",
                "AGENTFLOW_OUTPUT=/t/output"
            ]
        );
        let scratch_home = check(serde_json::json!({"command": ["t"]})).environment(
            host,
            Path::new("/t/home"),
            Path::new("/t/tmp"),
            &[],
        );
        assert!(scratch_home.contains(&("HOME".into(), "/t/home".into())));
    }
}
