//! The SFU's driver: one UDP socket for all media and the [`Sfu`] core, on a thread of their own
//! (a single-threaded tokio runtime), so that media never waits on the hub, the store or the
//! API, and they never wait on media.
//!
//! Signaling reaches the thread through [`SfuHandle`] (a bounded command queue; offers and
//! answers wait for their result) and hears from it through an event receiver, in the order
//! the core emitted them (an answer before the offer that follows it).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::core::{Caps, Counters, Quality, Sfu, SfuConfig, SfuError, SfuEvent};

/// Commands waiting for the SFU thread, at most; more are refused (the hub's own limits keep
/// far below this).
const COMMANDS: usize = 1024;
/// Datagrams read in one go before the thread looks at its commands and timers again.
const BATCH: usize = 64;
/// The media port's kernel receive and send buffers, asked for (as the relay's listeners).
const SOCKET_BUFFER: usize = 4 << 20;
/// The largest datagram read (the media MTU is ~1200; more is not WebRTC's).
const MAX_DATAGRAM: usize = 2048;

/// What the driver is started with.
#[derive(Clone, Debug)]
pub struct SfuIoConfig {
    /// The media port's address (`[sfu] listen`).
    pub listen: SocketAddr,
    /// The address participants are told to send to, when not the listen address (behind
    /// NAT: the public one). Its port is the listen port.
    pub public_ip: Option<IpAddr>,
    /// How long a participant's connection may stay down before it is removed.
    pub grace: Duration,
    /// What each participant may publish.
    pub caps: Caps,
    /// Where each subscriber's downlink estimate starts, in bits/s
    /// ([`START_ESTIMATE`](crate::core::START_ESTIMATE) in the daemon).
    pub start_estimate: u64,
    /// See [`SfuConfig::direct_egress`] (on in the daemon).
    pub direct_egress: bool,
    /// See [`SfuConfig::direct_ingress`] (experimental: off in the daemon).
    pub direct_ingress: bool,
}

/// Counters the driver publishes for `/metrics`.
#[derive(Debug, Default)]
pub struct SfuStats {
    pub unknown: AtomicU64,
    pub refused: AtomicU64,
    pub received: AtomicU64,
    pub forwarded: AtomicU64,
    /// Packets sent again: on subscribers' NACKs, and as bandwidth probes.
    pub resent: AtomicU64,
    pub probes: AtomicU64,
    /// Datagrams the socket would not take at once (its buffer full): dropped.
    pub send_dropped: AtomicU64,
    /// Datagrams to and from relayed participants, passed with the relay inside the process.
    pub relayed_out: AtomicU64,
    pub relayed_in: AtomicU64,
    /// Datagrams between the relay and the SFU dropped, either way: the other thread was a
    /// queue ([`FROM_RELAY`], the relay's own) behind.
    pub relay_dropped: AtomicU64,
    pub participants: AtomicU64,
}

impl SfuStats {
    fn publish(&self, c: Counters, participants: usize) {
        self.unknown.store(c.unknown, Ordering::Relaxed);
        self.refused.store(c.refused, Ordering::Relaxed);
        self.received.store(c.received, Ordering::Relaxed);
        self.forwarded.store(c.forwarded, Ordering::Relaxed);
        self.resent.store(c.resent, Ordering::Relaxed);
        self.probes.store(c.probes, Ordering::Relaxed);
        self.participants
            .store(participants as u64, Ordering::Relaxed);
    }
}

enum Command {
    Offer {
        room: Uuid,
        user: Uuid,
        sdp: String,
        done: oneshot::Sender<Result<(), SfuError>>,
    },
    Answer {
        room: Uuid,
        user: Uuid,
        sdp: String,
        done: oneshot::Sender<Result<(), SfuError>>,
    },
    Quality {
        room: Uuid,
        subscriber: Uuid,
        publisher: Uuid,
        quality: Quality,
        done: oneshot::Sender<Result<(), SfuError>>,
    },
    Leave {
        room: Uuid,
        user: Uuid,
    },
    CloseRoom(Uuid),
    Stop,
}

