//! Bounded capture of a guest's stdout and stderr.
//!
//! The guest may write as much as it likes; the host keeps the first
//! `max_stdio_bytes` and counts the rest, so a flood can neither fill the host's
//! memory nor make the guest's writes fail.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    dropped: u64,
}

/// A stdout/stderr sink that keeps at most `limit` bytes.
#[derive(Clone)]
pub struct BoundedCapture {
    limit: usize,
    inner: Arc<Mutex<Captured>>,
}

impl BoundedCapture {
    /// A capture keeping at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        BoundedCapture {
            limit,
            inner: Arc::default(),
        }
    }

    /// The kept text (lossy UTF-8) and how many bytes were dropped.
    pub fn contents(&self) -> (String, u64) {
        let c = self.inner.lock().unwrap();
        (String::from_utf8_lossy(&c.kept).into_owned(), c.dropped)
    }

    fn write(&self, buf: &[u8]) {
        let mut c = self.inner.lock().unwrap();
        let room = self.limit.saturating_sub(c.kept.len());
        let take = room.min(buf.len());
        c.kept.extend_from_slice(&buf[..take]);
        c.dropped += (buf.len() - take) as u64;
    }
}

impl IsTerminal for BoundedCapture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for BoundedCapture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for BoundedCapture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
