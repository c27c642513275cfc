//! Pod: one Wasm component (or, through containerd, one Linux image) with
//! its limits, grants and placement constraints.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::outbound::AllowRule;
use crate::quantity::{parse_bytes, parse_duration, parse_fuel};
use crate::selector::{LabelSelector, Requirement};
use crate::validate::{Validator, dns_label, label_key, label_value, validate_dns_label};

use super::Object;

pub type Pod = Object<PodSpec, PodStatus>;

/// Annotation naming the node a pod would rather run on, among those it
/// fits: the scheduler weighs it as a node affinity preference of the
/// greatest weight. The Deployment controller sets it on a function's
/// first pod from zero, for the node that holds its requests.
pub const PREFERRED_NODE_ANNOTATION: &str = "skiff.dev/preferred-node";

/// Defaults applied to a pod's resources when it names none.
pub const DEFAULT_MEMORY: &str = "128Mi";
pub const DEFAULT_TIMEOUT: &str = "30s";
pub const DEFAULT_MAX_INSTANCES: u32 = 100;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSpec {
    /// OCI reference of a Wasm component or Linux image: `registry/repo:tag`
    /// or `registry/repo@sha256:...`.
    #[serde(default)]
    #[schemars(length(max = 255), pattern(IMAGE_PATTERN))]
    pub image: String,
    /// A Secret in the pod's namespace with the registry's credentials:
    /// `username` and `password`, or `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63), pattern(crate::validate::DNS_LABEL_PATTERN))]
    pub image_pull_secret: Option<String>,
    /// When a node asks the registry which digest the image's tag names:
    /// `IfNotPresent` reuses what the node already pulled the tag as (so
    /// pods start without a registry round trip, and while the registry is
    /// down); `Always` asks for every pod. Defaults to `Always` for
    /// `:latest` and untagged images, `IfNotPresent` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Arguments for a command component (after argv[0]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// Outbound HTTP destinations, `[http(s)://]host[:port]`; all else denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(pattern(crate::validate::ALLOW_RULE_PATTERN)))]
    pub allow_outbound: Vec<String>,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Failing this restarts the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// Until this passes the pod is not Ready: no Service sends it traffic
    /// and a rollout does not count it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::validate::label_map_schema")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Linux pods: mount the image's root read-only (`/tmp` stays
    /// writable).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_root_filesystem: bool,
    /// Linux pods: the user the process runs as and the capabilities it
    /// gets beyond the node's short default list. What a namespace's pod
    /// security level allows is checked at admission; `runAsNonRoot` is
    /// checked by the node against the image's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// What runs the image: `Wasm` (wasmtime) or `Linux` (containerd).
    /// Unset, the node decides by the image's media types; `Linux` also
    /// keeps the pod off nodes without containerd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<PodRuntime>,
    /// Higher runs first and may preempt lower when nothing fits.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
    /// How the scheduler picks among nodes that fit: `BinPack` (the fullest,
    /// for density; default) or `Spread` (the emptiest).
    #[serde(default, skip_serializing_if = "Placement::is_default")]
    pub placement: Placement,
    /// The ServiceAccount the pod runs as (`default` unless named); it
    /// must exist, and its role be no more than its creator's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 63), pattern(crate::validate::DNS_LABEL_OR_EMPTY_PATTERN))]
    pub service_account_name: String,
    /// Whether the pod gets a token of its account, short-lived and kept
    /// fresh by its node, at
    /// `/var/run/secrets/skiff/serviceaccount/token`. Off by default: a
    /// pod gets no credential it did not ask for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub automount_service_account_token: bool,
    /// What the pod's node does with it while the node is cut off from
    /// the control plane: `KeepRunning` (default) serves on, and the pod may
    /// run twice once the control plane replaces it elsewhere; `Stop` stops
    /// it before the control plane may evict it (when the node's lease is
    /// about to lapse) and starts it again when the lease is renewed and
    /// the pod is still bound there, so it never runs twice.
    #[serde(default, skip_serializing_if = "PartitionPolicy::is_default")]
    pub partition_policy: PartitionPolicy,
    /// The node the pod is bound to; set once, by the scheduler.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 63), pattern(crate::validate::DNS_LABEL_OR_EMPTY_PATTERN))]
    pub node_name: String,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// Wasm-native resources: what an instance may use, and what the scheduler
/// packs nodes by.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// Linear memory per instance, e.g. `64Mi` (default 128Mi); 1Mi to
    /// 4Gi (the pattern states whole Mi and Gi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^([1-9][0-9]{0,2}Mi|[1-4]Gi)$"))]
    pub memory: Option<String>,
    /// Fuel per request or run, e.g. `50M`; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[1-9][0-9]{0,8}[kKMG]?$"))]
    pub fuel: Option<String>,
    /// Wall-clock limit per request or run, e.g. `5s` (default 30s); 1ms
    /// to 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(
        r"^([1-9][0-9]{0,6}ms|[1-9][0-9]{0,3}s?|[1-9][0-9]{0,2}m|([1-9]|1[0-9]|2[0-4])h)$"
    ))]
    pub timeout: Option<String>,
    /// Concurrent instances (default 100): the most the pod may burst to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000))]
    pub max_instances: Option<u32>,
    /// Instances the scheduler reserves room for on the node, each with
    /// `memory` (default 1). Instances start per request, so an idle pod
    /// holds none; this is what the node must keep available for it.
    /// At most `maxInstances`, which the document cannot say across
    /// fields: it states at most 1, which every `maxInstances` allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1))]
    pub reserved_instances: Option<u32>,
    /// CPU, in cores or millicores (`500m`); for Linux pods and scheduling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::CPU_PATTERN))]
    pub cpu: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    #[schemars(pattern(r"^[^=\u0000]+$"))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVarSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyRef {
    #[schemars(length(max = 63), pattern(crate::validate::DNS_LABEL_PATTERN))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub key: String,
}

