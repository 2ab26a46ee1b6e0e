//! The whole sans-IO relay, driven the way the io driver drives it, by a sequence of at most
//! [`MAX_OPS`] operations decoded from the input, on a virtual clock.
//!
//! Input: byte 0 configures the relay (bit 0: an IPv6 relay address too; bit 1: external
//! addresses; bit 2: `allow_peers` naming the relay's own addresses, and a `deny_peers`;
//! bit 3: a host address; bits 4–5: user quota − 1; bits 6–7: total quota − 2). Then
//! operations, each a tag byte (mod 9) and its arguments (see [`Harness::step`] and
//! `make-seeds.py`, which writes them); reads past the end are zeros.
//!
//! - `0` a STUN message built with the `stun-types` writer: method, class, credentials (one of
//!   three users minted with the crate's own `credentials::mint` and the fixed secret, an
//!   expired one, a wrong password or realm; the NONCE of the last 401/438 this client got, of
//!   any client, a garbage one or none), a fresh or reused transaction id, attributes.
//! - `1` ChannelData; `2` raw bytes; both from one of eight clients (UDP, TCP, TLS; over a
//!   stream, framed with `frame_len` as the driver does, a framing error closing the client).
//! - `3` a datagram from a peer on an allocation's relay socket (`handle_peer_data`).
//! - `4` an answer to a pending `OpenRelay` (a free port of the range, `NoPorts` or `Io`);
//!   `8` answers them all with a port.
//! - `5` the clock moves on; `6` a client's connection closes or an allocation is closed;
//!   `7` `handle_timeout` called early.
//!
//! After every operation the harness drains `poll_command`/`poll_transmit`/`poll_event`, and
//! calls `handle_timeout` while `poll_timeout` is due. It keeps a model of what the core
//! promised (permissions and channels granted by success answers, relay sockets it opened)
//! and asserts:
//!
//! - allocations never exceed the total quota, nor any user's quota;
//! - every allocation was announced by an `OpenRelay`, and `allocation_count` is the number of
//!   them still alive; a relay socket never outlives its allocation (`CloseRelay` comes);
//!   `CloseRelay` only for sockets that were opened, and only once the allocation is gone;
//! - every `Transmit` goes to a client that sent something, is well-formed STUN, a response
//!   to a transaction id that client used, at most 65,535 bytes plus headers;
//! - whatever is relayed to a peer comes from the allocation of the sending client and goes to
//!   an IP address a success answer gave a permission, unexpired (ChannelData: through a
//!   channel a success answer bound to that peer);
//! - whatever a peer sends reaches the allocation's own client only if its IP address has a
//!   permission, framed correctly (ChannelData of a bound channel, or a Data indication);
//! - `handle_timeout` makes progress: after it, `poll_timeout` is in the future.
//!
//! `RELAY_CORE_TRACE=1` prints every operation and what came of it (to read a reproducer).

#![no_main]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use stun_types::attribute::{
    Attribute as _, AttributeStaticType, AttributeType, ErrorCode, Nonce, RawAttribute, Software,
};
use stun_types::message::{Message, MessageClass, MessageWriteExt, Method, BINDING};
use turn_types::attribute::{
    AdditionalAddressFamily, ChannelNumber, Data, DontFragment, EvenPort, Lifetime,
    RequestedAddressFamily, RequestedTransport, ReservationToken, XorPeerAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, SEND};
use turn_types::AddressFamily;

use switchboard_turn::policy::{PeerPolicy, PeerRange};
use switchboard_turn::proto::stream::frame_len;
use switchboard_turn::proto::{
    AllocId, ClientAction, Command, Event, Family, FiveTuple, OpenError, Server, ServerConfig,
    PEER_HEADROOM, PEER_TAILROOM,
};
use switchboard_turn::Time;
use switchboard_turn_fuzz::{
    at, base_config, builder, canonical, check_peer_frame, client, ip, peer, seal, Reader, Sign,
    User, MAX_TRANSMIT, REALM, RELAY_PORTS, T0,
};

/// Operations per input.
const MAX_OPS: usize = 64;

/// `RELAY_CORE_TRACE=1`: print what happens (to read a reproducer or check a seed).
fn tracing() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("RELAY_CORE_TRACE").is_some())
}

