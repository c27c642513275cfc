//! Events under a crash loop: PODS pods that trap at start and restart for
//! SECONDS on one node (back-off 200 ms doubling to 1 s, so they restart
//! about once a second), with every Event write counted from the API's
//! watch. Printed next to the restarts in the same run: what a write per
//! happening would have cost (each restart is a start, a failure and a
//! back-off) against what folding and pacing write.
//!
//! `cargo bench -p wasmctl --bench events [-- PODS SECONDS]` (defaults 100
//! and 60). Needs `docker-registry` (the bench/events script installs it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use skiff_api::{EventType, Kind};
use skiff_client::{ListOptions, WatchOptions};

mod common;
use common::*;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<u64>().ok());
    let pods = args.next().unwrap_or(100);
    let seconds = args.next().unwrap_or(60);
    println!(
        "events under a crash loop of {pods} pods for {seconds} s: real control plane, node, registry and Postgres; release builds; {}",
        machine()
    );
    let cluster = Cluster::start("skiff-events");
    cluster
        .ctl
        .run(&["set", "policy", "default", "--pod-security", "Privileged"]);
    let probe = build_component("tests/guests", "probe");
    let probe_ref = format!("{}/probe:v1", cluster.registry.addr);
    cluster.ctl.run(&["push", path_str(&probe), &probe_ref]);
    let instances = (pods * 2).to_string();
    let memory = format!("{}Mi", pods * 2 * 128);
    let _node = cluster.ctl.join(
        &testkit::release_binary("wasm-node"),
        &cluster.plane.url,
        "n1",
        &[
            "--instances",
            &instances,
            "--memory",
            &memory,
            "--backoff",
            "200ms",
            "--backoff-max",
            "1s",
        ],
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let api = &cluster.api;
        let start = api
            .list(Kind::Pod, Some("default"), &ListOptions::default())
            .await
            .expect("list")
            .metadata
            .resource_version;
        let writes = Arc::new(AtomicU64::new(0));
        let counting = tokio::spawn({
            let (api, writes) = (api.clone(), writes.clone());
            let options = WatchOptions {
                resource_version: Some(start.clone()),
                ..Default::default()
            };
            async move {
                let events = api.watch(Kind::Event, None, &options).await.expect("watch");
                let mut events = std::pin::pin!(events);
                while let Some(Ok(event)) = events.next().await {
                    if matches!(event.event_type, EventType::Added | EventType::Modified) {
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        for i in 0..pods {
            let pod = json!({
                "apiVersion": "skiff.dev/v1", "kind": "Pod",
                "metadata": {"name": format!("crasher-{i:03}")},
                "spec": {"image": probe_ref, "args": ["trap"], "restartPolicy": "Always"},
            });
            api.create(Kind::Pod, Some("default"), &pod).await.expect("create");
        }
        let began = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let elapsed = began.elapsed().as_secs_f64();
        let event_writes = writes.load(Ordering::Relaxed);
        let listed = api
            .list_all(Kind::Pod, Some("default"), &ListOptions::default())
            .await
            .expect("list pods");
        let restarts: u64 = listed
            .items
            .iter()
            .map(|p| p["status"]["restartCount"].as_u64().unwrap_or(0))
            .sum();
        let end: i64 = listed.metadata.resource_version.parse().expect("revision");
        let all_writes = end - start.parse::<i64>().expect("revision");
        counting.abort();
        // Each restart is a start, a failure and a back-off: three Events
        // if every happening were a write.
        let unfolded = 3.0 * restarts as f64 / elapsed;
        let folded = event_writes as f64 / elapsed;
        println!("  restarts: {restarts} ({:.1}/s)", restarts as f64 / elapsed);
        println!(
            "  Event writes: {event_writes} ({folded:.1}/s); a write per happening (baseline) would be {unfolded:.1}/s: {:.3}x",
            folded / unfolded.max(f64::MIN_POSITIVE)
        );
        println!(
            "  all durable writes meanwhile: {all_writes} ({:.1}/s), of which Events {:.0}%",
            all_writes as f64 / elapsed,
            100.0 * event_writes as f64 / all_writes.max(1) as f64
        );
    });
}
