//! `/socket.io/`: the hub over Socket.IO v5 on Engine.IO v4, so that the spec's socket.io
//! clients work unchanged: the HTTP long-polling transport (where stock clients start), the
//! WebSocket transport, and the upgrade from the one to the other.
//!
//! The user authenticates with the REST API's JWT in the Socket.IO handshake, `io(url, {auth:
//! {token}})`, or `?token=` in the URL. A missing or bad token is refused with a
//! `connect_error` whose message says why, before the socket joins the hub.
//!
//! The events are those of `/ws` ([`crate::ws`]): the server pushes the call events; clients
//! emit `call:offer`, `call:answer`, `call:ice-candidate` (relayed), and `call:accept`,
//! `call:reject`, `call:end`, `call:media`, `call:stats` (performed). A socket's messages are
//! performed in the order it sent them. With an acknowledgement callback the answer is the
//! REST body, `{success: true}` for a relayed message, or `{error: {code, message}}`; without
//! one a refusal is an `error` event `{code, message, event}`. Binary attachments are refused.
//! The client's `socket.id` (the CONNECT answer's `sid`) is what a REST answer or rejection
//! names in `X-Socket-Id` to leave this socket out of `call:answered-elsewhere` and
//! `call:rejected-elsewhere`.
//!
//! # Why it is written here
//! The hub first used socketioxide. Measured with `bench/hub.sh` (heaptrack for the split),
//! 10,000 of its sockets took 250 MiB once each had been sent 32 messages: engineioxide gives
//! every socket a tokio channel of 168-byte packets, whose 32-slot blocks (5.4 KiB) it keeps
//! two of once the channel has wrapped, and three tasks (6 KiB more). The same sockets on
//! `/ws` took 90 MiB. What the hub needs of the protocol is small, and here a socket costs
//! what a `/ws` socket does: a session, one task and the WebSocket's buffers. Over a
//! WebSocket, packets are written by whoever has them ([`crate::wire`]), as on `/ws`.
//!
//! # The protocol, as spoken here
//! Engine.IO v4 (`EIO=4`; anything else is refused with HTTP 400 and the protocol's error
//! codes):
//! - a session opens with `GET ?transport=polling` (answered with the open packet `0{"sid",
//!   "upgrades": ["websocket"], "pingInterval", "pingTimeout", "maxPayload"}`) or with a
//!   WebSocket to `?transport=websocket` (the open packet is its first frame);
//! - polling: `GET ?sid=` waits for packets (joined with the record separator, 0x1e) and `POST
//!   ?sid=` carries the client's, answered `ok`; one GET at a time (a second ends the
//!   session);
//! - upgrade: a WebSocket with the session's `sid` sends `2probe`, is answered `3probe` while
//!   the waiting GET is answered with a noop (`6`), then sends `5`, after which everything
//!   goes over it;
//! - heartbeat: the server sends `2` every [`ws::PING_EVERY`] and ends a session that has not
//!   answered `3` by the next one; a session that is not connected to the hub within
//!   [`CONNECT_TIMEOUT`] is ended too;
//! - messages: `4` + a Socket.IO packet.
//!
//! Socket.IO v5, main namespace only (another gets `connect_error` "Invalid namespace"):
//! `0{auth}` connects (answered `0{"sid"}` or `4{"message"}`), `2[<ack id>]["event", data]`
//! is an event, `3<id>[...]` an acknowledgement, `1` a disconnect.
//!
//! Bounds are those of `/ws`: [`ws::MAX_FRAME`] per WebSocket message and per polling POST
//! (advertised as `maxPayload`), [`ws::RATE`] events per second, [`ws::QUEUE`] queued
//! messages per socket (a socket further behind is closed), [`ws::MAX_SOCKETS_PER_USER`]; and
//! at most [`MAX_PENDING`] sessions not connected yet.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use crate::api::ApiState;
use crate::call::User;
use crate::hub::{Message, Outbox, SocketId};
use crate::wire::{self, Conn, Incoming, NotWebSocket, Reader, Upgrade};
use crate::ws::{self, Bucket, Reply};

/// How long a session may go without connecting to the hub. Clients connect as soon as the
/// session opens; Socket.IO's own default (45 s) would let anyone hold sessions for nothing.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Sessions not connected to the hub yet, at most: a handshake needs no credentials, so this
/// bounds what anyone can take without them; a handshake beyond is answered 503.
pub const MAX_PENDING: usize = 16_384;
/// How long an upgrading WebSocket may take to send its probe and then its upgrade packet.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest ping a client may send (the server pings in v4; clients send none but the
/// probe, answered by the upgrade).
const MAX_PING: usize = 64;
/// A session's queue keeps at most this much room once drained.
const QUEUE_KEPT: usize = 16;

