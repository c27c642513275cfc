//! Discovery, as Kubernetes serves it: `/version`, `/api`, `/apis`, and
//! each group's resource list, both in the aggregated form kubectl asks
//! for first (`apidiscovery.k8s.io/v2`) and in the plain form clients
//! fall back to. Every Kubernetes client starts here: with these answers
//! kubectl, client libraries and dashboards find Skiff's kinds, their
//! verbs, scopes, short names and subresources. Every answer needs a
//! token, as every other answer of this API but health does.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use skiff_api::Kind;

use super::{AppState, accept_ranges, signed_in};

/// The group and version Skiff's own kinds are served under.
pub const GROUP: &str = "skiff.dev";
pub const VERSION: &str = "v1";

/// The Kubernetes API level clients are told this server speaks: what
/// kubectl and client libraries gate features on. Skiff follows the
/// conventions of this release (aggregated discovery v2, Tables,
/// fieldValidation).
const KUBERNETES_MINOR: &str = "32";

/// The content type of an aggregated discovery answer; clients tell it
/// from the plain form by this header, not by the body.
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
const AGGREGATED_BETA: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

const OBJECT_VERBS: [&str; 7] = [
    "create", "delete", "get", "list", "patch", "update", "watch",
];
const STATUS_VERBS: [&str; 3] = ["get", "patch", "update"];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/version", get(version))
        // The Python client asks with a trailing slash.
        .route("/version/", get(version))
        .route("/api", get(core))
        .route("/apis", get(groups))
        .route("/apis/skiff.dev", get(group))
        .route("/apis/skiff.dev/v1", get(resources))
}

/// A subresource of a kind: its name, verbs, and the kind it answers with
/// (`None`: the kind itself).
struct Subresource {
    name: &'static str,
    verbs: &'static [&'static str],
    answers: Option<(&'static str, &'static str, &'static str)>,
}

fn subresources(kind: Kind) -> Vec<Subresource> {
    let mut found = Vec::new();
    if kind.has_status() {
        found.push(Subresource {
            name: "status",
            verbs: &STATUS_VERBS,
            answers: None,
        });
    }
    match kind {
        Kind::Deployment => found.push(Subresource {
            name: "scale",
            verbs: &STATUS_VERBS,
            answers: Some(("autoscaling", "v1", "Scale")),
        }),
        Kind::Pod => found.push(Subresource {
            name: "log",
            verbs: &["get"],
            answers: None,
        }),
        _ => {}
    }
    found
}

/// The short names kubectl takes for `kind` (`po`); none where the short
/// form is the name itself (`secret`).
fn short_names(kind: Kind) -> Vec<&'static str> {
    let short = kind.short_name();
    if short == kind.plural() || short.eq_ignore_ascii_case(kind.name()) {
        Vec::new()
    } else {
        vec![short]
    }
}

/// `kubectl get all` lists the kinds in this category: what runs and
/// what serves.
fn categories(kind: Kind) -> Vec<&'static str> {
    match kind {
        Kind::Pod | Kind::Deployment | Kind::Service | Kind::Route => vec!["all"],
        _ => Vec::new(),
    }
}

fn singular(kind: Kind) -> String {
    kind.name().to_ascii_lowercase()
}

/// `/apis/skiff.dev/v1`, plain: an `APIResourceList`.
fn resource_list() -> Value {
    let mut resources = Vec::new();
    for kind in Kind::ALL {
        resources.push(json!({
            "name": kind.plural(),
            "singularName": singular(kind),
            "namespaced": kind.namespaced(),
            "kind": kind.name(),
            "verbs": OBJECT_VERBS,
            "shortNames": short_names(kind),
            "categories": categories(kind),
        }));
        for sub in subresources(kind) {
            let mut resource = json!({
                "name": format!("{}/{}", kind.plural(), sub.name),
                "singularName": "",
                "namespaced": kind.namespaced(),
                "kind": kind.name(),
                "verbs": sub.verbs,
            });
            if let Some((group, version, answer)) = sub.answers {
                resource["group"] = json!(group);
                resource["version"] = json!(version);
                resource["kind"] = json!(answer);
            }
            resources.push(resource);
        }
    }
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": resources,
    })
}

/// Skiff's group in the aggregated form: its resources with their
/// subresources inline.
fn aggregated_group(api_version: &str) -> Value {
    let resources: Vec<Value> = Kind::ALL
        .into_iter()
        .map(|kind| {
            let subresources: Vec<Value> = subresources(kind)
                .into_iter()
                .map(|sub| {
                    let (group, version, answer) =
                        sub.answers.unwrap_or((GROUP, VERSION, kind.name()));
                    json!({
                        "subresource": sub.name,
                        "responseKind": {"group": group, "version": version, "kind": answer},
                        "verbs": sub.verbs,
                    })
                })
                .collect();
            json!({
                "resource": kind.plural(),
                "responseKind": {"group": GROUP, "version": VERSION, "kind": kind.name()},
                "scope": if kind.namespaced() { "Namespaced" } else { "Cluster" },
                "singularResource": singular(kind),
                "verbs": OBJECT_VERBS,
                "shortNames": short_names(kind),
                "categories": categories(kind),
                "subresources": subresources,
            })
        })
        .collect();
    json!({
        "kind": "APIGroupDiscovery",
        "apiVersion": api_version,
        "metadata": {"name": GROUP},
        "versions": [{"version": VERSION, "resources": resources, "freshness": "Current"}],
    })
}

