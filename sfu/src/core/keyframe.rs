//! Whether an RTP packet starts a key frame, from the first bytes of its payload: the payload
//! descriptor of VP8 (RFC 7741, 4.2 and 4.3), VP9 (RFC 9628, 4.2) or H.264's NAL unit header
//! (RFC 6184, 5.3 and 5.7-5.8). A simulcast layer switch waits for one, so that a subscriber
//! never gets a delta frame whose reference it lacks.
//!
//! These bytes stay readable under the end-to-end encryption WebRTC's encoded transforms allow
//! (SFrame and its kin leave the codec's payload header in the clear), so forwarding never
//! needs the media itself.

/// The video codecs whose key frames we can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    Vp9,
    H264,
    /// A codec we cannot read (AV1, H.265): a layer switch takes the next packet that
    /// starts a frame after the key frame request, trusting the request.
    Other,
}

/// Whether `payload` (an RTP payload of `codec`) is the first packet of a key frame.
pub fn starts_key_frame(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8(payload),
        VideoCodec::Vp9 => vp9(payload),
        VideoCodec::H264 => h264(payload),
        VideoCodec::Other => false,
    }
}

fn vp8(p: &[u8]) -> bool {
    let Some(&first) = p.first() else {
        return false;
    };
    // S: the start of a partition; PID: which one. The frame header is at the start of
    // partition 0.
    let (extended, start, partition) = (first & 0x80 != 0, first & 0x10 != 0, first & 0x07);
    if !start || partition != 0 {
        return false;
    }
    let mut at = 1;
    if extended {
        let Some(&x) = p.get(1) else {
            return false;
        };
        at = 2;
        if x & 0x80 != 0 {
            // PictureID: 7 bits, or 15 when its first bit (M) is set.
            let Some(&id) = p.get(at) else {
                return false;
            };
            at += if id & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID, Y, KEYIDX
        }
    }
    // The frame header's first bit (P, inverse key frame flag) is 0 for a key frame.
    p.get(at).is_some_and(|h| h & 0x01 == 0)
}

fn vp9(p: &[u8]) -> bool {
    let Some(&first) = p.first() else {
        return false;
    };
    // P: inter-picture predicted; B: the start of a frame.
    let (predicted, begins) = (first & 0x40 != 0, first & 0x08 != 0);
    !predicted && begins
}

const H264_IDR: u8 = 5;
const H264_SPS: u8 = 7;
const H264_STAP_A: u8 = 24;
const H264_FU_A: u8 = 28;

fn h264(p: &[u8]) -> bool {
    let Some(&header) = p.first() else {
        return false;
    };
    match header & 0x1f {
        H264_IDR | H264_SPS => true,
        H264_STAP_A => {
            // Aggregated units, each after its 16-bit size.
            let mut at = 1;
            while let (Some(&hi), Some(&lo)) = (p.get(at), p.get(at + 1)) {
                let size = usize::from(u16::from_be_bytes([hi, lo]));
                match p.get(at + 2) {
                    Some(nal) if matches!(nal & 0x1f, H264_IDR | H264_SPS) => return true,
                    Some(_) if size > 0 => at += 2 + size,
                    _ => return false,
                }
            }
            false
        }
        // A fragment: its header says whether it starts a unit and of which type.
        H264_FU_A => p
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && matches!(fu & 0x1f, H264_IDR | H264_SPS)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::{starts_key_frame, VideoCodec::*};

    #[test]
    fn vp8_key_frames_are_told_from_delta_frames_and_continuations() {
        // Descriptor without extensions (S=1, PID=0), then a key frame's header (P=0).
        assert!(starts_key_frame(Vp8, &[0x10, 0x00, 0x9d, 0x01, 0x2a]));
        // The same with a delta frame (P=1).
        assert!(!starts_key_frame(Vp8, &[0x10, 0x01, 0x00]));
        // Not the start of partition 0.
        assert!(!starts_key_frame(Vp8, &[0x00, 0x00]));
        assert!(!starts_key_frame(Vp8, &[0x11, 0x00]));
        // Extended: I with a 15-bit picture id, L, T: the header is at byte 6.
        let ext = [0x90, 0xe0, 0x80 | 0x12, 0x34, 0x07, 0x40, 0x00];
        assert!(starts_key_frame(Vp8, &ext));
        let mut delta = ext;
        delta[6] = 0x01;
        assert!(!starts_key_frame(Vp8, &delta));
        // Short or empty payloads are no key frame, and never out of bounds.
        for n in 0..ext.len() - 1 {
            assert!(!starts_key_frame(Vp8, &ext[..n]), "{n} bytes");
        }
    }

    #[test]
    fn vp9_key_frames_are_unpredicted_frame_starts() {
        assert!(starts_key_frame(Vp9, &[0x08]));
        assert!(!starts_key_frame(Vp9, &[0x48]), "inter-predicted");
        assert!(!starts_key_frame(Vp9, &[0x00]), "not a frame start");
        assert!(!starts_key_frame(Vp9, &[]));
    }

    #[test]
    fn h264_key_frames_in_single_aggregated_and_fragmented_units() {
        assert!(starts_key_frame(H264, &[0x65, 0x88]), "IDR");
        assert!(starts_key_frame(H264, &[0x67, 0x42]), "SPS");
        assert!(!starts_key_frame(H264, &[0x41, 0x9a]), "non-IDR slice");
        // STAP-A holding an SEI (6), then an SPS.
        let stap = [0x18, 0x00, 0x02, 0x06, 0x05, 0x00, 0x02, 0x67, 0x42];
        assert!(starts_key_frame(H264, &stap));
        assert!(!starts_key_frame(H264, &stap[..7]), "cut before the SPS");
        // A zero-sized unit ends the walk instead of spinning.
        assert!(!starts_key_frame(H264, &[0x18, 0x00, 0x00, 0x06]));
        // FU-A: the first fragment of an IDR, then a middle one.
        assert!(starts_key_frame(H264, &[0x7c, 0x85, 0x00]));
        assert!(!starts_key_frame(H264, &[0x7c, 0x05, 0x00]));
        assert!(!starts_key_frame(H264, &[0x7c]));
    }

    #[test]
    fn unknown_codecs_never_claim_a_key_frame() {
        assert!(!starts_key_frame(Other, &[0x10, 0x00]));
    }
}
