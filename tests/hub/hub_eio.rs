//! `/socket.io/` (signaling/src/sio.rs) spoken by hand through the real daemon: raw HTTP/1.1
//! requests for the long-polling transport and a raw WebSocket (tokio-tungstenite) for the
//! other, every Engine.IO and Socket.IO packet written and checked byte for byte. Where
//! tests/hub/hub_sio.rs shows that the stock socket.io-client works, this shows the edges a stock
//! client never reaches:
//! - the query refusals, with Engine.IO's error codes;
//! - the polling handshake and the Socket.IO CONNECT (a bad token, a good one, another
//!   namespace);
//! - events before CONNECT, an unknown event with an ack, a binary event, several packets in
//!   one POST;
//! - two polls at once, the client's close packet, and a POST over `maxPayload`, each ending
//!   the session;
//! - the upgrade from polling to WebSocket (probe, noop, upgrade), and a WebSocket session
//!   without polling, ended by the client's close packet;
//! - a user's socket limit, seen as a connect_error;
//! - the hub reached through both transports: a call's candidates relayed between a polling
//!   client and a WebSocket client.
//!
//! A client ping (`2<tag>`) is answered `3<tag>` in order with everything else the session
//! queues: it is the fence that proves "nothing else was queued" without waiting. Every wait is
//! bounded by [`WAIT`]; "still waiting" is [`QUIET`]. Nothing here waits for the 25 s
//! heartbeat.

use crate::common;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::ws::{Next, Socket};
use common::{Api, Daemon, Person};
use serde_json::{json, Value};
use switchboard_signaling::sio::{CONNECT_TIMEOUT, MAX_PENDING, MAX_PENDING_PER_SOURCE};
use switchboard_signaling::ws::{MAX_AUTHENTICATED_FRAME, MAX_FRAME, MAX_SOCKETS_PER_USER, QUEUE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

/// How long an answer, a packet or a frame that must come may take.
const WAIT: Duration = Duration::from_secs(5);
/// How long a poll must stay unanswered for "it is waiting".
const QUIET: Duration = Duration::from_millis(300);
/// The record separator between packets of a polling payload.
const RS: char = '\x1e';

/// Runs the harness's blocking calls (daemon start, REST) on the test's runtime.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    tokio::task::block_in_place(f)
}

fn start() -> Daemon {
    blocking(|| Daemon::start(""))
}

/// Alice and Bob, provisioned through `api`.
fn alice_and_bob(api: &Api) -> (Person, Person) {
    blocking(|| (api.person("Alice"), api.person("Bob")))
}

/// The open packet the daemon sends for session `sid`.
fn open_packet(sid: &str, upgrades: &str) -> String {
    format!(
        r#"0{{"sid":"{sid}","upgrades":[{upgrades}],"pingInterval":25000,"pingTimeout":20000,"maxPayload":65536}}"#
    )
}

/// The sid of an open packet (checked against [`open_packet`] by the caller).
fn sid_of(open: &str) -> String {
    let sid = sid_in(open, "0");
    assert!(
        sid.len() == 32 && sid.bytes().all(|b| b.is_ascii_hexdigit()),
        "a sid is 32 hex digits: {open}"
    );
    sid
}

/// The `sid` of a packet of type `kind` (`0`, open; `40`, Socket.IO's CONNECT answer) whose
/// body is a JSON object.
fn sid_in(packet: &str, kind: &str) -> String {
    let json = packet
        .strip_prefix(kind)
        .unwrap_or_else(|| panic!("not a packet of type {kind}: {packet}"));
    let body: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {packet}"));
    body["sid"]
        .as_str()
        .unwrap_or_else(|| panic!("no sid: {packet}"))
        .to_owned()
}

/// Engine.IO's `{"code", "message"}` refusal as the daemon writes it.
fn refusal(code: u8, message: &str) -> String {
    json!({"code": code, "message": message}).to_string()
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1.

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    body: String,
}

impl Answer {
    /// Asserts an Engine.IO refusal: 400, JSON, `{"code", "message"}`.
    #[track_caller]
    fn assert_refused(&self, code: u8, message: &str) {
        assert_eq!(self.status, 400, "{self:?}");
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/json"),
            "{self:?}"
        );
        assert_eq!(self.body, refusal(code, message), "{self:?}");
    }

    /// Asserts a polling payload (200, text/plain): its packets.
    #[track_caller]
    fn packets(&self) -> Vec<String> {
        assert_eq!(self.status, 200, "{self:?}");
        assert_eq!(
            self.content_type.as_deref(),
            Some("text/plain; charset=UTF-8"),
            "{self:?}"
        );
        self.body.split(RS).map(str::to_owned).collect()
    }
}

/// `method /socket.io/?query` with `body` on a connection of its own (`Connection: close`),
/// answered within [`WAIT`].
async fn http(addr: SocketAddr, method: &str, query: &str, body: &[u8]) -> Answer {
    http_from(None, addr, method, query, body).await
}

