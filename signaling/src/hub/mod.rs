//! The signaling hub's core: who is connected, which live calls they may signal in, and the
//! one place every delivery goes through (DESIGN.md: "route hub deliveries through one place").
//!
//! Transports (the JSON WebSocket at `/ws`, Socket.IO) attach each socket with an [`Outbox`]:
//! a non-blocking write to that socket, with a bounded queue for what it cannot take at once.
//! The hub never waits on a socket: a socket whose queue is full is disconnected (a slow
//! consumer never grows memory). Peer-to-peer messages take only part of a user's queues, and
//! past it are refused to their sender ([`Hub::relay`]): a user cannot flood another off a call.
//!
//! The hub is the call state machine's [`EventSink`](crate::event::EventSink): committed events reach every socket of
//! every addressed user, in commit order. From the same events it keeps the roster of every
//! live call (who is in it, or still being rung), which is what authorizes the peer-to-peer
//! messages (`call:offer`, `call:answer`, `call:ice-candidate`) without a store round trip.
//!
//! The SFU's events for a participant go to the one socket that holds its SFU connection, not
//! to every socket of the user (`sfu.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::call::ParticipantStatus;
use crate::event::Payload;

pub use disconnect::DisconnectReason;

/// One message to a socket: an event name and its data, serialized once for every recipient.
#[derive(Clone, Debug)]
pub struct Message {
    pub event: &'static str,
    pub data: Arc<RawValue>,
}

impl Message {
    pub fn new(event: &'static str, data: &impl Serialize) -> Message {
        // Our payloads are plain structs and JSON values: serializing cannot fail.
        let data = serde_json::value::to_raw_value(data)
            .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"));
        Message {
            event,
            data: Arc::from(data),
        }
    }
}

/// A socket as the hub sees it.
pub trait Outbox: Send + Sync + 'static {
    /// Sends `m` to the socket, or queues it, without waiting. False if the socket's queue is
    /// full or the socket is gone: the hub then disconnects it.
    fn push(&self, m: &Message) -> bool;
    /// Closes the socket (the transport then detaches it).
    fn disconnect(&self, reason: DisconnectReason);
    /// The heartbeat, every [`crate::limits::PING_EVERY`]: pings the client, or closes the socket
    /// if the last ping went unanswered. Without waiting, as [`Outbox::push`].
    fn pulse(&self);
    /// What is queued for the socket and not written yet.
    fn backlog(&self) -> Backlog;
}

/// What is queued for a socket and not written yet (see [`Outbox::backlog`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    pub messages: usize,
    pub bytes: usize,
}

/// The peer-to-peer messages the hub relays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Offer,
    Answer,
    IceCandidate,
}

impl Signal {
    /// The event name, both ways.
    pub fn event(self) -> &'static str {
        match self {
            Signal::Offer => "call:offer",
            Signal::Answer => "call:answer",
            Signal::IceCandidate => "call:ice-candidate",
        }
    }

    /// The name of the field carrying the payload (`offer`, `answer`, `candidate`).
    pub fn field(self) -> &'static str {
        match self {
            Signal::Offer => "offer",
            Signal::Answer => "answer",
            Signal::IceCandidate => "candidate",
        }
    }

    pub fn from_event(event: &str) -> Option<Signal> {
        [Signal::Offer, Signal::Answer, Signal::IceCandidate]
            .into_iter()
            .find(|s| s.event() == event)
    }
}

/// Why a message was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The call is not live, or the sender is not in it.
    #[error("you are not in a live call {0}")]
    NotInCall(Uuid),
    /// The target is not in the call (or is the sender).
    #[error("{0} is not another participant of this call")]
    NotAParticipant(Uuid),
    /// The user has as many sockets as allowed.
    #[error("too many connections for this user (at most {0})")]
    TooManySockets(usize),
    /// The target's sockets have as much relayed to them waiting as they may
    /// ([`crate::limits::RELAY_QUEUE`], [`crate::limits::RELAY_BYTES_PER_USER`]).
    #[error("{0} is not keeping up with what is sent to them; try again later")]
    TargetBusy(Uuid),
}

impl HubError {
    pub fn code(&self) -> &'static str {
        match self {
            HubError::NotInCall(_) => "not_in_call",
            HubError::NotAParticipant(_) => "not_a_participant",
            HubError::TooManySockets(_) => "too_many_sockets",
            HubError::TargetBusy(_) => "target_busy",
        }
    }
}

/// A socket's handle in the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketId(u64);

