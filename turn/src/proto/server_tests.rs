//! Every rule of the core, driven with injected time from a fixed zero.

use std::net::SocketAddr;
use std::time::Duration;

use stun_types::attribute::{
    ErrorCode, Fingerprint, Nonce, Realm, UnknownAttributes, Username, XorMappedAddress,
};
use stun_types::message::{
    IntegrityAlgorithm, Message, MessageClass, MessageIntegrityCredentials, MessageWrite,
    MessageWriteExt, MessageWriteVec, Method, ShortTermCredentials, TransactionId, BINDING,
};
use turn_types::attribute::{
    AdditionalAddressFamily, AddressErrorCode, ChannelNumber, Data, EvenPort, Lifetime,
    RequestedAddressFamily, RequestedTransport, ReservationToken, XorPeerAddress,
    XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, SEND};
use turn_types::AddressFamily;

use super::*;
use crate::proto::credentials::{long_term_key, mint};

const REALM: &str = "example.org";
const SECRET: &[u8] = b"s3cret";
const T0: u64 = 1_700_000_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn config() -> ServerConfig {
    let mut c = ServerConfig::new(REALM, SECRET, "198.51.100.10".parse().unwrap());
    c.nonce_key = [9; 32];
    c.relay_ports = 50000..=50999;
    c
}

struct H {
    server: Server,
    now: Time,
    next_port: u16,
    closed: Vec<AllocId>,
}

impl H {
    fn new(config: ServerConfig) -> Self {
        H {
            server: Server::new(config),
            now: Time::from_unix_secs(T0),
            next_port: 50000,
            closed: Vec::new(),
        }
    }

    fn advance(&mut self, secs: u64) {
        self.now = self.now + Duration::from_secs(secs);
        self.server.handle_timeout(self.now);
        self.open_relays();
    }

    /// Feeds a datagram, carries out commands (opening relays on sequential ports), and
    /// returns the answers.
    fn feed(&mut self, tuple: FiveTuple, data: &[u8]) -> Vec<Vec<u8>> {
        let action = self.server.handle_client(self.now, tuple, data);
        assert_eq!(action, ClientAction::Done, "expected no relaying");
        self.open_relays();
        self.answers(tuple)
    }

    fn open_relays(&mut self) {
        while let Some(cmd) = self.server.poll_command() {
            match cmd {
                Command::OpenRelay {
                    id,
                    family,
                    even_port,
                } => {
                    if even_port && self.next_port % 2 == 1 {
                        self.next_port += 1;
                    }
                    let port = self.next_port;
                    self.next_port += 1;
                    let ip = self.server.config().relay_ip(family).unwrap();
                    let a = SocketAddr::new(ip, port);
                    self.server.handle_relay_opened(self.now, id, family, Ok(a));
                }
                Command::CloseRelay { id } => self.closed.push(id),
            }
        }
    }

    fn answers(&mut self, tuple: FiveTuple) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(t) = self.server.poll_transmit() {
            assert_eq!(t.tuple, tuple);
            out.push(t.data);
        }
        out
    }

    fn one(&mut self, tuple: FiveTuple, data: &[u8]) -> Vec<u8> {
        let mut v = self.feed(tuple, data);
        assert_eq!(v.len(), 1, "expected exactly one answer");
        v.pop().unwrap()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }

    /// A nonce for `tuple`, obtained the way a client does: an unauthenticated request.
    fn nonce(&mut self, tuple: FiveTuple) -> String {
        let mut w = request(ALLOCATE);
        w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
        let bytes = self.one(tuple, &w.finish());
        let msg = Message::from_bytes(&bytes).unwrap();
        msg.attribute::<Nonce>().unwrap().nonce().to_owned()
    }

    /// A successful allocation for `user` from `tuple`; returns the relayed address.
    fn allocate(&mut self, tuple: FiveTuple, user: &str) -> SocketAddr {
        let cred = Cred::new(user, T0 + 86_400);
        let nonce = self.nonce(tuple);
        let mut w = request(ALLOCATE);
        w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
        let bytes = self.one(tuple, &cred.seal(w, &nonce));
        let msg = Message::from_bytes(&bytes).unwrap();
        assert_eq!(msg.class(), MessageClass::Success, "{}", describe(&bytes));
        msg.attribute::<XorRelayedAddress>()
            .unwrap()
            .addr(msg.transaction_id())
    }

    /// An authenticated request from `tuple` (fresh nonce each time).
    fn authed(&mut self, tuple: FiveTuple, cred: &Cred, w: MessageWriteVec) -> Vec<u8> {
        let nonce = self.nonce(tuple);
        self.one(tuple, &cred.seal(w, &nonce))
    }
}

struct Cred {
    username: String,
    password: String,
}

impl Cred {
    fn new(user: &str, expiry: u64) -> Self {
        let c = mint(SECRET, user, expiry);
        Cred {
            username: c.username,
            password: c.password,
        }
    }

    fn seal(&self, w: MessageWriteVec, nonce: &str) -> Vec<u8> {
        self.seal_with(w, nonce, false)
    }

    fn seal_with(&self, mut w: MessageWriteVec, nonce: &str, fingerprint: bool) -> Vec<u8> {
        w.add_attribute(&Username::new(&self.username).unwrap())
            .unwrap();
        w.add_attribute(&Realm::new(REALM).unwrap()).unwrap();
        w.add_attribute(&Nonce::new(nonce).unwrap()).unwrap();
        let key = long_term_key(&self.username, REALM, &self.password);
        w.add_message_integrity_with_key(&key, IntegrityAlgorithm::Sha1)
            .unwrap();
        if fingerprint {
            w.add_fingerprint().unwrap();
        }
        w.finish()
    }
}

fn request(method: Method) -> MessageWriteVec {
    Message::builder_request(method, MessageWriteVec::new())
}

fn client(port: u16) -> FiveTuple {
    FiveTuple::udp(
        SocketAddr::new("192.0.2.1".parse().unwrap(), port),
        addr("198.51.100.10:3478"),
    )
}

fn code(bytes: &[u8]) -> u16 {
    let msg = Message::from_bytes(bytes).unwrap();
    match msg.class() {
        MessageClass::Success => 200,
        MessageClass::Error => msg.attribute::<ErrorCode>().unwrap().code(),
        c => panic!("not a response: {c:?}"),
    }
}

fn describe(bytes: &[u8]) -> String {
    match Message::from_bytes(bytes) {
        Ok(m) => m.to_string(),
        Err(e) => format!("unparseable: {e}"),
    }
}

fn with_peer(method: Method, peer: &str) -> MessageWriteVec {
    let mut w = request(method);
    let txid = w.transaction_id();
    w.add_attribute(&XorPeerAddress::new(addr(peer), txid))
        .unwrap();
    w
}

fn channel_bind(number: u16, peer: &str) -> MessageWriteVec {
    let mut w = with_peer(CHANNEL_BIND, peer);
    w.add_attribute(&ChannelNumber::new(number)).unwrap();
    w
}

