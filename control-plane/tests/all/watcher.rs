//! The client's watcher against real control planes: list then changes,
//! resuming after the server went away, relisting when its revision was
//! compacted.

use std::time::Duration;

use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_client::watcher::{self, Event};
use skiff_client::{Client, WatchOptions};
use testkit::ControlPlane;

use crate::support::{Cluster, binary, client, object};

/// The next event, past the errors a watcher reports while the server is
/// away; fails after 20 s.
async fn next(events: &mut (impl Stream<Item = skiff_client::Result<Event>> + Unpin)) -> Event {
    let wait = async {
        loop {
            match events.next().await {
                Some(Ok(event)) => return event,
                Some(Err(_)) => {}
                None => panic!("the watcher ended"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .expect("an event within 20 s")
}

fn names(items: &[Value]) -> Vec<&str> {
    items
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap()
}

fn config_map(name: &str, group: &str) -> Value {
    let mut object = object(Kind::ConfigMap, name);
    object["metadata"]["labels"] = json!({ "group": group });
    object
}

/// Brings back a killed control plane at the address it had.
fn restart(cluster: &Cluster, plane: &mut ControlPlane) {
    let address = plane.url.trim_start_matches("http://").to_owned();
    plane.kill();
    *plane = ControlPlane::start_at(
        binary(),
        &cluster.database_url,
        &address,
        &["--no-scheduler", "--no-controllers"],
    );
}

async fn create(api: &Client, object: &Value) {
    api.create(Kind::ConfigMap, Some("default"), object)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_lists_follows_and_resumes_where_it_was() {
    let cluster = Cluster::new();
    let mut a = cluster.serve(&[]);
    let b = cluster.serve(&[]);
    let (api_a, api_b) = (
        client(&a, &cluster.admin_token),
        client(&b, &cluster.admin_token),
    );
    create(&api_a, &config_map("before", "g")).await;
    let config = watcher::Config {
        namespace: Some("default".into()),
        ..Default::default()
    };
    let mut events = Box::pin(watcher::watcher(api_a.clone(), Kind::ConfigMap, config));
    match next(&mut events).await {
        Event::Restarted { items, .. } => assert_eq!(names(&items), ["before"]),
        other => panic!("expected the list first, got {other:?}"),
    }

    create(&api_a, &config_map("during", "g")).await;
    api_a
        .patch(
            Kind::ConfigMap,
            Some("default"),
            "during",
            &json!({"data": {"greeting": "hello"}}),
            false,
        )
        .await
        .unwrap();
    api_a
        .delete(Kind::ConfigMap, Some("default"), "before", None)
        .await
        .unwrap();
    match next(&mut events).await {
        Event::Added(o) => assert_eq!(name(&o), "during"),
        other => panic!("expected ADDED during, got {other:?}"),
    }
    match next(&mut events).await {
        Event::Modified(o) => assert_eq!(o["data"]["greeting"], "hello"),
        other => panic!("expected MODIFIED during, got {other:?}"),
    }
    match next(&mut events).await {
        Event::Deleted(o) => assert_eq!(name(&o), "before"),
        other => panic!("expected DELETED before, got {other:?}"),
    }

    // While its server is gone, a change is made elsewhere; when the server
    // is back, the watcher resumes from its revision: the change arrives
    // as itself, with no relist.
    a.kill();
    create(&api_b, &config_map("while-away", "g")).await;
    restart(&cluster, &mut a);
    match next(&mut events).await {
        Event::Added(o) => assert_eq!(name(&o), "while-away"),
        other => panic!("expected ADDED while-away, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_whose_revision_was_compacted_relists_everything() {
    let cluster = Cluster::new();
    let mut a = cluster.serve(&[]);
    let b = cluster.serve(&["--retain-changes", "5", "--compaction-interval", "100ms"]);
    let (api_a, api_b) = (
        client(&a, &cluster.admin_token),
        client(&b, &cluster.admin_token),
    );
    create(&api_a, &config_map("kept-1", "kept")).await;
    let config = watcher::Config {
        namespace: Some("default".into()),
        label_selector: Some("group=kept".into()),
        ..Default::default()
    };
    let mut events = Box::pin(watcher::watcher(api_a.clone(), Kind::ConfigMap, config));
    match next(&mut events).await {
        Event::Restarted { items, .. } => assert_eq!(names(&items), ["kept-1"]),
        other => panic!("expected the list first, got {other:?}"),
    }
    let listed = api_a
        .list(Kind::ConfigMap, Some("default"), &Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version;

    // The watcher's server goes away; meanwhile the log moves on and is
    // compacted past the watcher's revision.
    a.kill();
    create(&api_b, &config_map("kept-2", "kept")).await;
    for i in 0..20 {
        create(&api_b, &config_map(&format!("other-{i}"), "other")).await;
    }
    let from = WatchOptions {
        resource_version: Some(listed),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match api_b.watch(Kind::ConfigMap, Some("default"), &from).await {
            Err(e) if e.code() == Some(410) => break,
            _ if tokio::time::Instant::now() > deadline => panic!("the log was never compacted"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }

    restart(&cluster, &mut a);
    match next(&mut events).await {
        Event::Restarted { items, .. } => assert_eq!(names(&items), ["kept-1", "kept-2"]),
        other => panic!("expected a relist, got {other:?}"),
    }
    create(&api_a, &config_map("kept-3", "kept")).await;
    match next(&mut events).await {
        Event::Added(o) => assert_eq!(name(&o), "kept-3"),
        other => panic!("expected ADDED kept-3, got {other:?}"),
    }
}
