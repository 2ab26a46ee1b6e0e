//! The call state machine (DESIGN.md, "Calls"): one [`Call`] with its participants, changed
//! only by the transitions here. It reads no clock and touches no store: the service loads a
//! call, applies one transition with the time it is handed, writes the result in one
//! transaction and then delivers the [`Event`]s the transition returned.
//!
//! ```text
//! call:         initiated ─► ringing ─► active ─► ended
//!                   │           │                   ▲
//!                   └───────────┴─► missed | rejected | ended (cancelled, server-restart)
//! participant:  invited ─► ringing ─► joined ─► left
//!                  └──────────┴─► rejected | missed      (an active group call may be
//!                                                          re-joined from left/rejected/missed)
//! ```
//!
//! The initiator is a participant, `joined` from the start. Rules:
//! - **answer** (invitees only): the invitee joins; the first answer activates the call and
//!   sets `started_at`. Joining an active group call again after leaving, rejecting or missing
//!   it is allowed (to its initiator too, after leaving).
//! - **reject** (invitees still ringing): in a 1:1 call the call is rejected; in a group only
//!   that participant is, and the call is settled (below).
//! - **end** (joined participants): in a 1:1 call it ends the call, `ended-by-user` (or
//!   `cancelled` if nobody had answered); in a group the participant leaves and the call is
//!   settled.
//! - **settle**: an active call with fewer than two joined participants ends; a call nobody
//!   answered ends when nobody is left to answer — `rejected` if every invitee rejected, else
//!   `missed`, or `cancelled` if its initiator left.
//! - **ring timeout**: invitees still ringing at `created_at + ring_timeout` miss it; then the
//!   call is settled.
//! - **media**: joined or still-invited participants of a live call.

use std::time::Duration;

use uuid::Uuid;

use crate::event::{self, Event, Payload};
use crate::time::Timestamp;

pub use crate::model::{
    CallStatus, CallType, EndReason, LeftReason, MediaChange, MediaState, Participant,
    ParticipantStatus, ParticipantView, User,
};

/// One row of `calls` with its participants, the initiator first.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub kind: CallType,
    pub status: CallStatus,
    pub initiated_by: Uuid,
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub duration_seconds: Option<u64>,
    pub end_reason: Option<EndReason>,
    /// `quality_stats`, JSON text as stored.
    pub quality_stats: Option<String>,
    /// `sfu_room_id`: set when the call's media goes through the SFU (a group call), the
    /// call's id; never changes after the call is made.
    pub sfu_room_id: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub participants: Vec<Participant>,
}

/// Why a transition was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The user is not invited to the call (answer, reject).
    #[error("you are not invited to this call")]
    NotInvited,
    /// The user is not a participant (end, media).
    #[error("you are not a participant of this call")]
    NotParticipant,
    /// The transition does not apply in the current state.
    #[error("{0}")]
    Conflict(String),
}

/// Why a call could not be started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InitiateError {
    #[error("participantIds: at least one other participant is needed")]
    NoInvitees,
    #[error("participantIds: {count} participants with the caller; at most {max} per call")]
    TooMany { count: usize, max: usize },
}

