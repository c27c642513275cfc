//! Metrics scraped by a real Prometheus: a control plane's `/metrics`
//! (with a `metrics` token) and a node's `--metrics-listen`, checked by
//! `promtool check metrics` and through Prometheus' own query API.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};
use testkit::wait_until;

use crate::nodes::{NodeCluster, WAIT};
use crate::support::{http_get, http_request, stderr_of, temp_dir};

/// A Prometheus server on a loopback port with its storage in a temporary
/// directory; killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Prometheus {
    /// Starts Prometheus with this configuration and waits until it is
    /// ready.
    fn start(config: &str, dir: &Path) -> Prometheus {
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).expect("prometheus config");
        let addr = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let mut child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect(
                "prometheus starts (apt-get install prometheus; scripts/lib.sh ensure_prometheus)",
            );
        let ready = wait_until(WAIT, || {
            http_get(addr, "/-/ready").is_ok_and(|r| r.status == 200)
                || child.try_wait().ok().flatten().is_some()
        });
        assert!(
            ready && child.try_wait().ok().flatten().is_none(),
            "prometheus did not start on {addr}:\n{}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        Prometheus { child, addr }
    }

    /// The single value of an instant query, if it has one.
    fn value(&self, query: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", percent_encoded(query));
        let response = http_get(self.addr, &path).ok()?;
        let body: Value = serde_json::from_str(&response.body).ok()?;
        let result = body["data"]["result"].as_array()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs `promtool check metrics` on an exposition; panics on any complaint.
fn promtool_check(what: &str, text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        stderr_of(&output)
    );
    assert!(
        output.status.success() && complaints.trim().is_empty(),
        "promtool check metrics on the {what}'s metrics: {complaints}\n{text}"
    );
}

#[test]
fn prometheus_counts_a_pods_requests_from_the_nodes_metrics() {
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], testkit::free_port()));
    let listen = metrics_addr.to_string();
    let cluster = NodeCluster::start(&[("n1", &["--metrics-listen", &listen])]);
    let reader = cluster.cluster.ok(&["create", "token", "--metrics"]);
    let reader = reader.trim();
    cluster.apply_pods(&["counted".to_owned()], &cluster.hello, json!({}));
    cluster.wait_running("counted");
    let ingress = cluster.node("n1").ingress;
    const SENT: usize = 7;
    for i in 0..SENT {
        let response = http_request(ingress, "counted.default.pod", &format!("/{i}"), &[]).unwrap();
        assert_eq!(response.status, 200, "{}", response.body);
    }

    // Both expositions pass promtool's checks.
    let node_text = http_get(metrics_addr, "/metrics").unwrap();
    assert_eq!(node_text.status, 200, "{}", node_text.body);
    assert!(
        node_text.body.contains(
            r#"skiff_pod_requests_total{namespace="default",pod="counted",class="2xx"} 7"#
        ),
        "{}",
        node_text.body
    );
    promtool_check("node", &node_text.body);
    let plane = cluster.cluster.api_addr();
    let bearer = format!("Bearer {reader}");
    let plane_text = http_request(
        plane,
        &plane.to_string(),
        "/metrics",
        &[("Authorization", &bearer)],
    )
    .unwrap();
    assert_eq!(plane_text.status, 200, "{}", plane_text.body);
    promtool_check("control plane", &plane_text.body);
    // The scheduler placed the pod, and the controllers reconciled (the
    // service accounts controller, at least, the default namespace).
    for series in [
        r#"skiff_scheduler_attempts_total{result="bound"} "#,
        "skiff_scheduler_placement_duration_seconds_count ",
        r#"skiff_controller_reconcile_duration_seconds_count{controller="serviceaccounts"} "#,
    ] {
        let value = plane_text
            .body
            .lines()
            .find_map(|line| line.strip_prefix(series))
            .and_then(|v| v.parse::<f64>().ok());
        assert!(
            value.is_some_and(|v| v >= 1.0),
            "{series}: {value:?}\n{}",
            plane_text.body
        );
    }

    let dir = temp_dir("prometheus");
    let config = [
        "global: {scrape_interval: 1s, scrape_timeout: 1s}".to_owned(),
        "scrape_configs:".to_owned(),
        "- job_name: control-plane".to_owned(),
        format!("  authorization: {{credentials: {reader}}}"),
        format!("  static_configs: [{{targets: ['{plane}']}}]"),
        "- job_name: node".to_owned(),
        format!("  static_configs: [{{targets: ['{metrics_addr}']}}]"),
    ]
    .join("\n");
    let prometheus = Prometheus::start(&config, &dir);
    let query = r#"sum(skiff_pod_requests_total{job="node",namespace="default",pod="counted"})"#;
    let mut last = None;
    let counted = wait_until(WAIT, || {
        last = prometheus.value(query);
        last == Some(SENT as f64)
    });
    assert!(counted, "Prometheus counted {last:?} requests, not {SENT}");
    // The control plane's target is scraped with the token.
    let up = wait_until(WAIT, || {
        prometheus.value(r#"up{job="control-plane"}"#) == Some(1.0)
            && prometheus
                .value(r#"sum(skiff_api_requests_total{job="control-plane"})"#)
                .is_some_and(|n| n > 0.0)
    });
    assert!(up, "Prometheus never scraped the control plane's metrics");
    drop(prometheus);
    let _ = std::fs::remove_dir_all(&dir);
}
