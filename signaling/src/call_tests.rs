//! Unit tests of the call state machine: every transition from a fixed clock, with the
//! statuses, timestamps, end reasons and the exact events (and recipients) it produces.

use super::*;

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

// Participants' statuses are written bare; the call's are spelled `CallStatus::…`.
use super::ParticipantStatus::{Invited, Joined, Left, Missed, Rejected, Ringing};
use crate::event::{self, Event, Payload};
use crate::time::Timestamp;

/// The clock every test starts at (2023-11-14T22:13:20.000Z).
const T0: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);
const RING_TIMEOUT: Duration = Duration::from_secs(30);

const CALL_ID: Uuid = Uuid::from_u128(0xca11);
const CONVERSATION_ID: Uuid = Uuid::from_u128(0xc0);

const ALICE: Uuid = Uuid::from_u128(1);
const BOB: Uuid = Uuid::from_u128(2);
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
fn assert_ended_event(events: &[Event], reason: &'static str, by: Option<Uuid>, to: &[Uuid]) {
    assert_events(events, &[ended(reason, by, to)]);
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
    reason: &str,
    ended_at: Timestamp,
    duration_seconds: u64,
) {
    assert_eq!(call.status, status);
    assert!(!call.status.is_live());
    assert_eq!(call.end_reason.as_deref(), Some(reason));
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

// ---------------------------------------------------------------------------------------------
// initiate

#[test]
fn initiate_joins_the_initiator_and_invites_the_invitees() {
    let (call, _) = try_initiate(ALICE, &[BOB, CAROL], 8).unwrap();
    assert_eq!(call.id, CALL_ID);
    assert_eq!(call.conversation_id, CONVERSATION_ID);
    assert_eq!(call.kind, CallType::Video);
    assert_eq!(call.initiated_by, ALICE);
    assert_live(&call, CallStatus::Initiated);
    assert_eq!(call.started_at, None);
    assert_eq!(call.quality_stats, None);
    assert_eq!(call.created_at, T0);
    assert_eq!(call.updated_at, T0);
    assert!(!call.is_one_to_one());
    assert_statuses(&call, [Joined, Invited, Invited]);
    // The counter hands out ids in order, the initiator's first.
    let ids: Vec<Uuid> = call.participants.iter().map(|p| p.id).collect();
    assert_eq!(ids, (1..=3).map(participant_id).collect::<Vec<_>>());
    assert_times(&call, ALICE, Some(T0), None);
    assert_times(&call, BOB, None, None);
    assert_times(&call, CAROL, None, None);
    for p in &call.participants {
        assert_eq!(p.user, user(p.user.id));
        assert_eq!(p.media_state, MediaState::default());
        assert_eq!(p.connection_quality, None);
        assert_eq!(p.created_at, T0);
        assert_eq!(p.updated_at, T0);
    }
    let invitees: Vec<Uuid> = call.invitees().map(|p| p.user.id).collect();
    assert_eq!(invitees, vec![BOB, CAROL]);
    assert!(call.participant(EVE).is_none());
    assert_eq!(call.ring_deadline(RING_TIMEOUT), Some(at(30)));
}

#[test]
fn initiate_sends_call_incoming_to_the_invitees_only() {
    let (call, events) = try_initiate(ALICE, &[CAROL, BOB], 8).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name(), "call:incoming");
    assert_eq!(sorted(&events[0].to), vec![BOB, CAROL]);
    let Payload::Incoming(incoming) = &events[0].payload else {
        panic!("expected call:incoming, got {:?}", events[0].payload);
    };
    assert_eq!(incoming.call_id, CALL_ID);
    assert_eq!(incoming.conversation_id, CONVERSATION_ID);
    assert_eq!(incoming.kind, CallType::Video);
    assert_eq!(incoming.initiated_by, ALICE);
    // Everyone, the initiator first, then the invitees in the order given.
    let ids: Vec<Uuid> = incoming.participants.iter().map(|v| v.user_id).collect();
    assert_eq!(ids, vec![ALICE, CAROL, BOB]);
    let views: Vec<ParticipantView> = call.participants.iter().map(Participant::view).collect();
    assert_eq!(incoming.participants, views);
    assert_eq!(
        incoming.participants[0],
        ParticipantView {
            user_id: ALICE,
            user_name: Some("User 1".into()),
            user_identifier: Some("user1@example.test".into()),
            status: Joined,
            joined_at: Some(T0),
            left_at: None,
            media_state: MediaState::default(),
            connection_quality: None,
        }
    );
    assert_eq!(incoming.participants[1].status, Invited);
    assert_eq!(incoming.participants[1].joined_at, None);
}

#[test]
fn initiate_drops_duplicate_invitees() {
    let (call, events) = try_initiate(ALICE, &[BOB, CAROL, BOB, CAROL, BOB], 8).unwrap();
    assert_statuses(&call, [Joined, Invited, Invited]);
    assert_eq!(events.len(), 1);
    assert_eq!(sorted(&events[0].to), vec![BOB, CAROL]);

    // A duplicated single invitee makes a 1:1 call.
    let (call, events) = try_initiate(ALICE, &[BOB, BOB], 8).unwrap();
    assert!(call.is_one_to_one());
    assert_eq!(call.participants.len(), 2);
    assert_eq!(events[0].to, vec![BOB]);
}

/// The caller among the invitees (a client inviting every member of the conversation) is
/// dropped, as duplicates are; with nobody else left there is nobody to call.
#[test]
fn initiate_ignores_the_initiator_among_invitees() {
    let (call, events) = try_initiate(ALICE, &[BOB, ALICE, CAROL, ALICE], 8).unwrap();
    assert_statuses(&call, [Joined, Invited, Invited]);
    assert_eq!(call.participants[0].user.id, ALICE);
    assert_eq!(sorted(&events[0].to), vec![BOB, CAROL]);
    let (call, _) = try_initiate(ALICE, &[ALICE, BOB], 8).unwrap();
    assert!(call.is_one_to_one());
    // The initiator does not count twice against the limit.
    assert!(try_initiate(ALICE, &[ALICE, BOB, CAROL], 3).is_ok());
    for invitees in [&[ALICE][..], &[ALICE, ALICE]] {
        let refused = try_initiate(ALICE, invitees, 8).unwrap_err();
        assert_eq!(refused, InitiateError::NoInvitees, "{invitees:?}");
    }
}

