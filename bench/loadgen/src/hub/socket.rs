//! One socket of the hub benchmark, from its connection to its close: what the sockets share,
//! the handshake of each transport, and the candidates' closed loop.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use uuid::Uuid;

use super::ws::{Frame, Ws};
use super::{Args, Transport, CANDIDATE, CONNECT_TIMEOUT};

/// Known before any socket starts.
pub(super) struct Shared {
    pub(super) args: Arc<Args>,
    pub(super) users: Vec<Uuid>,
    pub(super) tokens: Vec<String>,
    /// The time origin of the `"t"` stamps.
    pub(super) base: Instant,
    /// Candidates delivered inside each phase's window so far (for the per-second figures).
    pub(super) delivered: Vec<AtomicU64>,
}

/// Known once the calls exist: what the sockets do, and when.
pub(super) struct Plan {
    /// Each pair's call (none if its setup failed: the pair stays idle).
    pub(super) calls: Vec<Option<Uuid>>,
    pub(super) phases: Vec<Window>,
    /// When the sockets close.
    pub(super) close_at: Instant,
}

#[derive(Clone, Copy)]
pub(super) struct Window {
    /// Sending starts.
    pub(super) start: Instant,
    /// Counting starts (after the warm-up).
    pub(super) from: Instant,
    /// Sending and counting end.
    pub(super) until: Instant,
}

/// What one socket saw.
#[derive(Default)]
pub(super) struct SocketStats {
    pub(super) connected: bool,
    /// Per phase: candidates sent and received inside the window, latencies in microseconds.
    pub(super) sent: Vec<u64>,
    pub(super) received: Vec<u64>,
    pub(super) latency_us: Vec<Vec<u32>>,
    /// `error` events, candidates from someone else, unparsable candidates, closes by the
    /// server before the end.
    pub(super) error_events: u64,
    pub(super) wrong_sender: u64,
    pub(super) malformed: u64,
    pub(super) closed_early: u64,
    /// Other server events (the calls' own `call:incoming`, `call:participant-joined`, ...).
    pub(super) other_events: u64,
    pub(super) shown: Vec<String>,
}

impl SocketStats {
    pub(super) fn new(phases: usize) -> SocketStats {
        SocketStats {
            sent: vec![0; phases],
            received: vec![0; phases],
            latency_us: vec![Vec::new(); phases],
            ..SocketStats::default()
        }
    }

    pub(super) fn show(&mut self, e: String) {
        if self.shown.len() < 2 {
            self.shown.push(e);
        }
    }
}

/// A TCP connection to `addr`. To an IPv4 loopback address, socket `id` comes from one of
/// [`SOURCES`] loopback addresses (127.0.0.1 to 127.0.0.200, every one of them local on Linux),
/// as clients come from many addresses: the daemon bounds what one source may hold (pending
/// Socket.IO sessions), which 10,000 sockets from one address would meet.
async fn dial(addr: SocketAddr, id: usize) -> std::io::Result<TcpStream> {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            let socket = TcpSocket::new_v4()?;
            let host = 1 + (id % SOURCES) as u8;
            socket.bind(SocketAddr::from(([127, 0, 0, host], 0)))?;
            socket.connect(addr).await
        }
        _ => TcpStream::connect(addr).await,
    }
}

/// How many loopback source addresses [`dial`] spreads the sockets over.
const SOURCES: usize = 200;

/// Connects socket `id` and performs the handshake.
pub(super) async fn connect(shared: &Shared, id: usize) -> Result<Ws, String> {
    let args = &shared.args;
    let token = &shared.tokens[id];
    let path = match args.transport {
        Transport::Sio => "/socket.io/?EIO=4&transport=websocket",
        Transport::Ws => "/ws",
    };
    let bearer = (args.transport == Transport::Ws).then_some(token.as_str());
    let tcp = dial(args.addr, id)
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
pub(super) async fn next_text(ws: &mut Ws) -> Result<String, String> {
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
pub(super) enum Incoming<'a> {
    Candidate(&'a str),
    /// An Engine.IO ping, to answer.
    Ping,
    Error(&'a str),
    /// The server ended the socket (Socket.IO disconnect packet).
    Disconnect,
    Other,
}

pub(super) fn classify(transport: Transport, text: &str) -> Incoming<'_> {
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
pub(super) fn stamp(text: &str) -> Option<u64> {
    let at = text.rfind(r#""t":"#)? + 4;
    let digits = text[at..].bytes().take_while(u8::is_ascii_digit).count();
    text[at..at + digits].parse().ok()
}

/// One socket, from its connection to its close.
pub(super) async fn socket(
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
pub(super) async fn send_candidate(
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
pub(super) async fn idle_frame(
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
