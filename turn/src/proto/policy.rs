//! Peer policy: which addresses an allocation may talk to (RFC 8656 §21, "Security Considerations").
//!
//! An open relay is an SSRF tool: a client that can make the relay send to 127.0.0.1, the LAN or
//! the cloud metadata service reaches what sits behind the box. So by default permissions,
//! channels and Send toward loopback, unspecified, private (RFC 1918), CGNAT, link-local,
//! multicast, broadcast, documentation/benchmark and other special-purpose ranges are refused
//! with 403, for IPv4 and IPv6 alike. Addresses that embed an IPv4 address (IPv4-mapped, NAT64
//! `64:ff9b::/96`, 6to4 `2002::/16`) are judged by the IPv4 address inside.
//!
//! The operator can open ranges with `turn.allow_peers` and close more with `turn.deny_peers`;
//! a deny always wins. The relay's own relayed addresses are handled before this policy (they
//! are delivered inside the process), see `server`.
//!
//! The box's own addresses (its relay, external, listener and interface addresses, loopback and
//! the unspecified address) are not opened by a range that merely contains them: `10.0.0.0/8`
//! opens the LAN, not the database listening on the relay's own `10.0.0.5`. Only an entry that
//! names one alone (`10.0.0.5`, `10.0.0.5/32`, or with ports, `10.0.0.5:5000-5100`) or a
//! loopback range (`127.0.0.0/8`, `::1/128`) opens it ([`PeerPolicy::opens_own`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::str::FromStr;

/// An IP network in CIDR notation, like `10.0.0.0/8` or `2001:db8::/32`. A bare address is a
/// single-host network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR string did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidrError {
    #[error("`{0}` is not an IP address")]
    Address(String),
    #[error("prefix length `{0}` is not a number from 0 to 32 (IPv4) or 128 (IPv6)")]
    Prefix(String),
    #[error("`{0}` has bits set after the prefix; did you mean `{1}`?")]
    HostBits(String, Cidr),
    #[error("`{0}` is not a port or port range like `5000-5100` (from 1 to 65535, low to high)")]
    Ports(String),
    #[error(
        "`{0}`: a port range goes only with a single address, like `10.0.0.5:5000-5100` or \
         `[2001:db8::5]:5000-5100`"
    )]
    PortsOnNetwork(String),
}

impl Cidr {
    /// A network from an address and prefix length, with the host bits cleared.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then(|| Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Cidr {
        Cidr {
            addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> Cidr {
        let [a, b, c, d, e, f, g, h] = segments;
        Cidr {
            addr: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            prefix,
        }
    }

    /// Whether `ip` lies in this network (an IPv4 network never contains an IPv6 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.addr
            }
            _ => false,
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether this network is one address (/32, /128).
    pub fn is_single(&self) -> bool {
        self.prefix == if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// Whether every address of this network is a loopback one (within `127.0.0.0/8`, or
    /// `::1/128`).
    pub fn is_loopback(&self) -> bool {
        match self.addr {
            IpAddr::V4(v4) => self.prefix >= 8 && v4.is_loopback(),
            IpAddr::V6(v6) => self.prefix == 128 && v6.is_loopback(),
        }
    }
}

/// `ip` with the bits after the first `prefix` cleared (a shift by the full width, for prefix
/// 0, clears them all).
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & m))
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & m))
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| CidrError::Address(addr.to_owned()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| CidrError::Prefix(p.to_owned()))?,
        };
        let cidr = Cidr {
            addr: mask(addr, prefix),
            prefix,
        };
        if cidr.addr != addr {
            return Err(CidrError::HostBits(s.to_owned(), cidr));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An entry of `turn.allow_peers`: a network (`10.0.0.0/8`), or a single address with a port
/// range (`10.0.0.5:5000-5100`, `[2001:db8::5]:5000-5100`; one port: `10.0.0.5:5432`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerRange {
    net: Cidr,
    ports: Option<RangeInclusive<u16>>,
}

