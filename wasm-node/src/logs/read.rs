//! The read side of pods' logs: answers a reader of any size or speed
//! may ask for without costing the node more than a chunk at a time, and
//! without holding up the pod's writer.
//!
//! A read takes the pod's file lock only to open its run's files and note
//! their lengths ([`RunFiles`]); a rotation or a new run renames files,
//! and an open file keeps its bytes, so the reading after that needs no
//! lock. The answer is made a chunk ([`READ_CHUNK`]) at a time on a
//! blocking thread: `tailLines` is found scanning back from the end, so
//! the last line of a 20 MiB log costs a block, not the whole file.
//!
//! A follow ([`PodLogs::read_and_follow`]) subscribes to the writer's
//! broadcast under the same lock as it notes the lengths. The writer
//! appends and broadcasts under that lock too, so every chunk of records
//! is either in the files before those lengths or yet to come through the
//! subscription: the answer has each record once, whatever the records'
//! times say.

use std::cell::Cell;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt as _};
use skiff_wasm::LogStream;
use tokio::sync::broadcast;

use super::{CURRENT, MAX_LINE, PREVIOUS, PodLogs, format_record, rotated};

/// A log answer is made and sent this much at a time (64 KiB): what one
/// answer holds in memory, give or take a record.
pub const READ_CHUNK: usize = 64 << 10;

/// The longest record a reader keeps whole: a line of [`MAX_LINE`] bytes
/// each replaced by 3, and its prefix. Only a damaged file has longer
/// ones; they are skipped.
const MAX_RECORD: usize = 3 * MAX_LINE + 256;

/// Bytes of a record's beginning that hold its time and the space after.
const TIME_PREFIX: usize = 40;

/// What to read of a pod's logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadQuery {
    /// The run before the current one.
    pub previous: bool,
    /// Only the last this many records (of those since `since`).
    pub tail_lines: Option<usize>,
    /// Only records at or after this time.
    pub since: Option<SystemTime>,
}

/// A run's files as they were at one instant: open, with their lengths
/// then, the older (rotated) part first. Reading them never goes past
/// those lengths, so records appended since are not read twice.
pub struct RunFiles {
    parts: Vec<(std::fs::File, u64)>,
    /// Bytes read from the files so far (what the tests hold a tail to).
    bytes_read: Cell<u64>,
}

impl RunFiles {
    /// Opens the current run's files or, with `previous`, the run
    /// before's; `NotFound` when there is no such run.
    fn open(dir: &Path, previous: bool) -> io::Result<RunFiles> {
        let path = dir.join(if previous { PREVIOUS } else { CURRENT });
        let newer = std::fs::File::open(&path)?;
        let older = match std::fs::File::open(rotated(&path)) {
            Ok(older) => Some(older),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut parts = Vec::with_capacity(2);
        for file in older.into_iter().chain([newer]) {
            let len = file.metadata()?.len();
            parts.push((file, len));
        }
        Ok(RunFiles {
            parts,
            bytes_read: Cell::new(0),
        })
    }

    /// The parts' lengths together: the end of what may be read.
    fn len(&self) -> u64 {
        self.parts.iter().map(|(_, len)| len).sum()
    }

    /// Reads at `pos` of the parts taken one after the other, no further
    /// than the end of the part `pos` is in; 0 at the end (or should a
    /// file have shrunk under us).
    fn read_at(&self, mut pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        for (file, len) in &self.parts {
            if pos < *len {
                let want = usize::try_from(len - pos).map_or(buf.len(), |n| n.min(buf.len()));
                let n = file.read_at(&mut buf[..want], pos)?;
                self.bytes_read.set(self.bytes_read.get() + n as u64);
                return Ok(n);
            }
            pos -= len;
        }
        Ok(0)
    }

    fn read_exact_at(&self, mut pos: u64, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(pos, buf)? {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "a log file shrank while it was read",
                    ));
                }
                n => {
                    pos += n as u64;
                    buf = &mut buf[n..];
                }
            }
        }
        Ok(())
    }
}

/// Opens a run's files on a blocking thread.
async fn open_run(dir: PathBuf, previous: bool) -> io::Result<RunFiles> {
    tokio::task::spawn_blocking(move || RunFiles::open(&dir, previous))
        .await
        .map_err(io::Error::other)?
}

