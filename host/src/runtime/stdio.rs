//! Capture of a guest's stdout and stderr.
//!
//! Guests written in ordinary languages print; we keep what they print as log
//! lines of the invocation. The buffer is capped, and writes past the cap are
//! dropped silently (and counted) rather than failing: a failed write makes
//! Rust's `println!` panic, which would turn chatty logging into a trap.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime_wasi::async_trait;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    dropped: u64,
}

/// A capped, shareable in-memory sink for one guest output stream.
#[derive(Clone)]
pub(crate) struct CapturedOutput {
    capacity: usize,
    inner: Arc<Mutex<Buffer>>,
}

impl CapturedOutput {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Arc::default(),
        }
    }

    fn push(&self, data: &[u8]) {
        let mut buf = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.capacity.saturating_sub(buf.bytes.len());
        let take = room.min(data.len());
        buf.bytes.extend_from_slice(&data[..take]);
        buf.dropped += (data.len() - take) as u64;
    }

    /// What was captured, and how many bytes were dropped past the cap.
    pub(crate) fn take(&self) -> (Vec<u8>, u64) {
        let mut buf = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (
            std::mem::take(&mut buf.bytes),
            std::mem::take(&mut buf.dropped),
        )
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

#[async_trait]
impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always accept: overflow is dropped in `push`, never refused.
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_counts() {
        let out = CapturedOutput::new(4);
        out.push(b"abc");
        out.push(b"def");
        assert_eq!(out.take(), (b"abcd".to_vec(), 2));
        assert_eq!(out.take(), (vec![], 0));
    }
}
