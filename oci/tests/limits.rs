//! Pulls from a lying registry: a real HTTP server on loopback that speaks
//! enough of the distribution API (`/v2/`, manifests, blobs) to declare
//! small sizes and serve huge or endless bodies, a gzip bomb, too many
//! layers, and a body that stalls. Each pull must fail with the cap it
//! crossed, having read little past it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use serde_json::json;
use skiff_oci::{
    BlobCache, Credentials, Limits, OciError, Registry, parse_reference, sha256_digest,
};

const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
const LINUX_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// What the registry answers a path with.
#[derive(Clone)]
enum Answer {
    Bytes(&'static str, Bytes),
    /// Bytes for ever, counted into the registry's `sent`.
    Endless(&'static str),
    /// These bytes, then nothing, never ending.
    Stall(Bytes),
    /// No response at all.
    Silent,
    /// A byte every 100ms, for ever: never quite silent.
    Trickle,
}

struct Lying {
    addr: SocketAddr,
    /// Bytes of endless bodies handed to the connection so far.
    sent: Arc<AtomicU64>,
}

async fn lying_registry(answers: HashMap<String, Answer>) -> Lying {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let answers = Arc::new(answers);
    let counter = sent.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (answers, sent) = (answers.clone(), counter.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<_>| {
                    let answer = answers.get(request.uri().path()).cloned();
                    let sent = sent.clone();
                    async move { Ok::<_, Infallible>(respond(answer, sent).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Lying { addr, sent }
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

async fn respond(answer: Option<Answer>, sent: Arc<AtomicU64>) -> Response<Body> {
    let body = |stream: futures::stream::BoxStream<'static, Bytes>| -> Body {
        BodyExt::boxed_unsync(StreamBody::new(stream.map(|b| Ok(Frame::data(b)))))
    };
    let (content_type, body) = match answer {
        None => {
            return Response::builder()
                .status(404)
                .body(body(
                    futures::stream::iter([Bytes::from_static(
                        br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#,
                    )])
                    .boxed(),
                ))
                .unwrap();
        }
        Some(Answer::Silent) => futures::future::pending().await,
        Some(Answer::Bytes(content_type, bytes)) => {
            (content_type, body(futures::stream::iter([bytes]).boxed()))
        }
        Some(Answer::Endless(content_type)) => {
            let chunk = Bytes::from(vec![b' '; 64 << 10]);
            let stream = futures::stream::repeat(chunk)
                .map(move |chunk| {
                    sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    chunk
                })
                .boxed();
            (content_type, body(stream))
        }
        Some(Answer::Trickle) => {
            let stream = futures::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((Bytes::from_static(b" "), ()))
            })
            .boxed();
            (MANIFEST, body(stream))
        }
        Some(Answer::Stall(prefix)) => (
            "application/octet-stream",
            body(
                futures::stream::iter([prefix])
                    .chain(futures::stream::pending())
                    .boxed(),
            ),
        ),
    };
    Response::builder()
        .header("Content-Type", content_type)
        .body(body)
        .unwrap()
}

fn manifest(config: (&str, &[u8]), layers: &[serde_json::Value]) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": config.0, "digest": sha256_digest(config.1), "size": config.1.len()},
            "layers": layers,
        }))
        .unwrap(),
    )
}

fn layer(media_type: &str, digest: &str, size: i64) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": digest, "size": size})
}

fn small_limits() -> Limits {
    Limits {
        max_component_bytes: 1 << 20,
        max_image_bytes: 4 << 20,
        max_unpacked_bytes: 8 << 20,
        stall_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(3),
        ..Limits::default()
    }
}

/// A registry with one component whose layer is served by `answer`
/// while its descriptor declares `declared` bytes.
async fn component_registry(answer: Answer, declared: i64) -> (Lying, String) {
    let digest = sha256_digest(b"the real component");
    let config = b"{}";
    let mut answers = HashMap::new();
    answers.insert(
        "/v2/app/manifests/v1".into(),
        Answer::Bytes(
            MANIFEST,
            manifest(
                (WASM_CONFIG, config),
                &[layer("application/wasm", &digest, declared)],
            ),
        ),
    );
    answers.insert(format!("/v2/app/blobs/{digest}"), answer);
    let registry = lying_registry(answers).await;
    (registry, digest)
}

