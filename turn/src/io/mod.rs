//! The UDP driver: sockets and a clock around [`proto::Server`](crate::proto::Server).
//!
//! One thread owns the core, the listener sockets (`turn.listen`) and one relay socket per
//! allocation, and runs a level-triggered epoll loop over them. One thread, because a relayed
//! packet is two system calls of work: handing it between threads would cost more than the
//! work itself, and the core then needs no lock at all. The ChannelData path in both
//! directions reads into a buffer with headroom, frames in place and sends: no heap
//! allocation, no STUN parsing, no lock.
//!
//! [`Relay::start`] binds every listener before it returns (so the caller can report a bad
//! address and knows the ports bound for port 0), then runs the loop until
//! [`Relay::shutdown`].

mod epoll;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;

use crate::proto::{
    AllocId, ClientAction, CloseReason, Command, Event, FiveTuple, OpenError, Server, ServerConfig,
    Time, PEER_HEADROOM, PEER_TAILROOM,
};
use epoll::{Epoll, EventFd};

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

const TOKEN_STOP: u64 = 0;
const TOKEN_LISTENER: u64 = 1;
const MAX_LISTENERS: u64 = 1024;
const TOKEN_RELAY: u64 = TOKEN_LISTENER + MAX_LISTENERS;

/// What the relay is started with.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// UDP listener addresses (`turn.listen`); port 0 picks one.
    pub listen: Vec<SocketAddr>,
    /// The core's settings; `server.relay_ip` and `server.relay_ports` place relay sockets.
    pub server: ServerConfig,
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
}

