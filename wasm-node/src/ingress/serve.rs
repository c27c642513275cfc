//! Serving one component over HTTP (`wasmctl run`): the listener is
//! `skiff_serve`'s, with its deadlines and connection cap.

use tokio::net::TcpListener;

use skiff_wasm::HttpApp;

/// Serves `app` on `listener` until `shutdown` completes; then stops
/// accepting and lets open connections finish, within `options.grace`.
pub async fn serve(
    app: HttpApp,
    listener: TcpListener,
    options: skiff_serve::Options,
    shutdown: impl Future<Output = ()>,
) {
    skiff_serve::serve(
        listener,
        options,
        move |request| {
            let app = app.clone();
            async move { app.handle(request).await }
        },
        shutdown,
    )
    .await
}
