//! Which simulcast layer each subscriber gets: the best one, up to the layer it asked for, that
//! fits its downlink.
//!
//! The downlink is str0m's egress bandwidth estimate for the subscriber's connection (TWCC
//! feedback, RFC draft-holmer-rmcat-transport-wide-cc-extensions-01, into Google congestion
//! control's delay- and loss-based estimators). Each published layer's rate is measured here
//! ([`Meter`]). [`allocate`] spends 90% of the estimate: audio first, then every video track's
//! lowest layer (the floor), then better layers one step at a time across the tracks, each up to
//! the layer the subscriber asked for ([`Quality`](super::Quality)). A layer above the one
//! forwarded is taken only if it fits with a further 10% to spare and no layer went up in the
//! last [`UP_EVERY`]; a layer that no longer fits is left at once. Switches go through
//! [`Rewriter::want`](super::rewrite::Rewriter::want): they wait for the new layer's key frame.
//!
//! The floor is the lowest layer, never off: a picture that is late or blocky tells the user
//! the network is bad, a frozen one looks like a failure of the call; and the lowest layer is a
//! small share of any link worth calling on (under 150 kbit/s from browsers).

use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::media::MediaKind;

use super::peer::{Line, PeerId};
use super::Sfu;

/// The share of the estimate spent on media: the rest is left for RTCP, retransmissions and the
/// estimate's own error.
const HEADROOM: f64 = 0.9;
/// A better layer is taken only if it fits with this much more to spare.
const UP_MARGIN: f64 = 0.1;
/// Layers of a subscriber's go up at most this often (they go down at once).
pub(crate) const UP_EVERY: Duration = Duration::from_secs(3);
/// A subscriber's layers are chosen again at most this often, unless it asks for others.
pub(crate) const ALLOCATE_EVERY: Duration = Duration::from_millis(500);
/// Bytes a packet costs on the wire beyond its RTP header and payload: the SRTP tag (10) and
/// UDP/IPv4 (28). Counted so that many small packets (audio) do not look free.
const PACKET_OVERHEAD: u32 = 38;

const BUCKETS: usize = 10;
const BUCKET: Duration = Duration::from_millis(100);

/// The bitrate of one RTP stream over the last second, in buckets of 100 ms: a fixed array,
/// nothing allocated per packet.
#[derive(Clone, Debug, Default)]
pub(crate) struct Meter {
    bytes: [u32; BUCKETS],
    /// Where the bucket counting now starts, and its index.
    start: Option<Instant>,
    head: usize,
    /// When the first packet came: a younger meter divides by less than a second.
    born: Option<Instant>,
}

impl Meter {
    /// A packet of `len` bytes (RTP header and payload) arrived at `now`.
    pub fn add(&mut self, now: Instant, len: usize) {
        self.advance(now);
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let b = &mut self.bytes[self.head];
        *b = b.saturating_add(len.saturating_add(PACKET_OVERHEAD));
    }

    fn advance(&mut self, now: Instant) {
        let Some(start) = self.start else {
            self.start = Some(now);
            self.born = Some(now);
            return;
        };
        let passed = buckets_between(start, now);
        for _ in 0..passed.min(BUCKETS as u32) {
            self.head = (self.head + 1) % BUCKETS;
            self.bytes[self.head] = 0;
        }
        self.start = Some(start + BUCKET * passed);
    }

    /// Bits per second at `now`, over the last second (or since the first packet).
    pub fn rate(&self, now: Instant) -> u64 {
        let (Some(start), Some(born)) = (self.start, self.born) else {
            return 0;
        };
        // The bucket `now` falls in, counted from the newest one filled: those between are
        // empty, and as many of the oldest have left the window.
        let k = buckets_between(start, now) as usize;
        if k >= BUCKETS {
            return 0;
        }
        let bytes: u64 = (0..BUCKETS - k)
            .map(|j| u64::from(self.bytes[(self.head + BUCKETS - j) % BUCKETS]))
            .sum();
        // From the start of the oldest bucket counted to now.
        let covered = now.saturating_duration_since(start) + BUCKET * (BUCKETS - 1 - k) as u32;
        let span = covered.min(now.saturating_duration_since(born)).max(BUCKET);
        bytes * 8 * 1_000_000 / span.as_micros().max(1) as u64
    }
}

