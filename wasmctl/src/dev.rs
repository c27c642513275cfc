//! `wasmctl dev`: a whole single-node cluster on this machine in one
//! process: a Postgres it manages (or `DATABASE_URL`), the control plane, a
//! node, and optionally a local registry; the context `dev` points at it.

use skiff_api::kinds::cluster::{NamespacePolicy, PodSecurityLevel};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use control_plane::embedded::{ControlPlane, Started};
use control_plane::local_postgres::{LocalPostgres, running_as_root};
use control_plane::server::ServerConfig;
use serde_json::json;
use sha2::Digest;
use skiff_api::Kind;
use skiff_client::{Client, ClientConfig};
use wasm_node::agent::{Agent, AgentConfig};

use crate::config::{self, Config, Context as ConfigContext};
use crate::{BadInput, cargo_project};

#[derive(clap::Args)]
pub struct DevArgs {
    /// Where the cluster keeps its state [default: $XDG_DATA_HOME/wasmctl/dev
    /// or ~/.local/share/wasmctl/dev].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Where the API listens.
    #[arg(long, default_value = "127.0.0.1:6443")]
    api: SocketAddr,
    /// Where the node's ingress serves pods.
    #[arg(long, default_value = "127.0.0.1:8080")]
    ingress: SocketAddr,
    /// Also run a local OCI registry (Debian's docker-registry) here. Not
    /// port 5000 by default: the docker-registry package's own service
    /// takes that one.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:5050")]
    registry: Option<SocketAddr>,
    /// Build (if a Cargo project), push and run this component as a pod once
    /// the cluster is up; needs --registry.
    #[arg(long, value_name = "PATH", requires = "registry")]
    deploy: Option<PathBuf>,
    /// Use this Postgres instead of managing one.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Start afresh: remove the cluster's state (its tokens, its managed
    /// Postgres, the node's and the registry's files) first.
    #[arg(long)]
    reset: bool,
}

/// What `wasmctl dev` keeps in its data directory; `--reset` removes these
/// and nothing else, so a data directory shared with other files is safe.
const STATE: [&str; 8] = [
    "admin-token",
    "tls",
    "node-token",
    "postgres",
    "postgres-location",
    "postgres-identity",
    "node",
    "registry",
];

pub fn run(args: DevArgs) -> Result<()> {
    let data = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => default_data_dir()?,
    };
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    // Held for the whole run: a second `wasmctl dev` on this directory (a
    // `--reset` above all) would stop and wipe the Postgres this one uses.
    let _lock = lock(&data)?;
    if args.reset {
        if args.database_url.is_some() {
            return Err(BadInput(
                "--reset clears the Postgres wasmctl dev manages; with --database-url (or DATABASE_URL) drop and recreate that database instead".into(),
            )
            .into());
        }
        reset(&data)?;
    }
    let postgres = match &args.database_url {
        Some(_) => None,
        None => Some(start_postgres(&data)?),
    };
    let database_url = match (&args.database_url, &postgres) {
        (Some(url), _) => url.clone(),
        (None, Some(pg)) => pg.url("skiff"),
        (None, None) => unreachable!("one of the two is set"),
    };
    let registry = match args.registry {
        Some(addr) => Some(Registry::start(&data.join("registry"), addr)?),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(serve(&args, &data, &database_url, registry.as_ref()));
    drop(registry);
    if let Some(pg) = postgres {
        let _ = pg.stop();
    }
    outcome
}

