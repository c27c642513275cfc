//! Pods' stdout and stderr on their node: bounded, rotated files per pod.
//!
//! Each pod (by uid) has a directory `<data-dir>/logs/<ns>_<name>_<uid>/`:
//!
//! - `current.log`, the run going on, and `current.log.1`, its older part
//!   once `current.log` reached the size cap (one rotated file kept, so a
//!   run takes at most twice the cap);
//! - `previous.log` (and `previous.log.1`): the run before, moved there
//!   when the pod's worker starts the pod again ([`PodLogs::start_run`]).
//!
//! One record a line, CRI-like and parseable ([`LogRecord::parse`]):
//!
//! ```text
//! 2025-01-02T03:04:05.123456789Z stdout 4bf92f3577b34da6a3ce929d0e0e4736 the guest's text
//! ```
//!
//! the time (RFC 3339, UTC, nanoseconds), the stream, the request the
//! line belongs to (`-` for none: a command, a probe, a Linux pod) and the
//! text (invalid UTF-8 replaced). A line longer than [`MAX_LINE`] is split
//! into several records.
//!
//! The request is its `x-request-id`: the client's when it sent a
//! well-formed one, else the 32 hex digits of its W3C trace id (the
//! client's `traceparent`, or the trace the ingress started), so a
//! request's records are found by the trace id its callers and its own
//! outbound requests carry.
//!
//! Writing never waits: a guest's line is formatted into the pod's pending
//! buffer (bounded, [`PENDING_MAX`]) under a short lock, and a task per pod
//! appends what is pending to the file. A line is dropped when the buffer
//! is full (the disk is slower than the guest) or the pod logs faster than
//! its rate ([`LogConfig::rate`], with a burst); the next line written
//! afterwards is preceded by one stderr record saying how much was lost.
//!
//! Reading, for whoever serves logs ([`read`]): [`NodeLogs::get`] finds a
//! live pod's [`PodLogs`]; [`PodLogs::read`] (or [`read_dir`] on the
//! directory, for a pod without a live writer) streams records of the
//! current or previous run in bounded chunks, optionally the last `n` and
//! those since a time; [`PodLogs::read_and_follow`] goes on with every
//! record as it reaches the file, each once.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
#[cfg(test)]
use std::time::Duration;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use chrono::{DateTime, Datelike, Timelike, Utc};
use skiff_wasm::{LogSink, LogStream};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, broadcast};

pub use skiff_wasm::MAX_LINE;

mod read;
pub use read::{LogChunks, READ_CHUNK, ReadQuery, read_dir};

/// A log file is rotated at this size by default (10 MiB), as kubelet's
/// `containerLogMaxSize`.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 10 << 20;
/// What a pod may log per second by default (1 MiB)...
pub const DEFAULT_RATE: u64 = 1 << 20;
/// ...with bursts of up to this much (4 MiB).
pub const DEFAULT_BURST: u64 = 4 << 20;
/// Formatted records waiting for a pod's writer task (1 MiB): past this,
/// lines are dropped rather than the guest slowed or the node's memory
/// spent.
pub const PENDING_MAX: usize = 1 << 20;
/// Chunks of records a follower may lag behind before it misses some.
const FOLLOW_CHUNKS: usize = 256;
/// How long a pod's writer lets lines gather once woken (10 ms): one
/// write, one hop to a blocking thread and one chunk for followers for
/// all of them, rather than a wake-up of the writer and of a thread per
/// few lines (what capture cost a busy pod's requests most). Unseen by
/// readers at human speed; explicit flushes (a run's end, a pipe's
/// chunk) do not wait for it.
const GATHER: std::time::Duration = std::time::Duration::from_millis(10);
/// Pending bytes past which the writer stops gathering and writes at once
/// (a quarter of [`PENDING_MAX`]), so that a burst is not dropped while
/// the writer waits.
const GATHER_MAX: usize = PENDING_MAX / 4;