fn buckets_between(start: Instant, now: Instant) -> u32 {
    let d = now.saturating_duration_since(start);
    u32::try_from(d.as_nanos() / BUCKET.as_nanos()).unwrap_or(u32::MAX)
}

/// A subscriber's estimate and when its layers last changed.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    /// str0m's last estimate, bits per second.
    pub estimate: Option<u64>,
    /// When layers were last chosen.
    pub chosen_at: Option<Instant>,
    /// When a layer last went up.
    pub raised_at: Option<Instant>,
}

/// One of a subscriber's tracks, as [`allocate`] sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Track {
    /// The measured rate of each of its layers, lowest first, bits per second (one entry for a
    /// track without simulcast). 0: no packet of the layer in the last second.
    pub rates: Vec<u64>,
    /// The best layer the subscriber asked for; `None`: none (off).
    pub ceiling: Option<usize>,
    /// The layer it gets now (or waits for), if any.
    pub current: Option<usize>,
    pub audio: bool,
}

/// What [`allocate`] chose.
#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    /// For each track, its layer; `None`: off.
    pub layers: Vec<Option<usize>>,
    /// The rate of the chosen layers, bits per second.
    pub used: u64,
    /// The rate of the layers asked for: what the estimate should grow to.
    pub desired: u64,
}

impl Track {
    /// Whether layer `i` is sent: a layer of no packets, while another layer of the track has
    /// some, is one the publisher dropped (its own uplink) and would freeze the picture.
    fn flowing(&self, i: usize) -> bool {
        self.rates[i] > 0 || self.rates.iter().all(|r| *r == 0)
    }

    /// The layers it may get, lowest first.
    fn usable(&self) -> impl Iterator<Item = usize> + '_ {
        let top = self.ceiling.map_or(0, |c| (c + 1).min(self.rates.len()));
        (0..top).filter(|i| self.flowing(*i))
    }
}

/// Chooses each track's layer for a subscriber whose estimate is `estimate` bits per second;
/// `may_raise`: whether a layer may go above the current one (see [`UP_EVERY`]).
pub fn allocate(estimate: u64, tracks: &[Track], may_raise: bool) -> Allocation {
    let mut budget = (estimate as f64 * HEADROOM) as i64;
    let mut layers: Vec<Option<usize>> = vec![None; tracks.len()];
    let mut desired = 0;
    // Audio, whatever it costs; then each video track's floor.
    for pass_audio in [true, false] {
        for (i, t) in tracks.iter().enumerate() {
            if t.audio != pass_audio {
                continue;
            }
            let Some(floor) = t.usable().next() else {
                continue;
            };
            layers[i] = Some(floor);
            budget -= t.rates[floor] as i64;
            desired += t.usable().last().map_or(0, |l| t.rates[l]);
        }
    }
    // Then one layer up at a time, across the video tracks, while the next fits.
    loop {
        let mut raised = false;
        for (i, t) in tracks.iter().enumerate() {
            let Some(now) = layers[i].filter(|_| !t.audio) else {
                continue;
            };
            let Some(next) = t.usable().find(|l| *l > now) else {
                continue;
            };
            let above = t.current.is_none_or(|c| next > c);
            if above && !may_raise {
                continue;
            }
            let cost = t.rates[next] as i64 - t.rates[now] as i64;
            let margin = if above {
                (t.rates[next] as f64 * UP_MARGIN) as i64
            } else {
                0
            };
            if cost + margin <= budget {
                budget -= cost;
                layers[i] = Some(next);
                raised = true;
            }
        }
        if !raised {
            break;
        }
    }
    let used = tracks
        .iter()
        .zip(&layers)
        .filter_map(|(t, l)| l.map(|l| t.rates[l]))
        .sum();
    Allocation {
        layers,
        used,
        desired,
    }
}