#[tokio::test]
async fn a_blob_longer_than_its_descriptor_is_cut_off_and_never_cached() {
    let (lying, digest) = component_registry(Answer::Endless("application/wasm"), 1000).await;
    let registry = Registry::with_limits(&[], small_limits());
    let reference = parse_reference(&format!("{}/app:v1", lying.addr)).unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(cache_dir.path(), 1 << 30).unwrap();
    let result = cache
        .get_or_fetch("sha256:m", || {
            registry.pull(&reference, &Credentials::Anonymous)
        })
        .await;
    let error = match result {
        Err(skiff_oci::CacheError::Pull(e)) => e,
        other => panic!("{:?}", other.map(|b| b.len())),
    };
    assert_eq!(
        error.to_string(),
        format!(
            "{}/app:v1: layer {digest} is over its declared size of 1000 bytes; the pull stopped there",
            lying.addr
        )
    );
    assert!(matches!(error, OciError::OverCap { limit: 1000, .. }));
    // The endless body was abandoned: what the server managed to hand the
    // socket is a few buffers' worth, not the gigabytes it would send.
    let sent = lying.sent.load(Ordering::SeqCst);
    assert!(sent < 16 << 20, "the registry sent {sent} bytes");
    // Nothing of it reached the cache's disk.
    for sub in ["blobs", "manifests"] {
        let entries: Vec<_> = std::fs::read_dir(cache_dir.path().join(sub))
            .unwrap()
            .collect();
        assert!(entries.is_empty(), "{sub}: {entries:?}");
    }
}

#[tokio::test]
async fn a_blob_without_a_believable_size_stops_at_the_component_cap() {
    // A negative size declares nothing: the cap is what holds.
    let (lying, digest) = component_registry(Answer::Endless("application/wasm"), -1).await;
    let registry = Registry::with_limits(&[], small_limits());
    let reference = parse_reference(&format!("{}/app:v1", lying.addr)).unwrap();
    let error = registry
        .pull(&reference, &Credentials::Anonymous)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}/app:v1: layer {digest} is over the component size limit of 1048576 bytes; the pull stopped there",
            lying.addr
        )
    );
    let sent = lying.sent.load(Ordering::SeqCst);
    assert!(sent < 16 << 20, "the registry sent {sent} bytes");
}

#[tokio::test]
async fn an_endless_manifest_is_cut_off_at_the_manifest_cap() {
    let mut answers = HashMap::new();
    answers.insert("/v2/app/manifests/v1".into(), Answer::Endless(MANIFEST));
    let lying = lying_registry(answers).await;
    let registry = Registry::with_limits(&[], small_limits());
    let reference = parse_reference(&format!("{}/app:v1", lying.addr)).unwrap();
    let error = registry
        .resolve_manifest(&reference, &Credentials::Anonymous)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}/app:v1: manifest v1 is over the manifest size limit of 4194304 bytes; the pull stopped there",
            lying.addr
        )
    );
    let sent = lying.sent.load(Ordering::SeqCst);
    assert!(sent < 24 << 20, "the registry sent {sent} bytes");
    // Asking for the digest (the scheduler's and the node's first
    // question) reads no further either, when no header names it.
    let error = registry
        .ask(&reference, &Credentials::Anonymous)
        .await
        .unwrap_err();
    assert!(matches!(error, OciError::OverCap { .. }), "{error}");
}

/// A Linux image whose one gzip layer is `compressed`.
async fn linux_registry(layers: Vec<(Bytes, &'static str)>) -> Lying {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let mut answers = HashMap::new();
    answers.insert(
        format!("/v2/img/blobs/{}", sha256_digest(config)),
        Answer::Bytes("application/json", Bytes::from_static(config)),
    );
    let mut descriptors = Vec::new();
    for (bytes, media_type) in layers {
        let digest = sha256_digest(&bytes);
        descriptors.push(layer(media_type, &digest, bytes.len() as i64));
        answers.insert(
            format!("/v2/img/blobs/{digest}"),
            Answer::Bytes("application/octet-stream", bytes),
        );
    }
    answers.insert(
        "/v2/img/manifests/v1".into(),
        Answer::Bytes(MANIFEST, manifest((LINUX_CONFIG, config), &descriptors)),
    );
    lying_registry(answers).await
}

fn gzip(zeros: usize) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..zeros >> 20 {
        encoder.write_all(&chunk).unwrap();
    }
    Bytes::from(encoder.finish().unwrap())
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_while_it_is_measured() {
    const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    // 64 MiB of zeros, some tens of KiB compressed: far under the 4 MiB
    // download cap, eight times the 8 MiB unpacked cap.
    let bomb = gzip(64 << 20);
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let small = gzip(1 << 20);
    let lying = linux_registry(vec![(small.clone(), GZIP), (bomb.clone(), GZIP)]).await;
    let registry = Registry::with_limits(&[], small_limits());
    let reference = parse_reference(&format!("{}/img:v1", lying.addr)).unwrap();
    let error = registry
        .pull_linux(&reference, &Credentials::Anonymous)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}/img:v1: layer {} unpacked is over the unpacked image size limit of 8388608 bytes; the pull stopped there",
            lying.addr,
            sha256_digest(&bomb)
        )
    );

    // The same image under a cap it fits pulls, every layer measured.
    let registry = Registry::with_limits(
        &[],
        Limits {
            max_unpacked_bytes: 66 << 20,
            ..small_limits()
        },
    );
    let image = registry
        .pull_linux(&reference, &Credentials::Anonymous)
        .await
        .unwrap();
    assert_eq!(image.layers.len(), 2);
    assert_eq!(image.layers[1].bytes, bomb);
}

