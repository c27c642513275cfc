//! The node API: what a node's ingress serves to the control plane alone
//! (a pod's logs, the node's usage samples), and the credential both sides
//! share for it.
//!
//! A request goes to a node's ingress with the host `NODE.node` and a
//! credential (`skiff-node-auth: <unix seconds>.<mac>`): an HMAC-SHA256,
//! under the node's own API key, of the time, the node's name, the method
//! and the path with its query. A node's API key is derived from the
//! cluster's proxy key and its name ([`derive_node_key`]); the control
//! plane derives any node's, a node is given only its own, so a node (or
//! its stolen token) can forge requests to no other node. So a credential opens one path on one node
//! for [`FRESHNESS`] either side of the node's clock, and nothing a tenant
//! holds (a token, a pod's own credentials) makes one. The node answers
//! with `skiff-node-reply`, an HMAC of the request's credential under the
//! same key: the control plane relays an answer only when it carries one,
//! so a Node object whose address was pointed at some other service (by a
//! node's stolen token, say) never has that service's answers read back
//! through the API: the service does not hold the key.
//!
//! The hop is plain HTTP, as the one between nodes: the credential keeps
//! out everyone who cannot see traffic between control plane and nodes,
//! and binding it to the path keeps one seen credential from opening
//! another pod's logs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use http::HeaderValue;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The header a node API request's credential is in.
pub const NODE_AUTH_HEADER: &str = "skiff-node-auth";
/// The header a node's answer proves itself with.
pub const NODE_REPLY_HEADER: &str = "skiff-node-reply";
/// The host suffix of a node API request: `NODE.node`.
pub const NODE_HOST_SUFFIX: &str = ".node";
/// How far a credential's time may be from the node's clock, either way.
pub const FRESHNESS: Duration = Duration::from_secs(30);

/// Length of an HMAC-SHA256 in URL-safe base64 without padding.
const MAC_TEXT_LEN: usize = 43;

type HmacSha256 = Hmac<Sha256>;

/// Why a node API credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeAuthError {
    #[error("the node credential is not <seconds>.<mac>")]
    Malformed,
    #[error("the node credential is {0} s away from this node's clock (at most 30 s are accepted)")]
    Stale(u64),
    /// A wrong key, or a credential made for another node or path.
    #[error("the node credential does not match this node, method and path")]
    Mismatch,
}

/// The cluster's proxy key, as the node API uses it.
#[derive(Clone)]
pub struct NodeApiKey {
    keyed: HmacSha256,
}

impl std::fmt::Debug for NodeApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeApiKey(..)")
    }
}

impl NodeApiKey {
    pub fn new(key: &[u8]) -> Self {
        Self {
            keyed: HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length"),
        }
    }

    /// Over a prefix no other use of the key shares, then each field on a
    /// line: a node name or method holds no newline, so fields cannot run
    /// into each other.
    fn mac(&self, seconds: u64, node: &str, method: &str, path_and_query: &str) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(b"skiff-node-api-v1\n");
        mac.update(seconds.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(node.as_bytes());
        mac.update(b"\n");
        mac.update(method.as_bytes());
        mac.update(b"\n");
        mac.update(path_and_query.as_bytes());
        mac
    }

    /// The credential for `method path_and_query` to `node`, made at `now`.
    pub fn sign(
        &self,
        node: &str,
        method: &str,
        path_and_query: &str,
        now: SystemTime,
    ) -> HeaderValue {
        let seconds = unix_seconds(now);
        let tag = self
            .mac(seconds, node, method, path_and_query)
            .finalize()
            .into_bytes();
        sensitive(format!("{seconds}.{}", URL_SAFE_NO_PAD.encode(tag)))
    }

