//! Which socket holds a participant's SFU connection: the SFU's events for a participant
//! (`call:sfu-answer`, `call:sfu-offer`, `call:sfu-closed`, `call:active-speaker`) go to the
//! one socket whose `call:sfu-offer` joined the room or last renegotiated it, not to the
//! user's other devices, which have no such peer connection. The call's lifecycle events still
//! go to every socket of the user.
//!
//! - The newest offer wins. An offer from another socket of the user for the same peer
//!   connection (the same DTLS fingerprint: a client that reconnected with a new socket) takes
//!   the events over and renegotiates. An offer for a new peer connection (another tab, a
//!   phone) replaces the old connection: the SFU closes it, and the old socket, if still
//!   attached, gets `call:sfu-closed` with `reason: "replaced"` (its client should not offer
//!   again by itself, or two devices would take it from each other in turn).
//! - The owning socket's disconnect is a socket leaving, as anywhere in the hub: nothing happens
//!   to the media at once. While no socket holds the participant, its events go to every socket
//!   of the user: a client that reconnected under a new name (Socket.IO's reconnection gives a
//!   new `socket.id`) still hears of renegotiations for the peer connection it kept, and answers
//!   them. A socket that attaches under the owner's name (`/ws`'s `?socketId=`, kept across a
//!   client's reconnections) takes them back, and so does an offer from any socket of the user. The
//!   participant leaves the SFU room as it always has: with the call (the reconnect grace of a
//!   user with no socket), or when its media stays down past the grace (`call:sfu-closed`).

use std::sync::Arc;

use uuid::Uuid;

use super::{DisconnectReason, Hub, Message, Outbox, Registry, SocketId};
use crate::event::{Payload, SfuClosed};

/// The socket that holds a participant's SFU connection.
pub(super) struct SfuOwner {
    socket: SocketId,
    /// Its name, which a reconnecting client may attach under again.
    name: Option<Arc<str>>,
    /// False once the socket has gone: the participant's events go to every socket of the user
    /// until one takes them.
    attached: bool,
    /// The DTLS fingerprint of the peer connection its last offer was for.
    fingerprint: Option<String>,
}

/// What taking a participant's SFU connection over comes to (see [`Hub::claim_sfu`]).
#[must_use]
pub struct SfuClaim {
    /// The offer is for a new peer connection while the SFU may hold another: the SFU must drop
    /// the old one first (`SfuHandle::leave`), so that the offer joins afresh.
    pub replaces: bool,
    /// The socket that held the old connection, still attached: it is to be told
    /// `call:sfu-closed` (`reason: "replaced"`) once the old connection is dropped.
    displaced: Option<Arc<dyn Outbox>>,
}

impl SfuClaim {
    /// Tells the displaced socket, if any, that its SFU connection is closed.
    pub fn notify(self, call_id: Uuid) {
        if let Some(outbox) = self.displaced {
            let closed = SfuClosed {
                call_id,
                reason: "replaced",
            };
            let m = Message::of(&Payload::SfuClosed(closed));
            if !outbox.push(&m) {
                outbox.disconnect(DisconnectReason::SlowConsumer);
            }
        }
    }
}

/// The DTLS fingerprint an SDP offer names (its first `a=fingerprint:` line, session or media
/// level: a browser gives every m-line the same).
pub fn fingerprint(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=fingerprint:"))
        .map(str::trim)
}

impl Registry {
    fn socket(&self, user: Uuid, id: SocketId) -> Option<&super::Socket> {
        self.users.get(&user)?.iter().find(|s| s.id == id)
    }

    /// A socket of `user` attached as `name`: it takes back the SFU connections whose owner
    /// had that name and has gone (a client reconnecting under its name).
    pub(super) fn sfu_reattach(&mut self, user: Uuid, id: SocketId, name: Option<&str>) {
        let Some(name) = name else { return };
        for ((_, u), owner) in &mut self.sfu {
            if *u == user && !owner.attached && owner.name.as_deref() == Some(name) {
                owner.socket = id;
                owner.attached = true;
            }
        }
    }

