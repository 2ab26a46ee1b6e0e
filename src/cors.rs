//! Cross-origin use (`http.allowed_origins`): a host application whose web app is served from
//! its own origin calls the API, polls Socket.IO and imports the JS client from this daemon.
//!
//! The Fetch standard's CORS protocol, for the paths a host app's page needs: `/api/*`,
//! `/socket.io/*` (Engine.IO long-polling) and the JS client (`/webrtc.js`, `/signaling.js`,
//! which a page on another origin imports as ES modules, fetched in CORS mode):
//!
//! - a preflight (`OPTIONS` with `Access-Control-Request-Method`) from an allowed origin is
//!   answered 204 with the methods and the request headers it asked for; from any other
//!   origin it is refused 403 with a JSON error and no CORS headers, so the browser blocks the
//!   request it was asking about;
//! - any other request from an allowed origin gets `Access-Control-Allow-Origin` on its
//!   response, whatever the status (errors stay JSON and readable); from another origin it is
//!   served as before, without CORS headers, which the browser then keeps from the page.
//!
//! No credentials are ever allowed (`Access-Control-Allow-Credentials` is never sent): every
//! endpoint is authorised by a bearer token the page sends explicitly, never by a cookie.
//!
//! WebSocket upgrades (`/ws`, Socket.IO's websocket transport) are outside CORS: a browser
//! opens them from any page and sends its `Origin`. When the list is set, an upgrade whose
//! `Origin` is neither in it nor this daemon's own origin (the demo page: `http.public_url`'s
//! origin, or the `Host` the request reached) is refused 403.
//! Requests without `Origin` (native clients, servers) are never refused for it.
//!
//! With the list empty (the default) nothing here applies: same-origin only, as a browser
//! enforces by itself. `"*"` allows every origin (with a warning at start).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use switchboard_signaling::api::ApiError;
use switchboard_signaling::wire;

/// The methods the API takes, as a preflight is told.
const METHODS: &str = "GET, POST, PUT, PATCH, OPTIONS";
/// How long a browser may cache a preflight's answer (Chromium caps this at 2 hours).
const MAX_AGE: &str = "600";
/// Response headers a page may read besides the CORS-safelisted ones.
const EXPOSE: &str = "Retry-After";
/// The longest `Access-Control-Request-Headers` echoed back.
const MAX_REQUEST_HEADERS: usize = 1024;

/// The middleware's settings.
#[derive(Debug)]
pub struct Cors {
    allowed: AllowedOrigins,
    /// `http.public_url`'s origin: behind a reverse proxy the `Host` that reaches the daemon
    /// may be the proxy's upstream name, not the one the demo page was loaded from.
    public: Option<String>,
}

impl Cors {
    pub fn new(allowed: AllowedOrigins, public_url: Option<&str>) -> Cors {
        let public = public_url.and_then(|u| {
            let (scheme, rest) = u.split_once("://")?;
            let authority = rest.split(['/', '?', '#']).next()?;
            parse_origin(&format!("{scheme}://{authority}")).ok()
        });
        Cors { allowed, public }
    }
}

/// Which origins may use the daemon from a browser page of their own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Every origin (`"*"`).
    Any,
    /// These serialized origins (`scheme://host[:port]`, lowercase); empty = same-origin only.
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Nothing allowed beyond the daemon's own origin.
    pub fn is_same_origin_only(&self) -> bool {
        matches!(self, AllowedOrigins::List(l) if l.is_empty())
    }

    fn allows(&self, origin: &str) -> bool {
        match self {
            AllowedOrigins::Any => true,
            AllowedOrigins::List(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        }
    }
}

/// Parses one configured origin into its serialized form, as browsers send it in `Origin`:
/// `http` or `https`, a host, an optional port, nothing else (no path, no trailing slash).
pub fn parse_origin(s: &str) -> Result<String, String> {
    let (scheme, rest) = s
        .split_once("://")
        .ok_or_else(|| format!("`{s}` is not an origin (scheme://host[:port])"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(format!("`{s}`: the scheme must be http or https"));
    }
    if rest.is_empty() {
        return Err(format!("`{s}` has no host"));
    }
    if rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "`{s}` is not an origin: no path, query, user or trailing slash (a browser sends \
             `{scheme}://{}`)",
            rest.split(['/', '?', '#']).next().unwrap_or_default()
        ));
    }
    // host, [v6]:port or host:port; a port must be a number.
    let port = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.contains(']') => Some(port),
        _ => None,
    };
    if let Some(port) = port {
        if port.parse::<u16>().is_err() {
            return Err(format!("`{s}`: `{port}` is not a port"));
        }
    }
    Ok(format!("{scheme}://{}", rest.to_ascii_lowercase()))
}

