//! A node cut off from the control plane (a relay between them that stops
//! forwarding, without closing anything): a `KeepRunning` pod serves on,
//! a `partitionPolicy: Stop` pod stops before the control plane may evict
//! it, its replacement runs elsewhere, and the healed node never starts
//! the evicted copy again.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::relay::Relay;
use testkit::{Node, wait_until};

use crate::nodes::{NodeCluster, WAIT, pod};
use crate::support::{HttpResponse, http_request};

/// Lease renewed every second, good for four: the node stops `Stop` pods
/// three seconds after its last renewal went out (duration − interval),
/// the control plane evicts no sooner than four.
const FLAGS: &[&str] = &[
    "--backoff",
    "200ms",
    "--backoff-max",
    "1s",
    "--lease-interval",
    "1s",
    "--lease-duration",
    "4s",
    "--grace",
    "1s",
];
const LEASE_DURATION: Duration = Duration::from_secs(4);

fn ask(ingress: SocketAddr, pod: &str) -> std::io::Result<HttpResponse> {
    http_request(
        ingress,
        &format!("{pod}.default.pod"),
        &format!("/{pod}"),
        &[],
    )
}

fn answers(ingress: SocketAddr, pod: &str) -> bool {
    ask(ingress, pod).is_ok_and(|r| r.status == 200)
}

/// The Deployment's pods, as the API has them now.
fn pods_of(cluster: &NodeCluster, app: &str) -> Vec<Value> {
    let selector = format!("app={app}");
    cluster.json(&["get", "pods", "-l", &selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn not_ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "False")
}

#[test]
fn a_cut_off_node_keeps_or_stops_its_pods_as_each_pod_chose() {
    let mut cluster = NodeCluster::start(&[]);
    let plane: SocketAddr = cluster
        .cluster
        .plane
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("the control plane's host:port");
    let relay = Relay::start(plane);
    let token = cluster.cluster.ok(&["create", "token", "--node", "cut"]);
    let binary = testkit::binary("wasm-node");
    let server = format!("http://{}", relay.addr());
    cluster
        .nodes
        .push(Node::start(&binary, &server, token.trim(), "cut", FLAGS));
    let ingress = cluster.node("cut").ingress;

    // One bare pod that keeps running, one Deployment's pod that stops.
    let keeper = pod("keeper", &cluster.hello, json!({}));
    let stopper = json!({
        "apiVersion": "skiff.dev/v1",
        "kind": "Deployment",
        "metadata": {"name": "stopper"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "stopper"}},
            "template": {
                "metadata": {"labels": {"app": "stopper"}},
                "spec": {"image": cluster.hello, "partitionPolicy": "Stop"},
            },
        },
    });
    cluster.apply(&[keeper, stopper]);
    cluster.wait_running("keeper");
    let mut stopper_pods = Vec::new();
    assert!(
        wait_until(WAIT, || {
            stopper_pods = pods_of(&cluster, "stopper");
            stopper_pods.len() == 1 && stopper_pods[0]["status"]["phase"] == "Running"
        }),
        "the Deployment's pod never ran: {stopper_pods:#?}"
    );
    let old = stopper_pods[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let old_uid = stopper_pods[0]["metadata"]["uid"].clone();
    assert_eq!(
        stopper_pods[0]["spec"]["partitionPolicy"], "Stop",
        "the template's policy reaches the pod"
    );
    assert!(wait_until(WAIT, || answers(ingress, "keeper")
        && answers(ingress, &old)));

    // A node for the replacement, on a link that stays up.
    let spare_token = cluster.cluster.ok(&["create", "token", "--node", "spare"]);
    let plane_url = cluster.cluster.plane.url.clone();
    cluster.nodes.push(Node::start(
        &binary,
        &plane_url,
        spare_token.trim(),
        "spare",
        FLAGS,
    ));

    relay.pause();
    let cut_at = Instant::now();

    // The Stop pod stops answering within the lease's duration, while the
    // control plane still has it bound to the cut node: not evicted, and
    // the node not yet taken for NotReady.
    assert!(
        wait_until(LEASE_DURATION, || !answers(ingress, &old)),
        "the Stop pod still answered {LEASE_DURATION:?} after the cut:\n{}",
        cluster.node("cut").log()
    );
    let stopped_after = cut_at.elapsed();
    let still = cluster.pod(&old);
    assert_eq!(
        still["metadata"]["uid"], old_uid,
        "evicted before it stopped"
    );
    assert_eq!(still["spec"]["nodeName"], "cut");
    assert!(
        !not_ready(&cluster.json(&["get", "node", "cut"])),
        "the control plane took the node for NotReady before its Stop pod stopped"
    );
    assert!(answers(ingress, "keeper"), "the KeepRunning pod stopped");

    // The control plane gives up on the node, evicts its pods and the
    // Deployment's replacement runs on the spare node; the cut node still
    // serves the KeepRunning pod it was not told about.
    let mut replacement = Value::Null;
    assert!(
        wait_until(WAIT, || {
            replacement = pods_of(&cluster, "stopper")
                .into_iter()
                .find(|p| p["metadata"]["uid"] != old_uid && p["status"]["phase"] == "Running")
                .unwrap_or(Value::Null);
            !replacement.is_null()
        }),
        "no replacement ran"
    );
    assert_eq!(replacement["spec"]["nodeName"], "spare");
    assert!(not_ready(&cluster.json(&["get", "node", "cut"])));
    assert!(
        answers(ingress, "keeper"),
        "the KeepRunning pod stopped while cut off"
    );
    assert!(
        !answers(ingress, &old),
        "the Stop pod ran again while cut off"
    );
    eprintln!("the Stop pod stopped {stopped_after:?} after the cut");

    // Healed, the node learns of the evictions: the KeepRunning pod stops
    // (it was deleted), and the Stop pod's evicted copy never ran again.
    relay.resume();
    assert!(
        wait_until(WAIT, || !answers(ingress, "keeper")),
        "the healed node kept the evicted pod:\n{}",
        cluster.node("cut").log()
    );
    assert!(!answers(ingress, &old), "the evicted Stop pod ran again");
    let spare = cluster.node("spare").ingress;
    let new = replacement["metadata"]["name"].as_str().unwrap();
    assert!(
        answers(spare, new),
        "the replacement answers on the spare node"
    );
}

