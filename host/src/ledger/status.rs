//! The status columns of the ledger as enums: runs and tasks ([`Status`]), approvals
//! ([`ApprovalStatus`]), reviews ([`ReviewStatus`]) and merges ([`MergeStatus`]).
//! Each is stored (and shown, in `--json` too) as its lowercase name; a row is parsed
//! when it is read, and a value the schema's `CHECK` does not allow is an error.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A status enum stored as its lowercase name: `as_str`, `parse`, `Display` and the
/// SQL conversions. It does not compare equal to strings: code names statuses by variant.
macro_rules! stored_status {
    ($(#[$doc:meta])* $name:ident: $what:literal { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every value.
            pub const ALL: &[$name] = &[$($name::$variant),*];

            /// The value stored in the `status` column.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// The status stored as `s`, if it is one.
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($text => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::Borrowed(ValueRef::Text(self.as_str().as_bytes())))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<$name> {
                let s = value.as_str()?;
                $name::parse(s)
                    .ok_or_else(|| FromSqlError::Other(format!("unknown {} `{s}`", $what).into()))
            }
        }
    };
}

stored_status! {
    /// Final or current state of a run or task.
    Status: "run or task status" {
        Pending = "pending",
        Running = "running",
        /// Not stored: how a host that stopped while every task waited for a human
        /// (`run --detach`) reports the run, which stays `running` for `resume`.
        Waiting = "waiting",
        Completed = "completed",
        Failed = "failed",
        Cancelled = "cancelled",
        /// Shown, never stored: a `running` run whose host stopped (its lease expired
        /// or its process is gone; [`super::leases`]). `agentflow resume` continues it.
        Interrupted = "interrupted",
    }
}

impl Status {
    /// Whether a task (or run) with this status has ended.
    pub fn is_finished(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }
}

stored_status! {
    /// Where a task's approval request stands.
    ApprovalStatus: "approval status" {
        Pending = "pending",
        Approved = "approved",
        Denied = "denied",
    }
}

stored_status! {
    /// Where a human review of a failed output stands.
    ReviewStatus: "review status" {
        Pending = "pending",
        /// Run the task again, with the reviewer's note as feedback.
        Retry = "retry",
        Rejected = "rejected",
    }
}

stored_status! {
    /// Where the merge of one subject stands.
    MergeStatus: "merge status" {
        /// Decided and merged without a human.
        Merged = "merged",
        /// A human must decide.
        Pending = "pending",
        /// A human did.
        Resolved = "resolved",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: Serialize + for<'a> Deserialize<'a> + PartialEq + fmt::Debug + Copy>(
        all: &[T],
        name: impl Fn(T) -> &'static str,
        parse: impl Fn(&str) -> Option<T>,
    ) {
        for &v in all {
            assert_eq!(serde_json::to_value(v).unwrap(), name(v), "serde name");
            let back: T = serde_json::from_value(serde_json::json!(name(v))).unwrap();
            assert_eq!(back, v);
            assert_eq!(parse(name(v)), Some(v));
        }
        assert_eq!(parse("nonsense"), None);
    }

    #[test]
    fn stored_names_are_the_serde_names() {
        check(Status::ALL, Status::as_str, Status::parse);
        check(
            ApprovalStatus::ALL,
            ApprovalStatus::as_str,
            ApprovalStatus::parse,
        );
        check(ReviewStatus::ALL, ReviewStatus::as_str, ReviewStatus::parse);
        check(MergeStatus::ALL, MergeStatus::as_str, MergeStatus::parse);
    }

    #[test]
    fn an_unknown_stored_status_is_an_error() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let read = |s: &str| conn.query_row("SELECT ?1", [s], |r| r.get::<_, Status>(0));
        assert_eq!(read("failed").unwrap(), Status::Failed);
        assert!(read("exploded").is_err());
    }
}
