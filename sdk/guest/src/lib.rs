//! Write a `wasi:http` handler in a few lines.
//!
//! ```text
//! use skiff_sdk::{Request, Response};
//!
//! fn handle(request: Request) -> Response {
//!     Response::text(200, format!("hello from {}\n", request.path()))
//! }
//!
//! skiff_sdk::http_handler!(handle);
//! ```
//!
//! (`examples/hello-http` is this, complete.) Build with
//! `cargo build --target wasm32-wasip2 --release` as a `cdylib`;
//! the result is a standard `wasi:http/proxy` component that Skiff, or any
//! other `wasi:http` host, can serve. The SDK is a thin layer over the
//! standard interfaces (re-exported as [`wasip2`]): it buffers bodies so a
//! handler can be a plain function, and it invents no interfaces of its own.
//! Handlers that need streaming use [`wasip2`] directly.

pub mod outbound;
mod request;
mod response;

pub use request::Request;
pub use response::Response;
pub use wasip2;

/// The first value of header `name` (case-insensitive) that is text.
fn first_header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// Exports `handler`, a `fn(Request) -> Response`, as the component's
/// `wasi:http/incoming-handler`.
#[macro_export]
macro_rules! http_handler {
    ($handler:path) => {
        struct __SkiffHttpHandler;

        impl $crate::wasip2::exports::http::incoming_handler::Guest for __SkiffHttpHandler {
            fn handle(
                request: $crate::wasip2::http::types::IncomingRequest,
                response_out: $crate::wasip2::http::types::ResponseOutparam,
            ) {
                $crate::__private::serve(request, response_out, $handler)
            }
        }

        $crate::wasip2::http::proxy::export!(__SkiffHttpHandler);
    };
}

#[doc(hidden)]
pub mod __private {
    use wasip2::http::types::{IncomingRequest, ResponseOutparam};

    use crate::{Request, Response};

    /// Reads the request, runs the handler and writes its response.
    pub fn serve(
        incoming: IncomingRequest,
        response_out: ResponseOutparam,
        handler: impl FnOnce(Request) -> Response,
    ) {
        match Request::read(incoming) {
            Ok(request) => handler(request).send(response_out),
            Err(reason) => {
                Response::text(400, format!("cannot read request: {reason}\n")).send(response_out)
            }
        }
    }
}
