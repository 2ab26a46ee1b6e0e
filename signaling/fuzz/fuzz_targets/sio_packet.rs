//! `sio_packet`: arbitrary bytes as what a Socket.IO client sends to `/socket.io/`.
//!
//! 1. Decoded, as `sio.rs` decodes (its own `split_namespace`, `split_ack`, `split_event`,
//!    in the order `Engine::on_packet`/`on_message` apply them): as a polling payload (split
//!    on 0x1e, each packet) and as one WebSocket message. The splitters' invariants hold, and
//!    the server's own encoder round-trips: `event_packet(name, data)` decodes to `name` and
//!    `data`, for every event the server sends and for the client's event name when plain.
//! 2. Through the in-process daemon, both transports, after a real handshake and a Socket.IO
//!    CONNECT as Alice (in a live call, named by the placeholder id): the bytes as the body of
//!    a polling POST, then as one WebSocket text frame (raw, if not UTF-8), each followed by a
//!    ping whose pong marks the end of the answers. Checked: the POST's status (413 over
//!    `MAX_AUTHENTICATED_FRAME`, the bound once connected, past `maxPayload`'s; 400 for
//!    non-UTF-8; else `ok`); that such a frame ends the WebSocket, with nothing answered; that
//!    every packet the server sends decodes; and, packet by packet, that the answers are those the decoded packets call for (the pong
//!    of a ping; an acknowledgement for each event that asked for one, with the error its data
//!    earns by the contract of `ws.rs`; an `error` event for a refusal without one; `connect_error`
//!    for another namespace; nothing else), and that `1`, `41` and an over-long ping end the session.
//!
//! An input starting `6␞6␞` (two noops) is first grown with more noops to either side of
//! `MAX_AUTHENTICATED_FRAME` (see `pad`), to probe the bound (over WebSocket it is one noop
//! packet).

#![no_main]

use axum::http::{Method, StatusCode};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use switchboard_signaling::{sio, ws};
use switchboard_signaling_fuzz::{
    check_verdict, decode_eio, pad, substitute, typed, world, Eio, Read, Sio, Verdict, World,
    MAX_PING,
};

/// Every event the server sends (`event.rs`, `hub.rs`, `sio.rs`).
const SERVER_EVENTS: [&str; 11] = [
    "call:incoming",
    "call:offer",
    "call:answer",
    "call:ice-candidate",
    "call:ended",
    "call:participant-joined",
    "call:participant-left",
    "call:media-state-changed",
    "call:answered-elsewhere",
    "call:quality",
    "error",
];

const SENTINEL: &str = "2fuzz-sentinel";
const PONG: &str = "3fuzz-sentinel";
/// Client packets that take a token from the socket's bucket (of `ws::BURST`, 100) beyond
/// which the answers are not predicted (some would be `rate_limited`).
const TOKENS: usize = 90;

fuzz_target!(|data: &[u8]| {
    let w = world();
    w.run(async {
        let call = w.live_call().await;
        let input = substitute(data, call);
        let body = pad(&input, b"6\x1e6\x1e", b"6\x1e", ws::MAX_AUTHENTICATED_FRAME);
        decode_only(&body);
        polling(w, &body).await;
        w.settle().await;
        websocket(w, &body).await;
        w.settle().await;
    });
});

// ---------------------------------------------------------------------------------------------
// 1. The decoder alone.

fn decode_only(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    for packet in text.split('\x1e') {
        check_packet(packet);
    }
    check_packet(text);
}

fn check_packet(packet: &str) {
    // The splitters on whatever follows the packet's type.
    if let Some(rest) = packet.get(2..) {
        check_splitters(rest);
    }
    if let Eio::Message(Some(Sio::Event {
        event: Some((event, data)),
        ..
    })) = decode_eio(packet)
    {
        check_round_trip(&event, data);
        let _ = typed(&event, data);
    }
}

fn check_splitters(s: &str) {
    let (ns, rest) = sio::split_namespace(s);
    if s.starts_with('/') {
        assert!(
            ns.starts_with('/') && !ns.contains(','),
            "namespace {ns:?} of {s:?}"
        );
        if s.len() > ns.len() {
            assert_eq!(s, format!("{ns},{rest}"), "split_namespace lost bytes");
        } else {
            assert!(s == ns && rest.is_empty(), "split_namespace({s:?})");
        }
    } else {
        assert_eq!((ns, rest), ("/", s), "split_namespace without a leading /");
    }
    let (ack, body) = sio::split_ack(s);
    let digits = &s[..s.len() - body.len()];
    assert!(s.ends_with(body) && digits.bytes().all(|b| b.is_ascii_digit()));
    assert!(
        !body.starts_with(|c: char| c.is_ascii_digit()),
        "split_ack left a digit"
    );
    assert_eq!(ack, digits.parse::<u64>().ok(), "split_ack({s:?})");
    if let Some(id) = ack {
        // What the server writes in an acknowledgement (`43<id>[...]`) reads back.
        assert_eq!(sio::split_ack(&format!("{id}{body}")), (Some(id), body));
    }
    if let Some((event, data)) = sio::split_event(body) {
        assert_eq!(data, data.trim(), "event data with white space around it");
        serde_json::from_str::<&serde_json::value::RawValue>(data)
            .unwrap_or_else(|e| panic!("split_event's data is not JSON ({e}): {data}"));
        let _ = event;
    }
}

