//! The tenancy matrix at the API: two tenants (`a`, `b`, each with an
//! `edit` token) and a node token try to step outside what they were
//! given; each attempt must be refused with the expected status and a
//! message naming the field, and each rule has its positive case (a cluster
//! admin relaxes the namespace's policy and the same request is admitted).

use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_api::meta::DeleteOptions;
use skiff_api::tokens::TokenRequest;
use skiff_client::{Client, ClientError};
use testkit::ControlPlane;

use crate::support::{Cluster, client, object};

/// The status code of an answer (200 for any success) and its message.
fn outcome<T>(answer: &Result<T, ClientError>) -> (u16, String) {
    match answer {
        Ok(_) => (200, String::new()),
        Err(e) => (e.code().unwrap_or(0), e.to_string()),
    }
}

#[track_caller]
fn refused<T>(answer: Result<T, ClientError>, code: u16, needles: &[&str]) {
    let (got, message) = outcome(&answer);
    assert_eq!(got, code, "{message}");
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
}

#[track_caller]
fn admitted<T>(answer: Result<T, ClientError>) -> T {
    match answer {
        Ok(value) => value,
        Err(e) => panic!("refused: {e}"),
    }
}

struct Tenants {
    plane: ControlPlane,
    admin: Client,
    a: Client,
    b: Client,
}

async fn tenant_token(admin: &Client, namespace: &str, role: &str) -> String {
    let request = TokenRequest {
        role: role.into(),
        ..Default::default()
    };
    let info = admin.create_token(Some(namespace), &request).await.unwrap();
    info.token.unwrap()
}

/// Namespaces `a` and `b` with the default (closed) policy and an edit
/// token each.
async fn tenants(cluster: &Cluster) -> Tenants {
    let plane = cluster.serve(&["--token-cache-ttl", "0s"]);
    let admin = client(&plane, &cluster.admin_token);
    for ns in ["a", "b"] {
        admin
            .create(Kind::Namespace, None, &object(Kind::Namespace, ns))
            .await
            .unwrap();
    }
    let a = client(&plane, &tenant_token(&admin, "a", "edit").await);
    let b = client(&plane, &tenant_token(&admin, "b", "edit").await);
    Tenants { plane, admin, a, b }
}

fn pod(name: &str, spec: Value) -> Value {
    let mut pod = object(Kind::Pod, name);
    for (key, value) in spec.as_object().unwrap() {
        pod["spec"][key] = value.clone();
    }
    pod
}

