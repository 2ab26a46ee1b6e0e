//! The server: dispatch of STUN methods, authentication, and the data paths.
//!
//! RFC 8489 §6.3 (request processing, 420 for unknown comprehension-required attributes),
//! §9.2 (long-term credentials), RFC 8656 §7 (Allocate, Refresh), §9–10 (CreatePermission,
//! Send/Data), §11–12 (ChannelBind, ChannelData).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use stun_types::attribute::{
    Attribute as _, AttributeStaticType, AttributeType, ErrorCode, Fingerprint, MessageIntegrity,
    MessageIntegritySha256, Nonce, Realm, UnknownAttributes, Username, XorMappedAddress,
};
use stun_types::message::{
    IntegrityAlgorithm, IntegrityKey, Message, MessageClass, MessageHeader, MessageType,
    MessageWrite, MessageWriteExt, MessageWriteVec, Method, StunParseError, TransactionId, BINDING,
};
use turn_types::attribute::{
    AdditionalAddressFamily, AddressErrorCode, ChannelNumber, Data, DontFragment, EvenPort,
    Lifetime, RequestedAddressFamily, RequestedTransport, ReservationToken, XorPeerAddress,
    XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND};
use turn_types::AddressFamily;

use super::allocation::{AllocId, Allocation, Phase, Usage};
use super::channel::{BindError, CHANNEL_MAX, CHANNEL_MIN};
use super::credentials;
use super::limit::ChallengeLimiter;
use super::nonce::Nonces;
use super::policy::{self, Refusal};
use super::{
    AuthFailure, CloseReason, Command, Event, Family, FiveTuple, OpenError, ServerConfig, Time,
    Transmit, Transport,
};

/// Bytes [`Server::handle_peer_data`] needs in front of a peer's payload to frame it in place:
/// a Data indication's header, XOR-PEER-ADDRESS (IPv6) and DATA attribute header.
pub const PEER_HEADROOM: usize = 20 + 4 + 20 + 4;
/// Bytes it needs after the payload: DATA's padding to a multiple of 4.
pub const PEER_TAILROOM: usize = 3;

/// How long a deleted allocation's last answer is kept for a retransmitted Refresh (RFC 8489
/// §6.2.1: a transaction lasts 39.5 s over UDP).
const TOMBSTONE_TTL: Duration = Duration::from_secs(40);
/// At most this many deleted allocations are remembered.
const MAX_TOMBSTONES: usize = 4096;
/// How often expired permissions, channels and tombstones are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// What the driver does with a client's datagram after [`Server::handle_client`].
#[derive(Debug, PartialEq, Eq)]
pub enum ClientAction<'a> {
    /// Nothing more: a STUN message was handled (answers, if any, are in `poll_transmit`) or
    /// the datagram was dropped.
    Done,
    /// Send `payload` to `peer` from the relay socket of `alloc`.
    Relay {
        alloc: AllocId,
        peer: SocketAddr,
        payload: &'a [u8],
    },
    /// `peer` is another allocation of this relay: hand `payload` to
    /// [`Server::handle_peer_data`] for allocation `to`, as arriving from `from`.
    Hairpin {
        to: AllocId,
        from: SocketAddr,
        payload: &'a [u8],
    },
}

/// Where a peer's datagram goes after [`Server::handle_peer_data`] framed it.
#[derive(Debug, PartialEq, Eq)]
pub struct PeerAction {
    /// The client to send to.
    pub tuple: FiveTuple,
    /// The framed message within the buffer passed in.
    pub frame: Range<usize>,
}

struct Slot {
    generation: u32,
    allocation: Option<Allocation>,
}

/// What an authenticated request proved.
struct Authed {
    key: IntegrityKey,
    /// `<expiry><separator><user>`, or `<expiry>` alone.
    username: String,
    /// Where the user starts in `username` ([`credentials::VerifiedUser::user`]).
    user_at: usize,
}

impl Authed {
    fn user(&self) -> &str {
        self.username.get(self.user_at..).unwrap_or_default()
    }
}

/// Per-request output options.
struct Reply<'k> {
    key: Option<&'k IntegrityKey>,
    fingerprint: bool,
}

/// The TURN server core. See the [module docs](super) for how to drive it.
pub struct Server {
    config: ServerConfig,
    nonces: Nonces,
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_tuple: HashMap<FiveTuple, AllocId>,
    by_relay: HashMap<SocketAddr, AllocId>,
    per_user: HashMap<Box<str>, u32>,
    count: usize,
    /// Every active allocation's deadline, one entry each (moved on refresh).
    expiries: BTreeSet<(Time, AllocId)>,
    tombstones: HashMap<FiveTuple, (TransactionId, Box<[u8]>, Time)>,
    next_sweep: Option<Time>,
    transmits: VecDeque<Transmit>,
    commands: VecDeque<Command>,
    events: VecDeque<Event>,
    /// Challenges per source over UDP.
    challenges: ChallengeLimiter,
    rng: u64,
}

/// The most unknown attribute types one 420 answer lists.
const MAX_UNKNOWN: usize = 16;

/// The attribute types this server understands in requests; any other comprehension-required
/// attribute gets 420 (RFC 8489 §6.3.1).
const KNOWN: &[u16] = &[
    0x0001, // MAPPED-ADDRESS
    0x0006, // USERNAME
    0x0008, // MESSAGE-INTEGRITY
    0x000C, // CHANNEL-NUMBER
    0x000D, // LIFETIME
    0x0012, // XOR-PEER-ADDRESS
    0x0013, // DATA
    0x0014, // REALM
    0x0015, // NONCE
    0x0016, // XOR-RELAYED-ADDRESS
    0x0017, // REQUESTED-ADDRESS-FAMILY
    0x0018, // EVEN-PORT
    0x0019, // REQUESTED-TRANSPORT
    0x001A, // DONT-FRAGMENT
    0x001C, // MESSAGE-INTEGRITY-SHA256
    0x0020, // XOR-MAPPED-ADDRESS
    0x0022, // RESERVATION-TOKEN
];

