//! Where a request comes from: the client address the daemon's accept loop gives every request
//! (the peer's, or the client a trusted proxy names), and the [`Source`] that per-address
//! limits count by.

use std::net::{IpAddr, Ipv4Addr};

/// The address a request is from: the peer's, or the client a trusted proxy names. Every
/// request the daemon's accept loop serves carries it as an extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    pub fn source(self) -> Source {
        Source::of(self.0)
    }
}

/// What per-address limits count by: an IPv4 address, or an IPv6 address's /64 (a host is
/// usually given a whole /64, so counting IPv6 addresses one by one would cap nobody).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    V4(Ipv4Addr),
    V6Net(u64),
}

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => Source::V6Net((v6.to_bits() >> 64) as u64),
        }
    }
}
