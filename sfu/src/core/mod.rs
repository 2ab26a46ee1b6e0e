//! The SFU's sans-IO core: every participant's peer connection (a str0m [`Rtc`] in RTP mode,
//! ICE-lite), the demultiplexing of the one media port between them, and the forwarding of
//! each published track to the other participants of its room.
//!
//! # Driving it
//! As str0m (and the relay's core): inputs are `handle_*` and the signaling calls
//! ([`Sfu::offer`], [`Sfu::answer`], [`Sfu::leave`], [`Sfu::set_quality`]), all given `now`;
//! after any of them, take [`Sfu::poll_transmit`] until `None` (datagrams to send),
//! [`Sfu::poll_event`] until `None` (what signaling must tell the participants), and call
//! [`Sfu::handle_timeout`] at [`Sfu::poll_timeout`]. Nothing here reads the clock, blocks or
//! does I/O, and nothing a peer sends can panic it: bad input is dropped and counted.
//!
//! A datagram's forwarded packets are written to its subscribers' connections at once, but
//! those are polled (encrypted, paced, put out) only when the output is asked for: a driver that
//! hands over a batch of datagrams before it takes the output polls each subscriber once for the
//! batch, not once per datagram. str0m's poll walks every stream of a connection, and a
//! subscriber in a room of twenty has 38.
//!
//! # Demultiplexing
//! A datagram's 5-tuple finds its peer in a map. From a tuple not seen yet only a STUN binding
//! request is taken: its USERNAME starts with our ICE ufrag, minted for that participant when
//! it joined, which finds the peer in a second map (no scan over peers, unlike str0m's own
//! chat example). str0m then checks the request's integrity with that participant's password;
//! anything else is dropped and counted.
//!
//! # Forwarding
//! Packets are forwarded as RTP (no decoding, no depacketizing): each subscriber's m-line for
//! a track gets the publisher's payload as it came, with the subscriber's payload type, its
//! own sequence numbers and timestamps ([`rewrite`]) and the header extensions str0m knows.
//! A simulcast track sends each subscriber one layer, which it may change ([`Sfu::set_quality`]):
//! the switch waits for a key frame of the new layer, asked of the publisher at once. The layer
//! is the one asked for at most, and less if the subscriber's downlink cannot carry it: str0m
//! estimates each subscriber's bandwidth from its TWCC feedback ([`bwe`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egress::Egress;
use str0m::bwe::{Bitrate, BweKind};
use str0m::crypto::CryptoProvider;
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output};
use uuid::Uuid;

mod bwe;
mod egress;
mod forward;
mod ingress;
pub mod keyframe;
mod negotiate;
mod peer;
pub mod quality;
pub mod rewrite;
mod speaker;
mod stun;

pub use peer::Quality;
use peer::{Line, Peer, PeerId};
use speaker::Speakers;

/// A peer's 5-tuples kept for demultiplexing, at most (ICE tries a few candidate pairs).
const MAX_TUPLES: usize = 8;
/// Tracks one participant may publish by default, at most: camera, microphone, screen and its
/// audio.
pub const MAX_PUBLISHED: usize = 4;
/// Where a subscriber's downlink estimate starts by default: 1.5 Mbit/s, the lowest layers of a
/// room of ten, and str0m's probing takes it up from there in a few seconds.
pub const START_ESTIMATE: u64 = 1_500_000;
/// A peer's deadline this close is handled at once ([`Sfu::poll_peer`]): str0m's pacer asks for
/// "at once" as a microsecond on; its real waits (a packet's share of the pacing rate) are
/// longer, and are left to the driver's timer.
const DUE_WITHIN: Duration = Duration::from_micros(50);
/// Due deadlines of one peer handled in one poll, at most ([`Sfu::poll_peer`]).
const MAX_ROUNDS: usize = 256;
/// Spare datagram buffers kept at most ([`Sfu::recycle`]), and the least capacity worth keeping
/// (a full-size media packet fits).
const MAX_SPARE: usize = 1024;
const SPARE_CAPACITY: usize = 1280;
/// How often disconnected peers are looked at.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What the SFU is started with.
#[derive(Clone, Debug)]
pub struct SfuConfig {
    /// The addresses participants send media to, offered as host candidates (the public one
    /// first).
    pub candidates: Vec<SocketAddr>,
    /// A participant whose connection stays down this long is removed ([`SfuEvent::Gone`]).
    pub grace: Duration,
    pub caps: Caps,
    /// Where each subscriber's downlink estimate starts, in bits/s, until its transport-wide
    /// congestion control feedback says more ([`START_ESTIMATE`]).
    pub start_estimate: u64,
    /// Forwarded media leaves through the SFU's own egress ([`egress`]), with its own
    /// bandwidth estimate, rather than through each subscriber's str0m connection (the
    /// daemon's choice: `bench/sfu.sh` measures both).
    pub direct_egress: bool,
    /// Publishers' RTP packets are read by the SFU's own ingress ([`ingress`]) rather than by
    /// their str0m connections, once str0m knows each stream. Experimental (it sends no NACKs
    /// for the publisher's losses yet); needs `direct_egress`.
    pub direct_ingress: bool,
}

