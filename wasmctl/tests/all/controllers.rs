//! Controllers against real processes: Deployments rolled out, rolled back
//! and healed, Services and Routes on every node's ingress, service
//! discovery for guests, probes and crash loops.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use serde_json::{Value, json};
use testkit::wait_until;

use crate::nodes::{NodeCluster, WAIT, pod, push};
use crate::support::{HttpResponse, http_request, test_guest};

/// The host a Route sends to the `web` Service.
pub(crate) const WEB_HOST: &str = "web.example.com";

/// A cluster of three nodes with the misbehave guest in its registry.
pub(crate) fn cluster() -> (NodeCluster, String) {
    let cluster = NodeCluster::start(&[("n1", &[]), ("n2", &[]), ("n3", &[])]);
    let image = format!("{}/misbehave:v1", cluster.registry.addr);
    push(&test_guest("misbehave"), &image);
    (cluster, image)
}

/// A Deployment of `image` labelled app=`name`, with `env` and more spec.
pub(crate) fn deployment(
    name: &str,
    image: &str,
    replicas: u32,
    env: &[(&str, &str)],
    spec: Value,
) -> Value {
    let env: Vec<Value> = env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    let mut deployment = json!({
        "apiVersion": "skiff.dev/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "image": image,
                    "env": env,
                    "placement": "Spread",
                    "readinessProbe": {"httpGet": {"path": "/"}, "periodSeconds": 1, "failureThreshold": 1},
                },
            },
        },
    });
    for (key, value) in spec.as_object().expect("a spec object") {
        deployment["spec"][key] = value.clone();
    }
    deployment
}

pub(crate) fn service(name: &str) -> Value {
    json!({
        "apiVersion": "skiff.dev/v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80}]},
    })
}

pub(crate) fn route(name: &str, host: &str) -> Value {
    json!({
        "apiVersion": "skiff.dev/v1", "kind": "Route",
        "metadata": {"name": name},
        "spec": {"host": host, "service": name},
    })
}

/// `wasmctl rollout status` to success.
pub(crate) fn rolled_out(cluster: &NodeCluster, name: &str) -> String {
    cluster.cluster.ok(&[
        "rollout",
        "status",
        &format!("deployment/{name}"),
        "--timeout",
        "60s",
    ])
}

/// The Deployment's pods by name, with their JSON.
pub(crate) fn pods_of(cluster: &NodeCluster, app: &str) -> BTreeMap<String, Value> {
    let list = cluster.json(&["get", "pods", "-l", &format!("app={app}")]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_owned(),
                p.clone(),
            )
        })
        .collect()
}

/// Sends requests for the web Route through `ingresses` in turn until
/// stopped, keeping every answer (or failure to get one).
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    worker: JoinHandle<Vec<Result<HttpResponse, String>>>,
}

impl Load {
    pub(crate) fn start(ingresses: Vec<SocketAddr>, path: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let worker = std::thread::spawn(move || {
            let mut answers = Vec::new();
            for ingress in ingresses.iter().cycle() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                answers
                    .push(http_request(*ingress, WEB_HOST, path, &[]).map_err(|e| e.to_string()));
            }
            answers
        });
        Load { stop, worker }
    }

    pub(crate) fn finish(self) -> Vec<Result<HttpResponse, String>> {
        self.stop.store(true, Ordering::Relaxed);
        self.worker.join().expect("the load thread")
    }
}

/// The bodies of the answers; panics on any failed request.
pub(crate) fn all_succeeded(answers: &[Result<HttpResponse, String>]) -> BTreeMap<String, usize> {
    let mut bodies = BTreeMap::new();
    for (i, answer) in answers.iter().enumerate() {
        match answer {
            Ok(r) if r.status == 200 => *bodies.entry(r.body.clone()).or_default() += 1,
            Ok(r) => panic!(
                "request {i} of {} failed: {} {}",
                answers.len(),
                r.status,
                r.body
            ),
            Err(e) => panic!("request {i} of {} failed: {e}", answers.len()),
        }
    }
    bodies
}

