//! A client for the Skiff API: objects of any kind as JSON (typed reads via
//! [`Client::get_as`]), watches as streams of events and a
//! [`watcher`] that keeps one going, tokens.

pub mod events;
pub mod node_api;
pub mod watcher;

use std::time::Duration;

use futures::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use skiff_api::meta::{DeleteOptions, Preconditions};
use skiff_api::tokens::{ServiceAccountToken, ServiceAccountTokenRequest, TokenInfo, TokenRequest};
use skiff_api::{Kind, List, Status, WatchEvent};

/// A node's keys, as [`Client::node_keys`] reads them.
#[derive(Clone)]
pub struct NodeKeys {
    /// The cluster's key for requests between nodes.
    pub proxy: Vec<u8>,
    /// This node's key for the node API.
    pub api: Vec<u8>,
}

impl std::fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeKeys(..)")
    }
}

/// Where the API is and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// `http://host:port` or `https://host:port`.
    pub server: String,
    pub token: String,
    /// PEM of the CA that signed the server's certificate; when given, it is
    /// the only CA trusted.
    pub ca_pem: Option<Vec<u8>>,
    /// Accept any server certificate (for experiments only).
    pub insecure_skip_tls_verify: bool,
    pub timeout: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error `Status`.
    #[error("{}", .0.message)]
    Api(Box<Status>),
    #[error("cannot reach {server}: {reason}")]
    Connect { server: String, reason: String },
    #[error("unexpected response from the server: {0}")]
    Protocol(String),
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Api(status) => Some(status.code),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, ClientError::Api(s) if s.code == 409 && s.reason == "Conflict")
    }

    /// A write that named `metadata.uid` met an object of that name with
    /// another uid: the object it meant is gone.
    pub fn is_uid_mismatch(&self) -> bool {
        matches!(self, ClientError::Api(s) if s.code == 409 && s.message.contains("different uid"))
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Options of a list or watch.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<u32>,
    pub continue_token: Option<String>,
}