#[test]
fn initiate_refuses_no_invitees() {
    let refused = try_initiate(ALICE, &[], 8).unwrap_err();
    assert_eq!(refused, InitiateError::NoInvitees);
}

#[test]
fn initiate_counts_the_initiator_in_max_participants() {
    let (call, _) = try_initiate(ALICE, &[BOB, CAROL], 3).unwrap();
    assert_eq!(call.participants.len(), 3);

    let err = try_initiate(ALICE, &[BOB, CAROL, DAVE], 3).unwrap_err();
    assert_eq!(err, InitiateError::TooMany { count: 4, max: 3 });
    assert_eq!(
        err.to_string(),
        "participantIds: 4 participants with the caller; at most 3 per call"
    );

    // Duplicates are dropped before counting.
    let (call, _) = try_initiate(ALICE, &[BOB, CAROL, BOB], 3).unwrap();
    assert_eq!(call.participants.len(), 3);

    // A 1:1 call needs room for two.
    assert!(try_initiate(ALICE, &[BOB], 2).is_ok());
    let err = try_initiate(ALICE, &[BOB], 1).unwrap_err();
    assert_eq!(err, InitiateError::TooMany { count: 2, max: 1 });
}

// ---------------------------------------------------------------------------------------------
// ring

#[test]
fn ring_moves_an_invitee_to_ringing_and_the_call_to_ringing() {
    let mut call = group();
    assert!(call.ring(BOB, at(1)));
    assert_live(&call, CallStatus::Ringing);
    assert_eq!(call.updated_at, at(1));
    assert_eq!(status_of(&call, BOB), Ringing);
    assert_eq!(part(&call, BOB).updated_at, at(1));
    assert_times(&call, BOB, None, None);
    assert_eq!(status_of(&call, CAROL), Invited);

    assert!(call.ring(CAROL, at(2)));
    assert_live(&call, CallStatus::Ringing);
    assert_eq!(call.updated_at, at(2));
    assert_statuses(&call, [Joined, Ringing, Ringing, Invited]);
    assert_eq!(call.started_at, None);
    // Ringing does not move the deadline: it counts from the call's creation.
    assert_eq!(call.ring_deadline(RING_TIMEOUT), Some(at(30)));
}

#[test]
fn ring_is_idempotent() {
    let mut call = one_to_one();
    assert!(call.ring(BOB, at(1)));
    assert_ring_ignored(&mut call, BOB, at(2));
}

#[test]
fn ring_ignores_the_initiator_strangers_and_joined_participants() {
    let mut call = one_to_one();
    assert_ring_ignored(&mut call, ALICE, at(1));
    assert_ring_ignored(&mut call, EVE, at(1));

    call.answer(BOB, at(2)).unwrap();
    assert_ring_ignored(&mut call, BOB, at(3));
    assert_eq!(call.status, CallStatus::Active);
}

#[test]
fn ring_does_nothing_on_an_ended_call() {
    let mut call = group();
    call.end_by_server(reason::SERVER_SHUTDOWN, at(1));
    for who in [ALICE, BOB, CAROL, DAVE, EVE] {
        assert_ring_ignored(&mut call, who, at(2));
    }

    // Even an invitation still marked invited is not rung once the call is over.
    let mut call = one_to_one();
    call.status = CallStatus::Ended;
    assert_ring_ignored(&mut call, BOB, at(2));
}

#[test]
fn ring_during_an_active_group_call_keeps_it_active() {
    let mut call = group();
    call.answer(BOB, at(3)).unwrap();
    assert!(call.ring(CAROL, at(4)));
    assert_live(&call, CallStatus::Active);
    assert_eq!(status_of(&call, CAROL), Ringing);
    assert_eq!(call.started_at, Some(at(3)));
}

// ---------------------------------------------------------------------------------------------
// 1:1 calls

#[test]
fn one_to_one_answer_activates_the_call_and_tells_the_initiator() {
    let mut call = rung(one_to_one());
    let events = call.answer(BOB, at(5)).unwrap();
    assert_events(&events, &[joined(BOB, &[ALICE])]);
    assert_eq!(events[0].name(), "call:participant-joined");
    assert_live(&call, CallStatus::Active);
    assert_eq!(call.started_at, Some(at(5)));
    assert_eq!(call.updated_at, at(5));
    assert_statuses(&call, [Joined, Joined]);
    assert_times(&call, ALICE, Some(T0), None);
    assert_times(&call, BOB, Some(at(5)), None);
    assert_eq!(part(&call, BOB).updated_at, at(5));
    assert_eq!(call.ring_deadline(RING_TIMEOUT), None);
}

#[test]
fn one_to_one_answer_straight_from_invited() {
    let mut call = one_to_one();
    let events = call.answer(BOB, at(2)).unwrap();
    assert_events(&events, &[joined(BOB, &[ALICE])]);
    assert_live(&call, CallStatus::Active);
    assert_eq!(call.started_at, Some(at(2)));
    assert_eq!(status_of(&call, BOB), Joined);
}

#[test]
fn answering_twice_is_a_conflict() {
    let mut call = one_to_one();
    call.answer(BOB, at(5)).unwrap();
    assert_conflict_unchanged(&mut call, |c| c.answer(BOB, at(6)));
}

#[test]
fn only_invitees_can_answer_or_reject() {
    let mut call = rung(one_to_one());
    for who in [ALICE, EVE] {
        assert_refused_unchanged(&mut call, Refusal::NotInvited, |c| c.answer(who, at(2)));
        assert_refused_unchanged(&mut call, Refusal::NotInvited, |c| c.reject(who, at(2)));
    }
}

