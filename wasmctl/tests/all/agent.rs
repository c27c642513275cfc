//! A node agent embedded in a process, as `wasmctl dev` runs one: its
//! loops end with its shutdown, not with the process. And what an agent
//! does with a stopped pod's requests still running.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_client::{Client, ClientConfig};
use testkit::wait_until;
use wasm_node::agent::{Agent, AgentConfig};

use crate::cluster::Cluster;
use crate::nodes::{NodeCluster, WAIT, pod, push};
use crate::support::{Upstream, http_request, temp_dir, test_guest};

/// Checks `condition` every 50 ms until it holds; fails naming `what`
/// after 20 s, with the control plane's log.
async fn eventually<Fut: Future<Output = bool>>(
    cluster: &Cluster,
    what: &str,
    mut condition: impl FnMut() -> Fut,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}; the control plane's log:\n{}",
            cluster.plane.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Node's Ready condition, as (status, reason).
async fn ready(client: &Client, node: &str) -> (String, String) {
    let node: Value = client.get(Kind::Node, None, node).await.unwrap();
    let condition = node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap_or_default();
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (text(&condition["status"]), text(&condition["reason"]))
}

#[test]
fn a_shut_down_agent_stops_serving_and_renewing_its_lease() {
    let cluster = Cluster::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = Client::new(&ClientConfig {
            server: cluster.plane.url.clone(),
            token: cluster.token.clone(),
            ..Default::default()
        })
        .unwrap();
        let agent = Agent::start(AgentConfig {
            name: "embedded".into(),
            client: client.clone(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            memory: "1Gi".into(),
            instances: 10,
            cpu: "1".into(),
            ingress: "127.0.0.1:0".parse().unwrap(),
            advertise: None,
            serve_cluster_hosts: None,
            listener: skiff_serve::Limits::default(),
            lease_interval: Duration::from_millis(200),
            lease_duration: Duration::from_secs(1),
            data_dir: temp_dir("embedded-agent"),
            secrets_dir: None,
            pod_token_duration: Duration::from_secs(3600),
            blob_cache_bytes: 64 << 20,
            insecure_registries: Vec::new(),
            registry_limits: Default::default(),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(1),
            grace: Duration::from_secs(1),
            hold: Default::default(),
            max_instance_memory: 64 << 20,
            max_concurrent_instances: 10,
            namespace_instances: None,
            cpu_slots: None,
            containerd_socket: None,
            snapshotter: "overlayfs".into(),
            linux_limits: Default::default(),
            pod_logs: Default::default(),
            pod_metrics: true,
        })
        .await
        .unwrap();
        let ingress: SocketAddr = agent.endpoint.parse().unwrap();
        assert!(tokio::net::TcpStream::connect(ingress).await.is_ok());
        // The agent renews its lease: a node whose lease lapsed would be
        // marked NotReady by the node lifecycle within a second or two.
        assert_eq!(ready(&client, "embedded").await.0, "True");

        agent.shutdown().await;
        eventually(&cluster, "the ingress refuses connections", || async {
            tokio::net::TcpStream::connect(ingress).await.is_err()
        })
        .await;
        eventually(&cluster, "the node's lease lapses", || async {
            ready(&client, "embedded").await == ("False".into(), "NodeLeaseExpired".into())
        })
        .await;
    });
}

/// A deleted pod's requests get the node's grace (1 s here) to finish and
/// are then ended, not left to run to the pod's own timeout (10 minutes
/// here) acting on the world while the pod is gone: a guest spinning in
/// its own code and one waiting in the host on an outbound request alike,
/// whichever of them came first. A lone spinning guest must not keep its
/// worker thread from the rest of the node: that hid the second request,
/// and then the pod's stop, behind it.
#[test]
fn a_deleted_pods_requests_are_ended_once_its_grace_is_over() {
    let cluster = NodeCluster::start(&[("n1", &[])]);
    let image = format!("{}/misbehave:v1", cluster.registry.addr);
    push(&test_guest("misbehave"), &image);
    let upstream = Upstream::start("late", Duration::from_secs(600));
    let ingress = cluster.node("n1").ingress;
    for (name, spin_first) in [("spin-first", true), ("fetch-first", false)] {
        cluster.apply(&[pod(
            name,
            &image,
            json!({
                "resources": {"timeout": "10m"},
                "allowOutbound": [upstream.addr.to_string()],
            }),
        )]);
        cluster.wait_running(name);
        let host = format!("{name}.default.pod");
        let ask = |path: String| {
            let host = host.clone();
            std::thread::spawn(move || {
                let response = http_request(ingress, &host, &path, &[]);
                (response, Instant::now())
            })
        };
        let hits = upstream.hits();
        let fetch = format!("/fetch?url=http://{}/", upstream.addr);
        let (spinning, waiting) = if spin_first {
            // By the time the second reaches the upstream, the first spins.
            let spinning = ask("/loop".into());
            (spinning, ask(fetch))
        } else {
            let waiting = ask(fetch);
            assert!(
                wait_until(WAIT, || upstream.hits() == hits + 1),
                "{name}: the outbound request never went out"
            );
            (ask("/loop".into()), waiting)
        };
        assert!(
            wait_until(WAIT, || upstream.hits() == hits + 1),
            "{name}: the outbound request never went out\n{}",
            cluster.node("n1").log()
        );

        let deleted = Instant::now();
        cluster.cluster.ok(&["delete", "pod", name]);
        for (what, request) in [("/loop", spinning), ("/fetch", waiting)] {
            let (response, answered) = request.join().unwrap();
            let took = answered.saturating_duration_since(deleted);
            // Grace, plus the deletion reaching the node: far below the
            // pod's timeout, and below the client's own read timeout.
            assert!(
                took < Duration::from_secs(15),
                "{name}: {what} went on for {took:?} after its pod was deleted: {response:?}\n{}",
                cluster.node("n1").log()
            );
            // Its answer, if the head was not sent yet, says why.
            if let Ok(response) = response {
                assert_eq!(response.status, 503, "{name}: {what}: {}", response.body);
                assert!(
                    response.body.contains("the pod stopped"),
                    "{name}: {what}: {}",
                    response.body
                );
            }
        }
    }
}
