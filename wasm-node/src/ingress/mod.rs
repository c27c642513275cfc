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
//!
//! Nothing a tenant can write is trusted (see [`credentials`]):
//!
//! - A `.pod` host is served to another node's proxied request, which
//!   carries a proxy credential for that very pod; to anyone else only
//!   where the node serves cluster hosts ([`IngressConfig`]). The same
//!   holds for `.svc` hosts, except that this node's own guests always
//!   reach them, named by their gateway. Routes are served to everyone.
//! - A Service request from a guest names the guest's namespace with a
//!   credential made by this node; the Service must admit that namespace
//!   (`spec.allowedCallers`), else 403.
//! - Requests are proxied only to the ingress address of a registered
//!   Node, whatever a Service's endpoints say.
//! - The internal headers ([`INTERNAL_HEADERS`]) are removed from every
//!   request before it goes anywhere, so no guest, process or other node
//!   sees a credential it did not get from this node; and a pod's answer
//!   cannot claim [`POD_MISSING_HEADER`] to have its request sent again.
//!
//! Every request leaves the ingress in a W3C trace: a client's valid
//! `traceparent` is continued (same trace id, a new parent-id for this
//! hop), anything else replaced by a new trace, so a request proxied from
//! node to node keeps its trace. Its `x-request-id` is the client's when
//! well-formed, else the trace id: a pod's log records, which carry the
//! request id, are then found by trace (`ensure_request_id`).

pub mod credentials;
mod hold;
pub mod node_api;
mod outgoing;
mod serve;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use outgoing::{ClientBody, Outgoing};
use skiff_api::kinds::service::{Endpoint, RouteSpec, ServiceSpec, ServiceStatus};
use tokio::sync::watch;

use crate::metrics::{Metrics, PodMetrics, Served};
pub use crate::runtimes::Backend;
pub use credentials::{CallerKey, PROXY_KEY_LEN, ProxyAuthError, ProxyKey, SignedCache};
pub use hold::{Activator, HoldConfig};
pub use serve::serve;
use skiff_wasm::{
    BodyError, CALLER_AUTH_HEADER, CALLER_NAMESPACE_HEADER, HttpBody, INTERNAL_HEADERS,
    PROXY_AUTH_HEADER, named_host, service_of_host, text_response,
};

/// Namespace and name of a pod.
pub type PodName = (String, String);

/// Set on an ingress's answer when the pod asked for is not served there:
/// the request reached no guest, so another endpoint may take it.
pub const POD_MISSING_HEADER: &str = "skiff-pod-missing";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// The HTTP pods this node serves, by name.
#[derive(Clone)]
pub struct LocalPods {
    /// Each pod's backend, with the uid of the pod that added it.
    pods: Arc<crate::metrics::ServedPods>,
    /// Their metrics, which go with them.
    metrics: Arc<Metrics>,
    /// Told when a pod becomes Ready (shared with the holds: a request
    /// held for a Service at zero looks again).
    changed: Arc<watch::Sender<u64>>,
    /// The labels of the pods bound to this node and whether they are
    /// being deleted, by uid, as the API has them now: what a held
    /// request's Service selects among the Ready ones.
    bound: Arc<RwLock<HashMap<String, BoundPod>>>,
}

/// A pod bound to this node, as the API has it now.
struct BoundPod {
    labels: BTreeMap<String, String>,
    deleting: bool,
}

impl LocalPods {
    /// No pods yet; `per_pod_metrics` says whether their requests are
    /// counted into exported series too (see [`IngressConfig`]).
    fn new(per_pod_metrics: bool, changed: Arc<watch::Sender<u64>>) -> Self {
        let pods = Arc::default();
        let metrics = Arc::new(Metrics::new(Arc::downgrade(&pods), per_pod_metrics));
        Self {
            pods,
            metrics,
            changed,
            bound: Arc::default(),
        }
    }

    /// Pod `uid`, served under its name, is Ready (or no longer): requests
    /// held for a Service at zero whose selector picks it may go to it at
    /// once.
    pub fn set_ready(&self, pod: &PodName, uid: &str, ready: bool) {
        {
            let mut pods = self.pods.write().expect("routes lock");
            let Some(served) = pods.get_mut(pod).filter(|s| s.uid == uid) else {
                return;
            };
            served.ready = ready;
        }
        if ready {
            self.wake();
        }
    }

    /// Pod `uid` is bound here with these labels, being deleted or not:
    /// told on every change the node's watch brings, so that a pod
    /// relabelled out of a selector, or on its way out, takes no more of
    /// that Service's held requests.
    pub fn note_bound(&self, uid: &str, labels: &BTreeMap<String, String>, deleting: bool) {
        self.bound.write().expect("bound lock").insert(
            uid.to_owned(),
            BoundPod {
                labels: labels.clone(),
                deleting,
            },
        );
        self.wake();
    }

    /// Pod `uid` is no longer bound here.
    pub fn forget_bound(&self, uid: &str) {
        self.bound.write().expect("bound lock").remove(uid);
    }

