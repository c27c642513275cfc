//! Hostile or careless input: NUL bytes, numbers out of range, lists and
//! watches that would hold too much, made-up tokens. Each gets a 4xx that
//! names what was wrong, and costs the server (and its database) little.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_api::tokens::TokenRequest;

use crate::support::{Cluster, client, object};

/// Sends a request and returns its status code, Status message and
/// `Retry-After` header.
async fn send(request: reqwest::RequestBuilder) -> (u16, String, Option<String>) {
    let response = request.send().await.expect("the server answers");
    let code = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let message = body["message"].as_str().unwrap_or_default().to_owned();
    (code, message, retry_after)
}

fn config_maps(url: &str) -> String {
    format!("{url}/apis/skiff.dev/v1/namespaces/default/configmaps")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes_are_refused_by_field_while_good_writes_beside_them_succeed() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let http = crate::support::http_client();
    let url = config_maps(&plane.url);

    let mut in_value = object(Kind::ConfigMap, "in-value");
    in_value["data"] = json!({"key": "a\u{0}b"});
    let mut in_key = object(Kind::ConfigMap, "in-key");
    in_key["data"] = json!({"k\u{0}": "v"});
    let mut in_annotation = object(Kind::ConfigMap, "in-annotation");
    in_annotation["metadata"]["annotations"] = json!({"note": "\u{0}"});
    let mut in_name = object(Kind::ConfigMap, "x");
    in_name["metadata"]["name"] = json!("x\u{0}");
    let bad = [
        (
            in_value,
            "data.key: contains a NUL byte, which cannot be stored",
        ),
        (
            in_key,
            "data.k\\u{0}: contains a NUL byte, which cannot be stored",
        ),
        (
            in_annotation,
            "metadata.annotations.note: contains a NUL byte, which cannot be stored",
        ),
        (
            in_name,
            "metadata.name: contains a NUL byte, which cannot be stored",
        ),
    ];
    // Bad and good writes at the same moment, several rounds, so that
    // they share the writer's batches.
    for round in 0..5 {
        let mut writes = tokio::task::JoinSet::new();
        for (body, _) in &bad {
            let request = http.post(&url).bearer_auth(&cluster.admin_token).json(body);
            writes.spawn(async move { (true, send(request).await) });
        }
        for i in 0..4 {
            let request = http
                .post(&url)
                .bearer_auth(&cluster.admin_token)
                .json(&object(Kind::ConfigMap, &format!("good-{round}-{i}")));
            writes.spawn(async move { (false, send(request).await) });
        }
        let mut refused = Vec::new();
        while let Some(result) = writes.join_next().await {
            let (is_bad, (code, message, _)) = result.unwrap();
            if is_bad {
                assert_eq!(code, 422, "{message}");
                refused.push(message);
            } else {
                assert_eq!(code, 201, "a good write beside bad ones: {message}");
            }
        }
        refused.sort();
        let mut want: Vec<String> = bad.iter().map(|(_, m)| (*m).to_owned()).collect();
        want.sort();
        assert_eq!(refused, want);
    }
    // A merge patch and a token description are refused the same way.
    let api = client(&plane, &cluster.admin_token);
    let (code, message, _) = send(
        http.patch(format!("{url}/good-0-0"))
            .bearer_auth(&cluster.admin_token)
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"metadata": {"labels": {"app": "a\u0000"}}}"#),
    )
    .await;
    assert_eq!(
        (code, message.as_str()),
        (
            422,
            "metadata.labels.app: contains a NUL byte, which cannot be stored"
        )
    );
    let (code, message, _) = send(
        http.post(format!("{}/apis/skiff.dev/v1/tokens", plane.url))
            .bearer_auth(&cluster.admin_token)
            .json(&json!({"role": "cluster-admin", "description": "x\u{0}"})),
    )
    .await;
    assert_eq!(
        (code, message.as_str()),
        (
            422,
            "description: contains a NUL byte, which cannot be stored"
        )
    );
    let stored = api
        .list_all(Kind::ConfigMap, Some("default"), &Default::default())
        .await
        .unwrap();
    assert_eq!(stored.items.len(), 20, "every good write, no bad one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_parameters_out_of_range_are_400_naming_the_parameter() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let http = crate::support::http_client();
    let pods = format!("{}/apis/skiff.dev/v1/namespaces/default/pods", plane.url);
    let cases: &[(&str, &str)] = &[
        ("limit=9223372036854775807", "limit: "),
        ("limit=-1", "limit: "),
        ("limit=0", "limit: "),
        ("limit=ten", "limit: "),
        ("limit=5001", "limit: "),
        ("watch=true&timeoutSeconds=0", "timeoutSeconds: "),
        ("watch=true&timeoutSeconds=-5", "timeoutSeconds: "),
        ("watch=true&timeoutSeconds=1e3", "timeoutSeconds: "),
        (
            "watch=true&timeoutSeconds=18446744073709551616",
            "timeoutSeconds: ",
        ),
        ("watch=true&resourceVersion=-1", "resourceVersion: "),
        (
            "watch=true&resourceVersion=99999999999999999999",
            "resourceVersion: ",
        ),
        ("labelSelector=app%20in%20(a", "labelSelector: "),
        ("labelSelector=Bad%20Key%3Dx", "labelSelector: "),
        ("fieldSelector=spec.image%3Dx", "fieldSelector: "),
        ("fieldSelector=metadata.name%3Dx%00y", "fieldSelector: "),
        ("continue=garbage", "continue: "),
    ];
    // Thousands of requirements would each become a bound parameter.
    let many_terms = format!("labelSelector={}", vec!["a"; 3000].join(","));
    let many_values = format!("labelSelector=k%20in%20({})", vec!["v"; 3000].join(","));
    let cases: Vec<(&str, &str)> = cases
        .iter()
        .copied()
        .chain([
            (many_terms.as_str(), "labelSelector: "),
            (many_values.as_str(), "labelSelector: "),
        ])
        .collect();
    for (query, prefix) in &cases {
        let (code, message, _) = send(
            http.get(format!("{pods}?{query}"))
                .bearer_auth(&cluster.admin_token),
        )
        .await;
        assert_eq!(code, 400, "{query}: {message}");
        assert!(message.starts_with(prefix), "{query}: {message}");
    }
    // A continue token naming a position with a NUL in it is no token
    // this server issued.
    let forged = base64_url(br#"{"r":1,"n":"a\u0000","k":"b"}"#);
    let (code, message, _) = send(
        http.get(format!("{pods}?continue={forged}"))
            .bearer_auth(&cluster.admin_token),
    )
    .await;
    assert_eq!(
        (code, message.starts_with("continue: ")),
        (400, true),
        "{message}"
    );
    // The edges of the ranges are accepted.
    for query in ["limit=1", "limit=5000", "watch=true&timeoutSeconds=1"] {
        let response = http
            .get(format!("{pods}?{query}"))
            .bearer_auth(&cluster.admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{query}");
    }
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_come_in_pages_by_default_and_the_client_follows_them() {
    const OBJECTS: usize = 520;
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let api = client(&plane, &cluster.admin_token);
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..OBJECTS {
        let api = api.clone();
        creates.spawn(async move {
            api.create(
                Kind::ConfigMap,
                Some("default"),
                &object(Kind::ConfigMap, &format!("cm-{i:04}")),
            )
            .await
            .unwrap();
        });
        if creates.len() >= 16 {
            creates.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(done) = creates.join_next().await {
        done.unwrap();
    }
    let http = crate::support::http_client();
    let first: Value = http
        .get(config_maps(&plane.url))
        .bearer_auth(&cluster.admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        first["items"].as_array().unwrap().len(),
        500,
        "a list without limit is one page"
    );
    assert!(first["metadata"]["continue"].is_string());
    let all = api
        .list_all(Kind::ConfigMap, Some("default"), &Default::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), OBJECTS);
    let mut names: Vec<&str> = all
        .items
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    names.dedup();
    assert_eq!(names.len(), OBJECTS, "no object twice");
}

/// A page holds about 4 MiB of objects, whatever its limit: a list of
/// large objects comes in several short pages (so one request cannot make
/// the server hold 500 objects of 1 MiB), and clients that follow
/// `continue`, as they must for any page, still see every object once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_of_large_objects_come_in_pages_of_a_few_mib() {
    use futures::StreamExt;
    const LARGE: usize = 12;
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let api = client(&plane, &cluster.admin_token);
    // Twelve objects of 700 KiB (about 8 MiB) between small ones.
    for i in 0..LARGE {
        let mut big = object(Kind::ConfigMap, &format!("big-{i:02}"));
        big["data"] = json!({"blob": "x".repeat(700 << 10)});
        api.create(Kind::ConfigMap, Some("default"), &big)
            .await
            .unwrap();
        api.create(
            Kind::ConfigMap,
            Some("default"),
            &object(Kind::ConfigMap, &format!("big-{i:02}-small")),
        )
        .await
        .unwrap();
    }
    let http = crate::support::http_client();
    let first: Value = http
        .get(format!("{}?limit=100", config_maps(&plane.url)))
        .bearer_auth(&cluster.admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = first["items"].as_array().unwrap();
    let bytes: usize = items.iter().map(|i| i.to_string().len()).sum();
    assert!(
        !items.is_empty() && bytes < 6 << 20,
        "a page of {} objects holds {bytes} bytes",
        items.len()
    );
    assert!(
        first["metadata"]["continue"].is_string(),
        "with more to come"
    );
    let all = api
        .list_all(Kind::ConfigMap, Some("default"), &Default::default())
        .await
        .unwrap();
    let names: Vec<&str> = all
        .items
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    let mut want: Vec<String> = (0..LARGE)
        .flat_map(|i| [format!("big-{i:02}"), format!("big-{i:02}-small")])
        .collect();
    want.sort();
    assert_eq!(names, want, "every object once, in order");
    // A watch from now starts with the current objects, read the same way.
    let mut events = Box::pin(
        api.watch(Kind::ConfigMap, Some("default"), &Default::default())
            .await
            .unwrap(),
    );
    let mut added = Vec::new();
    while added.len() < want.len() {
        let event = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("events keep coming")
            .expect("the watch stays open")
            .unwrap();
        assert_eq!(event.event_type, skiff_api::EventType::Added);
        added.push(
            event.object["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(added, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_holds_only_so_many_watches_and_others_are_unaffected() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&["--max-watches-per-client", "3"]);
    let admin = client(&plane, &cluster.admin_token);
    let other = admin
        .create_token(
            Some("default"),
            &TokenRequest {
                role: "view".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .token
        .unwrap();
    let http = crate::support::http_client();
    let watch = |token: &str| {
        http.get(format!("{}?watch=true", config_maps(&plane.url)))
            .bearer_auth(token)
            .send()
    };
    let mut open = Vec::new();
    for _ in 0..3 {
        let response = watch(&cluster.admin_token).await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        open.push(response);
    }
    let (code, message, retry_after) = send(
        http.get(format!("{}?watch=true", config_maps(&plane.url)))
            .bearer_auth(&cluster.admin_token),
    )
    .await;
    assert_eq!(code, 429, "{message}");
    assert!(
        message.contains("this token has 3 watches open"),
        "{message}"
    );
    assert!(retry_after.is_some());
    // Lists are not watches, and another token has its own allowance.
    admin
        .list(Kind::ConfigMap, Some("default"), &Default::default())
        .await
        .unwrap();
    let other_watch = watch(&other).await.unwrap();
    assert_eq!(other_watch.status().as_u16(), 200);
    // A watch the client hangs up on is no longer counted.
    drop(open.pop());
    crate::support::eventually(
        "a closed watch to free its place",
        || {
            let request = http
                .get(format!("{}?watch=true", config_maps(&plane.url)))
                .bearer_auth(&cluster.admin_token);
            async move { request.send().await.unwrap().status().as_u16() }
        },
        |code| *code == 200,
    )
    .await;
    drop(other_watch);
}

/// A client whose requests come from `address` (on loopback).
fn http_from(address: Ipv4Addr) -> reqwest::Client {
    crate::support::http_client_builder()
        .local_address(IpAddr::V4(address))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_tokens_are_throttled_per_client_address() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let namespaces = format!("{}/apis/skiff.dev/v1/namespaces", plane.url);
    let guesser = http_from(Ipv4Addr::new(127, 0, 0, 1));
    let mut codes = Vec::new();
    let mut retry_after = None;
    for i in 0..40 {
        let (code, _, after) = send(
            guesser
                .get(&namespaces)
                .bearer_auth(format!("skf_made-up-{i}")),
        )
        .await;
        codes.push(code);
        retry_after = retry_after.or(after.filter(|_| code == 429));
    }
    let unauthorized = codes.iter().filter(|c| **c == 401).count();
    let throttled = codes.iter().filter(|c| **c == 429).count();
    assert_eq!(unauthorized + throttled, 40, "{codes:?}");
    assert!(
        (20..=25).contains(&unauthorized),
        "the burst, and little more, is looked up: {codes:?}"
    );
    assert!(
        retry_after
            .as_deref()
            .is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)),
        "{retry_after:?}"
    );
    // Another address is judged on its own.
    let neighbour = http_from(Ipv4Addr::new(127, 0, 0, 2));
    let (code, _, _) = send(neighbour.get(&namespaces).bearer_auth("skf_made-up-x")).await;
    assert_eq!(code, 401);
    let (code, message, _) =
        send(neighbour.get(&namespaces).bearer_auth(&cluster.admin_token)).await;
    assert_eq!(code, 200, "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tokens_cost_the_database_one_lookup_each_and_no_more() {
    use control_plane::auth::{Authenticator, FAILED_AUTH_BURST};
    let cluster = Cluster::new();
    let store = control_plane::server::open_store(
        &cluster.database_url,
        &Default::default(),
        Duration::from_secs(30),
        &testkit::encryption_key_file(&cluster.database_url),
    )
    .await
    .unwrap();
    let auth = Authenticator::new(store, Duration::from_secs(60));
    // The same unknown token, again and again: looked up once.
    for _ in 0..50 {
        assert_eq!(auth.principal("skf_unknown", None).await.unwrap(), None);
    }
    assert_eq!(auth.database_lookups(), 1);
    // Ever new made-up tokens from one address: the burst is looked up,
    // the rest refused without a lookup.
    let client = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
    let started = Instant::now();
    let mut throttled = 0;
    for i in 0..200 {
        match auth.principal(&format!("skf_guess-{i}"), client).await {
            Ok(None) => {}
            Err(control_plane::auth::AuthError::Throttled { .. }) => throttled += 1,
            other => panic!("{other:?}"),
        }
    }
    let lookups = auth.database_lookups() - 1;
    // The bucket refills at one a second while the loop runs.
    let allowed = FAILED_AUTH_BURST as u64 + started.elapsed().as_secs() + 1;
    assert!(
        lookups <= allowed,
        "{lookups} lookups, at most {allowed} expected"
    );
    assert_eq!(lookups + throttled, 200);
    // A known token from that address still works from the cache.
    let admin = auth.principal(&cluster.admin_token, None).await.unwrap();
    assert!(admin.is_some());
    assert!(
        auth.principal(&cluster.admin_token, client)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_an_old_revision_streams_large_changes_page_by_page() {
    use futures::StreamExt;
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let api = client(&plane, &cluster.admin_token);
    let start = api
        .list(Kind::ConfigMap, Some("default"), &Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version;
    // Twelve objects of 700 KiB: more than one page of the change log.
    for i in 0..12 {
        let mut big = object(Kind::ConfigMap, &format!("big-{i:02}"));
        big["data"] = json!({"blob": "x".repeat(700 << 10)});
        api.create(Kind::ConfigMap, Some("default"), &big)
            .await
            .unwrap();
    }
    let mut events = Box::pin(
        api.watch(
            Kind::ConfigMap,
            Some("default"),
            &skiff_client::WatchOptions {
                resource_version: Some(start),
                ..Default::default()
            },
        )
        .await
        .unwrap(),
    );
    let mut seen = Vec::new();
    while seen.len() < 12 {
        let event = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("events keep coming")
            .expect("the watch stays open")
            .unwrap();
        if event.event_type == skiff_api::EventType::Added {
            seen.push(
                event.object["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    let want: Vec<String> = (0..12).map(|i| format!("big-{i:02}")).collect();
    assert_eq!(seen, want, "every change, once, in order");
}

/// The hub passes large changes on by revision only (its buffer would
/// otherwise keep up to thousands of them whole): a live watch still gets
/// every change, large and small, once and in order, and a watch of
/// another kind is not disturbed by them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_watches_get_large_changes_in_order_through_the_database() {
    use futures::StreamExt;
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let api = client(&plane, &cluster.admin_token);
    let mut config_maps = Box::pin(
        api.watch(Kind::ConfigMap, Some("default"), &Default::default())
            .await
            .unwrap(),
    );
    let mut secrets = Box::pin(
        api.watch(Kind::Secret, Some("default"), &Default::default())
            .await
            .unwrap(),
    );
    let names: Vec<String> = (0..10).map(|i| format!("mixed-{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        let mut object = object(Kind::ConfigMap, name);
        // Every other one far above what the hub buffers whole.
        let size = if i % 2 == 0 { 10 } else { 300 << 10 };
        object["data"] = json!({"blob": "x".repeat(size)});
        api.create(Kind::ConfigMap, Some("default"), &object)
            .await
            .unwrap();
    }
    let mut secret = object(Kind::Secret, "after-the-flood");
    secret["data"] = json!({"k": "dg=="});
    api.create(Kind::Secret, Some("default"), &secret)
        .await
        .unwrap();

    let mut seen = Vec::new();
    while seen.len() < names.len() {
        let event = tokio::time::timeout(Duration::from_secs(20), config_maps.next())
            .await
            .expect("events keep coming")
            .expect("the watch stays open")
            .unwrap();
        if event.event_type == skiff_api::EventType::Added {
            let name = event.object["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_owned();
            let blob = event.object["data"]["blob"].as_str().map_or(0, str::len);
            seen.push((name, blob));
        }
    }
    let want: Vec<(String, usize)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), if i % 2 == 0 { 10 } else { 300 << 10 }))
        .collect();
    assert_eq!(seen, want, "every change, whole, once, in order");

    let event = tokio::time::timeout(Duration::from_secs(20), secrets.next())
        .await
        .expect("the Secret's event comes")
        .expect("the watch stays open")
        .unwrap();
    assert_eq!(event.object["metadata"]["name"], "after-the-flood");
}

/// Made-up tokens sent all at once (as 40 HTTP/2 connections of 256
/// streams would): each is charged to its address before it is looked
/// up, so the burst, and no more, reaches the database, while a token
/// found valid before is looked up and works throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_made_up_tokens_cost_the_burst_and_a_valid_token_keeps_working() {
    use control_plane::auth::{AuthError, Authenticator, FAILED_AUTH_BURST};
    let cluster = Cluster::new();
    let store = control_plane::server::open_store(
        &cluster.database_url,
        &Default::default(),
        Duration::from_secs(30),
        &testkit::encryption_key_file(&cluster.database_url),
    )
    .await
    .unwrap();
    // Nothing is cached: every request of the valid token is looked up.
    let auth = std::sync::Arc::new(Authenticator::new(store, Duration::ZERO));
    let client = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)));
    assert!(
        auth.principal(&cluster.admin_token, client)
            .await
            .unwrap()
            .is_some()
    );
    let started = Instant::now();
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..500 {
        let auth = auth.clone();
        guesses.spawn(async move { auth.principal(&format!("skf_guess-{i}"), client).await });
    }
    let valid = {
        let auth = auth.clone();
        let token = cluster.admin_token.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..50 {
                answers.push(auth.principal(&token, client).await.map(|p| p.is_some()));
                tokio::task::yield_now().await;
            }
            answers
        })
    };
    let (mut unknown, mut refused) = (0, 0);
    while let Some(result) = guesses.join_next().await {
        match result.unwrap() {
            Ok(None) => unknown += 1,
            Err(AuthError::Throttled { .. } | AuthError::Busy) => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    let answers = valid.await.unwrap();
    assert!(
        answers.iter().all(|a| matches!(a, Ok(true))),
        "the valid token works throughout: {answers:?}"
    );
    let allowed = FAILED_AUTH_BURST as u64 + started.elapsed().as_secs() + 1;
    assert!(
        unknown <= allowed,
        "{unknown} made-up tokens looked up, at most {allowed} expected"
    );
    assert_eq!(unknown + refused, 500);
    let lookups = auth.database_lookups();
    assert_eq!(lookups, 1 + 50 + unknown, "one lookup per answer, no more");
}

/// Pods on the host network share their node's address: one sending made-
/// up tokens must not lock the node's own token out once the cache has
/// forgotten it (its lease renewals would fail, and the node go NotReady).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_made_up_tokens_does_not_lock_out_a_valid_token_from_that_address() {
    control_plane::tls::install_crypto_provider();
    let cluster = Cluster::new();
    let plane = cluster.serve(&["--token-cache-ttl", "1ms"]);
    let namespaces = format!("{}/apis/skiff.dev/v1/namespaces", plane.url);
    let shared = http_from(Ipv4Addr::new(127, 0, 0, 3));
    let (code, message, _) = send(shared.get(&namespaces).bearer_auth(&cluster.admin_token)).await;
    assert_eq!(code, 200, "{message}");
    let mut throttled = 0;
    for i in 0..40 {
        let (code, _, _) = send(shared.get(&namespaces).bearer_auth(format!("skf_bad-{i}"))).await;
        assert!(code == 401 || code == 429, "{code}");
        throttled += usize::from(code == 429);
        // The valid token, between the made-up ones, looked up each time.
        let (code, message, _) =
            send(shared.get(&namespaces).bearer_auth(&cluster.admin_token)).await;
        assert_eq!(code, 200, "after {i} made-up tokens: {message}");
    }
    assert!(throttled > 0, "the address itself is throttled");
}

/// `/readyz` needs no token: a flood of it shares one database check a
/// second rather than taking the pool's connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_readiness_checks_costs_the_database_a_check_a_second() {
    use std::sync::Arc;
    control_plane::tls::install_crypto_provider();
    let cluster = Cluster::new();
    let store = control_plane::server::open_store(
        &cluster.database_url,
        &Default::default(),
        Duration::from_secs(30),
        &testkit::encryption_key_file(&cluster.database_url),
    )
    .await
    .unwrap();
    let state = control_plane::api::AppState {
        auth: Arc::new(control_plane::auth::Authenticator::new(
            store.clone(),
            Duration::from_secs(10),
        )),
        hub: control_plane::watch::WatchHub::start(store.clone()),
        store: store.clone(),
        config: Default::default(),
        nodes: Default::default(),
        activations: Arc::new(control_plane::controllers::autoscaler::Activations::new(
            &store,
            Default::default(),
        )),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/readyz", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, control_plane::api::router(state))
            .await
            .unwrap()
    });
    let http = crate::support::http_client();
    let before = store.pings();
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..500 {
        let request = http.get(&url).send();
        calls.spawn(async move { request.await.unwrap().status().as_u16() });
    }
    while let Some(code) = calls.join_next().await {
        assert_eq!(code.unwrap(), 200);
    }
    let pings = store.pings() - before;
    let allowed = 2.max(started.elapsed().as_secs() + 1);
    assert!(
        pings <= allowed,
        "{pings} database checks for 500 calls, at most {allowed} expected"
    );
}
