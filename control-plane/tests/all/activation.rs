//! Taking a function off zero: the activation writes the Deployment's
//! replicas and its first pod in one transaction, so that no controller
//! round trip stands between a held request and its pod. These control
//! planes run without controllers or scheduler: whatever pod exists after
//! the activation answered, the activation wrote.

use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_client::Client;

use crate::auth::token;
use crate::support::{Cluster, client, ready_node, revision_of};

fn function(name: &str) -> (Value, Value) {
    function_with(name, json!({"memory": "16Mi"}), None)
}

fn function_with(name: &str, resources: Value, runtime: Option<&str>) -> (Value, Value) {
    let mut deployment = json!({
        "apiVersion": skiff_api::API_VERSION, "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "autoscaling": {"minReplicas": 0, "maxReplicas": 5},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"image": "127.0.0.1:5000/hello:v1", "resources": resources},
            },
        },
    });
    if let Some(runtime) = runtime {
        deployment["spec"]["template"]["spec"]["runtime"] = runtime.into();
    }
    let service = json!({
        "apiVersion": skiff_api::API_VERSION, "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}},
    });
    (deployment, service)
}

async fn deploy(api: &Client, namespace: &str, name: &str) -> Value {
    deploy_function(api, namespace, function(name)).await
}

async fn deploy_function(
    api: &Client,
    namespace: &str,
    (deployment, service): (Value, Value),
) -> Value {
    let created = api
        .create(Kind::Deployment, Some(namespace), &deployment)
        .await
        .unwrap();
    api.create(Kind::Service, Some(namespace), &service)
        .await
        .unwrap();
    created
}

async fn create_namespace(admin: &Client, name: &str, spec: Value) {
    let namespace = json!({"apiVersion": skiff_api::API_VERSION, "kind": "Namespace",
        "metadata": {"name": name}, "spec": spec});
    admin
        .create(Kind::Namespace, None, &namespace)
        .await
        .unwrap();
}

async fn pods(api: &Client, namespace: &str) -> Vec<Value> {
    api.list(Kind::Pod, Some(namespace), &Default::default())
        .await
        .unwrap()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_activation_writes_the_first_pod_with_the_replicas() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin = client(&plane, &cluster.admin_token);
    let created = deploy(&admin, "default", "fn").await;

    let answer = admin.activate_service("default", "fn").await.unwrap();
    assert_eq!(answer["activated"], json!(["fn"]));
    let deployment = admin
        .get(Kind::Deployment, Some("default"), "fn")
        .await
        .unwrap();
    assert_eq!(deployment["spec"]["replicas"], 1);
    let pods = pods(&admin, "default").await;
    assert_eq!(pods.len(), 1, "{pods:#?}");
    let pod = &pods[0];
    // As the Deployment controller makes its pods: owned, labelled with
    // the template's hash, annotated with the revision.
    let owner = &pod["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Deployment");
    assert_eq!(owner["uid"], created["metadata"]["uid"]);
    assert_eq!(owner["controller"], true);
    assert_eq!(pod["metadata"]["labels"]["app"], "fn");
    assert!(
        pod["metadata"]["labels"]["skiff.dev/template-hash"].is_string(),
        "{pod:#}"
    );
    assert_eq!(pod["metadata"]["annotations"]["skiff.dev/revision"], "1");
    assert_eq!(pod["spec"]["resources"]["memory"], "16Mi");
    // One transaction: the pod's revision follows the replicas' change.
    let revision = |o: &Value| {
        o["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
    };
    // One transaction: the Deployment's change, its replicas and the
    // status they make in one (it is not written again after its pod),
    // then the pod.
    assert_eq!(revision(pod), revision(&deployment) + 1);
    // The status is as its controller will find it: its first look has
    // nothing to write and no pod to make.
    let stored: skiff_api::kinds::deployment::Deployment =
        serde_json::from_value(deployment.clone()).unwrap();
    let status = stored.status.clone().expect("a status was written");
    assert_eq!(
        (
            status.replicas,
            status.updated_replicas,
            status.ready_replicas
        ),
        (1, 1, 0)
    );
    assert_eq!(status.observed_generation, stored.metadata.generation);
    let plan = control_plane::controllers::deployments::plan(
        &stored,
        &[serde_json::from_value(pod.clone()).unwrap()],
        chrono::Utc::now(),
    );
    assert!(plan.steps.is_empty(), "{:?}", plan.steps);

    // Off zero now: asking again changes nothing.
    let again = admin.activate_service("default", "fn").await.unwrap();
    assert_eq!(again["activated"], json!([]));
    assert_eq!(self::pods(&admin, "default").await.len(), 1);
}

/// A pod the namespace's quota refuses is not written, and takes the
/// replicas down with it neither: the Deployment is off zero, and its
/// controller makes (and reports on) the pods as it always does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_pod_the_quota_refuses_leaves_the_replicas_set_and_nothing_counted() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin = client(&plane, &cluster.admin_token);
    create_namespace(&admin, "capped", json!({})).await;
    admin
        .create(
            Kind::ResourceQuota,
            Some("capped"),
            &json!({"apiVersion": skiff_api::API_VERSION, "kind": "ResourceQuota",
                "metadata": {"name": "caps"}, "spec": {"hard": {"pods": "0"}}}),
        )
        .await
        .unwrap();
    deploy(&admin, "capped", "fn").await;

    let answer = admin.activate_service("capped", "fn").await.unwrap();
    assert_eq!(answer["activated"], json!(["fn"]));
    let deployment = admin
        .get(Kind::Deployment, Some("capped"), "fn")
        .await
        .unwrap();
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert!(pods(&admin, "capped").await.is_empty());
    let quota = admin
        .get(Kind::ResourceQuota, Some("capped"), "caps")
        .await
        .unwrap();
    assert_eq!(quota["status"]["used"]["pods"], "0", "{quota:#}");
}