/// A directory the component sees at `mountPath`, from exactly one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Volume {
    #[schemars(length(max = 63), pattern(crate::validate::DNS_LABEL_PATTERN))]
    pub name: String,
    #[schemars(pattern(r"^/[^\u0000]*$"))]
    pub mount_path: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<NamedSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<NamedSource>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPathSource {
    #[schemars(pattern(r"^/[^\u0000]*$"))]
    pub path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmptyDirSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::BYTES_PATTERN))]
    pub size_limit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamedSource {
    #[schemars(length(max = 63), pattern(crate::validate::DNS_LABEL_PATTERN))]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 63), pattern(crate::validate::DNS_LABEL_OR_EMPTY_PATTERN))]
    pub name: String,
    #[schemars(range(min = 1, max = 65535))]
    pub port: u32,
    #[serde(default)]
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    #[default]
    Http,
    Tcp,
}

/// An HTTP check the node makes against the pod through its own ingress:
/// any status from 200 to 399 within the timeout passes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    pub http_get: HttpGetAction,
    /// Wait before the first check (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<u32>,
    /// Between checks (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub period_seconds: Option<u32>,
    /// Per check (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<u32>,
    /// Consecutive failures that count (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub failure_threshold: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGetAction {
    /// Default `/`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(pattern(r"^(/[^\u0000]*)?$"))]
    pub path: String,
}

impl Probe {
    pub fn set_defaults(&mut self) {
        if self.http_get.path.is_empty() {
            self.http_get.path = "/".into();
        }
        self.initial_delay_seconds.get_or_insert(0);
        self.period_seconds.get_or_insert(2);
        self.timeout_seconds.get_or_insert(1);
        self.failure_threshold.get_or_insert(3);
    }

    fn validate(&self, v: &mut Validator, at: &str) {
        // Empty is defaulted to `/` after validation.
        if !self.http_get.path.is_empty() && !self.http_get.path.starts_with('/') {
            v.error(format!("{at}.httpGet.path"), "must start with '/'");
        }
        for (name, value) in [
            ("periodSeconds", self.period_seconds),
            ("timeoutSeconds", self.timeout_seconds),
            ("failureThreshold", self.failure_threshold),
        ] {
            if value == Some(0) {
                v.error(format!("{at}.{name}"), "must be at least 1");
            }
        }
    }
}

