//! The node's usage samples, which `wasmctl top` shows (through the node
//! API's `/stats`, [`NodeStats::summary`]) and the node's metrics report
//! ([`crate::metrics::NodeSource`]).
//!
//! Every [`SAMPLE_INTERVAL`] the sampler reads each running pod's
//! cumulative CPU time, its memory now and the requests it has answered
//! so far, and keeps that sample and the one before it, in memory only.
//! Rates (cores, requests per second) are the difference between the two
//! over the time between them; a pod that leaves is forgotten at the next
//! sample.
//!
//! Where the numbers come from ([`crate::runtimes::meters`]):
//!
//! - a Wasm pod's CPU time is the time its instances spent inside polls
//!   (guest code and the host calls it makes), two monotonic clock reads
//!   (vDSO, no system call) and an atomic add per poll; its memory is its
//!   live instances' linear memories, which their memory limiters keep;
//! - a Linux pod's are its cgroup's (`cpu.stat`'s `usage_usec` and
//!   `memory.current`, or cgroup v1's `cpuacct.usage` and
//!   `memory.usage_in_bytes`), read at each sample;
//! - requests are the ingress's count of a pod's answered requests.
//!
//! Fuel per second is never reported: nodes run without fuel metering (it
//! changes the generated code and costs speed), so there is no fuel to
//! read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use skiff_client::node_api::{NodeSummary, PodSummary};
use tokio::task::JoinHandle;

use crate::agent::NodeContext;
use crate::ingress::LocalPods;
use crate::metrics::{NodeFigures, NodeSource, PodFigures};
use crate::runtimes::meters::{CountsRead, Meters, PodUsage};

/// How often the node samples its pods.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// One running pod, as read at one sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodReading {
    /// What its meter says: identity, run, CPU time, memory, instances.
    pub usage: PodUsage,
    /// Requests answered so far.
    pub requests: u64,
    /// The time those requests took, together.
    pub answered: Duration,
}

/// What the sampler reads the node from.
pub trait Source: Send + Sync + 'static {
    /// Every running pod now.
    fn pods(&self) -> Vec<PodReading>;
    /// Pulls and cache lookups so far.
    fn counts(&self) -> CountsRead;
}

/// A node's running pods, read from its runtimes' meters and its ingress.
struct LiveSource {
    meters: Arc<Meters>,
    local_pods: LocalPods,
}

impl Source for LiveSource {
    fn pods(&self) -> Vec<PodReading> {
        self.meters
            .read()
            .into_iter()
            .map(|usage| {
                let (requests, answered) = self
                    .local_pods
                    .answered_of(&(usage.namespace.clone(), usage.name.clone()));
                PodReading {
                    usage,
                    requests,
                    answered,
                }
            })
            .collect()
    }

    fn counts(&self) -> CountsRead {
        self.meters.counts.read()
    }
}

/// One pod in one sample: what was read, and what it came to since the
/// sample before.
#[derive(Debug, Clone, PartialEq)]
struct PodSample {
    reading: PodReading,
    /// CPU time on this node over every run seen, for the metrics' counter.
    cpu_total: Duration,
    /// Since the sample before; `None` when the pod was not in it.
    cpu_delta: Option<Duration>,
    requests_delta: Option<u64>,
    answered_delta: Option<Duration>,
}

impl PodSample {
    /// `reading` after `before`, the same pod's previous sample, if any.
    fn after(before: Option<&PodSample>, reading: PodReading) -> PodSample {
        let Some(before) = before else {
            return PodSample {
                cpu_total: reading.usage.cpu,
                reading,
                cpu_delta: None,
                requests_delta: None,
                answered_delta: None,
            };
        };
        // A new run's CPU time starts again from zero, within the window.
        let cpu = if reading.usage.run == before.reading.usage.run {
            reading
                .usage
                .cpu
                .checked_sub(before.reading.usage.cpu)
                .unwrap_or(reading.usage.cpu)
        } else {
            reading.usage.cpu
        };
        // The ingress's count starts again when the pod is served anew.
        let (requests, answered) = match reading.requests.checked_sub(before.reading.requests) {
            Some(requests) => (
                requests,
                reading.answered.saturating_sub(before.reading.answered),
            ),
            None => (reading.requests, reading.answered),
        };
        PodSample {
            cpu_total: before.cpu_total + cpu,
            reading,
            cpu_delta: Some(cpu),
            requests_delta: Some(requests),
            answered_delta: Some(answered),
        }
    }
}

