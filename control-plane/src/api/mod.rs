//! The REST API, in Kubernetes' conventions:
//! `/apis/skiff.dev/v1/[namespaces/{ns}/]{plural}[/{name}[/status]]`.

mod apply;
pub(crate) mod discovery;
mod error;
mod kube;
mod kube_openapi;
mod logs;
mod manifests;
pub mod node_proxy;
mod objects;
pub mod openapi;
mod proxy_key;
mod scale;
mod table;
mod tokens;
pub(crate) mod usage;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use skiff_api::Kind;

pub use error::ApiError;

use crate::auth::{Authenticator, Principal};
use crate::store::Store;
use crate::watch::WatchHub;

/// Largest object (and request body) the API accepts.
pub const MAX_OBJECT_BYTES: usize = 1 << 20;

/// Page size of a list that names no `limit`: a list never reads a whole
/// table into memory at once; clients follow `continue`.
pub const DEFAULT_LIST_LIMIT: u32 = 500;
/// Largest `limit` a list may ask for.
pub const MAX_LIST_LIMIT: u32 = 5000;
/// Largest `timeoutSeconds` a watch may ask for (it is cut to the server's
/// longest watch anyway): the bound makes the parameter's range plain.
pub const MAX_WATCH_TIMEOUT_SECONDS: u64 = i32::MAX as u64;
/// Open watches one token may hold by default.
pub const DEFAULT_MAX_WATCHES_PER_CLIENT: usize = 100;

/// Settings of the API server.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// How often a watch sends a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Longest a watch runs before the client must resume it.
    pub max_watch: Duration,
    /// Open watches one token may hold; beyond it, 429.
    pub max_watches_per_client: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            bookmark_interval: Duration::from_secs(10),
            max_watch: Duration::from_secs(30 * 60),
            max_watches_per_client: DEFAULT_MAX_WATCHES_PER_CLIENT,
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub hub: WatchHub,
    pub auth: Arc<Authenticator>,
    pub config: ApiConfig,
    /// The client of nodes' APIs (logs, usage).
    pub nodes: Arc<node_proxy::NodeProxy>,
    /// What activations of Services at zero keep between calls.
    pub activations: Arc<crate::controllers::autoscaler::Activations>,
}

pub fn router(state: AppState) -> Router {
    let readiness = Arc::new(Readiness::new(state.store.clone()));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move { readiness.respond().await }
            }),
        )
        .route("/openapi.json", get(openapi::serve))
        .route("/metrics", get(metrics))
        .merge(crate::ui::router())
        .merge(discovery::router())
        .merge(kube_openapi::router())
        .merge(kube::router())
        .route(
            "/apis/skiff.dev/v1/{*path}",
            axum::routing::any(objects_or_tokens),
        )
        .fallback(|| async {
            ApiError::NotFound("the server could not find the requested resource".into())
        })
        // No browser takes an answer of this server for anything but what
        // its Content-Type says: a tenant's text in a JSON or plain-text
        // answer is never sniffed into a page on the dashboard's origin.
        .layer(axum::middleware::map_response(
            |mut response: Response| async {
                response.headers_mut().insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    axum::http::HeaderValue::from_static("nosniff"),
                );
                response
            },
        ))
        .with_state(state)
}

/// How long one answer of the database to `/readyz` stands for all.
const READINESS_REFRESH: Duration = Duration::from_secs(1);
/// Longest a readiness check waits for the database: a silent one is not
/// ready, and the callers waiting on the check are answered.
const READINESS_DEADLINE: Duration = Duration::from_secs(2);

/// Ready when the database answers. `/readyz` needs no token, so anyone
/// may call it as often as they like: every caller shares one check,
/// made at most once per [`READINESS_REFRESH`], and callers arriving while
/// it runs wait for its answer rather than start their own.
struct Readiness {
    store: Store,
    /// The last answer and when it was asked for; the lock is held across
    /// the check, which makes it single-flight.
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, bool)>>,
}

impl Readiness {
    fn new(store: Store) -> Self {
        Self {
            store,
            last: tokio::sync::Mutex::new(None),
        }
    }