    /// Has requests held for Services at zero look again.
    fn wake(&self) {
        if self.changed.receiver_count() > 0 {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// A Ready pod of `namespace` on this node that `selector` (not empty)
    /// picks by its labels as the API has them now, not being deleted, if
    /// there is one: what the Service's endpoints will list.
    fn ready_for(
        &self,
        namespace: &str,
        selector: &BTreeMap<String, String>,
    ) -> Option<(Backend, Arc<PodMetrics>)> {
        if selector.is_empty() {
            return None;
        }
        let pods = self.pods.read().expect("routes lock");
        let bound = self.bound.read().expect("bound lock");
        pods.iter()
            .filter(|((ns, _), served)| ns == namespace && served.ready)
            .find(|(_, served)| {
                bound.get(&served.uid).is_some_and(|pod| {
                    !pod.deleting && selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
                })
            })
            .map(|(_, served)| (served.backend.clone(), served.metrics.clone()))
    }

    /// Serves pod `uid` under its name, in place of any earlier pod of that
    /// name.
    pub fn add(&self, pod: PodName, uid: &str, backend: Backend) {
        let mut pods = self.pods.write().expect("routes lock");
        match pods.get_mut(&pod) {
            // The same pod again: its series (and handles) go on.
            Some(earlier) if earlier.uid == uid => earlier.backend = backend,
            earlier => {
                // Forgotten under the write lock, before the new pod's first
                // request can take a handle on a series about to go.
                if earlier.is_some() {
                    self.metrics.forget(&pod);
                }
                let served = Served::new(&pod, uid, backend);
                pods.insert(pod, served);
            }
        }
    }

    /// Stops serving pod `uid`. A pod re-created under the same name has
    /// another uid, so the old pod's worker, still stopping, cannot take
    /// the new pod's route away.
    pub fn remove(&self, pod: &PodName, uid: &str) -> Option<Backend> {
        let mut pods = self.pods.write().expect("routes lock");
        match pods.get(pod) {
            Some(served) if served.uid == uid => {
                self.metrics.forget(pod);
                pods.remove(pod).map(|served| served.backend)
            }
            _ => None,
        }
    }

    /// The metrics of these pods (and of the node's instances).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn get(&self, pod: &PodName) -> Option<Backend> {
        let pods = self.pods.read().expect("routes lock");
        pods.get(pod).map(|served| served.backend.clone())
    }

    /// The pod's backend and its metric handles, in one look-up.
    fn get_served(&self, pod: &PodName) -> Option<(Backend, Arc<PodMetrics>)> {
        let pods = self.pods.read().expect("routes lock");
        pods.get(pod)
            .map(|served| (served.backend.clone(), served.metrics.clone()))
    }

    pub fn len(&self) -> usize {
        self.pods.read().expect("routes lock").len()
    }

    /// The requests pod `pod` has had so far, counted whether or not
    /// per-pod metrics are.
    pub fn requests_of(&self, pod: &PodName) -> u64 {
        self.answered_of(pod).0
    }

    /// A served pod's requests answered so far, and the time they took.
    pub fn answered_of(&self, pod: &PodName) -> (u64, Duration) {
        let pods = self.pods.read().expect("routes lock");
        pods.get(pod).map_or((0, Duration::ZERO), |served| {
            let load = served.metrics.load.read();
            (load.requests, Duration::from_nanos(load.answered_nanos))
        })
    }

    /// Every served pod's requests so far, for the autoscaler.
    pub fn load(&self) -> Vec<skiff_client::node_api::PodLoad> {
        let pods = self.pods.read().expect("routes lock");
        pods.iter()
            .map(|((namespace, name), served)| {
                let load = served.metrics.load.read();
                skiff_client::node_api::PodLoad {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    uid: served.uid.clone(),
                    in_flight: load.in_flight,
                    requests: load.requests,
                    busy_nanos: load.busy_nanos,
                    at_nanos: load.at_nanos,
                    began_nanos: load.began_nanos,
                }
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a request held for a Service at zero waited for.
enum Waited {
    /// The Service has endpoints again.
    Endpoints(Arc<Backends>),
    /// A pod of this node it selects is Ready: served here at once.
    Local((Backend, Arc<PodMetrics>), Arc<Backends>),
}

/// One Ready pod of a Service and the requests this node has in flight to
/// it.
struct Balanced {
    endpoint: Endpoint,
    outstanding: Arc<AtomicUsize>,
    /// The pod's namespace and name, as its host and credential name it.
    pod: PodName,
    /// `NAME.NAMESPACE.pod`, the Host a proxied request carries, made once.
    host: HeaderValue,
    /// The proxy credential for that host, made at most once a second.
    signed: SignedCache,
}

/// A Service's endpoints as this node balances over them, and the spec
/// that says who may call it.
#[derive(Default)]
struct Backends {
    spec: ServiceSpec,
    endpoints: Vec<Balanced>,
    next: AtomicUsize,
    /// With no endpoint: hold requests and have a pod started.
    scales_from_zero: bool,
    /// Why the Service's pods cannot start, if its status says.
    unavailable_reason: Option<String>,
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

/// Services, Routes and Nodes as this node knows them from its watches.
#[derive(Default)]
struct Table {
    services: HashMap<PodName, Arc<Backends>>,
    routes: Vec<RouteRule>,
    /// Each registered Node's ingress address, by node name.
    nodes: HashMap<String, String>,
    /// The same addresses, for the check on every proxied request.
    node_ingresses: HashSet<String>,
}

/// How an ingress is set up.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// This node's ingress address, as endpoints name it.
    pub own_address: String,
    /// The cluster's key for requests between nodes.
    pub proxy_key: ProxyKey,
    /// This node's key for its guests' Service calls.
    pub caller_key: CallerKey,
    /// Whether `.pod` and `.svc` hosts are served to requests without a
    /// credential (from outside the cluster, or from a process on this
    /// machine), as on a developer's machine; otherwise only Routes are.
    pub serve_cluster_hosts: bool,
    /// Whether each pod's requests are counted into exported series (by
    /// status class, latency, in flight). A node that serves no metrics
    /// has no reader for them and skips the work; what the autoscaler and
    /// `wasmctl top` sample is counted either way.
    pub pod_metrics: bool,
}

/// The ingress: local pods, and the cluster's Services and Routes.
#[derive(Clone)]
pub struct Ingress {
    pub pods: LocalPods,
    table: Arc<RwLock<Table>>,
    /// Behind one `Arc`: the ingress is cloned per connection (and per
    /// request by some callers), and the client is many `Arc`s inside.
    client: Arc<Client<HttpConnector, ClientBody>>,
    config: Arc<IngressConfig>,
    /// What `NODE.node` hosts serve to the control plane, once set.
    node_api: Option<Arc<node_api::NodeApi>>,
    /// Requests waiting for Services at zero.
    holds: Arc<hold::Holds>,
}

/// What a request's host names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostTarget {
    /// `NAME.NAMESPACE.pod`
    Pod(PodName),
    /// `NAME.NAMESPACE.svc`
    Service(PodName),
    /// Anything else: Routes decide.
    Other,
}

impl HostTarget {
    fn of(host: &str) -> Self {
        if let Some(pod) = pod_of_host(host) {
            HostTarget::Pod(pod)
        } else if let Some(service) = service_of_host(host) {
            HostTarget::Service(service)
        } else {
            HostTarget::Other
        }
    }
}

/// Who sent a request, as far as its credentials show.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Caller {
    /// No credential: a client outside the cluster, or any process on a
    /// machine that reaches the ingress.
    Anyone,
    /// Another node's ingress, proxying a request for this pod host.
    Node,
    /// A guest on this node, in this namespace, as its gateway vouches.
    Namespace(String),
}

impl Ingress {
    pub fn new(config: IngressConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let changed = Arc::new(watch::Sender::new(0));
        Self {
            pods: LocalPods::new(config.pod_metrics, changed.clone()),
            table: Arc::default(),
            // Pooled connections to other nodes are let go before the
            // other side's idle deadline (`--listen-header-timeout`, 30s
            // by default) could close one under a request being sent.
            client: Arc::new(
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                    .pool_timer(hyper_util::rt::TokioTimer::new())
                    .build(connector),
            ),
            config: Arc::new(config),
            node_api: None,
            holds: Arc::new(hold::Holds::new(HoldConfig::default(), changed)),
        }
    }

    /// How many requests a Service at zero may have held, and for how long.
    pub fn with_hold_config(mut self, config: HoldConfig) -> Self {
        self.holds = Arc::new(hold::Holds::new(config, self.pods.changed.clone()));
        self
    }

    /// Who is told when a Service at zero has requests waiting.
    pub fn set_activator(&self, activator: Activator) {
        self.holds.set_activator(activator);
    }

    /// Every served pod's requests, and the requests held for Services at
    /// zero: what the autoscaler samples. The source holds the pods and
    /// the holds, not the ingress (which holds the node API it is given to).
    pub fn load_source(&self) -> node_api::LoadSource {
        let (pods, holds) = (self.pods.clone(), self.holds.clone());
        Arc::new(move || load(&pods, &holds))
    }

    /// Serves the node API ([`node_api`]) on this node's `NODE.node` host.
    pub fn with_node_api(mut self, api: Arc<node_api::NodeApi>) -> Self {
        self.node_api = Some(api);
        self
    }

    /// The credential this node's gateway sends for guests of `namespace`.
    pub fn caller_credential(&self, namespace: &str) -> HeaderValue {
        self.config.caller_key.credential(namespace)
    }

    /// Sets a Service's spec and endpoints, keeping the in-flight counts of
    /// pods it had before. An endpoint whose pod name is no DNS label is
    /// dropped: it would make another host of the request proxied to it.
    pub fn set_service(
        &self,
        namespace: &str,
        name: &str,
        spec: ServiceSpec,
        status: ServiceStatus,
    ) {
        let key = (namespace.to_owned(), name.to_owned());
        let mut table = self.table.write().expect("ingress lock");
        let previous = table.services.get(&key).cloned();
        let endpoints = status
            .endpoints
            .into_iter()
            .filter_map(|endpoint| {
                let host = skiff_api::validate::dns_label(&endpoint.pod)
                    .ok()
                    .and_then(|()| {
                        HeaderValue::from_str(&format!("{}.{namespace}.pod", endpoint.pod)).ok()
                    });
                let Some(host) = host else {
                    tracing::warn!(
                        "service {namespace}/{name}: ignoring endpoint `{}`, which is no pod name",
                        endpoint.pod
                    );
                    return None;
                };
                let outstanding = previous
                    .as_ref()
                    .and_then(|p| p.endpoints.iter().find(|b| b.endpoint.pod == endpoint.pod))
                    .map_or_else(Arc::default, |b| b.outstanding.clone());
                Some(Balanced {
                    pod: (namespace.to_owned(), endpoint.pod.clone()),
                    endpoint,
                    outstanding,
                    host,
                    signed: SignedCache::default(),
                })
            })
            .collect();
        table.services.insert(
            key,
            Arc::new(Backends {
                spec,
                endpoints,
                next: AtomicUsize::new(0),
                scales_from_zero: status.scales_from_zero,
                unavailable_reason: status.unavailable_reason,
            }),
        );
        drop(table);
        self.holds.changed();
    }

    /// Records a registered Node's ingress address (none yet: the Node is
    /// known, but nothing may be proxied to it).
    pub fn set_node(&self, name: &str, ingress: Option<String>) {
        let mut table = self.table.write().expect("ingress lock");
        match ingress {
            Some(address) => table.nodes.insert(name.to_owned(), address),
            None => table.nodes.remove(name),
        };
        table.node_ingresses = table.nodes.values().cloned().collect();
    }

    pub fn remove_node(&self, name: &str) {
        self.set_node(name, None);
    }

    /// Forgets every Node before a full list replaces them.
    pub fn clear_nodes(&self) {
        let mut table = self.table.write().expect("ingress lock");
        table.nodes.clear();
        table.node_ingresses.clear();
    }

    /// Whether `address` is the ingress of a registered Node.
    fn is_node_ingress(&self, address: &str) -> bool {
        let table = self.table.read().expect("ingress lock");
        table.node_ingresses.contains(address)
    }

    pub fn remove_service(&self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        self.table
            .write()
            .expect("ingress lock")
            .services
            .remove(&key);
        self.holds.changed();
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
            drop(table);
            self.holds.changed();
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
    pub async fn handle<B>(&self, mut request: http::Request<B>) -> http::Response<HttpBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let host = request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().host())
            .unwrap_or_default()
            .to_ascii_lowercase();
        // Before anything else: the node API's credential is read here
        // and nowhere else, and no Route may claim a node host.
        if let Some(node) = skiff_client::node_api::node_of_host(&host) {
            return match &self.node_api {
                Some(api) if api.is_self(node) => api.handle(node, &request).await,
                _ => text_response(
                    StatusCode::NOT_FOUND,
                    format!("`{node}.node` is not this node's host\n"),
                ),
            };
        }
        request.headers_mut().remove(NODE_AUTH);
        let target = HostTarget::of(&host);
        let caller = match self.caller(&target, request.headers(), SystemTime::now) {
            Ok(caller) => caller,
            Err(refusal) => return text_response(StatusCode::FORBIDDEN, refusal),
        };
        strip_internal(request.headers_mut());
        ensure_request_id(request.headers_mut());
        if !serves(&target, &caller, self.config.serve_cluster_hosts) {
            return text_response(
                StatusCode::NOT_FOUND,
                format!(
                    "`{}` is a cluster host, not served to outside traffic on this node; outside traffic reaches pods through Routes\n",
                    strip_port(&host)
                ),
            );
        }
        match target {
            HostTarget::Pod(pod) => match self.pods.get_served(&pod) {
                Some(served) => self.serve_local(served, request).await,
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
            },
            HostTarget::Service(service) => {
                let caller = match &caller {
                    Caller::Namespace(namespace) => Some(namespace.as_str()),
                    Caller::Anyone | Caller::Node => None,
                };
                self.balance(service, caller, request).await
            }
            HostTarget::Other => match self.route(strip_port(&host), request.uri().path()) {
                Some(service) => self.balance(service, None, request).await,
                None => text_response(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no Route matches host `{host}` and path `{}`; a pod is <name>.<namespace>.pod, a Service <name>.<namespace>.svc\n",
                        request.uri().path()
                    ),
                ),
            },
        }
    }

    /// Who sent the request, by the credential its target calls for; a
    /// credential that is there but does not hold refuses the request
    /// (the one-line reason returned). Credentials for other targets are
    /// not looked at: they are removed unread. The clock is read only for
    /// a proxy credential.
    fn caller(
        &self,
        target: &HostTarget,
        headers: &http::HeaderMap,
        now: impl FnOnce() -> SystemTime,
    ) -> Result<Caller, String> {
        match target {
            HostTarget::Pod(pod) => match headers.get(PROXY_AUTH_HEADER) {
                None => Ok(Caller::Anyone),
                Some(credential) => self
                    .config
                    .proxy_key
                    .verify(credential.as_bytes(), pod, now())
                    .map(|()| Caller::Node)
                    .map_err(|e| format!("refused: {e}\n")),
            },
            HostTarget::Service(_) => {
                let namespace = headers.get(CALLER_NAMESPACE_HEADER);
                let credential = headers.get(CALLER_AUTH_HEADER);
                if namespace.is_none() && credential.is_none() {
                    return Ok(Caller::Anyone);
                }
                let vouched = namespace
                    .and_then(|n| n.to_str().ok())
                    .zip(credential)
                    .filter(|(n, c)| self.config.caller_key.verify(n, c.as_bytes()));
                match vouched {
                    Some((namespace, _)) => Ok(Caller::Namespace(namespace.to_owned())),
                    None => Err(format!(
                        "refused: {CALLER_NAMESPACE_HEADER} and {CALLER_AUTH_HEADER} are set by this node's own gateway, and these are not its\n"
                    )),
                }
            }
            HostTarget::Other => Ok(Caller::Anyone),
        }
    }

    /// Holds a request for a Service at zero until it has an endpoint
    /// (then its backends) or a pod of this node it selects is Ready (then
    /// that pod, with the Service as it stands), or answers it: the
    /// Service holds its most already, its pods cannot start (the reason
    /// its status gives), it went, or it did not start within the wait.
    ///
    /// A local pod is taken without waiting for the control plane to list
    /// it: its status write, the endpoints controller's and the Service's
    /// way back by watch would otherwise stand between a function started
    /// from zero on this node and its first request. It is the pod the
    /// endpoints will list: Ready, in the Service's namespace, picked by
    /// its selector (labels as the pod had them when it became Ready).
    async fn wait_for_endpoints(
        &self,
        service: &PodName,
    ) -> Result<Waited, http::Response<HttpBody>> {
        let (namespace, name) = service;
        let config = self.holds.config();
        let Some(_held) = self.holds.enter(service) else {
            return Err(unavailable(format!(
                "service {namespace}/{name} is starting from zero and holds {} requests already; try again\n",
                config.max_held
            )));
        };
        let mut changes = self.holds.subscribe();
        let deadline = tokio::time::Instant::now() + config.max_wait;
        loop {
            changes.borrow_and_update();
            let current = self
                .table
                .read()
                .expect("ingress lock")
                .services
                .get(service)
                .cloned();
            match current {
                Some(b) if !b.endpoints.is_empty() => return Ok(Waited::Endpoints(b)),
                Some(b) if b.scales_from_zero => {
                    if let Some(local) = self.pods.ready_for(namespace, &b.spec.selector) {
                        return Ok(Waited::Local(local, b));
                    }
                    if let Some(reason) = &b.unavailable_reason {
                        return Err(unavailable(format!(
                            "service {namespace}/{name} is at zero and its pods cannot start: {reason}\n"
                        )));
                    }
                }
                Some(_) => {
                    return Err(unavailable(format!(
                        "service {namespace}/{name} has no ready endpoints\n"
                    )));
                }
                // Gone from the table: a watch that restarted empties it
                // before the list fills it again, so wait on; a Service
                // really deleted ends the wait at its deadline.
                None => {}
            }
            self.holds.ask(service);
            let wake = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
            if tokio::time::timeout_at(wake, changes.changed())
                .await
                .is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return Err(unavailable(format!(
                    "service {namespace}/{name} is starting from zero and had no ready pod within {}s; try again\n",
                    config.max_wait.as_secs()
                )));
            }
        }
    }

