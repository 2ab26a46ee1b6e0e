//! The active speaker of each room, told from the audio level its publishers' packets carry
//! (RFC 6464's header extension, which browsers put on their Opus packets): no audio decoded.
//!
//! Each publisher's level is smoothed over its packets (about 200 ms at 50 packets a second);
//! every [`DECIDE_EVERY`] of a room's audio the loudest one at speech level becomes the
//! room's active speaker, unless the current one still speaks and is less than [`MARGIN`]
//! quieter: a cough or a laugh does not move the focus, and two people talking over each other
//! do not make it flicker.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// How often a room's active speaker is looked at.
pub const DECIDE_EVERY: Duration = Duration::from_millis(300);
/// The weight of a packet's level in a publisher's smoothed one.
const SMOOTHING: f32 = 0.1;
/// Loudness (dB above -127 dBov) from which someone is speaking: -50 dBov.
const SPEECH: f32 = 77.0;
/// How much louder than a current speaker who still speaks another must be to take over.
const MARGIN: f32 = 6.0;
/// A publisher with no audio for this long is silent (muted, or its packets lost).
const SILENT_AFTER: Duration = Duration::from_millis(500);

#[derive(Default)]
pub struct Speakers {
    rooms: HashMap<Uuid, Room>,
}

#[derive(Default)]
struct Room {
    levels: HashMap<Uuid, Level>,
    current: Option<Uuid>,
    next: Option<Instant>,
}

struct Level {
    smoothed: f32,
    at: Instant,
}

impl Speakers {
    /// An audio packet of `user`'s in `room` at `level` dBov (-127 to 0). Returns the room's
    /// new active speaker when this changes it.
    pub fn heard(&mut self, room: Uuid, user: Uuid, level: i8, now: Instant) -> Option<Uuid> {
        let loudness = 127.0 + f32::from(level.clamp(-127, 0));
        let r = self.rooms.entry(room).or_default();
        let l = r.levels.entry(user).or_insert(Level {
            smoothed: 0.0,
            at: now,
        });
        l.smoothed += SMOOTHING * (loudness - l.smoothed);
        l.at = now;
        if r.next.is_some_and(|t| now < t) {
            return None;
        }
        r.next = Some(now + DECIDE_EVERY);
        r.decide(now)
    }

    /// The room's active speaker, if any.
    pub fn current(&self, room: Uuid) -> Option<Uuid> {
        self.rooms.get(&room)?.current
    }

    /// `user` is no longer in `room`.
    pub fn left(&mut self, room: Uuid, user: Uuid) {
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        r.levels.remove(&user);
        if r.current == Some(user) {
            r.current = None;
        }
        if r.levels.is_empty() {
            self.rooms.remove(&room);
        }
    }
}

impl Room {
    fn decide(&mut self, now: Instant) -> Option<Uuid> {
        let level = |user: &Uuid| {
            self.levels
                .get(user)
                .filter(|l| now.saturating_duration_since(l.at) < SILENT_AFTER)
                .map_or(0.0, |l| l.smoothed)
        };
        let (loudest, top) = self
            .levels
            .keys()
            .map(|u| (*u, level(u)))
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        if top < SPEECH || Some(loudest) == self.current {
            return None;
        }
        if let Some(current) = self.current {
            let theirs = level(&current);
            if theirs >= SPEECH && top < theirs + MARGIN {
                return None;
            }
        }
        self.current = Some(loudest);
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKET: Duration = Duration::from_millis(20);

    /// Feeds `secs` of packets at the given levels, one per user per 20 ms; the changes seen.
    fn talk(
        s: &mut Speakers,
        room: Uuid,
        t: &mut Instant,
        levels: &[(Uuid, i8)],
        secs: f32,
    ) -> Vec<Uuid> {
        let mut changes = Vec::new();
        for _ in 0..(secs / PACKET.as_secs_f32()) as usize {
            *t += PACKET;
            for &(user, level) in levels {
                changes.extend(s.heard(room, user, level, *t));
            }
        }
        changes
    }

    #[test]
    fn the_loudest_speaker_is_active_and_holds_against_a_slightly_louder_one() {
        let [room, a, b, c] = [(); 4].map(|()| Uuid::new_v4());
        let mut s = Speakers::default();
        let mut t = Instant::now();
        // Silence (background noise at -70 dBov) names nobody.
        assert!(talk(&mut s, room, &mut t, &[(a, -70), (b, -72), (c, -75)], 2.0).is_empty());
        // A speaks: A, once.
        assert_eq!(
            talk(&mut s, room, &mut t, &[(a, -25), (b, -72), (c, -75)], 2.0),
            [a]
        );
        // B talks over A, 3 dB louder: A holds the focus.
        assert!(talk(&mut s, room, &mut t, &[(a, -25), (b, -22), (c, -75)], 2.0).is_empty());
        // A stops: B.
        assert_eq!(
            talk(&mut s, room, &mut t, &[(a, -70), (b, -22), (c, -75)], 2.0),
            [b]
        );
        // C, 10 dB louder than B who goes on: C.
        assert_eq!(
            talk(&mut s, room, &mut t, &[(a, -70), (b, -22), (c, -12)], 2.0),
            [c]
        );
        assert_eq!(s.current(room), Some(c));
        // C mutes (no packets at all): B, still speaking, after the silence is noticed.
        assert_eq!(talk(&mut s, room, &mut t, &[(a, -70), (b, -22)], 2.0), [b]);
        // B leaves: nobody until someone speaks.
        s.left(room, b);
        assert_eq!(s.current(room), None);
        assert!(talk(&mut s, room, &mut t, &[(a, -70)], 1.0).is_empty());
    }

    #[test]
    fn rooms_are_apart_and_forgotten_when_empty() {
        let [r1, r2, a, b] = [(); 4].map(|()| Uuid::new_v4());
        let mut s = Speakers::default();
        let mut t = Instant::now();
        assert_eq!(talk(&mut s, r1, &mut t, &[(a, -20)], 1.0), [a]);
        assert_eq!(talk(&mut s, r2, &mut t, &[(b, -30)], 1.0), [b]);
        assert_eq!((s.current(r1), s.current(r2)), (Some(a), Some(b)));
        s.left(r1, a);
        s.left(r2, b);
        assert!(s.rooms.is_empty());
    }
}