/// A store of the cluster's database, as a control plane opens it, with
/// the directory holding its key (kept while the store is used).
fn store_of(cluster: &Cluster) -> (control_plane::store::Store, tempfile::TempDir) {
    use control_plane::encryption::Keyring;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    Keyring::create_file(&keys).unwrap();
    let store = control_plane::store::Store::connect(
        &cluster.database_url,
        &Default::default(),
        std::sync::Arc::new(Keyring::load(&keys).unwrap()),
    )
    .unwrap();
    (store, dir)
}

/// ConfigMap `name` of `default` holding `value`.
fn config_map(name: &str, value: &str) -> Value {
    json!({"apiVersion": skiff_api::API_VERSION, "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"}, "data": {"k": value}})
}

/// A group of writes is all or none, and `Unchanged` makes it conditional
/// on an object it does not change: what the activation and the
/// Deployment controller's deletions rely on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_group_is_all_or_none() {
    use control_plane::store::{ObjectKey, Part, StoreError, Write};

    let cluster = Cluster::new();
    let (store, _keys) = store_of(&cluster);
    let key = |name: &str| ObjectKey::new(Kind::ConfigMap, "default", name);
    let create = |name: &str| Write::Create {
        key: key(name),
        object: config_map(name, "v"),
    };
    let revision = |o: &Value| {
        o["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
    };
    let a = store.write(create("a")).await.unwrap();

    // Conditional on `a` as it is: both written.
    let unchanged = |expected_revision| Write::Unchanged {
        key: key("a"),
        expected_revision,
    };
    let both = store
        .write(Write::All(vec![unchanged(revision(&a)), create("b")]))
        .await
        .unwrap();
    assert_eq!(both.as_array().unwrap().len(), 2);
    assert!(store.get(&key("b")).await.unwrap().is_some());

    // `a` changed since: nothing written, and the conflict is the answer.
    let update = |value: &str, expected_revision| Write::Update {
        key: key("a"),
        object: config_map("a", value),
        part: Part::Main,
        expected_revision,
    };
    let changed = store.write(update("w", None)).await.unwrap();
    let refused = store
        .write(Write::All(vec![unchanged(revision(&a)), create("c")]))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict { .. })),
        "{refused:?}"
    );
    assert!(store.get(&key("c")).await.unwrap().is_none());

    // A write refused after one that went through undoes it.
    let refused = store
        .write(Write::All(vec![
            update("x", Some(revision(&changed))),
            create("b"),
        ]))
        .await;
    assert!(
        matches!(refused, Err(StoreError::AlreadyExists(_))),
        "{refused:?}"
    );
    let now = store.get(&key("a")).await.unwrap().unwrap();
    assert_eq!(now["data"]["k"], "w");
    assert_eq!(revision(&now), revision(&changed));
    // And the revisions it took are handed out again, with no gap.
    let next = store.write(create("d")).await.unwrap();
    assert_eq!(revision(&next), revision(&changed) + 1);
}

