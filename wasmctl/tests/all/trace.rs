//! W3C trace context through a node: a client's `traceparent` reaches the
//! guest continued (same trace id, the ingress's own span), goes on with
//! the guest's outbound requests (to the outside and through the gateway
//! to a Service), survives a hop between nodes, and names the request in
//! the pod's log records when the client gave no `x-request-id`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};

use serde_json::json;
use testkit::wait_until;

use crate::nodes::{NodeCluster, WAIT, pod, push};
use crate::pod_logs::{log_dir, wait_for};
use crate::support::{HttpResponse, http_request, test_guest};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// A server on loopback that answers every request with its head, each
/// line prefixed `upstream `, so a guest relaying it shows what it sent.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                head.push_str(&format!("upstream {}\n", line.trim_end()));
                line.clear();
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
                head.len()
            );
        }
    });
    addr
}

/// A `traceparent` split into (trace id, parent id, flags), checked to be
/// well formed: version 00, lowercase hex, neither id all zeros.
fn fields(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && s.bytes().any(|b| b != b'0')
    };
    assert!(
        parts.len() == 4
            && parts[0] == "00"
            && hex(parts[1], 32)
            && hex(parts[2], 16)
            && parts[3].len() == 2,
        "not a valid traceparent: {value:?}"
    );
    (parts[1].into(), parts[2].into(), parts[3].into())
}

/// The value of the line `<prefix>name: value` of a `/trace` answer.
fn line<'a>(response: &'a HttpResponse, prefix: &str, name: &str) -> &'a str {
    let start = format!("{prefix}{name}: ");
    response
        .body
        .lines()
        .find_map(|l| l.strip_prefix(start.as_str()))
        .unwrap_or_else(|| panic!("no `{start}` line in {response:?}"))
}

/// Asks `host` through `ingress` until it answers 200 (a Service's
/// endpoints reach the ingresses a moment after its pod runs).
fn answers(ingress: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut last = None;
    let answered = wait_until(WAIT, || {
        last = Some(http_request(ingress, host, path, headers));
        matches!(&last, Some(Ok(r)) if r.status == 200)
    });
    assert!(answered, "{host}{path} through {ingress}: {last:?}");
    last.unwrap().unwrap()
}

