//! Planning one call: filter the catalog by hard constraints, predict the call's
//! tokens, score the survivors by the request's priority — the viable models, best
//! first, with a report on every candidate.
//!
//! This runs on every LLM call for every model of the catalog, so it takes each lock
//! once (the scheduler's state, the performance DB's totals), looks models up by
//! position rather than by name, and builds no text: the reports share the catalog's
//! names and carry their explanations as values (see `report.rs`). Only a failed plan
//! formats its reasons.

use super::*;

impl Scheduler {
    /// Filter, predict and score: the viable models, best first, and a report on all.
    pub fn plan(&self, req: &SchedRequest) -> Result<Plan, SchedError> {
        let now = Instant::now();
        let task_type = req.task_type.as_deref().unwrap_or("default");
        let weights = self.weights(req.priority);
        let pinned = match &req.pinned {
            Some(pin) => match self.index.get(pin) {
                Some(&i) => Some(i),
                None => {
                    return Err(SchedError::NoViableModel(format!(
                        "pinned model `{pin}` is not in the catalog (known: {})",
                        self.models
                            .iter()
                            .map(|m| m.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            },
            None => None,
        };
        let needed = req.estimated_input_tokens + req.max_output_tokens;
        // Shared by the reports that need them, made at most once per plan.
        let mut shared_task_type: Option<Arc<str>> = None;
        let mut shared_capabilities: Option<Arc<[String]>> = None;
        let mut reports = Vec::with_capacity(self.models.len());
        let mut state = self.state.lock().unwrap();
        let mut shared_agent: Option<Arc<str>> = None;
        let enough = |a: &perf::Aggregate| a.calls >= self.config.min_history && a.calls > a.errors;
        self.perf.read(task_type, req.agent.as_deref(), |history| {
            for (i, m) in self.models.iter().enumerate() {
                // Similar calls first: this agent's on this task type, then any agent's.
                let own = history.agent_aggregate(&m.name);
                let (past, by_agent) = if enough(&own) {
                    (own, true)
                } else {
                    (history.aggregate(&m.name), false)
                };
                let (predicted_out, prediction) = if enough(&past) {
                    let ok = past.calls - past.errors;
                    let avg = past.tokens_out.div_ceil(ok.max(1));
                    let task_type = shared_task_type.get_or_insert_with(|| task_type.into());
                    let agent = by_agent.then(|| {
                        shared_agent
                            .get_or_insert_with(|| req.agent.as_deref().unwrap_or("").into())
                            .clone()
                    });
                    (
                        avg.min(req.max_output_tokens),
                        Prediction::History {
                            calls: ok,
                            task_type: task_type.clone(),
                            agent,
                        },
                    )
                } else {
                    (
                        req.max_output_tokens
                            .min(req.estimated_input_tokens.max(64)),
                        Prediction::PromptLength,
                    )
                };
                let price = m.price();
                let health = &mut state.health[i];
                let latency = health.p95_if(5).unwrap_or(m.expected_latency_ms);
                let quality = history.quality(&m.name, m.quality);
                let worst = price.cost(req.estimated_input_tokens, req.max_output_tokens);
                let pinned_out = pinned.is_some_and(|p| p != i) && !req.allow_fallback;
                let excluded = if pinned_out {
                    Some(Exclusion::Pinned)
                } else if (m.context_window as u64) < needed
                    || req.min_context_window.is_some_and(|c| m.context_window < c)
                {
                    Some(Exclusion::ContextWindow {
                        window: m.context_window,
                        needed: needed.max(req.min_context_window.unwrap_or(0) as u64),
                    })
                } else if !m.has_capabilities(&req.capabilities) {
                    let needed = shared_capabilities
                        .get_or_insert_with(|| req.capabilities.as_slice().into());
                    Some(Exclusion::Capabilities(needed.clone()))
                } else if req.min_quality.is_some_and(|q| quality < q) {
                    Some(Exclusion::MinQuality {
                        quality,
                        min: req.min_quality.unwrap_or(0.0),
                    })
                } else if req.max_cost_usd.is_some_and(|c| worst > c) {
                    Some(Exclusion::MaxCost {
                        worst,
                        max: req.max_cost_usd.unwrap_or(0.0),
                    })
                } else if req.max_latency_ms.is_some_and(|l| latency > l) {
                    Some(Exclusion::MaxLatency {
                        p95_ms: latency,
                        max_ms: req.max_latency_ms.unwrap_or(0),
                    })
                } else if worst > req.budget_remaining + 1e-12 {
                    Some(Exclusion::Budget {
                        worst,
                        left: req.budget_remaining,
                    })
                } else {
                    health.admit(now).err().map(Exclusion::Unavailable)
                };
                let (model, provider) = &self.names[i];
                reports.push(CandidateReport {
                    model: model.clone(),
                    provider: provider.clone(),
                    score: None,
                    cost_score: 0.0,
                    quality_score: 0.0,
                    latency_score: 0.0,
                    predicted_output_tokens: predicted_out,
                    prediction,
                    predicted_cost_usd: price.cost(req.estimated_input_tokens, predicted_out),
                    worst_case_cost_usd: worst,
                    latency_ms: latency,
                    quality,
                    excluded,
                });
            }
        });
        drop(state);
        // Normalise among the viable: the best of each dimension scores 1.
        let mut ranked: Vec<usize> = (0..reports.len())
            .filter(|&i| reports[i].excluded.is_none())
            .collect();
        let min_cost = ranked
            .iter()
            .map(|&i| reports[i].predicted_cost_usd)
            .fold(f64::INFINITY, f64::min);
        let max_quality = ranked
            .iter()
            .map(|&i| reports[i].quality)
            .fold(0.0, f64::max);
        let min_latency = ranked
            .iter()
            .map(|&i| reports[i].latency_ms)
            .min()
            .unwrap_or(1)
            .max(1) as f64;
        for &i in &ranked {
            let r = &mut reports[i];
            r.cost_score = if r.predicted_cost_usd <= 0.0 {
                1.0
            } else {
                (min_cost / r.predicted_cost_usd).min(1.0)
            };
            r.quality_score = if max_quality > 0.0 {
                r.quality / max_quality
            } else {
                1.0
            };
            r.latency_score = min_latency / (r.latency_ms.max(1) as f64);
            r.score = Some(
                weights.cost * r.cost_score
                    + weights.quality * r.quality_score
                    + weights.latency * r.latency_score,
            );
        }
        // The pinned model first, then by score (a stable sort: ties keep catalog order).
        let mut keyed: Vec<(usize, Option<f64>)> =
            ranked.iter().map(|&i| (i, reports[i].score)).collect();
        keyed.sort_by(|&(a, score_a), &(b, score_b)| {
            let (pin_a, pin_b) = (pinned == Some(a), pinned == Some(b));
            pin_b.cmp(&pin_a).then(
                score_b
                    .partial_cmp(&score_a)
                    .unwrap_or(std::cmp::Ordering::Equal),
            )
        });
        for (slot, (i, _)) in ranked.iter_mut().zip(keyed) {
            *slot = i;
        }
        if let (Some(pin), Some(pin_at)) = (&req.pinned, pinned) {
            let pinned_viable = ranked.first() == Some(&pin_at);
            if !pinned_viable && !req.allow_fallback {
                let why = reports[pin_at]
                    .excluded
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                return Err(SchedError::ModelUnavailable(format!(
                    "pinned model `{pin}`: {why}"
                )));
            }
        }
        if ranked.is_empty() {
            let excluded: Vec<Option<String>> = reports
                .iter()
                .map(|r| r.excluded.as_ref().map(ToString::to_string))
                .collect();
            // If some model was turned away only by the budget, the budget is the answer.
            let budget_bound = excluded
                .iter()
                .any(|e| e.as_deref().is_some_and(|e| e.contains("budget left")));
            let msg = reports
                .iter()
                .zip(&excluded)
                .map(|(r, e)| format!("{}: {}", r.model, e.as_deref().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(if budget_bound {
                SchedError::BudgetExceeded(msg)
            } else {
                SchedError::NoViableModel(msg)
            });
        }
        Ok(Plan {
            priority: req.priority,
            weights,
            ranked: Ranked::new(self.catalog_names.clone(), ranked),
            candidates: reports,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::mock::{MockConfig, MockProvider};

    fn scheduler(dir: &std::path::Path) -> Scheduler {
        let mock: Arc<dyn LlmProvider> =
            Arc::new(MockProvider::new(MockConfig::default()).unwrap());
        Scheduler::new(
            catalog::builtin_mock_models(),
            HashMap::from([("mock".to_string(), mock)]),
            &BTreeMap::new(),
            SchedulerConfig::default(),
            PerfDb::open(&dir.join("perf.db")).unwrap(),
        )
        .unwrap()
    }

    fn request() -> SchedRequest {
        SchedRequest {
            estimated_input_tokens: 1000,
            max_output_tokens: 500,
            priority: Priority::Balanced,
            capabilities: Vec::new(),
            min_context_window: None,
            task_type: Some("summarize".into()),
            pinned: None,
            allow_fallback: true,
            max_cost_usd: None,
            max_latency_ms: None,
            max_wait_ms: None,
            budget_remaining: 10.0,
            min_quality: None,
            agent: None,
        }
    }

    fn excluded(plan: &Plan) -> Vec<Option<String>> {
        plan.candidates
            .iter()
            .map(|c| c.excluded.as_ref().map(ToString::to_string))
            .collect()
    }

    #[test]
    fn plan_reports_and_errors_read_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let s = scheduler(dir.path());
        let plan = s.plan(&request()).unwrap();
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["candidates"][0]["model"], "mock-small");
        assert_eq!(json["candidates"][0]["provider"], "mock");
        assert_eq!(
            json["candidates"][0]["prediction"],
            "prompt-length estimate"
        );
        assert_eq!(json["candidates"][0]["excluded"], serde_json::Value::Null);
        assert_eq!(plan.ranked.len(), 3);

        let vision = SchedRequest {
            capabilities: vec!["vision".into()],
            ..request()
        };
        let plan = s.plan(&vision).unwrap();
        let lacks = Some(r#"lacks capabilities ["vision"]"#.to_string());
        assert_eq!(excluded(&plan), [lacks.clone(), None, lacks]);
        assert_eq!(plan.ranked.iter().collect::<Vec<_>>(), ["mock-large"]);

        let pinned = SchedRequest {
            pinned: Some("mock-fast".into()),
            allow_fallback: false,
            ..vision.clone()
        };
        assert_eq!(
            s.plan(&pinned).unwrap_err(),
            SchedError::ModelUnavailable(
                r#"pinned model `mock-fast`: lacks capabilities ["vision"]"#.into()
            )
        );
        let pinned = SchedRequest {
            capabilities: Vec::new(),
            ..pinned
        };
        let plan = s.plan(&pinned).unwrap();
        let other = Some("another model is pinned".to_string());
        assert_eq!(excluded(&plan), [other.clone(), other, None]);
        assert_eq!(plan.ranked.iter().collect::<Vec<_>>(), ["mock-fast"]);
        assert_eq!(
            serde_json::to_value(&plan).unwrap()["ranked"],
            serde_json::json!(["mock-fast"])
        );

        let unknown = SchedRequest {
            pinned: Some("gpt-9".into()),
            ..request()
        };
        assert_eq!(
            s.plan(&unknown).unwrap_err(),
            SchedError::NoViableModel(
                "pinned model `gpt-9` is not in the catalog (known: mock-small, mock-large, mock-fast)"
                    .into()
            )
        );

        let broke = SchedRequest {
            budget_remaining: 0.001,
            min_context_window: Some(64_000),
            ..request()
        };
        assert_eq!(
            s.plan(&broke).unwrap_err(),
            SchedError::BudgetExceeded(
                "mock-small: worst-case cost $0.001250 > budget left $0.001000; \
                 mock-large: worst-case cost $0.012500 > budget left $0.001000; \
                 mock-fast: context window 32000 < needed 64000"
                    .into()
            )
        );
    }

    #[test]
    fn history_replaces_the_prompt_estimate() {
        let dir = tempfile::tempdir().unwrap();
        let s = scheduler(dir.path());
        for tokens_out in [100, 200, 301] {
            s.perf().record_call(&perf::CallStat {
                model: "mock-large",
                task_type: "summarize",
                agent: "other",
                ok: true,
                error: None,
                tokens_in: 10,
                tokens_out,
                latency_ms: 5,
                cost_usd: 0.0,
            });
        }
        let plan = s.plan(&request()).unwrap();
        let large = &plan.candidates[1];
        assert_eq!(
            large.prediction.to_string(),
            "history of 3 `summarize` calls"
        );
        assert_eq!(large.predicted_output_tokens, 201);
        assert_eq!(plan.candidates[0].prediction, Prediction::PromptLength);
        let other_task = SchedRequest {
            task_type: None,
            ..request()
        };
        let plan = s.plan(&other_task).unwrap();
        assert_eq!(plan.candidates[1].prediction, Prediction::PromptLength);

        // An agent with history of its own is predicted from it, not from everyone's.
        for _ in 0..3 {
            s.perf().record_call(&perf::CallStat {
                model: "mock-large",
                task_type: "summarize",
                agent: "briefs",
                ok: true,
                error: None,
                tokens_in: 10,
                tokens_out: 40,
                latency_ms: 5,
                cost_usd: 0.0,
            });
        }
        let briefs = SchedRequest {
            agent: Some("briefs".into()),
            ..request()
        };
        let plan = s.plan(&briefs).unwrap();
        assert_eq!(
            plan.candidates[1].prediction.to_string(),
            "history of 3 `summarize` calls by agent `briefs`"
        );
        assert_eq!(plan.candidates[1].predicted_output_tokens, 40);
        // Another agent (or none) gets the task type's history over every agent.
        let plan = s.plan(&request()).unwrap();
        assert_eq!(
            plan.candidates[1].prediction.to_string(),
            "history of 6 `summarize` calls"
        );
    }

    #[test]
    fn quality_is_per_task_type_and_min_quality_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let s = scheduler(dir.path());
        // mock-small is poor at summarizing, fine at anything else.
        for _ in 0..8 {
            s.record_quality("mock-small", "summarize", 0.1, "test")
                .unwrap();
            s.record_quality("mock-small", "classify", 1.0, "test")
                .unwrap();
        }
        let want = SchedRequest {
            min_quality: Some(0.5),
            ..request()
        };
        let plan = s.plan(&want).unwrap();
        let small = &plan.candidates[0];
        assert!(small.quality < 0.5, "{}", small.quality);
        assert!(
            small
                .excluded
                .as_ref()
                .is_some_and(|e| e.to_string().starts_with("quality 0.")),
            "{small:?}"
        );
        let classify = SchedRequest {
            task_type: Some("classify".into()),
            ..want
        };
        let plan = s.plan(&classify).unwrap();
        assert!(
            plan.candidates[0].excluded.is_none(),
            "{:?}",
            plan.candidates[0]
        );
        assert!(plan.candidates[0].quality > 0.5);
        // A type with no scores of its own uses the model's scores on every type.
        let other = SchedRequest {
            task_type: Some("translate".into()),
            ..request()
        };
        let q = s.plan(&other).unwrap().candidates[0].quality;
        assert!((0.5..0.6).contains(&q), "{q}");
    }
}
