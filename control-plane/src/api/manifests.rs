//! `POST manifests[?dryRun=All][&namespace=NS]`: a manifest of one or more
//! objects (YAML documents, or JSON, which is YAML too) applied as
//! `wasmctl apply` applies it: each object created if it does not exist,
//! replaced (conditional on the version read) if it does. With `dryRun`
//! nothing is written and the answer says what would be. The dashboard's
//! apply, which has no YAML parser of its own, is this call.
//!
//! The whole manifest is read and checked before anything is written: a
//! document that is not an object of a known kind refuses the request
//! (400, naming the document) with nothing applied. Each object is then
//! applied through the same handlers as a create or a replace, under the
//! caller's roles; the answer has one item per object, applied or not.

use std::collections::HashMap;

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use skiff_api::{API_VERSION, Kind};

use super::objects::Call;
use super::{ApiError, MAX_OBJECT_BYTES};
use crate::store::ObjectKey;

/// Objects one manifest may hold.
const MAX_DOCUMENTS: usize = 100;
/// Paths of changes listed per object; past them, how many more.
const MAX_CHANGES: usize = 50;

/// One object of the manifest, with where it goes.
struct Document {
    kind: Kind,
    namespace: Option<String>,
    name: String,
    object: Value,
}

/// The manifest's objects, in order; any document that is not one refuses
/// the whole manifest.
fn documents(body: &[u8], namespace: &str) -> Result<Vec<Document>, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::BadRequest("manifest: not UTF-8 text".into()))?;
    let mut found = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let at = index + 1;
        // Aliases are expanded within a bound, never without one.
        let value = skiff_api::validate::bounded_document(document)
            .map_err(|e| ApiError::BadRequest(format!("manifest document {at}: {e}")))?;
        if value.is_null() {
            // An empty document (`---` twice) holds nothing to apply.
            continue;
        }
        if found.len() == MAX_DOCUMENTS {
            return Err(ApiError::BadRequest(format!(
                "manifest: more than {MAX_DOCUMENTS} objects; apply it in parts"
            )));
        }
        // Aliases can make a small text a large object: the object is
        // held to the limit of any other.
        let size = serde_json::to_vec(&value).map_or(usize::MAX, |v| v.len());
        if size > MAX_OBJECT_BYTES {
            return Err(ApiError::BadRequest(format!(
                "manifest document {at}: larger than 1Mi as an object; objects are limited to 1Mi"
            )));
        }
        found.push(document_of(value, at, namespace)?);
    }
    if found.is_empty() {
        return Err(ApiError::BadRequest("manifest: no object in it".into()));
    }
    Ok(found)
}

fn document_of(object: Value, at: usize, namespace: &str) -> Result<Document, ApiError> {
    let bad = |what: &str| ApiError::BadRequest(format!("manifest document {at}: {what}"));
    if !object.is_object() {
        return Err(bad("not an object"));
    }
    match object["apiVersion"].as_str() {
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(bad(&format!(
                "apiVersion `{}` is not served here; use {API_VERSION}",
                other.escape_default()
            )));
        }
        None => return Err(bad("apiVersion: required")),
    }
    let kind_name = object["kind"]
        .as_str()
        .ok_or_else(|| bad("kind: required"))?;
    let kind = Kind::ALL
        .into_iter()
        .find(|k| k.name() == kind_name)
        .ok_or_else(|| {
            bad(&format!(
                "kind `{}` is not known",
                kind_name.escape_default()
            ))
        })?;
    let name = object["metadata"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("metadata.name: required"))?
        .to_owned();
    let namespace = kind.namespaced().then(|| {
        object["metadata"]["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
            .unwrap_or(namespace)
            .to_owned()
    });
    Ok(Document {
        kind,
        namespace,
        name,
        object,
    })
}

