//! What the box's network says when the config does not: the address the routing table sends
//! from, and which addresses are private.

use super::*;

/// [`RouteSource`] from the kernel's routing table: the local address of a UDP socket
/// connected to a documentation address (RFC 5737, RFC 3849). Connecting a UDP socket only
/// looks the route up; nothing is sent.
pub(super) fn kernel_route_source(any: IpAddr) -> Option<IpAddr> {
    let probe: SocketAddr = match any {
        IpAddr::V4(_) => (Ipv4Addr::new(192, 0, 2, 1), 9).into(),
        IpAddr::V6(_) => (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9).into(),
    };
    let socket = std::net::UdpSocket::bind((any, 0)).ok()?;
    socket.connect(probe).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// The relay addresses when `turn.relay_ip` is not set, one per IP version `listen` uses: a
/// specific listen address stands for its version; for a wildcard one, the address the routing
/// table sends from, or loopback (with a warning) when there is no route. Also says whether
/// any came from the routing table.
pub(super) fn listen_relay_ips(
    listen: &[SocketAddr],
    route_source: RouteSource,
    warnings: &mut Vec<Warning>,
) -> (Vec<IpAddr>, bool) {
    let mut ips: Vec<IpAddr> = Vec::new();
    let mut detected = false;
    let specific = listen.iter().filter(|a| !a.ip().is_unspecified());
    let wildcard = listen.iter().filter(|a| a.ip().is_unspecified());
    for addr in specific.chain(wildcard) {
        let any = addr.ip();
        if ips.iter().any(|i| i.is_ipv4() == any.is_ipv4()) {
            continue;
        }
        if !any.is_unspecified() {
            ips.push(any);
            continue;
        }
        let ip = route_source(any).unwrap_or_else(|| {
            let (version, loopback) = match any {
                IpAddr::V4(_) => ("IPv4", IpAddr::from(Ipv4Addr::LOCALHOST)),
                IpAddr::V6(_) => ("IPv6", IpAddr::from(Ipv6Addr::LOCALHOST)),
            };
            warnings.push(Warning::unreachable(
                "turn.relay_ip",
                format!(
                    "not set, and this box has no {version} route to take its address from \
                     (turn.listen binds {any}): relaying on {loopback}, which only this box \
                     reaches; set turn.relay_ip to this box's address"
                ),
            ));
            loopback
        });
        detected = true;
        ips.push(ip);
    }
    (ips, detected)
}

/// RFC 1918, CGNAT (RFC 6598) and IPv6 unique-local addresses: reachable only inside a network.
pub(super) fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => v6.segments()[0] & 0xfe00 == 0xfc00,
    }
}
