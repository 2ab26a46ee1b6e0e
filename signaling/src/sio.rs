//! `/socket.io/`: the hub over Socket.IO v5 / Engine.IO v4 (socketioxide does the framing;
//! polling and websocket transports both on), so that the spec's socket.io clients work
//! unchanged.
//!
//! The user authenticates with the REST API's JWT in the handshake, `io(url, {auth: {token}})`,
//! or `?token=` in the URL. A missing or bad token is refused with a `connect_error` whose
//! message says why, before the socket exists.
//!
//! The events are those of `/ws` ([`crate::ws`]): the server pushes the call events; clients
//! emit `call:offer`, `call:answer`, `call:ice-candidate` (relayed), and `call:accept`,
//! `call:reject`, `call:end`, `call:media`, `call:stats` (performed). A socket's messages are
//! performed in the order it sent them. With an acknowledgement callback the
//! answer is the REST body, `{success: true}` for a relayed message, or `{error: {code,
//! message}}`; without one a refusal is an `error` event `{code, message, event}`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use axum::http::{HeaderMap, HeaderValue, Request};
use socketioxide::service::SocketIoService;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Deserialize;
use serde_json::value::RawValue;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts, MessageHandler, Value as SioValue};
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::Socket;
use socketioxide::SocketIo;
use tokio::sync::{mpsc, Notify};

use crate::api::ApiState;
use crate::call::User;
use crate::hub::{Message, Outbox, Signal, SocketId};
use crate::ws::{self, Reply};

/// The handshake's `auth` payload.
#[derive(Deserialize)]
struct Handshake {
    token: Option<String>,
}

/// The hub's side of a Socket.IO socket: socketioxide's own bounded buffer is the queue.
/// `rt` runs what cannot be done at once (the hub may call from the store's thread).
struct SioOutbox {
    socket: SocketRef,
    rt: tokio::runtime::Handle,
}

impl Outbox for SioOutbox {
    fn push(&self, m: &Message) -> bool {
        self.socket.emit(m.event, &*m.data).is_ok()
    }

    fn disconnect(&self, _reason: &'static str) {
        close(&self.socket, &self.rt);
    }
}

/// Closes `s`. socketioxide sends a DISCONNECT packet first and does not close a socket whose
/// outgoing buffer is full (which is why a slow consumer is closed): then it is tried again,
/// every [`CLOSE_RETRY`] for at most [`CLOSE_TRIES`] times (the transport's own heartbeat ends
/// a peer that reads nothing at all).
fn close(s: &SocketRef, rt: &tokio::runtime::Handle) {
    if s.clone().disconnect().is_ok() {
        return;
    }
    let s = s.clone();
    rt.spawn(async move {
        for _ in 0..CLOSE_TRIES {
            tokio::time::sleep(CLOSE_RETRY).await;
            if !s.connected() || s.clone().disconnect().is_ok() {
                return;
            }
        }
        tracing::debug!(socket = %s.id, "a socket could not be closed: its buffer stayed full");
    });
}

const CLOSE_RETRY: std::time::Duration = std::time::Duration::from_millis(50);
const CLOSE_TRIES: u32 = 200;

/// Why a handshake is refused: the `connect_error` message.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The layer serving `/socket.io/`, bound to `state`.
pub fn layer(state: Arc<ApiState>) -> Layer {
    Layer(socket_io(state))
}

/// [`layer`]: socketioxide's, with the requests it keeps copied out of hyper's read buffer.
#[derive(Clone)]
pub struct Layer(SocketIoLayer);

impl<S: Clone> tower_layer::Layer<S> for Layer {
    type Service = OwnHead<SocketIoService<S>>;

    fn layer(&self, inner: S) -> Self::Service {
        OwnHead(self.0.layer(inner))
    }
}

/// Gives socketioxide requests whose head owns its bytes. hyper parses a request's URI and
/// header values as slices of the connection's read buffer (8 KiB), and a Socket.IO socket
/// keeps its request's head for its whole life: without the copy every socket held that
/// buffer, a third of its memory.
#[derive(Clone)]
pub struct OwnHead<S>(S);

impl<S, B> tower_service::Service<Request<B>> for OwnHead<S>
where
    S: tower_service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> S::Future {
        // Only what socketioxide answers (its default path); the rest is the router's.
        if req.uri().path().starts_with("/socket.io") {
            self.0.call(own_head(req))
        } else {
            self.0.call(req)
        }
    }
}

fn own_head<B>(req: Request<B>) -> Request<B> {
    let (mut head, body) = req.into_parts();
    if let Ok(uri) = head.uri.to_string().parse() {
        head.uri = uri;
    }
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for (name, value) in &head.headers {
        let owned = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        headers.append(name.clone(), owned);
    }
    head.headers = headers;
    Request::from_parts(head, body)
}