impl Sfu {
    /// Aims each open subscription of `id` at its layer: the one asked for, or less if the
    /// subscriber's estimate says so; asks publishers for key frames where that changes, and
    /// tells str0m what rate to probe for.
    pub(super) fn start_subscriptions(&mut self, id: PeerId, now: Instant) {
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        // (subscription, its publisher's rids, the track as allocation sees it)
        let mut open = Vec::new();
        for (i, s) in peer.subscriptions.iter().enumerate() {
            if !matches!(s.state, Line::Open(_)) {
                continue;
            }
            let Some(t) = self
                .peers
                .get(&s.publisher)
                .and_then(|p| p.published.iter().find(|t| t.mid == s.source_mid))
            else {
                continue;
            };
            let index = |layer: Option<Option<str0m::media::Rid>>| {
                layer.map(|rid| {
                    rid.and_then(|r| t.rids.iter().position(|x| *x == r))
                        .unwrap_or(0)
                })
            };
            let track = Track {
                rates: t.meters.iter().map(|m| m.rate(now)).collect(),
                ceiling: index(s.quality.pick(&t.rids)),
                current: index(s.rewriter.target()),
                audio: s.kind == MediaKind::Audio,
            };
            open.push((i, t.rids.clone(), track));
        }
        let tracks: Vec<Track> = open.iter().map(|(_, _, t)| t.clone()).collect();
        let budget = &peer.budget;
        let chosen = budget.estimate.map(|estimate| {
            let may_raise = budget.raised_at.is_none_or(|t| now >= t + UP_EVERY);
            allocate(estimate, &tracks, may_raise)
        });
        let mut keys = Vec::new();
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let mut raised = false;
        for (n, (i, rids, track)) in open.iter().enumerate() {
            let layer = match &chosen {
                Some(a) => a.layers[n],
                None => track.ceiling,
            };
            raised |= layer.is_some_and(|l| track.current.is_some_and(|c| l > c));
            let layer = layer.map(|l| rids.get(l).copied());
            let s = &mut peer.subscriptions[*i];
            if s.rewriter.want(layer) {
                if let Some(Some(rid)) = layer {
                    keys.push((s.publisher, s.source_mid, Some(rid)));
                } else if s.kind == MediaKind::Video {
                    keys.push((s.publisher, s.source_mid, None));
                }
            }
        }
        peer.budget.chosen_at = Some(now);
        if raised {
            peer.budget.raised_at = Some(now);
        }
        if let Some(a) = &chosen {
            // Probe for the estimate the asked-for layers need, headroom and margin included:
            // the estimate only grows to what is tried.
            let desired = a.desired.max(a.used) as f64 * (1.0 + UP_MARGIN) / HEADROOM;
            match &mut peer.egress {
                Some(egress) => egress.want(desired as u64),
                None => {
                    peer.rtc
                        .bwe()
                        .set_bitrate(Bitrate::ZERO, Bitrate::bps(desired as u64));
                    self.dirty.push(id);
                }
            }
        }
        for (publisher, mid, rid) in keys {
            self.request_key_frame(publisher, mid, rid, now);
        }
    }

    /// str0m's new estimate for `id`'s downlink: its layers are chosen again, unless they were
    /// a moment ago.
    pub(super) fn estimated(&mut self, id: PeerId, estimate: Bitrate, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.budget.estimate = Some(estimate.as_u64());
        if peer
            .budget
            .chosen_at
            .is_none_or(|t| now >= t + ALLOCATE_EVERY)
        {
            self.start_subscriptions(id, now);
        }
    }