    async fn ready(&self) -> bool {
        let mut last = self.last.lock().await;
        if let Some((asked, ready)) = *last
            && asked.elapsed() < READINESS_REFRESH
        {
            return ready;
        }
        let asked = tokio::time::Instant::now();
        let ready = tokio::time::timeout(READINESS_DEADLINE, self.store.ping())
            .await
            .unwrap_or(false);
        *last = Some((asked, ready));
        ready
    }

    async fn respond(&self) -> Response {
        if self.ready().await {
            "ok".into_response()
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

/// The media ranges of a request's `Accept`, in order, each split into
/// its media type and its parameters (`as=Table`), trimmed.
pub(crate) fn accept_ranges(headers: &HeaderMap) -> Vec<Vec<&str>> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|range| range.split(';').map(str::trim).collect())
        .collect()
}

/// Headers holding only `Accept: value`, for tests of negotiation.
#[cfg(test)]
pub(crate) fn accept_header(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ACCEPT,
        axum::http::HeaderValue::from_str(value).unwrap(),
    );
    headers
}

/// The request's headers once its token is known good (for answers that
/// read nothing else of it). The request is taken apart first: its body
/// is not shared across an await.
pub(crate) async fn signed_in(state: &AppState, request: Request) -> Result<HeaderMap, ApiError> {
    let client = client_address(&request);
    let (parts, _) = request.into_parts();
    authenticate(state, &parts.headers, client).await?;
    Ok(parts.headers)
}

/// The bearer token of a request, if it has one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The address of the peer of the request's connection, if the listener
/// recorded it (`skiff_serve` does on every request). Not a forwarded
/// header: those are the caller's to forge. Behind an ingress every client
/// shares its address, which is the safe way to err: the limits on it are
/// per address, never loosened by what a request claims.
pub fn client_address(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<skiff_serve::Peer>()
        .map(|skiff_serve::Peer(peer)| peer.ip())
}

/// Establishes the caller from `Authorization: Bearer`, or fails with 401
/// (429 when `client` looked up too many unknown tokens lately).
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> Result<Principal, ApiError> {
    let token = bearer(headers).ok_or(ApiError::Unauthorized)?;
    state
        .auth
        .principal(token, client)
        .await?
        .ok_or(ApiError::Unauthorized)
}

/// What `principal` is, in the terms the API's roles use: a cluster
/// admin, roles per namespace (a token's or a ServiceAccount's), a node,
/// or a metrics reader. It tells callers nothing their token could not
/// find out by trying.
fn whoami(principal: &Principal) -> serde_json::Value {
    use serde_json::json;
    let roles = |roles: &std::collections::BTreeMap<String, crate::auth::Role>| {
        roles
            .iter()
            .map(|(namespace, role)| (namespace.clone(), json!(role.as_str())))
            .collect::<serde_json::Map<_, _>>()
    };
    let (kind, namespaces, node) = match principal {
        Principal::ClusterAdmin => ("cluster-admin", serde_json::Map::new(), None),
        Principal::Namespaced(r) => ("token", roles(r), None),
        Principal::Account(r) => ("serviceaccount", roles(r), None),
        Principal::Node(name) => ("node", serde_json::Map::new(), Some(name.as_str())),
        Principal::MetricsReader => ("metrics", serde_json::Map::new(), None),
    };
    let mut answer = json!({
        "apiVersion": skiff_api::API_VERSION,
        "kind": "Whoami",
        "principal": kind,
        "clusterAdmin": matches!(principal, Principal::ClusterAdmin),
        "namespaces": namespaces,
    });
    if let Some(node) = node {
        answer["node"] = json!(node);
    }
    answer
}

