//! `GET nodes/{name}/proxykey`: the cluster's proxy key, which every node's
//! ingress signs the requests it proxies to another node with (and checks
//! those it receives against). Made on first ask, then the same for every
//! node and every control-plane process. With it, the node's own API key
//! (see `skiff_client::node_api`).

use axum::Json;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::{ApiError, AppState};
use crate::auth::{Principal, may_read_proxy_key};

/// The name of the key in the cluster's secrets.
pub(crate) const PROXY_KEY: &str = "proxy-key";
/// 256 bits, as long as an HMAC-SHA256: a longer key would add nothing.
pub(crate) const PROXY_KEY_BYTES: usize = 32;

pub async fn get(
    state: &AppState,
    principal: &Principal,
    node: &str,
) -> Result<Response, ApiError> {
    if !may_read_proxy_key(principal, node) {
        return Err(ApiError::Forbidden(format!(
            "only node {node}'s own token (or a cluster admin) may read its proxy key"
        )));
    }
    let mut candidate = [0u8; PROXY_KEY_BYTES];
    getrandom::fill(&mut candidate).expect("the operating system's random source works");
    let key = state.store.cluster_secret(PROXY_KEY, &candidate).await?;
    // The node's own API key goes with it: the one the control plane signs
    // its requests to this node with, and no other node's.
    let api_key = skiff_client::node_api::derive_node_key(&key, node);
    Ok(Json(json!({
        "node": node,
        "key": STANDARD.encode(key),
        "apiKey": STANDARD.encode(api_key),
    }))
    .into_response())
}
