//! Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01,
//! section 3.1): which of the packets a sender numbered arrived, and when. Read ([`parse`]) from
//! the subscribers the direct egress sends to; written ([`Receipts`]) for a sender whose packets
//! the SFU receives without a str0m connection reading them, so that its bandwidth estimate
//! (a browser's send-side one) goes on.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One feedback message: from `base`, each packet's arrival time (relative to a clock of the
/// receiver's) or `None` if it did not arrive.
#[derive(Debug, PartialEq)]
pub struct Feedback {
    pub base: u16,
    pub arrivals: Vec<Option<Duration>>,
}

/// Each status takes a receive delta of this many bytes: not received, small, large.
const SYMBOL_BYTES: [usize; 3] = [0, 1, 2];
/// A delta's unit, and the reference time's.
const DELTA: i64 = 250;
const REFERENCE_US: i64 = 64_000;

/// The feedback in transport-layer feedback packet `p` (PT 205, FMT 15, its whole length), if
/// it is well formed. Arrival times before the receiver's clock's zero are taken as zero.
pub fn parse(p: &[u8]) -> Option<Feedback> {
    let base = u16::from_be_bytes([*p.get(12)?, *p.get(13)?]);
    let count = usize::from(u16::from_be_bytes([*p.get(14)?, *p.get(15)?]));
    let reference = i64::from(i32::from_be_bytes([*p.get(16)?, *p.get(17)?, *p.get(18)?, 0]) >> 8);
    // Statuses, from the packet chunks.
    let mut symbols = Vec::with_capacity(count);
    let mut at = 20;
    while symbols.len() < count {
        let chunk = u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]);
        at += 2;
        if chunk & 0x8000 == 0 {
            // Run length: a 2-bit symbol, 13 bits of length.
            let symbol = usize::from((chunk >> 13) & 0x3);
            let run = usize::from(chunk & 0x1fff);
            symbols.extend(std::iter::repeat_n(symbol, run.min(count - symbols.len())));
        } else if chunk & 0x4000 == 0 {
            // Status vector of 14 one-bit symbols: received (small delta) or not.
            for i in (0..14).rev() {
                symbols.push(usize::from((chunk >> i) & 1));
            }
        } else {
            // Status vector of 7 two-bit symbols.
            for i in (0..7).rev() {
                symbols.push(usize::from((chunk >> (2 * i)) & 0x3));
            }
        }
    }
    symbols.truncate(count);
    // Receive deltas, in order, for the received.
    let mut clock = reference * REFERENCE_US;
    let mut arrivals = Vec::with_capacity(count);
    for symbol in symbols {
        let bytes = *SYMBOL_BYTES.get(symbol)?;
        if bytes == 0 {
            arrivals.push(None);
            continue;
        }
        let delta = if bytes == 1 {
            i64::from(*p.get(at)?)
        } else {
            i64::from(i16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
        };
        at += bytes;
        clock += delta * DELTA;
        arrivals.push(Some(Duration::from_micros(clock.max(0) as u64)));
    }
    Some(Feedback { base, arrivals })
}

/// Statuses one feedback message reports, at most (a message stays well under a datagram).
const MAX_STATUSES: usize = 1_000;
/// Arrivals kept unreported, at most: past it, the oldest go (a sender that gets no feedback
/// for so long has bigger problems).
const MAX_PENDING: usize = 4_096;
/// Run-length chunks count up to this many statuses.
const MAX_RUN: usize = 0x1fff;

/// The arrivals of one connection's packets, by transport-wide sequence number, until they
/// are reported: the receiving side of TWCC.
#[derive(Debug, Default)]
pub struct Receipts {
    /// Arrival times by extended sequence number, not reported yet.
    pending: BTreeMap<u64, Instant>,
    /// The highest extended sequence number seen, to extend the next 16-bit one from.
    highest: Option<u64>,
    /// The highest reported: later reports start after it.
    reported: Option<u64>,
    /// The clock the reference times count from: the first arrival.
    zero: Option<Instant>,
    /// Feedback messages written, modulo 256.
    count: u8,
}

