//! Fault injection for crash tests: make the host die hard at a chosen moment.
//!
//! * `AGENTFLOW_CRASH_AFTER_EVENTS=N` — abort the process (no unwinding, no flushing,
//!   like SIGKILL) right after the commit that brings the number of events this
//!   process appended to N or more (the writer ends its group at the job that reaches
//!   N, so buffered writes after it are not committed).
//! * `AGENTFLOW_CRASH_AT=buffered-unflushed` — each buffered write is a hit, taken
//!   after it ran in the writer's open transaction, before that commits: the crash
//!   loses it (and every write after it).
//! * `AGENTFLOW_CRASH_AT=barrier` — each durable write arriving while buffered writes
//!   wait uncommitted is a hit, taken before either is committed.
//! * `AGENTFLOW_CRASH_AT=POINT` — abort at a named point:
//!   `tool-effect` (a side-effecting tool has acted, its result is not yet recorded),
//!   `spawn-created` (a child task row exists, the parent's spawn is not yet recorded),
//!   `root-finished` (the root task ended, the run's end is not yet recorded),
//!   `merge-decided` (a merge decision is committed, not yet applied to the parent's view).
//!   `AGENTFLOW_CRASH_AT_COUNT=K` picks the K-th time the point is reached (default 1).
//!
//! Both are read once, at first use. Unset, they cost one relaxed atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Plan {
    after_events: Option<u64>,
    at_point: Option<String>,
    at_count: u64,
}

static PLAN: OnceLock<Plan> = OnceLock::new();
static EVENTS: AtomicU64 = AtomicU64::new(0);
static POINT_HITS: AtomicU64 = AtomicU64::new(0);

fn plan() -> &'static Plan {
    PLAN.get_or_init(|| Plan {
        after_events: std::env::var("AGENTFLOW_CRASH_AFTER_EVENTS")
            .ok()
            .and_then(|v| v.parse().ok()),
        at_point: std::env::var("AGENTFLOW_CRASH_AT")
            .ok()
            .filter(|v| !v.is_empty()),
        at_count: std::env::var("AGENTFLOW_CRASH_AT_COUNT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
    })
}

fn die(why: &str) -> ! {
    eprintln!("agentflow: fault injection: aborting {why}");
    std::process::abort();
}

/// Whether committing `uncommitted` more events would reach the
/// `AGENTFLOW_CRASH_AFTER_EVENTS` limit: the writer then commits its group at once,
/// so the crash comes right after the N-th event even when buffered writes would
/// otherwise have joined the group.
pub fn crash_due(uncommitted: u64) -> bool {
    plan()
        .after_events
        .is_some_and(|limit| EVENTS.load(Ordering::SeqCst) + uncommitted >= limit)
}

/// Called by the ledger writer after each successful commit of `n` events.
pub fn events_committed(n: u64) {
    if n == 0 {
        return;
    }
    if let Some(limit) = plan().after_events {
        let total = EVENTS.fetch_add(n, Ordering::SeqCst) + n;
        if total >= limit {
            die(&format!(
                "after {total} ledger events (AGENTFLOW_CRASH_AFTER_EVENTS={limit})"
            ));
        }
    }
}

/// A named crash point.
pub fn point(name: &str) {
    let p = plan();
    if p.at_point.as_deref() == Some(name) {
        let hits = POINT_HITS.fetch_add(1, Ordering::SeqCst) + 1;
        if hits >= p.at_count {
            die(&format!("at point `{name}` (hit {hits})"));
        }
    }
}
