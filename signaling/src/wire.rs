//! The hub's WebSockets (RFC 6455, server side), for `/ws` and Socket.IO's websocket
//! transport.
//!
//! # Why not tungstenite's stream
//! A relayed message used to cross two tasks: the sender's socket task handed it to the
//! target's queue, and the target's task woke up to write it through tokio-tungstenite. Here
//! a connection's writing side is shared: whoever has a message for a socket writes it at
//! once, without waiting, if nothing is queued before it; only what the socket cannot take
//! at once is queued, for the socket's own task to write when it can. A relayed candidate is
//! then one read, one write and no task switch, which is most of what `bench/hub.sh` measures
//! (about a fifth of the server's CPU per message went to the second task and the stream
//! adapters). The framing is the protocol's simplest part: frames are parsed and built here,
//! on hyper's upgraded connection.
//!
//! # What is taken
//! No extension is negotiated, so reserved bits must be clear; client frames must be masked;
//! control frames are whole and at most 125 bytes; a message (fragmented or not) is at most
//! [`crate::limits::MAX_FRAME`] bytes; text must be UTF-8. A breach closes the connection with the
//! protocol's code (1002, 1007 or 1009). A ping is answered with its pong; a close is
//! answered with a close with the same code, after which nothing more is read.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::task::AtomicWaker;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use sha1::{Digest as _, Sha1};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};

use crate::limits::{MAX_FRAME, QUEUE, READ_BUFFER};

type Io = TokioIo<Upgraded>;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Close codes (RFC 6455, 7.4.1).
pub const NORMAL: u16 = 1000;
pub const GOING_AWAY: u16 = 1001;
pub const PROTOCOL_ERROR: u16 = 1002;
pub const INVALID_DATA: u16 = 1007;
pub const POLICY: u16 = 1008;
pub const TOO_BIG: u16 = 1009;
pub const TRY_AGAIN_LATER: u16 = 1013;

/// The most queued frames written with one syscall.
const WRITE_BATCH: usize = 32;
/// How long the close (and what is flushed before it) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Frames up to this size are written from one buffer (copied there), longer ones with a
/// vectored write of their parts.
const SMALL: usize = 1024;
/// The most bytes of a frame header: 2, an extended length of 8, a mask of 4.
const MAX_HEADER: usize = 14;

/// `GET` with `Upgrade: websocket`: the handshake's checks, then [`Upgrade::on_upgrade`].
pub struct Upgrade {
    on: OnUpgrade,
    accept: HeaderValue,
}

/// Why a request is no WebSocket handshake.
#[derive(Debug)]
pub struct NotWebSocket(StatusCode, &'static str);

impl IntoResponse for NotWebSocket {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = NotWebSocket;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let h = &parts.headers;
        if parts.method != axum::http::Method::GET {
            return Err(NotWebSocket(
                StatusCode::METHOD_NOT_ALLOWED,
                "a WebSocket handshake is a GET",
            ));
        }
        if !has_token(h, header::CONNECTION, "upgrade") {
            return Err(NotWebSocket(
                StatusCode::BAD_REQUEST,
                "Connection header did not include 'upgrade'",
            ));
        }
        if !has_token(h, header::UPGRADE, "websocket") {
            return Err(NotWebSocket(
                StatusCode::BAD_REQUEST,
                "`Upgrade` header did not include 'websocket'",
            ));
        }
        if h.get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v != "13")
        {
            return Err(NotWebSocket(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Version` header did not include '13'",
            ));
        }
        let Some(key) = h.get(header::SEC_WEBSOCKET_KEY) else {
            return Err(NotWebSocket(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Key` header missing",
            ));
        };
        let accept = accept_key(key.as_bytes());
        let Some(on) = parts.extensions.remove::<OnUpgrade>() else {
            return Err(NotWebSocket(
                StatusCode::UPGRADE_REQUIRED,
                "WebSocket request couldn't be upgraded since no upgrade state was present",
            ));
        };
        Ok(Upgrade { on, accept })
    }
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455, 4.2.2).
fn accept_key(key: &[u8]) -> HeaderValue {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let b64 = base64::engine::general_purpose::STANDARD.encode(sha1.finalize());
    HeaderValue::from_str(&b64).expect("base64 is a header value")
}

impl Upgrade {
    /// Answers 101 and runs `serve` on the connection once hyper hands it over.
    pub fn on_upgrade<F, Fut>(self, serve: F) -> Response
    where
        F: FnOnce(Arc<Conn>, Reader) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on = self.on;
        tokio::spawn(async move {
            let Ok(upgraded) = on.await else {
                return;
            };
            let (conn, reader) = split(TokioIo::new(upgraded));
            serve(conn.clone(), reader).await;
            conn.finish().await;
        });
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let h = response.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        response
    }
}

