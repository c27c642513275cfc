//! Node lifecycle: a node whose lease stops being renewed becomes NotReady,
//! and its pods are evicted (deleted, for their owners to replace) once it
//! has been NotReady for the eviction timeout; a node whose renewals resume
//! is Ready again.
//!
//! Silence is measured on this leader's own clock, from the last time it
//! saw a renewal, and every node gets a full lease period from the start of
//! a term: after the control plane itself was down, nodes that could not
//! renew meanwhile are not taken for dead.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_api::selector::FieldSelector;

use crate::store::{ListQuery, ObjectKey, Part, Store, StoreError, Write};

#[derive(Debug, Clone)]
pub struct NodeLifecycleConfig {
    /// How often leases are checked.
    pub period: Duration,
    /// How long a node stays NotReady before its pods are evicted. Wasm
    /// pods are stateless and start in milliseconds, so by default at once.
    pub eviction_timeout: Duration,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        Self {
            period: Duration::from_secs(1),
            eviction_timeout: Duration::ZERO,
        }
    }
}

/// What this term has seen of a node.
struct Observed {
    renewed_at: chrono::DateTime<chrono::Utc>,
    /// When this leader saw `renewed_at` change (or first saw the node).
    seen: Instant,
    /// Since when this leader has held it NotReady.
    not_ready_since: Option<Instant>,
}

const REASON: &str = "NodeLeaseExpired";

/// One term of leadership.
pub async fn run(store: Store, config: NodeLifecycleConfig) -> Result<(), StoreError> {
    let mut observed: HashMap<String, Observed> = HashMap::new();
    let mut ticks = tokio::time::interval(config.period);
    loop {
        ticks.tick().await;
        let (_, leases) = store.leases().await?;
        let nodes = store.list(Kind::Node, ListQuery::default()).await?.items;
        let leases: HashMap<_, _> = leases.into_iter().map(|l| (l.node.clone(), l)).collect();
        observed.retain(|name, _| leases.contains_key(name));
        for node in nodes {
            let name = node["metadata"]["name"].as_str().unwrap_or_default();
            // A node that never renewed a lease has no agent to lose.
            let Some(lease) = leases.get(name) else {
                continue;
            };
            let seen = observed.entry(name.to_owned()).or_insert(Observed {
                renewed_at: lease.renewed_at,
                seen: Instant::now(),
                not_ready_since: None,
            });
            if seen.renewed_at != lease.renewed_at {
                seen.renewed_at = lease.renewed_at;
                seen.seen = Instant::now();
            }
            let grace = Duration::from_millis(u64::try_from(lease.duration_ms).unwrap_or(0));
            let silent = seen.seen.elapsed();
            let marked = is_marked_not_ready(&node);
            if silent < grace {
                seen.not_ready_since = None;
                if marked {
                    tracing::info!("node lifecycle: {name} renews its lease again: Ready");
                    set_ready(&store, &node, true, "the node renews its lease").await?;
                }
                continue;
            }
            let since = *seen.not_ready_since.get_or_insert_with(Instant::now);
            if !marked {
                let message = format!("no lease renewal for {}s", silent.as_secs());
                tracing::warn!("node lifecycle: {name} is NotReady: {message}");
                set_ready(&store, &node, false, &message).await?;
            }
            if since.elapsed() >= config.eviction_timeout {
                evict(&store, name).await?;
            }
        }
    }
}

/// Whether this controller marked the node NotReady (a node reports its
/// own Ready condition at registration; this one only overrides it).
fn is_marked_not_ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "False" && c["reason"] == REASON)
}

/// Writes the Ready condition, conditional on the node's revision (a
/// conflict means the node wrote its status meanwhile; the next check
/// decides again).
async fn set_ready(
    store: &Store,
    node: &Value,
    ready: bool,
    message: &str,
) -> Result<(), StoreError> {
    let mut status = node["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    let mut conditions: Vec<Value> = status["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["type"] != "Ready")
        .collect();
    conditions.push(json!({
        "type": "Ready",
        "status": if ready { "True" } else { "False" },
        "reason": if ready { "LeaseRenewed" } else { REASON },
        "message": message,
        "lastTransitionTime": crate::store::now_rfc3339(),
    }));
    status["conditions"] = json!(conditions);
    let name = node["metadata"]["name"].as_str().unwrap_or_default();
    let write = Write::Update {
        key: ObjectKey::new(Kind::Node, "", name),
        object: status,
        part: Part::Status,
        expected_revision: node["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|rv| rv.parse().ok()),
    };
    match store.write(write).await {
        Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes the pods bound to `node`, each conditional on its uid.
async fn evict(store: &Store, node: &str) -> Result<(), StoreError> {
    let fields = FieldSelector::parse(
        &format!("spec.nodeName={node}"),
        Kind::Pod.selectable_fields(),
    )
    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let pods = store
        .list(
            Kind::Pod,
            ListQuery {
                fields: Some(&fields),
                ..Default::default()
            },
        )
        .await?
        .items;
    for pod in pods {
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        tracing::info!("node lifecycle: evicting {namespace}/{name} from NotReady {node}");
        let delete = Write::Delete {
            key: ObjectKey::new(Kind::Pod, namespace, name),
            expected_revision: None,
            expected_uid: pod["metadata"]["uid"].as_str().map(str::to_owned),
        };
        match store.write(delete).await {
            Ok(_) | Err(StoreError::NotFound(_) | StoreError::UidMismatch(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
