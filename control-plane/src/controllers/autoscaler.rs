//! The autoscaler: sets the `replicas` of every Deployment with
//! `spec.autoscaling` from the concurrency its pods see.
//!
//! Once a second the leader asks every Ready node's API for its ingress's
//! load (`/load`): per pod, requests in flight and the running totals of
//! requests answered and of the time they took; per Service at zero, the
//! requests held for it. The time taken grows, over a window, by the mean
//! concurrency times the window (Little's law), which catches requests of
//! microseconds that a sampled in-flight count would miss. Samples live
//! in memory only: no durable write but a changed `replicas`.
//!
//! [`decide`] is the whole policy, without I/O: a stable window (60 s) and
//! a panic window (6 s) as Knative's; a burst that wants twice the pods
//! there are enters panic mode, which scales up at once (to what the
//! newest sample wants, if more than the panic window's mean) and never
//! down for a stable window; a lower load must last `scaleDownDelay` before
//! pods go, and the pods go (down to `minReplicas`) once `scaleDownDelay`
//! has passed without any request. What a node reports counts only for
//! pods the store binds to that node, attributed to their Deployment by
//! the store; a node that does not answer leaves its pods' Deployments
//! unobserved and not scaled down for that tick. A Service at zero with a request waiting does not wait for
//! this loop: the node asks the API to activate it ([`activate`]), which
//! sets one pod at once.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize as _;
use serde_json::Value;
use skiff_api::kinds::deployment::{Autoscaling, Deployment};
use skiff_api::kinds::event::Severity;
use skiff_api::kinds::pod::{LINUX_RUNTIME_LABEL, PREFERRED_NODE_ANNOTATION, PodSpec};
use skiff_api::kinds::service::Service;
use skiff_api::meta::namespace_and_name;
use skiff_api::{EventType, Kind, WatchEvent};
use skiff_client::events::Recorder;
use skiff_client::node_api::{LOAD_PATH, NodeLoad};

use crate::api::node_proxy::NodeProxy;
use crate::scheduler::images::{ImageKey, KnownRuntimes};
use crate::store::{JsonFilter, ListQuery, ObjectKey, Part, Store, StoreError, Write};
use crate::watch::{self, WatchHub};

/// How often nodes are sampled and decisions made.
pub const TICK: Duration = Duration::from_secs(1);
/// The window the steady load is averaged over.
pub const STABLE_WINDOW: f64 = 60.0;
/// The window a burst is seen in.
pub const PANIC_WINDOW: f64 = 6.0;
/// A burst that wants this many times the pods there are is a panic.
pub const PANIC_THRESHOLD: f64 = 2.0;
/// Annotation the activation stamps on a Deployment it takes off zero
/// (RFC 3339): a request arrived then, whatever the samples say.
pub const ACTIVATED_ANNOTATION: &str = "skiff.dev/activated-at";
/// Annotation the activation stamps with the node that asked (removed when
/// a tenant asked): the Deployment's first pod from zero prefers it, so
/// that the node holding the requests serves them itself.
pub const ACTIVATED_ON_ANNOTATION: &str = "skiff.dev/activated-on";

const MAX_LOAD_BYTES: usize = 4 << 20;
/// Held Services taken from one node's answer, and requests per Service:
/// what an honest node can hold, so a lying one moves little more.
const MAX_HELD_ENTRIES: usize = 1000;
const MAX_HELD_PER_NODE: u64 = 1000;
const NODE_DEADLINE: Duration = Duration::from_millis(800);
const FAN_OUT: usize = 16;
/// Owners asked for in one query of the pods to sample.
const OWNERS_PER_QUERY: usize = 200;

/// What the autoscaler remembers of one Deployment, in seconds since the
/// Unix epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    /// When this process began watching the Deployment: nothing is taken
    /// away before it has watched for `scaleDownDelay`.
    pub since: f64,
    /// Mean concurrency per sample, newest last.
    pub samples: VecDeque<(f64, f64)>,
    /// The last time any request was in flight, held or answered.
    pub last_traffic: Option<f64>,
    /// Panic mode lasts until then.
    pub panic_until: Option<f64>,
    /// What each decision wanted, over the last `scaleDownDelay`.
    pub wanted: VecDeque<(f64, u32)>,
}

impl Window {
    pub fn new(now: f64) -> Self {
        Self {
            since: now,
            ..Self::default()
        }
    }

    /// Adds a sample at `now`; any concurrency counts as traffic.
    pub fn observe(&mut self, now: f64, concurrency: f64, traffic: bool) {
        self.samples.push_back((now, concurrency));
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| *at < now - STABLE_WINDOW)
        {
            self.samples.pop_front();
        }
        if traffic || concurrency > 0.0 {
            self.last_traffic = Some(now);
        }
    }

    fn mean_over(&self, now: f64, window: f64) -> f64 {
        let recent: Vec<f64> = self
            .samples
            .iter()
            .filter(|(at, _)| *at > now - window)
            .map(|(_, c)| *c)
            .collect();
        if recent.is_empty() {
            0.0
        } else {
            recent.iter().sum::<f64>() / recent.len() as f64
        }
    }
}

/// The replicas `spec` wants at `now` with `current` running and the
/// load in `window` (which remembers the decision).
pub fn decide(spec: &Autoscaling, current: u32, window: &mut Window, now: f64) -> u32 {
    let target = f64::from(spec.target());
    let delay = spec.delay().as_secs_f64();
    let pods_for = |concurrency: f64| (concurrency / target).ceil().min(1e6) as u32;
    let stable = pods_for(window.mean_over(now, STABLE_WINDOW));
    let panic = pods_for(window.mean_over(now, PANIC_WINDOW));
    if f64::from(panic) >= PANIC_THRESHOLD * f64::from(current.max(1)) && panic > current {
        window.panic_until = Some(now + STABLE_WINDOW);
    }
    // No request for the delay (and watched that long): the last pods go,
    // whatever the 60 s mean still remembers.
    let idle = window.last_traffic.is_none_or(|at| now - at >= delay);
    if idle && now - window.since >= delay {
        window.wanted.clear();
        window.panic_until = None;
        return spec.clamp(0);
    }
    let panicking = window.panic_until.is_some_and(|until| now < until);
    let mut wanted = if panicking {
        // The newest sample too: a step is in the window's mean only a
        // sixth at a time, and panic mode is there not to wait for it.
        let latest = pods_for(window.samples.back().map_or(0.0, |(_, c)| *c));
        panic.max(stable).max(current).max(latest)
    } else {
        stable
    };
    // A request within the delay keeps a pod.
    if window.last_traffic.is_some_and(|at| now - at < delay) {
        wanted = wanted.max(1);
    }
    window.wanted.push_back((now, wanted));
    while window
        .wanted
        .front()
        .is_some_and(|(at, _)| *at <= now - delay)
    {
        window.wanted.pop_front();
    }
    // Down only to the most any decision within the delay wanted, and not
    // at all before this process has watched for the delay.
    let mut replicas = window
        .wanted
        .iter()
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(wanted);
    if now - window.since < delay {
        replicas = replicas.max(current);
    }
    let decided = spec.clamp(replicas);
    if current == 0 {
        // Off zero for load is the activation's to do: a node holding
        // requests asks for it at once, and it writes the first pod with
        // the replicas. Scaling up here on the same held requests raced
        // it, and a Deployment taken off zero this way had its first pod
        // only once the Deployment controller came to it: over a minute,
        // behind thousands of functions waking. `minReplicas` raised is
        // still decided here.
        return decided.min(spec.clamp(0));
    }
    decided
}

