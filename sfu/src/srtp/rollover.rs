//! A receiver's packet index for one SSRC (RFC 3711 section 3.3.1): SRTP authenticates and
//! encrypts with the 48-bit index (rollover counter and sequence number), but only the 16-bit
//! sequence number is on the wire, so the receiver estimates the rollover counter from the
//! highest index it has accepted.

/// The highest accepted index of one SSRC's packets, and the estimate for the next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rollover {
    /// The highest index accepted so far (`None` before the first packet).
    highest: Option<u64>,
}

impl Rollover {
    /// The index of a packet numbered `seq` (RFC 3711 section 3.3.1: the rollover counter that
    /// puts it closest to the highest accepted index). `None` for a packet from before the
    /// stream's first rollover counter (a late packet of a stream whose counter is 0).
    pub fn estimate(&self, seq: u16) -> Option<u64> {
        let Some(highest) = self.highest else {
            // The first packet: its counter is 0 (RFC 3711 section 3.3.1, and what every
            // sender here starts at).
            return Some(u64::from(seq));
        };
        let (roc, s_l, s) = (highest >> 16, (highest & 0xffff) as u32, u32::from(seq));
        let half: u32 = 1 << 15;
        let v = if s_l < half {
            if s > s_l + half {
                roc.checked_sub(1)?
            } else {
                roc
            }
        } else if s + half < s_l {
            roc + 1
        } else {
            roc
        };
        // The counter is 32 bits: an index past it is no index.
        (v <= u64::from(u32::MAX)).then_some(v << 16 | u64::from(seq))
    }

    /// `index`'s packet checked (its tag verified): the estimate follows it if it is the
    /// highest. Only authenticated packets may move it, or a forged sequence number could
    /// desynchronise the stream.
    pub fn accept(&mut self, index: u64) {
        if self.highest.is_none_or(|h| index > h) {
            self.highest = Some(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts the estimate of each sequence number in turn; returns the indices.
    fn run(seqs: &[u16]) -> Vec<Option<u64>> {
        let mut r = Rollover::default();
        seqs.iter()
            .map(|&s| {
                let i = r.estimate(s);
                if let Some(i) = i {
                    r.accept(i);
                }
                i
            })
            .collect()
    }

    #[test]
    fn the_counter_goes_up_when_the_sequence_wraps() {
        let got = run(&[65_534, 65_535, 0, 1]);
        assert_eq!(
            got,
            [Some(65_534), Some(65_535), Some(65_536), Some(65_537)]
        );
    }

    #[test]
    fn a_late_packet_from_before_the_wrap_keeps_the_old_counter() {
        let got = run(&[65_530, 2, 65_533, 3]);
        assert_eq!(
            got,
            [Some(65_530), Some(65_538), Some(65_533), Some(65_539)]
        );
    }

    #[test]
    fn a_packet_from_before_a_first_counter_of_zero_has_no_index() {
        // The stream started at 10: a packet numbered 65,000 would be from before it.
        let got = run(&[10, 11, 65_000, 12]);
        assert_eq!(got, [Some(10), Some(11), None, Some(12)]);
    }

    #[test]
    fn only_accepted_packets_move_the_estimate() {
        let mut r = Rollover::default();
        r.accept(r.estimate(40_000).unwrap());
        // A packet numbered 10 would be the next counter's; failing its check, it is not
        // accepted, and 20,000 is still counter 0's.
        assert_eq!(r.estimate(10), Some(65_546));
        assert_eq!(r.estimate(20_000), Some(20_000));
        // Accepted, it moves the estimate: 20,000 is counter 1's now.
        r.accept(65_546);
        assert_eq!(r.estimate(20_000), Some(85_536));
    }

    #[test]
    fn many_wraps_in_order() {
        let mut r = Rollover::default();
        let mut last = 0;
        for i in 0u64..300_000 {
            let index = r.estimate((i * 7 % 65_536) as u16);
            // Steps of 7: every estimate is the previous index plus 7.
            let index = index.unwrap();
            if i > 0 {
                assert_eq!(index, last + 7);
            }
            r.accept(index);
            last = index;
        }
    }
}