#[test]
fn one_to_one_end_by_either_side_ends_the_call() {
    for ender in [ALICE, BOB] {
        let mut call = rung(one_to_one());
        call.answer(BOB, at(5)).unwrap();
        let events = call.end(ender, at(125)).unwrap();
        let reason = reason::ENDED_BY_USER;
        assert_ended_event(&events, reason, Some(ender), &[ALICE, BOB]);
        assert_over(&call, CallStatus::Ended, reason, at(125), 120);
        assert_eq!(call.started_at, Some(at(5)));
        assert_statuses(&call, [Left, Left]);
        assert_times(&call, ALICE, Some(T0), Some(at(125)));
        assert_times(&call, BOB, Some(at(5)), Some(at(125)));
    }
}

#[test]
fn duration_counts_whole_seconds_from_the_first_answer() {
    let mut call = one_to_one();
    call.answer(BOB, at(10)).unwrap();
    // 120.999 s after the answer, 130.999 s after the call was created.
    let end = at_ms(130_999);
    call.end(ALICE, end).unwrap();
    assert_over(&call, CallStatus::Ended, reason::ENDED_BY_USER, end, 120);
}

#[test]
fn one_to_one_initiator_hanging_up_before_an_answer_cancels() {
    let mut call = rung(one_to_one());
    let events = call.end(ALICE, at(10)).unwrap();
    assert_ended_event(&events, reason::CANCELLED, Some(ALICE), &[ALICE, BOB]);
    assert_over(&call, CallStatus::Ended, reason::CANCELLED, at(10), 0);
    assert_eq!(call.started_at, None);
    assert_statuses(&call, [Left, Missed]);
    assert_times(&call, ALICE, Some(T0), Some(at(10)));
    assert_times(&call, BOB, None, None);
    assert_eq!(part(&call, BOB).updated_at, at(10));
}

#[test]
fn one_to_one_invitee_cannot_end_before_answering() {
    // Invited, then ringing: either way they must reject instead.
    let mut call = one_to_one();
    assert_conflict_unchanged(&mut call, |c| c.end(BOB, at(1)));

    call.ring(BOB, at(2));
    assert_conflict_unchanged(&mut call, |c| c.end(BOB, at(3)));
}

#[test]
fn one_to_one_reject_rejects_the_call() {
    let mut call = rung(one_to_one());
    let events = call.reject(BOB, at(3)).unwrap();
    assert_ended_event(&events, reason::REJECTED, Some(BOB), &[ALICE, BOB]);
    assert_over(&call, CallStatus::Rejected, reason::REJECTED, at(3), 0);
    assert_eq!(call.started_at, None);
    assert_statuses(&call, [Left, Rejected]);
    assert_times(&call, ALICE, Some(T0), Some(at(3)));
    assert_times(&call, BOB, None, None);
    assert_eq!(part(&call, BOB).updated_at, at(3));
}

#[test]
fn one_to_one_reject_straight_from_invited() {
    let mut call = one_to_one();
    let events = call.reject(BOB, at(2)).unwrap();
    assert_ended_event(&events, reason::REJECTED, Some(BOB), &[ALICE, BOB]);
    assert_over(&call, CallStatus::Rejected, reason::REJECTED, at(2), 0);
}

#[test]
fn reject_after_answering_is_a_conflict() {
    let mut call = one_to_one();
    call.answer(BOB, at(5)).unwrap();
    assert_conflict_unchanged(&mut call, |c| c.reject(BOB, at(6)));
}

/// 1:1 calls ended each way the state machine can end them.
fn ended_one_to_one_calls() -> Vec<(&'static str, Call)> {
    let mut by_user = one_to_one();
    by_user.answer(BOB, at(5)).unwrap();
    by_user.end(BOB, at(65)).unwrap();

    let mut cancelled = rung(one_to_one());
    cancelled.end(ALICE, at(4)).unwrap();

    let mut rejected = rung(one_to_one());
    rejected.reject(BOB, at(4)).unwrap();

    let mut missed = rung(one_to_one());
    assert!(!missed.expire_ringing(RING_TIMEOUT, at(30)).is_empty());

    let mut by_server = one_to_one();
    by_server.answer(BOB, at(5)).unwrap();
    by_server.end_by_server(reason::SERVER_RESTART, at(9));

    vec![
        ("ended-by-user", by_user),
        ("cancelled", cancelled),
        ("rejected", rejected),
        ("missed", missed),
        ("server", by_server),
    ]
}

#[test]
fn an_ended_call_refuses_every_transition() {
    for (how, mut call) in ended_one_to_one_calls() {
        assert!(!call.status.is_live(), "{how}");
        let before = call.clone();
        let later = at(100);
        assert_conflict(call.answer(BOB, later));
        assert_conflict(call.reject(BOB, later));
        for who in [ALICE, BOB] {
            assert_conflict(call.end(who, later));
            assert_conflict(call.set_media(who, NO_MEDIA_CHANGE, later));
        }
        // Strangers are refused as such first; the initiator, who left, finds it over.
        assert_conflict(call.answer(ALICE, later));
        assert_eq!(call.answer(EVE, later), Err(Refusal::NotInvited));
        assert_eq!(call.end(EVE, later), Err(Refusal::NotParticipant));
        assert!(!call.ring(BOB, later));
        assert!(call.expire_ringing(RING_TIMEOUT, later).is_empty());
        let shutdown = call.end_by_server(reason::SERVER_SHUTDOWN, later);
        assert!(shutdown.is_empty());
        assert_eq!(call.ring_deadline(RING_TIMEOUT), None, "{how}");
        assert_eq!(call, before, "{how}");
    }
}

#[test]
fn one_to_one_cannot_be_rejoined() {
    for (how, mut call) in ended_one_to_one_calls() {
        let before = call.clone();
        assert_conflict(call.answer(BOB, at(200)));
        assert_eq!(call, before, "{how}");
    }
}