macro_rules! trace {
    ($($t:tt)*) => {
        if tracing() {
            eprintln!($($t)*);
        }
    };
}

fn config(flags: u8) -> ServerConfig {
    let mut c = base_config();
    if flags & 1 != 0 {
        c.relay_ips.push(ip("2001:db8::10"));
    }
    if flags & 2 != 0 {
        c.external_ips.push(ip("192.0.2.200"));
        if flags & 1 != 0 {
            c.external_ips.push(ip("2001:db8::200"));
        }
    }
    if flags & 4 != 0 {
        let allow: Vec<PeerRange> = ["198.51.100.10/32", "127.0.0.1/32"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        c.policy = PeerPolicy::new(allow, vec!["1.1.1.1/32".parse().unwrap()]);
    }
    if flags & 8 != 0 {
        c.host_ips.push(ip("203.0.113.7"));
    }
    c.user_quota = 1 + u32::from((flags >> 4) & 3);
    c.total_quota = 2 + u32::from((flags >> 6) & 3);
    c.max_permissions = 4;
    c.max_channels = 4;
    c
}

fn channel_number(r: &mut Reader<'_>) -> u16 {
    match r.u8() {
        c @ 0..=0xf7 => 0x4000 + u16::from(c),
        c => [0x3fff, 0x4fff, 0x5000, 0x7fff, 0x8000, 0xffff, 0, 0x4000][usize::from(c - 0xf8)],
    }
}

/// A payload: `len` bytes of the input, or (255) a large one of a size read next.
fn payload(r: &mut Reader<'_>) -> Vec<u8> {
    match r.u8() {
        255 => {
            let n = usize::from(r.u16());
            (0..n).map(|i| i as u8).collect()
        }
        n => r.bytes(usize::from(n)).to_vec(),
    }
}

/// The users, minted once with the crate's own `credentials::mint` and the fixed secret.
fn users() -> &'static [User; 4] {
    static USERS: OnceLock<[User; 4]> = OnceLock::new();
    USERS.get_or_init(|| {
        [
            // Expires within the hour: the clock can pass it.
            User::mint("alice", T0 + 3600),
            User::mint("bob", T0 + 30 * 86_400),
            // A Matrix user id: the user name after the first colon is opaque.
            User::mint("@carol:example.org", T0 + 30 * 86_400),
            // Expired from the start.
            User::mint("mallory", T0 - 1),
        ]
    })
}

/// What a client asked that a success answer would grant.
struct Asked {
    method: Method,
    /// CreatePermission's peers, ChannelBind's peer (canonical).
    peers: Vec<SocketAddr>,
    channel: Option<u16>,
}

struct Harness {
    server: Server,
    now: Time,
    users: &'static [User; 4],
    /// OpenRelay commands not answered yet.
    pending: Vec<(AllocId, Family, bool)>,
    /// Every id an OpenRelay named, in order.
    issued: Vec<AllocId>,
    /// Relay sockets open: (id, family) → address.
    sockets: HashMap<(AllocId, Family), SocketAddr>,
    /// Ids the harness answered `Ok` for at least once.
    opened: HashSet<AllocId>,
    /// The allocation each 5-tuple holds, from AllocationCreated events.
    by_tuple: HashMap<FiveTuple, AllocId>,
    /// Permissions the core granted: (allocation, IP) → expiry.
    permissions: HashMap<(AllocId, IpAddr), Time>,
    /// Channels the core bound: (allocation, number) → (peer, expiry).
    channels: HashMap<(AllocId, u16), (SocketAddr, Time)>,
    /// Clients that sent something, with the transaction ids they used.
    txids: HashMap<FiveTuple, Vec<[u8; 12]>>,
    /// Requests that would grant something, by client and transaction id.
    asked: HashMap<(FiveTuple, [u8; 12]), Asked>,
    /// Stream clients that hold an allocation (the driver lets them send ChannelData).
    authenticated: HashSet<FiveTuple>,
    /// The last NONCE each client got, and the last anyone got.
    nonces: HashMap<FiveTuple, String>,
    last_nonce: Option<String>,
    next_txid: u128,
}

