//! Resume is the same run: a run records the configuration it was started with (mock
//! rules by their contents, catalog, validators, merge, retry, tools, limits) and a
//! resume without `--config` runs on it — from any directory — while a `--config`
//! that differs is reported key by key and refused unless `--allow-changed`.

use crate::support::cli::*;
use crate::support::*;
use std::path::Path;
use std::process::Output;

/// An example run as the README shows it: from the repository root, the example's own
/// config given by its relative path (its rules file is relative to the root too).
struct Case {
    agent: &'static str,
    input: &'static str,
    /// Config text, written to a file in the run's directory; `None`: the defaults.
    config: Option<String>,
    /// The run uses a workspace directory of its own.
    workspace: bool,
    /// Further `run` flags (grants).
    flags: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    let example_config =
        |name: &str| std::fs::read_to_string(repo_path(&format!("examples/{name}/agentflow.toml")));
    // The refactor example without its critical path, so the run does not stop for a
    // human: its merges are the example's own (trivial and semantic).
    let refactor = example_config("refactor")
        .unwrap()
        .replace("critical_paths = [\"deploy/*\"]", "");
    vec![
        Case {
            agent: "webscraper",
            input: "Scrape product prices from shop.example.com",
            config: Some(example_config("webscraper").unwrap()),
            workspace: false,
            flags: &[],
        },
        Case {
            agent: "refactor",
            input: "Harden the pricing module",
            config: Some(refactor),
            workspace: true,
            flags: &[],
        },
        Case {
            agent: "testwriter",
            input: "fn parse_port(s: &str) -> Option<u16>",
            // Its workspace (the code its command validator tests) by an absolute path,
            // which a resume from elsewhere finds too.
            config: Some(example_config("testwriter").unwrap().replace(
                "\"examples/testwriter/workspace\"",
                &format!(
                    "{:?}",
                    repo_path("examples/testwriter/workspace").to_str().unwrap()
                ),
            )),
            workspace: false,
            flags: &[],
        },
        Case {
            agent: "researcher",
            input: "Why sandbox agents?",
            config: None,
            workspace: false,
            flags: &[],
        },
        Case {
            agent: "deployer",
            input: r#"{"app": "shop", "resources": 3}"#,
            config: None,
            workspace: true,
            flags: &["--grant", "cloud"],
        },
        Case {
            agent: "fanout",
            input: r#"{"depth": 2, "fanout": 2, "steps": 2}"#,
            config: None,
            workspace: false,
            flags: &["--grant", "kv"],
        },
        Case {
            agent: "hello",
            input: "there",
            config: None,
            workspace: false,
            flags: &[],
        },
    ]
}

/// `agentflow run` of `case` from the repository root into `dir`, with `env` set.
fn run_case(case: &Case, dir: &TempDir, env: &[(&str, String)]) -> Output {
    let mut cmd = agentflow();
    cmd.current_dir(repo_path(""))
        .arg("run")
        .arg(example(case.agent))
        .args(["--input", case.input, "--json", "--db"])
        .arg(dir.ledger("run.db"));
    if let Some(text) = &case.config {
        cmd.arg("--config").arg(dir.file("agentflow.toml", text));
    }
    if case.workspace {
        cmd.arg("--workspace").arg(dir.join("ws"));
    }
    cmd.args(case.flags);
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    cmd.output().unwrap()
}

/// `agentflow resume RUN --json --db DB ARGS` from a directory that is not the
/// repository root: a relative rules file would not be found from there.
fn resume_elsewhere(db: &Path, args: &[&str]) -> Output {
    let elsewhere = TempDir::new("same-run-cwd");
    agentflow()
        .current_dir(elsewhere.path())
        .args(["resume", &only_run_id(db), "--json", "--db"])
        .arg(db)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn each_example_crashed_midway_resumes_without_flags_to_the_uncrashed_output() {
    for case in cases() {
        let label = case.agent;
        let base = TempDir::new("same-run-base");
        let baseline = run_case(&case, &base, &[]);
        assert!(baseline.status.success(), "{label}: {}", stderr(&baseline));
        let baseline = stdout_json(&baseline);
        assert_eq!(baseline["status"], "completed", "{label}: {baseline}");
        let events: i64 = sql(&base.ledger("run.db"), "SELECT COUNT(*) FROM events");
        assert!(events >= 2, "{label}: {events} events");

        let dir = TempDir::new("same-run-crash");
        let crash_after = (events / 2).max(1).to_string();
        let crashed = run_case(
            &case,
            &dir,
            &[("AGENTFLOW_CRASH_AFTER_EVENTS", crash_after.clone())],
        );
        assert!(
            !crashed.status.success() && stderr(&crashed).contains("AGENTFLOW_CRASH_AFTER_EVENTS"),
            "{label}: the host was killed after event {crash_after}: {}",
            stderr(&crashed)
        );
        let db = dir.ledger("run.db");
        let resumed = resume_elsewhere(&db, &[]);
        assert!(resumed.status.success(), "{label}: {}", stderr(&resumed));
        let resumed = stdout_json(&resumed);
        assert_eq!(resumed["status"], "completed", "{label}: {resumed}");
        assert_eq!(
            resumed["output"], baseline["output"],
            "{label}: the resumed run's output is the uncrashed run's"
        );
        assert_eq!(
            resumed["tasks"], baseline["tasks"],
            "{label}: the same tree"
        );
    }
}

#[test]
fn a_different_config_is_refused_key_by_key_unless_allowed() {
    let case = &cases()[0];
    let dir = TempDir::new("same-run-changed");
    let crashed = run_case(
        case,
        &dir,
        &[("AGENTFLOW_CRASH_AFTER_EVENTS", "3".to_string())],
    );
    assert!(!crashed.status.success());
    let db = dir.ledger("run.db");
    // The example's limits with another budget, and no mock rules.
    let other = dir.file(
        "other.toml",
        "[limits]\nmax_depth = 3\n[budget]\nusd = 0.25\n",
    );
    let refused = resume_elsewhere(&db, &["--config", other.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    let err = stderr(&refused);
    for expected in [
        "different configuration",
        "budget.usd: recorded 0.05, now 0.25",
        "llm.mock.rules: recorded [",
        "--allow-changed",
    ] {
        assert!(err.contains(expected), "`{expected}` in: {err}");
    }
    assert!(
        !err.contains("limits.max_depth"),
        "an unchanged key is not reported: {err}"
    );
    assert_eq!(
        sql::<String>(&db, "SELECT status FROM runs"),
        "running",
        "a refused resume changes nothing"
    );
    let allowed = resume_elsewhere(
        &db,
        &["--config", other.to_str().unwrap(), "--allow-changed"],
    );
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    assert_eq!(stdout_json(&allowed)["status"], "completed");
}

#[test]
fn the_recorded_config_holds_no_secret() {
    let dir = TempDir::new("same-run-secret");
    let config = dir.file(
        "c.toml",
        "[llm.openai]\napi_key = \"sk-do-not-record\"\nbase_url = \"http://127.0.0.1:9/v1\"\n",
    );
    let out = run_example(
        &dir.ledger("s.db"),
        "hello",
        ["--input", "hi", "--config", config.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let stored: String = sql(&dir.ledger("s.db"), "SELECT config_json FROM runs");
    assert!(
        stored.contains("\"base_url\":\"http://127.0.0.1:9/v1\""),
        "the config is recorded: {stored}"
    );
    assert!(!stored.contains("sk-do-not-record"), "{stored}");
}