/// The Engine.IO sessions of `/socket.io/`.
pub struct Engine {
    state: Arc<ApiState>,
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    /// Sessions not connected to the hub.
    pending: AtomicUsize,
    /// Set by [`Engine::stop_polling`]: no new session opens.
    stopping: AtomicBool,
}

/// Where a session's packets to the client go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Polling,
    /// A WebSocket has sent its probe: the waiting GET is answered with a noop, and what is
    /// queued waits for the upgrade.
    Upgrading,
    Websocket,
}

/// One Engine.IO session, and the hub's socket once the client has connected.
struct Session {
    sid: Arc<str>,
    /// The `?token=` of the request that opened the session.
    token: Option<String>,
    opened: Instant,
    out: Mutex<Out>,
    /// Wakes the writer (the waiting GET, or the WebSocket task): a packet was queued, the
    /// transport changed, or the session was closed.
    wake: Notify,
    /// Wakes the polling heartbeat when the session is closed.
    closing: Notify,
    /// The client's packets are handled one at a time, in the order they came.
    inbound: tokio::sync::Mutex<Inbound>,
}

struct Out {
    /// Engine.IO packets for the client, while it polls (and until an upgrade is done).
    queue: VecDeque<String>,
    /// The WebSocket, once the session is on one: packets go straight to it.
    conn: Option<Arc<Conn>>,
    transport: Transport,
    /// Why the session ended, once it has.
    closed: Option<&'static str>,
    /// A GET is waiting.
    polling: bool,
    /// The hub's socket, once connected.
    socket: Option<(Uuid, SocketId)>,
    /// Counted in [`Engine::pending`]: neither connected nor ended yet.
    pending: bool,
    /// When the client was last heard from.
    heard: Instant,
    /// When the last ping went out.
    pinged: Option<Instant>,
}

#[derive(Default)]
struct Inbound {
    /// The user and the hub's socket, once connected.
    connected: Option<(User, SocketId)>,
    bucket: Bucket,
}

impl Session {
    fn out(&self) -> MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends the packet made of `parts` to the client: over its WebSocket, written as it is;
    /// while polling, queued. False when the session is closed, or when `bounded` and
    /// [`ws::QUEUE`] packets are waiting already.
    fn send(&self, parts: &[&str], bounded: bool) -> bool {
        {
            let mut o = self.out();
            if o.closed.is_some() {
                return false;
            }
            if let Some(conn) = &o.conn {
                return conn.send_text(parts, bounded);
            }
            if bounded && o.queue.len() >= ws::QUEUE {
                return false;
            }
            o.queue.push_back(parts.concat());
        }
        self.wake.notify_one();
        true
    }

    /// Queues an answer to the client, bounded as events are: a client that makes answers
    /// faster than it reads them is closed as a slow consumer.
    fn reply(&self, packet: String) {
        if !self.send(&[&packet], true) {
            self.close(SLOW);
        }
    }

    /// Marks the session closed (the first reason stays) and wakes whoever ends it. Over a
    /// WebSocket, its close: 1001 (going away) when the server stops or the client stopped
    /// answering, 1008 (policy) when it fell too far behind (nothing more goes to it), 1000
    /// otherwise; what is queued goes first.
    fn close(&self, reason: &'static str) {
        let conn = {
            let mut o = self.out();
            let reason = *o.closed.get_or_insert(reason);
            o.conn.clone().map(|c| (c, reason))
        };
        if let Some((conn, reason)) = conn {
            let code = match reason {
                ws::SHUTDOWN | ws::PING_TIMEOUT_REASON => wire::GOING_AWAY,
                SLOW => wire::POLICY,
                _ => wire::NORMAL,
            };
            conn.close(code, reason, reason != SLOW);
        }
        self.wake.notify_one();
        self.closing.notify_waiters();
    }

    fn heard(&self) {
        self.out().heard = Instant::now();
    }

    /// Whether the last ping went unanswered; otherwise records that a ping goes out.
    fn unanswered(&self, now: Instant) -> bool {
        let mut o = self.out();
        if o.pinged.is_some_and(|p| o.heard < p) {
            return true;
        }
        o.pinged = Some(now);
        false
    }

