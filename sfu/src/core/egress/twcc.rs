//! Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01,
//! section 3.1): which of the packets we numbered arrived, and when.

use std::time::Duration;

/// One feedback message: from `base`, each packet's arrival time (relative to a clock of the
/// receiver's) or `None` if it did not arrive.
#[derive(Debug, PartialEq)]
pub(crate) struct Feedback {
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
pub(crate) fn parse(p: &[u8]) -> Option<Feedback> {
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
