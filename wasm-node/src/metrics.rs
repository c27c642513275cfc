//! The node's metrics, in Prometheus' text format, served on
//! `--metrics-listen` when the operator asks for it.
//!
//! Per pod (labels `namespace`, `pod`): requests by status class, their
//! latency to the response head and those in flight, counted at the
//! ingress; and what the pod's instances came to (starts, traps, timeouts,
//! out of fuel, over the memory limit), read from the engine at each
//! scrape. A pod's series go when the ingress stops serving it, so the
//! label sets stay bounded by the pods the node runs; a request answered
//! after that (it was in flight) counts nowhere rather than bringing them
//! back.
//!
//! From the node's usage samples ([`crate::stats`], attached with
//! [`Metrics::attach_node`]): every running pod's CPU time and memory
//! (Wasm and Linux pods alike; gone at the sample after the pod), the
//! instance slots and those in use, image pulls by runtime and result,
//! and hits and misses of the blob, compiled-code and layer caches.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use http::StatusCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use skiff_wasm::InstanceStats;

use crate::runtimes::Backend;
use crate::runtimes::meters::CountsRead;

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Namespace and name of a pod.
type PodName = (String, String);

/// The ingress's pods, as the collector reads them at a scrape.
pub(crate) type ServedPods = RwLock<HashMap<PodName, Served>>;

/// One pod the ingress serves: the uid of the pod that added it, what
/// serves it, its metric handles, and whether its worker says it is Ready
/// (so that a Service at zero can be served by it before its endpoint
/// comes back from the control plane).
pub(crate) struct Served {
    pub(crate) uid: String,
    pub(crate) backend: Backend,
    pub(crate) metrics: Arc<PodMetrics>,
    pub(crate) ready: bool,
}

impl Served {
    pub(crate) fn new(pod: &PodName, uid: &str, backend: Backend) -> Self {
        Self {
            uid: uid.to_owned(),
            backend,
            metrics: Arc::new(PodMetrics::new(pod)),
            ready: false,
        }
    }
}

/// A pod's requests on the ingress as the autoscaler samples them, beside
/// the exported series, so that sampling reads no text.
///
/// The time requests spent is read as it accrues, the part of those still
/// in flight included: the autoscaler takes a tick's growth of it as that
/// tick's mean concurrency (Little's law), and a request counted only when
/// it ended would put a long wait's every second into the tick it ended
/// in. The four numbers change together, under a lock a request takes
/// twice (uncontended but for requests to the same pod at the same time).
#[derive(Debug)]
pub(crate) struct Load {
    state: std::sync::Mutex<LoadState>,
    /// When the pod began to be served here, since [`load_epoch`]: the
    /// window of its first sample.
    began_nanos: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct LoadState {
    in_flight: u64,
    requests: u64,
    /// Time of the requests that ended.
    busy_nanos: u64,
    /// The sum of the starts of those in flight, since [`load_epoch`].
    started_nanos: u128,
}

/// What [`Load::read`] gives: requests in flight, requests so far, and the
/// time all of them have taken so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoadRead {
    pub(crate) in_flight: u64,
    pub(crate) requests: u64,
    pub(crate) busy_nanos: u64,
    /// The time of the requests that ended, alone.
    pub(crate) answered_nanos: u64,
    /// When it was read, and when the pod began to be served here, since
    /// [`load_epoch`].
    pub(crate) at_nanos: u64,
    pub(crate) began_nanos: u64,
}