struct Socket {
    id: SocketId,
    /// The id its client knows it by (Socket.IO's `socket.id`, `/ws`'s `socketId`): what a
    /// REST request names in `X-Socket-Id` (see [`Hub::socket_named`]).
    name: Option<Arc<str>>,
    outbox: Arc<dyn Outbox>,
}

/// What a user did with an invitation on one device, which their other devices hear (so that
/// they stop ringing): `call:answered-elsewhere` or `call:rejected-elsewhere`, `{callId,
/// userId}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elsewhere {
    Answered,
    Rejected,
}

impl Elsewhere {
    pub fn event(self) -> &'static str {
        match self {
            Elsewhere::Answered => "call:answered-elsewhere",
            Elsewhere::Rejected => "call:rejected-elsewhere",
        }
    }
}

#[derive(Default)]
struct Registry {
    next: u64,
    /// Every user's sockets (devices).
    users: HashMap<Uuid, Vec<Socket>>,
    /// Every live call's roster: who is joined or still being rung.
    calls: HashMap<Uuid, HashMap<Uuid, ParticipantStatus>>,
    /// The same the other way round: each user's live calls (so that a user's connect and
    /// disconnect look at their own calls, not at every call).
    calls_of: HashMap<Uuid, Vec<Uuid>>,
    /// Users joined in a live call whose last socket went, with their departure's mark (a
    /// reconnect removes them: the departure is then void).
    away: HashMap<Uuid, u64>,
    /// Each live call's `call:incoming`, for devices that connect while it rings.
    incoming: HashMap<Uuid, Message>,
    /// Which socket holds each `(call, user)`'s SFU connection (see [`sfu`]).
    sfu: HashMap<(Uuid, Uuid), sfu::SfuOwner>,
}

impl Registry {
    /// `user`'s live calls, each with their status in it.
    fn calls_with_status(
        &self,
        user: Uuid,
    ) -> impl Iterator<Item = (Uuid, ParticipantStatus)> + '_ {
        let calls = self.calls_of.get(&user).map_or(&[][..], Vec::as_slice);
        calls
            .iter()
            .filter_map(move |c| Some((*c, *self.calls.get(c)?.get(&user)?)))
    }

    fn joined_calls(&self, user: Uuid) -> Vec<Uuid> {
        self.calls_with_status(user)
            .filter(|(_, s)| *s == ParticipantStatus::Joined)
            .map(|(call, _)| call)
            .collect()
    }

    /// Follows the live calls' rosters from the state machine's events, which announce every
    /// change of who is in a call.
    fn update_roster(&mut self, p: &Payload) {
        match p {
            Payload::Incoming(i) => {
                let roster: HashMap<Uuid, ParticipantStatus> = i
                    .participants
                    .iter()
                    .filter(|v| v.status.is_live())
                    .map(|v| (v.user_id, v.status))
                    .collect();
                for user in roster.keys() {
                    self.add_call_of(*user, i.call_id);
                }
                self.calls.insert(i.call_id, roster);
            }
            Payload::ParticipantJoined(j) => {
                if let Some(r) = self.calls.get_mut(&j.call_id) {
                    r.insert(j.user_id, ParticipantStatus::Joined);
                    self.add_call_of(j.user_id, j.call_id);
                }
            }
            Payload::ParticipantLeft(l) => {
                if let Some(r) = self.calls.get_mut(&l.call_id) {
                    r.remove(&l.user_id);
                    self.remove_call_of(l.user_id, l.call_id);
                }
                self.sfu.remove(&(l.call_id, l.user_id));
            }
            Payload::Ended(e) => {
                if let Some(roster) = self.calls.remove(&e.call_id) {
                    for user in roster.keys() {
                        self.remove_call_of(*user, e.call_id);
                    }
                }
                self.incoming.remove(&e.call_id);
                self.sfu.retain(|(call, _), _| *call != e.call_id);
            }
            Payload::MediaStateChanged(_)
            | Payload::Quality(_)
            | Payload::SfuAnswer(_)
            | Payload::SfuOffer(_)
            | Payload::SfuClosed(_)
            | Payload::ActiveSpeaker(_) => {}
        }
    }

    fn add_call_of(&mut self, user: Uuid, call: Uuid) {
        let calls = self.calls_of.entry(user).or_default();
        if !calls.contains(&call) {
            calls.push(call);
        }
    }

    fn remove_call_of(&mut self, user: Uuid, call: Uuid) {
        if let Some(calls) = self.calls_of.get_mut(&user) {
            calls.retain(|c| *c != call);
            if calls.is_empty() {
                self.calls_of.remove(&user);
            }
        }
    }
}

