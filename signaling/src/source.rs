//! Where a request comes from: the client address the daemon's accept loop gives every request
//! (the peer's, or the client a trusted proxy names), and the [`Source`] that per-address
//! limits count by.

use std::net::IpAddr;

/// The address a request is from: the peer's, or the client a trusted proxy names. Every
/// request the daemon's accept loop serves carries it as an extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    pub fn source(self) -> Source {
        Source::of(self.0)
    }
}

/// What per-address limits count by (the relay's too): an IPv4 address, or an IPv6 /64.
pub use switchboard_turn::proto::source::Source;