async fn serve(
    args: &DevArgs,
    data: &Path,
    database_url: &str,
    registry: Option<&Registry>,
) -> Result<()> {
    let listener = skiff_serve::bind(args.api)
        .await
        .map_err(|e| BadInput(format!("cannot listen on {} for the API: {e}", args.api)))?;
    control_plane::tls::install_crypto_provider();
    let api_url = format!("https://{}", listener.local_addr()?);
    // Served over TLS, as every Kubernetes client wants: kubectl sends no
    // token over plain HTTP. The cluster's own CA, made once and kept with
    // its state, signs the certificate; the context trusts only it.
    let tls = dev_tls(data, args.api)?;
    let ca_pem = std::fs::read(&tls.ca_cert)
        .with_context(|| format!("reading {}", tls.ca_cert.display()))?;
    let config = ServerConfig {
        database_url: database_url.to_owned(),
        // Beside the cluster's other state, outside the database.
        encryption_key_file: data.join("encryption.key"),
        listen: args.api,
        tls: Some((tls.server_cert.clone(), tls.server_key.clone())),
        listener: Default::default(),
        pool: Default::default(),
        retain_changes: 100_000,
        compaction_interval: Duration::from_secs(60),
        database_wait: Duration::from_secs(30),
        token_cache_ttl: Duration::from_secs(10),
        scheduler: true,
        scheduling: Default::default(),
        controllers: true,
        node_lifecycle: Default::default(),
        event_ttl: ServerConfig::DEFAULT_EVENT_TTL,
        api: Default::default(),
    };
    let Started {
        control_plane,
        admin_token,
    } = ControlPlane::start(listener, config, &dev_policy()).await?;
    let fresh = admin_token.is_some();
    let admin_token = admin_token_kept(data, admin_token, args.database_url.is_some())?;
    let node_token = node_token(&control_plane, data, fresh).await?;
    let client = |token: &str| {
        Client::new(&ClientConfig {
            server: api_url.clone(),
            token: token.to_owned(),
            ca_pem: Some(ca_pem.clone()),
            ..Default::default()
        })
    };
    let agent = Agent::start(AgentConfig {
        name: "dev".into(),
        client: client(&node_token)?,
        labels: BTreeMap::new(),
        taints: Vec::new(),
        memory: format!("{}Mi", (machine_memory() * 3 / 4) >> 20),
        instances: 1000,
        cpu: std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .to_string(),
        ingress: args.ingress,
        advertise: None,
        // A developer's cluster: pods and Services answer the machine's
        // own clients by name, wherever the ingress listens.
        serve_cluster_hosts: Some(true),
        listener: skiff_serve::Limits::default(),
        lease_interval: Duration::from_secs(2),
        lease_duration: Duration::from_secs(6),
        data_dir: data.join("node"),
        secrets_dir: None,
        pod_token_duration: Duration::from_secs(3600),
        blob_cache_bytes: 2 << 30,
        insecure_registries: Vec::new(),
        registry_limits: Default::default(),
        backoff_base: Duration::from_secs(2),
        backoff_cap: Duration::from_secs(60),
        grace: Duration::from_secs(10),
        hold: Default::default(),
        max_instance_memory: 4 << 30,
        max_concurrent_instances: 1000,
        namespace_instances: None,
        cpu_slots: None,
        // The local cluster runs Wasm pods; Linux images need a node of
        // their own with containerd.
        containerd_socket: None,
        snapshotter: "overlayfs".into(),
        linux_limits: Default::default(),
        pod_logs: Default::default(),
        // The local cluster serves no node metrics.
        pod_metrics: false,
    })
    .await
    .map_err(|e| BadInput(e.to_string()))?;
    write_context(&api_url, &admin_token, &tls.ca_cert)?;

    eprintln!("Skiff dev cluster is up (context \"dev\" is now current):");
    eprintln!("  API       {api_url}          try: wasmctl get nodes");
    eprintln!(
        "  Dashboard {api_url}/ui/       sign in with the token in {}",
        data.join("admin-token").display()
    );
    eprintln!(
        "  CA        {}    the cluster's certificate authority (a browser warns until it is trusted)",
        tls.ca_cert.display()
    );
    eprintln!("  kubectl   wasmctl config kubeconfig > ~/.kube/config");
    eprintln!(
        "  Ingress   http://{}    pods answer at http://NAME.NAMESPACE.pod.localhost:{}/",
        agent.endpoint,
        args.ingress.port()
    );
    if let Some(registry) = registry {
        eprintln!(
            "  Registry  {}          push: wasmctl push app.wasm {}/app:v1",
            registry.addr, registry.addr
        );
    }
    eprintln!("  Data      {}", data.display());
    // Listen before saying so: a stop sent right after the line must find
    // the handler, not the default that kills the process mid-start.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    eprintln!("Ctrl-C stops it.");

    if let (Some(path), Some(registry)) = (&args.deploy, registry) {
        let admin = client(&admin_token)?;
        match deploy(&admin, path, registry).await {
            Ok(name) => eprintln!(
                "\nDeployed {}: curl http://{name}.default.pod.localhost:{}/",
                path.display(),
                args.ingress.port()
            ),
            Err(e) => eprintln!("\ncould not deploy {}: {e:#}", path.display()),
        }
    }

    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("stopping");
    agent.shutdown().await;
    control_plane.shutdown().await
}

