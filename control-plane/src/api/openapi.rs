//! `/openapi.json`: an OpenAPI 3.1 document of every route, generated from
//! the kinds and their Rust types, so it cannot drift from what is served.

use std::sync::OnceLock;

use axum::Json;
use axum::extract::Request;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};
use skiff_api::kinds::{account, cluster, config, deployment, event, pod, quota, service};
use skiff_api::meta::{DeleteOptions, ListMeta, Status};
use skiff_api::tokens::{TokenInfo, TokenRequest};
use skiff_api::validate::{DNS_LABEL_OR_EMPTY_PATTERN, DNS_SUBDOMAIN_PATTERN};
use skiff_api::{EventType, Kind};

use super::{AppState, authenticate, client_address};

pub async fn serve(State(state): State<AppState>, request: Request) -> Response {
    match authenticate(&state, request.headers(), client_address(&request)).await {
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
        let mut schema = schema.to_value();
        // A root schema carries its definitions under `components`; they
        // are collected into the document's components below.
        if let Some(fields) = schema.as_object_mut() {
            fields.remove("components");
        }
        schemas.insert(name.to_owned(), schema);
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
            Kind::Event => register::<event::Event>(&mut generator),
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
    state_enforced_constraints(&mut schemas);
    bound_integers(&mut schemas);
    refuse_nul(&mut schemas);

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

/// Every integer field within the range of its Rust type, which serde
/// enforces: schemars names the type (`"format": "uint32"`) and, for
/// unsigned ones, the minimum, never the maximum.
fn bound_integers(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            let range: Option<(i128, i128)> = match fields.get("format").and_then(Value::as_str) {
                Some("int8") => Some((i8::MIN.into(), i8::MAX.into())),
                Some("uint8") => Some((0, u8::MAX.into())),
                Some("int16") => Some((i16::MIN.into(), i16::MAX.into())),
                Some("uint16") => Some((0, u16::MAX.into())),
                Some("int32") => Some((i32::MIN.into(), i32::MAX.into())),
                Some("uint32") => Some((0, u32::MAX.into())),
                Some("int64") => Some((i64::MIN.into(), i64::MAX.into())),
                Some("uint64") => Some((0, u64::MAX.into())),
                _ => None,
            };
            if let Some((low, high)) = range {
                let stated = |key: &str| fields.get(key).and_then(Value::as_i64).map(i128::from);
                let low = stated("minimum").map_or(low, |m| m.max(low));
                let high = stated("maximum").map_or(high, |m| m.min(high));
                fields.insert("minimum".into(), number(low));
                fields.insert("maximum".into(), number(high));
            }
            fields.values_mut().for_each(bound_integers);
        }
        Value::Array(items) => items.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

fn number(n: i128) -> Value {
    match (i64::try_from(n), u64::try_from(n)) {
        (Ok(n), _) => json!(n),
        (_, Ok(n)) => json!(n),
        _ => unreachable!("integer bounds fit 64 bits"),
    }
}

/// No string of a stored object may hold a NUL character (Postgres cannot
/// store one; see `skiff_api::validate::nul_byte_at`): every free-form
/// string and map key says so.
fn refuse_nul(value: &mut Value) {
    const NO_NUL: &str = r"^[^\u0000]*$";
    match value {
        Value::Object(fields) => {
            let is_string = match fields.get("type") {
                Some(Value::String(t)) => t == "string",
                Some(Value::Array(types)) => types.iter().any(|t| t == "string"),
                _ => false,
            };
            let constrained = ["pattern", "enum", "const", "format"]
                .iter()
                .any(|k| fields.contains_key(*k));
            if is_string && !constrained {
                fields.insert("pattern".into(), json!(NO_NUL));
            }
            let is_map = fields
                .get("additionalProperties")
                .is_some_and(Value::is_object);
            if is_map && !fields.contains_key("propertyNames") {
                fields.insert(
                    "propertyNames".into(),
                    json!({"type": "string", "pattern": NO_NUL}),
                );
            }
            fields.values_mut().for_each(refuse_nul);
        }
        Value::Array(items) => items.iter_mut().for_each(refuse_nul),
        _ => {}
    }
}

/// What validation enforces beyond the Rust types, stated so that a request
/// the document calls valid is not refused: each kind's `apiVersion` and
/// `kind`, and resourceVersions as the decimal revisions they are.
fn state_enforced_constraints(schemas: &mut Value) {
    for kind in Kind::ALL {
        let schema = &mut schemas[kind.name()];
        schema["properties"]["apiVersion"] =
            json!({"type": "string", "const": skiff_api::API_VERSION});
        schema["properties"]["kind"] = json!({"type": "string", "const": kind.name()});
        let required = schema["required"].as_array().cloned().unwrap_or_default();
        let mut required: Vec<Value> = required
            .into_iter()
            .filter(|r| r != "apiVersion" && r != "kind")
            .collect();
        required.extend([json!("apiVersion"), json!("kind")]);
        schema["required"] = Value::Array(required);
    }
    for (schema, field) in [
        ("Preconditions", "resourceVersion"),
        ("ObjectMeta", "resourceVersion"),
    ] {
        schemas[schema]["properties"][field]["pattern"] = json!(RESOURCE_VERSION_PATTERN);
    }
    // Admission refuses an object without a name (`metadata.name: is
    // required`); serde's default only keeps the message precise.
    require(&mut schemas["ObjectMeta"], "name");
    for kind in Kind::ALL {
        require(&mut schemas[kind.name()], "metadata");
    }
    // Fields admission requires although serde defaults them (to name
    // the missing field precisely): an image, a Route's service.
    require(&mut schemas["PodSpec"], "image");
    require(&mut schemas["RouteSpec"], "service");
    // An Event's rules (`event::Event::validate`).
    let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
    let involved = &mut schemas["InvolvedObject"]["properties"];
    involved["kind"] = json!({"type": "string", "enum": kinds});
    involved["name"] =
        json!({"type": "string", "pattern": DNS_SUBDOMAIN_PATTERN, "maxLength": 253});
    involved["namespace"] =
        json!({"type": "string", "pattern": DNS_LABEL_OR_EMPTY_PATTERN, "maxLength": 63});
    involved["uid"] = json!({"type": "string", "pattern": "^[A-Za-z0-9-]{0,64}$"});
    let properties = &mut schemas["Event"]["properties"];
    properties["reason"] = json!({"type": "string", "pattern": "^[A-Za-z0-9]{1,128}$"});
    properties["message"] = json!({"type": "string", "maxLength": event::MAX_MESSAGE});
    properties["count"] =
        json!({"type": "integer", "format": "uint64", "minimum": 1, "default": 1});
    for field in ["firstTimestamp", "lastTimestamp"] {
        properties[field] = json!({"type": "string", "pattern": format!("^$|{RFC3339_PATTERN}")});
    }
    for field in ["component", "host"] {
        schemas["EventSource"]["properties"][field] =
            json!({"type": "string", "pattern": DNS_SUBDOMAIN_OR_EMPTY_PATTERN, "maxLength": 253});
    }
    for kind in Kind::ALL {
        let schema = &mut schemas[kind.name()];
        // Those defaults are no valid values: describing them as defaults
        // would invite requests that are refused.
        for field in ["metadata", "spec"] {
            if let Some(property) = property_mut(schema, field) {
                property.remove("default");
            }
        }
        if matches!(kind, Kind::Pod | Kind::Deployment | Kind::Route) {
            require(schema, "spec");
        }
    }
    if let Some(name) = schemas["ObjectMeta"]["properties"]["name"].as_object_mut() {
        name.remove("default");
    }
    // A Deployment needs a selector, and its pod template's labels must
    // match it. The document states the selector as non-empty matchLabels
    // (admission also takes matchExpressions: this admits less, never
    // more); that the template's labels match is a rule across fields
    // OpenAPI cannot state.
    require(&mut schemas["DeploymentSpec"], "selector");
    // A template's pod is placed by the scheduler: its nodeName must be
    // empty (`DeploymentSpec::validate`), where a pod's may name a node.
    if let Some(spec) = property_mut(&mut schemas["PodTemplate"], "spec") {
        let pod_spec = Value::Object(std::mem::take(spec));
        *spec = json!({"allOf": [pod_spec, {"properties": {"nodeName": {"maxLength": 0}}}]})
            .as_object()
            .cloned()
            .unwrap_or_default();
    }
    // The template's pod spec needs its image as a pod's does.
    for (schema, field) in [("DeploymentSpec", "template"), ("PodTemplate", "spec")] {
        require(&mut schemas[schema], field);
        if let Some(property) = property_mut(&mut schemas[schema], field) {
            property.remove("default");
        }
    }
    schemas["DeploymentSpec"]["properties"]["selector"] = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["matchLabels"],
        "properties": {"matchLabels": label_map(1)},
    });
    // Keys of Secret and ConfigMap data become file names
    // (`skiff_api::kinds::config::data_key`): name-like, never `.` or `..`
    // (the pattern starts with a letter or digit).
    for (kind, fields) in [
        ("Secret", &["data", "stringData"][..]),
        ("ConfigMap", &["data", "binaryData"][..]),
    ] {
        for field in fields {
            if let Some(map) = property_mut(&mut schemas[kind], field) {
                map.insert(
                    "propertyNames".into(),
                    json!({"type": "string", "maxLength": 253, "pattern": "^[A-Za-z0-9][-_.A-Za-z0-9]*$"}),
                );
            }
        }
    }
    // A toleration's key is required when its operator is Equal (the
    // default), its value empty when it is Exists (`PodSpec::validate`).
    schemas["Toleration"]["if"] =
        json!({"required": ["operator"], "properties": {"operator": {"const": "Exists"}}});
    schemas["Toleration"]["then"] = json!({"properties": {"value": {"maxLength": 0}}});
    schemas["Toleration"]["else"] =
        json!({"required": ["key"], "properties": {"key": {"minLength": 1}}});
    // A selector requirement (`Requirement::validate`): a label key; values
    // for In and NotIn, none for Exists and DoesNotExist. Gt and Lt, which
    // only node affinity takes, are left out: this admits less, never more.
    let key = json!({"type": "string", "maxLength": 317, "pattern": skiff_api::validate::LABEL_KEY_PATTERN});
    schemas["Requirement"]["properties"]["key"] = key.clone();
    schemas["Requirement"]["properties"]["operator"] =
        json!({"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]});
    schemas["Requirement"]["if"] =
        json!({"properties": {"operator": {"enum": ["Exists", "DoesNotExist"]}}});
    schemas["Requirement"]["then"] = json!({"properties": {"values": {"maxItems": 0}}});
    schemas["Requirement"]["else"] =
        json!({"required": ["values"], "properties": {"values": {"minItems": 1}}});
    schemas["LabelSelector"]["properties"]["matchLabels"] = label_map(0);
    schemas["PodAffinityTerm"]["properties"]["topologyKey"] = key;
    // An environment variable has a value or a source, not both, and a
    // source names exactly one of a Secret's and a ConfigMap's keys.
    schemas["EnvVar"]["not"] = json!({"required": ["value", "valueFrom"]});
    schemas["EnvVarSource"]["oneOf"] =
        json!(["secretKeyRef", "configMapKeyRef"].map(
            |source| json!({"required": [source], "properties": {source: {"type": "object"}}})
        ));
    // A volume has exactly one source (`validate_volumes`).
    let sources = ["hostPath", "emptyDir", "configMap", "secret"]
        .map(|source| json!({"required": [source], "properties": {source: {"type": "object"}}}));
    schemas["Volume"]["oneOf"] = json!(sources);
    // Secret `data` and ConfigMap `binaryData` values are base64.
    for (kind, field) in [("Secret", "data"), ("ConfigMap", "binaryData")] {
        if let Some(map) = property_mut(&mut schemas[kind], field) {
            map.insert(
                "additionalProperties".into(),
                json!({"type": "string", "pattern": skiff_api::validate::BASE64_PATTERN}),
            );
        }
    }
    // A create refuses `metadata.resourceVersion` (there is no version to
    // expect yet), so creates get their own body schema without it.
    let mut create_meta = schemas["ObjectMeta"].clone();
    if let Some(properties) = create_meta["properties"].as_object_mut() {
        properties.remove("resourceVersion");
    }
    schemas[CREATE_META] = create_meta;
    for kind in Kind::ALL {
        let mut create = schemas[kind.name()].clone();
        create["properties"]["metadata"] = schema_ref(CREATE_META);
        schemas[create_schema(kind)] = create;
        // A `/status` write takes its status from the body: a missing or
        // null one is refused.
        if kind.has_status() {
            let mut update = schemas[kind.name()].clone();
            let status = format!("{}Status", kind.name());
            update["properties"]["status"] = schema_ref(&status);
            require(&mut update, "status");
            schemas[status_update_schema(kind)] = update;
        }
    }
}

/// Where a create body's metadata is described: [`ObjectMeta`] without
/// `resourceVersion`.
const CREATE_META: &str = "ObjectMetaForCreate";

fn create_schema(kind: Kind) -> String {
    format!("{}ForCreate", kind.name())
}

fn status_update_schema(kind: Kind) -> String {
    format!("{}StatusUpdate", kind.name())
}

/// A property's schema, if there is one (indexing a `Value` mutably would
/// add a `null` one).
fn property_mut<'a>(schema: &'a mut Value, field: &str) -> Option<&'a mut Map<String, Value>> {
    schema
        .get_mut("properties")?
        .get_mut(field)?
        .as_object_mut()
}

