//! What the core asks of the driver: its commands (open and close relay sockets, which this
//! file binds on the relay port range and registers with epoll), its answers to clients, and
//! its events, recorded in [`Stats`](super::Stats), logs and metrics; closing everything at
//! shutdown; and the other way, what the daemon asks of the relay thread ([`RelayControl`]).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rand::Rng;

use crate::proto::{
    AllocId, CloseReason, Command, Event, Family, OpenError, RelayRequest, Time, Usage,
};

use super::epoll::EventFd;
use super::{relay_slot, Driver, RelaySocket, Token};

/// What the daemon asks of the running relay (the admin API's revocations), queued for its
/// thread, which an eventfd wakes. Cheap to clone; every clone reaches the same relay, and
/// asks made after it stopped are dropped.
#[derive(Clone)]
pub struct RelayControl {
    inner: Arc<Controls>,
}

pub(super) struct Controls {
    queue: Mutex<Vec<Control>>,
    pub(super) wake: EventFd,
}

enum Control {
    RevokeUser {
        user: String,
        until_unix: u64,
    },
    /// A datagram from a local peer (the SFU) to the relayed address `to`.
    Local {
        to: SocketAddr,
        from: SocketAddr,
        payload: Vec<u8>,
    },
}

/// Datagrams from local peers waiting for the relay thread, at most; more are dropped (the
/// relay thread is behind by that much: media late by then is lost anyway).
const LOCAL_QUEUE: usize = 4096;

impl RelayControl {
    pub(super) fn new() -> io::Result<RelayControl> {
        let inner = Controls {
            queue: Mutex::new(Vec::new()),
            wake: EventFd::new()?,
        };
        Ok(RelayControl {
            inner: Arc::new(inner),
        })
    }

    pub(super) fn controls(&self) -> Arc<Controls> {
        self.inner.clone()
    }

    /// Cuts `user` off (see [`Server::revoke_user`](crate::proto::Server::revoke_user)): their
    /// allocations close, and their credentials expiring at or before `until_unix` are refused
    /// until they expire. Returns at once; the relay thread does it at its next wake-up.
    pub fn revoke_user(&self, user: &str, until_unix: u64) {
        let control = Control::RevokeUser {
            user: user.to_owned(),
            until_unix,
        };
        self.inner.lock().push(control);
        self.inner.wake.notify();
    }

    /// A datagram from a local peer (see [`LocalPeers`](super::LocalPeers)) `from` to the
    /// relayed address `to`: the relay thread passes it to that allocation's client, as if it
    /// had arrived on the relay socket. Returns whether it was queued.
    pub fn deliver_local(&self, to: SocketAddr, from: SocketAddr, payload: &[u8]) -> bool {
        let mut queue = self.inner.lock();
        if queue.len() >= LOCAL_QUEUE {
            return false;
        }
        let was_empty = queue.is_empty();
        queue.push(Control::Local {
            to,
            from,
            payload: payload.to_vec(),
        });
        drop(queue);
        // One wake-up for a batch: the thread takes the whole queue when it wakes.
        if was_empty {
            self.inner.wake.notify();
        }
        true
    }
}

impl Controls {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Control>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Driver {
    /// The daemon asked something of the relay ([`RelayControl`]).
    pub(super) fn on_control(&mut self, now: Time) {
        self.controls.wake.drain();
        let asked = std::mem::take(&mut *self.controls.lock());
        for control in asked {
            match control {
                Control::RevokeUser { user, until_unix } => {
                    let closed = self.server.revoke_user(now, &user, until_unix);
                    tracing::info!(allocations = closed, until_unix, "relay: a user revoked");
                    // `?user`: quoted and escaped, as in `record`.
                    tracing::debug!(?user, "revoked user");
                }
                Control::Local { to, from, payload } => {
                    self.in_process(now, &payload, |server, now, buf, range| {
                        server.handle_local_data(now, to, from, buf, range)
                    });
                }
            }
        }
    }
}

impl Driver {
    /// Carries out what the core asked for, sends its answers and records its events.
    pub(super) fn drain(&mut self, now: Time) {
        loop {
            let mut progressed = false;
            while let Some(cmd) = self.server.poll_command() {
                progressed = true;
                match cmd {
                    Command::OpenRelay(r) => {
                        let result = self.open_relay(r);
                        self.server.handle_relay_opened(now, r.id, r.family, result);
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
                self.closed_total += usage;
                let reason = match reason {
                    CloseReason::Expired => "expired",
                    CloseReason::Deleted => "deleted",
                    CloseReason::Closed => "closed",
                    CloseReason::Revoked => "revoked",
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
                    packets_dropped = usage.packets_dropped,
                    bytes_dropped = usage.bytes_dropped,
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
                metrics::counter!("switchboard_turn_auth_failures_total", "reason" => f.label())
                    .increment(1);
                tracing::debug!(reason = f.label(), "authentication failed");
            }
            Event::PeerRefused(r) => {
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
    fn open_relay(&mut self, r: RelayRequest) -> Result<SocketAddr, OpenError> {
        let RelayRequest {
            id,
            family,
            even_port: even,
        } = r;
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
                .and_then(|()| self.epoll.add(sock.as_raw_fd(), Token::Relay(slot)));
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

    pub(super) fn close_all(&mut self, now: Time) {
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