    fn connected(&self) -> bool {
        self.out().socket.is_some()
    }

    /// The queue's room back to [`QUEUE_KEPT`] once it is empty (a burst grew it).
    fn trim(o: &mut Out) {
        if o.queue.is_empty() && o.queue.capacity() > 4 * QUEUE_KEPT {
            o.queue.shrink_to(QUEUE_KEPT);
        }
    }
}

impl Outbox for Session {
    fn push(&self, m: &Message) -> bool {
        // `42["event",data]` (see `event_packet`), in its parts.
        self.send(&["42[\"", m.event, "\",", m.data.get(), "]"], true)
    }

    fn disconnect(&self, reason: &'static str) {
        self.close(reason);
    }

    /// Over a WebSocket: `2`, or closed if the last went unanswered. (A polling session has
    /// its own heartbeat task; one not connected yet is not the hub's, and is ended at
    /// [`CONNECT_TIMEOUT`].)
    fn pulse(&self) {
        if self.out().transport != Transport::Websocket {
            return;
        }
        if self.unanswered(Instant::now()) {
            self.close(ws::PING_TIMEOUT_REASON);
        } else {
            self.send(&["2"], false);
        }
    }
}

/// `42["event",data]`: an event for the client. Our event names are plain ASCII.
#[doc(hidden)] // pub for signaling/fuzz
pub fn event_packet(event: &str, data: &str) -> String {
    let mut p = String::with_capacity(event.len() + data.len() + 8);
    p.push_str("42[\"");
    p.push_str(event);
    p.push_str("\",");
    p.push_str(data);
    p.push(']');
    p
}

/// The open packet of session `sid`.
fn open_packet(sid: &str, upgrades: bool) -> String {
    format!(
        r#"0{{"sid":"{sid}","upgrades":[{}],"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
        if upgrades { r#""websocket""# } else { "" },
        ws::PING_EVERY.as_millis(),
        ws::PING_TIMEOUT.as_millis(),
        ws::MAX_FRAME,
    )
}

/// An Engine.IO error: HTTP 400 with the protocol's `{code, message}`.
struct Refused(u8, &'static str);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"code": self.0, "message": self.1});
        (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
    }
}

fn unknown_sid() -> Response {
    Refused(1, "Session ID unknown").into_response()
}

fn bad_request() -> Response {
    Refused(3, "Bad request").into_response()
}

fn text(body: String) -> Response {
    let content_type = [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")];
    (StatusCode::OK, content_type, body).into_response()
}

/// What an Engine.IO request's query says.
struct Query {
    websocket: bool,
    sid: Option<String>,
    token: Option<String>,
}

impl Query {
    fn parse(query: Option<&str>) -> Result<Query, Refused> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|_| Refused(3, "Bad request"))?;
        let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        if get("EIO").as_deref() != Some("4") {
            return Err(Refused(5, "Unsupported protocol version"));
        }
        let websocket = match get("transport").as_deref() {
            Some("polling") => false,
            Some("websocket") => true,
            _ => return Err(Refused(0, "Transport unknown")),
        };
        Ok(Query {
            websocket,
            sid: get("sid"),
            token: get("token"),
        })
    }
}

/// `GET /socket.io/`: a handshake, a poll, or a WebSocket (new, or upgrading a session).
async fn on_get(
    State(e): State<Arc<Engine>>,
    RawQuery(query): RawQuery,
    upgrade: Result<Upgrade, NotWebSocket>,
) -> Response {
    let q = match Query::parse(query.as_deref()) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    if q.websocket {
        let Ok(upgrade) = upgrade else {
            return bad_request();
        };
        let upgrading = match &q.sid {
            None => None,
            Some(sid) => match e.session(sid) {
                Some(s) if s.out().transport == Transport::Polling => Some(s),
                Some(_) => return bad_request(),
                None => return unknown_sid(),
            },
        };
        return upgrade.on_upgrade(move |conn, reader| async move {
            match upgrading {
                Some(s) => e.upgrade(s, conn, reader).await,
                None => e.websocket(q.token, conn, reader).await,
            }
        });
    }
    match q.sid {
        None => match e.open(q.token, Transport::Polling) {
            Some(s) => {
                tokio::spawn(e.clone().heartbeat(s.clone()));
                text(open_packet(&s.sid, true))
            }
            None => (StatusCode::SERVICE_UNAVAILABLE, "no session available").into_response(),
        },
        Some(sid) => match e.session(&sid) {
            Some(s) => e.poll(s).await,
            None => unknown_sid(),
        },
    }
}