    /// Checks a credential received by `node` at `now`.
    pub fn verify(
        &self,
        credential: &[u8],
        node: &str,
        method: &str,
        path_and_query: &str,
        now: SystemTime,
    ) -> Result<(), NodeAuthError> {
        let text = std::str::from_utf8(credential).map_err(|_| NodeAuthError::Malformed)?;
        let (seconds, tag) = text.split_once('.').ok_or(NodeAuthError::Malformed)?;
        if seconds.is_empty() || !seconds.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NodeAuthError::Malformed);
        }
        let seconds: u64 = seconds.parse().map_err(|_| NodeAuthError::Malformed)?;
        let tag = decode_mac(tag).ok_or(NodeAuthError::Malformed)?;
        let skew = unix_seconds(now).abs_diff(seconds);
        if skew > FRESHNESS.as_secs() {
            return Err(NodeAuthError::Stale(skew));
        }
        self.mac(seconds, node, method, path_and_query)
            .verify_slice(&tag)
            .map_err(|_| NodeAuthError::Mismatch)
    }

    fn reply_mac(&self, credential: &[u8]) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(b"skiff-node-reply-v1\n");
        mac.update(credential);
        mac
    }

    /// The proof a node answers a request carrying `credential` with.
    pub fn reply(&self, credential: &[u8]) -> HeaderValue {
        let tag = self.reply_mac(credential).finalize().into_bytes();
        sensitive(URL_SAFE_NO_PAD.encode(tag))
    }

    /// Whether `reply` proves an answer to the request with `credential`
    /// came from a holder of the key.
    pub fn verify_reply(&self, credential: &[u8], reply: &[u8]) -> bool {
        std::str::from_utf8(reply)
            .ok()
            .and_then(decode_mac)
            .is_some_and(|tag| self.reply_mac(credential).verify_slice(&tag).is_ok())
    }
}

/// Node `node`'s API key: an HMAC of its name under the cluster's proxy
/// key, so knowing one node's key tells nothing of another's.
pub fn derive_node_key(cluster_key: &[u8], node: &str) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(cluster_key).expect("HMAC takes keys of any length");
    mac.update(b"skiff-node-api-key-v1\n");
    mac.update(node.as_bytes());
    mac.finalize().into_bytes().into()
}

fn sensitive(text: String) -> HeaderValue {
    let mut value = HeaderValue::from_str(&text).expect("digits and base64 are a header value");
    value.set_sensitive(true);
    value
}

/// An HMAC-SHA256 in URL-safe base64 without padding, decoded on the
/// stack; None unless it is exactly that.
pub fn decode_mac(text: &str) -> Option<[u8; 32]> {
    if text.len() != MAC_TEXT_LEN {
        return None;
    }
    let mut tag = [0u8; 32];
    match URL_SAFE_NO_PAD.decode_slice(text, &mut tag) {
        Ok(32) => Some(tag),
        _ => None,
    }
}

/// Whole seconds since the Unix epoch (0 before it).
pub fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The host a request to `node`'s API carries.
pub fn node_host(node: &str) -> String {
    format!("{node}{NODE_HOST_SUFFIX}")
}

/// The node a `NODE.node[:port]` host names, if it is one.
pub fn node_of_host(host: &str) -> Option<&str> {
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    host.strip_suffix(NODE_HOST_SUFFIX)
        .filter(|node| !node.is_empty() && !node.contains('.'))
}

/// The path of a pod's logs on its node: by uid, so a newer pod of the
/// same name is never read in its place.
pub fn log_path(namespace: &str, name: &str, uid: &str) -> String {
    format!("/logs/{namespace}/{name}/{uid}")
}

/// The path of a node's usage summary ([`NodeSummary`]).
pub const STATS_PATH: &str = "/stats";

/// What a log request asks for, as the API's query parameters name it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep the answer open and send records as they are written.
    pub follow: bool,
    /// Only the last this many records (before following).
    pub tail_lines: Option<u64>,
    /// Only records of the last this many seconds.
    pub since_seconds: Option<u64>,
    /// The run before the current one (after a restart).
    pub previous: bool,
    /// Begin each line with its RFC 3339 time.
    pub timestamps: bool,
    /// Begin each line with the request (or trace) it belongs to, `-` for
    /// none.
    pub request_ids: bool,
    /// End the answer after this many bytes (maybe within a line).
    pub limit_bytes: Option<u64>,
}

/// Longest `tailLines` or `sinceSeconds` taken: far beyond what a file
/// holds, small enough to add to a time without overflow.
const MAX_LOG_WINDOW: u64 = 1 << 40;

impl LogOptions {
    /// The query string (without `?`) that asks for these options.
    pub fn to_query(&self) -> String {
        let mut pairs = Vec::new();
        for (name, on) in [
            ("follow", self.follow),
            ("previous", self.previous),
            ("timestamps", self.timestamps),
            ("requestIds", self.request_ids),
        ] {
            if on {
                pairs.push(format!("{name}=true"));
            }
        }
        if let Some(n) = self.tail_lines {
            pairs.push(format!("tailLines={n}"));
        }
        if let Some(s) = self.since_seconds {
            pairs.push(format!("sinceSeconds={s}"));
        }
        if let Some(n) = self.limit_bytes {
            pairs.push(format!("limitBytes={n}"));
        }
        pairs.join("&")
    }