fn require(schema: &mut Value, field: &str) {
    let required = schema["required"].as_array().cloned().unwrap_or_default();
    if !required.iter().any(|r| r == field) {
        let mut required = required;
        required.push(json!(field));
        schema["required"] = Value::Array(required);
    }
}

/// Labels as [`skiff_api::validate::validate_labels`] checks them.
fn label_map(min_properties: usize) -> Value {
    let mut schema =
        skiff_api::validate::label_map_schema(&mut SchemaGenerator::default()).to_value();
    schema["minProperties"] = json!(min_properties);
    schema
}

/// A label selector (`?labelSelector=`) as [`skiff_api::selector::Selector`]
/// parses it, conservatively: up to three comma-separated `key`, `!key`,
/// `key=value`, `key==value` or `key!=value` terms, keys without a prefix
/// and keys and values of at most 16 characters (it also takes `in` and
/// `notin` sets and longer keys and values). Bounded this tightly because
/// the run's time goes into generating from patterns: the full grammar
/// made the coverage phase several times slower.
fn label_selector_pattern() -> String {
    const NAME: &str = "[A-Za-z0-9]([-A-Za-z0-9_.]{0,14}[A-Za-z0-9])?";
    let term = format!("(!?{NAME}|{NAME}(=|==|!=)({NAME})?)");
    format!("^({term}(,{term}){{0,2}})?$")
}

