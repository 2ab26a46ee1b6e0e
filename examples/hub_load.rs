//! The load generator of the signaling hub benchmark (`bench/hub.sh`): N sockets in pairs
//! exchanging `call:ice-candidate` messages through a hub, the same wire protocol and the same
//! client for every server, so that switchboard and the Node `socket.io` anchor
//! (`bench/node/relay_server.mjs`) are measured alike.
//!
//! One run, against one server (`--addr`), over one transport (`--transport`):
//!
//! - `sio`: Socket.IO v5 over Engine.IO v4, websocket transport only, spoken raw: the
//!   connection to `/socket.io/?EIO=4&transport=websocket`, the open packet `0{...}`, the
//!   namespace connect `40{"token": JWT}` answered `40{"sid": ...}`, events
//!   `42["call:ice-candidate", {...}]`, and every Engine.IO ping `2` answered `3`;
//! - `ws`: switchboard's JSON WebSocket at `/ws`, the token in `Authorization: Bearer`, frames
//!   `{"event": "call:ice-candidate", "data": {...}}`.
//!
//! The steps, each bounded in time:
//!
//! 1. Connect: `--sockets` sockets, one user each (random UUIDs, tokens minted with
//!    `auth::mint` from `--jwt-secret`), at most `--connect-concurrency` handshakes at once.
//!    The server's resident memory (VmRSS of `--server-pid`) before and after gives its memory
//!    per 1,000 sockets.
//! 2. Set up: socket 2i (A) and socket 2i+1 (B) are a pair with a live call, made over the
//!    server's REST API with `--setup-threads` keep-alive connections: B makes itself known
//!    (`GET /api/calls`), A calls B (`POST /api/calls/initiate`, a new conversation: the
//!    daemon must run with `auth.open_conversations = true`) and B answers
//!    (`POST /api/calls/{id}/answer`). A call's own events (`call:incoming`, ...) reach the
//!    sockets and are counted, not measured.
//! 3. Phases (`--phases name:rate,...`): in each, every pair passes `--window` candidates back
//!    and forth (a closed loop: a socket sends one for each it receives, A starts with the
//!    window), and no socket sends more than `rate` per second (its sends are at least
//!    1/rate apart, A's first at a random point of its first interval), which keeps every
//!    socket under the hub's 50 per second. A high rate finds the server's throughput (the
//!    loop is then bound by the server: the window's messages are always queued somewhere); a
//!    low one offers a fixed load (sockets × rate messages per second) and shows the latency
//!    of an unsaturated server. Each candidate carries its send time (`"t"`, microseconds);
//!    the receiver counts it and its delivery latency if it arrives inside the measured
//!    window (after `--warmup`, for `--duration`); a message sent in an earlier phase is
//!    ignored; between phases, a one-second pause lets what is in flight drain. The server's
//!    CPU (the sum of its threads' `schedstat`) and this process's (`getrusage`) over each
//!    window give CPU per message delivered; the machine's busy time (/proc/stat) less both
//!    is what other processes took.
//! 4. Close every socket; the last memory figures are taken before.
//!
//! Anything unexpected is an error: a socket that does not connect or is closed by the server,
//! an `error` event (e.g. `rate_limited`), a candidate from someone other than the partner, a
//! failed setup request. The first few are printed, all are counted, and the exit status is 1.
//!
//! ```text
//! hub_load --addr IP:PORT --transport sio|ws --jwt-secret S [--sockets 10000] [--window 1]
//!          [--phases max:40,fixed:1] [--warmup 2] [--duration 10] [--server-pid PID]
//!          [--connect-concurrency 256] [--setup-threads 16] [--threads 1] [--label NAME]
//! ```
//! Output ends with machine-readable lines: `connect key=value ...`, one `phase name=...`
//! per phase, and `end ...`.

mod common;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use switchboard_signaling::auth;
use switchboard_signaling::time::Timestamp;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use uuid::Uuid;

use common::{own_cpu_us, percentile};

const USAGE: &str = "usage: hub_load --addr IP:PORT --transport sio|ws --jwt-secret S \
                     [--sockets N] [--window W] [--phases name:rate,...] [--warmup SECS] \
                     [--duration SECS] [--server-pid PID] [--connect-concurrency N] \
                     [--setup-threads N] [--threads N] [--label NAME]";

/// The hub's limit is 50 messages per second per socket: the rate stays below it.
const MAX_RATE: f64 = 45.0;
/// One socket's connection and handshake, at most.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// All sockets connected, at most.
const CONNECT_ALL_TIMEOUT: Duration = Duration::from_secs(180);
/// One setup request, at most.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause between phases (what is in flight drains) and before the sockets close.
const GAP: Duration = Duration::from_secs(1);
/// How long the sockets have to close and report, at most.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How many errors are printed (all are counted).
const SHOWN_ERRORS: usize = 10;
/// A realistic candidate (the shape browsers send), the same for every message.
const CANDIDATE: &str = "candidate:842163049 1 udp 1677729535 192.0.2.10 54321 typ srflx \
                         raddr 10.0.0.2 rport 54321 generation 0 ufrag Wf3q network-cost 999";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Sio,
    Ws,
}

struct Args {
    addr: SocketAddr,
    transport: Transport,
    jwt_secret: String,
    sockets: usize,
    window: u32,
    phases: Vec<(String, f64)>,
    warmup: Duration,
    duration: Duration,
    server_pid: Option<u32>,
    connect_concurrency: usize,
    setup_threads: usize,
    threads: usize,
    label: String,
}

