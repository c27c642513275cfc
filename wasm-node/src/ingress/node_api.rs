//! The node API on the ingress: `NODE.node` hosts, served only to the
//! control plane (see [`skiff_client::node_api`] for the credential and
//! why it is shaped so).
//!
//! - `GET /logs/{namespace}/{name}/{uid}` with the API's log options (and
//!   `limitBytes`): the pod's records as text lines, streamed a chunk at a
//!   time and followed while the pod lives when asked. A node serves at
//!   most [`MAX_LOG_STREAMS`] such answers at once, and a namespace at
//!   most [`MAX_LOG_STREAMS_PER_NAMESPACE`] of them.
//! - `GET /stats`: the node's usage summary, as JSON; `?namespace=NS`, only
//!   that namespace's (what a tenant's request is answered from).
//! - `GET /load`: every served pod's requests so far and the requests held
//!   for Services at zero, as JSON: what the autoscaler samples.
//!
//! Every answer, refusals after the credential held included, carries the
//! reply proof; a request without a credential gets the same 404 as any
//! cluster host, so the API's existence is no more visible than a pod's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt as _;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::BodyExt as _;
use skiff_client::node_api::{LOAD_PATH, NodeLoad, NodeSummary, STATS_PATH};
use skiff_client::node_api::{LogOptions, NODE_AUTH_HEADER, NODE_REPLY_HEADER, NodeApiKey};
use skiff_wasm::{BodyError, HttpBody, text_response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::logs::{LogChunks, LogRecord, NodeLogs, ReadQuery, pod_dir, read_dir};

/// Log answers streaming at once on a node: each holds a chunk of memory
/// and, while following, a subscription; past this the control plane is
/// told to come back (503) rather than the node's memory spent.
pub const MAX_LOG_STREAMS: usize = 256;

/// Log answers one namespace may have open at once on a node: past this
/// its readers are told to come back (429), so that one tenant's readers
/// cannot take every one of the node's [`MAX_LOG_STREAMS`].
pub const MAX_LOG_STREAMS_PER_NAMESPACE: usize = 32;

/// The usage summary's source, set once the node's sampler runs.
pub type StatsSource = Arc<dyn Fn() -> NodeSummary + Send + Sync>;

/// The ingress's load, for the autoscaler.
pub type LoadSource = Arc<dyn Fn() -> NodeLoad + Send + Sync>;

/// What the node API reads from.
pub struct NodeApi {
    node: String,
    key: NodeApiKey,
    logs: Arc<NodeLogs>,
    data_dir: std::path::PathBuf,
    stats: OnceLock<StatsSource>,
    load: OnceLock<LoadSource>,
    streams: Arc<Semaphore>,
    namespaces: Arc<NamespaceStreams>,
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
            load: OnceLock::new(),
            streams: Arc::new(Semaphore::new(MAX_LOG_STREAMS)),
            namespaces: NamespaceStreams::new(MAX_LOG_STREAMS_PER_NAMESPACE),
        }
    }

    /// Serves `/stats` from `source` from now on.
    pub fn set_stats(&self, source: StatsSource) {
        let _ = self.stats.set(source);
    }

    /// Serves `/load` from `source` from now on.
    pub fn set_load(&self, source: LoadSource) {
        let _ = self.load.set(source);
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
            let namespace = match stats_namespace(request.uri().query()) {
                Ok(namespace) => namespace,
                Err(e) => return text_response(StatusCode::BAD_REQUEST, format!("{e}\n")),
            };
            return match self.stats.get() {
                Some(source) => match namespace {
                    Some(namespace) => json_response(&only_namespace(source(), &namespace)),
                    None => json_response(&source()),
                },
                None => text_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this node has no usage samples yet\n".into(),
                ),
            };
        }
        if path == LOAD_PATH {
            if request.uri().query().is_some_and(|q| !q.is_empty()) {
                return text_response(
                    StatusCode::BAD_REQUEST,
                    format!("{LOAD_PATH} takes no query parameters\n"),
                );
            }
            return match self.load.get() {
                Some(source) => json_response(&source()),
                None => text_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this node's ingress does not serve yet\n".into(),
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
                let limit_bytes = options.limit_bytes;
                self.logs(namespace, name, uid, options, limit_bytes).await
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
        limit_bytes: Option<u64>,
    ) -> http::Response<HttpBody> {
        if !self.logs.config().capture {
            return text_response(
                StatusCode::NOT_FOUND,
                format!(
                    "node {} discards what its pods write (it runs with --capture-pod-output=false): pod {namespace}/{name} has no logs\n",
                    self.node
                ),
            );
        }
        // The namespace's share first: a tenant at its cap is told so
        // without taking one of the node's.
        let Some(namespace_permit) = self.namespaces.try_acquire(namespace) else {
            return retry_later(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "namespace {namespace} has {} log answers open on node {} already; try again when one ends\n",
                    self.namespaces.cap, self.node
                ),
            );
        };
        let Ok(node_permit) = self.streams.clone().try_acquire_owned() else {
            return retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "node {} is serving {MAX_LOG_STREAMS} log answers already\n",
                    self.node
                ),
            );
        };
        let live = self
            .logs
            .get(uid)
            .filter(|pod| pod.namespace() == namespace && pod.name() == name);
        let query = ReadQuery {
            previous: options.previous,
            tail_lines: options
                .tail_lines
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            since: options
                .since_seconds
                .map(|s| SystemTime::now() - Duration::from_secs(s)),
        };
        let opened = match &live {
            Some(pod) if options.follow => pod.read_and_follow(query).await,
            Some(pod) => pod.read(query).await,
            None => {
                let dir = pod_dir(&self.data_dir, namespace, name, uid);
                read_dir(&dir, query).await
            }
        };
        let chunks = match opened {
            Ok(chunks) => chunks,
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
        text_ok(answer_body(Answer {
            pod: format!("{namespace}/{name}"),
            chunks,
            options,
            left: limit_bytes,
            _permits: (namespace_permit, node_permit),
        }))
    }
}

