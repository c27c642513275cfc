//! The accept loop every Skiff server uses (a node's ingress, the API
//! server, `wasmctl run`), with the edges a server facing strangers needs:
//!
//! - a **connection cap**, overall and per client address: past it a
//!   connection is answered with a 503 and closed, so a crowd of idle
//!   sockets cannot take the file descriptors the server needs for its own
//!   traffic, nor one host the whole cap;
//! - a **header-read deadline**: a request head (and, on a kept-alive
//!   connection, the wait for the next one) must arrive within it, so half a
//!   request line does not hold a connection forever; an HTTP/2 connection
//!   with no request for as long is closed too (its pings prove nothing);
//! - a **TLS handshake deadline**;
//! - a **request-body deadline**: the whole body must arrive within it, so a
//!   body trickled a byte a second ends;
//! - a **write deadline**: a response write that makes no progress for that
//!   long (a client that stopped reading) ends the connection.
//!
//! Bodies are not collected here: a handler gets the request with a
//! [`Body`] that streams and enforces the body deadline.

mod body;
mod clients;
mod io;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use skiff_api::quantity::parse_duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

pub use body::{Body, BodyError};

/// Pause after a failed `accept` (e.g. out of file descriptors) so a
/// persistent failure does not spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Connections past the cap that are still answered with a 503; beyond
/// these, a connection is closed at once (a flood must not make the
/// refusals themselves a resource to exhaust).
const MAX_REFUSING: usize = 256;

/// The listen backlog asked for; the kernel takes at most
/// `net.core.somaxconn` of it (4096 on current Linux).
const BACKLOG: u32 = 65_535;

/// A listener on `addr` with the deepest accept queue the kernel allows,
/// as the listeners of every server here should have: a burst of new
/// connections (a thousand callers of a function at zero at once) beyond
/// the usual 1024 overflows it, and the kernel then drops handshakes or
/// resets connections before this process ever sees them.
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's and tokio's own `bind`: a restarted server may take its
    // port back while old connections linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// How long a refused connection gets to send its request (so the 503 is
/// read as an answer, not lost to a reset) and to take the answer.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(1);

/// Limits on a listener's connections. The defaults suit a server on the
/// open network; every Skiff server takes them as `--listen-*` flags.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most connections served at once; past it a connection gets a 503
    /// and is closed.
    #[arg(
        id = "listen_max_connections",
        long = "listen-max-connections",
        default_value_t = 16_384
    )]
    pub max_connections: usize,
    /// Most connections from one client address (an IPv6 /64 counts as one
    /// address) served at once; past it that client's next connection
    /// gets a 503. Raise it for a listener behind a proxy, where every
    /// client shares the proxy's address.
    #[arg(
        id = "listen_max_connections_per_client",
        long = "listen-max-connections-per-client",
        default_value_t = 1024
    )]
    pub max_connections_per_client: usize,
    /// Deadline for a request head to arrive, from when the server is ready
    /// for it: bounds both a half-sent request and an idle kept-alive
    /// connection.
    #[arg(id = "listen_header_timeout", long = "listen-header-timeout", default_value = "30s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// Deadline for a whole request body, from the request head.
    #[arg(id = "listen_body_timeout", long = "listen-body-timeout", default_value = "60s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// How long a response write may make no progress (a client that
    /// stopped reading) before the connection is closed.
    #[arg(id = "listen_write_timeout", long = "listen-write-timeout", default_value = "30s", value_parser = parse_duration)]
    pub write_timeout: Duration,
    /// Deadline for a TLS handshake, from the accept.
    #[arg(id = "listen_tls_handshake_timeout", long = "listen-tls-handshake-timeout", default_value = "10s", value_parser = parse_duration)]
    pub tls_handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 16_384,
            max_connections_per_client: 1024,
            header_read_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Which HTTP versions a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1 only (an ingress: what guests and proxies speak).
    Http1,
    /// HTTP/1.1 and HTTP/2, chosen by the client (the API server).
    Auto,
}

/// How to serve a listener.
#[derive(Clone)]
pub struct Options {
    pub limits: Limits,
    pub protocols: Protocols,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// How long open connections get to finish their current request once
    /// shutdown was asked for.
    pub grace: Duration,
}

impl Options {
    /// Plain HTTP/1.1 with default limits.
    pub fn http1(grace: Duration) -> Options {
        Options {
            limits: Limits::default(),
            protocols: Protocols::Http1,
            tls: None,
            grace,
        }
    }
}