pub async fn apply(call: &Call<'_>) -> Result<Response, ApiError> {
    let dry_run = match call.params.get("dryRun").map(String::as_str) {
        None => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "dryRun: `{}` is not supported; use All",
                other.escape_default()
            )));
        }
    };
    let namespace = call
        .params
        .get("namespace")
        .map_or("default", String::as_str);
    let documents = documents(call.body, namespace)?;
    let mut items = Vec::with_capacity(documents.len());
    for document in documents {
        let outcome = apply_one(call, &document, dry_run).await;
        let mut item = json!({
            "kind": document.kind.name(),
            "name": document.name,
        });
        if let Some(namespace) = &document.namespace {
            item["namespace"] = json!(namespace);
        }
        match outcome {
            Ok((action, changes)) => {
                item["action"] = json!(action);
                item["changes"] = json!(changes);
            }
            Err(error) => {
                let parts = error.parts();
                item["action"] = json!("failed");
                item["code"] = json!(parts.code.as_u16());
                item["message"] = json!(parts.message);
            }
        }
        items.push(item);
    }
    Ok(Json(json!({
        "apiVersion": API_VERSION,
        "kind": "ManifestResult",
        "dryRun": dry_run,
        "items": items,
    }))
    .into_response())
}

/// Creates or replaces one object; what was done (or would be) and the
/// paths it changed.
async fn apply_one(
    call: &Call<'_>,
    document: &Document,
    dry_run: bool,
) -> Result<(&'static str, Vec<String>), ApiError> {
    let key = ObjectKey::new(
        document.kind,
        document.namespace.as_deref().unwrap_or(""),
        &document.name,
    );
    let mut params: HashMap<String, String> = HashMap::new();
    if dry_run {
        params.insert("dryRun".into(), "All".into());
    }
    let existing = match call.get(&key).await {
        Ok(response) => Some(body_of(response).await?),
        Err(ApiError::NotFound(_)) => None,
        Err(error) => return Err(error),
    };
    let Some(existing) = existing else {
        let body = serde_json::to_vec(&document.object).expect("JSON");
        let create = Call {
            params: &params,
            body: &body,
            ..*call
        };
        create
            .create(document.kind, document.namespace.clone())
            .await?;
        return Ok(("created", Vec::new()));
    };
    let mut desired = document.object.clone();
    desired["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"].clone();
    let body = serde_json::to_vec(&desired).expect("JSON");
    let replace = Call {
        params: &params,
        body: &body,
        ..*call
    };
    let stored = body_of(replace.replace(&key, false).await?).await?;
    let mut changes = changed_paths(&existing, &stored);
    if changes.is_empty() {
        return Ok(("unchanged", changes));
    }
    if changes.len() > MAX_CHANGES {
        let more = changes.len() - MAX_CHANGES;
        changes.truncate(MAX_CHANGES);
        changes.push(format!("and {more} more"));
    }
    Ok(("configured", changes))
}