impl Call {
    /// A new call by `initiator`, who joins it at once, inviting `invitees` (duplicates, and
    /// the initiator if listed, are dropped: inviting every member of a conversation is a
    /// normal way to call it). `max_participants` counts the initiator.
    #[allow(clippy::too_many_arguments)]
    pub fn initiate(
        id: Uuid,
        conversation_id: Uuid,
        kind: CallType,
        initiator: User,
        invitees: Vec<User>,
        max_participants: usize,
        participant_ids: impl FnMut() -> Uuid,
        now: Timestamp,
    ) -> Result<(Call, Vec<Event>), InitiateError> {
        let mut next_id = participant_ids;
        let mut unique: Vec<User> = Vec::with_capacity(invitees.len());
        for u in invitees {
            if u.id != initiator.id && !unique.iter().any(|x| x.id == u.id) {
                unique.push(u);
            }
        }
        if unique.is_empty() {
            return Err(InitiateError::NoInvitees);
        }
        if unique.len() + 1 > max_participants {
            return Err(InitiateError::TooMany {
                count: unique.len() + 1,
                max: max_participants,
            });
        }
        let participant = |user: User, status, id| Participant {
            id,
            user,
            status,
            joined_at: (status == ParticipantStatus::Joined).then_some(now),
            left_at: None,
            media_state: MediaState::default(),
            connection_quality: None,
            created_at: now,
            updated_at: now,
        };
        let initiated_by = initiator.id;
        let mut participants = vec![participant(initiator, ParticipantStatus::Joined, next_id())];
        for u in unique {
            participants.push(participant(u, ParticipantStatus::Invited, next_id()));
        }
        let call = Call {
            id,
            conversation_id,
            kind,
            status: CallStatus::Initiated,
            initiated_by,
            started_at: None,
            ended_at: None,
            duration_seconds: None,
            end_reason: None,
            quality_stats: None,
            sfu_room_id: None,
            created_at: now,
            updated_at: now,
            participants,
        };
        let incoming = Event {
            to: call.invitees().map(|p| p.user.id).collect(),
            payload: Payload::Incoming(event::Incoming {
                call_id: call.id,
                conversation_id,
                kind,
                initiated_by,
                participants: call.participants.iter().map(Participant::view).collect(),
                sfu_room_id: None,
            }),
        };
        Ok((call, vec![incoming]))
    }

    /// Puts a call just made (by [`Call::initiate`]) on the SFU: its room is the call's id, and
    /// the invitees' `call:incoming` (among `events`) says so.
    pub fn use_sfu(&mut self, events: &mut [Event]) {
        let room = self.id.to_string();
        for e in events {
            if let Payload::Incoming(i) = &mut e.payload {
                i.sfu_room_id = Some(room.clone());
            }
        }
        self.sfu_room_id = Some(room);
    }

    /// A call between exactly two people.
    pub fn is_one_to_one(&self) -> bool {
        self.participants.len() == 2
    }

    pub fn participant(&self, user: Uuid) -> Option<&Participant> {
        self.participants.iter().find(|p| p.user.id == user)
    }

    /// Everyone but the initiator.
    pub fn invitees(&self) -> impl Iterator<Item = &Participant> {
        self.participants
            .iter()
            .filter(move |p| p.user.id != self.initiated_by)
    }

    fn count(&self, pred: impl Fn(ParticipantStatus) -> bool) -> usize {
        self.participants.iter().filter(|p| pred(p.status)).count()
    }

    /// Live participants other than `user`: who hears about what `user` did.
    fn others_live(&self, user: Uuid) -> Vec<Uuid> {
        self.participants
            .iter()
            .filter(|p| p.user.id != user && p.status.is_live())
            .map(|p| p.user.id)
            .collect()
    }

    fn index_of(&self, user: Uuid) -> Option<usize> {
        self.participants.iter().position(|p| p.user.id == user)
    }

    /// The index of `user` if they are an invitee (not the initiator) of this call.
    fn invitee_index(&self, user: Uuid) -> Result<usize, Refusal> {
        match self.index_of(user) {
            Some(i) if user != self.initiated_by => Ok(i),
            _ => Err(Refusal::NotInvited),
        }
    }

    fn require_live(&self) -> Result<(), Refusal> {
        if self.status.is_live() {
            Ok(())
        } else {
            Err(Refusal::Conflict(format!(
                "the call is over (status {})",
                self.status
            )))
        }
    }

    /// The invitee's client is ringing (the hub delivered `call:incoming`): invited → ringing,
    /// and the call initiated → ringing. Anything else is left as it is. Returns whether
    /// something changed.
    pub fn ring(&mut self, user: Uuid, now: Timestamp) -> bool {
        let Ok(i) = self.invitee_index(user) else {
            return false;
        };
        if !self.status.is_live() || self.participants[i].status != ParticipantStatus::Invited {
            return false;
        }
        self.participants[i].set(ParticipantStatus::Ringing, now);
        if self.status == CallStatus::Initiated {
            self.status = CallStatus::Ringing;
        }
        self.updated_at = now;
        true
    }

