//! Channels (RFC 8656 §12): a 4-byte header instead of a 36-byte Send/Data indication.
//!
//! A ChannelBind ties a channel number to one peer transport address for 600 s. RFC 8656
//! numbers channels 0x4000–0x4FFF; RFC 5766 allowed up to 0x7FFF, and clients written to it
//! (coturn's own `turnutils_uclient` among them) still pick numbers there, so those are
//! accepted too: the first two bits of ChannelData (01) cover the whole range, and nothing else
//! on a TURN listener starts with them. While bound, and for 5 minutes after a binding expires, neither the number may be
//! bound to another peer nor the peer to another number (§12.2): a rebinding to the same pair
//! refreshes it, anything else is 400.

use std::net::SocketAddr;
use std::time::Duration;

use super::Time;

/// The first channel number (RFC 8656 §12).
pub const CHANNEL_MIN: u16 = 0x4000;
/// The last channel number accepted: RFC 5766's, a superset of RFC 8656's 0x4FFF.
pub const CHANNEL_MAX: u16 = 0x7FFF;
/// How long an expired binding still blocks its number and peer (RFC 8656 §12.2).
pub const COOLDOWN: Duration = Duration::from_secs(300);

/// Why a ChannelBind was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BindError {
    /// The number or the peer is (or was, within the cooldown) bound to something else.
    Conflict,
    /// The allocation already holds its maximum of bindings.
    Full,
}

#[derive(Clone, Copy, Debug)]
struct Binding {
    number: u16,
    peer: SocketAddr,
    expires: Time,
}

/// The channel bindings of one allocation; few per allocation, scanned linearly.
#[derive(Debug, Default)]
pub(crate) struct Channels {
    list: Vec<Binding>,
}

impl Channels {
    /// Binds or refreshes `number` ↔ `peer` until `expires`.
    pub(crate) fn bind(
        &mut self,
        number: u16,
        peer: SocketAddr,
        now: Time,
        expires: Time,
        max: usize,
    ) -> Result<(), BindError> {
        let blocking = |b: &Binding| b.expires + COOLDOWN > now;
        for b in &self.list {
            let same_number = b.number == number;
            let same_peer = b.peer == peer;
            if same_number != same_peer && blocking(b) {
                return Err(BindError::Conflict);
            }
        }
        if let Some(b) = self
            .list
            .iter_mut()
            .find(|b| b.number == number && b.peer == peer)
        {
            b.expires = expires;
            return Ok(());
        }
        self.list.retain(blocking);
        if self.list.len() >= max {
            return Err(BindError::Full);
        }
        self.list.push(Binding {
            number,
            peer,
            expires,
        });
        Ok(())
    }

    /// The peer bound to `number` at `now`.
    #[inline]
    pub(crate) fn peer(&self, number: u16, now: Time) -> Option<SocketAddr> {
        self.live(now).find(|b| b.number == number).map(|b| b.peer)
    }

    /// The number bound to `peer` at `now`.
    #[inline]
    pub(crate) fn number(&self, peer: SocketAddr, now: Time) -> Option<u16> {
        self.live(now).find(|b| b.peer == peer).map(|b| b.number)
    }

    /// The bindings in force at `now` (not those expired, in their cooldown or not).
    #[inline]
    fn live(&self, now: Time) -> impl Iterator<Item = &Binding> {
        self.list.iter().filter(move |b| b.expires > now)
    }

    /// Forgets bindings whose cooldown has passed.
    pub(crate) fn prune(&mut self, now: Time) {
        self.list.retain(|b| b.expires + COOLDOWN > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::testing::addr;

    const T0: Time = Time::from_unix_secs(1000);
    /// A binding's lifetime (RFC 8656 §12).
    const TTL: Duration = Duration::from_secs(600);

    #[test]
    fn bind_refresh_and_conflicts() {
        let (p1, p2) = (addr("198.51.100.1:5000"), addr("198.51.100.1:5001"));
        let mut c = Channels::default();
        assert_eq!(c.bind(0x4000, p1, T0, T0 + TTL, 8), Ok(()));
        assert_eq!(c.peer(0x4000, T0), Some(p1));
        assert_eq!(c.number(p1, T0), Some(0x4000));
        // Same pair: refresh.
        assert_eq!(c.bind(0x4000, p1, T0, T0 + TTL * 2, 8), Ok(()));
        assert_eq!(c.list.len(), 1);
        // Number to another peer, or peer to another number: conflict.
        assert_eq!(
            c.bind(0x4000, p2, T0, T0 + TTL, 8),
            Err(BindError::Conflict)
        );
        assert_eq!(
            c.bind(0x4001, p1, T0, T0 + TTL, 8),
            Err(BindError::Conflict)
        );
        assert_eq!(c.bind(0x4001, p2, T0, T0 + TTL, 8), Ok(()));
    }

    #[test]
    fn expired_binding_blocks_for_the_cooldown() {
        let (p1, p2) = (addr("198.51.100.1:5000"), addr("198.51.100.2:5000"));
        let mut c = Channels::default();
        c.bind(0x4000, p1, T0, T0 + TTL, 8).unwrap();
        let expired = T0 + TTL;
        assert_eq!(c.peer(0x4000, expired), None, "no data after expiry");
        assert_eq!(
            c.bind(0x4000, p2, expired, expired + TTL, 8),
            Err(BindError::Conflict)
        );
        let after = expired + COOLDOWN;
        assert_eq!(c.bind(0x4000, p2, after, after + TTL, 8), Ok(()));
        assert_eq!(c.peer(0x4000, after), Some(p2));
    }

    #[test]
    fn bounded() {
        let mut c = Channels::default();
        for i in 0..4u16 {
            let p = addr(&format!("198.51.100.1:{}", 6000 + i));
            c.bind(0x4000 + i, p, T0, T0 + TTL, 4).unwrap();
        }
        let p = addr("198.51.100.1:7000");
        assert_eq!(c.bind(0x4100, p, T0, T0 + TTL, 4), Err(BindError::Full));
    }
}
