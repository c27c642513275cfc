//! ResourceQuota: what a namespace may hold, set by cluster admins. Pure
//! rules only: which resources a quota may cap, what an object uses of
//! them, and whether one more fits. The store applies them inside the
//! write's transaction, so racing creates can never exceed a quota.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::pod::{PodSpec, Resources, parse_millicores};
use super::{Kind, Object};
use crate::quantity::{format_bytes, format_duration, parse_bytes, parse_duration, parse_fuel};
use crate::validate::Validator;

pub type ResourceQuota = Object<ResourceQuotaSpec, ResourceQuotaStatus>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceQuotaSpec {
    /// Caps by resource name: object counts (`pods`, `deployments`,
    /// `services`, `routes`, `secrets`, `configmaps`), sums over the
    /// namespace's pods (`memory`: reserved memory, `instances`: their
    /// `maxInstances`, `cpu`), and caps on each pod (`pod.memory`,
    /// `pod.fuel`, `pod.timeout`, `pod.maxInstances`).
    #[serde(default)]
    #[schemars(schema_with = "hard_schema")]
    pub hard: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceQuotaStatus {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hard: BTreeMap<String, String>,
    /// What the namespace uses now of each capped resource.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub used: BTreeMap<String, String>,
}

/// JSON Schema of `spec.hard`: each resource a quota may cap, with its
/// amount as [`Resource::parse_amount`] reads it (conservatively: amounts
/// small enough never to overflow), and no other key.
fn hard_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    use crate::validate::{
        BYTES_PATTERN as BYTES, CPU_PATTERN as CPU, DURATION_PATTERN as DURATION,
        FUEL_PATTERN as FUEL,
    };
    const COUNT: &str = r"^[0-9]{1,18}$";
    let mut properties = serde_json::Map::new();
    let mut add = |name: &str, pattern: &str| {
        properties.insert(
            name.to_owned(),
            serde_json::json!({"type": "string", "pattern": pattern}),
        );
    };
    for kind in COUNTED {
        add(kind.plural(), COUNT);
    }
    for (name, pattern) in [
        ("tokens", COUNT),
        ("instances", COUNT),
        ("pod.maxInstances", COUNT),
        ("memory", BYTES),
        ("pod.memory", BYTES),
        ("cpu", CPU),
        ("pod.fuel", FUEL),
        ("pod.timeout", DURATION),
    ] {
        add(name, pattern);
    }
    schemars::json_schema!({
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    })
}

/// A resource a quota may cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// How many objects of a kind the namespace holds.
    Count(Kind),
    /// Reserved memory of all pods: `memory` x `reservedInstances`.
    Memory,
    /// `maxInstances` of all pods.
    Instances,
    /// CPU of all pods, in millicores.
    Cpu,
    /// The largest `memory` one pod may ask for per instance.
    PodMemory,
    /// The most `fuel` one pod may have (a pod without fuel is unlimited,
    /// so refused where this is set).
    PodFuel,
    /// The longest `timeout` of one pod.
    PodTimeout,
    /// The most `maxInstances` of one pod.
    PodMaxInstances,
    /// API tokens of the namespace that a person holds: its role tokens
    /// and unexpired service account tokens not bound to a pod (a pod's
    /// own tokens are bounded by its pods).
    Tokens,
}

/// The kinds a quota counts.
pub const COUNTED: [Kind; 7] = [
    Kind::Pod,
    Kind::Deployment,
    Kind::Service,
    Kind::Route,
    Kind::Secret,
    Kind::ConfigMap,
    Kind::ServiceAccount,
];

