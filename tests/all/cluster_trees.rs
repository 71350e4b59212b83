//! Children that spawn, executed on other workers (issue 14, items 2–4): a worker's
//! run offers every child — those that spawn grandchildren too — and the run's
//! execution slots (`max_concurrent_tasks`), locks, task ids, duplicate keys and
//! budget are rows in PostgreSQL, so they hold across the workers executing its
//! subtrees; a worker that dies executing a child that spawns is taken over by
//! replay, the child waiting again for its grandchildren. Needs the test server of
//! [`crate::postgres`].

use crate::cluster::{submit, wait_for_the_queue, worker};
use crate::postgres::PgDb;
use crate::support::cli::*;
use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// A grandchild's script: the wall clock, a sleep holding its slot, the clock again.
fn timed(ms: u64) -> String {
    serde_json::json!([{"clock": null}, {"sleep_ms": ms}, {"clock": null}]).to_string()
}

/// `[start, end]` of each task at depth 2 of `run_id` (from its clocks), and whether
/// it held the `db` lock.
fn intervals(pg: &PgDb, run_id: &str) -> Vec<(u64, u64, bool)> {
    spans_of(pg, run_id, "depth = 2")
}

/// [`intervals`] of the completed tasks of `run_id` `filter` selects.
fn spans_of(pg: &PgDb, run_id: &str, filter: &str) -> Vec<(u64, u64, bool)> {
    let conn = pg.conn();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT output, resources FROM tasks WHERE run_id = ?1 AND {filter}
              AND status = 'completed' ORDER BY task_id"
        ))
        .unwrap();
    stmt.query_map([run_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })
    .unwrap()
    .map(|row| {
        let (output, resources) = row.unwrap();
        let v: serde_json::Value = serde_json::from_str(&output).unwrap();
        (
            v[0].as_u64().unwrap(),
            v[2].as_u64().unwrap(),
            resources.contains("resource:db"),
        )
    })
    .collect()
}

/// The most intervals open at once.
fn most_at_once(intervals: &[(u64, u64, bool)]) -> usize {
    crate::support::most_at_once(intervals.iter().map(|(a, b, _)| (*a as i64, *b as i64)))
}

