//! Delivery: relaying the peer-to-peer signals between members of a live call, telling a
//! user's other devices what one of them did, and the hub as the call state machine's
//! [`EventSink`], pushing committed events to every socket of the addressed users.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::{
    DisconnectReason, Elsewhere, Hub, HubError, Message, Outbox, Registry, Signal, SocketId,
};
use crate::call::ParticipantStatus;
use crate::event::{Event, EventSink, Payload};
use crate::limits::{RELAY_BYTES_PER_USER, RELAY_QUEUE};

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
    /// Relays a peer-to-peer message from `from` to every socket of `target`, if both are in
    /// the live call: joined, or still being rung.
    ///
    /// A sender cannot flood the target off the call: the message is refused to the sender
    /// (`target_busy`) instead of being queued when one of the target's sockets has
    /// [`RELAY_QUEUE`] messages waiting (half its queue: the rest is kept for the call's own
    /// events), or the target's sockets have [`RELAY_BYTES_PER_USER`] waiting in all. What the
    /// target's sockets hold for them is bounded per user, whoever sends, and only a target
    /// that falls behind on the call's events is closed as a slow consumer.
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
        let backlog = outboxes.iter().map(|(_, o)| o.backlog());
        let (messages, bytes) = backlog.fold((0, 0), |(most, sum), b| {
            (most.max(b.messages), sum + b.bytes)
        });
        let adding = outboxes.len() * m.data.get().len();
        if messages >= RELAY_QUEUE || bytes + adding > RELAY_BYTES_PER_USER {
            return Err(HubError::TargetBusy(target));
        }
        let mut slow = Vec::new();
        for (id, outbox) in outboxes {
            if !outbox.push(&m) {
                outbox.disconnect(DisconnectReason::SlowConsumer);
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
                s.outbox.disconnect(DisconnectReason::SlowConsumer);
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
                s.outbox.disconnect(DisconnectReason::SlowConsumer);
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
            let m = Message::of(&e.payload);
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

impl Message {
    /// An event's name and its data (without the enum's `{"event", "data"}` wrapping).
    pub fn of(p: &Payload) -> Message {
        match p {
            Payload::Incoming(d) => Message::new(p.name(), d),
            Payload::ParticipantJoined(d) => Message::new(p.name(), d),
            Payload::ParticipantLeft(d) => Message::new(p.name(), d),
            Payload::Ended(d) => Message::new(p.name(), d),
            Payload::MediaStateChanged(d) => Message::new(p.name(), d),
            Payload::Quality(d) => Message::new(p.name(), d),
            Payload::SfuAnswer(d) => Message::new(p.name(), d),
            Payload::SfuOffer(d) => Message::new(p.name(), d),
            Payload::SfuClosed(d) => Message::new(p.name(), d),
            Payload::ActiveSpeaker(d) => Message::new(p.name(), d),
        }
    }
}