fn socket_io(state: Arc<ApiState>) -> SocketIoLayer {
    let (layer, io) = SocketIo::builder()
        .max_buffer_size(ws::QUEUE)
        .max_payload(ws::MAX_FRAME as u64)
        // max_payload bounds polling bodies; these bound websocket messages.
        .ws_max_message_size(ws::MAX_FRAME)
        .ws_max_frame_size(ws::MAX_FRAME)
        .ws_read_buffer_size(ws::READ_BUFFER)
        .ping_interval(ws::PING_EVERY)
        .ping_timeout(ws::PING_TIMEOUT)
        .build_layer();
    let auth_state = state.clone();
    let authenticate = move |s: SocketRef, TryData(auth): TryData<Handshake>| {
        let state = auth_state.clone();
        async move {
            let token = auth
                .ok()
                .and_then(|h| h.token)
                .or_else(|| ws::query_token(s.req_parts().uri.query()));
            let header = token.map(|t| format!("Bearer {t}"));
            let user = state
                .auth
                .user(header.as_deref())
                .map_err(|e| Refused(format!("{}: {e}", e.code())))?;
            if state.hub.sockets_of(user.id) >= ws::MAX_SOCKETS_PER_USER {
                return Err(Refused(format!(
                    "too_many_sockets: at most {} per user",
                    ws::MAX_SOCKETS_PER_USER
                )));
            }
            s.extensions.insert(user);
            Ok::<(), Refused>(())
        }
    };
    io.ns("/", OnConnect(state).with(authenticate));
    layer
}

/// The connect handler. Synchronous, like [`OnMessage`]: socketioxide sends CONNECT and then
/// calls it, and an async handler would run on a task of its own, leaving a window in which
/// a client's first messages found no message handler yet (and were dropped).
#[derive(Clone)]
struct OnConnect(Arc<ApiState>);

impl ConnectHandler<LocalAdapter, Inline> for OnConnect {
    fn call(&self, s: Arc<Socket<LocalAdapter>>, _auth: Option<SioValue>) {
        connected(self.0.clone(), SocketRef::from(s));
    }
}

fn connected(state: Arc<ApiState>, s: SocketRef) {
    let Some(user) = s.extensions.get::<User>() else {
        let _ = s.disconnect();
        return;
    };
    let rt = tokio::runtime::Handle::current();
    let outbox = SioOutbox {
        socket: s.clone(),
        rt: rt.clone(),
    };
    let id = match state.hub.attach(user.id, Arc::new(outbox)) {
        Ok(id) => id,
        Err(e) => {
            let _ = s.emit(
                "error",
                &serde_json::json!({"code": e.code(), "message": e.to_string()}),
            );
            let _ = s.disconnect();
            return;
        }
    };
    let hub = state.hub.clone();
    let gone = user.id;
    let closed = Arc::new(Closed::default());
    let closing = closed.clone();
    s.on_disconnect(move || {
        let (hub, closing) = (hub.clone(), closing.clone());
        async move {
            closing.gone.store(true, Ordering::Release);
            hub.detach(gone, id);
            // The performing task holds the socket: it must be told to end.
            closing.notify.notify_one();
        }
    });
    let inbound = Arc::new(Inbound {
        state,
        user,
        origin: id,
        closed,
        rt,
        bucket: Mutex::new(ws::Bucket::new()),
        pending: AtomicUsize::new(0),
        queue: OnceLock::new(),
    });
    s.on_fallback(OnMessage(inbound));
}

/// Messages waiting for the performing task, at most.
const MAX_PENDING: usize = 1024;

/// One socket's incoming side.
struct Inbound {
    state: Arc<ApiState>,
    user: User,
    origin: SocketId,
    /// Told when the socket is gone.
    closed: Arc<Closed>,
    rt: tokio::runtime::Handle,
    bucket: Mutex<ws::Bucket>,
    /// Messages handed to the performing task and not yet performed.
    pending: AtomicUsize,
    /// The performing task's queue, made with the task for the first message that needs it
    /// (a socket that only signals never has one: memory per socket is the hub's bound).
    queue: OnceLock<mpsc::UnboundedSender<Item>>,
}

/// The socket is gone: a flag, and a wake-up for the performing task.
#[derive(Default)]
struct Closed {
    gone: std::sync::atomic::AtomicBool,
    notify: Notify,
}

/// A message for the performing task.
struct Item {
    event: String,
    /// The data as JSON text (`null` when the message has none).
    data: String,
    ack: Option<AckSender>,
}

/// The socket's message handler. socketioxide calls it for each message in arrival order, on
/// the connection's own task, and would spawn a task per message for an async handler, which
/// would then finish in any order (and an offer must reach the peer before its candidates).
/// So it is synchronous: a relayed message (the bulk of the traffic) is relayed right here
/// when nothing is waiting before it; anything else, or anything behind a message still being
/// performed, goes in order to the socket's performing task (transitions await the store).
struct OnMessage(Arc<Inbound>);