#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    /// By uid.
    pods: HashMap<String, PodSample>,
}

#[derive(Debug, Default)]
struct Samples {
    previous: Option<Sample>,
    latest: Option<Sample>,
}

/// The node's sampler and its last two samples.
pub struct NodeStats {
    node: String,
    instance_slots: u64,
    source: Box<dyn Source>,
    samples: Mutex<Samples>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for NodeStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStats")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl NodeStats {
    /// The sampler of a node's pods, every [`SAMPLE_INTERVAL`], feeding its
    /// metrics too. Stopped by [`NodeStats::stop`] (or when dropped).
    pub fn for_node(context: &NodeContext, instance_slots: u32) -> Arc<NodeStats> {
        let source = LiveSource {
            meters: context.runtimes.meters.clone(),
            local_pods: context.local_pods.clone(),
        };
        let stats = Self::start(
            &context.node,
            u64::from(instance_slots),
            source,
            SAMPLE_INTERVAL,
        );
        let weak: Weak<dyn NodeSource> = Arc::downgrade(&stats) as Weak<dyn NodeSource>;
        context.local_pods.metrics().attach_node(weak);
        stats
    }

    /// A sampler reading `source` every `interval`, the first time now.
    pub fn start(
        node: &str,
        instance_slots: u64,
        source: impl Source,
        interval: Duration,
    ) -> Arc<NodeStats> {
        let stats = Arc::new(Self::new(node, instance_slots, source));
        let weak = Arc::downgrade(&stats);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                // Ends with the stats, should they be dropped unstopped.
                let Some(stats) = weak.upgrade() else { return };
                // Off the async workers: a Linux pod's cgroup files are
                // read synchronously, and may be slow under memory
                // pressure.
                let sampled =
                    tokio::task::spawn_blocking(move || stats.sample(Instant::now())).await;
                if let Err(e) = sampled {
                    tracing::warn!("sampling the node's usage failed: {e}");
                }
            }
        });
        *stats.task.lock().expect("stats task lock") = Some(task);
        stats
    }

    /// A sampler that samples only when told to ([`NodeStats::sample`]).
    fn new(node: &str, instance_slots: u64, source: impl Source) -> Self {
        Self {
            node: node.to_owned(),
            instance_slots,
            source: Box::new(source),
            samples: Mutex::default(),
            task: Mutex::default(),
        }
    }

    /// Ends the sampling task; the last samples stay readable.
    pub async fn stop(&self) {
        let task = self.task.lock().expect("stats task lock").take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Takes a sample, at `at`: the latest becomes the previous one, and
    /// pods not read now are forgotten.
    fn sample(&self, at: Instant) {
        let readings = self.source.pods();
        let mut samples = self.samples.lock().expect("samples lock");
        let before = samples.latest.take();
        let pods = readings
            .into_iter()
            .map(|reading| {
                let previous = before.as_ref().and_then(|s| s.pods.get(&reading.usage.uid));
                (
                    reading.usage.uid.clone(),
                    PodSample::after(previous, reading),
                )
            })
            .collect();
        samples.previous = before;
        samples.latest = Some(Sample { at, pods });
    }

    /// The node's usage over its last sampling window: zero rates until
    /// there are two samples, and for a pod not in both.
    pub fn summary(&self) -> NodeSummary {
        let samples = self.samples.lock().expect("samples lock");
        let mut summary = NodeSummary {
            node: self.node.clone(),
            instance_slots: self.instance_slots,
            ..NodeSummary::default()
        };
        let Some(latest) = &samples.latest else {
            return summary;
        };
        let window = samples
            .previous
            .as_ref()
            .map(|previous| latest.at.saturating_duration_since(previous.at))
            .filter(|window| !window.is_zero());
        summary.window_seconds = window.map_or(0.0, |w| w.as_secs_f64());
        let per_second = |amount: Option<f64>| match (amount, window) {
            (Some(amount), Some(window)) => amount / window.as_secs_f64(),
            _ => 0.0,
        };
        for pod in latest.pods.values() {
            let reading = &pod.reading;
            let cpu_cores = per_second(pod.cpu_delta.map(|d| d.as_secs_f64()));
            summary.cpu_cores += cpu_cores;
            summary.memory_bytes += reading.usage.memory_bytes;
            summary.instances_in_use += reading.usage.instances;
            summary.pods.push(PodSummary {
                namespace: reading.usage.namespace.clone(),
                name: reading.usage.name.clone(),
                uid: reading.usage.uid.clone(),
                cpu_cores,
                memory_bytes: reading.usage.memory_bytes,
                requests_per_second: per_second(pod.requests_delta.map(|n| n as f64)),
                mean_response_seconds: match (pod.requests_delta, pod.answered_delta) {
                    (Some(requests), Some(answered)) if requests > 0 => {
                        Some(answered.as_secs_f64() / requests as f64)
                    }
                    _ => None,
                },
                // Nodes meter no fuel (see the module's notes).
                fuel_per_second: None,
            });
        }
        summary
            .pods
            .sort_by(|a, b| (&a.namespace, &a.name, &a.uid).cmp(&(&b.namespace, &b.name, &b.uid)));
        summary
    }
}

