//! `wasmctl logs` on a cluster of real processes: a pod's output read
//! through the API from its node, followed while requests arrive, of a
//! Deployment's pods, of the run before a restart, and
//! refused to a token of another namespace. The node API itself answers
//! no one without the control plane's credential.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use testkit::wait_until;

use crate::nodes::{NodeCluster, WAIT, pod, push};
use crate::support::{http_request, test_guest};

/// Asks pod `name` on the node at `ingress` to print `tag 0` (stdout),
/// `tag done` (stderr) and `tag tail`, under request id `id`.
fn print(ingress: SocketAddr, name: &str, tag: &str, id: &str) {
    let response = http_request(
        ingress,
        &format!("{name}.default.pod"),
        &format!("/print?lines=1&tag={tag}"),
        &[("x-request-id", id)],
    )
    .expect("the ingress answers");
    assert_eq!(response.status, 200, "{}", response.body);
}

fn deployment(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "skiff.dev/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"image": image},
            },
        },
    })
}

/// The ingress of the node a pod is bound to.
fn ingress_of(cluster: &NodeCluster, pod: &Value) -> SocketAddr {
    cluster
        .node(pod["spec"]["nodeName"].as_str().expect("bound"))
        .ingress
}

#[test]
fn logs_are_read_followed_and_kept_within_their_namespace() {
    let cluster = NodeCluster::start(&[("logs-1", &[]), ("logs-2", &[])]);
    let image = format!("{}/misbehave:v1", cluster.registry.addr);
    push(&test_guest("misbehave"), &image);
    let probe = format!("{}/probe:v1", cluster.registry.addr);
    push(&test_guest("probe"), &probe);
    // One pod on each node, so that both nodes' APIs are read.
    cluster.apply(&[
        pod("printer", &image, json!({"nodeName": "logs-1"})),
        pod(
            "crasher",
            &probe,
            json!({"args": ["ls", "/nope"], "restartPolicy": "Always", "nodeName": "logs-2"}),
        ),
        deployment("web", &image),
    ]);
    let printer = cluster.wait_running("printer");
    let printer_ingress = ingress_of(&cluster, &printer);

    // Followed: each line appears while the follow runs, tagged with its
    // request when asked.
    let mut follow = cluster
        .cluster
        .wasmctl(&["logs", "printer", "-f", "--request-ids"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wasmctl runs");
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let seen = seen.clone();
        let stdout = follow.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                seen.lock().unwrap().push(line);
            }
        })
    };
    for i in 0..5 {
        let id = format!("live-{i}");
        print(printer_ingress, "printer", &format!("tag{i}"), &id);
        let want = format!("{id} tag{i} 0");
        assert!(
            wait_until(WAIT, || seen.lock().unwrap().contains(&want)),
            "`{want}` never reached the follower: {:?}",
            seen.lock().unwrap()
        );
    }
    let _ = follow.kill();
    let _ = follow.wait();
    reader.join().unwrap();
    {
        let seen = seen.lock().unwrap();
        // In order, stderr and the flushed tail included, nothing twice.
        let tag0: Vec<&String> = seen.iter().filter(|l| l.contains(" tag0 ")).collect();
        assert_eq!(
            tag0,
            ["live-0 tag0 0", "live-0 tag0 done", "live-0 tag0 tail"],
            "{seen:?}"
        );
    }

    // Read, not followed: --tail, --timestamps, --since.
    let all = cluster.cluster.ok(&["logs", "printer"]);
    assert!(all.contains("tag4 0\ntag4 done\ntag4 tail\n"), "{all}");
    let tail = cluster.cluster.ok(&["logs", "pod/printer", "--tail", "1"]);
    assert_eq!(tail, "tag4 tail\n");
    let stamped = cluster
        .cluster
        .ok(&["logs", "printer", "--tail", "2", "--timestamps"]);
    for line in stamped.lines() {
        let (time, text) = line.split_once(' ').unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{line}");
        assert!(text.starts_with("tag4 "), "{line}");
    }
    let recent = cluster.cluster.ok(&["logs", "printer", "--since", "1h"]);
    assert_eq!(recent, all);

    // A Deployment's pods, on two nodes, each line naming its pod.
    let pods = cluster.json(&["get", "pods", "-l", "app=web"]);
    let pods: Vec<Value> = pods["items"].as_array().unwrap().clone();
    assert_eq!(pods.len(), 2);
    let mut names = Vec::new();
    for pod in &pods {
        let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
        let pod = cluster.wait_running(&name);
        print(
            ingress_of(&cluster, &pod),
            &name,
            &format!("from-{name}"),
            "d1",
        );
        names.push(name);
    }
    for args in [&["logs", "deployment/web"][..], &["logs", "-l", "app=web"]] {
        let out = cluster.cluster.ok(args);
        for name in &names {
            let want = format!("[pod/{name}] from-{name} 0\n");
            assert!(out.contains(&want), "{args:?}: no `{want}` in\n{out}");
        }
    }

    // The run before a restart.
    cluster.wait_pod("crasher", "restarted", |p| {
        p["status"]["restartCount"].as_u64() >= Some(1)
    });
    let previous = cluster.cluster.ok(&["logs", "crasher", "--previous"]);
    assert!(previous.contains("/nope"), "{previous}");
    let never = cluster.cluster.fails(&["logs", "printer", "--previous"], 1);
    assert!(never.contains("has not restarted"), "{never}");

    // Bad input: one line, exit 2, nothing asked of the API.
    for (args, named) in [
        (&["logs", "printer", "--tail", "-2"][..], "--tail"),
        (&["logs", "printer", "--since", "soon"], "--since"),
        (&["logs", "printer", "-f", "--previous"], "--previous"),
        (&["logs", "service/web"], "service/web"),
        (&["logs"], "which logs"),
    ] {
        let error = cluster.cluster.fails(args, 2);
        assert!(error.contains(named), "{args:?}: {error}");
    }

    // Another namespace's token is refused; a view token of the pod's
    // namespace reads.
    cluster.cluster.ok(&["create", "namespace", "other"]);
    let plane = cluster.cluster.api_addr();
    let read_as = |token: &str| {
        http_request(
            plane,
            &plane.to_string(),
            "/apis/skiff.dev/v1/namespaces/default/pods/printer/log?tailLines=1",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .unwrap()
    };
    let other = cluster
        .cluster
        .ok(&["create", "token", "-n", "other", "--role", "admin"]);
    let refused = read_as(other.trim());
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(!refused.body.contains("tag4"), "{}", refused.body);
    let view = cluster
        .cluster
        .ok(&["create", "token", "-n", "default", "--role", "view"]);
    let read = read_as(view.trim());
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.body, "tag4 tail\n");

    // The node API answers only the control plane: without its credential
    // a node host is like any cluster host (404), a forged one is refused,
    // and a node does not answer for another.
    let uid = printer["metadata"]["uid"].as_str().unwrap();
    let node = printer["spec"]["nodeName"].as_str().unwrap();
    let path = format!("/logs/default/printer/{uid}");
    let host = format!("{node}.node");
    let bare = http_request(printer_ingress, &host, &path, &[]).unwrap();
    assert_eq!(bare.status, 404, "{}", bare.body);
    let forged_mac = "A".repeat(43);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let forged = format!("{now}.{forged_mac}");
    let refused = http_request(
        printer_ingress,
        &host,
        &path,
        &[("skiff-node-auth", &forged)],
    )
    .unwrap();
    assert_eq!(refused.status, 403, "{}", refused.body);
    let other_node = if node == "logs-1" { "logs-2" } else { "logs-1" };
    let elsewhere = http_request(
        printer_ingress,
        &format!("{other_node}.node"),
        &path,
        &[("skiff-node-auth", &forged)],
    )
    .unwrap();
    assert_eq!(elsewhere.status, 404, "{}", elsewhere.body);
    for response in [&bare, &refused, &elsewhere] {
        assert!(!response.body.contains("tag"), "{}", response.body);
    }

    // Each node holds an API key of its own: a credential made with it
    // opens that node's API, while one made with another node's key, or
    // with the cluster's proxy key every node holds, opens nothing.
    let keys = |node: &str| {
        let response = http_request(
            plane,
            &plane.to_string(),
            &format!("/apis/skiff.dev/v1/nodes/{node}/proxykey"),
            &[(
                "authorization",
                &format!("Bearer {}", cluster.cluster.token),
            )],
        )
        .unwrap();
        assert_eq!(response.status, 200, "{}", response.body);
        let keys: Value = serde_json::from_str(&response.body).unwrap();
        let decode = |field: &str| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(keys[field].as_str().unwrap())
                .unwrap()
        };
        (decode("key"), decode("apiKey"))
    };
    let (cluster_key, own_key) = keys(node);
    let (_, other_key) = keys(other_node);
    let ask_with = |key: &[u8]| {
        let credential = skiff_client::node_api::NodeApiKey::new(key).sign(
            node,
            "GET",
            &path,
            std::time::SystemTime::now(),
        );
        http_request(
            printer_ingress,
            &host,
            &path,
            &[("skiff-node-auth", credential.to_str().unwrap())],
        )
        .unwrap()
    };
    let opened = ask_with(&own_key);
    assert_eq!(opened.status, 200, "{}", opened.body);
    assert!(opened.body.contains("tag4 tail"), "{}", opened.body);
    for key in [&other_key, &cluster_key] {
        let refused = ask_with(key);
        assert_eq!(refused.status, 403, "{}", refused.body);
        assert!(!refused.body.contains("tag"), "{}", refused.body);
    }

    // One token holds at most 16 log streams through the API at once.
    let follow = |token: &str| {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(plane).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "GET /apis/skiff.dev/v1/namespaces/default/pods/printer/log?follow=true&tailLines=0 HTTP/1.1\r\nHost: {plane}\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        let status: u16 = String::from_utf8_lossy(&head[9..12]).parse().unwrap();
        (stream, status)
    };
    let open: Vec<_> = (0..16).map(|_| follow(view.trim())).collect();
    for (_, status) in &open {
        assert_eq!(*status, 200);
    }
    let (_, refused) = follow(view.trim());
    assert_eq!(refused, 429);
    // Another token is not held back by this one's streams.
    let (_, admin) = follow(&cluster.cluster.token);
    assert_eq!(admin, 200);
}

/// A node started with `--capture-pod-output=false` keeps nothing a pod
/// writes: the pod still serves, no log file is made for it, and asking
/// for its logs says why there are none.
#[test]
fn a_node_that_discards_pod_output_keeps_none_and_says_so() {
    let cluster = NodeCluster::start(&[("quiet", &["--capture-pod-output=false"])]);
    let image = format!("{}/misbehave:v1", cluster.registry.addr);
    push(&test_guest("misbehave"), &image);
    cluster.apply(&[pod("printer", &image, json!({}))]);
    cluster.wait_running("printer");
    print(cluster.nodes[0].ingress, "printer", "unkept", "quiet.1");

    let refusal = cluster.cluster.fails(&["logs", "printer"], 1);
    assert!(
        refusal.contains("node quiet discards what its pods write")
            && refusal.contains("--capture-pod-output=false")
            && refusal.contains("pod default/printer has no logs"),
        "{refusal}"
    );
    let logs = cluster.nodes[0].data_dir.join("logs");
    let kept: Vec<_> = std::fs::read_dir(&logs)
        .map(|dir| dir.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(kept.is_empty(), "{} holds {kept:?}", logs.display());
}
