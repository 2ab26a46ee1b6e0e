//! The acceptor thread: TCP and TLS connections from accept until they are ready to carry
//! TURN, off the relay thread.
//!
//! Before a client has proved anything, a connection costs the relay two things: an accept
//! (and a close, if it is refused), and for TLS a handshake, a key exchange and a signature
//! of a few hundred microseconds. Done on the relay thread, a flood of either delays every
//! relayed datagram behind it. So the acceptor thread owns the TCP and TLS listeners: it
//! applies the caps at accept, before reading a byte, runs the TLS handshakes side by side on
//! an epoll of its own, and hands each connection that is ready (a TCP one at once, a TLS one
//! once established) to the relay thread, which frames, authenticates and relays as before.
//! The relay thread tells it when a connection closes, so that its place is free again.
//!
//! Bounded: at most `max_connections` open or handshaking, `max_connections_per_source` of
//! them from one source (an IPv4 address, an IPv6 /64), [`MAX_HANDSHAKES`] handshakes at
//! once, each within [`HANDSHAKE_TIMEOUT`] (or `unauthenticated_timeout`, if shorter). A
//! connection over a cap is closed at once, counted in
//! `switchboard_turn_connections_refused_total` by reason, and logged at most every
//! [`REFUSALS_LOGGED`] per reason. The thread runs at a lower scheduling priority than the
//! relay thread, so that under a flood it gets the CPU the relay leaves over and not the
//! other way round. The certificate is read at each handshake through the resolver
//! (`tls.rs`), so a reload reaches new handshakes here as it did on the relay thread.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection};

use crate::proto::source::Source;
use crate::proto::{FiveTuple, Transport};

use super::epoll::{self, Epoll, EventFd};
use super::{Stats, Token, BATCH};

/// TLS handshakes under way at once; more connections are closed at accept.
const MAX_HANDSHAKES: usize = 1024;
/// How long a handshake may take, from accept to the client's Finished.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The thread's nice value: the relay thread's is 0.
const NICENESS: i32 = 10;
/// TLS records read from one connection per readiness event.
const READS: usize = 4;
/// At most one log line per reason for connections refused at accept in this time.
const REFUSALS_LOGGED: Duration = Duration::from_secs(10);

/// What the acceptor is bounded by.
pub(super) struct Limits {
    pub(super) max_connections: usize,
    pub(super) per_source: u32,
    /// The connections' `unauthenticated_timeout`, which also bounds their handshake.
    pub(super) unauthenticated: Duration,
}

/// A connection ready for TURN: a TCP one as accepted, a TLS one with its session
/// established (what the client sent with its Finished may wait in the session).
pub(super) struct Arrival {
    pub(super) sock: TcpStream,
    pub(super) tuple: FiveTuple,
    pub(super) tls: Option<Box<ServerConnection>>,
    pub(super) accepted: Instant,
}

/// The relay thread's end of the acceptor thread. Dropping it stops the thread, which closes
/// the listeners and the handshakes under way.
pub(super) struct Acceptor {
    arrivals: Receiver<Arrival>,
    closed: Sender<IpAddr>,
    /// Signalled when something is in `arrivals`; in the relay thread's epoll.
    pub(super) ready: Arc<EventFd>,
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    pub(super) fn start(
        tcp: Vec<(SocketAddr, TcpListener)>,
        tls: Vec<(SocketAddr, TcpListener)>,
        config: Option<Arc<ServerConfig>>,
        limits: Limits,
        stats: Arc<Stats>,
    ) -> io::Result<Acceptor> {
        let (arrivals_tx, arrivals) = mpsc::channel();
        let (closed, closed_rx) = mpsc::channel();
        let ready = Arc::new(EventFd::new()?);
        let stop = Arc::new(EventFd::new()?);
        let epoll = Epoll::new()?;
        epoll.add(stop.as_raw_fd(), Token::Stop)?;
        for (i, (_, sock)) in tcp.iter().enumerate() {
            epoll.add(sock.as_raw_fd(), Token::Tcp(i))?;
        }
        for (i, (_, sock)) in tls.iter().enumerate() {
            epoll.add(sock.as_raw_fd(), Token::Tls(i))?;
        }
        let mut worker = Worker {
            epoll,
            tcp,
            tls,
            config,
            limits,
            stats,
            arrivals: arrivals_tx,
            ready: ready.clone(),
            closed: closed_rx,
            open: 0,
            sources: HashMap::new(),
            shakes: Vec::new(),
            free: Vec::new(),
            handshaking: 0,
            next_expiry: None,
            refusals: [(0, None); Refusal::COUNT],
        };
        let thread = std::thread::Builder::new()
            .name("turn-accept".into())
            .spawn(move || {
                epoll::lower_priority(NICENESS);
                worker.run();
            })?;
        Ok(Acceptor {
            arrivals,
            closed,
            ready,
            stop,
            thread: Some(thread),
        })
    }

    /// The next connection ready for the relay thread, if any.
    pub(super) fn next(&self) -> Option<Arrival> {
        self.arrivals.try_recv().ok()
    }