/// The running SFU: signaling's side of it.
pub struct SfuHandle {
    commands: mpsc::Sender<Command>,
    local_addr: SocketAddr,
    advertised: SocketAddr,
    stats: Arc<SfuStats>,
    thread: Option<JoinHandle<()>>,
}

/// Why a command did not reach the SFU.
fn gone() -> SfuError {
    SfuError::Unavailable
}

impl SfuHandle {
    /// Binds the media port and starts the thread, without a relay beside it: [`SfuBound`]
    /// in one step.
    pub fn start(
        config: SfuIoConfig,
    ) -> io::Result<(SfuHandle, mpsc::UnboundedReceiver<SfuEvent>)> {
        Ok(SfuBound::bind(&config)?.start(config.grace, None))
    }

    /// The bound media address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address participants are told to send media to.
    pub fn advertised(&self) -> SocketAddr {
        self.advertised
    }

    pub fn stats(&self) -> Arc<SfuStats> {
        self.stats.clone()
    }

    /// `user`'s SDP offer in `room` (joining it on the first): the answer comes as an event.
    pub async fn offer(&self, room: Uuid, user: Uuid, sdp: String) -> Result<(), SfuError> {
        self.request(|done| Command::Offer {
            room,
            user,
            sdp,
            done,
        })
        .await
    }

    /// `user`'s answer to the SFU's last offer.
    pub async fn answer(&self, room: Uuid, user: Uuid, sdp: String) -> Result<(), SfuError> {
        self.request(|done| Command::Answer {
            room,
            user,
            sdp,
            done,
        })
        .await
    }

    /// Which layer of `publisher`'s video `subscriber` receives.
    pub async fn set_quality(
        &self,
        room: Uuid,
        subscriber: Uuid,
        publisher: Uuid,
        quality: Quality,
    ) -> Result<(), SfuError> {
        self.request(|done| Command::Quality {
            room,
            subscriber,
            publisher,
            quality,
            done,
        })
        .await
    }

    /// Sends the command `make` builds around its reply channel, and waits for the reply.
    async fn request(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), SfuError>>) -> Command,
    ) -> Result<(), SfuError> {
        let (done, result) = oneshot::channel();
        self.send(make(done))?;
        result.await.unwrap_or(Err(gone()))
    }

    /// `user` left `room`, or the call ended.
    pub fn leave(&self, room: Uuid, user: Uuid) -> Result<(), SfuError> {
        self.send(Command::Leave { room, user })
    }

    fn send(&self, c: Command) -> Result<(), SfuError> {
        self.commands.try_send(c).map_err(|_| gone())
    }

    /// The call of `room` ended: everyone leaves it.
    pub fn close_room(&self, room: Uuid) -> Result<(), SfuError> {
        self.send(Command::CloseRoom(room))
    }

    /// Stops the thread (every peer connection closes) and waits for it.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            // A full queue still ends: the thread also stops when every sender is gone.
            let _ = self.commands.try_send(Command::Stop);
            let (closed, _) = mpsc::channel(1);
            drop(std::mem::replace(&mut self.commands, closed));
            let _ = thread.join();
        }
    }
}

impl Drop for SfuHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The media port, bound, before its thread starts: what the relay needs to know of the SFU
/// (its addresses, and where to hand it datagrams) before the SFU needs the relay.
pub struct SfuBound {
    socket: std::net::UdpSocket,
    local_addr: SocketAddr,
    advertised: SocketAddr,
    ingress: mpsc::Sender<Datagram>,
    from_relay: mpsc::Receiver<Datagram>,
    stats: Arc<SfuStats>,
    caps: Caps,
    start_estimate: u64,
    direct_egress: bool,
    direct_ingress: bool,
}

/// A datagram handed over inside the process: `(from, to, payload)`.
type Datagram = (SocketAddr, SocketAddr, Vec<u8>);

/// Datagrams from the relay waiting for the SFU thread, at most; more are dropped.
const FROM_RELAY: usize = 4096;

