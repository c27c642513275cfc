//! The node agent: registers this machine as a Node, renews its lease,
//! follows the pods bound to it and runs each through its lifecycle, and
//! serves HTTP pods on its ingress. It keeps running what it runs while the
//! control plane is unreachable and reconciles when it comes back.

pub mod lifecycle;
mod partition;
pub mod pod;
pub mod probes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_api::kinds::cluster::Taint;
use skiff_api::kinds::pod::Pod;
use skiff_api::kinds::service::{RouteSpec, ServiceSpec, ServiceStatus};
use skiff_api::meta::namespace_and_name;
use skiff_client::Client;
use skiff_client::node_api::NodeApiKey;
use skiff_client::watcher::{self, Event};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::ingress::node_api::NodeApi;
use crate::ingress::{
    CallerKey, Ingress, IngressConfig, LocalPods, PROXY_KEY_LEN, PodName, ProxyKey,
};
use crate::runtimes::Runtimes;
use crate::runtimes::linux::containerd::Containerd;
use crate::runtimes::linux::{LinuxLimits, LinuxRuntime};
use crate::runtimes::wasm::{Engines, WasmRuntime};
use pod::PodHandle;
use skiff_oci::{BlobCache, Registry};
use skiff_wasm::{EngineConfig, FairShare, ShareConfig};

/// Everything the agent is configured with.
#[derive(Clone)]
pub struct AgentConfig {
    pub name: String,
    pub client: Client,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// Memory the node offers instances, e.g. `8Gi`.
    pub memory: String,
    /// Instance slots the node offers.
    pub instances: u32,
    /// CPU in cores or millicores.
    pub cpu: String,
    /// Where the ingress listens.
    pub ingress: SocketAddr,
    /// The address other nodes and clients reach the ingress at; the bound
    /// address when absent.
    pub advertise: Option<String>,
    /// Whether the ingress serves `.pod` and `.svc` hosts to requests
    /// without a credential (outside traffic); when absent, only if it
    /// listens on a loopback address, which only this machine reaches.
    pub serve_cluster_hosts: Option<bool>,
    /// The ingress listener's deadlines and connection cap.
    pub listener: skiff_serve::Limits,
    pub lease_interval: Duration,
    pub lease_duration: Duration,
    pub data_dir: PathBuf,
    /// Where pods' Secret volumes are written; when absent, a directory
    /// on memory (`/dev/shm`) named after the data directory, else
    /// `DATA_DIR/secrets`. Emptied at start: no pod owns its files then.
    pub secrets_dir: Option<PathBuf>,
    /// How long the service account tokens of pods that ask for one live
    /// (10s to 24h).
    pub pod_token_duration: Duration,
    pub blob_cache_bytes: u64,
    pub insecure_registries: Vec<String>,
    /// Sizes, layer count and deadlines every pull is held to.
    pub registry_limits: skiff_oci::Limits,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// How long a stopping pod's requests in flight may take.
    pub grace: Duration,
    /// How many requests a Service at zero may have held, and how long.
    pub hold: crate::ingress::HoldConfig,
    /// Largest memory limit a pod may ask for, and instances that may run at
    /// once on the node (the engine's pool).
    pub max_instance_memory: u64,
    pub max_concurrent_instances: u32,
    /// Instances of one namespace's pods that may run at once on the node
    /// [default: half of `max_concurrent_instances`], so that no tenant
    /// holds the whole pool.
    pub namespace_instances: Option<u32>,
    /// Long-running guests that may hold a worker thread at once
    /// [default: one less than the async runtime's workers, at least one],
    /// so a thread stays free for short requests; `wasm-node join` gives
    /// one less than the machine's cores.
    pub cpu_slots: Option<usize>,
    /// containerd's socket, for Linux images; `None` runs Wasm only.
    pub containerd_socket: Option<PathBuf>,
    pub snapshotter: String,
    /// What every Linux pod is held to: processes, log size.
    pub linux_limits: LinuxLimits,
    /// What each pod's captured output may take: file size, rate.
    pub pod_logs: crate::logs::LogConfig,
    /// Whether pods' requests are counted into per-pod metric series
    /// (worth it only where the node's metrics are served).
    pub pod_metrics: bool,
}