/// A running relay.
pub struct Relay {
    addrs: Vec<SocketAddr>,
    stop: Arc<EventFd>,
    stats: Arc<Stats>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Binds the listeners and starts the relay thread.
    pub fn start(config: RelayConfig) -> io::Result<Relay> {
        if config.listen.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no TURN listen address",
            ));
        }
        if config.listen.len() as u64 > MAX_LISTENERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many TURN listen addresses",
            ));
        }
        // Relay sockets bind relay_ip: find out now, not at the first Allocate, if it is not
        // an address of this host.
        UdpSocket::bind(SocketAddr::new(config.server.relay_ip, 0)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "relay address {} cannot be bound ({e}); is it an address of this host?",
                    config.server.relay_ip
                ),
            )
        })?;
        let mut listeners = Vec::new();
        for addr in &config.listen {
            let sock = epoll::bind_udp(*addr)
                .map_err(|e| io::Error::new(e.kind(), format!("binding UDP {addr}: {e}")))?;
            sock.set_nonblocking(true)?;
            epoll::set_buffers(&sock, LISTENER_BUFFER);
            listeners.push((sock.local_addr()?, sock));
        }
        let addrs = listeners.iter().map(|(a, _)| *a).collect();
        let mut server_config = config.server;
        server_config.host_ips.extend(host_ips(&config.listen));
        let stop = Arc::new(EventFd::new()?);
        let stats = Arc::new(Stats::default());
        let epoll = Epoll::new()?;
        epoll.add(stop.as_raw_fd(), TOKEN_STOP)?;
        for (i, (_, sock)) in listeners.iter().enumerate() {
            epoll.add(sock.as_raw_fd(), TOKEN_LISTENER + i as u64)?;
        }
        let mut driver = Driver {
            relay_ports: server_config.relay_ports.clone(),
            relay_ip: server_config.relay_ip,
            server: Server::new(server_config),
            epoll,
            listeners,
            relays: Vec::new(),
            ports_used: vec![0u64; 1024],
            stats: stats.clone(),
            clock: Clock::new(),
            scratch: vec![0u8; PEER_HEADROOM + MAX_DATAGRAM + PEER_TAILROOM],
        };
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("turn-relay".into())
            .spawn(move || driver.run(&thread_stop))?;
        Ok(Relay {
            addrs,
            stop,
            stats,
            thread: Some(thread),
        })
    }

    /// The bound listener addresses, in `listen` order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
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
    relay_ip: std::net::IpAddr,
    relay_ports: RangeInclusive<u16>,
    epoll: Epoll,
    listeners: Vec<(SocketAddr, UdpSocket)>,
    /// Relay sockets by allocation slot index.
    relays: Vec<Option<RelaySocket>>,
    /// A bitmap of the relay ports this process holds.
    ports_used: Vec<u64>,
    stats: Arc<Stats>,
    clock: Clock,
    /// The hairpin's second buffer.
    scratch: Vec<u8>,
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
                let token = epoll::token(ev);
                if token == TOKEN_STOP {
                    stop.drain();
                    self.close_all(now);
                    return;
                } else if token < TOKEN_RELAY {
                    let index = (token - TOKEN_LISTENER) as usize;
                    for _ in 0..BATCH {
                        if !self.on_listener(index, now, &mut buf) {
                            break;
                        }
                    }
                } else {
                    let index = (token - TOKEN_RELAY) as usize;
                    for _ in 0..BATCH {
                        if !self.on_relay(index, now, &mut buf) {
                            break;
                        }
                    }
                }
            }
            if self.server.poll_timeout().is_some_and(|t| t <= now) {
                self.server.handle_timeout(now);
            }
            self.drain(now);
        }
    }

    fn poll_timeout_ms(&self) -> i32 {
        match self.server.poll_timeout() {
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
        let Some((local, sock)) = self.listeners.get(index) else {
            return false;
        };
        let local = *local;
        let (len, from) = match sock.recv_from(&mut buf[..MAX_DATAGRAM]) {
            Ok(r) => r,
            Err(_) => return false,
        };
        let tuple = FiveTuple::udp(from, local);
        match self.server.handle_client(now, tuple, &buf[..len]) {
            ClientAction::Done => {}
            ClientAction::Relay {
                alloc,
                peer,
                payload,
            } => match self.relays.get(alloc.index()) {
                Some(Some(r)) if r.id == alloc => {
                    let _ = r.sock.send_to(payload, peer);
                }
                _ => {}
            },
            ClientAction::Hairpin { to, from, payload } => {
                let start = PEER_HEADROOM;
                let end = start + payload.len();
                self.scratch[start..end].copy_from_slice(payload);
                let mut scratch = std::mem::take(&mut self.scratch);
                if let Some(action) =
                    self.server
                        .handle_peer_data(now, to, from, &mut scratch, start..end)
                {
                    self.send_to_client(&action.tuple, &scratch[action.frame]);
                }
                self.scratch = scratch;
            }
        }
        true
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
            self.send_to_client(&action.tuple, &buf[action.frame]);
        }
        true
    }

    fn send_to_client(&self, tuple: &FiveTuple, data: &[u8]) {
        if let Some((_, sock)) = self.listeners.iter().find(|(a, _)| *a == tuple.server) {
            let _ = sock.send_to(data, tuple.client);
        }
    }

    /// Carries out what the core asked for, sends its answers and records its events.
    fn drain(&mut self, now: Time) {
        loop {
            let mut progressed = false;
            while let Some(cmd) = self.server.poll_command() {
                progressed = true;
                match cmd {
                    Command::OpenRelay { id, even_port } => {
                        let result = self.open_relay(id, even_port);
                        self.server.handle_relay_opened(now, id, result);
                    }
                    Command::CloseRelay { id } => self.close_relay(id),
                }
            }
            while let Some(t) = self.server.poll_transmit() {
                progressed = true;
                self.send_to_client(&t.tuple, &t.data);
            }
            while let Some(ev) = self.server.poll_event() {
                progressed = true;
                self.record(ev);
            }
            if !progressed {
                break;
            }
        }
    }

    fn record(&self, ev: Event) {
        let s = &self.stats;
        match ev {
            Event::AllocationCreated { id, user, relayed } => {
                s.allocations.fetch_add(1, Ordering::Relaxed);
                s.allocations_total.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(alloc = id.to_u64(), %user, %relayed, "allocation created");
            }
            Event::AllocationClosed {
                id,
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
                    secs = lifetime.as_secs(),
                    packets_to_peer = usage.packets_to_peer,
                    bytes_to_peer = usage.bytes_to_peer,
                    packets_from_peer = usage.packets_from_peer,
                    bytes_from_peer = usage.bytes_from_peer,
                    "allocation closed"
                );
                tracing::debug!(alloc = id.to_u64(), %user, "allocation owner");
            }
            Event::AuthFailed(f) => {
                s.auth_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(reason = f.label(), "authentication failed");
            }
            Event::PeerRefused(r) => {
                s.peer_refusals.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(range = r.label(), "peer refused by policy");
            }
            Event::QuotaReached { total } => {
                s.quota_refusals.fetch_add(1, Ordering::Relaxed);
                tracing::info!(total, "allocation quota reached");
            }
        }
    }

    fn port_used(&self, port: u16) -> bool {
        self.ports_used[usize::from(port) / 64] & (1 << (port % 64)) != 0
    }

    fn set_port(&mut self, port: u16, used: bool) {
        let word = &mut self.ports_used[usize::from(port) / 64];
        if used {
            *word |= 1 << (port % 64);
        } else {
            *word &= !(1 << (port % 64));
        }
    }

    /// Binds a relay socket on a random free port of the range (an even one if asked).
    fn open_relay(&mut self, id: AllocId, even: bool) -> Result<SocketAddr, OpenError> {
        let (lo, hi) = (*self.relay_ports.start(), *self.relay_ports.end());
        if lo > hi {
            return Err(OpenError::NoPorts);
        }
        let span = u32::from(hi - lo) + 1;
        let first = rand::rng().random_range(0..span);
        for i in 0..span {
            let port = lo + ((first + i) % span) as u16;
            if self.port_used(port) || (even && port % 2 == 1) {
                continue;
            }
            let sock = match UdpSocket::bind(SocketAddr::new(self.relay_ip, port)) {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open a relay socket");
                    return Err(OpenError::Io);
                }
            };
            let registered = sock.set_nonblocking(true).and_then(|()| {
                self.epoll
                    .add(sock.as_raw_fd(), TOKEN_RELAY + id.index() as u64)
            });
            if let Err(e) = registered {
                tracing::warn!(error = %e, "cannot register a relay socket");
                return Err(OpenError::Io);
            }
            let addr = SocketAddr::new(self.relay_ip, port);
            if self.relays.len() <= id.index() {
                self.relays.resize_with(id.index() + 1, || None);
            }
            self.relays[id.index()] = Some(RelaySocket { id, sock, port });
            self.set_port(port, true);
            return Ok(addr);
        }
        Err(OpenError::NoPorts)
    }

    fn close_relay(&mut self, id: AllocId) {
        let Some(slot) = self.relays.get_mut(id.index()) else {
            return;
        };
        if slot.as_ref().is_some_and(|r| r.id == id) {
            if let Some(r) = slot.take() {
                let _ = self.epoll.delete(r.sock.as_raw_fd());
                self.set_port(r.port, false);
            }
        }
    }

    fn close_all(&mut self, now: Time) {
        let ids: Vec<AllocId> = self.relays.iter().flatten().map(|r| r.id).collect();
        for id in ids {
            self.server.close_allocation(now, id);
        }
        self.drain(now);
    }
}