    /// Hands a request to a pod on this node. The pod's answer cannot say
    /// the pod was missing: that would have its request sent again.
    async fn serve_local<B>(
        &self,
        (backend, pod): (Backend, Arc<PodMetrics>),
        request: http::Request<B>,
    ) -> http::Response<HttpBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let timer = self.pods.metrics.request_to(Some(pod));
        let mut response = match backend {
            Backend::Wasm(app) => app.handle(request).await,
            Backend::Process(addr) => {
                let (parts, body) = request.into_parts();
                let body = body.map_err(Into::into).boxed_unsync();
                self.to_process(addr, rebuild(&parts, body)).await
            }
        };
        response.headers_mut().remove(POD_MISSING_HEADER);
        timer.answered(response.status());
        response
    }

    /// Sends a request to one of a Service's Ready endpoints, if the
    /// Service admits the caller's namespace (when a guest of this node
    /// calls).
    async fn balance<B>(
        &self,
        (namespace, name): PodName,
        caller: Option<&str>,
        request: http::Request<B>,
    ) -> http::Response<HttpBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let backends = self
            .table
            .read()
            .expect("ingress lock")
            .services
            .get(&(namespace.clone(), name.clone()))
            .cloned();
        if let Some(caller) = caller
            && !admits(backends.as_deref().map(|b| &b.spec), &namespace, caller)
        {
            return text_response(
                StatusCode::FORBIDDEN,
                format!(
                    "service {namespace}/{name} does not admit callers from namespace {caller} (spec.allowedCallers)\n"
                ),
            );
        }
        let backends = match backends {
            Some(b) if !b.endpoints.is_empty() => b,
            Some(b) if b.scales_from_zero => {
                let waited = match self
                    .wait_for_endpoints(&(namespace.clone(), name.clone()))
                    .await
                {
                    Ok(waited) => waited,
                    Err(refusal) => return refusal,
                };
                // Who may call it is asked again: the Service may have
                // changed while the request waited.
                let spec = match &waited {
                    Waited::Endpoints(backends) | Waited::Local(_, backends) => &backends.spec,
                };
                if let Some(caller) = caller
                    && !admits(Some(spec), &namespace, caller)
                {
                    return text_response(
                        StatusCode::FORBIDDEN,
                        format!(
                            "service {namespace}/{name} does not admit callers from namespace {caller} (spec.allowedCallers)\n"
                        ),
                    );
                }
                match waited {
                    Waited::Endpoints(backends) => backends,
                    Waited::Local(pod, _) => return self.serve_local(pod, request).await,
                }
            }
            _ => {
                return unavailable(format!(
                    "service {namespace}/{name} has no ready endpoints\n"
                ));
            }
        };
        let (parts, body) = request.into_parts();
        let body = match Outgoing::new(body).await {
            Ok(body) => body,
            Err(e) => {
                return request_body_fault(&*e).unwrap_or_else(|| {
                    text_response(
                        StatusCode::BAD_REQUEST,
                        format!("cannot read the request body: {e}\n"),
                    )
                });
            }
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
        let mut refused = false;
        while let Some(i) = backends.pick(&tried) {
            // A streamed body already (partly) sent cannot be sent again.
            let Some(attempt) = body.attempt() else {
                break;
            };
            tried.push(i);
            let backend = &backends.endpoints[i];
            let _in_flight = InFlight::enter(&backend.outstanding);
            let endpoint = &backend.endpoint;
            if endpoint.address == self.config.own_address {
                match self.pods.get_served(&backend.pod) {
                    Some(local) => {
                        return self.serve_local(local, rebuild(&parts, attempt)).await;
                    }
                    None => continue,
                }
            }
            // The endpoints are only what a Service's status says: the
            // request (and a credential) goes to no address but a Node's.
            // Another endpoint may still take it, as for a node whose Node
            // this one has not seen yet.
            if !self.is_node_ingress(&endpoint.address) {
                last_failure = format!(
                    "pod {} is at {}, which is no registered Node's ingress",
                    endpoint.pod, endpoint.address
                );
                tracing::warn!("service {namespace}/{name}: {last_failure}");
                refused = true;
                continue;
            }
            refused = false;
            match self.proxy(backend, rebuild(&parts, attempt)).await {
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
                    // The client's own body (too slow, broken off) is its
                    // fault, not the endpoint's.
                    if let Some(response) = request_body_fault(&e) {
                        return response;
                    }
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
        let message = format!(
            "service {namespace}/{name}: no endpoint could take the request ({last_failure})\n"
        );
        if refused {
            text_response(StatusCode::BAD_GATEWAY, message)
        } else {
            unavailable(message)
        }
    }

    /// Sends a request to a Linux pod's process on this node.
    async fn to_process(
        &self,
        addr: std::net::SocketAddr,
        mut request: http::Request<ClientBody>,
    ) -> http::Response<HttpBody> {
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        *request.uri_mut() = format!("http://{addr}{path}").parse().unwrap_or_default();
        match self.client.request(request).await {
            Ok(response) => response.map(|b| b.map_err(BodyError::new).boxed_unsync()),
            Err(e) => match request_body_fault(&e) {
                Some(response) => response,
                None => text_response(
                    StatusCode::BAD_GATEWAY,
                    format!("the pod's process on {addr} did not answer: {e}\n"),
                ),
            },
        }
    }

    /// Sends a request for a pod to the ingress of the node that serves it,
    /// with this node's proxy credential for that pod.
    async fn proxy(
        &self,
        to: &Balanced,
        mut request: http::Request<ClientBody>,
    ) -> Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        *request.uri_mut() = format!("http://{}{path}", to.endpoint.address)
            .parse()
            .unwrap_or_default();
        let headers = request.headers_mut();
        if let Some(original) = headers.insert(http::header::HOST, to.host.clone()) {
            headers.insert("x-forwarded-host", original);
        }
        headers.insert(
            PROXY_AUTH_HEADER,
            self.config
                .proxy_key
                .sign_cached(&to.signed, &to.pod, SystemTime::now()),
        );
        self.client.request(request).await
    }
}