/// The server's encoder, then the decoder: the same event.
fn check_round_trip(client_event: &str, data: &str) {
    let plain = serde_json::to_string(client_event).ok() == Some(format!("\"{client_event}\""));
    let names = SERVER_EVENTS
        .iter()
        .copied()
        .chain(plain.then_some(client_event));
    for name in names {
        let packet = sio::event_packet(name, data);
        let expected = Eio::Message(Some(Sio::Event {
            ns: "/",
            ack: None,
            event: Some((name.to_owned(), data)),
        }));
        assert_eq!(
            decode_eio(&packet),
            expected,
            "event_packet({name:?}, {data})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. The daemon.

/// What the decoded packets call for, in order.
#[derive(Debug)]
enum Expect {
    Pong(String),
    /// `43<id>[...]`: an error `invalid_frame`, or what `event` with `data` earns.
    Ack {
        id: u64,
        invalid_frame: bool,
        event: Option<(String, String)>,
    },
    /// `42["error", {code: "invalid_frame", event}]`.
    InvalidFrame(String),
    /// An event without an ack: an `error` event if refused, else nothing.
    Maybe(String, String),
    /// `44/ns,{"message": "Invalid namespace"}`.
    NsRefused(String),
}

/// The answers `packets` call for, and whether the session outlives them; `None` when more
/// of them take a token than [`TOKENS`].
fn expectations(packets: &[Eio<'_>]) -> Option<(Vec<Expect>, bool)> {
    let takers = packets
        .iter()
        .filter(|p| matches!(p, Eio::Message(_) | Eio::Ping(_)))
        .count();
    if takers > TOKENS {
        return None;
    }
    let mut out = Vec::new();
    for p in packets {
        match p {
            Eio::Close => return Some((out, false)),
            Eio::Ping(text) if 1 + text.len() > MAX_PING => return Some((out, false)),
            Eio::Ping(text) => out.push(Expect::Pong(text.to_string())),
            Eio::Other | Eio::Message(None) => {}
            Eio::Message(Some(sio)) => match sio {
                Sio::Connect { ns, .. } if *ns != "/" => {
                    out.push(Expect::NsRefused(ns.to_string()))
                }
                Sio::Connect { .. } => {}
                Sio::Disconnect { ns }
                | Sio::Event { ns, .. }
                | Sio::Binary { ns, .. }
                | Sio::Other { ns, .. }
                    if *ns != "/" => {}
                Sio::Disconnect { .. } => return Some((out, false)),
                Sio::Event { ack, event, .. } => match (ack, event) {
                    (Some(id), event) => out.push(Expect::Ack {
                        id: *id,
                        invalid_frame: event.is_none(),
                        event: event.as_ref().map(|(e, d)| (e.clone(), d.to_string())),
                    }),
                    (None, None) => out.push(Expect::InvalidFrame(String::new())),
                    (None, Some((e, d))) => out.push(Expect::Maybe(e.clone(), d.to_string())),
                },
                Sio::Binary { ack, event, .. } => match ack {
                    Some(id) => out.push(Expect::Ack {
                        id: *id,
                        invalid_frame: true,
                        event: None,
                    }),
                    None => out.push(Expect::InvalidFrame(event.clone().unwrap_or_default())),
                },
                Sio::Other { .. } => {}
            },
        }
    }
    Some((out, true))
}

/// A packet from the server, read with the client-side decoders.
#[derive(Debug)]
#[allow(dead_code)] // All fields are read in the failures' Debug output.
enum Got {
    Pong(String),
    Ack(u64, Value),
    Error(Value),
    NsRefused(String, Value),
    /// An event the hub pushed (`call:ended`, ...).
    Push(String),
    /// Engine.IO's own: close, noop, ping.
    Engine(String),
}

fn read_packet(p: &str) -> Got {
    if let Some(text) = p.strip_prefix('3') {
        return Got::Pong(text.to_owned());
    }
    if matches!(p, "1" | "2" | "6") {
        return Got::Engine(p.to_owned());
    }
    if let Some(rest) = p.strip_prefix("43") {
        let (id, body) = sio::split_ack(rest);
        let id = id.unwrap_or_else(|| panic!("an acknowledgement without an id: {p}"));
        let v: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("an acknowledgement that is not JSON ({e}): {p}"));
        assert!(v.as_array().is_some_and(|a| a.len() == 1), "ack body: {p}");
        return Got::Ack(id, v[0].clone());
    }
    if let Some(rest) = p.strip_prefix("44") {
        let (ns, body) = sio::split_namespace(rest);
        let v: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("a connect_error that is not JSON ({e}): {p}"));
        return Got::NsRefused(ns.to_owned(), v);
    }
    match decode_eio(p) {
        Eio::Message(Some(Sio::Event {
            ns: "/",
            ack: None,
            event: Some((event, data)),
        })) => {
            let v: Value = serde_json::from_str(data).expect("split_event's data is JSON");
            if event == "error" {
                Got::Error(v)
            } else {
                Got::Push(event)
            }
        }
        other => panic!("a server packet the decoder reads as {other:?}: {p:?}"),
    }
}

/// The answers (read) against what the packets called for.
fn check_answers(expected: &[Expect], got: &[Got], transport: &str) {
    let mut g = got
        .iter()
        .filter(|x| !matches!(x, Got::Push(_) | Got::Engine(_)))
        .peekable();
    let context = || format!("{transport}: expected {expected:?}, got {got:?}");
    for e in expected {
        match e {
            Expect::Pong(t) => match g.next() {
                Some(Got::Pong(x)) if x == t => {}
                other => panic!("no pong {t:?} but {other:?}; {}", context()),
            },
            Expect::Ack {
                id,
                invalid_frame,
                event,
            } => {
                let Some(Got::Ack(got_id, body)) = g.next() else {
                    panic!("no acknowledgement {id}; {}", context());
                };
                assert_eq!(got_id, id, "{}", context());
                let code = body["error"]["code"].as_str();
                if *invalid_frame {
                    assert_eq!(code, Some("invalid_frame"), "{}", context());
                } else if let Some((event, data)) = event {
                    check_verdict(event, data, code, transport);
                }
            }
            Expect::InvalidFrame(event) => match g.next() {
                Some(Got::Error(v))
                    if v["code"] == "invalid_frame" && v["event"] == json!(event) => {}
                other => panic!("no invalid_frame error but {other:?}; {}", context()),
            },
            Expect::Maybe(event, data) => {
                // The next `error` is this event's if it is about it and fits its verdict
                // (a later event of the same name may be refused instead: then this one was
                // performed, and its verdict must say it could be).
                let verdict = typed(event, data);
                let fits = |v: &Value| {
                    let code = v["code"].as_str().unwrap_or_default();
                    v["event"] == json!(event)
                        && match &verdict {
                            Verdict::UnknownEvent => code == "unknown_event",
                            Verdict::InvalidField(_) => code == "invalid_field",
                            Verdict::Valid(_) => {
                                !matches!(code, "unknown_event" | "invalid_field" | "invalid_frame")
                            }
                        }
                };
                match g.peek() {
                    Some(Got::Error(v)) if fits(v) => {
                        g.next();
                    }
                    _ => check_verdict(event, data, None, transport),
                }
            }
            Expect::NsRefused(ns) => match g.next() {
                Some(Got::NsRefused(n, v))
                    if n == ns && *v == json!({"message": "Invalid namespace"}) => {}
                other => panic!("no connect_error for {ns:?} but {other:?}; {}", context()),
            },
        }
    }
    if let Some(extra) = g.next() {
        panic!("an answer nothing called for: {extra:?}; {}", context());
    }
}

/// The open packet: `0{sid, upgrades, pingInterval, pingTimeout, maxPayload}`; the sid.
fn check_open(text: &str, upgrades: bool) -> String {
    let v: Value = text
        .strip_prefix('0')
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("not an open packet: {text}"));
    let expected = if upgrades {
        json!(["websocket"])
    } else {
        json!([])
    };
    assert_eq!(v["upgrades"], expected, "{text}");
    assert_eq!(
        v["pingInterval"],
        ws::PING_EVERY.as_millis() as u64,
        "{text}"
    );
    assert_eq!(
        v["pingTimeout"],
        ws::PING_TIMEOUT.as_millis() as u64,
        "{text}"
    );
    assert_eq!(v["maxPayload"], ws::MAX_FRAME, "{text}");
    v["sid"].as_str().expect("a sid").to_owned()
}

fn check_connected(text: &str) {
    let v: Option<Value> = text
        .strip_prefix("40")
        .and_then(|j| serde_json::from_str(j).ok());
    assert!(
        v.as_ref().is_some_and(|v| v["sid"].is_string()),
        "not a CONNECT answer: {text}"
    );
}

fn connect_packet(w: &World) -> String {
    format!(r#"40{{"token":"{}"}}"#, w.alice_token)
}

fn assert_refused(r: &switchboard_signaling_fuzz::Reply, code: u8, what: &str) {
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.text());
    assert_eq!(r.json()["code"], code, "{what}: {}", r.text());
}

/// The input as a polling POST body.
async fn polling(w: &World, body: &[u8]) {
    let base = "/socket.io/?EIO=4&transport=polling";
    let open = w.request(Method::GET, base, None, None, false).await;
    assert_eq!(open.status, StatusCode::OK, "handshake: {}", open.text());
    let sid = check_open(&open.text(), true);
    let uri = format!("{base}&sid={sid}");
    let post = |b: Vec<u8>| w.request(Method::POST, &uri, None, Some(b), true);
    let r = post(connect_packet(w).into_bytes()).await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "ok"));
    let r = w.request(Method::GET, &uri, None, None, false).await;
    check_connected(&r.text());

    let r = post(body.to_vec()).await;
    let text = std::str::from_utf8(body);
    if body.len() > ws::MAX_AUTHENTICATED_FRAME {
        assert_eq!(
            r.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{} bytes",
            body.len()
        );
        // The session is over.
        let r = w.request(Method::GET, &uri, None, None, false).await;
        return assert_refused(&r, 1, "a poll after a payload too large");
    }
    match text {
        Ok(_) => assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "ok")),
        Err(_) => assert_refused(&r, 3, "a payload that is not UTF-8"),
    }
    let packets: Vec<Eio<'_>> =
        text.map_or(Vec::new(), |t| t.split('\x1e').map(decode_eio).collect());
    let expected = expectations(&packets);

    let r = post(SENTINEL.as_bytes().to_vec()).await;
    if r.status != StatusCode::OK {
        assert_refused(&r, 1, "the sentinel");
        if let Some((_, alive)) = &expected {
            assert!(
                !alive,
                "the session ended, yet nothing in the payload ends it"
            );
        }
        return;
    }
    let mut got = Vec::new();
    loop {
        let r = w.request(Method::GET, &uri, None, None, false).await;
        if r.status != StatusCode::OK {
            assert_refused(&r, 1, "a poll");
            break;
        }
        let text = r.text();
        let packets: Vec<&str> = text.split('\x1e').collect();
        let last = *packets.last().unwrap();
        got.extend(packets.iter().map(|p| read_packet(p)));
        if last == PONG || last == "1" {
            break;
        }
    }
    if let Some((expected, alive)) = expected {
        assert!(
            alive,
            "the session outlived a payload that ends it: {got:?}"
        );
        assert!(
            matches!(got.last(), Some(Got::Pong(p)) if p == &PONG[1..]),
            "{got:?}"
        );
        got.pop();
        check_answers(&expected, &got, "polling");
    }
    let r = post(b"1".to_vec()).await;
    if r.status != StatusCode::OK {
        assert_refused(&r, 1, "the close");
    }
}

