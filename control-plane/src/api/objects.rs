//! Object handlers: list, watch, get, create, replace, patch, delete, and
//! the `/status` subresource. Every handler authorizes before it reads.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use skiff_api::kinds::account::DEFAULT_SERVICE_ACCOUNT;
use skiff_api::kinds::cluster::NamespacePolicy;
use skiff_api::kinds::pod::PodSpec;
use skiff_api::meta::{DeleteOptions, ListMeta, PropagationPolicy};
use skiff_api::selector::{FieldSelector, Selector};
use skiff_api::validate::FieldError;
use skiff_api::{EventType, Kind, admit, admit_status, policy};

use super::table::{self, Dialect, View};
use super::{
    ApiError, AppState, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, MAX_OBJECT_BYTES,
    MAX_WATCH_TIMEOUT_SECONDS,
};
use crate::auth::{Access, Decision, Principal, Role, Verb, authorize};
use crate::store::{Continue, ListQuery, ObjectKey, Part, StoreError, Write};
use crate::watch::{self, WatchRequest};

/// What a `continue` token looks like: `REVISION.NAMESPACE.NAME`, the
/// position a page ended at (the namespace empty for cluster-scoped kinds).
/// Names are DNS labels, so the dots are unambiguous, and every string of
/// this shape is a position a list can start after: the OpenAPI document
/// states it as the parameter's pattern and the server accepts all of it.
pub const CONTINUE_TOKEN_PATTERN: &str =
    "^[0-9]{1,18}\\.([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

fn continue_token(position: &Continue) -> String {
    format!(
        "{}.{}.{}",
        position.revision, position.namespace, position.name
    )
}

