//! Isolated workspaces per task and the merge of parallel work: copy-on-write views,
//! trivial / semantic / critical merges at join, text proposals through the SDK, and a
//! human resolution across a host restart.

use crate::support::cli::*;
use crate::support::*;
use agentflow::merge::resolve::{Decision, conflicts, resolve};
use agentflow::{RunOptions, Status};
use serde_json::{Value, json};

fn write(path: &str, content: &str) -> Value {
    json!({"tool": {"name": "workspace", "args": {"op": "write", "path": path, "content": content}}})
}

fn read(path: &str) -> Value {
    json!({"tool": {"name": "workspace", "args": {"op": "read", "path": path}}})
}

fn child(description: &str, ops: Value) -> Value {
    json!({"spawn": {"description": description, "input": ops.to_string()}})
}

/// The `workspace` tool granted, on `dir/ws`.
fn ws_opts(dir: &TempDir) -> RunOptions {
    RunOptions {
        workspace: Some(dir.join("ws")),
        ..grant(&["workspace"])
    }
}

/// `[llm.mock]` answering with the refactor example's rules.
fn refactor_rules() -> String {
    let rules = repo_path("examples/refactor/mock-rules.toml");
    format!("[llm.mock]\nrules_file = {:?}\n", rules.to_str().unwrap())
}

