//! The node's ingress: one HTTP listener on every node that accepts traffic
//! for every pod, Service and Route of the cluster.
//!
//! - `<pod>.<namespace>.pod` (also `…pod.localhost`, which resolves to
//!   loopback with no DNS set-up) reaches a pod served on this node.
//! - `<service>.<namespace>.svc` reaches a Service, and so does any host and
//!   path a Route maps to one. The request goes to one of the Service's
//!   Ready endpoints, picked by least outstanding requests (round robin
//!   among equals): served in process when the pod is on this node, proxied
//!   to the owning node's ingress otherwise.
//!
//! A request that never reached a guest (the pod had just gone from its
//! node) is tried on another endpoint whatever its method; a connection
//! failure is tried once more on another endpoint for idempotent methods.

mod serve;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use skiff_api::kinds::service::{Endpoint, RouteSpec};

pub use crate::runtimes::Backend;
pub use serve::{serve, serve_with};
use skiff_wasm::{BodyError, HttpBody, named_host, service_of_host, text_response};

/// Namespace and name of a pod.
pub type PodName = (String, String);

/// Set on an ingress's answer when the pod asked for is not served there:
/// the request reached no guest, so another endpoint may take it.
pub const POD_MISSING_HEADER: &str = "skiff-pod-missing";
/// Request bodies sent to a Service are buffered (so that a retry can send
/// them again) up to this size.
const MAX_BUFFERED_BODY: usize = 16 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The HTTP pods this node serves, by name.
#[derive(Clone, Default)]
pub struct LocalPods {
    /// Each pod's backend, with the uid of the pod that added it.
    pods: Arc<RwLock<HashMap<PodName, (String, Backend)>>>,
}

impl LocalPods {
    /// Serves pod `uid` under its name, in place of any earlier pod of that
    /// name.
    pub fn add(&self, pod: PodName, uid: &str, backend: Backend) {
        self.pods
            .write()
            .expect("routes lock")
            .insert(pod, (uid.to_owned(), backend));
    }

    /// Stops serving pod `uid`. A pod re-created under the same name has
    /// another uid, so the old pod's worker, still stopping, cannot take
    /// the new pod's route away.
    pub fn remove(&self, pod: &PodName, uid: &str) -> Option<Backend> {
        let mut pods = self.pods.write().expect("routes lock");
        match pods.get(pod) {
            Some((owner, _)) if owner == uid => pods.remove(pod).map(|(_, backend)| backend),
            _ => None,
        }
    }

    pub fn get(&self, pod: &PodName) -> Option<Backend> {
        let pods = self.pods.read().expect("routes lock");
        pods.get(pod).map(|(_, backend)| backend.clone())
    }

    pub fn len(&self) -> usize {
        self.pods.read().expect("routes lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One Ready pod of a Service and the requests this node has in flight to
/// it.
struct Balanced {
    endpoint: Endpoint,
    outstanding: Arc<AtomicUsize>,
}

/// A Service's endpoints as this node balances over them.
#[derive(Default)]
struct Backends {
    endpoints: Vec<Balanced>,
    next: AtomicUsize,
}

impl Backends {
    /// The endpoint with the fewest requests in flight, among those not yet
    /// tried; ties go round robin.
    fn pick(&self, tried: &[usize]) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|k| (start + k) % n)
            .filter(|i| !tried.contains(i))
            .min_by_key(|i| self.endpoints[*i].outstanding.load(Ordering::Relaxed))
    }
}

/// Counts a request in flight to an endpoint until dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct RouteRule {
    namespace: String,
    name: String,
    spec: RouteSpec,
}

impl RouteRule {
    /// How well the rule matches, higher is better: exact host over
    /// wildcard over any, then the longest path.
    fn score(&self, host: &str, path: &str) -> Option<(u8, usize)> {
        let host_score = match self.spec.host.as_str() {
            "" => 0,
            pattern if pattern.starts_with("*.") => {
                if !host.ends_with(&pattern[1..]) {
                    return None;
                }
                1
            }
            exact if exact == host => 2,
            _ => return None,
        };
        let prefix = self.spec.path.trim_end_matches('/');
        let path_ok = prefix.is_empty()
            || path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'));
        path_ok.then_some((host_score, prefix.len()))
    }
}

/// Services and Routes as this node knows them from its watches.
#[derive(Default)]
struct Table {
    services: HashMap<PodName, Arc<Backends>>,
    routes: Vec<RouteRule>,
}

