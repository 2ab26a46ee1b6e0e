//! The signaling hub's core: who is connected, which live calls they may signal in, and the
//! one place every delivery goes through (DESIGN.md: "route hub deliveries through one place").
//!
//! Transports (the JSON WebSocket at `/ws`, Socket.IO) attach each socket with an [`Outbox`]:
//! a non-blocking write to that socket, with a bounded queue for what it cannot take at once.
//! The hub never waits on a socket: a socket whose queue is full is disconnected (a slow
//! consumer never grows memory).
//!
//! The hub is the call state machine's [`EventSink`]: committed events reach every socket of
//! every addressed user, in commit order. From the same events it keeps the roster of every
//! live call (who is in it, or still being rung), which is what authorizes the peer-to-peer
//! messages (`call:offer`, `call:answer`, `call:ice-candidate`) without a store round trip.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::call::ParticipantStatus;
use crate::event::{Event, EventSink, Payload};

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
    fn disconnect(&self, reason: &'static str);
    /// The heartbeat, every [`crate::ws::PING_EVERY`]: pings the client, or closes the socket
    /// if the last ping went unanswered. Without waiting, as [`Outbox::push`].
    fn pulse(&self);
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
}

impl HubError {
    pub fn code(&self) -> &'static str {
        match self {
            HubError::NotInCall(_) => "not_in_call",
            HubError::NotAParticipant(_) => "not_a_participant",
            HubError::TooManySockets(_) => "too_many_sockets",
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
            }
            Payload::Ended(e) => {
                if let Some(roster) = self.calls.remove(&e.call_id) {
                    for user in roster.keys() {
                        self.remove_call_of(*user, e.call_id);
                    }
                }
                self.incoming.remove(&e.call_id);
            }
            Payload::MediaStateChanged(_) | Payload::Quality(_) => {}
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
/// the reconnect grace, they leave (see [`Hub::watch_departures`]).
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
    /// Where to report that a user's device is ringing: `(user, call)` once `call:incoming`
    /// reached at least one of their sockets (see [`Hub::report_ringing`]).
    ringing: Mutex<Option<mpsc::Sender<(Uuid, Uuid)>>>,
    /// Where departures go (see [`Hub::watch_departures`]).
    departures: Mutex<Option<mpsc::UnboundedSender<Departure>>>,
}

/// The data of a relayed message: the spec's `{callId, fromUserId, offer|answer|candidate}`.
struct Relayed<'a> {
    call_id: Uuid,
    from_user_id: Uuid,
    signal: Signal,
    payload: &'a RawValue,
}

impl Serialize for Relayed<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("callId", &self.call_id)?;
        m.serialize_entry("fromUserId", &self.from_user_id)?;
        m.serialize_entry(self.signal.field(), self.payload)?;
        m.end()
    }
}

impl Hub {
    pub fn new(max_sockets_per_user: usize) -> Hub {
        Hub {
            registry: Mutex::new(Registry::default()),
            max_sockets_per_user,
            ringing: Mutex::new(None),
            departures: Mutex::new(None),
        }
    }

    /// From now on, each time a user joined in a live call loses their last socket, a
    /// [`Departure`] goes to the returned receiver; [`Hub::gone_for_good`] then says, once the
    /// grace has passed, which calls they are still away from. Unbounded, but there is at most
    /// one departure per user joined in a call between two of their reconnects.
    pub fn watch_departures(&self) -> mpsc::UnboundedReceiver<Departure> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.departures.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
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

    /// From now on, `(user, call)` goes to `tx` each time `call:incoming` reaches a socket of
    /// `user`: the call service then moves the invitee (and the call) to ringing. Reports that
    /// do not fit in `tx` are dropped: ringing is a courtesy, the call goes on without it.
    pub fn report_ringing(&self, tx: mpsc::Sender<(Uuid, Uuid)>) {
        *self.ringing.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    }