fn channel_data(number: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = number.to_be_bytes().to_vec();
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn send_indication(peer: &str, payload: &[u8]) -> Vec<u8> {
    let mut w = Message::builder_indication(SEND, MessageWriteVec::new());
    let txid = w.transaction_id();
    w.add_attribute(&XorPeerAddress::new(addr(peer), txid))
        .unwrap();
    w.add_attribute(&Data::new(payload)).unwrap();
    w.finish()
}

/// Runs `payload` from `peer` into allocation `id` and returns the frame for the client.
fn from_peer(h: &mut H, id: AllocId, peer: &str, payload: &[u8]) -> Option<(FiveTuple, Vec<u8>)> {
    let mut buf = vec![0u8; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
    buf[PEER_HEADROOM..PEER_HEADROOM + payload.len()].copy_from_slice(payload);
    let range = PEER_HEADROOM..PEER_HEADROOM + payload.len();
    h.server
        .handle_peer_data(h.now, id, addr(peer), &mut buf, range)
        .map(|a| (a.tuple, buf[a.frame].to_vec()))
}

fn alloc_id(h: &H, tuple: FiveTuple) -> AllocId {
    *h.server.by_tuple.get(&tuple).unwrap()
}

/// A peer the default policy allows.
const PUBLIC_PEER: &str = "8.8.4.4:4000";

// ---- Binding ------------------------------------------------------------------------------

#[test]
fn binding_returns_the_reflexive_address() {
    let mut h = H::new(config());
    let req = request(BINDING).finish();
    let bytes = h.one(client(1000), &req);
    let msg = Message::from_bytes(&bytes).unwrap();
    assert_eq!(msg.class(), MessageClass::Success);
    assert_eq!(
        msg.transaction_id(),
        Message::from_bytes(&req).unwrap().transaction_id()
    );
    let mapped = msg.attribute::<XorMappedAddress>().unwrap();
    assert_eq!(mapped.addr(msg.transaction_id()), addr("192.0.2.1:1000"));
    assert!(!msg.has_attribute(Fingerprint::TYPE));
    assert!(!msg.has_attribute(stun_types::attribute::Software::TYPE));
    assert_eq!(bytes.len(), 32, "header and XOR-MAPPED-ADDRESS only");
}

#[test]
fn binding_echoes_fingerprint_and_drops_a_bad_one() {
    let mut h = H::new(config());
    let mut w = request(BINDING);
    w.add_fingerprint().unwrap();
    let mut req = w.finish();
    let bytes = h.one(client(1000), &req);
    assert!(Message::from_bytes(&bytes)
        .unwrap()
        .has_attribute(Fingerprint::TYPE));
    let last = req.len() - 1;
    req[last] ^= 0xff;
    assert!(
        h.feed(client(1000), &req).is_empty(),
        "bad FINGERPRINT: not STUN, no answer"
    );
}

#[test]
fn malformed_request_keeps_its_transaction_id_for_a_400() {
    let mut h = H::new(config());
    let good = request(BINDING).finish();
    let txid = Message::from_bytes(&good).unwrap().transaction_id();
    // An attribute that runs past the end of the message.
    let mut bad = good.clone();
    bad[3] = 8;
    bad.extend_from_slice(&[0x00, 0x06, 0x00, 0x40, b'a', b'b', b'c', b'd']);
    let bytes = h.one(client(1000), &bad);
    let msg = Message::from_bytes(&bytes).unwrap();
    assert_eq!(msg.transaction_id(), txid);
    assert_eq!(code(&bytes), 400);
    // A length field that disagrees with the datagram.
    let mut bad = good;
    bad.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(code(&h.one(client(1000), &bad)), 400);
}

#[test]
fn garbage_and_responses_get_no_answer() {
    let mut h = H::new(config());
    for junk in [
        &b""[..],
        b"\x00",
        b"\xff\xff\xff\xff",
        &[0u8; 19][..],
        &[0x80; 64][..],
    ] {
        assert!(h.feed(client(1000), junk).is_empty());
    }
    let mut w = Message::builder(
        stun_types::message::MessageType::from_class_method(MessageClass::Success, BINDING),
        TransactionId::generate(),
        MessageWriteVec::new(),
    );
    w.add_attribute(&XorMappedAddress::new(
        addr("1.2.3.4:5"),
        w.transaction_id(),
    ))
    .unwrap();
    assert!(h.feed(client(1000), &w.finish()).is_empty());
}

#[test]
fn unknown_method_is_400() {
    let mut h = H::new(config());
    let bytes = h.one(client(1000), &request(Method::new(0x0099)).finish());
    assert_eq!(code(&bytes), 400);
}

#[test]
fn unknown_comprehension_required_attribute_is_420() {
    let mut h = H::new(config());
    let mut w = request(BINDING);
    w.push_attribute_unchecked(&stun_types::attribute::RawAttribute::new(
        0x0030.into(),
        &[1, 2, 3, 4],
    ));
    // Comprehension-optional ones are ignored.
    w.push_attribute_unchecked(&stun_types::attribute::RawAttribute::new(
        0x8030.into(),
        &[1, 2, 3, 4],
    ));
    let bytes = h.one(client(1000), &w.finish());
    assert_eq!(code(&bytes), 420);
    let msg = Message::from_bytes(&bytes).unwrap();
    let unknown = msg.attribute::<UnknownAttributes>().unwrap();
    assert!(unknown.has_attribute(0x0030.into()));
    assert!(!unknown.has_attribute(0x8030.into()));
}

// ---- RFC 5769 test vectors ----------------------------------------------------------------

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// RFC 5769 §2.1: a Binding request with short-term credentials and FINGERPRINT.
const RFC5769_2_1: &str = "000100582112a442b7e7a701bc34d686fa87dfae
    802200105354554e207465737420636c69656e74 002400046e0001ff 80290008932ff9b151263b36
    000600096576746a3a6836765920202000080014 9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2
    80280004e57a3bcf";

/// RFC 5769 §2.4: a request with long-term credentials.
const RFC5769_2_4: &str = "000100602112a44278ad3433c6ad72c029da412e
    00060012e3839ee38388e383aae38383e382afe382b90000
    0015001c662f2f3439396b3935346436 4f4c33346f4c394653547679363473 41
    0014000b6578616d706c652e6f726700
    00080014f67024656dd64a3e02b8e0712e85c9a28ca89666";

#[test]
fn rfc5769_sample_request_integrity_and_fingerprint() {
    let data = hex(RFC5769_2_1);
    let msg = Message::from_bytes(&data).expect("FINGERPRINT verifies");
    let key = MessageIntegrityCredentials::from(ShortTermCredentials::new(
        "VOkJxbRl1RmTxUk/WvJxBt".to_owned(),
    ))
    .make_key(IntegrityAlgorithm::Sha1);
    assert!(msg.validate_integrity_with_key(&key).is_ok());
    // Our server: PRIORITY (0x0024) is an ICE attribute a TURN server does not understand.
    let mut h = H::new(config());
    let bytes = h.one(client(1000), &data);
    assert_eq!(code(&bytes), 420);
    let resp = Message::from_bytes(&bytes).unwrap();
    assert_eq!(resp.transaction_id(), msg.transaction_id());
    assert!(resp
        .attribute::<UnknownAttributes>()
        .unwrap()
        .has_attribute(0x0024.into()));
    assert!(resp.has_attribute(Fingerprint::TYPE), "FINGERPRINT echoed");
}

#[test]
fn rfc5769_long_term_vector_verifies_with_our_key_derivation() {
    let data = hex(RFC5769_2_4);
    let msg = Message::from_bytes(&data).unwrap();
    let user = msg.attribute::<Username>().unwrap();
    assert_eq!(
        user.username(),
        "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}"
    );
    // The password after SASLprep is "TheMatrIX".
    let key = long_term_key(user.username(), "example.org", "TheMatrIX");
    assert!(msg.validate_integrity_with_key(&key).is_ok());
    let wrong = long_term_key(user.username(), "example.org", "TheMatrix");
    assert!(msg.validate_integrity_with_key(&wrong).is_err());
}

// ---- Authentication ----------------------------------------------------------------------

#[test]
fn unauthenticated_allocate_is_challenged_small_and_identically() {
    let mut h = H::new(config());
    let mut w = request(ALLOCATE);
    w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
        .unwrap();
    w.add_attribute(&Lifetime::new(600)).unwrap();
    let req = w.finish();
    assert_eq!(req.len(), 36, "the minimal Allocate");
    let first = h.one(client(1000), &req);
    assert_eq!(code(&first), 401);
    let msg = Message::from_bytes(&first).unwrap();
    assert_eq!(msg.attribute::<Realm>().unwrap().realm(), REALM);
    assert_eq!(msg.attribute::<ErrorCode>().unwrap().reason(), "");
    assert!(!msg.has_attribute(stun_types::attribute::MessageIntegrity::TYPE));
    assert!(first.len() <= 2 * req.len(), "401 is {} bytes", first.len());
    // A retransmission within the minute: byte-identical, and no state was kept.
    h.now = h.now + Duration::from_secs(10);
    assert_eq!(h.one(client(1000), &req), first);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.server.by_tuple.is_empty() && h.server.per_user.is_empty());
}

#[test]
fn challenges_over_udp_are_limited_per_source_address() {
    use crate::proto::limit::{CHALLENGES_PER_SECOND, CHALLENGE_BURST};
    let mut h = H::new(config());
    let mut w = request(ALLOCATE);
    w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
        .unwrap();
    let req = w.finish();
    // One address, any ports (a spoofer picks them): the burst, then silence.
    let answered = (0..2 * CHALLENGE_BURST as u16)
        .filter(|i| !h.feed(client(1000 + i), &req).is_empty())
        .count();
    assert_eq!(answered as u64, CHALLENGE_BURST);
    let dropped = h
        .events()
        .into_iter()
        .filter(|e| *e == Event::ChallengeDropped)
        .count();
    assert_eq!(dropped as u64, CHALLENGE_BURST);
    // Nothing was kept for the silenced requests either.
    assert!(h.server.by_tuple.is_empty() && h.server.tombstones.is_empty());
    // Another address is not affected; nor is the same one over TCP (its address is real).
    let other = FiveTuple::udp(addr("192.0.2.99:1000"), addr("198.51.100.10:3478"));
    assert_eq!(code(&h.one(other, &req)), 401);
    assert_eq!(code(&h.one(tcp_client(5000), &req)), 401);
    // Nor loopback, which no outside packet can claim.
    let local = FiveTuple::udp(addr("127.0.0.1:1000"), addr("127.0.0.1:3478"));
    for _ in 0..2 * CHALLENGE_BURST {
        assert_eq!(code(&h.one(local, &req)), 401);
    }
    // A second later, a second's worth again.
    h.advance(1);
    let answered = (0..2 * CHALLENGE_BURST as u16)
        .filter(|i| !h.feed(client(3000 + i), &req).is_empty())
        .count();
    assert_eq!(answered as u64, CHALLENGES_PER_SECOND);
}

#[test]
fn unauthenticated_requests_that_cannot_succeed_are_not_challenged() {
    let mut h = H::new(config());
    // A bare Allocate: 400, no bigger than twice the request.
    let req = request(ALLOCATE).finish();
    let bytes = h.one(client(1000), &req);
    assert_eq!(code(&bytes), 400);
    assert!(bytes.len() <= 2 * req.len());
    assert!(!Message::from_bytes(&bytes)
        .unwrap()
        .has_attribute(Nonce::TYPE));
    // Refresh, CreatePermission, ChannelBind without integrity from a 5-tuple with no
    // allocation: nothing at all.
    for method in [REFRESH, CREATE_PERMISSION, CHANNEL_BIND] {
        assert!(h.feed(client(1000), &request(method).finish()).is_empty());
    }
    // With an allocation they are challenged as usual.
    h.allocate(client(1000), "alice");
    assert_eq!(code(&h.one(client(1000), &request(REFRESH).finish())), 401);
}

#[test]
fn refresh_never_grants_less_than_the_default_and_moves_the_deadline() {
    let mut h = H::new(config());
    h.allocate(client(1), "alice");
    let alice = Cred::new("alice", T0 + 86_400);
    let mut w = request(REFRESH);
    w.add_attribute(&Lifetime::new(5)).unwrap();
    let bytes = h.authed(client(1), &alice, w);
    let msg = Message::from_bytes(&bytes).unwrap();
    assert_eq!(msg.attribute::<Lifetime>().unwrap().seconds(), 600);
    // Many refreshes leave one deadline per allocation, not one per refresh.
    for _ in 0..50 {
        assert_eq!(code(&h.authed(client(1), &alice, request(REFRESH))), 200);
    }
    assert_eq!(h.server.expiries.len(), 1);
    h.advance(599);
    assert_eq!(h.server.allocation_count(), 1);
    h.advance(1);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.server.expiries.is_empty());
}

