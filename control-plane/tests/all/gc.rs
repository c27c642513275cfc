//! The garbage collector in a real control-plane process: dependents go
//! when all their owners are gone, cascading; nothing goes while an owner
//! remains.

use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_client::Client;

use testkit::ControlPlane;

use crate::support::{Cluster, binary, client, eventually};

async fn config_map(api: &Client, name: &str, owners: &[&Value]) -> Value {
    let references: Vec<Value> = owners
        .iter()
        .map(|o| {
            json!({
                "apiVersion": skiff_api::API_VERSION,
                "kind": o["kind"],
                "name": o["metadata"]["name"],
                "uid": o["metadata"]["uid"],
            })
        })
        .collect();
    let object = json!({
        "apiVersion": skiff_api::API_VERSION, "kind": "ConfigMap",
        "metadata": {"name": name, "ownerReferences": references},
        "data": {},
    });
    api.create(Kind::ConfigMap, Some("default"), &object)
        .await
        .expect("create")
}

async fn names(api: &Client) -> Vec<String> {
    let mut names: Vec<String> = api
        .list(Kind::ConfigMap, Some("default"), &Default::default())
        .await
        .expect("list")
        .items
        .iter()
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

async fn until_names(api: &Client, expected: &[&str]) {
    eventually(
        &format!("{expected:?}"),
        || names(api),
        |now| now == expected,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependents_go_with_their_last_owner_and_cascade() {
    let cluster = Cluster::new();
    let plane = ControlPlane::start(binary(), &cluster.database_url, &["--no-scheduler"]);
    let api = client(&plane, &cluster.admin_token);

    let owner = config_map(&api, "owner", &[]).await;
    let other = config_map(&api, "other", &[]).await;
    let child = config_map(&api, "child", &[&owner]).await;
    config_map(&api, "grandchild", &[&child]).await;
    config_map(&api, "shared", &[&owner, &other]).await;
    // An owner of the same name but another uid is not the owner.
    let mut impostor = owner.clone();
    impostor["metadata"]["uid"] = json!("00000000-0000-4000-8000-000000000000");
    config_map(&api, "stale", &[&impostor]).await;

    // The stale reference is collected at once; the rest stay.
    until_names(&api, &["child", "grandchild", "other", "owner", "shared"]).await;

    api.delete(Kind::ConfigMap, Some("default"), "owner", None)
        .await
        .expect("delete");
    // The child goes, then its own dependent; `shared` still has an owner.
    until_names(&api, &["other", "shared"]).await;

    api.delete(Kind::ConfigMap, Some("default"), "other", None)
        .await
        .expect("delete");
    until_names(&api, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreground_deletion_takes_the_dependents_first_and_the_owner_last() {
    use futures::StreamExt;
    use skiff_api::EventType;
    use skiff_api::meta::{DeleteOptions, PropagationPolicy};

    let cluster = Cluster::new();
    let plane = ControlPlane::start(binary(), &cluster.database_url, &["--no-scheduler"]);
    let api = client(&plane, &cluster.admin_token);
    let owner = config_map(&api, "owner", &[]).await;
    let child = config_map(&api, "child", &[&owner]).await;
    let grandchild = config_map(&api, "grandchild", &[&child]).await;
    config_map(&api, "bystander", &[]).await;
    let mut events = Box::pin(
        api.watch(
            Kind::ConfigMap,
            Some("default"),
            &skiff_client::WatchOptions {
                resource_version: grandchild["metadata"]["resourceVersion"]
                    .as_str()
                    .map(str::to_owned),
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );

    let options = DeleteOptions {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..Default::default()
    };
    let marked = api
        .delete_with(Kind::ConfigMap, Some("default"), "owner", &options)
        .await
        .unwrap();
    assert!(
        marked["metadata"]["deletionTimestamp"].is_string(),
        "{marked:#}"
    );
    assert_eq!(
        marked["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    until_names(&api, &["bystander"]).await;

    // The owner was marked first and deleted last.
    let mut order = Vec::new();
    while order.last() != Some(&("DELETED".to_owned(), "owner".to_owned())) {
        let event = tokio::time::timeout(std::time::Duration::from_secs(20), events.next())
            .await
            .expect("events keep coming")
            .unwrap()
            .unwrap();
        let kind = match event.event_type {
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            _ => continue,
        };
        let name = event.object["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        order.push((kind.to_owned(), name));
    }
    let position = |kind: &str, name: &str| {
        order
            .iter()
            .position(|(k, n)| k == kind && n == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {order:?}"))
    };
    assert_eq!(position("MODIFIED", "owner"), 0, "{order:?}");
    assert!(
        position("DELETED", "child") < position("DELETED", "owner"),
        "{order:?}"
    );
    // Gone for good: deleting it again finds nothing.
    let again = api
        .delete_with(Kind::ConfigMap, Some("default"), "owner", &options)
        .await
        .unwrap_err();
    assert_eq!(again.code(), Some(404));
}
