//! Events: what happened to an object, told by the part of the system that
//! saw it (the scheduler, a node, a controller). Like Kubernetes' core
//! Events, their fields are top-level, and repeats of one happening are
//! folded into one Event with a `count`, so a crash loop is one Event whose
//! count grows, not a stream of objects.
//!
//! The folding itself ([`Folder`]) is pure: it decides, from the clock it
//! is handed, which happenings are written now and which wait to be folded
//! into a later write. A recorder (in `skiff-client`) drives it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;
use crate::validate::{Validator, dns_subdomain, validate_dns_label};

/// Longest `reason`: a CamelCase word, as Kubernetes' reasons are.
pub const MAX_REASON: usize = 128;
/// The reasons a node tells: with one Event per happening's name, a node
/// can hold at most these many Events per pod bound to it.
pub const NODE_REASONS: &[&str] = &[
    "Pulling",
    "Pulled",
    "Started",
    "Killing",
    "Unhealthy",
    "BackOff",
    "Failed",
    "OOMKilled",
    "OutOfFuel",
];

/// Longest `message`, in characters (as OpenAPI's `maxLength` counts); a
/// recorder cuts longer ones rather than fail to tell.
pub const MAX_MESSAGE: usize = 1024;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Event {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The object this Event is about.
    pub involved_object: InvolvedObject,
    /// Why, as one CamelCase word: `Scheduled`, `BackOff`, `Unhealthy`.
    pub reason: String,
    /// What happened, for people.
    #[serde(default)]
    pub message: String,
    /// `Normal` or `Warning`.
    #[serde(rename = "type", default)]
    pub severity: Severity,
    /// How many times it happened (at least 1).
    #[serde(default = "one")]
    pub count: u64,
    /// When it first and last happened (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub first_timestamp: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_timestamp: String,
    /// Who told.
    #[serde(default)]
    pub source: EventSource,
}

fn one() -> u64 {
    1
}

/// The object an Event is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvolvedObject {
    /// A kind of this API: `Pod`, `Node`, `Deployment`.
    pub kind: String,
    /// Empty for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Severity {
    #[default]
    Normal,
    Warning,
}

/// The part of the system that told.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventSource {
    /// `scheduler`, `node`, `deployment-controller`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub component: String,
    /// The node, for Events a node told.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
}

impl Event {
    pub fn validate(&self, v: &mut Validator) {
        let involved = &self.involved_object;
        if crate::Kind::from_name(&involved.kind).is_none() {
            v.error(
                "involvedObject.kind",
                format!("`{}` is not a kind of this API", involved.kind),
            );
        }
        if let Err(reason) = dns_subdomain(&involved.name) {
            v.error("involvedObject.name", reason);
        }
        if !involved.namespace.is_empty() {
            validate_dns_label(v, "involvedObject.namespace", &involved.namespace);
        }
        let uid_ok = involved.uid.len() <= 64
            && involved
                .uid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !uid_ok {
            v.error(
                "involvedObject.uid",
                "must be at most 64 letters, digits and '-'",
            );
        }
        let reason_ok = !self.reason.is_empty()
            && self.reason.len() <= MAX_REASON
            && self.reason.bytes().all(|b| b.is_ascii_alphanumeric());
        if !reason_ok {
            v.error(
                "reason",
                format!("must be 1 to {MAX_REASON} letters and digits (CamelCase)"),
            );
        }
        if self.message.len() > MAX_MESSAGE {
            v.error("message", format!("must be at most {MAX_MESSAGE} bytes"));
        }
        if self.count == 0 {
            v.error("count", "must be at least 1");
        }
        for (field, at) in [
            ("firstTimestamp", &self.first_timestamp),
            ("lastTimestamp", &self.last_timestamp),
        ] {
            if !at.is_empty() && !is_rfc3339(at) {
                v.error(
                    field,
                    "must be an RFC 3339 time such as 2026-01-02T03:04:05Z",
                );
            }
        }
        for (field, value) in [
            ("source.component", &self.source.component),
            ("source.host", &self.source.host),
        ] {
            if let Err(reason) =
                dns_subdomain(value).or_else(|e| value.is_empty().then_some(()).ok_or(e))
            {
                v.error(field, reason);
            }
        }
    }
}