/// `POST /socket.io/?sid=`: the client's packets, over polling.
async fn on_post(State(e): State<Arc<Engine>>, RawQuery(query): RawQuery, body: Body) -> Response {
    let q = match Query::parse(query.as_deref()) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    let Some(s) = q.sid.as_deref().and_then(|sid| e.session(sid)) else {
        return unknown_sid();
    };
    if q.websocket || s.out().transport == Transport::Websocket {
        return bad_request();
    }
    let Ok(bytes) = axum::body::to_bytes(body, ws::MAX_FRAME).await else {
        e.end(&s, "payload too large");
        return (StatusCode::PAYLOAD_TOO_LARGE, "payload too large").into_response();
    };
    let Ok(payload) = std::str::from_utf8(&bytes) else {
        return bad_request();
    };
    s.heard();
    let mut inbound = s.inbound.lock().await;
    for packet in payload.split('\x1e') {
        if !e.on_packet(&s, &mut inbound, packet).await {
            drop(inbound);
            e.end(&s, "client close");
            break;
        }
    }
    let content_type = [(header::CONTENT_TYPE, "text/html")];
    (StatusCode::OK, content_type, "ok").into_response()
}

/// Clears a session's `polling` flag when its GET ends, answered or dropped.
struct Polling<'a>(&'a Session);

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        self.0.out().polling = false;
    }
}

impl Engine {
    pub fn new(state: Arc<ApiState>) -> Arc<Engine> {
        Arc::new(Engine {
            state,
            sessions: Mutex::new(HashMap::new()),
            pending: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        })
    }

