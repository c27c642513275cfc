//! A control plane inside another program (`wasmctl dev`): started on a
//! listener the caller bound, it opens its database itself, initializes
//! the cluster when the database is new, mints node credentials, and stops
//! with everything it started. The caller never reaches the store.

use anyhow::Result;
use skiff_api::kinds::cluster::NamespacePolicy;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::encryption::Keyring;
use crate::server::{self, ServerConfig};
use crate::store::{Store, StoreError, TokenGrant};

/// A running control plane; [`ControlPlane::shutdown`] stops it.
pub struct ControlPlane {
    store: Store,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<Result<()>>,
}

/// What [`ControlPlane::start`] hands back.
pub struct Started {
    pub control_plane: ControlPlane,
    /// The cluster-admin token when this start initialized the cluster:
    /// the only time it is seen, so the caller keeps it. `None` for a
    /// cluster initialized before.
    pub admin_token: Option<String>,
}

impl ControlPlane {
    /// Opens and migrates the database of `config` (waiting for it up to
    /// `config.database_wait`), initializes the cluster if it is new (its
    /// `default` namespace with `default_policy`), and serves on `listener`
    /// with the scheduler and controllers `config` asks for.
    pub async fn start(
        listener: TcpListener,
        config: ServerConfig,
        default_policy: &NamespacePolicy,
    ) -> Result<Started> {
        // A new cluster gets its key file here, as `control-plane init`
        // makes one; an existing one is kept.
        Keyring::create_file(&config.encryption_key_file)?;
        let store = server::open_store(
            &config.database_url,
            &config.pool,
            config.database_wait,
            &config.encryption_key_file,
        )
        .await?;
        let admin_token = if store.initialized().await? {
            None
        } else {
            Some(crate::initialize_with(&store, default_policy).await?)
        };
        let (stop, stopped) = oneshot::channel();
        let serving = tokio::spawn(server::run_on(listener, store.clone(), config, async {
            let _ = stopped.await;
        }));
        Ok(Started {
            control_plane: ControlPlane {
                store,
                stop,
                serving,
            },
            admin_token,
        })
    }

    /// A new token for the node agent of node `node` (returned once; the
    /// caller keeps it).
    pub async fn node_token(&self, node: &str, description: &str) -> Result<String, StoreError> {
        let (token, hash) = crate::auth::new_token();
        self.store
            .create_token(&hash, &TokenGrant::Node(node.to_owned()), description)
            .await?;
        Ok(token)
    }

    /// Stops serving and every loop the control plane runs, and waits for
    /// them.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.stop.send(());
        self.serving.await?
    }
}