    /// A connection the acceptor handed over has closed: its place is free.
    pub(super) fn closed(&self, client: SocketAddr) {
        let _ = self.closed.send(client.ip());
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.notify();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Why a connection was closed at accept.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    /// `max_connections`, open and handshaking together.
    Total,
    PerSource,
    /// [`MAX_HANDSHAKES`] under way.
    Handshakes,
}

impl Refusal {
    const COUNT: usize = 3;

    fn label(self) -> &'static str {
        match self {
            Refusal::Total => "max_connections",
            Refusal::PerSource => "max_connections_per_source",
            Refusal::Handshakes => "handshakes",
        }
    }
}

/// A TLS handshake under way.
struct Shake {
    sock: TcpStream,
    tls: Box<ServerConnection>,
    tuple: FiveTuple,
    accepted: Instant,
    deadline: Instant,
    watching_out: bool,
}

/// Where a handshake stands after some I/O.
enum Step {
    Going,
    Established,
    Failed,
}

struct Worker {
    epoll: Epoll,
    tcp: Vec<(SocketAddr, TcpListener)>,
    tls: Vec<(SocketAddr, TcpListener)>,
    config: Option<Arc<ServerConfig>>,
    limits: Limits,
    stats: Arc<Stats>,
    arrivals: Sender<Arrival>,
    ready: Arc<EventFd>,
    closed: Receiver<IpAddr>,
    /// Connections handshaking or handed over and not closed yet.
    open: usize,
    /// Of those, per source.
    sources: HashMap<Source, u32>,
    shakes: Vec<Option<Shake>>,
    free: Vec<usize>,
    handshaking: usize,
    /// The earliest handshake deadline, when one is under way.
    next_expiry: Option<Instant>,
    /// Per [`Refusal`]: refusals not logged yet, and when the last line was.
    refusals: [(u64, Option<Instant>); Refusal::COUNT],
}

