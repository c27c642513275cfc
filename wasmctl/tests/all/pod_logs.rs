//! Pods' stdout and stderr, captured by their node into bounded, rotated
//! files per pod (`DATA_DIR/logs/NS_NAME_UID/`), one record a line:
//! `<time> <stdout|stderr> <request id or -> <text>`.

use std::path::PathBuf;

use serde_json::json;
use testkit::wait_until;

use crate::nodes::{NodeCluster, WAIT, pod, push};
use crate::support::{http_request, test_guest};

/// One parsed record of a pod's log file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    pub stream: String,
    pub request: String,
    pub text: String,
}

pub(crate) fn records(path: &std::path::Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let mut fields = line.splitn(4, ' ');
            let time = fields.next().unwrap();
            assert!(
                chrono::DateTime::parse_from_rfc3339(time).is_ok() && time.ends_with('Z'),
                "not an RFC 3339 UTC time: {line}"
            );
            // Nanoseconds: `.` and nine digits before the `Z`.
            assert_eq!(time.len(), "2025-01-01T00:00:00.000000000Z".len(), "{line}");
            let mut field = || {
                fields
                    .next()
                    .unwrap_or_else(|| panic!("short: {line}"))
                    .to_owned()
            };
            Record {
                stream: field(),
                request: field(),
                text: field(),
            }
        })
        .collect()
}

pub(crate) fn log_dir(cluster: &NodeCluster, name: &str) -> PathBuf {
    let pod = cluster.pod(name);
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    cluster.nodes[0]
        .data_dir
        .join("logs")
        .join(format!("default_{name}_{uid}"))
}

fn print(cluster: &NodeCluster, pod: &str, query: &str, headers: &[(&str, &str)]) {
    let response = http_request(
        cluster.nodes[0].ingress,
        &format!("{pod}.default.pod"),
        &format!("/print?{query}"),
        headers,
    )
    .expect("the ingress answers");
    assert_eq!(response.status, 200, "{}", response.body);
}

/// Waits until the file holds a record satisfying `found`; returns them all.
pub(crate) fn wait_for(
    path: &std::path::Path,
    what: &str,
    found: impl Fn(&Record) -> bool,
) -> Vec<Record> {
    let mut last = Vec::new();
    if wait_until(WAIT, || {
        last = records(path);
        last.iter().any(&found)
    }) {
        return last;
    }
    panic!("{} never held {what}:\n{last:#?}", path.display());
}

#[test]
fn a_wasm_pods_output_is_kept_per_request_capped_and_kept_for_the_previous_run() {
    // A small file cap and rate, so a flood passes both quickly.
    let cluster = NodeCluster::start(&[(
        "logs-a",
        &[
            "--pod-log-max-size",
            "256Ki",
            "--pod-log-rate",
            "64Ki",
            "--pod-log-burst",
            "512Ki",
        ],
    )]);
    let image = format!("{}/misbehave:v1", cluster.registry.addr);
    push(&test_guest("misbehave"), &image);
    let probe = format!("{}/probe:v1", cluster.registry.addr);
    push(&test_guest("probe"), &probe);
    cluster.apply(&[
        pod("printer", &image, json!({})),
        pod("flood", &image, json!({})),
        pod("bystander", &image, json!({})),
        pod(
            "crasher",
            &probe,
            json!({"args": ["ls", "/nope"], "restartPolicy": "Always"}),
        ),
    ]);
    for name in ["printer", "flood", "bystander"] {
        cluster.wait_running(name);
    }

    // Lines in order, with the id the client sent; the unterminated last
    // line is flushed when the instance ends.
    let current = log_dir(&cluster, "printer").join("current.log");
    print(
        &cluster,
        "printer",
        "lines=3&tag=one",
        &[("x-request-id", "client-id.1")],
    );
    let got = wait_for(&current, "the tail of one", |r| r.text == "one tail");
    let expected = |id: &str, tag: &str| {
        let record = |stream: &str, text: String| Record {
            stream: stream.into(),
            request: id.into(),
            text,
        };
        vec![
            record("stdout", format!("{tag} 0")),
            record("stdout", format!("{tag} 1")),
            record("stdout", format!("{tag} 2")),
            record("stderr", format!("{tag} done")),
            record("stdout", format!("{tag} tail")),
        ]
    };
    assert_eq!(got, expected("client-id.1", "one"));

    // Without an id (or with one that cannot stand in a record), the
    // ingress names the request by its trace id: 32 hex digits, the same
    // on every line.
    print(
        &cluster,
        "printer",
        "lines=3&tag=two",
        &[("x-request-id", "no spaces please")],
    );
    let got = wait_for(&current, "the tail of two", |r| r.text == "two tail");
    let id = got[5].request.clone();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{got:#?}"
    );
    assert_eq!(got[5..], expected(&id, "two")[..]);

    // A flood: 16 MiB at once, far past the burst. The guest is not
    // stopped, its files stay within their cap, and the node serves on.
    print(&cluster, "flood", "lines=16384&size=1024&tag=f", &[]);
    let flood = log_dir(&cluster, "flood");
    for file in ["current.log", "current.log.1"] {
        let size = std::fs::metadata(flood.join(file)).map_or(0, |m| m.len());
        assert!(size <= 256 << 10, "{file}: {size} bytes");
    }
    let answer = http_request(cluster.nodes[0].ingress, "bystander.default.pod", "/", &[])
        .expect("the node still answers");
    assert_eq!((answer.status, answer.body.as_str()), (200, "ok\n"));
    // The next line written tells what was lost, and why.
    print(
        &cluster,
        "flood",
        "lines=1&tag=after",
        &[("x-request-id", "after")],
    );
    let got = wait_for(&flood.join("current.log"), "the line after", |r| {
        r.text == "after 0"
    });
    let note = got
        .iter()
        .find(|r| r.text.starts_with("[skiff: "))
        .unwrap_or_else(|| {
            panic!(
                "no note of the drop: {:#?}",
                &got[got.len().saturating_sub(5)..]
            )
        });
    assert_eq!(note.stream, "stderr");
    assert!(
        note.text
            .ends_with("bytes of output dropped: the pod logs faster than 64Ki/s]"),
        "{note:?}"
    );
    let dropped: u64 = note.text["[skiff: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(dropped > 0, "{note:?}");

    // A command pod that fails, restarted: each run's output is its own,
    // the previous run's kept beside the current one.
    cluster.wait_pod("crasher", "restarted", |p| {
        p["status"]["restartCount"].as_u64() >= Some(1)
    });
    let crasher = log_dir(&cluster, "crasher");
    let previous = wait_for(&crasher.join("previous.log"), "the failed run", |r| {
        r.text.starts_with("cannot list /nope")
    });
    assert_eq!(previous.len(), 1, "one run's output: {previous:#?}");
    assert_eq!(
        (previous[0].stream.as_str(), previous[0].request.as_str()),
        ("stderr", "-")
    );

    // The pod's files go with it.
    cluster.cluster.ok(&["delete", "pod", "crasher"]);
    assert!(
        wait_until(WAIT, || !crasher.exists()),
        "{} outlived its pod",
        crasher.display()
    );
}