/// Whether the ingress serves `target` to `caller` at all. Cluster hosts
/// are for the cluster's own traffic: a pod host for the node that proxies
/// to it, a Service host for this node's guests (whose namespace the
/// Service must then admit); for anyone only where the node is configured
/// to serve them. Routes are for everyone.
fn serves(target: &HostTarget, caller: &Caller, serve_cluster_hosts: bool) -> bool {
    match (target, caller) {
        (HostTarget::Other, _)
        | (HostTarget::Pod(_), Caller::Node)
        | (HostTarget::Service(_), Caller::Namespace(_)) => true,
        (HostTarget::Pod(_) | HostTarget::Service(_), _) => serve_cluster_hosts,
    }
}

/// Whether a Service of `namespace` (its spec, if this node knows it)
/// admits a guest of `caller`'s namespace. A Service this node does not
/// know admits only its own namespace, so a refusal says nothing of
/// whether another namespace's Service exists.
fn admits(spec: Option<&ServiceSpec>, namespace: &str, caller: &str) -> bool {
    match spec {
        Some(spec) => spec.admits_caller(namespace, caller),
        None => caller == namespace,
    }
}

/// Gives a request its trace and the id its pod's output lines are tagged
/// with (and its guest sees as `x-request-id`).
///
/// The trace ([`skiff_wasm::trace::continue_or_start`]): a valid W3C
/// `traceparent` from the client is continued from a span of this hop
/// (same trace id, new parent-id), anything else dropped for a new trace;
/// `tracestate` goes along only with a valid `traceparent`, cut to 512
/// characters.
///
/// The id: the client's, when it is 1 to 64 of `[A-Za-z0-9._-]` (so it
/// stands in a log record as it is); otherwise the trace id, 32 hex
/// digits, so that a pod's log records are found by trace. Another node's
/// ingress keeps both the trace id and the id the first one gave.
fn ensure_request_id(headers: &mut http::HeaderMap) {
    let trace = skiff_wasm::trace::continue_or_start(headers);
    let mut ids = headers.get_all(&REQUEST_ID).iter();
    let valid = match (ids.next(), ids.next()) {
        (Some(id), None) => crate::logs::is_request_id(id.as_bytes()),
        _ => false,
    };
    if !valid {
        headers.insert(
            REQUEST_ID,
            http::HeaderValue::from_bytes(&trace.trace_id())
                .expect("hex digits are a header value"),
        );
    }
}