/// A user joined in a live call lost their last socket at `at`: unless they reconnect within
/// the reconnect grace, they leave (see [`Reports::departures`]).
#[derive(Clone, Copy, Debug)]
pub struct Departure {
    pub user: Uuid,
    pub at: tokio::time::Instant,
    mark: u64,
}

/// The hub. Shared as an `Arc`; its state is behind one std `Mutex`, held only to look up or
/// change the registry and to push the call events into outboxes (in commit order; a push
/// never waits), never across an await. Relayed messages are pushed after it is released.
pub struct Hub {
    registry: Mutex<Registry>,
    max_sockets_per_user: usize,
    /// Where to report that a user's device is ringing (see [`Reports::ringing`]).
    ringing: mpsc::Sender<(Uuid, Uuid)>,
    /// Where departures go (see [`Reports::departures`]).
    departures: mpsc::UnboundedSender<Departure>,
}

/// What the hub reports to the call service, whose tasks receive it ([`crate::Domain`] wires
/// them). A report nobody receives is dropped.
pub struct Reports {
    /// `(user, call)` each time `call:incoming` reaches at least one socket of `user`: the
    /// call service then moves the invitee (and the call) to ringing. Reports that do not fit
    /// are dropped: ringing is a courtesy, the call goes on without it.
    pub ringing: mpsc::Receiver<(Uuid, Uuid)>,
    /// A [`Departure`] each time a user joined in a live call loses their last socket;
    /// [`Hub::gone_for_good`] then says, once the grace has passed, which calls they are still
    /// away from. Unbounded, but there is at most one departure per user joined in a call
    /// between two of their reconnects.
    pub departures: mpsc::UnboundedReceiver<Departure>,
}

/// Ringing reports waiting for the call service, beyond which they are dropped.
const RINGING_REPORTS: usize = 4096;

impl Hub {
    /// A hub allowing each user `max_sockets_per_user` sockets, and what it reports.
    pub fn new(max_sockets_per_user: usize) -> (Hub, Reports) {
        let (ringing, rung) = mpsc::channel(RINGING_REPORTS);
        let (departures, departed) = mpsc::unbounded_channel();
        let hub = Hub {
            registry: Mutex::new(Registry::default()),
            max_sockets_per_user,
            ringing,
            departures,
        };
        let reports = Reports {
            ringing: rung,
            departures: departed,
        };
        (hub, reports)
    }

    /// The calls `d.user` is still joined in, if they have not reconnected since `d` (nor left
    /// again later: a later departure has its own grace). The departure is then settled.
    pub fn gone_for_good(&self, d: &Departure) -> Vec<Uuid> {
        let mut r = self.registry();
        if r.away.get(&d.user) != Some(&d.mark) {
            return Vec::new();
        }
        r.away.remove(&d.user);
        r.joined_calls(d.user)
    }

