//! Tool-call arguments through each built-in tool: `kv`, `workspace` (as the root task,
//! on the directory itself, and as a child task, in its copy-on-write view),
//! `http_fetch` and `cloud`. Input: one selector byte (tool, task), then JSON — an
//! object is one call's arguments, an array up to 16 calls in sequence.
//!
//! Properties: no call panics; every line of the `cloud` tool's log is one whole
//! action carrying the key of the call that wrote it; and the workspace tool touches
//! nothing outside its directory: symlinks (to a file, a directory, an absolute path) and a hard link
//! leading outside are planted in it before each input, and afterwards the files they
//! lead to, and the listings of the directories around the workspace, are unchanged.
//!
//! No network: `http_fetch` allows only IP literals (no DNS) that are loopback or
//! private, with `http_allow_private` off, so every allowed URL is refused before a
//! connection is made.
#![no_main]

use agentflow::config::ToolsConfig;
use agentflow::ledger::{Ledger, NewRun, NewTask};
use agentflow::tools::cloud::CloudTool;
use agentflow::tools::http_fetch::HttpFetchTool;
use agentflow::tools::kv::KvTool;
use agentflow::tools::workspace::WorkspaceTool;
use agentflow::tools::{Tool, ToolCallCtx};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const RUN: &str = "fuzz-run";
const SECRET: &[u8] = b"outside the workspace: must never change\n";

struct World {
    base: PathBuf,
    ws: PathBuf,
    rt: tokio::runtime::Runtime,
    ledger: Ledger,
    kv: KvTool,
    workspace: WorkspaceTool,
    http: HttpFetchTool,
    cloud: CloudTool,
}

fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        // A RAM disk when there is one: the ledger syncs every commit.
        let tmp = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let base = tmp.join(format!("agentflow-fuzz-tool-call-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let ws = base.join("ws");
        for dir in [&ws, &base.join("db"), &base.join("outside")] {
            std::fs::create_dir_all(dir).unwrap();
        }
        for file in [
            "secret.txt",
            "outside/sentinel.txt",
            "outside/hard_target.txt",
        ] {
            std::fs::write(base.join(file), SECRET).unwrap();
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ledger = Ledger::open(base.join("db/ledger.db")).unwrap();
        let component: std::sync::Arc<[u8]> = std::sync::Arc::from(&b"fuzz"[..]);
        let component_hash = agentflow::ledger::blobs::sha256_hex(&component);
        let task = |task_id: u64, parent_id: Option<u64>| NewTask {
            run_id: RUN.into(),
            task_id,
            parent_id,
            depth: parent_id.map_or(0, |_| 1),
            agent: "fuzz".into(),
            component_hash: component_hash.clone(),
            description: String::new(),
            input: String::new(),
            spawn_key: parent_id.map(|p| format!("{p}:1")),
            dedup_key: None,
            depends_on: "[]".into(),
            component: None,
            budget_usd: None,
            resources: "[]".into(),
            timeout_ms: None,
        };
        let run = NewRun {
            run_id: RUN.into(),
            agent: "fuzz".into(),
            component_hash: component_hash.clone(),
            input: String::new(),
            config_json: "{}".into(),
            context_hash: component_hash.clone(),
            budget_usd: None,
            component: component.clone(),
        };
        rt.block_on(async {
            ledger.create_run(run, task(1, None)).await.unwrap();
            ledger.create_task(task(2, Some(1))).await.unwrap();
        });
        let tools = ToolsConfig {
            grant: vec![],
            workspace: Some(ws.clone()),
            http_allow_hosts: vec![
                "127.0.0.1".into(),
                "[::1]".into(),
                "10.0.0.1".into(),
                "[::ffff:192.168.0.1]".into(),
            ],
            http_allow_private: false,
            http_max_bytes: Some(16),
            ..ToolsConfig::default()
        };
        World {
            workspace: WorkspaceTool::new(&ws).unwrap(),
            cloud: CloudTool::new(&ws).unwrap(),
            http: HttpFetchTool::new(&tools).unwrap(),
            kv: KvTool,
            base,
            ws,
            rt,
            ledger,
        }
    })
}

