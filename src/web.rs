//! The demo page and its JS client (`web/`), embedded in the binary and served at `/`.
//!
//! Every asset is sent with a strict Content-Security-Policy (scripts and styles from this
//! origin only; connections to this origin's HTTP and WebSocket), `nosniff`, no referrer and
//! no framing, and `no-cache`, so an upgraded daemon's page is never mixed with an old one's.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// Path, content type, body.
const ASSETS: [(&str, &str, &str); 6] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../web/index.html"),
    ),
    ("/app.js", JS, include_str!("../web/app.js")),
    ("/webrtc.js", JS, include_str!("../web/webrtc.js")),
    ("/signaling.js", JS, include_str!("../web/signaling.js")),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../web/style.css"),
    ),
    (
        "/favicon.svg",
        "image/svg+xml",
        include_str!("../web/favicon.svg"),
    ),
];
const JS: &str = "text/javascript; charset=utf-8";

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; media-src 'self' blob: mediastream:; connect-src 'self'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The routes of every asset.
pub fn router() -> Router {
    ASSETS
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(
                path,
                get(move || async move {
                    (
                        [
                            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                            (
                                header::CONTENT_SECURITY_POLICY,
                                HeaderValue::from_static(POLICY),
                            ),
                            (
                                header::X_CONTENT_TYPE_OPTIONS,
                                HeaderValue::from_static("nosniff"),
                            ),
                            (
                                header::REFERRER_POLICY,
                                HeaderValue::from_static("no-referrer"),
                            ),
                            (
                                HeaderName::from_static("permissions-policy"),
                                HeaderValue::from_static(
                                    "camera=(self), microphone=(self), display-capture=(self)",
                                ),
                            ),
                        ],
                        body,
                    )
                        .into_response()
                }),
            )
        })
}
