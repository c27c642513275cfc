//! The endpoints controller: keeps each Service's status listing the Ready
//! pods its selector picks, with the ingress of the node serving each, so
//! that every node can route to them.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use skiff_api::Kind;
use skiff_api::kinds::cluster::Node;
use skiff_api::kinds::deployment::Deployment;
use skiff_api::kinds::pod::Pod;
use skiff_api::kinds::service::{Endpoint, Service, ServiceStatus};
use skiff_api::selector::Selector;

use super::reconciler::{Action, Controller};
use crate::store::{JsonFilter, ListQuery, ObjectKey, Part, Store, StoreError, Write};

pub struct Endpoints {
    pub store: Store,
}

/// Where a Deployment keeps its pods' labels, and a Service its selector.
const TEMPLATE_LABELS: &[&str] = &["spec", "template", "metadata", "labels"];
const SELECTOR: &[&str] = &["spec", "selector"];
const ENDPOINTS: &[&str] = &["status", "endpoints"];

impl Endpoints {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Whether an autoscaled Deployment that may go to zero sits behind
    /// `selector` in `namespace`. Postgres picks the Deployments whose
    /// template the selector selects: with a thousand functions in one
    /// namespace, a reconcile reads one, not a thousand.
    async fn scales_from_zero(
        &self,
        namespace: &str,
        selector: &BTreeMap<String, String>,
    ) -> Result<bool, StoreError> {
        let selector = serde_json::to_value(selector).expect("labels serialize");
        let behind = self
            .store
            .list(
                Kind::Deployment,
                ListQuery {
                    namespace: Some(namespace),
                    json: &[JsonFilter::Contains(TEMPLATE_LABELS, &selector)],
                    ..Default::default()
                },
            )
            .await?;
        Ok(behind
            .items
            .into_iter()
            .filter_map(|d| serde_json::from_value::<Deployment>(d).ok())
            .any(|d| {
                d.spec
                    .autoscaling
                    .as_ref()
                    .is_some_and(|a| a.min_replicas == 0)
                    && d.metadata.deletion_timestamp.is_none()
            }))
    }

    /// The Services of `namespace` matching `filter`, by key.
    async fn services(
        &self,
        namespace: &str,
        filter: JsonFilter<'_>,
    ) -> Result<Vec<ObjectKey>, StoreError> {
        let page = self
            .store
            .list(
                Kind::Service,
                ListQuery {
                    namespace: Some(namespace),
                    json: &[filter],
                    ..Default::default()
                },
            )
            .await?;
        Ok(page
            .items
            .iter()
            .filter_map(|s| s["metadata"]["name"].as_str())
            .map(|name| ObjectKey::new(Kind::Service, namespace, name))
            .collect())
    }
}

impl Controller for Endpoints {
    const NAME: &'static str = "endpoints";
    const KIND: Kind = Kind::Service;
    const WATCHES: &'static [Kind] = &[Kind::Pod, Kind::Deployment];