/// How much each pod may log, and keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// A log file is rotated when it would pass this size.
    pub max_file_bytes: u64,
    /// Bytes of output a pod may log per second, on average.
    pub rate: u64,
    /// Bytes a pod may log at once above its rate.
    pub burst: u64,
    /// Whether pods' output is kept at all; without it, it is discarded
    /// as written (`wasm-node join --capture-pod-output=false`).
    pub capture: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            rate: DEFAULT_RATE,
            burst: DEFAULT_BURST,
            capture: true,
        }
    }
}

/// The file names of a pod's log directory.
pub const CURRENT: &str = "current.log";
pub const PREVIOUS: &str = "previous.log";

/// `current.log` → `current.log.1`.
fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// The directory of a pod's logs under a node's data directory.
pub fn pod_dir(data_dir: &Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
    data_dir
        .join("logs")
        .join(format!("{namespace}_{name}_{uid}"))
}

/// Every live pod's logs on a node, by uid.
pub struct NodeLogs {
    data_dir: PathBuf,
    config: LogConfig,
    live: Mutex<HashMap<String, Weak<PodLogs>>>,
}

impl NodeLogs {
    pub fn new(data_dir: &Path, config: LogConfig) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            config,
            live: Mutex::default(),
        }
    }

    pub fn config(&self) -> LogConfig {
        self.config
    }

    /// Opens a pod's logs (its directory made if missing, a node restart's
    /// `current.log` appended to), with a writer task; must be called
    /// within a tokio runtime.
    pub fn open(&self, namespace: &str, name: &str, uid: &str) -> std::io::Result<Arc<PodLogs>> {
        let dir = pod_dir(&self.data_dir, namespace, name, uid);
        let logs = Arc::new(PodLogs::open(
            dir,
            namespace,
            name,
            self.config,
            system_clock,
        )?);
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|_, pod| pod.strong_count() > 0);
        live.insert(uid.to_owned(), Arc::downgrade(&logs));
        Ok(logs)
    }

    /// The logs of the pod with this uid, while its worker holds them.
    pub fn get(&self, uid: &str) -> Option<Arc<PodLogs>> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.get(uid).and_then(Weak::upgrade)
    }

    /// The logs of the live pod with this name (the newest, should an old
    /// one of the same name still be stopping).
    pub fn find(&self, namespace: &str, name: &str) -> Option<Arc<PodLogs>> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.values()
            .filter_map(Weak::upgrade)
            .filter(|pod| pod.namespace == namespace && pod.name == name)
            .max_by_key(|pod| pod.opened)
    }
}

type Clock = fn() -> (Instant, SystemTime);

fn system_clock() -> (Instant, SystemTime) {
    (Instant::now(), SystemTime::now())
}

/// One pod's logs: the sink its guests' (or container's) lines go to, and
/// the files they end up in.
pub struct PodLogs {
    dir: PathBuf,
    namespace: String,
    name: String,
    opened: Instant,
    clock: Clock,
    shared: Arc<Shared>,
    writer: tokio::task::JoinHandle<()>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer task when something is pending.
    wake: Notify,
    /// Cuts the writer's gathering short: the pending buffer is filling.
    full: Notify,
    file: tokio::sync::Mutex<LogFile>,
    follow: broadcast::Sender<Bytes>,
}

struct Pending {
    buf: Vec<u8>,
    rate: RateLimit,
    /// The rate, as a message says it.
    limit: String,
    dropped: Dropped,
    /// Whether the writer was woken and has not taken the buffer yet.
    woken: bool,
    /// The date of the latest record, formatted once a second.
    stamp: Stamp,
}

