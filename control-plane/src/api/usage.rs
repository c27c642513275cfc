//! What `wasmctl top` shows, metrics-server's role: nodes' and pods' usage
//! as nodes sample it, asked of the nodes when a client asks (through the
//! node API's `/stats`), never written anywhere. Every control-plane
//! process answers alike, whichever one the client reaches.
//!
//! - `GET nodemetrics`: each node's usage next to its allocatable (cluster
//!   admins and metrics tokens).
//! - `GET namespaces/{ns}/podmetrics[?labelSelector=]`: the namespace's
//!   pods (`view` and up there, and metrics tokens); `GET podmetrics`
//!   across namespaces (cluster admins and metrics tokens).
//!
//! A node that does not answer in time is listed under `unavailable` with
//! its reason; the others' figures are still given.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_api::selector::Selector;
use skiff_client::node_api::{NodeSummary, STATS_PATH};

use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::store::ListQuery;

/// How long a node has to answer with its whole summary.
const NODE_DEADLINE: Duration = Duration::from_secs(3);
/// The largest summary read from a node (a node of thousands of pods is
/// well under it).
const MAX_SUMMARY_BYTES: usize = 8 << 20;

fn may_read_all(principal: &Principal) -> bool {
    matches!(
        principal,
        Principal::ClusterAdmin | Principal::MetricsReader
    )
}

/// Nodes asked at once for one request: a cluster of many nodes is asked
/// in waves, not all at once.
const FAN_OUT: usize = 16;

/// Every node's summary (of `namespace`'s pods only, when given), asked
/// [`FAN_OUT`] at a time; failures by node.
async fn summaries(
    state: &AppState,
    nodes: impl IntoIterator<Item = String>,
    namespace: Option<&str>,
) -> (Vec<NodeSummary>, Vec<Value>) {
    use futures::StreamExt as _;
    // The node answers for that namespace alone: a tenant's question
    // costs the node, and the control plane, that namespace's share.
    let path = match namespace {
        Some(ns) => format!("{STATS_PATH}?namespace={ns}"),
        None => STATS_PATH.to_owned(),
    };
    let asks = nodes.into_iter().map(|node| {
        let path = path.clone();
        async move {
            let answer = state
                .nodes
                .get_bytes(&state.store, &node, &path, MAX_SUMMARY_BYTES, NODE_DEADLINE)
                .await
                .and_then(|body| {
                    serde_json::from_slice::<NodeSummary>(&body).map_err(|e| {
                        ApiError::BadGateway(format!("node {node}: its summary is not one: {e}"))
                    })
                });
            (node, answer)
        }
    });
    let answers: Vec<_> = futures::stream::iter(asks)
        .buffer_unordered(FAN_OUT)
        .collect()
        .await;
    let mut found = Vec::new();
    let mut unavailable = Vec::new();
    for (node, answer) in answers {
        match answer {
            // A node speaks for itself only: a summary naming another is
            // taken as this node's.
            Ok(mut summary) => {
                summary.node = node;
                found.push(summary);
            }
            Err(e) => unavailable.push(json!({"node": node, "reason": error_text(e)})),
        }
    }
    (found, unavailable)
}

pub(crate) fn error_text(error: ApiError) -> String {
    match error {
        ApiError::BadGateway(m)
        | ApiError::Unavailable(m)
        | ApiError::NotFound(m)
        | ApiError::BadRequest(m)
        | ApiError::Internal(m) => m,
        other => format!("{other:?}"),
    }
}

