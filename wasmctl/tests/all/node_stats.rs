//! A node's usage samples, as its metrics (`--metrics-listen`) show them:
//! each running pod's CPU time and memory (a Wasm pod's instances, a
//! Linux pod's cgroup), the instance slots, image pulls and cache hits.

use std::net::SocketAddr;

use serde_json::json;
use testkit::{Containerd, push_busybox_image, wait_until};

use crate::nodes::{NodeCluster, WAIT, pod, push};
use crate::support::{http_get, http_request, test_guest};

/// The node's metrics now.
fn scrape(metrics: SocketAddr) -> String {
    let response = http_get(metrics, "/metrics").expect("the metrics listener answers");
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

/// The value of the series named exactly `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// A series (name and labels) and what its value must be.
type Expected<'a> = (&'a str, fn(f64) -> bool);

/// Waits until every series given holds a value `check` accepts; panics
/// with the last scrape otherwise.
fn wait_for(metrics: SocketAddr, what: &str, series: &[Expected]) -> String {
    let mut text = String::new();
    let seen = wait_until(WAIT, || {
        text = scrape(metrics);
        series
            .iter()
            .all(|(series, check)| value(&text, series).is_some_and(check))
    });
    assert!(seen, "{what}: never seen in\n{text}");
    text
}

fn positive(v: f64) -> bool {
    v > 0.0
}

fn metrics_node(extra: &[&str]) -> (NodeCluster, SocketAddr) {
    let metrics = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let listen = metrics.to_string();
    let mut flags = vec![
        "--metrics-listen",
        listen.as_str(),
        "--max-concurrency",
        "500",
    ];
    flags.extend_from_slice(extra);
    let cluster = NodeCluster::start(&[("n1", &flags)]);
    (cluster, metrics)
}

#[test]
fn a_wasm_pods_cpu_memory_pulls_and_cache_hits_show_in_the_nodes_metrics() {
    let (cluster, metrics) = metrics_node(&[]);
    let image = format!("{}/misbehave:v1", cluster.registry.addr);
    push(&test_guest("misbehave"), &image);
    cluster.apply(&[pod("busy", &image, json!({}))]);
    cluster.wait_running("busy");
    // The first pod of the image: downloaded and compiled.
    wait_for(
        metrics,
        "the first pull",
        &[
            (
                r#"skiff_node_image_pulls_total{runtime="wasm",result="success"}"#,
                |v| v == 1.0,
            ),
            (r#"skiff_node_cache_misses_total{cache="blob"}"#, |v| {
                v == 1.0
            }),
            (r#"skiff_node_cache_misses_total{cache="compiled"}"#, |v| {
                v == 1.0
            }),
            (r#"skiff_node_cache_hits_total{cache="blob"}"#, |v| v == 0.0),
            ("skiff_node_instance_slots", |v| v == 500.0),
        ],
    );

    let ingress = cluster.node("n1").ingress;
    // An instance held alive in the host while the node samples: its
    // memory is the pod's, its slot in use.
    let sleeping = std::thread::spawn(move || {
        http_request(ingress, "busy.default.pod", "/sleep?ms=15000", &[])
            .map(|r| (r.status, r.body))
    });
    for _ in 0..5 {
        let response = http_request(ingress, "busy.default.pod", "/burn?n=20000000", &[]).unwrap();
        assert_eq!(response.status, 200, "{}", response.body);
    }
    wait_for(
        metrics,
        "the pod's CPU and memory",
        &[
            (
                r#"skiff_pod_cpu_seconds_total{namespace="default",pod="busy"}"#,
                positive,
            ),
            (
                r#"skiff_pod_memory_bytes{namespace="default",pod="busy"}"#,
                positive,
            ),
            ("skiff_node_instance_slots_in_use", positive),
            (
                r#"skiff_pod_requests_total{namespace="default",pod="busy",class="2xx"}"#,
                |v| v >= 5.0,
            ),
        ],
    );
    let (status, body) = sleeping.join().unwrap().expect("the sleeping request");
    assert_eq!(status, 200, "{body}");

    // A second pod of the image: nothing downloaded or compiled again.
    cluster.apply(&[pod("busy-2", &image, json!({}))]);
    cluster.wait_running("busy-2");
    let text = wait_for(
        metrics,
        "the second pod's cache hits",
        &[
            (r#"skiff_node_cache_hits_total{cache="blob"}"#, |v| v >= 1.0),
            (r#"skiff_node_cache_hits_total{cache="compiled"}"#, |v| {
                v >= 1.0
            }),
            (
                r#"skiff_pod_memory_bytes{namespace="default",pod="busy-2"}"#,
                |v| v >= 0.0,
            ),
        ],
    );
    assert_eq!(
        value(
            &text,
            r#"skiff_node_image_pulls_total{runtime="wasm",result="success"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, r#"skiff_node_cache_misses_total{cache="blob"}"#),
        Some(1.0),
        "{text}"
    );

    // A pod that leaves takes its series along, at the next sample.
    cluster.cluster.ok(&["delete", "pod", "busy-2"]);
    let mut text = String::new();
    let gone = wait_until(WAIT, || {
        text = scrape(metrics);
        !text.contains(r#"pod="busy-2""#)
    });
    assert!(gone, "busy-2's series stayed:\n{text}");
    assert!(text.contains(r#"skiff_pod_cpu_seconds_total{namespace="default",pod="busy"}"#));
}

#[test]
fn a_linux_pods_cgroup_cpu_and_memory_show_in_the_nodes_metrics() {
    let containerd = Containerd::start();
    let socket = containerd.socket.display().to_string();
    let (cluster, metrics) = metrics_node(&["--containerd-socket", &socket]);
    let image = format!("{}/busybox:counts", cluster.registry.addr);
    // Some CPU time, then an idle process that keeps its memory.
    push_busybox_image(
        &image,
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; exec sleep 600",
        ],
    );
    let mut linux = pod("counts", &image, json!({}));
    linux["spec"]["runtime"] = json!("Linux");
    cluster.apply(&[linux]);
    cluster.wait_running("counts");
    wait_for(
        metrics,
        "the Linux pod's cgroup",
        &[
            (
                r#"skiff_pod_cpu_seconds_total{namespace="default",pod="counts"}"#,
                positive,
            ),
            (
                r#"skiff_pod_memory_bytes{namespace="default",pod="counts"}"#,
                positive,
            ),
            (
                r#"skiff_node_image_pulls_total{runtime="linux",result="success"}"#,
                |v| v == 1.0,
            ),
            (r#"skiff_node_cache_misses_total{cache="layers"}"#, |v| {
                v == 1.0
            }),
        ],
    );
    cluster.cluster.ok(&["delete", "pod", "counts"]);
    let mut text = String::new();
    let gone = wait_until(WAIT, || {
        text = scrape(metrics);
        !text.contains(r#"pod="counts""#)
    });
    assert!(gone, "the Linux pod's series stayed:\n{text}");
}
