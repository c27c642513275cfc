//! PATCH with `application/apply-patch+yaml`: server-side apply
//! ([`skiff_api::apply`]) of a whole object by a field manager, in either
//! shape. The object is created if missing; otherwise the applied object
//! is written whole, conditional on the version read (read again on a lost
//! race), through the ordinary create and replace handlers, so roles,
//! admission and quotas are theirs.

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use skiff_api::apply::{Refusal, apply};
use skiff_api::meta::StatusCause;

use super::ApiError;
use super::manifests::body_of;
use super::objects::Call;
use super::table::{Dialect, View};
use crate::store::ObjectKey;

/// Longest field manager name, as Kubernetes has it.
const MAX_MANAGER: usize = 128;

pub async fn server_side(call: &Call<'_>, key: &ObjectKey) -> Result<Response, ApiError> {
    // Nothing of the body is read for a caller who may not write here.
    call.may_patch(key).await?;
    let manager = call
        .params
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            ApiError::BadRequest(
                "fieldManager: an apply names its field manager (kubectl sends it)".into(),
            )
        })?;
    if manager.len() > MAX_MANAGER || !manager.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ApiError::BadRequest(format!(
            "fieldManager: at most {MAX_MANAGER} printable characters without spaces"
        )));
    }
    let force = match call.params.get("force").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "force: `{}` is not true or false",
                other.escape_default()
            )));
        }
    };
    let text = std::str::from_utf8(call.body)
        .map_err(|_| ApiError::BadRequest("body: not UTF-8 text".into()))?;
    // YAML's aliases are expanded within a bound, never without one.
    let config: Value =
        skiff_api::validate::bounded_document(serde_yaml_ng::Deserializer::from_str(text))
            .map_err(|e| ApiError::BadRequest(format!("body: not a YAML or JSON object: {e}")))?;
    if !config.is_object() || !config["metadata"].is_object() {
        return Err(ApiError::BadRequest(
            "body: an apply is a whole object, with its metadata".into(),
        ));
    }
    if config["metadata"]["name"].as_str() != Some(key.name.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "metadata.name: an apply names the object of its path, `{}`",
            key.name
        )));
    }
    if let Some(namespace) = config["metadata"]["namespace"].as_str()
        && namespace != key.namespace
    {
        return Err(ApiError::BadRequest(format!(
            "metadata.namespace: `{namespace}` is not the namespace of the path, `{}`",
            key.namespace
        )));
    }
    let skiff = Call {
        view: View::Objects,
        dialect: Dialect::Skiff,
        ..*call
    };
    for attempt in 0.. {
        let current = match skiff.get(key).await {
            Ok(response) => Some(body_of(response).await?),
            Err(ApiError::NotFound(_)) => None,
            Err(error) => return Err(error),
        };
        let shown = current.clone().map(|c| call.dialect.show(key.kind, c));
        let mut applied = apply(shown.as_ref(), config.clone(), manager, force).map_err(refused)?;
        if call.dialect == Dialect::Kube {
            applied = skiff_api::kube::from_kube(key.kind, applied)
                .map_err(super::kube::invalid)?
                .0;
        }
        if let Some(current) = &current {
            applied["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        }
        let body = serde_json::to_vec(&applied).expect("JSON serialises");
        let write = Call {
            body: &body,
            ..skiff
        };
        let written = match &current {
            None => {
                let namespace = key.kind.namespaced().then(|| key.namespace.clone());
                write.create(key.kind, namespace).await
            }
            Some(_) => write.replace(key, false).await,
        };
        match written {
            Ok(response) => {
                let status = response.status();
                let stored = body_of(response).await?;
                return Ok((status, Json(call.dialect.show(key.kind, stored))).into_response());
            }
            Err(ApiError::Conflict(_) | ApiError::AlreadyExists(_)) if attempt < 4 => continue,
            Err(error) => return Err(error),
        }
    }
    unreachable!("the loop returns")
}

/// An apply refused: conflicts are a 409 naming each field and its
/// manager; too many fields, a 413.
fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::TooManyFields => ApiError::TooLarge(format!(
            "body: more than {} fields in one apply",
            skiff_api::apply::MAX_FIELDS
        )),
        Refusal::Conflicts(conflicts) => {
            let listed: Vec<String> = conflicts.iter().map(ToString::to_string).collect();
            ApiError::ManagerConflict {
                message: format!(
                    "Apply failed with {} conflict{}: {}; apply with force to take them over",
                    conflicts.len(),
                    if conflicts.len() == 1 { "" } else { "s" },
                    listed.join("; ")
                ),
                causes: conflicts
                    .into_iter()
                    .map(|c| StatusCause {
                        field: skiff_api::apply::dotted(&c.field),
                        message: format!("conflict with \"{}\"", c.manager),
                    })
                    .collect(),
            }
        }
    }
}
