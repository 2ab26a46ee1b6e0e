//! The TCP/TLS stream framer (`proto::stream::frame_len`), used the way the io driver's
//! `Driver::consume` uses it (`turn/src/io/stream.rs`): whole frames are handed on where they
//! lie in a read, a frame cut by the end of a read is completed in `pending` (header first,
//! never taking bytes of the next frame), and a framing error ends the connection.
//!
//! Input: byte 0 = how many chunk sizes follow (mod 32); then that many size bytes (a read of
//! `size + 1` bytes, 255 = everything left), used in a cycle; the rest is the byte stream.
//! No sizes: one read of the whole stream.
//!
//! Differential invariant: framing the whole stream at once and framing it read by read give
//! exactly the same frames at the same offsets, then the same error at the same offset, or the
//! same incomplete tail. Every frame is one `frame_len` says it is, starts with `00` (STUN) or
//! `01` (ChannelData), is a multiple of four bytes and within the largest frame there is
//! (`MAX_FRAME`: a 65,552-byte STUN message; ChannelData at most 4 + 65,536). The first eight frames are
//! then handed to the core from a TCP client, as the driver does: one answer at most each, to
//! that client.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_turn::proto::stream::{frame_len, FrameError, MAX_FRAME};
use switchboard_turn::proto::{ClientAction, Server};
use switchboard_turn_fuzz::{at, base_config, client, Reader};

/// How framing a stream ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Every byte framed, or an incomplete frame of this many bytes left.
    Tail(usize),
    /// A framing error in the frame starting at this offset.
    Error(usize, FrameError),
}

/// The reference: the whole stream at once.
fn whole(stream: &[u8]) -> (Vec<(usize, &[u8])>, End) {
    let mut frames = Vec::new();
    let mut off = 0;
    loop {
        let rest = &stream[off..];
        if rest.is_empty() {
            return (frames, End::Tail(0));
        }
        match frame_len(rest) {
            Err(e) => return (frames, End::Error(off, e)),
            Ok(Some(n)) if n <= rest.len() => {
                frames.push((off, &rest[..n]));
                off += n;
            }
            _ => return (frames, End::Tail(rest.len())),
        }
    }
}

/// The driver's per-connection framing state (`Conn::pending`), fed read by read.
#[derive(Default)]
struct Conn {
    pending: Vec<u8>,
    /// Stream offset of `pending[0]`.
    pending_at: usize,
    /// Stream offset of the next byte read.
    offset: usize,
    frames: Vec<(usize, Vec<u8>)>,
}

impl Conn {
    /// `Driver::consume`, without the socket: the same branches in the same order.
    fn consume(&mut self, mut data: &[u8]) -> Result<(), (usize, FrameError)> {
        while !data.is_empty() {
            if self.pending.is_empty() {
                let at = self.offset;
                match frame_len(data).map_err(|e| (at, e))? {
                    Some(n) if n <= data.len() => {
                        self.frames.push((at, data[..n].to_vec()));
                        data = &data[n..];
                        self.offset += n;
                    }
                    _ => {
                        self.pending_at = at;
                        self.pending.extend_from_slice(data);
                        self.offset += data.len();
                        return Ok(());
                    }
                }
            } else {
                let at = self.pending_at;
                let need = match frame_len(&self.pending).map_err(|e| (at, e))? {
                    Some(n) => n,
                    None if self.pending[0] >> 6 == 0 => 8,
                    None => 4,
                };
                assert!(
                    need >= self.pending.len(),
                    "pending holds more than its frame"
                );
                let take = (need - self.pending.len()).min(data.len());
                self.pending.extend_from_slice(&data[..take]);
                data = &data[take..];
                self.offset += take;
                if frame_len(&self.pending).map_err(|e| (at, e))? == Some(self.pending.len()) {
                    let frame = std::mem::take(&mut self.pending);
                    self.frames.push((at, frame));
                }
            }
        }
        Ok(())
    }
}

fn check_frame(frame: &[u8]) {
    let n = frame.len();
    assert_eq!(
        frame_len(frame),
        Ok(Some(n)),
        "a frame is what frame_len says"
    );
    assert!(n >= 4 && n.is_multiple_of(4), "frame of {n} bytes");
    match frame[0] >> 6 {
        0 => assert!((20..=MAX_FRAME).contains(&n), "STUN frame of {n} bytes"),
        1 => assert!(n <= MAX_CHANNEL_DATA, "ChannelData frame of {n} bytes"),
        _ => panic!("frame starting with {:#04x}", frame[0]),
    }
}

/// The longest ChannelData frame: a 65,535-byte payload, padded.
const MAX_CHANNEL_DATA: usize = 4 + 65_536;

fuzz_target!(|input: &[u8]| {
    let mut r = Reader::new(input);
    let count = usize::from(r.u8() % 32);
    let sizes: Vec<usize> = r
        .bytes(count)
        .iter()
        .map(|&s| {
            if s == 255 {
                usize::MAX
            } else {
                usize::from(s) + 1
            }
        })
        .collect();
    let stream = r.bytes(usize::MAX);

    let (frames, end) = whole(stream);
    for (_, f) in &frames {
        check_frame(f);
    }

    let mut conn = Conn::default();
    let mut rest = stream;
    let mut i = 0;
    let mut chunked_end = None;
    while !rest.is_empty() {
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(usize::MAX);
        let (read, next) = rest.split_at(n.min(rest.len()));
        rest = next;
        i += 1;
        if let Err((at, e)) = conn.consume(read) {
            // The driver closes the connection: nothing more is read.
            chunked_end = Some(End::Error(at, e));
            break;
        }
    }
    let chunked_end = chunked_end.unwrap_or(End::Tail(conn.pending.len()));

    assert_eq!(frames.len(), conn.frames.len(), "frame counts differ");
    for ((a_at, a), (b_at, b)) in frames.iter().zip(&conn.frames) {
        assert_eq!(a_at, b_at, "frame offsets differ");
        assert_eq!(*a, &b[..], "frames differ at offset {a_at}");
    }
    assert_eq!(end, chunked_end, "the stream ends differently read by read");
    if let End::Tail(n) = end {
        assert_eq!(
            frames.iter().map(|(_, f)| f.len()).sum::<usize>() + n,
            stream.len()
        );
    }

    // The first frames, to the core from a TCP client (as the driver hands them on); the
    // stun_message and relay_core targets go further into the core.
    let mut server = Server::new(base_config());
    let tcp = client(4);
    for (_, f) in frames.iter().take(8) {
        let action = server.handle_client(at(0), tcp, f);
        assert_eq!(action, ClientAction::Done, "relayed without an allocation");
        let mut answers = 0;
        while let Some(t) = server.poll_transmit() {
            assert_eq!(t.tuple, tcp);
            answers += 1;
        }
        assert!(answers <= 1, "{answers} answers to one frame");
        while server.poll_event().is_some() {}
    }
});