/// The two sides of an upgraded connection.
fn split(io: Io) -> (Arc<Conn>, Reader) {
    let (read, write) = tokio::io::split(io);
    let conn = Arc::new(Conn {
        out: Mutex::new(Out {
            half: write,
            queue: VecDeque::new(),
            written: 0,
            closing: None,
            failed: false,
            finished: false,
        }),
        woken: AtomicBool::new(false),
        waker: AtomicWaker::new(),
    });
    let reader = Reader {
        half: read,
        buf: vec![0; READ_BUFFER],
        start: 0,
        end: 0,
        message: None,
        assembled: Vec::new(),
    };
    (conn, reader)
}

/// The writing side of a WebSocket, shared by everyone who sends to it.
pub struct Conn {
    out: Mutex<Out>,
    /// Set (and the connection's task woken) when it has something to do: frames the socket
    /// could not take at once, or a close.
    woken: AtomicBool,
    waker: AtomicWaker,
}

struct Out {
    half: WriteHalf<Io>,
    /// Whole frames not written yet, in order; the first may be partly written.
    queue: VecDeque<Vec<u8>>,
    /// Bytes of the first queued frame written already.
    written: usize,
    /// A close was asked for: nothing more is taken.
    closing: Option<Closing>,
    /// A write failed: nothing more is taken.
    failed: bool,
    /// The close went out (or could not): [`Conn::finish`] has run.
    finished: bool,
}

#[derive(Clone, Debug)]
struct Closing {
    code: u16,
    reason: String,
    /// Whether what is queued goes out before the close frame.
    flush: bool,
}

