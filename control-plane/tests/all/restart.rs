//! Postgres restarting under write load: the control plane reconnects by
//! itself and every acknowledged write survives.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use skiff_api::Kind;
use testkit::Postgres;

use crate::support::{Cluster, client, object};

const WRITERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_database_restart() {
    // Shared with the blocking restart below; dropping it stops the server.
    let postgres = Arc::new(Postgres::start());
    let cluster = Cluster::on(&postgres);
    let plane = cluster.serve(&[]);
    let api = client(&plane, &cluster.admin_token);
    let restarted = Arc::new(AtomicBool::new(false));

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let api = api.clone();
            let restarted = restarted.clone();
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut refused = 0;
                let mut after_restart = 0;
                for i in 0.. {
                    let name = format!("w{w}-{i}");
                    match api
                        .create(
                            Kind::ConfigMap,
                            Some("default"),
                            &object(Kind::ConfigMap, &name),
                        )
                        .await
                    {
                        Ok(_) => {
                            acknowledged.push(name);
                            if restarted.load(Ordering::SeqCst) {
                                after_restart += 1;
                            }
                        }
                        // During the restart: refused as unavailable, never
                        // as a server bug.
                        Err(e) if e.code() == Some(503) => refused += 1,
                        Err(e) => return Err(e.to_string()),
                    }
                    if after_restart >= 20 {
                        break;
                    }
                    if refused > 10_000 {
                        panic!("the control plane never recovered");
                    }
                }
                Ok((acknowledged, refused))
            })
        })
        .collect();

    // Let the load run, then restart the database under it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let restarting = postgres.clone();
    tokio::task::spawn_blocking(move || restarting.restart())
        .await
        .unwrap();
    restarted.store(true, Ordering::SeqCst);

    let mut acknowledged = Vec::new();
    for writer in writers {
        let log = || -> String {
            plane
                .log()
                .lines()
                .filter(|l| !l.contains("DEBUG"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let Ok(outcome) = tokio::time::timeout(Duration::from_secs(120), writer).await else {
            panic!("writers did not finish; control plane log:\n{}", log());
        };
        let outcome = outcome.unwrap();
        let (mine, _) = outcome.unwrap_or_else(|e| {
            panic!(
                "a write failed other than as unavailable: {e}\ncontrol plane log:\n{}",
                log()
            )
        });
        acknowledged.extend(mine);
    }
    let stored = api
        .list_all(Kind::ConfigMap, Some("default"), &Default::default())
        .await
        .unwrap();
    let stored: std::collections::HashSet<String> = stored
        .items
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|n| !stored.contains(*n))
        .collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(acknowledged.len() >= WRITERS * 20);
}