/// What the SFU needs of the relay beside it: relayed participants' media goes between the
/// two inside the process, never through a socket or the relay's peer policy.
pub struct RelayLink {
    /// Whether `addr` is one of the relay's relayed addresses (its relay and external
    /// addresses, on its relay ports).
    pub is_relayed: Box<dyn Fn(SocketAddr) -> bool + Send>,
    /// Hands the relay a datagram for the relayed address `to` from the SFU's `from`; false
    /// when the relay could not take it.
    pub deliver: ToRelay,
}

/// How the SFU hands the relay a datagram: `(to, from, payload)`; false when it could not
/// take it.
pub type ToRelay = Box<dyn Fn(SocketAddr, SocketAddr, &[u8]) -> bool + Send>;

impl SfuBound {
    /// Binds `config.listen`.
    pub fn bind(config: &SfuIoConfig) -> io::Result<SfuBound> {
        let socket = std::net::UdpSocket::bind(config.listen)
            .map_err(|e| io::Error::new(e.kind(), format!("binding SFU {}: {e}", config.listen)))?;
        // Best effort (the kernel caps them at net.core.rmem_max/wmem_max): a room of twenty
        // brings some 3,000 datagrams a second to this one socket and takes 60,000 out.
        let sock = socket2::SockRef::from(&socket);
        let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
        socket.set_nonblocking(true)?;
        let local_addr = socket.local_addr()?;
        let advertised_ip = match (config.public_ip, local_addr.ip()) {
            (Some(ip), _) => ip,
            (None, ip) if !ip.is_unspecified() => ip,
            (None, _) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the SFU listens on every address: its public address must be given",
                ))
            }
        };
        let (ingress, from_relay) = mpsc::channel(FROM_RELAY);
        Ok(SfuBound {
            socket,
            local_addr,
            advertised: SocketAddr::new(advertised_ip, local_addr.port()),
            ingress,
            from_relay,
            stats: Arc::default(),
            caps: config.caps,
            start_estimate: config.start_estimate,
            direct_egress: config.direct_egress,
            direct_ingress: config.direct_ingress,
        })
    }

    /// The addresses a relay delivers to the SFU in-process: the advertised one (what clients
    /// are told) and the bound one.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        let mut addrs = vec![self.advertised];
        if self.local_addr != self.advertised && !self.local_addr.ip().is_unspecified() {
            addrs.push(self.local_addr);
        }
        addrs
    }

    /// How the relay hands the SFU a datagram: `(to, from, payload)`, `from` a relayed
    /// address. Never blocks; a datagram the SFU thread is too far behind for is dropped.
    pub fn ingress(&self) -> impl Fn(SocketAddr, SocketAddr, &[u8]) + Send + Sync + 'static {
        let (ingress, stats) = (self.ingress.clone(), self.stats.clone());
        move |to, from, payload| {
            if ingress.try_send((from, to, payload.to_vec())).is_err() {
                stats.relay_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Starts the thread; `relay`: the relay beside it, for relayed participants. The events
    /// the SFU emits come on the receiver.
    pub fn start(
        self,
        grace: Duration,
        relay: Option<RelayLink>,
    ) -> (SfuHandle, mpsc::UnboundedReceiver<SfuEvent>) {
        let SfuBound {
            socket,
            local_addr,
            advertised,
            from_relay,
            stats,
            caps,
            start_estimate,
            direct_egress,
            direct_ingress,
            ..
        } = self;
        let (commands, rx) = mpsc::channel(COMMANDS);
        let (events_tx, events) = mpsc::unbounded_channel();
        let core = Sfu::new(
            SfuConfig {
                candidates: vec![advertised],
                grace,
                caps,
                start_estimate,
                direct_egress,
                direct_ingress,
            },
            crate::crypto(),
        );
        let thread_stats = stats.clone();
        let run = move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "SFU runtime failed to start");
                    return;
                }
            };
            runtime.block_on(async move {
                let socket = match UdpSocket::from_std(socket) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "SFU socket failed");
                        return;
                    }
                };
                let mut driver = Driver {
                    core,
                    socket,
                    advertised,
                    events: events_tx,
                    stats: thread_stats,
                    relay,
                };
                driver.run(rx, from_relay).await;
            });
        };
        let thread = std::thread::Builder::new().name("sfu".into()).spawn(run);
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "SFU thread failed to start");
                None
            }
        };
        tracing::info!(%local_addr, %advertised, "SFU listening");
        let handle = SfuHandle {
            commands,
            local_addr,
            advertised,
            stats,
            thread,
        };
        (handle, events)
    }
}

