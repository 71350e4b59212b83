//! The multi-model scheduler: every `llm.complete` passes here to choose a model.
//!
//! Per call: filter the catalog by hard constraints (pin, context window, capabilities,
//! max cost, max p95 latency, remaining budget, health); predict the call's tokens from
//! the performance history of the same model and task type (else from the prompt
//! length); score the survivors by the request's priority (cost / quality / latency
//! weights, configurable); then reserve quota (sliding-window TPM/RPM per model and
//! per provider; on a PostgreSQL ledger also in the quotas its hosts share, [`shared`])
//! for the best one that has room, keeping the next ones as fallbacks. When nothing
//! has room and the request allows waiting, wait up to its deadline.
//! After the call, health (latency, errors, breaker, 429 cooldowns, versions), quotas
//! and the performance DB are updated with what really happened.
//!
//! Not here: sending the request (the `llm` capability does that, using
//! [`Scheduler::provider`]), budgets (the supervisor), recording (the ledger).

pub mod catalog;
mod config;
pub mod health;
pub mod perf;
mod plan;
pub mod quota;
mod report;
pub mod shared;

pub use config::{QuotaConfig, SchedulerConfig, Weights};
pub use report::{CandidateReport, Exclusion, Name, Prediction, Ranked};

use crate::ledger::quotas::SharedQuotas;
use crate::providers::{self, LlmProvider, ProviderError};
use catalog::ModelSpec;
use health::{Admission, Health, HealthView, VersionChange};
use perf::PerfDb;
use quota::Window;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the caller cares about most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Balanced,
    Cost,
    Quality,
    Latency,
}

impl Priority {
    /// Its name in `[llm.scheduler.weights]`.
    fn key(self) -> &'static str {
        match self {
            Priority::Balanced => "balanced",
            Priority::Cost => "cost",
            Priority::Quality => "quality",
            Priority::Latency => "latency",
        }
    }
}

/// One call as the scheduler sees it.
#[derive(Clone, Debug, Serialize)]
pub struct SchedRequest {
    pub estimated_input_tokens: u64,
    pub max_output_tokens: u64,
    pub priority: Priority,
    pub capabilities: Vec<String>,
    pub min_context_window: Option<u32>,
    pub task_type: Option<String>,
    pub pinned: Option<String>,
    pub allow_fallback: bool,
    pub max_cost_usd: Option<f64>,
    pub max_latency_ms: Option<u64>,
    pub max_wait_ms: Option<u64>,
    /// What the run's budget has left (USD).
    pub budget_remaining: f64,
    /// Refuse models whose quality on the task type is below this (0..1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_quality: Option<f64>,
    /// The agent making the call: its own history predicts the call's tokens first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// The ranked viable models for a call, and the report of every candidate.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub priority: Priority,
    pub weights: Weights,
    /// Viable model names, best first.
    pub ranked: Ranked,
    pub candidates: Vec<CandidateReport>,
}

/// Quota held for one attempt.
#[derive(Debug, Serialize, Clone)]
pub struct Grant {
    pub model: String,
    pub provider: String,
    pub reserved_tokens: u64,
    pub probe: bool,
    pub waited_ms: u64,
    /// When its quota reservations were stamped (ms since the epoch): the time the
    /// quota windows count it at — the cluster's stamp, on a shared ledger.
    pub reserved_at_ms: i64,
    /// Models passed over for lack of quota or health, with why.
    pub skipped: Vec<(String, String)>,
    #[serde(skip)]
    model_quota: Option<u64>,
    #[serde(skip)]
    provider_quota: Option<u64>,
    /// Reservations in the quotas shared with the other hosts of a PostgreSQL ledger.
    #[serde(skip)]
    shared_quota: Vec<i64>,
}

/// Typed scheduling failures.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SchedError {
    #[error("no viable model: {0}")]
    NoViableModel(String),
    #[error("model unavailable: {0}")]
    ModelUnavailable(String),
    #[error("quota exhausted: {0}")]
    QuotaExhausted(String),
    #[error("budget exceeded: {0}")]
    BudgetExceeded(String),
}

/// What changes between calls. Per-model state is indexed like the catalog.
struct State {
    health: Vec<Health>,
    model_quota: Vec<Window>,
    provider_quota: HashMap<String, Window>,
}

