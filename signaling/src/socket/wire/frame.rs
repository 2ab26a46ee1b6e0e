//! The RFC 6455 codec: a server frame's header and bytes, a client frame's header parsed,
//! and the client's mask undone.

use super::{PROTOCOL_ERROR, TOO_BIG};

/// A frame's header: FIN, `opcode`, no mask, `len`.
pub(super) fn header(buf: &mut [u8; 10], opcode: u8, len: usize) -> &[u8] {
    buf[0] = 0x80 | opcode;
    if len < 126 {
        buf[1] = len as u8;
        &buf[..2]
    } else if let Ok(len) = u16::try_from(len) {
        buf[1] = 126;
        buf[2..4].copy_from_slice(&len.to_be_bytes());
        &buf[..4]
    } else {
        buf[1] = 127;
        buf[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        &buf[..10]
    }
}

/// A whole frame as bytes: its header, then its payload's parts.
pub(super) fn frame_bytes<P: AsRef<[u8]>>(head: &[u8], parts: &[P]) -> Vec<u8> {
    let len = head.len() + parts.iter().map(|p| p.as_ref().len()).sum::<usize>();
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(head);
    for p in parts {
        v.extend_from_slice(p.as_ref());
    }
    v
}

/// One parsed frame header.
pub(super) struct Head {
    pub(super) fin: bool,
    pub(super) opcode: u8,
    pub(super) mask: [u8; 4],
    /// Header bytes.
    pub(super) size: usize,
    pub(super) len: usize,
}

pub(super) enum Parsed {
    Frame(Head),
    More,
    Error(u16, &'static str),
}

/// The header at the start of `b`, of a frame of at most `limit` bytes.
pub(super) fn parse_head(b: &[u8], limit: usize) -> Parsed {
    if b.len() < 2 {
        return Parsed::More;
    }
    let (b0, b1) = (b[0], b[1]);
    if b0 & 0x70 != 0 {
        return Parsed::Error(PROTOCOL_ERROR, "reserved bits set");
    }
    if b1 & 0x80 == 0 {
        return Parsed::Error(PROTOCOL_ERROR, "client frames must be masked");
    }
    let (size, len) = match b1 & 0x7F {
        126 => {
            let Some(l) = b.get(2..4) else {
                return Parsed::More;
            };
            (8, u64::from(u16::from_be_bytes([l[0], l[1]])))
        }
        127 => {
            let Some(l) = b.get(2..10) else {
                return Parsed::More;
            };
            (14, u64::from_be_bytes(l.try_into().expect("8 bytes")))
        }
        n => (6, u64::from(n)),
    };
    let Some(mask) = b.get(size - 4..size) else {
        return Parsed::More;
    };
    let opcode = b0 & 0x0F;
    let fin = b0 & 0x80 != 0;
    if opcode >= 8 && (!fin || len > 125) {
        return Parsed::Error(PROTOCOL_ERROR, "control frames are whole and short");
    }
    if len > limit as u64 {
        return Parsed::Error(TOO_BIG, "message too big");
    }
    Parsed::Frame(Head {
        fin,
        opcode,
        mask: mask.try_into().expect("4 bytes"),
        size,
        len: len as usize,
    })
}

pub(super) fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::limits::{MAX_AUTHENTICATED_FRAME, MAX_FRAME};
    use crate::socket::wire::{BINARY, TEXT};

    #[test]
    fn headers_take_the_shortest_length() {
        let mut b = [0u8; 10];
        assert_eq!(header(&mut b, TEXT, 5), [0x81, 5]);
        assert_eq!(header(&mut b, TEXT, 125), [0x81, 125]);
        assert_eq!(header(&mut b, TEXT, 126), [0x81, 126, 0, 126]);
        assert_eq!(header(&mut b, BINARY, 65_535), [0x82, 126, 0xFF, 0xFF]);
        assert_eq!(
            header(&mut b, TEXT, 65_536),
            [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    #[test]
    fn heads_parse_or_ask_for_more_or_refuse() {
        // RFC 6455, 5.7: a masked "Hello".
        let hello = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        for cut in 0..6 {
            assert!(
                matches!(parse_head(&hello[..cut], MAX_FRAME), Parsed::More),
                "{cut}"
            );
        }
        let Parsed::Frame(h) = parse_head(&hello, MAX_FRAME) else {
            panic!("a frame")
        };
        assert!(h.fin);
        assert_eq!((h.opcode, h.size, h.len), (TEXT, 6, 5));
        let mut data = hello[6..].to_vec();
        unmask(&mut data, h.mask);
        assert_eq!(data, b"Hello");
        // Unmasked, reserved bits, long control frames, fragmented control frames, too big.
        let refused: [&[u8]; 5] = [
            &[0x81, 0x05],
            &[0xC1, 0x80, 0, 0, 0, 0],
            &[0x89, 0xFE, 0, 126, 0, 0, 0, 0],
            &[0x09, 0x80, 0, 0, 0, 0],
            &[0x81, 0xFF, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0],
        ];
        for (i, b) in refused.iter().enumerate() {
            assert!(matches!(parse_head(b, MAX_FRAME), Parsed::Error(..)), "{i}");
        }
        // 65,537 bytes: over the limit before authentication, under the one after.
        let big = [0x81, 0xFF, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0];
        assert!(matches!(
            parse_head(&big, MAX_FRAME),
            Parsed::Error(TOO_BIG, _)
        ));
        let Parsed::Frame(h) = parse_head(&big, MAX_AUTHENTICATED_FRAME) else {
            panic!("a frame under the authenticated limit")
        };
        assert_eq!(h.len, 65_537);
        let over = (MAX_AUTHENTICATED_FRAME as u64 + 1).to_be_bytes();
        let mut huge = vec![0x81, 0xFF];
        huge.extend_from_slice(&over);
        huge.extend_from_slice(&[0; 4]);
        assert!(matches!(
            parse_head(&huge, MAX_AUTHENTICATED_FRAME),
            Parsed::Error(TOO_BIG, _)
        ));
    }

    #[test]
    fn unmasking_twice_is_the_identity_at_every_length() {
        for len in 0..20 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut d = data.clone();
            unmask(&mut d, [1, 2, 3, 250]);
            if len > 0 {
                assert_ne!(d, data);
            }
            assert_eq!(
                d[..len.min(1)],
                data[..len.min(1)].iter().map(|b| b ^ 1).collect::<Vec<_>>()[..]
            );
            unmask(&mut d, [1, 2, 3, 250]);
            assert_eq!(d, data);
        }
    }

    #[test]
    fn frame_bytes_are_the_header_then_the_parts() {
        let parts: [&str; 2] = ["ab", "cd"];
        assert_eq!(
            frame_bytes(&[0x81, 4], &parts),
            [0x81, 4, b'a', b'b', b'c', b'd']
        );
    }
}