/// Options of a watch.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// Resume after this revision; from the current objects when `None`.
    pub resource_version: Option<String>,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub timeout: Option<Duration>,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(config: &ClientConfig) -> Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let server = config.server.trim_end_matches('/');
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(ClientError::Config(format!(
                "server `{server}` must start with http:// or https://"
            )));
        }
        let mut builder = reqwest::Client::builder();
        if let Some(timeout) = config.timeout {
            builder = builder.connect_timeout(timeout);
        }
        if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ClientError::Config(format!("certificate authority: {e}")))?;
            if certs.is_empty() {
                return Err(ClientError::Config(
                    "certificate authority: no certificate in the PEM".into(),
                ));
            }
            // A cluster's CA is trusted instead of the public roots, as
            // kubectl does with certificate-authority.
            builder = builder.tls_certs_only(certs);
        }
        if config.insecure_skip_tls_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        Ok(Self {
            http: builder
                .build()
                .map_err(|e| ClientError::Config(format!("HTTP client: {e}")))?,
            base: server.to_owned(),
            token: config.token.clone(),
        })
    }

    pub fn server(&self) -> &str {
        &self.base
    }

    /// `.../namespaces/{ns}/{plural}[/{name}[/status]]`, or the cluster
    /// level for cluster-scoped kinds and lists across namespaces.
    fn url(&self, kind: Kind, namespace: Option<&str>, name: Option<&str>, status: bool) -> String {
        let mut url = format!("{}/apis/skiff.dev/v1", self.base);
        if let (true, Some(ns)) = (kind.namespaced(), namespace) {
            url.push_str(&format!("/namespaces/{ns}"));
        }
        url.push('/');
        url.push_str(kind.plural());
        if let Some(name) = name {
            url.push('/');
            url.push_str(name);
            if status {
                url.push_str("/status");
            }
        }
        url
    }

    fn request(&self, method: Method, url: &str) -> RequestBuilder {
        self.http.request(method, url).bearer_auth(&self.token)
    }

    async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T> {
        let response = request.send().await.map_err(|e| self.connect_error(e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.connect_error(e))?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    fn connect_error(&self, error: reqwest::Error) -> ClientError {
        let mut reason = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            reason = format!("{reason}: {cause}");
            source = cause.source();
        }
        ClientError::Connect {
            server: self.base.clone(),
            reason,
        }
    }

    pub async fn get(&self, kind: Kind, namespace: Option<&str>, name: &str) -> Result<Value> {
        self.send(self.request(Method::GET, &self.url(kind, namespace, Some(name), false)))
            .await
    }

    /// Reads an object as its Rust type.
    pub async fn get_as<T: DeserializeOwned>(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<T> {
        let value = self.get(kind, namespace, name).await?;
        serde_json::from_value(value).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// One page of a list; `namespace: None` lists every namespace.
    pub async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<List<Value>> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(s) = &options.label_selector {
            query.push(("labelSelector", s.clone()));
        }
        if let Some(s) = &options.field_selector {
            query.push(("fieldSelector", s.clone()));
        }
        if let Some(limit) = options.limit {
            query.push(("limit", limit.to_string()));
        }
        if let Some(token) = &options.continue_token {
            query.push(("continue", token.clone()));
        }
        self.send(
            self.request(Method::GET, &self.url(kind, namespace, None, false))
                .query(&query),
        )
        .await
    }

    /// Every page of a list.
    pub async fn list_all(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<List<Value>> {
        let mut options = options.clone();
        let mut all = self.list(kind, namespace, &options).await?;
        while let Some(token) = all.metadata.continue_token.take() {
            options.continue_token = Some(token);
            let mut page = self.list(kind, namespace, &options).await?;
            all.items.append(&mut page.items);
            all.metadata.continue_token = page.metadata.continue_token;
        }
        Ok(all)
    }

    pub async fn create(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        object: &Value,
    ) -> Result<Value> {
        self.create_with(kind, namespace, object, false).await
    }

    /// Creates, or with `dry_run` only checks that it could.
    pub async fn create_with(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        object: &Value,
        dry_run: bool,
    ) -> Result<Value> {
        let request = self
            .request(Method::POST, &self.url(kind, namespace, None, false))
            .json(object);
        self.send(with_dry_run(request, dry_run)).await
    }

    /// Replaces an object; a `metadata.resourceVersion` in it makes the
    /// write conditional.
    pub async fn replace(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        object: &Value,
    ) -> Result<Value> {
        self.replace_with(kind, namespace, name, object, false)
            .await
    }

    pub async fn replace_with(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        object: &Value,
        dry_run: bool,
    ) -> Result<Value> {
        let request = self
            .request(Method::PUT, &self.url(kind, namespace, Some(name), false))
            .json(object);
        self.send(with_dry_run(request, dry_run)).await
    }

    pub async fn replace_status(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        object: &Value,
    ) -> Result<Value> {
        self.send(
            self.request(Method::PUT, &self.url(kind, namespace, Some(name), true))
                .json(object),
        )
        .await
    }

    /// Applies a JSON merge patch to the object (or its status).
    pub async fn patch(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        patch: &Value,
        status: bool,
    ) -> Result<Value> {
        let body = serde_json::to_vec(patch).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.send(
            self.request(
                Method::PATCH,
                &self.url(kind, namespace, Some(name), status),
            )
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/merge-patch+json",
            )
            .body(body),
        )
        .await
    }

    /// Deletes; with `resource_version`, only if the object is still at it.
    pub async fn delete(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        resource_version: Option<&str>,
    ) -> Result<Value> {
        let options = DeleteOptions {
            preconditions: resource_version.map(|rv| Preconditions {
                resource_version: Some(rv.to_owned()),
                uid: None,
            }),
            ..Default::default()
        };
        self.delete_with(kind, namespace, name, &options).await
    }

    /// Deletes with preconditions and a propagation policy.
    pub async fn delete_with(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Value> {
        let mut request = self.request(
            Method::DELETE,
            &self.url(kind, namespace, Some(name), false),
        );
        if options.preconditions.is_some()
            || options.propagation_policy.is_some()
            || !options.dry_run.is_empty()
        {
            request = request.json(options);
        }
        self.send(request).await
    }

    /// Watches a kind; the stream ends when the server ends the watch. An
    /// ERROR event carries a `Status` (e.g. 410 when the revision is too
    /// old).
    pub async fn watch(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        options: &WatchOptions,
    ) -> Result<impl Stream<Item = Result<WatchEvent<Value>>> + use<>> {
        // Bookmarks let a resumed watch start where this one got to, even
        // when nothing it selects changed meanwhile.
        let mut query: Vec<(&str, String)> = vec![
            ("watch", "true".into()),
            ("allowWatchBookmarks", "true".into()),
        ];
        if let Some(rv) = &options.resource_version {
            query.push(("resourceVersion", rv.clone()));
        }
        if let Some(s) = &options.label_selector {
            query.push(("labelSelector", s.clone()));
        }
        if let Some(s) = &options.field_selector {
            query.push(("fieldSelector", s.clone()));
        }
        if let Some(t) = options.timeout {
            query.push(("timeoutSeconds", t.as_secs().max(1).to_string()));
        }
        let request = self
            .request(Method::GET, &self.url(kind, namespace, None, false))
            .query(&query);
        Ok(self.line_stream(request).await?.map(move |line| {
            let line = line?;
            serde_json::from_slice(&line)
                .map_err(|e| ClientError::Protocol(format!("watch event: {e}")))
        }))
    }

    /// Nodes' usage as they sample it (`NodeMetricsList`).
    pub async fn node_metrics(&self) -> Result<Value> {
        let url = format!("{}/apis/skiff.dev/v1/nodemetrics", self.base);
        self.send(self.request(Method::GET, &url)).await
    }

    /// Pods' usage (`PodMetricsList`) in `namespace`, or in every one.
    pub async fn pod_metrics(
        &self,
        namespace: Option<&str>,
        label_selector: Option<&str>,
    ) -> Result<Value> {
        let url = match namespace {
            Some(ns) => format!("{}/apis/skiff.dev/v1/namespaces/{ns}/podmetrics", self.base),
            None => format!("{}/apis/skiff.dev/v1/podmetrics", self.base),
        };
        let mut request = self.request(Method::GET, &url);
        if let Some(selector) = label_selector {
            request = request.query(&[("labelSelector", selector)]);
        }
        self.send(request).await
    }

    /// A pod's logs, as the lines arrive (one item per line, without its
    /// newline); with `follow`, the stream lasts as long as the pod.
    pub async fn logs(
        &self,
        namespace: &str,
        name: &str,
        options: &node_api::LogOptions,
    ) -> Result<impl Stream<Item = Result<Vec<u8>>> + use<>> {
        let mut url = format!(
            "{}/apis/skiff.dev/v1/namespaces/{namespace}/pods/{name}/log",
            self.base
        );
        let query = options.to_query();
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query);
        }
        self.line_stream(self.request(Method::GET, &url)).await
    }

    /// Sends `request` and, when it succeeds, streams its body's lines (a
    /// watch's events, a log's lines); a broken stream is a `Connect`
    /// error naming the server.
    async fn line_stream(
        &self,
        request: RequestBuilder,
    ) -> Result<impl Stream<Item = Result<Vec<u8>>> + use<>> {
        let response = request.send().await.map_err(|e| self.connect_error(e))?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(api_error(status, &bytes));
        }
        let server = self.base.clone();
        Ok(lines(response.bytes_stream()).map(move |line| {
            line.map_err(|reason| ClientError::Connect {
                server: server.clone(),
                reason,
            })
        }))
    }

    /// Creates a token in `namespace`, or at the cluster level (`None`);
    /// the answer holds the secret, once.
    pub async fn create_token(
        &self,
        namespace: Option<&str>,
        request: &TokenRequest,
    ) -> Result<TokenInfo> {
        self.send(
            self.request(Method::POST, &self.tokens_url(namespace, None))
                .json(request),
        )
        .await
    }

    /// A new short-lived token of ServiceAccount `name` in `namespace`.
    pub async fn create_account_token(
        &self,
        namespace: &str,
        name: &str,
        request: &ServiceAccountTokenRequest,
    ) -> Result<ServiceAccountToken> {
        let url = format!(
            "{}/token",
            self.url(Kind::ServiceAccount, Some(namespace), Some(name), false)
        );
        self.send(self.request(Method::POST, &url).json(request))
            .await
    }

    pub async fn list_tokens(&self, namespace: Option<&str>) -> Result<Vec<TokenInfo>> {
        #[derive(serde::Deserialize)]
        struct Tokens {
            items: Vec<TokenInfo>,
        }
        let tokens: Tokens = self
            .send(self.request(Method::GET, &self.tokens_url(namespace, None)))
            .await?;
        Ok(tokens.items)
    }

    pub async fn delete_token(&self, namespace: Option<&str>, id: &str) -> Result<()> {
        let response = self
            .request(Method::DELETE, &self.tokens_url(namespace, Some(id)))
            .send()
            .await
            .map_err(|e| self.connect_error(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let bytes = response.bytes().await.unwrap_or_default();
        Err(api_error(status, &bytes))
    }

    fn tokens_url(&self, namespace: Option<&str>, id: Option<&str>) -> String {
        let mut url = format!("{}/apis/skiff.dev/v1", self.base);
        if let Some(ns) = namespace {
            url.push_str(&format!("/namespaces/{ns}"));
        }
        url.push_str("/tokens");
        if let Some(id) = id {
            url.push('/');
            url.push_str(id);
        }
        url
    }

    /// Asks for Service `name` in `namespace`, at zero, to be started: the
    /// autoscaled Deployments behind it get a pod. Answers which were.
    pub async fn activate_service(&self, namespace: &str, name: &str) -> Result<Value> {
        let url = format!(
            "{}/activate",
            self.url(Kind::Service, Some(namespace), Some(name), false)
        );
        self.send(self.request(Method::POST, &url)).await
    }

    /// Renews a node's lease for `duration` from now.
    pub async fn renew_lease(&self, node: &str, duration: Duration) -> Result<Value> {
        let url = format!("{}/apis/skiff.dev/v1/nodes/{node}/lease", self.base);
        self.send(
            self.request(Method::PUT, &url)
                .json(&serde_json::json!({"durationMillis": duration.as_millis() as u64})),
        )
        .await
    }

    /// The cluster's proxy key, which a node's ingress authenticates the
    /// requests it proxies to other nodes with. Only the token of node
    /// `node` (or a cluster admin's) may read it.
    pub async fn proxy_key(&self, node: &str) -> Result<Vec<u8>> {
        Ok(self.node_keys(node).await?.proxy)
    }

    /// Node `node`'s keys: the cluster's proxy key and the node's own API
    /// key ([`node_api`]). Only that node's token (or a cluster admin's)
    /// may read them.
    pub async fn node_keys(&self, node: &str) -> Result<NodeKeys> {
        use base64::Engine as _;
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Keys {
            key: String,
            api_key: String,
        }
        let url = format!("{}/apis/skiff.dev/v1/nodes/{node}/proxykey", self.base);
        let answer: Keys = self.send(self.request(Method::GET, &url)).await?;
        let decode = |what: &str, text: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| ClientError::Protocol(format!("{what}: {e}")))
        };
        Ok(NodeKeys {
            proxy: decode("proxy key", &answer.key)?,
            api: decode("node API key", &answer.api_key)?,
        })
    }

    /// The OpenAPI document.
    pub async fn openapi(&self) -> Result<Value> {
        self.send(self.request(Method::GET, &format!("{}/openapi.json", self.base)))
            .await
    }
}