#[test]
fn stuffed_requests_cost_linear_work_and_are_bounded() {
    let mut h = H::new(config());
    // Thousands of distinct unknown comprehension-required types: 420 listing a few.
    let mut w = request(BINDING);
    for t in 0x0100u16..0x1100 {
        w.push_attribute_unchecked(&stun_types::attribute::RawAttribute::new(t.into(), &[]));
    }
    let bytes = h.one(client(1000), &w.finish());
    assert_eq!(code(&bytes), 420);
    assert!(bytes.len() < 200, "{} bytes", bytes.len());
    // The first MAX_UNKNOWN types are listed, and the scan stops there.
    let msg = Message::from_bytes(&bytes).unwrap();
    let listed = msg.attribute::<UnknownAttributes>().unwrap();
    assert!((0x0100u16..0x0110).all(|t| listed.has_attribute(t.into())));
    assert!(!listed.has_attribute(0x0110.into()));
    // More XOR-PEER-ADDRESSes than an allocation may hold: 508 before any is looked at.
    h.allocate(client(1), "alice");
    let alice = Cred::new("alice", T0 + 86_400);
    let mut w = request(CREATE_PERMISSION);
    let txid = w.transaction_id();
    for i in 0..200u32 {
        let peer = SocketAddr::new(std::net::Ipv4Addr::from(0x0808_0000 + i).into(), 1);
        w.add_attribute(&XorPeerAddress::new(peer, txid)).unwrap();
    }
    assert_eq!(code(&h.authed(client(1), &alice, w)), 508);
}

#[test]
fn integrity_without_username_realm_or_nonce_is_400() {
    let mut h = H::new(config());
    let cred = Cred::new("alice", T0 + 60);
    let mut w = request(ALLOCATE);
    w.add_attribute(&Username::new(&cred.username).unwrap())
        .unwrap();
    w.add_attribute(&Realm::new(REALM).unwrap()).unwrap();
    let key = long_term_key(&cred.username, REALM, &cred.password);
    w.add_message_integrity_with_key(&key, IntegrityAlgorithm::Sha1)
        .unwrap();
    assert_eq!(code(&h.one(client(1000), &w.finish())), 400);
    assert!(h
        .events()
        .contains(&Event::AuthFailed(AuthFailure::MissingAttributes)));
}

#[test]
fn stale_forged_and_foreign_nonces_get_438_with_a_fresh_one() {
    let mut h = H::new(config());
    let cred = Cred::new("alice", T0 + 86_400);
    let alloc_req = || {
        let mut w = request(ALLOCATE);
        w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
        w
    };
    let nonce = h.nonce(client(1000));
    // Another 5-tuple's nonce.
    let bytes = h.one(client(1001), &cred.seal(alloc_req(), &nonce));
    assert_eq!(code(&bytes), 438);
    let fresh = Message::from_bytes(&bytes)
        .unwrap()
        .attribute::<Nonce>()
        .unwrap()
        .nonce()
        .to_owned();
    assert_ne!(fresh, nonce);
    // A forged one.
    let bytes = h.one(client(1000), &cred.seal(alloc_req(), "AAAAAAAAAAAAAAAA"));
    assert_eq!(code(&bytes), 438);
    // An expired one (nonces live 10 minutes, rounded up to the minute).
    h.advance(11 * 60 + 1);
    let bytes = h.one(client(1000), &cred.seal(alloc_req(), &nonce));
    assert_eq!(code(&bytes), 438);
    assert!(Message::from_bytes(&bytes)
        .unwrap()
        .has_attribute(Realm::TYPE));
    assert!(h
        .events()
        .contains(&Event::AuthFailed(AuthFailure::StaleNonce)));
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn expired_forged_and_foreign_credentials_get_401() {
    let mut h = H::new(config());
    let alloc_req = || {
        let mut w = request(ALLOCATE);
        w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
        w
    };
    let cases: Vec<(Cred, AuthFailure)> = vec![
        (Cred::new("alice", T0 - 1), AuthFailure::Expired),
        (
            Cred {
                username: format!("{}:alice", T0 + 60),
                password: "not-the-password".into(),
            },
            AuthFailure::BadIntegrity,
        ),
        (
            Cred {
                username: "alice".into(),
                password: "x".into(),
            },
            AuthFailure::MalformedUsername,
        ),
        (
            // Minted with another secret.
            {
                let c = mint(b"other secret", "alice", T0 + 60);
                Cred {
                    username: c.username,
                    password: c.password,
                }
            },
            AuthFailure::BadIntegrity,
        ),
    ];
    for (cred, failure) in cases {
        let bytes = h.authed(client(1000), &cred, alloc_req());
        assert_eq!(code(&bytes), 401, "{failure:?}");
        let msg = Message::from_bytes(&bytes).unwrap();
        assert!(msg.has_attribute(Nonce::TYPE) && msg.has_attribute(Realm::TYPE));
        assert!(
            h.events().contains(&Event::AuthFailed(failure)),
            "{failure:?}"
        );
    }
    // The wrong realm.
    let cred = Cred::new("alice", T0 + 60);
    let nonce = h.nonce(client(1000));
    let mut w = alloc_req();
    w.add_attribute(&Username::new(&cred.username).unwrap())
        .unwrap();
    w.add_attribute(&Realm::new("evil.example").unwrap())
        .unwrap();
    w.add_attribute(&Nonce::new(&nonce).unwrap()).unwrap();
    let key = long_term_key(&cred.username, "evil.example", &cred.password);
    w.add_message_integrity_with_key(&key, IntegrityAlgorithm::Sha1)
        .unwrap();
    assert_eq!(code(&h.one(client(1000), &w.finish())), 401);
    assert!(h
        .events()
        .contains(&Event::AuthFailed(AuthFailure::WrongRealm)));
    assert_eq!(h.server.allocation_count(), 0);
}

// ---- Allocate ----------------------------------------------------------------------------

#[test]
fn allocate_succeeds_with_integrity_and_the_advertised_address() {
    let mut c = config();
    c.external_ips = vec!["192.0.2.200".parse().unwrap()];
    let mut h = H::new(c);
    let cred = Cred::new("alice", T0 + 3600);
    let mut w = request(ALLOCATE);
    w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
        .unwrap();
    let nonce = h.nonce(client(1000));
    let bytes = cred.seal_with(w, &nonce, true);
    let resp = h.one(client(1000), &bytes);
    let msg = Message::from_bytes(&resp).unwrap();
    assert_eq!(msg.class(), MessageClass::Success, "{}", describe(&resp));
    let txid = msg.transaction_id();
    let relayed = msg.attribute::<XorRelayedAddress>().unwrap().addr(txid);
    assert_eq!(relayed, addr("192.0.2.200:50000"), "external_ip advertised");
    assert_eq!(msg.attribute::<Lifetime>().unwrap().seconds(), 600);
    assert_eq!(
        msg.attribute::<XorMappedAddress>().unwrap().addr(txid),
        addr("192.0.2.1:1000")
    );
    assert!(msg.has_attribute(Fingerprint::TYPE));
    let key = long_term_key(&cred.username, REALM, &cred.password);
    assert!(msg.validate_integrity_with_key(&key).is_ok());
    let events = h.events();
    assert!(events.iter().any(|e| matches!(e,
        Event::AllocationCreated { user, relayed, .. }
            if &**user == "alice" && *relayed == addr("198.51.100.10:50000"))));
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn allocate_lifetime_is_clamped_between_default_and_maximum() {
    let mut h = H::new(config());
    for (i, (asked, granted)) in [(7200, 3600), (60, 600), (1200, 1200)]
        .into_iter()
        .enumerate()
    {
        let cred = Cred::new("alice", T0 + 86_400);
        let mut w = request(ALLOCATE);
        w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
        w.add_attribute(&Lifetime::new(asked)).unwrap();
        let bytes = h.authed(client(2000 + i as u16), &cred, w);
        let msg = Message::from_bytes(&bytes).unwrap();
        assert_eq!(msg.attribute::<Lifetime>().unwrap().seconds(), granted);
    }
}

#[test]
fn retransmitted_allocate_gets_the_same_answer_and_another_gets_437() {
    let mut h = H::new(config());
    let cred = Cred::new("alice", T0 + 3600);
    let nonce = h.nonce(client(1000));
    let mut w = request(ALLOCATE);
    w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
        .unwrap();
    let req = cred.seal(w, &nonce);
    let first = h.one(client(1000), &req);
    assert_eq!(code(&first), 200);
    h.now = h.now + Duration::from_secs(2);
    assert_eq!(h.one(client(1000), &req), first, "identical bytes");
    assert_eq!(h.server.allocation_count(), 1);
    let mut w = request(ALLOCATE);
    w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
        .unwrap();
    assert_eq!(code(&h.authed(client(1000), &cred, w)), 437);
    // Authentication comes first (RFC 8656 §7.2): an unauthenticated one is challenged.
    let mut w = request(ALLOCATE);
    w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
        .unwrap();
    assert_eq!(code(&h.one(client(1000), &w.finish())), 401);
}

#[test]
fn allocate_attribute_rules() {
    let mut h = H::new(config());
    let cred = Cred::new("alice", T0 + 3600);
    type Build = Box<dyn Fn(&mut MessageWriteVec)>;
    let cases: Vec<(u16, Build)> = vec![
        (400, Box::new(|_| {})), // no REQUESTED-TRANSPORT
        (
            442,
            Box::new(|w| {
                w.add_attribute(&RequestedTransport::new(RequestedTransport::TCP))
                    .unwrap()
            }),
        ),
        (
            508, // EVEN-PORT with R: a reservation
            Box::new(|w| {
                w.add_attribute(&RequestedTransport::new(17)).unwrap();
                w.add_attribute(&EvenPort::new(true)).unwrap();
            }),
        ),
        (
            508,
            Box::new(|w| {
                w.add_attribute(&RequestedTransport::new(17)).unwrap();
                w.add_attribute(&ReservationToken::new(42)).unwrap();
            }),
        ),
        (
            400,
            Box::new(|w| {
                w.add_attribute(&RequestedTransport::new(17)).unwrap();
                w.add_attribute(&EvenPort::new(false)).unwrap();
                w.add_attribute(&ReservationToken::new(42)).unwrap();
            }),
        ),
        (
            440,
            Box::new(|w| {
                w.add_attribute(&RequestedTransport::new(17)).unwrap();
                w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV6))
                    .unwrap();
            }),
        ),
    ];
    for (want, build) in cases {
        let mut w = request(ALLOCATE);
        build(&mut w);
        let bytes = h.authed(client(3000), &cred, w);
        assert_eq!(code(&bytes), want, "{}", describe(&bytes));
        // Errors after authentication carry MESSAGE-INTEGRITY.
        let key = long_term_key(&cred.username, REALM, &cred.password);
        assert!(Message::from_bytes(&bytes)
            .unwrap()
            .validate_integrity_with_key(&key)
            .is_ok());
    }
    assert_eq!(
        h.server.allocation_count(),
        0,
        "failed requests change nothing"
    );
    // EVEN-PORT without R: an even port.
    let mut w = request(ALLOCATE);
    w.add_attribute(&RequestedTransport::new(17)).unwrap();
    w.add_attribute(&EvenPort::new(false)).unwrap();
    h.next_port = 50001;
    let bytes = h.authed(client(3001), &cred, w);
    let msg = Message::from_bytes(&bytes).unwrap();
    let relayed = msg.attribute::<XorRelayedAddress>().unwrap();
    assert_eq!(relayed.addr(msg.transaction_id()).port(), 50002);
    // DONT-FRAGMENT is accepted.
    let mut w = request(ALLOCATE);
    w.add_attribute(&RequestedTransport::new(17)).unwrap();
    w.add_attribute(&turn_types::attribute::DontFragment::new())
        .unwrap();
    assert_eq!(code(&h.authed(client(3000), &cred, w)), 200);
}

