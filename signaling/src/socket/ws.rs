//! `/ws`: the hub's events as JSON text frames, for clients that do not speak Socket.IO.
//!
//! Every frame, both ways, is `{"event": "...", "data": {...}}`; a client frame may carry an
//! `"id"`, echoed in the answer to it. The user authenticates with the same JWT as the REST
//! API, in `Authorization: Bearer` or `?token=`; without a valid one the upgrade is refused
//! with the API's 401. The socket's id, which a REST answer or rejection names in
//! `X-Socket-Id` ([`SOCKET_ID`]), is the client's `?socketId=` (see [`is_socket_name`]; another
//! is refused 400) or one the daemon picks; the 101 carries it in `X-Socket-Id`.
//!
//! Client → server (the events of [`super::client`], performed by
//! [`dispatch`](mod@super::dispatch)):
//! - `call:offer`, `call:answer`, `call:ice-candidate` with `{callId, targetUserId, offer |
//!   answer | candidate}`: relayed to every socket of the target as `{callId, fromUserId,
//!   ...}` (the sender is the socket's user, never what the client says), if both are in the
//!   live call; `candidate: null` (the end of candidates) is a candidate. With an `id`, the
//!   frame is acked `{"success": true}`, as Socket.IO acks a relayed emit;
//! - `call:accept`, `call:reject`, `call:end` with `{callId}` and `call:media` with `{callId,
//!   audioEnabled?, videoEnabled?, screenSharing?}`: the REST transitions, answered with an
//!   `ack` frame holding the REST response body (`call:accept` and `call:reject` also tell the
//!   user's other sockets: `call:answered-elsewhere`, `call:rejected-elsewhere`);
//! - `call:stats` with `{callId, rtt?, jitter?, packetLoss?, bitrate?, relayed?}`: a joined
//!   participant's connection report (see [`crate::quality`]), acked `{success, quality}`;
//! - `auth:refresh` with `{token}`: a fresh token for the socket, acked `{success, expiresAt}`
//!   (see [`super::lease`]: the server sends `auth:expiring` `{expiresAt}` shortly before the
//!   token's `exp`, and closes a socket not refreshed by then with 1008 `token expired`).
//!
//! A refused frame is answered `{"event": "error", "data": {"code", "message", "event"}}`.
//! Bounds: frames of at most [`MAX_AUTHENTICATED_FRAME`] bytes (the socket authenticated at its
//! upgrade; [`MAX_FRAME`] is the bound before, which only Socket.IO has), [`RATE`] frames per second (a burst of
//! [`BURST`]), [`QUEUE`] messages queued towards a socket (a socket that falls further behind
//! is closed), [`MAX_SOCKETS_PER_USER`] sockets per user. Every socket is pinged every
//! [`PING_EVERY`] and closed when nothing at all has come from it by the next ping; a socket
//! whose writes make no progress for [`PING_TIMEOUT`] (a peer that stopped reading) is closed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::dispatch::{dispatch, Origin, Reply};
use super::lease::Lease;
use super::limits::Bucket;
use super::wire::{self, Conn, Incoming, Reader, Upgrade};
use super::{bounded, close_code, SOCKET_ID};
use crate::api::{ApiError, ApiState};
use crate::auth::Session;
use crate::hub::{Backlog, DisconnectReason, Message, Outbox};

// The hub's limits and heartbeat, shared by both transports, live in `super::limits` and
// `super`; re-exported here, where the daemon and the tests have always named them from.
pub use super::limits::{
    BURST, MAX_AUTHENTICATED_FRAME, MAX_FRAME, MAX_SOCKETS_PER_USER, PING_EVERY, PING_TIMEOUT,
    QUEUE, RATE, READ_BUFFER,
};
pub use super::run_heartbeat;