/// What a path under `/apis/skiff.dev/v1/` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Collection {
        kind: Kind,
        namespace: Option<String>,
    },
    Item {
        kind: Kind,
        namespace: Option<String>,
        name: String,
        status: bool,
    },
    /// A node's lease.
    Lease { node: String },
    /// `namespaces/{ns}/pods/{name}/log`: the pod's output.
    PodLog { namespace: String, name: String },
    /// `nodemetrics`: nodes' usage, asked of the nodes.
    NodeMetrics,
    /// `[namespaces/{ns}/]podmetrics`: pods' usage, asked of their nodes.
    PodMetrics { namespace: Option<String> },
    /// The cluster's proxy key, as node `node` reads it.
    ProxyKey { node: String },
    /// `serviceaccounts/{name}/token`: a new token of the account.
    AccountToken { namespace: String, name: String },
    /// `deployments/{name}/scale`: its replicas as a `Scale`.
    Scale { namespace: String, name: String },
    /// `services/{name}/activate`: a Service at zero has a request.
    Activate { namespace: String, name: String },
    /// `manifests`: objects applied as `wasmctl apply` applies them.
    Manifests,
    /// `whoami`: what the caller's token is and may do (the dashboard
    /// shows only the actions it allows).
    Whoami,
    /// `tokens` of a namespace, or of the cluster when `namespace` is None.
    Tokens {
        namespace: Option<String>,
        id: Option<String>,
    },
}

pub fn parse_target(path: &str) -> Result<Target, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let not_found = || {
        ApiError::NotFound(format!(
            "the server could not find the requested resource: {path}"
        ))
    };
    let kind_of = |plural: &str| Kind::from_plural(plural).ok_or_else(not_found);
    let scoped = |kind: Kind, namespace: Option<&str>| -> Result<Option<String>, ApiError> {
        match (kind.namespaced(), namespace) {
            (true, Some(ns)) => Ok(Some(ns.to_owned())),
            (false, None) => Ok(None),
            (true, None) => Err(ApiError::NotFound(format!(
                "{} live in namespaces: use /apis/skiff.dev/v1/namespaces/{{namespace}}/{}",
                kind.plural(),
                kind.plural()
            ))),
            (false, Some(_)) => Err(ApiError::NotFound(format!(
                "{} are not namespaced",
                kind.plural()
            ))),
        }
    };
    let item = |kind, namespace, name: &str, status| -> Result<Target, ApiError> {
        Ok(Target::Item {
            kind,
            namespace,
            name: name.to_owned(),
            status,
        })
    };
    match segments.as_slice() {
        ["tokens"] => Ok(Target::Tokens {
            namespace: None,
            id: None,
        }),
        ["tokens", id] => Ok(Target::Tokens {
            namespace: None,
            id: Some((*id).to_owned()),
        }),
        ["whoami"] => Ok(Target::Whoami),
        ["manifests"] => Ok(Target::Manifests),
        ["nodemetrics"] => Ok(Target::NodeMetrics),
        ["podmetrics"] => Ok(Target::PodMetrics { namespace: None }),
        ["namespaces", ns, "podmetrics"] => Ok(Target::PodMetrics {
            namespace: Some((*ns).to_owned()),
        }),
        ["namespaces", ns, "tokens"] => Ok(Target::Tokens {
            namespace: Some((*ns).to_owned()),
            id: None,
        }),
        ["namespaces", ns, "tokens", id] => Ok(Target::Tokens {
            namespace: Some((*ns).to_owned()),
            id: Some((*id).to_owned()),
        }),
        [plural] => {
            let kind = kind_of(plural)?;
            Ok(Target::Collection {
                kind,
                namespace: None,
            })
        }
        [plural, name] => {
            let kind = kind_of(plural)?;
            item(kind, scoped(kind, None)?, name, false)
        }
        ["nodes", name, "lease"] => Ok(Target::Lease {
            node: (*name).to_owned(),
        }),
        ["nodes", name, "proxykey"] => Ok(Target::ProxyKey {
            node: (*name).to_owned(),
        }),
        [plural, name, "status"] => {
            let kind = kind_of(plural)?;
            item(kind, scoped(kind, None)?, name, true)
        }
        ["namespaces", ns, plural] => {
            let kind = kind_of(plural)?;
            Ok(Target::Collection {
                kind,
                namespace: scoped(kind, Some(ns))?,
            })
        }
        ["namespaces", ns, plural, name] => {
            let kind = kind_of(plural)?;
            item(kind, scoped(kind, Some(ns))?, name, false)
        }
        ["namespaces", ns, "pods", name, "log"] => Ok(Target::PodLog {
            namespace: (*ns).to_owned(),
            name: (*name).to_owned(),
        }),
        ["namespaces", ns, "deployments", name, "scale"] => Ok(Target::Scale {
            namespace: (*ns).to_owned(),
            name: (*name).to_owned(),
        }),
        ["namespaces", ns, "services", name, "activate"] => Ok(Target::Activate {
            namespace: (*ns).to_owned(),
            name: (*name).to_owned(),
        }),
        ["namespaces", ns, "serviceaccounts", name, "token"] => Ok(Target::AccountToken {
            namespace: (*ns).to_owned(),
            name: (*name).to_owned(),
        }),
        ["namespaces", ns, plural, name, "status"] => {
            let kind = kind_of(plural)?;
            item(kind, scoped(kind, Some(ns))?, name, true)
        }
        _ => Err(not_found()),
    }
}

