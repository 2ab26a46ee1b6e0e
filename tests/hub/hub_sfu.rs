//! Group calls through the daemon's SFU, signaled over `/ws`: three participants (str0m clients
//! on real UDP sockets, [`switchboard_sfu::client`]) of one call each send `call:sfu-offer`,
//! answer the SFU's `call:sfu-offer`s, and receive the other two's audio and video through the
//! SFU's port. A 1:1 call stays peer-to-peer: it has no SFU room, and the SFU refuses it.

use crate::common;

use std::time::{Duration, Instant};

use common::ws::{Hub, Next};
use common::{Api, Daemon, Person};
use serde_json::{json, Value};
use switchboard_sfu::client::UdpParticipant;
use switchboard_sfu::str0m::media::MediaKind;
use uuid::Uuid;

/// Runs the harness's blocking calls (daemon start, REST) on the test's runtime.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    tokio::task::block_in_place(f)
}

/// A daemon and `names`, provisioned, in one conversation.
fn start(names: &[&str]) -> (Daemon, Api, Vec<Person>, Uuid) {
    blocking(|| {
        let d = Daemon::start("");
        let api = d.api();
        let people: Vec<Person> = names.iter().map(|n| Person::new(n)).collect();
        for p in &people {
            api.provision(p);
        }
        let conv = api.conversation_of(&people.iter().collect::<Vec<_>>());
        (d, api, people, conv)
    })
}

/// A participant of a group call: its socket to the hub and its media client.
struct Member {
    hub: Hub,
    media: UdpParticipant,
    /// Requests sent whose acks may still come.
    next_id: u64,
}

impl Member {
    /// Opens the socket and sends the participant's offer (`call:sfu-offer`). Its ack and the
    /// SFU's answer come in either order: [`Member::signal`] takes both.
    async fn join(d: &Daemon, who: &Person, call: &str) -> Member {
        let mut hub = Hub::open(d, who).await;
        let localhost = "127.0.0.1".parse().unwrap();
        let (media, offer) = UdpParticipant::bind(&who.name, who.id, localhost, &[]).unwrap();
        let data = json!({"callId": call, "sdp": offer});
        hub.send(json!({"event": "call:sfu-offer", "data": data, "id": "join"}))
            .await;
        Member {
            hub,
            media,
            next_id: 0,
        }
    }

    /// Takes what the hub sent (the SFU's answer and offers, acks, call events) without
    /// waiting, and answers the SFU's offers. Returns the call events seen.
    async fn signal(&mut self, call: &str) -> Vec<Value> {
        let mut events = Vec::new();
        while let Next::Frame(f) = self.hub.next_within(Duration::from_millis(1)).await {
            match f["event"].as_str() {
                Some("call:sfu-answer") => {
                    assert_eq!(f["data"]["callId"], call);
                    self.media
                        .p
                        .accept_answer(f["data"]["sdp"].as_str().unwrap())
                        .unwrap();
                }
                Some("call:sfu-offer") => {
                    let tracks = f["data"]["tracks"].as_array().unwrap().iter().map(|t| {
                        let user = t["userId"].as_str().unwrap().parse().unwrap();
                        (t["mid"].as_str().unwrap().to_owned(), user)
                    });
                    let sdp = f["data"]["sdp"].as_str().unwrap();
                    let answer = self.media.p.accept_offer(sdp, tracks).unwrap();
                    self.next_id += 1;
                    let id = format!("answer-{}", self.next_id);
                    let frame = json!({"event": "call:sfu-answer", "data": {"callId": call, "sdp": answer}, "id": id});
                    self.hub.send(frame).await;
                    events.push(f);
                }
                Some("ack") => assert!(f["data"]["callId"] == call, "{f}"),
                Some("error") => panic!("{}: {f}", self.media.p.name),
                _ => events.push(f),
            }
        }
        events
    }
}

