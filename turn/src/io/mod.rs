//! The driver: sockets and a clock around [`proto::Server`](crate::proto::Server).
//!
//! One thread owns the core, the listener sockets (`turn.listen` for UDP and TCP,
//! `turn.tls_listen` for TLS), the client connections, and one relay socket per allocation
//! and family, and runs a level-triggered epoll loop over them. One thread, because a relayed
//! packet is two system calls of work: handing it between threads would cost more than the
//! work itself, and the core then needs no lock at all. The ChannelData path in both
//! directions reads into a buffer with headroom, frames in place and sends: no heap
//! allocation, no STUN parsing, no lock.
//!
//! Streams (TCP and TLS, [`stream`]) carry the same messages, framed by their headers; an
//! allocation made over one lives as long as its connection.
//!
//! [`Relay::start`] binds every listener before it returns (so the caller can report a bad
//! address and knows the ports bound for port 0), then runs the loop until
//! [`Relay::shutdown`].

mod epoll;
mod stream;
mod tls;

pub use tls::{fingerprint, TlsCertificate, TlsError};

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::ops::RangeInclusive;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;

use crate::proto::{
    AllocId, ClientAction, CloseReason, Command, Event, Family, FiveTuple, OpenError, Server,
    ServerConfig, Time, Transport, Usage, PEER_HEADROOM, PEER_TAILROOM,
};
use epoll::{Epoll, EventFd};
use stream::Conn;

/// The largest UDP payload read (and so relayed); larger datagrams are truncated by the kernel
/// and dropped by us.
const MAX_DATAGRAM: usize = 65_535;
/// Readiness events handled per wake-up.
const EVENTS: usize = 256;
/// Datagrams read from one ready socket before going back to epoll: a burst costs one
/// `epoll_wait` and one extra (empty) read instead of one `epoll_wait` per datagram, and the
/// bound keeps one busy socket from starving the others.
const BATCH: usize = 16;
/// Kernel buffer sizes asked for on listener sockets, which carry every client's traffic.
const LISTENER_BUFFER: usize = 4 << 20;
/// How often the relay thread publishes what each user's allocations relayed
/// ([`Stats::user_usage`]).
const USAGE_EVERY: Duration = Duration::from_secs(1);
/// A user without allocations is forgotten this long after their last one closed.
const USAGE_KEPT: Duration = Duration::from_secs(3600);
/// Tries at binding UDP and TCP on one free port when a listener asks for port 0.
const PORT_PAIR_TRIES: usize = 16;

/// Epoll tokens: a kind in the top byte, an index below.
const KIND_SHIFT: u32 = 56;
const INDEX_MASK: u64 = (1 << KIND_SHIFT) - 1;
const KIND_STOP: u64 = 0;
const KIND_UDP: u64 = 1;
const KIND_TCP: u64 = 2;
const KIND_TLS: u64 = 3;
const KIND_CONN: u64 = 4;
const KIND_RELAY: u64 = 5;

fn token(kind: u64, index: usize) -> u64 {
    (kind << KIND_SHIFT) | index as u64
}

/// What the relay is started with.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Listener addresses (`turn.listen`), each for UDP and TCP on the same port; port 0 picks
    /// one free for both.
    pub listen: Vec<SocketAddr>,
    /// TLS listener addresses (`turn.tls_listen`); needs `tls`.
    pub tls_listen: Vec<SocketAddr>,
    /// The certificate for TLS listeners.
    pub tls: Option<TlsCertificate>,
    /// The most TCP and TLS client connections open at once; more are closed on accept.
    pub max_connections: usize,
    /// How long a TCP or TLS connection may stay open without an allocation (the TLS
    /// handshake and authentication included).
    pub unauthenticated_timeout: Duration,
    /// How long a connection's outgoing queue may stay full without draining before the
    /// connection is closed.
    pub stall_timeout: Duration,
    /// The core's settings; `server.relay_ips` and `server.relay_ports` place relay sockets.
    pub server: ServerConfig,
}

impl RelayConfig {
    /// UDP and TCP on `listen`, no TLS, default bounds.
    pub fn new(listen: Vec<SocketAddr>, server: ServerConfig) -> Self {
        RelayConfig {
            listen,
            tls_listen: Vec::new(),
            tls: None,
            max_connections: 4096,
            unauthenticated_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            server,
        }
    }
}

