//! Node lifecycle: a node whose lease stops being renewed becomes NotReady,
//! and its pods are evicted (deleted, for their owners to replace) once it
//! has been NotReady for the eviction timeout; a node whose renewals resume
//! is Ready again.
//!
//! Silence is measured on this leader's own clock, from the last time it
//! saw a renewal, and every node gets a full lease period from the start of
//! a term: after the control plane itself was down, nodes that could not
//! renew meanwhile are not taken for dead.
//!
//! Deciding is apart from acting: `decide` is pure, given the time, and the
//! loop only gathers leases and nodes and takes the steps it returns.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_api::selector::FieldSelector;

use skiff_api::kinds::event::Severity;
use skiff_client::events::{Recorder, involved};

use crate::store::{Lease, ListQuery, ObjectKey, Part, Store, StoreError, Write};

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
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    renewed_at: chrono::DateTime<chrono::Utc>,
    /// When this leader saw `renewed_at` change (or first saw the node).
    seen: Instant,
    /// Since when this leader has held it NotReady.
    not_ready_since: Option<Instant>,
}

#[derive(Debug, PartialEq)]
enum Step {
    /// Mark the node NotReady, saying why.
    MarkNotReady(String),
    /// Its renewals resumed: mark it Ready again.
    MarkReady,
    /// Delete the pods bound to it.
    Evict,
}

const REASON: &str = "NodeLeaseExpired";

/// One term of leadership.
pub async fn run(store: Store, config: NodeLifecycleConfig) -> Result<(), StoreError> {
    let mut observed: HashMap<String, Observed> = HashMap::new();
    let mut ticks = tokio::time::interval(config.period);
    let events = crate::events::recorder(&store, "node-controller");
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
            let (steps, seen) = decide(
                &node,
                lease,
                observed.remove(name),
                Instant::now(),
                config.eviction_timeout,
            );
            observed.insert(name.to_owned(), seen);
            for step in steps {
                match step {
                    Step::MarkReady => {
                        tracing::info!("node lifecycle: {name} renews its lease again: Ready");
                        set_ready(&store, &node, true, "the node renews its lease").await?;
                        events.emit(
                            involved(Kind::Node, &node),
                            Severity::Normal,
                            "NodeReady",
                            "the node renews its lease again",
                        );
                    }
                    Step::MarkNotReady(message) => {
                        tracing::warn!("node lifecycle: {name} is NotReady: {message}");
                        set_ready(&store, &node, false, &message).await?;
                        events.emit(
                            involved(Kind::Node, &node),
                            Severity::Warning,
                            "NodeNotReady",
                            &message,
                        );
                    }
                    Step::Evict => evict(&store, name, &events).await?,
                }
            }
        }
    }
}