fn parse_continue(token: &str) -> Option<Continue> {
    let mut parts = token.splitn(3, '.');
    let revision = parts.next()?;
    let namespace = parts.next()?;
    let name = parts.next()?;
    let sound = (1..=18).contains(&revision.len())
        && revision.bytes().all(|b| b.is_ascii_digit())
        && (namespace.is_empty() || skiff_api::validate::dns_label(namespace).is_ok())
        && skiff_api::validate::dns_label(name).is_ok();
    sound.then(|| Continue {
        revision: revision.parse().expect("at most 18 digits"),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// Retries of a patch that names no resourceVersion and loses a race.
const PATCH_RETRIES: usize = 5;

/// One API call: who makes it, with what parameters and body.
pub struct Call<'a> {
    pub state: &'a AppState,
    pub principal: &'a Principal,
    /// Who open watches are counted against: the hash of the token.
    pub caller: [u8; 32],
    pub params: &'a HashMap<String, String>,
    pub body: &'a [u8],
    /// What reads answer with: objects, or a Table or metadata for
    /// Kubernetes clients that ask for one.
    pub view: View,
    /// The shape objects are shown in.
    pub dialect: Dialect,
}

impl Call<'_> {
    /// Checks the caller may make `access`; for a node agent's access to a
    /// pod, also that the pod is bound to it. A pod bound elsewhere is
    /// answered as missing, with the same 404: the answer reveals nothing,
    /// and a node asking about a pod it ran that was deleted learns that it
    /// is gone (a 403 would have it retry forever).
    async fn authorize(&self, access: Access<'_>) -> Result<(), ApiError> {
        let forbidden = || {
            let scope = access
                .namespace
                .map(|ns| format!(" in namespace {ns}"))
                .unwrap_or_default();
            ApiError::Forbidden(format!(
                "this token may not {} {}{scope}",
                access.verb.as_str(),
                access.kind.plural()
            ))
        };
        match authorize(self.principal, &access) {
            Decision::Allow => Ok(()),
            Decision::Deny => Err(forbidden()),
            Decision::AllowIfBoundTo(node) => {
                let key = ObjectKey::new(
                    access.kind,
                    access.namespace.unwrap_or(""),
                    access.name.unwrap_or(""),
                );
                let object = self.state.store.get(&key).await?;
                let bound = object
                    .as_ref()
                    .and_then(|o| o["spec"]["nodeName"].as_str())
                    .is_some_and(|n| n == node);
                if bound {
                    Ok(())
                } else {
                    Err(StoreError::NotFound(key).into())
                }
            }
            Decision::AllowIfUsedOn(node) => {
                let namespace = access.namespace.unwrap_or("");
                let fields = FieldSelector::parse(
                    &format!("spec.nodeName={node}"),
                    Kind::Pod.selectable_fields(),
                )
                .expect("a valid selector");
                let pods = self
                    .state
                    .store
                    .list(
                        Kind::Pod,
                        ListQuery {
                            namespace: Some(namespace),
                            fields: Some(&fields),
                            ..Default::default()
                        },
                    )
                    .await?;
                let name = access.name.unwrap_or("");
                let used = pods
                    .items
                    .iter()
                    .any(|pod| references(pod, access.kind, name));
                if used { Ok(()) } else { Err(forbidden()) }
            }
            Decision::AllowIfEventOn(node) => {
                let namespace = access.namespace.unwrap_or("");
                // What is sent (on a create or an update) must be an Event
                // of this node's; what is stored (on a read or an update)
                // too, or it is answered as missing.
                let sent = if matches!(access.verb, Verb::Create | Verb::Update) {
                    let sent = parse_json(self.body)?;
                    if !self.event_on(&node, namespace, &sent).await? {
                        return Err(ApiError::Forbidden(format!(
                            "node {node} may tell Events only about itself (in namespace default) or about pods bound to it, with source.host {node}"
                        )));
                    }
                    if let Some(problem) = node_event_problem(&sent, chrono::Utc::now()) {
                        return Err(ApiError::Forbidden(format!("node {node}: {problem}")));
                    }
                    Some(sent)
                } else {
                    None
                };
                if matches!(access.verb, Verb::Get | Verb::Update) {
                    let key = ObjectKey::new(Kind::Event, namespace, access.name.unwrap_or(""));
                    let stored = self.state.store.get(&key).await?;
                    let ours = match &stored {
                        Some(event) => self.event_on(&node, namespace, event).await?,
                        None => false,
                    };
                    if !ours {
                        return Err(StoreError::NotFound(key).into());
                    }
                    // An update replaces only the Event as checked: the
                    // write names the revision read here.
                    if let (Some(sent), Some(stored)) = (&sent, &stored) {
                        let version = |e: &Value| e["metadata"]["resourceVersion"].clone();
                        if version(sent) != version(stored) {
                            return Err(ApiError::Conflict(format!(
                                "Event {}: a node's update must name the resourceVersion it read ({})",
                                access.name.unwrap_or(""),
                                version(stored).as_str().unwrap_or("")
                            )));
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Whether `event`, in `namespace`, is one node `node` may tell: its
    /// source's host is the node, and it is about the node itself (kept in
    /// `default`) or about a pod in `namespace` bound to the node (the pod
    /// of that uid, not a later one of the same name).
    async fn event_on(&self, node: &str, namespace: &str, event: &Value) -> Result<bool, ApiError> {
        let involved = &event["involvedObject"];
        let text = |field: &str| involved[field].as_str().unwrap_or_default();
        if event["source"]["host"].as_str() != Some(node) {
            return Ok(false);
        }
        match text("kind") {
            "Node" => Ok(text("name") == node && namespace == "default"),
            "Pod" if text("namespace") == namespace && !text("uid").is_empty() => {
                let pod = self
                    .state
                    .store
                    .get(&ObjectKey::new(Kind::Pod, namespace, text("name")))
                    .await?;
                Ok(pod.is_some_and(|pod| {
                    pod["spec"]["nodeName"].as_str() == Some(node)
                        && pod["metadata"]["uid"].as_str() == Some(text("uid"))
                }))
            }
            _ => Ok(false),
        }
    }

    fn access<'k>(&self, verb: Verb, key: &'k ObjectKey, status: bool) -> Access<'k> {
        Access {
            verb,
            kind: key.kind,
            namespace: key.kind.namespaced().then_some(key.namespace.as_str()),
            name: Some(&key.name),
            status,
            node_selector: None,
        }
    }

    /// Checks the caller may patch `key`, before any work is done for a
    /// patch that is read, converted or merged outside `patch` (server-side
    /// apply, Kubernetes' patch types): a caller who may not write costs
    /// only this check.
    pub async fn may_patch(&self, key: &ObjectKey) -> Result<(), ApiError> {
        self.authorize(self.access(Verb::Patch, key, false)).await
    }

    pub async fn get(&self, key: &ObjectKey) -> Result<Response, ApiError> {
        self.authorize(self.access(Verb::Get, key, false)).await?;
        match self.state.store.get(key).await? {
            Some(object) => {
                let object = self.shown(key.kind, object).await?;
                Ok(Json(table::one(self.view, self.dialect, key.kind, object)).into_response())
            }
            None => Err(StoreError::NotFound(key.clone()).into()),
        }
    }

    /// An object as clients are shown it: a ResourceQuota with its status
    /// as of now (what its namespace uses is read when it is asked for, not
    /// written on every create and delete there).
    async fn shown(&self, kind: Kind, object: Value) -> Result<Value, ApiError> {
        if kind == Kind::ResourceQuota {
            Ok(self.state.store.with_quota_status(object).await?)
        } else {
            Ok(object)
        }
    }

    pub async fn list_or_watch(
        &self,
        kind: Kind,
        namespace: Option<String>,
    ) -> Result<Response, ApiError> {
        let watching = matches!(
            self.params.get("watch").map(String::as_str),
            Some("true" | "1")
        );
        let labels = match self.params.get("labelSelector") {
            Some(s) => Selector::parse(s)
                .map_err(|e| ApiError::BadRequest(format!("labelSelector: {e}")))?,
            None => Selector::everything(),
        };
        let fields = match self.params.get("fieldSelector") {
            Some(s) => FieldSelector::parse(s, kind.selectable_fields())
                .map_err(|e| ApiError::BadRequest(format!("fieldSelector: {e}")))?,
            None => FieldSelector::default(),
        };
        let node_selector = fields
            .terms()
            .find(|(field, equal, _)| *field == "spec.nodeName" && *equal)
            .map(|(_, _, value)| value.to_owned());
        self.authorize(Access {
            verb: if watching { Verb::Watch } else { Verb::List },
            kind,
            namespace: namespace.as_deref(),
            name: None,
            status: false,
            node_selector: node_selector.as_deref(),
        })
        .await?;

        if watching {
            return self.watch(kind, namespace, labels, fields).await;
        }
        let limit = match self.params.get("limit") {
            Some(l) => l
                .parse::<u32>()
                .ok()
                .filter(|l| (1..=MAX_LIST_LIMIT).contains(l))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "limit: `{l}` is not a whole number from 1 to {MAX_LIST_LIMIT}"
                    ))
                })?,
            None => DEFAULT_LIST_LIMIT,
        };
        let after = match self.params.get("continue") {
            Some(token) => Some(parse_continue(token).ok_or_else(|| {
                ApiError::BadRequest("continue: not a token this server issued".into())
            })?),
            None => None,
        };
        let page = self
            .state
            .store
            .list(
                kind,
                ListQuery {
                    namespace: namespace.as_deref(),
                    labels: Some(&labels),
                    fields: Some(&fields),
                    limit: Some(i64::from(limit)),
                    after,
                    json: &[],
                },
            )
            .await?;
        let mut items = Vec::with_capacity(page.items.len());
        for object in page.items {
            items.push(self.shown(kind, object).await?);
        }
        let list = ListMeta {
            resource_version: page.revision.to_string(),
            continue_token: page.next.map(|c| continue_token(&c)),
        };
        let list = serde_json::to_value(list).expect("list metadata serialises");
        Ok(Json(table::many(self.view, self.dialect, kind, items, list)).into_response())
    }

    async fn watch(
        &self,
        kind: Kind,
        namespace: Option<String>,
        labels: Selector,
        fields: FieldSelector,
    ) -> Result<Response, ApiError> {
        let from = match self.params.get("resourceVersion").map(String::as_str) {
            None | Some("") => None,
            Some(rv) => Some(parse_revision("resourceVersion", rv)?),
        };
        if let Some(from) = from {
            let compacted = self.state.store.compacted_revision().await?;
            if from < compacted {
                return Err(StoreError::Compacted {
                    requested: from,
                    compacted,
                }
                .into());
            }
        }
        let config = &self.state.config;
        let timeout = match self.params.get("timeoutSeconds") {
            Some(t) => Duration::from_secs(
                t.parse::<u64>()
                    .ok()
                    .filter(|t| (1..=MAX_WATCH_TIMEOUT_SECONDS).contains(t))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "timeoutSeconds: `{t}` is not a whole number from 1 to {MAX_WATCH_TIMEOUT_SECONDS}"
                        ))
                    })?,
            )
            .min(config.max_watch),
            None => config.max_watch,
        };
        let permit = self
            .state
            .hub
            .admit(self.caller, config.max_watches_per_client)
            .map_err(|open| ApiError::TooManyRequests {
                message: format!(
                    "this token has {open} watches open, the most one token may; close one (or end a client that leaks them) before starting another"
                ),
                retry_after: 5,
            })?;
        let lines = watch::start(
            self.state.store.clone(),
            &self.state.hub,
            WatchRequest {
                kind,
                namespace,
                labels,
                fields,
                from,
                bookmark_interval: config.bookmark_interval,
                timeout,
            },
        );
        // The permit lives as long as the response body: the watch counts
        // against its token until the client hangs up or the watch ends.
        // Bookmarks only for clients that asked for them, as Kubernetes
        // sends them: kubectl prints every event it is sent.
        let bookmarks = matches!(
            self.params.get("allowWatchBookmarks").map(String::as_str),
            Some("true" | "1")
        );
        let (view, dialect) = (self.view, self.dialect);
        let stream =
            futures::stream::unfold((lines, permit), move |(mut lines, permit)| async move {
                let mut event = lines.recv().await?;
                while event.event_type == EventType::Bookmark && !bookmarks {
                    event = lines.recv().await?;
                }
                if matches!(
                    event.event_type,
                    EventType::Added | EventType::Modified | EventType::Deleted
                ) {
                    event.object = table::one(view, dialect, kind, event.object);
                }
                let mut line = serde_json::to_vec(&event).expect("events serialise");
                line.push(b'\n');
                Some((
                    Ok::<_, std::io::Error>(bytes::Bytes::from(line)),
                    (lines, permit),
                ))
            });
        Ok((
            // Kubernetes clients pick the decoder of a watch by this type,
            // and know JSON; each line is one event all the same.
            [(header::CONTENT_TYPE, "application/json")],
            Body::from_stream(stream),
        )
            .into_response())
    }

    pub async fn create(
        &self,
        kind: Kind,
        namespace: Option<String>,
    ) -> Result<Response, ApiError> {
        let mut object = parse_json(self.body)?;
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let key = ObjectKey::new(kind, namespace.as_deref().unwrap_or(""), &name);
        self.authorize(self.access(Verb::Create, &key, false))
            .await?;
        if let Some(ns) = &namespace {
            claim_namespace(&mut object, ns)?;
        }
        if object["metadata"]
            .get("resourceVersion")
            .is_some_and(|rv| !rv.is_null())
        {
            return Err(ApiError::invalid(
                "metadata.resourceVersion",
                "must not be set when creating an object",
            ));
        }
        self.namespace_defaults(&key, &mut object).await?;
        let mut object = admit(kind, object)?;
        self.tenancy(&key, &mut object, None).await?;
        check_size(&object)?;
        if self.dry_run()? {
            return self.check_create(&key, object).await;
        }
        let stored = self
            .state
            .store
            .write(Write::Create { key, object })
            .await?;
        let stored = self.shown(kind, stored).await?;
        Ok((StatusCode::CREATED, Json(stored)).into_response())
    }

    /// What a create would store, checked like the real one short of the
    /// write: the namespace exists, the name is free, a Route's host is
    /// not another namespace's.
    async fn check_create(&self, key: &ObjectKey, object: Value) -> Result<Response, ApiError> {
        let store = &self.state.store;
        if key.kind.namespaced()
            && store
                .get(&ObjectKey::namespace(&key.namespace))
                .await?
                .is_none()
        {
            return Err(StoreError::NamespaceNotFound(key.namespace.clone()).into());
        }
        if store.get(key).await?.is_some() {
            return Err(StoreError::AlreadyExists(key.clone()).into());
        }
        if key.kind == Kind::Route {
            store.check_host_claim(key, &object).await?;
        }
        store.check_quota(key, &object).await?;
        Ok((StatusCode::CREATED, Json(object)).into_response())
    }

    /// The tenancy rules admission adds for namespaced objects, between the
    /// kind's own checks and the write (`existing` is the stored object on
    /// an update):
    /// - a pod (and a Deployment's pod template) gets what its namespace's
    ///   pod security level implies and must keep within its level and its
    ///   priority and egress ceilings, whoever writes it;
    /// - binding a pod to a node (`spec.nodeName`) is the scheduler's and
    ///   cluster admins' alone;
    /// - a Route's host must be one the namespace may claim; the empty
    ///   catch-all is for cluster admins. (That no other namespace holds
    ///   the host is checked in the write's own transaction.)
    async fn tenancy(
        &self,
        key: &ObjectKey,
        object: &mut Value,
        existing: Option<&Value>,
    ) -> Result<(), ApiError> {
        let admin = *self.principal == Principal::ClusterAdmin;
        match key.kind {
            Kind::Pod => {
                let bound = |o: &Value| !o["spec"]["nodeName"].as_str().unwrap_or("").is_empty();
                if !admin && bound(object) && !existing.is_some_and(bound) {
                    return Err(ApiError::Forbidden(
                        "spec.nodeName: only cluster admins bind pods to nodes; leave it to the scheduler".into(),
                    ));
                }
                if existing.is_none() {
                    let policy = self.namespace_policy(&key.namespace).await?;
                    police_pod(&key.namespace, &policy, &mut object["spec"], "spec")?;
                }
                let account = |o: &Value| o["spec"]["serviceAccountName"].clone();
                if existing.is_none_or(|e| account(e) != account(object)) {
                    self.may_run_as(&key.namespace, &object["spec"], "spec")
                        .await?;
                }
            }
            // A template the namespace already admitted (a scale, a label)
            // is not judged again by a policy changed since. (A template's
            // nodeName is refused by validation, for everyone.)
            Kind::Deployment
                if existing.is_none_or(|e| e["spec"]["template"] != object["spec"]["template"]) =>
            {
                let policy = self.namespace_policy(&key.namespace).await?;
                police_pod(
                    &key.namespace,
                    &policy,
                    &mut object["spec"]["template"]["spec"],
                    "spec.template.spec",
                )?;
                self.may_run_as(
                    &key.namespace,
                    &object["spec"]["template"]["spec"],
                    "spec.template.spec",
                )
                .await?;
            }
            // Granting a role is holding it: no one gives an account more
            // than they have, or an editor could make an admin of an
            // account and act as it.
            Kind::ServiceAccount => {
                let role = |o: &Value| o["spec"]["role"].as_str().and_then(Role::parse);
                let granted = role(object);
                if existing.is_none_or(|e| role(e) != granted)
                    && self.principal.role_in(&key.namespace) < granted
                {
                    return Err(ApiError::Forbidden(format!(
                        "spec.role: this token may not grant role {} in namespace {}, which it does not hold",
                        granted.map_or("", Role::as_str),
                        key.namespace
                    )));
                }
            }
            Kind::Route => {
                let host = object["spec"]["host"].as_str().unwrap_or("");
                let changed =
                    existing.is_none_or(|e| e["spec"]["host"].as_str().unwrap_or("") != host);
                if admin || !changed {
                    return Ok(());
                }
                if host.is_empty() {
                    return Err(ApiError::Forbidden(
                        "spec.host: the catch-all Route (no host) is for cluster admins; name a host".into(),
                    ));
                }
                let policy = self.namespace_policy(&key.namespace).await?;
                if !policy::may_claim_host(&policy, host) {
                    let allowed = if policy.route_hosts.is_empty() {
                        "none".to_owned()
                    } else {
                        policy.route_hosts.join(", ")
                    };
                    return Err(ApiError::Forbidden(format!(
                        "spec.host: namespace {} may not claim host {host} (its routeHosts: {allowed}; a cluster admin sets spec.policy.routeHosts)",
                        key.namespace
                    )));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether the caller may have pods run as the service account the pod
    /// spec at `at` names: it must exist (but for the namespace's
    /// `default`, which its controller is about to make) and hold no more
    /// than the caller does, or running a pod would be a way to act with
    /// a role one was not given.
    async fn may_run_as(&self, namespace: &str, spec: &Value, at: &str) -> Result<(), ApiError> {
        let name = spec["serviceAccountName"]
            .as_str()
            .filter(|n| !n.is_empty())
            .unwrap_or(DEFAULT_SERVICE_ACCOUNT);
        let key = ObjectKey::new(Kind::ServiceAccount, namespace, name);
        let account = match self.state.store.get(&key).await? {
            Some(account) => account,
            None if name == DEFAULT_SERVICE_ACCOUNT => return Ok(()),
            None => {
                return Err(ApiError::invalid(
                    &format!("{at}.serviceAccountName"),
                    format!("service account {name} not found in namespace {namespace}"),
                ));
            }
        };
        let role = account["spec"]["role"].as_str().and_then(Role::parse);
        if self.principal.role_in(namespace) < role {
            return Err(ApiError::Forbidden(format!(
                "{at}.serviceAccountName: service account {name} holds role {} in namespace {namespace}, more than this token does",
                role.map_or("", Role::as_str)
            )));
        }
        Ok(())
    }

    /// A pod's (or a Deployment template's) resources it leaves out, from
    /// its namespace's `podDefaults`, before admission fills the cluster's.
    async fn namespace_defaults(
        &self,
        key: &ObjectKey,
        object: &mut Value,
    ) -> Result<(), ApiError> {
        // Looked up without indexing, which would panic on a spec of the
        // wrong type: admission says what is wrong with one.
        let spec = match key.kind {
            Kind::Pod => object.get_mut("spec"),
            Kind::Deployment => object
                .get_mut("spec")
                .and_then(|s| s.get_mut("template"))
                .and_then(|t| t.get_mut("spec")),
            _ => return Ok(()),
        };
        let Some(spec) = spec.filter(|s| s.is_object()) else {
            return Ok(());
        };
        let policy = self.namespace_policy(&key.namespace).await?;
        policy::apply_resource_defaults(&policy, spec);
        Ok(())
    }

    async fn namespace_policy(&self, namespace: &str) -> Result<NamespacePolicy, ApiError> {
        let Some(stored) = self
            .state
            .store
            .get(&ObjectKey::namespace(namespace))
            .await?
        else {
            return Err(StoreError::NamespaceNotFound(namespace.to_owned()).into());
        };
        Ok(serde_json::from_value(stored["spec"]["policy"].clone()).unwrap_or_default())
    }

    /// PUT: replaces the object (or, on `/status`, its status).
    pub async fn replace(&self, key: &ObjectKey, status: bool) -> Result<Response, ApiError> {
        self.authorize(self.access(Verb::Update, key, status))
            .await?;
        let mut object = parse_json(self.body)?;
        check_identity(&mut object, key)?;
        let expected_revision = stated_revision(&object)?;
        let mut checked_revision = None;
        let (object, part) = if status {
            let status = object.get("status").cloned().unwrap_or_else(|| json!({}));
            (admit_status(key.kind, status)?, Part::Status)
        } else {
            self.namespace_defaults(key, &mut object).await?;
            let existing = if key.kind.namespaced() {
                self.state.store.get(key).await?
            } else {
                None
            };
            keep_autoscaled_replicas(key.kind, &mut object, existing.as_ref());
            let mut object = admit(key.kind, object)?;
            check_autoscaled_replicas(key.kind, &object, existing.as_ref())?;
            if key.kind.namespaced() {
                self.tenancy(key, &mut object, existing.as_ref()).await?;
                // An account's role was judged against what was read: the
                // write must replace that, not a role changed since.
                if key.kind == Kind::ServiceAccount && expected_revision.is_none() {
                    checked_revision = existing
                        .as_ref()
                        .and_then(|e| stated_revision(e).ok().flatten());
                }
            }
            (object, Part::Main)
        };
        let expected_revision = expected_revision.or(checked_revision);
        check_size(&object)?;
        if self.dry_run()? {
            return self
                .check_update(key, object, part, expected_revision)
                .await;
        }
        let stored = self
            .state
            .store
            .write(Write::Update {
                key: key.clone(),
                object,
                part,
                expected_revision,
            })
            .await?;
        Ok(Json(self.shown(key.kind, stored).await?).into_response())
    }

    /// `PUT nodes/{name}/lease` renews a node's lease (`{"durationMillis":
    /// N}`, default 6000); `GET` reads it. A lease is not a revision of the
    /// Node: renewals write one small row and wake no watch.
    pub async fn lease(
        &self,
        node: &str,
        method: axum::http::Method,
    ) -> Result<Response, ApiError> {
        let key = ObjectKey::new(Kind::Node, "", node);
        let verb = if method == axum::http::Method::GET {
            Verb::Get
        } else {
            Verb::Update
        };
        // A lease is what the node reports, like its status.
        self.authorize(self.access(verb, &key, true)).await?;
        let lease = match method {
            axum::http::Method::PUT => {
                let duration_ms = if self.body.is_empty() {
                    6000
                } else {
                    let body: Value = parse_json(self.body)?;
                    match body.get("durationMillis") {
                        None => 6000,
                        Some(v) => v
                            .as_i64()
                            .filter(|ms| (1..=3_600_000).contains(ms))
                            .ok_or_else(|| {
                                ApiError::invalid(
                                    "durationMillis",
                                    "must be a whole number from 1 to 3600000",
                                )
                            })? as i32,
                    }
                };
                self.state.store.renew_lease(node, duration_ms).await?
            }
            axum::http::Method::GET => {
                let (_, leases) = self.state.store.leases().await?;
                leases
                    .into_iter()
                    .find(|l| l.node == node)
                    .ok_or_else(|| ApiError::NotFound(format!("no lease for node {node}")))?
            }
            other => {
                return Err(ApiError::MethodNotAllowed(format!(
                    "{other} is not allowed on a lease"
                )));
            }
        };
        Ok(Json(json!({
            "node": lease.node,
            "renewedAt": lease.renewed_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "durationMillis": lease.duration_ms,
        }))
        .into_response())
    }

    /// `dryRun=All` asks for every check of a write without the write.
    fn dry_run(&self) -> Result<bool, ApiError> {
        match self.params.get("dryRun").map(String::as_str) {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::BadRequest(format!(
                "dryRun: `{other}` is not supported; use All"
            ))),
        }
    }

    /// What an update would store, checked like the real one.
    async fn check_update(
        &self,
        key: &ObjectKey,
        object: Value,
        part: Part,
        expected_revision: Option<i64>,
    ) -> Result<Response, ApiError> {
        let Some(existing) = self.state.store.get(key).await? else {
            return Err(StoreError::NotFound(key.clone()).into());
        };
        let current = expect_revision(key, &existing, expected_revision)?;
        // A would-be write shows as a new revision, a no-op as the same one.
        let next = crate::store::objects::updated(key.kind, &existing, object, part, current + 1)?;
        // As the writer does: a Route moved onto another namespace's host.
        if key.kind == Kind::Route
            && let Some(next) = &next
            && next["spec"]["host"] != existing["spec"]["host"]
        {
            self.state.store.check_host_claim(key, next).await?;
        }
        Ok(Json(next.unwrap_or(existing)).into_response())
    }

    /// PATCH with a JSON merge patch (RFC 7386). Without a resourceVersion
    /// in the patch, a lost race is retried against the fresh object.
    pub async fn patch(&self, key: &ObjectKey, status: bool) -> Result<Response, ApiError> {
        self.authorize(self.access(Verb::Patch, key, status))
            .await?;
        let patch = parse_json(self.body)?;
        if !patch.is_object() {
            return Err(ApiError::BadRequest(
                "a merge patch must be a JSON object".into(),
            ));
        }
        let named_revision = stated_revision(&patch)?;
        let dry_run = self.dry_run()?;
        // A uid in the patch is a precondition, as in Kubernetes: the patch
        // is for that object, not for one re-created under its name.
        let named_uid = patch["metadata"]["uid"].as_str();
        for _ in 0..PATCH_RETRIES {
            let Some(current) = self.state.store.get(key).await? else {
                return Err(StoreError::NotFound(key.clone()).into());
            };
            if named_uid.is_some_and(|uid| current["metadata"]["uid"].as_str() != Some(uid)) {
                return Err(StoreError::UidMismatch(key.clone()).into());
            }
            let mut patched = current.clone();
            merge_patch(&mut patched, &patch);
            check_identity(&mut patched, key)?;
            let (object, part) = if status {
                (
                    admit_status(key.kind, patched["status"].clone())?,
                    Part::Status,
                )
            } else {
                self.namespace_defaults(key, &mut patched).await?;
                keep_autoscaled_replicas(key.kind, &mut patched, Some(&current));
                let mut object = admit(key.kind, patched)?;
                check_autoscaled_replicas(key.kind, &object, Some(&current))?;
                if key.kind.namespaced() {
                    self.tenancy(key, &mut object, Some(&current)).await?;
                }
                (object, Part::Main)
            };
            check_size(&object)?;
            let expected_revision =
                named_revision.or_else(|| stated_revision(&current).ok().flatten());
            if dry_run {
                return self
                    .check_update(key, object, part, expected_revision)
                    .await;
            }
            match self
                .state
                .store
                .write(Write::Update {
                    key: key.clone(),
                    object,
                    part,
                    expected_revision,
                })
                .await
            {
                Err(StoreError::Conflict { .. }) if named_revision.is_none() => continue,
                result => return Ok(Json(self.shown(key.kind, result?).await?).into_response()),
            }
        }
        Err(ApiError::Conflict(format!(
            "{key} kept changing; the patch was not applied after {PATCH_RETRIES} attempts"
        )))
    }

    pub async fn delete(&self, key: &ObjectKey) -> Result<Response, ApiError> {
        self.authorize(self.access(Verb::Delete, key, false))
            .await?;
        let options: DeleteOptions = if self.body.is_empty() {
            DeleteOptions::default()
        } else {
            serde_json::from_slice(self.body)
                .map_err(|e| ApiError::BadRequest(format!("delete options: {e}")))?
        };
        let dry_run = self.dry_run()? || dry_run_in_body(&options)?;
        let preconditions = options.preconditions.unwrap_or_default();
        let expected_revision = preconditions
            .resource_version
            .as_deref()
            .map(|rv| parse_revision("preconditions.resourceVersion", rv))
            .transpose()?;
        if dry_run {
            // Every precondition checked; the object answered as it is.
            let Some(current) = self.state.store.get(key).await? else {
                return Err(StoreError::NotFound(key.clone()).into());
            };
            if preconditions
                .uid
                .as_deref()
                .is_some_and(|uid| current["metadata"]["uid"].as_str() != Some(uid))
            {
                return Err(StoreError::UidMismatch(key.clone()).into());
            }
            expect_revision(key, &current, expected_revision)?;
            return Ok(Json(current).into_response());
        }
        let marking = match options.propagation_policy {
            Some(PropagationPolicy::Foreground) => Some(Part::ForegroundDeletion),
            Some(PropagationPolicy::Orphan) => Some(Part::OrphanDeletion),
            Some(PropagationPolicy::Background) | None => None,
        };
        if let Some(part) = marking {
            // Marked now, deleted by the garbage collector once its
            // dependents are gone (foreground) or no longer its own
            // (orphan).
            if let Some(uid) = &preconditions.uid {
                let current = self.state.store.get(key).await?;
                if current.is_some_and(|c| c["metadata"]["uid"].as_str() != Some(uid)) {
                    return Err(StoreError::UidMismatch(key.clone()).into());
                }
            }
            let marked = self
                .state
                .store
                .write(Write::Update {
                    key: key.clone(),
                    object: json!(crate::store::now_rfc3339()),
                    part,
                    expected_revision,
                })
                .await?;
            return Ok((StatusCode::ACCEPTED, Json(marked)).into_response());
        }
        let deleted = self
            .state
            .store
            .write(Write::Delete {
                key: key.clone(),
                expected_revision,
                expected_uid: preconditions.uid,
            })
            .await?;
        Ok(Json(deleted).into_response())
    }
}

/// Applies a namespace's policy to a pod spec in place (its defaults, then
/// its checks): pod security and priority refusals are 403s, an
/// `allowOutbound` beyond the egress ceiling a 422.
fn police_pod(
    namespace: &str,
    policy: &NamespacePolicy,
    spec: &mut Value,
    at: &str,
) -> Result<(), ApiError> {
    // Admitted already, so this parses; were it not to, nothing is let in.
    let mut typed = serde_json::from_value::<PodSpec>(spec.clone())
        .map_err(|e| ApiError::invalid(at, e.to_string()))?;
    policy::apply_pod_defaults(policy, &mut typed);
    let refused = policy::check_pod(namespace, policy, &typed, at);
    if let Some(first) = refused.first() {
        return Err(ApiError::Forbidden(one_line(first, refused.len())));
    }
    let outside = policy::check_egress(namespace, policy, &typed, at);
    if !outside.is_empty() {
        return Err(skiff_api::AdmitError::Invalid(outside).into());
    }
    *spec = serde_json::to_value(typed).expect("API types serialise");
    Ok(())
}

/// `dryRun` in a delete's body (Kubernetes' DeleteOptions carry it there
/// too): only `All` is known.
/// A write of an autoscaled Deployment that leaves `spec.replicas` out
/// keeps the count the autoscaler set, rather than the default.
fn keep_autoscaled_replicas(kind: Kind, object: &mut Value, existing: Option<&Value>) {
    if kind != Kind::Deployment || !object["spec"]["autoscaling"].is_object() {
        return;
    }
    let Some(existing) = existing.filter(|e| e["spec"]["autoscaling"].is_object()) else {
        return;
    };
    if object["spec"]["replicas"].is_null()
        && let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.insert("replicas".into(), existing["spec"]["replicas"].clone());
    }
}

/// While `spec.autoscaling` is set the autoscaler owns `spec.replicas`: a
/// caller's write may bring it within new bounds (as admission does) but
/// not set it, or the autoscaler and the caller would undo each other.
fn check_autoscaled_replicas(
    kind: Kind,
    admitted: &Value,
    existing: Option<&Value>,
) -> Result<(), ApiError> {
    if kind != Kind::Deployment {
        return Ok(());
    }
    let (Some(existing), Ok(autoscaling)) = (
        existing.filter(|e| e["spec"]["autoscaling"].is_object()),
        serde_json::from_value::<skiff_api::kinds::deployment::Autoscaling>(
            admitted["spec"]["autoscaling"].clone(),
        ),
    ) else {
        return Ok(());
    };
    let before = existing["spec"]["replicas"].as_u64().unwrap_or(1) as u32;
    let wanted = admitted["spec"]["replicas"].as_u64().unwrap_or(1) as u32;
    if wanted != autoscaling.clamp(before) {
        return Err(ApiError::invalid(
            "spec.replicas",
            format!(
                "the autoscaler sets the replicas of this Deployment (spec.autoscaling: {} to {}); change minReplicas or maxReplicas, or remove spec.autoscaling to scale by hand",
                autoscaling.min_replicas, autoscaling.max_replicas
            ),
        ));
    }
    Ok(())
}

fn dry_run_in_body(options: &DeleteOptions) -> Result<bool, ApiError> {
    match options.dry_run.iter().find(|d| *d != "All") {
        Some(other) => Err(ApiError::BadRequest(format!(
            "dryRun: `{other}` is not supported; use All"
        ))),
        None => Ok(!options.dry_run.is_empty()),
    }
}

fn one_line(first: &FieldError, count: usize) -> String {
    match count {
        1 => first.to_string(),
        n => format!("{first} (and {} more)", n - 1),
    }
}

/// Whether a pod needs the Secret or ConfigMap `name`: as its pull secret,
/// in an environment variable, or as a volume.
fn references(pod: &Value, kind: Kind, name: &str) -> bool {
    let spec = &pod["spec"];
    let (key_ref, volume) = match kind {
        Kind::Secret => {
            if spec["imagePullSecret"] == name {
                return true;
            }
            ("secretKeyRef", "secret")
        }
        _ => ("configMapKeyRef", "configMap"),
    };
    let in_env = spec["env"].as_array().is_some_and(|env| {
        env.iter()
            .any(|var| var["valueFrom"][key_ref]["name"] == name)
    });
    let in_volumes = spec["volumes"]
        .as_array()
        .is_some_and(|volumes| volumes.iter().any(|v| v[volume]["name"] == name));
    in_env || in_volumes
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "request body is empty; send the object as JSON".into(),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))
}

