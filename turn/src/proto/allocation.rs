//! Allocations (RFC 8656 §5–7): a relayed transport address held for one client 5-tuple.
//!
//! An allocation belongs to the 5-tuple that created it and to the username that
//! authenticated it (§5: later requests with another username get 441). It lives for its
//! lifetime (default 600 s, at most the configured maximum) unless refreshed, and carries its
//! permissions, channel bindings, usage counters and the last few responses it sent, so that a
//! retransmitted request gets the same bytes back (RFC 8489 §6.3.1, "stateless" servers
//! excepted, and RFC 8656 §7.2 for Allocate).

use std::net::SocketAddr;

use stun_types::message::{IntegrityKey, TransactionId};

use super::bandwidth::Bucket;
use super::channel::Channels;
use super::permission::Permissions;
use super::{Family, FiveTuple, RequestError, Time};

/// Identifies an allocation for the driver: a slot index and a generation, so that an id held
/// after its allocation closed never reaches the allocation that reuses the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl AllocId {
    /// The id packed into 64 bits (for an epoll token, say).
    pub fn to_u64(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// The inverse of [`AllocId::to_u64`].
    pub fn from_u64(v: u64) -> Self {
        AllocId {
            index: v as u32,
            generation: (v >> 32) as u32,
        }
    }

    /// The slot index: small and dense, for the driver's own tables.
    pub fn index(self) -> usize {
        self.index as usize
    }
}

/// Packets and bytes an allocation relayed, each way, and dropped over a bandwidth cap
/// (payload bytes, without TURN framing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Client → peer.
    pub packets_to_peer: u64,
    /// Client → peer.
    pub bytes_to_peer: u64,
    /// Peer → client.
    pub packets_from_peer: u64,
    /// Peer → client.
    pub bytes_from_peer: u64,
    /// Either way, not relayed: over the allocation's, its user's or the relay's bandwidth
    /// cap ([`bandwidth`](super::bandwidth)).
    pub packets_dropped: u64,
    /// Either way, not relayed.
    pub bytes_dropped: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.packets_to_peer += o.packets_to_peer;
        self.bytes_to_peer += o.bytes_to_peer;
        self.packets_from_peer += o.packets_from_peer;
        self.bytes_from_peer += o.bytes_from_peer;
        self.packets_dropped += o.packets_dropped;
        self.bytes_dropped += o.bytes_dropped;
    }
}

const CACHED_RESPONSES: usize = 4;

/// The last few responses an allocation sent, by transaction id.
#[derive(Debug, Default)]
pub(crate) struct ResponseCache {
    entries: [Option<(TransactionId, Box<[u8]>)>; CACHED_RESPONSES],
    next: usize,
}

impl ResponseCache {
    pub(crate) fn get(&self, txid: TransactionId) -> Option<&[u8]> {
        self.entries
            .iter()
            .flatten()
            .find(|(t, _)| *t == txid)
            .map(|(_, b)| &b[..])
    }

    pub(crate) fn put(&mut self, txid: TransactionId, bytes: &[u8]) {
        self.entries[self.next] = Some((txid, bytes.into()));
        self.next = (self.next + 1) % CACHED_RESPONSES;
    }
}

/// A username as authenticated, `<expiry><separator><user>` or `<expiry>` alone, and where its
/// user starts: what quotas and usage count by ([`credentials::VerifiedUser::user`]).
///
/// [`credentials::VerifiedUser::user`]: super::credentials::VerifiedUser::user
#[derive(Clone, Debug)]
pub(crate) struct UserName {
    full: Box<str>,
    user_at: usize,
}

impl UserName {
    pub(crate) fn new(full: &str, user_at: usize) -> Self {
        UserName {
            full: full.into(),
            user_at,
        }
    }

    /// The whole username.
    pub(crate) fn as_str(&self) -> &str {
        &self.full
    }

    /// The user part (all of it when there is no separator).
    pub(crate) fn user(&self) -> &str {
        self.full.get(self.user_at..).unwrap_or_default()
    }
}

/// Where an allocation is in its life.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Authorised; waiting for the driver to open its relay socket.
    Opening {
        /// The lifetime granted, counted from when the socket opens.
        lifetime: std::time::Duration,
        /// Whether the request carried FINGERPRINT (then so does the answer).
        fingerprint: bool,
        /// The families whose relay socket the driver has yet to report (IPv4, IPv6).
        waiting: [bool; 2],
        /// The ADDRESS-ERROR-CODE for an IPv6 address asked for and not given (no IPv6 relay
        /// address configured, or its socket could not be opened).
        v6_error: Option<RequestError>,
    },
    /// Relaying.
    Active,
}

#[derive(Debug)]
pub(crate) struct Allocation {
    pub(crate) tuple: FiveTuple,
    /// The username that authenticated it.
    pub(crate) username: UserName,
    /// The long-term key for `username`, cached so later requests skip the HMAC and MD5.
    pub(crate) key: IntegrityKey,
    /// The Allocate request that created it, to recognise its retransmissions.
    pub(crate) created_by: TransactionId,
    pub(crate) phase: Phase,
    /// The family the client asked for (the IPv4 half of a dual allocation).
    pub(crate) primary: Family,
    /// The relay sockets' own addresses once open, by family (IPv4, IPv6).
    pub(crate) relayed: [Option<SocketAddr>; 2],
    /// What clients and peers are told, by family: `external_ip` with the relay port, when
    /// behind NAT.
    pub(crate) advertised: [Option<SocketAddr>; 2],
    pub(crate) created: Time,
    pub(crate) expires: Time,
    pub(crate) permissions: Permissions,
    pub(crate) channels: Channels,
    pub(crate) usage: Usage,
    /// Its bandwidth bucket (`turn.allocation_bandwidth`).
    pub(crate) bucket: Bucket,
    /// Its user's entry in the server's [`Users`](super::users::Users).
    pub(crate) user_slot: u32,
    pub(crate) responses: ResponseCache,
}

impl Allocation {
    /// The user part of the username ([`credentials::VerifiedUser::user`]).
    ///
    /// [`credentials::VerifiedUser::user`]: super::credentials::VerifiedUser::user
    pub(crate) fn user(&self) -> &str {
        self.username.user()
    }

    pub(crate) fn is_active(&self) -> bool {
        matches!(self.phase, Phase::Active)
    }

    /// Whether its relay socket of `family` is open.
    pub(crate) fn has_relay(&self, family: Family) -> bool {
        self.relayed[family.index()].is_some()
    }
}