    /// The routes of `/socket.io/`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/socket.io/", get(on_get).post(on_post))
            .with_state(self.clone())
    }

    /// The first step of a stop: no new session, and the polling ones are closed, so that
    /// their waiting GETs are answered (with what is queued, and the close packet) instead
    /// of holding the HTTP drain. WebSocket sessions stay to hear their calls end.
    pub fn stop_polling(&self) {
        self.stopping.store(true, Ordering::Release);
        for s in self.all() {
            if s.out().transport != Transport::Websocket {
                s.close(ws::SHUTDOWN);
            }
        }
    }

    /// The last step of a stop: every session left is closed (those that never connected
    /// are not the hub's to close).
    pub fn close_all(&self) {
        for s in self.all() {
            s.close(ws::SHUTDOWN);
        }
    }

    fn all(&self) -> Vec<Arc<Session>> {
        self.sessions().values().cloned().collect()
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn session(&self, sid: &str) -> Option<Arc<Session>> {
        self.sessions().get(sid).cloned()
    }

    /// A new session; none past [`MAX_PENDING`], or once stopping.
    fn open(&self, token: Option<String>, transport: Transport) -> Option<Arc<Session>> {
        if self.stopping.load(Ordering::Acquire) {
            return None;
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let now = Instant::now();
        let sid: Arc<str> = Arc::from(Uuid::new_v4().simple().to_string());
        let s = Arc::new(Session {
            sid: sid.clone(),
            token,
            opened: now,
            out: Mutex::new(Out {
                queue: VecDeque::new(),
                conn: None,
                transport,
                closed: None,
                polling: false,
                socket: None,
                pending: true,
                heard: now,
                pinged: None,
            }),
            wake: Notify::new(),
            closing: Notify::new(),
            inbound: tokio::sync::Mutex::new(Inbound::default()),
        });
        self.sessions().insert(sid, s.clone());
        Some(s)
    }

    /// Ends `s`: closed, out of the table, and its socket out of the hub. Idempotent.
    fn end(&self, s: &Session, reason: &'static str) {
        s.close(reason);
        self.sessions().remove(&s.sid);
        let socket = {
            let mut o = s.out();
            if std::mem::take(&mut o.pending) {
                self.pending.fetch_sub(1, Ordering::AcqRel);
            }
            o.socket.take()
        };
        if let Some((user, id)) = socket {
            self.state.hub.detach(user, id);
        }
    }

    /// A polling session's heartbeat, and its connect deadline; it ends once a WebSocket has
    /// taken the session over.
    async fn heartbeat(self: Arc<Self>, s: Arc<Session>) {
        let connect_by = s.opened + CONNECT_TIMEOUT;
        let mut next_ping = s.opened + ws::PING_EVERY;
        loop {
            let until = if s.connected() {
                next_ping
            } else {
                next_ping.min(connect_by)
            };
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                () = s.closing.notified() => {}
            }
            let now = Instant::now();
            let (transport, closed) = {
                let o = s.out();
                (o.transport, o.closed)
            };
            if transport == Transport::Websocket {
                return;
            }
            if let Some(reason) = closed {
                return self.end(&s, reason);
            }
            if now >= connect_by && !s.connected() {
                return self.end(&s, "connect timeout");
            }
            if now >= next_ping {
                if s.unanswered(now) {
                    return self.end(&s, "ping timeout");
                }
                s.send(&["2"], false);
                next_ping = now + ws::PING_EVERY;
            }
        }
    }

    /// A polling GET: what is queued, at once or as soon as there is some.
    async fn poll(&self, s: Arc<Session>) -> Response {
        {
            let mut o = s.out();
            if o.transport == Transport::Websocket {
                return bad_request();
            }
            if o.polling {
                drop(o);
                self.end(&s, "overlapping polls");
                return bad_request();
            }
            o.polling = true;
        }
        let _polling = Polling(&s);
        loop {
            let (payload, closed) = {
                let mut o = s.out();
                if o.transport != Transport::Polling {
                    // Lets the client finish the upgrade; the queue waits for the WebSocket.
                    (Some("6".to_owned()), None)
                } else if !o.queue.is_empty() || o.closed.is_some() {
                    let mut packets: Vec<String> = o.queue.drain(..).collect();
                    Session::trim(&mut o);
                    if o.closed.is_some() {
                        packets.push("1".into());
                    }
                    (Some(packets.join("\x1e")), o.closed)
                } else {
                    (None, None)
                }
            };
            if let Some(payload) = payload {
                if let Some(reason) = closed {
                    self.end(&s, reason);
                }
                return text(payload);
            }
            // The heartbeat queues a ping every PING_EVERY: this bound only matters if it died.
            let wait = ws::PING_EVERY + ws::PING_TIMEOUT;
            if tokio::time::timeout(wait, s.wake.notified()).await.is_err() {
                return text("6".into());
            }
        }
    }

    /// A WebSocket without a session: the session opens on it.
    async fn websocket(self: Arc<Self>, token: Option<String>, conn: Arc<Conn>, reader: Reader) {
        let Some(s) = self.open(token, Transport::Websocket) else {
            return conn.close(wire::TRY_AGAIN_LATER, "too many sessions", false);
        };
        if !conn.send_text(&[&open_packet(&s.sid, false)], false) {
            return self.end(&s, "transport error");
        }
        s.out().conn = Some(conn.clone());
        self.serve(s, conn, reader).await;
    }

    /// A WebSocket upgrading polling session `s`: the probe, then the session goes over it.
    async fn upgrade(self: Arc<Self>, s: Arc<Session>, conn: Arc<Conn>, mut reader: Reader) {
        // Whether this WebSocket began the upgrade (and so must undo it if it fails).
        let mut began = false;
        let upgraded = tokio::time::timeout(UPGRADE_TIMEOUT, async {
            if !next_text_is(&mut reader, &conn, "2probe").await {
                return false;
            }
            {
                let mut o = s.out();
                if o.transport != Transport::Polling || o.closed.is_some() {
                    return false;
                }
                o.transport = Transport::Upgrading;
                began = true;
            }
            s.wake.notify_one();
            conn.send_text(&["3probe"], false) && next_text_is(&mut reader, &conn, "5").await
        })
        .await;
        let closed = {
            let mut o = s.out();
            if upgraded != Ok(true) {
                if began && o.transport == Transport::Upgrading {
                    o.transport = Transport::Polling;
                }
                return;
            }
            o.transport = Transport::Websocket;
            // What was queued while polling goes first, in order.
            for packet in o.queue.drain(..) {
                conn.send_text(&[&packet], false);
            }
            Session::trim(&mut o);
            o.conn = Some(conn.clone());
            o.closed
        };
        if let Some(reason) = closed {
            // Closed during the upgrade: the WebSocket closes the same way.
            s.close(reason);
        }
        s.wake.notify_one();
        self.serve(s, conn, reader).await;
    }

    /// Serves session `s` over its WebSocket until either side closes it; then ends it (the
    /// close frame goes out once this returns, see [`wire::Upgrade::on_upgrade`]).
    async fn serve(self: Arc<Self>, s: Arc<Session>, conn: Arc<Conn>, mut reader: Reader) {
        // Ends the session however this returns, a panic included.
        let _ending = Ending(&self, &s);
        let connect_by = tokio::time::sleep_until(s.opened + CONNECT_TIMEOUT);
        tokio::pin!(connect_by);
        let mut awaiting_connect = !s.connected();
        let reason = loop {
            tokio::select! {
                biased;
                () = conn.woken() => {
                    if conn.is_closing() {
                        break s.out().closed.unwrap_or("transport error");
                    }
                    // What the socket could not take at once. A peer that stopped reading
                    // blocks the write: bounded, then closed.
                    if !matches!(ws::bounded(ws::PING_TIMEOUT, conn.flush()).await, Some(Ok(()))) {
                        break "transport error";
                    }
                }
                () = &mut connect_by, if awaiting_connect => {
                    if !s.connected() {
                        break "connect timeout";
                    }
                    awaiting_connect = false;
                }
                incoming = reader.next(&conn) => {
                    let packet = match incoming {
                        Incoming::Text(t) => t,
                        // A binary attachment: its event was refused already.
                        Incoming::Binary | Incoming::Control => continue,
                        Incoming::Closed => break "transport close",
                    };
                    s.heard();
                    let mut inbound = s.inbound.lock().await;
                    if !self.on_packet(&s, &mut inbound, packet).await {
                        break "client close";
                    }
                }
            }
        };
        self.end(&s, reason);
    }

    /// One Engine.IO packet from the client. False when the client closes the session.
    /// Every message and ping counts against the socket's rate, connected or not.
    async fn on_packet(&self, s: &Arc<Session>, me: &mut Inbound, packet: &str) -> bool {
        match packet.as_bytes().first() {
            Some(b'4') => {
                let allowed = me.bucket.take();
                return self.on_message(s, me, &packet[1..], allowed).await;
            }
            Some(b'1') => return false,
            // A ping from the client (in v4 the server pings): answered, if short and within
            // the rate; a client that floods them is closed.
            Some(b'2') => {
                if packet.len() > MAX_PING || !me.bucket.take() {
                    return false;
                }
                s.reply(format!("3{}", &packet[1..]));
            }
            // Pongs and noops: being heard is all they do. Anything else is not ours to take.
            _ => {}
        }
        true
    }

    /// One Socket.IO packet (the data of an Engine.IO message); `allowed`: within the rate.
    /// False once the client has disconnected: nothing after it (in the same POST, say) is
    /// taken.
    async fn on_message(
        &self,
        s: &Arc<Session>,
        me: &mut Inbound,
        packet: &str,
        allowed: bool,
    ) -> bool {
        // (`get`: the first character may be any, not only an ASCII packet type.)
        let (Some(&kind), Some(mut rest)) = (packet.as_bytes().first(), packet.get(1..)) else {
            return true;
        };
        if matches!(kind, b'5' | b'6') {
            // `<attachments>-` comes first in a binary packet.
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            rest = rest[digits..].strip_prefix('-').unwrap_or(&rest[digits..]);
        }
        let (namespace, rest) = split_namespace(rest);
        match kind {
            // A connect over the rate: dropped (each is a token check).
            b'0' if !allowed => {}
            b'0' => self.on_connect(s, me, namespace, rest).await,
            // Not connected there: nothing to do, as a Socket.IO server does.
            _ if namespace != "/" || me.connected.is_none() => {}
            b'1' => {
                self.end(s, "client disconnect");
                me.connected = None;
                return false;
            }
            b'2' => self.on_event(s, me, rest, allowed).await,
            // Binary attachments would reach peers as placeholders: not taken.
            b'5' => {
                let (ack, body) = split_ack(rest);
                if !allowed {
                    answer(s, ack, "", rate_limited());
                    return true;
                }
                let event = split_event(body)
                    .map(|(event, _)| event)
                    .unwrap_or_default();
                let message = "binary attachments are not taken";
                answer(s, ack, &event, Reply::error("invalid_frame", message));
            }
            // Acknowledgements: the server asks for none.
            _ => {}
        }
        true
    }

    /// A Socket.IO CONNECT with `auth` (JSON, or empty).
    async fn on_connect(&self, s: &Arc<Session>, me: &mut Inbound, namespace: &str, auth: &str) {
        #[derive(Deserialize)]
        struct Auth {
            token: Option<String>,
        }
        let refuse = |message: String| {
            let body = serde_json::json!({"message": message});
            let comma = if namespace == "/" { "" } else { "," };
            let ns = if namespace == "/" { "" } else { namespace };
            s.reply(format!("44{ns}{comma}{body}"));
        };
        if namespace != "/" {
            return refuse("Invalid namespace".into());
        }
        if me.connected.is_some() {
            return;
        }
        let token = serde_json::from_str::<Auth>(auth)
            .ok()
            .and_then(|a| a.token)
            .or_else(|| s.token.clone());
        let header = token.map(|t| format!("Bearer {t}"));
        let hub = &self.state.hub;
        let user = match self.state.auth.user(header.as_deref()) {
            Ok(user) => user,
            Err(e) => return refuse(format!("{}: {e}", e.code())),
        };
        if hub.sockets_of(user.id) >= ws::MAX_SOCKETS_PER_USER {
            let max = ws::MAX_SOCKETS_PER_USER;
            return refuse(format!("too_many_sockets: at most {max} per user"));
        }
        // Named from this token in the calls, as a REST request would (before the socket can
        // be rung: the invitee of a call waiting for them is then named in it).
        if let Err(e) = self.state.calls.record_user(&user).await {
            tracing::warn!(user = %user.id, error = %e, "the user's name is not recorded");
        }
        // CONNECT goes out before anything the hub sends the new socket. Its id (the client's
        // `socket.id`, which a REST request may name in `X-Socket-Id`) is not the session's:
        // that one lets whoever knows it poll and post as the user.
        let name: Arc<str> = Arc::from(Uuid::new_v4().simple().to_string());
        s.reply(format!(r#"40{{"sid":"{name}"}}"#));
        match hub.attach_named(user.id, Some(name), s.clone()) {
            Ok(id) => {
                let mut o = s.out();
                if o.closed.is_some() {
                    drop(o);
                    hub.detach(user.id, id);
                    return;
                }
                o.socket = Some((user.id, id));
                if std::mem::take(&mut o.pending) {
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                }
                drop(o);
                me.connected = Some((user, id));
            }
            Err(e) => {
                let data = serde_json::json!({"code": e.code(), "message": e.to_string()});
                s.send(&[&event_packet("error", &data.to_string())], false);
                s.send(&["41"], false);
                s.close("refused");
            }
        }
    }

    /// A Socket.IO EVENT: `[<ack id>]["event", data]`.
    async fn on_event(&self, s: &Arc<Session>, me: &mut Inbound, packet: &str, allowed: bool) {
        let (ack, body) = split_ack(packet);
        let Some((user, origin)) = &me.connected else {
            return;
        };
        let Some((event, data)) = split_event(body) else {
            let message = "a message is [\"event\", data]";
            return answer(s, ack, "", Reply::error("invalid_frame", message));
        };
        if !allowed {
            return answer(s, ack, &event, rate_limited());
        }
        let state = &self.state;
        // (A socket that goes while this is performed, an answer say, is detached when the
        // session ends, which starts the reconnect grace if that left the user joined.)
        let reply = ws::dispatch(state, &state.hub, user, *origin, &event, data).await;
        answer(s, ack, &event, reply);
    }
}

/// Reads until a text frame (pings aside): whether it is `expected`.
async fn next_text_is(reader: &mut Reader, conn: &Conn, expected: &str) -> bool {
    loop {
        match reader.next(conn).await {
            Incoming::Text(t) => return t == expected,
            Incoming::Control => continue,
            Incoming::Binary | Incoming::Closed => return false,
        }
    }
}

/// Ends a session when dropped: [`Engine::serve`]'s cleanup, which a panic must not skip.
struct Ending<'a>(&'a Engine, &'a Session);

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        self.0.end(self.1, "transport error");
    }
}

