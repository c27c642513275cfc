//! Skiff's objects served also as Kubernetes' own kinds, under `/api/v1`
//! (Pods, Services, Secrets, ConfigMaps, Namespaces, Nodes, Events,
//! ServiceAccounts, ResourceQuotas) and `/apis/apps/v1` (Deployments, and
//! their revisions as read-only ReplicaSets). Every request is the one the
//! `skiff.dev` path would be, made in the other shape: the same handler
//! authorizes, admits and stores it, so a write through either is the same
//! object at the same `resourceVersion`, and watches through either see
//! the same changes. [`skiff_api::kube`] converts between the shapes.

use std::collections::HashMap;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_api::kube::{from_kube, replica_sets, strategic_merge, to_kube};
use skiff_api::selector::Selector;
use skiff_api::validate::FieldError;

use super::manifests::body_of;
use super::objects::{Call, merge_patch};
use super::table::{Dialect, Include, View};
use super::{ApiError, AppState, Target, authenticate, bearer, client_address, parse_target};
use crate::store::ObjectKey;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/{*path}", any(core))
        .route("/apis/apps/v1/{*path}", any(apps))
        .route("/apis/metrics.k8s.io/v1beta1/{*path}", any(metrics))
        .route("/apis/networking.k8s.io/v1/{*path}", any(networking))
}

async fn networking(State(state): State<AppState>, request: Request) -> Response {
    serve(
        state,
        request,
        "/apis/networking.k8s.io/v1/",
        "networking.k8s.io/v1",
    )
    .await
}

