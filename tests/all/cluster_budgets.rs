//! One budget drawn on by several workers (issue 14, item 4): a worker's run keeps
//! its budget in PostgreSQL (`budget_pools`), so children *without* a share of their
//! own — drawing on the run's budget — and runs with a token limit have their
//! children executed on other workers, every call reserved there against the one
//! pool. Needs the test server of [`crate::postgres`].

use crate::cluster::{submit, wait_for_the_queue, worker};
use crate::postgres::PgDb;
use crate::support::cli::*;
use crate::support::*;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

/// A run of `children` children without shares, each making `calls` calls.
fn children_without_shares(children: usize, calls: usize) -> String {
    let call = |k: usize, i: usize| serde_json::json!({"llm": {"prompt": format!("child {k} call {i}"), "model": "mock-small", "max_tokens": 200}});
    let mut ops: Vec<serde_json::Value> = (0..children)
        .map(|k| {
            let child: Vec<_> = (0..calls).map(|i| call(k, i)).collect();
            serde_json::json!({"spawn": {
                "description": format!("child {k}"),
                "input": serde_json::Value::Array(child).to_string(),
            }})
        })
        .collect();
    ops.extend((2..2 + children).map(|id| serde_json::json!({ "wait": id })));
    serde_json::Value::Array(ops).to_string()
}

/// Three workers on `config` until the queue is empty.
fn three_workers(pg: &PgDb, dir: &Path, config: &Path, first: usize) {
    let mut workers: Vec<Child> = (first..first + 3)
        .map(|n| worker(pg, dir, n, config, "3"))
        .collect();
    wait_for_the_queue(pg, dir, Duration::from_secs(240));
    for w in &mut workers {
        assert!(w.wait().unwrap().success());
    }
}

/// What the run's record and its pool say.
#[derive(Debug)]
struct Pooled {
    children: i64,
    /// Children whose output tells of a budget refusal.
    refused: i64,
    /// Distinct processes that executed an offered child.
    executors: i64,
    /// Offered children, closed.
    offered: i64,
    /// Spent and tokens used, per the recorded events.
    cost: f64,
    tokens: i64,
    /// Spent and tokens used, per the pool; holds left; the root's peak commitment.
    pool_spent: f64,
    pool_tokens: i64,
    holds: i64,
    peak: f64,
}

fn pooled(pg: &PgDb, run_id: &str) -> Pooled {
    let q = |sql: &str| sql.replace("RUN", run_id);
    let status: String = pg.one(&q("SELECT status FROM runs WHERE run_id = 'RUN'"));
    assert_eq!(status, "completed", "run {run_id}");
    Pooled {
        children: pg.one(&q(
            "SELECT COUNT(*) FROM tasks WHERE run_id = 'RUN' AND task_id > 1 AND budget_usd IS NULL",
        )),
        refused: pg.one(&q(
            "SELECT COUNT(*) FROM tasks WHERE run_id = 'RUN' AND task_id > 1
               AND lower(output) LIKE '%budget%'",
        )),
        executors: pg.one(&q(
            "SELECT COUNT(DISTINCT pid) FROM task_offers WHERE run_id = 'RUN'",
        )),
        offered: pg.one(&q(
            "SELECT COUNT(*) FROM task_offers WHERE run_id = 'RUN' AND done_at IS NOT NULL",
        )),
        cost: pg.one(&q(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM events WHERE run_id = 'RUN'",
        )),
        tokens: pg.one(&q(
            "SELECT COALESCE(SUM(tokens_in + tokens_out), 0)::bigint FROM events WHERE run_id = 'RUN'",
        )),
        pool_spent: pg.one(&q(
            "SELECT SUM(spent_usd) FROM budget_pools WHERE run_id = 'RUN'",
        )),
        pool_tokens: pg.one(&q(
            "SELECT tokens_used FROM budget_pools WHERE run_id = 'RUN' AND task_id = 1",
        )),
        holds: pg.one(&q("SELECT COUNT(*) FROM budget_holds WHERE run_id = 'RUN'")),
        peak: pg.one(&q(
            "SELECT peak_usd FROM budget_pools WHERE run_id = 'RUN' AND task_id = 1",
        )),
    }
}