/// What every pod worker of this node shares.
pub struct NodeContext {
    pub node: String,
    pub client: Client,
    /// Resolves tags to digests.
    pub registry: Registry,
    /// What runs pods: wasmtime, and containerd when the node has it.
    pub runtimes: Runtimes,
    /// The digest each image was last pulled as, by namespace and pull
    /// secret: IfNotPresent pods start from it without asking the registry.
    pub pulled: Mutex<HashMap<(String, String, String), String>>,
    pub local_pods: LocalPods,
    /// Where pods' guests send requests for Services: this node's ingress.
    pub gateway: SocketAddr,
    /// This node's advertised ingress address and the control plane's:
    /// guests' requests may not connect to them unless a rule names them.
    pub denied_addresses: Arc<[IpAddr]>,
    /// What vouches, to the ingress, for the namespace of a guest calling a
    /// Service.
    pub caller_key: CallerKey,
    pub data_dir: PathBuf,
    /// Where pods' Secret volumes go (see [`AgentConfig::secrets_dir`]).
    pub secrets_dir: PathBuf,
    /// How long a pod's service account token lives; its node asks for
    /// the next before it ends.
    pub pod_token_duration: Duration,
    /// The ingress address pods are reached at.
    pub endpoint: String,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub grace: Duration,
    /// Whether the lease is taken for lapsed, and the pods stopped for it.
    pub partition: partition::Partition,
    /// Tells what happens to this node's pods (pulls, starts, probe
    /// failures, back-offs), as Events through the API.
    pub events: skiff_client::events::Recorder,
    /// Every pod's captured stdout and stderr (`<data-dir>/logs`).
    pub logs: Arc<crate::logs::NodeLogs>,
    /// How far the pod watch has told this node, which a pod started from
    /// an activation's answer is checked against.
    pub pod_watch: PodWatchPosition,
}

/// The revision through which the pod watch has told this node what
/// became of its pods: that of its last list, or of the last change it
/// delivered. A pod an activation's answer names at revision R starts
/// from the answer only while this is below R: the watch then still has
/// R, and every later change of the pod, to deliver (the watcher resumes
/// from its list), so a deletion reaches the worker as for any pod. At or
/// past R, the watch has told of the pod already (brought it, or a list
/// that lacked it), and the answer is stale.
#[derive(Default)]
pub struct PodWatchPosition(std::sync::atomic::AtomicI64);