impl Pending {
    /// Writes a record of what was dropped since the last one, if anything
    /// was.
    fn tell_dropped(&mut self, wall: SystemTime) {
        if self.dropped.bytes == 0 {
            return;
        }
        let why = if self.dropped.rate {
            format!("the pod logs faster than {}", self.limit)
        } else {
            "the node's log writer fell behind".to_owned()
        };
        let note = format!(
            "[skiff: {} bytes of output dropped: {why}]",
            self.dropped.bytes
        );
        self.stamp.record(
            &mut self.buf,
            wall,
            LogStream::Stderr,
            None,
            note.as_bytes(),
        );
        self.dropped = Dropped::default();
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Dropped {
    bytes: u64,
    /// Whether the rate (rather than the writer falling behind) dropped
    /// the latest of them.
    rate: bool,
}

impl PodLogs {
    fn open(
        dir: PathBuf,
        namespace: &str,
        name: &str,
        config: LogConfig,
        clock: Clock,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let file = LogFile::open(dir.join(CURRENT), config.max_file_bytes)?;
        let (now, _) = clock();
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                buf: Vec::new(),
                rate: RateLimit::new(config.rate, config.burst, now),
                limit: format!("{}/s", bytes(config.rate)),
                dropped: Dropped::default(),
                woken: false,
                stamp: Stamp::default(),
            }),
            wake: Notify::new(),
            full: Notify::new(),
            file: tokio::sync::Mutex::new(file),
            follow: broadcast::channel(FOLLOW_CHUNKS).0,
        });
        let writer = tokio::spawn(write_pending(shared.clone()));
        Ok(Self {
            dir,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            opened: now,
            clock,
            shared,
            writer,
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pod's log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new run of the pod begins (its worker starts it, again after a
    /// restart): what is pending is written, and the current run's files
    /// become the previous run's, replacing those. A current log left by
    /// the node's previous process counts as a run; an empty one at the
    /// first start does not, so `previous.log` exists only after a restart.
    pub async fn start_run(&self) -> std::io::Result<()> {
        let mut file = self.shared.file.lock().await;
        self.shared.drain_into(&mut file, Some(self.clock)).await?;
        file.new_run(&self.dir).await
    }

    /// Writes what is pending now (a run ended: its output is in the file
    /// before the end is told).
    pub async fn flush(&self) {
        let mut file = self.shared.file.lock().await;
        if let Err(e) = self.shared.drain_into(&mut file, Some(self.clock)).await {
            tracing::warn!("{}: {e}; pod output dropped", self.dir.display());
        }
    }

    /// Writes what is pending and stops the writer; the pod is gone.
    pub async fn close(&self) {
        let mut file = self.shared.file.lock().await;
        if let Err(e) = self.shared.drain_into(&mut file, Some(self.clock)).await {
            tracing::warn!("{}: {e}; the pod's last output is lost", self.dir.display());
        }
        self.writer.abort();
    }

    fn append(&self, stream: LogStream, request: Option<&[u8]>, text: &[u8]) {
        let (now, wall) = (self.clock)();
        let request = request.filter(|id| is_request_id(id));
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let pending = &mut *pending;
        // What the guest wrote, with its newline, counts against the rate.
        let cost = text.len() as u64 + 1;
        // A record's worst case: its prefix, the text (a replaced byte
        // grows to 3), and a note of what was dropped before it.
        let room = PENDING_MAX.saturating_sub(pending.buf.len());
        if room < 300 + text.len() * 3 {
            pending.dropped.bytes += cost;
            pending.dropped.rate = false;
            return;
        }
        if !pending.rate.take(cost, now) {
            pending.dropped.bytes += cost;
            pending.dropped.rate = true;
            return;
        }
        pending.tell_dropped(wall);
        let before = pending.buf.len();
        pending
            .stamp
            .record(&mut pending.buf, wall, stream, request, text);
        // The writer is woken once per batch, when the buffer stops being
        // empty, and hurried once if the batch grows large meanwhile.
        if !pending.woken {
            pending.woken = true;
            self.shared.wake.notify_one();
        } else if before < GATHER_MAX && pending.buf.len() >= GATHER_MAX {
            self.shared.full.notify_one();
        }
    }
}

impl Drop for PodLogs {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

impl LogSink for PodLogs {
    fn line(&self, stream: LogStream, request: Option<&[u8]>, text: &[u8]) {
        self.append(stream, request, text);
    }

    fn flush(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(PodLogs::flush(self))
    }
}

impl Shared {
    /// Takes what is pending and appends it to `file`; with a clock (an
    /// explicit flush: a run or a chunk of a pipe ended), after a record
    /// of what was dropped, so that a drop at the end is told too.
    async fn drain_into(&self, file: &mut LogFile, tell: Option<Clock>) -> std::io::Result<()> {
        let batch = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(clock) = tell {
                pending.tell_dropped(clock().1);
            }
            pending.woken = false;
            std::mem::take(&mut pending.buf)
        };
        if batch.is_empty() {
            return Ok(());
        }
        file.append(&batch).await?;
        // One allocation per batch, not per line; only when followed.
        if self.follow.receiver_count() > 0 {
            let _ = self.follow.send(Bytes::from(batch));
        }
        Ok(())
    }
}

/// A pod's writer task: appends what is pending whenever woken, until
/// the pod's logs are closed or dropped (which abort it).
async fn write_pending(shared: Arc<Shared>) {
    loop {
        shared.wake.notified().await;
        // Let the batch gather (see `GATHER`), unless it grows large.
        tokio::select! {
            () = tokio::time::sleep(GATHER) => {}
            () = shared.full.notified() => {}
        }
        let mut file = shared.file.lock().await;
        if let Err(e) = shared.drain_into(&mut file, None).await {
            // A full disk: this batch is lost; the next may fit.
            tracing::warn!("{}: {e}; pod output dropped", file.path.display());
        }
    }
}

/// `1048576` → `1Mi`, for messages.
fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{}Gi", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}Mi", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}Ki", n >> 10),
        n => format!("{n}"),
    }
}