impl Server {
    /// A server with no allocations.
    pub fn new(config: ServerConfig) -> Self {
        let nonces = Nonces::new(&config.nonce_key, config.nonce_lifetime.as_secs());
        let rng = config.seed | 1;
        let challenges = ChallengeLimiter::new(config.seed);
        Server {
            config,
            nonces,
            slots: Vec::new(),
            free: Vec::new(),
            by_tuple: HashMap::new(),
            by_relay: HashMap::new(),
            per_user: HashMap::new(),
            count: 0,
            expiries: BTreeSet::new(),
            tombstones: HashMap::new(),
            next_sweep: None,
            transmits: VecDeque::new(),
            commands: VecDeque::new(),
            events: VecDeque::new(),
            challenges,
            rng,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// How many allocations exist (including ones whose relay socket is being opened).
    pub fn allocation_count(&self) -> usize {
        self.count
    }

    /// The 5-tuple an allocation belongs to.
    pub fn allocation_tuple(&self, id: AllocId) -> Option<FiveTuple> {
        self.get(id).map(|a| a.tuple)
    }

    /// What an allocation has relayed so far.
    pub fn allocation_usage(&self, id: AllocId) -> Option<Usage> {
        self.get(id).map(|a| a.usage)
    }

    /// What each open allocation has relayed so far, with the user it belongs to (the part of
    /// its username after the expiry).
    pub fn usage_by_user(&self) -> impl Iterator<Item = (&str, Usage)> {
        self.slots
            .iter()
            .filter_map(|s| s.allocation.as_ref())
            .map(|a| (a.user(), a.usage))
    }

    /// The next STUN message to send to a client.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next side effect to carry out.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Server::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Time> {
        let expiry = self.expiries.first().map(|(t, _)| *t);
        match (expiry, self.next_sweep) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Expires allocations whose lifetime ran out, and sweeps stale permissions and channels.
    pub fn handle_timeout(&mut self, now: Time) {
        while let Some(&(t, id)) = self.expiries.first() {
            if t > now {
                break;
            }
            self.close(now, id, CloseReason::Expired);
            // `close` removes the entry; make sure of it even for a stale one.
            self.expiries.remove(&(t, id));
        }
        if self.next_sweep.is_some_and(|t| t <= now) {
            for slot in &mut self.slots {
                if let Some(a) = &mut slot.allocation {
                    a.permissions.prune(now);
                    a.channels.prune(now);
                }
            }
            self.tombstones.retain(|_, (_, _, exp)| *exp > now);
            self.next_sweep =
                (self.count > 0 || !self.tombstones.is_empty()).then(|| now + SWEEP_INTERVAL);
        }
    }

    /// Closes an allocation from outside the protocol (its connection closed, shutdown).
    pub fn close_allocation(&mut self, now: Time, id: AllocId) {
        if self.get(id).is_some() {
            self.close(now, id, CloseReason::Closed);
        }
    }

    /// The client's connection closed (TCP, TLS): its allocation goes with it (RFC 8656 §7:
    /// an allocation over a stream lives as long as the connection).
    pub fn close_client(&mut self, now: Time, tuple: &FiveTuple) {
        if let Some(&id) = self.by_tuple.get(tuple) {
            self.close(now, id, CloseReason::Closed);
        }
        self.tombstones.remove(tuple);
    }

    /// Handles one datagram (or one framed message, over a stream) from a client.
    pub fn handle_client<'a>(
        &mut self,
        now: Time,
        tuple: FiveTuple,
        data: &'a [u8],
    ) -> ClientAction<'a> {
        match data.first() {
            Some(b) if b & 0xC0 == 0x40 => self.channel_data(now, &tuple, data),
            Some(b) if b & 0xC0 == 0 => self.stun(now, tuple, data),
            _ => ClientAction::Done,
        }
    }