/// `GET /ws`.
pub async fn handler(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    upgrade: Upgrade,
) -> Response {
    let token = query_param(query.as_deref(), "token");
    let bearer = token.map(|t| format!("Bearer {t}"));
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .or(bearer.as_deref());
    let session = match s.auth.session(authorization) {
        Ok(session) => session,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let name: Arc<str> = match query_param(query.as_deref(), "socketId") {
        Some(name) if !is_socket_name(&name) => {
            let why = format!("1 to {MAX_SOCKET_NAME} of A-Z a-z 0-9 - _");
            return ApiError::invalid("socketId", why).into_response();
        }
        Some(name) => Arc::from(name),
        None => Arc::from(Uuid::new_v4().simple().to_string()),
    };
    let header_value = HeaderValue::from_str(&name).ok();
    let mut response = upgrade.on_upgrade(move |conn, reader| {
        let lease = Lease::new(session.user.id, session.exp);
        serve(s, session, lease, name, conn, reader)
    });
    if let Some(v) = header_value {
        response.headers_mut().insert(SOCKET_ID, v);
    }
    response
}

/// The longest socket id a client may choose (`/ws?socketId=`).
pub const MAX_SOCKET_NAME: usize = 64;

/// Whether `name` may be a socket's id: 1 to [`MAX_SOCKET_NAME`] of `A-Z a-z 0-9 - _`.
pub fn is_socket_name(name: &str) -> bool {
    (1..=MAX_SOCKET_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The parameter `key` of a query string (`?token=`, for clients that cannot set headers).
pub(crate) fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query?).ok()?;
    pairs.into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Milliseconds on a monotonic clock, for the heartbeat's marks (atomics, written per frame).
fn millis() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    // From 1: 0 means "never".
    1 + START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The reason [`crate::hub::Hub::disconnect_all`] is given at a stop.
pub const SHUTDOWN: DisconnectReason = DisconnectReason::ServerShutdown;

/// The socket's side of the hub: its connection (written by whoever has a message for it,
/// see [`super::wire`]) and the heartbeat's marks.
struct WsOutbox {
    conn: Arc<Conn>,
    /// When anything at all last came from the client ([`millis`]).
    heard: AtomicU64,
    /// When the last ping went out; 0 before the first.
    pinged: AtomicU64,
}

impl Outbox for WsOutbox {
    fn push(&self, m: &Message) -> bool {
        let (event, data) = (m.event, m.data.get());
        let parts = [r#"{"event":""#, event, r#"","data":"#, data, "}"];
        self.conn.send_text(&parts, true)
    }

    /// Closed with 1001 (going away) at a stop, after what was queued (the calls'
    /// `call:ended`), or when the client stopped answering; 1008 (policy) when it fell too
    /// far behind.
    fn disconnect(&self, reason: DisconnectReason) {
        let flush = reason == DisconnectReason::ServerShutdown;
        self.conn.close(close_code(reason), reason.as_str(), flush);
    }

    /// Closed when nothing at all came from the client since the last ping.
    fn pulse(&self) {
        let pinged = self.pinged.load(Ordering::Acquire);
        if pinged != 0 && self.heard.load(Ordering::Acquire) < pinged {
            return self.disconnect(DisconnectReason::PingTimeout);
        }
        self.pinged.store(millis(), Ordering::Release);
        // A full queue: the socket is being closed as a slow consumer already.
        let _ = self.conn.ping();
    }

    fn backlog(&self) -> Backlog {
        self.conn.backlog()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[doc(hidden)] // pub for signaling/fuzz
pub struct ClientFrame<'a> {
    pub event: String,
    #[serde(borrow)]
    pub data: Option<&'a RawValue>,
    pub id: Option<serde_json::Value>,
}

async fn serve(
    s: Arc<ApiState>,
    session: Session,
    lease: Lease,
    name: Arc<str>,
    conn: Arc<Conn>,
    mut reader: Reader,
) {
    let user = session.user.clone();
    let hub = s.hub.clone();
    let outbox = Arc::new(WsOutbox {
        conn: conn.clone(),
        heard: AtomicU64::new(millis()),
        pinged: AtomicU64::new(0),
    });
    // Named from this token in the calls, as a REST request would (before the socket can be
    // rung: the invitee of a call waiting for them is then named in it).
    if let Err(e) = s.calls.record_user(&user).await {
        tracing::warn!(user = %user.id, error = %e, "the user's name is not recorded");
    }
    let id = match hub.attach_named(user.id, Some(name), outbox.clone()) {
        Ok(id) => id,
        Err(e) => return conn.close(wire::POLICY, &e.to_string(), false),
    };
    // Authenticated at the upgrade: larger messages from now on (an SFU offer of a big room).
    reader.authenticated();
    // A revocation made while the socket was opening did not find it: it goes now.
    if s.auth.revoked(&session) {
        outbox.disconnect(DisconnectReason::Revoked);
    }
    tracing::debug!(user = %user.id, "ws connected");
    let mut bucket = Bucket::new();
    let origin = Origin {
        user: &user,
        socket: id,
        lease: &lease,
    };
    // Warns, then ends when the token expires unrefreshed; the close then ends the loop.
    let expiry = lease.run(&*outbox);
    tokio::pin!(expiry);
    let mut expired = false;
    loop {
        tokio::select! {
            biased;
            () = &mut expiry, if !expired => {
                expired = true;
                tracing::debug!(user = %user.id, "ws token expired");
                outbox.disconnect(DisconnectReason::TokenExpired);
            }
            () = conn.woken() => {
                if conn.is_closing() {
                    break;
                }
                // What the socket could not take at once. A peer that stopped reading
                // blocks the write: bounded, then closed.
                if !matches!(bounded(PING_TIMEOUT, conn.flush()).await, Some(Ok(()))) {
                    break;
                }
            }
            incoming = reader.next(&conn) => {
                outbox.heard.store(millis(), Ordering::Release);
                let text = match incoming {
                    Incoming::Closed => break,
                    Incoming::Control => continue,
                    Incoming::Text(t) => Some(t),
                    Incoming::Binary => None,
                };
                // Every data frame counts, whatever it holds. The refusal names the frame's
                // `id` and event when it has them: the client's ack learns it was refused.
                if !bucket.take() {
                    let f = text.and_then(|t| parse_frame(t).ok());
                    let (id, event) = f.as_ref().map_or((None, ""), |f| (f.id.as_ref(), f.event.as_str()));
                    reply_error(&outbox, id, event, "rate_limited", "too many messages; slow down");
                    continue;
                }
                match text {
                    Some(t) => handle(&s, origin, &outbox, t).await,
                    None => reply_error(&outbox, None, "", "invalid_frame", "frames are JSON text"),
                }
            }
        }
    }
    hub.detach(user.id, id);
    tracing::debug!(user = %user.id, "ws disconnected");
}

/// `{"event": ..., "data": ..., "id": ...}` as text.
#[doc(hidden)] // pub for signaling/fuzz
pub fn frame(event: &str, data: &RawValue, id: Option<&serde_json::Value>) -> String {
    let event = serde_json::to_string(event).unwrap_or_default();
    match id {
        Some(id) => format!(r#"{{"event":{event},"data":{},"id":{id}}}"#, data.get()),
        None => format!(r#"{{"event":{event},"data":{}}}"#, data.get()),
    }
}

/// Answers a client frame. The answer goes through the socket's queue, so that it cannot
/// overtake events queued before it; a socket whose queue is full is closed, as the hub does.
fn reply(
    outbox: &WsOutbox,
    event: &'static str,
    data: &impl serde::Serialize,
    id: Option<&serde_json::Value>,
) {
    let m = Message::new(event, data);
    if !outbox.conn.send_text(&[&frame(event, &m.data, id)], true) {
        outbox.disconnect(DisconnectReason::SlowConsumer);
    }
}

fn reply_error(
    outbox: &WsOutbox,
    id: Option<&serde_json::Value>,
    event: &str,
    code: &str,
    message: &str,
) {
    let data = serde_json::json!({"code": code, "message": message, "event": event});
    reply(outbox, "error", &data, id);
}

async fn handle(s: &ApiState, origin: Origin<'_>, outbox: &WsOutbox, text: &str) {
    let f: ClientFrame<'_> = match parse_frame(text) {
        Ok(f) => f,
        Err(e) => {
            let msg = format!("a frame is {{\"event\": \"...\", \"data\": {{...}}}}: {e}");
            return reply_error(outbox, None, "", "invalid_frame", &msg);
        }
    };
    let id = f.id.as_ref();
    let data = f.data.map_or("null", RawValue::get);
    let event = f.event.as_str();
    match dispatch(s, origin, event, data).await {
        // Acked, as Socket.IO does, when the client asked (an `id`): `{"success": true}`.
        Reply::Relayed => {
            if id.is_some() {
                reply(outbox, "ack", &serde_json::json!({"success": true}), id);
            }
        }
        Reply::Ack(body) => reply(outbox, "ack", &body, id),
        Reply::Error { code, message } => reply_error(outbox, id, event, code, &message),
    }
}

/// A client text frame, decoded (the `/ws` decoder; `handle` performs what it says).
#[doc(hidden)] // pub for signaling/fuzz
pub fn parse_frame(text: &str) -> serde_json::Result<ClientFrame<'_>> {
    // serde would take `["event", data, id]` for the struct: a frame is an object.
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text)
    } else {
        serde_json::from_str::<ClientFrame<'_>>("null")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names_are_short_and_plain() {
        for good in [
            "a",
            "0b6f1a3c2d4e4f5a8b9c0d1e2f3a4b5c",
            "phone_1-x",
            &"x".repeat(64),
        ] {
            assert!(is_socket_name(good), "{good}");
        }
        for bad in ["", &"x".repeat(65), "a b", "a/b", "é", "a\n"] {
            assert!(!is_socket_name(bad), "{bad}");
        }
        assert_eq!(
            query_param(Some("token=t&socketId=abc"), "socketId").as_deref(),
            Some("abc")
        );
        assert_eq!(query_param(Some("token=t"), "socketId"), None);
    }
}
