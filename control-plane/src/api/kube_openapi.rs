//! The OpenAPI document in the shapes Kubernetes clients read it:
//! `/openapi/v3` (a root naming each group's document by hash) and
//! `/openapi/v3/apis/skiff.dev/v1`, and the older `/openapi/v2` (Swagger
//! 2.0 definitions). Both are [`super::openapi::document`] with the
//! vendor extensions clients look for: each kind's schema names its
//! group, version and kind (`kubectl explain` finds it so), and each
//! write names its kind and takes `fieldValidation` (so `kubectl apply`
//! leaves validation to the server rather than fetching schemas to check
//! with).

use std::sync::OnceLock;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use sha2::Digest;
use skiff_api::Kind;

use super::discovery::{GROUP, VERSION};
use super::{ApiError, AppState, Target, accept_ranges, parse_target, signed_in};

const PREFIX: &str = "/apis/skiff.dev/v1/";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi/v2", get(v2))
        .route("/openapi/v3", get(v3_root))
        .route("/openapi/v3/apis/skiff.dev/v1", get(v3_group))
        .route("/openapi/v3/api/v1", get(v3_core))
        .route("/openapi/v3/apis/apps/v1", get(v3_apps))
        .route("/openapi/v3/apis/networking.k8s.io/v1", get(v3_networking))
}

fn gvk(kind: &str) -> Value {
    json!({"group": GROUP, "version": VERSION, "kind": kind})
}

/// The kind a path of the document is about: the path with its
/// placeholders filled is parsed as a request's would be.
fn kind_of_path(path: &str) -> Option<Kind> {
    let rest = path.strip_prefix(PREFIX)?;
    let filled = rest.replace("{namespace}", "x").replace("{name}", "x");
    match parse_target(&filled).ok()? {
        Target::Collection { kind, .. } | Target::Item { kind, .. } => Some(kind),
        _ => None,
    }
}

/// The group's document: the API's, each kind's schema and writes marked.
fn group_document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut document = super::openapi::document().clone();
        for kind in Kind::ALL {
            if let Some(schema) = document["components"]["schemas"].get_mut(kind.name()) {
                schema["x-kubernetes-group-version-kind"] = json!([gvk(kind.name())]);
            }
        }
        let paths = document["paths"]
            .as_object_mut()
            .expect("the document has paths");
        paths.retain(|path, _| path.starts_with(PREFIX));
        for (path, operations) in paths.iter_mut() {
            let Some(kind) = kind_of_path(path) else {
                continue;
            };
            for (method, operation) in operations.as_object_mut().into_iter().flatten() {
                if matches!(method.as_str(), "get" | "put" | "post" | "patch" | "delete") {
                    operation["x-kubernetes-group-version-kind"] = gvk(kind.name());
                }
            }
        }
        document
    })
}

/// The document of Kubernetes' own kinds in `group_version` (`v1`,
/// `apps/v1`): each kind's schema names only what it is and where Skiff's
/// fields are described (`kubectl explain pods.skiff.dev`), and each of its
/// writes takes `fieldValidation`, so that kubectl leaves validation to
/// the server, which checks every field of these kinds as it converts them.
fn kube_document(group_version: &'static str) -> Value {
    let (group, version) = group_version.split_once('/').unwrap_or(("", group_version));
    let prefix = if group.is_empty() {
        "/api/v1".to_owned()
    } else {
        format!("/apis/{group_version}")
    };
    let mut schemas = Map::new();
    let mut paths = Map::new();
    let field_validation = json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "enum": ["Strict", "Warn", "Ignore"]}});
    for kind in Kind::ALL {
        let Some((served, name)) = skiff_api::kube::kube_kind(kind) else {
            continue;
        };
        if served != group_version {
            continue;
        }
        let mark = json!({"group": group, "version": version, "kind": name});
        schemas.insert(
            format!("{}.{name}", group_version.replace('/', ".")),
            json!({
                "type": "object",
                "description": format!("Skiff's {}, in the shape of Kubernetes' {group_version} {name}; its fields are described by `kubectl explain {}.skiff.dev`.", kind.name(), kind.plural()),
                "x-kubernetes-group-version-kind": [mark],
            }),
        );
        let write = |summary: String| {
            json!({"summary": summary, "parameters": [field_validation], "x-kubernetes-group-version-kind": mark,
                   "responses": {"200": {"description": "the stored object"}}})
        };
        let plural = skiff_api::kube::kube_plural(kind);
        let item = if kind.namespaced() {
            format!("{prefix}/namespaces/{{namespace}}/{plural}/{{name}}")
        } else {
            format!("{prefix}/{plural}/{{name}}")
        };
        paths.insert(
            item,
            json!({"put": write(format!("Replace a {name}")), "patch": write(format!("Patch a {name}"))}),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Skiff", "version": version},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn core_document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| kube_document("v1"))
}

fn apps_document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| kube_document("apps/v1"))
}

