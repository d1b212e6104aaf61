//! The console (issue 17, DESIGN.md §15): one page at `/console`, its HTML, CSS and JavaScript
//! embedded in the binary and served under `Content-Security-Policy: default-src 'self'` (so the
//! page has no inline script or style). It holds no state and has no API of its own: the page
//! signs in with the admin token and calls the documented API like any other client.

use poem::http::{HeaderValue, header};
use poem::{Endpoint, EndpointExt, Response, Route};

/// Everything the page may load comes from this server; no inline script or style.
const CSP: &str = "default-src 'self'";

/// The page's assets, in the binary: no build step, no CDN.
const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/app.js");
const CHARTS: &str = include_str!("console/charts.js");
const SEND_SCRIPT: &str = include_str!("console/send.js");
const STYLE: &str = include_str!("console/app.css");
const PLAYGROUND: &str = include_str!("console/playground.js");
const ICON: &str = include_str!("console/favicon.svg");

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

/// `/console` and its assets (`app.js` imports the other modules).
pub fn routes() -> impl Endpoint {
    Route::new()
        .at("/", poem::get(asset(INDEX, "text/html; charset=utf-8")))
        .at(
            "/app.js",
            poem::get(asset(SCRIPT, "text/javascript; charset=utf-8")),
        )
        .at(
            "/playground.js",
            poem::get(asset(PLAYGROUND, "text/javascript; charset=utf-8")),
        )
        .at(
            "/charts.js",
            poem::get(asset(CHARTS, "text/javascript; charset=utf-8")),
        )
        .at(
            "/send.js",
            poem::get(asset(SEND_SCRIPT, "text/javascript; charset=utf-8")),
        )
        .at("/favicon.svg", poem::get(asset(ICON, "image/svg+xml")))
        .at(
            "/app.css",
            poem::get(asset(STYLE, "text/css; charset=utf-8")),
        )
        .map_to_response()
}