async fn objects_or_tokens(State(state): State<AppState>, request: Request) -> Response {
    let started = Instant::now();
    let path = request
        .uri()
        .path()
        .strip_prefix("/apis/skiff.dev/v1/")
        .unwrap_or_default()
        .to_owned();
    let (verb, kind) = request_labels(&request, &path);
    let response = match serve(&state, request, path, table::Dialect::Skiff).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    state
        .store
        .metrics()
        .api_request(verb, kind, response.status().as_u16(), started.elapsed());
    response
}

/// The verb and kind a request is counted under: both from fixed sets, so
/// no caller can grow the metrics by the paths it makes up.
fn request_labels(request: &Request, path: &str) -> (&'static str, &'static str) {
    let target = parse_target(path).ok();
    let kind = match &target {
        Some(Target::Collection { kind, .. } | Target::Item { kind, .. }) => kind.plural(),
        Some(Target::Lease { .. }) => "leases",
        Some(Target::PodLog { .. }) => "podlogs",
        Some(Target::NodeMetrics) => "nodemetrics",
        Some(Target::PodMetrics { .. }) => "podmetrics",
        Some(Target::ProxyKey { .. }) => "proxykeys",
        Some(Target::AccountToken { .. }) => "serviceaccounttokens",
        Some(Target::Activate { .. }) => "activations",
        Some(Target::Scale { .. }) => "deployments",
        Some(Target::Tokens { .. }) => "tokens",
        Some(Target::Whoami) => "whoami",
        Some(Target::Manifests) => "manifests",
        None => "unknown",
    };
    let watching = || {
        request.uri().query().is_some_and(|query| {
            query
                .split('&')
                .any(|pair| matches!(pair, "watch=true" | "watch=1"))
        })
    };
    let verb = match *request.method() {
        Method::GET if matches!(target, Some(Target::Collection { .. })) && watching() => "watch",
        Method::GET if matches!(target, Some(Target::Collection { .. })) => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    };
    (verb, kind)
}

/// `GET /metrics`: the control plane's metrics, for cluster admins and
/// tokens granted `metrics` (which read nothing else).
async fn metrics(State(state): State<AppState>, request: Request) -> Response {
    let principal = match authenticate(&state, request.headers(), client_address(&request)).await {
        Ok(principal) => principal,
        Err(error) => return error.into_response(),
    };
    if !crate::auth::may_read_metrics(&principal) {
        return ApiError::Forbidden(
            "this token may not read the metrics: use a cluster admin's token or one made with `wasmctl create token --metrics`".into(),
        )
        .into_response();
    }
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.store.metrics().encode(),
    )
        .into_response()
}

