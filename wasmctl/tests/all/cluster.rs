//! wasmctl's cluster verbs against a real control plane on a real Postgres.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use testkit::{ControlPlane, Postgres};

use crate::support::{stderr_of, stdout_of, temp_dir};

/// A control plane on a fresh database, and a wasmctl config whose
/// current context is its admin.
pub struct Cluster {
    pub plane: ControlPlane,
    pub database: String,
    /// The cluster admin's token.
    pub token: String,
    config: PathBuf,
    dir: PathBuf,
}

impl Cluster {
    pub fn start() -> Cluster {
        let binary = testkit::binary("control-plane");
        let database = Postgres::shared().create_database();
        let token = testkit::init_cluster(&binary, &database, &[]);
        let plane = ControlPlane::start(&binary, &database, &[]);
        let dir = temp_dir("cluster");
        let cluster = Cluster {
            config: dir.join("config.yaml"),
            dir,
            plane,
            database,
            token: token.clone(),
        };
        cluster.ok(&[
            "config",
            "set-context",
            "admin",
            "--server",
            &cluster.plane.url.clone(),
            "--token",
            &token,
        ]);
        cluster
    }

    /// The control plane's listening address (its URL is plain HTTP).
    pub fn api_addr(&self) -> std::net::SocketAddr {
        self.plane
            .url
            .trim_start_matches("http://")
            .parse()
            .expect("the control plane's address")
    }