    /// A socket of `user` has gone: the SFU connections it held wait for another.
    pub(super) fn sfu_detach(&mut self, user: Uuid, id: SocketId) {
        for ((_, u), owner) in &mut self.sfu {
            if *u == user && owner.socket == id {
                owner.attached = false;
            }
        }
    }

    /// The sockets of `users` that hold their SFU connection in `call_id`; for a participant
    /// whose socket has gone, every socket of the user (see the module's doc).
    pub(super) fn sfu_outboxes(&self, call_id: Uuid, users: &[Uuid]) -> Vec<Arc<dyn Outbox>> {
        let mut outboxes = Vec::new();
        for user in users {
            let Some(owner) = self.sfu.get(&(call_id, *user)) else {
                continue;
            };
            match self.socket(*user, owner.socket).filter(|_| owner.attached) {
                Some(socket) => outboxes.push(socket.outbox.clone()),
                None => {
                    let all = self.users.get(user).into_iter().flatten();
                    outboxes.extend(all.map(|s| s.outbox.clone()));
                }
            }
        }
        outboxes
    }
}

impl Hub {
    /// `socket` of `user` sends `call:sfu-offer` for `call_id`, for the peer connection of
    /// `fingerprint` (see [`fingerprint`]): from now on it holds the participant's SFU
    /// connection (the newest offer wins, even one the SFU then refuses: the socket may offer
    /// again). Called once the store has admitted the offer (a joined participant of the live
    /// call: what is recorded here goes with the call), and before the offer goes to the SFU,
    /// whose answer may come before the offer's result.
    pub fn claim_sfu(
        &self,
        call_id: Uuid,
        user: Uuid,
        socket: SocketId,
        fingerprint: Option<&str>,
    ) -> SfuClaim {
        let fingerprint = fingerprint.map(str::to_owned);
        let mut r = self.registry();
        let name = r.socket(user, socket).and_then(|s| s.name.clone());
        let new = SfuOwner {
            socket,
            name,
            attached: true,
            fingerprint: fingerprint.clone(),
        };
        let Some(old) = r.sfu.insert((call_id, user), new) else {
            return SfuClaim {
                replaces: false,
                displaced: None,
            };
        };
        let same_socket = old.attached && old.socket == socket;
        let same_connection = fingerprint.is_some() && old.fingerprint == fingerprint;
        if same_socket || same_connection {
            return SfuClaim {
                replaces: false,
                displaced: None,
            };
        }
        let displaced = old
            .attached
            .then(|| r.socket(user, old.socket).map(|s| s.outbox.clone()))
            .flatten();
        SfuClaim {
            replaces: true,
            displaced,
        }
    }

    /// Sends `m`, an SFU event of `call_id`, to the socket of each of `users` that holds their
    /// SFU connection; a user with none (it has gone) is skipped.
    pub fn send_sfu(&self, call_id: Uuid, users: &[Uuid], m: &Message) {
        let outboxes = self.registry().sfu_outboxes(call_id, users);
        for outbox in outboxes {
            if !outbox.push(m) {
                // The transport detaches it, which forgets it.
                outbox.disconnect(DisconnectReason::SlowConsumer);
            }
        }
    }

    /// `user` is out of `call_id`'s SFU room (the SFU closed its connection): the next offer,
    /// from any socket, joins afresh.
    pub fn forget_sfu(&self, call_id: Uuid, user: Uuid) {
        self.registry().sfu.remove(&(call_id, user));
    }

    /// Which socket of `user` holds their SFU connection in `call_id`, if one does.
    pub fn sfu_socket(&self, call_id: Uuid, user: Uuid) -> Option<SocketId> {
        let r = self.registry();
        let owner = r.sfu.get(&(call_id, user))?;
        owner.attached.then_some(owner.socket)
    }
}
