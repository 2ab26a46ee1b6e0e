//! One datagram from a client, through the core's real entry point (`Server::handle_client`):
//! the whole STUN/TURN parse and dispatch path, and ChannelData (first byte 0x40–0x7f).
//!
//! The input is the datagram itself, nothing else, so real captures and the RFC 5769 vectors
//! are seeds as they are. Each input is fed four ways:
//!
//! 1. raw, from a UDP client, to a fresh server (what any host on the Internet can send);
//! 2. raw, from a TCP client, when it is one whole stream frame (what the driver passes on);
//! 3. raw, from a UDP client holding a dual allocation with two channels (and their
//!    permissions), when it is ChannelData or parses as STUN, so that
//!    ChannelData and Send indications reach the relaying code;
//! 4. when it parses as a STUN request or indication, re-signed: its own attributes with valid
//!    USERNAME/REALM/NONCE/MESSAGE-INTEGRITY added (FINGERPRINT kept), fed to that allocated
//!    server and to a fresh one, so the authenticated Allocate/Refresh/CreatePermission/
//!    ChannelBind code sees arbitrary attributes.
//!
//! Plus the attribute decoders of our own: `credentials::verify` on USERNAME, the nonce check
//! on NONCE, the long-term key and MESSAGE-INTEGRITY validation.
//!
//! Asserted: no panic; at most one answer per datagram, to the sender, a well-formed STUN
//! response carrying the request's transaction id; an unauthenticated answer from a fresh
//! server stays small (≤ 128 bytes); whatever is relayed goes to a peer with a permission and
//! is part of the datagram; `verify` accepts only what it says it accepts.

#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stun_types::attribute::{
    Attribute as _, AttributeStaticType, Fingerprint, MessageIntegrity, MessageIntegritySha256,
    Nonce, Realm, Username,
};
use stun_types::message::{Message, MessageClass, MessageHeader, MessageWriteExt};
use turn_types::attribute::AdditionalAddressFamily;
use turn_types::attribute::{ChannelNumber, Lifetime, RequestedTransport, XorPeerAddress};
use turn_types::message::{ALLOCATE, CHANNEL_BIND};
use turn_types::AddressFamily;

use switchboard_turn::credentials;
use switchboard_turn::proto::nonce::Nonces;
use switchboard_turn::proto::{
    ClientAction, Command, FiveTuple, RelayRequest, Server, ServerConfig, Transmit, PEER_HEADROOM,
    PEER_TAILROOM,
};
use switchboard_turn::Time;
use switchboard_turn_fuzz::{
    at, base_config, builder, check_peer_frame, client, ip, peer, seal, Sign, User, MAX_TRANSMIT,
    REALM,
};

fn config() -> ServerConfig {
    let mut c = base_config();
    c.relay_ips.push(ip("2001:db8::10"));
    c
}

fn now() -> Time {
    at(0)
}

/// The requests that set up the allocated server, built once (the nonce is deterministic for
/// the fixed key, time and 5-tuple).
struct Setup {
    user: User,
    nonce: String,
    requests: Vec<Vec<u8>>,
    /// Peers with a permission after the setup.
    permitted: Vec<SocketAddr>,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let tuple = client(0);
        let user = User::mint("alice", switchboard_turn_fuzz::T0 + 86_400);
        // The nonce, obtained the way a client does: an unauthenticated Allocate.
        let mut s = Server::new(config());
        let mut w = builder(MessageClass::Request, ALLOCATE, 1);
        w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
        s.handle_client(now(), tuple, &seal(w, None, false));
        let challenge = s.poll_transmit().expect("a 401").data;
        let nonce = Message::from_bytes(&challenge)
            .unwrap()
            .attribute::<Nonce>()
            .unwrap()
            .nonce()
            .to_owned();
        let sign = Sign {
            user: &user,
            nonce: Some(&nonce),
            realm: REALM,
            wrong_key: false,
        };
        let (p4, p6) = (peer(0), peer(3));
        let mut requests = Vec::new();
        // A dual allocation: IPv4 and IPv6 relayed addresses.
        let mut w = builder(MessageClass::Request, ALLOCATE, 2);
        w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
        w.add_attribute(&AdditionalAddressFamily::new(AddressFamily::IPV6))
            .unwrap();
        w.add_attribute(&Lifetime::new(3600)).unwrap();
        requests.push(seal(w, Some(&sign), false));
        // Two channels (each with its permission); other ports of these IPs get Data
        // indications.
        for (txid, number, p) in [(4u128, 0x4000u16, p4), (5, 0x7fff, p6)] {
            let mut w = builder(MessageClass::Request, CHANNEL_BIND, txid);
            w.add_attribute(&ChannelNumber::new(number)).unwrap();
            w.add_attribute(&XorPeerAddress::new(p, txid.into()))
                .unwrap();
            requests.push(seal(w, Some(&sign), true));
        }
        let setup = Setup {
            user,
            nonce,
            requests,
            permitted: vec![p4, p6],
        };
        // Check once that the setup does what it claims: every request succeeds.
        let mut s = Server::new(config());
        for r in &setup.requests {
            s.handle_client(now(), tuple, r);
            open_all(&mut s);
            let t = s.poll_transmit().expect("an answer to the setup");
            let m = Message::from_bytes(&t.data).expect("a STUN answer");
            assert_eq!(m.class(), MessageClass::Success, "setup failed: {m}");
        }
        setup
    })
}

