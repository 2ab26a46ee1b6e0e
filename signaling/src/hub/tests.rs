//! The hub's unit tests: delivery, relaying, presence and departures, with in-memory sockets.

use super::*;
use crate::call::{Call, CallType, User};
use crate::event::EventSink;
use crate::time::Timestamp;

/// A socket that keeps what it is sent, up to `room` messages.
#[derive(Default)]
pub(crate) struct Inbox {
    room: usize,
    got: Mutex<Vec<(String, serde_json::Value)>>,
    closed: Mutex<Option<DisconnectReason>>,
}

impl Inbox {
    pub(crate) fn with_room(room: usize) -> Arc<Inbox> {
        Arc::new(Inbox {
            room,
            ..Inbox::default()
        })
    }

    fn take(&self) -> Vec<(String, serde_json::Value)> {
        std::mem::take(&mut self.got.lock().unwrap())
    }

    pub(crate) fn names(&self) -> Vec<String> {
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

    fn disconnect(&self, reason: DisconnectReason) {
        *self.closed.lock().unwrap() = Some(reason);
    }

    fn pulse(&self) {}

    fn backlog(&self) -> Backlog {
        let got = self.got.lock().unwrap();
        let bytes = got.iter().map(|(_, v)| v.to_string().len()).sum();
        Backlog {
            messages: got.len(),
            bytes,
        }
    }
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
    let (hub, _) = Hub::new(4);
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
    let (hub, _) = Hub::new(4);
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
    let (hub, _) = Hub::new(4);
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
    let (hub, _) = Hub::new(4);
    let slow = Inbox::with_room(1);
    let fine = Inbox::with_room(9);
    let u2 = user(2).id;
    let slow_id = hub.attach(u2, slow.clone()).unwrap();
    hub.attach(u2, fine.clone()).unwrap();
    hub.attach(user(1).id, Inbox::with_room(9)).unwrap();
    let call = group(&hub);
    hub.relay(user(1).id, call.id, u2, Signal::Offer, &sdp())
        .unwrap();
    assert_eq!(
        *slow.closed.lock().unwrap(),
        Some(DisconnectReason::SlowConsumer)
    );
    assert_eq!(fine.names(), ["call:incoming", "call:offer"]);
    assert_eq!(hub.sockets_of(u2), 1, "the slow socket is forgotten");
    // Its transport detaches it later: harmless.
    assert_eq!(hub.detach(u2, slow_id), 1);
}

/// Issue 20 item 13: a sender cannot fill the target's queue with relays (which closed the
/// target as a slow consumer) nor hold more than RELAY_BYTES_PER_USER queued for them: past
/// either bound the relay is refused to the sender, and the target still takes the call's
/// events.
#[test]
fn relays_past_the_targets_share_are_refused_to_the_sender() {
    use crate::limits::{QUEUE, RELAY_BYTES_PER_USER, RELAY_QUEUE};
    let (hub, _) = Hub::new(4);
    let (u1, u2) = (user(1).id, user(2).id);
    let target = Inbox::with_room(QUEUE);
    hub.attach(u2, target.clone()).unwrap();
    hub.attach(u1, Inbox::with_room(9)).unwrap();
    let call = group(&hub);
    let busy = Err(HubError::TargetBusy(u2));
    // (The target has `call:incoming` queued already.)
    for _ in 1..RELAY_QUEUE {
        hub.relay(u1, call.id, u2, Signal::IceCandidate, &sdp())
            .unwrap();
    }
    assert_eq!(
        hub.relay(u1, call.id, u2, Signal::IceCandidate, &sdp()),
        busy
    );
    hub.send(&[u2], &Message::new("call:ended", &call.id));
    assert_eq!(target.take().len(), RELAY_QUEUE + 1);
    assert_eq!(*target.closed.lock().unwrap(), None);

    // Few messages, but large ones: refused once their bytes would pass the budget.
    let large = format!(r#"{{"sdp":"{}"}}"#, "a".repeat(60_000));
    let large = RawValue::from_string(large).unwrap();
    let taken = (0..RELAY_QUEUE)
        .take_while(|_| hub.relay(u1, call.id, u2, Signal::Offer, &large).is_ok())
        .count();
    assert_eq!(taken, RELAY_BYTES_PER_USER / 60_000, "taken before refused");
    assert_eq!(hub.relay(u1, call.id, u2, Signal::Offer, &large), busy);
    assert_eq!(*target.closed.lock().unwrap(), None);
}

#[test]
fn sockets_per_user_are_bounded_and_all_can_be_closed() {
    let (hub, _) = Hub::new(2);
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
    hub.disconnect_all(DisconnectReason::ServerShutdown);
    let closed = *b.closed.lock().unwrap();
    assert_eq!(closed, Some(DisconnectReason::ServerShutdown));
    assert_eq!(*a.closed.lock().unwrap(), None, "detached before");
}

#[test]
fn the_last_socket_of_a_joined_user_going_is_a_departure_a_reconnect_voids() {
    let (hub, mut reports) = Hub::new(4);
    let departures = &mut reports.departures;
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
    let (hub, mut reports) = Hub::new(4);
    let departures = &mut reports.departures;
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

/// What the call service hears through [`Reports::ringing`]: once per user reached, however
/// many of their devices were, and again for a device that connects while the call rings.
#[test]
fn users_whose_devices_get_call_incoming_are_reported_ringing() {
    let (hub, mut reports) = Hub::new(4);
    let (u2, u3) = (user(2).id, user(3).id);
    hub.attach(u2, Inbox::with_room(9)).unwrap();
    hub.attach(u2, Inbox::with_room(9)).unwrap();
    let call = group(&hub);
    // User 3 has no socket: not ringing yet.
    assert_eq!(reports.ringing.try_recv().unwrap(), (u2, call.id));
    assert!(reports.ringing.try_recv().is_err());
    hub.attach(u3, Inbox::with_room(9)).unwrap();
    assert_eq!(reports.ringing.try_recv().unwrap(), (u3, call.id));
    assert!(reports.ringing.try_recv().is_err());
}

#[test]
fn a_device_connecting_mid_ring_rings_and_an_ended_call_is_forgotten() {
    let (hub, mut reports) = Hub::new(4);
    let departures = &mut reports.departures;
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

#[test]
fn sfu_events_go_to_the_socket_holding_the_connection() {
    let (hub, _) = Hub::new(4);
    let u2 = user(2).id;
    let name = |n: &str| Some(Arc::from(n));
    let (tab, phone) = (Inbox::with_room(9), Inbox::with_room(9));
    let tab_id = hub.attach_named(u2, name("tab"), tab.clone()).unwrap();
    let phone_id = hub.attach_named(u2, name("phone"), phone.clone()).unwrap();
    let call = group(&hub).id;
    tab.take();
    phone.take();
    let sfu_offer = Message::new("call:sfu-offer", &serde_json::json!({"callId": call}));

    // Nobody holds it yet: the SFU's events go nowhere.
    hub.send_sfu(call, &[u2], &sfu_offer);
    assert!(tab.names().is_empty() && phone.names().is_empty());
    // The tab offers: its events are the tab's alone; its next offer, for the same or another
    // connection, renegotiates.
    let claim = hub.claim_sfu(call, u2, tab_id, Some("sha-256 AA"));
    assert!(!claim.replaces);
    claim.notify(call);
    assert!(
        !hub.claim_sfu(call, u2, tab_id, Some("sha-256 BB")).replaces,
        "the same socket renegotiates"
    );
    hub.send_sfu(call, &[u2], &sfu_offer);
    assert_eq!(tab.names(), ["call:sfu-offer"]);
    assert!(phone.names().is_empty());
    // Lifecycle events still reach both.
    hub.send(&[u2], &Message::new("call:participant-left", &()));
    assert_eq!(tab.names(), ["call:participant-left"]);
    assert_eq!(phone.names(), ["call:participant-left"]);

    // The tab goes: while nobody holds it, its events go to every socket of the user (a client
    // that came back under a new name must hear of renegotiations); it comes back under its
    // name and has them alone again.
    hub.detach(u2, tab_id);
    hub.send_sfu(call, &[u2], &sfu_offer);
    assert_eq!(phone.names(), ["call:sfu-offer"]);
    assert_eq!(hub.sfu_socket(call, u2), None);
    let tab2 = Inbox::with_room(9);
    let tab2_id = hub.attach_named(u2, name("tab"), tab2.clone()).unwrap();
    tab2.take(); // (the call:incoming of a device connecting while its user is rung)
    assert_eq!(hub.sfu_socket(call, u2), Some(tab2_id));
    hub.send_sfu(call, &[u2], &sfu_offer);
    assert_eq!(tab2.names(), ["call:sfu-offer"]);

    // The phone offers its own connection: it replaces the tab's, which is told.
    let claim = hub.claim_sfu(call, u2, phone_id, Some("sha-256 CC"));
    assert!(claim.replaces);
    claim.notify(call);
    let got = tab2.take();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "call:sfu-closed");
    assert_eq!(
        got[0].1,
        serde_json::json!({"callId": call, "reason": "replaced"})
    );
    hub.send_sfu(call, &[u2], &sfu_offer);
    assert_eq!(phone.names(), ["call:sfu-offer"]);
    assert!(tab2.names().is_empty());

    // The phone's socket goes and its client reconnects under another name, offering for the
    // same connection: it takes the events back without replacing anything.
    hub.detach(u2, phone_id);
    let phone2 = Inbox::with_room(9);
    let phone2_id = hub
        .attach_named(u2, name("phone-2"), phone2.clone())
        .unwrap();
    phone2.take();
    let claim = hub.claim_sfu(call, u2, phone2_id, Some("sha-256 CC"));
    assert!(!claim.replaces);
    hub.send_sfu(call, &[u2], &sfu_offer);
    assert_eq!(phone2.names(), ["call:sfu-offer"]);

    // Out of the SFU room (the SFU closed it), or out of the call: forgotten.
    hub.forget_sfu(call, u2);
    assert_eq!(hub.sfu_socket(call, u2), None);
    let claim = hub.claim_sfu(call, u2, tab2_id, Some("sha-256 DD"));
    assert!(!claim.replaces, "a first offer after the SFU dropped it");
    let end = crate::event::Ended {
        call_id: call,
        reason: "completed",
        ended_by: None,
    };
    hub.deliver(vec![crate::event::Event {
        to: vec![],
        payload: Payload::Ended(end),
    }]);
    assert_eq!(hub.sfu_socket(call, u2), None);
}

#[test]
fn an_offers_fingerprint_is_its_first() {
    let sdp = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\na=fingerprint:sha-256 AB:CD\r\nm=audio 9\r\na=fingerprint:sha-256 EF\r\n";
    assert_eq!(fingerprint(sdp), Some("sha-256 AB:CD"));
    assert_eq!(fingerprint("v=0\r\n"), None);
}
