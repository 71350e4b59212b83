//! The kinds of ledger events: [`EventKind`], and for each kind — in one place,
//! `EventKind::declared` — the name stored in `events.kind`, how replay treats it
//! ([`ReplayClass`]) and how durable its write must be ([`Durability`]).

use rusqlite::types::{FromSql, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The kind of a ledger event: `interface.function` for a guest's host call
/// (`llm.complete`, `tools.call`), or what the host recorded beside the calls
/// (`wasi.nondet`, `validation.retry`, `merge.decided`, …).
///
/// Each kind declares, in one match (`EventKind::declared`):
///
/// * its **name**, as stored in `events.kind` ([`EventKind::as_str`]). Names never
///   change: ledgers written by earlier hosts must still read.
/// * its **replay class** ([`EventKind::replay_class`]): a guest's call ([`ReplayClass::Call`])
///   or a tool intent ([`ReplayClass::Intent`]) is matched against the resumed guest's
///   calls; anything else ([`ReplayClass::Auxiliary`]) accompanies the calls and replay
///   skips it (`wasi.nondet` feeds the clock/random reads instead, `validation.retry`
///   splits a task's record into attempts).
/// * its **durability class** ([`EventKind::durability`]), for the ledger's write path:
///   * [`Durability::Effect`] — effects the world can see, or decisions that let them
///     happen: tool intents and tool results (a compensation, `recovery.compensate`,
///     is a tool result), spawns (`tasks.spawn`), and humans' decisions
///     (`approval.decided`, `review.decided`, `merge.resolved`). Run and task ends
///     are effects too, but they are rows of `runs`/`tasks`
///     ([`super::Ledger::finish_run`], [`super::Ledger::finish_task`]), not events.
///   * [`Durability::Buffered`] — everything else: LLM replies (`llm.complete`) and
///     the scheduler's decisions and attempts, trace steps and logs, clock/random
///     reads, checkpoints, waits, merges and cancels of children, validation verdicts
///     and validators' own calls (replay skips those and re-runs the validator),
///     usage, stdio, markers. Losing one in a crash costs at most re-doing work that
///     changed nothing outside the ledger.
///
/// A kind read from a ledger that this host does not know (written by a newer one) is
/// [`EventKind::Unknown`]: replay treats it as a call (so a guest that does not make
/// it diverges), and it is durable as an effect.
///
/// `EventKind` compares equal to its name as a string (`kind == "tools.call"`), for
/// tests and tools reading a ledger; the host itself names kinds by variant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    // Guest calls, by WIT interface.
    LlmComplete,
    ToolsList,
    ToolsCall,
    /// Recorded before a side-effecting `tools.call` runs.
    ToolsIntent,
    TasksSpawn,
    TasksWait,
    TasksMerge,
    TasksCancel,
    /// `tasks.take-merge`: a pending conflict of a partial join, decided and applied.
    TasksTakeMerge,
    TraceStep,
    TraceLog,
    CheckpointSave,
    CheckpointLoad,
    // Recorded beside the calls.
    /// The guest's clock and random reads since the previous call.
    WasiNondet,
    /// The scheduler's choice of model for an `llm.complete`.
    LlmDecision,
    /// A provider's failed attempt at an LLM call.
    LlmAttempt,
    LlmModelVersionChanged,
    TaskStdio,
    TaskUsage,
    TaskReopened,
    ForkCopied,
    BudgetSummary,
    ReplayDiverged,
    ApprovalRequested,
    ApprovalDecided,
    /// A compensating tool call run by recovery or an outcome rollback.
    RecoveryCompensate,
    ValidationResult,
    ValidationJudge,
    /// Starts a new attempt of the task.
    ValidationRetry,
    ValidationOutcome,
    ValidationRollback,
    /// A validator component's call (the original kind inside its request).
    ValidatorCall,
    ReviewRequested,
    ReviewDecided,
    MergeDecided,
    MergeLlm,
    MergeResolved,
    /// A kind this host does not know, read from a ledger.
    Unknown(UnknownKind),
}

/// The name of a kind this host does not know. Only [`EventKind::parse`] makes one,
/// so it never holds the name of a known kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UnknownKind(String);

impl UnknownKind {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How replay treats the recorded events of a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayClass {
    /// A guest's host call: matched against the resumed guest's next call (kind and
    /// identity hash) and answered from the record. Counts toward a task's `host_calls`.
    Call,
    /// The intent recorded before a side-effecting call: matched like a call (it is
    /// followed by the call's result, or the call is in doubt), but not a call itself.
    Intent,
    /// Accompanies the calls; replay skips it.
    Auxiliary,
}

/// How durable an event's write must be (see [`EventKind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// The world can see it: on disk before the host acts on it or goes on.
    Effect,
    /// May be written with a later commit.
    Buffered,
}

