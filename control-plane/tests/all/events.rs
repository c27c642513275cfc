//! Events: who may tell them, who may read them, and that they expire.
//! The Events the scheduler, controllers and nodes tell are tested with a
//! cluster of real nodes in `wasmctl/tests/all/events.rs`.

use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_client::{Client, ListOptions};

use crate::auth::token;
use crate::support::{Cluster, client, eventually, object};

/// An Event as a node would tell it about `kind`/`name` (uid `uid`) in
/// `namespace`, with `host` as its source.
fn event(name: &str, namespace: &str, kind: &str, about: &str, uid: &str, host: &str) -> Value {
    json!({
        "apiVersion": "skiff.dev/v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": {"kind": kind, "namespace": if kind == "Node" { "" } else { namespace }, "name": about, "uid": uid},
        "reason": "Started",
        "message": "started the pod",
        "type": "Normal",
        "count": 1,
        "firstTimestamp": "2026-12-06T08:00:00Z",
        "lastTimestamp": "2026-12-06T08:00:00Z",
        "source": {"component": "node", "host": host},
    })
}

/// An Event as a node's recorder tells it: under the name the happening
/// hashes to.
fn told(namespace: &str, kind: &str, about: &str, uid: &str, host: &str) -> Value {
    use skiff_api::kinds::event::{EventSource, InvolvedObject, event_name};
    let involved = InvolvedObject {
        kind: kind.into(),
        namespace: if kind == "Node" {
            String::new()
        } else {
            namespace.into()
        },
        name: about.into(),
        uid: uid.into(),
    };
    let source = EventSource {
        component: "node".into(),
        host: host.into(),
    };
    let name = event_name(&involved, "Started", &source);
    event(&name, namespace, kind, about, uid, host)
}

fn name_of(event: &Value) -> String {
    event["metadata"]["name"].as_str().unwrap().to_owned()
}

fn code<T: std::fmt::Debug>(result: Result<T, skiff_client::ClientError>) -> Option<u16> {
    result.unwrap_err().code()
}