/// Answers every OpenRelay as the driver would (a fixed port per family).
fn open_all(s: &mut Server) {
    while let Some(cmd) = s.poll_command() {
        if let Command::OpenRelay(RelayRequest { id, family, .. }) = cmd {
            let ip = s.config().relay_ip(family).expect("configured family");
            let port = if ip.is_ipv4() { 50000 } else { 50001 };
            s.handle_relay_opened(now(), id, family, Ok(SocketAddr::new(ip, port)));
        }
    }
}

/// A server holding an allocation for `client(0)`, with permissions and channels.
fn allocated() -> Server {
    let mut s = Server::new(config());
    for r in &setup().requests {
        s.handle_client(now(), client(0), r);
        open_all(&mut s);
    }
    while s.poll_transmit().is_some() {}
    while s.poll_event().is_some() {}
    s
}

/// The answers to one datagram: at most one, to the sender, a STUN response with the
/// request's transaction id.
fn check_answers(s: &mut Server, tuple: FiveTuple, data: &[u8], max_len: usize) {
    let answers: Vec<Transmit> = std::iter::from_fn(|| s.poll_transmit()).collect();
    assert!(
        answers.len() <= 1,
        "{} answers to one datagram",
        answers.len()
    );
    for t in answers {
        assert_eq!(t.tuple, tuple, "answer to someone else");
        assert!(t.data.len() <= max_len, "answer of {} bytes", t.data.len());
        let msg = Message::from_bytes(&t.data)
            .unwrap_or_else(|e| panic!("the core sent malformed STUN ({e}): {:02x?}", t.data));
        assert!(msg.is_response(), "answered with a {:?}", msg.class());
        let h = MessageHeader::from_bytes(data).expect("answered something that is not STUN");
        assert_eq!(
            msg.transaction_id(),
            h.transaction_id(),
            "wrong transaction id"
        );
        assert_eq!(msg.method(), h.get_type().method(), "wrong method");
    }
    while s.poll_event().is_some() {}
}

/// What was relayed: to a permitted peer, a part of the datagram.
fn check_action(action: &ClientAction<'_>, data: &[u8], permitted: &[SocketAddr]) {
    let within = |p: &[u8]| {
        let (a, b) = (data.as_ptr() as usize, p.as_ptr() as usize);
        b >= a && b + p.len() <= a + data.len()
    };
    match action {
        ClientAction::Done => {}
        ClientAction::Relay { peer, payload, .. } => {
            assert!(
                permitted.iter().any(|p| p.ip() == peer.ip()),
                "relayed to {peer}, which has no permission"
            );
            assert!(within(payload), "relayed bytes from outside the datagram");
            assert!(payload.len() <= 65_535);
        }
        ClientAction::Hairpin { .. } => panic!("hairpin without a permission for the relay"),
        ClientAction::Local { to, .. } => {
            panic!("a datagram for {to}, and no local peer is configured")
        }
    }
}

/// Our own decoders on the attributes that carry credentials.
fn decode_credentials(msg: &Message<'_>, tuple: &FiveTuple) {
    let now = now();
    if let Ok(u) = msg.attribute::<Username>() {
        let name = u.username();
        for separator in [credentials::DEFAULT_SEPARATOR, '_'] {
            let Ok(v) = credentials::verify(name, separator, now.unix_secs()) else {
                continue;
            };
            // The expiry before the first separator, the rest (or the whole username when
            // there is none) the user.
            let (expiry, rest) = name.split_once(separator).unwrap_or((name, ""));
            assert_eq!(v.user, if rest.is_empty() { name } else { rest });
            assert!(name.ends_with(v.user));
            assert_eq!(expiry.parse::<u64>().ok(), Some(v.expires_unix));
            assert!(name.len() <= credentials::MAX_USERNAME_LEN);
            assert!(
                v.expires_unix >= now.unix_secs(),
                "accepted an expired username"
            );
        }
        let password = credentials::password_for(b"fuzz-secret", name);
        let realm = msg.attribute::<Realm>().map(|r| r.realm().to_owned());
        let key = credentials::long_term_key(name, realm.as_deref().unwrap_or(REALM), &password);
        let _ = msg.validate_integrity_with_key(&key);
    }
    if let Ok(n) = msg.attribute::<Nonce>() {
        let nonces = Nonces::new(&[9; 32], 600);
        let _ = nonces.is_valid(n.nonce(), now, tuple);
    }
}

