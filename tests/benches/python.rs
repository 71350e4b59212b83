//! Section 11: the Python example agent (componentize-py, ~18 MB with CPython inside).
//! The first start compiles it with an empty component cache; a warm start is what a
//! new process does once the cache holds it: `Host::new` on a fresh ledger, the
//! component loaded from the on-disk cache, and its whole run (LLM, `kv`, a child, a
//! checkpoint). The cache load alone is timed too.

use super::{Samples, scratch};
use agentflow::{Host, HostConfig, RunOptions, Status};
use std::path::Path;
use std::time::Instant;

#[path = "../all/support/python.rs"]
mod build;

/// The figures of section 11.
pub struct PythonStarts {
    /// Size of the component, bytes.
    pub bytes: u64,
    /// Compile (Cranelift) and store in the empty cache.
    pub compile: Samples,
    /// `Host::new` + load from the cache + the whole run.
    pub warm_run: Samples,
    /// The load from the cache alone (read, hash, deserialize, link).
    pub warm_load: Samples,
}

fn new_host(dir: &Path, cache: &Path) -> Host {
    let config = HostConfig {
        cache_dir: Some(cache.to_path_buf()),
        ..HostConfig::from_toml("[tools]\ngrant = [\"kv\"]\n").unwrap()
    };
    Host::new(config, dir.join("bench.db")).unwrap()
}

/// `compiles` first starts (each with an empty cache) and `warm` warm ones; `None`
/// (with the reason printed) when componentize-py is not installed.
pub async fn starts(compiles: usize, warm: usize) -> Option<PythonStarts> {
    let wasm = match build::component(Path::new(env!("CARGO_TARGET_TMPDIR"))) {
        Ok(w) => w,
        Err(e) => {
            println!("11. Python agent: not measured: {e}");
            return None;
        }
    };
    let bytes = std::fs::metadata(&wasm).unwrap().len();
    let mut compile = Vec::new();
    for i in 0..compiles {
        let dir = scratch(&format!("py-compile-{i}"));
        let host = new_host(&dir, &dir.join("cache"));
        let start = Instant::now();
        let agent = host.runtime().load_file(&wasm).unwrap();
        compile.push(start.elapsed());
        assert!(!agent.from_cache);
    }
    let cache = scratch("py-cache");
    new_host(&scratch("py-fill"), &cache)
        .runtime()
        .load_file(&wasm)
        .unwrap();
    let (mut warm_run, mut warm_load) = (Vec::new(), Vec::new());
    for i in 0..warm {
        let dir = scratch(&format!("py-warm-{i}"));
        let start = Instant::now();
        let host = new_host(&dir, &cache);
        let loaded = Instant::now();
        let agent = host.runtime().load_file(&wasm).unwrap();
        warm_load.push(loaded.elapsed());
        assert!(agent.from_cache);
        let r = host
            .run(agent, "tide pools", RunOptions::default())
            .await
            .unwrap();
        warm_run.push(start.elapsed());
        assert_eq!(r.status, Status::Completed, "{:?}", r.error);
    }
    Some(PythonStarts {
        bytes,
        compile: Samples(compile),
        warm_run: Samples(warm_run),
        warm_load: Samples(warm_load),
    })
}
