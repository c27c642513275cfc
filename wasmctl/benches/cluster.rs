//! Cluster benchmarks with real processes: a Postgres, a control plane with
//! its scheduler, `wasm-node` processes and a docker-registry, all release
//! builds on this machine.
//!
//! 1. Deploy-to-serving, artifact cached on the node: from the API create
//!    of a pod (the request `wasmctl apply` sends) to its first 200 through
//!    the node's ingress, one pod at a time. Baseline in the same run:
//!    `wasmtime serve` and `wasmctl run` of the same component, from process
//!    start to first 200, compilation cached.
//! 2. The same with a registry pull: every pod a different 2 MiB component
//!    (hello-http padded with a custom section), so each is pulled,
//!    verified and compiled. Baseline: `wasmtime serve` of such a component
//!    from a local file with its compilation cache off.
//! 3. Density: as many hello-http pods on one node as asked; node RSS per
//!    idle pod, and whether every pod answers. Baseline: the RSS of one idle
//!    `wasmtime serve`, the conventional cost of hosting one more app.
//!
//! `cargo bench -p wasmctl --bench cluster [-- PODS [DENSITY]]` (defaults
//! 100 and 5,000). Needs `docker-registry` and `wasmtime` on PATH (the
//! bench/cluster script installs them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use skiff_api::Kind;
use skiff_client::ListOptions;
use testkit::{Node, free_port};

mod common;
use common::*;

/// Baseline processes started per figure.
const BASELINE_RUNS: usize = 20;
/// Padding that makes a component 2 MiB.
const PADDED_SIZE: usize = 2 << 20;
/// Memory each deploy pod reserves: the default.
const DEPLOY_POD_MEMORY_MIB: usize = 128;
/// Memory each density pod reserves (hello-http needs about 1.1 MiB).
const DENSE_POD_MEMORY_MIB: usize = 2;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let pods = args.next().unwrap_or(100);
    let density = args.next().unwrap_or(5_000);
    println!(
        "cluster: real control plane, nodes, registry and Postgres; release builds; {}",
        machine()
    );
    let bench = Bench::start(pods);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        bench.deploy_cached(pods).await;
        bench.deploy_pulled(pods).await;
        bench.density(density).await;
    });
}

struct Bench {
    cluster: Cluster,
    node_binary: PathBuf,
    fast: Node,
}

impl Bench {
    /// A cluster whose `fast` node has room for `pods` pods of each deploy
    /// figure and the warm-up one.
    fn start(pods: usize) -> Bench {
        let node_binary = testkit::release_binary("wasm-node");
        let cluster = Cluster::start("skiff-bench");
        let memory = format!("{}Mi", (2 * pods + 1) * DEPLOY_POD_MEMORY_MIB);
        let fast = cluster.ctl.join(
            &node_binary,
            &cluster.plane.url,
            "fast",
            &["--memory", &memory, "--instances", "10000"],
        );
        Bench {
            cluster,
            node_binary,
            fast,
        }
    }