    /// `user` answers: they join; the first answer makes the call active. The initiator of a
    /// group call who left it may join it again this way too.
    pub fn answer(&mut self, user: Uuid, now: Timestamp) -> Result<Vec<Event>, Refusal> {
        let rejoining_initiator = user == self.initiated_by
            && self.participant(user).map(|p| p.status) == Some(ParticipantStatus::Left);
        let i = match self.invitee_index(user) {
            Err(_) if rejoining_initiator => self.index_of(user).ok_or(Refusal::NotInvited)?,
            other => other?,
        };
        self.require_live()?;
        let status = self.participants[i].status;
        match status {
            ParticipantStatus::Joined => {
                return Err(Refusal::Conflict(
                    "you have already joined this call".into(),
                ))
            }
            ParticipantStatus::Invited | ParticipantStatus::Ringing => {}
            ParticipantStatus::Left | ParticipantStatus::Rejected | ParticipantStatus::Missed
                if self.status == CallStatus::Active && !self.is_one_to_one() => {}
            _ => {
                return Err(Refusal::Conflict(format!(
                    "you can no longer join this call (you are {status})"
                )))
            }
        }
        self.participants[i].set(ParticipantStatus::Joined, now);
        if self.started_at.is_none() {
            self.started_at = Some(now);
        }
        self.status = CallStatus::Active;
        self.updated_at = now;
        let joined = &self.participants[i].user;
        Ok(vec![Event {
            to: self.others_live(user),
            payload: Payload::ParticipantJoined(event::ParticipantJoined {
                call_id: self.id,
                user_id: user,
                user_name: joined.name.clone(),
                user_identifier: joined.email.clone(),
            }),
        }])
    }

    /// `user` declines the invitation.
    pub fn reject(&mut self, user: Uuid, now: Timestamp) -> Result<Vec<Event>, Refusal> {
        let i = self.invitee_index(user)?;
        self.require_live()?;
        let status = self.participants[i].status;
        if !status.is_pending() {
            return Err(Refusal::Conflict(format!(
                "only a ringing invitation can be rejected (you are {status})"
            )));
        }
        let before = self.live_users();
        self.participants[i].set(ParticipantStatus::Rejected, now);
        self.updated_at = now;
        if self.is_one_to_one() {
            return Ok(self.finish(
                CallStatus::Rejected,
                EndReason::Rejected,
                Some(user),
                before,
                now,
            ));
        }
        Ok(self.out_of_group(user, LeftReason::Rejected, now))
    }

    /// `user` hangs up.
    pub fn end(&mut self, user: Uuid, now: Timestamp) -> Result<Vec<Event>, Refusal> {
        self.leave(user, false, now)
    }

    /// Every device of `user`, joined in this call, has been gone longer than the reconnect
    /// grace: they leave as if they hung up, but the others hear why (`connection-lost` for a
    /// 1:1 call, a participant `disconnected` in a group). Refused as [`Call::end`] is: only a
    /// joined participant of a live call leaves.
    pub fn connection_lost(&mut self, user: Uuid, now: Timestamp) -> Result<Vec<Event>, Refusal> {
        self.leave(user, true, now)
    }

    fn leave(&mut self, user: Uuid, lost: bool, now: Timestamp) -> Result<Vec<Event>, Refusal> {
        let i = self.index_of(user).ok_or(Refusal::NotParticipant)?;
        self.require_live()?;
        match self.participants[i].status {
            ParticipantStatus::Joined => {}
            s if s.is_pending() => {
                return Err(Refusal::Conflict(
                    "you have not joined this call; reject it instead".into(),
                ))
            }
            s => {
                return Err(Refusal::Conflict(format!(
                    "you are no longer in this call ({s})"
                )))
            }
        }
        if self.is_one_to_one() {
            let before = self.live_users();
            let why = if lost {
                EndReason::ConnectionLost
            } else if self.started_at.is_some() {
                EndReason::EndedByUser
            } else {
                EndReason::Cancelled
            };
            return Ok(self.finish(CallStatus::Ended, why, Some(user), before, now));
        }
        self.participants[i].set(ParticipantStatus::Left, now);
        self.updated_at = now;
        let why = if lost {
            LeftReason::Disconnected
        } else {
            LeftReason::Left
        };
        Ok(self.out_of_group(user, why, now))
    }

