//! The live progress `agentflow run` shows on stderr while a run executes, read from
//! the ledger ([`crate::ledger::drift::progress`]: every task with the totals of its
//! events so far) by polling a read connection — nothing in the host's execution path
//! waits for it or knows of it.
//!
//! Two forms: [`tree`], the task tree as lines with each task's status, cost and
//! tokens and the run's totals (a terminal redraws it in place), and [`Tracker`],
//! which turns successive snapshots into one plain line per task start and end (for
//! a stderr that is not a terminal).

use super::inspect::{clip, group_digits, usd};
use crate::ledger::Status;
use crate::ledger::drift::TaskProgress;
use std::collections::{BTreeMap, HashMap};

/// `running`, `completed`, … with a mark.
fn status_mark(s: Status) -> &'static str {
    match s {
        Status::Pending => "·",
        Status::Running | Status::Interrupted => "▸",
        Status::Completed => "✓",
        Status::Failed => "✗",
        Status::Cancelled => "⊘",
        Status::Waiting => "⏸",
    }
}

fn seconds(t: &TaskProgress, now_ms: i64) -> String {
    match (t.started_at, t.finished_at) {
        (Some(s), Some(e)) => format!("{:.1}s", (e - s).max(0) as f64 / 1000.0),
        (Some(s), None) => format!("{:.1}s", (now_ms - s).max(0) as f64 / 1000.0),
        _ => "-".into(),
    }
}

/// The header line: tasks by state and the run's totals so far.
pub fn summary(tasks: &[TaskProgress]) -> String {
    let count = |f: &dyn Fn(Status) -> bool| tasks.iter().filter(|t| f(t.status)).count();
    let cost: f64 = tasks.iter().map(|t| t.cost_usd).sum();
    let tokens: i64 = tasks.iter().map(|t| t.tokens).sum();
    format!(
        "{} tasks: {} running, {} done, {} failed · {} · {} tokens",
        tasks.len(),
        count(&|s| matches!(s, Status::Running | Status::Pending | Status::Waiting)),
        count(&|s| s == Status::Completed),
        count(&|s| matches!(s, Status::Failed | Status::Cancelled)),
        usd(cost),
        group_digits(tokens)
    )
}

/// The run's task tree as at most `max_lines` lines: the summary, then the tasks in
/// tree order (children under their parent, indented), each `#id description
/// status cost tokens time`. When the tree is longer, the finished tasks are left out
/// first and a last line says how many are not shown.
pub fn tree(tasks: &[TaskProgress], now_ms: i64, max_lines: usize) -> Vec<String> {
    let mut children: BTreeMap<Option<u64>, Vec<&TaskProgress>> = BTreeMap::new();
    let ids: HashMap<u64, ()> = tasks.iter().map(|t| (t.task_id, ())).collect();
    for t in tasks {
        let parent = t.parent_id.filter(|p| ids.contains_key(p));
        children.entry(parent).or_default().push(t);
    }
    let mut ordered: Vec<&TaskProgress> = Vec::with_capacity(tasks.len());
    let mut stack: Vec<&TaskProgress> = children
        .get(&None)
        .map(|v| v.iter().rev().copied().collect())
        .unwrap_or_default();
    while let Some(t) = stack.pop() {
        ordered.push(t);
        if let Some(kids) = children.get(&Some(t.task_id)) {
            stack.extend(kids.iter().rev().copied());
        }
    }
    let room = max_lines.saturating_sub(1).max(1);
    let shown: Vec<&TaskProgress> = if ordered.len() <= room {
        ordered
    } else {
        // Unfinished tasks first; the rest of the room for the latest finished ones.
        let open: Vec<_> = ordered
            .iter()
            .filter(|t| t.finished_at.is_none())
            .copied()
            .collect();
        let keep = room.saturating_sub(1);
        if open.len() >= keep {
            open.into_iter().take(keep).collect()
        } else {
            let mut done: Vec<_> = ordered
                .iter()
                .filter(|t| t.finished_at.is_some())
                .copied()
                .collect();
            done.sort_by_key(|t| std::cmp::Reverse(t.finished_at));
            done.truncate(keep - open.len());
            let mut keep_ids: Vec<u64> = open.iter().chain(&done).map(|t| t.task_id).collect();
            keep_ids.sort_unstable();
            ordered
                .into_iter()
                .filter(|t| keep_ids.binary_search(&t.task_id).is_ok())
                .collect()
        }
    };
    let hidden = tasks.len() - shown.len();
    let mut lines = vec![summary(tasks)];
    for t in shown {
        lines.push(format!(
            "{}{} #{} {}  {}  {}  {} tok  {}",
            "  ".repeat(t.depth as usize),
            status_mark(t.status),
            t.task_id,
            clip(&t.description, 40),
            t.status,
            usd(t.cost_usd),
            group_digits(t.tokens),
            seconds(t, now_ms)
        ));
    }
    if hidden > 0 {
        lines.push(format!("… {hidden} more tasks not shown"));
    }
    lines
}

