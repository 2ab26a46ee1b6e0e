//! Time as the core sees it: passed in, never read.

use std::time::Duration;

/// A point in time: milliseconds since the Unix epoch.
///
/// The core never reads a clock. The driver passes `Time` into every `handle_*` call, computed
/// from a monotonic clock anchored to the wall clock once at start, so that it never goes
/// backwards: lifetimes, nonces and timers run on it. A credential's expiry is wall-clock
/// time, which may have been stepped since the start (NTP); it is compared with the wall
/// clock the driver passes in as well ([`Server::handle_wall_clock`](super::Server::handle_wall_clock)).
/// Tests start it at a fixed value and move it by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    /// The instant `millis` milliseconds after the Unix epoch.
    pub const fn from_unix_millis(millis: u64) -> Self {
        Time(millis)
    }

    /// The instant `secs` seconds after the Unix epoch.
    pub const fn from_unix_secs(secs: u64) -> Self {
        Time(secs * 1000)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> u64 {
        self.0
    }

    /// Whole seconds since the Unix epoch.
    pub const fn unix_secs(self) -> u64 {
        self.0 / 1000
    }

    /// How long from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(self.0.saturating_add(millis(d)))
    }
}

impl std::ops::Sub<Duration> for Time {
    type Output = Time;
    fn sub(self, d: Duration) -> Time {
        Time(self.0.saturating_sub(millis(d)))
    }
}

/// `d` in whole milliseconds, at most `u64::MAX`.
fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}