/// Who a Linux pod's process is, and what it may do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityContext {
    /// The uid the process runs as, in place of the image's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<u32>,
    /// The gid the process runs as, in place of the image's group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<u32>,
    /// Refuse to start when the process would run as uid 0 (the image's
    /// user is 0 or unset and `runAsUser` does not say otherwise). Set by
    /// admission in `Restricted` and `Baseline` namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    /// Capabilities beyond the node's default list, which is empty (pods
    /// share the node's network and are given their port, so not even
    /// `NET_BIND_SERVICE`), e.g. `NET_ADMIN` or `CAP_NET_ADMIN`; only
    /// `Privileged` namespaces may add any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_capabilities: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PodRuntime {
    Wasm,
    Linux,
}

/// The config media type of a Wasm artifact (CNCF Wasm OCI layout).
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The media type of a component layer.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";

impl PodRuntime {
    /// The runtime an artifact needs, from its manifest's media types: Wasm
    /// when a layer is a component or the config is Wasm's, Linux when the
    /// config is an ordinary image config (OCI or Docker v2); `None` for
    /// anything else. Nodes choose a runtime by it, and the scheduler keeps
    /// Linux images off nodes without containerd by it.
    pub fn of_artifact<'a>(
        config_media_type: &str,
        mut layer_media_types: impl Iterator<Item = &'a str>,
    ) -> Option<PodRuntime> {
        if config_media_type == WASM_CONFIG_MEDIA_TYPE
            || layer_media_types.any(|t| t == WASM_LAYER_MEDIA_TYPE)
        {
            Some(PodRuntime::Wasm)
        } else if is_linux_config(config_media_type) {
            Some(PodRuntime::Linux)
        } else {
            None
        }
    }
}

/// Whether a config media type is an ordinary container image's (OCI or
/// Docker's v2).
pub fn is_linux_config(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.config")
        || media_type.starts_with("application/vnd.docker.container.image")
}

/// Label a node carries, `true` or `false`: whether it runs Linux images.
pub const LINUX_RUNTIME_LABEL: &str = "skiff.dev/runtime-linux";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Placement {
    #[default]
    BinPack,
    Spread,
}

impl Placement {
    fn is_default(&self) -> bool {
        *self == Placement::BinPack
    }
}

/// See [`PodSpec::partition_policy`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PartitionPolicy {
    #[default]
    KeepRunning,
    Stop,
}