#[test]
fn rolling_updates_fail_no_request_and_a_broken_revision_rolls_back() {
    let (cluster, image) = cluster();
    let spec = json!({
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "progressDeadlineSeconds": 5,
    });
    let web = |env: &[(&str, &str)]| deployment("web", &image, 3, env, spec.clone());
    cluster.apply(&[
        web(&[("VERSION", "v1")]),
        service("web"),
        route("web", WEB_HOST),
    ]);
    rolled_out(&cluster, "web");
    let ingresses: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.ingress).collect();
    assert!(
        wait_until(WAIT, || http_request(
            ingresses[0],
            WEB_HOST,
            "/env?name=VERSION",
            &[]
        )
        .is_ok_and(|r| r.status == 200)),
        "the Route never answered"
    );

    // v1 → v2 under continuous load through every node's ingress.
    let load = Load::start(ingresses.clone(), "/env?name=VERSION");
    cluster.apply(&[web(&[("VERSION", "v2")])]);
    let status = rolled_out(&cluster, "web");
    assert!(
        status.contains("successfully rolled out (revision 2)"),
        "{status}"
    );
    let v2_pods = pods_of(&cluster, "web");
    assert_eq!(v2_pods.len(), 3, "{v2_pods:#?}");
    // Keep the load on until the new revision is answering everywhere.
    wait_until(WAIT, || {
        ingresses.iter().all(|i| {
            http_request(*i, WEB_HOST, "/env?name=VERSION", &[]).is_ok_and(|r| r.body == "v2")
        })
    });
    let answers = load.finish();
    let bodies = all_succeeded(&answers);
    assert!(
        bodies.keys().all(|b| b == "v1" || b == "v2")
            && bodies.contains_key("v1")
            && bodies.contains_key("v2"),
        "answers: {bodies:?}"
    );
    println!(
        "rolling update v1 → v2: {} requests, none failed: {bodies:?}",
        answers.len()
    );

    // v3 traps on every request: its pods never get ready, so no v2 pod
    // goes (maxUnavailable 0) and the progress deadline rolls it back.
    let load = Load::start(ingresses.clone(), "/env?name=VERSION");
    cluster.apply(&[web(&[("VERSION", "v3"), ("TRAP_ALWAYS", "1")])]);
    let failed = cluster.cluster.fails(
        &["rollout", "status", "deployment/web", "--timeout", "60s"],
        1,
    );
    assert!(
        failed.contains("revision 3 failed: progress deadline exceeded"),
        "{failed}"
    );
    let rolled_back =
        cluster
            .cluster
            .ok(&["rollout", "status", "deployment/web", "--timeout", "60s"]);
    assert!(
        rolled_back.contains("successfully rolled out (revision 4)"),
        "{rolled_back}"
    );
    let answers = load.finish();
    let bodies = all_succeeded(&answers);
    assert_eq!(bodies.keys().collect::<Vec<_>>(), ["v2"], "{bodies:?}");
    let after = pods_of(&cluster, "web");
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        v2_pods.keys().collect::<Vec<_>>(),
        "the v2 pods should have stayed through the failed rollout"
    );
    let history = cluster
        .cluster
        .ok(&["rollout", "history", "deployment/web"]);
    assert!(
        history.lines().any(|l| l.starts_with("3 ")
            && l.contains("failed")
            && l.contains("progress deadline exceeded")),
        "{history}"
    );
    assert!(
        history
            .lines()
            .any(|l| l.starts_with("4 ") && l.contains("current")),
        "{history}"
    );

    // An explicit undo to the first revision.
    let undone = cluster
        .cluster
        .ok(&["rollout", "undo", "deployment/web", "--to-revision", "1"]);
    assert_eq!(undone.trim(), "deployment/web rolled back to revision 1");
    rolled_out(&cluster, "web");
    assert!(
        wait_until(WAIT, || ingresses.iter().all(|i| {
            http_request(*i, WEB_HOST, "/env?name=VERSION", &[]).is_ok_and(|r| r.body == "v1")
        })),
        "v1 is not served after the undo"
    );
    let missing = cluster.cluster.fails(
        &["rollout", "undo", "deployment/web", "--to-revision", "99"],
        2,
    );
    assert!(missing.contains("has no revision 99"), "{missing}");
}

