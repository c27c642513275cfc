//! The dashboard in headless Chromium against a real control plane on
//! Postgres (release build): how long the overview of a cluster of
//! DEPLOYMENTS Deployments with PODS pods in all takes to be read and
//! drawn, next to the same page with nothing to show; then how far behind
//! the cluster it falls while the Deployments change RATE times a second.
//!
//! Usage: `bench/dashboard [DEPLOYMENTS] [PODS] [RATE]` (100, 1000, 100).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Cluster, machine, percentile};
use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_client::ListOptions;
use testkit::browser::Browser;

/// Page loads measured per figure (after one that warms caches).
const LOADS: usize = 7;
/// How long the changes are written for.
const CHANGING: Duration = Duration::from_secs(20);

fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// Milliseconds from navigation to the overview drawn with everything it
/// reads, for the overview of `namespace` ("" for all), `LOADS` times.
fn overview_loads(browser: &Browser, namespace: &str, expect_pods: usize) -> Vec<f64> {
    let path = if namespace.is_empty() {
        "/ui/#/overview".to_owned()
    } else {
        format!("/ui/#/overview?ns={namespace}")
    };
    (0..=LOADS)
        .map(|_| {
            // A fresh page each time: the token is in the tab's storage.
            browser.goto_url("about:blank");
            browser.goto(&path);
            browser.wait_for(
                "#pods-by-phase a",
                &format!("{expect_pods} pods counted"),
                |t| t.iter().any(|s| s.contains(&format!("All {expect_pods} pods"))),
            );
            let mut drawn = Value::Null;
            assert!(testkit::wait_until(Duration::from_secs(30), || {
                drawn = browser.run(
                    "const m = performance.getEntriesByName('skiff:overview-drawn')[0]; return m ? m.startTime : null;",
                    vec![],
                );
                drawn.is_number()
            }));
            drawn.as_f64().unwrap()
        })
        .skip(1)
        .collect()
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let deployments = args.next().unwrap_or(100);
    let pods = args.next().unwrap_or(1_000);
    let rate = args.next().unwrap_or(100).max(1);
    let replicas = pods.div_ceil(deployments);
    println!(
        "dashboard: headless Chromium, real control plane and Postgres; release builds; {}",
        machine()
    );
    let cluster = Cluster::start("skiff-dashboard");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    cluster.ctl.run(&["create", "namespace", "empty"]);
    // No node joins: the pods stay Pending, which the overview counts as
    // it counts any phase. What is measured is reading and drawing them.
    runtime.block_on(async {
        for i in 0..deployments {
            let name = format!("app-{i:03}");
            let deployment = json!({
                "apiVersion": "skiff.dev/v1", "kind": "Deployment",
                "metadata": {"name": name},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"image": cluster.hello_ref, "resources": {"memory": "16Mi"}}},
                },
            });
            cluster
                .api
                .create(Kind::Deployment, Some("default"), &deployment)
                .await
                .expect("create a Deployment");
        }
    });
    let total = deployments * replicas;
    assert!(
        testkit::wait_until(Duration::from_secs(300), || {
            runtime
                .block_on(
                    cluster
                        .api
                        .list_all(Kind::Pod, None, &ListOptions::default()),
                )
                .is_ok_and(|list| list.items.len() >= total)
        }),
        "the controllers never made {total} pods"
    );
    println!("  {deployments} Deployments, {total} pods (Pending: no node)");

    let browser = Browser::start(&cluster.plane.url);
    browser.goto("/ui/");
    browser.type_into("#token", &cluster.admin);
    browser.click("#signin-button");
    browser.wait_present("#signout");

    let empty = overview_loads(&browser, "empty", 0);
    let full = overview_loads(&browser, "", total);
    let (empty50, full50) = (percentile(&empty, 50), percentile(&full, 50));
    println!(
        "  overview drawn, navigation to every list read and drawn     p50 {full50:>7.0} ms   p99 {:>7.0} ms   (n={LOADS})",
        percentile(&full, 99)
    );
    println!(
        "  baseline: the same page with nothing to show                p50 {empty50:>7.0} ms   p99 {:>7.0} ms   ({:.2}x)   target under 1000 ms",
        percentile(&empty, 99),
        full50 / empty50
    );

    // Live: every redraw of the Deployments card records the revision it
    // drew and when; each change is matched to the first draw of it.
    browser.goto("/ui/#/overview");
    browser.wait_for("#pods-by-phase a", "the overview", |t| !t.is_empty());
    browser.run(
        "window.drawn = [];
         const card = document.getElementById('deployments');
         new MutationObserver(() => window.drawn.push([Number(card.dataset.revision), performance.timeOrigin + performance.now()]))
           .observe(card, {attributes: true, attributeFilter: ['data-revision']});
         return null;",
        vec![],
    );
    let written: Arc<Mutex<Vec<(i64, f64)>>> = Arc::default();
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    runtime.block_on(async {
        let started = Instant::now();
        let mut tick = tokio::time::interval(period);
        let mut n = 0usize;
        while started.elapsed() < CHANGING {
            tick.tick().await;
            let name = format!("app-{:03}", n % deployments);
            let patch = json!({"metadata": {"annotations": {"bench/tick": n.to_string()}}});
            let api = cluster.api.clone();
            let written = written.clone();
            n += 1;
            // Each change on its own task: a slow answer does not hold
            // the next change back, so the rate is the rate asked for.
            tokio::spawn(async move {
                let changed = api
                    .patch(Kind::Deployment, Some("default"), &name, &patch, false)
                    .await
                    .expect("a change");
                let revision = changed["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|r| r.parse().ok())
                    .expect("a revision");
                written.lock().unwrap().push((revision, epoch_ms()));
            });
        }
    });
    // Every change has been answered: wait for the page to draw the last.
    std::thread::sleep(Duration::from_millis(200));
    let written = written.lock().unwrap().clone();
    let last = written.iter().map(|(r, _)| *r).max().unwrap();
    let mut drawn: Vec<(i64, f64)> = Vec::new();
    assert!(
        testkit::wait_until(Duration::from_secs(30), || {
            drawn = serde_json::from_value(browser.run("return window.drawn;", vec![]))
                .unwrap_or_default();
            drawn.iter().any(|(r, _)| *r >= last)
        }),
        "the page never drew revision {last}"
    );
    let lags: Vec<f64> = written
        .iter()
        .map(|(revision, at)| {
            let seen = drawn
                .iter()
                .find(|(r, _)| r >= revision)
                .map_or(f64::INFINITY, |(_, t)| *t);
            ((seen - at) / 1000.0).max(0.0)
        })
        .collect();
    let seconds = CHANGING.as_secs_f64();
    println!(
        "  {} changes in {seconds:.0} s ({:.0}/s): change answered to drawn  p50 {:>7.0} ms   p99 {:>7.0} ms   max {:>6.0} ms   ({} redraws)",
        written.len(),
        written.len() as f64 / seconds,
        percentile(&lags, 50) * 1000.0,
        percentile(&lags, 99) * 1000.0,
        lags.iter().copied().fold(0.0, f64::max) * 1000.0,
        drawn.len()
    );
}