/// An update of the object as the caller read it is written without the
/// batch reading it again, and means what an update conditional on its
/// revision means: refused once the object changed or went, and never
/// taken from a copy changed since it was read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_of_what_was_read_is_conditional_on_it() {
    use control_plane::store::{ObjectKey, Part, StoreError, Write};

    let cluster = Cluster::new();
    let (store, _keys) = store_of(&cluster);
    let key = |name: &str| ObjectKey::new(Kind::ConfigMap, "default", name);
    let update = |read: &Value, value: &str| {
        let mut object = read.clone();
        object["data"]["k"] = value.into();
        Write::UpdateRead {
            key: key(read["metadata"]["name"].as_str().unwrap()),
            object,
            part: Part::Main,
            read: read.clone(),
        }
    };
    let read = store
        .write(Write::Create {
            key: key("a"),
            object: config_map("a", "v"),
        })
        .await
        .unwrap();
    let written = store.write(update(&read, "w")).await.unwrap();
    assert_eq!(written["data"]["k"], "w");
    assert_eq!(revision_of(&written), revision_of(&read) + 1);
    let stored = store.get(&key("a")).await.unwrap().unwrap();
    assert_eq!(stored, written);
    // The change watchers get names what it was.
    let changes = |after: &Value| {
        let store = store.clone();
        let after = revision_of(after);
        async move {
            store
                .changes_after(after, 10, 1 << 20)
                .await
                .unwrap()
                .changes
        }
    };
    let after_read = changes(&read).await;
    assert_eq!(after_read.len(), 1, "{after_read:?}");
    assert_eq!(after_read[0].object, written);
    assert_eq!(after_read[0].previous.as_ref(), Some(&read));

    // From a read the object has moved on from: a conflict, nothing written.
    let stale = store.write(update(&read, "x")).await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "{stale:?}"
    );
    assert_eq!(store.get(&key("a")).await.unwrap().unwrap(), written);

    // A copy changed since it was read, at the stored revision: what is
    // stored decides, so the server's fields stay the server's.
    let mut tampered = written.clone();
    tampered["metadata"]["uid"] = "not-its-uid".into();
    tampered["metadata"]["creationTimestamp"] = "1970-01-01T00:00:00Z".into();
    let through = store.write(update(&tampered, "y")).await.unwrap();
    assert_eq!(through["data"]["k"], "y");
    assert_eq!(through["metadata"]["uid"], written["metadata"]["uid"]);
    assert_eq!(
        through["metadata"]["creationTimestamp"],
        written["metadata"]["creationTimestamp"]
    );
    let after_written = changes(&written).await;
    assert_eq!(after_written.len(), 1, "{after_written:?}");
    assert_eq!(after_written[0].previous.as_ref(), Some(&written));

    // Gone: not found, and nothing is made again.
    store
        .write(Write::Delete {
            key: key("a"),
            expected_revision: None,
            expected_uid: None,
        })
        .await
        .unwrap();
    let gone = store.write(update(&through, "z")).await;
    assert!(matches!(gone, Err(StoreError::NotFound(_))), "{gone:?}");
    assert!(store.get(&key("a")).await.unwrap().is_none());
}

/// A create the insert itself checks (its namespace exists, no quota
/// applies) still meets a missing namespace, a name taken and a quota,
/// in a process that never saw the quota before as in one that did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_in_one_statement_still_meets_its_namespace_and_quotas() {
    use control_plane::store::{ObjectKey, StoreError, Write};

    let cluster = Cluster::new();
    let (store, keys) = store_of(&cluster);
    let create = |kind: Kind, namespace: &str, name: &str, extra: Value| {
        let mut object = json!({"apiVersion": skiff_api::API_VERSION, "kind": kind.name(),
            "metadata": {"name": name, "namespace": namespace}});
        if let (Some(object), Some(extra)) = (object.as_object_mut(), extra.as_object()) {
            object.extend(extra.clone());
        }
        Write::Create {
            key: ObjectKey::new(kind, namespace, name),
            object,
        }
    };
    let config_map =
        |namespace: &str, name: &str| create(Kind::ConfigMap, namespace, name, json!({}));

    let nowhere = store.write(config_map("nowhere", "a")).await;
    assert!(
        matches!(nowhere, Err(StoreError::NamespaceNotFound(_))),
        "{nowhere:?}"
    );
    store.write(config_map("default", "a")).await.unwrap();
    let taken = store.write(config_map("default", "a")).await;
    assert!(
        matches!(taken, Err(StoreError::AlreadyExists(_))),
        "{taken:?}"
    );

    store
        .write(Write::Create {
            key: ObjectKey::namespace("capped"),
            object: json!({"apiVersion": skiff_api::API_VERSION, "kind": "Namespace",
                "metadata": {"name": "capped"}}),
        })
        .await
        .unwrap();
    store
        .write(create(
            Kind::ResourceQuota,
            "capped",
            "caps",
            json!({"spec": {"hard": {"configmaps": "1"}}}),
        ))
        .await
        .unwrap();
    store.write(config_map("capped", "first")).await.unwrap();
    let over = store.write(config_map("capped", "second")).await;
    assert!(
        matches!(over, Err(StoreError::QuotaExceeded(_))),
        "{over:?}"
    );
    // Another process, which has not met the quota yet.
    let other = control_plane::store::Store::connect(
        &cluster.database_url,
        &Default::default(),
        std::sync::Arc::new(
            control_plane::encryption::Keyring::load(&keys.path().join("keys")).unwrap(),
        ),
    )
    .unwrap();
    let over = other.write(config_map("capped", "second")).await;
    assert!(
        matches!(over, Err(StoreError::QuotaExceeded(_))),
        "{over:?}"
    );
    assert!(
        store
            .get(&ObjectKey::new(Kind::ConfigMap, "capped", "second"))
            .await
            .unwrap()
            .is_none()
    );
    // Kinds no quota counts are not held up by one.
    store
        .write(create(
            Kind::Event,
            "capped",
            "e",
            json!({"reason": "Checked"}),
        ))
        .await
        .unwrap();
}