/// `metrics.k8s.io`: what pods and nodes use, as the nodes sample it, in
/// the shape `kubectl top` reads, under the roles `podmetrics` and
/// `nodemetrics` have.
async fn metrics(State(state): State<AppState>, request: Request) -> Response {
    let started = Instant::now();
    let path = request
        .uri()
        .path()
        .strip_prefix("/apis/metrics.k8s.io/v1beta1/")
        .unwrap_or_default()
        .to_owned();
    let response = usage_answer(&state, request, &path)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    state.store.metrics().api_request(
        "get",
        "metrics",
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

async fn usage_answer(
    state: &AppState,
    request: Request,
    path: &str,
) -> Result<Response, ApiError> {
    let principal = authenticate(state, request.headers(), client_address(&request)).await?;
    if request.method() != Method::GET {
        return Err(ApiError::MethodNotAllowed("usage is read with GET".into()));
    }
    let params: HashMap<String, String> = Query::try_from_uri(request.uri())
        .map(|Query(params)| params)
        .map_err(|e| ApiError::BadRequest(format!("query string: {e}")))?;
    let mut asked = HashMap::new();
    if let Some(selector) = params.get("labelSelector").filter(|s| !s.is_empty()) {
        asked.insert("labelSelector".to_owned(), selector.clone());
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let window =
        |item: &Value| format!("{}s", item["windowSeconds"].as_f64().unwrap_or(0.0).round());
    let usage = |item: &Value| {
        json!({
            "cpu": format!("{}n", (item["cpuCores"].as_f64().unwrap_or(0.0) * 1e9).round() as u64),
            "memory": format!("{}Ki", item["memoryBytes"].as_u64().unwrap_or(0) / 1024),
        })
    };
    let (pods, namespace, name) = match segments.as_slice() {
        ["nodes"] => (false, None, None),
        ["nodes", name] => (false, None, Some(*name)),
        ["pods"] => (true, None, None),
        ["namespaces", ns, "pods"] => (true, Some(*ns), None),
        ["namespaces", ns, "pods", name] => (true, Some(*ns), Some(*name)),
        _ => {
            return Err(ApiError::NotFound(format!(
                "the server could not find the requested resource: {path}"
            )));
        }
    };
    let listed = if pods {
        body_of(super::usage::pods(state, &principal, namespace, &asked).await?).await?
    } else {
        body_of(super::usage::nodes(state, &principal).await?).await?
    };
    let mut items: Vec<Value> = listed["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|item| name.is_none_or(|n| item["name"] == n))
        .map(|item| {
            let mut metadata = json!({"name": item["name"], "creationTimestamp": now});
            if pods {
                metadata["namespace"] = item["namespace"].clone();
                json!({"kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": metadata,
                       "timestamp": now, "window": window(item),
                       "containers": [{"name": skiff_api::kube::DEFAULT_CONTAINER, "usage": usage(item)}]})
            } else {
                json!({"kind": "NodeMetrics", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": metadata,
                       "timestamp": now, "window": window(item), "usage": usage(item)})
            }
        })
        .collect();
    let kind = if pods { "PodMetrics" } else { "NodeMetrics" };
    match name {
        Some(name) if items.is_empty() => Err(ApiError::NotFound(format!(
            "{}metrics.metrics.k8s.io \"{name}\" not found",
            if pods { "pod" } else { "node" }
        ))),
        Some(_) => Ok(Json(items.remove(0)).into_response()),
        None => Ok(Json(
            json!({"kind": format!("{kind}List"), "apiVersion": "metrics.k8s.io/v1beta1",
                               "metadata": {}, "items": items}),
        )
        .into_response()),
    }
}

async fn core(State(state): State<AppState>, request: Request) -> Response {
    serve(state, request, "/api/v1/", "v1").await
}

async fn apps(State(state): State<AppState>, request: Request) -> Response {
    serve(state, request, "/apis/apps/v1/", "apps/v1").await
}

async fn serve(state: AppState, request: Request, prefix: &str, group_version: &str) -> Response {
    let started = Instant::now();
    let path = skiff_path(
        request
            .uri()
            .path()
            .strip_prefix(prefix)
            .unwrap_or_default(),
        group_version,
    );
    let (verb, kind) = super::request_labels(&request, &path);
    let answer = match route(&path, group_version) {
        Ok(Route::Objects) => super::serve(&state, request, path, Dialect::Kube).await,
        Ok(Route::ReplicaSets { namespace, name }) => {
            replica_set_answer(&state, request, namespace, name).await
        }
        Err(error) => Err(error),
    };
    let response = answer.unwrap_or_else(IntoResponse::into_response);
    state
        .store
        .metrics()
        .api_request(verb, kind, response.status().as_u16(), started.elapsed());
    response
}

/// The path of the same request under `skiff.dev`: Kubernetes' plural of
/// a kind whose name differs (`ingresses`) becomes Skiff's (`routes`).
fn skiff_path(path: &str, group_version: &str) -> String {
    if group_version != "networking.k8s.io/v1" {
        return path.to_owned();
    }
    let mut segments: Vec<&str> = path.split('/').collect();
    let plural = match segments.as_slice() {
        ["namespaces", _, ..] => 2,
        _ => 0,
    };
    if segments.get(plural) == Some(&skiff_api::kube::kube_plural(Kind::Route)) {
        segments[plural] = Kind::Route.plural();
    } else if segments.get(plural) == Some(&Kind::Route.plural()) {
        // Kubernetes' group has no `routes`.
        segments[plural] = "";
    }
    segments.join("/")
}

enum Route {
    /// Objects of a kind this group serves, or their subresources.
    Objects,
    /// A Deployment's revisions, as ReplicaSets.
    ReplicaSets {
        namespace: Option<String>,
        name: Option<String>,
    },
}

/// Whether `path` names something `group_version` serves: a kind it has
/// (`/api/v1` has no Deployments), a Pod's log, a Deployment's scale.
fn route(path: &str, group_version: &str) -> Result<Route, ApiError> {
    let not_found = || {
        ApiError::NotFound(format!(
            "the server could not find the requested resource: {path}"
        ))
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if group_version == "apps/v1" {
        match segments.as_slice() {
            ["replicasets"] => {
                return Ok(Route::ReplicaSets {
                    namespace: None,
                    name: None,
                });
            }
            ["namespaces", ns, "replicasets"] => {
                return Ok(Route::ReplicaSets {
                    namespace: Some((*ns).to_owned()),
                    name: None,
                });
            }
            ["namespaces", ns, "replicasets", name] => {
                return Ok(Route::ReplicaSets {
                    namespace: Some((*ns).to_owned()),
                    name: Some((*name).to_owned()),
                });
            }
            _ => {}
        }
    }
    let kind = match parse_target(path).map_err(|_| not_found())? {
        Target::Collection { kind, .. } | Target::Item { kind, .. } => kind,
        Target::PodLog { .. } => Kind::Pod,
        Target::Scale { .. } => Kind::Deployment,
        _ => return Err(not_found()),
    };
    match skiff_api::kube::kube_kind(kind) {
        Some((served, _)) if served == group_version => Ok(Route::Objects),
        _ => Err(not_found()),
    }
}

/// A body written in the Kubernetes shape, in Skiff's; and what it holds
/// that is accepted but means nothing here. A body that is not JSON is
/// passed on for the handler to refuse as such.
pub fn body_in(kind: Kind, body: bytes::Bytes) -> Result<(bytes::Bytes, Vec<String>), ApiError> {
    let Ok(object) = serde_json::from_slice::<Value>(&body) else {
        return Ok((body, Vec::new()));
    };
    let (object, notes) = from_kube(kind, object).map_err(invalid)?;
    Ok((
        serde_json::to_vec(&object).expect("JSON serialises").into(),
        notes,
    ))
}

pub(super) fn invalid(errors: Vec<FieldError>) -> ApiError {
    let mut message = errors.first().map(ToString::to_string).unwrap_or_default();
    if errors.len() > 1 {
        message.push_str(&format!(" (and {} more)", errors.len() - 1));
    }
    ApiError::Invalid {
        message,
        causes: errors
            .into_iter()
            .map(|e| skiff_api::meta::StatusCause {
                field: e.field,
                message: e.message,
            })
            .collect(),
    }
}

/// The answer of a write, in the Kubernetes shape.
pub async fn answer_out(kind: Kind, response: Response) -> Result<Response, ApiError> {
    let status = response.status();
    let headers = response.headers().clone();
    let stored = body_of(response).await?;
    let mut converted = (status, Json(to_kube(kind, stored))).into_response();
    for (name, value) in &headers {
        if name == axum::http::header::WARNING {
            converted.headers_mut().append(name, value.clone());
        }
    }
    Ok(converted)
}

/// PATCH of an object in its Kubernetes shape: merge (RFC 7386),
/// strategic merge (what kubectl sends for these kinds) or JSON patch
/// (RFC 6902), applied to the object as shown and written back whole,
/// conditional on the version read (read again on a lost race, unless the
/// patch named a version itself).
pub async fn patch(
    call: &Call<'_>,
    key: &ObjectKey,
    content_type: &str,
) -> Result<(Response, Vec<String>), ApiError> {
    enum Form {
        Merge,
        Strategic,
        Json(json_patch::Patch),
    }
    // Nothing of the body is read for a caller who may not write here.
    call.may_patch(key).await?;
    let form = match content_type {
        "application/merge-patch+json" | "application/json" | "" => Form::Merge,
        "application/strategic-merge-patch+json" => Form::Strategic,
        "application/json-patch+json" => {
            let operations: json_patch::Patch = serde_json::from_slice(call.body)
                .map_err(|e| ApiError::BadRequest(format!("JSON patch: {e}")))?;
            if operations.0.len() > MAX_JSON_PATCH_OPERATIONS {
                return Err(ApiError::BadRequest(format!(
                    "JSON patch: {} operations; at most {MAX_JSON_PATCH_OPERATIONS} are taken",
                    operations.0.len()
                )));
            }
            Form::Json(operations)
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "content type {other} is not supported; send a merge, strategic merge or JSON patch"
            )));
        }
    };
    let merge = match form {
        Form::Json(_) => Value::Null,
        _ => {
            let merge: Value = serde_json::from_slice(call.body)
                .map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
            if !merge.is_object() {
                return Err(ApiError::BadRequest(
                    "a merge patch must be a JSON object".into(),
                ));
            }
            merge
        }
    };
    let skiff = Call {
        view: View::Objects,
        dialect: Dialect::Skiff,
        ..*call
    };
    for attempt in 0.. {
        let current = body_of(skiff.get(key).await?).await?;
        let read = current["metadata"]["resourceVersion"].clone();
        let mut shown = to_kube(key.kind, current);
        match &form {
            Form::Merge => merge_patch(&mut shown, &merge),
            Form::Strategic => strategic_merge(&mut shown, &merge),
            Form::Json(operations) => apply_json_patch(&mut shown, operations)?,
        }
        skiff_api::kube::well_formed(&shown).map_err(invalid)?;
        let named = shown["metadata"]["resourceVersion"] != read;
        if shown["metadata"]["resourceVersion"].is_null() {
            shown["metadata"]["resourceVersion"] = read;
        }
        let (object, notes) = from_kube(key.kind, shown).map_err(invalid)?;
        let body = serde_json::to_vec(&object).expect("JSON serialises");
        let write = Call {
            body: &body,
            ..skiff
        };
        match write.replace(key, false).await {
            Ok(response) => return Ok((answer_out(key.kind, response).await?, notes)),
            Err(ApiError::Conflict(_)) if !named && attempt < 4 => continue,
            Err(error) => return Err(error),
        }
    }
    unreachable!("the loop returns")
}

/// Most operations one JSON patch may hold: each may copy what the object
/// holds, so the object is measured after each that adds.
const MAX_JSON_PATCH_OPERATIONS: usize = 100;

/// Deepest an object a patch makes may be nested: far beyond any object of
/// these kinds, far within what recursive code walks safely.
const MAX_DEPTH: usize = 64;

/// How deeply `value` is nested, walked without recursion (the object may
/// be deeper than a recursive walk survives).
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(value, 1)];
    while let Some((value, level)) = pending.pop() {
        deepest = deepest.max(level);
        match value {
            Value::Array(items) => pending.extend(items.iter().map(|v| (v, level + 1))),
            Value::Object(fields) => pending.extend(fields.values().map(|v| (v, level + 1))),
            _ => {}
        }
    }
    deepest
}

