//! `agentflow models`: the catalog with each model's health, quota use and statistics,
//! read from the performance DB beside the ledger (so it works from another process
//! than the host that made the calls).

use crate::config::HostConfig;
use crate::ledger::perf::PerfStore;
use crate::scheduler::catalog::{self, ModelSpec};
use crate::scheduler::perf::{self, StoredStats};
use serde::Serialize;
use std::path::Path;

/// One model as `agentflow models` shows it.
#[derive(Debug, Serialize)]
pub struct ModelView {
    #[serde(flatten)]
    pub spec: ModelSpec,
    pub stats: StoredStats,
}

/// The catalog of `config` with the statistics stored beside the ledger `db`.
pub fn load(config: &HostConfig, db: &Path) -> anyhow::Result<Vec<ModelView>> {
    let perf_path = perf::path_for_ledger(db, &config.cache_dir());
    let store = if perf_path.exists() {
        Some(PerfStore::open_read_only(&perf_path)?)
    } else {
        None
    };
    catalog::catalog(&config.llm)
        .into_iter()
        .map(|spec| {
            let stats = match &store {
                Some(store) => store.stored_stats(&spec.name)?,
                None => StoredStats::default(),
            };
            Ok(ModelView { spec, stats })
        })
        .collect()
}

/// The models as a table.
pub fn render(models: &[ModelView]) -> String {
    let mut table = crate::table::Table::new()
        .left("model")
        .left("provider")
        .right("$in/M")
        .right("$out/M")
        .right("context")
        .right("qual")
        .left("breaker")
        .right("calls")
        .right("errors")
        .right("avg ms")
        .right("tok/min used")
        .left("version");
    for m in models {
        let s = &m.stats;
        let health = s.health.as_ref();
        let breaker = health
            .and_then(|h| h.get("breaker"))
            .and_then(|b| b.as_str())
            .unwrap_or("closed");
        let version = health
            .and_then(|h| h.get("observed_version"))
            .and_then(|v| v.as_str())
            .or(m.spec.version.as_deref())
            .unwrap_or("-");
        let quota = match m.spec.tpm {
            Some(tpm) => format!("{}/{}", s.tokens_last_minute, tpm),
            None => s.tokens_last_minute.to_string(),
        };
        let changes = if s.version_changes.is_empty() {
            String::new()
        } else {
            format!(" ({} change(s))", s.version_changes.len())
        };
        table.row([
            m.spec.name.clone(),
            m.spec.provider.clone(),
            format!("{:.2}", m.spec.input_per_mtok),
            format!("{:.2}", m.spec.output_per_mtok),
            m.spec.context_window.to_string(),
            format!("{:.2}", m.spec.quality),
            breaker.to_string(),
            s.calls.to_string(),
            s.errors.to_string(),
            s.avg_latency_ms
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            quota,
            format!("{version}{changes}"),
        ]);
    }
    table.render()
}
