//! `logs -f` latency: from a guest's print to the line reaching a client
//! that follows the pod's logs through the API (node → control plane →
//! client), next to `tail -F` of the same log file on the node (what an
//! operator with a shell on the node gets), in the same run.
//!
//! A pod of the misbehave guest is asked to print on every request,
//! REQUESTS requests at RATE per second; each request prints three lines
//! (two while it runs, one flushed when its instance ends). A line's
//! latency is its arrival time minus the time in its record, which the
//! node takes when the guest writes it: both are this machine's clock.
//!
//! `cargo bench -p wasmctl --bench logs [-- REQUESTS RATE]` (defaults
//! 1000 and 50). Needs `docker-registry` (the bench/logs script installs
//! it).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use serde_json::json;
use skiff_api::Kind;
use skiff_client::node_api::LogOptions;

mod common;
use common::*;

/// Seconds between the time a line begins with and now; None for a line
/// that does not begin with an RFC 3339 time.
fn age(line: &str) -> Option<f64> {
    let (time, _) = line.split_once(' ')?;
    let written: SystemTime = chrono::DateTime::parse_from_rfc3339(time).ok()?.into();
    Some(
        SystemTime::now()
            .duration_since(written)
            .unwrap_or_default()
            .as_secs_f64(),
    )
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<u64>().ok());
    let requests = args.next().unwrap_or(1000);
    let rate = args.next().unwrap_or(50).max(1);
    println!(
        "logs -f latency, print to client: {requests} requests at {rate}/s, 3 lines each; real control plane, node, registry and Postgres; release builds; {}",
        machine()
    );
    let cluster = Cluster::start("skiff-logs");
    let guest = build_component("tests/guests", "misbehave");
    let image = format!("{}/misbehave:v1", cluster.registry.addr);
    cluster.ctl.run(&["push", path_str(&guest), &image]);
    let node = cluster.ctl.join(
        &testkit::release_binary("wasm-node"),
        &cluster.plane.url,
        "n1",
        &[],
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let api = cluster.api.clone();
    let uid = runtime.block_on(async {
        let pod = json!({
            "apiVersion": "skiff.dev/v1", "kind": "Pod",
            "metadata": {"name": "printer"},
            "spec": {"image": image},
        });
        let pod = api
            .create(Kind::Pod, Some("default"), &pod)
            .await
            .expect("create");
        pod["metadata"]["uid"].as_str().expect("uid").to_owned()
    });
    let host = "printer.default.pod";
    wait_for_200(node.ingress, host, Duration::from_secs(60));

    // The follower through the API, and tail -F on the node's file.
    let through_api = Arc::new(Mutex::new(Vec::new()));
    let follower = runtime.spawn({
        let (api, seen) = (api.clone(), through_api.clone());
        async move {
            let options = LogOptions {
                follow: true,
                timestamps: true,
                tail_lines: Some(0),
                ..Default::default()
            };
            let lines = api
                .logs("default", "printer", &options)
                .await
                .expect("logs -f");
            let mut lines = std::pin::pin!(lines);
            while let Some(Ok(line)) = lines.next().await {
                if let Some(age) = age(&String::from_utf8_lossy(&line)) {
                    seen.lock().unwrap().push(age);
                }
            }
        }
    });
    let file = node
        .data_dir
        .join("logs")
        .join(format!("default_printer_{uid}"))
        .join("current.log");
    let mut tail = Command::new("tail")
        .args(["-F", "-n", "0"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tail runs");
    let tailed = Arc::new(Mutex::new(Vec::new()));
    let tail_reader = std::thread::spawn({
        let seen = tailed.clone();
        let stdout = tail.stdout.take().expect("stdout");
        move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(age) = age(&line) {
                    seen.lock().unwrap().push(age);
                }
            }
        }
    });
    // Both followers attached before the first line is printed.
    std::thread::sleep(Duration::from_millis(500));

    let mut connection = connect(node.ingress).expect("connect");
    let began = Instant::now();
    let pace = Duration::from_secs_f64(1.0 / rate as f64);
    for i in 0..requests {
        let due = began + pace * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let status =
            get_path(&mut connection, host, &format!("/print?lines=1&tag=b{i}")).expect("request");
        assert_eq!(status, 200);
    }
    let expected = 3 * requests as usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    while (through_api.lock().unwrap().len() < expected || tailed.lock().unwrap().len() < expected)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let through_api = through_api.lock().unwrap().clone();
    let tailed = tailed.lock().unwrap().clone();
    follower.abort();
    let _ = tail.kill();
    let _ = tail.wait();
    let _ = tail_reader.join();
    println!(
        "  lines: {expected} printed, {} through the API, {} by tail -F",
        through_api.len(),
        tailed.len()
    );
    report("tail -F of the node's file (baseline)", &tailed);
    report(
        "wasmctl logs -f path: node API, control plane",
        &through_api,
    );
    println!(
        "  through the API / tail -F: p50 {:.2}x, p99 {:.2}x",
        percentile(&through_api, 50) / percentile(&tailed, 50),
        percentile(&through_api, 99) / percentile(&tailed, 99)
    );
}