/// Serves a request for `path` (under a group's prefix), its objects
/// shown and written in `dialect`'s shape.
async fn serve(
    state: &AppState,
    request: Request,
    path: String,
    dialect: table::Dialect,
) -> Result<Response, ApiError> {
    let kube = dialect == table::Dialect::Kube;
    let principal = authenticate(state, request.headers(), client_address(&request)).await?;
    let target = parse_target(&path)?;
    let params: HashMap<String, String> = Query::try_from_uri(request.uri())
        .map(|Query(params)| params)
        .map_err(|e| ApiError::BadRequest(format!("query string: {e}")))?;
    if let Some(name) = params
        .iter()
        .find(|(name, value)| name.contains('\0') || value.contains('\0'))
        .map(|(name, _)| name)
    {
        return Err(ApiError::BadRequest(format!(
            "{}: contains a NUL byte",
            name.escape_default()
        )));
    }
    // Keyed by the token, not the principal: tokens are what is handed out.
    let caller = crate::auth::token_hash(bearer(request.headers()).unwrap_or_default());
    let method = request.method().clone();
    // Tables and metadata are views of reads of objects; everything else
    // answers as it always does.
    let view = match (&target, &method) {
        (Target::Collection { .. } | Target::Item { status: false, .. }, &Method::GET) => {
            table::View::negotiate(
                request.headers(),
                params.get("includeObject").map(String::as_str),
            )?
        }
        _ => table::View::Objects,
    };
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_owned())
        .unwrap_or_default();
    // Kubernetes' patch types where they are served: server-side apply
    // on either path, strategic and JSON patches on Kubernetes' own kinds.
    let patches: &[&str] = match (&method, kube) {
        (&Method::PATCH, true) => &[
            "application/apply-patch+yaml",
            "application/strategic-merge-patch+json",
            "application/json-patch+json",
        ],
        (&Method::PATCH, false) => &["application/apply-patch+yaml"],
        _ => &[],
    };
    let body = read_body(request, matches!(target, Target::Manifests), patches).await?;
    refuse_nul_bytes(&body)?;
    // Objects written in the Kubernetes shape are Skiff's from here on.
    let (body, mut notes) = match (&target, &method) {
        (Target::Collection { kind, .. }, &Method::POST)
        | (
            Target::Item {
                kind,
                status: false,
                ..
            },
            &Method::PUT,
        ) if kube => kube::body_in(*kind, body)?,
        (Target::Item { status: true, .. }, &Method::PUT | &Method::PATCH) if kube => {
            return Err(ApiError::MethodNotAllowed(
                "status is written by Skiff's own components, through /apis/skiff.dev/v1".into(),
            ));
        }
        _ => (body, Vec::new()),
    };
    // Writes of objects may drop the fields their kind does not have
    // rather than be refused for them, as the caller chooses.
    let (body, dropped) = match (&target, &method) {
        (Target::Item { .. }, &Method::PATCH)
            if kube || content_type == "application/apply-patch+yaml" =>
        {
            (body, Vec::new())
        }
        (Target::Collection { kind, .. }, &Method::POST)
        | (Target::Item { kind, .. }, &Method::PUT | &Method::PATCH) => {
            let validation = kube_openapi::FieldValidation::parse(
                params.get("fieldValidation").map(String::as_str),
            )?;
            drop_unknown_fields(*kind, validation, body)?
        }
        _ => (body, Vec::new()),
    };
    let call = objects::Call {
        state,
        principal: &principal,
        caller,
        params: &params,
        body: &body,
        view,
        dialect,
    };
    let mut response = match (&target, &method) {
        (
            Target::Item {
                kind,
                namespace,
                name,
                status: false,
            },
            &Method::PATCH,
        ) if content_type == "application/apply-patch+yaml" => {
            let key = crate::store::ObjectKey::new(*kind, namespace.as_deref().unwrap_or(""), name);
            apply::server_side(&call, &key).await?
        }
        (
            Target::Item {
                kind,
                namespace,
                name,
                ..
            },
            &Method::PATCH,
        ) if kube => {
            let key = crate::store::ObjectKey::new(*kind, namespace.as_deref().unwrap_or(""), name);
            let (response, patched_notes) = kube::patch(&call, &key, &content_type).await?;
            notes.extend(patched_notes);
            response
        }
        (Target::Collection { kind, .. } | Target::Item { kind, .. }, m)
            if kube && m != Method::GET =>
        {
            let kind = *kind;
            kube::answer_out(kind, answer(&call, target, method, &body).await?).await?
        }
        _ => answer(&call, target, method, &body).await?,
    };
    notes.extend(
        dropped
            .iter()
            .map(|field| format!("unknown field \"{}\"", quoted(field))),
    );
    for warning in warnings(&notes) {
        if let Ok(value) = axum::http::HeaderValue::from_str(&warning) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    Ok(response)
}

