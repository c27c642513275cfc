//! Discovery, as Kubernetes serves it: `/version`, `/api`, `/apis`, and
//! each group's resource list, both in the aggregated form kubectl asks
//! for first (`apidiscovery.k8s.io/v2`) and in the plain form clients
//! fall back to. Every Kubernetes client starts here: with these answers
//! kubectl, client libraries and dashboards find Skiff's kinds, their
//! verbs, scopes, short names and subresources. Every answer needs a
//! token, as every other answer of this API but health does.

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use skiff_api::Kind;

use super::{ApiError, AppState, accept_ranges, signed_in};

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
        .route("/api/v1", get(core_resources))
        .route("/apis", get(groups))
        .route("/apis/{group}", get(group))
        .route("/apis/{group}/{version}", get(group_resources))
}

/// A group-version this server serves: Kubernetes' core (`""`, `v1`),
/// `apps/v1`, and Skiff's own.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Served {
    Core,
    Apps,
    /// `networking.k8s.io/v1`: Routes, as Ingresses.
    Networking,
    /// `metrics.k8s.io/v1beta1`: what pods and nodes use (`kubectl top`).
    Metrics,
    Skiff,
}

impl Served {
    /// The groups under `/apis`, in the order clients prefer them: a
    /// Kubernetes kind's own group before Skiff's for the same name.
    const GROUPS: [Served; 4] = [
        Served::Apps,
        Served::Networking,
        Served::Metrics,
        Served::Skiff,
    ];

    fn group(self) -> &'static str {
        match self {
            Served::Core => "",
            Served::Apps => "apps",
            Served::Networking => "networking.k8s.io",
            Served::Metrics => "metrics.k8s.io",
            Served::Skiff => GROUP,
        }
    }

    fn group_version(self) -> &'static str {
        match self {
            Served::Core => "v1",
            Served::Apps => "apps/v1",
            Served::Networking => "networking.k8s.io/v1",
            Served::Metrics => "metrics.k8s.io/v1beta1",
            Served::Skiff => "skiff.dev/v1",
        }
    }

    fn named(group: &str) -> Option<Served> {
        Served::GROUPS.into_iter().find(|g| g.group() == group)
    }

    /// The kinds it serves.
    fn kinds(self) -> Vec<Kind> {
        Kind::ALL
            .into_iter()
            .filter(|kind| match self {
                Served::Skiff => true,
                Served::Metrics => false,
                _ => {
                    skiff_api::kube::kube_kind(*kind).map(|(gv, _)| gv)
                        == Some(self.group_version())
                }
            })
            .collect()
    }

    /// `kubectl get all` lists this category: what runs and what serves,
    /// once, in Kubernetes' groups where a kind is in both.
    fn categories(self, kind: Kind) -> Vec<&'static str> {
        match (self, kind) {
            (Served::Core | Served::Apps, Kind::Pod | Kind::Deployment | Kind::Service) => {
                vec!["all"]
            }
            _ => Vec::new(),
        }
    }

    /// Its resources: each kind's, then those with no kind of their own.
    fn resources(self) -> Vec<Resource> {
        let mut resources: Vec<Resource> = self
            .kinds()
            .into_iter()
            .map(|kind| {
                let (plural, name) = match (self, skiff_api::kube::kube_kind(kind)) {
                    (Served::Skiff, _) | (_, None) => (kind.plural(), kind.name()),
                    (_, Some((_, name))) => (skiff_api::kube::kube_plural(kind), name),
                };
                (kind, plural, name)
            })
            .map(|(kind, plural, name)| Resource {
                plural,
                singular: name.to_ascii_lowercase(),
                namespaced: kind.namespaced(),
                kind: name,
                verbs: &OBJECT_VERBS,
                // A kind Kubernetes has is reached by its short name in
                // Kubernetes' group; in Skiff's, as `pods.skiff.dev`.
                short_names: match self {
                    Served::Skiff
                        if skiff_api::kube::kube_kind(kind).is_some() && kind != Kind::Route =>
                    {
                        Vec::new()
                    }
                    Served::Networking => vec!["ing"],
                    _ => short_names(kind),
                },
                categories: self.categories(kind),
                subresources: subresources(kind),
            })
            .collect();
        if self == Served::Metrics {
            for (plural, kind, namespaced) in [
                ("nodes", "NodeMetrics", false),
                ("pods", "PodMetrics", true),
            ] {
                resources.push(Resource {
                    plural,
                    singular: String::new(),
                    namespaced,
                    kind,
                    verbs: &["get", "list"],
                    short_names: Vec::new(),
                    categories: Vec::new(),
                    subresources: Vec::new(),
                });
            }
        }
        if self == Served::Apps {
            resources.push(Resource {
                plural: "replicasets",
                singular: "replicaset".into(),
                namespaced: true,
                kind: "ReplicaSet",
                verbs: &["get", "list"],
                short_names: vec!["rs"],
                categories: vec!["all"],
                subresources: Vec::new(),
            });
        }
        resources
    }

    /// Its resources, plain: an `APIResourceList`.
    fn resource_list(self) -> Value {
        let mut list = Vec::new();
        for resource in self.resources() {
            list.push(json!({
                "name": resource.plural,
                "singularName": resource.singular,
                "namespaced": resource.namespaced,
                "kind": resource.kind,
                "verbs": resource.verbs,
                "shortNames": resource.short_names,
                "categories": resource.categories,
            }));
            for sub in &resource.subresources {
                let mut entry = json!({
                    "name": format!("{}/{}", resource.plural, sub.name),
                    "singularName": "",
                    "namespaced": resource.namespaced,
                    "kind": resource.kind,
                    "verbs": sub.verbs,
                });
                if let Some((group, version, answer)) = sub.answers {
                    entry["group"] = json!(group);
                    entry["version"] = json!(version);
                    entry["kind"] = json!(answer);
                }
                list.push(entry);
            }
        }
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": self.group_version(),
            "resources": list,
        })
    }

    /// The group in the aggregated form: its resources with their
    /// subresources inline.
    fn aggregated(self, api_version: &str) -> Value {
        let (group, version) = match self.group_version().split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", self.group_version()),
        };
        let resources: Vec<Value> = self
            .resources()
            .into_iter()
            .map(|resource| {
                let subresources: Vec<Value> = resource
                    .subresources
                    .iter()
                    .map(|sub| {
                        let (g, v, answer) = sub.answers.unwrap_or((group, version, resource.kind));
                        json!({
                            "subresource": sub.name,
                            "responseKind": {"group": g, "version": v, "kind": answer},
                            "verbs": sub.verbs,
                        })
                    })
                    .collect();
                json!({
                    "resource": resource.plural,
                    "responseKind": {"group": group, "version": version, "kind": resource.kind},
                    "scope": if resource.namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": resource.singular,
                    "verbs": resource.verbs,
                    "shortNames": resource.short_names,
                    "categories": resource.categories,
                    "subresources": subresources,
                })
            })
            .collect();
        json!({
            "kind": "APIGroupDiscovery",
            "apiVersion": api_version,
            "metadata": {"name": group},
            "versions": [{"version": version, "resources": resources, "freshness": "Current"}],
        })
    }

    fn version_entry(self) -> Value {
        let version = self.group_version().rsplit('/').next().unwrap_or_default();
        json!({"groupVersion": self.group_version(), "version": version})
    }

    fn api_group(self) -> Value {
        json!({
            "name": self.group(),
            "versions": [self.version_entry()],
            "preferredVersion": self.version_entry(),
        })
    }
}

