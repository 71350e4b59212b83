//! The kinds of ledger events, and which of them replay matches against a guest's calls.

/// Events that accompany a host call but are not calls themselves.
pub const AUXILIARY: &[&str] = &[
    "wasi.nondet",
    "llm.decision",
    "llm.attempt",
    "llm.model_version_changed",
    "task.stdio",
    "task.usage",
    "task.reopened",
    "fork.copied",
    "budget.summary",
    "replay.diverged",
    "approval.requested",
    "approval.decided",
    "recovery.compensate",
    "validation.result",
    "validation.judge",
    "validation.retry",
    "validation.outcome",
    "validation.rollback",
    "validator.call",
    "review.requested",
    "review.decided",
    "merge.decided",
    "merge.llm",
    "merge.resolved",
];