impl Receipts {
    /// The packet numbered `seq` arrived at `at`.
    pub fn received(&mut self, seq: u16, at: Instant) {
        let extended = match self.highest {
            None => u64::from(seq),
            Some(h) => {
                // The nearest to the highest of the numbers ending in `seq`.
                let base = (h & !0xffff) | u64::from(seq);
                [
                    base.checked_sub(1 << 16),
                    Some(base),
                    base.checked_add(1 << 16),
                ]
                .into_iter()
                .flatten()
                .min_by_key(|c| c.abs_diff(h))
                .unwrap_or(base)
            }
        };
        if self.reported.is_some_and(|r| extended <= r) {
            return; // too late: reported missing already
        }
        self.highest = Some(self.highest.map_or(extended, |h| h.max(extended)));
        self.zero.get_or_insert(at);
        self.pending.entry(extended).or_insert(at);
        while self.pending.len() > MAX_PENDING {
            self.pending.pop_first();
        }
    }

    /// Whether arrivals wait to be reported.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// One transport-layer feedback message (RTCP PT 205, FMT 15, in the clear, padded to a
    /// word with the P bit) from `sender_ssrc` about `media_ssrc`'s connection, reporting the
    /// packets from the first unreported one up to the highest that arrived (at most
    /// [`MAX_STATUSES`]; the rest go in the next): those between that did not arrive are
    /// reported missing. `None` when nothing waits.
    pub fn feedback(&mut self, sender_ssrc: u32, media_ssrc: u32) -> Option<Vec<u8>> {
        let zero = self.zero?;
        let (&first, &first_at) = self.pending.first_key_value()?;
        let start = self.reported.map_or(first, |r| r + 1).min(first);
        // The reference time: whole 64 ms steps of the first arrival reported; deltas start
        // there.
        let reference = first_at.saturating_duration_since(zero).as_micros() as i64 / REFERENCE_US;
        let mut clock = reference * REFERENCE_US;
        let (mut symbols, mut deltas) = (Vec::new(), Vec::new());
        let mut received_any = false;
        for seq in start.. {
            if symbols.len() == MAX_STATUSES {
                break;
            }
            let Some(&at) = self.pending.get(&seq) else {
                if self.pending.range(seq..).next().is_none() {
                    break;
                }
                symbols.push(0);
                continue;
            };
            let us = at.saturating_duration_since(zero).as_micros() as i64;
            let ticks = (us - clock).div_euclid(DELTA);
            let symbol = match ticks {
                0..=255 => 1,
                t if i16::try_from(t).is_ok() => 2,
                // Further than a large delta reaches: this packet starts the next message.
                _ => break,
            };
            clock += ticks * DELTA;
            symbols.push(symbol);
            deltas.push((symbol, ticks));
            received_any = true;
        }
        if !received_any {
            return None;
        }
        // Reported: each status, those missing too (a later packet arrived before this).
        let last = start + symbols.len() as u64 - 1;
        let mut p = vec![0x80 | 15, 205, 0, 0];
        p.extend(sender_ssrc.to_be_bytes());
        p.extend(media_ssrc.to_be_bytes());
        p.extend((start as u16).to_be_bytes());
        p.extend((symbols.len() as u16).to_be_bytes());
        p.extend(&((reference as u32) & 0xff_ffff).to_be_bytes()[1..]);
        p.push(self.count);
        write_chunks(&mut p, &symbols);
        for (symbol, ticks) in deltas {
            if symbol == 1 {
                p.push(ticks as u8);
            } else {
                p.extend((ticks as i16).to_be_bytes());
            }
        }
        let pad = (4 - p.len() % 4) % 4;
        if pad > 0 {
            p[0] |= 0x20;
            p.extend(std::iter::repeat_n(0, pad - 1));
            p.push(pad as u8);
        }
        let words = (p.len() / 4 - 1) as u16;
        p[2..4].copy_from_slice(&words.to_be_bytes());
        self.count = self.count.wrapping_add(1);
        self.reported = Some(last);
        self.pending = self.pending.split_off(&(last + 1));
        Some(p)
    }
}