/// Applies a JSON patch an operation at a time, refusing it once the
/// object grows past the largest one stored: `copy` doubles what it
/// copies, and a hundred doublings would fit in no machine.
fn apply_json_patch(object: &mut Value, operations: &json_patch::Patch) -> Result<(), ApiError> {
    for (index, operation) in operations.0.iter().enumerate() {
        // A copy into what it copies nests the object in itself: a few of
        // them make it deeper than any stack that walks it.
        if let json_patch::PatchOperation::Copy(copy) = operation {
            let (from, path) = (copy.from.to_string(), copy.path.to_string());
            if path == from || path.starts_with(&format!("{from}/")) {
                return Err(ApiError::invalid(
                    &format!("body[{index}].path"),
                    "copies a value into itself",
                ));
            }
        }
        json_patch::patch(object, std::slice::from_ref(operation)).map_err(|e| {
            ApiError::invalid(
                &format!("body[{index}]"),
                format!("the JSON patch does not apply: {e}"),
            )
        })?;
        let grows = matches!(
            operation,
            json_patch::PatchOperation::Copy(_) | json_patch::PatchOperation::Add(_)
        );
        if depth(object) > MAX_DEPTH {
            return Err(ApiError::invalid(
                &format!("body[{index}]"),
                format!("the patched object is nested more than {MAX_DEPTH} deep"),
            ));
        }
        if grows
            && serde_json::to_vec(object).map_or(usize::MAX, |b| b.len()) > super::MAX_OBJECT_BYTES
        {
            return Err(ApiError::TooLarge(format!(
                "body[{index}]: the patched object is larger than 1Mi; objects are limited to 1Mi"
            )));
        }
    }
    Ok(())
}

