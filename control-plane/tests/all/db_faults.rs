//! A control plane whose link to Postgres goes silent (no FIN, no RST: a
//! relay that stops forwarding) while it is mid-write and leads the
//! scheduler and controllers. Another control plane, connected directly,
//! must get its writes through and take the leadership within a bound,
//! and no write either of them acknowledged may be lost.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skiff_api::Kind;
use skiff_client::Client;
use testkit::ControlPlane;
use testkit::relay::Relay;
use tokio::sync::watch;

use crate::support::{Cluster, binary, client, object};

/// What the defaults promise: the server ends a vanished writer's
/// transaction after `--db-idle-in-transaction-timeout` (5 s) and frees a
/// vanished leader's lock after `--leader-timeout` (5 s), which a follower
/// finds on its next try (every 2 s). The bound leaves room for a loaded
/// machine.
const BOUND: Duration = Duration::from_secs(15);

/// Concurrent writers per control plane: enough that the relayed one's
/// writer is nearly always inside a batch transaction.
const WRITERS: usize = 8;

/// Runs SQL on the test's database with `psql` (a separate process: only
/// the store opens database connections in this crate's code).
fn psql(database_url: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args([database_url, "-Atc", sql])
        .output()
        .expect("psql runs");
    assert!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Whether a transaction that took a lock (it has an xid: the writer's
/// `SELECT ... FOR UPDATE` of the revision row) has sat idle for a while:
/// its client's link went silent mid-batch.
fn stranded_transaction(database_url: &str) -> bool {
    psql(
        database_url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND state = 'idle in transaction' AND backend_xid IS NOT NULL \
         AND state_change < now() - interval '300 milliseconds'",
    ) != "0"
}

/// The URL of the same database reached through `relay`.
fn through(database_url: &str, relay: &Relay) -> String {
    let (scheme_user, rest) = database_url.split_once('@').expect("user@host in the URL");
    let (_, database) = rest.split_once('/').expect("a database in the URL");
    format!("{scheme_user}@{}/{database}", relay.addr())
}

fn leads(plane: &ControlPlane, what: &str) -> bool {
    plane.log().contains(&format!("{what}: leading"))
}

type Acked = Arc<Mutex<Vec<(String, Instant)>>>;

/// Creates ConfigMaps named `PREFIX-N` until told to stop, recording each
/// one acknowledged with when; a request gets 20 s (a silent link would
/// otherwise hold it forever).
fn spawn_writer(
    api: Client,
    prefix: String,
    acked: Acked,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for n in 0.. {
            if *stop.borrow() {
                return;
            }
            let name = format!("{prefix}-{n}");
            let body = object(Kind::ConfigMap, &name);
            let create = api.create(Kind::ConfigMap, Some("default"), &body);
            match tokio::time::timeout(Duration::from_secs(20), create).await {
                Ok(Ok(_)) => acked.lock().unwrap().push((name, Instant::now())),
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(_) => {}
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_database_link_costs_seconds_not_hours() {
    let cluster = Cluster::new();
    let postgres = cluster
        .database_url
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(host, _)| host.parse().expect("host:port"))
        .expect("a TCP database URL");
    let relay = Relay::start(postgres);
    let relayed_url = through(&cluster.database_url, &relay);
    let key_file = testkit::encryption_key_file(&cluster.database_url);
    let key_file = key_file.to_str().expect("utf-8 path");

    // The relayed control plane starts first and takes both leaderships.
    let relayed = ControlPlane::start(binary(), &relayed_url, &["--encryption-key-file", key_file]);
    assert!(
        testkit::wait_until(Duration::from_secs(20), || leads(&relayed, "scheduler")
            && leads(&relayed, "controllers")),
        "the first control plane did not lead:\n{}",
        relayed.log()
    );
    let direct = ControlPlane::start(binary(), &cluster.database_url, &[]);

    let (stop, stopping) = watch::channel(false);
    let relayed_acks: Acked = Arc::default();
    let direct_acks: Acked = Arc::default();
    let mut writers = Vec::new();
    for i in 0..WRITERS {
        writers.push(spawn_writer(
            client(&relayed, &cluster.admin_token),
            format!("relayed-{i}"),
            relayed_acks.clone(),
            stopping.clone(),
        ));
        writers.push(spawn_writer(
            client(&direct, &cluster.admin_token),
            format!("direct-{i}"),
            direct_acks.clone(),
            stopping.clone(),
        ));
    }
    let count = |acks: &Acked| acks.lock().unwrap().len();
    assert!(
        testkit::wait_until(Duration::from_secs(20), || count(&relayed_acks) >= 50
            && count(&direct_acks) >= 50),
        "both control planes write"
    );

    // Go silent while the relayed one holds the revision lock mid-batch:
    // if a pause finds it between batches, let it run on and try again.
    let mut paused_at = None;
    for _ in 0..20 {
        relay.pause();
        let at = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        if stranded_transaction(&cluster.database_url) {
            paused_at = Some(at);
            break;
        }
        relay.resume();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let paused_at = paused_at.expect("a pause caught the relayed control plane mid-batch");
    assert!(
        !leads(&direct, "scheduler") && !leads(&direct, "controllers"),
        "the relayed control plane still led when its link went silent"
    );

    // Writes through the direct control plane resume within the bound.
    let resumed = loop {
        let after = direct_acks
            .lock()
            .unwrap()
            .iter()
            .find(|(_, at)| *at > paused_at + Duration::from_millis(600))
            .map(|(_, at)| *at);
        if let Some(at) = after {
            break at.duration_since(paused_at);
        }
        assert!(
            paused_at.elapsed() < BOUND,
            "no write through the direct control plane within {BOUND:?} of the pause:\n{}",
            direct.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The server ended the stranded transaction (it did not merely end on
    // its own): nothing is left idle holding a lock.
    assert!(!stranded_transaction(&cluster.database_url));

    // Leadership moves to the direct one within the bound, and the old
    // leader has given it up by then.
    assert!(
        testkit::wait_until(BOUND.saturating_sub(paused_at.elapsed()), || {
            leads(&direct, "scheduler") && leads(&direct, "controllers")
        }),
        "leadership did not move within {BOUND:?}:\n{}",
        direct.log()
    );
    let moved = paused_at.elapsed();
    let old = relayed.log();
    assert!(
        old.contains("scheduler: lost leadership") && old.contains("controllers: lost leadership"),
        "the cut-off leader did not stop acting before another took over:\n{old}"
    );
    eprintln!("writes resumed after {resumed:?}, leadership moved within {moved:?}");

    // No acknowledged write is lost, whichever way it went.
    let _ = stop.send(true);
    relay.resume();
    for writer in writers {
        writer.await.unwrap();
    }
    let reader = client(&direct, &cluster.admin_token);
    let acked: Vec<String> = relayed_acks
        .lock()
        .unwrap()
        .iter()
        .chain(direct_acks.lock().unwrap().iter())
        .map(|(name, _)| name.clone())
        .collect();
    for name in &acked {
        assert!(
            reader
                .get(Kind::ConfigMap, Some("default"), name)
                .await
                .is_ok(),
            "configmaps {name} was acknowledged and is gone"
        );
    }
}
