//! A Linux pod's stdout and stderr, on their way to the pod's log.
//!
//! containerd's shim can append a task's output to a file itself
//! (`file://`), but nothing then stops the file growing until the node's
//! disk is full, and the lines would be in no format of ours. So the shim
//! writes each stream into a FIFO of its own (`stdout.fifo`,
//! `stderr.fifo`), and the node reads them, splits what comes out into
//! lines and hands them to the pod's [`LogSink`] (`crate::logs`), tagged
//! with their stream, like a Wasm guest's: the same files, format, caps and
//! rate.
//!
//! The FIFOs are opened for reading before the task is created (the shim's
//! open for writing waits for a reader), and copying starts once the shim
//! has opened them, so end-of-file means the shim has closed them: the
//! container's processes are gone and everything they wrote is read. The
//! node stores each chunk before it reads the next, so a disk slower than
//! the container fills the pipe and slows the container's writes instead
//! of losing them; a container that logs past its pod's rate loses lines.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use skiff_wasm::{LineSplitter, LogSink, LogStream};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::task::JoinSet;

/// Bytes read from a FIFO at a time.
const CHUNK: usize = 64 << 10;

/// The FIFOs a task's stdout and stderr are written to, in a directory of
/// the pod's, with the node's reading ends.
pub struct LogPipes {
    pipes: Vec<(LogStream, PathBuf, pipe::Receiver)>,
}

impl LogPipes {
    /// Makes the FIFOs afresh in `dir` (a previous run's may still be
    /// there) and opens them for reading; nothing is read until
    /// [`LogPipes::copy_into`].
    pub fn create(dir: &Path) -> io::Result<LogPipes> {
        let mut pipes = Vec::new();
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let fifo = dir.join(format!("{}.fifo", stream.as_str()));
            match std::fs::remove_file(&fifo) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            rustix::fs::mkfifoat(
                rustix::fs::CWD,
                &fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
            )?;
            let receiver = pipe::OpenOptions::new().open_receiver(&fifo)?;
            pipes.push((stream, fifo, receiver));
        }
        Ok(LogPipes { pipes })
    }

    /// What the shim is told to write `stream` to.
    pub fn path(&self, stream: LogStream) -> &Path {
        self.pipes
            .iter()
            .find(|(s, ..)| *s == stream)
            .map(|(_, fifo, _)| fifo.as_path())
            .expect("both streams have a FIFO")
    }

    /// Copies what comes out of the FIFOs into `sink` (or nowhere: the
    /// pipes are drained all the same), a line at a time, until the writers
    /// close them. Call once they have opened them (the task is created):
    /// before that, a FIFO reads as at its end.
    pub fn copy_into(self, sink: Option<Arc<dyn LogSink>>) -> LogCopy {
        let mut tasks = JoinSet::new();
        let mut fifos = Vec::new();
        for (stream, fifo, receiver) in self.pipes {
            tasks.spawn(copy(receiver, stream, sink.clone(), fifo.clone()));
            fifos.push(fifo);
        }
        LogCopy { tasks, fifos }
    }
}

async fn copy(
    mut receiver: pipe::Receiver,
    stream: LogStream,
    sink: Option<Arc<dyn LogSink>>,
    fifo: PathBuf,
) {
    let mut lines = LineSplitter::default();
    let mut emit = |line: &[u8]| {
        if let Some(sink) = &sink {
            sink.line(stream, None, line);
        }
    };
    let mut buffer = vec![0; CHUNK];
    loop {
        match receiver.read(&mut buffer).await {
            Ok(0) => break,
            Ok(n) => {
                lines.push(&buffer[..n], &mut emit);
                if let Some(sink) = &sink {
                    sink.flush().await;
                }
            }
            Err(e) => {
                tracing::warn!("{}: reading the container's output: {e}", fifo.display());
                break;
            }
        }
    }
    lines.finish(emit);
}

/// A running copy from a task's FIFOs into its pod's log.
pub struct LogCopy {
    tasks: JoinSet<()>,
    fifos: Vec<PathBuf>,
}

impl LogCopy {
    /// Waits for the copy to reach the end of the output (once the task is
    /// deleted, the shim has closed the FIFOs), at most `within`, and
    /// removes the FIFOs.
    pub async fn finish(mut self, within: Duration) {
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(within, all).await.is_err() {
            tracing::warn!(
                "{}: the container's output did not end; its log may lack the last of it",
                self.fifos[0].display()
            );
            self.tasks.abort_all();
        }
        for fifo in &self.fifos {
            let _ = std::fs::remove_file(fifo);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::AsyncWriteExt;

    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<(LogStream, String)>>);

    impl LogSink for Collect {
        fn line(&self, stream: LogStream, request: Option<&[u8]>, text: &[u8]) {
            assert_eq!(request, None);
            let text = String::from_utf8_lossy(text).into_owned();
            self.0.lock().unwrap().push((stream, text));
        }
    }

    #[tokio::test]
    async fn pipes_are_copied_a_line_at_a_time_until_their_writers_close_them() {
        let dir = tempfile::tempdir().unwrap();
        let pipes = LogPipes::create(dir.path()).unwrap();
        let out_fifo = pipes.path(LogStream::Stdout).to_owned();
        assert_eq!(out_fifo, dir.path().join("stdout.fifo"));
        let mut out = pipe::OpenOptions::new().open_sender(&out_fifo).unwrap();
        let mut err = pipe::OpenOptions::new()
            .open_sender(pipes.path(LogStream::Stderr))
            .unwrap();
        let sink = Arc::new(Collect::default());
        let copy = pipes.copy_into(Some(sink.clone()));
        out.write_all(b"to stdout\nunfinished").await.unwrap();
        err.write_all(b"to stderr\n").await.unwrap();
        drop((out, err));
        copy.finish(Duration::from_secs(30)).await;
        let mut got = sink.0.lock().unwrap().clone();
        got.sort_by_key(|(stream, _)| stream.as_str());
        assert_eq!(
            got,
            [
                (LogStream::Stderr, "to stderr".to_owned()),
                (LogStream::Stdout, "to stdout".to_owned()),
                (LogStream::Stdout, "unfinished".to_owned()),
            ]
        );
        assert!(!out_fifo.exists(), "the fifos are removed");
    }
}
