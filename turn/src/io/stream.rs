//! TURN over TCP and TLS (RFC 8656 §3.1, §12.5): client connections on the driver's loop.
//!
//! A connection reads into the driver's buffer and hands every complete frame to the core
//! straight from it; only a frame cut by the end of a read is copied, into the connection's
//! `pending` (at most one frame, 64 KiB). Writes go straight to the socket; what the socket
//! does not take waits in `out` (ciphertext under TLS), which is bounded: past
//! [`OUT_LIMIT`] relayed data is dropped, as a congested UDP path would, and a queue that has
//! not moved for `stall_timeout` closes the connection. So a client that stops reading, or
//! vanished without a FIN, holds at most one frame in and [`OUT_LIMIT`] (twice that for STUN
//! answers) out, and not for long.
//!
//! A connection must authenticate (make an allocation) within `unauthenticated_timeout` of
//! being accepted; it is closed when its allocation ends, and its allocation ends when it
//! closes. A framing error, a TLS error or a reset closes that connection only.
//!
//! Connections come from the acceptor thread (`accept.rs`), which owns the listeners, applies
//! the caps and does the TLS handshakes: a TLS connection arrives here established.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::proto::stream::{frame_len, FrameError};
use crate::proto::{FiveTuple, Time};

use super::accept::Acceptor;
use super::{Driver, Token, BATCH};

/// Relayed data queued for one connection beyond which more is dropped.
const OUT_LIMIT: usize = 256 << 10;
/// How often connection deadlines are checked.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// A completed frame buffer larger than this is given back rather than kept for the next.
const PENDING_KEEP: usize = 16 << 10;

pub(super) struct Conn {
    sock: TcpStream,
    tuple: FiveTuple,
    tls: Option<Box<rustls::ServerConnection>>,
    /// A frame begun by an earlier read.
    pending: Vec<u8>,
    /// Bytes the socket has not taken yet, from `out_head` on.
    out: Vec<u8>,
    out_head: usize,
    /// Whether epoll watches for writability (only while `out` holds something).
    watching_out: bool,
    /// Until when it may stay without an allocation; `None` once it has one.
    auth_deadline: Option<Time>,
    /// Since when `out` has held bytes without the socket taking any.
    stalled_since: Option<Time>,
    /// Close once `out` is flushed (its allocation ended).
    closing: bool,
}

impl Conn {
    fn queued(&self) -> usize {
        self.out.len() - self.out_head
    }
}

/// Why a connection closed, for the log; `None` for an orderly close.
type Why = Option<&'static str>;

impl Driver {
    /// Takes the connections the acceptor thread has made ready. What the client of a TLS one
    /// sent along with its handshake's end is handled at once.
    pub(super) fn on_arrivals(&mut self, now: Time, buf: &mut [u8]) {
        let Some(acceptor) = &self.acceptor else {
            return;
        };
        acceptor.ready.drain();
        while let Some(a) = self.acceptor.as_ref().and_then(Acceptor::next) {
            let tls = a.tls.is_some();
            // The authentication deadline counts from the accept, the handshake included.
            let left = self
                .unauthenticated_timeout
                .saturating_sub(a.accepted.elapsed());
            let Some(index) = self.register(a.sock, a.tuple, a.tls, now + left, now) else {
                continue;
            };
            if tls {
                if let Err(why) = self.on_tls_records(index, now, buf) {
                    self.close_conn(index, now, why);
                }
            }
        }
    }

    /// Makes a connection one of the loop's.
    fn register(
        &mut self,
        sock: TcpStream,
        tuple: FiveTuple,
        tls: Option<Box<rustls::ServerConnection>>,
        auth_deadline: Time,
        now: Time,
    ) -> Option<usize> {
        let slot = match self.free_conns.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        if let Err(e) = self.epoll.add(sock.as_raw_fd(), Token::Conn(slot)) {
            tracing::warn!(error = %e, "cannot register a TURN connection");
            self.free_conns.push(slot);
            self.release(tuple.client);
            return None;
        }
        if let Some(&old) = self.by_tuple.get(&tuple) {
            // The client reconnected from the same port before its old connection's
            // close reached us: that one is over.
            self.close_conn(old, now, None);
        }
        self.by_tuple.insert(tuple, slot);
        self.conns[slot] = Some(Conn {
            sock,
            tuple,
            tls,
            pending: Vec::new(),
            out: Vec::new(),
            out_head: 0,
            watching_out: false,
            auth_deadline: Some(auth_deadline),
            stalled_since: None,
            closing: false,
        });
        if self.next_conn_check.is_none() {
            self.next_conn_check = Some(now + CHECK_INTERVAL);
        }
        Some(slot)
    }

    /// A connection is gone: out of the count, and its place free at the acceptor.
    fn release(&mut self, client: SocketAddr) {
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
        if let Some(a) = &self.acceptor {
            a.closed(client);
        }
    }