/// The instant request starts are counted from.
fn load_epoch() -> std::time::Instant {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

fn since_epoch(at: std::time::Instant) -> u128 {
    at.saturating_duration_since(load_epoch()).as_nanos()
}

impl Load {
    fn new() -> Self {
        Self {
            state: Default::default(),
            began_nanos: u64::try_from(since_epoch(std::time::Instant::now())).unwrap_or(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LoadState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request began at `at`.
    fn begin(&self, at: std::time::Instant) {
        let at = since_epoch(at);
        let mut state = self.state();
        state.in_flight += 1;
        state.started_nanos += at;
    }

    /// The request that began at `at` ended, having taken `took`.
    fn end(&self, at: std::time::Instant, took: Duration) {
        let at = since_epoch(at);
        let mut state = self.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        state.started_nanos = state.started_nanos.saturating_sub(at);
        state.requests += 1;
        state.busy_nanos = state
            .busy_nanos
            .saturating_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    }

    /// The counts now, the time of requests in flight up to now included.
    pub(crate) fn read(&self) -> LoadRead {
        self.read_at(std::time::Instant::now)
    }

    /// The counts at the time `now` gives, read under the lock: a request
    /// that began after it cannot be counted with less time than it had.
    fn read_at(&self, now: impl FnOnce() -> std::time::Instant) -> LoadRead {
        let state = self.state();
        let now = since_epoch(now());
        let accrued = (u128::from(state.in_flight) * now).saturating_sub(state.started_nanos);
        LoadRead {
            in_flight: state.in_flight,
            requests: state.requests,
            busy_nanos: state
                .busy_nanos
                .saturating_add(u64::try_from(accrued).unwrap_or(u64::MAX)),
            answered_nanos: state.busy_nanos,
            at_nanos: u64::try_from(now).unwrap_or(u64::MAX),
            began_nanos: self.began_nanos,
        }
    }
}

/// Status classes, in the order of [`PodMetrics::requests`].
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One served pod's series, resolved once: a request then only adds to
/// atomics, with no label hashed, allocated or looked up. Each handle is
/// taken from its family the first time it is needed (so a series appears
/// with its first count, as before), under the pods' read lock and only
/// while this very entry is served (see [`Metrics::while_served`]).
/// [`Metrics::forget`] removes the series from their families: handles
/// still held by requests in flight then count into series no longer
/// exported, and nothing brings the series back.
pub(crate) struct PodMetrics {
    labels: PodLabels,
    pub(crate) load: Load,
    in_flight: OnceLock<Gauge>,
    latency: OnceLock<Histogram>,
    requests: [OnceLock<Counter>; 5],
}

impl PodMetrics {
    fn new((namespace, pod): &PodName) -> Self {
        Self {
            labels: PodLabels {
                namespace: namespace.clone(),
                pod: pod.clone(),
            },
            load: Load::new(),
            in_flight: OnceLock::new(),
            latency: OnceLock::new(),
            requests: Default::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PodLabels {
    namespace: String,
    pod: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    namespace: String,
    pod: String,
    class: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PullLabels {
    runtime: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
}

/// What the node tells its metrics beyond what its ingress counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeFigures {
    /// Pulls and cache lookups since the node started.
    pub counts: CountsRead,
    /// Instances the node may run at once, and those alive now.
    pub instance_slots: u64,
    pub instances_in_use: u64,
    /// Every running pod, from the latest sample.
    pub pods: Vec<PodFigures>,
}

/// One running pod's usage in the latest sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodFigures {
    pub namespace: String,
    pub pod: String,
    /// CPU time used on this node so far.
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
}

/// Where [`NodeFigures`] come from (the node's sampler).
pub trait NodeSource: Send + Sync {
    fn figures(&self) -> NodeFigures;
}

type NodeSlot = Arc<RwLock<Option<Weak<dyn NodeSource>>>>;

/// The node's metric families, registered once per ingress.
pub struct Metrics {
    registry: Registry,
    /// The pods served, to tell whether a request's pod still is.
    pods: Weak<ServedPods>,
    node: NodeSlot,
    requests: Family<RequestLabels, Counter>,
    latency: Family<PodLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<PodLabels, Gauge>,
    /// Whether requests are counted into the per-pod series at all: a node
    /// that serves no metrics keeps only what the autoscaler samples.
    per_pod: bool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Families for an ingress serving `pods`; held weakly, so the
    /// registry does not keep the pods alive. Without `per_pod`, requests
    /// add only to each pod's [`Load`], and the request series stay empty.
    pub(crate) fn new(pods: Weak<ServedPods>, per_pod: bool) -> Self {
        let mut registry = Registry::with_prefix("skiff");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "pod_requests",
            "Requests served by a pod on this node, by status class of the answer",
            requests.clone(),
        );
        let latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "pod_request_duration_seconds",
            "Time from a request reaching the pod to its response head",
            latency.clone(),
        );
        let in_flight = Family::<PodLabels, Gauge>::default();
        registry.register(
            "pod_requests_in_flight",
            "Requests a pod is answering now (until the response head)",
            in_flight.clone(),
        );
        registry.register_collector(Box::new(Instances { pods: pods.clone() }));
        let node: NodeSlot = Arc::default();
        registry.register_collector(Box::new(NodeCollector { node: node.clone() }));
        Self {
            registry,
            pods,
            node,
            requests,
            latency,
            in_flight,
            per_pod,
        }
    }

    /// The metrics in Prometheus' text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Has the node's figures (pulls, caches, slots, pods' CPU and memory)
    /// read from `source` at each scrape, for as long as it lives.
    pub fn attach_node(&self, source: Weak<dyn NodeSource>) {
        *self.node.write().expect("node metrics lock") = Some(source);
    }

    /// Runs `count` if `pod`'s entry is served now, under the pods' lock:
    /// [`Metrics::forget`] runs under its write lock (see
    /// `LocalPods::remove`), so a series taken here is never one of a pod
    /// just forgotten. Only the first count of each series of a pod comes
    /// here; the rest go straight to its handles.
    fn while_served<T>(&self, pod: &Arc<PodMetrics>, count: impl FnOnce() -> T) -> Option<T> {
        let pods = self.pods.upgrade()?;
        let pods = pods.read().expect("routes lock");
        let served = pods.get(&(pod.labels.namespace.clone(), pod.labels.pod.clone()))?;
        Arc::ptr_eq(&served.metrics, pod).then(count)
    }

    /// The handle in `slot`, taken from `family` (by `labels`) the first
    /// time, if the pod is still served then.
    fn resolve<'p, S, M, C>(
        &self,
        pod: &'p Arc<PodMetrics>,
        slot: &'p OnceLock<M>,
        family: &Family<S, M, C>,
        labels: impl FnOnce() -> S,
    ) -> Option<&'p M>
    where
        S: Clone + std::hash::Hash + Eq,
        M: Clone,
        C: prometheus_client::metrics::family::MetricConstructor<M>,
    {
        if let Some(handle) = slot.get() {
            return Some(handle);
        }
        self.while_served(pod, || {
            slot.get_or_init(|| family.get_or_create(&labels()).clone())
        })
    }

    /// A request reached pod `pod`: counted in flight until the returned
    /// guard is given its answer's status. A pod no longer served counts
    /// nothing. (The ingress takes the handles with the backend instead:
    /// [`Metrics::request_to`].)
    #[cfg(test)]
    pub(crate) fn request(&self, name: &PodName) -> RequestTimer<'_> {
        let pod = self.pods.upgrade().and_then(|pods| {
            let pods = pods.read().expect("routes lock");
            pods.get(name).map(|served| served.metrics.clone())
        });
        self.request_to(pod)
    }

    /// [`Metrics::request`] for a pod whose handles the caller took with
    /// its backend (`None`: no pod served, nothing counted).
    pub(crate) fn request_to(&self, pod: Option<Arc<PodMetrics>>) -> RequestTimer<'_> {
        let started = std::time::Instant::now();
        let pod = pod.and_then(|pod| {
            if self.per_pod {
                let gauge =
                    self.resolve(&pod, &pod.in_flight, &self.in_flight, || pod.labels.clone())?;
                gauge.inc();
            }
            pod.load.begin(started);
            Some(pod)
        });
        RequestTimer {
            metrics: self,
            pod,
            started,
            elapsed: None,
        }
    }

    /// Requests pod `pod` has answered so far (every status class).
    #[cfg(test)]
    pub(crate) fn requests_answered(&self, (namespace, pod): &PodName) -> u64 {
        CLASSES
            .into_iter()
            .filter_map(|class| {
                self.requests
                    .get(&RequestLabels {
                        namespace: namespace.clone(),
                        pod: pod.clone(),
                        class,
                    })
                    .map(|counter| counter.get())
            })
            .sum()
    }

    fn answered(&self, pod: &Arc<PodMetrics>, status: StatusCode, elapsed: Duration) {
        if !self.per_pod {
            return;
        }
        let class = match status.as_u16() {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            _ => 4,
        };
        let requests = self.resolve(pod, &pod.requests[class], &self.requests, || {
            RequestLabels {
                namespace: pod.labels.namespace.clone(),
                pod: pod.labels.pod.clone(),
                class: CLASSES[class],
            }
        });
        if let Some(counter) = requests {
            counter.inc();
        }
        let latency = self.resolve(pod, &pod.latency, &self.latency, || pod.labels.clone());
        if let Some(histogram) = latency {
            histogram.observe(elapsed.as_secs_f64());
        }
    }

    /// Forgets a pod's series: it is no longer served here.
    pub(crate) fn forget(&self, (namespace, pod): &PodName) {
        let labels = PodLabels {
            namespace: namespace.clone(),
            pod: pod.clone(),
        };
        self.latency.remove(&labels);
        self.in_flight.remove(&labels);
        for class in CLASSES {
            self.requests.remove(&RequestLabels {
                namespace: labels.namespace.clone(),
                pod: labels.pod.clone(),
                class,
            });
        }
    }
}

/// One request to a pod, in flight until [`RequestTimer::answered`] (or
/// until dropped, when the request was given up on: then it is not
/// counted as answered).
pub(crate) struct RequestTimer<'a> {
    metrics: &'a Metrics,
    /// The pod served when the request arrived, its in-flight gauge
    /// raised; `None` counts nothing.
    pod: Option<Arc<PodMetrics>>,
    started: std::time::Instant,
    /// Taken when the answer came, so the drop need not read the clock.
    elapsed: Option<Duration>,
}

