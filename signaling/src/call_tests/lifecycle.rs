//! How a call starts, rings, is answered, rejected and ended: initiate, ring, 1:1 calls, the
//! ring timeout and the server's end of live calls.

use super::*;

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
    call.end_by_server(EndReason::ServerShutdown, at(1));
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
fn one_to_one_end_or_lost_connection_by_either_side_ends_the_call() {
    let ways: [(Act, EndReason); 2] = [
        (Call::end, EndReason::EndedByUser),
        (Call::connection_lost, EndReason::ConnectionLost),
    ];
    for (leave, reason) in ways {
        for ender in [ALICE, BOB] {
            let mut call = rung(one_to_one());
            call.answer(BOB, at(5)).unwrap();
            let events = leave(&mut call, ender, at(125)).unwrap();
            assert_ended_event(&events, reason, Some(ender), &[ALICE, BOB]);
            assert_over(&call, CallStatus::Ended, reason, at(125), 120);
            assert_eq!(call.started_at, Some(at(5)));
            assert_statuses(&call, [Left, Left]);
            assert_times(&call, ALICE, Some(T0), Some(at(125)));
            assert_times(&call, BOB, Some(at(5)), Some(at(125)));
        }
    }
}

#[test]
fn duration_counts_whole_seconds_from_the_first_answer() {
    let mut call = one_to_one();
    call.answer(BOB, at(10)).unwrap();
    // 120.999 s after the answer, 130.999 s after the call was created.
    let end = at_ms(130_999);
    call.end(ALICE, end).unwrap();
    assert_over(&call, CallStatus::Ended, EndReason::EndedByUser, end, 120);
}

#[test]
fn one_to_one_ended_before_an_answer_is_cancelled_or_rejected() {
    // The initiator hangs up (Bob missed the call), or Bob rejects it.
    let ways: [(Act, Uuid, CallStatus, EndReason, ParticipantStatus); 2] = [
        (
            Call::end,
            ALICE,
            CallStatus::Ended,
            EndReason::Cancelled,
            Missed,
        ),
        (
            Call::reject,
            BOB,
            CallStatus::Rejected,
            EndReason::Rejected,
            Rejected,
        ),
    ];
    for (how, by, status, reason, bob) in ways {
        let mut call = rung(one_to_one());
        let events = how(&mut call, by, at(10)).unwrap();
        // Both hear it; nobody was in it but Alice.
        assert_ended_event(&events, reason, Some(by), &[ALICE, BOB]);
        assert_over(&call, status, reason, at(10), 0);
        assert_eq!(call.started_at, None);
        assert_statuses(&call, [Left, bob]);
        assert_times(&call, ALICE, Some(T0), Some(at(10)));
        assert_times(&call, BOB, None, None);
        assert_eq!(part(&call, BOB).updated_at, at(10));
    }
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
fn one_to_one_reject_straight_from_invited() {
    let mut call = one_to_one();
    let events = call.reject(BOB, at(2)).unwrap();
    assert_ended_event(&events, EndReason::Rejected, Some(BOB), &[ALICE, BOB]);
    assert_over(&call, CallStatus::Rejected, EndReason::Rejected, at(2), 0);
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
    by_server.end_by_server(EndReason::ServerRestart, at(9));

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
        let shutdown = call.end_by_server(EndReason::ServerShutdown, later);
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
    assert_ended_event(&events, EndReason::NoAnswer, None, &[ALICE, BOB]);
    assert_over(call, CallStatus::Missed, EndReason::NoAnswer, now, 0);
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
// end_by_server

#[test]
fn end_by_server_ends_a_live_call() {
    let mut call = rung(group());
    call.answer(BOB, at(5)).unwrap();
    call.reject(CAROL, at(6)).unwrap();
    let shutdown = EndReason::ServerShutdown;
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
    let restart = EndReason::ServerRestart;
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
    let events = call.end_by_server(EndReason::ServerRestart, at(100));
    assert!(events.is_empty());
    assert_eq!(call, before);
    assert_eq!(call.end_reason, Some(EndReason::EndedByUser));
}
