//! `/openapi.json`: an OpenAPI 3.1 document of every route, generated from
//! the kinds and their Rust types, so it cannot drift from what is served.

use std::sync::OnceLock;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};
use skiff_api::kinds::{account, cluster, config, deployment, pod, quota, service};
use skiff_api::meta::{DeleteOptions, ListMeta, Status};
use skiff_api::tokens::{TokenInfo, TokenRequest};
use skiff_api::{EventType, Kind};

use super::{AppState, authenticate};

pub async fn serve(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match authenticate(&state, &headers).await {
        Ok(_) => Json(document()).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The document, built once.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn build() -> Value {
    let mut generator = SchemaGenerator::new(SchemaSettings::openapi3());
    let mut schemas = Map::new();
    let mut add = |name: &str, schema: schemars::Schema| {
        schemas.insert(name.to_owned(), schema.to_value());
    };
    fn register<T: JsonSchema>(generator: &mut SchemaGenerator) -> schemars::Schema {
        generator.root_schema_for::<T>()
    }
    for kind in Kind::ALL {
        let schema = match kind {
            Kind::Namespace => register::<cluster::Namespace>(&mut generator),
            Kind::Node => register::<cluster::Node>(&mut generator),
            Kind::Pod => register::<pod::Pod>(&mut generator),
            Kind::Deployment => register::<deployment::Deployment>(&mut generator),
            Kind::Service => register::<service::Service>(&mut generator),
            Kind::Route => register::<service::Route>(&mut generator),
            Kind::Secret => register::<config::Secret>(&mut generator),
            Kind::ConfigMap => register::<config::ConfigMap>(&mut generator),
            Kind::ResourceQuota => register::<quota::ResourceQuota>(&mut generator),
            Kind::ServiceAccount => register::<account::ServiceAccount>(&mut generator),
        };
        add(kind.name(), schema);
    }
    add("Status", register::<Status>(&mut generator));
    add("ListMeta", register::<ListMeta>(&mut generator));
    add("DeleteOptions", register::<DeleteOptions>(&mut generator));
    add("EventType", register::<EventType>(&mut generator));
    add("TokenRequest", register::<TokenRequest>(&mut generator));
    add("TokenInfo", register::<TokenInfo>(&mut generator));
    for (name, schema) in generator.take_definitions(true) {
        schemas.entry(name).or_insert(schema);
    }
    // Nested definitions were generated relative to each root; point them
    // at the shared components instead.
    let mut schemas = Value::Object(schemas);
    strip_nested_defs(&mut schemas);

    let mut paths = Map::new();
    for kind in Kind::ALL {
        add_kind_paths(&mut paths, kind);
        schemas[format!("{}List", kind.name())] = json!({
            "type": "object",
            "required": ["apiVersion", "kind", "metadata", "items"],
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": schema_ref("ListMeta"),
                "items": {"type": "array", "items": schema_ref(kind.name())},
            },
        });
    }
    add_token_paths(&mut paths);
    for health in ["/healthz", "/readyz"] {
        paths.insert(
            health.into(),
            json!({"get": {
                "summary": "Health check (no authentication)",
                "security": [],
                "responses": {"200": {"description": "ok"}, "503": {"description": "not ready"}},
            }}),
        );
    }
    paths.insert(
        "/openapi.json".into(),
        json!({"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}}),
    );

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Skiff API",
            "version": "v1",
            "description": "Kubernetes-shaped API of the Skiff WebAssembly orchestrator. Every route but /healthz and /readyz needs a bearer token.",
        },
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "paths": paths,
    })
}

fn strip_nested_defs(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            fields.remove("$defs");
            fields.remove("$schema");
            for (_, v) in fields.iter_mut() {
                strip_nested_defs(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nested_defs),
        _ => {}
    }
}

fn parameter(name: &str, location: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": location, "required": location == "path", "description": description, "schema": schema})
}

fn errors(mut responses: Map<String, Value>, codes: &[&str]) -> Value {
    for code in codes {
        responses.insert((*code).into(), json!({"description": "failure", "content": {"application/json": {"schema": schema_ref("Status")}}}));
    }
    Value::Object(responses)
}

