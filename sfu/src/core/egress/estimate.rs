//! A subscriber's downlink estimate from its TWCC feedback, for the direct egress (str0m's
//! estimator sees none of its packets). The shape of Google congestion control (draft-ietf-
//! rmcat-gcc-02), kept small:
//!
//! - **Delay:** packets sent within [`BURST`] form a group; each group's arrival spacing less
//!   its send spacing is how much the path's queue grew. The accumulated growth, smoothed, has
//!   its slope taken over the last [`WINDOW`] groups (a trend line); over an adaptive
//!   threshold for [`OVERUSE_FOR`] the link is over-used, under minus it under-used.
//! - **Rate:** over-use sets the estimate to [`BACK_OFF`] of what was acknowledged (the rate
//!   that arrived over the last [`ACKED_OVER`]); normal grows it, by [`GROWTH`] a second far
//!   from the last back-off and by a packet a round trip near it, never past 1.5 times the
//!   acknowledged rate; loss over 10% in a report takes it down by half the loss (the
//!   loss-based part of GCC).
//! - **Probing:** the acknowledged-rate ceiling means the estimate cannot grow into layers not
//!   sent. When the allocation wants more, [`Estimator::probe`] asks for a burst of
//!   retransmissions (packets the subscriber already has) at the wanted rate (at most twice the
//!   estimate); the rate at which the burst arrived raises the estimate.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::twcc::Feedback;

/// Packets sent within this of a group's first are one group.
const BURST: Duration = Duration::from_millis(5);
/// Groups the trend line is fitted over.
const WINDOW: usize = 20;
const SMOOTHING: f64 = 0.9;
const TREND_GAIN: f64 = 4.0;
/// The over-use threshold's start, bounds and adaptation rates (per ms).
const THRESHOLD: f64 = 12.5;
const THRESHOLD_MIN: f64 = 6.0;
const THRESHOLD_MAX: f64 = 600.0;
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
/// Over the threshold this long (and growing) is over-use.
const OVERUSE_FOR: f64 = 10.0;
const BACK_OFF: f64 = 0.85;
/// Multiplicative growth a second.
const GROWTH: f64 = 1.08;
/// Near the last back-off (within this), growth is additive.
const NEAR: Duration = Duration::from_secs(2);
const ACKED_OVER: Duration = Duration::from_millis(500);
/// Sent packets remembered for feedback.
const SENT: usize = 4096;
const MIN_ESTIMATE: f64 = 100_000.0;
const MAX_ESTIMATE: f64 = 100_000_000.0;
/// Probes: at most this often, this long a burst, succeeding if this much of its rate arrived.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(3);
const PROBE_LENGTH: Duration = Duration::from_millis(20);
/// A probe is sent at most this many times the estimate.
const PROBE_STEP: f64 = 2.0;
/// Of a probe's arrival rate, this much is taken as the estimate (it can only raise it).
const PROBE_TRUST: f64 = 0.9;
/// The queue a probe builds is its own doing: over-use seen this soon after one is not acted on.
const PROBE_QUIET: Duration = Duration::from_millis(500);
/// Loss cuts the estimate at most this often (a congestion episode is reported by several
/// feedback messages).
const LOSS_EVERY: Duration = Duration::from_millis(300);
/// Bytes a packet costs on the wire beyond what is counted (UDP/IPv4).
const WIRE: u32 = 28;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Usage {
    Normal,
    Over,
    Under,
}

#[derive(Clone, Copy)]
struct Sent {
    seq: u64,
    at: Instant,
    bytes: u32,
    probe: bool,
}

#[derive(Clone, Copy)]
struct Group {
    first_sent: Instant,
    last_sent: Instant,
    /// Arrival of its last packet, ms on the receiver's clock.
    arrival: f64,
}

struct Probe {
    first_seq: u64,
    last_seq: u64,
    /// bits/s it was sent at.
    rate: f64,
    /// Of its packets reported so far: the bytes that arrived, the first arrival (ms, with its
    /// packet's bytes) and the last.
    bytes: u64,
    first: Option<(f64, u32)>,
    last: f64,
}

