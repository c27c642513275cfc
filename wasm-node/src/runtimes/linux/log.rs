//! A Linux pod's stdout and stderr, kept to a size.
//!
//! containerd's shim can append a task's output to a file itself
//! (`file://`), but nothing then stops the file growing until the node's
//! disk is full. So the shim writes both streams into a FIFO instead, and
//! the node copies what comes out of it into a [`CappedLog`]: a file of at
//! most `max` bytes that, when full, becomes `<name>.1` (replacing the one
//! before) while a new file begins. A pod's output thus takes at most
//! twice the cap on disk, and the latest output is always kept.
//!
//! The FIFO is opened for reading before the task is created (the shim's
//! open for writing waits for a reader), and copying starts once the shim
//! has opened it, so end-of-file means the shim has closed it: the
//! container's processes are gone and everything they wrote is copied.
//! Should the node fall behind, the pipe fills and the container's writes
//! wait: output is slowed, never lost, until it reaches the cap.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

/// A pod's log file holds at most this much (10 MiB), as kubelet's
/// `containerLogMaxSize` does by default.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 10 << 20;

/// Bytes read from the FIFO at a time.
const CHUNK: usize = 64 << 10;

/// Where a full log file goes: `container.log` → `container.log.1`.
pub fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// A log file that never holds more than `max` bytes.
pub struct CappedLog {
    path: PathBuf,
    file: tokio::fs::File,
    size: u64,
    max: u64,
}

impl CappedLog {
    /// Opens `path` to append to (a restarted pod's output follows the
    /// previous run's).
    pub async fn open(path: &Path, max: u64) -> io::Result<CappedLog> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        let size = file.metadata().await?.len();
        Ok(CappedLog {
            path: path.to_owned(),
            file,
            size,
            max: max.max(1),
        })
    }

    /// Appends `bytes`, rotating first when they would not fit: a write
    /// is split only when it is larger than the cap itself.
    pub async fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.size > 0 && self.size + bytes.len() as u64 > self.max {
                self.rotate().await?;
            }
            let room = usize::try_from(self.max - self.size).unwrap_or(usize::MAX);
            let (now, rest) = bytes.split_at(bytes.len().min(room));
            self.file.write_all(now).await?;
            self.size += now.len() as u64;
            bytes = rest;
        }
        Ok(())
    }

    async fn rotate(&mut self) -> io::Result<()> {
        self.file.flush().await?;
        tokio::fs::rename(&self.path, rotated(&self.path)).await?;
        self.file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)
            .await?;
        self.size = 0;
        Ok(())
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        self.file.flush().await
    }
}

/// The FIFO a task's stdout and stderr are written to, next to the log
/// file (`container.log` → `container.fifo`), with the node's reading end.
pub struct LogPipe {
    fifo: PathBuf,
    receiver: pipe::Receiver,
}

impl LogPipe {
    /// Makes the FIFO afresh (a previous run's may still be there) and
    /// opens it for reading; nothing is read until [`LogPipe::copy_into`].
    pub fn create(log: &Path) -> io::Result<LogPipe> {
        let fifo = log.with_extension("fifo");
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
        Ok(LogPipe { fifo, receiver })
    }

    /// What the shim is told to write stdout and stderr to.
    pub fn path(&self) -> &Path {
        &self.fifo
    }

    /// Copies what comes out of the FIFO into `log`, capped at `max` bytes,
    /// until the writers close it. Call once they have opened it (the task
    /// is created): before that, the FIFO reads as at its end.
    pub fn copy_into(self, log: PathBuf, max: u64) -> LogCopy {
        let fifo = self.fifo.clone();
        let task = tokio::spawn(copy(self.receiver, log, max));
        LogCopy { task, fifo }
    }
}