/// Signals and pumps media for every member for `d`, media from `media_after` on.
async fn run(
    members: &mut [Member],
    call: &str,
    d: Duration,
    media_after: Duration,
) -> Vec<Vec<Value>> {
    let mut seen = vec![Vec::new(); members.len()];
    let started = Instant::now();
    let mut last_media = started;
    while started.elapsed() < d {
        let now = Instant::now();
        let media =
            started.elapsed() >= media_after && now - last_media >= Duration::from_millis(5);
        if media {
            last_media = now;
        }
        for (m, seen) in members.iter_mut().zip(&mut seen) {
            seen.extend(m.signal(call).await);
            m.media.pump(now, media).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_call_goes_through_the_sfu() {
    let (d, api, people, conv) = start(&["Alice", "Bob", "Carol"]);
    let (alice, bob, carol) = (&people[0], &people[1], &people[2]);
    let mut bobs = Hub::open(&d, bob).await;
    let (status, initiated) = blocking(|| {
        let body =
            json!({"conversationId": conv, "type": "video", "participantIds": [bob.id, carol.id]});
        api.json("POST", "/api/calls/initiate", Some(&alice.token), &body)
    });
    assert_eq!(status, 201, "{initiated}");
    let call = initiated["callId"].as_str().unwrap().to_owned();
    assert_eq!(
        initiated["sfuRoomId"], call,
        "a call of three is on the SFU"
    );
    assert_eq!(bobs.expect("call:incoming").await["sfuRoomId"], call);
    drop(bobs);
    blocking(|| {
        api.act_ok(bob, &call, "answer");
        api.act_ok(carol, &call, "answer");
    });
    assert_eq!(blocking(|| api.call(alice, &call))["sfuRoomId"], call);

    let mut members = Vec::new();
    for p in [alice, bob, carol] {
        members.push(Member::join(&d, p, &call).await);
    }
    run(
        &mut members,
        &call,
        Duration::from_secs(4),
        Duration::from_secs(1),
    )
    .await;
    for m in &members {
        assert_eq!(m.media.p.strays, 0);
        for o in members.iter().filter(|o| o.media.p.user != m.media.p.user) {
            for kind in [MediaKind::Audio, MediaKind::Video] {
                let n = m.media.p.frames_from(o.media.p.user, kind).len();
                assert!(
                    n > 50,
                    "{} got {n} {kind:?} frames from {}",
                    m.media.p.name,
                    o.media.p.name
                );
            }
        }
    }
    let forwarded = d.metric("switchboard_sfu_forwarded_packets_total");
    assert!(forwarded > 1000, "{forwarded} packets forwarded");

    // Carol leaves: Alice and Bob are offered the end of her m-lines, and get no more of her.
    blocking(|| api.act_ok(carol, &call, "end"));
    let mut members: Vec<Member> = members.into_iter().take(2).collect();
    let seen = run(&mut members, &call, Duration::from_secs(1), Duration::ZERO).await;
    for (m, seen) in members.iter().zip(&seen) {
        let offer = seen
            .iter()
            .rfind(|f| f["event"] == "call:sfu-offer")
            .unwrap_or_else(|| panic!("{}: no offer after Carol left: {seen:?}", m.media.p.name));
        let tracks = offer["data"]["tracks"].as_array().unwrap();
        assert!(
            tracks.iter().all(|t| t["userId"] != carol.id.to_string()),
            "{offer}"
        );
        assert_eq!(tracks.len(), 2, "the other's audio and video: {offer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_joined_participants_of_a_group_call_reach_the_sfu() {
    let (d, api, people, conv) = start(&["Alice", "Bob", "Carol", "Eve"]);
    let (alice, bob, carol, eve) = (&people[0], &people[1], &people[2], &people[3]);
    let localhost = "127.0.0.1".parse().unwrap();
    let (_media, offer) = UdpParticipant::bind("x", Uuid::new_v4(), localhost, &[]).unwrap();

    // A 1:1 call has no SFU room: its media stays between the two browsers.
    let one = blocking(|| api.start_call(alice, conv, "video", &[bob]));
    assert_eq!(blocking(|| api.call(alice, &one))["sfuRoomId"], Value::Null);
    let mut alices = Hub::open(&d, alice).await;
    let sdp = json!({"callId": one, "sdp": offer});
    let frame = json!({"event": "call:sfu-offer", "data": sdp, "id": 1});
    alices.refused(frame, "not_on_sfu", "call:sfu-offer").await;

    // A group call: Carol, rung but not answered, and Eve, not invited, are not let in.
    let mut carols = Hub::open(&d, carol).await;
    let mut eves = Hub::open(&d, eve).await;
    let group = blocking(|| api.start_call(alice, conv, "video", &[bob, carol]));
    assert_eq!(carols.expect("call:incoming").await["sfuRoomId"], group);
    let data = json!({"callId": group, "sdp": offer});
    for hub in [&mut carols, &mut eves] {
        let frame = json!({"event": "call:sfu-offer", "data": data, "id": 2});
        hub.refused(frame, "not_in_sfu_room", "call:sfu-offer")
            .await;
    }
    // Not SDP: the field is named.
    let frame = json!({"event": "call:sfu-offer", "data": {"callId": group, "sdp": "v=0 nonsense"}, "id": 3});
    let message = alices
        .refused(frame, "invalid_field", "call:sfu-offer")
        .await;
    assert!(message.starts_with("sdp:"), "{message}");
    // An answer before any offer, and a layer choice, from someone not in the room.
    let frame = json!({"event": "call:sfu-answer", "data": data, "id": 4});
    alices
        .refused(frame, "not_in_sfu_room", "call:sfu-answer")
        .await;
    let layer = json!({"callId": group, "userId": bob.id, "quality": "low"});
    let frame = json!({"event": "call:sfu-layer", "data": layer, "id": 5});
    alices
        .refused(frame, "not_in_sfu_room", "call:sfu-layer")
        .await;
}