#[test]
fn a_stop_pod_runs_again_when_its_node_renews_before_eviction() {
    let mut cluster = NodeCluster::start(&[]);
    // Eviction waits long enough that the cut can heal first.
    let binary = testkit::binary("control-plane");
    let listen = cluster
        .cluster
        .plane
        .url
        .trim_start_matches("http://")
        .to_owned();
    cluster.cluster.plane.kill();
    cluster.cluster.plane = testkit::ControlPlane::start_at(
        &binary,
        &cluster.cluster.database,
        &listen,
        &["--pod-eviction-timeout", "10m"],
    );
    let relay = Relay::start(listen.parse().expect("host:port"));
    let token = cluster.cluster.ok(&["create", "token", "--node", "cut"]);
    let server = format!("http://{}", relay.addr());
    cluster.nodes.push(Node::start(
        &testkit::binary("wasm-node"),
        &server,
        token.trim(),
        "cut",
        FLAGS,
    ));
    let ingress = cluster.node("cut").ingress;
    cluster.apply_pods(
        &["stopper".to_owned()],
        &cluster.hello,
        json!({"partitionPolicy": "Stop"}),
    );
    let running = cluster.wait_running("stopper");
    assert!(wait_until(WAIT, || answers(ingress, "stopper")));

    relay.pause();
    assert!(
        wait_until(LEASE_DURATION, || !answers(ingress, "stopper")),
        "the Stop pod still answered {LEASE_DURATION:?} after the cut"
    );
    // Once the node is taken for NotReady, the lease has surely lapsed.
    assert!(wait_until(WAIT, || not_ready(
        &cluster.json(&["get", "node", "cut"])
    )));
    assert!(!answers(ingress, "stopper"));

    relay.resume();
    let healed = Instant::now();
    assert!(
        wait_until(WAIT, || answers(ingress, "stopper")),
        "the Stop pod did not run again after the lease was renewed:\n{}",
        cluster.node("cut").log()
    );
    eprintln!(
        "the Stop pod ran again {:?} after the link healed",
        healed.elapsed()
    );
    let after = cluster.pod("stopper");
    assert_eq!(after["metadata"]["uid"], running["metadata"]["uid"]);
    assert_eq!(after["spec"]["nodeName"], "cut");
}