/// What to do about `node` at `now`, given its lease and what this term
/// saw of it `before` (nothing on first sight, which counts as a renewal);
/// also what is seen of it now.
fn decide(
    node: &Value,
    lease: &Lease,
    before: Option<Observed>,
    now: Instant,
    eviction_timeout: Duration,
) -> (Vec<Step>, Observed) {
    let mut seen = before.unwrap_or(Observed {
        renewed_at: lease.renewed_at,
        seen: now,
        not_ready_since: None,
    });
    if seen.renewed_at != lease.renewed_at {
        seen.renewed_at = lease.renewed_at;
        seen.seen = now;
    }
    let grace = Duration::from_millis(u64::try_from(lease.duration_ms).unwrap_or(0));
    let silent = now.saturating_duration_since(seen.seen);
    let marked = is_marked_not_ready(node);
    let mut steps = Vec::new();
    if silent < grace {
        seen.not_ready_since = None;
        if marked {
            steps.push(Step::MarkReady);
        }
        return (steps, seen);
    }
    let since = *seen.not_ready_since.get_or_insert(now);
    if !marked {
        steps.push(Step::MarkNotReady(format!(
            "no lease renewal for {}s",
            silent.as_secs()
        )));
    }
    if now.saturating_duration_since(since) >= eviction_timeout {
        steps.push(Step::Evict);
    }
    (steps, seen)
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
    let write = Write::UpdateRead {
        key: ObjectKey::new(Kind::Node, "", name),
        object: status,
        part: Part::Status,
        read: node.clone(),
    };
    match store.write(write).await {
        Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes the pods bound to `node`, each conditional on its uid.
async fn evict(store: &Store, node: &str, events: &Recorder) -> Result<(), StoreError> {
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
            Ok(_) => events.emit(
                involved(Kind::Pod, &pod),
                Severity::Warning,
                "Evicted",
                format!("node {node} is NotReady: the pod is deleted to run elsewhere"),
            ),
            Err(StoreError::NotFound(_) | StoreError::UidMismatch(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(condition: Value) -> Value {
        json!({"metadata": {"name": "n1"}, "status": {"conditions": [condition]}})
    }

    fn lease(renewed_at: i64) -> Lease {
        Lease {
            node: "n1".into(),
            renewed_at: chrono::DateTime::from_timestamp(1_800_000_000 + renewed_at, 0).unwrap(),
            duration_ms: 10_000,
        }
    }

    struct Case {
        name: &'static str,
        marked_not_ready: bool,
        /// When the lease was renewed, in seconds on the store's clock.
        renewed_at: i64,
        /// What was seen before: the renewal, seconds ago seen, seconds
        /// ago held NotReady.
        before: Option<(i64, u64, Option<u64>)>,
        eviction_timeout: u64,
        steps: Vec<Step>,
        /// What is seen afterwards: seconds ago seen, seconds ago held
        /// NotReady.
        after: (u64, Option<u64>),
    }

    #[test]
    fn lease_silence_decides() {
        let not_ready = |s: &str| Step::MarkNotReady(s.into());
        let cases = vec![
            Case {
                name: "a node seen for the first time has a full lease period",
                marked_not_ready: false,
                renewed_at: 0,
                before: None,
                eviction_timeout: 0,
                steps: vec![],
                after: (0, None),
            },
            Case {
                name: "a new term gives a node marked NotReady a full lease period",
                marked_not_ready: true,
                renewed_at: 0,
                before: None,
                eviction_timeout: 0,
                steps: vec![Step::MarkReady],
                after: (0, None),
            },
            Case {
                name: "a renewal restarts the silence",
                marked_not_ready: false,
                renewed_at: 8,
                before: Some((0, 9, None)),
                eviction_timeout: 0,
                steps: vec![],
                after: (0, None),
            },
            Case {
                name: "silence within the lease's grace is nothing",
                marked_not_ready: false,
                renewed_at: 0,
                before: Some((0, 9, None)),
                eviction_timeout: 0,
                steps: vec![],
                after: (9, None),
            },
            Case {
                name: "silence for the grace marks NotReady and evicts at once by default",
                marked_not_ready: false,
                renewed_at: 0,
                before: Some((0, 12, None)),
                eviction_timeout: 0,
                steps: vec![not_ready("no lease renewal for 12s"), Step::Evict],
                after: (12, Some(0)),
            },
            Case {
                name: "silence of exactly the grace is too long",
                marked_not_ready: false,
                renewed_at: 0,
                before: Some((0, 10, None)),
                eviction_timeout: 60,
                steps: vec![not_ready("no lease renewal for 10s")],
                after: (10, Some(0)),
            },
            Case {
                name: "with an eviction timeout the pods stay at first",
                marked_not_ready: false,
                renewed_at: 0,
                before: Some((0, 12, None)),
                eviction_timeout: 60,
                steps: vec![not_ready("no lease renewal for 12s")],
                after: (12, Some(0)),
            },
            Case {
                name: "a node marked NotReady within the eviction timeout is left",
                marked_not_ready: true,
                renewed_at: 0,
                before: Some((0, 42, Some(30))),
                eviction_timeout: 60,
                steps: vec![],
                after: (42, Some(30)),
            },
            Case {
                name: "its pods are evicted once the eviction timeout is over",
                marked_not_ready: true,
                renewed_at: 0,
                before: Some((0, 72, Some(60))),
                eviction_timeout: 60,
                steps: vec![Step::Evict],
                after: (72, Some(60)),
            },
            Case {
                name: "a mark that did not get written is written again",
                marked_not_ready: false,
                renewed_at: 0,
                before: Some((0, 13, Some(1))),
                eviction_timeout: 60,
                steps: vec![not_ready("no lease renewal for 13s")],
                after: (13, Some(1)),
            },
            Case {
                name: "a node that renews again is Ready again",
                marked_not_ready: true,
                renewed_at: 70,
                before: Some((0, 72, Some(60))),
                eviction_timeout: 60,
                steps: vec![Step::MarkReady],
                after: (0, None),
            },
        ];
        let now = Instant::now() + Duration::from_secs(3600);
        let ago = |s: u64| now - Duration::from_secs(s);
        for case in cases {
            let condition = if case.marked_not_ready {
                json!({"type": "Ready", "status": "False", "reason": REASON})
            } else {
                json!({"type": "Ready", "status": "True"})
            };
            let before = case.before.map(|(renewed_at, seen, since)| Observed {
                renewed_at: lease(renewed_at).renewed_at,
                seen: ago(seen),
                not_ready_since: since.map(ago),
            });
            let (steps, seen) = decide(
                &node(condition),
                &lease(case.renewed_at),
                before,
                now,
                Duration::from_secs(case.eviction_timeout),
            );
            let name = case.name;
            assert_eq!(steps, case.steps, "{name}: steps");
            let expected = Observed {
                renewed_at: lease(case.renewed_at).renewed_at,
                seen: ago(case.after.0),
                not_ready_since: case.after.1.map(ago),
            };
            assert_eq!(seen, expected, "{name}: observed");
        }
    }

    #[test]
    fn only_this_controller_s_not_ready_counts_as_its_mark() {
        let reported = node(json!({"type": "Ready", "status": "False", "reason": "Starting"}));
        assert!(!is_marked_not_ready(&reported));
        let marked = node(json!({"type": "Ready", "status": "False", "reason": REASON}));
        assert!(is_marked_not_ready(&marked));
    }
}