    /// For a pod, the Services that select it or list it among their
    /// endpoints (a pod whose labels changed may have left a selector);
    /// for a Deployment (whose autoscaling decides whether its Services
    /// scale from zero), the Services that select its template. Not every
    /// Service of the namespace: with a thousand functions in one, each
    /// pod's every status write would reconcile a thousand Services. A
    /// not-ready pod that left a selector is counted out by the resync.
    async fn wakes(&self, kind: Kind, object: &Value) -> Result<Vec<ObjectKey>, StoreError> {
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
        let labels = match kind {
            Kind::Deployment => &object["spec"]["template"]["metadata"]["labels"],
            _ => &object["metadata"]["labels"],
        };
        let empty = Value::Object(Default::default());
        let labels = if labels.is_object() { labels } else { &empty };
        let mut services = self
            .services(namespace, JsonFilter::WithinNonEmpty(SELECTOR, labels))
            .await?;
        if kind == Kind::Pod {
            // A pod that left a selector is still among the endpoints the
            // Service lists.
            let pod = object["metadata"]["name"].as_str().unwrap_or_default();
            let listed = serde_json::json!([{ "pod": pod }]);
            services.extend(
                self.services(namespace, JsonFilter::Contains(ENDPOINTS, &listed))
                    .await?,
            );
        }
        Ok(services)
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, StoreError> {
        let Some(stored) = self.store.get(key).await? else {
            return Ok(Action::Done);
        };
        let Ok(service) = serde_json::from_value::<Service>(stored.clone()) else {
            return Ok(Action::Done);
        };
        let mut status = ServiceStatus::default();
        // Why a selected pod cannot start, for requests held at zero.
        let mut failing = None;
        // Each node's own advertised ingress, looked up once per node.
        let mut ingresses: HashMap<String, Option<String>> = HashMap::new();
        if !service.spec.selector.is_empty() {
            // The selected pods only (the labels' index answers it).
            let selected = Selector::equal_to(&service.spec.selector);
            let pods = self
                .store
                .list(
                    Kind::Pod,
                    ListQuery {
                        namespace: Some(&key.namespace),
                        labels: Some(&selected),
                        ..Default::default()
                    },
                )
                .await?;
            for pod in pods.items {
                let Ok(pod) = serde_json::from_value::<Pod>(pod) else {
                    continue;
                };
                if !service
                    .spec
                    .selector
                    .iter()
                    .all(|(k, v)| pod.metadata.labels.get(k) == Some(v))
                    || pod.metadata.deletion_timestamp.is_some()
                {
                    continue;
                }
                let node = &pod.spec.node_name;
                if !node.is_empty() && !ingresses.contains_key(node) {
                    let ingress = self.node_ingress(node).await?;
                    ingresses.insert(node.clone(), ingress);
                }
                let ingress = ingresses.get(node).cloned().flatten();
                match endpoint_of(&pod, ingress) {
                    Some(endpoint) => status.endpoints.push(endpoint),
                    None if pod.status.as_ref().is_some_and(|s| s.phase.is_finished()) => {
                        failing = failing.or_else(|| cannot_start(&pod));
                    }
                    None => {
                        status.not_ready += 1;
                        failing = failing.or_else(|| cannot_start(&pod));
                    }
                }
            }
            // Nodes read it only while there is no endpoint: a Service with
            // endpoints keeps what it said (no list of every Deployment of
            // the namespace per reconcile); it is worked out again as its
            // last endpoint goes, in the same write.
            status.scales_from_zero = if status.endpoints.is_empty() {
                self.scales_from_zero(&key.namespace, &service.spec.selector)
                    .await?
            } else {
                stored["status"]["scalesFromZero"] == true
            };
            if status.endpoints.is_empty() {
                status.unavailable_reason = failing;
            }
        }
        status.endpoints.sort();
        let current: ServiceStatus =
            serde_json::from_value(stored["status"].clone()).unwrap_or_default();
        if current == status {
            return Ok(Action::Done);
        }
        let write = Write::UpdateRead {
            key: key.clone(),
            object: serde_json::to_value(&status).expect("status serializes"),
            part: Part::Status,
            read: stored,
        };
        match self.store.write(write).await {
            // A conflict is a newer Service, whose event brings us back.
            Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => Ok(Action::Done),
            Err(e) => Err(e),
        }
    }
}

impl Endpoints {
    /// The `Ingress` address a Node advertises in its status, which only
    /// that node and cluster admins write.
    async fn node_ingress(&self, node: &str) -> Result<Option<String>, StoreError> {
        let Some(stored) = self
            .store
            .get(&ObjectKey::new(Kind::Node, "", node))
            .await?
        else {
            return Ok(None);
        };
        let Ok(node) = serde_json::from_value::<Node>(stored) else {
            return Ok(None);
        };
        Ok(node.status.and_then(|status| {
            status
                .addresses
                .into_iter()
                .find(|a| a.address_type == "Ingress")
                .map(|a| a.address)
        }))
    }
}

/// Why `pod` cannot start, when its node says it cannot: the pod's name
/// and reason alone, never the message (which may name registries and
/// hosts), since anyone who calls the Service through a Route reads it.
fn cannot_start(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let reason = status.reason.as_deref()?;
    let stuck = matches!(
        reason,
        "ErrImagePull" | "ImagePullBackOff" | "CrashLoopBackOff"
    ) || status.phase == skiff_api::kinds::pod::PodPhase::Failed;
    stuck.then(|| format!("pod {} is in {reason}", pod.metadata.name))
}

/// Where a Ready pod is served, if it is Ready and bound: its node's
/// advertised ingress (`ingress`), never an address from the pod itself.
fn endpoint_of(pod: &Pod, ingress: Option<String>) -> Option<Endpoint> {
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .any(|c| c.condition_type == "Ready" && c.status == "True");
    if !ready || pod.spec.node_name.is_empty() {
        return None;
    }
    Some(Endpoint {
        pod: pod.metadata.name.clone(),
        node: pod.spec.node_name.clone(),
        address: ingress?,
    })
}
