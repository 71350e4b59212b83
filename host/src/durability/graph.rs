//! The task graph as recovery sees it: which completed tasks a task's work built on
//! (upstream), which tasks its failure reaches (downstream), and the order in which a
//! subtree's effects are reverted.
//!
//! Edges come from the ledger's task rows: the spawn tree (`parent_id`), ordering and
//! data dependencies (`after`, `data_from`), and mutual exclusion (`exclusive_with`
//! and shared `resources`, which make a task wait while another holds them).

use crate::ledger::Status;
use crate::ledger::query::ResumeTask;
use crate::supervisor::{Dependency, parse_deps};
use std::collections::{BTreeSet, HashMap, HashSet};

/// A run's tasks with their edges, built once per plan.
pub struct TaskGraph<'a> {
    by_id: HashMap<u64, &'a ResumeTask>,
    children: HashMap<u64, Vec<u64>>,
    /// `after` and `data_from`: task → the tasks it depends on.
    depends_on: HashMap<u64, Vec<u64>>,
    /// The reverse: task → the tasks that depend on it.
    dependents: HashMap<u64, Vec<u64>>,
    /// `exclusive_with`, both directions.
    exclusive: HashMap<u64, Vec<u64>>,
    resources: HashMap<u64, Vec<String>>,
}

impl<'a> TaskGraph<'a> {
    pub fn new(tasks: &'a [ResumeTask]) -> Self {
        let mut graph = TaskGraph {
            by_id: tasks.iter().map(|t| (t.task_id, t)).collect(),
            children: HashMap::new(),
            depends_on: HashMap::new(),
            dependents: HashMap::new(),
            exclusive: HashMap::new(),
            resources: HashMap::new(),
        };
        for t in tasks {
            if let Some(p) = t.parent_id {
                graph.children.entry(p).or_default().push(t.task_id);
            }
            for d in parse_deps(&t.depends_on) {
                match d {
                    Dependency::After(x) | Dependency::DataFrom(x) => {
                        graph.depends_on.entry(t.task_id).or_default().push(x);
                        graph.dependents.entry(x).or_default().push(t.task_id);
                    }
                    Dependency::ExclusiveWith(x) => {
                        graph.exclusive.entry(t.task_id).or_default().push(x);
                        graph.exclusive.entry(x).or_default().push(t.task_id);
                    }
                }
            }
            let names: Vec<String> = serde_json::from_str(&t.resources).unwrap_or_default();
            if !names.is_empty() {
                graph.resources.insert(t.task_id, names);
            }
        }
        graph
    }

    fn status(&self, id: u64) -> Option<Status> {
        self.by_id.get(&id).map(|t| t.status)
    }

    /// `root` and all its descendants.
    pub fn subtree(&self, root: u64) -> BTreeSet<u64> {
        let mut found = BTreeSet::new();
        let mut frontier = vec![root];
        while let Some(id) = frontier.pop() {
            if found.insert(id) {
                frontier.extend(self.children.get(&id).into_iter().flatten());
            }
        }
        found
    }

    /// The completed tasks whose results the tasks in `set` built on: their `after` and
    /// `data_from` dependencies outside `set`, followed transitively, sorted.
    pub fn completed_upstream(&self, set: &BTreeSet<u64>) -> Vec<u64> {
        let mut seen = HashSet::new();
        let mut frontier: Vec<u64> = set
            .iter()
            .flat_map(|id| self.depends_on.get(id).into_iter().flatten().copied())
            .collect();
        while let Some(id) = frontier.pop() {
            if set.contains(&id) || !seen.insert(id) {
                continue;
            }
            frontier.extend(self.depends_on.get(&id).into_iter().flatten());
        }
        let mut out: Vec<u64> = seen
            .into_iter()
            .filter(|id| self.status(*id) == Some(Status::Completed))
            .collect();
        out.sort_unstable();
        out
    }