/// Whether an id may stand in a record as it is: 1 to 64 of
/// `[A-Za-z0-9._-]` (what the ingress accepts from clients).
pub fn is_request_id(id: &[u8]) -> bool {
    (1..=64).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Appends one record: `<time> <stream> <request or -> <text>\n`.
pub fn format_record(
    buf: &mut Vec<u8>,
    time: SystemTime,
    stream: LogStream,
    request: Option<&[u8]>,
    text: &[u8],
) {
    Stamp::default().record(buf, time, stream, request, text);
}

/// A record's time up to its second, `YYYY-MM-DDTHH:MM:SS.`, kept for the
/// second it stands for: a pod's records are formatted with a copy of it
/// and their nanoseconds, the calendar worked out once a second rather
/// than per line.
#[derive(Debug, Default)]
struct Stamp {
    /// Seconds since the epoch `date` is for.
    second: Option<u64>,
    date: Vec<u8>,
}

impl Stamp {
    /// Appends one record (see [`format_record`]).
    fn record(
        &mut self,
        buf: &mut Vec<u8>,
        time: SystemTime,
        stream: LogStream,
        request: Option<&[u8]>,
        text: &[u8],
    ) {
        self.time(buf, time);
        finish_record(buf, stream, request, text);
    }

    /// Appends `time` as RFC 3339 in UTC with nanoseconds, and a space.
    fn time(&mut self, buf: &mut Vec<u8>, time: SystemTime) {
        let Ok(since) = time.duration_since(SystemTime::UNIX_EPOCH) else {
            // Before 1970: a clock set wrong; formatted whole, not kept.
            let time = DateTime::<Utc>::from(time);
            write_date(buf, time);
            write_nanos(buf, time.nanosecond() % 1_000_000_000);
            return;
        };
        if self.second != Some(since.as_secs()) {
            self.date.clear();
            write_date(&mut self.date, DateTime::<Utc>::from(time));
            self.second = Some(since.as_secs());
        }
        buf.extend_from_slice(&self.date);
        write_nanos(buf, since.subsec_nanos());
    }
}

/// `YYYY-MM-DDTHH:MM:SS.`
fn write_date(buf: &mut Vec<u8>, time: DateTime<Utc>) {
    let _ = write!(
        buf,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
        time.year(),
        time.month(),
        time.day(),
        time.hour(),
        time.minute(),
        time.second(),
    );
}

/// Nine digits of nanoseconds, the `Z` and a space.
fn write_nanos(buf: &mut Vec<u8>, mut nanos: u32) {
    let mut digits = *b"000000000Z ";
    for digit in digits[..9].iter_mut().rev() {
        *digit = b'0' + (nanos % 10) as u8;
        nanos /= 10;
    }
    buf.extend_from_slice(&digits);
}

/// The rest of a record after its time.
fn finish_record(buf: &mut Vec<u8>, stream: LogStream, request: Option<&[u8]>, text: &[u8]) {
    buf.extend_from_slice(stream.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(request.unwrap_or(b"-"));
    buf.push(b' ');
    match std::str::from_utf8(text) {
        Ok(_) => buf.extend_from_slice(text),
        Err(_) => buf.extend_from_slice(String::from_utf8_lossy(text).as_bytes()),
    }
    buf.push(b'\n');
}

/// One record of a pod's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub time: SystemTime,
    pub stream: LogStream,
    /// The request the line belongs to, if any.
    pub request: Option<String>,
    pub text: String,
}

impl LogRecord {
    /// Parses a line of a log file (with or without its newline); `None`
    /// for a line not in the format (a torn last line after a crash).
    pub fn parse(line: &str) -> Option<LogRecord> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let mut fields = line.splitn(4, ' ');
        let time = DateTime::parse_from_rfc3339(fields.next()?).ok()?;
        let stream = match fields.next()? {
            "stdout" => LogStream::Stdout,
            "stderr" => LogStream::Stderr,
            _ => return None,
        };
        let request = match fields.next()? {
            "-" => None,
            id => Some(id.to_owned()),
        };
        Some(LogRecord {
            time: time.with_timezone(&Utc).into(),
            stream,
            request,
            text: fields.next()?.to_owned(),
        })
    }
}

