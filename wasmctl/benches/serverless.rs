//! Serverless figures with real processes (Postgres, a control plane, one
//! `wasm-node`, a docker-registry; release builds):
//!
//! 1. Cold from zero, component cached on the node: hello-http functions
//!    (autoscaled, `minReplicas: 0`) created at zero; one request each,
//!    from its sending to its answer through the node's ingress (the
//!    request is held, the API activates the function, a pod is placed,
//!    started and reported Ready, its endpoint reaches the node by watch).
//!    Next to, in the same run: the same request to the same functions now
//!    warm, and `wasmtime serve` from process start to first 200.
//! 2. Burst from zero: 1,000 concurrent requests to a function at zero
//!    with `targetConcurrency: 50`: how many succeed, the time until all
//!    are answered, and the most pods the autoscaler asked for.
//! 3. Step: callers of a function whose requests take 50 ms (five
//!    instances a pod, `targetConcurrency: 5`) go from 5 to 50; the time
//!    until the p99 of each half second is back within twice its value
//!    before the step, and stays there.
//! 4. Density at zero: the node's RSS, empty; with every function at zero
//!    (objects only); and with every function holding an idle pod.
//!
//! `cargo bench -p wasmctl --bench serverless [-- COLD [BURST [FUNCTIONS]]]`
//! (defaults 100, 1,000 and 1,000). Needs `docker-registry` and
//! `wasmtime` on PATH (bench/serverless installs them).

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use skiff_api::Kind;
use testkit::Node;

mod common;
use common::*;

const BASELINE_RUNS: usize = 20;
/// How long idle CPU is measured. Controllers look at every object again
/// over a period of minutes, spread evenly, so any such window shows the
/// steady share of that, and the autoscaler's ticks.
const IDLE: Duration = Duration::from_secs(30);

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let cold = args.next().unwrap_or(100);
    let burst = args.next().unwrap_or(1_000);
    let functions = args.next().unwrap_or(1_000).max(cold);
    println!(
        "serverless: real control plane, node, registry and Postgres; release builds; {}",
        machine()
    );
    let cluster = Cluster::start("skiff-serverless");
    let node_binary = testkit::release_binary("wasm-node");
    let node = cluster.ctl.join(
        &node_binary,
        &cluster.plane.url,
        "fast",
        &["--memory", "512Gi", "--instances", "100000"],
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let bench = Bench { cluster, node };
    // The node pulls and compiles hello-http once, for every function.
    runtime.block_on(bench.create("warmup", 1, 50, "60s"));
    wait_for_200(bench.node.ingress, &host("warmup"), Duration::from_secs(60));
    settle();
    let empty = rss_mib(bench.node.pid().expect("node runs"));
    let idle_empty = bench.idle_cpu();

    runtime.block_on(async {
        for i in 0..functions {
            bench.create(&format!("fn-{i}"), 0, 50, "10m").await;
        }
        bench.create("burst", 0, 50, "10m").await;
    });
    bench.wait_until_known(&runtime, functions);
    // A cluster's functions have been there longer than a minute, so its
    // planner knows the tables' sizes; right after creating a thousand, it
    // does not until autovacuum comes by (it chose a scan of every
    // Deployment over their index: 4.9 ms against 0.4 ms a lookup).
    testkit::Postgres::analyze(&bench.cluster.database);
    settle();
    let at_zero = rss_mib(bench.node.pid().expect("node runs"));
    let idle_at_zero = bench.idle_cpu();
    println!("idle CPU over {IDLE:?} (no request), share of one core:");
    println!("  one warm function:              {idle_empty}");
    println!("  + {functions} functions at zero:     {idle_at_zero}");

    let cold_times: Vec<f64> = (0..cold)
        .map(|i| bench.time(&host(&format!("fn-{i}"))))
        .collect();
    let warm_times: Vec<f64> = (0..cold)
        .map(|i| bench.time(&host(&format!("fn-{i}"))))
        .collect();
    let wasmtime = start_to_first_200(BASELINE_RUNS, |port| {
        let mut command = Command::new("wasmtime");
        command
            .args(["serve", "-Scli", "-C", "cache=y", "--addr"])
            .arg(format!("127.0.0.1:{port}"))
            .arg(&bench.cluster.hello);
        command
    });
    println!("cold from zero, component cached on the node ({cold} functions, one request each):");
    report("function at zero: request -> 200", &cold_times);
    report("the same functions warm: request -> 200", &warm_times);
    report("wasmtime serve: start -> first 200", &wasmtime);
    println!(
        "  cold p50 / warm p50: {:.1}x; cold p50 / wasmtime serve p50: {:.2}x   (target: cold p50 < 10 ms, p99 < 50 ms)",
        percentile(&cold_times, 50) / percentile(&warm_times, 50),
        percentile(&cold_times, 50) / percentile(&wasmtime, 50),
    );

    bench.burst(&runtime, burst);
    bench.step(&runtime);

    // Every function with an idle pod: the rest are woken 16 at a time.
    let next = AtomicUsize::new(cold);
    std::thread::scope(|scope| {
        for _ in 0..16 {
            scope.spawn(|| {
                while let Some(i) =
                    Some(next.fetch_add(1, Ordering::SeqCst)).filter(|i| *i < functions)
                {
                    bench.wake(&runtime, &format!("fn-{i}"));
                }
            });
        }
    });
    settle();
    let idle = rss_mib(bench.node.pid().expect("node runs"));
    println!("density at zero ({functions} functions, one node):");
    println!("  node RSS, empty (one warm pod):           {empty:>8.1} MiB");
    println!(
        "  node RSS, {functions} functions at zero:      {at_zero:>8.1} MiB   ({:.1} KiB per function)",
        (at_zero - empty) * 1024.0 / functions as f64
    );
    println!(
        "  node RSS, {functions} functions, idle pod each: {idle:>8.1} MiB   ({:.1} KiB per pod)",
        (idle - empty) * 1024.0 / functions as f64
    );
    println!(
        "  at zero / with pods: {:.2}x of the memory above the empty node",
        (at_zero - empty) / (idle - empty)
    );
}

