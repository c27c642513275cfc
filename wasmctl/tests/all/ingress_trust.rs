//! What a node's ingress trusts, on a cluster of real processes: a
//! Service's `allowedCallers` (not the caller's allow-list) decides which
//! namespaces' guests reach it, cluster hosts are served from outside only
//! where a node is configured to, requests between nodes carry a proxy
//! credential, and no guest ever sees the headers the ingresses trust.

use std::net::SocketAddr;

use serde_json::{Value, json};
use testkit::wait_until;

use crate::nodes::{NodeCluster, WAIT, push};
use crate::support::{HttpResponse, http_request, test_guest};

/// A misbehave pod in `namespace`, bound to `node`, with more spec.
fn pod(namespace: &str, name: &str, app: &str, image: &str, node: &str, spec: Value) -> Value {
    let mut pod = json!({
        "apiVersion": "skiff.dev/v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "spec": {"image": image, "nodeName": node},
    });
    for (key, value) in spec.as_object().expect("a spec object") {
        pod["spec"][key] = value.clone();
    }
    pod
}

fn service(namespace: &str, name: &str, allowed_callers: &[&str]) -> Value {
    json!({
        "apiVersion": "skiff.dev/v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name}, "allowedCallers": allowed_callers},
    })
}

fn wait_running(cluster: &NodeCluster, namespace: &str, name: &str) {
    let mut last = Value::Null;
    let running = wait_until(WAIT, || {
        last = cluster.json(&["get", "pod", name, "-n", namespace]);
        last["status"]["phase"] == "Running"
    });
    let logs: Vec<String> = cluster.nodes.iter().map(|n| n.log()).collect();
    assert!(
        running,
        "pod {namespace}/{name} never ran:\n{last:#}\n{}",
        logs.join("\n")
    );
}

/// Asks `host` through `ingress` (with header `x-echo: yes`) until the
/// answer has `status`, and returns that answer.
fn answers(ingress: SocketAddr, host: &str, path: &str, status: u16) -> HttpResponse {
    let mut last = None;
    let seen = wait_until(WAIT, || {
        last = http_request(ingress, host, path, &[("x-echo", "yes")]).ok();
        last.as_ref().is_some_and(|r| r.status == status)
    });
    assert!(
        seen,
        "{host}{path} through {ingress} never answered {status}: {:?}",
        last.map(|r| (r.status, r.body))
    );
    last.unwrap()
}

/// The guest `front` (namespace a, on n2) fetching `url`, its answer
/// awaited until it has `status`.
fn front_fetches(cluster: &NodeCluster, path: &str, url: &str, status: u16) -> HttpResponse {
    let n2 = cluster.node("n2").ingress;
    answers(n2, "front.a.pod", &format!("{path}?url={url}"), status)
}

/// Asserts `echoed` is the pod's echo of a request's headers (`expected`
/// among them) and that none of them is internal. (A guest sees no Host
/// header: wasi:http gives it the authority instead.)
fn assert_no_internal_header(echoed: &HttpResponse, expected: &str) {
    assert_eq!(echoed.status, 200, "{}", echoed.body);
    assert!(
        echoed.body.lines().any(|l| l == expected),
        "no `{expected}` among the echoed headers: {echoed:?}"
    );
    assert!(
        !echoed.body.to_ascii_lowercase().contains("skiff-"),
        "a guest saw an internal header:\n{}",
        echoed.body
    );
}

/// What a proxied request carries: the host it was sent for.
const FORWARDED_SVC: &str = "x-forwarded-host: web.b.svc";

