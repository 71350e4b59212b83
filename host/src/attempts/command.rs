//! Command validators at work (`[[validators]] kind = "command"`, config in
//! [`crate::checks::command`]): the task's view of the workspace is copied into a
//! scratch directory, its output and input written next to it, and the operator's
//! command run there in the sandbox of [`crate::checks::sandbox`]. Exit status 0
//! passes; any other status, a signal or the timeout fails the task with the end of
//! the command's output as the reason (which a `feedback` retry hands the next attempt).
//!
//! Layout of the scratch directory (removed afterwards):
//! `work/` (the workspace view, the command's working directory), `output` (the task's
//! output, also its stdin; `$AGENTFLOW_OUTPUT`), `input` (`$AGENTFLOW_INPUT`), `home/`
//! (`$HOME`) and `tmp/` (`$TMPDIR`).
//!
//! A command that cannot run — no program of that name, no way to cut it off the
//! network, a workspace view too large to copy — yields `uncertain` with the reason, like
//! a validator component that cannot load. It runs in an execution slot of the run.

use crate::checks::sandbox::{self, Exit, Sandboxed};
use crate::checks::{Category, CommandCheck, Verdict};
use crate::supervisor::RunContext;
use crate::tools::overlay::View;
use serde_json::{Value, json};
use std::sync::Arc;

/// Largest workspace view copied for a command, in bytes.
pub const MAX_VIEW_BYTES: u64 = 256 << 20;

/// What a command validator found.
pub struct Checked {
    pub verdict: Verdict,
    /// The category its exit code maps to (`syntactic_exit_codes`), if any.
    pub category: Option<Category>,
    /// Recorded with the verdict: exit, duration, bytes of workspace copied.
    pub detail: Value,
}

/// Run command validator `spec` on task `task_id`'s workspace view and output.
pub async fn check(
    run: &Arc<RunContext>,
    task_id: u64,
    spec: &CommandCheck,
    input: &str,
    output: &str,
) -> Checked {
    let _slot = run.take_slot(task_id).await;
    let (run, spec) = (run.clone(), spec.clone());
    let (input, output) = (input.to_string(), output.to_string());
    let ran =
        tokio::task::spawn_blocking(move || run_blocking(&run, task_id, &spec, &input, &output))
            .await;
    match ran {
        Ok(checked) => checked,
        Err(e) => uncertain(format!("the command validator's thread failed: {e}")),
    }
}

fn uncertain(why: String) -> Checked {
    Checked {
        verdict: Verdict::Uncertain(why),
        category: None,
        detail: Value::Null,
    }
}

fn run_blocking(
    run: &RunContext,
    task_id: u64,
    spec: &CommandCheck,
    input: &str,
    output: &str,
) -> Checked {
    let prepared = (|| -> anyhow::Result<_> {
        let scratch = tempfile::Builder::new()
            .prefix("agentflow-check-")
            .tempdir()?;
        let at = |name: &str| scratch.path().join(name);
        for dir in ["work", "home", "tmp"] {
            std::fs::create_dir(at(dir))?;
        }
        std::fs::write(at("output"), output)?;
        std::fs::write(at("input"), input)?;
        let copied = match run.tools.workspace_dir() {
            None => 0,
            Some(root) => run.ledger.with_reader(|conn| {
                View::of(conn, root, &run.run_id, task_id)
                    .map_err(anyhow::Error::from)
                    .and_then(|view| view.materialize(conn, &at("work"), MAX_VIEW_BYTES))
            })??,
        };
        Ok((scratch, copied))
    })();
    let (scratch, copied) = match prepared {
        Ok(p) => p,
        Err(e) => return uncertain(format!("cannot prepare the task's workspace view: {e:#}")),
    };
    let at = |name: &str| scratch.path().join(name);
    let (output_file, input_file) = (at("output"), at("input"));
    let env = spec.environment(
        |name| std::env::var(name).ok(),
        &at("home"),
        &at("tmp"),
        &[
            ("AGENTFLOW_OUTPUT", &output_file),
            ("AGENTFLOW_INPUT", &input_file),
        ],
    );
    let work = at("work");
    let finished = sandbox::run(&Sandboxed {
        argv: &spec.command,
        dir: &work,
        env: &env,
        stdin: Some(&output_file),
        timeout: spec.timeout(),
        memory_bytes: spec.memory_mb() << 20,
        tail_bytes: spec.tail_bytes(),
    });
    let f = match finished {
        Ok(f) => f,
        Err(e) => return uncertain(e.to_string()),
    };
    let shown = shown_command(&spec.command);
    let mut tail = f.tail.trim_end().to_string();
    if f.dropped_bytes > 0 {
        tail = format!("[… {} bytes before]\n{tail}", f.dropped_bytes);
    }
    let with_tail = |head: String| {
        if tail.is_empty() {
            head
        } else {
            format!("{head}; output tail:\n{tail}")
        }
    };
    let memory_hint = |what: &str| {
        format!(
            "{what} (the memory limit is {} MiB, `memory_mb`)",
            spec.memory_mb()
        )
    };
    let (verdict, category, exit) = match f.exit {
        Exit::Code(0) => (Verdict::Pass, None, json!(0)),
        Exit::Code(code) => {
            let mut head = format!("`{shown}` exited with status {code}");
            if tail.to_lowercase().contains("memory") {
                head = memory_hint(&head);
            }
            (
                Verdict::Fail(with_tail(head)),
                spec.category_of_exit(code),
                json!(code),
            )
        }
        Exit::Signal(sig) => {
            let mut head = format!("`{shown}` was killed by signal {sig}");
            if [libc::SIGKILL, libc::SIGSEGV, libc::SIGABRT, libc::SIGBUS].contains(&sig) {
                head = memory_hint(&head);
            }
            (
                Verdict::Fail(with_tail(head)),
                None,
                json!(format!("signal {sig}")),
            )
        }
        Exit::TimedOut => (
            Verdict::Fail(with_tail(format!(
                "`{shown}` timed out after {} ms (`timeout_ms`); its processes were killed",
                spec.timeout().as_millis()
            ))),
            None,
            json!("timeout"),
        ),
    };
    Checked {
        verdict,
        category,
        detail: json!({
            "exit": exit,
            "elapsed_ms": f.elapsed.as_millis() as u64,
            "workspace_bytes": copied,
        }),
    }
}

/// The command as a reason names it: its words, shortened.
fn shown_command(argv: &[String]) -> String {
    let text = argv.join(" ");
    if text.chars().count() > 80 {
        text.chars().take(77).collect::<String>() + "…"
    } else {
        text
    }
}
