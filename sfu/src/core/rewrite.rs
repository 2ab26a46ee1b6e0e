//! One subscriber's view of one published video or audio track: which simulcast layer it gets,
//! and the sequence numbers and timestamps it sees.
//!
//! Each simulcast layer is an RTP stream of its own (its own SSRC, sequence numbers and
//! timestamp base), while a subscriber gets one stream per track. Switching layers therefore
//! waits for a key frame on the new layer, then shifts the new layer's numbers so that they
//! carry on from the last ones sent: the subscriber sees one stream with no gap in sequence
//! numbers (a gap would be NACKed for packets that never existed) and time moving on by the
//! time that passed.

use std::time::{Duration, Instant};

/// What to do with a packet of the track for this subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it with these numbers.
    Forward { seq: u64, time: u32 },
    /// Not for this subscriber (another layer, or the new layer before its key frame).
    Drop,
}

/// The rewriting state of one (subscriber, track) pair. `L` names a layer (a simulcast rid,
/// or `()` for a track without simulcast).
#[derive(Debug)]
pub struct Rewriter<L> {
    /// The layer being forwarded, once one is.
    current: Option<L>,
    /// The layer wanted; forwarding moves to it at its next key frame.
    target: Option<L>,
    /// Added to a packet's extended sequence number (wrapping).
    seq_offset: u64,
    /// Added to a packet's RTP timestamp (wrapping).
    time_offset: u32,
    /// The first sequence number of the current layer that was forwarded: older packets of it
    /// (reordered around the switch) would collide with the previous layer's numbers.
    since: u64,
    last: Option<Sent>,
    clock_rate: u32,
}

#[derive(Clone, Copy, Debug)]
struct Sent {
    seq: u64,
    time: u32,
    at: Instant,
}

impl<L: Copy + PartialEq> Rewriter<L> {
    pub fn new(clock_rate: u32) -> Self {
        Rewriter {
            current: None,
            target: None,
            seq_offset: 0,
            time_offset: 0,
            since: 0,
            last: None,
            clock_rate: clock_rate.max(1),
        }
    }

    /// The layer forwarded now.
    pub fn current(&self) -> Option<L> {
        self.current
    }

    /// The layer wanted.
    pub fn target(&self) -> Option<L> {
        self.target
    }

    /// Asks for `layer` from its next key frame on (`None`: stop forwarding). Returns whether
    /// this is a change that needs a key frame from the publisher.
    pub fn want(&mut self, layer: Option<L>) -> bool {
        let changed = self.target != layer;
        self.target = layer;
        if layer.is_none() {
            self.current = None;
        }
        changed && layer.is_some() && layer != self.current
    }

    /// A packet of `layer` with extended sequence number `seq` and RTP time `time`, arrived
    /// `at`; `key` if it starts a key frame. Audio and single-layer video pass `key = true` for
    /// the first packet (there is nothing to wait for).
    pub fn packet(&mut self, layer: L, seq: u64, time: u32, key: bool, at: Instant) -> Verdict {
        if Some(layer) != self.current {
            if Some(layer) != self.target || !key {
                return Verdict::Drop;
            }
            self.switch_to(layer, seq, time, at);
        } else if seq < self.since {
            return Verdict::Drop;
        }
        let out = Sent {
            seq: seq.wrapping_add(self.seq_offset),
            time: time.wrapping_add(self.time_offset),
            at,
        };
        if self.last.is_none_or(|l| out.seq > l.seq) {
            self.last = Some(out);
        }
        Verdict::Forward {
            seq: out.seq,
            time: out.time,
        }
    }

    fn switch_to(&mut self, layer: L, seq: u64, time: u32, at: Instant) {
        match self.last {
            // The first packet: the subscriber's stream starts at this packet's 16-bit number
            // (rollover count 0, which SRTP needs) and time.
            None => {
                self.seq_offset = (seq & 0xffff).wrapping_sub(seq);
                self.time_offset = 0;
            }
            // Carry on from the last packet sent, by the time that passed since (at least one
            // tick, so time never stands still across a switch).
            Some(last) => {
                let elapsed = at.saturating_duration_since(last.at);
                let ticks = ticks(elapsed, self.clock_rate).max(1);
                self.seq_offset = (last.seq + 1).wrapping_sub(seq);
                self.time_offset = last.time.wrapping_add(ticks).wrapping_sub(time);
            }
        }
        self.current = Some(layer);
        self.since = seq;
    }
}

