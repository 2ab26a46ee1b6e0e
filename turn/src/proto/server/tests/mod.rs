//! Every rule of the core, driven with injected time from a fixed zero: one file per mechanism,
//! as in the server, and here the harness they share (a server with a virtual clock and relay
//! sockets that open on request, credentials, and builders for requests and indications).

mod allocate;
mod auth;
mod bandwidth;
mod data;
mod dispatch;
mod family;
mod revoke;

use std::net::SocketAddr;
use std::time::Duration;

use stun_types::attribute::{
    AttributeStaticType, ErrorCode, Fingerprint, Nonce, Realm, UnknownAttributes, Username,
    XorMappedAddress,
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
use crate::proto::policy::{self, Refusal};
use crate::proto::testing::addr;
use crate::proto::RelayRequest;

const REALM: &str = "example.org";
const SECRET: &[u8] = b"s3cret";
const T0: u64 = 1_700_000_000;

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
                Command::OpenRelay(r) => {
                    if r.even_port && self.next_port % 2 == 1 {
                        self.next_port += 1;
                    }
                    let port = self.next_port;
                    self.next_port += 1;
                    let ip = self.server.config().relay_ip(r.family).unwrap();
                    let a = SocketAddr::new(ip, port);
                    self.server
                        .handle_relay_opened(self.now, r.id, r.family, Ok(a));
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
        nonce_of(&self.one(tuple, &allocate_request().finish()))
    }

    /// A successful allocation for `user` from `tuple`; returns the relayed address.
    fn allocate(&mut self, tuple: FiveTuple, user: &str) -> SocketAddr {
        let bytes = self.authed(tuple, &Cred::day(user), allocate_request());
        let msg = Message::from_bytes(&bytes).unwrap();
        assert_eq!(msg.class(), MessageClass::Success, "{}", describe(&bytes));
        msg.attribute::<XorRelayedAddress>()
            .unwrap()
            .addr(msg.transaction_id())
    }

    /// An authenticated request from `tuple` (fresh nonce each time).
    fn authed(&mut self, tuple: FiveTuple, cred: &Cred, w: MessageWriteVec) -> Vec<u8> {
        let req = self.sealed(tuple, cred, w);
        self.one(tuple, &req)
    }

    /// `w` signed by `cred` with a nonce fresh from a challenge to `tuple`: not sent yet.
    fn sealed(&mut self, tuple: FiveTuple, cred: &Cred, w: MessageWriteVec) -> Vec<u8> {
        let nonce = self.nonce(tuple);
        cred.seal(w, &nonce)
    }

    /// The code [`H::authed`] is answered with ([`OK`] for a success).
    fn ask(&mut self, tuple: FiveTuple, cred: &Cred, w: MessageWriteVec) -> u16 {
        code(&self.authed(tuple, cred, w))
    }

    /// Asserts that [`H::ask`] is answered `code`, an authentication failure for `why`.
    #[track_caller]
    fn assert_auth_failed(
        &mut self,
        tuple: FiveTuple,
        cred: &Cred,
        w: MessageWriteVec,
        code: u16,
        why: AuthFailure,
    ) {
        assert_eq!(self.ask(tuple, cred, w), code, "{why:?}");
        assert!(self.saw(Event::AuthFailed(why)), "{why:?} not seen");
    }

    /// Whether `event` happened since the events were last taken (which this does).
    fn saw(&mut self, event: Event) -> bool {
        self.events().contains(&event)
    }

    /// Hands the server a datagram from a client, as the driver does.
    fn handle<'a>(&mut self, tuple: FiveTuple, data: &'a [u8]) -> ClientAction<'a> {
        self.server.handle_client(self.now, tuple, data)
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

    /// A credential for `user` valid for an hour.
    fn hour(user: &str) -> Self {
        Cred::new(user, T0 + 3600)
    }

    /// A credential for `user` valid for a day.
    fn day(user: &str) -> Self {
        Cred::new(user, T0 + 86_400)
    }

    fn seal(&self, w: MessageWriteVec, nonce: &str) -> Vec<u8> {
        self.sign(w, REALM, Some(nonce)).finish()
    }

    /// USERNAME, REALM, NONCE (if given) and MESSAGE-INTEGRITY with the key for `realm`.
    fn sign(&self, mut w: MessageWriteVec, realm: &str, nonce: Option<&str>) -> MessageWriteVec {
        w.add_attribute(&Username::new(&self.username).unwrap())
            .unwrap();
        w.add_attribute(&Realm::new(realm).unwrap()).unwrap();
        if let Some(nonce) = nonce {
            w.add_attribute(&Nonce::new(nonce).unwrap()).unwrap();
        }
        let key = long_term_key(&self.username, realm, &self.password);
        w.add_message_integrity_with_key(&key, IntegrityAlgorithm::Sha1)
            .unwrap();
        w
    }
}

