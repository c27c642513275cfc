//! Running the API server: connect and migrate, start the watch hub, the
//! leadership loops and the compactor, serve HTTP or HTTPS until told to
//! stop, and stop them all then.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::api::{self, ApiConfig, AppState};
use crate::auth::Authenticator;
use crate::store::{PoolSettings, Store};
use crate::watch::WatchHub;

/// Everything `control-plane serve` is configured with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub database_url: String,
    pub listen: SocketAddr,
    /// Certificate chain and key (PEM); plain HTTP without them.
    pub tls: Option<(PathBuf, PathBuf)>,
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
    pub api: ApiConfig,
}

/// Connects to the database, retrying while it is unreachable, and applies
/// the migrations.
pub async fn open_store(url: &str, pool: &PoolSettings, wait: Duration) -> Result<Store> {
    let store = Store::connect(url, pool).context("invalid database URL")?;
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
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let store = open_store(&config.database_url, &config.pool, config.database_wait).await?;
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
    let hub = WatchHub::start(store.clone());
    let mut loops = JoinSet::new();
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
        ));
    }
    loops.spawn(compact_periodically(
        store.clone(),
        config.retain_changes,
        config.compaction_interval,
    ));
    let state = AppState {
        auth: Arc::new(Authenticator::new(store.clone(), config.token_cache_ttl)),
        store,
        hub,
        config: config.api.clone(),
    };
    let router = api::router(state);
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("listening on {scheme}://{}", listener.local_addr()?);
    // The loops stop as soon as shutdown is asked for, before open
    // connections are drained, so that a leader's locks are released (with
    // their connections) at once and another process takes over.
    serve(listener, router, tls, async {
        shutdown.await;
        loops.shutdown().await;
    })
    .await;
    Ok(())
}

async fn compact_periodically(store: Store, retain: i64, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        match store.compact(retain).await {
            Ok(revision) => tracing::debug!("change log compacted through {revision}"),
            Err(e) => tracing::warn!("compaction failed: {e}"),
        }
    }
}

/// Accepts connections (TLS-wrapped when `tls` is set) and serves HTTP/1.1
/// and HTTP/2 on them until `shutdown`; then stops accepting and gives open
/// connections a moment to finish.
async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let (stop, stopping) = watch::channel(());
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (router, tls, stopping) = (router.clone(), tls.clone(), stopping.clone());
        connections.spawn(async move {
            match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => serve_connection(stream, router, stopping).await,
                    Err(e) => tracing::debug!("TLS handshake failed: {e}"),
                },
                None => serve_connection(stream, router, stopping).await,
            }
        });
        while connections.try_join_next().is_some() {}
    }
    // Dropping the sender tells every connection to finish up.
    drop(stop);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

async fn serve_connection<I>(io: I, router: Router, mut stopping: watch::Receiver<()>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| router.clone().oneshot(request));
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stopping.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection ended: {e}");
    }
}