/// Builds (if needed), pushes and runs a component as pod; waits until it
/// runs and returns its name.
async fn deploy(client: &Client, path: &Path, registry: &Registry) -> Result<String> {
    let component_path = match cargo_project::manifest_of(path) {
        Some(manifest) => tokio::task::block_in_place(|| cargo_project::build(&manifest))?,
        None => path.to_owned(),
    };
    let name = component_path
        .file_stem()
        .map(|s| s.to_string_lossy().replace('_', "-").to_ascii_lowercase())
        .context("the component has no file name")?;
    let reference = format!("{}/{name}:dev", registry.addr);
    let bytes = std::fs::read(&component_path)
        .with_context(|| format!("reading {}", component_path.display()))?;
    skiff_oci::Registry::default()
        .push(
            &skiff_oci::parse_reference(&reference)?,
            bytes,
            &Default::default(),
            |_, _| {},
        )
        .await?;
    let pod = json!({
        "apiVersion": skiff_api::API_VERSION,
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"image": reference},
    });
    match client.create(Kind::Pod, Some("default"), &pod).await {
        Ok(_) => {}
        Err(e) if e.code() == Some(409) => {
            client
                .delete(Kind::Pod, Some("default"), &name, None)
                .await?;
            client.create(Kind::Pod, Some("default"), &pod).await?;
        }
        Err(e) => return Err(e.into()),
    }
    for _ in 0..300 {
        let pod = client.get(Kind::Pod, Some("default"), &name).await?;
        match pod["status"]["phase"].as_str() {
            Some("Running") => return Ok(name),
            Some("Failed") => bail!(
                "the pod failed: {}",
                pod["status"]["message"].as_str().unwrap_or("")
            ),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    bail!("the pod did not start within 30s; see `wasmctl describe pod {name}`")
}

/// The cluster-admin token, made at initialization and kept (0600) in the
/// data directory.
fn admin_token_kept(
    data: &Path,
    initialized_now: Option<String>,
    external: bool,
) -> Result<String> {
    let path = data.join("admin-token");
    if let Some(token) = initialized_now {
        write_private(&path, &token)?;
        return Ok(token);
    }
    match std::fs::read_to_string(&path) {
        Ok(token) => Ok(token.trim().to_owned()),
        Err(_) if external => Err(BadInput(format!(
            "the database is initialized but {} is missing, and its token is shown only once; use a new database",
            path.display()
        ))
        .into()),
        Err(_) => Err(BadInput(format!(
            "the cluster is initialized but {} is missing, and its token is shown only once; start afresh with `wasmctl dev --reset`",
            path.display()
        ))
        .into()),
    }
}

/// The node's token, kept beside the admin token; a new cluster gets a new
/// one, since a kept one belonged to the cluster before.
async fn node_token(control_plane: &ControlPlane, data: &Path, fresh: bool) -> Result<String> {
    let path = data.join("node-token");
    if !fresh && let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_owned());
    }
    let token = control_plane.node_token("dev", "wasmctl dev node").await?;
    write_private(&path, &token)?;
    Ok(token)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// The dev cluster's CA and server certificate, made on its first start
