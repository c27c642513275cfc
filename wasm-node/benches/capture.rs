//! What log capture and metrics cost on the request path: requests/s of a
//! guest that prints one line per request, served as a node serves a pod
//! (through the ingress: routing, request id and trace context), with
//! capture and metrics on (per-pod series counted, the line captured into
//! the pod's log file) and with them off (`wasm-node join` without
//! `--metrics-listen` and with `--capture-pod-output=false`: no series,
//! output discarded), in the same run, rounds alternating. The component
//! called directly, no ingress, is printed beside them for what the
//! ingress itself costs.
//!
//! In process, no network: the ratio is what the node's own work adds,
//! not diluted by sockets. The log rate limit is raised so that every line
//! is written (a dropped line would cost less). CPU-time accounting of
//! instances, and the load the autoscaler samples, are part of the engine
//! and the ingress and run on both sides.
//!
//! With `--http`, the same two sides are served over loopback HTTP by
//! the listener every node's ingress uses (`skiff_serve`), each on its own
//! port, and loaded by `wrk` as `bench/run` loads a server: what a client
//! of a node sees. `bench/capture` runs both modes.
//!
//! `cargo bench -p wasm-node --bench capture -- PATH/TO/misbehave.wasm [ROUNDS] [SECONDS] [CONCURRENCY] [--http]`
//!
//! On a shared machine the req/s figures swing by tens of percent from
//! one 3 s window to the next; CPU time per request in each window (e.g.
//! `perf record` split by the windows' times) is the steadier measure.
//! What was done to cut the "on" side's cost: a pod's writer gathers
//! lines for 10 ms per write rather than being woken (with a blocking
//! thread) every few lines, a record's date is formatted once a second,
//! per-pod metric handles are resolved once per pod (a request only adds
//! to atomics, under the one look-up that finds its backend), and the
//! ingress's header names are parsed once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use skiff_wasm::{App, EngineConfig, HttpApp, Limits, Sandbox, Stdio};
use wasm_node::ingress::{Backend, CallerKey, Ingress, IngressConfig, PROXY_KEY_LEN, ProxyKey};
use wasm_node::logs::{LogConfig, NodeLogs};

fn request() -> http::Request<Empty<Bytes>> {
    request_for("printer.default.pod")
}

fn request_for(host: &str) -> http::Request<Empty<Bytes>> {
    http::Request::builder()
        .uri("/line")
        .header("host", host)
        .body(Empty::new())
        .unwrap()
}

