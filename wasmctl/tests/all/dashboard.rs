//! The dashboard at `/ui`, in a real headless Chromium against a cluster
//! of real processes (Postgres, control plane, a node, a registry): signing
//! in, following the cluster live, acting within the token's role, and
//! what a hostile tenant can put in front of a cluster admin.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use testkit::browser::Browser;
use testkit::wait_until;

use crate::controllers::{deployment, rolled_out};
use crate::nodes::{NodeCluster, WAIT, pod, push};
use crate::support::{http_request, test_guest};

/// Markup a tenant can write where the dashboard shows text: run, it
/// would mark the page; shown as text, it is only text.
const ANNOTATION_ATTACK: &str = "<img src=x onerror=\"window.pwned='annotation'\">";
const LOG_ATTACK: &str =
    "<script>window.pwned='log'</script><img src=y onerror=\"window.pwned='log'\">";

/// Signs in from the keyboard: the token field has the focus when the
/// page opens, and Enter sends it.
fn sign_in(browser: &Browser, token: &str) {
    browser.goto("/ui");
    browser.wait_present("#token");
    browser.keys(token);
    browser.keys(ENTER);
}

/// WebDriver's Enter and Escape keys.
const ENTER: &str = "\u{e007}";
const ESCAPE: &str = "\u{e00c}";

fn replicas(cluster: &NodeCluster, namespace: &str, name: &str) -> u64 {
    cluster.json(&["get", "deployment", name, "-n", namespace])["spec"]["replicas"]
        .as_u64()
        .unwrap()
}

/// Presses the two-way button at `css` twice: labelled `labels[0]`, it
/// turns `on()` true through the API and is relabelled `labels[1]` as the
/// page follows; pressed again, it turns it back.
fn toggle(browser: &Browser, css: &str, labels: [&str; 2], on: impl Fn() -> bool) {
    for (label, wanted) in [(labels[0], true), (labels[1], false)] {
        browser.wait_for(css, label, |t| t == [label]);
        browser.click(css);
        assert!(
            wait_until(WAIT, || on() == wanted),
            "{label} from the page never reached the API"
        );
    }
    browser.wait_for(css, labels[0], |t| t == [labels[0]]);
}

fn paused(cluster: &NodeCluster) -> bool {
    cluster.json(&["get", "deployment", "web"])["spec"]["paused"] == json!(true)
}

fn unschedulable(cluster: &NodeCluster) -> bool {
    cluster.json(&["get", "node", "ui-1"])["spec"]["unschedulable"] == json!(true)
}