#[test]
fn end_by_a_stranger_is_refused() {
    let mut call = one_to_one();
    call.answer(BOB, at(5)).unwrap();
    assert_refused_unchanged(&mut call, Refusal::NotParticipant, |c| c.end(EVE, at(6)));
}

// ---------------------------------------------------------------------------------------------
// group calls: Alice, with Bob, Carol and Dave invited

#[test]
fn group_first_answer_sets_started_at_once() {
    let mut call = rung(group());
    let events = call.answer(BOB, at(5)).unwrap();
    // Everyone else still in the call hears it, the invitees still ringing included.
    assert_events(&events, &[joined(BOB, &[ALICE, CAROL, DAVE])]);
    assert_live(&call, CallStatus::Active);
    assert_eq!(call.started_at, Some(at(5)));

    let events = call.answer(CAROL, at(9)).unwrap();
    assert_events(&events, &[joined(CAROL, &[ALICE, BOB, DAVE])]);
    assert_live(&call, CallStatus::Active);
    assert_eq!(call.started_at, Some(at(5)));
    assert_eq!(call.updated_at, at(9));
    assert_statuses(&call, [Joined, Joined, Joined, Ringing]);
    assert_times(&call, BOB, Some(at(5)), None);
    assert_times(&call, CAROL, Some(at(9)), None);
    // Dave is still being rung.
    assert_eq!(call.ring_deadline(RING_TIMEOUT), Some(at(30)));
}

#[test]
fn group_reject_marks_only_that_participant() {
    let mut call = rung(group());
    let events = call.reject(CAROL, at(4)).unwrap();
    assert_events(
        &events,
        &[left(CAROL, "rejected", &[ALICE, BOB, DAVE, CAROL])],
    );
    assert_eq!(events[0].name(), "call:participant-left");
    assert_live(&call, CallStatus::Ringing);
    assert_eq!(call.updated_at, at(4));
    assert_statuses(&call, [Joined, Ringing, Rejected, Ringing]);
    assert_times(&call, CAROL, None, None);
    assert_eq!(call.ring_deadline(RING_TIMEOUT), Some(at(30)));

    // Rejecting twice is a conflict.
    assert_conflict_unchanged(&mut call, |c| c.reject(CAROL, at(5)));
}

#[test]
fn group_reject_in_an_active_call_keeps_it_active() {
    let mut call = group();
    call.answer(BOB, at(5)).unwrap();
    call.ring(CAROL, at(6));
    let events = call.reject(CAROL, at(7)).unwrap();
    assert_events(
        &events,
        &[left(CAROL, "rejected", &[ALICE, BOB, DAVE, CAROL])],
    );
    assert_live(&call, CallStatus::Active);
    assert_eq!(call.started_at, Some(at(5)));
    assert_eq!(status_of(&call, CAROL), Rejected);
}

#[test]
fn group_all_invitees_rejecting_rejects_the_call() {
    let mut call = rung(group());
    let events = call.reject(BOB, at(2)).unwrap();
    assert_events(
        &events,
        &[left(BOB, "rejected", &[ALICE, CAROL, DAVE, BOB])],
    );
    let events = call.reject(CAROL, at(3)).unwrap();
    assert_events(&events, &[left(CAROL, "rejected", &[ALICE, DAVE, CAROL])]);
    assert_live(&call, CallStatus::Ringing);

    let events = call.reject(DAVE, at(4)).unwrap();
    assert_over(&call, CallStatus::Rejected, reason::REJECTED, at(4), 0);
    assert_eq!(call.started_at, None);
    assert_statuses(&call, [Left, Rejected, Rejected, Rejected]);
    assert_times(&call, ALICE, Some(T0), Some(at(4)));
    // Whatever else is sent, the call ends for Alice and for Dave's other devices.
    let last = events.last().expect("events");
    let last = std::slice::from_ref(last);
    assert_ended_event(last, reason::REJECTED, Some(DAVE), &[ALICE, DAVE]);
}

/// The last rejection ends the call: `call:ended` says it all, as when the last but one leaves
/// a group call (`end`), when the ring timeout ends one, and when the invitee of a 1:1 call
/// rejects it. `call:participant-left` is for "a call that goes on without someone" (event.rs).
#[test]
fn group_last_reject_sends_only_call_ended() {
    let mut call = rung(group());
    call.reject(BOB, at(2)).unwrap();
    call.reject(CAROL, at(3)).unwrap();
    let events = call.reject(DAVE, at(4)).unwrap();
    assert_ended_event(&events, reason::REJECTED, Some(DAVE), &[ALICE, DAVE]);
}

#[test]
fn group_some_rejected_then_the_ring_timeout_is_missed() {
    let mut call = rung(group());
    call.reject(BOB, at(2)).unwrap();
    let deadline = call.ring_deadline(RING_TIMEOUT).unwrap();
    assert_eq!(deadline, at(30));
    let events = call.expire_ringing(RING_TIMEOUT, deadline);
    assert_ended_event(&events, reason::NO_ANSWER, None, &[ALICE, CAROL, DAVE]);
    assert_over(&call, CallStatus::Missed, reason::NO_ANSWER, at(30), 0);
    assert_statuses(&call, [Left, Rejected, Missed, Missed]);
    assert_times(&call, ALICE, Some(T0), Some(at(30)));
    assert_times(&call, CAROL, None, None);
    assert_eq!(part(&call, CAROL).updated_at, at(30));
    assert_eq!(part(&call, BOB).updated_at, at(2));
}