/// for the address the API listens on (and localhost), kept after.
fn dev_tls(data: &Path, api: SocketAddr) -> Result<control_plane::tls::Generated> {
    let dir = data.join("tls");
    let kept = control_plane::tls::Generated {
        ca_cert: dir.join("ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    };
    if kept.ca_cert.exists() && kept.server_cert.exists() && kept.server_key.exists() {
        return Ok(kept);
    }
    let mut names = vec![api.ip().to_string()];
    if api.ip().is_unspecified() {
        // Bound to every address: the machine's name reaches it too.
        if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
            names.push(host.trim().to_owned());
        }
    }
    control_plane::tls::generate(&dir, &names)
}

fn write_context(server: &str, token: &str, ca: &Path) -> Result<()> {
    let path = config::path(None)?;
    let mut config = Config::load(&path)?;
    config.contexts.retain(|c| c.name != "dev");
    config.contexts.push(ConfigContext {
        name: "dev".into(),
        server: server.to_owned(),
        token: token.to_owned(),
        namespace: "default".into(),
        certificate_authority: Some(ca.to_owned()),
        insecure_skip_tls_verify: false,
    });
    config.current_context = "dev".into();
    config.save(&path)
}

/// Initializes (once) and starts the managed Postgres.
fn start_postgres(data: &Path) -> Result<LocalPostgres> {
    let pg_data = match outside_postgres(data)? {
        Some(outside) => {
            claim_outside(data, &outside)?;
            // Said in the data directory, for whoever looks for it.
            std::fs::write(
                data.join("postgres-location"),
                format!("{}\n", outside.join("postgres").display()),
            )?;
            outside.join("postgres")
        }
        None => data.join("postgres"),
    };
    LocalPostgres::init(&pg_data)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let postgres = LocalPostgres::start(&pg_data, port)?;
    postgres.ensure_database("skiff")?;
    Ok(postgres)
}

/// As root the managed Postgres runs as the `postgres` user, which cannot
/// enter root's home, so its cluster lives under /var/lib/wasmctl-dev
/// instead, in a directory named after the data directory so that every
/// data directory keeps its own. `None` when it lives in the data directory.
fn outside_postgres(data: &Path) -> Result<Option<PathBuf>> {
    if !running_as_root() {
        return Ok(None);
    }
    let path = data
        .canonicalize()
        .with_context(|| format!("reading {}", data.display()))?;
    let digest = sha2::Sha256::digest(path.as_os_str().as_encoded_bytes());
    let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Ok(Some(Path::new("/var/lib/wasmctl-dev").join(name)))
}

/// Ties the outside directory to this data directory by an identity both
/// hold. An outside cluster whose identity the data directory does not hold
/// was left behind by a data directory since removed (the same path names
/// the same outside directory): it is stopped and wiped, so the data
/// directory alone says whether a cluster exists.
fn claim_outside(data: &Path, outside: &Path) -> Result<()> {
    // Only a file that is not there is missing: any other failure to read
    // one must not be taken for a stale cluster and wipe it.
    let read = |path: &Path| match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    };
    let ours = data.join("postgres-identity");
    let theirs = outside.join("identity");
    let identity = match read(&ours)? {
        Some(identity) => identity,
        None => {
            let identity = new_identity(data);
            std::fs::write(&ours, format!("{identity}\n"))?;
            identity
        }
    };
    match read(&theirs)? {
        Some(held) if held == identity => return Ok(()),
        // Another data directory's cluster, left when it was removed.
        Some(_) => {
            remove_postgres(&outside.join("postgres"))?;
            remove(outside)?;
        }
        // Not claimed yet: a cluster from before identities, or one whose
        // claim a crash interrupted, is adopted, not wiped.
        None => {}
    }
    std::fs::create_dir_all(outside).with_context(|| format!("creating {}", outside.display()))?;
    std::fs::write(&theirs, format!("{identity}\n"))?;
    Ok(())
}