fn parse_revision(field: &str, text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|rv| *rv >= 0)
        .ok_or_else(|| ApiError::BadRequest(format!("{field}: `{text}` is not a resourceVersion")))
}

/// The stored object's revision, refused with a conflict when the request
/// expected another one.
fn expect_revision(
    key: &ObjectKey,
    stored: &Value,
    expected: Option<i64>,
) -> Result<i64, ApiError> {
    let current = stated_revision(stored)?.unwrap_or_default();
    match expected {
        Some(expected) if expected != current => Err(StoreError::Conflict {
            key: key.clone(),
            expected,
            current,
        }
        .into()),
        _ => Ok(current),
    }
}

/// The resourceVersion a body names, if any.
fn stated_revision(object: &Value) -> Result<Option<i64>, ApiError> {
    match object["metadata"].get("resourceVersion") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(rv)) if rv.is_empty() => Ok(None),
        Some(Value::String(rv)) => parse_revision("metadata.resourceVersion", rv).map(Some),
        Some(other) => Err(ApiError::BadRequest(format!(
            "metadata.resourceVersion: must be a string, not {other}"
        ))),
    }
}

/// Puts a namespaced object in the namespace of the URL; a different one
/// in the body is an error, not something to silently override.
fn claim_namespace(object: &mut Value, namespace: &str) -> Result<(), ApiError> {
    match object["metadata"].get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() && ns != namespace => Err(ApiError::BadRequest(format!(
            "metadata.namespace: {ns} does not match the namespace of the request ({namespace})"
        ))),
        _ => {
            if object.get("metadata").is_some_and(Value::is_object) {
                object["metadata"]["namespace"] = json!(namespace);
            }
            Ok(())
        }
    }
}

