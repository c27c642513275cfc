//! Outbound requests are checked on the address they connect to: whatever
//! the allow-list says, a guest reaches no loopback, link-local or private
//! address (nor the node's own) unless a rule names that address itself.
//! Every upstream here is on loopback; the link-local destination is
//! refused from its IP literal, before any connection is attempted.

use std::time::Duration;

use serde_json::json;
use testkit::wait_until;

use crate::nodes::{NodeCluster, pod, push};
use crate::support::{HttpResponse, Served, Upstream, example, http_request, path_str, test_guest};

const LOG_WAIT: Duration = Duration::from_secs(10);

fn fetch(server: &Served, url: &str) -> HttpResponse {
    server.get(&format!("/?url={url}"))
}

fn assert_denied(response: &HttpResponse, url: &str) {
    assert_eq!(response.status, 403, "{url}: {response:?}");
    assert!(
        response.body.starts_with("request denied"),
        "{url}: {response:?}"
    );
}

#[test]
fn a_wildcard_rule_reaches_no_loopback_or_link_local_address() {
    let upstream = Upstream::start("loopback upstream", Duration::ZERO);
    let port = upstream.addr.port();
    let server = Served::start(&[path_str(&example("fetch_http")), "--allow-outbound", "*"]);
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://x.localhost:{port}/"),
    ] {
        assert_denied(&fetch(&server, &url), &url);
    }
    assert_eq!(upstream.hits(), 0, "a refused request reached the upstream");
    assert!(
        server.wait_for_log("127.0.0.1 is a loopback address", LOG_WAIT),
        "{}",
        server.log()
    );

    // Refused from the literal: no connection is ever attempted.
    assert_denied(
        &fetch(&server, "http://169.254.169.254/latest/meta-data/"),
        "metadata",
    );
    assert!(
        server.wait_for_log("169.254.169.254 is a link-local address", LOG_WAIT),
        "{}",
        server.log()
    );
}

#[test]
fn a_rule_naming_a_loopback_address_or_localhost_opens_it() {
    let upstream = Upstream::start("loopback upstream", Duration::ZERO);
    let port = upstream.addr.port();

    let literal = Served::start(&[
        path_str(&example("fetch_http")),
        "--allow-outbound",
        &format!("127.0.0.1:{port}"),
    ]);
    let response = fetch(&literal, &format!("http://127.0.0.1:{port}/"));
    assert_eq!(
        (response.status, response.body.as_str()),
        (200, "loopback upstream")
    );
    // The rule names one address and port, nothing around it.
    assert_denied(
        &fetch(&literal, &format!("http://localhost:{port}/")),
        "localhost",
    );

    let named = Served::start(&[
        path_str(&example("fetch_http")),
        "--allow-outbound",
        &format!("localhost:{port}"),
    ]);
    let response = fetch(&named, &format!("http://localhost:{port}/"));
    assert_eq!(
        (response.status, response.body.as_str()),
        (200, "loopback upstream"),
        "{}",
        named.log()
    );
    assert_denied(
        &fetch(&named, &format!("http://x.localhost:{port}/")),
        "x.localhost",
    );
    assert_eq!(upstream.hits(), 2);
}

#[test]
fn a_pods_wildcard_rule_reaches_neither_loopback_nor_the_cluster() {
    let cluster = NodeCluster::start(&[("n1", &[])]);
    let image = format!("{}/misbehave:v1", cluster.registry.addr);
    push(&test_guest("misbehave"), &image);
    let upstream = Upstream::start("loopback upstream", Duration::ZERO);
    cluster.apply(&[
        pod("open", &image, json!({"allowOutbound": ["*"]})),
        pod(
            "named",
            &image,
            json!({"allowOutbound": [upstream.addr.to_string()]}),
        ),
    ]);
    cluster.wait_running("open");
    cluster.wait_running("named");
    let node = cluster.node("n1");
    let call = |pod: &str, url: &str| {
        http_request(
            node.ingress,
            &format!("{pod}.default.pod"),
            &format!("/fetch?url={url}"),
            &[],
        )
        .unwrap()
    };

    for url in [
        format!("http://{}/", upstream.addr),
        format!("http://localhost:{}/", upstream.addr.port()),
        // The node's own ingress and the control plane.
        format!("http://{}/", node.ingress),
        format!("{}/", cluster.cluster.plane.url.trim_end_matches('/')),
        "http://169.254.169.254/".to_owned(),
    ] {
        let response = call("open", &url);
        assert_eq!(response.status, 403, "{url}: {response:?}");
    }
    assert_eq!(upstream.hits(), 0);
    assert!(
        wait_until(LOG_WAIT, || node
            .log()
            .contains("169.254.169.254 is a link-local address")),
        "{}",
        node.log()
    );

    let response = call("named", &format!("http://{}/", upstream.addr));
    assert_eq!(
        (response.status, response.body.as_str()),
        (200, "loopback upstream")
    );
    assert_eq!(upstream.hits(), 1);
}
