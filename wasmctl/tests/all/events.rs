//! Events told by a cluster of real processes: the scheduler (a pod that
//! fits no node), a node (an image that is missing, a crash loop folded
//! into one Event whose count grows), and what `wasmctl get events --for`
//! and `describe` show of them.

use serde_json::{Value, json};
use testkit::wait_until;

use crate::nodes::{NodeCluster, WAIT, pod, push};
use crate::support::test_guest;

/// The Events about pod `name`, as `wasmctl get events -o json` lists them.
fn events_about(cluster: &NodeCluster, name: &str) -> Vec<Value> {
    let list = cluster.json(&["get", "events", "--for", &format!("pod/{name}")]);
    list["items"].as_array().cloned().unwrap_or_default()
}

fn with_reason<'a>(events: &'a [Value], reason: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["reason"] == reason).collect()
}

/// Waits until the Events about `name` satisfy `done`; panics with them.
fn wait_events(
    cluster: &NodeCluster,
    name: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut last = Vec::new();
    if wait_until(WAIT, || {
        last = events_about(cluster, name);
        done(&last)
    }) {
        return last;
    }
    panic!("no Events about {name} show {what}: {last:#?}");
}

#[test]
fn the_scheduler_and_nodes_tell_what_happened_and_a_crash_loop_is_one_event() {
    let cluster = NodeCluster::start(&[("n1", &[])]);
    let probe = format!("{}/probe:v1", cluster.registry.addr);
    push(&test_guest("probe"), &probe);
    let missing = format!("{}/missing:v1", cluster.registry.addr);
    cluster.apply(&[
        pod(
            "crasher",
            &probe,
            json!({"args": ["trap"], "restartPolicy": "Always"}),
        ),
        pod(
            "nowhere",
            &cluster.hello,
            json!({"nodeSelector": {"disk": "ssd"}}),
        ),
        pod("absent", &missing, json!({})),
        pod("fine", &cluster.hello, json!({})),
    ]);

    // The scheduler: placed, and why not.
    let fine = wait_events(
        &cluster,
        "fine",
        "Scheduled, Pulling, Pulled and Started",
        |e| {
            ["Scheduled", "Pulling", "Pulled", "Started"]
                .iter()
                .all(|r| !with_reason(e, r).is_empty())
        },
    );
    let pulled = with_reason(&fine, "Pulled")[0];
    assert!(
        pulled["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("pulled image {}", cluster.hello)),
        "{pulled:#}"
    );
    // A second pod of the image the node holds pulls nothing, and says so;
    // its Events are read at the end, after later ones of the same node.
    cluster.apply(&[pod("again", &cluster.hello, json!({}))]);
    let scheduled = with_reason(&fine, "Scheduled")[0];
    assert_eq!(scheduled["type"], "Normal");
    assert_eq!(scheduled["source"]["component"], "scheduler");
    assert!(
        scheduled["message"]
            .as_str()
            .unwrap()
            .contains("to node n1"),
        "{scheduled:#}"
    );
    let started = with_reason(&fine, "Started")[0];
    assert_eq!(started["source"]["host"], "n1", "told by the node");
    let nowhere = wait_events(&cluster, "nowhere", "FailedScheduling", |e| {
        !with_reason(e, "FailedScheduling").is_empty()
    });
    let failed = with_reason(&nowhere, "FailedScheduling")[0];
    assert_eq!(failed["type"], "Warning");
    assert!(
        failed["message"].as_str().unwrap().starts_with("0/1 nodes"),
        "{failed:#}"
    );

    // A node: an image that is not there.
    let absent = wait_events(&cluster, "absent", "a failed pull and its back-off", |e| {
        !with_reason(e, "Failed").is_empty() && !with_reason(e, "BackOff").is_empty()
    });
    let pull = with_reason(&absent, "Failed")[0];
    assert_eq!(pull["type"], "Warning");
    assert!(
        pull["message"].as_str().unwrap().contains("missing"),
        "names the image: {pull:#}"
    );

    // A crash loop restarts about every second here: its BackOff Event is
    // written once, then again with the restarts folded into its count;
    // no reason gets a second Event.
    let crasher = wait_events(
        &cluster,
        "crasher",
        "a BackOff counted several times",
        |e| {
            with_reason(e, "BackOff")
                .first()
                .is_some_and(|b| b["count"].as_u64().unwrap_or(0) >= 3)
        },
    );
    let restarts = cluster.pod("crasher")["status"]["restartCount"]
        .as_u64()
        .unwrap();
    assert!(restarts >= 3, "{restarts} restarts");
    let mut reasons: Vec<&str> = crasher
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    let all = reasons.len();
    reasons.sort();
    reasons.dedup();
    assert_eq!(all, reasons.len(), "one Event per reason: {crasher:#?}");
    assert!(
        all <= 8,
        "a handful of Events, not one per restart: {reasons:?}"
    );
    let backoff = with_reason(&crasher, "BackOff")[0];
    assert!(
        backoff["message"].as_str().unwrap().contains("back-off"),
        "{backoff:#}"
    );
    assert!(backoff["lastTimestamp"].as_str() >= backoff["firstTimestamp"].as_str());

    let again = wait_events(&cluster, "again", "Pulled and Started", |e| {
        ["Pulled", "Started"]
            .iter()
            .all(|r| !with_reason(e, r).is_empty())
    });
    assert!(with_reason(&again, "Pulling").is_empty(), "{again:#?}");
    let pulled = with_reason(&again, "Pulled")[0];
    assert_eq!(
        pulled["message"],
        format!(
            "image {} ({}) already present on the node",
            cluster.hello, cluster.hello_digest
        ),
        "{pulled:#}"
    );

    // As people see them.
    let table = cluster
        .cluster
        .ok(&["get", "events", "--for", "pod/crasher"]);
    let header = table.lines().next().unwrap();
    for column in ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"] {
        assert!(header.contains(column), "{table}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.contains("Warning") && l.contains("BackOff") && l.contains("pod/crasher")),
        "{table}"
    );
    assert!(
        !table.contains("pod/fine"),
        "only the pod asked for: {table}"
    );
    let described = cluster.cluster.ok(&["describe", "pod", "crasher"]);
    let events = described
        .split("Events:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("describe ends with Events:\n{described}"));
    assert!(
        events
            .lines()
            .any(|l| l.contains("BackOff") && l.contains("(x") && l.contains("node, n1")),
        "{described}"
    );
    let described = cluster.cluster.ok(&["describe", "node", "n1"]);
    assert!(described.contains("Events:"), "{described}");
    // Bad input to --for is the caller's mistake, named.
    let refused = cluster
        .cluster
        .fails(&["get", "events", "--for", "crasher"], 2);
    assert!(refused.contains("--for `crasher`"), "{refused}");
    let refused = cluster
        .cluster
        .fails(&["get", "pods", "--for", "pod/crasher"], 2);
    assert!(refused.contains("--for narrows events"), "{refused}");
}
