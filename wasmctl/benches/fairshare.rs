//! Noisy neighbour: one node (release build) shared by two tenants.
//! Tenant a's pod runs a guest that burns CPU (`/burn`, about a quarter of
//! a second per request), under as many concurrent requests as its
//! namespace's quota lets it run (`instances: 16`); tenant b's hello-http
//! is under a steady load of 4 connections. Printed: b's p50 and p99 alone
//! and next to a, alternating round by round in the same run, and the
//! ratio of the medians.
//!
//! `cargo bench -p wasmctl --bench fairshare [-- SECONDS [ROUNDS [SLOTS]]]`
//! (defaults 10, 3, and the node's own `--guest-cpu-slots`: give SLOTS to
//! see what another number of CPU turns does). Needs `docker-registry` and `wrk` on PATH (the
//! bench/fairshare script installs them).

use std::time::Duration;

use serde_json::json;
use testkit::Node;

mod common;
use common::*;

const A_INSTANCES: usize = 16;
const WAIT: Duration = Duration::from_secs(120);

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let seconds = args.next().unwrap_or(10);
    let rounds = args.next().unwrap_or(3);
    let slots = args.next().map(|n| n.to_string());
    println!(
        "noisy neighbour: real control plane, one node ({} CPU turns for long runners), registry and Postgres; release builds; {}",
        slots.as_deref().map_or("default", |s| s),
        machine()
    );
    let mut flags = Vec::new();
    if let Some(slots) = &slots {
        flags.extend(["--guest-cpu-slots", slots.as_str()]);
    }
    let cluster = Cluster::start("skiff-fairshare");
    let node: Node = cluster.ctl.join(
        &testkit::release_binary("wasm-node"),
        &cluster.plane.url,
        "n1",
        &flags,
    );
    let misbehave = build_component("tests/guests", "misbehave");
    let burner = format!("{}/misbehave:v1", cluster.registry.addr);
    cluster.ctl.run(&["push", path_str(&misbehave), &burner]);

    let pod = |namespace: &str, name: &str, image: &str, resources: serde_json::Value| {
        json!({
            "apiVersion": "skiff.dev/v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"image": image, "nodeName": "n1", "resources": resources},
        })
    };
    let objects = [
        json!({"apiVersion": "skiff.dev/v1", "kind": "Namespace", "metadata": {"name": "a"}}),
        json!({"apiVersion": "skiff.dev/v1", "kind": "Namespace", "metadata": {"name": "b"}}),
        json!({
            "apiVersion": "skiff.dev/v1", "kind": "ResourceQuota",
            "metadata": {"name": "cap", "namespace": "a"},
            "spec": {"hard": {"instances": A_INSTANCES.to_string()}},
        }),
        pod(
            "a",
            "burner",
            &burner,
            json!({"maxInstances": A_INSTANCES, "timeout": "10s"}),
        ),
        pod("b", "hello", &cluster.hello_ref, json!({})),
    ];
    let manifest = cluster.work.join("tenants.json");
    let documents: Vec<String> = objects.iter().map(|o| o.to_string()).collect();
    std::fs::write(&manifest, documents.join("\n---\n")).expect("manifest written");
    cluster.ctl.run(&["apply", "-f", path_str(&manifest)]);
    wait_for_200(node.ingress, "hello.b.pod", WAIT);
    wait_for_200(node.ingress, "burner.a.pod", WAIT);

    let b_load = || Wrk::new(node.ingress, "hello.b.pod", "/", 1, 4, seconds).run();
    let (mut alone, mut shared) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        alone.push(b_load());
        // a's load outlasts b's measurement on both ends.
        let mut a_load = Wrk::new(
            node.ingress,
            "burner.a.pod",
            "/burn?n=300000000",
            1,
            A_INSTANCES,
            seconds + 4,
        )
        .any_status()
        .spawn();
        std::thread::sleep(Duration::from_secs(2));
        shared.push(b_load());
        let _ = a_load.kill();
        let _ = a_load.wait();
    }
    let median = |runs: &[WrkRun], figure: fn(&WrkRun) -> f64| {
        percentile(&runs.iter().map(figure).collect::<Vec<_>>(), 50)
    };
    println!(
        "tenant b's hello-http under wrk (1 thread, 4 connections, {seconds} s x {rounds} rounds, medians):"
    );
    for (what, runs) in [("alone (baseline)", &alone), ("next to tenant a", &shared)] {
        println!(
            "  {what:<20} p50 {:>7.2} ms   p99 {:>7.2} ms   {:>7.0} req/s",
            median(runs, |r| r.p50),
            median(runs, |r| r.p99),
            median(runs, |r| r.rps),
        );
    }
    println!(
        "  next to a / alone: p50 {:.2}x   p99 {:.2}x   (target: p99 within 2x)",
        median(&shared, |r| r.p50) / median(&alone, |r| r.p50),
        median(&shared, |r| r.p99) / median(&alone, |r| r.p99),
    );
}
