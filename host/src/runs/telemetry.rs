//! Sending runs to an OpenTelemetry collector over OTLP/HTTP (protobuf): the spans of
//! each run that ends ([`crate::observe::otel`], through `opentelemetry-otlp`'s span
//! exporter) and the ledger's metrics ([`crate::observe::metrics`]).
//!
//! Exporting never blocks or fails a run. A run's end only queues its id; a thread of
//! its own ("agentflow-otlp", with a small Tokio runtime) reads the run back from the
//! ledger and sends it. A collector that is down or slow costs that thread time, not
//! the run: a failed export is logged once as a warning (later ones at debug level)
//! and dropped. Metrics are sent every `[observe] metrics_interval_s` while runs end,
//! and when the host closes ([`Telemetry::flush`], which waits a bounded time).
//!
//! `agentflow export-otlp` replays a finished run through the same conversion
//! ([`export_run`]), so a replay sends the spans the live export sent, ids included.

use crate::config::observe::ObserveConfig;
use crate::ledger::query;
use crate::observe::{metrics, metrics_export, otel};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{RetryPolicy, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanExporter as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Most spans sent in one request (a large run goes in several).
const SPANS_PER_REQUEST: usize = 512;
/// How long one export request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long closing a host waits for queued exports.
pub const FLUSH_WAIT: Duration = Duration::from_secs(5);
/// Default seconds between metric exports.
const METRICS_INTERVAL_S: u64 = 60;

/// The host's reqwest client as the HTTP client of the OTLP exporter.
#[derive(Debug, Clone)]
struct ReqwestClient(reqwest::Client);

#[async_trait::async_trait]
impl HttpClient for ReqwestClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let response = self.0.execute(request).await?;
        let mut out = Response::builder().status(response.status());
        for (name, value) in response.headers() {
            out = out.header(name, value);
        }
        Ok(out.body(response.bytes().await?)?)
    }
}

/// Where and as whom to export.
#[derive(Clone, Debug)]
pub struct Target {
    /// The OTLP/HTTP base URL, without a trailing slash.
    pub endpoint: String,
    /// `service.name`.
    pub service: String,
}

impl Target {
    /// The target `config` names (`[observe] otlp_endpoint` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`); `None` when there is none.
    pub fn of(config: &ObserveConfig) -> Option<Target> {
        Some(Target {
            endpoint: config.endpoint()?,
            service: config.service(),
        })
    }
}

/// The OTLP connection: a span exporter and the client that posts metrics.
struct Otlp {
    target: Target,
    client: reqwest::Client,
    spans: opentelemetry_otlp::SpanExporter,
}

impl Otlp {
    fn new(target: Target) -> anyhow::Result<Otlp> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        let mut spans = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", target.endpoint))
            .with_timeout(REQUEST_TIMEOUT)
            .with_http_client(ReqwestClient(client.clone()))
            .with_retry_policy(RetryPolicy::recommended().with_max_retries(1))
            .build()
            .map_err(|e| anyhow::anyhow!("OTLP exporter for {}: {e}", target.endpoint))?;
        spans.set_resource(&resource(&target.service));
        Ok(Otlp {
            target,
            client,
            spans,
        })
    }

    /// Send the spans of run `run` of the ledger open on `conn`; how many.
    async fn export_run(
        &self,
        conn: &crate::ledger::Connection,
        run: &str,
    ) -> anyhow::Result<usize> {
        let spans = otel::run_spans(conn, run)?
            .ok_or_else(|| anyhow::anyhow!("no run `{run}` in the ledger"))?;
        let count = spans.len();
        let mut spans = spans.into_iter().peekable();
        while spans.peek().is_some() {
            let batch: Vec<_> = spans.by_ref().take(SPANS_PER_REQUEST).collect();
            self.spans
                .export(batch)
                .await
                .map_err(|e| anyhow::anyhow!("OTLP export to {}: {e}", self.target.endpoint))?;
        }
        Ok(count)
    }

    /// Send the ledger's metrics.
    async fn export_metrics(&self, conn: &crate::ledger::Connection) -> anyhow::Result<()> {
        // The spans' resource, its values as text.
        let resource: Vec<(String, String)> = resource(&self.target.service)
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let request = metrics_export::otlp_request(&metrics::read(conn)?, &resource);
        let url = format!("{}/v1/metrics", self.target.endpoint);
        let mut post = self
            .client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(prost::Message::encode_to_vec(&request));
        for (name, value) in env_headers() {
            post = post.header(name, value);
        }
        post.send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| anyhow::anyhow!("OTLP metrics export to {url}: {e}"))?;
        Ok(())
    }
}

/// The resource every export names: `service.name` and the host's version, with
/// `OTEL_RESOURCE_ATTRIBUTES`.
fn resource(service: &str) -> Resource {
    Resource::builder()
        .with_service_name(service.to_string())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build()
}

