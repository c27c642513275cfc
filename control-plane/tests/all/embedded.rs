//! Embedded control planes (`control_plane::embedded`) on one database,
//! each in a runtime of its own so that what it leaves running can be
//! counted: shut down, one stops every task it started and gives up its
//! leadership to the other.

use std::time::Duration;

use control_plane::embedded::{ControlPlane, Started};
use control_plane::server::ServerConfig;
use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_client::{Client, ClientConfig};
use testkit::Postgres;
use tokio::runtime::Runtime;

use crate::support::eventually;

fn config(database_url: &str) -> ServerConfig {
    ServerConfig {
        database_url: database_url.to_owned(),
        encryption_key_file: testkit::encryption_key_file(database_url),
        listen: ([127, 0, 0, 1], 0).into(),
        tls: None,
        listener: Default::default(),
        pool: Default::default(),
        retain_changes: 100_000,
        compaction_interval: Duration::from_secs(60),
        database_wait: Duration::from_secs(10),
        token_cache_ttl: Duration::from_secs(10),
        scheduler: true,
        scheduling: Default::default(),
        controllers: true,
        node_lifecycle: Default::default(),
        event_ttl: control_plane::events::DEFAULT_TTL,
        api: Default::default(),
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Starts an embedded control plane on `runtime`; returns it, its URL and
/// the admin token if it initialized the cluster.
async fn start(runtime: &Runtime, database_url: &str) -> (ControlPlane, String, Option<String>) {
    let config = config(database_url);
    runtime
        .spawn(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("address"));
            let Started {
                control_plane,
                admin_token,
            } = ControlPlane::start(listener, config, &Default::default())
                .await
                .expect("the control plane starts");
            (control_plane, url, admin_token)
        })
        .await
        .expect("start task")
}

fn client(url: &str, token: &str) -> Client {
    Client::new(&ClientConfig {
        server: url.to_owned(),
        token: token.to_owned(),
        ..Default::default()
    })
    .expect("client")
}

async fn create_node(api: &Client) {
    let allocatable = json!({"allocatable": {"memory": "1Gi", "instances": 10}});
    crate::support::ready_node(api, "n1", allocatable).await;
}

async fn create_pod(api: &Client, name: &str) {
    let pod = json!({
        "apiVersion": skiff_api::API_VERSION, "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"image": "127.0.0.1:5000/hello:v1", "runtime": "Wasm"},
    });
    api.create(Kind::Pod, Some("default"), &pod)
        .await
        .expect("pod");
}

async fn bound_to(api: &Client, name: &str) -> Value {
    eventually(
        &format!("pod {name} bound"),
        || async {
            api.get(Kind::Pod, Some("default"), name)
                .await
                .expect("get pod")["spec"]["nodeName"]
                .clone()
        },
        |node| node == "n1",
    )
    .await
}

#[test]
fn a_control_plane_shut_down_stops_its_loops_and_hands_leadership_over() {
    let database_url = Postgres::shared().create_database();
    let (first_runtime, second_runtime, driver) = (runtime(), runtime(), runtime());
    driver.block_on(async {
        let (first, first_url, admin_token) = start(&first_runtime, &database_url).await;
        let admin_token = admin_token.expect("the first start initializes the cluster");
        let api = client(&first_url, &admin_token);
        create_node(&api).await;
        // Alone, the first one leads: it binds.
        create_pod(&api, "before").await;
        bound_to(&api, "before").await;

        let (second, second_url, again) = start(&second_runtime, &database_url).await;
        assert!(
            again.is_none(),
            "an initialized cluster is not initialized again"
        );
        first_runtime
            .spawn(first.shutdown())
            .await
            .expect("shutdown task")
            .expect("the first control plane stops cleanly");
        // Everything the first one started has ended: its API, watch hub,
        // compactor, leadership loops and the terms they led.
        let left = eventually(
            "the first control plane's tasks to end",
            || async { first_runtime.metrics().num_alive_tasks() },
            |&alive| alive == 0,
        )
        .await;
        assert_eq!(left, 0);

        // The second one takes the scheduler's lock and binds.
        let api = client(&second_url, &admin_token);
        create_pod(&api, "after").await;
        bound_to(&api, "after").await;
        second_runtime
            .spawn(second.shutdown())
            .await
            .expect("shutdown task")
            .expect("the second control plane stops cleanly");
    });
    for runtime in [first_runtime, second_runtime, driver] {
        runtime.shutdown_timeout(Duration::from_secs(5));
    }
}