/// [`OnMessage`]'s marker for socketioxide's handler trait.
struct Inline;

impl MessageHandler<LocalAdapter, Inline> for OnMessage {
    fn call(&self, s: Arc<Socket<LocalAdapter>>, mut v: SioValue, ack_id: Option<i64>) {
        let me = &self.0;
        let socket = match SocketRef::from_message_parts(&s, &mut v, &ack_id) {
            Ok(socket) => socket,
            Err(never) => match never {},
        };
        let ack = match ack_id {
            Some(_) => AckSender::from_message_parts(&s, &mut v, &ack_id).ok(),
            None => None,
        };
        let text = match &v {
            // Binary attachments would reach peers as placeholders: not taken.
            SioValue::Str(text, None) => Some(&**text),
            SioValue::Str(text, Some(bins)) if bins.is_empty() => Some(&**text),
            _ => None,
        };
        let Some((event, data)) = text.and_then(split) else {
            let refused = Reply::Error {
                code: "invalid_frame",
                message: "a message is [\"event\", data] (binary attachments are not taken)".into(),
            };
            return answer(&socket, ack, "", refused);
        };
        if !me.bucket.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let limited = Reply::Error {
                code: "rate_limited",
                message: "too many messages; slow down".into(),
            };
            return answer(&socket, ack, &event, limited);
        }
        let idle = me.pending.load(Ordering::Acquire) == 0;
        if let (Some(signal), true) = (Signal::from_event(&event), idle) {
            let reply = ws::relay(&me.state.hub, &me.user, signal, data);
            return answer(&socket, ack, &event, reply);
        }
        // Bounded: a client that sends faster than its messages are performed is closed, as
        // a slow consumer is.
        if me.pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING {
            me.pending.fetch_sub(1, Ordering::AcqRel);
            close(&socket, &me.rt);
            return;
        }
        let data = data.to_owned();
        let queue = me.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(perform_in_order(
                Arc::downgrade(&self.0),
                socket.clone(),
                rx,
            ));
            tx
        });
        let _ = queue.send(Item { event, data, ack });
    }
}

/// `["event", data]` → the event's name and the data's JSON text (`null` without data).
fn split(text: &str) -> Option<(String, &str)> {
    let parts: Vec<&RawValue> = serde_json::from_str(text).ok()?;
    let event: String = serde_json::from_str(parts.first()?.get()).ok()?;
    Some((event, parts.get(1).map_or("null", |d| d.get())))
}

/// Performs a socket's queued messages in order, each to its end (transitions await the
/// store).
async fn perform_in_order(
    inbound: std::sync::Weak<Inbound>,
    s: SocketRef,
    mut rx: mpsc::UnboundedReceiver<Item>,
) {
    let Some(me) = inbound.upgrade() else { return };
    let (state, user, origin) = (me.state.clone(), me.user.clone(), me.origin);
    let closed = me.closed.clone();
    drop(me);
    loop {
        let item = tokio::select! {
            biased;
            () = closed.notify.notified() => break,
            got = rx.recv() => match got {
                Some(got) => got,
                None => break,
            },
        };
        // What is still queued when the socket goes is not performed.
        if closed.gone.load(Ordering::Acquire) {
            break;
        }
        let reply = ws::dispatch(&state, &state.hub, &user, origin, &item.event, &item.data).await;
        if closed.gone.load(Ordering::Acquire) {
            // The socket went while this was performed (an answer, say): if that left the
            // user joined with no socket, the reconnect grace must start now.
            state.hub.recheck_presence(user.id);
        }
        answer(&s, item.ack, &item.event, reply);
        match inbound.upgrade() {
            Some(q) => q.pending.fetch_sub(1, Ordering::AcqRel),
            None => break,
        };
    }
}

/// Answers a message: through its acknowledgement if it asked for one, else (for refusals) an
/// `error` event.
fn answer(s: &SocketRef, ack: Option<AckSender>, event: &str, reply: Reply) {
    let body = match (reply, ack.is_some()) {
        (Reply::Relayed, true) => serde_json::json!({"success": true}),
        (Reply::Ack(body), true) => body,
        (Reply::Relayed | Reply::Ack(_), false) => return,
        (Reply::Error { code, message }, true) => {
            serde_json::json!({"error": {"code": code, "message": message}})
        }
        (Reply::Error { code, message }, false) => {
            let data = serde_json::json!({"code": code, "message": message, "event": event});
            let _ = s.emit("error", &data);
            return;
        }
    };
    if let Some(ack) = ack {
        let _ = ack.send(&body);
    }
}
