//! The scheduler: places unbound pods on nodes. It runs in every
//! control-plane process but acts only in the one holding the scheduler's
//! advisory lock. It keeps a cache of nodes and pods fed by watches, decides
//! with the pure [`decide`] function, and binds with conditional writes, many
//! in flight at once so the store can batch them; a lost race (409) just
//! puts the pod back in the queue.

pub mod decide;
pub mod images;

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff_api::kinds::cluster::Node;
use skiff_api::kinds::pod::{Pod, PodPhase, parse_millicores};
use skiff_api::meta::namespace_and_name;
use skiff_api::quantity::parse_bytes;
use skiff_api::{EventType, Kind};
use tokio::task::JoinSet;

use crate::store::{ListQuery, ObjectKey, Part, Store, StoreError, Write};
use crate::watch::{self, WatchHub, WatchRequest};
use decide::{Decision, NodeState, PlacedPod, PodRequest, Resources};
use images::{ImageKey, ImageRuntimes, Lookup};
use skiff_api::kinds::event::Severity;
use skiff_client::events::{self, Recorder};

use crate::metrics::Attempt;

/// The advisory lock key of the scheduler's leadership.
const LEADER_KEY: i64 = 0x736b_6966_6673_6368; // "skiffsch"

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// How often node leases are re-read.
    pub lease_refresh: Duration,
    /// How often pods that fit nowhere are tried again without a change.
    pub retry: Duration,
    /// Bindings in flight at once.
    pub max_in_flight: usize,
    /// Registries (host:port) read over plain HTTP when looking up which
    /// runtime an image needs; loopback ones always are.
    pub insecure_registries: Vec<String>,
    /// Where the scheduler tells the rest of its process what it learnt
    /// of images' runtimes.
    pub known_runtimes: images::KnownRuntimes,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            lease_refresh: Duration::from_secs(1),
            retry: Duration::from_secs(5),
            max_in_flight: 256,
            insecure_registries: Vec::new(),
            known_runtimes: Default::default(),
        }
    }
}

/// The scheduler's leadership loop; it never returns, and dropping it ends
/// the term it leads (if any) and gives up the lock.
pub async fn run(store: Store, hub: WatchHub, config: SchedulerConfig) {
    crate::leader::run(store.clone(), LEADER_KEY, "scheduler", move || {
        Session::new(store.clone(), hub.clone(), config.clone()).run()
    })
    .await
}

/// What the scheduler knows of a pod.
struct CachedPod {
    object: Value,
    node: String,
    phase: PodPhase,
    placed: PlacedPod,
    spec: skiff_api::kinds::pod::PodSpec,
    order: QueueKey,
    /// The node whose [`NodeState`] counts this pod, if any.
    counted_on: Option<String>,
    /// When this term of the scheduler first saw the pod: placement latency
    /// is measured from here.
    seen: Instant,
}

type PodKey = (String, String);

/// The queue's order: the most important pods first, then the oldest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct QueueKey {
    priority: Reverse<i32>,
    created: String,
    pod: PodKey,
}

enum Outcome {
    /// A binding (or preemption) finished; on failure the pod goes back in
    /// the queue and its victims count again.
    Bound {
        pod: PodKey,
        victims: Vec<PodKey>,
        ok: bool,
    },
    Reported,
}

