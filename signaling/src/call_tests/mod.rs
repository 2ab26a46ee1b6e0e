//! Unit tests of the call state machine: every transition from a fixed clock, with the
//! statuses, timestamps, end reasons and the exact events (and recipients) it produces.
//!
//! Layout: this file holds the fixed clock, the cast and the assertions the tests share;
//! `lifecycle` tests how a call starts, rings, is answered, rejected and ended (1:1 calls, the ring
//! timeout, the server's end); `group` the group calls; `media_wire` media changes and the events
//! and statuses on the wire.

use super::*;

use std::fmt;
use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

// Participants' statuses are written bare; the call's are spelled `CallStatus::…`.
use super::ParticipantStatus::{Invited, Joined, Left, Missed, Rejected, Ringing};
use crate::event::{self, Event, Payload};
use crate::time::Timestamp;

mod group;
mod lifecycle;
mod media_wire;

/// The clock every test starts at (2023-11-14T22:13:20.000Z); the service's tests start there
/// too, with the same ring timeout, conversation and cast.
pub(crate) const T0: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);
pub(crate) const RING_TIMEOUT: Duration = Duration::from_secs(30);

const CALL_ID: Uuid = Uuid::from_u128(0xca11);
pub(crate) const CONVERSATION_ID: Uuid = Uuid::from_u128(0xc0);

pub(crate) const ALICE: Uuid = Uuid::from_u128(1);
pub(crate) const BOB: Uuid = Uuid::from_u128(2);
const CAROL: Uuid = Uuid::from_u128(3);
const DAVE: Uuid = Uuid::from_u128(4);
/// Never part of any call.
const EVE: Uuid = Uuid::from_u128(99);

/// The participants of the calls below, in their order: Alice, who calls, then her invitees.
const CAST: [Uuid; 4] = [ALICE, BOB, CAROL, DAVE];

const NO_MEDIA_CHANGE: MediaChange = MediaChange {
    audio_enabled: None,
    video_enabled: None,
    screen_sharing: None,
};

/// A transition a user makes that returns only its events (end, connection lost...).
type Act = fn(&mut Call, Uuid, Timestamp) -> Result<Vec<Event>, Refusal>;

/// `T0` plus whole seconds.
fn at(secs: u64) -> Timestamp {
    T0 + Duration::from_secs(secs)
}

/// `T0` plus milliseconds.
fn at_ms(ms: u64) -> Timestamp {
    T0 + Duration::from_millis(ms)
}

/// The id the counter hands the `n`th participant created (1-based).
fn participant_id(n: u128) -> Uuid {
    Uuid::from_u128(0x1000 + n)
}

fn user(id: Uuid) -> User {
    let n = id.as_u128();
    User {
        id,
        name: Some(format!("User {n}")),
        email: Some(format!("user{n}@example.test")),
    }
}

fn try_initiate(
    initiator: Uuid,
    invitees: &[Uuid],
    max_participants: usize,
) -> Result<(Call, Vec<Event>), InitiateError> {
    let mut n = 0u128;
    Call::initiate(
        CALL_ID,
        CONVERSATION_ID,
        CallType::Video,
        user(initiator),
        invitees.iter().copied().map(user).collect(),
        max_participants,
        move || {
            n += 1;
            participant_id(n)
        },
        T0,
    )
}

/// A call started at `T0`, its `call:incoming` dropped.
fn new_call(initiator: Uuid, invitees: &[Uuid]) -> Call {
    try_initiate(initiator, invitees, 8).expect("initiate").0
}

/// Alice calls Bob.
fn one_to_one() -> Call {
    new_call(ALICE, &[BOB])
}

/// Alice calls Bob, Carol and Dave.
fn group() -> Call {
    new_call(ALICE, &[BOB, CAROL, DAVE])
}

/// Alice's group call once Bob has answered (at 5 s) and Carol (at 6 s); Dave is still invited.
fn active_group() -> Call {
    let mut call = group();
    call.answer(BOB, at(5)).unwrap();
    call.answer(CAROL, at(6)).unwrap();
    call
}

/// `call` once every invitee's phone has rung, at 1 s.
fn rung(mut call: Call) -> Call {
    let invitees: Vec<Uuid> = call.invitees().map(|p| p.user.id).collect();
    for who in invitees {
        assert!(call.ring(who, at(1)), "{who} rings");
    }
    call
}

fn part(call: &Call, id: Uuid) -> &Participant {
    call.participant(id).expect("a participant")
}

fn status_of(call: &Call, id: Uuid) -> ParticipantStatus {
    part(call, id).status
}

/// Every participant's status, in the call's order.
fn statuses(call: &Call) -> Vec<(Uuid, ParticipantStatus)> {
    call.participants
        .iter()
        .map(|p| (p.user.id, p.status))
        .collect()
}

fn sorted(ids: &[Uuid]) -> Vec<Uuid> {
    let mut v = ids.to_vec();
    v.sort();
    v
}

/// The events with each recipient list sorted, to compare as sets (duplicates still show).
fn norm(events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .map(|e| Event {
            to: sorted(&e.to),
            payload: e.payload.clone(),
        })
        .collect()
}

#[track_caller]
fn assert_events(actual: &[Event], expected: &[Event]) {
    assert_eq!(norm(actual), norm(expected));
}