/// Empty the workspace (keeping the directory: the tools hold handles on it) and plant
/// the links that lead outside.
fn reset(w: &World) {
    for entry in std::fs::read_dir(&w.ws).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    std::os::unix::fs::symlink("../secret.txt", w.ws.join("escape_file")).unwrap();
    std::os::unix::fs::symlink("../outside", w.ws.join("escape_dir")).unwrap();
    std::os::unix::fs::symlink(w.base.join("outside"), w.ws.join("abs_dir")).unwrap();
    std::fs::hard_link(
        w.base.join("outside/hard_target.txt"),
        w.ws.join("hard.txt"),
    )
    .unwrap();
    std::fs::create_dir(w.ws.join("sub")).unwrap();
    std::fs::write(w.ws.join("sub/inside.txt"), b"inside\n").unwrap();
    // Blobs stay: content-addressed and referenced from several tables.
    w.ledger
        .write_blocking(|wr| {
            wr.conn()
                .execute_batch("DELETE FROM kv; DELETE FROM workspace_files;")
        })
        .unwrap();
}

/// Nothing outside the workspace changed.
fn check_outside(w: &World) {
    for file in [
        "secret.txt",
        "outside/sentinel.txt",
        "outside/hard_target.txt",
    ] {
        let now = std::fs::read(w.base.join(file)).unwrap();
        assert_eq!(now, SECRET, "{file} outside the workspace was changed");
    }
    let expected: BTreeSet<String> = ["db", "outside", "secret.txt", "ws"]
        .map(String::from)
        .into();
    assert_eq!(
        listing(&w.base),
        expected,
        "a file appeared next to the workspace"
    );
    let expected: BTreeSet<String> = ["hard_target.txt", "sentinel.txt"].map(String::from).into();
    assert_eq!(
        listing(&w.base.join("outside")),
        expected,
        "a file appeared in a directory outside the workspace"
    );
}

/// Every line of `cloud.log` is one action (`create NAME id=ID key=K` or
/// `destroy ID key=K`) with the key of a call this input made.
fn check_cloud_log(w: &World, keys: &[String]) {
    let Ok(log) = std::fs::read_to_string(w.ws.join("cloud.log")) else {
        return;
    };
    for line in log.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        let whole = match words.as_slice() {
            ["create", name, id, key] => {
                !name.is_empty()
                    && id.starts_with("id=res-")
                    && keys.iter().any(|k| *key == format!("key={k}"))
            }
            ["destroy", id, key] => {
                !id.is_empty() && keys.iter().any(|k| *key == format!("key={k}"))
            }
            _ => false,
        };
        assert!(
            whole,
            "cloud.log line {line:?} is not one action of this input's calls:\n{log}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, json)) = data.split_first() else {
        return;
    };
    let Ok(args) = serde_json::from_slice::<serde_json::Value>(json) else {
        return;
    };
    let w = world();
    let tool: &dyn Tool = match selector % 4 {
        0 => &w.kv,
        1 => &w.workspace,
        2 => &w.http,
        _ => &w.cloud,
    };
    let task_id = if selector & 4 == 0 { 1 } else { 2 };
    let calls = match args {
        serde_json::Value::Array(items) => items.into_iter().take(16).collect(),
        one => vec![one],
    };
    reset(w);
    let mut keys = Vec::new();
    for (i, args) in calls.into_iter().enumerate() {
        keys.push(format!("{RUN}:{task_id}:{i}"));
        let ctx = ToolCallCtx {
            run_id: RUN.into(),
            task_id,
            ledger: w.ledger.clone(),
            idempotency_key: keys[i].clone(),
            effects: Default::default(),
        };
        let _ = tool.side_effect_of(&args);
        let _ = w.rt.block_on(tool.call(&ctx, args));
        check_outside(w);
        check_cloud_log(w, &keys);
    }
});
