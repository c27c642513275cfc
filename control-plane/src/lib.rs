//! The Skiff control plane: the API server (axum) over the cluster state in
//! Postgres (sqlx), with watches, tokens and roles. Any number of
//! control-plane processes may serve one database: they share no state but
//! the database, and revisions, watches and tokens work across them.

pub mod api;
pub mod auth;
pub mod controllers;
pub mod embedded;
pub mod encryption;
pub mod events;
pub mod leader;
pub mod local_postgres;
pub mod metrics;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod tls;
pub mod ui;
pub mod watch;

/// Sets up a fresh cluster in an empty, migrated database: the `default`
/// namespace (with the closed default policy) and a cluster-admin token,
/// returned (the only time it is seen). Fails on a database that is
/// already initialized.
pub async fn initialize(store: &store::Store) -> anyhow::Result<String> {
    initialize_with(
        store,
        &skiff_api::kinds::cluster::NamespacePolicy::default(),
    )
    .await
}

/// [`initialize`], with `policy` for the `default` namespace.
pub async fn initialize_with(
    store: &store::Store,
    policy: &skiff_api::kinds::cluster::NamespacePolicy,
) -> anyhow::Result<String> {
    use serde_json::json;
    if store.initialized().await? {
        anyhow::bail!(
            "the database is already initialized; create more tokens with `wasmctl create token`"
        );
    }
    let namespace = skiff_api::admit(
        skiff_api::Kind::Namespace,
        json!({"apiVersion": skiff_api::API_VERSION, "kind": "Namespace",
            "metadata": {"name": "default"}, "spec": {"policy": policy}}),
    )?;
    match store
        .write(store::Write::Create {
            key: store::ObjectKey::namespace("default"),
            object: namespace,
        })
        .await
    {
        Ok(_) | Err(store::StoreError::AlreadyExists(_)) => {}
        Err(e) => {
            return Err(e).map_err(|e| anyhow::anyhow!("creating the default namespace: {e}"));
        }
    }
    let (token, hash) = auth::new_token();
    store
        .create_token(
            &hash,
            &store::TokenGrant::ClusterAdmin,
            "created at initialization",
        )
        .await?;
    store.mark_initialized().await?;
    Ok(token)
}
