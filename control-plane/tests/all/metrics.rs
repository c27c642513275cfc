//! `GET /metrics`: read only with a cluster admin's token or a `metrics`
//! token (which reads nothing else), and counting the API's requests.

use crate::auth::token;
use crate::support::{Cluster, client, http_client, object};
use skiff_api::Kind;
use skiff_client::ListOptions;

/// The value of the sample `line_start` (name and labels, exactly as
/// exposed), or 0 when absent.
fn sample(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(line_start)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().expect("a sample value"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_read_with_a_metrics_token_and_count_api_requests() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin = client(&plane, &cluster.admin_token);
    let reader = token(&admin, None, "metrics", None).await;
    let tenant_admin = token(&admin, Some("default"), "admin", None).await;
    let http = http_client();
    let url = format!("{}/metrics", plane.url);
    let scrape = |token: Option<&str>| {
        let mut request = http.get(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    assert_eq!(scrape(None).await.unwrap().status(), 401);
    let refused = scrape(Some(&tenant_admin)).await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(
        refused.text().await.unwrap().contains("--metrics"),
        "the refusal says which token reads the metrics"
    );
    // A tenant cannot mint one: `metrics` is no namespace role.
    let minted = client(&plane, &tenant_admin)
        .create_token(
            Some("default"),
            &skiff_api::tokens::TokenRequest {
                role: "metrics".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(minted.code(), Some(422), "{minted}");
    // And the metrics token reads nothing else.
    let denied = client(&plane, &reader)
        .list(Kind::Pod, Some("default"), &ListOptions::default())
        .await;
    assert!(denied.is_err(), "a metrics token listed pods");

    let counted = r#"skiff_api_requests_total{verb="list",kind="configmaps",code="200"}"#;
    let before = scrape(Some(&reader)).await.unwrap();
    assert_eq!(before.status(), 200);
    assert_eq!(
        before.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let before = sample(&before.text().await.unwrap(), counted);
    for _ in 0..3 {
        admin
            .list(Kind::ConfigMap, Some("default"), &ListOptions::default())
            .await
            .unwrap();
    }
    admin
        .create(
            Kind::ConfigMap,
            Some("default"),
            &object(Kind::ConfigMap, "counted"),
        )
        .await
        .unwrap();
    let after = scrape(Some(&cluster.admin_token))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(sample(&after, counted), before + 3.0, "{after}");
    assert!(
        sample(&after, "skiff_store_write_batch_size_count") >= 1.0,
        "the token writes went through the writer:\n{after}"
    );
    assert!(after.contains("# TYPE skiff_api_request_duration_seconds histogram"));
}