/// Why a socket that fell too far behind is closed.
const SLOW: &str = "slow consumer";

fn rate_limited() -> Reply {
    Reply::error("rate_limited", "too many messages; slow down")
}

/// `/ns,rest` → (`/ns`, `rest`); without a leading `/`, the main namespace.
#[doc(hidden)] // pub for signaling/fuzz
pub fn split_namespace(packet: &str) -> (&str, &str) {
    if !packet.starts_with('/') {
        return ("/", packet);
    }
    match packet.find(',') {
        Some(i) => (&packet[..i], &packet[i + 1..]),
        None => (packet, ""),
    }
}

/// `12["e",{}]` → (Some(12), `["e",{}]`).
#[doc(hidden)] // pub for signaling/fuzz
pub fn split_ack(packet: &str) -> (Option<u64>, &str) {
    let digits = packet.bytes().take_while(u8::is_ascii_digit).count();
    (packet[..digits].parse().ok(), &packet[digits..])
}

/// `["event", data]` → the event's name and the data's JSON text (`null` without data).
#[doc(hidden)] // pub for signaling/fuzz
pub fn split_event(text: &str) -> Option<(String, &str)> {
    let parts: Vec<&RawValue> = serde_json::from_str(text).ok()?;
    let event: String = serde_json::from_str(parts.first()?.get()).ok()?;
    Some((event, parts.get(1).map_or("null", |d| d.get())))
}