/// Thirty children without shares race the run's $0.002 over three workers, then
/// thirty race a run's 2000-token limit: each run's children run on several
/// workers, every one of them offered; neither limit is ever passed (the recorded
/// spending, and the most the pool ever had committed at once), calls past it are
/// refused, and the pool's account matches the record: nothing charged twice or
/// lost, no hold left.
#[test]
fn children_without_shares_draw_on_one_pool_across_the_workers() {
    let Some(pg) = PgDb::new("pooled") else {
        return;
    };
    let dir = TempDir::new("cluster-pooled");
    let usd_config = dir.file("usd.toml", "[llm.mock]\nlatency_ms = 100\n");
    let input = children_without_shares(30, 3);
    let by_usd = submit(
        &pg,
        "scripted",
        &[
            "--input",
            &input,
            "--max-depth",
            "1",
            "--budget-usd",
            "0.002",
        ],
    );
    three_workers(&pg, dir.path(), &usd_config, 0);
    let usd = pooled(&pg, &by_usd);
    eprintln!("USD pool: {usd:?}");

    let token_config = dir.file(
        "tokens.toml",
        "[llm.mock]\nlatency_ms = 100\n[budget]\ntokens = 2000\n",
    );
    let by_tokens = submit(&pg, "scripted", &["--input", &input, "--max-depth", "1"]);
    three_workers(&pg, dir.path(), &token_config, 3);
    let tokens = pooled(&pg, &by_tokens);
    eprintln!("token pool: {tokens:?}");

    for (what, p) in [("USD", &usd), ("tokens", &tokens)] {
        assert_eq!(
            p.children, 30,
            "{what}: every child spawned, none with a share"
        );
        assert_eq!(p.offered, 30, "{what}: every child was offered and closed");
        assert!(
            p.executors >= 2,
            "{what}: children ran on {} worker(s)",
            p.executors
        );
        assert!(p.refused >= 1, "{what}: the pool ran out: {p:?}");
        assert!(
            (p.pool_spent - p.cost).abs() < 1e-9,
            "{what}: the pool's account matches the record: {p:?}"
        );
        assert_eq!(
            p.pool_tokens, p.tokens,
            "{what}: tokens charged once: {p:?}"
        );
        assert_eq!(p.holds, 0, "{what}: no hold left");
    }
    assert!(usd.cost <= 0.002 + 1e-12, "the run spent ${}", usd.cost);
    assert!(usd.peak <= 0.002 + 1e-12, "committed at most ${}", usd.peak);
    assert!(
        tokens.tokens <= 2000,
        "the run used {} tokens",
        tokens.tokens
    );
    // `inspect` shows the shared budget, as text and JSON.
    let inspect = |run: &str, json: bool| {
        let mut cmd = agentflow();
        cmd.args(["inspect", run, "--db", &pg.url]);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let text = inspect(&by_tokens, false);
    assert!(
        text.contains("budget shared by the workers: ")
            && text.contains(&format!("tokens {} of 2,000 used", group(tokens.tokens))),
        "{text}"
    );
    let view: serde_json::Value = serde_json::from_str(&inspect(&by_usd, true)).unwrap();
    let shared = &view["shared_budget"];
    assert!(
        (shared["spent_usd_total"].as_f64().unwrap() - usd.cost).abs() < 1e-9,
        "{shared}"
    );
    assert_eq!(shared["holds"], 0, "{shared}");
    let summary: String = pg.one(&format!(
        "SELECT response FROM events WHERE run_id = '{by_usd}' AND kind = 'budget.summary'"
    ));
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert!(summary["peak_committed_usd"].as_f64().unwrap() <= 0.002 + 1e-12);
    assert!((summary["spent_usd"].as_f64().unwrap() - usd.cost).abs() < 1e-9);
}

/// The pool's operations themselves, raced: eight threads on two connections (two
/// processes' worth) reserve $0.01 at a time from a $1 pool — exactly 100 fit, and
/// settling frees what the calls did not use; a share handed back by two processes
/// at once is handed back once; a hold whose process stopped renewing it counts as
/// spent whole when the pool runs short, and settling it later adds only the excess.
#[test]
fn the_shared_pool_reserves_atomically_and_reclaims_stopped_holds() {
    use agentflow::ledger::budgets::{Refusal, SharedBudgets};
    let Some(pg) = PgDb::new("pool_ops") else {
        return;
    };
    drop(agentflow::ledger::Ledger::open(pg.db()).unwrap()); // the schema
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _inside = runtime.enter();
    let a = SharedBudgets::connect(&pg.url).unwrap();
    let b = SharedBudgets::connect(&pg.url).unwrap();
    a.open("r", 1.0, Some(10_000)).unwrap();
    b.open("r", 5.0, None).unwrap(); // open already: unchanged
    let holds: Vec<i64> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let pool = if t % 2 == 0 { &a } else { &b };
                s.spawn(move || {
                    (0..30)
                        .filter_map(|_| pool.reserve("r", 1, 1, 0.01, 10).unwrap().ok())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    assert_eq!(holds.len(), 100, "exactly the pool's worth was reserved");
    let root = a.row("r", 1).unwrap().unwrap();
    assert!((root.reserved_usd - 1.0).abs() < 1e-9 && root.peak_usd <= 1.0 + 1e-9);
    assert!(matches!(
        a.reserve("r", 1, 1, 0.01, 10).unwrap(),
        Err(Refusal::Usd(_))
    ));
    for hold in &holds[..50] {
        a.settle("r", 1, *hold, (0.01, 10), (0.004, 4)).unwrap();
    }
    let root = a.row("r", 1).unwrap().unwrap();
    assert!((root.spent_usd - 0.2).abs() < 1e-9, "{root:?}");
    assert!((root.left() - 0.3).abs() < 1e-9, "{root:?}");
    assert_eq!((root.tokens_used, root.tokens_reserved), (200, 500));

    // A share carved, handed back by both processes at once: once.
    a.carve("r", 1, 2, 0.25).unwrap().unwrap();
    let hold = b.reserve("r", 2, 2, 0.1, 0).unwrap().unwrap();
    b.settle("r", 2, hold, (0.1, 0), (0.05, 0)).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| a.close("r", 1, 2).unwrap());
        s.spawn(|| b.close("r", 1, 2).unwrap());
    });
    let root = a.row("r", 1).unwrap().unwrap();
    assert!((root.carved_usd).abs() < 1e-9, "{root:?}");
    assert!((root.spent_usd - 0.25).abs() < 1e-9, "{root:?}");

    // The other 50 holds' process stopped: once expired, they count as spent.
    pg.conn()
        .execute_batch("UPDATE budget_holds SET expires_at = 0")
        .unwrap();
    let view = agentflow::ledger::budgets::view(&pg.conn(), "r")
        .unwrap()
        .unwrap();
    assert_eq!((view.holds, view.stale_holds), (50, 50), "{view:?}");
    assert!(matches!(
        a.reserve("r", 1, 1, 0.3, 0).unwrap(),
        Err(Refusal::Usd(_))
    ));
    let root = a.row("r", 1).unwrap().unwrap();
    assert!((root.spent_usd - 0.75).abs() < 1e-9, "{root:?}");
    assert!(root.reserved_usd.abs() < 1e-9, "{root:?}");
    // Settling one of them afterwards adds only what it cost above its hold.
    a.settle("r", 1, holds[50], (0.01, 10), (0.015, 12))
        .unwrap();
    let root = a.row("r", 1).unwrap().unwrap();
    assert!((root.spent_usd - 0.755).abs() < 1e-9, "{root:?}");
    assert_eq!(root.tokens_used, 200 + 500 + 2);
    assert!((a.spent("r").unwrap() - 0.755).abs() < 1e-9);

    // Any live process reclaims the stale holds of every run now and then.
    b.open("r2", 1.0, None).unwrap();
    b.reserve("r2", 1, 1, 0.2, 0).unwrap().unwrap();
    b.reserve("r2", 1, 1, 0.3, 0).unwrap().unwrap();
    pg.conn()
        .execute_batch("UPDATE budget_holds SET expires_at = 0 WHERE run_id = 'r2'")
        .unwrap();
    assert_eq!(a.reclaim_everywhere().unwrap(), 2);
    let r2 = a.row("r2", 1).unwrap().unwrap();
    assert!(
        (r2.spent_usd - 0.5).abs() < 1e-9 && r2.reserved_usd.abs() < 1e-9,
        "{r2:?}"
    );
}