fn group_version() -> Value {
    json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION})
}

/// Which aggregated form `Accept` asks for first, if any.
fn aggregated_version(headers: &HeaderMap) -> Option<(&'static str, &'static str)> {
    for parameters in accept_ranges(headers) {
        let has = |p: &str| parameters.contains(&p);
        if !matches!(parameters.first(), Some(&"application/json")) {
            continue;
        }
        if !has("as=APIGroupDiscoveryList") {
            // A plain JSON range before any aggregated one: the plain form.
            return None;
        }
        if has("g=apidiscovery.k8s.io") && has("v=v2") {
            return Some(("apidiscovery.k8s.io/v2", AGGREGATED));
        }
        if has("g=apidiscovery.k8s.io") && has("v=v2beta1") {
            return Some(("apidiscovery.k8s.io/v2beta1", AGGREGATED_BETA));
        }
    }
    None
}

fn aggregated(api_version: &str, content_type: &'static str, items: Vec<Value>) -> Response {
    let mut response = axum::Json(json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": api_version,
        "metadata": {},
        "items": items,
    }))
    .into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The answer differs by Accept: a cache in between must keep both.
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    response
}

/// `/version`: the Kubernetes API level and this build.
async fn version(State(state): State<AppState>, request: Request) -> Response {
    if let Err(error) = signed_in(&state, request).await {
        return error.into_response();
    }
    axum::Json(json!({
        "major": "1",
        "minor": KUBERNETES_MINOR,
        "gitVersion": format!("v1.{KUBERNETES_MINOR}.0-skiff.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    }))
    .into_response()
}

/// The machine's architecture in Go's words, which clients print.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `/api`: the legacy core group. Skiff's kinds live in `skiff.dev`, so
/// it has no version; clients skip a core group without one.
async fn core(State(state): State<AppState>, request: Request) -> Response {
    let headers = match signed_in(&state, request).await {
        Ok(headers) => headers,
        Err(error) => return error.into_response(),
    };
    if let Some((api_version, content_type)) = aggregated_version(&headers) {
        return aggregated(api_version, content_type, Vec::new());
    }
    axum::Json(json!({"kind": "APIVersions", "versions": []})).into_response()
}

/// `/apis`: the groups.
async fn groups(State(state): State<AppState>, request: Request) -> Response {
    let headers = match signed_in(&state, request).await {
        Ok(headers) => headers,
        Err(error) => return error.into_response(),
    };
    if let Some((api_version, content_type)) = aggregated_version(&headers) {
        return aggregated(
            api_version,
            content_type,
            vec![aggregated_group(api_version)],
        );
    }
    axum::Json(json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [{
            "name": GROUP,
            "versions": [group_version()],
            "preferredVersion": group_version(),
        }],
    }))
    .into_response()
}

/// `/apis/skiff.dev`: the group alone.
async fn group(State(state): State<AppState>, request: Request) -> Response {
    if let Err(error) = signed_in(&state, request).await {
        return error.into_response();
    }
    axum::Json(json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": [group_version()],
        "preferredVersion": group_version(),
    }))
    .into_response()
}

/// `/apis/skiff.dev/v1`: the group's resources.
async fn resources(State(state): State<AppState>, request: Request) -> Response {
    if let Err(error) = signed_in(&state, request).await {
        return error.into_response();
    }
    axum::Json(resource_list()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn kubectl_is_answered_in_the_form_it_asks_for_first() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(
            aggregated_version(&accept(kubectl)).map(|(v, _)| v),
            Some("apidiscovery.k8s.io/v2")
        );
        let beta = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(
            aggregated_version(&accept(beta)).map(|(v, _)| v),
            Some("apidiscovery.k8s.io/v2beta1")
        );
        assert_eq!(aggregated_version(&accept("application/json")), None);
        assert_eq!(aggregated_version(&HeaderMap::new()), None);
    }

    #[test]
    fn every_kind_is_listed_once_with_its_subresources() {
        let list = resource_list();
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        for kind in Kind::ALL {
            assert_eq!(
                names.iter().filter(|n| **n == kind.plural()).count(),
                1,
                "{kind}"
            );
        }
        for sub in [
            "pods/status",
            "pods/log",
            "deployments/scale",
            "nodes/status",
        ] {
            assert!(names.contains(&sub), "{sub}");
        }
        assert!(!names.contains(&"secrets/status"));
        let scale = &list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
    }
}
