//! An RTP packet read in place (RFC 3550 section 5.1), with the header extensions forwarding
//! and congestion control look at (RFC 8285, one-byte and two-byte forms): what the SFU reads
//! of a publisher's packet once it has decrypted it itself, without a str0m connection parsing
//! it (the per-packet cost `bench/sfu.sh` shows str0m's receive side to be).
//!
//! Nothing here allocates or panics: a packet too short for what its header claims is `None`,
//! an extension element that runs past its block ends the reading of the block.

use str0m::rtp::{Extension, ExtensionMap};

/// The ids a connection negotiated for the header extensions read here (`a=extmap`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtIds {
    pub mid: Option<u8>,
    pub rid: Option<u8>,
    pub repaired_rid: Option<u8>,
    pub transport_cc: Option<u8>,
    pub audio_level: Option<u8>,
    pub video_orientation: Option<u8>,
}

impl ExtIds {
    /// The ids of a negotiated extension map (str0m's, for one m-line).
    pub fn of(map: &ExtensionMap) -> ExtIds {
        ExtIds {
            mid: map.id_of(Extension::RtpMid),
            rid: map.id_of(Extension::RtpStreamId),
            repaired_rid: map.id_of(Extension::RepairedRtpStreamId),
            transport_cc: map.id_of(Extension::TransportSequenceNumber),
            audio_level: map.id_of(Extension::AudioLevel),
            video_orientation: map.id_of(Extension::VideoOrientation),
        }
    }
}

/// The extension values of one packet, those [`ExtIds`] names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extensions<'a> {
    pub mid: Option<&'a [u8]>,
    pub rid: Option<&'a [u8]>,
    pub repaired_rid: Option<&'a [u8]>,
    /// The transport-wide sequence number (TWCC).
    pub transport_cc: Option<u16>,
    /// RFC 6464: the level in dBov (0 the loudest, -127 silence) and the voice activity flag.
    pub audio_level: Option<(i8, bool)>,
    /// 3GPP TS 26.114's byte: rotation, camera, flip.
    pub video_orientation: Option<u8>,
}

/// An RTP packet's header fields and payload, borrowed from the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpView<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub seq: u16,
    pub time: u32,
    pub ssrc: u32,
    /// Bytes of header: fixed part, CSRCs, extensions.
    pub header_len: usize,
    /// The payload without its padding (RFC 3550: the P bit, the last octet its count).
    pub payload: &'a [u8],
    pub ext: Extensions<'a>,
}

