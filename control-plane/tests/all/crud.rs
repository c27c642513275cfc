//! Create, read, list, update, patch, status and delete for every kind.

use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_client::ListOptions;

use crate::support::{Cluster, client, namespace_of, object, revision_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_goes_through_its_whole_life() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let api = client(&plane, &cluster.admin_token);
    for kind in Kind::ALL {
        let name = format!("life-{}", kind.plural());
        let ns = namespace_of(kind);

        let created = api.create(kind, ns, &object(kind, &name)).await.unwrap();
        assert_eq!(created["metadata"]["name"], name.as_str(), "{kind}");
        assert!(
            created["metadata"]["uid"]
                .as_str()
                .is_some_and(|u| u.len() == 36),
            "{kind}"
        );
        assert_eq!(created["metadata"]["generation"], 1, "{kind}");
        assert!(
            created["metadata"]["creationTimestamp"].is_string(),
            "{kind}"
        );
        let created_rv = revision_of(&created);

        assert_eq!(api.get(kind, ns, &name).await.unwrap(), created, "{kind}");

        let listed = api
            .list(
                kind,
                ns,
                &ListOptions {
                    label_selector: Some(format!("app={name}")),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(listed.items, vec![created.clone()], "{kind}");
        assert!(listed.metadata.resource_version.parse::<i64>().unwrap() >= created_rv);

        // A replace with the current resourceVersion: labels always change;
        // the desired state too where the kind allows it.
        let mut changed = created.clone();
        changed["metadata"]["labels"]["tier"] = json!("front");
        let spec_changed = change_desired_state(kind, &mut changed);
        let updated = api.replace(kind, ns, &name, &changed).await.unwrap();
        assert!(revision_of(&updated) > created_rv, "{kind}");
        assert_eq!(updated["metadata"]["labels"]["tier"], "front", "{kind}");
        assert_eq!(
            updated["metadata"]["generation"],
            if spec_changed { 2 } else { 1 },
            "{kind}"
        );
        assert_eq!(
            updated["metadata"]["uid"], created["metadata"]["uid"],
            "{kind}"
        );

        let patched = api
            .patch(
                kind,
                ns,
                &name,
                &json!({"metadata": {"annotations": {"patched": "yes"}}}),
                false,
            )
            .await
            .unwrap();
        assert_eq!(
            patched["metadata"]["annotations"]["patched"], "yes",
            "{kind}"
        );
        assert!(revision_of(&patched) > revision_of(&updated));

        if let Some(status) = status_for(kind) {
            let mut with_status = patched.clone();
            with_status["status"] = status.clone();
            let stored = api
                .replace_status(kind, ns, &name, &with_status)
                .await
                .unwrap();
            for (key, value) in status.as_object().unwrap() {
                assert_eq!(&stored["status"][key], value, "{kind} status.{key}");
            }
            assert_eq!(
                stored["spec"], patched["spec"],
                "status writes leave the spec"
            );
            assert_eq!(
                stored["metadata"]["generation"],
                patched["metadata"]["generation"]
            );
            // And a main replace leaves the status alone.
            let mut stale_status = stored.clone();
            stale_status["status"] = json!({});
            stale_status["metadata"]["labels"]["x"] = json!("y");
            let replaced = api.replace(kind, ns, &name, &stale_status).await.unwrap();
            assert_eq!(replaced["status"], stored["status"], "{kind}");
        }

        let deleted = api.delete(kind, ns, &name, None).await.unwrap();
        assert!(
            deleted["metadata"]["deletionTimestamp"].is_string(),
            "{kind}"
        );
        let gone = api.get(kind, ns, &name).await.unwrap_err();
        assert_eq!(gone.code(), Some(404), "{kind}");
        assert_eq!(
            gone.to_string(),
            format!("{} \"{name}\" not found", kind.plural())
        );
    }
}

/// Changes the desired state of `object` where updates may; returns
/// whether it did (pods are immutable).
fn change_desired_state(kind: Kind, object: &mut Value) -> bool {
    match kind {
        Kind::Namespace | Kind::Pod => false,
        Kind::Node => {
            object["spec"]["unschedulable"] = json!(true);
            true
        }
        Kind::Deployment => {
            object["spec"]["replicas"] = json!(5);
            true
        }
        Kind::Service => {
            object["spec"]["ports"] = json!([{"port": 8080}]);
            true
        }
        Kind::Route => {
            object["spec"]["path"] = json!("/v2");
            true
        }
        Kind::Secret => {
            object["data"]["extra"] = json!("eA==");
            true
        }
        Kind::ServiceAccount => {
            object["spec"]["role"] = json!("edit");
            true
        }
        Kind::ResourceQuota => {
            object["spec"]["hard"]["pods"] = json!("20");
            true
        }
        Kind::ConfigMap => {
            object["data"]["greeting"] = json!("hello");
            true
        }
        Kind::Event => {
            object["count"] = json!(2);
            true
        }
    }
}

fn status_for(kind: Kind) -> Option<Value> {
    match kind {
        Kind::Pod => {
            Some(json!({"phase": "Running", "restartCount": 2, "endpoint": "10.0.0.1:8080"}))
        }
        Kind::Deployment => {
            Some(json!({"replicas": 2, "readyReplicas": 1, "observedGeneration": 2}))
        }
        Kind::Node => Some(json!({
            "capacity": {"memory": "8Gi", "instances": 1000, "cpu": "2"},
            "conditions": [{"type": "Ready", "status": "True"}],
        })),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_are_refused_twice_and_outside_namespaces() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let api = client(&plane, &cluster.admin_token);
    api.create(Kind::Pod, Some("default"), &object(Kind::Pod, "once"))
        .await
        .unwrap();
    let again = api
        .create(Kind::Pod, Some("default"), &object(Kind::Pod, "once"))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Some(409));
    assert_eq!(again.to_string(), "pods \"once\" already exists");

    let nowhere = api
        .create(Kind::Pod, Some("nowhere"), &object(Kind::Pod, "p"))
        .await
        .unwrap_err();
    assert_eq!(nowhere.code(), Some(404));
    assert_eq!(nowhere.to_string(), "namespaces \"nowhere\" not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_immutable_but_bind_once() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let api = client(&plane, &cluster.admin_token);
    let pod = api
        .create(Kind::Pod, Some("default"), &object(Kind::Pod, "p"))
        .await
        .unwrap();

    let mut other_image = pod.clone();
    other_image["spec"]["image"] = json!("127.0.0.1:5000/other:v2");
    let err = api
        .replace(Kind::Pod, Some("default"), "p", &other_image)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(422));
    assert!(
        err.to_string()
            .starts_with("spec: a pod's spec cannot change"),
        "{err}"
    );

    let bound = api
        .patch(
            Kind::Pod,
            Some("default"),
            "p",
            &json!({"spec": {"nodeName": "n1"}}),
            false,
        )
        .await
        .unwrap();
    assert_eq!(bound["spec"]["nodeName"], "n1");
    let err = api
        .patch(
            Kind::Pod,
            Some("default"),
            "p",
            &json!({"spec": {"nodeName": "n2"}}),
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec.nodeName: the pod is bound to n1 and cannot move"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_filter_and_select() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let api = client(&plane, &cluster.admin_token);
    for i in 0..25 {
        let mut cm = object(Kind::ConfigMap, &format!("cm-{i:02}"));
        cm["metadata"]["labels"] =
            json!({"tier": if i % 2 == 0 { "front" } else { "back" }, "n": i.to_string()});
        api.create(Kind::ConfigMap, Some("default"), &cm)
            .await
            .unwrap();
    }

    let mut names = Vec::new();
    let mut options = ListOptions {
        limit: Some(10),
        ..Default::default()
    };
    let mut pages = 0;
    let mut revisions = Vec::new();
    loop {
        let page = api
            .list(Kind::ConfigMap, Some("default"), &options)
            .await
            .unwrap();
        pages += 1;
        revisions.push(page.metadata.resource_version.clone());
        names.extend(
            page.items
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned()),
        );
        match page.metadata.continue_token {
            Some(token) => options.continue_token = Some(token),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..25).map(|i| format!("cm-{i:02}")).collect();
    assert_eq!(names, expected, "every object once, in order");
    assert!(
        revisions.windows(2).all(|w| w[0] == w[1]),
        "one revision for the whole list"
    );

    let count = |selector: &str| {
        let api = api.clone();
        let selector = selector.to_owned();
        async move {
            api.list(
                Kind::ConfigMap,
                Some("default"),
                &ListOptions {
                    label_selector: Some(selector),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .items
            .len()
        }
    };
    assert_eq!(count("tier=front").await, 13);
    assert_eq!(count("tier!=front").await, 12);
    assert_eq!(count("n in (1,2,3)").await, 3);
    assert_eq!(count("n notin (1,2,3),tier=back").await, 10);
    assert_eq!(count("tier").await, 25);
    assert_eq!(count("!tier").await, 0);

    let bad = api
        .list(
            Kind::ConfigMap,
            Some("default"),
            &ListOptions {
                label_selector: Some("tier in front".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Some(400));
    assert!(bad.to_string().contains("parentheses"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_selectors_find_pods_by_node() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let api = client(&plane, &cluster.admin_token);
    for (name, node) in [("a", "n1"), ("b", "n2"), ("c", "n1"), ("d", "")] {
        let mut pod = object(Kind::Pod, name);
        if !node.is_empty() {
            pod["spec"]["nodeName"] = json!(node);
        }
        api.create(Kind::Pod, Some("default"), &pod).await.unwrap();
    }
    let on = |selector: &str| {
        let api = api.clone();
        let selector = selector.to_owned();
        async move {
            let list = api
                .list(
                    Kind::Pod,
                    None,
                    &ListOptions {
                        field_selector: Some(selector),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            list.items
                .iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(on("spec.nodeName=n1").await, ["a", "c"]);
    assert_eq!(on("spec.nodeName=").await, ["d"]);
    assert_eq!(on("spec.nodeName!=n1,metadata.name!=d").await, ["b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_deletes_what_is_in_it() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let api = client(&plane, &cluster.admin_token);
    api.create(Kind::Namespace, None, &object(Kind::Namespace, "doomed"))
        .await
        .unwrap();
    for kind in [Kind::Pod, Kind::Service, Kind::Secret] {
        api.create(kind, Some("doomed"), &object(kind, "x"))
            .await
            .unwrap();
    }
    api.create(Kind::Pod, Some("default"), &object(Kind::Pod, "x"))
        .await
        .unwrap();
    api.delete(Kind::Namespace, None, "doomed", None)
        .await
        .unwrap();
    for kind in [Kind::Pod, Kind::Service, Kind::Secret] {
        assert_eq!(
            api.get(kind, Some("doomed"), "x").await.unwrap_err().code(),
            Some(404)
        );
    }
    assert!(
        api.get(Kind::Pod, Some("default"), "x").await.is_ok(),
        "other namespaces keep theirs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_store_string_data_as_base64() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let api = client(&plane, &cluster.admin_token);
    let stored = api
        .create(Kind::Secret, Some("default"), &object(Kind::Secret, "keys"))
        .await
        .unwrap();
    assert_eq!(stored["data"]["password"], "aHVudGVyMg==");
    assert!(stored.get("stringData").is_none());
    assert_eq!(stored["type"], "Opaque");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uid_in_a_patch_is_a_precondition() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let api = client(&plane, &cluster.admin_token);
    let ns = Some("default");
    let first = api
        .create(Kind::ConfigMap, ns, &object(Kind::ConfigMap, "again"))
        .await
        .unwrap();
    let first_uid = first["metadata"]["uid"].clone();
    api.delete(Kind::ConfigMap, ns, "again", None)
        .await
        .unwrap();
    api.create(Kind::ConfigMap, ns, &object(Kind::ConfigMap, "again"))
        .await
        .unwrap();

    // Meant for the object that was deleted: refused, nothing written.
    let stale = json!({"metadata": {"uid": first_uid}, "data": {"k": "stale"}});
    let refused = api
        .patch(Kind::ConfigMap, ns, "again", &stale, false)
        .await
        .unwrap_err();
    assert!(refused.is_uid_mismatch(), "{refused}");
    let now = api.get(Kind::ConfigMap, ns, "again").await.unwrap();
    assert!(now["data"]["k"].is_null(), "{now:#}");

    let current = json!({"metadata": {"uid": now["metadata"]["uid"]}, "data": {"k": "v"}});
    let patched = api
        .patch(Kind::ConfigMap, ns, "again", &current, false)
        .await
        .unwrap();
    assert_eq!(patched["data"]["k"], "v");
}
