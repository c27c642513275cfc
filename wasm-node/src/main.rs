//! `wasm-node join`: make this machine a node of a Skiff cluster.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use skiff_api::kinds::cluster::Taint;
use skiff_api::kinds::pod::TaintEffect;
use skiff_api::quantity::{parse_bytes, parse_duration};
use skiff_client::{Client, ClientConfig};
use wasm_node::agent::{Agent, AgentConfig};
use wasm_node::runtimes::linux::LinuxLimits;

#[derive(Parser)]
#[command(name = "wasm-node", version, about = "The Skiff node agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register this machine as a node and run the pods bound to it.
    // A flag given twice takes its last value, as a wrapper script that
    // appends its own flags expects.
    #[command(args_override_self = true)]
    Join(JoinArgs),
}

#[derive(clap::Args)]
struct JoinArgs {
    /// The control plane, e.g. https://cp.example.com:6443.
    #[arg(long, env = "SKIFF_SERVER")]
    server: String,
    /// A node token (`wasmctl create token --node NAME`).
    #[arg(long, env = "SKIFF_TOKEN", hide_env_values = true)]
    token: String,
    /// PEM file of the cluster's CA.
    #[arg(long, value_name = "FILE")]
    certificate_authority: Option<PathBuf>,
    /// Node name [default: the host name]; must match the token's node.
    #[arg(long)]
    name: Option<String>,
    /// Label of the node, KEY=VALUE. Repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Taint of the node, KEY[=VALUE]:NoSchedule|PreferNoSchedule|NoExecute.
    /// Repeatable.
    #[arg(long = "taint", value_name = "KEY[=VALUE]:EFFECT", value_parser = parse_taint)]
    taints: Vec<Taint>,
    /// Memory offered to instances [default: three quarters of this
    /// machine's].
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// Instance slots offered to pods.
    #[arg(long, default_value_t = 1000)]
    instances: u32,
    /// CPU offered, in cores or millicores [default: this machine's cores].
    #[arg(long)]
    cpu: Option<String>,
    /// Where the ingress serves pods.
    #[arg(long, default_value = "0.0.0.0:8080")]
    ingress: SocketAddr,
    /// Serve the node's metrics (Prometheus' text format, `GET /metrics`)
    /// on this address, e.g. 127.0.0.1:9464 [default: not served]. The
    /// listener asks for no token: bind it where only the scraper reaches.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Address others reach the ingress at [default: the bound address;
    /// when that is unspecified, such as 0.0.0.0, this machine's address
    /// toward the control plane, with the bound port].
    #[arg(long)]
    advertise: Option<String>,
    /// Serve NAME.NAMESPACE.pod and .svc hosts to outside traffic too, not
    /// only to other nodes and this node's pods [default: true when
    /// --ingress is a loopback address, false otherwise]. Outside traffic
    /// reaches pods through Routes either way.
    #[arg(long, value_name = "true|false")]
    serve_cluster_hosts: Option<bool>,
    /// How often the lease is renewed.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    lease_interval: Duration,
    /// How long a renewal keeps the node alive.
    #[arg(long, default_value = "6s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// Where components, compiled code and pod files are kept.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Where pods' Secret volumes are written (owner-only, emptied at
    /// start); by default a directory on /dev/shm, so they stay in memory.
    #[arg(long, value_name = "DIR")]
    secrets_dir: Option<PathBuf>,
    /// How long the service account token of a pod that asks for one
    /// lives (10s to 24h); the node asks for the next before it ends.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pod_token_duration: Duration,
    /// Size limit of the component cache.
    #[arg(long, default_value = "2Gi", value_parser = parse_bytes)]
    cache_size: u64,
    /// A registry (host:port) to reach over plain HTTP. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure_registries: Vec<String>,
    /// Largest a Linux image's layers may unpack to, all together (what is
    /// downloaded is held to the least of this and 2Gi). A pod of a larger
    /// image fails with InvalidImage.
    #[arg(long, default_value = "8Gi", value_parser = parse_bytes)]
    max_image_size: u64,
    /// Most layers a Linux image may have.
    #[arg(long, default_value_t = skiff_oci::MAX_LINUX_LAYERS as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_layer_count: u64,
    /// Longest one registry request (a manifest, a blob) may take; a
    /// registry silent for 30s in the middle of a response fails sooner.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    registry_timeout: Duration,
    /// First crash-loop (and image pull) backoff; it doubles up to
    /// --backoff-max.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    backoff: Duration,
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    backoff_max: Duration,
    /// How long a stopping pod's requests in flight may take.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    grace: Duration,
    /// Requests the ingress holds for one Service at zero while its first
    /// pod starts; beyond, 503 with Retry-After.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    hold_requests: u32,
    /// How long a request held for a Service at zero waits for a pod.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    hold_timeout: Duration,
    #[command(flatten)]
    listener: skiff_serve::Limits,
    /// Largest memory limit a pod may ask for.
    #[arg(long, default_value = "4Gi", value_parser = parse_bytes)]
    max_instance_memory: u64,
    /// Instances that may run at once on this node, over all pods.
    #[arg(long, default_value_t = 1000)]
    max_concurrency: u32,
    /// Instances of one namespace's pods that may run at once on this node
    /// [default: half of --max-concurrency].
    #[arg(long, value_name = "N")]
    max_concurrency_per_namespace: Option<u32>,
    /// Guests running longer than a tick that may hold a core at once;
    /// they take turns, round-robin between namespaces [default: one less
    /// than this machine's cores, at least one: a core stays free for
    /// short requests, whoever spins].
    #[arg(long, value_name = "N")]
    guest_cpu_slots: Option<usize>,
    /// containerd's socket, for pods of ordinary Linux images. Without a
    /// containerd there, the node runs Wasm pods only.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    containerd_socket: PathBuf,
    /// The containerd snapshotter Linux images are unpacked with.
    #[arg(long, default_value = "overlayfs")]
    snapshotter: String,
    /// Run Wasm pods only, even if containerd is there.
    #[arg(long)]
    no_containerd: bool,
    /// Processes and threads a Linux pod may have at once.
    #[arg(long, default_value_t = wasm_node::runtimes::linux::containerd::DEFAULT_PIDS_LIMIT,
          value_parser = clap::value_parser!(u32).range(1..))]
    pod_max_pids: u32,
    /// The size a pod's log file (`DATA_DIR/logs/NS_NAME_UID/current.log`,
    /// Wasm and Linux pods alike) is rotated at; one rotated file is kept
    /// for the current run and for the previous one, so a pod's logs take
    /// at most four times this.
    #[arg(long, alias = "container-log-max-size", default_value = "10Mi",
          value_parser = parse_bytes)]
    pod_log_max_size: u64,
    /// Bytes of output per second a pod may log, on average; what a pod
    /// writes beyond it (and its burst) is dropped, and the drop noted in
    /// its log.
    #[arg(long, default_value = "1Mi", value_parser = parse_bytes)]
    pod_log_rate: u64,
    /// Bytes a pod may log at once above its rate.
    #[arg(long, default_value = "4Mi", value_parser = parse_bytes)]
    pod_log_burst: u64,
    /// Keep what pods write to stdout and stderr, for `wasmctl logs`.
    /// With `false`, their output is discarded as it is written and
    /// nothing of it reaches this machine's disk; asking for a pod's logs
    /// then says so.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    capture_pod_output: bool,
}