fn networking_document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| kube_document("networking.k8s.io/v1"))
}

fn hash_of(document: &Value) -> String {
    let bytes = serde_json::to_vec(document).expect("the document serialises");
    sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// Its hash, which the root names: clients keep a document until it
/// changes.
fn group_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_of(group_document()))
}

/// Swagger 2.0: the definitions of every schema (references pointed at
/// `#/definitions/`), and the kinds marked as in v3. Paths are left to v3.
fn v2_document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut definitions = group_document()["components"]["schemas"].clone();
        repoint(&mut definitions);
        json!({
            "swagger": "2.0",
            "info": {"title": "Skiff", "version": VERSION},
            "paths": {},
            "definitions": definitions,
        })
    })
}

fn repoint(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            if let Some(Value::String(reference)) = fields.get_mut("$ref")
                && let Some(name) = reference.strip_prefix("#/components/schemas/")
            {
                *reference = format!("#/definitions/{name}");
            }
            fields.values_mut().for_each(repoint);
        }
        Value::Array(items) => items.iter_mut().for_each(repoint),
        _ => {}
    }
}

fn json_answer(value: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(value).expect("documents serialise"),
    )
        .into_response()
}

/// Whether `Accept` takes JSON (or says nothing); a client asking only for
/// the protobuf form gets a 406 it can act on, not JSON it cannot parse.
fn takes_json(headers: &HeaderMap) -> bool {
    let ranges: Vec<&str> = accept_ranges(headers)
        .into_iter()
        .map(|range| range.first().copied().unwrap_or_default())
        .collect();
    ranges.is_empty()
        || ranges
            .iter()
            .any(|r| matches!(*r, "application/json" | "application/*" | "*/*"))
}

fn not_acceptable() -> Response {
    ApiError::NotAcceptable(
        "this server writes its OpenAPI documents as JSON only: accept application/json".into(),
    )
    .into_response()
}

async fn v2(State(state): State<AppState>, request: Request) -> Response {
    document_answer(&state, request, v2_document()).await
}

async fn v3_root(State(state): State<AppState>, request: Request) -> Response {
    if let Err(error) = signed_in(&state, request).await {
        return error.into_response();
    }
    let mut paths = Map::new();
    paths.insert(
        format!("apis/{GROUP}/{VERSION}"),
        json!({"serverRelativeURL": format!("/openapi/v3/apis/{GROUP}/{VERSION}?hash={}", group_hash())}),
    );
    paths.insert(
        "api/v1".into(),
        json!({"serverRelativeURL": format!("/openapi/v3/api/v1?hash={}", hash_of(core_document()))}),
    );
    paths.insert(
        "apis/apps/v1".into(),
        json!({"serverRelativeURL": format!("/openapi/v3/apis/apps/v1?hash={}", hash_of(apps_document()))}),
    );
    paths.insert(
        "apis/networking.k8s.io/v1".into(),
        json!({"serverRelativeURL": format!("/openapi/v3/apis/networking.k8s.io/v1?hash={}", hash_of(networking_document()))}),
    );
    json_answer(&json!({"paths": paths}))
}

async fn v3_core(State(state): State<AppState>, request: Request) -> Response {
    document_answer(&state, request, core_document()).await
}

async fn v3_networking(State(state): State<AppState>, request: Request) -> Response {
    document_answer(&state, request, networking_document()).await
}

/// A document, to a signed-in caller that takes JSON.
async fn document_answer(state: &AppState, request: Request, document: &Value) -> Response {
    match signed_in(state, request).await {
        Ok(headers) if takes_json(&headers) => json_answer(document),
        Ok(_) => not_acceptable(),
        Err(error) => error.into_response(),
    }
}

async fn v3_apps(State(state): State<AppState>, request: Request) -> Response {
    document_answer(&state, request, apps_document()).await
}