/// The message's own attributes, signed with valid credentials and a valid nonce.
fn resign(msg: &Message<'_>, nonce: &str, user: &User) -> Vec<u8> {
    let mut w = builder(msg.class(), msg.method(), msg.transaction_id().into());
    for (_, raw) in msg.iter_attributes() {
        let t = raw.get_type();
        if [
            Username::TYPE,
            Realm::TYPE,
            Nonce::TYPE,
            MessageIntegrity::TYPE,
            MessageIntegritySha256::TYPE,
            Fingerprint::TYPE,
        ]
        .contains(&t)
        {
            continue;
        }
        let _ = w.add_attribute(&raw);
    }
    let sign = Sign {
        user,
        nonce: Some(nonce),
        realm: REALM,
        wrong_key: false,
    };
    seal(w, Some(&sign), msg.has_attribute(Fingerprint::TYPE))
}

fuzz_target!(|data: &[u8]| {
    // The driver reads at most 65,535 bytes per datagram.
    let data = &data[..data.len().min(65_535)];
    let setup = setup();
    let udp = client(0);

    // 1. Raw, to a fresh server: unauthenticated, so small answers only.
    let mut fresh = Server::new(config());
    let action = fresh.handle_client(now(), udp, data);
    assert_eq!(action, ClientAction::Done, "a fresh server relayed");
    assert!(fresh.poll_command().is_none(), "unauthenticated state");
    check_answers(&mut fresh, udp, data, 128);
    assert_eq!(fresh.allocation_count(), 0);

    // 2. Raw, from a TCP client, when it is exactly one stream frame.
    if switchboard_turn::proto::stream::frame_len(data) == Ok(Some(data.len())) {
        let tcp = client(4);
        let action = fresh.handle_client(now(), tcp, data);
        assert_eq!(action, ClientAction::Done);
        check_answers(&mut fresh, tcp, data, 128);
    }

    // 3. Raw, from the client holding an allocation: only what can get further there than on
    // a fresh server (ChannelData, and STUN that parses), as setting it up costs.
    let channel_data = data.first().is_some_and(|b| b & 0xc0 == 0x40);
    let parsed = Message::from_bytes(data);
    if !channel_data && parsed.is_err() {
        return;
    }
    let mut s = allocated();
    let action = s.handle_client(now(), udp, data);
    check_action(&action, data, &setup.permitted);
    if let ClientAction::Relay {
        alloc,
        peer,
        payload,
    } = action
    {
        // The peer answers with the same bytes: framed in place for the client.
        let mut buf = vec![0u8; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
        let range = PEER_HEADROOM..PEER_HEADROOM + payload.len();
        buf[range.clone()].copy_from_slice(payload);
        let back = s
            .handle_peer_data(now(), alloc, peer, &mut buf, range)
            .expect("a permitted peer's answer is delivered");
        assert_eq!(back.tuple, udp);
        check_peer_frame(&buf[back.frame], peer, payload, false);
    }
    check_answers(&mut s, udp, data, MAX_TRANSMIT);
    assert!(s.allocation_count() <= 1);

    // 4. Re-signed, when it is a STUN request or indication.
    let Ok(msg) = parsed else {
        return;
    };
    decode_credentials(&msg, &udp);
    if !matches!(
        msg.class(),
        MessageClass::Request | MessageClass::Indication
    ) {
        return;
    }
    let signed = resign(&msg, &setup.nonce, &setup.user);
    if let Ok(m) = Message::from_bytes(&signed) {
        decode_credentials(&m, &udp);
    }
    let action = s.handle_client(now(), udp, &signed);
    check_action(&action, &signed, &setup.permitted);
    open_all(&mut s);
    check_answers(&mut s, udp, &signed, MAX_TRANSMIT);

    let mut fresh = Server::new(config());
    let action = fresh.handle_client(now(), udp, &signed);
    assert_eq!(action, ClientAction::Done, "relayed without an allocation");
    open_all(&mut fresh);
    check_answers(&mut fresh, udp, &signed, MAX_TRANSMIT);
    assert!(fresh.allocation_count() <= 1);
});
