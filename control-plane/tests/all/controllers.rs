//! Controllers in real control-plane processes: the Deployment controller
//! creating pods, and its leadership moving to another process when the
//! leader is killed.

use std::collections::BTreeSet;
use std::time::Instant;

use serde_json::Value;
use skiff_api::Kind;
use skiff_client::Client;
use testkit::ControlPlane;

use crate::support::{Cluster, binary, client, eventually, object};

/// Names of the pods a Deployment owns.
async fn pods_of(api: &Client, deployment: &str) -> BTreeSet<String> {
    api.list(Kind::Pod, Some("default"), &Default::default())
        .await
        .expect("list pods")
        .items
        .iter()
        .filter(|p| {
            p["metadata"]["ownerReferences"][0]["name"] == deployment
                && p["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
        })
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

async fn deploy(api: &Client, name: &str, replicas: u32) -> Value {
    let mut deployment = object(Kind::Deployment, name);
    deployment["spec"]["replicas"] = replicas.into();
    api.create(Kind::Deployment, Some("default"), &deployment)
        .await
        .expect("create deployment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leading_control_plane_hands_the_controllers_over() {
    let cluster = Cluster::new();
    let mut leader = ControlPlane::start(binary(), &cluster.database_url, &["--no-scheduler"]);
    eventually(
        "the first control plane to lead the controllers",
        || std::future::ready(leader.log()),
        |log| log.contains("controllers: leading"),
    )
    .await;
    let follower = ControlPlane::start(binary(), &cluster.database_url, &["--no-scheduler"]);
    let api = client(&follower, &cluster.admin_token);

    deploy(&api, "before", 2).await;
    let before = eventually(
        "the leader to create the first Deployment's pods",
        || pods_of(&api, "before"),
        |pods| pods.len() == 2,
    )
    .await;
    assert!(!follower.log().contains("controllers: leading"));

    leader.kill();
    let killed = Instant::now();
    deploy(&api, "after", 3).await;
    eventually(
        "the new leader to create the second Deployment's pods",
        || pods_of(&api, "after"),
        |pods| pods.len() == 3,
    )
    .await;
    println!(
        "controllers handed over and acted {:.1} s after the leader was killed",
        killed.elapsed().as_secs_f64()
    );
    assert!(follower.log().contains("controllers: leading"));
    // The new leader reconciled the first Deployment afresh (before the
    // second: the queue is in order) and created nothing twice.
    assert_eq!(pods_of(&api, "before").await, before);
    let status = api
        .get(Kind::Deployment, Some("default"), "before")
        .await
        .unwrap()["status"]
        .clone();
    assert_eq!(status["replicas"], 2, "{status:#}");
    assert_eq!(status["revision"], 1, "{status:#}");
}
