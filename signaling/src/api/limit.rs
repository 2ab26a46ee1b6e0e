//! Per-user request budgets (`http.user_rate`, `http.user_burst`): a token bucket per user id,
//! taken from by every request a user token authenticates, before the request reaches the
//! store. Every operation is a job on the single store thread, which also answers the
//! watchdog's and `/readyz`'s pings: without a budget one user's flood would queue ahead of
//! them and of every other user. Over budget, a request is answered 429 with `Retry-After`.
//!
//! Buckets are kept for users that authenticated (a valid token each), and those that have
//! refilled to full are dropped whenever the map has doubled since the last sweep, so idle
//! users cost nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// `http.user_rate` and `http.user_burst` when not set: a client's page load makes a handful
/// of requests, a busy one a few per second.
pub const DEFAULT_RATE: u32 = 20;
pub const DEFAULT_BURST: u32 = 40;

/// Per-user token buckets.
#[derive(Debug)]
pub struct UserLimits {
    /// Tokens added per second.
    rate: f64,
    /// The most tokens a bucket holds (requests in a burst).
    burst: f64,
    buckets: Mutex<Buckets>,
}

#[derive(Debug, Default)]
struct Buckets {
    map: HashMap<Uuid, Bucket>,
    /// The map's size after the last sweep.
    swept: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Default for UserLimits {
    fn default() -> Self {
        UserLimits::new(DEFAULT_RATE, DEFAULT_BURST)
    }
}

impl UserLimits {
    /// `rate` requests a second per user, `burst` at once (both at least 1).
    pub fn new(rate: u32, burst: u32) -> UserLimits {
        UserLimits {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes one request from `user`'s budget at `now`; over it, how long until one is left.
    pub fn take(&self, user: Uuid, now: Instant) -> Result<(), Duration> {
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if b.map.len() >= 2 * b.swept.max(1024) {
            let (rate, burst) = (self.rate, self.burst);
            b.map.retain(|_, k| k.refilled(now, rate) < burst);
            b.swept = b.map.len();
        }
        let bucket = b.map.entry(user).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let tokens = bucket.refilled(now, self.rate).min(self.burst);
        bucket.at = now.max(bucket.at);
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Ok(())
        } else {
            bucket.tokens = tokens;
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate))
        }
    }
}

impl Bucket {
    fn refilled(&self, now: Instant, rate: f64) -> f64 {
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_per_user() {
        let limits = UserLimits::new(10, 3);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limits.take(a, t0), Ok(()));
        }
        let wait = limits.take(a, t0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        // Another user's budget is their own.
        assert_eq!(limits.take(b, t0), Ok(()));
        // A tenth of a second later, one more; a second later, no more than the burst.
        assert_eq!(limits.take(a, t0 + Duration::from_millis(100)), Ok(()));
        assert!(limits.take(a, t0 + Duration::from_millis(100)).is_err());
        let t1 = t0 + Duration::from_secs(10);
        for _ in 0..3 {
            assert_eq!(limits.take(a, t1), Ok(()));
        }
        assert!(limits.take(a, t1).is_err());
    }

    #[test]
    fn idle_users_are_forgotten() {
        let limits = UserLimits::new(1000, 1);
        let t0 = Instant::now();
        for i in 0..5000u128 {
            let _ = limits.take(Uuid::from_u128(i + 1), t0 + Duration::from_millis(i as u64));
        }
        // Each refilled a millisecond after its request: the sweeps kept the map small.
        let kept = limits.buckets.lock().unwrap().map.len();
        assert!(kept < 2100, "{kept}");
    }
}
