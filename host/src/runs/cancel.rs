//! Cancelling a run or a subtree (`agentflow cancel <run> [--task T]`).
//!
//! When a live host executes the run (its lease is fresh), the request goes through
//! the ledger and that host cancels the tasks at its next heartbeat — the guests stop,
//! the tasks end `cancelled`. When no host does (the run was interrupted, or waits for
//! a human with its host gone), the tasks are marked `cancelled` in the ledger here;
//! cancelling the root ends the run `cancelled` too. Either way the side effects the
//! cancelled tasks already made are listed with the compensation that would revert
//! each — offered, not run (`agentflow recover` runs compensations of failed tasks).

use crate::durability::recovery::{Revert, reverts};
use crate::ledger::{Commit, Ledger, Status, leases, query};
use std::time::Duration;

/// What a cancellation did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Cancelled {
    pub run_id: String,
    /// The tasks now cancelled (the subtree's unfinished ones).
    pub tasks: Vec<u64>,
    /// Whether the run's live host carried it out.
    pub by_host: bool,
    /// Recorded effects of the cancelled tasks that a compensation could revert.
    pub compensations_offered: Vec<Revert>,
}

/// How long to wait for a live host to carry a request out.
const HOST_WAIT: Duration = Duration::from_secs(30);

/// Cancel task `task` (default: the root, so the whole run) of run `run` and its
/// descendants, noting `note`.
pub async fn cancel(
    ledger: &Ledger,
    run: &str,
    task: Option<u64>,
    note: Option<String>,
) -> anyhow::Result<Cancelled> {
    let reader = ledger.reader()?;
    let row = query::run(&reader, run)?
        .ok_or_else(|| anyhow::anyhow!("no run `{run}` in {}", ledger.name()))?;
    let run_id = row.run_id.clone();
    if row.status.is_finished() {
        anyhow::bail!("run {run_id} is {}: nothing to cancel", row.status);
    }
    let target = task.unwrap_or(1);
    let tasks = query::resume_tasks(&reader, &run_id)?;
    if !tasks.iter().any(|t| t.task_id == target) {
        anyhow::bail!("run {run_id} has no task {target}");
    }
    let subtree = query::subtree(&tasks, [target]);
    let open: Vec<u64> = tasks
        .iter()
        .filter(|t| subtree.contains(&t.task_id) && !t.status.is_finished())
        .map(|t| t.task_id)
        .collect();
    if open.is_empty() {
        anyhow::bail!(
            "task {target} of run {run_id} and its subtree have finished: nothing to cancel"
        );
    }
    let live = leases::live(&reader, &run_id)?.is_some();
    let why = match &note {
        Some(n) => format!("cancelled by an operator: {n}"),
        None => "cancelled by an operator".to_string(),
    };
    if live {
        let (id, n) = (run_id.clone(), note.clone());
        let request = ledger
            .write(move |w| w.request_cancel(&id, target, n.as_deref()))
            .await?;
        let deadline = std::time::Instant::now() + HOST_WAIT;
        while !query::is_cancel_done(&reader, request)? {
            if std::time::Instant::now() > deadline {
                anyhow::bail!(
                    "asked the host executing run {run_id} to cancel task {target}, but it has not \
                     done so within {} s; the request stays and is carried out when it does",
                    HOST_WAIT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    } else {
        for id in open.iter().rev() {
            ledger
                .finish_task(
                    run_id.clone(),
                    *id,
                    Status::Cancelled,
                    None,
                    Some(why.clone()),
                    Vec::new(),
                    Commit::Durable,
                )
                .await?;
        }
        if target == 1 {
            ledger
                .finish_run(run_id.clone(), Status::Cancelled, None, Some(why))
                .await?;
        }
    }
    let events = query::events(&reader, &run_id, None)?;
    let mut offered = Vec::new();
    for id in &open {
        let evs: Vec<&query::EventRow> = events.iter().filter(|e| e.task_id == *id).collect();
        offered.extend(reverts(*id, &evs));
    }
    offered.sort_by_key(|r| std::cmp::Reverse(r.seq));
    Ok(Cancelled {
        run_id,
        tasks: open,
        by_host: live,
        compensations_offered: offered,
    })
}

/// The cancellation as text.
pub fn render(c: &Cancelled) -> String {
    let mut out = format!(
        "cancelled run {} tasks {:?}{}\n",
        c.run_id,
        c.tasks,
        if c.by_host { " (by its live host)" } else { "" }
    );
    if c.compensations_offered.is_empty() {
        out.push_str("no recorded side effect to compensate\n");
    } else {
        out.push_str("side effects already made (compensations offered, not run):\n");
        for r in &c.compensations_offered {
            out.push_str(&format!(
                "  task {} seq {} {} → {}({})\n",
                r.task_id, r.seq, r.tool, r.undo, r.effect
            ));
        }
    }
    out
}
