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
//! The ordering, with `D` the lease duration and `I` the renewal interval:
//! the control plane evicts no sooner than `D` after it saw the last
//! renewal, which it saw after the node sent it. The node counts from when
//! it sent its last successful renewal, stops such pods at `D − I`, and
//! gives their requests in flight at most `I/2`: they are gone by
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
#[derive(Default)]
pub struct Partition {
    lapsed: AtomicBool,
    /// Pods stopped (or not started) while lapsed, by name, with their uid.
    suspended: Mutex<HashMap<PodName, String>>,
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
    tokio::join!(
        renew(&config, renewed),
        guard(&context, &pods, renewals, timing)
    );
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
/// heals when one succeeds again.
async fn guard(
    context: &Arc<NodeContext>,
    pods: &Pods,
    mut renewals: watch::Receiver<Option<Instant>>,
    timing: Timing,
) {
    let partition = &context.partition;
    loop {
        if partition.lapsed.load(Ordering::SeqCst) {
            if renewals.changed().await.is_err() {
                return;
            }
            tracing::info!("lease renewed again: starting the pods stopped meanwhile");
            partition.lapsed.store(false, Ordering::SeqCst);
            heal(context, pods).await;
            continue;
        }
        let Some(renewed) = *renewals.borrow_and_update() else {
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
                    heal(context, pods).await;
                }
            }
            () = tokio::time::sleep_until(renewed + timing.lapse_after) => {
                lapse(context, pods, timing).await;
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
        pods.entry(key)
            .or_insert_with(|| pod::spawn(context.clone(), pod));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