impl EventKind {
    /// Every kind this host knows.
    pub const ALL: &[EventKind] = &[
        EventKind::LlmComplete,
        EventKind::ToolsList,
        EventKind::ToolsCall,
        EventKind::ToolsIntent,
        EventKind::TasksSpawn,
        EventKind::TasksWait,
        EventKind::TasksMerge,
        EventKind::TasksCancel,
        EventKind::TasksTakeMerge,
        EventKind::TraceStep,
        EventKind::TraceLog,
        EventKind::CheckpointSave,
        EventKind::CheckpointLoad,
        EventKind::WasiNondet,
        EventKind::LlmDecision,
        EventKind::LlmAttempt,
        EventKind::LlmModelVersionChanged,
        EventKind::TaskStdio,
        EventKind::TaskUsage,
        EventKind::TaskReopened,
        EventKind::ForkCopied,
        EventKind::BudgetSummary,
        EventKind::ReplayDiverged,
        EventKind::ApprovalRequested,
        EventKind::ApprovalDecided,
        EventKind::RecoveryCompensate,
        EventKind::ValidationResult,
        EventKind::ValidationJudge,
        EventKind::ValidationRetry,
        EventKind::ValidationOutcome,
        EventKind::ValidationRollback,
        EventKind::ValidatorCall,
        EventKind::ReviewRequested,
        EventKind::ReviewDecided,
        EventKind::MergeDecided,
        EventKind::MergeLlm,
        EventKind::MergeResolved,
    ];

    /// What a known kind declares: its stored name, its replay class and its
    /// durability class. `None` for [`EventKind::Unknown`].
    fn declared(&self) -> Option<(&'static str, ReplayClass, Durability)> {
        use Durability::{Buffered, Effect};
        use ReplayClass::{Auxiliary, Call, Intent};
        Some(match self {
            EventKind::LlmComplete => ("llm.complete", Call, Buffered),
            EventKind::ToolsList => ("tools.list", Call, Buffered),
            EventKind::ToolsCall => ("tools.call", Call, Effect),
            EventKind::ToolsIntent => ("tools.intent", Intent, Effect),
            EventKind::TasksSpawn => ("tasks.spawn", Call, Effect),
            EventKind::TasksWait => ("tasks.wait", Call, Buffered),
            EventKind::TasksMerge => ("tasks.merge", Call, Buffered),
            EventKind::TasksCancel => ("tasks.cancel", Call, Buffered),
            EventKind::TasksTakeMerge => ("tasks.take_merge", Call, Buffered),
            EventKind::TraceStep => ("trace.step", Call, Buffered),
            EventKind::TraceLog => ("trace.log", Call, Buffered),
            EventKind::CheckpointSave => ("checkpoint.save", Call, Buffered),
            EventKind::CheckpointLoad => ("checkpoint.load", Call, Buffered),
            EventKind::WasiNondet => ("wasi.nondet", Auxiliary, Buffered),
            EventKind::LlmDecision => ("llm.decision", Auxiliary, Buffered),
            EventKind::LlmAttempt => ("llm.attempt", Auxiliary, Buffered),
            EventKind::LlmModelVersionChanged => ("llm.model_version_changed", Auxiliary, Buffered),
            EventKind::TaskStdio => ("task.stdio", Auxiliary, Buffered),
            EventKind::TaskUsage => ("task.usage", Auxiliary, Buffered),
            EventKind::TaskReopened => ("task.reopened", Auxiliary, Buffered),
            EventKind::ForkCopied => ("fork.copied", Auxiliary, Buffered),
            EventKind::BudgetSummary => ("budget.summary", Auxiliary, Buffered),
            EventKind::ReplayDiverged => ("replay.diverged", Auxiliary, Buffered),
            EventKind::ApprovalRequested => ("approval.requested", Auxiliary, Buffered),
            EventKind::ApprovalDecided => ("approval.decided", Auxiliary, Effect),
            EventKind::RecoveryCompensate => ("recovery.compensate", Auxiliary, Effect),
            EventKind::ValidationResult => ("validation.result", Auxiliary, Buffered),
            EventKind::ValidationJudge => ("validation.judge", Auxiliary, Buffered),
            EventKind::ValidationRetry => ("validation.retry", Auxiliary, Buffered),
            EventKind::ValidationOutcome => ("validation.outcome", Auxiliary, Buffered),
            EventKind::ValidationRollback => ("validation.rollback", Auxiliary, Buffered),
            EventKind::ValidatorCall => ("validator.call", Auxiliary, Buffered),
            EventKind::ReviewRequested => ("review.requested", Auxiliary, Buffered),
            EventKind::ReviewDecided => ("review.decided", Auxiliary, Effect),
            EventKind::MergeDecided => ("merge.decided", Auxiliary, Buffered),
            EventKind::MergeLlm => ("merge.llm", Auxiliary, Buffered),
            EventKind::MergeResolved => ("merge.resolved", Auxiliary, Effect),
            EventKind::Unknown(_) => return None,
        })
    }