/// The body of an update must name the object of its URL.
fn check_identity(object: &mut Value, key: &ObjectKey) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(ApiError::BadRequest(
            "request body must be a JSON object".into(),
        ));
    }
    match object["metadata"].get("name").and_then(Value::as_str) {
        Some(name) if name == key.name => {}
        Some(name) => {
            return Err(ApiError::BadRequest(format!(
                "metadata.name: {name} does not match the name of the request ({})",
                key.name
            )));
        }
        None => {
            if !object.get("metadata").is_some_and(Value::is_object) {
                object["metadata"] = json!({});
            }
            object["metadata"]["name"] = json!(key.name);
        }
    }
    if key.kind.namespaced() {
        claim_namespace(object, &key.namespace)?;
    }
    Ok(())
}

fn check_size(object: &Value) -> Result<(), ApiError> {
    let size = serde_json::to_vec(object)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_OBJECT_BYTES {
        return Err(ApiError::TooLarge(format!(
            "the object is {size} bytes; objects are limited to 1Mi"
        )));
    }
    Ok(())
}

/// Applies a JSON merge patch (RFC 7386): objects merge, `null` removes,
/// anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let target_fields = target.as_object_mut().expect("made an object above");
    for (key, value) in patch_fields {
        if value.is_null() {
            target_fields.remove(key);
        } else {
            merge_patch(
                target_fields.entry(key.clone()).or_insert(Value::Null),
                value,
            );
        }
    }
}

