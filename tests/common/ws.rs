//! The tests' WebSocket client (tokio-tungstenite): [`Socket`] reads and writes text frames, as
//! the Engine.IO tests speak their packets; [`Hub`] speaks the JSON frames of `/ws`
//! (`{"event", "data", "id"}`, signaling/src/ws.rs) on one.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::handshake::client::{Request, Response};
use tokio_tungstenite::tungstenite::http::header;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{Daemon, Person};

/// How long a handshake, a send or a frame that must come may take, unless the socket was
/// opened with another wait ([`Socket::open`]).
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a socket must stay silent for "nothing was delivered".
pub const QUIET: Duration = Duration::from_millis(300);

pub type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a socket produced next: `F` is a text frame's content (its text, or its JSON on a
/// [`Hub`]).
#[derive(Debug)]
pub enum Next<F = String> {
    /// A text frame.
    Frame(F),
    /// A close frame.
    Close(Option<CloseFrame>),
    /// The stream ended (after a close handshake, or at EOF).
    End,
    /// The connection failed (a reset, an EOF without a close frame): what the client said.
    Error(#[allow(dead_code)] String), // (read through Debug, in failure messages)
    /// Nothing within the time given.
    Nothing,
}

/// A request for `url` (`ws://…`), with `Authorization: Bearer <bearer>` when given.
pub fn request(url: &str, bearer: Option<&str>) -> Request {
    let mut req = url.into_client_request().expect("a ws:// request");
    if let Some(t) = bearer {
        let value = format!("Bearer {t}").parse().expect("a header value");
        req.headers_mut().insert(header::AUTHORIZATION, value);
    }
    req
}

/// The opening handshake of `req`, which must end (either way) within `limit`.
pub async fn handshake(req: Request, limit: Duration) -> Result<Stream, tungstenite::Error> {
    tokio::time::timeout(limit, tokio_tungstenite::connect_async(req))
        .await
        .expect("the handshake did not finish in time")
        .map(|(s, _)| s)
}

/// A handshake the server must refuse with an HTTP answer (within [`WAIT`]): that answer.
pub async fn refusal(req: Request) -> Response {
    let what = req.uri().to_string();
    match handshake(req, WAIT).await {
        Ok(_) => panic!("{what}: the upgrade was accepted"),
        Err(tungstenite::Error::Http(resp)) => *resp,
        Err(e) => panic!("{what}: expected an HTTP refusal, got {e}"),
    }
}

/// A client WebSocket; `who` names it in failure messages.
pub struct Socket {
    who: String,
    stream: Stream,
    wait: Duration,
}

impl Socket {
    /// The socket of a handshake that must succeed within `wait`, which it then waits for
    /// what must come ([`WAIT`] unless a test needs longer).
    pub async fn open(req: Request, who: &str, wait: Duration) -> Socket {
        let stream = handshake(req, wait)
            .await
            .unwrap_or_else(|e| panic!("{who}: handshake: {e}"));
        Socket {
            who: who.to_owned(),
            stream,
            wait,
        }
    }

    /// The socket of a handshake that succeeded; it waits [`WAIT`] for what must come.
    pub fn new(stream: Stream, who: &str) -> Socket {
        Socket {
            who: who.to_owned(),
            stream,
            wait: WAIT,
        }
    }

    pub fn who(&self) -> &str {
        &self.who
    }

    /// The stream itself, for what the methods do not do (sending without reading, say).
    pub fn stream(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// What comes next by `deadline`; pings and pongs are skipped. Cancel-safe (a `select!`
    /// branch).
    pub async fn next_by(&mut self, deadline: Instant) -> Next {
        loop {
            let next = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return Next::Nothing,
                Ok(next) => next,
            };
            return match next {
                None => Next::End,
                Some(Err(e)) => Next::Error(e.to_string()),
                Some(Ok(Message::Text(t))) => Next::Frame(t.as_str().to_owned()),
                Some(Ok(Message::Close(f))) => Next::Close(f),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(m)) => panic!("{}: the server sent {m:?}", self.who),
            };
        }
    }

    /// What comes next within `limit`.
    pub async fn next_within(&mut self, limit: Duration) -> Next {
        self.next_by(Instant::now() + limit).await
    }

    /// The next text frame, which must come within the socket's wait.
    pub async fn recv(&mut self) -> String {
        match self.next_within(self.wait).await {
            Next::Frame(t) => t,
            other => panic!("{}: expected a text frame, got {other:?}", self.who),
        }
    }

    /// Nothing arrives within [`QUIET`].
    pub async fn quiet(&mut self) {
        match self.next_within(QUIET).await {
            Next::Nothing => {}
            other => panic!("{}: expected nothing, got {other:?}", self.who),
        }
    }

