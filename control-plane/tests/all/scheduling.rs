//! The scheduler inside a real control-plane process, on status-only
//! nodes: preemption, a pod parked as unschedulable, and its retry once
//! room is freed. (Placement rules on real nodes are tested end to end in
//! wasmctl's cluster tests; every rule is table-tested in `decide`.)

use std::time::Duration;

use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_client::Client;
use testkit::ControlPlane;

use crate::support::{Cluster, binary, client, eventually};

/// A node with room for four 128Mi instances, its lease current.
async fn small_node(api: &Client) {
    let allocatable = json!({"allocatable": {"memory": "512Mi", "instances": 10}});
    crate::support::ready_node(api, "small", allocatable).await;
}

async fn create_pod(api: &Client, name: &str, memory: &str, priority: i32) {
    let pod = json!({
        "apiVersion": skiff_api::API_VERSION, "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "image": "127.0.0.1:5000/hello:v1",
            "resources": {"memory": memory},
            "priority": priority,
        },
    });
    api.create(Kind::Pod, Some("default"), &pod)
        .await
        .expect("pod");
}

/// Every pod: its name, its node (empty when unbound) and itself.
async fn pods(api: &Client) -> Vec<(String, String, Value)> {
    let list = api
        .list(Kind::Pod, Some("default"), &Default::default())
        .await
        .expect("list");
    list.items
        .into_iter()
        .map(|p| {
            let field = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (
                field(&p["metadata"]["name"]),
                field(&p["spec"]["nodeName"]),
                p,
            )
        })
        .collect()
}

/// The pods, once `done` holds of them.
async fn pods_when(
    api: &Client,
    what: &str,
    done: impl Fn(&[(String, String, Value)]) -> bool,
) -> Vec<(String, String, Value)> {
    eventually(what, || pods(api), |p| done(p)).await
}

fn unschedulable_message(pod: &Value) -> Option<&str> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")?["message"]
        .as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preemption_makes_room_and_a_parked_pod_runs_once_room_is_freed() {
    let cluster = Cluster::new();
    let plane = ControlPlane::start(binary(), &cluster.database_url, &[]);
    let api = client(&plane, &cluster.admin_token);
    small_node(&api).await;
    // Priorities above 0 are a cluster admin's grant to the namespace.
    let grant = json!({"spec": {"policy": {"maxPriority": 100}}});
    api.patch(Kind::Namespace, None, "default", &grant, false)
        .await
        .expect("priority ceiling");

    for i in 0..4 {
        create_pod(&api, &format!("low-{i}"), "128Mi", 0).await;
    }
    pods_when(&api, "four low-priority pods bound", |pods| {
        pods.len() == 4 && pods.iter().all(|(_, node, _)| node == "small")
    })
    .await;

    // Nothing fits a 256Mi pod; at priority 100 it evicts exactly the two
    // pods it needs (the lowest priority, then by name).
    create_pod(&api, "high", "256Mi", 100).await;
    let pods = pods_when(&api, "the preemptor bound", |pods| {
        pods.iter()
            .any(|(name, node, _)| name == "high" && node == "small")
    })
    .await;
    let mut names: Vec<&str> = pods.iter().map(|(name, _, _)| name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["high", "low-2", "low-3"]);

    // An equal-priority pod may not preempt: it is parked, and says why.
    create_pod(&api, "late", "128Mi", 0).await;
    let pods = pods_when(&api, "the late pod reported unschedulable", |pods| {
        pods.iter()
            .any(|(name, _, pod)| name == "late" && unschedulable_message(pod).is_some())
    })
    .await;
    let late = &pods.iter().find(|(name, _, _)| name == "late").unwrap().2;
    assert_eq!(late["spec"]["nodeName"], Value::Null);
    assert_eq!(
        unschedulable_message(late),
        Some("0/1 nodes: 1 insufficient memory")
    );

    // Deleting the preemptor frees its room: the parked pod is tried again.
    api.delete(Kind::Pod, Some("default"), "high", None)
        .await
        .expect("delete");
    pods_when(&api, "the late pod bound", |pods| {
        pods.iter()
            .any(|(name, node, _)| name == "late" && node == "small")
    })
    .await;
}

fn ready_condition(node: &Value) -> Option<(String, String)> {
    let condition = node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    Some((
        condition["status"].as_str()?.to_owned(),
        condition["reason"].as_str().unwrap_or_default().to_owned(),
    ))
}

async fn node_when(api: &Client, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let node = || async { api.get(Kind::Node, None, "small").await.expect("node") };
    eventually(what, node, done).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_becomes_not_ready_and_loses_its_pods_until_it_renews() {
    let cluster = Cluster::new();
    let plane = ControlPlane::start(binary(), &cluster.database_url, &[]);
    let api = client(&plane, &cluster.admin_token);
    small_node(&api).await;
    // Renewed every 200 ms for 1 s at a time, as an agent would.
    let renew = |api: Client| {
        tokio::spawn(async move {
            loop {
                api.renew_lease("small", Duration::from_secs(1))
                    .await
                    .expect("lease");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let renewing = renew(api.clone());
    create_pod(&api, "web", "128Mi", 0).await;
    pods_when(&api, "the pod bound", |pods| {
        pods.iter()
            .any(|(name, node, _)| name == "web" && node == "small")
    })
    .await;
    // Renewing, it stays Ready through several lease periods.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let node = api.get(Kind::Node, None, "small").await.expect("node");
    assert_eq!(
        ready_condition(&node).map(|c| c.0),
        Some("True".into()),
        "{node}"
    );

    renewing.abort();
    let node = node_when(&api, "NotReady", |n| {
        ready_condition(n).is_some_and(|c| c.0 == "False")
    })
    .await;
    assert_eq!(
        ready_condition(&node),
        Some(("False".into(), "NodeLeaseExpired".into()))
    );
    // Its pod is evicted: deleted, for whoever owns it to replace.
    pods_when(&api, "the pod evicted", |pods| pods.is_empty()).await;

    let _renewing = renew(api.clone());
    let node = node_when(&api, "Ready again", |n| {
        ready_condition(n).is_some_and(|c| c.0 == "True")
    })
    .await;
    assert_eq!(
        ready_condition(&node),
        Some(("True".into(), "LeaseRenewed".into()))
    );
}