/// Counters the relay thread publishes, for logs and metrics. Written by one thread only.
#[derive(Debug, Default)]
pub struct Stats {
    /// Allocations open now.
    pub allocations: AtomicU64,
    /// Allocations ever created.
    pub allocations_total: AtomicU64,
    /// Requests that failed authentication (challenges excluded).
    pub auth_failures: AtomicU64,
    /// Permissions, channels and Sends refused by the peer policy.
    pub peer_refusals: AtomicU64,
    /// Allocate requests refused for a quota.
    pub quota_refusals: AtomicU64,
    /// Payload packets and bytes relayed by allocations that have closed, each way.
    pub closed_packets_to_peer: AtomicU64,
    pub closed_bytes_to_peer: AtomicU64,
    pub closed_packets_from_peer: AtomicU64,
    pub closed_bytes_from_peer: AtomicU64,
    /// TCP and TLS client connections open now.
    pub connections: AtomicU64,
    /// TCP and TLS client connections ever accepted.
    pub connections_total: AtomicU64,
    /// Connections closed on accept because `max_connections` were open.
    pub connections_refused: AtomicU64,
    /// Connections closed for a framing error, a TLS error, a timeout or a stalled reader.
    pub connections_dropped: AtomicU64,
    /// Messages not queued to a connection whose outgoing queue was full (a slow reader).
    pub stream_drops: AtomicU64,
    /// Payload packets passed from one of this relay's allocations to another inside the
    /// process (both ends of a call relayed by this box; their permissions decide delivery).
    pub hairpin_packets: AtomicU64,
    /// Payload relayed since the start, each way, closed and open allocations together, at
    /// most about a second old (every [`USAGE_EVERY`] while allocations are open); never
    /// decreasing, so that they export as counters.
    pub relayed_packets_to_peer: AtomicU64,
    pub relayed_bytes_to_peer: AtomicU64,
    pub relayed_packets_from_peer: AtomicU64,
    pub relayed_bytes_from_peer: AtomicU64,
    /// Whether the relay thread runs (false once it has ended, a panic included): the
    /// service watchdog's view of it.
    pub running: AtomicBool,
    /// What each user's allocations relayed, closed and open, as of the last publication
    /// (every [`USAGE_EVERY`]); see [`Stats::user_usage`].
    users: Mutex<HashMap<Box<str>, Usage>>,
}

impl Stats {
    /// What the allocations of `user` (the part of the username after the expiry) have
    /// relayed since the relay started, at most about a second old. The counters only grow
    /// while the user holds an allocation, or closed one within the last hour; after that they
    /// start again from zero.
    pub fn user_usage(&self, user: &str) -> Usage {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.get(user).copied().unwrap_or_default()
    }
}