/// Whether `at` is an RFC 3339 time as Events carry them:
/// `2026-01-02T03:04:05Z`, with optional fractions of a second (up to 9
/// digits) and `Z` or an offset. The shape only: the API crate has no
/// calendar.
fn is_rfc3339(at: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let b = at.as_bytes();
    if b.len() < 20 || !at.is_ascii() {
        return false;
    }
    let fixed = digits(&at[0..4])
        && b[4] == b'-'
        && digits(&at[5..7])
        && b[7] == b'-'
        && digits(&at[8..10])
        && b[10] == b'T'
        && digits(&at[11..13])
        && b[13] == b':'
        && digits(&at[14..16])
        && b[16] == b':'
        && digits(&at[17..19]);
    let mut rest = &at[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let end = fraction
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        if !(1..=9).contains(&end) {
            return false;
        }
        rest = &fraction[end..];
    }
    let zone = rest == "Z"
        || (rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && digits(&rest[1..3])
            && rest.as_bytes()[3] == b':'
            && digits(&rest[4..6]));
    fixed && zone
}

/// The name of the Event about `involved` for `reason`, told by
/// `component`: the same happening always gets the same name, so a repeat
/// (from any process) updates the Event instead of adding one. A DNS label:
/// the object's name (cut, and made a label) and a hash of the rest.
pub fn event_name(involved: &InvolvedObject, reason: &str, source: &EventSource) -> String {
    // FNV-1a: stable across builds and versions, which std's hasher is not;
    // this names objects, it guards nothing.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [
        involved.kind.as_str(),
        &involved.namespace,
        &involved.name,
        &involved.uid,
        reason,
        &source.component,
        &source.host,
    ] {
        for byte in part.bytes().chain([0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    let mut stem: String = involved
        .name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .take(46)
        .collect();
    stem = stem.trim_matches('-').to_owned();
    if stem.is_empty() {
        stem.push('e');
    }
    format!("{stem}-{hash:016x}")
}

/// Cuts `message` to [`MAX_MESSAGE`] characters.
pub fn cut_message(message: &str) -> String {
    if message.chars().count() <= MAX_MESSAGE {
        return message.to_owned();
    }
    let kept: String = message.chars().take(MAX_MESSAGE - 3).collect();
    format!("{kept}...")
}

/// How repeats are folded and writes paced.
#[derive(Debug, Clone, Copy)]
pub struct FoldPolicy {
    /// After a write of an Event, a repeat waits this long to be written
    /// (folded with every repeat meanwhile); the wait doubles with each
    /// write of the same Event up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Writes per second over every Event, and the burst: beyond them,
    /// happenings wait (folded) rather than being dropped.
    pub rate: f64,
    pub burst: f64,
    /// Events remembered at most; the least recently seen is forgotten
    /// (its next repeat is written as a fresh happening of an existing
    /// Event, whose stored count the recorder then adds to).
    pub remembered: usize,
}

impl Default for FoldPolicy {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(300),
            rate: 5.0,
            burst: 50.0,
            remembered: 4096,
        }
    }
}

/// A write the folder asks for: the Event `name`, with `count` happenings
/// not yet written, the latest `message` and when it last happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Flush<T> {
    pub name: String,
    /// Happenings since the last write.
    pub count: u64,
    /// The latest happening's details (message, time): the caller's type.
    pub latest: T,
}

#[derive(Debug)]
struct Entry<T> {
    /// Happenings not yet written, and the latest of them.
    pending: u64,
    latest: Option<T>,
    /// When a repeat may next be written.
    next_write: Instant,
    delay: Duration,
    last_seen: Instant,
}

/// Folds happenings into paced writes. Pure: time comes from the caller.
#[derive(Debug)]
pub struct Folder<T> {
    policy: FoldPolicy,
    entries: HashMap<String, Entry<T>>,
    tokens: f64,
    refilled: Option<Instant>,
}

impl<T> Folder<T> {
    pub fn new(policy: FoldPolicy) -> Self {
        Self {
            policy,
            entries: HashMap::new(),
            tokens: policy.burst,
            refilled: None,
        }
    }