impl PartitionPolicy {
    fn is_default(&self) -> bool {
        *self == PartitionPolicy::KeepRunning
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
}

impl ImagePullPolicy {
    /// The default for an image reference: `Always` when it names `latest`
    /// or no tag (which moves by design), `IfNotPresent` otherwise.
    pub fn default_for(image: &str) -> Self {
        if image.contains('@') {
            return ImagePullPolicy::IfNotPresent;
        }
        let last = image.rsplit('/').next().unwrap_or(image);
        match last.split_once(':') {
            Some((_, tag)) if tag != "latest" => ImagePullPolicy::IfNotPresent,
            _ => ImagePullPolicy::Always,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Toleration {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    #[serde(default)]
    pub operator: TolerationOperator,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// Empty tolerates every effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TolerationOperator {
    #[default]
    Equal,
    Exists,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Affinity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<NodeAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_affinity: Option<PodAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_anti_affinity: Option<PodAffinity>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAffinity {
    /// The node must match at least one term.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<NodeSelectorTerm>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred: Vec<PreferredNodeTerm>,
}

/// All expressions must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSelectorTerm {
    #[schemars(length(min = 1))]
    pub match_expressions: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreferredNodeTerm {
    /// 1 to 100.
    #[schemars(range(min = 1, max = 100))]
    pub weight: i32,
    pub preference: NodeSelectorTerm,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodAffinity {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<PodAffinityTerm>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred: Vec<WeightedPodAffinityTerm>,
}

/// Pods matching `labelSelector` (in the pod's namespace, or `namespaces`)
/// on nodes with the same value of `topologyKey`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodAffinityTerm {
    pub label_selector: LabelSelector,
    pub topology_key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(length(max = 63), pattern(crate::validate::DNS_LABEL_PATTERN)))]
    pub namespaces: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedPodAffinityTerm {
    #[schemars(range(min = 1, max = 100))]
    pub weight: i32,
    pub pod_affinity_term: PodAffinityTerm,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodStatus {
    #[serde(default)]
    pub phase: PodPhase,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub restart_count: u32,
    /// The digest the image resolved to, which the node pulled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// Where the node serves the pod, `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PodPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl PodPhase {
    /// Succeeded or Failed: the pod will not run again and holds no room.
    pub fn is_finished(self) -> bool {
        matches!(self, PodPhase::Succeeded | PodPhase::Failed)
    }
}

/// A condition in Kubernetes' shape, shared by every kind's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    #[serde(rename = "type")]
    pub condition_type: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<String>,
}

impl PodSpec {
    pub fn set_defaults(&mut self) {
        if self.service_account_name.is_empty() {
            self.service_account_name = super::account::DEFAULT_SERVICE_ACCOUNT.into();
        }
        self.image_pull_policy
            .get_or_insert_with(|| ImagePullPolicy::default_for(&self.image));
        let r = &mut self.resources;
        r.memory.get_or_insert_with(|| DEFAULT_MEMORY.into());
        r.timeout.get_or_insert_with(|| DEFAULT_TIMEOUT.into());
        r.max_instances.get_or_insert(DEFAULT_MAX_INSTANCES);
        r.reserved_instances.get_or_insert(1);
        for probe in [&mut self.liveness_probe, &mut self.readiness_probe]
            .into_iter()
            .flatten()
        {
            probe.set_defaults();
        }
    }

    /// Validates a pod spec found at `at` (`spec`, or
    /// `spec.template.spec` in a Deployment).
    pub fn validate(&self, v: &mut Validator, at: &str) {
        if self.image.is_empty() {
            v.error(format!("{at}.image"), "is required");
        } else if let Err(reason) = image_reference(&self.image) {
            v.error(format!("{at}.image"), reason);
        }
        if let Some(secret) = &self.image_pull_secret {
            validate_dns_label(v, &format!("{at}.imagePullSecret"), secret);
        }
        if !self.service_account_name.is_empty() {
            validate_dns_label(
                v,
                &format!("{at}.serviceAccountName"),
                &self.service_account_name,
            );
        }
        self.resources.validate(v, &format!("{at}.resources"));
        validate_env(v, at, &self.env);
        validate_volumes(v, at, &self.volumes);
        let mut port_names = Vec::new();
        for (i, port) in self.ports.iter().enumerate() {
            let field = format!("{at}.ports[{i}]");
            if !(1..=65535).contains(&port.port) {
                v.error(format!("{field}.port"), "must be between 1 and 65535");
            }
            if !port.name.is_empty() {
                if let Err(reason) = dns_label(&port.name) {
                    v.error(format!("{field}.name"), reason);
                } else if port_names.contains(&&port.name) {
                    v.error(format!("{field}.name"), "must be unique");
                }
                port_names.push(&port.name);
            }
        }
        for (i, rule) in self.allow_outbound.iter().enumerate() {
            if let Err(e) = AllowRule::parse(rule) {
                v.error(format!("{at}.allowOutbound[{i}]"), e.to_string());
            }
        }
        for (key, value) in &self.node_selector {
            if let Err(reason) = label_key(key).and_then(|()| label_value(value)) {
                v.error(format!("{at}.nodeSelector[{key}]"), reason);
            }
        }
        for (i, t) in self.tolerations.iter().enumerate() {
            let field = format!("{at}.tolerations[{i}]");
            if t.operator == TolerationOperator::Exists && !t.value.is_empty() {
                v.error(
                    format!("{field}.value"),
                    "must be empty when operator is Exists",
                );
            }
            if t.operator == TolerationOperator::Equal && t.key.is_empty() {
                v.error(format!("{field}.key"), "is required when operator is Equal");
            }
        }
        if let Some(affinity) = &self.affinity {
            affinity.validate(v, &format!("{at}.affinity"));
        }
        if let Some(probe) = &self.liveness_probe {
            probe.validate(v, &format!("{at}.livenessProbe"));
        }
        if let Some(probe) = &self.readiness_probe {
            probe.validate(v, &format!("{at}.readinessProbe"));
        }
        if !self.node_name.is_empty() {
            validate_dns_label(v, &format!("{at}.nodeName"), &self.node_name);
        }
    }
}

impl Resources {
    fn validate(&self, v: &mut Validator, at: &str) {
        if let Some(memory) = &self.memory {
            match parse_bytes(memory) {
                Ok(bytes) if bytes < 1 << 20 => {
                    v.error(format!("{at}.memory"), "must be at least 1Mi")
                }
                Ok(bytes) if bytes > 4 << 30 => {
                    v.error(format!("{at}.memory"), "must be at most 4Gi")
                }
                Ok(_) => {}
                Err(e) => v.error(format!("{at}.memory"), e.to_string()),
            }
        }
        if let Some(fuel) = &self.fuel {
            match parse_fuel(fuel) {
                Ok(0) => v.error(format!("{at}.fuel"), "must be at least 1"),
                Ok(_) => {}
                Err(e) => v.error(format!("{at}.fuel"), e.to_string()),
            }
        }
        if let Some(timeout) = &self.timeout {
            match parse_duration(timeout) {
                Ok(d) if d.is_zero() => v.error(format!("{at}.timeout"), "must be at least 1ms"),
                Ok(d) if d.as_secs() > 24 * 3600 => {
                    v.error(format!("{at}.timeout"), "must be at most 24h")
                }
                Ok(_) => {}
                Err(e) => v.error(format!("{at}.timeout"), e.to_string()),
            }
        }
        if let Some(n) = self.max_instances
            && !(1..=10_000).contains(&n)
        {
            v.error(format!("{at}.maxInstances"), "must be between 1 and 10000");
        }
        if let Some(reserved) = self.reserved_instances
            && reserved > self.max_instances.unwrap_or(DEFAULT_MAX_INSTANCES)
        {
            v.error(
                format!("{at}.reservedInstances"),
                "must not exceed maxInstances",
            );
        }
        if let Some(cpu) = &self.cpu
            && parse_millicores(cpu).is_none()
        {
            v.error(format!("{at}.cpu"), format!("invalid CPU quantity `{cpu}`: expected cores (`2`, `0.5`) or millicores (`500m`)"));
        }
    }
}

/// CPU as millicores: `500m`, `2`, `0.25`.
pub fn parse_millicores(cpu: &str) -> Option<u64> {
    if let Some(m) = cpu.strip_suffix('m') {
        return m.parse::<u64>().ok().filter(|m| *m > 0);
    }
    let cores: f64 = cpu.parse().ok()?;
    (cores > 0.0 && cores.is_finite()).then(|| (cores * 1000.0).round() as u64)
}

/// What [`image_reference`] accepts, conservatively: lower-case path
/// components, an optional tag and digest (no registry port).
pub const IMAGE_PATTERN: &str = r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9._-]{1,128})?(@sha256:[0-9a-f]{64})?$";

/// Checks the shape of an OCI reference: `[registry/]repository[:tag][@sha256:hex]`.
pub fn image_reference(image: &str) -> Result<(), String> {
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace".into());
    }
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or("digest must be sha256:<64 hex digits>")?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err("digest must be sha256:<64 lower-case hex digits>".into());
        }
    }
    // A tag follows the last ':' after the last '/' (a ':' before it is a
    // registry port).
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repository, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    if repository.is_empty() || repository.ends_with('/') || repository.starts_with('/') {
        return Err("must name a repository, e.g. registry.example.com/app:v1".into());
    }
    // The first component is a registry when it looks like a host.
    let path = match repository.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            if let Some((_, port)) = first.split_once(':')
                && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err("registry port must be a number".into());
            }
            rest
        }
        _ => repository,
    };
    if !path.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'/' | b'.' | b'_' | b'-')
    }) {
        return Err("repository must be lower-case letters, digits, '/', '.', '_' or '-'".into());
    }
    if let Some(tag) = tag
        && (tag.is_empty()
            || tag.len() > 128
            || !tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
    {
        return Err("tag must be 1 to 128 letters, digits, '.', '_' or '-'".into());
    }
    Ok(())
}