pub(crate) struct Estimator {
    estimate: f64,
    sent: VecDeque<Sent>,
    /// The group of packets being gathered, and the one before.
    group: Option<Group>,
    prev_group: Option<Group>,
    accumulated: f64,
    smoothed: f64,
    points: VecDeque<(f64, f64)>,
    first_arrival: Option<f64>,
    deltas: usize,
    threshold: f64,
    last_threshold_at: Option<f64>,
    over_for: f64,
    over_count: u32,
    prev_trend: f64,
    usage: Usage,
    /// (arrival, bytes) of acknowledged packets, ours; the last arrival on the receiver's clock.
    acked: VecDeque<(Instant, u32)>,
    last_update: Option<Instant>,
    last_back_off: Option<Instant>,
    probe: Option<Probe>,
    last_probe: Option<Instant>,
    last_loss_cut: Option<Instant>,
    /// Packets reported lost and reported at all since [`Estimator::take_loss`].
    lost: u32,
    reported: u32,
}

impl Estimator {
    pub fn new(start: u64) -> Estimator {
        Estimator {
            estimate: (start as f64).clamp(MIN_ESTIMATE, MAX_ESTIMATE),
            sent: VecDeque::new(),
            group: None,
            prev_group: None,
            accumulated: 0.0,
            smoothed: 0.0,
            points: VecDeque::new(),
            first_arrival: None,
            deltas: 0,
            threshold: THRESHOLD,
            last_threshold_at: None,
            over_for: 0.0,
            over_count: 0,
            prev_trend: 0.0,
            usage: Usage::Normal,
            acked: VecDeque::new(),
            last_update: None,
            last_back_off: None,
            probe: None,
            last_probe: None,
            last_loss_cut: None,
            lost: 0,
            reported: 0,
        }
    }

    /// Bits per second.
    pub fn estimate(&self) -> u64 {
        self.estimate as u64
    }

    /// Packet `seq` (TWCC, extended) of `bytes` left at `at`.
    pub fn sent(&mut self, seq: u64, bytes: usize, at: Instant, probe: bool) {
        if self.sent.len() == SENT {
            self.sent.pop_front();
        }
        let bytes = bytes as u32 + WIRE;
        self.sent.push_back(Sent {
            seq,
            at,
            bytes,
            probe,
        });
    }

    /// The share of packets reported lost since the last call, if any were reported.
    pub fn take_loss(&mut self) -> Option<f32> {
        let loss = (self.reported > 0).then(|| self.lost as f32 / self.reported as f32);
        (self.lost, self.reported) = (0, 0);
        loss
    }

    /// Whether to probe for `wanted` bits/s now: returns how many bytes to send as a burst (and
    /// notes the probe; the packets it sends are [`Estimator::sent`] with `probe`).
    pub fn probe(&mut self, wanted: u64, now: Instant) -> Option<usize> {
        let wanted = wanted as f64;
        if wanted <= self.estimate * 1.05
            || self.usage != Usage::Normal
            || self.last_probe.is_some_and(|t| now < t + PROBE_EVERY)
        {
            return None;
        }
        // Above what is wanted by what of a probe's rate is trusted: a probe that arrives whole
        // takes the estimate to what is wanted.
        let rate = (wanted / PROBE_TRUST * 1.05).min(self.estimate * PROBE_STEP);
        self.last_probe = Some(now);
        let next = self.sent.back().map_or(0, |s| s.seq + 1);
        self.probe = Some(Probe {
            first_seq: next,
            last_seq: next,
            rate,
            bytes: 0,
            first: None,
            last: 0.0,
        });
        Some((rate * PROBE_LENGTH.as_secs_f64() / 8.0) as usize)
    }

    /// The probe's last packet was `seq`.
    pub fn probe_sent(&mut self, last_seq: u64) {
        if let Some(p) = &mut self.probe {
            p.last_seq = last_seq;
        }
    }

