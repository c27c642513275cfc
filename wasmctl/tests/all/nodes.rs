//! A cluster of real processes: a registry, a control plane with its
//! scheduler, and `wasm-node` processes. Pods are pushed, placed, pulled
//! and served through their node's ingress; nodes and the control plane are
//! killed and restarted under them.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::{ControlPlane, Node, Registry, wait_until};

use crate::cluster::Cluster;
use crate::registry::tamper;
use crate::support::{
    CountingProxy, HttpResponse, Upstream, example, http_call, http_request, path_str, stderr_of,
    test_guest, wasmctl,
};

/// Node flags that keep the tests quick: short backoffs, leases and grace.
/// The lease is renewed twice a second but good for 8 s: on a loaded CI
/// machine a renewal can wait seconds for a core, and a lapsed lease has
/// the node's pods evicted under a test that is not about leases (a lease
/// of 2 s did, in a fresh-clone run). Tests about lapsing set their own.
pub const QUICK: &[&str] = &[
    "--backoff",
    "200ms",
    "--backoff-max",
    "1s",
    "--lease-interval",
    "500ms",
    "--lease-duration",
    "8s",
    "--grace",
    "1s",
];

/// How long any awaited state may take; generous for a loaded CI machine.
pub const WAIT: Duration = Duration::from_secs(60);

