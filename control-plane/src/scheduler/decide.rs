//! Where a pod should run: a pure function over a snapshot of the nodes.
//! Filters say which nodes can take the pod (and why the others cannot);
//! scoring picks among them; preemption looks for room among lower-priority
//! pods when nothing fits.

use std::collections::{BTreeMap, HashMap};

use skiff_api::kinds::cluster::Taint;
use skiff_api::kinds::pod::{
    LINUX_RUNTIME_LABEL, NodeSelectorTerm, Placement, PodAffinityTerm, PodRuntime, PodSpec,
    TaintEffect, Toleration, TolerationOperator,
};

/// Amounts the scheduler packs nodes by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub memory: u64,
    pub instances: u64,
    /// Millicores.
    pub cpu: u64,
}

impl Resources {
    pub fn plus(self, other: Resources) -> Resources {
        Resources {
            memory: self.memory + other.memory,
            instances: self.instances + other.instances,
            cpu: self.cpu + other.cpu,
        }
    }

    /// Never below zero.
    pub fn minus(self, other: Resources) -> Resources {
        Resources {
            memory: self.memory.saturating_sub(other.memory),
            instances: self.instances.saturating_sub(other.instances),
            cpu: self.cpu.saturating_sub(other.cpu),
        }
    }
}

/// A pod already placed on a node.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedPod {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub priority: i32,
    pub request: Resources,
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeState {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    /// Its lease is current.
    pub ready: bool,
    pub allocatable: Resources,
    pub requested: Resources,
    pub pods: Vec<PlacedPod>,
}

/// The pod to place.
#[derive(Debug, Clone, Copy)]
pub struct PodRequest<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub spec: &'a PodSpec,
    /// The runtime the pod needs: its own `runtime`, or its image's.
    pub runtime: Option<PodRuntime>,
    pub request: Resources,
    /// The node it would rather run on (its `skiff.dev/preferred-node`).
    pub preferred_node: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Bind(String),
    /// Bind to `node` once `victims` (namespace, name) are gone.
    Preempt {
        node: String,
        victims: Vec<(String, String)>,
    },
    /// Nowhere; the message says why, node by node.
    Unschedulable(String),
}

/// Why a node cannot take the pod, in the words of the Unschedulable
/// message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Misfit {
    NotReady,
    Cordoned,
    NoLinuxRuntime,
    NodeSelector,
    NodeAffinity,
    Taint,
    Memory,
    Instances,
    Cpu,
    PodAffinity,
    PodAntiAffinity,
}

impl Misfit {
    fn text(self) -> &'static str {
        match self {
            Misfit::NotReady => "not ready",
            Misfit::Cordoned => "cordoned",
            Misfit::NoLinuxRuntime => "no Linux runtime",
            Misfit::NodeSelector => "node selector not matched",
            Misfit::NodeAffinity => "node affinity not matched",
            Misfit::Taint => "taint not tolerated",
            Misfit::Memory => "insufficient memory",
            Misfit::Instances => "insufficient instance slots",
            Misfit::Cpu => "insufficient cpu",
            Misfit::PodAffinity => "pod affinity not matched",
            Misfit::PodAntiAffinity => "pod anti-affinity conflict",
        }
    }

    /// Misfits that evicting lower-priority pods could cure.
    fn is_capacity(self) -> bool {
        matches!(self, Misfit::Memory | Misfit::Instances | Misfit::Cpu)
    }
}

/// Whether [`decide`] would bind `pod` to `node`, its preferred node,
/// whatever the other nodes are: it fits there without preempting, no
/// soft taint there keeps it away, and nothing in it weighs other nodes
/// (pod affinity or anti-affinity, preferred node affinity), so the
/// preference outscores any other node. Lets a pod be bound by whoever
/// knows this one node, without the scheduler's view of all of them.
pub fn binds_to_preferred(pod: &PodRequest<'_>, node: &NodeState) -> bool {
    if pod.preferred_node != Some(node.name.as_str()) {
        return false;
    }
    if let Some(affinity) = &pod.spec.affinity
        && (affinity.pod_affinity.is_some()
            || affinity.pod_anti_affinity.is_some()
            || affinity
                .node_affinity
                .as_ref()
                .is_some_and(|a| !a.preferred.is_empty()))
    {
        return false;
    }
    let soft_taint = node
        .taints
        .iter()
        .any(|t| t.effect == TaintEffect::PreferNoSchedule && !tolerated(t, &pod.spec.tolerations));
    !soft_taint && decide(pod, std::slice::from_ref(node)) == Decision::Bind(node.name.clone())
}