/// The headers every request is cleared of, parsed once rather than per
/// request.
const NODE_AUTH: http::HeaderName =
    http::HeaderName::from_static(skiff_client::node_api::NODE_AUTH_HEADER);
const INTERNAL: [http::HeaderName; INTERNAL_HEADERS.len()] = [
    http::HeaderName::from_static(INTERNAL_HEADERS[0]),
    http::HeaderName::from_static(INTERNAL_HEADERS[1]),
    http::HeaderName::from_static(INTERNAL_HEADERS[2]),
];
const REQUEST_ID: http::HeaderName = http::HeaderName::from_static(skiff_wasm::REQUEST_ID);

/// Removes every internal header, whatever its case or count.
fn strip_internal(headers: &mut http::HeaderMap) {
    for name in &INTERNAL {
        headers.remove(name);
    }
}

/// The answer to a failure that was the client's request body's (it did
/// not arrive in time, or broke off), found anywhere in the error's causes.
fn request_body_fault(
    error: &(dyn std::error::Error + 'static),
) -> Option<http::Response<HttpBody>> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        let status = match e.downcast_ref::<skiff_serve::BodyError>() {
            Some(skiff_serve::BodyError::TimedOut(_)) => StatusCode::REQUEST_TIMEOUT,
            Some(skiff_serve::BodyError::Read(_)) => StatusCode::BAD_REQUEST,
            None => {
                cause = e.source();
                continue;
            }
        };
        return Some(text_response(
            status,
            format!("cannot read the request body: {e}\n"),
        ));
    }
    None
}

/// A copy of the request with `body`, to send (perhaps again) to one
/// endpoint.
fn rebuild(parts: &http::request::Parts, body: ClientBody) -> http::Request<ClientBody> {
    let mut request = http::Request::new(body);
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

fn load(pods: &LocalPods, holds: &hold::Holds) -> skiff_client::node_api::NodeLoad {
    skiff_client::node_api::NodeLoad {
        pods: pods.load(),
        held: holds
            .held()
            .into_iter()
            .map(
                |((namespace, service), held)| skiff_client::node_api::HeldLoad {
                    namespace,
                    service,
                    held: held as u64,
                },
            )
            .collect(),
    }
}

/// A Service status with these endpoints Ready.
#[cfg(test)]
fn ready(endpoints: Vec<Endpoint>) -> ServiceStatus {
    ServiceStatus {
        endpoints,
        ..ServiceStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_keeps_a_well_formed_id_and_gets_one_otherwise() {
        let id = |given: &[&str]| {
            let mut headers = http::HeaderMap::new();
            for value in given {
                headers.append(skiff_wasm::REQUEST_ID, value.parse().unwrap());
            }
            ensure_request_id(&mut headers);
            let all: Vec<_> = headers.get_all(skiff_wasm::REQUEST_ID).iter().collect();
            assert_eq!(all.len(), 1);
            all[0].to_str().unwrap().to_owned()
        };
        assert_eq!(id(&["Client-1.a_b"]), "Client-1.a_b");
        for bad in [
            &["has space"][..],
            &["x".repeat(65).as_str()],
            &["a", "b"],
            &[],
        ] {
            let made = id(bad);
            assert_eq!(made.len(), 32, "{bad:?} → {made}");
            assert!(made.bytes().all(|b| b.is_ascii_hexdigit()), "{made}");
        }
        assert_ne!(id(&[]), id(&[]), "made ids differ");
    }

    #[test]
    fn a_request_without_an_id_is_named_by_its_trace() {
        use skiff_wasm::trace::{TRACEPARENT, TRACESTATE, TraceParent};
        let client = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ensured = |given: &[(&str, &str)]| {
            let mut headers = http::HeaderMap::new();
            for (name, value) in given {
                headers.append(
                    name.parse::<http::HeaderName>().unwrap(),
                    value.parse().unwrap(),
                );
            }
            ensure_request_id(&mut headers);
            headers
        };
        let text = |headers: &http::HeaderMap, name: &str| {
            headers.get(name).map(|v| v.to_str().unwrap().to_owned())
        };

        // The client's trace, continued; the id is its trace id.
        let continued = ensured(&[(TRACEPARENT, client), (TRACESTATE, "a=1")]);
        let sent = text(&continued, TRACEPARENT).unwrap();
        assert_ne!(sent, client);
        assert_eq!(&sent[..36], &client[..36], "same trace: {sent}");
        assert_eq!(
            text(&continued, skiff_wasm::REQUEST_ID).unwrap(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(text(&continued, TRACESTATE).unwrap(), "a=1");

        // A client's id is kept beside the trace.
        let named = ensured(&[(TRACEPARENT, client), (skiff_wasm::REQUEST_ID, "mine")]);
        assert_eq!(text(&named, skiff_wasm::REQUEST_ID).unwrap(), "mine");
        assert_eq!(&text(&named, TRACEPARENT).unwrap()[..36], &client[..36]);

        // A new trace names the request too; the bad traceparent and its
        // tracestate are gone.
        let upper = client.to_uppercase();
        let fresh = ensured(&[(TRACEPARENT, &upper), (TRACESTATE, "a=1")]);
        let trace = TraceParent::parse(fresh[TRACEPARENT].as_bytes()).unwrap();
        assert_eq!(
            fresh[skiff_wasm::REQUEST_ID].as_bytes(),
            &trace.trace_id()[..]
        );
        assert!(fresh.get(TRACESTATE).is_none());
    }

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

    fn ingress(own_address: &str, serve_cluster_hosts: bool) -> Ingress {
        Ingress::new(IngressConfig {
            own_address: own_address.into(),
            proxy_key: ProxyKey::new(&[7; PROXY_KEY_LEN]),
            caller_key: CallerKey::random(),
            serve_cluster_hosts,
            pod_metrics: true,
        })
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
        let ingress = ingress("127.0.0.1:1", false);
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
        let ingress = ingress("127.0.0.1:1", false);
        ingress.set_service(
            "shop",
            "web",
            ServiceSpec::default(),
            ready(vec![endpoint("a"), endpoint("b"), endpoint("c")]),
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
        ingress.set_service(
            "shop",
            "web",
            ServiceSpec::default(),
            ready(vec![endpoint("b"), endpoint("d")]),
        );
        let backends =
            ingress.table.read().unwrap().services[&("shop".to_owned(), "web".to_owned())].clone();
        assert_eq!(backends.endpoints[0].outstanding.load(Ordering::Relaxed), 1);
        assert_eq!(backends.pick(&[]), Some(1));
    }
}

/// Host parsing and Route matching on arbitrary input: what a client puts
/// in `Host` and the path must never panic the ingress, and a pod or
/// Service host names exactly one namespace.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn label() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?"
    }

    fn rule(host: &str, path: &str) -> RouteRule {
        RouteRule {
            namespace: "ns".into(),
            name: "r".into(),
            spec: RouteSpec {
                host: host.into(),
                path: path.into(),
                service: "s".into(),
                port: None,
            },
        }
    }

    proptest! {
        // 512 cases in the test suite; `PROPTEST_CASES=100000` for a long run.
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512)
        ))]

        #[test]
        fn any_host_and_path_are_answered_without_panicking(host in any::<String>(), path in any::<String>()) {
            let _ = HostTarget::of(&host);
            let _ = strip_port(&host);
            let _ = rule("*.example.com", "/api").score(&host, &path);
            let _ = rule(&host, &path).score("example.com", "/api/x");
        }

        #[test]
        fn a_pod_host_names_its_pod_in_every_spelling(
            name in label(),
            namespace in label(),
            suffix in prop::sample::select(vec!["", ".localhost", ".cluster.local"]),
            dot in any::<bool>(),
            port in prop::option::of(any::<u16>()),
            upper in any::<bool>(),
        ) {
            let mut host = format!("{name}.{namespace}.pod{suffix}{}", if dot { "." } else { "" });
            if let Some(port) = port {
                host = format!("{host}:{port}");
            }
            if upper {
                host = host.to_ascii_uppercase();
            }
            prop_assert_eq!(pod_of_host(&host), Some((namespace.clone(), name.clone())));
            prop_assert!(matches!(HostTarget::of(&host), HostTarget::Pod(_)));
        }

        #[test]
        fn a_host_with_more_labels_names_no_pod_or_service(
            a in label(), b in label(), c in label(),
            kind in prop::sample::select(vec!["pod", "svc"]),
        ) {
            // `a.b.c.pod` must not be read as pod `a` in a namespace `b.c`.
            let host = format!("{a}.{b}.{c}.{kind}");
            prop_assert!(matches!(HostTarget::of(&host), HostTarget::Other), "{}", host);
        }

        #[test]
        fn a_wildcard_route_matches_only_hosts_under_it_and_paths_by_segment(
            sub in label(), other in label(), rest in "[a-z/]{0,10}",
        ) {
            let wildcard = rule("*.example.com", "/api");
            let under = format!("{sub}.example.com");
            let beyond = format!("{sub}.example.com.{other}");
            prop_assert!(wildcard.score(&under, "/api").is_some());
            prop_assert!(wildcard.score("example.com", "/api").is_none());
            prop_assert!(wildcard.score(&beyond, "/api").is_none());
            let path = format!("/api{rest}");
            let matched = wildcard.score(&under, &path).is_some();
            prop_assert_eq!(matched, path == "/api" || path.starts_with("/api/"));
        }
    }
}

