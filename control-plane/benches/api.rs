//! API benchmark: durable writes through a real control plane on a real
//! Postgres (fsync on, loopback), and watch fan-out; each next to what
//! Postgres itself does on this machine in the same run.
//!
//! `cargo bench -p control-plane --bench api [-- SCALE]` (SCALE 1.0 is the
//! full run: 64 clients, 100 watchers x 10,000 changes).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::json;
use skiff_api::{EventType, Kind};
use skiff_client::{Client, ClientConfig, WatchOptions};
use sqlx::postgres::{PgListener, PgPoolOptions};
use testkit::{ControlPlane, Postgres};

const CLIENTS: usize = 64;
const WATCHERS: usize = 100;

struct Figures {
    label: String,
    writes_per_second: f64,
    latencies: Vec<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

impl Figures {
    fn new(label: &str, count: usize, elapsed: Duration, mut latencies: Vec<Duration>) -> Self {
        latencies.sort();
        Self {
            label: label.to_owned(),
            writes_per_second: count as f64 / elapsed.as_secs_f64(),
            latencies,
        }
    }
    fn p50(&self) -> f64 {
        percentile(&self.latencies, 0.5)
    }
    fn p99(&self) -> f64 {
        percentile(&self.latencies, 0.99)
    }
}

/// A label as a DNS-label-safe name prefix.
fn dns_safe(label: &str) -> String {
    label
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("-")
        .to_ascii_lowercase()
}

fn configmap(name: &str, data: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "skiff.dev/v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

/// Runs `per_client` writes on each of `clients` tasks; `write(client, i)`.
async fn load<F, Fut>(
    clients: usize,
    per_client: usize,
    write: F,
) -> (usize, Duration, Vec<Duration>)
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let write = Arc::new(write);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let write = write.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let t = Instant::now();
                    write(c, i).await;
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    (clients * per_client, started.elapsed(), latencies)
}

async fn api_writes(api: &Client, label: &str, clients: usize, per_client: usize) -> Figures {
    let prefix = dns_safe(label);
    let api = api.clone();
    let (count, elapsed, latencies) = load(clients, per_client, move |c, i| {
        let api = api.clone();
        let name = format!("{prefix}-{c}-{i}");
        async move {
            api.create(
                Kind::ConfigMap,
                Some("default"),
                &configmap(&name, json!({"v": "1"})),
            )
            .await
            .expect("create");
        }
    })
    .await;
    Figures::new(label, count, elapsed, latencies)
}

async fn api_updates(api: &Client, clients: usize, per_client: usize) -> Figures {
    let mut objects = Vec::new();
    for c in 0..clients {
        let created = api
            .create(
                Kind::ConfigMap,
                Some("default"),
                &configmap(&format!("upd-{c}"), json!({"v": "0"})),
            )
            .await
            .unwrap();
        objects.push(tokio::sync::Mutex::new(created));
    }
    // Each client owns one object and replaces it with the version it last
    // wrote: a conditional write, one request each.
    let objects = Arc::new(objects);
    let api = api.clone();
    let (count, elapsed, latencies) = load(clients, per_client, move |c, i| {
        let (api, objects) = (api.clone(), objects.clone());
        async move {
            let mut object = objects[c].lock().await;
            object["data"] = json!({"v": i.to_string()});
            let name = format!("upd-{c}");
            *object = api
                .replace(Kind::ConfigMap, Some("default"), &name, &object)
                .await
                .expect("update");
        }
    })
    .await;
    Figures::new(
        &format!("update, {clients} clients"),
        count,
        elapsed,
        latencies,
    )
}

/// An object of `kind` (Secret or ConfigMap) holding `value` under one key,
/// as the same bytes on the wire either way.
fn sized(kind: Kind, name: &str, value: &str) -> serde_json::Value {
    json!({"apiVersion": "skiff.dev/v1", "kind": kind.name(), "metadata": {"name": name},
        "data": {"v": value}})
}

/// Creates `clients * per_client` objects of `kind` named `{prefix}-C-I`.
async fn sized_creates(
    api: &Client,
    kind: Kind,
    prefix: &str,
    clients: usize,
    per_client: usize,
    value: &str,
) -> f64 {
    let (api, prefix, value) = (api.clone(), prefix.to_owned(), value.to_owned());
    let (count, elapsed, _) = load(clients, per_client, move |c, i| {
        let (api, object) = (
            api.clone(),
            sized(kind, &format!("{prefix}-{c}-{i}"), &value),
        );
        async move {
            api.create(kind, Some("default"), &object)
                .await
                .expect("create");
        }
    })
    .await;
    count as f64 / elapsed.as_secs_f64()
}

/// Reads back, by name, what [`sized_creates`] made.
async fn sized_reads(
    api: &Client,
    kind: Kind,
    prefix: &str,
    clients: usize,
    per_client: usize,
) -> f64 {
    let (api, prefix) = (api.clone(), prefix.to_owned());
    let (count, elapsed, _) = load(clients, per_client, move |c, i| {
        let (api, name) = (api.clone(), format!("{prefix}-{c}-{i}"));
        async move {
            let object = api.get(kind, Some("default"), &name).await.expect("read");
            assert!(object["data"]["v"].is_string());
        }
    })
    .await;
    count as f64 / elapsed.as_secs_f64()
}

/// Pod creates/s in a namespace under a ResourceQuota (counts, sums and
/// per-pod caps, none reached) next to one without, alternating round by
/// round: medians of each.
async fn quota_admission(
    api: &Client,
    rounds: usize,
    clients: usize,
    per_client: usize,
) -> (f64, f64) {
    for (name, quota) in [
        (
            "with-quota",
            Some(
                json!({"pods": "1000000", "memory": "100000Gi", "instances": "100000000",
            "pod.memory": "1Gi", "pod.timeout": "1m"}),
            ),
        ),
        ("without-quota", None),
    ] {
        api.create(
            Kind::Namespace,
            None,
            &json!({"apiVersion": "skiff.dev/v1", "kind": "Namespace",
            "metadata": {"name": name}, "spec": {}}),
        )
        .await
        .expect("namespace");
        if let Some(hard) = quota {
            api.create(
                Kind::ResourceQuota,
                Some(name),
                &json!({"apiVersion": "skiff.dev/v1",
                "kind": "ResourceQuota", "metadata": {"name": "caps"}, "spec": {"hard": hard}}),
            )
            .await
            .expect("quota");
        }
    }
    let mut figures = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for (k, namespace) in ["with-quota", "without-quota"].into_iter().enumerate() {
            let api = api.clone();
            let (count, elapsed, _) = load(clients, per_client, move |c, i| {
                let api = api.clone();
                let pod = json!({"apiVersion": "skiff.dev/v1", "kind": "Pod",
                    "metadata": {"name": format!("q{round}-{c}-{i}")},
                    "spec": {"image": "127.0.0.1:5000/hello:v1", "resources": {"memory": "64Mi"}}});
                async move {
                    api.create(Kind::Pod, Some(namespace), &pod)
                        .await
                        .expect("pod");
                }
            })
            .await;
            figures[k].push(count as f64 / elapsed.as_secs_f64());
        }
    }
    let [with, without] = figures;
    (median(with), median(without))
}

