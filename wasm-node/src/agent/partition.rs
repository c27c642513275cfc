//! The node's lease, and what the node does while it is cut off from the
//! control plane.
//!
//! A node that cannot renew its lease keeps running its pods: the control
//! plane marks it NotReady once the lease has gone unrenewed for its
//! duration and evicts its pods (after `--pod-eviction-timeout`, 0 by
//! default), and their owners replace them elsewhere, so they may run
//! twice. A pod with `partitionPolicy: Stop` must not: the node stops it
//! itself before the control plane may evict it, and starts it again once
//! a renewal succeeds, if it is still bound here.
//!
//! The node starts lapsed: a node that (re)starts while cut off would
//! otherwise start its `Stop` pods from the list it got at registration
//! while the control plane, which has seen no renewal, evicts and replaces
//! them. They are held back until the first renewal sent from this start
//! succeeds; the first is sent at once, so a node that reaches its control
//! plane starts them without waiting.
//!
//! The ordering, with `D` the lease duration and `I` the renewal interval:
//! the control plane evicts no sooner than `D` after it saw the last
//! renewal, which it saw after the node sent it. The node counts from when
//! it sent its last successful renewal, stops such pods at `D − I`, and
//! gives their requests in flight at most `I/2`, then ends those still
//! running (the runtime's stop does, as for every stop): they are gone by
//! `D − I/2`, before any eviction (with the defaults, 2 s and 6 s: the
//! stop begins 4 s after the last renewal, ends by 5 s, eviction no sooner
//! than 6 s).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_api::Kind;
use skiff_api::kinds::pod::{PartitionPolicy, Pod};
use tokio::sync::watch;
use tokio::time::Instant;

use super::pod::{self, PodHandle};
use super::{AgentConfig, NodeContext};
use crate::ingress::PodName;

type Pods = Arc<tokio::sync::Mutex<HashMap<PodName, PodHandle>>>;

/// Whether the node takes its lease for lapsed, and which `Stop` pods it
/// stopped for that reason.
pub struct Partition {
    lapsed: AtomicBool,
    /// Pods stopped (or not started) while lapsed, by name, with their uid.
    suspended: Mutex<HashMap<PodName, String>>,
}

impl Default for Partition {
    /// Lapsed: a node (re)started has renewed nothing yet, and the control
    /// plane may be evicting its pods already; `Stop` pods wait for the
    /// first renewal sent from this start.
    fn default() -> Self {
        Partition {
            lapsed: AtomicBool::new(true),
            suspended: Mutex::default(),
        }
    }
}

impl Partition {
    /// Whether `pod` may not run now: it stops when cut off, and the node
    /// is. The caller holds the pods' lock, so this and [`Self::lapse`]
    /// do not interleave.
    pub(super) fn holds_back(&self, key: &PodName, pod: &Pod) -> bool {
        if pod.spec.partition_policy != PartitionPolicy::Stop || !self.lapsed.load(Ordering::SeqCst)
        {
            return false;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.suspended().insert(key.clone(), uid);
        true
    }

    /// The pod is gone, or runs again: nothing to start later.
    pub(super) fn forget(&self, key: &PodName) {
        self.suspended().remove(key);
    }

    /// Keeps only the suspended pods `wanted` still binds here, by uid.
    pub(super) fn retain(&self, wanted: &HashMap<PodName, String>) {
        self.suspended()
            .retain(|key, uid| wanted.get(key) == Some(uid));
    }

    fn suspended(&self) -> std::sync::MutexGuard<'_, HashMap<PodName, String>> {
        self.suspended.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// When the node gives up on its lease, and how long the pods it stops
/// then may finish requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timing {
    lapse_after: Duration,
    stop_grace: Duration,
}

impl Timing {
    fn of(interval: Duration, duration: Duration, grace: Duration) -> Timing {
        Timing {
            lapse_after: duration.saturating_sub(interval),
            stop_grace: (interval / 2).min(grace),
        }
    }
}

/// Renews the lease every interval (one small row per renewal, not a Node
/// write) and stops or restarts `Stop` pods as renewals fail and succeed.
pub(super) async fn keep_lease(config: AgentConfig, context: Arc<NodeContext>, pods: Pods) {
    let timing = Timing::of(config.lease_interval, config.lease_duration, config.grace);
    let (renewed, renewals) = watch::channel(None);
    let node = NodePods {
        context: &context,
        pods: &pods,
    };
    tokio::join!(
        renew(&config, renewed),
        guard(&context.partition, &node, renewals, timing)
    );
}

/// What the guard does to the pods as the lease lapses and heals.
trait Guarded {
    /// Stops every `Stop` pod, taking the lease for lapsed.
    fn lapse(&self, timing: Timing) -> impl std::future::Future<Output = ()> + Send;
    /// Starts the suspended pods still bound here.
    fn heal(&self) -> impl std::future::Future<Output = ()> + Send;
}

/// The node's own pods.
struct NodePods<'a> {
    context: &'a Arc<NodeContext>,
    pods: &'a Pods,
}

