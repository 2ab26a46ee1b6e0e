//! The relay thread's loop: epoll readiness in, the read paths of client datagrams and
//! relay sockets, what the core says to do with them, the timers and the publication of usage.
//!
//! The hot path is all here: [`Driver::on_listener`] → [`Driver::act`] → a relay socket's
//! `send_to`, and [`Driver::on_relay`] → the core's `handle_peer_data` →
//! [`Driver::send_to_client`].

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::proto::{
    ClientAction, Family, FiveTuple, PeerAction, Server, Time, Transport, Usage, PEER_HEADROOM,
    PEER_TAILROOM,
};

use super::epoll::{self, EventFd};
use super::{relay_slot, Driver, Token, BATCH, EVENTS, MAX_DATAGRAM, USAGE_EVERY, USAGE_KEPT};

impl Driver {
    pub(super) fn run(&mut self, stop: &EventFd) {
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
            self.server.handle_wall_clock(self.clock.wall_secs());
            for ev in &events[..n] {
                match epoll::token(ev) {
                    Some(Token::Stop) => {
                        stop.drain();
                        self.close_all(now);
                        return;
                    }
                    Some(Token::Udp(index)) => {
                        for _ in 0..BATCH {
                            if !self.on_listener(index, now, &mut buf) {
                                break;
                            }
                        }
                    }
                    Some(Token::Conn(index)) => {
                        self.on_conn(index, epoll::writable(ev), now, &mut buf)
                    }
                    Some(Token::Control) => self.on_control(now),
                    Some(Token::Arrival) => self.on_arrivals(now, &mut buf),
                    Some(Token::Relay(index)) => {
                        for _ in 0..BATCH {
                            if !self.on_relay(index, now, &mut buf) {
                                break;
                            }
                        }
                    }
                    _ => debug_assert!(false, "a token the relay thread never registered"),
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
    /// ([`Stats::user_usage`](super::Stats::user_usage)); forgets users idle for [`USAGE_KEPT`].
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
        let mut relayed = self.closed_total;
        relayed += open;
        let s = &self.stats;
        let store = |counter: &AtomicU64, value| counter.store(value, Ordering::Relaxed);
        store(&s.relayed_packets_to_peer, relayed.packets_to_peer);
        store(&s.relayed_bytes_to_peer, relayed.bytes_to_peer);
        store(&s.relayed_packets_from_peer, relayed.packets_from_peer);
        store(&s.relayed_bytes_from_peer, relayed.bytes_from_peer);
        store(&s.dropped_packets, relayed.packets_dropped);
        store(&s.dropped_bytes, relayed.bytes_dropped);
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
    pub(super) fn act(&mut self, now: Time, action: ClientAction<'_>) {
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
                self.in_process(now, payload, |server, now, buf, range| {
                    server.handle_peer_data(now, to, from, buf, range)
                });
            }
            ClientAction::Local { from, to, payload } => {
                // Counted on the SFU's side, which is where they are read.
                if let Some(deliver) = &self.local {
                    deliver(to, from, payload);
                }
            }
        }
    }

    /// A datagram from a peer inside the process (`payload`, from the hairpin or a local peer)
    /// for the core's `peer_data` (one of its `handle_*_data`): framed for its client in the
    /// second buffer, with the room the core needs around it, and sent.
    pub(super) fn in_process(
        &mut self,
        now: Time,
        payload: &[u8],
        peer_data: impl FnOnce(&mut Server, Time, &mut [u8], Range<usize>) -> Option<PeerAction>,
    ) {
        let start = PEER_HEADROOM;
        let end = start + payload.len();
        let Some(room) = self.scratch.get_mut(start..end) else {
            return;
        };
        room.copy_from_slice(payload);
        let mut scratch = std::mem::take(&mut self.scratch);
        if let Some(action) = peer_data(&mut self.server, now, &mut scratch, start..end) {
            self.send_to_client(now, &action.tuple, &scratch[action.frame], false);
        }
        self.scratch = scratch;
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
    pub(super) fn send_to_client(
        &mut self,
        now: Time,
        tuple: &FiveTuple,
        data: &[u8],
        control: bool,
    ) {
        if tuple.transport == Transport::Udp {
            if let Some((_, sock)) = self.udp.iter().find(|(a, _)| *a == tuple.server) {
                let _ = sock.send_to(data, tuple.client);
            }
        } else if let Some(&index) = self.by_tuple.get(tuple) {
            self.send_stream(index, now, data, control);
        }
    }
}