    /// Records a happening of Event `name` at `now`.
    pub fn record(&mut self, name: &str, latest: T, now: Instant) {
        if !self.entries.contains_key(name) && self.entries.len() >= self.policy.remembered {
            self.forget_oldest();
        }
        let entry = self.entries.entry(name.to_owned()).or_insert(Entry {
            pending: 0,
            latest: None,
            next_write: now,
            delay: self.policy.first_delay,
            last_seen: now,
        });
        entry.pending += 1;
        entry.latest = Some(latest);
        entry.last_seen = now;
    }

    /// The writes due at `now`, as many as the rate allows, oldest
    /// happening first among equals.
    pub fn due(&mut self, now: Instant) -> Vec<Flush<T>> {
        self.refill(now);
        let mut ready: Vec<(&String, Instant)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.pending > 0 && e.next_write <= now)
            .map(|(name, e)| (name, e.next_write))
            .collect();
        ready.sort_by_key(|&(name, at)| (at, name.clone()));
        let names: Vec<String> = ready
            .into_iter()
            .take(self.tokens.floor().max(0.0) as usize)
            .map(|(name, _)| name.clone())
            .collect();
        let mut flushes = Vec::with_capacity(names.len());
        for name in names {
            let entry = self.entries.get_mut(&name).expect("listed above");
            self.tokens -= 1.0;
            let count = std::mem::take(&mut entry.pending);
            let latest = entry.latest.take().expect("pending has a latest");
            entry.next_write = now + entry.delay;
            entry.delay = (entry.delay * 2).min(self.policy.max_delay);
            flushes.push(Flush {
                name,
                count,
                latest,
            });
        }
        flushes
    }

    /// When the next write may be due (for a recorder to sleep until):
    /// the earliest pending Event's turn, or later if the rate has no
    /// write to spare until then.
    pub fn next_due(&self) -> Option<Instant> {
        let turn = self
            .entries
            .values()
            .filter(|e| e.pending > 0)
            .map(|e| e.next_write)
            .min()?;
        let refilled = match self.refilled {
            Some(at) if self.tokens < 1.0 => {
                at + Duration::from_secs_f64((1.0 - self.tokens) / self.policy.rate)
            }
            _ => turn,
        };
        Some(turn.max(refilled))
    }

    /// Every pending write, whatever its turn and the rate: what is left
    /// when a recorder stops.
    pub fn drain(&mut self) -> Vec<Flush<T>> {
        self.entries
            .drain()
            .filter_map(|(name, entry)| {
                Some(Flush {
                    name,
                    count: entry.pending,
                    latest: entry.latest?,
                })
            })
            .filter(|flush| flush.count > 0)
            .collect()
    }

    /// Gives back a write that failed, to be tried again later.
    pub fn retry(&mut self, flush: Flush<T>, now: Instant) {
        if let Some(entry) = self.entries.get_mut(&flush.name) {
            entry.pending += flush.count;
            if entry.latest.is_none() {
                entry.latest = Some(flush.latest);
            }
            entry.next_write = now + self.policy.first_delay;
        }
    }

    /// Forgets Events not seen since `before` with nothing pending.
    pub fn forget_idle(&mut self, before: Instant) {
        self.entries
            .retain(|_, e| e.pending > 0 || e.last_seen >= before);
    }

    fn forget_oldest(&mut self) {
        if let Some(oldest) = self
            .entries
            .iter()
            .min_by_key(|(_, e)| (e.pending > 0, e.last_seen))
            .map(|(name, _)| name.clone())
        {
            self.entries.remove(&oldest);
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(then) = self.refilled {
            let gained = now.saturating_duration_since(then).as_secs_f64() * self.policy.rate;
            self.tokens = (self.tokens + gained).min(self.policy.burst);
        }
        self.refilled = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> FoldPolicy {
        FoldPolicy {
            first_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(40),
            rate: 1.0,
            burst: 3.0,
            remembered: 100,
        }
    }

    #[test]
    fn a_first_happening_is_written_at_once_and_repeats_are_folded() {
        let t0 = Instant::now();
        let mut folder = Folder::new(policy());
        folder.record("a", "first", t0);
        assert_eq!(
            folder.due(t0),
            vec![Flush {
                name: "a".into(),
                count: 1,
                latest: "first"
            }]
        );
        // A crash loop: a repeat every second for a minute.
        let mut writes = vec![(0, 1)];
        for s in 1..=60u64 {
            let now = t0 + Duration::from_secs(s);
            folder.record("a", "again", now);
            for flush in folder.due(now) {
                writes.push((s, flush.count));
            }
        }
        // Written at 0, 10, 30 (delay doubled to 20), 70 would be next
        // (capped at 40: 30 + 40); every happening counted once.
        assert_eq!(writes, vec![(0, 1), (10, 10), (30, 20)]);
        let later = t0 + Duration::from_secs(70);
        let last = folder.due(later);
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].count, 30);
        assert_eq!(last[0].latest, "again");
        assert!(folder.due(later).is_empty(), "nothing left to write");
    }

    #[test]
    fn writes_beyond_the_rate_wait_and_none_is_lost() {
        let t0 = Instant::now();
        let mut folder = Folder::new(policy());
        for i in 0..10 {
            folder.record(&format!("e{i}"), i, t0);
        }
        assert_eq!(folder.due(t0).len(), 3, "the burst");
        assert!(folder.due(t0).is_empty());
        let mut written = 3;
        let mut now = t0;
        while written < 10 {
            now += Duration::from_secs(1);
            let due = folder.due(now);
            assert!(due.len() <= 1, "one a second after the burst");
            written += due.len();
        }
        assert_eq!(now, t0 + Duration::from_secs(7));
    }

    #[test]
    fn the_next_wake_waits_for_the_rate() {
        let t0 = Instant::now();
        let mut folder = Folder::new(policy());
        for i in 0..5 {
            folder.record(&format!("e{i}"), i, t0);
        }
        assert_eq!(folder.next_due(), Some(t0));
        assert_eq!(folder.due(t0).len(), 3);
        // Two wait for a write to spare: a second from now, not now (a
        // recorder sleeping until then does not spin).
        assert_eq!(folder.next_due(), Some(t0 + Duration::from_secs(1)));
        let left = folder.drain();
        assert_eq!(left.iter().map(|f| f.count).sum::<u64>(), 2);
        assert_eq!(folder.next_due(), None);
    }

    #[test]
    fn failed_writes_come_back_and_memory_is_bounded() {
        let t0 = Instant::now();
        let mut folder = Folder::new(FoldPolicy {
            remembered: 2,
            ..policy()
        });
        folder.record("a", 1, t0);
        let flush = folder.due(t0).pop().unwrap();
        folder.retry(flush, t0);
        folder.record("a", 2, t0 + Duration::from_secs(1));
        let again = folder.due(t0 + Duration::from_secs(10)).pop().unwrap();
        assert_eq!((again.count, again.latest), (2, 2));
        folder.record("b", 0, t0);
        folder.record("c", 0, t0);
        assert!(folder.entries.len() <= 2);
        folder.forget_idle(t0 + Duration::from_secs(100));
        assert!(folder.entries.values().all(|e| e.pending > 0));
    }

    #[test]
    fn names_are_stable_dns_labels() {
        let involved = InvolvedObject {
            kind: "Pod".into(),
            namespace: "shop".into(),
            name: "Web_01.example".repeat(5),
            uid: "u1".into(),
        };
        let source = EventSource {
            component: "node".into(),
            host: "n1".into(),
        };
        let name = event_name(&involved, "BackOff", &source);
        assert!(crate::validate::dns_label(&name).is_ok(), "{name}");
        assert_eq!(name, event_name(&involved, "BackOff", &source));
        assert_ne!(name, event_name(&involved, "Started", &source));
        let other = InvolvedObject {
            uid: "u2".into(),
            ..involved.clone()
        };
        assert_ne!(name, event_name(&other, "BackOff", &source));
        assert_eq!(cut_message(&"é".repeat(1000)), "é".repeat(1000));
        assert_eq!(cut_message(&"é".repeat(2000)).chars().count(), MAX_MESSAGE);
    }

    #[test]
    fn times_are_rfc3339() {
        for good in [
            "2026-12-06T08:03:14Z",
            "2026-12-06T08:03:14.123456789Z",
            "2026-12-06T08:03:14+01:00",
        ] {
            assert!(is_rfc3339(good), "{good}");
        }
        for bad in [
            "",
            "2026-12-06 08:03:14Z",
            "2026-12-06T08:03:14",
            "2026-12-06T08:03:14.Z",
            "2026-12-06T08:03:14.1234567890Z",
            "2026-12-06T08:03:14Zjunk",
            "２０２６-12-06T08:03:14Z",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }
}