/// The time a record begins with, if the line is one.
fn record_time(line: &[u8]) -> Option<SystemTime> {
    let end = line.iter().position(|&b| b == b' ')?;
    let text = std::str::from_utf8(&line[..end]).ok()?;
    let time = DateTime::parse_from_rfc3339(text).ok()?;
    Some(time.with_timezone(&Utc).into())
}

/// Whether a record beginning with `prefix` is at or after `since`.
fn is_since(prefix: &[u8], since: Option<SystemTime>) -> bool {
    since.is_none_or(|since| record_time(prefix).is_some_and(|time| time >= since))
}

/// Where the last `n` records before `end` (of those at or after `since`)
/// begin: found scanning back from `end` a block at a time, so that a
/// tail reads about what it returns, not the files' size. A torn last
/// line (a crash mid-write) is no record and not counted.
fn tail_start(files: &RunFiles, end: u64, n: usize, since: Option<SystemTime>) -> io::Result<u64> {
    if n == 0 {
        return Ok(end);
    }
    let mut buf = vec![0; READ_CHUNK];
    let mut prefix = [0; TIME_PREFIX];
    let mut hi = end;
    // Where the line found last begins (after the newline before it):
    // none before the last newline is found.
    let mut next: Option<u64> = None;
    let mut count = 0;
    while hi > 0 {
        let lo = hi.saturating_sub(READ_CHUNK as u64);
        let block = &mut buf[..(hi - lo) as usize];
        files.read_exact_at(lo, block)?;
        for i in (0..block.len()).rev() {
            if block[i] != b'\n' {
                continue;
            }
            let begins = lo + i as u64 + 1;
            // A line of more than its newline, then: is it one counted?
            if next.is_some_and(|line_end| line_end > begins + 1) {
                let line_end = next.unwrap_or(begins);
                let counted = match since {
                    None => true,
                    Some(_) => {
                        let have = usize::try_from(line_end - begins)
                            .unwrap_or(TIME_PREFIX)
                            .min(TIME_PREFIX);
                        let start = i + 1;
                        let head = if start + have <= block.len() {
                            &block[start..start + have]
                        } else {
                            files.read_exact_at(begins, &mut prefix[..have])?;
                            &prefix[..have]
                        };
                        is_since(head, since)
                    }
                };
                if counted {
                    count += 1;
                    if count == n {
                        return Ok(begins);
                    }
                }
            }
            next = Some(begins);
        }
        hi = lo;
    }
    // Fewer than `n` in all: from the beginning.
    Ok(0)
}

/// Reads a run's records forward, a chunk at a time.
struct Reader {
    files: RunFiles,
    /// Where the next read begins; set by the tail on the first read.
    pos: u64,
    end: u64,
    tail: Option<usize>,
    since: Option<SystemTime>,
    /// The beginning of a record the last block ended within.
    carry: Vec<u8>,
    /// Whether the line being read is too long to keep: skipped to its end.
    skipping: bool,
    buf: Box<[u8]>,
}

impl Reader {
    fn new(files: RunFiles, query: ReadQuery) -> Reader {
        let end = files.len();
        Reader {
            files,
            pos: 0,
            end,
            tail: query.tail_lines,
            since: query.since,
            carry: Vec::new(),
            skipping: false,
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
        }
    }

    /// The next chunk of whole records, about [`READ_CHUNK`] bytes (one
    /// block's worth, and the record it began within); `None` at the end.
    /// Records before `since` are skipped here, so a chunk is never empty.
    fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if let Some(n) = self.tail.take() {
            self.pos = tail_start(&self.files, self.end, n, self.since)?;
        }
        let Reader {
            files,
            pos,
            end,
            since,
            carry,
            skipping,
            buf,
            ..
        } = self;
        let mut out = Vec::new();
        while out.is_empty() && *pos < *end {
            let want = usize::try_from(*end - *pos).map_or(buf.len(), |n| n.min(buf.len()));
            let n = files.read_at(*pos, &mut buf[..want])?;
            if n == 0 {
                // Shrunk under us: what there was has been read.
                *pos = *end;
                break;
            }
            *pos += n as u64;
            let mut block = &buf[..n];
            while let Some(newline) = block.iter().position(|&b| b == b'\n') {
                let piece = &block[..=newline];
                block = &block[newline + 1..];
                if *skipping {
                    *skipping = false;
                    continue;
                }
                let line = if carry.is_empty() {
                    piece
                } else {
                    carry.extend_from_slice(piece);
                    &carry[..]
                };
                if is_since(line, *since) {
                    out.extend_from_slice(line);
                }
                carry.clear();
            }
            if !*skipping && !block.is_empty() {
                if carry.len() + block.len() > MAX_RECORD {
                    *skipping = true;
                    carry.clear();
                } else {
                    carry.extend_from_slice(block);
                }
            }
        }
        // A torn end (no newline) is left unread: no record.
        Ok((!out.is_empty()).then(|| Bytes::from(out)))
    }
}