    /// ChannelData from a client (RFC 8656 §12.6): the hot path, no allocation, no parsing
    /// beyond the 4-byte header.
    fn channel_data<'a>(
        &mut self,
        now: Time,
        tuple: &FiveTuple,
        data: &'a [u8],
    ) -> ClientAction<'a> {
        if data.len() < 4 {
            return ClientAction::Done;
        }
        let number = u16::from_be_bytes([data[0], data[1]]);
        let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&number) || 4 + len > data.len() {
            return ClientAction::Done;
        }
        let payload = &data[4..4 + len];
        let Some(&id) = self.by_tuple.get(tuple) else {
            return ClientAction::Done;
        };
        let Some(alloc) = self.get_mut(id) else {
            return ClientAction::Done;
        };
        let Some(peer) = alloc.channels.peer(number, now) else {
            return ClientAction::Done;
        };
        if !alloc.permissions.allows(peer.ip(), now) {
            return ClientAction::Done;
        }
        self.forward(id, peer, payload)
    }

    /// Sends `payload` from allocation `id` toward `peer` (already authorised), through the
    /// network or, for the relay's own addresses, inside the process.
    fn forward<'a>(
        &mut self,
        id: AllocId,
        peer: SocketAddr,
        payload: &'a [u8],
    ) -> ClientAction<'a> {
        if self.is_own_ip(peer.ip()) && self.config.relay_ports.contains(&peer.port()) {
            let family = Family::of(peer.ip());
            let relay = self
                .config
                .relay_ip(family)
                .map(|ip| SocketAddr::new(ip, peer.port()));
            match (
                relay.and_then(|r| self.by_relay.get(&r)),
                self.get(id).and_then(|a| a.advertised[family.index()]),
            ) {
                (Some(&to), Some(from)) => {
                    self.count_to_peer(id, payload.len());
                    return ClientAction::Hairpin { to, from, payload };
                }
                // A relay port no allocation holds: some other program's socket, reachable
                // only where the operator allowed the address explicitly.
                _ if self.config.policy.is_explicitly_allowed(peer.ip()) => {}
                _ => return ClientAction::Done,
            }
        }
        self.count_to_peer(id, payload.len());
        ClientAction::Relay {
            alloc: id,
            peer,
            payload,
        }
    }

    fn count_to_peer(&mut self, id: AllocId, len: usize) {
        if let Some(a) = self.get_mut(id) {
            a.usage.packets_to_peer += 1;
            a.usage.bytes_to_peer += len as u64;
        }
    }

    /// A datagram from `from` arrived on allocation `id`'s relay socket (or through the
    /// hairpin). `buf[payload]` holds it, with at least [`PEER_HEADROOM`] bytes before and
    /// [`PEER_TAILROOM`] after; the core frames it in place for the client. `None`: drop it
    /// (no permission, or no such allocation).
    pub fn handle_peer_data(
        &mut self,
        now: Time,
        id: AllocId,
        from: SocketAddr,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> Option<PeerAction> {
        if payload.start < PEER_HEADROOM || payload.end + PEER_TAILROOM > buf.len() {
            return None;
        }
        let from = canonical(from);
        if !self.own_port_allowed(from) {
            return None;
        }
        let alloc = self.get_mut(id)?;
        if !alloc.is_active() || !alloc.permissions.allows(from.ip(), now) {
            return None;
        }
        let len = payload.len();
        let channel = alloc.channels.number(from, now);
        if channel.is_none() && data_indication_body(len, from) > 0xFFFF {
            // Too large for a Data indication's 16-bit length (a near-64 KiB datagram, from an
            // IPv6 peer or through the hairpin): dropped, as an oversized datagram would be.
            return None;
        }
        alloc.usage.packets_from_peer += 1;
        alloc.usage.bytes_from_peer += len as u64;
        let tuple = alloc.tuple;
        let frame = match channel {
            Some(number) => {
                let start = payload.start - 4;
                buf[start..start + 2].copy_from_slice(&number.to_be_bytes());
                buf[start + 2..start + 4].copy_from_slice(&(len as u16).to_be_bytes());
                if tuple.is_stream() {
                    // RFC 8656 §12.5: padded to four bytes over TCP and TLS.
                    let end = payload.start + ((len + 3) & !3);
                    buf[payload.end..end].fill(0);
                    start..end
                } else {
                    start..payload.end
                }
            }
            None => {
                let txid = self.next_txid();
                frame_data_indication(buf, payload, from, txid)
            }
        };
        Some(PeerAction { tuple, frame })
    }

    /// The driver opened (or failed to open) a relay socket of a pending allocation. Once
    /// every family asked for has been reported, the Allocate is answered.
    pub fn handle_relay_opened(
        &mut self,
        now: Time,
        id: AllocId,
        family: Family,
        result: Result<SocketAddr, OpenError>,
    ) {
        let Some(alloc) = self.get_mut(id) else {
            // Gone meanwhile (its other family failed): the socket must not outlive it.
            if result.is_ok() {
                self.commands.push_back(Command::CloseRelay { id });
            }
            return;
        };
        let Phase::Opening {
            lifetime,
            fingerprint,
            ref mut waiting,
            ref mut v6_error,
        } = alloc.phase
        else {
            return;
        };
        waiting[family.index()] = false;
        let done = !waiting.iter().any(|w| *w);
        match result {
            Ok(addr) => alloc.relayed[family.index()] = Some(addr),
            // The IPv6 half of a dual allocation failed: the IPv4 half still stands, and the
            // answer says why there is no IPv6 address (RFC 8656 §7.2).
            Err(_) if family != alloc.primary => *v6_error = Some(508),
            Err(_) => {}
        }
        if !done {
            return;
        }
        let v6_error = *v6_error;
        let key = alloc.key.clone();
        let tuple = alloc.tuple;
        let txid = alloc.created_by;
        let reply = Reply {
            key: Some(&key),
            fingerprint,
        };
        let relayed = alloc.relayed;
        let Some(primary) = relayed[alloc.primary.index()] else {
            let bytes = error_bytes(ALLOCATE, txid, 508, &reply, |_| {});
            if relayed.iter().any(Option::is_some) {
                self.commands.push_back(Command::CloseRelay { id });
            }
            self.remove(id);
            self.transmits.push_back(Transmit { tuple, data: bytes });
            return;
        };
        let mut advertised = [None; 2];
        for f in [Family::V4, Family::V6] {
            advertised[f.index()] = relayed[f.index()]
                .map(|r| SocketAddr::new(self.config.advertised_ip(f).unwrap_or(r.ip()), r.port()));
        }
        let Some(alloc) = self.get_mut(id) else {
            return;
        };
        alloc.phase = Phase::Active;
        alloc.advertised = advertised;
        alloc.expires = now + lifetime;
        let user: Box<str> = alloc.user().into();
        let bytes = success_bytes(ALLOCATE, txid, &reply, |w| {
            for a in advertised.iter().flatten() {
                put(w, &XorRelayedAddress::new(*a, txid));
            }
            put(w, &Lifetime::new(lifetime.as_secs() as u32));
            put(w, &XorMappedAddress::new(tuple.client, txid));
            if let Some(code) = v6_error {
                if let Ok(code) = ErrorCode::builder(code).build() {
                    put(w, &AddressErrorCode::new(AddressFamily::IPV6, code));
                }
            }
        });
        alloc.responses.put(txid, &bytes);
        let expires = alloc.expires;
        for r in relayed.iter().flatten() {
            self.by_relay.insert(*r, id);
        }
        self.expiries.insert((expires, id));
        self.arm_sweep(now);
        self.transmits.push_back(Transmit { tuple, data: bytes });
        self.events.push_back(Event::AllocationCreated {
            id,
            tuple,
            user,
            relayed: primary,
        });
    }

    // ---- STUN --------------------------------------------------------------------------

    fn stun<'a>(&mut self, now: Time, tuple: FiveTuple, data: &'a [u8]) -> ClientAction<'a> {
        let msg = match Message::from_bytes(data) {
            Ok(msg) if data.len() == MessageHeader::LENGTH + msg_len(data) => msg,
            // A wrong FINGERPRINT means it is not STUN at all (RFC 8489 §7.3): no answer.
            Err(StunParseError::FingerprintMismatch) => return ClientAction::Done,
            _ => {
                // Keep the transaction id of a malformed request so it still gets its 400.
                if let Ok(h) = MessageHeader::from_bytes(data) {
                    if h.get_type().class() == MessageClass::Request {
                        let reply = Reply {
                            key: None,
                            fingerprint: false,
                        };
                        let bytes = error_bytes(
                            h.get_type().method(),
                            h.transaction_id(),
                            400,
                            &reply,
                            |_| {},
                        );
                        self.transmits.push_back(Transmit { tuple, data: bytes });
                    }
                }
                return ClientAction::Done;
            }
        };
        match (msg.class(), msg.method()) {
            (MessageClass::Request, BINDING) => self.binding(tuple, &msg),
            (MessageClass::Request, ALLOCATE) => self.allocate(now, tuple, &msg),
            (MessageClass::Request, m @ (REFRESH | CREATE_PERMISSION | CHANNEL_BIND)) => {
                self.on_allocation(now, tuple, &msg, m)
            }
            (MessageClass::Indication, SEND) => return self.send(now, &tuple, &msg, data),
            (MessageClass::Request, m) => {
                let reply = reply_opts(&msg, None);
                let bytes = error_bytes(m, msg.transaction_id(), 400, &reply, |_| {});
                self.transmits.push_back(Transmit { tuple, data: bytes });
            }
            // Binding indications (keepalives), responses and other indications: nothing.
            _ => {}
        }
        ClientAction::Done
    }

    /// Binding (RFC 8489 §3): the client's reflexive address, no authentication.
    fn binding(&mut self, tuple: FiveTuple, msg: &Message<'_>) {
        let reply = reply_opts(msg, None);
        let txid = msg.transaction_id();
        let bytes = match unknown_required(msg) {
            Some(unknown) => error_bytes(BINDING, txid, 420, &reply, |w| put(w, &unknown)),
            None => success_bytes(BINDING, txid, &reply, |w| {
                put(w, &XorMappedAddress::new(tuple.client, txid));
            }),
        };
        self.transmits.push_back(Transmit { tuple, data: bytes });
    }

    /// Answers a retransmission from the allocation's (or tombstone's) cache.
    fn replay(&mut self, tuple: FiveTuple, txid: TransactionId) -> bool {
        let cached = match self.by_tuple.get(&tuple) {
            Some(&id) => self
                .get(id)
                .and_then(|a| a.responses.get(txid))
                .map(<[u8]>::to_vec),
            None => self
                .tombstones
                .get(&tuple)
                .filter(|(t, _, _)| *t == txid)
                .map(|(_, b, _)| b.to_vec()),
        };
        match cached {
            Some(data) => {
                self.transmits.push_back(Transmit { tuple, data });
                true
            }
            None => false,
        }
    }

    /// Long-term credential check (RFC 8489 §9.2.4). On failure the answer is queued.
    fn authenticate(&mut self, now: Time, tuple: FiveTuple, msg: &Message<'_>) -> Option<Authed> {
        let method = msg.method();
        let txid = msg.transaction_id();
        let fingerprint = msg.has_attribute(Fingerprint::TYPE);
        if !has_integrity(msg) {
            self.challenge(now, tuple, method, txid, 401, fingerprint);
            return None;
        }
        let (Ok(username), Ok(realm), Ok(nonce)) = (
            msg.attribute::<Username>(),
            msg.attribute::<Realm>(),
            msg.attribute::<Nonce>(),
        ) else {
            self.events
                .push_back(Event::AuthFailed(AuthFailure::MissingAttributes));
            let reply = reply_opts(msg, None);
            let bytes = error_bytes(method, txid, 400, &reply, |_| {});
            self.transmits.push_back(Transmit { tuple, data: bytes });
            return None;
        };
        if !self.nonces.is_valid(nonce.nonce(), now, &tuple) {
            self.events
                .push_back(Event::AuthFailed(AuthFailure::StaleNonce));
            self.challenge(now, tuple, method, txid, 438, fingerprint);
            return None;
        }
        let verified = if realm.realm() != self.config.realm {
            Err(AuthFailure::WrongRealm)
        } else {
            match credentials::verify(
                username.username(),
                self.config.rest_api_separator,
                now.unix_secs(),
            ) {
                Ok(v) => Ok(username.username().len() - v.user.len()),
                Err(credentials::CredentialError::Expired) => Err(AuthFailure::Expired),
                Err(_) => Err(AuthFailure::MalformedUsername),
            }
        };
        let user_at = match verified {
            Ok(at) => at,
            Err(failure) => {
                self.events.push_back(Event::AuthFailed(failure));
                self.challenge(now, tuple, method, txid, 401, fingerprint);
                return None;
            }
        };
        let cached = self
            .by_tuple
            .get(&tuple)
            .and_then(|&id| self.get(id))
            .filter(|a| &*a.username == username.username())
            .map(|a| a.key.clone());
        let key = cached.unwrap_or_else(|| {
            let password = credentials::password_for(&self.config.secret, username.username());
            credentials::long_term_key(username.username(), &self.config.realm, &password)
        });
        if msg.validate_integrity_with_key(&key).is_err() {
            self.events
                .push_back(Event::AuthFailed(AuthFailure::BadIntegrity));
            self.challenge(now, tuple, method, txid, 401, fingerprint);
            return None;
        }
        Some(Authed {
            key,
            username: username.username().to_owned(),
            user_at,
        })
    }

    /// 401 or 438 with REALM and a fresh NONCE. Kept small (no reason phrase): it is what an
    /// unauthenticated source can make the relay send, so it must not amplify.
    fn challenge(
        &mut self,
        now: Time,
        tuple: FiveTuple,
        method: Method,
        txid: TransactionId,
        code: u16,
        fingerprint: bool,
    ) {
        // A spoofable source gets only so many: see [`limit`](super::limit). Loopback cannot be
        // spoofed from outside the box (the kernel drops such packets as martians).
        let source = tuple.client.ip().to_canonical();
        if tuple.transport == Transport::Udp
            && !source.is_loopback()
            && !self.challenges.allow(source, now)
        {
            self.events.push_back(Event::ChallengeDropped);
            return;
        }
        let nonce = self.nonces.issue(now, &tuple);
        let reply = Reply {
            key: None,
            fingerprint,
        };
        let realm = Realm::new(&self.config.realm);
        let nonce = Nonce::new(&nonce);
        let bytes = error_bytes(method, txid, code, &reply, |w| {
            if let Ok(realm) = &realm {
                put(w, realm);
            }
            if let Ok(nonce) = &nonce {
                put(w, nonce);
            }
        });
        self.transmits.push_back(Transmit { tuple, data: bytes });
    }

    /// Allocate (RFC 8656 §7.2).
    fn allocate(&mut self, now: Time, tuple: FiveTuple, msg: &Message<'_>) {
        let txid = msg.transaction_id();
        if let Some(&id) = self.by_tuple.get(&tuple) {
            // A retransmission of the request that created it: the same answer, or none yet
            // while its socket is opening.
            if self.get(id).is_some_and(|a| a.created_by == txid) {
                self.replay(tuple, txid);
                return;
            }
        }
        if !has_integrity(msg) && !msg.has_attribute(RequestedTransport::TYPE) {
            // Malformed whoever sends it: a 28-byte 400 rather than a 64-byte challenge to a
            // possibly spoofed 20-byte request.
            let bytes = error_bytes(ALLOCATE, txid, 400, &reply_opts(msg, None), |_| {});
            self.transmits.push_back(Transmit { tuple, data: bytes });
            return;
        }
        let Some(auth) = self.authenticate(now, tuple, msg) else {
            return;
        };
        let reply = reply_opts(msg, Some(&auth.key));
        let fail = |code: u16| error_bytes(ALLOCATE, txid, code, &reply, |_| {});
        let refuse = |server: &mut Server, bytes: Vec<u8>| {
            server.transmits.push_back(Transmit { tuple, data: bytes });
        };
        if self.by_tuple.contains_key(&tuple) {
            return refuse(self, fail(437));
        }
        if let Some(unknown) = unknown_required(msg) {
            let bytes = error_bytes(ALLOCATE, txid, 420, &reply, |w| put(w, &unknown));
            return refuse(self, bytes);
        }
        match msg.attribute::<RequestedTransport>() {
            Ok(t) if t.protocol() == RequestedTransport::UDP => {}
            Ok(_) => return refuse(self, fail(442)),
            Err(_) => return refuse(self, fail(400)),
        }
        let _ = msg.has_attribute(DontFragment::TYPE); // Accepted: the kernel's PMTU default.
        let token = msg.has_attribute(ReservationToken::TYPE);
        let even = msg.has_attribute(EvenPort::TYPE);
        // Present but unparseable (an unknown family): 440 for REQUESTED-ADDRESS-FAMILY, 400 for
        // ADDITIONAL-ADDRESS-FAMILY, which may only ask for IPv6 (RFC 8656 §7.2, §18.11-12).
        let requested = match msg.attribute::<RequestedAddressFamily>() {
            Ok(r) => Some(r),
            Err(StunParseError::MissingAttribute(_)) => None,
            Err(_) => return refuse(self, fail(440)),
        };
        let additional = match msg.attribute::<AdditionalAddressFamily>() {
            Ok(a) if a.family() == AddressFamily::IPV6 => Some(a),
            Err(StunParseError::MissingAttribute(_)) => None,
            _ => return refuse(self, fail(400)),
        };
        if token && (even || requested.is_some() || additional.is_some()) {
            return refuse(self, fail(400));
        }
        if requested.is_some() && additional.is_some() {
            return refuse(self, fail(400));
        }
        // EVEN-PORT without its R bit only asks for an even port, which is easy to give. With
        // R, or a RESERVATION-TOKEN, it asks for a reserved pair: not offered here, and RFC 8656
        // §7.2 says 508 for a reservation the server cannot make.
        let even_port = match msg.attribute::<EvenPort>() {
            Ok(e) if e.requested() => return refuse(self, fail(508)),
            Ok(_) => true,
            Err(_) if even => return refuse(self, fail(400)),
            Err(_) => false,
        };
        if token {
            return refuse(self, fail(508));
        }
        // RFC 8656 §7.2: IPv4 unless REQUESTED-ADDRESS-FAMILY says IPv6, 440 when this relay
        // has no address of that family; ADDITIONAL-ADDRESS-FAMILY (IPv6) adds an IPv6 address
        // when there is one, and an ADDRESS-ERROR-CODE 440 in the success answer when not.
        let primary = match requested.map(|r| r.family()) {
            Some(AddressFamily::IPV6) => Family::V6,
            _ => Family::V4,
        };
        if self.config.relay_ip(primary).is_none() {
            return refuse(self, fail(440));
        }
        let dual = additional.is_some() && self.config.relay_ip(Family::V6).is_some();
        let v6_error = (additional.is_some() && !dual).then_some(440);
        let held = self.per_user.get(auth.user()).copied().unwrap_or(0);
        if held >= self.config.user_quota {
            self.events.push_back(Event::QuotaReached { total: false });
            return refuse(self, fail(486));
        }
        if self.count >= self.config.total_quota as usize {
            self.events.push_back(Event::QuotaReached { total: true });
            return refuse(self, fail(486));
        }
        let lifetime = allocate_lifetime(&self.config, msg);
        let user: Box<str> = auth.user().into();
        *self.per_user.entry(user).or_insert(0) += 1;
        let fingerprint = reply.fingerprint;
        let id = self.insert(|_| Allocation {
            tuple,
            username: auth.username.into(),
            user_at: auth.user_at,
            key: auth.key.clone(),
            created_by: txid,
            phase: Phase::Opening {
                lifetime,
                fingerprint,
                waiting: [primary == Family::V4 || dual, primary == Family::V6 || dual],
                v6_error,
            },
            primary,
            relayed: [None; 2],
            advertised: [None; 2],
            created: now,
            expires: now + lifetime,
            permissions: Default::default(),
            channels: Default::default(),
            usage: Usage::default(),
            responses: Default::default(),
        });
        self.tombstones.remove(&tuple);
        self.by_tuple.insert(tuple, id);
        for family in [Family::V4, Family::V6] {
            if family == primary || dual {
                self.commands.push_back(Command::OpenRelay {
                    id,
                    family,
                    even_port,
                });
            }
        }
    }

    /// Refresh, CreatePermission and ChannelBind: requests on an existing allocation.
    fn on_allocation(&mut self, now: Time, tuple: FiveTuple, msg: &Message<'_>, method: Method) {
        let txid = msg.transaction_id();
        if self.replay(tuple, txid) {
            return;
        }
        if !self.by_tuple.contains_key(&tuple) && !has_integrity(msg) {
            // Could only ever end in 437, and a challenge would answer a spoofed 20-byte
            // request with 64 bytes: not worth a reflection. Dropped.
            return;
        }
        let Some(auth) = self.authenticate(now, tuple, msg) else {
            return;
        };
        let reply = reply_opts(msg, Some(&auth.key));
        let id = self
            .by_tuple
            .get(&tuple)
            .copied()
            .filter(|&id| self.get(id).is_some_and(Allocation::is_active));
        let unknown = unknown_required(msg);
        let outcome = match id {
            None => Err(437),
            Some(id) if self.get(id).is_some_and(|a| *a.username != *auth.username) => {
                self.events
                    .push_back(Event::AuthFailed(AuthFailure::WrongCredentials));
                Err(441)
            }
            Some(_) if unknown.is_some() => Err(420),
            Some(id) => match method {
                REFRESH => self.refresh(now, id, msg),
                CREATE_PERMISSION => self.create_permission(now, id, msg),
                _ => self.channel_bind(now, id, msg),
            },
        };
        let bytes = match outcome {
            Ok(lifetime) => success_bytes(method, txid, &reply, |w| {
                if let Some(secs) = lifetime {
                    put(w, &Lifetime::new(secs));
                }
            }),
            Err(420) => error_bytes(method, txid, 420, &reply, |w| {
                if let Some(u) = &unknown {
                    put(w, u);
                }
            }),
            Err(code) => error_bytes(method, txid, code, &reply, |_| {}),
        };
        let tombstone_room = self.tombstones.len() < MAX_TOMBSTONES;
        match id.and_then(|id| self.get_mut(id)) {
            Some(alloc) => alloc.responses.put(txid, &bytes),
            None if method == REFRESH && outcome == Ok(Some(0)) && tombstone_room => {
                self.tombstones
                    .insert(tuple, (txid, bytes.clone().into(), now + TOMBSTONE_TTL));
                self.arm_sweep(now);
            }
            None => {}
        }
        self.transmits.push_back(Transmit { tuple, data: bytes });
    }

    /// Refresh (RFC 8656 §7.3). `Ok(Some(lifetime))` to answer.
    fn refresh(&mut self, now: Time, id: AllocId, msg: &Message<'_>) -> Result<Option<u32>, u16> {
        if let Ok(r) = msg.attribute::<RequestedAddressFamily>() {
            // RFC 8656 §7.3: a family the allocation does not have is a mismatch.
            let family = if r.family() == AddressFamily::IPV6 {
                Family::V6
            } else {
                Family::V4
            };
            if self
                .get(id)
                .is_none_or(|a| a.relayed[family.index()].is_none())
            {
                return Err(443);
            }
        }
        let requested = msg.attribute::<Lifetime>().ok().map(|l| l.seconds());
        if requested == Some(0) {
            self.close(now, id, CloseReason::Deleted);
            return Ok(Some(0));
        }
        let lifetime = granted_lifetime(&self.config, requested);
        let expires = now + lifetime;
        if let Some(a) = self.get_mut(id) {
            let old = std::mem::replace(&mut a.expires, expires);
            self.expiries.remove(&(old, id));
            self.expiries.insert((expires, id));
        }
        Ok(Some(lifetime.as_secs() as u32))
    }

    /// CreatePermission (RFC 8656 §9.2): all the peers, or none.
    fn create_permission(
        &mut self,
        now: Time,
        id: AllocId,
        msg: &Message<'_>,
    ) -> Result<Option<u32>, u16> {
        let txid = msg.transaction_id();
        let max = self.config.max_permissions;
        let mut ips = Vec::new();
        for (_, raw) in msg.iter_attributes() {
            if raw.get_type() == XorPeerAddress::TYPE {
                if ips.len() == max {
                    // More peers than an allocation may hold: refused before any more work.
                    return Err(508);
                }
                let peer = XorPeerAddress::try_from(&raw).map_err(|_| 400u16)?;
                ips.push(canonical(peer.addr(txid)).ip());
            }
        }
        if ips.is_empty() {
            return Err(400);
        }
        ips.sort_unstable();
        ips.dedup();
        for &ip in &ips {
            self.check_peer_ip(id, ip)?;
        }
        let expires = now + self.config.permission_lifetime;
        let alloc = self.get_mut(id).ok_or(437u16)?;
        if !alloc.permissions.fits(&ips, now, max) {
            return Err(508);
        }
        for ip in ips {
            alloc.permissions.install(ip, expires);
        }
        Ok(None)
    }

    /// ChannelBind (RFC 8656 §11.2).
    fn channel_bind(
        &mut self,
        now: Time,
        id: AllocId,
        msg: &Message<'_>,
    ) -> Result<Option<u32>, u16> {
        let txid = msg.transaction_id();
        let number = msg
            .attribute::<ChannelNumber>()
            .map_err(|_| 400u16)?
            .channel();
        let peer = msg.attribute::<XorPeerAddress>().map_err(|_| 400u16)?;
        let peer = canonical(peer.addr(txid));
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&number) {
            return Err(400);
        }
        self.check_peer_ip(id, peer.ip())?;
        if !self.own_port_allowed(peer) {
            self.events
                .push_back(Event::PeerRefused(Refusal::Reserved("own-address")));
            return Err(403);
        }
        let (max, perm_expires) = (
            self.config.max_channels,
            now + self.config.permission_lifetime,
        );
        let expires = now + self.config.channel_lifetime;
        let alloc = self.get_mut(id).ok_or(437u16)?;
        match alloc.channels.bind(number, peer, now, expires, max) {
            Ok(()) => {}
            Err(BindError::Conflict) => return Err(400),
            Err(BindError::Full) => return Err(508),
        }
        alloc.permissions.install(peer.ip(), perm_expires);
        Ok(None)
    }

    /// Send indication (RFC 8656 §10.2): no answer, ever; bad ones are dropped.
    fn send<'a>(
        &mut self,
        now: Time,
        tuple: &FiveTuple,
        msg: &Message<'_>,
        data: &'a [u8],
    ) -> ClientAction<'a> {
        let Some(&id) = self.by_tuple.get(tuple) else {
            return ClientAction::Done;
        };
        // RFC 8489 §6.3.2: an indication with unknown comprehension-required attributes is
        // discarded.
        if unknown_required(msg).is_some() {
            return ClientAction::Done;
        }
        let Ok(peer) = msg.attribute::<XorPeerAddress>() else {
            return ClientAction::Done;
        };
        let peer = canonical(peer.addr(msg.transaction_id()));
        let Some((offset, raw)) = msg.raw_attribute_and_offset(Data::TYPE) else {
            return ClientAction::Done;
        };
        let start = offset + 4;
        let Some(payload) = data.get(start..start + usize::from(raw.length())) else {
            return ClientAction::Done;
        };
        let permitted = self.get(id).is_some_and(|a| {
            a.is_active()
                && a.relayed[Family::of(peer.ip()).index()].is_some()
                && a.permissions.allows(peer.ip(), now)
        });
        if !permitted {
            return ClientAction::Done;
        }
        if !self.own_port_allowed(peer) {
            self.events
                .push_back(Event::PeerRefused(Refusal::Reserved("own-address")));
            return ClientAction::Done;
        }
        self.forward(id, peer, payload)
    }

    /// The policy for a permission's IP: deny wins, then the relay's own addresses are fine,
    /// then allow and the default. 403 when refused.
    fn check_peer_ip(&mut self, id: AllocId, ip: IpAddr) -> Result<(), u16> {
        let verdict = if self.config.policy.is_denied(ip) {
            Err(Refusal::Denied)
        } else if self.is_own_ip(ip) {
            Ok(())
        } else {
            self.config.policy.check(ip)
        };
        verdict.map_err(|r| {
            self.events.push_back(Event::PeerRefused(r));
            403u16
        })?;
        // RFC 8656 §9.2, §11.2: a peer of a family the allocation has no relayed address of.
        if self
            .get(id)
            .is_none_or(|a| a.relayed[Family::of(ip).index()].is_none())
        {
            return Err(443);
        }
        Ok(())
    }

    /// The box's own addresses are peers only on relay ports (delivered in-process), unless
    /// `allow_peers` names them: its HTTP port, SSH and the like are never reachable by default,
    /// whatever the address (public or private) they are asked through.
    ///
    /// The box's other addresses (`ServerConfig::host_ips`: its listeners, its interfaces) are
    /// never peers, on any port, unless `allow_peers` names them.
    fn own_port_allowed(&self, peer: SocketAddr) -> bool {
        let ip = policy::normalize(peer.ip());
        let relayable = self.is_own_ip(ip) && self.config.relay_ports.contains(&peer.port());
        let ours = self.is_own_ip(ip) || self.config.host_ips.contains(&ip);
        !ours || relayable || self.config.policy.is_explicitly_allowed(ip)
    }

    fn is_own_ip(&self, ip: IpAddr) -> bool {
        let ip = policy::normalize(ip);
        self.config.relay_ips.contains(&ip) || self.config.external_ips.contains(&ip)
    }

    // ---- bookkeeping -------------------------------------------------------------------

    fn get(&self, id: AllocId) -> Option<&Allocation> {
        let slot = self.slots.get(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.allocation.as_ref()
    }

    fn get_mut(&mut self, id: AllocId) -> Option<&mut Allocation> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.allocation.as_mut()
    }

    fn insert(&mut self, make: impl FnOnce(AllocId) -> Allocation) -> AllocId {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    allocation: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        let id = AllocId {
            index,
            generation: slot.generation,
        };
        slot.allocation = Some(make(id));
        self.count += 1;
        id
    }

    /// Removes an allocation and everything that points at it; no event.
    fn remove(&mut self, id: AllocId) -> Option<Allocation> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let alloc = slot.allocation.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        self.count -= 1;
        self.by_tuple.remove(&alloc.tuple);
        self.expiries.remove(&(alloc.expires, id));
        for r in alloc.relayed.iter().flatten() {
            self.by_relay.remove(r);
        }
        let user = alloc.user();
        if let Some(n) = self.per_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(user);
            }
        }
        Some(alloc)
    }

    fn close(&mut self, now: Time, id: AllocId, reason: CloseReason) {
        let Some(alloc) = self.remove(id) else {
            return;
        };
        if alloc.relayed.iter().any(Option::is_some) {
            self.commands.push_back(Command::CloseRelay { id });
        }
        self.events.push_back(Event::AllocationClosed {
            id,
            tuple: alloc.tuple,
            user: alloc.user().into(),
            reason,
            usage: alloc.usage,
            lifetime: now.saturating_since(alloc.created),
        });
    }

    fn arm_sweep(&mut self, now: Time) {
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + SWEEP_INTERVAL);
        }
    }

    /// A transaction id for a Data indication: splitmix64, seeded by the driver.
    fn next_txid(&mut self) -> [u8; 12] {
        let mut next = || {
            self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let (a, b) = (next(), next());
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&a.to_be_bytes());
        out[8..].copy_from_slice(&b.to_be_bytes()[..4]);
        out
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("allocations", &self.count)
            .finish_non_exhaustive()
    }
}

