//! Serving `wasi:http/proxy` components: a fresh instance per request, under
//! the component's limits, failing only that request when the guest fails.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use wasmtime::component::InstancePre;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::error::{GuestFailure, log_detail};
use super::host::{Host, InstanceRole, new_store};
use super::limits::Limits;
use super::sandbox::Sandbox;

/// The body of every response the runtime produces.
pub type HttpBody = HyperOutgoingBody;

/// An HTTP component ready to serve. Cloning is cheap and shares the
/// component, its limits and its concurrency budget.
#[derive(Clone)]
pub struct HttpApp {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    pre: ProxyPre<Host>,
    limits: Limits,
    sandbox: Sandbox,
    permits: Arc<Semaphore>,
}

type GuestResponse = Result<http::Response<HyperOutgoingBody>, ErrorCode>;

impl HttpApp {
    pub(crate) fn new(
        name: String,
        pre: InstancePre<Host>,
        limits: Limits,
        sandbox: Sandbox,
    ) -> wasmtime::Result<Self> {
        let pre = ProxyPre::new(pre)?;
        let permits = Arc::new(Semaphore::new(limits.max_instances as usize));
        Ok(Self {
            inner: Arc::new(Inner {
                name,
                pre,
                limits,
                sandbox,
                permits,
            }),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Instantiates the component once without calling it, to surface
    /// start-up failures (initial memory above the limit, a trapping start
    /// function, a pool too small) before any request arrives.
    pub(crate) async fn probe(&self) -> Result<(), GuestFailure> {
        let inner = &self.inner;
        let classify = |e: wasmtime::Error| {
            GuestFailure::classify(&e, inner.limits.fuel, inner.limits.timeout)
        };
        let mut store = new_store(
            inner.pre.engine(),
            &inner.sandbox,
            &inner.limits,
            &inner.name,
            InstanceRole::Request,
        )
        .map_err(classify)?;
        inner
            .pre
            .instantiate_async(&mut store)
            .await
            .map(drop)
            .map_err(classify)
    }

    /// Handles one request in a fresh instance. Never fails: a guest failure
    /// becomes a 500 or 503 response with a one-line reason, and the details
    /// (trap message, guest backtrace) go to the log.
    pub async fn handle<B>(&self, mut request: http::Request<B>) -> http::Response<HttpBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let inner = &self.inner;
        let permit =
            match tokio::time::timeout(inner.limits.timeout, inner.permits.clone().acquire_owned())
                .await
            {
                Ok(Ok(permit)) => permit,
                _ => return failure_response(&GuestFailure::Busy(inner.limits.max_instances)),
            };

        // HTTP/1.0 clients may send no Host; wasi:http requires an authority.
        if request.uri().authority().is_none()
            && !request.headers().contains_key(http::header::HOST)
        {
            request
                .headers_mut()
                .insert(http::header::HOST, HeaderValue::from_static("localhost"));
        }
        let method = request.method().clone();
        let path = request.uri().path().to_owned();

        let (sender, receiver) = oneshot::channel();
        let task = match self.start(request, sender, permit) {
            Ok(task) => task,
            Err(failure) => {
                tracing::error!("{}: {method} {path} failed: {failure}", inner.name);
                return failure_response(&failure);
            }
        };
        match receiver.await {
            Ok(Ok(response)) => response,
            Ok(Err(code)) => {
                tracing::warn!(
                    "{}: {method} {path} failed: guest set error {code:?}",
                    inner.name
                );
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
        permit: OwnedSemaphorePermit,
    ) -> Result<tokio::task::JoinHandle<Result<(), GuestFailure>>, GuestFailure>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let inner = self.inner.clone();
        let classify = |e: &wasmtime::Error| {
            GuestFailure::classify(e, inner.limits.fuel, inner.limits.timeout)
        };
        let mut store = new_store(
            inner.pre.engine(),
            &inner.sandbox,
            &inner.limits,
            &inner.name,
            InstanceRole::Request,
        )
        .map_err(|e| classify(&e))?;
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .map_err(|e| classify(&e))?;
        let response_out = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(|e| classify(&e))?;

        Ok(tokio::spawn(async move {
            let _permit = permit;
            let run = async {
                let proxy = inner.pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, request, response_out)
                    .await
            };
            // The epoch deadline stops guest code that runs too long; this
            // also stops a guest that waits too long in the host (a slow
            // outbound request, a sleep).
            let outcome = match tokio::time::timeout(inner.limits.timeout, run).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(error)) => (
                    GuestFailure::classify(&error, inner.limits.fuel, inner.limits.timeout),
                    log_detail(&error),
                ),
                Err(_) => {
                    let failure = GuestFailure::Timeout(inner.limits.timeout);
                    let detail = failure.to_string();
                    (failure, detail)
                }
            };
            let (failure, detail) = outcome;
            tracing::warn!(
                "{}: {method} {path} failed: {failure}\n{detail}",
                inner.name
            );
            Err(failure)
        }))
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

fn text_response(status: StatusCode, body: String) -> http::Response<HttpBody> {
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