fn ticks(d: Duration, clock_rate: u32) -> u32 {
    let t = d.as_micros() * u128::from(clock_rate) / 1_000_000;
    u32::try_from(t).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::{Rewriter, Verdict};
    use std::time::{Duration, Instant};

    fn fwd(v: Verdict) -> (u64, u32) {
        match v {
            Verdict::Forward { seq, time } => (seq, time),
            Verdict::Drop => panic!("dropped"),
        }
    }

    #[test]
    fn a_single_layer_passes_unchanged_from_its_first_packet() {
        let t0 = Instant::now();
        let mut r = Rewriter::<()>::new(48_000);
        assert!(r.want(Some(())));
        assert_eq!(fwd(r.packet((), 1000, 5000, true, t0)), (1000, 5000));
        assert_eq!(fwd(r.packet((), 1002, 6920, false, t0)), (1002, 6920));
        // Reordered within the layer: kept, with its own number.
        assert_eq!(fwd(r.packet((), 1001, 5960, false, t0)), (1001, 5960));
        // From before the first packet sent: dropped, the subscriber's stream starts later.
        assert_eq!(r.packet((), 999, 4040, false, t0), Verdict::Drop);
    }

    #[test]
    fn the_first_packet_starts_the_stream_at_rollover_zero() {
        let t0 = Instant::now();
        let mut r = Rewriter::<()>::new(90_000);
        r.want(Some(()));
        // A publisher that has sent 70,000 packets: its extended number has rolled over once.
        let (seq, _) = fwd(r.packet((), 70_000, 1, true, t0));
        assert_eq!(seq, 70_000 & 0xffff);
        assert_eq!(fwd(r.packet((), 70_001, 2, false, t0)).0, seq + 1);
    }

    #[test]
    fn a_layer_switch_waits_for_a_key_frame_and_continues_the_numbers() {
        let t0 = Instant::now();
        let mut r = Rewriter::<u8>::new(90_000);
        assert!(r.want(Some(0)));
        // Nothing before the wanted layer's key frame.
        assert_eq!(r.packet(0, 10, 100, false, t0), Verdict::Drop);
        assert_eq!(r.packet(1, 500, 9_000, true, t0), Verdict::Drop);
        assert_eq!(fwd(r.packet(0, 11, 100, true, t0)), (11, 100));
        assert_eq!(fwd(r.packet(0, 12, 3100, false, t0)), (12, 3100));

        // Up to layer 1: layer 0 goes on until layer 1's key frame.
        assert!(r.want(Some(1)));
        assert!(!r.want(Some(1)), "asked again: no new key frame request");
        assert_eq!(r.packet(1, 501, 12_000, false, t0), Verdict::Drop);
        assert_eq!(fwd(r.packet(0, 13, 6100, false, t0)), (13, 6100));
        let later = t0 + Duration::from_millis(20);
        // 20 ms at 90 kHz is 1,800 ticks after the last time sent.
        assert_eq!(fwd(r.packet(1, 502, 15_000, true, later)), (14, 7900));
        assert_eq!(fwd(r.packet(1, 503, 18_000, false, later)), (15, 10_900));
        assert_eq!(r.current(), Some(1));
        // Layer 0's stragglers, and layer 1's packets from before the switch, are dropped.
        assert_eq!(r.packet(0, 14, 9100, false, later), Verdict::Drop);
        assert_eq!(r.packet(1, 501, 12_000, false, later), Verdict::Drop);
    }

    /// A video rewriter forwarding layer 0 since its key frame, packet 1 at `time`.
    fn forwarding_layer_0(time: u32, t0: Instant) -> Rewriter<u8> {
        let mut r = Rewriter::<u8>::new(90_000);
        r.want(Some(0));
        fwd(r.packet(0, 1, time, true, t0));
        r
    }

    #[test]
    fn time_never_stands_still_across_a_switch() {
        let t0 = Instant::now();
        let mut r = forwarding_layer_0(1000, t0);
        r.want(Some(2));
        // The new layer's key frame arrives in the same instant.
        let (seq, time) = fwd(r.packet(2, 77, 555, true, t0));
        assert_eq!((seq, time), (2, 1001));
    }

    #[test]
    fn wanting_nothing_stops_the_track_until_asked_again() {
        let t0 = Instant::now();
        let mut r = forwarding_layer_0(0, t0);
        assert!(!r.want(None));
        assert_eq!(r.packet(0, 2, 3000, true, t0), Verdict::Drop);
        assert!(r.want(Some(0)), "resuming needs a key frame");
        assert_eq!(r.packet(0, 3, 6000, false, t0), Verdict::Drop);
        assert_eq!(fwd(r.packet(0, 4, 9000, true, t0)), (2, 1));
    }
}
