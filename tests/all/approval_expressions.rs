//! Approval rules as expressions (`[constraints.approval] when`): a spawn matching one
//! waits for a human with the expression in its reason, one matching none runs at once,
//! the rules survive a host restart (stored with the run, read back on resume), and a
//! bad expression is refused when the config loads, naming the key.

use crate::support::cli::*;
use crate::support::*;
use agentflow::{RunOptions, Status};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const RULES: &str = r#"[constraints.approval]
when = [
  "cost_usd > 0.5 && depth >= 2",
  "'deploy' in tools",
  "agent == 'deployer' && description.contains('prod')",
]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawn_matching_an_expression_waits_and_one_matching_none_runs_at_once() {
    let toml = format!(
        "[agents]\ndeployer = {:?}\n{RULES}",
        example("scripted").to_str().unwrap()
    );
    let (_dir, host) = temp_host("approval-expr", &toml);
    let ledger = host.ledger().clone();
    let done = Arc::new(AtomicBool::new(false));
    let finished = done.clone();
    // Decides once all three gated children wait at the same time (a child that
    // waited for a decision could not complete before then), or after 20 s, so that a
    // wrong gate fails the assertions below instead of hanging the test.
    let decider = tokio::spawn(async move {
        let (started, mut reasons) = (std::time::Instant::now(), BTreeMap::new());
        while !finished.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let conn = ledger.reader().unwrap();
            let pending = agentflow::ledger::query::approvals(&conn, false).unwrap();
            if pending.len() < 3 && started.elapsed().as_secs() < 20 {
                continue;
            }
            for a in pending {
                let approve = a.description != "push to prod";
                ledger
                    .decide_approval(a.id, approve, Some("checked by test".into()))
                    .await
                    .unwrap();
                reasons.insert(a.description, a.reason);
            }
        }
        reasons
    });
    let deep_child = json!([
        {"spawn_wait": {"description": "deep work", "input": "", "estimated_cost": 0.9}}
    ]);
    let ops = json!([
        // Depth 1: its cost alone matches no expression.
        {"spawn": {"description": "plain", "input": "", "estimated_cost": 0.9, "tools": ["kv"]}},
        {"wait": 2},
        {"spawn": {"description": "ship it", "input": "", "tools": ["kv", "deploy"]}},
        {"spawn": {"description": "push to prod", "input": "", "agent": "deployer"}},
        {"spawn": {"description": "deep parent", "input": deep_child.to_string()}},
        {"wait": 3}, {"wait": 4}, {"wait": 5},
    ]);
    let (report, r) = run_scripted(&host, ops, RunOptions::default()).await;
    done.store(true, Ordering::SeqCst);
    let reasons = decider.await.unwrap();
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert_eq!(
        r[1]["completed"], "child:",
        "no expression matched: no wait"
    );
    assert_eq!(
        reasons.keys().collect::<Vec<_>>(),
        ["deep work", "push to prod", "ship it"],
        "{reasons:?}"
    );
    assert_eq!(reasons["ship it"], "expression `'deploy' in tools` is true");
    assert_eq!(
        reasons["push to prod"],
        "expression `agent == 'deployer' && description.contains('prod')` is true"
    );
    assert_eq!(
        reasons["deep work"],
        "expression `cost_usd > 0.5 && depth >= 2` is true"
    );
    assert_eq!(r[5]["completed"], "child:");
    let denied = r[6]["failed"].as_str().unwrap();
    assert!(denied.contains("denied by a human"), "{denied}");
    assert!(
        r[7]["completed"].as_str().unwrap().contains("child:"),
        "{:?}",
        r[7]
    );
    let conn = host.ledger().reader().unwrap();
    let all = agentflow::ledger::query::approvals(&conn, true).unwrap();
    assert_eq!(all.len(), 3, "`plain` and `deep parent` never asked");
}

/// The operator sees the expression in `agentflow approvals`; the host stops while the
/// child waits; the run resumes from its stored config (expressions included, the
/// context hash unchanged) once approved.
#[test]
fn expression_rules_survive_a_host_restart_and_show_in_the_listing() {
    let dir = TempDir::new("approval-expr-restart");
    let db = dir.ledger("a.db");
    let config = dir.file("c.toml", RULES);
    let ops = json!([
        {"spawn": {"description": "ship it", "input": "", "tools": ["deploy"]}},
        {"wait": 2},
    ])
    .to_string();
    let config_arg = config.to_str().unwrap();
    let mut child = spawn_example(&db, "scripted", ["--input", &ops, "--config", config_arg]);
    let pending = wait_for_listing("approvals", &db);
    assert_eq!(pending[0]["task_id"], 2, "{pending}");
    assert_eq!(
        pending[0]["reason"],
        "expression `'deploy' in tools` is true"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let id = pending[0]["id"].to_string();
    let approved = agentflow_on(&db, ["approve", &id, "--note", "ok"]);
    assert!(approved.status.success(), "{}", stderr(&approved));
    let report = resume_only_run(&db, &config);
    let results: Vec<Value> = serde_json::from_str(report["output"].as_str().unwrap()).unwrap();
    assert_eq!(results[1]["completed"], "child:");
}

#[test]
fn a_bad_expression_is_refused_when_the_config_loads() {
    let dir = TempDir::new("approval-expr-bad");
    for (toml, expected) in [
        (
            "[constraints.approval]\nwhen = [\"depth > 1\", \"cost_usd >\"]\n",
            "Syntax error",
        ),
        (
            "[constraints.approval]\nwhen = [\"cost > 1\"]\n",
            "unknown variable `cost`",
        ),
    ] {
        let bad = dir.file("bad.toml", toml);
        let out = agentflow()
            .arg("run")
            .arg(example("hello"))
            .arg("--config")
            .arg(&bad)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("[constraints.approval] when"), "{err}");
        assert!(err.contains(expected), "{err}");
    }
}
