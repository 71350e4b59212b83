//! The `agentflow` binary as a Unix citizen and its operator's errors: a closed pipe,
//! colour only on a terminal and never with `NO_COLOR`, shell completions,
//! `AGENTFLOW_DB` and nothing written to the current directory, `--input-file`'s
//! bytes, the `runs` filters and fork marks, `events`, `fork --at` past the end, and
//! errors that say what to do (unknown providers, `resolve` without a choice).

use crate::support::cli::*;
use crate::support::*;
use serde_json::{Value, json};
use std::io::Read;
use std::process::Stdio;

/// `agentflow runs | head -1` over a ledger with thousands of runs: the reader goes
/// after one line, and the binary finishes quietly (no panic, no exit 101).
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let dir = TempDir::new("cli-pipe");
    let db = dir.ledger("pipe.db");
    let out = run_example(&db, "hello", ["--input", "pipe"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run_id = only_run_id(&db);
    sql_batch(
        &db,
        &format!(
            "CREATE TEMP TABLE t AS SELECT * FROM runs WHERE run_id = '{run_id}';
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
             INSERT INTO runs SELECT '0000000000000000000000000' || (1000000 + i), agent, component_hash, input, status,
                 output, error, config_json, context_hash, forked_from, fork_seq, budget_usd,
                 tokens_in, tokens_out, cost_usd, started_at, finished_at FROM t, n;"
        ),
    );
    for args in [
        &["runs", "--limit", "100000"][..],
        &["runs", "--limit", "100000", "--json"],
    ] {
        let mut child = agentflow()
            .args(args)
            .arg("--db")
            .arg(&db)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stdout.take().unwrap();
        let mut first = [0u8; 64];
        pipe.read_exact(&mut first).unwrap();
        drop(pipe); // `head` has what it wanted
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

/// A scripted agent that logs one line at INFO.
const LOG_A_LINE: &str = r#"[{"log": "hello from the guest"}]"#;

/// The host's logs are coloured only on a terminal: never into a pipe or a file.
#[test]
fn logs_into_a_pipe_have_no_colour() {
    let dir = TempDir::new("cli-colour");
    let out = agentflow()
        .env("AGENTFLOW_LOG", "info")
        .env_remove("NO_COLOR")
        .arg("run")
        .arg(example("scripted"))
        .args(["--input", LOG_A_LINE, "--db"])
        .arg(dir.ledger("c.db"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("INFO"), "the log was on: {err}");
    assert!(
        !err.contains('\u{1b}'),
        "an escape sequence in a pipe: {err:?}"
    );
}

/// On a terminal the logs are coloured, unless `NO_COLOR` is set (no-color.org).
#[test]
fn logs_on_a_terminal_are_coloured_unless_no_color() {
    let dir = TempDir::new("cli-tty");
    let logs = |no_color: Option<&str>| {
        let mut cmd = agentflow();
        cmd.env("AGENTFLOW_LOG", "info")
            .env_remove("NO_COLOR")
            .arg("run")
            .arg(example("scripted"))
            // The live progress redraws with escape sequences of its own.
            .args(["--quiet", "--input", LOG_A_LINE, "--db"])
            .arg(dir.ledger("t.db"));
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        stderr_on_a_terminal(cmd)
    };
    let coloured = logs(None);
    assert!(coloured.contains("INFO"), "{coloured:?}");
    assert!(
        coloured.contains('\u{1b}'),
        "a terminal gets colour: {coloured:?}"
    );
    let plain = logs(Some("1"));
    assert!(plain.contains("INFO"), "{plain:?}");
    assert!(!plain.contains('\u{1b}'), "NO_COLOR=1: {plain:?}");
    // An empty NO_COLOR does not count (no-color.org).
    assert!(logs(Some("")).contains('\u{1b}'));
}

/// Run `cmd` with its stderr on a new pseudo-terminal; what it wrote there.
fn stderr_on_a_terminal(cmd: std::process::Command) -> String {
    on_a_terminal(cmd, Stdio::null()).1
}

/// Run `cmd` with its stdout to `stdout` and its stderr on a new pseudo-terminal (40
/// rows of 120 columns); its stdout (when piped) and what it wrote on the terminal.
fn on_a_terminal(mut cmd: std::process::Command, stdout: Stdio) -> (String, String) {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two new descriptors, which are owned below.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and nothing else owns them.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let child = cmd
        .stdout(stdout)
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    drop(cmd); // our copy of the terminal's slave side: the child's is the last one
    let reader = std::thread::spawn(move || {
        let mut master = std::fs::File::from(master);
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        // Linux reports EIO once the last slave descriptor is closed.
        while let Ok(n @ 1..) = master.read(&mut buf) {
            text.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&text).into_owned()
    });
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        reader.join().unwrap(),
    )
}

const FANOUT: &str = r#"{"depth": 1, "fanout": 3, "steps": 2}"#;

/// `agentflow run` on a terminal draws the task tree on stderr, each task with its
/// status, cost and tokens under a line of the run's totals; stdout, a pipe, carries
/// the output and nothing else.
#[test]
fn run_on_a_terminal_draws_the_task_tree_with_cost_and_tokens() {
    let dir = TempDir::new("cli-progress-tty");
    let mut cmd = agentflow();
    cmd.arg("run")
        .arg(example("fanout"))
        .args(["--input", FANOUT, "--grant", "kv", "--db"])
        .arg(dir.ledger("p.db"));
    let (stdout, terminal) = on_a_terminal(cmd, Stdio::piped());
    assert_eq!(stdout, "{\"tasks\":4}\n", "stdout is the output alone");
    assert!(
        terminal.contains("4 tasks: 0 running, 4 done, 0 failed"),
        "{terminal:?}"
    );
    for task in ["#1 root", "#2 fanout r.0", "#3 fanout r.1", "#4 fanout r.2"] {
        let line = terminal
            .split(['\n', '\r', '✓'])
            .find(|l| l.contains(task))
            .unwrap_or_else(|| panic!("no line for {task}: {terminal:?}"));
        assert!(
            line.contains("completed") && line.contains('$') && line.contains(" tok"),
            "{line:?}"
        );
    }
    assert!(
        terminal.contains('\u{1b}'),
        "redrawn in place: {terminal:?}"
    );
}

/// Piped, stdout is exactly the output (or the JSON report); stderr has one plain line
/// per task start and end, without escape sequences; `--quiet` leaves them out.
#[test]
fn run_into_pipes_keeps_stdout_to_the_output_and_plain_progress_lines() {
    let dir = TempDir::new("cli-progress-pipe");
    let db = dir.ledger("p.db");
    let out = run_example(&db, "fanout", ["--input", FANOUT, "--grant", "kv"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "{\"tasks\":4}\n");
    let err = stderr(&out);
    assert!(!err.contains('\u{1b}'), "{err:?}");
    for task in 1..=4 {
        assert!(
            err.contains(&format!("agentflow: task {task} started: ")),
            "{err}"
        );
        let end = err
            .lines()
            .find(|l| l.starts_with(&format!("agentflow: task {task} completed: $")))
            .unwrap_or_else(|| panic!("no end line for task {task}: {err}"));
        assert!(end.contains(" tokens, "), "{end}");
    }
    let started = err.find("agentflow: task 2 started").unwrap();
    let ended = err.find("agentflow: task 2 completed").unwrap();
    assert!(started < ended, "{err}");

    let json = run_example(
        &db,
        "fanout",
        ["--input", FANOUT, "--grant", "kv", "--json"],
    );
    let report: Value = serde_json::from_slice(&json.stdout).expect("stdout is the JSON alone");
    assert_eq!(report["output"], "{\"tasks\":4}");

    let quiet = run_example(
        &db,
        "fanout",
        ["--input", FANOUT, "--grant", "kv", "--quiet"],
    );
    assert_eq!(stdout(&quiet), "{\"tasks\":4}\n");
    assert!(
        !stderr(&quiet).contains("agentflow: task"),
        "{}",
        stderr(&quiet)
    );
}

#[test]
fn completions_for_each_shell() {
    let bash = agentflow().args(["completions", "bash"]).output().unwrap();
    assert!(bash.status.success(), "{}", stderr(&bash));
    let script = stdout(&bash);
    assert!(script.contains("_agentflow()"), "{script}");
    for word in ["events", "completions", "--since", "--input-file"] {
        assert!(script.contains(word), "{word} is completed: {script}");
    }
    let zsh = agentflow().args(["completions", "zsh"]).output().unwrap();
    assert!(
        stdout(&zsh).starts_with("#compdef agentflow"),
        "{}",
        stdout(&zsh)
    );
    let fish = agentflow().args(["completions", "fish"]).output().unwrap();
    assert!(stdout(&fish).contains("complete -c agentflow"));
    let bad = agentflow()
        .args(["completions", "cmd.exe"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("bash"), "{}", stderr(&bad));
}

/// `AGENTFLOW_DB` names the ledger (`--db` still wins), and a run writes nothing in
/// the current directory: the performance history is beside the ledger, so the quick
/// start gives the same result wherever it is run. `--input-file` keeps its bytes.
#[test]
fn agentflow_db_names_the_ledger_and_the_current_directory_stays_empty() {
    let dir = TempDir::new("cli-env-db");
    let cwd = TempDir::new("cli-env-cwd");
    let db = dir.ledger("env.db");
    let input = dir.file("input.txt", "two lines\nof input\n");
    let out = agentflow()
        .current_dir(cwd.path())
        .env("AGENTFLOW_DB", &db)
        .arg("run")
        .arg(example("hello"))
        .arg("--input-file")
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        sql::<i64>(&db, "SELECT COUNT(*) FROM runs"),
        1,
        "the ledger is where AGENTFLOW_DB says"
    );
    let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().flatten().collect();
    assert!(
        left.is_empty(),
        "written in the current directory: {left:?}"
    );
    let runs = agentflow()
        .current_dir(cwd.path())
        .env("AGENTFLOW_DB", &db)
        .args(["runs", "--json"])
        .output()
        .unwrap();
    let runs = stdout_json(&runs);
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(
        runs[0]["input"], "two lines\nof input\n",
        "the file's bytes"
    );
    // --db wins over the environment.
    let other = dir.ledger("other.db");
    let out = agentflow()
        .env("AGENTFLOW_DB", &db)
        .arg("run")
        .arg(example("hello"))
        .arg("--db")
        .arg(&other)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sql::<i64>(&other, "SELECT COUNT(*) FROM runs"), 1);
    assert_eq!(sql::<i64>(&db, "SELECT COUNT(*) FROM runs"), 1);
}

/// `runs` filters by start time, status and agent, limits, shows when each run
/// started, and marks forks; `events` lists the seqs `fork --at` takes, and an `--at`
/// past the end is an error.
#[test]
fn runs_filters_events_and_fork_at() {
    let dir = TempDir::new("cli-runs");
    let db = dir.ledger("r.db");
    let ok = run_example(&db, "hello", ["--input", "a", "--json"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let failed = run_example(&db, "hostile", ["--input", "trap"]);
    assert_eq!(failed.status.code(), Some(1));
    let ops = json!([{"llm": {"prompt": "one"}}, {"llm": {"prompt": "two"}}]).to_string();
    let scripted = stdout_json(&run_example(&db, "scripted", ["--input", &ops, "--json"]));
    let original = scripted["run_id"].as_str().unwrap().to_string();

    // events: seq, kind, status, model and cost of each; --task narrows.
    let events = stdout_json(&agentflow_on(&db, ["events", &original[..8], "--json"]));
    let events = events.as_array().unwrap();
    let llm: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "llm.complete")
        .collect();
    assert_eq!(llm.len(), 2, "{events:?}");
    for e in &llm {
        assert_eq!(e["task_id"], 1);
        assert_eq!(e["status"], "ok");
        assert!(
            e["model"].as_str().is_some_and(|m| m.starts_with("mock")),
            "{e}"
        );
        assert!(e["cost_usd"].as_f64().unwrap() > 0.0, "{e}");
    }
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "one task, in order: {seqs:?}"
    );
    let text = stdout(&agentflow_on(&db, ["events", &original, "--task", "1"]));
    let header = text.lines().next().unwrap();
    for column in ["task", "seq", "kind", "status", "model", "cost"] {
        assert!(header.contains(column), "{header}");
    }
    assert!(text.contains("llm.complete"), "{text}");
    let out = agentflow_on(&db, ["events", &original, "--task", "99"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no task 99"), "{}", stderr(&out));

    // fork --at the first call; past the last seq is an error that says where it ends.
    let at = llm[0]["seq"].as_u64().unwrap();
    let fork = stdout_json(&agentflow_on(
        &db,
        ["fork", &original, "--at", &at.to_string(), "--json"],
    ));
    assert_eq!(fork["status"], "completed", "{fork}");
    let last = *seqs.last().unwrap();
    let out = agentflow_on(&db, ["fork", &original, "--at", &(last + 1).to_string()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("beyond the end") && err.contains(&format!("seq 1 to {last}")),
        "{err}"
    );
    assert_eq!(
        sql::<i64>(&db, "SELECT COUNT(*) FROM runs"),
        4,
        "no run made"
    );

    // runs: newest first, start time, fork marked. The hello run started two days ago.
    sql_batch(
        &db,
        &format!(
            "UPDATE runs SET started_at = started_at - 172800000 WHERE run_id = '{}'",
            ok_id(&ok)
        ),
    );
    let all = stdout_json(&agentflow_on(&db, ["runs", "--json"]));
    assert_eq!(all.as_array().unwrap().len(), 4);
    assert_eq!(all[0]["forked_from"], original.as_str());
    assert_eq!(all[0]["fork_seq"], at);
    assert_eq!(all[1]["forked_from"], Value::Null);
    let text = stdout(&agentflow_on(&db, ["runs"]));
    assert!(
        text.lines().next().unwrap().contains("started (UTC)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("fork of {}@{at}", &original[..8])),
        "{text}"
    );
    let started = all[3]["started_at"].as_i64().unwrap();
    let day = agentflow::observe::when::utc(started);
    assert!(text.contains(&day), "{day} in {text}");
    // The filters.
    let ids = |args: &[&str]| -> Vec<String> {
        let out = agentflow_on(&db, [&["runs", "--json"], args].concat());
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout_json(&out)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["run_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&["--status", "failed"]).len(), 1);
    assert_eq!(ids(&["--status", "completed"]).len(), 3);
    assert_eq!(
        ids(&["--agent", "hello"]),
        vec![ok_id(&ok)],
        "only the hello run"
    );
    assert_eq!(ids(&["--limit", "2"]).len(), 2);
    assert_eq!(ids(&["--since", "1h"]).len(), 3, "not the hello run");
    assert_eq!(ids(&["--since", "3d"]).len(), 4);
    assert_eq!(ids(&["--since", "2999-01-01"]).len(), 0);
    let at_hello = agentflow::observe::when::utc(started).replace(' ', "T");
    assert_eq!(ids(&["--since", &at_hello]).len(), 4, "{at_hello}");
    let after_hello = agentflow::observe::when::utc(started + 1000).replace(' ', "T") + "Z";
    assert_eq!(ids(&["--since", &after_hello]).len(), 3, "{after_hello}");
    // `interrupted` is a running run whose host stopped (a stale lease): `--status`
    // tells it from one still running (no lease here: its host never took one).
    sql_batch(
        &db,
        &format!(
            "CREATE TEMP TABLE r AS SELECT * FROM runs WHERE run_id = '{original}';
             UPDATE r SET status = 'running', finished_at = NULL;
             UPDATE r SET run_id = 'bbbb' || substr(run_id, 5);
             INSERT INTO runs SELECT * FROM r;
             UPDATE r SET run_id = 'aaaa' || substr(run_id, 5);
             INSERT INTO runs SELECT * FROM r;
             INSERT INTO leases (run_id, host, pid, heartbeat_at)
                 SELECT run_id, 'gone', 1, 0 FROM r;"
        ),
    );
    let (orphan, running) = (
        format!("aaaa{}", &original[4..]),
        format!("bbbb{}", &original[4..]),
    );
    assert_eq!(ids(&["--status", "interrupted"]), vec![orphan.clone()]);
    assert_eq!(ids(&["--status", "running"]), vec![running]);
    assert_eq!(ids(&["--status", "running", "--limit", "0"]).len(), 0);
    for bad in [&["--status", "pending"][..], &["--since", "yesterday"]] {
        let out = agentflow_on(&db, [&["runs"], bad].concat());
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    }
}

fn ok_id(out: &std::process::Output) -> String {
    stdout_json(out)["run_id"].as_str().unwrap().to_string()
}

/// An unknown provider name says which names there are: the built-in kinds and the
/// config's own endpoints.
#[test]
fn an_unknown_provider_lists_the_known_ones() {
    let dir = TempDir::new("cli-provider");
    let run_with = |config: &str| {
        let config = dir.file("p.toml", config);
        agentflow()
            .arg("run")
            .arg(example("hello"))
            .arg("--config")
            .arg(&config)
            .arg("--db")
            .arg(dir.ledger("p.db"))
            .output()
            .unwrap()
    };
    let out = run_with("[llm]\nprovider = \"opnai\"\n");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("unknown provider `opnai`") && err.contains("`mock`, `openai` or `anthropic`"),
        "{err}"
    );
    let out = run_with(
        "[llm.endpoints.local.openai]\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         [[llm.models]]\nname = \"m\"\nprovider = \"loca\"\n\
         input_per_mtok = 1.0\noutput_per_mtok = 1.0\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("unknown provider `loca`") && err.contains("`local` ([llm.endpoints.local])"),
        "{err}"
    );
}

/// `resolve` needs `--take` or `--file`, and its error names both.
#[test]
fn resolve_without_a_choice_names_both_options() {
    let dir = TempDir::new("cli-resolve");
    let out = agentflow_on(&dir.ledger("r.db"), ["resolve", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--take") && err.contains("--file"), "{err}");
}