/// `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,k2=v2`), which the span exporter reads itself.
fn env_headers() -> Vec<(String, String)> {
    std::env::var("OTEL_EXPORTER_OTLP_HEADERS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// What [`export_run`] sent.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Exported {
    pub run_id: String,
    /// The trace id: the run id for runs this host started.
    pub trace_id: String,
    pub spans: usize,
    pub endpoint: String,
}

/// Send the spans of run `run` (an id or a unique prefix) of the ledger at `db` to
/// `target`, waiting for the collector's answer: `agentflow export-otlp`.
pub async fn export_run(db: &Path, run: &str, target: Target) -> anyhow::Result<Exported> {
    let conn = crate::ledger::existing::reader(db)?;
    let row = query::run(&conn, run)?
        .ok_or_else(|| anyhow::anyhow!("no run `{run}` in {}", db.display()))?;
    let endpoint = target.endpoint.clone();
    let otlp = Otlp::new(target)?;
    let spans = otlp.export_run(&conn, &row.run_id).await?;
    Ok(Exported {
        trace_id: otel::trace_id(&row.run_id).to_string(),
        run_id: row.run_id,
        spans,
        endpoint,
    })
}

enum Job {
    /// Export this run's spans.
    Run(String),
    /// Export the metrics, then answer.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The live exporter of a host: a queue and the thread that empties it.
pub struct Telemetry {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
}

impl Telemetry {
    /// Start exporting to what `config` names for the ledger at `db`; `None` when
    /// `config` names no endpoint.
    pub fn start(config: &ObserveConfig, db: &Path) -> anyhow::Result<Option<Telemetry>> {
        let Some(target) = Target::of(config) else {
            return Ok(None);
        };
        let interval = Duration::from_secs(config.metrics_interval_s.unwrap_or(METRICS_INTERVAL_S));
        let otlp = Otlp::new(target)?;
        let (jobs, rx) = tokio::sync::mpsc::unbounded_channel();
        let db = db.to_path_buf();
        // The thread's own runtime: built and dropped there, never inside the caller's.
        std::thread::Builder::new()
            .name("agentflow-otlp".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(export_loop(otlp, db, rx, interval)),
                    Err(e) => tracing::warn!("OpenTelemetry export disabled: {e}"),
                }
            })?;
        Ok(Some(Telemetry { jobs }))
    }

    /// Queue the spans of run `run_id` for export; returns at once.
    pub fn run_ended(&self, run_id: &str) {
        let _ = self.jobs.send(Job::Run(run_id.to_string()));
    }

    /// Wait up to `wait` for the queued exports and a metrics export; whether they
    /// finished in time (a failed export counts as finished).
    pub fn flush(&self, wait: Duration) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.jobs.send(Job::Flush(tx)).is_err() {
            return true;
        }
        rx.recv_timeout(wait).is_ok()
    }
}

/// Logs the first failure as a warning, later ones at debug level.
struct Failures {
    endpoint: String,
    warned: bool,
}

impl Failures {
    fn note(&mut self, what: &str, error: anyhow::Error) {
        if self.warned {
            tracing::debug!(endpoint = %self.endpoint, "{what} not exported: {error:#}");
        } else {
            self.warned = true;
            tracing::warn!(
                "{what} not exported ({error:#}); runs go on unaffected, later export failures \
                 are logged at debug level"
            );
        }
    }
}

async fn export_loop(
    otlp: Otlp,
    db: PathBuf,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>,
    interval: Duration,
) {
    let mut failures = Failures {
        endpoint: otlp.target.endpoint.clone(),
        warned: false,
    };
    let mut conn = None;
    // Metrics wait for a run to end (or a flush) and then for the interval.
    let mut metrics_due = false;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let job = tokio::select! {
            job = jobs.recv() => job,
            _ = ticker.tick() => {
                if std::mem::take(&mut metrics_due) {
                    send_metrics(&otlp, &db, &mut conn, &mut failures).await;
                }
                continue;
            }
        };
        match job {
            Some(Job::Run(run_id)) => {
                metrics_due = true;
                let result = match reader(&db, &mut conn) {
                    Ok(c) => otlp.export_run(c, &run_id).await.map(|_| ()),
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    failures.note(&format!("spans of run {run_id}"), e);
                }
            }
            Some(Job::Flush(done)) => {
                metrics_due = false;
                send_metrics(&otlp, &db, &mut conn, &mut failures).await;
                let _ = done.send(());
            }
            None => {
                if metrics_due {
                    send_metrics(&otlp, &db, &mut conn, &mut failures).await;
                }
                return;
            }
        }
    }
}

/// The thread's read connection to the ledger, opened on first use.
fn reader<'a>(
    db: &Path,
    conn: &'a mut Option<crate::ledger::Connection>,
) -> anyhow::Result<&'a crate::ledger::Connection> {
    if conn.is_none() {
        *conn = Some(query::open_reader(db)?);
    }
    Ok(conn.as_ref().expect("opened above"))
}

async fn send_metrics(
    otlp: &Otlp,
    db: &Path,
    conn: &mut Option<crate::ledger::Connection>,
    failures: &mut Failures,
) {
    let result = match reader(db, conn) {
        Ok(c) => otlp.export_metrics(c).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        failures.note("metrics", e);
    }
}