    /// A feedback message arrived at `now`: returns the new estimate if it changed.
    pub fn on_feedback(&mut self, f: &Feedback, now: Instant) -> Option<u64> {
        let before = self.estimate();
        // The feedback's 16-bit base, extended next to what was sent.
        let last = self.sent.back()?.seq;
        let base = extend(last, f.base);
        let (mut lost, mut total) = (0u32, 0u32);
        // Whether the probe's last packet was reported (arrived or not): its result is known.
        let mut probe_done = false;
        for (i, arrival) in f.arrivals.iter().enumerate() {
            let seq = base + i as u64;
            let Some(sent) = self.find(seq) else {
                continue;
            };
            total += 1;
            probe_done |= self.probe.as_ref().is_some_and(|p| seq >= p.last_seq);
            let Some(arrival) = arrival else {
                lost += 1;
                continue;
            };
            let arrival = arrival.as_secs_f64() * 1000.0;
            self.acked.push_back((now, sent.bytes));
            if let Some(p) = self.probe.as_mut() {
                if (p.first_seq..=p.last_seq).contains(&seq) {
                    p.bytes += u64::from(sent.bytes);
                    match p.first {
                        Some((a, _)) if a <= arrival => {}
                        _ => p.first = Some((arrival, sent.bytes)),
                    }
                    p.last = p.last.max(arrival);
                }
            }
            if !sent.probe {
                self.delay(sent.at, arrival);
            }
        }
        // Each report's packets are stamped with its arrival: the window holds the reports of
        // the last ACKED_OVER, this one included.
        while self
            .acked
            .front()
            .is_some_and(|(t, _)| now >= *t + ACKED_OVER)
        {
            self.acked.pop_front();
        }
        let acked: f64 = self
            .acked
            .iter()
            .map(|(_, b)| f64::from(*b) * 8.0)
            .sum::<f64>()
            / ACKED_OVER.as_secs_f64();
        self.rate(acked, now);
        self.lost += lost;
        self.reported += total;
        if total > 0 {
            let loss = f64::from(lost) / f64::from(total);
            if loss > 0.1 && self.last_loss_cut.is_none_or(|t| now >= t + LOSS_EVERY) {
                self.estimate = (self.estimate * (1.0 - 0.5 * loss)).max(MIN_ESTIMATE);
                self.last_back_off = Some(now);
                self.last_loss_cut = Some(now);
            }
        }
        if probe_done {
            self.probe_result();
        }
        (self.estimate() != before).then(|| self.estimate())
    }

    fn find(&self, seq: u64) -> Option<Sent> {
        let first = self.sent.front()?.seq;
        let i = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.sent.get(i).filter(|s| s.seq == seq).copied()
    }

    /// The delay-based detector, one received packet at a time.
    fn delay(&mut self, sent: Instant, arrival: f64) {
        match &mut self.group {
            Some(g) if sent.saturating_duration_since(g.first_sent) < BURST => {
                g.last_sent = g.last_sent.max(sent);
                g.arrival = g.arrival.max(arrival);
                return;
            }
            _ => {}
        }
        let done = self.group.replace(Group {
            first_sent: sent,
            last_sent: sent,
            arrival,
        });
        let Some(done) = done else {
            return;
        };
        if let Some(prev) = self.prev_group.replace(done) {
            let send_delta = done.last_sent.saturating_duration_since(prev.last_sent);
            let d = (done.arrival - prev.arrival) - send_delta.as_secs_f64() * 1000.0;
            self.trend(d, done.arrival, done.arrival - prev.arrival);
        }
    }

    fn trend(&mut self, d: f64, arrival: f64, arrival_delta: f64) {
        self.deltas += 1;
        self.accumulated += d;
        self.smoothed = SMOOTHING * self.smoothed + (1.0 - SMOOTHING) * self.accumulated;
        let first = *self.first_arrival.get_or_insert(arrival);
        self.points.push_back((arrival - first, self.smoothed));
        if self.points.len() > WINDOW {
            self.points.pop_front();
        }
        if self.points.len() < WINDOW {
            return;
        }
        let n = self.points.len() as f64;
        let (mx, my) = self
            .points
            .iter()
            .fold((0.0, 0.0), |(x, y), (a, b)| (x + a / n, y + b / n));
        let (num, den) = self.points.iter().fold((0.0, 0.0), |(u, v), (x, y)| {
            (u + (x - mx) * (y - my), v + (x - mx) * (x - mx))
        });
        let slope = if den > 0.0 { num / den } else { 0.0 };
        let trend = slope * (self.deltas.min(60) as f64) * TREND_GAIN;
        self.detect(trend, arrival, arrival_delta);
    }

