//! A node agent embedded in a process, as `wasmctl dev` runs one: its
//! loops end with its shutdown, not with the process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use skiff_api::Kind;
use skiff_client::{Client, ClientConfig};
use wasm_node::agent::{Agent, AgentConfig};

use crate::cluster::Cluster;
use crate::support::temp_dir;

/// Checks `condition` every 50 ms until it holds; fails naming `what`
/// after 20 s.
async fn eventually<Fut: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> Fut) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
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
            max_instance_memory: 64 << 20,
            max_concurrent_instances: 10,
            namespace_instances: None,
            cpu_slots: None,
            containerd_socket: None,
            snapshotter: "overlayfs".into(),
            linux_limits: Default::default(),
        })
        .await
        .unwrap();
        let ingress: SocketAddr = agent.endpoint.parse().unwrap();
        assert!(tokio::net::TcpStream::connect(ingress).await.is_ok());
        // The agent renews its lease: a node whose lease lapsed would be
        // marked NotReady by the node lifecycle within a second or two.
        assert_eq!(ready(&client, "embedded").await.0, "True");

        agent.shutdown().await;
        eventually("the ingress refuses connections", || async {
            tokio::net::TcpStream::connect(ingress).await.is_err()
        })
        .await;
        eventually("the node's lease lapses", || async {
            ready(&client, "embedded").await == ("False".into(), "NodeLeaseExpired".into())
        })
        .await;
    });
}
