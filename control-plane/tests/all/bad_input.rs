//! Bad input gets a precise error and stores nothing.

use serde_json::{Value, json};
use skiff_api::Kind;

use crate::support::{Cluster, client, object};

/// Sends `body` raw and returns the status code and the Status message.
async fn post(url: &str, token: &str, body: Vec<u8>, content_type: &str) -> (u16, String) {
    let response = crate::support::http_client()
        .post(url)
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let code = response.status().as_u16();
    let status: Value = response.json().await.unwrap();
    (
        code,
        status["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_bad_input_is_named_and_nothing_is_stored() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let api = client(&plane, &cluster.admin_token);
    let before = api
        .list(Kind::Pod, None, &Default::default())
        .await
        .unwrap();
    let pods = format!("{}/apis/skiff.dev/v1/namespaces/default/pods", plane.url);
    let json_of = |v: Value| serde_json::to_vec(&v).unwrap();

    let mut wrong_version = object(Kind::Pod, "p");
    wrong_version["apiVersion"] = json!("v1");
    let mut unknown_field = object(Kind::Pod, "p");
    unknown_field["spec"]["imagee"] = json!("x");
    let mut bad_memory = object(Kind::Pod, "p");
    bad_memory["spec"]["resources"] = json!({"memory": "512Ki"});
    let mut bad_name = object(Kind::Pod, "p");
    bad_name["metadata"]["name"] = json!("Not_OK");
    let mut huge = object(Kind::ConfigMap, "huge");
    huge["data"] = json!({"blob": "x".repeat(1 << 20)});
    let mut bad_probe = object(Kind::Pod, "p");
    bad_probe["spec"]["livenessProbe"] =
        json!({"httpGet": {"path": "healthz"}, "periodSeconds": 0});
    let mut bad_rollout = object(Kind::Deployment, "d");
    bad_rollout["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
    let mut forged_rv = object(Kind::Pod, "p");
    forged_rv["metadata"]["resourceVersion"] = json!("7");

    let cases: Vec<(String, Vec<u8>, &str, u16, &str)> = vec![
        (
            pods.clone(),
            b"{\"apiVersion\": ".to_vec(),
            "application/json",
            400,
            "request body is not valid JSON: EOF while parsing",
        ),
        (
            pods.clone(),
            json_of(wrong_version),
            "application/json",
            422,
            "apiVersion: must be skiff.dev/v1, not v1",
        ),
        (
            pods.clone(),
            json_of(unknown_field),
            "application/json",
            422,
            "spec.imagee: unknown field `imagee`",
        ),
        (
            pods.clone(),
            json_of(bad_memory),
            "application/json",
            422,
            "spec.resources.memory: must be at least 1Mi",
        ),
        (
            pods.clone(),
            json_of(bad_name),
            "application/json",
            422,
            "metadata.name: must be a DNS label",
        ),
        (
            pods.clone(),
            json_of(bad_probe),
            "application/json",
            422,
            "spec.livenessProbe.httpGet.path: must start with '/'; spec.livenessProbe.periodSeconds: must be at least 1",
        ),
        (
            format!(
                "{}/apis/skiff.dev/v1/namespaces/default/deployments",
                plane.url
            ),
            json_of(bad_rollout),
            "application/json",
            422,
            "spec.strategy.rollingUpdate: maxSurge and maxUnavailable cannot both be 0",
        ),
        (
            pods.clone(),
            json_of(object(Kind::Service, "s")),
            "application/json",
            422,
            "kind: must be Pod here, not Service",
        ),
        (
            pods.clone(),
            json_of(forged_rv),
            "application/json",
            422,
            "metadata.resourceVersion: must not be set when creating",
        ),
        (
            pods.clone(),
            json_of(object(Kind::Pod, "p")),
            "text/yaml",
            415,
            "content type text/yaml is not supported",
        ),
        (
            format!(
                "{}/apis/skiff.dev/v1/namespaces/default/configmaps",
                plane.url
            ),
            json_of(huge),
            "application/json",
            413,
            "request body is larger than 1Mi",
        ),
        (
            format!("{}/apis/skiff.dev/v1/namespaces/default/gizmos", plane.url),
            b"{}".to_vec(),
            "application/json",
            404,
            "the server could not find the requested resource: namespaces/default/gizmos",
        ),
    ];
    for (url, body, content_type, want_code, want_message) in cases {
        let (code, message) = post(&url, &cluster.admin_token, body, content_type).await;
        assert_eq!(code, want_code, "{message}");
        assert!(
            message.starts_with(want_message),
            "got {message:?}, want {want_message:?}"
        );
    }

    let after = api
        .list(Kind::Pod, None, &Default::default())
        .await
        .unwrap();
    assert_eq!(after.items.len(), before.items.len());
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "no write happened"
    );
    assert_eq!(
        api.get(Kind::ConfigMap, Some("default"), "huge")
            .await
            .unwrap_err()
            .code(),
        Some(404)
    );
}