/// Loads from one node: the answer, or nothing (the node is not counted
/// this tick).
type Loads = Vec<(String, NodeLoad)>;

/// Previous totals of one pod on one node: requests, busy time, when.
type Totals = (u64, u64, f64);

/// The autoscaler's state: one per leadership term.
pub struct Autoscaler {
    pub store: Store,
    pub proxy: Arc<NodeProxy>,
    pub events: Recorder,
    windows: HashMap<(String, String), Window>,
    totals: HashMap<(String, String), Totals>,
}

/// Runs the autoscaler for the leadership term.
pub async fn run(store: Store, hub: WatchHub, events: Recorder) -> Result<(), StoreError> {
    // The autoscaled Deployments are kept from a watch, not listed and
    // parsed every second: with thousands of functions (most at zero) the
    // list was the tick's largest cost, and a CPU spike a second for every
    // request arriving meanwhile.
    let mut autoscaled = Autoscaled::default();
    let revision = store
        .scan(Kind::Deployment, |object| autoscaled.put(&object))
        .await?;
    let (_watch, mut changes) = watch::follow_kinds(&store, &hub, &[Kind::Deployment], revision);
    let mut autoscaler = Autoscaler {
        store,
        proxy: Arc::new(NodeProxy::new()),
        events,
        windows: HashMap::new(),
        totals: HashMap::new(),
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            change = changes.recv() => {
                let (_, event) = change.ok_or_else(|| {
                    StoreError::Unavailable("autoscaler: the Deployment watch ended".into())
                })?;
                autoscaled.apply(&event)?;
            }
            _ = tick.tick() => {
                // What the watch has delivered so far is in the tick's
                // view; what is still on its way is not, so a scale is
                // conditional on the Deployment being the one decided on
                // (see `Autoscaler::scale`).
                while let Ok((_, event)) = changes.try_recv() {
                    autoscaled.apply(&event)?;
                }
                // A tick that fails (the store did not answer) is tried
                // again next second: ending the term for it would restart
                // every controller. A failed watch does end it, as for the
                // reconcilers, and the next term starts from a fresh scan.
                if let Err(e) = autoscaler.tick(&autoscaled).await {
                    tracing::warn!("autoscaler: {e}; trying again in {TICK:?}");
                }
            }
        }
    }
}

/// The autoscaled Deployments not being deleted, by namespace and name,
/// as the Deployment watch last told of them.
#[derive(Default)]
struct Autoscaled(BTreeMap<(String, String), Deployment>);

impl Autoscaled {
    /// Takes in a Deployment as stored: kept while it autoscales and is
    /// not being deleted, forgotten otherwise.
    fn put(&mut self, object: &Value) {
        let key = namespace_and_name(object);
        let kept = object["spec"]["autoscaling"].is_object()
            && object["metadata"]["deletionTimestamp"].is_null();
        // Read from the object as it is: no copy of every change.
        match kept.then(|| Deployment::deserialize(object).ok()).flatten() {
            Some(deployment) => {
                self.0.insert(key, deployment);
            }
            None => {
                self.0.remove(&key);
            }
        }
    }

    fn apply(&mut self, event: &WatchEvent<Value>) -> Result<(), StoreError> {
        match event.event_type {
            EventType::Added | EventType::Modified => self.put(&event.object),
            EventType::Deleted => {
                self.0.remove(&namespace_and_name(&event.object));
            }
            EventType::Bookmark => {}
            // As for the reconcilers: the term ends and the next starts
            // from a fresh list.
            EventType::Error => {
                return Err(StoreError::Unavailable(
                    "autoscaler: the Deployment watch failed".into(),
                ));
            }
        }
        Ok(())
    }
}

fn unix_now() -> f64 {
    Utc::now().timestamp_micros() as f64 / 1e6
}

impl Autoscaler {
    async fn tick(&mut self, autoscaled: &Autoscaled) -> Result<(), StoreError> {
        let deployments: Vec<&Deployment> = autoscaled.0.values().collect();
        self.windows.retain(|key, _| autoscaled.0.contains_key(key));
        if deployments.is_empty() {
            self.totals.clear();
            return Ok(());
        }
        let pods = self.pods_of(&deployments).await?;
        let (loads, unsampled) = self.sample().await?;
        let now = unix_now();
        let mut concurrency = concurrency_of(&loads, &pods, &mut self.totals, now);
        for (key, held) in self.held_by_deployment(&loads, &deployments).await? {
            let entry = concurrency.entry(key).or_default();
            entry.0 += held as f64;
            entry.1 = true;
        }
        // Deployments with a pod on a node that did not answer: what that
        // node saw is unknown, not nothing, so they are neither observed
        // nor scaled down this tick.
        let blind: HashSet<&(String, String)> = pods
            .values()
            .filter(|(node, _)| unsampled.contains(node))
            .map(|(_, deployment)| deployment)
            .collect();
        for deployment in &deployments {
            let key = (
                deployment.metadata.namespace.clone(),
                deployment.metadata.name.clone(),
            );
            let Some(spec) = &deployment.spec.autoscaling else {
                continue;
            };
            let window = self
                .windows
                .entry(key.clone())
                .or_insert_with(|| Window::new(now));
            let (load, traffic) = concurrency.get(&key).copied().unwrap_or_default();
            let blinded = blind.contains(&key);
            if !blinded {
                window.observe(now, load, traffic);
            }
            if let Some(activated) = deployment
                .metadata
                .annotations
                .get(ACTIVATED_ANNOTATION)
                .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
            {
                let at = activated.timestamp_micros() as f64 / 1e6;
                if window.last_traffic.is_none_or(|last| last < at) {
                    window.last_traffic = Some(at.min(now));
                }
            }
            let current = deployment.spec.replicas.unwrap_or(1);
            let mut wanted = decide(spec, current, window, now);
            if blinded {
                wanted = wanted.max(current);
            }

            if wanted != current {
                self.scale(deployment, current, wanted, load).await?;
            }
        }
        Ok(())
    }

