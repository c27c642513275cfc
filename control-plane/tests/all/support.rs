//! A cluster for one test: its own database, `init` run on it, and any
//! number of control-plane processes serving it.

use std::path::Path;

use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_client::{Client, ClientConfig};
use testkit::{ControlPlane, Postgres};

pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_control-plane"))
}

pub struct Cluster {
    pub database_url: String,
    pub admin_token: String,
}

impl Cluster {
    /// A fresh database on the shared Postgres, initialized.
    pub fn new() -> Cluster {
        Self::on(Postgres::shared())
    }

    pub fn on(postgres: &Postgres) -> Cluster {
        let database_url = postgres.create_database();
        let admin_token = testkit::init_cluster(binary(), &database_url, &[]);
        Cluster {
            database_url,
            admin_token,
        }
    }

    /// Starts a control plane on this cluster's database. Its scheduler and
    /// controllers are off: these tests write pods and nodes by hand and
    /// must not race them.
    pub fn serve(&self, extra: &[&str]) -> ControlPlane {
        let mut args = vec!["--no-scheduler", "--no-controllers"];
        args.extend_from_slice(extra);
        ControlPlane::start(binary(), &self.database_url, &args)
    }
}

pub fn client(plane: &ControlPlane, token: &str) -> Client {
    Client::new(&ClientConfig {
        server: plane.url.clone(),
        token: token.to_owned(),
        ..Default::default()
    })
    .expect("client")
}

/// A valid object of `kind` named `name` (in namespace `default` when
/// namespaced).
pub fn object(kind: Kind, name: &str) -> Value {
    let mut object = json!({
        "apiVersion": skiff_api::API_VERSION,
        "kind": kind.name(),
        "metadata": {"name": name, "labels": {"app": name}},
    });
    let body = match kind {
        Kind::Namespace => json!({"spec": {}}),
        Kind::Node => json!({"spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}]}}),
        Kind::Pod => json!({"spec": {"image": "127.0.0.1:5000/hello:v1"}}),
        Kind::Deployment => json!({"spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"image": "127.0.0.1:5000/hello:v1"}},
        }}),
        Kind::Service => json!({"spec": {"selector": {"app": name}, "ports": [{"port": 80}]}}),
        Kind::Route => {
            json!({"spec": {"host": "shop.example.com", "path": "/api", "service": name}})
        }
        Kind::Secret => json!({"stringData": {"password": "hunter2"}}),
        Kind::ConfigMap => json!({"data": {"greeting": "hi"}}),
        Kind::ResourceQuota => json!({"spec": {"hard": {"pods": "10", "pod.memory": "1Gi"}}}),
        Kind::ServiceAccount => json!({"spec": {"role": "view"}}),
        Kind::Event => json!({
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": name, "uid": "u1"},
            "reason": "Started",
            "message": "started the pod",
            "type": "Normal",
            "source": {"component": "node", "host": "n1"},
        }),
    };
    for (key, value) in body.as_object().expect("object") {
        object[key] = value.clone();
    }
    object
}

pub fn namespace_of(kind: Kind) -> Option<&'static str> {
    kind.namespaced().then_some("default")
}

pub fn revision_of(object: &Value) -> i64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .expect("objects carry a numeric resourceVersion")
}

/// Reads `state` every 50 ms until `done` holds of it and returns it;
/// fails after 20 s naming `what` and the last state read.
/// Registers Node `name` and reports it Ready with `status` besides, its
/// lease current for ten minutes.
pub async fn ready_node(api: &Client, name: &str, mut status: Value) {
    let node = json!({
        "apiVersion": skiff_api::API_VERSION, "kind": "Node",
        "metadata": {"name": name},
        "spec": {},
    });
    let mut node = api.create(Kind::Node, None, &node).await.expect("node");
    status["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    node["status"] = status;
    api.replace_status(Kind::Node, None, name, &node)
        .await
        .expect("node status");
    api.renew_lease(name, std::time::Duration::from_secs(600))
        .await
        .expect("lease");
}

pub async fn eventually<T, Fut>(
    what: &str,
    mut state: impl FnMut() -> Fut,
    done: impl Fn(&T) -> bool,
) -> T
where
    T: std::fmt::Debug,
    Fut: std::future::Future<Output = T>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = state().await;
        if done(&now) {
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {now:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A plain HTTP client for tests that speak to the API directly; the TLS
/// stack needs its crypto provider chosen first, whichever test runs first.
pub fn http_client() -> reqwest::Client {
    http_client_builder().build().expect("an HTTP client")
}

pub fn http_client_builder() -> reqwest::ClientBuilder {
    control_plane::tls::install_crypto_provider();
    reqwest::Client::builder()
}