/// Answers a client event: through its acknowledgement if it asked for one, else (for
/// refusals) an `error` event. A socket too far behind to take it is closed.
fn answer(s: &Session, ack: Option<u64>, event: &str, reply: Reply) {
    let packet = match (reply, ack) {
        (Reply::Relayed, Some(id)) => format!(r#"43{id}[{{"success":true}}]"#),
        (Reply::Ack(body), Some(id)) => format!("43{id}[{body}]"),
        (Reply::Relayed | Reply::Ack(_), None) => return,
        (Reply::Error { code, message }, Some(id)) => {
            let body = serde_json::json!({"error": {"code": code, "message": message}});
            format!("43{id}[{body}]")
        }
        (Reply::Error { code, message }, None) => {
            let data = serde_json::json!({"code": code, "message": message, "event": event});
            event_packet("error", &data.to_string())
        }
    };
    s.reply(packet);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_split_into_namespace_ack_and_event() {
        assert_eq!(
            split_namespace(r#"{"token":"t"}"#),
            ("/", r#"{"token":"t"}"#)
        );
        assert_eq!(split_namespace("/admin,{}"), ("/admin", "{}"));
        assert_eq!(split_namespace("/admin"), ("/admin", ""));
        assert_eq!(split_ack(r#"12["e",{}]"#), (Some(12), r#"["e",{}]"#));
        assert_eq!(split_ack(r#"["e"]"#), (None, r#"["e"]"#));
        // An id too long for u64 is dropped (the event is answered without an ack).
        let (id, rest) = split_ack("99999999999999999999999[\"e\"]");
        assert_eq!((id, split_event(rest).is_some()), (None, true));
        assert_eq!(
            split_event(r#"["call:end",{"callId":"x"}]"#),
            Some(("call:end".to_owned(), r#"{"callId":"x"}"#))
        );
        assert_eq!(
            split_event(r#"["call:end"]"#),
            Some(("call:end".to_owned(), "null"))
        );
        assert_eq!(split_event(r#"[1,{}]"#), None);
        assert_eq!(split_event(r#"{"a":1}"#), None);
        assert_eq!(split_event("[]"), None);
    }

    #[test]
    fn packets_out_are_socket_io_text() {
        assert_eq!(
            event_packet("call:ended", r#"{"a":1}"#),
            r#"42["call:ended",{"a":1}]"#
        );
        let open: serde_json::Value = serde_json::from_str(&open_packet("abc", true)[1..]).unwrap();
        assert_eq!(open["sid"], "abc");
        assert_eq!(open["upgrades"], serde_json::json!(["websocket"]));
        assert_eq!(open["pingInterval"], 25_000);
        assert_eq!(open["pingTimeout"], 20_000);
        assert_eq!(open["maxPayload"], ws::MAX_FRAME);
        let open: serde_json::Value =
            serde_json::from_str(&open_packet("abc", false)[1..]).unwrap();
        assert_eq!(open["upgrades"], serde_json::json!([]));
    }

    #[test]
    fn queries_name_the_protocol_and_the_transport() {
        let q = Query::parse(Some("EIO=4&transport=polling&t=x&sid=s1&token=a%2Bb"))
            .ok()
            .unwrap();
        assert_eq!(
            (q.websocket, q.sid.as_deref(), q.token.as_deref()),
            (false, Some("s1"), Some("a+b"))
        );
        let q = Query::parse(Some("EIO=4&transport=websocket"))
            .ok()
            .unwrap();
        assert!(q.websocket && q.sid.is_none());
        for bad in [
            None,
            Some("EIO=3&transport=polling"),
            Some("EIO=4"),
            Some("EIO=4&transport=flash"),
        ] {
            let r = Query::parse(bad).err().unwrap().into_response();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }
}