    /// Reports `(user, call)` pairs whose `call:incoming` reached a device.
    fn report_rung(&self, rung: Vec<(Uuid, Uuid)>) {
        for report in rung {
            let _ = self.ringing.try_send(report);
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the registry half-changed in a way that
        // matters more than losing the hub: keep serving.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a socket of `user`.
    pub fn attach(&self, user: Uuid, outbox: Arc<dyn Outbox>) -> Result<SocketId, HubError> {
        self.attach_named(user, None, outbox)
    }

    /// Adds a socket of `user` that its client knows as `name` (see [`Hub::socket_named`]).
    pub fn attach_named(
        &self,
        user: Uuid,
        name: Option<Arc<str>>,
        outbox: Arc<dyn Outbox>,
    ) -> Result<SocketId, HubError> {
        let mut r = self.registry();
        let sockets = r.users.get(&user).map_or(0, Vec::len);
        if sockets >= self.max_sockets_per_user {
            return Err(HubError::TooManySockets(self.max_sockets_per_user));
        }
        r.next += 1;
        let id = SocketId(r.next);
        // A device that connects while the user is being rung rings too.
        let mut rung = Vec::new();
        for (call, status) in r.calls_with_status(user) {
            if let (true, Some(m)) = (status.is_pending(), r.incoming.get(&call)) {
                if outbox.push(m) {
                    rung.push((user, call));
                }
            }
        }
        r.sfu_reattach(user, id, name.as_deref());
        r.users
            .entry(user)
            .or_default()
            .push(Socket { id, name, outbox });
        // Back within the grace (or at any time before it was acted on): nothing happened.
        r.away.remove(&user);
        drop(r);
        self.report_rung(rung);
        Ok(id)
    }

    /// Removes a socket; returns how many `user` still has. The last one of a user joined in
    /// a live call is a departure (see [`Reports::departures`]).
    pub fn detach(&self, user: Uuid, id: SocketId) -> usize {
        let mut r = self.registry();
        r.sfu_detach(user, id);
        // The hub may have dropped the socket already (a slow consumer): still a departure.
        let left = r.users.get_mut(&user).map_or(0, |sockets| {
            sockets.retain(|s| s.id != id);
            sockets.len()
        });
        if left > 0 {
            return left;
        }
        r.users.remove(&user);
        self.depart_if_away(r, user);
        0
    }

    /// A transport performed something for `user` (an answer, say) after their last socket
    /// had gone: if that left them joined in a call with no socket, it is a departure too.
    pub fn recheck_presence(&self, user: Uuid) {
        let r = self.registry();
        if !r.users.contains_key(&user) {
            self.depart_if_away(r, user);
        }
    }

    /// `user` has just joined a call. With no socket, their grace starts now, for this call
    /// and the others they are in: a pending departure is replaced (its grace, counted from an
    /// earlier moment, would cut the new call short), as the user has just shown signs of life.
    fn joined_without_socket(&self, user: Uuid) {
        let mut r = self.registry();
        if r.users.contains_key(&user) {
            return;
        }
        r.away.remove(&user);
        self.depart_if_away(r, user);
    }

    /// `user` has no socket: a departure, unless one is pending or they are in no call.
    fn depart_if_away(&self, mut r: std::sync::MutexGuard<'_, Registry>, user: Uuid) {
        if r.away.contains_key(&user) || r.joined_calls(user).is_empty() {
            return;
        }
        r.next += 1;
        let mark = r.next;
        r.away.insert(user, mark);
        drop(r);
        let at = tokio::time::Instant::now();
        let _ = self.departures.send(Departure { user, at, mark });
    }

    /// How many sockets are attached, all users.
    pub fn socket_count(&self) -> usize {
        self.registry().users.values().map(Vec::len).sum()
    }

    /// How many live calls the hub knows the rosters of.
    pub fn live_call_count(&self) -> usize {
        self.registry().calls.len()
    }

    /// How many sockets `user` has.
    pub fn sockets_of(&self, user: Uuid) -> usize {
        self.registry().users.get(&user).map_or(0, Vec::len)
    }

    /// Whether `user` is in the live call `call_id` (joined or being rung).
    pub fn in_call(&self, user: Uuid, call_id: Uuid) -> bool {
        self.registry()
            .calls
            .get(&call_id)
            .is_some_and(|r| r.contains_key(&user))
    }

    /// The heartbeat of every socket ([`Outbox::pulse`]): one task for all, rather than a
    /// timer in each socket's loop, which every message would poll.
    pub fn pulse(&self) {
        // Outside the registry's lock: relays need not wait for a pass over every socket.
        let outboxes: Vec<Arc<dyn Outbox>> = {
            let r = self.registry();
            r.users
                .values()
                .flatten()
                .map(|s| s.outbox.clone())
                .collect()
        };
        for outbox in outboxes {
            outbox.pulse();
        }
    }

    /// Disconnects every socket (a stop): each transport then detaches its own.
    pub fn disconnect_all(&self, reason: DisconnectReason) {
        let r = self.registry();
        for s in r.users.values().flatten() {
            s.outbox.disconnect(reason);
        }
    }

    /// Disconnects every socket of `user` (a revocation): each transport then detaches its
    /// own. Returns how many.
    pub fn disconnect_user(&self, user: Uuid, reason: DisconnectReason) -> usize {
        let r = self.registry();
        let sockets = r.users.get(&user).map_or(&[][..], Vec::as_slice);
        for s in sockets {
            s.outbox.disconnect(reason);
        }
        sockets.len()
    }

    /// The socket of `user` whose client knows it as `name`, if it is attached.
    pub fn socket_named(&self, user: Uuid, name: &str) -> Option<SocketId> {
        let r = self.registry();
        let sockets = r.users.get(&user)?;
        sockets
            .iter()
            // Newest first: a client that reconnects under its name is its newest socket.
            .rev()
            .find(|s| s.name.as_deref() == Some(name))
            .map(|s| s.id)
    }
}

mod deliver;
mod disconnect;
mod sfu;

pub use sfu::{fingerprint, SfuClaim};

#[cfg(test)]
pub(crate) mod tests;