/// The packet status chunks of `symbols` (0 not received, 1 small delta, 2 large): a run of
/// one symbol where it repeats for a whole vector's worth or more, else a vector of 14 one-bit
/// statuses where no delta is large, else of 7 two-bit ones. A vector's slots past the end are
/// "not received", which the count excludes.
fn write_chunks(p: &mut Vec<u8>, symbols: &[u8]) {
    let mut at = 0;
    while at < symbols.len() {
        let rest = &symbols[at..];
        let run = rest
            .iter()
            .take_while(|s| **s == rest[0])
            .count()
            .min(MAX_RUN);
        let chunk: u16;
        let took;
        if run >= 14 || run == rest.len() {
            chunk = u16::from(rest[0]) << 13 | run as u16;
            took = run;
        } else if rest.iter().take(14).all(|s| *s < 2) {
            took = rest.len().min(14);
            let bits = rest[..took]
                .iter()
                .enumerate()
                .fold(0u16, |v, (i, s)| v | u16::from(*s) << (13 - i));
            chunk = 0x8000 | bits;
        } else {
            took = rest.len().min(7);
            let bits = rest[..took]
                .iter()
                .enumerate()
                .fold(0u16, |v, (i, s)| v | u16::from(*s) << (12 - 2 * i));
            chunk = 0xc000 | bits;
        }
        p.extend(chunk.to_be_bytes());
        at += took;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(base: u16, count: u16, reference: u32, chunks: &[u16], deltas: &[u8]) -> Vec<u8> {
        let mut p = vec![0x8f, 205, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2];
        p.extend(base.to_be_bytes());
        p.extend(count.to_be_bytes());
        p.extend(&reference.to_be_bytes()[1..]);
        p.push(7);
        for c in chunks {
            p.extend(c.to_be_bytes());
        }
        p.extend(deltas);
        while p.len() % 4 != 0 {
            p.push(0);
        }
        p
    }

    /// What `p` (a message [`Receipts::feedback`] wrote) reports, read by str0m's parser: the
    /// base, and for each status the arrival offset from str0m's time zero, if received.
    fn str0m_reads(p: &[u8], zero: Instant) -> (u16, Vec<Option<Duration>>) {
        use str0m::rtp::rtcp::Rtcp;
        // RFC 3550: with the P bit, the last octet counts the padding (str0m takes it off
        // before it parses).
        let len = p.len()
            - if p[0] & 0x20 != 0 {
                usize::from(p[p.len() - 1])
            } else {
                0
            };
        let Ok(Rtcp::Twcc(t)) = Rtcp::try_from(&p[..len]) else {
            panic!("str0m reads no TWCC feedback in {p:?}");
        };
        let base = t.base_seq;
        let statuses = t
            .into_iter(zero, u64::from(base).into())
            .map(|(_, _, at)| at.map(|a| a - zero))
            .collect();
        (base, statuses)
    }

    /// `arrivals` (sequence number, µs after the first) fed to a `Receipts`, and its feedback.
    fn written(arrivals: &[(u16, u64)]) -> (Instant, Vec<u8>) {
        let zero = Instant::now();
        let mut r = Receipts::default();
        for &(seq, us) in arrivals {
            r.received(seq, zero + Duration::from_micros(us));
        }
        (zero, r.feedback(1, 2).expect("feedback"))
    }

    #[test]
    fn feedback_written_reads_back_with_ours_and_str0m_s() {
        // 20 in order 1 ms apart, 3 lost, one late by 80 ms (a large delta), one early (a
        // negative one), then a run of 30 lost and 2 more.
        let mut arrivals: Vec<(u16, u64)> =
            (0..20).map(|i| (100 + i, 1_000 * u64::from(i))).collect();
        arrivals.retain(|(s, _)| ![105, 106, 110].contains(s));
        arrivals.push((120, 100_000));
        arrivals.push((121, 21_000));
        arrivals.push((152, 40_000));
        arrivals.push((153, 41_250));
        let (zero, p) = written(&arrivals);
        assert_eq!(p.len() % 4, 0);
        assert_eq!(
            usize::from(u16::from_be_bytes([p[2], p[3]])),
            p.len() / 4 - 1
        );
        let want: Vec<Option<Duration>> = (100..=153)
            .map(|s| {
                let at = arrivals.iter().find(|(x, _)| *x == s)?;
                Some(Duration::from_micros(at.1))
            })
            .collect();
        let ours = parse(&p).unwrap();
        assert_eq!(ours.base, 100);
        assert_eq!(ours.arrivals, want, "our parser");
        let (base, theirs) = str0m_reads(&p, zero);
        assert_eq!(base, 100);
        assert_eq!(theirs, want, "str0m's parser");
    }

    #[test]
    fn each_message_reports_what_came_since_the_last() {
        let zero = Instant::now();
        let at = |ms: u64| zero + Duration::from_millis(ms);
        let mut r = Receipts::default();
        assert_eq!(r.feedback(1, 2), None);
        r.received(65_534, at(0));
        r.received(65_535, at(1));
        let first = parse(&r.feedback(1, 2).unwrap()).unwrap();
        assert_eq!((first.base, first.arrivals.len()), (65_534, 2));
        // Across the wrap, 1 lost; a packet reported already (65,535 again) is ignored.
        r.received(65_535, at(2));
        r.received(1, at(3));
        let second = parse(&r.feedback(1, 2).unwrap()).unwrap();
        assert_eq!(second.base, 0);
        assert_eq!(
            second.arrivals,
            [None, Some(Duration::from_millis(3))],
            "0 missing, 1 at 3 ms"
        );
        assert!(!r.has_pending());
        assert_eq!(r.feedback(1, 2), None);
        // The feedback count goes up by one a message.
        r.received(2, at(4));
        assert_eq!(r.feedback(1, 2).unwrap()[19], 2);
    }

    #[test]
    fn long_runs_and_many_statuses() {
        // 2,000 packets, every third but the first lost: two messages of at most 1,000
        // statuses.
        let zero = Instant::now();
        let mut r = Receipts::default();
        let arrived = |i: usize| i == 0 || !i.is_multiple_of(3);
        for i in 0..2_000u16 {
            if arrived(usize::from(i)) {
                r.received(i, zero + Duration::from_micros(500 * u64::from(i)));
            }
        }
        let mut seen = Vec::new();
        while let Some(p) = r.feedback(1, 2) {
            let (base, statuses) = str0m_reads(&p, zero);
            assert_eq!(usize::from(base), seen.len());
            seen.extend(statuses);
        }
        assert_eq!(seen.len(), 2_000);
        for (i, s) in seen.iter().enumerate() {
            assert_eq!(s.is_some(), arrived(i), "packet {i}");
        }
        // A gap of 10,000 lost: run-length chunks.
        let (zero, p) = written(&[(0, 0), (10_001, 5_000)]);
        let (_, statuses) = str0m_reads(&p, zero);
        assert_eq!(statuses.len(), 1_000);
        assert!(p.len() < 40, "{} bytes", p.len());
    }

    #[test]
    fn run_lengths_and_vectors_give_each_packet_its_arrival() {
        // 3 received (small deltas), then a 2-bit vector: lost, large, small, lost x4.
        let p = packet(
            65_534,
            10,
            2,
            &[0x2003, 0xc000 | 0b00_10_01_00_00_00_00],
            &[4, 8, 0, 0xff, 0xfc, 40],
        );
        let f = parse(&p).unwrap();
        assert_eq!(f.base, 65_534);
        let ms = |us: u64| Some(Duration::from_micros(us));
        assert_eq!(
            f.arrivals,
            vec![
                ms(128_000 + 1_000),
                ms(130_000 + 1_000),
                ms(130_000 + 1_000),
                None,
                // -4 x 250 us.
                ms(130_000),
                ms(130_000 + 10_000),
                None,
                None,
                None,
                None,
            ]
        );
    }

    #[test]
    fn a_one_bit_vector_and_truncated_input() {
        let p = packet(7, 14, 0, &[0x8000 | 0b10_0000_0000_0001], &[1, 2]);
        let f = parse(&p).unwrap();
        assert_eq!(f.arrivals.iter().filter(|a| a.is_some()).count(), 2);
        assert_eq!(f.arrivals[13], Some(Duration::from_micros(750)));
        for cut in [0, 13, 19, 21, p.len() - 4] {
            assert_eq!(parse(&p[..cut]), None, "cut at {cut}");
        }
    }
}
