//! `wasmctl dev` as the quick start runs it: a whole single-node cluster in
//! one process (managed Postgres, control plane, node, registry), a
//! component deployed into it, and its state kept across restarts.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use testkit::{spawn_logged, stable_port, wait_until};

use crate::support::{
    example, http_request, https_get, path_str, stderr_of, stdout_of, temp_dir, test_guest, wasmctl,
};

pub struct Dev {
    pub data: std::path::PathBuf,
    pub config: std::path::PathBuf,
    pub api: SocketAddr,
    pub ingress: SocketAddr,
    pub registry: SocketAddr,
}

impl Dev {
    pub fn new() -> Dev {
        let data = temp_dir("dev");
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Dev {
            config: data.join("config.yaml"),
            api: loopback(stable_port()),
            ingress: loopback(stable_port()),
            registry: loopback(stable_port()),
            data: data.join("cluster"),
        }
    }

    pub fn command(&self, extra: &[&str]) -> Command {
        let mut command = wasmctl();
        command
            .args(["dev", "--data-dir", path_str(&self.data)])
            .args(["--api", &self.api.to_string()])
            .args(["--ingress", &self.ingress.to_string()])
            .args(["--registry", &self.registry.to_string()])
            .args(extra)
            .env("WASMCTL_CONFIG", &self.config)
            .env("RUST_LOG", "warn");
        command
    }

    /// Starts it and waits for the line starting with `ready`; returns the
    /// process and the rest of that line.
    pub fn start(&self, extra: &[&str], ready: &str) -> (Child, String) {
        let (child, rest, _log) = spawn_logged(self.command(extra), ready, "wasmctl dev");
        (child, rest)
    }

    /// The admin token this start of it wrote into the data directory.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data.join("admin-token"))
            .expect("the admin token is kept in the data directory")
            .trim()
            .to_owned()
    }

    /// The API's answer to a GET of `path` with `token`, over TLS trusting
    /// only the cluster's CA.
    pub fn api_get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        https_get(
            &format!("https://{}{path}", self.api),
            &self.data.join("tls/ca.crt"),
            token,
        )
        .expect("the API answers")
    }

    /// The status of the API's answer to a GET of `path` with `token`.
    pub fn api_status(&self, path: &str, token: &str) -> u16 {
        self.api_get(&format!("/apis/skiff.dev/v1/{path}"), Some(token))
            .0
    }

    /// `wasmctl ARGS` on the context this cluster wrote.
    pub fn wasmctl(&self, args: &[&str]) -> std::process::Output {
        wasmctl()
            .args(args)
            .env("WASMCTL_CONFIG", &self.config)
            .output()
            .expect("wasmctl runs")
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_request(self.ingress, "hello-http.default.pod.localhost", path, &[])
            .ok()
            .map(|r| (r.status, r.body))
    }
}

