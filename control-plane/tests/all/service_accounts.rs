//! ServiceAccounts on a real control plane: every namespace has a
//! `default` one (made again if deleted), no one grants an account or
//! borrows through a pod more than they hold, and an account's tokens act
//! with its role as it is now and stop working with it, with their pod,
//! or when they expire.

use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_api::tokens::{BoundPod, ServiceAccountTokenRequest};
use skiff_client::Client;

use crate::auth::token;
use crate::support::{Cluster, binary, client, eventually};

fn namespace(name: &str) -> Value {
    json!({"apiVersion": skiff_api::API_VERSION, "kind": "Namespace",
        "metadata": {"name": name}, "spec": {}})
}

fn account(name: &str, role: Option<&str>) -> Value {
    let mut object = json!({"apiVersion": skiff_api::API_VERSION, "kind": "ServiceAccount",
        "metadata": {"name": name}, "spec": {}});
    if let Some(role) = role {
        object["spec"]["role"] = json!(role);
    }
    object
}

fn pod(name: &str, spec: Value) -> Value {
    let mut object = json!({"apiVersion": skiff_api::API_VERSION, "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"image": "127.0.0.1:5000/hello:v1"}});
    for (key, value) in spec.as_object().expect("a spec object") {
        object["spec"][key] = value.clone();
    }
    object
}

fn deployment(name: &str, account: &str) -> Value {
    json!({"apiVersion": skiff_api::API_VERSION, "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"image": "127.0.0.1:5000/hello:v1", "serviceAccountName": account}}}})
}

async fn refusal(result: Result<Value, skiff_client::ClientError>) -> (u16, String) {
    let error = result.expect_err("refused");
    (error.code().unwrap_or_default(), error.to_string())
}

async fn account_token(
    api: &Client,
    namespace: &str,
    name: &str,
    request: ServiceAccountTokenRequest,
) -> Result<String, skiff_client::ClientError> {
    api.create_account_token(namespace, name, &request)
        .await
        .map(|t| t.token)
}

/// A client with a token of shop's `bot`, bound to a new pod `name`
/// running as it (made by `admin`, a cluster admin: members bind none).
async fn bound_to_new_pod(plane: &testkit::ControlPlane, admin: &Client, name: &str) -> Client {
    let pod = admin
        .create(
            Kind::Pod,
            Some("shop"),
            &pod(name, json!({"serviceAccountName": "bot"})),
        )
        .await
        .unwrap();
    let request = ServiceAccountTokenRequest {
        duration: Some("10m".into()),
        bound_pod: Some(BoundPod {
            name: name.into(),
            uid: pod["metadata"]["uid"].as_str().unwrap().into(),
        }),
    };
    client(
        plane,
        &account_token(admin, "shop", "bot", request).await.unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_has_a_default_account_made_again_if_deleted() {
    let cluster = Cluster::new();
    // With its controllers, unlike `serve`.
    let plane = testkit::ControlPlane::start(binary(), &cluster.database_url, &[]);
    let admin = client(&plane, &cluster.admin_token);
    admin
        .create(Kind::Namespace, None, &namespace("team"))
        .await
        .unwrap();
    let get = || admin.get(Kind::ServiceAccount, Some("team"), "default");
    let first = eventually(
        "the default account",
        || async { get().await.ok() },
        Option::is_some,
    )
    .await
    .unwrap();
    assert_eq!(
        first["spec"],
        json!({}),
        "the default account holds no role"
    );
    admin
        .delete(Kind::ServiceAccount, Some("team"), "default", None)
        .await
        .unwrap();
    let again = eventually(
        "the default account made again",
        || async { get().await.ok() },
        |a| {
            a.as_ref()
                .is_some_and(|a| a["metadata"]["uid"] != first["metadata"]["uid"])
        },
    )
    .await
    .unwrap();
    assert_eq!(again["metadata"]["name"], "default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_one_grants_an_account_or_borrows_through_a_pod_more_than_they_hold() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin = client(&plane, &cluster.admin_token);
    admin
        .create(Kind::Namespace, None, &namespace("shop"))
        .await
        .unwrap();
    let editor = client(&plane, &token(&admin, Some("shop"), "edit", None).await);
    let viewer = client(&plane, &token(&admin, Some("shop"), "view", None).await);
    let ns = Some("shop");

    editor
        .create(Kind::ServiceAccount, ns, &account("reader", Some("view")))
        .await
        .unwrap();
    editor
        .create(Kind::ServiceAccount, ns, &account("helper", Some("edit")))
        .await
        .unwrap();
    assert_eq!(
        refusal(editor.create(Kind::ServiceAccount, ns, &account("boss", Some("admin"))).await)
            .await,
        (
            403,
            "spec.role: this token may not grant role admin in namespace shop, which it does not hold".into()
        )
    );
    // Raising an account it made is granting too.
    let raised = json!({"spec": {"role": "admin"}});
    assert_eq!(
        editor
            .patch(Kind::ServiceAccount, ns, "reader", &raised, false)
            .await
            .unwrap_err()
            .code(),
        Some(403)
    );
    // So is a PUT (what `wasmctl apply` sends for an existing object).
    let mut replaced = editor
        .get(Kind::ServiceAccount, ns, "reader")
        .await
        .unwrap();
    replaced["spec"]["role"] = json!("admin");
    assert_eq!(
        editor
            .replace(Kind::ServiceAccount, ns, "reader", &replaced)
            .await
            .unwrap_err()
            .code(),
        Some(403)
    );
    let bad_role = editor
        .create(Kind::ServiceAccount, ns, &account("odd", Some("owner")))
        .await
        .unwrap_err();
    assert_eq!(bad_role.code(), Some(422), "{bad_role}");
    assert!(
        bad_role
            .to_string()
            .contains("spec.role: must be view, edit or admin, not `owner`")
    );

    // A cluster admin makes an admin account; the editor may not run pods
    // as it, directly or through a Deployment, nor make its tokens.
    admin
        .create(Kind::ServiceAccount, ns, &account("boss", Some("admin")))
        .await
        .unwrap();
    let as_boss = pod("p1", json!({"serviceAccountName": "boss"}));
    assert_eq!(
        refusal(editor.create(Kind::Pod, ns, &as_boss).await).await,
        (
            403,
            "spec.serviceAccountName: service account boss holds role admin in namespace shop, more than this token does".into()
        )
    );
    let (code, message) = refusal(
        editor
            .create(Kind::Deployment, ns, &deployment("d1", "boss"))
            .await,
    )
    .await;
    assert_eq!(code, 403, "{message}");
    assert!(message.starts_with("spec.template.spec.serviceAccountName: service account boss"));
    let boss_token = account_token(&editor, "shop", "boss", Default::default()).await;
    assert_eq!(boss_token.unwrap_err().code(), Some(403));
    // Its own level is fine, and so is the default account.
    editor
        .create(
            Kind::Pod,
            ns,
            &pod("p2", json!({"serviceAccountName": "helper"})),
        )
        .await
        .unwrap();
    let defaulted = editor
        .create(Kind::Pod, ns, &pod("p3", json!({})))
        .await
        .unwrap();
    assert_eq!(defaulted["spec"]["serviceAccountName"], "default");
    // Switching a Deployment to a stronger account is refused as well.
    editor
        .create(Kind::Deployment, ns, &deployment("d2", "helper"))
        .await
        .unwrap();
    let switch = json!({"spec": {"template": {"spec": {"serviceAccountName": "boss"}}}});
    assert_eq!(
        editor
            .patch(Kind::Deployment, ns, "d2", &switch, false)
            .await
            .unwrap_err()
            .code(),
        Some(403)
    );
    // An account that does not exist is the caller's mistake.
    let (code, message) = refusal(
        editor
            .create(
                Kind::Pod,
                ns,
                &pod("p4", json!({"serviceAccountName": "ghost"})),
            )
            .await,
    )
    .await;
    assert_eq!(code, 422);
    assert!(
        message
            .contains("spec.serviceAccountName: service account ghost not found in namespace shop"),
        "{message}"
    );
    // Members may not mint tokens bound to a pod, which no quota counts.
    let p2 = editor.get(Kind::Pod, ns, "p2").await.unwrap();
    let bound = ServiceAccountTokenRequest {
        duration: None,
        bound_pod: Some(BoundPod {
            name: "p2".into(),
            uid: p2["metadata"]["uid"].as_str().unwrap().into(),
        }),
    };
    let (code, message) = match account_token(&editor, "shop", "helper", bound).await {
        Err(e) => (e.code(), e.to_string()),
        Ok(_) => panic!("an editor bound a token to a pod"),
    };
    assert_eq!(code, Some(403));
    assert_eq!(
        message,
        "boundPod: only nodes and cluster admins bind tokens to pods"
    );
    // Viewers make no tokens at all.
    let reader_token = account_token(&viewer, "shop", "reader", Default::default()).await;
    assert_eq!(reader_token.unwrap_err().code(), Some(403));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_tokens_act_with_the_accounts_role_now_and_die_with_it_or_their_pod() {
    let cluster = Cluster::new();
    // No token cache: what a token may do is seen as soon as it changes.
    let plane = cluster.serve(&["--token-cache-ttl", "0s"]);
    let admin = client(&plane, &cluster.admin_token);
    for name in ["shop", "other"] {
        admin
            .create(Kind::Namespace, None, &namespace(name))
            .await
            .unwrap();
    }
    let ns = Some("shop");
    admin
        .create(Kind::ServiceAccount, ns, &account("bot", Some("view")))
        .await
        .unwrap();
    let editor = client(&plane, &token(&admin, Some("shop"), "edit", None).await);
    let bot = client(
        &plane,
        &account_token(&editor, "shop", "bot", Default::default())
            .await
            .unwrap(),
    );

    bot.list_all(Kind::Pod, ns, &Default::default())
        .await
        .unwrap();
    let write = bot.create(Kind::Pod, ns, &pod("p", json!({}))).await;
    assert_eq!(write.unwrap_err().code(), Some(403));
    let elsewhere = bot
        .list_all(Kind::Pod, Some("other"), &Default::default())
        .await;
    assert_eq!(elsewhere.unwrap_err().code(), Some(403));

    // The account's role as it is now, not as when the token was made.
    admin
        .patch(
            Kind::ServiceAccount,
            ns,
            "bot",
            &json!({"spec": {"role": "edit"}}),
            false,
        )
        .await
        .unwrap();
    bot.create(Kind::Pod, ns, &pod("p", json!({})))
        .await
        .unwrap();
    // It makes no tokens, which would outlive it: neither the account's
    // nor the namespace's.
    let minted = account_token(&bot, "shop", "bot", Default::default()).await;
    assert_eq!(minted.unwrap_err().code(), Some(403));
    let request = skiff_api::tokens::TokenRequest {
        role: "view".into(),
        ..Default::default()
    };
    assert_eq!(
        bot.create_token(ns, &request).await.unwrap_err().code(),
        Some(403)
    );

    // An account deleted and made again under its name is another one.
    admin
        .delete(Kind::ServiceAccount, ns, "bot", None)
        .await
        .unwrap();
    let gone = bot.list_all(Kind::Pod, ns, &Default::default()).await;
    assert_eq!(gone.unwrap_err().code(), Some(401));
    admin
        .create(Kind::ServiceAccount, ns, &account("bot", Some("edit")))
        .await
        .unwrap();
    let still_gone = bot.list_all(Kind::Pod, ns, &Default::default()).await;
    assert_eq!(still_gone.unwrap_err().code(), Some(401));

    // A token bound to a pod stops working when the pod goes, and when it
    // has finished.
    let runner = bound_to_new_pod(&plane, &admin, "runner").await;
    runner
        .list_all(Kind::Pod, ns, &Default::default())
        .await
        .unwrap();
    admin.delete(Kind::Pod, ns, "runner", None).await.unwrap();
    let pod_gone = runner.list_all(Kind::Pod, ns, &Default::default()).await;
    assert_eq!(pod_gone.unwrap_err().code(), Some(401));
    let done = bound_to_new_pod(&plane, &admin, "done").await;
    done.list_all(Kind::Pod, ns, &Default::default())
        .await
        .unwrap();
    admin
        .patch(
            Kind::Pod,
            ns,
            "done",
            &json!({"status": {"phase": "Succeeded"}}),
            true,
        )
        .await
        .unwrap();
    let finished = done.list_all(Kind::Pod, ns, &Default::default()).await;
    assert_eq!(finished.unwrap_err().code(), Some(401));

    // A token expires.
    let short = ServiceAccountTokenRequest {
        duration: Some("10s".into()),
        bound_pod: None,
    };
    let expiring = client(
        &plane,
        &account_token(&editor, "shop", "bot", short).await.unwrap(),
    );
    expiring
        .list_all(Kind::Pod, ns, &Default::default())
        .await
        .unwrap();
    eventually(
        "the token to expire",
        || async {
            expiring
                .list_all(Kind::Pod, ns, &Default::default())
                .await
                .err()
                .and_then(|e| e.code())
        },
        |code| *code == Some(401),
    )
    .await;

    // Bad durations, and accounts that are not there.
    let too_long = ServiceAccountTokenRequest {
        duration: Some("48h".into()),
        bound_pod: None,
    };
    let error = account_token(&editor, "shop", "bot", too_long)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(422));
    assert!(
        error
            .to_string()
            .contains("duration: `48h` is not a duration between 10s and 24h"),
        "{error}"
    );
    let missing = account_token(&editor, "shop", "nobody", Default::default()).await;
    assert_eq!(missing.unwrap_err().code(), Some(404));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_gets_tokens_only_for_its_own_pods_that_asked_for_one() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin = client(&plane, &cluster.admin_token);
    admin
        .create(Kind::Namespace, None, &namespace("shop"))
        .await
        .unwrap();
    let ns = Some("shop");
    admin
        .create(Kind::ServiceAccount, ns, &account("bot", Some("view")))
        .await
        .unwrap();
    let node = client(&plane, &token(&admin, None, "node", Some("n1")).await);
    let mut uids = std::collections::BTreeMap::new();
    for (name, node_name, automount) in [
        ("mine", "n1", true),
        ("quiet", "n1", false),
        ("theirs", "n2", true),
    ] {
        let created = admin
            .create(
                Kind::Pod,
                ns,
                &pod(
                    name,
                    json!({"serviceAccountName": "bot", "nodeName": node_name,
                        "automountServiceAccountToken": automount}),
                ),
            )
            .await
            .unwrap();
        uids.insert(
            name,
            created["metadata"]["uid"].as_str().unwrap().to_owned(),
        );
    }
    let for_pod = |name: &str| ServiceAccountTokenRequest {
        duration: Some("1m".into()),
        bound_pod: Some(BoundPod {
            name: name.into(),
            uid: uids[name].clone(),
        }),
    };
    account_token(&node, "shop", "bot", for_pod("mine"))
        .await
        .unwrap();
    let quiet = account_token(&node, "shop", "bot", for_pod("quiet")).await;
    assert_eq!(quiet.unwrap_err().code(), Some(403));
    let theirs = account_token(&node, "shop", "bot", for_pod("theirs")).await;
    assert_eq!(theirs.unwrap_err().code(), Some(404));
    // Another account than the pod's, or none bound at all.
    let other_account = account_token(&node, "shop", "default", for_pod("mine")).await;
    assert!(other_account.is_err());
    let unbound = account_token(&node, "shop", "bot", Default::default()).await;
    assert_eq!(unbound.unwrap_err().code(), Some(403));
}