/// Most `Warning` headers one answer carries: a body of a million unknown
/// fields gets a bounded answer.
const MAX_WARNINGS: usize = 10;

/// `Warning` headers, as Kubernetes words them (RFC 7234's form; kubectl
/// prints each), at most [`MAX_WARNINGS`] and a last one counting the
/// rest. A text holds the caller's words (a field's name): its quotes and
/// backslashes are escaped and anything outside printable ASCII is written
/// as `\u{..}`, so it stays inside its quoted string.
fn warnings(texts: &[String]) -> Vec<String> {
    let mut warnings: Vec<String> = texts
        .iter()
        .take(MAX_WARNINGS)
        .map(|text| format!("299 - \"{}\"", quoted(text)))
        .collect();
    if texts.len() > MAX_WARNINGS {
        warnings.push(format!(
            "299 - \"and {} more warnings\"",
            texts.len() - MAX_WARNINGS
        ));
    }
    warnings
}

/// `text` escaped to sit inside a quoted string of a header.
fn quoted(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' | '\\' => format!("\\{c}"),
            ' '..='~' => c.to_string(),
            other => other.escape_unicode().to_string(),
        })
        .collect()
}

/// The body of a write with the fields its kind does not have dropped,
/// and their paths, when `validation` says to drop them; as it came
/// otherwise (admission then refuses such a field, naming it).
fn drop_unknown_fields(
    kind: Kind,
    validation: kube_openapi::FieldValidation,
    body: bytes::Bytes,
) -> Result<(bytes::Bytes, Vec<String>), ApiError> {
    if validation == kube_openapi::FieldValidation::Strict {
        return Ok((body, Vec::new()));
    }
    let Ok(mut object) = serde_json::from_slice::<serde_json::Value>(&body) else {
        // Not JSON: the handler refuses it as such.
        return Ok((body, Vec::new()));
    };
    let dropped = kube_openapi::prune_unknown(kind, &mut object);
    if dropped.is_empty() {
        return Ok((body, Vec::new()));
    }
    let body = serde_json::to_vec(&object).expect("JSON serialises");
    let dropped = match validation {
        kube_openapi::FieldValidation::Warn => dropped,
        _ => Vec::new(),
    };
    Ok((body.into(), dropped))
}

/// The answer to a call whose target, caller and body are known.
async fn answer(
    call: &objects::Call<'_>,
    target: Target,
    method: Method,
    body: &[u8],
) -> Result<Response, ApiError> {
    let (state, principal, caller, params) = (call.state, call.principal, call.caller, call.params);
    match (target, method) {
        (Target::Lease { node }, method) => call.lease(&node, method).await,
        (Target::PodLog { namespace, name }, Method::GET) => {
            logs::get(state, principal, caller, &namespace, &name, params).await
        }
        (Target::NodeMetrics, Method::GET) => usage::nodes(state, principal).await,
        (Target::Whoami, Method::GET) => Ok(axum::Json(whoami(principal)).into_response()),
        (Target::Manifests, Method::POST) => manifests::apply(call).await,
        (Target::Manifests, method) => Err(ApiError::MethodNotAllowed(format!(
            "{method} is not allowed here: a manifest is applied with POST"
        ))),
        (Target::PodMetrics { namespace }, Method::GET) => {
            usage::pods(state, principal, namespace.as_deref(), params).await
        }
        (
            Target::PodLog { .. }
            | Target::NodeMetrics
            | Target::PodMetrics { .. }
            | Target::Whoami,
            method,
        ) => Err(ApiError::MethodNotAllowed(format!(
            "{method} is not allowed here: logs, usage and whoami are read with GET"
        ))),
        (Target::ProxyKey { node }, Method::GET) => proxy_key::get(state, principal, &node).await,
        (Target::AccountToken { namespace, name }, Method::POST) => {
            tokens::account_token(state, principal, &namespace, &name, body).await
        }
        (Target::Scale { namespace, name }, method) => {
            scale::handle(call, &namespace, &name, &method).await
        }
        (Target::Activate { namespace, name }, Method::POST) => {
            activate(state, principal, &namespace, &name).await
        }
        (Target::Tokens { namespace, id }, method) => {
            tokens::handle(state, principal, namespace, id, method, body).await
        }
        (Target::Collection { kind, namespace }, Method::GET) => {
            call.list_or_watch(kind, namespace).await
        }
        (Target::Collection { kind, namespace }, Method::POST) => {
            call.create(kind, namespace).await
        }
        (
            Target::Item {
                kind,
                namespace,
                name,
                status,
            },
            method,
        ) => {
            let key = crate::store::ObjectKey::new(kind, namespace.as_deref().unwrap_or(""), &name);
            match method {
                Method::GET => call.get(&key).await,
                Method::PUT => call.replace(&key, status).await,
                Method::PATCH => call.patch(&key, status).await,
                Method::DELETE if !status => call.delete(&key).await,
                other => Err(method_not_allowed(&other)),
            }
        }
        (_, other) => Err(method_not_allowed(&other)),
    }
}

