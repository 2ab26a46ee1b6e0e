//! The driver: sockets and a clock around [`proto::Server`](crate::proto::Server).
//!
//! One thread owns the core, the UDP listener sockets (`turn.listen`), the client connections,
//! and one relay socket per allocation and family, and runs a level-triggered epoll loop over
//! them. One thread, because a relayed packet is two system calls of work: handing it between
//! threads would cost more than the work itself, and the core then needs no lock at all. The
//! ChannelData path in both directions reads into a buffer with headroom, frames in place and
//! sends: no heap allocation, no STUN parsing, no lock.
//!
//! Streams (TCP and TLS, [`stream`]) carry the same messages, framed by their headers; an
//! allocation made over one lives as long as its connection. A thread of their own
//! ([`accept`]) accepts them, caps them and takes TLS ones through their handshake, and hands
//! them over ready, so that a flood of connections or handshakes does not delay relayed
//! datagrams.
//!
//! [`Relay::start`] binds every listener before it returns (so the caller can report a bad
//! address and knows the ports bound for port 0), then runs the loop until
//! [`Relay::shutdown`].
//!
//! This file holds the handle ([`Relay`], [`RelayConfig`], [`Stats`]), the binding of the
//! listeners and the driver's state; `driver` its loop and read paths; `commands` what the core
//! asks of it (relay sockets, answers, events) and what the daemon asks of the relay
//! ([`RelayControl`]); `stream` the TCP and TLS connections; `accept` the acceptor thread;
//! `epoll` the system calls.

mod accept;
mod commands;
mod driver;
mod epoll;
mod stream;
mod tls;

pub use commands::RelayControl;
pub use tls::{fingerprint, TlsCertificate, TlsError};

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::ops::RangeInclusive;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::proto::{
    AllocId, Family, FiveTuple, Server, ServerConfig, Time, Usage, PEER_HEADROOM, PEER_TAILROOM,
};
use accept::Acceptor;
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

/// What an epoll registration is for, stored as its token: the kind in the top byte, the
/// index (of a listener, connection or relay socket) below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Stop,
    Udp(usize),
    Tcp(usize),
    Tls(usize),
    Conn(usize),
    Relay(usize),
    Control,
    Arrival,
}

impl Token {
    const SHIFT: u32 = 56;
    /// The largest index a token carries.
    const MAX_INDEX: usize = (1 << Self::SHIFT) - 1;

    fn decode(bits: u64) -> Option<Token> {
        let index = (bits & Self::MAX_INDEX as u64) as usize;
        Some(match bits >> Self::SHIFT {
            0 => Token::Stop,
            1 => Token::Udp(index),
            2 => Token::Tcp(index),
            3 => Token::Tls(index),
            4 => Token::Conn(index),
            5 => Token::Relay(index),
            6 => Token::Control,
            7 => Token::Arrival,
            _ => return None,
        })
    }
}

impl From<Token> for u64 {
    fn from(t: Token) -> u64 {
        let (kind, index) = match t {
            Token::Stop => (0, 0),
            Token::Udp(i) => (1, i),
            Token::Tcp(i) => (2, i),
            Token::Tls(i) => (3, i),
            Token::Conn(i) => (4, i),
            Token::Relay(i) => (5, i),
            Token::Control => (6, 0),
            Token::Arrival => (7, 0),
        };
        debug_assert!(index <= Token::MAX_INDEX);
        (kind << Token::SHIFT) | index as u64
    }
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
    /// The most of those from one source (an IPv4 address, an IPv6 /64); more are closed on
    /// accept, before any TLS work.
    pub max_connections_per_source: u32,
    /// How long a TCP or TLS connection may stay open without an allocation (the TLS
    /// handshake and authentication included).
    pub unauthenticated_timeout: Duration,
    /// How long a connection's outgoing queue may stay full without draining before the
    /// connection is closed.
    pub stall_timeout: Duration,
    /// The core's settings; `server.relay_ips` and `server.relay_ports` place relay sockets.
    pub server: ServerConfig,
    /// Peers served inside the process (the SFU), if any.
    pub local: Option<LocalPeers>,
}

/// Peers served inside this process (the SFU's media address): the relay hands their
/// datagrams over instead of sending them, and takes theirs through
/// [`RelayControl::deliver_local`].
#[derive(Clone)]
pub struct LocalPeers {
    /// Their addresses (`ServerConfig::local_peers` is set from them).
    pub addrs: Vec<SocketAddr>,
    /// Takes a datagram for one of them: `(to, from, payload)`, `from` being the relayed
    /// address of the allocation that sent it. Called on the relay thread: it must not block.
    pub deliver: LocalDeliver,
}

