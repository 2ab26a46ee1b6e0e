//! The hub's WebSockets (RFC 6455, server side), for `/ws` and Socket.IO's websocket
//! transport.
//!
//! # Why not tungstenite's stream
//! A relayed message used to cross two tasks: the sender's socket task handed it to the
//! target's queue, and the target's task woke up to write it through tokio-tungstenite. Here
//! a connection's writing side is shared: whoever has a message for a socket writes it at
//! once, without waiting, if nothing is queued before it; only what the socket cannot take
//! at once is queued, for the socket's own task to write when it can. A relayed candidate is
//! then one read, one write and no task switch, which is most of what `bench/hub.sh` measures
//! (about a fifth of the server's CPU per message went to the second task and the stream
//! adapters). The framing is the protocol's simplest part: frames are parsed and built here,
//! on hyper's upgraded connection. Tungstenite's frame codec alone, under this write path,
//! was measured too (issue 19): it offers only the header's parse and format (its masking is
//! private, and the checks below are its connection's, not its codec's), and `bench/hub.sh`
//! showed no gain from it, so the codec stays ours.
//!
//! # What is taken
//! No extension is negotiated, so reserved bits must be clear; client frames must be masked;
//! control frames are whole and at most 125 bytes; a message (fragmented or not) is at most
//! [`super::limits::MAX_FRAME`] bytes, [`super::limits::MAX_AUTHENTICATED_FRAME`] once the
//! transport has told the [`Reader`] that the socket authenticated; text must be UTF-8. A breach closes the connection with the
//! protocol's code (1002, 1007 or 1009). A ping is answered with its pong; a close is
//! answered with a close with the same code, after which nothing more is read.
//!
//! # Layout
//! This file: the handshake ([`Upgrade`]) and the constants; `frame`: the codec (headers,
//! parsing, masking); `conn`: the shared writing side ([`Conn`]); `reader`: the reading side
//! ([`Reader`]).

mod conn;
mod frame;
mod reader;

pub use conn::Conn;
pub use reader::{Incoming, Reader};

use conn::Out;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::task::AtomicWaker;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use sha1::{Digest as _, Sha1};

use super::limits::{MAX_AUTHENTICATED_FRAME, MAX_FRAME, QUEUE, READ_BUFFER};

type Io = TokioIo<Upgraded>;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Close codes (RFC 6455, 7.4.1).
pub const NORMAL: u16 = 1000;
pub const GOING_AWAY: u16 = 1001;
pub const PROTOCOL_ERROR: u16 = 1002;
pub const INVALID_DATA: u16 = 1007;
pub const POLICY: u16 = 1008;
pub const TOO_BIG: u16 = 1009;
pub const TRY_AGAIN_LATER: u16 = 1013;

/// The most queued frames written with one syscall.
const WRITE_BATCH: usize = 32;
/// How long the close (and what is flushed before it) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Frames up to this size are written from one buffer (copied there), longer ones with a
/// vectored write of their parts.
const SMALL: usize = 1024;
/// The most bytes of a frame header: 2, an extended length of 8, a mask of 4.
const MAX_HEADER: usize = 14;

/// `GET` with `Upgrade: websocket`: the handshake's checks, then [`Upgrade::on_upgrade`].
pub struct Upgrade {
    on: OnUpgrade,
    accept: HeaderValue,
}

/// Why a request is no WebSocket handshake.
#[derive(Debug)]
pub struct NotWebSocket(StatusCode, &'static str);

impl IntoResponse for NotWebSocket {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

/// Whether a request asks to become a WebSocket (`Upgrade` names `websocket` among its
/// tokens), as the upgrade takes it; what else it needs to succeed is checked there.
pub fn wants_websocket(headers: &HeaderMap) -> bool {
    has_token(headers, header::UPGRADE, "websocket")
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = NotWebSocket;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let h = &parts.headers;
        if parts.method != axum::http::Method::GET {
            return Err(NotWebSocket(
                StatusCode::METHOD_NOT_ALLOWED,
                "a WebSocket handshake is a GET",
            ));
        }
        if !has_token(h, header::CONNECTION, "upgrade") {
            return Err(NotWebSocket(
                StatusCode::BAD_REQUEST,
                "Connection header did not include 'upgrade'",
            ));
        }
        if !wants_websocket(h) {
            return Err(NotWebSocket(
                StatusCode::BAD_REQUEST,
                "`Upgrade` header did not include 'websocket'",
            ));
        }
        if h.get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v != "13")
        {
            return Err(NotWebSocket(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Version` header did not include '13'",
            ));
        }
        let Some(key) = h.get(header::SEC_WEBSOCKET_KEY) else {
            return Err(NotWebSocket(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Key` header missing",
            ));
        };
        let accept = accept_key(key.as_bytes());
        let Some(on) = parts.extensions.remove::<OnUpgrade>() else {
            return Err(NotWebSocket(
                StatusCode::UPGRADE_REQUIRED,
                "WebSocket request couldn't be upgraded since no upgrade state was present",
            ));
        };
        Ok(Upgrade { on, accept })
    }
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455, 4.2.2).
fn accept_key(key: &[u8]) -> HeaderValue {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let b64 = base64::engine::general_purpose::STANDARD.encode(sha1.finalize());
    HeaderValue::from_str(&b64).expect("base64 is a header value")
}

impl Upgrade {
    /// Answers 101 and runs `serve` on the connection once hyper hands it over.
    pub fn on_upgrade<F, Fut>(self, serve: F) -> Response
    where
        F: FnOnce(Arc<Conn>, Reader) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on = self.on;
        tokio::spawn(async move {
            let Ok(upgraded) = on.await else {
                return;
            };
            let (conn, reader) = split(TokioIo::new(upgraded));
            serve(conn.clone(), reader).await;
            conn.finish().await;
        });
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let h = response.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        response
    }
}

/// The two sides of an upgraded connection.
fn split(io: Io) -> (Arc<Conn>, Reader) {
    let (read, write) = tokio::io::split(io);
    let conn = Arc::new(Conn {
        out: Mutex::new(Out {
            half: write,
            queue: VecDeque::new(),
            written: 0,
            closing: None,
            failed: false,
            finished: false,
        }),
        woken: AtomicBool::new(false),
        waker: AtomicWaker::new(),
    });
    let reader = Reader {
        half: read,
        buf: vec![0; READ_BUFFER],
        start: 0,
        end: 0,
        message: None,
        assembled: Vec::new(),
        limit: MAX_FRAME,
    };
    (conn, reader)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upgrade_is_any_upgrade_header_naming_websocket() {
        use axum::http::HeaderValue;
        let mut h = HeaderMap::new();
        assert!(!wants_websocket(&h));
        h.append(header::UPGRADE, HeaderValue::from_static("h2c, WebSocket"));
        assert!(wants_websocket(&h));
        let mut h = HeaderMap::new();
        h.append(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!wants_websocket(&h));
        h.append(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(wants_websocket(&h));
    }

    #[test]
    fn accept_key_is_rfc_6455s_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
