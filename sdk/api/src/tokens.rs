//! API tokens: what a client asks for and what it gets back.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Asks for a new token. In a namespace's `tokens`, `role` is `admin`,
/// `edit` or `view`; at the cluster level, `role: cluster-admin` or `node`
/// (with `nodeName`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRequest {
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// How long the token works, e.g. `24h`; for ever when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// A token as listed. The secret itself is only ever in the response that
/// created it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    pub id: String,
    /// `cluster-admin`, `node`, or the role in `namespace`.
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