/// Asserts the only event is `call:ended` for `reason`, ended by `by` (`None`: by the server),
/// sent to `to`.
#[track_caller]
fn assert_ended_event(events: &[Event], reason: EndReason, by: Option<Uuid>, to: &[Uuid]) {
    assert_events(events, &[ended(reason.as_str(), by, to)]);
}

fn ended(reason: &'static str, ended_by: Option<Uuid>, to: &[Uuid]) -> Event {
    Event {
        to: to.to_vec(),
        payload: Payload::Ended(event::Ended {
            call_id: CALL_ID,
            reason,
            ended_by,
        }),
    }
}

fn left(who: Uuid, reason: &'static str, to: &[Uuid]) -> Event {
    Event {
        to: to.to_vec(),
        payload: Payload::ParticipantLeft(event::ParticipantLeft {
            call_id: CALL_ID,
            user_id: who,
            reason,
        }),
    }
}

fn joined(who: Uuid, to: &[Uuid]) -> Event {
    let u = user(who);
    Event {
        to: to.to_vec(),
        payload: Payload::ParticipantJoined(event::ParticipantJoined {
            call_id: CALL_ID,
            user_id: who,
            user_name: u.name,
            user_identifier: u.email,
        }),
    }
}

fn media(who: Uuid, media_state: MediaState, to: &[Uuid]) -> Event {
    Event {
        to: to.to_vec(),
        payload: Payload::MediaStateChanged(event::MediaStateChanged {
            call_id: CALL_ID,
            user_id: who,
            media_state,
        }),
    }
}

/// A media change of the audio flag alone.
fn audio(enabled: bool) -> MediaChange {
    MediaChange {
        audio_enabled: Some(enabled),
        ..NO_MEDIA_CHANGE
    }
}

/// A media change of the video flag alone.
fn video(enabled: bool) -> MediaChange {
    MediaChange {
        video_enabled: Some(enabled),
        ..NO_MEDIA_CHANGE
    }
}

/// A media change of the screen-sharing flag alone.
fn screen(sharing: bool) -> MediaChange {
    MediaChange {
        screen_sharing: Some(sharing),
        ..NO_MEDIA_CHANGE
    }
}

/// A media state: (audio enabled, video enabled, screen sharing).
fn media_state(audio_enabled: bool, video_enabled: bool, screen_sharing: bool) -> MediaState {
    MediaState {
        audio_enabled,
        video_enabled,
        screen_sharing,
    }
}

#[track_caller]
fn assert_conflict<T: fmt::Debug>(r: Result<T, Refusal>) {
    match r {
        Err(Refusal::Conflict(msg)) => assert!(!msg.is_empty()),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// Asserts `transition` is refused as a conflict and leaves the call as it was.
#[track_caller]
fn assert_conflict_unchanged<T: fmt::Debug>(
    call: &mut Call,
    transition: impl FnOnce(&mut Call) -> Result<T, Refusal>,
) {
    let before = call.clone();
    assert_conflict(transition(call));
    assert_eq!(*call, before);
}

/// Asserts `transition` is refused with `refusal` and leaves the call as it was.
#[track_caller]
fn assert_refused_unchanged<T: fmt::Debug + PartialEq>(
    call: &mut Call,
    refusal: Refusal,
    transition: impl FnOnce(&mut Call) -> Result<T, Refusal>,
) {
    let before = call.clone();
    assert_eq!(transition(call), Err(refusal));
    assert_eq!(*call, before);
}

/// Asserts ringing `who` at `now` does nothing: `ring` says so and the call is as it was.
#[track_caller]
fn assert_ring_ignored(call: &mut Call, who: Uuid, now: Timestamp) {
    let before = call.clone();
    assert!(!call.ring(who, now), "{who} rang");
    assert_eq!(*call, before);
}

/// Asserts the call is over with these fields.
#[track_caller]
fn assert_over(
    call: &Call,
    status: CallStatus,
    reason: EndReason,
    ended_at: Timestamp,
    duration_seconds: u64,
) {
    assert_eq!(call.status, status);
    assert!(!call.status.is_live());
    assert_eq!(call.end_reason, Some(reason));
    assert_eq!(call.ended_at, Some(ended_at));
    assert_eq!(call.duration_seconds, Some(duration_seconds));
    assert_eq!(call.updated_at, ended_at);
    assert_eq!(call.ring_deadline(RING_TIMEOUT), None);
}

/// Asserts the call is live: nothing of an ending set.
#[track_caller]
fn assert_live(call: &Call, status: CallStatus) {
    assert_eq!(call.status, status);
    assert!(call.status.is_live());
    assert_eq!(call.end_reason, None);
    assert_eq!(call.ended_at, None);
    assert_eq!(call.duration_seconds, None);
}

/// Asserts the call's participants are the first of [`CAST`] (Alice, then Bob, Carol and Dave,
/// in that order), with these statuses.
#[track_caller]
fn assert_statuses<const N: usize>(call: &Call, expected: [ParticipantStatus; N]) {
    assert!(N <= CAST.len(), "the cast has {} members", CAST.len());
    let expected: Vec<(Uuid, ParticipantStatus)> = CAST.into_iter().zip(expected).collect();
    assert_eq!(statuses(call), expected);
}

/// Asserts a participant's join and leave times.
#[track_caller]
fn assert_times(call: &Call, id: Uuid, joined_at: Option<Timestamp>, left_at: Option<Timestamp>) {
    let p = part(call, id);
    assert_eq!(p.joined_at, joined_at, "joined_at of {id}");
    assert_eq!(p.left_at, left_at, "left_at of {id}");
}