fn request(method: Method) -> MessageWriteVec {
    Message::builder_request(method, MessageWriteVec::new())
}

/// An Allocate for a UDP relay, nothing else.
fn allocate_request() -> MessageWriteVec {
    let mut w = request(ALLOCATE);
    w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
        .unwrap();
    w
}

/// A Refresh asking for `secs` (0: delete).
fn refresh(secs: u32) -> MessageWriteVec {
    let mut w = request(REFRESH);
    w.add_attribute(&Lifetime::new(secs)).unwrap();
    w
}

/// What [`code`] says of a success.
const OK: u16 = 200;

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

/// The NONCE of an answer (a challenge).
fn nonce_of(bytes: &[u8]) -> String {
    let msg = Message::from_bytes(bytes).unwrap();
    msg.attribute::<Nonce>().unwrap().nonce().to_owned()
}

fn describe(bytes: &[u8]) -> String {
    match Message::from_bytes(bytes) {
        Ok(m) => m.to_string(),
        Err(e) => format!("unparseable: {e}"),
    }
}

/// A CreatePermission for `peer`.
fn permission(peer: &str) -> MessageWriteVec {
    with_peer(CREATE_PERMISSION, peer)
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

/// `payload` in a buffer with the room the core frames it in ([`PEER_HEADROOM`] before it,
/// [`PEER_TAILROOM`] after): the buffer and where the payload is in it.
fn peer_buffer(payload: &[u8]) -> (Vec<u8>, Range<usize>) {
    let range = PEER_HEADROOM..PEER_HEADROOM + payload.len();
    let mut buf = vec![0u8; range.end + PEER_TAILROOM];
    buf[range.clone()].copy_from_slice(payload);
    (buf, range)
}

/// Runs `payload` from `peer` into allocation `id` and returns the frame for the client.
fn from_peer(h: &mut H, id: AllocId, peer: &str, payload: &[u8]) -> Option<(FiveTuple, Vec<u8>)> {
    let (mut buf, range) = peer_buffer(payload);
    h.server
        .handle_peer_data(h.now, id, addr(peer), &mut buf, range)
        .map(|a| (a.tuple, buf[a.frame].to_vec()))
}

/// A server with one allocation, alice's from `client(1)`: the harness, the allocation and
/// her credential.
fn with_alice(config: ServerConfig) -> (H, AllocId, Cred) {
    let mut h = H::new(config);
    h.allocate(client(1), "alice");
    let id = alloc_id(&h, client(1));
    (h, id, Cred::day("alice"))
}

fn alloc_id(h: &H, tuple: FiveTuple) -> AllocId {
    *h.server.by_tuple.get(&tuple).unwrap()
}

/// A peer the default policy allows.
const PUBLIC_PEER: &str = "8.8.4.4:4000";

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
    let mut w = allocate_request();
    extra(&mut w);
    h.authed(tuple, &Cred::day(user), w)
}

/// REQUESTED-ADDRESS-FAMILY: IPv6 (for [`allocate_with`]).
fn ipv6(w: &mut MessageWriteVec) {
    w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV6))
        .unwrap();
}

/// ADDITIONAL-ADDRESS-FAMILY: IPv6 (for [`allocate_with`]).
fn and_ipv6(w: &mut MessageWriteVec) {
    w.add_attribute(&AdditionalAddressFamily::new(AddressFamily::IPV6))
        .unwrap();
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
fn tcp_client(port: u16) -> FiveTuple {
    FiveTuple::tcp(
        SocketAddr::new("192.0.2.1".parse().unwrap(), port),
        addr("198.51.100.10:3478"),
    )
}