fn parse_label(input: &str) -> Result<(String, String), String> {
    let (key, value) = input
        .split_once('=')
        .ok_or_else(|| format!("`{input}` is not KEY=VALUE"))?;
    skiff_api::validate::label_key(key).map_err(|e| format!("`{input}`: {e}"))?;
    skiff_api::validate::label_value(value).map_err(|e| format!("`{input}`: {e}"))?;
    Ok((key.to_owned(), value.to_owned()))
}

fn parse_taint(input: &str) -> Result<Taint, String> {
    let (pair, effect) = input
        .rsplit_once(':')
        .ok_or_else(|| format!("`{input}` is not KEY[=VALUE]:EFFECT"))?;
    let effect = match effect {
        "NoSchedule" => TaintEffect::NoSchedule,
        "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
        "NoExecute" => TaintEffect::NoExecute,
        other => {
            return Err(format!(
                "`{input}`: effect `{other}` is not NoSchedule, PreferNoSchedule or NoExecute"
            ));
        }
    };
    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
    skiff_api::validate::label_key(key).map_err(|e| format!("`{input}`: {e}"))?;
    Ok(Taint {
        key: key.to_owned(),
        value: value.to_owned(),
        effect,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("wasm_node=info,warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let Command::Join(args) = cli.command;
    // One worker more than cores: guests that run long are given fewer
    // turns than there are workers (see skiff_wasm::share), and the spare
    // workers keep serving short requests while the turns are all taken.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores + 1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(join(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn join(args: JoinArgs) -> Result<()> {
    let name = match args.name {
        Some(name) => name,
        None => hostname()?,
    };
    skiff_api::validate::dns_label(&name)
        .map_err(|e| anyhow::anyhow!("node name `{name}`: {e}"))?;
    let ca_pem = match &args.certificate_authority {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    let client = Client::new(&ClientConfig {
        server: args.server.clone(),
        token: args.token,
        ca_pem,
        insecure_skip_tls_verify: false,
        timeout: Some(Duration::from_secs(10)),
    })?;
    let memory = match args.memory {
        Some(memory) => {
            parse_bytes(&memory)?;
            memory
        }
        None => format!("{}Mi", (machine_memory()? * 3 / 4) >> 20),
    };
    let cpu = args.cpu.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .to_string()
    });
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => default_data_dir()?,
    };
    let labels: BTreeMap<String, String> = args.labels.into_iter().collect();
    if args.lease_duration <= args.lease_interval {
        bail!("--lease-duration must be longer than --lease-interval");
    }
    // Bound before the node joins, so a taken address fails the start.
    let metrics_listener = match args.metrics_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("--metrics-listen {address}: cannot listen"))?,
        ),
        None => None,
    };
    let agent = Agent::start(AgentConfig {
        name: name.clone(),
        client,
        labels,
        taints: args.taints,
        memory,
        instances: args.instances,
        cpu,
        ingress: args.ingress,
        advertise: args.advertise,
        serve_cluster_hosts: args.serve_cluster_hosts,
        listener: args.listener.clone(),
        lease_interval: args.lease_interval,
        lease_duration: args.lease_duration,
        data_dir,
        secrets_dir: args.secrets_dir,
        pod_token_duration: args.pod_token_duration,
        blob_cache_bytes: args.cache_size,
        insecure_registries: args.insecure_registries,
        registry_limits: skiff_oci::Limits {
            max_unpacked_bytes: args.max_image_size,
            max_image_bytes: args.max_image_size.min(skiff_oci::MAX_LINUX_IMAGE_BYTES),
            max_layers: args.max_layer_count as usize,
            request_timeout: args.registry_timeout,
            ..Default::default()
        },
        backoff_base: args.backoff,
        backoff_cap: args.backoff_max,
        grace: args.grace,
        hold: wasm_node::ingress::HoldConfig {
            max_held: args.hold_requests as usize,
            max_wait: args.hold_timeout,
        },
        max_instance_memory: args.max_instance_memory,
        max_concurrent_instances: args.max_concurrency,
        namespace_instances: args.max_concurrency_per_namespace,
        cpu_slots: Some(args.guest_cpu_slots.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            cores.saturating_sub(1).max(1)
        })),
        containerd_socket: (!args.no_containerd).then(|| args.containerd_socket.clone()),
        snapshotter: args.snapshotter.clone(),
        linux_limits: LinuxLimits {
            pids: args.pod_max_pids,
        },
        pod_logs: wasm_node::logs::LogConfig {
            max_file_bytes: args.pod_log_max_size,
            rate: args.pod_log_rate,
            burst: args.pod_log_burst,
            capture: args.capture_pod_output,
        },
        // Series nobody can read are not kept.
        pod_metrics: args.metrics_listen.is_some(),
    })
    .await?;
    eprintln!(
        "node {name} joined {}; ingress on {}",
        args.server, agent.endpoint
    );
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics = metrics_listener.map(|listener| {
        if let Ok(address) = listener.local_addr() {
            eprintln!("metrics on http://{address}/metrics");
        }
        tokio::spawn(serve_metrics(
            listener,
            agent.metrics(),
            args.listener.clone(),
            async move {
                let _ = metrics_stopped.await;
            },
        ))
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("stopping pods");
    agent.shutdown().await;
    let _ = stop_metrics.send(());
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    Ok(())
}

/// Serves `GET /metrics` on `listener`, on skiff-serve like every listener
/// (its deadlines and connection cap), until `shutdown`.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: std::sync::Arc<wasm_node::metrics::Metrics>,
    limits: skiff_serve::Limits,
    shutdown: impl Future<Output = ()>,
) {
    let options = skiff_serve::Options {
        limits,
        ..skiff_serve::Options::http1(Duration::from_secs(1))
    };
    skiff_serve::serve(
        listener,
        options,
        move |request| {
            let metrics = metrics.clone();
            async move {
                let (status, content_type, body) = match (request.method(), request.uri().path()) {
                    (&http::Method::GET, "/metrics") => (
                        http::StatusCode::OK,
                        wasm_node::metrics::CONTENT_TYPE,
                        metrics.encode(),
                    ),
                    (_, "/metrics") => (
                        http::StatusCode::METHOD_NOT_ALLOWED,
                        "text/plain",
                        "only GET is allowed on /metrics\n".to_owned(),
                    ),
                    _ => (
                        http::StatusCode::NOT_FOUND,
                        "text/plain",
                        "this listener serves /metrics only\n".to_owned(),
                    ),
                };
                http::Response::builder()
                    .status(status)
                    .header(http::header::CONTENT_TYPE, content_type)
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .expect("a response of known parts")
            }
        },
        shutdown,
    )
    .await
}

fn hostname() -> Result<String> {
    let name =
        std::fs::read_to_string("/etc/hostname").context("reading /etc/hostname; give --name")?;
    Ok(name.trim().to_ascii_lowercase())
}

fn machine_memory() -> Result<u64> {
    let meminfo =
        std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo; give --memory")?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no MemTotal in /proc/meminfo; give --memory")?;
    Ok(kib << 10)
}

fn default_data_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return Ok(PathBuf::from(dir).join("wasm-node"));
    }
    let home = std::env::var_os("HOME").context("no HOME; give --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/wasm-node"))
}
