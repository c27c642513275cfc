//! Slow and hostile clients against the real listeners (`wasmctl run`, a
//! node's ingress): the `--listen-*` flags reach them, and a request body
//! passes through a node to another without being collected.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::nodes::{NodeCluster, push};
use crate::support::{Served, http_call, path_str, test_guest};

/// Reads until the server closes the connection; returns what arrived and
/// when the close came. Panics past `within`.
fn until_closed(stream: &mut TcpStream, within: Duration) -> (String, Duration) {
    let start = Instant::now();
    stream.set_read_timeout(Some(within)).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the server still held the connection after {within:?}")
            }
            Err(_) => break,
        }
    }
    (String::from_utf8_lossy(&seen).into_owned(), start.elapsed())
}

/// A connection that sent half a request line.
fn half_request(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(b"GET / HT").unwrap();
    stream
}

#[test]
fn wasmctl_run_drops_half_requests_and_refuses_past_its_connection_cap() {
    let guest = test_guest("misbehave");
    let served = Served::start(&[
        path_str(&guest),
        "--listen-header-timeout",
        "1s",
        "--listen-max-connections",
        "3",
    ]);
    let mut half = half_request(served.addr);
    let (answer, took) = until_closed(&mut half, Duration::from_secs(15));
    assert!(
        took >= Duration::from_millis(500),
        "closed before the deadline: {took:?}"
    );
    assert!(!answer.contains(" 200 "), "{answer}");

    // Three connections held (each sent half a request); a fourth is
    // refused with a reason, not left hanging.
    let held: Vec<TcpStream> = (0..3).map(|_| half_request(served.addr)).collect();
    let mut fourth = TcpStream::connect(served.addr).unwrap();
    fourth
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let (answer, _) = until_closed(&mut fourth, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("--listen-max-connections"), "{answer}");
    drop(held);
}

#[test]
fn a_node_streams_a_large_body_to_another_nodes_pod_and_drops_half_requests() {
    let cluster = NodeCluster::start(&[
        (
            "s1",
            &[
                "--listen-header-timeout",
                "1s",
                "--listen-body-timeout",
                "2s",
            ],
        ),
        ("s2", &[]),
    ]);
    let image = format!("{}/misbehave:v1", cluster.registry.addr);
    push(&test_guest("misbehave"), &image);
    cluster.apply(&[
        json!({
            "apiVersion": "skiff.dev/v1", "kind": "Pod",
            "metadata": {"name": "sink", "labels": {"app": "sink"}},
            "spec": {"image": image, "nodeSelector": {"skiff.dev/hostname": "s2"}, "resources": {"memory": "256Mi"}},
        }),
        json!({
            "apiVersion": "skiff.dev/v1", "kind": "Service",
            "metadata": {"name": "sink"},
            "spec": {"selector": {"app": "sink"}, "ports": [{"port": 80}]},
        }),
        json!({
            "apiVersion": "skiff.dev/v1", "kind": "Route",
            "metadata": {"name": "sink"},
            "spec": {"host": "sink.example.com", "service": "sink"},
        }),
    ]);
    let pod = cluster.wait_running("sink");
    assert_eq!(pod["spec"]["nodeName"], "s2", "{pod:#}");

    // Larger than any buffer the ingress keeps: it must stream through s1
    // to s2's guest.
    let body = "a".repeat(40 << 20);
    let s1 = cluster.node("s1").ingress;
    let mut answer = None;
    assert!(
        testkit::wait_until(Duration::from_secs(30), || {
            let response = http_call(s1, "POST", "sink.example.com", "/length", &[], &body);
            let done = response.as_ref().is_ok_and(|r| r.status == 200);
            answer = Some(response);
            done
        }),
        "the body never went through: {answer:?}"
    );
    let answer = answer.unwrap().unwrap();
    assert_eq!(answer.body.trim(), (40 << 20).to_string());

    let mut half = half_request(s1);
    let (_, took) = until_closed(&mut half, Duration::from_secs(15));
    assert!(took >= Duration::from_millis(500), "{took:?}");

    // A body that stops halfway while streaming to s2 is the client's
    // fault: 408 from s1, not a 502 blaming the pod.
    let mut stalled = TcpStream::connect(s1).unwrap();
    stalled
        .write_all(
            b"POST /length HTTP/1.1\r\nhost: sink.example.com\r\ncontent-length: 1048576\r\n\r\n",
        )
        .unwrap();
    stalled.write_all(&[b'a'; 100 << 10]).unwrap();
    let (answer, _) = until_closed(&mut stalled, Duration::from_secs(20));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 2s"), "{answer}");
}
