//! Scheduler throughput: 10,000 pending pods placed on 1,000 registered
//! nodes (status-only: real Node objects and leases, no agents) against a
//! real Postgres, every binding a durable conditional write. Next to it, in
//! the same run, the floor the store sets: the same 10,000 binding writes
//! issued directly, with as many in flight, and no decisions.
//!
//! `cargo bench -p control-plane --bench scheduler [-- SCALE [ROUNDS]]`
//! (SCALE 1.0: 10,000 pods, 1,000 nodes; medians of ROUNDS, default 3).
//! The time placed runs from the scheduler's start, so it includes taking
//! leadership and loading the pods and nodes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use control_plane::scheduler::{self, SchedulerConfig};
use control_plane::server::open_store;
use control_plane::store::{ObjectKey, Part, PoolSettings, Store, Write};
use control_plane::watch::WatchHub;
use serde_json::{Value, json};
use skiff_api::Kind;
use testkit::Postgres;
use tokio::sync::Semaphore;

/// Writes in flight while setting up and for the store floor: the
/// scheduler's own default.
const IN_FLIGHT: usize = 256;

fn node(name: &str) -> Value {
    json!({
        "apiVersion": "skiff.dev/v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"skiff.dev/hostname": name}},
        "spec": {},
    })
}

/// What an agent reports when it registers; written through the status
/// subresource as the agent writes it.
fn node_status() -> Value {
    json!({
        "allocatable": {"memory": "64Gi", "instances": 200, "cpu": "16"},
        "conditions": [{"type": "Ready", "status": "True"}],
    })
}

fn pod(name: &str, placement: &str) -> Value {
    json!({
        "apiVersion": "skiff.dev/v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "bench"}},
        "spec": {
            "image": "registry.example/hello:v1",
            "resources": {"memory": "128Mi", "reservedInstances": 1, "maxInstances": 100},
            "placement": placement,
        },
    })
}

/// Runs `writes` against the store with [`IN_FLIGHT`] at a time.
async fn write_all(store: &Store, writes: Vec<Write>) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = Vec::with_capacity(writes.len());
    for write in writes {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.write(write).await.expect("write");
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

async fn fresh_store() -> Store {
    let url = Postgres::shared().create_database();
    // The pool a control plane runs with by default.
    let keys = testkit::encryption_key_file(&url);
    control_plane::encryption::Keyring::create_file(&keys).expect("key file");
    let store = open_store(
        &url,
        &PoolSettings::default(),
        Duration::from_secs(30),
        &keys,
    )
    .await
    .expect("store");
    // As `control-plane init` does: namespaces and the admin token.
    control_plane::initialize(&store).await.expect("init");
    store
}

/// A database with `nodes` Ready nodes (leases valid for an hour) and
/// `pods` pending pods.
async fn populate(store: &Store, nodes: usize, pods: usize, placement: &str) -> Vec<Value> {
    let names: Vec<String> = (0..nodes).map(|i| format!("node-{i:04}")).collect();
    write_all(
        store,
        names
            .iter()
            .map(|n| Write::Create {
                key: ObjectKey::new(Kind::Node, "", n),
                object: node(n),
            })
            .collect(),
    )
    .await;
    write_all(
        store,
        names
            .iter()
            .map(|n| Write::Update {
                key: ObjectKey::new(Kind::Node, "", n),
                object: node_status(),
                part: Part::Status,
                expected_revision: None,
            })
            .collect(),
    )
    .await;
    for name in &names {
        store.renew_lease(name, 3_600_000).await.expect("lease");
    }
    let mut created = Vec::with_capacity(pods);
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = Vec::with_capacity(pods);
    for i in 0..pods {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let store = store.clone();
        let name = format!("pod-{i:05}");
        let object = pod(&name, placement);
        tasks.push(tokio::spawn(async move {
            let created = store
                .write(Write::Create {
                    key: ObjectKey::new(Kind::Pod, "default", &name),
                    object,
                })
                .await
                .expect("create pod");
            drop(permit);
            created
        }));
    }
    for task in tasks {
        created.push(task.await.unwrap());
    }
    created
}

async fn bound(store: &Store) -> i64 {
    per_node(store).await.iter().sum()
}

/// Pods bound per node, most to least: how the placement spread them.
async fn per_node(store: &Store) -> Vec<i64> {
    let mut counts: Vec<i64> = store
        .bound_pods_per_node()
        .await
        .expect("count")
        .into_iter()
        .map(|(_, count)| count)
        .collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    counts
}

/// Starts a scheduler on a populated store and returns the seconds until
/// every pod is durably bound (checked every 10 ms).
async fn schedule(store: &Store, pods: usize) -> f64 {
    let hub = WatchHub::start(store.clone());
    let started = Instant::now();
    tokio::spawn(scheduler::run(
        store.clone(),
        hub,
        SchedulerConfig::default(),
    ));
    while bound(store).await < pods as i64 {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the scheduler stalled at {} of {pods}",
            bound(store).await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed().as_secs_f64()
}

/// The store floor: every pod's binding written directly, conditional on
/// its revision as the scheduler's are, round robin over the nodes.
async fn direct_bindings(store: &Store, pods: Vec<Value>, nodes: usize) -> f64 {
    let writes = pods
        .into_iter()
        .enumerate()
        .map(|(i, mut pod)| {
            let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
            let revision = pod["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|rv| rv.parse().ok());
            pod["spec"]["nodeName"] = json!(format!("node-{:04}", i % nodes));
            Write::Update {
                key: ObjectKey::new(Kind::Pod, "default", &name),
                object: pod,
                part: Part::Main,
                expected_revision: revision,
            }
        })
        .collect();
    let started = Instant::now();
    write_all(store, writes).await;
    started.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<f64>().ok());
    let scale = args.next().unwrap_or(1.0);
    let rounds = args.next().map_or(3, |r| r.max(1.0) as usize);
    let pods = ((10_000.0 * scale) as usize).max(100);
    let nodes = ((1_000.0 * scale) as usize).max(10);
    // RUST_LOG=control_plane=debug shows what the scheduler does.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "scheduler: {pods} pods onto {nodes} nodes, real Postgres (fsync on), {} cores, median of {rounds} rounds",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        let mut floor = Vec::new();
        let mut placed: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        let mut shape = [(0, 0); 2];
        for _ in 0..rounds {
            let store = fresh_store().await;
            let created = populate(&store, nodes, pods, "BinPack").await;
            floor.push(pods as f64 / direct_bindings(&store, created, nodes).await);
            for (i, placement) in ["BinPack", "Spread"].into_iter().enumerate() {
                let store = fresh_store().await;
                populate(&store, nodes, pods, placement).await;
                placed[i].push(pods as f64 / schedule(&store, pods).await);
                let spread = per_node(&store).await;
                shape[i] = (spread.len(), spread.first().copied().unwrap_or(0));
            }
        }
        let floor = median(floor);
        println!(
            "  store floor (direct conditional binding writes, {IN_FLIGHT} in flight): {floor:>7.0}/s"
        );
        for (i, placement) in ["BinPack", "Spread"].into_iter().enumerate() {
            let rate = median(placed[i].clone());
            println!(
                "  scheduler, {placement:<7}: {rate:>7.0} placements/s ({:.2}x the store floor; {} nodes used, fullest {})",
                rate / floor,
                shape[i].0,
                shape[i].1
            );
        }
        println!(
            "  anchors: kube-scheduler CI floor ~680/s at 5,000 nodes; Nomad C1M ~3,750/s; target here >= 2,000/s"
        );
    });
}
