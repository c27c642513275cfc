//! One node shared by tenants, on real processes: a tenant spinning its
//! guests holds no more than its namespace's instance slots and cannot
//! keep another tenant's requests from being served, and a pod's `cpu`
//! throttles it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::wait_until;

use crate::nodes::{NodeCluster, WAIT, push};
use crate::support::{HttpResponse, http_request, test_guest};

const NAMESPACE_SLOTS: usize = 4;

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "skiff.dev/v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn pod(namespace: &str, name: &str, image: &str, resources: Value) -> Value {
    json!({
        "apiVersion": "skiff.dev/v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"image": image, "nodeName": "n1", "resources": resources},
    })
}

fn get(cluster: &NodeCluster, host: &str, path: &str) -> HttpResponse {
    let ingress = cluster.node("n1").ingress;
    http_request(ingress, host, path, &[]).unwrap_or_else(|e| panic!("{host}{path}: {e}"))
}

#[test]
fn a_spinning_tenant_keeps_to_its_slots_and_others_are_still_served_and_cpu_throttles() {
    let slots = NAMESPACE_SLOTS.to_string();
    // One CPU slot: the spinning guests take turns on one core, and the
    // rest of the machine (other tests) keeps the other.
    let cluster = NodeCluster::start(&[(
        "n1",
        &[
            "--max-concurrency-per-namespace",
            &slots,
            "--guest-cpu-slots",
            "1",
            // The spinning guests hold the machine's cores: even QUICK's
            // lease could lapse under them on a loaded machine and the
            // node's pods be evicted mid-test. A later flag wins.
            "--lease-duration",
            "30s",
        ],
    )]);
    let image = format!("{}/misbehave:v1", cluster.registry.addr);
    push(&test_guest("misbehave"), &image);
    cluster.apply(&[
        namespace("a"),
        namespace("b"),
        pod(
            "a",
            "spin",
            &image,
            json!({"maxInstances": 20, "timeout": "4s"}),
        ),
        pod("a", "late", &image, json!({"timeout": "300ms"})),
        pod("b", "hello", &image, json!({})),
        pod(
            "b",
            "throttled",
            &image,
            json!({"cpu": "10m", "timeout": "20s"}),
        ),
    ]);
    for (namespace, name) in [
        ("a", "spin"),
        ("a", "late"),
        ("b", "hello"),
        ("b", "throttled"),
    ] {
        cluster.wait_pod_in(namespace, name, "Running", |p| {
            p["status"]["phase"] == "Running"
        });
    }

    // Tenant a spins as many guests as its slots on the node allow (more
    // than the node has cores), each until its 4 s timeout.
    let ingress = cluster.node("n1").ingress;
    let spinning: Vec<_> = (0..NAMESPACE_SLOTS)
        .map(|_| std::thread::spawn(move || http_request(ingress, "spin.a.pod", "/loop", &[])))
        .collect();
    // Another pod of a waits for a slot of its namespace and gives up
    // after its own timeout: a's slots are all taken.
    let mut late = None;
    let full = wait_until(WAIT, || {
        late = Some(get(&cluster, "late.a.pod", "/"));
        late.as_ref().is_some_and(|r| r.status == 503)
    });
    let late = late.expect("asked");
    assert!(
        full,
        "a's slots never filled: {late:?}\n{}",
        cluster.node("n1").log()
    );
    assert_eq!(
        late.body,
        format!("all {NAMESPACE_SLOTS} instance slots of this namespace on the node are busy\n")
    );

    // Tenant b is served meanwhile, while every guest of a still spins:
    // long runners give up their thread at every tick and take turns on
    // fewer threads than the node has.
    for _ in 0..20 {
        let hello = get(&cluster, "hello.b.pod", "/");
        assert_eq!(hello.status, 200, "{hello:?}");
    }
    assert!(
        spinning.iter().all(|t| !t.is_finished()),
        "b was served only once a's guests had ended\n{}",
        cluster.node("n1").log()
    );
    for spin in spinning {
        let answer = spin.join().expect("thread").expect("answered");
        assert_eq!(answer.status, 503, "{answer:?}");
        assert_eq!(answer.body, "guest exceeded its timeout of 4s\n");
    }

    // A pod of 10m may use a hundredth of a core: a burn, and the request
    // after it (which waits for the pod to have earned the burn back),
    // take about a hundred times what the same burn takes on a pod
    // without `cpu`. Twenty times is asserted: the machine is shared.
    const BURN: &str = "/burn?n=40000000";
    let started = Instant::now();
    let free = get(&cluster, "hello.b.pod", BURN);
    let unthrottled = started.elapsed();
    assert_eq!(free.status, 200, "{free:?}");
    assert!(
        unthrottled >= Duration::from_millis(5),
        "the burn took only {unthrottled:?}; make it longer"
    );
    let started = Instant::now();
    let burn = get(&cluster, "throttled.b.pod", BURN);
    assert_eq!(burn.status, 200, "{burn:?}");
    let next = get(&cluster, "throttled.b.pod", "/");
    assert_eq!(next.status, 200, "{next:?}");
    let throttled = started.elapsed();
    assert!(
        throttled >= unthrottled * 20,
        "a burn and the next request took {throttled:?} at 10m, the burn {unthrottled:?} without\n{}",
        cluster.node("n1").log()
    );
}
