//! Schemathesis, driven by the OpenAPI document the control plane serves,
//! against a real control plane on a throwaway database: no request may get
//! a 5xx, and no request the document calls valid may be refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

use crate::support::Cluster;

/// Pinned so a fresh clone fuzzes exactly as this test was written against;
/// installed from PyPI into a virtualenv under the target directory.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// Examples per operation in the fuzzing phase: with the examples phase
/// this keeps the run (about 95 operations) near a minute on two cores.
/// `SCHEMATHESIS_MAX_EXAMPLES` overrides it for a longer run.
const MAX_EXAMPLES: &str = "10";

/// The suite runs the examples and fuzzing phases. The coverage phase
/// (boundary values of every constraint) takes about four minutes here, over
/// the suite's budget: `SCHEMATHESIS_PHASES=examples,coverage,fuzzing` runs
/// it (see the closing notes for what it still finds).
const PHASES: &str = "examples,fuzzing";

fn phases() -> String {
    std::env::var("SCHEMATHESIS_PHASES").unwrap_or_else(|_| PHASES.to_owned())
}

fn max_examples() -> String {
    match std::env::var("SCHEMATHESIS_MAX_EXAMPLES") {
        Ok(n) => {
            assert!(
                n.parse::<u32>().is_ok_and(|n| n > 0),
                "SCHEMATHESIS_MAX_EXAMPLES must be a positive whole number, not `{n}`"
            );
            n
        }
        Err(_) => MAX_EXAMPLES.to_owned(),
    }
}

/// Fixed, so a failure reproduces; change it to explore further.
const SEED: &str = "20250613";

/// Hooks for what OpenAPI cannot state: a body's `metadata.name` and
/// `metadata.namespace` must equal the path's `{name}` and `{namespace}`
/// (the server refuses a mismatch with 400, rightly). Copying the path's
/// values into the body keeps such requests schema-valid *and* accepted.
/// Likewise a pod's spec never changes once created (422 otherwise): a
/// PUT of a pod that exists carries the spec it has.
const HOOKS: &str = r#"
import json
import os
import urllib.error
import urllib.request

import schemathesis


def stored(path):
    request = urllib.request.Request(
        os.environ["SKIFF_FUZZ_URL"] + path,
        headers={"Authorization": "Bearer " + os.environ["SKIFF_FUZZ_TOKEN"]},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError:
        return None


@schemathesis.hook
def before_call(context, case, **kwargs):
    body = case.body
    if (
        case.method.upper() == "PUT"
        and case.operation.path.endswith("/pods/{name}")
        and isinstance(body, dict)
    ):
        params = case.path_parameters or {}
        current = stored(
            "/apis/skiff.dev/v1/namespaces/%s/pods/%s"
            % (params.get("namespace"), params.get("name"))
        )
        if isinstance(current, dict) and "spec" in current:
            body["spec"] = current["spec"]
    if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
        return
    params = case.path_parameters or {}
    metadata = body["metadata"]
    if "name" in params:
        metadata["name"] = params["name"]
    if "namespace" in params and "namespace" in metadata:
        metadata["namespace"] = params["namespace"]
    # Names of a pod's volumes and ports must be unique, a rule across
    # items OpenAPI cannot state: later duplicates are renamed.
    spec = body.get("spec")
    pod_specs = [spec]
    if isinstance(spec, dict) and isinstance(spec.get("template"), dict):
        pod_specs.append(spec["template"].get("spec"))
    for pod_spec in pod_specs:
        if not isinstance(pod_spec, dict):
            continue
        # The account a pod runs as must exist in its namespace (state,
        # not shape): every namespace has `default`.
        if "serviceAccountName" in pod_spec:
            pod_spec["serviceAccountName"] = "default"
        for field in ("volumes", "ports"):
            items = pod_spec.get(field)
            if not isinstance(items, list):
                continue
            seen = set()
            for i, item in enumerate(items):
                if isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"]:
                    if item["name"] in seen:
                        item["name"] = "n%d" % i
                    seen.add(item["name"])
    # An autoscaled Deployment's minReplicas may not exceed its
    # maxReplicas, a rule across fields.
    if isinstance(spec, dict) and isinstance(spec.get("autoscaling"), dict):
        autoscaling = spec["autoscaling"]
        low, high = autoscaling.get("minReplicas"), autoscaling.get("maxReplicas")
        numbers = (int, float)
        if isinstance(low, numbers) and isinstance(high, numbers) and low > high:
            autoscaling["minReplicas"] = high
    # A Deployment's pod template must carry the labels its selector
    # matches (the document states the selector as matchLabels).
    if isinstance(spec, dict) and isinstance(spec.get("selector"), dict):
        match_labels = spec["selector"].get("matchLabels")
        template = spec.get("template")
        if isinstance(match_labels, dict) and isinstance(template, dict):
            template_meta = template.setdefault("metadata", {})
            if isinstance(template_meta, dict):
                labels = template_meta.get("labels")
                labels = dict(labels) if isinstance(labels, dict) else {}
                labels.update(match_labels)
                template_meta["labels"] = labels
"#;

/// Warnings that mean the run tested less than it seems (every request
/// refused for its token, a pattern schemathesis cannot generate from, a
/// filter that matched nothing) fail it.
///
/// The checks: no 5xx anywhere, and every request the document calls
/// valid accepted, except PATCH. A JSON merge patch (RFC 7386) is valid or
/// not depending on the object it is applied to (`null` deletes a required
/// field, any key can be added), which no request schema can say: PATCH is
/// fuzzed for 5xx only. The checks are named here rather than with
/// `--checks`, because a check named on the command line overrides a
/// per-operation `enabled = false`.
const CONFIG: &str = r#"
[warnings]
fail-on = ["missing_auth", "unsupported_regex", "unmatched_filter"]

[checks]
enabled = false
not_a_server_error.enabled = true
positive_data_acceptance.enabled = true

[[operations]]
include-method = "PATCH"
checks.positive_data_acceptance.enabled = false
"#;

/// The virtualenv with schemathesis, made on first use. It lives in the
/// target directory, so every test binary of the workspace can share it.
fn schemathesis() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-venv");
    let tool = venv.join("bin/schemathesis");
    let version = SCHEMATHESIS.split("==").nth(1).expect("pinned version");
    let installed = Command::new(&tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(version));
    if !installed {
        run_checked(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "creating a Python virtualenv (needs python3 with venv)",
        );
        run_checked(
            Command::new(venv.join("bin/pip")).args(["install", "--quiet", SCHEMATHESIS]),
            "installing schemathesis",
        );
    }
    tool
}

