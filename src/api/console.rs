//! The console (issue 17, DESIGN.md §15): one page at `/console`, its HTML, CSS and JavaScript
//! embedded in the binary and served under `Content-Security-Policy: default-src 'self'` (so the
//! page has no inline script or style). It holds no state and has no API of its own: the page
//! signs in with the admin token and calls the documented API like any other client.

use poem::http::{HeaderValue, header};
use poem::{Endpoint, EndpointExt, Response, Route};

/// Everything the page may load comes from this server; no inline script or style.
const CSP: &str = "default-src 'self'";

/// The page's assets, in the binary (no build step, no CDN): path under `/console`, body,
/// content type. `app.js` imports the other modules.
const ASSETS: [(&str, &str, &str); 8] = [
    (
        "/",
        include_str!("console/index.html"),
        "text/html; charset=utf-8",
    ),
    ("/app.js", include_str!("console/app.js"), JAVASCRIPT),
    (
        "/playground.js",
        include_str!("console/playground.js"),
        JAVASCRIPT,
    ),
    ("/charts.js", include_str!("console/charts.js"), JAVASCRIPT),
    ("/send.js", include_str!("console/send.js"), JAVASCRIPT),
    ("/dom.js", include_str!("console/dom.js"), JAVASCRIPT),
    (
        "/app.css",
        include_str!("console/app.css"),
        "text/css; charset=utf-8",
    ),
    (
        "/favicon.svg",
        include_str!("console/favicon.svg"),
        "image/svg+xml",
    ),
];
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

fn asset(body: &'static str, content_type: &'static str) -> impl Endpoint<Output = Response> {
    poem::endpoint::make_sync(move |_| {
        let mut response = Response::builder().content_type(content_type).body(body);
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        // The page must never run with assets from another build.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    })
}

/// `/console` and its assets.
pub fn routes() -> impl Endpoint {
    ASSETS
        .into_iter()
        .fold(Route::new(), |route, (path, body, content_type)| {
            route.at(path, poem::get(asset(body, content_type)))
        })
        .map_to_response()
}
