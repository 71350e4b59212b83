//! An OTLP/HTTP receiver for tests: it listens on 127.0.0.1 (random port) on a thread
//! of its own (so a test can point a separate `agentflow` process at it), accepts
//! protobuf POSTs at `/v1/traces` and `/v1/metrics`, answers 200, and decodes what it
//! got with `opentelemetry-proto`. Also a "black hole" that accepts connections and
//! never answers.
#![allow(dead_code)]

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::Metric;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One POST: its path and body.
#[derive(Clone, Debug)]
pub struct Post {
    pub path: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// A running receiver (its thread ends with the test process).
pub struct Receiver {
    pub addr: SocketAddr,
    posts: Arc<Mutex<Vec<Post>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let posts = Arc::new(Mutex::new(Vec::new()));
        let sink = posts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &sink);
                });
            }
        });
        Receiver { addr, posts }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }

    /// Every span received, in order.
    pub fn spans(&self) -> Vec<Span> {
        self.posts()
            .iter()
            .filter(|p| p.path == "/v1/traces")
            .flat_map(|p| {
                let req = ExportTraceServiceRequest::decode(&p.body[..]).expect("OTLP traces");
                req.resource_spans
                    .into_iter()
                    .flat_map(|r| r.scope_spans)
                    .flat_map(|s| s.spans)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Every trace request received (resource and scope included).
    pub fn trace_requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.posts()
            .iter()
            .filter(|p| p.path == "/v1/traces")
            .map(|p| ExportTraceServiceRequest::decode(&p.body[..]).unwrap())
            .collect()
    }

    /// The latest metrics request.
    pub fn latest_metrics_request(&self) -> Option<ExportMetricsServiceRequest> {
        let post = self
            .posts()
            .into_iter()
            .rev()
            .find(|p| p.path == "/v1/metrics")?;
        Some(ExportMetricsServiceRequest::decode(&post.body[..]).expect("OTLP metrics"))
    }

    /// The metrics of the latest metrics request.
    pub fn latest_metrics(&self) -> Option<Vec<Metric>> {
        let req = self.latest_metrics_request()?;
        Some(
            req.resource_metrics
                .into_iter()
                .flat_map(|r| r.scope_metrics)
                .flat_map(|s| s.metrics)
                .collect(),
        )
    }

    /// Wait up to `timeout` until `ready` holds for the posts received.
    pub fn wait_until(&self, timeout: Duration, ready: impl Fn(&[Post]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if ready(&self.posts()) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Read one request, record it, answer 200 and close.
fn serve(mut stream: TcpStream, sink: &Mutex<Vec<Post>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("")
        .to_string();
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    sink.lock().unwrap().push(Post {
        path,
        content_type: header("content-type").unwrap_or_default(),
        body,
    });
    stream.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )?;
    stream.flush()
}

/// A listener that accepts connections and never answers.
pub struct BlackHole {
    pub addr: SocketAddr,
    accepted: Arc<Mutex<usize>>,
}

impl BlackHole {
    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        *self.accepted.lock().unwrap()
    }
}

pub fn black_hole() -> BlackHole {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(Mutex::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
            *count.lock().unwrap() += 1;
        }
    });
    BlackHole { addr, accepted }
}

/// A URL nothing listens on.
pub fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// An attribute value as JSON (strings, numbers, booleans, arrays).
pub fn any_value(v: &AnyValue) -> Value {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => json!(s),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(any_value).collect())
        }
        _ => Value::Null,
    }
}

/// The attribute `key` of `attrs` as JSON (`Null` when absent).
pub fn attr(attrs: &[KeyValue], key: &str) -> Value {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .map_or(Value::Null, any_value)
}

/// Lowercase hex of an id.
pub fn hex_id(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