/// How many pods are bound to `node`.
fn bound_to(cluster: &NodeCluster, node: &str) -> usize {
    cluster.json(&["get", "pods"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["spec"]["nodeName"] == json!(node))
        .count()
}

/// Nothing of the tenant's markup ran or became an element.
fn assert_nothing_ran(browser: &Browser) {
    let state = browser.run(
        "return {pwned: window.pwned || null, images: document.querySelectorAll('img').length, scripts: document.querySelectorAll('main script').length};",
        vec![],
    );
    assert_eq!(
        state,
        json!({"pwned": null, "images": 0, "scripts": 0}),
        "markup from the cluster ran in the page"
    );
}

#[test]
fn the_dashboard_signs_in_follows_the_cluster_live_and_acts_for_an_admin() {
    let cluster = NodeCluster::start(&[("ui-1", &[])]);
    let printer_image = format!("{}/misbehave:v1", cluster.registry.addr);
    push(&test_guest("misbehave"), &printer_image);
    let mut web = deployment("web", &cluster.hello, 1, &[], json!({}));
    web["metadata"]["annotations"] = json!({"note": ANNOTATION_ATTACK});
    cluster.apply(&[web, pod("printer", &printer_image, json!({}))]);
    cluster.wait_running("printer");

    // The page itself answers without a token, under a policy that runs
    // its own script only.
    let plane = cluster.cluster.api_addr();
    let page = http_request(plane, &plane.to_string(), "/ui/", &[]).expect("the page");
    assert_eq!(page.status, 200);
    let policy = page.header("content-security-policy").unwrap_or_default();
    assert!(
        policy.contains("script-src 'self'") && !policy.contains("unsafe"),
        "{policy}"
    );

    let browser = Browser::start(&cluster.cluster.plane.url);
    sign_in(&browser, &cluster.cluster.token);
    // The token is kept in the tab, not in the address or a cookie.
    browser.wait_present("#signout");
    let kept = browser.run(
        "return {session: sessionStorage.getItem('skiff.token'), cookie: document.cookie, href: location.href};",
        vec![],
    );
    assert_eq!(kept["session"], json!(cluster.cluster.token));
    assert_eq!(kept["cookie"], json!(""));
    assert!(
        !kept["href"]
            .as_str()
            .unwrap()
            .contains(&cluster.cluster.token)
    );

    // Overview: the node with its state and usage, the Deployment.
    browser.wait_for("#nodes tr[data-node='ui-1']", "node ui-1, ready", |t| {
        t.iter()
            .any(|row| row.contains("Ready") && !row.contains("NotReady"))
    });
    browser.wait_for(
        "#nodes tr[data-node='ui-1'] .usage-text",
        "the node's usage",
        |t| t.iter().any(|text| text.contains(" of ")),
    );
    browser.wait_for(
        "#deployments tr[data-deployment='default/web']",
        "Deployment web",
        |t| t.iter().any(|row| row.contains("1/1")),
    );
    browser.wait_for(
        "#pods-by-phase dd[data-phase='Running']",
        "running pods",
        |t| {
            t.first()
                .is_some_and(|n| n.parse::<u32>().unwrap_or(0) >= 2)
        },
    );
    browser.screenshot("overview");
    // Loaded again in the tab (the token kept), the overview comes back
    // whole: the page it replaced let go of its connections.
    browser.goto_url("about:blank");
    browser.goto("/ui/#/overview");
    browser.wait_for(
        "#deployments tr[data-deployment='default/web']",
        "Deployment web, after a new load",
        |t| !t.is_empty(),
    );

    // The pod list follows a scale made elsewhere, without a reload.
    browser.goto("/ui/#/list/pods?ns=default&l=app%3Dweb");
    browser.wait_for("#list tbody tr", "web's one pod", |rows| rows.len() == 1);
    let marker = browser.run(
        "document.getElementById('list').dataset.marker = 'same page'; return null;",
        vec![],
    );
    assert_eq!(marker, Value::Null);
    cluster
        .cluster
        .ok(&["scale", "deployment/web", "--replicas", "3"]);
    browser.wait_for("#list tbody tr", "web's three pods, running", |rows| {
        rows.len() == 3 && rows.iter().all(|row| row.contains("Running"))
    });
    let same = browser.run(
        "return document.getElementById('list').dataset.marker;",
        vec![],
    );
    assert_eq!(
        same,
        json!("same page"),
        "the list was rebuilt, not followed"
    );
    browser.screenshot("pods");

    // Scaled from the page, seen through the API; the page follows.
    browser.goto("/ui/#/object/deployments/default/web");
    browser.wait_for("#dependents tbody tr", "web's three pods", |rows| {
        rows.len() == 3
    });
    browser.type_into("#scale-replicas", "2");
    browser.click("#scale");
    assert!(
        wait_until(WAIT, || replicas(&cluster, "default", "web") == 2),
        "the scale from the page never reached the API"
    );
    browser.wait_for("#dependents tbody tr", "web's two pods", |rows| {
        rows.len() == 2
    });
    browser.wait_for("#status", "the scale's confirmation", |t| {
        t.iter().any(|s| s.contains("scaled to 2"))
    });
    // A tenant's annotation is shown as the text it is.
    browser.wait_for("#summary", "the annotation as text", |t| {
        t.iter().any(|s| s.contains(ANNOTATION_ATTACK))
    });
    assert_nothing_ran(&browser);
    browser.screenshot("deployment");

    // A pod's logs, followed while requests arrive; its limits.
    browser.goto("/ui/#/object/pods/default/printer");
    browser.wait_present("#follow");
    browser.click("#follow");
    browser.wait_for("#logs-state", "following", |t| {
        t.iter().any(|s| s.contains("Following"))
    });
    let ingress = cluster.nodes[0].ingress;
    let tag = |text: &str| {
        text.bytes()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>()
    };
    for request in 0..3 {
        let path = format!("/print?lines=1&tag={}", tag(&format!("request-{request}")));
        let answer =
            http_request(ingress, "printer.default.pod", &path, &[]).expect("the ingress answers");
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let path = format!("/print?lines=1&tag={}", tag(LOG_ATTACK));
    let answer =
        http_request(ingress, "printer.default.pod", &path, &[]).expect("the ingress answers");
    assert_eq!(answer.status, 200, "{}", answer.body);
    browser.wait_for("#logs", "the requests' lines, as they come", |t| {
        t.iter().any(|logs| {
            logs.contains("request-0 0")
                && logs.contains("request-2 0")
                && logs.contains(LOG_ATTACK)
        })
    });
    assert_nothing_ran(&browser);
    browser.wait_for(
        "#summary dd[data-limit='memory']",
        "the pod's memory limit",
        |t| !t.is_empty(),
    );
    // Its request rate and time to answer, as the node samples them, while
    // requests of 50 ms keep coming.
    let stop = Arc::new(AtomicBool::new(false));
    let load = std::thread::spawn({
        let stop = stop.clone();
        move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = http_request(ingress, "printer.default.pod", "/sleep?ms=50", &[]);
            }
        }
    });
    browser.wait_for(
        "#requests-state",
        "the pod's requests and their time",
        |t| {
            t.iter()
                .any(|s| s.contains("requests a second") && s.contains("ms on average"))
        },
    );
    let caption = browser.texts("#requests-state").concat();
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    // Requests that sleep 50 ms take about that: the figure is their
    // time, not a count or a rate (the guest's sleep may end a little
    // early by the node's clock).
    let mean: f64 = caption
        .split("answered in ")
        .nth(1)
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no mean time in: {caption}"));
    assert!((40.0..5000.0).contains(&mean), "{caption}");
    browser.screenshot("pod");

    // A rollout paused and resumed from the page; the button follows.
    browser.goto("/ui/#/object/deployments/default/web");
    toggle(
        &browser,
        "#pause",
        ["Pause rollout", "Resume rollout"],
        || paused(&cluster),
    );

    // A new revision, then undone from the page: the question names what
    // it goes back to.
    let mut v2 = deployment("web", &cluster.hello, 2, &[("VERSION", "2")], json!({}));
    v2["metadata"]["annotations"] = json!({"note": ANNOTATION_ATTACK});
    cluster.apply(&[v2.clone()]);
    assert!(
        wait_until(WAIT, || {
            cluster.json(&["get", "deployment", "web"])["status"]["revision"] == json!(2)
        }),
        "web never reached revision 2"
    );
    browser.click("#undo");
    browser.wait_for("#confirm-question", "the undo's question", |t| {
        t.iter().any(|q| {
            q.contains("back to revision 1")
                && q.contains(&cluster.hello)
                && q.contains("service account default")
        })
    });
    // While the question is open the Deployment changes, as the
    // controllers change its status: the undo still goes through, since
    // what it goes back to is the same.
    v2["metadata"]["labels"] = json!({"touched": "while-asked"});
    cluster.apply(&[v2]);
    browser.click("#confirm-yes");
    assert!(
        wait_until(WAIT, || {
            let web = cluster.json(&["get", "deployment", "web"]);
            web["spec"]["template"]["spec"]["env"]
                .as_array()
                .is_none_or(|env| env.iter().all(|e| e["name"] != "VERSION"))
        }),
        "the undo never reached the API"
    );
    // Its rollout done, web has its two pods again.
    rolled_out(&cluster, "web");

    // Delete asks first: cancelled, nothing goes; confirmed, it goes.
    cluster
        .cluster
        .ok(&["create", "configmap", "doomed", "--from-literal", "k=v"]);
    browser.goto("/ui/#/object/configmaps/default/doomed");
    browser.click("#delete");
    browser.wait_for("#confirm-question", "the question", |t| {
        t.iter().any(|q| q.contains("configmap doomed"))
    });
    // Escape answers no, as Cancel does.
    browser.keys(ESCAPE);
    browser.wait_for("#confirm", "the question answered", |t| t.is_empty());
    assert!(
        cluster
            .cluster
            .run(&["get", "configmap", "doomed"])
            .status
            .success()
    );
    browser.click("#delete");
    browser.click("#confirm-yes");
    assert!(
        wait_until(WAIT, || !cluster
            .cluster
            .run(&["get", "configmap", "doomed"])
            .status
            .success()),
        "the confirmed delete never reached the API"
    );
    browser.wait_for("main .error", "the object gone", |t| {
        t.iter().any(|s| s.contains("does not exist"))
    });

    // A node cordoned and uncordoned, then drained: every pod off it.
    browser.goto("/ui/#/object/nodes/-/ui-1");
    toggle(&browser, "#cordon", ["Cordon", "Uncordon"], || {
        unschedulable(&cluster)
    });
    browser.wait_for("#dependents tbody tr", "the node's pods", |rows| {
        rows.len() == 3
    });
    browser.click("#drain");
    browser.click("#confirm-yes");
    assert!(
        wait_until(WAIT, || unschedulable(&cluster)
            && bound_to(&cluster, "ui-1") == 0),
        "the drain left pods on the node"
    );
    browser.wait_for(".dependents", "no pod left on the node", |t| {
        t.iter().any(|s| s.contains("None."))
    });
    // The bare pod was recreated, unbound, rather than lost.
    assert!(
        wait_until(WAIT, || {
            let pods = cluster.json(&["get", "pods", "-l", "app=printer"]);
            pods["items"].as_array().is_some_and(|items| {
                items.len() == 1
                    && items[0]["spec"]["nodeName"]
                        .as_str()
                        .unwrap_or("")
                        .is_empty()
            })
        }),
        "the drained bare pod was not recreated unbound"
    );

    // A manifest previewed (nothing written, what would change named),
    // then applied after a confirmation.
    cluster
        .cluster
        .ok(&["create", "configmap", "edited", "--from-literal", "k=1"]);
    browser.goto("/ui/#/apply?ns=default");
    browser.type_into(
        "#manifest",
        "apiVersion: skiff.dev/v1\nkind: ConfigMap\nmetadata: {name: edited}\ndata: {k: \"2\"}\n---\napiVersion: skiff.dev/v1\nkind: ConfigMap\nmetadata: {name: from-page}\ndata: {k: v}\n",
    );
    browser.click("#preview");
    browser.wait_for("#apply-results tbody tr", "the dry run's outcome", |rows| {
        rows.len() == 2
            && rows[0].contains("configured")
            && rows[0].contains("data.k")
            && rows[1].contains("created")
    });
    let config = |name: &str| {
        cluster
            .cluster
            .run(&["get", "configmap", name, "-o", "json"])
    };
    assert!(!config("from-page").status.success(), "a dry run wrote");
    assert!(String::from_utf8_lossy(&config("edited").stdout).contains("\"k\": \"1\""));
    browser.screenshot("apply");
    browser.click("#apply");
    browser.click("#confirm-yes");
    assert!(
        wait_until(WAIT, || config("from-page").status.success()),
        "the manifest was never applied"
    );
    assert!(String::from_utf8_lossy(&config("edited").stdout).contains("\"k\": \"2\""));

    // Signing out forgets the token.
    browser.click("#signout");
    browser.wait_present("#token");
    let forgotten = browser.run("return sessionStorage.getItem('skiff.token');", vec![]);
    assert_eq!(forgotten, Value::Null);
}

