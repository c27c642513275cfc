//! The reconcile loop: a controller is one idempotent reconcile
//! function of an object's key, which reads what it needs from the store and
//! writes what differs. The loop wakes it with the keys that watch events
//! point at (deduplicated while queued), again on a periodic resync, again
//! when it asks to be requeued, and again after an error, with a per-object
//! exponential backoff.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::time::Duration;

use serde_json::Value;
use skiff_api::meta::namespace_and_name;
use skiff_api::{EventType, Kind};
use tokio::time::Instant;

use crate::store::{ObjectKey, Store, StoreError};
use crate::watch::{self, WatchHub};

/// How often every object is reconciled even without an event: a safety
/// net for what no event announces (a not-ready pod that left a
/// selector, a node's ingress address changed), not the way controllers
/// learn of changes. It costs every object's reads each period: with
/// 5,000 functions at zero and a period of 30 s, the control plane and
/// Postgres spent half a core on it with nothing happening.
const RESYNC: Duration = Duration::from_secs(300);
/// First and largest pause before an object whose reconcile failed is
/// tried again.
const BACKOFF_BASE: Duration = Duration::from_millis(20);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// What a reconcile asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing more until something changes.
    Done,
    /// Look again after this long even if nothing changes (a deadline).
    RequeueAfter(Duration),
}

pub trait Controller: Send + Sync + 'static {
    /// For log lines.
    const NAME: &'static str;
    /// The kind whose objects are reconciled.
    const KIND: Kind;
    /// Other kinds whose changes concern objects of `KIND`.
    const WATCHES: &'static [Kind];

    /// The objects of `KIND` that a change to `object` (of a watched kind)
    /// concerns.
    fn wakes(
        &self,
        kind: Kind,
        object: &Value,
    ) -> impl Future<Output = Result<Vec<ObjectKey>, StoreError>> + Send;

    /// Drives one object toward what it declares. Must be idempotent: it may
    /// run any number of times, and after a crash at any point.
    fn reconcile(&self, key: &ObjectKey)
    -> impl Future<Output = Result<Action, StoreError>> + Send;
}

/// Keys waiting for a reconcile: each at most once, at the earliest time
/// anyone asked for.
#[derive(Default)]
struct Queue {
    ready: VecDeque<ObjectKey>,
    queued: HashSet<ObjectKey>,
    delayed: BTreeMap<(Instant, u64), ObjectKey>,
    sequence: u64,
    failures: HashMap<ObjectKey, u32>,
}

impl Queue {
    fn add(&mut self, key: ObjectKey) {
        if self.queued.insert(key.clone()) {
            self.ready.push_back(key);
        }
    }

    fn add_at(&mut self, key: ObjectKey, at: Instant) {
        self.sequence += 1;
        self.delayed.insert((at, self.sequence), key);
    }

    fn add_after(&mut self, key: ObjectKey, delay: Duration) {
        self.add_at(key, Instant::now() + delay);
    }

    /// Queues `keys` evenly over the first nine tenths of `period` from
    /// `now`, so that a resync of thousands of objects is a steady trickle,
    /// not a burst that holds up every other controller's writes.
    fn spread(&mut self, keys: Vec<ObjectKey>, now: Instant, period: Duration) {
        let n = u32::try_from(keys.len()).unwrap_or(u32::MAX).max(1);
        let step = period.mul_f64(0.9) / n;
        for (i, key) in keys.into_iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            self.add_at(key, now + step.saturating_mul(i));
        }
    }

    /// Moves delayed keys that are due by `now` to the ready queue.
    fn promote(&mut self, now: Instant) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.add(key);
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.delayed.keys().next().map(|(at, _)| *at)
    }

    fn pop(&mut self) -> Option<ObjectKey> {
        let key = self.ready.pop_front()?;
        self.queued.remove(&key);
        Some(key)
    }

    /// The pause before retrying `key` after its `n`th failure in a row.
    fn backoff(&mut self, key: &ObjectKey) -> Duration {
        let failures = self.failures.entry(key.clone()).or_default();
        *failures = failures.saturating_add(1);
        BACKOFF_BASE
            .saturating_mul(1 << (*failures - 1).min(16))
            .min(BACKOFF_CAP)
    }
}

fn key_of(kind: Kind, object: &Value) -> ObjectKey {
    let (namespace, name) = namespace_and_name(object);
    ObjectKey::new(kind, &namespace, &name)
}