impl Resource {
    pub fn parse(name: &str) -> Option<Resource> {
        Some(match name {
            "memory" => Resource::Memory,
            "instances" => Resource::Instances,
            "cpu" => Resource::Cpu,
            "pod.memory" => Resource::PodMemory,
            "pod.fuel" => Resource::PodFuel,
            "pod.timeout" => Resource::PodTimeout,
            "pod.maxInstances" => Resource::PodMaxInstances,
            "tokens" => Resource::Tokens,
            plural => Resource::Count(COUNTED.into_iter().find(|k| k.plural() == plural)?),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Resource::Count(kind) => kind.plural(),
            Resource::Memory => "memory",
            Resource::Instances => "instances",
            Resource::Cpu => "cpu",
            Resource::PodMemory => "pod.memory",
            Resource::PodFuel => "pod.fuel",
            Resource::PodTimeout => "pod.timeout",
            Resource::PodMaxInstances => "pod.maxInstances",
            Resource::Tokens => "tokens",
        }
    }

    /// A quantity of this resource in its base unit (bytes, millicores,
    /// fuel, milliseconds, a count).
    pub fn parse_amount(self, text: &str) -> Result<u64, String> {
        let text = text.trim();
        match self {
            Resource::Memory | Resource::PodMemory => parse_bytes(text).map_err(|e| e.to_string()),
            Resource::Cpu => parse_millicores(text)
                .ok_or_else(|| format!("`{text}` is not a CPU quantity such as 2 or 500m")),
            Resource::PodFuel => parse_fuel(text).map_err(|e| e.to_string()),
            Resource::PodTimeout => parse_duration(text)
                .map(|d| d.as_millis() as u64)
                .map_err(|e| e.to_string()),
            Resource::Count(_)
            | Resource::Instances
            | Resource::PodMaxInstances
            | Resource::Tokens => text
                .parse::<u64>()
                .map_err(|_| format!("`{text}` is not a whole number")),
        }
    }

    /// An amount as people write it.
    pub fn format(self, amount: u64) -> String {
        match self {
            Resource::Memory | Resource::PodMemory => format_bytes(amount),
            Resource::Cpu if amount.is_multiple_of(1000) => (amount / 1000).to_string(),
            Resource::Cpu => format!("{amount}m"),
            Resource::PodTimeout => format_duration(std::time::Duration::from_millis(amount)),
            _ => amount.to_string(),
        }
    }

    /// Whether the cap is on each pod rather than on the namespace's sum.
    pub fn per_pod(self) -> bool {
        matches!(
            self,
            Resource::PodMemory
                | Resource::PodFuel
                | Resource::PodTimeout
                | Resource::PodMaxInstances
        )
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl ResourceQuotaSpec {
    pub fn validate(&self, v: &mut Validator) {
        for (name, amount) in &self.hard {
            let field = format!("spec.hard[{name}]");
            match Resource::parse(name) {
                None => v.error(
                    field,
                    "unknown resource; known: pods, deployments, services, routes, secrets, configmaps, serviceaccounts, tokens, memory, instances, cpu, pod.memory, pod.fuel, pod.timeout, pod.maxInstances",
                ),
                Some(resource) => {
                    if let Err(e) = resource.parse_amount(amount) {
                        v.error(field, e);
                    }
                }
            }
        }
    }

    /// The caps, parsed (validation has refused any that do not parse).
    pub fn caps(&self) -> Vec<(Resource, u64)> {
        self.hard
            .iter()
            .filter_map(|(name, amount)| {
                let resource = Resource::parse(name)?;
                Some((resource, resource.parse_amount(amount).ok()?))
            })
            .collect()
    }
}

/// What one pod uses of the namespace's sums, from its admitted (defaulted)
/// spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodUsage {
    pub memory: u64,
    pub instances: u64,
    pub cpu: u64,
}

impl PodUsage {
    pub fn of(spec: &PodSpec) -> PodUsage {
        Self::of_resources(&spec.resources)
    }

    pub fn of_resources(r: &Resources) -> PodUsage {
        let memory = r
            .memory
            .as_deref()
            .and_then(|m| parse_bytes(m).ok())
            .unwrap_or(0);
        PodUsage {
            memory: memory.saturating_mul(u64::from(r.reserved_instances.unwrap_or(1))),
            instances: u64::from(r.max_instances.unwrap_or(0)),
            cpu: r.cpu.as_deref().and_then(parse_millicores).unwrap_or(0),
        }
    }

    pub fn add(&mut self, other: PodUsage) {
        self.memory = self.memory.saturating_add(other.memory);
        self.instances = self.instances.saturating_add(other.instances);
        self.cpu = self.cpu.saturating_add(other.cpu);
    }

    fn get(&self, resource: Resource) -> u64 {
        match resource {
            Resource::Memory => self.memory,
            Resource::Instances => self.instances,
            Resource::Cpu => self.cpu,
            _ => 0,
        }
    }
}

/// What a namespace uses now: object counts by kind, and its pods' sums.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub counts: BTreeMap<Kind, u64>,
    pub pods: PodUsage,
    pub tokens: u64,
}

impl Usage {
    pub fn get(&self, resource: Resource) -> u64 {
        match resource {
            Resource::Count(kind) => self.counts.get(&kind).copied().unwrap_or(0),
            Resource::Tokens => self.tokens,
            other => self.pods.get(other),
        }
    }
}

/// Why an object does not fit a quota: the message names the resource and,
/// for a namespace's sum, what is used and the cap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    #[error("exceeded quota: {resource}, used {used}, hard {hard}{requested}")]
    Exceeded {
        resource: Resource,
        used: String,
        hard: String,
        /// `, requested X` for sums; empty for counts (one more object).
        requested: String,
    },
    #[error("{field}: {value} is above the quota's {resource} of {hard}")]
    PodCap {
        field: String,
        resource: Resource,
        value: String,
        hard: String,
    },
}