#[test]
fn group_leaves_end_the_call_when_fewer_than_two_are_joined() {
    let mut call = rung(group());
    call.answer(BOB, at(5)).unwrap();
    call.answer(CAROL, at(6)).unwrap();

    // One of three joined leaves: the call goes on.
    let events = call.end(BOB, at(60)).unwrap();
    assert_events(&events, &[left(BOB, "left", &[ALICE, CAROL, DAVE])]);
    assert_live(&call, CallStatus::Active);
    assert_eq!(call.updated_at, at(60));
    assert_statuses(&call, [Joined, Left, Joined, Ringing]);
    assert_times(&call, BOB, Some(at(5)), Some(at(60)));

    // Leaving twice is a conflict.
    assert_conflict_unchanged(&mut call, |c| c.end(BOB, at(61)));

    // The last but one leaves: the call ends for everyone still in it, and the leaver.
    let events = call.end(CAROL, at(65)).unwrap();
    let reason = reason::ENDED_BY_USER;
    assert_ended_event(&events, reason, Some(CAROL), &[ALICE, CAROL, DAVE]);
    assert_over(&call, CallStatus::Ended, reason, at(65), 60);
    assert_eq!(call.started_at, Some(at(5)));
    assert_statuses(&call, [Left, Left, Left, Missed]);
    assert_times(&call, ALICE, Some(T0), Some(at(65)));
    // Bob's leave time is kept.
    assert_times(&call, BOB, Some(at(5)), Some(at(60)));
    assert_times(&call, CAROL, Some(at(6)), Some(at(65)));
    assert_times(&call, DAVE, None, None);
}

#[test]
fn a_lost_connection_ends_a_one_to_one_call_whoever_lost_it() {
    for lost in [ALICE, BOB] {
        let mut call = rung(one_to_one());
        call.answer(BOB, at(5)).unwrap();
        let events = call.connection_lost(lost, at(65)).unwrap();
        let reason = reason::CONNECTION_LOST;
        assert_ended_event(&events, reason, Some(lost), &[ALICE, BOB]);
        assert_over(&call, CallStatus::Ended, reason, at(65), 60);
        assert_statuses(&call, [Left, Left]);
    }
    // Before the answer too: the caller's devices are all gone.
    let mut call = rung(one_to_one());
    let events = call.connection_lost(ALICE, at(8)).unwrap();
    assert_ended_event(&events, reason::CONNECTION_LOST, Some(ALICE), &[ALICE, BOB]);
    assert_statuses(&call, [Left, Missed]);
}

#[test]
fn a_lost_connection_takes_one_participant_out_of_a_group_call() {
    let mut call = rung(group());
    call.answer(BOB, at(5)).unwrap();
    call.answer(CAROL, at(6)).unwrap();
    let events = call.connection_lost(BOB, at(40)).unwrap();
    assert_events(&events, &[left(BOB, "disconnected", &[ALICE, CAROL, DAVE])]);
    assert_live(&call, CallStatus::Active);
    assert_statuses(&call, [Joined, Left, Joined, Ringing]);
    // Only joined participants can lose a call; a pending invitee is rung until the timeout.
    assert_conflict_unchanged(&mut call, |c| c.connection_lost(DAVE, at(41)));
    assert_conflict_unchanged(&mut call, |c| c.connection_lost(BOB, at(41)));
    assert_refused_unchanged(&mut call, Refusal::NotParticipant, |c| {
        c.connection_lost(EVE, at(41))
    });
    // The last but one: the call ends.
    let events = call.connection_lost(CAROL, at(50)).unwrap();
    assert_ended_event(
        &events,
        reason::ENDED_BY_USER,
        Some(CAROL),
        &[ALICE, CAROL, DAVE],
    );
    assert_statuses(&call, [Left, Left, Left, Missed]);
}

#[test]
fn group_pending_invitee_cannot_end() {
    let mut call = group();
    call.answer(BOB, at(5)).unwrap();
    call.ring(DAVE, at(6));
    // Carol only invited, Dave ringing.
    assert_conflict_unchanged(&mut call, |c| c.end(CAROL, at(7)));
    assert_conflict_unchanged(&mut call, |c| c.end(DAVE, at(7)));
}

#[test]
fn group_initiator_leaving_before_an_answer_cancels() {
    let mut call = group();
    call.ring(BOB, at(1));
    call.ring(CAROL, at(1));
    let events = call.end(ALICE, at(10)).unwrap();
    assert_ended_event(&events, reason::CANCELLED, Some(ALICE), &CAST);
    assert_over(&call, CallStatus::Ended, reason::CANCELLED, at(10), 0);
    assert_eq!(call.started_at, None);
    assert_statuses(&call, [Left, Missed, Missed, Missed]);
    assert_times(&call, ALICE, Some(T0), Some(at(10)));
}

#[test]
fn group_initiator_leaving_before_an_answer_after_a_reject_cancels() {
    let mut call = rung(group());
    call.reject(BOB, at(2)).unwrap();
    let events = call.end(ALICE, at(10)).unwrap();
    let to = [ALICE, CAROL, DAVE];
    assert_ended_event(&events, reason::CANCELLED, Some(ALICE), &to);
    assert_over(&call, CallStatus::Ended, reason::CANCELLED, at(10), 0);
    assert_statuses(&call, [Left, Rejected, Missed, Missed]);
}

#[test]
fn group_initiator_leaving_an_active_call_leaves_it_to_the_others() {
    let mut call = active_group();
    let events = call.end(ALICE, at(20)).unwrap();
    assert_events(&events, &[left(ALICE, "left", &[BOB, CAROL, DAVE])]);
    assert_live(&call, CallStatus::Active);
    assert_eq!(status_of(&call, ALICE), Left);
    assert_times(&call, ALICE, Some(T0), Some(at(20)));
    // While they are joined, the initiator has nothing to answer.
    let joined_already = Refusal::Conflict("you have already joined this call".into());
    assert_refused_unchanged(&mut call, joined_already, |c| {
        c.answer(BOB, at(21)).map(|_| ())
    });
    // Having left, they may join their call again, like any participant of a group call.
    let events = call.answer(ALICE, at(30)).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name(), "call:participant-joined");
    assert_eq!(sorted(&events[0].to), vec![BOB, CAROL, DAVE]);
    assert_eq!(status_of(&call, ALICE), Joined);
    assert_times(&call, ALICE, Some(at(30)), None);
    assert_live(&call, CallStatus::Active);
    assert_eq!(call.started_at, Some(at(5)));
}