/// A field selector as [`skiff_api::selector::FieldSelector`] parses it,
/// conservatively: comma-separated `field=value` or `field!=value` on the
/// kind's selectable fields, values of name-like characters.
fn field_selector_pattern(kind: Kind) -> String {
    let fields: Vec<String> = kind
        .selectable_fields()
        .iter()
        .map(|f| f.replace('.', "\\."))
        .collect();
    let term = format!("({})(=|==|!=)[-A-Za-z0-9_.]*", fields.join("|"));
    format!("^({term}(,{term})*)?$")
}

/// A revision: what `resourceVersion` is everywhere.
const RESOURCE_VERSION_PATTERN: &str = "^[0-9]{1,18}$";
/// What `event::Event::validate` takes as a time.
const RFC3339_PATTERN: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$";
/// A DNS subdomain, or nothing.
const DNS_SUBDOMAIN_OR_EMPTY_PATTERN: &str =
    r"^$|^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$";

/// What names of objects and namespaces must be.
fn dns_label() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 63, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"})
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
            json!({"type": "string", "pattern": label_selector_pattern()}),
        ),
        parameter(
            "fieldSelector",
            "query",
            "e.g. spec.nodeName=node-1",
            json!({"type": "string", "pattern": field_selector_pattern(kind)}),
        ),
        parameter(
            "limit",
            "query",
            "page size (a list names a `continue` token when there is more)",
            json!({"type": "integer", "minimum": 1, "maximum": super::MAX_LIST_LIMIT, "default": super::DEFAULT_LIST_LIMIT}),
        ),
        parameter(
            "continue",
            "query",
            "token from the previous page",
            json!({"type": "string", "pattern": super::objects::CONTINUE_TOKEN_PATTERN}),
        ),
        parameter(
            "watch",
            "query",
            "stream changes as newline-delimited WatchEvents",
            json!({"type": "boolean"}),
        ),
        parameter(
            "allowWatchBookmarks",
            "query",
            "watch: send BOOKMARK events, which carry only the revision the watch has reached",
            json!({"type": "boolean"}),
        ),
        parameter(
            "includeObject",
            "query",
            "with a Table: what each row carries besides its cells",
            json!({"type": "string", "enum": ["None", "Metadata", "Object"]}),
        ),
        parameter(
            "resourceVersion",
            "query",
            "watch: resume after this revision (410 if compacted)",
            json!({"type": "string", "pattern": RESOURCE_VERSION_PATTERN}),
        ),
        parameter(
            "timeoutSeconds",
            "query",
            "watch: end the stream after this long (at most the server's longest watch)",
            json!({"type": "integer", "minimum": 1, "maximum": super::MAX_WATCH_TIMEOUT_SECONDS}),
        ),
    ];
    let list_op = |summary: String| {
        json!({
            "summary": summary,
            "parameters": list_params,
            "responses": errors(
                Map::from_iter([
                    ("200".to_owned(), json!({
                        "description": "a list; with watch=true a stream of WatchEvents ({type, object}), one JSON object a line; with Accept naming `as=Table;g=meta.k8s.io` a Table of the kind's columns",
                        "content": {
                            "application/json": {"schema": schema_ref(&format!("{name}List"))},
                        },
                    })),
                ]),
                &["400", "401", "403", "410"],
            ),
        })
    };
    let field_validation = parameter(
        "fieldValidation",
        "query",
        "what a field this kind does not have gets: Strict (default) refuses the write, Warn drops it and says so in a Warning header, Ignore drops it",
        json!({"type": "string", "enum": ["Strict", "Warn", "Ignore"]}),
    );
    let create_op = json!({
        "summary": format!("Create a {name}"),
        "parameters": [field_validation],
        "requestBody": {"required": true, "content": {"application/json": {"schema": schema_ref(&create_schema(kind))}}},
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
        let body = if status {
            schema_ref(&status_update_schema(kind))
        } else {
            object.clone()
        };
        ops.insert("put".into(), json!({
            "summary": format!("Replace a {what}; a stale metadata.resourceVersion gets 409"),
            "parameters": [field_validation],
            "requestBody": {"required": true, "content": {"application/json": {"schema": body}}},
            "responses": errors(Map::from_iter([("200".to_owned(), object_response("the stored object", object.clone()))]), &["400", "401", "403", "404", "409", "413", "422"]),
        }));
        ops.insert("patch".into(), json!({
            "summary": format!("Patch a {what} with a JSON merge patch (RFC 7386)"),
            "parameters": [field_validation],
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
    let name_param = parameter("name", "path", "object name", dns_label());
    let ns_param = parameter("namespace", "path", "namespace", dns_label());
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
    let collection = |scope: &str, roles: &[&str]| {
        // The roles this route grants; a node token names its node, which
        // no other role may.
        let variants: Vec<Value> = roles
            .iter()
            .map(|role| {
                if *role == "node" {
                    json!({"properties": {"role": {"const": role}, "nodeName": dns_label()}, "required": ["role", "nodeName"]})
                } else if *role == "cluster-admin" {
                    json!({"properties": {"role": {"const": role}, "nodeName": {"type": "null"}}})
                } else {
                    json!({"properties": {"role": {"const": role}}})
                }
            })
            .collect();
        let request = json!({"allOf": [schema_ref("TokenRequest"), {"oneOf": variants}]});
        json!({
            "get": {"summary": format!("List the tokens of {scope}"), "responses": errors(Map::from_iter([("200".to_owned(), object_response("tokens, without secrets", list.clone()))]), &["401", "403"])},
            "post": {
                "summary": format!("Create a token for {scope}; the response carries the secret, once"),
                "requestBody": {"required": true, "content": {"application/json": {"schema": request}}},
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
    let ns = parameter("namespace", "path", "namespace", dns_label());
    let mut ns_tokens = collection(
        "a namespace (its admins and cluster admins)",
        &["admin", "edit", "view"],
    );
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
        collection(
            "the cluster (cluster-admin and node tokens; cluster admins only)",
            &["cluster-admin", "node"],
        ),
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

    /// Every property and every component is a schema: a stray `null`
    /// (from indexing a missing one mutably) breaks OpenAPI tools.
    #[test]
    fn the_rules_stated_land_on_schemas_the_generator_made() {
        // Indexing a missing schema would make a new one silently: each
        // schema a rule is stated on must still have the field the kind
        // gave it.
        let schemas = &document()["components"]["schemas"];
        for (name, field) in [
            ("Requirement", "values"),
            ("LabelSelector", "matchExpressions"),
            ("PodAffinityTerm", "labelSelector"),
            ("EnvVar", "name"),
            ("EnvVarSource", "secretKeyRef"),
            ("Toleration", "effect"),
            ("Volume", "mountPath"),
            ("PodTemplate", "metadata"),
            ("DeploymentSpec", "replicas"),
            ("Preconditions", "uid"),
        ] {
            assert!(
                schemas[name]["properties"].get(field).is_some(),
                "{name} has no {field}: {:#}",
                schemas[name]
            );
        }
    }

    #[test]
    fn every_property_is_a_schema() {
        let doc = document();
        for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
            assert!(schema.is_object(), "{name}");
            for (field, property) in schema["properties"].as_object().into_iter().flatten() {
                assert!(property.is_object(), "{name}.{field}");
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