/// The per-pod caps of `caps` against one pod spec found at `at`.
pub fn check_pod_caps(
    caps: &[(Resource, u64)],
    spec: &PodSpec,
    at: &str,
) -> Result<(), QuotaError> {
    let r = &spec.resources;
    for &(resource, hard) in caps.iter().filter(|(r, _)| r.per_pod()) {
        let (field, value) = match resource {
            Resource::PodMemory => ("resources.memory", r.memory.clone()),
            Resource::PodFuel => (
                "resources.fuel",
                Some(r.fuel.clone().unwrap_or_else(|| "unlimited".into())),
            ),
            Resource::PodTimeout => ("resources.timeout", r.timeout.clone()),
            Resource::PodMaxInstances => (
                "resources.maxInstances",
                r.max_instances.map(|n| n.to_string()),
            ),
            _ => continue,
        };
        let Some(value) = value else { continue };
        // No fuel is no limit: above any cap.
        let amount = resource.parse_amount(&value).unwrap_or(u64::MAX);
        if amount > hard {
            return Err(QuotaError::PodCap {
                field: format!("{at}.{field}"),
                resource,
                value,
                hard: resource.format(hard),
            });
        }
    }
    Ok(())
}

/// Whether one more object of `kind` (a pod with `pod` usage) fits the
/// namespace's caps given what it uses now.
pub fn check_create(
    caps: &[(Resource, u64)],
    used: &Usage,
    kind: Kind,
    pod: Option<PodUsage>,
) -> Result<(), QuotaError> {
    for &(resource, hard) in caps {
        let (adds, requested) = match resource {
            Resource::Count(counted) if counted == kind => (1, String::new()),
            Resource::Memory | Resource::Instances | Resource::Cpu => match pod {
                Some(pod) if pod.get(resource) > 0 => (
                    pod.get(resource),
                    format!(", requested {}", resource.format(pod.get(resource))),
                ),
                _ => continue,
            },
            _ => continue,
        };
        let now = used.get(resource);
        if now.saturating_add(adds) > hard {
            return Err(QuotaError::Exceeded {
                resource,
                used: resource.format(now),
                hard: resource.format(hard),
                requested,
            });
        }
    }
    Ok(())
}