async fn bound_pod(admin: &Client, namespace: &str, name: &str, node: &str) -> String {
    let mut pod = object(Kind::Pod, name);
    pod["spec"]["nodeName"] = json!(node);
    let pod = admin
        .create(Kind::Pod, Some(namespace), &pod)
        .await
        .unwrap();
    pod["metadata"]["uid"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_tell_events_only_about_their_pods_and_themselves() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin = client(&plane, &cluster.admin_token);
    let n1 = client(&plane, &token(&admin, None, "node", Some("n1")).await);
    let mine = bound_pod(&admin, "default", "mine", "n1").await;
    let theirs = bound_pod(&admin, "default", "theirs", "n2").await;

    // About its own pod, as itself: stored, read back, added to.
    let mine_told = told("default", "Pod", "mine", &mine, "n1");
    let mine_name = name_of(&mine_told);
    n1.create(Kind::Event, Some("default"), &mine_told)
        .await
        .unwrap();
    let mut stored = n1
        .get(Kind::Event, Some("default"), &mine_name)
        .await
        .unwrap();
    stored["count"] = json!(2);
    n1.replace(Kind::Event, Some("default"), &mine_name, &stored)
        .await
        .unwrap();
    // About itself, kept in default.
    n1.create(
        Kind::Event,
        Some("default"),
        &told("default", "Node", "n1", "", "n1"),
    )
    .await
    .unwrap();

    // A pod bound elsewhere, another node, another host, an earlier pod of
    // the same name (another uid), a kind it has nothing to do with, no
    // uid: each under the name it hashes to.
    let mut refused = vec![
        told("default", "Pod", "theirs", &theirs, "n1"),
        told("default", "Node", "n2", "", "n1"),
        told("default", "Pod", "mine", &mine, "n2"),
        told("default", "Pod", "mine", "0000-old-uid", "n1"),
        told("default", "Deployment", "web", "u", "n1"),
        told("default", "Pod", "mine", "", "n1"),
    ];
    // About its own pod, but not as a recorder tells it: under another
    // name (one the control plane's Events could have), as another
    // component, with labels, dated ahead.
    let mut renamed = told("default", "Pod", "mine", &mine, "n1");
    renamed["metadata"]["name"] = json!("mine-squatted");
    let mut component = told("default", "Pod", "mine", &mine, "n1");
    component["source"]["component"] = json!("deployment-controller");
    let mut labelled = told("default", "Pod", "mine", &mine, "n1");
    labelled["reason"] = json!("Started");
    labelled["metadata"]["labels"] = json!({"app": "web"});
    let mut ahead = told("default", "Pod", "mine", &mine, "n1");
    ahead["lastTimestamp"] = json!("9999-12-31T23:59:59Z");
    // A reason nodes do not tell, under the name it hashes to: else a node
    // could make any number of Events about one pod.
    let mut invented = told("default", "Pod", "mine", &mine, "n1");
    invented["reason"] = json!("Invented1");
    {
        use skiff_api::kinds::event::{EventSource, InvolvedObject, event_name};
        let involved: InvolvedObject =
            serde_json::from_value(invented["involvedObject"].clone()).unwrap();
        let source: EventSource = serde_json::from_value(invented["source"].clone()).unwrap();
        invented["metadata"]["name"] = json!(event_name(&involved, "Invented1", &source));
    }
    refused.extend([renamed, component, labelled, ahead, invented]);
    for event in &refused {
        assert_eq!(
            code(n1.create(Kind::Event, Some("default"), event).await),
            Some(403),
            "{event}"
        );
    }
    // Nor may it re-point an Event of its own at another pod, replace one
    // without naming the revision it read, or read, change or list Events
    // it did not tell.
    let mut repointed = n1
        .get(Kind::Event, Some("default"), &mine_name)
        .await
        .unwrap();
    repointed["involvedObject"]["name"] = json!("theirs");
    repointed["involvedObject"]["uid"] = json!(theirs);
    assert_eq!(
        code(
            n1.replace(Kind::Event, Some("default"), &mine_name, &repointed)
                .await
        ),
        Some(403)
    );
    let mut blind = n1
        .get(Kind::Event, Some("default"), &mine_name)
        .await
        .unwrap();
    blind["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    blind["count"] = json!(3);
    assert_eq!(
        code(
            n1.replace(Kind::Event, Some("default"), &mine_name, &blind)
                .await
        ),
        Some(409)
    );
    admin
        .create(
            Kind::Event,
            Some("default"),
            &event("theirs-1", "default", "Pod", "theirs", &theirs, "n2"),
        )
        .await
        .unwrap();
    assert_eq!(
        code(n1.get(Kind::Event, Some("default"), "theirs-1").await),
        Some(404)
    );
    let mut theirs_event = admin
        .get(Kind::Event, Some("default"), "theirs-1")
        .await
        .unwrap();
    theirs_event["count"] = json!(7);
    assert_eq!(
        code(
            n1.replace(Kind::Event, Some("default"), "theirs-1", &theirs_event)
                .await
        ),
        Some(403)
    );
    assert_eq!(
        code(
            n1.list(Kind::Event, Some("default"), &ListOptions::default())
                .await
        ),
        Some(403)
    );
    assert_eq!(
        code(
            n1.delete(Kind::Event, Some("default"), &mine_name, None)
                .await
        ),
        Some(403)
    );
    let stored = admin
        .get(Kind::Event, Some("default"), &mine_name)
        .await
        .unwrap();
    assert_eq!(stored["count"], 2);
    assert_eq!(stored["involvedObject"]["name"], "mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_read_their_namespaces_events_and_write_none() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin = client(&plane, &cluster.admin_token);
    for ns in ["shop", "other"] {
        admin
            .create(Kind::Namespace, None, &object(Kind::Namespace, ns))
            .await
            .unwrap();
        admin
            .create(
                Kind::Event,
                Some(ns),
                &event("e1", ns, "Pod", "web", "u1", "n1"),
            )
            .await
            .unwrap();
    }
    for role in ["view", "edit", "admin"] {
        let tenant = client(&plane, &token(&admin, Some("shop"), role, None).await);
        let events = tenant
            .list(Kind::Event, Some("shop"), &ListOptions::default())
            .await
            .unwrap();
        assert_eq!(events.items.len(), 1, "{role} reads its namespace's");
        assert_eq!(
            code(
                tenant
                    .list(Kind::Event, Some("other"), &ListOptions::default())
                    .await
            ),
            Some(403),
            "{role} reads no other namespace's"
        );
        // A history of its own making is refused, whatever the role: a
        // tenant could otherwise fake what the system saw, or fill the
        // database with Events no quota counts.
        assert_eq!(
            code(
                tenant
                    .create(
                        Kind::Event,
                        Some("shop"),
                        &event("fake", "shop", "Pod", "web", "u1", "n1"),
                    )
                    .await
            ),
            Some(403),
            "{role} creates"
        );
        let mut stored = tenant.get(Kind::Event, Some("shop"), "e1").await.unwrap();
        stored["message"] = json!("nothing happened");
        assert_eq!(
            code(
                tenant
                    .replace(Kind::Event, Some("shop"), "e1", &stored)
                    .await
            ),
            Some(403),
            "{role} changes"
        );
        assert_eq!(
            code(tenant.delete(Kind::Event, Some("shop"), "e1", None).await),
            Some(403),
            "{role} deletes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_are_refused_by_field() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin = client(&plane, &cluster.admin_token);
    let good = event("e1", "default", "Pod", "web", "u1", "n1");
    for (field, value, named) in [
        ("/reason", json!("not one word"), "reason"),
        ("/reason", json!(""), "reason"),
        ("/message", json!("x".repeat(2000)), "message"),
        ("/count", json!(0), "count"),
        ("/type", json!("Catastrophic"), "type"),
        (
            "/involvedObject/kind",
            json!("Gadget"),
            "involvedObject.kind",
        ),
        (
            "/involvedObject/name",
            json!("Not A Name"),
            "involvedObject.name",
        ),
        ("/lastTimestamp", json!("yesterday"), "lastTimestamp"),
        ("/source/host", json!("no spaces allowed"), "source.host"),
    ] {
        let mut bad = good.clone();
        *bad.pointer_mut(field).unwrap() = value;
        let err = admin
            .create(Kind::Event, Some("default"), &bad)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(422), "{field}: {err}");
        assert!(err.to_string().contains(named), "{field}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_expire_after_their_ttl_unless_they_happen_again() {
    let cluster = Cluster::new();
    let plane = testkit::ControlPlane::start(
        crate::support::binary(),
        &cluster.database_url,
        &["--no-scheduler", "--event-ttl", "2s"],
    );
    let admin = client(&plane, &cluster.admin_token);
    let now = || chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for name in ["old", "kept"] {
        let mut told = event(name, "default", "Pod", "web", "u1", "n1");
        told["lastTimestamp"] = json!(now());
        admin
            .create(Kind::Event, Some("default"), &told)
            .await
            .unwrap();
    }
    // "kept" happens again all along; "old" never does.
    let old = eventually(
        "the Event past its ttl to be deleted",
        || async {
            let mut kept = admin
                .get(Kind::Event, Some("default"), "kept")
                .await
                .expect("an Event that keeps happening stays");
            kept["lastTimestamp"] = json!(now());
            admin
                .replace(Kind::Event, Some("default"), "kept", &kept)
                .await
                .unwrap();
            admin
                .get(Kind::Event, Some("default"), "old")
                .await
                .map_err(|e| e.code())
        },
        |old| old.as_ref().is_err_and(|code| *code == Some(404)),
    )
    .await;
    assert!(old.is_err());
    assert!(
        admin
            .get(Kind::Event, Some("default"), "kept")
            .await
            .is_ok(),
        "one that keeps happening stays"
    );
}