fn run_checked(command: &mut Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The served document without the `watch` parameter: a watch streams
/// until its timeout, so each fuzzed one would hold a request open for up
/// to the server's longest watch. Watches are tested in `watch.rs`.
fn without_watches(mut document: Value) -> Value {
    let paths = document["paths"].as_object_mut().expect("paths");
    for item in paths.values_mut() {
        for operation in item.as_object_mut().expect("path item").values_mut() {
            if let Some(parameters) = operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
            {
                parameters.retain(|p| p["name"] != "watch");
            }
        }
    }
    document
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_valid_requests_are_accepted_and_none_gets_a_5xx() {
    let tool = schemathesis();
    // The workspace's reqwest brings no rustls provider of its own.
    control_plane::tls::install_crypto_provider();
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let document: Value = crate::support::http_client()
        .get(format!("{}/openapi.json", plane.url))
        .bearer_auth(&cluster.admin_token)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("openapi.json");
    std::fs::write(
        &schema,
        serde_json::to_vec(&without_watches(document)).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("skiff_fuzz_hooks.py"), HOOKS).unwrap();
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, CONFIG).unwrap();

    let max_examples = max_examples();
    let started = Instant::now();
    let output = tokio::task::spawn_blocking({
        let plane_url = plane.url.clone();
        let token = cluster.admin_token.clone();
        let dir = dir.path().to_owned();
        move || {
            Command::new(&tool)
                .arg("--config-file")
                .arg(&config)
                .arg("run")
                .arg(&schema)
                .args(["--url", &plane_url])
                .args(["--header", &format!("Authorization: Bearer {token}")])
                // Stateful runs chain calls through links the document does
                // not declare; the other phases cover every operation.
                .args(["--phases", &phases()])
                .args(["--max-examples", &max_examples, "--seed", SEED])
                // One worker: hypothesis describes strategies by parsing
                // source, which is not thread-safe on Python 3.11.
                .args(["--workers", "1", "--request-timeout", "10"])
                .env("SCHEMATHESIS_HOOKS", "skiff_fuzz_hooks")
                .env("SKIFF_FUZZ_URL", &plane_url)
                .env("SKIFF_FUZZ_TOKEN", &token)
                .env("PYTHONPATH", &dir)
                .env("NO_COLOR", "1")
                .current_dir(&dir)
                .output()
                .expect("schemathesis starts")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: Vec<&str> = stdout.lines().rev().take(8).collect();
    eprintln!(
        "schemathesis took {:.0?}:\n{}",
        started.elapsed(),
        summary.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{}\ncontrol plane log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        plane.log()
    );
}
