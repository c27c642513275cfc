//! Requests from the API server to nodes' APIs (a pod's logs, a node's
//! usage), signed with the cluster's proxy key (see
//! [`skiff_client::node_api`]).
//!
//! A node is reached only at the ingress address its Node object gives,
//! and its answer is relayed only when it proves itself with the key. The
//! address is a node's to write, so it is also checked before any
//! connection: link-local (cloud metadata services live there),
//! unspecified, multicast and broadcast addresses are never dialled, and
//! redirects are never followed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::Stream;
use serde_json::Value;
use skiff_api::Kind;
use skiff_client::node_api::{
    NODE_AUTH_HEADER, NODE_REPLY_HEADER, NodeApiKey, derive_node_key, node_host,
};
use tokio::sync::OnceCell;

use super::ApiError;
use super::proxy_key::{PROXY_KEY, PROXY_KEY_BYTES};
use crate::store::{ObjectKey, Store};

/// Longest a node may take to start answering (its headers); a followed
/// log then streams for as long as it lasts.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How much of a node's refusal is read to pass its reason on.
const REFUSAL_BYTES: usize = 4096;

/// Log answers one token may have streaming at once (followed or slowly
/// read): each holds a connection to a node and one from the client. Half
/// what a node serves one namespace at once, so one token alone never
/// fills a namespace's share on a node.
pub const MAX_LOG_STREAMS_PER_CLIENT: usize = 16;

/// The API server's client of nodes' APIs.
pub struct NodeProxy {
    client: reqwest::Client,
    /// Open log answers per caller (a token's hash).
    streams: Arc<Mutex<HashMap<[u8; 32], usize>>>,
    /// The cluster's proxy key, which every node's API key derives from.
    key: OnceCell<Vec<u8>>,
}

impl Default for NodeProxy {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeProxy {
    pub fn new() -> Self {
        // reqwest is built without a default TLS provider: whichever part
        // of the process builds a client first (in `wasmctl dev`, this one
        // or the node's) must find it chosen.
        crate::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .http1_only()
            .build()
            .expect("a plain HTTP client builds");
        Self {
            client,
            streams: Arc::default(),
            key: OnceCell::new(),
        }
    }

    /// Counts a log answer against `caller` until the permit is dropped,
    /// unless it has [`MAX_LOG_STREAMS_PER_CLIENT`] open already.
    pub fn admit_stream(&self, caller: [u8; 32]) -> Result<StreamPermit, ApiError> {
        let mut open = self.streams.lock().expect("log streams lock");
        let count = open.entry(caller).or_default();
        if *count >= MAX_LOG_STREAMS_PER_CLIENT {
            return Err(ApiError::TooManyRequests {
                message: format!(
                    "this token has {count} log streams open, the most one token may; end one before starting another"
                ),
                retry_after: 5,
            });
        }
        *count += 1;
        Ok(StreamPermit {
            open: self.streams.clone(),
            caller,
        })
    }

    /// Node `node`'s API key.
    async fn key(&self, store: &Store, node: &str) -> Result<NodeApiKey, ApiError> {
        let cluster = self
            .key
            .get_or_try_init(|| async {
                let mut candidate = [0u8; PROXY_KEY_BYTES];
                getrandom::fill(&mut candidate)
                    .expect("the operating system's random source works");
                Ok::<_, ApiError>(store.cluster_secret(PROXY_KEY, &candidate).await?)
            })
            .await?;
        Ok(NodeApiKey::new(&derive_node_key(cluster, node)))
    }