/// Decides where `pod` goes among `nodes`.
pub fn decide(pod: &PodRequest<'_>, nodes: &[NodeState]) -> Decision {
    let topology = Topology::of(nodes);
    let mut misfits: HashMap<Misfit, usize> = HashMap::new();
    let mut best: Option<(i64, &str)> = None;
    for node in nodes {
        match misfit(pod, node, &topology) {
            Some(why) => *misfits.entry(why).or_default() += 1,
            None => {
                let score = score(pod, node, &topology);
                // Highest score wins; ties go to the first name.
                if best.is_none_or(|(s, n)| score > s || (score == s && node.name.as_str() < n)) {
                    best = Some((score, &node.name));
                }
            }
        }
    }
    if let Some((_, node)) = best {
        return Decision::Bind(node.to_owned());
    }
    if let Some(preemption) = preempt(pod, nodes, &topology) {
        return preemption;
    }
    Decision::Unschedulable(explain(nodes.len(), &misfits))
}

/// `0/3 nodes: 2 insufficient memory, 1 taint not tolerated`.
fn explain(total: usize, misfits: &HashMap<Misfit, usize>) -> String {
    if total == 0 {
        return "0/0 nodes: no nodes are registered".into();
    }
    let mut reasons: Vec<(usize, Misfit)> = misfits.iter().map(|(m, n)| (*n, *m)).collect();
    reasons.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let parts: Vec<String> = reasons
        .iter()
        .map(|(n, m)| format!("{n} {}", m.text()))
        .collect();
    format!("0/{total} nodes: {}", parts.join(", "))
}

/// The first reason `node` cannot take `pod`, or `None` if it can.
fn misfit(pod: &PodRequest<'_>, node: &NodeState, topology: &Topology<'_>) -> Option<Misfit> {
    if let Some(why) = placement_misfit(pod, node) {
        return Some(why);
    }
    if let Some(why) = capacity_misfit(node.allocatable, node.requested, pod.request) {
        return Some(why);
    }
    pod_affinity_misfit(pod, node, topology)
}

/// Misfits no eviction can cure: readiness, cordon, selectors, taints.
fn placement_misfit(pod: &PodRequest<'_>, node: &NodeState) -> Option<Misfit> {
    let spec = pod.spec;
    if !node.ready {
        return Some(Misfit::NotReady);
    }
    if node.unschedulable {
        return Some(Misfit::Cordoned);
    }
    // Nodes without containerd say so in this label (see wasm-node).
    if pod.runtime == Some(PodRuntime::Linux)
        && node.labels.get(LINUX_RUNTIME_LABEL).map(String::as_str) != Some("true")
    {
        return Some(Misfit::NoLinuxRuntime);
    }
    if !spec
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
    {
        return Some(Misfit::NodeSelector);
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .map(|n| n.required.as_slice())
        .unwrap_or_default();
    if !required.is_empty() && !required.iter().any(|term| term_matches(term, &node.labels)) {
        return Some(Misfit::NodeAffinity);
    }
    let blocking = node
        .taints
        .iter()
        .filter(|t| t.effect != TaintEffect::PreferNoSchedule)
        .any(|t| !tolerated(t, &spec.tolerations));
    blocking.then_some(Misfit::Taint)
}

fn capacity_misfit(
    allocatable: Resources,
    requested: Resources,
    request: Resources,
) -> Option<Misfit> {
    let after = requested.plus(request);
    if after.memory > allocatable.memory {
        Some(Misfit::Memory)
    } else if after.instances > allocatable.instances {
        Some(Misfit::Instances)
    } else if request.cpu > 0 && after.cpu > allocatable.cpu {
        Some(Misfit::Cpu)
    } else {
        None
    }
}

fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>) -> bool {
    term.match_expressions.iter().all(|r| r.matches(labels))
}