    pub async fn send_msg(&mut self, m: Message) {
        tokio::time::timeout(self.wait, self.stream.send(m))
            .await
            .unwrap_or_else(|_| panic!("{}: send timed out", self.who))
            .unwrap_or_else(|e| panic!("{}: send: {e}", self.who));
    }

    /// Sends a text frame.
    pub async fn send(&mut self, text: impl Into<String>) {
        self.send_msg(Message::text(text.into())).await;
    }

    /// Closes the connection (the client's close frame) and reads, dropping what was on its
    /// way, until it is over, which must be within the socket's wait: the server has seen the
    /// close.
    pub async fn close(&mut self) {
        tokio::time::timeout(self.wait, self.stream.close(None))
            .await
            .unwrap_or_else(|_| panic!("{}: close timed out", self.who))
            .unwrap_or_else(|e| panic!("{}: close: {e}", self.who));
        loop {
            match self.next_within(self.wait).await {
                Next::End | Next::Error(_) => return,
                Next::Nothing => panic!("{}: not closed within {:?}", self.who, self.wait),
                Next::Frame(_) | Next::Close(_) => {}
            }
        }
    }

    /// Reads until the connection is over, which must be within the socket's wait and without
    /// a text frame: the close frame if one came, and how it ended after it.
    pub async fn closed(&mut self) -> (Option<Option<CloseFrame>>, Next) {
        let mut close = None;
        loop {
            match self.next_within(self.wait).await {
                Next::Close(f) if close.is_none() => close = Some(f),
                end @ (Next::End | Next::Error(_)) => return (close, end),
                other => panic!(
                    "{}: expected the connection to end, got {other:?}",
                    self.who
                ),
            }
        }
    }
}

/// A `/ws` socket: JSON frames.
pub struct Hub {
    socket: Socket,
    probes: u32,
}

impl Hub {
    /// A socket of `who` (header auth), attached to the hub when this returns.
    pub async fn open(d: &Daemon, who: &Person) -> Hub {
        Hub::open_waiting(d, who, WAIT).await
    }

    /// [`Hub::open`], waiting `wait` for the handshake and for what must come.
    pub async fn open_waiting(d: &Daemon, who: &Person, wait: Duration) -> Hub {
        let req = request(&format!("ws://{}/ws", d.http), Some(&who.token));
        Hub::attach(Socket::open(req, &who.name, wait).await).await
    }

    /// [`Hub::open`] on a socket of its own: attached to the hub when this returns.
    pub async fn attach(socket: Socket) -> Hub {
        let mut hub = Hub::new(socket);
        hub.probe().await;
        hub
    }

    /// A socket as it is, attached or not.
    pub fn new(socket: Socket) -> Hub {
        Hub { socket, probes: 0 }
    }

    pub fn who(&self) -> &str {
        self.socket.who()
    }

    /// The socket under the frames.
    pub fn socket(&mut self) -> &mut Socket {
        &mut self.socket
    }

    /// The stream itself.
    pub fn stream(&mut self) -> &mut Stream {
        self.socket.stream()
    }

    /// A round trip: the 101 comes before the server attaches the socket to the hub, so an
    /// event committed right after the handshake could miss it; an answer to a frame proves
    /// the socket is served (and so attached). An unknown event is answered with an error.
    pub async fn probe(&mut self) {
        self.probes += 1;
        let id = format!("probe-{}", self.probes);
        let reply = self
            .request(json!({"event": "probe", "data": {}, "id": id}))
            .await;
        assert_error(&reply, "unknown_event", "probe", Some(&json!(id)));
    }

    /// What comes next by `deadline`, a text frame as JSON. Cancel-safe.
    pub async fn next_by(&mut self, deadline: Instant) -> Next<Value> {
        match self.socket.next_by(deadline).await {
            Next::Frame(t) => Next::Frame(
                serde_json::from_str(&t)
                    .unwrap_or_else(|e| panic!("{}: a frame not JSON ({e}): {t}", self.who())),
            ),
            Next::Close(f) => Next::Close(f),
            Next::End => Next::End,
            Next::Error(e) => Next::Error(e),
            Next::Nothing => Next::Nothing,
        }
    }

    /// What comes next within `limit`.
    pub async fn next_within(&mut self, limit: Duration) -> Next<Value> {
        self.next_by(Instant::now() + limit).await
    }

    /// The next frame, which must come by `deadline`. Cancel-safe.
    pub async fn recv_by(&mut self, deadline: Instant) -> Value {
        match self.next_by(deadline).await {
            Next::Frame(f) => f,
            other => panic!("{}: expected a frame, got {other:?}", self.who()),
        }
    }

