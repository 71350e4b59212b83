//! Human decisions from the browser: the POSTs behind the approve/deny, retry/reject
//! and resolve buttons. Each calls the library function its CLI command calls
//! (`agentflow approve|deny|retry|reject|resolve`) on the ledger opened for writing,
//! so the same events result; the CSRF check is [`super::guard`]'s.

use super::State;
use super::api::{ApiError, ApiResult};
use crate::attempts::review;
use crate::ledger::{Ledger, existing, leases};
use crate::merge::resolve::{self, Decision};
use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

/// The body of a decision: an optional note (the feedback of a retry).
#[derive(Debug, Default, Deserialize)]
pub struct DecideBody {
    #[serde(default)]
    pub note: Option<String>,
}

/// The body of a resolution: one task's version, or a text.
#[derive(Debug, Deserialize)]
pub struct ResolveBody {
    #[serde(default)]
    pub take: Option<u64>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

/// What a decision did, and who continues the run.
#[derive(Debug, Serialize)]
pub struct Decided {
    pub run_id: String,
    pub task_id: u64,
    /// A live host continues the run; otherwise `agentflow resume` must.
    pub continued_by_host: bool,
    /// What happens next, in a sentence.
    pub next: String,
}

/// Open the ledger for writing, run `f` on a blocking thread, checkpoint the WAL (as
/// the CLI's `with_ledger` does), and say who continues the run it decided for.
async fn with_ledger<T: Send + 'static>(
    state: &State,
    f: impl FnOnce(&Ledger) -> anyhow::Result<Option<T>> + Send + 'static,
    run_task: impl FnOnce(&T) -> (String, u64) + Send + 'static,
) -> ApiResult<(T, Decided)> {
    let db = state.db.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Option<(T, Decided)>> {
        let ledger = existing::open(&db)?;
        let Some(result) = f(&ledger)? else {
            return Ok(None);
        };
        if let Err(e) = ledger.checkpoint(std::time::Duration::from_secs(5)) {
            tracing::warn!(error = %e, "cannot checkpoint the ledger after a decision");
        }
        let (run_id, task_id) = run_task(&result);
        let live = leases::live(&ledger.reader()?, &run_id)?.is_some();
        let next = if live {
            format!("the host running run {run_id} continues it")
        } else {
            format!(
                "no host is running run {run_id}: continue it with `agentflow resume {run_id} --db {}`",
                db.display()
            )
        };
        Ok(Some((
            result,
            Decided {
                run_id,
                task_id,
                continued_by_host: live,
                next,
            },
        )))
    })
    .await
    .map_err(|e| anyhow::anyhow!("decision thread: {e}"))?
    .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("{e:#}")))?
    .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, String::new()))
}

fn no_pending(what: &str, id: u64) -> impl FnOnce(ApiError) -> ApiError {
    let what = what.to_string();
    move |e| match e.0 {
        StatusCode::NOT_FOUND => ApiError(
            StatusCode::NOT_FOUND,
            format!("no pending {what} {id} (already decided, or its task ended)"),
        ),
        _ => e,
    }
}

/// `POST /api/approvals/{id}/approve|deny`: `agentflow approve|deny ID`.
pub async fn approval(
    axum::extract::State(state): axum::extract::State<State>,
    Path((id, decision)): Path<(u64, String)>,
    Json(body): Json<DecideBody>,
) -> ApiResult<Json<Decided>> {
    let approve = match decision.as_str() {
        "approve" => true,
        "deny" => false,
        other => return Err(unknown_decision(other, "approve or deny")),
    };
    let (_, decided) = with_ledger(
        &state,
        move |l| Ok(l.decide_approval_blocking(id, approve, body.note)?),
        |(run, task)| (run.clone(), *task),
    )
    .await
    .map_err(no_pending("approval", id))?;
    Ok(Json(decided))
}

/// `POST /api/reviews/{id}/retry|reject`: `agentflow retry|reject ID`.
pub async fn review(
    axum::extract::State(state): axum::extract::State<State>,
    Path((id, decision)): Path<(u64, String)>,
    Json(body): Json<DecideBody>,
) -> ApiResult<Json<Decided>> {
    let retry = match decision.as_str() {
        "retry" => true,
        "reject" => false,
        other => return Err(unknown_decision(other, "retry or reject")),
    };
    let (_, decided) = with_ledger(
        &state,
        move |l| Ok(review::decide_blocking(l, id, retry, body.note)?),
        |(run, task)| (run.clone(), *task),
    )
    .await
    .map_err(no_pending("review", id))?;
    Ok(Json(decided))
}

/// `POST /api/conflicts/{id}/resolve` with `{"take": TASK}` or `{"text": "…"}`:
/// `agentflow resolve ID --take TASK | --file F`.
pub async fn conflict(
    axum::extract::State(state): axum::extract::State<State>,
    Path(id): Path<u64>,
    Json(body): Json<ResolveBody>,
) -> ApiResult<Json<Decided>> {
    let decision = match (body.take, body.text) {
        (Some(task), None) => Decision::Take(task),
        (None, Some(text)) => Decision::Text(text),
        _ => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "give one of `take` (a task id) or `text`".into(),
            ));
        }
    };
    let note = body.note;
    let (_, decided) = with_ledger(
        &state,
        move |l| resolve::resolve(l, id, decision, note).map(Some),
        |row| (row.run_id.clone(), row.parent_task),
    )
    .await?;
    Ok(Json(decided))
}

fn unknown_decision(what: &str, expected: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("unknown decision `{what}`: {expected}"),
    )
}
