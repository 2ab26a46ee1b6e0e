//! What per-address limits count by, on the relay and on the API alike.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 address, or an IPv6 address's /64: a host is usually given a whole /64, so counting
/// IPv6 addresses one by one would cap nobody. An IPv4-mapped IPv6 address is its IPv4 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    V4(Ipv4Addr),
    /// The upper 64 bits.
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

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Source::V4(v4) => v4.fmt(f),
            Source::V6Net(net) => write!(f, "{}/64", Ipv6Addr::from_bits(u128::from(net) << 64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_addresses_whole_ipv6_by_their_64_and_mapped_ipv4_as_ipv4() {
        let of = |s: &str| Source::of(s.parse().unwrap());
        assert_eq!(of("192.0.2.7"), Source::V4(Ipv4Addr::new(192, 0, 2, 7)));
        assert_ne!(of("192.0.2.7"), of("192.0.2.8"));
        assert_eq!(
            of("2001:db8:1:2:aaaa::1"),
            of("2001:db8:1:2:bbbb::2"),
            "one /64"
        );
        assert_ne!(of("2001:db8:1:2::1"), of("2001:db8:1:3::1"));
        assert_eq!(of("::ffff:192.0.2.7"), of("192.0.2.7"), "IPv4-mapped");
        assert_eq!(of("2001:db8:1:2:aaaa::1").to_string(), "2001:db8:1:2::/64");
    }
}
