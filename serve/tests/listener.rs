//! The listener's edges, met the way an attacker or a broken client meets
//! them: real sockets on loopback, each test with deadlines short enough to
//! watch them fire.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use skiff_serve::{Limits, Options, Peer, Protocols};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

type Boxed = http_body_util::combinators::BoxBody<Bytes, Infallible>;

const SHORT: Duration = Duration::from_millis(400);

fn limits() -> Limits {
    Limits {
        max_connections: 64,
        max_connections_per_client: 64,
        header_read_timeout: SHORT,
        body_timeout: SHORT,
        write_timeout: SHORT,
        tls_handshake_timeout: SHORT,
    }
}

/// Serves a test handler: `/` answers ok, `/body` reads the whole body and
/// answers its length (or 408 with the error), `/flood` streams without end
/// and tells `dropped` when hyper gives up on it; `/peer` answers the peer.
async fn start(
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    protocols: Protocols,
) -> (SocketAddr, Flood, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let (dropped_tx, dropped_rx) = tokio::sync::mpsc::unbounded_channel();
    let options = Options {
        limits,
        protocols,
        tls,
        grace: Duration::from_millis(100),
    };
    tokio::spawn(skiff_serve::serve(
        listener,
        options,
        move |request: http::Request<skiff_serve::Body>| {
            let dropped = dropped_tx.clone();
            async move {
                match request.uri().path() {
                    "/body" => match request.into_body().collect().await {
                        Ok(body) => text(200, format!("{}", body.to_bytes().len())),
                        Err(e) => text(408, e.to_string()),
                    },
                    "/flood" => {
                        let guard = DropSignal(dropped);
                        let chunks = futures_stream(guard);
                        http::Response::new(StreamBody::new(chunks).boxed())
                    }
                    "/peer" => {
                        let peer = request.extensions().get::<Peer>().map(|p| p.0.to_string());
                        text(200, peer.unwrap_or_default())
                    }
                    _ => text(200, "ok".into()),
                }
            }
        },
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, Flood(dropped_rx), stop)
}

struct Flood(tokio::sync::mpsc::UnboundedReceiver<()>);

struct DropSignal(tokio::sync::mpsc::UnboundedSender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// An endless stream of 64 KiB frames that signals when dropped.
fn futures_stream(
    guard: DropSignal,
) -> impl futures::Stream<Item = Result<http_body::Frame<Bytes>, Infallible>> + Send {
    let chunk = Bytes::from(vec![b'x'; 64 << 10]);
    Endless {
        chunk,
        _guard: guard,
    }
}

struct Endless {
    chunk: Bytes,
    _guard: DropSignal,
}

impl futures::Stream for Endless {
    type Item = Result<http_body::Frame<Bytes>, Infallible>;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.clone()))))
    }
}

fn text(status: u16, body: String) -> http::Response<Boxed> {
    http::Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap()
}

/// Reads until the server closes the connection (or fails it); returns
/// what arrived and how long it took. Panics if that takes `within`.
async fn until_closed<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> (String, Duration) {
    let start = Instant::now();
    let mut seen = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server still held the connection after {within:?}"
    );
    (String::from_utf8_lossy(&seen).into_owned(), start.elapsed())
}

#[tokio::test]
async fn half_a_request_line_is_dropped_at_the_header_deadline() {
    let (addr, _, _stop) = start(limits(), None, Protocols::Http1).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET / HT").await.unwrap();
    let (answer, took) = until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(took >= SHORT / 2, "closed before the deadline: {took:?}");
    assert!(!answer.contains("200"), "{answer}");
}

