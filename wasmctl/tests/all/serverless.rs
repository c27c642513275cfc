//! Functions that scale with their load and down to zero, against real
//! processes: a control plane on Postgres, two nodes, a registry.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::wait_until;

use crate::controllers::{
    Load, WEB_HOST, all_succeeded, deployment, pods_of, rolled_out, route, service,
};
use crate::nodes::{NodeCluster, WAIT, push};
use crate::support::{http_call, http_request, repo_root, test_guest};

/// Two nodes with the misbehave guest in the registry.
fn cluster() -> (NodeCluster, String) {
    let cluster = NodeCluster::start(&[("n1", &[]), ("n2", &[])]);
    let image = format!("{}/misbehave:v1", cluster.registry.addr);
    push(&test_guest("misbehave"), &image);
    (cluster, image)
}

/// The `web` Deployment of `image` (VERSION `version`), autoscaled as
/// `autoscaling` says; no readiness probe, so a pod serves as it starts.
fn function(image: &str, version: &str, autoscaling: Value) -> Value {
    let mut web = deployment("web", image, 1, &[("VERSION", version)], json!({}));
    let spec = web["spec"].as_object_mut().unwrap();
    spec.remove("replicas");
    spec.insert("autoscaling".into(), autoscaling);
    web["spec"]["template"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("readinessProbe");
    web
}

fn replicas(cluster: &NodeCluster, name: &str) -> u64 {
    cluster.json(&["get", "deployment", name])["spec"]["replicas"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

/// Waits until Deployment `name` is at zero with no pod left.
fn wait_for_zero(cluster: &NodeCluster, name: &str) {
    let mut last = 0;
    assert!(
        wait_until(WAIT, || {
            last = replicas(cluster, name);
            last == 0 && pods_of(cluster, name).is_empty()
        }),
        "{name} never went to zero (replicas {last}); nodes:\n{}",
        cluster.nodes.iter().map(|n| n.log()).collect::<String>()
    );
}

#[test]
fn a_function_at_zero_answers_its_first_requests_and_goes_back_to_zero_when_idle() {
    let (cluster, image) = cluster();
    let autoscaling = json!({"minReplicas": 0, "maxReplicas": 4, "targetConcurrency": 10, "scaleDownDelay": "2s"});
    cluster.apply(&[
        function(&image, "v1", autoscaling.clone()),
        service("web"),
        route("web", WEB_HOST),
    ]);
    // Deployed, it starts with one pod; nobody calls it, so it goes.
    wait_for_zero(&cluster, "web");
    let table = cluster.cluster.ok(&["get", "deployments"]);
    let row = table.lines().find(|l| l.starts_with("web")).unwrap();
    assert!(row.contains("0-4,at-zero"), "{table}");
    let events = cluster
        .cluster
        .ok(&["get", "events", "--for", "deployment/web"]);
    assert!(events.contains("ScaledToZero"), "{events}");

    // The first request, through a Route, is held until a pod serves it;
    // the pod goes to the node that held it (whichever node that is).
    for held_on in ["n2", "n1"] {
        wait_for_zero(&cluster, "web");
        let ingress = cluster.node(held_on).ingress;
        let first = http_request(ingress, WEB_HOST, "/env?name=VERSION", &[]).unwrap();
        assert_eq!(
            (first.status, first.body.as_str()),
            (200, "v1"),
            "{first:?}"
        );
        assert_eq!(replicas(&cluster, "web"), 1);
        let pods = pods_of(&cluster, "web");
        let placed: Vec<_> = pods
            .values()
            .map(|p| {
                (
                    p["spec"]["nodeName"].as_str().unwrap_or_default(),
                    p["metadata"]["annotations"]["skiff.dev/preferred-node"]
                        .as_str()
                        .unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(placed, [(held_on, held_on)], "{pods:#?}");
    }

    // Idle again, it goes back to zero; then many at once are all served.
    wait_for_zero(&cluster, "web");
    let ingresses = [cluster.node("n1").ingress, cluster.node("n2").ingress];
    let answers: Vec<_> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..40)
            .map(|i| {
                let ingress = ingresses[i % 2];
                scope.spawn(move || http_request(ingress, WEB_HOST, "/sleep?ms=50", &[]))
            })
            .collect();
        calls
            .into_iter()
            .map(|call| call.join().unwrap().map_err(|e| e.to_string()))
            .collect()
    });
    let bodies = all_succeeded(&answers);
    assert_eq!(bodies.get("slept 50ms\n"), Some(&40), "{bodies:?}");

    // A new revision rolled out while at zero is what the next request
    // meets.
    wait_for_zero(&cluster, "web");
    cluster.apply(&[function(&image, "v2", autoscaling)]);
    let next = http_request(ingresses[1], WEB_HOST, "/env?name=VERSION", &[]).unwrap();
    assert_eq!((next.status, next.body.as_str()), (200, "v2"), "{next:?}");
}

/// The example manifest `examples/function.yaml`, as written but for its
/// image (hello-http, pushed to the test registry) and a shorter
/// scale-down delay: idle, it goes to zero, and its Route answers from
/// there.
#[test]
fn the_example_function_goes_to_zero_and_answers_from_it() {
    const IMAGE: &str = "registry.example.com/fn/hello:v1";
    const DELAY: &str = "scaleDownDelay: 30s";
    let cluster = NodeCluster::start(&[("n1", &[])]);
    let text = std::fs::read_to_string(repo_root().join("examples/function.yaml")).unwrap();
    assert!(text.contains(IMAGE) && text.contains(DELAY), "{text}");
    let text = text
        .replace(IMAGE, &cluster.hello)
        .replace(DELAY, "scaleDownDelay: 1s");
    let applied = cluster.cluster.ok(&[
        "apply",
        "-f",
        &cluster.cluster.manifest("function.yaml", &text),
    ]);
    assert_eq!(applied.lines().count(), 3, "{applied}");
    wait_for_zero(&cluster, "hello");
    let answer = http_request(cluster.node("n1").ingress, "hello.example.com", "/", &[]).unwrap();
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "Hello, world! (GET /)\n"),
        "{answer:?}"
    );
    assert_eq!(replicas(&cluster, "hello"), 1);
}

#[test]
fn a_steady_load_keeps_load_over_target_pods_and_a_rollout_under_it_loses_nothing() {
    let (cluster, image) = cluster();
    let autoscaling = json!({"minReplicas": 0, "maxReplicas": 10, "targetConcurrency": 2, "scaleDownDelay": "30s"});
    // One instance per pod: until the autoscaler has added pods, requests
    // beyond the instances there are wait their turn rather than fail.
    let narrow = |version: &str| {
        let mut web = function(&image, version, autoscaling.clone());
        web["spec"]["template"]["spec"]["resources"] = json!({"maxInstances": 1});
        web
    };
    cluster.apply(&[narrow("v1"), service("web"), route("web", WEB_HOST)]);
    // Six callers, each always waiting on a 200 ms request: a concurrency
    // of six, three pods' worth.
    let ingresses = vec![cluster.node("n1").ingress, cluster.node("n2").ingress];
    // Once both nodes know the Route.
    for ingress in &ingresses {
        assert!(wait_until(WAIT, || {
            http_request(*ingress, WEB_HOST, "/", &[]).is_ok_and(|r| r.status == 200)
        }));
    }
    let loads: Vec<Load> = (0..6)
        .map(|_| Load::start(ingresses.clone(), "/sleep?ms=200"))
        .collect();
    let mut seen = 0;
    assert!(
        wait_until(WAIT, || {
            seen = replicas(&cluster, "web");
            (3..=4).contains(&seen) && pods_of(&cluster, "web").len() as u64 == seen
        }),
        "the load never got its pods: replicas {seen}"
    );
    // It stays there (no flapping up to the maximum or down).
    let steady: Vec<u64> = (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_secs(1));
            replicas(&cluster, "web")
        })
        .collect();
    assert!(
        steady.iter().all(|r| (3..=4).contains(r)),
        "{steady:?} {}",
        cluster
            .cluster
            .ok(&["get", "events", "--for", "deployment/web"])
    );

    // A rolling update under the load fails no request.
    cluster.apply(&[narrow("v2")]);
    rolled_out(&cluster, "web");
    for load in loads {
        all_succeeded(&load.finish());
    }
    let version = http_request(ingresses[0], WEB_HOST, "/env?name=VERSION", &[]).unwrap();
    assert_eq!(version.body, "v2");
}

