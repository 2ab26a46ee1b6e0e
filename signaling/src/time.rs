//! Timestamps as the store and the API write them: RFC 3339 UTC with milliseconds
//! (`2025-01-10T14:30:00.000Z`), which sort as text.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time, in milliseconds since the Unix epoch (never before it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const fn from_unix_millis(ms: u64) -> Timestamp {
        Timestamp(ms)
    }

    /// The wall clock, now. Only the service's edges read it; the state machine is handed it.
    pub fn now() -> Timestamp {
        Timestamp::from_system(SystemTime::now())
    }

    pub fn from_system(t: SystemTime) -> Timestamp {
        let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    pub const fn unix_millis(self) -> u64 {
        self.0
    }

    pub const fn unix_seconds(self) -> u64 {
        self.0 / 1000
    }

    /// Whole seconds from `earlier` to `self` (0 if `earlier` is later).
    pub fn seconds_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0) / 1000
    }

    /// Reads the stored form, or any RFC 3339 UTC time (`Z`, with or without a fraction).
    pub fn parse(s: &str) -> Option<Timestamp> {
        humantime::parse_rfc3339(s).ok().map(Timestamp::from_system)
    }
}

/// The wall clock the call service reads: the system's, or one a test sets. Cheap to clone.
#[derive(Clone)]
pub struct Clock(Option<Arc<dyn Fn() -> Timestamp + Send + Sync>>);

impl Clock {
    /// The system's wall clock ([`Timestamp::now`]).
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that reads `now()`: a fixed or a stepped time in tests.
    pub fn new(now: impl Fn() -> Timestamp + Send + Sync + 'static) -> Clock {
        Clock(Some(Arc::new(now)))
    }

    pub fn now(&self) -> Timestamp {
        match &self.0 {
            None => Timestamp::now(),
            Some(now) => now(),
        }
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_none() {
            "Clock::system"
        } else {
            "Clock::new"
        })
    }
}

/// Saturating: a timestamp never wraps.
impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }
}

/// Saturating: never before the epoch.
impl std::ops::Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_sub(ms))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = UNIX_EPOCH + Duration::from_millis(self.0);
        write!(f, "{}", humantime::format_rfc3339_millis(t))
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 UTC time: {s}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_sorts_as_text() {
        let t = Timestamp::from_unix_millis(1_736_519_400_123);
        assert_eq!(t.to_string(), "2025-01-10T14:30:00.123Z");
        assert_eq!(Timestamp::parse(&t.to_string()), Some(t));
        assert_eq!(
            Timestamp::parse("2025-01-10T14:30:00Z"),
            Some(Timestamp::from_unix_millis(1_736_519_400_000))
        );
        assert_eq!(Timestamp::parse("2025-01-10 14:30"), None);
        assert_eq!(Timestamp::parse("yesterday"), None);
        let later = t + Duration::from_millis(877);
        assert!(later.to_string() > t.to_string());
        assert_eq!(later.seconds_since(t), 0);
        assert_eq!((t + Duration::from_secs(120)).seconds_since(t), 120);
        assert_eq!(t.seconds_since(later), 0);
        assert_eq!(
            Timestamp::from_unix_millis(0).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
    }
}
