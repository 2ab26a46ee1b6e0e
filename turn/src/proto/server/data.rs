//! The data paths (RFC 8656 §9–12): CreatePermission and ChannelBind with the peer policy,
//! Send indications and ChannelData from clients, and the Data indication framed in place for
//! a peer's datagram. ChannelData (§12.6) is the hot path: no allocation, no parsing beyond
//! its 4-byte header.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use stun_types::attribute::{Attribute as _, AttributeStaticType};
use stun_types::message::{Message, MessageClass, MessageType};
use turn_types::attribute::{ChannelNumber, Data, XorPeerAddress};
use turn_types::message::DATA;

use super::allocate::Answer;
use super::{unknown_required, ClientAction, PeerAction, Server, PEER_HEADROOM, PEER_TAILROOM};
use crate::proto::allocation::AllocId;
use crate::proto::channel::{BindError, CHANNEL_MAX, CHANNEL_MIN};
use crate::proto::policy::{self, Refusal};
use crate::proto::{Family, FiveTuple, RequestError, Time};

/// A peer on one of the box's own addresses, at a port that is not a relay port and that no
/// `allow_peers` entry naming the address opens ([`Server::check_peer_port`]).
const OWN_ADDRESS: Refusal = Refusal::Reserved("own-address");

impl Server {
    /// A datagram from a peer served inside this process (`ServerConfig::local_peers`) to the
    /// relayed address `to` (as advertised: the relay or external address of its family, and
    /// the allocation's port): [`Server::handle_peer_data`] for the allocation there, if any.
    pub fn handle_local_data(
        &mut self,
        now: Time,
        to: SocketAddr,
        from: SocketAddr,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> Option<PeerAction> {
        let to = canonical(to);
        if !self.is_own_ip(to.ip()) || !self.config.local_peers.contains(&canonical(from)) {
            return None;
        }
        let relay_ip = self.config.relay_ip(Family::of(to.ip()))?;
        let id = *self.by_relay.get(&SocketAddr::new(relay_ip, to.port()))?;
        self.handle_peer_data(now, id, from, buf, payload)
    }

    /// A datagram from `from` arrived on allocation `id`'s relay socket (or through the
    /// hairpin). `buf[payload]` holds it, with at least [`PEER_HEADROOM`] bytes before and
    /// [`PEER_TAILROOM`] after; the core frames it in place for the client. `None`: drop it
    /// (no permission, no such allocation, or over a bandwidth cap: [`bandwidth`]).
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
        if self.check_peer_port(from).is_err() {
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
        if !self.within_bandwidth(now, id, len) {
            return None;
        }
        let alloc = self.get_mut(id)?;
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

    /// ChannelData from a client (RFC 8656 §12.6): the hot path, no allocation, no parsing
    /// beyond the 4-byte header.
    pub(super) fn channel_data<'a>(
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
        self.forward(now, id, peer, payload)
    }

    /// Sends `payload` from allocation `id` toward `peer` (already authorised), through the
    /// network or, for the relay's own addresses, inside the process; unless it is over a
    /// bandwidth cap.
    fn forward<'a>(
        &mut self,
        now: Time,
        id: AllocId,
        peer: SocketAddr,
        payload: &'a [u8],
    ) -> ClientAction<'a> {
        if self.config.local_peers.contains(&peer) {
            let from = self
                .get(id)
                .and_then(|a| a.advertised[Family::of(peer.ip()).index()]);
            let Some(from) = from else {
                return ClientAction::Done;
            };
            if !self.count_to_peer(now, id, payload.len()) {
                return ClientAction::Done;
            }
            return ClientAction::Local {
                from,
                to: peer,
                payload,
            };
        }
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
                    if !self.count_to_peer(now, id, payload.len()) {
                        return ClientAction::Done;
                    }
                    return ClientAction::Hairpin { to, from, payload };
                }
                // A relay port no allocation holds: some other program's socket, reachable
                // only where the operator allowed the address explicitly.
                _ if self.config.policy.opens_own(peer.ip(), Some(peer.port())) => {}
                _ => return ClientAction::Done,
            }
        }
        if !self.count_to_peer(now, id, payload.len()) {
            return ClientAction::Done;
        }
        ClientAction::Relay {
            alloc: id,
            peer,
            payload,
        }
    }

    /// Counts `len` bytes toward the peer, if they fit the bandwidth caps (else counts the
    /// drop): whether to send them.
    fn count_to_peer(&mut self, now: Time, id: AllocId, len: usize) -> bool {
        if !self.within_bandwidth(now, id, len) {
            return false;
        }
        if let Some(a) = self.get_mut(id) {
            a.usage.packets_to_peer += 1;
            a.usage.bytes_to_peer += len as u64;
        }
        true
    }

    /// CreatePermission (RFC 8656 §9.2): all the peers, or none.
    pub(super) fn create_permission(
        &mut self,
        now: Time,
        id: AllocId,
        msg: &Message<'_>,
    ) -> Answer {
        let txid = msg.transaction_id();
        let max = self.config.max_permissions;
        let mut ips = Vec::new();
        for (_, raw) in msg.iter_attributes() {
            if raw.get_type() == XorPeerAddress::TYPE {
                if ips.len() == max {
                    // More peers than an allocation may hold: refused before any more work.
                    return Err(RequestError::InsufficientCapacity);
                }
                let peer = XorPeerAddress::try_from(&raw).map_err(|_| RequestError::BadRequest)?;
                ips.push(canonical(peer.addr(txid)).ip());
            }
        }
        if ips.is_empty() {
            return Err(RequestError::BadRequest);
        }
        ips.sort_unstable();
        ips.dedup();
        for &ip in &ips {
            self.check_peer_ip(id, ip)?;
        }
        let expires = now + self.config.permission_lifetime;
        let alloc = self.get_mut(id).ok_or(RequestError::AllocationMismatch)?;
        if !alloc.permissions.fits(&ips, now, max) {
            return Err(RequestError::InsufficientCapacity);
        }
        for ip in ips {
            alloc.permissions.install(ip, expires);
        }
        Ok(None)
    }

    /// ChannelBind (RFC 8656 §11.2).
    pub(super) fn channel_bind(&mut self, now: Time, id: AllocId, msg: &Message<'_>) -> Answer {
        let txid = msg.transaction_id();
        let (Ok(number), Ok(peer)) = (
            msg.attribute::<ChannelNumber>(),
            msg.attribute::<XorPeerAddress>(),
        ) else {
            return Err(RequestError::BadRequest);
        };
        let (number, peer) = (number.channel(), canonical(peer.addr(txid)));
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&number) {
            return Err(RequestError::BadRequest);
        }
        self.check_peer_ip(id, peer.ip())?;
        self.check_peer_port(peer)
            .map_err(|reason| RequestError::Forbidden { reason })?;
        let (max, perm_expires) = (
            self.config.max_channels,
            now + self.config.permission_lifetime,
        );
        let expires = now + self.config.channel_lifetime;
        let alloc = self.get_mut(id).ok_or(RequestError::AllocationMismatch)?;
        match alloc.channels.bind(number, peer, now, expires, max) {
            Ok(()) => {}
            Err(BindError::Conflict) => return Err(RequestError::BadRequest),
            Err(BindError::Full) => return Err(RequestError::InsufficientCapacity),
        }
        alloc.permissions.install(peer.ip(), perm_expires);
        Ok(None)
    }

    /// Send indication (RFC 8656 §10.2): no answer, ever; bad ones are dropped.
    pub(super) fn send<'a>(
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
                && a.has_relay(Family::of(peer.ip()))
                && a.permissions.allows(peer.ip(), now)
        });
        if !permitted {
            return ClientAction::Done;
        }
        if let Err(reason) = self.check_peer_port(peer) {
            // Refused as a request would be, but an indication gets no answer.
            self.record(&RequestError::Forbidden { reason });
            return ClientAction::Done;
        }
        self.forward(now, id, peer, payload)
    }

    /// The policy for a permission's IP: deny wins, then the relay's own addresses are fine,
    /// then allow and the default.
    fn check_peer_ip(&self, id: AllocId, ip: IpAddr) -> Result<(), RequestError> {
        let verdict = if self.config.policy.is_denied(ip) {
            Err(Refusal::Denied)
        } else if self.is_own_ip(ip) || self.config.local_peers.iter().any(|p| p.ip() == ip) {
            Ok(())
        } else {
            self.config.policy.check(ip)
        };
        verdict.map_err(|reason| RequestError::Forbidden { reason })?;
        // RFC 8656 §9.2, §11.2: a peer of a family the allocation has no relayed address of.
        if !self.get(id).is_some_and(|a| a.has_relay(Family::of(ip))) {
            return Err(RequestError::PeerAddressFamilyMismatch);
        }
        Ok(())
    }

    /// The policy for a peer's port, beyond its IP's permission. The box's own addresses
    /// ([`Server::is_host_ip`]) are peers only on relay ports, delivered in-process, unless an
    /// `allow_peers` entry naming the address alone, or a loopback range, opens it
    /// ([`PeerPolicy::opens_own`](policy::PeerPolicy::opens_own)): its HTTP port, SSH, a
    /// database and the like are never reachable through a range that merely contains the
    /// address. Other peers are limited only by `allow_peers` entries with ports.
    pub(super) fn check_peer_port(&self, peer: SocketAddr) -> Result<(), Refusal> {
        if self.config.local_peers.contains(&canonical(peer)) {
            return Ok(());
        }
        let (ip, port) = (policy::normalize(peer.ip()), peer.port());
        if self.is_host_ip(ip) {
            let relayable = self.is_own_ip(ip) && self.config.relay_ports.contains(&port);
            let opened = relayable || self.config.policy.opens_own(ip, Some(port));
            return if opened { Ok(()) } else { Err(OWN_ADDRESS) };
        }
        if self.config.policy.has_port_ranges() {
            self.config.policy.check_port(ip, port)
        } else {
            Ok(())
        }
    }

    /// Whether `ip` (normalised) is one of the box's own addresses: a relay or external
    /// address, another address of the host (`ServerConfig::host_ips`: its listeners, its
    /// interfaces), loopback, or the unspecified address (which reaches the host too).
    fn is_host_ip(&self, ip: IpAddr) -> bool {
        ip.is_loopback()
            || ip.is_unspecified()
            || self.is_own_ip(ip)
            || self.config.host_ips.contains(&ip)
    }

    /// Whether `ip` is one of the relay's own relay (or external) addresses.
    pub(super) fn is_own_ip(&self, ip: IpAddr) -> bool {
        let ip = policy::normalize(ip);
        self.config.relay_ips.contains(&ip) || self.config.external_ips.contains(&ip)
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is; anything else unchanged.
pub(super) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// The STUN length of a Data indication carrying `len` payload bytes from `peer`:
/// XOR-PEER-ADDRESS and DATA, padded.
pub(super) fn data_indication_body(len: usize, peer: SocketAddr) -> usize {
    let addr_len = if peer.is_ipv4() { 8 } else { 20 };
    4 + addr_len + 4 + ((len + 3) & !3)
}

/// Writes a Data indication header (and DATA padding) around `buf[payload]`, in place.
pub(super) fn frame_data_indication(
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