/// A leader's scheduling state. Everything a decision reads is kept up to
/// date event by event, never rebuilt, so a round costs what it decides and
/// not what the cluster holds: nodes with the pods counted on them (bound
/// or assumed), a queue of pods to try, and the pods parked as
/// unschedulable until something changes that could make room.
struct Session {
    store: Store,
    hub: WatchHub,
    config: SchedulerConfig,
    /// By name, as decisions break ties by name.
    nodes: Vec<NodeState>,
    index: HashMap<String, usize>,
    ready: HashSet<String>,
    pods: HashMap<PodKey, CachedPod>,
    queue: BTreeSet<QueueKey>,
    parked: BTreeSet<QueueKey>,
    /// Set when the cluster changed in a way that may fit parked pods.
    wake: bool,
    /// Pods being bound, with the node they were sent to.
    assumed: HashMap<PodKey, String>,
    /// Pods being deleted to make room: no longer counted anywhere.
    evicting: HashSet<PodKey>,
    /// The Unschedulable message last written per pod, not to write it
    /// again (kept apart from the cache, which events may refresh with an
    /// older status).
    reported: HashMap<PodKey, String>,
    in_flight: JoinSet<Outcome>,
    /// The runtime each image needs, for pods that do not say.
    images: ImageRuntimes,
    /// Pods waiting for their image's lookup.
    awaiting: HashMap<ImageKey, HashSet<PodKey>>,
    /// Tells Scheduled, FailedScheduling and Preempted.
    events: Recorder,
}

impl Session {
    fn new(store: Store, hub: WatchHub, config: SchedulerConfig) -> Self {
        let insecure_registries = config.insecure_registries.clone();
        let known_runtimes = config.known_runtimes.clone();
        Self {
            store: store.clone(),
            hub,
            config,
            nodes: Vec::new(),
            index: HashMap::new(),
            ready: HashSet::new(),
            pods: HashMap::new(),
            queue: BTreeSet::new(),
            parked: BTreeSet::new(),
            wake: false,
            assumed: HashMap::new(),
            evicting: HashSet::new(),
            reported: HashMap::new(),
            in_flight: JoinSet::new(),
            events: crate::events::recorder(&store, "scheduler"),
            images: ImageRuntimes::new(store, &insecure_registries, known_runtimes),
            awaiting: HashMap::new(),
        }
    }