/// Groups committed in one batch stand or fall each on its own: one
/// refused after its first write undoes only that write, not the groups
/// before or after it in the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_in_one_batch_fall_alone() {
    use control_plane::store::{ObjectKey, StoreError, Write};

    let cluster = Cluster::new();
    let (store, _keys) = store_of(&cluster);
    let key = |name: &str| ObjectKey::new(Kind::ConfigMap, "default", name);
    let create = |name: &str| Write::Create {
        key: key(name),
        object: json!({"apiVersion": skiff_api::API_VERSION, "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"}}),
    };
    store.write(create("taken")).await.unwrap();
    // Sent together, in this order (the writer takes what is queued into
    // one batch): every third group is refused at its second write.
    let groups = (0..30).map(|n| {
        let second = if n % 3 == 1 {
            create("taken")
        } else {
            create(&format!("second-{n}"))
        };
        store.write(Write::All(vec![create(&format!("first-{n}")), second]))
    });
    let outcomes = futures::future::join_all(groups).await;
    for (n, outcome) in outcomes.iter().enumerate() {
        let first = store.get(&key(&format!("first-{n}"))).await.unwrap();
        if n % 3 == 1 {
            assert!(
                matches!(outcome, Err(StoreError::AlreadyExists(_))),
                "{n}: {outcome:?}"
            );
            assert!(first.is_none(), "{n}: its first write is undone");
        } else {
            assert!(outcome.is_ok(), "{n}: {outcome:?}");
            assert!(first.is_some(), "{n}");
            assert!(
                store
                    .get(&key(&format!("second-{n}")))
                    .await
                    .unwrap()
                    .is_some()
            );
        }
    }
}

/// A write after a group undone in its batch finds the objects as they
/// were before the group, not as the group wrote them: the writer keeps
/// what a batch wrote (so a second write of an object need not read it
/// back) and must forget what a group's rollback undid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_a_group_undone_in_its_batch_finds_what_was_before() {
    use control_plane::store::{ObjectKey, Part, Write};

    let cluster = Cluster::new();
    let (store, _keys) = store_of(&cluster);
    let key = |name: &str| ObjectKey::new(Kind::ConfigMap, "default", name);
    let update = |name: &str, value: &str, expected: &Value| Write::Update {
        key: key(name),
        object: config_map(name, value),
        part: Part::Main,
        expected_revision: expected["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|rv| rv.parse().ok()),
    };
    store
        .write(Write::Create {
            key: key("taken"),
            object: config_map("taken", "v"),
        })
        .await
        .unwrap();
    let mut originals = Vec::new();
    for n in 0..20 {
        let name = format!("cm-{n}");
        let object = config_map(&name, "before");
        originals.push(
            store
                .write(Write::Create {
                    key: key(&name),
                    object,
                })
                .await
                .unwrap(),
        );
    }
    // Sent together, so most pairs share a batch: each group updates its
    // object and is then refused; the write after it expects the object
    // at the revision it had before the group.
    let writes = originals.iter().enumerate().flat_map(|(n, original)| {
        let name = format!("cm-{n}");
        let group = Write::All(vec![
            update(&name, "undone", original),
            Write::Create {
                key: key("taken"),
                object: config_map("taken", "again"),
            },
        ]);
        [
            store.write(group),
            store.write(update(&name, "after", original)),
        ]
    });
    let outcomes = futures::future::join_all(writes).await;
    for (n, pair) in outcomes.chunks(2).enumerate() {
        assert!(
            pair[0].is_err(),
            "cm-{n}: the group is refused: {:?}",
            pair[0]
        );
        assert!(pair[1].is_ok(), "cm-{n}: the write after it: {:?}", pair[1]);
        let stored = store.get(&key(&format!("cm-{n}"))).await.unwrap().unwrap();
        assert_eq!(stored["data"]["k"], "after", "cm-{n}");
    }
}