#[test]
fn a_killed_node_s_pods_are_replaced_and_the_service_recovers() {
    let (mut cluster, image) = cluster();
    cluster.apply(&[
        deployment("web", &image, 6, &[("VERSION", "v1")], json!({})),
        service("web"),
        route("web", WEB_HOST),
    ]);
    rolled_out(&cluster, "web");
    let before = pods_of(&cluster, "web");
    let on_n3: Vec<String> = before
        .iter()
        .filter(|(_, p)| p["spec"]["nodeName"] == "n3")
        .map(|(name, _)| name.clone())
        .collect();
    let mut per_node = BTreeMap::<&str, usize>::new();
    for pod in before.values() {
        *per_node
            .entry(pod["spec"]["nodeName"].as_str().unwrap())
            .or_default() += 1;
    }
    assert_eq!(
        per_node.values().collect::<Vec<_>>(),
        [&2, &2, &2],
        "Spread placement: {per_node:?}"
    );
    let ingress = cluster.node("n1").ingress;

    let killed = Instant::now();
    cluster.node_mut("n3").kill();
    // Recovered: every pod of the Deployment is Ready on a live node, and
    // then a run of requests all succeed.
    let recovered = wait_until(WAIT, || {
        let pods = pods_of(&cluster, "web");
        pods.len() == 6
            && pods.values().all(|p| {
                p["spec"]["nodeName"] != "n3" && p["status"]["conditions"][0]["status"] == "True"
            })
            && (0..20).all(|_| {
                http_request(ingress, WEB_HOST, "/env?name=VERSION", &[])
                    .is_ok_and(|r| r.status == 200)
            })
    });
    assert!(recovered, "the Deployment did not recover from losing n3");
    println!(
        "node n3 killed: {} pods replaced and the Service whole again after {:.1} s",
        on_n3.len(),
        killed.elapsed().as_secs_f64()
    );

    // The node comes back: the pods it had were replaced, so it stops them
    // and no duplicates remain.
    cluster.node_mut("n3").restart();
    let n3 = cluster.node("n3").ingress;
    for name in &on_n3 {
        assert!(
            wait_until(WAIT, || http_request(
                n3,
                &format!("{name}.default.pod"),
                "/",
                &[]
            )
            .is_ok_and(|r| r.status == 404)),
            "{name} is still served by n3 after it came back"
        );
    }
    let after = pods_of(&cluster, "web");
    assert_eq!(after.len(), 6, "{after:#?}");
    assert!(on_n3.iter().all(|name| !after.contains_key(name)));
}

#[test]
fn a_crash_loop_backs_off_longer_each_time_and_a_failing_liveness_probe_restarts() {
    let (cluster, image) = cluster();
    let probe = format!("{}/probe:v1", cluster.registry.addr);
    push(&test_guest("probe"), &probe);
    cluster.apply(&[
        pod("crasher", &probe, json!({"args": ["trap"], "restartPolicy": "Always"})),
        pod("undead", &image, json!({
            "livenessProbe": {"httpGet": {"path": "/trap"}, "periodSeconds": 1, "failureThreshold": 2},
        })),
    ]);

    // Each back-off message names its delay: they must grow (the nodes
    // start at 200 ms and double up to 1 s).
    let delays = std::cell::RefCell::new(Vec::<u64>::new());
    cluster.wait_pod("crasher", "in a growing crash loop", |p| {
        let mut delays = delays.borrow_mut();
        if p["status"]["reason"] == "CrashLoopBackOff"
            && let Some(ms) = p["status"]["message"]
                .as_str()
                .and_then(|m| m.strip_prefix("back-off "))
                .and_then(|m| m.split_once("ms"))
                .and_then(|(ms, _)| ms.parse::<u64>().ok())
            && delays.last() != Some(&ms)
        {
            delays.push(ms);
        }
        delays.len() >= 3
    });
    // In the order seen (a quick back-off may pass between two looks).
    let delays = delays.into_inner();
    assert!(
        delays.windows(2).all(|w| w[0] < w[1])
            && delays.iter().all(|d| [200, 400, 800, 1000].contains(d)),
        "{delays:?}"
    );
    let crasher = cluster.pod("crasher");
    assert!(
        crasher["status"]["restartCount"].as_u64().unwrap() >= 3,
        "{crasher:#}"
    );
    let table = cluster.cluster.ok(&["get", "pods"]);
    let row = table.lines().find(|l| l.starts_with("crasher")).unwrap();
    assert!(row.contains("CrashLoopBackOff"), "{table}");

    let undead = cluster.wait_pod("undead", "restarted by its liveness probe", |p| {
        p["status"]["restartCount"].as_u64() >= Some(1)
    });
    let message = undead["status"]["message"].as_str().unwrap_or_default();
    let node_log = cluster.nodes.iter().map(|n| n.log()).collect::<String>();
    assert!(
        message.contains("liveness probe failed 2 times: GET /trap: 500")
            || node_log.contains("liveness probe failed 2 times: GET /trap: 500"),
        "{undead:#}"
    );
}

