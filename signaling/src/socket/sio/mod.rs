//! `/socket.io/`: the hub over Socket.IO v5 on Engine.IO v4, so that the spec's socket.io
//! clients work unchanged: the HTTP long-polling transport (where stock clients start), the
//! WebSocket transport, and the upgrade from the one to the other.
//!
//! The user authenticates with the REST API's JWT in the Socket.IO handshake, `io(url, {auth:
//! {token}})`, or `?token=` in the URL. A missing or bad token is refused with a
//! `connect_error` whose message says why, before the socket joins the hub.
//!
//! The events are those of `/ws` ([`super::ws`], typed in [`super::client`]): the server pushes the call events; clients
//! emit `call:offer`, `call:answer`, `call:ice-candidate` (relayed), and `call:accept`,
//! `call:reject`, `call:end`, `call:media`, `call:stats` (performed), and `auth:refresh` (a
//! fresh token, see [`super::lease`]: the server warns with `auth:expiring` and disconnects a
//! socket not refreshed by its token's `exp`). A socket's messages are
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
//! WebSocket, packets are written by whoever has them ([`super::wire`]), as on `/ws`.
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
//! - heartbeat: the server sends `2` every [`limits::PING_EVERY`] and ends a session that has not
//!   answered `3` by the next one; a session that is not connected to the hub within
//!   [`CONNECT_TIMEOUT`] is ended too;
//! - messages: `4` + a Socket.IO packet.
//!
//! Socket.IO v5, main namespace only (another gets `connect_error` "Invalid namespace"):
//! `0{auth}` connects (answered `0{"sid"}` or `4{"message"}`), `2[<ack id>]["event", data]`
//! is an event, `3<id>[...]` an acknowledgement, `1` a disconnect.
//!
//! Bounds are those of `/ws`: [`limits::MAX_AUTHENTICATED_FRAME`] per WebSocket message and
//! per polling POST once the session has connected to the hub, [`limits::MAX_FRAME`] before
//! (advertised as `maxPayload` in the open packet, which comes before; engine.io-client uses it
//! only to split what it batches into one POST, and sends a larger packet alone),
//! [`limits::RATE`] events per second, [`limits::QUEUE`] queued
//! messages per socket (a socket further behind is closed; relays to a user are refused to their
//! sender past [`limits::RELAY_QUEUE`] and [`limits::RELAY_BYTES_PER_USER`]), [`limits::MAX_SOCKETS_PER_USER`]; and
//! at most [`MAX_PENDING`] sessions not connected yet, [`MAX_PENDING_PER_SOURCE`] of them from one
//! source (an IPv4 address, an IPv6 /64).
//!
//! # Layout
//! This file holds the engine and its sessions (open, heartbeat, end); `packet.rs` the packet
//! text in and out; `polling.rs` the HTTP long-polling transport; `websocket.rs` the WebSocket
//! transport and the upgrade; `socketio.rs` what a client's packets do.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use super::close_code;
use super::lease::Lease;
use super::limits::{self, Bucket};
use super::wire::Conn;
use crate::api::ApiState;
use crate::call::User;
use crate::hub::{Backlog, DisconnectReason, Message, Outbox, SocketId};
use crate::source::{ClientAddr, Source};

mod packet;
mod polling;
mod socketio;
mod websocket;

#[doc(hidden)] // pub for signaling/fuzz
pub use packet::{event_packet, split_ack, split_event, split_namespace};
use polling::{on_get, on_post};

/// How long a session may go without connecting to the hub. Clients connect as soon as the
/// session opens; Socket.IO's own default (45 s) would let anyone hold sessions for nothing.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Sessions not connected to the hub yet, at most: a handshake needs no credentials, so this
/// bounds what anyone can take without them; a handshake beyond is answered 503.
pub const MAX_PENDING: usize = 16_384;
/// Sessions not connected to the hub yet of one source (an IPv4 address or an IPv6 /64, see
/// [`Source`]), at most; a handshake beyond is answered 429. A client connects as soon as its
/// session opens, so a source has more pending only if it opens sessions it does not use: one
/// source takes at most this share of [`MAX_PENDING`], and filling the pool takes
/// `MAX_PENDING / MAX_PENDING_PER_SOURCE` sources.
pub const MAX_PENDING_PER_SOURCE: usize = 128;
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
    /// The same, by source (none counted for a request without a [`ClientAddr`]).
    pending_by_source: Mutex<HashMap<Source, usize>>,
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
    /// Where the request that opened it came from, if known.
    source: Option<Source>,
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
    closed: Option<DisconnectReason>,
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
    /// The user, the hub's socket and its lease, once connected.
    connected: Option<(User, SocketId, Arc<Lease>)>,
    bucket: Bucket,
}