#[test]
fn a_view_token_is_offered_no_action_and_refused_one_and_a_bad_token_gets_nothing() {
    let cluster = NodeCluster::start(&[("ui-v", &[])]);
    cluster.cluster.ok(&["create", "namespace", "shop"]);
    let mut web = deployment("web", &cluster.hello, 1, &[], json!({}));
    web["metadata"]["namespace"] = json!("shop");
    cluster.apply(&[web]);
    cluster.cluster.ok(&[
        "create",
        "secret",
        "generic",
        "keys",
        "-n",
        "shop",
        "--from-literal",
        "password=hunter2",
    ]);
    let view = cluster
        .cluster
        .ok(&["create", "token", "-n", "shop", "--role", "view"]);
    let view = view.trim();

    let browser = Browser::start(&cluster.cluster.plane.url);
    // A token the cluster never issued: refused at the door, kept nowhere.
    sign_in(&browser, "skf_not-a-token-of-this-cluster");
    browser.wait_for("#signin-error", "the refusal", |t| {
        t.iter().any(|s| s.contains("refused"))
    });
    let kept = browser.run("return sessionStorage.getItem('skiff.token');", vec![]);
    assert_eq!(kept, Value::Null);
    assert_eq!(
        browser.count("nav"),
        0,
        "a refused token sees the dashboard"
    );

    sign_in(&browser, view);
    browser.wait_for("#who", "the role", |t| {
        t.iter().any(|s| s.contains("shop: view"))
    });
    // No cluster-wide view for a namespace's token, no Secrets for `view`.
    let links = browser.texts("nav a");
    assert!(links.iter().any(|link| link == "Deployments"), "{links:?}");
    assert!(
        links
            .iter()
            .all(|link| link != "Nodes" && link != "Secrets" && link != "Apply"),
        "{links:?}"
    );
    browser.wait_for(
        "#deployments tr[data-deployment='shop/web']",
        "Deployment web in shop",
        |t| !t.is_empty(),
    );
    // The tab keeps the token across a new load of the page.
    browser.goto_url("about:blank");
    browser.goto("/ui/#/object/deployments/shop/web");
    browser.wait_for("#summary", "the Deployment", |t| {
        t.iter().any(|s| s.contains("wanted"))
    });
    browser.wait_present("#yaml pre");
    assert_eq!(
        browser.count("#actions button, #actions input"),
        0,
        "a view token is offered actions: {:?}",
        browser.texts("#actions")
    );
    // Trying anyway, from the page with the token it holds: the API refuses.
    let tried = browser.run_async(
        "const done = arguments[arguments.length - 1];
         fetch('/apis/skiff.dev/v1/namespaces/shop/deployments/web', {
           method: 'PATCH',
           headers: {Authorization: 'Bearer ' + sessionStorage.getItem('skiff.token'),
                     'Content-Type': 'application/merge-patch+json'},
           body: JSON.stringify({spec: {replicas: 5}}),
         }).then((r) => done(r.status), (e) => done(String(e)));",
        vec![],
    );
    assert_eq!(tried, json!(403));
    assert_eq!(replicas(&cluster, "shop", "web"), 1);

    // Secrets: neither listed nor their values shown.
    browser.goto("/ui/#/list/secrets?ns=shop");
    browser.wait_for(".state .error", "the API's refusal", |t| {
        t.iter()
            .any(|s| s.contains("403") || s.to_lowercase().contains("may not"))
    });
    assert!(
        !browser.texts("main").concat().contains("hunter2"),
        "a Secret's value reached a view token's page"
    );
    browser.screenshot("view-token");
}
