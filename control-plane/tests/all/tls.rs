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

/// A client that opens a TLS handshake and never finishes it is cut off at
/// `--listen-tls-handshake-timeout`; one that sends half a request head
/// over plain HTTP at `--listen-header-timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_handshakes_and_half_requests_are_cut_off_at_their_deadlines() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn closed_after(addr: &str, first_bytes: &[u8]) -> std::time::Duration {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(first_bytes).await.unwrap();
        let start = std::time::Instant::now();
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the API server still held the connection");
        start.elapsed()
    }

    let dir = tempfile::tempdir().unwrap();
    let database_url = Postgres::shared().create_database();
    let tls_dir = dir.path().to_str().unwrap();
    let token = testkit::init_cluster(binary(), &database_url, &["--tls-dir", tls_dir]);
    let tls = ControlPlane::start(
        binary(),
        &database_url,
        &[
            "--tls-cert",
            &format!("{tls_dir}/server.crt"),
            "--tls-key",
            &format!("{tls_dir}/server.key"),
            "--listen-tls-handshake-timeout",
            "1s",
        ],
    );
    let addr = tls.url.trim_start_matches("https://").to_owned();
    // The start of a ClientHello record, then nothing.
    let took = closed_after(&addr, &[0x16, 0x03, 0x01, 0x02, 0x00]).await;
    assert!(took >= std::time::Duration::from_millis(500), "{took:?}");

    let plain = ControlPlane::start(
        binary(),
        &database_url,
        &[
            "--listen-header-timeout",
            "1s",
            "--listen-body-timeout",
            "1s",
            "--no-scheduler",
            "--no-controllers",
        ],
    );
    let addr = plain.url.trim_start_matches("http://").to_owned();
    let took = closed_after(&addr, b"GET /healthz HT").await;
    assert!(took >= std::time::Duration::from_millis(500), "{took:?}");

    // A body that stops coming is the caller's 408, not a 413 or a 5xx.
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /apis/skiff.dev/v1/namespaces/default/configmaps HTTP/1.1\r\nhost: x\r\n\
         authorization: Bearer {token}\r\ncontent-type: application/json\r\n\
         content-length: 1000\r\n\r\n{{\"apiVersion\""
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "the API server still waited for the body");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 1s"), "{answer}");
}