/// `replicasets`: each Deployment's revisions as ReplicaSets, read-only,
/// under the roles that may list the Deployments.
async fn replica_set_answer(
    state: &AppState,
    request: Request,
    namespace: Option<String>,
    name: Option<String>,
) -> Result<Response, ApiError> {
    let principal = authenticate(state, request.headers(), client_address(&request)).await?;
    if request.method() != Method::GET {
        return Err(ApiError::MethodNotAllowed(format!(
            "{} is not allowed on replicasets: they are views of Deployments' revisions; change the Deployment",
            request.method()
        )));
    }
    let params: HashMap<String, String> = Query::try_from_uri(request.uri())
        .map(|Query(params)| params)
        .map_err(|e| ApiError::BadRequest(format!("query string: {e}")))?;
    if matches!(params.get("watch").map(String::as_str), Some("true" | "1")) {
        return Err(ApiError::MethodNotAllowed(
            "replicasets cannot be watched: they are views of Deployments' revisions; watch deployments".into(),
        ));
    }
    let labels = match params.get("labelSelector") {
        Some(s) => {
            Selector::parse(s).map_err(|e| ApiError::BadRequest(format!("labelSelector: {e}")))?
        }
        None => Selector::everything(),
    };
    let view = View::negotiate(
        request.headers(),
        params.get("includeObject").map(String::as_str),
    )?;
    let caller = crate::auth::token_hash(bearer(request.headers()).unwrap_or_default());
    // Every Deployment, a page at a time.
    let mut deployments = Vec::new();
    let mut next: Option<String> = None;
    let mut revision = Value::Null;
    loop {
        let mut list_params =
            HashMap::from([("limit".to_owned(), super::DEFAULT_LIST_LIMIT.to_string())]);
        if let Some(token) = next.take() {
            list_params.insert("continue".to_owned(), token);
        }
        let call = Call {
            state,
            principal: &principal,
            caller,
            params: &list_params,
            body: &[],
            view: View::Objects,
            dialect: Dialect::Skiff,
        };
        let mut page = body_of(
            call.list_or_watch(Kind::Deployment, namespace.clone())
                .await?,
        )
        .await?;
        if revision.is_null() {
            revision = page["metadata"]["resourceVersion"].clone();
        }
        if let Some(items) = page["items"].as_array_mut() {
            deployments.append(items);
        }
        match page["metadata"]["continue"].as_str() {
            Some(token) => next = Some(token.to_owned()),
            None => break,
        }
    }
    let listed = json!({"items": deployments, "metadata": {"resourceVersion": revision}});
    let mut sets: Vec<Value> = listed["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(replica_sets)
        .filter(|set| {
            let labels_of: std::collections::BTreeMap<String, String> =
                serde_json::from_value(set["metadata"]["labels"].clone()).unwrap_or_default();
            labels.matches(&labels_of)
        })
        .collect();
    if let Some(name) = &name {
        sets.retain(|set| set["metadata"]["name"] == name.as_str());
        if sets.is_empty() {
            return Err(ApiError::NotFound(format!(
                "replicasets.apps \"{name}\" not found"
            )));
        }
    }
    let list = json!({"resourceVersion": listed["metadata"]["resourceVersion"]});
    let answer = match (view, name.is_some()) {
        (View::Table { version, include }, _) => replica_set_table(sets, version, include, list),
        (_, true) => sets.remove(0),
        _ => {
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSetList", "metadata": list, "items": sets})
        }
    };
    Ok(Json(answer).into_response())
}

/// The columns `kubectl get replicasets` shows.
const REPLICA_SET_COLUMNS: [skiff_api::columns::Column; 4] = [
    skiff_api::columns::Column {
        name: "Name",
        priority: 0,
        description: "The Deployment and its revision's template hash.",
    },
    skiff_api::columns::Column {
        name: "Desired",
        priority: 0,
        description: "Pods of this revision the Deployment wants.",
    },
    skiff_api::columns::Column {
        name: "Revision",
        priority: 0,
        description: "The Deployment's revision it is.",
    },
    skiff_api::columns::Column {
        name: "Age",
        priority: 0,
        description: "Time since the revision was made.",
    },
];

fn replica_set_table(sets: Vec<Value>, version: &str, include: Include, list: Value) -> Value {
    let now = chrono::Utc::now();
    let plain = |value: &Value| {
        value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned)
    };
    let rows = sets
        .into_iter()
        .map(|set| {
            let cells = vec![
                plain(&set["metadata"]["name"]),
                plain(&set["spec"]["replicas"]),
                plain(&set["metadata"]["annotations"][skiff_api::kube::REVISION_ANNOTATION]),
                skiff_api::columns::age(set["metadata"]["creationTimestamp"].as_str(), now),
            ];
            (cells, set)
        })
        .collect();
    super::table::assemble(version, include, list, &REPLICA_SET_COLUMNS, rows, |set| {
        set
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_group_serves_its_own_kinds() {
        let ingresses = skiff_path("namespaces/shop/ingresses/web", "networking.k8s.io/v1");
        assert_eq!(ingresses, "namespaces/shop/routes/web");
        assert!(matches!(
            route(&ingresses, "networking.k8s.io/v1"),
            Ok(Route::Objects)
        ));
        let routes = skiff_path("namespaces/shop/routes", "networking.k8s.io/v1");
        assert!(matches!(
            route(&routes, "networking.k8s.io/v1"),
            Err(ApiError::NotFound(_))
        ));
        assert!(matches!(
            route("namespaces/shop/pods", "v1"),
            Ok(Route::Objects)
        ));
        assert!(matches!(
            route("namespaces/shop/pods/web/log", "v1"),
            Ok(Route::Objects)
        ));
        assert!(matches!(route("nodes/n1", "v1"), Ok(Route::Objects)));
        assert!(matches!(
            route("namespaces/shop/deployments/web/scale", "apps/v1"),
            Ok(Route::Objects)
        ));
        assert!(matches!(
            route("namespaces/shop/replicasets", "apps/v1"),
            Ok(Route::ReplicaSets { .. })
        ));
        for (path, group) in [
            ("namespaces/shop/deployments", "v1"),
            ("namespaces/shop/pods", "apps/v1"),
            ("namespaces/shop/routes", "v1"),
            ("namespaces/shop/tokens", "v1"),
            ("whoami", "v1"),
            ("namespaces/shop/replicasets", "v1"),
        ] {
            assert!(
                matches!(route(path, group), Err(ApiError::NotFound(_))),
                "{path} in {group}"
            );
        }
    }
}
