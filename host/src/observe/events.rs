//! `agentflow events <run> [--task N]`: a run's record one event a line — task, seq,
//! kind, status, model, tokens, cost — the numbering `agentflow fork --at` and
//! `agentflow diff` use.

use super::inspect::{group_digits, usd};
use crate::ledger::query_events::EventLine;
use crate::table::Table;

/// The events as a table.
pub fn render(events: &[EventLine]) -> String {
    let mut table = Table::new()
        .left("task")
        .right("seq")
        .left("kind")
        .left("status")
        .left("model")
        .right("tokens")
        .right("cost")
        .right("time");
    for e in events {
        table.row([
            e.task_id.to_string(),
            e.seq.to_string(),
            e.kind.to_string(),
            e.status.clone(),
            e.model.clone().unwrap_or_else(|| "-".into()),
            group_digits(e.tokens_in + e.tokens_out),
            usd(e.cost_usd),
            format!("{:.3}s", (e.finished_at - e.started_at) as f64 / 1000.0),
        ]);
    }
    table.render()
}