impl RequestTimer<'_> {
    pub(crate) fn answered(mut self, status: StatusCode) {
        let Some(pod) = &self.pod else { return };
        let elapsed = self.started.elapsed();
        self.elapsed = Some(elapsed);
        // Into this pod's series only: one forgotten (or replaced by a pod
        // of the same name) meanwhile keeps them unexported, and a series
        // not yet taken is taken only while the same pod is served.
        self.metrics.answered(pod, status, elapsed);
    }
}

impl Drop for RequestTimer<'_> {
    fn drop(&mut self) {
        let Some(pod) = &self.pod else { return };
        // The gauge raised, whatever became of the pod since: a forgotten
        // pod's is no longer exported, and a newer pod of the name has a
        // gauge of its own.
        if let Some(gauge) = pod.in_flight.get() {
            gauge.dec();
        }
        let elapsed = self.elapsed.unwrap_or_else(|| self.started.elapsed());
        pod.load.end(self.started, elapsed);
    }
}

/// One count of [`InstanceStats`].
type Field = fn(&InstanceStats) -> u64;

/// What the pods' instances came to, read from the engine at each scrape:
/// the counts live with each pod's component, so a pod that goes takes
/// its series along.
#[derive(Debug)]
struct Instances {
    pods: Weak<ServedPods>,
}