    /// The live pods of `deployments`, by uid: the node each is bound to
    /// and its Deployment, as the store has them.
    async fn pods_of(&self, deployments: &[&Deployment]) -> Result<Bindings, StoreError> {
        let owners: HashMap<&str, &Deployment> = deployments
            .iter()
            .filter_map(|d| Some((d.metadata.uid.as_deref()?, *d)))
            .collect();
        // Only Deployments with pods have pods to sample, and they are
        // found by owner (the `objects_owners` index), not by listing
        // namespaces that may hold thousands of functions at zero.
        let mut active: HashMap<&str, Vec<Value>> = HashMap::new();
        for d in deployments.iter().filter(|d| d.spec.replicas != Some(0)) {
            if let Some(uid) = d.metadata.uid.as_deref() {
                active
                    .entry(d.metadata.namespace.as_str())
                    .or_default()
                    .push(serde_json::json!([{ "uid": uid }]));
            }
        }
        let mut pods = HashMap::new();
        for (namespace, uids) in &active {
            for uids in uids.chunks(OWNERS_PER_QUERY) {
                let page = self
                    .store
                    .list(
                        Kind::Pod,
                        ListQuery {
                            namespace: Some(namespace),
                            json: &[JsonFilter::ContainsAny(
                                &["metadata", "ownerReferences"],
                                uids,
                            )],
                            ..Default::default()
                        },
                    )
                    .await?;
                for pod in page.items {
                    let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
                    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
                    let owner = pod["metadata"]["ownerReferences"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|r| r["kind"] == "Deployment" && r["controller"] == true)
                        .and_then(|r| owners.get(r["uid"].as_str()?));
                    if let Some(owner) = owner
                        && !node.is_empty()
                        && !uid.is_empty()
                    {
                        pods.insert(
                            uid.to_owned(),
                            (
                                node.to_owned(),
                                (
                                    owner.metadata.namespace.clone(),
                                    owner.metadata.name.clone(),
                                ),
                            ),
                        );
                    }
                }
            }
        }
        Ok(pods)
    }