/// A log answer on its way: the permits go with it, so they are given
/// back when the body ends or is dropped (the client went away), whether
/// or not it follows.
struct Answer {
    /// `namespace/name`, for the node's log.
    pod: String,
    chunks: LogChunks,
    options: LogOptions,
    /// Bytes still to send, under `limitBytes`.
    left: Option<u64>,
    _permits: (NamespacePermit, OwnedSemaphorePermit),
}

/// The answer's records rendered a chunk at a time, as they are read.
fn answer_body(answer: Answer) -> HttpBody {
    let frames = futures::stream::unfold(Some(answer), |answer| async move {
        let mut answer = answer?;
        loop {
            if answer.left == Some(0) {
                return None;
            }
            let chunk = match answer.chunks.next().await? {
                Ok(chunk) => chunk,
                Err(e) => {
                    tracing::warn!(
                        "reading the logs of pod {}: {e}; the answer is cut",
                        answer.pod
                    );
                    return Some((Err(BodyError::new(e)), None));
                }
            };
            let mut out = render_chunk(&chunk, &answer.options);
            if let Some(left) = &mut answer.left {
                out.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= out.len() as u64;
            }
            if !out.is_empty() {
                return Some((Ok(http_body::Frame::data(Bytes::from(out))), Some(answer)));
            }
        }
    });
    HttpBody::new(http_body_util::StreamBody::new(frames))
}

/// A chunk of records in the file format, as a log reader sees them.
fn render_chunk(chunk: &[u8], options: &LogOptions) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.len());
    for line in chunk.split(|&b| b == b'\n').filter(|line| !line.is_empty()) {
        if let Some(record) = LogRecord::parse(&String::from_utf8_lossy(line)) {
            render(&mut out, &record, options);
        }
    }
    out
}

