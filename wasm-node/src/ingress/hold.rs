//! Requests held for a Service at zero.
//!
//! A Service whose status says it scales from zero (an autoscaled
//! Deployment behind it may have no pods) and that has no ready endpoint
//! does not answer 503 at once: its requests wait here, the control plane
//! is asked (by the [`Activator`] the agent sets) to start a pod, and when
//! the Service's endpoints arrive by the node's watch the held requests go
//! on, in the order they came. The wait is bounded twice: at most
//! [`HoldConfig::max_held`] requests per Service (beyond it, 503 with
//! `Retry-After`) and at most [`HoldConfig::max_wait`] each (then 503);
//! a Service whose status names why its pods cannot start answers its
//! held requests with that reason at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::PodName;

/// Tells the control plane that a Service at zero has a request waiting:
/// `(namespace, service)`. Must not block; the agent sends it on a task.
pub type Activator = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// How long a held request waits, and how many may.
#[derive(Debug, Clone, Copy)]
pub struct HoldConfig {
    pub max_held: usize,
    pub max_wait: Duration,
}

impl Default for HoldConfig {
    fn default() -> Self {
        Self {
            max_held: 1000,
            max_wait: Duration::from_secs(30),
        }
    }
}

/// How often a Service is asked for again while requests still wait:
/// one lost call, or a scale-down that raced the first, is made good.
const ASK_AGAIN: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Waiting {
    held: usize,
    asked: Option<Instant>,
}

pub(super) struct Holds {
    config: HoldConfig,
    waiting: Mutex<HashMap<PodName, Waiting>>,
    /// Bumped whenever a Service changes or a local pod becomes Ready, so
    /// holders look again.
    changed: Arc<watch::Sender<u64>>,
    activator: OnceLock<Activator>,
}

impl Holds {
    pub(super) fn new(config: HoldConfig, changed: Arc<watch::Sender<u64>>) -> Self {
        Self {
            config,
            waiting: Mutex::default(),
            changed,
            activator: OnceLock::new(),
        }
    }

    pub(super) fn config(&self) -> HoldConfig {
        self.config
    }

    pub(super) fn set_activator(&self, activator: Activator) {
        let _ = self.activator.set(activator);
    }

    /// A Service changed: holders look at it again.
    pub(super) fn changed(&self) {
        if self.changed.receiver_count() > 0 {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Holds one more request for `service`, unless it holds its most.
    pub(super) fn enter(self: &Arc<Self>, service: &PodName) -> Option<Held> {
        let mut waiting = self.waiting.lock().expect("holds lock");
        let entry = waiting.entry(service.clone()).or_default();
        if entry.held >= self.config.max_held {
            return None;
        }
        entry.held += 1;
        Some(Held {
            holds: self.clone(),
            service: service.clone(),
        })
    }

    /// Asks for `service` to be started, unless that was asked within
    /// [`ASK_AGAIN`].
    pub(super) fn ask(&self, service: &PodName) {
        let now = Instant::now();
        {
            let mut waiting = self.waiting.lock().expect("holds lock");
            let Some(entry) = waiting.get_mut(service) else {
                return;
            };
            if entry.asked.is_some_and(|at| now < at + ASK_AGAIN) {
                return;
            }
            entry.asked = Some(now);
        }
        match self.activator.get() {
            Some(activate) => activate(&service.0, &service.1),
            None => tracing::debug!(
                "service {}/{} is at zero and nothing here can start it",
                service.0,
                service.1
            ),
        }
    }

    /// Requests held now, by Service.
    pub(super) fn held(&self) -> Vec<(PodName, usize)> {
        let waiting = self.waiting.lock().expect("holds lock");
        waiting
            .iter()
            .map(|(service, w)| (service.clone(), w.held))
            .collect()
    }
}

/// One held request, counted until dropped.
pub(super) struct Held {
    holds: Arc<Holds>,
    service: PodName,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut waiting = self.holds.waiting.lock().expect("holds lock");
        if let Some(entry) = waiting.get_mut(&self.service) {
            entry.held -= 1;
            if entry.held == 0 {
                waiting.remove(&self.service);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn service() -> PodName {
        ("shop".into(), "web".into())
    }

    #[test]
    fn a_service_holds_at_most_its_share_and_a_dropped_hold_frees_its_place() {
        let holds = Arc::new(Holds::new(
            HoldConfig {
                max_held: 2,
                max_wait: Duration::from_secs(1),
            },
            Arc::default(),
        ));
        let first = holds.enter(&service()).expect("room for one");
        let _second = holds.enter(&service()).expect("room for two");
        assert!(holds.enter(&service()).is_none(), "a third is refused");
        assert!(
            holds.enter(&("shop".into(), "other".into())).is_some(),
            "another Service has a share of its own"
        );
        drop(first);
        assert!(holds.enter(&service()).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_is_asked_for_once_a_second_while_requests_wait() {
        let holds = Arc::new(Holds::new(HoldConfig::default(), Arc::default()));
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        holds.set_activator(Arc::new(move |namespace, name| {
            assert_eq!((namespace, name), ("shop", "web"));
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        let held = holds.enter(&service()).unwrap();
        holds.ask(&service());
        holds.ask(&service());
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        tokio::time::advance(ASK_AGAIN).await;
        holds.ask(&service());
        assert_eq!(asked.load(Ordering::SeqCst), 2);
        drop(held);
        // Nothing waits: nothing is asked.
        tokio::time::advance(ASK_AGAIN).await;
        holds.ask(&service());
        assert_eq!(asked.load(Ordering::SeqCst), 2);
    }
}