impl Harness {
    fn new(flags: u8) -> Self {
        Harness {
            server: Server::new(config(flags)),
            now: at(0),
            users: users(),
            pending: Vec::new(),
            issued: Vec::new(),
            sockets: HashMap::new(),
            opened: HashSet::new(),
            by_tuple: HashMap::new(),
            permissions: HashMap::new(),
            channels: HashMap::new(),
            txids: HashMap::new(),
            asked: HashMap::new(),
            authenticated: HashSet::new(),
            nonces: HashMap::new(),
            last_nonce: None,
            next_txid: 0x1000,
        }
    }

    fn step(&mut self, r: &mut Reader<'_>) {
        let op = r.u8() % 9;
        trace!("-- op {op} at +{} ms", self.now.unix_millis() - T0 * 1000);
        match op {
            0 => self.request(r),
            1 => {
                let tuple = client(r.u8());
                let number = channel_number(r);
                let data = payload(r);
                let flags = r.u8();
                let len = match flags & 3 {
                    0 | 1 => data.len() as u16,
                    2 => (data.len() as u16).wrapping_add(1),
                    _ => (data.len() as u16).wrapping_sub(1),
                };
                let mut bytes = Vec::with_capacity(data.len() + 7);
                bytes.extend_from_slice(&number.to_be_bytes());
                bytes.extend_from_slice(&len.to_be_bytes());
                bytes.extend_from_slice(&data);
                if tuple.is_stream() && flags & 4 == 0 {
                    bytes.resize(4 + ((bytes.len() - 4 + 3) & !3), 0);
                }
                self.deliver(tuple, &bytes);
            }
            2 => {
                let tuple = client(r.u8());
                let n = usize::from(r.u16());
                let bytes = r.bytes(n).to_vec();
                self.deliver(tuple, &bytes);
            }
            3 => self.peer_data(r),
            4 => {
                let sel = usize::from(r.u8());
                let result = r.u8();
                if !self.pending.is_empty() {
                    let (id, family, even) = self.pending.remove(sel % self.pending.len());
                    let result = match result & 7 {
                        6 => Err(OpenError::NoPorts),
                        7 => Err(OpenError::Io),
                        _ => self.free_port(family, even, result >> 3),
                    };
                    self.open(id, family, result);
                }
            }
            5 => {
                let v = r.u16();
                let d = if v & 0x8000 != 0 {
                    Duration::from_millis(u64::from(v & 0x7fff))
                } else {
                    Duration::from_secs(u64::from(v))
                };
                self.now = self.now + d;
            }
            6 => {
                let sel = r.u8();
                if sel & 0x80 != 0 {
                    if let Some(id) = self.pick_id(sel & 0x7f) {
                        self.server.close_allocation(self.now, id);
                    }
                } else {
                    let tuple = client(sel);
                    self.close_client(tuple);
                }
            }
            7 => self.server.handle_timeout(self.now),
            _ => {
                while let Some((id, family, even)) = self.pending.first().copied() {
                    self.pending.remove(0);
                    let result = self.free_port(family, even, 0);
                    self.open(id, family, result);
                }
            }
        }
        self.drain();
        self.timers();
        self.check();
    }

    /// An id the core announced: most recent first; stale ones included.
    fn pick_id(&self, sel: u8) -> Option<AllocId> {
        let n = self.issued.len();
        (n > 0).then(|| self.issued[n - 1 - usize::from(sel) % n])
    }

    /// A relay port of the range no socket of `family` holds (even if asked), as the driver
    /// picks; `NoPorts` when there is none.
    fn free_port(&self, family: Family, even: bool, hint: u8) -> Result<SocketAddr, OpenError> {
        let ip = self
            .server
            .config()
            .relay_ip(family)
            .expect("asked for a configured family");
        let (lo, hi) = (*RELAY_PORTS.start(), *RELAY_PORTS.end());
        let span = hi - lo + 1;
        (0..span)
            .map(|i| lo + (u16::from(hint) + i) % span)
            .filter(|p| !even || p % 2 == 0)
            .map(|p| SocketAddr::new(ip, p))
            .find(|a| !self.sockets.values().any(|s| s == a))
            .ok_or(OpenError::NoPorts)
    }

    fn open(&mut self, id: AllocId, family: Family, result: Result<SocketAddr, OpenError>) {
        if let Ok(a) = result {
            self.sockets.insert((id, family), a);
            self.opened.insert(id);
        }
        self.server
            .handle_relay_opened(self.now, id, family, result);
    }