/// A running relay.
pub struct Relay {
    addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    stop: Arc<EventFd>,
    stats: Arc<Stats>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Binds the listeners and starts the relay thread.
    pub fn start(config: RelayConfig) -> io::Result<Relay> {
        let invalid = |msg: &str| io::Error::new(io::ErrorKind::InvalidInput, msg.to_owned());
        if config.listen.is_empty() && config.tls_listen.is_empty() {
            return Err(invalid("no TURN listen address"));
        }
        if config.listen.len() + config.tls_listen.len() > INDEX_MASK as usize {
            return Err(invalid("too many TURN listen addresses"));
        }
        if !config.tls_listen.is_empty() && config.tls.is_none() {
            return Err(invalid("TLS listeners need a certificate"));
        }
        if config.server.relay_ips.is_empty() {
            return Err(invalid("no relay address"));
        }
        // Relay sockets bind relay_ip: find out now, not at the first Allocate, if one is not
        // an address of this host.
        for ip in &config.server.relay_ips {
            UdpSocket::bind(SocketAddr::new(*ip, 0)).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "relay address {ip} cannot be bound ({e}); is it an address of this host?"
                    ),
                )
            })?;
        }
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for addr in &config.listen {
            let (u, t) = bind_pair(*addr)?;
            udp.push(u);
            tcp.push(t);
        }
        let mut tls = Vec::new();
        for addr in &config.tls_listen {
            let sock = epoll::bind_tcp(*addr)
                .map_err(|e| io::Error::new(e.kind(), format!("binding TLS {addr}: {e}")))?;
            sock.set_nonblocking(true)?;
            tls.push((sock.local_addr()?, sock));
        }
        let addrs = udp.iter().map(|(a, _)| *a).collect();
        let tls_addrs = tls.iter().map(|(a, _)| *a).collect();
        let mut server_config = config.server;
        let all: Vec<SocketAddr> = config
            .listen
            .iter()
            .chain(&config.tls_listen)
            .copied()
            .collect();
        server_config.host_ips.extend(host_ips(&all));
        let stop = Arc::new(EventFd::new()?);
        let stats = Arc::new(Stats::default());
        let epoll = Epoll::new()?;
        epoll.add(stop.as_raw_fd(), token(KIND_STOP, 0))?;
        for (i, (_, sock)) in udp.iter().enumerate() {
            epoll.add(sock.as_raw_fd(), token(KIND_UDP, i))?;
        }
        for (i, (_, sock)) in tcp.iter().enumerate() {
            epoll.add(sock.as_raw_fd(), token(KIND_TCP, i))?;
        }
        for (i, (_, sock)) in tls.iter().enumerate() {
            epoll.add(sock.as_raw_fd(), token(KIND_TLS, i))?;
        }
        let mut driver = Driver {
            relay_ports: server_config.relay_ports.clone(),
            server: Server::new(server_config),
            epoll,
            udp,
            tcp,
            tls,
            tls_config: config.tls.map(|c| c.server_config()),
            conns: Vec::new(),
            free_conns: Vec::new(),
            by_tuple: HashMap::new(),
            max_connections: config.max_connections,
            unauthenticated_timeout: config.unauthenticated_timeout,
            stall_timeout: config.stall_timeout,
            next_conn_check: None,
            closed_usage: HashMap::new(),
            next_usage: Time::from_unix_millis(0),
            usage_changed: false,
            relays: Vec::new(),
            ports_used: [vec![0u64; 1024], vec![0u64; 1024]],
            stats: stats.clone(),
            clock: Clock::new(),
            scratch: vec![0u8; PEER_HEADROOM + MAX_DATAGRAM + PEER_TAILROOM],
        };
        let thread_stop = stop.clone();
        stats.running.store(true, Ordering::Release);
        let alive = stats.clone();
        let thread = std::thread::Builder::new()
            .name("turn-relay".into())
            .spawn(move || {
                let _ending = Ended(alive);
                driver.run(&thread_stop)
            })?;
        Ok(Relay {
            addrs,
            tls_addrs,
            stop,
            stats,
            thread: Some(thread),
        })
    }

    /// The bound listener addresses (UDP and TCP), in `listen` order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// The bound TLS listener addresses, in `tls_listen` order.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.tls_addrs.clone()
    }

    /// The relay's counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Stops the relay thread and closes every socket. Allocations end with it.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.notify();
            let _ = t.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Clears [`Stats::running`] when the relay thread ends, however it ends.
struct Ended(Arc<Stats>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

/// A UDP socket and a TCP listener on the same address and port. For port 0 the UDP port is
/// picked by the kernel and TCP takes the same number, trying again if it is taken for TCP.
fn bind_pair(addr: SocketAddr) -> io::Result<((SocketAddr, UdpSocket), (SocketAddr, TcpListener))> {
    let mut tries = 0;
    loop {
        let udp = epoll::bind_udp(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("binding UDP {addr}: {e}")))?;
        let bound = udp.local_addr()?;
        match epoll::bind_tcp(bound) {
            Ok(tcp) => {
                udp.set_nonblocking(true)?;
                epoll::set_buffers(&udp, LISTENER_BUFFER);
                tcp.set_nonblocking(true)?;
                return Ok(((bound, udp), (bound, tcp)));
            }
            Err(e) if addr.port() == 0 && tries < PORT_PAIR_TRIES => {
                tries += 1;
                tracing::debug!(%bound, error = %e, "TCP port taken; picking another pair");
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("binding TCP {bound}: {e}"),
                ));
            }
        }
    }
}