struct Resource {
    plural: &'static str,
    singular: String,
    namespaced: bool,
    kind: &'static str,
    verbs: &'static [&'static str],
    short_names: Vec<&'static str>,
    categories: Vec<&'static str>,
    subresources: Vec<Subresource>,
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

/// `/api`: the legacy core group's one version.
async fn core(State(state): State<AppState>, request: Request) -> Response {
    let headers = match signed_in(&state, request).await {
        Ok(headers) => headers,
        Err(error) => return error.into_response(),
    };
    if let Some((api_version, content_type)) = aggregated_version(&headers) {
        return aggregated(
            api_version,
            content_type,
            vec![Served::Core.aggregated(api_version)],
        );
    }
    axum::Json(json!({"kind": "APIVersions", "versions": ["v1"]})).into_response()
}

/// `/api/v1`: the core group's resources.
async fn core_resources(State(state): State<AppState>, request: Request) -> Response {
    if let Err(error) = signed_in(&state, request).await {
        return error.into_response();
    }
    axum::Json(Served::Core.resource_list()).into_response()
}

/// `/apis`: the groups.
async fn groups(State(state): State<AppState>, request: Request) -> Response {
    let headers = match signed_in(&state, request).await {
        Ok(headers) => headers,
        Err(error) => return error.into_response(),
    };
    if let Some((api_version, content_type)) = aggregated_version(&headers) {
        let items = Served::GROUPS
            .iter()
            .map(|g| g.aggregated(api_version))
            .collect();
        return aggregated(api_version, content_type, items);
    }
    let groups: Vec<Value> = Served::GROUPS.iter().map(|g| g.api_group()).collect();
    axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        .into_response()
}

fn unknown_group(path: &str) -> Response {
    ApiError::NotFound(format!(
        "the server could not find the requested resource: {path}"
    ))
    .into_response()
}

/// `/apis/{group}`: one group.
async fn group(
    State(state): State<AppState>,
    Path(group): Path<String>,
    request: Request,
) -> Response {
    if let Err(error) = signed_in(&state, request).await {
        return error.into_response();
    }
    match Served::named(&group) {
        Some(served) => {
            let mut answer = served.api_group();
            answer["kind"] = json!("APIGroup");
            answer["apiVersion"] = json!("v1");
            axum::Json(answer).into_response()
        }
        None => unknown_group(&group),
    }
}

/// `/apis/{group}/{version}`: a group's resources.
async fn group_resources(
    State(state): State<AppState>,
    Path((group, version)): Path<(String, String)>,
    request: Request,
) -> Response {
    if let Err(error) = signed_in(&state, request).await {
        return error.into_response();
    }
    match Served::named(&group).filter(|g| g.group_version() == format!("{group}/{version}")) {
        Some(served) => axum::Json(served.resource_list()).into_response(),
        None => unknown_group(&format!("{group}/{version}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::accept_header as accept;

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
        let list = Served::Skiff.resource_list();
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