impl<'a> RtpView<'a> {
    /// Reads `packet` (in the clear); `None` if it is not version 2 RTP or is shorter than its
    /// header and padding say.
    pub fn parse(packet: &'a [u8], ids: &ExtIds) -> Option<RtpView<'a>> {
        let mut v = RtpView::parse_header(packet, ids)?;
        if packet[0] & 0x20 != 0 {
            let pad = usize::from(*packet.last()?);
            if pad == 0 || pad > v.payload.len() {
                return None;
            }
            v.payload = &v.payload[..v.payload.len() - pad];
        }
        Some(v)
    }

    /// Reads the header of `packet`, which SRTP leaves in the clear: its payload is the rest,
    /// padding (encrypted) included.
    pub fn parse_header(packet: &'a [u8], ids: &ExtIds) -> Option<RtpView<'a>> {
        // Version, fixed part, CSRCs and extension block checked and measured as SRTP does.
        let at = crate::srtp::rtp_header_len(packet)?;
        let word = |at: usize| {
            u32::from_be_bytes([packet[at], packet[at + 1], packet[at + 2], packet[at + 3]])
        };
        let mut ext = Extensions::default();
        if packet[0] & 0x10 != 0 {
            // The extension block follows the CSRCs: its profile word, then its elements.
            let start = 12 + 4 * usize::from(packet[0] & 0x0f);
            let profile = u16::from_be_bytes([packet[start], packet[start + 1]]);
            let block = &packet[start + 4..at];
            match profile {
                0xBEDE => read_elements(block, ids, &mut ext, false),
                p if p >> 4 == 0x100 => read_elements(block, ids, &mut ext, true),
                _ => {}
            }
        }
        let payload = packet.get(at..)?;
        Some(RtpView {
            marker: packet[1] & 0x80 != 0,
            payload_type: packet[1] & 0x7f,
            seq: u16::from_be_bytes([packet[2], packet[3]]),
            time: word(4),
            ssrc: word(8),
            header_len: at,
            payload,
            ext,
        })
    }
}

/// The elements of an extension block: one-byte (an id and length-1 in a byte, ids 1 to 14;
/// 15 ends the block) or two-byte (an id byte and a length byte); zero bytes between them are
/// padding.
fn read_elements<'a>(mut block: &'a [u8], ids: &ExtIds, ext: &mut Extensions<'a>, two: bool) {
    while let Some(&b) = block.first() {
        if b == 0 {
            block = &block[1..];
            continue;
        }
        let (id, len, head) = if two {
            let Some(&len) = block.get(1) else { return };
            (b, usize::from(len), 2)
        } else {
            if b >> 4 == 15 {
                return;
            }
            (b >> 4, usize::from(b & 0x0f) + 1, 1)
        };
        let Some(value) = block.get(head..head + len) else {
            return;
        };
        let is = |want: Option<u8>| want == Some(id);
        if is(ids.mid) {
            ext.mid = Some(value);
        } else if is(ids.rid) {
            ext.rid = Some(value);
        } else if is(ids.repaired_rid) {
            ext.repaired_rid = Some(value);
        } else if is(ids.transport_cc) && len >= 2 {
            ext.transport_cc = Some(u16::from_be_bytes([value[0], value[1]]));
        } else if is(ids.audio_level) && len >= 1 {
            let level = -((value[0] & 0x7f) as i8);
            ext.audio_level = Some((level, value[0] & 0x80 != 0));
        } else if is(ids.video_orientation) && len >= 1 {
            ext.video_orientation = Some(value[0]);
        }
        block = &block[head + len..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: ExtIds = ExtIds {
        mid: Some(4),
        rid: Some(10),
        repaired_rid: Some(11),
        transport_cc: Some(3),
        audio_level: Some(1),
        video_orientation: Some(13),
    };

    /// A header (marker, PT 96, seq 0x1234, time 0x01020304, SSRC 0xAABBCCDD) with `ext` as
    /// its extension block under `profile`, then `payload`.
    fn packet(profile: u16, ext: &[u8], payload: &[u8], padding: u8) -> Vec<u8> {
        let mut p = vec![
            0x80,
            0x80 | 96,
            0x12,
            0x34,
            1,
            2,
            3,
            4,
            0xAA,
            0xBB,
            0xCC,
            0xDD,
        ];
        if !ext.is_empty() {
            p[0] |= 0x10;
            let mut block = ext.to_vec();
            while !block.len().is_multiple_of(4) {
                block.push(0);
            }
            p.extend_from_slice(&profile.to_be_bytes());
            p.extend_from_slice(&((block.len() / 4) as u16).to_be_bytes());
            p.extend_from_slice(&block);
        }
        p.extend_from_slice(payload);
        if padding > 0 {
            p[0] |= 0x20;
            p.extend(std::iter::repeat_n(0, usize::from(padding) - 1));
            p.push(padding);
        }
        p
    }

    #[test]
    fn reads_the_fixed_header_and_one_byte_extensions() {
        // TWCC 0x0102, audio level 33 with voice, mid "0", an unknown id 7, rid "h".
        let ext = [0x31, 1, 2, 0x10, 0x80 | 33, 0x40, b'0', 0x70, 9, 0xA0, b'h'];
        let p = packet(0xBEDE, &ext, b"payload", 0);
        let v = RtpView::parse(&p, &IDS).unwrap();
        assert!(v.marker);
        assert_eq!(
            (v.payload_type, v.seq, v.time, v.ssrc),
            (96, 0x1234, 0x01020304, 0xAABBCCDD)
        );
        assert_eq!(v.header_len, 12 + 4 + 12);
        assert_eq!(v.payload, b"payload");
        assert_eq!(v.ext.transport_cc, Some(0x0102));
        assert_eq!(v.ext.audio_level, Some((-33, true)));
        assert_eq!(v.ext.mid, Some(&b"0"[..]));
        assert_eq!(v.ext.rid, Some(&b"h"[..]));
        assert_eq!(v.ext.video_orientation, None);
    }

    #[test]
    fn reads_two_byte_extensions_and_strips_padding() {
        // Two-byte form (0x100 and an appbits nibble): rid "hi", orientation 3.
        let ext = [10, 2, b'h', b'i', 0, 13, 1, 3];
        let p = packet(0x1000, &ext, b"media", 4);
        let v = RtpView::parse(&p, &IDS).unwrap();
        assert_eq!(v.ext.rid, Some(&b"hi"[..]));
        assert_eq!(v.ext.video_orientation, Some(3));
        assert_eq!(v.payload, b"media");
    }

    #[test]
    fn refuses_what_is_shorter_than_it_claims() {
        let p = packet(0xBEDE, &[0x31, 1, 2], b"x", 0);
        for cut in 0..p.len() - 1 {
            assert_eq!(RtpView::parse(&p[..cut], &IDS), None, "cut at {cut}");
        }
        // Padding longer than the payload, and a count of zero.
        let mut bad = packet(0xBEDE, &[], b"abc", 2);
        *bad.last_mut().unwrap() = 9;
        assert_eq!(RtpView::parse(&bad, &IDS), None);
        *bad.last_mut().unwrap() = 0;
        assert_eq!(RtpView::parse(&bad, &IDS), None);
        // Not version 2.
        let mut v1 = packet(0xBEDE, &[], b"abc", 0);
        v1[0] = 0x40;
        assert_eq!(RtpView::parse(&v1, &IDS), None);
    }

    #[test]
    fn an_element_running_past_its_block_ends_it() {
        // Audio level, then an element claiming 16 bytes in a block of 4.
        let p = packet(0xBEDE, &[0x10, 12, 0x4F], b"x", 0);
        let v = RtpView::parse(&p, &IDS).unwrap();
        assert_eq!(v.ext.audio_level, Some((-12, false)));
        assert_eq!(v.ext.mid, None);
        assert_eq!(v.payload, b"x");
    }
}
