//! The performance DB: per model × task type, what calls cost and how they went.
//!
//! A SQLite file beside the ledger (`<ledger>-perf.db`). Each finished LLM call adds a
//! row (tokens in/out, latency, cost, error); validators (a later layer) add quality
//! scores through [`PerfDb::record_quality`]; version changes reported by providers are
//! kept too. The scheduler predicts a call's tokens from the history of similar calls —
//! the same model, task type and agent, else the same model and task type — and blends
//! the quality scores of the model on that task type (else on any) into the model's
//! prior. Aggregates live in
//! memory (loaded at open) so a decision never waits for SQL; a decision reads them
//! for every model of the catalog under one lock ([`PerfDb::read`]), without building
//! keys. This is statistics, not the write-ahead record — `synchronous = NORMAL` is
//! enough here.

use crate::ledger::perf::PerfStore;
pub use crate::ledger::perf::{Aggregate, CallStat, StoredStats};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The performance database.
pub struct PerfDb {
    path: PathBuf,
    store: Mutex<PerfStore>,
    /// Call totals by task type, then model.
    calls: Mutex<HashMap<String, HashMap<String, Aggregate>>>,
    /// Call totals by agent, then task type, then model (looked up without building
    /// a key).
    agent_calls: Mutex<HashMap<String, ByType>>,
    /// Quality scores: by task type, then model; and by model over every task type
    /// (key `""`).
    quality: Mutex<HashMap<String, Scores>>,
}

/// Call totals by task type, then model.
type ByType = HashMap<String, HashMap<String, Aggregate>>;

/// Quality scores by model: how many, and their sum.
type Scores = HashMap<String, (u64, f64)>;

/// The history of every model on one task type (and agent), as one decision reads it.
pub struct History<'a> {
    calls: Option<&'a HashMap<String, Aggregate>>,
    agent_calls: Option<&'a HashMap<String, Aggregate>>,
    quality: Option<&'a Scores>,
    quality_any: Option<&'a Scores>,
}

impl History<'_> {
    /// History of a model on the task type.
    pub fn aggregate(&self, model: &str) -> Aggregate {
        self.calls
            .and_then(|c| c.get(model))
            .copied()
            .unwrap_or_default()
    }

    /// History of a model on the task type, for the agent of the decision only.
    pub fn agent_aggregate(&self, model: &str) -> Aggregate {
        self.agent_calls
            .and_then(|c| c.get(model))
            .copied()
            .unwrap_or_default()
    }

    /// Quality of a model on the task type: its prior blended with the scores on this
    /// task type, or with its scores on any when it has none on this one.
    pub fn quality(&self, model: &str, prior: f64) -> f64 {
        let on_type = self.quality.and_then(|q| q.get(model));
        blend(
            prior,
            on_type.or_else(|| self.quality_any.and_then(|q| q.get(model))),
        )
    }
}

fn add(into: &mut Aggregate, more: &Aggregate) {
    into.calls += more.calls;
    into.errors += more.errors;
    into.tokens_in += more.tokens_in;
    into.tokens_out += more.tokens_out;
    into.latency_ms += more.latency_ms;
    into.cost_usd += more.cost_usd;
}

/// The prior blended with recorded scores (the prior counts as two scores).
fn blend(prior: f64, scores: Option<&(u64, f64)>) -> f64 {
    match scores {
        Some((n, sum)) => (prior * 2.0 + sum) / (2.0 + *n as f64),
        None => prior,
    }
}

/// Path of the performance DB that goes with a ledger file. The hosts of a PostgreSQL
/// ledger each keep theirs on their own disk, beside their compiled components
/// (the host configuration's `cache_dir`), one per database (named after a hash of
/// its URL without the password), so two ledgers on one machine keep apart.
pub fn path_for_ledger(ledger: &Path, cache_dir: &Path) -> PathBuf {
    if let Some(url) = crate::ledger::db::postgres_url(ledger) {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(crate::ledger::db::redact(url).as_bytes());
        let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        return cache_dir.join(format!("perf-{name}.db"));
    }
    let stem = ledger
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "agentflow".into());
    ledger.with_file_name(format!("{stem}-perf.db"))
}

