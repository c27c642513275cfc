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

/// The endpoints controller lists a Service's Ready pods among many others
/// of the namespace, which Postgres picks by selector; a pod relabelled out
/// of the selector (found then only by the Service's own list of
/// endpoints) leaves it, and comes back when relabelled in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_follows_the_ready_pods_its_selector_picks_as_their_labels_change() {
    use serde_json::json;
    let cluster = Cluster::new();
    let plane = ControlPlane::start(binary(), &cluster.database_url, &["--no-scheduler"]);
    let api = client(&plane, &cluster.admin_token);
    let ingress = json!({"addresses": [{"type": "Ingress", "address": "127.0.0.1:9"}]});
    crate::support::ready_node(&api, "n1", ingress).await;
    // A Ready pod bound to n1, labelled `app: APP`.
    let ready_pod = |name: &str, app: &str| {
        let mut pod = object(Kind::Pod, name);
        pod["metadata"]["labels"] = json!({ "app": app, "tier": "front" });
        pod["spec"]["nodeName"] = "n1".into();
        pod
    };
    for (name, app) in [("web-1", "web"), ("web-2", "web"), ("api-1", "api")]
        .into_iter()
        .chain((0..20).map(|_| ("", "other")))
        .enumerate()
        .map(|(i, (name, app))| {
            let name = if name.is_empty() {
                format!("other-{i}")
            } else {
                name.to_owned()
            };
            (name, app)
        })
    {
        let mut pod = api
            .create(Kind::Pod, Some("default"), &ready_pod(&name, app))
            .await
            .expect("pod");
        pod["status"] = json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
        });
        api.replace_status(Kind::Pod, Some("default"), &name, &pod)
            .await
            .expect("pod status");
    }
    let mut service = object(Kind::Service, "web");
    service["spec"]["selector"] = json!({"app": "web", "tier": "front"});
    api.create(Kind::Service, Some("default"), &service)
        .await
        .expect("service");
    let endpoints = || async {
        let service = api
            .get(Kind::Service, Some("default"), "web")
            .await
            .expect("service");
        service["status"]["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["pod"].as_str().unwrap_or_default().to_owned())
            .collect::<BTreeSet<String>>()
    };
    let both = BTreeSet::from(["web-1".to_owned(), "web-2".to_owned()]);
    eventually("web's two pods as its endpoints", endpoints, |e| *e == both).await;

    let relabel = |app: &'static str| {
        let api = &api;
        async move {
            api.patch(
                Kind::Pod,
                Some("default"),
                "web-2",
                &json!({"metadata": {"labels": {"app": app}}}),
                false,
            )
            .await
            .expect("relabel")
        }
    };
    relabel("moved").await;
    let one = BTreeSet::from(["web-1".to_owned()]);
    eventually("web-2 to leave the endpoints", endpoints, |e| *e == one).await;
    relabel("web").await;
    eventually("web-2 to come back", endpoints, |e| *e == both).await;
}
