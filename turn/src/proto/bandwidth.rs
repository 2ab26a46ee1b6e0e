//! Bandwidth caps (coturn's `max-bps` and `bps-capacity`): relayed payload bytes per second,
//! per allocation, per user (summed over the user's allocations) and in total, each a token
//! bucket on the core's [`Time`].
//!
//! What counts is the payload relayed, both ways together: a client's ChannelData or Send
//! toward its peer when the core lets it go, and a peer's datagram toward the client when it
//! arrives (TURN framing is not counted). A datagram passed between two allocations of this
//! relay (the hairpin) is relayed twice, out of one and into the other, and counts for both.
//!
//! A datagram that would take any of its buckets below zero is dropped and takes nothing
//! from the others: TURN has no error for data, so the client sees a lost datagram, as over
//! a congested link, and congestion control (the browser's) backs off. Nothing is queued.
//! The drop is counted on the allocation ([`Usage`](super::Usage)).

use std::time::Duration;

use super::time::Time;

/// The caps, as configured: bytes per second, 0 for none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BandwidthCaps {
    /// One allocation's payload, both ways (`turn.allocation_bandwidth`).
    pub allocation: u64,
    /// The payload of all of one user's allocations (`turn.user_bandwidth`).
    pub user: u64,
    /// The relay's payload (`turn.total_bandwidth`).
    pub total: u64,
    /// How long each cap may be exceeded from a full bucket: a bucket holds `rate × burst`
    /// bytes (`turn.bandwidth_burst`), and at least [`MIN_BUCKET`].
    pub burst: Duration,
}

impl BandwidthCaps {
    /// No cap at all.
    pub const UNLIMITED: BandwidthCaps = BandwidthCaps {
        allocation: 0,
        user: 0,
        total: 0,
        burst: Duration::from_secs(1),
    };
}

/// The smallest bucket: the largest datagram (a 64 KiB ChannelData payload) must be able to
/// pass, however small the cap, or it would never be relayed.
pub const MIN_BUCKET: u64 = 65_536;

/// A cap ready for use: the rate and the bucket's size, both in thousandths of a byte per
/// millisecond's worth, so that a millisecond at any rate adds a whole number.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rate {
    /// Bytes per second: thousandths of a byte per millisecond.
    per_sec: u64,
    /// The bucket's size, in thousandths of a byte.
    capacity_milli: u64,
}

impl Rate {
    /// The cap of `bytes_per_sec` with `burst`, or `None` for 0 (no cap).
    pub(crate) fn new(bytes_per_sec: u64, burst: Duration) -> Option<Rate> {
        if bytes_per_sec == 0 {
            return None;
        }
        let burst_ms = burst.as_millis().min(u128::from(u64::MAX)) as u64;
        let capacity = bytes_per_sec.saturating_mul(burst_ms) / 1000;
        Some(Rate {
            per_sec: bytes_per_sec,
            capacity_milli: capacity.max(MIN_BUCKET).saturating_mul(1000),
        })
    }
}

/// A token bucket of bytes, in thousandths, and when it was last filled. A new one counts
/// from the epoch, so it starts full.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Bucket {
    milli: u64,
    at_ms: u64,
}

impl Bucket {
    /// Fills it for the time since it was last filled (none if time went backwards), and
    /// says whether it holds `len` bytes.
    fn fill(&mut self, rate: &Rate, now: Time, len: u64) -> bool {
        let now_ms = now.unix_millis();
        let elapsed = now_ms.saturating_sub(self.at_ms);
        self.milli = self
            .milli
            .saturating_add(elapsed.saturating_mul(rate.per_sec))
            .min(rate.capacity_milli);
        self.at_ms = self.at_ms.max(now_ms);
        self.milli >= len.saturating_mul(1000)
    }

    fn take(&mut self, len: u64) {
        self.milli = self.milli.saturating_sub(len.saturating_mul(1000));
    }
}