/// The ingress: local pods, and the cluster's Services and Routes.
#[derive(Clone)]
pub struct Ingress {
    pub pods: LocalPods,
    table: Arc<RwLock<Table>>,
    client: Client<HttpConnector, Full<Bytes>>,
    /// This node's ingress address, as endpoints name it.
    own_address: String,
}

impl Ingress {
    pub fn new(own_address: String) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        Self {
            pods: LocalPods::default(),
            table: Arc::default(),
            client: Client::builder(TokioExecutor::new()).build(connector),
            own_address,
        }
    }

    /// Sets a Service's endpoints, keeping the in-flight counts of pods it
    /// had before.
    pub fn set_service(&self, namespace: &str, name: &str, endpoints: Vec<Endpoint>) {
        let key = (namespace.to_owned(), name.to_owned());
        let mut table = self.table.write().expect("ingress lock");
        let previous = table.services.get(&key).cloned();
        let endpoints = endpoints
            .into_iter()
            .map(|endpoint| {
                let outstanding = previous
                    .as_ref()
                    .and_then(|p| p.endpoints.iter().find(|b| b.endpoint.pod == endpoint.pod))
                    .map_or_else(Arc::default, |b| b.outstanding.clone());
                Balanced {
                    endpoint,
                    outstanding,
                }
            })
            .collect();
        table.services.insert(
            key,
            Arc::new(Backends {
                endpoints,
                next: AtomicUsize::new(0),
            }),
        );
    }

    pub fn remove_service(&self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        self.table
            .write()
            .expect("ingress lock")
            .services
            .remove(&key);
    }

    pub fn set_route(&self, namespace: &str, name: &str, spec: RouteSpec) {
        let mut table = self.table.write().expect("ingress lock");
        table
            .routes
            .retain(|r| !(r.namespace == namespace && r.name == name));
        table.routes.push(RouteRule {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            spec,
        });
    }

    pub fn remove_route(&self, namespace: &str, name: &str) {
        self.table
            .write()
            .expect("ingress lock")
            .routes
            .retain(|r| !(r.namespace == namespace && r.name == name));
    }

    /// Forgets every Service (or Route) before a full list replaces them.
    pub fn clear(&self, services: bool) {
        let mut table = self.table.write().expect("ingress lock");
        if services {
            table.services.clear();
        } else {
            table.routes.clear();
        }
    }

    /// The Service (namespace, name) a Route sends `host` and `path` to.
    fn route(&self, host: &str, path: &str) -> Option<PodName> {
        let table = self.table.read().expect("ingress lock");
        table
            .routes
            .iter()
            .filter_map(|r| Some((r.score(host, path)?, r)))
            .max_by_key(|(score, _)| *score)
            .map(|(_, r)| (r.namespace.clone(), r.spec.service.clone()))
    }

    /// Serves one request.
    pub async fn handle(
        &self,
        request: http::Request<hyper::body::Incoming>,
    ) -> http::Response<HttpBody> {
        let host = request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().host())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if let Some(pod) = pod_of_host(&host) {
            return match self.pods.get(&pod) {
                Some(Backend::Wasm(app)) => app.handle(request).await,
                Some(Backend::Process(addr)) => {
                    let (parts, body) = request.into_parts();
                    match buffered(body).await {
                        Ok(body) => self.to_process(addr, rebuild(&parts, &body)).await,
                        Err(response) => response,
                    }
                }
                None => {
                    let mut response = text_response(
                        StatusCode::NOT_FOUND,
                        format!("no pod {}/{} is serving on this node\n", pod.0, pod.1),
                    );
                    response
                        .headers_mut()
                        .insert(POD_MISSING_HEADER, HeaderValue::from_static("true"));
                    response
                }
            };
        }
        let bare_host = strip_port(&host);
        let service =
            service_of_host(&host).or_else(|| self.route(bare_host, request.uri().path()));
        match service {
            Some(service) => self.balance(service, request).await,
            None => text_response(
                StatusCode::NOT_FOUND,
                format!(
                    "no Route matches host `{host}` and path `{}`; a pod is <name>.<namespace>.pod, a Service <name>.<namespace>.svc\n",
                    request.uri().path()
                ),
            ),
        }
    }

    /// Sends a request to one of a Service's Ready endpoints.
    async fn balance(
        &self,
        (namespace, name): PodName,
        request: http::Request<hyper::body::Incoming>,
    ) -> http::Response<HttpBody> {
        let backends = self
            .table
            .read()
            .expect("ingress lock")
            .services
            .get(&(namespace.clone(), name.clone()))
            .cloned();
        let Some(backends) = backends.filter(|b| !b.endpoints.is_empty()) else {
            return unavailable(format!(
                "service {namespace}/{name} has no ready endpoints\n"
            ));
        };
        let (parts, body) = request.into_parts();
        let body = match buffered(body).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        let idempotent = matches!(
            parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        let mut tried = Vec::new();
        let mut retried_connect = false;
        let mut last_failure = String::new();
        while let Some(i) = backends.pick(&tried) {
            tried.push(i);
            let backend = &backends.endpoints[i];
            let _in_flight = InFlight::enter(&backend.outstanding);
            let endpoint = &backend.endpoint;
            if endpoint.address == self.own_address {
                match self.pods.get(&(namespace.clone(), endpoint.pod.clone())) {
                    Some(Backend::Wasm(app)) => return app.handle(rebuild(&parts, &body)).await,
                    Some(Backend::Process(addr)) => {
                        return self.to_process(addr, rebuild(&parts, &body)).await;
                    }
                    None => continue,
                }
            }
            match self
                .proxy(&namespace, endpoint, rebuild(&parts, &body))
                .await
            {
                Ok(response) if response.headers().contains_key(POD_MISSING_HEADER) => {
                    last_failure = format!("pod {} had left {}", endpoint.pod, endpoint.node);
                }
                Ok(response) => {
                    return response.map(|b| b.map_err(BodyError::new).boxed_unsync());
                }
                Err(e) => {
                    last_failure = format!(
                        "pod {} on {} ({}): {e}",
                        endpoint.pod, endpoint.node, endpoint.address
                    );
                    tracing::warn!("service {namespace}/{name}: {last_failure}");
                    if !(e.is_connect() && idempotent && !retried_connect) {
                        return text_response(
                            StatusCode::BAD_GATEWAY,
                            format!("service {namespace}/{name}: {last_failure}\n"),
                        );
                    }
                    retried_connect = true;
                }
            }
        }
        unavailable(format!(
            "service {namespace}/{name}: no endpoint could take the request ({last_failure})\n"
        ))
    }

    /// Sends a request to a Linux pod's process on this node.
    async fn to_process(
        &self,
        addr: std::net::SocketAddr,
        mut request: http::Request<Full<Bytes>>,
    ) -> http::Response<HttpBody> {
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        *request.uri_mut() = format!("http://{addr}{path}").parse().unwrap_or_default();
        match self.client.request(request).await {
            Ok(response) => response.map(|b| b.map_err(BodyError::new).boxed_unsync()),
            Err(e) => text_response(
                StatusCode::BAD_GATEWAY,
                format!("the pod's process on {addr} did not answer: {e}\n"),
            ),
        }
    }

    /// Sends a request for a pod to the ingress of the node that serves it.
    async fn proxy(
        &self,
        namespace: &str,
        endpoint: &Endpoint,
        mut request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        *request.uri_mut() = format!("http://{}{path}", endpoint.address)
            .parse()
            .unwrap_or_default();
        let headers = request.headers_mut();
        if let Some(original) = headers.remove(http::header::HOST) {
            headers.insert("x-forwarded-host", original);
        }
        if let Ok(host) = HeaderValue::from_str(&format!("{}.{namespace}.pod", endpoint.pod)) {
            headers.insert(http::header::HOST, host);
        }
        self.client.request(request).await
    }
}

