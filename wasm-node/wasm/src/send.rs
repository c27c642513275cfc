//! The host's HTTP/1.1 client for guests' outbound requests. It replaces
//! wasmtime-wasi-http's `default_send_request`, which resolves and connects
//! by itself, so that the address a request connects to is the one
//! checked: a name is resolved once, every address it resolved to passes
//! [`egress::check`] before any connection is attempted, and only those
//! addresses are connected to (no second lookup a rebinding name could
//! answer differently). Timeouts follow the guest's request options as
//! wasmtime's client does; https uses rustls with the webpki roots.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use skiff_api::outbound::AllowList;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

use super::egress;

/// What wasmtime's client waits when the guest's options say nothing.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Where a request's connection goes.
pub(crate) enum Route {
    /// A fixed address of the host's choosing (the node's ingress, for
    /// Services), not the guest's, so not subject to the egress check.
    Gateway(SocketAddr),
    /// The request's own host, resolved here and checked.
    Checked(Egress),
}

/// What decides which addresses a guest's request may connect to.
#[derive(Clone)]
pub(crate) struct Egress {
    pub allow: Arc<AllowList>,
    /// Addresses refused like private ones: the node's and its control
    /// plane's.
    pub denied: Arc<[IpAddr]>,
}

/// The response, and the connection's own future: it carries the body
/// after the head arrived, and reports how the connection ended.
pub(crate) type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

struct Timeouts {
    connect: Duration,
    first_byte: Duration,
    between_bytes: Duration,
}

impl Timeouts {
    fn of(options: Option<RequestOptions>) -> Self {
        let options = options.unwrap_or_default();
        Self {
            connect: options.connect_timeout.unwrap_or(DEFAULT_TIMEOUT),
            first_byte: options.first_byte_timeout.unwrap_or(DEFAULT_TIMEOUT),
            between_bytes: options.between_bytes_timeout.unwrap_or(DEFAULT_TIMEOUT),
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Sends a guest's request over a connection of its own.
pub(crate) async fn send(
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    route: Route,
) -> Result<Sent, Error> {
    let timeouts = Timeouts::of(options);
    let uri = request.uri().clone();
    let stream = tokio::time::timeout(timeouts.connect, connect(&uri, &route))
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
    // Only the path goes on the wire: the authority is in the Host header
    // (wasmtime sets it), and an absolute URI is for proxies.
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;

    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, WasiBody>(TokioIo::new(stream)).await?;
    let mut connection = Box::pin(connection);
    let mut connection_ended = false;
    let response = tokio::time::timeout(timeouts.first_byte, sender.send_request(request));
    tokio::pin!(response);
    // The connection does the I/O; it must be driven while the response
    // head is awaited, and keeps being driven (by the caller) for the body.
    let response = loop {
        tokio::select! {
            response = &mut response => break response,
            ended = &mut connection, if !connection_ended => {
                connection_ended = true;
                ended?;
            }
        }
    };
    let response = response.map_err(|_| Error::ConnectionReadTimeout)??;
    let response = response.map(|incoming| {
        TimedBody {
            incoming,
            between_bytes: timeouts.between_bytes,
            idle: Box::pin(tokio::time::sleep(timeouts.between_bytes)),
        }
        .boxed_unsync()
    });
    let io = async move {
        if !connection_ended {
            connection.await.map_err(|e| {
                if e.is_timeout() {
                    Error::HttpResponseTimeout
                } else {
                    Error::Hyper(e)
                }
            })?;
        }
        Ok(())
    };
    Ok((response, Box::new(io)))
}

/// Opens the connection (and TLS, for https) to where the request goes.
async fn connect(uri: &http::Uri, route: &Route) -> Result<Box<dyn Stream>, Error> {
    let https = uri.scheme() == Some(&Scheme::HTTPS);
    let host = uri
        .host()
        .ok_or(Error::HttpRequestUriInvalid)?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let addresses = match route {
        Route::Gateway(address) => vec![*address],
        Route::Checked(egress) => {
            let addresses = resolve(host, port).await?;
            let rules = egress.allow.permitting(uri);
            if let Err(refusal) =
                egress::check(&rules, addresses.iter().map(SocketAddr::ip), &egress.denied)
            {
                tracing::warn!(
                    %uri,
                    address = %refusal.address,
                    "outbound request denied: {refusal}, and no rule names it"
                );
                return Err(Error::HttpRequestDenied);
            }
            addresses
        }
    };
    let tcp = connect_any(&addresses).await?;
    if !https {
        return Ok(Box::new(tcp));
    }
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => rustls::pki_types::ServerName::from(ip),
        Err(_) => rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|_| Error::HttpRequestUriInvalid)?,
    };
    let tls = tokio_rustls::TlsConnector::from(tls_config())
        .connect(name, tcp)
        .await
        .map_err(Error::Tls)?;
    Ok(Box::new(tls))
}

/// Every address `host` stands for: itself if it is an IP literal,
/// loopback for `localhost` and names under it, else what the system
/// resolver answers, once.
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Error> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    // RFC 6761: `.localhost` names are loopback and never go to DNS, so
    // no resolver configuration can make them mean anything else.
    if is_localhost(host) {
        return Ok(vec![
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)),
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        ]);
    }
    let unresolved = |reason: String| {
        tracing::debug!("outbound request to {host}: {reason}");
        Error::DnsError {
            rcode: Some(reason),
            info_code: None,
        }
    };
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| unresolved(e.to_string()))?
        .collect();
    if addresses.is_empty() {
        return Err(unresolved("no addresses".into()));
    }
    Ok(addresses)
}