/// What a section weighs: a setting of the database, and the SQL that
/// turns it on and off.
struct Setting {
    name: &'static str,
    on: &'static str,
    off: &'static str,
}

const OWNERS_INDEX: Setting = Setting {
    name: "the objects_owners index",
    on: "CREATE INDEX IF NOT EXISTS objects_owners ON objects \
         USING gin ((body #> '{metadata,ownerReferences}') jsonb_path_ops) \
         WITH (fastupdate = off)",
    off: "DROP INDEX IF EXISTS objects_owners",
};

const TEMPLATE_LABELS_INDEX: Setting = Setting {
    name: "the objects_template_labels index",
    on: "CREATE INDEX IF NOT EXISTS objects_template_labels ON objects \
         USING gin ((body #> '{spec,template,metadata,labels}') jsonb_path_ops) \
         WITH (fastupdate = off)",
    off: "DROP INDEX IF EXISTS objects_template_labels",
};

const GIN_WITHOUT_PENDING_LISTS: Setting = Setting {
    name: "no pending list in the GIN indexes (fastupdate off)",
    on: "ALTER INDEX objects_labels SET (fastupdate = off);
         ALTER INDEX objects_owners SET (fastupdate = off);
         ALTER INDEX objects_template_labels SET (fastupdate = off);",
    off: "ALTER INDEX objects_labels SET (fastupdate = on);
          ALTER INDEX objects_owners SET (fastupdate = on);
          ALTER INDEX objects_template_labels SET (fastupdate = on);",
};