/// This host's addresses as far as the relay can tell: its listeners', and every interface's
/// when a listener is a wildcard. None of them is a peer unless `allow_peers` names it.
fn host_ips(listen: &[SocketAddr]) -> Vec<std::net::IpAddr> {
    let mut ips: Vec<_> = listen
        .iter()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
        .collect();
    if listen.iter().any(|a| a.ip().is_unspecified()) {
        ips.extend(epoll::interface_addresses());
    }
    ips.sort_unstable();
    ips.dedup();
    ips
}

/// Monotonic time anchored to the wall clock at start (see [`Time`]).
struct Clock {
    start: Instant,
    start_unix_ms: u64,
}

impl Clock {
    fn new() -> Self {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            start: Instant::now(),
            start_unix_ms: unix.as_millis() as u64,
        }
    }

    fn now(&self) -> Time {
        Time::from_unix_millis(self.start_unix_ms + self.start.elapsed().as_millis() as u64)
    }
}

struct RelaySocket {
    id: AllocId,
    sock: UdpSocket,
    port: u16,
}

struct Driver {
    server: Server,
    relay_ports: RangeInclusive<u16>,
    epoll: Epoll,
    udp: Vec<(SocketAddr, UdpSocket)>,
    tcp: Vec<(SocketAddr, TcpListener)>,
    tls: Vec<(SocketAddr, TcpListener)>,
    tls_config: Option<Arc<rustls::ServerConfig>>,
    /// Client connections (TCP, TLS) by slot.
    conns: Vec<Option<Conn>>,
    free_conns: Vec<usize>,
    /// The connection of each stream 5-tuple.
    by_tuple: HashMap<FiveTuple, usize>,
    max_connections: usize,
    unauthenticated_timeout: Duration,
    stall_timeout: Duration,
    /// When connections are next checked for their deadlines.
    next_conn_check: Option<Time>,
    /// Relay sockets by allocation slot index and family (`2 * index + family`).
    relays: Vec<Option<RelaySocket>>,
    /// Bitmaps of the relay ports this process holds, per family.
    ports_used: [Vec<u64>; 2],
    stats: Arc<Stats>,
    /// What closed allocations relayed, per user, and when the user's last one closed.
    closed_usage: HashMap<Box<str>, (Usage, Time)>,
    /// When [`Stats::user_usage`] is next published, if allocations are open or one closed.
    next_usage: Time,
    usage_changed: bool,
    clock: Clock,
    /// The hairpin's second buffer.
    scratch: Vec<u8>,
}

fn relay_slot(id: AllocId, family: Family) -> usize {
    2 * id.index() + family.index()
}