/// `POST namespaces/{ns}/services/{name}/activate`: a node holds a
/// request for the Service, which has no ready endpoint; its autoscaled
/// Deployments at zero get a pod now rather than at the autoscaler's next
/// look. Nodes may ask for any Service (their ingress serves them all),
/// tenants with `edit` for their namespace's.
async fn activate(
    state: &AppState,
    principal: &Principal,
    namespace: &str,
    name: &str,
) -> Result<Response, ApiError> {
    let allowed = match principal {
        Principal::Node(_) => true,
        other => other
            .role_in(namespace)
            .is_some_and(|role| role >= crate::auth::Role::Edit),
    };
    if !allowed {
        return Err(ApiError::Forbidden(format!(
            "this token may not start Services in namespace {namespace}"
        )));
    }
    let by_node = match principal {
        Principal::Node(node) => Some(node.as_str()),
        _ => None,
    };
    let activated = crate::controllers::autoscaler::activate(
        &state.store,
        &state.activations,
        namespace,
        name,
        by_node,
    )
    .await?
    .ok_or_else(|| {
        ApiError::NotFound(format!(
            "services \"{name}\" not found in namespace {namespace}"
        ))
    })?;
    Ok(axum::Json(serde_json::json!({
        "activated": activated.names,
        "pods": activated.bound,
    }))
    .into_response())
}

fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on this resource"))
}

/// Why a request body could not be read, as the caller's error: too slow
/// (the listener's body deadline), broken off, or too large.
fn body_error(error: &axum::Error) -> ApiError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        match e.downcast_ref::<skiff_serve::BodyError>() {
            Some(timeout @ skiff_serve::BodyError::TimedOut(_)) => {
                return ApiError::Timeout(timeout.to_string());
            }
            Some(broken @ skiff_serve::BodyError::Read(_)) => {
                return ApiError::BadRequest(broken.to_string());
            }
            None => cause = e.source(),
        }
    }
    ApiError::TooLarge("request body is larger than 1Mi; objects are limited to 1Mi".into())
}

/// The request body, refused beyond [`MAX_OBJECT_BYTES`]; YAML only where
/// `yaml` says a manifest is taken.
async fn read_body(
    request: Request,
    yaml: bool,
    patches: &[&str],
) -> Result<bytes::Bytes, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_owned());
    let body: Body = request.into_body();
    let bytes = axum::body::to_bytes(body, MAX_OBJECT_BYTES)
        .await
        .map_err(|e| body_error(&e))?;
    if !bytes.is_empty()
        && let Some(content_type) = content_type
        && !matches!(
            content_type.as_str(),
            "application/json" | "application/merge-patch+json" | ""
        )
        && !(yaml
            && matches!(
                content_type.as_str(),
                "application/yaml" | "application/x-yaml"
            ))
        && !patches.contains(&content_type.as_str())
    {
        if content_type == "application/vnd.kubernetes.protobuf" {
            return Err(ApiError::UnsupportedMediaType(
                "Kubernetes' protobuf encoding is not served, only JSON: `kubectl create <kind>` sends protobuf; write the object as YAML and `kubectl apply -f` it".into(),
            ));
        }
        let send = if yaml {
            "application/yaml or application/json"
        } else {
            "application/json"
        };
        return Err(ApiError::UnsupportedMediaType(format!(
            "content type {content_type} is not supported; send {send}"
        )));
    }
    Ok(bytes)
}