fn tolerated(taint: &Taint, tolerations: &[Toleration]) -> bool {
    tolerations.iter().any(|t| {
        let key =
            t.key.is_empty() && t.operator == TolerationOperator::Exists || t.key == taint.key;
        let value = t.operator == TolerationOperator::Exists || t.value == taint.value;
        let effect = t.effect.is_none_or(|e| e == taint.effect);
        key && value && effect
    })
}

/// Which pods sit in which topology domain, for pod (anti-)affinity.
struct Topology<'a> {
    nodes: &'a [NodeState],
}

impl<'a> Topology<'a> {
    fn of(nodes: &'a [NodeState]) -> Self {
        Self { nodes }
    }

    /// Pods matching `term` (for a pod in `namespace`) in the domain of
    /// `node` for the term's topology key; `None` when the node has no such
    /// key.
    fn matching_in_domain(
        &self,
        term: &PodAffinityTerm,
        namespace: &str,
        node: &NodeState,
    ) -> Option<usize> {
        let domain = node.labels.get(&term.topology_key)?;
        Some(
            self.nodes
                .iter()
                .filter(|n| n.labels.get(&term.topology_key) == Some(domain))
                .flat_map(|n| &n.pods)
                .filter(|p| term_selects(term, namespace, p))
                .count(),
        )
    }

    fn matching_anywhere(&self, term: &PodAffinityTerm, namespace: &str) -> bool {
        self.nodes
            .iter()
            .flat_map(|n| &n.pods)
            .any(|p| term_selects(term, namespace, p))
    }
}

fn term_selects(term: &PodAffinityTerm, namespace: &str, pod: &PlacedPod) -> bool {
    let in_scope = if term.namespaces.is_empty() {
        pod.namespace == namespace
    } else {
        term.namespaces.contains(&pod.namespace)
    };
    in_scope && term.label_selector.matches(&pod.labels)
}

fn pod_affinity_misfit(
    pod: &PodRequest<'_>,
    node: &NodeState,
    topology: &Topology<'_>,
) -> Option<Misfit> {
    let affinity = pod.spec.affinity.as_ref()?;
    if let Some(wanted) = &affinity.pod_affinity {
        for term in &wanted.required {
            let here = topology.matching_in_domain(term, pod.namespace, node);
            // The first pod of a group that wants to be together may go
            // anywhere with the topology key.
            let first_of_its_kind = !topology.matching_anywhere(term, pod.namespace)
                && term.label_selector.matches(pod.labels);
            match here {
                Some(n) if n > 0 => {}
                Some(_) if first_of_its_kind => {}
                _ => return Some(Misfit::PodAffinity),
            }
        }
    }
    if let Some(unwanted) = &affinity.pod_anti_affinity {
        for term in &unwanted.required {
            if topology
                .matching_in_domain(term, pod.namespace, node)
                .unwrap_or(0)
                > 0
            {
                return Some(Misfit::PodAntiAffinity);
            }
        }
    }
    None
}

/// Higher is better.
fn score(pod: &PodRequest<'_>, node: &NodeState, topology: &Topology<'_>) -> i64 {
    let after = node.requested.plus(pod.request);
    let share = |used: u64, total: u64| {
        if total == 0 {
            0.0
        } else {
            used as f64 / total as f64
        }
    };
    let mut sum = share(after.memory, node.allocatable.memory)
        + share(after.instances, node.allocatable.instances);
    let mut dimensions = 2.0;
    if pod.request.cpu > 0 && node.allocatable.cpu > 0 {
        sum += share(after.cpu, node.allocatable.cpu);
        dimensions += 1.0;
    }
    // In hundredths of a percent: a small pod on a large node moves its
    // utilisation by well under a percent, and Spread must still see it.
    let utilisation = (sum / dimensions * 10_000.0).round() as i64;
    let mut score = match pod.spec.placement {
        Placement::BinPack => utilisation,
        Placement::Spread => 10_000 - utilisation,
    };
    // Preference weights (1 to 100) count in percentage points.
    let weight = |w: i32| i64::from(w) * 100;
    let soft_taints = node
        .taints
        .iter()
        .filter(|t| {
            t.effect == TaintEffect::PreferNoSchedule && !tolerated(t, &pod.spec.tolerations)
        })
        .count() as i64;
    // Not on a node that asks pods to stay away, which it would outweigh.
    // One more than a weight of 100: it wins even the tie with a node
    // whose utilisation scores the most there is.
    if pod.preferred_node == Some(node.name.as_str()) && soft_taints == 0 {
        score += weight(100) + 1;
    }
    if let Some(affinity) = &pod.spec.affinity {
        if let Some(node_affinity) = &affinity.node_affinity {
            for preferred in &node_affinity.preferred {
                if term_matches(&preferred.preference, &node.labels) {
                    score += weight(preferred.weight);
                }
            }
        }
        if let Some(wanted) = &affinity.pod_affinity {
            for preferred in &wanted.preferred {
                if topology
                    .matching_in_domain(&preferred.pod_affinity_term, pod.namespace, node)
                    .unwrap_or(0)
                    > 0
                {
                    score += weight(preferred.weight);
                }
            }
        }
        if let Some(unwanted) = &affinity.pod_anti_affinity {
            for preferred in &unwanted.preferred {
                if topology
                    .matching_in_domain(&preferred.pod_affinity_term, pod.namespace, node)
                    .unwrap_or(0)
                    > 0
                {
                    score -= weight(preferred.weight);
                }
            }
        }
    }
    score - 10_000 * soft_taints
}