impl Guarded for NodePods<'_> {
    async fn lapse(&self, timing: Timing) {
        lapse(self.context, self.pods, timing).await;
    }

    async fn heal(&self) {
        heal(self.context, self.pods).await;
    }
}

/// Renews the lease, publishing when each renewal that succeeded was sent.
async fn renew(config: &AgentConfig, renewed: watch::Sender<Option<Instant>>) {
    let mut ticks = tokio::time::interval(config.lease_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let sent = Instant::now();
        // A link that went silent would hold a renewal forever. A slow one
        // (a node whose cores its guests keep busy, a loaded control plane)
        // still renews the lease when it arrives, so it is given until the
        // lease would lapse here anyway, not just an interval.
        let patience = renewal_patience(config.lease_interval, config.lease_duration);
        let renewal = config
            .client
            .renew_lease(&config.name, config.lease_duration);
        match tokio::time::timeout(patience, renewal).await {
            Ok(Ok(_)) => {
                renewed.send_replace(Some(sent));
            }
            Ok(Err(e)) => tracing::debug!("lease not renewed: {e}"),
            Err(_) => tracing::debug!("lease not renewed: no answer within {patience:?}"),
        }
    }
}

/// How long one renewal may take: until the lease would lapse on the node
/// (duration − interval), and at least an interval.
fn renewal_patience(interval: Duration, duration: Duration) -> Duration {
    duration.saturating_sub(interval).max(interval)
}

/// Lapses the lease `lapse_after` past the last successful renewal, and
/// heals when one succeeds again. The node starts lapsed, so the first
/// renewal of this start is what lets `Stop` pods run.
async fn guard(
    partition: &Partition,
    pods: &impl Guarded,
    mut renewals: watch::Receiver<Option<Instant>>,
    timing: Timing,
) {
    loop {
        if partition.lapsed.load(Ordering::SeqCst) {
            if renewals.changed().await.is_err() {
                return;
            }
            tracing::info!("lease renewed: starting the pods held back until then");
            partition.lapsed.store(false, Ordering::SeqCst);
            pods.heal().await;
            continue;
        }
        let Some(renewed) = *renewals.borrow_and_update() else {
            // Not lapsed without a renewal: not reached, the node starts
            // lapsed; wait for one all the same.
            if renewals.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            biased;
            changed = renewals.changed() => {
                if changed.is_err() {
                    return;
                }
                // A renewal after a heal that could not confirm every pod.
                if !partition.suspended().is_empty() {
                    pods.heal().await;
                }
            }
            () = tokio::time::sleep_until(renewed + timing.lapse_after) => {
                pods.lapse(timing).await;
            }
        }
    }
}

/// Stops every `Stop` pod, keeping their names to start them again.
async fn lapse(context: &NodeContext, pods: &Pods, timing: Timing) {
    let stopping: Vec<PodHandle> = {
        let mut pods = pods.lock().await;
        context.partition.lapsed.store(true, Ordering::SeqCst);
        let keys: Vec<PodName> = pods
            .iter()
            .filter(|(_, handle)| handle.partition_policy == PartitionPolicy::Stop)
            .map(|(key, _)| key.clone())
            .collect();
        let mut suspended = context.partition.suspended();
        keys.into_iter()
            .filter_map(|key| {
                let handle = pods.remove(&key)?;
                suspended.insert(key, handle.uid.clone());
                Some(handle)
            })
            .collect()
    };
    tracing::warn!(
        "lease not renewed for {:?}: stopping {} pod(s) with partitionPolicy Stop before the control plane may evict them",
        timing.lapse_after,
        stopping.len()
    );
    futures::future::join_all(
        stopping
            .into_iter()
            .map(|handle| handle.stop_within(timing.stop_grace)),
    )
    .await;
}