fn object_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn add_kind_paths(paths: &mut Map<String, Value>, kind: Kind) {
    let name = kind.name();
    let plural = kind.plural();
    let object = schema_ref(name);
    let list_params = vec![
        parameter(
            "labelSelector",
            "query",
            "e.g. app=web,tier in (a,b)",
            json!({"type": "string"}),
        ),
        parameter(
            "fieldSelector",
            "query",
            "e.g. spec.nodeName=node-1",
            json!({"type": "string"}),
        ),
        parameter(
            "limit",
            "query",
            "page size",
            json!({"type": "integer", "minimum": 1}),
        ),
        parameter(
            "continue",
            "query",
            "token from the previous page",
            json!({"type": "string"}),
        ),
        parameter(
            "watch",
            "query",
            "stream changes as newline-delimited WatchEvents",
            json!({"type": "boolean"}),
        ),
        parameter(
            "resourceVersion",
            "query",
            "watch: resume after this revision (410 if compacted)",
            json!({"type": "string"}),
        ),
        parameter(
            "timeoutSeconds",
            "query",
            "watch: end the stream after this long",
            json!({"type": "integer"}),
        ),
    ];
    let list_op = |summary: String| {
        json!({
            "summary": summary,
            "parameters": list_params,
            "responses": errors(
                Map::from_iter([
                    ("200".to_owned(), json!({
                        "description": "a list, or with watch=true a stream of WatchEvents",
                        "content": {
                            "application/json": {"schema": schema_ref(&format!("{name}List"))},
                            "application/x-ndjson": {"schema": {"type": "object", "properties": {"type": schema_ref("EventType"), "object": object}}},
                        },
                    })),
                ]),
                &["400", "401", "403", "410"],
            ),
        })
    };
    let create_op = json!({
        "summary": format!("Create a {name}"),
        "requestBody": {"required": true, "content": {"application/json": {"schema": object}}},
        "responses": errors(Map::from_iter([("201".to_owned(), object_response("created", object.clone()))]), &["400", "401", "403", "404", "409", "413", "422"]),
    });
    let item_ops = |status: bool| {
        let what = if status {
            format!("{name} status")
        } else {
            name.to_owned()
        };
        let mut ops = Map::new();
        ops.insert("get".into(), json!({
            "summary": format!("Read a {what}"),
            "responses": errors(Map::from_iter([("200".to_owned(), object_response("the object", object.clone()))]), &["401", "403", "404"]),
        }));
        ops.insert("put".into(), json!({
            "summary": format!("Replace a {what}; a stale metadata.resourceVersion gets 409"),
            "requestBody": {"required": true, "content": {"application/json": {"schema": object}}},
            "responses": errors(Map::from_iter([("200".to_owned(), object_response("the stored object", object.clone()))]), &["400", "401", "403", "404", "409", "413", "422"]),
        }));
        ops.insert("patch".into(), json!({
            "summary": format!("Patch a {what} with a JSON merge patch (RFC 7386)"),
            "requestBody": {"required": true, "content": {"application/merge-patch+json": {"schema": {"type": "object"}}}},
            "responses": errors(Map::from_iter([("200".to_owned(), object_response("the stored object", object.clone()))]), &["400", "401", "403", "404", "409", "413", "422"]),
        }));
        if !status {
            ops.insert("delete".into(), json!({
                "summary": format!("Delete a {name}; preconditions.resourceVersion makes it conditional"),
                "requestBody": {"required": false, "content": {"application/json": {"schema": schema_ref("DeleteOptions")}}},
                "responses": errors(Map::from_iter([("200".to_owned(), object_response("the object as deleted", object.clone()))]), &["400", "401", "403", "404", "409"]),
            }));
        }
        Value::Object(ops)
    };
    let name_param = parameter("name", "path", "object name", json!({"type": "string"}));
    let ns_param = parameter("namespace", "path", "namespace", json!({"type": "string"}));
    let with_params = |mut ops: Value, params: Vec<Value>| {
        ops["parameters"] = Value::Array(params);
        ops
    };
    if kind.namespaced() {
        let base = format!("/apis/skiff.dev/v1/namespaces/{{namespace}}/{plural}");
        let mut collection = Map::new();
        collection.insert(
            "get".into(),
            list_op(format!("List or watch {plural} in a namespace")),
        );
        collection.insert("post".into(), create_op);
        paths.insert(
            base.clone(),
            with_params(Value::Object(collection), vec![ns_param.clone()]),
        );
        paths.insert(
            format!("{base}/{{name}}"),
            with_params(item_ops(false), vec![ns_param.clone(), name_param.clone()]),
        );
        if kind.has_status() {
            paths.insert(
                format!("{base}/{{name}}/status"),
                with_params(item_ops(true), vec![ns_param, name_param]),
            );
        }
        paths.insert(
            format!("/apis/skiff.dev/v1/{plural}"),
            json!({"get": list_op(format!("List or watch {plural} in every namespace"))}),
        );
    } else {
        let base = format!("/apis/skiff.dev/v1/{plural}");
        let mut collection = Map::new();
        collection.insert("get".into(), list_op(format!("List or watch {plural}")));
        collection.insert("post".into(), create_op);
        paths.insert(base.clone(), Value::Object(collection));
        paths.insert(
            format!("{base}/{{name}}"),
            with_params(item_ops(false), vec![name_param.clone()]),
        );
        paths.insert(
            format!("{base}/{{name}}/status"),
            with_params(item_ops(true), vec![name_param]),
        );
    }
}