/// A token bucket: `rate` bytes a second, up to `burst` at once.
#[derive(Debug)]
struct RateLimit {
    rate: u64,
    burst: u64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    fn new(rate: u64, burst: u64, now: Instant) -> Self {
        let burst = burst.max(rate).max(1);
        Self {
            rate,
            burst,
            tokens: burst as f64,
            at: now,
        }
    }

    /// Takes `n` bytes' worth, if there is that much.
    fn take(&mut self, n: u64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at);
        self.at = self.at.max(now);
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() * self.rate as f64).min(self.burst as f64);
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

/// The current run's file, rotated at its cap between records.
struct LogFile {
    path: PathBuf,
    file: tokio::fs::File,
    size: u64,
    max: u64,
    /// Whether this file began a run of this process (rather than being
    /// left by the node's previous one).
    runs: u32,
}

impl LogFile {
    fn open(path: PathBuf, max: u64) -> std::io::Result<LogFile> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path,
            file: tokio::fs::File::from_std(file),
            size,
            max: max.max(1),
            runs: 0,
        })
    }

    /// Appends whole records, rotating before one would pass the cap (a
    /// record larger than the cap itself is cut).
    async fn append(&mut self, mut batch: &[u8]) -> std::io::Result<()> {
        while !batch.is_empty() {
            let room = usize::try_from(self.max - self.size).unwrap_or(usize::MAX);
            let now = if batch.len() <= room {
                batch.len()
            } else {
                // The whole records that fit.
                match batch[..room].iter().rposition(|&b| b == b'\n') {
                    Some(end) => end + 1,
                    None if self.size > 0 => 0,
                    None => room,
                }
            };
            if now == 0 {
                self.rotate().await?;
                continue;
            }
            self.file.write_all(&batch[..now]).await?;
            self.size += now as u64;
            batch = &batch[now..];
        }
        self.file.flush().await
    }

    async fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush().await?;
        tokio::fs::rename(&self.path, rotated(&self.path)).await?;
        self.reopen().await
    }

    async fn reopen(&mut self) -> std::io::Result<()> {
        self.file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)
            .await?;
        self.size = 0;
        Ok(())
    }

    /// current → previous, unless this is the first run of this process
    /// and nothing is there from the one before.
    async fn new_run(&mut self, dir: &Path) -> std::io::Result<()> {
        self.runs += 1;
        let older = rotated(&self.path);
        if self.runs == 1 && self.size == 0 && !older.exists() {
            return Ok(());
        }
        self.file.flush().await?;
        let previous = dir.join(PREVIOUS);
        tokio::fs::rename(&self.path, &previous).await?;
        match tokio::fs::rename(&older, rotated(&previous)).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match tokio::fs::remove_file(rotated(&previous)).await {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            other => other?,
        }
        self.reopen().await
    }
}

