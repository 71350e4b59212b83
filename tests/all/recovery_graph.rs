//! Recovery plans over the task graph (issue 16, item 3): a failed task's plan covers
//! its subtree, rolled back in reverse dependency order; completed effects that cannot
//! be undone need a human; each plan lists completed upstream and all downstream tasks.

use crate::support::*;
use agentflow::Status;
use agentflow::durability::recovery::{self, Action};
use agentflow::tools::{SideEffect, Tool, ToolCallCtx, ToolError, ToolInfo};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// A tool of one side-effect class that logs each call and each undo with its args.
struct Logged {
    class: SideEffect,
    log: Arc<Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl Tool for Logged {
    fn info(&self) -> ToolInfo {
        ToolInfo {
            name: "ledgered".into(),
            description: "records what it did".into(),
            args_schema: json!({}),
            side_effect: self.class,
            undo: (self.class == SideEffect::Compensable).then(|| "undo".to_string()),
        }
    }
    async fn call(&self, ctx: &ToolCallCtx, args: Value) -> Result<String, ToolError> {
        if args["op"] == "undo" {
            let what = args["original"]["what"].as_str().unwrap_or("?").to_string();
            self.log.lock().unwrap().push(format!("undo {what}"));
            return Ok("undone".into());
        }
        let what = args["what"].as_str().unwrap_or("?").to_string();
        self.log.lock().unwrap().push(format!("do {what}"));
        ctx.emit(agentflow::tools::Effect::APICall {
            endpoint: format!("ledgered/{what}"),
            method: "POST".into(),
            status: 200,
        });
        Ok(format!("did {what}"))
    }
}

fn host_with(class: SideEffect) -> (TempDir, agentflow::Host, Arc<Mutex<Vec<String>>>) {
    let (dir, mut host) = temp_host("recovery-graph", "");
    let log = Arc::new(Mutex::new(Vec::new()));
    host.register_tool(Arc::new(Logged {
        class,
        log: log.clone(),
    }));
    (dir, host, log)
}

fn call(what: &str) -> Value {
    json!({"tool": {"name": "ledgered", "args": {"what": what}}})
}

fn child(description: &str, ops: Value, after: &[u64]) -> Value {
    json!({"spawn": {
        "description": description,
        "input": ops.to_string(),
        "tools": ["ledgered"],
        "after": after,
    }})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_parent_rolls_back_its_subtree_in_reverse_dependency_order() {
    let (_dir, host, log) = host_with(SideEffect::Compensable);
    // The root spawns A, then B after A; both change the world; then the root changes
    // it too and fails.
    let ops = json!([
        child("a", json!([call("a1"), call("a2")]), &[]),
        child("b", json!([call("b1")]), &[2]),
        {"wait": 3},
        {"wait": 2},
        call("root1"),
        {"fail": "gave up"}
    ]);
    let (report, _) = run_scripted(&host, ops, grant(&["ledgered"])).await;
    assert_eq!(report.status, Status::Failed, "{report:?}");
    assert_eq!(log.lock().unwrap().len(), 4, "{:?}", log.lock().unwrap());

    let (plan, _, _) = host.recover(&report.run_id, false).await.unwrap();
    // The completed children are covered by the root's plan, not planned again.
    assert_eq!(plan.tasks.len(), 1, "{plan:?}");
    let Action::Rollback {
        tasks,
        side_effects,
    } = &plan.tasks[0].action
    else {
        panic!("{plan:?}")
    };
    // B depends on A and both are the root's children: B, then A, then the root.
    assert_eq!(tasks, &vec![3, 2, 1]);
    let order: Vec<(u64, String)> = side_effects
        .iter()
        .map(|r| (r.task_id, r.args["what"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        order,
        vec![
            (3, "b1".into()),
            (2, "a2".into()),
            (2, "a1".into()),
            (1, "root1".into())
        ]
    );
    let text = recovery::render(&plan);
    assert!(text.contains("tasks [3, 2, 1]"), "{text}");

    let (_, compensations, resumed) = host.recover(&report.run_id, true).await.unwrap();
    assert_eq!(compensations, 4);
    assert!(resumed.is_none());
    let undone: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("undo"))
        .cloned()
        .collect();
    assert_eq!(undone, ["undo b1", "undo a2", "undo a1", "undo root1"]);
    let conn = host.ledger().reader().unwrap();
    let statuses = agentflow::ledger::query::resume_tasks(&conn, &report.run_id).unwrap();
    assert!(
        statuses.iter().all(|t| t.status == Status::Cancelled),
        "the whole subtree is rolled back: {statuses:?}"
    );
    let (again, _, _) = host.recover(&report.run_id, false).await.unwrap();
    assert!(
        !recovery::render(&again).contains("Rollback"),
        "applied once: {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_whose_completed_effects_cannot_be_undone_requires_a_human() {
    let (_dir, host, log) = host_with(SideEffect::Irreversible);
    let ops = json!([
        child("sends", json!([call("email")]), &[]),
        {"wait": 2},
        {"fail": "gave up"}
    ]);
    let (report, _) = run_scripted(&host, ops, grant(&["ledgered"])).await;
    assert_eq!(report.status, Status::Failed, "{report:?}");
    let (plan, compensations, resumed) = host.recover(&report.run_id, true).await.unwrap();
    assert_eq!(plan.tasks.len(), 1, "{plan:?}");
    let Action::RequiresHuman {
        reason,
        affected_systems,
        settle,
    } = &plan.tasks[0].action
    else {
        panic!("not Resume any more: {plan:?}")
    };
    assert!(
        reason.contains("irreversible tool `ledgered` (task 2 seq"),
        "{reason}"
    );
    assert!(
        affected_systems[0].contains("email"),
        "{affected_systems:?}"
    );
    assert!(settle.contains("--retry-failed"), "{settle}");
    assert_eq!(compensations, 0);
    assert!(
        resumed.is_none(),
        "nothing goes on until a human has looked"
    );
    assert_eq!(*log.lock().unwrap(), ["do email"], "never repeated");
    assert!(recovery::waits_for_human(&plan).len() == 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_names_completed_upstream_and_every_downstream_task() {
    let (_dir, host, _log) = host_with(SideEffect::Compensable);
    // 2 completes; 3 runs after it and fails; 4 runs after 3 (and so fails on the
    // dependency); the root does not fail: it carries on without them.
    let ops = json!([
        child("source", json!([call("s")]), &[]),
        child("uses source", json!([call("u"), {"fail": "bad data"}]), &[2]),
        child("after failing", json!([call("late")]), &[3]),
        {"wait": 2},
        {"wait": 3},
        {"wait": 4},
    ]);
    let (report, _) = run_scripted(&host, ops, grant(&["ledgered"])).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let (plan, _, _) = host.recover(&report.run_id, false).await.unwrap();
    let three = plan
        .tasks
        .iter()
        .find(|t| t.task_id == 3)
        .unwrap_or_else(|| panic!("{plan:?}"));
    assert_eq!(three.upstream, vec![2], "{three:?}");
    assert_eq!(three.downstream, vec![1, 4], "{three:?}");
    let Action::Rollback { tasks, .. } = &three.action else {
        panic!("{three:?}")
    };
    assert_eq!(tasks, &vec![3]);
    let text = recovery::render(&plan);
    assert!(
        text.contains("upstream completed (kept, not re-run): tasks [2]"),
        "{text}"
    );
}
