//! `GET namespaces/{ns}/pods/{name}/log`: a pod's output, read from its
//! node through the node API, in Kubernetes' shape (`follow`,
//! `tailLines`, `sinceSeconds`, `previous`, `timestamps`, `limitBytes`; and Skiff's
//! `requestIds`, which begins each line with the request or trace it
//! belongs to).
//!
//! Whoever may read the pod may read its logs (`view` and up in its
//! namespace); the decision is made before the pod is looked up, so a
//! refusal says nothing of whether it exists.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde_json::Value;
use skiff_api::Kind;
use skiff_client::node_api::{LogOptions, log_path};

use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::store::ObjectKey;

/// Query parameters kubectl may send that change nothing here: Skiff pods
/// have one container (whatever its name), and JSON is not pretty-printed
/// in a text answer.
const IGNORED_PARAMS: [&str; 2] = ["container", "pretty"];

pub async fn get(
    state: &AppState,
    principal: &Principal,
    caller: [u8; 32],
    namespace: &str,
    name: &str,
    params: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    if principal.role_in(namespace).is_none() {
        return Err(ApiError::Forbidden(format!(
            "this token may not read pods' logs in namespace {namespace}"
        )));
    }
    if let Some(unknown) = params.keys().find(|name| {
        !IGNORED_PARAMS.contains(&name.as_str())
            && !matches!(
                name.as_str(),
                "follow"
                    | "tailLines"
                    | "sinceSeconds"
                    | "previous"
                    | "timestamps"
                    | "requestIds"
                    | "limitBytes"
            )
    }) {
        return Err(ApiError::BadRequest(format!(
            "query parameter {}: not known for logs (follow, tailLines, sinceSeconds, previous, timestamps, requestIds, limitBytes are)",
            unknown.escape_default()
        )));
    }
    let options = LogOptions::from_params(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(ApiError::BadRequest)?;
    let pod: Value = state
        .store
        .get(&ObjectKey::new(Kind::Pod, namespace, name))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("pods \"{name}\" not found")))?;
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let Some(node) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
        return Err(ApiError::BadRequest(format!(
            "pod {namespace}/{name} is not on a node yet: it has no logs"
        )));
    };
    let mut path = log_path(namespace, name, uid);
    let query = options.to_query();
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query);
    }
    // Counted until the answer's body ends or the client goes.
    let permit = state.nodes.admit_stream(caller)?;
    let lines = state.nodes.get(&state.store, node, &path).await?;
    let body = lines.map(move |chunk| {
        let _held = &permit;
        chunk
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
