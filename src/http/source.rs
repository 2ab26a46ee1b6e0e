//! Who a connection comes from: its source (the peer's address, or for a connection from a
//! trusted reverse proxy the client the proxy names), and the per-source cap on open
//! connections (`http.max_connections_per_source`).
//!
//! A source is an IPv4 address or an IPv6 /64: a host is usually given a whole /64, so
//! counting IPv6 addresses one by one would cap nobody.
//!
//! Behind a reverse proxy every connection comes from the proxy. When the peer is inside
//! `http.trusted_proxies`, the client is read from the proxy's `X-Forwarded-For` (or, without
//! one, `Forwarded`): the rightmost hop that is not itself a trusted proxy, since each proxy
//! appends the address it got the request from and everything to the left of what the
//! nearest trusted proxy wrote is the client's to make up. From any other peer these headers
//! are ignored.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::header::{HeaderMap, FORWARDED};
use switchboard_turn::policy::Cidr;

/// What connections are counted by: an IPv4 address, or an IPv6 address's /64 (the same
/// source `/socket.io/` counts its pending sessions by).
pub use switchboard_signaling::source::Source;

/// The open connections of each source, each at most `cap`.
#[derive(Debug)]
pub struct Sources {
    cap: u32,
    open: Mutex<HashMap<Source, u32>>,
}

impl Sources {
    pub fn new(cap: u32) -> Arc<Sources> {
        Arc::new(Sources {
            cap,
            open: Mutex::new(HashMap::new()),
        })
    }

    pub fn cap(&self) -> u32 {
        self.cap
    }

    /// One more connection of `source`: `None` if it has `cap` open already.
    pub fn open(self: &Arc<Self>, source: Source) -> Option<SourceSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(source).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: self.clone(),
            source,
        })
    }
}

/// One open connection of a source, counted until dropped.
#[derive(Debug)]
pub struct SourceSlot {
    sources: Arc<Sources>,
    source: Source,
}

impl SourceSlot {
    pub fn source(&self) -> Source {
        self.source
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self
            .sources
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.source);
            }
        }
    }
}

/// `http.trusted_proxies`: the peers whose forwarding headers are believed.
#[derive(Debug, Default)]
pub struct Proxies(Vec<Cidr>);

impl Proxies {
    pub fn new(ranges: Vec<Cidr>) -> Proxies {
        Proxies(ranges)
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client of a request that came from `peer`, a trusted proxy, with `headers`: the
    /// rightmost hop of `X-Forwarded-For` (or, without one, `Forwarded`) that is not a
    /// trusted proxy; the leftmost if all are; `peer` without either header. A hop that is
    /// not an address (`unknown`, an obfuscated name, garbage) ends the walk at the trusted
    /// hop to its right: nothing further left can be believed.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let xff = headers.get_all("x-forwarded-for");
        let hops: Vec<Option<IpAddr>> = if xff.iter().next().is_some() {
            xff.iter()
                .flat_map(|v| match v.to_str() {
                    Ok(v) => v.split(',').map(forwarded_for_hop).collect(),
                    Err(_) => vec![None],
                })
                .collect()
        } else {
            headers
                .get_all(FORWARDED)
                .iter()
                .flat_map(|v| match v.to_str() {
                    Ok(v) => v.split(',').map(forwarded_element).collect(),
                    Err(_) => vec![None],
                })
                .collect()
        };
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            let Some(ip) = hop else { break };
            client = ip.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` hop: an address, with a port or not (`192.0.2.1:1234`,
/// `[2001:db8::1]:1234`).
fn forwarded_for_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            hop.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<IpAddr>()
                .ok()
        })
}

/// The `for=` of one `Forwarded` element (RFC 7239: `for=192.0.2.1;proto=https`,
/// `for="[2001:db8::1]:4711"`); `None` without one or when it is not an address.
fn forwarded_element(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| forwarded_for_hop(value))?
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(list: &[&str]) -> Proxies {
        Proxies::new(list.iter().map(|c| c.parse().unwrap()).collect())
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn a_source_gets_cap_slots_and_they_come_back_when_dropped() {
        let sources = Sources::new(2);
        let a = Source::of(ip("192.0.2.1"));
        let b = Source::of(ip("192.0.2.2"));
        let first = sources.open(a).unwrap();
        let _second = sources.open(a).unwrap();
        assert!(sources.open(a).is_none());
        assert!(sources.open(b).is_some());
        drop(first);
        assert!(sources.open(a).is_some());
    }

    #[test]
    fn the_client_is_the_rightmost_hop_not_a_trusted_proxy() {
        let p = proxies(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        let client = |h: &[(&'static str, &'static str)]| p.client(peer, &headers(h));
        // The client's own claim (left) is not believed.
        let xff = "198.51.100.9, 203.0.113.5, 10.0.0.7";
        assert_eq!(client(&[("x-forwarded-for", xff)]), ip("203.0.113.5"));
        // Several lines are one list, in order.
        let lines = [
            ("x-forwarded-for", "198.51.100.9"),
            ("x-forwarded-for", "203.0.113.5:5555"),
        ];
        assert_eq!(client(&lines), ip("203.0.113.5"));
        // All trusted: the leftmost.
        let all = [("x-forwarded-for", "10.1.1.1, 10.2.2.2")];
        assert_eq!(client(&all), ip("10.1.1.1"));
        // Garbage ends the walk at the trusted hop to its right.
        let garbage = [("x-forwarded-for", "203.0.113.5, nonsense, 10.2.2.2")];
        assert_eq!(client(&garbage), ip("10.2.2.2"));
        // No header: the peer.
        assert_eq!(client(&[]), peer);
        // Forwarded, when there is no X-Forwarded-For.
        let fwd = [(
            "forwarded",
            "for=198.51.100.9, for=\"[2001:db8::5]:4711\";proto=https, For=10.0.0.7",
        )];
        assert_eq!(client(&fwd), ip("2001:db8::5"));
        let both = [
            ("forwarded", "for=198.51.100.9"),
            ("x-forwarded-for", "203.0.113.5"),
        ];
        assert_eq!(client(&both), ip("203.0.113.5"));
        assert_eq!(client(&[("forwarded", "for=unknown")]), peer);
    }
}