/// The JSON of a successful answer of another handler, which this call
/// goes on from; any other answer is this server's failure.
pub(super) async fn body_of(response: Response) -> Result<Value, ApiError> {
    if !response.status().is_success() {
        return Err(ApiError::Internal(format!(
            "a step of the call answered {}",
            response.status()
        )));
    }
    // A handler's answer is an object or a page of a list (a page stops at
    // about 4 MiB), never more than this.
    let bytes = axum::body::to_bytes(response.into_body(), 16 * MAX_OBJECT_BYTES)
        .await
        .map_err(|e| ApiError::Internal(format!("reading a step's answer: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::Internal(format!("a step's answer: {e}")))
}

/// The fields that differ between two versions of an object, as dotted
/// paths, in order; the server's bookkeeping (`status`, versions, times)
/// left out. Paths only, never values: a Secret's change is named, not
/// shown.
fn changed_paths(before: &Value, after: &Value) -> Vec<String> {
    const BOOKKEEPING: [&str; 5] = [
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "uid",
        "managedFields",
    ];
    fn walk(before: &Value, after: &Value, path: &str, top: bool, out: &mut Vec<String>) {
        match (before, after) {
            (Value::Object(a), Value::Object(b)) => {
                let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
                keys.sort();
                keys.dedup();
                for key in keys {
                    if top && key == "status" {
                        continue;
                    }
                    if path == "metadata" && BOOKKEEPING.contains(&key.as_str()) {
                        continue;
                    }
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    let missing = Value::Null;
                    walk(
                        a.get(key).unwrap_or(&missing),
                        b.get(key).unwrap_or(&missing),
                        &child,
                        false,
                        out,
                    );
                }
            }
            (a, b) if a != b => out.push(path.to_owned()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(before, after, "", true, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_paths_without_values_and_without_bookkeeping() {
        let before = json!({
            "metadata": {"name": "web", "resourceVersion": "3", "labels": {"a": "1"}},
            "spec": {"replicas": 1, "ports": [{"port": 80}]},
            "data": {"password": "old"},
            "status": {"replicas": 1},
        });
        let after = json!({
            "metadata": {"name": "web", "resourceVersion": "9", "labels": {"a": "1", "b": "2"}},
            "spec": {"replicas": 3, "ports": [{"port": 81}]},
            "data": {"password": "new"},
            "status": {"replicas": 3},
        });
        assert_eq!(
            changed_paths(&before, &after),
            [
                "data.password",
                "metadata.labels.b",
                "spec.ports",
                "spec.replicas"
            ]
        );
        assert!(changed_paths(&before, &before).is_empty());
    }

    #[test]
    fn a_manifest_is_read_whole_before_anything_is_applied() {
        let two = b"apiVersion: skiff.dev/v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\n{\"apiVersion\": \"skiff.dev/v1\", \"kind\": \"Node\", \"metadata\": {\"name\": \"n\", \"namespace\": \"x\"}}\n";
        let found = documents(two, "shop").unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(
            (found[0].kind, found[0].namespace.as_deref()),
            (Kind::ConfigMap, Some("shop"))
        );
        // Cluster-scoped: no namespace, whatever the document says.
        assert_eq!(
            (found[1].kind, found[1].namespace.as_deref()),
            (Kind::Node, None)
        );

        let refused = |text: &str| match documents(text.as_bytes(), "default") {
            Err(ApiError::BadRequest(message)) => message,
            Err(other) => panic!("{text}: {other:?}"),
            Ok(_) => panic!("{text}: accepted"),
        };
        let ok = "apiVersion: skiff.dev/v1\nkind: ConfigMap\nmetadata: {name: a}\n";
        assert!(
            refused(&format!("{ok}---\nkind: [unclosed\n")).starts_with("manifest document 2: ")
        );
        assert!(
            refused(&format!(
                "{ok}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\n"
            ))
            .contains("apiVersion `v1` is not served here")
        );
        assert!(
            refused(&format!(
                "{ok}---\napiVersion: skiff.dev/v1\nkind: Gadget\nmetadata: {{name: g}}\n"
            ))
            .contains("kind `Gadget` is not known")
        );
        assert!(
            refused("apiVersion: skiff.dev/v1\nkind: ConfigMap\n")
                .contains("metadata.name: required")
        );
        assert!(refused("- just\n- a list\n").contains("not an object"));
        assert_eq!(refused("\n---\n"), "manifest: no object in it");
        // An alias bomb: small as text, refused rather than expanded
        // without bound.
        let mut bomb = String::from("a: &a [\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"]\n");
        for level in 1..12 {
            let previous = (b'a' + level - 1) as char;
            let this = (b'a' + level) as char;
            bomb.push_str(&format!(
                "{this}: &{this} [*{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}]\n"
            ));
        }
        let message = refused(&bomb);
        assert!(
            message.starts_with("manifest document 1: ") && message.contains("repetition limit"),
            "{message}"
        );
    }
}
