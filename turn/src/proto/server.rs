//! The server: its state, the `handle_*`/`poll_*` entry points and the dispatch of STUN
//! methods (RFC 8489 §6.3: request processing, 420 for unknown comprehension-required
//! attributes; §3: Binding), the requests on an existing allocation with their retransmission
//! cache, and the bookkeeping of allocations. Each mechanism lives beside it:
//!
//! - [`auth`]: long-term credentials, nonces and the 401/438 challenges (RFC 8489 §9.2);
//! - [`allocate`]: Allocate and Refresh (RFC 8656 §7);
//! - [`data`]: permissions, channels, Send/Data indications and ChannelData (RFC 8656 §9–12);
//! - [`reply`]: building the answers (RFC 8489 §6.3).
//!
//! Every refusal is a [`RequestError`], which alone knows its error code and the event it is
//! counted as; [`Server::refusal`] answers with it.

mod allocate;
mod auth;
mod data;
mod reply;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use stun_types::attribute::{Attribute as _, AttributeType, UnknownAttributes, XorMappedAddress};
use stun_types::message::{
    Message, MessageClass, MessageHeader, Method, StunParseError, TransactionId, BINDING,
};
use turn_types::attribute::{AddressErrorCode, Lifetime, XorRelayedAddress};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, SEND};
use turn_types::AddressFamily;

