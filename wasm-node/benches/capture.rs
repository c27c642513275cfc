//! What log capture and metrics cost on the request path: requests/s of a
//! guest that prints one line per request, served as a node serves a pod
//! (through the ingress: request id and trace context, per-pod metrics,
//! its output captured into the pod's log file), next to the same
//! component called directly with its output discarded and nothing
//! counted (the baseline), in the same run, rounds alternating.
//!
//! In process, no network: the ratio is what the node's own work adds,
//! not diluted by sockets. The "on" side pays for the ingress's routing
//! too, so the ratio errs against Skiff. The log rate limit is raised so
//! that every line is written (a dropped line would cost less).
//! CPU-time accounting of instances is part of the engine and runs on
//! both sides.
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
    let (off, on, ingress) = runtime.block_on(async {
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
        let ingress = Ingress::new(IngressConfig {
            own_address: "127.0.0.1:1".into(),
            proxy_key: ProxyKey::new(&[7; PROXY_KEY_LEN]),
            caller_key: CallerKey::random(),
            serve_cluster_hosts: true,
        });
        ingress.pods.add(
            ("default".into(), "printer".into()),
            "uid-1",
            Backend::Wasm(on.clone()),
        );
        // The ingress alone, its pod's output discarded: the breakdown.
        ingress.pods.add(
            ("default".into(), "quiet".into()),
            "uid-2",
            Backend::Wasm(off.clone()),
        );
        // The NodeLogs must outlive the runs: keep it with the pod's logs.
        std::mem::forget(logs);
        (off, on, ingress)
    });
    if http {
        runtime.block_on(over_http(off, ingress, rounds, seconds, concurrency));
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
    let captured = {
        let on = on.clone();
        move || {
            let on: HttpApp = on.clone();
            async move {
                let response = on.handle(request()).await;
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.unwrap();
            }
        }
    };
    let routed = {
        let ingress = ingress.clone();
        move || {
            let ingress = ingress.clone();
            async move {
                let response = ingress.handle(request_for("quiet.default.pod")).await;
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.unwrap();
            }
        }
    };
    let served = move || {
        let ingress = ingress.clone();
        async move {
            let response = ingress.handle(request()).await;
            assert_eq!(response.status(), 200);
            response.into_body().collect().await.unwrap();
        }
    };
    // Warm both (compiled code, pools, the log file).
    runtime.block_on(rate(1.0, concurrency, direct.clone()));
    runtime.block_on(rate(1.0, concurrency, served.clone()));
    let (mut baseline, mut skiff) = (Vec::new(), Vec::new());
    let (mut capture_only, mut ingress_only) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let b = runtime.block_on(rate(seconds, concurrency, direct.clone()));
        let s = runtime.block_on(rate(seconds, concurrency, served.clone()));
        let c = runtime.block_on(rate(seconds, concurrency, captured.clone()));
        let i = runtime.block_on(rate(seconds, concurrency, routed.clone()));
        println!(
            "  round {round}: off {b:.0}, on {s:.0}, capture only {c:.0}, ingress and metrics only {i:.0} req/s"
        );
        baseline.push(b);
        skiff.push(s);
        capture_only.push(c);
        ingress_only.push(i);
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
    let (b, s) = (median(&mut baseline), median(&mut skiff));
    println!("  off (baseline): direct call, output discarded, nothing counted   {b:>9.0} req/s");
    println!("  on: ingress, request id and trace, metrics, output captured      {s:>9.0} req/s");
    println!("  on / off: {:.3}x (medians)", s / b);
    let (c, i) = (median(&mut capture_only), median(&mut ingress_only));
    println!(
        "  breakdown: capture only {c:.0} req/s ({:.3}x), ingress and metrics only {i:.0} req/s ({:.3}x)",
        c / b,
        i / b
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
async fn over_http(
    off: HttpApp,
    ingress: Ingress,
    rounds: usize,
    seconds: f64,
    connections: usize,
) {
    async fn listen() -> (tokio::net::TcpListener, u16) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port)
    }
    let options = || skiff_serve::Options::http1(Duration::from_secs(1));
    let (off_listener, off_port) = listen().await;
    let (on_listener, on_port) = listen().await;
    tokio::spawn(skiff_serve::serve(
        off_listener,
        options(),
        move |request| {
            let off = off.clone();
            async move { off.handle(request).await }
        },
        std::future::pending(),
    ));
    tokio::spawn(skiff_serve::serve(
        on_listener,
        options(),
        move |request| {
            let ingress = ingress.clone();
            async move { ingress.handle(request).await }
        },
        std::future::pending(),
    ));
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
        "  off (baseline): the component behind the listener, output discarded, nothing counted {b:>9.0} req/s"
    );
    println!(
        "  on: the node's ingress, request id and trace, metrics, output captured        {s:>9.0} req/s"
    );
    println!("  on / off: {:.3}x (medians)", s / b);
}