    async fn create_pod(&self, name: &str, image: &str, node: &str, memory: &str) {
        let pod = json!({
            "apiVersion": skiff_api::API_VERSION, "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "image": image,
                "resources": {"memory": memory},
                "nodeSelector": {"bench": node},
            },
        });
        self.cluster
            .api
            .create(Kind::Pod, Some("default"), &pod)
            .await
            .expect("create pod");
    }

    /// Seconds from the create of pod `name` to its first 200.
    async fn deploy(&self, name: &str, image: &str) -> f64 {
        let started = Instant::now();
        let memory = format!("{DEPLOY_POD_MEMORY_MIB}Mi");
        self.create_pod(name, image, "fast", &memory).await;
        let host = format!("{name}.default.pod");
        wait_for_200(self.fast.ingress, &host, Duration::from_secs(60));
        started.elapsed().as_secs_f64()
    }

    async fn deploy_cached(&self, pods: usize) {
        // The first pod pulls and compiles; the rest find it cached.
        self.deploy("warm", &self.cluster.hello_ref).await;
        let mut took = Vec::with_capacity(pods);
        for i in 0..pods {
            took.push(
                self.deploy(&format!("cached-{i}"), &self.cluster.hello_ref)
                    .await,
            );
        }
        let wasmtime = start_to_first_200(BASELINE_RUNS, |port| {
            let mut command = Command::new("wasmtime");
            command
                .args(["serve", "-Scli", "-C", "cache=y", "--addr"])
                .arg(format!("127.0.0.1:{port}"))
                .arg(&self.cluster.hello);
            command
        });
        let run = start_to_first_200(BASELINE_RUNS, |port| {
            let mut command = Command::new(&self.cluster.ctl.binary);
            command
                .args(["run", path_str(&self.cluster.hello), "--listen"])
                .arg(format!("127.0.0.1:{port}"))
                .env("WASMCTL_CACHE_DIR", &self.cluster.ctl.cache)
                .env("RUST_LOG", "warn");
            command
        });
        println!("deploy to serving, artifact cached on the node ({pods} pods, one at a time):");
        report("pod: API create -> first 200", &took);
        report("wasmtime serve: start -> first 200", &wasmtime);
        report("wasmctl run: start -> first 200", &run);
        println!(
            "  pod p50 / wasmtime serve p50: {:.2}x   (target p99 < 250 ms; Kubernetes' pod-startup SLO: 5 s p99 without pulls)",
            percentile(&took, 50) / percentile(&wasmtime, 50)
        );
    }

    async fn deploy_pulled(&self, pods: usize) {
        let hello = std::fs::read(&self.cluster.hello).expect("hello-http");
        let files: Vec<PathBuf> = (0..pods)
            .map(|i| {
                let path = self.cluster.work.join(format!("padded-{i}.wasm"));
                std::fs::write(&path, padded(&hello, i as u64)).expect("padded component");
                path
            })
            .collect();
        // Published beforehand, a few at a time: pushing is not deploying.
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    while let Some(file) = files.get(next.fetch_add(1, Ordering::SeqCst)) {
                        let i = file_index(file);
                        let reference = format!("{}/padded:v{i}", self.cluster.registry.addr);
                        self.cluster.ctl.run(&["push", path_str(file), &reference]);
                    }
                });
            }
        });
        let mut took = Vec::with_capacity(pods);
        for i in 0..pods {
            let image = format!("{}/padded:v{i}", self.cluster.registry.addr);
            took.push(self.deploy(&format!("pulled-{i}"), &image).await);
        }
        let cold = start_to_first_200(BASELINE_RUNS, |port| {
            let mut command = Command::new("wasmtime");
            command
                .args(["serve", "-Scli", "-C", "cache=n", "--addr"])
                .arg(format!("127.0.0.1:{port}"))
                .arg(&files[0]);
            command
        });
        println!(
            "deploy to serving with a registry pull ({pods} pods, each a different {} MiB component):",
            PADDED_SIZE >> 20
        );
        report("pod: API create -> pull -> first 200", &took);
        report(
            "wasmtime serve, local file, no cache: start -> first 200",
            &cold,
        );
        println!(
            "  pod p50 / wasmtime serve p50: {:.2}x   (target p99 < 1 s)",
            percentile(&took, 50) / percentile(&cold, 50)
        );
    }

    async fn density(&self, pods: usize) {
        let memory = format!("{}Mi", (pods + 16) * DENSE_POD_MEMORY_MIB);
        let instances = (pods + 16).to_string();
        let dense = self.cluster.ctl.join(
            &self.node_binary,
            &self.cluster.plane.url,
            "dense",
            &["--memory", &memory, "--instances", &instances],
        );
        let pod_memory = format!("{DENSE_POD_MEMORY_MIB}Mi");
        self.create_pod("dense-warm", &self.cluster.hello_ref, "dense", &pod_memory)
            .await;
        wait_for_200(
            dense.ingress,
            "dense-warm.default.pod",
            Duration::from_secs(60),
        );
        let pid = dense.pid().expect("dense node runs");
        settle();
        let one = rss_mib(pid);

        let started = Instant::now();
        let permits = Arc::new(tokio::sync::Semaphore::new(32));
        let mut creates = tokio::task::JoinSet::new();
        for i in 0..pods {
            let permit = permits.clone().acquire_owned().await.expect("permit");
            let (api, image, memory) = (
                self.cluster.api.clone(),
                self.cluster.hello_ref.clone(),
                pod_memory.clone(),
            );
            creates.spawn(async move {
                let pod = json!({
                    "apiVersion": skiff_api::API_VERSION, "kind": "Pod",
                    "metadata": {"name": format!("dense-{i}")},
                    "spec": {"image": image, "resources": {"memory": memory}, "nodeSelector": {"bench": "dense"}},
                });
                api.create(Kind::Pod, Some("default"), &pod)
                    .await
                    .expect("create pod");
                drop(permit);
            });
        }
        while creates.join_next().await.is_some() {}
        let running = self.wait_running("dense", pods + 1).await;
        let all_running = started.elapsed().as_secs_f64();
        settle();
        let idle = rss_mib(pid);

        let hosts: Vec<String> = (0..pods)
            .map(|i| format!("dense-{i}.default.pod"))
            .collect();
        let answered = answer_all(dense.ingress, &hosts);
        let after = rss_mib(pid);
        let wasmtime = idle_rss_of_wasmtime_serve(&self.cluster.hello);
        let per_pod = (idle - one) / pods as f64;
        println!("density: hello-http pods on one node ({DENSE_POD_MEMORY_MIB}Mi reserved each):");
        println!(
            "  pods Running on the node: {running} (all Running {all_running:.1} s after the first create)"
        );
        println!(
            "  node RSS: {one:.0} MiB with 1 pod, {idle:.0} MiB with {} idle, {after:.0} MiB after each answered once",
            pods + 1
        );
        println!(
            "  RSS per idle pod: {:.1} KiB; one idle wasmtime serve: {wasmtime:.1} MiB ({:.0}x a pod)",
            per_pod * 1024.0,
            wasmtime / per_pod.max(f64::EPSILON)
        );
        println!(
            "  every pod answers: {answered}/{pods} answered 200   (target 5,000+ pods; Kubernetes' default: 110 per node)"
        );
    }

    /// Waits until `expected` pods on node `name` are Running; returns how
    /// many are.
    async fn wait_running(&self, node: &str, expected: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let list = self
                .cluster
                .api
                .list(
                    Kind::Pod,
                    Some("default"),
                    &ListOptions {
                        field_selector: Some(format!("spec.nodeName={node}")),
                        ..Default::default()
                    },
                )
                .await
                .expect("list pods");
            let running = list
                .items
                .iter()
                .filter(|p| p["status"]["phase"] == "Running")
                .count();
            if running >= expected || Instant::now() > deadline {
                return running;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn file_index(path: &Path) -> usize {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.strip_prefix("padded-"))
        .and_then(|s| s.parse().ok())
        .expect("a padded component")
}

/// `component` with a custom section of pseudo-random bytes appended, up to
/// [`PADDED_SIZE`]: a different, incompressible artifact per `seed`.
fn padded(component: &[u8], seed: u64) -> Vec<u8> {
    let name = b"skiff-bench-padding";
    let payload_len = PADDED_SIZE.saturating_sub(component.len() + name.len() + 16);
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut payload = Vec::with_capacity(payload_len);
    while payload.len() < payload_len {
        // xorshift64: cheap and good enough to defeat any compression.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        payload.extend_from_slice(&state.to_le_bytes());
    }
    payload.truncate(payload_len);
    let mut section = leb128(name.len());
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut out = component.to_vec();
    out.push(0); // custom section id
    out.extend(leb128(section.len()));
    out.extend(section);
    out
}

fn leb128(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Asks every host once, over four kept-alive connections; returns how
/// many answered 200.
fn answer_all(addr: SocketAddr, hosts: &[String]) -> usize {
    let next = AtomicUsize::new(0);
    let ok = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let mut stream = connect(addr).expect("ingress");
                while let Some(host) = hosts.get(next.fetch_add(1, Ordering::SeqCst)) {
                    // A broken connection is retried once on a new one.
                    let status = get(&mut stream, host).or_else(|_| {
                        stream = connect(addr)?;
                        get(&mut stream, host)
                    });
                    match status {
                        Ok(200) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(status) => eprintln!("{host}: {status}"),
                        Err(e) => {
                            eprintln!("{host}: {e}");
                            stream = connect(addr).expect("ingress");
                        }
                    }
                }
            });
        }
    });
    ok.into_inner()
}

fn idle_rss_of_wasmtime_serve(component: &Path) -> f64 {
    let port = free_port();
    let mut command = Command::new("wasmtime");
    command
        .args(["serve", "-Scli", "-C", "cache=y", "--addr"])
        .arg(format!("127.0.0.1:{port}"))
        .arg(component);
    let server = spawn_server(command);
    wait_for_200(
        SocketAddr::from(([127, 0, 0, 1], port)),
        "localhost",
        Duration::from_secs(60),
    );
    settle();
    rss_mib(server.0.id())
}

/// Lets a process finish what a burst of work left behind before its
/// memory is read.
fn settle() {
    std::thread::sleep(Duration::from_secs(2));
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.cluster.work);
    }
}