/// Requests/s over `seconds` with `concurrency` callers of `one`.
async fn rate<F, Fut>(seconds: f64, concurrency: usize, one: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (one, done, stop) = (one.clone(), done.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    one().await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let began = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let count = done.load(Ordering::Relaxed);
    let elapsed = began.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    count as f64 / elapsed
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let http = std::env::args().any(|a| a == "--http");
    let mut args = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench" && a != "--http");
    let path = args
        .next()
        .expect("usage: capture PATH/TO/misbehave.wasm [ROUNDS] [SECONDS] [CONCURRENCY]");
    let rounds: usize = args.next().map_or(5, |n| n.parse().expect("rounds"));
    let seconds: f64 = args.next().map_or(5.0, |n| n.parse().expect("seconds"));
    let concurrency: usize = args.next().map_or(32, |n| n.parse().expect("concurrency"));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let limits = Limits::default();
    let engine = skiff_wasm::Engine::new(EngineConfig::for_limits(&limits, None)).unwrap();
    let loaded = engine.load_file(path.as_ref()).unwrap();
    let data = tempfile::tempdir().unwrap();
    let (off, on, [on_node, off_node, capture_node, metrics_node]) = runtime.block_on(async {
        let App::Http(off) = engine
            .prepare(&loaded, limits, Sandbox::default())
            .await
            .unwrap()
        else {
            panic!("{path} is not an HTTP component");
        };
        let logs = NodeLogs::new(
            data.path(),
            LogConfig {
                rate: 1 << 30,
                burst: 1 << 30,
                ..LogConfig::default()
            },
        );
        let pod_logs = logs.open("default", "printer", "uid-1").unwrap();
        let sandbox = Sandbox {
            stdio: Stdio::Capture(pod_logs.clone()),
            ..Sandbox::default()
        };
        let App::Http(on) = engine.prepare(&loaded, limits, sandbox).await.unwrap() else {
            unreachable!()
        };
        let node = |pod_metrics| {
            Ingress::new(IngressConfig {
                own_address: "127.0.0.1:1".into(),
                proxy_key: ProxyKey::new(&[7; PROXY_KEY_LEN]),
                caller_key: CallerKey::random(),
                serve_cluster_hosts: true,
                pod_metrics,
            })
        };
        let (on_node, off_node) = (node(true), node(false));
        let pod = || ("default".to_owned(), "printer".to_owned());
        on_node.pods.add(pod(), "uid-1", Backend::Wasm(on.clone()));
        off_node
            .pods
            .add(pod(), "uid-1", Backend::Wasm(off.clone()));
        // The breakdown: each of the two alone.
        let (capture_node, metrics_node) = (node(false), node(true));
        capture_node
            .pods
            .add(pod(), "uid-1", Backend::Wasm(on.clone()));
        metrics_node
            .pods
            .add(pod(), "uid-1", Backend::Wasm(off.clone()));
        // The NodeLogs must outlive the runs: keep it with the pod's logs.
        std::mem::forget(logs);
        (off, on, [on_node, off_node, capture_node, metrics_node])
    });
    if http {
        runtime.block_on(over_http(on_node, off_node, rounds, seconds, concurrency));
        return;
    }
    let direct = move || {
        let off: HttpApp = off.clone();
        async move {
            let response = off.handle(request()).await;
            assert_eq!(response.status(), 200);
            response.into_body().collect().await.unwrap();
        }
    };
    let through = |node: Ingress| {
        move || {
            let node = node.clone();
            async move {
                let response = node.handle(request()).await;
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.unwrap();
            }
        }
    };
    let (served_on, served_off) = (through(on_node), through(off_node));
    let (capture_only, metrics_only) = (through(capture_node), through(metrics_node));
    // Warm every side (compiled code, pools, the log file).
    runtime.block_on(rate(1.0, concurrency, direct.clone()));
    runtime.block_on(rate(1.0, concurrency, served_on.clone()));
    runtime.block_on(rate(1.0, concurrency, served_off.clone()));
    let mut figures: [Vec<f64>; 5] = Default::default();
    for round in 1..=rounds {
        let r = [
            runtime.block_on(rate(seconds, concurrency, served_off.clone())),
            runtime.block_on(rate(seconds, concurrency, served_on.clone())),
            runtime.block_on(rate(seconds, concurrency, capture_only.clone())),
            runtime.block_on(rate(seconds, concurrency, metrics_only.clone())),
            runtime.block_on(rate(seconds, concurrency, direct.clone())),
        ];
        println!(
            "  round {round}: off {:.0}, on {:.0}, capture only {:.0}, metrics only {:.0}, component direct {:.0} req/s",
            r[0], r[1], r[2], r[3], r[4]
        );
        for (figure, value) in figures.iter_mut().zip(r) {
            figure.push(value);
        }
    }
    let written = std::fs::read_dir(data.path().join("logs"))
        .unwrap()
        .flatten()
        .flat_map(|pod| std::fs::read_dir(pod.path()).unwrap().flatten())
        .map(|f| f.metadata().map_or(0, |m| m.len()))
        .sum::<u64>();
    drop(on);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "capture and metrics on the request path: {rounds} rounds x {seconds}s, {concurrency} concurrent callers, in process; {cores} cores"
    );
    let [off, on, capture, metrics, direct] = figures.map(|mut f| median(&mut f));
    println!("  off (baseline): ingress, no per-pod series, output discarded  {off:>9.0} req/s");
    println!("  on: ingress, per-pod series counted, output captured         {on:>9.0} req/s");
    println!("  on / off: {:.3}x (medians)", on / off);
    println!(
        "  breakdown: capture only {capture:.0} req/s ({:.3}x), metrics only {metrics:.0} req/s ({:.3}x)",
        capture / off,
        metrics / off
    );
    println!(
        "  for reference, the component called directly (no ingress): {direct:.0} req/s; off / direct {:.3}x",
        off / direct
    );
    println!("  log bytes written while on: {written}");
}

/// One `wrk` run against `port` with `host` as the Host header: req/s.
async fn wrk(port: u16, host: &str, seconds: f64, connections: usize) -> f64 {
    let output = tokio::process::Command::new("wrk")
        .args(["-t2", &format!("-c{connections}")])
        .arg(format!("-d{}s", seconds.ceil() as u64))
        .args(["-H", &format!("Host: {host}")])
        .arg(format!("http://127.0.0.1:{port}/line"))
        .output()
        .await
        .expect("wrk runs (bench/capture installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "wrk failed or saw errors:\n{text}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{text}"))
}

/// The two sides over loopback HTTP, each behind the node's listener.
async fn over_http(on: Ingress, off: Ingress, rounds: usize, seconds: f64, connections: usize) {
    async fn listen(node: Ingress) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(skiff_serve::serve(
            listener,
            skiff_serve::Options::http1(Duration::from_secs(1)),
            move |request| {
                let node = node.clone();
                async move { node.handle(request).await }
            },
            std::future::pending(),
        ));
        port
    }
    let (on_port, off_port) = (listen(on).await, listen(off).await);
    let host = "printer.default.pod";
    // Warm both.
    wrk(off_port, host, 1.0, connections).await;
    wrk(on_port, host, 1.0, connections).await;
    let (mut baseline, mut skiff) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let b = wrk(off_port, host, seconds, connections).await;
        let s = wrk(on_port, host, seconds, connections).await;
        println!("  round {round}: off {b:.0}, on {s:.0} req/s");
        baseline.push(b);
        skiff.push(s);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "capture and metrics on the request path: {rounds} rounds x {seconds}s, wrk with {connections} connections over loopback HTTP; {cores} cores shared by wrk and the servers"
    );
    let (b, s) = (median(&mut baseline), median(&mut skiff));
    println!(
        "  off (baseline): the node's ingress, no per-pod series, output discarded {b:>9.0} req/s"
    );
    println!(
        "  on: the node's ingress, per-pod series counted, output captured        {s:>9.0} req/s"
    );
    println!("  on / off: {:.3}x (medians)", s / b);
}