    /// `GET path_and_query` on `node`'s API: the body of its 200 answer as
    /// a stream; a refusal of the node's as the same kind of error.
    pub async fn get(
        &self,
        store: &Store,
        node: &str,
        path_and_query: &str,
    ) -> Result<impl Stream<Item = reqwest::Result<Bytes>> + use<>, ApiError> {
        let address = ingress_address(store, node).await?;
        let target = dialable(node, &address).await?;
        let key = self.key(store, node).await?;
        let credential = key.sign(node, "GET", path_and_query, SystemTime::now());
        // Reasons name the node, never its address: tenants read these,
        // and may not read Node objects.
        let unreachable = |e: &dyn std::fmt::Display| {
            tracing::warn!("node {node} at {target} ({address}): {e}");
            ApiError::BadGateway(format!("node {node} did not answer: {e}"))
        };
        let request = self
            .client
            .get(format!("http://{target}{path_and_query}"))
            .header(reqwest::header::HOST, node_host(node))
            .header(NODE_AUTH_HEADER, credential.clone());
        let response = tokio::time::timeout(ANSWER_TIMEOUT, request.send())
            .await
            .map_err(|_| unreachable(&format!("no answer within {ANSWER_TIMEOUT:?}")))?
            .map_err(|e| unreachable(&error_chain(&e)))?;
        let proven = response
            .headers()
            .get(NODE_REPLY_HEADER)
            .is_some_and(|reply| key.verify_reply(credential.as_bytes(), reply.as_bytes()));
        if !proven {
            tracing::warn!(
                "node {node}'s ingress address {address} ({target}) answered without the node's proof"
            );
            return Err(ApiError::BadGateway(format!(
                "node {node}'s address answered, but not as a node of this cluster"
            )));
        }
        let status = response.status();
        if status.is_success() {
            return Ok(response.bytes_stream());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|s| s.min(60));
        let reason = tokio::time::timeout(ANSWER_TIMEOUT, refusal(response))
            .await
            .unwrap_or_else(|_| format!("answered {status} but sent no reason in time"));
        let message = format!("node {node}: {reason}");
        Err(match status.as_u16() {
            400 => ApiError::BadRequest(message),
            404 => ApiError::NotFound(message),
            // The node's caps on readers: the caller may come back.
            429 => ApiError::TooManyRequests {
                message,
                retry_after: retry_after.unwrap_or(1),
            },
            503 => ApiError::Unavailable(message),
            _ => ApiError::BadGateway(message),
        })
    }
}

impl NodeProxy {
    /// `GET path_and_query` on `node`'s API, read whole (at most `max`
    /// bytes) within `within`.
    pub async fn get_bytes(
        &self,
        store: &Store,
        node: &str,
        path_and_query: &str,
        max: usize,
        within: Duration,
    ) -> Result<Vec<u8>, ApiError> {
        use futures::StreamExt as _;
        let read = async {
            let mut stream = std::pin::pin!(self.get(store, node, path_and_query).await?);
            let mut body = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| {
                    ApiError::BadGateway(format!("node {node}: {}", error_chain(&e)))
                })?;
                if body.len() + chunk.len() > max {
                    return Err(ApiError::BadGateway(format!(
                        "node {node}: answered more than {max} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        };
        tokio::time::timeout(within, read).await.map_err(|_| {
            ApiError::BadGateway(format!("node {node}: no whole answer within {within:?}"))
        })?
    }
}

/// One open log answer counted against its caller, until dropped.
pub struct StreamPermit {
    open: Arc<Mutex<HashMap<[u8; 32], usize>>>,
    caller: [u8; 32],
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("log streams lock");
        if let Some(count) = open.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.caller);
            }
        }
    }
}

/// The ingress address a node registered.
async fn ingress_address(store: &Store, node: &str) -> Result<String, ApiError> {
    let object: Value = store
        .get(&ObjectKey::new(Kind::Node, "", node))
        .await?
        .ok_or_else(|| ApiError::BadGateway(format!("node {node} is not registered")))?;
    object["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "Ingress")
        .and_then(|a| a["address"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::BadGateway(format!("node {node} has no ingress address")))
}

/// The first address `address` (host:port) resolves to that may be
/// dialled.
async fn dialable(node: &str, address: &str) -> Result<SocketAddr, ApiError> {
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host(address)
        .await
        .map_err(|e| {
            tracing::warn!("node {node}'s ingress address {address} does not resolve: {e}");
            ApiError::BadGateway(format!("node {node}'s ingress address does not resolve"))
        })?
        .collect();
    resolved
        .iter()
        .copied()
        .find(|a| may_dial(a.ip()))
        .ok_or_else(|| {
            tracing::warn!("node {node}'s ingress address {address} is not dialled");
            ApiError::BadGateway(format!(
                "node {node}'s ingress address is link-local, unspecified, multicast or broadcast: not dialled"
            ))
        })
}

/// Whether a node's address may be dialled: not where no node can be, and
/// not link-local, where a cloud's metadata service answers.
fn may_dial(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_link_local() || v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast())
        }
        IpAddr::V6(v6) => !(v6.is_unicast_link_local() || v6.is_unspecified() || v6.is_multicast()),
    }
}

/// A node's refusal, its first line, cut to a bounded length.
async fn refusal(response: reqwest::Response) -> String {
    use futures::StreamExt as _;
    let status = response.status();
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() >= REFUSAL_BYTES {
            body.truncate(REFUSAL_BYTES);
            break;
        }
    }
    let text = String::from_utf8_lossy(&body);
    let line = text.lines().next().unwrap_or_default().trim();
    if line.is_empty() {
        format!("answered {status}")
    } else {
        line.to_owned()
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_and_unroutable_addresses_are_never_dialled() {
        for refused in [
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "fe80::1",
            "::",
            "ff02::1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!may_dial(refused.parse().unwrap()), "{refused}");
        }
        for allowed in ["127.0.0.1", "10.0.0.7", "192.168.1.2", "::1", "2001:db8::1"] {
            assert!(may_dial(allowed.parse().unwrap()), "{allowed}");
        }
    }
}