    async fn run(mut self) -> Result<(), StoreError> {
        let node_revision = self.load_nodes().await?;
        self.refresh_leases().await?;
        let pod_revision = self.load_pods().await?;
        let mut nodes = self.follow(Kind::Node, node_revision);
        let mut pods = self.follow(Kind::Pod, pod_revision);
        let mut leases = tokio::time::interval(self.config.lease_refresh);
        let mut retries = tokio::time::interval(self.config.retry);
        // Parked pods come back at most this often: retrying thousands of
        // them on every deletion would starve the queue.
        let mut wakeups = tokio::time::interval(Duration::from_millis(50));
        wakeups.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !self.queue.is_empty() && self.in_flight.len() < self.config.max_in_flight {
                self.schedule();
            }
            self.store
                .metrics()
                .scheduler_queue(self.queue.len() + self.parked.len());
            tokio::select! {
                event = nodes.recv() => {
                    let event = event.ok_or_else(|| StoreError::Unavailable("node watch ended".into()))?;
                    self.apply_node(event)?;
                }
                event = pods.recv() => {
                    let event = event.ok_or_else(|| StoreError::Unavailable("pod watch ended".into()))?;
                    self.apply_pod(event)?;
                }
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    if let Ok(Outcome::Bound { pod, victims, ok: false }) = done {
                        self.assumed.remove(&pod);
                        self.sync(&pod, false);
                        for victim in victims {
                            self.evicting.remove(&victim);
                            self.sync(&victim, false);
                        }
                    }
                }
                image = self.images.next_done() => {
                    for key in self.awaiting.remove(&image).unwrap_or_default() {
                        if let Some(pod) = self.pods.get(&key) && self.parked.remove(&pod.order) {
                            self.queue.insert(pod.order.clone());
                        }
                    }
                }
                _ = leases.tick() => self.refresh_leases().await?,
                _ = retries.tick() => self.wake = true,
                _ = wakeups.tick(), if self.wake => {
                    self.wake = false;
                    self.queue.append(&mut self.parked);
                }
            }
        }
    }

    fn follow(&self, kind: Kind, from: i64) -> watch::Events {
        watch::start(
            self.store.clone(),
            &self.hub,
            WatchRequest::everything(kind, from),
        )
    }

    async fn load_nodes(&mut self) -> Result<i64, StoreError> {
        let page = self.store.list(Kind::Node, ListQuery::default()).await?;
        for object in page.items {
            self.upsert_node(object);
        }
        Ok(page.revision)
    }

    async fn load_pods(&mut self) -> Result<i64, StoreError> {
        let page = self.store.list(Kind::Pod, ListQuery::default()).await?;
        for object in page.items {
            self.upsert_pod(object);
        }
        Ok(page.revision)
    }

    async fn refresh_leases(&mut self) -> Result<(), StoreError> {
        let (now, leases) = self.store.leases().await?;
        self.ready = leases
            .into_iter()
            .filter(|l| l.valid_at(now))
            .map(|l| l.node)
            .collect();
        for node in &mut self.nodes {
            let ready = self.ready.contains(&node.name);
            self.wake |= ready && !node.ready;
            node.ready = ready;
        }
        Ok(())
    }

    fn apply_node(&mut self, event: skiff_api::WatchEvent<Value>) -> Result<(), StoreError> {
        match event.event_type {
            EventType::Added | EventType::Modified => self.upsert_node(event.object),
            EventType::Deleted => {
                let name = event.object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default();
                self.remove_node(name);
            }
            EventType::Bookmark => {}
            EventType::Error => return Err(StoreError::Unavailable("node watch failed".into())),
        }
        Ok(())
    }

    fn apply_pod(&mut self, event: skiff_api::WatchEvent<Value>) -> Result<(), StoreError> {
        match event.event_type {
            EventType::Added | EventType::Modified => self.upsert_pod(event.object),
            EventType::Deleted => self.remove_pod(&namespace_and_name(&event.object)),
            EventType::Bookmark => {}
            EventType::Error => return Err(StoreError::Unavailable("pod watch failed".into())),
        }
        Ok(())
    }

    fn upsert_node(&mut self, object: Value) {
        let Ok(node) = serde_json::from_value::<Node>(object) else {
            return;
        };
        let allocatable = allocatable_of(&node);
        let name = node.metadata.name;
        // Any change to a node may make room or lift a restriction.
        self.wake = true;
        if let Some(&i) = self.index.get(&name) {
            let state = &mut self.nodes[i];
            state.labels = node.metadata.labels;
            state.taints = node.spec.taints;
            state.unschedulable = node.spec.unschedulable;
            state.allocatable = allocatable;
            return;
        }
        let at = self.nodes.partition_point(|n| n.name < name);
        self.nodes.insert(
            at,
            NodeState {
                ready: self.ready.contains(&name),
                name: name.clone(),
                labels: node.metadata.labels,
                taints: node.spec.taints,
                unschedulable: node.spec.unschedulable,
                allocatable,
                requested: Resources::default(),
                pods: Vec::new(),
            },
        );
        self.reindex();
        // Pods bound to a node that (re)appears count on it again; nodes
        // come and go rarely enough for a scan.
        let on_it: Vec<PodKey> = self
            .pods
            .keys()
            .filter(|key| self.target(key).as_deref() == Some(name.as_str()))
            .cloned()
            .collect();
        for key in on_it {
            self.sync(&key, false);
        }
    }

    fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.get(name).copied() else {
            return;
        };
        self.nodes.remove(i);
        self.reindex();
        for pod in self.pods.values_mut() {
            if pod.counted_on.as_deref() == Some(name) {
                pod.counted_on = None;
            }
        }
    }

    fn reindex(&mut self) {
        self.index = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
    }

    /// Caches a pod and files it where it belongs: counted on its node,
    /// in the queue, or left parked if it was.
    fn upsert_pod(&mut self, object: Value) {
        let Ok(pod) = serde_json::from_value::<Pod>(object.clone()) else {
            return;
        };
        let key = (pod.metadata.namespace.clone(), pod.metadata.name.clone());
        let phase = pod.status.as_ref().map(|s| s.phase).unwrap_or_default();
        if let Some(message) = pod
            .status
            .as_ref()
            .and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.condition_type == "PodScheduled")
            })
            .and_then(|c| c.message.clone())
        {
            self.reported.entry(key.clone()).or_insert(message);
        }
        if !pod.spec.node_name.is_empty() {
            self.assumed.remove(&key);
        }
        let order = QueueKey {
            priority: Reverse(pod.spec.priority),
            created: pod.metadata.creation_timestamp.clone().unwrap_or_default(),
            pod: key.clone(),
        };
        let previous = self.pods.remove(&key);
        let mut was_parked = false;
        let mut counted_on = None;
        let mut seen = Instant::now();
        if let Some(previous) = previous {
            seen = previous.seen;
            self.queue.remove(&previous.order);
            was_parked = self.parked.remove(&previous.order);
            counted_on = previous.counted_on;
            // A pod that finished frees its room.
            self.wake |= phase.is_finished() && !previous.phase.is_finished();
        }
        self.pods.insert(
            key.clone(),
            CachedPod {
                node: pod.spec.node_name.clone(),
                phase,
                placed: PlacedPod {
                    namespace: pod.metadata.namespace.clone(),
                    name: pod.metadata.name.clone(),
                    labels: pod.metadata.labels.clone(),
                    priority: pod.spec.priority,
                    request: request_of(&pod.spec),
                },
                spec: pod.spec,
                order,
                counted_on,
                seen,
                object,
            },
        );
        self.sync(&key, was_parked);
    }

    fn remove_pod(&mut self, key: &PodKey) {
        self.assumed.remove(key);
        self.evicting.remove(key);
        self.reported.remove(key);
        let Some(pod) = self.pods.remove(key) else {
            return;
        };
        self.queue.remove(&pod.order);
        self.parked.remove(&pod.order);
        if let Some(node) = &pod.counted_on
            && let Some(&i) = self.index.get(node)
        {
            unplace(&mut self.nodes[i], key);
            // A deleted pod frees room.
            self.wake = true;
        }
    }

    /// The node a pod's resources count on: its binding, or the binding in
    /// flight; none once it finished or while it is being evicted.
    fn target(&self, key: &PodKey) -> Option<String> {
        let pod = self.pods.get(key)?;
        if pod.phase.is_finished() || self.evicting.contains(key) {
            None
        } else if !pod.node.is_empty() {
            Some(pod.node.clone())
        } else {
            self.assumed.get(key).cloned()
        }
    }

    /// Brings a pod's accounting and queueing in line with its cached
    /// state: counted on the node it is (being) bound to, and queued (or
    /// parked, if `parked`) when it still waits for one.
    fn sync(&mut self, key: &PodKey, parked: bool) {
        let target = self.target(key);
        let Some(pod) = self.pods.get_mut(key) else {
            return;
        };
        if let Some(node) = pod.counted_on.take()
            && let Some(&i) = self.index.get(&node)
        {
            unplace(&mut self.nodes[i], key);
        }
        if let Some(node) = target
            && let Some(&i) = self.index.get(&node)
        {
            place(&mut self.nodes[i], pod.placed.clone());
            pod.counted_on = Some(node);
        }
        let waiting = pod.node.is_empty()
            && pod.phase == PodPhase::Pending
            && !self.assumed.contains_key(key)
            && !self.evicting.contains(key);
        if !waiting {
            self.queue.remove(&pod.order);
            self.parked.remove(&pod.order);
        } else if !self.queue.contains(&pod.order) && !self.parked.contains(&pod.order) {
            if parked {
                self.parked.insert(pod.order.clone());
            } else {
                self.queue.insert(pod.order.clone());
            }
        }
    }

    /// One round: queued pods, most important and oldest first, while
    /// bindings may be sent.
    fn schedule(&mut self) {
        while self.in_flight.len() < self.config.max_in_flight {
            let Some(next) = self.queue.pop_first() else {
                return;
            };
            let key = next.pod.clone();
            let Some(pod) = self.pods.get(&key) else {
                continue;
            };
            // A pod that does not name its runtime goes where its image
            // can run, once the image's registry has told which that is.
            let runtime = match pod.spec.runtime {
                Some(runtime) => Some(runtime),
                None => {
                    let image = ImageKey::of(&key.0, &pod.spec);
                    match self.images.runtime_of(&image) {
                        Lookup::Known(runtime) => runtime,
                        Lookup::Pending => {
                            self.parked.insert(next);
                            self.awaiting.entry(image).or_default().insert(key);
                            continue;
                        }
                    }
                }
            };
            let pod = &self.pods[&key];
            let request = PodRequest {
                namespace: &key.0,
                name: &key.1,
                labels: &pod.placed.labels,
                spec: &pod.spec,
                runtime,
                request: pod.placed.request,
                preferred_node: pod.object["metadata"]["annotations"]
                    [skiff_api::kinds::pod::PREFERRED_NODE_ANNOTATION]
                    .as_str(),
            };
            match decide::decide(&request, &self.nodes) {
                Decision::Bind(node) => self.bind(key, node, Vec::new()),
                Decision::Preempt { node, victims } => {
                    tracing::info!(
                        "scheduler: {}/{} preempts {victims:?} on {node}",
                        key.0,
                        key.1
                    );
                    for victim in &victims {
                        self.evicting.insert(victim.clone());
                        self.sync(victim, false);
                    }
                    self.bind(key, node, victims);
                }
                Decision::Unschedulable(message) => {
                    self.store
                        .metrics()
                        .scheduler_attempt(Attempt::Unschedulable);
                    self.parked.insert(next);
                    if self.reported.get(&key) != Some(&message) {
                        self.report_unschedulable(&key, message);
                    }
                }
            }
        }
    }

    /// Binds a pod with a write conditional on the revision it was
    /// scheduled from, after deleting its victims (if any).
    fn bind(&mut self, key: PodKey, node: String, victims: Vec<PodKey>) {
        let pod = &self.pods[&key];
        let mut object = pod.object.clone();
        object["spec"]["nodeName"] = json!(node);
        // The pod as the watch brought it is the pod as stored at its
        // revision: the batch need not read it again.
        let write = Write::UpdateRead {
            key: ObjectKey::new(Kind::Pod, &key.0, &key.1),
            object,
            part: Part::Main,
            read: pod.object.clone(),
        };
        let involved = events::involved(Kind::Pod, &pod.object);
        for victim in &victims {
            if let Some(cached) = self.pods.get(victim) {
                self.events.emit(
                    events::involved(Kind::Pod, &cached.object),
                    Severity::Warning,
                    "Preempted",
                    // Not naming the pod: it may be another tenant's.
                    format!("preempted on node {node} by a pod of higher priority"),
                );
            }
        }
        let recorder = self.events.clone();
        let seen = pod.seen;
        let told = format!("assigned {}/{} to node {node}", key.0, key.1);
        self.assumed.insert(key.clone(), node);
        self.sync(&key, false);
        let store = self.store.clone();
        self.in_flight.spawn(async move {
            for (namespace, name) in &victims {
                let delete = Write::Delete {
                    key: ObjectKey::new(Kind::Pod, namespace, name),
                    expected_revision: None,
                    expected_uid: None,
                };
                if let Err(e) = store.write(delete).await
                    && !matches!(e, StoreError::NotFound(_))
                {
                    return Outcome::Bound {
                        pod: key,
                        victims,
                        ok: false,
                    };
                }
            }
            let metrics = store.metrics();
            let ok = match store.write(write).await {
                Ok(_) => {
                    metrics.scheduler_attempt(Attempt::Bound);
                    metrics.placement(seen.elapsed());
                    recorder.emit(involved, Severity::Normal, "Scheduled", told);
                    true
                }
                Err(e) => {
                    metrics.scheduler_attempt(match e {
                        StoreError::Conflict { .. } => Attempt::Conflict,
                        _ => Attempt::Error,
                    });
                    tracing::debug!("scheduler: binding {}/{} failed: {e}", key.0, key.1);
                    false
                }
            };
            Outcome::Bound {
                pod: key,
                victims: Vec::new(),
                ok,
            }
        });
    }

    fn report_unschedulable(&mut self, key: &PodKey, message: String) {
        self.reported.insert(key.clone(), message.clone());
        let pod = &self.pods[key];
        let mut status = pod.object["status"].clone();
        if !status.is_object() {
            status = json!({});
        }
        status["conditions"] = json!([{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastTransitionTime": crate::store::now_rfc3339(),
        }]);
        let write = Write::Update {
            key: ObjectKey::new(Kind::Pod, &key.0, &key.1),
            object: status,
            part: Part::Status,
            expected_revision: None,
        };
        tracing::info!("scheduler: {}/{} unschedulable: {message}", key.0, key.1);
        self.events.emit(
            events::involved(Kind::Pod, &pod.object),
            Severity::Warning,
            "FailedScheduling",
            &message,
        );
        let store = self.store.clone();
        self.in_flight.spawn(async move {
            let _ = store.write(write).await;
            Outcome::Reported
        });
    }
}

