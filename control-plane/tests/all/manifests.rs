//! `POST manifests`: a YAML manifest applied (or, with `dryRun=All`,
//! previewed) by a real control plane, under the caller's roles; a bad
//! document refuses the whole manifest with nothing applied.

use serde_json::{Value, json};
use skiff_api::Kind;

use crate::auth::token;
use crate::support::{Cluster, client, http_client};

const MANIFEST: &str = "\
apiVersion: skiff.dev/v1
kind: ConfigMap
metadata: {name: settings}
data: {colour: blue}
---
apiVersion: skiff.dev/v1
kind: Secret
metadata: {name: keys, namespace: shop}
data: {password: aHVudGVyMg==}
";

/// Sends a manifest; the status and the answer.
async fn send(url: &str, token: &str, query: &str, manifest: &str) -> (u16, Value) {
    let response = http_client()
        .post(format!("{url}/apis/skiff.dev/v1/manifests{query}"))
        .bearer_auth(token)
        .header("content-type", "application/yaml")
        .body(manifest.to_owned())
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// (action, namespace/name) of each item.
fn actions(answer: &Value) -> Vec<(String, String)> {
    answer["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {answer}"))
        .iter()
        .map(|item| {
            (
                item["action"].as_str().unwrap_or_default().to_owned(),
                format!(
                    "{}/{}",
                    item["namespace"].as_str().unwrap_or_default(),
                    item["name"].as_str().unwrap_or_default()
                ),
            )
        })
        .collect()
}