    fn detect(&mut self, trend: f64, now_ms: f64, arrival_delta: f64) {
        if trend > self.threshold {
            self.over_for += arrival_delta.max(0.0);
            self.over_count += 1;
            if self.over_for > OVERUSE_FOR && self.over_count > 1 && trend >= self.prev_trend {
                self.usage = Usage::Over;
                self.over_for = 0.0;
                self.over_count = 0;
            }
        } else {
            self.over_for = 0.0;
            self.over_count = 0;
            self.usage = if trend < -self.threshold {
                Usage::Under
            } else {
                Usage::Normal
            };
        }
        self.prev_trend = trend;
        // The threshold follows the trend, slowly up, faster down; not on outliers.
        let dt = self
            .last_threshold_at
            .map_or(0.0, |t| (now_ms - t).clamp(0.0, 100.0));
        self.last_threshold_at = Some(now_ms);
        if trend.abs() <= self.threshold + 15.0 {
            let k = if trend.abs() < self.threshold {
                K_DOWN
            } else {
                K_UP
            };
            self.threshold = (self.threshold + k * (trend.abs() - self.threshold) * dt)
                .clamp(THRESHOLD_MIN, THRESHOLD_MAX);
        }
    }

    fn rate(&mut self, acked: f64, now: Instant) {
        let dt = self.last_update.map_or(0.0, |t| {
            now.saturating_duration_since(t).as_secs_f64().min(1.0)
        });
        self.last_update = Some(now);
        match self.usage {
            Usage::Over => {
                let probing = self.last_probe.is_some_and(|t| now < t + PROBE_QUIET);
                if acked > 0.0 && !probing {
                    self.estimate = (acked * BACK_OFF).min(self.estimate);
                    self.last_back_off = Some(now);
                }
                // Once per detection.
                self.usage = Usage::Normal;
            }
            Usage::Under => {}
            Usage::Normal => {
                let near = self.last_back_off.is_some_and(|t| now < t + NEAR);
                let grown = if near {
                    // A packet (1,200 bytes) per 100 ms.
                    self.estimate + 96_000.0 * dt
                } else {
                    self.estimate * GROWTH.powf(dt)
                };
                let ceiling = 1.5 * acked + 10_000.0;
                if grown <= ceiling || grown <= self.estimate {
                    self.estimate = grown;
                } else {
                    self.estimate = self.estimate.max(ceiling);
                }
            }
        }
        self.estimate = self.estimate.clamp(MIN_ESTIMATE, MAX_ESTIMATE);
    }

    /// A probe all reported on: what of its rate arrived (through a bottleneck, the
    /// bottleneck's rate) raises the estimate, up to the rate it was sent at.
    fn probe_result(&mut self) {
        let Some(p) = self.probe.take() else {
            return;
        };
        let Some((first, first_bytes)) = p.first else {
            return;
        };
        // Through a bottleneck, the burst arrives spread at its rate: what came after the first
        // packet over the time from the first to the last. A burst through an idle link
        // arrives at once: taken over the burst's length.
        let spread = (p.last - first) / 1000.0;
        let arrived = if spread >= PROBE_LENGTH.as_secs_f64() {
            p.bytes.saturating_sub(u64::from(first_bytes)) as f64 * 8.0 / spread
        } else {
            p.bytes as f64 * 8.0 / PROBE_LENGTH.as_secs_f64()
        };
        self.estimate = self.estimate.max(arrived.min(p.rate) * PROBE_TRUST);
    }
}

