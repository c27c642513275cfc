//! TLS: `init` makes a CA and a server certificate; clients that trust the
//! CA connect, others are refused.

use skiff_api::Kind;
use skiff_client::{Client, ClientConfig};
use testkit::{ControlPlane, Postgres};

use crate::support::binary;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_the_certificates_init_made() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = Postgres::shared().create_database();
    let tls_dir = dir.path().to_str().unwrap();
    let token = testkit::init_cluster(
        binary(),
        &database_url,
        &["--tls-dir", tls_dir, "--tls-san", "cp.example.internal"],
    );
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("server.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600, "the key is private");
    let plane = ControlPlane::start(
        binary(),
        &database_url,
        &[
            "--tls-cert",
            &format!("{tls_dir}/server.crt"),
            "--tls-key",
            &format!("{tls_dir}/server.key"),
        ],
    );
    assert!(plane.url.starts_with("https://127.0.0.1:"), "{}", plane.url);

    let trusting = Client::new(&ClientConfig {
        server: plane.url.clone(),
        token: token.clone(),
        ca_pem: Some(std::fs::read(dir.path().join("ca.crt")).unwrap()),
        ..Default::default()
    })
    .unwrap();
    let namespaces = trusting
        .list(Kind::Namespace, None, &Default::default())
        .await
        .unwrap();
    assert_eq!(namespaces.items[0]["metadata"]["name"], "default");

    let untrusting = Client::new(&ClientConfig {
        server: plane.url.clone(),
        token,
        ..Default::default()
    })
    .unwrap();
    let err = untrusting
        .list(Kind::Namespace, None, &Default::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    let plain = Client::new(&ClientConfig {
        server: plane.url.replace("https://", "http://"),
        token: "t".into(),
        ..Default::default()
    })
    .unwrap();
    assert!(
        plain
            .list(Kind::Namespace, None, &Default::default())
            .await
            .is_err()
    );
}
