//! Serving `wasi:http/proxy` components: a fresh instance per request, under
//! the component's limits, failing only that request when the guest fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use tokio::sync::{Semaphore, oneshot};
use wasmtime::component::InstancePre;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::error::{GuestFailure, log_detail};
use super::host::{Admitted, Host, InstanceRole, InstanceSpec};
use super::limits::Limits;
use super::trace::TraceContext;

/// The body of every response the engine produces; the engine's own type,
/// so that callers never name wasmtime's.
pub type HttpBody = UnsyncBoxBody<Bytes, BodyError>;

/// Why a body could not be read or sent to its end.
#[derive(Debug)]
pub struct BodyError(Box<dyn std::error::Error + Send + Sync>);

impl BodyError {
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// A request body's error as wasi:http takes it: hyper's errors keep their
/// kind, anything else is an internal error with its message.
fn incoming_error(error: Box<dyn std::error::Error + Send + Sync>) -> wasmtime_wasi_http::Error {
    match error.downcast::<hyper::Error>() {
        Ok(hyper) => wasmtime_wasi_http::Error::Hyper(*hyper),
        Err(other) => wasmtime_wasi_http::Error::InternalError(Some(other.to_string())),
    }
}

/// An HTTP component ready to serve. Cloning is cheap and shares the
/// component, its limits and its concurrency budget.
#[derive(Clone)]
pub struct HttpApp {
    inner: Arc<Inner>,
}

struct Inner {
    spec: InstanceSpec,
    pre: ProxyPre<Host>,
    permits: Arc<Semaphore>,
    counts: Counts,
}

/// What an [`HttpApp`]'s instances came to since it was prepared, for
/// the node's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstanceStats {
    /// Instances started for requests.
    pub starts: u64,
    pub traps: u64,
    pub timeouts: u64,
    pub out_of_fuel: u64,
    /// Instances that went past their memory limit.
    pub memory_limit: u64,
}

#[derive(Default)]
struct Counts {
    starts: AtomicU64,
    traps: AtomicU64,
    timeouts: AtomicU64,
    out_of_fuel: AtomicU64,
    memory_limit: AtomicU64,
}

impl Counts {
    fn failed(&self, failure: &GuestFailure) {
        let counter = match failure {
            GuestFailure::Trap(_) => &self.traps,
            GuestFailure::Timeout(_) => &self.timeouts,
            GuestFailure::OutOfFuel(_) => &self.out_of_fuel,
            GuestFailure::MemoryLimit(_) => &self.memory_limit,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self) -> InstanceStats {
        InstanceStats {
            starts: self.starts.load(Ordering::Relaxed),
            traps: self.traps.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            out_of_fuel: self.out_of_fuel.load(Ordering::Relaxed),
            memory_limit: self.memory_limit.load(Ordering::Relaxed),
        }
    }
}

/// The header naming a request, for the guest and for its output lines.
pub const REQUEST_ID: &str = "x-request-id";

type GuestResponse = Result<http::Response<HyperOutgoingBody>, ErrorCode>;

impl HttpApp {
    pub(crate) fn new(spec: InstanceSpec, pre: InstancePre<Host>) -> wasmtime::Result<Self> {
        let pre = ProxyPre::new(pre)?;
        let permits = Arc::new(Semaphore::new(spec.limits.max_instances as usize));
        Ok(Self {
            inner: Arc::new(Inner {
                spec,
                pre,
                permits,
                counts: Counts::default(),
            }),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.spec.limits
    }

    /// Ends every instance still running, now, and refuses further
    /// requests with a 503: the pod stopped and its grace is over. A guest
    /// computing traps at its next epoch tick; one waiting in the host is
    /// dropped where it waits. Either way its outbound requests end with it.
    pub fn stop_instances(&self) {
        self.inner.spec.halt.halt();
    }

    /// What the instances of this app came to so far.
    pub fn stats(&self) -> InstanceStats {
        self.inner.counts.read()
    }

    /// What this app's instances use: CPU time, memory now.
    pub fn usage(&self) -> Arc<crate::usage::Usage> {
        self.inner.spec.usage.clone()
    }

    /// Requests being handled right now.
    pub fn in_flight(&self) -> usize {
        self.inner.spec.limits.max_instances as usize - self.inner.permits.available_permits()
    }

    /// Instantiates the component once without calling it, to surface
    /// start-up failures (initial memory above the limit, a trapping start
    /// function, a pool too small) before any request arrives.
    pub(crate) async fn probe(&self) -> Result<(), GuestFailure> {
        let Inner { spec, pre, .. } = &*self.inner;
        let mut store = spec
            .new_store(pre.engine(), InstanceRole::Request(None, None))
            .map_err(|e| spec.failure(&e))?;
        pre.instantiate_async(&mut store)
            .await
            .map(drop)
            .map_err(|e| spec.failure(&e))
    }

    /// Handles one request in a fresh instance. Never fails: a guest failure
    /// becomes a 500 or 503 response with a one-line reason, and the details
    /// (trap message, guest backtrace) go to the log.
    pub async fn handle<B>(&self, mut request: http::Request<B>) -> http::Response<HttpBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let spec = &self.inner.spec;
        // A request that waits for an instance when its pod stops is not
        // started: it would run past the stop.
        let admitted = tokio::select! {
            biased;
            () = spec.halt.halted() => Err(GuestFailure::Stopped),
            admitted = spec.admit(&self.inner.permits) => admitted,
        };
        let permit = match admitted {
            Ok(permit) => permit,
            Err(busy) => return failure_response(&busy),
        };

        // HTTP/1.0 clients may send no Host; wasi:http requires an authority.
        if request.uri().authority().is_none()
            && !request.headers().contains_key(http::header::HOST)
        {
            request
                .headers_mut()
                .insert(http::header::HOST, HeaderValue::from_static("localhost"));
        }
        let what = RequestName::of(&request);
        let name = &self.inner.spec.name;

        let (sender, receiver) = oneshot::channel();
        let task = match self.start(request, sender, permit, what.clone()) {
            Ok(task) => task,
            Err(failure) => {
                self.inner.counts.failed(&failure);
                tracing::error!("{name}: {what} failed: {failure}");
                return failure_response(&failure);
            }
        };
        match receiver.await {
            Ok(Ok(response)) => response.map(|body| body.map_err(BodyError::new).boxed_unsync()),
            Ok(Err(code)) => {
                tracing::warn!("{name}: {what} failed: guest set error {code:?}");
                text_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("guest failed the request: {code:?}\n"),
                )
            }
            // The guest dropped the response without setting it: it failed
            // (the task has logged why) or returned without answering.
            Err(_) => match task.await {
                Ok(Err(failure)) => failure_response(&failure),
                Ok(Ok(())) => failure_response(&GuestFailure::NoResponse),
                Err(join_error) => failure_response(&GuestFailure::Other(join_error.to_string())),
            },
        }
    }

