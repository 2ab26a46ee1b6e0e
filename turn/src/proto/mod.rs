//! The sans-IO protocol core.
//!
//! [`Server`] holds every allocation and answers every STUN message; it never touches a socket
//! or a clock. The driver's loop, in order:
//!
//! 1. For a datagram from a client on a listener, call [`Server::handle_client`]. If it returns
//!    [`ClientAction::Relay`], send the payload from that allocation's relay socket to the peer;
//!    for [`ClientAction::Hairpin`], feed the payload to [`Server::handle_peer_data`] of the
//!    target allocation as if it had arrived from the given address.
//! 2. For a datagram on a relay socket, read it at offset [`PEER_HEADROOM`] and call
//!    [`Server::handle_peer_data`], which frames it in place (ChannelData or a Data indication)
//!    and says which client to send it to.
//! 3. Drain [`Server::poll_command`] (open a relay socket and answer with
//!    [`Server::handle_relay_opened`]; close one), [`Server::poll_transmit`] (STUN answers to
//!    clients) and [`Server::poll_event`] (for logs and metrics).
//! 4. Sleep until [`Server::poll_timeout`] or the next datagram; when the deadline passes call
//!    [`Server::handle_timeout`] (calling it early is harmless).
//!
//! Panic policy: nothing a client or peer sends can panic the core; bad input is an error
//! response or a silent drop, as the RFCs say.

pub mod allocation;
pub mod bandwidth;
pub mod channel;
pub mod config;
pub mod credentials;
mod error;
pub mod limit;
pub mod nonce;
pub mod permission;
pub mod policy;
mod server;
pub mod source;
pub mod stream;
pub mod time;
mod users;

/// What the unit tests of several mechanisms write the same way.
#[cfg(test)]
pub(crate) mod testing {
    use std::net::{IpAddr, SocketAddr};

    /// An address written out, as the tests do; a typo is the test's own bug.
    pub fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    pub fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
}

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use allocation::{AllocId, Usage};
pub use bandwidth::BandwidthCaps;
pub use config::ServerConfig;
pub use error::RequestError;
pub use policy::Refusal;
pub use server::{ClientAction, PeerAction, Server, PEER_HEADROOM, PEER_TAILROOM};
pub use time::Time;

/// An IP address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of an address (an IPv4-mapped IPv6 address counts as IPv6 here; the core
    /// canonicalises peers before asking).
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// 0 for IPv4, 1 for IPv6: an index into per-family tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The transport between a client and the relay's listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// A client's 5-tuple as seen by the relay: transport, client address, listener address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub transport: Transport,
    pub client: SocketAddr,
    pub server: SocketAddr,
}

impl FiveTuple {
    /// A UDP 5-tuple.
    pub fn udp(client: SocketAddr, server: SocketAddr) -> Self {
        FiveTuple {
            transport: Transport::Udp,
            client,
            server,
        }
    }

    /// A TCP 5-tuple.
    pub fn tcp(client: SocketAddr, server: SocketAddr) -> Self {
        FiveTuple {
            transport: Transport::Tcp,
            client,
            server,
        }
    }

    /// Whether the client's transport is a byte stream (TCP or TLS), where ChannelData is
    /// padded to four bytes (RFC 8656 §12.5).
    pub fn is_stream(&self) -> bool {
        self.transport != Transport::Udp
    }

    /// Feeds a canonical byte form to `f` (for MACs).
    pub(crate) fn hash_into(&self, mut f: impl FnMut(&[u8])) {
        f(&[self.transport as u8]);
        for a in [self.client, self.server] {
            let ip = match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            f(&ip.octets());
            f(&a.port().to_be_bytes());
        }
    }
}

/// A STUN message for a client.
#[derive(Debug)]
pub struct Transmit {
    /// Send from `tuple.server` to `tuple.client` over `tuple.transport`.
    pub tuple: FiveTuple,
    pub data: Vec<u8>,
}

/// The relay socket an allocation needs: on the relay address of `family`, a port from the
/// range (an even one if `even_port`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayRequest {
    pub id: AllocId,
    pub family: Family,
    pub even_port: bool,
}

/// A side effect the core asks of the driver.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Open a relay socket and report the result with [`Server::handle_relay_opened`]. A dual
    /// allocation asks for IPv4, then IPv6.
    OpenRelay(RelayRequest),
    /// Close this allocation's relay sockets (one or two).
    CloseRelay { id: AllocId },
}

/// Why a relay socket could not be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Every port in the range is taken (answered with 508).
    NoPorts,
    /// Some other socket error (answered with 508 too; the driver logs the detail).
    Io,
}

/// Why an allocation closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Its lifetime ran out.
    Expired,
    /// The client deleted it (Refresh with LIFETIME 0).
    Deleted,
    /// The driver closed it (connection gone, shutdown).
    Closed,
    /// Its user was revoked ([`Server::revoke_user`]).
    Revoked,
}

/// Why a request failed authentication (for metrics; challenges are not failures).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// MESSAGE-INTEGRITY present but USERNAME, REALM or NONCE missing (400).
    MissingAttributes,
    /// The nonce was not ours, not for this 5-tuple, or expired (438).
    StaleNonce,
    /// REALM was not ours (401).
    WrongRealm,
    /// The username was not `<expiry>[<separator><user>]` or too long (401).
    MalformedUsername,
    /// The username's expiry has passed (401).
    Expired,
    /// MESSAGE-INTEGRITY did not verify: wrong password or tampered message (401).
    BadIntegrity,
    /// Another username than the allocation's (441).
    WrongCredentials,
    /// A credential of a revoked user, minted before the revocation (401, as an expired one:
    /// see [`credentials::Revocations`]).
    Revoked,
}

impl AuthFailure {
    /// A short label, for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::MissingAttributes => "missing_attributes",
            AuthFailure::StaleNonce => "stale_nonce",
            AuthFailure::WrongRealm => "wrong_realm",
            AuthFailure::MalformedUsername => "malformed_username",
            AuthFailure::Expired => "expired",
            AuthFailure::BadIntegrity => "bad_integrity",
            AuthFailure::WrongCredentials => "wrong_credentials",
            AuthFailure::Revoked => "revoked",
        }
    }
}

/// Something that happened, for logs and metrics.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// An allocation started relaying.
    AllocationCreated {
        id: AllocId,
        tuple: FiveTuple,
        user: Box<str>,
        /// The relayed address (the IPv4 one of a dual allocation).
        relayed: SocketAddr,
    },
    /// An allocation ended, with what it relayed.
    AllocationClosed {
        id: AllocId,
        tuple: FiveTuple,
        user: Box<str>,
        reason: CloseReason,
        usage: Usage,
        lifetime: Duration,
    },
    /// A request failed authentication.
    AuthFailed(AuthFailure),
    /// A permission, channel or Send toward a forbidden peer was refused.
    PeerRefused(Refusal),
    /// An Allocate was refused for a quota (486): the user's or the relay's.
    QuotaReached { total: bool },
    /// An answer to an unauthenticated request over UDP (a challenge, a Binding answer, a 400
    /// or 420) was not sent: its source is over its budget ([`limit`]).
    ChallengeDropped,
}
