//! `agentflow drift`: how the same agent on the same input answered over time. Tasks
//! are grouped by agent and input hash (every task of every run, the root and the
//! children alike); each group shows how many times it ran, how many distinct outputs
//! it gave, its validation pass rate, the models it used and when it was first and last
//! seen. A group is flagged when its output or its validation verdict changed from one
//! execution to the next, and each change names the models before and after, so a
//! model change that coincided with it shows. Then, per model and UTC day: the tasks
//! that used it, their failure rate (failed, or failed validation) and their mean
//! quality score.
//!
//! Everything comes from the ledger's `agent_traces` view
//! ([`crate::ledger::drift::finished_tasks`]); nothing is sampled or cached.

use super::inspect::clip;
use super::when::utc;
use crate::ledger::drift::{TaskResult, VersionChange};
use crate::ledger::{Connection, LedgerError, Status};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Which tasks `drift` reads.
#[derive(Clone, Debug, Default)]
pub struct DriftFilter {
    pub agent: Option<String>,
    pub since_ms: Option<i64>,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct DriftReport {
    /// Groups that ran more than once, flagged ones first.
    pub groups: Vec<DriftGroup>,
    /// Per model and UTC day, oldest day first.
    pub models: Vec<ModelDay>,
}

/// One agent on one input.
#[derive(Debug, Serialize)]
pub struct DriftGroup {
    pub agent: String,
    pub input_hash: String,
    /// The task's description the last time (a child's spawn description; the root's
    /// is its agent).
    pub description: String,
    /// Executions: tasks of this agent on this input.
    pub tasks: usize,
    /// Distinct runs they belong to.
    pub runs: usize,
    /// Distinct outputs (a failed task counts as the output "failed").
    pub distinct_outputs: usize,
    /// Executions with a validation verdict, and those that passed.
    pub validated: usize,
    pub passed: usize,
    /// `passed / validated`, `None` when nothing was validated.
    pub pass_rate: Option<f64>,
    /// Mean quality score (0..1) of the executions that have one.
    pub quality: Option<f64>,
    /// Every model used, in first-use order.
    pub models: Vec<String>,
    pub first_seen: Option<i64>,
    pub last_seen: Option<i64>,
    pub cost_usd: f64,
    /// The output changed at least once.
    pub output_changed: bool,
    /// The validation verdict changed at least once.
    pub validation_changed: bool,
    /// Each change, oldest first.
    pub changes: Vec<Change>,
}

impl DriftGroup {
    /// Whether the group drifted.
    pub fn flagged(&self) -> bool {
        self.output_changed || self.validation_changed
    }
}

/// One execution whose output or verdict differs from the one before it.
#[derive(Debug, Serialize)]
pub struct Change {
    pub run_id: String,
    pub task_id: u64,
    pub at: Option<i64>,
    pub output_changed: bool,
    /// `pass → fail`, when the verdict changed.
    pub validation: Option<String>,
    pub models_before: Vec<String>,
    pub models_after: Vec<String>,
    /// `a → b` when the models differ: the model change that coincided.
    pub model_change: Option<String>,
    /// Version changes providers reported for these models since the execution before
    /// (`m: v1 → v2`): the model changed under the same name.
    pub version_changes: Vec<String>,
}

/// One model on one UTC day.
#[derive(Debug, Serialize)]
pub struct ModelDay {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub model: String,
    pub tasks: usize,
    /// Failed, or failed validation.
    pub failed: usize,
    pub failure_rate: f64,
    /// Mean quality score (0..1) of the tasks that have one.
    pub quality: Option<f64>,
    pub judged: usize,
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// What a task "said": its output, or that it failed.
fn said(t: &TaskResult) -> String {
    match t.status {
        Status::Completed => t.output.clone().unwrap_or_default(),
        _ => "(failed)".into(),
    }
}

fn changes(tasks: &[&TaskResult], versions: &[VersionChange]) -> Vec<Change> {
    tasks
        .windows(2)
        .filter_map(|w| {
            let (before, after) = (w[0], w[1]);
            let output_changed = said(before) != said(after);
            let validation = (before.validation != after.validation).then(|| {
                let v = |x: &Option<String>| x.clone().unwrap_or_else(|| "none".into());
                format!("{} → {}", v(&before.validation), v(&after.validation))
            });
            if !output_changed && validation.is_none() {
                return None;
            }
            let model_change = (before.models != after.models).then(|| {
                let m = |x: &[String]| {
                    if x.is_empty() {
                        "(none)".to_string()
                    } else {
                        x.join("+")
                    }
                };
                format!("{} → {}", m(&before.models), m(&after.models))
            });
            let since = before.finished_at.or(before.started_at).unwrap_or(i64::MIN);
            let until = after.finished_at.or(after.started_at).unwrap_or(i64::MAX);
            let version_changes = versions
                .iter()
                .filter(|v| v.at > since && v.at <= until)
                .filter(|v| before.models.contains(&v.model) || after.models.contains(&v.model))
                .map(|v| format!("{}: {} → {}", v.model, v.previous, v.observed))
                .collect();
            Some(Change {
                version_changes,
                run_id: after.run_id.clone(),
                task_id: after.task_id,
                at: after.started_at.or(after.finished_at),
                output_changed,
                validation,
                models_before: before.models.clone(),
                models_after: after.models.clone(),
                model_change,
            })
        })
        .collect()
}

fn group(tasks: &[&TaskResult], versions: &[VersionChange]) -> DriftGroup {
    let last = tasks[tasks.len() - 1];
    let outputs: BTreeSet<String> = tasks.iter().map(|t| said(t)).collect();
    let runs: BTreeSet<&str> = tasks.iter().map(|t| t.run_id.as_str()).collect();
    let validated = tasks.iter().filter(|t| t.validation.is_some()).count();
    let passed = tasks
        .iter()
        .filter(|t| t.validation.as_deref() == Some("pass"))
        .count();
    let mut models: Vec<String> = Vec::new();
    for m in tasks.iter().flat_map(|t| &t.models) {
        if !models.contains(m) {
            models.push(m.clone());
        }
    }
    let changes = changes(tasks, versions);
    DriftGroup {
        agent: last.agent.clone(),
        input_hash: last.input_hash.clone(),
        description: last.description.clone(),
        tasks: tasks.len(),
        runs: runs.len(),
        distinct_outputs: outputs.len(),
        validated,
        passed,
        pass_rate: (validated > 0).then(|| passed as f64 / validated as f64),
        quality: mean(tasks.iter().filter_map(|t| t.quality)),
        models,
        first_seen: tasks.iter().filter_map(|t| t.started_at).min(),
        last_seen: tasks
            .iter()
            .filter_map(|t| t.finished_at.or(t.started_at))
            .max(),
        cost_usd: tasks.iter().map(|t| t.cost_usd).sum(),
        output_changed: changes.iter().any(|c| c.output_changed),
        validation_changed: changes.iter().any(|c| c.validation.is_some()),
        changes,
    }
}

fn model_days(tasks: &[TaskResult]) -> Vec<ModelDay> {
    let mut days: BTreeMap<(String, String), Vec<&TaskResult>> = BTreeMap::new();
    for t in tasks {
        let Some(at) = t.finished_at.or(t.started_at) else {
            continue;
        };
        let day = utc(at)[..10].to_string();
        for m in &t.models {
            days.entry((day.clone(), m.clone())).or_default().push(t);
        }
    }
    days.into_iter()
        .map(|((day, model), ts)| {
            let failed = ts
                .iter()
                .filter(|t| t.status == Status::Failed || t.validation.as_deref() == Some("fail"))
                .count();
            ModelDay {
                day,
                model,
                tasks: ts.len(),
                failed,
                failure_rate: failed as f64 / ts.len() as f64,
                quality: mean(ts.iter().filter_map(|t| t.quality)),
                judged: ts.iter().filter(|t| t.quality.is_some()).count(),
            }
        })
        .collect()
}

/// The drift report of the tasks `filter` selects.
pub fn drift(conn: &Connection, filter: &DriftFilter) -> Result<DriftReport, LedgerError> {
    let tasks =
        crate::ledger::drift::finished_tasks(conn, filter.agent.as_deref(), filter.since_ms)?;
    let versions = crate::ledger::drift::version_changes(conn)?;
    Ok(report(&tasks, &versions))
}

/// The report of `tasks`, ordered by agent, input hash and start, with the model
/// `versions` changes the ledger recorded.
pub fn report(tasks: &[TaskResult], versions: &[VersionChange]) -> DriftReport {
    let mut groups: Vec<DriftGroup> = tasks
        .chunk_by(|a, b| a.agent == b.agent && a.input_hash == b.input_hash)
        .filter(|g| g.len() > 1)
        .map(|g| group(&g.iter().collect::<Vec<_>>(), versions))
        .collect();
    // Flagged first, then the most executed; ties by agent and input.
    groups.sort_by(|a, b| {
        b.flagged()
            .cmp(&a.flagged())
            .then(b.tasks.cmp(&a.tasks))
            .then_with(|| (&a.agent, &a.input_hash).cmp(&(&b.agent, &b.input_hash)))
    });
    DriftReport {
        groups,
        models: model_days(tasks),
    }
}

fn percent(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{:.0}%", x * 100.0))
}

fn score(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:.2}"))
}

/// The report as text: the groups, each flagged group's changes under it, then the
/// models by day.
pub fn render(r: &DriftReport) -> String {
    let mut out = String::new();
    if r.groups.is_empty() {
        out.push_str("no agent ran twice on the same input\n");
    } else {
        let mut table = crate::table::Table::new()
            .left("drift")
            .left("agent")
            .left("input")
            .right("runs")
            .right("outputs")
            .right("pass rate")
            .right("quality")
            .left("models")
            .left("first seen (UTC)")
            .left("last seen (UTC)");
        for g in &r.groups {
            let flag = match (g.output_changed, g.validation_changed) {
                (true, true) => "OUTPUT+PASS",
                (true, false) => "OUTPUT",
                (false, true) => "PASS",
                (false, false) => "-",
            };
            table.row([
                flag.to_string(),
                clip(&g.agent, 16),
                format!(
                    "{} {}",
                    &g.input_hash[..g.input_hash.len().min(10)],
                    clip(&g.description, 24)
                ),
                g.tasks.to_string(),
                g.distinct_outputs.to_string(),
                format!("{} ({}/{})", percent(g.pass_rate), g.passed, g.validated),
                score(g.quality),
                clip(&g.models.join(","), 40),
                g.first_seen.map_or("-".into(), utc),
                g.last_seen.map_or("-".into(), utc),
            ]);
        }
        for line in table.lines() {
            out.push_str(&line);
            out.push('\n');
        }
        for g in r.groups.iter().filter(|g| g.flagged()) {
            out.push_str(&format!(
                "\n{} on input {}:\n",
                clip(&g.agent, 30),
                &g.input_hash[..g.input_hash.len().min(10)]
            ));
            for c in &g.changes {
                let mut what = Vec::new();
                if c.output_changed {
                    what.push("output changed".to_string());
                }
                if let Some(v) = &c.validation {
                    what.push(format!("validation {v}"));
                }
                let mut models = match &c.model_change {
                    Some(m) => format!("model {m}"),
                    None => format!("same model ({})", c.models_after.join("+")),
                };
                if !c.version_changes.is_empty() {
                    models.push_str(&format!(
                        ", new version {}",
                        clip(&c.version_changes.join(", "), 80)
                    ));
                }
                out.push_str(&format!(
                    "  {} run {} task {}: {}; {}\n",
                    c.at.map_or("-".into(), utc),
                    &c.run_id[..c.run_id.len().min(8)],
                    c.task_id,
                    what.join(", "),
                    models
                ));
            }
        }
    }
    if !r.models.is_empty() {
        out.push_str("\nper model, by day (UTC):\n");
        let mut table = crate::table::Table::new()
            .left("day")
            .left("model")
            .right("tasks")
            .right("failed")
            .right("failure rate")
            .right("quality")
            .right("judged");
        for m in &r.models {
            table.row([
                m.day.clone(),
                clip(&m.model, 30),
                m.tasks.to_string(),
                m.failed.to_string(),
                percent(Some(m.failure_rate)),
                score(m.quality),
                m.judged.to_string(),
            ]);
        }
        for line in table.lines() {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(run: &str, at: i64, output: &str, validation: Option<&str>, model: &str) -> TaskResult {
        TaskResult {
            run_id: run.into(),
            task_id: 1,
            parent_id: None,
            agent: "hello".into(),
            description: "hello".into(),
            status: Status::Completed,
            input_hash: "abc".into(),
            output: Some(output.into()),
            validation: validation.map(str::to_string),
            quality: validation.map(|v| if v == "pass" { 1.0 } else { 0.0 }),
            models: vec![model.into()],
            tokens: 10,
            cost_usd: 0.01,
            started_at: Some(at),
            finished_at: Some(at + 5),
        }
    }

    #[test]
    fn a_changed_output_is_flagged_with_the_model_change_that_coincided() {
        let tasks = vec![
            task("r1", 1_000, "Hi", Some("pass"), "m1"),
            task("r2", 2_000, "Hi", Some("pass"), "m1"),
            task("r3", 86_400_000 + 3_000, "Bye", Some("fail"), "m2"),
        ];
        let r = report(&tasks, &[]);
        let g = &r.groups[0];
        assert!(g.output_changed && g.validation_changed);
        assert_eq!((g.tasks, g.runs, g.distinct_outputs), (3, 3, 2));
        assert_eq!((g.validated, g.passed), (3, 2));
        assert!((g.pass_rate.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(g.models, ["m1", "m2"]);
        assert_eq!(g.changes.len(), 1);
        assert_eq!(g.changes[0].run_id, "r3");
        assert_eq!(g.changes[0].model_change.as_deref(), Some("m1 → m2"));
        assert_eq!(g.changes[0].validation.as_deref(), Some("pass → fail"));
        let days: Vec<_> = r
            .models
            .iter()
            .map(|m| (m.day.as_str(), m.model.as_str(), m.tasks, m.failed))
            .collect();
        assert_eq!(
            days,
            [("1970-01-01", "m1", 2, 0), ("1970-01-02", "m2", 1, 1)]
        );
        let text = render(&r);
        assert!(text.contains("OUTPUT+PASS"), "{text}");
        assert!(text.contains("model m1 → m2"), "{text}");
    }

    #[test]
    fn a_version_change_between_two_executions_is_named_with_the_change() {
        let tasks = vec![
            task("r1", 1_000, "Hi", None, "m1"),
            task("r2", 5_000, "Hey", None, "m1"),
        ];
        let version = |at: i64, model: &str| VersionChange {
            at,
            model: model.into(),
            previous: "v1".into(),
            observed: "v2".into(),
        };
        // Before the first execution, of another model, and the one that counts.
        let versions = [
            version(500, "m1"),
            version(3_000, "m9"),
            version(3_000, "m1"),
        ];
        let r = report(&tasks, &versions);
        let c = &r.groups[0].changes[0];
        assert_eq!(c.model_change, None);
        assert_eq!(c.version_changes, ["m1: v1 → v2"]);
        assert!(render(&r).contains("same model (m1), new version m1: v1 → v2"));
    }

    #[test]
    fn a_group_that_ran_once_is_not_listed_and_a_steady_one_is_not_flagged() {
        let mut other = task("r9", 5, "x", None, "m1");
        other.input_hash = "zzz".into();
        let tasks = vec![
            task("r1", 1, "Hi", Some("pass"), "m1"),
            task("r2", 2, "Hi", Some("pass"), "m1"),
            other,
        ];
        let r = report(&tasks, &[]);
        assert_eq!(r.groups.len(), 1);
        assert!(!r.groups[0].flagged());
        assert_eq!(r.groups[0].pass_rate, Some(1.0));
    }
}