    pub fn wasmctl(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wasmctl"));
        command
            .args(args)
            .env("WASMCTL_CONFIG", &self.config)
            .env("RUST_LOG", "warn");
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.wasmctl(args)
            .stdin(Stdio::null())
            .output()
            .expect("wasmctl runs")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "wasmctl {args:?} failed: {}",
            stderr_of(&output)
        );
        stdout_of(&output)
    }

    /// Runs and asserts failure with `code`; returns the single stderr line.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let output = self.run(args);
        let stderr = stderr_of(&output);
        assert_eq!(
            output.status.code(),
            Some(code),
            "wasmctl {args:?}: {stderr}"
        );
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "one error line from wasmctl {args:?}, got:\n{stderr}"
        );
        lines[0].to_owned()
    }

    pub fn manifest(&self, name: &str, text: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

const APP: &str = "\
apiVersion: skiff.dev/v1
kind: Deployment
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      image: 127.0.0.1:5000/web:v1
      resources: {memory: 64Mi, fuel: 50M, timeout: 5s}
---
apiVersion: skiff.dev/v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: skiff.dev/v1
kind: Namespace
metadata: {name: shop}
";

#[test]
fn apply_creates_then_leaves_unchanged_then_configures() {
    let cluster = Cluster::start();
    let app = cluster.manifest("app.yaml", APP);
    assert_eq!(
        cluster.ok(&["apply", "-f", &app]),
        "namespace/shop created\ndeployment/web created\nservice/web created\n"
    );
    assert_eq!(
        cluster.ok(&["apply", "-f", &app]),
        "namespace/shop unchanged\ndeployment/web unchanged\nservice/web unchanged\n"
    );
    let scaled = cluster.manifest("app.yaml", &APP.replace("replicas: 3", "replicas: 5"));
    assert_eq!(
        cluster.ok(&["apply", "-f", &scaled]),
        "namespace/shop unchanged\ndeployment/web configured\nservice/web unchanged\n"
    );
    let json = cluster.ok(&["get", "deployment", "web", "-n", "shop", "-o", "json"]);
    let deployment: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(deployment["spec"]["replicas"], 5);
    assert_eq!(deployment["metadata"]["generation"], 2);
}

#[test]
fn get_prints_tables_and_documents() {
    let cluster = Cluster::start();
    cluster.ok(&["apply", "-f", &cluster.manifest("app.yaml", APP)]);

    let table = cluster.ok(&["get", "deployments", "-n", "shop"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        "NAME   READY   UP-TO-DATE   AVAILABLE   AUTOSCALE   AGE"
    );
    // No node runs its pods, so none is ready; how many the Deployment
    // controller has created by now is a race, so UP-TO-DATE is not read.
    let columns: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(columns[..2], ["web", "0/3"], "{table}");
    assert_eq!(columns[3], "0", "{table}");

    let wide = cluster.ok(&["get", "deploy", "-n", "shop", "-o", "wide"]);
    assert!(
        wide.lines()
            .next()
            .unwrap()
            .ends_with("AGE   IMAGE                   SELECTOR"),
        "{wide}"
    );
    assert!(wide.contains("127.0.0.1:5000/web:v1   app=web"), "{wide}");

    let all = cluster.ok(&["get", "svc", "-A"]);
    // ENDPOINTS is READY/TOTAL: none ready without nodes, the total a race
    // with the Deployment controller.
    assert!(
        all.starts_with(
            "NAMESPACE   NAME   SELECTOR   PORTS     ENDPOINTS   AGE\nshop        web    app=web    80/HTTP   0/"
        ),
        "{all}"
    );

    let names = cluster.ok(&["get", "ns", "-o", "name"]);
    assert_eq!(names, "namespace/default\nnamespace/shop\n");

    let yaml = cluster.ok(&["get", "svc", "web", "-n", "shop", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Service\n") && yaml.contains("resourceVersion:"),
        "{yaml}"
    );

    let list = cluster.ok(&["get", "services", "-n", "shop", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["kind"], "ServiceList");
    assert_eq!(list["items"][0]["metadata"]["name"], "web");

    let described = cluster.ok(&["describe", "deployment", "web", "-n", "shop"]);
    assert!(
        described.starts_with("Name:         web\nNamespace:    shop\nKind:         Deployment\n"),
        "{described}"
    );
    assert!(described.contains("  replicas: 3\n"), "{described}");

    assert_eq!(
        cluster.fails(&["get", "deployment", "nope", "-n", "shop"], 1),
        "error: deployments \"nope\" not found"
    );
    assert_eq!(
        cluster.fails(&["get", "gizmos"], 2),
        "error: unknown kind `gizmos`; known kinds: namespaces, nodes, pods, deployments, services, routes, secrets, configmaps, resourcequotas, serviceaccounts, events"
    );
}

#[test]
fn bad_manifests_change_nothing() {
    let cluster = Cluster::start();
    let good_namespace =
        "apiVersion: skiff.dev/v1\nkind: Namespace\nmetadata: {name: first}\n---\n";
    let cases = [
        (
            "broken.yaml",
            format!("{good_namespace}kind: [unclosed\n"),
            "invalid YAML or JSON",
        ),
        (
            "gizmo.yaml",
            format!(
                "{good_namespace}apiVersion: skiff.dev/v1\nkind: Gizmo\nmetadata: {{name: g}}\n"
            ),
            "unknown kind `Gizmo`",
        ),
        (
            "version.yaml",
            format!("{good_namespace}apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n"),
            "apiVersion: must be skiff.dev/v1, not v1",
        ),
        (
            "field.yaml",
            format!(
                "{good_namespace}apiVersion: skiff.dev/v1\nkind: Pod\nmetadata: {{name: p}}\nspec: {{image: x, replicas: 2}}\n"
            ),
            "spec.replicas: unknown field `replicas`",
        ),
        (
            "value.yaml",
            format!(
                "{good_namespace}apiVersion: skiff.dev/v1\nkind: Pod\nmetadata: {{name: p}}\nspec: {{image: x, resources: {{memory: 10Ki}}}}\n"
            ),
            "spec.resources.memory: must be at least 1Mi",
        ),
    ];
    for (file, text, want) in cases {
        let path = cluster.manifest(file, &text);
        let line = cluster.fails(&["apply", "-f", &path], 2);
        assert!(line.starts_with(&format!("error: {path}")), "{line}");
        assert!(line.contains(want), "{file}: {line}");
    }
    // Not even the valid first document was applied.
    assert_eq!(
        cluster.fails(&["get", "ns", "first"], 1),
        "error: namespaces \"first\" not found"
    );
}

#[test]
fn delete_by_manifest_and_by_name() {
    let cluster = Cluster::start();
    let app = cluster.manifest("app.yaml", APP);
    cluster.ok(&["apply", "-f", &app]);
    assert_eq!(
        cluster.ok(&["delete", "service", "web", "-n", "shop"]),
        "service \"web\" deleted\n"
    );
    assert_eq!(
        cluster.fails(&["delete", "service", "web", "-n", "shop"], 1),
        "error: services \"web\" not found"
    );
    cluster.ok(&["delete", "svc", "web", "-n", "shop", "--ignore-not-found"]);
    let deleted = cluster.ok(&["delete", "-f", &app, "--ignore-not-found"]);
    assert_eq!(
        deleted,
        "deployment \"web\" deleted\nnamespace \"shop\" deleted\n"
    );
    assert_eq!(
        cluster.fails(&["get", "ns", "shop"], 1),
        "error: namespaces \"shop\" not found"
    );
}

#[test]
fn tokens_made_with_wasmctl_carry_their_role() {
    let cluster = Cluster::start();
    cluster.ok(&["create", "namespace", "shop"]);
    let token = cluster.ok(&["create", "token", "--namespace", "shop", "--role", "view"]);
    let token = token.trim();
    assert!(token.starts_with("skf_"), "{token}");
    cluster.ok(&[
        "config",
        "set-context",
        "viewer",
        "--server",
        &cluster.plane.url.clone(),
        "--token",
        token,
        "--namespace",
        "shop",
    ]);

    cluster.ok(&["get", "pods", "--context", "viewer"]);
    let refused = cluster.fails(&["create", "namespace", "mine", "--context", "viewer"], 1);
    assert_eq!(refused, "error: this token may not create namespaces");
    let refused = cluster.fails(&["get", "pods", "-n", "default", "--context", "viewer"], 1);
    assert_eq!(
        refused,
        "error: this token may not list pods in namespace default"
    );

    let bad_role = cluster.fails(
        &["create", "token", "--namespace", "shop", "--role", "owner"],
        1,
    );
    assert_eq!(
        bad_role,
        "error: role: must be admin, edit or view, not `owner`"
    );
}

#[test]
fn namespace_policies_tokens_and_dry_runs_from_the_command_line() {
    let cluster = Cluster::start();
    cluster.ok(&[
        "create",
        "namespace",
        "shop",
        "--pod-security",
        "baseline",
        "--route-host",
        "*.shop.test",
        "--max-priority",
        "10",
    ]);
    let described = cluster.ok(&["describe", "namespace", "shop"]);
    for want in [
        "Policy:\n",
        "  Pod security:  Baseline\n",
        "  Egress:        *\n",
        "  Route hosts:   *.shop.test\n",
        "  Max priority:  10\n",
    ] {
        assert!(described.contains(want), "{want:?} not in:\n{described}");
    }
    let set = cluster.ok(&[
        "set",
        "policy",
        "shop",
        "--egress",
        "*.example.com",
        "--egress",
        "127.0.0.1:8080",
    ]);
    assert!(
        set.contains("Egress:        *.example.com, 127.0.0.1:8080"),
        "{set}"
    );
    // A namespace stored without a policy shows the closed defaults.
    let default = cluster.ok(&["describe", "ns", "default"]);
    assert!(default.contains("Pod security:  Restricted"), "{default}");
    assert_eq!(
        cluster.fails(&["set", "policy", "shop", "--pod-security", "lax"], 2),
        "error: --pod-security `lax`: use Restricted, Baseline or Privileged"
    );
    assert_eq!(
        cluster.fails(&["set", "policy", "shop"], 2),
        "error: say what to set: --pod-security, --egress, --route-host, --max-priority or a --default-*"
    );
    // Resource defaults: fuel on for every pod that names none; a pod's
    // own value stays.
    let set = cluster.ok(&[
        "set",
        "policy",
        "shop",
        "--default-fuel",
        "10M",
        "--default-timeout",
        "2s",
    ]);
    assert!(
        set.contains("Pod defaults:  fuel 10M, timeout 2s\n"),
        "{set}"
    );
    let set = cluster.ok(&["set", "policy", "shop", "--default-memory", "32Mi"]);
    assert!(
        set.contains("Pod defaults:  memory 32Mi, fuel 10M, timeout 2s\n"),
        "one default set keeps the others: {set}"
    );
    let pods = cluster.manifest(
        "pods.yaml",
        "apiVersion: skiff.dev/v1\nkind: Pod\nmetadata: {name: bare, namespace: shop}\n\
         spec: {image: 127.0.0.1:5000/x:1}\n---\n\
         apiVersion: skiff.dev/v1\nkind: Pod\nmetadata: {name: own, namespace: shop}\n\
         spec: {image: 127.0.0.1:5000/x:1, resources: {fuel: 1G}}\n",
    );
    cluster.ok(&["apply", "-f", &pods]);
    let resources = |name: &str| -> serde_json::Value {
        let pod: serde_json::Value =
            serde_json::from_str(&cluster.ok(&["get", "pod", name, "-n", "shop", "-o", "json"]))
                .unwrap();
        pod["spec"]["resources"].clone()
    };
    let bare = resources("bare");
    assert_eq!(
        (
            &bare["fuel"],
            &bare["timeout"],
            &bare["memory"],
            &bare["maxInstances"]
        ),
        (&json!("10M"), &json!("2s"), &json!("32Mi"), &json!(100)),
        "the cluster's default fills what the namespace leaves out"
    );
    assert_eq!(resources("own")["fuel"], "1G");
    let bad = cluster.fails(&["set", "policy", "shop", "--default-fuel", "lots"], 1);
    assert!(
        bad.starts_with("error: spec.policy.podDefaults.fuel: "),
        "{bad}"
    );

    // Tokens: made with a ttl, listed without secrets, deleted by id.
    let token = cluster.ok(&[
        "create",
        "token",
        "-n",
        "shop",
        "--role",
        "edit",
        "--ttl",
        "24h",
        "--description",
        "ci",
    ]);
    let token = token.trim();
    let listed = cluster.ok(&["get", "tokens", "-n", "shop"]);
    assert!(
        listed.starts_with("ID") && listed.contains("edit") && listed.contains("ci"),
        "{listed}"
    );
    assert!(!listed.contains(token), "a secret was listed: {listed}");
    assert!(
        !listed.contains("never   never"),
        "no expiry shown: {listed}"
    );
    let all = cluster.ok(&["get", "tokens", "-A"]);
    assert!(all.contains("cluster-admin"), "{all}");
    let id = listed
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        cluster.ok(&["delete", "token", &id, "-n", "shop"]),
        format!("token \"{id}\" deleted\n")
    );
    assert_eq!(
        cluster.ok(&["get", "tokens", "-n", "shop"]).lines().count(),
        1
    );
    assert_eq!(
        cluster.fails(
            &[
                "create", "token", "-n", "shop", "--role", "view", "--ttl", "soon"
            ],
            2
        ),
        "error: --ttl `soon`: not a duration such as 24h"
    );

    // A tenant's edit token meets the policy, with the field named.
    let edit = cluster.ok(&["create", "token", "-n", "shop", "--role", "edit"]);
    cluster.ok(&[
        "config",
        "set-context",
        "tenant",
        "--server",
        &cluster.plane.url.clone(),
        "--token",
        edit.trim(),
        "--namespace",
        "shop",
    ]);
    let manifest = cluster.dir.join("root.json");
    std::fs::write(
        &manifest,
        r#"{"apiVersion": "skiff.dev/v1", "kind": "Pod", "metadata": {"name": "root"},
            "spec": {"image": "127.0.0.1:5000/x:v1", "runtime": "Linux",
                     "securityContext": {"runAsUser": 0}}}"#,
    )
    .unwrap();
    let path = manifest.display().to_string();
    let refused = cluster.fails(&["apply", "-f", &path, "--context", "tenant"], 1);
    assert!(
        refused.contains("spec.securityContext.runAsUser: running as root (uid 0) is not allowed in namespace shop"),
        "{refused}"
    );
    // --dry-run writes nothing, on apply and on delete.
    std::fs::write(
        &manifest,
        r#"{"apiVersion": "skiff.dev/v1", "kind": "Pod", "metadata": {"name": "web"},
            "spec": {"image": "127.0.0.1:5000/x:v1"}}"#,
    )
    .unwrap();
    let dry = cluster.ok(&["apply", "-f", &path, "--dry-run", "--context", "tenant"]);
    assert!(dry.contains("(dry run)"), "{dry}");
    cluster.fails(&["get", "pod", "web", "-n", "shop"], 1);
    cluster.ok(&["apply", "-f", &path, "--context", "tenant"]);
    let dry = cluster.ok(&["delete", "pod", "web", "-n", "shop", "--dry-run"]);
    assert_eq!(dry, "pod \"web\" deleted (dry run)\n");
    cluster.ok(&["get", "pod", "web", "-n", "shop"]);
}

#[test]
fn contexts_live_in_a_private_config() {
    let cluster = Cluster::start();
    cluster.ok(&[
        "config",
        "set-context",
        "other",
        "--server",
        "http://127.0.0.1:1",
        "--token",
        "skf_x",
        "--namespace",
        "team",
    ]);
    let contexts = cluster.ok(&["config", "get-contexts"]);
    assert!(
        contexts.starts_with("CURRENT   NAME    SERVER"),
        "{contexts}"
    );
    assert!(contexts.contains("*         admin"), "{contexts}");
    assert_eq!(cluster.ok(&["config", "current-context"]), "admin\n");
    cluster.ok(&["config", "use-context", "other"]);
    assert_eq!(cluster.ok(&["config", "current-context"]), "other\n");
    let view = cluster.ok(&["config", "view"]);
    assert!(
        view.contains("token: REDACTED") && !view.contains("skf_x"),
        "{view}"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&cluster.config).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let unreachable = cluster.fails(&["get", "pods"], 1);
    assert!(
        unreachable.starts_with("error: cannot reach http://127.0.0.1:1: "),
        "{unreachable}"
    );
    assert_eq!(
        cluster.fails(&["get", "pods", "--context", "nope"], 2),
        "error: no context named `nope` in the config"
    );
}

#[test]
fn get_watch_prints_changes_as_they_happen() {
    let cluster = Cluster::start();
    let mut watch = cluster
        .wasmctl(&["get", "configmaps", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    // The header comes first; then each change prints a row.
    let manifest = cluster.manifest(
        "cm.yaml",
        "apiVersion: skiff.dev/v1\nkind: ConfigMap\nmetadata: {name: fresh}\ndata: {a: b}\n",
    );
    let (sender, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.by_ref().map_while(Result::ok) {
            if line.starts_with("NAME ") {
                continue;
            }
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    // The watch may start after the apply; retry the change until it shows.
    let row = loop {
        cluster.ok(&["apply", "-f", &manifest]);
        match received.recv_timeout(Duration::from_secs(5)) {
            Ok(line) => break line,
            Err(_) => {
                cluster.ok(&["delete", "-f", &manifest]);
            }
        }
    };
    assert!(row.starts_with("fresh "), "{row}");
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn secrets_and_config_maps_from_literals_files_and_directories() {
    let cluster = Cluster::start();
    let dir = cluster.dir.join("entries");
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    std::fs::write(dir.join("app.env"), "MODE=prod\n").unwrap();
    std::fs::write(dir.join("logo.bin"), [0u8, 159, 146, 150]).unwrap();
    let key_file = cluster.manifest("tls.key", "-----BEGIN KEY-----\n");
    let dir_arg = dir.to_str().unwrap();
    let key_arg = format!("server.key={key_file}");

    assert_eq!(
        cluster.ok(&[
            "create",
            "secret",
            "generic",
            "app",
            "--from-literal",
            "user=admin",
            "--from-literal",
            "empty=",
            "--from-file",
            &key_arg,
            "--from-file",
            &key_file,
        ]),
        "secret/app created\n"
    );
    let json_of = |args: &[&str]| -> Value { serde_json::from_str(&cluster.ok(args)).unwrap() };
    let secret = json_of(&["get", "secret", "app", "-o", "json"]);
    let decoded = |key: &str| {
        let value = secret["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{key}: {secret}"));
        String::from_utf8(STANDARD.decode(value).unwrap()).unwrap()
    };
    assert_eq!(decoded("user"), "admin");
    assert_eq!(decoded("empty"), "");
    assert_eq!(decoded("server.key"), "-----BEGIN KEY-----\n");
    assert_eq!(decoded("tls.key"), "-----BEGIN KEY-----\n");
    assert_eq!(secret["type"], "Opaque");

    // A directory: each regular file, text in data and the rest in
    // binaryData; the subdirectory is skipped.
    cluster.ok(&[
        "create",
        "configmap",
        "files",
        "--from-file",
        dir_arg,
        "-n",
        "default",
    ]);
    let config_map = json_of(&["get", "cm", "files", "-o", "json"]);
    assert_eq!(config_map["data"], json!({"app.env": "MODE=prod\n"}));
    assert_eq!(
        config_map["binaryData"],
        json!({"logo.bin": STANDARD.encode([0u8, 159, 146, 150])})
    );

    // A dry run writes nothing.
    assert_eq!(
        cluster.ok(&[
            "create",
            "secret",
            "generic",
            "trial",
            "--from-literal",
            "a=b",
            "--dry-run"
        ]),
        "secret/trial created (dry run)\n"
    );
    cluster.fails(&["get", "secret", "trial"], 1);

    // Bad input: one line naming the flag, exit code 2, nothing written.
    let missing = cluster.dir.join("absent");
    let missing_arg = missing.to_str().unwrap();
    for (args, error) in [
        (
            vec!["create", "secret", "generic", "bad", "--from-literal", "novalue"],
            "error: --from-literal `novalue`: expected KEY=VALUE".to_owned(),
        ),
        (
            vec!["create", "secret", "generic", "bad", "--from-literal", "../x=1"],
            "error: --from-literal `../x=1`: key `../x`: key must be letters, digits, '-', '_' or '.'".to_owned(),
        ),
        (
            vec!["create", "configmap", "bad", "--from-literal", "..=1"],
            "error: --from-literal `..=1`: key `..`: key must not be `.` or `..`".to_owned(),
        ),
        (
            vec!["create", "secret", "generic", "bad", "--from-literal", "a=1", "--from-literal", "a=2"],
            "error: --from-literal `a=2`: key `a` is given more than once".to_owned(),
        ),
        (
            vec!["create", "secret", "generic", "bad", "--from-file", missing_arg],
            format!("error: --from-file `{missing_arg}`: {missing_arg}: No such file or directory (os error 2)"),
        ),
        (
            vec!["create", "configmap", "bad", "--from-file", &format!("k={dir_arg}")],
            format!("error: --from-file `k={dir_arg}`: a directory takes no KEY (each file is keyed by its name)"),
        ),
        (
            vec!["create", "secret", "generic", "Bad_Name", "--from-literal", "a=1"],
            "error: secret `Bad_Name`: must be a DNS label: lower-case letters, digits and '-', starting and ending with a letter or digit".to_owned(),
        ),
    ] {
        assert_eq!(cluster.fails(&args, 2), error, "{args:?}");
    }
    let listed = cluster.ok(&["get", "secrets", "-o", "json"]);
    assert!(!listed.contains("\"bad\""), "{listed}");
}

#[test]
fn quotas_show_used_and_hard_in_get_and_describe() {
    let cluster = Cluster::start();
    let quota = cluster.manifest(
        "quota.yaml",
        "apiVersion: skiff.dev/v1\nkind: ResourceQuota\nmetadata: {name: caps}\n\
         spec: {hard: {configmaps: '5', memory: 1Gi, pod.memory: 64Mi}}\n",
    );
    cluster.ok(&["apply", "-f", &quota]);
    cluster.ok(&["create", "configmap", "one", "--from-literal", "a=b"]);
    let table = cluster.ok(&["get", "quota"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "USED/HARD", "AGE"]);
    let row = lines.next().unwrap();
    assert!(
        row.starts_with("caps")
            && row.contains("configmaps: 1/5, memory: 0B/1Gi, pod.memory: 64Mi"),
        "{table}"
    );
    let described = cluster.ok(&["describe", "resourcequota", "caps"]);
    let rows: Vec<Vec<&str>> = described
        .lines()
        .skip_while(|l| !l.starts_with("Resource"))
        .take_while(|l| !l.starts_with("Events:"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["Resource", "Used", "Hard"],
            vec!["configmaps", "1", "5"],
            vec!["memory", "0B", "1Gi"],
            vec!["pod.memory", "-", "64Mi"],
        ],
        "{described}"
    );
}
