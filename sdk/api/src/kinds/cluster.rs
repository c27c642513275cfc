//! Cluster-scoped kinds: Namespace (the tenant boundary) and Node (a
//! wasm-node agent and what it offers).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Object;
use super::pod::{Condition, TaintEffect};
use crate::quantity::parse_bytes;
use crate::validate::{Validator, label_key, label_value};

pub type Namespace = Object<NamespaceSpec, NamespaceStatus>;
pub type Node = Object<NodeSpec, NodeStatus>;

/// A route host: a DNS subdomain, or `*.` and one (as in
/// [`crate::policy::validate_policy`] and the Route's `spec.host`).
pub const ROUTE_HOST_PATTERN: &str =
    r"^(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSpec {
    /// What the namespace's tenants may do; only cluster admins write it
    /// (a Namespace is theirs alone to write).
    #[serde(default)]
    pub policy: NamespacePolicy,
}

/// A namespace's tenant policy: the ceiling on everything its own tokens
/// can ask for. Every field has a closed default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespacePolicy {
    /// Which pods may run: `Restricted` (default), `Baseline` or
    /// `Privileged`.
    #[serde(default)]
    pub pod_security: PodSecurityLevel,
    /// The outbound destinations pods here may ever be granted, as
    /// `allowOutbound` rules (default `*`: any public host). A pod's rule
    /// must fall inside one of these; loopback, link-local and private
    /// addresses only where a rule here names the address itself.
    #[serde(default = "default_egress")]
    #[schemars(inner(pattern(crate::validate::ALLOW_RULE_PATTERN)))]
    pub egress: Vec<String>,
    /// Route hosts the namespace may claim, exact (`api.example.com`) or
    /// wildcard (`*.example.com`, which also covers deeper wildcards).
    /// None by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(length(max = 253), pattern(ROUTE_HOST_PATTERN)))]
    pub route_hosts: Vec<String>,
    /// The highest `priority` a pod here may have (default 0). Only a
    /// priority above 0, which a cluster admin must have granted, may
    /// preempt another namespace's pods.
    #[serde(default)]
    pub max_priority: i32,
    /// Resources a pod here gets for each it does not name, before the
    /// cluster's own defaults: fuel for every pod of a tenant, say.
    #[serde(default, skip_serializing_if = "PodDefaults::is_empty")]
    pub pod_defaults: PodDefaults,
}

/// A namespace's defaults for its pods' Wasm limits, as `resources` names
/// them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::BYTES_PATTERN))]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::FUEL_PATTERN))]
    pub fuel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::DURATION_PATTERN))]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_instances: Option<u32>,
}

impl PodDefaults {
    pub fn is_empty(&self) -> bool {
        *self == PodDefaults::default()
    }
}

fn default_egress() -> Vec<String> {
    vec!["*".into()]
}

impl Default for NamespacePolicy {
    fn default() -> Self {
        Self {
            pod_security: PodSecurityLevel::default(),
            egress: default_egress(),
            route_hosts: Vec::new(),
            max_priority: 0,
            pod_defaults: PodDefaults::default(),
        }
    }
}

/// How much of the node a namespace's pods may touch.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum PodSecurityLevel {
    /// Components only, without host paths: the Wasm sandbox and nothing
    /// more. (Linux pods share the node's network today, so they are not
    /// Restricted.)
    #[default]
    Restricted,
    /// Linux pods too, on the node's network, but never as root, without
    /// added capabilities or host paths.
    Baseline,
    /// Anything: host paths, root, added capabilities.
    Privileged,
}

impl PodSecurityLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            PodSecurityLevel::Restricted => "Restricted",
            PodSecurityLevel::Baseline => "Baseline",
            PodSecurityLevel::Privileged => "Privileged",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceStatus {
    /// `Active`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// Cordoned: no new pods are scheduled here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unschedulable: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    #[schemars(length(max = 253), pattern(crate::validate::LABEL_KEY_PATTERN))]
    pub key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 63), pattern(crate::validate::LABEL_VALUE_PATTERN))]
    pub value: String,
    pub effect: TaintEffect,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<NodeResources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocatable: Option<NodeResources>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
    /// Runtimes and versions the node reports (e.g. `wasmtime`, `containerd`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_info: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeResources {
    /// Memory for instances, e.g. `8Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::BYTES_PATTERN))]
    pub memory: Option<String>,
    /// Concurrent instance slots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<u32>,
    /// CPU in cores or millicores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::validate::CPU_PATTERN))]
    pub cpu: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAddress {
    /// `InternalIP`, `Hostname`, or `Ingress` (host:port of its ingress).
    #[serde(rename = "type")]
    pub address_type: String,
    pub address: String,
}

impl NodeSpec {
    pub fn validate(&self, v: &mut Validator) {
        for (i, taint) in self.taints.iter().enumerate() {
            let field = format!("spec.taints[{i}]");
            if let Err(reason) = label_key(&taint.key).and_then(|()| label_value(&taint.value)) {
                v.error(field, reason);
            }
        }
    }
}

impl NodeStatus {
    pub fn validate(&self, v: &mut Validator) {
        for (name, resources) in [
            ("capacity", &self.capacity),
            ("allocatable", &self.allocatable),
        ] {
            let Some(r) = resources else { continue };
            if let Some(memory) = &r.memory
                && let Err(e) = parse_bytes(memory)
            {
                v.error(format!("status.{name}.memory"), e.to_string());
            }
            if let Some(cpu) = &r.cpu
                && super::pod::parse_millicores(cpu).is_none()
            {
                v.error(
                    format!("status.{name}.cpu"),
                    format!("invalid CPU quantity `{cpu}`"),
                );
            }
        }
    }
}
