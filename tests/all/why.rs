//! Debugging reasoning: the `agent_traces` view and `agentflow why`, on the real
//! deployer example (a planning LLM call, one child per resource, each creating it with
//! the side-effecting `cloud` tool) run through the `agentflow` binary, and on a
//! `scripted` guest whose trace step is long and hostile.

use crate::support::cli::*;
use crate::support::*;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const DEPLOY: &str = r#"{"app": "shop", "resources": 3}"#;
/// What the planning model replies: the resources the children create.
const PLAN: &str = r#"["shop-db", "shop-web", "shop-cache"]"#;

/// Run the deployer through the CLI, its planning call answered with [`PLAN`] and
/// `extra` added to the config; the temp dir, the ledger, the workspace and the run id.
fn deployed(label: &str, extra: &str) -> (TempDir, PathBuf, PathBuf, String) {
    let dir = TempDir::new(label);
    let config = dir.file(
        "deploy.toml",
        format!("[[llm.mock.rules]]\ntask_type = \"plan\"\nreply = '{PLAN}'\n{extra}"),
    );
    let (db, ws) = (dir.ledger("ledger.db"), dir.join("ws"));
    let out = run_example(
        &db,
        "deployer",
        [
            "--input",
            DEPLOY,
            "--grant",
            "cloud",
            "--json",
            "--workspace",
            ws.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let run_id = stdout_json(&out)["run_id"].as_str().unwrap().to_string();
    (dir, db, ws, run_id)
}

/// The id of the run's task described as `description` (from `inspect --json`).
fn task_of(db: &Path, run_id: &str, description: &str) -> u64 {
    let view = stdout_json(&agentflow_on(db, ["inspect", run_id, "--json"]));
    view["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["description"] == description)
        .and_then(|t| t["task_id"].as_u64())
        .unwrap_or_else(|| panic!("no task {description}: {view}"))
}

/// `agentflow why RUN ARGS --json --db DB`, parsed.
fn why_json(db: &Path, run_id: &str, args: &[&str]) -> Value {
    let out = agentflow_on(db, ["why", run_id].iter().chain(args).chain(&["--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    stdout_json(&out)
}

/// The steps of `why` of one kind, in its order.
fn steps_of<'a>(why: &'a Value, kind: &str) -> Vec<&'a Value> {
    why["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == kind)
        .collect()
}

#[test]
fn why_a_resource_was_created_names_the_plan_step_and_the_llm_reply_that_chose_it() {
    let (_dir, db, ws, run_id) = deployed("why-deployer", "");
    let web = task_of(&db, &run_id, "provision shop-web");
    let why = why_json(
        &db,
        &run_id,
        &["--task", &web.to_string(), "--tool", "cloud"],
    );

    // The effect: the `cloud` call that created shop-web, as cloud.log has it.
    let effect = &why["effect"];
    assert_eq!(effect["task_id"], web);
    assert_eq!(effect["tool"], "cloud");
    assert!(
        effect["args"].as_str().unwrap().contains("\"shop-web\""),
        "{effect}"
    );
    assert_eq!(effect["ok"], true);
    let result: Value = serde_json::from_str(effect["result"].as_str().unwrap()).unwrap();
    let id = result["id"].as_str().unwrap();
    let log = std::fs::read_to_string(ws.join("cloud.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.starts_with("create shop-web ") && l.contains(id)),
        "{id} not in {log}"
    );
    let intent = effect["intent_seq"]
        .as_u64()
        .expect("the call had an intent");
    assert!(intent < effect["seq"].as_u64().unwrap());

    // The chain: the child, then the root up to the spawn that created the child.
    let chain: Vec<u64> = why["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["task_id"].as_u64().unwrap())
        .collect();
    assert_eq!(chain, [web, 1]);
    let spawn = steps_of(&why, "tasks.spawn")[0];
    assert_eq!(spawn["task_id"], 1);
    assert_eq!(
        spawn["child"], web,
        "the newest step is the spawn of the child"
    );
    assert_eq!(spawn["description"], "provision shop-web");
    assert_eq!(why["chain"][1]["spawn_seq"], spawn["seq"]);

    // The plan step whose observation lists the resource, and the LLM reply before it.
    let steps = steps_of(&why, "trace.step");
    assert_eq!(steps.len(), 1, "{why}");
    let plan_step = steps[0];
    assert_eq!(plan_step["thought"], "plan 3 resources for shop");
    assert_eq!(plan_step["action"], "llm:plan");
    assert_eq!(plan_step["observation"], "shop-db, shop-web, shop-cache");
    assert_eq!(plan_step["confidence"], 0.8);
    let llm = steps_of(&why, "llm.complete");
    assert_eq!(
        llm.len(),
        1,
        "only the plan call preceded the effect: {why}"
    );
    let plan_call = llm[0];
    assert_eq!(plan_call["task_id"], 1);
    assert_eq!(plan_call["reply"], PLAN);
    assert_eq!(
        plan_call["prompt"],
        "Plan 3 cloud resources for the app shop."
    );
    assert!(plan_call["model"].as_str().is_some_and(|m| !m.is_empty()));
    let cost = plan_call["cost_usd"].as_f64().unwrap();
    assert!(cost > 0.0, "{plan_call}");
    assert_eq!(why["llm_calls"], 1);
    assert!((why["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-12);
    let recorded: f64 = sql(
        &db,
        &format!(
            "SELECT cost_usd FROM events WHERE task_id = 1 AND seq = {}",
            plan_call["seq"]
        ),
    );
    assert!((recorded - cost).abs() < 1e-12, "the ledger's cost");

    // Newest first, and nothing from after the spawn (the later spawn, the summary).
    let seqs: Vec<u64> = why["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
    assert!(seqs[0] == spawn["seq"].as_u64().unwrap());
    assert!(
        steps_of(&why, "tasks.spawn")
            .iter()
            .all(|s| s["description"] != "provision shop-cache"),
        "shop-cache was spawned after shop-web"
    );

    // The text form names the same things, and a total.
    let out = agentflow_on(
        &db,
        [
            "why",
            &run_id,
            "--task",
            &web.to_string(),
            "--tool",
            "cloud",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("task {web} effect #")), "{text}");
    assert!(text.contains(id), "{text}");
    assert!(
        text.contains("thought \"plan 3 resources for shop\" → action llm:plan"),
        "{text}"
    );
    assert!(text.contains(&format!("reply \"{PLAN}\"")), "{text}");
    assert!(text.contains("total: 1 LLM call,"), "{text}");
}

#[test]
fn why_finds_an_effect_by_seq_or_as_the_latest_and_says_what_it_cannot_find() {
    let (_dir, db, _ws, run_id) = deployed("why-select", "");
    let db_task = task_of(&db, &run_id, "provision shop-db");
    let by_tool = why_json(
        &db,
        &run_id,
        &["--task", &db_task.to_string(), "--tool", "cloud"],
    );
    let intent = by_tool["effect"]["intent_seq"]
        .as_u64()
        .unwrap()
        .to_string();
    let call = by_tool["effect"]["seq"].as_u64().unwrap().to_string();

    // By the intent's seq or the call's: the same effect and the same walk.
    for seq in [&intent, &call] {
        let by_seq = why_json(
            &db,
            &run_id,
            &["--task", &db_task.to_string(), "--effect", seq],
        );
        assert_eq!(by_seq["effect"], by_tool["effect"]);
        assert_eq!(by_seq["steps"], by_tool["steps"]);
    }
    // With no flags: the run's latest tool call, in one of the children.
    let latest = why_json(&db, &run_id, &[]);
    assert_eq!(latest["effect"]["tool"], "cloud");
    assert_ne!(latest["effect"]["task_id"], 1);
    // With no tool call in the task: from the end of the root, all its steps.
    let root = why_json(&db, &run_id, &["--task", "1"]);
    assert_eq!(root["effect"], Value::Null);
    assert_eq!(steps_of(&root, "llm.complete").len(), 2, "plan and summary");
    assert_eq!(steps_of(&root, "tasks.spawn").len(), 3);
    assert_eq!(steps_of(&root, "tasks.wait").len(), 3);

    // Every child has its cloud call at the same seq: which task is ambiguous.
    let refused = |args: &[&str], says: &str| {
        let out = agentflow_on(&db, ["why", &run_id].iter().chain(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stdout(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    };
    refused(&["--effect", &call], "give --task");
    refused(
        &["--task", &db_task.to_string(), "--effect", "1"],
        "not a side effect",
    );
    refused(&["--tool", "nope"], "no call of tool `nope`");
    refused(&["--task", "99"], "has no task 99");
    refused(&["--effect", "3", "--tool", "cloud"], "cannot be used with");
    let out = agentflow_on(&db, ["why", "no-such-run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no run `no-such-run`"),
        "{}",
        stderr(&out)
    );
}

/// The README's example queries of the `agent_traces` view (its first ```sql block after
/// the section's heading), one statement each.
fn readme_queries() -> Vec<String> {
    let readme = std::fs::read_to_string(repo_path("README.md")).unwrap();
    let section = readme
        .split("### Reasoning traces: the `agent_traces` view")
        .nth(1)
        .expect("README has the agent_traces section");
    let block = section
        .split("```sql\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the section has an sql block");
    block
        .split(";\n")
        .map(str::trim)
        .filter(|q| {
            q.lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with("--"))
        })
        .map(String::from)
        .collect()
}

#[test]
fn agent_traces_answers_the_reasoning_query_and_the_readme_examples_run() {
    // Every task is checked by a length validator and a judge scoring 8 of 10.
    let validators = "[[llm.mock.rules]]\ntask_type = \"judge\"\nreply = \"score: 8 it is fine\"\n\
                      [[validators]]\nkind = \"length\"\nmin_chars = 1\n\
                      [[validators]]\nkind = \"judge\"\nrubric = \"Names the resource.\"\nthreshold = 7\n";
    let (_dir, db, ws, run_id) = deployed("why-traces", validators);
    let web = task_of(&db, &run_id, "provision shop-web");
    let conn = crate::support::connect(&db);

    // The query as the issue writes it (a quoted task id), for the child that created
    // shop-web: its tool call, then the step it recorded about it.
    let trace: String = conn
        .query_row(
            &format!(
                "SELECT reasoning_trace FROM agent_traces WHERE task_id = '{web}' AND run_id = ?1"
            ),
            [&run_id],
            |r| r.get(0),
        )
        .unwrap();
    let trace: Value = serde_json::from_str(&trace).unwrap();
    let entries = trace.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{trace}");
    let (call, step) = (&entries[0], &entries[1]);
    assert_eq!(call["tool"], "cloud");
    assert_eq!(call["ok"], true);
    assert_eq!(call["args"], r#"{"op":"create","resource":"shop-web"}"#);
    let id = serde_json::from_str::<Value>(call["result"].as_str().unwrap()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        std::fs::read_to_string(ws.join("cloud.log"))
            .unwrap()
            .contains(&id)
    );
    assert_eq!(
        step,
        &json!({"seq": step["seq"], "step": 1, "thought": "provision shop-web",
                "action": "tool:cloud.create", "observation": id, "confidence": 1.0})
    );
    assert!(step["seq"].as_u64() > call["seq"].as_u64());

    // The rest of the row agrees with `tasks` and `events`.
    let row: (Option<i64>, String, String, i64, f64, String, String) = conn
        .query_row(
            "SELECT parent_id, agent, models, duration_ms, cost_usd, input_hash, output
             FROM agent_traces WHERE run_id = ?1 AND task_id = ?2",
            rusqlite::params![run_id, web as i64],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )
        .unwrap();
    let task: (i64, f64, String, String) = conn
        .query_row(
            "SELECT finished_at - started_at, cost_usd, input_hash, output
             FROM tasks t WHERE run_id = ?1 AND task_id = ?2",
            rusqlite::params![run_id, web as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    let models: Vec<String> = conn
        .prepare(
            "SELECT model FROM events WHERE run_id = ?1 AND task_id = ?2 AND kind = 'llm.complete'
             GROUP BY model ORDER BY MIN(seq)",
        )
        .unwrap()
        .query_map(rusqlite::params![run_id, web as i64], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(row.0, Some(1));
    assert_eq!(row.1, "deployer");
    assert_eq!(row.2, serde_json::to_string(&models).unwrap(), "models");
    assert!(row.2.starts_with("[\"") && row.2.len() > 4, "{}", row.2);
    assert_eq!((row.3, row.4), (task.0, task.1));
    assert_eq!((&row.5, &row.6), (&task.2, &task.3));
    assert!(row.6.starts_with(&format!("shop-web={id}")), "{}", row.6);
    let input: Vec<u8> = conn
        .query_row("SELECT data FROM blobs WHERE hash = ?1", [&row.5], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        String::from_utf8(input).unwrap(),
        r#"{"provision":"shop-web"}"#
    );

    // Validation: both validators passed each task; the judge's 8/10 and the length
    // check's pass average to 0.9.
    let (result, quality, verdicts): (String, f64, String) = conn
        .query_row(
            "SELECT validation_result, quality_score, validation FROM agent_traces
             WHERE run_id = ?1 AND task_id = ?2",
            rusqlite::params![run_id, web as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(result, "pass");
    assert!((quality - 0.9).abs() < 1e-9, "{quality}");
    let verdicts: Value = serde_json::from_str(&verdicts).unwrap();
    let kinds: Vec<&str> = verdicts
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["length", "judge"], "{verdicts}");
    assert_eq!(verdicts[1]["score"].as_f64(), Some(8.0));

    // The root's trace holds its plan step first; every task has a row.
    let rows: i64 = sql(&db, "SELECT COUNT(*) FROM agent_traces");
    assert_eq!(rows, 4);
    let root: String = sql(
        &db,
        "SELECT reasoning_trace FROM agent_traces WHERE task_id = 1",
    );
    let root: Value = serde_json::from_str(&root).unwrap();
    assert_eq!(root[0]["observation"], "shop-db, shop-web, shop-cache");
    assert_eq!(root[0]["confidence"], 0.8);

    // The README's three examples run on this ledger and find something.
    let queries = readme_queries();
    assert_eq!(queries.len(), 3, "{queries:#?}");
    for q in &queries {
        let mut stmt = conn.prepare(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        let mut rows = stmt.query([]).unwrap();
        assert!(rows.next().unwrap().is_some(), "no rows: {q}");
    }
}

#[test]
fn a_long_hostile_step_reads_back_whole_from_the_view_and_escaped_from_why() {
    let dir = TempDir::new("why-hostile");
    let db = dir.ledger("ledger.db");
    let thought = format!("think \u{1b}[31mred\nforged line {}", "x".repeat(300));
    let ops = json!([
        {"step": {"thought": thought, "action": "tool:kv", "observation": "o\u{202e}", "confidence": 0.5}},
        {"tool": {"name": "kv", "args": {"op": "put", "key": "k", "value": "v"}}},
    ]);
    let out = run_example(
        &db,
        "scripted",
        ["--input", &ops.to_string(), "--grant", "kv", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let run_id = only_run_id(&db);

    // Stored behind a blob reference, read back whole by the view.
    let stored: String = sql(&db, "SELECT request FROM events WHERE kind = 'trace.step'");
    assert!(
        stored.contains("$blob") && !stored.contains("forged"),
        "{stored}"
    );
    let trace: String = sql(
        &db,
        "SELECT reasoning_trace FROM agent_traces WHERE task_id = 1",
    );
    let trace: Value = serde_json::from_str(&trace).unwrap();
    assert_eq!(trace[0]["thought"], thought.as_str());
    assert_eq!(trace[1]["tool"], "kv");

    // `why` prints it on one line, escaped, in text and in JSON.
    for args in [&["--tool", "kv"][..], &["--tool", "kv", "--json"][..]] {
        let out = agentflow_on(&db, ["why", run_id.as_str()].iter().chain(args));
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{202e}'),
            "raw control characters: {text:?}"
        );
        assert!(text.contains("\\u{1b}[31mred forged line xxx"), "{text}");
        assert!(text.contains("\\u{202e}"), "{text}");
        assert!(!text.contains(&"x".repeat(250)), "cut to a head: {text}");
    }
}
