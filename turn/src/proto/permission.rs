//! Permissions (RFC 8656 §9): which peer IP addresses may exchange data with an allocation.
//!
//! A permission is for an IP address, not a port, and lasts 300 s unless refreshed by another
//! CreatePermission or ChannelBind. Data from a peer without one is dropped silently; so is a
//! Send or ChannelData toward it.

use std::net::IpAddr;

use super::Time;

/// The permissions of one allocation. A handful per allocation in practice (one per peer in a
/// call), so a vector scanned linearly beats a map in both time and memory.
#[derive(Debug, Default)]
pub(crate) struct Permissions {
    list: Vec<(IpAddr, Time)>,
}

impl Permissions {
    /// Whether `ip` has an unexpired permission at `now`.
    #[inline]
    pub(crate) fn allows(&self, ip: IpAddr, now: Time) -> bool {
        self.list.iter().any(|&(p, exp)| p == ip && exp > now)
    }

    /// Whether installing all of `ips` would fit within `max` permissions.
    pub(crate) fn fits(&self, ips: &[IpAddr], now: Time, max: usize) -> bool {
        let live = self.list.iter().filter(|(_, exp)| *exp > now).count();
        let new = ips
            .iter()
            .enumerate()
            .filter(|&(i, ip)| !self.allows(*ip, now) && !ips[..i].contains(ip))
            .count();
        live + new <= max
    }

    /// Installs or refreshes the permission for `ip` until `expires`.
    pub(crate) fn install(&mut self, ip: IpAddr, expires: Time) {
        match self.list.iter_mut().find(|(p, _)| *p == ip) {
            Some(entry) => entry.1 = expires,
            None => self.list.push((ip, expires)),
        }
    }

    /// Drops expired permissions.
    pub(crate) fn prune(&mut self, now: Time) {
        self.list.retain(|&(_, exp)| exp > now);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::testing::ip;
    use std::time::Duration;

    const T0: Time = Time::from_unix_secs(1000);

    /// `secs` after [`T0`].
    fn at(secs: u64) -> Time {
        T0 + Duration::from_secs(secs)
    }

    #[test]
    fn install_refresh_expire() {
        let (peer, other) = (ip("198.51.100.7"), ip("198.51.100.8"));
        let mut p = Permissions::default();
        assert!(!p.allows(peer, T0));
        p.install(peer, at(300));
        assert!(p.allows(peer, at(299)));
        assert!(!p.allows(other, T0));
        assert!(!p.allows(peer, at(300)));
        p.install(peer, at(600));
        assert!(p.allows(peer, at(599)));
        assert_eq!(p.len(), 1, "refresh does not duplicate");
        p.prune(at(600));
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn fits_counts_only_new_live_addresses() {
        let (a, b) = (ip("198.51.100.1"), ip("198.51.100.2"));
        let mut p = Permissions::default();
        p.install(a, at(300));
        assert!(p.fits(&[a, b], T0, 2));
        assert!(p.fits(&[b, b], T0, 2));
        assert!(!p.fits(&[b], T0, 1));
        assert!(p.fits(&[a], T0, 1));
    }
}