fn validate_env(v: &mut Validator, at: &str, env: &[EnvVar]) {
    for (i, var) in env.iter().enumerate() {
        let field = format!("{at}.env[{i}]");
        if var.name.is_empty() || var.name.contains('=') || var.name.contains('\0') {
            v.error(
                format!("{field}.name"),
                "must be non-empty without '=' or NUL",
            );
        }
        match (&var.value, &var.value_from) {
            (Some(_), Some(_)) => v.error(field, "may have value or valueFrom, not both"),
            (None, Some(from)) => match (&from.secret_key_ref, &from.config_map_key_ref) {
                (Some(r), None) | (None, Some(r)) => {
                    validate_dns_label(v, &format!("{field}.valueFrom.name"), &r.name);
                    if r.key.is_empty() {
                        v.error(format!("{field}.valueFrom.key"), "is required");
                    }
                }
                _ => v.error(
                    format!("{field}.valueFrom"),
                    "must have exactly one of secretKeyRef and configMapKeyRef",
                ),
            },
            _ => {}
        }
    }
}

fn validate_volumes(v: &mut Validator, at: &str, volumes: &[Volume]) {
    let mut names = Vec::new();
    for (i, volume) in volumes.iter().enumerate() {
        let field = format!("{at}.volumes[{i}]");
        validate_dns_label(v, &format!("{field}.name"), &volume.name);
        if names.contains(&&volume.name) {
            v.error(format!("{field}.name"), "must be unique");
        }
        names.push(&volume.name);
        if !volume.mount_path.starts_with('/') {
            v.error(format!("{field}.mountPath"), "must be an absolute path");
        }
        let sources = [
            volume.host_path.is_some(),
            volume.empty_dir.is_some(),
            volume.config_map.is_some(),
            volume.secret.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            v.error(
                field.clone(),
                "must have exactly one of hostPath, emptyDir, configMap and secret",
            );
        }
        if let Some(host) = &volume.host_path
            && !host.path.starts_with('/')
        {
            v.error(format!("{field}.hostPath.path"), "must be an absolute path");
        }
        if let Some(size) = volume
            .empty_dir
            .as_ref()
            .and_then(|e| e.size_limit.as_ref())
            && let Err(e) = parse_bytes(size)
        {
            v.error(format!("{field}.emptyDir.sizeLimit"), e.to_string());
        }
        for (source, name) in [
            ("configMap", &volume.config_map),
            ("secret", &volume.secret),
        ] {
            if let Some(named) = name {
                validate_dns_label(v, &format!("{field}.{source}.name"), &named.name);
            }
        }
    }
}

