//! Creates many idle TURN allocations, for the memory part of the relay benchmark
//! (`bench/relay.sh`).
//!
//! A raw STUN client (stun-types + turn-types) against the server's real UDP port: for each
//! allocation, a fresh client socket sends Allocate, answers the 401 challenge (REALM, NONCE)
//! with USERNAME `<expiry>:<prefix><i>`, password base64(HMAC-SHA1(secret, username)) (the TURN
//! REST scheme, [`switchboard_turn::credentials::mint`]) and MESSAGE-INTEGRITY over the RFC 8489
//! long-term key, and once the allocation succeeds closes the socket. The allocation stays on
//! the server until its lifetime (default 600 s) runs out. Each user id is used once, so the
//! per-user quota never applies.
//!
//! Every allocation needs its own 5-tuple, so client sockets bind consecutive ports of
//! `--client-ports` (default 20000-32000, below Linux's ephemeral range): a kernel-chosen port,
//! freed and chosen again, would land on an existing allocation (437).
//!
//! ```text
//! loadgen idle-allocs --server 127.0.0.1:3478 --realm R --secret S [--count 10000] [--window 64]
//!                     [--timeout-ms 1000] [--retries 4] [--user-prefix bench-] [--client-ports LO-HI]
//! ```
//! The last line of output is the machine-readable summary:
//! `summary requested=.. allocated=.. failed=.. elapsed_s=.. allocs_per_s=..`.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stun_types::attribute::{ErrorCode, Nonce, Realm, Username};
use stun_types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageIntegrityCredentials,
    MessageWrite, MessageWriteExt, MessageWriteVec, TransactionId,
};
use turn_types::attribute::RequestedTransport;
use turn_types::message::ALLOCATE;

use crate::sock;

/// How many 438 Stale Nonce answers one allocation may get before it counts as failed.
const MAX_STALE_NONCES: u32 = 3;

#[derive(clap::Args)]
pub struct Args {
    /// The TURN server's UDP address.
    #[arg(long)]
    server: SocketAddr,
    #[arg(long)]
    realm: String,
    /// The TURN REST API shared secret.
    #[arg(long)]
    secret: String,
    /// Allocations to make.
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Allocations in flight at once (1..=1024; beyond, clamped).
    #[arg(long, default_value_t = 64)]
    window: u64,
    /// How long a request waits for its answer before it is sent again.
    #[arg(long = "timeout-ms", value_name = "MS", default_value_t = 1000)]
    timeout_ms: u64,
    /// Resends before an allocation counts as failed (at most 20).
    #[arg(long, default_value_t = 4)]
    retries: u32,
    #[arg(long, default_value = "bench-")]
    user_prefix: String,
    /// The client ports, LO-HI: one per allocation.
    #[arg(long, value_name = "LO-HI", default_value = "20000-32000", value_parser = port_range)]
    client_ports: (u16, u16),
    /// The credentials' lifetime.
    #[arg(long = "ttl-s", value_name = "S", default_value_t = 86_400)]
    ttl_s: u64,
}

impl Args {
    fn window(&self) -> usize {
        self.window.clamp(1, 1024) as usize
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }

    fn retries(&self) -> u32 {
        self.retries.min(20)
    }
}

fn port_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s.split_once('-').ok_or("must be LO-HI")?;
    let lo: u16 = lo.parse().map_err(|e| format!("{e}"))?;
    let hi: u16 = hi.parse().map_err(|e| format!("{e}"))?;
    if lo == 0 || lo > hi {
        return Err("must be LO-HI with 0 < LO <= HI".into());
    }
    Ok((lo, hi))
}

/// One allocation in flight.
struct Attempt {
    socket: UdpSocket,
    user: String,
    /// The request last sent, resent as is on timeout.
    request: Vec<u8>,
    transaction: TransactionId,
    authenticated: bool,
    sends: u32,
    stale_nonces: u32,
    deadline: Instant,
}

enum Outcome {
    Pending,
    Allocated,
    Failed(String),
}

struct Client<'a> {
    args: &'a Args,
    expires_unix: u64,
    realm_warned: bool,
}