#[test]
fn a_broken_function_at_zero_answers_its_held_requests_with_the_reason() {
    let (cluster, _) = cluster();
    let missing = format!("{}/missing:v1", cluster.registry.addr);
    cluster.apply(&[
        function(
            &missing,
            "v1",
            json!({"minReplicas": 0, "maxReplicas": 2, "scaleDownDelay": "2s"}),
        ),
        service("web"),
        route("web", WEB_HOST),
    ]);
    wait_for_zero(&cluster, "web");
    let ingress = cluster.node("n1").ingress;
    let answer = http_request(ingress, WEB_HOST, "/", &[]).unwrap();
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(
        answer.body.contains("its pods cannot start")
            && (answer.body.contains("ErrImagePull") || answer.body.contains("ImagePullBackOff")),
        "{}",
        answer.body
    );
    // The reason is the pod's state, never the registry's words.
    assert!(
        !answer.body.contains(&cluster.registry.addr.to_string()),
        "{}",
        answer.body
    );
    // Only nodes and editors of the namespace may have a Service started:
    // a viewer, or an editor of another namespace, may not.
    cluster.cluster.ok(&["create", "namespace", "other"]);
    let plane = cluster.cluster.api_addr();
    let activate_as = |token: &str| {
        http_call(
            plane,
            "POST",
            &plane.to_string(),
            "/apis/skiff.dev/v1/namespaces/default/services/web/activate",
            &[("authorization", &format!("Bearer {}", token.trim()))],
            "",
        )
        .unwrap()
    };
    for (namespace, role) in [("default", "view"), ("other", "edit")] {
        let token =
            cluster
                .cluster
                .ok(&["create", "token", "--namespace", namespace, "--role", role]);
        let refused = activate_as(&token);
        assert_eq!(refused.status, 403, "{namespace} {role}: {refused:?}");
    }
    let editor = cluster.cluster.ok(&[
        "create",
        "token",
        "--namespace",
        "default",
        "--role",
        "edit",
    ]);
    let missing = http_call(
        plane,
        "POST",
        &plane.to_string(),
        "/apis/skiff.dev/v1/namespaces/default/services/nothing/activate",
        &[("authorization", &format!("Bearer {}", editor.trim()))],
        "",
    )
    .unwrap();
    assert_eq!(missing.status, 404, "{missing:?}");
}