/// A child's result list, from the parent's `wait` result.
fn child_results(wait: &Value) -> Vec<Value> {
    serde_json::from_str(wait["completed"].as_str().expect("completed child")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_children_write_to_isolated_views_merged_at_join() {
    let dir = TempDir::new("merge-isolated");
    let ws = dir.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let base: String = (0..13).map(|i| format!("line {i}\n")).collect();
    std::fs::write(ws.join("shared.txt"), &base).unwrap();
    let host = host(&dir, "");
    let mut ops = Vec::new();
    for (k, line) in [1, 6, 11].into_iter().enumerate() {
        let mine = base.replace(
            &format!("line {line}\n"),
            &format!("line {line} by child {k}\n"),
        );
        ops.push(child(
            &format!("edit section {k} of the shared file"),
            // Each child signals once it has written, and reads only after the parent
            // has looked: the ordering comes from kv signals, not sleeps.
            json!([
                write("shared.txt", &mine),
                write(&format!("own-{k}.txt"), &format!("from child {k}")),
                {"tool": {"name": "kv", "args": {"op": "put", "key": format!("wrote-{k}"), "value": "yes"}}},
                {"wait_kv": {"key": "parent-read", "timeout_ms": 20000}},
                read("shared.txt"),
                {"tool": {"name": "workspace", "args": {"op": "list", "path": "."}}},
            ]),
        ));
    }
    for k in 0..3 {
        ops.push(json!({"wait_kv": {"key": format!("wrote-{k}"), "timeout_ms": 20000}}));
    }
    ops.push(read("shared.txt"));
    ops.push(json!({"tool": {"name": "kv", "args": {"op": "put", "key": "parent-read", "value": "yes"}}}));
    ops.extend([json!({"wait": 2}), json!({"wait": 3}), json!({"wait": 4})]);
    ops.push(read("shared.txt"));
    let mut opts = ws_opts(&dir);
    opts.grants.push("kv".into());
    let (report, results) = run_scripted(&host, Value::Array(ops), opts).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert!(
        results[3..6].iter().all(|r| r == &json!("\"yes\"")),
        "every child had written when the parent looked: {results:?}"
    );
    assert_eq!(
        results[6]["ok"], base,
        "the parent does not see its children's unmerged work"
    );
    for (k, line) in [1, 6, 11].into_iter().enumerate() {
        let r = child_results(&results[8 + k]);
        let seen = r[4]["ok"].as_str().unwrap();
        assert!(
            seen.contains(&format!("line {line} by child {k}")),
            "child {k} sees its own change: {seen}"
        );
        assert_eq!(
            seen.matches("by child").count(),
            1,
            "child {k} sees no sibling's change: {seen}"
        );
        let listed: Vec<String> = serde_json::from_str(r[5]["ok"].as_str().unwrap()).unwrap();
        assert!(
            listed.contains(&format!("own-{k}.txt")) && listed.contains(&"shared.txt".to_string()),
            "child {k} lists its own new file: {listed:?}"
        );
        // Untouched paths fall through to the parent's view, which holds the siblings the
        // parent has already joined (it joins in order) — never a later, unjoined one.
        for j in k + 1..3 {
            assert!(
                !listed.contains(&format!("own-{j}.txt")),
                "child {k} sees unjoined sibling {j}'s file: {listed:?}"
            );
        }
    }
    let merged = std::fs::read_to_string(ws.join("shared.txt")).unwrap();
    for (k, line) in [1, 6, 11].into_iter().enumerate() {
        assert!(
            merged.contains(&format!("line {line} by child {k}\n")),
            "{merged}"
        );
        assert_eq!(
            std::fs::read_to_string(ws.join(format!("own-{k}.txt"))).unwrap(),
            format!("from child {k}")
        );
    }
    assert_eq!(
        results[11]["ok"], merged,
        "the parent's view is the merged file"
    );
    let conn = host.ledger().reader().unwrap();
    let rows = conflicts(&conn, true).unwrap();
    assert_eq!(rows.len(), 6, "{rows:?}");
    assert!(
        rows.iter().all(|r| r.category.as_str() == "trivial"
            && r.status == agentflow::ledger::MergeStatus::Merged)
    );
    assert!(
        rows.iter()
            .any(|r| r.reasoning == "the changes touch different lines"),
        "{rows:?}"
    );
}

const CATEGORY_CONFIG: &str = r#"
[merge]
critical_paths = ["secrets/*"]

[[validators]]
name = "no-todo"
agents = ["merge"]
kind = "pattern"
must_not_match = ["*TODO*"]

[[llm.mock.rules]]
contains = "merging parallel edits to `api.rs`"
reply = '''
MERGED:
fn handler() -> u32 {
    retry(fetch_v2())
}
END MERGED
REASONING: kept the retry from task 2 and the new fetch from task 3'''

[[llm.mock.rules]]
contains = "merging parallel edits to `bad.rs`"
reply = "CONTRADICTORY: one removes the call the other renames"

[[llm.mock.rules]]
contains = "merging parallel edits to `todo.rs`"
reply = "MERGED:\nTODO\nEND MERGED\nREASONING: gave up"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_merge_category_trivial_semantic_and_critical() {
    let dir = TempDir::new("merge-categories");
    let ws = dir.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let func = |body: &str| format!("fn handler() -> u32 {{\n    {body}\n}}\n");
    std::fs::write(ws.join("api.rs"), func("fetch()")).unwrap();
    std::fs::write(ws.join("bad.rs"), func("fetch()")).unwrap();
    std::fs::write(ws.join("todo.rs"), func("fetch()")).unwrap();
    std::fs::write(ws.join("same.txt"), "old\n").unwrap();
    std::fs::write(ws.join("spaces.txt"), "hello world\n").unwrap();
    let host = std::sync::Arc::new(host(&dir, CATEGORY_CONFIG));
    let ops = json!([
        child(
            "add a retry around the fetch",
            json!([
                write("api.rs", &func("retry(fetch())")),
                write("same.txt", "new\n"),
                write("spaces.txt", "hello world, again\n"),
                write("bad.rs", &func("")),
                write("todo.rs", &func("a()")),
            ])
        ),
        child(
            "switch to the version 2 fetch",
            json!([
                write("api.rs", &func("fetch_v2()")),
                write("same.txt", "new\n"),
                write("spaces.txt", "hello  world,\tagain\n"),
                write("bad.rs", &func("fetch_renamed()")),
                write("todo.rs", &func("b()")),
            ])
        ),
        child("rotate the key", json!([write("secrets/key.txt", "k2")])),
        {"wait": 2}, {"wait": 3}, {"wait": 4},
    ]);
    // A human, elsewhere, resolves what is escalated.
    let resolver = {
        let host = host.clone();
        tokio::task::spawn_blocking(move || {
            let mut resolved = 0;
            for _ in 0..600 {
                let conn = host.ledger().reader().unwrap();
                for c in conflicts(&conn, false).unwrap() {
                    let decision = match c.subject.as_str() {
                        "secrets/key.txt" => Decision::Take(c.child_task),
                        "bad.rs" => Decision::Text(func("fetch_renamed_with_call()")),
                        _ => Decision::Take(c.parent_task),
                    };
                    resolve(host.ledger(), c.id, decision, Some("checked".into())).unwrap();
                    resolved += 1;
                }
                if resolved == 3 {
                    return resolved;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            resolved
        })
    };
    let (report, _) = run_scripted(&host, ops, ws_opts(&dir)).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(
        resolver.await.unwrap(),
        3,
        "three conflicts went to the human"
    );
    let read = |p: &str| std::fs::read_to_string(ws.join(p)).unwrap();
    assert_eq!(read("api.rs"), func("retry(fetch_v2())"), "the LLM merge");
    assert_eq!(read("same.txt"), "new\n");
    assert_eq!(
        read("spaces.txt"),
        "hello world, again\n",
        "whitespace-only: ours kept"
    );
    assert_eq!(
        read("bad.rs"),
        func("fetch_renamed_with_call()"),
        "the human's text"
    );
    assert_eq!(
        read("todo.rs"),
        func("a()"),
        "the human took the parent's version"
    );
    assert_eq!(
        read("secrets/key.txt"),
        "k2",
        "the human took the child's version"
    );

    let conn = host.ledger().reader().unwrap();
    let rows = conflicts(&conn, true).unwrap();
    let of = |subject: &str, child: u64| {
        rows.iter()
            .find(|r| r.subject == subject && r.child_task == child)
            .unwrap_or_else(|| panic!("no merge of {subject} from {child}: {rows:?}"))
    };
    assert_eq!(of("api.rs", 2).category.as_str(), "trivial");
    let semantic = of("api.rs", 3);
    assert_eq!(semantic.category.as_str(), "semantic");
    assert!(
        semantic.reasoning.contains("kept the retry"),
        "{semantic:?}"
    );
    assert_eq!(of("same.txt", 3).reasoning, "both made the same change");
    assert_eq!(
        of("spaces.txt", 3).reasoning,
        "the versions differ only in whitespace"
    );
    let contradictory = of("bad.rs", 3);
    assert_eq!(contradictory.category.as_str(), "critical");
    assert!(
        contradictory.reasoning.contains("contradictory"),
        "{contradictory:?}"
    );
    let rejected = of("todo.rs", 3);
    assert_eq!(rejected.category.as_str(), "critical");
    assert!(
        rejected.reasoning.contains("no-todo: matches forbidden"),
        "the merged text failed the merge validator: {rejected:?}"
    );
    let secret = of("secrets/key.txt", 4);
    assert_eq!(
        (secret.category.as_str(), secret.status.as_str()),
        ("critical", "resolved")
    );
    assert!(secret.resolution.as_deref().unwrap().contains("checked"));
    // The merge model's calls are in the ledger, charged to the parent.
    let llm = of_kind(&events(&host, &report.run_id), "merge.llm");
    assert_eq!(
        llm.len(),
        3,
        "api.rs, bad.rs and todo.rs went to the merge model"
    );
    assert!(llm.iter().all(|e| e.task_id == 1 && e.model.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_proposals_merge_through_the_sdk() {
    let (_dir, host) = temp_host(
        "merge-proposals",
        r#"
[[llm.mock.rules]]
contains = "merging parallel edits to `proposal@"
reply = "MERGED:\nchild:alpha\nBETA, revised\ngamma\ndelta\nEPSILON\nzeta\neta\nEND MERGED\nREASONING: both revisions of beta kept"
"#,
    );
    let base = "child:alpha\nbeta\ngamma\ndelta\nepsilon\nzeta\neta\n";
    let proposal = |from: &str, to: &str| {
        json!({"spawn": {"description": format!("revise {from} into {to}"),
                         "input": base["child:".len()..].replace(from, to)}})
    };
    let ops = json!([
        proposal("beta", "BETA"),
        proposal("epsilon", "EPSILON"),
        proposal("beta", "beta, revised"),
        {"wait": 2}, {"wait": 3}, {"wait": 4},
        {"merge": {"base": base, "ids": [2, 3]}},
        {"merge": {"base": base, "ids": [2, 3, 4]}},
        {"merge": {"base": base, "ids": [99]}},
    ]);
    let (report, results) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(results[6]["category"], "trivial", "{}", results[6]);
    assert_eq!(
        results[6]["text"],
        "child:alpha\nBETA\ngamma\ndelta\nEPSILON\nzeta\neta\n"
    );
    assert_eq!(results[7]["category"], "semantic", "{}", results[7]);
    assert!(
        results[7]["text"]
            .as_str()
            .unwrap()
            .contains("BETA, revised"),
        "{}",
        results[7]
    );
    assert!(
        results[7]["reasoning"][2]
            .as_str()
            .unwrap()
            .contains("task 4: semantic: merged with tasks [2, 3, 4] in one LLM merge: both revisions of beta kept"),
        "{}",
        results[7]
    );
    assert!(
        results[8]["err"]
            .as_str()
            .unwrap()
            .contains("task 99 is not a child"),
        "{}",
        results[8]
    );
}

#[test]
fn a_human_resolves_a_critical_conflict_across_a_host_restart() {
    let dir = TempDir::new("merge-restart");
    let db = dir.ledger("m.db");
    let ws = dir.join("ws");
    std::fs::create_dir_all(ws.join("deploy")).unwrap();
    std::fs::write(ws.join("deploy/prod.toml"), "replicas = 2\n").unwrap();
    let config = dir.file("c.toml", "[merge]\ncritical_paths = [\"deploy/*\"]\n");
    let ops = json!([
        child("scale production up", json!([write("deploy/prod.toml", "replicas = 20\n")])),
        {"wait": 2},
        read("deploy/prod.toml"),
    ])
    .to_string();
    let mut host_process = spawn_example(
        &db,
        "scripted",
        [
            "--input",
            &ops,
            "--config",
            config.to_str().unwrap(),
            "--grant",
            "workspace",
            "--workspace",
            ws.to_str().unwrap(),
        ],
    );
    let pending = wait_for_listing("conflicts", &db);
    assert_eq!(pending[0]["subject"], "deploy/prod.toml", "{pending}");
    assert_eq!(pending[0]["category"], "critical");
    assert!(
        pending[0]["theirs_diff"]
            .as_str()
            .unwrap()
            .contains("+replicas = 20"),
        "{pending}"
    );
    host_process.kill().unwrap(); // the host stops while the join waits for a human
    host_process.wait().unwrap();
    assert_eq!(
        std::fs::read_to_string(ws.join("deploy/prod.toml")).unwrap(),
        "replicas = 2\n",
        "nothing reached the workspace before the decision"
    );
    let text = stdout(&agentflow_on(&db, ["conflicts"]));
    assert!(
        text.contains("[critical] pending: deploy/prod.toml") && text.contains("agentflow resolve"),
        "{text}"
    );
    let id = pending[0]["id"].to_string();
    let wrong = agentflow_on(&db, ["resolve", &id, "--take", "7"]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(stderr(&wrong).contains("not a side"));
    let resolved = agentflow_on(
        &db,
        ["resolve", &id, "--take", "2", "--note", "approved by ops"],
    );
    assert!(resolved.status.success(), "{}", stderr(&resolved));
    let report = resume_only_run(&db, &config);
    let results: Vec<Value> = serde_json::from_str(report["output"].as_str().unwrap()).unwrap();
    assert_eq!(results[2]["ok"], "replicas = 20\n", "{results:?}");
    assert_eq!(
        std::fs::read_to_string(ws.join("deploy/prod.toml")).unwrap(),
        "replicas = 20\n"
    );
    let again = agentflow_on(&db, ["resolve", &id, "--take", "2"]);
    assert_eq!(again.status.code(), Some(2), "already resolved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refactor_example_merges_three_edits_of_one_function_and_escalates_the_critical_file() {
    let dir = TempDir::new("merge-refactor");
    let host = std::sync::Arc::new(host(
        &dir,
        &format!(
            "[merge]\ncritical_paths = [\"deploy/*\"]\n{}",
            refactor_rules()
        ),
    ));
    let resolver = {
        let host = host.clone();
        tokio::task::spawn_blocking(move || {
            for _ in 0..600 {
                let conn = host.ledger().reader().unwrap();
                if let Some(c) = conflicts(&conn, false).unwrap().pop() {
                    resolve(host.ledger(), c.id, Decision::Take(c.child_task), None).unwrap();
                    return Some(c);
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            None
        })
    };
    let report = host
        .run_file(
            &example("refactor"),
            "Harden the pricing module",
            ws_opts(&dir),
        )
        .await
        .unwrap();
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let escalated = resolver
        .await
        .unwrap()
        .expect("a conflict went to the human");
    assert_eq!(escalated.subject, "deploy/limits.toml");
    assert_eq!(escalated.category.as_str(), "critical");
    let pricing = std::fs::read_to_string(dir.join("ws/src/pricing.rs")).unwrap();
    for part in [
        "let quantity = quantity.min(1000);",
        "unit_cents.saturating_mul(quantity)",
        "total * 90 / 100",
        "(amount_cents * TAX_BPS + 5_000) / 10_000",
    ] {
        assert!(pricing.contains(part), "{part} missing from:\n{pricing}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("ws/deploy/limits.toml")).unwrap(),
        "max_order_cents = 5000000\n"
    );
    assert!(report.output.unwrap().contains(&pricing));
    let conn = host.ledger().reader().unwrap();
    let rows = conflicts(&conn, true).unwrap();
    let categories: Vec<(u64, &str)> = rows
        .iter()
        .map(|r| (r.child_task, r.category.as_str()))
        .collect();
    assert_eq!(
        categories,
        vec![
            (2, "trivial"),
            (3, "semantic"),
            (4, "semantic"),
            (5, "trivial"),
            (6, "critical")
        ],
        "{rows:?}"
    );
    assert_eq!(rows[3].reasoning, "the changes touch different lines");
    let text = inspect_text(&host, &report.run_id);
    assert!(
        text.contains("⇄ merge task 3 src/pricing.rs: semantic merged — The cap applies first")
            && text.contains("⇄ merge task 6 deploy/limits.toml: critical pending")
            && text.contains("⇄ merge task 6 deploy/limits.toml: resolved by a human"),
        "{text}"
    );
}

#[test]
fn resolving_from_the_cli_while_the_host_runs_lets_the_run_finish() {
    let dir = TempDir::new("merge-cli-live");
    let db = dir.ledger("r.db");
    let config = dir.file(
        "c.toml",
        format!(
            "[tools]\ngrant = [\"workspace\"]\n[merge]\ncritical_paths = [\"deploy/*\"]\n{}",
            refactor_rules()
        ),
    );
    let host_process = agentflow()
        .arg("run")
        .arg(example("refactor"))
        .args(["--input", "Harden the pricing module", "--db"])
        .arg(&db)
        .arg("--config")
        .arg(&config)
        .arg("--workspace")
        .arg(dir.join("ws"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut host_process = host_process;
    let mut resolved = Vec::new();
    for _ in 0..600 {
        if host_process.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let out = agentflow_on(&db, ["conflicts", "--json"]);
        let Ok(Value::Array(pending)) = serde_json::from_slice::<Value>(&out.stdout) else {
            continue;
        };
        for c in pending {
            let id = c["id"].to_string();
            let done = agentflow_on(
                &db,
                ["resolve", &id, "--take", "1", "--note", "keep the limit"],
            );
            assert!(done.status.success());
            resolved.push(c["subject"].as_str().unwrap().to_string());
        }
    }
    if host_process.try_wait().unwrap().is_none() {
        host_process.kill().unwrap();
    }
    assert_eq!(
        resolved,
        vec!["deploy/limits.toml"],
        "only the critical file went to a human"
    );
    let out = host_process.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("== deploy/limits.toml ==\nmax_order_cents = 1000000"),
        "the parent's version was kept: {text}"
    );
}

#[test]
fn a_crash_at_every_merge_decision_resumes_without_deciding_twice() {
    let mut expected: Option<(String, String)> = None;
    // Five decisions: four for src/pricing.rs, one for deploy/limits.toml (not critical here).
    for crash_at in 0..=5 {
        let dir = TempDir::new(&format!("merge-crash-{crash_at}"));
        let db = dir.ledger("r.db");
        let config = dir.file(
            "c.toml",
            format!("[tools]\ngrant = [\"workspace\"]\n{}", refactor_rules()),
        );
        let mut run = agentflow();
        run.arg("run")
            .arg(example("refactor"))
            .args(["--input", "Harden the pricing module", "--db"])
            .arg(&db)
            .arg("--config")
            .arg(&config)
            .arg("--workspace")
            .arg(dir.join("ws"));
        if crash_at > 0 {
            run.env("AGENTFLOW_CRASH_AT", "merge-decided")
                .env("AGENTFLOW_CRASH_AT_COUNT", crash_at.to_string());
        }
        let first = run.output().unwrap();
        if crash_at > 0 {
            assert!(
                !first.status.success(),
                "crash point {crash_at} was reached"
            );
            let resumed = agentflow_on(
                &db,
                [
                    "resume",
                    &only_run_id(&db),
                    "--config",
                    config.to_str().unwrap(),
                ],
            );
            assert!(
                resumed.status.success(),
                "crash {crash_at}: {}",
                stderr(&resumed)
            );
        } else {
            assert!(first.status.success());
        }
        let files = (
            std::fs::read_to_string(dir.join("ws/src/pricing.rs")).unwrap(),
            std::fs::read_to_string(dir.join("ws/deploy/limits.toml")).unwrap(),
        );
        match &expected {
            None => expected = Some(files),
            Some(e) => assert_eq!(&files, e, "crash at decision {crash_at}"),
        }
        let conn = crate::support::connect(&db);
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("SELECT COUNT(*) FROM merges"), 5, "crash {crash_at}");
        assert_eq!(
            count("SELECT COUNT(*) FROM events WHERE kind = 'merge.llm'"),
            2,
            "crash {crash_at}: each semantic conflict went to the merge model once"
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM events WHERE kind = 'merge.decided'"),
            5
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grandchild_change_reaches_the_workspace_through_each_join() {
    let (dir, host) = temp_host("merge-grandchild", "");
    let grandchild = child(
        "write the greeting file",
        json!([write("a.txt", "hello\n")]),
    );
    let ops = json!([
        child(
            "delegate the greeting and sign it",
            json!([grandchild, read("a.txt"), {"wait": 3}, read("a.txt"), write("b.txt", "signed\n")])
        ),
        {"wait": 2},
    ]);
    let (report, results) = run_scripted(&host, ops, ws_opts(&dir)).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let r = child_results(&results[1]);
    assert!(
        r[1]["err"].as_str().unwrap().contains("no such file"),
        "{r:?}"
    );
    assert_eq!(
        r[3]["ok"], "hello\n",
        "the child sees its child's merged change"
    );
    let ws = dir.join("ws");
    assert_eq!(
        std::fs::read_to_string(ws.join("a.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(ws.join("b.txt")).unwrap(),
        "signed\n"
    );
    let calls: Vec<i64> = tasks(&host, &report.run_id)
        .iter()
        .map(|t| t.host_calls)
        .collect();
    assert_eq!(
        calls,
        vec![2, 5, 1],
        "guest calls only: no intents, merge decisions or clock flushes"
    );
    let rows: Vec<(u64, u64, String)> = conflicts(&host.ledger().reader().unwrap(), true)
        .unwrap()
        .into_iter()
        .map(|r| (r.parent_task, r.child_task, r.subject))
        .collect();
    assert_eq!(
        rows,
        vec![
            (2, 3, "a.txt".to_string()),
            (1, 2, "a.txt".to_string()),
            (1, 2, "b.txt".to_string())
        ]
    );
}