#[test]
fn a_trace_runs_from_the_client_through_the_guest_to_its_calls_and_its_logs() {
    let cluster = NodeCluster::start(&[("n1", &[]), ("n2", &[])]);
    let image = format!("{}/misbehave:v1", cluster.registry.addr);
    push(&test_guest("misbehave"), &image);
    let echo = echo_server();
    let mut tracer = pod(
        "tracer",
        &image,
        json!({"nodeName": "n1", "allowOutbound": [echo.to_string()]}),
    );
    tracer["metadata"]["labels"] = json!({"app": "tracer"});
    cluster.apply(&[
        tracer,
        json!({
            "apiVersion": "skiff.dev/v1", "kind": "Service",
            "metadata": {"name": "tracer"},
            "spec": {"selector": {"app": "tracer"}},
        }),
    ]);
    cluster.wait_running("tracer");
    let (n1, n2) = (cluster.node("n1").ingress, cluster.node("n2").ingress);
    let log = log_dir(&cluster, "tracer").join("current.log");
    let client = format!("00-{TRACE}-{PARENT}-01");

    // The client's trace reaches the guest from the ingress's own span,
    // with its tracestate; with no x-request-id, the trace id names the
    // request. The guest's call to the outside continues the trace from a
    // span of its own.
    let traced = answers(
        n1,
        "tracer.default.pod",
        &format!("/trace?url=http://{echo}/"),
        &[
            ("traceparent", client.as_str()),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
    );
    let (trace, seen_parent, flags) = fields(line(&traced, "", "traceparent"));
    assert_eq!(
        (trace.as_str(), flags.as_str()),
        (TRACE, "01"),
        "{traced:?}"
    );
    assert_ne!(seen_parent, PARENT, "the ingress gives the request a span");
    assert_eq!(line(&traced, "", "tracestate"), "congo=t61rcWkgMzE");
    assert_eq!(line(&traced, "", "x-request-id"), TRACE);
    let (out_trace, out_parent, _) = fields(line(&traced, "upstream ", "traceparent"));
    assert_eq!(out_trace, TRACE, "the outbound request is in the trace");
    assert_ne!(out_parent, seen_parent, "from a span of its own");
    assert_ne!(out_parent, PARENT);
    assert_eq!(
        line(&traced, "upstream ", "tracestate"),
        "congo=t61rcWkgMzE"
    );
    // And its log record is found by the trace id.
    let records = wait_for(&log, "the traced request's line", |r| {
        r.text.starts_with("trace ") && r.request == TRACE
    });
    let record = records.iter().find(|r| r.request == TRACE).unwrap();
    assert_eq!(record.text, format!("trace 00-{TRACE}-{seen_parent}-01"));

    // With no traceparent (or a malformed one, dropped with its
    // tracestate), the guest gets a new trace, and its log line, its
    // request id and its outbound request carry that trace's id.
    let mut fresh_traces = Vec::new();
    for given in [
        vec![],
        vec![
            (
                "traceparent",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
    ] {
        let fresh = answers(
            n1,
            "tracer.default.pod",
            &format!("/trace?url=http://{echo}/"),
            &given,
        );
        let (trace, parent, flags) = fields(line(&fresh, "", "traceparent"));
        assert_ne!(trace, TRACE, "{given:?}");
        assert_eq!(flags, "00", "a new trace is not sampled");
        assert_eq!(line(&fresh, "", "tracestate"), "-", "{given:?}");
        assert_eq!(line(&fresh, "", "x-request-id"), trace);
        assert_eq!(fields(line(&fresh, "upstream ", "traceparent")).0, trace);
        let records = wait_for(&log, "the fresh trace's line", |r| r.request == trace);
        let record = records.iter().find(|r| r.request == trace).unwrap();
        assert_eq!(record.text, format!("trace 00-{trace}-{parent}-00"));
        fresh_traces.push(trace);
    }
    assert_ne!(fresh_traces[0], fresh_traces[1]);

    // A client's own x-request-id still names the request; the trace goes
    // on beside it.
    let named = answers(
        n1,
        "tracer.default.pod",
        "/trace",
        &[
            ("traceparent", client.as_str()),
            ("x-request-id", "client-7"),
        ],
    );
    assert_eq!(line(&named, "", "x-request-id"), "client-7");
    assert_eq!(fields(line(&named, "", "traceparent")).0, TRACE);
    wait_for(&log, "the named request's line", |r| {
        r.request == "client-7" && r.text.starts_with(&format!("trace 00-{TRACE}-"))
    });

    // Through the gateway to a Service: the called guest's request is in
    // the caller's trace (and, with no x-request-id, named by it).
    let via_service = answers(
        n1,
        "tracer.default.pod",
        "/fetch?url=http://tracer.default.svc/trace",
        &[("traceparent", client.as_str())],
    );
    let (trace, parent, _) = fields(line(&via_service, "", "traceparent"));
    assert_eq!(trace, TRACE, "{via_service:?}");
    assert_ne!(parent, PARENT);
    assert_eq!(line(&via_service, "", "x-request-id"), TRACE);

    // From one node to another: n2 proxies the Service's request to n1,
    // whose ingress continues n2's trace.
    let proxied = answers(
        n2,
        "tracer.default.svc",
        "/trace",
        &[("traceparent", client.as_str())],
    );
    let (trace, parent, flags) = fields(line(&proxied, "", "traceparent"));
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE, "01"));
    assert_ne!(parent, PARENT);
    assert_eq!(line(&proxied, "", "x-request-id"), TRACE);
}
