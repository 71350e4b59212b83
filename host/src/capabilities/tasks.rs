//! `agentflow:agent/tasks`: spawn, wait for (fully, or partially: critical conflicts
//! left pending and taken later) and cancel sub-agents, and merge their proposals.
//!
//! The supervisor (`crate::supervisor`) decides and runs; this module translates
//! between WIT types and the supervisor's, and records each call.

use super::views::TasksView;
use crate::bindings::tasks::{
    AgentRef, Dependency, Host, MergeCategory, MergeResult, Outcome, PartialJoin, PendingMerge,
    SpawnError, SpawnRequest, TaskId,
};
use crate::ledger::EventKind;
use crate::supervisor::{self, SpawnRefusal, TaskOutcome};
use serde_json::json;

fn refusal(r: SpawnRefusal) -> SpawnError {
    match r {
        SpawnRefusal::MaxDepthExceeded(n) => SpawnError::MaxDepthExceeded(n),
        SpawnRefusal::TooManyTasks(n) => SpawnError::TooManyTasks(n),
        SpawnRefusal::BudgetExceeded(m) => SpawnError::BudgetExceeded(m),
        SpawnRefusal::DuplicateTask(id) => SpawnError::DuplicateTask(id),
        SpawnRefusal::UnknownAgent(m) => SpawnError::UnknownAgent(m),
        SpawnRefusal::InvalidRequest(m) => SpawnError::InvalidRequest(m),
        SpawnRefusal::ResourceExhausted(m) => SpawnError::ResourceExhausted(m),
        SpawnRefusal::CircularDependency(id) => SpawnError::CircularDependency(id),
    }
}

fn refusal_json(r: &SpawnRefusal) -> serde_json::Value {
    let (kind, detail) = match r {
        SpawnRefusal::MaxDepthExceeded(n) => ("max-depth-exceeded", json!(n)),
        SpawnRefusal::TooManyTasks(n) => ("too-many-tasks", json!(n)),
        SpawnRefusal::BudgetExceeded(m) => ("budget-exceeded", json!(m)),
        SpawnRefusal::DuplicateTask(id) => ("duplicate-task", json!(id)),
        SpawnRefusal::UnknownAgent(m) => ("unknown-agent", json!(m)),
        SpawnRefusal::InvalidRequest(m) => ("invalid-request", json!(m)),
        SpawnRefusal::ResourceExhausted(m) => ("resource-exhausted", json!(m)),
        SpawnRefusal::CircularDependency(id) => ("circular-dependency", json!(id)),
    };
    json!({ "error": format!("{r:?}"), "error_kind": kind, "detail": detail })
}

fn refusal_from_json(v: &serde_json::Value) -> SpawnError {
    let text = || v["detail"].as_str().unwrap_or_default().to_string();
    let num = || v["detail"].as_u64().unwrap_or(0);
    match v["error_kind"].as_str().unwrap_or_default() {
        "max-depth-exceeded" => SpawnError::MaxDepthExceeded(num() as u32),
        "too-many-tasks" => SpawnError::TooManyTasks(num() as u32),
        "budget-exceeded" => SpawnError::BudgetExceeded(text()),
        "duplicate-task" => SpawnError::DuplicateTask(num()),
        "unknown-agent" => SpawnError::UnknownAgent(text()),
        "resource-exhausted" => SpawnError::ResourceExhausted(text()),
        "circular-dependency" => SpawnError::CircularDependency(num()),
        _ => SpawnError::InvalidRequest(text()),
    }
}

fn outcome_from_json(v: &serde_json::Value) -> Outcome {
    if let Some(s) = v.get("completed").and_then(|s| s.as_str()) {
        return Outcome::Completed(s.to_string());
    }
    if let Some(s) = v.get("failed").and_then(|s| s.as_str()) {
        return Outcome::Failed(s.to_string());
    }
    match v.as_str() {
        Some("cancelled") => Outcome::Cancelled,
        _ => Outcome::UnknownTask,
    }
}