/// Turns successive snapshots of a run into plain lines, one when a task starts and
/// one when it ends (with its cost, tokens and time).
#[derive(Default)]
pub struct Tracker {
    /// Per task: whether its start and its end were told.
    told: HashMap<u64, (bool, bool)>,
}

impl Tracker {
    /// The lines `tasks` (a newer snapshot) adds to what was told before, in the order
    /// the starts and ends happened.
    pub fn lines(&mut self, tasks: &[TaskProgress], now_ms: i64) -> Vec<String> {
        let mut out: Vec<(i64, u8, u64, String)> = Vec::new();
        for t in tasks {
            let told = self.told.entry(t.task_id).or_default();
            let ended = t.finished_at.is_some() && t.status.is_finished();
            if !told.0 && (t.started_at.is_some() || ended) {
                told.0 = true;
                let at = t.started_at.or(t.finished_at).unwrap_or(now_ms);
                out.push((
                    at,
                    0,
                    t.task_id,
                    format!(
                        "task {} started: {} ({}, depth {})",
                        t.task_id,
                        clip(&t.description, 60),
                        clip(&t.agent, 30),
                        t.depth
                    ),
                ));
            }
            if !told.1 && ended {
                told.1 = true;
                let at = t.finished_at.unwrap_or(now_ms);
                out.push((
                    at,
                    1,
                    t.task_id,
                    format!(
                        "task {} {}: {}, {} tokens, {}",
                        t.task_id,
                        t.status,
                        usd(t.cost_usd),
                        group_digits(t.tokens),
                        seconds(t, now_ms)
                    ),
                ));
            }
        }
        out.sort_by_key(|(at, end, id, _)| (*at, *end, *id));
        out.into_iter().map(|(_, _, _, line)| line).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: u64, parent: Option<u64>, status: Status, cost: f64) -> TaskProgress {
        TaskProgress {
            task_id: id,
            parent_id: parent,
            depth: if parent.is_some() { 1 } else { 0 },
            agent: "fanout".into(),
            description: format!("task {id}"),
            status,
            tokens: 10,
            cost_usd: cost,
            started_at: Some(0),
            finished_at: status.is_finished().then_some(1500),
        }
    }

    #[test]
    fn the_tree_puts_children_under_their_parent_with_cost_and_tokens() {
        let tasks = [
            t(1, None, Status::Running, 0.01),
            t(2, Some(1), Status::Completed, 0.02),
            t(3, Some(1), Status::Running, 0.0),
        ];
        let lines = tree(&tasks, 2000, 20);
        assert_eq!(
            lines[0],
            "3 tasks: 2 running, 1 done, 0 failed · $0.0300 · 30 tokens"
        );
        assert!(lines[1].starts_with("▸ #1 task 1  running  $0.0100  10 tok"));
        assert!(lines[2].starts_with("  ✓ #2 task 2  completed  $0.0200"));
        assert!(lines[3].starts_with("  ▸ #3"));
        let short = tree(&tasks, 2000, 3);
        assert_eq!(short.len(), 3, "{short:?}");
        assert_eq!(short.last().unwrap(), "… 2 more tasks not shown");
    }

    #[test]
    fn the_tracker_tells_each_start_and_end_once() {
        let mut tracker = Tracker::default();
        let first = tracker.lines(&[t(1, None, Status::Running, 0.0)], 0);
        assert_eq!(first, ["task 1 started: task 1 (fanout, depth 0)"]);
        let later = tracker.lines(&[t(1, None, Status::Completed, 0.5)], 0);
        assert_eq!(later, ["task 1 completed: $0.5000, 10 tokens, 1.5s"]);
        assert!(
            tracker
                .lines(&[t(1, None, Status::Completed, 0.5)], 0)
                .is_empty()
        );
    }
}