/// A refusal the caller may try again after a second.
fn retry_later(status: StatusCode, message: String) -> http::Response<HttpBody> {
    let mut response = text_response(status, message);
    response
        .headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Log answers open per namespace, so that one tenant cannot take all
/// of a node's [`MAX_LOG_STREAMS`].
struct NamespaceStreams {
    cap: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// One of a namespace's log answers, given back when dropped.
struct NamespacePermit {
    streams: Arc<NamespaceStreams>,
    namespace: String,
}

impl NamespaceStreams {
    fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap,
            open: Mutex::default(),
        })
    }

    fn try_acquire(self: &Arc<Self>, namespace: &str) -> Option<NamespacePermit> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(namespace.to_owned()).or_default();
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(NamespacePermit {
            streams: self.clone(),
            namespace: namespace.to_owned(),
        })
    }

    #[cfg(test)]
    fn open(&self, namespace: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(namespace).copied().unwrap_or(0)
    }
}

impl Drop for NamespacePermit {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.namespace) {
            *count -= 1;
            // Only namespaces reading now are kept.
            if *count == 0 {
                open.remove(&self.namespace);
            }
        }
    }
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

/// The namespace `/stats?namespace=NS` asks about; none for `/stats`.
fn stats_namespace(query: Option<&str>) -> Result<Option<String>, String> {
    let mut namespace = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if name != "namespace" {
            return Err(format!(
                "query parameter {}: not known for {STATS_PATH} (namespace is)",
                name.escape_default()
            ));
        }
        if namespace.is_some() {
            return Err("query parameter namespace: given more than once".into());
        }
        if !is_path_name(&value) {
            return Err(format!(
                "query parameter namespace: `{}` is not a namespace name",
                value.escape_default()
            ));
        }
        namespace = Some(value.into_owned());
    }
    Ok(namespace)
}