/// The allocation lifetime (RFC 8656 §7.2): the client's wish, at least the default, at most
/// the maximum.
fn allocate_lifetime(config: &ServerConfig, msg: &Message<'_>) -> Duration {
    granted_lifetime(
        config,
        msg.attribute::<Lifetime>().ok().map(|l| l.seconds()),
    )
}

/// RFC 8656 §7.2 and §7.3 (RFC 5766 §7.2): the requested lifetime (the default when none),
/// at most the maximum, and never less than the default.
fn granted_lifetime(config: &ServerConfig, requested_secs: Option<u32>) -> Duration {
    let requested = requested_secs.map_or(config.default_lifetime, |s| {
        Duration::from_secs(u64::from(s))
    });
    requested
        .min(config.max_lifetime)
        .max(config.default_lifetime.min(config.max_lifetime))
}

/// The STUN length field.
fn msg_len(data: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([data[2], data[3]]))
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is; anything else unchanged.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// The comprehension-required attributes of `msg` this server does not understand.
///
/// At most [`MAX_UNKNOWN`] are listed: enough for any real client, and a request stuffed with
/// thousands of distinct types costs one linear pass, not a quadratic one.
fn unknown_required(msg: &Message<'_>) -> Option<UnknownAttributes> {
    let mut unknown: Vec<AttributeType> = Vec::new();
    for (_, raw) in msg.iter_attributes() {
        let t = raw.get_type();
        if t.comprehension_required() && !KNOWN.contains(&t.value()) && !unknown.contains(&t) {
            unknown.push(t);
            if unknown.len() == MAX_UNKNOWN {
                break;
            }
        }
    }
    (!unknown.is_empty()).then(|| UnknownAttributes::new(&unknown))
}