/// Pod creates/s of pods naming an owner (as the Deployment controller
/// writes them) with `setting` on and off, alternating round by round:
/// medians of each. The owner is a ConfigMap, which no controller
/// acts on, so nothing but the creates is written.
async fn setting_cost(
    api: &Client,
    database: &str,
    setting: &Setting,
    rounds: usize,
    clients: usize,
    per_client: usize,
) -> (f64, f64) {
    let owner = api
        .create(
            Kind::ConfigMap,
            Some("default"),
            &json!({"apiVersion": "skiff.dev/v1", "kind": "ConfigMap",
                "metadata": {"name": "owner"}, "data": {}}),
        )
        .await
        .expect("owner");
    let uid = owner["metadata"]["uid"].as_str().expect("uid").to_owned();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(database)
        .await
        .unwrap();
    let set = |with: bool| {
        let pool = pool.clone();
        async move {
            let sql = if with { setting.on } else { setting.off };
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
        }
    };
    let mut figures = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for (k, with) in [true, false].into_iter().enumerate() {
            set(with).await;
            let (api, uid) = (api.clone(), uid.clone());
            let (count, elapsed, _) = load(clients, per_client, move |c, i| {
                let api = api.clone();
                let pod = json!({"apiVersion": "skiff.dev/v1", "kind": "Pod",
                    "metadata": {"name": format!("o{round}-{k}-{c}-{i}"),
                        "ownerReferences": [{"apiVersion": "skiff.dev/v1", "kind": "ConfigMap",
                            "name": "owner", "uid": uid}]},
                    "spec": {"image": "127.0.0.1:5000/hello:v1"}});
                async move {
                    api.create(Kind::Pod, Some("default"), &pod)
                        .await
                        .expect("pod");
                }
            })
            .await;
            figures[k].push(count as f64 / elapsed.as_secs_f64());
        }
    }
    set(true).await;
    let [with, without] = figures;
    (median(with), median(without))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Secrets (sealed on the way in, opened on the way out) next to
/// ConfigMaps of the same size, alternating round by round so the
/// machine's noise falls on both: medians of creates/s and reads/s.
async fn secrets_next_to_config_maps(
    api: &Client,
    rounds: usize,
    clients: usize,
    per_client: usize,
    value: &str,
) -> [(f64, f64); 2] {
    let mut figures = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    for round in 0..rounds {
        for (k, kind) in [Kind::Secret, Kind::ConfigMap].into_iter().enumerate() {
            let prefix = format!("sized-{round}");
            let created = sized_creates(api, kind, &prefix, clients, per_client, value).await;
            let read = sized_reads(api, kind, &prefix, clients, per_client).await;
            figures[0][k].push(created);
            figures[1][k].push(read);
        }
    }
    figures.map(|[secrets, config_maps]| (median(secrets), median(config_maps)))
}

