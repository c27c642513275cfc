//! Routing and self-healing benchmarks with real processes: a Postgres, a
//! control plane with its scheduler and controllers, three `wasm-node`
//! processes with their default leases, and a docker-registry, all release
//! builds on this machine.
//!
//! 1. Ingress overhead: requests/s and p99 under `wrk` for hello-http
//!    through a node's ingress, by pod host, by a Route to a pod on the same
//!    node, and by a Route to a pod on another node (proxied). Baseline in
//!    the same run: `wasmctl run` of the same component, straight.
//! 2. Failover: a Deployment of 6 replicas spread over the three nodes; one
//!    node is killed (SIGKILL) and the time until every replacement pod is
//!    Ready and answers through its node is taken, over TRIALS trials. The
//!    floor it is set against, in the same run: the node lease's grace (no
//!    controller can know sooner) plus the time a fresh Deployment of 6
//!    takes to serve.
//!
//! `cargo bench -p wasmctl --bench routing [-- TRIALS [SECONDS [ROUNDS]]]`
//! (defaults 10, 10 and 3). Needs `docker-registry` and `wrk` on PATH (the
//! bench/routing script installs them).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_client::ListOptions;
use testkit::{Node, free_port};

mod common;
use common::*;

const REPLICAS: usize = 6;
/// The nodes' default lease: renewed every 2 s, valid for 6 s.
const LEASE_GRACE: Duration = Duration::from_secs(6);
const WAIT: Duration = Duration::from_secs(120);

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let trials = args.next().unwrap_or(10);
    let seconds = args.next().unwrap_or(10);
    let rounds = args.next().unwrap_or(3);
    println!(
        "routing: real control plane, 3 nodes, registry and Postgres; release builds; {}",
        machine()
    );
    let mut bench = Bench::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        bench.ingress(rounds, seconds).await;
        bench.failover(trials).await;
    });
}

struct Bench {
    cluster: Cluster,
    nodes: Vec<Node>,
}

