//! The control plane's metrics, in Prometheus' text format (`GET /metrics`).
//!
//! One [`Metrics`] per process, made with its [`Store`](crate::store::Store)
//! (which every part of the control plane holds) and shared as an `Arc`.
//! Every label takes values from a bounded set (verbs, kinds, status
//! codes, results, controller names), never from an object's name.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    verb: &'static str,
    kind: &'static str,
    code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    verb: &'static str,
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

/// What a scheduling attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// A node was chosen and the binding written.
    Bound,
    /// No node fits; the pod is parked.
    Unschedulable,
    /// The binding lost to another write (409); the pod is queued again.
    Conflict,
    /// The binding failed otherwise.
    Error,
}

impl Attempt {
    fn as_str(self) -> &'static str {
        match self {
            Attempt::Bound => "bound",
            Attempt::Unschedulable => "unschedulable",
            Attempt::Conflict => "conflict",
            Attempt::Error => "error",
        }
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The control plane's metric families, registered once.
pub struct Metrics {
    registry: Registry,
    api_requests: Family<RequestLabels, Counter>,
    api_latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    open_watches: Gauge,
    batch_size: Histogram,
    commit_latency: Histogram,
    scheduler_queue: Gauge,
    scheduler_attempts: Family<ResultLabels, Counter>,
    placement_latency: Histogram,
    controller_queue: Family<ControllerLabels, Gauge>,
    reconcile_latency: Family<ControllerLabels, Histogram, fn() -> Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("skiff");
        let api_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "API requests by verb, kind and status code",
            api_requests.clone(),
        );
        let api_latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "api_request_duration_seconds",
            "Time to answer an API request (to the response head, for a watch)",
            api_latency.clone(),
        );
        let open_watches = Gauge::default();
        registry.register("api_open_watches", "Watches open now", open_watches.clone());
        // 1 to 1024 writes, the writer's largest batch.
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "store_write_batch_size",
            "Writes committed together in one transaction",
            batch_size.clone(),
        );
        let commit_latency = latency_histogram();
        registry.register(
            "store_commit_duration_seconds",
            "Time to commit one write batch, from BEGIN through COMMIT, retries included",
            commit_latency.clone(),
        );
        let scheduler_queue = Gauge::default();
        registry.register(
            "scheduler_queue_length",
            "Pods waiting in the scheduler's queue",
            scheduler_queue.clone(),
        );
        let scheduler_attempts = Family::<ResultLabels, Counter>::default();
        registry.register(
            "scheduler_attempts",
            "Scheduling attempts by result",
            scheduler_attempts.clone(),
        );
        let placement_latency = latency_histogram();
        registry.register(
            "scheduler_placement_duration_seconds",
            "Time from a pod entering the queue to its binding being written",
            placement_latency.clone(),
        );
        let controller_queue = Family::<ControllerLabels, Gauge>::default();
        registry.register(
            "controller_queue_depth",
            "Keys waiting in a controller's queue",
            controller_queue.clone(),
        );
        let reconcile_latency =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "controller_reconcile_duration_seconds",
            "Time one reconcile took, by controller",
            reconcile_latency.clone(),
        );
        Self {
            registry,
            api_requests,
            api_latency,
            open_watches,
            batch_size,
            commit_latency,
            scheduler_queue,
            scheduler_attempts,
            placement_latency,
            controller_queue,
            reconcile_latency,
        }
    }

    /// The metrics in Prometheus' text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// One API request answered with `code` after `elapsed`.
    pub fn api_request(
        &self,
        verb: &'static str,
        kind: &'static str,
        code: u16,
        elapsed: Duration,
    ) {
        self.api_requests
            .get_or_create(&RequestLabels { verb, kind, code })
            .inc();
        self.api_latency
            .get_or_create(&RouteLabels { verb, kind })
            .observe(elapsed.as_secs_f64());
    }

    /// A watch was admitted.
    pub fn watch_opened(&self) {
        self.open_watches.inc();
    }

    /// A watch ended.
    pub fn watch_closed(&self) {
        self.open_watches.dec();
    }

    /// The writer committed (or gave up on) a batch of `writes` writes.
    pub fn write_batch(&self, writes: usize, elapsed: Duration) {
        self.batch_size.observe(writes as f64);
        self.commit_latency.observe(elapsed.as_secs_f64());
    }

    /// The scheduler's queue now holds `pods` pods.
    pub fn scheduler_queue(&self, pods: usize) {
        self.scheduler_queue
            .set(i64::try_from(pods).unwrap_or(i64::MAX));
    }

    /// One scheduling attempt, and what it came to.
    pub fn scheduler_attempt(&self, result: Attempt) {
        self.scheduler_attempts
            .get_or_create(&ResultLabels {
                result: result.as_str(),
            })
            .inc();
    }

    /// A pod was bound `elapsed` after it entered the queue.
    pub fn placement(&self, elapsed: Duration) {
        self.placement_latency.observe(elapsed.as_secs_f64());
    }

    /// `controller`'s queue now holds `keys` keys.
    pub fn controller_queue(&self, controller: &'static str, keys: usize) {
        self.controller_queue
            .get_or_create(&ControllerLabels { controller })
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
    }

    /// One reconcile of `controller` took `elapsed`.
    pub fn reconcile(&self, controller: &'static str, elapsed: Duration) {
        self.reconcile_latency
            .get_or_create(&ControllerLabels { controller })
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_named_and_counted_in_the_text_format() {
        let metrics = Metrics::new();
        metrics.api_request("get", "pods", 200, Duration::from_millis(3));
        metrics.api_request("get", "pods", 200, Duration::from_millis(3));
        metrics.watch_opened();
        metrics.write_batch(4, Duration::from_millis(2));
        metrics.scheduler_attempt(Attempt::Bound);
        metrics.controller_queue("deployments", 2);
        let text = metrics.encode();
        for line in [
            "# TYPE skiff_api_requests_total counter",
            r#"skiff_api_requests_total{verb="get",kind="pods",code="200"} 2"#,
            r#"skiff_api_request_duration_seconds_count{verb="get",kind="pods"} 2"#,
            "skiff_api_open_watches 1",
            "skiff_store_write_batch_size_sum 4.0",
            r#"skiff_scheduler_attempts_total{result="bound"} 1"#,
            r#"skiff_controller_queue_depth{controller="deployments"} 2"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
    }
}