    /// A connection is readable or writable.
    pub(super) fn on_conn(&mut self, index: usize, writable: bool, now: Time, buf: &mut [u8]) {
        if writable {
            self.flush(index, now);
        }
        for _ in 0..BATCH {
            let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
                return;
            };
            let read = match &mut conn.tls {
                None => conn.sock.read(buf),
                Some(tls) => tls.read_tls(&mut conn.sock),
            };
            match read {
                Ok(0) => return self.close_conn(index, now, None),
                Ok(n) => {
                    let result = if conn.tls.is_some() {
                        self.on_tls_records(index, now, buf)
                    } else {
                        self.consume(index, now, &buf[..n]).map_err(Some)
                    };
                    if let Err(why) = result {
                        return self.close_conn(index, now, why);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close_conn(index, now, Some("read error")),
            }
        }
    }

    /// Decrypts what `read_tls` took in, hands the plaintext on, and sends what the TLS
    /// session has to say (handshake records, alerts).
    fn on_tls_records(&mut self, index: usize, now: Time, buf: &mut [u8]) -> Result<(), Why> {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return Ok(());
        };
        let Some(tls) = conn.tls.as_mut() else {
            return Ok(());
        };
        if let Err(e) = tls.process_new_packets() {
            tracing::debug!(client = %conn.tuple.client, error = %e, "TLS error");
            // Send the alert if the socket takes it and nothing is queued ahead of it.
            if conn.out.len() == conn.out_head {
                let _ = tls.write_tls(&mut conn.sock);
            }
            return Err(Some("TLS error"));
        }
        loop {
            let Some(tls) = self
                .conns
                .get_mut(index)
                .and_then(Option::as_mut)
                .and_then(|c| c.tls.as_mut())
            else {
                return Ok(());
            };
            match tls.reader().read(buf) {
                // close_notify: an orderly end.
                Ok(0) => return Err(None),
                Ok(n) => self.consume(index, now, &buf[..n]).map_err(Some)?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Err(Some("TLS read error")),
            }
        }
        self.flush_tls(index, now);
        Ok(())
    }

