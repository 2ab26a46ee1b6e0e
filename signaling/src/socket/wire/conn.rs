//! The writing side of a WebSocket, shared by everyone who sends to it: a frame is written at
//! once when nothing is queued before it, else queued for the connection's task; then the
//! close.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncWrite, WriteHalf};

use super::frame::{frame_bytes, header};
use super::{Io, CLOSE, CLOSE_TIMEOUT, NORMAL, PING, QUEUE, SMALL, TEXT, WRITE_BATCH};
use crate::hub::Backlog;

/// The writing side of a WebSocket, shared by everyone who sends to it.
pub struct Conn {
    pub(super) out: Mutex<Out>,
    /// Set (and the connection's task woken) when it has something to do: frames the socket
    /// could not take at once, or a close.
    pub(super) woken: AtomicBool,
    pub(super) waker: AtomicWaker,
}

pub(super) struct Out {
    pub(super) half: WriteHalf<Io>,
    /// Whole frames not written yet, in order; the first may be partly written.
    pub(super) queue: VecDeque<Vec<u8>>,
    /// Bytes of the first queued frame written already.
    pub(super) written: usize,
    /// A close was asked for: nothing more is taken.
    pub(super) closing: Option<Closing>,
    /// A write failed: nothing more is taken.
    pub(super) failed: bool,
    /// The close went out (or could not): [`Conn::finish`] has run.
    pub(super) finished: bool,
}

#[derive(Clone, Debug)]
pub(super) struct Closing {
    pub(super) code: u16,
    pub(super) reason: String,
    /// Whether what is queued goes out before the close frame.
    pub(super) flush: bool,
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

    pub(super) fn send<P: AsRef<[u8]>>(&self, opcode: u8, parts: &[P], bounded: bool) -> bool {
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

    /// The frames queued and their bytes not written yet.
    pub fn backlog(&self) -> Backlog {
        let o = self.out();
        let bytes: usize = o.queue.iter().map(Vec::len).sum();
        Backlog {
            messages: o.queue.len(),
            bytes: bytes - o.written,
        }
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