impl Client<'_> {
    fn unauthenticated(&self) -> (Vec<u8>, TransactionId) {
        let mut msg = Message::builder_request(ALLOCATE, MessageWriteVec::new());
        msg.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .expect("fresh message");
        msg.add_fingerprint().expect("fresh message");
        let transaction = msg.transaction_id();
        (msg.finish(), transaction)
    }

    fn authenticated(
        &self,
        user: &str,
        realm: &str,
        nonce: &str,
    ) -> Result<(Vec<u8>, TransactionId), String> {
        let cred = switchboard_turn::credentials::mint(
            self.args.secret.as_bytes(),
            user,
            self.expires_unix,
        );
        let key: MessageIntegrityCredentials =
            LongTermKeyCredentials::new(cred.username.clone(), cred.password, realm.to_owned())
                .into();
        let mut msg = Message::builder_request(ALLOCATE, MessageWriteVec::new());
        let err = |e: stun_types::message::StunWriteError| format!("encode: {e}");
        msg.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .map_err(err)?;
        msg.add_attribute(&Username::new(&cred.username).map_err(err)?)
            .map_err(err)?;
        msg.add_attribute(&Realm::new(realm).map_err(err)?)
            .map_err(err)?;
        msg.add_attribute(&Nonce::new(nonce).map_err(err)?)
            .map_err(err)?;
        msg.add_message_integrity(&key, IntegrityAlgorithm::Sha1)
            .map_err(err)?;
        msg.add_fingerprint().map_err(err)?;
        let transaction = msg.transaction_id();
        Ok((msg.finish(), transaction))
    }

    /// Handles one datagram received on `attempt`'s socket.
    fn on_response(&mut self, attempt: &mut Attempt, data: &[u8], now: Instant) -> Outcome {
        let Ok(msg) = Message::from_bytes(data) else {
            return Outcome::Pending;
        };
        if msg.transaction_id() != attempt.transaction || !msg.has_method(ALLOCATE) {
            return Outcome::Pending; // A late answer to an earlier request.
        }
        if msg.has_class(MessageClass::Success) {
            return Outcome::Allocated;
        }
        if !msg.has_class(MessageClass::Error) {
            return Outcome::Pending;
        }
        let code = msg.attribute::<ErrorCode>().map(|e| e.code()).unwrap_or(0);
        let challenge = match code {
            401 if !attempt.authenticated => true,
            438 if attempt.stale_nonces < MAX_STALE_NONCES => {
                attempt.stale_nonces += 1;
                true
            }
            _ => false,
        };
        if !challenge {
            return Outcome::Failed(code.to_string());
        }
        let (Ok(realm), Ok(nonce)) = (msg.attribute::<Realm>(), msg.attribute::<Nonce>()) else {
            return Outcome::Failed(format!("{code}-without-realm-or-nonce"));
        };
        if realm.realm() != self.args.realm && !self.realm_warned {
            eprintln!(
                "idle_allocs: server realm {:?} is not --realm {:?}; using the server's",
                realm.realm(),
                self.args.realm
            );
            self.realm_warned = true;
        }
        match self.authenticated(&attempt.user, realm.realm(), nonce.nonce()) {
            Ok((request, transaction)) => {
                attempt.request = request;
                attempt.transaction = transaction;
                attempt.authenticated = true;
                attempt.sends = 0;
                send(attempt, now, self.args.timeout())
            }
            Err(e) => Outcome::Failed(e),
        }
    }
}

/// Sends (or resends) the attempt's current request and rearms its timer.
fn send(attempt: &mut Attempt, now: Instant, timeout: Duration) -> Outcome {
    attempt.sends += 1;
    attempt.deadline = now + timeout;
    match attempt.socket.send(&attempt.request) {
        Ok(_) => Outcome::Pending,
        // A full socket buffer: the timer resends.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Outcome::Pending,
        Err(e) => Outcome::Failed(format!("send-{:?}", e.kind())),
    }
}