pub async fn nodes(state: &AppState, principal: &Principal) -> Result<Response, ApiError> {
    if !may_read_all(principal) {
        return Err(ApiError::Forbidden(
            "nodes' usage is for cluster admins and metrics tokens".into(),
        ));
    }
    let page = state.store.list(Kind::Node, ListQuery::default()).await?;
    let allocatable: HashMap<String, Value> = page
        .items
        .iter()
        .filter_map(|node| {
            let name = node["metadata"]["name"].as_str()?.to_owned();
            Some((name, node["status"]["allocatable"].clone()))
        })
        .collect();
    let (found, unavailable) = summaries(state, allocatable.keys().cloned(), None).await;
    let mut items: Vec<Value> = found
        .into_iter()
        .map(|summary| {
            json!({
                "name": summary.node,
                "windowSeconds": summary.window_seconds,
                "cpuCores": summary.cpu_cores,
                "memoryBytes": summary.memory_bytes,
                "instancesInUse": summary.instances_in_use,
                "instanceSlots": summary.instance_slots,
                "pods": summary.pods.len(),
                "allocatable": allocatable.get(&summary.node).cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    items.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Json(json!({
        "apiVersion": skiff_api::API_VERSION,
        "kind": "NodeMetricsList",
        "items": items,
        "unavailable": unavailable,
    }))
    .into_response())
}

pub async fn pods(
    state: &AppState,
    principal: &Principal,
    namespace: Option<&str>,
    params: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let allowed = match namespace {
        Some(ns) => may_read_all(principal) || principal.role_in(ns).is_some(),
        None => may_read_all(principal),
    };
    if !allowed {
        return Err(ApiError::Forbidden(match namespace {
            Some(ns) => format!("this token may not read pods' usage in namespace {ns}"),
            None => "pods' usage across namespaces is for cluster admins and metrics tokens; name a namespace".into(),
        }));
    }
    if let Some(unknown) = params.keys().find(|k| k.as_str() != "labelSelector") {
        return Err(ApiError::BadRequest(format!(
            "query parameter {}: not known for podmetrics (labelSelector is)",
            unknown.escape_default()
        )));
    }
    let selector = params
        .get("labelSelector")
        .map(|s| Selector::parse(s))
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("labelSelector: {e}")))?;
    let page = state
        .store
        .list(
            Kind::Pod,
            ListQuery {
                namespace,
                labels: selector.as_ref(),
                ..Default::default()
            },
        )
        .await?;
    // The pods asked about, by uid: a node's summary holds every pod it
    // runs, and only these leave.
    let mut wanted: HashMap<String, (String, String, String)> = HashMap::new();
    let mut nodes: BTreeMap<String, ()> = BTreeMap::new();
    for pod in &page.items {
        let meta = &pod["metadata"];
        let (Some(uid), Some(ns), Some(name), Some(node)) = (
            meta["uid"].as_str(),
            meta["namespace"].as_str(),
            meta["name"].as_str(),
            pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()),
        ) else {
            continue;
        };
        wanted.insert(
            uid.to_owned(),
            (ns.to_owned(), name.to_owned(), node.to_owned()),
        );
        nodes.insert(node.to_owned(), ());
    }
    let (found, unavailable) = summaries(state, nodes.into_keys(), namespace).await;
    let mut items: Vec<Value> = found
        .iter()
        .flat_map(|summary| summary.pods.iter().map(move |pod| (summary, pod)))
        .filter_map(|(summary, pod)| {
            let (ns, name, node) = wanted.get(&pod.uid)?;
            // The pod as the API knows it, on the node it is bound to.
            (node == &summary.node).then(|| {
                json!({
                    "namespace": ns,
                    "name": name,
                    "node": node,
                    "windowSeconds": summary.window_seconds,
                    "cpuCores": pod.cpu_cores,
                    "memoryBytes": pod.memory_bytes,
                    "requestsPerSecond": pod.requests_per_second,
                    "meanResponseSeconds": pod.mean_response_seconds,
                    "fuelPerSecond": pod.fuel_per_second,
                })
            })
        })
        .collect();
    items.sort_by(|a, b| {
        (a["namespace"].as_str(), a["name"].as_str())
            .cmp(&(b["namespace"].as_str(), b["name"].as_str()))
    });
    Ok(Json(json!({
        "apiVersion": skiff_api::API_VERSION,
        "kind": "PodMetricsList",
        "items": items,
        "unavailable": unavailable,
    }))
    .into_response())
}