/// How long a test may wait for a writer task.
#[cfg(test)]
const WAIT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A clock the test moves: the monotonic part in ms from a fixed start.
    static FAKE_MS: AtomicU64 = AtomicU64::new(0);
    fn fake_clock() -> (Instant, SystemTime) {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let start = *START.get_or_init(Instant::now);
        let ms = Duration::from_millis(FAKE_MS.load(Ordering::SeqCst));
        (
            start + ms,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + ms,
        )
    }

    #[test]
    fn a_record_is_one_parseable_line() {
        let mut buf = Vec::new();
        let time = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        format_record(
            &mut buf,
            time,
            LogStream::Stdout,
            Some(b"abc-1"),
            b"hello world",
        );
        format_record(&mut buf, time, LogStream::Stderr, None, b"bad \xff utf8");
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(
            text,
            "2023-11-14T22:13:20.000000005Z stdout abc-1 hello world\n\
             2023-11-14T22:13:20.000000005Z stderr - bad \u{fffd} utf8\n"
        );
        let records: Vec<LogRecord> = text.lines().filter_map(LogRecord::parse).collect();
        assert_eq!(
            records[0],
            LogRecord {
                time,
                stream: LogStream::Stdout,
                request: Some("abc-1".into()),
                text: "hello world".into(),
            }
        );
        assert_eq!(records[1].request, None);
        assert_eq!(LogRecord::parse("not a record"), None);
    }

    #[test]
    fn request_ids_are_checked() {
        assert!(is_request_id(b"Ab.9_-"));
        assert!(!is_request_id(b""));
        assert!(!is_request_id(b"a b"));
        assert!(!is_request_id(&[b'a'; 65]));
    }

    #[test]
    fn the_rate_allows_a_burst_then_refills() {
        let start = Instant::now();
        let mut rate = RateLimit::new(100, 400, start);
        assert!(rate.take(400, start));
        assert!(!rate.take(1, start));
        assert!(!rate.take(60, start + Duration::from_millis(500)));
        assert!(rate.take(50, start + Duration::from_millis(500)));
        // Never more than the burst, however long it waited.
        assert!(!rate.take(401, start + Duration::from_secs(3600)));
        assert!(rate.take(400, start + Duration::from_secs(3600)));
    }

    async fn wait_for(dir: &Path, file: &str, count: usize) -> Vec<LogRecord> {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            let records: Vec<_> = text.lines().filter_map(LogRecord::parse).collect();
            if records.len() >= count || Instant::now() > deadline {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn lines_are_written_dropped_past_the_rate_and_the_drop_told() {
        let tmp = tempfile::tempdir().unwrap();
        let config = LogConfig {
            max_file_bytes: 1 << 20,
            rate: 100,
            burst: 100,
            capture: true,
        };
        let logs = PodLogs::open(tmp.path().join("p"), "ns", "p", config, fake_clock).unwrap();
        let mut follow = logs.follow();
        logs.line(LogStream::Stdout, Some(b"r1"), &[b'a'; 59]); // 60 of 100
        logs.line(LogStream::Stdout, Some(b"r1"), &[b'b'; 49]); // dropped
        logs.line(LogStream::Stdout, Some(b"bad id"), b"c"); // 62 of 100
        FAKE_MS.fetch_add(1000, Ordering::SeqCst);
        logs.line(LogStream::Stdout, None, b"d");
        let records = wait_for(logs.dir(), CURRENT, 4).await;
        let got: Vec<(&str, Option<&str>, &str)> = records
            .iter()
            .map(|r| (r.stream.as_str(), r.request.as_deref(), r.text.as_str()))
            .collect();
        let a = "a".repeat(59);
        assert_eq!(
            got,
            [
                ("stdout", Some("r1"), a.as_str()),
                // The next line written tells of the drop first.
                (
                    "stderr",
                    None,
                    "[skiff: 50 bytes of output dropped: the pod logs faster than 100/s]"
                ),
                ("stdout", None, "c"),
                ("stdout", None, "d"),
            ]
        );
        // Followers get the same records.
        let mut followed = String::new();
        while followed.lines().count() < 4 {
            let chunk = tokio::time::timeout(WAIT, follow.recv())
                .await
                .unwrap()
                .unwrap();
            followed.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        let parsed: Vec<_> = followed.lines().filter_map(LogRecord::parse).collect();
        assert_eq!(parsed, records);
        // Reading: the tail, and since a time.
        let tail = logs.records(false, Some(1), None).await.unwrap();
        assert_eq!(tail[0].text, "d");
        let since = logs
            .records(false, None, Some(records[3].time))
            .await
            .unwrap();
        assert_eq!(since.len(), 1);
        assert!(
            logs.records(true, None, None).await.is_err(),
            "no previous run"
        );
        // A drop at the end of a run is told when the run's output is
        // flushed, with no line after it.
        logs.line(LogStream::Stdout, None, &[b'e'; 200]);
        logs.flush().await;
        let last = logs.records(false, Some(1), None).await.unwrap();
        assert_eq!(
            last[0].text,
            "[skiff: 201 bytes of output dropped: the pod logs faster than 100/s]"
        );
    }

    #[tokio::test]
    async fn a_file_rotates_between_records_and_runs_move_to_previous() {
        let tmp = tempfile::tempdir().unwrap();
        let config = LogConfig {
            max_file_bytes: 200,
            ..LogConfig::default()
        };
        let logs = PodLogs::open(tmp.path().join("p"), "ns", "p", config, fake_clock).unwrap();
        logs.start_run().await.unwrap();
        assert!(
            !logs.dir().join(PREVIOUS).exists(),
            "a first run has no previous"
        );
        for i in 0..6 {
            logs.line(LogStream::Stdout, None, format!("line {i}").as_bytes());
        }
        logs.start_run().await.unwrap();
        let size = |name: &str| std::fs::metadata(logs.dir().join(name)).unwrap().len();
        assert!(size("previous.log") <= 200 && size("previous.log.1") <= 200);
        let previous = logs.records(true, None, None).await.unwrap();
        let texts: Vec<_> = previous.iter().map(|r| r.text.as_str()).collect();
        // Each record is 47 bytes: 4 to a file, whole.
        assert_eq!(
            texts,
            ["line 0", "line 1", "line 2", "line 3", "line 4", "line 5"]
        );
        assert_eq!(size("current.log"), 0);
        assert!(!logs.dir().join("current.log.1").exists());
        logs.line(LogStream::Stderr, None, b"second run");
        logs.start_run().await.unwrap();
        // The older previous run is gone, its rotated part too.
        let previous = logs.records(true, None, None).await.unwrap();
        assert_eq!(previous.len(), 1);
        assert!(!logs.dir().join("previous.log.1").exists());
        logs.close().await;
    }
}