/// A node's summary as one namespace may see it: its pods, and totals of
/// them alone. How many instances the node runs says what the other
/// tenants do, and is left out (0); the node's slots are no one's.
fn only_namespace(mut summary: NodeSummary, namespace: &str) -> NodeSummary {
    summary.pods.retain(|pod| pod.namespace == namespace);
    summary.cpu_cores = summary.pods.iter().map(|pod| pod.cpu_cores).sum();
    summary.memory_bytes = summary.pods.iter().map(|pod| pod.memory_bytes).sum();
    summary.instances_in_use = 0;
    summary
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
    use crate::logs::LogConfig;
    use skiff_client::node_api::PodSummary;
    use skiff_wasm::{LogSink as _, LogStream};

    const KEY: [u8; 32] = [7; 32];

    fn api(dir: &std::path::Path) -> (NodeApi, Arc<NodeLogs>) {
        let logs = Arc::new(NodeLogs::new(dir, LogConfig::default()));
        let api = NodeApi::new("n1", NodeApiKey::new(&KEY), logs.clone(), dir);
        (api, logs)
    }

    async fn get(api: &NodeApi, path: &str) -> http::Response<HttpBody> {
        let credential = NodeApiKey::new(&KEY).sign("n1", "GET", path, SystemTime::now());
        let request = http::Request::get(path)
            .header(NODE_AUTH_HEADER, credential)
            .body(())
            .unwrap();
        api.handle("n1", &request).await
    }

    async fn text(response: http::Response<HttpBody>) -> String {
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_namespace_past_its_cap_is_told_to_come_back_and_a_dropped_answer_frees_its_place() {
        let tmp = tempfile::tempdir().unwrap();
        let (api, logs) = api(tmp.path());
        let pod = logs.open("a", "p", "u1").unwrap();
        let other = logs.open("b", "q", "u2").unwrap();
        pod.line(LogStream::Stdout, None, b"hello");
        pod.flush().await;
        other.line(LogStream::Stdout, None, b"world");
        other.flush().await;
        // Answers not read (a slow client): each holds its places.
        let mut open = Vec::new();
        for _ in 0..MAX_LOG_STREAMS_PER_NAMESPACE {
            let response = get(&api, "/logs/a/p/u1").await;
            assert_eq!(response.status(), StatusCode::OK);
            open.push(response);
        }
        assert_eq!(
            api.streams.available_permits(),
            MAX_LOG_STREAMS - MAX_LOG_STREAMS_PER_NAMESPACE
        );
        let refused = get(&api, "/logs/a/p/u1").await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()[http::header::RETRY_AFTER], "1");
        assert_eq!(
            text(refused).await,
            "namespace a has 32 log answers open on node n1 already; try again when one ends\n"
        );
        // Another namespace is served still, and its answer read to the
        // end gives its places back.
        assert_eq!(text(get(&api, "/logs/b/q/u2").await).await, "world\n");
        assert_eq!(api.namespaces.open("b"), 0);
        // An answer dropped unread gives its places back.
        open.pop();
        assert_eq!(api.namespaces.open("a"), MAX_LOG_STREAMS_PER_NAMESPACE - 1);
        assert_eq!(text(get(&api, "/logs/a/p/u1").await).await, "hello\n");
        drop(open);
        assert_eq!(api.namespaces.open("a"), 0);
        assert_eq!(api.streams.available_permits(), MAX_LOG_STREAMS);
    }

    #[tokio::test]
    async fn answers_are_tailed_limited_and_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let (api, logs) = api(tmp.path());
        let pod = logs.open("a", "p", "u1").unwrap();
        for i in 0..100 {
            pod.line(LogStream::Stdout, None, format!("line {i:02}").as_bytes());
        }
        pod.flush().await;
        let tail = text(get(&api, "/logs/a/p/u1?tailLines=2").await).await;
        assert_eq!(tail, "line 98\nline 99\n");
        let limited = text(get(&api, "/logs/a/p/u1?limitBytes=10").await).await;
        assert_eq!(limited, "line 00\nli");
        let zero = get(&api, "/logs/a/p/u1?limitBytes=0").await;
        assert_eq!(zero.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            text(zero).await,
            "query parameter limitBytes: must be at least 1\n"
        );
        // A follow: the tail, then what comes, through one body.
        let mut body = get(&api, "/logs/a/p/u1?tailLines=1&follow=true")
            .await
            .into_body();
        let mut next = async || {
            let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
        };
        assert_eq!(next().await, "line 99\n");
        pod.line(LogStream::Stdout, None, b"more");
        pod.flush().await;
        assert_eq!(next().await, "more\n");
        assert_eq!(api.namespaces.open("a"), 1);
    }

    #[tokio::test]
    async fn stats_of_a_namespace_are_its_pods_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let (api, _logs) = api(tmp.path());
        let pod = |namespace: &str, cpu_cores, memory_bytes| PodSummary {
            namespace: namespace.into(),
            name: "p".into(),
            uid: format!("{namespace}-1"),
            cpu_cores,
            memory_bytes,
            ..PodSummary::default()
        };
        let summary = NodeSummary {
            node: "n1".into(),
            cpu_cores: 3.0,
            memory_bytes: 300,
            instances_in_use: 5,
            instance_slots: 10,
            pods: vec![pod("a", 1.0, 100), pod("b", 2.0, 200)],
            ..NodeSummary::default()
        };
        api.set_stats({
            let summary = summary.clone();
            Arc::new(move || summary.clone())
        });
        let read = async |path: &str| -> NodeSummary {
            let response = get(&api, path).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            serde_json::from_str(&text(response).await).unwrap()
        };
        assert_eq!(read("/stats").await, summary);
        let a = read("/stats?namespace=a").await;
        assert_eq!(a.pods, [pod("a", 1.0, 100)]);
        assert_eq!((a.cpu_cores, a.memory_bytes), (1.0, 100));
        assert_eq!((a.instances_in_use, a.instance_slots), (0, 10));
        assert!(read("/stats?namespace=c").await.pods.is_empty());
        for (path, error) in [
            (
                "/stats?namespace=A",
                "query parameter namespace: `A` is not a namespace name",
            ),
            (
                "/stats?namespace=..",
                "query parameter namespace: `..` is not a namespace name",
            ),
            (
                "/stats?namespace=a&namespace=b",
                "query parameter namespace: given more than once",
            ),
            (
                "/stats?node=n2",
                "query parameter node: not known for /stats (namespace is)",
            ),
        ] {
            let response = get(&api, path).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
            assert_eq!(text(response).await, format!("{error}\n"));
        }
    }

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