/// Pushes a component with `wasmctl push`; returns the digest it printed.
pub fn push(component: &Path, reference: &str) -> String {
    let output = wasmctl()
        .args(["push", path_str(component), reference])
        .output()
        .expect("wasmctl runs");
    assert!(output.status.success(), "push: {}", stderr_of(&output));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

pub struct NodeCluster {
    pub cluster: Cluster,
    pub registry: Registry,
    pub nodes: Vec<Node>,
    /// hello-http in the registry, by tag, and its manifest digest.
    pub hello: String,
    pub hello_digest: String,
}

impl NodeCluster {
    /// A registry with hello-http in it, a control plane, and the nodes
    /// given as (name, further `wasm-node join` flags), each with a node
    /// token made by `wasmctl create token --node`.
    pub fn start(nodes: &[(&str, &[&str])]) -> NodeCluster {
        let registry = Registry::start();
        let hello = format!("{}/hello:v1", registry.addr);
        let hello_digest = push(&example("hello_http"), &hello);
        let cluster = Cluster::start();
        // These tests are about nodes, not tenancy (the tenancy matrix
        // tests the closed defaults): namespace default may run anything
        // and call what the tests run on loopback.
        cluster.ok(&[
            "set",
            "policy",
            "default",
            "--pod-security",
            "Privileged",
            "--egress",
            "*",
            "--egress",
            "127.0.0.1",
            "--egress",
            "[::1]",
            "--egress",
            "localhost",
        ]);
        let binary = testkit::binary("wasm-node");
        let nodes = nodes
            .iter()
            .map(|(name, extra)| {
                let token = cluster.ok(&["create", "token", "--node", name]);
                let mut flags = QUICK.to_vec();
                flags.extend_from_slice(extra);
                Node::start(&binary, &cluster.plane.url, token.trim(), name, &flags)
            })
            .collect();
        NodeCluster {
            cluster,
            registry,
            nodes,
            hello,
            hello_digest,
        }
    }

    /// Applies a pod of `image` for each name, with `spec` merged in.
    pub fn apply_pods(&self, names: &[String], image: &str, spec: Value) {
        let objects: Vec<Value> = names
            .iter()
            .map(|name| pod(name, image, spec.clone()))
            .collect();
        self.apply(&objects);
    }

    /// `wasmctl apply -f -` with these objects.
    pub fn apply(&self, objects: &[Value]) {
        let documents: Vec<String> = objects.iter().map(Value::to_string).collect();
        let mut child = self
            .cluster
            .wasmctl(&["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wasmctl runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(documents.join("\n---\n").as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "apply: {}", stderr_of(&output));
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&self.cluster.ok(&args)).expect("wasmctl prints JSON")
    }

    pub fn pod(&self, name: &str) -> Value {
        self.json(&["get", "pod", name])
    }

    /// Waits until the pod satisfies `condition`; panics with the pod and
    /// the nodes' logs if it does not within [`WAIT`].
    pub fn wait_pod(&self, name: &str, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
        self.wait_pod_in("default", name, what, condition)
    }

    /// As [`NodeCluster::wait_pod`], for a pod of `namespace`.
    pub fn wait_pod_in(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        condition: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        if wait_until(WAIT, || {
            last = self.json(&["get", "pod", name, "-n", namespace]);
            condition(&last)
        }) {
            return last;
        }
        let logs: Vec<String> = self.nodes.iter().map(Node::log).collect();
        panic!(
            "pod {name} never became {what}:\n{last:#}\nnode logs:\n{}",
            logs.join("\n")
        );
    }

    pub fn wait_running(&self, name: &str) -> Value {
        self.wait_pod(name, "Running", |p| p["status"]["phase"] == "Running")
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Where each pod (by name) is bound.
    pub fn placements(&self, names: &[String]) -> BTreeMap<String, String> {
        names
            .iter()
            .map(|name| {
                let node = self.pod(name)["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                (name.clone(), node)
            })
            .collect()
    }
}

/// A hello-http pod in namespace default, with more spec fields.
pub fn pod(name: &str, image: &str, spec: Value) -> Value {
    let mut pod = json!({
        "apiVersion": "skiff.dev/v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"image": image},
    });
    for (key, value) in spec.as_object().expect("a spec object") {
        pod["spec"][key] = value.clone();
    }
    pod
}

/// Asks the pod through `ingress`, naming it by host as clients do.
fn ask(ingress: SocketAddr, pod: &str, path: &str) -> std::io::Result<HttpResponse> {
    http_request(ingress, &format!("{pod}.default.pod"), path, &[])
}

/// Asserts the pod answers hello-http's greeting through that ingress.
fn assert_serves(ingress: SocketAddr, pod: &str) {
    let response = ask(ingress, pod, &format!("/{pod}"))
        .unwrap_or_else(|e| panic!("{pod} through {ingress}: {e}"));
    assert_eq!(response.status, 200, "{pod}: {}", response.body);
    assert_eq!(response.body, format!("Hello, world! (GET /{pod})\n"));
}

fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

/// How many of the pods each node holds, sorted.
fn counts(placements: &BTreeMap<String, String>) -> Vec<usize> {
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for node in placements.values() {
        *per_node.entry(node).or_default() += 1;
    }
    let mut counts: Vec<usize> = per_node.into_values().collect();
    counts.sort();
    counts
}

#[test]
fn thirty_pods_are_placed_pulled_and_served_by_their_nodes() {
    // Twelve instance slots a node, so bin packing fills two nodes and
    // puts the rest on the third.
    let slots: &[&str] = &["--instances", "12"];
    let cluster = NodeCluster::start(&[("n1", slots), ("n2", slots), ("n3", slots)]);
    let pods = names("hello", 30);
    cluster.apply_pods(&pods, &cluster.hello, json!({}));

    for name in &pods {
        let running = cluster.wait_running(name);
        let node = cluster.node(running["spec"]["nodeName"].as_str().unwrap());
        assert_eq!(
            running["status"]["imageDigest"],
            cluster.hello_digest.as_str()
        );
        assert_eq!(running["status"]["endpoint"], node.ingress.to_string());
        assert_serves(node.ingress, name);
    }
    assert_eq!(counts(&cluster.placements(&pods)), [6, 12, 12]);

    // A pod is served by the node it is bound to, not by the others.
    let placements = cluster.placements(&pods);
    let other = cluster
        .nodes
        .iter()
        .find(|n| n.name != placements["hello-0"])
        .unwrap();
    let response = ask(other.ingress, "hello-0", "/").unwrap();
    assert_eq!(response.status, 404, "{}", response.body);
}

#[test]
fn placement_rules_are_honoured_and_misfits_explained() {
    let a: &[&str] = &["--label", "zone=a", "--memory", "4Gi"];
    let b: &[&str] = &["--label", "zone=b", "--memory", "4Gi"];
    let c: &[&str] = &[
        "--label",
        "zone=c",
        "--memory",
        "4Gi",
        "--taint",
        "dedicated=gpu:NoSchedule",
    ];
    let cluster = NodeCluster::start(&[("a", a), ("b", b), ("c", c)]);
    let hello = cluster.hello.clone();

    // Spread puts each pod on the emptiest node: two on a, two on b (c's
    // taint keeps them off it).
    let spread = names("spread", 4);
    cluster.apply_pods(&spread, &hello, json!({"placement": "Spread"}));
    for name in &spread {
        cluster.wait_running(name);
    }
    let placed = cluster.placements(&spread);
    assert_eq!(counts(&placed), [2, 2], "{placed:?}");
    assert!(placed.values().all(|n| n != "c"), "{placed:?}");

    // Bin packing (the default) puts every pod on the same, fullest node.
    let packed = names("packed", 4);
    cluster.apply_pods(&packed, &hello, json!({}));
    for name in &packed {
        cluster.wait_running(name);
    }
    let placed = cluster.placements(&packed);
    assert_eq!(counts(&placed), [4], "{placed:?}");
    assert!(placed.values().all(|n| n != "c"), "{placed:?}");

    // Selectors and tolerations.
    let toleration =
        json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]);
    cluster.apply(&[
        pod("on-b", &hello, json!({"nodeSelector": {"zone": "b"}})),
        pod(
            "on-c",
            &hello,
            json!({"nodeSelector": {"zone": "c"}, "tolerations": toleration}),
        ),
        pod(
            "untolerated",
            &hello,
            json!({"nodeSelector": {"zone": "c"}}),
        ),
        pod(
            "too-big",
            &hello,
            json!({"resources": {"memory": "3Gi", "reservedInstances": 2, "maxInstances": 2}}),
        ),
    ]);
    for (name, node) in [("on-b", "b"), ("on-c", "c")] {
        let running = cluster.wait_running(name);
        assert_eq!(running["spec"]["nodeName"], node);
        assert_serves(cluster.node(node).ingress, name);
    }
    let unschedulable = |name: &str, message: &str| {
        let pod = cluster.wait_pod(name, "Unschedulable", |p| {
            p["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["reason"] == "Unschedulable"))
        });
        let condition = pod["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "PodScheduled")
            .unwrap()
            .clone();
        assert_eq!(condition["status"], "False");
        assert_eq!(condition["message"], message, "{name}");
        assert!(pod["spec"]["nodeName"].is_null(), "{pod}");
    };
    unschedulable(
        "untolerated",
        "0/3 nodes: 2 node selector not matched, 1 taint not tolerated",
    );
    unschedulable(
        "too-big",
        "0/3 nodes: 2 insufficient memory, 1 taint not tolerated",
    );

    // Anti-affinity by host: one `solo` pod per node; a, b and nothing
    // left for the third.
    let anti = json!({"podAntiAffinity": {"required": [
        {"labelSelector": {"matchLabels": {"role": "solo"}}, "topologyKey": "skiff.dev/hostname"}
    ]}});
    let solos: Vec<Value> = names("solo", 3)
        .iter()
        .map(|name| {
            let mut pod = pod(name, &hello, json!({"affinity": anti}));
            pod["metadata"]["labels"]["role"] = json!("solo");
            pod
        })
        .collect();
    cluster.apply(&solos[..2]);
    let first = cluster.wait_running("solo-0")["spec"]["nodeName"].clone();
    let second = cluster.wait_running("solo-1")["spec"]["nodeName"].clone();
    assert_ne!(first, second);
    cluster.apply(&solos[2..]);
    unschedulable(
        "solo-2",
        "0/3 nodes: 2 pod anti-affinity conflict, 1 taint not tolerated",
    );
}

#[test]
fn a_missing_or_tampered_image_fails_its_pod_while_others_run() {
    let cluster = NodeCluster::start(&[("n1", &[])]);
    let probe = format!("{}/probe:v1", cluster.registry.addr);
    let probe_digest = push(&test_guest("probe"), &probe);
    let manifest = cluster.registry.blob_file(&probe_digest);
    let manifest: Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    tamper(
        &cluster
            .registry
            .blob_file(manifest["layers"][0]["digest"].as_str().unwrap()),
    );
    let missing = format!("{}/hello:nope", cluster.registry.addr);
    cluster.apply(&[
        pod("good", &cluster.hello, json!({})),
        pod("missing", &missing, json!({})),
        pod("tampered", &probe, json!({})),
    ]);

    let good = cluster.wait_running("good");
    assert_serves(cluster.node("n1").ingress, "good");
    assert_eq!(good["status"]["restartCount"], 0);

    let failed_pull = |name: &str, needle: &str| {
        let pod = cluster.wait_pod(name, "failed to pull", |p| {
            p["status"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(needle))
        });
        assert_eq!(pod["status"]["phase"], "Pending", "{pod:#}");
        let reason = pod["status"]["reason"].as_str().unwrap_or_default();
        assert!(
            ["ErrImagePull", "ImagePullBackOff", "ImageDigestMismatch"].contains(&reason),
            "{pod:#}"
        );
        let described = cluster.cluster.ok(&["describe", "pod", name]);
        assert!(described.contains(needle), "{described}");
    };
    failed_pull("missing", "not found in the registry");
    failed_pull("tampered", "does not match its digest");
    // The tampered pod's digest was resolved and recorded even so.
    assert_eq!(
        cluster.pod("tampered")["status"]["imageDigest"],
        probe_digest.as_str()
    );

    // A pod whose env names a Secret that does not exist waits with the
    // start's own reason (not a pull's), and runs once the Secret exists.
    cluster.apply(&[pod(
        "needs-secret",
        &cluster.hello,
        json!({"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}]}),
    )]);
    let waiting = cluster.wait_pod("needs-secret", "waiting for its secret", |p| {
        p["status"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("secret creds"))
    });
    assert_eq!(
        waiting["status"]["reason"], "CreateContainerConfigError",
        "{waiting:#}"
    );
    // And keeps saying so through its retries (never a pull's back-off).
    for _ in 0..10 {
        let status = &cluster.pod("needs-secret")["status"];
        assert_eq!(status["reason"], "CreateContainerConfigError", "{status:#}");
        assert!(
            status["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("secret creds")),
            "{status:#}"
        );
    }
    cluster.apply(&[json!({
        "apiVersion": "skiff.dev/v1", "kind": "Secret",
        "metadata": {"name": "creds"}, "stringData": {"token": "t0ken"},
    })]);
    cluster.wait_running("needs-secret");

    // Pulls are retried: once the missing tag exists, its pod runs.
    push(&example("hello_http"), &missing);
    cluster.wait_running("missing");
    assert_serves(cluster.node("n1").ingress, "missing");
    assert_serves(cluster.node("n1").ingress, "good");
}

#[test]
fn nodes_keep_serving_while_the_control_plane_is_down() {
    let mut cluster = NodeCluster::start(&[("n1", &[]), ("n2", &[])]);
    let pods = names("steady", 4);
    cluster.apply_pods(&pods, &cluster.hello, json!({"placement": "Spread"}));
    for name in &pods {
        cluster.wait_running(name);
    }
    let placements = cluster.placements(&pods);

    let address = cluster
        .cluster
        .plane
        .url
        .trim_start_matches("http://")
        .to_owned();
    cluster.cluster.plane.kill();
    // Serving must outlast the nodes' leases (2 s) and their failing
    // renewals, so the check runs for a while by design.
    let until = Instant::now() + Duration::from_secs(4);
    let mut asked = 0;
    while Instant::now() < until {
        for (name, node) in &placements {
            assert_serves(cluster.node(node).ingress, name);
            asked += 1;
        }
    }
    assert!(asked >= pods.len());

    // The control plane comes back where it was; the nodes reconcile: a
    // pod deleted now stops being served, a new one starts.
    cluster.cluster.plane = ControlPlane::start_at(
        &testkit::binary("control-plane"),
        &cluster.cluster.database,
        &address,
        &[],
    );
    cluster.cluster.ok(&["delete", "pod", "steady-0"]);
    let gone_from = cluster.node(&placements["steady-0"]).ingress;
    assert!(
        wait_until(WAIT, || ask(gone_from, "steady-0", "/")
            .is_ok_and(|r| r.status == 404)),
        "the deleted pod is still served"
    );
    cluster.apply(&[pod("after", &cluster.hello, json!({}))]);
    let after = cluster.wait_running("after");
    assert_serves(
        cluster
            .node(after["spec"]["nodeName"].as_str().unwrap())
            .ingress,
        "after",
    );
}

#[test]
fn a_restarted_node_picks_its_pods_up_again() {
    let mut cluster = NodeCluster::start(&[("n1", &[])]);
    let pods = names("durable", 3);
    cluster.apply_pods(&pods, &cluster.hello, json!({}));
    let uids: Vec<Value> = pods
        .iter()
        .map(|name| cluster.wait_running(name)["metadata"]["uid"].clone())
        .collect();
    let ingress = cluster.node("n1").ingress;

    cluster.node_mut("n1").kill();
    assert!(
        ask(ingress, "durable-0", "/").is_err(),
        "a killed node serves"
    );
    cluster.node_mut("n1").restart();
    for (name, uid) in pods.iter().zip(&uids) {
        assert!(
            wait_until(WAIT, || ask(ingress, name, "/")
                .is_ok_and(|r| r.status == 200)),
            "{name} is not served after the restart:\n{}",
            cluster.node("n1").log()
        );
        assert_serves(ingress, name);
        let pod = cluster.pod(name);
        assert_eq!(&pod["metadata"]["uid"], uid, "the same pod, not a new one");
        assert_eq!(pod["spec"]["nodeName"], "n1");
        assert_eq!(pod["status"]["phase"], "Running");
    }
}

#[test]
fn drain_moves_pods_off_a_node_and_cordon_keeps_new_ones_away() {
    let cluster = NodeCluster::start(&[("n1", &[]), ("n2", &[])]);
    let pods = names("mover", 3);
    cluster.apply_pods(&pods, &cluster.hello, json!({}));
    for name in &pods {
        cluster.wait_running(name);
    }
    let placed = cluster.placements(&pods);
    assert_eq!(counts(&placed), [3], "bin packing: {placed:?}");
    let from = placed["mover-0"].clone();
    let to = if from == "n1" { "n2" } else { "n1" };

    let out = cluster.cluster.ok(&["drain", &from]);
    assert!(out.contains(&format!("node/{from} drained")), "{out}");
    for name in &pods {
        assert!(out.contains(&format!("pod/{name} moved")), "{out}");
        let running = cluster.wait_pod(name, &format!("Running on {to}"), |p| {
            p["status"]["phase"] == "Running" && p["spec"]["nodeName"] == to
        });
        assert_eq!(
            running["status"]["endpoint"],
            cluster.node(to).ingress.to_string()
        );
        assert_serves(cluster.node(to).ingress, name);
        let old = cluster.node(&from).ingress;
        assert!(
            wait_until(WAIT, || ask(old, name, "/").is_ok_and(|r| r.status == 404)),
            "{name} is still served by the drained node"
        );
    }
    let cordoned =
        |node: &str| cluster.json(&["get", "node", node])["spec"]["unschedulable"] == true;
    let placed_on = |name: &str| {
        cluster.apply(&[pod(name, &cluster.hello, json!({"placement": "Spread"}))]);
        cluster.wait_running(name)["spec"]["nodeName"].clone()
    };
    assert!(cordoned(&from));

    // Spread would choose the emptier node; the cordon leaves only one.
    assert_eq!(placed_on("newcomer"), to);

    cluster.cluster.ok(&["uncordon", &from]);
    assert!(!cordoned(&from));
    assert_eq!(placed_on("welcome"), from.as_str());
}

#[test]
fn pods_pull_from_a_private_registry_with_their_secret() {
    let cluster = NodeCluster::start(&[("n1", &[])]);
    let private = Registry::with_user("puller", "pa55word");
    let image = format!("{}/hello:v1", private.addr);
    let output = wasmctl()
        .args([
            "push",
            path_str(&example("hello_http")),
            &image,
            "--username",
            "puller",
        ])
        .env("WASMCTL_REGISTRY_PASSWORD", "pa55word")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));

    cluster.apply(&[
        json!({
            "apiVersion": "skiff.dev/v1", "kind": "Secret",
            "metadata": {"name": "regcred"},
            "stringData": {"username": "puller", "password": "pa55word"},
        }),
        json!({
            "apiVersion": "skiff.dev/v1", "kind": "Secret",
            "metadata": {"name": "wrongcred"},
            "stringData": {"username": "puller", "password": "guess"},
        }),
        pod("with-secret", &image, json!({"imagePullSecret": "regcred"})),
        pod("without-secret", &image, json!({})),
        pod(
            "wrong-secret",
            &image,
            json!({"imagePullSecret": "wrongcred"}),
        ),
    ]);
    // The same credential as kubectl users make it: a Docker config, whose
    // entry for the image's registry is used; one for another registry
    // says so.
    let server = private.addr.to_string();
    cluster.cluster.ok(&[
        "create",
        "secret",
        "docker-registry",
        "dockercred",
        "--docker-server",
        &server,
        "--docker-username",
        "puller",
        "--docker-password",
        "pa55word",
    ]);
    cluster.cluster.ok(&[
        "create",
        "secret",
        "docker-registry",
        "elsewhere",
        "--docker-server",
        "https://registry.example.com/v1/",
        "--docker-username",
        "puller",
        "--docker-password",
        "pa55word",
    ]);
    cluster.apply(&[
        pod(
            "docker-config",
            &image,
            json!({"imagePullSecret": "dockercred"}),
        ),
        pod(
            "other-registry",
            &image,
            json!({"imagePullSecret": "elsewhere"}),
        ),
    ]);
    cluster.wait_running("docker-config");
    let no_entry = format!("its .dockerconfigjson has no entry for registry {server}");
    cluster.wait_pod("other-registry", "refused", |p| {
        p["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&no_entry))
    });
    let running = cluster.wait_running("with-secret");
    assert_serves(cluster.node("n1").ingress, "with-secret");
    // The component is now in the node's cache; naming it by digest does
    // not get a pod without the secret past the registry.
    let digest = running["status"]["imageDigest"].as_str().unwrap();
    let pinned = format!("{}/hello@{digest}", private.addr);
    cluster.apply(&[pod("by-digest", &pinned, json!({}))]);
    for name in ["without-secret", "wrong-secret", "by-digest"] {
        let pod = cluster.wait_pod(name, "refused", |p| {
            p["status"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("the registry refused the credentials"))
        });
        assert_eq!(pod["status"]["phase"], "Pending");
    }
}

#[test]
fn if_not_present_reuses_what_the_node_pulled_and_always_asks_the_registry() {
    let cluster = NodeCluster::start(&[("n1", &[])]);
    let moving = format!("{}/moving:v1", cluster.registry.addr);
    let first_digest = push(&example("hello_http"), &moving);
    cluster.apply(&[pod("first", &moving, json!({}))]);
    let first = cluster.wait_running("first");
    assert_eq!(
        first["spec"]["imagePullPolicy"], "IfNotPresent",
        "{first:#}"
    );
    assert_eq!(first["status"]["imageDigest"], first_digest.as_str());

    // The tag moves to another component: a pod that may reuse what the
    // node has runs the first; one that must ask runs the new one.
    let moved_digest = push(&test_guest("misbehave"), &moving);
    assert_ne!(first_digest, moved_digest);
    cluster.apply(&[
        pod("reuses", &moving, json!({})),
        pod("asks", &moving, json!({"imagePullPolicy": "Always"})),
    ]);
    let reuses = cluster.wait_running("reuses");
    assert_eq!(reuses["status"]["imageDigest"], first_digest.as_str());
    let asks = cluster.wait_running("asks");
    assert_eq!(asks["status"]["imageDigest"], moved_digest.as_str());

    // `latest` moves by design: it is asked for every time by default.
    let latest = format!("{}/moving:latest", cluster.registry.addr);
    push(&example("hello_http"), &latest);
    cluster.apply(&[pod("latest", &latest, json!({}))]);
    assert_eq!(cluster.pod("latest")["spec"]["imagePullPolicy"], "Always");
}

#[test]
fn a_pod_recreated_under_its_name_keeps_its_files_and_route() {
    let cluster = NodeCluster::start(&[("n1", &[])]);
    let image = format!("{}/misbehave:v1", cluster.registry.addr);
    push(&test_guest("misbehave"), &image);
    // The old pod's request stays in flight here, so its worker still
    // drains (for the node's grace) while the new pod starts.
    let upstream = Upstream::start("late", Duration::from_secs(3));
    let files = json!({"apiVersion": "skiff.dev/v1", "kind": "ConfigMap",
        "metadata": {"name": "files"}, "data": {"greeting": "first"}});
    let spec = json!({
        "volumes": [{"name": "files", "mountPath": "/files", "configMap": {"name": "files"}}],
        "allowOutbound": [upstream.addr.to_string()],
    });
    let again = pod("again", &image, spec);
    cluster.apply(&[files, again.clone()]);
    let old_uid = cluster.wait_running("again")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let ingress = cluster.node("n1").ingress;
    assert_eq!(
        ask(ingress, "again", "/read?path=/files/greeting")
            .unwrap()
            .body,
        "first"
    );
    let slow = format!("/fetch?url=http://{}/", upstream.addr);
    let in_flight = std::thread::spawn(move || ask(ingress, "again", &slow));
    assert!(wait_until(WAIT, || upstream.hits() == 1), "never in flight");

    cluster.cluster.ok(&["delete", "pod", "again"]);
    cluster.apply(&[again]);
    let new = cluster.wait_pod("again", "Running again", |p| {
        p["status"]["phase"] == "Running" && p["metadata"]["uid"] != old_uid.as_str()
    });
    let _ = in_flight.join();
    let stopped = format!("({old_uid}): stopped, its files removed");
    assert!(
        wait_until(WAIT, || cluster.node("n1").log().contains(&stopped)),
        "the old pod's worker never ended:\n{}",
        cluster.node("n1").log()
    );

    // What the old worker removed was its own: the new pod is still served
    // and still reads its volume.
    let read = ask(ingress, "again", "/read?path=/files/greeting").unwrap();
    assert_eq!((read.status, read.body.as_str()), (200, "first"), "{new:#}");
    let served = cluster.pod("again");
    assert_eq!(served["metadata"]["uid"], new["metadata"]["uid"]);
    assert_eq!(served["status"]["phase"], "Running", "{served:#}");
}

#[test]
fn a_restarted_node_keeps_the_taints_an_admin_set() {
    let mut cluster = NodeCluster::start(&[("n1", &["--taint", "first=yes:NoSchedule"])]);
    let mut node = cluster.json(&["get", "node", "n1"]);
    assert_eq!(
        node["spec"]["taints"],
        json!([{"key": "first", "value": "yes", "effect": "NoSchedule"}]),
        "the command line's taints are the new Node's"
    );
    let admins = json!([{"key": "admin", "value": "set", "effect": "PreferNoSchedule"}]);
    node["spec"]["taints"] = admins.clone();
    node.as_object_mut().unwrap().remove("status");
    cluster.apply(&[node]);

    cluster.node_mut("n1").restart();
    let node = cluster.json(&["get", "node", "n1"]);
    assert_eq!(node["spec"]["taints"], admins, "{node:#}");
    assert_eq!(node["metadata"]["labels"]["skiff.dev/hostname"], "n1");
}

#[test]
fn a_node_bound_to_every_address_advertises_one_others_can_reach() {
    let cluster = NodeCluster::start(&[]);
    let token = cluster.cluster.ok(&["create", "token", "--node", "open"]);
    let port = testkit::free_port();
    let data_dir = crate::support::temp_dir("open-node");
    let mut command = std::process::Command::new(testkit::binary("wasm-node"));
    command
        .args(["join", "--server", &cluster.cluster.plane.url])
        .args(["--token", token.trim(), "--name", "open"])
        .args(["--ingress", &format!("0.0.0.0:{port}")])
        .args(["--data-dir", path_str(&data_dir), "--no-containerd"])
        .env("RUST_LOG", "wasm_node=info,warn");
    let (mut child, joined, _log) = testkit::spawn_logged(command, "node open joined", "node");
    let node = cluster.json(&["get", "node", "open"]);
    let _ = child.kill();
    let _ = child.wait();
    // The control plane is on loopback, so loopback is how it and other
    // nodes of this machine reach this one.
    let expected = format!("127.0.0.1:{port}");
    assert_eq!(
        node["status"]["addresses"][0],
        json!({"type": "Ingress", "address": expected}),
        "{joined}\n{node:#}"
    );
}

/// The manifest requests among request lines.
fn manifest_requests(requests: &[String]) -> Vec<&String> {
    requests
        .iter()
        .filter(|r| r.contains("/manifests/"))
        .collect()
}

#[test]
fn a_fresh_pod_costs_one_manifest_request() {
    let cluster = NodeCluster::start(&[("n1", &[])]);
    let proxy = CountingProxy::start(cluster.registry.addr.parse().unwrap());
    // A pod that declares its runtime: the scheduler looks nothing up, so
    // every request is the node's.
    let declared = format!("{}/hello:v1", proxy.addr);
    cluster.apply_pods(&["declared".into()], &declared, json!({"runtime": "Wasm"}));
    cluster.wait_running("declared");
    assert_serves(cluster.node("n1").ingress, "declared");
    let requests = proxy.requests();
    assert_eq!(
        manifest_requests(&requests).len(),
        1,
        "the node reads the manifest once and pulls from that:\n{requests:#?}"
    );

    // One that does not: the scheduler reads the manifest once to learn
    // the runtime, the node once more (its own check, with the pod's
    // credentials), and no more.
    let undeclared = format!("{}/hello:again", proxy.addr);
    push(
        &example("hello_http"),
        &format!("{}/hello:again", cluster.registry.addr),
    );
    cluster.apply_pods(&["undeclared".into()], &undeclared, json!({}));
    cluster.wait_running("undeclared");
    let requests = proxy.requests();
    let again: Vec<_> = manifest_requests(&requests)
        .into_iter()
        .filter(|r| r.contains("/manifests/again"))
        .collect();
    assert_eq!(again.len(), 2, "{requests:#?}");
}

#[test]
fn a_component_published_in_a_multi_platform_index_runs_on_a_wasm_node() {
    let cluster = NodeCluster::start(&[("wasm-only", &["--no-containerd"])]);
    let registry: SocketAddr = cluster.registry.addr.parse().unwrap();
    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    let manifest = http_request(
        registry,
        &cluster.registry.addr,
        "/v2/hello/manifests/v1",
        &[("Accept", MANIFEST)],
    )
    .unwrap();
    assert_eq!(manifest.status, 200, "{manifest:?}");
    // As tools that publish components in an index mark them.
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [{
            "mediaType": MANIFEST,
            "digest": cluster.hello_digest,
            "size": manifest.body.len(),
            "platform": {"os": "wasip2", "architecture": "wasm"},
        }],
    })
    .to_string();
    let mut stream = std::net::TcpStream::connect(registry).unwrap();
    write!(
        stream,
        "PUT /v2/hello/manifests/multi HTTP/1.1\r\nHost: {}\r\nContent-Type: {INDEX}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{index}",
        cluster.registry.addr,
        index.len()
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");

    // Neither the scheduler nor the node takes the index for a Linux image.
    let image = format!("{}/hello:multi", cluster.registry.addr);
    cluster.apply_pods(&["indexed".into()], &image, json!({}));
    let pod = cluster.wait_running("indexed");
    assert_eq!(pod["spec"]["nodeName"], "wasm-only");
    assert_serves(cluster.node("wasm-only").ingress, "indexed");
}

impl NodeCluster {
    /// Merges `status` into the pod's status as the cluster admin.
    fn write_status(&self, name: &str, status: Value) {
        let url = &self.cluster.plane.url;
        let authority = url
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("a plain-HTTP control plane, not {url}"))
            .trim_end_matches('/');
        let response = http_call(
            authority.parse().unwrap(),
            "PATCH",
            authority,
            &format!("/apis/skiff.dev/v1/namespaces/default/pods/{name}/status"),
            &[
                ("Authorization", &format!("Bearer {}", self.cluster.token)),
                ("Content-Type", "application/merge-patch+json"),
            ],
            &json!({ "status": status }).to_string(),
        )
        .unwrap();
        assert_eq!(response.status, 200, "{response:?}");
    }
}

#[test]
fn a_digest_in_a_pods_status_runs_only_if_the_registry_lets_the_pod_read_it() {
    let mut cluster = NodeCluster::start(&[("n1", &[])]);
    // Another tenant's private component, in the node's cache once its own
    // pod has run.
    let private = Registry::with_user("owner", "s3cret");
    let secret_image = format!("{}/secret:v1", private.addr);
    let output = wasmctl()
        .args([
            "push",
            path_str(&test_guest("misbehave")),
            &secret_image,
            "--username",
            "owner",
        ])
        .env("WASMCTL_REGISTRY_PASSWORD", "s3cret")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    let secret_digest = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    cluster.apply(&[
        json!({
            "apiVersion": "skiff.dev/v1", "kind": "Secret",
            "metadata": {"name": "ownercred"},
            "stringData": {"username": "owner", "password": "s3cret"},
        }),
        pod(
            "owner",
            &secret_image,
            json!({"imagePullSecret": "ownercred"}),
        ),
        // Pods that cannot read it: one names its repository without the
        // credentials, one runs an image of its own elsewhere.
        pod("stranger", &secret_image, json!({})),
        pod("elsewhere", &cluster.hello, json!({})),
    ]);
    cluster.wait_running("owner");
    cluster.wait_running("elsewhere");
    cluster.wait_pod("stranger", "refused", |p| {
        p["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("the registry refused the credentials"))
    });

    // Their statuses come to name the private digest, as if from an earlier
    // run; the restarted node picks the pods up with them. (While the node
    // is down, so that no report of its own overwrites them.)
    cluster.node_mut("n1").kill();
    for name in ["stranger", "elsewhere"] {
        cluster.write_status(name, json!({"imageDigest": secret_digest}));
    }
    cluster.node_mut("n1").restart();
    for (name, why) in [
        ("stranger", "the registry refused the credentials"),
        ("elsewhere", "not found in the registry"),
    ] {
        let failed = cluster.wait_pod(name, "failed", |p| p["status"]["phase"] == "Failed");
        assert_eq!(failed["status"]["reason"], "ErrImagePull", "{failed:#}");
        let message = failed["status"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&secret_digest) && message.contains(why),
            "{name}: {message}"
        );
        let answer = ask(cluster.node("n1").ingress, name, "/nothing").unwrap();
        assert_eq!(answer.status, 404, "{name}: {answer:?}");
        assert!(answer.body.starts_with("no pod"), "{name}: {answer:?}");
    }
    // The pod that may read it runs the digest it ran before the restart.
    assert!(
        wait_until(WAIT, || ask(
            cluster.node("n1").ingress,
            "owner",
            "/nothing"
        )
        .is_ok_and(|r| r.body == "no such misbehaviour\n")),
        "{}",
        cluster.node("n1").log()
    );
    assert_eq!(
        cluster.pod("owner")["status"]["imageDigest"],
        secret_digest.as_str()
    );
}

/// Every regular file under `dir`, however deep.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => files.extend(files_under(&path)),
            Ok(t) if t.is_file() => files.push(path),
            _ => {}
        }
    }
    files
}

#[test]
fn secret_volumes_live_owner_only_in_memory_and_go_with_their_pod() {
    use std::os::unix::fs::PermissionsExt as _;
    let cluster = NodeCluster::start(&[("n1", &[])]);
    let image = format!("{}/misbehave:v1", cluster.registry.addr);
    push(&test_guest("misbehave"), &image);
    let value = "s3cret-on-the-node-marker";
    let creds = json!({"apiVersion": "skiff.dev/v1", "kind": "Secret",
        "metadata": {"name": "creds"}, "stringData": {"token": value}});
    let spec = json!({
        "volumes": [{"name": "creds", "mountPath": "/creds", "secret": {"name": "creds"}}],
    });
    cluster.apply(&[creds, pod("reader", &image, spec)]);
    let uid = cluster.wait_running("reader")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let ingress = cluster.node("n1").ingress;
    let read = ask(ingress, "reader", "/read?path=/creds/token").unwrap();
    assert_eq!((read.status, read.body.as_str()), (200, value));

    // By default on /dev/shm, in a directory of the node's alone.
    let pod_dir_name = format!("default_reader_{uid}");
    let pod_dir = std::fs::read_dir("/dev/shm")
        .expect("/dev/shm")
        .flatten()
        .map(|e| e.path().join(&pod_dir_name))
        .find(|p| p.is_dir())
        .expect("the pod's secrets under /dev/shm");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let base = pod_dir.parent().unwrap();
    assert_eq!(mode(base), 0o700, "{}", base.display());
    assert_eq!(mode(&pod_dir), 0o700);
    assert_eq!(mode(&pod_dir.join("creds")), 0o700);
    let file = pod_dir.join("creds/token");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), value);
    // Nothing of it is in the node's data directory, on disk.
    for path in files_under(&cluster.node("n1").data_dir) {
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(
            !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
            "{} holds the secret",
            path.display()
        );
    }

    cluster.cluster.ok(&["delete", "pod", "reader"]);
    assert!(
        wait_until(WAIT, || !pod_dir.exists()),
        "the pod's secrets outlived it"
    );
}