/// Does `path` take cross-origin requests?
fn in_scope(path: &str) -> bool {
    path.starts_with("/api/")
        || path.starts_with("/socket.io/")
        || path == "/webrtc.js"
        || path == "/signaling.js"
}

/// Is `origin` this daemon's own origin: `public` (`http.public_url`'s), or the `Host` the
/// request reached? The demo page is served from there and must keep working when a list is
/// set.
fn is_own_origin(origin: &str, public: Option<&str>, headers: &HeaderMap) -> bool {
    if public.is_some_and(|p| p.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let authority = origin.split_once("://").map_or("", |(_, a)| a);
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|host| !host.is_empty() && host.eq_ignore_ascii_case(authority))
}

/// The middleware. `allowed` is `http.allowed_origins`.
pub async fn layer(State(cors): State<Arc<Cors>>, req: Request, next: Next) -> Response {
    let allowed = &cors.allowed;
    if allowed.is_same_origin_only() {
        return next.run(req).await;
    }
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned)
    else {
        return next.run(req).await;
    };
    let ok = allowed.allows(&origin);
    let path = req.uri().path();
    if wire::wants_websocket(req.headers()) {
        if ok || is_own_origin(&origin, cors.public.as_deref(), req.headers()) {
            return next.run(req).await;
        }
        tracing::debug!(path, "websocket upgrade from an origin not allowed");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this origin is not in http.allowed_origins",
        )
        .into_response();
    }
    if !in_scope(path) {
        return next.run(req).await;
    }
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        if !ok {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "this origin is not in http.allowed_origins",
            )
            .into_response();
        }
        let mut response = StatusCode::NO_CONTENT.into_response();
        let h = response.headers_mut();
        allow_origin(h, allowed, &origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(METHODS),
        );
        // Every header the page asks for: nothing here is authorised by anything but the
        // bearer token, so a header cannot widen what a page may do.
        if let Some(asked) = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .filter(|v| v.len() <= MAX_REQUEST_HEADERS)
        {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE),
        );
        h.append(
            header::VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        return response;
    }
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    if ok {
        allow_origin(h, allowed, &origin);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE),
        );
    }
    if !matches!(allowed, AllowedOrigins::Any) {
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

fn allow_origin(h: &mut HeaderMap, allowed: &AllowedOrigins, origin: &str) {
    let value = match allowed {
        AllowedOrigins::Any => HeaderValue::from_static("*"),
        AllowedOrigins::List(_) => match HeaderValue::from_str(origin) {
            Ok(v) => v,
            Err(_) => return,
        },
    };
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_to_what_browsers_send() {
        assert_eq!(
            parse_origin("https://Chat.Example.com").unwrap(),
            "https://chat.example.com"
        );
        assert_eq!(
            parse_origin("http://127.0.0.1:5173").unwrap(),
            "http://127.0.0.1:5173"
        );
        assert_eq!(parse_origin("http://[::1]:80").unwrap(), "http://[::1]:80");
        assert_eq!(parse_origin("http://[::1]").unwrap(), "http://[::1]");
        for bad in [
            "chat.example.com",
            "ftp://x",
            "https://",
            "https://chat.example.com/",
            "https://chat.example.com/app",
            "https://u@chat.example.com",
            "https://chat.example.com:http",
            "https://chat.example.com:99999",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn own_origin_is_the_host_the_request_reached() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("localhost:8080"));
        assert!(is_own_origin("http://localhost:8080", None, &h));
        assert!(is_own_origin("https://LOCALHOST:8080", None, &h));
        assert!(!is_own_origin("http://localhost:8081", None, &h));
        assert!(!is_own_origin("http://evil.example", None, &h));
        assert!(!is_own_origin("null", None, &h));
        // Behind a proxy that rewrites Host: the public URL's origin.
        let cors = Cors::new(
            AllowedOrigins::List(vec![]),
            Some("https://Calls.example.com/base"),
        );
        let public = cors.public.as_deref();
        assert_eq!(public, Some("https://calls.example.com"));
        assert!(is_own_origin("https://calls.example.com", public, &h));
        assert!(!is_own_origin("http://calls.example.com", public, &h));
    }

    #[test]
    fn scope_is_the_api_polling_and_the_client() {
        assert!(in_scope("/api/calls/initiate"));
        assert!(in_scope("/socket.io/"));
        assert!(in_scope("/webrtc.js"));
        assert!(!in_scope("/metrics"));
        assert!(!in_scope("/app.js"));
        assert!(!in_scope("/"));
    }
}