async fn copy(mut receiver: pipe::Receiver, log: PathBuf, max: u64) {
    let mut file = match CappedLog::open(&log, max).await {
        Ok(file) => Some(file),
        Err(e) => {
            tracing::warn!("{}: {e}; the container's output is dropped", log.display());
            None
        }
    };
    let mut buffer = vec![0; CHUNK];
    loop {
        let n = match receiver.read(&mut buffer).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("{}: reading the container's output: {e}", log.display());
                break;
            }
        };
        // A file that cannot be written (a full disk) is given up, but the
        // pipe is still drained: the container must not stall on it.
        if let Some(writing) = &mut file
            && let Err(e) = writing.write(&buffer[..n]).await
        {
            tracing::warn!("{}: {e}; the container's output is dropped", log.display());
            file = None;
        }
    }
    if let Some(mut file) = file {
        let _ = file.flush().await;
    }
}

/// A running copy from a task's FIFO into its log file.
pub struct LogCopy {
    task: JoinHandle<()>,
    fifo: PathBuf,
}

impl LogCopy {
    /// Waits for the copy to reach the end of the output (once the task is
    /// deleted, the shim has closed the FIFO), at most `within`, and
    /// removes the FIFO.
    pub async fn finish(mut self, within: Duration) {
        if tokio::time::timeout(within, &mut self.task).await.is_err() {
            tracing::warn!(
                "{}: the container's output did not end; its log may lack the last of it",
                self.fifo.display()
            );
            self.task.abort();
        }
        let _ = std::fs::remove_file(&self.fifo);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn write_all(log: &mut CappedLog, chunks: &[&[u8]]) {
        for chunk in chunks {
            log.write(chunk).await.unwrap();
        }
        log.flush().await.unwrap();
    }

    #[tokio::test]
    async fn a_log_rotates_before_it_passes_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        let mut log = CappedLog::open(&path, 10).await.unwrap();
        write_all(&mut log, &[b"1234\n", b"5678\n", b"abc\n"]).await;
        // The third line would not fit: the first two went to .1.
        assert_eq!(std::fs::read(&path).unwrap(), b"abc\n");
        assert_eq!(std::fs::read(rotated(&path)).unwrap(), b"1234\n5678\n");
        write_all(&mut log, &[b"0123456789abcdefghijklmno"]).await;
        // Larger than the cap: split, only the last part kept beside the
        // last full file.
        assert_eq!(std::fs::read(&path).unwrap(), b"klmno");
        assert_eq!(std::fs::read(rotated(&path)).unwrap(), b"abcdefghij");
    }

    #[tokio::test]
    async fn a_reopened_log_counts_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        std::fs::write(&path, b"12345678").unwrap();
        let mut log = CappedLog::open(&path, 10).await.unwrap();
        write_all(&mut log, &[b"9"]).await;
        assert_eq!(std::fs::read(&path).unwrap(), b"123456789");
        write_all(&mut log, &[b"ab"]).await;
        assert_eq!(std::fs::read(&path).unwrap(), b"ab");
        assert_eq!(std::fs::read(rotated(&path)).unwrap(), b"123456789");
    }

    #[tokio::test]
    async fn a_pipe_is_copied_until_its_writers_close_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("container.log");
        let pipe = LogPipe::create(&log).unwrap();
        assert_eq!(pipe.path(), dir.path().join("container.fifo"));
        // Two writers, as the shim opens one for stdout and one for stderr.
        let mut out = pipe::OpenOptions::new().open_sender(pipe.path()).unwrap();
        let mut err = pipe::OpenOptions::new().open_sender(pipe.path()).unwrap();
        let fifo = pipe.path().to_owned();
        let copy = pipe.copy_into(log.clone(), 1 << 20);
        out.write_all(b"to stdout\n").await.unwrap();
        err.write_all(b"to stderr\n").await.unwrap();
        drop((out, err));
        copy.finish(Duration::from_secs(30)).await;
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "to stdout\nto stderr\n"
        );
        assert!(!fifo.exists(), "the fifo is removed");
    }
}
