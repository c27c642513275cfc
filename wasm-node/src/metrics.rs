//! The node's metrics, in Prometheus' text format, served on
//! `--metrics-listen` when the operator asks for it.
//!
//! Per pod (labels `namespace`, `pod`): requests by status class, their
//! latency to the response head and those in flight, counted at the
//! ingress; and what the pod's instances came to (starts, traps, timeouts,
//! out of fuel, over the memory limit), read from the engine at each
//! scrape. A pod's series go when the ingress stops serving it, so the
//! label sets stay bounded by the pods the node runs.

use std::collections::HashMap;
use std::sync::{RwLock, Weak};
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

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Namespace and name of a pod.
type PodName = (String, String);

/// The ingress's pods, as the collector reads them at a scrape.
pub(crate) type ServedPods = RwLock<HashMap<PodName, (String, Backend)>>;

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

/// The node's metric families, registered once per ingress.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<PodLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<PodLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Families for an ingress serving `pods`; held weakly, so the
    /// registry does not keep the pods alive.
    pub(crate) fn new(pods: Weak<ServedPods>) -> Self {
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
        registry.register_collector(Box::new(Instances { pods }));
        Self {
            registry,
            requests,
            latency,
            in_flight,
        }
    }

    /// The metrics in Prometheus' text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// A request reached pod `pod`: counted in flight until the returned
    /// guard is given its answer's status.
    pub(crate) fn request(&self, (namespace, pod): &PodName) -> RequestTimer<'_> {
        let labels = PodLabels {
            namespace: namespace.clone(),
            pod: pod.clone(),
        };
        self.in_flight.get_or_create(&labels).inc();
        RequestTimer {
            metrics: self,
            labels,
            started: std::time::Instant::now(),
        }
    }

    fn answered(&self, labels: &PodLabels, status: StatusCode, elapsed: Duration) {
        let class = match status.as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests
            .get_or_create(&RequestLabels {
                namespace: labels.namespace.clone(),
                pod: labels.pod.clone(),
                class,
            })
            .inc();
        self.latency
            .get_or_create(labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Forgets a pod's series: it is no longer served here.
    pub(crate) fn forget(&self, (namespace, pod): &PodName) {
        let labels = PodLabels {
            namespace: namespace.clone(),
            pod: pod.clone(),
        };
        self.latency.remove(&labels);
        self.in_flight.remove(&labels);
        for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
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
    labels: PodLabels,
    started: std::time::Instant,
}

impl RequestTimer<'_> {
    pub(crate) fn answered(self, status: StatusCode) {
        self.metrics
            .answered(&self.labels, status, self.started.elapsed());
    }
}

impl Drop for RequestTimer<'_> {
    fn drop(&mut self) {
        // `get` rather than `get_or_create`: a pod forgotten meanwhile
        // keeps no series.
        if let Some(gauge) = self.metrics.in_flight.get(&self.labels) {
            gauge.dec();
        }
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
            for ((namespace, pod), (_, backend)) in pods.read().expect("routes lock").iter() {
                if let Backend::Wasm(app) = backend {
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