fn new_identity(data: &Path) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut hasher = sha2::Sha256::new();
    hasher.update(data.as_os_str().as_encoded_bytes());
    hasher.update(now.as_nanos().to_le_bytes());
    hasher.update(std::process::id().to_le_bytes());
    hasher.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Stops a server still running on the cluster in `pg_data` (one left by a
/// `wasmctl dev` that was killed), then removes the cluster.
fn remove_postgres(pg_data: &Path) -> Result<()> {
    let server = LocalPostgres {
        data: pg_data.to_owned(),
        port: 0,
    };
    // Only a cluster that is a directory of its own here is stopped: a
    // symlink would have pg_ctl stop whatever it points at.
    let own = std::fs::symlink_metadata(pg_data).is_ok_and(|m| m.is_dir());
    if own && pg_data.join("postmaster.pid").exists() && server.running() {
        server.stop()?;
    }
    remove(pg_data)
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    }
    .with_context(|| format!("removing {}", path.display()))
}

/// `--reset`: the managed Postgres (wherever it lives) and everything else
/// `wasmctl dev` keeps in the data directory go.
fn reset(data: &Path) -> Result<()> {
    // A directory holding none of what `wasmctl dev` writes first is not
    // one of its clusters (or a fresh one): its `node` or `registry` are
    // someone else's.
    let ours = [
        "admin-token",
        "node-token",
        "postgres-identity",
        "postgres-location",
        "postgres/PG_VERSION",
    ];
    if !ours.iter().any(|file| data.join(file).exists()) {
        return Ok(());
    }
    if let Some(outside) = outside_postgres(data)? {
        remove_postgres(&outside.join("postgres"))?;
        remove(&outside)?;
    }
    remove_postgres(&data.join("postgres"))?;
    for entry in STATE {
        remove(&data.join(entry))?;
    }
    Ok(())
}

/// An exclusive lock on the data directory for as long as the returned file
/// lives; refused while another `wasmctl dev` holds it.
fn lock(data: &Path) -> Result<std::fs::File> {
    let path = data.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(BadInput(format!(
            "another wasmctl dev is running with the data directory {}; stop it first",
            data.display()
        ))
        .into()),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(anyhow::Error::new(e).context(format!("locking {}", path.display())))
        }
    }
}

/// The local registry process; stopped when dropped.
struct Registry {
    addr: SocketAddr,
    child: Child,
}

impl Registry {
    fn start(dir: &Path, addr: SocketAddr) -> Result<Registry> {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Err(BadInput(format!(
                "--registry {addr}: something already listens there; choose another address"
            ))
            .into());
        }
        std::fs::create_dir_all(dir)?;
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp:\n  addr: {addr}\n",
                dir.join("data").display()
            ),
        )?;
        // Its log goes to a file: a pipe nobody drains would block it.
        let log_path = dir.join("registry.log");
        let log = std::fs::File::create(&log_path)?;
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                BadInput(format!(
                    "cannot start docker-registry ({e}); install it with apt-get install docker-registry"
                ))
            })?;
        // Waiting for the port is the only readiness signal the registry gives.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if std::net::TcpStream::connect(addr).is_ok() {
                return Ok(Registry { addr, child });
            }
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let last = log.lines().last().unwrap_or("").trim().to_owned();
                bail!("docker-registry exited ({status}) at start: {last}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("the registry did not start listening on {addr} within 10s")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn default_data_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return Ok(PathBuf::from(dir).join("wasmctl/dev"));
    }
    let home = std::env::var_os("HOME").context("no HOME; give --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/wasmctl/dev"))
}

fn machine_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(4 << 30, |kib| kib << 10)
}

/// The policy of a dev cluster's `default` namespace: the machine is the
/// developer's own, so its pods may be anything (Linux images through
/// containerd, host paths) and may call what runs on loopback. Namespaces
/// created afterwards get the closed defaults, as in any cluster.
fn dev_policy() -> NamespacePolicy {
    NamespacePolicy {
        pod_security: PodSecurityLevel::Privileged,
        egress: ["*", "127.0.0.1", "[::1]", "localhost"]
            .map(str::to_owned)
            .to_vec(),
        route_hosts: Vec::new(),
        max_priority: 0,
        pod_defaults: Default::default(),
    }
}
