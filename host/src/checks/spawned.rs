//! Per-task validators: a spawn request may carry validators for its child (each a
//! JSON [`ValidatorConfig`], e.g. `{"kind": "length", "min_chars": 10}`), applied to
//! that child's output in addition to the configured ones.
//!
//! They are checked at spawn (a bad one refuses the spawn with `invalid-request`) and
//! stored in the ledger's `task_validators` table before the child starts, so a
//! resumed run validates the child exactly as the original would have.

use super::{ValidatorConfig, ValidatorKind};
use crate::ledger::{self, Connection, Ledger};

/// Why a spawn request's validators were refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValidator(pub String);

/// Parse and check the validators of a spawn request. `Err` is the
/// `invalid-request` message.
pub fn parse(specs: &[String]) -> Result<Vec<ValidatorConfig>, InvalidValidator> {
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let v: ValidatorConfig = serde_json::from_str(spec)
                .map_err(|e| format!("validators[{i}] is not a validator config: {e}"))?;
            v.validate()
                .map_err(|e| format!("validators[{i}]: {e:#}"))?;
            if let ValidatorKind::Component(_) | ValidatorKind::Outcome(_) | ValidatorKind::Command(_) =
                v.kind
            {
                // The operator, not an agent, decides which components, tools and
                // programs check outputs (a command runs code on the host).
                return Err(format!(
                    "validators[{i}]: kind `{}` can only be configured by the operator ([[validators]])",
                    v.kind.name()
                ));
            }
            Ok(v)
        })
        .collect::<Result<_, String>>()
        .map_err(InvalidValidator)
}

/// Record task `task_id`'s own validators (before it starts).
pub async fn store(
    ledger: &Ledger,
    run_id: &str,
    task_id: u64,
    validators: &[ValidatorConfig],
) -> Result<(), ledger::LedgerError> {
    if validators.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_string(validators).expect("validator configs serialize to JSON");
    let run_id = run_id.to_string();
    ledger
        .write(move |w| w.store_task_validators(&run_id, task_id, &json))
        .await
}

/// The validators task `task_id` of run `run_id` carries from its spawn request
/// (none for most).
pub fn of_task(conn: &Connection, run_id: &str, task_id: u64) -> Vec<ValidatorConfig> {
    let text = ledger::validators::of_task(conn, run_id, task_id)
        .ok()
        .flatten();
    // Read like the run's config: an earlier host's flat entries too.
    text.and_then(|t| super::stored_validators(&mut serde_json::Deserializer::from_str(&t)).ok())
        .unwrap_or_default()
}
