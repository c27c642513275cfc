//! The node API on the ingress: `NODE.node` hosts, served only to the
//! control plane (see [`skiff_client::node_api`] for the credential and
//! why it is shaped so).
//!
//! - `GET /logs/{namespace}/{name}/{uid}` with the API's log options: the
//!   pod's records as text lines, followed while the pod lives when asked.
//! - `GET /stats`: the node's usage summary, as JSON.
//!
//! Every answer, refusals after the credential held included, carries the
//! reply proof; a request without a credential gets the same 404 as any
//! cluster host, so the API's existence is no more visible than a pod's.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt as _;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::BodyExt as _;
use skiff_client::node_api::{LogOptions, NODE_AUTH_HEADER, NODE_REPLY_HEADER, NodeApiKey};
use skiff_client::node_api::{NodeSummary, STATS_PATH};
use skiff_wasm::{BodyError, HttpBody, text_response};
use tokio::sync::{Semaphore, broadcast};

use crate::logs::{LogRecord, NodeLogs, pod_dir, read_dir};

/// Log answers streaming at once on a node: each holds a task and, while
/// following, a subscription; past this the control plane is told to come
/// back (503) rather than the node's memory spent.
pub const MAX_LOG_STREAMS: usize = 256;

/// The usage summary's source, set once the node's sampler runs.
pub type StatsSource = Arc<dyn Fn() -> NodeSummary + Send + Sync>;

/// What the node API reads from.
pub struct NodeApi {
    node: String,
    key: NodeApiKey,
    logs: Arc<NodeLogs>,
    data_dir: std::path::PathBuf,
    stats: OnceLock<StatsSource>,
    streams: Arc<Semaphore>,
}

impl NodeApi {
    pub fn new(
        node: &str,
        key: NodeApiKey,
        logs: Arc<NodeLogs>,
        data_dir: &std::path::Path,
    ) -> Self {
        Self {
            node: node.to_owned(),
            key,
            logs,
            data_dir: data_dir.to_owned(),
            stats: OnceLock::new(),
            streams: Arc::new(Semaphore::new(MAX_LOG_STREAMS)),
        }
    }

    /// Serves `/stats` from `source` from now on.
    pub fn set_stats(&self, source: StatsSource) {
        let _ = self.stats.set(source);
    }

    /// Serves a request for host `node`: the caller already found the host
    /// to be a node host.
    pub async fn handle<B>(
        &self,
        node: &str,
        request: &http::Request<B>,
    ) -> http::Response<HttpBody> {
        let Some(credential) = request.headers().get(NODE_AUTH_HEADER) else {
            return text_response(
                StatusCode::NOT_FOUND,
                format!("`{node}.node` is a cluster host, not served to outside traffic\n"),
            );
        };
        let path_and_query = request.uri().path_and_query().map_or("/", |p| p.as_str());
        if let Err(e) = self.key.verify(
            credential.as_bytes(),
            node,
            request.method().as_str(),
            path_and_query,
            SystemTime::now(),
        ) {
            return text_response(StatusCode::FORBIDDEN, format!("refused: {e}\n"));
        }
        // The credential names this node: a host naming another is one
        // made for another node, which the check above already refused.
        debug_assert_eq!(node, self.node);
        let mut response = self.serve(request).await;
        response
            .headers_mut()
            .insert(NODE_REPLY_HEADER, self.key.reply(credential.as_bytes()));
        response
    }

    /// Whether `node` is this node's name.
    pub fn is_self(&self, node: &str) -> bool {
        node == self.node
    }

    async fn serve<B>(&self, request: &http::Request<B>) -> http::Response<HttpBody> {
        if request.method() != Method::GET {
            return text_response(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{} is not served here: the node API is read with GET\n",
                    request.method()
                ),
            );
        }
        let path = request.uri().path();
        if path == STATS_PATH {
            return match self.stats.get() {
                Some(source) => json_response(&source()),
                None => text_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this node has no usage samples yet\n".into(),
                ),
            };
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match segments.as_slice() {
            ["logs", namespace, name, uid] => {
                for (what, value) in [("namespace", namespace), ("name", name), ("uid", uid)] {
                    if !is_path_name(value) {
                        return text_response(
                            StatusCode::BAD_REQUEST,
                            format!(
                                "the pod's {what} `{}` is not a name",
                                value.escape_default()
                            ),
                        );
                    }
                }
                let query = request.uri().query().unwrap_or_default();
                let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
                    .into_owned()
                    .collect();
                let options =
                    match LogOptions::from_params(params.iter().map(|(k, v)| (&**k, &**v))) {
                        Ok(options) => options,
                        Err(e) => return text_response(StatusCode::BAD_REQUEST, format!("{e}\n")),
                    };
                self.logs(namespace, name, uid, options).await
            }
            _ => text_response(
                StatusCode::NOT_FOUND,
                format!("the node API has no `{}`\n", path.escape_default()),
            ),
        }
    }

    async fn logs(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        options: LogOptions,
    ) -> http::Response<HttpBody> {
        let Ok(permit) = self.streams.clone().try_acquire_owned() else {
            let mut response = text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "node {} is serving {MAX_LOG_STREAMS} log streams already\n",
                    self.node
                ),
            );
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        };
        let live = self
            .logs
            .get(uid)
            .filter(|pod| pod.namespace() == namespace && pod.name() == name);
        let since = options
            .since_seconds
            .map(|s| SystemTime::now() - Duration::from_secs(s));
        let tail = options
            .tail_lines
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        // Subscribed before reading, so nothing written in between is
        // missed; what the read already had is skipped by time below.
        let follow = live
            .as_ref()
            .filter(|_| options.follow)
            .map(|pod| pod.follow());
        let read = match &live {
            Some(pod) => pod.read(options.previous, tail, since).await,
            None => {
                let dir = pod_dir(&self.data_dir, namespace, name, uid);
                read_dir(&dir, options.previous, tail, since).await
            }
        };
        let records = match read {
            Ok(records) => records,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let message = if options.previous && live.is_some() {
                    format!(
                        "pod {namespace}/{name} has not restarted: there is no previous run to read\n"
                    )
                } else {
                    format!(
                        "no logs of pod {namespace}/{name} (uid {uid}) are on node {}\n",
                        self.node
                    )
                };
                let status = if options.previous && live.is_some() {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::NOT_FOUND
                };
                return text_response(status, message);
            }
            Err(e) => {
                tracing::warn!("reading the logs of pod {namespace}/{name}: {e}");
                return text_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "node {} cannot read the logs of pod {namespace}/{name}: {e}\n",
                        self.node
                    ),
                );
            }
        };
        let mut first = Vec::new();
        for record in &records {
            render(&mut first, record, &options);
        }
        let last_read = records.last().map(|r| r.time);
        let Some(follow) = follow else {
            drop(permit);
            return text_ok(HttpBody::new(
                http_body_util::Full::new(Bytes::from(first)).map_err(|never| match never {}),
            ));
        };
        let stream = futures::stream::once(async move { Ok::<_, BodyError>(Bytes::from(first)) })
            .chain(followed(follow, last_read, options, permit))
            .filter(|chunk| {
                let keep = chunk.as_ref().map_or(true, |c| !c.is_empty());
                async move { keep }
            })
            .map(|chunk| chunk.map(http_body::Frame::data));
        text_ok(HttpBody::new(http_body_util::StreamBody::new(stream)))
    }
}

