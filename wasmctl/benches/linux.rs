//! Pod start latency of the containerd fallback next to Wasm pods, with
//! real processes: a Postgres, a control plane with its scheduler, one
//! `wasm-node` with a containerd of its own, and a docker-registry, all
//! release builds on this machine.
//!
//! From the API create of a pod to its `Running` status, one pod at a time,
//! image already on the node: PODS busybox pods (`sleep`), then PODS
//! hello-http pods. Baseline in the same run: containerd itself creating
//! and starting the same container through its API (prepare the root,
//! create the container, create and start the task), with no control plane
//! or node in between.
//!
//! `cargo bench -p wasmctl --bench linux [-- PODS]` (default 50). Needs
//! root, containerd, runc, umoci, skopeo and docker-registry (the
//! bench/linux script installs them).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use skiff_api::Kind;
use skiff_client::Client;
use testkit::{Containerd, push_busybox_image};
use wasm_node::runtimes::linux::containerd::{Containerd as Runtime, RunSpec};

mod common;
use common::*;

const WAIT: Duration = Duration::from_secs(120);

fn main() {
    let pods = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(50);
    println!(
        "linux: real control plane, node, containerd {}, registry and Postgres; release builds; {}",
        containerd_version(),
        machine()
    );
    let containerd = Containerd::start();
    let cluster = Cluster::start("skiff-linux-bench");
    let node_binary = testkit::release_binary("wasm-node");
    let socket = containerd.socket.display().to_string();
    let _node = cluster.ctl.join(
        &node_binary,
        &cluster.plane.url,
        "linux",
        &["--containerd-socket", &socket, "--instances", "10000"],
    );
    let busybox = format!("{}/busybox:sleep", cluster.registry.addr);
    push_busybox_image(&busybox, &["sleep", "3600"]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let api = &cluster.api;
        // The first of each pulls (and unpacks or compiles); not counted.
        start(api, "linux-warm", &busybox, true).await;
        start(api, "wasm-warm", &cluster.hello_ref, false).await;
        let mut linux = Vec::with_capacity(pods);
        for i in 0..pods {
            linux.push(start(api, &format!("linux-{i}"), &busybox, true).await);
        }
        let mut wasm = Vec::with_capacity(pods);
        for i in 0..pods {
            wasm.push(start(api, &format!("wasm-{i}"), &cluster.hello_ref, false).await);
        }
        let floor = containerd_floor(&containerd.socket, &busybox, pods).await;
        println!("pod start, image on the node: API create -> Running, {pods} pods one at a time:");
        report("Linux pod (busybox, containerd)", &linux);
        report("Wasm pod (hello-http)", &wasm);
        report("containerd alone: prepare, create, start (baseline)", &floor);
        println!(
            "  Linux pod p50 / containerd alone p50: {:.2}x;  Linux p50 / Wasm p50: {:.1}x   (targets: Linux p99 < 500 ms, Wasm at least 10x faster)",
            percentile(&linux, 50) / percentile(&floor, 50),
            percentile(&linux, 50) / percentile(&wasm, 50)
        );
    });
}

fn containerd_version() -> String {
    std::process::Command::new("containerd")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(2)
                .unwrap_or("?")
                .to_owned()
        })
        .unwrap_or_default()
}

/// Seconds from the create of pod `name` to its `Running` status.
async fn start(api: &Client, name: &str, image: &str, linux: bool) -> f64 {
    let mut spec = json!({"image": image, "resources": {"memory": "32Mi"}});
    if linux {
        spec["runtime"] = json!("Linux");
    }
    let pod = json!({
        "apiVersion": skiff_api::API_VERSION, "kind": "Pod",
        "metadata": {"name": name}, "spec": spec,
    });
    let started = Instant::now();
    api.create(Kind::Pod, Some("default"), &pod)
        .await
        .expect("create pod");
    loop {
        let pod = api
            .get(Kind::Pod, Some("default"), name)
            .await
            .expect("get pod");
        if pod["status"]["phase"] == "Running" {
            return started.elapsed().as_secs_f64();
        }
        assert!(started.elapsed() < WAIT, "{name} never ran: {pod:#}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Seconds for containerd alone to prepare a root, create the container
/// and start its task, per container, with the image already unpacked.
async fn containerd_floor(socket: &Path, image: &str, count: usize) -> Vec<f64> {
    let runtime = Runtime::connect(socket, "overlayfs")
        .await
        .expect("containerd");
    let registry = skiff_oci::Registry::new(&[]);
    let reference = skiff_oci::parse_reference(image).expect("reference");
    let credentials = skiff_oci::Credentials::Anonymous;
    let digest = registry
        .resolve(&reference, &credentials)
        .await
        .expect("resolve");
    let pinned = skiff_oci::parse_reference(&format!(
        "{}/{}@{digest}",
        reference.resolve_registry(),
        reference.repository()
    ))
    .expect("pinned");
    let image = registry
        .pull_linux(&pinned, &credentials)
        .await
        .expect("pull");
    let namespace = "bench-floor";
    let top = runtime
        .unpack(namespace, "floor", &image)
        .await
        .expect("unpack");
    // A directory per task for its stdout and stderr FIFOs.
    let log = |i: usize| std::env::temp_dir().join(format!("floor-{}-{i}", std::process::id()));
    let mut took = Vec::with_capacity(count);
    let mut outputs = Vec::with_capacity(count);
    for i in 0..count {
        let id = format!("floor-{i}");
        let spec = RunSpec {
            args: vec!["sleep".into(), "3600".into()],
            env: vec![("PATH".into(), "/bin".into())],
            cwd: "/".into(),
            hostname: id.clone(),
            memory_bytes: Some(32 << 20),
            output_dir: {
                std::fs::create_dir_all(log(i)).expect("a directory for the FIFOs");
                log(i)
            },
            ..Default::default()
        };
        let started = Instant::now();
        let task = runtime
            .start(
                namespace,
                "floor",
                &id,
                image.reference.as_str(),
                &top,
                &spec,
            )
            .await
            .expect("start");
        took.push(started.elapsed().as_secs_f64());
        outputs.push(task.log);
    }
    for (i, output) in outputs.into_iter().enumerate() {
        let id = format!("floor-{i}");
        let _ = runtime.signal(namespace, &id, 9).await;
        let _ = runtime.wait(namespace, &id).await;
        let _ = runtime.remove_container(namespace, &id).await;
        output.finish(Duration::from_secs(10)).await;
        let _ = std::fs::remove_dir_all(log(i));
    }
    let _ = runtime.release(namespace, "floor").await;
    took
}