impl PeerRange {
    /// The network.
    pub fn net(&self) -> Cidr {
        self.net
    }

    /// The ports it is limited to, if any.
    pub fn ports(&self) -> Option<&RangeInclusive<u16>> {
        self.ports.as_ref()
    }

    /// Whether it covers `ip` (already [`normalize`]d), at `port` if given (ports aside if not).
    fn covers(&self, ip: IpAddr, port: Option<u16>) -> bool {
        self.net.contains(ip)
            && match (&self.ports, port) {
                (Some(ports), Some(p)) => ports.contains(&p),
                _ => true,
            }
    }

    /// Whether it opens `ip`, one of the box's own addresses: only by naming it alone, or as a
    /// loopback range.
    fn names(&self, ip: IpAddr, port: Option<u16>) -> bool {
        (self.net.is_single() || self.net.is_loopback()) && self.covers(ip, port)
    }
}

impl From<Cidr> for PeerRange {
    fn from(net: Cidr) -> Self {
        PeerRange { net, ports: None }
    }
}

impl FromStr for PeerRange {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<PeerRange, CidrError> {
        let s = s.trim();
        // `[v6]:ports`, or `v4:ports` (a bare IPv6 address has colons of its own).
        let split = match s.strip_prefix('[') {
            Some(rest) => rest.split_once("]:").map(|(a, p)| (&s[..a.len() + 2], p)),
            None if s.matches(':').count() == 1 => s.split_once(':'),
            None => None,
        };
        let Some((net, ports)) = split else {
            return Ok(s.parse::<Cidr>()?.into());
        };
        if net.contains('/') {
            return Err(CidrError::PortsOnNetwork(s.to_owned()));
        }
        let net: Cidr = net.parse()?;
        let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p > 0);
        let range = match ports.split_once('-') {
            Some((lo, hi)) => port(lo).zip(port(hi)).filter(|(lo, hi)| lo <= hi),
            None => port(ports).map(|p| (p, p)),
        };
        let (lo, hi) = range.ok_or_else(|| CidrError::Ports(ports.to_owned()))?;
        Ok(PeerRange {
            net,
            ports: Some(lo..=hi),
        })
    }
}

impl fmt::Display for PeerRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.ports, self.net.addr) {
            (None, _) => self.net.fmt(f),
            (Some(p), IpAddr::V4(a)) => write!(f, "{a}:{}-{}", p.start(), p.end()),
            (Some(p), IpAddr::V6(a)) => write!(f, "[{a}]:{}-{}", p.start(), p.end()),
        }
    }
}

/// Why a peer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It matched `turn.deny_peers`.
    Denied,
    /// It is in a special-purpose range refused by default; the name says which.
    Reserved(&'static str),
}

impl Refusal {
    /// A short label, for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Denied => "deny_peers",
            Refusal::Reserved(name) => name,
        }
    }
}