#[test]
fn user_and_total_quotas_give_486() {
    let mut c = config();
    c.user_quota = 2;
    c.total_quota = 3;
    let mut h = H::new(c);
    h.allocate(client(1), "alice");
    h.allocate(client(2), "alice");
    let cred = Cred::new("alice", T0 + 3600);
    let mut w = request(ALLOCATE);
    w.add_attribute(&RequestedTransport::new(17)).unwrap();
    assert_eq!(code(&h.authed(client(3), &cred, w)), 486);
    assert!(h.events().contains(&Event::QuotaReached { total: false }));
    h.allocate(client(4), "bob");
    let cred = Cred::new("carol", T0 + 3600);
    let mut w = request(ALLOCATE);
    w.add_attribute(&RequestedTransport::new(17)).unwrap();
    assert_eq!(code(&h.authed(client(5), &cred, w)), 486);
    assert!(h.events().contains(&Event::QuotaReached { total: true }));
    assert_eq!(h.server.allocation_count(), 3);
    // Freeing one makes room again.
    let alice = Cred::new("alice", T0 + 86_400);
    let mut w = request(REFRESH);
    w.add_attribute(&Lifetime::new(0)).unwrap();
    assert_eq!(code(&h.authed(client(1), &alice, w)), 200);
    h.allocate(client(6), "alice");
}

impl Cred {
    /// A credential for exactly `username`, signed with the right secret.
    fn raw(username: &str) -> Self {
        Cred {
            username: username.to_owned(),
            password: crate::proto::credentials::password_for(SECRET, username),
        }
    }
}

fn udp_allocate() -> MessageWriteVec {
    let mut w = request(ALLOCATE);
    w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
        .unwrap();
    w
}

/// Other deployments' usernames (see `credentials`): quotas and usage count the user after
/// the first separator, whatever it contains; a username without one is a user of its own.
#[test]
fn quotas_and_usage_count_opaque_user_names() {
    let mut c = config();
    c.user_quota = 2;
    let mut h = H::new(c);
    // Two Matrix users of one homeserver: two quotas, though both names hold `:example.org`.
    h.allocate(client(1), "@alice:example.org");
    h.allocate(client(2), "@alice:example.org");
    h.allocate(client(3), "@bob:example.org");
    // Alice again, with a credential of another expiry: the same user, over her quota.
    let again = Cred::raw(&format!("{}:@alice:example.org", T0 + 7200));
    assert_eq!(code(&h.authed(client(4), &again, udp_allocate())), 486);
    assert!(h.events().contains(&Event::QuotaReached { total: false }));
    // Jitsi's `<expiry>` alone and an empty user: each username is its own user.
    for (port, username) in [
        (5, format!("{}", T0 + 3600)),
        (6, format!("{}:", T0 + 3600)),
    ] {
        let cred = Cred::raw(&username);
        assert_eq!(code(&h.authed(client(port), &cred, udp_allocate())), 200);
    }
    let mut users: Vec<&str> = h.server.usage_by_user().map(|(u, _)| u).collect();
    users.sort_unstable();
    assert_eq!(
        users,
        [
            "1700003600",
            "1700003600:",
            "@alice:example.org",
            "@alice:example.org",
            "@bob:example.org"
        ]
    );
    // Non-ASCII, spaces and separators inside the user: opaque too.
    let cred = Cred::raw(&format!("{}:Zoë Ünal:東京", T0 + 3600));
    assert_eq!(code(&h.authed(client(7), &cred, udp_allocate())), 200);
    assert!(h.server.usage_by_user().any(|(u, _)| u == "Zoë Ünal:東京"));
}

#[test]
fn the_configured_separator_splits_the_username() {
    let mut c = config();
    c.rest_api_separator = '_';
    let mut h = H::new(c);
    let cred = Cred::raw(&format!("{}_@alice:example.org", T0 + 3600));
    assert_eq!(code(&h.authed(client(1), &cred, udp_allocate())), 200);
    assert!(h
        .server
        .usage_by_user()
        .any(|(u, _)| u == "@alice:example.org"));
    // The colon is no separator now: `<expiry>:...` has no digits-only expiry. A 401, with
    // the HMAC right.
    let colon = Cred::raw(&format!("{}:alice", T0 + 3600));
    assert_eq!(code(&h.authed(client(2), &colon, udp_allocate())), 401);
    assert!(h
        .events()
        .contains(&Event::AuthFailed(AuthFailure::MalformedUsername)));
}

#[test]
fn overlong_and_malformed_usernames_get_401_with_the_hmac_right() {
    let mut h = H::new(config());
    let at_limit = format!("{}:{}", T0 + 3600, "x".repeat(512 - 11));
    assert_eq!(at_limit.len(), 512);
    assert_eq!(
        code(&h.authed(client(1), &Cred::raw(&at_limit), udp_allocate())),
        200
    );
    // 513 bytes: still a STUN USERNAME, but over our bound.
    let over = format!("{at_limit}y");
    assert_eq!(
        code(&h.authed(client(2), &Cred::raw(&over), udp_allocate())),
        401
    );
    assert!(h
        .events()
        .contains(&Event::AuthFailed(AuthFailure::MalformedUsername)));
    for username in ["", "alice", ":alice", "12a:alice", "alice:1700003600"] {
        let bytes = h.authed(client(3), &Cred::raw(username), udp_allocate());
        assert_eq!(code(&bytes), 401, "{username:?}");
        assert!(h
            .events()
            .contains(&Event::AuthFailed(AuthFailure::MalformedUsername)));
    }
    // Expired, with any user part.
    let expired = Cred::raw(&format!("{}:@alice:example.org", T0 - 1));
    assert_eq!(code(&h.authed(client(4), &expired, udp_allocate())), 401);
    assert!(h
        .events()
        .contains(&Event::AuthFailed(AuthFailure::Expired)));
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn no_relay_port_gives_508_and_leaves_nothing() {
    let mut h = H::new(config());
    let cred = Cred::new("alice", T0 + 3600);
    let nonce = h.nonce(client(1000));
    let mut w = request(ALLOCATE);
    w.add_attribute(&RequestedTransport::new(17)).unwrap();
    let req = cred.seal(w, &nonce);
    let action = h.server.handle_client(h.now, client(1000), &req);
    assert_eq!(action, ClientAction::Done);
    let Some(Command::OpenRelay { id, .. }) = h.server.poll_command() else {
        panic!("expected OpenRelay");
    };
    h.server
        .handle_relay_opened(h.now, id, Family::V4, Err(OpenError::NoPorts));
    let answers = h.answers(client(1000));
    assert_eq!(code(&answers[0]), 508);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.server.per_user.is_empty());
    assert_eq!(h.server.poll_command(), None, "no socket to close");
}