#[test]
fn group_active_call_ends_when_only_the_initiator_is_left_joined() {
    let mut call = rung(group());
    call.answer(BOB, at(5)).unwrap();
    let events = call.end(BOB, at(15)).unwrap();
    let reason = reason::ENDED_BY_USER;
    assert_ended_event(&events, reason, Some(BOB), &CAST);
    assert_over(&call, CallStatus::Ended, reason, at(15), 10);
    assert_statuses(&call, [Left, Left, Missed, Missed]);
}

/// Asserts `who`, who had left, rejected or missed the active group `call`, joins it again at
/// `now` (telling the others), keeping the call's start at 5 s.
#[track_caller]
fn assert_rejoins(call: &mut Call, who: Uuid, now: Timestamp) {
    let events = call.answer(who, now).unwrap();
    let others: Vec<Uuid> = CAST.into_iter().filter(|&u| u != who).collect();
    assert_events(&events, &[joined(who, &others)]);
    assert_live(call, CallStatus::Active);
    assert_eq!(call.started_at, Some(at(5)));
    assert_eq!(status_of(call, who), Joined);
    assert_times(call, who, Some(now), None);
}

#[test]
fn group_rejoin_after_leaving() {
    let mut call = active_group();
    call.end(BOB, at(20)).unwrap();
    assert_rejoins(&mut call, BOB, at(25));
}

#[test]
fn group_rejoin_after_rejecting() {
    let mut call = group();
    call.answer(BOB, at(5)).unwrap();
    call.reject(CAROL, at(6)).unwrap();
    assert_rejoins(&mut call, CAROL, at(10));
}

#[test]
fn group_rejoin_after_missing() {
    let mut call = active_group();
    call.ring(DAVE, at(1));
    call.expire_ringing(RING_TIMEOUT, at(30));
    assert_eq!(status_of(&call, DAVE), Missed);
    assert_rejoins(&mut call, DAVE, at(40));
}

#[test]
fn group_rejoin_is_only_for_an_active_call() {
    // Bob rejected while the call was still ringing: nobody has answered yet, so he cannot
    // change his mind.
    let mut call = rung(group());
    call.reject(BOB, at(2)).unwrap();
    assert_conflict_unchanged(&mut call, |c| c.answer(BOB, at(3)));

    // Nor once a group call is over.
    call.answer(CAROL, at(4)).unwrap();
    call.end(CAROL, at(8)).unwrap();
    assert_eq!(call.status, CallStatus::Ended);
    for who in [BOB, CAROL, DAVE] {
        assert_conflict_unchanged(&mut call, |c| c.answer(who, at(9)));
    }
}

#[test]
fn group_left_participant_cannot_reject() {
    let mut call = active_group();
    call.end(BOB, at(7)).unwrap();
    assert_conflict_unchanged(&mut call, |c| c.reject(BOB, at(8)));
}

// ---------------------------------------------------------------------------------------------
// ring timeout

#[test]
fn expire_ringing_before_the_deadline_does_nothing() {
    let mut call = rung(one_to_one());
    assert_eq!(call.ring_deadline(RING_TIMEOUT), Some(at(30)));
    let before = call.clone();
    assert!(call.expire_ringing(RING_TIMEOUT, at(1)).is_empty());
    assert!(call.expire_ringing(RING_TIMEOUT, at_ms(29_999)).is_empty());
    assert_eq!(call, before);
}

/// Asserts a 1:1 call expired at `now` was missed: Alice left then, Bob never joined.
#[track_caller]
fn assert_one_to_one_missed(call: &mut Call, now: Timestamp) {
    let events = call.expire_ringing(RING_TIMEOUT, now);
    assert_ended_event(&events, reason::NO_ANSWER, None, &[ALICE, BOB]);
    assert_over(call, CallStatus::Missed, reason::NO_ANSWER, now, 0);
    assert_statuses(call, [Left, Missed]);
    assert_times(call, ALICE, Some(T0), Some(now));
}

#[test]
fn expire_ringing_at_the_deadline_misses_a_one_to_one_call() {
    let mut call = rung(one_to_one());
    assert_one_to_one_missed(&mut call, at(30));
    assert_eq!(call.started_at, None);
    assert_times(&call, BOB, None, None);
    // It happens once.
    assert!(call.expire_ringing(RING_TIMEOUT, at(31)).is_empty());
}

#[test]
fn expire_ringing_after_the_deadline_misses_an_invitee_never_rung() {
    let mut call = one_to_one();
    assert_one_to_one_missed(&mut call, at(45));
}

#[test]
fn expire_ringing_in_an_active_group_call_misses_only_those_still_ringing() {
    let mut call = rung(group());
    call.answer(BOB, at(5)).unwrap();
    call.answer(CAROL, at(6)).unwrap();
    let events = call.expire_ringing(RING_TIMEOUT, at(31));
    // The call goes on (Dave may still join it): no `call:ended`, a `participant-left` that
    // Dave hears too, so that his ringing stops.
    let dave_missed = [left(DAVE, "missed", &[ALICE, BOB, CAROL, DAVE])];
    assert_events(&events, &dave_missed);
    assert_live(&call, CallStatus::Active);
    assert_eq!(call.updated_at, at(31));
    assert_statuses(&call, [Joined, Joined, Joined, Missed]);
    assert_times(&call, DAVE, None, None);
    assert_eq!(call.ring_deadline(RING_TIMEOUT), None);
    assert!(call.expire_ringing(RING_TIMEOUT, at(60)).is_empty());
}