struct Bench {
    cluster: Cluster,
    node: Node,
}

fn host(name: &str) -> String {
    format!("{name}.default.svc")
}

/// Lets a process finish what a burst of work left behind before its
/// memory is read.
fn settle() {
    std::thread::sleep(Duration::from_secs(2));
}

/// CPU used while nothing is asked of the cluster, as shares of one core.
struct IdleCpu {
    plane: f64,
    node: f64,
    postgres: f64,
}

impl std::fmt::Display for IdleCpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "control plane {:>5.1}%, node {:>5.1}%, Postgres {:>5.1}%",
            self.plane * 100.0,
            self.node * 100.0,
            self.postgres * 100.0
        )
    }
}

impl Bench {
    /// Waits for function `name` to answer 200; if it does not within a
    /// minute, fails with what the store says of it and the processes'
    /// last log lines.
    fn wake(&self, runtime: &tokio::runtime::Runtime, name: &str) {
        let Err(last) = answers_200(self.node.ingress, &host(name), Duration::from_secs(60)) else {
            return;
        };
        let api = &self.cluster.api;
        let (deployment, service, pods) = runtime.block_on(async {
            let get = |kind| api.get(kind, Some("default"), name);
            let pods = api
                .list_all(Kind::Pod, Some("default"), &Default::default())
                .await
                .map(|pods| {
                    pods.items
                        .into_iter()
                        .filter(|p| p["metadata"]["labels"]["app"] == name)
                        .collect::<Vec<_>>()
                });
            (get(Kind::Deployment).await, get(Kind::Service).await, pods)
        });
        let tail = |log: String| {
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        panic!(
            "{name} never answered 200 (last: {last})\ndeployment: {deployment:#?}\n\
             service: {service:#?}\npods: {pods:#?}\nnode log:\n{}\ncontrol plane log:\n{}",
            tail(self.node.log()),
            tail(self.cluster.plane.log()),
        );
    }

    /// CPU the control plane, the node and Postgres use over [`IDLE`]
    /// with no request made.
    fn idle_cpu(&self) -> IdleCpu {
        let plane = self.cluster.plane.pid();
        let node = self.node.pid().expect("node runs");
        let before = (
            testkit::cpu_seconds(plane),
            testkit::cpu_seconds(node),
            testkit::postgres_cpu_seconds(),
        );
        std::thread::sleep(IDLE);
        let seconds = IDLE.as_secs_f64();
        IdleCpu {
            plane: (testkit::cpu_seconds(plane) - before.0) / seconds,
            node: (testkit::cpu_seconds(node) - before.1) / seconds,
            postgres: (testkit::postgres_cpu_seconds() - before.2) / seconds,
        }
    }

    /// A hello-http function `name` (Deployment and Service) starting at
    /// `replicas`, autoscaled from 0 to 50 pods.
    async fn create(&self, name: &str, replicas: u32, target: u32, delay: &str) {
        let deployment = json!({
            "apiVersion": skiff_api::API_VERSION, "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "autoscaling": {"minReplicas": 0, "maxReplicas": 50, "targetConcurrency": target, "scaleDownDelay": delay},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"image": self.cluster.hello_ref, "resources": {"memory": "4Mi"}},
                },
            },
        });
        let service = json!({
            "apiVersion": skiff_api::API_VERSION, "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": {"app": name}},
        });
        let api = &self.cluster.api;
        api.create(Kind::Deployment, Some("default"), &deployment)
            .await
            .expect("create deployment");
        api.create(Kind::Service, Some("default"), &service)
            .await
            .expect("create service");
    }

    /// Waits until every Service says it scales from zero, then until
    /// the node serves a sentinel function made after that: the node's
    /// watch, in revision order, has then delivered every one of them.
    fn wait_until_known(&self, runtime: &tokio::runtime::Runtime, functions: usize) {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let services = runtime
                .block_on(self.cluster.api.list_all(
                    Kind::Service,
                    Some("default"),
                    &Default::default(),
                ))
                .expect("list services");
            let marked = services
                .items
                .iter()
                .filter(|s| s["status"]["scalesFromZero"] == true)
                .count();
            if marked >= functions + 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {marked} Services scale from zero"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        runtime.block_on(self.create("sentinel", 0, 50, "10m"));
        wait_for_200(
            self.node.ingress,
            &host("sentinel"),
            Duration::from_secs(120),
        );
    }

    /// Seconds from sending one request for `host` to its 200.
    fn time(&self, host: &str) -> f64 {
        let started = Instant::now();
        let mut stream = connect(self.node.ingress).expect("ingress");
        let status = get(&mut stream, host).expect("an answer");
        let took = started.elapsed().as_secs_f64();
        assert_eq!(status, 200, "{host}");
        took
    }

    fn step(&self, runtime: &tokio::runtime::Runtime) {
        let misbehave = build_component("tests/guests", "misbehave");
        let image = format!("{}/misbehave:v1", self.cluster.registry.addr);
        self.cluster
            .ctl
            .run(&["push", path_str(&misbehave), &image]);
        let deployment = json!({
            "apiVersion": skiff_api::API_VERSION, "kind": "Deployment",
            "metadata": {"name": "step"},
            "spec": {
                "selector": {"matchLabels": {"app": "step"}},
                "autoscaling": {"minReplicas": 1, "maxReplicas": 50, "targetConcurrency": 5, "scaleDownDelay": "10m"},
                "template": {
                    "metadata": {"labels": {"app": "step"}},
                    "spec": {"image": image, "resources": {"memory": "8Mi", "maxInstances": 5}},
                },
            },
        });
        let service = json!({
            "apiVersion": skiff_api::API_VERSION, "kind": "Service",
            "metadata": {"name": "step"},
            "spec": {"selector": {"app": "step"}},
        });
        runtime.block_on(async {
            let api = &self.cluster.api;
            api.create(Kind::Deployment, Some("default"), &deployment)
                .await
                .expect("deployment");
            api.create(Kind::Service, Some("default"), &service)
                .await
                .expect("service");
        });
        wait_for_200(
            self.node.ingress,
            "step.default.svc",
            Duration::from_secs(60),
        );
        let started = Instant::now();
        let stop = AtomicBool::new(false);
        const STEADY: f64 = 10.0;
        const AFTER: f64 = 30.0;
        let seen: Vec<(f64, f64)> = std::thread::scope(|scope| {
            let mut handles = callers(
                scope,
                self.node.ingress,
                5,
                "step.default.svc",
                started,
                &stop,
            );
            std::thread::sleep(Duration::from_secs_f64(STEADY));
            handles.extend(callers(
                scope,
                self.node.ingress,
                45,
                "step.default.svc",
                started,
                &stop,
            ));
            std::thread::sleep(Duration::from_secs_f64(AFTER));
            stop.store(true, Ordering::SeqCst);
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("a caller"))
                .collect()
        });
        let window = |from: f64, to: f64| -> Vec<f64> {
            seen.iter()
                .filter(|(at, _)| *at >= from && *at < to)
                .map(|(_, l)| *l)
                .collect()
        };
        // The steady p99 over its last five seconds (the first pods warm).
        let steady = percentile(&window(STEADY - 5.0, STEADY), 99);
        let halves: Vec<(f64, f64)> = (0..(AFTER * 2.0) as usize)
            .map(|i| {
                let from = STEADY + i as f64 / 2.0;
                let latencies = window(from, from + 0.5);
                (
                    from - STEADY,
                    if latencies.is_empty() {
                        f64::INFINITY
                    } else {
                        percentile(&latencies, 99)
                    },
                )
            })
            .collect();
        let settled = (0..halves.len())
            .find(|&i| halves[i..].iter().all(|(_, p99)| *p99 <= 2.0 * steady))
            .map(|i| halves[i].0 + 0.5);
        let peak = halves.iter().map(|(_, p)| *p).fold(0.0, f64::max);
        let pods = runtime
            .block_on(
                self.cluster
                    .api
                    .get(Kind::Deployment, Some("default"), "step"),
            )
            .map(|d| d["spec"]["replicas"].as_u64().unwrap_or(0))
            .unwrap_or(0);
        println!(
            "step: 5 -> 50 callers of 50 ms requests (targetConcurrency 5, 5 instances a pod):"
        );
        println!(
            "  steady p99 {:.1} ms; worst half-second p99 after the step {:.1} ms; pods at the end {pods}",
            steady * 1000.0,
            peak * 1000.0
        );
        match settled {
            Some(s) => println!(
                "  p99 back within 2x of steady, and staying there, {s:.1} s after the step   (target < 5 s)"
            ),
            None => println!("  p99 not back within 2x of steady in {AFTER} s"),
        }
    }

    fn burst(&self, runtime: &tokio::runtime::Runtime, requests: usize) {
        let ok = AtomicUsize::new(0);
        // What the others got: a status, or why there was none.
        let others = std::sync::Mutex::new(std::collections::BTreeMap::<String, usize>::new());
        let done = AtomicBool::new(false);
        let peak = AtomicU64::new(0);
        let ingress: SocketAddr = self.node.ingress;
        let started = Instant::now();
        let took = std::thread::scope(|scope| {
            scope.spawn(|| {
                while !done.load(Ordering::SeqCst) {
                    if let Ok(d) = runtime.block_on(self.cluster.api.get(
                        Kind::Deployment,
                        Some("default"),
                        "burst",
                    )) {
                        peak.fetch_max(
                            d["spec"]["replicas"].as_u64().unwrap_or(0),
                            Ordering::SeqCst,
                        );
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            let calls: Vec<_> = (0..requests)
                .map(|_| {
                    scope.spawn(|| {
                        let answered =
                            connect(ingress).and_then(|mut s| get(&mut s, &host("burst")));
                        match answered {
                            Ok(200) => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            other => {
                                let what = match other {
                                    Ok(status) => format!("status {status}"),
                                    Err(e) => format!("no answer: {e}"),
                                };
                                *others.lock().unwrap().entry(what).or_default() += 1;
                            }
                        }
                    })
                })
                .collect();
            for call in calls {
                call.join().expect("a caller");
            }
            let took = started.elapsed();
            // The autoscaler may still be acting on what it sampled.
            std::thread::sleep(Duration::from_secs(3));
            done.store(true, Ordering::SeqCst);
            took
        });
        println!("burst from zero ({requests} concurrent requests, targetConcurrency 50):");
        println!(
            "  {} of {requests} answered 200; all answered in {:.1} ms; most pods asked for: {}",
            ok.load(Ordering::SeqCst),
            took.as_secs_f64() * 1000.0,
            peak.load(Ordering::SeqCst)
        );
        let others = others.into_inner().unwrap();
        for (what, n) in &others {
            println!("  {n} got {what}");
        }
        // What the node said of it, when it failed requests.
        if !others.is_empty() {
            let log = self.node.log();
            let said: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            for line in &said[said.len().saturating_sub(10)..] {
                println!("  node: {line}");
            }
        }
    }
}

/// Latencies of `callers` callers looping over `/sleep?ms=50` of `host`
/// on kept-alive connections to `ingress` until `stop`: (seconds since
/// `from` at the answer, latency in seconds).
fn callers<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    ingress: SocketAddr,
    callers: usize,
    host: &'static str,
    from: Instant,
    stop: &'env AtomicBool,
) -> Vec<std::thread::ScopedJoinHandle<'scope, Vec<(f64, f64)>>> {
    (0..callers)
        .map(|_| {
            scope.spawn(move || {
                let mut seen = Vec::new();
                let mut stream = connect(ingress).expect("ingress");
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    match get_path(&mut stream, host, "/sleep?ms=50") {
                        Ok(200) => {
                            seen.push((from.elapsed().as_secs_f64(), sent.elapsed().as_secs_f64()))
                        }
                        Ok(status) => panic!("{host}: {status}"),
                        Err(_) => stream = connect(ingress).expect("ingress"),
                    }
                }
                seen
            })
        })
        .collect()
}
