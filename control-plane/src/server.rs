//! Running the API server: connect and migrate, start the watch hub, the
//! leadership loops and the compactor, serve HTTP or HTTPS until told to
//! stop, and stop them all then.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::api::{self, ApiConfig, AppState};
use crate::auth::Authenticator;
use crate::encryption::Keyring;
use crate::store::{PoolSettings, Reseal, Store};
use crate::watch::WatchHub;

/// Everything `control-plane serve` is configured with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub database_url: String,
    /// The keys Secrets are encrypted under (see [`crate::encryption`]).
    pub encryption_key_file: PathBuf,
    pub listen: SocketAddr,
    /// Certificate chain and key (PEM); plain HTTP without them.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The API listener's deadlines and connection cap.
    pub listener: skiff_serve::Limits,
    pub pool: PoolSettings,
    /// Revisions of change log kept for watches to resume from.
    pub retain_changes: i64,
    pub compaction_interval: Duration,
    /// How long to keep retrying an unreachable database at start.
    pub database_wait: Duration,
    /// How long token lookups are cached (the delay before a deleted token
    /// stops working).
    pub token_cache_ttl: Duration,
    /// Whether this process may schedule (when it holds the lock), and
    /// how.
    pub scheduler: bool,
    pub scheduling: crate::scheduler::SchedulerConfig,
    /// Whether this process may run controllers (when it holds the lock).
    pub controllers: bool,
    /// How nodes that stop renewing their leases are handled.
    pub node_lifecycle: crate::controllers::nodes::NodeLifecycleConfig,
    /// How long Events are kept after they last happened.
    pub event_ttl: Duration,
    pub api: ApiConfig,
}

impl ServerConfig {
    /// How long Events are kept unless told otherwise (`--event-ttl`).
    pub const DEFAULT_EVENT_TTL: Duration = crate::events::DEFAULT_TTL;
}

/// Reads the encryption keys, connects to the database, retrying while it
/// is unreachable, and applies the migrations.
pub async fn open_store(
    url: &str,
    pool: &PoolSettings,
    wait: Duration,
    encryption_key_file: &Path,
) -> Result<Store> {
    let keyring = Arc::new(Keyring::load(encryption_key_file)?);
    let store = Store::connect(url, pool, keyring).context("invalid database URL")?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match store.migrate().await {
            Ok(()) => return Ok(store),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!("database not ready ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).context("cannot prepare the database"),
        }
    }
}

/// Serves until `shutdown` completes.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    let listener = skiff_serve::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let store = open_store(
        &config.database_url,
        &config.pool,
        config.database_wait,
        &config.encryption_key_file,
    )
    .await?;
    run_on(listener, store, config, shutdown).await
}

/// Serves on an already bound listener with an already opened store (for
/// `embedded`, whose caller binds the listener and needs its address).
pub(crate) async fn run_on(
    listener: TcpListener,
    store: Store,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let tls = match &config.tls {
        Some((cert, key)) => Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
            cert, key,
        )?)),
        None => None,
    };
    // Secrets written before encryption existed are sealed now, so none
    // stays in plaintext past an upgrade.
    let sealed = store.reseal(Reseal::Plaintext).await?;
    if sealed.total() > 0 {
        tracing::info!("encrypted {} values stored in plaintext", sealed.total());
    }
    let hub = WatchHub::start(store.clone());
    let mut loops = JoinSet::new();
    loops.spawn(reload_keys_periodically(store.clone()));
    if config.scheduler {
        loops.spawn(crate::scheduler::run(
            store.clone(),
            hub.clone(),
            config.scheduling.clone(),
        ));
    }
    if config.controllers {
        loops.spawn(crate::controllers::run(
            store.clone(),
            hub.clone(),
            config.node_lifecycle.clone(),
            config.event_ttl,
        ));
    }
    loops.spawn(compact_periodically(
        store.clone(),
        config.retain_changes,
        config.compaction_interval,
    ));
    let activations = Arc::new(crate::controllers::autoscaler::Activations::new(
        &store,
        config.scheduling.known_runtimes.clone(),
    ));
    let state = AppState {
        auth: Arc::new(Authenticator::new(store.clone(), config.token_cache_ttl)),
        store,
        hub,
        config: config.api.clone(),
        nodes: Arc::default(),
        activations,
    };
    let router = api::router(state);
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("listening on {scheme}://{}", listener.local_addr()?);
    // The loops stop as soon as shutdown is asked for, before open
    // connections are drained, so that a leader's locks are released (with
    // their connections) at once and another process takes over.
    serve(listener, router, config.listener.clone(), tls, async {
        shutdown.await;
        loops.shutdown().await;
    })
    .await;
    Ok(())
}

/// How often the encryption key file is checked for changes: a rotation
/// run elsewhere reaches this process within this time.
pub const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

async fn reload_keys_periodically(store: Store) {
    let mut ticks = tokio::time::interval(KEY_RELOAD_INTERVAL);
    loop {
        ticks.tick().await;
        match store.reload_keys() {
            Ok(true) => tracing::info!("encryption key file changed; keys reloaded"),
            Ok(false) => {}
            Err(e) => tracing::warn!("{e}; keeping the keys already read"),
        }
    }
}

async fn compact_periodically(store: Store, retain: i64, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        match store.compact(retain).await {
            Ok(revision) => tracing::debug!("change log compacted through {revision}"),
            Err(e) => tracing::warn!("compaction failed: {e}"),
        }
        // Expired service account tokens authenticate no one; their rows
        // go with the change log's.
        match store.delete_expired_account_tokens().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!("{n} expired service account tokens forgotten"),
            Err(e) => tracing::warn!("forgetting expired service account tokens failed: {e}"),
        }
    }
}

/// How long open connections get to finish once shutdown was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves HTTP/1.1 and HTTP/2 (over TLS when `tls` is set) until
/// `shutdown`, on `skiff_serve`'s listener: its deadlines and connection
/// cap, and the peer's address on every request for rate limits.
async fn serve(
    listener: TcpListener,
    router: Router,
    limits: skiff_serve::Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let options = skiff_serve::Options {
        limits,
        protocols: skiff_serve::Protocols::Auto,
        tls,
        grace: SHUTDOWN_GRACE,
    };
    let handler = move |request| {
        let router = router.clone();
        async move {
            match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    };
    skiff_serve::serve(listener, options, handler, shutdown).await;
}