/// Starts the suspended pods the control plane still binds here, by the
/// same uid (an evicted pod is gone, and its replacement runs elsewhere).
/// A pod the control plane could not be asked about stays suspended for
/// the next renewal.
async fn heal(context: &Arc<NodeContext>, pods: &Pods) {
    let suspended: Vec<(PodName, String)> = context
        .partition
        .suspended()
        .iter()
        .map(|(key, uid)| (key.clone(), uid.clone()))
        .collect();
    for ((namespace, name), uid) in suspended {
        let read = context.client.get(Kind::Pod, Some(&namespace), &name);
        let current = match tokio::time::timeout(Duration::from_secs(5), read).await {
            Ok(Ok(object)) => serde_json::from_value::<Pod>(object).ok(),
            Ok(Err(e)) if e.is_not_found() => None,
            Ok(Err(e)) => {
                tracing::debug!("pod {namespace}/{name}: cannot read it back yet: {e}");
                continue;
            }
            Err(_) => continue,
        };
        let key = (namespace, name);
        let mut pods = pods.lock().await;
        // The watch may have settled it meanwhile (deleted, or started).
        if context.partition.suspended().get(&key) != Some(&uid) {
            continue;
        }
        context.partition.forget(&key);
        let Some(pod) = current.filter(|p| {
            p.metadata.uid.as_deref() == Some(uid.as_str()) && p.spec.node_name == context.node
        }) else {
            continue;
        };
        // Read here, not from the watch: a relist older than this read
        // must leave it to the watch (see `PodWatchPosition`).
        let seen = pod
            .metadata
            .resource_version
            .as_deref()
            .and_then(|r| r.parse().ok());
        pods.entry(key).or_insert_with(|| {
            let mut handle = pod::spawn(context.clone(), pod);
            handle.seen_outside_watch = seen;
            handle
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guard's actions, recorded; a lapse takes the lease for lapsed
    /// as the node's does.
    struct Recorded<'a> {
        partition: &'a Partition,
        actions: Mutex<Vec<&'static str>>,
    }

    impl Recorded<'_> {
        fn actions(&self) -> Vec<&'static str> {
            self.actions.lock().unwrap().clone()
        }
    }

    impl Guarded for Recorded<'_> {
        async fn lapse(&self, _timing: Timing) {
            self.partition.lapsed.store(true, Ordering::SeqCst);
            self.actions.lock().unwrap().push("lapse");
        }

        async fn heal(&self) {
            self.actions.lock().unwrap().push("heal");
        }
    }

    fn pod(name: &str, policy: PartitionPolicy) -> (PodName, Pod) {
        let mut pod = Pod::default();
        pod.metadata.name = name.into();
        pod.metadata.namespace = "default".into();
        pod.metadata.uid = Some(format!("uid-{name}"));
        pod.spec.partition_policy = policy;
        (("default".into(), name.into()), pod)
    }

    /// Drives `guard` for `time` of the (paused) clock.
    async fn run_for(guard: &mut std::pin::Pin<&mut impl Future<Output = ()>>, time: Duration) {
        tokio::select! {
            () = guard.as_mut() => panic!("the guard ended"),
            () = tokio::time::sleep(time) => {}
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stop_pods_wait_for_the_first_renewal_of_a_start() {
        let second = Duration::from_secs(1);
        let timing = Timing::of(second, 4 * second, second);
        let partition = Partition::default();
        let (once, stop) = pod("once", PartitionPolicy::Stop);
        let (web, keep) = pod("web", PartitionPolicy::KeepRunning);
        // Registered and listed, nothing renewed yet: the control plane
        // may be evicting the node's pods, so a Stop pod waits.
        assert!(partition.holds_back(&once, &stop));
        assert!(!partition.holds_back(&web, &keep));

        let (renewed, renewals) = watch::channel(None);
        let pods = Recorded {
            partition: &partition,
            actions: Mutex::default(),
        };
        let guard = guard(&partition, &pods, renewals, timing);
        let mut guard = std::pin::pin!(guard);
        // However long the link stays down.
        run_for(&mut guard, 60 * second).await;
        assert!(pods.actions().is_empty());
        assert!(partition.holds_back(&once, &stop));

        // The first renewal lets them start...
        renewed.send_replace(Some(Instant::now()));
        run_for(&mut guard, Duration::from_millis(1)).await;
        assert_eq!(pods.actions(), ["heal"]);
        assert!(!partition.holds_back(&once, &stop));
        // ... until the lease lapses on the node, duration − interval
        // after that renewal was sent.
        run_for(&mut guard, Duration::from_millis(2990)).await;
        assert_eq!(pods.actions(), ["heal"]);
        run_for(&mut guard, Duration::from_millis(20)).await;
        assert_eq!(pods.actions(), ["heal", "lapse"]);
        assert!(partition.holds_back(&once, &stop));
    }

    #[test]
    fn pods_are_stopped_before_the_control_plane_may_evict_them() {
        let interval = Duration::from_secs(2);
        let duration = Duration::from_secs(6);
        let timing = Timing::of(interval, duration, Duration::from_secs(30));
        assert_eq!(timing.lapse_after, Duration::from_secs(4));
        assert_eq!(timing.stop_grace, Duration::from_secs(1));
        assert!(timing.lapse_after + timing.stop_grace < duration);
        // A short node grace is kept.
        let short = Timing::of(interval, duration, Duration::from_millis(100));
        assert_eq!(short.stop_grace, Duration::from_millis(100));
    }

    #[test]
    fn a_slow_renewal_is_waited_for_until_the_lease_would_lapse() {
        let second = Duration::from_secs(1);
        assert_eq!(renewal_patience(2 * second, 6 * second), 4 * second);
        assert_eq!(
            renewal_patience(Duration::from_millis(500), 2 * second),
            Duration::from_millis(1500)
        );
        // Never less than an interval.
        assert_eq!(renewal_patience(2 * second, 3 * second), 2 * second);
    }
}