    /// The admin API cut `user` off (a revocation): they are out of the call whether they
    /// joined it or are still being rung. A 1:1 call ends (`revoked`); in a group call they
    /// leave (or miss it, if not joined), the others hear `call:participant-left` with the
    /// reason `revoked`, and the call is settled as after any departure. Refused as
    /// [`Call::end`] is for a call that is over or that they are no longer in.
    pub fn revoke(&mut self, user: Uuid, now: Timestamp) -> Result<Vec<Event>, Refusal> {
        let i = self.index_of(user).ok_or(Refusal::NotParticipant)?;
        self.require_live()?;
        let status = self.participants[i].status;
        if !status.is_live() {
            return Err(Refusal::Conflict(format!(
                "you are no longer in this call ({status})"
            )));
        }
        if self.is_one_to_one() {
            let before = self.live_users();
            let why = EndReason::Revoked;
            return Ok(self.finish(CallStatus::Ended, why, Some(user), before, now));
        }
        let out = if status == ParticipantStatus::Joined {
            ParticipantStatus::Left
        } else {
            ParticipantStatus::Missed
        };
        self.participants[i].set(out, now);
        self.updated_at = now;
        Ok(self.out_of_group(user, LeftReason::Revoked, now))
    }

    /// `user` is out of a group call (`why`: `left`, `disconnected`, `rejected`): the others
    /// hear it, unless that settles the call, when `call:ended` says it all (to `user`'s
    /// devices too). A rejection reaches `user`'s own devices as well: those still ringing stop.
    fn out_of_group(&mut self, user: Uuid, why: LeftReason, now: Timestamp) -> Vec<Event> {
        let mut to = self.others_live(user);
        if why == LeftReason::Rejected {
            to.push(user);
        }
        let left = self.left_event(user, why, to);
        let ending = self.settle(Some(user), now);
        if ending.is_empty() {
            vec![left]
        } else {
            ending
        }
    }

    /// `call:participant-left` for `user`, to `to`.
    fn left_event(&self, user: Uuid, why: LeftReason, to: Vec<Uuid>) -> Event {
        Event {
            to,
            payload: Payload::ParticipantLeft(event::ParticipantLeft {
                call_id: self.id,
                user_id: user,
                reason: why.as_str(),
            }),
        }
    }

    /// `user` changes some media flags; returns the new state with the events.
    pub fn set_media(
        &mut self,
        user: Uuid,
        change: MediaChange,
        now: Timestamp,
    ) -> Result<(MediaState, Vec<Event>), Refusal> {
        let i = self.index_of(user).ok_or(Refusal::NotParticipant)?;
        self.require_live()?;
        let p = &mut self.participants[i];
        if !p.status.is_live() {
            return Err(Refusal::Conflict(format!(
                "you are no longer in this call ({})",
                p.status
            )));
        }
        p.media_state = p.media_state.apply(change);
        p.updated_at = now;
        let media_state = p.media_state;
        self.updated_at = now;
        let event = Event {
            to: self.others_live(user),
            payload: Payload::MediaStateChanged(event::MediaStateChanged {
                call_id: self.id,
                user_id: user,
                media_state,
            }),
        };
        Ok((media_state, vec![event]))
    }

    /// When the invitees still ringing miss the call.
    pub fn ring_deadline(&self, ring_timeout: Duration) -> Option<Timestamp> {
        let pending =
            self.status.is_live() && self.participants.iter().any(|p| p.status.is_pending());
        pending.then(|| self.created_at + ring_timeout)
    }