fn has_integrity(msg: &Message<'_>) -> bool {
    msg.has_attribute(MessageIntegrity::TYPE) || msg.has_attribute(MessageIntegritySha256::TYPE)
}

fn reply_opts<'k>(msg: &Message<'_>, key: Option<&'k IntegrityKey>) -> Reply<'k> {
    Reply {
        key,
        fingerprint: msg.has_attribute(Fingerprint::TYPE),
    }
}

fn put(w: &mut MessageWriteVec, attr: &dyn stun_types::attribute::AttributeWrite) {
    // Only fails on a message already sealed by MESSAGE-INTEGRITY, which callers never pass.
    let res = w.add_attribute(attr);
    debug_assert!(res.is_ok(), "{res:?}");
}

fn seal(mut w: MessageWriteVec, reply: &Reply<'_>) -> Vec<u8> {
    if let Some(key) = reply.key {
        let res = w.add_message_integrity_with_key(key, IntegrityAlgorithm::Sha1);
        debug_assert!(res.is_ok(), "{res:?}");
    }
    if reply.fingerprint {
        let res = w.add_fingerprint();
        debug_assert!(res.is_ok(), "{res:?}");
    }
    w.finish()
}

fn success_bytes(
    method: Method,
    txid: TransactionId,
    reply: &Reply<'_>,
    attrs: impl FnOnce(&mut MessageWriteVec),
) -> Vec<u8> {
    let mtype = MessageType::from_class_method(MessageClass::Success, method);
    let mut w = Message::builder(mtype, txid, MessageWriteVec::with_capacity(96));
    attrs(&mut w);
    seal(w, reply)
}

