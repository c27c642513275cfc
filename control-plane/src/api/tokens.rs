//! Token endpoints: a namespace's admins manage its tokens; cluster admins
//! manage every token, including cluster-admin and node tokens.

use axum::Json;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use skiff_api::Kind;
use skiff_api::tokens::{ServiceAccountToken, ServiceAccountTokenRequest, TokenInfo, TokenRequest};
use skiff_api::validate::dns_label;

use super::{ApiError, AppState};
use crate::auth::{Principal, Role, may_manage_tokens, new_account_token, new_token};
use crate::store::{AccountTokenGrant, ObjectKey, StoreError, TokenGrant, TokenRecord};

pub async fn handle(
    state: &AppState,
    principal: &Principal,
    namespace: Option<String>,
    id: Option<String>,
    method: Method,
    body: &[u8],
) -> Result<Response, ApiError> {
    let allowed = match &namespace {
        Some(ns) => may_manage_tokens(principal, ns),
        None => *principal == Principal::ClusterAdmin,
    };
    if !allowed {
        let scope = namespace
            .as_deref()
            .map(|ns| format!("of namespace {ns}"))
            .unwrap_or_else(|| "of the cluster".into());
        return Err(ApiError::Forbidden(format!(
            "this token may not manage the tokens {scope}"
        )));
    }
    match (method, id) {
        (Method::POST, None) => create(state, namespace, body).await,
        (Method::GET, None) => {
            let records = match &namespace {
                Some(ns) => state.store.namespace_tokens(ns).await?,
                None => state.store.all_tokens().await?,
            };
            let items: Vec<TokenInfo> = records
                .iter()
                .map(|r| info(r, namespace.as_deref()))
                .collect();
            Ok(Json(serde_json::json!({"items": items})).into_response())
        }
        (Method::DELETE, Some(id)) => {
            let id = uuid::Uuid::parse_str(&id)
                .map_err(|_| ApiError::BadRequest(format!("`{id}` is not a token id")))?;
            let deleted = match &namespace {
                Some(ns) => state.store.delete_namespace_token(id, ns).await?,
                None => state.store.delete_token(id).await?,
            };
            if deleted {
                Ok(StatusCode::NO_CONTENT.into_response())
            } else {
                Err(ApiError::NotFound(format!("token {id} not found")))
            }
        }
        (method, _) => Err(ApiError::MethodNotAllowed(format!(
            "{method} is not allowed on tokens"
        ))),
    }
}

async fn create(
    state: &AppState,
    namespace: Option<String>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let request: TokenRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("token request: {e}")))?;
    let grant = match &namespace {
        Some(ns) => {
            let role = Role::parse(&request.role).ok_or_else(|| {
                ApiError::invalid(
                    "role",
                    format!("must be admin, edit or view, not `{}`", request.role),
                )
            })?;
            // That the namespace exists is checked as the role is bound to
            // its uid, in the token's own transaction.
            TokenGrant::Namespace {
                namespace: ns.clone(),
                role: role.as_str().to_owned(),
            }
        }
        None => match (request.role.as_str(), &request.node_name) {
            ("cluster-admin", None) => TokenGrant::ClusterAdmin,
            ("metrics", None) => TokenGrant::Metrics,
            ("node", Some(node)) => {
                dns_label(node).map_err(|reason| ApiError::invalid("nodeName", reason))?;
                TokenGrant::Node(node.clone())
            }
            ("node", None) => {
                return Err(ApiError::invalid(
                    "nodeName",
                    "is required for a node token",
                ));
            }
            (role, _) => {
                return Err(ApiError::invalid(
                    "role",
                    format!(
                        "must be cluster-admin, metrics or node here, not `{role}` (namespace roles are granted under namespaces/{{ns}}/tokens)"
                    ),
                ));
            }
        },
    };
    let expires_at = match &request.ttl {
        None => None,
        Some(ttl) => {
            let duration = skiff_api::quantity::parse_duration(ttl)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    ApiError::invalid("ttl", format!("`{ttl}` is not a duration such as 24h"))
                })?;
            let duration = chrono::Duration::from_std(duration)
                .ok()
                .filter(|d| *d <= chrono::Duration::days(3660))
                .ok_or_else(|| ApiError::invalid("ttl", "must be at most 3660 days"))?;
            Some(chrono::Utc::now() + duration)
        }
    };
    let (token, hash) = new_token();
    let id = state
        .store
        .create_expiring_token(&hash, &grant, &request.description, expires_at)
        .await?;
    let record = TokenRecord {
        id,
        description: request.description,
        cluster_admin: matches!(grant, TokenGrant::ClusterAdmin),
        metrics: matches!(grant, TokenGrant::Metrics),
        node_name: match &grant {
            TokenGrant::Node(node) => Some(node.clone()),
            _ => None,
        },
        roles: match &grant {
            TokenGrant::Namespace { namespace, role } => vec![(namespace.clone(), role.clone())],
            _ => vec![],
        },
        created_at: crate::store::now_rfc3339(),
        expires_at,
        last_used_at: None,
    };
    let mut body = info(&record, namespace.as_deref());
    body.token = Some(token);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub fn info(record: &TokenRecord, namespace: Option<&str>) -> TokenInfo {
    let (role, token_namespace) = if record.cluster_admin {
        ("cluster-admin".to_owned(), None)
    } else if record.node_name.is_some() {
        ("node".to_owned(), None)
    } else if record.metrics {
        ("metrics".to_owned(), None)
    } else {
        let (ns, role) = record
            .roles
            .iter()
            .find(|(ns, _)| namespace.is_none_or(|want| want == ns))
            .cloned()
            .unwrap_or_default();
        (role, Some(ns))
    };
    TokenInfo {
        id: record.id.to_string(),
        role,
        namespace: token_namespace,
        node_name: record.node_name.clone(),
        description: record.description.clone(),
        created_at: record.created_at.clone(),
        expires_at: record
            .expires_at
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        last_used_at: record.last_used_at.clone(),
        token: None,
    }
}