/// The ranges refused unless `turn.allow_peers` opens them (IANA special-purpose registries,
/// RFC 6890 and its updates). IPv6 forms that embed IPv4 are unwrapped before this is read.
const RESERVED: &[(Cidr, &str)] = &[
    (Cidr::v4(0, 0, 0, 0, 8), "this-network"),
    (Cidr::v4(10, 0, 0, 0, 8), "private"),
    (Cidr::v4(100, 64, 0, 0, 10), "cgnat"),
    (Cidr::v4(127, 0, 0, 0, 8), "loopback"),
    (Cidr::v4(169, 254, 0, 0, 16), "link-local"),
    (Cidr::v4(172, 16, 0, 0, 12), "private"),
    (Cidr::v4(192, 0, 0, 0, 24), "ietf-protocol"),
    (Cidr::v4(192, 0, 2, 0, 24), "documentation"),
    (Cidr::v4(192, 88, 99, 0, 24), "6to4-relay"),
    (Cidr::v4(192, 168, 0, 0, 16), "private"),
    (Cidr::v4(198, 18, 0, 0, 15), "benchmarking"),
    (Cidr::v4(198, 51, 100, 0, 24), "documentation"),
    (Cidr::v4(203, 0, 113, 0, 24), "documentation"),
    (Cidr::v4(224, 0, 0, 0, 4), "multicast"),
    (Cidr::v4(240, 0, 0, 0, 4), "reserved"), // includes 255.255.255.255
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 8), "reserved"), // ::, ::1, IPv4-compatible
    (
        Cidr::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        "nat64-local",
    ),
    (Cidr::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "discard"),
    (Cidr::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), "ietf-protocol"), // incl. Teredo
    (
        Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        "documentation",
    ),
    (Cidr::v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), "documentation"),
    (Cidr::v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16), "srv6-sid"),
    (Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), "unique-local"),
    (Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (Cidr::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), "site-local"),
    (Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

/// The IPv4 address an IPv6 address stands for, if it is one of the forms that embed one:
/// IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d` (RFC 6052) and 6to4 `2002:AABB:CCDD::/48`
/// (RFC 3056). Policy judges the embedded address, so `[::ffff:127.0.0.1]` is loopback.
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some(tail(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(tail(hi, lo)),
        [0x2002, hi, lo, ..] => Some(tail(hi, lo)),
        _ => None,
    }
}

/// The address policy judges: the embedded IPv4 address where there is one, else `ip`.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The operator's peer policy: `turn.allow_peers` and `turn.deny_peers` over the default.
#[derive(Clone, Debug, Default)]
pub struct PeerPolicy {
    allow: Vec<PeerRange>,
    deny: Vec<Cidr>,
    /// Whether an `allow_peers` entry has a port range: then ports matter for other peers
    /// than the box's own addresses too ([`PeerPolicy::check_port`]).
    port_ranges: bool,
}

impl PeerPolicy {
    /// A policy with these exceptions to the default.
    pub fn new(allow: Vec<PeerRange>, deny: Vec<Cidr>) -> Self {
        let port_ranges = allow.iter().any(|r| r.ports.is_some());
        PeerPolicy {
            allow,
            deny,
            port_ranges,
        }
    }

    /// Whether `turn.deny_peers` covers `ip` or the IPv4 address it embeds.
    pub fn is_denied(&self, ip: IpAddr) -> bool {
        let norm = normalize(ip);
        self.deny.iter().any(|c| c.contains(ip) || c.contains(norm))
    }

    /// Whether `turn.allow_peers` opens `ip`, one of the box's own addresses, at `port` (at
    /// some port, for `None`), and `deny_peers` does not close it: an entry naming it alone
    /// (with its port in the entry's range, if it has one), or a loopback range containing it.
    /// A wider range that merely contains it does not: that is the only way to reach the box's
    /// own addresses on ports other than relay ports.
    pub fn opens_own(&self, ip: IpAddr, port: Option<u16>) -> bool {
        let norm = normalize(ip);
        !self.is_denied(ip) && self.allow.iter().any(|r| r.names(norm, port))
    }

    /// Of `own` (the box's own addresses), those `entry` contains but does not open: what
    /// `check-config` reports, so that an operator who wrote `10.0.0.0/8` knows the box's
    /// `10.0.0.5` is not in it.
    pub fn skipped_own(entry: &PeerRange, own: &[IpAddr]) -> Vec<IpAddr> {
        own.iter()
            .copied()
            .filter(|&ip| {
                let norm = normalize(ip);
                entry.net.contains(norm) && !entry.names(norm, None)
            })
            .collect()
    }

    /// Judges a peer IP address, ports aside (a permission is for every port of an address).
    ///
    /// `deny_peers` wins over everything, and is matched against both the address as given and
    /// the IPv4 address it embeds; then `allow_peers` and the default list are matched against
    /// the embedded address.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        self.judge(ip, None)
    }

    /// Whether an `allow_peers` entry has a port range (else [`PeerPolicy::check_port`] is
    /// [`PeerPolicy::check`]).
    pub fn has_port_ranges(&self) -> bool {
        self.port_ranges
    }

    /// Judges a peer address and port: as [`PeerPolicy::check`], with an `allow_peers` entry
    /// limited to ports opening only those.
    pub fn check_port(&self, ip: IpAddr, port: u16) -> Result<(), Refusal> {
        self.judge(ip, Some(port))
    }

    fn judge(&self, ip: IpAddr, port: Option<u16>) -> Result<(), Refusal> {
        if self.is_denied(ip) {
            return Err(Refusal::Denied);
        }
        let norm = normalize(ip);
        if self.allow.iter().any(|r| r.covers(norm, port)) {
            return Ok(());
        }
        match RESERVED.iter().find(|(c, _)| c.contains(norm)) {
            Some((_, name)) => Err(Refusal::Reserved(name)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::testing::ip;

    #[test]
    fn default_refuses_the_issue_matrix() {
        let p = PeerPolicy::default();
        for s in [
            "127.0.0.1",
            "0.0.0.0",
            "10.0.0.1",
            "169.254.169.254",
            "::1",
            "::ffff:127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "192.0.2.1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "64:ff9b:1::1",
            "::ffff:10.1.2.3",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(p.check(ip(s)).is_err(), "{s} should be refused");
        }
    }

    #[test]
    fn default_allows_public_addresses() {
        let p = PeerPolicy::default();
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(p.check(ip(s)), Ok(()), "{s} should be allowed");
        }
    }

    #[test]
    fn refusal_names_the_range() {
        let p = PeerPolicy::default();
        assert_eq!(
            p.check(ip("169.254.169.254")),
            Err(Refusal::Reserved("link-local"))
        );
        assert_eq!(
            p.check(ip("::ffff:127.0.0.1")),
            Err(Refusal::Reserved("loopback"))
        );
    }

    #[test]
    fn allow_opens_and_deny_wins() {
        let p = PeerPolicy::new(
            vec![
                "127.0.0.0/8".parse().unwrap(),
                "10.1.0.0/16".parse().unwrap(),
            ],
            vec!["10.1.2.0/24".parse().unwrap(), "8.8.8.8".parse().unwrap()],
        );
        assert_eq!(p.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(p.check(ip("::ffff:127.0.0.1")), Ok(()));
        assert_eq!(p.check(ip("10.1.9.9")), Ok(()));
        assert_eq!(p.check(ip("10.1.2.3")), Err(Refusal::Denied));
        assert_eq!(p.check(ip("8.8.8.8")), Err(Refusal::Denied));
        assert_eq!(p.check(ip("64:ff9b::808:808")), Err(Refusal::Denied));
        assert!(p.check(ip("10.2.0.1")).is_err());
    }

    #[test]
    fn cidr_parsing() {
        let c: Cidr = "192.168.0.0/16".parse().unwrap();
        assert!(c.contains(ip("192.168.44.1")));
        assert!(!c.contains(ip("192.169.0.1")));
        assert!(!c.contains(ip("::ffff:192.168.0.1")));
        assert_eq!("1.2.3.4".parse::<Cidr>().unwrap().prefix(), 32);
        assert_eq!("::1".parse::<Cidr>().unwrap().prefix(), 128);
        assert_eq!("[::1]/128".parse::<Cidr>().unwrap().prefix(), 128);
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("9.9.9.9")));
        assert!(matches!(
            "10.0.0.1/8".parse::<Cidr>(),
            Err(CidrError::HostBits(..))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::Prefix(_))
        ));
        assert!(matches!(
            "10.0.0/8".parse::<Cidr>(),
            Err(CidrError::Address(_))
        ));
    }

    #[test]
    fn allow_entries_take_a_port_range_on_a_single_address() {
        let r: PeerRange = "10.0.0.5:5000-5100".parse().unwrap();
        assert_eq!(r.net(), "10.0.0.5/32".parse().unwrap());
        assert_eq!(r.ports(), Some(&(5000..=5100)));
        assert_eq!(r.to_string(), "10.0.0.5:5000-5100");
        let r: PeerRange = "[2001:db8::5]:5432".parse().unwrap();
        assert_eq!(r.ports(), Some(&(5432..=5432)));
        assert_eq!(r.to_string(), "[2001:db8::5]:5432-5432");
        for plain in ["10.0.0.0/8", "::1", "[::1]/128", "fd00::/8"] {
            let r: PeerRange = plain.parse().unwrap();
            assert_eq!(r.ports(), None, "{plain}");
        }
        assert!(matches!(
            "10.0.0.0/8:5000".parse::<PeerRange>(),
            Err(CidrError::PortsOnNetwork(_))
        ));
        for bad in [
            "10.0.0.5:0",
            "10.0.0.5:5100-5000",
            "10.0.0.5:x",
            "10.0.0.5:70000",
            "[::1]:",
        ] {
            assert!(
                matches!(bad.parse::<PeerRange>(), Err(CidrError::Ports(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            "10.0.0:5000".parse::<PeerRange>(),
            Err(CidrError::Address(_))
        ));
    }

    #[test]
    fn own_addresses_open_only_through_an_entry_naming_them_or_loopback() {
        let p = |allow: &[&str]| {
            PeerPolicy::new(allow.iter().map(|s| s.parse().unwrap()).collect(), vec![])
        };
        let own = ip("10.0.0.5");
        // The README's example: a range that merely contains the address.
        assert!(!p(&["10.0.0.0/8"]).opens_own(own, Some(5432)));
        assert!(!p(&["0.0.0.0/0"]).opens_own(ip("127.0.0.1"), Some(5432)));
        assert!(!p(&["::/0"]).opens_own(ip("::1"), None));
        // Named alone, on every port or on its range.
        assert!(p(&["10.0.0.5/32"]).opens_own(own, Some(5432)));
        assert!(p(&["10.0.0.5"]).opens_own(own, None));
        let ranged = p(&["10.0.0.5:5000-5100"]);
        assert!(ranged.opens_own(own, Some(5000)) && ranged.opens_own(own, Some(5100)));
        assert!(!ranged.opens_own(own, Some(5432)));
        assert!(
            ranged.opens_own(own, None),
            "some port: a permission is possible"
        );
        // Loopback ranges, as tests on loopback use.
        assert!(p(&["127.0.0.0/8"]).opens_own(ip("127.0.0.1"), Some(5432)));
        assert!(p(&["::1/128"]).opens_own(ip("::1"), Some(5432)));
        assert!(p(&["127.0.0.0/8"]).opens_own(ip("::ffff:127.0.0.1"), Some(1)));
        // Deny still wins.
        let denied = PeerPolicy::new(
            vec!["10.0.0.5/32".parse().unwrap()],
            vec!["10.0.0.0/24".parse().unwrap()],
        );
        assert!(!denied.opens_own(own, Some(5432)));
        // What check-config reports.
        let own_ips = [own, ip("127.0.0.1"), ip("192.168.1.9")];
        let wide: PeerRange = "10.0.0.0/8".parse().unwrap();
        assert_eq!(PeerPolicy::skipped_own(&wide, &own_ips), [own]);
        let lo: PeerRange = "127.0.0.0/8".parse().unwrap();
        assert!(PeerPolicy::skipped_own(&lo, &own_ips).is_empty());
    }

    #[test]
    fn a_port_range_opens_a_reserved_address_on_those_ports_only() {
        let p = PeerPolicy::new(vec!["10.1.2.3:5000-5001".parse().unwrap()], vec![]);
        assert!(p.has_port_ranges());
        assert_eq!(
            p.check(ip("10.1.2.3")),
            Ok(()),
            "permissions are per address"
        );
        assert_eq!(p.check_port(ip("10.1.2.3"), 5001), Ok(()));
        assert_eq!(
            p.check_port(ip("10.1.2.3"), 22),
            Err(Refusal::Reserved("private"))
        );
        assert_eq!(p.check_port(ip("8.8.8.8"), 22), Ok(()));
        assert!(!PeerPolicy::default().has_port_ranges());
    }
}
