//! ResourceQuotas on real control planes: set by cluster admins only,
//! read by the namespace, and never exceeded however many creates race
//! for the last places from two processes at once; what a namespace uses
//! stays exact through every write that adds or removes what a quota
//! counts.

use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_api::kinds::quota::Resource;
use skiff_client::Client;
use testkit::ControlPlane;

use crate::auth::token;
use crate::support::{Cluster, binary, client, eventually};

fn namespace(name: &str) -> Value {
    json!({"apiVersion": skiff_api::API_VERSION, "kind": "Namespace",
        "metadata": {"name": name}, "spec": {}})
}

fn quota(hard: Value) -> Value {
    json!({"apiVersion": skiff_api::API_VERSION, "kind": "ResourceQuota",
        "metadata": {"name": "caps"}, "spec": {"hard": hard}})
}

fn pod(name: &str, resources: Value) -> Value {
    json!({"apiVersion": skiff_api::API_VERSION, "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"image": "127.0.0.1:5000/hello:v1", "resources": resources}})
}

/// Creates `count` pods named `{prefix}-N` at once, alternately through
/// `clients`; returns how many were created and every refusal's message.
async fn race(
    clients: &[Client],
    namespace: &str,
    prefix: &str,
    count: usize,
    resources: Value,
) -> (usize, Vec<String>) {
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let api = clients[i % clients.len()].clone();
            let (namespace, object) = (
                namespace.to_owned(),
                pod(&format!("{prefix}-{i}"), resources.clone()),
            );
            tokio::spawn(async move { api.create(Kind::Pod, Some(&namespace), &object).await })
        })
        .collect();
    let (mut created, mut refusals) = (0, Vec::new());
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => created += 1,
            Err(e) => {
                assert_eq!(e.code(), Some(403), "{e}");
                refusals.push(e.to_string());
            }
        }
    }
    (created, refusals)
}

/// Namespace `name`, capped by a quota `caps` of `hard`.
async fn namespace_with_quota(admin: &Client, name: &str, hard: Value) {
    admin
        .create(Kind::Namespace, None, &namespace(name))
        .await
        .unwrap();
    admin
        .create(Kind::ResourceQuota, Some(name), &quota(hard))
        .await
        .unwrap();
}