/// The peer of a connection, as a request extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves `handler` on `listener` until `shutdown` completes; then stops
/// accepting, lets open connections finish their current request, and
/// returns once they have or the grace has passed.
pub async fn serve<H, F, B>(
    listener: TcpListener,
    options: Options,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(http::Request<Body>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = http::Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    warn_if_too_few_files(options.limits.max_connections);
    let options = Arc::new(options);
    let permits = Arc::new(Semaphore::new(options.limits.max_connections));
    let clients = Arc::new(clients::Clients::new(
        options.limits.max_connections_per_client,
    ));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Small writes (a guest's chunks, a watch's events) must not wait
        // for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let admitted = match clients.admit(peer.ip()) {
            Some(slot) => permits
                .clone()
                .try_acquire_owned()
                .map(|permit| (permit, slot))
                .map_err(|_| Refusal::Server),
            None => Err(Refusal::Client),
        };
        let (permit, slot) = match admitted {
            Ok(admitted) => admitted,
            Err(why) => {
                if let Ok(refusal) = refusing.clone().try_acquire_owned() {
                    let options = options.clone();
                    connections.spawn(async move {
                        refuse(stream, &options, why).await;
                        drop(refusal);
                    });
                }
                continue;
            }
        };
        let (handler, options, stopping) = (handler.clone(), options.clone(), stopping.clone());
        connections.spawn(async move {
            let peer = Peer(peer);
            match options.tls.clone() {
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(
                        options.limits.tls_handshake_timeout,
                        acceptor.accept(stream),
                    );
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            connection(stream, peer, &options, handler, stopping).await;
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake with {} failed: {e}", peer.0),
                        Err(_) => tracing::debug!(
                            "TLS handshake with {} took longer than {:?}",
                            peer.0,
                            options.limits.tls_handshake_timeout
                        ),
                    }
                }
                None => connection(stream, peer, &options, handler, stopping).await,
            }
            drop((permit, slot));
        });
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }

    let _ = stop.send(true);
    let drained = tokio::time::timeout(options.grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "{} connection(s) still open after {:?}; closing them",
            connections.len(),
            options.grace
        );
        connections.shutdown().await;
    }
}

/// Serves one accepted (and, with TLS, handshaken) connection.
async fn connection<I, H, F, B>(
    io: I,
    peer: Peer,
    options: &Options,
    handler: H,
    mut stopping: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(http::Request<Body>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = http::Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let limits = &options.limits;
    let io = TokioIo::new(io::WriteDeadline::new(io, limits.write_timeout));
    let activity = Arc::new(Activity::default());
    let body_timeout = limits.body_timeout;
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            let busy = activity.begin();
            request.extensions_mut().insert(peer);
            let response = handler(request.map(|body| Body::new(body, body_timeout)));
            async move {
                let response = response.await;
                drop(busy);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // Bounds the buffer a request head may fill (past it, 431):
        // hyper's default lets each connection hold ~400 KB.
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    if options.protocols == Protocols::Http1 {
        builder = builder.http1_only();
    }
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        asked = activity.idle(limits.header_read_timeout) => {
            if !asked {
                // Not even a first request (an HTTP/2 preface sent by
                // halves, or nothing): dropped.
                tracing::debug!("{} sent no request within {:?}", peer.0, limits.header_read_timeout);
                return;
            }
            // Idle, whatever the protocol (hyper times out idle HTTP/1
            // itself, not HTTP/2, whose pings any client answers): no new
            // request is taken; a response still streaming finishes.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        _ = stopping.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection from {} ended: {e}", peer.0);
    }
}

/// The most a request head may take (hyper's buffer for it).
const MAX_HEAD_BYTES: usize = 64 << 10;

/// A connection's requests: how many began, how many are being handled.
#[derive(Default)]
struct Activity {
    began: AtomicU64,
    handling: AtomicUsize,
}

/// A request being handled, until its response head is ready.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.began.fetch_add(1, Ordering::Relaxed);
        self.handling.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Completes once a whole `period` passed with no request begun and
    /// none being handled; says whether any request ever began.
    async fn idle(&self, period: Duration) -> bool {
        let mut seen = 0;
        loop {
            tokio::time::sleep(period).await;
            let began = self.began.load(Ordering::Relaxed);
            if began == seen && self.handling.load(Ordering::Relaxed) == 0 {
                return began > 0;
            }
            seen = began;
        }
    }
}

/// Which cap a refused connection met.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    Server,
    Client,
}

/// Answers a connection past the cap with a 503 and closes it: first takes
/// what the client sends (briefly), so the answer is not lost to a reset.
async fn refuse(stream: TcpStream, options: &Options, why: Refusal) {
    let message = match why {
        Refusal::Server => format!(
            "this server is serving its limit of {} connections (--listen-max-connections); try again shortly\n",
            options.limits.max_connections
        ),
        Refusal::Client => format!(
            "this server is serving its limit of {} connections from your address (--listen-max-connections-per-client); try again shortly\n",
            options.limits.max_connections_per_client
        ),
    };
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{message}",
        message.len()
    );
    let _ = tokio::time::timeout(REFUSAL_DEADLINE, async {
        match &options.tls {
            Some(acceptor) => {
                if let Ok(stream) = acceptor.accept(stream).await {
                    answer(stream, response.as_bytes()).await;
                }
            }
            None => answer(stream, response.as_bytes()).await,
        }
    })
    .await;
}

async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    response: &[u8],
) {
    let mut request = [0u8; 4096];
    let _ = tokio::time::timeout(REFUSAL_DEADLINE / 2, stream.read(&mut request)).await;
    let _ = stream.write_all(response).await;
    let _ = stream.shutdown().await;
}

/// Raises this process's limit on open files to the hard limit, as servers
/// holding many connections do, and says so when even that is below what
/// `max_connections` needs.
pub fn raise_open_files_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!("raising the open files limit failed: {e}");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

fn warn_if_too_few_files(max_connections: usize) {
    let files = raise_open_files_limit();
    // Room for the server's own files and outbound connections.
    let needed = max_connections as u64 + 1024;
    if files < needed {
        tracing::warn!(
            "this process may open {files} files, fewer than the {needed} that \
             {max_connections} connections need; accepts will fail before the cap \
             (raise `ulimit -n` or lower --listen-max-connections)"
        );
    }
}