impl PodWatchPosition {
    fn at(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Keeps any pod from starting from an activation's answer from now
    /// on, as if the watch had told of every revision.
    fn close(&self) {
        self.0.store(i64::MAX, std::sync::atomic::Ordering::SeqCst);
    }

    /// Notes that the watch told of `revision` (a resourceVersion that
    /// does not parse tells nothing).
    fn reached(&self, revision: &str) {
        if let Ok(revision) = revision.parse::<i64>() {
            self.0
                .fetch_max(revision, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// Whether a pod an activation answered at `revision` starts from the
/// answer, the pod watch being at `watch_at`.
fn starts_from_answer(watch_at: i64, revision: i64) -> bool {
    watch_at < revision
}

/// Whether a relist at `listed_at` predates a pod whose worker started
/// from what was read of it at revision `seen` outside the watch (an
/// activation's answer, the partition's read): then the list's silence
/// about it (or an older pod of its name in it) says nothing, and the
/// watch, resuming from the list, brings what becomes of it.
fn listed_before(listed_at: i64, seen: Option<i64>) -> bool {
    seen.is_some_and(|revision| revision > listed_at)
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("cannot register node {name}: {reason}")]
    Register { name: String, reason: String },
    #[error("cannot read the cluster's proxy key as node {name}: {reason}")]
    ProxyKey { name: String, reason: String },
    #[error("{0}")]
    Setup(String),
}

/// A running agent.
pub struct Agent {
    pub endpoint: String,
    context: Arc<NodeContext>,
    /// The node's usage samples (`wasmctl top`, the pods' CPU and memory
    /// metrics).
    stats: Arc<crate::stats::NodeStats>,
    pods: Arc<tokio::sync::Mutex<HashMap<PodName, PodHandle>>>,
    loops: Loops,
}

/// The agent's background tasks, ended by [`Agent::shutdown`].
struct Loops {
    /// The pods', Services', Routes' and Nodes' followers.
    followers: JoinSet<()>,
    stop_ingress: oneshot::Sender<()>,
    ingress: JoinHandle<()>,
    lease: JoinHandle<()>,
}

impl Agent {
    /// Registers the node, starts its ingress, lease and pod loops, and
    /// returns once it serves.
    pub async fn start(config: AgentConfig) -> Result<Agent, AgentError> {
        let listener = skiff_serve::bind(config.ingress)
            .await
            .map_err(|e| AgentError::Listen(config.ingress, e))?;
        let bound = listener
            .local_addr()
            .map_err(|e| AgentError::Listen(config.ingress, e))?;
        let endpoint = match &config.advertise {
            Some(advertise) => advertise.clone(),
            None => advertised(bound, config.client.server()).await?,
        };
        let setup = |e: &dyn std::fmt::Display| AgentError::Setup(e.to_string());
        let containerd = match &config.containerd_socket {
            Some(socket) => match Containerd::connect(socket, &config.snapshotter).await {
                Ok(containerd) => Some(containerd),
                Err(e) => {
                    tracing::info!("{e}; Linux images will not run on this node");
                    None
                }
            },
            None => None,
        };
        let linux_runtime = match &containerd {
            Some(c) => Some(c.version().await.map_err(|e| setup(&e))?),
            None => None,
        };
        let keys = fetch_keys(&config).await?;
        let caller_key = CallerKey::random();
        let logs = Arc::new(crate::logs::NodeLogs::new(
            &config.data_dir,
            config.pod_logs,
        ));
        let node_api = Arc::new(NodeApi::new(
            &config.name,
            NodeApiKey::new(&keys.api),
            logs.clone(),
            &config.data_dir,
        ));
        let ingress = Ingress::new(IngressConfig {
            own_address: endpoint.clone(),
            proxy_key: ProxyKey::new(&keys.proxy),
            caller_key: caller_key.clone(),
            serve_cluster_hosts: config
                .serve_cluster_hosts
                .unwrap_or_else(|| bound.ip().is_loopback()),
            pod_metrics: config.pod_metrics,
        })
        .with_node_api(node_api.clone())
        .with_hold_config(config.hold);
        node_api.set_load(ingress.load_source());
        let mut gateway = bound;
        if gateway.ip().is_unspecified() {
            gateway.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let registry = Registry::with_limits(&config.insecure_registries, config.registry_limits);
        let share = FairShare::new(ShareConfig {
            cpu_slots: config.cpu_slots.unwrap_or_else(|| {
                tokio::runtime::Handle::current()
                    .metrics()
                    .num_workers()
                    .saturating_sub(1)
            }),
            instances_per_namespace: config
                .namespace_instances
                .unwrap_or(config.max_concurrent_instances / 2),
        });
        tracing::info!("sharing the node between namespaces: {:?}", share.config());
        let wasm = WasmRuntime::new(
            share,
            Engines::new(EngineConfig {
                max_memory: config.max_instance_memory,
                max_instances: config.max_concurrent_instances,
                fuel_metering: false,
                cache_dir: Some(config.data_dir.join("compiled")),
            }),
            BlobCache::open(config.data_dir.join("blobs"), config.blob_cache_bytes)
                .map_err(|e| setup(&e))?,
            registry.clone(),
        );
        let linux = containerd.map(|c| LinuxRuntime::new(c, registry.clone(), config.linux_limits));
        let denied_addresses = own_addresses(&endpoint, config.client.server()).await;
        tracing::debug!("outbound requests of pods may not reach {denied_addresses:?}");
        let secrets_dir = config
            .secrets_dir
            .clone()
            .unwrap_or_else(|| default_secrets_dir(&config.data_dir));
        fresh_private_dir(&secrets_dir).map_err(|e| {
            AgentError::Setup(format!(
                "secrets directory {}: {e}; give --secrets-dir",
                secrets_dir.display()
            ))
        })?;
        let context = Arc::new(NodeContext {
            events: skiff_client::events::Recorder::start(
                config.client.clone(),
                skiff_api::kinds::event::EventSource {
                    component: "node".into(),
                    host: config.name.clone(),
                },
                Default::default(),
            ),
            node: config.name.clone(),
            client: config.client.clone(),
            runtimes: Runtimes::new(wasm, linux, registry.clone()),
            pulled: Mutex::default(),
            registry,
            local_pods: ingress.pods.clone(),
            gateway,
            denied_addresses: denied_addresses.into(),
            caller_key,
            data_dir: config.data_dir.clone(),
            secrets_dir: secrets_dir.clone(),
            pod_token_duration: config.pod_token_duration,
            endpoint: endpoint.clone(),
            backoff_base: config.backoff_base,
            backoff_cap: config.backoff_cap,
            grace: config.grace,
            partition: partition::Partition::default(),
            logs,
            pod_watch: PodWatchPosition::default(),
        });
        let stats = crate::stats::NodeStats::for_node(&context, config.max_concurrent_instances);
        node_api.set_stats({
            let stats = stats.clone();
            Arc::new(move || stats.summary())
        });
        remove_unkeyed_pod_dirs(&config.data_dir.join("pods"));
        register(&config, &endpoint, linux_runtime.as_deref()).await?;
        let mut followers = JoinSet::new();
        for kind in [Kind::Service, Kind::Route, Kind::Node] {
            followers.spawn(follow_into_ingress(
                config.client.clone(),
                kind,
                ingress.clone(),
            ));
        }
        let pods: Arc<tokio::sync::Mutex<HashMap<PodName, PodHandle>>> = Arc::default();
        ingress.set_activator({
            let (context, pods) = (context.clone(), pods.clone());
            Arc::new(move |namespace: &str, name: &str| {
                let (context, pods) = (context.clone(), pods.clone());
                let (namespace, name) = (namespace.to_owned(), name.to_owned());
                tokio::spawn(async move {
                    match context.client.activate_service(&namespace, &name).await {
                        Ok(answer) => {
                            // The pods written bound here start now: the
                            // watch would bring them a hop later.
                            let bound = answer["pods"].as_array().cloned().unwrap_or_default();
                            for pod in bound {
                                if let Ok(pod) = serde_json::from_value::<Pod>(pod) {
                                    start_answered(&context, &pods, pod).await;
                                }
                            }
                        }
                        Err(e) => tracing::warn!(
                            "service {namespace}/{name} at zero: cannot have it started: {e}"
                        ),
                    }
                });
            })
        });
        let (stop_ingress, ingress_stopped) = oneshot::channel();
        let options = skiff_serve::Options {
            limits: config.listener.clone(),
            ..skiff_serve::Options::http1(config.grace)
        };
        let ingress = tokio::spawn(skiff_serve::serve(
            listener,
            options,
            move |request| {
                let ingress = ingress.clone();
                async move { ingress.handle(request).await }
            },
            // Dropping the sender (an Agent dropped unshut) stops it too.
            async move {
                let _ = ingress_stopped.await;
            },
        ));
        let lease = tokio::spawn(partition::keep_lease(
            config.clone(),
            context.clone(),
            pods.clone(),
        ));
        followers.spawn(follow_pods(context.clone(), pods.clone()));
        Ok(Agent {
            endpoint,
            context,
            stats,
            pods,
            loops: Loops {
                followers,
                stop_ingress,
                ingress,
                lease,
            },
        })
    }

    /// The node's metrics (served by `wasm-node join --metrics-listen`).
    pub fn metrics(&self) -> Arc<crate::metrics::Metrics> {
        self.context.local_pods.metrics().clone()
    }

    /// The node's usage samples; [`crate::stats::NodeStats::summary`] is
    /// what the node API's `/stats` answers.
    pub fn stats(&self) -> Arc<crate::stats::NodeStats> {
        self.stats.clone()
    }

    /// HTTP pods currently served.
    pub fn serving(&self) -> usize {
        self.context.local_pods.len()
    }

    /// Stops following the cluster, stops every pod (each with the grace
    /// period), then the ingress (connections get the grace to finish) and
    /// the lease, which is renewed until the pods are stopped so the node
    /// is not marked NotReady under them.
    pub async fn shutdown(self) {
        let Loops {
            mut followers,
            stop_ingress,
            ingress,
            lease,
        } = self.loops;
        // First, so that no worker starts while the others stop: neither
        // by the watch nor from an activation's answer still on its way
        // (as if the watch had told of every pod, no answer starts one).
        self.context.pod_watch.close();
        followers.shutdown().await;
        let mut pods = self.pods.lock().await;
        for (_, handle) in pods.drain() {
            handle.stop().await;
        }
        let _ = stop_ingress.send(());
        let _ = ingress.await;
        lease.abort();
        let _ = lease.await;
        self.stats.stop().await;
    }
}

/// Where Secret volumes go by default: on memory where the machine has a
/// shared-memory file system, so they never reach a disk, under a name
/// derived from the data directory, so a node restarted with the same data
/// finds (and empties) the same one.
fn default_secrets_dir(data_dir: &Path) -> PathBuf {
    use sha2::Digest as _;
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        return data_dir.join("secrets");
    }
    let absolute = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let digest = sha2::Sha256::digest(absolute.as_os_str().as_encoded_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    shm.join(format!("skiff-node-{hex}"))
}

/// Makes `dir` anew, empty and owner-only. Whatever was there goes first
/// (files a previous run left, or anything another user put in its place
/// in a shared directory such as `/dev/shm`, a link included, which is
/// removed, not followed); the directory is then created by this process,
/// so it is this user's with mode 0700, or the start fails.
fn fresh_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    match std::fs::symlink_metadata(dir) {
        Ok(metadata) if metadata.is_dir() => std::fs::remove_dir_all(dir)?,
        Ok(_) => std::fs::remove_file(dir)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::DirBuilder::new().mode(0o700).create(dir)
}

/// Removes pod directories named `NAMESPACE_NAME`, as nodes before pod
/// directories carried the uid named them: no worker owns them any more,
/// and they may hold a Secret's files. (Names and namespaces have no `_`,
/// so a directory of today, `NAMESPACE_NAME_UID`, has two.)
fn remove_unkeyed_pod_dirs(pods: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(pods) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().matches('_').count() == 1 {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The address to advertise when none was given: the bound one, unless
/// that is unspecified (`0.0.0.0`), which other nodes cannot reach; then
/// the address this machine reaches the control plane from, the interface
/// facing the cluster. Choosing it sends nothing: a UDP socket's connect
/// only asks the kernel for a route.
async fn advertised(bound: SocketAddr, server: &str) -> Result<String, AgentError> {
    if !bound.ip().is_unspecified() {
        return Ok(bound.to_string());
    }
    let cannot = |why: String| {
        AgentError::Setup(format!(
            "the ingress listens on {bound}, which other nodes cannot reach, and {why}; \
             give --advertise HOST:PORT"
        ))
    };
    let uri: http::Uri = server
        .parse()
        .map_err(|e| cannot(format!("the server address {server} does not parse: {e}")))?;
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    // An address of the listener's family: an IPv4 listener cannot be
    // reached at an IPv6 address, whatever the resolver lists first.
    let toward = tokio::net::lookup_host((host, port))
        .await
        .ok()
        .and_then(|mut addrs| addrs.find(|a| bound.is_ipv6() || a.is_ipv4()))
        .ok_or_else(|| {
            cannot(format!(
                "the server's host {host} does not resolve to an address of the listener's family"
            ))
        })?;
    let local = if toward.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    };
    let socket = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(|e| cannot(e.to_string()))?;
    socket
        .connect(toward)
        .await
        .map_err(|e| cannot(format!("there is no route to the server at {toward}: {e}")))?;
    let ip = socket.local_addr().map_err(|e| cannot(e.to_string()))?.ip();
    Ok(SocketAddr::new(ip, bound.port()).to_string())
}

/// The addresses of this node's advertised ingress and of the control
/// plane (`server`, a URL), names resolved once, now. A guest must not
/// reach either through a name or a wildcard rule: the ingress would let
/// it call any pod as if from outside, and the control plane is no
/// destination for tenants' code. What does not resolve is left out (the
/// agent could not reach it either).
async fn own_addresses(endpoint: &str, server: &str) -> Vec<IpAddr> {
    let ingress = match endpoint.parse::<SocketAddr>() {
        Ok(address) => Some((address.ip().to_string(), address.port())),
        Err(_) => endpoint
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host.to_owned(), port.parse().ok()?))),
    };
    let control_plane = server.parse::<http::Uri>().ok().and_then(|uri| {
        let host = uri.host()?.trim_matches(['[', ']']).to_owned();
        let https = uri.scheme_str() == Some("https");
        Some((host, uri.port_u16().unwrap_or(if https { 443 } else { 80 })))
    });
    let mut addresses = Vec::new();
    for (host, port) in ingress.into_iter().chain(control_plane) {
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(resolved) => addresses.extend(resolved.map(|a| a.ip())),
            Err(e) => tracing::debug!("{host} does not resolve: {e}"),
        }
    }
    addresses.sort();
    addresses.dedup();
    addresses
}

/// Creates the Node, or brings an existing one up to date, with this
/// agent's labels, capacity and address. Taints from the command line are
/// the Node's first ones: once it exists, its taints are the cluster
/// admin's to change, and a restart keeps them.
async fn register(
    config: &AgentConfig,
    endpoint: &str,
    containerd: Option<&str>,
) -> Result<(), AgentError> {
    let error = |e: skiff_client::ClientError| AgentError::Register {
        name: config.name.clone(),
        reason: e.to_string(),
    };
    let mut labels = config.labels.clone();
    labels.insert("skiff.dev/hostname".into(), config.name.clone());
    labels.insert("skiff.dev/runtime-wasm".into(), "true".into());
    // The scheduler sends Linux pods only to nodes labelled so.
    labels.insert(
        "skiff.dev/runtime-linux".into(),
        containerd.is_some().to_string(),
    );
    let node = json!({
        "apiVersion": skiff_api::API_VERSION,
        "kind": "Node",
        "metadata": {"name": config.name, "labels": labels},
        "spec": {"taints": config.taints},
    });
    match config.client.create(Kind::Node, None, &node).await {
        Ok(_) => {}
        // Registered before: its labels and taints are the cluster admin's
        // now (a node token may not change them, or a node could relabel
        // itself to attract pods). Say when the flags no longer match.
        Err(e) if e.code() == Some(409) => {
            let existing = config
                .client
                .get(Kind::Node, None, &config.name)
                .await
                .map_err(error)?;
            let kept: BTreeMap<String, String> =
                serde_json::from_value(existing["metadata"]["labels"].clone()).unwrap_or_default();
            let missing: Vec<String> = labels
                .iter()
                .filter(|(k, v)| kept.get(*k) != Some(*v))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if !missing.is_empty() {
                tracing::warn!(
                    "node {} is registered without labels {}; its labels are a cluster admin's to change",
                    config.name,
                    missing.join(", ")
                );
            }
            let taints: Vec<Taint> =
                serde_json::from_value(existing["spec"]["taints"].clone()).unwrap_or_default();
            if taints != config.taints && !config.taints.is_empty() {
                tracing::warn!(
                    "node {} keeps its registered taints, not those of --taint; a cluster admin changes them",
                    config.name
                );
            }
        }
        Err(e) => return Err(error(e)),
    }
    let resources =
        json!({"memory": config.memory, "instances": config.instances, "cpu": config.cpu});
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let status = json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "addresses": [{"type": "Ingress", "address": endpoint}, {"type": "Hostname", "address": config.name}],
        "nodeInfo": {"wasmtime": skiff_wasm::WASMTIME_VERSION, "agent": env!("CARGO_PKG_VERSION"), "containerd": containerd},
        "conditions": [{"type": "Ready", "status": "True", "reason": "AgentRunning", "lastTransitionTime": now}],
    }});
    config
        .client
        .patch(Kind::Node, None, &config.name, &status, true)
        .await
        .map_err(error)?;
    Ok(())
}

