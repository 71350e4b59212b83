//! `agentflow serve`: the web dashboard. One axum server, its pages and assets built
//! into the binary (plain HTML, CSS and one vanilla JS file, `assets/`); the pages
//! draw what the JSON API under `/api/` reads from the ledger:
//!
//! * `/` — the runs, filtered by status and agent ([`api`]);
//! * `/runs/{id}` — a run as the operator's cost tree, its merges, side effects and
//!   pending decisions ([`run_page`]), kept current over server-sent events ([`live`])
//!   by polling the ledger file, so runs of other processes show too;
//! * `/decisions` — every pending approval, review and conflict, decided from the
//!   browser through the functions the CLI calls ([`decide`]);
//! * `/models` — the catalog with breaker, quota, latency p50/p95 and quality by day;
//! * `POST /api/submit` — queue a run for a cluster's workers ([`submit`]).
//!
//! Guards ([`guard`]): loopback by default, a bearer token required off loopback,
//! a per-server CSRF token on every POST, and a `Host` check against DNS rebinding.
//! Every text a guest wrote reaches the page as text (`textContent`), never as markup,
//! and the CSP forbids inline scripts.

pub mod api;
pub mod decide;
pub mod guard;
pub mod live;
pub mod run_page;
pub mod submit;

use crate::config::HostConfig;
use crate::ledger::existing;
use crate::runtime::Runtime;
use axum::Router;
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// How `agentflow serve` was asked to serve.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The ledger shown (it must exist).
    pub db: PathBuf,
    /// Where to listen: loopback unless `token` is set.
    pub addr: SocketAddr,
    /// The bearer token every request must carry (required off loopback).
    pub token: Option<String>,
    /// The host configuration whose model catalog the models page shows.
    pub config: HostConfig,
}

/// What every handler shares.
pub struct AppState {
    pub db: PathBuf,
    pub config: HostConfig,
    pub token: Option<String>,
    /// The per-server token every POST must carry (`X-AgentFlow-CSRF`).
    pub csrf: String,
    /// The page shell with the CSRF token in it.
    pub page: String,
    /// The engine that checks submitted components, built on the first submit.
    runtime: std::sync::OnceLock<Arc<Runtime>>,
}

impl AppState {
    /// The engine that checks submitted components (built once, with `config`'s
    /// runtime settings and compile cache).
    pub fn runtime(&self) -> anyhow::Result<Arc<Runtime>> {
        if let Some(runtime) = self.runtime.get() {
            return Ok(runtime.clone());
        }
        let runtime = Runtime::new(Some(self.config.cache_dir()), &self.config.runtime)?;
        Ok(self.runtime.get_or_init(|| runtime).clone())
    }
}

/// The shared state of the handlers.
pub type State = Arc<AppState>;

/// The page shell; `{{CSRF}}` is replaced by the server's CSRF token.
const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Refuse an address a remote client could reach when no token guards it.
pub fn check_bind(addr: SocketAddr, token: Option<&str>) -> anyhow::Result<()> {
    if let Some(t) = token
        && t.len() < 16
    {
        anyhow::bail!("--token must be at least 16 characters (a random string)");
    }
    if !addr.ip().is_loopback() && token.is_none() {
        anyhow::bail!(
            "refusing to serve on {addr} without --token: an address off loopback shows \
             the ledger and takes decisions for anyone who reaches it. Pass --token T \
             (at least 16 random characters; clients send `Authorization: Bearer T`, a \
             browser opens http://HOST/?token=T once), or listen on 127.0.0.1"
        );
    }
    Ok(())
}

/// A fresh random token (32 hex digits).
fn random_token() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

/// The dashboard's routes over `state`.
pub fn router(state: State) -> Router {
    let page = || get(api::page);
    Router::new()
        .route("/", page())
        .route("/runs/{id}", page())
        .route("/decisions", page())
        .route("/models", page())
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript", APP_JS) }),
        )
        .route(
            "/assets/style.css",
            get(|| async { asset("text/css", STYLE_CSS) }),
        )
        .route("/api/runs", get(api::runs))
        .route("/api/runs/{id}", get(api::run))
        .route("/api/runs/{id}/tasks/{task}/events", get(api::task_events))
        .route("/api/runs/{id}/live", get(live::run))
        .route("/api/live", get(live::ledger))
        .route("/api/decisions", get(api::decisions))
        .route("/api/models", get(api::models))
        .route("/metrics", get(api::metrics))
        .route("/api/approvals/{id}/{decision}", post(decide::approval))
        .route("/api/reviews/{id}/{decision}", post(decide::review))
        .route("/api/conflicts/{id}/resolve", post(decide::conflict))
        .route(
            "/api/submit",
            post(submit::submit)
                .layer(axum::extract::DefaultBodyLimit::max(submit::MAX_BODY_BYTES)),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> impl axum::response::IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, content_type),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// The state for serving `options`: a fresh CSRF token, the page shell.
pub fn state(options: &ServeOptions) -> anyhow::Result<State> {
    check_bind(options.addr, options.token.as_deref())?;
    // Opening it once through the writer creates or migrates the schema (the view
    // `agent_traces` included); the handlers then read through read-only connections.
    drop(existing::reader(&options.db)?);
    let csrf = random_token();
    Ok(Arc::new(AppState {
        db: options.db.clone(),
        config: options.config.clone(),
        token: options.token.clone(),
        page: INDEX_HTML.replace("{{CSRF}}", &csrf),
        csrf,
        runtime: std::sync::OnceLock::new(),
    }))
}

/// Serve the dashboard until the process is stopped (Ctrl-C ends it). `on_listen`
/// gets the address actually bound (with port 0, the one the system chose).
pub async fn serve(
    options: ServeOptions,
    on_listen: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let state = state(&options)?;
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", options.addr))?;
    on_listen(listener.local_addr()?);
    let server = axum::serve(listener, router(state));
    tokio::select! {
        result = server => result.map_err(|e| anyhow::anyhow!("the dashboard server stopped: {e}")),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
