//! Watches: resume from any revision on any process with nothing lost or
//! repeated, 410 past compaction, selector transitions, bookmarks.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use skiff_api::{EventType, Kind};
use skiff_client::WatchOptions;

use crate::support::{Cluster, client, object, revision_of};

fn from(revision: i64) -> WatchOptions {
    WatchOptions {
        resource_version: Some(revision.to_string()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumed_on_another_process_misses_and_repeats_nothing() {
    const WRITES: usize = 300;
    let cluster = Cluster::new();
    let a = cluster.serve(&[]);
    let mut b = cluster.serve(&[]);
    let api_a = client(&a, &cluster.admin_token);
    let api_b = client(&b, &cluster.admin_token);
    let start = api_a
        .list(Kind::ConfigMap, Some("default"), &Default::default())
        .await
        .unwrap();
    let start: i64 = start.metadata.resource_version.parse().unwrap();

    // Writes through A: creates, then updates of the same objects.
    let writer = tokio::spawn({
        let api = api_a.clone();
        async move {
            let mut revisions = Vec::new();
            for i in 0..WRITES {
                let name = format!("w-{}", i % 100);
                let stored = if i < 100 {
                    api.create(
                        Kind::ConfigMap,
                        Some("default"),
                        &object(Kind::ConfigMap, &name),
                    )
                    .await
                } else {
                    api.patch(
                        Kind::ConfigMap,
                        Some("default"),
                        &name,
                        &json!({"data": {"i": i.to_string()}}),
                        false,
                    )
                    .await
                };
                revisions.push(revision_of(&stored.unwrap()));
            }
            revisions
        }
    });

    // Watch through B until it has seen a third, then kill B mid-stream.
    let mut seen = Vec::new();
    let mut events = Box::pin(
        api_b
            .watch(Kind::ConfigMap, Some("default"), &from(start))
            .await
            .unwrap(),
    );
    while seen.len() < WRITES / 3 {
        let event = events.next().await.unwrap().unwrap();
        if event.event_type != EventType::Bookmark {
            seen.push(revision_of(&event.object));
        }
    }
    b.kill();
    // Whatever B still had in flight is lost with it; resume from the last
    // revision received, on A.
    while let Some(Ok(event)) = events.next().await {
        if event.event_type != EventType::Bookmark {
            seen.push(revision_of(&event.object));
        }
    }
    let written = writer.await.unwrap();
    let last = *seen.last().unwrap();
    let mut resumed = Box::pin(
        api_a
            .watch(Kind::ConfigMap, Some("default"), &from(last))
            .await
            .unwrap(),
    );
    while seen.len() < WRITES {
        let event = tokio::time::timeout(Duration::from_secs(30), resumed.next())
            .await
            .expect("events keep coming")
            .unwrap()
            .unwrap();
        if event.event_type != EventType::Bookmark {
            seen.push(revision_of(&event.object));
        }
    }
    assert_eq!(seen, written, "every write once, in order, across the kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_revision_is_gone() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&["--retain-changes", "5", "--compaction-interval", "100ms"]);
    let api = client(&plane, &cluster.admin_token);
    for i in 0..20 {
        api.create(
            Kind::ConfigMap,
            Some("default"),
            &object(Kind::ConfigMap, &format!("c{i}")),
        )
        .await
        .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let gone = loop {
        match api.watch(Kind::ConfigMap, Some("default"), &from(1)).await {
            Err(e) if e.code() == Some(410) => break e,
            _ if tokio::time::Instant::now() > deadline => panic!("revision 1 was never compacted"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert!(
        gone.to_string()
            .contains("older than the oldest retained change"),
        "{gone}"
    );

    // Recent revisions still resume.
    let latest = api
        .list(Kind::ConfigMap, Some("default"), &Default::default())
        .await
        .unwrap();
    let latest: i64 = latest.metadata.resource_version.parse().unwrap();
    let mut events = Box::pin(
        api.watch(Kind::ConfigMap, Some("default"), &from(latest))
            .await
            .unwrap(),
    );
    let made = api
        .create(
            Kind::ConfigMap,
            Some("default"),
            &object(Kind::ConfigMap, "after"),
        )
        .await
        .unwrap();
    let event = events.next().await.unwrap().unwrap();
    assert_eq!((event.event_type, event.object), (EventType::Added, made));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_watches_see_objects_enter_and_leave() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&["--bookmark-interval", "200ms"]);
    let api = client(&plane, &cluster.admin_token);
    let start = api
        .list(Kind::Pod, None, &Default::default())
        .await
        .unwrap();
    let mut on_n1 = Box::pin(
        api.watch(
            Kind::Pod,
            None,
            &WatchOptions {
                resource_version: Some(start.metadata.resource_version.clone()),
                field_selector: Some("spec.nodeName=n1".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    api.create(Kind::Pod, Some("default"), &object(Kind::Pod, "elsewhere"))
        .await
        .unwrap();
    api.patch(
        Kind::Pod,
        Some("default"),
        "elsewhere",
        &json!({"spec": {"nodeName": "n2"}}),
        false,
    )
    .await
    .unwrap();
    api.create(Kind::Pod, Some("default"), &object(Kind::Pod, "mine"))
        .await
        .unwrap();
    let bound = api
        .patch(
            Kind::Pod,
            Some("default"),
            "mine",
            &json!({"spec": {"nodeName": "n1"}}),
            false,
        )
        .await
        .unwrap();

    // The first event the n1 watch sees is the binding, as an ADDED.
    let event = loop {
        let event = on_n1.next().await.unwrap().unwrap();
        if event.event_type != EventType::Bookmark {
            break event;
        }
    };
    assert_eq!(
        (event.event_type, &event.object),
        (EventType::Added, &bound)
    );
    // Bookmarks follow, at or past the binding's revision.
    let bookmark = loop {
        let event = on_n1.next().await.unwrap().unwrap();
        if event.event_type == EventType::Bookmark {
            break event;
        }
    };
    assert!(revision_of(&bookmark.object) >= revision_of(&bound));

    let mut front = Box::pin(
        api.watch(
            Kind::ConfigMap,
            Some("default"),
            &WatchOptions {
                resource_version: Some(
                    bookmark.object["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap()
                        .into(),
                ),
                label_selector: Some("tier=front".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    let mut cm = object(Kind::ConfigMap, "moving");
    cm["metadata"]["labels"] = json!({"tier": "back"});
    api.create(Kind::ConfigMap, Some("default"), &cm)
        .await
        .unwrap();
    let entered = api
        .patch(
            Kind::ConfigMap,
            Some("default"),
            "moving",
            &json!({"metadata": {"labels": {"tier": "front"}}}),
            false,
        )
        .await
        .unwrap();
    let left = api
        .patch(
            Kind::ConfigMap,
            Some("default"),
            "moving",
            &json!({"metadata": {"labels": {"tier": "back"}}}),
            false,
        )
        .await
        .unwrap();
    let mut transitions = Vec::new();
    while transitions.len() < 2 {
        let event = front.next().await.unwrap().unwrap();
        if event.event_type != EventType::Bookmark {
            transitions.push((event.event_type, event.object));
        }
    }
    assert_eq!(
        transitions,
        [(EventType::Added, entered), (EventType::Deleted, left)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_without_a_revision_starts_with_the_current_objects() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let api = client(&plane, &cluster.admin_token);
    let existing = api
        .create(
            Kind::Service,
            Some("default"),
            &object(Kind::Service, "existing"),
        )
        .await
        .unwrap();
    let mut events = Box::pin(
        api.watch(Kind::Service, Some("default"), &Default::default())
            .await
            .unwrap(),
    );
    let first = events.next().await.unwrap().unwrap();
    assert_eq!(
        (first.event_type, first.object),
        (EventType::Added, existing)
    );
    let deleted = api
        .delete(Kind::Service, Some("default"), "existing", None)
        .await
        .unwrap();
    let second = events.next().await.unwrap().unwrap();
    assert_eq!(
        (second.event_type, second.object),
        (EventType::Deleted, deleted)
    );
}
