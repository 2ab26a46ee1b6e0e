//! `DELETE /api/admin/users/{userId}/sessions` through the real daemon: a user in a call, with
//! a `/ws` socket, a Socket.IO socket and a TURN allocation over UDP, is cut off at once
//! (sockets closed saying why, call ended for the other side, allocation closed, old token and
//! TURN credentials refused), is let back in by a token issued after it, and stays cut off
//! across a restart on the same store.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use serde_json::Value;
use stun_types::message::{MessageWrite as _, MessageWriteExt as _, MessageWriteVec};
use turn_types::attribute::RequestedTransport;
use turn_types::message::ALLOCATE;

use crate::common::ws::{self, Hub, Next};
use crate::common::{self, Api, Daemon, Person, ADMIN_TOKEN};

/// `GET /api/calls/turn-credentials` as the holder of `token`: (username, password).
fn turn_credentials(api: &Api, token: &str) -> (String, String) {
    let (s, body) = api.get("/api/calls/turn-credentials", token);
    assert_eq!(s, 200, "{body}");
    let text = |k: &str| body["credentials"][k].as_str().expect(k).to_owned();
    (text("username"), text("credential"))
}

/// An Allocate of a UDP relay.
fn allocate_udp() -> MessageWriteVec {
    let mut w = common::request(ALLOCATE);
    w.add_attribute(&RequestedTransport::new(17)).unwrap();
    w
}

/// A UDP client of the relay that keeps its 5-tuple (and so its allocation).
struct TurnClient {
    sock: UdpSocket,
    turn: SocketAddr,
}

impl TurnClient {
    fn new(turn: SocketAddr) -> TurnClient {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        TurnClient { sock, turn }
    }

    /// Sends `bytes` until an answer comes (a few tries, as over any UDP): the answer.
    fn exchange(&self, bytes: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let answer = (0..6).find_map(|_| {
            self.sock.send_to(bytes, self.turn).ok()?;
            let (n, _) = self.sock.recv_from(&mut buf).ok()?;
            Some(buf[..n].to_vec())
        });
        answer.unwrap_or_else(|| panic!("no answer from the relay at {}", self.turn))
    }

    /// An Allocate signed with `(username, password)` after a challenge: the answer's code.
    fn allocate(&self, (username, password): &(String, String)) -> u16 {
        let challenge = self.exchange(&allocate_udp().finish());
        let nonce = common::nonce_of(&challenge);
        let req = common::seal(allocate_udp(), username, password, &nonce);
        common::code(&self.exchange(&req))
    }
}

/// Reads `hub` until the event `event` (others are skipped): its data.
async fn until_event(hub: &mut Hub, event: &str) -> Value {
    loop {
        let frame = hub.recv().await;
        if frame["event"] == event {
            return frame["data"].clone();
        }
    }
}

/// Reads `hub` (skipping frames) until its connection ends: the close frame's code and reason.
async fn close_of(hub: &mut Hub) -> (u16, String) {
    let mut close = None;
    loop {
        match hub.socket().next_within(ws::WAIT).await {
            Next::Frame(_) => {}
            Next::Close(Some(f)) => close = Some((u16::from(f.code), f.reason.to_string())),
            Next::Close(None) => panic!("{}: a close frame without a code", hub.who()),
            Next::End | Next::Error(_) => return close.expect("a close frame"),
            Next::Nothing => panic!("{}: still open", hub.who()),
        }
    }
}

