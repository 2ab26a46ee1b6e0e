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
//! idle_allocs --server 127.0.0.1:3478 --realm R --secret S [--count 10000] [--window 64]
//!             [--timeout-ms 1000] [--retries 4] [--user-prefix bench-] [--client-ports LO-HI]
//! ```
//! The last line of output is the machine-readable summary:
//! `summary requested=.. allocated=.. failed=.. elapsed_s=.. allocs_per_s=..`.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stun_types::attribute::{ErrorCode, Nonce, Realm, Username};
use stun_types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageIntegrityCredentials,
    MessageWrite, MessageWriteExt, MessageWriteVec, TransactionId,
};
use turn_types::attribute::RequestedTransport;
use turn_types::message::ALLOCATE;

const USAGE: &str = "usage: idle_allocs --server IP:PORT --realm R --secret S [--count N] \
                     [--window N] [--timeout-ms MS] [--retries N] [--user-prefix P] \
                     [--client-ports LO-HI] [--ttl-s S]";

/// How many 438 Stale Nonce answers one allocation may get before it counts as failed.
const MAX_STALE_NONCES: u32 = 3;

struct Args {
    server: SocketAddr,
    realm: String,
    secret: String,
    count: u64,
    window: usize,
    timeout: Duration,
    retries: u32,
    user_prefix: String,
    client_ports: (u16, u16),
    ttl_s: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut server = None;
    let mut realm = None;
    let mut secret = None;
    let mut args = Args {
        server: SocketAddr::from(([127, 0, 0, 1], 3478)),
        realm: String::new(),
        secret: String::new(),
        count: 10_000,
        window: 64,
        timeout: Duration::from_millis(1000),
        retries: 4,
        user_prefix: "bench-".into(),
        client_ports: (20_000, 32_000),
        ttl_s: 86_400,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number =
            || -> Result<u64, String> { value.parse().map_err(|e| format!("{flag}: {e}")) };
        match flag.as_str() {
            "--server" => server = Some(value.parse().map_err(|e| format!("--server: {e}"))?),
            "--realm" => realm = Some(value),
            "--secret" => secret = Some(value),
            "--count" => args.count = number()?,
            "--window" => args.window = number()?.clamp(1, 1024) as usize,
            "--timeout-ms" => args.timeout = Duration::from_millis(number()?.max(1)),
            "--retries" => args.retries = number()?.min(20) as u32,
            "--user-prefix" => args.user_prefix = value,
            "--ttl-s" => args.ttl_s = number()?,
            "--client-ports" => {
                let (lo, hi) = value
                    .split_once('-')
                    .ok_or("--client-ports must be LO-HI")?;
                let lo = lo.parse().map_err(|e| format!("--client-ports: {e}"))?;
                let hi = hi.parse().map_err(|e| format!("--client-ports: {e}"))?;
                if lo == 0 || lo > hi {
                    return Err("--client-ports must be LO-HI with 0 < LO <= HI".into());
                }
                args.client_ports = (lo, hi);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    args.server = server.ok_or("--server is required")?;
    args.realm = realm.ok_or("--realm is required")?;
    args.secret = secret.ok_or("--secret is required")?;
    Ok(args)
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
                send(attempt, now, self.args.timeout)
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

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("idle_allocs: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("idle_allocs: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> io::Result<()> {
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
    let mut in_flight: Vec<Attempt> = Vec::with_capacity(args.window);
    let mut allocated = 0u64;
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut buf = [0u8; 2048];
    let mut last_report = start;

    while next_user < args.count || !in_flight.is_empty() {
        let now = Instant::now();
        // Fill the window.
        while in_flight.len() < args.window && next_user < args.count {
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
            match send(&mut attempt, now, args.timeout) {
                Outcome::Failed(why) => *failures.entry(why).or_default() += 1,
                _ => in_flight.push(attempt),
            }
        }
        if in_flight.is_empty() {
            continue;
        }

        let mut pollfds: Vec<libc::pollfd> = in_flight
            .iter()
            .map(|a| libc::pollfd {
                fd: a.socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let first_deadline = in_flight.iter().map(|a| a.deadline).min().unwrap_or(now);
        let wait = first_deadline.saturating_duration_since(Instant::now());
        let timeout_ms = wait.as_micros().div_ceil(1000).min(50) as i32;
        // SAFETY: `pollfds` is a valid, writable array of `pollfds.len()` entries.
        let ready = unsafe {
            libc::poll(
                pollfds.as_mut_ptr(),
                pollfds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }

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
                outcome = if attempt.sends > args.retries {
                    Outcome::Failed(if attempt.authenticated {
                        "timeout-authenticated".into()
                    } else {
                        "timeout".into()
                    })
                } else {
                    send(attempt, now, args.timeout)
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
