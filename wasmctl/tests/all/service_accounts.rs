//! Service accounts end to end, on real processes: made and given tokens
//! with wasmctl, and a pod that asked for its account's token finds it
//! in its sandbox, kept fresh by its node, acting with the account's role
//! and dead once the pod is gone.

use serde_json::json;
use testkit::wait_until;

use crate::nodes::{NodeCluster, WAIT, push};
use crate::support::{HttpResponse, http_request, test_guest};

const TOKEN_FILE: &str = "/var/run/secrets/skiff/serviceaccount/token";

fn read(cluster: &NodeCluster, pod: &str, path: &str) -> HttpResponse {
    let ingress = cluster.node("n1").ingress;
    http_request(
        ingress,
        &format!("{pod}.shop.pod"),
        &format!("/read?path={path}"),
        &[],
    )
    .expect("the node answers")
}

/// Whether `token` may list pods of shop, and create a ConfigMap there;
/// wasmctl's exit code for each (0, or 1 with one error line).
fn may(cluster: &NodeCluster, token: &str) -> (bool, bool) {
    let c = &cluster.cluster;
    c.ok(&[
        "config",
        "set-context",
        "probe",
        "--server",
        &c.plane.url.clone(),
        "--token",
        token,
        "--namespace",
        "shop",
    ]);
    let list = c.run(&["get", "pods", "--context", "probe"]);
    let write = c.run(&[
        "create",
        "configmap",
        "probe",
        "--from-literal",
        "a=b",
        "--context",
        "probe",
    ]);
    if write.status.success() {
        c.ok(&["delete", "configmap", "probe", "-n", "shop"]);
    }
    (list.status.success(), write.status.success())
}

#[test]
fn pods_get_their_accounts_token_kept_fresh_and_it_dies_with_them() {
    let cluster = NodeCluster::start(&[("n1", &["--pod-token-duration", "10s"])]);
    let image = format!("{}/misbehave:v1", cluster.registry.addr);
    push(&test_guest("misbehave"), &image);
    let c = &cluster.cluster;
    c.ok(&["create", "namespace", "shop"]);
    assert_eq!(
        c.ok(&[
            "create",
            "serviceaccount",
            "reader",
            "--role",
            "view",
            "-n",
            "shop"
        ])
        .trim(),
        "serviceaccount/reader created"
    );
    let refused = c.fails(&["create", "sa", "odd", "--role", "owner", "-n", "shop"], 2);
    assert_eq!(
        refused,
        "error: --role `owner`: must be view, edit or admin"
    );
    let listed = c.ok(&["get", "sa", "-n", "shop"]);
    assert!(
        listed
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["reader", "view"])),
        "{listed}"
    );

    // A person's token of the account, made with wasmctl.
    let held = c.ok(&[
        "create",
        "token",
        "--serviceaccount",
        "reader",
        "-n",
        "shop",
        "--duration",
        "10m",
    ]);
    let held = held.trim();
    assert!(held.starts_with("skf_sa."), "{held}");
    assert_eq!(may(&cluster, held), (true, false));

    let pod = |name: &str, automount: bool| {
        json!({
            "apiVersion": "skiff.dev/v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"image": image, "nodeName": "n1", "serviceAccountName": "reader",
                "automountServiceAccountToken": automount},
        })
    };
    cluster.apply(&[pod("bot", true), pod("quiet", false)]);
    for name in ["bot", "quiet"] {
        cluster.wait_pod_in("shop", name, "Running", |p| {
            p["status"]["phase"] == "Running"
        });
    }

    let first = read(&cluster, "bot", TOKEN_FILE);
    assert_eq!(first.status, 200, "{first:?}");
    assert!(first.body.starts_with("skf_sa."), "{first:?}");
    let namespace = read(
        &cluster,
        "bot",
        "/var/run/secrets/skiff/serviceaccount/namespace",
    );
    assert_eq!(namespace.body, "shop");
    assert_eq!(may(&cluster, &first.body), (true, false));
    // A pod that did not ask gets nothing.
    assert_eq!(read(&cluster, "quiet", TOKEN_FILE).status, 404);

    // The node asks for the next token before this one's 10 s are up.
    let mut fresh = None;
    let refreshed = wait_until(WAIT, || {
        let now = read(&cluster, "bot", TOKEN_FILE);
        let changed =
            now.status == 200 && now.body != first.body && now.body.starts_with("skf_sa.");
        fresh = Some(now);
        changed
    });
    assert!(
        refreshed,
        "the token was never refreshed: {fresh:?}\n{}",
        cluster.node("n1").log()
    );
    let fresh = fresh.expect("read").body;
    assert!(may(&cluster, &fresh).0, "the fresh token does not work");

    // Gone with its pod (within the control plane's token cache period).
    c.ok(&["delete", "pod", "bot", "-n", "shop"]);
    let dead = wait_until(WAIT, || may(&cluster, &fresh) == (false, false));
    assert!(dead, "the pod's token outlived its pod");
    // The person's token of the account is another matter.
    assert_eq!(may(&cluster, held), (true, false));
}
