//! `wasmctl push`, `pull` and `run REFERENCE` against a real registry
//! (Debian's docker-registry, the CNCF distribution server).

use std::net::SocketAddr;
use std::process::Output;

use serde_json::Value;
use testkit::Registry;

use crate::support::{
    Served, example, http_request, path_str, stderr_of, stdout_of, temp_dir, test_guest, wasmctl,
};

fn wasmctl_out(args: &[&str], password: Option<&str>) -> Output {
    let mut command = wasmctl();
    command.args(args);
    if let Some(password) = password {
        command.env("WASMCTL_REGISTRY_PASSWORD", password);
    }
    command.output().expect("wasmctl runs")
}

/// Runs wasmctl, asserts success and returns stdout's last line (the
/// digest push and pull print).
fn digest_of(args: &[&str], password: Option<&str>) -> String {
    let output = wasmctl_out(args, password);
    assert!(output.status.success(), "{args:?}: {}", stderr_of(&output));
    let stdout = stdout_of(&output);
    let digest = stdout.lines().last().unwrap_or("").to_owned();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{stdout}"
    );
    digest
}

/// Runs wasmctl expecting failure with exactly one `error:` line.
fn one_error_line(args: &[&str], password: Option<&str>) -> String {
    let output = wasmctl_out(args, password);
    let stderr = stderr_of(&output);
    assert!(!output.status.success(), "{args:?} succeeded:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected for {args:?}:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_owned()
}

fn registry_json(registry: &Registry, path: &str, accept: &str) -> Value {
    let addr: SocketAddr = registry.addr.parse().unwrap();
    let response = http_request(addr, &registry.addr, path, &[("Accept", accept)]).unwrap();
    assert_eq!(response.status, 200, "{path}: {}", response.body);
    serde_json::from_str(&response.body).unwrap()
}

#[test]
fn a_pushed_component_is_a_cncf_wasm_artifact_and_pulls_back_unchanged() {
    let registry = Registry::start();
    let hello = example("hello_http");
    let reference = format!("{}/apps/hello:v1", registry.addr);
    let pushed = digest_of(&["push", path_str(&hello), &reference], None);

    // The manifest and config follow the CNCF Wasm artifact layout.
    let manifest = registry_json(
        &registry,
        "/v2/apps/hello/manifests/v1",
        "application/vnd.oci.image.manifest.v1+json",
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    assert_eq!(layers[0]["mediaType"], "application/wasm");
    assert_eq!(
        layers[0]["size"].as_u64(),
        Some(std::fs::metadata(&hello).unwrap().len())
    );
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config = registry_json(
        &registry,
        &format!("/v2/apps/hello/blobs/{config_digest}"),
        "*/*",
    );
    let exports = config["component"]["exports"].to_string();
    assert!(
        exports.contains("wasi:http/incoming-handler"),
        "config: {config}"
    );

    // Pull by tag and by digest: the same bytes and the same digest.
    let dir = temp_dir("pull");
    let by_tag = dir.join("by-tag.wasm");
    let pulled = digest_of(&["pull", &reference, "-o", path_str(&by_tag)], None);
    assert_eq!(pulled, pushed);
    assert_eq!(
        std::fs::read(&by_tag).unwrap(),
        std::fs::read(&hello).unwrap()
    );
    let by_digest = dir.join("by-digest.wasm");
    let pinned = format!("{}/apps/hello@{pushed}", registry.addr);
    digest_of(&["pull", &pinned, "-o", path_str(&by_digest)], None);
    assert_eq!(
        std::fs::read(&by_digest).unwrap(),
        std::fs::read(&hello).unwrap()
    );
}

#[test]
fn run_serves_a_component_straight_from_a_registry() {
    let registry = Registry::start();
    let reference = format!("{}/hello:v1", registry.addr);
    digest_of(
        &["push", path_str(&example("hello_http")), &reference],
        None,
    );
    let served = Served::start(&[&reference]);
    let response = served.get("/from-the-registry");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "Hello, world! (GET /from-the-registry)\n");
}

#[test]
fn bad_artifacts_and_references_fail_with_one_line() {
    let registry = Registry::start();
    let dir = temp_dir("bad-push");
    let core = dir.join("core.wasm");
    std::fs::write(&core, wat::parse_str("(module)").unwrap()).unwrap();
    let line = one_error_line(
        &[
            "push",
            path_str(&core),
            &format!("{}/core:v1", registry.addr),
        ],
        None,
    );
    assert!(line.contains("not a Wasm component"), "{line}");

    let missing = format!("{}/hello:nope", registry.addr);
    let line = one_error_line(&["pull", &missing], None);
    assert!(
        line.contains(&missing) && line.contains("not found"),
        "{line}"
    );

    let line = one_error_line(&["pull", "Not A Reference"], None);
    assert!(line.contains("invalid reference"), "{line}");

    // A layer whose stored bytes no longer match its digest is refused,
    // by pull and by run alike.
    let probe = format!("{}/probe:v1", registry.addr);
    digest_of(&["push", path_str(&test_guest("probe")), &probe], None);
    let manifest = registry_json(
        &registry,
        "/v2/probe/manifests/v1",
        "application/vnd.oci.image.manifest.v1+json",
    );
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    tamper(&registry.blob_file(layer));
    let line = one_error_line(&["pull", &probe, "-o", path_str(&dir.join("p.wasm"))], None);
    assert!(line.contains("does not match its digest"), "{line}");
    assert!(!dir.join("p.wasm").exists(), "nothing is written");
    let output = crate::support::run(&[&probe]);
    assert!(!output.status.success());
    assert!(
        stderr_of(&output).contains("does not match its digest"),
        "{}",
        stderr_of(&output)
    );
}

/// Flips one byte in the middle of a stored blob, keeping its size.
pub fn tamper(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_registry_with_basic_auth_takes_only_its_users() {
    let registry = Registry::with_user("alice", "s3cret");
    let hello = example("hello_http");
    let reference = format!("{}/hello:v1", registry.addr);

    let line = one_error_line(&["push", path_str(&hello), &reference], None);
    assert!(line.contains("refused the credentials"), "{line}");
    let line = one_error_line(
        &["push", path_str(&hello), &reference, "--username", "alice"],
        Some("wrong"),
    );
    assert!(line.contains("refused the credentials"), "{line}");

    let pushed = digest_of(
        &["push", path_str(&hello), &reference, "--username", "alice"],
        Some("s3cret"),
    );
    let line = one_error_line(&["pull", &reference], None);
    assert!(line.contains("refused the credentials"), "{line}");
    let out = temp_dir("auth-pull").join("hello.wasm");
    let pulled = digest_of(
        &[
            "pull",
            &reference,
            "--username",
            "alice",
            "-o",
            path_str(&out),
        ],
        Some("s3cret"),
    );
    assert_eq!(pulled, pushed);
}
