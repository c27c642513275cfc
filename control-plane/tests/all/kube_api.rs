//! What Kubernetes clients are served besides objects, as a hostile or
//! merely mistaken tenant meets it: the scale subresource under the
//! Deployment's roles, Tables under the list's, dropped fields named in a
//! bounded set of warnings, and discovery only with a token.

use serde_json::{Value, json};
use skiff_api::Kind;

use crate::auth::token;
use crate::support::{Cluster, client, http_client};

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

/// A request's status, headers and JSON answer.
async fn call(
    method: reqwest::Method,
    url: String,
    token: &str,
    accept: Option<&str>,
    body: Option<(&str, Value)>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = http_client().request(method, url).bearer_auth(token);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    if let Some((content_type, body)) = body {
        request = request
            .header("content-type", content_type)
            .body(body.to_string());
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Tokens of the two tenants the tests use: `shop`'s viewer and editor,
/// and an admin of `rival`, a namespace of its own.
struct Tokens {
    viewer: String,
    editor: String,
    rival: String,
}

/// A control plane, its admin, and the tenants' tokens.
async fn setting() -> (Cluster, testkit::ControlPlane, skiff_client::Client, Tokens) {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin = client(&plane, &cluster.admin_token);
    let tokens = tenants(&admin).await;
    (cluster, plane, admin, tokens)
}

async fn tenants(admin: &skiff_client::Client) -> Tokens {
    for ns in ["shop", "rival"] {
        let namespace =
            json!({"apiVersion": "skiff.dev/v1", "kind": "Namespace", "metadata": {"name": ns}});
        admin
            .create(Kind::Namespace, None, &namespace)
            .await
            .unwrap();
    }
    Tokens {
        viewer: token(admin, Some("shop"), "view", None).await,
        editor: token(admin, Some("shop"), "edit", None).await,
        rival: token(admin, Some("rival"), "admin", None).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_tables_and_dropped_fields_keep_to_the_callers_roles() {
    let (_cluster, plane, admin, tokens) = setting().await;
    let Tokens {
        viewer,
        editor,
        rival,
    } = tokens;
    let web = json!({
        "apiVersion": "skiff.dev/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"image": "reg.example/web:v1"}}},
    });
    admin
        .create(Kind::Deployment, Some("shop"), &web)
        .await
        .unwrap();
    let scale = format!(
        "{}/apis/skiff.dev/v1/namespaces/shop/deployments/web/scale",
        plane.url
    );
    let patch = |replicas: u64| {
        Some((
            "application/merge-patch+json",
            json!({"spec": {"replicas": replicas}}),
        ))
    };

    // A view token reads the scale and may not write it; another
    // namespace's token may not even read it, and learns nothing.
    let (status, _, read) = call(reqwest::Method::GET, scale.clone(), &viewer, None, None).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["kind"], "Scale");
    assert_eq!(read["spec"]["replicas"], 1);
    assert_eq!(read["status"]["selector"], "app=web");
    let (status, _, _) = call(
        reqwest::Method::PATCH,
        scale.clone(),
        &viewer,
        None,
        patch(5),
    )
    .await;
    assert_eq!(status, 403);
    for method in [reqwest::Method::GET, reqwest::Method::PATCH] {
        let (status, _, _) = call(method, scale.clone(), &rival, None, patch(5)).await;
        assert_eq!(status, 403);
    }
    let missing = scale.replace("/web/", "/nothing/");
    let (status, _, _) = call(reqwest::Method::GET, missing, &rival, None, None).await;
    assert_eq!(
        status, 403,
        "a missing Deployment answers as a forbidden one"
    );

    // An edit token scales; a stale version is a conflict; a Scale naming
    // another Deployment, or a negative count, is refused; nothing else
    // of the Deployment moves.
    let before = admin
        .get(Kind::Deployment, Some("shop"), "web")
        .await
        .unwrap();
    let (status, _, scaled) = call(
        reqwest::Method::PATCH,
        scale.clone(),
        &editor,
        None,
        patch(3),
    )
    .await;
    assert_eq!(status, 200, "{scaled}");
    assert_eq!(scaled["spec"]["replicas"], 3);
    let mut stale = read.clone();
    stale["spec"]["replicas"] = json!(4);
    let (status, _, _) = call(
        reqwest::Method::PUT,
        scale.clone(),
        &editor,
        None,
        Some(("application/json", stale.clone())),
    )
    .await;
    assert_eq!(status, 409);
    let mut other = scaled.clone();
    other["metadata"]["name"] = json!("api");
    let (status, _, answer) = call(
        reqwest::Method::PUT,
        scale.clone(),
        &editor,
        None,
        Some(("application/json", other)),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let (status, _, answer) = call(
        reqwest::Method::PATCH,
        scale.clone(),
        &editor,
        None,
        Some((
            "application/merge-patch+json",
            json!({"spec": {"replicas": -1}}),
        )),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.replicas"),
        "{answer}"
    );
    let stored = admin
        .get(Kind::Deployment, Some("shop"), "web")
        .await
        .unwrap();
    assert_eq!(stored["spec"]["replicas"], 3);
    assert_eq!(stored["spec"]["template"], before["spec"]["template"]);

    // Tables: the list's roles. A view token gets pods as a Table, not
    // Secrets; a rival gets neither.
    let pods = format!(
        "{}/apis/skiff.dev/v1/namespaces/shop/deployments",
        plane.url
    );
    let (status, _, table) = call(
        reqwest::Method::GET,
        pods.clone(),
        &viewer,
        Some(TABLE),
        None,
    )
    .await;
    assert_eq!(status, 200, "{table}");
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["rows"][0]["cells"][0], "web");
    assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    let secrets = format!("{}/apis/skiff.dev/v1/namespaces/shop/secrets", plane.url);
    let (status, _, _) = call(reqwest::Method::GET, secrets, &viewer, Some(TABLE), None).await;
    assert_eq!(status, 403);
    let (status, _, _) = call(reqwest::Method::GET, pods, &rival, Some(TABLE), None).await;
    assert_eq!(status, 403);

    // Dropped fields: named in warnings, a bounded number of them, each a
    // header value however odd the name.
    let mut noisy = json!({"apiVersion": "skiff.dev/v1", "kind": "ConfigMap",
                           "metadata": {"name": "noisy"}, "data": {"k": "v"}});
    for i in 0..50 {
        noisy[format!("extra\"{i}\n")] = json!(i);
    }
    let configmaps = format!("{}/apis/skiff.dev/v1/namespaces/shop/configmaps", plane.url);
    let (status, headers, created) = call(
        reqwest::Method::POST,
        format!("{configmaps}?fieldValidation=Warn"),
        &editor,
        None,
        Some(("application/json", noisy.clone())),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let warnings: Vec<&str> = headers
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(warnings.len(), 11, "{warnings:?}");
    assert!(
        warnings[0].starts_with("299 - \"unknown field \\\"extra\\\\\\\""),
        "{warnings:?}"
    );
    assert_eq!(warnings[10], "299 - \"and 40 more warnings\"");
    assert!(
        created
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("extra"))
    );
    // Strict, the default, refuses the same body and writes nothing.
    noisy["metadata"]["name"] = json!("strict");
    let (status, _, refused) = call(
        reqwest::Method::POST,
        configmaps.clone(),
        &editor,
        None,
        Some(("application/json", noisy)),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        admin
            .get(Kind::ConfigMap, Some("shop"), "strict")
            .await
            .is_err()
    );
    let (status, _, answer) = call(
        reqwest::Method::POST,
        format!("{configmaps}?fieldValidation=Lax"),
        &editor,
        None,
        Some(("application/json", json!({}))),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("fieldValidation: "),
        "{answer}"
    );

    // Discovery and the documents: any token, and only with one.
    for path in [
        "/version",
        "/api",
        "/apis",
        "/apis/skiff.dev/v1",
        "/openapi/v3",
        "/openapi/v2",
    ] {
        let url = format!("{}{path}", plane.url);
        let (status, _, _) = call(reqwest::Method::GET, url.clone(), &rival, None, None).await;
        assert_eq!(status, 200, "{path}");
        let (status, _, _) = call(reqwest::Method::GET, url, "not-a-token", None, None).await;
        assert_eq!(status, 401, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_views_hold_the_same_line_as_skiffs_own() {
    let (_cluster, plane, admin, tokens) = setting().await;
    let Tokens {
        viewer,
        editor,
        rival,
    } = tokens;
    let url = |path: &str| format!("{}{path}", plane.url);

    // A Deployment written in Kubernetes' shape is Skiff's Deployment.
    let web = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "reg.example/web:v1"}]}}},
    });
    let deployments = url("/apis/apps/v1/namespaces/shop/deployments");
    let (status, _, created) = call(
        reqwest::Method::POST,
        deployments.clone(),
        &editor,
        None,
        Some(("application/json", web.clone())),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["apiVersion"], "apps/v1");
    let stored = admin
        .get(Kind::Deployment, Some("shop"), "web")
        .await
        .unwrap();
    assert_eq!(
        stored["spec"]["template"]["spec"]["image"],
        "reg.example/web:v1"
    );
    assert_eq!(
        stored["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );

    // Other namespaces' tokens get nothing through any of the views, and
    // a view token writes nothing.
    for path in [
        "/api/v1/namespaces/shop/pods",
        "/apis/apps/v1/namespaces/shop/deployments/web",
        "/apis/apps/v1/namespaces/shop/replicasets",
        "/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods",
        "/apis/apps/v1/namespaces/shop/deployments/web/scale",
    ] {
        let (status, _, _) = call(reqwest::Method::GET, url(path), &rival, None, None).await;
        assert_eq!(status, 403, "{path}");
    }
    let item = url("/apis/apps/v1/namespaces/shop/deployments/web");
    let label = Some((
        "application/strategic-merge-patch+json",
        json!({"metadata": {"labels": {"x": "y"}}}),
    ));
    let (status, _, _) = call(
        reqwest::Method::PATCH,
        item.clone(),
        &viewer,
        None,
        label.clone(),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, patched) =
        call(reqwest::Method::PATCH, item.clone(), &editor, None, label).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["metadata"]["labels"]["x"], "y");
    // Status is Skiff's components' to write.
    let (status, _, _) = call(
        reqwest::Method::PUT,
        format!("{item}/status"),
        &editor,
        None,
        Some(("application/json", created.clone())),
    )
    .await;
    assert_eq!(status, 405);

    // A JSON patch that doubles the object again and again is refused
    // once it outgrows an object, and one of too many operations at once;
    // neither writes anything.
    let bomb: Vec<Value> =
        std::iter::once(json!({"op": "add", "path": "/metadata/x", "value": ["x".repeat(1000)]}))
            .chain((0..40).flat_map(|_| {
                [
                    json!({"op": "copy", "from": "/metadata/x", "path": "/metadata/y"}),
                    json!({"op": "copy", "from": "/metadata/y", "path": "/metadata/x/-"}),
                ]
            }))
            .collect();
    let (status, _, answer) = call(
        reqwest::Method::PATCH,
        item.clone(),
        &editor,
        None,
        Some(("application/json-patch+json", json!(bomb))),
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    let many: Vec<Value> = (0..101)
        .map(|_| json!({"op": "test", "path": "/kind", "value": "Deployment"}))
        .collect();
    let (status, _, _) = call(
        reqwest::Method::PATCH,
        item.clone(),
        &editor,
        None,
        Some(("application/json-patch+json", json!(many))),
    )
    .await;
    assert_eq!(status, 400);
    let after = admin
        .get(Kind::Deployment, Some("shop"), "web")
        .await
        .unwrap();
    assert_eq!(
        after["metadata"]["resourceVersion"],
        patched["metadata"]["resourceVersion"]
    );

    // What is kept for display cannot make a pod look like what it is
    // not: limits, privileges and host access written into the annotation
    // are not shown.
    let forged = json!({"container": {"resources": {"limits": {"memory": "4Gi"}}, "securityContext": {"privileged": true},
                                      "image": "elsewhere"},
                        "pod": {"hostNetwork": true}});
    let pod = json!({"apiVersion": "skiff.dev/v1", "kind": "Pod",
                     "metadata": {"name": "p", "annotations": {"skiff.dev/kubernetes-only": forged.to_string()}},
                     "spec": {"image": "reg.example/web:v1", "resources": {"memory": "64Mi"}}});
    admin.create(Kind::Pod, Some("shop"), &pod).await.unwrap();
    let (status, _, shown) = call(
        reqwest::Method::GET,
        url("/api/v1/namespaces/shop/pods/p"),
        &viewer,
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{shown}");
    let container = &shown["spec"]["containers"][0];
    assert_eq!(container["resources"]["limits"]["memory"], "64Mi");
    assert_eq!(container["image"], "reg.example/web:v1");
    assert!(container.get("securityContext").is_none(), "{shown}");
    assert!(shown["spec"].get("hostNetwork").is_none(), "{shown}");

    // A Kubernetes Pod that asks for more than Skiff gives is refused by
    // field, as is a Service of a type Skiff has not.
    let pods = url("/api/v1/namespaces/shop/pods");
    let privileged = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root"},
        "spec": {"hostPID": true, "containers": [{"name": "c", "image": "i", "securityContext": {"privileged": true}}]}});
    let (status, _, answer) = call(
        reqwest::Method::POST,
        pods,
        &editor,
        None,
        Some(("application/json", privileged)),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    let fields: Vec<&str> = answer["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "spec.hostPID",
            "spec.containers[0].securityContext.privileged"
        ],
        "{answer}"
    );
    let (status, _, _) = call(reqwest::Method::POST, url("/api/v1/namespaces/shop/services"), &editor, None,
        Some(("application/json", json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer"}})))).await;
    assert_eq!(status, 422);
    assert!(admin.get(Kind::Pod, Some("shop"), "root").await.is_err());

    // Skiff's own fields carried in the Kubernetes shape (a volume, or the
    // `skiff.dev/spec` annotation) meet the namespace's pod security as
    // they would on Skiff's path: a host path is refused, by field, both
    // ways, and nothing is created.
    let host_path_pods = [
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "host-a"},
               "spec": {"containers": [{"name": "c", "image": "i", "volumeMounts": [{"name": "h", "mountPath": "/h"}]}],
                        "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}}),
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "host-b", "annotations": {"skiff.dev/spec":
                   json!({"volumes": [{"name": "h", "mountPath": "/h", "hostPath": {"path": "/"}}]}).to_string()}},
               "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    ];
    for pod in host_path_pods {
        let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
        let (status, _, answer) = call(
            reqwest::Method::POST,
            url("/api/v1/namespaces/shop/pods"),
            &editor,
            None,
            Some(("application/json", pod)),
        )
        .await;
        assert_eq!(status, 403, "{name}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .unwrap_or_default()
                .contains("hostPath"),
            "{answer}"
        );
        assert!(admin.get(Kind::Pod, Some("shop"), &name).await.is_err());
    }

    // A view token's patches and applies are refused before their bodies
    // are read: nonsense gets the same 403 as sense.
    for (content_type, body) in [
        ("application/apply-patch+yaml", "{not yaml"),
        ("application/strategic-merge-patch+json", "{not json"),
    ] {
        let response = http_client()
            .patch(format!("{item}?fieldManager=m"))
            .bearer_auth(&viewer)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 403, "{content_type}");
    }
    // An alias bomb applied is refused before it expands.
    let list = vec!["x"; 1000].join(", ");
    let aliases = vec!["*a"; 2000].join(", ");
    let bomb = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bomb}}\na: &a [{list}]\nb: [{aliases}]\n"
    );
    let response = http_client()
        .patch(url(
            "/api/v1/namespaces/shop/configmaps/bomb?fieldManager=m",
        ))
        .bearer_auth(&editor)
        .header("content-type", "application/apply-patch+yaml")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(response.text().await.unwrap().contains("aliases expanded"));
    // A JSON patch copying a value into itself is refused.
    let (status, _, answer) = call(
        reqwest::Method::PATCH,
        item.clone(),
        &editor,
        None,
        Some((
            "application/json-patch+json",
            json!([{"op": "copy", "from": "/spec", "path": "/spec/template/spec/x"}]),
        )),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    // Bodies of the wrong shape are the caller's mistake, never a 5xx.
    let configmaps = url("/api/v1/namespaces/shop/configmaps");
    for (method, target, content_type, body) in [
        (
            reqwest::Method::POST,
            configmaps.clone(),
            "application/json",
            json!([]),
        ),
        (
            reqwest::Method::POST,
            url("/apis/apps/v1/namespaces/shop/deployments"),
            "application/json",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "s"}, "spec": "x"}),
        ),
        (
            reqwest::Method::PATCH,
            item.clone(),
            "application/merge-patch+json",
            json!({"metadata": 1}),
        ),
        (
            reqwest::Method::PATCH,
            item.clone(),
            "application/json-patch+json",
            json!([{"op": "replace", "path": "", "value": []}]),
        ),
        (
            reqwest::Method::PATCH,
            format!("{item}/scale"),
            "application/merge-patch+json",
            json!({"metadata": "x"}),
        ),
    ] {
        let (status, _, answer) = call(
            method.clone(),
            target.clone(),
            &editor,
            None,
            Some((content_type, body.clone())),
        )
        .await;
        assert!(
            (400..500).contains(&status),
            "{method} {target} {body}: {status} {answer}"
        );
    }
}