    /// Every task the failure of `set` (a task's subtree, `root` its top) reaches,
    /// outside `set`, sorted: the ancestors of `root` (they wait for it), the tasks
    /// depending on anything reached (with their subtrees, transitively), and the
    /// unfinished tasks that share a mutual exclusion with anything reached (they wait
    /// for it to let go).
    pub fn downstream(&self, root: u64, set: &BTreeSet<u64>) -> Vec<u64> {
        let mut reached: BTreeSet<u64> = BTreeSet::new();
        let mut cur = self.by_id.get(&root).and_then(|t| t.parent_id);
        while let Some(p) = cur {
            if !reached.insert(p) {
                break;
            }
            cur = self.by_id.get(&p).and_then(|t| t.parent_id);
        }
        let unfinished = |id: u64| {
            !matches!(
                self.status(id),
                Some(Status::Completed | Status::Failed | Status::Cancelled) | None
            )
        };
        let mut frontier: Vec<u64> = set.iter().copied().collect();
        let mut visited: HashSet<u64> = HashSet::new();
        while let Some(id) = frontier.pop() {
            if !visited.insert(id) {
                continue;
            }
            let mut next: Vec<u64> = Vec::new();
            for d in self.dependents.get(&id).into_iter().flatten() {
                next.extend(self.subtree(*d));
            }
            next.extend(
                self.exclusive
                    .get(&id)
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|x| unfinished(*x)),
            );
            if let Some(names) = self.resources.get(&id) {
                next.extend(
                    self.resources
                        .iter()
                        .filter(|(other, theirs)| {
                            **other != id
                                && unfinished(**other)
                                && theirs.iter().any(|n| names.contains(n))
                        })
                        .map(|(other, _)| *other),
                );
            }
            for n in next {
                if !set.contains(&n) {
                    reached.insert(n);
                    frontier.push(n);
                }
            }
        }
        reached.into_iter().collect()
    }

    /// The tasks of `set` in reverse dependency order: a task comes before the tasks it
    /// depends on and before its parent (whatever built on a task is undone first).
    /// Ties go to the higher task id (the later spawn).
    pub fn revert_order(&self, set: &BTreeSet<u64>) -> Vec<u64> {
        // Kahn's algorithm over "x must be reverted before y" edges within `set`:
        // a child before its parent, a dependent before what it depends on.
        let mut before: HashMap<u64, Vec<u64>> = HashMap::new();
        let mut pending: HashMap<u64, usize> = set.iter().map(|id| (*id, 0)).collect();
        for id in set {
            let t = self.by_id.get(id);
            let mut after_me: Vec<u64> = t.and_then(|t| t.parent_id).into_iter().collect();
            after_me.extend(self.depends_on.get(id).into_iter().flatten());
            for later in after_me {
                if set.contains(&later) {
                    before.entry(*id).or_default().push(later);
                    *pending.get_mut(&later).expect("in set") += 1;
                }
            }
        }
        let mut ready: BTreeSet<u64> = pending
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::with_capacity(set.len());
        while let Some(id) = ready.pop_last() {
            out.push(id);
            for later in before.get(&id).into_iter().flatten() {
                let n = pending.get_mut(later).expect("in set");
                *n -= 1;
                if *n == 0 {
                    ready.insert(*later);
                }
            }
        }
        // A cycle cannot be recorded (spawns check for them); keep any leftovers anyway.
        let left: Vec<u64> = set
            .iter()
            .rev()
            .filter(|id| !out.contains(id))
            .copied()
            .collect();
        out.extend(left);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: u64, parent: Option<u64>, status: Status, deps: &str, res: &str) -> ResumeTask {
        ResumeTask {
            task_id: id,
            parent_id: parent,
            depth: 0,
            agent: "a".into(),
            component_hash: String::new(),
            description: String::new(),
            status,
            input_hash: String::new(),
            run_input_hash: None,
            output: None,
            error: None,
            spawn_key: None,
            dedup_key: None,
            depends_on: deps.into(),
            budget_usd: None,
            resources: res.into(),
            timeout_ms: None,
        }
    }

    /// 1 ─┬─ 2 (completed) ─── 5 (child of 2)
    ///    ├─ 3 after 2, data_from 2 (failed) ─── 6 (child of 3, completed)
    ///    ├─ 4 after 3 (pending)
    ///    ├─ 7 exclusive_with 3 (pending), 8 exclusive_with 3 (completed)
    ///    └─ 9 shares resource "db" with 6 (pending)
    fn graph_tasks() -> Vec<ResumeTask> {
        use Status::*;
        vec![
            task(1, None, Running, "[]", "[]"),
            task(2, Some(1), Completed, "[]", "[]"),
            task(3, Some(1), Failed, r#"[{"after":2},{"data_from":2}]"#, "[]"),
            task(4, Some(1), Pending, r#"[{"after":3}]"#, "[]"),
            task(5, Some(2), Completed, "[]", "[]"),
            task(6, Some(3), Completed, "[]", r#"["db"]"#),
            task(7, Some(1), Pending, r#"[{"exclusive_with":3}]"#, "[]"),
            task(8, Some(1), Completed, r#"[{"exclusive_with":3}]"#, "[]"),
            task(9, Some(1), Pending, "[]", r#"["db"]"#),
        ]
    }

    #[test]
    fn upstream_downstream_and_revert_order_follow_every_edge() {
        let tasks = graph_tasks();
        let g = TaskGraph::new(&tasks);
        let sub = g.subtree(3);
        assert_eq!(sub.iter().copied().collect::<Vec<_>>(), vec![3, 6]);
        assert_eq!(g.completed_upstream(&sub), vec![2]);
        // Ancestor 1, dependent 4, unfinished exclusive 7 (not completed 8), resource 9.
        assert_eq!(g.downstream(3, &sub), vec![1, 4, 7, 9]);
        // The child before its parent.
        assert_eq!(g.revert_order(&sub), vec![6, 3]);
        let all = g.subtree(1);
        let order = g.revert_order(&all);
        let pos = |id| order.iter().position(|x| *x == id).unwrap();
        assert!(
            pos(4) < pos(3) && pos(3) < pos(2),
            "dependents first: {order:?}"
        );
        assert!(
            pos(5) < pos(2) && pos(6) < pos(3),
            "children first: {order:?}"
        );
        assert_eq!(*order.last().unwrap(), 1, "the root last: {order:?}");
    }
}