    fn close_client(&mut self, tuple: FiveTuple) {
        self.server.close_client(self.now, &tuple);
        self.authenticated.remove(&tuple);
    }

    /// Op 0: a STUN message built with the stun-types writer.
    fn request(&mut self, r: &mut Reader<'_>) {
        let tuple = client(r.u8());
        let (class, method) = match r.u8() % 8 {
            0 => (MessageClass::Request, ALLOCATE),
            1 => (MessageClass::Request, REFRESH),
            2 => (MessageClass::Request, CREATE_PERMISSION),
            3 => (MessageClass::Request, CHANNEL_BIND),
            4 => (MessageClass::Request, BINDING),
            5 => (MessageClass::Indication, SEND),
            6 => (MessageClass::Indication, BINDING),
            // Connect (RFC 6062), not served.
            _ => (MessageClass::Request, Method::new(0x000a)),
        };
        let auth = r.u8();
        let reuse = r.u8();
        let txid = match self.txids.get(&tuple) {
            Some(used) if reuse != 0 && !used.is_empty() => {
                let t = used[used.len() - 1 - (usize::from(reuse) - 1) % used.len()];
                let mut b = [0u8; 16];
                b[4..].copy_from_slice(&t);
                u128::from_be_bytes(b)
            }
            _ => {
                self.next_txid += 1;
                self.next_txid
            }
        };
        let mut w = builder(class, method, txid);
        let id = txid.into();
        for _ in 0..r.u8() % 8 {
            let _ = match r.u8() % 12 {
                0 => {
                    let p = match r.u8() {
                        0 => RequestedTransport::UDP,
                        1 => RequestedTransport::TCP,
                        p => p,
                    };
                    w.add_attribute(&RequestedTransport::new(p))
                }
                1 => {
                    let secs = match r.u8() {
                        p @ 0..=7 => [0, 1, 60, 300, 600, 3600, 7200, u32::MAX][usize::from(p)],
                        p => u32::from(p) * 10,
                    };
                    w.add_attribute(&Lifetime::new(secs))
                }
                2 => w.add_attribute(&XorPeerAddress::new(peer(r.u8()), id)),
                3 => w.add_attribute(&ChannelNumber::new(channel_number(r))),
                4 => {
                    let data = payload(r);
                    w.add_attribute(&Data::new(&data))
                }
                k @ (5 | 6) => {
                    let t = if k == 5 {
                        RequestedAddressFamily::TYPE
                    } else {
                        AdditionalAddressFamily::TYPE
                    };
                    match r.u8() {
                        0 if k == 5 => {
                            w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV4))
                        }
                        1 if k == 5 => {
                            w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV6))
                        }
                        0 | 1 => {
                            w.add_attribute(&AdditionalAddressFamily::new(AddressFamily::IPV6))
                        }
                        f => w.add_attribute(&RawAttribute::new(t, &[f, 0, 0, 0])),
                    }
                }
                7 => w.add_attribute(&EvenPort::new(r.u8() & 1 != 0)),
                8 => w.add_attribute(&ReservationToken::new(0x0102_0304_0506_0708)),
                9 => w.add_attribute(&DontFragment::new()),
                10 => {
                    let t = r.u16();
                    let len = usize::from(r.u8() % 64);
                    let value = r.bytes(len).to_vec();
                    // The writer refuses these types in add_attribute (raw ops can carry them).
                    if [0x0008, 0x001c, 0x8028].contains(&t) {
                        Ok(())
                    } else {
                        w.add_attribute(&RawAttribute::new(AttributeType::new(t), &value))
                    }
                }
                _ => w.add_attribute(&Software::new("fuzz").unwrap()),
            };
        }
        let user = &self.users[usize::from(auth & 3)];
        let nonce = match (auth >> 2) & 3 {
            0 => self
                .nonces
                .get(&tuple)
                .cloned()
                .or_else(|| Some("AAAAAAAAAAAAAAAA".into())),
            1 => self
                .last_nonce
                .clone()
                .or_else(|| Some("AAAAAAAAAAAAAAAA".into())),
            2 => Some("ZmF1eC1ub25jZS0x".into()),
            _ => None,
        };
        let sign = Sign {
            user,
            nonce: nonce.as_deref(),
            realm: if auth & 0x20 != 0 {
                "other.realm"
            } else {
                REALM
            },
            wrong_key: auth & 0x10 != 0,
        };
        let unauthenticated = auth & 0x80 != 0;
        let bytes = seal(w, (!unauthenticated).then_some(&sign), auth & 0x40 != 0);
        self.deliver(tuple, &bytes);
    }

    /// Op 3: a datagram from a peer, on an allocation's relay socket.
    fn peer_data(&mut self, r: &mut Reader<'_>) {
        let sel = r.u8();
        let from = peer(r.u8());
        let data = payload(r);
        let Some(id) = self.pick_id(sel) else {
            return;
        };
        let mut buf = vec![0u8; PEER_HEADROOM + data.len() + PEER_TAILROOM];
        let range = PEER_HEADROOM..PEER_HEADROOM + data.len();
        buf[range.clone()].copy_from_slice(&data);
        self.deliver_from_peer(id, from, &mut buf, range);
    }

    /// `handle_peer_data` and what it promises.
    fn deliver_from_peer(
        &mut self,
        id: AllocId,
        from: SocketAddr,
        buf: &mut [u8],
        range: std::ops::Range<usize>,
    ) {
        let data = buf[range.clone()].to_vec();
        let Some(action) = self.server.handle_peer_data(self.now, id, from, buf, range) else {
            trace!("   peer {from} -> {id:?}: dropped");
            return;
        };
        trace!(
            "   peer {from} -> {id:?}: {} bytes to {:?}",
            action.frame.len(),
            action.tuple.client
        );
        let tuple = self.server.allocation_tuple(id);
        assert_eq!(tuple, Some(action.tuple), "peer data for another client");
        let from = canonical(from);
        assert!(
            self.permitted(id, from.ip()),
            "{from} reached the client of {id:?} without a permission"
        );
        assert!(action.frame.end <= buf.len(), "frame outside the buffer");
        let frame = &buf[action.frame];
        if let Some(number) = check_peer_frame(frame, from, &data, action.tuple.is_stream()) {
            assert!(
                self.bound(id, number) == Some(from),
                "ChannelData {number:#x} for {from} without that binding"
            );
        }
    }

    fn permitted(&self, id: AllocId, ip: IpAddr) -> bool {
        self.permissions
            .get(&(id, ip))
            .is_some_and(|&t| t > self.now)
    }

    fn bound(&self, id: AllocId, number: u16) -> Option<SocketAddr> {
        self.channels
            .get(&(id, number))
            .filter(|(_, t)| *t > self.now)
            .map(|(p, _)| *p)
    }

    /// A client's bytes, as the driver hands them to the core.
    fn deliver(&mut self, tuple: FiveTuple, bytes: &[u8]) {
        if !tuple.is_stream() {
            self.client_frame(tuple, &bytes[..bytes.len().min(65_535)]);
            return;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            if rest[0] >> 6 == 1 && !self.authenticated.contains(&tuple) {
                // The driver closes a stream that starts with ChannelData before an allocation.
                self.close_client(tuple);
                return;
            }
            match frame_len(rest) {
                Ok(Some(n)) if n <= rest.len() => {
                    let (frame, next) = rest.split_at(n);
                    self.client_frame(tuple, frame);
                    self.drain();
                    rest = next;
                }
                // An incomplete frame: the connection waits for more (dropped here).
                Ok(_) => return,
                Err(_) => {
                    self.close_client(tuple);
                    return;
                }
            }
        }
    }

    fn client_frame(&mut self, tuple: FiveTuple, frame: &[u8]) {
        if frame.len() >= 20 {
            let mut t = [0u8; 12];
            t.copy_from_slice(&frame[8..20]);
            self.txids.entry(tuple).or_default().push(t);
        } else {
            self.txids.entry(tuple).or_default();
        }
        // What a success answer to this request would grant, parsed as the core parses it.
        if let Ok(msg) = Message::from_bytes(frame) {
            if msg.class() == MessageClass::Request
                && (msg.method() == CREATE_PERMISSION || msg.method() == CHANNEL_BIND)
            {
                let txid = msg.transaction_id();
                let peers = msg
                    .iter_attributes()
                    .filter(|(_, a)| a.get_type() == XorPeerAddress::TYPE)
                    .filter_map(|(_, a)| XorPeerAddress::try_from(&a).ok())
                    .map(|a| canonical(a.addr(txid)))
                    .collect();
                let channel = msg.attribute::<ChannelNumber>().ok().map(|c| c.channel());
                let mut t = [0u8; 12];
                t.copy_from_slice(&frame[8..20]);
                if self.server.is_retransmission(&tuple, txid) {
                    // Answered from the allocation's response cache, whatever it says now:
                    // an earlier request with this id was carried out, this one will not be.
                    self.asked.remove(&(tuple, t));
                } else {
                    self.asked.insert(
                        (tuple, t),
                        Asked {
                            method: msg.method(),
                            peers,
                            channel,
                        },
                    );
                }
            }
        }
        let action = self.server.handle_client(self.now, tuple, frame);
        trace!(
            "   {:?} {} sent {} bytes: {action:?}",
            tuple.transport,
            tuple.client,
            frame.len()
        );
        match action {
            ClientAction::Done => {}
            ClientAction::Relay {
                alloc,
                peer,
                payload,
            } => {
                assert_eq!(
                    self.server.allocation_tuple(alloc),
                    Some(tuple),
                    "relayed from another client's allocation"
                );
                assert!(payload.len() <= 65_535);
                assert!(
                    self.permitted(alloc, canonical(peer).ip()),
                    "relayed to {peer} without a permission"
                );
                assert!(
                    self.sockets.contains_key(&(alloc, Family::of(peer.ip()))),
                    "relayed to {peer} from a family with no relay socket"
                );
                if frame[0] >> 6 == 1 {
                    let number = u16::from_be_bytes([frame[0], frame[1]]);
                    assert_eq!(
                        self.bound(alloc, number),
                        Some(peer),
                        "ChannelData {number:#x} relayed without that binding"
                    );
                }
            }
            ClientAction::Hairpin { to, from, payload } => {
                assert!(
                    self.server.allocation_tuple(to).is_some(),
                    "hairpin to a closed allocation"
                );
                let sender = self.by_tuple.get(&tuple).copied();
                assert!(
                    sender.is_some(),
                    "hairpin from a client without an allocation"
                );
                assert!(
                    self.sockets.values().any(|s| s.port() == from.port()),
                    "hairpin from {from}, not a relayed address"
                );
                // The driver copies the payload to its scratch buffer and delivers it.
                let payload = payload.to_vec();
                let mut buf = vec![0u8; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
                let range = PEER_HEADROOM..PEER_HEADROOM + payload.len();
                buf[range.clone()].copy_from_slice(&payload);
                self.deliver_from_peer(to, from, &mut buf, range);
            }
            ClientAction::Local { to, .. } => {
                panic!("a datagram for the local peer {to}, and none is configured")
            }
        }
    }

    fn drain(&mut self) {
        while let Some(cmd) = self.server.poll_command() {
            trace!("   command {cmd:?}");
            match cmd {
                Command::OpenRelay(r) => {
                    assert!(
                        self.server.allocation_tuple(r.id).is_some(),
                        "OpenRelay for a missing allocation"
                    );
                    assert!(self.server.config().relay_ip(r.family).is_some());
                    if !self.issued.contains(&r.id) {
                        self.issued.push(r.id);
                    }
                    self.pending.push((r.id, r.family, r.even_port));
                }
                Command::CloseRelay { id } => {
                    assert!(
                        self.opened.contains(&id),
                        "CloseRelay for {id:?}, never opened"
                    );
                    assert!(
                        self.server.allocation_tuple(id).is_none(),
                        "CloseRelay for a live allocation"
                    );
                    self.sockets.retain(|(i, _), _| *i != id);
                }
            }
        }
        while let Some(t) = self.server.poll_transmit() {
            let used = self
                .txids
                .get(&t.tuple)
                .unwrap_or_else(|| panic!("a message to {:?}, who sent nothing", t.tuple));
            assert!(
                t.data.len() <= MAX_TRANSMIT,
                "a message of {} bytes",
                t.data.len()
            );
            let msg = Message::from_bytes(&t.data)
                .unwrap_or_else(|e| panic!("malformed STUN sent ({e}): {:02x?}", t.data));
            trace!(
                "   to {}: {:?} {:?} {:?}",
                t.tuple.client,
                msg.method(),
                msg.class(),
                msg.attribute::<ErrorCode>().map(|e| e.code()).ok()
            );
            assert!(msg.is_response(), "sent a {:?}", msg.class());
            let mut txid = [0u8; 12];
            txid.copy_from_slice(&t.data[8..20]);
            assert!(
                used.contains(&txid),
                "a response to a transaction never started"
            );
            if let Ok(n) = msg.attribute::<Nonce>() {
                self.nonces.insert(t.tuple, n.nonce().to_owned());
                self.last_nonce = Some(n.nonce().to_owned());
            }
            if msg.class() == MessageClass::Success {
                self.granted(t.tuple, txid, msg.method());
            }
        }
        while let Some(e) = self.server.poll_event() {
            trace!("   event {e:?}");
            match e {
                Event::AllocationCreated {
                    id, tuple, relayed, ..
                } => {
                    assert_eq!(self.server.allocation_tuple(id), Some(tuple));
                    assert!(
                        self.sockets
                            .iter()
                            .any(|((i, _), a)| *i == id && a.port() == relayed.port()),
                        "created on {relayed}, which is not its socket"
                    );
                    self.by_tuple.insert(tuple, id);
                    if tuple.is_stream() {
                        self.authenticated.insert(tuple);
                    }
                }
                Event::AllocationClosed { id, tuple, .. } => {
                    assert!(
                        self.server.allocation_tuple(id).is_none(),
                        "closed but still there"
                    );
                    if self.by_tuple.get(&tuple) == Some(&id) {
                        self.by_tuple.remove(&tuple);
                    }
                    // The driver closes a stream client's connection with its allocation.
                    self.authenticated.remove(&tuple);
                    self.permissions.retain(|(i, _), _| *i != id);
                    self.channels.retain(|(i, _), _| *i != id);
                }
                _ => {}
            }
        }
    }

    /// A success answer: what the request asked for is granted to the client's allocation.
    fn granted(&mut self, tuple: FiveTuple, txid: [u8; 12], method: Method) {
        let Some(asked) = self.asked.get(&(tuple, txid)) else {
            return;
        };
        if asked.method != method {
            return;
        }
        let Some(&id) = self.by_tuple.get(&tuple) else {
            return;
        };
        let config = self.server.config();
        let perm = self.now + config.permission_lifetime;
        let chan = self.now + config.channel_lifetime;
        for p in asked.peers.clone() {
            let e = self.permissions.entry((id, p.ip())).or_insert(perm);
            *e = (*e).max(perm);
        }
        if method == CHANNEL_BIND {
            if let (Some(number), Some(&p)) = (asked.channel, asked.peers.first()) {
                self.channels.insert((id, number), (p, chan));
            }
        }
    }

    /// `handle_timeout` whenever `poll_timeout` is due, as the driver's loop does.
    fn timers(&mut self) {
        for _ in 0..4 {
            match self.server.poll_timeout() {
                Some(t) if t <= self.now => {
                    self.server.handle_timeout(self.now);
                    self.drain();
                }
                _ => return,
            }
        }
        let due = self.server.poll_timeout();
        panic!(
            "handle_timeout makes no progress: due {due:?}, now {:?}",
            self.now
        );
    }

    fn check(&self) {
        let config = self.server.config();
        let count = self.server.allocation_count();
        assert!(count <= config.total_quota as usize, "{count} allocations");
        let mut per_user: HashMap<&str, u32> = HashMap::new();
        for (user, _) in self.server.usage_by_user() {
            *per_user.entry(user).or_default() += 1;
        }
        for (user, n) in &per_user {
            assert!(*n <= config.user_quota, "{user} holds {n} allocations");
        }
        assert_eq!(per_user.values().sum::<u32>() as usize, count);
        let alive = self
            .issued
            .iter()
            .filter(|id| self.server.allocation_tuple(**id).is_some())
            .count();
        assert_eq!(
            alive, count,
            "allocations without an OpenRelay, or a miscount"
        );
        for (id, _) in self.sockets.keys() {
            assert!(
                self.server.allocation_tuple(*id).is_some(),
                "a relay socket outlived {id:?}"
            );
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let mut r = Reader::new(input);
    let mut h = Harness::new(r.u8());
    for _ in 0..MAX_OPS {
        if r.is_empty() {
            break;
        }
        h.step(&mut r);
    }
});