/// What a node's status says it has room for.
fn allocatable_of(node: &Node) -> Resources {
    let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    Resources {
        memory: allocatable
            .and_then(|a| a.memory.as_deref())
            .and_then(|m| parse_bytes(m).ok())
            .unwrap_or(0),
        instances: allocatable.and_then(|a| a.instances).map_or(0, u64::from),
        cpu: allocatable
            .and_then(|a| a.cpu.as_deref())
            .and_then(parse_millicores)
            .unwrap_or(0),
    }
}

/// Node `name` as the scheduler would see it, read from the store now,
/// for a placement on that one node outside the scheduler: its labels,
/// taints, lease and room, and what the pods bound to it and not finished
/// request. Not the pods themselves: [`decide::binds_to_preferred`] needs
/// none.
pub async fn node_state(store: &Store, name: &str) -> Result<Option<NodeState>, StoreError> {
    // Two reads at once: the node, and what its pods request.
    let key = ObjectKey::new(Kind::Node, "", name);
    let (object, (ready, resources)) = tokio::try_join!(store.get(&key), store.node_load(name))?;
    let Some(Ok(node)) = object.map(serde_json::from_value::<Node>) else {
        return Ok(None);
    };
    let requested = resources
        .into_iter()
        .filter_map(|r| serde_json::from_value(json!({"image": "-", "resources": r})).ok())
        .fold(
            Resources::default(),
            |sum, spec: skiff_api::kinds::pod::PodSpec| sum.plus(request_of(&spec)),
        );
    Ok(Some(NodeState {
        name: name.to_owned(),
        allocatable: allocatable_of(&node),
        labels: node.metadata.labels,
        taints: node.spec.taints,
        unschedulable: node.spec.unschedulable,
        ready,
        requested,
        pods: Vec::new(),
    }))
}

fn place(node: &mut NodeState, pod: PlacedPod) {
    node.requested = node.requested.plus(pod.request);
    node.pods.push(pod);
}

fn unplace(node: &mut NodeState, key: &PodKey) {
    let Some(at) = node
        .pods
        .iter()
        .position(|p| (&p.namespace, &p.name) == (&key.0, &key.1))
    else {
        return;
    };
    let pod = node.pods.swap_remove(at);
    node.requested = node.requested.minus(pod.request);
}

/// What a pod reserves on its node: memory and a slot for each reserved
/// instance, and its CPU.
pub fn request_of(spec: &skiff_api::kinds::pod::PodSpec) -> Resources {
    let r = &spec.resources;
    let reserved = u64::from(r.reserved_instances.unwrap_or(1));
    let memory = r
        .memory
        .as_deref()
        .and_then(|m| parse_bytes(m).ok())
        .unwrap_or(128 << 20);
    Resources {
        memory: memory * reserved,
        instances: reserved,
        cpu: r.cpu.as_deref().and_then(parse_millicores).unwrap_or(0),
    }
}
