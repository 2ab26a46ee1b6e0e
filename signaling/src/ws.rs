//! `/ws`: the hub's events as JSON text frames, for clients that do not speak Socket.IO.
//!
//! Every frame, both ways, is `{"event": "...", "data": {...}}`; a client frame may carry an
//! `"id"`, echoed in the answer to it. The user authenticates with the same JWT as the REST
//! API, in `Authorization: Bearer` or `?token=`; without a valid one the upgrade is refused
//! with the API's 401. The socket's id, which a REST answer or rejection names in
//! `X-Socket-Id` ([`SOCKET_ID`]), is the client's `?socketId=` (see [`is_socket_name`]; another
//! is refused 400) or one the daemon picks; the 101 carries it in `X-Socket-Id`.
//!
//! Client → server:
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
//!   participant's connection report (see [`crate::quality`]), acked `{success, quality}`.
//!
//! A refused frame is answered `{"event": "error", "data": {"code", "message", "event"}}`.
//! Bounds: frames of at most [`MAX_FRAME`] bytes, [`RATE`] frames per second (a burst of
//! [`BURST`]), [`QUEUE`] messages queued towards a socket (a socket that falls further behind
//! is closed), [`MAX_SOCKETS_PER_USER`] sockets per user. Every socket is pinged every
//! [`PING_EVERY`] and closed when nothing at all has come from it by the next ping; a socket
//! whose writes make no progress for [`PING_TIMEOUT`] (a peer that stopped reading) is closed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::api::{ApiError, ApiState};
use crate::call::User;
use crate::hub::{Elsewhere, Hub, Message, Outbox, Signal, SocketId};
use crate::quality::Figures;
use crate::service::{CallError, MediaRequest};
use crate::wire::{self, Conn, Incoming, Reader, Upgrade};

// The hub's limits, shared by both transports, live in `crate::limits`; re-exported here,
// where they have always been named from.
pub use crate::limits::{
    BURST, MAX_FRAME, MAX_SOCKETS_PER_USER, PING_EVERY, PING_TIMEOUT, QUEUE, RATE, READ_BUFFER,
};

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
    let user = match s.auth.user(authorization) {
        Ok(user) => user,
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
    let mut response = upgrade.on_upgrade(move |conn, reader| serve(s, user, name, conn, reader));
    if let Some(v) = header_value {
        response.headers_mut().insert(SOCKET_ID, v);
    }
    response
}

/// The request header naming the socket of the device a REST request comes from (so that an
/// answer or a rejection over REST is not announced to that device as done elsewhere); the
/// `/ws` upgrade answers with it too.
pub const SOCKET_ID: &str = "x-socket-id";

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

/// Why a socket that answered no ping is closed.
pub(crate) const PING_TIMEOUT_REASON: &str = "ping timeout";

/// Milliseconds on a monotonic clock, for the heartbeat's marks (atomics, written per frame).
fn millis() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    // From 1: 0 means "never".
    1 + START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The reason [`crate::hub::Hub::disconnect_all`] is given at a stop.
pub const SHUTDOWN: &str = "server shutdown";

/// The socket's side of the hub: its connection (written by whoever has a message for it,
/// see [`crate::wire`]) and the heartbeat's marks.
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
    fn disconnect(&self, reason: &'static str) {
        let code = if reason == SHUTDOWN || reason == PING_TIMEOUT_REASON {
            wire::GOING_AWAY
        } else {
            wire::POLICY
        };
        self.conn.close(code, reason, reason == SHUTDOWN);
    }

    /// Closed when nothing at all came from the client since the last ping.
    fn pulse(&self) {
        let pinged = self.pinged.load(Ordering::Acquire);
        if pinged != 0 && self.heard.load(Ordering::Acquire) < pinged {
            return self.disconnect(PING_TIMEOUT_REASON);
        }
        self.pinged.store(millis(), Ordering::Release);
        // A full queue: the socket is being closed as a slow consumer already.
        let _ = self.conn.ping();
    }
}

/// The heartbeat of every socket of the hub, both transports: [`Hub::pulse`] every
/// [`PING_EVERY`].
pub async fn run_heartbeat(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        hub.pulse();
    }
}