#[test]
fn the_autoscaler_owns_replicas_and_bad_settings_are_refused() {
    let (cluster, image) = cluster();
    cluster.apply(&[deployment("web", &image, 2, &[], json!({}))]);
    rolled_out(&cluster, "web");
    // Turned on, the Deployment keeps its two pods (within 1 to 5).
    let on = cluster.cluster.ok(&[
        "autoscale",
        "deployment",
        "web",
        "--min",
        "1",
        "--max",
        "5",
        "--concurrency",
        "50",
    ]);
    assert_eq!(on.trim(), "deployment/web autoscaled from 1 to 5 replicas");
    let web = cluster.json(&["get", "deployment", "web"]);
    assert_eq!(web["spec"]["autoscaling"]["targetConcurrency"], 50);
    assert_eq!(web["spec"]["autoscaling"]["scaleDownDelay"], "30s");
    assert_eq!(web["spec"]["replicas"], 2);
    // Scaling by hand is refused while the autoscaler owns the count.
    let refused = cluster
        .cluster
        .fails(&["scale", "deployment/web", "--replicas", "4"], 1);
    assert!(
        refused.contains("spec.replicas") && refused.contains("autoscal"),
        "{refused}"
    );
    // So is the whole object written back with another count, the way
    // around `scale` an API client would try first.
    let mut stored = cluster.json(&["get", "deployment", "web"]);
    stored["spec"]["replicas"] = json!(4);
    let plane = cluster.cluster.api_addr();
    let put = http_call(
        plane,
        "PUT",
        &plane.to_string(),
        "/apis/skiff.dev/v1/namespaces/default/deployments/web",
        &[
            (
                "authorization",
                &format!("Bearer {}", cluster.cluster.token),
            ),
            ("content-type", "application/json"),
        ],
        &stored.to_string(),
    )
    .unwrap();
    assert_eq!(put.status, 422, "{put:?}");
    assert!(put.body.contains("spec.replicas"), "{}", put.body);
    assert_eq!(replicas(&cluster, "web"), 2);
    for (args, field) in [
        (vec!["--min", "3", "--max", "2"], "max must be at least"),
        (vec!["--max", "0"], "max must be at least 1"),
        (vec!["--max", "3", "--concurrency", "0"], "--concurrency"),
    ] {
        let mut command = vec!["autoscale", "deployment/web"];
        command.extend(args);
        let out = cluster.cluster.fails(&command, 2);
        assert!(out.contains(field), "{command:?}: {out}");
    }
    let unparsed = cluster.cluster.run(&[
        "autoscale",
        "deployment/web",
        "--max",
        "3",
        "--scale-down-delay",
        "soon",
    ]);
    assert_eq!(unparsed.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unparsed.stderr);
    assert!(stderr.contains("invalid duration `soon`"), "{stderr}");
    let bad = cluster.json(&["get", "deployment", "web"]);
    assert_eq!(
        bad["spec"]["autoscaling"]["maxReplicas"], 5,
        "nothing half-written"
    );
    // Through the API, a bad spec is one 422 naming the field.
    let mut manifest = deployment("web", &image, 2, &[], json!({}));
    manifest["spec"]["autoscaling"] =
        json!({"minReplicas": 4, "maxReplicas": 2, "scaleDownDelay": "2d"});
    let path = cluster.cluster.manifest("bad.json", &manifest.to_string());
    let out = cluster.cluster.fails(&["apply", "-f", &path], 2);
    assert!(out.contains("spec.autoscaling.minReplicas"), "{out}");
    let plane = cluster.cluster.api_addr();
    let put = http_call(
        plane,
        "PUT",
        &plane.to_string(),
        "/apis/skiff.dev/v1/namespaces/default/deployments/web",
        &[
            (
                "authorization",
                &format!("Bearer {}", cluster.cluster.token),
            ),
            ("content-type", "application/json"),
        ],
        &manifest.to_string(),
    )
    .unwrap();
    assert_eq!(put.status, 422, "{put:?}");
    assert!(
        put.body
            .contains("spec.autoscaling.minReplicas: must not exceed maxReplicas (2)"),
        "{}",
        put.body
    );
    assert!(
        put.body.contains("spec.autoscaling.scaleDownDelay"),
        "{}",
        put.body
    );
    // Off: the replicas stay where they were, and scale works again.
    let off = cluster
        .cluster
        .ok(&["autoscale", "deployment/web", "--off"]);
    assert_eq!(off.trim(), "deployment/web autoscaling off");
    cluster
        .cluster
        .ok(&["scale", "deployment/web", "--replicas", "3"]);
    assert_eq!(replicas(&cluster, "web"), 3);
}
