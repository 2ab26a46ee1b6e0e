//! `http.allowed_origins` through the real daemon: preflights and actual responses for the API,
//! Socket.IO polling and the JS client carry CORS headers for an allowed origin and none for
//! another; WebSocket upgrades (`/ws`, Socket.IO's websocket) from another origin are refused
//! 403 with a JSON error, while the daemon's own origin and clients without `Origin` go on.
//! The browser's side of it (a page on another origin calling through) is tests/e2e/chat_app.rs.

use crate::common;

use std::time::Duration;

use common::{Daemon, Options, Person};

const ALLOWED: &str = "http://chat.example.test:5173";
const OTHER: &str = "http://evil.example.test";

struct Answer {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn error_code(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body));
        v["error"]["code"].as_str().unwrap_or_default().to_owned()
    }
}

fn send(d: &Daemon, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let agent = common::http_agent(Duration::from_secs(10));
    let mut req = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", d.http));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = agent.run(req.body(Vec::new()).unwrap()).unwrap();
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.body_mut().read_to_string().unwrap_or_default(),
    }
}

fn daemon(origins: &str) -> Daemon {
    Daemon::start_with(Options {
        http: format!("allowed_origins = {origins}"),
        ..Options::default()
    })
}

#[test]
fn preflight_from_an_allowed_origin_is_answered_and_others_are_refused() {
    let d = daemon(&format!("[\"{ALLOWED}\"]"));
    let ask = |origin: &str, path: &str| {
        send(
            &d,
            "OPTIONS",
            path,
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "authorization,content-type,x-socket-id",
                ),
            ],
        )
    };
    for path in [
        "/api/calls/initiate",
        "/api/calls/turn-credentials",
        "/socket.io/?EIO=4&transport=polling",
        "/webrtc.js",
    ] {
        let a = ask(ALLOWED, path);
        assert_eq!(a.status, 204, "{path}: {}", a.body);
        assert_eq!(a.header("access-control-allow-origin"), Some(ALLOWED));
        let methods = a.header("access-control-allow-methods").unwrap();
        for m in ["GET", "POST", "PATCH"] {
            assert!(methods.contains(m), "{path}: {methods}");
        }
        assert_eq!(
            a.header("access-control-allow-headers"),
            Some("authorization,content-type,x-socket-id")
        );
        assert_eq!(a.header("access-control-allow-credentials"), None);
        assert!(a.header("vary").unwrap().contains("Origin"));

        let refused = ask(OTHER, path);
        assert_eq!(refused.status, 403, "{path}");
        assert_eq!(refused.header("access-control-allow-origin"), None);
        assert_eq!(refused.error_code(), "origin_not_allowed");
    }
    // Outside the scope (metrics, the demo page's own assets) nothing changes: 405 as before.
    let a = ask(ALLOWED, "/metrics");
    assert_eq!(a.header("access-control-allow-origin"), None);
}