/// A group's second write of an object finds it as the first wrote it,
/// and a namespace deleted in a batch exists no more for the writes after
/// it there, though an object read earlier in the batch showed it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_in_one_group_see_each_other() {
    use control_plane::store::{ObjectKey, Part, StoreError, Write};

    let cluster = Cluster::new();
    let (store, _keys) = store_of(&cluster);
    let namespace = json!({"apiVersion": skiff_api::API_VERSION, "kind": "Namespace",
        "metadata": {"name": "doomed"}});
    store
        .write(Write::Create {
            key: ObjectKey::namespace("doomed"),
            object: namespace,
        })
        .await
        .unwrap();
    let key = |name: &str| ObjectKey::new(Kind::ConfigMap, "doomed", name);
    let config_map = |name: &str, value: &str| {
        json!({"apiVersion": skiff_api::API_VERSION, "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "doomed"}, "data": {"k": value}})
    };
    let created = store
        .write(Write::Create {
            key: key("a"),
            object: config_map("a", "1"),
        })
        .await
        .unwrap();
    let revision = |o: &Value| -> i64 {
        o["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let update = |value: &str, expected_revision| Write::Update {
        key: key("a"),
        object: config_map("a", value),
        part: Part::Main,
        expected_revision,
    };
    // The second update expects the revision the first one wrote.
    let written = store
        .write(Write::All(vec![
            update("2", Some(revision(&created))),
            update("3", Some(revision(&created) + 1)),
        ]))
        .await
        .unwrap();
    assert_eq!(written[1]["data"]["k"], "3");
    assert_eq!(revision(&written[1]), revision(&created) + 2);
    // And refuses one that expects the revision before it.
    let stale = store
        .write(Write::All(vec![
            update("4", Some(revision(&written[1]))),
            update("5", Some(revision(&written[1]))),
        ]))
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "{stale:?}"
    );

    let delete_namespace = || Write::Delete {
        key: ObjectKey::namespace("doomed"),
        expected_revision: None,
        expected_uid: None,
    };
    // Reading `a` shows the namespace exists; deleting the namespace then
    // takes that along: nothing is created in it afterwards.
    let refused = store
        .write(Write::All(vec![
            update("6", None),
            delete_namespace(),
            Write::Create {
                key: key("b"),
                object: config_map("b", "1"),
            },
        ]))
        .await;
    assert!(
        matches!(refused, Err(StoreError::NamespaceNotFound(_))),
        "{refused:?}"
    );
    // Nor are its objects, even one the batch wrote before.
    let refused = store
        .write(Write::All(vec![
            update("6", None),
            delete_namespace(),
            update("9", None),
        ]))
        .await;
    assert!(
        matches!(refused, Err(StoreError::NotFound(_))),
        "{refused:?}"
    );
    // Nor is an object's update found once it is deleted.
    let refused = store
        .write(Write::All(vec![
            update("7", None),
            Write::Delete {
                key: key("a"),
                expected_revision: None,
                expected_uid: None,
            },
            update("7", None),
        ]))
        .await;
    assert!(
        matches!(refused, Err(StoreError::NotFound(_))),
        "{refused:?}"
    );
    assert_eq!(
        store.get(&key("a")).await.unwrap().unwrap()["data"]["k"],
        "3"
    );
}

/// A list with no limit carries the revision it reflects, read in the
/// same snapshot as its objects, even when nothing matches; its objects
/// come in namespace and name order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_list_carries_the_revision_of_its_objects() {
    use control_plane::store::{ListQuery, ObjectKey, Write};

    let cluster = Cluster::new();
    let (store, _keys) = store_of(&cluster);
    let empty = store
        .list(Kind::ConfigMap, ListQuery::default())
        .await
        .unwrap();
    assert!(empty.items.is_empty());
    assert_eq!(empty.revision, store.current_revision().await.unwrap());
    for name in ["c", "a", "b"] {
        store
            .write(Write::Create {
                key: ObjectKey::new(Kind::ConfigMap, "default", name),
                object: json!({"apiVersion": skiff_api::API_VERSION, "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": "default"}}),
            })
            .await
            .unwrap();
    }
    let listed = store
        .list(Kind::ConfigMap, ListQuery::default())
        .await
        .unwrap();
    let names: Vec<&str> = listed
        .items
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(listed.revision, store.current_revision().await.unwrap());
    assert!(listed.revision > empty.revision);
    // Still the revision when the kind has nothing.
    let none = store
        .list(Kind::Secret, ListQuery::default())
        .await
        .unwrap();
    assert!(none.items.is_empty());
    assert_eq!(none.revision, listed.revision);
}

