//! `deployments/{name}/scale`: a Deployment's replicas as an
//! `autoscaling/v1` `Scale`, read and written as `kubectl scale` does. A
//! write is a merge patch of the Deployment's `spec.replicas` (and of
//! `metadata.resourceVersion` when the caller names one), so it is
//! authorized, admitted and conditional as any patch of it is.

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use skiff_api::Kind;

use super::ApiError;
use super::manifests::body_of;
use super::objects::Call;
use super::table::{Dialect, View};
use crate::store::ObjectKey;

/// The Deployment's Scale.
fn scale_of(deployment: &Value) -> Value {
    let selector = deployment["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let meta = &deployment["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": deployment["spec"]["replicas"].as_u64().unwrap_or(0)},
        "status": {
            "replicas": deployment["status"]["replicas"].as_u64().unwrap_or(0),
            "selector": selector,
        },
    })
}

/// The Deployment as the caller may read it.
async fn deployment(call: &Call<'_>, key: &ObjectKey) -> Result<Value, ApiError> {
    let read = Call {
        view: View::Objects,
        dialect: Dialect::Skiff,
        ..*call
    };
    body_of(read.get(key).await?).await
}

pub async fn handle(
    call: &Call<'_>,
    namespace: &str,
    name: &str,
    method: &axum::http::Method,
) -> Result<Response, ApiError> {
    use axum::http::Method;
    let key = ObjectKey::new(Kind::Deployment, namespace, name);
    let written = match *method {
        Method::GET => return Ok(Json(scale_of(&deployment(call, &key).await?)).into_response()),
        Method::PUT => {
            let scale: Value = serde_json::from_slice(call.body)
                .map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
            if !scale.is_object() || !scale["metadata"].is_null() && !scale["metadata"].is_object()
            {
                return Err(ApiError::invalid(
                    "body",
                    "a Scale is an object, its metadata one too",
                ));
            }
            check_identity(&scale, namespace, name)?;
            scale
        }
        Method::PATCH => {
            let patch: Value = serde_json::from_slice(call.body)
                .map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
            if !patch.is_object() {
                return Err(ApiError::BadRequest(
                    "a merge patch must be a JSON object".into(),
                ));
            }
            let mut scale = scale_of(&deployment(call, &key).await?);
            super::objects::merge_patch(&mut scale, &patch);
            if !scale["metadata"].is_object() || !scale["spec"].is_object() {
                return Err(ApiError::invalid(
                    "body",
                    "a Scale's metadata and spec are objects",
                ));
            }
            check_identity(&scale, namespace, name)?;
            // Conditional only if the caller made it so.
            if patch["metadata"].get("resourceVersion").is_none() {
                scale["metadata"]["resourceVersion"] = Value::Null;
            }
            scale
        }
        ref other => {
            return Err(ApiError::MethodNotAllowed(format!(
                "{other} is not allowed on a scale: read it with GET, write it with PUT or PATCH"
            )));
        }
    };
    let replicas = written["spec"]["replicas"]
        .as_u64()
        .filter(|r| *r <= i32::MAX as u64)
        .ok_or_else(|| {
            ApiError::invalid(
                "spec.replicas",
                "must be a whole number from 0 to 2147483647",
            )
        })?;
    let mut patch = json!({"spec": {"replicas": replicas}});
    if let Some(version) = written["metadata"]["resourceVersion"].as_str() {
        patch["metadata"] = json!({"resourceVersion": version});
    }
    let body = serde_json::to_vec(&patch).expect("JSON serialises");
    let write = Call {
        body: &body,
        view: View::Objects,
        dialect: Dialect::Skiff,
        ..*call
    };
    let stored = body_of(write.patch(&key, false).await?).await?;
    Ok(Json(scale_of(&stored)).into_response())
}

/// A Scale written must name the Deployment of its path, if it names one.
fn check_identity(scale: &Value, namespace: &str, name: &str) -> Result<(), ApiError> {
    let meta = &scale["metadata"];
    if meta["name"].as_str().is_some_and(|n| n != name) {
        return Err(ApiError::BadRequest(format!(
            "metadata.name: the scale of deployment {name} cannot name another"
        )));
    }
    if meta["namespace"].as_str().is_some_and(|n| n != namespace) {
        return Err(ApiError::BadRequest(format!(
            "metadata.namespace: the scale of a deployment in {namespace} cannot name another namespace"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scale_shows_wanted_and_running_replicas_and_the_selector() {
        let deployment = json!({
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "9"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 2},
        });
        let scale = scale_of(&deployment);
        assert_eq!(scale["spec"]["replicas"], 3);
        assert_eq!(scale["status"]["replicas"], 2);
        assert_eq!(scale["status"]["selector"], "app=web");
        assert_eq!(scale["metadata"]["resourceVersion"], "9");
        assert!(check_identity(&scale, "shop", "web").is_ok());
        assert!(check_identity(&scale, "shop", "api").is_err());
        assert!(check_identity(&scale, "other", "web").is_err());
    }
}
