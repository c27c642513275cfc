//! The smallest useful HTTP component: greets whoever calls it.

use skiff_sdk::{Request, Response};

fn handle(request: Request) -> Response {
    let name = request
        .query_param("name")
        .unwrap_or_else(|| "world".into());
    Response::text(
        200,
        format!("Hello, {name}! ({} {})\n", request.method(), request.path()),
    )
}

skiff_sdk::http_handler!(handle);