async fn used(api: &Client, namespace: &str) -> Value {
    api.get(Kind::ResourceQuota, Some(namespace), "caps")
        .await
        .unwrap()["status"]["used"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creates_from_two_processes_never_exceed_a_quota() {
    let cluster = Cluster::new();
    let (first, second) = (cluster.serve(&[]), cluster.serve(&[]));
    let admin = client(&first, &cluster.admin_token);
    for name in ["counted", "summed"] {
        admin
            .create(Kind::Namespace, None, &namespace(name))
            .await
            .unwrap();
    }
    admin
        .create(
            Kind::ResourceQuota,
            Some("counted"),
            &quota(json!({"pods": "10", "configmaps": "2"})),
        )
        .await
        .unwrap();
    admin
        .create(
            Kind::ResourceQuota,
            Some("summed"),
            &quota(json!({"memory": "512Mi", "instances": "1000", "cpu": "2"})),
        )
        .await
        .unwrap();
    let edit = token(&admin, Some("counted"), "edit", None).await;
    let tenants = [client(&first, &edit), client(&second, &edit)];

    // Forty creates for ten places, from both processes at once.
    let (created, refusals) = race(&tenants, "counted", "p", 40, json!({"memory": "1Mi"})).await;
    assert_eq!(created, 10, "{refusals:?}");
    assert!(
        refusals
            .iter()
            .all(|r| r == "exceeded quota: pods, used 10, hard 10"),
        "{refusals:?}"
    );
    let pods = admin
        .list_all(Kind::Pod, Some("counted"), &Default::default())
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 10);
    assert_eq!(
        used(&tenants[0], "counted").await,
        json!({"pods": "10", "configmaps": "0"})
    );

    // Sums over the pods: reserved memory binds first (4 x 128Mi).
    let admins = [admin.clone(), client(&second, &cluster.admin_token)];
    let (created, refusals) = race(
        &admins,
        "summed",
        "m",
        12,
        json!({"memory": "128Mi", "maxInstances": 10}),
    )
    .await;
    assert_eq!(created, 4, "{refusals:?}");
    assert!(
        refusals
            .iter()
            .all(|r| r == "exceeded quota: memory, used 512Mi, hard 512Mi, requested 128Mi"),
        "{refusals:?}"
    );
    assert_eq!(
        used(&admin, "summed").await,
        json!({"memory": "512Mi", "instances": "40", "cpu": "0"})
    );

    // A delete frees its place at once.
    tenants[0]
        .delete(Kind::Pod, Some("counted"), "p-0", None)
        .await
        .ok();
    let remaining = admin
        .list_all(Kind::Pod, Some("counted"), &Default::default())
        .await
        .unwrap();
    let victim = remaining.items[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    tenants[1]
        .delete(Kind::Pod, Some("counted"), &victim, None)
        .await
        .unwrap();
    tenants[0]
        .create(Kind::Pod, Some("counted"), &pod("after-delete", json!({})))
        .await
        .unwrap();
    // Other kinds are counted too.
    let config_map = |name: &str| {
        json!({"apiVersion": skiff_api::API_VERSION, "kind": "ConfigMap",
            "metadata": {"name": name}, "data": {}})
    };
    for name in ["a", "b"] {
        tenants[0]
            .create(Kind::ConfigMap, Some("counted"), &config_map(name))
            .await
            .unwrap();
    }
    let refused = tenants[1]
        .create(Kind::ConfigMap, Some("counted"), &config_map("c"))
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), refused.to_string()),
        (
            Some(403),
            "exceeded quota: configmaps, used 2, hard 2".to_owned()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_are_the_cluster_admins_and_cap_each_pod_and_template() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin = client(&plane, &cluster.admin_token);
    admin
        .create(Kind::Namespace, None, &namespace("tenant"))
        .await
        .unwrap();
    let caps = quota(json!({
        "pod.memory": "256Mi", "pod.fuel": "100M", "pod.timeout": "10s", "pod.maxInstances": "20",
    }));
    let tenant_admin = client(&plane, &token(&admin, Some("tenant"), "admin", None).await);

    // The namespace's own admin may neither set nor lift its quota.
    let refused = tenant_admin
        .create(Kind::ResourceQuota, Some("tenant"), &caps)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(403), "{refused}");
    admin
        .create(Kind::ResourceQuota, Some("tenant"), &caps)
        .await
        .unwrap();
    for attempt in [
        tenant_admin
            .patch(
                Kind::ResourceQuota,
                Some("tenant"),
                "caps",
                &json!({"spec": {"hard": null}}),
                false,
            )
            .await,
        tenant_admin
            .delete(Kind::ResourceQuota, Some("tenant"), "caps", None)
            .await,
    ] {
        assert_eq!(attempt.unwrap_err().code(), Some(403));
    }
    // It reads it, as a quota shows itself: caps in status too.
    let read = tenant_admin
        .get(Kind::ResourceQuota, Some("tenant"), "caps")
        .await
        .unwrap();
    assert_eq!(read["status"]["hard"]["pod.memory"], "256Mi");

    // Each pod, and each Deployment's template, within the per-pod caps;
    // a dry run is refused alike.
    let fits = json!({"memory": "256Mi", "fuel": "100M", "timeout": "10s", "maxInstances": 20});
    tenant_admin
        .create(Kind::Pod, Some("tenant"), &pod("fits", fits))
        .await
        .unwrap();
    for (resources, message) in [
        (
            json!({"memory": "4Gi", "fuel": "1M", "timeout": "1s", "maxInstances": 1}),
            "spec.resources.memory: 4Gi is above the quota's pod.memory of 256Mi",
        ),
        (
            json!({"memory": "1Mi", "timeout": "1s", "maxInstances": 1}),
            "spec.resources.fuel: unlimited is above the quota's pod.fuel of 100000000",
        ),
        (
            json!({"memory": "1Mi", "fuel": "1M", "maxInstances": 1}),
            "spec.resources.timeout: 30s is above the quota's pod.timeout of 10s",
        ),
        (
            json!({"memory": "1Mi", "fuel": "1M", "timeout": "1s"}),
            "spec.resources.maxInstances: 100 is above the quota's pod.maxInstances of 20",
        ),
    ] {
        for dry_run in [true, false] {
            let refused = tenant_admin
                .create_with(
                    Kind::Pod,
                    Some("tenant"),
                    &pod("over", resources.clone()),
                    dry_run,
                )
                .await
                .unwrap_err();
            assert_eq!(
                (refused.code(), refused.to_string()),
                (Some(403), message.to_owned())
            );
        }
    }
    let template = |timeout: &str| {
        json!({"apiVersion": skiff_api::API_VERSION, "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"image": "127.0.0.1:5000/hello:v1", "resources":
                        {"memory": "64Mi", "fuel": "1M", "timeout": timeout, "maxInstances": 5}}}}})
    };
    let refused = tenant_admin
        .create(Kind::Deployment, Some("tenant"), &template("1h"))
        .await
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        "spec.template.spec.resources.timeout: 1h is above the quota's pod.timeout of 10s"
    );
    tenant_admin
        .create(Kind::Deployment, Some("tenant"), &template("5s"))
        .await
        .unwrap();
    let refused = tenant_admin
        .patch(
            Kind::Deployment,
            Some("tenant"),
            "web",
            &json!({"spec": {"template": {"spec": {"resources": {"timeout": "1m"}}}}}),
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), refused.to_string()),
        (
            Some(403),
            "spec.template.spec.resources.timeout: 1m is above the quota's pod.timeout of 10s"
                .to_owned()
        )
    );

    // Bad quotas are refused with the field.
    let bad = admin
        .create(Kind::ResourceQuota, Some("tenant"), &{
            let mut q = quota(json!({"gpus": "1"}));
            q["metadata"]["name"] = json!("bad");
            q
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Some(422), "{bad}");
    assert!(
        bad.to_string()
            .starts_with("spec.hard[gpus]: unknown resource"),
        "{bad}"
    );
}

