//! The dashboard's read side: the page shell and the JSON the pages draw — runs,
//! a run's page, a task's events, the pending decisions, the models. Each request
//! reads through its own read-only connection on a blocking thread (WAL lets it read
//! while hosts write).

use super::State;
use super::run_page::{self, Pending, RunPage};
use crate::ledger::query::{self, RunRow};
use crate::ledger::query_events::{self, EventLine};
use crate::ledger::{Connection, Status, dashboard};
use crate::observe::models::{self, ModelView};
use crate::scheduler::perf;
use axum::Json;
use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// An error as the API returns it: a status and `{"error": "…"}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

/// `Ok` or an API error.
pub type ApiResult<T> = Result<T, ApiError>;

fn not_found(what: String) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, what)
}

/// Run `f` on a read-only connection to the ledger, on a blocking thread.
pub async fn read<T: Send + 'static>(
    state: &State,
    f: impl FnOnce(&Connection) -> anyhow::Result<T> + Send + 'static,
) -> ApiResult<T> {
    let db = state.db.clone();
    tokio::task::spawn_blocking(move || f(&dashboard::open_page_reader(&db)?))
        .await
        .map_err(|e| anyhow::anyhow!("reader thread: {e}"))?
        .map_err(ApiError::from)
}

/// Every page: one shell whose script draws what the path names.
pub async fn page(axum::extract::State(state): axum::extract::State<State>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(state.page.clone()),
    )
        .into_response()
}

/// `GET /api/runs?status=&agent=&limit=`.
#[derive(Deserialize)]
pub struct RunsQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// A run of the list, with its duration.
#[derive(Serialize)]
pub struct RunListRow {
    #[serde(flatten)]
    run: RunRow,
    /// Until now for an unfinished run.
    duration_ms: i64,
}

/// The runs, newest first, as `agentflow runs` selects them.
pub async fn runs(
    axum::extract::State(state): axum::extract::State<State>,
    Query(q): Query<RunsQuery>,
) -> ApiResult<Json<Vec<RunListRow>>> {
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(Status::parse(s).filter(|s| *s != Status::Pending).ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("unknown status `{s}`: running, interrupted, waiting, completed, failed or cancelled"),
            )
        })?),
    };
    let limit = q.limit.unwrap_or(100).min(10_000);
    // `waiting` is never stored (a `running` run whose host stopped while a human
    // decision is pending): select the unfinished runs, then keep those.
    let waiting = status == Some(Status::Waiting);
    let filter = query::RunFilter {
        limit: if waiting { usize::MAX } else { limit },
        since_ms: None,
        status: if waiting {
            Some(Status::Running)
        } else {
            status
        },
        agent: q.agent.filter(|a| !a.is_empty()),
    };
    let runs = read(&state, move |conn| {
        let mut runs = match waiting {
            // `running` would drop the waiting ones: read them all, unfiltered.
            true => query::runs(
                conn,
                &query::RunFilter {
                    status: None,
                    ..filter
                },
            )?,
            false => query::runs(conn, &filter)?,
        };
        if waiting {
            runs.retain(|r| r.status == Status::Waiting);
            runs.truncate(limit);
        }
        Ok(runs)
    })
    .await?;
    let now = crate::ledger::now_ms();
    Ok(Json(
        runs.into_iter()
            .map(|run| RunListRow {
                duration_ms: run.finished_at.unwrap_or(now) - run.started_at,
                run,
            })
            .collect(),
    ))
}

/// `GET /api/runs/{id}`: the run page.
pub async fn run(
    axum::extract::State(state): axum::extract::State<State>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunPage>> {
    let key = id.clone();
    read(&state, move |conn| run_page::load(conn, &key))
        .await?
        .map(Json)
        .ok_or_else(|| not_found(format!("no run `{id}` in the ledger")))
}

/// `GET /api/runs/{id}/tasks/{task}/events`: one task's events, as `agentflow events
/// RUN --task T` lists them.
pub async fn task_events(
    axum::extract::State(state): axum::extract::State<State>,
    Path((id, task)): Path<(String, u64)>,
) -> ApiResult<Json<Vec<EventLine>>> {
    let key = id.clone();
    read(&state, move |conn| {
        let Some(run) = query::run(conn, &key)? else {
            return Ok(None);
        };
        Ok(Some(query_events::event_lines(
            conn,
            &run.run_id,
            Some(task),
        )?))
    })
    .await?
    .map(Json)
    .ok_or_else(|| not_found(format!("no run `{id}` in the ledger")))
}

/// `GET /api/decisions`: every pending approval, review and conflict.
pub async fn decisions(
    axum::extract::State(state): axum::extract::State<State>,
) -> ApiResult<Json<Pending>> {
    read(&state, |conn| run_page::pending(conn, None))
        .await
        .map(Json)
}

/// A model of the models page: `agentflow models`' view, latency percentiles, and its
/// quality scores and calls by day.
#[derive(Serialize)]
pub struct ModelPage {
    #[serde(flatten)]
    model: ModelView,
    latency: dashboard::Latency,
    days: Vec<dashboard::Day>,
}

/// `GET /api/models`.
pub async fn models(
    axum::extract::State(state): axum::extract::State<State>,
) -> ApiResult<Json<Vec<ModelPage>>> {
    let config = state.config.clone();
    let db = state.db.clone();
    read(&state, move |conn| {
        let views = models::load(&config, &db)?;
        let perf_path = perf::path_for_ledger(&db, &config.cache_dir());
        let (mut perf_latency, mut days) = Default::default();
        if perf_path.exists() {
            let perf = query::open_reader(&perf_path)?;
            perf_latency = dashboard::perf_latencies(&perf)?;
            days = dashboard::perf_days(&perf)?;
        }
        let mut ledger_latency = dashboard::ledger_latencies(conn)?;
        Ok(views
            .into_iter()
            .map(|model| {
                let name = &model.spec.name;
                let latency = perf_latency
                    .remove(name)
                    .or_else(|| ledger_latency.remove(name))
                    .unwrap_or_default();
                ModelPage {
                    days: days.remove(name).unwrap_or_default(),
                    latency,
                    model,
                }
            })
            .collect())
    })
    .await
    .map(Json)
}

/// `GET /metrics`: the ledger's metrics as Prometheus text
/// ([`crate::observe::metrics_export::prometheus_text`]), for a scraper. Behind the
/// same guard as every route: with `--token`, the scraper sends the bearer token.
pub async fn metrics(
    axum::extract::State(state): axum::extract::State<State>,
) -> ApiResult<Response> {
    use crate::observe::metrics_export::{PROMETHEUS_CONTENT_TYPE, prometheus_text};
    let text = read(&state, |conn| Ok(prometheus_text(conn)?)).await?;
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], text).into_response())
}
