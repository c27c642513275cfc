//! W3C Trace Context (level 1): the `traceparent` and `tracestate` headers
//! that tie a request to the requests made while serving it.
//!
//! - The node's ingress ([`continue_or_start`]) keeps a client's trace id
//!   when its `traceparent` is valid and gives the request a span of its
//!   own (a new parent-id); otherwise it starts a trace. An invalid
//!   `traceparent` is dropped, and `tracestate` goes along only with a
//!   valid one, at most [`MAX_TRACESTATE`] characters of it.
//! - A guest's outbound requests ([`propagate`]) carry the trace of the
//!   request it serves, each with a span of its own, unless the guest set
//!   a valid `traceparent` itself.
//!
//! Ids come from `fastrand` (a generator per thread, seeded once): trace
//! ids need to be unlikely to collide, not secret, and a request costs no
//! system call.

use http::{HeaderMap, HeaderName, HeaderValue};

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
/// The same names, parsed once: the ingress sets them on every request.
const TRACEPARENT_NAME: HeaderName = HeaderName::from_static(TRACEPARENT);
const TRACESTATE_NAME: HeaderName = HeaderName::from_static(TRACESTATE);

/// The most of a `tracestate` propagated: the spec asks every vendor to
/// pass on at least 512 characters and lets it cut the rest.
pub const MAX_TRACESTATE: usize = 512;
/// Members of a `tracestate` above which the spec has it discarded.
const MAX_TRACESTATE_MEMBERS: usize = 32;
/// Members longer than this are the first cut when truncating (spec).
const LONG_TRACESTATE_MEMBER: usize = 128;

/// The only flag level 1 defines; the others are reserved, and the spec
/// has vendors set them to zero.
const SAMPLED: u8 = 0x01;
/// `00-` + 32 + `-` + 16 + `-` + 2.
const LEN: usize = 55;

/// One `traceparent`: a trace, the span that sent the request, its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: u128,
    parent_id: u64,
    flags: u8,
}

impl TraceParent {
    /// A value of the header, by the rules of level 1: lowercase hex,
    /// neither id all zeros, version `ff` invalid. Version `00` is exactly
    /// 55 characters; a later version is read for its first four fields
    /// and may go on after a `-` (forward compatibility).
    pub fn parse(value: &[u8]) -> Option<Self> {
        if value.len() < LEN {
            return None;
        }
        let version = hex(&value[..2])? as u8;
        let rest_ok = match version {
            0xff => false,
            0x00 => value.len() == LEN,
            _ => value.len() == LEN || value[LEN] == b'-',
        };
        if !rest_ok || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let trace_id = hex(&value[3..35])?;
        let parent_id = hex(&value[36..52])? as u64;
        let flags = hex(&value[53..55])? as u8;
        (trace_id != 0 && parent_id != 0).then_some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The request's `traceparent` when it has exactly one, valid.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut values = headers.get_all(&TRACEPARENT_NAME).iter();
        match (values.next(), values.next()) {
            (Some(value), None) => Self::parse(value.as_bytes()),
            _ => None,
        }
    }

    /// A new trace, not sampled: random trace and span ids.
    pub fn start() -> Self {
        Self {
            trace_id: fastrand::u128(1..),
            parent_id: fastrand::u64(1..),
            flags: 0,
        }
    }

    /// The same trace from a new span (the one that sends the request
    /// on), with the sampled flag kept and the reserved ones cleared.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            parent_id: fastrand::u64(1..),
            flags: self.flags & SAMPLED,
        }
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> [u8; 32] {
        let mut out = [0; 32];
        write_hex(&mut out, self.trace_id);
        out
    }

    /// The header's value, version `00`.
    pub fn to_header(&self) -> HeaderValue {
        let mut out = [0u8; LEN];
        out[..3].copy_from_slice(b"00-");
        write_hex(&mut out[3..35], self.trace_id);
        out[35] = b'-';
        write_hex(&mut out[36..52], u128::from(self.parent_id));
        out[52] = b'-';
        write_hex(&mut out[53..55], u128::from(self.flags & SAMPLED));
        HeaderValue::from_bytes(&out).expect("hex digits and dashes are a header value")
    }
}