#[test]
fn expire_ringing_in_an_active_group_call_with_two_still_ringing() {
    let mut call = group();
    call.ring(CAROL, at(1));
    call.answer(BOB, at(5)).unwrap();
    // Carol ringing, Dave only invited: both miss it.
    let events = call.expire_ringing(RING_TIMEOUT, at(30));
    let both_missed = [
        left(CAROL, "missed", &[ALICE, BOB, CAROL, DAVE]),
        left(DAVE, "missed", &[ALICE, BOB, CAROL, DAVE]),
    ];
    assert_events(&events, &both_missed);
    assert_live(&call, CallStatus::Active);
    assert_statuses(&call, [Joined, Joined, Missed, Missed]);
}

#[test]
fn ring_deadline_is_none_with_nobody_pending() {
    let mut call = one_to_one();
    assert_eq!(call.ring_deadline(RING_TIMEOUT), Some(at(30)));
    assert_eq!(call.ring_deadline(Duration::from_secs(45)), Some(at(45)));
    call.answer(BOB, at(5)).unwrap();
    assert_eq!(call.ring_deadline(RING_TIMEOUT), None);
    let before = call.clone();
    assert!(call.expire_ringing(RING_TIMEOUT, at(300)).is_empty());
    assert_eq!(call, before);

    // A group call everybody answered or rejected.
    let mut call = group();
    call.answer(BOB, at(2)).unwrap();
    call.answer(CAROL, at(3)).unwrap();
    assert!(call.ring_deadline(RING_TIMEOUT).is_some());
    call.reject(DAVE, at(4)).unwrap();
    assert_eq!(call.ring_deadline(RING_TIMEOUT), None);
}

// ---------------------------------------------------------------------------------------------
// media

#[test]
fn set_media_applies_only_the_flags_given() {
    let mut call = one_to_one();
    call.answer(BOB, at(5)).unwrap();

    let (state, events) = call.set_media(ALICE, audio(false), at(10)).unwrap();
    let expected = media_state(false, true, false);
    assert_eq!(state, expected);
    assert_eq!(part(&call, ALICE).media_state, expected);
    assert_eq!(part(&call, ALICE).updated_at, at(10));
    assert_eq!(call.updated_at, at(10));
    assert_eq!(part(&call, BOB).media_state, MediaState::default());
    assert_events(&events, &[media(ALICE, expected, &[BOB])]);
    assert_eq!(events[0].name(), "call:media-state-changed");

    let change = MediaChange {
        audio_enabled: None,
        video_enabled: Some(false),
        screen_sharing: Some(true),
    };
    let (state, events) = call.set_media(ALICE, change, at(11)).unwrap();
    let expected = media_state(false, false, true);
    assert_eq!(state, expected);
    assert_eq!(part(&call, ALICE).media_state, expected);
    assert_events(&events, &[media(ALICE, expected, &[BOB])]);

    // No flag given: nothing changes.
    let (state, _) = call.set_media(ALICE, NO_MEDIA_CHANGE, at(12)).unwrap();
    assert_eq!(state, expected);

    // The call itself is untouched.
    assert_live(&call, CallStatus::Active);
    assert_statuses(&call, [Joined, Joined]);
}

#[test]
fn set_media_by_a_pending_invitee_is_allowed() {
    let mut call = group();
    call.ring(DAVE, at(1));
    let (state, events) = call.set_media(DAVE, video(false), at(2)).unwrap();
    let expected = media_state(true, false, false);
    assert_eq!(state, expected);
    assert_events(&events, &[media(DAVE, expected, &[ALICE, BOB, CAROL])]);
    assert_eq!(status_of(&call, DAVE), Ringing);
    assert_live(&call, CallStatus::Ringing);
}

#[test]
fn set_media_by_a_stranger_is_refused() {
    let mut call = one_to_one();
    call.answer(BOB, at(5)).unwrap();
    assert_refused_unchanged(&mut call, Refusal::NotParticipant, |c| {
        c.set_media(EVE, NO_MEDIA_CHANGE, at(6))
    });
}

#[test]
fn set_media_by_a_participant_no_longer_in_the_call_is_a_conflict() {
    let mut call = active_group();
    call.end(BOB, at(7)).unwrap();
    call.reject(DAVE, at(8)).unwrap();
    let change = screen(true);
    for gone in [BOB, DAVE] {
        assert_conflict_unchanged(&mut call, |c| c.set_media(gone, change, at(9)));
    }

    // Those still in the call are told, not those who left or rejected.
    let (state, events) = call.set_media(CAROL, change, at(10)).unwrap();
    assert!(state.screen_sharing);
    assert_events(&events, &[media(CAROL, state, &[ALICE])]);
}

// ---------------------------------------------------------------------------------------------
// end_by_server

#[test]
fn end_by_server_ends_a_live_call() {
    let mut call = rung(group());
    call.answer(BOB, at(5)).unwrap();
    call.reject(CAROL, at(6)).unwrap();
    let shutdown = reason::SERVER_SHUTDOWN;
    let events = call.end_by_server(shutdown, at(65));
    assert_ended_event(&events, shutdown, None, &[ALICE, BOB, DAVE]);
    assert_over(&call, CallStatus::Ended, shutdown, at(65), 60);
    assert_statuses(&call, [Left, Left, Rejected, Missed]);
    assert_times(&call, ALICE, Some(T0), Some(at(65)));
    assert_times(&call, BOB, Some(at(5)), Some(at(65)));
    assert_times(&call, CAROL, None, None);
    assert_times(&call, DAVE, None, None);
}

#[test]
fn end_by_server_ends_an_unanswered_call() {
    let mut call = rung(one_to_one());
    let restart = reason::SERVER_RESTART;
    let events = call.end_by_server(restart, at(8));
    assert_ended_event(&events, restart, None, &[ALICE, BOB]);
    assert_over(&call, CallStatus::Ended, restart, at(8), 0);
    assert_eq!(call.started_at, None);
    assert_statuses(&call, [Left, Missed]);
}