// ---- Refresh -----------------------------------------------------------------------------

#[test]
fn refresh_rules() {
    let mut h = H::new(config());
    let alice = Cred::new("alice", T0 + 86_400);
    // No allocation: 437.
    assert_eq!(code(&h.authed(client(1), &alice, request(REFRESH))), 437);
    h.allocate(client(1), "alice");
    // Another user on the same 5-tuple: 441.
    let mallory = Cred::new("mallory", T0 + 86_400);
    assert_eq!(code(&h.authed(client(1), &mallory, request(REFRESH))), 441);
    assert!(h
        .events()
        .contains(&Event::AuthFailed(AuthFailure::WrongCredentials)));
    // Refresh extends; capped at the maximum.
    let mut w = request(REFRESH);
    w.add_attribute(&Lifetime::new(99_999)).unwrap();
    let bytes = h.authed(client(1), &alice, w);
    assert_eq!(
        Message::from_bytes(&bytes)
            .unwrap()
            .attribute::<Lifetime>()
            .unwrap()
            .seconds(),
        3600
    );
    h.advance(3000);
    assert_eq!(
        h.server.allocation_count(),
        1,
        "refreshed beyond the first 600 s"
    );
    // Lifetime 0 deletes; its retransmission gets the same bytes.
    let nonce = h.nonce(client(1));
    let mut w = request(REFRESH);
    w.add_attribute(&Lifetime::new(0)).unwrap();
    let req = alice.seal(w, &nonce);
    let first = h.one(client(1), &req);
    assert_eq!(code(&first), 200);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.events().iter().any(|e| matches!(
        e,
        Event::AllocationClosed {
            reason: CloseReason::Deleted,
            ..
        }
    )));
    assert_eq!(h.closed.len(), 1, "its relay socket closed");
    assert_eq!(h.one(client(1), &req), first, "retransmitted delete");
    h.advance(60);
    assert_eq!(
        code(&h.one(client(1), &req)),
        437,
        "tombstone gone after 40 s"
    );
}

#[test]
fn allocation_expires_with_its_usage_reported() {
    let mut h = H::new(config());
    let relayed = h.allocate(client(1), "alice");
    h.events();
    let id = alloc_id(&h, client(1));
    let alice = Cred::new("alice", T0 + 86_400);
    assert_eq!(
        code(&h.authed(client(1), &alice, with_peer(CREATE_PERMISSION, PUBLIC_PEER))),
        200
    );
    let send = send_indication(PUBLIC_PEER, b"hello");
    let action = h.server.handle_client(h.now, client(1), &send);
    assert!(matches!(
        action,
        ClientAction::Relay {
            payload: b"hello",
            ..
        }
    ));
    assert!(from_peer(&mut h, id, PUBLIC_PEER, b"pong!!").is_some());
    assert_eq!(
        h.server.poll_timeout(),
        Some(Time::from_unix_secs(T0 + 30)),
        "sweep first"
    );
    h.advance(599);
    assert_eq!(h.server.allocation_count(), 1);
    h.advance(1);
    assert_eq!(h.server.allocation_count(), 0);
    let closed = h.events().into_iter().find_map(|e| match e {
        Event::AllocationClosed {
            usage,
            reason,
            lifetime,
            ..
        } => Some((usage, reason, lifetime)),
        _ => None,
    });
    let (usage, reason, lifetime) = closed.expect("closed event");
    assert_eq!(reason, CloseReason::Expired);
    assert_eq!(lifetime, Duration::from_secs(600));
    assert_eq!(
        usage,
        Usage {
            packets_to_peer: 1,
            bytes_to_peer: 5,
            packets_from_peer: 1,
            bytes_from_peer: 6
        }
    );
    assert_eq!(h.closed, vec![id]);
    assert!(!h.server.by_relay.contains_key(&relayed));
}

// ---- Permissions and peer policy ---------------------------------------------------------

#[test]
fn peer_policy_matrix_is_403_on_permission_channel_and_send() {
    let mut h = H::new(config());
    h.allocate(client(1), "alice");
    let id = alloc_id(&h, client(1));
    let alice = Cred::new("alice", T0 + 86_400);
    let refused = [
        "127.0.0.1:9",
        "0.0.0.0:9",
        "10.0.0.1:9",
        "169.254.169.254:80",
        "[::1]:9",
        "[::ffff:127.0.0.1]:9",
        "[64:ff9b::7f00:1]:9",
        "[2002:7f00:1::]:9",
        "192.168.1.1:9",
        "100.64.0.1:9",
        "224.0.0.1:9",
        "255.255.255.255:9",
        "[fe80::1]:9",
        "[fd00::1]:9",
    ];
    for peer in refused {
        let bytes = h.authed(client(1), &alice, with_peer(CREATE_PERMISSION, peer));
        assert_eq!(code(&bytes), 403, "CreatePermission {peer}");
        let bytes = h.authed(client(1), &alice, channel_bind(0x4000, peer));
        assert_eq!(code(&bytes), 403, "ChannelBind {peer}");
        let send = send_indication(peer, b"x");
        let action = h.server.handle_client(h.now, client(1), &send);
        assert_eq!(action, ClientAction::Done, "Send {peer}");
    }
    assert!(h
        .events()
        .iter()
        .any(|e| matches!(e, Event::PeerRefused(Refusal::Reserved("link-local")))));
    // Nothing was installed: data from those peers is dropped.
    assert!(from_peer(&mut h, id, "127.0.0.1:9", b"x").is_none());
    assert_eq!(h.server.get(id).unwrap().permissions.len(), 0);
}

#[test]
fn create_permission_is_all_or_nothing_and_checks_family() {
    let mut h = H::new(config());
    h.allocate(client(1), "alice");
    let id = alloc_id(&h, client(1));
    let alice = Cred::new("alice", T0 + 86_400);
    // One good and one refused peer: 403 and neither installed.
    let mut w = with_peer(CREATE_PERMISSION, PUBLIC_PEER);
    let txid = w.transaction_id();
    w.add_attribute(&XorPeerAddress::new(addr("10.1.1.1:1"), txid))
        .unwrap();
    assert_eq!(code(&h.authed(client(1), &alice, w)), 403);
    assert!(from_peer(&mut h, id, PUBLIC_PEER, b"x").is_none());
    // A public IPv6 peer on an IPv4 allocation: 443.
    let bytes = h.authed(
        client(1),
        &alice,
        with_peer(CREATE_PERMISSION, "[2606:4700::1111]:1"),
    );
    assert_eq!(code(&bytes), 443);
    // No peer at all: 400.
    assert_eq!(
        code(&h.authed(client(1), &alice, request(CREATE_PERMISSION))),
        400
    );
    // IPv4-mapped form of a public address counts as that address.
    let bytes = h.authed(
        client(1),
        &alice,
        with_peer(CREATE_PERMISSION, "[::ffff:8.8.4.4]:1"),
    );
    assert_eq!(code(&bytes), 200);
    assert!(from_peer(&mut h, id, PUBLIC_PEER, b"x").is_some());
}

#[test]
fn allow_peers_opens_a_range_and_deny_peers_wins() {
    let mut c = config();
    c.policy = policy::PeerPolicy::new(
        vec!["127.0.0.0/8".parse().unwrap()],
        vec!["8.8.4.0/24".parse().unwrap()],
    );
    let mut h = H::new(c);
    h.allocate(client(1), "alice");
    let alice = Cred::new("alice", T0 + 86_400);
    let ok = h.authed(
        client(1),
        &alice,
        with_peer(CREATE_PERMISSION, "127.0.0.1:3480"),
    );
    assert_eq!(code(&ok), 200);
    let denied = h.authed(client(1), &alice, with_peer(CREATE_PERMISSION, PUBLIC_PEER));
    assert_eq!(code(&denied), 403);
    assert!(h.events().contains(&Event::PeerRefused(Refusal::Denied)));
}