impl Session {
    fn out(&self) -> MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends the packet made of `parts` to the client: over its WebSocket, written as it is;
    /// while polling, queued. False when the session is closed, or when `bounded` and
    /// [`limits::QUEUE`] packets are waiting already.
    fn send(&self, parts: &[&str], bounded: bool) -> bool {
        {
            let mut o = self.out();
            if o.closed.is_some() {
                return false;
            }
            if let Some(conn) = &o.conn {
                return conn.send_text(parts, bounded);
            }
            if bounded && o.queue.len() >= limits::QUEUE {
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
            self.close(DisconnectReason::SlowConsumer);
        }
    }

    /// Tells the client why its socket goes (an `error` event `{code, message}`), disconnects
    /// it from the namespace and closes the session: a token that expired or was revoked.
    fn kick(&self, code: &str, message: &str, reason: DisconnectReason) {
        let data = serde_json::json!({"code": code, "message": message});
        self.send(&[&event_packet("error", &data.to_string())], false);
        self.send(&["41"], false);
        self.close(reason);
    }

    /// Marks the session closed (the first reason stays) and wakes whoever ends it. Over a
    /// WebSocket, its close: 1001 (going away) when the server stops or the client stopped
    /// answering, 1008 (policy) when it fell too far behind (nothing more goes to it), 1000
    /// otherwise; what is queued goes first.
    fn close(&self, reason: DisconnectReason) {
        let conn = {
            let mut o = self.out();
            let reason = *o.closed.get_or_insert(reason);
            o.conn.clone().map(|c| (c, reason))
        };
        if let Some((conn, reason)) = conn {
            let flush = reason != DisconnectReason::SlowConsumer;
            conn.close(close_code(reason), reason.as_str(), flush);
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

    /// A revoked user's socket is told why first, as one whose token expired is.
    fn disconnect(&self, reason: DisconnectReason) {
        if reason == DisconnectReason::Revoked {
            let revoked = crate::auth::AuthError::Revoked;
            return self.kick(revoked.code(), &revoked.to_string(), reason);
        }
        self.close(reason);
    }

    fn backlog(&self) -> Backlog {
        let o = self.out();
        match &o.conn {
            Some(conn) => conn.backlog(),
            None => Backlog {
                messages: o.queue.len(),
                bytes: o.queue.iter().map(String::len).sum(),
            },
        }
    }

    /// Over a WebSocket: `2`, or closed if the last went unanswered. (A polling session has
    /// its own heartbeat task; one not connected yet is not the hub's, and is ended at
    /// [`CONNECT_TIMEOUT`].)
    fn pulse(&self) {
        if self.out().transport != Transport::Websocket {
            return;
        }
        if self.unanswered(Instant::now()) {
            self.close(DisconnectReason::PingTimeout);
        } else {
            self.send(&["2"], false);
        }
    }
}

impl Engine {
    pub fn new(state: Arc<ApiState>) -> Arc<Engine> {
        Arc::new(Engine {
            state,
            sessions: Mutex::new(HashMap::new()),
            pending: AtomicUsize::new(0),
            pending_by_source: Mutex::new(HashMap::new()),
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
                s.close(DisconnectReason::ServerShutdown);
            }
        }
    }

    /// The last step of a stop: every session left is closed (those that never connected
    /// are not the hub's to close).
    pub fn close_all(&self) {
        for s in self.all() {
            s.close(DisconnectReason::ServerShutdown);
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

    /// A new session for a request from `client`; none past [`MAX_PENDING`] or
    /// [`MAX_PENDING_PER_SOURCE`], or once stopping.
    fn open(
        &self,
        token: Option<String>,
        client: Option<ClientAddr>,
        transport: Transport,
    ) -> Result<Arc<Session>, NoSession> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(NoSession::Full);
        }
        let source = client.map(ClientAddr::source);
        if let Some(source) = source {
            let mut by_source = self.by_source();
            let n = by_source.entry(source).or_insert(0);
            if *n >= MAX_PENDING_PER_SOURCE {
                return Err(NoSession::SourceFull);
            }
            *n += 1;
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.unpend_source(source);
            return Err(NoSession::Full);
        }
        let now = Instant::now();
        let sid: Arc<str> = Arc::from(Uuid::new_v4().simple().to_string());
        let s = Arc::new(Session {
            sid: sid.clone(),
            token,
            source,
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
        Ok(s)
    }

    fn by_source(&self) -> MutexGuard<'_, HashMap<Source, usize>> {
        self.pending_by_source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn unpend_source(&self, source: Option<Source>) {
        let Some(source) = source else { return };
        let mut by_source = self.by_source();
        if let Some(n) = by_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                by_source.remove(&source);
            }
        }
    }

    /// `s` is no longer pending (connected, or ended): uncounted, once.
    fn unpend(&self, s: &Session, o: &mut Out) {
        if std::mem::take(&mut o.pending) {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.unpend_source(s.source);
        }
    }

    /// Ends `s`: closed, out of the table, and its socket out of the hub. Idempotent.
    fn end(&self, s: &Session, reason: DisconnectReason) {
        s.close(reason);
        self.sessions().remove(&s.sid);
        let socket = {
            let mut o = s.out();
            self.unpend(s, &mut o);
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
        let mut next_ping = s.opened + limits::PING_EVERY;
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
                return self.end(&s, DisconnectReason::ConnectTimeout);
            }
            if now >= next_ping {
                if s.unanswered(now) {
                    return self.end(&s, DisconnectReason::PingTimeout);
                }
                s.send(&["2"], false);
                next_ping = now + limits::PING_EVERY;
            }
        }
    }
}

/// Why no session opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NoSession {
    /// [`MAX_PENDING`] are pending, or the server is stopping.
    Full,
    /// The request's source has [`MAX_PENDING_PER_SOURCE`] pending.
    SourceFull,
}

/// Ends a session when dropped: [`Engine::serve`]'s cleanup, which a panic must not skip.
struct Ending<'a>(&'a Engine, &'a Session);

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        self.0.end(self.1, DisconnectReason::TransportError);
    }
}
