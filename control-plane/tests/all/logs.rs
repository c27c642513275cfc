//! `GET namespaces/{ns}/pods/{name}/log`: who may read a pod's logs, what
//! bad input gets, and that the API server relays only answers that prove
//! they come from a node of the cluster. Logs read from real nodes are
//! tested in `wasmctl/tests/all/logs.rs`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use skiff_api::Kind;

use crate::auth::token;
use crate::support::{Cluster, client, http_client, object};

/// An HTTP server on loopback that is not a node: it answers every request
/// with 200 and a body the API must never pass on.
fn impostor() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let body = "internal-secret\n";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, hits)
}

async fn node_at(admin: &skiff_client::Client, name: &str, address: &str) {
    let node = admin
        .create(Kind::Node, None, &object(Kind::Node, name))
        .await
        .unwrap();
    let mut node = node;
    node["status"] = json!({"addresses": [{"type": "Ingress", "address": address}]});
    admin
        .replace_status(Kind::Node, None, name, &node)
        .await
        .unwrap();
}

async fn pod_on(admin: &skiff_client::Client, name: &str, node: Option<&str>) {
    let mut pod = object(Kind::Pod, name);
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    admin
        .create(Kind::Pod, Some("default"), &pod)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_read_within_the_namespace_and_relayed_only_from_nodes() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin = client(&plane, &cluster.admin_token);
    admin
        .create(Kind::Namespace, None, &object(Kind::Namespace, "other"))
        .await
        .unwrap();
    let (fake, hits) = impostor();
    node_at(&admin, "ghost", &fake.to_string()).await;
    node_at(&admin, "metadata", "169.254.169.254:80").await;
    pod_on(&admin, "web", Some("ghost")).await;
    pod_on(&admin, "cloud", Some("metadata")).await;
    pod_on(&admin, "waiting", None).await;

    let view = token(&admin, Some("default"), "view", None).await;
    let other = token(&admin, Some("other"), "admin", None).await;
    let node = token(&admin, None, "node", Some("ghost")).await;
    let http = http_client();
    let get = |path: &str, token: Option<&str>| {
        let mut request = http.get(format!(
            "{}/apis/skiff.dev/v1/namespaces/default/pods/{path}",
            plane.url
        ));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };

    // Who may ask. A refusal comes before the pod is looked up: another
    // namespace's token gets 403 for a pod that does not exist too.
    assert_eq!(get("web/log", None).await.0, 401);
    for (token, pod) in [(&other, "web"), (&other, "nobody"), (&node, "web")] {
        let (status, body) = get(&format!("{pod}/log"), Some(token)).await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("may not read pods' logs"), "{body}");
    }
    assert_eq!(get("nobody/log", Some(&view)).await.0, 404);

    // Bad input, named.
    for (query, named) in [
        ("tailLines=-1", "tailLines"),
        ("sinceSeconds=0", "sinceSeconds"),
        ("follow=maybe", "follow"),
        ("follow=true&previous=true", "previous"),
        ("limitBytes=0", "limitBytes"),
        ("container=web&since=1", "since"),
    ] {
        let (status, body) = get(&format!("web/log?{query}"), Some(&view)).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(named), "{query}: {body}");
    }
    let (status, body) = get("waiting/log", Some(&view)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not on a node yet"), "{body}");
    let posted = http
        .post(format!(
            "{}/apis/skiff.dev/v1/namespaces/default/pods/web/log",
            plane.url
        ))
        .bearer_auth(&view)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status().as_u16(), 405);

    // A Node whose address leads to something that is not a node: it is
    // asked (the API cannot know before), but its answer is not relayed.
    let (status, body) = get("web/log", Some(&view)).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("not as a node of this cluster"), "{body}");
    assert!(!body.contains("internal-secret"), "{body}");
    assert!(hits.load(Ordering::SeqCst) >= 1);

    // Nor can a tenant's Route claim a node's host (or any under .node):
    // nodes answer those themselves, before any Route.
    let edit = client(&plane, &token(&admin, Some("default"), "edit", None).await);
    for host in ["ghost.node", "*.node"] {
        let mut route = object(Kind::Route, "claims-node");
        route["spec"]["host"] = json!(host);
        let refused = edit
            .create(Kind::Route, Some("default"), &route)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Some(422), "{host}: {refused}");
        assert!(refused.to_string().contains("spec.host"), "{refused}");
    }

    // A link-local address (where a cloud's metadata service answers) is
    // refused before any connection is made.
    let (status, body) = get("cloud/log", Some(&view)).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("link-local"), "{body}");
}