#[test]
fn permissions_expire_after_300_seconds() {
    let mut h = H::new(config());
    h.allocate(client(1), "alice");
    let id = alloc_id(&h, client(1));
    let alice = Cred::new("alice", T0 + 86_400);
    assert_eq!(
        code(&h.authed(client(1), &alice, with_peer(CREATE_PERMISSION, PUBLIC_PEER))),
        200
    );
    h.advance(299);
    assert!(from_peer(&mut h, id, PUBLIC_PEER, b"x").is_some());
    let send = send_indication(PUBLIC_PEER, b"y");
    assert!(matches!(
        h.server.handle_client(h.now, client(1), &send),
        ClientAction::Relay { .. }
    ));
    h.advance(1);
    assert!(from_peer(&mut h, id, PUBLIC_PEER, b"x").is_none());
    assert_eq!(
        h.server.handle_client(h.now, client(1), &send),
        ClientAction::Done
    );
    // Any port of the permitted IP is fine; other IPs are not.
    assert_eq!(
        code(&h.authed(client(1), &alice, with_peer(CREATE_PERMISSION, PUBLIC_PEER))),
        200
    );
    assert!(from_peer(&mut h, id, "8.8.4.4:9999", b"x").is_some());
    assert!(from_peer(&mut h, id, "8.8.4.5:4000", b"x").is_none());
}

#[test]
fn too_many_permissions_is_508() {
    let mut c = config();
    c.max_permissions = 2;
    let mut h = H::new(c);
    h.allocate(client(1), "alice");
    let alice = Cred::new("alice", T0 + 86_400);
    for (i, peer) in ["8.8.4.1:1", "8.8.4.2:1", "8.8.4.3:1"]
        .into_iter()
        .enumerate()
    {
        let want = if i < 2 { 200 } else { 508 };
        assert_eq!(
            code(&h.authed(client(1), &alice, with_peer(CREATE_PERMISSION, peer))),
            want
        );
    }
}

// ---- Send / Data indications ------------------------------------------------------------

#[test]
fn send_and_data_indications_round_trip() {
    let mut h = H::new(config());
    h.allocate(client(1), "alice");
    let id = alloc_id(&h, client(1));
    let alice = Cred::new("alice", T0 + 86_400);
    // Without a permission, Send is dropped silently.
    let send = send_indication(PUBLIC_PEER, b"hello peer");
    assert_eq!(
        h.server.handle_client(h.now, client(1), &send),
        ClientAction::Done
    );
    assert!(h.answers(client(1)).is_empty());
    assert_eq!(
        code(&h.authed(client(1), &alice, with_peer(CREATE_PERMISSION, PUBLIC_PEER))),
        200
    );
    match h.server.handle_client(h.now, client(1), &send) {
        ClientAction::Relay {
            alloc,
            peer,
            payload,
        } => {
            assert_eq!(alloc, id);
            assert_eq!(peer, addr(PUBLIC_PEER));
            assert_eq!(payload, b"hello peer");
        }
        other => panic!("{other:?}"),
    }
    // A Send from a 5-tuple without allocation, or without DATA: dropped.
    assert_eq!(
        h.server.handle_client(h.now, client(2), &send),
        ClientAction::Done
    );
    let mut w = Message::builder_indication(SEND, MessageWriteVec::new());
    let txid = w.transaction_id();
    w.add_attribute(&XorPeerAddress::new(addr(PUBLIC_PEER), txid))
        .unwrap();
    assert_eq!(
        h.server.handle_client(h.now, client(1), &w.finish()),
        ClientAction::Done
    );
    // Peer data comes back as a Data indication (no channel bound), odd length padded.
    let (tuple, frame) = from_peer(&mut h, id, PUBLIC_PEER, b"hi back").unwrap();
    assert_eq!(tuple, client(1));
    assert_eq!(frame.len() % 4, 0);
    let msg = Message::from_bytes(&frame).expect("a valid STUN message");
    assert_eq!(msg.class(), MessageClass::Indication);
    assert_eq!(msg.method(), turn_types::message::DATA);
    assert_eq!(
        msg.attribute::<XorPeerAddress>()
            .unwrap()
            .addr(msg.transaction_id()),
        addr(PUBLIC_PEER)
    );
    assert_eq!(msg.attribute::<Data>().unwrap().data(), b"hi back");
}

// ---- Channels ----------------------------------------------------------------------------

#[test]
fn channel_bind_rules() {
    let mut h = H::new(config());
    h.allocate(client(1), "alice");
    let alice = Cred::new("alice", T0 + 86_400);
    for bad in [0x3FFF, 0x8000, 0xFFFF, 0x0001] {
        assert_eq!(
            code(&h.authed(client(1), &alice, channel_bind(bad, PUBLIC_PEER))),
            400,
            "{bad:#x}"
        );
    }
    assert_eq!(
        code(&h.authed(client(1), &alice, channel_bind(0x4000, PUBLIC_PEER))),
        200
    );
    assert_eq!(
        code(&h.authed(client(1), &alice, channel_bind(0x4000, PUBLIC_PEER))),
        200,
        "refresh"
    );
    assert_eq!(
        code(&h.authed(client(1), &alice, channel_bind(0x4000, "8.8.4.4:4001"))),
        400
    );
    assert_eq!(
        code(&h.authed(client(1), &alice, channel_bind(0x4001, PUBLIC_PEER))),
        400
    );
    assert_eq!(
        code(&h.authed(client(1), &alice, channel_bind(0x4FFF, "8.8.4.4:4001"))),
        200
    );
    // Missing attributes.
    assert_eq!(
        code(&h.authed(client(1), &alice, with_peer(CHANNEL_BIND, PUBLIC_PEER))),
        400
    );
    let mut w = request(CHANNEL_BIND);
    w.add_attribute(&ChannelNumber::new(0x4002)).unwrap();
    assert_eq!(code(&h.authed(client(1), &alice, w)), 400);
    // The box's own address on a port that is not a relay port (its HTTP port, say): 403;
    // its IP may be permitted (relay-to-relay needs that), but nothing from such a port passes.
    assert_eq!(
        code(&h.authed(
            client(1),
            &alice,
            with_peer(CREATE_PERMISSION, "198.51.100.10:1")
        )),
        200
    );
    let id = alloc_id(&h, client(1));
    assert!(from_peer(&mut h, id, "198.51.100.10:8080", b"x").is_none());
    assert!(from_peer(&mut h, id, "198.51.100.10:50999", b"x").is_some());
    assert_eq!(
        code(&h.authed(
            client(1),
            &alice,
            channel_bind(0x4003, "198.51.100.10:8080")
        )),
        403
    );
}

#[test]
fn channel_data_both_ways() {
    let mut h = H::new(config());
    h.allocate(client(1), "alice");
    let id = alloc_id(&h, client(1));
    let alice = Cred::new("alice", T0 + 86_400);
    assert_eq!(
        code(&h.authed(client(1), &alice, channel_bind(0x4000, PUBLIC_PEER))),
        200
    );
    // ChannelBind installs the permission too.
    let data = channel_data(0x4000, b"media");
    match h.server.handle_client(h.now, client(1), &data) {
        ClientAction::Relay { peer, payload, .. } => {
            assert_eq!(peer, addr(PUBLIC_PEER));
            assert_eq!(payload, b"media");
        }
        other => panic!("{other:?}"),
    }
    // Padding after the length (as over TCP) is ignored; a short frame is dropped.
    let mut padded = channel_data(0x4000, b"abc");
    padded.push(0);
    assert!(matches!(
        h.server.handle_client(h.now, client(1), &padded),
        ClientAction::Relay {
            payload: b"abc",
            ..
        }
    ));
    let mut short = channel_data(0x4000, b"abcdef");
    short.truncate(7);
    assert_eq!(
        h.server.handle_client(h.now, client(1), &short),
        ClientAction::Done
    );
    // An unbound channel, or another client: dropped.
    assert_eq!(
        h.server
            .handle_client(h.now, client(1), &channel_data(0x4001, b"x")),
        ClientAction::Done
    );
    assert_eq!(
        h.server.handle_client(h.now, client(2), &data),
        ClientAction::Done
    );
    // From the peer: ChannelData with the bound number.
    let (tuple, frame) = from_peer(&mut h, id, PUBLIC_PEER, b"reply").unwrap();
    assert_eq!(tuple, client(1));
    assert_eq!(frame, channel_data(0x4000, b"reply"));
    // After 600 s without refresh the channel is gone (permission refreshed meanwhile).
    h.advance(290);
    assert_eq!(
        code(&h.authed(client(1), &alice, with_peer(CREATE_PERMISSION, PUBLIC_PEER))),
        200
    );
    h.advance(290);
    assert_eq!(
        code(&h.authed(client(1), &alice, with_peer(CREATE_PERMISSION, PUBLIC_PEER))),
        200
    );
    let refresh = {
        let mut w = request(REFRESH);
        w.add_attribute(&Lifetime::new(3600)).unwrap();
        w
    };
    assert_eq!(code(&h.authed(client(1), &alice, refresh)), 200);
    h.advance(20);
    assert_eq!(
        h.server.handle_client(h.now, client(1), &data),
        ClientAction::Done
    );
    let (_, frame) = from_peer(&mut h, id, PUBLIC_PEER, b"late").unwrap();
    assert!(
        Message::from_bytes(&frame).is_ok(),
        "a Data indication once unbound"
    );
    // Within the cooldown the number cannot go to another peer.
    assert_eq!(
        code(&h.authed(client(1), &alice, channel_bind(0x4000, "8.8.4.4:4001"))),
        400
    );
}

// ---- Hairpin -----------------------------------------------------------------------------