/// Each byte's value as a lowercase hex digit, `0xff` for a byte that is
/// none (uppercase included: the spec allows only lowercase).
static NIBBLES: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < 16 {
        table[b"0123456789abcdef"[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Lowercase hex digits → their value; `None` for anything else. At most
/// 32 digits. Read in 64-bit halves, without a branch per digit: the
/// ingress reads a `traceparent` on every request.
fn hex(digits: &[u8]) -> Option<u128> {
    match digits.len().checked_sub(16) {
        None | Some(0) => hex64(digits).map(u128::from),
        Some(split) => {
            let (high, low) = digits.split_at(split);
            Some(u128::from(hex64(high)?) << 64 | u128::from(hex64(low)?))
        }
    }
}

/// [`hex`] for at most 16 digits.
fn hex64(digits: &[u8]) -> Option<u64> {
    let (value, invalid) = digits.iter().fold((0u64, 0u8), |(value, invalid), &digit| {
        let nibble = NIBBLES[usize::from(digit)];
        (value << 4 | u64::from(nibble & 0xf), invalid | nibble)
    });
    (invalid & 0xf0 == 0).then_some(value)
}

/// The low `4 × out.len()` bits of `value` as lowercase hex into `out`.
fn write_hex(out: &mut [u8], value: u128) {
    match out.len().checked_sub(16) {
        None | Some(0) => write_hex64(out, value as u64),
        Some(split) => {
            let (high, low) = out.split_at_mut(split);
            write_hex64(high, (value >> 64) as u64);
            write_hex64(low, value as u64);
        }
    }
}

/// [`write_hex`] for at most 16 digits.
fn write_hex64(out: &mut [u8], mut value: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// The ingress's part, for a request on its way to a pod (or to another
/// node's ingress, which does the same again): a valid `traceparent`
/// continues from a span of this hop, keeping its trace id and sampled
/// flag; anything else (none, malformed, several) is dropped and a new
/// trace begins. `tracestate` is kept only with a valid `traceparent`,
/// as one header of at most [`MAX_TRACESTATE`] characters. Returns the
/// request's trace.
pub fn continue_or_start(headers: &mut HeaderMap) -> TraceParent {
    let (trace, state) = match TraceParent::from_headers(headers) {
        Some(parent) => (parent.child(), tracestate(headers)),
        None => (TraceParent::start(), None),
    };
    headers.insert(TRACEPARENT_NAME, trace.to_header());
    match state {
        Some(state) => headers.insert(TRACESTATE_NAME, state),
        None => headers.remove(&TRACESTATE_NAME),
    };
    trace
}

/// The request's `tracestate` as one value fit to pass on: several
/// headers joined (the spec's combined value), members longer than
/// [`LONG_TRACESTATE_MEMBER`] and then the last ones cut until it is within
/// [`MAX_TRACESTATE`]; `None` when absent, empty or malformed (a member
/// that is not `key=value`, or more than 32 of them).
pub fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(TRACESTATE).iter();
    let first = values.next()?;
    let joined;
    let value = match values.next() {
        // The usual case: one header, passed on as it came.
        None => first.clone(),
        Some(_) => {
            let all: Vec<&[u8]> = headers
                .get_all(TRACESTATE)
                .iter()
                .map(HeaderValue::as_bytes)
                .collect();
            joined = all.join(&b","[..]);
            HeaderValue::from_bytes(&joined).ok()?
        }
    };
    let members = || {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .map(trim_ows)
            .filter(|m| !m.is_empty())
    };
    let mut count = 0;
    for member in members() {
        count += 1;
        if count > MAX_TRACESTATE_MEMBERS || !valid_member(member) {
            return None;
        }
    }
    if count == 0 {
        return None;
    }
    if value.len() <= MAX_TRACESTATE {
        return Some(value);
    }
    // Too long: first the long members go, then the last ones.
    let mut kept: Vec<&[u8]> = members()
        .filter(|m| m.len() <= LONG_TRACESTATE_MEMBER)
        .collect();
    while !kept.is_empty() && kept.iter().map(|m| m.len() + 1).sum::<usize>() - 1 > MAX_TRACESTATE {
        kept.pop();
    }
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(&kept.join(&b","[..])).ok()
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let end = bytes.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
    match (start, end) {
        (Some(start), Some(end)) => &bytes[start..=end],
        _ => &[],
    }
}

/// `key=value` as level 1 spells them: a key of lowercase letters, digits
/// and `_-*/` (a letter first; `tenant@system` for multi-tenant keys), at
/// most 256 characters; a value of at most 256 printable characters other
/// than `,` and `=`, not ending in a space.
fn valid_member(member: &[u8]) -> bool {
    let Some(eq) = member.iter().position(|&b| b == b'=') else {
        return false;
    };
    let (key, value) = (&member[..eq], &member[eq + 1..]);
    let key_char = |b: &u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/');
    let key_ok = match key.iter().position(|&b| b == b'@') {
        None => {
            key.first().is_some_and(u8::is_ascii_lowercase)
                && key.len() <= 256
                && key.iter().all(key_char)
        }
        Some(at) => {
            let (tenant, system) = (&key[..at], &key[at + 1..]);
            tenant
                .first()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && tenant.len() <= 241
                && tenant.iter().all(key_char)
                && system.first().is_some_and(u8::is_ascii_lowercase)
                && system.len() <= 14
                && system.iter().all(key_char)
        }
    };
    let value_ok = !value.is_empty()
        && value.len() <= 256
        && value.last() != Some(&b' ')
        && value
            .iter()
            .all(|&b| matches!(b, 0x20..=0x7e) && b != b',' && b != b'=');
    key_ok && value_ok
}

/// The trace of the request an instance serves, kept for its outbound
/// requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TraceContext {
    parent: TraceParent,
    state: Option<HeaderValue>,
}

impl TraceContext {
    /// The request's trace, when it has a valid `traceparent` (on a node,
    /// always: its ingress made sure).
    pub(crate) fn of(headers: &HeaderMap) -> Option<Self> {
        Some(Self {
            parent: TraceParent::from_headers(headers)?,
            state: tracestate(headers),
        })
    }
}

/// The guest's part, for each of its outbound requests: the guest's own
/// valid `traceparent` is kept; otherwise the request gets one continuing
/// `incoming` (the trace of the request the guest serves) from a new span,
/// with `incoming`'s `tracestate` unless the guest set one, or starting a
/// trace of its own when there is none (a command, a probe).
pub(crate) fn propagate(headers: &mut HeaderMap, incoming: Option<&TraceContext>) {
    if TraceParent::from_headers(headers).is_some() {
        return;
    }
    let trace = incoming.map_or_else(TraceParent::start, |c| c.parent.child());
    headers.insert(TRACEPARENT, trace.to_header());
    if let Some(state) = incoming.and_then(|c| c.state.as_ref())
        && !headers.contains_key(TRACESTATE)
    {
        headers.insert(TRACESTATE, state.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn parse(value: &str) -> Option<TraceParent> {
        TraceParent::parse(value.as_bytes())
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                name.parse::<http::HeaderName>().unwrap(),
                value.parse().unwrap(),
            );
        }
        headers
    }

    fn all<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn valid_values_are_read_and_written_back() {
        let parent = parse(VALID).unwrap();
        assert_eq!(
            parent,
            TraceParent {
                trace_id: 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
                parent_id: 0x00f0_67aa_0ba9_02b7,
                flags: 1,
            }
        );
        assert_eq!(parent.to_header(), VALID);
        assert_eq!(&parent.trace_id(), b"4bf92f3577b34da6a3ce929d0e0e4736");
        let unsampled = parse("00-00000000000000000000000000000001-0000000000000001-00").unwrap();
        assert_eq!((unsampled.trace_id, unsampled.parent_id), (1, 1));
        assert_eq!(
            unsampled.to_header(),
            "00-00000000000000000000000000000001-0000000000000001-00"
        );
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            "00",
            // One character short or long, for version 00.
            &VALID[..54],
            format!("{VALID}0").as_str(),
            format!("{VALID}-extra").as_str(),
            // Uppercase anywhere.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Not hex, wrong separators, fields of the wrong width.
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e47366-0f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            // Version ff is invalid whatever follows.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_for_the_fields_it_shares() {
        let expected = parse(VALID);
        let later = |rest: &str| parse(&format!("cc{}{rest}", &VALID[2..]));
        assert_eq!(later(""), expected);
        assert_eq!(later("-what-comes-next"), expected);
        // Only a dash may follow the flags.
        assert_eq!(later("x"), None);
        assert_eq!(later("0-more"), None);
        // And the shared fields keep their rules.
        assert_eq!(
            parse("01-00000000000000000000000000000000-00f067aa0ba902b7-01-x"),
            None
        );
        // Written back as the version this side speaks, the reserved flags
        // cleared.
        let flagged = parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff-x").unwrap();
        let sent = flagged.child().to_header();
        let sent = sent.to_str().unwrap();
        assert!(
            sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{sent}"
        );
        assert!(sent.ends_with("-01"), "{sent}");
    }

    #[test]
    fn only_one_traceparent_header_counts() {
        assert!(TraceParent::from_headers(&headers(&[(TRACEPARENT, VALID)])).is_some());
        assert_eq!(TraceParent::from_headers(&headers(&[])), None);
        assert_eq!(
            TraceParent::from_headers(&headers(&[(TRACEPARENT, VALID), (TRACEPARENT, VALID)])),
            None
        );
    }

    #[test]
    fn the_ingress_continues_a_valid_trace_from_a_span_of_its_own() {
        let mut given = headers(&[(TRACEPARENT, VALID), (TRACESTATE, "a=1,b=2")]);
        let trace = continue_or_start(&mut given);
        let sent = parse(all(&given, TRACEPARENT)[0]).unwrap();
        assert_eq!(sent, trace);
        assert_eq!(&sent.trace_id(), b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(sent.parent_id, 0x00f0_67aa_0ba9_02b7);
        assert_eq!(sent.flags, 1);
        assert_eq!(all(&given, TRACESTATE), ["a=1,b=2"]);

        // A second ingress (a proxied request) keeps the trace again.
        let again = continue_or_start(&mut given);
        assert_eq!(again.trace_id, trace.trace_id);
        assert_ne!(again.parent_id, trace.parent_id);
    }

    #[test]
    fn the_ingress_starts_a_trace_for_anything_else_and_drops_what_came() {
        let upper = VALID.to_uppercase();
        for given in [
            vec![],
            vec![(TRACESTATE, "a=1")],
            vec![(TRACEPARENT, upper.as_str()), (TRACESTATE, "a=1")],
            vec![
                (TRACEPARENT, VALID),
                (TRACEPARENT, VALID),
                (TRACESTATE, "a=1"),
            ],
        ] {
            let mut headers = headers(&given);
            let trace = continue_or_start(&mut headers);
            let sent = all(&headers, TRACEPARENT);
            assert_eq!(sent.len(), 1, "{given:?}");
            let sent = parse(sent[0]).unwrap();
            assert_eq!(sent, trace);
            assert_ne!(&sent.trace_id(), b"4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(sent.flags, 0);
            assert!(all(&headers, TRACESTATE).is_empty(), "{given:?}");
        }
        let (one, two) = (TraceParent::start(), TraceParent::start());
        assert_ne!(one.trace_id, two.trace_id);
        assert_ne!(one.parent_id, two.parent_id);
    }

    #[test]
    fn tracestate_is_joined_checked_and_cut_to_size() {
        let state = |values: &[&str]| {
            let pairs: Vec<_> = values.iter().map(|v| (TRACESTATE, *v)).collect();
            tracestate(&headers(&pairs)).map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(state(&["congo=t61rcWkgMzE"]).unwrap(), "congo=t61rcWkgMzE");
        assert_eq!(
            state(&["rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"]).unwrap(),
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
        );
        assert_eq!(state(&["t@vendor=x, a=b"]).unwrap(), "t@vendor=x, a=b");
        for bad in ["", " , ", "novalue", "Upper=x", "a=b,c", "a=x=y", "1a=x"] {
            assert_eq!(state(&[bad]), None, "{bad:?}");
        }
        let members: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(state(&[&members.join(",")]), None, "33 members");
        assert!(state(&[&members[..32].join(",")]).is_some());

        // Past 512: the long member goes first, then from the end.
        let long = format!("long={}", "x".repeat(200));
        let short: Vec<String> = (0..40)
            .map(|i| format!("key{i:02}={}", "v".repeat(13)))
            .collect();
        let many = format!("{},{long},{}", short[0], short[1..30].join(","));
        let cut = state(&[&many]).unwrap();
        assert!(cut.len() <= MAX_TRACESTATE, "{}", cut.len());
        assert!(!cut.contains("long="));
        assert!(cut.starts_with(&short[..2].join(",")), "{cut}");
        assert_eq!(cut, short[..cut.split(',').count()].join(","));
        assert_eq!(cut.split(',').count(), 25, "{cut}");
    }

    #[test]
    fn outbound_requests_continue_the_incoming_trace_unless_the_guest_set_one() {
        let incoming =
            TraceContext::of(&headers(&[(TRACEPARENT, VALID), (TRACESTATE, "a=1")])).unwrap();

        let mut plain = headers(&[("accept", "*/*")]);
        propagate(&mut plain, Some(&incoming));
        let sent = parse(all(&plain, TRACEPARENT)[0]).unwrap();
        assert_eq!(sent.trace_id, incoming.parent.trace_id);
        assert_ne!(sent.parent_id, incoming.parent.parent_id);
        assert_eq!(all(&plain, TRACESTATE), ["a=1"]);

        // The guest's own, valid: kept as it is, with its tracestate.
        let own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
        let mut set = headers(&[(TRACEPARENT, own), (TRACESTATE, "mine=1")]);
        propagate(&mut set, Some(&incoming));
        assert_eq!(all(&set, TRACEPARENT), [own]);
        assert_eq!(all(&set, TRACESTATE), ["mine=1"]);

        // The guest's own, invalid: replaced; its tracestate stays.
        let mut bad = headers(&[(TRACEPARENT, "nonsense"), (TRACESTATE, "mine=1")]);
        propagate(&mut bad, Some(&incoming));
        let sent = all(&bad, TRACEPARENT);
        assert_eq!(sent.len(), 1);
        assert_eq!(parse(sent[0]).unwrap().trace_id, incoming.parent.trace_id);
        assert_eq!(all(&bad, TRACESTATE), ["mine=1"]);

        // No request to continue: each request starts a trace.
        let traces: Vec<u128> = (0..2)
            .map(|_| {
                let mut h = HeaderMap::new();
                propagate(&mut h, None);
                assert!(all(&h, TRACESTATE).is_empty());
                parse(all(&h, TRACEPARENT)[0]).unwrap().trace_id
            })
            .collect();
        assert_ne!(traces[0], traces[1]);
    }
}