#[cfg(test)]
mod trust_tests {
    use super::*;

    const PROXY_KEY: [u8; PROXY_KEY_LEN] = [7; PROXY_KEY_LEN];

    fn ingress(own_address: &str, serve_cluster_hosts: bool) -> Ingress {
        Ingress::new(IngressConfig {
            own_address: own_address.into(),
            proxy_key: ProxyKey::new(&PROXY_KEY),
            caller_key: CallerKey::random(),
            serve_cluster_hosts,
            pod_metrics: true,
        })
    }

    fn name(namespace: &str, name: &str) -> PodName {
        (namespace.to_owned(), name.to_owned())
    }

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn cluster_hosts_are_served_to_the_cluster_and_routes_to_everyone() {
        let pod = HostTarget::Pod(name("shop", "web"));
        let service = HostTarget::Service(name("shop", "web"));
        let route = HostTarget::Other;
        let guest = Caller::Namespace("shop".into());
        let table = [
            // (target, caller, serve cluster hosts, served)
            (&pod, &Caller::Node, false, true),
            (&pod, &Caller::Anyone, false, false),
            (&pod, &Caller::Anyone, true, true),
            (&service, &guest, false, true),
            (&service, &Caller::Anyone, false, false),
            (&service, &Caller::Anyone, true, true),
            (&route, &Caller::Anyone, false, true),
            (&route, &Caller::Anyone, true, true),
        ];
        for (i, (target, caller, open, want)) in table.into_iter().enumerate() {
            assert_eq!(serves(target, caller, open), want, "row {i}");
        }
    }

    #[test]
    fn a_service_admits_its_own_namespace_and_the_callers_it_names() {
        let spec = |callers: &[&str]| ServiceSpec {
            allowed_callers: callers.iter().map(|c| (*c).to_owned()).collect(),
            ..Default::default()
        };
        let (closed, for_a, open) = (spec(&[]), spec(&["a"]), spec(&["*"]));
        let table = [
            // (spec, caller, admitted) for a Service of namespace b
            (Some(&closed), "b", true),
            (Some(&closed), "a", false),
            (Some(&for_a), "a", true),
            (Some(&for_a), "c", false),
            (Some(&open), "c", true),
            // Unknown here: its own namespace learns it has no endpoints,
            // others the same refusal as from an existing Service.
            (None, "b", true),
            (None, "a", false),
        ];
        for (i, (spec, caller, want)) in table.into_iter().enumerate() {
            assert_eq!(admits(spec, "b", caller), want, "row {i}");
        }
    }

    #[test]
    fn internal_headers_are_removed_whatever_their_case_or_count() {
        let mut map = headers(&[
            ("Skiff-Proxy-Auth", "1.x"),
            ("skiff-caller-namespace", "a"),
            ("SKIFF-CALLER-NAMESPACE", "b"),
            ("skiff-caller-auth", "x"),
            ("accept", "*/*"),
            ("x-forwarded-host", "web.shop.svc"),
        ]);
        strip_internal(&mut map);
        let left: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept", "x-forwarded-host"]);
    }

    #[test]
    fn callers_are_told_apart_by_their_credentials() {
        let ingress = ingress("127.0.0.1:1", false);
        let now = SystemTime::now();
        let pod = HostTarget::Pod(name("shop", "web"));
        let service = HostTarget::Service(name("b", "web"));
        let signed = ProxyKey::new(&PROXY_KEY).sign(&name("shop", "web"), now);
        let signed = signed.to_str().unwrap();
        let for_other_pod = ProxyKey::new(&PROXY_KEY).sign(&name("shop", "api"), now);
        let vouched_a = ingress.caller_credential("a");
        let vouched_a = vouched_a.to_str().unwrap();
        let caller = |target: &HostTarget, pairs: &[(&str, &str)]| {
            ingress.caller(target, &headers(pairs), || now)
        };

        assert_eq!(caller(&pod, &[]), Ok(Caller::Anyone));
        assert_eq!(
            caller(&pod, &[(PROXY_AUTH_HEADER, signed)]),
            Ok(Caller::Node)
        );
        let forged = caller(&pod, &[(PROXY_AUTH_HEADER, "1700000000.forged")]);
        assert_eq!(
            forged,
            Err("refused: the proxy credential is not <seconds>.<mac>\n".into())
        );
        let replayed = caller(
            &pod,
            &[(PROXY_AUTH_HEADER, for_other_pod.to_str().unwrap())],
        );
        assert_eq!(
            replayed,
            Err("refused: the proxy credential does not match this pod host\n".into())
        );
        // Caller headers mean nothing on a pod host (only gateways send
        // them, and only for Services): removed unread.
        assert_eq!(
            caller(
                &pod,
                &[
                    (CALLER_NAMESPACE_HEADER, "a"),
                    (CALLER_AUTH_HEADER, vouched_a)
                ]
            ),
            Ok(Caller::Anyone)
        );

        assert_eq!(caller(&service, &[]), Ok(Caller::Anyone));
        assert_eq!(
            caller(
                &service,
                &[
                    (CALLER_NAMESPACE_HEADER, "a"),
                    (CALLER_AUTH_HEADER, vouched_a)
                ]
            ),
            Ok(Caller::Namespace("a".into()))
        );
        // Another namespace claimed with a's credential, a forged one, or
        // half of the pair: refused.
        for pairs in [
            &[
                (CALLER_NAMESPACE_HEADER, "b"),
                (CALLER_AUTH_HEADER, vouched_a),
            ][..],
            &[
                (CALLER_NAMESPACE_HEADER, "a"),
                (CALLER_AUTH_HEADER, "forged"),
            ],
            &[(CALLER_NAMESPACE_HEADER, "b")],
            &[(CALLER_AUTH_HEADER, vouched_a)],
        ] {
            let refused = caller(&service, pairs);
            assert!(
                refused
                    .as_ref()
                    .is_err_and(|e| e.starts_with("refused: skiff-caller-namespace")),
                "{pairs:?}: {refused:?}"
            );
        }
        // A proxy credential means nothing on a Service host.
        assert_eq!(
            caller(&service, &[(PROXY_AUTH_HEADER, signed)]),
            Ok(Caller::Anyone)
        );
        // Another node's caller key does not vouch here.
        let elsewhere = CallerKey::random().credential("a");
        assert!(
            caller(
                &service,
                &[
                    (CALLER_NAMESPACE_HEADER, "a"),
                    (CALLER_AUTH_HEADER, elsewhere.to_str().unwrap())
                ]
            )
            .is_err()
        );
    }