/// How the relay hands a datagram to a local peer: `(to, from, payload)`.
pub type LocalDeliver = Arc<dyn Fn(SocketAddr, SocketAddr, &[u8]) + Send + Sync>;

impl std::fmt::Debug for LocalPeers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPeers")
            .field("addrs", &self.addrs)
            .finish()
    }
}

impl RelayConfig {
    /// UDP and TCP on `listen`, no TLS, default bounds.
    pub fn new(listen: Vec<SocketAddr>, server: ServerConfig) -> Self {
        RelayConfig {
            listen,
            tls_listen: Vec::new(),
            tls: None,
            max_connections: 4096,
            max_connections_per_source: 128,
            unauthenticated_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            server,
            local: None,
        }
    }
}

/// Counters the relay thread publishes, for logs and metrics. Written by one thread only,
/// except the connection counts, which the acceptor thread adds to at accept (and takes a
/// failed handshake from).
///
/// Each relay metric is counted once, in one of two ways: here, as an atomic the daemon reads
/// at each scrape, for what changes often (per allocation, per packet) or must show before it
/// first happens; or, for rare events by reason (authentication failures, peer refusals,
/// dropped challenges), as a `metrics` counter incremented where the relay thread records the
/// event (`commands.rs`), because a label per reason is what they are read by.
#[derive(Debug, Default)]
pub struct Stats {
    /// Allocations open now.
    pub allocations: AtomicU64,
    /// Allocations ever created.
    pub allocations_total: AtomicU64,
    /// Allocate requests refused for a quota.
    pub quota_refusals: AtomicU64,
    /// TCP and TLS client connections open now.
    pub connections: AtomicU64,
    /// TCP and TLS client connections ever accepted.
    pub connections_total: AtomicU64,
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
    /// Payload dropped over a bandwidth cap, both ways, published as the relayed counters.
    pub dropped_packets: AtomicU64,
    pub dropped_bytes: AtomicU64,
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
    control: RelayControl,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Binds the listeners and starts the relay thread.
    pub fn start(config: RelayConfig) -> io::Result<Relay> {
        let invalid = |msg: &str| io::Error::new(io::ErrorKind::InvalidInput, msg.to_owned());
        if config.listen.is_empty() && config.tls_listen.is_empty() {
            return Err(invalid("no TURN listen address"));
        }
        if config.listen.len() + config.tls_listen.len() > Token::MAX_INDEX {
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
        let local = config.local.map(|l| {
            server_config.local_peers = l.addrs;
            l.deliver
        });
        let all: Vec<SocketAddr> = config
            .listen
            .iter()
            .chain(&config.tls_listen)
            .copied()
            .collect();
        server_config.host_ips.extend(host_ips(&all)?);
        tracing::info!(
            addresses = %list(&server_config.host_ips),
            "relay: the box's own addresses, never peers unless allow_peers names them alone"
        );
        let stop = Arc::new(EventFd::new()?);
        let stats = Arc::new(Stats::default());
        let epoll = Epoll::new()?;
        epoll.add(stop.as_raw_fd(), Token::Stop)?;
        let control = RelayControl::new()?;
        let controls = control.controls();
        epoll.add(controls.wake.as_raw_fd(), Token::Control)?;
        for (i, (_, sock)) in udp.iter().enumerate() {
            epoll.add(sock.as_raw_fd(), Token::Udp(i))?;
        }
        let acceptor = if tcp.is_empty() && tls.is_empty() {
            None
        } else {
            let limits = accept::Limits {
                max_connections: config.max_connections,
                per_source: config.max_connections_per_source,
                unauthenticated: config.unauthenticated_timeout,
            };
            let tls_config = config.tls.as_ref().map(TlsCertificate::server_config);
            let a = Acceptor::start(tcp, tls, tls_config, limits, stats.clone())?;
            epoll.add(a.ready.as_raw_fd(), Token::Arrival)?;
            Some(a)
        };
        let mut driver = Driver {
            relay_ports: server_config.relay_ports.clone(),
            server: Server::new(server_config),
            epoll,
            udp,
            acceptor,
            conns: Vec::new(),
            free_conns: Vec::new(),
            by_tuple: HashMap::new(),
            unauthenticated_timeout: config.unauthenticated_timeout,
            stall_timeout: config.stall_timeout,
            next_conn_check: None,
            closed_usage: HashMap::new(),
            closed_total: Usage::default(),
            next_usage: Time::from_unix_millis(0),
            usage_changed: false,
            relays: Vec::new(),
            ports_used: [vec![0u64; 1024], vec![0u64; 1024]],
            stats: stats.clone(),
            controls,
            clock: Clock::new(),
            scratch: vec![0u8; PEER_HEADROOM + MAX_DATAGRAM + PEER_TAILROOM],
            local,
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
            control,
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

    /// A handle by which the daemon asks things of the running relay (revocations).
    pub fn control(&self) -> RelayControl {
        self.control.clone()
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

/// This host's addresses: its listeners' and every interface's. None of them is a peer
/// unless `allow_peers` names it alone (`policy`). Failing to list the interfaces is an
/// error, not an empty list: the relay would then reach every service of the box that a wide
/// `allow_peers` range contains (the hardened unit once lacked `AF_NETLINK` and did just that).
fn host_ips(listen: &[SocketAddr]) -> io::Result<Vec<IpAddr>> {
    let interfaces = epoll::interface_addresses().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "listing this host's addresses failed ({e}); the relay needs them to keep its \
                 own services out of reach (under systemd, RestrictAddressFamilies must \
                 include AF_NETLINK)"
            ),
        )
    })?;
    let mut ips: Vec<_> = listen
        .iter()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
        .chain(interfaces)
        .collect();
    ips.sort_unstable();
    ips.dedup();
    Ok(ips)
}

/// Addresses for a log line: `10.0.0.5, ::1`.
fn list(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// This host's addresses, as the relay finds them at start (for `check-config`).
pub fn host_addresses() -> io::Result<Vec<IpAddr>> {
    host_ips(&[])
}

/// Monotonic time anchored to the wall clock at start (see [`Time`]), and the wall clock
/// itself, read as it is now, for credential expiries.
struct Clock {
    start: Instant,
    start_unix_ms: u64,
}

impl Clock {
    fn new() -> Self {
        Clock {
            start: Instant::now(),
            start_unix_ms: wall().as_millis() as u64,
        }
    }

    fn now(&self) -> Time {
        Time::from_unix_millis(self.start_unix_ms + self.start.elapsed().as_millis() as u64)
    }

    /// The wall clock now, in Unix seconds (`CLOCK_REALTIME`, a vDSO read).
    fn wall_secs(&self) -> u64 {
        wall().as_secs()
    }
}

/// Since the Unix epoch by the wall clock (zero before it).
fn wall() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
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
    /// The acceptor thread, which hands over TCP and TLS connections; none without stream
    /// listeners.
    acceptor: Option<Acceptor>,
    /// Client connections (TCP, TLS) by slot.
    conns: Vec<Option<Conn>>,
    free_conns: Vec<usize>,
    /// The connection of each stream 5-tuple.
    by_tuple: HashMap<FiveTuple, usize>,
    unauthenticated_timeout: Duration,
    stall_timeout: Duration,
    /// When connections are next checked for their deadlines.
    next_conn_check: Option<Time>,
    /// Relay sockets by allocation slot index and family (`2 * index + family`).
    relays: Vec<Option<RelaySocket>>,
    /// Bitmaps of the relay ports this process holds, per family.
    ports_used: [Vec<u64>; 2],
    stats: Arc<Stats>,
    /// What the daemon asked of the relay ([`RelayControl`]).
    controls: Arc<commands::Controls>,
    /// What closed allocations relayed, per user, and when the user's last one closed.
    closed_usage: HashMap<Box<str>, (Usage, Time)>,
    /// What closed allocations relayed, all users together.
    closed_total: Usage,
    /// When [`Stats::user_usage`] is next published, if allocations are open or one closed.
    next_usage: Time,
    usage_changed: bool,
    clock: Clock,
    /// The hairpin's second buffer.
    scratch: Vec<u8>,
    /// Where datagrams for the local peers go.
    local: Option<LocalDeliver>,
}

fn relay_slot(id: AllocId, family: Family) -> usize {
    2 * id.index() + family.index()
}

#[cfg(test)]
mod tests {
    use super::Token;

    #[test]
    fn a_token_reads_back_as_the_registration_it_was_made_for() {
        let max = Token::MAX_INDEX;
        for t in [
            Token::Stop,
            Token::Udp(0),
            Token::Tcp(3),
            Token::Tls(max),
            Token::Conn(12_345),
            Token::Relay(max),
            Token::Control,
            Token::Arrival,
        ] {
            assert_eq!(Token::decode(u64::from(t)), Some(t));
        }
        // Kinds never written are refused, not read as some other socket's.
        assert_eq!(Token::decode(8 << Token::SHIFT), None);
        assert_eq!(Token::decode(u64::MAX), None);
    }
}
