//! The scheduler: places unbound pods on nodes. It runs in every
//! control-plane process but acts only in the one holding the scheduler's
//! advisory lock. It keeps a cache of nodes and pods fed by watches, decides
//! with the pure [`decide`] function, and binds with conditional writes, many
//! in flight at once so the store can batch them; a lost race (409) just
//! puts the pod back in the queue.

pub mod decide;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};
use skiff_api::kinds::cluster::Node;
use skiff_api::kinds::pod::{Pod, PodPhase, parse_millicores};
use skiff_api::quantity::parse_bytes;
use skiff_api::selector::{FieldSelector, Selector};
use skiff_api::{EventType, Kind};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::store::{ListQuery, ObjectKey, Part, Store, StoreError, Write};
use crate::watch::{self, WatchHub, WatchRequest};
use decide::{Decision, NodeState, PlacedPod, PodRequest, Resources};

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
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            lease_refresh: Duration::from_secs(1),
            retry: Duration::from_secs(5),
            max_in_flight: 256,
        }
    }
}

/// Starts the scheduler's leadership loop in the background.
pub fn spawn(store: Store, hub: WatchHub, config: SchedulerConfig) {
    tokio::spawn(async move {
        loop {
            match store.try_lead(LEADER_KEY).await {
                Ok(Some(lock)) => {
                    tracing::info!("scheduler: leading");
                    let session = Session::new(store.clone(), hub.clone(), config.clone());
                    tokio::select! {
                        outcome = session.run() => {
                            if let Err(e) = outcome {
                                tracing::warn!("scheduler: restarting: {e}");
                            }
                        }
                        () = lock.lost() => tracing::warn!("scheduler: lost leadership"),
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::debug!("scheduler: cannot try for leadership: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
}

/// What the scheduler knows of a pod.
struct CachedPod {
    object: Value,
    revision: i64,
    node: String,
    phase: PodPhase,
    placed: PlacedPod,
    spec: skiff_api::kinds::pod::PodSpec,
    created: String,
}

struct CachedNode {
    labels: BTreeMap<String, String>,
    taints: Vec<skiff_api::kinds::cluster::Taint>,
    unschedulable: bool,
    allocatable: Resources,
}

type PodKey = (String, String);

enum Outcome {
    /// A binding (or preemption) finished; on failure the pod goes back in
    /// the queue.
    Bound {
        pod: PodKey,
        ok: bool,
    },
    Reported,
}

struct Session {
    store: Store,
    hub: WatchHub,
    config: SchedulerConfig,
    nodes: BTreeMap<String, CachedNode>,
    ready: HashSet<String>,
    pods: HashMap<PodKey, CachedPod>,
    /// Pods being bound, with the node they were sent to.
    assumed: HashMap<PodKey, String>,
    /// The Unschedulable message last written per pod, not to write it
    /// again (kept apart from the cache, which events may refresh with an
    /// older status).
    reported: HashMap<PodKey, String>,
    in_flight: JoinSet<Outcome>,
}

impl Session {
    fn new(store: Store, hub: WatchHub, config: SchedulerConfig) -> Self {
        Self {
            store,
            hub,
            config,
            nodes: BTreeMap::new(),
            ready: HashSet::new(),
            pods: HashMap::new(),
            assumed: HashMap::new(),
            reported: HashMap::new(),
            in_flight: JoinSet::new(),
        }
    }

    async fn run(mut self) -> Result<(), StoreError> {
        let node_revision = self.load_nodes().await?;
        let pod_revision = self.load_pods().await?;
        self.refresh_leases().await?;
        let mut nodes = self.follow(Kind::Node, node_revision);
        let mut pods = self.follow(Kind::Pod, pod_revision);
        let mut leases = tokio::time::interval(self.config.lease_refresh);
        let mut retries = tokio::time::interval(self.config.retry);
        let mut dirty = true;
        loop {
            if dirty && self.in_flight.len() < self.config.max_in_flight {
                self.schedule();
                dirty = false;
            }
            tokio::select! {
                event = nodes.recv() => {
                    let event = event.ok_or_else(|| StoreError::Unavailable("node watch ended".into()))?;
                    dirty |= self.apply_node(event)?;
                }
                event = pods.recv() => {
                    let event = event.ok_or_else(|| StoreError::Unavailable("pod watch ended".into()))?;
                    dirty |= self.apply_pod(event)?;
                }
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    if let Ok(Outcome::Bound { pod, ok }) = done
                        && !ok
                    {
                        self.assumed.remove(&pod);
                    }
                    dirty = true;
                }
                _ = leases.tick() => {
                    let before = self.ready.clone();
                    self.refresh_leases().await?;
                    dirty |= before != self.ready;
                }
                _ = retries.tick() => dirty = true,
            }
        }
    }

    fn follow(&self, kind: Kind, from: i64) -> mpsc::Receiver<skiff_api::WatchEvent<Value>> {
        watch::start(
            self.store.clone(),
            &self.hub,
            WatchRequest {
                kind,
                namespace: None,
                labels: Selector::everything(),
                fields: FieldSelector::default(),
                from: Some(from),
                bookmark_interval: Duration::from_secs(3600),
                timeout: Duration::from_secs(365 * 24 * 3600),
            },
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
        Ok(())
    }

    fn apply_node(&mut self, event: skiff_api::WatchEvent<Value>) -> Result<bool, StoreError> {
        match event.event_type {
            EventType::Added | EventType::Modified => self.upsert_node(event.object),
            EventType::Deleted => {
                let name = event.object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default();
                self.nodes.remove(name);
            }
            EventType::Bookmark => return Ok(false),
            EventType::Error => return Err(StoreError::Unavailable("node watch failed".into())),
        }
        Ok(true)
    }

    fn apply_pod(&mut self, event: skiff_api::WatchEvent<Value>) -> Result<bool, StoreError> {
        match event.event_type {
            EventType::Added | EventType::Modified => Ok(self.upsert_pod(event.object)),
            EventType::Deleted => {
                let key = key_of(&event.object);
                self.assumed.remove(&key);
                self.reported.remove(&key);
                // A deleted pod frees room: worth another round.
                Ok(self.pods.remove(&key).is_some())
            }
            EventType::Bookmark => Ok(false),
            EventType::Error => Err(StoreError::Unavailable("pod watch failed".into())),
        }
    }

    fn upsert_node(&mut self, object: Value) {
        let Ok(node) = serde_json::from_value::<Node>(object) else {
            return;
        };
        let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
        let allocatable = Resources {
            memory: allocatable
                .and_then(|a| a.memory.as_deref())
                .and_then(|m| parse_bytes(m).ok())
                .unwrap_or(0),
            instances: allocatable.and_then(|a| a.instances).map_or(0, u64::from),
            cpu: allocatable
                .and_then(|a| a.cpu.as_deref())
                .and_then(parse_millicores)
                .unwrap_or(0),
        };
        self.nodes.insert(
            node.metadata.name.clone(),
            CachedNode {
                labels: node.metadata.labels,
                taints: node.spec.taints,
                unschedulable: node.spec.unschedulable,
                allocatable,
            },
        );
    }

    /// Caches a pod; true when it is (still) waiting for a node.
    fn upsert_pod(&mut self, object: Value) -> bool {
        let Ok(pod) = serde_json::from_value::<Pod>(object.clone()) else {
            return false;
        };
        let key = (pod.metadata.namespace.clone(), pod.metadata.name.clone());
        let revision = pod
            .metadata
            .resource_version
            .as_deref()
            .and_then(|rv| rv.parse().ok())
            .unwrap_or_default();
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
        let waiting = pod.spec.node_name.is_empty();
        self.pods.insert(
            key,
            CachedPod {
                revision,
                node: pod.spec.node_name.clone(),
                phase,
                placed: PlacedPod {
                    namespace: pod.metadata.namespace.clone(),
                    name: pod.metadata.name.clone(),
                    labels: pod.metadata.labels.clone(),
                    priority: pod.spec.priority,
                    request: request_of(&pod.spec),
                },
                created: pod.metadata.creation_timestamp.clone().unwrap_or_default(),
                spec: pod.spec,
                object,
            },
        );
        waiting
    }

    /// The nodes with what is placed on them, assumed bindings included.
    fn snapshot(&self) -> Vec<NodeState> {
        let mut index = HashMap::new();
        let mut nodes: Vec<NodeState> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, (name, node))| {
                index.insert(name.as_str(), i);
                NodeState {
                    name: name.clone(),
                    labels: node.labels.clone(),
                    taints: node.taints.clone(),
                    unschedulable: node.unschedulable,
                    ready: self.ready.contains(name),
                    allocatable: node.allocatable,
                    requested: Resources::default(),
                    pods: Vec::new(),
                }
            })
            .collect();
        for (key, pod) in &self.pods {
            if matches!(pod.phase, PodPhase::Succeeded | PodPhase::Failed) {
                continue;
            }
            let node = if pod.node.is_empty() {
                match self.assumed.get(key) {
                    Some(node) => node.as_str(),
                    None => continue,
                }
            } else {
                pod.node.as_str()
            };
            if let Some(&i) = index.get(node) {
                place(&mut nodes[i], pod.placed.clone());
            }
        }
        nodes
    }

    /// One round: every waiting pod, most important and oldest first.
    fn schedule(&mut self) {
        let mut waiting: Vec<&PodKey> = self
            .pods
            .iter()
            .filter(|(key, pod)| {
                pod.node.is_empty()
                    && pod.phase == PodPhase::Pending
                    && !self.assumed.contains_key(*key)
            })
            .map(|(key, _)| key)
            .collect();
        if waiting.is_empty() {
            return;
        }
        waiting.sort_by(|a, b| {
            let (pa, pb) = (&self.pods[*a], &self.pods[*b]);
            pb.spec
                .priority
                .cmp(&pa.spec.priority)
                .then(pa.created.cmp(&pb.created))
                .then(a.cmp(b))
        });
        let waiting: Vec<PodKey> = waiting.into_iter().cloned().collect();
        let mut nodes = self.snapshot();
        let index: HashMap<String, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        for key in waiting {
            if self.in_flight.len() >= self.config.max_in_flight {
                break;
            }
            let pod = &self.pods[&key];
            let request = PodRequest {
                namespace: &key.0,
                name: &key.1,
                labels: &pod.placed.labels,
                spec: &pod.spec,
                request: pod.placed.request,
            };
            match decide::decide(&request, &nodes) {
                Decision::Bind(node) => {
                    place(&mut nodes[index[&node]], pod.placed.clone());
                    self.bind(key, node, Vec::new());
                }
                Decision::Preempt { node, victims } => {
                    let target = &mut nodes[index[&node]];
                    for victim in &victims {
                        if let Some(v) = target.pods.iter().position(|p| {
                            (p.namespace.as_str(), p.name.as_str())
                                == (victim.0.as_str(), victim.1.as_str())
                        }) {
                            let gone = target.pods.remove(v);
                            target.requested.memory =
                                target.requested.memory.saturating_sub(gone.request.memory);
                            target.requested.instances = target
                                .requested
                                .instances
                                .saturating_sub(gone.request.instances);
                            target.requested.cpu =
                                target.requested.cpu.saturating_sub(gone.request.cpu);
                        }
                    }
                    place(target, pod.placed.clone());
                    tracing::info!(
                        "scheduler: {}/{} preempts {victims:?} on {node}",
                        key.0,
                        key.1
                    );
                    self.bind(key, node, victims);
                }
                Decision::Unschedulable(message) => {
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
        let write = Write::Update {
            key: ObjectKey::new(Kind::Pod, &key.0, &key.1),
            object,
            part: Part::Main,
            expected_revision: Some(pod.revision),
        };
        self.assumed.insert(key.clone(), node);
        let store = self.store.clone();
        self.in_flight.spawn(async move {
            for (namespace, name) in victims {
                let delete = Write::Delete {
                    key: ObjectKey::new(Kind::Pod, &namespace, &name),
                    expected_revision: None,
                    expected_uid: None,
                };
                if let Err(e) = store.write(delete).await
                    && !matches!(e, StoreError::NotFound(_))
                {
                    return Outcome::Bound {
                        pod: key,
                        ok: false,
                    };
                }
            }
            let ok = match store.write(write).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::debug!("scheduler: binding {}/{} failed: {e}", key.0, key.1);
                    false
                }
            };
            Outcome::Bound { pod: key, ok }
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
        let store = self.store.clone();
        self.in_flight.spawn(async move {
            let _ = store.write(write).await;
            Outcome::Reported
        });
    }
}

fn place(node: &mut NodeState, pod: PlacedPod) {
    node.requested.memory += pod.request.memory;
    node.requested.instances += pod.request.instances;
    node.requested.cpu += pod.request.cpu;
    node.pods.push(pod);
}

fn key_of(object: &Value) -> PodKey {
    (
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
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
