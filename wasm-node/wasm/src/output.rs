//! A guest's stdout and stderr, captured line by line for its pod's log.
//!
//! The engine knows nothing of files: it splits what each instance writes
//! into lines and hands every line, tagged with its stream and the request
//! the instance serves, to a [`LogSink`] the node provides. A sink must
//! never block: a guest's write returns as soon as its bytes are split, so
//! a guest that floods its output is never slowed by the disk, and what the
//! sink cannot keep it drops.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderValue;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// A record holds at most this much of a line (16 KiB): a longer line is
/// split into several records, so one line never holds the host's memory.
pub const MAX_LINE: usize = 16 << 10;

/// How much a guest may write in one call (its permit): what it writes is
/// split into lines at once, so this bounds only one copy.
const WRITE_PERMIT: usize = 64 << 10;

/// Which of a guest's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// Where a pod's output lines go: the node's log of the pod. Shared by
/// every instance of the pod, called from their tasks, so it must be cheap
/// and must never block or fail the guest.
pub trait LogSink: Send + Sync + 'static {
    /// One line of output, without its newline, at most [`MAX_LINE`]
    /// bytes, not necessarily UTF-8; `request` is the id of the request
    /// the instance serves, when it serves one.
    fn line(&self, stream: LogStream, request: Option<&[u8]>, text: &[u8]);

    /// Resolves once the lines given so far are stored. A producer that
    /// may wait (a Linux container's pipe, which then fills and slows the
    /// container) calls it between reads; guests never do.
    fn flush(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
}

/// Splits a stream of bytes into lines of at most [`MAX_LINE`] bytes;
/// the bytes of an unfinished line wait for the rest (or for
/// [`LineSplitter::finish`]).
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Calls `emit` with every line `bytes` completes.
    pub fn push(&mut self, mut bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        while !bytes.is_empty() {
            let room = MAX_LINE - self.partial.len();
            let window = &bytes[..bytes.len().min(room)];
            match window.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    self.emit_with(&bytes[..end], &mut emit);
                    bytes = &bytes[end + 1..];
                }
                None if window.len() == room => {
                    // A line longer than a record: this much is a record.
                    self.emit_with(window, &mut emit);
                    bytes = &bytes[room..];
                }
                None => {
                    self.partial.extend_from_slice(bytes);
                    return;
                }
            }
        }
    }

    /// Emits the unfinished line, if there is one (the stream ended).
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            emit(&self.partial);
            self.partial.clear();
        }
    }

    /// Emits `tail` after what waits, without copying when nothing does.
    fn emit_with(&mut self, tail: &[u8], emit: &mut impl FnMut(&[u8])) {
        if self.partial.is_empty() {
            emit(tail);
        } else {
            self.partial.extend_from_slice(tail);
            emit(&self.partial);
            self.partial.clear();
        }
    }
}

/// One instance's stdout or stderr: every stream the guest opens on it
/// shares the unfinished line, which is emitted when the last of them (and
/// the instance's context) is dropped, that is when the instance ends.
struct Capture {
    sink: Arc<dyn LogSink>,
    stream: LogStream,
    request: Option<HeaderValue>,
    lines: Mutex<LineSplitter>,
}

impl Capture {
    fn write(&self, bytes: &[u8]) {
        let request = self.request.as_ref().map(HeaderValue::as_bytes);
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.push(bytes, |line| self.sink.line(self.stream, request, line));
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let request = self.request.as_ref().map(HeaderValue::as_bytes);
        let lines = self.lines.get_mut().unwrap_or_else(|e| e.into_inner());
        lines.finish(|line| self.sink.line(self.stream, request, line));
    }
}

/// The stdout or stderr of one instance, as WASI takes it.
#[derive(Clone)]
pub(crate) struct CaptureStream(Arc<Capture>);

impl CaptureStream {
    pub(crate) fn new(
        sink: Arc<dyn LogSink>,
        stream: LogStream,
        request: Option<HeaderValue>,
    ) -> Self {
        Self(Arc::new(Capture {
            sink,
            stream,
            request,
            lines: Mutex::default(),
        }))
    }
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.0.write(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CaptureStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.write(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let mut splitter = LineSplitter::default();
        for chunk in chunks {
            splitter.push(chunk, |line| lines.push(line.to_vec()));
        }
        splitter.finish(|line| lines.push(line.to_vec()));
        lines
    }

    #[test]
    fn lines_are_split_at_newlines_across_writes() {
        let lines = split(&[b"one\ntw", b"o\n", b"\nthree"]);
        assert_eq!(lines, [&b"one"[..], b"two", b"", b"three"]);
    }

    #[test]
    fn a_long_line_becomes_records_of_at_most_max_line() {
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let mut input = long.clone();
        input.extend_from_slice(b"\nnext\n");
        // Written in odd pieces, as a guest might.
        let chunks: Vec<&[u8]> = input.chunks(7000).collect();
        let lines = split(&chunks);
        let sizes: Vec<usize> = lines.iter().map(Vec::len).collect();
        assert_eq!(sizes, [MAX_LINE, MAX_LINE, 5, 4]);
        assert_eq!(lines.concat(), [long, b"next".to_vec()].concat());
    }

    /// What a sink was given: stream, request, text.
    type Line = (LogStream, Option<Vec<u8>>, Vec<u8>);

    struct Collect(Mutex<Vec<Line>>);

    impl LogSink for Collect {
        fn line(&self, stream: LogStream, request: Option<&[u8]>, text: &[u8]) {
            self.0
                .lock()
                .unwrap()
                .push((stream, request.map(<[u8]>::to_vec), text.to_vec()));
        }
    }

    #[test]
    fn an_unfinished_line_is_emitted_when_the_instance_ends() {
        let sink = Arc::new(Collect(Mutex::default()));
        let capture = CaptureStream::new(
            sink.clone(),
            LogStream::Stderr,
            Some(HeaderValue::from_static("req-1")),
        );
        // Two streams of one instance share the unfinished line.
        let mut a = capture.p2_stream();
        let mut b = capture.p2_stream();
        a.write(Bytes::from_static(b"hello ")).unwrap();
        b.write(Bytes::from_static(b"world\nbye")).unwrap();
        assert_eq!(sink.0.lock().unwrap().len(), 1);
        drop((a, b, capture));
        let got = sink.0.lock().unwrap().clone();
        let request = Some(b"req-1".to_vec());
        assert_eq!(
            got,
            [
                (LogStream::Stderr, request.clone(), b"hello world".to_vec()),
                (LogStream::Stderr, request, b"bye".to_vec()),
            ]
        );
    }
}