/// An urgent write (an activation's) is committed ahead of the writes
/// queued with it, not after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_urgent_write_goes_ahead_of_those_queued_with_it() {
    use control_plane::store::{ObjectKey, Write};

    let cluster = Cluster::new();
    let (store, _keys) = store_of(&cluster);
    let create = |name: &str| Write::Create {
        key: ObjectKey::new(Kind::ConfigMap, "default", name),
        object: json!({"apiVersion": skiff_api::API_VERSION, "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"}}),
    };
    // Queued in this order: sixty writes, then the urgent one. In order,
    // the urgent one would take the last revision.
    let mut writes: Vec<futures::future::BoxFuture<'_, _>> = (0..60)
        .map(|n| Box::pin(store.write(create(&format!("queued-{n}")))) as _)
        .collect();
    writes.push(Box::pin(store.write_urgent(create("urgent"))));
    let written = futures::future::join_all(writes).await;
    let revisions: Vec<i64> = written
        .iter()
        .map(|w| {
            w.as_ref().unwrap()["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let (urgent, queued) = revisions.split_last().unwrap();
    assert!(
        urgent < queued.iter().max().unwrap(),
        "the urgent write took revision {urgent}, after every queued one: {queued:?}"
    );
}

/// Asked by a node, the activation binds the first pod to it when the
/// scheduler would have: it fits what the node's lease, status and bound
/// pods say, and its runtime is one the node runs. Otherwise the pod is
/// written unbound, for the scheduler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_fits_the_first_pod_has_it_bound_by_the_activation() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin = client(&plane, &cluster.admin_token);
    // Pods here may be Linux ones: a Restricted namespace (the default's
    // level) would make every pod a component.
    create_namespace(
        &admin,
        "open",
        json!({"policy": {"podSecurity": "Privileged"}}),
    )
    .await;
    let room = json!({"allocatable": {"memory": "1Gi", "instances": 10}});
    for name in ["wasm", "full"] {
        ready_node(&admin, name, room.clone()).await;
    }
    ready_node(&admin, "both", room.clone()).await;
    let mut both = admin.get(Kind::Node, None, "both").await.unwrap();
    both["metadata"]["labels"] = json!({"skiff.dev/runtime-linux": "true"});
    admin
        .replace(Kind::Node, None, "both", &both)
        .await
        .unwrap();
    // Registered, but its lease was never renewed: not Ready.
    admin
        .create(
            Kind::Node,
            None,
            &json!({"apiVersion": skiff_api::API_VERSION, "kind": "Node",
                "metadata": {"name": "lapsed"}, "spec": {}}),
        )
        .await
        .unwrap();
    // Deploys `function` at zero, has `node` (or, without one, a tenant
    // editor of the namespace) activate it, and answers where its first
    // pod was written bound to. The activation's answer carries that pod,
    // as stored, when it was bound to the node asking, and no pod else.
    let editor = token(&admin, Some("open"), "edit", None).await;
    let placed = async |function: &str, memory: &str, runtime: Option<&str>, node: &str| {
        deploy_function(
            &admin,
            "open",
            function_with(function, json!({"memory": memory}), runtime),
        )
        .await;
        let asker = match node {
            "" => editor.clone(),
            node => token(&admin, None, "node", Some(node)).await,
        };
        let answer = client(&plane, &asker)
            .activate_service("open", function)
            .await
            .unwrap();
        let pods = pods(&admin, "open").await;
        let pod = pods
            .iter()
            .find(|p| p["metadata"]["labels"]["app"] == function)
            .unwrap_or_else(|| panic!("no pod of {function}: {pods:#?}"));
        let bound_here = !node.is_empty() && pod["spec"]["nodeName"] == node;
        let expected: Vec<Value> = if bound_here {
            vec![pod.clone()]
        } else {
            Vec::new()
        };
        assert_eq!(answer["pods"], json!(expected), "{function}");
        pod["spec"]["nodeName"].as_str().map(str::to_owned)
    };
    let wasm = Some("Wasm");

    // A Wasm pod on a node with room: bound there, in the same write.
    assert_eq!(
        placed("fits", "16Mi", wasm, "wasm").await.as_deref(),
        Some("wasm")
    );
    // Its runtime unknown (no scheduler here has looked its image up): a
    // node without containerd may not run it; one with it runs either.
    assert_eq!(placed("unknown", "16Mi", None, "wasm").await, None);
    assert_eq!(
        placed("either", "16Mi", None, "both").await.as_deref(),
        Some("both")
    );
    // Too big for the node, or the node not Ready: left to the scheduler.
    assert_eq!(placed("big", "2Gi", wasm, "wasm").await, None);
    assert_eq!(placed("away", "16Mi", wasm, "lapsed").await, None);
    // A tenant's activation names no node: however much room there is,
    // its pod is the scheduler's to place.
    assert_eq!(placed("tenant", "16Mi", wasm, "").await, None);

    // What the node's pods request counts, until they finish.
    let mut hog = json!({"apiVersion": skiff_api::API_VERSION, "kind": "Pod",
        "metadata": {"name": "hog"},
        "spec": {"image": "127.0.0.1:5000/hog:v1", "nodeName": "full",
                 "resources": {"memory": "1000Mi"}}});
    hog = admin.create(Kind::Pod, Some("open"), &hog).await.unwrap();
    assert_eq!(placed("crowded", "64Mi", wasm, "full").await, None);
    hog["status"] = json!({"phase": "Succeeded"});
    admin
        .replace_status(Kind::Pod, Some("open"), "hog", &hog)
        .await
        .unwrap();
    assert_eq!(
        placed("after", "64Mi", wasm, "full").await.as_deref(),
        Some("full")
    );
}

/// Activations that a node asks for at once never bind more than the
/// node has room for between them; the pods that would not fit, or whose
/// activation found the node being bound to, go to the scheduler. And
/// what the activation wrote is told as the controller and the scheduler
/// would have told it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activations_at_once_never_bind_beyond_a_nodes_room() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin = client(&plane, &cluster.admin_token);
    // Room for one pod of 48Mi.
    ready_node(
        &admin,
        "small",
        json!({"allocatable": {"memory": "64Mi", "instances": 10}}),
    )
    .await;
    let names: Vec<String> = (0..8).map(|i| format!("fn-{i}")).collect();
    for name in &names {
        deploy_function(
            &admin,
            "default",
            function_with(name, json!({"memory": "48Mi"}), Some("Wasm")),
        )
        .await;
    }
    let node = client(&plane, &token(&admin, None, "node", Some("small")).await);
    let asked: Vec<_> = names
        .iter()
        .map(|name| {
            let (node, name) = (node.clone(), name.clone());
            tokio::spawn(async move { node.activate_service("default", &name).await })
        })
        .collect();
    for answer in asked {
        assert_eq!(
            answer.await.unwrap().unwrap()["activated"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
    let pods = pods(&admin, "default").await;
    assert_eq!(pods.len(), 8, "{pods:#?}");
    let bound: Vec<&Value> = pods
        .iter()
        .filter(|p| p["spec"]["nodeName"] == "small")
        .collect();
    assert!(bound.len() <= 1, "{bound:#?}");

    // Told: a SuccessfulCreate for each, a Scheduled for the one bound.
    let events = |reason: &'static str| {
        let admin = admin.clone();
        async move {
            admin
                .list(Kind::Event, Some("default"), &Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|e| e["reason"] == reason)
                .count()
        }
    };
    crate::support::eventually(
        "a SuccessfulCreate per pod",
        || events("SuccessfulCreate"),
        |n| *n == 8,
    )
    .await;
    crate::support::eventually(
        "a Scheduled per bound pod",
        || events("Scheduled"),
        |n| *n == bound.len(),
    )
    .await;
}

/// Every GIN index of `objects` takes its entries into the index itself:
/// a pending list would be read whole by every search until vacuum merged
/// it, and every write adds to it (the activation's read took 3.1 ms
/// instead of 0.2 ms among 1,000 functions just created).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_gin_index_of_objects_keeps_a_pending_list() {
    let cluster = Cluster::new();
    let (store, _keys) = store_of(&cluster);
    let indexes = store.object_indexes("gin").await.unwrap();
    let names: Vec<&str> = indexes.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "objects_labels",
            "objects_owners",
            "objects_template_labels"
        ]
    );
    for (name, options) in &indexes {
        assert!(
            options.iter().any(|option| option == "fastupdate=off"),
            "{name}: {options:?}"
        );
    }
}

