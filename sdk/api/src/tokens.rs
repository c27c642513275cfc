//! API tokens: what a client asks for and what it gets back.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Asks for a new token. In a namespace's `tokens`, `role` is `admin`,
/// `edit` or `view`; at the cluster level, `role: cluster-admin`, `metrics`
/// (reads `/metrics`, nothing else) or `node` (with `nodeName`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRequest {
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// How long the token works, e.g. `24h`; for ever when absent. At
    /// least 1ms, at most 3660 days (the pattern admits up to 9999h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[1-9][0-9]{0,3}(ms|s|m|h)?$"))]
    pub ttl: Option<String>,
}

/// Asks for a short-lived token of a ServiceAccount
/// (`namespaces/{ns}/serviceaccounts/{name}/token`), bound to a pod when a
/// node asks for one of its pods: it stops working when that pod goes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountTokenRequest {
    /// How long the token works, e.g. `1h` (at least 10s, at most 24h);
    /// 1h when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_pod: Option<BoundPod>,
}

/// The pod a token is bound to, by name and uid (a pod made again under
/// the same name is another pod).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BoundPod {
    pub name: String,
    pub uid: String,
}

/// A ServiceAccount's token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountToken {
    pub token: String,
    pub expires_at: String,
}

/// A token as listed. The secret itself is only ever in the response that
/// created it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    pub id: String,
    /// `cluster-admin`, `metrics`, `node`, or the role in `namespace`.
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When it last authenticated a request (to within the server's token
    /// cache period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    /// Only in the response to a create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}