    /// Every Ready node's load, asked of 16 nodes at a time.
    async fn sample(&self) -> Result<(Loads, HashSet<String>), StoreError> {
        use futures::StreamExt as _;
        let nodes = self.store.list(Kind::Node, ListQuery::default()).await?;
        let names: Vec<String> = nodes
            .items
            .iter()
            .filter(|n| {
                n["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        let asks = names.into_iter().map(|node| async move {
            let answer = self
                .proxy
                .get_bytes(&self.store, &node, LOAD_PATH, MAX_LOAD_BYTES, NODE_DEADLINE)
                .await;
            match answer.map(|body| serde_json::from_slice::<NodeLoad>(&body)) {
                Ok(Ok(load)) => Ok((node, load)),
                Ok(Err(e)) => {
                    tracing::debug!("autoscaler: node {node}'s load is not one: {e}");
                    Err(node)
                }
                Err(e) => {
                    tracing::debug!(
                        "autoscaler: node {node}: {}",
                        crate::api::usage::error_text(e)
                    );
                    Err(node)
                }
            }
        });
        let answers: Vec<_> = futures::stream::iter(asks)
            .buffer_unordered(FAN_OUT)
            .collect()
            .await;
        let mut loads = Vec::new();
        let mut unsampled = HashSet::new();
        for answer in answers {
            match answer {
                Ok(load) => loads.push(load),
                Err(node) => {
                    unsampled.insert(node);
                }
            }
        }
        Ok((loads, unsampled))
    }

    /// Requests nodes hold for Services at zero, counted for each
    /// autoscaled Deployment behind the Service.
    async fn held_by_deployment(
        &self,
        loads: &Loads,
        deployments: &[&Deployment],
    ) -> Result<HashMap<(String, String), u64>, StoreError> {
        // Per Service, what all nodes hold, each node's count capped (a
        // node holds at most --hold-requests, 1000 by default); read once.
        let mut per_service: HashMap<(&str, &str), u64> = HashMap::new();
        for (_, load) in loads {
            for h in load.held.iter().take(MAX_HELD_ENTRIES) {
                *per_service
                    .entry((h.namespace.as_str(), h.service.as_str()))
                    .or_default() += h.held.min(MAX_HELD_PER_NODE);
            }
        }
        let mut held = HashMap::new();
        for ((namespace, name), count) in per_service {
            let key = ObjectKey::new(Kind::Service, namespace, name);
            let Some(service) = self.store.get(&key).await? else {
                continue;
            };
            let Ok(service) = serde_json::from_value::<Service>(service) else {
                continue;
            };
            // Only a Service that is at zero holds requests.
            let at_zero = service
                .status
                .as_ref()
                .is_some_and(|s| s.scales_from_zero && s.endpoints.is_empty());
            if !at_zero {
                continue;
            }
            for d in deployments
                .iter()
                .filter(|d| d.metadata.namespace == namespace && selects(&service, d))
            {
                *held
                    .entry((d.metadata.namespace.clone(), d.metadata.name.clone()))
                    .or_default() += count;
            }
        }
        Ok(held)
    }

    async fn scale(
        &self,
        deployment: &Deployment,
        from: u32,
        to: u32,
        load: f64,
    ) -> Result<(), StoreError> {
        let key = ObjectKey::new(
            Kind::Deployment,
            &deployment.metadata.namespace,
            &deployment.metadata.name,
        );
        let written = set_replicas(&self.store, &key, |current| {
            decided_on(current, deployment, from).then_some(to)
        })
        .await?;
        if written.is_some() {
            let object = serde_json::to_value(deployment).expect("a deployment serializes");
            let (reason, message) = match to {
                0 => (
                    "ScaledToZero",
                    format!(
                        "no request for {}",
                        deployment.spec.autoscaling.as_ref().map_or_else(
                            || "30s".into(),
                            |a| skiff_api::quantity::format_duration(a.delay())
                        )
                    ),
                ),
                _ => (
                    "Scaled",
                    format!("replicas {from} -> {to}: concurrency {load:.1}"),
                ),
            };
            self.events.emit(
                skiff_client::events::involved(Kind::Deployment, &object),
                Severity::Normal,
                reason,
                message,
            );
        }
        Ok(())
    }
}

/// Whether `current`, the Deployment as stored now, is still the one a
/// decision was made on (`decided`, at `from` replicas): not only its
/// replica count, since the watch the decision read may be behind an
/// activation (a new activation time), the end of its autoscaling, or its
/// replacement under the same name.
fn decided_on(current: &Value, decided: &Deployment, from: u32) -> bool {
    let activated = decided.metadata.annotations.get(ACTIVATED_ANNOTATION);
    current["metadata"]["uid"].as_str() == decided.metadata.uid.as_deref()
        && current["spec"]["autoscaling"].is_object()
        && current["metadata"]["annotations"][ACTIVATED_ANNOTATION].as_str()
            == activated.map(String::as_str)
        && current["spec"]["replicas"].as_u64() == Some(u64::from(from))
}

/// Which Deployment (namespace, name) a pod belongs to and the node it is
/// bound to, by pod uid, as the store has them.
type Bindings = HashMap<String, (String, (String, String))>;

/// The mean concurrency and whether there was traffic since the last
/// sample, per Deployment, from the nodes' `loads`; `totals` keeps each
/// pod's running totals between samples. What a node reports counts only
/// for pods the store binds to that node, attributed to the Deployment
/// the store names: a node cannot lend load to anyone else's.
fn concurrency_of(
    loads: &Loads,
    pods: &Bindings,
    totals: &mut HashMap<(String, String), Totals>,
    now: f64,
) -> HashMap<(String, String), (f64, bool)> {
    let mut concurrency: HashMap<(String, String), (f64, bool)> = HashMap::new();
    let mut seen = HashSet::new();
    for (node, load) in loads {
        for pod in &load.pods {
            let Some((bound_to, deployment)) = pods.get(&pod.uid) else {
                continue;
            };
            if bound_to != node || !seen.insert((node.clone(), pod.uid.clone())) {
                continue;
            }
            // The window is the node's own time between its readings when
            // it says (the way a sample takes varies), else ours.
            let read_at = if pod.at_nanos > 0 {
                pod.at_nanos as f64 / 1e9
            } else {
                now
            };
            // A pod seen for the first time began at zero when the node
            // began to serve it (if the node says; else a tick ago): its
            // first seconds are not one tick's load.
            let began = if pod.at_nanos > 0 && pod.began_nanos > 0 {
                pod.began_nanos as f64 / 1e9
            } else {
                read_at - TICK.as_secs_f64()
            };
            let (requests, busy, at) = totals
                .insert(
                    (node.clone(), pod.uid.clone()),
                    (pod.requests, pod.busy_nanos, read_at),
                )
                .unwrap_or((0, 0, began));
            let mean = if read_at > at {
                pod.busy_nanos.saturating_sub(busy) as f64 / 1e9 / (read_at - at)
            } else {
                0.0
            };
            let entry = concurrency.entry(deployment.clone()).or_default();
            // The mean alone: the time of requests in flight is in it as
            // it accrues, and adding each pod's instantaneous count where
            // it is higher would count requests moving between pods twice.
            entry.0 += mean;
            entry.1 |= pod.requests > requests || pod.in_flight > 0;
        }
    }
    totals.retain(|key, _| seen.contains(key));
    concurrency
}

/// Whether `service` selects `deployment`'s pods.
pub fn selects(service: &Service, deployment: &Deployment) -> bool {
    !service.spec.selector.is_empty()
        && service
            .spec
            .selector
            .iter()
            .all(|(k, v)| deployment.spec.template.metadata.labels.get(k) == Some(v))
}

/// Sets a Deployment's `spec.replicas` to what `decide` says given the
/// stored object (`None`: leave it), conditionally on the revision read,
/// retried against a fresh read on a conflict. Answers the count written.
pub async fn set_replicas(
    store: &Store,
    key: &ObjectKey,
    decide: impl Fn(&Value) -> Option<u32>,
) -> Result<Option<u32>, StoreError> {
    set_replicas_with(store, key, |current| {
        decide(current).map(|n| (n, Vec::new()))
    })
    .await
}

/// Annotations to set (`Some`) or remove (`None`) with a replica count.
type Annotations = Vec<(&'static str, Option<String>)>;

/// As [`set_replicas`], with annotations set in the same write.
async fn set_replicas_with(
    store: &Store,
    key: &ObjectKey,
    decide: impl Fn(&Value) -> Option<(u32, Annotations)>,
) -> Result<Option<u32>, StoreError> {
    for _ in 0..5 {
        let Some(current) = store.get(key).await? else {
            return Ok(None);
        };
        let Some((replicas, annotations)) = decide(&current) else {
            return Ok(None);
        };
        let write = Write::UpdateRead {
            key: key.clone(),
            object: with_replicas(&current, replicas, annotations),
            part: Part::Main,
            read: current,
        };
        match store.write(write).await {
            Ok(_) => return Ok(Some(replicas)),
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// `current` with `replicas` and `annotations` set.
fn with_replicas(current: &Value, replicas: u32, annotations: Annotations) -> Value {
    let mut next = current.clone();
    next["spec"]["replicas"] = replicas.into();
    for (name, value) in annotations {
        if !next["metadata"]["annotations"].is_object() {
            next["metadata"]["annotations"] = serde_json::json!({});
        }
        let stamped = next["metadata"]["annotations"]
            .as_object_mut()
            .expect("made an object above");
        match value {
            Some(value) => stamped.insert(name.to_owned(), value.into()),
            None => stamped.remove(name),
        };
    }
    next
}

/// What activations keep between calls in one process.
pub struct Activations {
    /// Image runtimes this process's scheduler learnt.
    known: KnownRuntimes,
    /// Nodes an activation of this process is binding a pod to right now,
    /// from its read of the node to its write: another activation does
    /// not bind there meanwhile (its pod goes to the scheduler), so two
    /// never take the same room.
    binding: std::sync::Mutex<HashSet<String>>,
    events: Recorder,
}

impl Activations {
    pub fn new(store: &Store, known: KnownRuntimes) -> Self {
        Self {
            known,
            binding: Default::default(),
            events: crate::events::recorder(store, "activator"),
        }
    }

    /// Node `node` to bind to, unless another activation is binding there.
    fn claim(&self, node: &str) -> Option<Claim<'_>> {
        self.binding
            .lock()
            .expect("binding lock")
            .insert(node.to_owned())
            .then(|| Claim {
                activations: self,
                node: node.to_owned(),
            })
    }
}

/// A node claimed for one binding, given back when dropped.
struct Claim<'a> {
    activations: &'a Activations,
    node: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.activations
            .binding
            .lock()
            .expect("binding lock")
            .remove(&self.node);
    }
}

/// What an activation did.
#[derive(Debug, Default)]
pub struct Activated {
    /// The Deployments it took off zero.
    pub names: Vec<String>,
    /// The pods it wrote bound to the node that asked, as stored: that
    /// node may start them from this answer rather than wait for its
    /// watch to bring them.
    pub bound: Vec<Value>,
}

/// Takes the autoscaled Deployments behind Service `namespace/name` off
/// zero: each at zero gets `max(1, minReplicas)` replicas and the time,
/// so the autoscaler keeps the pod for its delay, and the node that asked
/// (`by_node`), which its first pod prefers. `None` if there is no such
/// Service.
pub async fn activate(
    store: &Store,
    activations: &Activations,
    namespace: &str,
    name: &str,
    by_node: Option<&str>,
) -> Result<Option<Activated>, StoreError> {
    // Requests wait on every read here, so they are made at once: the
    // Service, its Deployments and their pods in one statement, and the
    // node that asked beside it. The node is claimed before it is read,
    // so that no other activation of this process binds there between
    // this read and the write (see `Activations`).
    let (backends, (claim, node_state)) = tokio::try_join!(
        store.service_backends(namespace, name),
        claim_and_read(store, activations, by_node)
    )?;
    let Some(backends) = backends else {
        return Ok(None);
    };
    let Ok(service) = serde_json::from_value::<Service>(backends.service) else {
        return Ok(Some(Activated::default()));
    };
    if service.spec.selector.is_empty() {
        return Ok(Some(Activated::default()));
    }
    // The node as read serves the first Deployment's first try; any
    // other claims and reads it again.
    let mut node = claim.map(|claim| (claim, node_state));
    let mut activated = Activated::default();
    for (deployment, listed, pods) in backends
        .deployments
        .into_iter()
        .filter_map(|(d, pods)| Some((Deployment::deserialize(&d).ok()?, d, pods)))
        .filter(|(d, _, _)| d.spec.autoscaling.is_some() && selects(&service, d))
    {
        let key = ObjectKey::new(Kind::Deployment, namespace, &deployment.metadata.name);
        let read = Read {
            deployment: listed,
            pods,
            node: node.take(),
        };
        if let Some(bound) = take_off_zero(store, activations, &key, read, by_node).await? {
            activated.names.push(deployment.metadata.name);
            activated.bound.extend(bound);
        }
    }
    Ok(Some(activated))
}

/// Node `by_node` claimed for a binding (unless another activation is
/// binding there), and then its state as stored.
async fn claim_and_read<'a>(
    store: &Store,
    activations: &'a Activations,
    by_node: Option<&str>,
) -> Result<
    (
        Option<Claim<'a>>,
        Option<crate::scheduler::decide::NodeState>,
    ),
    StoreError,
> {
    let Some(claim) = by_node.and_then(|node| activations.claim(node)) else {
        return Ok((None, None));
    };
    let state = crate::scheduler::node_state(store, &claim.node).await?;
    Ok((Some(claim), state))
}

/// What an activation read of a Deployment before its first try.
struct Read<'a> {
    deployment: Value,
    /// The pods it owns, read with it.
    pods: Vec<Value>,
    /// The node that asked, claimed, and its state (`None`: not found);
    /// `None` if it is to be claimed and read with the first try.
    node: Option<(Claim<'a>, Option<crate::scheduler::decide::NodeState>)>,
}

/// Sets a Deployment at zero to `max(1, minReplicas)` and writes its first
/// pods in the same transaction, as its controller would make them (the
/// first preferring `by_node`): the controller's round trip by watch would
/// otherwise stand between a request held at zero and its pod. `None`
/// unless it was at zero and was taken off it; then the pods written bound
/// to `by_node`.
async fn take_off_zero<'a>(
    store: &Store,
    activations: &'a Activations,
    key: &ObjectKey,
    read: Read<'a>,
    by_node: Option<&str>,
) -> Result<Option<Vec<Value>>, StoreError> {
    // What the activation read serves the first try (the write is
    // conditional on the Deployment's revision); a conflict reads again.
    let mut read = Some(read);
    for _ in 0..5 {
        let (current, pods, node) = match read.take() {
            Some(Read {
                deployment,
                pods,
                node,
            }) => (deployment, Some(pods), node),
            None => match store.get(key).await? {
                Some(current) => (current, None, None),
                None => return Ok(None),
            },
        };
        let Ok(autoscaling) =
            serde_json::from_value::<Autoscaling>(current["spec"]["autoscaling"].clone())
        else {
            return Ok(None);
        };
        if current["spec"]["replicas"].as_u64() != Some(0)
            || !current["metadata"]["deletionTimestamp"].is_null()
        {
            return Ok(None);
        }
        let now = Utc::now();
        let next = with_replicas(
            &current,
            autoscaling.clamp(1),
            vec![
                (
                    ACTIVATED_ANNOTATION,
                    Some(now.to_rfc3339_opts(SecondsFormat::Millis, true)),
                ),
                (ACTIVATED_ON_ANNOTATION, by_node.map(str::to_owned)),
            ],
        );
        // Conditional on the Deployment as read: the batch need not read
        // it again.
        let update = |object: Value, part: Part| Write::UpdateRead {
            key: key.clone(),
            object,
            part,
            read: current.clone(),
        };
        // The first pod (the one preferring the node) bound there too, if
        // the scheduler would put it there: another round trip saved. The
        // claim lasts from the node's read until the write is done. A
        // retry claims and reads the node again, beside the pods.
        let (first, (mut claim, node_state)) = match node {
            Some((claim, state)) => (
                first_pods(store, &next, pods, now).await?,
                (Some(claim), state),
            ),
            None => tokio::try_join!(
                first_pods(store, &next, pods, now),
                claim_and_read(store, activations, by_node)
            )?,
        };
        let FirstPods {
            creates: mut first,
            status,
        } = first;
        match (node_state, first.first_mut()) {
            (Some(state), Some((key, pod)))
                if binds_here(&activations.known, &key.namespace, pod, &state) =>
            {
                pod["spec"]["nodeName"] = state.name.into();
            }
            _ => claim = None,
        }
        let grouped = !first.is_empty();
        let created = first.len();
        let write = if grouped {
            let creates = first
                .into_iter()
                .map(|(key, object)| Write::Create { key, object });
            // The status the pods make in the Deployment's own change: one
            // write and one watch event fewer. The group answers the
            // Deployment, then its pods.
            let deployment = match status {
                Some(status) => {
                    let mut next = next.clone();
                    next["status"] = status;
                    update(next, Part::MainAndStatus)
                }
                None => update(next.clone(), Part::Main),
            };
            Write::All(std::iter::once(deployment).chain(creates).collect())
        } else {
            update(next.clone(), Part::Main)
        };
        // Urgent: requests are held until it is done.
        let outcome = match store.write_urgent(write).await {
            // A pod refused (its namespace's quota, a name taken by
            // chance): the controller makes the pods as it always does,
            // and tells why it cannot.
            Err(
                refused @ (StoreError::QuotaExceeded(_)
                | StoreError::AlreadyExists(_)
                | StoreError::Invalid { .. }),
            ) if grouped => {
                tracing::debug!(
                    "activation of {key}: its first pod is left to the controller: {refused}"
                );
                store.write_urgent(update(next, Part::Main)).await
            }
            other => other,
        };
        drop(claim);
        match outcome {
            Ok(written) => {
                // The group answers what each write wrote: the Deployment,
                // then its pods (a lone update answers the Deployment).
                let written = match written {
                    Value::Array(written) => written,
                    _ => Vec::new(),
                };
                let pods = written.get(1..1 + created).unwrap_or_default();
                tell_written(&activations.events, written.first(), pods);
                let bound = pods
                    .iter()
                    .filter(|pod| by_node.is_some() && pod["spec"]["nodeName"].as_str() == by_node)
                    .cloned()
                    .collect();
                return Ok(Some(bound));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The Events the controller and the scheduler would have told of pods
/// the activation wrote for them.
fn tell_written(events: &Recorder, deployment: Option<&Value>, pods: &[Value]) {
    use skiff_client::events::involved;
    let Some(deployment) = deployment else {
        return;
    };
    for pod in pods {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let revision = pod["metadata"]["annotations"][super::deployments::REVISION_ANNOTATION]
            .as_str()
            .unwrap_or_default();
        events.emit(
            involved(Kind::Deployment, deployment),
            Severity::Normal,
            "SuccessfulCreate",
            format!("created pod {name} (revision {revision}) on activation"),
        );
        if let Some(node) = pod["spec"]["nodeName"].as_str() {
            let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
            events.emit(
                involved(Kind::Pod, pod),
                Severity::Normal,
                "Scheduled",
                format!("assigned {namespace}/{name} to node {node}, which activated it"),
            );
        }
    }
}

/// Whether the scheduler would bind `pod` (of `namespace`, not yet
/// written) to the node it prefers, whatever the other nodes are
/// ([`decide::binds_to_preferred`]), judged from `state`, the store's view
/// of that node. A pod that does not name its runtime needs the scheduler to have
/// learnt its image's, unless the node runs both. Activations of one
/// process do not race for a node (see [`Activations`]), but the
/// scheduler's bindings in flight, another process's activation, or a
/// preemption between its deletions and its binding are not in this
/// read: as two schedulers would, they may overcommit the node's requests
/// by what they bind at that moment.
fn binds_here(
    known: &KnownRuntimes,
    namespace: &str,
    pod: &Value,
    state: &crate::scheduler::decide::NodeState,
) -> bool {
    use crate::scheduler::{self, decide};
    let Ok(spec) = serde_json::from_value::<PodSpec>(pod["spec"].clone()) else {
        return false;
    };
    let labels: BTreeMap<String, String> =
        serde_json::from_value(pod["metadata"]["labels"].clone()).unwrap_or_default();
    let runtime = spec
        .runtime
        .or_else(|| known.get(&ImageKey::of(namespace, &spec)));
    let runs_both = state.labels.get(LINUX_RUNTIME_LABEL).map(String::as_str) == Some("true");
    if runtime.is_none() && !runs_both {
        return false;
    }
    let request = decide::PodRequest {
        namespace,
        name: pod["metadata"]["name"].as_str().unwrap_or_default(),
        labels: &labels,
        spec: &spec,
        runtime,
        request: scheduler::request_of(&spec),
        preferred_node: pod["metadata"]["annotations"][PREFERRED_NODE_ANNOTATION].as_str(),
    };
    decide::binds_to_preferred(&request, state)
}

/// The pods the Deployment controller would make for `deployment` (as it
/// is about to be written) now, beside `pods` (those stored, read with
/// it; read now if not given).
async fn first_pods(
    store: &Store,
    deployment: &Value,
    pods: Option<Vec<Value>>,
    now: DateTime<Utc>,
) -> Result<FirstPods, StoreError> {
    use super::deployments;
    let Ok(deployment) = Deployment::deserialize(deployment) else {
        return Ok(FirstPods::default());
    };
    let pods = match pods {
        Some(pods) => deployments::owned_pods(&deployment, pods),
        None => deployments::pods_of(store, &deployment).await?,
    };
    let plan = deployments::plan(&deployment, &pods, now);
    let preferred = deployments::preferred_node(&deployment, pods.is_empty(), now);
    let creates = deployments::pods_to_create(&deployment, &plan, preferred);
    let status = status_with(&deployment, pods, &creates, now);
    Ok(FirstPods { creates, status })
}

/// The pods an activation writes, and the Deployment's status to write
/// with them.
#[derive(Default)]
struct FirstPods {
    creates: Vec<(ObjectKey, Value)>,
    status: Option<Value>,
}

/// The status the Deployment controller will find for `deployment` once
/// `creates` are written beside its `pods` (the replicas' change moves
/// the generation), if it differs from the stored one: written in the
/// activation's group, the controller's first look then has nothing to
/// write, one write fewer on every cold start. Should the two differ
/// after all, the controller writes its own, as it would have.
fn status_with(
    deployment: &Deployment,
    mut pods: Vec<skiff_api::kinds::pod::Pod>,
    creates: &[(ObjectKey, Value)],
    now: DateTime<Utc>,
) -> Option<Value> {
    if creates.is_empty() {
        return None;
    }
    let mut written = deployment.clone();
    written.metadata.generation = written.metadata.generation.map(|g| g + 1);
    pods.extend(
        creates
            .iter()
            .filter_map(|(_, pod)| skiff_api::kinds::pod::Pod::deserialize(pod).ok()),
    );
    let status = super::deployments::plan(&written, &pods, now).status;
    (deployment.status.as_ref() != Some(&status))
        .then(|| serde_json::to_value(status).expect("a status serializes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Deployment as the watch would carry it.
    fn stored(name: &str, autoscaling: bool, deleting: bool) -> Value {
        let mut object = serde_json::json!({
            "apiVersion": skiff_api::API_VERSION, "kind": "Deployment",
            "metadata": {"name": name, "namespace": "fns", "uid": format!("uid-{name}")},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"image": "r/f:1"}},
            },
        });
        if autoscaling {
            object["spec"]["autoscaling"] = serde_json::json!({"minReplicas": 0, "maxReplicas": 3});
        }
        if deleting {
            object["metadata"]["deletionTimestamp"] = "2026-12-06T00:00:00Z".into();
        }
        object
    }

    fn event(event_type: EventType, object: Value) -> WatchEvent<Value> {
        WatchEvent { event_type, object }
    }

    #[test]
    fn a_scale_applies_only_to_the_deployment_decided_on() {
        let mut seen = stored("f", true, false);
        seen["spec"]["replicas"] = 1.into();
        seen["metadata"]["annotations"] = serde_json::json!({ACTIVATED_ANNOTATION: "t1"});
        let decided: Deployment = serde_json::from_value(seen.clone()).unwrap();
        assert!(decided_on(&seen, &decided, 1));
        assert!(!decided_on(&seen, &decided, 2), "another replica count");
        let mut activated_since = seen.clone();
        activated_since["metadata"]["annotations"][ACTIVATED_ANNOTATION] = "t2".into();
        assert!(
            !decided_on(&activated_since, &decided, 1),
            "activated since"
        );
        let mut fixed_since = seen.clone();
        fixed_since["spec"]
            .as_object_mut()
            .unwrap()
            .remove("autoscaling");
        assert!(
            !decided_on(&fixed_since, &decided, 1),
            "no longer autoscaled"
        );
        let mut replaced = seen.clone();
        replaced["metadata"]["uid"] = "another".into();
        assert!(
            !decided_on(&replaced, &decided, 1),
            "made anew under the name"
        );
    }

    #[test]
    fn the_autoscaled_deployments_follow_the_watch() {
        let mut autoscaled = Autoscaled::default();
        let names = |a: &Autoscaled| a.0.keys().map(|(_, n)| n.clone()).collect::<Vec<_>>();
        autoscaled.put(&stored("a", true, false));
        autoscaled.put(&stored("fixed", false, false));
        autoscaled.put(&stored("gone", true, true));
        assert_eq!(
            names(&autoscaled),
            ["a"],
            "only those that autoscale, not being deleted"
        );
        autoscaled
            .apply(&event(EventType::Added, stored("b", true, false)))
            .unwrap();
        autoscaled
            .apply(&event(EventType::Modified, stored("fixed", true, false)))
            .unwrap();
        assert_eq!(names(&autoscaled), ["a", "b", "fixed"]);
        // Autoscaling taken off, a deletion begun, a deletion done.
        autoscaled
            .apply(&event(EventType::Modified, stored("fixed", false, false)))
            .unwrap();
        autoscaled
            .apply(&event(EventType::Modified, stored("a", true, true)))
            .unwrap();
        autoscaled
            .apply(&event(EventType::Deleted, stored("b", true, false)))
            .unwrap();
        assert!(names(&autoscaled).is_empty(), "{:?}", names(&autoscaled));
        autoscaled
            .apply(&event(EventType::Bookmark, Value::Null))
            .unwrap();
        assert!(
            autoscaled
                .apply(&event(EventType::Error, Value::Null))
                .is_err(),
            "a failed watch ends the term, which starts again from a list"
        );
    }

    fn spec(min: u32, max: u32, target: u32, delay: &str) -> Autoscaling {
        Autoscaling {
            min_replicas: min,
            max_replicas: max,
            target_concurrency: Some(target),
            scale_down_delay: Some(delay.into()),
        }
    }

    /// Feeds `load` once a second from `from` to `to` (exclusive),
    /// deciding each second; answers the replicas after each decision.
    fn run(
        spec: &Autoscaling,
        window: &mut Window,
        current: &mut u32,
        from: u32,
        to: u32,
        load: f64,
    ) -> Vec<u32> {
        (from..to)
            .map(|t| {
                let now = f64::from(t);
                window.observe(now, load, load > 0.0);
                *current = decide(spec, *current, window, now);
                *current
            })
            .collect()
    }

    #[test]
    fn decisions_follow_the_load_as_the_table_says() {
        struct Case {
            name: &'static str,
            spec: Autoscaling,
            start: u32,
            /// (seconds, concurrency) phases, one after another from t=100.
            phases: Vec<(u32, f64)>,
            /// Replicas at the end of each phase.
            expect: Vec<u32>,
        }
        let cases = [
            Case {
                name: "a steady load keeps load/target pods",
                spec: spec(0, 20, 10, "30s"),
                start: 1,
                phases: vec![(90, 45.0)],
                expect: vec![5],
            },
            Case {
                name: "a burst panics up at once and stays up through a dip",
                spec: spec(0, 20, 10, "30s"),
                start: 1,
                phases: vec![(3, 150.0), (20, 10.0)],
                expect: vec![15, 15],
            },
            Case {
                name: "a 10x step has its pods at the first tick that sees it",
                spec: spec(0, 20, 5, "30s"),
                start: 1,
                phases: vec![(70, 5.0), (1, 50.0), (30, 50.0)],
                expect: vec![1, 10, 10],
            },
            Case {
                name: "a step of less than twice waits for the windows",
                spec: spec(0, 20, 10, "30s"),
                start: 4,
                phases: vec![(70, 35.0), (1, 60.0)],
                expect: vec![4, 4],
            },
            Case {
                name: "a lower load removes pods only after the delay",
                spec: spec(0, 20, 10, "30s"),
                start: 1,
                phases: vec![(120, 80.0), (20, 20.0), (100, 20.0)],
                expect: vec![8, 8, 2],
            },
            Case {
                name: "idle, a function goes to zero after the delay and not before",
                spec: spec(0, 20, 10, "30s"),
                start: 1,
                phases: vec![(70, 5.0), (25, 0.0), (70, 0.0)],
                expect: vec![1, 1, 0],
            },
            Case {
                name: "the last pod goes the delay after the last request, not a window later",
                spec: spec(0, 20, 10, "5s"),
                start: 1,
                phases: vec![(70, 5.0), (4, 0.0), (2, 0.0)],
                expect: vec![1, 1, 0],
            },
            Case {
                name: "load alone does not take a function off zero: its activation does",
                spec: spec(0, 20, 10, "30s"),
                start: 0,
                phases: vec![(10, 45.0), (10, 500.0)],
                expect: vec![0, 0],
            },
            Case {
                name: "minReplicas raised takes a function off zero",
                spec: spec(2, 20, 10, "5s"),
                start: 0,
                phases: vec![(1, 0.0)],
                expect: vec![2],
            },
            Case {
                name: "minReplicas holds however idle",
                spec: spec(2, 20, 10, "5s"),
                start: 2,
                phases: vec![(100, 0.0)],
                expect: vec![2],
            },
            Case {
                name: "maxReplicas caps however busy",
                spec: spec(0, 4, 10, "5s"),
                start: 1,
                phases: vec![(30, 1000.0)],
                expect: vec![4],
            },
            Case {
                name: "a trickle of tiny requests keeps one pod",
                spec: spec(0, 20, 100, "10s"),
                start: 1,
                phases: vec![(200, 0.001)],
                expect: vec![1],
            },
        ];
        for case in cases {
            let mut window = Window::new(100.0);
            let mut current = case.start;
            let mut t = 100;
            let mut ends = Vec::new();
            for (seconds, load) in &case.phases {
                let replicas = run(&case.spec, &mut window, &mut current, t, t + seconds, *load);
                ends.push(*replicas.last().unwrap());
                t += seconds;
            }
            assert_eq!(ends, case.expect, "{}", case.name);
        }
    }

    #[test]
    fn a_node_speaks_only_for_the_pods_bound_to_it() {
        use skiff_client::node_api::PodLoad;
        let pod = |uid: &str, busy_nanos: u64, in_flight: u64| PodLoad {
            namespace: "shop".into(),
            name: format!("pod-{uid}"),
            uid: uid.into(),
            in_flight,
            requests: 10,
            busy_nanos,
            at_nanos: 0,
            began_nanos: 0,
        };
        let web = ("shop".to_owned(), "web".to_owned());
        let theirs = ("bank".to_owned(), "vault".to_owned());
        let pods: Bindings = [
            ("u1".to_owned(), ("n1".to_owned(), web.clone())),
            ("u2".to_owned(), ("n2".to_owned(), theirs.clone())),
        ]
        .into();
        let mut totals = HashMap::new();
        let loads: Loads = vec![
            (
                "n1".into(),
                NodeLoad {
                    // Its own pod, a pod bound to n2 and one the store
                    // does not know, all claiming a huge load.
                    pods: vec![
                        pod("u1", 2_000_000_000, 1),
                        pod("u2", 0, 1_000_000),
                        pod("u9", 0, 1_000_000),
                    ],
                    held: vec![],
                },
            ),
            (
                "n2".into(),
                NodeLoad {
                    pods: vec![pod("u2", 0, 0)],
                    held: vec![],
                },
            ),
        ];
        let seen = concurrency_of(&loads, &pods, &mut totals, 100.0);
        // A pod's first sample counts from zero a tick ago: 2 s busy in 1 s.
        assert_eq!(seen.get(&web), Some(&(2.0, true)));
        assert_eq!(seen.get(&theirs).map(|c| c.0), Some(0.0));
        assert_eq!(seen.len(), 2);
        // Next second: the growth alone counts.
        let loads: Loads = vec![(
            "n1".into(),
            NodeLoad {
                pods: vec![pod("u1", 2_500_000_000, 0)],
                held: vec![],
            },
        )];
        let seen = concurrency_of(&loads, &pods, &mut totals, 101.0);
        assert_eq!(seen.get(&web), Some(&(0.5, false)));
        assert_eq!(totals.len(), 1, "pods no longer reported are forgotten");
    }

    /// The window is the node's time between its readings: a sample that
    /// reached the autoscaler late (or a tick that ran late) does not
    /// read as a burst or a lull.
    #[test]
    fn a_pods_concurrency_is_taken_over_the_nodes_own_time() {
        use skiff_client::node_api::PodLoad;
        let web = ("shop".to_owned(), "web".to_owned());
        let pods: Bindings = [("u1".to_owned(), ("n1".to_owned(), web.clone()))].into();
        let sample = |busy_s: u64, at_s: u64| -> Loads {
            vec![(
                "n1".into(),
                NodeLoad {
                    pods: vec![PodLoad {
                        namespace: "shop".into(),
                        name: "web-1".into(),
                        uid: "u1".into(),
                        in_flight: 6,
                        requests: 100,
                        busy_nanos: busy_s * 1_000_000_000,
                        at_nanos: at_s * 1_000_000_000,
                        began_nanos: 40_000_000_000,
                    }],
                    held: vec![],
                },
            )]
        };
        let mut totals = HashMap::new();
        // First seen 10 s after the node began serving it: 60 s of time
        // in those 10 s, not in one tick.
        let seen = concurrency_of(&sample(60, 50), &pods, &mut totals, 100.0);
        assert_eq!(seen.get(&web), Some(&(6.0, true)));
        // Six in flight all along: 6 s of time per second of the node's,
        // though our ticks were 0.6 s and then 1.4 s apart.
        let seen = concurrency_of(&sample(66, 51), &pods, &mut totals, 100.6);
        assert_eq!(seen.get(&web), Some(&(6.0, true)));
        let seen = concurrency_of(&sample(72, 52), &pods, &mut totals, 102.0);
        assert_eq!(seen.get(&web), Some(&(6.0, true)));
    }

    #[test]
    fn a_new_leader_removes_nothing_before_it_watched_for_the_delay() {
        let spec = spec(0, 20, 10, "30s");
        let mut window = Window::new(1000.0);
        let mut current = 6;
        let replicas = run(&spec, &mut window, &mut current, 1000, 1029, 0.0);
        assert!(replicas.iter().all(|&r| r == 6), "{replicas:?}");
        let later = run(&spec, &mut window, &mut current, 1029, 1040, 0.0);
        assert_eq!(*later.last().unwrap(), 0);
    }

    #[test]
    fn an_activation_keeps_its_pod_for_the_delay() {
        let spec = spec(0, 20, 10, "30s");
        let mut window = Window::new(0.0);
        let mut current = 0;
        run(&spec, &mut window, &mut current, 0, 100, 0.0);
        assert_eq!(current, 0);
        // Activated at t=100 (what the annotation tells), no sample yet.
        window.last_traffic = Some(100.0);
        current = 1;
        let replicas = run(&spec, &mut window, &mut current, 100, 129, 0.0);
        assert!(replicas.iter().all(|&r| r == 1), "{replicas:?}");
        let later = run(&spec, &mut window, &mut current, 129, 170, 0.0);
        assert_eq!(*later.last().unwrap(), 0);
    }
}