/// Room made by evicting lower-priority pods: on each node that fails the
/// pod for capacity alone, evict the lowest-priority (then largest) pods
/// until it fits; choose the node needing the fewest, least important
/// victims.
fn preempt(pod: &PodRequest<'_>, nodes: &[NodeState], topology: &Topology<'_>) -> Option<Decision> {
    /// Victims, the highest of their priorities, the node, and who.
    type Candidate<'n> = (usize, i32, &'n str, Vec<(String, String)>);
    let priority = pod.spec.priority;
    let mut best: Option<Candidate<'_>> = None;
    for node in nodes {
        if placement_misfit(pod, node).is_some() {
            continue;
        }
        let Some(why) = capacity_misfit(node.allocatable, node.requested, pod.request) else {
            continue;
        };
        if !why.is_capacity() {
            continue;
        }
        // Tenants share nodes, so a pod takes another namespace's room
        // only with a priority above 0, which its namespace's ceiling
        // (0 unless a cluster admin raised it) must have granted.
        let mut candidates: Vec<&PlacedPod> = node
            .pods
            .iter()
            .filter(|p| p.priority < priority && (priority > 0 || p.namespace == pod.namespace))
            .collect();
        candidates.sort_by(|a, b| {
            a.priority
                .cmp(&b.priority)
                .then(b.request.memory.cmp(&a.request.memory))
                .then(a.name.cmp(&b.name))
        });
        let mut requested = node.requested;
        let mut victims = Vec::new();
        let mut highest = i32::MIN;
        for victim in candidates {
            if capacity_misfit(node.allocatable, requested, pod.request).is_none() {
                break;
            }
            requested = requested.minus(victim.request);
            highest = highest.max(victim.priority);
            victims.push((victim.namespace.clone(), victim.name.clone()));
        }
        if capacity_misfit(node.allocatable, requested, pod.request).is_some() {
            continue;
        }
        let mut after = node.clone();
        after.requested = requested;
        after
            .pods
            .retain(|p| !victims.contains(&(p.namespace.clone(), p.name.clone())));
        if pod_affinity_misfit(pod, &after, topology).is_some() {
            continue;
        }
        let better = best.as_ref().is_none_or(|(count, prio, name, _)| {
            (victims.len(), highest, node.name.as_str()) < (*count, *prio, *name)
        });
        if better {
            best = Some((victims.len(), highest, &node.name, victims));
        }
    }
    best.map(|(_, _, node, victims)| Decision::Preempt {
        node: node.to_owned(),
        victims,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use skiff_api::kinds::pod::PodSpec;

    use super::*;

    const MI: u64 = 1 << 20;

    fn node(name: &str, memory_mi: u64, used_mi: u64) -> NodeState {
        NodeState {
            name: name.into(),
            labels: BTreeMap::from([("skiff.dev/hostname".into(), name.into())]),
            ready: true,
            allocatable: Resources {
                memory: memory_mi * MI,
                instances: 100,
                cpu: 2000,
            },
            requested: Resources {
                memory: used_mi * MI,
                instances: used_mi.min(100) / 64,
                cpu: 0,
            },
            ..Default::default()
        }
    }

    fn spec(extra: serde_json::Value) -> PodSpec {
        let mut base = json!({"image": "x"});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn place(
        spec: &PodSpec,
        labels: &BTreeMap<String, String>,
        memory_mi: u64,
        nodes: &[NodeState],
    ) -> Decision {
        place_preferring(spec, labels, memory_mi, nodes, None)
    }

    fn place_preferring(
        spec: &PodSpec,
        labels: &BTreeMap<String, String>,
        memory_mi: u64,
        nodes: &[NodeState],
        preferred_node: Option<&str>,
    ) -> Decision {
        decide(&request(spec, labels, memory_mi, preferred_node), nodes)
    }

    /// Pod `shop/new` asking for `memory_mi` MiB and one instance slot.
    fn request<'a>(
        spec: &'a PodSpec,
        labels: &'a BTreeMap<String, String>,
        memory_mi: u64,
        preferred_node: Option<&'a str>,
    ) -> PodRequest<'a> {
        PodRequest {
            namespace: "shop",
            name: "new",
            labels,
            spec,
            runtime: spec.runtime,
            request: Resources {
                memory: memory_mi * MI,
                instances: 1,
                cpu: 0,
            },
            preferred_node,
        }
    }

    fn bind(name: &str) -> Decision {
        Decision::Bind(name.into())
    }

    #[test]
    fn bin_packing_prefers_the_fullest_and_spread_the_emptiest() {
        let nodes = [
            node("a", 1024, 100),
            node("b", 1024, 700),
            node("c", 1024, 400),
        ];
        let none = BTreeMap::new();
        assert_eq!(place(&spec(json!({})), &none, 64, &nodes), bind("b"));
        assert_eq!(
            place(&spec(json!({"placement": "Spread"})), &none, 64, &nodes),
            bind("a")
        );
    }

    /// A preferred node wins among those the pod fits, whatever the
    /// placement would choose; one it does not fit is passed over.
    #[test]
    fn a_preferred_node_wins_where_the_pod_fits() {
        let nodes = [
            node("a", 1024, 100),
            node("b", 1024, 700),
            node("c", 1024, 1000),
        ];
        let none = BTreeMap::new();
        let spread = spec(json!({"placement": "Spread"}));
        assert_eq!(place(&spread, &none, 64, &nodes), bind("a"));
        assert_eq!(
            place_preferring(&spread, &none, 64, &nodes, Some("b")),
            bind("b")
        );
        assert_eq!(
            place_preferring(&spec(json!({})), &none, 64, &nodes, Some("a")),
            bind("a")
        );
        // c has 24Mi left: the pod goes where bin packing puts it.
        assert_eq!(
            place_preferring(&spec(json!({})), &none, 64, &nodes, Some("c")),
            bind("b")
        );
        assert_eq!(
            place_preferring(&spec(json!({})), &none, 64, &nodes, Some("nowhere")),
            bind("b")
        );
        // Preferred, even when bin packing would fill another node to the
        // brim, which scores the most utilisation can.
        // (Ties go to the first name, here the full node's.)
        // b is so large that the pod moves its utilisation by nothing.
        let mut brim = [node("a", 1024, 960), node("b", 10_000_000, 0)];
        brim[0].requested.instances = brim[0].allocatable.instances - 1;
        brim[1].allocatable.instances = 1_000_000;
        assert_eq!(
            place_preferring(&spec(json!({})), &none, 64, &brim, Some("b")),
            bind("b")
        );
        // A node that asks pods to stay away is not preferred over it.
        let mut tainted = nodes.clone();
        tainted[0].taints.push(Taint {
            key: "spot".into(),
            value: String::new(),
            effect: TaintEffect::PreferNoSchedule,
        });
        assert_eq!(
            place_preferring(&spread, &none, 64, &tainted, Some("a")),
            bind("b")
        );
    }

    /// A node binds a pod preferring it on its own only where the whole
    /// scheduler would have put it too.
    #[test]
    fn a_preferred_node_binds_alone_only_where_decide_would() {
        let none = BTreeMap::new();
        let binds = |spec: &PodSpec, node: &NodeState, memory_mi: u64, preferred: &str| {
            binds_to_preferred(&request(spec, &none, memory_mi, Some(preferred)), node)
        };
        let plain = spec(json!({}));
        let a = node("a", 1024, 100);
        assert!(binds(&plain, &a, 64, "a"));
        assert!(!binds(&plain, &a, 64, "b"), "another node is preferred");
        assert!(!binds(&plain, &a, 1000, "a"), "it does not fit");
        let mut cordoned = a.clone();
        cordoned.unschedulable = true;
        assert!(!binds(&plain, &cordoned, 64, "a"));
        let mut soft = a.clone();
        soft.taints.push(Taint {
            key: "spot".into(),
            value: String::new(),
            effect: TaintEffect::PreferNoSchedule,
        });
        assert!(!binds(&plain, &soft, 64, "a"), "a soft taint keeps it away");
        let tolerant = spec(json!({"tolerations": [{"key": "spot", "operator": "Exists"}]}));
        assert!(binds(&tolerant, &soft, 64, "a"));
        // What weighs other nodes needs the scheduler's view of them.
        for affinity in [
            json!({"podAntiAffinity": {"required": [{"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": "zone"}]}}),
            json!({"podAffinity": {"preferred": [{"weight": 1, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": "zone"}}]}}),
            json!({"nodeAffinity": {"preferred": [{"weight": 100, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}}]}}),
        ] {
            let spec = spec(json!({"affinity": affinity}));
            assert!(!binds(&spec, &a, 64, "a"), "{affinity}");
        }
        // A required node affinity is a filter, which this node passes.
        let required = spec(
            json!({"affinity": {"nodeAffinity": {"required": [{"matchExpressions": [{"key": "zone", "operator": "Exists"}]}]}}}),
        );
        let mut zoned = a.clone();
        zoned.labels.insert("zone".into(), "z1".into());
        assert!(binds(&required, &zoned, 64, "a"));
        assert!(!binds(&required, &a, 64, "a"));
    }

    #[test]
    fn linux_pods_go_only_to_nodes_with_containerd() {
        let mut wasm_only = node("wasm", 1024, 100);
        wasm_only
            .labels
            .insert(LINUX_RUNTIME_LABEL.into(), "false".into());
        let unlabelled = node("old", 1024, 50);
        let mut linux = node("linux", 1024, 900);
        linux
            .labels
            .insert(LINUX_RUNTIME_LABEL.into(), "true".into());
        let nodes = [wasm_only, unlabelled, linux];
        let none = BTreeMap::new();
        assert_eq!(
            place(&spec(json!({"runtime": "Linux"})), &none, 64, &nodes),
            bind("linux")
        );
        assert_eq!(
            place(&spec(json!({"runtime": "Linux"})), &none, 64, &nodes[..2]),
            Decision::Unschedulable("0/2 nodes: 2 no Linux runtime".into())
        );
        // Wasm pods go anywhere (bin packing: the fullest).
        assert_eq!(place(&spec(json!({})), &none, 64, &nodes), bind("linux"));
        assert_eq!(
            place(&spec(json!({})), &none, 64, &nodes[..2]),
            bind("wasm")
        );
    }

    #[test]
    fn resources_must_fit() {
        let nodes = [node("a", 1024, 1000), node("b", 1024, 900)];
        assert_eq!(
            place(&spec(json!({})), &BTreeMap::new(), 100, &nodes),
            bind("b")
        );
        assert_eq!(
            place(&spec(json!({})), &BTreeMap::new(), 200, &nodes),
            Decision::Unschedulable("0/2 nodes: 2 insufficient memory".into())
        );
        let mut full_slots = node("c", 1024, 0);
        full_slots.requested.instances = 100;
        assert_eq!(
            place(&spec(json!({})), &BTreeMap::new(), 1, &[full_slots]),
            Decision::Unschedulable("0/1 nodes: 1 insufficient instance slots".into())
        );
    }

    #[test]
    fn readiness_and_cordons_exclude_nodes() {
        let mut down = node("a", 1024, 0);
        down.ready = false;
        let mut cordoned = node("b", 1024, 0);
        cordoned.unschedulable = true;
        let nodes = [down, cordoned, node("c", 1024, 0)];
        assert_eq!(
            place(&spec(json!({})), &BTreeMap::new(), 1, &nodes),
            bind("c")
        );
        assert_eq!(
            place(&spec(json!({})), &BTreeMap::new(), 1, &nodes[..2]),
            Decision::Unschedulable("0/2 nodes: 1 not ready, 1 cordoned".into())
        );
    }

    #[test]
    fn node_selectors_and_node_affinity() {
        let mut ssd = node("a", 1024, 0);
        ssd.labels.insert("disk".into(), "ssd".into());
        ssd.labels.insert("gen".into(), "3".into());
        let plain = node("b", 1024, 500);
        let nodes = [ssd, plain];
        let none = BTreeMap::new();
        assert_eq!(
            place(
                &spec(json!({"nodeSelector": {"disk": "ssd"}})),
                &none,
                1,
                &nodes
            ),
            bind("a")
        );
        assert_eq!(
            place(
                &spec(json!({"nodeSelector": {"disk": "nvme"}})),
                &none,
                1,
                &nodes
            ),
            Decision::Unschedulable("0/2 nodes: 2 node selector not matched".into())
        );
        let required = json!({"affinity": {"nodeAffinity": {"required": [
            {"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["2"]}]}
        ]}}});
        assert_eq!(place(&spec(required), &none, 1, &nodes), bind("a"));
        // Preferred affinity outweighs bin packing's pull towards b.
        let preferred = json!({"affinity": {"nodeAffinity": {"preferred": [
            {"weight": 100, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}
        ]}}});
        assert_eq!(place(&spec(preferred), &none, 1, &nodes), bind("a"));
    }

    #[test]
    fn taints_need_tolerations() {
        let mut gpu = node("a", 1024, 800);
        gpu.taints = vec![Taint {
            key: "gpu".into(),
            value: "true".into(),
            effect: TaintEffect::NoSchedule,
        }];
        let mut soft = node("b", 1024, 600);
        soft.taints = vec![Taint {
            key: "old".into(),
            value: String::new(),
            effect: TaintEffect::PreferNoSchedule,
        }];
        let nodes = [gpu.clone(), soft.clone(), node("c", 1024, 0)];
        let none = BTreeMap::new();
        // gpu is refused; soft is fuller but penalised; c wins.
        assert_eq!(place(&spec(json!({})), &none, 1, &nodes), bind("c"));
        let tolerates = json!({"tolerations": [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]});
        assert_eq!(place(&spec(tolerates), &none, 1, &nodes), bind("a"));
        let everything = json!({"tolerations": [{"operator": "Exists"}]});
        assert_eq!(place(&spec(everything), &none, 1, &nodes), bind("a"));
        assert_eq!(
            place(&spec(json!({})), &none, 1, &[gpu]),
            Decision::Unschedulable("0/1 nodes: 1 taint not tolerated".into())
        );
    }

    #[test]
    fn pod_affinity_and_anti_affinity_by_topology() {
        let web = BTreeMap::from([("app".into(), "web".into())]);
        let placed = |name: &str, labels: &BTreeMap<String, String>| PlacedPod {
            namespace: "shop".into(),
            name: name.into(),
            labels: labels.clone(),
            priority: 0,
            request: Resources::default(),
        };
        let mut a = node("a", 1024, 0);
        let mut b = node("b", 1024, 0);
        let c = node("c", 1024, 500);
        a.labels.insert("zone".into(), "z1".into());
        b.labels.insert("zone".into(), "z2".into());
        a.pods.push(placed("web-0", &web));
        let mut nodes = vec![a, b, c];
        nodes[2].labels.insert("zone".into(), "z2".into());

        let together = json!({"affinity": {"podAffinity": {"required": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}
        ]}}});
        assert_eq!(
            place(&spec(together), &BTreeMap::new(), 1, &nodes),
            bind("a")
        );

        let apart = json!({"affinity": {"podAntiAffinity": {"required": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "skiff.dev/hostname"}
        ]}}});
        // Bin packing would pick c anyway; spread picks b, never a.
        let mut spread = spec(apart.clone());
        spread.placement = Placement::Spread;
        assert_eq!(place(&spread, &web, 1, &nodes), bind("b"));
        assert_eq!(
            place(&spec(apart), &web, 1, &nodes[..1]),
            Decision::Unschedulable("0/1 nodes: 1 pod anti-affinity conflict".into())
        );

        // The first pod of a group may go anywhere with the key.
        let first = json!({"affinity": {"podAffinity": {"required": [
            {"labelSelector": {"matchLabels": {"app": "api"}}, "topologyKey": "zone"}
        ]}}});
        let api = BTreeMap::from([("app".into(), "api".into())]);
        assert!(matches!(
            place(&spec(first), &api, 1, &nodes),
            Decision::Bind(_)
        ));
    }

    #[test]
    fn higher_priority_preempts_the_least_important() {
        let mut full = node("a", 1024, 1024);
        full.pods = vec![
            PlacedPod {
                namespace: "shop".into(),
                name: "batch".into(),
                labels: BTreeMap::new(),
                priority: 0,
                request: Resources {
                    memory: 512 * MI,
                    instances: 1,
                    cpu: 0,
                },
            },
            PlacedPod {
                namespace: "shop".into(),
                name: "important".into(),
                labels: BTreeMap::new(),
                priority: 50,
                request: Resources {
                    memory: 512 * MI,
                    instances: 1,
                    cpu: 0,
                },
            },
        ];
        let urgent = spec(json!({"priority": 100}));
        assert_eq!(
            place(&urgent, &BTreeMap::new(), 256, std::slice::from_ref(&full)),
            Decision::Preempt {
                node: "a".into(),
                victims: vec![("shop".into(), "batch".into())]
            }
        );
        // Equal priority preempts nothing.
        assert_eq!(
            place(&spec(json!({})), &BTreeMap::new(), 256, &[full]),
            Decision::Unschedulable("0/1 nodes: 1 insufficient memory".into())
        );
    }

    #[test]
    fn another_namespace_is_preempted_only_with_a_granted_priority() {
        let placed = |namespace: &str, name: &str| PlacedPod {
            namespace: namespace.into(),
            name: name.into(),
            labels: BTreeMap::new(),
            priority: -10,
            request: Resources {
                memory: 1024 * MI,
                instances: 1,
                cpu: 0,
            },
        };
        let mut theirs = node("a", 1024, 1024);
        theirs.pods = vec![placed("other", "batch")];
        let mut ours = node("a", 1024, 1024);
        ours.pods = vec![placed("shop", "batch")];
        // Priority 0 (every namespace's default ceiling) preempts only in
        // its own namespace.
        let ordinary = spec(json!({}));
        assert_eq!(
            place(
                &ordinary,
                &BTreeMap::new(),
                256,
                std::slice::from_ref(&theirs)
            ),
            Decision::Unschedulable("0/1 nodes: 1 insufficient memory".into())
        );
        assert_eq!(
            place(&ordinary, &BTreeMap::new(), 256, &[ours]),
            Decision::Preempt {
                node: "a".into(),
                victims: vec![("shop".into(), "batch".into())]
            }
        );
        // Above 0, granted by a cluster admin, it reaches other namespaces.
        assert_eq!(
            place(
                &spec(json!({"priority": 1})),
                &BTreeMap::new(),
                256,
                &[theirs]
            ),
            Decision::Preempt {
                node: "a".into(),
                victims: vec![("other".into(), "batch".into())]
            }
        );
    }

    #[test]
    fn explains_mixed_reasons_most_common_first() {
        let mut tainted = node("c", 1024, 0);
        tainted.taints = vec![Taint {
            key: "k".into(),
            value: String::new(),
            effect: TaintEffect::NoSchedule,
        }];
        let nodes = [node("a", 1024, 1024), node("b", 1024, 1024), tainted];
        assert_eq!(
            place(&spec(json!({})), &BTreeMap::new(), 64, &nodes),
            Decision::Unschedulable(
                "0/3 nodes: 2 insufficient memory, 1 taint not tolerated".into()
            )
        );
        assert_eq!(
            place(&spec(json!({})), &BTreeMap::new(), 64, &[]),
            Decision::Unschedulable("0/0 nodes: no nodes are registered".into())
        );
    }
}