fn pair(action: &str, object: &str) -> (String, String) {
    (action.to_owned(), object.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_is_previewed_then_applied_under_the_callers_roles() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin = client(&plane, &cluster.admin_token);
    let shop =
        json!({"apiVersion": "skiff.dev/v1", "kind": "Namespace", "metadata": {"name": "shop"}});
    admin.create(Kind::Namespace, None, &shop).await.unwrap();

    // Previewed: both would be created, neither is.
    let (status, preview) = send(&plane.url, &cluster.admin_token, "?dryRun=All", MANIFEST).await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["dryRun"], json!(true));
    assert_eq!(
        actions(&preview),
        [
            pair("created", "default/settings"),
            pair("created", "shop/keys")
        ]
    );
    assert!(
        admin
            .get(Kind::ConfigMap, Some("default"), "settings")
            .await
            .is_err()
    );

    // Applied; then again, unchanged; then changed, naming what changed.
    let (status, applied) = send(&plane.url, &cluster.admin_token, "", MANIFEST).await;
    assert_eq!(status, 200, "{applied}");
    assert_eq!(
        actions(&applied),
        [
            pair("created", "default/settings"),
            pair("created", "shop/keys")
        ]
    );
    let stored = admin
        .get(Kind::ConfigMap, Some("default"), "settings")
        .await
        .unwrap();
    assert_eq!(stored["data"]["colour"], json!("blue"));
    let (_, again) = send(&plane.url, &cluster.admin_token, "", MANIFEST).await;
    assert_eq!(
        actions(&again),
        [
            pair("unchanged", "default/settings"),
            pair("unchanged", "shop/keys")
        ]
    );
    let changed = MANIFEST
        .replace("colour: blue", "colour: green")
        .replace("aHVudGVyMg==", "c2VjcmV0");
    let (_, preview) = send(&plane.url, &cluster.admin_token, "?dryRun=All", &changed).await;
    assert_eq!(
        actions(&preview),
        [
            pair("configured", "default/settings"),
            pair("configured", "shop/keys")
        ]
    );
    assert_eq!(preview["items"][0]["changes"], json!(["data.colour"]));
    // A Secret's change is named, its values never shown.
    assert_eq!(preview["items"][1]["changes"], json!(["data.password"]));
    assert!(!preview.to_string().contains("c2VjcmV0"), "{preview}");
    let stored = admin
        .get(Kind::ConfigMap, Some("default"), "settings")
        .await
        .unwrap();
    assert_eq!(stored["data"]["colour"], json!("blue"), "a dry run wrote");

    // A view token of shop: refused object by object, nothing written.
    let view = token(&admin, Some("shop"), "view", None).await;
    let (status, refused) = send(&plane.url, &view, "?namespace=shop", &changed).await;
    assert_eq!(status, 200, "{refused}");
    for item in refused["items"].as_array().unwrap() {
        assert_eq!(item["action"], json!("failed"), "{item}");
        assert_eq!(item["code"], json!(403), "{item}");
    }
    let keys = admin.get(Kind::Secret, Some("shop"), "keys").await.unwrap();
    assert_eq!(keys["data"]["password"], json!("aHVudGVyMg=="));

    // An edit token of shop reaching into default, by a document's
    // namespace or by the manifest's: refused, nothing written there.
    let edit = token(&admin, Some("shop"), "edit", None).await;
    let intruder = "apiVersion: skiff.dev/v1\nkind: ConfigMap\nmetadata: {name: planted, namespace: default}\ndata: {a: b}\n";
    let bare =
        "apiVersion: skiff.dev/v1\nkind: ConfigMap\nmetadata: {name: planted}\ndata: {a: b}\n";
    for (query, manifest) in [("?namespace=shop", intruder), ("?namespace=default", bare)] {
        let (status, answer) = send(&plane.url, &edit, query, manifest).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            actions(&answer),
            [pair("failed", "default/planted")],
            "{answer}"
        );
        assert_eq!(answer["items"][0]["code"], json!(403), "{answer}");
    }
    assert!(
        admin
            .get(Kind::ConfigMap, Some("default"), "planted")
            .await
            .is_err()
    );
    // In its own namespace the same token applies.
    let (_, own) = send(&plane.url, &edit, "?namespace=shop", bare).await;
    assert_eq!(actions(&own), [pair("created", "shop/planted")], "{own}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_tells_a_token_what_it_is_and_tells_nothing_without_one() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin = client(&plane, &cluster.admin_token);
    let url = format!("{}/apis/skiff.dev/v1/whoami", plane.url);
    let ask = |token: Option<String>| {
        let mut request = http_client().get(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.expect("the server answers");
            let nosniff = response.headers().get("x-content-type-options").cloned();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body, nosniff)
        }
    };
    let (status, body, nosniff) = ask(Some(cluster.admin_token.clone())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["clusterAdmin"], json!(true));
    assert_eq!(
        nosniff.as_ref().map(|v| v.to_str().unwrap()),
        Some("nosniff")
    );
    let view = token(&admin, Some("default"), "view", None).await;
    let (_, body, _) = ask(Some(view)).await;
    assert_eq!(body["clusterAdmin"], json!(false));
    assert_eq!(body["namespaces"], json!({"default": "view"}));
    // No token, a made-up one: 401 and nothing about anyone, still nosniff.
    for token in [None, Some("skf_made-up".to_owned())] {
        let (status, body, nosniff) = ask(token).await;
        assert_eq!(status, 401, "{body}");
        assert!(body.get("namespaces").is_none(), "{body}");
        assert!(nosniff.is_some());
    }
    // Read only.
    let response = http_client()
        .post(&url)
        .bearer_auth(&cluster.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_document_refuses_the_whole_manifest_and_applies_nothing() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin = client(&plane, &cluster.admin_token);
    let good = "apiVersion: skiff.dev/v1\nkind: ConfigMap\nmetadata: {name: first}\ndata: {a: b}\n";
    for (second, expected) in [
        ("kind: [unclosed", "manifest document 2: "),
        (
            "apiVersion: skiff.dev/v1\nkind: Gadget\nmetadata: {name: g}",
            "manifest document 2: kind `Gadget` is not known",
        ),
        (
            "apiVersion: skiff.dev/v1\nkind: ConfigMap\nmetadata: {name: second}\ndata: {a: *nowhere}",
            "manifest document 2: ",
        ),
    ] {
        let manifest = format!("{good}---\n{second}\n");
        let (status, answer) = send(&plane.url, &cluster.admin_token, "", &manifest).await;
        assert_eq!(status, 400, "{second}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(expected), "{second}: {message}");
        assert!(
            admin
                .get(Kind::ConfigMap, Some("default"), "first")
                .await
                .is_err(),
            "{second}: the good document was applied"
        );
    }
    // YAML only where a manifest is taken.
    let response = http_client()
        .post(format!(
            "{}/apis/skiff.dev/v1/namespaces/default/configmaps",
            plane.url
        ))
        .bearer_auth(&cluster.admin_token)
        .header("content-type", "application/yaml")
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    // Without a token, nothing.
    let response = http_client()
        .post(format!("{}/apis/skiff.dev/v1/manifests", plane.url))
        .header("content-type", "application/yaml")
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}