/// One term of leadership of `controller`: reconciles every object once,
/// then as events, requeues and resyncs ask. Ends (for the leadership loop
/// to start afresh) only if a watch ends.
pub async fn run<C: Controller>(
    store: Store,
    hub: WatchHub,
    controller: C,
) -> Result<(), StoreError> {
    let mut queue = Queue::default();
    let revision = store
        .scan(C::KIND, |object| queue.add(key_of(C::KIND, &object)))
        .await?;
    let kinds: Vec<Kind> = std::iter::once(C::KIND)
        .chain(C::WATCHES.iter().copied())
        .collect();
    let (_watches, mut events) = watch::follow_kinds(&store, &hub, &kinds, revision);
    let mut resync = tokio::time::interval(RESYNC);
    resync.tick().await;
    loop {
        // Take in everything that has happened before choosing what to do
        // next, so that a burst of events about one object costs one
        // reconcile.
        while let Ok((kind, event)) = events.try_recv() {
            wake(
                &controller,
                &mut queue,
                kind,
                &event.event_type,
                &event.object,
            )
            .await?;
        }
        queue.promote(Instant::now());
        // Keys ready now: what the controller is behind by.
        store.metrics().controller_queue(C::NAME, queue.ready.len());
        if let Some(key) = queue.pop() {
            let started = Instant::now();
            let outcome = controller.reconcile(&key).await;
            store.metrics().reconcile(C::NAME, started.elapsed());
            match outcome {
                Ok(action) => {
                    queue.failures.remove(&key);
                    if let Action::RequeueAfter(delay) = action {
                        queue.add_after(key, delay);
                    }
                }
                Err(e) => {
                    let delay = queue.backoff(&key);
                    tracing::warn!(
                        "{}: {}/{}: {e} (retrying in {delay:?})",
                        C::NAME,
                        key.namespace,
                        key.name
                    );
                    queue.add_after(key, delay);
                }
            }
            continue;
        }
        let due = queue.next_due();
        tokio::select! {
            event = events.recv() => {
                let (kind, event) = event
                    .ok_or_else(|| StoreError::Unavailable(format!("{}: a watch ended", C::NAME)))?;
                wake(&controller, &mut queue, kind, &event.event_type, &event.object).await?;
            }
            () = sleep_until(due) => {}
            _ = resync.tick() => {
                let mut keys = Vec::new();
                store.scan(C::KIND, |object| keys.push(key_of(C::KIND, &object))).await?;
                queue.spread(keys, Instant::now(), RESYNC);
            }
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn wake<C: Controller>(
    controller: &C,
    queue: &mut Queue,
    kind: Kind,
    event_type: &EventType,
    object: &Value,
) -> Result<(), StoreError> {
    match event_type {
        EventType::Bookmark => {}
        EventType::Error => {
            return Err(StoreError::Unavailable(format!(
                "{}: the {} watch failed",
                C::NAME,
                kind.name()
            )));
        }
        _ if kind == C::KIND => queue.add(key_of(kind, object)),
        _ => {
            for key in controller.wakes(kind, object).await? {
                queue.add(key);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::Deployment, "default", name)
    }

    #[test]
    fn a_queued_key_is_queued_once() {
        let mut queue = Queue::default();
        queue.add(key("a"));
        queue.add(key("b"));
        queue.add(key("a"));
        assert_eq!(queue.pop(), Some(key("a")));
        assert_eq!(queue.pop(), Some(key("b")));
        assert_eq!(queue.pop(), None);
        // Once taken, it may be queued again.
        queue.add(key("a"));
        assert_eq!(queue.pop(), Some(key("a")));
    }

    #[test]
    fn a_resync_spreads_its_keys_over_the_period_in_order() {
        let mut queue = Queue::default();
        let now = Instant::now();
        let period = Duration::from_secs(100);
        queue.spread((0..10).map(|i| key(&i.to_string())).collect(), now, period);
        // The first at once, the rest 9 s apart, the last within the period.
        queue.promote(now);
        assert_eq!(queue.pop(), Some(key("0")));
        assert_eq!(queue.pop(), None);
        queue.promote(now + Duration::from_secs(9) - Duration::from_millis(1));
        assert_eq!(queue.pop(), None);
        queue.promote(now + Duration::from_secs(9));
        assert_eq!(queue.pop(), Some(key("1")));
        queue.promote(now + Duration::from_secs(81));
        let rest: Vec<ObjectKey> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(
            rest,
            (2..10).map(|i| key(&i.to_string())).collect::<Vec<_>>()
        );
        assert_eq!(queue.next_due(), None);
        // An empty resync queues nothing.
        queue.spread(Vec::new(), now, period);
        assert_eq!(queue.next_due(), None);
    }

    #[test]
    fn backoff_doubles_per_failure_up_to_the_cap_and_is_per_key() {
        let mut queue = Queue::default();
        let delays: Vec<Duration> = (0..14).map(|_| queue.backoff(&key("a"))).collect();
        assert_eq!(delays[0], BACKOFF_BASE);
        assert_eq!(delays[1], BACKOFF_BASE * 2);
        assert_eq!(delays[4], BACKOFF_BASE * 16);
        assert_eq!(*delays.last().unwrap(), BACKOFF_CAP);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(queue.backoff(&key("b")), BACKOFF_BASE);
    }

    #[test]
    fn delayed_keys_become_ready_when_due() {
        let mut queue = Queue::default();
        let start = Instant::now();
        queue.add_at(key("late"), start + Duration::from_secs(2));
        queue.add_at(key("soon"), start + Duration::from_secs(1));
        queue.promote(start);
        assert_eq!(queue.pop(), None);
        assert_eq!(queue.next_due(), Some(start + Duration::from_secs(1)));
        queue.promote(start + Duration::from_millis(1500));
        assert_eq!(queue.pop(), Some(key("soon")));
        assert_eq!(queue.pop(), None);
        queue.promote(start + Duration::from_secs(2));
        assert_eq!(queue.pop(), Some(key("late")));
    }
}