async fn v3_group(State(state): State<AppState>, request: Request) -> Response {
    document_answer(&state, request, group_document()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_and_each_of_its_writes_is_marked_with_its_group_version_kind() {
        let document = group_document();
        for kind in Kind::ALL {
            assert_eq!(
                document["components"]["schemas"][kind.name()]["x-kubernetes-group-version-kind"],
                json!([gvk(kind.name())]),
                "{kind}"
            );
        }
        let pods = &document["paths"]["/apis/skiff.dev/v1/namespaces/{namespace}/pods/{name}"];
        assert_eq!(pods["patch"]["x-kubernetes-group-version-kind"], gvk("Pod"));
        let names: Vec<&str> = pods["patch"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(pods["parameters"].as_array().into_iter().flatten())
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(names.contains(&"fieldValidation"), "{names:?}");
        assert!(
            !serde_json::to_string(v2_document())
                .unwrap()
                .contains("#/components/"),
            "every reference of v2 points at its definitions"
        );
    }
}

/// What a write does with a field its kind does not have
/// (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Refuse the write, naming the field (the default).
    Strict,
    /// Drop the field and say so in a `Warning` header.
    Warn,
    /// Drop the field.
    Ignore,
}

impl FieldValidation {
    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value {
            None | Some("Strict") => Ok(FieldValidation::Strict),
            Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::BadRequest(format!(
                "fieldValidation: `{}` is not Strict, Warn or Ignore",
                other.escape_default()
            ))),
        }
    }
}

/// Removes from `object` (an object of `kind`, or a merge patch of one)
/// every field the kind's schema does not have, and returns their paths
/// (`spec.colour`). Where the schema allows several shapes the value is
/// left as it is, for admission to judge.
pub fn prune_unknown(kind: Kind, object: &mut Value) -> Vec<String> {
    let schemas = &super::openapi::document()["components"]["schemas"];
    let mut removed = Vec::new();
    prune(schemas, &schemas[kind.name()], object, "", &mut removed);
    removed
}

fn resolve<'a>(schemas: &'a Value, schema: &'a Value) -> &'a Value {
    let mut schema = schema;
    for _ in 0..16 {
        if let Some(name) = schema["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
        {
            schema = &schemas[name];
            continue;
        }
        // One shape, perhaps nullable: `anyOf`/`oneOf`/`allOf` of it and null.
        let alternatives: Vec<&Value> = ["anyOf", "oneOf", "allOf"]
            .iter()
            .filter_map(|k| schema[*k].as_array())
            .flatten()
            .filter(|a| a["type"] != "null")
            .collect();
        if schema.get("properties").is_none() && alternatives.len() == 1 {
            schema = alternatives[0];
            continue;
        }
        break;
    }
    schema
}

fn prune(schemas: &Value, schema: &Value, value: &mut Value, at: &str, removed: &mut Vec<String>) {
    let schema = resolve(schemas, schema);
    let join = |key: &str| {
        if at.is_empty() {
            key.to_owned()
        } else {
            format!("{at}.{key}")
        }
    };
    match value {
        Value::Object(fields) => {
            if let Some(properties) = schema["properties"].as_object() {
                let closed = schema["additionalProperties"] == false;
                fields.retain(|key, _| {
                    let keep = properties.contains_key(key) || !closed;
                    if !keep {
                        removed.push(join(key));
                    }
                    keep
                });
                for (key, field) in fields.iter_mut() {
                    if let Some(property) = properties.get(key) {
                        prune(schemas, property, field, &join(key), removed);
                    }
                }
            } else if schema["additionalProperties"].is_object() {
                for (key, field) in fields.iter_mut() {
                    prune(
                        schemas,
                        &schema["additionalProperties"],
                        field,
                        &join(key),
                        removed,
                    );
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                prune(
                    schemas,
                    &schema["items"],
                    item,
                    &format!("{at}[{index}]"),
                    removed,
                );
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod prune_tests {
    use super::*;

    #[test]
    fn unknown_fields_go_at_any_depth_and_known_ones_stay() {
        let mut pod = json!({
            "apiVersion": "skiff.dev/v1", "kind": "Pod",
            "metadata": {"name": "web", "labels": {"any-label": "stays"}, "colour": "red"},
            "spec": {"image": "reg/web:v1", "replicaz": 3,
                     "env": [{"name": "A", "value": "1", "secret": true}]},
            "extra": 1,
        });
        let mut removed = prune_unknown(Kind::Pod, &mut pod);
        removed.sort();
        assert_eq!(
            removed,
            [
                "extra",
                "metadata.colour",
                "spec.env[0].secret",
                "spec.replicaz"
            ]
        );
        assert_eq!(pod["metadata"]["labels"]["any-label"], "stays");
        assert_eq!(pod["spec"]["env"][0]["value"], "1");
        assert_eq!(pod["spec"]["image"], "reg/web:v1");
        // What is left is a pod admission takes.
        skiff_api::admit(Kind::Pod, pod).expect("admitted");
    }
}
