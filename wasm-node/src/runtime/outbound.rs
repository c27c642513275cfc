//! Outbound HTTP for guests: denied unless the destination is on the
//! component's allow-list. Raw sockets stay closed altogether (see
//! `sandbox`), so `wasi:http/outgoing-handler` is the only way out and every
//! request through it passes [`AllowList::permits`].

use std::sync::Arc;

use skiff_api::outbound::AllowList;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// `wasi:http` hooks that enforce an [`AllowList`] before any byte leaves.
pub(crate) struct OutboundHooks {
    allow: Arc<AllowList>,
}

impl OutboundHooks {
    pub(crate) fn new(allow: Arc<AllowList>) -> Self {
        Self { allow }
    }
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        if !self.allow.permits(request.uri()) {
            tracing::warn!(
                uri = %request.uri(),
                "outbound request denied: destination is not on the allow-list"
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            let io: Box<dyn Future<Output = Result<(), HttpError>> + Send> = Box::new(io);
            Ok((response.map(BodyExt::boxed_unsync), io))
        })
    }
}
