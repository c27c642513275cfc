//! Control-plane memory under a flood of large objects: N ConfigMaps of
//! about 1 MiB (the object size limit) written by 8 clients, then 20
//! watches opened from the revision before the flood, so they start a
//! whole flood behind and catch up through the change log, each reading
//! slowly. Printed: the
//! control plane's resident memory at rest (the baseline) and its peak
//! during the flood, for N and for 2N in the same run: a peak that does not
//! grow with N is memory bounded by the server's buffers, not by the
//! backlog.
//!
//! `cargo bench -p control-plane --bench flood [-- N]` (default 100).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use skiff_api::{EventType, Kind};
use skiff_client::{Client, ClientConfig, WatchOptions};
use testkit::{ControlPlane, Postgres};

const WRITERS: usize = 8;
const WATCHES: usize = 20;
/// Just under the 1 MiB object limit, with room for metadata.
const BLOB: usize = 1_000_000;

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
    let binary = testkit::release_binary("control-plane");
    let database = Postgres::shared().create_database();
    let admin = testkit::init_cluster(&binary, &database, &[]);
    let plane = ControlPlane::start(&binary, &database, &[]);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::new(&ClientConfig {
        server: plane.url.clone(),
        token: admin,
        ..Default::default()
    })
    .expect("client");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "control-plane memory under a flood of ~1 MiB objects ({WRITERS} writers) with {WATCHES} watches from before it; release build, Postgres on loopback; {cores} cores"
    );
    let at_rest = testkit::rss_mib(plane.pid());
    let mut peaks = Vec::new();
    for (round, count) in [n, 2 * n].into_iter().enumerate() {
        let peak = runtime.block_on(flood(&client, plane.pid(), round, count));
        println!(
            "  {count:>4} objects ({:>5} MiB written): peak RSS {peak:>6.1} MiB (at rest {at_rest:.1} MiB)",
            (count * BLOB) >> 20
        );
        peaks.push(peak);
    }
    println!(
        "  peak for 2N / peak for N: {:.2}x (1.0x: memory does not grow with the backlog)",
        (peaks[1] - at_rest) / (peaks[0] - at_rest).max(1.0)
    );
}

/// Writes `count` large ConfigMaps while the watches read; returns the
/// control plane's peak RSS (MiB) over the whole round.
async fn flood(client: &Client, pid: u32, round: usize, count: usize) -> f64 {
    let start = client
        .list(Kind::ConfigMap, Some("default"), &Default::default())
        .await
        .expect("list")
        .metadata
        .resource_version;
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = std::thread::spawn({
        let (done, peak) = (done.clone(), peak.clone());
        move || {
            while !done.load(Ordering::Relaxed) {
                let kib = (testkit::rss_mib(pid) * 1024.0) as u64;
                peak.fetch_max(kib, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    let prefix = format!("flood-{round}");
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = client.clone();
        let prefix = prefix.clone();
        writers.push(tokio::spawn(async move {
            for i in (w..count).step_by(WRITERS) {
                let object = json!({
                    "apiVersion": "skiff.dev/v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("{prefix}-{i:05}")},
                    "data": {"blob": "x".repeat(BLOB)},
                });
                client
                    .create(Kind::ConfigMap, Some("default"), &object)
                    .await
                    .expect("create");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let written = started.elapsed();
    let mut watches = Vec::new();
    for _ in 0..WATCHES {
        let client = client.clone();
        let options = WatchOptions {
            resource_version: Some(start.clone()),
            ..Default::default()
        };
        let prefix = prefix.clone();
        watches.push(tokio::spawn(async move {
            let events = client
                .watch(Kind::ConfigMap, Some("default"), &options)
                .await
                .expect("watch");
            let mut events = std::pin::pin!(events);
            let mut seen = 0;
            while seen < count {
                let event = events
                    .next()
                    .await
                    .expect("the watch stays open")
                    .expect("event");
                let ours = event.object["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&prefix));
                if event.event_type == EventType::Added && ours {
                    seen += 1;
                }
                // A slow reader: the server must hold back, not buffer.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    for watch in watches {
        watch.await.expect("watch");
    }
    println!(
        "  round {}: written in {:.1} s, then 20 watches from before it all caught up after {:.1} s",
        round + 1,
        written.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    peak.load(Ordering::Relaxed) as f64 / 1024.0
}