#[test]
fn actual_responses_carry_cors_headers_for_an_allowed_origin_only() {
    let d = daemon(&format!("[\"{ALLOWED}\", \"http://127.0.0.1:1\"]"));
    let alice = Person::new("Alice");
    let bearer = format!("Bearer {}", alice.token);
    // A success, an error (still JSON, readable by the page), the client, and polling.
    let ok = send(
        &d,
        "GET",
        "/api/calls/turn-credentials",
        &[("origin", ALLOWED), ("authorization", &bearer)],
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.header("access-control-allow-origin"), Some(ALLOWED));
    assert!(ok
        .header("access-control-expose-headers")
        .unwrap()
        .contains("Retry-After"));
    let err = send(
        &d,
        "GET",
        "/api/calls/turn-credentials",
        &[("origin", ALLOWED)],
    );
    assert_eq!(err.status, 401);
    assert_eq!(err.error_code(), "missing_token");
    assert_eq!(err.header("access-control-allow-origin"), Some(ALLOWED));
    let js = send(&d, "GET", "/webrtc.js", &[("origin", ALLOWED)]);
    assert_eq!(js.status, 200);
    assert!(js
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
    assert!(js.body.contains("export default WebRTCManager"));
    assert_eq!(js.header("access-control-allow-origin"), Some(ALLOWED));
    let poll = send(
        &d,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        &[("origin", ALLOWED)],
    );
    assert_eq!(poll.status, 200, "{}", poll.body);
    assert!(
        poll.body.starts_with('0'),
        "an Engine.IO open: {}",
        poll.body
    );
    assert_eq!(poll.header("access-control-allow-origin"), Some(ALLOWED));

    // Another origin is served as before, with no CORS headers (the browser hides it).
    for path in [
        "/api/calls/turn-credentials",
        "/webrtc.js",
        "/socket.io/?EIO=4&transport=polling",
    ] {
        let a = send(
            &d,
            "GET",
            path,
            &[("origin", OTHER), ("authorization", &bearer)],
        );
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(a.header("access-control-allow-origin"), None, "{path}");
        assert_eq!(a.header("vary"), Some("Origin"), "{path}");
    }
    // No Origin at all: a native client, unchanged.
    let a = send(
        &d,
        "GET",
        "/api/calls/turn-credentials",
        &[("authorization", &bearer)],
    );
    assert_eq!(a.status, 200);
    assert_eq!(a.header("access-control-allow-origin"), None);
}

#[test]
fn a_wildcard_allows_every_origin_without_credentials() {
    let d = daemon("[\"*\"]");
    let a = send(
        &d,
        "OPTIONS",
        "/api/calls/initiate",
        &[("origin", OTHER), ("access-control-request-method", "POST")],
    );
    assert_eq!(a.status, 204);
    assert_eq!(a.header("access-control-allow-origin"), Some("*"));
    assert_eq!(a.header("access-control-allow-credentials"), None);
    assert!(
        d.wait_log(Duration::from_secs(5), |l| l.contains("allowed_origins")
            && l.contains("every origin"))
            .is_some(),
        "no warning for \"*\""
    );
}

#[test]
fn without_a_list_nothing_is_added_or_refused() {
    let d = Daemon::start_with(Options::default());
    let a = send(
        &d,
        "OPTIONS",
        "/api/calls/initiate",
        &[
            ("origin", ALLOWED),
            ("access-control-request-method", "POST"),
        ],
    );
    // Same-origin only, as a browser enforces: the preflight fails (no CORS headers).
    assert_eq!(a.header("access-control-allow-origin"), None);
    assert_eq!(a.status, 405);
    let ws = format!("/ws?token={}", Person::new("Alice").token);
    assert_eq!(ws_status(&d, &ws, Some(OTHER)), 101);
}

/// Opens a WebSocket on `path` with `origin`: the handshake's status.
fn ws_status(d: &Daemon, path: &str, origin: Option<&str>) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut req = common::ws::request(&format!("ws://{}{path}", d.http), None);
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    rt.block_on(async {
        match common::ws::handshake(req, Duration::from_secs(10)).await {
            Ok(_) => 101,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default())
                    .into_owned();
                if resp.status() == 403 {
                    assert!(body.contains("origin_not_allowed"), "{body}");
                }
                resp.status().as_u16()
            }
            Err(e) => panic!("{path}: {e}"),
        }
    })
}

#[test]
fn websocket_upgrades_from_other_origins_are_refused() {
    let d = daemon(&format!("[\"{ALLOWED}\"]"));
    let own = format!("http://{}", d.http);
    let ws = format!("/ws?token={}", Person::new("Alice").token);
    let sio = "/socket.io/?EIO=4&transport=websocket";
    for path in [ws.as_str(), sio] {
        assert_eq!(ws_status(&d, path, Some(OTHER)), 403, "{path}");
        assert_eq!(ws_status(&d, path, Some("null")), 403, "{path}");
        assert_eq!(ws_status(&d, path, Some(ALLOWED)), 101, "{path}");
        // The demo page, served from the daemon itself.
        assert_eq!(ws_status(&d, path, Some(&own)), 101, "{path}");
        // Native clients send no Origin.
        assert_eq!(ws_status(&d, path, None), 101, "{path}");
    }
}