/// n1 serves cluster hosts to no one outside; n2 (on loopback, like every
/// test node) does by default. Service b/web's pod runs on n1, the caller
/// `front` (namespace a) on n2, so every call crosses between nodes.
#[test]
fn services_admit_the_namespaces_they_name_and_cluster_hosts_need_credentials() {
    let cluster = NodeCluster::start(&[("n1", &["--serve-cluster-hosts", "false"]), ("n2", &[])]);
    let image = format!("{}/misbehave:v1", cluster.registry.addr);
    push(&test_guest("misbehave"), &image);
    let namespace = |name: &str| {
        // Route hosts are the namespace's to claim.
        json!({
            "apiVersion": "skiff.dev/v1", "kind": "Namespace",
            "metadata": {"name": name},
            "spec": {"policy": {"routeHosts": [format!("*.{name}.example")]}},
        })
    };
    cluster.apply(&[
        namespace("a"),
        namespace("b"),
        pod("b", "echo", "web", &image, "n1", json!({})),
        service("b", "web", &[]),
        json!({
            "apiVersion": "skiff.dev/v1", "kind": "Route",
            "metadata": {"name": "web", "namespace": "b"},
            "spec": {"host": "web.b.example", "service": "web"},
        }),
        pod(
            "a",
            "front",
            "front",
            &image,
            "n2",
            json!({"allowOutbound": ["*.b.svc"]}),
        ),
        pod("a", "local", "local", &image, "n1", json!({})),
        service("a", "local", &[]),
    ]);
    for (namespace, name) in [("b", "echo"), ("a", "front"), ("a", "local")] {
        wait_running(&cluster, namespace, name);
    }
    let (n1, n2) = (cluster.node("n1").ingress, cluster.node("n2").ingress);

    // From outside, through n2, which serves Service hosts: proxied to n1
    // with a proxy credential n1 accepts, though n1 serves cluster hosts to
    // no one else. Forged internal headers are dropped on the way.
    let proxied = answers(n2, "web.b.svc", "/headers", 200);
    assert_no_internal_header(&proxied, "x-echo: yes");
    let forged_proxy_auth = http_request(
        n2,
        "web.b.svc",
        "/headers",
        &[("skiff-proxy-auth", "1700000000.forged")],
    )
    .unwrap();
    assert_no_internal_header(&forged_proxy_auth, FORWARDED_SVC);
    // Routes reach pods from outside on every node.
    assert_no_internal_header(
        &answers(n1, "web.b.example", "/headers", 200),
        "x-echo: yes",
    );

    // Straight to n1 from outside: cluster hosts are not served, and
    // forged credentials are refused.
    for host in ["echo.b.pod", "web.b.svc"] {
        let refused = http_request(n1, host, "/headers", &[]).unwrap();
        assert_eq!(refused.status, 404, "{host}: {}", refused.body);
        assert_eq!(
            refused.body,
            format!(
                "`{host}` is a cluster host, not served to outside traffic on this node; outside traffic reaches pods through Routes\n"
            )
        );
    }
    let forged = http_request(
        n1,
        "echo.b.pod",
        "/headers",
        &[("skiff-proxy-auth", "1700000000.forged")],
    )
    .unwrap();
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert_eq!(
        forged.body,
        "refused: the proxy credential is not <seconds>.<mac>\n"
    );
    for headers in [
        &[
            ("skiff-caller-namespace", "b"),
            ("skiff-caller-auth", "forged"),
        ][..],
        &[("skiff-caller-namespace", "b")],
    ] {
        let forged = http_request(n1, "web.b.svc", "/headers", headers).unwrap();
        assert_eq!(forged.status, 403, "{headers:?}: {}", forged.body);
        assert!(forged.body.starts_with("refused: "), "{}", forged.body);
    }

    // A guest's call within its namespace works across nodes, and the pod
    // called sees no internal header.
    assert_no_internal_header(
        &front_fetches(&cluster, "/fetch", "http://local.a.svc/headers", 200),
        "x-forwarded-host: local.a.svc",
    );

    // Another namespace's Service is closed by default, whatever the
    // caller's allowOutbound says, and a forged claim to be of namespace b
    // changes nothing: the host names the caller.
    let refusal = "service b/web does not admit callers from namespace a (spec.allowedCallers)\n";
    let refused = front_fetches(&cluster, "/fetch", "http://web.b.svc/headers", 403);
    assert_eq!(refused.body, refusal);
    let refused = front_fetches(&cluster, "/fetch-forged", "http://web.b.svc/headers", 403);
    assert_eq!(refused.body, refusal);

    // Once b/web names namespace a, a's guests reach it; forged headers
    // are replaced or dropped before the pod sees the request.
    cluster.apply(&[service("b", "web", &["a"])]);
    let admitted = front_fetches(&cluster, "/fetch", "http://web.b.svc/headers", 200);
    assert_no_internal_header(&admitted, FORWARDED_SVC);
    let forged = front_fetches(&cluster, "/fetch-forged", "http://web.b.svc/headers", 200);
    assert_no_internal_header(&forged, FORWARDED_SVC);

    // Naming another namespace closes it again; `*` opens it to all.
    cluster.apply(&[service("b", "web", &["c"])]);
    front_fetches(&cluster, "/fetch", "http://web.b.svc/headers", 403);
    cluster.apply(&[service("b", "web", &["*"])]);
    assert_no_internal_header(
        &front_fetches(&cluster, "/fetch", "http://web.b.svc/headers", 200),
        FORWARDED_SVC,
    );
}