    /// Options from query parameters by name; an error names the parameter
    /// and what is wrong with it. Parameters these options do not know are
    /// left to the caller.
    pub fn from_params<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<LogOptions, String> {
        let mut options = LogOptions::default();
        for (name, value) in params {
            let flag = || match value {
                "true" | "1" | "" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(format!(
                    "query parameter {name}: `{}` is not true or false",
                    value.escape_default()
                )),
            };
            let count = || -> Result<u64, String> {
                let n: u64 = value.parse().map_err(|_| {
                    format!(
                        "query parameter {name}: `{}` is not a whole number",
                        value.escape_default()
                    )
                })?;
                if n > MAX_LOG_WINDOW {
                    return Err(format!(
                        "query parameter {name}: {n} is more than {MAX_LOG_WINDOW}"
                    ));
                }
                Ok(n)
            };
            match name {
                "follow" => options.follow = flag()?,
                "previous" => options.previous = flag()?,
                "timestamps" => options.timestamps = flag()?,
                "requestIds" => options.request_ids = flag()?,
                "tailLines" => options.tail_lines = Some(count()?),
                "limitBytes" => {
                    let n = count()?;
                    if n == 0 {
                        return Err(format!("query parameter {name}: must be at least 1"));
                    }
                    options.limit_bytes = Some(n);
                }
                "sinceSeconds" => {
                    let n = count()?;
                    if n == 0 {
                        return Err(format!("query parameter {name}: must be at least 1"));
                    }
                    options.since_seconds = Some(n);
                }
                _ => {}
            }
        }
        if options.follow && options.previous {
            return Err(
                "query parameters follow and previous: a previous run has ended, there is nothing to follow"
                    .into(),
            );
        }
        Ok(options)
    }
}

/// A node's usage, as it samples it: what `wasmctl top` shows. Rates are
/// over the node's last sampling window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSummary {
    pub node: String,
    /// The window the rates are over, in seconds (0 before two samples).
    pub window_seconds: f64,
    /// CPU the node's pods used, in cores.
    pub cpu_cores: f64,
    /// Memory the node's pods hold, in bytes.
    pub memory_bytes: u64,
    /// Wasm instances running now, and the most that may.
    pub instances_in_use: u64,
    pub instance_slots: u64,
    pub pods: Vec<PodSummary>,
}

/// One pod's usage on its node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSummary {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// CPU time used per second, in cores.
    pub cpu_cores: f64,
    /// Memory held now, in bytes (a Wasm pod's instances' linear memories;
    /// a Linux pod's cgroup).
    pub memory_bytes: u64,
    /// Requests served per second.
    pub requests_per_second: f64,
    /// The mean time to answer those requests, in seconds; none without a
    /// request in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_response_seconds: Option<f64>,
    /// Fuel consumed per second, where the node meters fuel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_per_second: Option<f64>,
}

/// Where the node API answers with its [`NodeLoad`].
pub const LOAD_PATH: &str = "/load";

/// The concurrency a node's ingress observes, as the autoscaler samples it
/// about once a second. Counts are totals since each pod (or the node)
/// began, so that a sample lost costs no precision: the autoscaler takes
/// differences between two samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeLoad {
    pub pods: Vec<PodLoad>,
    /// Services at zero this node holds requests for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<HeldLoad>,
}

/// One HTTP pod's requests on this node's ingress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodLoad {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Requests in the ingress for this pod now, waiting for an instance
    /// or being served.
    pub in_flight: u64,
    /// Requests answered since the pod was served here.
    pub requests: u64,
    /// The time every request spent in the ingress so far, those in
    /// flight up to now included, in nanoseconds: over a window, its
    /// growth divided by the window is the mean concurrency within it.
    pub busy_nanos: u64,
    /// When these were read, in nanoseconds on the node's own monotonic
    /// clock (only differences mean anything): the window to divide by,
    /// whatever the sample's way to the reader took. 0 from nodes that do
    /// not say.
    #[serde(default)]
    pub at_nanos: u64,
    /// When the pod began to be served on the node, on the same clock:
    /// the window of the first sample that sees it.
    #[serde(default)]
    pub began_nanos: u64,
}