/// Whether `len` bytes fit every bucket with a cap at `now`; if so, each gives them.
pub(crate) fn admit<const N: usize>(
    now: Time,
    len: usize,
    mut buckets: [(Option<&Rate>, &mut Bucket); N],
) -> bool {
    let len = len as u64;
    let mut fits = true;
    for (rate, bucket) in buckets.iter_mut() {
        if let Some(rate) = rate {
            fits &= bucket.fill(rate, now, len);
        }
    }
    if fits {
        for (rate, bucket) in buckets {
            if rate.is_some() {
                bucket.take(len);
            }
        }
    }
    fits
}

/// The three caps of a server, ready for use.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rates {
    pub(crate) allocation: Option<Rate>,
    pub(crate) user: Option<Rate>,
    pub(crate) total: Option<Rate>,
}

impl Rates {
    pub(crate) fn new(caps: &BandwidthCaps) -> Rates {
        Rates {
            allocation: Rate::new(caps.allocation, caps.burst),
            user: Rate::new(caps.user, caps.burst),
            total: Rate::new(caps.total, caps.burst),
        }
    }

    /// Whether no cap is set (then nothing is metered).
    pub(crate) fn unlimited(&self) -> bool {
        self.allocation.is_none() && self.user.is_none() && self.total.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Time = Time::from_unix_secs(1_700_000_000);

    fn at(ms: u64) -> Time {
        Time::from_unix_millis(T0.unix_millis() + ms)
    }

    /// How many of `n` datagrams of 1000 bytes at `now` the bucket lets through.
    fn drain(rate: &Rate, b: &mut Bucket, now: Time, n: usize) -> usize {
        (0..n)
            .filter(|_| admit(now, 1000, [(Some(rate), &mut *b)]))
            .count()
    }

    #[test]
    fn a_full_bucket_then_the_rate() {
        // 100 kB/s for half a second: 50 kB, raised to the 64 KiB floor.
        let rate = Rate::new(100_000, Duration::from_millis(500)).unwrap();
        let mut b = Bucket::default();
        assert_eq!(drain(&rate, &mut b, T0, 100), 65);
        // 10 ms later, 1000 bytes more (and 536 left over from the burst); 1 ms after, 100.
        assert!(admit(at(10), 1000, [(Some(&rate), &mut b)]));
        assert!(!admit(at(10), 1000, [(Some(&rate), &mut b)]));
        assert!(admit(at(11), 636, [(Some(&rate), &mut b)]));
        assert!(!admit(at(11), 1, [(Some(&rate), &mut b)]));
        // Time going backwards gives nothing back.
        assert!(!admit(T0, 1, [(Some(&rate), &mut b)]));
        // An idle bucket fills up to its size, not beyond.
        assert_eq!(drain(&rate, &mut b, at(60_000), 200), 65);
    }

    #[test]
    fn the_burst_sets_the_bucket_size() {
        let rate = Rate::new(1_000_000, Duration::from_secs(2)).unwrap();
        assert_eq!(drain(&rate, &mut Bucket::default(), T0, 3000), 2000);
    }

    #[test]
    fn a_datagram_over_one_cap_takes_nothing_from_the_others() {
        let small = Rate::new(1, Duration::from_secs(1)).unwrap();
        let large = Rate::new(1_000_000, Duration::from_secs(1)).unwrap();
        let (mut a, mut b) = (Bucket::default(), Bucket::default());
        assert!(admit(
            T0,
            60_000,
            [(Some(&small), &mut a), (Some(&large), &mut b)]
        ));
        assert!(!admit(
            T0,
            10_000,
            [(Some(&small), &mut a), (Some(&large), &mut b)]
        ));
        // `large` gave 60,000 and no more: 940,000 left.
        assert!(admit(T0, 940_000, [(None, &mut a), (Some(&large), &mut b)]));
        assert!(!admit(T0, 1, [(None, &mut a), (Some(&large), &mut b)]));
    }

    #[test]
    fn no_cap_admits_everything_and_extremes_saturate() {
        let mut b = Bucket::default();
        assert!(admit(T0, 65_535, [(None, &mut b)]));
        assert!(Rate::new(0, Duration::from_secs(1)).is_none());
        let huge = Rate::new(u64::MAX, Duration::MAX).unwrap();
        assert!(
            !admit(T0, usize::MAX, [(Some(&huge), &mut b)]),
            "more than it holds"
        );
        assert!(admit(T0, 65_535, [(Some(&huge), &mut Bucket::default())]));
    }
}
