//! Framing of TURN over a byte stream (TCP, TLS): RFC 8656 §12.5.
//!
//! On a stream, STUN messages and ChannelData messages follow each other with no outer
//! framing; the first two bits of each tell which it is (`00` STUN, `01` ChannelData) and its
//! header tells its length. A STUN message is 20 bytes of header plus its length field (a
//! multiple of four); a ChannelData message is 4 bytes of header plus its length field, padded
//! to a multiple of four on a stream. Anything else cannot be resynchronised: the connection
//! is closed.

/// The longest frame there is: a STUN message of the greatest length (65,532, a multiple of
/// 4) with its 20-byte header. (A ChannelData frame is at most 4 + 65,536: a 65,535-byte
/// payload, padded.)
pub const MAX_FRAME: usize = 20 + 65_532;

/// Why a stream cannot be framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first byte is neither STUN (`00`) nor ChannelData (`01`).
    #[error("neither STUN nor ChannelData (first byte {0:#04x})")]
    UnknownKind(u8),
    /// A STUN header whose length is not a multiple of four.
    #[error("STUN length {0} is not a multiple of four")]
    BadStunLength(u16),
    /// A STUN header without the magic cookie (RFC 8489 §5): not STUN.
    #[error("no STUN magic cookie")]
    BadCookie,
}

const MAGIC_COOKIE: [u8; 4] = 0x2112_A442u32.to_be_bytes();

/// The length of the frame at the start of `buf`, padding included: `Ok(None)` while its
/// header is incomplete, an error when the stream is not TURN.
///
/// The frame may be longer than `buf`; the caller reads until it has that many bytes.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    match first >> 6 {
        0 => {
            if buf.len() < 8 {
                return Ok(None);
            }
            let len = u16::from_be_bytes([buf[2], buf[3]]);
            if !len.is_multiple_of(4) {
                return Err(FrameError::BadStunLength(len));
            }
            if buf[4..8] != MAGIC_COOKIE {
                return Err(FrameError::BadCookie);
            }
            Ok(Some(20 + usize::from(len)))
        }
        1 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            Ok(Some(4 + ((len + 3) & !3)))
        }
        _ => Err(FrameError::UnknownKind(first)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_frames_are_header_plus_length() {
        let c = [0x21, 0x12, 0xa4, 0x42];
        let h = |t: [u8; 2], len: u16| {
            let l = len.to_be_bytes();
            [t[0], t[1], l[0], l[1], c[0], c[1], c[2], c[3]]
        };
        assert_eq!(frame_len(&h([0x00, 0x01], 8)), Ok(Some(28)));
        assert_eq!(frame_len(&h([0x01, 0x01], 0)), Ok(Some(20)));
        assert_eq!(
            frame_len(&h([0x00, 0x01], 6)),
            Err(FrameError::BadStunLength(6))
        );
        assert_eq!(frame_len(&h([0x00, 0x01], 8)[..7]), Ok(None));
    }

    #[test]
    fn channel_data_is_padded_to_four() {
        assert_eq!(frame_len(&[0x40, 0x00, 0x00, 0x00]), Ok(Some(4)));
        assert_eq!(frame_len(&[0x40, 0x00, 0x00, 0x01]), Ok(Some(8)));
        assert_eq!(frame_len(&[0x7f, 0xff, 0x00, 0x04]), Ok(Some(8)));
        assert_eq!(frame_len(&[0x40, 0x01, 0xff, 0xff]), Ok(Some(4 + 65_536)));
    }

    #[test]
    fn incomplete_headers_wait_and_garbage_is_refused() {
        assert_eq!(frame_len(&[]), Ok(None));
        assert_eq!(frame_len(&[0x00, 0x01, 0x00]), Ok(None));
        assert_eq!(frame_len(&[0x40]), Ok(None));
        // TLS ClientHello on the plain port, HTTP, anything with the top bit set.
        // A TLS ClientHello on the plain port: looks like STUN by its first bits only.
        let hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03];
        assert_eq!(frame_len(&hello), Err(FrameError::BadStunLength(0x0102)));
        let mut hello4 = hello;
        hello4[3] = 0x04;
        assert_eq!(frame_len(&hello4), Err(FrameError::BadCookie));
        assert_eq!(frame_len(&hello4[..7]), Ok(None));
        // HTTP looks like ChannelData ("GE" = 0x4745); the driver refuses ChannelData on a
        // connection that has no allocation yet.
        assert_eq!(frame_len(b"GET "), Ok(Some(4 + 0x5420)));
        assert_eq!(frame_len(&[0x80]), Err(FrameError::UnknownKind(0x80)));
        assert_eq!(
            frame_len(&[0xc0, 0, 0, 0]),
            Err(FrameError::UnknownKind(0xc0))
        );
    }
}