/// The input as one WebSocket text frame.
async fn websocket(w: &World, input: &[u8]) {
    let mut ws = w.websocket("/socket.io/?EIO=4&transport=websocket").await;
    let Read::Text(open) = ws.read().await else {
        panic!("no open packet over the WebSocket");
    };
    check_open(&open, false);
    assert!(ws.send(connect_packet(w).as_bytes()).await);
    match ws.read().await {
        Read::Text(t) => check_connected(&t),
        other => panic!("no CONNECT answer: {other:?}"),
    }
    let sent = ws.send(input).await && ws.send(SENTINEL.as_bytes()).await;
    // The input may be the sentinel itself: then two pongs.
    let mut pongs = 1 + usize::from(input == SENTINEL.as_bytes());
    let mut got = Vec::new();
    let mut closed = None;
    while pongs > 0 {
        match ws.read().await {
            Read::Text(t) => {
                pongs -= usize::from(t == PONG);
                got.push(read_packet(&t));
            }
            Read::Closed(why) => {
                closed = Some(why);
                break;
            }
        }
    }
    if closed.is_none() {
        got.pop();
    }
    let text = std::str::from_utf8(input)
        .ok()
        .filter(|_| input.len() <= ws::MAX_AUTHENTICATED_FRAME);
    let Some(text) = text else {
        // The WebSocket refuses the frame: the connection ends, nothing answered.
        assert!(
            closed.is_some() && got.iter().all(|g| matches!(g, Got::Push(_))),
            "a frame the WebSocket must refuse ({} bytes): {got:?}",
            input.len()
        );
        return ws.close().await;
    };
    if let Some((expected, alive)) = expectations(&[decode_eio(text)]) {
        assert!(sent, "the server went before the frame was sent");
        if alive {
            assert!(closed.is_none(), "closed ({closed:?}) after {got:?}");
            check_answers(&expected, &got, "websocket");
        } else {
            assert!(
                closed.is_some(),
                "the session outlived a packet that ends it: {got:?}"
            );
        }
    }
    ws.close().await;
}