/// Requests of one kind through Kubernetes' view (a Table, or the `v1`
/// shape) and through Skiff's own path, alternating round by round: what
/// a Kubernetes client pays for the conversion, next to what a Skiff
/// client pays for the same call. Returns (what, view/s, own/s).
async fn kube_views(
    url: &str,
    token: &str,
    rounds: usize,
    clients: usize,
    per_client: usize,
) -> Vec<(&'static str, f64, f64)> {
    let http = reqwest::Client::new();
    let pod = |name: String| {
        json!({"apiVersion": "skiff.dev/v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"image": "reg.example/web:v1", "nodeName": "nowhere"}})
    };
    let own = format!("{url}/apis/skiff.dev/v1/namespaces/default/pods");
    let view = format!("{url}/api/v1/namespaces/default/pods");
    // One call first: the token is then known good and cached, and the
    // clients' first calls are not charged as unknown tokens' lookups.
    let warm = http.get(&own).bearer_auth(token).send().await.unwrap();
    assert!(warm.status().is_success(), "{}", warm.status());
    // 500 pods to list and read.
    let (seeded, _, _) = {
        let (http, own, token) = (http.clone(), own.clone(), token.to_owned());
        load(clients, 500 / clients + 1, move |c, i| {
            let (http, own, token, pod) = (
                http.clone(),
                own.clone(),
                token.clone(),
                pod(format!("seed-{c}-{i}")),
            );
            async move {
                let response = http
                    .post(&own)
                    .bearer_auth(&token)
                    .json(&pod)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
            }
        })
        .await
    };
    assert!(seeded >= 500);
    type Case = (&'static str, String, String, Option<&'static str>, bool);
    let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let cases: [Case; 4] = [
        (
            "get a pod, v1 shape",
            format!("{view}/seed-0-0"),
            format!("{own}/seed-0-0"),
            None,
            false,
        ),
        (
            "get a pod, as a Table",
            format!("{own}/seed-0-0"),
            format!("{own}/seed-0-0"),
            Some(table),
            false,
        ),
        (
            "list 500 pods, v1 shape",
            format!("{view}?limit=500"),
            format!("{own}?limit=500"),
            None,
            false,
        ),
        (
            "create a pod, v1 shape",
            view.clone(),
            own.clone(),
            None,
            true,
        ),
    ];
    let mut results = Vec::new();
    for (what, view_url, own_url, accept, create) in cases {
        let per = if what.starts_with("list") {
            per_client.div_ceil(10)
        } else {
            per_client
        };
        let mut view_rates = Vec::new();
        let mut own_rates = Vec::new();
        for round in 0..rounds {
            for (v, target) in [(true, &view_url), (false, &own_url)] {
                let (http, target, token) = (http.clone(), target.clone(), token.to_owned());
                let accept = if v { accept } else { None };
                let (count, elapsed, _) = load(clients, per, move |c, i| {
                    let (http, target, token) = (http.clone(), target.clone(), token.clone());
                    async move {
                        let request = if create {
                            let name = format!("{}-{round}-{c}-{i}", if v { "view" } else { "own" });
                            let body = if v {
                                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                                       "spec": {"nodeName": "nowhere", "containers": [{"name": "main", "image": "reg.example/web:v1"}]}})
                            } else {
                                json!({"apiVersion": "skiff.dev/v1", "kind": "Pod", "metadata": {"name": name},
                                       "spec": {"image": "reg.example/web:v1", "nodeName": "nowhere"}})
                            };
                            http.post(&target).json(&body)
                        } else {
                            http.get(&target)
                        };
                        let mut request = request.bearer_auth(&token);
                        if let Some(accept) = accept {
                            request = request.header("accept", accept);
                        }
                        let response = request.send().await.unwrap();
                        assert!(response.status().is_success(), "{}", response.status());
                        response.bytes().await.unwrap();
                    }
                })
                .await;
                let rate = count as f64 / elapsed.as_secs_f64();
                if v {
                    view_rates.push(rate)
                } else {
                    own_rates.push(rate)
                }
            }
        }
        results.push((what, median(view_rates), median(own_rates)));
    }
    results
}