/// A Socket.IO socket of `who` over a WebSocket, connected to the namespace and served (an
/// acknowledged emit has come back).
async fn socket_io(d: &Daemon, who: &Person) -> ws::Socket {
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", d.http);
    let mut sio = ws::Socket::open(ws::request(&url, None), &who.name, ws::WAIT).await;
    assert!(sio.recv().await.starts_with('0'), "the open packet");
    sio.send(format!(r#"40{{"token":"{}"}}"#, who.token)).await;
    assert!(sio.recv().await.starts_with("40{"), "connected");
    sio.send(r#"421["probe",{}]"#).await;
    assert!(sio.recv().await.starts_with("431"), "acknowledged");
    sio
}

/// Reads a Socket.IO socket until its connection ends: its text packets, and the close frame's
/// code and reason.
async fn sio_close_of(sio: &mut ws::Socket) -> (Vec<String>, (u16, String)) {
    let (mut packets, mut close) = (Vec::new(), None);
    loop {
        match sio.next_within(ws::WAIT).await {
            Next::Frame(p) => packets.push(p),
            Next::Close(Some(f)) => close = Some((u16::from(f.code), f.reason.to_string())),
            Next::End | Next::Error(_) => return (packets, close.expect("a close frame")),
            other => panic!("{}: {other:?}", sio.who()),
        }
    }
}

/// `GET /api/calls` with `token`: the status and the error code, if any.
fn history_with(api: &Api, token: &str) -> (u16, String) {
    let (s, body) = api.get("/api/calls", token);
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (s, code)
}

/// A token of `who` issued from the next second on (`iat` is in whole seconds, and a token of
/// the revocation's second is refused).
fn fresh_token(who: &Person) -> String {
    let issued = common::unix_now();
    while common::unix_now() == issued {
        std::thread::sleep(Duration::from_millis(20));
    }
    common::token(who.id, Some(&who.name), Some(&who.email))
}

#[tokio::test]
async fn a_revoked_user_is_cut_off_at_once_and_after_a_restart() {
    let d = Daemon::start("");
    let api = d.api();
    let (alice, bob) = (api.person("Alice"), api.person("Bob"));
    let conversation = api.conversation_of(&[&alice, &bob]);
    let mut alice_ws = Hub::open(&d, &alice).await;
    let mut bob_ws = Hub::open(&d, &bob).await;
    let mut alice_sio = socket_io(&d, &alice).await;
    let call = api.start_call(&alice, conversation, "audio", &[&bob]);
    until_event(&mut bob_ws, "call:incoming").await;
    api.act_ok(&bob, &call, "answer");
    let alice_turn = turn_credentials(&api, &alice.token);
    let bob_turn = turn_credentials(&api, &bob.token);
    let relayed = TurnClient::new(d.turn);
    assert_eq!(relayed.allocate(&alice_turn), 200);
    assert_eq!(TurnClient::new(d.turn).allocate(&bob_turn), 200);
    assert_eq!(d.metric_settled("switchboard_turn_allocations", 2), 2);

    let path = format!("/api/admin/users/{}/sessions", alice.id);
    let (s, body) = api.send("DELETE", &path, Some(&alice.token), None);
    assert_eq!(
        (s, common::error_code(&body)),
        (401, "invalid_token"),
        "admin only"
    );
    let (s, body) = api.send("DELETE", &path, Some(ADMIN_TOKEN), None);
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["userId"], alice.uid());
    assert_eq!(body["socketsClosed"], 2);
    assert_eq!(body["callsLeft"], serde_json::json!([call]));

    // Her socket closes, saying why; Bob's call ends, and the store says so.
    assert_eq!(
        close_of(&mut alice_ws).await,
        (1008, "token revoked".into())
    );
    let (packets, close) = sio_close_of(&mut alice_sio).await;
    assert_eq!(close, (1008, "token revoked".into()));
    let told = packets
        .iter()
        .position(|p| p.contains(r#""code":"token_revoked""#));
    assert!(
        told.is_some_and(|i| packets[i + 1..].first().map(String::as_str) == Some("41")),
        "told why, then disconnected: {packets:?}"
    );
    let ended = until_event(&mut bob_ws, "call:ended").await;
    assert_eq!(ended["reason"], "revoked", "{ended}");
    let stored = api.call(&bob, &call);
    assert_eq!(
        (&stored["status"], &stored["endReason"]),
        (&"ended".into(), &"revoked".into())
    );

    // Her allocation is gone; her credentials are refused for a new one, Bob's still work.
    let closed = d.wait_log(ws::WAIT, |l| {
        l.contains("allocation closed") && l.contains("revoked")
    });
    assert!(closed.is_some(), "no revoked allocation in the log");
    assert!(common::wait_until(ws::WAIT, || d
        .metric("switchboard_turn_allocations")
        == 1));
    assert_eq!(TurnClient::new(d.turn).allocate(&alice_turn), 401);
    assert_eq!(TurnClient::new(d.turn).allocate(&bob_turn), 200);

    // Her old token: refused on REST and for a new socket.
    assert_eq!(
        history_with(&api, &alice.token),
        (401, "token_revoked".into())
    );
    let url = format!("ws://{}/ws", d.http);
    let refusal = ws::refusal(ws::request(&url, Some(&alice.token))).await;
    assert_eq!(refusal.status(), 401);
    // A token issued after the revocation lets her back in, TURN included.
    let again = fresh_token(&alice);
    assert_eq!(history_with(&api, &again), (200, String::new()));
    assert_eq!(
        TurnClient::new(d.turn).allocate(&turn_credentials(&api, &again)),
        200
    );

    // A restart on the same store forgets nothing: her old token and TURN credentials stay
    // refused, the new token works.
    let d = Daemon::restart(d.kill());
    let api = d.api();
    assert_eq!(
        history_with(&api, &alice.token),
        (401, "token_revoked".into())
    );
    assert_eq!(history_with(&api, &again), (200, String::new()));
    assert_eq!(TurnClient::new(d.turn).allocate(&alice_turn), 401);
    assert_eq!(TurnClient::new(d.turn).allocate(&bob_turn), 200);
}