/// A log answer: chunks of whole records in the file format (parse them
/// with [`super::LogRecord::parse`]), each about [`READ_CHUNK`] bytes at
/// most; an error ends it. Dropping it stops the reading.
pub struct LogChunks(Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>);

impl Stream for LogChunks {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.as_mut().poll_next(cx)
    }
}

/// The records of `files` a block at a time, each read on a blocking
/// thread (a worker thread never waits on the disk).
fn file_chunks(reader: Reader) -> impl Stream<Item = io::Result<Bytes>> + Send {
    futures::stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        let step = tokio::task::spawn_blocking(move || {
            let chunk = reader.next_chunk();
            (reader, chunk)
        })
        .await;
        match step {
            Ok((reader, Ok(Some(chunk)))) => Some((Ok(chunk), Some(reader))),
            Ok((_, Ok(None))) => None,
            Ok((_, Err(e))) => Some((Err(e), None)),
            Err(e) => Some((Err(io::Error::other(e)), None)),
        }
    })
}

/// Every chunk the writer broadcasts from now on, cut at records into
/// pieces of about [`READ_CHUNK`], until the pod is gone. A follower that
/// fell behind gets a last record saying so and the answer ends: lines it
/// missed are not skipped silently, and it may follow again.
fn followed(receiver: broadcast::Receiver<Bytes>) -> impl Stream<Item = io::Result<Bytes>> + Send {
    futures::stream::unfold(Some((receiver, Bytes::new())), |state| async move {
        let (mut receiver, mut rest) = state?;
        loop {
            if !rest.is_empty() {
                let piece = split_records(&mut rest, READ_CHUNK);
                return Some((Ok(piece), Some((receiver, rest))));
            }
            match receiver.recv().await {
                Ok(chunk) => rest = chunk,
                Err(broadcast::error::RecvError::Closed) => return None,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Some((Ok(lag_note(missed)), None));
                }
            }
        }
    })
}

/// The last record of a follow that fell behind.
fn lag_note(missed: u64) -> Bytes {
    let mut note = Vec::new();
    let text = format!(
        "[skiff: this reader fell behind the pod's log and {missed} chunks of it were skipped; the answer ends here, follow again to go on]"
    );
    format_record(
        &mut note,
        SystemTime::now(),
        LogStream::Stderr,
        None,
        text.as_bytes(),
    );
    Bytes::from(note)
}

/// Splits off the front of `rest`: whole records up to `max` bytes (or
/// the first record, should it alone be longer).
fn split_records(rest: &mut Bytes, max: usize) -> Bytes {
    if rest.len() <= max {
        return std::mem::take(rest);
    }
    let cut = rest[..max]
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| i + 1)
        .or_else(|| {
            rest[max..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| max + i + 1)
        })
        .unwrap_or(rest.len());
    rest.split_to(cut)
}

impl PodLogs {
    /// Records of the current run or, with `previous`, of the run before
    /// (an error `NotFound` when there was none), oldest first: those at
    /// or after `since` when given, then the last `tail_lines` of them
    /// when given. Records pending in memory are not included; follow to
    /// get them as they are written.
    pub async fn read(&self, query: ReadQuery) -> io::Result<LogChunks> {
        let files = {
            // Held only while the files are opened and measured (see the
            // module's documentation): never while they are read.
            let _file = self.shared.file.lock().await;
            open_run(self.dir.clone(), query.previous).await?
        };
        Ok(LogChunks(Box::pin(file_chunks(Reader::new(files, query)))))
    }