#[test]
fn relay_to_relay_is_delivered_inside_the_process_even_behind_nat() {
    let mut c = config();
    c.external_ips = vec!["192.0.2.200".parse().unwrap()];
    let mut h = H::new(c);
    let a_relay = h.allocate(client(1), "alice");
    let b_relay = h.allocate(client(2), "bob");
    assert_eq!(a_relay.ip().to_string(), "192.0.2.200");
    let (a, b) = (alloc_id(&h, client(1)), alloc_id(&h, client(2)));
    let alice = Cred::new("alice", T0 + 86_400);
    let bob = Cred::new("bob", T0 + 86_400);
    // Each permits the other's advertised (public) relayed address: not refused as the
    // documentation range it is, because it is ours.
    let a_peer = a_relay.to_string();
    let b_peer = b_relay.to_string();
    assert_eq!(
        code(&h.authed(client(1), &alice, channel_bind(0x4000, &b_peer))),
        200
    );
    assert_eq!(
        code(&h.authed(client(2), &bob, with_peer(CREATE_PERMISSION, &a_peer))),
        200
    );
    let data = channel_data(0x4000, b"through the hairpin");
    let (to, from, payload) = match h.server.handle_client(h.now, client(1), &data) {
        ClientAction::Hairpin { to, from, payload } => (to, from, payload.to_vec()),
        other => panic!("{other:?}"),
    };
    assert_eq!(to, b);
    assert_eq!(from, a_relay);
    let (tuple, frame) = from_peer(&mut h, to, &from.to_string(), &payload).unwrap();
    assert_eq!(tuple, client(2));
    let msg = Message::from_bytes(&frame).unwrap();
    assert_eq!(
        msg.attribute::<Data>().unwrap().data(),
        b"through the hairpin"
    );
    assert_eq!(
        msg.attribute::<XorPeerAddress>()
            .unwrap()
            .addr(msg.transaction_id()),
        a_relay
    );
    assert_eq!(h.server.allocation_usage(a).unwrap().packets_to_peer, 1);
    assert_eq!(h.server.allocation_usage(b).unwrap().packets_from_peer, 1);
    // A relay port with no allocation behind it: dropped.
    let ghost = SocketAddr::new(a_relay.ip(), 50999).to_string();
    assert_eq!(
        code(&h.authed(client(1), &alice, channel_bind(0x4001, &ghost))),
        200
    );
    let data = channel_data(0x4001, b"nobody");
    assert_eq!(
        h.server.handle_client(h.now, client(1), &data),
        ClientAction::Done
    );
}

#[test]
fn closed_allocation_ids_do_not_reach_their_successor() {
    let mut h = H::new(config());
    h.allocate(client(1), "alice");
    let old = alloc_id(&h, client(1));
    h.server.close_allocation(h.now, old);
    h.allocate(client(2), "bob");
    let new = alloc_id(&h, client(2));
    assert_eq!(old.index(), new.index(), "slot reused");
    assert_ne!(old, new);
    assert!(h.server.allocation_tuple(old).is_none());
    assert_eq!(AllocId::from_u64(new.to_u64()), new);
    assert!(from_peer(&mut h, old, PUBLIC_PEER, b"x").is_none());
}

#[test]
fn other_addresses_of_the_host_are_never_peers_unless_allowed() {
    // A second public listener address of this box: permissible as an IP (the policy has
    // nothing against it), but no port of it is reachable, either way.
    let mut c = config();
    c.host_ips = vec!["8.8.8.8".parse().unwrap()];
    let mut h = H::new(c.clone());
    h.allocate(client(1), "alice");
    let id = alloc_id(&h, client(1));
    let alice = Cred::new("alice", T0 + 86_400);
    assert_eq!(
        code(&h.authed(client(1), &alice, with_peer(CREATE_PERMISSION, "8.8.8.8:1"))),
        200
    );
    assert_eq!(
        code(&h.authed(client(1), &alice, channel_bind(0x4000, "8.8.8.8:3478"))),
        403
    );
    let send = send_indication("8.8.8.8:3478", b"x");
    assert_eq!(
        h.server.handle_client(h.now, client(1), &send),
        ClientAction::Done
    );
    assert!(from_peer(&mut h, id, "8.8.8.8:3478", b"x").is_none());
    // Named in allow_peers, it is an ordinary peer.
    c.policy = policy::PeerPolicy::new(vec!["8.8.8.8/32".parse().unwrap()], vec![]);
    let mut h = H::new(c);
    h.allocate(client(1), "alice");
    assert_eq!(
        code(&h.authed(client(1), &alice, channel_bind(0x4000, "8.8.8.8:3478"))),
        200
    );
}

// ---- IPv6 and dual allocations (RFC 8656 §7) -----------------------------------------------

/// A public IPv6 peer the default policy allows.
const PUBLIC_PEER6: &str = "[2606:4700::1111]:4000";

fn dual_stack_config() -> ServerConfig {
    let mut c = config();
    c.relay_ips.push("2001:db8::10".parse().unwrap());
    c
}

/// An authenticated Allocate from `tuple` with extra attributes.
fn allocate_with(
    h: &mut H,
    tuple: FiveTuple,
    user: &str,
    extra: impl FnOnce(&mut MessageWriteVec),
) -> Vec<u8> {
    let cred = Cred::new(user, T0 + 86_400);
    let mut w = request(ALLOCATE);
    w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
        .unwrap();
    extra(&mut w);
    h.authed(tuple, &cred, w)
}

fn relayed_addresses(bytes: &[u8]) -> Vec<SocketAddr> {
    let msg = Message::from_bytes(bytes).unwrap();
    msg.iter_attributes()
        .filter(|(_, raw)| raw.get_type() == XorRelayedAddress::TYPE)
        .map(|(_, raw)| {
            XorRelayedAddress::try_from(&raw)
                .unwrap()
                .addr(msg.transaction_id())
        })
        .collect()
}

fn address_error(bytes: &[u8]) -> Option<u16> {
    let msg = Message::from_bytes(bytes).unwrap();
    msg.attribute::<AddressErrorCode>().ok().map(|a| {
        assert_eq!(a.family(), AddressFamily::IPV6);
        a.error().code()
    })
}

#[test]
fn ipv6_allocation_relays_to_ipv6_peers_only() {
    let mut h = H::new(dual_stack_config());
    let bytes = allocate_with(&mut h, client(1), "alice", |w| {
        w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV6))
            .unwrap();
    });
    assert_eq!(code(&bytes), 200, "{}", describe(&bytes));
    assert_eq!(relayed_addresses(&bytes), [addr("[2001:db8::10]:50000")]);
    let id = alloc_id(&h, client(1));
    let alice = Cred::new("alice", T0 + 86_400);
    // An IPv4 peer on an IPv6-only allocation: 443, for permissions and channels alike.
    let w = with_peer(CREATE_PERMISSION, PUBLIC_PEER);
    assert_eq!(code(&h.authed(client(1), &alice, w)), 443);
    let w = channel_bind(0x4000, PUBLIC_PEER);
    assert_eq!(code(&h.authed(client(1), &alice, w)), 443);
    // IPv6 peers go through the same policy: a private (ULA) one is refused, a public one not.
    let w = with_peer(CREATE_PERMISSION, "[fd00::1]:1");
    assert_eq!(code(&h.authed(client(1), &alice, w)), 403);
    let w = channel_bind(0x4000, PUBLIC_PEER6);
    assert_eq!(code(&h.authed(client(1), &alice, w)), 200);
    match h
        .server
        .handle_client(h.now, client(1), &channel_data(0x4000, b"six"))
    {
        ClientAction::Relay { peer, payload, .. } => {
            assert_eq!((peer, payload), (addr(PUBLIC_PEER6), &b"six"[..]));
        }
        other => panic!("{other:?}"),
    }
    let (_, frame) = from_peer(&mut h, id, PUBLIC_PEER6, b"back").unwrap();
    assert_eq!(frame, channel_data(0x4000, b"back"));
    // A Send to an IPv4 peer is dropped, whatever permissions exist.
    assert_eq!(
        h.server
            .handle_client(h.now, client(1), &send_indication(PUBLIC_PEER, b"x")),
        ClientAction::Done
    );
    // Refresh naming the other family: 443; naming its own: fine.
    let mut w = request(REFRESH);
    w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV4))
        .unwrap();
    assert_eq!(code(&h.authed(client(1), &alice, w)), 443);
    let mut w = request(REFRESH);
    w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV6))
        .unwrap();
    assert_eq!(code(&h.authed(client(1), &alice, w)), 200);
}

