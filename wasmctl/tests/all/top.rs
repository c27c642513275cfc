//! `wasmctl top pods|nodes` on a cluster of real processes: usage sampled
//! by the node, asked of it by the API when a client asks, shown per pod
//! and per node; and who may see it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use testkit::wait_until;

use crate::nodes::{NodeCluster, WAIT, pod};
use crate::support::http_request;

fn api_get(plane: SocketAddr, path: &str, token: &str) -> (u16, String) {
    let response = http_request(
        plane,
        &plane.to_string(),
        &format!("/apis/skiff.dev/v1/{path}"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .expect("the API answers");
    (response.status, response.body)
}

#[test]
fn top_shows_what_pods_and_nodes_use_to_those_who_may_see_it() {
    let cluster = NodeCluster::start(&[("top-1", &[])]);
    cluster.apply(&[
        pod("busy", &cluster.hello, json!({})),
        pod("idle", &cluster.hello, json!({})),
    ]);
    cluster.wait_running("busy");
    cluster.wait_running("idle");
    let ingress = cluster.nodes[0].ingress;

    // Steady requests to one pod while the node samples.
    let stop = Arc::new(AtomicBool::new(false));
    let load = std::thread::spawn({
        let stop = stop.clone();
        move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = http_request(ingress, "busy.default.pod", "/", &[]);
            }
        }
    });
    let plane = cluster.cluster.api_addr();
    let admin = cluster.cluster.token.clone();
    let pod_of = |list: &Value, name: &str| -> Option<Value> {
        list["items"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
    };
    let mut last = Value::Null;
    let busy = wait_until(WAIT, || {
        let (status, body) = api_get(plane, "namespaces/default/podmetrics", &admin);
        assert_eq!(status, 200, "{body}");
        last = serde_json::from_str(&body).unwrap();
        pod_of(&last, "busy").is_some_and(|p| {
            p["requestsPerSecond"].as_f64() > Some(1.0) && p["cpuCores"].as_f64() > Some(0.0)
        })
    });
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert!(busy, "busy's usage never showed:\n{last:#}");
    let busy = pod_of(&last, "busy").unwrap();
    assert_eq!(busy["node"], "top-1");
    assert_eq!(busy["namespace"], "default");
    // Nodes run without fuel metering: no figure rather than a made-up one.
    assert_eq!(busy["fuelPerSecond"], Value::Null);
    let idle = pod_of(&last, "idle").expect("idle is listed too");
    assert_eq!(idle["requestsPerSecond"].as_f64(), Some(0.0), "{idle}");
    assert_eq!(last["unavailable"], json!([]));

    // The tables.
    let pods = cluster.cluster.ok(&["top", "pods"]);
    let header: Vec<&str> = pods.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "CPU(cores)", "MEMORY", "REQ/S", "FUEL/S", "NODE"],
        "{pods}"
    );
    for name in ["busy", "idle"] {
        assert!(
            pods.lines()
                .any(|l| l.starts_with(name) && l.ends_with("top-1")),
            "{pods}"
        );
    }
    let selected = cluster.cluster.ok(&["top", "pods", "-l", "app=idle"]);
    assert!(!selected.contains("busy"), "{selected}");
    assert!(selected.contains("idle"), "{selected}");
    let nodes = cluster.cluster.ok(&["top", "nodes"]);
    let row: Vec<&str> = nodes
        .lines()
        .find(|l| l.starts_with("top-1"))
        .unwrap_or_else(|| panic!("no top-1 in\n{nodes}"))
        .split_whitespace()
        .collect();
    assert_eq!(row.len(), 7, "{nodes}");
    assert!(row[1].ends_with('m'), "CPU in millicores: {nodes}");
    let (used, slots) = row[5].split_once('/').expect("INSTANCES used/slots");
    assert!(
        used.parse::<u64>().is_ok() && slots.parse::<u64>().unwrap() > 0,
        "{nodes}"
    );
    assert_eq!(row[6], "2", "two pods: {nodes}");

    // Who may see it.
    cluster.cluster.ok(&["create", "namespace", "other"]);
    let other = cluster
        .cluster
        .ok(&["create", "token", "-n", "other", "--role", "admin"]);
    let view = cluster
        .cluster
        .ok(&["create", "token", "-n", "default", "--role", "view"]);
    let metrics = cluster.cluster.ok(&["create", "token", "--metrics"]);
    for (path, token, status) in [
        ("namespaces/default/podmetrics", other.trim(), 403),
        ("namespaces/default/podmetrics", view.trim(), 200),
        ("podmetrics", view.trim(), 403),
        ("nodemetrics", view.trim(), 403),
        ("nodemetrics", metrics.trim(), 200),
        ("podmetrics", metrics.trim(), 200),
        (
            "namespaces/default/podmetrics?labelSelector=a%3D%3D%3Db",
            admin.as_str(),
            400,
        ),
        ("namespaces/default/podmetrics?limit=1", admin.as_str(), 400),
    ] {
        let (got, body) = api_get(plane, path, token);
        assert_eq!(got, status, "{path}: {body}");
        if got == 403 {
            assert!(!body.contains("busy"), "{body}");
        }
    }
}
