//! Fetches `?url=...` and relays the answer, to show the outbound allow-list:
//! the host refuses every destination not granted with `--allow-outbound`.
//!
//! `wasmctl run examples/fetch-http --allow-outbound example.com:443`, then
//! `curl 'localhost:8080/?url=https://example.com/'` works, while any other
//! URL gets a 403 that says the request was denied.

use skiff_sdk::{Request, Response, outbound};

fn handle(request: Request) -> Response {
    let Some(url) = request.query_param("url") else {
        return Response::text(400, "usage: /?url=http://host/path\n");
    };
    match outbound::get(&url) {
        Ok(upstream) => {
            let mut response = Response::new(upstream.status()).with_body(upstream.body().to_vec());
            if let Some(content_type) = upstream.header("content-type") {
                response = response.with_header("content-type", content_type);
            }
            response
        }
        Err(e) if e.is_denied() => Response::text(403, format!("{e}: {url}\n")),
        Err(e) => Response::text(502, format!("{e}: {url}\n")),
    }
}

skiff_sdk::http_handler!(handle);