    /// The next frame, which must come within the socket's wait.
    pub async fn recv(&mut self) -> Value {
        self.recv_by(Instant::now() + self.socket.wait).await
    }

    /// The next frame, which must be `event` (and carry no `id`: events answer nothing): its
    /// data.
    pub async fn expect(&mut self, event: &str) -> Value {
        let f = self.recv().await;
        assert_eq!(f["event"], event, "{}: {f}", self.who());
        assert_eq!(keys(&f), ["data", "event"], "{}: {f}", self.who());
        f["data"].clone()
    }

    /// The data of the next `event` frame. Only trickled candidates may come before it: the
    /// other side may still send some after its connection is up.
    pub async fn expect_past_candidates(&mut self, event: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["event"] == event {
                return frame["data"].clone();
            }
            assert_eq!(
                frame["event"],
                "call:ice-candidate",
                "{}: expected {event}, got {frame}",
                self.who()
            );
        }
    }

    /// Nothing arrives within [`QUIET`].
    pub async fn quiet(&mut self) {
        self.socket.quiet().await;
    }

    pub async fn send_msg(&mut self, m: Message) {
        self.socket.send_msg(m).await;
    }

    /// Sends `frames` back to back, in one flush (within [`WAIT`]): they reach the daemon at
    /// once, as a flood would.
    pub async fn burst(&mut self, frames: impl IntoIterator<Item = Message>) {
        for m in frames {
            self.stream().feed(m).await.expect("queue a frame");
        }
        tokio::time::timeout(WAIT, self.stream().flush())
            .await
            .expect("flush timed out")
            .expect("flush");
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.socket.send(text).await;
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(frame.to_string()).await;
    }

    /// Sends `event` with `data` and no id.
    pub async fn emit(&mut self, event: &str, data: Value) {
        self.send(json!({"event": event, "data": data})).await;
    }

    /// Sends `frame`; the next frame, its answer.
    pub async fn request(&mut self, frame: Value) -> Value {
        self.send(frame).await;
        self.recv().await
    }

    /// Sends `event` with `data` and `id`; the answer must be an `ack` with that id: its data.
    pub async fn ack(&mut self, event: &str, data: Value, id: Value) -> Value {
        let reply = self
            .request(json!({"event": event, "data": data, "id": id}))
            .await;
        assert_eq!(reply["event"], "ack", "{}: {event}: {reply}", self.who());
        assert_eq!(reply["id"], id, "{}: {reply}", self.who());
        reply["data"].clone()
    }

    /// Sends `event` with `data` and `id` for a transition that also sends an event to the
    /// sender's user: the ack's data and the event frame, in whichever order they come (the
    /// ack is not ordered with the events the transition commits).
    pub async fn ack_and_event(&mut self, event: &str, data: Value, id: Value) -> (Value, Value) {
        self.send(json!({"event": event, "data": data, "id": id}))
            .await;
        let mut frames = [self.recv().await, self.recv().await];
        if frames[1]["event"] == "ack" {
            frames.swap(0, 1);
        }
        let [ack, other] = frames;
        assert_eq!(ack["event"], "ack", "{}: {event}: {ack}", self.who());
        assert_eq!(ack["id"], id, "{}: {ack}", self.who());
        assert_eq!(keys(&other), ["data", "event"], "{}: {other}", self.who());
        (ack["data"].clone(), other)
    }

    /// Sends `frame`; the answer must be an `error` with `code` for `event`, echoing `frame`'s
    /// id: its message.
    pub async fn refused(&mut self, frame: Value, code: &str, event: &str) -> String {
        let reply = self.request(frame.clone()).await;
        assert_error(&reply, code, event, frame.get("id"));
        reply["data"]["message"].as_str().unwrap().to_owned()
    }

    /// Reads until the connection is over: [`Socket::closed`].
    pub async fn closed(&mut self) -> (Option<Option<CloseFrame>>, Next) {
        self.socket.closed().await
    }
}

/// The object keys of `v`, sorted.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    k.sort();
    k
}

/// `reply` is `{"event": "error", "data": {code, message, event}}`, with `id` echoed (or no
/// `id` at all).
#[track_caller]
pub fn assert_error(reply: &Value, code: &str, event: &str, id: Option<&Value>) {
    assert_eq!(reply["event"], "error", "{reply}");
    let data = &reply["data"];
    assert_eq!(keys(data), ["code", "event", "message"], "{reply}");
    assert_eq!(data["code"], code, "{reply}");
    assert_eq!(data["event"], event, "{reply}");
    assert!(
        data["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{reply}"
    );
    match id {
        Some(id) => assert_eq!(&reply["id"], id, "{reply}"),
        None => assert_eq!(keys(reply), ["data", "event"], "no id: {reply}"),
    }
}