/// The whole request body, up to [`MAX_BUFFERED_BODY`] (413 beyond).
async fn buffered(body: hyper::body::Incoming) -> Result<Bytes, http::Response<HttpBody>> {
    match Limited::new(body, MAX_BUFFERED_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(text_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("cannot read the request body: {e}\n"),
        )),
    }
}

/// A copy of the request, to send (perhaps again) to one endpoint.
fn rebuild(parts: &http::request::Parts, body: &Bytes) -> http::Request<Full<Bytes>> {
    let mut request = http::Request::new(Full::new(body.clone()));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = http::Version::HTTP_11;
    let headers = request.headers_mut();
    for (name, value) in &parts.headers {
        // Hop-by-hop, and the length is the buffered body's.
        if !matches!(
            name.as_str(),
            "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "upgrade"
        ) {
            headers.append(name, value.clone());
        }
    }
    request
}

fn unavailable(message: String) -> http::Response<HttpBody> {
    let mut response = text_response(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// `web.shop.pod[.localhost][:port]` → (`shop`, `web`).
pub fn pod_of_host(host: &str) -> Option<PodName> {
    named_host(host, "pod")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_addressed_by_host() {
        let pod = |ns: &str, name: &str| Some((ns.to_owned(), name.to_owned()));
        assert_eq!(pod_of_host("web.shop.pod"), pod("shop", "web"));
        assert_eq!(pod_of_host("web.shop.pod:8080"), pod("shop", "web"));
        assert_eq!(
            pod_of_host("web.shop.pod.localhost:8080"),
            pod("shop", "web")
        );
        assert_eq!(
            pod_of_host("Web.Shop.POD".to_ascii_lowercase().as_str()),
            pod("shop", "web")
        );
        assert_eq!(pod_of_host("127.0.0.1:8080"), None);
        assert_eq!(pod_of_host("web.pod"), None);
        assert_eq!(pod_of_host("a.b.c.pod"), None);
        assert_eq!(pod_of_host(".shop.pod"), None);
    }

    fn endpoint(pod: &str) -> Endpoint {
        Endpoint {
            pod: pod.into(),
            node: "n1".into(),
            address: "10.0.0.1:80".into(),
        }
    }

    #[test]
    fn routes_pick_the_most_specific_host_then_the_longest_path() {
        let ingress = Ingress::new("127.0.0.1:1".into());
        let route = |host: &str, path: &str, service: &str| RouteSpec {
            host: host.into(),
            path: path.into(),
            service: service.into(),
            port: None,
        };
        ingress.set_route("shop", "any", route("", "/", "fallback"));
        ingress.set_route("shop", "wild", route("*.example.com", "/", "wild"));
        ingress.set_route("shop", "exact", route("api.example.com", "/", "api"));
        ingress.set_route("shop", "v2", route("api.example.com", "/v2", "api-v2"));
        let to = |host: &str, path: &str| ingress.route(host, path).map(|(_, s)| s);
        assert_eq!(
            to("api.example.com", "/v2/items").as_deref(),
            Some("api-v2")
        );
        assert_eq!(to("api.example.com", "/v2").as_deref(), Some("api-v2"));
        assert_eq!(to("api.example.com", "/v20").as_deref(), Some("api"));
        assert_eq!(to("www.example.com", "/").as_deref(), Some("wild"));
        assert_eq!(to("other.org", "/x").as_deref(), Some("fallback"));
        ingress.remove_route("shop", "any");
        assert_eq!(to("other.org", "/x"), None);
        // Replacing a route by name leaves one rule.
        ingress.set_route("shop", "wild", route("*.example.com", "/", "wild2"));
        assert_eq!(to("www.example.com", "/").as_deref(), Some("wild2"));
    }

    #[test]
    fn balancing_prefers_the_least_outstanding_and_rotates_among_equals() {
        let ingress = Ingress::new("127.0.0.1:1".into());
        ingress.set_service(
            "shop",
            "web",
            vec![endpoint("a"), endpoint("b"), endpoint("c")],
        );
        let backends =
            ingress.table.read().unwrap().services[&("shop".to_owned(), "web".to_owned())].clone();
        let picks: Vec<usize> = (0..6).map(|_| backends.pick(&[]).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        let _busy_a = InFlight::enter(&backends.endpoints[0].outstanding);
        let _busy_b = InFlight::enter(&backends.endpoints[1].outstanding);
        assert!((0..5).all(|_| backends.pick(&[]) == Some(2)));
        // With the idle one tried, the busy ones are next.
        assert!(matches!(backends.pick(&[2]), Some(0 | 1)));
        assert_eq!(backends.pick(&[0, 1, 2]), None);
        // Counts survive an endpoints update for pods still there.
        ingress.set_service("shop", "web", vec![endpoint("b"), endpoint("d")]);
        let backends =
            ingress.table.read().unwrap().services[&("shop".to_owned(), "web".to_owned())].clone();
        assert_eq!(backends.endpoints[0].outstanding.load(Ordering::Relaxed), 1);
        assert_eq!(backends.pick(&[]), Some(1));
    }
}