/// The status a quota shows: its caps and, for those on the namespace,
/// what is used.
pub fn status(spec: &ResourceQuotaSpec, used: &Usage) -> ResourceQuotaStatus {
    let mut status = ResourceQuotaStatus {
        hard: spec.hard.clone(),
        used: BTreeMap::new(),
    };
    for (resource, _) in spec.caps() {
        if !resource.per_pod() {
            status.used.insert(
                resource.name().to_owned(),
                resource.format(used.get(resource)),
            );
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(pairs: &[(&str, &str)]) -> Vec<(Resource, u64)> {
        ResourceQuotaSpec {
            hard: pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }
        .caps()
    }

    fn pod(resources: serde_json::Value) -> PodSpec {
        let mut spec: PodSpec =
            serde_json::from_value(serde_json::json!({"image": "r/x:1", "resources": resources}))
                .unwrap();
        spec.set_defaults();
        spec
    }

    #[test]
    fn counts_stop_at_their_cap_and_say_used_and_hard() {
        let caps = caps(&[("pods", "10"), ("secrets", "0")]);
        let mut used = Usage::default();
        used.counts.insert(Kind::Pod, 9);
        assert_eq!(check_create(&caps, &used, Kind::Pod, None), Ok(()));
        used.counts.insert(Kind::Pod, 10);
        assert_eq!(
            check_create(&caps, &used, Kind::Pod, None)
                .unwrap_err()
                .to_string(),
            "exceeded quota: pods, used 10, hard 10"
        );
        assert_eq!(
            check_create(&caps, &used, Kind::Secret, None)
                .unwrap_err()
                .to_string(),
            "exceeded quota: secrets, used 0, hard 0"
        );
        assert_eq!(check_create(&caps, &used, Kind::ConfigMap, None), Ok(()));
    }

    #[test]
    fn pod_sums_count_reserved_memory_instances_and_cpu() {
        let caps = caps(&[("memory", "1Gi"), ("instances", "150"), ("cpu", "2")]);
        let big = PodUsage::of(&pod(
            serde_json::json!({"memory": "256Mi", "reservedInstances": 2, "cpu": "500m"}),
        ));
        assert_eq!(
            big,
            PodUsage {
                memory: 512 << 20,
                instances: 100,
                cpu: 500
            }
        );
        let mut used = Usage::default();
        assert_eq!(check_create(&caps, &used, Kind::Pod, Some(big)), Ok(()));
        used.pods.add(big);
        assert_eq!(
            check_create(&caps, &used, Kind::Pod, Some(big))
                .unwrap_err()
                .to_string(),
            "exceeded quota: instances, used 100, hard 150, requested 100"
        );
        let small = PodUsage::of(&pod(
            serde_json::json!({"memory": "600Mi", "maxInstances": 10}),
        ));
        assert_eq!(
            check_create(&caps, &used, Kind::Pod, Some(small))
                .unwrap_err()
                .to_string(),
            "exceeded quota: memory, used 512Mi, hard 1Gi, requested 600Mi"
        );
        used.pods.cpu = 1800;
        let cpu = PodUsage::of(&pod(
            serde_json::json!({"memory": "1Mi", "maxInstances": 1, "cpu": "250m"}),
        ));
        assert_eq!(
            check_create(&caps, &used, Kind::Pod, Some(cpu))
                .unwrap_err()
                .to_string(),
            "exceeded quota: cpu, used 1800m, hard 2, requested 250m"
        );
    }

    #[test]
    fn per_pod_caps_name_the_field() {
        let caps = caps(&[
            ("pod.memory", "64Mi"),
            ("pod.fuel", "100M"),
            ("pod.timeout", "5s"),
            ("pod.maxInstances", "20"),
        ]);
        let fits = pod(
            serde_json::json!({"memory": "64Mi", "fuel": "50M", "timeout": "5s", "maxInstances": 20}),
        );
        assert_eq!(check_pod_caps(&caps, &fits, "spec"), Ok(()));
        for (resources, error) in [
            (
                serde_json::json!({"memory": "4Gi", "fuel": "1M", "timeout": "1s", "maxInstances": 1}),
                "spec.resources.memory: 4Gi is above the quota's pod.memory of 64Mi",
            ),
            (
                serde_json::json!({"memory": "1Mi", "timeout": "1s", "maxInstances": 1}),
                "spec.resources.fuel: unlimited is above the quota's pod.fuel of 100000000",
            ),
            (
                serde_json::json!({"memory": "1Mi", "fuel": "1M", "timeout": "24h", "maxInstances": 1}),
                "spec.resources.timeout: 24h is above the quota's pod.timeout of 5s",
            ),
            (
                serde_json::json!({"memory": "1Mi", "fuel": "1M", "timeout": "1s", "maxInstances": 10000}),
                "spec.resources.maxInstances: 10000 is above the quota's pod.maxInstances of 20",
            ),
        ] {
            let spec = pod(resources);
            assert_eq!(
                check_pod_caps(&caps, &spec, "spec")
                    .unwrap_err()
                    .to_string(),
                error
            );
        }
    }

    #[test]
    fn quotas_are_validated_by_name_and_amount() {
        let spec = ResourceQuotaSpec {
            hard: [
                ("pods", "ten"),
                ("gpus", "1"),
                ("memory", "lots"),
                ("cpu", "2"),
            ]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect(),
        };
        let mut v = Validator::default();
        spec.validate(&mut v);
        let errors: Vec<String> = v
            .finish()
            .unwrap_err()
            .iter()
            .map(|e| e.field.clone())
            .collect();
        assert_eq!(
            errors,
            ["spec.hard[gpus]", "spec.hard[memory]", "spec.hard[pods]"]
        );
        let used = Usage {
            counts: [(Kind::Pod, 3)].into_iter().collect(),
            pods: PodUsage {
                memory: 64 << 20,
                instances: 5,
                cpu: 1500,
            },
            tokens: 0,
        };
        let status = status(
            &ResourceQuotaSpec {
                hard: [
                    ("pods", "10"),
                    ("memory", "1Gi"),
                    ("cpu", "4"),
                    ("pod.fuel", "1M"),
                ]
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            },
            &used,
        );
        assert_eq!(
            status.used,
            [("cpu", "1500m"), ("memory", "64Mi"), ("pods", "3")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect::<BTreeMap<_, _>>()
        );
        assert_eq!(status.hard.len(), 4);
    }
}