    /// A process pod stand-in: a real HTTP server on loopback that answers
    /// with the request's headers, one `name: value` line each.
    async fn echo_headers() -> (std::net::SocketAddr, oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(skiff_serve::serve(
            listener,
            skiff_serve::Options::http1(Duration::from_millis(100)),
            |request: http::Request<skiff_serve::Body>| async move {
                let lines: String = request
                    .headers()
                    .iter()
                    .map(|(n, v)| format!("{n}: {}\n", v.to_str().unwrap_or("?")))
                    .collect();
                text_response(StatusCode::OK, lines)
            },
            async move {
                let _ = stopped.await;
            },
        ));
        (addr, stop)
    }

    /// Serves `ingress` on a loopback port.
    async fn serve_ingress(ingress: Ingress) -> (std::net::SocketAddr, oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(skiff_serve::serve(
            listener,
            skiff_serve::Options::http1(Duration::from_millis(100)),
            move |request| {
                let ingress = ingress.clone();
                async move { ingress.handle(request).await }
            },
            async move {
                let _ = stopped.await;
            },
        ));
        (addr, stop)
    }

    fn request(host: &str, pairs: &[(&str, &str)]) -> http::Request<http_body_util::Full<Bytes>> {
        let mut request = http::Request::new(http_body_util::Full::new(Bytes::new()));
        *request.uri_mut() = "/echo".parse().unwrap();
        *request.headers_mut() = headers(pairs);
        request
            .headers_mut()
            .insert(http::header::HOST, HeaderValue::from_str(host).unwrap());
        request
    }