/// Longest and shortest a ServiceAccount token may live, and how long it
/// lives unless asked otherwise.
const ACCOUNT_TOKEN_MAX: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
const ACCOUNT_TOKEN_MIN: std::time::Duration = std::time::Duration::from_secs(10);
const ACCOUNT_TOKEN_DEFAULT: std::time::Duration = std::time::Duration::from_secs(3600);

/// `POST namespaces/{ns}/serviceaccounts/{name}/token`: a short-lived
/// token of the account. Who may ask:
/// - a node, for a pod bound to it that runs as the account and asked
///   for its token (the token is bound to that pod);
/// - a member with `edit` or more, and at least the account's own role
///   (else an editor could mint an admin's token), and cluster admins.
pub async fn account_token(
    state: &AppState,
    principal: &Principal,
    namespace: &str,
    name: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let request: ServiceAccountTokenRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("token request: {e}")))?;
    let duration = match &request.duration {
        None => ACCOUNT_TOKEN_DEFAULT,
        Some(text) => skiff_api::quantity::parse_duration(text)
            .ok()
            .filter(|d| (ACCOUNT_TOKEN_MIN..=ACCOUNT_TOKEN_MAX).contains(d))
            .ok_or_else(|| {
                ApiError::invalid(
                    "duration",
                    format!("`{text}` is not a duration between 10s and 24h"),
                )
            })?,
    };
    // Who may ask is decided before anything is read, for principals
    // whose answer does not depend on the objects.
    let node = match principal {
        Principal::Node(node) if request.bound_pod.is_some() => Some(node.as_str()),
        Principal::Node(_) => {
            return Err(ApiError::Forbidden(
                "a node asks for tokens of its own pods only: name boundPod".into(),
            ));
        }
        // A token bound to a pod is not counted against the namespace's
        // `tokens` (its pod bounds it, and its node must refresh it): only
        // nodes and cluster admins bind, or members could mint uncounted
        // tokens by naming any pod.
        Principal::Account(_) => {
            return Err(ApiError::Forbidden(
                "a service account's token may not make tokens: they would outlive its pod and account".into(),
            ));
        }
        Principal::Namespaced(_) if request.bound_pod.is_some() => {
            return Err(ApiError::Forbidden(
                "boundPod: only nodes and cluster admins bind tokens to pods".into(),
            ));
        }
        _ if principal.role_in(namespace).is_none_or(|r| r < Role::Edit) => {
            return Err(ApiError::Forbidden(format!(
                "this token may not make tokens of service accounts in namespace {namespace}"
            )));
        }
        _ => None,
    };
    let store = &state.store;
    let account_key = ObjectKey::new(Kind::ServiceAccount, namespace, name);
    let Some(account) = store.get(&account_key).await? else {
        return Err(StoreError::NotFound(account_key).into());
    };
    let account_uid = uid_of(&account)?;
    let account_role = account["spec"]["role"].as_str().and_then(Role::parse);
    if node.is_none() && principal.role_in(namespace) < account_role {
        return Err(ApiError::Forbidden(format!(
            "service account {name} holds role {} in namespace {namespace}, more than this token does",
            account_role.map_or("", Role::as_str)
        )));
    }
    let pod = match &request.bound_pod {
        None => None,
        Some(bound) => {
            let pod_key = ObjectKey::new(Kind::Pod, namespace, &bound.name);
            let pod = store
                .get(&pod_key)
                .await?
                .filter(|p| p["metadata"]["uid"].as_str() == Some(bound.uid.as_str()))
                .filter(|p| node.is_none_or(|n| p["spec"]["nodeName"].as_str() == Some(n)))
                // A node answers as for any pod not bound to it: not found.
                .ok_or_else(|| StoreError::NotFound(pod_key.clone()))?;
            let spec = &pod["spec"];
            if spec["serviceAccountName"].as_str() != Some(name) {
                return Err(ApiError::Forbidden(format!(
                    "pod {} runs as service account {}, not {name}",
                    bound.name,
                    spec["serviceAccountName"].as_str().unwrap_or("default")
                )));
            }
            if node.is_some() && spec["automountServiceAccountToken"] != true {
                return Err(ApiError::Forbidden(format!(
                    "pod {} did not ask for its service account's token",
                    bound.name
                )));
            }
            Some((bound.name.as_str(), uid_of(&pod)?))
        }
    };
    let expires_at =
        chrono::Utc::now() + chrono::Duration::from_std(duration).expect("at most a day fits");
    let (token, hash) = new_account_token();
    store
        .create_account_token(
            &hash,
            &AccountTokenGrant {
                namespace,
                account: name,
                account_uid,
                pod,
                expires_at,
            },
        )
        .await?;
    let body = ServiceAccountToken {
        token,
        expires_at: expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn uid_of(object: &serde_json::Value) -> Result<uuid::Uuid, ApiError> {
    object["metadata"]["uid"]
        .as_str()
        .and_then(|uid| uuid::Uuid::parse_str(uid).ok())
        .ok_or_else(|| ApiError::Internal("a stored object without a uid".into()))
}