#[test]
fn end_by_server_leaves_an_ended_call_alone() {
    let mut call = one_to_one();
    call.answer(BOB, at(5)).unwrap();
    call.end(ALICE, at(65)).unwrap();
    let before = call.clone();
    let events = call.end_by_server(reason::SERVER_RESTART, at(100));
    assert!(events.is_empty());
    assert_eq!(call, before);
    assert_eq!(call.end_reason.as_deref(), Some(reason::ENDED_BY_USER));
}

// ---------------------------------------------------------------------------------------------
// wire shapes

/// Asserts the first of `events` serializes as `expected`.
#[track_caller]
fn assert_first_on_the_wire(events: &[Event], expected: serde_json::Value) {
    assert_eq!(serde_json::to_value(&events[0]).unwrap(), expected);
}

#[test]
fn call_ended_serializes_as_event_and_data_without_recipients() {
    let mut call = one_to_one();
    call.answer(BOB, at(5)).unwrap();
    let events = call.end(BOB, at(10)).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name(), "call:ended");
    assert_first_on_the_wire(
        &events,
        json!({
            "event": "call:ended",
            "data": {
                "callId": CALL_ID.to_string(),
                "reason": "ended-by-user",
                "endedBy": BOB.to_string(),
            }
        }),
    );

    // Ended by a timer: endedBy is null.
    let mut call = one_to_one();
    let events = call.expire_ringing(RING_TIMEOUT, at(30));
    assert_first_on_the_wire(
        &events,
        json!({
            "event": "call:ended",
            "data": {
                "callId": "00000000-0000-0000-0000-00000000ca11",
                "reason": "no-answer",
                "endedBy": null,
            }
        }),
    );
}

#[test]
fn call_events_serialize_with_camel_case_data() {
    let default_media = json!({"audioEnabled": true, "videoEnabled": true, "screenSharing": false});
    let (call, events) = try_initiate(ALICE, &[BOB], 8).unwrap();
    assert_first_on_the_wire(
        &events,
        json!({
            "event": "call:incoming",
            "data": {
                "callId": CALL_ID.to_string(),
                "conversationId": CONVERSATION_ID.to_string(),
                "type": "video",
                "initiatedBy": ALICE.to_string(),
                "participants": [
                    {
                        "userId": ALICE.to_string(),
                        "userName": "User 1",
                        "userIdentifier": "user1@example.test",
                        "status": "joined",
                        "joinedAt": "2023-11-14T22:13:20.000Z",
                        "leftAt": null,
                        "mediaState": default_media,
                        "connectionQuality": null,
                    },
                    {
                        "userId": BOB.to_string(),
                        "userName": "User 2",
                        "userIdentifier": "user2@example.test",
                        "status": "invited",
                        "joinedAt": null,
                        "leftAt": null,
                        "mediaState": default_media,
                        "connectionQuality": null,
                    },
                ],
            }
        }),
    );

    let mut call = call;
    let events = call.answer(BOB, at(5)).unwrap();
    assert_first_on_the_wire(
        &events,
        json!({
            "event": "call:participant-joined",
            "data": {
                "callId": CALL_ID.to_string(),
                "userId": BOB.to_string(),
                "userName": "User 2",
                "userIdentifier": "user2@example.test",
            }
        }),
    );

    let (_, events) = call.set_media(BOB, screen(true), at(6)).unwrap();
    assert_first_on_the_wire(
        &events,
        json!({
            "event": "call:media-state-changed",
            "data": {
                "callId": CALL_ID.to_string(),
                "userId": BOB.to_string(),
                "mediaState": {"audioEnabled": true, "videoEnabled": true, "screenSharing": true},
            }
        }),
    );

    let mut call = group();
    let events = call.reject(CAROL, at(2)).unwrap();
    assert_first_on_the_wire(
        &events,
        json!({
            "event": "call:participant-left",
            "data": {
                "callId": CALL_ID.to_string(),
                "userId": CAROL.to_string(),
                "reason": "rejected",
            }
        }),
    );
}

#[test]
fn media_state_is_camel_case_and_strict() {
    let state = media_state(false, true, true);
    let wire = json!({"audioEnabled": false, "videoEnabled": true, "screenSharing": true});
    assert_eq!(serde_json::to_value(state).unwrap(), wire);
    let back: MediaState = serde_json::from_value(wire.clone()).unwrap();
    assert_eq!(back, state);
    let mut extra = wire;
    extra["extra"] = json!(1);
    assert!(serde_json::from_value::<MediaState>(extra).is_err());
    assert!(serde_json::from_value::<MediaState>(json!({"audio_enabled": false})).is_err());
    assert_eq!(MediaState::default(), media_state(true, true, false));
}

/// The members of `all` that `keep` selects, in order.
fn only<T: Copy>(all: &[T], keep: impl Fn(T) -> bool) -> Vec<T> {
    all.iter().copied().filter(|&s| keep(s)).collect()
}

#[test]
fn status_texts_round_trip() {
    for s in CallStatus::ALL {
        assert_eq!(s.as_str().parse::<CallStatus>(), Ok(*s));
        assert_eq!(s.to_string(), s.as_str());
        assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
    }
    for s in ParticipantStatus::ALL {
        assert_eq!(s.as_str().parse::<ParticipantStatus>(), Ok(*s));
        assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
    }
    for k in CallType::ALL {
        assert_eq!(k.as_str().parse::<CallType>(), Ok(*k));
    }
    assert!("Active".parse::<CallStatus>().is_err());
    assert!("hung-up".parse::<ParticipantStatus>().is_err());

    let live_calls = only(CallStatus::ALL, CallStatus::is_live);
    let live_call_statuses = [
        CallStatus::Initiated,
        CallStatus::Ringing,
        CallStatus::Active,
    ];
    assert_eq!(live_calls, live_call_statuses);
    let pending = only(ParticipantStatus::ALL, ParticipantStatus::is_pending);
    assert_eq!(pending, [Invited, Ringing]);
    let live = only(ParticipantStatus::ALL, ParticipantStatus::is_live);
    assert_eq!(live, [Invited, Ringing, Joined]);
}