/// `f`, bounded by `limit` if it does not finish at its first poll: most writes do, and a
/// timer armed for each would cost more than the write.
pub(crate) async fn bounded<F: std::future::Future>(limit: Duration, f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    if let Some(out) = futures_util::FutureExt::now_or_never(f.as_mut()) {
        return Some(out);
    }
    tokio::time::timeout(limit, f).await.ok()
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignalIn<'a> {
    call_id: Uuid,
    target_user_id: Uuid,
    #[serde(borrow)]
    offer: Option<&'a RawValue>,
    #[serde(borrow)]
    answer: Option<&'a RawValue>,
    /// Present, `null` included: a null candidate is the end of the candidates, relayed.
    #[serde(borrow, default, deserialize_with = "present")]
    candidate: Option<&'a RawValue>,
}

/// A field that is there, whatever its value (`null` included): `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CallIn {
    call_id: Uuid,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MediaIn {
    call_id: Uuid,
    audio_enabled: Option<bool>,
    video_enabled: Option<bool>,
    screen_sharing: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StatsIn {
    call_id: Uuid,
    rtt: Option<f64>,
    jitter: Option<f64>,
    packet_loss: Option<f64>,
    bitrate: Option<f64>,
    relayed: Option<bool>,
}

async fn serve(s: Arc<ApiState>, user: User, name: Arc<str>, conn: Arc<Conn>, mut reader: Reader) {
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
    tracing::debug!(user = %user.id, "ws connected");
    let mut bucket = Bucket::new();
    loop {
        tokio::select! {
            biased;
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
                // Every data frame counts, whatever it holds.
                if !bucket.take() {
                    reply_error(&outbox, None, "", "rate_limited", "too many messages; slow down");
                    continue;
                }
                match text {
                    Some(t) => handle(&s, &hub, &user, id, &outbox, t).await,
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
        outbox.disconnect("slow consumer");
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

async fn handle(
    s: &ApiState,
    hub: &Hub,
    user: &User,
    origin: SocketId,
    outbox: &WsOutbox,
    text: &str,
) {
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
    match dispatch(s, hub, user, origin, event, data).await {
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

/// The client events performed by the call service (the others are [`Signal`]s).
const TRANSITIONS: [&str; 5] = [
    "call:accept",
    "call:reject",
    "call:end",
    "call:media",
    "call:stats",
];

/// What a client message comes to.
pub enum Reply {
    /// Relayed to the target (nothing to answer).
    Relayed,
    /// Done: the REST response body.
    Ack(serde_json::Value),
    /// Refused.
    Error { code: &'static str, message: String },
}

impl Reply {
    pub(crate) fn error(code: &'static str, message: impl Into<String>) -> Reply {
        Reply::Error {
            code,
            message: message.into(),
        }
    }
}

/// Performs one client message, `event` with `data` (JSON text), as `user`: the transport
/// independent part of every socket (here and Socket.IO).
/// `origin` is the socket it came from (its other devices hear of an answer).
pub async fn dispatch(
    s: &ApiState,
    hub: &Hub,
    user: &User,
    origin: SocketId,
    event: &str,
    data: &str,
) -> Reply {
    if let Some(signal) = Signal::from_event(event) {
        return relay(hub, user, signal, data);
    }
    if !TRANSITIONS.contains(&event) {
        return Reply::error("unknown_event", format!("unknown event `{event}`"));
    }
    if let Err(refused) = an_object(data) {
        return refused;
    }
    let invalid = |e: serde_json::Error| Reply::error("invalid_field", e.to_string());
    let result = match event {
        "call:accept" | "call:reject" | "call:end" => {
            let m: CallIn = match serde_json::from_str(data) {
                Ok(m) => m,
                Err(e) => return invalid(e),
            };
            match event {
                "call:accept" => {
                    let answered = s.calls.answer(user, m.call_id).await;
                    if answered.is_ok() {
                        hub.elsewhere(Elsewhere::Answered, user.id, m.call_id, Some(origin));
                    }
                    to_value(answered)
                }
                "call:reject" => {
                    let rejected = s.calls.reject(user, m.call_id).await;
                    if rejected.is_ok() {
                        hub.elsewhere(Elsewhere::Rejected, user.id, m.call_id, Some(origin));
                    }
                    to_value(rejected)
                }
                _ => to_value(s.calls.end(user, m.call_id).await),
            }
        }
        "call:media" => {
            let m: MediaIn = match serde_json::from_str(data) {
                Ok(m) => m,
                Err(e) => return invalid(e),
            };
            let req = MediaRequest {
                audio_enabled: m.audio_enabled,
                video_enabled: m.video_enabled,
                screen_sharing: m.screen_sharing,
            };
            to_value(s.calls.media(user, m.call_id, req).await)
        }
        "call:stats" => {
            let m: StatsIn = match serde_json::from_str(data) {
                Ok(m) => m,
                Err(e) => return invalid(e),
            };
            let figures = Figures {
                rtt: m.rtt,
                jitter: m.jitter,
                packet_loss: m.packet_loss,
                bitrate: m.bitrate,
                relayed: m.relayed,
            };
            to_value(s.calls.record_stats(user, m.call_id, figures).await)
        }
        _ => return Reply::error("unknown_event", format!("unknown event `{event}`")),
    };
    match result {
        Ok(body) => Reply::Ack(body),
        Err(e) => {
            let e = ApiError::from(e);
            Reply::Error {
                code: e.code,
                message: e.message,
            }
        }
    }
}

/// A peer-to-peer message from `user` (`data` as JSON text): relayed at once, without waiting
/// on anything, so that a transport may do it where the message arrives.
pub fn relay(hub: &Hub, user: &User, signal: Signal, data: &str) -> Reply {
    if let Err(refused) = an_object(data) {
        return refused;
    }
    let m: SignalIn<'_> = match serde_json::from_str(data) {
        Ok(m) => m,
        Err(e) => return Reply::error("invalid_field", e.to_string()),
    };
    let payload = match signal {
        Signal::Offer => m.offer,
        Signal::Answer => m.answer,
        Signal::IceCandidate => m.candidate,
    };
    let Some(payload) = payload else {
        return Reply::error("invalid_field", format!("`{}` is required", signal.field()));
    };
    match hub.relay(user.id, m.call_id, m.target_user_id, signal, payload) {
        Ok(()) => Reply::Relayed,
        Err(e) => Reply::error(e.code(), e.to_string()),
    }
}

/// Every payload is an object; serde would also read a struct from an array, field by field.
fn an_object(data: &str) -> Result<(), Reply> {
    if data.trim_start().starts_with('{') {
        Ok(())
    } else {
        Err(Reply::error("invalid_field", "data: must be a JSON object"))
    }
}

fn to_value<T: serde::Serialize>(r: Result<T, CallError>) -> Result<serde_json::Value, CallError> {
    r.map(|v| serde_json::to_value(v).unwrap_or(serde_json::Value::Null))
}

/// A token bucket: [`RATE`] per second, [`BURST`] at once.
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Default for Bucket {
    fn default() -> Bucket {
        Bucket::new()
    }
}

impl Bucket {
    pub fn new() -> Bucket {
        Bucket {
            tokens: BURST,
            at: Instant::now(),
        }
    }

    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.at).min(Duration::from_secs(10));
        self.at = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * RATE).min(BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `candidate: null` (the end of the candidates) is a candidate, relayed as it is; a
    /// missing one is not. An offer or an answer must be there and not null.
    #[test]
    fn a_null_candidate_is_present_a_null_offer_is_not() {
        let call = Uuid::from_u128(1);
        let with = |field: &str, value: &str| {
            format!(r#"{{"callId":"{call}","targetUserId":"{call}","{field}":{value}}}"#)
        };
        let text = with("candidate", "null");
        let m: SignalIn<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!(m.candidate.map(RawValue::get), Some("null"));
        let text = with("candidate", r#"{"candidate":"","sdpMid":"0"}"#);
        let m: SignalIn<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!(
            m.candidate.map(RawValue::get),
            Some(r#"{"candidate":"","sdpMid":"0"}"#)
        );
        let text = with("offer", "null");
        let m: SignalIn<'_> = serde_json::from_str(&text).unwrap();
        assert!(m.offer.is_none() && m.candidate.is_none());
    }

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