/// Three children, each spawning three grandchildren — one holding the `db`
/// resource, one free, one with the dedup key `once` that only one spawn of the run
/// may use — and a fourth whose grandchild depends on the first child, run over
/// three workers under `max_concurrent_tasks = 2`: every child
/// (spawning ones included) is offered and executed by several workers; never more
/// than two grandchildren execute at once anywhere, the `db` holders never overlap,
/// exactly one `once` task exists and the two other spawns were refused as its
/// duplicates; the dependent grandchild starts after the first child's subtree
/// ended; task ids are unique and dense; no slot or lock is left.
#[test]
fn children_that_spawn_run_on_other_workers_within_the_runs_limits() {
    let Some(pg) = PgDb::new("trees") else {
        return;
    };
    let dir = TempDir::new("cluster-trees");
    let config = dir.file(
        "w.toml",
        "[llm.mock]\nlatency_ms = 50\n[constraints]\nmax_concurrent_tasks = 2\n",
    );
    let child = |k: usize| {
        serde_json::json!([
            {"spawn": {"description": format!("region {k} db"), "input": timed(400), "resources": ["db"]}},
            {"spawn": {"description": format!("region {k} free"), "input": timed(400)}},
            {"spawn": {"description": format!("region {k} once"), "input": timed(400), "dedup_key": "once"}},
            {"wait_all": null},
        ])
        .to_string()
    };
    // A fourth child's grandchild waits for the first child (task 2), which another
    // worker executes: its end reaches the grandchild's worker through the ledger.
    let late = serde_json::json!([
        {"spawn": {"description": "late", "input": timed(100), "after": [2]}},
        {"wait_all": null},
    ])
    .to_string();
    let root: Vec<serde_json::Value> = (0..3)
        .map(|k| serde_json::json!({"spawn": {"description": format!("region {k}"), "input": child(k)}}))
        .chain([
            serde_json::json!({"spawn": {"description": "region late", "input": late}}),
            serde_json::json!({"wait_all": null}),
            // The last id of the run: a grandchild another worker's child spawned,
            // unknown to the root's worker until it reads it from the ledger.
            serde_json::json!({"wait": 13}),
        ])
        .collect();
    let input = serde_json::Value::Array(root).to_string();
    let run_id = submit(&pg, "scripted", &["--input", &input, "--max-depth", "2"]);
    let mut workers: Vec<Child> = (0..3)
        .map(|n| worker(&pg, dir.path(), n, &config, "3"))
        .collect();
    // While it runs, `inspect` shows the slots and locks it holds across the workers.
    let (mut seen, started) = (String::new(), Instant::now());
    while started.elapsed() < Duration::from_secs(30) {
        let out = agentflow()
            .args(["inspect", &run_id, "--db", &pg.url])
            .output()
            .unwrap();
        let text = stdout(&out);
        if let Some(line) = text.lines().find(|l| {
            l.contains("limits shared by the workers: ") && l.contains("`resource:db` by task")
        }) {
            seen = line.to_string();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        seen.contains("task slot(s) in use"),
        "inspect never showed the db lock held"
    );
    wait_for_the_queue(&pg, dir.path(), Duration::from_secs(180));
    for w in &mut workers {
        assert!(w.wait().unwrap().success());
    }
    let q = |sql: &str| sql.replace("RUN", &run_id);
    let status: String = pg.one(&q("SELECT status FROM runs WHERE run_id = 'RUN'"));
    let output: String = pg.one(&q(
        "SELECT COALESCE(output, error) FROM runs WHERE run_id = 'RUN'",
    ));
    assert_eq!(status, "completed", "{output}");

    let tasks: i64 = pg.one(&q("SELECT COUNT(*) FROM tasks WHERE run_id = 'RUN'"));
    let grandchildren: i64 = pg.one(&q(
        "SELECT COUNT(*) FROM tasks WHERE run_id = 'RUN' AND depth = 2",
    ));
    let max_id: i64 = pg.one(&q("SELECT MAX(task_id) FROM tasks WHERE run_id = 'RUN'"));
    assert_eq!(
        grandchildren, 8,
        "six, one `once` and the late one: {output}"
    );
    assert_eq!(tasks, 13, "{output}");
    let root: serde_json::Value = serde_json::from_str(&output).unwrap();
    let last = &root.as_array().unwrap()[5];
    assert!(
        last["completed"].is_string(),
        "the root waited for task 13: {last}"
    );
    assert_eq!(max_id, 13, "task ids claimed from one counter, none twice");
    let once: i64 = pg.one(&q(
        "SELECT COUNT(*) FROM tasks WHERE run_id = 'RUN' AND dedup_key = 'once'",
    ));
    assert_eq!(once, 1);
    assert_eq!(
        output.matches("DuplicateTask").count(),
        2,
        "two spawns refused as duplicates: {output}"
    );
    // Every child offered, spawning ones included, and executed by several workers.
    let offered: i64 = pg.one(&q(
        "SELECT COUNT(*) FROM task_offers WHERE run_id = 'RUN' AND done_at IS NOT NULL",
    ));
    assert_eq!(offered, 12, "every task but the root offered and closed");
    let spawners_apart: i64 = pg.one(&q(
        "SELECT COUNT(*) FROM task_offers o JOIN tasks t USING (run_id, task_id)
          WHERE o.run_id = 'RUN' AND t.depth = 1 AND o.pid IS NOT NULL",
    ));
    assert_eq!(
        spawners_apart, 4,
        "the children that spawn were executed from offers"
    );
    let executors: i64 = pg.one(&q(
        "SELECT COUNT(DISTINCT pid) FROM task_offers WHERE run_id = 'RUN'",
    ));
    assert!(executors >= 2, "offered tasks ran on {executors} worker(s)");

    let spans = intervals(&pg, &run_id);
    assert_eq!(spans.len(), 8, "{spans:?}");
    let late_start: i64 = pg.one(&q(
        "SELECT task_id FROM tasks WHERE run_id = 'RUN' AND description = 'late'",
    ));
    let first_child_ended = spans_of(&pg, &run_id, "parent_id = 2")
        .iter()
        .map(|s| s.1)
        .max()
        .unwrap();
    let late = spans_of(&pg, &run_id, &format!("task_id = {late_start}"));
    assert!(
        late[0].0 >= first_child_ended,
        "the late task started at {} before task 2's last grandchild ended at {first_child_ended}",
        late[0].0
    );
    let at_once = most_at_once(&spans);
    assert!(
        at_once <= 2,
        "{at_once} grandchildren executed at once over the workers: {spans:?}"
    );
    let db: Vec<_> = spans.iter().copied().filter(|s| s.2).collect();
    assert_eq!(db.len(), 3);
    assert_eq!(most_at_once(&db), 1, "the `db` holders overlapped: {db:?}");
    eprintln!("most at once: {at_once} of 2; over {executors} workers");

    let left: i64 = pg.one(&q(
        "SELECT (SELECT COUNT(*) FROM run_slots WHERE run_id = 'RUN')
              + (SELECT COUNT(*) FROM run_locks WHERE run_id = 'RUN')",
    ));
    assert_eq!(left, 0, "no slot or lock left behind");
}

/// A deployer-style tree: each run's root provisions two regions one after the other,
/// each region provisions two nodes (an LLM call, a `cloud` create, an LLM call) and
/// reports. Workers are SIGKILLed at random, at least six times while executing a
/// region (a child that spawns): the region is claimed by another worker, replayed,
/// and waits again for the nodes it spawned. Every run completes with the output of
/// an uncrashed run, and every node is created once.
#[test]
fn a_child_that_spawns_is_taken_over_when_its_worker_dies() {
    let Some(pg) = PgDb::new("tree_takeover") else {
        return;
    };
    let dir = TempDir::new("cluster-tree-takeover");
    let config = dir.file("w.toml", "[llm.mock]\nlatency_ms = 200\n");
    let node = |r: usize, n: usize| {
        serde_json::json!([
            {"llm": {"prompt": format!("plan node {r}-{n}"), "model": "mock-small", "max_tokens": 100}},
            {"tool": {"name": "cloud", "args": {"op": "create", "resource": format!("node-{r}-{n}")}}},
            {"fail_if_err": null},
            {"llm": {"prompt": format!("report node {r}-{n}"), "model": "mock-small", "max_tokens": 100}},
        ])
        .to_string()
    };
    let region = |r: usize| {
        serde_json::json!([
            {"spawn_wait": {"description": format!("node {r}-0"), "input": node(r, 0)}},
            {"spawn_wait": {"description": format!("node {r}-1"), "input": node(r, 1)}},
            {"llm": {"prompt": format!("report region {r}"), "model": "mock-small", "max_tokens": 100}},
        ])
        .to_string()
    };
    let input = serde_json::json!([
        {"spawn_wait": {"description": "region 0", "input": region(0)}},
        {"spawn_wait": {"description": "region 1", "input": region(1)}},
    ])
    .to_string();
    let args = |ws: &Path| -> Vec<String> {
        [
            "--input",
            &input,
            "--max-depth",
            "2",
            "--budget-usd",
            "0.05",
            "--grant",
            "cloud",
            "--workspace",
            ws.to_str().unwrap(),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let base = dir.join("base");
    std::fs::create_dir_all(&base).unwrap();
    let baseline = agentflow()
        .arg("run")
        .arg(example("scripted"))
        .args(args(&base))
        .arg("--json")
        .arg("--config")
        .arg(&config)
        .arg("--db")
        .arg(dir.join("base.db"))
        .output()
        .unwrap();
    assert!(baseline.status.success(), "{}", stderr(&baseline));
    let baseline = stdout_json(&baseline)["output"]
        .as_str()
        .unwrap()
        .to_owned();

    let (mut ids, mut workspaces) = (Vec::new(), Vec::<PathBuf>::new());
    let submit_one = |ids: &mut Vec<String>, workspaces: &mut Vec<PathBuf>| {
        let ws = dir.path().join(format!("ws-{}", workspaces.len()));
        std::fs::create_dir_all(&ws).unwrap();
        let args = args(&ws);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ids.push(submit(&pg, "scripted", &args));
        workspaces.push(ws);
    };
    for _ in 0..3 {
        submit_one(&mut ids, &mut workspaces);
    }
    let mut next = 0;
    let mut workers: Vec<Child> = (0..3)
        .map(|_| {
            next += 1;
            worker(&pg, dir.path(), next, &config, "3")
        })
        .collect();
    let mut seed: u64 = 0x853c_49e6_748f_ea9b;
    let mut random = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let (mut kills, mut region_kills, started) = (0, 0, Instant::now());
    while (kills < 12 || region_kills < 6) && started.elapsed() < Duration::from_secs(150) {
        let open: i64 = pg.one("SELECT COUNT(*) FROM submissions WHERE finished_at IS NULL");
        if open < 2 {
            submit_one(&mut ids, &mut workspaces);
        }
        std::thread::sleep(Duration::from_millis(200 + random(600)));
        let slot = random(3) as usize;
        let pid = workers[slot].id() as i64;
        let (regions, held): (i64, i64) = pg
            .conn()
            .query_row(
                "SELECT (SELECT COUNT(*) FROM task_offers o JOIN tasks t USING (run_id, task_id)
                          WHERE o.pid = ?1 AND o.done_at IS NULL AND t.depth = 1),
                        (SELECT COUNT(*) FROM task_offers WHERE pid = ?1 AND done_at IS NULL)
                      + (SELECT COUNT(*) FROM leases l JOIN runs r ON r.run_id = l.run_id
                          WHERE l.pid = ?1 AND r.status = 'running')",
                [pid],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        if held == 0 {
            continue;
        }
        workers[slot].kill().unwrap(); // SIGKILL
        workers[slot].wait().unwrap();
        kills += 1;
        region_kills += usize::from(regions > 0);
        next += 1;
        workers[slot] = worker(&pg, dir.path(), next, &config, "3");
    }
    assert!(
        kills >= 12 && region_kills >= 6,
        "{kills} kills, {region_kills} of a worker executing a region"
    );
    wait_for_the_queue(&pg, dir.path(), Duration::from_secs(240));
    for w in &mut workers {
        let _ = w.wait();
    }
    let conn = pg.conn();
    for (id, ws) in ids.iter().zip(&workspaces) {
        let (status, output, error): (String, Option<String>, Option<String>) = conn
            .query_row(
                "SELECT status, output, error FROM runs WHERE run_id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(status, "completed", "run {id}: {error:?}");
        assert_eq!(
            output.as_deref().map(crate::cluster::without_repeat_flags),
            Some(crate::cluster::without_repeat_flags(&baseline)),
            "run {id}"
        );
        let log = std::fs::read_to_string(ws.join("cloud.log")).unwrap_or_default();
        for (r, n) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            let create = format!("create node-{r}-{n} ");
            assert_eq!(
                log.lines().filter(|l| l.starts_with(&create)).count(),
                1,
                "run {id}: node {r}-{n} in the cloud once: {log}"
            );
        }
        let tasks: i64 = conn
            .query_row("SELECT COUNT(*) FROM tasks WHERE run_id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(
            tasks, 7,
            "run {id}: the root, two regions, four nodes — none twice"
        );
    }
    let regions_taken_over: i64 = pg.one(
        "SELECT COUNT(*) FROM task_offers o JOIN tasks t USING (run_id, task_id)
          WHERE o.claims > 1 AND t.depth = 1",
    );
    println!(
        "spawning children: {} runs, {kills} workers killed ({region_kills} executing a region), \
         {regions_taken_over} regions taken over",
        ids.len()
    );
    assert!(regions_taken_over >= 1, "a region was taken over");
}

/// The run's task counter, duplicate keys and slots themselves, raced: eight threads
/// on two connections claim ids (every one distinct; none past the task limit) and
/// one key (exactly one wins); a key claimed by a spawner that died before recording
/// its task stands while it may still be recorded and no longer after; slots are
/// never more than the limit, and free again once let go of.
#[test]
fn the_runs_counter_keys_and_slots_are_claimed_atomically() {
    use agentflow::ledger::budgets::SharedBudgets;
    use agentflow::ledger::run_limits::TaskClaim;
    let Some(pg) = PgDb::new("run_limits") else {
        return;
    };
    drop(agentflow::ledger::Ledger::open(pg.db()).unwrap()); // the schema
    let a = SharedBudgets::connect(&pg.url).unwrap();
    let b = SharedBudgets::connect(&pg.url).unwrap();
    a.open("r", 1.0, None).unwrap();
    let claims: Vec<TaskClaim> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let pool = if t % 2 == 0 { &a } else { &b };
                s.spawn(move || {
                    (0..10)
                        .map(|i| {
                            let key = vec![format!("k:{}", if i == 0 { "one" } else { "" })];
                            let check = if i == 0 { key.clone() } else { Vec::new() };
                            let spawn = format!("1:{t}-{i}");
                            pool.claim_task("r", &spawn, &check, &key, 200).unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let ids: Vec<u64> = claims
        .iter()
        .filter_map(|c| match c {
            TaskClaim::Id(id) => Some(*id),
            _ => None,
        })
        .collect();
    let unique: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "an id claimed twice: {ids:?}");
    assert!(ids.iter().all(|id| (2..=74).contains(id)), "{ids:?}");
    let duplicates = claims
        .iter()
        .filter(|c| matches!(c, TaskClaim::Duplicate(_)))
        .count();
    assert_eq!(
        duplicates, 7,
        "one of eight claims of `one` won: {claims:?}"
    );
    assert_eq!(ids.len(), 73, "ids 2 to 74: {claims:?}");
    assert_eq!(
        a.claim_task("r", "1:x", &[], &[], 74).unwrap(),
        TaskClaim::Full
    );
    assert_eq!(
        a.claim_task("r", "1:x", &[], &[], 75).unwrap(),
        TaskClaim::Id(75)
    );

    // A key claimed for a task never recorded: in flight for a few seconds against
    // other spawns, then dead; the same spawn made again (its spawner resumed at
    // once) gets its id again, and the key.
    b.open("s", 1.0, None).unwrap();
    let key = vec!["k:deploy".to_string()];
    let first = a.claim_task("s", "1:3", &key, &key, 100).unwrap();
    let TaskClaim::Id(first) = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        b.claim_task("s", "4:1", &key, &key, 100).unwrap(),
        TaskClaim::Duplicate(first)
    );
    let remade = b.claim_task("s", "1:3", &key, &key, 100).unwrap();
    assert_eq!(remade, TaskClaim::Id(first), "the same spawn, its id again");
    let remade = first;
    assert_eq!(
        a.claim_task("s", "4:1", &key, &key, 100).unwrap(),
        TaskClaim::Duplicate(remade)
    );
    pg.conn()
        .execute_batch("UPDATE run_dedup SET claimed_at = claimed_at - 10000 WHERE run_id = 's'")
        .unwrap();
    let again = b.claim_task("s", "4:1", &key, &key, 100).unwrap();
    assert!(
        matches!(again, TaskClaim::Id(id) if id > remade),
        "{again:?}"
    );

    // Slots: two of eight threads' tries fit at once; let go of, they fit again.
    let held: Vec<i64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let pool = if t % 2 == 0 { &a } else { &b };
                s.spawn(move || pool.take_slot("r", t, 2).unwrap())
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(held.len(), 2, "{held:?}");
    assert_eq!(a.slots_in_use("r").unwrap(), 2);
    for slot in held {
        b.release_slot(slot, 2).unwrap();
    }
    assert_eq!(a.slots_in_use("r").unwrap(), 0);
    assert!(a.take_slot("r", 9, 2).unwrap().is_some());
    // Locks: one holder; the other learns who holds it; free once let go of.
    assert_eq!(a.take_lock("r", "resource:db", 4).unwrap(), None);
    assert_eq!(b.take_lock("r", "resource:db", 5).unwrap(), Some(4));
    a.release_lock("r", "resource:db", 4).unwrap();
    assert_eq!(b.take_lock("r", "resource:db", 5).unwrap(), None);
}