/// An error response. 401 and 438 carry no reason phrase (they answer unauthenticated
/// requests, and must stay small); others carry the RFC's standard phrase, never a detail.
fn error_bytes(
    method: Method,
    txid: TransactionId,
    code: u16,
    reply: &Reply<'_>,
    attrs: impl FnOnce(&mut MessageWriteVec),
) -> Vec<u8> {
    let mtype = MessageType::from_class_method(MessageClass::Error, method);
    let mut w = Message::builder(mtype, txid, MessageWriteVec::with_capacity(96));
    let builder = ErrorCode::builder(code);
    let builder = if matches!(code, 401 | 438) {
        builder.reason("")
    } else {
        builder
    };
    if let Ok(ec) = builder.build() {
        put(&mut w, &ec);
    }
    attrs(&mut w);
    seal(w, reply)
}

/// The STUN length of a Data indication carrying `len` payload bytes from `peer`:
/// XOR-PEER-ADDRESS and DATA, padded.
fn data_indication_body(len: usize, peer: SocketAddr) -> usize {
    let addr_len = if peer.is_ipv4() { 8 } else { 20 };
    4 + addr_len + 4 + ((len + 3) & !3)
}

/// Writes a Data indication header (and DATA padding) around `buf[payload]`, in place.
fn frame_data_indication(
    buf: &mut [u8],
    payload: Range<usize>,
    peer: SocketAddr,
    txid: [u8; 12],
) -> Range<usize> {
    const COOKIE: [u8; 4] = 0x2112_A442u32.to_be_bytes();
    let len = payload.len();
    let addr_len = if peer.is_ipv4() { 8 } else { 20 };
    let header_len = 20 + 4 + addr_len + 4;
    let start = payload.start - header_len;
    let body_len = data_indication_body(len, peer);
    debug_assert!(body_len <= 0xFFFF, "checked by handle_peer_data");
    let h = &mut buf[start..payload.start];
    let mtype = MessageType::from_class_method(MessageClass::Indication, DATA);
    mtype.write_into(&mut h[0..2]);
    h[2..4].copy_from_slice(&(body_len as u16).to_be_bytes());
    h[4..8].copy_from_slice(&COOKIE);
    h[8..20].copy_from_slice(&txid);
    // XOR-PEER-ADDRESS (RFC 8489 §14.2).
    h[20..22].copy_from_slice(&0x0012u16.to_be_bytes());
    h[22..24].copy_from_slice(&(addr_len as u16).to_be_bytes());
    h[24] = 0;
    let xport = peer.port() ^ 0x2112;
    h[26..28].copy_from_slice(&xport.to_be_bytes());
    match peer.ip() {
        IpAddr::V4(v4) => {
            h[25] = 0x01;
            for (i, b) in v4.octets().iter().enumerate() {
                h[28 + i] = b ^ COOKIE[i];
            }
        }
        IpAddr::V6(v6) => {
            h[25] = 0x02;
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&COOKIE);
            mask[4..].copy_from_slice(&txid);
            for (i, b) in v6.octets().iter().enumerate() {
                h[28 + i] = b ^ mask[i];
            }
        }
    }
    // DATA header; the payload is already in place.
    let d = 24 + addr_len;
    h[d..d + 2].copy_from_slice(&0x0013u16.to_be_bytes());
    h[d + 2..d + 4].copy_from_slice(&(len as u16).to_be_bytes());
    buf[payload.end..start + 20 + body_len].fill(0);
    start..start + 20 + body_len
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