/// What one participant may publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Audio and video m-lines it sends, at most: an offer with more is refused.
    pub max_tracks: usize,
    /// Bits per second of video it sends, at most: told to its browser (RTCP REMB, which
    /// browsers take as the ceiling of their sending rate) when it publishes and every second
    /// after. `None`: no cap.
    pub max_bitrate: Option<u64>,
}

impl Default for Caps {
    fn default() -> Caps {
        Caps {
            max_tracks: MAX_PUBLISHED,
            max_bitrate: None,
        }
    }
}

/// Something signaling must tell a participant, or act on.
#[derive(Clone, Debug, PartialEq)]
pub enum SfuEvent {
    /// The SFU's answer to the participant's offer.
    Answer { room: Uuid, user: Uuid, sdp: String },
    /// An offer of the SFU's (tracks of others added or removed), to be answered with
    /// [`Sfu::answer`]; `tracks` says whose each m-line carries.
    Offer {
        room: Uuid,
        user: Uuid,
        sdp: String,
        tracks: Vec<TrackInfo>,
    },
    /// The participant's media connection is up.
    Connected { room: Uuid, user: Uuid },
    /// The participant's connection failed or stayed down past the grace: it is no longer in
    /// the room.
    Gone { room: Uuid, user: Uuid },
    /// `user` is the room's active speaker now (told from its audio level, RFC 6464); `to`:
    /// everyone in the room.
    ActiveSpeaker {
        room: Uuid,
        user: Uuid,
        to: Vec<Uuid>,
    },
    /// The participant's connection as the SFU sees it, every [`quality::STATS_EVERY`].
    Quality {
        room: Uuid,
        user: Uuid,
        figures: quality::Figures,
    },
}

/// An m-line of a subscriber's: the track of `user` it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackInfo {
    pub mid: String,
    pub user: Uuid,
    pub kind: &'static str,
}

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// What the SFU's signaling calls return.
pub type Result<T, E = SfuError> = std::result::Result<T, E>;

/// Why a signaling call was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SfuError {
    #[error("not SDP: {0}")]
    BadSdp(String),
    #[error("the offer cannot be accepted: {0}")]
    Refused(String),
    #[error("the offer sends {0} tracks: at most {1} (sfu.max_tracks)")]
    TooManyTracks(usize, usize),
    #[error("not in this room")]
    NotJoined,
    #[error("no offer of ours awaits an answer")]
    NoOffer,
    #[error("the SFU is not running")]
    Unavailable,
}

/// Counters, read by the driver for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams from a tuple no peer has used that were not a binding request of a peer's.
    pub unknown: u64,
    /// Datagrams a peer's connection refused (bad integrity, bad DTLS, bad SRTP...).
    pub refused: u64,
    /// RTP packets received from publishers.
    pub received: u64,
    /// RTP packets written to subscribers.
    pub forwarded: u64,
    /// Packets the direct egress sent again: asked for by subscribers (NACK), and as
    /// bandwidth probes.
    pub resent: u64,
    pub probes: u64,
    /// RTP packets from publishers read by the direct ingress (the rest of `received`: by
    /// str0m).
    pub ingress: u64,
}