impl Affinity {
    fn validate(&self, v: &mut Validator, at: &str) {
        if let Some(node) = &self.node_affinity {
            for (i, term) in node.required.iter().enumerate() {
                term.validate(v, &format!("{at}.nodeAffinity.required[{i}]"));
            }
            for (i, p) in node.preferred.iter().enumerate() {
                let field = format!("{at}.nodeAffinity.preferred[{i}]");
                validate_weight(v, &field, p.weight);
                p.preference.validate(v, &format!("{field}.preference"));
            }
        }
        for (name, pod) in [
            ("podAffinity", &self.pod_affinity),
            ("podAntiAffinity", &self.pod_anti_affinity),
        ] {
            let Some(pod) = pod else { continue };
            for (i, term) in pod.required.iter().enumerate() {
                term.validate(v, &format!("{at}.{name}.required[{i}]"));
            }
            for (i, w) in pod.preferred.iter().enumerate() {
                let field = format!("{at}.{name}.preferred[{i}]");
                validate_weight(v, &field, w.weight);
                w.pod_affinity_term
                    .validate(v, &format!("{field}.podAffinityTerm"));
            }
        }
    }
}

fn validate_weight(v: &mut Validator, field: &str, weight: i32) {
    if !(1..=100).contains(&weight) {
        v.error(format!("{field}.weight"), "must be between 1 and 100");
    }
}