/// A frame's header: FIN, `opcode`, no mask, `len`.
fn header(buf: &mut [u8; 10], opcode: u8, len: usize) -> &[u8] {
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

impl Conn {
    fn out(&self) -> MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a text message made of `parts`: written at once if the socket takes it and
    /// nothing is queued before it, else queued. False if the connection is closing or
    /// failed, or, when `bounded`, [`QUEUE`] frames are queued already (the caller then
    /// closes it: a slow consumer).
    pub fn send_text(&self, parts: &[&str], bounded: bool) -> bool {
        self.send(TEXT, parts, bounded)
    }

    /// A ping (the server's heartbeat), not counted against the queue's bound.
    pub fn ping(&self) -> bool {
        self.send::<&[u8]>(PING, &[], false)
    }

    fn send<P: AsRef<[u8]>>(&self, opcode: u8, parts: &[P], bounded: bool) -> bool {
        let mut o = self.out();
        if o.closing.is_some() || o.failed {
            return false;
        }
        self.push(&mut o, opcode, parts, bounded)
    }

    fn push<P: AsRef<[u8]>>(&self, o: &mut Out, opcode: u8, parts: &[P], bounded: bool) -> bool {
        let len: usize = parts.iter().map(|p| p.as_ref().len()).sum();
        let mut head = [0u8; 10];
        let head = header(&mut head, opcode, len);
        if !o.queue.is_empty() {
            if bounded && o.queue.len() >= QUEUE {
                return false;
            }
            o.queue.push_back(frame_bytes(head, parts));
            return true;
        }
        // Nothing queued, so the connection's task is not waiting to write: try now, in one
        // send of the whole frame (cheaper in the kernel than a writev of its parts). The
        // no-op waker is all this registers; if the socket is full, the task takes over with
        // its own.
        let total = head.len() + len;
        let mut small = [0u8; SMALL];
        let big;
        let frame: &[u8] = if total <= SMALL {
            let mut at = 0;
            for p in std::iter::once(head).chain(parts.iter().map(AsRef::as_ref)) {
                small[at..at + p.len()].copy_from_slice(p);
                at += p.len();
            }
            &small[..total]
        } else {
            big = frame_bytes(head, parts);
            &big
        };
        let mut cx = Context::from_waker(Waker::noop());
        let n = match Pin::new(&mut o.half).poll_write(&mut cx, frame) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                o.failed = true;
                self.wake();
                return false;
            }
            Poll::Ready(Ok(n)) => n,
            Poll::Pending => 0,
        };
        if n < total {
            o.queue.push_back(frame[n..].to_vec());
            self.wake();
        }
        true
    }

    /// Asks for the connection to close with `code` and `reason` (the first ask stands);
    /// `flush`: what is queued goes first (for at most a second). The connection's task
    /// writes the close and ends.
    pub fn close(&self, code: u16, reason: &str, flush: bool) {
        let mut o = self.out();
        if o.closing.is_none() {
            o.closing = Some(Closing {
                code,
                reason: reason.to_owned(),
                flush,
            });
        }
        drop(o);
        self.wake();
    }

    /// Whether a close was asked for, or a write failed.
    pub fn is_closing(&self) -> bool {
        let o = self.out();
        o.closing.is_some() || o.failed
    }

    fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Until the connection has something to do ([`Conn::flush`], or a close).
    pub fn woken(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            if self.woken.swap(false, Ordering::AcqRel) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.woken.swap(false, Ordering::AcqRel) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// Writes what is queued.
    pub async fn flush(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await
    }

    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut o = self.out();
        let o = &mut *o;
        loop {
            if o.failed {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if o.queue.is_empty() {
                if o.queue.capacity() > 4 * WRITE_BATCH {
                    o.queue = VecDeque::new();
                }
                return Poll::Ready(Ok(()));
            }
            let mut slices = [IoSlice::new(&[]); WRITE_BATCH];
            let mut count = 0;
            for (i, f) in o.queue.iter().take(WRITE_BATCH).enumerate() {
                slices[i] = IoSlice::new(if i == 0 { &f[o.written..] } else { f });
                count += 1;
            }
            let n = match Pin::new(&mut o.half).poll_write_vectored(cx, &slices[..count]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => io::Result::Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(r) => r,
            };
            let mut n = match n {
                Ok(n) => n,
                Err(e) => {
                    o.failed = true;
                    return Poll::Ready(Err(e));
                }
            };
            while n > 0 {
                let left = o.queue[0].len() - o.written;
                if n >= left {
                    o.queue.pop_front();
                    o.written = 0;
                    n -= left;
                } else {
                    o.written += n;
                    n = 0;
                }
            }
        }
    }

    /// The end of the connection: what was queued (if the close asked for it), the close
    /// frame, the shutdown, each bounded. Once; later calls return at once.
    pub async fn finish(&self) {
        let closing = {
            let mut o = self.out();
            if std::mem::replace(&mut o.finished, true) {
                return;
            }
            // Nothing more is taken from here on; with no close asked for, a plain one.
            let normal = || Closing {
                code: NORMAL,
                reason: String::new(),
                flush: false,
            };
            o.closing.get_or_insert_with(normal).clone()
        };
        if closing.flush {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.flush()).await;
        }
        {
            let mut o = self.out();
            if o.failed {
                return;
            }
            // What is still queued is dropped, but for a frame in part written, which must
            // end before the close.
            if o.written > 0 {
                o.queue.truncate(1);
            } else {
                o.queue.clear();
            }
            let code = closing.code.to_be_bytes();
            // A close frame's payload is at most 125 bytes: the code and the reason.
            let mut end = closing.reason.len().min(123);
            while !closing.reason.is_char_boundary(end) {
                end -= 1;
            }
            let reason = &closing.reason.as_bytes()[..end];
            self.push(&mut o, CLOSE, &[&code[..], reason], false);
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            if self.flush().await.is_ok() {
                let shutdown =
                    |cx: &mut Context<'_>| Pin::new(&mut self.out().half).poll_shutdown(cx);
                let _ = std::future::poll_fn(shutdown).await;
            }
        })
        .await;
    }
}

/// A whole frame as bytes: its header, then its payload's parts.
fn frame_bytes<P: AsRef<[u8]>>(head: &[u8], parts: &[P]) -> Vec<u8> {
    let len = head.len() + parts.iter().map(|p| p.as_ref().len()).sum::<usize>();
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(head);
    for p in parts {
        v.extend_from_slice(p.as_ref());
    }
    v
}

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
    half: ReadHalf<Io>,
    /// Bytes read, `start..end` not parsed yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// A fragmented message being put together: its opcode and bytes so far.
    message: Option<(u8, Vec<u8>)>,
    /// The last fragmented message, whole, until the next call.
    assembled: Vec<u8>,
}

/// One parsed frame header.
struct Head {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Header bytes.
    size: usize,
    len: usize,
}

enum Parsed {
    Frame(Head),
    More,
    Error(u16, &'static str),
}

fn parse_head(b: &[u8]) -> Parsed {
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
    if len > MAX_FRAME as u64 {
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

fn unmask(data: &mut [u8], mask: [u8; 4]) {
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

impl Reader {
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
            let head = match parse_head(&self.buf[self.start..self.end]) {
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
                    if bytes.len() + h.len > MAX_FRAME {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_is_rfc_6455s_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

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
            assert!(matches!(parse_head(&hello[..cut]), Parsed::More), "{cut}");
        }
        let Parsed::Frame(h) = parse_head(&hello) else {
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
            assert!(matches!(parse_head(b), Parsed::Error(..)), "{i}");
        }
        assert!(matches!(
            parse_head(&[0x81, 0xFF, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0]),
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