pub struct Sfu {
    config: SfuConfig,
    crypto: Arc<CryptoProvider>,
    peers: HashMap<PeerId, Peer>,
    next_id: PeerId,
    rooms: HashMap<Uuid, Vec<PeerId>>,
    by_user: HashMap<(Uuid, Uuid), PeerId>,
    by_ufrag: HashMap<String, PeerId>,
    by_tuple: HashMap<(SocketAddr, SocketAddr), PeerId>,
    /// Peers' deadlines, earliest first; an entry whose deadline is no longer the peer's is
    /// stale and skipped.
    timers: BinaryHeap<Reverse<(Instant, PeerId)>>,
    next_sweep: Option<Instant>,
    /// When subscribers' layers are next chosen again ([`bwe`]).
    next_allocation: Option<Instant>,
    /// Peers written to since they were last polled, each once.
    dirty: Vec<PeerId>,
    /// The time of the latest datagram whose output is not polled yet (see "Driving it").
    unsettled: Option<Instant>,
    transmits: VecDeque<Transmit>,
    /// Forwarded video payloads kept for the direct egress's retransmissions.
    payloads: egress::Payloads,
    /// Datagram buffers sent and given back ([`Sfu::recycle`]), for the next forwarded packets.
    spare: Vec<Vec<u8>>,
    events: VecDeque<SfuEvent>,
    counters: Counters,
    speakers: Speakers,
}

