//! The columns each kind is listed with: one definition for `wasmctl get`
//! and for the tables the API prints for Kubernetes clients (`kubectl
//! get`), so both show the same thing. Priority 1 columns are the ones
//! `-o wide` adds.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::Kind;

/// One column of a kind's listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// As a table's header names it (`Up-to-date`); `wasmctl get` and
    /// kubectl print it in capitals.
    pub name: &'static str,
    /// 0: always shown; 1: only in the wide listing.
    pub priority: u8,
    pub description: &'static str,
}

const fn column(name: &'static str, priority: u8, description: &'static str) -> Column {
    Column {
        name,
        priority,
        description,
    }
}

const NAME: Column = column("Name", 0, "The object's name, unique in its namespace.");
const AGE: Column = column("Age", 0, "Time since the object was created.");

/// The columns of `kind`, the wide ones (priority 1) last.
pub fn columns(kind: Kind) -> Vec<Column> {
    match kind {
        Kind::Namespace => vec![
            NAME,
            column("Status", 0, "Active, or Terminating while its objects go."),
            AGE,
        ],
        Kind::Node => vec![
            NAME,
            column(
                "Status",
                0,
                "Ready, NotReady or Unknown; SchedulingDisabled when cordoned.",
            ),
            AGE,
            column("Instances", 1, "Wasm instances the node can run at once."),
            column("Memory", 1, "Memory the node gives pods."),
            column("Address", 1, "Where other nodes reach the node."),
        ],
        Kind::Pod => vec![
            NAME,
            column("Ready", 0, "Whether the pod answers: 1/1 or 0/1."),
            column(
                "Status",
                0,
                "The pod's phase, or why it is not running as it should.",
            ),
            column("Restarts", 0, "Times the pod was started again."),
            AGE,
            column("Node", 1, "The node the pod is bound to."),
            column("Image", 1, "The component or Linux image the pod runs."),
        ],
        Kind::Deployment => vec![
            NAME,
            column("Ready", 0, "Ready pods of the replicas wanted."),
            column("Up-to-date", 0, "Pods of the current template."),
            column("Available", 0, "Pods ready long enough to count."),
            column(
                "Autoscale",
                0,
                "Autoscaling bounds, and at-zero with no replica; - when scaled by hand.",
            ),
            AGE,
            column("Image", 1, "The template's image."),
            column("Selector", 1, "Labels of the pods it owns."),
        ],
        Kind::Service => vec![
            NAME,
            column("Selector", 0, "Labels of the pods it sends requests to."),
            column("Ports", 0, "Ports and protocols it serves."),
            column("Endpoints", 0, "Ready pods of all those it selects."),
            AGE,
        ],
        Kind::Route => vec![
            NAME,
            column("Host", 0, "The host it matches; * for any."),
            column("Path", 0, "The path prefix it matches."),
            column("Service", 0, "The Service it sends requests to."),
            AGE,
        ],
        Kind::Secret => vec![
            NAME,
            column("Type", 0, "What the Secret holds."),
            column("Data", 0, "How many keys it holds."),
            AGE,
        ],
        Kind::ConfigMap => vec![NAME, column("Data", 0, "How many keys it holds."), AGE],
        Kind::ResourceQuota => vec![
            NAME,
            column("Used/Hard", 0, "What the namespace uses of each cap."),
            AGE,
        ],
        Kind::ServiceAccount => vec![
            NAME,
            column("Role", 0, "The role its pods act with in the namespace."),
            AGE,
        ],
        Kind::Event => vec![
            column("Last Seen", 0, "Time since it last happened."),
            column("Type", 0, "Normal or Warning."),
            column("Reason", 0, "Why, in one word."),
            column("Object", 0, "What it is about."),
            column("Message", 0, "What happened."),
            column("Source", 1, "The component (and host) that reported it."),
            column("Count", 1, "How often it happened."),
            column("First Seen", 1, "Time since it first happened."),
            column("Name", 1, "The Event's own name."),
        ],
    }
}