fn parse_args() -> Result<Args, String> {
    let mut addr = None;
    let mut transport = None;
    let mut jwt_secret = None;
    let mut args = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        transport: Transport::Sio,
        jwt_secret: String::new(),
        sockets: 10_000,
        window: 1,
        phases: vec![("max".into(), 40.0), ("fixed".into(), 1.0)],
        warmup: Duration::from_secs(2),
        duration: Duration::from_secs(10),
        server_pid: None,
        connect_concurrency: 256,
        setup_threads: 16,
        threads: 1,
        label: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = |lo: f64, hi: f64| -> Result<f64, String> {
            let v: f64 = value.parse().map_err(|e| format!("{flag}: {e}"))?;
            if (lo..=hi).contains(&v) {
                Ok(v)
            } else {
                Err(format!("{flag}: must be {lo}..={hi}"))
            }
        };
        match flag.as_str() {
            "--addr" => addr = Some(value.parse().map_err(|e| format!("--addr: {e}"))?),
            "--transport" => {
                transport = Some(match value.as_str() {
                    "sio" => Transport::Sio,
                    "ws" => Transport::Ws,
                    _ => return Err("--transport is sio or ws".into()),
                })
            }
            "--jwt-secret" => jwt_secret = Some(value),
            "--sockets" => args.sockets = number(2.0, 20_000.0)? as usize,
            "--window" => args.window = number(1.0, 16.0)? as u32,
            "--warmup" => args.warmup = Duration::from_secs_f64(number(0.0, 600.0)?),
            "--duration" => args.duration = Duration::from_secs_f64(number(1.0, 600.0)?),
            "--server-pid" => {
                args.server_pid = Some(value.parse().map_err(|e| format!("{flag}: {e}"))?)
            }
            "--connect-concurrency" => args.connect_concurrency = number(1.0, 4096.0)? as usize,
            "--setup-threads" => args.setup_threads = number(1.0, 256.0)? as usize,
            "--threads" => args.threads = number(1.0, 64.0)? as usize,
            "--label" => args.label = value,
            "--phases" => {
                args.phases = value
                    .split(',')
                    .map(|p| {
                        let (name, rate) = p
                            .split_once(':')
                            .ok_or(format!("--phases: {p:?} is not name:rate"))?;
                        let rate: f64 = rate.parse().map_err(|e| format!("--phases: {e}"))?;
                        if !(0.1..=MAX_RATE).contains(&rate) || name.is_empty() {
                            return Err(format!(
                                "--phases: {p:?}: a name, and a rate of 0.1..={MAX_RATE} per second"
                            ));
                        }
                        Ok((name.to_owned(), rate))
                    })
                    .collect::<Result<_, String>>()?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    args.addr = addr.ok_or("--addr is required")?;
    args.transport = transport.ok_or("--transport is required")?;
    args.jwt_secret = jwt_secret.ok_or("--jwt-secret is required")?;
    if !args.sockets.is_multiple_of(2) {
        return Err("--sockets must be even (pairs)".into());
    }
    if args.phases.is_empty() {
        return Err("--phases: at least one".into());
    }
    if args.label.is_empty() {
        args.label = match args.transport {
            Transport::Sio => "sio".into(),
            Transport::Ws => "ws".into(),
        };
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("hub_load: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hub_load: tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let report = runtime.block_on(run(Arc::new(args)));
    // Sockets that did not close in time are dropped with the runtime, without waiting.
    runtime.shutdown_timeout(Duration::from_secs(1));
    report.print();
    if report.failed() {
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// What the sockets share.

/// Known before any socket starts.
struct Shared {
    args: Arc<Args>,
    users: Vec<Uuid>,
    tokens: Vec<String>,
    /// The time origin of the `"t"` stamps.
    base: Instant,
    /// Candidates delivered inside each phase's window so far (for the per-second figures).
    delivered: Vec<AtomicU64>,
}

/// Known once the calls exist: what the sockets do, and when.
struct Plan {
    /// Each pair's call (none if its setup failed: the pair stays idle).
    calls: Vec<Option<Uuid>>,
    phases: Vec<Window>,
    /// When the sockets close.
    close_at: Instant,
}

#[derive(Clone, Copy)]
struct Window {
    /// Sending starts.
    start: Instant,
    /// Counting starts (after the warm-up).
    from: Instant,
    /// Sending and counting end.
    until: Instant,
}

/// What one socket saw.
#[derive(Default)]
struct SocketStats {
    connected: bool,
    /// Per phase: candidates sent and received inside the window, latencies in microseconds.
    sent: Vec<u64>,
    received: Vec<u64>,
    latency_us: Vec<Vec<u32>>,
    /// `error` events, candidates from someone else, unparsable candidates, closes by the
    /// server before the end.
    error_events: u64,
    wrong_sender: u64,
    malformed: u64,
    closed_early: u64,
    /// Other server events (the calls' own `call:incoming`, `call:participant-joined`, ...).
    other_events: u64,
    shown: Vec<String>,
}

impl SocketStats {
    fn new(phases: usize) -> SocketStats {
        SocketStats {
            sent: vec![0; phases],
            received: vec![0; phases],
            latency_us: vec![Vec::new(); phases],
            ..SocketStats::default()
        }
    }

    fn show(&mut self, e: String) {
        if self.shown.len() < 2 {
            self.shown.push(e);
        }
    }
}

/// A client WebSocket on a plain TCP stream (RFC 6455): the handshake, masked frames out,
/// frames in. Written here rather than taken from tokio-tungstenite so that the generator
/// costs less per message than the servers it measures (it shares their machine): its stream
/// adapters and per-message wakeups were a third of the generator's user time.
struct Ws {
    tcp: TcpStream,
    /// Bytes read, `start..end` not parsed yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The frame being written.
    out: Vec<u8>,
    /// The masks' generator (xorshift).
    seed: u32,
}

/// A frame from the server, or a text frame to send.
#[derive(Debug)]
enum Frame {
    Text(String),
    Close(Option<u16>),
    /// Binary, ping (answered), pong.
    Other,
}

impl Frame {
    fn text(t: impl Into<String>) -> Frame {
        Frame::Text(t.into())
    }
}

impl Ws {
    /// The opening handshake for `path` on `tcp`.
    async fn handshake(
        mut tcp: TcpStream,
        host: &str,
        path: &str,
        bearer: Option<&str>,
    ) -> Result<Ws, String> {
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        );
        if let Some(token) = bearer {
            let _ = write!(request, "Authorization: Bearer {token}\r\n");
        }
        request.push_str("\r\n");
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let mut buf = vec![0u8; 2048];
        let mut end = 0;
        let head = loop {
            if let Some(at) = buf[..end].windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if end == buf.len() {
                return Err("handshake: no end of the response head in 2 KiB".into());
            }
            let n = tcp
                .read(&mut buf[end..])
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            if n == 0 {
                return Err("handshake: closed by the server".into());
            }
            end += n;
        };
        let status = String::from_utf8_lossy(&buf[..head]);
        if !status.starts_with("HTTP/1.1 101") {
            let line = status.lines().next().unwrap_or_default().to_owned();
            return Err(format!("websocket handshake: {line}"));
        }
        Ok(Ws {
            tcp,
            buf,
            start: head,
            end,
            out: Vec::with_capacity(512),
            seed: rand::random::<u32>() | 1,
        })
    }

    /// Sends a text frame (masked, as a client must).
    async fn send(&mut self, frame: Frame) -> Result<(), String> {
        let Frame::Text(text) = frame else {
            return Ok(());
        };
        self.write_frame(0x1, text.as_bytes()).await
    }

    async fn write_frame(&mut self, opcode: u8, payload: &[u8]) -> Result<(), String> {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 17;
        self.seed ^= self.seed << 5;
        let mask = self.seed.to_ne_bytes();
        let out = &mut self.out;
        out.clear();
        out.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp
            .write_all(&self.out)
            .await
            .map_err(|e| format!("send: {e}"))
    }

    /// The next frame from the server (a ping is answered); None once the stream ended.
    /// Cancel safe: what was read stays in the buffer.
    async fn next(&mut self) -> Option<Result<Frame, String>> {
        loop {
            if let Some((opcode, from, to)) = self.parse() {
                self.start = to;
                let payload = &self.buf[from..to];
                return Some(Ok(match opcode {
                    0x1 => match std::str::from_utf8(payload) {
                        Ok(t) => Frame::Text(t.to_owned()),
                        Err(_) => return Some(Err("a text frame that is not UTF-8".into())),
                    },
                    0x8 => Frame::Close(payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]))),
                    0x9 => {
                        let ping = payload.to_vec();
                        if let Err(e) = self.write_frame(0xA, &ping).await {
                            return Some(Err(e));
                        }
                        Frame::Other
                    }
                    0x0 => {
                        return Some(Err(
                            "a fragmented message (the servers send none here)".into()
                        ))
                    }
                    _ => Frame::Other,
                }));
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            match self.tcp.read(&mut self.buf[self.end..]).await {
                Ok(0) => return None,
                Ok(n) => self.end += n,
                Err(e) => return Some(Err(format!("read: {e}"))),
            }
        }
    }

    /// A whole frame at `start`: its opcode and payload's range (servers do not mask).
    fn parse(&self) -> Option<(u8, usize, usize)> {
        let b = &self.buf[self.start..self.end];
        let (b0, b1) = (*b.first()?, *b.get(1)?);
        let (size, len) = match b1 & 0x7F {
            126 => (
                4,
                usize::from(u16::from_be_bytes(b.get(2..4)?.try_into().ok()?)),
            ),
            127 => (
                10,
                u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize,
            ),
            n => (2, usize::from(n)),
        };
        if b.len() < size + len {
            return None;
        }
        Some((b0 & 0x0F, self.start + size, self.start + size + len))
    }

    /// Sends a close frame and waits (briefly) for the server's.
    async fn close(&mut self) {
        if self.write_frame(0x8, &1000u16.to_be_bytes()).await.is_err() {
            return;
        }
        while let Some(Ok(frame)) = self.next().await {
            if matches!(frame, Frame::Close(_)) {
                break;
            }
        }
    }
}

/// Connects socket `id` and performs the handshake.
async fn connect(shared: &Shared, id: usize) -> Result<Ws, String> {
    let args = &shared.args;
    let token = &shared.tokens[id];
    let path = match args.transport {
        Transport::Sio => "/socket.io/?EIO=4&transport=websocket",
        Transport::Ws => "/ws",
    };
    let bearer = (args.transport == Transport::Ws).then_some(token.as_str());
    let tcp = TcpStream::connect(args.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut ws = Ws::handshake(tcp, &args.addr.to_string(), path, bearer).await?;
    if args.transport == Transport::Sio {
        let open = next_text(&mut ws).await?;
        if !open.starts_with('0') {
            return Err(format!("expected the Engine.IO open packet, got {open:?}"));
        }
        ws.send(Frame::text(format!(r#"40{{"token":"{token}"}}"#)))
            .await
            .map_err(|e| format!("send: {e}"))?;
        loop {
            let packet = next_text(&mut ws).await?;
            if packet.starts_with("40") {
                break;
            } else if packet.starts_with("44") {
                return Err(format!("connect refused: {packet}"));
            } else if packet == "2" {
                ws.send(Frame::text("3"))
                    .await
                    .map_err(|e| format!("send: {e}"))?;
            }
        }
    }
    Ok(ws)
}

/// The next text frame (pings and pongs are the library's).
async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match ws.next().await {
            Some(Ok(Frame::Text(t))) => return Ok(t),
            Some(Ok(Frame::Close(c))) => return Err(format!("closed by the server: {c:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("closed by the server".into()),
        }
    }
}

/// What a server frame is.
enum Incoming<'a> {
    Candidate(&'a str),
    /// An Engine.IO ping, to answer.
    Ping,
    Error(&'a str),
    /// The server ended the socket (Socket.IO disconnect packet).
    Disconnect,
    Other,
}

fn classify(transport: Transport, text: &str) -> Incoming<'_> {
    match transport {
        Transport::Sio => {
            if text.starts_with(r#"42["call:ice-candidate","#) {
                Incoming::Candidate(text)
            } else if text == "2" {
                Incoming::Ping
            } else if text.starts_with(r#"42["error""#) {
                Incoming::Error(text)
            } else if text.starts_with("41") || text == "1" {
                Incoming::Disconnect
            } else {
                Incoming::Other
            }
        }
        Transport::Ws => {
            if text.starts_with(r#"{"event":"call:ice-candidate","#) {
                Incoming::Candidate(text)
            } else if text.starts_with(r#"{"event":"error","#) {
                Incoming::Error(text)
            } else {
                Incoming::Other
            }
        }
    }
}

/// The send stamp of a relayed candidate: the number after its `"t":`.
fn stamp(text: &str) -> Option<u64> {
    let at = text.rfind(r#""t":"#)? + 4;
    let digits = text[at..].bytes().take_while(u8::is_ascii_digit).count();
    text[at..at + digits].parse().ok()
}

/// One socket, from its connection to its close.
async fn socket(
    id: usize,
    shared: Arc<Shared>,
    connecting: Arc<Semaphore>,
    connected: mpsc::UnboundedSender<Result<(), String>>,
    mut plan: watch::Receiver<Option<Arc<Plan>>>,
) -> SocketStats {
    let args = shared.args.clone();
    let mut stats = SocketStats::new(args.phases.len());
    let ws = {
        let _permit = connecting.acquire().await;
        tokio::time::timeout(CONNECT_TIMEOUT, connect(&shared, id)).await
    };
    let mut ws = match ws {
        Ok(Ok(ws)) => {
            stats.connected = true;
            let _ = connected.send(Ok(()));
            ws
        }
        Ok(Err(e)) => {
            let _ = connected.send(Err(format!("socket {id}: {e}")));
            return stats;
        }
        Err(_) => {
            let _ = connected.send(Err(format!(
                "socket {id}: no handshake in {CONNECT_TIMEOUT:?}"
            )));
            return stats;
        }
    };
    drop(connected);

    // Until the plan: only the server's pings and events.
    let plan = loop {
        tokio::select! {
            changed = plan.changed() => {
                if changed.is_err() {
                    return stats; // the run was abandoned
                }
                let current = plan.borrow_and_update().clone();
                if let Some(p) = current {
                    break p;
                }
            }
            frame = ws.next() => {
                if !idle_frame(args.transport, &mut ws, frame, &mut stats).await {
                    return stats;
                }
            }
        }
    };

    let partner = id ^ 1;
    let caller = id.is_multiple_of(2);
    let call = plan.calls[id / 2];
    let (prefix, suffix) = match (args.transport, call) {
        (_, None) => (String::new(), ""),
        (Transport::Sio, Some(call)) => (
            format!(
                r#"42["call:ice-candidate",{{"callId":"{call}","targetUserId":"{}","candidate":{{"candidate":"{CANDIDATE}","sdpMid":"0","sdpMLineIndex":0,"t":"#,
                shared.users[partner]
            ),
            "}}]",
        ),
        (Transport::Ws, Some(call)) => (
            format!(
                r#"{{"event":"call:ice-candidate","data":{{"callId":"{call}","targetUserId":"{}","candidate":{{"candidate":"{CANDIDATE}","sdpMid":"0","sdpMLineIndex":0,"t":"#,
                shared.users[partner]
            ),
            "}}}",
        ),
    };
    let from_partner = format!(r#""fromUserId":"{}""#, shared.users[partner]);
    let from_partner = memchr::memmem::Finder::new(from_partner.as_bytes());
    let phases = &plan.phases;
    let mut k = 0; // the current phase
    let mut seeded = false; // whether phase k has started for this socket
    let mut pending = 0u32; // candidates owed to the partner
    let mut interval = Duration::ZERO;
    let mut next_send = plan.close_at;
    let mut start_us = 0u64;
    // One timer for the loop, moved only when its deadline does (a timer made and dropped for
    // every message would cost this generator more than the message).
    let timer = tokio::time::sleep_until(plan.close_at.into());
    tokio::pin!(timer);
    let mut armed = plan.close_at;

    loop {
        let now = Instant::now();
        while k < phases.len() && now >= phases[k].until {
            k += 1;
            seeded = false;
            pending = 0;
        }
        if now >= plan.close_at {
            break;
        }
        if k < phases.len() && !seeded && now >= phases[k].start && call.is_some() {
            seeded = true;
            pending = if caller { args.window } else { 0 };
            interval = Duration::from_secs_f64(1.0 / args.phases[k].1);
            // A's first send at a random point of its first interval spreads the pairs
            // evenly; B only ever answers, so it keeps A's rhythm.
            next_send = if caller {
                phases[k].start + interval.mul_f64(rand::random::<f64>())
            } else {
                phases[k].start
            };
            start_us = phases[k].start.duration_since(shared.base).as_micros() as u64;
        }
        // A send that is due goes at once: through the select below it would arm (and drop)
        // a timer for every message, which costs this generator more than the send.
        if seeded && pending > 0 && now >= next_send && now < phases[k].until {
            if !send_candidate(&mut ws, &prefix, suffix, now, &shared, &mut stats, id).await {
                return stats;
            }
            pending -= 1;
            if now >= phases[k].from {
                stats.sent[k] += 1;
            }
            next_send = now + interval;
            continue;
        }
        let deadline = if k >= phases.len() {
            plan.close_at
        } else if !seeded {
            if call.is_some() {
                phases[k].start
            } else {
                plan.close_at
            }
        } else if pending > 0 {
            next_send.min(phases[k].until)
        } else {
            phases[k].until
        };
        if deadline != armed || timer.is_elapsed() {
            timer.as_mut().reset(deadline.into());
            armed = deadline;
        }
        tokio::select! {
            biased;
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Frame::Text(t))) => t,
                    other => {
                        if !idle_frame(args.transport, &mut ws, other, &mut stats).await {
                            return stats;
                        }
                        continue;
                    }
                };
                match classify(args.transport, text.as_str()) {
                    Incoming::Candidate(text) => {
                        let now = Instant::now();
                        let Some(t) = stamp(text) else {
                            stats.malformed += 1;
                            stats.show(format!("socket {id}: a candidate without its stamp: {text}"));
                            continue;
                        };
                        if from_partner.find(text.as_bytes()).is_none() {
                            stats.wrong_sender += 1;
                            stats.show(format!("socket {id}: a candidate not from its partner: {text}"));
                        }
                        // Only this phase's messages count, and only while it runs.
                        if seeded && t >= start_us && now < phases[k].until {
                            pending += 1;
                            if now >= phases[k].from {
                                let now_us = now.duration_since(shared.base).as_micros() as u64;
                                stats.received[k] += 1;
                                stats.latency_us[k].push(now_us.saturating_sub(t).min(u64::from(u32::MAX)) as u32);
                                shared.delivered[k].fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Incoming::Ping => {
                        if ws.send(Frame::text("3")).await.is_err() {
                            stats.closed_early += 1;
                            return stats;
                        }
                    }
                    Incoming::Error(text) => {
                        stats.error_events += 1;
                        stats.show(format!("socket {id}: {text}"));
                    }
                    Incoming::Disconnect => {
                        stats.closed_early += 1;
                        stats.show(format!("socket {id}: disconnected by the server: {}", text.as_str()));
                        return stats;
                    }
                    Incoming::Other => stats.other_events += 1,
                }
            }
            // A send falling due (made at the top of the loop), or the phase's end.
            () = &mut timer => {}
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), ws.close()).await;
    stats
}

/// Sends a candidate stamped `now`: false if the server closed the socket.
async fn send_candidate(
    ws: &mut Ws,
    prefix: &str,
    suffix: &str,
    now: Instant,
    shared: &Shared,
    stats: &mut SocketStats,
    id: usize,
) -> bool {
    let t = now.duration_since(shared.base).as_micros();
    let mut text = String::with_capacity(prefix.len() + 24);
    text.push_str(prefix);
    let _ = write!(text, "{t}{suffix}");
    if ws.send(Frame::text(text)).await.is_err() {
        stats.closed_early += 1;
        stats.show(format!("socket {id}: the server closed the socket"));
        return false;
    }
    true
}

/// Handles a frame that is not a candidate while idle: false if the socket is over.
async fn idle_frame(
    transport: Transport,
    ws: &mut Ws,
    frame: Option<Result<Frame, String>>,
    stats: &mut SocketStats,
) -> bool {
    match frame {
        Some(Ok(Frame::Text(t))) => match classify(transport, t.as_str()) {
            Incoming::Ping => ws.send(Frame::text("3")).await.is_ok(),
            Incoming::Error(text) => {
                stats.error_events += 1;
                stats.show(text.to_owned());
                true
            }
            Incoming::Disconnect => {
                stats.closed_early += 1;
                stats.show(format!("disconnected by the server: {}", t.as_str()));
                false
            }
            Incoming::Candidate(_) | Incoming::Other => {
                stats.other_events += 1;
                true
            }
        },
        Some(Ok(Frame::Close(c))) => {
            stats.closed_early += 1;
            stats.show(format!("closed by the server: {c:?}"));
            false
        }
        Some(Ok(_)) => true,
        Some(Err(e)) => {
            stats.closed_early += 1;
            stats.show(format!("read: {e}"));
            false
        }
        None => {
            stats.closed_early += 1;
            stats.show("closed by the server".into());
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The setup: one live call per pair, over the REST API.

struct Setup {
    calls: Vec<Option<Uuid>>,
    secs: f64,
    errors: u64,
    shown: Vec<String>,
}

fn setup(args: &Args, users: &[Uuid], tokens: &[String]) -> Setup {
    let pairs = users.len() / 2;
    let threads = args.setup_threads.min(pairs).max(1);
    let start = Instant::now();
    let results: Vec<Vec<(usize, Result<Uuid, String>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(HTTP_TIMEOUT))
                        .build()
                        .into();
                    (t..pairs)
                        .step_by(threads)
                        .map(|p| (p, make_call(&agent, args.addr, users, tokens, p)))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![(usize::MAX, Err("a setup thread panicked".into()))])
            })
            .collect()
    });
    let mut out = Setup {
        calls: vec![None; pairs],
        secs: start.elapsed().as_secs_f64(),
        errors: 0,
        shown: Vec::new(),
    };
    for (p, r) in results.into_iter().flatten() {
        match r {
            Ok(call) if p < pairs => out.calls[p] = Some(call),
            Ok(_) => {}
            Err(e) => {
                out.errors += 1;
                if out.shown.len() < SHOWN_ERRORS {
                    out.shown.push(format!("setup of pair {p}: {e}"));
                }
            }
        }
    }
    out
}

/// B makes itself known, A calls B, B answers: the call's id.
fn make_call(
    agent: &ureq::Agent,
    addr: SocketAddr,
    users: &[Uuid],
    tokens: &[String],
    pair: usize,
) -> Result<Uuid, String> {
    let (a, b) = (2 * pair, 2 * pair + 1);
    let bearer = |i: usize| format!("Bearer {}", tokens[i]);
    let check =
        |what: &str, r: Result<ureq::http::Response<ureq::Body>, ureq::Error>, want: u16| {
            let mut r = r.map_err(|e| format!("{what}: {e}"))?;
            let status = r.status().as_u16();
            let body = r
                .body_mut()
                .read_to_string()
                .map_err(|e| format!("{what}: reading the body: {e}"))?;
            if status != want {
                return Err(format!("{what}: status {status}, expected {want}: {body}"));
            }
            Ok(body)
        };
    check(
        "GET /api/calls",
        agent
            .get(format!("http://{addr}/api/calls"))
            .header("authorization", bearer(b))
            .call(),
        200,
    )?;
    let body = serde_json::json!({
        "conversationId": Uuid::from_bytes(rand::random()).to_string(),
        "type": "audio",
        "participantIds": [users[b]],
    });
    let created = check(
        "POST /api/calls/initiate",
        agent
            .post(format!("http://{addr}/api/calls/initiate"))
            .header("authorization", bearer(a))
            .header("content-type", "application/json")
            .send(body.to_string()),
        201,
    )?;
    let created: serde_json::Value =
        serde_json::from_str(&created).map_err(|e| format!("initiate: {e}"))?;
    let call = created
        .get("callId")
        .and_then(|v| v.as_str())
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or("initiate: no callId in the response")?;
    check(
        "POST /api/calls/{id}/answer",
        agent
            .post(format!("http://{addr}/api/calls/{call}/answer"))
            .header("authorization", bearer(b))
            .send_empty(),
        200,
    )?;
    Ok(call)
}

// ---------------------------------------------------------------------------------------------
// The server process, from /proc.

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM), 0 if unreadable.
fn status_kib(pid: Option<u32>, field: &str) -> u64 {
    let Some(pid) = pid else { return 0 };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The server's CPU: the sum of its threads' on-CPU time (schedstat), in nanoseconds.
fn server_cpu_ns(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The whole machine's busy CPU time (all CPUs: user, nice, system, irq, softirq, steal, from
/// /proc/stat), in nanoseconds: what other processes took during a window is this less the
/// server's and ours.
fn machine_busy_ns() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let f: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    busy * (1_000_000_000 / hz)
}

// ---------------------------------------------------------------------------------------------
// The run.

struct PhaseReport {
    name: String,
    rate: f64,
    secs: f64,
    sent: u64,
    received: u64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    per_second: Vec<u64>,
    server_ns: u64,
    client_us: f64,
    machine_ns: u64,
}

#[derive(Default)]
struct Report {
    label: String,
    sockets: usize,
    window: u32,
    connected: usize,
    connect_secs: f64,
    connect_server_ns: u64,
    rss_idle_kib: u64,
    rss_connected_kib: u64,
    rss_calls_kib: u64,
    rss_loaded_kib: u64,
    hwm_kib: u64,
    setup_secs: f64,
    calls: usize,
    phases: Vec<PhaseReport>,
    errors: u64,
    error_events: u64,
    wrong_sender: u64,
    malformed: u64,
    closed_early: u64,
    other_events: u64,
    shown: Vec<String>,
}

impl Report {
    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.shown.len() < SHOWN_ERRORS {
            self.shown.push(e);
        }
    }

    fn failed(&self) -> bool {
        self.errors > 0
            || self.error_events > 0
            || self.wrong_sender > 0
            || self.malformed > 0
            || self.closed_early > 0
            || self.phases.iter().any(|p| p.received == 0)
    }

    fn print(&self) {
        for e in &self.shown {
            eprintln!("hub_load: error: {e}");
        }
        let mib = |kib: u64| kib as f64 / 1024.0;
        let per_1000 = if self.connected > 0 {
            mib(self.rss_connected_kib.saturating_sub(self.rss_idle_kib)) * 1000.0
                / self.connected as f64
        } else {
            0.0
        };
        let connect_us = if self.connected > 0 {
            self.connect_server_ns as f64 / 1e3 / self.connected as f64
        } else {
            0.0
        };
        println!(
            "{}: {}/{} sockets connected in {:.2} s ({:.0}/s; server CPU {:.0} us per socket); \
             server RSS {:.1} MiB idle, {:.1} MiB connected = {:.2} MiB per 1,000 sockets; \
             {:.1} MiB with {} calls (set up in {:.2} s), {:.1} MiB after the load, peak {:.1} MiB",
            self.label,
            self.connected,
            self.sockets,
            self.connect_secs,
            self.connected as f64 / self.connect_secs.max(1e-9),
            connect_us,
            mib(self.rss_idle_kib),
            mib(self.rss_connected_kib),
            per_1000,
            mib(self.rss_calls_kib),
            self.calls,
            self.setup_secs,
            mib(self.rss_loaded_kib),
            mib(self.hwm_kib),
        );
        println!(
            "connect label={} sockets={} connected={} secs={:.3} server_us_per_socket={:.1} \
             rss_idle_kib={} rss_connected_kib={} mib_per_1000={:.3} rss_calls_kib={} calls={} \
             setup_secs={:.3}",
            self.label,
            self.sockets,
            self.connected,
            self.connect_secs,
            connect_us,
            self.rss_idle_kib,
            self.rss_connected_kib,
            per_1000,
            self.rss_calls_kib,
            self.calls,
            self.setup_secs
        );
        for p in &self.phases {
            let ms = |us: u64| us as f64 / 1000.0;
            let per = |x: f64| {
                if p.received > 0 {
                    x / p.received as f64
                } else {
                    0.0
                }
            };
            let per_second: Vec<String> = p.per_second.iter().map(u64::to_string).collect();
            let offered = self.calls as f64 * 2.0 * p.rate;
            // What the rest of the machine took (other processes, the kernel's softirqs).
            let others = (p.machine_ns as f64 - p.server_ns as f64 - p.client_us * 1e3).max(0.0);
            println!(
                "{} {}: at most {} per socket per second (up to {:.0}/s), window {} per pair: \
                 {} delivered in {:.2} s = {:.0} msgs/s ({} sent); latency p50 {:.2} ms, p99 {:.2} ms, \
                 max {:.2} ms; server CPU {:.2} us/msg ({:.2} cores), client CPU {:.2} us/msg \
                 ({:.2} cores), other processes {:.2} cores; per second: {}",
                self.label,
                p.name,
                p.rate,
                offered,
                self.window,
                p.received,
                p.secs,
                p.received as f64 / p.secs,
                p.sent,
                ms(p.p50_us),
                ms(p.p99_us),
                ms(p.max_us),
                per(p.server_ns as f64 / 1e3),
                p.server_ns as f64 / 1e9 / p.secs,
                per(p.client_us),
                p.client_us / 1e6 / p.secs,
                others / 1e9 / p.secs,
                per_second.join(" ")
            );
            let min = p.per_second.iter().min().copied().unwrap_or(0);
            println!(
                "phase label={} name={} rate={} offered_per_s={:.0} window={} secs={:.3} sent={} \
                 received={} msgs_per_s={:.1} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} \
                 server_cpu_ms={:.1} server_us_per_msg={:.3} client_us_per_msg={:.3} \
                 server_cores={:.3} client_cores={:.3} other_cores={:.3} min_per_s={min}",
                self.label,
                p.name,
                p.rate,
                offered,
                self.window,
                p.secs,
                p.sent,
                p.received,
                p.received as f64 / p.secs,
                ms(p.p50_us),
                ms(p.p99_us),
                ms(p.max_us),
                p.server_ns as f64 / 1e6,
                per(p.server_ns as f64 / 1e3),
                per(p.client_us),
                p.server_ns as f64 / 1e9 / p.secs,
                p.client_us / 1e6 / p.secs,
                others / 1e9 / p.secs,
            );
        }
        println!(
            "end label={} rss_loaded_kib={} hwm_kib={} errors={} error_events={} wrong_sender={} \
             malformed={} closed_early={} other_events={} failed={}",
            self.label,
            self.rss_loaded_kib,
            self.hwm_kib,
            self.errors,
            self.error_events,
            self.wrong_sender,
            self.malformed,
            self.closed_early,
            self.other_events,
            u8::from(self.failed())
        );
    }
}

async fn run(args: Arc<Args>) -> Report {
    let n = args.sockets;
    let pid = args.server_pid;
    let mut report = Report {
        label: args.label.clone(),
        sockets: n,
        window: args.window,
        ..Report::default()
    };
    let users: Vec<Uuid> = (0..n).map(|_| Uuid::from_bytes(rand::random())).collect();
    let now = Timestamp::now();
    let tokens = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let name = format!("bench {i}");
            auth::mint(
                &args.jwt_secret,
                *u,
                Some(&name),
                None,
                now,
                Duration::from_secs(3600),
            )
        })
        .collect();
    let shared = Arc::new(Shared {
        args: args.clone(),
        users,
        tokens,
        base: Instant::now(),
        delivered: args.phases.iter().map(|_| AtomicU64::new(0)).collect(),
    });

    // 1. Connect.
    report.rss_idle_kib = status_kib(pid, "VmRSS");
    let cpu0 = server_cpu_ns(pid);
    let connecting = Arc::new(Semaphore::new(args.connect_concurrency));
    let (connected_tx, mut connected_rx) = mpsc::unbounded_channel();
    let (plan_tx, plan_rx) = watch::channel(None);
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|id| {
            tokio::spawn(socket(
                id,
                shared.clone(),
                connecting.clone(),
                connected_tx.clone(),
                plan_rx.clone(),
            ))
        })
        .collect();
    drop(connected_tx);
    let deadline = tokio::time::Instant::now() + CONNECT_ALL_TIMEOUT;
    let mut answered = 0;
    while answered < n {
        match tokio::time::timeout_at(deadline, connected_rx.recv()).await {
            Ok(Some(Ok(()))) => {
                report.connected += 1;
                answered += 1;
            }
            Ok(Some(Err(e))) => {
                report.error(e);
                answered += 1;
            }
            Ok(None) => break,
            Err(_) => {
                report.error(format!(
                    "{} sockets not connected after {CONNECT_ALL_TIMEOUT:?}",
                    n - answered
                ));
                break;
            }
        }
    }
    report.connect_secs = start.elapsed().as_secs_f64();
    report.connect_server_ns = server_cpu_ns(pid).saturating_sub(cpu0);
    // Let the server settle (buffers of the handshakes freed) before reading its memory.
    tokio::time::sleep(GAP).await;
    report.rss_connected_kib = status_kib(pid, "VmRSS");

    // 2. The calls.
    let made = {
        let (args, shared) = (args.clone(), shared.clone());
        tokio::task::spawn_blocking(move || setup(&args, &shared.users, &shared.tokens)).await
    };
    let made = made.unwrap_or_else(|_| Setup {
        calls: vec![None; n / 2],
        secs: 0.0,
        errors: 1,
        shown: vec!["the setup panicked".into()],
    });
    report.setup_secs = made.secs;
    report.calls = made.calls.iter().flatten().count();
    report.errors += made.errors;
    for e in made.shown {
        if report.shown.len() < SHOWN_ERRORS {
            report.shown.push(e);
        }
    }
    tokio::time::sleep(GAP).await;
    report.rss_calls_kib = status_kib(pid, "VmRSS");

    // 3. The phases.
    let mut at = Instant::now() + Duration::from_millis(500);
    let phases: Vec<Window> = args
        .phases
        .iter()
        .map(|_| {
            let w = Window {
                start: at,
                from: at + args.warmup,
                until: at + args.warmup + args.duration,
            };
            at = w.until + GAP;
            w
        })
        .collect();
    let close_at = at;
    let _ = plan_tx.send(Some(Arc::new(Plan {
        calls: made.calls,
        phases: phases.clone(),
        close_at,
    })));
    let mut measured = Vec::new();
    for (k, w) in phases.iter().enumerate() {
        tokio::time::sleep_until(w.from.into()).await;
        let server0 = server_cpu_ns(pid);
        let client0 = own_cpu_us();
        let machine0 = machine_busy_ns();
        let mut per_second = Vec::new();
        let mut mark = shared.delivered[k].load(Ordering::Relaxed);
        let whole = args.duration.as_secs();
        for s in 1..=whole {
            tokio::time::sleep_until((w.from + Duration::from_secs(s)).into()).await;
            let now = shared.delivered[k].load(Ordering::Relaxed);
            per_second.push(now - mark);
            mark = now;
        }
        tokio::time::sleep_until(w.until.into()).await;
        measured.push((
            server_cpu_ns(pid).saturating_sub(server0),
            own_cpu_us() - client0,
            machine_busy_ns().saturating_sub(machine0),
            per_second,
        ));
    }
    report.rss_loaded_kib = status_kib(pid, "VmRSS");
    report.hwm_kib = status_kib(pid, "VmHWM");

    // 4. Close, and gather.
    let mut all = SocketStats::new(args.phases.len());
    let gather = async {
        for t in tasks {
            match t.await {
                Ok(s) => {
                    for k in 0..args.phases.len() {
                        all.sent[k] += s.sent[k];
                        all.received[k] += s.received[k];
                        all.latency_us[k].extend_from_slice(&s.latency_us[k]);
                    }
                    if s.connected {
                        all.error_events += s.error_events;
                        all.wrong_sender += s.wrong_sender;
                        all.malformed += s.malformed;
                        all.closed_early += s.closed_early;
                        all.other_events += s.other_events;
                        for e in s.shown {
                            if all.shown.len() < SHOWN_ERRORS {
                                all.shown.push(e);
                            }
                        }
                    }
                }
                Err(e) => all.show(format!("a socket task failed: {e}")),
            }
        }
    };
    if tokio::time::timeout_at((close_at + CLOSE_TIMEOUT).into(), gather)
        .await
        .is_err()
    {
        report.error(format!(
            "the sockets did not close within {CLOSE_TIMEOUT:?} (their figures are lost)"
        ));
    }
    report.error_events = all.error_events;
    report.wrong_sender = all.wrong_sender;
    report.malformed = all.malformed;
    report.closed_early = all.closed_early;
    report.other_events = all.other_events;
    for e in all.shown {
        if report.shown.len() < SHOWN_ERRORS {
            report.shown.push(e);
        }
    }
    for (k, (server_ns, client_us, machine_ns, per_second)) in measured.into_iter().enumerate() {
        let lat = &mut all.latency_us[k];
        lat.sort_unstable();
        report.phases.push(PhaseReport {
            name: args.phases[k].0.clone(),
            rate: args.phases[k].1,
            secs: args.duration.as_secs_f64(),
            sent: all.sent[k],
            received: all.received[k],
            p50_us: percentile(lat, 50.0),
            p99_us: percentile(lat, 99.0),
            max_us: lat.last().copied().map_or(0, u64::from),
            per_second,
            server_ns,
            client_us,
            machine_ns,
        });
    }
    report
}