#[tokio::test]
async fn headers_trickled_a_byte_at_a_time_do_not_extend_the_deadline() {
    let (addr, _, _stop) = start(limits(), None, Protocols::Http1).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let start = Instant::now();
    let request = b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut closed = false;
    for byte in request {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if start.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    if !closed {
        let (answer, _) = until_closed(&mut stream, Duration::from_secs(10)).await;
        assert!(
            !answer.contains("200 OK"),
            "a trickled head was served: {answer}"
        );
    }
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let (addr, _, _stop) = start(limits(), None, Protocols::Http1).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_trickled_body_fails_at_the_body_deadline_with_408() {
    let (addr, _, _stop) = start(limits(), None, Protocols::Http1).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /body HTTP/1.1\r\nhost: x\r\ncontent-length: 16777216\r\n\r\n")
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        while writer.write_all(b"a").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let (answer, took) = until_closed(&mut reader, Duration::from_secs(10)).await;
    trickle.abort();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within"), "{answer}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn a_body_that_arrives_in_time_is_read_whole() {
    let (addr, _, _stop) = start(limits(), None, Protocols::Http1).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let body = vec![b'a'; 1 << 20];
    stream
        .write_all(
            format!(
                "POST /body HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    stream.write_all(&body).await.unwrap();
    let (answer, _) = until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("1048576"), "{answer}");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_at_the_write_deadline() {
    let (addr, mut flood, _stop) = start(limits(), None, Protocols::Http1).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /flood HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // Never read: the server's writes block once the socket buffers fill.
    let given_up = tokio::time::timeout(Duration::from_secs(10), flood.0.recv()).await;
    assert!(
        given_up.is_ok(),
        "the server kept writing to a client that reads nothing"
    );
    drop(stream);
}

#[tokio::test]
async fn past_the_connection_cap_a_client_gets_a_503_and_others_are_served_again_later() {
    let limits = Limits {
        max_connections: 2,
        header_read_timeout: Duration::from_secs(30),
        ..limits()
    };
    let (addr, _, _stop) = start(limits, None, Protocols::Http1).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // A served request proves the connection holds a slot.
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    let mut third = TcpStream::connect(addr).await.unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = until_closed(&mut third, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("limit of 2 connections"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );

    drop(held.pop());
    // The slot frees once the server sees the close.
    let served = async {
        loop {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let (answer, _) = until_closed(&mut stream, Duration::from_secs(5)).await;
            if answer.starts_with("HTTP/1.1 200") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("a connection freed by a client was never served again");
}

#[tokio::test]
async fn half_an_http2_preface_is_dropped_at_the_header_deadline() {
    let (addr, _, _stop) = start(limits(), None, Protocols::Auto).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let (_, took) = until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(took >= SHORT / 2, "{took:?}");
}

#[tokio::test]
async fn a_tls_handshake_that_never_comes_is_dropped_at_its_deadline() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let limits = Limits {
        header_read_timeout: Duration::from_secs(30),
        ..limits()
    };
    let (addr, _, _stop) = start(limits, Some(acceptor), Protocols::Auto).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The first bytes of a ClientHello record, and then nothing.
    stream
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    let (_, took) = until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(
        took >= SHORT / 2 && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn handlers_see_the_peer_address() {
    let (addr, _, _stop) = start(limits(), None, Protocols::Http1).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    stream
        .write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.ends_with(&local.to_string()), "{answer}");
}

/// Connects from `source` (any 127.x address is this machine).
async fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn one_address_holds_only_its_share_of_connections() {
    let limits = Limits {
        max_connections_per_client: 2,
        header_read_timeout: Duration::from_secs(30),
        ..limits()
    };
    let (addr, _, _stop) = start(limits, None, Protocols::Http1).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from([127, 0, 0, 1], addr).await;
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    let mut third = connect_from([127, 0, 0, 1], addr).await;
    third
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = until_closed(&mut third, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("--listen-max-connections-per-client"),
        "{answer}"
    );

    // Another address is served meanwhile.
    let mut other = connect_from([127, 0, 0, 2], addr).await;
    other
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = until_closed(&mut other, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_its_requests() {
    let (addr, _, _stop) = start(limits(), None, Protocols::Auto).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::builder()
        .uri(format!("http://{addr}/"))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    // The client answers pings and keeps the connection open; the server
    // closes it once nothing is asked for a header deadline.
    let closed = tokio::time::timeout(Duration::from_secs(10), connection).await;
    assert!(closed.is_ok(), "an idle HTTP/2 connection was held open");
}

#[tokio::test]
async fn a_request_head_too_large_is_refused_not_buffered() {
    let (addr, _, _stop) = start(limits(), None, Protocols::Http1).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // hyper alone would take up to ~400 KB of head per connection.
    let big = "a".repeat(200 << 10);
    let _ = stream
        .write_all(format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n").as_bytes())
        .await;
    let (answer, _) = until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}

/// A burst of connections the server has not accepted yet waits in the
/// kernel's accept queue, however large, up to what the kernel allows:
/// 1,500 at once (more than the usual backlog of 1024) all get through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_usual_backlog_waits_to_be_accepted() {
    skiff_serve::raise_open_files_limit();
    let listener = skiff_serve::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    // The backlog asked for, as the kernel took it: `ss` shows it as the
    // listening socket's Send-Q, and what waits to be accepted as Recv-Q.
    let queue = || {
        let out = std::process::Command::new("ss")
            .args(["-ltnH", &format!("sport = :{port}")])
            .output()
            .expect("ss runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let fields: Vec<u64> = text
            .split_whitespace()
            .skip(1)
            .take(2)
            .map(|f| f.parse().unwrap())
            .collect();
        (fields[0], fields[1])
    };
    let somaxconn: u64 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (_, backlog) = queue();
    assert_eq!(backlog, somaxconn.min(65_535));
    assert!(backlog >= 1_500, "this machine's somaxconn is {somaxconn}");

    const BURST: usize = 1_500;
    let mut clients = Vec::with_capacity(BURST);
    for _ in 0..BURST {
        clients.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    let (waiting, _) = queue();
    assert_eq!(
        waiting, BURST as u64,
        "connections lost before being accepted"
    );
    // And each is a live connection once accepted.
    for client in &mut clients {
        client.write_all(b"x").await.unwrap();
    }
    for _ in 0..BURST {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"x");
    }
}