impl PerfDb {
    /// Open (or create) the DB and load its aggregates.
    pub fn open(path: &Path) -> anyhow::Result<PerfDb> {
        let store = PerfStore::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open performance DB {}: {e}", path.display()))?;
        store.create_tables()?;
        let mut calls: HashMap<String, HashMap<String, Aggregate>> = HashMap::new();
        let mut agent_calls: HashMap<String, ByType> = HashMap::new();
        for t in store.call_totals()? {
            if !t.agent.is_empty() {
                agent_calls
                    .entry(t.agent.clone())
                    .or_default()
                    .entry(t.task_type.clone())
                    .or_default()
                    .insert(t.model.clone(), t.totals);
            }
            add(
                calls
                    .entry(t.task_type)
                    .or_default()
                    .entry(t.model)
                    .or_default(),
                &t.totals,
            );
        }
        let mut quality: HashMap<String, Scores> = HashMap::new();
        for q in store.quality_totals()? {
            for key in [q.task_type.as_str(), ""] {
                let e = quality
                    .entry(key.to_string())
                    .or_default()
                    .entry(q.model.clone())
                    .or_insert((0, 0.0));
                e.0 += q.scores;
                e.1 += q.sum;
            }
        }
        Ok(PerfDb {
            path: path.to_owned(),
            store: Mutex::new(store),
            calls: Mutex::new(calls),
            agent_calls: Mutex::new(agent_calls),
            quality: Mutex::new(quality),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Record one finished call.
    pub fn record_call(&self, stat: &CallStat<'_>) {
        let one = Aggregate {
            calls: 1,
            errors: u64::from(!stat.ok),
            tokens_in: stat.tokens_in,
            tokens_out: stat.tokens_out,
            latency_ms: stat.latency_ms,
            cost_usd: stat.cost_usd,
        };
        {
            let mut calls = self.calls.lock().unwrap();
            let models = slot(&mut calls, stat.task_type);
            add(slot(models, stat.model), &one);
        }
        if !stat.agent.is_empty() {
            let mut calls = self.agent_calls.lock().unwrap();
            let types = slot(&mut calls, stat.agent);
            let models = slot(types, stat.task_type);
            add(slot(models, stat.model), &one);
        }
        let result = self.store.lock().unwrap().insert_call(stat);
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot write performance DB");
        }
    }

    /// Record a quality score (0..1) for a model's output on a task type.
    pub fn record_quality(
        &self,
        model: &str,
        task_type: &str,
        score: f64,
        source: &str,
    ) -> anyhow::Result<()> {
        if !(0.0..=1.0).contains(&score) {
            anyhow::bail!("quality score must be within 0..1, got {score}");
        }
        {
            let mut q = self.quality.lock().unwrap();
            for key in [task_type, ""] {
                let e = q
                    .entry(key.to_string())
                    .or_default()
                    .entry(model.to_string())
                    .or_insert((0, 0.0));
                e.0 += 1;
                e.1 += score;
            }
        }
        self.store
            .lock()
            .unwrap()
            .insert_quality(model, task_type, score, source)?;
        Ok(())
    }

    /// Record a model version change.
    pub fn record_version(&self, model: &str, previous: &str, observed: &str) {
        let _ = self
            .store
            .lock()
            .unwrap()
            .insert_version(model, previous, observed);
    }

    /// Write the buffered finished calls now (the end of a run), so other processes
    /// (`agentflow models`) see them.
    pub fn flush(&self) {
        if let Err(e) = self.store.lock().unwrap().flush() {
            tracing::warn!(error = %e, "cannot write performance DB");
        }
    }

    /// Save a model's health snapshot (its JSON text, made when it is written) for
    /// `agentflow models`.
    pub fn save_health(&self, model: &str, snapshot: impl FnOnce() -> String + Send + 'static) {
        let _ = self.store.lock().unwrap().save_health(model, snapshot);
    }

    /// History of a model on a task type.
    pub fn aggregate(&self, model: &str, task_type: &str) -> Aggregate {
        self.calls
            .lock()
            .unwrap()
            .get(task_type)
            .and_then(|c| c.get(model))
            .copied()
            .unwrap_or_default()
    }

    /// Quality over every task type: the prior blended with recorded scores (the prior
    /// counts as two scores).
    pub fn quality(&self, model: &str, prior: f64) -> f64 {
        blend(
            prior,
            self.quality
                .lock()
                .unwrap()
                .get("")
                .and_then(|q| q.get(model)),
        )
    }

    /// Call `f` with the history of every model on `task_type` — and of `agent`'s
    /// calls of that type — (call totals and quality scores, each locked once for all
    /// models).
    pub fn read<R>(
        &self,
        task_type: &str,
        agent: Option<&str>,
        f: impl FnOnce(&History<'_>) -> R,
    ) -> R {
        let calls = self.calls.lock().unwrap();
        let agent_calls = self.agent_calls.lock().unwrap();
        let quality = self.quality.lock().unwrap();
        f(&History {
            calls: calls.get(task_type),
            agent_calls: agent
                .and_then(|a| agent_calls.get(a))
                .and_then(|types| types.get(task_type)),
            quality: quality.get(task_type),
            quality_any: quality.get(""),
        })
    }
}

impl PerfDb {
    /// All in-memory aggregates.
    pub fn all_aggregates(&self) -> Vec<((String, String), Aggregate)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(task_type, models)| {
                models
                    .iter()
                    .map(|(model, agg)| ((model.clone(), task_type.clone()), *agg))
            })
            .collect()
    }
}

/// The entry for `key`, inserted empty if missing: the key is copied only then
/// (`entry(key.to_string())` would allocate on every call).
fn slot<'m, V: Default>(map: &'m mut HashMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}