    /// The kind stored as `name`: a known kind, or [`EventKind::Unknown`].
    pub fn parse(name: &str) -> EventKind {
        EventKind::ALL
            .iter()
            .find(|k| k.as_str() == name)
            .cloned()
            .unwrap_or_else(|| EventKind::Unknown(UnknownKind(name.to_string())))
    }

    /// The name stored in `events.kind`.
    pub fn as_str(&self) -> &str {
        match self.declared() {
            Some((name, _, _)) => name,
            None => match self {
                EventKind::Unknown(u) => u.as_str(),
                _ => unreachable!("every known kind declares its name"),
            },
        }
    }

    /// How replay treats events of this kind (an unknown kind as a call).
    pub fn replay_class(&self) -> ReplayClass {
        self.declared()
            .map_or(ReplayClass::Call, |(_, class, _)| class)
    }

    /// Whether replay matches events of this kind against the guest's calls (a call
    /// or an intent) rather than skipping them.
    pub fn is_replayed(&self) -> bool {
        self.replay_class() != ReplayClass::Auxiliary
    }

    /// How durable a write of this kind must be (an unknown kind as an effect).
    pub fn durability(&self) -> Durability {
        self.declared()
            .map_or(Durability::Effect, |(_, _, durability)| durability)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for EventKind {
    fn from(name: &str) -> EventKind {
        EventKind::parse(name)
    }
}

impl From<String> for EventKind {
    fn from(name: String) -> EventKind {
        match EventKind::parse(&name) {
            EventKind::Unknown(_) => EventKind::Unknown(UnknownKind(name)),
            known => known,
        }
    }
}

impl PartialEq<str> for EventKind {
    fn eq(&self, name: &str) -> bool {
        self.as_str() == name
    }
}

impl PartialEq<&str> for EventKind {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EventKind, D::Error> {
        Ok(String::deserialize(d)?.into())
    }
}

impl ToSql for EventKind {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(
            self.as_str().as_bytes(),
        )))
    }
}

impl FromSql for EventKind {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<EventKind> {
        Ok(EventKind::parse(value.as_str()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `(name, …)` entries of [`EventKind::declared`], read from this file.
    fn declared_names() -> Vec<&'static str> {
        include_str!("kinds.rs")
            .lines()
            .filter_map(|l| l.split_once(" => (\"").map(|(_, rest)| rest))
            .filter_map(|rest| rest.split_once('"').map(|(name, _)| name))
            .collect()
    }

    #[test]
    fn every_declared_kind_is_listed_and_parses_back() {
        let names = declared_names();
        assert_eq!(names.len(), EventKind::ALL.len(), "{names:?}");
        for name in &names {
            let kind = EventKind::parse(name);
            assert!(
                !matches!(kind, EventKind::Unknown(_)),
                "{name} is not in ALL"
            );
            assert_eq!(kind.as_str(), *name);
        }
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "a name is declared twice");
    }

    #[test]
    fn unknown_kinds_keep_their_name_and_replay_as_calls() {
        let k = EventKind::from("agents.spawn".to_string());
        assert_eq!(k.as_str(), "agents.spawn");
        assert_eq!(k.replay_class(), ReplayClass::Call);
        assert_eq!(k.durability(), Durability::Effect);
        assert_eq!(EventKind::from("tools.call"), EventKind::ToolsCall);
        assert_eq!(
            serde_json::to_value(EventKind::LlmModelVersionChanged).unwrap(),
            "llm.model_version_changed"
        );
        let back: EventKind = serde_json::from_value(serde_json::json!("trace.step")).unwrap();
        assert_eq!(back, EventKind::TraceStep);
    }

    #[test]
    fn replay_and_durability_classes() {
        // What replay skipped before kinds were typed (the `AUXILIARY` list).
        let auxiliary = [
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
        for k in EventKind::ALL {
            assert_eq!(
                !k.is_replayed(),
                auxiliary.contains(&k.as_str()),
                "{k}: replayed or skipped as before"
            );
        }
        let intents: Vec<_> = EventKind::ALL
            .iter()
            .filter(|k| k.replay_class() == ReplayClass::Intent)
            .collect();
        assert_eq!(intents, [&EventKind::ToolsIntent]);
        let effects: Vec<&str> = EventKind::ALL
            .iter()
            .filter(|k| k.durability() == Durability::Effect)
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            effects,
            [
                "tools.call",
                "tools.intent",
                "tasks.spawn",
                "approval.decided",
                "recovery.compensate",
                "review.decided",
                "merge.resolved"
            ]
        );
    }

    /// No kind is named by a string outside this file: the host names kinds by variant.
    #[test]
    fn no_kind_literal_outside_this_file() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        let mut dirs = vec![src];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") || path.ends_with("ledger/kinds.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for k in EventKind::ALL {
                    for quoted in [format!("\"{k}\""), format!("'{k}'")] {
                        if text.contains(&quoted) {
                            found.push(format!("{}: {quoted}", path.display()));
                        }
                    }
                }
            }
        }
        assert!(found.is_empty(), "kinds named by string: {found:#?}");
    }
}