/// One object's cells, a cell per column of [`columns`].
pub fn cells(kind: Kind, object: &Value, now: DateTime<Utc>) -> Vec<String> {
    let text = |pointer: &str| object.pointer(pointer).map(plain).unwrap_or_default();
    let count = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_object)
            .map_or(0, |m| m.len())
    };
    let age = age(object["metadata"]["creationTimestamp"].as_str(), now);
    let name = text("/metadata/name");
    match kind {
        Kind::Namespace => vec![name, or_dash(text("/status/phase")), age],
        Kind::Node => vec![
            name,
            node_status(object),
            age,
            or_dash(text("/status/allocatable/instances")),
            or_dash(text("/status/allocatable/memory")),
            or_dash(
                object["status"]["addresses"]
                    .as_array()
                    .and_then(|a| a.first())
                    .map(|a| plain(&a["address"]))
                    .unwrap_or_default(),
            ),
        ],
        Kind::Pod => {
            let ready = condition(object, "Ready") == Some("True");
            vec![
                name,
                format!("{}/1", u8::from(ready)),
                pod_status(object),
                object["status"]["restartCount"]
                    .as_u64()
                    .unwrap_or(0)
                    .to_string(),
                age,
                or_dash(text("/spec/nodeName")),
                text("/spec/image"),
            ]
        }
        Kind::Deployment => {
            let replicas = object["spec"]["replicas"].as_u64().unwrap_or(0);
            let status = &object["status"];
            let n = |field: &str| status[field].as_u64().unwrap_or(0).to_string();
            vec![
                name,
                format!("{}/{replicas}", n("readyReplicas")),
                n("updatedReplicas"),
                n("availableReplicas"),
                autoscale(&object["spec"]),
                age,
                text("/spec/template/spec/image"),
                key_values(&object["spec"]["selector"]["matchLabels"]),
            ]
        }
        Kind::Service => {
            let selector = key_values(&object["spec"]["selector"]);
            let ports = object["spec"]["ports"]
                .as_array()
                .map(|ports| {
                    ports
                        .iter()
                        .map(|p| {
                            format!(
                                "{}/{}",
                                plain(&p["port"]),
                                p["protocol"].as_str().unwrap_or("HTTP")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            let ready = object["status"]["endpoints"].as_array().map_or(0, Vec::len);
            let not_ready = object["status"]["notReady"].as_u64().unwrap_or(0);
            let endpoints = format!("{ready}/{}", ready as u64 + not_ready);
            vec![name, or_dash(selector), or_dash(ports), endpoints, age]
        }
        Kind::Route => vec![
            name,
            if text("/spec/host").is_empty() {
                "*".into()
            } else {
                text("/spec/host")
            },
            text("/spec/path"),
            text("/spec/service"),
            age,
        ],
        Kind::Secret => vec![name, text("/type"), count("/data").to_string(), age],
        Kind::ConfigMap => vec![
            name,
            (count("/data") + count("/binaryData")).to_string(),
            age,
        ],
        Kind::ResourceQuota => vec![name, or_dash(quota_summary(object)), age],
        Kind::ServiceAccount => vec![name, or_dash(text("/spec/role")), age],
        Kind::Event => {
            let source = &object["source"];
            let mut from = plain(&source["component"]);
            if let Some(host) = source["host"].as_str().filter(|h| !h.is_empty()) {
                from = format!("{from}, {host}");
            }
            vec![
                self::age(object["lastTimestamp"].as_str(), now),
                text("/type"),
                text("/reason"),
                event_object(object),
                text("/message"),
                or_dash(from),
                text("/count"),
                self::age(object["firstTimestamp"].as_str(), now),
                name,
            ]
        }
    }
}

/// A quota's caps as `used/hard` (`pods: 3/10`), or `hard` alone for the
/// caps on each pod (`pod.memory: 64Mi`), in its `spec.hard` order.
pub fn quota_summary(quota: &Value) -> String {
    quota["spec"]["hard"]
        .as_object()
        .into_iter()
        .flatten()
        .map(
            |(resource, hard)| match quota["status"]["used"].get(resource) {
                Some(used) => format!("{resource}: {}/{}", plain(used), plain(hard)),
                None => format!("{resource}: {}", plain(hard)),
            },
        )
        .collect::<Vec<_>>()
        .join(", ")
}

/// What an Event is about, as kubectl writes it: `pod/web-1`.
pub fn event_object(event: &Value) -> String {
    let involved = &event["involvedObject"];
    format!(
        "{}/{}",
        plain(&involved["kind"]).to_ascii_lowercase(),
        plain(&involved["name"])
    )
}

/// Time from `timestamp` to `now` the way kubectl prints it: 42s, 5m, 3h,
/// 12d.
pub fn age(timestamp: Option<&str>, now: DateTime<Utc>) -> String {
    let Some(created) = timestamp.and_then(|t| DateTime::parse_from_rfc3339(t).ok()) else {
        return "<unknown>".into();
    };
    let seconds = (now - created.with_timezone(&Utc)).num_seconds().max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// A Deployment's autoscaling bounds (`0-20`), and `,at-zero` when it
/// has no replica; `-` when it is scaled by hand.
fn autoscale(spec: &Value) -> String {
    let autoscaling = &spec["autoscaling"];
    if !autoscaling.is_object() {
        return "-".into();
    }
    let bounds = format!(
        "{}-{}",
        autoscaling["minReplicas"].as_u64().unwrap_or(0),
        autoscaling["maxReplicas"].as_u64().unwrap_or(0)
    );
    match spec["replicas"].as_u64() {
        Some(0) => format!("{bounds},at-zero"),
        _ => bounds,
    }
}

/// A map as `k=v,k2=v2`.
fn key_values(map: &Value) -> String {
    map.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", plain(v)))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn or_dash(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

/// A JSON scalar as plain text.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a str> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?["status"]
        .as_str()
}

/// A pod's phase, or the reason it is not running as it should (e.g.
/// CrashLoopBackOff), as kubectl shows it.
fn pod_status(pod: &Value) -> String {
    if pod["metadata"].get("deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    match pod["status"]["reason"].as_str() {
        Some(reason) if !reason.is_empty() => reason.to_owned(),
        _ => pod["status"]["phase"]
            .as_str()
            .unwrap_or("Pending")
            .to_owned(),
    }
}

fn node_status(node: &Value) -> String {
    let ready = match condition(node, "Ready") {
        Some("True") => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    };
    if node["spec"]["unschedulable"] == true {
        format!("{ready},SchedulingDisabled")
    } else {
        ready.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_kind_has_a_cell_per_column() {
        let now = Utc::now();
        for kind in Kind::ALL {
            let cells = cells(kind, &json!({"metadata": {"name": "x"}}), now);
            assert_eq!(cells.len(), columns(kind).len(), "{kind}");
            // The wide columns come last, so a narrow listing is a prefix.
            let priorities: Vec<u8> = columns(kind).iter().map(|c| c.priority).collect();
            assert!(priorities.is_sorted(), "{kind}: {priorities:?}");
        }
    }

    #[test]
    fn ages() {
        let now = Utc::now();
        assert_eq!(age(None, now), "<unknown>");
        let ago = |secs: i64| (now - chrono::Duration::seconds(secs)).to_rfc3339();
        assert_eq!(age(Some(&ago(30)), now), "30s");
        assert_eq!(age(Some(&ago(600)), now), "10m");
        assert_eq!(age(Some(&ago(5 * 3600)), now), "5h");
        assert_eq!(age(Some(&ago(3 * 86400)), now), "3d");
    }
}