/// Binds the next free port of the range on `ip`, connected to `server`.
fn next_socket(
    ip: IpAddr,
    server: SocketAddr,
    next_port: &mut u32,
    hi: u16,
) -> io::Result<UdpSocket> {
    while *next_port <= u32::from(hi) {
        let port = *next_port as u16;
        *next_port += 1;
        match UdpSocket::bind(SocketAddr::new(ip, port)) {
            Ok(socket) => {
                socket.connect(server)?;
                socket.set_nonblocking(true)?;
                return Ok(socket);
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        "--client-ports exhausted",
    ))
}

pub fn run(args: &Args) -> io::Result<()> {
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(io::Error::other)?
        .as_secs();
    let mut client = Client {
        args,
        expires_unix: now_unix + args.ttl_s,
        realm_warned: false,
    };
    let local_ip: IpAddr = if args.server.is_ipv4() {
        [127, 0, 0, 1].into()
    } else {
        IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])
    };
    let start = Instant::now();
    let mut next_user = 0u64;
    let mut next_port = u32::from(args.client_ports.0);
    let mut in_flight: Vec<Attempt> = Vec::with_capacity(args.window());
    let mut allocated = 0u64;
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut buf = [0u8; 2048];
    let mut last_report = start;

    while next_user < args.count || !in_flight.is_empty() {
        let now = Instant::now();
        // Fill the window.
        while in_flight.len() < args.window() && next_user < args.count {
            let socket =
                match next_socket(local_ip, args.server, &mut next_port, args.client_ports.1) {
                    Ok(socket) => socket,
                    Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => {
                        // Out of client ports: the rest cannot be tried.
                        *failures.entry("client-ports-exhausted".into()).or_default() +=
                            args.count - next_user;
                        next_user = args.count;
                        break;
                    }
                    Err(e) => {
                        // E.g. EMFILE: count it and go on; finishing attempts free descriptors.
                        *failures
                            .entry(format!("socket-{:?}", e.kind()))
                            .or_default() += 1;
                        next_user += 1;
                        continue;
                    }
                };
            let (request, transaction) = client.unauthenticated();
            let mut attempt = Attempt {
                socket,
                user: format!("{}{next_user}", args.user_prefix),
                request,
                transaction,
                authenticated: false,
                sends: 0,
                stale_nonces: 0,
                deadline: now,
            };
            next_user += 1;
            match send(&mut attempt, now, args.timeout()) {
                Outcome::Failed(why) => *failures.entry(why).or_default() += 1,
                _ => in_flight.push(attempt),
            }
        }
        if in_flight.is_empty() {
            continue;
        }

        let mut pollfds = sock::pollfds(in_flight.iter().map(|a| &a.socket));
        let first_deadline = in_flight.iter().map(|a| a.deadline).min().unwrap_or(now);
        let wait = first_deadline.saturating_duration_since(Instant::now());
        let timeout_ms = wait.as_micros().div_ceil(1000).min(50) as i32;
        sock::poll(&mut pollfds, timeout_ms)?;

        let now = Instant::now();
        let mut outcomes = Vec::with_capacity(in_flight.len());
        for (attempt, pollfd) in in_flight.iter_mut().zip(&pollfds) {
            let mut outcome = Outcome::Pending;
            if pollfd.revents != 0 {
                loop {
                    match attempt.socket.recv(&mut buf) {
                        Ok(len) => {
                            outcome = client.on_response(attempt, &buf[..len], now);
                            if !matches!(outcome, Outcome::Pending) {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            outcome = Outcome::Failed(format!("recv-{:?}", e.kind()));
                            break;
                        }
                    }
                }
            }
            if matches!(outcome, Outcome::Pending) && now >= attempt.deadline {
                outcome = if attempt.sends > args.retries() {
                    Outcome::Failed(if attempt.authenticated {
                        "timeout-authenticated".into()
                    } else {
                        "timeout".into()
                    })
                } else {
                    send(attempt, now, args.timeout())
                };
            }
            outcomes.push(outcome);
        }
        // Drop finished attempts (closing their sockets); the allocation stays on the server.
        let mut outcomes = outcomes.into_iter();
        in_flight.retain(|_| match outcomes.next() {
            Some(Outcome::Allocated) => {
                allocated += 1;
                false
            }
            Some(Outcome::Failed(why)) => {
                *failures.entry(why).or_default() += 1;
                false
            }
            _ => true,
        });

        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            eprintln!(
                "idle_allocs: allocated={allocated} failed={} in_flight={}",
                failures.values().sum::<u64>(),
                in_flight.len()
            );
        }
    }

    let elapsed = start.elapsed().as_secs_f64();
    let failed: u64 = failures.values().sum();
    for (why, n) in &failures {
        println!("idle_allocs: failure {why}: {n}");
    }
    println!(
        "summary requested={} allocated={allocated} failed={failed} elapsed_s={elapsed:.3} \
         allocs_per_s={:.1}",
        args.count,
        allocated as f64 / elapsed.max(1e-9)
    );
    Ok(())
}
