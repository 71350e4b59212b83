//! `agentflow inspect <run> --roi`: each task's cost against what its output was
//! worth — its validation verdict and quality score (from validators, or from the
//! asynchronous `[observe] evaluate = "judge"`) — sorted so that the expensive but
//! worthless subtasks come first.
//!
//! A task's *value* is its quality score (0..1); a failed task, or one whose output
//! failed validation, is worth 0. Its *waste* is `cost × (1 − value)`: what was paid
//! for the part of the output that was not good. Tasks are sorted by waste (largest
//! first), then by cost; tasks nothing judged (no value known) come after them, by
//! cost. `cost per point` is the cost of one quality point on a 0–10 scale (`cost /
//! (value × 10)`, none when the value is 0). A task is flagged `LOW VALUE` when its
//! value is under 0.5, and `EXPENSIVE, LOW VALUE` when besides it cost at least the
//! median cost of the run's paid tasks. Every cost is the task's own; `subtree` adds
//! its descendants'.

use super::inspect::{clip, group_digits, usd};
use crate::ledger::drift::TaskResult;
use crate::ledger::{Connection, LedgerError, Status};
use serde::Serialize;
use std::collections::HashMap;

/// The ROI view of a run.
#[derive(Debug, Serialize)]
pub struct RoiReport {
    pub run_id: String,
    pub cost_usd: f64,
    /// Cost of the tasks worth under 0.5.
    pub low_value_cost_usd: f64,
    /// Tasks, most wasteful first.
    pub tasks: Vec<RoiRow>,
}

/// One task's cost and value.
#[derive(Debug, Serialize)]
pub struct RoiRow {
    pub task_id: u64,
    pub parent_id: Option<u64>,
    pub agent: String,
    pub description: String,
    pub status: Status,
    pub models: Vec<String>,
    pub cost_usd: f64,
    /// This task and its descendants.
    pub subtree_cost_usd: f64,
    pub tokens: i64,
    pub validation: Option<String>,
    pub quality: Option<f64>,
    /// 0..1: the quality score, 0 for a failure; `None` when nothing judged it.
    pub value: Option<f64>,
    /// `cost × (1 − value)`.
    pub waste_usd: Option<f64>,
    /// Cost of one quality point (0–10 scale).
    pub cost_per_point_usd: Option<f64>,
    /// `LOW VALUE` or `EXPENSIVE, LOW VALUE`.
    pub flag: Option<String>,
}

fn value(t: &TaskResult) -> Option<f64> {
    if t.status == Status::Failed || t.validation.as_deref() == Some("fail") {
        return Some(0.0);
    }
    t.quality
}

/// The ROI report of run `run` (an id or a unique prefix); `None` when there is no
/// such run.
pub fn load(conn: &Connection, run: &str) -> Result<Option<RoiReport>, LedgerError> {
    let Some(row) = crate::ledger::query::run(conn, run)? else {
        return Ok(None);
    };
    let tasks = crate::ledger::drift::run_results(conn, &row.run_id)?;
    Ok(Some(report(row.run_id, &tasks)))
}