/// `seq16` extended to the 64-bit sequence closest to `near`.
fn extend(near: u64, seq16: u16) -> u64 {
    let base = near & !0xffff;
    let candidates = [
        base.wrapping_sub(0x1_0000) | u64::from(seq16),
        base | u64::from(seq16),
        (base + 0x1_0000) | u64::from(seq16),
    ];
    candidates
        .into_iter()
        .min_by_key(|c| c.abs_diff(near))
        .unwrap_or(u64::from(seq16))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKET: usize = 1_200;

    /// A sender at `send_bps` through a link of `link_bps` (a FIFO that holds 100 ms, then
    /// drops), one way 10 ms, feedback every 100 ms: the estimate after `secs`, and the
    /// estimator's probes answered with packets of the same size at once.
    struct Link {
        e: Estimator,
        t0: Instant,
        now: Duration,
        seq: u64,
        free_at: Duration,
        pending: Vec<(u64, Option<Duration>)>,
    }

    impl Link {
        fn new(start: u64) -> Link {
            Link {
                e: Estimator::new(start),
                t0: Instant::now(),
                now: Duration::ZERO,
                seq: 0,
                free_at: Duration::ZERO,
                pending: Vec::new(),
            }
        }

        fn send(&mut self, link_bps: f64, probe: bool) {
            let at = self.t0 + self.now;
            self.e.sent(self.seq, PACKET, at, probe);
            let start = self.free_at.max(self.now);
            let arrival = if start - self.now > Duration::from_millis(100) {
                None
            } else {
                let wire = Duration::from_secs_f64((PACKET + 28) as f64 * 8.0 / link_bps);
                self.free_at = start + wire;
                Some(self.free_at + Duration::from_millis(10))
            };
            self.pending.push((self.seq, arrival));
            self.seq += 1;
        }

        /// Runs `secs` sending at `send_bps` or the estimate, whichever is less (as the SFU
        /// picks layers), and wanting `want`; returns the estimates seen.
        fn run(&mut self, secs: f64, send_bps: f64, link_bps: f64, want: u64) -> Vec<u64> {
            let end = self.now + Duration::from_secs_f64(secs);
            let (mut next_send, mut next_feedback) = (self.now, self.now);
            let mut seen = Vec::new();
            while self.now < end {
                if self.now >= next_send {
                    self.send(link_bps, false);
                    let rate = send_bps.min(self.e.estimate() as f64);
                    next_send += Duration::from_secs_f64((PACKET + 28) as f64 * 8.0 / rate);
                }
                if self.now >= next_feedback {
                    next_feedback += Duration::from_millis(100);
                    // Reported: what has arrived by now, and the lost before it.
                    let horizon = self.now;
                    let (ready, rest): (Vec<_>, Vec<_>) = self
                        .pending
                        .drain(..)
                        .partition(|(_, a)| a.is_none_or(|a| a <= horizon));
                    self.pending = rest;
                    if let Some(base) = ready.first().map(|(s, _)| *s) {
                        let last = ready.last().unwrap().0;
                        let mut arrivals = vec![None; (last - base + 1) as usize];
                        for (s, a) in &ready {
                            arrivals[(s - base) as usize] = *a;
                        }
                        let f = Feedback {
                            base: base as u16,
                            arrivals,
                        };
                        let at = self.t0 + self.now;
                        self.e.on_feedback(&f, at);
                        seen.push(self.e.estimate());
                        if let Some(bytes) = self.e.probe(want, at) {
                            for _ in 0..bytes.div_ceil(PACKET) {
                                self.send(link_bps, true);
                            }
                            self.e.probe_sent(self.seq - 1);
                        }
                    }
                }
                self.now += Duration::from_millis(1);
            }
            seen
        }
    }

    #[test]
    fn a_sender_over_the_link_is_brought_under_it() {
        let mut l = Link::new(2_000_000);
        let seen = l.run(6.0, 2_000_000.0, 1_000_000.0, 2_000_000);
        let last = *seen.last().unwrap();
        println!("estimates: {seen:?}");
        assert!(last < 1_100_000, "estimate {last} over a 1 Mbit/s link");
        assert!(last > 300_000, "estimate {last}: too far under the link");
    }

    #[test]
    fn probes_find_room_the_media_does_not_use() {
        let mut l = Link::new(1_000_000);
        // 800 kbit/s sent on a 10 Mbit/s link, 3 Mbit/s wanted.
        let seen = l.run(10.0, 800_000.0, 10_000_000.0, 3_000_000);
        let last = *seen.last().unwrap();
        println!("estimates: {seen:?}");
        assert!(last >= 3_000_000, "estimate {last}: probes found no room");
        // Little to find on a link the media nearly fills: the probes arrive at its rate, and
        // the estimate grows no further than 1.5 times what arrives (GCC's bound), far from
        // the 3 Mbit/s wanted.
        let mut l = Link::new(1_000_000);
        let seen = l.run(10.0, 800_000.0, 1_000_000.0, 3_000_000);
        let last = *seen.last().unwrap();
        println!("estimates on a full link: {seen:?}");
        assert!(last < 1_500_000, "estimate {last} over a 1 Mbit/s link");
    }
}