fn add_token_paths(paths: &mut Map<String, Value>) {
    let list = json!({"type": "object", "properties": {"items": {"type": "array", "items": schema_ref("TokenInfo")}}});
    let collection = |scope: &str| {
        json!({
            "get": {"summary": format!("List the tokens of {scope}"), "responses": errors(Map::from_iter([("200".to_owned(), object_response("tokens, without secrets", list.clone()))]), &["401", "403"])},
            "post": {
                "summary": format!("Create a token for {scope}; the response carries the secret, once"),
                "requestBody": {"required": true, "content": {"application/json": {"schema": schema_ref("TokenRequest")}}},
                "responses": errors(Map::from_iter([("201".to_owned(), object_response("the token", schema_ref("TokenInfo")))]), &["400", "401", "403", "404", "422"]),
            },
        })
    };
    let item = |scope: &str| json!({"delete": {"summary": format!("Delete a token of {scope}"), "responses": errors(Map::from_iter([("204".to_owned(), json!({"description": "deleted"}))]), &["400", "401", "403", "404"])}});
    let id = parameter(
        "id",
        "path",
        "token id",
        json!({"type": "string", "format": "uuid"}),
    );
    let ns = parameter("namespace", "path", "namespace", json!({"type": "string"}));
    let mut ns_tokens = collection("a namespace (its admins and cluster admins)");
    ns_tokens["parameters"] = json!([ns.clone()]);
    paths.insert(
        "/apis/skiff.dev/v1/namespaces/{namespace}/tokens".into(),
        ns_tokens,
    );
    let mut ns_token = item("a namespace");
    ns_token["parameters"] = json!([ns, id.clone()]);
    paths.insert(
        "/apis/skiff.dev/v1/namespaces/{namespace}/tokens/{id}".into(),
        ns_token,
    );
    paths.insert(
        "/apis/skiff.dev/v1/tokens".into(),
        collection("the cluster (cluster-admin and node tokens; cluster admins only)"),
    );
    let mut cluster_token = item("the cluster");
    cluster_token["parameters"] = json!([id]);
    paths.insert("/apis/skiff.dev/v1/tokens/{id}".into(), cluster_token);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_routes_and_schema() {
        let doc = document();
        for kind in Kind::ALL {
            assert!(
                doc["components"]["schemas"][kind.name()].is_object(),
                "{kind}"
            );
            let collection = if kind.namespaced() {
                format!(
                    "/apis/skiff.dev/v1/namespaces/{{namespace}}/{}",
                    kind.plural()
                )
            } else {
                format!("/apis/skiff.dev/v1/{}", kind.plural())
            };
            for method in ["get", "post"] {
                assert!(
                    doc["paths"][&collection][method].is_object(),
                    "{collection} {method}"
                );
            }
            for method in ["get", "put", "patch", "delete"] {
                assert!(
                    doc["paths"][format!("{collection}/{{name}}")][method].is_object(),
                    "{kind} {method}"
                );
            }
        }
    }

    #[test]
    fn every_reference_resolves() {
        fn refs(value: &Value, out: &mut Vec<String>) {
            match value {
                Value::Object(fields) => {
                    if let Some(Value::String(r)) = fields.get("$ref") {
                        out.push(r.clone());
                    }
                    fields.values().for_each(|v| refs(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = document();
        let mut found = Vec::new();
        refs(doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{r}"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "dangling {r}"
            );
        }
    }
}
