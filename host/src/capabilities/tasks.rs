//! `agentflow:agent/tasks`: spawn, wait for and cancel sub-agents.
//!
//! The supervisor (`crate::supervisor`) decides and runs; this module translates
//! between WIT types and the supervisor's, and records each call.

use super::{Call, TaskCtx};
use crate::bindings::tasks::{
    AgentRef, Dependency, Host, Outcome, SpawnError, SpawnRequest, TaskId,
};
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
    }
}

fn outcome_json(o: &Option<TaskOutcome>) -> serde_json::Value {
    match o {
        Some(TaskOutcome::Completed(out)) => json!({ "completed": out }),
        Some(TaskOutcome::Failed(e)) => json!({ "failed": e }),
        Some(TaskOutcome::Cancelled) => json!("cancelled"),
        None => json!("unknown-task"),
    }
}

impl Host for TaskCtx {
    async fn spawn(&mut self, req: SpawnRequest) -> wasmtime::Result<Result<TaskId, SpawnError>> {
        let started_at = self.admit()?;
        let request = json!({
            "description": req.description,
            "agent": match &req.agent { AgentRef::Same => "same".to_string(), AgentRef::Named(n) => n.clone() },
            "input": req.input,
            "dedup_key": req.dedup_key,
            "budget_usd": req.budget_usd,
            "depends_on": req.depends_on.iter().map(|d| match d {
                Dependency::After(i) => json!({ "after": i }),
                Dependency::DataFrom(i) => json!({ "data_from": i }),
            }).collect::<Vec<_>>(),
        });
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
                })
                .collect(),
        };
        let run = self.run.clone();
        let result = run
            .spawn(self.task_id, self.depth, &self.agent, spawn)
            .await;
        let response = match &result {
            Ok(id) => json!({ "task_id": id }),
            Err(e) => json!({ "error": format!("{e:?}") }),
        };
        self.record(Call::plain(
            "tasks.spawn",
            result.is_ok(),
            request,
            response,
            started_at,
        ))
        .await?;
        Ok(result.map_err(refusal))
    }

    async fn wait(&mut self, id: TaskId) -> wasmtime::Result<Outcome> {
        let started_at = self.admit()?;
        let run = self.run.clone();
        let outcome = run.wait(self.task_id, id).await;
        let ok = matches!(outcome, Some(TaskOutcome::Completed(_)));
        self.record(Call::plain(
            "tasks.wait",
            ok,
            json!({ "task_id": id }),
            outcome_json(&outcome),
            started_at,
        ))
        .await?;
        Ok(match outcome {
            Some(TaskOutcome::Completed(s)) => Outcome::Completed(s),
            Some(TaskOutcome::Failed(s)) => Outcome::Failed(s),
            Some(TaskOutcome::Cancelled) => Outcome::Cancelled,
            None => Outcome::UnknownTask,
        })
    }

    async fn cancel(&mut self, id: TaskId) -> wasmtime::Result<bool> {
        let started_at = self.admit()?;
        let run = self.run.clone();
        let cancelled = run.cancel(Some(self.task_id), id).await;
        self.record(Call::plain(
            "tasks.cancel",
            true,
            json!({ "task_id": id }),
            json!({ "cancelled": cancelled }),
            started_at,
        ))
        .await?;
        Ok(cancelled)
    }
}
