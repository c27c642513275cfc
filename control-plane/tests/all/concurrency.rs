//! Optimistic concurrency under real races: many tasks writing one object
//! at once, through several control-plane processes on one database.

use std::sync::Arc;

use serde_json::json;
use skiff_api::Kind;
use tokio::sync::Barrier;

use crate::support::{Cluster, client, object, revision_of};

const RACERS: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_racer_wins_each_revision() {
    let cluster = Cluster::new();
    let planes = [cluster.serve(&[]), cluster.serve(&[])];
    let apis: Vec<_> = planes
        .iter()
        .map(|p| client(p, &cluster.admin_token))
        .collect();
    apis[0]
        .create(
            Kind::ConfigMap,
            Some("default"),
            &object(Kind::ConfigMap, "contended"),
        )
        .await
        .unwrap();

    for round in 0..5 {
        let current = apis[0]
            .get(Kind::ConfigMap, Some("default"), "contended")
            .await
            .unwrap();
        let barrier = Arc::new(Barrier::new(RACERS));
        let racers: Vec<_> = (0..RACERS)
            .map(|i| {
                let api = apis[i % apis.len()].clone();
                let barrier = barrier.clone();
                let mut write = current.clone();
                // Unique per round: a write identical to the stored object
                // is a no-op, which would not move the revision.
                write["data"] = json!({"winner": i.to_string(), "round": round.to_string()});
                tokio::spawn(async move {
                    barrier.wait().await;
                    api.replace(Kind::ConfigMap, Some("default"), "contended", &write)
                        .await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for (i, racer) in racers.into_iter().enumerate() {
            match racer.await.unwrap() {
                Ok(stored) => winners.push((i, stored)),
                Err(e) => assert!(
                    e.is_conflict(),
                    "round {round}: racer {i} failed otherwise: {e}"
                ),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: one winner per revision");
        let (winner, stored) = &winners[0];
        let now = apis[1]
            .get(Kind::ConfigMap, Some("default"), "contended")
            .await
            .unwrap();
        assert_eq!(&now, stored);
        assert_eq!(now["data"]["winner"], winner.to_string());
        assert!(revision_of(&now) > revision_of(&current));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creates_make_one_object() {
    let cluster = Cluster::new();
    let planes = [cluster.serve(&[]), cluster.serve(&[])];
    let barrier = Arc::new(Barrier::new(RACERS));
    let racers: Vec<_> = (0..RACERS)
        .map(|i| {
            let api = client(&planes[i % 2], &cluster.admin_token);
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                api.create(Kind::Pod, Some("default"), &object(Kind::Pod, "only-one"))
                    .await
            })
        })
        .collect();
    let mut created = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(_) => created += 1,
            Err(e) => assert_eq!(e.code(), Some(409), "{e}"),
        }
    }
    assert_eq!(created, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_deletes_change_nothing() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let api = client(&plane, &cluster.admin_token);
    let first = api
        .create(
            Kind::ConfigMap,
            Some("default"),
            &object(Kind::ConfigMap, "kept"),
        )
        .await
        .unwrap();
    let mut newer = first.clone();
    newer["data"] = json!({"v": "2"});
    let second = api
        .replace(Kind::ConfigMap, Some("default"), "kept", &newer)
        .await
        .unwrap();

    let stale_rv = first["metadata"]["resourceVersion"].as_str().unwrap();
    let err = api
        .delete(Kind::ConfigMap, Some("default"), "kept", Some(stale_rv))
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(
        api.get(Kind::ConfigMap, Some("default"), "kept")
            .await
            .unwrap(),
        second
    );

    let mut stale_write = first.clone();
    stale_write["data"] = json!({"v": "stale"});
    let err = api
        .replace(Kind::ConfigMap, Some("default"), "kept", &stale_write)
        .await
        .unwrap_err();
    assert!(err.is_conflict());
    assert!(
        err.to_string()
            .contains(&format!("expected resourceVersion {stale_rv}")),
        "{err}"
    );
    assert_eq!(
        api.get(Kind::ConfigMap, Some("default"), "kept")
            .await
            .unwrap(),
        second
    );

    let current_rv = second["metadata"]["resourceVersion"].as_str().unwrap();
    api.delete(Kind::ConfigMap, Some("default"), "kept", Some(current_rv))
        .await
        .unwrap();
}