/// Postgres alone: one INSERT committed per write, same durability.
async fn raw_writes(url: &str, label: &str, clients: usize, per_client: usize) -> Figures {
    let pool = PgPoolOptions::new()
        .max_connections(clients as u32)
        .connect(url)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_raw (name text PRIMARY KEY, body jsonb)")
        .execute(&pool)
        .await
        .unwrap();
    let prefix = dns_safe(label);
    let (count, elapsed, latencies) = load(clients, per_client, move |c, i| {
        let pool = pool.clone();
        let name = format!("{prefix}-{c}-{i}");
        async move {
            sqlx::query("INSERT INTO bench_raw VALUES ($1, $2)")
                .bind(name)
                .bind(configmap("x", json!({"v": "1"})))
                .execute(&pool)
                .await
                .unwrap();
        }
    })
    .await;
    Figures::new(label, count, elapsed, latencies)
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// `watchers` watches of one namespace while `changes` creates land there;
/// returns (events delivered, expected, delivery latencies from the moment
/// each write was sent).
async fn fan_out(api: &Client, watchers: usize, changes: usize) -> (usize, usize, Vec<Duration>) {
    api.create(
        Kind::Namespace,
        None,
        &json!({"apiVersion": "skiff.dev/v1", "kind": "Namespace", "metadata": {"name": "fan"}}),
    )
    .await
    .unwrap();
    let start = api
        .list(Kind::ConfigMap, Some("fan"), &Default::default())
        .await
        .unwrap();
    let writers = 16;
    let per_writer = changes / writers;
    let expected_per_watcher = per_writer * writers;
    let delivered = Arc::new(AtomicUsize::new(0));
    let mut streams = Vec::new();
    for _ in 0..watchers {
        let events = api
            .watch(
                Kind::ConfigMap,
                Some("fan"),
                &WatchOptions {
                    resource_version: Some(start.metadata.resource_version.clone()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let delivered = delivered.clone();
        streams.push(tokio::spawn(async move {
            let mut events = Box::pin(events);
            let mut latencies = Vec::with_capacity(changes);
            while latencies.len() < expected_per_watcher {
                let Ok(Some(event)) =
                    tokio::time::timeout(Duration::from_secs(60), events.next()).await
                else {
                    break;
                };
                let event = event.unwrap();
                if event.event_type != EventType::Added {
                    continue;
                }
                let sent: u64 = event.object["data"]["sent"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                latencies.push(Duration::from_micros(now_micros().saturating_sub(sent)));
                delivered.fetch_add(1, Ordering::Relaxed);
            }
            latencies
        }));
    }
    let api_writer = api.clone();
    load(writers, per_writer, move |w, i| {
        let api = api_writer.clone();
        async move {
            let object = configmap(
                &format!("c-{w}-{i}"),
                json!({"sent": now_micros().to_string()}),
            );
            api.create(Kind::ConfigMap, Some("fan"), &object)
                .await
                .expect("create");
        }
    })
    .await;
    let mut latencies = Vec::new();
    for stream in streams {
        latencies.extend(stream.await.unwrap());
    }
    latencies.sort();
    (
        delivered.load(Ordering::Relaxed),
        watchers * expected_per_watcher,
        latencies,
    )
}

/// Postgres alone: NOTIFY to a LISTENing connection, one at a time.
async fn raw_notify(url: &str, count: usize) -> Vec<Duration> {
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap();
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen("bench").await.unwrap();
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        sqlx::query("SELECT pg_notify('bench', 'x')")
            .execute(&pool)
            .await
            .unwrap();
        listener.recv().await.unwrap();
        latencies.push(t.elapsed());
    }
    latencies.sort();
    latencies
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let scale: f64 = args
        .first()
        .map_or(1.0, |s| s.parse().expect("SCALE is a number"));
    // `quota` measures quota admission alone: a few minutes less per run
    // when that is the figure being worked on.
    let section = args.get(1).map(String::as_str);
    if let Some(other) = section
        .filter(|s| !["quota", "owners", "template-labels", "gin-pending", "kube"].contains(s))
    {
        panic!(
            "unknown section `{other}`; those known are `quota`, `owners`, `template-labels`, `gin-pending` and `kube`"
        );
    }
    let scaled = |n: usize| ((n as f64 * scale).round() as usize).max(1);

    let postgres = Postgres::start();
    let database = postgres.create_database();
    let baseline_database = postgres.create_database();
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_control-plane"));
    let token = testkit::init_cluster(binary, &database, &[]);
    let plane = ControlPlane::start(binary, &database, &["--max-connections", "32"]);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = Client::new(&ClientConfig {
        server: plane.url.clone(),
        token: token.clone(),
        ..Default::default()
    })
    .unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let sealed_rounds = 3;
        if section == Some("kube") {
            let rounds = 5;
            let figures = kube_views(&plane.url, &token, rounds, CLIENTS, scaled(20)).await;
            print_machine();
            println!(
                "Kubernetes' views next to Skiff's own path, {CLIENTS} clients, median of {rounds} alternating rounds (requests/s):"
            );
            for (what, view, own) in figures {
                println!("  {what:<44} {view:>7.0}/s, Skiff's path {own:>7.0}/s, ratio {:.2}", view / own);
            }
            return;
        }
        if section == Some("quota") {
            let (with_quota, without_quota) =
                quota_admission(&api, sealed_rounds, CLIENTS, scaled(20)).await;
            print_machine();
            print_quota(sealed_rounds, with_quota, without_quota);
            return;
        }
        for (section_name, setting) in [
            ("owners", &OWNERS_INDEX),
            ("template-labels", &TEMPLATE_LABELS_INDEX),
            ("gin-pending", &GIN_WITHOUT_PENDING_LISTS),
        ] {
            if section != Some(section_name) {
                continue;
            }
            let rounds = 5;
            let (with, without) =
                setting_cost(&api, &database, setting, rounds, CLIENTS, scaled(20)).await;
            print_machine();
            println!(
                "Pod creates naming an owner with {} next to without, {CLIENTS} clients, median of {rounds} alternating rounds:",
                setting.name
            );
            println!(
                "  with {with:>7.0}/s, without {without:>7.0}/s, ratio {:.2}",
                with / without
            );
            return;
        }
        let sequential_n = scaled(1000);
        let concurrent_per = scaled(100);
        eprintln!("measuring API writes");
        let api_rows = [
            api_writes(&api, "create, 1 client", 1, sequential_n).await,
            api_writes(&api, &format!("create, {CLIENTS} clients"), CLIENTS, concurrent_per).await,
            api_updates(&api, CLIENTS, scaled(50)).await,
        ];
        eprintln!("measuring raw Postgres writes");
        let raw_rows = [
            raw_writes(&baseline_database, "raw 1", 1, sequential_n).await,
            raw_writes(&baseline_database, "raw 64", CLIENTS, concurrent_per).await,
            raw_writes(&baseline_database, "raw 64 again", CLIENTS, scaled(50)).await,
        ];
        eprintln!("measuring Secrets next to ConfigMaps");
        let value = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            vec![7u8; 1024],
        );
        let [sealed_creates, sealed_reads] = secrets_next_to_config_maps(
            &api,
            sealed_rounds,
            CLIENTS,
            scaled(20),
            &value,
        )
        .await;
        eprintln!("measuring quota admission");
        let (with_quota, without_quota) = quota_admission(&api, sealed_rounds, CLIENTS, scaled(20)).await;
        eprintln!("measuring watch fan-out");
        let (delivered, expected, watch_latencies) = fan_out(&api, WATCHERS, scaled(10_000)).await;
        eprintln!("measuring raw LISTEN/NOTIFY");
        let notify = raw_notify(&baseline_database, scaled(1000)).await;

        print_machine();
        println!("Baseline: the same number of single-row INSERTs, each its own commit, on the same Postgres");
        println!();
        println!(
            "{:<34} {:>9} {:>8} {:>8} | {:>11} {:>8} {:>8} | {:>6}",
            "API writes", "writes/s", "p50 ms", "p99 ms", "raw PG w/s", "p50 ms", "p99 ms", "ratio"
        );
        for (api, raw) in api_rows.iter().zip(&raw_rows) {
            println!(
                "{:<34} {:>9.0} {:>8.2} {:>8.2} | {:>11.0} {:>8.2} {:>8.2} | {:>6.2}",
                api.label,
                api.writes_per_second,
                api.p50(),
                api.p99(),
                raw.writes_per_second,
                raw.p50(),
                raw.p99(),
                api.writes_per_second / raw.writes_per_second
            );
        }
        println!();
        println!(
            "Secrets (encrypted at rest) next to ConfigMaps of the same size (a 1 KiB value), {CLIENTS} clients, median of {sealed_rounds} alternating rounds:"
        );
        for (what, (secrets, config_maps)) in
            [("create", sealed_creates), ("read by name", sealed_reads)]
        {
            println!(
                "  {what:<13} Secrets {secrets:>7.0}/s, ConfigMaps {config_maps:>7.0}/s, ratio {:.2}",
                secrets / config_maps
            );
        }
        print_quota(sealed_rounds, with_quota, without_quota);
        println!();
        println!(
            "Watch fan-out: {WATCHERS} watchers x {} changes: {delivered} of {expected} events delivered",
            expected / WATCHERS
        );
        println!(
            "  delivery latency from sending the write: p50 {:.2} ms, p99 {:.2} ms",
            percentile(&watch_latencies, 0.5),
            percentile(&watch_latencies, 0.99)
        );
        println!(
            "  baseline, Postgres NOTIFY to LISTEN round trip: p50 {:.2} ms, p99 {:.2} ms (ratio at p99 {:.1})",
            percentile(&notify, 0.5),
            percentile(&notify, 0.99),
            percentile(&watch_latencies, 0.99) / percentile(&notify, 0.99)
        );
    });
    drop(plane);
}

fn print_machine() {
    println!();
    println!(
        "Machine: {} cores, {}; Postgres 15 on loopback, fsync on; client, control plane and Postgres share it",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
}

fn print_quota(rounds: usize, with_quota: f64, without_quota: f64) {
    println!(
        "Pod creates in a namespace under a ResourceQuota (pods, memory, instances, pod.memory, pod.timeout) next to one without, {CLIENTS} clients, median of {rounds} alternating rounds:"
    );
    println!(
        "  with quota {with_quota:>7.0}/s, without {without_quota:>7.0}/s, ratio {:.2}",
        with_quota / without_quota
    );
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