    /// The ring timeout: past the deadline, invitees still ringing miss the call, which is then
    /// settled. Does nothing before the deadline.
    pub fn expire_ringing(&mut self, ring_timeout: Duration, now: Timestamp) -> Vec<Event> {
        match self.ring_deadline(ring_timeout) {
            Some(deadline) if deadline <= now => {}
            _ => return Vec::new(),
        }
        let mut missed = Vec::new();
        for p in &mut self.participants {
            if p.status.is_pending() {
                p.set(ParticipantStatus::Missed, now);
                missed.push(p.user.id);
            }
        }
        self.updated_at = now;
        let mut events = self.settle(None, now);
        if events.is_empty() {
            // The call goes on without them (and they may still join it): everyone hears who
            // missed it, those who did included, so that their ringing stops.
            let mut to = self.live_users();
            to.extend(&missed);
            for &user in &missed {
                events.push(self.left_event(user, LeftReason::Missed, to.clone()));
            }
        } else if let Some(Payload::Ended(_)) = events.first().map(|e| &e.payload) {
            // Those who missed it were rung until now: they hear it ended too.
            events[0].to.extend(missed);
        }
        events
    }

    /// The server ends a live call (restart after a crash, shutdown).
    pub fn end_by_server(&mut self, why: EndReason, now: Timestamp) -> Vec<Event> {
        if !self.status.is_live() {
            return Vec::new();
        }
        let before = self.live_users();
        self.finish(CallStatus::Ended, why, None, before, now)
    }

    /// Every participant still in (or being rung for) the call.
    fn live_users(&self) -> Vec<Uuid> {
        self.participants
            .iter()
            .filter(|p| p.status.is_live())
            .map(|p| p.user.id)
            .collect()
    }

    /// Ends the call if the rules say so (see the module doc), returning `call:ended`.
    fn settle(&mut self, actor: Option<Uuid>, now: Timestamp) -> Vec<Event> {
        if !self.status.is_live() {
            return Vec::new();
        }
        let joined = self.count(|s| s == ParticipantStatus::Joined);
        let pending = self.count(ParticipantStatus::is_pending);
        let before = self.live_users();
        let mut to = before.clone();
        if let Some(actor) = actor {
            if !to.contains(&actor) {
                to.push(actor);
            }
        }
        if self.status == CallStatus::Active {
            if joined < 2 {
                return self.finish(CallStatus::Ended, EndReason::EndedByUser, actor, to, now);
            }
        } else if joined == 0 {
            // The initiator left before anyone answered.
            return self.finish(CallStatus::Ended, EndReason::Cancelled, actor, to, now);
        } else if pending == 0 {
            let all_rejected = self
                .invitees()
                .all(|p| p.status == ParticipantStatus::Rejected);
            let (status, why) = if all_rejected {
                (CallStatus::Rejected, EndReason::Rejected)
            } else {
                (CallStatus::Missed, EndReason::NoAnswer)
            };
            return self.finish(status, why, actor, to, now);
        }
        Vec::new()
    }

    /// The call is over: joined participants leave, pending ones miss it; `call:ended` to `to`.
    fn finish(
        &mut self,
        status: CallStatus,
        why: EndReason,
        ended_by: Option<Uuid>,
        to: Vec<Uuid>,
        now: Timestamp,
    ) -> Vec<Event> {
        for p in &mut self.participants {
            match p.status {
                ParticipantStatus::Joined => p.set(ParticipantStatus::Left, now),
                s if s.is_pending() => p.set(ParticipantStatus::Missed, now),
                _ => {}
            }
        }
        self.status = status;
        self.ended_at = Some(now);
        self.duration_seconds = Some(self.started_at.map_or(0, |s| now.seconds_since(s)));
        self.end_reason = Some(why);
        self.updated_at = now;
        vec![Event {
            to,
            payload: Payload::Ended(event::Ended {
                call_id: self.id,
                reason: why.as_str(),
                ended_by,
            }),
        }]
    }
}

#[cfg(test)]
#[path = "call_tests/mod.rs"]
pub(crate) mod tests;