impl NodeSource for NodeStats {
    fn figures(&self) -> NodeFigures {
        let mut figures = NodeFigures {
            counts: self.source.counts(),
            instance_slots: self.instance_slots,
            ..NodeFigures::default()
        };
        let samples = self.samples.lock().expect("samples lock");
        // One series per pod name: a pod and its replacement of the same
        // name, running together for a moment, are added up.
        let mut pods: HashMap<(&str, &str), PodFigures> = HashMap::new();
        for pod in samples.latest.iter().flat_map(|s| s.pods.values()) {
            let reading = &pod.reading;
            figures.instances_in_use += reading.usage.instances;
            let entry = pods
                .entry((&reading.usage.namespace, &reading.usage.name))
                .or_insert_with(|| PodFigures {
                    namespace: reading.usage.namespace.clone(),
                    pod: reading.usage.name.clone(),
                    ..PodFigures::default()
                });
            entry.cpu_seconds += pod.cpu_total.as_secs_f64();
            entry.memory_bytes += reading.usage.memory_bytes;
        }
        figures.pods = pods.into_values().collect();
        figures
            .pods
            .sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
        figures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Readings the test sets before each sample.
    #[derive(Clone, Default)]
    struct Fake(Arc<Mutex<Vec<PodReading>>>);

    impl Fake {
        fn set(&self, pods: Vec<PodReading>) {
            *self.0.lock().unwrap() = pods;
        }
    }

    impl Source for Fake {
        fn pods(&self) -> Vec<PodReading> {
            self.0.lock().unwrap().clone()
        }
        fn counts(&self) -> CountsRead {
            CountsRead::default()
        }
    }

    fn pod(uid: &str, run: u64, cpu_ms: u64, memory: u64, requests: u64) -> PodReading {
        PodReading {
            usage: PodUsage {
                namespace: "shop".into(),
                name: format!("web-{uid}"),
                uid: uid.into(),
                run,
                cpu: Duration::from_millis(cpu_ms),
                memory_bytes: memory,
                instances: 1,
            },
            requests,
            // 20 ms a request.
            answered: Duration::from_millis(20 * requests),
        }
    }

    #[test]
    fn rates_are_the_difference_of_two_samples_over_their_window() {
        let fake = Fake::default();
        let stats = NodeStats::new("n1", 100, fake.clone());
        let t0 = Instant::now();
        assert_eq!(stats.summary().window_seconds, 0.0);

        fake.set(vec![pod("a", 1, 1_000, 4096, 10), pod("b", 1, 0, 0, 0)]);
        stats.sample(t0);
        // One sample: memory now, no rates yet.
        let first = stats.summary();
        assert_eq!(
            (first.window_seconds, first.cpu_cores, first.memory_bytes),
            (0.0, 0.0, 4096)
        );
        assert_eq!(first.pods[0].requests_per_second, 0.0);

        // Five seconds on (the fake clock): a used 2.5 s of CPU (half a
        // core) and answered 50 requests (10/s); b restarted, its new run
        // having used 1 s; c is new.
        fake.set(vec![
            pod("a", 1, 3_500, 8192, 60),
            pod("b", 2, 1_000, 100, 0),
            pod("c", 1, 400, 0, 3),
        ]);
        stats.sample(t0 + Duration::from_secs(5));
        let summary = stats.summary();
        assert_eq!(summary.node, "n1");
        assert_eq!(summary.window_seconds, 5.0);
        assert_eq!(summary.instance_slots, 100);
        assert_eq!(summary.instances_in_use, 3);
        assert_eq!(summary.memory_bytes, 8192 + 100);
        let by_uid = |uid: &str| summary.pods.iter().find(|p| p.uid == uid).unwrap().clone();
        let a = by_uid("a");
        assert!((a.cpu_cores - 0.5).abs() < 1e-9, "{a:?}");
        assert!((a.requests_per_second - 10.0).abs() < 1e-9, "{a:?}");
        // The window's 50 requests took 1 s together: 20 ms each.
        let mean = a.mean_response_seconds.expect("a mean time");
        assert!((mean - 0.020).abs() < 1e-9, "{a:?}");
        // No request in the window, no mean (not a mean of zero).
        assert_eq!(by_uid("b").mean_response_seconds, None);
        assert_eq!(a.fuel_per_second, None);
        assert!((by_uid("b").cpu_cores - 0.2).abs() < 1e-9);
        // Not in the window's first sample: no rate.
        assert_eq!(by_uid("c").cpu_cores, 0.0);
        assert!((summary.cpu_cores - 0.7).abs() < 1e-9);

        // The metrics' CPU counter adds runs up: b's 0 s then 1 s.
        let figures = stats.figures();
        let cpu = |name: &str| {
            figures
                .pods
                .iter()
                .find(|p| p.pod == name)
                .unwrap()
                .cpu_seconds
        };
        assert!((cpu("web-a") - 3.5).abs() < 1e-9);
        assert!((cpu("web-b") - 1.0).abs() < 1e-9);

        // a left: forgotten at the next sample.
        fake.set(vec![pod("b", 2, 1_500, 100, 0)]);
        stats.sample(t0 + Duration::from_secs(10));
        let summary = stats.summary();
        assert_eq!(summary.pods.len(), 1);
        assert!((summary.pods[0].cpu_cores - 0.1).abs() < 1e-9);
        assert_eq!(stats.figures().pods.len(), 1);
    }

    #[test]
    fn a_counter_that_starts_again_counts_from_zero() {
        let before = PodSample::after(None, pod("a", 1, 2_000, 0, 40));
        // The ingress forgot the pod's series and counts again from 0.
        let after = PodSample::after(Some(&before), pod("a", 1, 2_500, 0, 5));
        assert_eq!(after.requests_delta, Some(5));
        assert_eq!(after.cpu_delta, Some(Duration::from_millis(500)));
        assert_eq!(after.cpu_total, Duration::from_millis(2_500));
    }

    #[tokio::test]
    async fn the_sampler_samples_on_its_own_until_stopped() {
        let fake = Fake::default();
        fake.set(vec![pod("a", 1, 0, 1, 0)]);
        let stats = NodeStats::start("n1", 1, fake.clone(), Duration::from_millis(10));
        let sampled = tokio::time::timeout(Duration::from_secs(10), async {
            while stats.summary().window_seconds == 0.0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert!(sampled.await.is_ok(), "no two samples taken");
        stats.stop().await;
        fake.set(Vec::new());
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Stopped: the pod that left is still in the last sample.
        assert_eq!(stats.summary().pods.len(), 1);
    }
}