impl Sfu {
    pub fn new(config: SfuConfig, crypto: Arc<CryptoProvider>) -> Sfu {
        Sfu {
            config,
            crypto,
            peers: HashMap::new(),
            next_id: 0,
            rooms: HashMap::new(),
            by_user: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_tuple: HashMap::new(),
            timers: BinaryHeap::new(),
            next_sweep: None,
            next_allocation: None,
            dirty: Vec::new(),
            unsettled: None,
            transmits: VecDeque::new(),
            spare: Vec::new(),
            payloads: egress::Payloads::default(),
            events: VecDeque::new(),
            counters: Counters::default(),
            speakers: Speakers::default(),
        }
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// str0m's latest estimate of the bandwidth from the SFU to `user` in `room`, bits per
    /// second: what its layers are chosen by. `None` before the first.
    pub fn estimate(&self, room: Uuid, user: Uuid) -> Option<u64> {
        let id = self.by_user.get(&(room, user))?;
        self.peers.get(id)?.budget.estimate
    }

    /// Participants in every room.
    /// The SRTP keys of `user`'s connection in `room`, once its DTLS handshake is done.
    pub fn srtp_keys(&self, room: Uuid, user: Uuid) -> Option<crate::srtp::Keys> {
        let id = self.by_user.get(&(room, user))?;
        self.peers.get(id)?.keys.as_ref()?.get()
    }

    pub fn participants(&self) -> usize {
        self.peers.len()
    }

    /// Closes every peer connection (DTLS close_notify goes out): the daemon is stopping.
    pub fn shutdown(&mut self, now: Instant) {
        let ids = self.peers.keys().copied().collect();
        self.close_peers(now, ids);
    }

    /// Participants in `room`.
    pub fn room_size(&self, room: Uuid) -> usize {
        self.rooms.get(&room).map_or(0, Vec::len)
    }

    /// `user` left `room`: its peer connection closes and the others stop receiving its
    /// tracks (they get offers that stop those m-lines).
    pub fn leave(&mut self, now: Instant, room: Uuid, user: Uuid) {
        if let Some(&id) = self.by_user.get(&(room, user)) {
            self.close_peers(now, vec![id]);
            self.settle(now);
        }
    }

    /// The call ended: everyone in `room` leaves.
    pub fn close_room(&mut self, now: Instant, room: Uuid) {
        let ids = self.room_members(room);
        self.close_peers(now, ids);
    }

    /// Which layer `subscriber` wants of `publisher`'s video (a thumbnail, the focus, none).
    pub fn set_quality(
        &mut self,
        now: Instant,
        room: Uuid,
        subscriber: Uuid,
        publisher: Uuid,
        quality: Quality,
    ) -> Result<(), SfuError> {
        let id = *self
            .by_user
            .get(&(room, subscriber))
            .ok_or(SfuError::NotJoined)?;
        let from = *self
            .by_user
            .get(&(room, publisher))
            .ok_or(SfuError::NotJoined)?;
        if let Some(peer) = self.peers.get_mut(&id) {
            for s in peer
                .subscriptions
                .iter_mut()
                .filter(|s| s.publisher == from)
            {
                s.quality = quality;
            }
        }
        self.start_subscriptions(id, now);
        self.settle(now);
        Ok(())
    }

    /// A datagram that arrived on the media port (or through the relay) from `source` to
    /// `destination`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        let tuple = (source, destination);
        let known = self.by_tuple.get(&tuple).copied();
        let Some(id) = known.or_else(|| {
            stun::binding_ufrag(data).and_then(|ufrag| self.by_ufrag.get(ufrag).copied())
        }) else {
            self.counters.unknown += 1;
            return;
        };
        let Ok(contents) = data.try_into() else {
            self.counters.refused += 1;
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        let peer = self.peers.get_mut(&id).expect("indexed peers exist");
        // A publisher's media packet: its arrival noted for the TWCC feedback we send, and the
        // packet read by our ingress once str0m knows its stream.
        if known.is_some() && data.len() >= 12 && data[0] >> 6 == 2 && !is_rtcp(data) {
            if let Some(ingress) = peer.ingress.as_mut() {
                ingress.arrived(&mut peer.rtc, &peer.published, data, now);
                let route = peer.egress.as_ref().and_then(|e| e.route);
                if let (Some((source, destination)), Some(contents)) =
                    (route, ingress.feedback(now))
                {
                    self.transmits.push_back(Transmit {
                        source,
                        destination,
                        contents,
                    });
                }
                if let Some(incoming) = ingress.read(&mut peer.rtc, data) {
                    self.counters.ingress += 1;
                    self.forward_incoming(id, incoming, None, now);
                    self.unsettled = Some(now);
                    return;
                }
            }
        }
        let estimate = match peer.egress.as_mut().filter(|_| is_rtcp(data)) {
            Some(egress) => {
                let before = (egress.resent, egress.probes);
                let estimate = egress.on_rtcp(data, now, &self.payloads, &mut self.transmits);
                self.counters.resent += egress.resent - before.0;
                self.counters.probes += egress.probes - before.1;
                estimate
            }
            None => None,
        };
        if !peer.rtc.accepts(&input) {
            self.counters.refused += 1;
            return;
        }
        if peer.rtc.handle_input(input).is_err() {
            self.counters.refused += 1;
        } else if known.is_none() && peer.tuples.len() < MAX_TUPLES {
            peer.tuples.push(tuple);
            self.by_tuple.insert(tuple, id);
        }
        self.poll_peer(id, now);
        if let Some(e) = estimate {
            self.estimated(id, Bitrate::bps(e), now);
        }
        self.unsettled = Some(now);
    }

    /// Time passed: `now` is at or past [`Sfu::poll_timeout`] (earlier is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        // The deadlines due now, each handled once: one that str0m sets again at `now` (its
        // BWE does, on a path of zero round trip time) waits for the next call rather than
        // spinning here.
        let mut due = Vec::new();
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            due.push((at, id));
        }
        for (at, id) in due {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if peer.deadline != at {
                continue;
            }
            if peer.rtc.handle_input(Input::Timeout(now)).is_err() {
                peer.rtc.disconnect();
            }
            self.poll_peer(id, now);
        }
        if self.next_sweep.is_some_and(|t| t <= now) {
            self.sweep(now);
        }
        if self.next_allocation.is_some_and(|t| t <= now) {
            self.reallocate(now);
            self.next_allocation = (!self.peers.is_empty()).then(|| now + bwe::ALLOCATE_EVERY);
        }
        self.settle(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((t, _))| *t);
        [timer, self.next_sweep, self.next_allocation, self.unsettled]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.settle_datagrams();
        self.transmits.pop_front()
    }

    /// Gives back a sent [`Transmit`]'s buffer: forwarded packets are written into such
    /// buffers rather than new ones (a room of twenty sends some 60,000 a second).
    pub fn recycle(&mut self, mut buffer: Vec<u8>) {
        if self.spare.len() < MAX_SPARE && buffer.capacity() >= SPARE_CAPACITY {
            buffer.clear();
            self.spare.push(buffer);
        }
    }

    pub fn poll_event(&mut self) -> Option<SfuEvent> {
        self.settle_datagrams();
        self.events.pop_front()
    }

    /// Polls the connections the datagrams since the last output was taken wrote to.
    fn settle_datagrams(&mut self) {
        if let Some(now) = self.unsettled.take() {
            self.settle(now);
        }
    }

    // ---- Peers ----

    /// Closes the connections of `ids` (their DTLS close_notify goes out) and forgets them.
    fn close_peers(&mut self, now: Instant, ids: Vec<PeerId>) {
        for id in ids {
            if let Some(p) = self.peers.get_mut(&id) {
                p.rtc.disconnect();
            }
            self.poll_peer(id, now);
            self.remove_peer(id);
        }
    }

    /// Takes a peer out of every index, and its tracks out of the others' subscriptions.
    fn remove_peer(&mut self, id: PeerId) {
        let Some(peer) = self.peers.remove(&id) else {
            return;
        };
        self.by_ufrag.remove(&peer.ufrag);
        self.by_user.remove(&(peer.room, peer.user));
        self.speakers.left(peer.room, peer.user);
        for t in &peer.tuples {
            self.by_tuple.remove(t);
        }
        if let Some(members) = self.rooms.get_mut(&peer.room) {
            members.retain(|m| *m != id);
            if members.is_empty() {
                self.rooms.remove(&peer.room);
            }
        }
        for other in self.room_members(peer.room) {
            let Some(o) = self.peers.get_mut(&other) else {
                continue;
            };
            o.subscriptions
                .retain_mut(|s| s.publisher != id || s.stop());
        }
    }

    fn room_members(&self, room: Uuid) -> Vec<PeerId> {
        self.rooms.get(&room).cloned().unwrap_or_default()
    }

    /// Tells everyone in `room` that `user` speaks.
    fn active_speaker(&mut self, room: Uuid, user: Uuid) {
        let to = self
            .room_members(room)
            .iter()
            .filter_map(|id| self.peers.get(id).map(|p| p.user))
            .collect();
        self.events
            .push_back(SfuEvent::ActiveSpeaker { room, user, to });
    }

    /// Removes peers whose connection stayed down past the grace.
    fn sweep(&mut self, now: Instant) {
        let gone: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                !p.rtc.is_alive() || (!p.connected && now >= p.last_up + self.config.grace)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(p) = self.peers.get(&id) {
                self.events.push_back(SfuEvent::Gone {
                    room: p.room,
                    user: p.user,
                });
            }
            self.remove_peer(id);
        }
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.cap_bitrate(id);
        }
        self.next_sweep = (!self.peers.is_empty()).then(|| now + SWEEP_EVERY);
    }

    // ---- Output ----

    /// Polls `id`'s connection until it has nothing more but a deadline.
    fn poll_peer(&mut self, id: PeerId, now: Instant) {
        // Whether the last round gave anything, and how many deadlines were handled at once.
        let (mut progress, mut rounds) = (true, 0);
        loop {
            let Some(peer) = self.peers.get_mut(&id) else {
                return;
            };
            match peer.rtc.poll_output() {
                // A deadline due ([`DUE_WITHIN`]): str0m's pacer sets one a microsecond on
                // after each packet it lets go and holds the next until it is handled. Handled here while it lets packets go, so that a subscriber's
                // burst (up to the pacer's 40 ms of debt) leaves in one call, not one packet
                // per turn of the driver; one that gives nothing waits for the next call.
                Ok(Output::Timeout(t))
                    if t <= now + DUE_WITHIN && progress && rounds < MAX_ROUNDS =>
                {
                    (progress, rounds) = (false, rounds + 1);
                    if peer.rtc.handle_input(Input::Timeout(now)).is_err() {
                        peer.rtc.disconnect();
                        return;
                    }
                }
                Ok(Output::Timeout(t)) => {
                    peer.deadline = t;
                    self.timers.push(Reverse((t, id)));
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    progress = true;
                    let mut contents: Vec<u8> = t.contents.into();
                    if self.config.direct_egress {
                        if peer.egress.is_none() {
                            let keys = peer.keys.as_ref().and_then(|k| k.get());
                            let start = self.config.start_estimate;
                            if self.config.direct_ingress {
                                peer.ingress = keys
                                    .as_ref()
                                    .map(|k| ingress::Ingress::new(k, &self.crypto));
                            }
                            peer.egress = keys.map(|k| Egress::new(&k, &self.crypto, start));
                            if peer.egress.is_some() {
                                peer.budget.estimate = Some(start);
                            }
                        }
                        if let Some(egress) = &mut peer.egress {
                            egress.route = Some((t.source, t.destination));
                            let drop_twcc = peer.ingress.is_some();
                            if is_rtcp(&contents)
                                && !egress.patch_rtcp(&mut contents, now, drop_twcc)
                            {
                                continue;
                            }
                        }
                    }
                    self.transmits.push_back(Transmit {
                        source: t.source,
                        destination: t.destination,
                        contents,
                    });
                }
                Ok(Output::Event(e)) => {
                    progress = true;
                    self.on_event(id, e, now);
                }
                Err(_) => {
                    peer.rtc.disconnect();
                    return;
                }
            }
        }
    }

    /// Polls every peer written to, and sends the offers that changes call for, until nothing
    /// is left to do.
    fn settle(&mut self, now: Instant) {
        self.unsettled = None;
        loop {
            while let Some(id) = self.dirty.pop() {
                self.poll_peer(id, now);
            }
            let offering: Vec<PeerId> = self
                .peers
                .iter()
                .filter(|(_, p)| p.needs_offer())
                .map(|(id, _)| *id)
                .collect();
            if offering.is_empty() && self.dirty.is_empty() {
                return;
            }
            for id in offering {
                self.send_offer(id);
                self.dirty.push(id);
            }
        }
    }

    fn on_event(&mut self, id: PeerId, event: Event, now: Instant) {
        match event {
            Event::RtpPacket(packet) => self.forward(id, packet, now),
            Event::MediaAdded(m) if Peer::receives(m.direction) => {
                let rids = m
                    .simulcast
                    .map(|s| {
                        let layers = if s.recv.is_empty() { s.send } else { s.recv };
                        layers.into_iter().map(|l| l.rid).collect()
                    })
                    .unwrap_or_default();
                self.published(id, m.mid, m.kind, rids);
            }
            // A later offer of the peer's sends on an m-line again, or no more (a screen share
            // started again or stopped). One first added inactive has no simulcast here:
            // str0m tells a track's layers only when it is added.
            Event::MediaChanged(m) if Peer::receives(m.direction) => {
                let Some(kind) = self
                    .peers
                    .get(&id)
                    .and_then(|p| p.rtc.media(m.mid))
                    .map(|x| x.kind())
                else {
                    return;
                };
                self.published(id, m.mid, kind, Vec::new());
            }
            Event::MediaChanged(m) => self.unpublished(id, m.mid),
            Event::KeyframeRequest(req) => {
                let Some(peer) = self.peers.get(&id) else {
                    return;
                };
                let Some(s) = peer
                    .subscriptions
                    .iter()
                    .find(|s| s.state == Line::Open(req.mid))
                else {
                    return;
                };
                let (publisher, mid, rid) =
                    (s.publisher, s.source_mid, s.rewriter.current().flatten());
                self.request_key_frame(publisher, mid, rid, now);
            }
            Event::MediaIngressStats(s) => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    if let Some(p) = peer.published.iter().find(|p| p.mid == s.mid) {
                        peer.watch.ingress(p.kind, &s);
                    }
                }
            }
            Event::MediaEgressStats(s) => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    let kind = peer
                        .subscriptions
                        .iter()
                        .find(|sub| sub.state == Line::Open(s.mid))
                        .map(|sub| sub.kind);
                    if let Some(kind) = kind {
                        peer.watch.egress(kind, &s);
                    }
                }
            }
            Event::PeerStats(s) => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    // What str0m did not send, the direct egress did: its bytes and the loss
                    // its TWCC feedback told.
                    let mut s = s;
                    if let Some(egress) = &mut peer.egress {
                        s.bytes_tx = egress.bytes_sent();
                        s.egress_loss_fraction = egress.take_loss().or(s.egress_loss_fraction);
                        let (rtt, jitter) = egress.take_reports();
                        peer.watch.reported(rtt, jitter);
                    }
                    let figures = peer.watch.peer(&s);
                    if peer.connected && figures != quality::Figures::default() {
                        self.events.push_back(SfuEvent::Quality {
                            room: peer.room,
                            user: peer.user,
                            figures,
                        });
                    }
                }
            }
            Event::IceConnectionStateChange(state) => {
                let Some(peer) = self.peers.get_mut(&id) else {
                    return;
                };
                let up = matches!(
                    state,
                    IceConnectionState::Connected | IceConnectionState::Completed
                );
                if up && !peer.connected {
                    let (room, user) = (peer.room, peer.user);
                    self.events.push_back(SfuEvent::Connected { room, user });
                    // Who speaks, for a newcomer: the others heard it when it changed.
                    if let Some(speaker) = self.speakers.current(room) {
                        self.events.push_back(SfuEvent::ActiveSpeaker {
                            room,
                            user: speaker,
                            to: vec![user],
                        });
                    }
                }
                if up || peer.connected {
                    peer.last_up = now;
                }
                peer.connected = up;
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                self.estimated(id, estimate, now);
            }
            _ => {}
        }
    }
}

/// Whether a datagram on the media port is RTCP (RFC 5761: version 2, a packet type of 192 to
/// 223 where RTP has its marker and payload type).
fn is_rtcp(data: &[u8]) -> bool {
    data.len() >= 8 && data[0] >> 6 == 2 && (192..=223).contains(&data[1])
}