fn pending_json(pending: &[PendingMerge]) -> serde_json::Value {
    pending
        .iter()
        .map(|p| json!({ "id": p.id, "subject": p.subject, "reason": p.reason }))
        .collect()
}

fn pending_from_json(v: &serde_json::Value) -> Vec<PendingMerge> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|p| PendingMerge {
            id: p["id"].as_u64().unwrap_or(0),
            subject: p["subject"].as_str().unwrap_or_default().to_string(),
            reason: p["reason"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

fn merge_from_json(ok: bool, v: &serde_json::Value) -> Result<MergeResult, String> {
    if !ok {
        return Err(v["error"].as_str().unwrap_or("merge failed").to_string());
    }
    Ok(MergeResult {
        text: v["text"].as_str().unwrap_or_default().to_string(),
        category: match v["category"].as_str().unwrap_or_default() {
            "unchanged" => MergeCategory::Unchanged,
            "trivial" => MergeCategory::Trivial,
            "semantic" => MergeCategory::Semantic,
            _ => MergeCategory::Critical,
        },
        reasoning: v["reasoning"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

fn outcome_json(o: &Option<TaskOutcome>) -> serde_json::Value {
    match o {
        Some(TaskOutcome::Completed(out)) => json!({ "completed": out }),
        Some(TaskOutcome::Failed(e)) => json!({ "failed": e }),
        Some(TaskOutcome::Cancelled) => json!("cancelled"),
        None => json!("unknown-task"),
    }
}

impl Host for TasksView<'_> {
    async fn spawn(&mut self, req: SpawnRequest) -> wasmtime::Result<Result<TaskId, SpawnError>> {
        let request = json!({
            "description": req.description,
            "agent": match &req.agent { AgentRef::Same => "same".to_string(), AgentRef::Named(n) => n.clone() },
            "input": req.input,
            "dedup_key": req.dedup_key,
            "budget_usd": req.budget_usd,
            "depends_on": req.depends_on.iter().map(|d| match d {
                Dependency::After(i) => json!({ "after": i }),
                Dependency::DataFrom(i) => json!({ "data_from": i }),
                Dependency::ExclusiveWith(i) => json!({ "exclusive_with": i }),
            }).collect::<Vec<_>>(),
            "resources": req.resources,
            "sequence": req.sequence,
            "fail_fast": req.fail_fast,
            "timeout_ms": req.timeout_ms,
            "estimated_cost_usd": req.estimated_cost_usd,
            "tools": req.tools,
        });
        let mut request = request;
        // Only when present, so that older records keep their identity.
        if !req.validators.is_empty() {
            request["validators"] = json!(req.validators);
        }
        if let Some(mb) = req.memory_mb {
            request["memory_mb"] = json!(mb);
        }
        if let Some(ms) = req.cpu_ms {
            request["cpu_ms"] = json!(ms);
        }
        if let Some(why) = &req.decomposition_reasoning {
            request["decomposition_reasoning"] = json!(why);
        }
        let mut call = self.site.begin(EventKind::TasksSpawn, request.clone())?;
        if let Some(rec) = call.replayed() {
            let response = rec.response()?;
            return Ok(match response["task_id"].as_u64() {
                Some(id) if rec.ok => Ok(id),
                _ => Err(refusal_from_json(&response)),
            });
        }
        let spawn_key = format!("{}:{}", self.site.task_id, self.site.host_calls);
        let spawn = supervisor::SpawnRequest {
            description: req.description,
            agent: match req.agent {
                AgentRef::Same => supervisor::AgentChoice::Same,
                AgentRef::Named(n) => supervisor::AgentChoice::Named(n),
            },
            input: req.input,
            dedup_key: req.dedup_key,
            budget_usd: req.budget_usd,
            depends_on: req
                .depends_on
                .into_iter()
                .map(|d| match d {
                    Dependency::After(i) => supervisor::Dependency::After(i),
                    Dependency::DataFrom(i) => supervisor::Dependency::DataFrom(i),
                    Dependency::ExclusiveWith(i) => supervisor::Dependency::ExclusiveWith(i),
                })
                .collect(),
            resources: req.resources,
            sequence: req.sequence,
            fail_fast: req.fail_fast,
            timeout_ms: req.timeout_ms.map(u64::from),
            estimated_cost_usd: req.estimated_cost_usd,
            tools: req.tools,
            validators: Vec::new(),
            needs: supervisor::TaskNeeds {
                memory_mb: req.memory_mb.map(u64::from),
                cpu_ms: req.cpu_ms.map(u64::from),
            },
        };
        let run = self.site.run.clone();
        let result = match crate::checks::spawned::parse(&req.validators) {
            Err(why) => Err(supervisor::SpawnRefusal::InvalidRequest(why.to_string())),
            Ok(validators) => {
                let spawn = supervisor::SpawnRequest {
                    validators,
                    ..spawn
                };
                run.spawn(
                    self.site.task_id,
                    self.tasks.depth,
                    &self.tasks.agent,
                    spawn,
                    spawn_key,
                )
                .await
            }
        };
        let response = match &result {
            Ok(id) => json!({ "task_id": id }),
            Err(e) => refusal_json(e),
        };
        call.finish(self.site, result.is_ok(), request, response)
            .await?;
        Ok(result.map_err(refusal))
    }

    async fn wait(&mut self, id: TaskId) -> wasmtime::Result<Outcome> {
        Ok(self.join(id, false).await?.outcome)
    }

    async fn wait_partial(&mut self, id: TaskId) -> wasmtime::Result<PartialJoin> {
        self.join(id, true).await
    }

    async fn take_merge(&mut self, id: u64) -> wasmtime::Result<Result<String, String>> {
        let request = json!({ "merge_id": id });
        let mut call = self
            .site
            .begin(EventKind::TasksTakeMerge, request.clone())?;
        if let Some(rec) = call.replayed() {
            self.tasks.partial_merges.retain(|m| *m != id);
            let v = rec.response()?;
            return Ok(match v["text"].as_str() {
                Some(text) if rec.ok => Ok(text.to_string()),
                _ => Err(v["error"]
                    .as_str()
                    .unwrap_or("take-merge failed")
                    .to_string()),
            });
        }
        let run = self.site.run.clone();
        let had_slot = self.tasks.slot.take().is_some();
        let taken = crate::merge::take_pending(&run, self.site.task_id, id)
            .await
            .map_err(|e| wasmtime::format_err!("cannot take merge {id}: {e:#}"))?;
        if had_slot {
            self.tasks.slot = run.take_slot(self.site.task_id).await;
        }
        if taken.is_ok() {
            self.tasks.partial_merges.retain(|m| *m != id);
        }
        let response = match &taken {
            Ok(text) => json!({ "text": text }),
            Err(e) => json!({ "error": e }),
        };
        call.finish(self.site, taken.is_ok(), request, response)
            .await?;
        Ok(taken)
    }

    async fn merge(
        &mut self,
        base: String,
        ids: Vec<TaskId>,
    ) -> wasmtime::Result<Result<MergeResult, String>> {
        let request = json!({ "base": base, "ids": ids });
        let mut call = self.site.begin(EventKind::TasksMerge, request.clone())?;
        if let Some(rec) = call.replayed() {
            return Ok(merge_from_json(rec.ok, &rec.response()?));
        }
        let run = self.site.run.clone();
        let call_number = self.site.host_calls;
        let had_slot = self.tasks.slot.take().is_some();
        let join = crate::merge::Join {
            run: &run,
            cfg: &self.tasks.merge,
            parent: self.site.task_id,
            agent: &self.tasks.agent,
        };
        let merged = crate::merge::merge_proposals(&join, call_number, &base, &ids)
            .await
            .map_err(|e| wasmtime::format_err!("cannot merge proposals: {e:#}"))?;
        if had_slot {
            self.tasks.slot = run.take_slot(self.site.task_id).await;
        }
        let response = match &merged {
            Ok(m) => json!({ "text": m.text, "category": m.category, "reasoning": m.reasoning }),
            Err(e) => json!({ "error": e }),
        };
        call.finish(self.site, merged.is_ok(), request, response.clone())
            .await?;
        Ok(merge_from_json(merged.is_ok(), &response))
    }

    async fn cancel(&mut self, id: TaskId) -> wasmtime::Result<bool> {
        let mut call = self
            .site
            .begin(EventKind::TasksCancel, json!({ "task_id": id }))?;
        if let Some(rec) = call.replayed() {
            return Ok(rec.response()?["cancelled"].as_bool().unwrap_or(false));
        }
        let run = self.site.run.clone();
        let cancelled = run.cancel(Some(self.site.task_id), id).await;
        call.finish(
            self.site,
            true,
            json!({ "task_id": id }),
            json!({ "cancelled": cancelled }),
        )
        .await?;
        Ok(cancelled)
    }
}

impl TasksView<'_> {
    /// `wait` and `wait-partial`: wait for child `id`, then join its workspace changes
    /// (with `partial`, leaving critical conflicts pending instead of waiting).
    async fn join(&mut self, id: TaskId, partial: bool) -> wasmtime::Result<PartialJoin> {
        let request = if partial {
            json!({ "task_id": id, "partial": true })
        } else {
            json!({ "task_id": id })
        };
        let mut call = self.site.begin(EventKind::TasksWait, request.clone())?;
        if let Some(rec) = call.replayed() {
            let response = rec.response()?;
            let outcome = outcome_from_json(&response);
            if matches!(outcome, Outcome::Completed(_)) {
                self.progress.children_done.push(id);
            }
            let pending = pending_from_json(&response["pending"]);
            self.tasks
                .partial_merges
                .extend(pending.iter().map(|p| p.id));
            return Ok(PartialJoin { outcome, pending });
        }
        let run = self.site.run.clone();
        // Give the execution slot back while waiting, so waiting parents cannot starve
        // their own children of slots.
        let had_slot = self.tasks.slot.take().is_some();
        let outcome = run.wait(self.site.task_id, id).await;
        // The join: a completed child's workspace changes merge into this task's view
        // (waiting here while a critical conflict is with a human, unless partial).
        let mut pending = Vec::new();
        if matches!(outcome, Some(TaskOutcome::Completed(_))) {
            let agent = &self.tasks.agent;
            let (merge, task) = (&self.tasks.merge, self.site.task_id);
            pending = crate::merge::join_workspace(&run, merge, task, agent, id, partial)
                .await
                .map_err(|e| {
                    wasmtime::format_err!("cannot merge task {id}'s workspace changes: {e:#}")
                })?;
        }
        if had_slot {
            self.tasks.slot = run.take_slot(self.site.task_id).await;
        }
        let ok = matches!(outcome, Some(TaskOutcome::Completed(_)));
        if ok {
            self.progress.children_done.push(id);
        }
        let pending: Vec<PendingMerge> = pending
            .into_iter()
            .map(|row| PendingMerge {
                id: row.id,
                subject: row.subject,
                reason: row.reasoning,
            })
            .collect();
        self.tasks
            .partial_merges
            .extend(pending.iter().map(|p| p.id));
        let mut response = outcome_json(&outcome);
        if !pending.is_empty() {
            // Only a completed child's join leaves conflicts: its outcome is an object.
            response["pending"] = pending_json(&pending);
        }
        call.finish(self.site, ok, request, response).await?;
        let outcome = match outcome {
            Some(TaskOutcome::Completed(s)) => Outcome::Completed(s),
            Some(TaskOutcome::Failed(s)) => Outcome::Failed(s),
            Some(TaskOutcome::Cancelled) => Outcome::Cancelled,
            None => Outcome::UnknownTask,
        };
        Ok(PartialJoin { outcome, pending })
    }
}
