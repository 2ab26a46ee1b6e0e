//! A per-source limit on the answers any source, spoofed or not, can draw over UDP without
//! credentials: challenges (401, 438), Binding answers, and the 400s and 420s of requests
//! that never authenticated. They are what a reflection attack would use the relay for, so
//! they share one budget per source. (Loopback sources, which no packet from outside can
//! claim, are not limited; nor are TCP and TLS, whose sources completed a handshake.)
//!
//! It keeps no state per source: a fixed table of [`BUCKETS`] token buckets, each source
//! address (an IPv6 one by its /64) mapped to one by a hash keyed with the server's random
//! seed. Its memory is the same whatever the number of sources, a flood of spoofed sources
//! creates nothing, and the worst a collision does is make two sources share one budget.
//! A source over its budget gets no answer, as a lost datagram would; a real client retries
//! (RFC 8489 §6.2.1) and gets its challenge once the bucket refills.

use std::net::IpAddr;

use super::source::Source;
use super::time::Time;

/// Unauthenticated answers a source may draw per second, sustained: far more than clients
/// behind one address need (a Binding or two per ICE gathering, one challenge per
/// allocation, one more per expired nonce).
pub const CHALLENGES_PER_SECOND: u64 = 50;
/// ... and at once.
pub const CHALLENGE_BURST: u64 = 100;
/// Buckets in the table (64 KiB).
pub const BUCKETS: usize = 4096;

/// The table of buckets.
pub struct ChallengeLimiter {
    key: u64,
    buckets: Box<[Bucket]>,
}

/// Tokens in thousandths, and when they were last counted.
#[derive(Clone, Copy, Default)]
struct Bucket {
    milli: u64,
    at_ms: u64,
}

impl ChallengeLimiter {
    /// An empty table (every bucket full). The mapping of sources to buckets is keyed with
    /// `seed` (the server's random seed, hashed), so that nobody can pick colliding sources.
    pub fn new(seed: u64) -> Self {
        ChallengeLimiter {
            key: mix(seed ^ 0x6c69_6d69_745f_6b65),
            buckets: vec![Bucket::default(); BUCKETS].into_boxed_slice(),
        }
    }

    /// Whether `source` may draw one more challenge at `now`; if so it is counted.
    pub fn allow(&mut self, source: IpAddr, now: Time) -> bool {
        let bucket = &mut self.buckets[index(self.key, source)];
        let now_ms = now.unix_millis();
        // A bucket never used counts from the epoch, so it starts full.
        let elapsed = now_ms.saturating_sub(bucket.at_ms);
        bucket.milli = bucket
            .milli
            .saturating_add(elapsed.saturating_mul(CHALLENGES_PER_SECOND))
            .min(CHALLENGE_BURST * 1000);
        bucket.at_ms = bucket.at_ms.max(now_ms);
        if bucket.milli < 1000 {
            return false;
        }
        bucket.milli -= 1000;
        true
    }
}

/// The bucket of `source`: an IPv4 address (mapped ones included) whole, an IPv6 one by its
/// /64, the block one subscriber usually holds.
fn index(key: u64, source: IpAddr) -> usize {
    let bits: u128 = match Source::of(source) {
        Source::V4(v4) => u128::from(u32::from(v4)) | 1 << 64,
        Source::V6Net(net) => u128::from(net) << 64,
    };
    let mixed = mix(key ^ mix(bits as u64) ^ mix((bits >> 64) as u64).rotate_left(17));
    (mixed % BUCKETS as u64) as usize
}

/// SplitMix64's finalizer: every input bit moves every output bit.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::testing::ip;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let mut l = ChallengeLimiter::new(7);
        let t0 = Time::from_unix_secs(1_700_000_000);
        let a = ip("192.0.2.1");
        let burst = (0..200).filter(|_| l.allow(a, t0)).count();
        assert_eq!(burst as u64, CHALLENGE_BURST);
        // A second later, a second's worth; 20 ms later, one more.
        let t1 = Time::from_unix_millis(t0.unix_millis() + 1000);
        let refilled = (0..200).filter(|_| l.allow(a, t1)).count();
        assert_eq!(refilled as u64, CHALLENGES_PER_SECOND);
        let t2 = Time::from_unix_millis(t1.unix_millis() + 20);
        assert!(l.allow(a, t2) && !l.allow(a, t2));
        // Time going backwards gives nothing back.
        assert!(!l.allow(a, t0));
    }

    #[test]
    fn sources_are_counted_apart_and_ipv6_by_its_64() {
        let mut l = ChallengeLimiter::new(7);
        let t = Time::from_unix_secs(1_700_000_000);
        let drain =
            |l: &mut ChallengeLimiter, s: &str| (0..200).filter(|_| l.allow(ip(s), t)).count();
        assert_eq!(drain(&mut l, "192.0.2.1"), 100);
        assert_eq!(drain(&mut l, "192.0.2.2"), 100);
        assert_eq!(
            drain(&mut l, "::ffff:192.0.2.2"),
            0,
            "the same source, mapped"
        );
        assert_eq!(drain(&mut l, "2001:db8:1:2::1"), 100);
        assert_eq!(drain(&mut l, "2001:db8:1:2:ffff::9"), 0, "the same /64");
        assert_eq!(drain(&mut l, "2001:db8:1:3::1"), 100);
    }

    #[test]
    fn the_key_moves_sources_between_buckets() {
        let sources: Vec<IpAddr> = (0..64u8).map(|i| IpAddr::from([10, 0, 0, i])).collect();
        let a: Vec<usize> = sources.iter().map(|s| index(1, *s)).collect();
        let b: Vec<usize> = sources.iter().map(|s| index(2, *s)).collect();
        assert_ne!(a, b);
        // And spreads neighbours: 64 consecutive addresses land in (nearly) 64 buckets.
        let mut distinct = a.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() >= 62, "{} buckets", distinct.len());
    }
}