#[test]
fn scale_pause_resume_and_a_foreground_delete_then_a_route_without_endpoints_answers_503() {
    let (cluster, image) = cluster();
    let web = |version: &str| deployment("web", &image, 1, &[("VERSION", version)], json!({}));
    cluster.apply(&[web("v1"), service("web"), route("web", WEB_HOST)]);
    rolled_out(&cluster, "web");
    let scaled = cluster
        .cluster
        .ok(&["scale", "deployment/web", "--replicas", "2"]);
    assert_eq!(scaled.trim(), "deployment/web scaled to 2");
    rolled_out(&cluster, "web");
    let v1_pods = pods_of(&cluster, "web");
    assert_eq!(v1_pods.len(), 2);
    let services = cluster.cluster.ok(&["get", "services"]);
    assert!(
        services
            .lines()
            .any(|l| l.starts_with("web") && l.contains("2/2")),
        "{services}"
    );

    // Paused, a template change waits (and `rollout status` says so);
    // resumed, it rolls out. (Apply replaces the spec, so the manifest
    // keeps the scale and the pause.)
    cluster.cluster.ok(&["rollout", "pause", "deployment/web"]);
    let mut paused = web("v2");
    paused["spec"]["replicas"] = json!(2);
    paused["spec"]["paused"] = json!(true);
    cluster.apply(&[paused]);
    let waiting = cluster
        .cluster
        .fails(&["rollout", "status", "deployment/web"], 1);
    assert!(waiting.contains("is paused"), "{waiting}");
    assert_eq!(
        pods_of(&cluster, "web").keys().collect::<Vec<_>>(),
        v1_pods.keys().collect::<Vec<_>>()
    );
    let resumed = cluster.cluster.ok(&["rollout", "resume", "deployment/web"]);
    assert_eq!(resumed.trim(), "deployment/web resumed");
    let status = rolled_out(&cluster, "web");
    assert!(status.contains("revision 2"), "{status}");
    let v2_pods = pods_of(&cluster, "web");
    assert_eq!(v2_pods.len(), 2);
    assert!(v2_pods.keys().all(|name| !v1_pods.contains_key(name)));

    // In the foreground: the command returns once the Deployment is gone,
    // which is after its pods.
    let deleted = cluster
        .cluster
        .ok(&["delete", "deployment", "web", "--cascade", "foreground"]);
    assert_eq!(deleted.trim(), "deployment \"web\" deleted");
    let left = pods_of(&cluster, "web");
    assert!(left.is_empty(), "pods outlived their Deployment: {left:#?}");
    let ingress = cluster.node("n2").ingress;
    let mut last = None;
    assert!(
        wait_until(WAIT, || {
            last = http_request(ingress, WEB_HOST, "/", &[]).ok();
            last.as_ref().is_some_and(|r| r.status == 503)
        }),
        "{:?}",
        last.map(|r| (r.status, r.body))
    );
    let body = last.unwrap().body;
    assert_eq!(body, "service default/web has no ready endpoints\n");
    let unrouted = http_request(ingress, "nowhere.example.com", "/", &[]).unwrap();
    assert_eq!(unrouted.status, 404);
    assert!(
        unrouted
            .body
            .contains("no Route matches host `nowhere.example.com`"),
        "{}",
        unrouted.body
    );
}

#[test]
fn a_guest_calls_a_service_by_name_and_the_calls_are_balanced() {
    let (cluster, image) = cluster();
    let backend = |name: &str, version: &str| {
        let mut backend = pod(
            name,
            &image,
            json!({"env": [{"name": "VERSION", "value": version}]}),
        );
        backend["metadata"]["labels"] = json!({"app": "backend"});
        backend
    };
    cluster.apply(&[
        backend("backend-a", "a"),
        backend("backend-b", "b"),
        json!({
            "apiVersion": "skiff.dev/v1", "kind": "Service",
            "metadata": {"name": "backend"},
            "spec": {"selector": {"app": "backend"}},
        }),
        pod("front", &image, json!({})),
    ]);
    let front = cluster.wait_running("front");
    cluster.wait_running("backend-a");
    cluster.wait_running("backend-b");
    let ingress = cluster
        .node(front["spec"]["nodeName"].as_str().unwrap())
        .ingress;
    let call = |url: &str| {
        http_request(
            ingress,
            "front.default.pod",
            &format!("/fetch?url={url}"),
            &[],
        )
        .unwrap()
    };
    assert!(
        wait_until(WAIT, || call("http://backend.default.svc/env?name=VERSION")
            .status
            == 200),
        "the Service never answered the guest"
    );
    let mut seen = BTreeMap::new();
    for _ in 0..20 {
        let answer = call("http://backend.default.svc/env?name=VERSION");
        assert_eq!(answer.status, 200, "{}", answer.body);
        *seen.entry(answer.body).or_insert(0) += 1;
    }
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["a", "b"], "{seen:?}");
    // Another namespace's Service is not reachable without a grant.
    let denied = call("http://backend.other.svc/");
    assert_eq!(denied.status, 403, "{}", denied.body);
    // Nor is anything else.
    assert_eq!(call("http://127.0.0.1:1/").status, 403);
}