/// Why an Event a node sends is not one it may store, beyond what it is
/// about (`Call::event_on`): a node tells Events only as a recorder would,
/// under the name the happening hashes to (so it cannot take the name of
/// an Event the control plane tells), with no labels, annotations or
/// owners, and not from the future (an Event dated ahead would outlive its
/// expiry). `None` if it may.
fn node_event_problem(event: &Value, now: chrono::DateTime<chrono::Utc>) -> Option<String> {
    use skiff_api::kinds::event::{Event, NODE_REASONS, event_name};
    let Ok(told) = serde_json::from_value::<Event>(event.clone()) else {
        // Admission names what is wrong with its shape.
        return None;
    };
    if told.source.component != "node" {
        return Some("source.component must be `node`".into());
    }
    // A fixed set, so a node holds a bounded number of Events per pod.
    if !NODE_REASONS.contains(&told.reason.as_str()) {
        return Some(format!(
            "reason `{}` is not one nodes tell ({})",
            told.reason,
            NODE_REASONS.join(", ")
        ));
    }
    let expected = event_name(&told.involved_object, &told.reason, &told.source);
    if told.metadata.name != expected {
        return Some(format!(
            "metadata.name must be `{expected}`, the name this happening hashes to"
        ));
    }
    let meta = &told.metadata;
    if !meta.labels.is_empty() || !meta.annotations.is_empty() || !meta.owner_references.is_empty()
    {
        return Some("metadata: a node's Events carry no labels, annotations or owners".into());
    }
    let skew = chrono::Duration::minutes(5);
    for (field, at) in [
        ("firstTimestamp", &told.first_timestamp),
        ("lastTimestamp", &told.last_timestamp),
    ] {
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(at)
            && at > now + skew
        {
            return Some(format!("{field} is in the future"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        // The examples of RFC 7386, section 3.
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
        ];
        for (mut target, patch, want) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want, "patch {patch}");
        }
    }

    #[test]
    fn bodies_must_name_their_own_object() {
        let key = ObjectKey::new(Kind::Pod, "shop", "web");
        let mut other = json!({"metadata": {"name": "api"}});
        assert!(matches!(
            check_identity(&mut other, &key),
            Err(ApiError::BadRequest(_))
        ));
        let mut elsewhere = json!({"metadata": {"name": "web", "namespace": "other"}});
        assert!(matches!(
            check_identity(&mut elsewhere, &key),
            Err(ApiError::BadRequest(_))
        ));
        let mut unnamed = json!({"spec": {}});
        check_identity(&mut unnamed, &key).unwrap();
        assert_eq!(
            unnamed["metadata"],
            json!({"name": "web", "namespace": "shop"})
        );
    }

    #[test]
    fn resource_versions_must_be_numbers_in_strings() {
        assert_eq!(stated_revision(&json!({"metadata": {}})).unwrap(), None);
        assert_eq!(
            stated_revision(&json!({"metadata": {"resourceVersion": "12"}})).unwrap(),
            Some(12)
        );
        assert!(stated_revision(&json!({"metadata": {"resourceVersion": 12}})).is_err());
        assert!(stated_revision(&json!({"metadata": {"resourceVersion": "x"}})).is_err());
    }
}