/// How long the agent keeps asking for the proxy key while the control
/// plane cannot answer (unreachable, or its database away).
const PROXY_KEY_PATIENCE: Duration = Duration::from_secs(60);

/// Reads the cluster's proxy key and this node's API key, retrying (with
/// backoff) while the control plane is unreachable or unavailable; a
/// refusal ends the start at once.
async fn fetch_keys(config: &AgentConfig) -> Result<skiff_client::NodeKeys, AgentError> {
    let fail = |reason: String| AgentError::ProxyKey {
        name: config.name.clone(),
        reason,
    };
    let deadline = tokio::time::Instant::now() + PROXY_KEY_PATIENCE;
    let mut pause = Duration::from_millis(100);
    loop {
        match config.client.node_keys(&config.name).await {
            Ok(keys) if keys.proxy.len() == PROXY_KEY_LEN && keys.api.len() == PROXY_KEY_LEN => {
                return Ok(keys);
            }
            Ok(keys) => {
                return Err(fail(format!(
                    "the keys have {} and {} bytes, not {PROXY_KEY_LEN}",
                    keys.proxy.len(),
                    keys.api.len()
                )));
            }
            Err(e) => {
                let transient = match &e {
                    skiff_client::ClientError::Connect { .. } => true,
                    other => other.code().is_some_and(|code| code >= 500),
                };
                if !transient || tokio::time::Instant::now() + pause > deadline {
                    return Err(fail(e.to_string()));
                }
                tracing::info!("proxy key not read yet: {e}; retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Follows objects of `kind` through a watcher, handing each event to
/// `apply`. What is running keeps running while the control plane is away;
/// the watcher retries and relists as it must.
async fn follow<F, Fut>(client: Client, kind: Kind, field_selector: Option<String>, mut apply: F)
where
    F: FnMut(Event) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let config = watcher::Config {
        field_selector,
        ..Default::default()
    };
    let mut events = std::pin::pin!(watcher::watcher(client, kind, config));
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => apply(event).await,
            Err(e) => tracing::debug!("following {}: {e}", kind.plural()),
        }
    }
}

/// Runs a worker for every pod bound to this node, and stops the workers
/// of pods that are gone.
async fn follow_pods(
    context: Arc<NodeContext>,
    pods: Arc<tokio::sync::Mutex<HashMap<PodName, PodHandle>>>,
) {
    let selector = format!("spec.nodeName={}", context.node);
    let client = context.client.clone();
    follow(client, Kind::Pod, Some(selector), |event| {
        let (context, pods) = (context.clone(), pods.clone());
        async move {
            match event {
                Event::Restarted { items, revision } => {
                    // Noted before the pods are looked at: an answer read
                    // after this is checked against the list; a pod started
                    // from one before is kept by the reconcile if the list
                    // predates it.
                    context.pod_watch.reached(&revision);
                    let listed_at = revision.parse().unwrap_or(i64::MAX);
                    let current = items
                        .into_iter()
                        .filter_map(|p| serde_json::from_value(p).ok())
                        .collect();
                    reconcile(&context, &pods, current, listed_at).await;
                }
                Event::Added(object) | Event::Modified(object) => {
                    reached(&context, &object);
                    if let Ok(pod) = serde_json::from_value::<Pod>(object) {
                        ensure(&context, &pods, pod).await;
                    }
                }
                Event::Deleted(object) => {
                    // Before the pod is taken away, not after: an answer
                    // checked once its worker is gone must see that the
                    // watch is past the pod.
                    reached(&context, &object);
                    let key = namespace_and_name(&object);
                    let deleted = object["metadata"]["uid"].as_str();
                    let mut pods = pods.lock().await;
                    context.partition.forget(&key);
                    // Only the pod deleted: a newer one of its name (started
                    // from an activation's answer) is not stopped for it.
                    let this = pods
                        .get(&key)
                        .is_some_and(|handle| deleted.is_none_or(|uid| handle.uid == uid));
                    if let Some(handle) = this.then(|| pods.remove(&key)).flatten() {
                        context.local_pods.forget_bound(&handle.uid);
                        tokio::spawn(handle.stop());
                    }
                }
            }
        }
    })
    .await;
}

/// Notes how far the pod watch has told, from a change it delivered.
fn reached(context: &NodeContext, object: &Value) {
    if let Some(revision) = object["metadata"]["resourceVersion"].as_str() {
        context.pod_watch.reached(revision);
    }
}

/// Keeps the ingress's Services (their specs, with who may call them, and
/// their Ready endpoints), its Routes or its Nodes (the only addresses it
/// proxies to) current.
async fn follow_into_ingress(client: Client, kind: Kind, ingress: Ingress) {
    follow(client, kind, None, |event| {
        let set = |object: &Value| {
            let (namespace, name) = namespace_and_name(object);
            match kind {
                Kind::Service => {
                    let status: ServiceStatus =
                        serde_json::from_value(object["status"].clone()).unwrap_or_default();
                    // A spec this node cannot read admits no other
                    // namespace: the default is closed.
                    let spec = serde_json::from_value::<ServiceSpec>(object["spec"].clone())
                        .unwrap_or_else(|e| {
                            tracing::warn!("service {namespace}/{name}: unreadable spec: {e}");
                            ServiceSpec::default()
                        });
                    ingress.set_service(&namespace, &name, spec, status);
                }
                Kind::Node => ingress.set_node(&name, node_ingress(object)),
                _ => {
                    if let Ok(spec) = serde_json::from_value::<RouteSpec>(object["spec"].clone()) {
                        ingress.set_route(&namespace, &name, spec);
                    }
                }
            }
        };
        match event {
            Event::Restarted { items, .. } => {
                match kind {
                    Kind::Node => ingress.clear_nodes(),
                    _ => ingress.clear(kind == Kind::Service),
                }
                items.iter().for_each(set);
            }
            Event::Added(object) | Event::Modified(object) => set(&object),
            Event::Deleted(object) => {
                let (namespace, name) = namespace_and_name(&object);
                match kind {
                    Kind::Service => ingress.remove_service(&namespace, &name),
                    Kind::Node => ingress.remove_node(&name),
                    _ => ingress.remove_route(&namespace, &name),
                }
            }
        }
        std::future::ready(())
    })
    .await;
}

/// A Node's `Ingress` address, as its agent registered it.
fn node_ingress(node: &Value) -> Option<String> {
    node["status"]["addresses"]
        .as_array()?
        .iter()
        .find(|a| a["type"] == "Ingress")?["address"]
        .as_str()
        .map(str::to_owned)
}

/// Runs a worker for `pod` unless one runs for this very pod already (a
/// pod recreated under the same name replaces the old one's worker).
async fn ensure(
    context: &Arc<NodeContext>,
    pods: &tokio::sync::Mutex<HashMap<PodName, PodHandle>>,
    pod: Pod,
) {
    if pod.spec.node_name != context.node {
        return;
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    context.local_pods.note_bound(
        &uid,
        &pod.metadata.labels,
        pod.metadata.deletion_timestamp.is_some(),
    );
    let mut pods = pods.lock().await;
    run_worker(context, &mut pods, pod, None).await;
}

/// Starts `pod`, which an activation this node asked for wrote bound here,
/// from the activation's answer, unless the pod watch has told of it
/// already (see [`PodWatchPosition`]). What the watch tells afterwards
/// reaches the worker as for any pod.
async fn start_answered(
    context: &Arc<NodeContext>,
    pods: &tokio::sync::Mutex<HashMap<PodName, PodHandle>>,
    pod: Pod,
) {
    let revision = pod
        .metadata
        .resource_version
        .as_deref()
        .and_then(|r| r.parse::<i64>().ok());
    let Some(revision) = revision else {
        return;
    };
    if pod.spec.node_name != context.node {
        return;
    }
    // Under the pods' lock, which the watch's changes are applied under.
    let mut pods = pods.lock().await;
    if !starts_from_answer(context.pod_watch.at(), revision) {
        return;
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    context
        .local_pods
        .note_bound(&uid, &pod.metadata.labels, false);
    run_worker(context, &mut pods, pod, Some(revision)).await;
}

/// Runs a worker for `pod` unless one runs for it already, stopping the
/// worker of an older pod of its name; `seen` is the pod's revision when
/// it starts from an activation's answer.
async fn run_worker(
    context: &Arc<NodeContext>,
    pods: &mut HashMap<PodName, PodHandle>,
    pod: Pod,
    seen: Option<i64>,
) {
    let key = (pod.metadata.namespace.clone(), pod.metadata.name.clone());
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if pods.get(&key).is_some_and(|h| h.uid == uid) {
        return;
    }
    if let Some(old) = pods.remove(&key) {
        old.stop().await;
    }
    // Cut off from the control plane, a pod that must never run twice
    // waits for the lease to be renewed.
    if context.partition.holds_back(&key, &pod) {
        return;
    }
    context.partition.forget(&key);
    let mut handle = pod::spawn(context.clone(), pod);
    handle.seen_outside_watch = seen;
    pods.insert(key, handle);
}

/// Brings the workers in line with the full list of pods bound here, as
/// of revision `listed_at`; pods started from an activation's answer
/// after it are left to the watch.
async fn reconcile(
    context: &Arc<NodeContext>,
    pods: &tokio::sync::Mutex<HashMap<PodName, PodHandle>>,
    current: Vec<Pod>,
    listed_at: i64,
) {
    let wanted: HashMap<PodName, String> = current
        .iter()
        .map(|p| {
            (
                (p.metadata.namespace.clone(), p.metadata.name.clone()),
                p.metadata.uid.clone().unwrap_or_default(),
            )
        })
        .collect();
    let (gone, newer): (Vec<PodHandle>, HashSet<PodName>) = {
        let mut pods = pods.lock().await;
        context.partition.retain(&wanted);
        let newer: HashSet<PodName> = pods
            .iter()
            .filter(|(_, handle)| listed_before(listed_at, handle.seen_outside_watch))
            .map(|(key, _)| key.clone())
            .collect();
        let stale: Vec<PodName> = pods
            .iter()
            .filter(|(key, handle)| !newer.contains(*key) && wanted.get(*key) != Some(&handle.uid))
            .map(|(key, _)| key.clone())
            .collect();
        let gone = stale
            .into_iter()
            .filter_map(|key| pods.remove(&key))
            .collect();
        (gone, newer)
    };
    for handle in gone {
        context.local_pods.forget_bound(&handle.uid);
        tokio::spawn(handle.stop());
    }
    for pod in current {
        let key = (pod.metadata.namespace.clone(), pod.metadata.name.clone());
        if !newer.contains(&key) {
            ensure(context, pods, pod).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_starts_from_an_answer_only_while_the_watch_has_not_told_of_it() {
        let position = PodWatchPosition::default();
        position.reached("10");
        // Written at 11: the watch has it (and any deletion) still to come.
        assert!(starts_from_answer(position.at(), 11));
        // The watch brought it, or a list at or after it showed what
        // became of it: the answer is stale.
        position.reached("11");
        assert!(!starts_from_answer(position.at(), 11));
        position.reached("9");
        position.reached("not a revision");
        assert_eq!(position.at(), 11, "the position only moves on");
        // A relist that lacks a pod started from an answer: at or after its
        // revision the pod is gone; before it, the list knew nothing of it.
        assert!(listed_before(10, Some(11)));
        assert!(!listed_before(11, Some(11)));
        assert!(!listed_before(12, Some(11)));
        assert!(!listed_before(10, None), "a pod the watch brought");
    }

    #[tokio::test]
    async fn the_ingress_and_the_control_plane_are_the_nodes_own_addresses() {
        // IP literals only: resolving them asks no resolver.
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            own_addresses("203.0.113.7:8080", "https://198.51.100.2:6443").await,
            [ip("198.51.100.2"), ip("203.0.113.7")]
        );
        assert_eq!(
            own_addresses("[2001:db8::7]:8080", "http://[2001:db8::1]").await,
            [ip("2001:db8::1"), ip("2001:db8::7")]
        );
        assert_eq!(
            own_addresses("127.0.0.1:8080", "http://127.0.0.1:6443/").await,
            [ip("127.0.0.1")]
        );
    }

    #[test]
    fn the_secrets_directory_is_made_anew_never_through_what_was_planted_there() {
        use std::os::unix::fs::PermissionsExt as _;
        let shared = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("keep"), "not the node's").unwrap();
        let dir = shared.path().join("skiff-node-x");
        // Another user's link where the node's directory goes: removed,
        // not followed, so nothing is written where it points.
        std::os::unix::fs::symlink(elsewhere.path(), &dir).unwrap();
        fresh_private_dir(&dir).unwrap();
        let made = std::fs::symlink_metadata(&dir).unwrap();
        assert!(made.is_dir() && !made.file_type().is_symlink());
        assert_eq!(made.permissions().mode() & 0o777, 0o700);
        assert!(elsewhere.path().join("keep").exists());
        // A file in its place, or a directory with a previous run's
        // secrets (and lax modes): replaced by an empty owner-only one.
        std::fs::create_dir_all(dir.join("default_web_uid/creds")).unwrap();
        std::fs::write(dir.join("default_web_uid/creds/token"), "old").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        fresh_private_dir(&dir).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        std::fs::remove_dir(&dir).unwrap();
        std::fs::write(&dir, "a file").unwrap();
        fresh_private_dir(&dir).unwrap();
        assert!(std::fs::metadata(&dir).unwrap().is_dir());
    }

    #[test]
    fn pod_directories_without_a_uid_are_removed_and_keyed_ones_kept() {
        let pods = tempfile::tempdir().unwrap();
        for dir in ["shop_web", "shop_web_6f1c", "shop_api_9a2b"] {
            std::fs::create_dir_all(pods.path().join(dir).join("volume")).unwrap();
        }
        remove_unkeyed_pod_dirs(pods.path());
        let mut left: Vec<String> = std::fs::read_dir(pods.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["shop_api_9a2b", "shop_web_6f1c"]);
        remove_unkeyed_pod_dirs(&pods.path().join("absent"));
    }
}