struct Driver {
    core: Sfu,
    socket: UdpSocket,
    advertised: SocketAddr,
    events: mpsc::UnboundedSender<SfuEvent>,
    stats: Arc<SfuStats>,
    relay: Option<RelayLink>,
}

impl Driver {
    async fn run(
        &mut self,
        mut commands: mpsc::Receiver<Command>,
        mut from_relay: mpsc::Receiver<Datagram>,
    ) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let deadline = self.core.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                c = commands.recv() => match c {
                    Some(Command::Stop) | None => break,
                    Some(c) => self.command(c),
                },
                r = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        self.core.handle_datagram(Instant::now(), from, self.advertised, &buf[..n]);
                    }
                    // What else is waiting, up to a batch, before commands and timers.
                    for _ in 1..BATCH {
                        match self.socket.try_recv_from(&mut buf) {
                            Ok((n, from)) => self.core.handle_datagram(Instant::now(), from, self.advertised, &buf[..n]),
                            Err(_) => break,
                        }
                    }
                }
                // From relayed participants, to either of the SFU's addresses (`addrs`): its
                // host candidate is the advertised one.
                Some((from, _to, data)) = from_relay.recv() => {
                    self.core.handle_datagram(Instant::now(), from, self.advertised, &data);
                    self.stats.relayed_in.fetch_add(1, Ordering::Relaxed);
                    for _ in 1..BATCH {
                        let Ok((from, _to, data)) = from_relay.try_recv() else {
                            break;
                        };
                        self.core.handle_datagram(Instant::now(), from, self.advertised, &data);
                        self.stats.relayed_in.fetch_add(1, Ordering::Relaxed);
                    }
                }
                () = sleep_until(deadline) => self.core.handle_timeout(Instant::now()),
            }
            self.flush();
        }
        // Leaving: every peer connection is closed, so that clients notice at once.
        self.core.shutdown(Instant::now());
        self.flush();
    }

    fn command(&mut self, c: Command) {
        let now = Instant::now();
        match c {
            Command::Offer {
                room,
                user,
                sdp,
                done,
            } => {
                let _ = done.send(self.core.offer(now, room, user, &sdp));
            }
            Command::Answer {
                room,
                user,
                sdp,
                done,
            } => {
                let _ = done.send(self.core.answer(now, room, user, &sdp));
            }
            Command::Quality {
                room,
                subscriber,
                publisher,
                quality,
                done,
            } => {
                let set = self
                    .core
                    .set_quality(now, room, subscriber, publisher, quality);
                let _ = done.send(set);
            }
            Command::Leave { room, user } => self.core.leave(now, room, user),
            Command::CloseRoom(room) => self.core.close_room(now, room),
            Command::Stop => {}
        }
    }

    /// Sends what the core has to send and hands its events over.
    fn flush(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            match &self.relay {
                // A relayed participant: to the relay, inside the process.
                Some(r) if (r.is_relayed)(t.destination) => {
                    let counter = if (r.deliver)(t.destination, t.source, &t.contents) {
                        &self.stats.relayed_out
                    } else {
                        &self.stats.relay_dropped
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    if self.socket.try_send_to(&t.contents, t.destination).is_err() {
                        self.stats.send_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            self.core.recycle(t.contents);
        }
        while let Some(e) = self.core.poll_event() {
            let _ = self.events.send(e);
        }
        self.stats
            .publish(self.core.counters(), self.core.participants());
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