/// The scheduler of one host (shared by all its runs).
pub struct Scheduler {
    models: Vec<ModelSpec>,
    /// Catalog position by model name.
    index: HashMap<String, usize>,
    /// Each model's name and provider as its decision reports show them.
    names: Vec<(Name, Name)>,
    /// The models' names, shared by every plan's [`Ranked`].
    catalog_names: Arc<[String]>,
    providers: HashMap<String, Arc<dyn LlmProvider>>,
    config: SchedulerConfig,
    /// `config.weights` by [`Priority`] (balanced, cost, quality, latency).
    weights: [Weights; 4],
    state: Mutex<State>,
    perf: PerfDb,
    /// `[llm.quotas]`, for the shared quotas.
    provider_limits: BTreeMap<String, QuotaConfig>,
    /// Quotas shared with the other hosts on the same PostgreSQL ledger.
    shared: Option<Arc<SharedQuotas>>,
}

/// A model's state for `agentflow models`.
#[derive(Clone, Debug, Serialize)]
pub struct ModelStatus {
    pub spec: ModelSpec,
    pub health: HealthView,
    pub quota_tokens_used: u64,
    pub quota_requests_used: u64,
    pub stats: perf::Aggregate,
    pub quality: f64,
}

impl Scheduler {
    /// A scheduler over `models`, sending through `providers` (by provider name).
    pub fn new(
        models: Vec<ModelSpec>,
        providers: HashMap<String, Arc<dyn LlmProvider>>,
        quotas: &BTreeMap<String, QuotaConfig>,
        config: SchedulerConfig,
        perf: PerfDb,
    ) -> anyhow::Result<Scheduler> {
        if models.is_empty() {
            anyhow::bail!("the model catalog is empty: add [[llm.models]] entries");
        }
        let window = Duration::from_millis(config.quota_window_ms.max(1));
        let mut state = State {
            health: Vec::with_capacity(models.len()),
            model_quota: Vec::with_capacity(models.len()),
            provider_quota: HashMap::new(),
        };
        for (i, m) in models.iter().enumerate() {
            if models[..i].iter().any(|o| o.name == m.name) {
                anyhow::bail!("[[llm.models]]: model `{}` is listed twice", m.name);
            }
            if !providers.contains_key(&m.provider) {
                anyhow::bail!(
                    "[[llm.models]] `{}`: unknown provider `{}`",
                    m.name,
                    m.provider
                );
            }
            if !(m.input_per_mtok >= 0.0
                && m.output_per_mtok >= 0.0
                && (0.0..=1.0).contains(&m.quality))
            {
                anyhow::bail!(
                    "[[llm.models]] `{}`: prices must be ≥ 0 and quality within 0..1",
                    m.name
                );
            }
            state.health.push(Health::new(config.health_window));
            state
                .model_quota
                .push(Window::new(m.tpm, m.rpm, window).with_split(m.itpm, m.otpm));
        }
        for (name, q) in quotas {
            state.provider_quota.insert(
                name.clone(),
                Window::new(q.tpm, q.rpm, window).with_split(q.itpm, q.otpm),
            );
        }
        let mut weights = [Weights {
            cost: 0.0,
            quality: 0.0,
            latency: 0.0,
        }; 4];
        for p in [
            Priority::Balanced,
            Priority::Cost,
            Priority::Quality,
            Priority::Latency,
        ] {
            let key = p.key();
            let Some(w) = config.weights.get(key) else {
                anyhow::bail!("[llm.scheduler.weights] is missing `{key}`");
            };
            weights[p as usize] = *w;
        }
        let index = models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.clone(), i))
            .collect();
        let names = models
            .iter()
            .map(|m| (Name::new(&m.name), Name::new(&m.provider)))
            .collect();
        let catalog_names = models.iter().map(|m| m.name.clone()).collect();
        Ok(Scheduler {
            models,
            index,
            names,
            catalog_names,
            providers,
            config,
            weights,
            state: Mutex::new(state),
            perf,
            provider_limits: quotas.clone(),
            shared: None,
        })
    }

    /// The catalog.
    pub fn models(&self) -> &[ModelSpec] {
        &self.models
    }

    /// A model of the catalog.
    pub fn model(&self, name: &str) -> Option<&ModelSpec> {
        self.index.get(name).map(|&i| &self.models[i])
    }

    /// The provider that serves `model`.
    pub fn provider(&self, model: &ModelSpec) -> Arc<dyn LlmProvider> {
        self.providers[&model.provider].clone()
    }

    /// The performance DB.
    pub fn perf(&self) -> &PerfDb {
        &self.perf
    }

    /// Record a quality score for a model's output (used by validators).
    pub fn record_quality(
        &self,
        model: &str,
        task_type: &str,
        score: f64,
        source: &str,
    ) -> anyhow::Result<()> {
        self.perf.record_quality(model, task_type, score, source)
    }

    fn weights(&self, p: Priority) -> Weights {
        self.weights[p as usize]
    }

    /// Reserve quota on the best ranked model that has room (skipping `tried`); wait up
    /// to `max_wait_ms` for room if the request allows it.
    pub async fn acquire(
        &self,
        plan: &Plan,
        req: &SchedRequest,
        tried: &[String],
    ) -> Result<Grant, SchedError> {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(req.max_wait_ms.unwrap_or(0));
        let (input, output) = (req.estimated_input_tokens, req.max_output_tokens);
        let tokens = input + output;
        // Models the cluster's shared quotas refused, until when, and why.
        let mut refused: HashMap<String, (Instant, String)> = HashMap::new();
        loop {
            let now = Instant::now();
            let now_ms = crate::ledger::now_ms();
            let mut skipped = Vec::new();
            let mut retry_at: Option<Instant> = None;
            let mut chosen: Option<(Grant, usize)> = None;
            {
                let mut state = self.state.lock().unwrap();
                for (i, name) in plan.ranked.positions().filter(|(_, n)| !tried.contains(n)) {
                    let spec = &self.models[i];
                    if let Some((until, why)) = refused.get(name).filter(|(until, _)| *until > now)
                    {
                        skipped.push((name.clone(), format!("quota: {why}")));
                        retry_at = Some(retry_at.map_or(*until, |cur: Instant| cur.min(*until)));
                        continue;
                    }
                    let admission = match state.health[i].admit(now) {
                        Ok(a) => a,
                        Err(why) => {
                            skipped.push((name.clone(), why.to_string()));
                            continue;
                        }
                    };
                    let model_check = state.model_quota[i].check(input, output, now);
                    let provider_check = match state.provider_quota.get_mut(&spec.provider) {
                        Some(w) => w.check(input, output, now),
                        None => Ok(()),
                    };
                    match (model_check, provider_check) {
                        (Ok(()), Ok(())) => {
                            let model_quota = Some(state.model_quota[i].add(input, output, now));
                            let provider_quota = state
                                .provider_quota
                                .get_mut(&spec.provider)
                                .map(|w| w.add(input, output, now));
                            if admission == Admission::Probe {
                                state.health[i].take_probe();
                            }
                            let grant = Grant {
                                model: name.clone(),
                                provider: spec.provider.clone(),
                                reserved_tokens: tokens,
                                probe: admission == Admission::Probe,
                                waited_ms: started.elapsed().as_millis() as u64,
                                reserved_at_ms: now_ms,
                                skipped: std::mem::take(&mut skipped),
                                model_quota,
                                provider_quota,
                                shared_quota: Vec::new(),
                            };
                            if self.shared.is_none() {
                                return Ok(grant);
                            }
                            chosen = Some((grant, i));
                            break;
                        }
                        (Err(r), _) | (_, Err(r)) => {
                            skipped.push((name.clone(), format!("quota: {}", r.reason)));
                            if let Some(at) = r.retry_at {
                                retry_at = Some(retry_at.map_or(at, |cur: Instant| cur.min(at)));
                            }
                        }
                    }
                }
            }
            if let Some((mut grant, i)) = chosen {
                match self.reserve_shared(&grant, i, input, output).await {
                    Ok((ids, stamped_ms)) => {
                        grant.shared_quota = ids;
                        grant.reserved_at_ms = stamped_ms.unwrap_or(grant.reserved_at_ms);
                        return Ok(grant);
                    }
                    Err((until, why)) => {
                        self.withdraw(&grant);
                        skipped = std::mem::take(&mut grant.skipped);
                        refused.insert(grant.model.clone(), (until, why));
                        continue;
                    }
                }
            }
            let describe = || {
                skipped
                    .iter()
                    .map(|(m, why)| format!("{m}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let all_health =
                !skipped.is_empty() && skipped.iter().all(|(_, why)| !why.starts_with("quota"));
            if all_health {
                return Err(SchedError::ModelUnavailable(describe()));
            }
            let Some(at) = retry_at.filter(|at| *at <= deadline) else {
                return Err(SchedError::QuotaExhausted(describe()));
            };
            tokio::time::sleep_until(tokio::time::Instant::from_std(
                at.max(Instant::now()) + Duration::from_millis(1),
            ))
            .await;
        }
    }

    fn reconcile(&self, state: &mut State, grant: &Grant, input: u64, output: u64) {
        self.reconcile_shared(grant, input, output);
        let window = self
            .index
            .get(&grant.model)
            .map(|&i| &mut state.model_quota[i]);
        if let (Some(id), Some(w)) = (grant.model_quota, window) {
            w.reconcile(id, input, output);
        }
        if let (Some(id), Some(w)) = (
            grant.provider_quota,
            state.provider_quota.get_mut(&grant.provider),
        ) {
            w.reconcile(id, input, output);
        }
    }

    /// A model's health, if it is in the catalog.
    fn health<'s>(&self, state: &'s mut State, model: &str) -> Option<&'s mut Health> {
        self.index.get(model).map(|&i| &mut state.health[i])
    }

    fn save_health(&self, state: &mut State, model: &str) {
        if let Some(h) = self.health(state, model) {
            // Serialized only when the performance DB is flushed: on the LLM call's path
            // it was a JSON tree and its text per call.
            let view = h.view(Instant::now());
            self.perf.save_health(model, move || {
                serde_json::to_string(&view).unwrap_or_else(|_| "{}".into())
            });
        }
    }

    /// Report a successful call: reconcile the quota with the real usage, update health
    /// and the performance DB. Returns a version change if the provider reported one.
    pub fn succeeded(
        &self,
        grant: &Grant,
        task_type: Option<&str>,
        agent: &str,
        reply: &providers::ChatResponse,
        latency: Duration,
        cost_usd: f64,
    ) -> Option<VersionChange> {
        let mut state = self.state.lock().unwrap();
        self.reconcile(
            &mut state,
            grant,
            reply.input_tokens as u64,
            reply.output_tokens as u64,
        );
        let change = self
            .health(&mut state, &grant.model)
            .and_then(|h| h.success(&grant.model, latency, &reply.model));
        self.save_health(&mut state, &grant.model);
        drop(state);
        if let Some(c) = &change {
            self.perf.record_version(&c.model, &c.previous, &c.observed);
        }
        self.perf.record_call(&perf::CallStat {
            model: &grant.model,
            task_type: task_type.unwrap_or("default"),
            agent,
            ok: true,
            error: None,
            tokens_in: reply.input_tokens as u64,
            tokens_out: reply.output_tokens as u64,
            latency_ms: latency.as_millis() as u64,
            cost_usd,
        });
        change
    }

    /// Report a failed call: the quota keeps the request but not its tokens; health
    /// counts the failure (a 429 cools the model down instead).
    pub fn failed(
        &self,
        grant: &Grant,
        task_type: Option<&str>,
        agent: &str,
        error: &ProviderError,
        latency: Duration,
    ) {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        self.reconcile(&mut state, grant, 0, 0);
        let retry_after = match error {
            ProviderError::RateLimited { retry_after_ms } => {
                Some(Duration::from_millis(*retry_after_ms))
            }
            _ => None,
        };
        if let Some(h) = self.health(&mut state, &grant.model) {
            h.failure(
                latency,
                retry_after,
                now,
                self.config.breaker_failures,
                Duration::from_millis(self.config.breaker_cooldown_ms),
            );
        }
        self.save_health(&mut state, &grant.model);
        drop(state);
        self.perf.record_call(&perf::CallStat {
            model: &grant.model,
            task_type: task_type.unwrap_or("default"),
            agent,
            ok: false,
            error: Some(error.to_string()),
            tokens_in: 0,
            tokens_out: 0,
            latency_ms: latency.as_millis() as u64,
            cost_usd: 0.0,
        });
    }

    /// Give back a grant that was never used (e.g. the budget refused the call): its
    /// quota is freed and health is untouched.
    pub fn release(&self, grant: &Grant) {
        let mut state = self.state.lock().unwrap();
        self.reconcile(&mut state, grant, 0, 0);
        if grant.probe
            && let Some(h) = self.health(&mut state, &grant.model)
        {
            h.release_probe();
        }
    }

    /// How many attempts (choice + fallbacks) a call may make.
    pub fn max_attempts(&self) -> usize {
        self.config.max_attempts.max(1)
    }

    /// Every model's health, quota use and statistics (this host's view).
    pub fn status(&self) -> Vec<ModelStatus> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        let aggregates = self.perf_aggregates();
        self.models
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let (quota_tokens_used, quota_requests_used) = state.model_quota[i].usage(now);
                let mut stats = perf::Aggregate::default();
                for ((model, _), agg) in &aggregates {
                    if *model == m.name {
                        stats.calls += agg.calls;
                        stats.errors += agg.errors;
                        stats.tokens_in += agg.tokens_in;
                        stats.tokens_out += agg.tokens_out;
                        stats.latency_ms += agg.latency_ms;
                        stats.cost_usd += agg.cost_usd;
                    }
                }
                ModelStatus {
                    spec: m.clone(),
                    health: state.health[i].view(now),
                    quota_tokens_used,
                    quota_requests_used,
                    stats,
                    quality: self.perf.quality(&m.name, m.quality),
                }
            })
            .collect()
    }

    /// Write the performance statistics buffered so far (see `ledger::perf::PerfStore`).
    pub fn flush_stats(&self) {
        self.perf.flush();
    }

    fn perf_aggregates(&self) -> Vec<((String, String), perf::Aggregate)> {
        self.perf.all_aggregates()
    }
}
