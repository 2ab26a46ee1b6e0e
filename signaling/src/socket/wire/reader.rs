//! The reading side of a WebSocket: client frames parsed, unmasked and put together into
//! messages; pings and closes answered.

use std::io;
use std::pin::Pin;

use tokio::io::{AsyncRead, ReadBuf, ReadHalf};

use super::frame::{parse_head, unmask, Parsed};
use super::{
    Conn, Io, BINARY, CLOSE, CONTINUATION, INVALID_DATA, MAX_AUTHENTICATED_FRAME, MAX_HEADER,
    NORMAL, PING, PONG, PROTOCOL_ERROR, READ_BUFFER, TEXT, TOO_BIG,
};

/// What came from the client.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary message (its bytes are not kept).
    Binary,
    /// A ping (answered already) or a pong.
    Control,
    /// The connection is over: the client closed it (answered already), left, or broke the
    /// protocol (closed with its code).
    Closed,
}

/// The reading side of a WebSocket, owned by its task.
pub struct Reader {
    pub(super) half: ReadHalf<Io>,
    /// Bytes read, `start..end` not parsed yet.
    pub(super) buf: Vec<u8>,
    pub(super) start: usize,
    pub(super) end: usize,
    /// A fragmented message being put together: its opcode and bytes so far.
    pub(super) message: Option<(u8, Vec<u8>)>,
    /// The last fragmented message, whole, until the next call.
    pub(super) assembled: Vec<u8>,
    /// The largest message taken: [`super::MAX_FRAME`] until [`Reader::authenticated`].
    pub(super) limit: usize,
}

impl Reader {
    /// The socket has authenticated: messages up to [`MAX_AUTHENTICATED_FRAME`] are taken.
    pub fn authenticated(&mut self) {
        self.limit = MAX_AUTHENTICATED_FRAME;
    }

    /// The next message from the client. Pings are answered and closes too, through `conn`;
    /// a protocol breach closes the connection.
    pub async fn next(&mut self, conn: &Conn) -> Incoming<'_> {
        // Where the message is, once complete: in `buf`, or in `message`.
        enum Done {
            Buf(usize, usize, u8),
            Assembled(u8),
        }
        if !self.assembled.is_empty() {
            self.assembled = Vec::new();
        }
        let done = loop {
            let head = match parse_head(&self.buf[self.start..self.end], self.limit) {
                Parsed::Error(code, why) => {
                    conn.close(code, why, false);
                    return Incoming::Closed;
                }
                Parsed::More => None,
                Parsed::Frame(h) if self.end - self.start >= h.size + h.len => Some(h),
                Parsed::Frame(h) => {
                    self.make_room(h.size + h.len);
                    None
                }
            };
            let Some(h) = head else {
                if self.end - self.start < MAX_HEADER {
                    self.make_room(MAX_HEADER);
                }
                match self.fill().await {
                    Ok(0) | Err(_) => return Incoming::Closed,
                    Ok(_) => continue,
                }
            };
            let from = self.start + h.size;
            let to = from + h.len;
            self.start = to;
            unmask(&mut self.buf[from..to], h.mask);
            match h.opcode {
                PING => {
                    let payload = &self.buf[from..to];
                    conn.send(PONG, &[payload], false);
                    return Incoming::Control;
                }
                PONG => return Incoming::Control,
                CLOSE => {
                    let payload = &self.buf[from..to];
                    // Echoed, if it is a code an endpoint may send (RFC 6455, 7.4).
                    let code = match payload {
                        [] => NORMAL,
                        [a, b, ..] => match u16::from_be_bytes([*a, *b]) {
                            c @ (1000..=1003 | 1007..=1011 | 3000..=4999) => c,
                            _ => PROTOCOL_ERROR,
                        },
                        [_] => PROTOCOL_ERROR,
                    };
                    conn.close(code, "", false);
                    return Incoming::Closed;
                }
                TEXT | BINARY => {
                    if self.message.is_some() {
                        conn.close(PROTOCOL_ERROR, "a new message before the last ended", false);
                        return Incoming::Closed;
                    }
                    if h.fin {
                        break Done::Buf(from, to, h.opcode);
                    }
                    self.message = Some((h.opcode, self.buf[from..to].to_vec()));
                }
                CONTINUATION => {
                    let Some((opcode, bytes)) = &mut self.message else {
                        conn.close(PROTOCOL_ERROR, "a continuation of no message", false);
                        return Incoming::Closed;
                    };
                    if bytes.len() + h.len > self.limit {
                        conn.close(TOO_BIG, "message too big", false);
                        return Incoming::Closed;
                    }
                    bytes.extend_from_slice(&self.buf[from..to]);
                    if h.fin {
                        let opcode = *opcode;
                        self.assembled = std::mem::take(bytes);
                        self.message = None;
                        break Done::Assembled(opcode);
                    }
                }
                _ => {
                    conn.close(PROTOCOL_ERROR, "unknown opcode", false);
                    return Incoming::Closed;
                }
            }
        };
        let (opcode, bytes) = match done {
            Done::Buf(from, to, opcode) => (opcode, &self.buf[from..to]),
            Done::Assembled(opcode) => (opcode, &self.assembled[..]),
        };
        if opcode == BINARY {
            return Incoming::Binary;
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => Incoming::Text(text),
            Err(_) => {
                conn.close(INVALID_DATA, "text is UTF-8", false);
                Incoming::Closed
            }
        }
    }

    /// Room for `need` bytes from `start`: the unparsed bytes moved to the front, the buffer
    /// grown if it must be (and back to [`READ_BUFFER`] once a big message has gone).
    fn make_room(&mut self, need: usize) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
    }

    /// Reads what the socket has (after `end`).
    async fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > 4 * READ_BUFFER {
                self.buf = vec![0; READ_BUFFER];
            }
        }
        // `next` made room for the frame (or its header) it waits for.
        debug_assert!(self.end < self.buf.len());
        let end = self.end;
        let n = std::future::poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut self.buf[end..]);
            Pin::new(&mut self.half)
                .poll_read(cx, &mut rb)
                .map_ok(|()| rb.filled().len())
        })
        .await?;
        self.end += n;
        Ok(n)
    }
}
