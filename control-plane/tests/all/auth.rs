//! Authentication and roles: 401 without a valid token, 403 for what a
//! token may not do, and neither reveals whether an object exists.

use serde_json::json;
use skiff_api::Kind;
use skiff_api::tokens::TokenRequest;
use skiff_client::{Client, ListOptions};

use crate::support::{Cluster, client, object};

async fn raw_get(url: &str, token: Option<&str>) -> (u16, String) {
    let http = crate::support::http_client();
    let mut request = http.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let code = response.status().as_u16();
    let www = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.text().await.unwrap();
    if code == 401 {
        assert_eq!(www.as_deref(), Some("Bearer"));
    }
    (code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_answers_without_a_valid_token_but_health() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let base = &plane.url;
    for path in [
        "/apis/skiff.dev/v1/namespaces",
        "/apis/skiff.dev/v1/namespaces/default/pods",
        "/apis/skiff.dev/v1/namespaces/default/pods/missing",
        "/apis/skiff.dev/v1/nodes",
        "/apis/skiff.dev/v1/tokens",
        "/openapi.json",
    ] {
        for token in [None, Some("skf_not-a-real-token"), Some("garbage")] {
            let (code, body) = raw_get(&format!("{base}{path}"), token).await;
            assert_eq!(code, 401, "{path} with {token:?}: {body}");
            assert!(body.contains("\"reason\":\"Unauthorized\""), "{body}");
        }
    }
    assert_eq!(raw_get(&format!("{base}/healthz"), None).await.0, 200);
    assert_eq!(raw_get(&format!("{base}/readyz"), None).await.0, 200);
    let (code, body) = raw_get(&format!("{base}/openapi.json"), Some(&cluster.admin_token)).await;
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(
        doc["paths"]["/apis/skiff.dev/v1/namespaces/{namespace}/pods/{name}/status"]["put"]
            .is_object()
    );
}

/// A new token from `admin` (shared with the other modules' tests).
pub async fn token(
    admin: &Client,
    namespace: Option<&str>,
    role: &str,
    node: Option<&str>,
) -> String {
    admin
        .create_token(
            namespace,
            &TokenRequest {
                role: role.into(),
                node_name: node.map(str::to_owned),
                description: String::new(),
                ttl: None,
            },
        )
        .await
        .unwrap()
        .token
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_allow_what_they_should_and_nothing_more() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin = client(&plane, &cluster.admin_token);
    admin
        .create(Kind::Namespace, None, &object(Kind::Namespace, "shop"))
        .await
        .unwrap();
    admin
        .create(Kind::Secret, Some("shop"), &object(Kind::Secret, "keys"))
        .await
        .unwrap();
    admin
        .create(Kind::Pod, Some("default"), &object(Kind::Pod, "elsewhere"))
        .await
        .unwrap();
    let viewer = client(&plane, &token(&admin, Some("shop"), "view", None).await);
    let editor = client(&plane, &token(&admin, Some("shop"), "edit", None).await);
    let owner = client(&plane, &token(&admin, Some("shop"), "admin", None).await);

    let code = |r: Result<serde_json::Value, skiff_client::ClientError>| match r {
        Ok(_) => 200,
        Err(e) => e.code().unwrap_or(0),
    };
    let shop = Some("shop");
    let list = ListOptions::default();
    // view: read, but not Secrets, and only in its namespace.
    viewer.list(Kind::Pod, shop, &list).await.unwrap();
    assert_eq!(
        code(
            viewer
                .create(Kind::Pod, shop, &object(Kind::Pod, "p"))
                .await
        ),
        403
    );
    assert_eq!(code(viewer.get(Kind::Secret, shop, "keys").await), 403);
    assert_eq!(
        code(viewer.get(Kind::Pod, Some("default"), "elsewhere").await),
        403
    );
    assert_eq!(code(viewer.get(Kind::Namespace, None, "shop").await), 200);
    assert_eq!(
        code(viewer.get(Kind::Namespace, None, "default").await),
        403
    );
    // edit: writes everything in its namespace, Secrets included.
    assert_eq!(
        code(
            editor
                .create(Kind::Pod, shop, &object(Kind::Pod, "p"))
                .await
        ),
        200
    );
    assert_eq!(code(editor.get(Kind::Secret, shop, "keys").await), 200);
    assert_eq!(
        code(
            editor
                .create(Kind::Namespace, None, &object(Kind::Namespace, "mine"))
                .await
        ),
        403
    );
    assert_eq!(code(editor.get(Kind::Node, None, "n1").await), 403);
    assert!(
        editor
            .list(Kind::Pod, None, &list)
            .await
            .unwrap_err()
            .code()
            == Some(403),
        "no lists across namespaces"
    );
    let no_tokens = editor.create_token(shop, &role("view")).await.unwrap_err();
    assert_eq!(no_tokens.code(), Some(403));
    // admin: also the namespace's tokens, but not other namespaces'.
    let minted = owner.create_token(shop, &role("view")).await.unwrap();
    assert_eq!(minted.role, "view");
    let elsewhere = owner
        .create_token(Some("default"), &role("view"))
        .await
        .unwrap_err();
    assert_eq!(elsewhere.code(), Some(403));
    let cluster_token = owner
        .create_token(None, &role("cluster-admin"))
        .await
        .unwrap_err();
    assert_eq!(cluster_token.code(), Some(403));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_does_not_reveal_whether_the_object_exists() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin = client(&plane, &cluster.admin_token);
    admin
        .create(Kind::Secret, Some("default"), &object(Kind::Secret, "real"))
        .await
        .unwrap();
    let viewer = client(&plane, &token(&admin, Some("default"), "view", None).await);
    let real = viewer
        .get(Kind::Secret, Some("default"), "real")
        .await
        .unwrap_err();
    let missing = viewer
        .get(Kind::Secret, Some("default"), "imaginary")
        .await
        .unwrap_err();
    assert_eq!(real.code(), Some(403));
    assert_eq!(real.to_string(), missing.to_string());

    let node = client(&plane, &token(&admin, None, "node", Some("n1")).await);
    let mut theirs = object(Kind::Pod, "theirs");
    theirs["spec"]["nodeName"] = json!("n2");
    admin
        .create(Kind::Pod, Some("default"), &theirs)
        .await
        .unwrap();
    let other = node
        .get(Kind::Pod, Some("default"), "theirs")
        .await
        .unwrap_err();
    let absent = node
        .get(Kind::Pod, Some("default"), "nobody")
        .await
        .unwrap_err();
    // A pod bound elsewhere is answered as missing: the node learns
    // nothing, and a node reporting on a pod deleted meanwhile hears that
    // it is gone rather than a refusal it would retry.
    assert_eq!((other.code(), absent.code()), (Some(404), Some(404)));
    assert_eq!(
        other.to_string().replace("theirs", "nobody"),
        absent.to_string()
    );
    let mut mine = object(Kind::Pod, "mine");
    mine["spec"]["nodeName"] = json!("n1");
    admin
        .create(Kind::Pod, Some("default"), &mine)
        .await
        .unwrap();
    admin
        .delete(Kind::Pod, Some("default"), "mine", None)
        .await
        .unwrap();
    let status = json!({"status": {"phase": "Running"}});
    let gone = node
        .patch(Kind::Pod, Some("default"), "mine", &status, true)
        .await
        .unwrap_err();
    assert!(gone.is_not_found(), "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_tokens_touch_only_their_node_and_its_pods() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin = client(&plane, &cluster.admin_token);
    let node = client(&plane, &token(&admin, None, "node", Some("n1")).await);

    node.create(Kind::Node, None, &object(Kind::Node, "n1"))
        .await
        .unwrap();
    assert_eq!(
        node.create(Kind::Node, None, &object(Kind::Node, "n2"))
            .await
            .unwrap_err()
            .code(),
        Some(403)
    );
    let mut status = node.get(Kind::Node, None, "n1").await.unwrap();
    status["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
    node.replace_status(Kind::Node, None, "n1", &status)
        .await
        .unwrap();
    assert_eq!(
        node.delete(Kind::Node, None, "n1", None)
            .await
            .unwrap_err()
            .code(),
        Some(403)
    );

    let mut mine = object(Kind::Pod, "mine");
    mine["spec"]["nodeName"] = json!("n1");
    admin
        .create(Kind::Pod, Some("default"), &mine)
        .await
        .unwrap();
    let pod = node.get(Kind::Pod, Some("default"), "mine").await.unwrap();
    let mut running = pod.clone();
    running["status"] = json!({"phase": "Running"});
    node.replace_status(Kind::Pod, Some("default"), "mine", &running)
        .await
        .unwrap();
    assert_eq!(
        node.replace(Kind::Pod, Some("default"), "mine", &pod)
            .await
            .unwrap_err()
            .code(),
        Some(403),
        "nodes write pod status, not pods"
    );
    let by_node = |selector: Option<&str>| ListOptions {
        field_selector: selector.map(str::to_owned),
        ..Default::default()
    };
    assert_eq!(
        node.list(Kind::Pod, None, &by_node(Some("spec.nodeName=n1")))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        node.list(Kind::Pod, None, &by_node(Some("spec.nodeName=n2")))
            .await
            .unwrap_err()
            .code(),
        Some(403)
    );
    assert_eq!(
        node.list(Kind::Pod, None, &by_node(None))
            .await
            .unwrap_err()
            .code(),
        Some(403)
    );
    assert_eq!(
        node.get(Kind::Secret, Some("default"), "x")
            .await
            .unwrap_err()
            .code(),
        Some(403)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_read_only_the_secrets_and_config_maps_their_pods_use() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin = client(&plane, &cluster.admin_token);
    let node = client(&plane, &token(&admin, None, "node", Some("n1")).await);
    for name in ["pull", "env", "elsewhere", "unused"] {
        admin
            .create(Kind::Secret, Some("default"), &object(Kind::Secret, name))
            .await
            .unwrap();
    }
    admin
        .create(
            Kind::ConfigMap,
            Some("default"),
            &object(Kind::ConfigMap, "settings"),
        )
        .await
        .unwrap();
    let mut here = object(Kind::Pod, "here");
    here["spec"]["nodeName"] = json!("n1");
    here["spec"]["imagePullSecret"] = json!("pull");
    here["spec"]["env"] = json!([
        {"name": "A", "valueFrom": {"secretKeyRef": {"name": "env", "key": "password"}}},
        {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}},
    ]);
    let mut there = object(Kind::Pod, "there");
    there["spec"]["nodeName"] = json!("n2");
    there["spec"]["imagePullSecret"] = json!("elsewhere");
    for pod in [here, there] {
        admin
            .create(Kind::Pod, Some("default"), &pod)
            .await
            .unwrap();
    }

    for name in ["pull", "env"] {
        let secret = node.get(Kind::Secret, Some("default"), name).await.unwrap();
        assert_eq!(secret["metadata"]["name"], name);
    }
    node.get(Kind::ConfigMap, Some("default"), "settings")
        .await
        .unwrap();
    // Used by a pod on another node, used by none, absent, or all of them
    // at once: refused alike.
    for name in ["elsewhere", "unused", "absent"] {
        let refused = node.get(Kind::Secret, Some("default"), name).await;
        assert_eq!(refused.unwrap_err().code(), Some(403), "{name}");
    }
    let listed = node
        .list(Kind::Secret, Some("default"), &ListOptions::default())
        .await;
    assert_eq!(listed.unwrap_err().code(), Some(403));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_token_stops_working() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&["--token-cache-ttl", "0s"]);
    let admin = client(&plane, &cluster.admin_token);
    let info = admin
        .create_token(Some("default"), &role("view"))
        .await
        .unwrap();
    let viewer = client(&plane, info.token.as_ref().unwrap());
    viewer
        .list(Kind::Pod, Some("default"), &ListOptions::default())
        .await
        .unwrap();
    let listed = admin.list_tokens(Some("default")).await.unwrap();
    assert!(
        listed.iter().any(|t| t.id == info.id && t.token.is_none()),
        "listed without the secret"
    );
    admin.delete_token(Some("default"), &info.id).await.unwrap();
    let err = viewer
        .list(Kind::Pod, Some("default"), &ListOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(401));
}

/// A request for a token with `role` and nothing else.
fn role(role: &str) -> TokenRequest {
    TokenRequest {
        role: role.into(),
        ..Default::default()
    }
}
