//! Planning one call: filter the catalog by hard constraints, predict the call's
//! tokens, score the survivors by the request's priority — the viable models, best
//! first, with a report on every candidate.

use super::*;

impl Scheduler {
    /// Filter, predict and score: the viable models, best first, and a report on all.
    pub fn plan(&self, req: &SchedRequest) -> Result<Plan, SchedError> {
        let now = Instant::now();
        let task_type = req.task_type.as_deref().unwrap_or("default");
        let weights = self.weights(req.priority);
        if let Some(pin) = &req.pinned
            && self.model(pin).is_none()
        {
            return Err(SchedError::NoViableModel(format!(
                "pinned model `{pin}` is not in the catalog (known: {})",
                self.models
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let mut state = self.state.lock().unwrap();
        let mut reports = Vec::with_capacity(self.models.len());
        for m in &self.models {
            let history = self.perf.aggregate(&m.name, task_type);
            let (predicted_out, prediction) =
                if history.calls >= self.config.min_history && history.calls > history.errors {
                    let ok = history.calls - history.errors;
                    let avg = history.tokens_out.div_ceil(ok.max(1));
                    (
                        avg.min(req.max_output_tokens),
                        format!("history of {ok} `{task_type}` calls"),
                    )
                } else {
                    (
                        req.max_output_tokens
                            .min(req.estimated_input_tokens.max(64)),
                        "prompt-length estimate".to_string(),
                    )
                };
            let price = m.price();
            let health = state
                .health
                .get_mut(&m.name)
                .expect("health for every model");
            let latency = health.p95_if(5).unwrap_or(m.expected_latency_ms);
            let quality = self.perf.quality(&m.name, m.quality);
            let worst = price.cost(req.estimated_input_tokens, req.max_output_tokens);
            let mut report = CandidateReport {
                model: m.name.clone(),
                provider: m.provider.clone(),
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
                excluded: None,
            };
            let needed = req.estimated_input_tokens + req.max_output_tokens;
            let pinned_out =
                req.pinned.as_ref().is_some_and(|p| p != &m.name) && !req.allow_fallback;
            report.excluded = if pinned_out {
                Some("another model is pinned".into())
            } else if (m.context_window as u64) < needed
                || req.min_context_window.is_some_and(|c| m.context_window < c)
            {
                Some(format!(
                    "context window {} < needed {}",
                    m.context_window,
                    needed.max(req.min_context_window.unwrap_or(0) as u64)
                ))
            } else if !m.has_capabilities(&req.capabilities) {
                Some(format!("lacks capabilities {:?}", req.capabilities))
            } else if req.max_cost_usd.is_some_and(|c| worst > c) {
                Some(format!(
                    "worst-case cost ${worst:.6} > max ${:.6}",
                    req.max_cost_usd.unwrap_or(0.0)
                ))
            } else if req.max_latency_ms.is_some_and(|l| latency > l) {
                Some(format!(
                    "p95 latency {latency} ms > max {} ms",
                    req.max_latency_ms.unwrap_or(0)
                ))
            } else if worst > req.budget_remaining + 1e-12 {
                Some(format!(
                    "worst-case cost ${worst:.6} > budget left ${:.6}",
                    req.budget_remaining
                ))
            } else {
                health.admit(now).err().map(|why| why.to_string())
            };
            reports.push(report);
        }
        drop(state);
        // Normalise among the viable: the best of each dimension scores 1.
        let viable: Vec<usize> = (0..reports.len())
            .filter(|&i| reports[i].excluded.is_none())
            .collect();
        let min_cost = viable
            .iter()
            .map(|&i| reports[i].predicted_cost_usd)
            .fold(f64::INFINITY, f64::min);
        let max_quality = viable
            .iter()
            .map(|&i| reports[i].quality)
            .fold(0.0, f64::max);
        let min_latency = viable
            .iter()
            .map(|&i| reports[i].latency_ms)
            .min()
            .unwrap_or(1)
            .max(1) as f64;
        for &i in &viable {
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
        let mut ranked = viable.clone();
        ranked.sort_by(|&a, &b| {
            let pin_a = req.pinned.as_deref() == Some(reports[a].model.as_str());
            let pin_b = req.pinned.as_deref() == Some(reports[b].model.as_str());
            pin_b.cmp(&pin_a).then(
                reports[b]
                    .score
                    .partial_cmp(&reports[a].score)
                    .unwrap_or(std::cmp::Ordering::Equal),
            )
        });
        if let Some(pin) = &req.pinned {
            let pinned_viable = ranked.first().is_some_and(|&i| &reports[i].model == pin);
            if !pinned_viable && !req.allow_fallback {
                let why = reports
                    .iter()
                    .find(|r| &r.model == pin)
                    .and_then(|r| r.excluded.clone())
                    .unwrap_or_default();
                return Err(SchedError::ModelUnavailable(format!(
                    "pinned model `{pin}`: {why}"
                )));
            }
        }
        if ranked.is_empty() {
            let reasons: Vec<String> = reports
                .iter()
                .map(|r| format!("{}: {}", r.model, r.excluded.as_deref().unwrap_or("?")))
                .collect();
            // If some model was turned away only by the budget, the budget is the answer.
            let budget_bound = reports.iter().any(|r| {
                r.excluded
                    .as_deref()
                    .is_some_and(|e| e.contains("budget left"))
            });
            let msg = reasons.join("; ");
            return Err(if budget_bound {
                SchedError::BudgetExceeded(msg)
            } else {
                SchedError::NoViableModel(msg)
            });
        }
        Ok(Plan {
            priority: req.priority,
            weights,
            ranked: ranked.iter().map(|&i| reports[i].model.clone()).collect(),
            candidates: reports,
        })
    }
}