/// [`http`] from the local address `from` (another loopback address: another source).
async fn http_from(
    from: Option<IpAddr>,
    addr: SocketAddr,
    method: &str,
    query: &str,
    body: &[u8],
) -> Answer {
    let mut head =
        format!("{method} /socket.io/?{query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if method == "POST" {
        head.push_str("Content-Type: text/plain;charset=UTF-8\r\n");
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let what = format!("{method} ?{query}");
    let raw = exchange(from, addr, &[head.as_bytes(), body], &what).await;
    parse_answer(&raw).unwrap_or_else(|| {
        panic!(
            "{method} ?{query}: not an HTTP answer: {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}

/// Writes `parts` in turn on a new connection to `addr` (from `from`, another loopback address,
/// when given) and reads until the daemon closes it: all within [`WAIT`], else a panic naming
/// `what`.
async fn exchange(from: Option<IpAddr>, addr: SocketAddr, parts: &[&[u8]], what: &str) -> Vec<u8> {
    let io = async {
        let mut tcp = match from {
            None => TcpStream::connect(addr).await.expect("connect"),
            Some(ip) => {
                let socket = TcpSocket::new_v4().expect("a socket");
                socket.bind(SocketAddr::new(ip, 0)).expect("bind");
                socket.connect(addr).await.expect("connect")
            }
        };
        for part in parts {
            tcp.write_all(part).await.expect("write");
        }
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.expect("read the answer");
        raw
    };
    tokio::time::timeout(WAIT, io)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {WAIT:?}"))
}

fn parse_answer(raw: &[u8]) -> Option<Answer> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    assert!(
        header("transfer-encoding").is_none(),
        "every answer here has a length: {head}"
    );
    let body = &raw[end + 4..];
    let length: usize = header("content-length")?.parse().ok()?;
    assert_eq!(body.len(), length, "the body is as long as it says: {head}");
    Some(Answer {
        status,
        content_type: header("content-type").cloned(),
        body: String::from_utf8(body.to_vec()).ok()?,
    })
}

// ---------------------------------------------------------------------------------------------
// A polling client.

struct Polling {
    addr: SocketAddr,
    sid: String,
    /// Packets a poll brought that the test has not read yet.
    pending: VecDeque<String>,
}

impl Polling {
    /// A polling handshake with `extra` in the query (`&token=...`, say): the session, after
    /// its open packet has been checked byte for byte.
    async fn open(addr: SocketAddr, extra: &str) -> Polling {
        let answer = http(addr, "GET", &format!("EIO=4&transport=polling{extra}"), b"").await;
        let packets = answer.packets();
        assert_eq!(packets.len(), 1, "{answer:?}");
        let sid = sid_of(&packets[0]);
        assert_eq!(packets[0], open_packet(&sid, r#""websocket""#));
        Polling {
            addr,
            sid,
            pending: VecDeque::new(),
        }
    }

    /// A session whose Socket.IO CONNECT with `token` was accepted.
    async fn connected(addr: SocketAddr, token: &str) -> Polling {
        let mut s = Polling::open(addr, "").await;
        s.connect(token).await;
        s
    }

    fn query(&self) -> String {
        format!("EIO=4&transport=polling&sid={}", self.sid)
    }

    async fn get(&self) -> Answer {
        http(self.addr, "GET", &self.query(), b"").await
    }

    /// A GET left running: it must still be waiting after [`QUIET`].
    async fn get_waiting(&self) -> JoinHandle<Answer> {
        let (addr, query) = (self.addr, self.query());
        let mut poll = tokio::spawn(async move { http(addr, "GET", &query, b"").await });
        if let Ok(answer) = tokio::time::timeout(QUIET, &mut poll).await {
            panic!("the poll did not wait: {:?}", answer.unwrap());
        }
        poll
    }

    async fn post(&self, body: &[u8]) -> Answer {
        http(self.addr, "POST", &self.query(), body).await
    }

    /// POSTs `packets` in one payload, which must be taken (`ok`).
    async fn send(&self, packets: &[&str]) {
        let payload = packets.join(&RS.to_string());
        let answer = self.post(payload.as_bytes()).await;
        assert_eq!(answer.status, 200, "POST {payload}: {answer:?}");
        assert_eq!(answer.body, "ok", "POST {payload}: {answer:?}");
        assert_eq!(answer.content_type.as_deref(), Some("text/html"));
    }

    /// One GET, which must bring packets: all of them (none from before are left unread).
    async fn poll(&mut self) -> Vec<String> {
        assert!(self.pending.is_empty(), "unread: {:?}", self.pending);
        self.get().await.packets()
    }

    /// The next packet, polling for it if none is at hand.
    async fn next(&mut self) -> String {
        if self.pending.is_empty() {
            self.pending.extend(self.get().await.packets());
        }
        self.pending.pop_front().expect("a poll brings a packet")
    }

    /// The session is over: `waiting` (a poll) is answered with the close packet, and the sid
    /// is unknown from then on.
    async fn ended(&self, waiting: JoinHandle<Answer>) {
        assert_eq!(answered(waiting).await.packets(), ["1"]);
        self.get().await.assert_refused(1, "Session ID unknown");
    }

    /// Socket.IO CONNECT with `token`, which must be accepted.
    async fn connect(&mut self, token: &str) {
        self.send(&[&connect_packet(token)]).await;
        let answer = self.poll().await;
        assert_eq!(answer.len(), 1, "{answer:?}");
        assert_connected(&answer[0], &self.sid);
    }

    /// A CONNECT without auth (`40`), which the handshake's `?token=` must let in.
    async fn connect_without_auth(&mut self) {
        self.send(&["40"]).await;
        let answer = self.poll().await;
        assert_eq!(answer.len(), 1, "{answer:?}");
        assert_connected(&answer[0], &self.sid);
    }
}

/// `40{"token":...}`: Socket.IO CONNECT to the main namespace.
fn connect_packet(token: &str) -> String {
    format!("40{}", json!({ "token": token }))
}

/// The event name and data of a `42[...]` packet.
fn event_of(packet: &str) -> Option<(String, Value)> {
    let v: Value = serde_json::from_str(packet.strip_prefix("42")?).ok()?;
    Some((v[0].as_str()?.to_owned(), v[1].clone()))
}

/// The data of a `43<id>[data]` packet with that id.
fn ack_of(packet: &str, id: u64) -> Option<Value> {
    let v: Value = serde_json::from_str(packet.strip_prefix(&format!("43{id}"))?).ok()?;
    Some(v.as_array().filter(|a| a.len() == 1)?[0].clone())
}

// ---------------------------------------------------------------------------------------------
// A WebSocket client.

/// The request of a WebSocket to `/socket.io/?query`.
fn ws_request(addr: SocketAddr, query: &str) -> Request {
    common::ws::request(&format!("ws://{addr}/socket.io/?{query}"), None)
}

/// A WebSocket to `?query`, which must be accepted.
async fn ws_open(addr: SocketAddr, query: &str) -> Socket {
    Socket::open(ws_request(addr, query), &format!("?{query}"), WAIT).await
}

/// A WebSocket session without polling: its sid, its open packet checked.
async fn ws_session(addr: SocketAddr) -> (Socket, String) {
    let mut ws = ws_open(addr, "EIO=4&transport=websocket").await;
    let open = ws.recv().await;
    let sid = sid_of(&open);
    assert_eq!(open, open_packet(&sid, ""));
    (ws, sid)
}

/// A handshake that must be refused with an HTTP answer: its status and body.
async fn ws_refused(addr: SocketAddr, query: &str) -> (u16, String) {
    let resp = common::ws::refusal(ws_request(addr, query)).await;
    let body = resp.body().as_deref().unwrap_or_default();
    (
        resp.status().as_u16(),
        String::from_utf8_lossy(body).into_owned(),
    )
}

/// Engine.IO's steps on a WebSocket.
/// A session's packets, whichever the transport.
trait Packets {
    async fn send_packet(&mut self, packet: String);
    async fn next_packet(&mut self) -> String;

    /// Sends a ping `2<tag>`: what the session queued before it, up to its pong `3<tag>`.
    async fn fence(&mut self, tag: &str) -> Vec<String> {
        self.send_packet(format!("2{tag}")).await;
        let pong = format!("3{tag}");
        let mut before = Vec::new();
        loop {
            let p = self.next_packet().await;
            if p == pong {
                return before;
            }
            before.push(p);
        }
    }
}

impl Packets for Polling {
    async fn send_packet(&mut self, packet: String) {
        self.send(&[&packet]).await;
    }

    async fn next_packet(&mut self) -> String {
        self.next().await
    }
}

impl Packets for Socket {
    async fn send_packet(&mut self, packet: String) {
        self.send(packet).await;
    }

    async fn next_packet(&mut self) -> String {
        self.recv().await
    }
}

trait EngineIo: Packets {
    /// Socket.IO CONNECT with `token` on session `sid`, which must be accepted.
    async fn connect(&mut self, token: &str, sid: &str);
    /// Reads until the connection is over, within [`WAIT`] and without a text frame: the
    /// close frame, which must come.
    async fn close_frame(&mut self) -> Option<CloseFrame>;
}

impl EngineIo for Socket {
    async fn connect(&mut self, token: &str, sid: &str) {
        self.send(connect_packet(token)).await;
        assert_connected(&self.recv().await, sid);
    }

    async fn close_frame(&mut self) -> Option<CloseFrame> {
        let (close, _) = self.closed().await;
        close.unwrap_or_else(|| panic!("{}: a close frame first", self.who()))
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The query.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_refused_with_engine_io_codes() {
    let d = start();
    let addr = d.http;

    // Engine.IO v3 (and no version at all): 5, for GET and POST alike.
    for (method, query) in [
        ("GET", "EIO=3&transport=polling"),
        ("GET", "transport=polling"),
        ("POST", "EIO=3&transport=polling&sid=x"),
    ] {
        let answer = http(addr, method, query, b"").await;
        answer.assert_refused(5, "Unsupported protocol version");
    }
    // A transport that is neither polling nor websocket, or none: 0.
    for query in ["EIO=4&transport=flashsocket", "EIO=4"] {
        let answer = http(addr, "GET", query, b"").await;
        answer.assert_refused(0, "Transport unknown");
    }
    // A sid that names no session, on a poll, a POST and a WebSocket; a POST without one: 1.
    let unknown = "0123456789abcdef0123456789abcdef";
    let query = format!("EIO=4&transport=polling&sid={unknown}");
    http(addr, "GET", &query, b"")
        .await
        .assert_refused(1, "Session ID unknown");
    http(addr, "POST", &query, b"40")
        .await
        .assert_refused(1, "Session ID unknown");
    http(addr, "POST", "EIO=4&transport=polling", b"40")
        .await
        .assert_refused(1, "Session ID unknown");
    let ws_query = format!("EIO=4&transport=websocket&sid={unknown}");
    let (status, body) = ws_refused(addr, &ws_query).await;
    assert_eq!((status, body), (400, refusal(1, "Session ID unknown")));
    // transport=websocket on a plain GET (no upgrade): 3.
    http(addr, "GET", "EIO=4&transport=websocket", b"")
        .await
        .assert_refused(3, "Bad request");
}

// ---------------------------------------------------------------------------------------------
// 2. The polling handshake, and the Socket.IO CONNECT.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_handshake_then_connect() {
    let d = start();
    let alice = Person::new("Alice");
    let mut s = Polling::open(d.http, "").await;

    // A token that is not a JWT: connect_error with the auth error's code and message.
    s.send(&[r#"40{"token":"not-a-jwt"}"#]).await;
    assert_eq!(
        s.poll().await,
        [r#"44{"message":"invalid_token: the token is not valid: malformed"}"#]
    );
    // No token at all (none in the query either).
    s.send(&["40"]).await;
    let packets = s.poll().await;
    assert_eq!(packets.len(), 1, "{packets:?}");
    assert!(
        packets[0].starts_with(r#"44{"message":"missing_token: "#),
        "{packets:?}"
    );

    // The session is still open: a good token connects it, answered with the sid.
    s.connect(&alice.token).await;
    // A second CONNECT is ignored.
    s.send(&[&connect_packet(&alice.token)]).await;
    assert_eq!(s.fence("again").await, Vec::<String>::new());
    // Another namespace does not exist.
    s.send(&["40/admin,{}"]).await;
    assert_eq!(
        s.poll().await,
        [r#"44/admin,{"message":"Invalid namespace"}"#]
    );

    // A token in the handshake's query serves a CONNECT without auth.
    let mut q = Polling::open(d.http, &format!("&token={}", alice.token)).await;
    q.connect_without_auth().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Events.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_need_a_connect_and_are_answered_in_order() {
    let d = start();
    let alice = Person::new("Alice");
    let mut s = Polling::open(d.http, "").await;

    // Before CONNECT an event, with an ack or without, gets nothing: the pong comes alone.
    s.send(&[
        r#"421["nope",{}]"#,
        r#"42["nope",{}]"#,
        r#"451-1["call:end",{}]"#,
    ])
    .await;
    assert_eq!(s.fence("before").await, Vec::<String>::new());

    s.connect(&alice.token).await;

    // An unknown event with an ack id: the error in the ack.
    s.send(&[r#"421["nope",{}]"#]).await;
    assert_eq!(
        s.poll().await,
        [r#"431[{"error":{"code":"unknown_event","message":"unknown event `nope`"}}]"#]
    );

    // Several packets in one POST: handled in order, their answers in one poll in that order
    // (an ack, an `error` event for the one without an ack id, a pong, another ack).
    s.send(&[
        r#"427["nope",{}]"#,
        r#"42["nope",{}]"#,
        "2mid",
        r#"4212["call:end","not an object"]"#,
    ])
    .await;
    assert_eq!(
        s.poll().await,
        [
            r#"437[{"error":{"code":"unknown_event","message":"unknown event `nope`"}}]"#,
            r#"42["error",{"code":"unknown_event","event":"nope","message":"unknown event `nope`"}]"#,
            "3mid",
            r#"4312[{"error":{"code":"invalid_field","message":"data: must be a JSON object"}}]"#,
        ]
    );

    // A binary event is refused: its placeholder would reach peers as data. The attachment
    // that follows (`b` + base64) is ignored. (`451-1`: one attachment and ack id 1, the same
    // number, so that this holds whichever of the two the server reads as the id; see
    // `binary_event_refusals_follow_the_binary_packet_format`.)
    s.send(&[
        r#"451-1["call:end",{"_placeholder":true,"num":0}]"#,
        "bAQID",
    ])
    .await;
    assert_eq!(
        s.fence("binary").await,
        [r#"431[{"error":{"code":"invalid_frame","message":"binary attachments are not taken"}}]"#]
    );
    // Without an ack id: an `error` event naming the refused event.
    s.send(&[r#"451-["call:end",{"_placeholder":true,"num":0}]"#, "bAQID"])
        .await;
    assert_eq!(
        s.fence("binary2").await,
        [
            r#"42["error",{"code":"invalid_frame","event":"call:end","message":"binary attachments are not taken"}]"#
        ]
    );

    // A message that is not a Socket.IO event: invalid_frame.
    s.send(&[r#"423{"event":"nope"}"#]).await;
    assert_eq!(
        s.poll().await,
        [r#"433[{"error":{"code":"invalid_frame","message":"a message is [\"event\", data]"}}]"#]
    );
}

// ---------------------------------------------------------------------------------------------
// 4 and 5. Refusals that end a polling session.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_polls_end_the_session() {
    let d = start();
    let s = Polling::open(d.http, "").await;

    let first = s.get_waiting().await;
    // The second poll is refused, and ends the session: the first is answered with a close
    // packet, and the sid is unknown from then on.
    s.get().await.assert_refused(3, "Bad request");
    let first = tokio::time::timeout(WAIT, first)
        .await
        .expect("the first poll answered")
        .unwrap();
    assert_eq!(first.packets(), ["1"]);
    s.get().await.assert_refused(1, "Session ID unknown");
    s.post(b"2x").await.assert_refused(1, "Session ID unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_client_close_ends_the_session() {
    let d = start();
    let alice = Person::new("Alice");
    let s = Polling::connected(d.http, &alice.token).await;

    // The close packet ends the session: the waiting poll gets the close packet, and the sid
    // is unknown from then on.
    let waiting = s.get_waiting().await;
    s.send(&["1"]).await;
    s.ended(waiting).await;
}

/// A Socket.IO DISCONNECT ends the session there: what follows it in the same POST is not
/// taken (here a `call:end` that would end Alice's call after her socket has left the hub).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_after_a_disconnect_in_the_same_post_is_taken() {
    let d = start();
    let api: Api = d.api();
    let (alice, bob) = alice_and_bob(&api);
    let call = blocking(|| {
        let call = api.start_call(&alice, Uuid::new_v4(), "audio", &[&bob]);
        api.act_ok(&bob, &call, "answer");
        call
    });
    let s = Polling::connected(d.http, &alice.token).await;
    let waiting = s.get_waiting().await;
    let end = format!(r#"42["call:end",{{"callId":"{call}"}}]"#);
    s.send(&["41", &end]).await;
    s.ended(waiting).await;
    let (status, body) = blocking(|| api.get_call(&bob, &call));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["call"]["status"], "active", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_over_max_payload_ends_the_session() {
    let d = start();
    let alice = Person::new("Alice");

    // Before its CONNECT, a session takes maxPayload (64 KiB): one byte more is 413, and the
    // session is gone.
    let s = Polling::open(d.http, "").await;
    let waiting = s.get_waiting().await;
    let answer = s.post(&vec![b'6'; MAX_FRAME + 1]).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (413, "payload too large")
    );
    s.ended(waiting).await;

    // Connected, it takes more (an SFU offer of a big room). Exactly that: taken (an event for
    // no one, refused as unknown).
    let mut s = Polling::connected(d.http, &alice.token).await;
    let head = r#"42["nope",{"pad":""#;
    let tail = r#""}]"#;
    let event = format!(
        "{head}{}{tail}",
        "x".repeat(MAX_AUTHENTICATED_FRAME - head.len() - tail.len())
    );
    assert_eq!(event.len(), MAX_AUTHENTICATED_FRAME);
    s.send(&[&event]).await;
    let refusal = s.poll().await;
    assert_eq!(refusal.len(), 1, "{refusal:?}");
    let (name, data) = event_of(&refusal[0]).unwrap_or_else(|| panic!("{refusal:?}"));
    assert_eq!(
        (name.as_str(), &data["code"]),
        ("error", &json!("unknown_event"))
    );

    // One byte more: 413, and the session is gone (a waiting poll gets the close packet).
    let waiting = s.get_waiting().await;
    let over = vec![b'6'; MAX_AUTHENTICATED_FRAME + 1];
    let answer = s.post(&over).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (413, "payload too large")
    );
    s.ended(waiting).await;
}

// ---------------------------------------------------------------------------------------------
// 6. The upgrade.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_upgrades_to_websocket() {
    let d = start();
    let alice = Person::new("Alice");
    let mut s = Polling::connected(d.http, &alice.token).await;

    let waiting = s.get_waiting().await;
    let mut ws = ws_open(d.http, &format!("EIO=4&transport=websocket&sid={}", s.sid)).await;
    ws.send("2probe").await;
    assert_eq!(ws.recv().await, "3probe");
    // The waiting poll is let go with a noop.
    assert_eq!(answered(waiting).await.packets(), ["6"]);
    // A second WebSocket for the session while it upgrades is refused.
    let second = format!("EIO=4&transport=websocket&sid={}", s.sid);
    assert_eq!(
        ws_refused(d.http, &second).await,
        (400, refusal(3, "Bad request"))
    );
    // Until the upgrade, POSTs are still taken; what they queue waits for the WebSocket.
    s.send(&["2during"]).await;
    assert_eq!(s.poll().await, ["6"]);

    ws.send("5").await;
    assert_eq!(ws.recv().await, "3during");
    // An event with an ack id is answered over the WebSocket.
    ws.send(r#"421["nope",{}]"#).await;
    assert_eq!(
        ws.recv().await,
        r#"431[{"error":{"code":"unknown_event","message":"unknown event `nope`"}}]"#
    );
    // A binary event and its attachment (a binary frame): refused, and the socket goes on
    // (the same `451-1` as over polling).
    ws.send(r#"451-1["call:end",{"_placeholder":true,"num":0}]"#)
        .await;
    ws.send_msg(Message::binary(vec![1u8, 2, 3])).await;
    assert_eq!(
        ws.fence("after-binary").await,
        [r#"431[{"error":{"code":"invalid_frame","message":"binary attachments are not taken"}}]"#]
    );

    // Polling is over for this session: a poll or a POST is a bad request (it still exists).
    s.get().await.assert_refused(3, "Bad request");
    s.post(b"2x").await.assert_refused(3, "Bad request");
    assert_eq!(ws.fence("still").await, Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// 7. A WebSocket without polling.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_session_ends_with_the_client_close_packet() {
    let d = start();
    let alice = Person::new("Alice");
    let (mut ws, sid) = ws_session(d.http).await;
    ws.connect(&alice.token, &sid).await;

    // The session is the WebSocket's: polling it, or upgrading it again, is a bad request.
    let poll = format!("EIO=4&transport=polling&sid={sid}");
    http(d.http, "GET", &poll, b"")
        .await
        .assert_refused(3, "Bad request");
    let upgrade = format!("EIO=4&transport=websocket&sid={sid}");
    assert_eq!(
        ws_refused(d.http, &upgrade).await,
        (400, refusal(3, "Bad request"))
    );

    // The client's close packet: the server closes the WebSocket (1000) and forgets the sid.
    ws.send("1").await;
    let close = ws.close_frame().await.expect("a close code");
    assert_eq!(close.code, CloseCode::Normal);
    assert_eq!(close.reason.as_str(), "client close");
    http(d.http, "GET", &poll, b"")
        .await
        .assert_refused(1, "Session ID unknown");
    assert_eq!(
        ws_refused(d.http, &upgrade).await,
        (400, refusal(1, "Session ID unknown"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_has_at_most_sixteen_sockets() {
    let d = start();
    let alice = Person::new("Alice");
    let mut kept = Vec::new();
    for _ in 0..MAX_SOCKETS_PER_USER {
        let (mut ws, sid) = ws_session(d.http).await;
        ws.connect(&alice.token, &sid).await;
        kept.push(ws);
    }
    // One more: connect_error, over polling as over a WebSocket.
    let mut s = Polling::open(d.http, "").await;
    s.send(&[&connect_packet(&alice.token)]).await;
    assert_eq!(
        s.poll().await,
        [format!(
            r#"44{{"message":"too_many_sockets: at most {MAX_SOCKETS_PER_USER} per user"}}"#
        )]
    );
    // A socket closed (Socket.IO disconnect) frees its place.
    let mut first = kept.remove(0);
    first.send("41").await;
    first.close_frame().await;
    s.connect(&alice.token).await;
}

// ---------------------------------------------------------------------------------------------
// 8. The hub behind both transports.

/// Alice and Bob of one conversation, each connected to the hub: Alice over polling, Bob over a
/// WebSocket.
struct Mixed {
    api: Api,
    alice: Person,
    bob: Person,
    conversation: Uuid,
    alice_s: Polling,
    bob_ws: Socket,
}

impl Mixed {
    async fn connect(d: &Daemon) -> Mixed {
        let api: Api = d.api();
        let (alice, bob) = alice_and_bob(&api);
        let conversation = blocking(|| api.conversation_of(&[&alice, &bob]));
        let alice_s = Polling::connected(d.http, &alice.token).await;
        let (mut bob_ws, bob_sid) = ws_session(d.http).await;
        bob_ws.connect(&bob.token, &bob_sid).await;
        Mixed {
            api,
            alice,
            bob,
            conversation,
            alice_s,
            bob_ws,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_relayed_between_polling_and_websocket() {
    let d = start();
    let mut m = Mixed::connect(&d).await;
    let (a, b) = (m.alice.uid(), m.bob.uid());

    // Alice calls Bob through REST: Bob's WebSocket rings.
    let call = blocking(|| {
        m.api
            .start_call(&m.alice, m.conversation, "video", &[&m.bob])
    });
    let (event, data) = event_of(&m.bob_ws.recv().await).expect("an event");
    assert_eq!(
        (event.as_str(), &data["callId"]),
        ("call:incoming", &json!(call))
    );

    // Bob accepts over Socket.IO with an ack: the REST answer's body; Alice hears him join.
    m.bob_ws
        .send(&format!(r#"429["call:accept",{{"callId":"{call}"}}]"#))
        .await;
    let ack = ack_of(&m.bob_ws.recv().await, 9).expect("the ack of call:accept");
    assert_eq!(
        (&ack["callId"], &ack["status"]),
        (&json!(call), &json!("active"))
    );
    let (event, data) = event_of(&m.alice_s.next().await).expect("an event");
    assert_eq!(event, "call:participant-joined");
    assert_eq!(
        (&data["callId"], &data["userId"]),
        (&json!(call), &json!(b))
    );

    // Alice's candidate (POST, no ack) reaches Bob's WebSocket with the sender set by the
    // server; Alice is answered nothing.
    let candidate = r#"{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 50001 typ host","sdpMid":"0","sdpMLineIndex":0}"#;
    m.alice_s
        .send(&[&format!(
            r#"42["call:ice-candidate",{{"callId":"{call}","targetUserId":"{b}","candidate":{candidate}}}]"#
        )])
        .await;
    assert_eq!(
        m.bob_ws.recv().await,
        format!(
            r#"42["call:ice-candidate",{{"callId":"{call}","fromUserId":"{a}","candidate":{candidate}}}]"#
        )
    );
    assert_eq!(m.alice_s.fence("sent").await, Vec::<String>::new());

    // Bob's (WebSocket, with an ack): `{success: true}` to him, the candidate to Alice's poll.
    m.bob_ws
        .send(&format!(
            r#"4210["call:ice-candidate",{{"callId":"{call}","targetUserId":"{a}","candidate":{candidate}}}]"#
        ))
        .await;
    assert_eq!(m.bob_ws.recv().await, r#"4310[{"success":true}]"#);
    assert_eq!(
        m.alice_s.next().await,
        format!(
            r#"42["call:ice-candidate",{{"callId":"{call}","fromUserId":"{b}","candidate":{candidate}}}]"#
        )
    );
    assert_eq!(m.alice_s.fence("done").await, Vec::<String>::new());
    assert_eq!(m.bob_ws.fence("done").await, Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Two bugs the first version of sio.rs had.

/// Socket.IO v5's BINARY_EVENT is `5<attachments>-[<namespace>,][<ack id>][data]`: the number
/// before `-` counts attachments, the ack id (if any) comes after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_event_refusals_follow_the_binary_packet_format() {
    let d = start();
    let alice = Person::new("Alice");
    let mut s = Polling::connected(d.http, &alice.token).await;

    // Two attachments, ack id 7: the refusal goes to ack 7 (the first sio.rs: `432[...]`).
    s.send(&[r#"452-7["call:end",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#])
        .await;
    assert_eq!(
        s.fence("ack").await,
        [r#"437[{"error":{"code":"invalid_frame","message":"binary attachments are not taken"}}]"#]
    );
    // One attachment, no ack id: an `error` event, no ack (the first sio.rs: `431[...]`, an answer to an
    // ack id 1 the client never asked for, which a client may have pending for another event).
    s.send(&[r#"451-["call:end",{"_placeholder":true,"num":0}]"#])
        .await;
    let refusal = s.fence("no-ack").await;
    assert_eq!(refusal.len(), 1, "{refusal:?}");
    let (event, data) = event_of(&refusal[0]).unwrap_or_else(|| panic!("{refusal:?}"));
    assert_eq!(
        (event.as_str(), &data["code"]),
        ("error", &json!("invalid_frame"))
    );
    // For a namespace the socket is not connected to: nothing, as for a text event there
    // (the first sio.rs: `431[...]`, the namespace being read from after the attachment count).
    s.send(&[r#"451-/admin,["call:end",{"_placeholder":true,"num":0}]"#])
        .await;
    assert_eq!(s.fence("other-namespace").await, Vec::<String>::new());
}

/// sio.rs's doc: "[`ws::QUEUE`] queued messages per socket (a socket further behind is
/// closed)". A client that POSTs pings and never polls is further behind than that; pings
/// count against the rate too, so the session is closed before its queue is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_polls_is_bounded_by_the_queue() {
    let d = start();
    let s = Polling::open(d.http, "").await;

    let pings = vec!["2"; 2 * QUEUE];
    s.send(&pings).await;
    s.get().await.assert_refused(1, "Session ID unknown");

    // A long ping closes the session at once (clients send none; the server pings).
    let s = Polling::open(d.http, "").await;
    s.send(&[&format!("2{}", "x".repeat(64))]).await;
    s.get().await.assert_refused(1, "Session ID unknown");
}

/// A message may start with any character, not only an ASCII packet type: refused or
/// ignored, the session goes on (slicing it after its first byte used to panic, which on a
/// WebSocket left the session and its hub socket behind for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_of_any_first_character_is_taken_in_stride() {
    let d = start();
    let alice = Person::new("Alice");
    let mut s = Polling::connected(d.http, &alice.token).await;
    s.send(&["4é", "4", "4\u{1F600}x", "é", "4\u{7f}"]).await;
    assert_eq!(s.fence("after").await, Vec::<String>::new());

    let (mut ws, sid) = ws_session(d.http).await;
    ws.connect(&alice.token, &sid).await;
    for odd in ["4é", "4", "é", "4\u{1F600}"] {
        ws.send(odd).await;
    }
    assert_eq!(ws.fence("after").await, Vec::<String>::new());
}

/// A session that does not connect to the hub within CONNECT_TIMEOUT is ended, over polling
/// and over a WebSocket; one that connected stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_never_connects_is_ended() {
    let d = start();
    let alice = Person::new("Alice");
    let idle = Polling::open(d.http, "").await;
    let mut connected = Polling::connected(d.http, &alice.token).await;
    let (mut ws, _) = ws_session(d.http).await;
    let started = tokio::time::Instant::now();

    // Nothing comes before the deadline; the close within [`WAIT`] of it.
    let before = CONNECT_TIMEOUT - Duration::from_secs(2);
    assert!(matches!(ws.next_within(before).await, Next::Nothing));
    let close = ws.close_frame().await;
    let waited = started.elapsed();
    let close = close.expect("a close frame");
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1000, "connect timeout")
    );
    assert!(
        waited + WAIT >= CONNECT_TIMEOUT && waited <= CONNECT_TIMEOUT + Duration::from_secs(2),
        "closed after {waited:?}"
    );
    tokio::time::sleep_until(started + CONNECT_TIMEOUT + Duration::from_millis(500)).await;
    idle.get().await.assert_refused(1, "Session ID unknown");
    assert_eq!(connected.fence("still").await, Vec::<String>::new());
}

/// One source (here 127.0.0.1) holds at most MAX_PENDING_PER_SOURCE sessions that have not
/// connected: its next handshake is answered 429 (a WebSocket one closed with 1013, try again
/// later), while another source (127.0.0.2) still opens sessions; a session that connects
/// gives its place back. (Before, one client filled the whole pool of 16,384.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_holds_at_most_its_share_of_pending_sessions() {
    let d = start();
    let alice = Person::new("Alice");
    let mut held = Vec::new();
    for _ in 0..MAX_PENDING_PER_SOURCE {
        held.push(Polling::open(d.http, "").await);
    }
    let handshake = "EIO=4&transport=polling";
    let refused = http(d.http, "GET", handshake, b"").await;
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (429, "too many sessions from this address"),
        "{refused:?}"
    );
    let mut ws = ws_open(d.http, "EIO=4&transport=websocket").await;
    let close = ws.close_frame().await.expect("a close frame");
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1013, "too many sessions")
    );

    let elsewhere = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    let other = http_from(elsewhere, d.http, "GET", handshake, b"").await;
    let packets = other.packets();
    assert_eq!(
        packets,
        [open_packet(&sid_of(&packets[0]), r#""websocket""#)]
    );

    held[0].connect(&alice.token).await;
    Polling::open(d.http, "").await;
    let again = http(d.http, "GET", handshake, b"").await;
    assert_eq!(again.status, 429, "{again:?}");
}

/// The shared pool holds: 128 sources (127.0.1.1 to 127.0.1.128) open their 128 sessions each,
/// 16,384 in all, the pool's size; the 16,385th handshake, from a source that has none, is
/// answered 503. Filling the pool took 128 addresses, and what it cost the daemon is bounded:
/// its resident memory grew by less than 2 KiB per session. A session that connects gives its
/// place in the pool back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_of_pending_sessions_holds_against_many_sources() {
    let d = start();
    let alice = Person::new("Alice");
    let handshake = "EIO=4&transport=polling";
    let sources = MAX_PENDING / MAX_PENDING_PER_SOURCE;
    let rss_before = d.rss_kib();
    let started = std::time::Instant::now();
    let mut opening = tokio::task::JoinSet::new();
    for i in 0..sources {
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + i as u8));
        let addr = d.http;
        opening
            .spawn(async move { pipelined_handshakes(from, addr, MAX_PENDING_PER_SOURCE).await });
    }
    let mut sids = Vec::new();
    while let Some(answers) = opening.join_next().await {
        for a in answers.expect("a source's handshakes") {
            let packets = a.packets();
            let sid = sid_of(&packets[0]);
            assert_eq!(packets, [open_packet(&sid, r#""websocket""#)]);
            sids.push(sid);
        }
    }
    let took = started.elapsed();
    assert_eq!(sids.len(), MAX_PENDING);
    let grown = d.rss_kib().saturating_sub(rss_before);
    println!(
        "{MAX_PENDING} pending sessions from {sources} sources in {took:?}: +{grown} KiB \
         resident ({} bytes a session)",
        grown * 1024 / MAX_PENDING as u64
    );
    assert!(grown < 2 * MAX_PENDING as u64, "+{grown} KiB");

    let newcomer = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 2, 1)));
    let refused = http_from(newcomer, d.http, "GET", handshake, b"").await;
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (503, "no session available"),
        "{refused:?}"
    );
    // Sessions end CONNECT_TIMEOUT after they opened: the first must still be pending.
    assert!(
        started.elapsed() < CONNECT_TIMEOUT - Duration::from_secs(1),
        "the pool took {:?} to fill: too slow to show it full",
        started.elapsed()
    );

    let mut first = Polling {
        addr: d.http,
        sid: sids[0].clone(),
        pending: VecDeque::new(),
    };
    first.connect(&alice.token).await;
    let let_in = http_from(newcomer, d.http, "GET", handshake, b"").await;
    assert_eq!(let_in.status, 200, "{let_in:?}");
    let again = http_from(newcomer, d.http, "GET", handshake, b"").await;
    assert_eq!(again.status, 503, "{again:?}");
}

/// `n` polling handshakes from `from`, written at once on one keep-alive connection (HTTP/1.1
/// pipelining): their answers, in order.
async fn pipelined_handshakes(from: IpAddr, addr: SocketAddr, n: usize) -> Vec<Answer> {
    let mut requests = String::new();
    for i in 0..n {
        let last = if i + 1 == n {
            "Connection: close\r\n"
        } else {
            ""
        };
        requests.push_str(&format!(
            "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: {addr}\r\n{last}\r\n"
        ));
    }
    let what = format!("{n} handshakes from {from}");
    let raw = exchange(Some(from), addr, &[requests.as_bytes()], &what).await;
    let mut answers = Vec::new();
    let mut rest = &raw[..];
    while !rest.is_empty() {
        let head_end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a head")
            + 4;
        let head = String::from_utf8_lossy(&rest[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .split("\r\n")
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("a length: {head}"));
        let end = head_end + length;
        answers.push(parse_answer(&rest[..end]).expect("an HTTP answer"));
        rest = &rest[end..];
    }
    assert_eq!(answers.len(), n, "answers from {from}");
    answers
}

/// A stop answers waiting polls at once with the close packet (they used to hold the HTTP
/// drain for its whole 5 s), and no new session opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_answers_waiting_polls_at_once() {
    let mut d = start();
    let alice = Person::new("Alice");
    let s = Polling::connected(d.http, &alice.token).await;
    let waiting = s.get_waiting().await;

    let started = std::time::Instant::now();
    let status = blocking(|| d.stop());
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert_eq!(answered(waiting).await.packets(), ["1"]);
    assert!(took < Duration::from_secs(3), "the stop took {took:?}");
}

/// The answer to a waiting poll, which must come within [`WAIT`].
async fn answered(waiting: JoinHandle<Answer>) -> Answer {
    tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the poll answered")
        .unwrap()
}

/// `packet` is Socket.IO's CONNECT answer, `40{"sid": ...}`, with a socket id of its own: not
/// the Engine.IO session's `sid`, which lets whoever knows it poll and post as the user.
fn assert_connected(packet: &str, sid: &str) {
    let id = sid_in(packet, "40");
    assert_eq!(id.len(), 32, "{packet}");
    assert_ne!(id, sid, "the socket id must not be the session id");
}

/// A `call:offer` event packet to `target` whose SDP is `sdp_len` bytes of `x`.
fn big_offer(call: &str, target: &str, sdp_len: usize) -> String {
    let sdp = "x".repeat(sdp_len);
    format!(
        r#"42["call:offer",{{"callId":"{call}","targetUserId":"{target}","offer":{{"type":"offer","sdp":"{sdp}"}}}}]"#
    )
}

/// Once connected, a session sends and receives events past maxPayload (a 150 KB offer, as an
/// SFU offer of a room of twenty with screens shared) on either transport; before its CONNECT,
/// a WebSocket message past maxPayload ends the session (1009), as a POST does (above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_events_cross_both_transports_once_connected() {
    const SDP: usize = 150_000;
    let d = start();
    let mut m = Mixed::connect(&d).await;
    let (a, b) = (m.alice.uid(), m.bob.uid());
    let call = blocking(|| m.api.answered_call(&m.alice, m.conversation, &[&m.bob]));
    let events = |packets: Vec<String>| -> Vec<(String, Value)> {
        packets.iter().filter_map(|p| event_of(p)).collect()
    };
    let offer_of = |events: &[(String, Value)]| -> Option<Value> {
        events
            .iter()
            .find(|(name, _)| name == "call:offer")
            .map(|(_, data)| data.clone())
    };

    // Polling to WebSocket.
    let packet = big_offer(&call, &b, SDP);
    assert!(packet.len() > MAX_FRAME);
    m.alice_s.send(&[&packet]).await;
    let mut got = Vec::new();
    let offer = loop {
        got.extend(event_of(&m.bob_ws.recv().await));
        if let Some(o) = offer_of(&got) {
            break o;
        }
    };
    assert_eq!(offer["fromUserId"], json!(a));
    assert_eq!(offer["offer"]["sdp"].as_str().map(str::len), Some(SDP));

    // WebSocket to polling, with an ack.
    let packet = big_offer(&call, &a, SDP).replacen("42", "427", 1);
    m.bob_ws.send(packet).await;
    assert_eq!(m.bob_ws.recv().await, r#"437[{"success":true}]"#);
    let mut got = Vec::new();
    let offer = loop {
        got.extend(events(vec![m.alice_s.next().await]));
        if let Some(o) = offer_of(&got) {
            break o;
        }
    };
    assert_eq!(offer["fromUserId"], json!(b));
    assert_eq!(offer["offer"]["sdp"].as_str().map(str::len), Some(SDP));

    // A WebSocket session that has not connected: past maxPayload, closed with 1009.
    let (mut stranger, _) = ws_session(d.http).await;
    stranger.send(format!("4{}", "x".repeat(MAX_FRAME))).await;
    let close = stranger.close_frame().await;
    assert_eq!(close.map(|c| c.code), Some(CloseCode::Size));
}