impl Worker {
    fn run(&mut self) {
        let mut events = vec![epoll::EMPTY_EVENT; 64];
        loop {
            let timeout = self.next_expiry.map_or(-1, |t| {
                let ms = t.saturating_duration_since(Instant::now()).as_millis();
                (ms + 1).min(60_000) as i32
            });
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                // A signal: nothing is ready, deadlines may have passed.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    tracing::error!(error = %e, "epoll_wait failed; TURN accepts stopping");
                    return;
                }
            };
            for ev in &events[..n] {
                match epoll::token(ev) {
                    Some(Token::Stop) => return,
                    Some(Token::Tcp(index)) => self.accept(index, Transport::Tcp),
                    Some(Token::Tls(index)) => self.accept(index, Transport::Tls),
                    Some(Token::Conn(index)) => self.advance(index),
                    _ => debug_assert!(false, "a token the acceptor never registered"),
                }
            }
            if self.next_expiry.is_some_and(|t| t <= Instant::now()) {
                self.expire();
            }
        }
    }

    /// Accepts what waits on a listener: over a cap closed at once, else handed over (TCP)
    /// or handshaking (TLS).
    fn accept(&mut self, index: usize, transport: Transport) {
        while let Ok(ip) = self.closed.try_recv() {
            self.release(ip);
        }
        for _ in 0..BATCH {
            let listeners = if transport == Transport::Tls {
                &self.tls
            } else {
                &self.tcp
            };
            let Some((local, listener)) = listeners.get(index) else {
                return;
            };
            let local = *local;
            let (sock, client) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: the backlog keeps it; try again on the next wake-up.
                    tracing::warn!(error = %e, "cannot accept a TURN connection");
                    return;
                }
            };
            let source = Source::of(client.ip());
            let refusal = if self.open >= self.limits.max_connections {
                Some(Refusal::Total)
            } else if self.sources.get(&source).copied().unwrap_or(0) >= self.limits.per_source {
                Some(Refusal::PerSource)
            } else if transport == Transport::Tls && self.handshaking >= MAX_HANDSHAKES {
                Some(Refusal::Handshakes)
            } else {
                None
            };
            if let Some(why) = refusal {
                self.refuse(why, source);
                continue; // Dropping `sock` closes it.
            }
            if sock.set_nonblocking(true).is_err() {
                continue;
            }
            epoll::tune_stream(&sock);
            self.open += 1;
            *self.sources.entry(source).or_insert(0) += 1;
            self.stats.connections.fetch_add(1, Ordering::Relaxed);
            self.stats.connections_total.fetch_add(1, Ordering::Relaxed);
            let tuple = FiveTuple {
                transport,
                client,
                server: local,
            };
            let accepted = Instant::now();
            if transport == Transport::Tls {
                self.shake(sock, tuple, accepted);
            } else {
                self.hand_over(sock, tuple, None, accepted);
            }
        }
    }

    /// Starts a TLS handshake.
    fn shake(&mut self, sock: TcpStream, tuple: FiveTuple, accepted: Instant) {
        let session = self
            .config
            .as_ref()
            .map(|c| ServerConnection::new(c.clone()));
        let tls = match session {
            Some(Ok(mut c)) => {
                // No limit inside rustls: once established, the relay thread's flush_tls
                // empties its buffer after every write, and `out` is the bound (stream.rs).
                // Its default 64 KiB limit would refuse one near-64 KiB relayed message.
                c.set_buffer_limit(None);
                Box::new(c)
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot start a TLS session");
                return self.gone(tuple.client);
            }
            None => return self.gone(tuple.client),
        };
        let index = self.free.pop().unwrap_or_else(|| {
            self.shakes.push(None);
            self.shakes.len() - 1
        });
        if self
            .epoll
            .add(sock.as_raw_fd(), Token::Conn(index))
            .is_err()
        {
            self.free.push(index);
            return self.gone(tuple.client);
        }
        let deadline = accepted + HANDSHAKE_TIMEOUT.min(self.limits.unauthenticated);
        self.next_expiry = Some(self.next_expiry.map_or(deadline, |t| t.min(deadline)));
        self.handshaking += 1;
        self.shakes[index] = Some(Shake {
            sock,
            tls,
            tuple,
            accepted,
            deadline,
            watching_out: false,
        });
    }

    /// Moves a handshake on; hands the connection over once established.
    fn advance(&mut self, index: usize) {
        let Some(s) = self.shakes.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let step = s.step();
        if let Step::Going = step {
            let out = s.tls.wants_write();
            if out != s.watching_out {
                let fd = s.sock.as_raw_fd();
                if self.epoll.modify(fd, Token::Conn(index), out).is_ok() {
                    s.watching_out = out;
                }
            }
            return;
        }
        self.finish(index, step);
    }

    fn finish(&mut self, index: usize, step: Step) {
        let Some(s) = self.shakes.get_mut(index).and_then(Option::take) else {
            return;
        };
        self.free.push(index);
        self.handshaking -= 1;
        let _ = self.epoll.delete(s.sock.as_raw_fd());
        match step {
            Step::Established => self.hand_over(s.sock, s.tuple, Some(s.tls), s.accepted),
            Step::Going | Step::Failed => self.gone(s.tuple.client),
        }
    }

    /// Closes the handshakes past their deadline.
    fn expire(&mut self) {
        let now = Instant::now();
        self.next_expiry = None;
        for index in 0..self.shakes.len() {
            let Some(deadline) = self.shakes[index].as_ref().map(|s| s.deadline) else {
                continue;
            };
            if deadline <= now {
                tracing::debug!("TLS handshake not finished in time");
                self.finish(index, Step::Failed);
            } else {
                self.next_expiry = Some(self.next_expiry.map_or(deadline, |t| t.min(deadline)));
            }
        }
    }

    fn hand_over(
        &mut self,
        sock: TcpStream,
        tuple: FiveTuple,
        tls: Option<Box<ServerConnection>>,
        accepted: Instant,
    ) {
        let arrival = Arrival {
            sock,
            tuple,
            tls,
            accepted,
        };
        if self.arrivals.send(arrival).is_ok() {
            self.ready.notify();
        } else {
            self.gone(tuple.client);
        }
    }

    /// A connection closed before it was handed over.
    fn gone(&mut self, client: SocketAddr) {
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
        self.release(client.ip());
    }

    /// Frees a connection's place (the relay thread counts it out of `Stats::connections`
    /// itself when it closes one).
    fn release(&mut self, ip: IpAddr) {
        self.open = self.open.saturating_sub(1);
        let source = Source::of(ip);
        if let Some(n) = self.sources.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.sources.remove(&source);
            }
        }
    }

    /// Counts a refusal, and logs it at most every [`REFUSALS_LOGGED`] per reason, with how
    /// many went since the last line: a flood costs a line, not a line each.
    fn refuse(&mut self, why: Refusal, source: Source) {
        metrics::counter!("switchboard_turn_connections_refused_total", "reason" => why.label())
            .increment(1);
        let now = Instant::now();
        let (unlogged, last) = &mut self.refusals[why as usize];
        *unlogged += 1;
        if last.is_some_and(|t| now < t + REFUSALS_LOGGED) {
            return;
        }
        *last = Some(now);
        let connections = std::mem::take(unlogged);
        match why {
            Refusal::PerSource => tracing::info!(
                %source, connections, max = self.limits.per_source,
                "TURN connections refused: turn.max_connections_per_source reached"
            ),
            _ => tracing::info!(
                connections,
                reason = why.label(),
                "TURN connections refused: the relay is at its connection cap"
            ),
        }
    }
}

impl Shake {
    /// Takes in what the client sent and sends what the session has to say.
    fn step(&mut self) -> Step {
        for _ in 0..READS {
            match self.tls.read_tls(&mut self.sock) {
                Ok(0) => return Step::Failed,
                Ok(_) => {
                    if let Err(e) = self.tls.process_new_packets() {
                        tracing::debug!(client = %self.tuple.client, error = %e, "TLS handshake failed");
                        let _ = self.tls.write_tls(&mut self.sock); // The alert, if it goes.
                        return Step::Failed;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Failed,
            }
            if !self.tls.is_handshaking() {
                break;
            }
        }
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Failed,
            }
        }
        if self.tls.is_handshaking() {
            Step::Going
        } else {
            // What is left to write (session tickets) goes over with the session.
            Step::Established
        }
    }
}