async fn set_policy(admin: &Client, namespace: &str, policy: Value) {
    admin
        .patch(
            Kind::Namespace,
            None,
            namespace,
            &json!({"spec": {"policy": policy}}),
            false,
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_security_levels_and_ceilings_hold_until_an_admin_relaxes_them() {
    let cluster = Cluster::new();
    let t = tenants(&cluster).await;
    let a = Some("a");
    let host_root =
        json!({"volumes": [{"name": "root", "mountPath": "/host", "hostPath": {"path": "/"}}]});

    // A new namespace is Restricted: no host paths, no Linux pods.
    refused(
        t.a.create(Kind::Pod, a, &pod("root", host_root.clone()))
            .await,
        403,
        &["spec.volumes[0].hostPath", "namespace a", "Restricted"],
    );
    refused(
        t.a.create(Kind::Pod, a, &pod("linux", json!({"runtime": "Linux"})))
            .await,
        403,
        &["spec.runtime", "Linux pods share the node's network"],
    );
    // Nor through a Deployment's template, nor by a cluster admin: the
    // level is the namespace's pods', whoever writes them.
    let mut deployment = object(Kind::Deployment, "web");
    deployment["spec"]["template"]["spec"]["volumes"] = host_root["volumes"].clone();
    refused(
        t.a.create(Kind::Deployment, a, &deployment).await,
        403,
        &["spec.template.spec.volumes[0].hostPath"],
    );
    refused(
        t.admin
            .create(Kind::Pod, a, &pod("root", host_root.clone()))
            .await,
        403,
        &["spec.volumes[0].hostPath"],
    );
    // A Restricted pod that names no runtime is a component.
    let plain = admitted(t.a.create(Kind::Pod, a, &pod("plain", json!({}))).await);
    assert_eq!(plain["spec"]["runtime"], "Wasm");

    // Baseline: Linux pods, but never root, no added capabilities, still
    // no host paths.
    set_policy(&t.admin, "a", json!({"podSecurity": "Baseline"})).await;
    let linux = admitted(
        t.a.create(Kind::Pod, a, &pod("linux", json!({"runtime": "Linux"})))
            .await,
    );
    assert_eq!(linux["spec"]["securityContext"]["runAsNonRoot"], true);
    for (name, context, field) in [
        ("uid0", json!({"runAsUser": 0}), "runAsUser"),
        ("gid0", json!({"runAsGroup": 0}), "runAsGroup"),
        ("root-ok", json!({"runAsNonRoot": false}), "runAsNonRoot"),
        (
            "caps",
            json!({"addCapabilities": ["NET_ADMIN"]}),
            "addCapabilities",
        ),
    ] {
        refused(
            t.a.create(
                Kind::Pod,
                a,
                &pod(
                    name,
                    json!({"runtime": "Linux", "securityContext": context}),
                ),
            )
            .await,
            403,
            &[&format!("spec.securityContext.{field}"), "Baseline"],
        );
    }
    refused(
        t.a.create(Kind::Pod, a, &pod("root", host_root.clone()))
            .await,
        403,
        &["spec.volumes[0].hostPath"],
    );

    // Privileged: all of it.
    set_policy(&t.admin, "a", json!({"podSecurity": "Privileged"})).await;
    admitted(
        t.a.create(Kind::Pod, a, &pod("root", host_root.clone()))
            .await,
    );
    admitted(
        t.a.create(
            Kind::Pod,
            a,
            &pod(
                "uid0",
                json!({"runtime": "Linux", "securityContext": {"runAsUser": 0, "addCapabilities": ["NET_ADMIN"]}}),
            ),
        )
        .await,
    );
    admitted(t.a.create(Kind::Deployment, a, &deployment).await);
    // Namespace b is untouched by a's policy.
    refused(
        t.b.create(Kind::Pod, Some("b"), &pod("root", host_root))
            .await,
        403,
        &["namespace b"],
    );

    // Priority: 0 unless granted.
    refused(
        t.b.create(
            Kind::Pod,
            Some("b"),
            &pod("urgent", json!({"priority": 2147483647})),
        )
        .await,
        403,
        &["spec.priority", "2147483647", "ceiling of 0"],
    );
    set_policy(&t.admin, "b", json!({"maxPriority": 100})).await;
    admitted(
        t.b.create(
            Kind::Pod,
            Some("b"),
            &pod("urgent", json!({"priority": 100})),
        )
        .await,
    );
    refused(
        t.b.create(Kind::Pod, Some("b"), &pod("more", json!({"priority": 101})))
            .await,
        403,
        &["spec.priority"],
    );
    // A tenant's admin cannot raise its own ceiling: the Namespace is the
    // cluster admin's.
    let owner = client(&t.plane, &tenant_token(&t.admin, "b", "admin").await);
    refused(
        owner
            .patch(
                Kind::Namespace,
                None,
                "b",
                &json!({"spec": {"policy": {"maxPriority": 2147483647, "podSecurity": "Privileged"}}}),
                false,
            )
            .await,
        403,
        &[],
    );
    // And a bad policy is refused with its field.
    refused(
        t.admin
            .patch(
                Kind::Namespace,
                None,
                "b",
                &json!({"spec": {"policy": {"egress": ["ftp://x"], "routeHosts": ["bad host"]}}}),
                false,
            )
            .await,
        422,
        &["spec.policy.egress[0]", "spec.policy.routeHosts[0]"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_stays_inside_the_ceiling_and_private_addresses_need_naming() {
    let cluster = Cluster::new();
    let t = tenants(&cluster).await;
    let a = Some("a");
    let with = |name: &str, rules: &[&str]| pod(name, json!({ "allowOutbound": rules }));
    // The default ceiling is any public host.
    admitted(
        t.a.create(Kind::Pod, a, &with("public", &["api.example.com", "*"]))
            .await,
    );
    // Loopback, link-local, private and the names of loopback are outside
    // it, however they are spelled.
    for (i, rule) in [
        "127.0.0.1:8080",
        "http://127.0.0.1",
        "[::1]:8080",
        "[::ffff:127.0.0.1]:8080",
        "169.254.169.254",
        "10.0.0.1",
        "192.168.1.1:80",
        "localhost:8080",
        "api.localhost",
    ]
    .into_iter()
    .enumerate()
    {
        refused(
            t.a.create(Kind::Pod, a, &with(&format!("p{i}"), &[rule]))
                .await,
            422,
            &["spec.allowOutbound[0]", rule, "egress ceiling"],
        );
    }
    // A Deployment's template too.
    let mut deployment = object(Kind::Deployment, "web");
    deployment["spec"]["template"]["spec"]["allowOutbound"] = json!(["127.0.0.1:8080"]);
    refused(
        t.a.create(Kind::Deployment, a, &deployment).await,
        422,
        &["spec.template.spec.allowOutbound[0]"],
    );
    // Named in the ceiling, the address may be granted (on its ports).
    set_policy(
        &t.admin,
        "a",
        json!({"egress": ["*.example.com", "127.0.0.1:8080"]}),
    )
    .await;
    admitted(
        t.a.create(
            Kind::Pod,
            a,
            &with("local", &["127.0.0.1:8080", "api.example.com"]),
        )
        .await,
    );
    admitted(t.a.create(Kind::Deployment, a, &deployment).await);
    refused(
        t.a.create(Kind::Pod, a, &with("other-port", &["127.0.0.1:9090"]))
            .await,
        422,
        &["127.0.0.1:9090"],
    );
    refused(
        t.a.create(Kind::Pod, a, &with("wide", &["*"])).await,
        422,
        &["`*`"],
    );
    // b's ceiling is still the default.
    refused(
        t.b.create(Kind::Pod, Some("b"), &with("local", &["127.0.0.1:8080"]))
            .await,
        422,
        &["namespace b"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_written_by_nodes_and_controllers_and_binding_by_admins() {
    let cluster = Cluster::new();
    let t = tenants(&cluster).await;
    let a = Some("a");
    admitted(
        t.admin
            .create(Kind::Node, None, &object(Kind::Node, "n1"))
            .await,
    );
    let node = client(
        &t.plane,
        &t.admin
            .create_token(
                None,
                &TokenRequest {
                    role: "node".into(),
                    node_name: Some("n1".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .token
            .unwrap(),
    );
    admitted(t.a.create(Kind::Pod, a, &object(Kind::Pod, "web")).await);
    admitted(
        t.a.create(Kind::Service, a, &object(Kind::Service, "web"))
            .await,
    );
    admitted(
        t.a.create(Kind::Deployment, a, &object(Kind::Deployment, "api"))
            .await,
    );

    // The tenant may not write any status: not a pod's Ready, phase or
    // endpoint, not a Service's endpoints, not a Deployment's.
    let ready = json!({"status": {"phase": "Running", "endpoint": "127.0.0.1:1",
        "conditions": [{"type": "Ready", "status": "True"}]}});
    refused(t.a.patch(Kind::Pod, a, "web", &ready, true).await, 403, &[]);
    let endpoints = json!({"status": {"endpoints": [{"pod": "web", "node": "n1", "address": "169.254.169.254:80"}]}});
    refused(
        t.a.patch(Kind::Service, a, "web", &endpoints, true).await,
        403,
        &[],
    );
    refused(
        t.a.patch(
            Kind::Deployment,
            a,
            "api",
            &json!({"status": {"replicas": 5}}),
            true,
        )
        .await,
        403,
        &[],
    );
    let mut replaced = t.a.get(Kind::Pod, a, "web").await.unwrap();
    replaced["status"] = ready["status"].clone();
    admitted(t.a.replace(Kind::Pod, a, "web", &replaced).await);
    // A PUT of the main part ignores status (it is the subresource's), so
    // the stored pod is still Pending.
    let stored = t.a.get(Kind::Pod, a, "web").await.unwrap();
    assert_ne!(stored["status"]["phase"], "Running", "{stored}");

    // Binding is the scheduler's: not on create, not by a patch, not
    // through a Deployment's template.
    refused(
        t.a.create(Kind::Pod, a, &pod("pinned", json!({"nodeName": "n1"})))
            .await,
        403,
        &["spec.nodeName", "cluster admins"],
    );
    refused(
        t.a.patch(
            Kind::Pod,
            a,
            "web",
            &json!({"spec": {"nodeName": "n1"}}),
            false,
        )
        .await,
        403,
        &["spec.nodeName"],
    );
    let mut deployment = object(Kind::Deployment, "pinned");
    deployment["spec"]["template"]["spec"]["nodeName"] = json!("n1");
    refused(
        t.a.create(Kind::Deployment, a, &deployment).await,
        422,
        &["spec.template.spec.nodeName"],
    );
    // A cluster admin may bind, and then the node writes the pod's status.
    admitted(
        t.admin
            .patch(
                Kind::Pod,
                a,
                "web",
                &json!({"spec": {"nodeName": "n1"}}),
                false,
            )
            .await,
    );
    admitted(node.patch(Kind::Pod, a, "web", &ready, true).await);
    // Once bound, the tenant's own updates of the pod go on working.
    admitted(
        t.a.patch(
            Kind::Pod,
            a,
            "web",
            &json!({"metadata": {"labels": {"tier": "front"}}}),
            false,
        )
        .await,
    );

    // The node: its own lease and status, never its labels, taints or
    // cordon.
    let lease = std::time::Duration::from_secs(60);
    admitted(node.renew_lease("n1", lease).await);
    refused(node.renew_lease("n2", lease).await, 403, &[]);
    refused(t.a.renew_lease("n1", lease).await, 403, &[]);
    admitted(
        node.patch(
            Kind::Node,
            None,
            "n1",
            &json!({"status": {"capacity": {"memory": "1Gi"}}}),
            true,
        )
        .await,
    );
    for patch in [
        json!({"metadata": {"labels": {"dedicated": "payments"}}}),
        json!({"spec": {"taints": []}}),
        json!({"spec": {"unschedulable": true}}),
    ] {
        refused(
            node.patch(Kind::Node, None, "n1", &patch, false).await,
            403,
            &["nodes"],
        );
    }
    refused(
        node.create(Kind::Node, None, &object(Kind::Node, "n2"))
            .await,
        403,
        &[],
    );
    refused(
        node.patch(Kind::Node, None, "n2", &json!({"status": {}}), true)
            .await,
        403,
        &[],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_hosts_belong_to_the_first_namespace_to_claim_them() {
    let cluster = Cluster::new();
    let t = tenants(&cluster).await;
    let route = |name: &str, host: &str| {
        let mut route = object(Kind::Route, name);
        route["spec"]["host"] = json!(host);
        route
    };
    // Nothing may be claimed until granted; the catch-all never by tenants.
    refused(
        t.a.create(Kind::Route, Some("a"), &route("web", "shop.a.test"))
            .await,
        403,
        &["spec.host", "may not claim host shop.a.test", "none"],
    );
    set_policy(&t.admin, "a", json!({"routeHosts": ["*.a.test"]})).await;
    admitted(
        t.a.create(Kind::Route, Some("a"), &route("web", "shop.a.test"))
            .await,
    );
    refused(
        t.a.create(Kind::Route, Some("a"), &route("any", "")).await,
        403,
        &["catch-all", "cluster admins"],
    );
    refused(
        t.a.create(Kind::Route, Some("a"), &route("evil", "a.test.evil.com"))
            .await,
        403,
        &["a.test.evil.com"],
    );
    // Outside b's hosts: 403. Granted by mistake the same hosts, b still
    // cannot take them: the first claim holds, exact or wildcard.
    refused(
        t.b.create(Kind::Route, Some("b"), &route("steal", "shop.a.test"))
            .await,
        403,
        &["namespace b"],
    );
    set_policy(&t.admin, "b", json!({"routeHosts": ["*.a.test", "b.test"]})).await;
    for host in ["shop.a.test", "*.a.test"] {
        refused(
            t.b.create(Kind::Route, Some("b"), &route("steal", host))
                .await,
            409,
            &["overlaps host shop.a.test", "namespace a"],
        );
    }
    // Not by a dry run either, and a dry run writes nothing.
    let dry =
        t.b.create_with(Kind::Route, Some("b"), &route("steal", "shop.a.test"), true)
            .await;
    refused(dry, 409, &["namespace a"]);
    admitted(
        t.b.create_with(Kind::Route, Some("b"), &route("mine", "b.test"), true)
            .await,
    );
    refused(t.b.get(Kind::Route, Some("b"), "mine").await, 404, &[]);
    // Moving an own Route onto a claimed host is refused too.
    admitted(
        t.b.create(Kind::Route, Some("b"), &route("mine", "b.test"))
            .await,
    );
    refused(
        t.b.patch(
            Kind::Route,
            Some("b"),
            "mine",
            &json!({"spec": {"host": "shop.a.test"}}),
            false,
        )
        .await,
        409,
        &["namespace a"],
    );
    let mut moved = t.b.get(Kind::Route, Some("b"), "mine").await.unwrap();
    moved["spec"]["host"] = json!("shop.a.test");
    refused(
        t.b.replace_with(Kind::Route, Some("b"), "mine", &moved, true)
            .await,
        409,
        &["namespace a"],
    );
    // a's own second Route on its host (another path) is fine.
    let mut second = route("api", "shop.a.test");
    second["spec"]["path"] = json!("/v2");
    admitted(t.a.create(Kind::Route, Some("a"), &second).await);
    // The catch-all: a cluster admin's, and one namespace's at a time.
    admitted(
        t.admin
            .create(Kind::Route, Some("b"), &route("any", ""))
            .await,
    );
    refused(
        t.admin
            .create(Kind::Route, Some("a"), &route("any", ""))
            .await,
        409,
        &["catch-all", "namespace b"],
    );

    // Racing claims from two namespaces: exactly one wins.
    let mut racers = Vec::new();
    for i in 0..16 {
        let (client, ns) = if i % 2 == 0 {
            (&t.admin, "a")
        } else {
            (&t.admin, "b")
        };
        let body = route(&format!("race{i}"), "race.example.org");
        racers.push(async move { client.create(Kind::Route, Some(ns), &body).await });
    }
    let results = futures::future::join_all(racers).await;
    let winners: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| i % 2)
        .collect();
    assert!(!winners.is_empty());
    assert!(winners.iter().all(|w| *w == winners[0]), "{winners:?}");
    for result in &results {
        if let Err(e) = result {
            assert_eq!(e.code(), Some(409), "{e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_die_with_their_namespace_and_at_their_expiry() {
    let cluster = Cluster::new();
    let t = tenants(&cluster).await;
    let a = Some("a");
    admitted(t.a.list(Kind::Pod, a, &Default::default()).await);
    // Listed with their use, never their secret.
    let listed = t.admin.list_tokens(a).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].last_used_at.is_some(), "{listed:?}");
    assert!(listed[0].token.is_none());

    // Deleting the namespace revokes a's token for good: a namespace of
    // the same name created later does not revive it.
    admitted(t.admin.delete(Kind::Namespace, None, "a", None).await);
    refused(t.a.list(Kind::Pod, a, &Default::default()).await, 401, &[]);
    admitted(
        t.admin
            .create(Kind::Namespace, None, &object(Kind::Namespace, "a"))
            .await,
    );
    refused(t.a.list(Kind::Pod, a, &Default::default()).await, 401, &[]);
    refused(
        t.a.create(Kind::Pod, a, &object(Kind::Pod, "back")).await,
        401,
        &[],
    );
    assert!(t.admin.list_tokens(a).await.unwrap().is_empty());
    // b was not touched.
    admitted(t.b.list(Kind::Pod, Some("b"), &Default::default()).await);

    // A token with a ttl stops working when it expires.
    let request = TokenRequest {
        role: "view".into(),
        ttl: Some("2s".into()),
        ..Default::default()
    };
    let info = t.admin.create_token(Some("b"), &request).await.unwrap();
    assert!(info.expires_at.is_some());
    let short = client(&t.plane, info.token.as_deref().unwrap());
    admitted(short.list(Kind::Pod, Some("b"), &Default::default()).await);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match short.list(Kind::Pod, Some("b"), &Default::default()).await {
            Err(e) if e.code() == Some(401) => break,
            _ if std::time::Instant::now() > deadline => panic!("the token outlived its ttl"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    for ttl in ["0s", "forever", "-1h"] {
        let request = TokenRequest {
            role: "view".into(),
            ttl: Some(ttl.into()),
            ..Default::default()
        };
        let answer = t
            .admin
            .create_token(Some("b"), &request)
            .await
            .map(|_| json!({}));
        refused(answer, 422, &["ttl"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_check_everything_and_write_nothing() {
    let cluster = Cluster::new();
    let t = tenants(&cluster).await;
    let a = Some("a");
    // Create: admitted as it would be stored, and not stored.
    let would = admitted(
        t.a.create_with(Kind::Pod, a, &object(Kind::Pod, "web"), true)
            .await,
    );
    assert_eq!(would["spec"]["runtime"], "Wasm");
    refused(t.a.get(Kind::Pod, a, "web").await, 404, &[]);
    // Refused as the real write would be.
    refused(
        t.a.create_with(
            Kind::Pod,
            a,
            &pod("pinned", json!({"nodeName": "n1"})),
            true,
        )
        .await,
        403,
        &["spec.nodeName"],
    );
    admitted(t.a.create(Kind::Pod, a, &object(Kind::Pod, "web")).await);
    refused(
        t.a.create_with(Kind::Pod, a, &object(Kind::Pod, "web"), true)
            .await,
        409,
        &[],
    );

    // Patch and delete, with dryRun=All in the query (and in a delete's
    // body): answered, not applied.
    let http = crate::support::http_client();
    let url = format!("{}/apis/skiff.dev/v1/namespaces/a/pods/web", t.plane.url);
    let token = tenant_token(&t.admin, "a", "edit").await;
    let patched = http
        .patch(format!("{url}?dryRun=All"))
        .bearer_auth(&token)
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"metadata": {"labels": {"tier": "front"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["metadata"]["labels"]["tier"], "front");
    let stored = t.a.get(Kind::Pod, a, "web").await.unwrap();
    assert!(
        stored["metadata"]["labels"].get("tier").is_none(),
        "{stored}"
    );

    let deleted = http
        .delete(format!("{url}?dryRun=All"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let options = DeleteOptions {
        dry_run: vec!["All".into()],
        ..Default::default()
    };
    admitted(t.a.delete_with(Kind::Pod, a, "web", &options).await);
    admitted(t.a.get(Kind::Pod, a, "web").await);
    let bad = DeleteOptions {
        dry_run: vec!["Some".into()],
        ..Default::default()
    };
    refused(
        t.a.delete_with(Kind::Pod, a, "web", &bad).await,
        400,
        &["dryRun"],
    );
    // A dry-run delete of something missing is a 404, as the delete is.
    refused(
        t.a.delete_with(Kind::Pod, a, "gone", &options).await,
        404,
        &[],
    );
    // And a dry run by a token that may not write is refused alike.
    let viewer = client(&t.plane, &tenant_token(&t.admin, "a", "view").await);
    refused(
        viewer.delete_with(Kind::Pod, a, "web", &options).await,
        403,
        &[],
    );
}
