//! Group calls: answers, rejects, leaves, lost connections and rejoins with three invitees.

use super::*;

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
    assert_over(&call, CallStatus::Rejected, EndReason::Rejected, at(4), 0);
    assert_eq!(call.started_at, None);
    assert_statuses(&call, [Left, Rejected, Rejected, Rejected]);
    assert_times(&call, ALICE, Some(T0), Some(at(4)));
    // Whatever else is sent, the call ends for Alice and for Dave's other devices.
    let last = events.last().expect("events");
    let last = std::slice::from_ref(last);
    assert_ended_event(last, EndReason::Rejected, Some(DAVE), &[ALICE, DAVE]);
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
    assert_ended_event(&events, EndReason::Rejected, Some(DAVE), &[ALICE, DAVE]);
}

#[test]
fn group_some_rejected_then_the_ring_timeout_is_missed() {
    let mut call = rung(group());
    call.reject(BOB, at(2)).unwrap();
    let deadline = call.ring_deadline(RING_TIMEOUT).unwrap();
    assert_eq!(deadline, at(30));
    let events = call.expire_ringing(RING_TIMEOUT, deadline);
    assert_ended_event(&events, EndReason::NoAnswer, None, &[ALICE, CAROL, DAVE]);
    assert_over(&call, CallStatus::Missed, EndReason::NoAnswer, at(30), 0);
    assert_statuses(&call, [Left, Rejected, Missed, Missed]);
    assert_times(&call, ALICE, Some(T0), Some(at(30)));
    assert_times(&call, CAROL, None, None);
    assert_eq!(part(&call, CAROL).updated_at, at(30));
    assert_eq!(part(&call, BOB).updated_at, at(2));
}

/// A group call Bob and Carol answered (at 5 and 6 s), which Bob leaves at `t` by `leave`:
/// the others hear `why`, and the call goes on.
fn group_bob_leaves(leave: Act, why: &'static str, t: Timestamp) -> Call {
    let mut call = rung(group());
    call.answer(BOB, at(5)).unwrap();
    call.answer(CAROL, at(6)).unwrap();
    let events = leave(&mut call, BOB, t).unwrap();
    assert_events(&events, &[left(BOB, why, &[ALICE, CAROL, DAVE])]);
    assert_live(&call, CallStatus::Active);
    assert_eq!(call.updated_at, t);
    assert_statuses(&call, [Joined, Left, Joined, Ringing]);
    assert_times(&call, BOB, Some(at(5)), Some(t));
    call
}

#[test]
fn group_leaves_end_the_call_when_fewer_than_two_are_joined() {
    // One of three joined leaves: the call goes on.
    let mut call = group_bob_leaves(Call::end, "left", at(60));

    // Leaving twice is a conflict.
    assert_conflict_unchanged(&mut call, |c| c.end(BOB, at(61)));

    // The last but one leaves: the call ends for everyone still in it, and the leaver.
    let events = call.end(CAROL, at(65)).unwrap();
    let reason = EndReason::EndedByUser;
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
fn a_lost_connection_ends_a_one_to_one_call_even_before_the_answer() {
    // Answered: see one_to_one_end_or_lost_connection_by_either_side_ends_the_call. Before the
    // answer too: the caller's devices are all gone.
    let mut call = rung(one_to_one());
    let events = call.connection_lost(ALICE, at(8)).unwrap();
    assert_ended_event(
        &events,
        EndReason::ConnectionLost,
        Some(ALICE),
        &[ALICE, BOB],
    );
    assert_statuses(&call, [Left, Missed]);
}

#[test]
fn a_lost_connection_takes_one_participant_out_of_a_group_call() {
    let mut call = group_bob_leaves(Call::connection_lost, "disconnected", at(40));
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
        EndReason::EndedByUser,
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
    assert_ended_event(&events, EndReason::Cancelled, Some(ALICE), &CAST);
    assert_over(&call, CallStatus::Ended, EndReason::Cancelled, at(10), 0);
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
    assert_ended_event(&events, EndReason::Cancelled, Some(ALICE), &to);
    assert_over(&call, CallStatus::Ended, EndReason::Cancelled, at(10), 0);
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
    let reason = EndReason::EndedByUser;
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

#[test]
fn a_revoked_participant_is_out_of_a_group_call_joined_or_rung() {
    // Joined: out as if they left, the others told why.
    let mut call = group_bob_leaves(Call::revoke, "revoked", at(40));
    assert_refused_unchanged(&mut call, Refusal::NotParticipant, |c| {
        c.revoke(EVE, at(41))
    });
    // Still being rung: they miss the call, and the others hear it; Carol and Alice go on.
    let events = call.revoke(DAVE, at(41)).unwrap();
    assert_events(&events, &[left(DAVE, "revoked", &[ALICE, CAROL])]);
    assert_live(&call, CallStatus::Active);
    assert_statuses(&call, [Joined, Left, Joined, Missed]);
    assert_conflict_unchanged(&mut call, |c| c.revoke(DAVE, at(42)));
    // The last but one: settled as after any departure.
    let events = call.revoke(CAROL, at(50)).unwrap();
    let why = EndReason::EndedByUser;
    assert_ended_event(&events, why, Some(CAROL), &[ALICE, CAROL]);
}

#[test]
fn a_revocation_ends_a_one_to_one_call_whichever_side_and_state() {
    for (who, answered) in [(ALICE, true), (BOB, true), (ALICE, false), (BOB, false)] {
        let mut call = rung(one_to_one());
        if answered {
            call.answer(BOB, at(5)).unwrap();
        }
        let events = call.revoke(who, at(8)).unwrap();
        assert_ended_event(&events, EndReason::Revoked, Some(who), &[ALICE, BOB]);
        let status = if answered { Left } else { Missed };
        assert_statuses(&call, [Left, status]);
        assert_conflict_unchanged(&mut call, |c| c.revoke(who, at(9)));
    }
}