/// `n` with thousands separated by commas, as `inspect` prints it.
fn group(n: i64) -> String {
    agentflow::observe::inspect::group_digits(n)
}

/// A worker's run interrupted (its worker SIGKILLed mid-run) and resumed by an
/// operator's `agentflow resume` goes on drawing on the run's pool in PostgreSQL —
/// not on a budget of its own process charged from the record — so the pool holds
/// every call of both halves.
#[test]
fn an_operators_resume_of_a_workers_run_draws_on_its_pool() {
    let Some(pg) = PgDb::new("pool_resume") else {
        return;
    };
    let dir = TempDir::new("cluster-pool-resume");
    let config = dir.file("w.toml", "[llm.mock]\nlatency_ms = 300\n");
    let calls: Vec<serde_json::Value> = (0..8)
        .map(|i| serde_json::json!({"llm": {"prompt": format!("call {i}"), "model": "mock-small", "max_tokens": 50}}))
        .collect();
    let input = serde_json::Value::Array(calls).to_string();
    let run_id = submit(
        &pg,
        "scripted",
        &["--input", &input, "--budget-usd", "0.01"],
    );
    let mut w = worker(&pg, dir.path(), 0, &config, "30");
    let replied = |n: i64| {
        let done: i64 = pg.one(&format!(
            "SELECT COUNT(*) FROM events WHERE run_id = '{run_id}' AND kind = 'llm.complete'"
        ));
        done >= n
    };
    let started = std::time::Instant::now();
    while !replied(3) {
        assert!(started.elapsed() < Duration::from_secs(60), "no calls");
        std::thread::sleep(Duration::from_millis(20));
    }
    w.kill().unwrap();
    w.wait().unwrap();
    let before: f64 = pg.one(&format!(
        "SELECT SUM(spent_usd) FROM budget_pools WHERE run_id = '{run_id}'"
    ));
    let out = agentflow()
        .args(["resume", &run_id, "--json", "--db", &pg.url, "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let status: String = pg.one(&format!(
        "SELECT status FROM runs WHERE run_id = '{run_id}'"
    ));
    assert_eq!(status, "completed");
    let recorded: f64 = pg.one(&format!(
        "SELECT COALESCE(SUM(cost_usd), 0) FROM events WHERE run_id = '{run_id}'"
    ));
    let (spent, reserved): (f64, f64) = pg
        .conn()
        .query_row(
            "SELECT SUM(spent_usd), SUM(reserved_usd) FROM budget_pools WHERE run_id = ?1",
            [&run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(
        spent > before,
        "the resume's calls were charged to the pool"
    );
    // Every recorded call is in the pool; beyond it at most the call the worker had in
    // flight when killed (sent again by the resume, or still held).
    assert!(
        spent >= recorded - 1e-12 && spent + reserved <= recorded + 0.0001,
        "pool ${spent} spent + ${reserved} held for ${recorded} recorded"
    );
}