impl Collector for Instances {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut stats: Vec<(PodLabels, InstanceStats)> = Vec::new();
        let mut running = 0;
        if let Some(pods) = self.pods.upgrade() {
            for ((namespace, pod), served) in pods.read().expect("routes lock").iter() {
                if let Backend::Wasm(app) = &served.backend {
                    running += app.in_flight();
                    let labels = PodLabels {
                        namespace: namespace.clone(),
                        pod: pod.clone(),
                    };
                    stats.push((labels, app.stats()));
                }
            }
        }
        let counters: [(&str, &str, Field); 5] = [
            (
                "pod_instance_starts",
                "Instances started for a pod's requests",
                |s| s.starts,
            ),
            ("pod_instance_traps", "Instances that trapped", |s| s.traps),
            (
                "pod_instance_timeouts",
                "Instances stopped at the pod's timeout",
                |s| s.timeouts,
            ),
            (
                "pod_instance_out_of_fuel",
                "Instances that ran out of fuel",
                |s| s.out_of_fuel,
            ),
            (
                "pod_instance_memory_limit",
                "Instances that went past the pod's memory limit",
                |s| s.memory_limit,
            ),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, stats) in &stats {
                ConstCounter::new(value(stats)).encode(family.encode_family(labels)?)?;
            }
        }
        let gauge = ConstGauge::new(i64::try_from(running).unwrap_or(i64::MAX));
        gauge.encode(encoder.encode_descriptor(
            "node_instances_in_use",
            "Instance slots of this node's Wasm pods in use now",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

/// Hits or misses of one cache in [`CountsRead::cache`].
type CacheField = fn(&(&'static str, u64, u64)) -> u64;

/// The node's figures, read from its sampler at each scrape; a pod's
/// series are there while the latest sample has it.
#[derive(Debug)]
struct NodeCollector {
    node: NodeSlot,
}

impl std::fmt::Debug for dyn NodeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeSource")
    }
}

fn gauge_of(value: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let source = self.node.read().expect("node metrics lock").clone();
        let Some(figures) = source.and_then(|s| s.upgrade()).map(|s| s.figures()) else {
            return Ok(());
        };
        let mut family = encoder.encode_descriptor(
            "node_image_pulls",
            "Images downloaded from registries, by runtime and result",
            None,
            MetricType::Counter,
        )?;
        for &(runtime, result, count) in &figures.counts.pulls {
            ConstCounter::new(count)
                .encode(family.encode_family(&PullLabels { runtime, result })?)?;
        }
        let caches: [(&str, &str, CacheField); 2] = [
            (
                "node_cache_hits",
                "Lookups the node's caches answered: blob (components), compiled (their code), layers (Linux images in containerd)",
                |c| c.1,
            ),
            (
                "node_cache_misses",
                "Lookups the node's caches could not answer (the blob or layers were downloaded, the code compiled)",
                |c| c.2,
            ),
        ];
        for (name, help, value) in caches {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for cache in &figures.counts.cache {
                ConstCounter::new(value(cache))
                    .encode(family.encode_family(&CacheLabels { cache: cache.0 })?)?;
            }
        }
        gauge_of(figures.instance_slots).encode(encoder.encode_descriptor(
            "node_instance_slots",
            "Wasm instances this node may run at once",
            None,
            MetricType::Gauge,
        )?)?;
        gauge_of(figures.instances_in_use).encode(encoder.encode_descriptor(
            "node_instance_slots_in_use",
            "Wasm instances alive now (requests, command runs, start-up checks), at the latest sample",
            None,
            MetricType::Gauge,
        )?)?;
        let pod_labels = |p: &PodFigures| PodLabels {
            namespace: p.namespace.clone(),
            pod: p.pod.clone(),
        };
        let mut family = encoder.encode_descriptor(
            "pod_cpu_seconds",
            "CPU time a running pod used on this node: a Linux pod's cgroup, a Wasm pod's instances while polled",
            None,
            MetricType::Counter,
        )?;
        for pod in &figures.pods {
            ConstCounter::new(pod.cpu_seconds).encode(family.encode_family(&pod_labels(pod))?)?;
        }
        let mut family = encoder.encode_descriptor(
            "pod_memory_bytes",
            "Memory a running pod holds: a Linux pod's cgroup, a Wasm pod's live instances' linear memories",
            None,
            MetricType::Gauge,
        )?;
        for pod in &figures.pods {
            gauge_of(pod.memory_bytes).encode(family.encode_family(&pod_labels(pod))?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(uid: &str) -> Arc<ServedPods> {
        let pods: Arc<ServedPods> = Arc::default();
        pods.write().unwrap().insert(
            pod(),
            Served::new(&pod(), uid, Backend::Process(([127, 0, 0, 1], 1).into())),
        );
        pods
    }

    fn pod() -> PodName {
        ("shop".into(), "web".into())
    }

    #[test]
    fn a_request_answered_after_its_pod_left_brings_no_series_back() {
        let pods = served("u1");
        let metrics = Metrics::new(Arc::downgrade(&pods), true);
        let counted = metrics.request(&pod());
        counted.answered(StatusCode::OK);
        let late = metrics.request(&pod());
        let dropped = metrics.request(&pod());
        assert!(
            metrics
                .encode()
                .contains(r#"skiff_pod_requests_in_flight{namespace="shop",pod="web"} 2"#)
        );
        // The pod leaves as `LocalPods::remove` has it leave.
        {
            let mut pods = pods.write().unwrap();
            metrics.forget(&pod());
            pods.remove(&pod());
        }
        late.answered(StatusCode::OK);
        drop(dropped);
        let text = metrics.encode();
        assert!(!text.contains(r#"pod="web""#), "{text}");
        // Nor does a request that arrives after.
        metrics.request(&pod()).answered(StatusCode::OK);
        assert!(!metrics.encode().contains(r#"pod="web""#));
    }

    #[test]
    fn time_in_flight_counts_as_it_accrues_and_once() {
        let load = Load {
            state: Default::default(),
            began_nanos: 10_000_000_000,
        };
        let start = load_epoch() + Duration::from_secs(10);
        let read = |at: u64| load.read_at(|| start + Duration::from_secs(at));
        load.begin(start);
        load.begin(start + Duration::from_secs(1));
        // Two in flight: 2 s and 1 s of them at 2 s.
        assert_eq!(
            read(2),
            LoadRead {
                in_flight: 2,
                requests: 0,
                busy_nanos: 3_000_000_000,
                answered_nanos: 0,
                at_nanos: 12_000_000_000,
                began_nanos: 10_000_000_000,
            }
        );
        load.end(start, Duration::from_secs(3));
        // The first took 3 s, the second has 3 s at 4 s.
        assert_eq!(
            read(4),
            LoadRead {
                in_flight: 1,
                requests: 1,
                busy_nanos: 6_000_000_000,
                answered_nanos: 3_000_000_000,
                at_nanos: 14_000_000_000,
                began_nanos: 10_000_000_000,
            }
        );
        load.end(start + Duration::from_secs(1), Duration::from_secs(4));
        assert_eq!(
            read(9),
            LoadRead {
                in_flight: 0,
                requests: 2,
                busy_nanos: 7_000_000_000,
                answered_nanos: 7_000_000_000,
                at_nanos: 19_000_000_000,
                began_nanos: 10_000_000_000,
            }
        );
    }

    #[test]
    fn a_request_to_a_replaced_pod_counts_for_neither() {
        let pods = served("u1");
        let metrics = Metrics::new(Arc::downgrade(&pods), true);
        let old = metrics.request(&pod());
        // A new pod of the same name takes the route (`LocalPods::add`).
        pods.write().unwrap().insert(
            pod(),
            Served::new(&pod(), "u2", Backend::Process(([127, 0, 0, 1], 2).into())),
        );
        metrics.forget(&pod());
        let new = metrics.request(&pod());
        old.answered(StatusCode::INTERNAL_SERVER_ERROR);
        new.answered(StatusCode::OK);
        assert_eq!(metrics.requests_answered(&pod()), 1);
        let text = metrics.encode();
        assert!(!text.contains(r#"class="5xx""#), "{text}");
        assert!(
            text.contains(r#"skiff_pod_requests_in_flight{namespace="shop",pod="web"} 0"#),
            "{text}"
        );
    }

    struct Figures(NodeFigures);

    impl NodeSource for Figures {
        fn figures(&self) -> NodeFigures {
            self.0.clone()
        }
    }

    #[test]
    fn the_nodes_figures_are_exposed_once_attached() {
        let pods = served("u1");
        let metrics = Metrics::new(Arc::downgrade(&pods), true);
        assert!(!metrics.encode().contains("skiff_node_image_pulls"));
        let counts = crate::runtimes::meters::Counts::default();
        counts.pulled(crate::runtimes::meters::PullRuntime::Wasm, true);
        counts.looked_up(crate::runtimes::meters::Cache::Compiled, true);
        let source: Arc<dyn NodeSource> = Arc::new(Figures(NodeFigures {
            counts: counts.read(),
            instance_slots: 100,
            instances_in_use: 2,
            pods: vec![PodFigures {
                namespace: "shop".into(),
                pod: "web".into(),
                cpu_seconds: 1.5,
                memory_bytes: 4096,
            }],
        }));
        metrics.attach_node(Arc::downgrade(&source));
        let text = metrics.encode();
        for line in [
            r#"skiff_node_image_pulls_total{runtime="wasm",result="success"} 1"#,
            r#"skiff_node_image_pulls_total{runtime="linux",result="failure"} 0"#,
            r#"skiff_node_cache_hits_total{cache="compiled"} 1"#,
            r#"skiff_node_cache_misses_total{cache="blob"} 0"#,
            "skiff_node_instance_slots 100",
            "skiff_node_instance_slots_in_use 2",
            r#"skiff_pod_cpu_seconds_total{namespace="shop",pod="web"} 1.5"#,
            r#"skiff_pod_memory_bytes{namespace="shop",pod="web"} 4096"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        // The source gone, so are its series.
        drop(source);
        assert!(!metrics.encode().contains("skiff_pod_cpu_seconds"));
    }
}