    /// Splits `data` (the next bytes of the stream) into frames and hands each to the core.
    fn consume(&mut self, index: usize, now: Time, mut data: &[u8]) -> Result<(), &'static str> {
        let framing = |e: FrameError| {
            tracing::debug!(error = %e, "framing error");
            "framing error"
        };
        while !data.is_empty() {
            let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
                return Ok(());
            };
            if conn.closing {
                // Its allocation is gone; nothing it sends now can be answered in order.
                return Ok(());
            }
            if data[0] >> 6 == 1 && conn.pending.is_empty() && conn.auth_deadline.is_some() {
                // ChannelData before any allocation: not a TURN client (HTTP looks like this).
                return Err("ChannelData before an allocation");
            }
            if conn.pending.is_empty() {
                // Whole frames are handled where they lie.
                match frame_len(data).map_err(framing)? {
                    Some(n) if n <= data.len() => {
                        let tuple = conn.tuple;
                        let action = self.server.handle_client(now, tuple, &data[..n]);
                        self.act(now, action);
                        self.drain(now);
                        data = &data[n..];
                    }
                    _ => {
                        conn.pending.extend_from_slice(data);
                        return Ok(());
                    }
                }
            } else {
                // Complete the header (8 bytes tell a STUN frame, 4 a ChannelData one), then
                // the frame, never taking bytes of the next.
                let need = match frame_len(&conn.pending).map_err(framing)? {
                    Some(n) => n,
                    None if conn.pending[0] >> 6 == 0 => 8,
                    None => 4,
                };
                let take = (need - conn.pending.len()).min(data.len());
                conn.pending.extend_from_slice(&data[..take]);
                data = &data[take..];
                if frame_len(&conn.pending).map_err(framing)? == Some(conn.pending.len()) {
                    let mut frame = std::mem::take(&mut conn.pending);
                    let tuple = conn.tuple;
                    let action = self.server.handle_client(now, tuple, &frame);
                    self.act(now, action);
                    self.drain(now);
                    frame.clear();
                    if frame.capacity() <= PENDING_KEEP {
                        if let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) {
                            conn.pending = frame;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Queues a message for a connection and writes what the socket takes.
    pub(super) fn send_stream(&mut self, index: usize, now: Time, data: &[u8], control: bool) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let limit = if control { 2 * OUT_LIMIT } else { OUT_LIMIT };
        if conn.queued() >= limit {
            return; // A reader this slow loses messages, as it would over UDP.
        }
        match &mut conn.tls {
            None => {
                let mut rest = data;
                if conn.queued() == 0 {
                    match conn.sock.write(data) {
                        Ok(n) => rest = &data[n..],
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return self.close_conn(index, now, Some("write error")),
                    }
                }
                if !rest.is_empty() {
                    conn.out.extend_from_slice(rest);
                    self.wait_writable(index, now);
                }
            }
            Some(tls) => {
                // The session encrypts into its own buffer; flush_tls moves it on at once, so
                // that buffer never grows and `out` is the one bound.
                if tls.writer().write_all(data).is_err() {
                    return self.close_conn(index, now, Some("TLS write error"));
                }
                self.flush_tls(index, now);
            }
        }
    }

    /// Moves a TLS session's pending records to the socket, and what it does not take to
    /// `out`.
    fn flush_tls(&mut self, index: usize, now: Time) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let Some(tls) = conn.tls.as_mut() else {
            return;
        };
        let mut failed = false;
        while tls.wants_write() {
            if conn.out.len() > conn.out_head {
                // Order: behind what is already queued.
                let _ = tls.write_tls(&mut conn.out);
                continue;
            }
            match tls.write_tls(&mut conn.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let _ = tls.write_tls(&mut conn.out);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            return self.close_conn(index, now, Some("write error"));
        }
        if conn.queued() > 0 {
            self.wait_writable(index, now);
        }
    }

    /// Asks epoll for writability while `out` holds bytes, and starts the stall clock.
    fn wait_writable(&mut self, index: usize, now: Time) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        conn.stalled_since.get_or_insert(now);
        if !conn.watching_out {
            let fd = conn.sock.as_raw_fd();
            if self.epoll.modify(fd, Token::Conn(index), true).is_ok() {
                conn.watching_out = true;
            }
        }
    }

    /// Writes queued bytes the socket now takes.
    fn flush(&mut self, index: usize, now: Time) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        while conn.queued() > 0 {
            match conn.sock.write(&conn.out[conn.out_head..]) {
                Ok(n) => {
                    conn.out_head += n;
                    conn.stalled_since = Some(now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // A reader that keeps up only partly never empties the queue: reclaim
                    // what was written, so `out` stays within the bound, not its history.
                    if conn.out_head >= conn.out.len() / 2 {
                        conn.out.drain(..conn.out_head);
                        conn.out_head = 0;
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close_conn(index, now, Some("write error")),
            }
        }
        conn.out.clear();
        conn.out_head = 0;
        if conn.out.capacity() > OUT_LIMIT / 4 {
            conn.out = Vec::new();
        }
        conn.stalled_since = None;
        if conn.watching_out {
            let fd = conn.sock.as_raw_fd();
            if self.epoll.modify(fd, Token::Conn(index), false).is_ok() {
                conn.watching_out = false;
            }
        }
        if conn.closing {
            self.close_conn(index, now, None);
        }
    }

    /// The connection's allocation was made: no authentication deadline any more.
    pub(super) fn authenticated(&mut self, tuple: &FiveTuple) {
        if let Some(&index) = self.by_tuple.get(tuple) {
            if let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) {
                conn.auth_deadline = None;
            }
        }
    }

    /// The connection's allocation ended: close it once its last answer is out.
    pub(super) fn finish_conn(&mut self, tuple: &FiveTuple, now: Time) {
        let Some(&index) = self.by_tuple.get(tuple) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        conn.closing = true;
        if let Some(tls) = conn.tls.as_mut() {
            tls.send_close_notify();
        }
        self.flush_tls(index, now);
        self.flush(index, now);
    }

    /// Closes connections past their authentication deadline or stalled too long.
    pub(super) fn check_conns(&mut self, now: Time) {
        for index in 0..self.conns.len() {
            let Some(conn) = &self.conns[index] else {
                continue;
            };
            let why = if conn.auth_deadline.is_some_and(|t| t <= now) {
                Some("no allocation in time")
            } else if conn
                .stalled_since
                .is_some_and(|t| t + self.stall_timeout <= now)
            {
                Some("stalled reader")
            } else {
                None
            };
            if why.is_some() {
                self.close_conn(index, now, why);
            }
        }
        self.next_conn_check = (!self.by_tuple.is_empty()).then(|| now + CHECK_INTERVAL);
    }

    /// Closes a connection and ends its allocation. `why`: an error, for the log.
    pub(super) fn close_conn(&mut self, index: usize, now: Time, why: Why) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::take) else {
            return;
        };
        let _ = self.epoll.delete(conn.sock.as_raw_fd());
        if self.by_tuple.get(&conn.tuple) == Some(&index) {
            self.by_tuple.remove(&conn.tuple);
        }
        self.free_conns.push(index);
        self.release(conn.tuple.client);
        if let Some(why) = why {
            tracing::debug!(client = %conn.tuple.client, transport = ?conn.tuple.transport, why, "connection closed");
        }
        self.server.close_client(now, &conn.tuple);
    }
}