    /// What [`PodLogs::read`] answers, then every record appended after
    /// it, each once, until the pod is gone (the next runs' records
    /// included); the answer ends early, with a last record saying so,
    /// should the reader fall more than 256 chunks behind the writer. A
    /// previous run has ended: with `previous`, this is a read.
    pub async fn read_and_follow(&self, query: ReadQuery) -> io::Result<LogChunks> {
        if query.previous {
            return self.read(query).await;
        }
        let (files, receiver) = {
            // The writer appends, rotates, starts a new run and broadcasts
            // what it appended all under this lock (`Shared::drain_into`):
            // subscribed and measured at one instant, every chunk is in
            // the files before these lengths or in the subscription.
            let _file = self.shared.file.lock().await;
            let receiver = self.shared.follow.subscribe();
            (open_run(self.dir.clone(), false).await?, receiver)
        };
        let chunks = file_chunks(Reader::new(files, query)).chain(followed(receiver));
        Ok(LogChunks(Box::pin(chunks)))
    }
}

/// Reads a pod's log directory (see [`PodLogs::read`]) when no writer is
/// live: nothing rotates its files then.
pub async fn read_dir(dir: &Path, query: ReadQuery) -> io::Result<LogChunks> {
    let files = open_run(dir.to_owned(), query.previous).await?;
    Ok(LogChunks(Box::pin(file_chunks(Reader::new(files, query)))))
}

/// Every record of an answer, parsed (an error at the first failure).
#[cfg(test)]
pub(super) async fn records(mut chunks: LogChunks) -> io::Result<Vec<super::LogRecord>> {
    let mut records = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        let text = String::from_utf8_lossy(&chunk);
        records.extend(text.lines().filter_map(super::LogRecord::parse));
    }
    Ok(records)
}

#[cfg(test)]
impl PodLogs {
    /// [`PodLogs::read`]'s records, parsed.
    pub(super) async fn records(
        &self,
        previous: bool,
        tail_lines: Option<usize>,
        since: Option<SystemTime>,
    ) -> io::Result<Vec<super::LogRecord>> {
        let query = ReadQuery {
            previous,
            tail_lines,
            since,
        };
        records(self.read(query).await?).await
    }