    /// Spawns the instance that handles `request`. The task owns the store
    /// and the concurrency permit until the guest returns, which may be after
    /// the response head was sent while the body still streams.
    fn start<B>(
        &self,
        request: http::Request<B>,
        sender: oneshot::Sender<GuestResponse>,
        permit: Admitted,
        what: RequestName,
    ) -> Result<tokio::task::JoinHandle<Result<(), GuestFailure>>, GuestFailure>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let request = request.map(|body| body.map_err(|e| incoming_error(e.into())));
        let inner = self.inner.clone();
        let spec = &inner.spec;
        // The node's ingress gives every request an id (the client's, when
        // well-formed) and a trace; the guest's output lines carry the id,
        // its outbound requests the trace.
        let id = request.headers().get(REQUEST_ID);
        let trace = TraceContext::of(request.headers());
        let mut store = spec
            .new_store(inner.pre.engine(), InstanceRole::Request(id, trace))
            .map_err(|e| spec.failure(&e))?;
        let mut http = store.data_mut().http();
        let request = http
            .new_incoming_request(Scheme::Http, request)
            .map_err(|e| spec.failure(&e))?;
        let response_out = http
            .new_response_outparam(sender)
            .map_err(|e| spec.failure(&e))?;

        inner.counts.starts.fetch_add(1, Ordering::Relaxed);
        Ok(tokio::spawn(async move {
            let _permit = permit;
            let spec = &inner.spec;
            let run = async {
                let proxy = inner.pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, request, response_out)
                    .await
            };
            // Its time in polls is the pod's CPU time (see `usage`).
            let run = spec.usage.timed(run);
            // The epoch deadline stops guest code that runs too long; this
            // also stops a guest that waits too long in the host (a slow
            // outbound request, a sleep).
            let ran = tokio::select! {
                ran = tokio::time::timeout(spec.limits.timeout, run) => Some(ran),
                () = spec.halt.halted() => None,
            };
            let stopped = || (GuestFailure::Stopped, GuestFailure::Stopped.to_string());
            let (failure, detail) = match ran {
                Some(Ok(Ok(()))) => return Ok(()),
                None => stopped(),
                // Interrupted at a tick because the pod stopped, not
                // because its time was up.
                Some(Ok(Err(_))) if spec.halt.is_halted() => stopped(),
                Some(Ok(Err(error))) => (spec.failure(&error), log_detail(&error)),
                Some(Err(_)) => {
                    let failure = GuestFailure::Timeout(spec.limits.timeout);
                    let detail = failure.to_string();
                    (failure, detail)
                }
            };
            inner.counts.failed(&failure);
            tracing::warn!("{}: {what} failed: {failure}\n{detail}", spec.name);
            Err(failure)
        }))
    }
}

/// `METHOD /path` of a request, for log lines; cloning it costs no
/// allocation on the request path.
#[derive(Clone)]
struct RequestName {
    method: http::Method,
    uri: http::Uri,
}

impl RequestName {
    fn of<B>(request: &http::Request<B>) -> Self {
        Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
        }
    }
}

impl std::fmt::Display for RequestName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.uri.path())
    }
}

fn failure_response(failure: &GuestFailure) -> http::Response<HttpBody> {
    let mut response = text_response(failure.http_status(), format!("{failure}\n"));
    if failure.http_status() == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// A plain-text response of the runtime's body type.
pub fn text_response(status: StatusCode, body: String) -> http::Response<HttpBody> {
    let mut response = http::Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
