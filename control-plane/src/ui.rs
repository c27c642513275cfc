//! The dashboard at `/ui`: a page and its script and styles, embedded in
//! the binary at build time, so a control plane serves it with nothing
//! else installed and no asset from elsewhere.
//!
//! The assets hold no cluster data: everything shown is read by the page
//! from the API with the token its user signs in with, under that token's
//! roles. So they answer without a token, as a sign-in page must; what
//! they must not do is let anything run in the page but themselves, which
//! the headers below see to: objects carry text of tenants' choosing
//! (annotations, Event messages, pod logs), and a script slipped into a
//! cluster admin's page would act with the admin's token.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// Only the page's own script and styles run or apply; it talks to this
/// origin alone; no plugin, frame, form target or `<base>` of anyone
/// else's. No `unsafe-inline`: the page builds its DOM from text nodes,
/// and this is the second wall if a bug ever let markup through. Trusted
/// Types make any string-to-markup sink (`innerHTML` and the like) throw
/// rather than parse.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
     require-trusted-types-for 'script'";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: [Asset; 3] = [
    Asset {
        path: "/ui/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../ui/index.html"),
    },
    Asset {
        path: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../ui/app.js"),
    },
    Asset {
        path: "/ui/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../ui/app.css"),
    },
];

/// The dashboard's routes. `/ui` without its slash is sent to `/ui/`, so
/// that the page's relative state (its `#` routes) has one address.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new().route(
        "/ui",
        get(|| async {
            (
                StatusCode::PERMANENT_REDIRECT,
                [(header::LOCATION, "/ui/")],
                secured(),
            )
        }),
    );
    for asset in &ASSETS {
        // The tag names this build's bytes: a browser revalidates (the
        // assets change with the binary) and gets 304 while they are the
        // same.
        let etag = format!("\"{}\"", hex_prefix(&Sha256::digest(asset.body.as_bytes())));
        let (content_type, body) = (asset.content_type, asset.body);
        router = router.route(
            asset.path,
            get(
                move |headers: HeaderMap| async move { serve(&headers, &etag, content_type, body) },
            ),
        );
    }
    router
}

fn serve(
    headers: &HeaderMap,
    etag: &str,
    content_type: &'static str,
    body: &'static str,
) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    let etag = HeaderValue::from_str(etag).expect("a hex tag is a header value");
    if fresh {
        return (StatusCode::NOT_MODIFIED, secured(), [(header::ETAG, etag)]).into_response();
    }
    (
        secured(),
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::ETAG, etag),
        ],
        body,
    )
        .into_response()
}

/// Headers on every answer of the dashboard.
fn secured() -> [(header::HeaderName, HeaderValue); 6] {
    [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        // The page's address says what is being looked at; nowhere it
        // links to needs to hear it.
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ]
}

fn hex_prefix(digest: &[u8]) -> String {
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        router::<()>()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn every_asset_is_served_with_a_policy_that_runs_only_its_own_script() {
        for asset in &ASSETS {
            let response = get(asset.path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.path);
            let headers = response.headers();
            let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(policy.contains("script-src 'self';"), "{policy}");
            assert!(!policy.contains("unsafe"), "{policy}");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[header::CONTENT_TYPE], asset.content_type);
            // Revalidated by its tag: 304 while the build is the same.
            let tag = headers[header::ETAG].to_str().unwrap().to_owned();
            let again = get(asset.path, Some(&tag)).await;
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
            let other = get(asset.path, Some("\"something else\"")).await;
            assert_eq!(other.status(), StatusCode::OK);
        }
        let bare = get("/ui", None).await;
        assert_eq!(bare.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(bare.headers()[header::LOCATION], "/ui/");
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_nothing_inline() {
        let page = ASSETS[0].body;
        for needle in [
            "http://",
            "https://",
            "<script>",
            "style=",
            "onclick=",
            "onload=",
            "onsubmit=",
            "javascript:",
        ] {
            assert!(!page.contains(needle), "the page holds `{needle}`");
        }
        // The script builds the page from text nodes: no markup from
        // strings, nothing evaluated.
        let script = ASSETS[1].body;
        for needle in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!script.contains(needle), "the script holds `{needle}`");
        }
    }
}