    /// The writer's broadcast itself, for tests of what it carries.
    pub(super) fn follow(&self) -> broadcast::Receiver<Bytes> {
        self.shared.follow.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::{LogConfig, LogRecord, WAIT};
    use skiff_wasm::LogSink as _;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    /// Records of `(seconds, text)`, in the file format.
    fn file_of(records: &[(u64, &str)]) -> Vec<u8> {
        let mut buf = Vec::new();
        for (seconds, text) in records {
            format_record(
                &mut buf,
                at(*seconds),
                LogStream::Stdout,
                None,
                text.as_bytes(),
            );
        }
        buf
    }

    fn texts(records: &[LogRecord]) -> Vec<&str> {
        records.iter().map(|r| r.text.as_str()).collect()
    }

    /// Every chunk of a read of `files`, and the bytes it read.
    fn chunks_of(files: RunFiles, query: ReadQuery) -> (Vec<Bytes>, u64) {
        let mut reader = Reader::new(files, query);
        let mut chunks = Vec::new();
        while let Some(chunk) = reader.next_chunk().unwrap() {
            chunks.push(chunk);
        }
        (chunks, reader.files.bytes_read.get())
    }

    fn parse(chunks: &[Bytes]) -> Vec<LogRecord> {
        chunks
            .iter()
            .flat_map(|c| {
                String::from_utf8_lossy(c)
                    .lines()
                    .filter_map(LogRecord::parse)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn a_tail_is_read_back_from_the_end_across_the_rotated_file() {
        let tmp = tempfile::tempdir().unwrap();
        // A full rotated file (about 1.5 MiB) and two records after it.
        let older: Vec<(u64, String)> = (0..30_000).map(|i| (i, format!("old {i}"))).collect();
        let older: Vec<(u64, &str)> = older.iter().map(|(s, t)| (*s, t.as_str())).collect();
        std::fs::write(tmp.path().join("current.log.1"), file_of(&older)).unwrap();
        let mut newer = file_of(&[(40_000, "new 0"), (40_001, "new 1")]);
        // A torn last line (the node crashed mid-write) is no record.
        newer.extend_from_slice(b"2023-11-14T22:13:20.000000000Z stdout - tor");
        std::fs::write(tmp.path().join(CURRENT), &newer).unwrap();
        let query = |tail_lines| ReadQuery {
            tail_lines,
            ..ReadQuery::default()
        };

        let (chunks, read) = chunks_of(RunFiles::open(tmp.path(), false).unwrap(), query(Some(3)));
        assert_eq!(texts(&parse(&chunks)), ["old 29999", "new 0", "new 1"]);
        // Found from the end: a block or two, not the files.
        assert!(
            read <= 2 * READ_CHUNK as u64,
            "{read} bytes read for 3 lines"
        );

        let (chunks, _) = chunks_of(RunFiles::open(tmp.path(), false).unwrap(), query(Some(0)));
        assert!(chunks.is_empty());
        let (chunks, _) = chunks_of(
            RunFiles::open(tmp.path(), false).unwrap(),
            query(Some(1_000_000)),
        );
        let all = parse(&chunks);
        assert_eq!(all.len(), 30_002);
        assert_eq!(all[0].text, "old 0");
        assert_eq!(all[30_001].text, "new 1");
        // A tail that ends in the rotated file: records 29997.. of it.
        let (chunks, _) = chunks_of(RunFiles::open(tmp.path(), false).unwrap(), query(Some(5)));
        assert_eq!(
            texts(&parse(&chunks)),
            ["old 29997", "old 29998", "old 29999", "new 0", "new 1"]
        );
    }

    #[test]
    fn since_skips_older_records_whatever_their_order() {
        let tmp = tempfile::tempdir().unwrap();
        // Times are not monotonic (instances, a clock stepped back).
        std::fs::write(
            tmp.path().join("current.log.1"),
            file_of(&[(1, "a"), (3, "b")]),
        )
        .unwrap();
        std::fs::write(
            tmp.path().join(CURRENT),
            file_of(&[(1, "c"), (4, "d"), (2, "e")]),
        )
        .unwrap();
        let read = |tail_lines, since| {
            let files = RunFiles::open(tmp.path(), false).unwrap();
            let (chunks, _) = chunks_of(
                files,
                ReadQuery {
                    previous: false,
                    tail_lines,
                    since,
                },
            );
            texts(&parse(&chunks))
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(read(None, Some(at(3))), ["b", "d"]);
        assert_eq!(read(None, Some(at(2))), ["b", "d", "e"]);
        // The last n of those since: older ones are not counted.
        assert_eq!(read(Some(1), Some(at(3))), ["d"]);
        assert_eq!(read(Some(2), Some(at(3))), ["b", "d"]);
        assert_eq!(read(Some(2), None), ["d", "e"]);
        assert!(read(None, Some(at(5))).is_empty());
    }

    #[tokio::test]
    async fn an_answer_streams_in_bounded_chunks_of_whole_records() {
        let tmp = tempfile::tempdir().unwrap();
        let text = "x".repeat(1000);
        let older: Vec<(u64, &str)> = (0..1500).map(|i| (i, text.as_str())).collect();
        let older = file_of(&older);
        let newer = file_of(&[(2000, "last")]);
        std::fs::write(tmp.path().join("current.log.1"), &older).unwrap();
        std::fs::write(tmp.path().join(CURRENT), &newer).unwrap();
        let mut answer = read_dir(tmp.path(), ReadQuery::default()).await.unwrap();
        let mut all = Vec::new();
        let mut count = 0;
        while let Some(chunk) = answer.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() <= READ_CHUNK + MAX_RECORD, "{}", chunk.len());
            assert!(chunk.ends_with(b"\n"), "whole records only");
            all.extend_from_slice(&chunk);
            count += 1;
        }
        assert!(count > 20, "{count} chunks for 1.5 MB");
        assert_eq!(all, [older, newer].concat());
        assert_eq!(
            read_dir(
                tmp.path(),
                ReadQuery {
                    previous: true,
                    ..ReadQuery::default()
                }
            )
            .await
            .err()
            .map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
    }

    /// A clock that does not move: every record has the same time, so
    /// nothing but positions can tell the records apart.
    fn frozen_clock() -> (Instant, SystemTime) {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        (*START.get_or_init(Instant::now), at(0))
    }

    async fn next_records(answer: &mut LogChunks, count: usize) -> Vec<LogRecord> {
        let mut got = Vec::new();
        while got.len() < count {
            let chunk = tokio::time::timeout(WAIT, answer.next())
                .await
                .expect("records in time")
                .expect("the answer goes on")
                .unwrap();
            got.extend(
                String::from_utf8_lossy(&chunk)
                    .lines()
                    .filter_map(LogRecord::parse),
            );
        }
        got
    }

    #[tokio::test]
    async fn a_follow_has_every_record_once_across_rotations_and_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let config = LogConfig {
            // 4 records of 47 bytes a file.
            max_file_bytes: 200,
            ..LogConfig::default()
        };
        let logs = PodLogs::open(tmp.path().join("p"), "ns", "p", config, frozen_clock).unwrap();
        logs.start_run().await.unwrap();
        let line = |i: usize| logs.line(LogStream::Stdout, None, format!("line {i:02}").as_bytes());
        for i in 0..6 {
            line(i);
        }
        logs.flush().await;
        let mut answer = logs.read_and_follow(ReadQuery::default()).await.unwrap();
        // Appended after the snapshot but before the answer reads the
        // files: rotated past (the snapshot's rotated file is replaced),
        // and a new run begins; all of it comes through the broadcast.
        for i in 6..10 {
            line(i);
            logs.flush().await;
        }
        logs.start_run().await.unwrap();
        for i in 10..14 {
            line(i);
        }
        logs.flush().await;
        let got = next_records(&mut answer, 14).await;
        let want: Vec<String> = (0..14).map(|i| format!("line {i:02}")).collect();
        assert_eq!(texts(&got), want);
        // Nothing repeated after them either: the next record is the next.
        logs.line(LogStream::Stdout, None, b"end");
        logs.flush().await;
        assert_eq!(texts(&next_records(&mut answer, 1).await), ["end"]);
        logs.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follow_begun_while_the_pod_writes_misses_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let config = LogConfig {
            max_file_bytes: 4096,
            ..LogConfig::default()
        };
        let logs =
            Arc::new(PodLogs::open(tmp.path().join("p"), "ns", "p", config, frozen_clock).unwrap());
        const LINES: usize = 3000;
        let writer = tokio::spawn({
            let logs = logs.clone();
            async move {
                for i in 0..LINES {
                    logs.line(LogStream::Stdout, None, format!("{i}").as_bytes());
                    if i % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                logs.flush().await;
            }
        });
        // Whenever it begins, the answer is every line from the first,
        // in order, once (a tail that covers the run's files).
        tokio::task::yield_now().await;
        let mut answer = logs
            .read_and_follow(ReadQuery {
                tail_lines: Some(LINES),
                ..ReadQuery::default()
            })
            .await
            .unwrap();
        writer.await.unwrap();
        let last = (LINES - 1).to_string();
        let mut got = Vec::new();
        while got.last().is_none_or(|r: &LogRecord| r.text != last) {
            got.extend(next_records(&mut answer, 1).await);
        }
        // The rotated-away part before the answer's files is gone; what
        // the answer has is a run of consecutive lines up to the last.
        let seen = texts(&got);
        let first: usize = seen[0].parse().unwrap();
        let want: Vec<String> = (first..LINES).map(|i| i.to_string()).collect();
        assert_eq!(seen, want);
        logs.line(LogStream::Stdout, None, b"end");
        logs.flush().await;
        assert_eq!(texts(&next_records(&mut answer, 1).await), ["end"]);
    }

    #[tokio::test]
    async fn a_follower_that_falls_behind_is_told_and_the_answer_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let logs = PodLogs::open(
            tmp.path().join("p"),
            "ns",
            "p",
            LogConfig::default(),
            frozen_clock,
        )
        .unwrap();
        let answer = logs.read_and_follow(ReadQuery::default()).await.unwrap();
        // More chunks than the broadcast keeps, none read.
        for i in 0..300 {
            logs.line(LogStream::Stdout, None, format!("{i}").as_bytes());
            logs.flush().await;
        }
        let got = tokio::time::timeout(WAIT, records(answer))
            .await
            .expect("the answer ends")
            .unwrap();
        let last = got.last().expect("a note");
        assert!(
            last.text
                .starts_with("[skiff: this reader fell behind the pod's log and "),
            "{}",
            last.text
        );
        assert_eq!(last.stream, LogStream::Stderr);
    }

    #[test]
    fn broadcast_chunks_are_cut_at_records() {
        let mut rest = Bytes::from_static(b"aaa\nbb\ncccccc\nd\n");
        assert_eq!(split_records(&mut rest, 8), "aaa\nbb\n");
        // A record longer than the cap goes whole.
        assert_eq!(split_records(&mut rest, 3), "cccccc\n");
        assert_eq!(split_records(&mut rest, 8), "d\n");
        assert!(rest.is_empty());
    }
}
