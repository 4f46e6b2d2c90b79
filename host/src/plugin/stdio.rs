//! A plugin's stdout and stderr: kept up to a cap, the rest counted and dropped. A plugin
//! that writes more than the cap is not stopped (wasmtime's own memory pipe traps, which
//! turned a chatty but correct plugin into a failure); its output is cut, and the log
//! says how much was dropped.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use super::limits::OUTPUT_CAP;

#[derive(Default)]
struct Kept {
    bytes: Vec<u8>,
    dropped: usize,
}

/// One stream's output; clones share it.
#[derive(Clone, Default)]
pub struct CappedOutput(Arc<Mutex<Kept>>);

impl CappedOutput {
    fn keep(&self, buf: &[u8]) {
        let mut k = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let room = OUTPUT_CAP.saturating_sub(k.bytes.len());
        let take = room.min(buf.len());
        k.bytes.extend_from_slice(&buf[..take]);
        k.dropped += buf.len() - take;
    }

    /// What was kept, and how many bytes were dropped past the cap.
    pub fn contents(&self) -> (Vec<u8>, usize) {
        let k = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (k.bytes.clone(), k.dropped)
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.keep(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    /// Always room: what does not fit is dropped, never refused.
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(OUTPUT_CAP)
    }
}

#[async_trait::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.keep(buf);
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
    fn output_past_the_cap_is_dropped_and_counted_not_refused() {
        let mut out = CappedOutput::default();
        out.write(Bytes::from(vec![b'a'; OUTPUT_CAP - 10])).unwrap();
        out.write(Bytes::from(vec![b'b'; 100])).unwrap();
        assert_eq!(out.check_write().unwrap(), OUTPUT_CAP);
        let (kept, dropped) = out.contents();
        assert_eq!((kept.len(), dropped), (OUTPUT_CAP, 90));
        assert!(kept.ends_with(b"abbbbbbbbbb"));
    }
}