impl Bench {
    fn start() -> Bench {
        let node_binary = testkit::release_binary("wasm-node");
        let cluster = Cluster::start("skiff-routing");
        let nodes = ["n1", "n2", "n3"]
            .iter()
            .map(|name| {
                cluster
                    .ctl
                    .join(&node_binary, &cluster.plane.url, name, &[])
            })
            .collect();
        Bench { cluster, nodes }
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).expect("a node")
    }

    async fn create(&self, kind: Kind, object: Value) {
        self.cluster
            .api
            .create(kind, Some("default"), &object)
            .await
            .unwrap_or_else(|e| panic!("create {}: {e}", kind.name()));
    }

    /// A Deployment of hello-http labelled app=`name`, with a Service and a
    /// Route for host `<name>.bench`; `node` pins it to one node.
    async fn deploy(&self, name: &str, replicas: usize, node: Option<&str>) {
        let mut spec = json!({"image": self.cluster.hello_ref, "placement": "Spread"});
        if let Some(node) = node {
            spec["nodeSelector"] = json!({"bench": node});
        }
        self.create(
            Kind::Deployment,
            json!({
                "apiVersion": skiff_api::API_VERSION, "kind": "Deployment",
                "metadata": {"name": name},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
                },
            }),
        )
        .await;
    }

    async fn route(&self, name: &str) {
        self.create(
            Kind::Service,
            json!({
                "apiVersion": skiff_api::API_VERSION, "kind": "Service",
                "metadata": {"name": name}, "spec": {"selector": {"app": name}},
            }),
        )
        .await;
        self.create(
            Kind::Route,
            json!({
                "apiVersion": skiff_api::API_VERSION, "kind": "Route",
                "metadata": {"name": name},
                "spec": {"host": format!("{name}.bench"), "service": name},
            }),
        )
        .await;
    }

    async fn pods(&self, app: &str) -> Vec<Value> {
        let options = ListOptions {
            label_selector: Some(format!("app={app}")),
            ..Default::default()
        };
        self.cluster
            .api
            .list_all(Kind::Pod, Some("default"), &options)
            .await
            .expect("list pods")
            .items
    }

    async fn ingress(&self, rounds: usize, seconds: usize) {
        self.deploy("local", 1, Some("n1")).await;
        self.route("local").await;
        self.deploy("remote", 1, Some("n2")).await;
        self.route("remote").await;
        let n1 = self.node("n1").ingress;
        wait_for_200(n1, "local.bench", WAIT);
        wait_for_200(n1, "remote.bench", WAIT);
        let local_pod = self.pods("local").await[0]["metadata"]["name"]
            .as_str()
            .expect("a pod name")
            .to_owned();
        let port = free_port();
        let mut command = Command::new(&self.cluster.ctl.binary);
        command
            .args(["run", path_str(&self.cluster.hello), "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("WASMCTL_CACHE_DIR", &self.cluster.ctl.cache)
            .env("RUST_LOG", "warn");
        let _direct = spawn_server(command);
        let direct = SocketAddr::from(([127, 0, 0, 1], port));
        wait_for_200(direct, "localhost", WAIT);

        let targets = [
            (
                "wasmctl run, straight (baseline)",
                direct,
                "localhost".to_owned(),
            ),
            (
                "node ingress, by pod host",
                n1,
                format!("{local_pod}.default.pod"),
            ),
            (
                "Route to a pod on the same node",
                n1,
                "local.bench".to_owned(),
            ),
            (
                "Route to a pod on another node",
                n1,
                "remote.bench".to_owned(),
            ),
        ];
        let mut results: BTreeMap<usize, Vec<(f64, f64)>> = BTreeMap::new();
        // Alternating the targets round by round spreads the machine's
        // noise over all of them.
        for _ in 0..rounds {
            for (i, (_, addr, host)) in targets.iter().enumerate() {
                results
                    .entry(i)
                    .or_default()
                    .push(wrk(*addr, host, seconds));
            }
        }
        println!(
            "ingress: hello-http under wrk (2 threads, 32 connections, {seconds} s x {rounds} rounds, medians):"
        );
        let median = |values: Vec<f64>| percentile(&values, 50);
        let baseline = median(results[&0].iter().map(|r| r.0).collect());
        for (i, (what, _, _)) in targets.iter().enumerate() {
            let rps = median(results[&i].iter().map(|r| r.0).collect());
            let p99 = median(results[&i].iter().map(|r| r.1).collect());
            println!(
                "  {what:<36} {rps:>9.0} req/s   p99 {p99:>6.2} ms   {:.2}x of straight",
                rps / baseline
            );
        }
        println!("  (target: a Route to a local pod at least 0.90x of straight)");
    }

    async fn failover(&mut self, trials: usize) {
        self.route("web").await;
        let mut deploys = Vec::new();
        let mut failovers = Vec::new();
        for trial in 0..trials {
            let started = Instant::now();
            self.deploy("web", REPLICAS, None).await;
            self.wait_serving("web", None).await;
            deploys.push(started.elapsed().as_secs_f64());

            let victim = ["n2", "n3"][trial % 2];
            let index = self
                .nodes
                .iter()
                .position(|n| n.name == victim)
                .expect("victim");
            let killed = Instant::now();
            self.nodes[index].kill();
            self.wait_serving("web", Some(victim)).await;
            failovers.push(killed.elapsed().as_secs_f64());

            self.nodes[index].restart();
            self.wait_ready(victim).await;
            self.cluster
                .ctl
                .run(&["delete", "deployment", "web", "--cascade", "foreground"]);
        }
        println!(
            "failover: SIGKILL of a node holding 2 of {REPLICAS} replicas, to every replacement Ready and answering ({trials} trials):"
        );
        report("node killed -> all replacements serving", &failovers);
        report("fresh Deployment of 6 -> all serving (same run)", &deploys);
        let floor = LEASE_GRACE.as_secs_f64() + percentile(&deploys, 50);
        println!(
            "  p50 / (lease grace {} s + fresh deploy p50): {:.2}x   (target p99 < 10 s; Kubernetes' defaults: about 350 s, 50 s node-monitor grace + 300 s not-ready toleration)",
            LEASE_GRACE.as_secs(),
            percentile(&failovers, 50) / floor
        );
    }

    /// Waits until the Deployment's pods are all Ready, none on `lost`,
    /// and each answers 200 through its own node's ingress.
    async fn wait_serving(&self, app: &str, lost: Option<&str>) {
        let deadline = Instant::now() + WAIT;
        loop {
            let pods = self.pods(app).await;
            let ready = pods.len() == REPLICAS
                && pods.iter().all(|p| {
                    p["status"]["conditions"][0]["status"] == "True"
                        && Some(p["spec"]["nodeName"].as_str().unwrap_or_default()) != lost
                });
            if ready && pods.iter().all(answers) {
                return;
            }
            assert!(Instant::now() < deadline, "{app} never recovered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_ready(&self, node: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let object = self
                .cluster
                .api
                .get(Kind::Node, None, node)
                .await
                .expect("node");
            let ready = object["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "{node} never came back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether a pod answers 200 through the ingress its status names.
fn answers(pod: &Value) -> bool {
    let Some(addr) = pod["status"]["endpoint"]
        .as_str()
        .and_then(|e| e.parse::<SocketAddr>().ok())
    else {
        return false;
    };
    let host = format!(
        "{}.default.pod",
        pod["metadata"]["name"].as_str().unwrap_or_default()
    );
    connect(addr)
        .and_then(|mut stream| get(&mut stream, &host))
        .is_ok_and(|status| status == 200)
}

/// Requests/s and p99 (ms) of one wrk run (2 threads, 32 connections).
fn wrk(addr: SocketAddr, host: &str, seconds: usize) -> (f64, f64) {
    let run = Wrk::new(addr, host, "/", 2, 32, seconds).run();
    (run.rps, run.p99)
}