    /// Reports `(user, call)` pairs whose `call:incoming` reached a device.
    fn report_rung(&self, rung: Vec<(Uuid, Uuid)>) {
        if rung.is_empty() {
            return;
        }
        if let Some(tx) = &*self.ringing.lock().unwrap_or_else(|e| e.into_inner()) {
            for report in rung {
                let _ = tx.try_send(report);
            }
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
    /// a live call is a departure (see [`Hub::watch_departures`]).
    pub fn detach(&self, user: Uuid, id: SocketId) -> usize {
        let mut r = self.registry();
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
        if let Some(tx) = &*self.departures.lock().unwrap_or_else(|e| e.into_inner()) {
            let at = tokio::time::Instant::now();
            let _ = tx.send(Departure { user, at, mark });
        }
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

    /// Relays a peer-to-peer message from `from` to every socket of `target`, if both are in
    /// the live call: joined, or still being rung.
    pub fn relay(
        &self,
        from: Uuid,
        call_id: Uuid,
        target: Uuid,
        signal: Signal,
        payload: &RawValue,
    ) -> Result<(), HubError> {
        // Serialized before taking the lock, which every socket's messages share.
        let data = Relayed {
            call_id,
            from_user_id: from,
            signal,
            payload,
        };
        let m = Message::new(signal.event(), &data);
        // The target's sockets, taken under the lock and written to after it: a push may be
        // a send to the socket, which no other relay (on another core) should wait for. The
        // sender's messages still arrive in the order it sent them (its socket's task relays
        // them one at a time); a socket that cannot take one is closed, and detaches itself.
        let outboxes: Vec<(SocketId, Arc<dyn Outbox>)> = {
            let r = self.registry();
            let roster = r.calls.get(&call_id).ok_or(HubError::NotInCall(call_id))?;
            if !roster.contains_key(&from) {
                return Err(HubError::NotInCall(call_id));
            }
            if target == from || !roster.contains_key(&target) {
                return Err(HubError::NotAParticipant(target));
            }
            r.users.get(&target).map_or_else(Vec::new, |sockets| {
                sockets.iter().map(|s| (s.id, s.outbox.clone())).collect()
            })
        };
        let mut slow = Vec::new();
        for (id, outbox) in outboxes {
            if !outbox.push(&m) {
                outbox.disconnect("slow consumer");
                slow.push(id);
            }
        }
        if !slow.is_empty() {
            // Forgotten at once, as `deliver` does (the transport detaches it later).
            let mut r = self.registry();
            if let Some(sockets) = r.users.get_mut(&target) {
                sockets.retain(|s| !slow.contains(&s.id));
                if sockets.is_empty() {
                    r.users.remove(&target);
                }
            }
        }
        Ok(())
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
    pub fn disconnect_all(&self, reason: &'static str) {
        let r = self.registry();
        for s in r.users.values().flatten() {
            s.outbox.disconnect(reason);
        }
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

    /// Tells `user`'s devices other than `origin` (the socket the answer or the rejection came
    /// from; with none, every device) that they did `what` with `call_id` elsewhere, so that
    /// they stop ringing.
    pub fn elsewhere(&self, what: Elsewhere, user: Uuid, call_id: Uuid, origin: Option<SocketId>) {
        let m = Message::new(
            what.event(),
            &serde_json::json!({"callId": call_id, "userId": user}),
        );
        let mut r = self.registry();
        let Some(sockets) = r.users.get_mut(&user) else {
            return;
        };
        sockets.retain(|s| {
            if Some(s.id) == origin {
                return true;
            }
            let ok = s.outbox.push(&m);
            if !ok {
                s.outbox.disconnect("slow consumer");
            }
            ok
        });
        if sockets.is_empty() {
            r.users.remove(&user);
        }
    }

    /// Sends `m` to every socket of each of `users`.
    pub fn send(&self, users: &[Uuid], m: &Message) {
        deliver(&mut self.registry(), users, m);
    }
}

/// Pushes `m` to every socket of `users`; a socket that cannot take it is disconnected and
/// forgotten. Returns the users at least one of whose sockets took it.
fn deliver(r: &mut Registry, users: &[Uuid], m: &Message) -> Vec<Uuid> {
    let mut reached = Vec::new();
    for user in users {
        let Some(sockets) = r.users.get_mut(user) else {
            continue;
        };
        let before = sockets.len();
        sockets.retain(|s| {
            let ok = s.outbox.push(m);
            if !ok {
                s.outbox.disconnect("slow consumer");
            }
            ok
        });
        if !sockets.is_empty() {
            reached.push(*user);
        } else if before > 0 {
            r.users.remove(user);
        }
    }
    reached
}

impl EventSink for Hub {
    fn deliver(&self, events: Vec<Event>) {
        let mut r = self.registry();
        let mut rung = Vec::new();
        // Users who joined (the caller of a new call, an invitee who answered): one who did
        // it over REST with no socket at all must not stay joined for ever, so their grace
        // starts now, as if their last socket had just gone.
        let mut joined = Vec::new();
        for e in events {
            match &e.payload {
                Payload::Incoming(i) => joined.extend(
                    i.participants
                        .iter()
                        .filter(|v| v.status == ParticipantStatus::Joined)
                        .map(|v| v.user_id),
                ),
                Payload::ParticipantJoined(j) => joined.push(j.user_id),
                _ => {}
            }
            r.update_roster(&e.payload);
            let m = message_of(&e.payload);
            let reached = deliver(&mut r, &e.to, &m);
            if let Payload::Incoming(i) = &e.payload {
                rung.extend(reached.into_iter().map(|user| (user, i.call_id)));
                r.incoming.insert(i.call_id, m);
            }
        }
        drop(r);
        self.report_rung(rung);
        for user in joined {
            self.joined_without_socket(user);
        }
    }
}

/// An event's name and its data (without the enum's `{"event", "data"}` wrapping).
fn message_of(p: &Payload) -> Message {
    match p {
        Payload::Incoming(d) => Message::new(p.name(), d),
        Payload::ParticipantJoined(d) => Message::new(p.name(), d),
        Payload::ParticipantLeft(d) => Message::new(p.name(), d),
        Payload::Ended(d) => Message::new(p.name(), d),
        Payload::MediaStateChanged(d) => Message::new(p.name(), d),
        Payload::Quality(d) => Message::new(p.name(), d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{Call, CallType, User};
    use crate::time::Timestamp;

    /// A socket that keeps what it is sent, up to `room` messages.
    #[derive(Default)]
    struct Inbox {
        room: usize,
        got: Mutex<Vec<(String, serde_json::Value)>>,
        closed: Mutex<Option<&'static str>>,
    }

    impl Inbox {
        fn with_room(room: usize) -> Arc<Inbox> {
            Arc::new(Inbox {
                room,
                ..Inbox::default()
            })
        }

        fn take(&self) -> Vec<(String, serde_json::Value)> {
            std::mem::take(&mut self.got.lock().unwrap())
        }

        fn names(&self) -> Vec<String> {
            self.take().into_iter().map(|(n, _)| n).collect()
        }
    }

    impl Outbox for Inbox {
        fn push(&self, m: &Message) -> bool {
            let mut got = self.got.lock().unwrap();
            if got.len() >= self.room {
                return false;
            }
            got.push((
                m.event.to_owned(),
                serde_json::from_str(m.data.get()).unwrap(),
            ));
            true
        }

        fn disconnect(&self, reason: &'static str) {
            *self.closed.lock().unwrap() = Some(reason);
        }

        fn pulse(&self) {}
    }

    const T0: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);

    fn user(n: u128) -> User {
        User {
            id: Uuid::from_u128(n),
            name: Some(format!("user{n}")),
            email: None,
        }
    }

    /// A group call by user 1 inviting 2 and 3, whose `call:incoming` the hub has delivered.
    fn group(hub: &Hub) -> Call {
        let mut next = 100;
        let (call, events) = Call::initiate(
            Uuid::from_u128(50),
            Uuid::from_u128(60),
            CallType::Video,
            user(1),
            vec![user(2), user(3)],
            20,
            move || {
                next += 1;
                Uuid::from_u128(next)
            },
            T0,
        )
        .unwrap();
        hub.deliver(events);
        call
    }

    fn sdp() -> Box<RawValue> {
        RawValue::from_string(r#"{"type":"offer","sdp":"v=0"}"#.into()).unwrap()
    }

    #[test]
    fn events_reach_every_socket_of_the_addressed_users() {
        let hub = Hub::new(4);
        let (a, b1, b2, c) = (
            Inbox::with_room(9),
            Inbox::with_room(9),
            Inbox::with_room(9),
            Inbox::with_room(9),
        );
        hub.attach(user(1).id, a.clone()).unwrap();
        hub.attach(user(2).id, b1.clone()).unwrap();
        hub.attach(user(2).id, b2.clone()).unwrap();
        hub.attach(user(3).id, c.clone()).unwrap();
        let call = group(&hub);
        assert!(a.names().is_empty(), "the caller is not rung");
        for inbox in [&b1, &b2, &c] {
            let got = inbox.take();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].0, "call:incoming");
            // The data alone, not the enum's wrapping.
            assert_eq!(got[0].1["callId"], call.id.to_string());
            assert_eq!(got[0].1["participants"].as_array().unwrap().len(), 3);
        }
    }

    #[test]
    fn only_members_of_a_live_call_signal_each_other() {
        let hub = Hub::new(4);
        let inboxes: Vec<Arc<Inbox>> = (1..=4).map(|_| Inbox::with_room(9)).collect();
        for (i, inbox) in inboxes.iter().enumerate() {
            hub.attach(user(i as u128 + 1).id, inbox.clone()).unwrap();
        }
        let mut call = group(&hub);
        for i in &inboxes {
            i.take();
        }
        let (u1, u2, u3, u4) = (user(1).id, user(2).id, user(3).id, user(4).id);
        // Invitees being rung may already signal (an offer can precede the answer).
        hub.relay(u1, call.id, u2, Signal::Offer, &sdp()).unwrap();
        let got = inboxes[1].take();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "call:offer");
        assert_eq!(got[0].1["fromUserId"], u1.to_string());
        assert_eq!(got[0].1["offer"]["sdp"], "v=0");
        // Strangers, self-targets and unknown calls are refused, and nothing is delivered.
        assert_eq!(
            hub.relay(u4, call.id, u1, Signal::Offer, &sdp()),
            Err(HubError::NotInCall(call.id))
        );
        assert_eq!(
            hub.relay(u1, call.id, u4, Signal::Offer, &sdp()),
            Err(HubError::NotAParticipant(u4))
        );
        assert_eq!(
            hub.relay(u1, call.id, u1, Signal::Offer, &sdp()),
            Err(HubError::NotAParticipant(u1))
        );
        let nowhere = Uuid::from_u128(999);
        assert_eq!(
            hub.relay(u1, nowhere, u2, Signal::Offer, &sdp()),
            Err(HubError::NotInCall(nowhere))
        );
        assert!(inboxes.iter().all(|i| i.take().is_empty()));
        // A reject takes user 3 out of the roster; the call goes on between 1 and 2.
        let events = call
            .reject(u3, T0 + std::time::Duration::from_secs(1))
            .unwrap();
        hub.deliver(events);
        assert!(!hub.in_call(u3, call.id));
        assert_eq!(
            hub.relay(u3, call.id, u1, Signal::IceCandidate, &sdp()),
            Err(HubError::NotInCall(call.id))
        );
        hub.deliver(
            call.answer(u2, T0 + std::time::Duration::from_secs(2))
                .unwrap(),
        );
        assert!(hub.in_call(u2, call.id));
        // The end removes the call.
        hub.deliver(
            call.end(u1, T0 + std::time::Duration::from_secs(3))
                .unwrap(),
        );
        hub.deliver(
            call.end(u2, T0 + std::time::Duration::from_secs(3))
                .unwrap_or_default(),
        );
        assert!(!hub.in_call(u1, call.id) && !hub.in_call(u2, call.id));
        assert_eq!(
            hub.relay(u1, call.id, u2, Signal::Answer, &sdp()),
            Err(HubError::NotInCall(call.id))
        );
    }

    /// What one device did with an invitation reaches the user's other devices, not the one
    /// named as its origin (a REST request names it by its client's id); with no origin,
    /// every device.
    #[test]
    fn other_devices_hear_what_one_did() {
        let hub = Hub::new(4);
        let u2 = user(2).id;
        let (phone, laptop, other) = (
            Inbox::with_room(9),
            Inbox::with_room(9),
            Inbox::with_room(9),
        );
        hub.attach_named(u2, Some(Arc::from("phone")), phone.clone())
            .unwrap();
        hub.attach(u2, laptop.clone()).unwrap();
        hub.attach_named(user(3).id, Some(Arc::from("phone")), other.clone())
            .unwrap();
        let call = Uuid::from_u128(50);
        assert_eq!(hub.socket_named(u2, "laptop"), None);
        assert_eq!(hub.socket_named(user(1).id, "phone"), None);
        let origin = hub.socket_named(u2, "phone");
        assert!(origin.is_some());
        hub.elsewhere(Elsewhere::Answered, u2, call, origin);
        assert!(phone.take().is_empty());
        let got = laptop.take();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "call:answered-elsewhere");
        assert_eq!(got[0].1, serde_json::json!({"callId": call, "userId": u2}));
        hub.elsewhere(Elsewhere::Rejected, u2, call, None);
        assert_eq!(phone.names(), ["call:rejected-elsewhere"]);
        assert_eq!(laptop.names(), ["call:rejected-elsewhere"]);
        assert!(
            other.take().is_empty(),
            "another user's devices hear nothing"
        );
    }

    #[test]
    fn a_slow_socket_is_disconnected_not_waited_for() {
        let hub = Hub::new(4);
        let slow = Inbox::with_room(1);
        let fine = Inbox::with_room(9);
        let u2 = user(2).id;
        let slow_id = hub.attach(u2, slow.clone()).unwrap();
        hub.attach(u2, fine.clone()).unwrap();
        hub.attach(user(1).id, Inbox::with_room(9)).unwrap();
        let call = group(&hub);
        hub.relay(user(1).id, call.id, u2, Signal::Offer, &sdp())
            .unwrap();
        assert_eq!(*slow.closed.lock().unwrap(), Some("slow consumer"));
        assert_eq!(fine.names(), ["call:incoming", "call:offer"]);
        assert_eq!(hub.sockets_of(u2), 1, "the slow socket is forgotten");
        // Its transport detaches it later: harmless.
        assert_eq!(hub.detach(u2, slow_id), 1);
    }

    #[test]
    fn sockets_per_user_are_bounded_and_all_can_be_closed() {
        let hub = Hub::new(2);
        let u = user(1).id;
        let (a, b) = (Inbox::with_room(1), Inbox::with_room(1));
        let first = hub.attach(u, a.clone()).unwrap();
        hub.attach(u, b.clone()).unwrap();
        assert_eq!(
            hub.attach(u, Inbox::with_room(1)).unwrap_err(),
            HubError::TooManySockets(2)
        );
        assert_eq!(hub.detach(u, first), 1);
        hub.attach(u, Inbox::with_room(1)).unwrap();
        hub.disconnect_all("server shutdown");
        assert_eq!(*b.closed.lock().unwrap(), Some("server shutdown"));
        assert_eq!(*a.closed.lock().unwrap(), None, "detached before");
    }

    #[test]
    fn the_last_socket_of_a_joined_user_going_is_a_departure_a_reconnect_voids() {
        let hub = Hub::new(4);
        let mut departures = hub.watch_departures();
        let (u1, u2) = (user(1).id, user(2).id);
        let a1 = hub.attach(u1, Inbox::with_room(9)).unwrap();
        let a2 = hub.attach(u1, Inbox::with_room(9)).unwrap();
        let b = hub.attach(u2, Inbox::with_room(9)).unwrap();
        let call = group(&hub);
        // User 2 is only being rung: no departure (the ring timeout is their limit).
        hub.detach(u2, b);
        // User 1 (the caller, joined) still has a socket after the first goes.
        assert_eq!(hub.detach(u1, a1), 1);
        assert!(departures.try_recv().is_err());
        assert_eq!(hub.detach(u1, a2), 0);
        let first = departures.try_recv().unwrap();
        assert_eq!(first.user, u1);
        // A reconnect voids it; a later departure has its own.
        let again = hub.attach(u1, Inbox::with_room(9)).unwrap();
        assert!(hub.gone_for_good(&first).is_empty());
        hub.detach(u1, again);
        let second = departures.try_recv().unwrap();
        assert!(hub.gone_for_good(&first).is_empty());
        assert_eq!(hub.gone_for_good(&second), [call.id]);
        // Settled once.
        assert!(hub.gone_for_good(&second).is_empty());
        assert!(departures.try_recv().is_err());
    }

    /// A user with no socket who starts a second call over REST gets a fresh grace for both:
    /// the first call's departure, due sooner, must not end the second just after it began.
    #[test]
    fn joining_another_call_without_a_socket_restarts_the_grace() {
        let hub = Hub::new(4);
        let mut departures = hub.watch_departures();
        let first = group(&hub);
        let early = departures.try_recv().unwrap();
        let (second, events) = Call::initiate(
            Uuid::from_u128(51),
            Uuid::from_u128(61),
            CallType::Audio,
            user(1),
            vec![user(4)],
            20,
            || Uuid::from_u128(200),
            T0,
        )
        .unwrap();
        hub.deliver(events);
        let renewed = departures.try_recv().unwrap();
        assert_eq!(renewed.user, early.user);
        assert!(
            hub.gone_for_good(&early).is_empty(),
            "the earlier grace is void"
        );
        let mut gone = hub.gone_for_good(&renewed);
        gone.sort();
        assert_eq!(gone, [first.id, second.id]);
    }

    #[test]
    fn a_device_connecting_mid_ring_rings_and_an_ended_call_is_forgotten() {
        let hub = Hub::new(4);
        let mut departures = hub.watch_departures();
        let (u1, u2) = (user(1).id, user(2).id);
        let mut call = group(&hub);
        // The caller started the call with no socket (over REST): joined, and away already,
        // so that a client that never connects does not stay in the call for ever.
        let away = departures.try_recv().unwrap();
        assert_eq!(away.user, u1);
        assert!(departures.try_recv().is_err());
        // User 2 had no socket when the call started: a device of theirs gets it on connect.
        let phone = Inbox::with_room(9);
        hub.attach(u2, phone.clone()).unwrap();
        assert_eq!(phone.names(), ["call:incoming"]);
        // The caller is joined, not rung: nothing on connect.
        let caller = Inbox::with_room(9);
        let a = hub.attach(u1, caller.clone()).unwrap();
        assert!(caller.names().is_empty());
        // Which voids the caller's departure.
        assert!(hub.gone_for_good(&away).is_empty());
        // Once the call is over, nobody is in it: no replay, no departure.
        let t = T0 + std::time::Duration::from_secs(1);
        hub.deliver(call.end(u1, t).unwrap());
        assert_eq!(phone.names(), ["call:ended"]);
        let laptop = Inbox::with_room(9);
        hub.attach(u2, laptop.clone()).unwrap();
        assert!(laptop.names().is_empty());
        hub.detach(u1, a);
        assert!(departures.try_recv().is_err());
        let r = hub.registry();
        assert!(r.calls.is_empty() && r.calls_of.is_empty() && r.incoming.is_empty());
    }
}
