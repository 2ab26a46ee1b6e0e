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
//! `call:reject`, `call:end`, `call:media` (performed). With an acknowledgement callback the
//! answer is the REST body, `{success: true}` for a relayed message, or `{error: {code,
//! message}}`; without one a refusal is an `error` event `{code, message, event}`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::{ConnectHandler as _, FromMessageParts};
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::Socket;
use socketioxide::SocketIo;
use tokio::sync::{mpsc, Notify};

use crate::api::ApiState;
use crate::call::User;
use crate::hub::{Message, Outbox, SocketId};
use crate::ws::{self, Reply};

/// The handshake's `auth` payload.
#[derive(Deserialize)]
struct Handshake {
    token: Option<String>,
}

/// The hub's side of a Socket.IO socket: socketioxide's own bounded buffer is the queue.
struct SioOutbox(SocketRef);

impl Outbox for SioOutbox {
    fn push(&self, m: &Message) -> bool {
        self.0.emit(m.event, &*m.data).is_ok()
    }

    fn disconnect(&self, _reason: &'static str) {
        let _ = self.0.clone().disconnect();
    }
}

/// Why a handshake is refused: the `connect_error` message.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The layer serving `/socket.io/`, bound to `state`.
pub fn layer(state: Arc<ApiState>) -> SocketIoLayer {
    let (layer, io) = SocketIo::builder()
        .max_buffer_size(ws::QUEUE)
        .max_payload(ws::MAX_FRAME as u64)
        // max_payload bounds polling bodies; these bound websocket messages.
        .ws_max_message_size(ws::MAX_FRAME)
        .ws_max_frame_size(ws::MAX_FRAME)
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
    io.ns(
        "/",
        (move |s: SocketRef| {
            let state = state.clone();
            async move { connected(state, s) }
        })
        .with(authenticate),
    );
    layer
}

fn connected(state: Arc<ApiState>, s: SocketRef) {
    let Some(user) = s.extensions.get::<User>() else {
        let _ = s.disconnect();
        return;
    };
    let id = match state.hub.attach(user.id, Arc::new(SioOutbox(s.clone()))) {
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
    let closed = Arc::new(Notify::new());
    let closing = closed.clone();
    s.on_disconnect(move || {
        let (hub, closing) = (hub.clone(), closing.clone());
        async move {
            hub.detach(gone, id);
            // The performing task holds the socket: it must be told to end.
            closing.notify_one();
        }
    });
    // socketioxide runs each message's handler in a task of its own, so handlers finish in any
    // order; but an offer must reach the peer before its candidates. Messages are numbered
    // while socketioxide still takes them in order (the `Arrival` extractor), and one task per
    // socket performs them in that order.
    let (tx, rx) = mpsc::unbounded_channel();
    let sequencer = Arc::new(Sequencer {
        next: AtomicU64::new(0),
        pending: AtomicUsize::new(0),
        tx,
    });
    s.extensions.insert(sequencer.clone());
    tokio::spawn(perform_in_order(
        state,
        user,
        id,
        s.clone(),
        sequencer.clone(),
        rx,
        closed,
    ));
    s.on_fallback(
        move |s: SocketRef,
              Event(event): Event,
              TryData(data): TryData<Value>,
              AckWanted(wanted): AckWanted,
              ack: AckSender,
              Arrival(seq): Arrival| {
            let sequencer = sequencer.clone();
            async move {
                let Some(seq) = seq else { return };
                // Bounded: a client that sends faster than its messages are performed is
                // closed, as a slow consumer is.
                if sequencer.pending.fetch_add(1, Ordering::Relaxed) >= MAX_PENDING {
                    let _ = s.disconnect();
                    return;
                }
                let item = Item {
                    event,
                    data,
                    ack: wanted.then_some(ack),
                };
                let _ = sequencer.tx.send((seq, item));
            }
        },
    );
}

/// Messages taken from one socket and not performed yet, at most.
const MAX_PENDING: usize = 1024;

/// One socket's message numbering, and the queue to its performing task.
struct Sequencer {
    next: AtomicU64,
    pending: AtomicUsize,
    tx: mpsc::UnboundedSender<(u64, Item)>,
}

/// A message to perform.
struct Item {
    event: String,
    data: Result<Value, socketioxide::ParserError>,
    ack: Option<AckSender>,
}

/// A message's number in its socket's arrival order (`None` without a sequencer).
struct Arrival(Option<u64>);

impl<A: Adapter> FromMessageParts<A> for Arrival {
    type Error = std::convert::Infallible;

    fn from_message_parts(
        s: &Arc<Socket<A>>,
        _: &mut socketioxide::handler::Value,
        _: &Option<i64>,
    ) -> Result<Arrival, Self::Error> {
        let seq = s.extensions.get::<Arc<Sequencer>>();
        Ok(Arrival(seq.map(|q| q.next.fetch_add(1, Ordering::Relaxed))))
    }
}

/// Performs a socket's messages in their arrival order, each to its end (actions await the
/// store), rate limited like `/ws`.
async fn perform_in_order(
    state: Arc<ApiState>,
    user: User,
    origin: SocketId,
    s: SocketRef,
    sequencer: Arc<Sequencer>,
    mut rx: mpsc::UnboundedReceiver<(u64, Item)>,
    closed: Arc<Notify>,
) {
    let sequencer = Arc::downgrade(&sequencer);
    let mut next = 0u64;
    let mut early = BTreeMap::new();
    let mut bucket = ws::Bucket::new();
    loop {
        let (seq, item) = tokio::select! {
            got = rx.recv() => match got {
                Some(got) => got,
                None => break,
            },
            () = closed.notified() => break,
        };
        early.insert(seq, item);
        while let Some(item) = early.remove(&next) {
            next += 1;
            let reply = match (&item.data, bucket.take()) {
                (_, false) => Reply::Error {
                    code: "rate_limited",
                    message: "too many messages; slow down".into(),
                },
                // Socket.IO has parsed the packet: no data is the only way not to have JSON.
                (data, true) => {
                    let text = data
                        .as_ref()
                        .map_or_else(|_| "null".into(), |d| d.to_string());
                    ws::dispatch(&state, &state.hub, &user, origin, &item.event, &text).await
                }
            };
            answer(&s, item.ack, &item.event, reply);
            if let Some(q) = sequencer.upgrade() {
                q.pending.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// Whether a message asked for an acknowledgement (socketioxide's `AckSender` does not say).
struct AckWanted(bool);

impl<A: Adapter> FromMessageParts<A> for AckWanted {
    type Error = std::convert::Infallible;

    fn from_message_parts(
        _: &Arc<Socket<A>>,
        _: &mut socketioxide::handler::Value,
        ack_id: &Option<i64>,
    ) -> Result<AckWanted, Self::Error> {
        Ok(AckWanted(ack_id.is_some()))
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
