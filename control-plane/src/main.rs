//! `control-plane`: set up a cluster's database (`init`) and serve its API
//! (`serve`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use control_plane::api::ApiConfig;
use control_plane::controllers::nodes::NodeLifecycleConfig;
use control_plane::encryption::Keyring;
use control_plane::scheduler::SchedulerConfig;
use control_plane::server::{self, ServerConfig};
use control_plane::store::{PoolSettings, Reseal, Store};
use skiff_api::quantity::parse_duration;

#[derive(Parser)]
#[command(name = "control-plane", version, about = "The Skiff control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the schema in an empty database, the `default` namespace and
    /// a cluster-admin token (printed once); optionally a self-signed CA and
    /// server certificate.
    Init(InitArgs),
    /// Serve the API.
    // Boxed: its many flags make it far larger than the other commands.
    Serve(Box<ServeArgs>),
    /// Put a new encryption key first in the key file and encrypt every
    /// stored Secret and cluster secret under it, while control planes
    /// keep serving (they reread the file within seconds).
    RotateEncryptionKey(RotateArgs),
}

#[derive(clap::Args)]
struct RotateArgs {
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[command(flatten)]
    keys: KeyFileArg,
    /// Afterwards, remove from the file the keys no stored value names
    /// any more (do this once every control plane has reread the file).
    #[arg(long)]
    prune: bool,
}

#[derive(clap::Args)]
struct KeyFileArg {
    /// The file of keys Secrets are encrypted under, outside the database
    /// and readable by its owner alone; `control-plane init` creates it.
    /// Every control plane on one database needs the same keys.
    #[arg(long, env = "SKIFF_ENCRYPTION_KEY_FILE", value_name = "FILE")]
    encryption_key_file: PathBuf,
}

#[derive(clap::Args)]
struct InitArgs {
    /// postgres://user:password@host:port/database
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Write ca.crt, server.crt and server.key for TLS into this directory.
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,
    /// Extra host names or IP addresses for the server certificate
    /// (localhost and loopback are always in). Repeatable.
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_sans: Vec<String>,
    /// Created here (with one new key) unless it exists.
    #[command(flatten)]
    keys: KeyFileArg,
}