    async fn text(response: http::Response<HttpBody>) -> (StatusCode, String) {
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    use tokio::sync::oneshot;

    /// A node that serves no metrics keeps no per-pod series, yet still
    /// counts what the autoscaler and `wasmctl top` sample; with them on,
    /// both are counted.
    #[tokio::test]
    async fn without_pod_metrics_only_the_sampled_load_is_counted() {
        let (echo, _stop_echo) = echo_headers().await;
        for pod_metrics in [false, true] {
            let node = Ingress::new(IngressConfig {
                pod_metrics,
                ..ingress("127.0.0.1:1", true).config.as_ref().clone()
            });
            node.pods
                .add(name("shop", "web"), "uid-1", Backend::Process(echo));
            for _ in 0..3 {
                let (status, _) = text(node.handle(request("web.shop.pod", &[])).await).await;
                assert_eq!(status, StatusCode::OK);
            }
            assert_eq!(node.pods.requests_of(&name("shop", "web")), 3);
            let load = node.pods.load();
            assert_eq!((load[0].requests, load[0].in_flight), (3, 0));
            let text = node.pods.metrics().encode();
            assert_eq!(
                text.contains(
                    r#"skiff_pod_requests_total{namespace="shop",pod="web",class="2xx"} 3"#
                ),
                pod_metrics,
                "{text}"
            );
            assert_eq!(text.contains(r#"pod="web""#), pod_metrics, "{text}");
        }
    }

    /// Node a balances Service shop/web to its pod on node b, whose ingress
    /// serves cluster hosts to no one outside.
    #[tokio::test]
    async fn proxied_requests_are_authenticated_and_internal_headers_reach_no_pod() {
        let (echo, _stop_echo) = echo_headers().await;
        let b = ingress("127.0.0.1:2", false);
        b.pods
            .add(name("shop", "web"), "uid-1", Backend::Process(echo));
        let (b_addr, _stop_b) = serve_ingress(b.clone()).await;
        let a = ingress("127.0.0.1:1", false);
        let to_b = Endpoint {
            pod: "web".into(),
            node: "b".into(),
            address: b_addr.to_string(),
        };
        a.set_service(
            "shop",
            "web",
            ServiceSpec::default(),
            ready(vec![to_b.clone()]),
        );

        // Until node b is a registered Node, a's ingress sends nothing there.
        let guest = a.caller_credential("shop");
        let guest_call = |extra: &[(&str, &str)]| {
            let mut pairs = vec![
                (CALLER_NAMESPACE_HEADER, "shop"),
                (CALLER_AUTH_HEADER, guest.to_str().unwrap()),
            ];
            pairs.extend_from_slice(extra);
            request("web.shop.svc", &pairs)
        };
        let (status, body) = text(a.handle(guest_call(&[])).await).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        assert_eq!(
            body,
            format!(
                "service shop/web: no endpoint could take the request (pod web is at {b_addr}, which is no registered Node's ingress)\n"
            )
        );

        // Registered, it proxies with a credential b accepts, and the pod
        // sees none of the internal headers, not even forged extra ones.
        a.set_node("b", Some(b_addr.to_string()));
        let (status, body) = text(
            a.handle(guest_call(&[
                (PROXY_AUTH_HEADER, "1.forged"),
                ("accept", "*/*"),
            ]))
            .await,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("accept: */*\n"), "{body}");
        assert!(body.contains("host: web.shop.pod\n"), "{body}");
        assert!(!body.contains("skiff-"), "{body}");

        // Outside traffic straight to b: the pod host is not served, and a
        // forged proxy credential is refused.
        let (status, body) = text(b.handle(request("web.shop.pod", &[])).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            body,
            "`web.shop.pod` is a cluster host, not served to outside traffic on this node; outside traffic reaches pods through Routes\n"
        );
        let forged =
            ProxyKey::new(&[8; PROXY_KEY_LEN]).sign(&name("shop", "web"), SystemTime::now());
        let (status, body) = text(
            b.handle(request(
                "web.shop.pod",
                &[(PROXY_AUTH_HEADER, forged.to_str().unwrap())],
            ))
            .await,
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            body,
            "refused: the proxy credential does not match this pod host\n"
        );
        // Nor is a Service host, to anyone but a's own guests.
        let (status, _) = text(a.handle(request("web.shop.svc", &[])).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // A guest of another namespace is refused until the Service names
        // it; then it is served, and its namespace never reaches the pod.
        let other = a.caller_credential("other");
        let from_other = || {
            request(
                "web.shop.svc",
                &[
                    (CALLER_NAMESPACE_HEADER, "other"),
                    (CALLER_AUTH_HEADER, other.to_str().unwrap()),
                ],
            )
        };
        let (status, body) = text(a.handle(from_other()).await).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            body,
            "service shop/web does not admit callers from namespace other (spec.allowedCallers)\n"
        );
        let admitting = ServiceSpec {
            allowed_callers: vec!["other".into()],
            ..Default::default()
        };
        a.set_service("shop", "web", admitting, ready(vec![to_b]));
        let (status, body) = text(a.handle(from_other()).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(!body.contains("skiff-"), "{body}");
    }

    #[tokio::test]
    async fn a_pod_cannot_claim_to_be_missing_to_have_its_request_sent_again() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(skiff_serve::serve(
            listener,
            skiff_serve::Options::http1(Duration::from_millis(100)),
            |_request: http::Request<skiff_serve::Body>| async {
                let mut response = text_response(StatusCode::NOT_FOUND, "mine\n".into());
                response
                    .headers_mut()
                    .insert(POD_MISSING_HEADER, HeaderValue::from_static("true"));
                response
            },
            std::future::pending(),
        ));
        let ingress = ingress("127.0.0.1:1", true);
        ingress
            .pods
            .add(name("shop", "web"), "uid-1", Backend::Process(addr));
        let response = ingress.handle(request("web.shop.pod", &[])).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(!response.headers().contains_key(POD_MISSING_HEADER));
        // A pod that is really missing still says so.
        let response = ingress.handle(request("api.shop.pod", &[])).await;
        assert!(response.headers().contains_key(POD_MISSING_HEADER));
    }

    /// Service shop/web scales from zero and has no endpoint; its pod,
    /// when there is one, is `echo` served on this node.
    fn at_zero(ingress: &Ingress, spec: ServiceSpec) {
        ingress.set_service(
            "shop",
            "web",
            spec,
            ServiceStatus {
                scales_from_zero: true,
                ..ServiceStatus::default()
            },
        );
    }

    fn started(ingress: &Ingress, spec: ServiceSpec) {
        ingress.set_service(
            "shop",
            "web",
            spec,
            ServiceStatus {
                scales_from_zero: true,
                ..ready(vec![Endpoint {
                    pod: "web".into(),
                    node: "self".into(),
                    address: "127.0.0.1:1".into(),
                }])
            },
        );
    }

    /// Waits until the ingress holds `n` requests for shop/web.
    async fn held(ingress: &Ingress, n: u64) {
        let source = ingress.load_source();
        while source().held.first().map(|h| h.held) != Some(n) {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_held_request_is_served_once_an_endpoint_comes_and_the_activator_was_asked() {
        let (echo, _stop) = echo_headers().await;
        let ingress = ingress("127.0.0.1:1", true);
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        ingress.set_activator({
            let asked = asked.clone();
            Arc::new(move |namespace: &str, name: &str| {
                asked.lock().unwrap().push(format!("{namespace}/{name}"));
            })
        });
        at_zero(&ingress, ServiceSpec::default());
        let call = tokio::spawn({
            let ingress = ingress.clone();
            async move { text(ingress.handle(request("web.shop.svc", &[])).await).await }
        });
        held(&ingress, 1).await;
        assert_eq!(*asked.lock().unwrap(), ["shop/web"]);
        // A watch that restarts empties the table before the list fills
        // it again: the held request waits through it.
        ingress.clear(true);
        tokio::task::yield_now().await;
        ingress
            .pods
            .add(name("shop", "web"), "uid-1", Backend::Process(echo));
        started(&ingress, ServiceSpec::default());
        let (status, _) = call.await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }

    /// A held request goes to a pod of this node as soon as it is Ready and
    /// picked by the Service's selector, before any endpoint comes back;
    /// not to a pod not Ready, of another namespace, not selected, being
    /// deleted, or relabelled out of the selector after it became Ready.
    #[tokio::test]
    async fn a_held_request_goes_to_a_local_pod_once_it_is_ready() {
        let (echo, _stop) = echo_headers().await;
        let ingress = ingress("127.0.0.1:1", true);
        let labels = |app: &str| BTreeMap::from([("app".to_owned(), app.to_owned())]);
        let spec = ServiceSpec {
            selector: labels("web"),
            ..ServiceSpec::default()
        };
        at_zero(&ingress, spec);
        for (pod, ready, app, deleting) in [
            (name("shop", "web-0"), false, "web", false),
            (name("shop", "other"), true, "other", false),
            (name("bank", "web"), true, "web", false),
            (name("shop", "leaving"), true, "web", true),
            (name("shop", "moved"), true, "web", false),
        ] {
            let uid = format!("uid-{}-{}", pod.0, pod.1);
            ingress.pods.note_bound(&uid, &labels(app), deleting);
            ingress.pods.add(pod.clone(), &uid, Backend::Process(echo));
            ingress.pods.set_ready(&pod, &uid, ready);
        }
        // Relabelled out of the selector after it became Ready.
        ingress
            .pods
            .note_bound("uid-shop-moved", &labels("elsewhere"), false);
        let call = tokio::spawn({
            let ingress = ingress.clone();
            async move { text(ingress.handle(request("web.shop.svc", &[])).await).await }
        });
        held(&ingress, 1).await;
        let web = name("shop", "web-1");
        ingress.pods.note_bound("uid-1", &labels("web"), false);
        ingress
            .pods
            .add(web.clone(), "uid-1", Backend::Process(echo));
        ingress.pods.set_ready(&web, "uid-1", true);
        let (status, body) = call.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        let served = |namespace: &str, pod: &str| ingress.pods.requests_of(&name(namespace, pod));
        assert_eq!(
            [
                served("shop", "web-1"),
                served("shop", "web-0"),
                served("shop", "other"),
                served("bank", "web"),
                served("shop", "leaving"),
                served("shop", "moved"),
            ],
            [1, 0, 0, 0, 0, 0]
        );
    }

    #[tokio::test]
    async fn a_service_at_zero_whose_pods_cannot_start_answers_its_held_requests_with_why() {
        let ingress = ingress("127.0.0.1:1", true);
        at_zero(&ingress, ServiceSpec::default());
        let call = tokio::spawn({
            let ingress = ingress.clone();
            async move { text(ingress.handle(request("web.shop.svc", &[])).await).await }
        });
        held(&ingress, 1).await;
        ingress.set_service(
            "shop",
            "web",
            ServiceSpec::default(),
            ServiceStatus {
                scales_from_zero: true,
                unavailable_reason: Some("pod web-1 is in ErrImagePull".into()),
                ..ServiceStatus::default()
            },
        );
        let (status, body) = call.await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("pod web-1 is in ErrImagePull"), "{body}");
    }

    #[tokio::test]
    async fn a_service_holds_at_most_its_share_and_no_request_longer_than_the_wait() {
        let ingress = ingress("127.0.0.1:1", true).with_hold_config(HoldConfig {
            max_held: 1,
            max_wait: Duration::from_millis(300),
        });
        at_zero(&ingress, ServiceSpec::default());
        let first = tokio::spawn({
            let ingress = ingress.clone();
            async move { text(ingress.handle(request("web.shop.svc", &[])).await).await }
        });
        held(&ingress, 1).await;
        let (status, body) = text(ingress.handle(request("web.shop.svc", &[])).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("holds 1 requests already"), "{body}");
        let (status, body) = first.await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("had no ready pod within"), "{body}");
    }

    #[tokio::test]
    async fn a_guest_whose_namespace_was_refused_while_it_waited_is_refused() {
        let (echo, _stop) = echo_headers().await;
        let ingress = ingress("127.0.0.1:1", false);
        let admitting = ServiceSpec {
            allowed_callers: vec!["other".into()],
            ..ServiceSpec::default()
        };
        at_zero(&ingress, admitting);
        let guest = ingress.caller_credential("other");
        let call = tokio::spawn({
            let ingress = ingress.clone();
            let guest = guest.to_str().unwrap().to_owned();
            async move {
                let pairs = [
                    (CALLER_NAMESPACE_HEADER, "other"),
                    (CALLER_AUTH_HEADER, guest.as_str()),
                ];
                text(ingress.handle(request("web.shop.svc", &pairs)).await).await
            }
        });
        held(&ingress, 1).await;
        ingress
            .pods
            .add(name("shop", "web"), "uid-1", Backend::Process(echo));
        started(&ingress, ServiceSpec::default());
        let (status, body) = call.await.unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
}