/// The Deployments a Service selects are found by index, not by reading
/// every Deployment of a namespace of many functions; so are their pods,
/// and the activation reads all of it in one statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_services_deployments_are_looked_up_by_index() {
    use control_plane::store::{JsonFilter, ListQuery, ObjectKey, Write};

    let cluster = Cluster::new();
    let (store, _keys) = store_of(&cluster);
    let mut creates = Vec::new();
    for i in 0..300 {
        let name = format!("fn-{i}");
        let (mut deployment, mut service) = function(&name);
        deployment["metadata"]["namespace"] = "default".into();
        service["metadata"]["namespace"] = "default".into();
        creates.push(Write::Create {
            key: ObjectKey::new(Kind::Deployment, "default", &name),
            object: deployment,
        });
        creates.push(Write::Create {
            key: ObjectKey::new(Kind::Service, "default", &name),
            object: service,
        });
    }
    let written = store.write(Write::All(creates)).await.unwrap();
    // A pod of each Deployment, two of fn-7's (one being deleted), and
    // one with fn-7's labels that it does not own.
    let pod = |name: &str, app: &str, owner: Option<&Value>| {
        let mut pod = json!({"apiVersion": skiff_api::API_VERSION, "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
            "spec": {"image": "127.0.0.1:5000/hello:v1"}});
        if let Some(owner) = owner {
            pod["metadata"]["ownerReferences"] = json!([{"apiVersion": skiff_api::API_VERSION,
                "kind": "Deployment", "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"], "controller": true}]);
        }
        Write::Create {
            key: ObjectKey::new(Kind::Pod, "default", name),
            object: pod,
        }
    };
    let deployments: Vec<&Value> = written.as_array().unwrap().iter().step_by(2).collect();
    let mut pods: Vec<Write> = deployments
        .iter()
        .map(|d| {
            let name = d["metadata"]["name"].as_str().unwrap();
            pod(&format!("{name}-a"), name, Some(d))
        })
        .collect();
    pods.push(pod("fn-7-b", "fn-7", Some(deployments[7])));
    pods.push(pod("fn-7-stray", "fn-7", None));
    store.write(Write::All(pods)).await.unwrap();
    store.analyze().await.unwrap();

    // The endpoints controller's lookup.
    let selector = json!({"app": "fn-7"});
    let filter = [JsonFilter::Contains(
        &["spec", "template", "metadata", "labels"],
        &selector,
    )];
    let query = || ListQuery {
        namespace: Some("default"),
        json: &filter,
        ..Default::default()
    };
    let plan = store.explain_list(Kind::Deployment, query()).await.unwrap();
    assert!(plan.contains("objects_template_labels"), "{plan}");
    let found = store.list(Kind::Deployment, query()).await.unwrap();
    let names: Vec<&str> = found
        .items
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fn-7"]);

    // The activation's.
    let plan = store
        .explain_service_backends("default", "fn-7")
        .await
        .unwrap();
    assert!(plan.contains("objects_template_labels"), "{plan}");
    assert!(plan.contains("objects_owners"), "{plan}");
    let backends = store
        .service_backends("default", "fn-7")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(backends.service["metadata"]["name"], "fn-7");
    let found: Vec<(&str, Vec<&str>)> = backends
        .deployments
        .iter()
        .map(|(d, pods)| {
            let pods = pods.iter().map(|p| p["metadata"]["name"].as_str().unwrap());
            (d["metadata"]["name"].as_str().unwrap(), pods.collect())
        })
        .collect();
    assert_eq!(found, [("fn-7", vec!["fn-7-a", "fn-7-b"])]);
    // No such Service; a Service that selects nothing.
    assert!(
        store
            .service_backends("default", "nope")
            .await
            .unwrap()
            .is_none()
    );
    let mut empty = function("empty").1;
    empty["metadata"]["namespace"] = "default".into();
    empty["spec"]["selector"] = json!({});
    store
        .write(Write::Create {
            key: ObjectKey::new(Kind::Service, "default", "empty"),
            object: empty,
        })
        .await
        .unwrap();
    let backends = store
        .service_backends("default", "empty")
        .await
        .unwrap()
        .unwrap();
    assert!(backends.deployments.is_empty());
}