/// The report of `tasks`, the tasks of run `run_id`.
pub fn report(run_id: String, tasks: &[TaskResult]) -> RoiReport {
    let mut subtree: HashMap<u64, f64> = tasks.iter().map(|t| (t.task_id, t.cost_usd)).collect();
    let parents: HashMap<u64, Option<u64>> =
        tasks.iter().map(|t| (t.task_id, t.parent_id)).collect();
    for t in tasks {
        let mut up = t.parent_id;
        while let Some(p) = up {
            *subtree.entry(p).or_default() += t.cost_usd;
            up = parents.get(&p).copied().flatten();
        }
    }
    let mut paid: Vec<f64> = tasks
        .iter()
        .map(|t| t.cost_usd)
        .filter(|c| *c > 0.0)
        .collect();
    paid.sort_by(f64::total_cmp);
    let median = paid.get(paid.len() / 2).copied().unwrap_or(0.0);
    let mut rows: Vec<RoiRow> = tasks
        .iter()
        .map(|t| {
            let value = value(t);
            let low = value.is_some_and(|v| v < 0.5);
            let flag = low.then(|| {
                if t.cost_usd > 0.0 && t.cost_usd >= median {
                    "EXPENSIVE, LOW VALUE".to_string()
                } else {
                    "LOW VALUE".to_string()
                }
            });
            RoiRow {
                task_id: t.task_id,
                parent_id: t.parent_id,
                agent: t.agent.clone(),
                description: t.description.clone(),
                status: t.status,
                models: t.models.clone(),
                cost_usd: t.cost_usd,
                subtree_cost_usd: subtree.get(&t.task_id).copied().unwrap_or(t.cost_usd),
                tokens: t.tokens,
                validation: t.validation.clone(),
                quality: t.quality,
                value,
                waste_usd: value.map(|v| t.cost_usd * (1.0 - v)),
                cost_per_point_usd: value.filter(|v| *v > 0.0).map(|v| t.cost_usd / (v * 10.0)),
                flag,
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        b.waste_usd
            .is_some()
            .cmp(&a.waste_usd.is_some())
            .then(
                b.waste_usd
                    .unwrap_or(0.0)
                    .total_cmp(&a.waste_usd.unwrap_or(0.0)),
            )
            .then(b.cost_usd.total_cmp(&a.cost_usd))
            .then(a.task_id.cmp(&b.task_id))
    });
    RoiReport {
        run_id,
        cost_usd: tasks.iter().map(|t| t.cost_usd).sum(),
        low_value_cost_usd: rows
            .iter()
            .filter(|r| r.value.is_some_and(|v| v < 0.5))
            .map(|r| r.cost_usd)
            .sum(),
        tasks: rows,
    }
}

/// The report as text: a summary line, then one table row per task.
pub fn render(r: &RoiReport) -> String {
    let mut out = format!(
        "run {}: {} spent, {} of it on tasks worth under 0.5\n",
        r.run_id,
        usd(r.cost_usd),
        usd(r.low_value_cost_usd)
    );
    let mut table = crate::table::Table::new()
        .right("task")
        .left("description")
        .left("status")
        .right("cost")
        .right("subtree")
        .right("tokens")
        .left("verdict")
        .right("quality")
        .right("waste")
        .right("$/point")
        .left("flag");
    let opt = |x: Option<f64>, f: &dyn Fn(f64) -> String| x.map_or("-".to_string(), f);
    for t in &r.tasks {
        table.row([
            t.task_id.to_string(),
            clip(&t.description, 32),
            t.status.to_string(),
            usd(t.cost_usd),
            usd(t.subtree_cost_usd),
            group_digits(t.tokens),
            t.validation.clone().unwrap_or_else(|| "-".into()),
            opt(t.quality, &|q| format!("{q:.2}")),
            opt(t.waste_usd, &usd),
            opt(t.cost_per_point_usd, &usd),
            t.flag.clone().unwrap_or_default(),
        ]);
    }
    for line in table.lines() {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: u64, parent: Option<u64>, cost: f64, quality: Option<f64>) -> TaskResult {
        TaskResult {
            run_id: "r".into(),
            task_id: id,
            parent_id: parent,
            agent: "a".into(),
            description: format!("t{id}"),
            status: Status::Completed,
            input_hash: "h".into(),
            output: Some("o".into()),
            validation: quality.map(|q| if q >= 0.5 { "pass" } else { "fail" }.to_string()),
            quality,
            models: vec!["m".into()],
            tokens: 100,
            cost_usd: cost,
            started_at: Some(1),
            finished_at: Some(2),
        }
    }

    #[test]
    fn expensive_worthless_tasks_come_first_and_subtrees_add_up() {
        let tasks = vec![
            task(1, None, 0.10, None),
            task(2, Some(1), 0.50, Some(0.9)),
            task(3, Some(1), 0.40, Some(0.2)),
            task(4, Some(3), 0.05, Some(1.0)),
        ];
        let r = report("r".into(), &tasks);
        let order: Vec<u64> = r.tasks.iter().map(|t| t.task_id).collect();
        assert_eq!(order, [3, 2, 4, 1]);
        assert_eq!(r.tasks[0].flag.as_deref(), Some("EXPENSIVE, LOW VALUE"));
        let root = r.tasks.iter().find(|t| t.task_id == 1).unwrap();
        assert!((root.subtree_cost_usd - 1.05).abs() < 1e-9);
        let three = &r.tasks[0];
        assert!((three.subtree_cost_usd - 0.45).abs() < 1e-9);
        assert!((r.low_value_cost_usd - 0.40).abs() < 1e-9);
        assert!(render(&r).contains("EXPENSIVE, LOW VALUE"));
    }
}