/// Refuses a JSON body holding a NUL character anywhere (a value or a
/// key), naming where: the database stores none, and finding out there
/// would fail a whole batch of writes. Only a body that spells one
/// (`\u0000`) is parsed for it; one that is not JSON is left for its
/// handler to refuse.
fn refuse_nul_bytes(body: &[u8]) -> Result<(), ApiError> {
    const SPELLED: &[u8] = b"\\u0000";
    if !body.windows(SPELLED.len()).any(|w| w == SPELLED) {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(());
    };
    match skiff_api::validate::nul_byte_at(&value) {
        Some(path) => Err(ApiError::invalid(
            if path.is_empty() { "body" } else { &path },
            "contains a NUL byte, which cannot be stored",
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: Kind, namespace: Option<&str>, name: &str, status: bool) -> Target {
        Target::Item {
            kind,
            namespace: namespace.map(str::to_owned),
            name: name.into(),
            status,
        }
    }

    #[test]
    fn paths_name_collections_items_and_subresources() {
        let cases = [
            (
                "pods",
                Target::Collection {
                    kind: Kind::Pod,
                    namespace: None,
                },
            ),
            ("nodes/n1", item(Kind::Node, None, "n1", false)),
            ("nodes/n1/status", item(Kind::Node, None, "n1", true)),
            ("nodes/n1/proxykey", Target::ProxyKey { node: "n1".into() }),
            (
                "namespaces",
                Target::Collection {
                    kind: Kind::Namespace,
                    namespace: None,
                },
            ),
            (
                "namespaces/shop",
                item(Kind::Namespace, None, "shop", false),
            ),
            (
                "namespaces/shop/status",
                item(Kind::Namespace, None, "shop", true),
            ),
            (
                "namespaces/shop/pods",
                Target::Collection {
                    kind: Kind::Pod,
                    namespace: Some("shop".into()),
                },
            ),
            (
                "namespaces/shop/pods/web",
                item(Kind::Pod, Some("shop"), "web", false),
            ),
            (
                "namespaces/shop/deployments/web/status",
                item(Kind::Deployment, Some("shop"), "web", true),
            ),
            (
                "namespaces/shop/tokens",
                Target::Tokens {
                    namespace: Some("shop".into()),
                    id: None,
                },
            ),
            (
                "tokens",
                Target::Tokens {
                    namespace: None,
                    id: None,
                },
            ),
        ];
        for (path, want) in cases {
            assert_eq!(parse_target(path).unwrap(), want, "{path}");
        }
    }

    #[test]
    fn warnings_stay_inside_their_quotes_and_are_bounded() {
        let odd = ["spec.a\"b", "spec.c\\d", "spec.\u{7}\n\u{e9}"].map(String::from);
        let texts: Vec<String> = odd
            .iter()
            .map(|f| format!("unknown field \"{}\"", quoted(f)))
            .collect();
        let warnings = warnings(&texts);
        assert_eq!(warnings[0], r#"299 - "unknown field \"spec.a\\\"b\"""#);
        for warning in &warnings {
            assert!(
                axum::http::HeaderValue::from_str(warning).is_ok(),
                "{warning}"
            );
            assert!(warning.is_ascii(), "{warning}");
        }
        let many: Vec<String> = (0..1000).map(|i| format!("f{i}")).collect();
        let warnings = super::warnings(&many);
        assert_eq!(warnings.len(), MAX_WARNINGS + 1);
        assert_eq!(warnings.last().unwrap(), "299 - \"and 990 more warnings\"");
    }

    #[test]
    fn wrong_scopes_and_unknown_kinds_are_not_found() {
        for path in [
            "gizmos",
            "pods/web",
            "namespaces/shop/nodes",
            "namespaces/shop/pods/web/logs",
            "a/b/c/d/e/f",
        ] {
            assert!(
                matches!(parse_target(path), Err(ApiError::NotFound(_))),
                "{path}"
            );
        }
    }
}