/// `localhost`, `app.localhost.`, any case.
fn is_localhost(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// Connects to the first of `addresses` that accepts, in order.
async fn connect_any(addresses: &[SocketAddr]) -> Result<TcpStream, Error> {
    let mut last = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(Error::Connect(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            "no address to connect to",
        )
    })))
}

/// One TLS client configuration for the process: loading the roots each
/// time would cost every https request.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            // The provider is named rather than taken from the process
            // default, which is ambiguous when more than one is linked.
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// A response body that fails when the upstream goes quiet for longer than
/// the guest's between-bytes timeout.
struct TimedBody {
    incoming: hyper::body::Incoming,
    between_bytes: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.idle.set(tokio::time::sleep(this.between_bytes));
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) if e.is_timeout() => {
                Poll::Ready(Some(Err(Error::HttpResponseTimeout)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::Hyper(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(this.idle.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback server that counts the connections it accepts and
    /// answers `ok`, except on `/silent`, where it never answers.
    async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buffer = [0; 1024];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buffer[..n]),
                        }
                    }
                    if head.starts_with(b"GET /silent ") {
                        std::future::pending::<()>().await;
                    }
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
        (address, accepted)
    }

    fn get(url: &str) -> http::Request<WasiBody> {
        let body = http_body_util::Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        http::Request::get(url).body(body).unwrap()
    }

    fn checked(rules: &[&str]) -> Route {
        Route::Checked(Egress {
            allow: Arc::new(AllowList::parse(rules).unwrap()),
            denied: Arc::default(),
        })
    }

    async fn body_of(sent: Sent) -> Bytes {
        let (response, io) = sent;
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Pin::from(io).await.unwrap();
        body
    }

    #[tokio::test]
    async fn only_a_rule_naming_the_address_connects_to_loopback() {
        let (address, accepted) = upstream().await;
        let url = format!("http://{address}/");
        for rules in [&["*"][..], &["localhost:*"], &["*.localhost"]] {
            let refused = send(get(&url), None, checked(rules)).await;
            assert!(
                matches!(refused, Err(Error::HttpRequestDenied)),
                "{rules:?}"
            );
        }
        let refused = send(
            get(&format!("http://x.localhost:{}/", address.port())),
            None,
            checked(&["*"]),
        )
        .await;
        assert!(matches!(refused, Err(Error::HttpRequestDenied)));

        let sent = send(get(&url), None, checked(&[&address.to_string()])).await;
        assert_eq!(body_of(sent.unwrap()).await, "ok");
        // Every connection the server saw is the one allowed request's.
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_gateway_is_reached_unchecked_and_timeouts_hold() {
        let (address, accepted) = upstream().await;
        let sent = send(
            get(&format!("http://{address}/")),
            None,
            Route::Gateway(address),
        )
        .await;
        assert_eq!(body_of(sent.unwrap()).await, "ok");

        let options = RequestOptions {
            first_byte_timeout: Some(Duration::from_millis(50)),
            ..RequestOptions::default()
        };
        let silent = send(
            get(&format!("http://{address}/silent")),
            Some(options),
            Route::Gateway(address),
        )
        .await;
        assert!(matches!(silent, Err(Error::ConnectionReadTimeout)));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn localhost_names_resolve_to_loopback_without_the_system_resolver() {
        for host in ["localhost", "LocalHost", "x.localhost", "a.b.localhost."] {
            let addresses = resolve(host, 8080).await.unwrap();
            assert_eq!(
                addresses,
                [
                    "127.0.0.1:8080".parse::<SocketAddr>().unwrap(),
                    "[::1]:8080".parse().unwrap()
                ],
                "{host}"
            );
        }
        assert!(!is_localhost("localhost.example.com"));
        assert!(!is_localhost("notlocalhost"));
        let literal = resolve("169.254.169.254", 80).await.unwrap();
        assert_eq!(literal, ["169.254.169.254:80".parse().unwrap()]);
    }
}