/// Each pod in the usage tests: 128Mi reserved (64Mi x 2), 5 instances,
/// 250m of CPU.
fn sized() -> Value {
    json!({"memory": "64Mi", "reservedInstances": 2, "maxInstances": 5, "cpu": "250m"})
}

fn config_map(name: &str) -> Value {
    json!({"apiVersion": skiff_api::API_VERSION, "kind": "ConfigMap",
        "metadata": {"name": name}, "data": {}})
}

fn secret(name: &str) -> Value {
    json!({"apiVersion": skiff_api::API_VERSION, "kind": "Secret",
        "metadata": {"name": name}, "stringData": {"k": "v"}})
}

/// A quota's `status.used` for `pods` of `sized()` and, when given, the
/// counts of ConfigMaps and Secrets.
fn usage(pods: u64, others: Option<(u64, u64)>) -> Value {
    let mut used = json!({
        "pods": pods.to_string(),
        "memory": Resource::Memory.format(pods * (128 << 20)),
        "instances": (5 * pods).to_string(),
        "cpu": Resource::Cpu.format(250 * pods),
    });
    if let Some((configmaps, secrets)) = others {
        used["configmaps"] = json!(configmaps.to_string());
        used["secrets"] = json!(secrets.to_string());
    }
    used
}

fn counted_and_summed() -> Value {
    json!({"pods": "5", "configmaps": "3", "secrets": "2", "memory": "1Gi",
        "instances": "100", "cpu": "2"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_stays_exact_through_deletes_replaces_and_quotas_that_come_late() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin = client(&plane, &cluster.admin_token);
    admin
        .create(Kind::Namespace, None, &namespace("late"))
        .await
        .unwrap();
    let ns = Some("late");

    // Objects first, the quota after: it counts what is already there.
    for name in ["a", "b", "c"] {
        admin
            .create(Kind::Pod, ns, &pod(name, sized()))
            .await
            .unwrap();
    }
    for name in ["x", "y"] {
        admin
            .create(Kind::ConfigMap, ns, &config_map(name))
            .await
            .unwrap();
    }
    admin.create(Kind::Secret, ns, &secret("s")).await.unwrap();
    admin
        .create(Kind::ResourceQuota, ns, &quota(counted_and_summed()))
        .await
        .unwrap();
    assert_eq!(used(&admin, "late").await, usage(3, Some((2, 1))));
    for name in ["d", "e"] {
        admin
            .create(Kind::Pod, ns, &pod(name, sized()))
            .await
            .unwrap();
    }
    let refused = admin
        .create(Kind::Pod, ns, &pod("f", sized()))
        .await
        .unwrap_err();
    assert_eq!(refused.to_string(), "exceeded quota: pods, used 5, hard 5");
    // Neither a dry run nor a name already taken counts.
    admin
        .create_with(Kind::Pod, ns, &pod("f", json!({})), true)
        .await
        .unwrap_err();
    assert_eq!(used(&admin, "late").await, usage(5, Some((2, 1))));

    // A pod's resources cannot be replaced or patched, and a status or a
    // label written leaves its usage as it was.
    let mut bigger = admin.get(Kind::Pod, ns, "a").await.unwrap();
    bigger["spec"]["resources"]["memory"] = json!("1Gi");
    let refused = admin
        .replace(Kind::Pod, ns, "a", &bigger)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(422), "{refused}");
    let refused = admin
        .patch(
            Kind::Pod,
            ns,
            "a",
            &json!({"spec": {"resources": {"cpu": "2"}}}),
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(422), "{refused}");
    admin
        .patch(
            Kind::Pod,
            ns,
            "a",
            &json!({"metadata": {"labels": {"tier": "web"}}}),
            false,
        )
        .await
        .unwrap();
    let mut read = admin.get(Kind::Pod, ns, "a").await.unwrap();
    read["status"]["phase"] = json!("Running");
    admin
        .replace_status(Kind::Pod, ns, "a", &read)
        .await
        .unwrap();
    assert_eq!(used(&admin, "late").await, usage(5, Some((2, 1))));

    // Deletes free their places and their sums at once.
    for name in ["a", "b"] {
        admin.delete(Kind::Pod, ns, name, None).await.unwrap();
    }
    admin.delete(Kind::Secret, ns, "s", None).await.unwrap();
    admin.delete(Kind::ConfigMap, ns, "x", None).await.unwrap();
    assert_eq!(used(&admin, "late").await, usage(3, Some((1, 0))));
    admin
        .create(Kind::Pod, ns, &pod("f", sized()))
        .await
        .unwrap();
    assert_eq!(used(&admin, "late").await, usage(4, Some((1, 0))));

    // Without a quota nothing is kept; a quota set again counts afresh
    // what happened meanwhile.
    admin
        .delete(Kind::ResourceQuota, ns, "caps", None)
        .await
        .unwrap();
    admin.delete(Kind::Pod, ns, "c", None).await.unwrap();
    for name in ["g", "h"] {
        admin
            .create(Kind::Pod, ns, &pod(name, sized()))
            .await
            .unwrap();
    }
    admin
        .create(Kind::ResourceQuota, ns, &quota(counted_and_summed()))
        .await
        .unwrap();
    assert_eq!(used(&admin, "late").await, usage(5, Some((1, 0))));
    // The first create under it counts it into the rows it is kept in.
    admin
        .create(Kind::ConfigMap, ns, &config_map("z"))
        .await
        .unwrap();
    let refused = admin
        .create(Kind::Pod, ns, &pod("i", sized()))
        .await
        .unwrap_err();
    assert_eq!(refused.to_string(), "exceeded quota: pods, used 5, hard 5");
    assert_eq!(used(&admin, "late").await, usage(5, Some((2, 0))));

    // A namespace deleted takes its usage along: one created again under
    // its name starts from nothing.
    admin
        .delete(Kind::Namespace, None, "late", None)
        .await
        .unwrap();
    admin
        .create(Kind::Namespace, None, &namespace("late"))
        .await
        .unwrap();
    admin
        .create(Kind::ResourceQuota, ns, &quota(counted_and_summed()))
        .await
        .unwrap();
    assert_eq!(used(&admin, "late").await, usage(0, Some((0, 0))));
    for name in ["a", "b", "c", "d", "e"] {
        admin
            .create(Kind::Pod, ns, &pod(name, sized()))
            .await
            .unwrap();
    }
    assert_eq!(used(&admin, "late").await, usage(5, Some((0, 0))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_follows_racing_deletes_and_the_garbage_collector() {
    let cluster = Cluster::new();
    // The second process runs the controllers, the garbage collector among
    // them.
    let first = cluster.serve(&[]);
    let second = ControlPlane::start(binary(), &cluster.database_url, &["--no-scheduler"]);
    let admins = [
        client(&first, &cluster.admin_token),
        client(&second, &cluster.admin_token),
    ];
    let admin = &admins[0];
    namespace_with_quota(
        admin,
        "churn",
        json!({"pods": "20", "memory": "100Gi", "instances": "1000", "cpu": "100"}),
    )
    .await;
    let (created, refusals) = race(&admins, "churn", "old", 20, sized()).await;
    assert_eq!(created, 20, "{refusals:?}");

    // Ten deletes and twenty creates at once, from both processes: the
    // creates get the places the deletes free, and never more.
    let deletes: Vec<_> = (0..10)
        .map(|i| {
            let api = admins[i % 2].clone();
            tokio::spawn(async move {
                api.delete(Kind::Pod, Some("churn"), &format!("old-{i}"), None)
                    .await
                    .unwrap();
            })
        })
        .collect();
    let (created, _) = race(&admins, "churn", "new", 20, sized()).await;
    for delete in deletes {
        delete.await.unwrap();
    }
    let pods = admin
        .list_all(Kind::Pod, Some("churn"), &Default::default())
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(pods, 10 + created);
    assert!(pods <= 20, "{pods} pods under a quota of 20");
    assert_eq!(used(admin, "churn").await, usage(pods as u64, None));

    // Pods the garbage collector deletes with their owner leave the usage
    // too; their places are free again.
    let owner = admin
        .create(Kind::ConfigMap, Some("churn"), &config_map("owner"))
        .await
        .unwrap();
    for name in admin
        .list_all(Kind::Pod, Some("churn"), &Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
    {
        admin
            .delete(Kind::Pod, Some("churn"), &name, None)
            .await
            .unwrap();
    }
    for i in 0..20 {
        let mut owned = pod(&format!("owned-{i}"), sized());
        owned["metadata"]["ownerReferences"] = json!([{
            "apiVersion": skiff_api::API_VERSION, "kind": "ConfigMap",
            "name": "owner", "uid": owner["metadata"]["uid"],
        }]);
        admin
            .create(Kind::Pod, Some("churn"), &owned)
            .await
            .unwrap();
    }
    assert_eq!(used(admin, "churn").await["pods"], "20");
    admin
        .delete(Kind::ConfigMap, Some("churn"), "owner", None)
        .await
        .unwrap();
    eventually(
        "the owned pods collected",
        || used(admin, "churn"),
        |used| used["pods"] == "0",
    )
    .await;
    assert_eq!(used(admin, "churn").await, usage(0, None));
    let (created, refusals) = race(&admins, "churn", "again", 20, sized()).await;
    assert_eq!(created, 20, "{refusals:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_service_accounts_count_against_quotas_however_creates_race() {
    use skiff_api::tokens::{BoundPod, ServiceAccountTokenRequest, TokenRequest};
    let cluster = Cluster::new();
    let (first, second) = (cluster.serve(&[]), cluster.serve(&[]));
    let admins = [
        client(&first, &cluster.admin_token),
        client(&second, &cluster.admin_token),
    ];
    let admin = &admins[0];
    namespace_with_quota(admin, "tok", json!({"tokens": "3", "serviceaccounts": "1"})).await;

    // Eight role tokens race for three places, through both processes.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let api = admins[i % 2].clone();
            tokio::spawn(async move {
                let request = TokenRequest {
                    role: "view".into(),
                    ..Default::default()
                };
                api.create_token(Some("tok"), &request).await
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => created += 1,
            Err(e) => {
                assert_eq!(e.code(), Some(403), "{e}");
                assert_eq!(e.to_string(), "exceeded quota: tokens, used 3, hard 3");
            }
        }
    }
    assert_eq!(created, 3);
    assert_eq!(used(admin, "tok").await["tokens"], "3");

    // An account's token held by a person counts too; a pod's own does
    // not (its pods are what bound it).
    let bot = json!({"apiVersion": skiff_api::API_VERSION, "kind": "ServiceAccount",
        "metadata": {"name": "bot"}, "spec": {"role": "view"}});
    admin
        .create(Kind::ServiceAccount, Some("tok"), &bot)
        .await
        .unwrap();
    let mut second_account = bot.clone();
    second_account["metadata"]["name"] = json!("bot2");
    let refused = admin
        .create(Kind::ServiceAccount, Some("tok"), &second_account)
        .await
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        "exceeded quota: serviceaccounts, used 1, hard 1"
    );
    let held = admin
        .create_account_token("tok", "bot", &Default::default())
        .await
        .unwrap_err();
    assert_eq!(held.code(), Some(403));
    assert_eq!(held.to_string(), "exceeded quota: tokens, used 3, hard 3");
    let runner = admin
        .create(
            Kind::Pod,
            Some("tok"),
            &json!({"apiVersion": skiff_api::API_VERSION, "kind": "Pod",
                "metadata": {"name": "runner"},
                "spec": {"image": "127.0.0.1:5000/hello:v1", "serviceAccountName": "bot"}}),
        )
        .await
        .unwrap();
    let request = ServiceAccountTokenRequest {
        duration: None,
        bound_pod: Some(BoundPod {
            name: "runner".into(),
            uid: runner["metadata"]["uid"].as_str().unwrap().into(),
        }),
    };
    admin
        .create_account_token("tok", "bot", &request)
        .await
        .unwrap();
}
