//! Merging, complete (issue 16, item 6): N overlapping proposals go to the merge model
//! together, in one call; a merged text must pass the whole validator set of agent
//! `merge`, judges included.

use crate::support::*;
use agentflow::merge::resolve::{Decision, conflicts, resolve};
use agentflow::{RunOptions, Status};
use serde_json::json;

const BASE: &str = "line one\nbeta\nline three\n";

fn proposal(to: &str) -> serde_json::Value {
    json!({"spawn": {"description": format!("make beta {to}"),
                     "input": BASE.replace("beta", to)}})
}

/// Children echo their input as `child:<input>`; the proposals are revisions of that.
fn child_base() -> String {
    format!("child:{BASE}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_overlapping_proposals_are_merged_in_one_llm_call() {
    let (_dir, host) = temp_host(
        "merge-nway",
        r#"
[[llm.mock.rules]]
contains = "merging parallel edits to `proposal@"
reply = "MERGED:\nchild:line one\nB1 and B2 and B3\nline three\nEND MERGED\nREASONING: all three renamings kept"
"#,
    );
    let ops = json!([
        proposal("B1"),
        proposal("B2"),
        proposal("B3"),
        {"wait": 2}, {"wait": 3}, {"wait": 4},
        {"merge": {"base": child_base(), "ids": [2, 3, 4]}},
    ]);
    let (report, results) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let merged = &results[6];
    assert_eq!(merged["category"], "semantic", "{merged}");
    assert_eq!(
        merged["text"],
        "child:line one\nB1 and B2 and B3\nline three\n"
    );
    let reasoning: Vec<&str> = merged["reasoning"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(reasoning[0].starts_with("task 2: trivial"), "{reasoning:?}");
    for (i, task) in [(1, 3), (2, 4)] {
        assert!(
            reasoning[i].starts_with(&format!("task {task}: semantic: merged with tasks [2, 3, 4] in one LLM merge: all three renamings kept")),
            "{reasoning:?}"
        );
    }
    // One call, not one per overlapping pair, with every revision in its prompt.
    let calls = of_kind(&events(&host, &report.run_id), "merge.llm");
    assert_eq!(calls.len(), 1, "{calls:?}");
    let prompt = calls[0].request["prompt"].as_str().unwrap();
    for want in [
        "3 revisions of one base",
        "Change 1 (task 2: make beta B1)",
        "Change 2 (task 3: make beta B2)",
        "Change 3 (task 4: make beta B3)",
        "+B3",
    ] {
        assert!(prompt.contains(want), "missing {want:?} in {prompt}");
    }
    assert_eq!(calls[0].request["revisions"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_text_the_merge_judge_rejects_goes_to_a_human() {
    let dir = TempDir::new("merge-judge");
    let host = std::sync::Arc::new(host(
        &dir,
        r#"
[[validators]]
name = "merge-judge"
agents = ["merge"]
kind = "judge"
rubric = "MERGE-RUBRIC: the merged text keeps every renaming."
threshold = 7

[[llm.mock.rules]]
contains = "MERGE-RUBRIC"
reply = "score: 2 - B2 was dropped"

[[llm.mock.rules]]
contains = "merging parallel edits to `proposal@"
reply = "MERGED:\nchild:line one\nB1 only\nline three\nEND MERGED\nREASONING: took the first"
"#,
    ));
    let ops = json!([
        proposal("B1"),
        proposal("B2"),
        {"wait": 2}, {"wait": 3},
        {"merge": {"base": child_base(), "ids": [2, 3]}},
    ]);
    let human = "child:line one\nB1 and B2\nline three\n";
    let resolver = {
        let host = host.clone();
        tokio::task::spawn_blocking(move || {
            for _ in 0..600 {
                let conn = host.ledger().reader().unwrap();
                if let Some(c) = conflicts(&conn, false).unwrap().into_iter().next() {
                    resolve(host.ledger(), c.id, Decision::Text(human.into()), None).unwrap();
                    return Some(c);
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            None
        })
    };
    let (report, results) = run_scripted(&host, ops, RunOptions::default()).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let conflict = resolver.await.unwrap().expect("the merge went to a human");
    assert_eq!(conflict.category.as_str(), "critical");
    assert!(
        conflict.reasoning.contains("the LLM merge was rejected")
            && conflict.reasoning.contains("merge-judge")
            && conflict.reasoning.contains("B2 was dropped"),
        "{conflict:?}"
    );
    assert_eq!(results[4]["text"], human, "{}", results[4]);
    assert_eq!(results[4]["category"], "critical");
    // The judge's verdict is recorded under the parent, marked as a merge's.
    let verdicts = of_kind(&events(&host, &report.run_id), "validation.result");
    let judged: Vec<_> = verdicts
        .iter()
        .filter(|e| e.request["merge"].is_string())
        .collect();
    assert_eq!(judged.len(), 1, "{verdicts:?}");
    assert_eq!(judged[0].task_id, 1);
    assert!(!judged[0].ok);
}

fn write(path: &str, content: &str) -> serde_json::Value {
    json!({"tool": {"name": "workspace", "args": {"op": "write", "path": path, "content": content}}})
}

fn read(path: &str) -> serde_json::Value {
    json!({"tool": {"name": "workspace", "args": {"op": "read", "path": path}}})
}

/// A workspace with `a.txt` and a critical `deploy/prod.toml`, and a host that sends
/// `deploy/*` changes to a human.
fn critical_setup(label: &str) -> (TempDir, std::sync::Arc<agentflow::Host>, RunOptions) {
    let dir = TempDir::new(label);
    let ws = dir.join("ws");
    std::fs::create_dir_all(ws.join("deploy")).unwrap();
    std::fs::write(ws.join("a.txt"), "a\n").unwrap();
    std::fs::write(ws.join("deploy/prod.toml"), "replicas = 2\n").unwrap();
    let host = std::sync::Arc::new(host(&dir, "[merge]\ncritical_paths = [\"deploy/*\"]\n"));
    let opts = RunOptions {
        workspace: Some(ws),
        ..grant(&["workspace"])
    };
    (dir, host, opts)
}

/// The child: changes `a.txt` (trivial) and `deploy/prod.toml` (critical).
fn changing_child() -> serde_json::Value {
    let ops = json!([
        write("a.txt", "A\n"),
        write("deploy/prod.toml", "replicas = 20\n")
    ]);
    json!({"spawn": {"description": "scale up", "input": ops.to_string()}})
}

/// A human who resolves the first pending conflict by taking the child's version —
/// once `ready` holds for the ledger (so a test can prove the join did not wait).
fn human(
    host: &std::sync::Arc<agentflow::Host>,
    ready: impl Fn(&[agentflow::ledger::query::EventRow]) -> bool + Send + 'static,
) -> tokio::task::JoinHandle<Option<u64>> {
    let host = host.clone();
    tokio::task::spawn_blocking(move || {
        for _ in 0..600 {
            let conn = host.ledger().reader().unwrap();
            if let Some(c) = conflicts(&conn, false).unwrap().into_iter().next() {
                let evs = agentflow::ledger::query::events(&conn, &c.run_id, None).unwrap();
                if ready(&evs) {
                    resolve(host.ledger(), c.id, Decision::Take(c.child_task), None).unwrap();
                    return Some(c.id);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_join_merges_the_rest_and_leaves_the_critical_file_pending() {
    let (dir, host, opts) = critical_setup("merge-partial");
    let ops = json!([
        changing_child(),
        {"wait_partial": 2},
        read("a.txt"),
        read("deploy/prod.toml"),
        {"take_pending": null},
        read("deploy/prod.toml"),
    ]);
    // The human decides only after the parent has read both files past the join: a
    // join that waited for the decision would never get there.
    let resolver = human(&host, |evs| {
        evs.iter()
            .filter(|e| e.task_id == 1 && e.kind == "tools.call")
            .any(|e| {
                e.request["args"]
                    .as_str()
                    .unwrap_or("")
                    .contains("deploy/prod.toml")
            })
    });
    let (report, results) = run_scripted(&host, ops, opts).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    let id = resolver
        .await
        .unwrap()
        .expect("a conflict went to the human");
    let joined = &results[1];
    assert!(joined["outcome"]["completed"].is_string(), "{joined}");
    assert_eq!(joined["pending"][0]["id"], id);
    assert_eq!(joined["pending"][0]["subject"], "deploy/prod.toml");
    assert_eq!(
        results[2]["ok"], "A\n",
        "the trivial change is merged at once"
    );
    assert_eq!(
        results[3]["ok"], "replicas = 2\n",
        "the critical file keeps the parent's version until decided"
    );
    assert_eq!(results[4][0]["ok"], "replicas = 20\n", "{}", results[4]);
    assert_eq!(results[5]["ok"], "replicas = 20\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("ws/deploy/prod.toml")).unwrap(),
        "replicas = 20\n"
    );
    let taken = of_kind(&events(&host, &report.run_id), "tasks.take_merge");
    assert_eq!(taken.len(), 1);
    assert!(taken[0].ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_merge_never_taken_is_applied_before_the_task_completes() {
    let (dir, host, opts) = critical_setup("merge-partial-end");
    let ops = json!([changing_child(), {"wait_partial": 2}, read("a.txt")]);
    let resolver = human(&host, |_| true);
    let (report, results) = run_scripted(&host, ops, opts).await;
    assert_eq!(report.status, Status::Completed, "{report:?}");
    assert!(resolver.await.unwrap().is_some());
    assert_eq!(results[1]["pending"][0]["subject"], "deploy/prod.toml");
    assert_eq!(
        std::fs::read_to_string(dir.join("ws/deploy/prod.toml")).unwrap(),
        "replicas = 20\n",
        "nothing the child did is lost"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("ws/a.txt")).unwrap(),
        "A\n"
    );
}