#[tokio::test]
async fn a_zstd_bomb_is_refused_too() {
    const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    let bomb = Bytes::from(zstd::encode_all(&vec![0u8; 32 << 20][..], 3).unwrap());
    let lying = linux_registry(vec![(bomb.clone(), ZSTD)]).await;
    let registry = Registry::with_limits(&[], small_limits());
    let reference = parse_reference(&format!("{}/img:v1", lying.addr)).unwrap();
    let error = registry
        .pull_linux(&reference, &Credentials::Anonymous)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, OciError::OverCap { blob, cap: "the unpacked image size limit", .. }
            if *blob == format!("layer {} unpacked", sha256_digest(&bomb))),
        "{error}"
    );
}

#[tokio::test]
async fn an_image_of_too_many_layers_is_refused_before_any_blob() {
    let layers: Vec<_> = (0..129)
        .map(|i| {
            layer(
                "application/vnd.oci.image.layer.v1.tar+gzip",
                &sha256_digest(format!("layer {i}").as_bytes()),
                10,
            )
        })
        .collect();
    let mut answers = HashMap::new();
    answers.insert(
        "/v2/img/manifests/v1".into(),
        Answer::Bytes(MANIFEST, manifest((LINUX_CONFIG, b"{}"), &layers)),
    );
    let lying = lying_registry(answers).await;
    let registry = Registry::with_limits(&[], small_limits());
    let reference = parse_reference(&format!("{}/img:v1", lying.addr)).unwrap();
    let error = registry
        .pull_linux(&reference, &Credentials::Anonymous)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}/img:v1: 129 layers is over the layer count limit of 128",
            lying.addr
        )
    );
}

#[tokio::test]
async fn a_registry_that_stalls_mid_blob_fails_within_the_stall_timeout() {
    let (lying, digest) =
        component_registry(Answer::Stall(Bytes::from_static(b"the real")), 18).await;
    let registry = Registry::with_limits(&[], small_limits());
    let reference = parse_reference(&format!("{}/app:v1", lying.addr)).unwrap();
    let started = Instant::now();
    let error = registry
        .pull(&reference, &Credentials::Anonymous)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(error, OciError::Timeout { .. }), "{error}");
    assert!(
        error.to_string().contains(&format!("layer {digest}")),
        "{error}"
    );
    // 0.5s of silence allowed; well before the 3s request deadline.
    assert!(took < Duration::from_millis(2500), "took {took:?}");
}

#[tokio::test]
async fn a_registry_that_never_answers_fails_within_the_stall_timeout() {
    let mut answers = HashMap::new();
    answers.insert("/v2/app/manifests/v1".into(), Answer::Silent);
    let lying = lying_registry(answers).await;
    let registry = Registry::with_limits(&[], small_limits());
    let reference = parse_reference(&format!("{}/app:v1", lying.addr)).unwrap();
    let started = Instant::now();
    let error = registry
        .resolve_manifest(&reference, &Credentials::Anonymous)
        .await
        .unwrap_err();
    assert!(matches!(error, OciError::Timeout { .. }), "{error}");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2500), "took {took:?}");
}

#[tokio::test]
async fn a_registry_that_trickles_fails_at_the_request_deadline() {
    let mut answers = HashMap::new();
    answers.insert("/v2/app/manifests/v1".into(), Answer::Trickle);
    let lying = lying_registry(answers).await;
    let registry = Registry::with_limits(&[], small_limits());
    let reference = parse_reference(&format!("{}/app:v1", lying.addr)).unwrap();
    let started = Instant::now();
    let error = registry
        .resolve_manifest(&reference, &Credentials::Anonymous)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(error, OciError::Timeout { .. }), "{error}");
    // Never silent for the 0.5s stall timeout: the 3s deadline ends it.
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(6),
        "took {took:?}: {error}"
    );
}