impl Drop for Dev {
    /// As root the managed Postgres lives outside the data directory, at
    /// the place the data directory names; both go.
    fn drop(&mut self) {
        if let Ok(location) = std::fs::read_to_string(self.data.join("postgres-location"))
            && let Some(outside) = Path::new(location.trim()).parent()
        {
            let _ = std::fs::remove_dir_all(outside);
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

pub fn stop(mut child: Child) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = child.wait().expect("wait");
    assert!(status.success(), "wasmctl dev exited with {status}");
}

#[test]
fn dev_runs_a_cluster_deploys_a_component_and_keeps_its_state() {
    let dev = Dev::new();
    let hello = example("hello_http");
    let (child, deployed) = dev.start(&["--deploy", path_str(&hello)], "Deployed ");
    assert!(
        deployed.ends_with(&format!(
            "curl http://hello-http.default.pod.localhost:{}/",
            dev.ingress.port()
        )),
        "{deployed}"
    );
    assert_eq!(
        dev.get("/?name=dev"),
        Some((200, "Hello, dev! (GET /)\n".to_owned()))
    );

    // The context it wrote is current and reaches the cluster.
    let nodes = wasmctl()
        .args(["get", "nodes"])
        .env("WASMCTL_CONFIG", &dev.config)
        .output()
        .expect("wasmctl runs");
    assert!(nodes.status.success(), "{}", stderr_of(&nodes));
    let table = stdout_of(&nodes);
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(row.starts_with("dev ") && row.contains("Ready"), "{table}");

    // What a user looks at first works here too: logs, Events, describe,
    // top and metrics.
    let ok = |args: &[&str]| {
        let output = dev.wasmctl(args);
        assert!(output.status.success(), "{args:?}: {}", stderr_of(&output));
        stdout_of(&output)
    };
    let image = format!("{}/misbehave:v1", dev.registry);
    ok(&["push", path_str(&test_guest("misbehave")), &image]);
    let manifest = dev.data.with_extension("printer.json");
    std::fs::write(
        &manifest,
        serde_json::json!({
            "apiVersion": "skiff.dev/v1", "kind": "Pod",
            "metadata": {"name": "printer"},
            "spec": {"image": image},
        })
        .to_string(),
    )
    .unwrap();
    ok(&["apply", "-f", path_str(&manifest)]);
    assert!(
        wait_until(Duration::from_secs(60), || {
            http_request(
                dev.ingress,
                "printer.default.pod.localhost",
                "/print?tag=dev",
                &[],
            )
            .is_ok_and(|r| r.status == 200)
        }),
        "the printer pod never answered"
    );
    assert!(
        wait_until(Duration::from_secs(30), || ok(&["logs", "printer"])
            .contains("dev 0\ndev done\ndev tail\n")),
        "{}",
        ok(&["logs", "printer"])
    );
    // Events are written a moment after they happen.
    let mut events = String::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            events = ok(&["get", "events", "--for", "pod/printer"]);
            ["Scheduled", "Pulled", "Started"]
                .iter()
                .all(|reason| events.contains(reason))
        }),
        "{events}"
    );
    let described = ok(&["describe", "pod", "printer"]);
    assert!(
        described.contains("Events:") && described.contains("Started"),
        "{described}"
    );
    let mut top = String::new();
    assert!(
        wait_until(Duration::from_secs(60), || {
            top = ok(&["top", "pods"]);
            top.lines()
                .any(|l| l.starts_with("printer ") && l.ends_with(" dev"))
        }),
        "{top}"
    );
    let nodes = ok(&["top", "nodes"]);
    assert!(nodes.lines().any(|l| l.starts_with("dev ")), "{nodes}");
    let (status, metrics) = dev.api_get("/metrics", Some(&dev.admin_token()));
    assert_eq!(status, 200);
    assert!(metrics.contains("skiff_api_requests_total"));
    let _ = std::fs::remove_file(&manifest);

    // SIGTERM stops everything cleanly; started again on the same data, the
    // pod comes back without being deployed again.
    stop(child);
    assert!(dev.get("/").is_none(), "nothing serves once it stopped");
    let (child, _) = dev.start(&[], "Ctrl-C stops it.");
    assert!(
        wait_until(Duration::from_secs(60), || dev
            .get("/")
            .is_some_and(|(s, _)| s == 200)),
        "the pod did not come back after a restart"
    );
    stop(child);
}

#[test]
fn dev_refuses_an_address_that_is_taken() {
    let mut dev = Dev::new();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    dev.api = listener.local_addr().expect("address");
    let taken = dev.api.to_string();
    let output = dev.command(&[]).output().expect("wasmctl runs");
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    let stderr = stderr_of(&output);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains(&taken),
        "{stderr}"
    );
    // Nothing half-started is left listening.
    assert!(std::net::TcpStream::connect(dev.ingress).is_err());
    assert!(!Path::new(&dev.config).exists(), "no context was written");
}

#[test]
fn dev_starts_afresh_when_its_data_directory_was_removed() {
    let dev = Dev::new();
    let (child, _) = dev.start(&[], "Ctrl-C stops it.");
    let first = dev.admin_token();
    stop(child);

    // A new user's way to start over: the data directory goes, nothing else.
    std::fs::remove_dir_all(&dev.data).expect("removing the data directory");
    let (child, _, log) = spawn_logged(dev.command(&[]), "Ctrl-C stops it.", "wasmctl dev");
    let log = log.lock().unwrap().clone();
    let dashboard = log
        .lines()
        .find_map(|line| line.strip_prefix("  Dashboard "))
        .unwrap_or_else(|| panic!("no Dashboard line:\n{log}"));
    let second = dev.admin_token();
    assert_ne!(first, second, "a new cluster has a new admin token");
    assert_eq!(dev.api_status("namespaces", &second), 200);
    // The dashboard is where it says, and says where to find its token.
    let url = format!("https://{}/ui/", dev.api);
    assert!(dashboard.trim_start().starts_with(&url), "{dashboard}");
    assert!(dashboard.contains("admin-token"), "{dashboard}");
    let (status, page) = dev.api_get("/ui/", None);
    assert_eq!(status, 200);
    assert!(page.contains("/ui/app.js"), "{page}");
    // Plain HTTP is not served: a token would cross the wire in clear.
    assert!(
        http_request(dev.api, &dev.api.to_string(), "/ui/", &[]).map_or(true, |r| r.status >= 400),
        "the API answered plain HTTP"
    );
    assert_eq!(
        dev.api_status("namespaces", &first),
        401,
        "the old cluster is gone"
    );
    stop(child);
}

