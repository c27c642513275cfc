//! A node's caps on what it pulls, through a real cluster: a pod of an
//! image over them fails with a reason naming the cap, and the node goes
//! on serving its other pods.

use serde_json::json;
use testkit::{Containerd, push_busybox_image};

use crate::nodes::{NodeCluster, pod};
use crate::support::http_request;

#[test]
fn an_image_over_the_nodes_size_cap_fails_its_pod_and_the_node_serves_on() {
    let containerd = Containerd::start();
    let socket = containerd.socket.display().to_string();
    // busybox unpacks to megabytes: far over 64Ki.
    let cluster = NodeCluster::start(&[(
        "linux",
        &[
            "--containerd-socket",
            socket.as_str(),
            "--max-image-size",
            "64Ki",
        ],
    )]);
    let image = format!("{}/busybox:big", cluster.registry.addr);
    push_busybox_image(&image, &["sleep", "3600"]);
    let mut big = pod("big", &image, json!({}));
    big["spec"]["runtime"] = json!("Linux");
    cluster.apply(&[big, pod("hello", &cluster.hello, json!({}))]);

    let big = cluster.wait_pod("big", "refused for its size", |p| {
        p["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("over") && m.contains("65536 bytes"))
    });
    assert_eq!(big["status"]["reason"], "InvalidImage", "{big:#}");
    let message = big["status"]["message"].as_str().unwrap();
    // The reference as the node pulled it: pinned to its digest.
    let repository = format!("{}/busybox@sha256:", cluster.registry.addr);
    assert!(message.starts_with(&repository), "{message}");
    let described = cluster.cluster.ok(&["describe", "pod", "big"]);
    assert!(described.contains("65536 bytes"), "{described}");

    // The node is untouched: its other pod runs and answers.
    cluster.wait_running("hello");
    let ingress = cluster.node("linux").ingress;
    let response = http_request(ingress, "hello.default.pod", "/hello", &[]).unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body, "Hello, world! (GET /hello)\n");
    // And the refused pod stays refused, never half-pulled into containerd.
    assert_eq!(cluster.pod("big")["status"]["reason"], "InvalidImage");
}