impl NodeSelectorTerm {
    fn validate(&self, v: &mut Validator, at: &str) {
        if self.match_expressions.is_empty() {
            v.error(format!("{at}.matchExpressions"), "must not be empty");
        }
        for (i, r) in self.match_expressions.iter().enumerate() {
            r.validate(v, &format!("{at}.matchExpressions[{i}]"), true);
        }
    }
}

impl PodAffinityTerm {
    fn validate(&self, v: &mut Validator, at: &str) {
        self.label_selector
            .validate(v, &format!("{at}.labelSelector"));
        if let Err(reason) = label_key(&self.topology_key) {
            v.error(format!("{at}.topologyKey"), reason);
        }
        for (i, ns) in self.namespaces.iter().enumerate() {
            validate_dns_label(v, &format!("{at}.namespaces[{i}]"), ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_defaults_by_tag() {
        use ImagePullPolicy::*;
        for (image, policy) in [
            ("127.0.0.1:5000/hello:v1", IfNotPresent),
            ("127.0.0.1:5000/hello", Always),
            ("127.0.0.1:5000/hello:latest", Always),
            ("localhost:5000/team/app", Always),
            ("ghcr.io/a/b@sha256:0123", IfNotPresent),
        ] {
            assert_eq!(ImagePullPolicy::default_for(image), policy, "{image}");
        }
    }

    #[test]
    fn runtime_by_media_types() {
        let of =
            |config: &str, layers: &[&str]| PodRuntime::of_artifact(config, layers.iter().copied());
        let tar = "application/vnd.oci.image.layer.v1.tar+gzip";
        assert_eq!(
            of(WASM_CONFIG_MEDIA_TYPE, &[WASM_LAYER_MEDIA_TYPE]),
            Some(PodRuntime::Wasm)
        );
        // A single-layer image whose layer is a component.
        assert_eq!(
            of(
                "application/vnd.oci.image.config.v1+json",
                &[WASM_LAYER_MEDIA_TYPE]
            ),
            Some(PodRuntime::Wasm)
        );
        assert_eq!(
            of("application/vnd.oci.image.config.v1+json", &[tar]),
            Some(PodRuntime::Linux)
        );
        assert_eq!(
            of("application/vnd.docker.container.image.v1+json", &[tar]),
            Some(PodRuntime::Linux)
        );
        assert_eq!(of("application/vnd.cncf.helm.config.v1+json", &[tar]), None);
    }

    #[test]
    fn image_references() {
        for ok in [
            "hello",
            "127.0.0.1:5000/hello:v1",
            "registry.example.com/team/app:1.2.3",
            "localhost/app",
            &format!("ghcr.io/a/b@sha256:{}", "a".repeat(64)),
            &format!("ghcr.io/a/b:v1@sha256:{}", "0".repeat(64)),
        ] {
            assert_eq!(image_reference(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "has space",
            "UPPER/case",
            "repo:",
            "repo:bad/tag",
            "repo@sha256:short",
            "/leading",
            &format!("repo@md5:{}", "a".repeat(64)),
        ] {
            assert!(image_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn millicores() {
        assert_eq!(parse_millicores("500m"), Some(500));
        assert_eq!(parse_millicores("2"), Some(2000));
        assert_eq!(parse_millicores("0.25"), Some(250));
        assert_eq!(parse_millicores("0"), None);
        assert_eq!(parse_millicores("-1"), None);
        assert_eq!(parse_millicores("x"), None);
    }
}