#[test]
fn dev_reset_starts_a_fresh_cluster() {
    let dev = Dev::new();
    let (child, _) = dev.start(&[], "Ctrl-C stops it.");
    let first = dev.admin_token();
    assert_eq!(dev.api_status("namespaces", &first), 200);
    let created = dev.wasmctl(&["create", "namespace", "before-reset"]);
    assert!(created.status.success(), "{}", stderr_of(&created));
    assert_eq!(dev.api_status("namespaces/before-reset", &first), 200);
    stop(child);

    let (child, _) = dev.start(&["--reset"], "Ctrl-C stops it.");
    let second = dev.admin_token();
    assert_ne!(first, second);
    assert_eq!(dev.api_status("namespaces", &second), 200);
    assert_eq!(
        dev.api_status("namespaces", &first),
        401,
        "the old token is refused"
    );
    assert_eq!(
        dev.api_status("namespaces/before-reset", &second),
        404,
        "the namespace survived --reset"
    );
    stop(child);
}

#[test]
fn dev_keeps_a_cluster_made_before_identities_and_names_reset_when_its_token_is_gone() {
    let dev = Dev::new();
    let (child, _) = dev.start(&[], "Ctrl-C stops it.");
    let token = dev.admin_token();
    stop(child);

    // A data directory from before identities (as root its Postgres lives
    // outside, at the place it names) is adopted, not wiped.
    let _ = std::fs::remove_file(dev.data.join("postgres-identity"));
    if let Ok(location) = std::fs::read_to_string(dev.data.join("postgres-location"))
        && let Some(outside) = Path::new(location.trim()).parent()
    {
        std::fs::remove_file(outside.join("identity")).expect("the outside identity");
    }
    let (child, _) = dev.start(&[], "Ctrl-C stops it.");
    assert_eq!(dev.admin_token(), token);
    assert_eq!(dev.api_status("namespaces", &token), 200);
    stop(child);

    // Without its admin token the cluster cannot be used; the way out is
    // named.
    std::fs::remove_file(dev.data.join("admin-token")).expect("the admin token");
    let output = dev.command(&[]).output().expect("wasmctl runs");
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    let stderr = stderr_of(&output);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("wasmctl dev --reset"),
        "{stderr}"
    );
}

#[test]
fn a_second_dev_on_a_data_directory_in_use_is_refused_and_touches_nothing() {
    let dev = Dev::new();
    let (child, _) = dev.start(&[], "Ctrl-C stops it.");
    let token = dev.admin_token();
    assert_eq!(dev.api_status("namespaces", &token), 200);

    // Other addresses, the same data directory: a reset here would stop
    // and wipe the Postgres the first one runs on.
    let mut second = Dev::new();
    second.data = dev.data.clone();
    let output = second.command(&["--reset"]).output().expect("wasmctl runs");
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("another wasmctl dev is running with the data directory"),
        "{stderr}"
    );
    assert_eq!(dev.admin_token(), token, "the tokens were kept");
    assert_eq!(
        dev.api_status("namespaces", &token),
        200,
        "the first still serves"
    );
    stop(child);
}

#[test]
fn reset_leaves_a_directory_that_is_not_a_dev_cluster_alone() {
    let dev = Dev::new();
    // A project folder of someone else's, with folders named as the dev
    // cluster's own.
    for folder in ["node", "registry"] {
        std::fs::create_dir_all(dev.data.join(folder)).unwrap();
        std::fs::write(dev.data.join(folder).join("keep"), "mine").unwrap();
    }
    let (child, _) = dev.start(&["--reset"], "Ctrl-C stops it.");
    stop(child);
    assert_eq!(
        std::fs::read_to_string(dev.data.join("registry/keep")).unwrap(),
        "mine"
    );
}