/// Asks the server to check the write without making it.
fn with_dry_run(request: RequestBuilder, dry_run: bool) -> RequestBuilder {
    if dry_run {
        request.query(&[("dryRun", "All")])
    } else {
        request
    }
}

fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<Status>(body) {
        Ok(status) => ClientError::Api(Box::new(status)),
        Err(_) => ClientError::Api(Box::new(Status::failure(
            status.as_u16(),
            status.canonical_reason().unwrap_or("Error"),
            format!(
                "the server answered {status}: {}",
                String::from_utf8_lossy(body).trim()
            ),
        ))),
    }
}

/// Splits a byte stream into lines.
/// The lines of a streamed body (without their newlines); an error says
/// why the stream broke, or that a line passed [`MAX_LINE_BYTES`].
fn lines<S, E>(bytes: S) -> impl Stream<Item = std::result::Result<Vec<u8>, String>>
where
    S: Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    // `scanned`: how much of the buffer is known to hold no newline, so a
    // long line arriving in many chunks is scanned once, not once a chunk.
    futures::stream::unfold(
        (bytes, Vec::new(), 0usize, false),
        |(mut bytes, mut buffer, mut scanned, mut done)| async move {
            loop {
                if let Some(at) = buffer[scanned..].iter().position(|b| *b == b'\n') {
                    let end = scanned + at;
                    let rest = buffer.split_off(end + 1);
                    let mut line = std::mem::replace(&mut buffer, rest);
                    line.truncate(end);
                    return Some((Ok(line), (bytes, buffer, 0, done)));
                }
                scanned = buffer.len();
                if done {
                    return None;
                }
                if buffer.len() > MAX_LINE_BYTES {
                    let error =
                        format!("the server sent a line longer than {MAX_LINE_BYTES} bytes");
                    return Some((Err(error), (bytes, Vec::new(), 0, true)));
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                    Some(Err(e)) => {
                        done = true;
                        return Some((Err(e.to_string()), (bytes, buffer, scanned, done)));
                    }
                    None => done = true,
                }
            }
        },
    )
}