#[test]
fn dual_allocation_relays_both_families() {
    let mut h = H::new(dual_stack_config());
    let bytes = allocate_with(&mut h, client(1), "alice", |w| {
        w.add_attribute(&AdditionalAddressFamily::new(AddressFamily::IPV6))
            .unwrap();
    });
    assert_eq!(code(&bytes), 200, "{}", describe(&bytes));
    // IPv4 first, then IPv6, and no ADDRESS-ERROR-CODE.
    assert_eq!(
        relayed_addresses(&bytes),
        [addr("198.51.100.10:50000"), addr("[2001:db8::10]:50001")]
    );
    assert_eq!(address_error(&bytes), None);
    let alice = Cred::new("alice", T0 + 86_400);
    let mut w = with_peer(CREATE_PERMISSION, PUBLIC_PEER);
    let txid = w.transaction_id();
    w.add_attribute(&XorPeerAddress::new(addr(PUBLIC_PEER6), txid))
        .unwrap();
    assert_eq!(code(&h.authed(client(1), &alice, w)), 200);
    for peer in [PUBLIC_PEER, PUBLIC_PEER6] {
        match h
            .server
            .handle_client(h.now, client(1), &send_indication(peer, b"x"))
        {
            ClientAction::Relay { peer: p, .. } => assert_eq!(p, addr(peer)),
            other => panic!("{other:?}"),
        }
    }
    // Both relay addresses are the relay's own; deleting the allocation closes both sockets
    // with one command.
    assert_eq!(h.server.by_relay.len(), 2);
    let mut w = request(REFRESH);
    w.add_attribute(&Lifetime::new(0)).unwrap();
    assert_eq!(code(&h.authed(client(1), &alice, w)), 200);
    assert_eq!(h.closed.len(), 1);
    assert!(h.server.by_relay.is_empty());
}

#[test]
fn dual_allocation_without_an_ipv6_socket_keeps_the_ipv4_half() {
    let mut h = H::new(dual_stack_config());
    let cred = Cred::new("alice", T0 + 86_400);
    let mut w = request(ALLOCATE);
    w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
        .unwrap();
    w.add_attribute(&AdditionalAddressFamily::new(AddressFamily::IPV6))
        .unwrap();
    let nonce = h.nonce(client(1));
    assert_eq!(
        h.server
            .handle_client(h.now, client(1), &cred.seal(w, &nonce)),
        ClientAction::Done
    );
    let Some(Command::OpenRelay {
        id,
        family: Family::V4,
        ..
    }) = h.server.poll_command()
    else {
        panic!("expected the IPv4 socket first");
    };
    h.server
        .handle_relay_opened(h.now, id, Family::V4, Ok(addr("198.51.100.10:50000")));
    assert!(
        h.server.poll_transmit().is_none(),
        "waits for the IPv6 socket"
    );
    let Some(Command::OpenRelay {
        family: Family::V6, ..
    }) = h.server.poll_command()
    else {
        panic!("expected the IPv6 socket");
    };
    h.server
        .handle_relay_opened(h.now, id, Family::V6, Err(OpenError::NoPorts));
    let bytes = h.answers(client(1)).pop().unwrap();
    assert_eq!(code(&bytes), 200);
    assert_eq!(relayed_addresses(&bytes), [addr("198.51.100.10:50000")]);
    assert_eq!(address_error(&bytes), Some(508));

    // The IPv4 half failing fails the whole request, and the IPv6 socket is closed again.
    let mut w = request(ALLOCATE);
    w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
        .unwrap();
    w.add_attribute(&AdditionalAddressFamily::new(AddressFamily::IPV6))
        .unwrap();
    let nonce = h.nonce(client(2));
    h.server
        .handle_client(h.now, client(2), &cred.seal(w, &nonce));
    let Some(Command::OpenRelay { id, .. }) = h.server.poll_command() else {
        panic!("expected OpenRelay");
    };
    h.server.poll_command();
    h.server
        .handle_relay_opened(h.now, id, Family::V4, Err(OpenError::NoPorts));
    h.server
        .handle_relay_opened(h.now, id, Family::V6, Ok(addr("[2001:db8::10]:50001")));
    assert_eq!(code(&h.answers(client(2)).pop().unwrap()), 508);
    assert_eq!(h.server.poll_command(), Some(Command::CloseRelay { id }));
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn address_families_the_relay_lacks_get_440() {
    // IPv4 only: an IPv6 request is refused; a dual request gets IPv4 and ADDRESS-ERROR-CODE.
    let mut h = H::new(config());
    let bytes = allocate_with(&mut h, client(1), "alice", |w| {
        w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV6))
            .unwrap();
    });
    assert_eq!(code(&bytes), 440);
    let bytes = allocate_with(&mut h, client(2), "alice", |w| {
        w.add_attribute(&AdditionalAddressFamily::new(AddressFamily::IPV6))
            .unwrap();
    });
    assert_eq!(relayed_addresses(&bytes), [addr("198.51.100.10:50000")]);
    assert_eq!(address_error(&bytes), Some(440));
    // IPv6 only: the default (IPv4) request is refused, an IPv6 one served.
    let mut c = config();
    c.relay_ips = vec!["2001:db8::10".parse().unwrap()];
    let mut h = H::new(c);
    let bytes = allocate_with(&mut h, client(1), "alice", |_| {});
    assert_eq!(code(&bytes), 440);
    let bytes = allocate_with(&mut h, client(2), "alice", |w| {
        w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV6))
            .unwrap();
    });
    assert_eq!(relayed_addresses(&bytes), [addr("[2001:db8::10]:50000")]);
}

#[test]
fn ipv6_relay_addresses_hairpin_in_process() {
    let mut h = H::new(dual_stack_config());
    let six = |w: &mut MessageWriteVec| {
        w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV6))
            .unwrap();
    };
    let a = relayed_addresses(&allocate_with(&mut h, client(1), "alice", six))[0];
    let b = relayed_addresses(&allocate_with(&mut h, client(2), "bob", six))[0];
    let alice = Cred::new("alice", T0 + 86_400);
    let w = with_peer(CREATE_PERMISSION, &b.to_string());
    assert_eq!(code(&h.authed(client(1), &alice, w)), 200);
    let bob = Cred::new("bob", T0 + 86_400);
    let w = with_peer(CREATE_PERMISSION, &a.to_string());
    assert_eq!(code(&h.authed(client(2), &bob, w)), 200);
    match h
        .server
        .handle_client(h.now, client(1), &send_indication(&b.to_string(), b"hi"))
    {
        ClientAction::Hairpin { to, from, payload } => {
            assert_eq!(to, alloc_id(&h, client(2)));
            assert_eq!((from, payload), (a, &b"hi"[..]));
        }
        other => panic!("{other:?}"),
    }
}

// ---- Streams (TCP, TLS) ---------------------------------------------------------------------

fn tcp_client(port: u16) -> FiveTuple {
    FiveTuple::tcp(
        SocketAddr::new("192.0.2.1".parse().unwrap(), port),
        addr("198.51.100.10:3478"),
    )
}

#[test]
fn stream_channel_data_is_padded_and_the_connection_owns_the_allocation() {
    let mut h = H::new(config());
    h.allocate(tcp_client(1), "alice");
    let id = alloc_id(&h, tcp_client(1));
    let alice = Cred::new("alice", T0 + 86_400);
    let w = channel_bind(0x4000, PUBLIC_PEER);
    assert_eq!(code(&h.authed(tcp_client(1), &alice, w)), 200);
    // Five payload bytes: padded with three zeros to eight after the header.
    let (_, frame) = from_peer(&mut h, id, PUBLIC_PEER, b"hello").unwrap();
    let mut want = channel_data(0x4000, b"hello");
    want.extend_from_slice(&[0, 0, 0]);
    assert_eq!(frame, want);
    // A padded frame from the client relays just the payload.
    let mut padded = channel_data(0x4000, b"abcde");
    padded.extend_from_slice(&[0, 0, 0]);
    assert!(matches!(
        h.server.handle_client(h.now, tcp_client(1), &padded),
        ClientAction::Relay {
            payload: b"abcde",
            ..
        }
    ));
    // Over UDP the same reply is not padded.
    h.allocate(client(1), "alice");
    let udp_id = alloc_id(&h, client(1));
    let w = channel_bind(0x4000, PUBLIC_PEER);
    assert_eq!(code(&h.authed(client(1), &alice, w)), 200);
    let (_, frame) = from_peer(&mut h, udp_id, PUBLIC_PEER, b"hello").unwrap();
    assert_eq!(frame, channel_data(0x4000, b"hello"));
    // The connection closes: its allocation ends, and only its.
    h.events();
    h.server.close_client(h.now, &tcp_client(1));
    h.open_relays();
    assert_eq!(h.closed, [id]);
    assert!(h.events().iter().any(|e| matches!(
        e,
        Event::AllocationClosed { reason: CloseReason::Closed, tuple, .. } if *tuple == tcp_client(1)
    )));
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn data_indications_that_would_overflow_their_length_are_dropped() {
    let mut h = H::new(dual_stack_config());
    let bytes = allocate_with(&mut h, tcp_client(1), "alice", |w| {
        w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV6))
            .unwrap();
    });
    assert_eq!(code(&bytes), 200);
    let id = alloc_id(&h, tcp_client(1));
    let alice = Cred::new("alice", T0 + 86_400);
    let w = with_peer(CREATE_PERMISSION, PUBLIC_PEER6);
    assert_eq!(code(&h.authed(tcp_client(1), &alice, w)), 200);
    // 28 bytes of XOR-PEER-ADDRESS (IPv6) and DATA header, and DATA padded to four: 65,504
    // payload bytes fit; 65,505 would wrap the 16-bit length and desynchronise the stream.
    let (_, frame) = from_peer(&mut h, id, PUBLIC_PEER6, &vec![7; 65_504]).unwrap();
    let msg = Message::from_bytes(&frame).unwrap();
    assert_eq!(msg.attribute::<Data>().unwrap().data().len(), 65_504);
    assert!(from_peer(&mut h, id, PUBLIC_PEER6, &vec![7; 65_505]).is_none());
    assert_eq!(h.server.allocation_usage(id).unwrap().packets_from_peer, 1);
}