/// Requests a node holds for a Service with no ready endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldLoad {
    pub namespace: String,
    pub service: String,
    pub held: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn a_credential_opens_one_path_on_one_node_while_fresh() {
        let key = NodeApiKey::new(&[7; 32]);
        let path = "/logs/shop/web/u1?follow=true";
        let signed = key.sign("n1", "GET", path, at(1_000_000));
        assert!(signed.is_sensitive());
        let check =
            |node, method, path, now| key.verify(signed.as_bytes(), node, method, path, now);
        assert_eq!(check("n1", "GET", path, at(1_000_000)), Ok(()));
        assert_eq!(check("n1", "GET", path, at(1_000_030)), Ok(()));
        assert_eq!(
            check("n1", "GET", path, at(1_000_031)),
            Err(NodeAuthError::Stale(31))
        );
        for (node, method, other) in [
            ("n2", "GET", path),
            ("n1", "POST", path),
            ("n1", "GET", "/logs/shop/web/u2?follow=true"),
            ("n1", "GET", "/logs/shop/web/u1"),
            ("n1", "GET", "/stats"),
        ] {
            assert_eq!(
                check(node, method, other, at(1_000_000)),
                Err(NodeAuthError::Mismatch),
                "{node} {method} {other}"
            );
        }
        let under_another_key =
            NodeApiKey::new(&[8; 32]).verify(signed.as_bytes(), "n1", "GET", path, at(1_000_000));
        assert_eq!(under_another_key, Err(NodeAuthError::Mismatch));
    }

    #[test]
    fn each_node_has_its_own_key() {
        let cluster = [7; 32];
        let n1 = derive_node_key(&cluster, "n1");
        assert_eq!(n1, derive_node_key(&cluster, "n1"));
        assert_ne!(n1, derive_node_key(&cluster, "n2"));
        assert_ne!(n1, derive_node_key(&[8; 32], "n1"));
        // A credential under n2's key does not open n1.
        let forged =
            NodeApiKey::new(&derive_node_key(&cluster, "n2")).sign("n1", "GET", "/stats", at(5));
        assert_eq!(
            NodeApiKey::new(&n1).verify(forged.as_bytes(), "n1", "GET", "/stats", at(5)),
            Err(NodeAuthError::Mismatch)
        );
    }

    #[test]
    fn malformed_credentials_are_refused() {
        let key = NodeApiKey::new(&[7; 32]);
        let tag = "A".repeat(MAC_TEXT_LEN);
        for credential in [
            String::new(),
            "x".into(),
            format!("+5.{tag}"),
            format!(".{tag}"),
            format!("5.{tag}A"),
        ] {
            assert_eq!(
                key.verify(credential.as_bytes(), "n1", "GET", "/stats", at(5)),
                Err(NodeAuthError::Malformed),
                "{credential}"
            );
        }
    }

    #[test]
    fn a_reply_proves_the_answer_to_its_own_request() {
        let key = NodeApiKey::new(&[7; 32]);
        let credential = key.sign("n1", "GET", "/stats", at(5));
        let reply = key.reply(credential.as_bytes());
        assert!(key.verify_reply(credential.as_bytes(), reply.as_bytes()));
        let other = key.sign("n1", "GET", "/stats", at(6));
        assert!(!key.verify_reply(other.as_bytes(), reply.as_bytes()));
        assert!(!NodeApiKey::new(&[8; 32]).verify_reply(credential.as_bytes(), reply.as_bytes()));
        assert!(!key.verify_reply(credential.as_bytes(), b"forged"));
    }

    #[test]
    fn node_hosts_name_one_node() {
        assert_eq!(node_of_host("n1.node"), Some("n1"));
        assert_eq!(node_of_host("n1.node:8080"), Some("n1"));
        assert_eq!(node_of_host(&node_host("node-a")), Some("node-a"));
        assert_eq!(node_of_host(".node"), None);
        assert_eq!(node_of_host("web.shop.node"), None);
        assert_eq!(node_of_host("n1.pod"), None);
    }

    #[test]
    fn log_options_round_trip_and_bad_values_are_named() {
        let options = LogOptions {
            follow: true,
            tail_lines: Some(10),
            since_seconds: Some(60),
            previous: false,
            timestamps: true,
            request_ids: true,
            limit_bytes: Some(4096),
        };
        let query = options.to_query();
        let parsed = LogOptions::from_params(query.split('&').map(|p| p.split_once('=').unwrap()));
        assert_eq!(parsed, Ok(options));
        assert_eq!(LogOptions::from_params([]), Ok(LogOptions::default()));
        for (params, named) in [
            (vec![("tailLines", "-1")], "tailLines"),
            (vec![("tailLines", "ten")], "tailLines"),
            (vec![("sinceSeconds", "0")], "sinceSeconds"),
            (vec![("limitBytes", "0")], "limitBytes"),
            (vec![("sinceSeconds", "99999999999999999")], "sinceSeconds"),
            (vec![("follow", "yes")], "follow"),
            (vec![("follow", "true"), ("previous", "true")], "previous"),
        ] {
            let error = LogOptions::from_params(params.clone()).unwrap_err();
            assert!(error.contains(named), "{params:?}: {error}");
        }
    }
}