impl Driver {
    fn run(&mut self, stop: &EventFd) {
        let mut events = vec![epoll::EMPTY_EVENT; EVENTS];
        let mut buf = vec![0u8; PEER_HEADROOM + MAX_DATAGRAM + PEER_TAILROOM];
        loop {
            let timeout = self.poll_timeout_ms();
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "epoll_wait failed; relay stopping");
                    return;
                }
            };
            let now = self.clock.now();
            for ev in &events[..n] {
                let t = epoll::token(ev);
                let index = (t & INDEX_MASK) as usize;
                match t >> KIND_SHIFT {
                    KIND_STOP => {
                        stop.drain();
                        self.close_all(now);
                        return;
                    }
                    KIND_UDP => {
                        for _ in 0..BATCH {
                            if !self.on_listener(index, now, &mut buf) {
                                break;
                            }
                        }
                    }
                    KIND_TCP => self.accept(index, Transport::Tcp, now),
                    KIND_TLS => self.accept(index, Transport::Tls, now),
                    KIND_CONN => self.on_conn(index, epoll::writable(ev), now, &mut buf),
                    _ => {
                        for _ in 0..BATCH {
                            if !self.on_relay(index, now, &mut buf) {
                                break;
                            }
                        }
                    }
                }
                // What the event made the core ask for (answers, sockets, connection closes)
                // is done before the next event, so a stream's answers keep their order.
                self.drain(now);
            }
            if self.server.poll_timeout().is_some_and(|t| t <= now) {
                self.server.handle_timeout(now);
            }
            if self.next_conn_check.is_some_and(|t| t <= now) {
                self.check_conns(now);
            }
            self.drain(now);
            // After the drain: an allocation that just closed is then in the closed counters
            // and no longer among the open ones, never in both or neither.
            if self.publishing() && self.next_usage <= now {
                self.publish_usage(now);
            }
        }
    }

    /// Publishes what each user's allocations, open and closed, relayed
    /// ([`Stats::user_usage`]); forgets users idle for [`USAGE_KEPT`].
    fn publish_usage(&mut self, now: Time) {
        self.next_usage = now + USAGE_EVERY;
        self.usage_changed = false;
        let mut users: HashMap<Box<str>, Usage> = HashMap::new();
        let mut open = Usage::default();
        for (user, usage) in self.server.usage_by_user() {
            open += usage;
            match users.get_mut(user) {
                Some(u) => *u += usage,
                None => {
                    users.insert(user.into(), usage);
                }
            }
        }
        self.closed_usage
            .retain(|user, (_, at)| users.contains_key(user) || *at + USAGE_KEPT > now);
        for (user, (usage, _)) in &self.closed_usage {
            *users.entry(user.clone()).or_default() += *usage;
        }
        *self.stats.users.lock().unwrap_or_else(|e| e.into_inner()) = users;
        // Closed and open at the same instant (see the loop): the sum only grows.
        let s = &self.stats;
        for (total, closed, open) in [
            (
                &s.relayed_packets_to_peer,
                &s.closed_packets_to_peer,
                open.packets_to_peer,
            ),
            (
                &s.relayed_bytes_to_peer,
                &s.closed_bytes_to_peer,
                open.bytes_to_peer,
            ),
            (
                &s.relayed_packets_from_peer,
                &s.closed_packets_from_peer,
                open.packets_from_peer,
            ),
            (
                &s.relayed_bytes_from_peer,
                &s.closed_bytes_from_peer,
                open.bytes_from_peer,
            ),
        ] {
            total.store(closed.load(Ordering::Relaxed) + open, Ordering::Relaxed);
        }
    }

    /// Whether usage is to be published: while allocations are open, and once after one closed.
    fn publishing(&self) -> bool {
        self.server.allocation_count() > 0 || self.usage_changed
    }

    fn poll_timeout_ms(&self) -> i32 {
        let next = match (self.server.poll_timeout(), self.next_conn_check) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let publishing = self.publishing();
        let next = match next {
            Some(t) if publishing => Some(t.min(self.next_usage)),
            None if publishing => Some(self.next_usage),
            other => other,
        };
        match next {
            None => -1,
            Some(t) => {
                let now = self.clock.now();
                let ms = t.unix_millis().saturating_sub(now.unix_millis());
                // Round up so the deadline has passed when we wake.
                (ms + 1).min(60_000) as i32
            }
        }
    }

    /// A datagram from a client; false when there was none to read.
    fn on_listener(&mut self, index: usize, now: Time, buf: &mut [u8]) -> bool {
        let Some((local, sock)) = self.udp.get(index) else {
            return false;
        };
        let local = *local;
        let (len, from) = match sock.recv_from(&mut buf[..MAX_DATAGRAM]) {
            Ok(r) => r,
            Err(_) => return false,
        };
        let tuple = FiveTuple::udp(from, local);
        let action = self.server.handle_client(now, tuple, &buf[..len]);
        self.act(now, action);
        true
    }

    /// Carries out what the core said to do with a client's message.
    fn act(&mut self, now: Time, action: ClientAction<'_>) {
        match action {
            ClientAction::Done => {}
            ClientAction::Relay {
                alloc,
                peer,
                payload,
            } => match self.relays.get(relay_slot(alloc, Family::of(peer.ip()))) {
                Some(Some(r)) if r.id == alloc => {
                    let _ = r.sock.send_to(payload, peer);
                }
                _ => {}
            },
            ClientAction::Hairpin { to, from, payload } => {
                self.stats.hairpin_packets.fetch_add(1, Ordering::Relaxed);
                let start = PEER_HEADROOM;
                let end = start + payload.len();
                self.scratch[start..end].copy_from_slice(payload);
                let mut scratch = std::mem::take(&mut self.scratch);
                if let Some(action) =
                    self.server
                        .handle_peer_data(now, to, from, &mut scratch, start..end)
                {
                    self.send_to_client(now, &action.tuple, &scratch[action.frame], false);
                }
                self.scratch = scratch;
            }
        }
    }

    /// A datagram from a peer on a relay socket; false when there was none to read.
    fn on_relay(&mut self, index: usize, now: Time, buf: &mut [u8]) -> bool {
        let Some(Some(r)) = self.relays.get(index) else {
            return false;
        };
        let id = r.id;
        let end = buf.len() - PEER_TAILROOM;
        let (len, from) = match r.sock.recv_from(&mut buf[PEER_HEADROOM..end]) {
            Ok(x) => x,
            Err(_) => return false,
        };
        let payload = PEER_HEADROOM..PEER_HEADROOM + len;
        if let Some(action) = self.server.handle_peer_data(now, id, from, buf, payload) {
            self.send_to_client(now, &action.tuple, &buf[action.frame], false);
        }
        true
    }

    /// Sends a message to a client over its transport. `control`: a STUN answer, which a full
    /// stream queue takes a little longer to refuse than relayed data.
    fn send_to_client(&mut self, now: Time, tuple: &FiveTuple, data: &[u8], control: bool) {
        if tuple.transport == Transport::Udp {
            if let Some((_, sock)) = self.udp.iter().find(|(a, _)| *a == tuple.server) {
                let _ = sock.send_to(data, tuple.client);
            }
        } else if let Some(&index) = self.by_tuple.get(tuple) {
            self.send_stream(index, now, data, control);
        }
    }

    /// Carries out what the core asked for, sends its answers and records its events.
    fn drain(&mut self, now: Time) {
        loop {
            let mut progressed = false;
            while let Some(cmd) = self.server.poll_command() {
                progressed = true;
                match cmd {
                    Command::OpenRelay {
                        id,
                        family,
                        even_port,
                    } => {
                        let result = self.open_relay(id, family, even_port);
                        self.server.handle_relay_opened(now, id, family, result);
                    }
                    Command::CloseRelay { id } => self.close_relay(id),
                }
            }
            while let Some(t) = self.server.poll_transmit() {
                progressed = true;
                self.send_to_client(now, &t.tuple, &t.data, true);
            }
            while let Some(ev) = self.server.poll_event() {
                progressed = true;
                self.record(now, ev);
            }
            if !progressed {
                break;
            }
        }
    }

    fn record(&mut self, now: Time, ev: Event) {
        let s = &self.stats;
        match ev {
            Event::AllocationCreated {
                id,
                tuple,
                user,
                relayed,
            } => {
                s.allocations.fetch_add(1, Ordering::Relaxed);
                s.allocations_total.fetch_add(1, Ordering::Relaxed);
                // `?user`: a user name is any text the HMAC covers (another deployment's
                // minting); Debug quotes and escapes it, so it cannot forge a log line.
                tracing::debug!(alloc = id.to_u64(), client = %tuple.client, transport = ?tuple.transport, ?user, %relayed, "allocation created");
                if tuple.is_stream() {
                    self.authenticated(&tuple);
                }
            }
            Event::AllocationClosed {
                id,
                tuple,
                user,
                reason,
                usage,
                lifetime,
            } => {
                s.allocations.fetch_sub(1, Ordering::Relaxed);
                s.closed_packets_to_peer
                    .fetch_add(usage.packets_to_peer, Ordering::Relaxed);
                s.closed_bytes_to_peer
                    .fetch_add(usage.bytes_to_peer, Ordering::Relaxed);
                s.closed_packets_from_peer
                    .fetch_add(usage.packets_from_peer, Ordering::Relaxed);
                s.closed_bytes_from_peer
                    .fetch_add(usage.bytes_from_peer, Ordering::Relaxed);
                let reason = match reason {
                    CloseReason::Expired => "expired",
                    CloseReason::Deleted => "deleted",
                    CloseReason::Closed => "closed",
                };
                tracing::info!(
                    alloc = id.to_u64(),
                    reason,
                    transport = ?tuple.transport,
                    secs = lifetime.as_secs(),
                    packets_to_peer = usage.packets_to_peer,
                    bytes_to_peer = usage.bytes_to_peer,
                    packets_from_peer = usage.packets_from_peer,
                    bytes_from_peer = usage.bytes_from_peer,
                    "allocation closed"
                );
                tracing::debug!(alloc = id.to_u64(), ?user, "allocation owner");
                let closed = self
                    .closed_usage
                    .entry(user)
                    .or_insert((Usage::default(), now));
                closed.0 += usage;
                closed.1 = now;
                self.usage_changed = true;
                if tuple.is_stream() {
                    // The connection served that allocation; it closes once its last answer
                    // (a Refresh's, say) is out.
                    self.finish_conn(&tuple, now);
                }
            }
            Event::AuthFailed(f) => {
                s.auth_failures.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("switchboard_turn_auth_failures_total", "reason" => f.label())
                    .increment(1);
                tracing::debug!(reason = f.label(), "authentication failed");
            }
            Event::PeerRefused(r) => {
                s.peer_refusals.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("switchboard_turn_peer_refusals_total", "range" => r.label())
                    .increment(1);
                tracing::debug!(range = r.label(), "peer refused by policy");
            }
            Event::QuotaReached { total } => {
                s.quota_refusals.fetch_add(1, Ordering::Relaxed);
                tracing::info!(total, "allocation quota reached");
            }
            Event::ChallengeDropped => {
                metrics::counter!("switchboard_turn_challenges_dropped_total").increment(1);
            }
        }
    }

    fn port_used(&self, family: Family, port: u16) -> bool {
        self.ports_used[family.index()][usize::from(port) / 64] & (1 << (port % 64)) != 0
    }

    fn set_port(&mut self, family: Family, port: u16, used: bool) {
        let word = &mut self.ports_used[family.index()][usize::from(port) / 64];
        if used {
            *word |= 1 << (port % 64);
        } else {
            *word &= !(1 << (port % 64));
        }
    }

    /// Binds a relay socket of `family` on a random free port of the range (an even one if
    /// asked).
    fn open_relay(
        &mut self,
        id: AllocId,
        family: Family,
        even: bool,
    ) -> Result<SocketAddr, OpenError> {
        let Some(ip) = self.server.config().relay_ip(family) else {
            return Err(OpenError::Io);
        };
        let (lo, hi) = (*self.relay_ports.start(), *self.relay_ports.end());
        if lo > hi {
            return Err(OpenError::NoPorts);
        }
        let span = u32::from(hi - lo) + 1;
        let first = rand::rng().random_range(0..span);
        let slot = relay_slot(id, family);
        for i in 0..span {
            let port = lo + ((first + i) % span) as u16;
            if self.port_used(family, port) || (even && port % 2 == 1) {
                continue;
            }
            let sock = match UdpSocket::bind(SocketAddr::new(ip, port)) {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open a relay socket");
                    return Err(OpenError::Io);
                }
            };
            let registered = sock
                .set_nonblocking(true)
                .and_then(|()| self.epoll.add(sock.as_raw_fd(), token(KIND_RELAY, slot)));
            if let Err(e) = registered {
                tracing::warn!(error = %e, "cannot register a relay socket");
                return Err(OpenError::Io);
            }
            if self.relays.len() <= slot {
                self.relays.resize_with(slot + 1, || None);
            }
            self.relays[slot] = Some(RelaySocket { id, sock, port });
            self.set_port(family, port, true);
            return Ok(SocketAddr::new(ip, port));
        }
        Err(OpenError::NoPorts)
    }

    fn close_relay(&mut self, id: AllocId) {
        for family in [Family::V4, Family::V6] {
            let Some(slot) = self.relays.get_mut(relay_slot(id, family)) else {
                continue;
            };
            if slot.as_ref().is_some_and(|r| r.id == id) {
                if let Some(r) = slot.take() {
                    let _ = self.epoll.delete(r.sock.as_raw_fd());
                    self.set_port(family, r.port, false);
                }
            }
        }
    }

    fn close_all(&mut self, now: Time) {
        let ids: Vec<AllocId> = self.relays.iter().flatten().map(|r| r.id).collect();
        for id in ids {
            self.server.close_allocation(now, id);
        }
        self.drain(now);
        for index in 0..self.conns.len() {
            self.close_conn(index, now, None);
        }
        self.drain(now);
    }
}
