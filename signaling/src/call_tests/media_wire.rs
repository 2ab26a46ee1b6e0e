//! Media changes, and the events and statuses as they go on the wire.

use super::*;

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
                "sfuRoomId": null,
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
    // The reasons' texts, as the rows, the events and the webhooks have always carried them.
    let ends: Vec<&str> = EndReason::ALL.iter().map(|r| r.as_str()).collect();
    let end_texts = [
        "ended-by-user",
        "cancelled",
        "rejected",
        "no-answer",
        "server-restart",
        "server-shutdown",
        "connection-lost",
        "revoked",
    ];
    assert_eq!(ends, end_texts);
    let lefts: Vec<&str> = LeftReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        lefts,
        ["left", "disconnected", "rejected", "missed", "revoked"]
    );
    for r in EndReason::ALL {
        assert_eq!(r.as_str().parse::<EndReason>(), Ok(*r));
        assert_eq!(serde_json::to_value(r).unwrap(), json!(r.as_str()));
    }
    assert!("completed".parse::<EndReason>().is_err());
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

/// A call put on the SFU says so in its invitees' `call:incoming`: its room is its id.
#[test]
fn a_call_on_the_sfu_names_its_room_in_call_incoming() {
    let (mut call, mut events) = try_initiate(ALICE, &[BOB, CAROL], 8).unwrap();
    call.use_sfu(&mut events);
    assert_eq!(
        call.sfu_room_id.as_deref(),
        Some(CALL_ID.to_string().as_str())
    );
    let wire = serde_json::to_value(&events[0]).unwrap();
    assert_eq!(wire["event"], "call:incoming");
    assert_eq!(wire["data"]["sfuRoomId"], CALL_ID.to_string());
}