use self::auth::has_integrity;
use self::reply::{put, reply_opts, success_bytes, Reply};
use super::allocation::{AllocId, Allocation, Phase, Usage};
use super::bandwidth::{self, Bucket, Rates};
use super::credentials::{self, Revocations};
use super::limit::ChallengeLimiter;
use super::nonce::Nonces;
use super::users::Users;
use super::{
    AuthFailure, CloseReason, Command, Event, Family, FiveTuple, OpenError, RequestError,
    ServerConfig, Time, Transmit,
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
    /// `to` is a peer served inside this process (`ServerConfig::local_peers`, the SFU): hand
    /// it `payload` as sent from `from`, the allocation's relayed address. Its answers come
    /// back through [`Server::handle_local_data`].
    Local {
        from: SocketAddr,
        to: SocketAddr,
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

/// The TURN server core. See the [module docs](super) for how to drive it.
pub struct Server {
    config: ServerConfig,
    nonces: Nonces,
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_tuple: HashMap<FiveTuple, AllocId>,
    by_relay: HashMap<SocketAddr, AllocId>,
    users: Users,
    count: usize,
    /// The bandwidth caps, and the relay's own bucket.
    rates: Rates,
    total_bucket: Bucket,
    /// Every active allocation's deadline, one entry each (moved on refresh).
    expiries: BTreeSet<(Time, AllocId)>,
    tombstones: HashMap<FiveTuple, (TransactionId, Box<[u8]>, Time)>,
    next_sweep: Option<Time>,
    transmits: VecDeque<Transmit>,
    commands: VecDeque<Command>,
    events: VecDeque<Event>,
    /// Challenges per source over UDP.
    challenges: ChallengeLimiter,
    /// Users whose credentials are refused until they expire ([`Server::revoke_user`]).
    revoked: Revocations,
    /// The wall clock, in Unix seconds, as the driver last passed it in
    /// ([`Server::handle_wall_clock`]).
    wall_unix: Option<u64>,
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
        let rates = Rates::new(&config.bandwidth);
        Server {
            config,
            nonces,
            slots: Vec::new(),
            free: Vec::new(),
            by_tuple: HashMap::new(),
            by_relay: HashMap::new(),
            users: Users::default(),
            count: 0,
            rates,
            total_bucket: Bucket::default(),
            expiries: BTreeSet::new(),
            tombstones: HashMap::new(),
            next_sweep: None,
            transmits: VecDeque::new(),
            commands: VecDeque::new(),
            events: VecDeque::new(),
            challenges,
            revoked: Revocations::default(),
            wall_unix: None,
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

    /// The wall clock's reading, in Unix seconds: what a credential's expiry is checked
    /// against when it is presented for a new allocation. The driver passes it in whenever it
    /// reads its clocks; lifetimes and timers stay on the monotonic [`Time`]. Until it is
    /// first called, `Time` stands for the wall clock too (tests that start both at one zero).
    pub fn handle_wall_clock(&mut self, unix_secs: u64) {
        self.wall_unix = Some(unix_secs);
    }

    /// The wall clock at `now`, in Unix seconds.
    fn wall_secs(&self, now: Time) -> u64 {
        self.wall_unix.unwrap_or_else(|| now.unix_secs())
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
            let wall = self.wall_secs(now);
            self.revoked.prune(wall);
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

    /// Cuts `user` (the user name of the TURN REST scheme, see [`credentials`]) off: their
    /// credentials expiring at or before `until_unix` (wall-clock Unix seconds) are refused
    /// from now on (401, as an expired credential is), for new allocations and for requests on
    /// existing ones, until they expire; and the allocations made with them close now
    /// ([`CloseReason::Revoked`]). Returns how many closed. A credential expiring later was
    /// minted after the revocation, and is accepted (see [`Revocations`]).
    pub fn revoke_user(&mut self, now: Time, user: &str, until_unix: u64) -> usize {
        let wall = self.wall_secs(now);
        self.revoked.prune(wall);
        if until_unix >= wall {
            self.revoked.revoke(user, until_unix);
        }
        let separator = self.config.rest_api_separator;
        let revoked: Vec<AllocId> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| {
                let a = slot.allocation.as_ref()?;
                let expires = credentials::parse(a.username.as_str(), separator).ok()?;
                (a.user() == user && expires.expires_unix <= until_unix).then_some(AllocId {
                    index: index as u32,
                    generation: slot.generation,
                })
            })
            .collect();
        for &id in &revoked {
            self.close(now, id, CloseReason::Revoked);
        }
        revoked.len()
    }

    /// How many users are revoked now (see [`Server::revoke_user`]).
    pub fn revoked_users(&self) -> usize {
        self.revoked.len()
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
            Err(_) if family != alloc.primary => {
                *v6_error = Some(RequestError::InsufficientCapacity)
            }
            Err(_) => {}
        }
        if !done {
            return;
        }
        let v6_error = v6_error.take();
        let key = alloc.key.clone();
        let tuple = alloc.tuple;
        let txid = alloc.created_by;
        let reply = Reply {
            key: Some(&key),
            fingerprint,
        };
        let relayed = alloc.relayed;
        let Some(primary) = relayed[alloc.primary.index()] else {
            let bytes = self.refusal(ALLOCATE, txid, &RequestError::InsufficientCapacity, &reply);
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
            if let Some(code) = v6_error.as_ref().and_then(RequestError::error_code) {
                put(w, &AddressErrorCode::new(AddressFamily::IPV6, code));
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
                // Keep the transaction id of a malformed request so it still gets its 400
                // (within the source's budget: it proves nothing).
                if let Ok(h) = MessageHeader::from_bytes(data) {
                    if h.get_type().class() == MessageClass::Request
                        && self.unauthenticated_budget(now, &tuple)
                    {
                        let reply = Reply {
                            key: None,
                            fingerprint: false,
                        };
                        let (method, txid) = (h.get_type().method(), h.transaction_id());
                        self.refuse(tuple, method, txid, &RequestError::BadRequest, &reply);
                    }
                }
                return ClientAction::Done;
            }
        };
        match (msg.class(), msg.method()) {
            (MessageClass::Request, BINDING) => self.binding(now, tuple, &msg),
            (MessageClass::Request, ALLOCATE) => self.allocate(now, tuple, &msg),
            (MessageClass::Request, m @ (REFRESH | CREATE_PERMISSION | CHANNEL_BIND)) => {
                self.on_allocation(now, tuple, &msg, m)
            }
            (MessageClass::Indication, SEND) => return self.send(now, &tuple, &msg, data),
            (MessageClass::Request, m) if self.unauthenticated_budget(now, &tuple) => {
                let reply = reply_opts(&msg, None);
                let txid = msg.transaction_id();
                self.refuse(tuple, m, txid, &RequestError::BadRequest, &reply);
            }
            // Binding indications (keepalives), responses and other indications: nothing.
            _ => {}
        }
        ClientAction::Done
    }

    /// Binding (RFC 8489 §3): the client's reflexive address, no authentication, so within
    /// the source's budget of unauthenticated answers.
    fn binding(&mut self, now: Time, tuple: FiveTuple, msg: &Message<'_>) {
        if !self.unauthenticated_budget(now, &tuple) {
            return;
        }
        let reply = reply_opts(msg, None);
        let txid = msg.transaction_id();
        match unknown_required(msg) {
            Some(unknown) => {
                let error = RequestError::UnknownAttributes(unknown);
                self.refuse(tuple, BINDING, txid, &error, &reply);
            }
            None => {
                let bytes = success_bytes(BINDING, txid, &reply, |w| {
                    put(w, &XorMappedAddress::new(tuple.client, txid));
                });
                self.transmits.push_back(Transmit { tuple, data: bytes });
            }
        }
    }

    /// Whether a request on an allocation from `tuple` with `txid` would be answered from the
    /// response cache ([`Server::replay`]: a retransmission, whatever it now says) instead of
    /// being carried out. For models that check the server (the `relay_core` fuzz target).
    #[doc(hidden)]
    pub fn is_retransmission(&self, tuple: &FiveTuple, txid: TransactionId) -> bool {
        self.cached_response(tuple, txid).is_some()
    }

    /// The answer the allocation of `tuple` (or its tombstone) last gave to `txid`.
    fn cached_response(&self, tuple: &FiveTuple, txid: TransactionId) -> Option<&[u8]> {
        match self.by_tuple.get(tuple) {
            Some(&id) => self.get(id).and_then(|a| a.responses.get(txid)),
            None => self
                .tombstones
                .get(tuple)
                .filter(|(t, _, _)| *t == txid)
                .map(|(_, b, _)| &b[..]),
        }
    }

    /// Answers a retransmission from the allocation's (or tombstone's) cache.
    fn replay(&mut self, tuple: FiveTuple, txid: TransactionId) -> bool {
        match self.cached_response(&tuple, txid).map(<[u8]>::to_vec) {
            Some(data) => {
                self.transmits.push_back(Transmit { tuple, data });
                true
            }
            None => false,
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
        let auth = match self.authenticate(now, tuple, msg) {
            Ok(auth) => auth,
            Err(e) => return self.refuse_unauthenticated(now, tuple, msg, &e),
        };
        let reply = reply_opts(msg, Some(&auth.key));
        let id = self
            .by_tuple
            .get(&tuple)
            .copied()
            .filter(|&id| self.get(id).is_some_and(Allocation::is_active));
        let other_user = id
            .and_then(|id| self.get(id))
            .is_some_and(|a| a.username.as_str() != auth.username.as_str());
        let outcome = match (id, unknown_required(msg)) {
            (None, _) => Err(RequestError::AllocationMismatch),
            (Some(_), _) if other_user => {
                Err(RequestError::AuthFailed(AuthFailure::WrongCredentials))
            }
            (Some(_), Some(unknown)) => Err(RequestError::UnknownAttributes(unknown)),
            (Some(id), None) => match method {
                REFRESH => self.refresh(now, id, msg, auth.expired),
                CREATE_PERMISSION => self.create_permission(now, id, msg),
                _ => self.channel_bind(now, id, msg),
            },
        };
        let bytes = match &outcome {
            Ok(lifetime) => success_bytes(method, txid, &reply, |w| {
                if let Some(secs) = lifetime {
                    put(w, &Lifetime::new(*secs));
                }
            }),
            Err(e) => self.refusal(method, txid, e, &reply),
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
        self.users.remove(alloc.user(), alloc.user_slot);
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

    /// Whether `len` payload bytes of allocation `id` fit its bandwidth caps (the
    /// allocation's, its user's, the relay's) at `now`; if not they are counted as dropped.
    fn within_bandwidth(&mut self, now: Time, id: AllocId, len: usize) -> bool {
        if self.rates.unlimited() {
            return true;
        }
        let Some(slot) = self.slots.get_mut(id.index as usize) else {
            return false;
        };
        let Some(alloc) = slot.allocation.as_mut() else {
            return false;
        };
        let Some(user) = self.users.get_mut(alloc.user_slot) else {
            return false;
        };
        let rates = &self.rates;
        let fits = bandwidth::admit(
            now,
            len,
            [
                (rates.allocation.as_ref(), &mut alloc.bucket),
                (rates.user.as_ref(), &mut user.bucket),
                (rates.total.as_ref(), &mut self.total_bucket),
            ],
        );
        if !fits {
            alloc.usage.packets_dropped += 1;
            alloc.usage.bytes_dropped += len as u64;
        }
        fits
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

/// The STUN length field.
fn msg_len(data: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([data[2], data[3]]))
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