/// The records appended after the read, rendered, until the pod is gone.
/// Records at or before `last_read` were in the read already.
fn followed(
    receiver: broadcast::Receiver<Bytes>,
    last_read: Option<SystemTime>,
    options: LogOptions,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl futures::Stream<Item = Result<Bytes, BodyError>> {
    futures::stream::unfold(
        (receiver, last_read, permit),
        move |(mut receiver, mut last_read, permit)| {
            let options = options.clone();
            async move {
                let chunk = match receiver.recv().await {
                    Ok(chunk) => chunk,
                    Err(broadcast::error::RecvError::Closed) => return None,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let note = format!(
                            "[skiff: {missed} chunks of this pod's log skipped: this reader fell behind]\n"
                        );
                        return Some((Ok(Bytes::from(note)), (receiver, last_read, permit)));
                    }
                };
                let mut out = Vec::with_capacity(chunk.len());
                for line in String::from_utf8_lossy(&chunk).lines() {
                    let Some(record) = LogRecord::parse(line) else {
                        continue;
                    };
                    if let Some(seen) = last_read {
                        if record.time <= seen {
                            continue;
                        }
                        last_read = None;
                    }
                    render(&mut out, &record, &options);
                }
                Some((Ok(Bytes::from(out)), (receiver, last_read, permit)))
            }
        },
    )
}

/// One record as a log reader sees it: `[time ][request ]text\n`.
fn render(out: &mut Vec<u8>, record: &LogRecord, options: &LogOptions) {
    if options.timestamps {
        let time = DateTime::<Utc>::from(record.time).to_rfc3339_opts(SecondsFormat::Nanos, true);
        out.extend_from_slice(time.as_bytes());
        out.push(b' ');
    }
    if options.request_ids {
        out.extend_from_slice(record.request.as_deref().unwrap_or("-").as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(record.text.as_bytes());
    out.push(b'\n');
}

/// A namespace, pod name or uid as a path may carry one: no separator and
/// no dot-only segment, so it names one directory under the logs.
fn is_path_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 253
        && !value.starts_with('.')
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'))
}

fn text_ok(body: HttpBody) -> http::Response<HttpBody> {
    let mut response = http::Response::new(body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // Lines go out as they come: no proxy between should hold them.
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

fn json_response(value: &impl serde::Serialize) -> http::Response<HttpBody> {
    let body = serde_json::to_vec(value).expect("a summary serialises");
    let mut response = http::Response::new(HttpBody::new(
        http_body_util::Full::new(Bytes::from(body)).map_err(|never| match never {}),
    ));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_names_cannot_leave_the_logs_directory() {
        for good in ["shop", "web-1", "a.b", "0f8c-11"] {
            assert!(is_path_name(good), "{good}");
        }
        for bad in [
            "", ".", "..", "../etc", "a/b", "A", "a b", "a%2f", ".hidden",
        ] {
            assert!(!is_path_name(bad), "{bad}");
        }
    }

    #[test]
    fn records_render_with_the_asked_prefixes() {
        let record = LogRecord {
            time: SystemTime::UNIX_EPOCH + Duration::from_nanos(1_500_000_123),
            stream: skiff_wasm::LogStream::Stdout,
            request: Some("abc".into()),
            text: "hello".into(),
        };
        let show = |timestamps, request_ids| {
            let mut out = Vec::new();
            let options = LogOptions {
                timestamps,
                request_ids,
                ..LogOptions::default()
            };
            render(&mut out, &record, &options);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(show(false, false), "hello\n");
        assert_eq!(show(true, false), "1970-01-01T00:00:01.500000123Z hello\n");
        assert_eq!(show(false, true), "abc hello\n");
        let none = LogRecord {
            request: None,
            ..record.clone()
        };
        let mut out = Vec::new();
        render(
            &mut out,
            &none,
            &LogOptions {
                request_ids: true,
                ..LogOptions::default()
            },
        );
        assert_eq!(out, b"- hello\n");
    }
}
