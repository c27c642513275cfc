//! Tables in kubectl's style: upper-case headers, columns padded to their
//! widest cell and separated by three spaces, per-kind columns.

use serde_json::Value;
use skiff_api::Kind;

/// Renders rows (the first is the header) with aligned columns.
pub fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   ", width = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
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

/// The columns of `kind` (`wide` adds more), with NAMESPACE first when
/// listing across namespaces.
pub fn header(kind: Kind, wide: bool, all_namespaces: bool) -> Vec<String> {
    let mut header: Vec<&str> = Vec::new();
    if all_namespaces && kind.namespaced() {
        header.push("NAMESPACE");
    }
    header.extend(match kind {
        Kind::Namespace => vec!["NAME", "STATUS", "AGE"],
        Kind::Node => vec!["NAME", "STATUS", "AGE"],
        Kind::Pod => vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        Kind::Deployment => vec![
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AUTOSCALE",
            "AGE",
        ],
        Kind::Service => vec!["NAME", "SELECTOR", "PORTS", "ENDPOINTS", "AGE"],
        Kind::Route => vec!["NAME", "HOST", "PATH", "SERVICE", "AGE"],
        Kind::Secret => vec!["NAME", "TYPE", "DATA", "AGE"],
        Kind::ConfigMap => vec!["NAME", "DATA", "AGE"],
        Kind::ResourceQuota => vec!["NAME", "USED/HARD", "AGE"],
        Kind::ServiceAccount => vec!["NAME", "ROLE", "AGE"],
        Kind::Event => vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
    });
    if wide {
        header.extend(match kind {
            Kind::Node => vec!["INSTANCES", "MEMORY", "ADDRESS"],
            Kind::Pod => vec!["NODE", "IMAGE"],
            Kind::Deployment => vec!["IMAGE", "SELECTOR"],
            Kind::Event => vec!["SOURCE", "COUNT", "FIRST SEEN", "NAME"],
            _ => vec![],
        });
    }
    header.into_iter().map(str::to_owned).collect()
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

/// One object's row, matching [`header`].
pub fn row(kind: Kind, object: &Value, wide: bool, all_namespaces: bool) -> Vec<String> {
    let text = |pointer: &str| object.pointer(pointer).map(plain).unwrap_or_default();
    let count = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_object)
            .map_or(0, |m| m.len())
    };
    let age = age(object["metadata"]["creationTimestamp"].as_str());
    let name = text("/metadata/name");
    let mut row = Vec::new();
    if all_namespaces && kind.namespaced() {
        row.push(text("/metadata/namespace"));
    }
    row.extend(match kind {
        Kind::Namespace => vec![name, or_dash(text("/status/phase")), age],
        Kind::Node => vec![name, node_status(object), age],
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
        Kind::Event => vec![
            self::age(object["lastTimestamp"].as_str()),
            text("/type"),
            text("/reason"),
            event_object(object),
            text("/message"),
        ],
    });
    if wide {
        row.extend(match kind {
            Kind::Node => vec![
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
            Kind::Pod => vec![or_dash(text("/spec/nodeName")), text("/spec/image")],
            Kind::Deployment => vec![
                text("/spec/template/spec/image"),
                key_values(&object["spec"]["selector"]["matchLabels"]),
            ],
            Kind::Event => {
                let source = &object["source"];
                let mut from = plain(&source["component"]);
                if let Some(host) = source["host"].as_str().filter(|h| !h.is_empty()) {
                    from = format!("{from}, {host}");
                }
                vec![
                    or_dash(from),
                    text("/count"),
                    self::age(object["firstTimestamp"].as_str()),
                    text("/metadata/name"),
                ]
            }
            _ => vec![],
        });
    }
    row
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

/// Time since `timestamp` the way kubectl prints it: 42s, 5m, 3h, 12d.
pub fn age(timestamp: Option<&str>) -> String {
    let Some(created) = timestamp.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
        return "<unknown>".into();
    };
    let seconds = (chrono::Utc::now() - created.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn columns_align_like_kubectl() {
        let rows = vec![
            vec!["NAME".into(), "STATUS".into(), "AGE".into()],
            vec!["default".into(), "Active".into(), "5m".into()],
            vec!["kube".into(), "Terminating".into(), "12d".into()],
        ];
        assert_eq!(
            render(&rows),
            "NAME      STATUS        AGE\ndefault   Active        5m\nkube      Terminating   12d\n"
        );
    }

    #[test]
    fn pod_rows_show_readiness_and_reason() {
        let pod = json!({
            "metadata": {"name": "web", "namespace": "shop", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"image": "reg/web:v1", "nodeName": "n1"},
            "status": {"phase": "Running", "reason": "CrashLoopBackOff", "restartCount": 4,
                       "conditions": [{"type": "Ready", "status": "False"}]}
        });
        let row = row(Kind::Pod, &pod, true, true);
        assert_eq!(row[..5], ["shop", "web", "0/1", "CrashLoopBackOff", "4"]);
        assert_eq!(row[6..], ["n1", "reg/web:v1"]);
        assert_eq!(header(Kind::Pod, true, true).len(), row.len());
    }

    #[test]
    fn ages() {
        assert_eq!(age(None), "<unknown>");
        let ago = |secs: i64| (chrono::Utc::now() - chrono::Duration::seconds(secs)).to_rfc3339();
        assert_eq!(age(Some(&ago(30))), "30s");
        assert_eq!(age(Some(&ago(600))), "10m");
        assert_eq!(age(Some(&ago(5 * 3600))), "5h");
        assert_eq!(age(Some(&ago(3 * 86400))), "3d");
    }
}
