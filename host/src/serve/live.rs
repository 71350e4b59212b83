//! Live pages: server-sent events telling a page that what it shows changed, so it
//! reloads its JSON. The ledger file is the only source: every [`POLL`] a read-only
//! connection compares a fingerprint of the run (its newest event, its tasks'
//! statuses, its pending decisions — [`dashboard::run_fingerprint`]) with the last
//! one, so runs that another process on the same ledger drives show up as they go.
//!
//! The stream sends `change` (data: the fingerprint) first and at each change; a
//! `gone` event when the run is not in the ledger.

use super::State;
use super::api::ApiResult;
use crate::ledger::{Connection, dashboard, query};
use axum::extract::Path;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use std::convert::Infallible;
use std::time::Duration;

/// How often a live page's fingerprint is read.
pub const POLL: Duration = Duration::from_millis(250);

/// What a live stream watches.
#[derive(Clone)]
enum Watch {
    Run(String),
    Ledger,
}

/// One stream's state between polls.
struct Poller {
    db: std::path::PathBuf,
    watch: Watch,
    conn: Option<Connection>,
    /// The last fingerprint sent (`Some(None)`: the run was not there).
    last: Option<Option<String>>,
}

impl Poller {
    /// The current fingerprint (`Some(None)`: no such run), read on a blocking thread;
    /// `None` when it cannot be read now (a busy or replaced file): the next poll
    /// tries again on a fresh connection.
    async fn read(&mut self) -> Option<Option<String>> {
        let conn = self.conn.take();
        let db = self.db.clone();
        let watch = self.watch.clone();
        let (conn, reading) = tokio::task::spawn_blocking(move || {
            let conn = match conn {
                Some(c) => c,
                None => match query::open_reader(&db) {
                    Ok(c) => c,
                    Err(_) => return (None, None),
                },
            };
            let fp = match &watch {
                Watch::Run(run) => dashboard::run_fingerprint(&conn, run),
                Watch::Ledger => dashboard::ledger_fingerprint(&conn).map(Some),
            };
            match fp {
                Ok(fp) => (Some(conn), Some(fp)),
                Err(_) => (None, None),
            }
        })
        .await
        .unwrap_or((None, None));
        self.conn = conn;
        reading
    }
}

/// The event stream of `watch`: an event at the first reading and at each change.
fn stream(db: std::path::PathBuf, watch: Watch) -> impl Stream<Item = Result<Event, Infallible>> {
    let poller = Poller {
        db,
        watch,
        conn: None,
        last: None,
    };
    let mut first = true;
    futures_util::stream::unfold(poller, move |mut p| {
        let wait = !std::mem::take(&mut first);
        async move {
            let mut wait = wait;
            loop {
                if wait {
                    tokio::time::sleep(POLL).await;
                }
                wait = true;
                let Some(now) = p.read().await else { continue };
                if p.last.as_ref() == Some(&now) {
                    continue;
                }
                p.last = Some(now.clone());
                let event = match now {
                    Some(fp) => Event::default().event("change").data(fp),
                    None => Event::default().event("gone").data(""),
                };
                return Some((Ok(event), p));
            }
        }
    })
}

/// `GET /api/runs/{id}/live` (the id in full, as the run page has it).
pub async fn run(
    axum::extract::State(state): axum::extract::State<State>,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    Ok(Sse::new(stream(state.db.clone(), Watch::Run(id))).keep_alive(KeepAlive::default()))
}

/// `GET /api/live`: changes anywhere in the ledger (the runs list and the decisions
/// page follow it).
pub async fn ledger(
    axum::extract::State(state): axum::extract::State<State>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    Sse::new(stream(state.db.clone(), Watch::Ledger)).keep_alive(KeepAlive::default())
}
