//! The listener's edges under load: hello-http on one node (release build)
//! under `wrk`, alone and with 10,000 idle half-open connections held on
//! the same ingress (each sent half a request line and then nothing),
//! alternating round by round in the same run. Printed: req/s and p99 of
//! both, their ratios, and the node's resident memory without and with the
//! crowd.
//!
//! The node runs with `--listen-header-timeout 10m` so the crowd stays for
//! the whole measurement: the worst case for the node, which by default
//! drops such connections after 30 s.
//!
//! `cargo bench -p wasmctl --bench edges [-- SECONDS [ROUNDS [CROWD]]]`
//! (defaults 10, 3, 10000). Needs `docker-registry` and `wrk` on PATH (the
//! bench/edges script installs them).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;

mod common;
use common::*;

const WAIT: Duration = Duration::from_secs(120);

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let seconds = args.next().unwrap_or(10);
    let rounds = args.next().unwrap_or(3);
    let crowd_size = args.next().unwrap_or(10_000);
    let files = skiff_serve::raise_open_files_limit();
    assert!(
        files > crowd_size as u64 + 512,
        "this process may open only {files} files; the crowd needs {crowd_size}"
    );
    println!(
        "listener edges: real control plane, one node, registry and Postgres; release builds; {}",
        machine()
    );
    let cluster = Cluster::start("skiff-edges");
    let node = cluster.ctl.join(
        &testkit::release_binary("wasm-node"),
        &cluster.plane.url,
        "n1",
        &["--listen-header-timeout", "10m"],
    );
    let pod = json!({
        "apiVersion": "skiff.dev/v1", "kind": "Pod",
        "metadata": {"name": "hello"},
        "spec": {"image": cluster.hello_ref, "nodeName": "n1"},
    });
    let manifest = cluster.work.join("hello.json");
    std::fs::write(&manifest, pod.to_string()).expect("manifest written");
    cluster.ctl.run(&["apply", "-f", path_str(&manifest)]);
    wait_for_200(node.ingress, "hello.default.pod", WAIT);
    let pid = node.pid().expect("the node runs");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let load = || Wrk::new(node.ingress, "hello.default.pod", "/", 2, 16, seconds).run();
    let (mut alone, mut crowded) = (Vec::new(), Vec::new());
    let (mut rss_alone, mut rss_crowded) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        alone.push(load());
        rss_alone.push(rss_mib(pid));
        // Source addresses of their own each round, so the previous round's
        // closed connections (in TIME_WAIT) take no ports from this one; 16
        // of them, as a crowd from one address would meet the per-client
        // cap long before 10,000.
        let started = Instant::now();
        let crowd = runtime.block_on(open_crowd(node.ingress, round, crowd_size));
        let opened = started.elapsed();
        crowded.push(load());
        rss_crowded.push(rss_mib(pid));
        let still_open = runtime.block_on(count_open(&crowd));
        println!(
            "  round {}: crowd of {crowd_size} opened in {:.1} s, {still_open} still held after the load",
            round + 1,
            opened.as_secs_f64()
        );
        drop(crowd);
    }
    let median = |runs: &[WrkRun], figure: fn(&WrkRun) -> f64| {
        percentile(&runs.iter().map(figure).collect::<Vec<_>>(), 50)
    };
    println!(
        "hello-http under wrk (2 threads, 16 connections, {seconds} s x {rounds} rounds, medians):"
    );
    for (what, runs, rss) in [
        ("alone (baseline)", &alone, &rss_alone),
        ("with the idle crowd", &crowded, &rss_crowded),
    ] {
        println!(
            "  {what:<20} {:>8.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   node RSS {:>6.1} MiB",
            median(runs, |r| r.rps),
            median(runs, |r| r.p50),
            median(runs, |r| r.p99),
            percentile(rss, 50),
        );
    }
    println!(
        "  crowd / alone: req/s {:.2}x (target >= 0.9x)   p99 {:.2}x (target within 2x)   RSS +{:.1} MiB for {crowd_size} connections",
        median(&crowded, |r| r.rps) / median(&alone, |r| r.rps),
        median(&crowded, |r| r.p99) / median(&alone, |r| r.p99),
        percentile(&rss_crowded, 50) - percentile(&rss_alone, 50),
    );
}

/// Opens `n` connections from 16 loopback addresses of this round's,
/// each sending half a request line.
async fn open_crowd(to: SocketAddr, round: usize, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut crowd = Vec::with_capacity(n);
    for i in 0..n {
        let source = Ipv4Addr::new(127, 1 + round as u8, 0, 1 + (i % 16) as u8);
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from((source, 0)))
            .expect("bind to a loopback source");
        let mut stream = socket.connect(to).await.expect("connect");
        stream.write_all(b"GET / HT").await.expect("half a request");
        crowd.push(stream);
    }
    crowd
}

/// How many of the crowd's connections the node still holds open (a closed
/// one reads as end of stream at once).
async fn count_open(crowd: &[tokio::net::TcpStream]) -> usize {
    let mut open = 0;
    for stream in crowd {
        let mut buf = [0u8; 1];
        match stream.try_read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => open += 1,
            _ => {}
        }
    }
    open
}