    /// Chooses again the layers of every subscriber with an estimate that were not chosen in
    /// the last [`ALLOCATE_EVERY`]: the layers' rates change.
    pub(super) fn reallocate(&mut self, now: Instant) {
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.budget.estimate.is_some()
                    && p.budget.chosen_at.is_none_or(|t| now >= t + ALLOCATE_EVERY)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.start_subscriptions(id, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: u64 = 150_000;
    const M: u64 = 500_000;
    const H: u64 = 1_500_000;

    fn video(ceiling: usize, current: Option<usize>) -> Track {
        Track {
            rates: vec![L, M, H],
            ceiling: Some(ceiling),
            current,
            audio: false,
        }
    }

    fn audio() -> Track {
        Track {
            rates: vec![60_000],
            ceiling: Some(0),
            current: Some(0),
            audio: true,
        }
    }

    #[test]
    fn the_best_layer_that_fits_up_to_the_one_asked_for() {
        let tracks = [audio(), video(2, Some(2))];
        // 90% of 2 Mbit/s: audio and the high layer.
        let a = allocate(2_000_000, &tracks, true);
        assert_eq!(a.layers, [Some(0), Some(2)]);
        assert_eq!((a.used, a.desired), (60_000 + H, 60_000 + H));
        // 90% of 1 Mbit/s: the medium layer.
        assert_eq!(allocate(1_000_000, &tracks, true).layers[1], Some(1));
        // Below the low layer's rate: still the low layer, never off.
        let a = allocate(100_000, &tracks, true);
        assert_eq!(a.layers, [Some(0), Some(0)]);
        assert_eq!(a.desired, 60_000 + H, "probe for what was asked");
        // Asked for medium: never more, whatever the estimate.
        assert_eq!(
            allocate(10_000_000, &[video(1, Some(1))], true).layers,
            [Some(1)]
        );
    }

    #[test]
    fn going_up_needs_a_margin_and_time_going_down_does_not() {
        // From the medium layer: the high one fits in 1.8 Mbit/s (90% is 1.62) but not with
        // 10% of it to spare (1.65).
        let from_m = [video(2, Some(1))];
        assert_eq!(allocate(1_800_000, &from_m, true).layers, [Some(1)]);
        assert_eq!(allocate(1_850_000, &from_m, true).layers, [Some(2)]);
        // Already on the high layer, 1.8 Mbit/s keeps it.
        assert_eq!(
            allocate(1_800_000, &[video(2, Some(2))], true).layers,
            [Some(2)]
        );
        // Not yet time to go up: stays, though it would fit.
        assert_eq!(allocate(5_000_000, &from_m, false).layers, [Some(1)]);
        // Going down is at once.
        assert_eq!(allocate(400_000, &from_m, false).layers, [Some(0)]);
    }

    #[test]
    fn tracks_share_the_budget_a_layer_at_a_time() {
        // Two focus tracks and a thumbnail in 1.4 Mbit/s (1.26 for media): everyone's floor
        // (0.45), then both to medium (+0.7); high fits for neither.
        let tracks = [video(2, Some(2)), video(2, Some(2)), video(0, Some(0))];
        let a = allocate(1_400_000, &tracks, true);
        assert_eq!(a.layers, [Some(1), Some(1), Some(0)]);
        assert_eq!(a.used, 2 * M + L);
        assert_eq!(a.desired, 2 * H + L);
        // Off is off.
        let off = Track {
            ceiling: None,
            ..video(2, None)
        };
        let a = allocate(10_000_000, &[off, video(2, None)], true);
        assert_eq!(a.layers, [None, Some(2)]);
    }

    #[test]
    fn a_layer_the_publisher_does_not_send_is_not_chosen() {
        // The publisher dropped its high layer: medium is the best there is.
        let t = Track {
            rates: vec![L, M, 0],
            ..video(2, Some(2))
        };
        assert_eq!(allocate(10_000_000, &[t], true).layers, [Some(1)]);
        // Nothing measured yet (the first packets): the layer asked for.
        let t = Track {
            rates: vec![0, 0, 0],
            ..video(2, None)
        };
        assert_eq!(allocate(100_000, &[t], true).layers, [Some(2)]);
        // A track without simulcast has one layer.
        let t = Track {
            rates: vec![M],
            ceiling: Some(0),
            current: None,
            audio: false,
        };
        assert_eq!(allocate(100_000, &[t], true).layers, [Some(0)]);
    }

    #[test]
    fn a_meter_counts_the_last_second() {
        let t0 = Instant::now();
        let mut m = Meter::default();
        assert_eq!(m.rate(t0), 0);
        // 100 packets of 1,212 bytes (1,250 on the wire) in a second: 1 Mbit/s.
        for i in 0..100 {
            m.add(t0 + Duration::from_millis(10 * i), 1_212);
        }
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(m.rate(t1), 1_000_000);
        // Half a second later, the packets of the last 900 ms that are still in the window.
        assert_eq!(
            m.rate(t1 + Duration::from_millis(500)),
            40 * 1_250 * 8 * 10 / 9
        );
        // Silence for long: nothing.
        assert_eq!(m.rate(t1 + Duration::from_secs(5)), 0);
        let t2 = t1 + Duration::from_secs(5);
        m.add(t2, 1_212);
        assert_eq!(m.rate(t2), 1_250 * 8 * 10 / 9);
    }
}