#[derive(clap::Args)]
struct ServeArgs {
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[command(flatten)]
    keys: KeyFileArg,
    /// Address to serve on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Certificate chain (PEM) for HTTPS; needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) for HTTPS; needs --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    listener: skiff_serve::Limits,
    /// Database connections in the pool.
    // Its own id: the listener's flattened limits have a `max_connections`.
    #[arg(
        long = "max-connections",
        id = "pool_max_connections",
        default_value_t = 16
    )]
    max_connections: u32,
    /// Database statements running longer are cancelled by the server.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    db_statement_timeout: Duration,
    /// A statement waiting longer for a lock (a write for the revision
    /// row) fails; keep it above --db-idle-in-transaction-timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    db_lock_timeout: Duration,
    /// The server ends a transaction left idle this long, and frees its
    /// locks: a control plane cut off mid-write blocks other writers at
    /// most about this long.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    db_idle_in_transaction_timeout: Duration,
    /// A write batch the database has not committed within this is
    /// abandoned and its writes answered 503.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    db_write_deadline: Duration,
    /// How long the scheduler's and controllers' leadership outlives a
    /// silent link to the database: the server frees the lock after this
    /// much silence, the leader stops acting after 3/5 of it.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    leader_timeout: Duration,
    /// Revisions of change history kept for watches to resume from; a
    /// watch from an older revision gets 410 Gone.
    #[arg(long, default_value_t = 100_000)]
    retain_changes: i64,
    /// How often old change history is dropped.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    compaction_interval: Duration,
    /// How often a watch sends a BOOKMARK.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    bookmark_interval: Duration,
    /// How long token lookups are cached; a deleted token keeps working at
    /// most this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    token_cache_ttl: Duration,
    /// Watches one token may hold open at once; beyond it a new watch is
    /// refused with 429.
    #[arg(long, default_value_t = control_plane::api::DEFAULT_MAX_WATCHES_PER_CLIENT)]
    max_watches_per_client: usize,
    /// How long to wait for the database at start.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    database_wait: Duration,
    /// Do not schedule pods in this process (another one does).
    #[arg(long)]
    no_scheduler: bool,
    /// A registry (host:port) the scheduler reads over plain HTTP when it
    /// looks up which runtime an image needs (as nodes are told with the
    /// same flag). Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure_registries: Vec<String>,
    /// Do not run controllers in this process (another one does).
    #[arg(long)]
    no_controllers: bool,
    /// How long a node stays NotReady before its pods are evicted.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pod_eviction_timeout: Duration,
    /// How long Events are kept after they last happened.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    event_ttl: Duration,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    control_plane::tls::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Init(args) => init(args).await,
            Command::Serve(args) => serve(*args).await,
            Command::RotateEncryptionKey(args) => rotate(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("control_plane=info,warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// The store for a command that runs once (`init`, a rotation): the
/// default pool, and half a minute for the database to answer.
async fn one_off_store(database_url: &str, key_file: &std::path::Path) -> Result<Store> {
    server::open_store(
        database_url,
        &PoolSettings::default(),
        Duration::from_secs(30),
        key_file,
    )
    .await
}

async fn init(args: InitArgs) -> Result<()> {
    let key_file = &args.keys.encryption_key_file;
    let created = Keyring::create_file(key_file)?;
    let store = one_off_store(&args.database_url, key_file).await?;
    let token = control_plane::initialize(&store).await?;
    println!("Cluster initialized.");
    if created {
        println!(
            "Encryption key file created: {} (keep it outside the database, backed up, and give it to every control plane with --encryption-key-file)",
            key_file.display()
        );
    }
    println!("Cluster-admin token (shown once; store it safely):\n  {token}");
    if let Some(dir) = args.tls_dir {
        let files = control_plane::tls::generate(&dir, &args.tls_sans)?;
        println!(
            "TLS: serve with --tls-cert {} --tls-key {}\n     clients trust {}",
            files.server_cert.display(),
            files.server_key.display(),
            files.ca_cert.display()
        );
    }
    println!(
        "Then: wasmctl config set-context NAME --server URL --token TOKEN [--certificate-authority CA]"
    );
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<()> {
    if args.leader_timeout < Duration::from_secs(1) {
        anyhow::bail!(
            "--leader-timeout: {:?} is too short; at least 1s",
            args.leader_timeout
        );
    }
    let config = ServerConfig {
        database_url: args.database_url,
        encryption_key_file: args.keys.encryption_key_file,
        listen: args.listen,
        tls: args.tls_cert.zip(args.tls_key),
        listener: args.listener,
        pool: PoolSettings {
            max_connections: args.max_connections,
            statement_timeout: args.db_statement_timeout,
            lock_timeout: args.db_lock_timeout,
            idle_in_transaction_timeout: args.db_idle_in_transaction_timeout,
            write_deadline: args.db_write_deadline,
            leader_timeout: args.leader_timeout,
            ..PoolSettings::default()
        },
        retain_changes: args.retain_changes,
        compaction_interval: args.compaction_interval,
        database_wait: args.database_wait,
        token_cache_ttl: args.token_cache_ttl,
        scheduler: !args.no_scheduler,
        scheduling: SchedulerConfig {
            insecure_registries: args.insecure_registries,
            ..SchedulerConfig::default()
        },
        controllers: !args.no_controllers,
        node_lifecycle: NodeLifecycleConfig {
            eviction_timeout: args.pod_eviction_timeout,
            ..NodeLifecycleConfig::default()
        },
        event_ttl: args.event_ttl,
        api: ApiConfig {
            bookmark_interval: args.bookmark_interval,
            max_watches_per_client: args.max_watches_per_client,
            ..ApiConfig::default()
        },
    };
    server::run(config, shutdown_signal()).await
}

/// Passes over the stored values until none is left under an older key,
/// at least two, twice the reload interval apart: a control plane that has
/// not reread the file yet may still write under the old key.
async fn rotate(args: RotateArgs) -> Result<()> {
    const PASSES: usize = 5;
    let key_file = &args.keys.encryption_key_file;
    // The keys must open what is stored before a new one is added.
    Keyring::load(key_file)?;
    let new_key = Keyring::add_primary(key_file)?;
    println!(
        "New encryption key {new_key} is first in {}.",
        key_file.display()
    );
    let store = one_off_store(&args.database_url, key_file).await?;
    let mut left = true;
    for pass in 1..=PASSES {
        let report = store.reseal(Reseal::NotUnderCurrentKey).await?;
        println!(
            "Pass {pass}: re-encrypted {} Secrets, {} change log entries, {} cluster secrets.",
            report.objects, report.changes, report.cluster_secrets
        );
        let in_use = store.keys_in_use().await?;
        left = in_use
            .iter()
            .any(|(key, _)| key.as_deref() != Some(&*new_key));
        // The first pass may end before a control plane has reread the
        // file and still writes under the old key: only a pass after a
        // reload interval has passed can say none is left.
        if pass > 1 && !left && report.raced == 0 {
            break;
        }
        tokio::time::sleep(server::KEY_RELOAD_INTERVAL * 2).await;
    }
    if left {
        anyhow::bail!(
            "values under older keys remain after {PASSES} passes: a control plane may be writing with a key file that lacks {new_key}; give it the new file and run this again"
        );
    }
    println!("Every stored value is encrypted under {new_key}.");
    if args.prune {
        let removed = Keyring::prune_file(key_file, std::slice::from_ref(&new_key))?;
        println!("Removed keys no value names: {}.", removed.join(", "));
    } else {
        println!(
            "Older keys stay in the file for reading; remove them with --prune once every control plane has reread it."
        );
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