/// The longest line (a watch event, a log line) read from the server: far
/// above any object or log record the API sends, so only a broken or
/// hostile server reaches it, and the client's memory stays bounded.
const MAX_LINE_BYTES: usize = 64 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_split_across_chunks() {
        let chunks: Vec<std::result::Result<bytes::Bytes, String>> = vec![
            Ok(bytes::Bytes::from_static(b"{\"a\":1}\n{\"b\"")),
            Ok(bytes::Bytes::from_static(b":2}\n")),
            Ok(bytes::Bytes::from_static(b"{\"c\":3}\n")),
        ];
        let got: Vec<_> = lines(futures::stream::iter(chunks)).collect().await;
        let got: Vec<String> = got
            .into_iter()
            .map(|l| String::from_utf8(l.unwrap()).unwrap())
            .collect();
        assert_eq!(got, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
    }

    #[tokio::test]
    async fn a_line_without_end_is_cut_off_not_buffered_forever() {
        let chunk = bytes::Bytes::from(vec![b'x'; 1 << 20]);
        let endless = futures::stream::repeat(Ok::<_, String>(chunk));
        let got: Vec<_> = lines(endless).take(2).collect().await;
        assert_eq!(got.len(), 1, "the stream ends after the error");
        let error = got[0].as_ref().unwrap_err();
        assert!(error.contains("longer than"), "{error}");
    }

    #[test]
    fn urls_follow_the_api_layout() {
        let client = Client::new(&ClientConfig {
            server: "http://cp:6443/".into(),
            token: "t".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            client.url(Kind::Pod, Some("shop"), Some("web"), true),
            "http://cp:6443/apis/skiff.dev/v1/namespaces/shop/pods/web/status"
        );
        assert_eq!(
            client.url(Kind::Pod, None, None, false),
            "http://cp:6443/apis/skiff.dev/v1/pods"
        );
        assert_eq!(
            client.url(Kind::Node, Some("ignored"), Some("n1"), false),
            "http://cp:6443/apis/skiff.dev/v1/nodes/n1"
        );
        assert!(
            Client::new(&ClientConfig {
                server: "cp:6443".into(),
                ..Default::default()
            })
            .is_err()
        );
    }
}
