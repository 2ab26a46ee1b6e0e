//! Group calls through the daemon's SFU, signaled over `/ws`: three participants (str0m clients
//! on real UDP sockets, [`switchboard_sfu::client`]) of one call each send `call:sfu-offer`,
//! answer the SFU's `call:sfu-offer`s, and receive the other two's audio and video through the
//! SFU's port. A 1:1 call stays peer-to-peer: it has no SFU room, and the SFU refuses it.
//! Participants behind a strict firewall reach the SFU through the daemon's TURN relay (over
//! UDP or TCP), their media handed between the relay and the SFU inside the process.

use crate::common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::ws::{Hub, Next};
use common::{code, nonce_of, relayed_of, request, seal, Api, Daemon, Person};
use serde_json::{json, Value};
use stun_types::message::MessageWriteExt as _;
use switchboard_sfu::client::{Participant, UdpParticipant};
use switchboard_sfu::str0m::media::MediaKind;
use turn_types::attribute::{ChannelNumber, RequestedTransport, XorPeerAddress};
use turn_types::message::{ALLOCATE, CHANNEL_BIND};
use uuid::Uuid;

/// Runs the harness's blocking calls (daemon start, REST) on the test's runtime.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    tokio::task::block_in_place(f)
}

/// A daemon and `names`, provisioned, in one conversation.
/// Alice, Bob and Carol, and a video call Alice placed to the two others, who answered.
fn answered_group() -> (Daemon, Api, Vec<Person>, String) {
    let (d, api, people, conv) = start(&["Alice", "Bob", "Carol"]);
    let call = blocking(|| api.answered_call(&people[0], conv, &[&people[1], &people[2]]));
    (d, api, people, call)
}

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

/// The channel a relayed participant binds to the SFU's address.
const CHANNEL: u16 = 0x4000;

/// A connection to the daemon's TURN relay, over UDP or TCP (where STUN messages and
/// ChannelData are framed by their own lengths, ChannelData padded to four bytes).
enum Turn {
    Udp(UdpSocket),
    Tcp(TcpStream, Vec<u8>),
}

impl Turn {
    fn connect(relay: SocketAddr, tcp: bool) -> Turn {
        if tcp {
            let s = TcpStream::connect(relay).unwrap();
            s.set_nodelay(true).unwrap();
            s.set_nonblocking(true).unwrap();
            Turn::Tcp(s, Vec::new())
        } else {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.connect(relay).unwrap();
            s.set_nonblocking(true).unwrap();
            Turn::Udp(s)
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        match self {
            Turn::Udp(s) => {
                let _ = s.send(bytes);
            }
            Turn::Tcp(s, _) => s.write_all(bytes).unwrap(),
        }
    }

    /// The next message (STUN or ChannelData) that has arrived, without waiting.
    fn try_recv(&mut self) -> Option<Vec<u8>> {
        match self {
            Turn::Udp(s) => {
                let mut buf = [0u8; 2048];
                s.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
            }
            Turn::Tcp(s, pending) => {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    pending.extend_from_slice(&buf[..n]);
                }
                let len = match pending.get(..4)? {
                    h if h[0] & 0xC0 == 0x40 => {
                        (4 + u16::from_be_bytes([h[2], h[3]]) as usize + 3) & !3
                    }
                    h => 20 + u16::from_be_bytes([h[2], h[3]]) as usize,
                };
                (pending.len() >= len).then(|| pending.drain(..len).collect())
            }
        }
    }

    /// Sends a request and waits (bounded) for its answer.
    fn ask(&mut self, what: &str, bytes: &[u8]) -> Vec<u8> {
        self.send(bytes);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(m) = self.try_recv() {
                return m;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!(
            "no answer from the relay to {what} ({})",
            if matches!(self, Turn::Tcp(..)) {
                "tcp"
            } else {
                "udp"
            }
        );
    }
}

/// A participant whose only way out is the daemon's TURN relay (a browser with
/// `iceTransportPolicy: relay`): its candidate is its relayed address, and everything it sends
/// the SFU goes on a channel bound to the SFU's address.
struct Relayed {
    p: Participant,
    turn: Turn,
    sfu: SocketAddr,
}

impl Relayed {
    /// Allocates on `d`'s relay (over TCP when `tcp`), binds [`CHANNEL`] to the SFU's address
    /// (the loopback address the default peer policy refuses to any other peer) and makes the
    /// participant at the relayed address. Returns its first offer too.
    fn allocate(d: &Daemon, who: &Person, tcp: bool) -> (Relayed, String) {
        let sfu = d.sfu.expect("the daemon runs an SFU");
        let mut turn = Turn::connect(d.turn, tcp);
        let (user, pass) = d.credentials(&who.name);
        let allocate = || {
            let mut w = request(ALLOCATE);
            w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                .unwrap();
            w
        };
        use stun_types::message::MessageWrite as _;
        let nonce = nonce_of(&turn.ask("Allocate", &allocate().finish()));
        let allocated = turn.ask("Allocate", &seal(allocate(), &user, &pass, &nonce));
        assert_eq!(code(&allocated), 200, "Allocate");
        let relayed = relayed_of(&allocated);
        let bind = |peer: SocketAddr| {
            let mut w = request(CHANNEL_BIND);
            let txid = w.transaction_id();
            w.add_attribute(&XorPeerAddress::new(peer, txid)).unwrap();
            w.add_attribute(&ChannelNumber::new(CHANNEL)).unwrap();
            seal(w, &user, &pass, &nonce)
        };
        // Not an opening of the policy: another loopback peer stays refused.
        let other: SocketAddr = format!("127.0.0.1:{}", sfu.port() ^ 1).parse().unwrap();
        assert_eq!(
            code(&turn.ask("ChannelBind", &bind(other))),
            403,
            "a loopback peer"
        );
        assert_eq!(
            code(&turn.ask("ChannelBind", &bind(sfu))),
            200,
            "the SFU's address"
        );
        let (p, offer) = Participant::new(&who.name, who.id, relayed, Instant::now(), &[]);
        (Relayed { p, turn, sfu }, offer)
    }

    fn pump(&mut self, now: Instant, media: bool) {
        while let Some(m) = self.turn.try_recv() {
            if m.len() >= 4 && u16::from_be_bytes([m[0], m[1]]) == CHANNEL {
                let len = u16::from_be_bytes([m[2], m[3]]) as usize;
                self.p.receive(now, self.sfu, &m[4..4 + len]).unwrap();
            }
        }
        if media {
            self.p.send_media(now).unwrap();
        }
        let (turn, sfu) = (&mut self.turn, self.sfu);
        let tcp = matches!(turn, Turn::Tcp(..));
        self.p
            .poll(now, |to, data| {
                assert_eq!(to, sfu, "a relayed participant sends only to the SFU");
                let mut frame = CHANNEL.to_be_bytes().to_vec();
                frame.extend_from_slice(&(data.len() as u16).to_be_bytes());
                frame.extend_from_slice(data);
                if tcp {
                    frame.resize((frame.len() + 3) & !3, 0);
                }
                turn.send(&frame);
            })
            .unwrap();
    }
}

/// How a participant's media reaches the SFU: straight to its port, or through the relay.
enum Media {
    Direct(UdpParticipant),
    Relayed(Relayed),
}

impl Media {
    fn p(&self) -> &Participant {
        match self {
            Media::Direct(m) => &m.p,
            Media::Relayed(m) => &m.p,
        }
    }

    fn p_mut(&mut self) -> &mut Participant {
        match self {
            Media::Direct(m) => &mut m.p,
            Media::Relayed(m) => &mut m.p,
        }
    }

    fn pump(&mut self, now: Instant, media: bool) {
        match self {
            Media::Direct(m) => m.pump(now, media).unwrap(),
            Media::Relayed(m) => m.pump(now, media),
        }
    }
}

/// A participant of a group call: its socket to the hub and its media client.
struct Member {
    hub: Hub,
    media: Media,
    /// Requests sent whose acks may still come.
    next_id: u64,
}

impl Member {
    /// Opens the socket and sends the participant's offer (`call:sfu-offer`). Its ack and the
    /// SFU's answer come in either order: [`Member::signal`] takes both.
    async fn join(d: &Daemon, who: &Person, call: &str) -> Member {
        let localhost = "127.0.0.1".parse().unwrap();
        let (media, offer) = UdpParticipant::bind(&who.name, who.id, localhost, &[]).unwrap();
        Member::join_with(d, who, call, Media::Direct(media), offer).await
    }

    /// [`Member::join`] through the relay, over TCP when `tcp`.
    async fn join_relayed(d: &Daemon, who: &Person, call: &str, tcp: bool) -> Member {
        let (media, offer) = blocking(|| Relayed::allocate(d, who, tcp));
        Member::join_with(d, who, call, Media::Relayed(media), offer).await
    }

    async fn join_with(
        d: &Daemon,
        who: &Person,
        call: &str,
        media: Media,
        offer: String,
    ) -> Member {
        let mut hub = Hub::open(d, who).await;
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
                        .p_mut()
                        .accept_answer(f["data"]["sdp"].as_str().unwrap())
                        .unwrap();
                }
                Some("call:sfu-offer") => {
                    let tracks = f["data"]["tracks"].as_array().unwrap().iter().map(|t| {
                        let user = t["userId"].as_str().unwrap().parse().unwrap();
                        (t["mid"].as_str().unwrap().to_owned(), user)
                    });
                    let sdp = f["data"]["sdp"].as_str().unwrap();
                    let answer = self.media.p_mut().accept_offer(sdp, tracks).unwrap();
                    self.next_id += 1;
                    let id = format!("answer-{}", self.next_id);
                    let frame = json!({"event": "call:sfu-answer", "data": {"callId": call, "sdp": answer}, "id": id});
                    self.hub.send(frame).await;
                    events.push(f);
                }
                Some("ack") => assert!(f["data"]["callId"] == call, "{f}"),
                Some("error") => panic!("{}: {f}", self.media.p().name),
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
            m.media.pump(now, media);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    seen
}

/// The fewest frames any member got of any kind from any other, and who and what that was.
fn fewest_frames(members: &[Member]) -> (usize, String) {
    let mut fewest = (usize::MAX, String::new());
    for m in members {
        for o in members
            .iter()
            .filter(|o| o.media.p().user != m.media.p().user)
        {
            for kind in [MediaKind::Audio, MediaKind::Video] {
                let n = m.media.p().frames_from(o.media.p().user, kind).len();
                if n < fewest.0 {
                    let (me, other) = (&m.media.p().name, &o.media.p().name);
                    fewest = (n, format!("{me} got {n} {kind:?} frames from {other}"));
                }
            }
        }
    }
    fewest
}

/// [`run`] for 4 s, media from 1 s on; then, while some member has 50 frames or fewer of
/// another's audio or video (a loaded box lags), a second more at a time, 16 s in all at
/// most. The call events each member saw.
async fn run_until_media(members: &mut [Member], call: &str) -> Vec<Vec<Value>> {
    let second = Duration::from_secs(1);
    let mut seen = run(members, call, 4 * second, second).await;
    for _ in 0..12 {
        if fewest_frames(members).0 > 50 {
            break;
        }
        for (all, more) in seen
            .iter_mut()
            .zip(run(members, call, second, Duration::ZERO).await)
        {
            all.extend(more);
        }
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
    run_until_media(&mut members, &call).await;
    for m in &members {
        assert_eq!(m.media.p().strays, 0);
    }
    let (fewest, what) = fewest_frames(&members);
    assert!(fewest > 50, "{what}");
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
            .unwrap_or_else(|| panic!("{}: no offer after Carol left: {seen:?}", m.media.p().name));
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

/// Bob and Carol reach nothing but the daemon's TURN relay, Bob over UDP and Carol over TCP;
/// Alice reaches the SFU's port. Their channels to the SFU's address (a loopback one, which the
/// default peer policy refuses for any other peer) carry ICE, DTLS and media, handed between
/// the relay and the SFU inside the process: all three get each other's audio and video.
/// Alice speaks: all three are told she is the active speaker (`call:active-speaker`). The SFU
/// grades each connection from its RTCP view: `call:quality` to the others, `quality_stats`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_participants_reach_the_sfu_inside_the_process() {
    let (d, api, people, call) = answered_group();
    let (alice, bob, carol) = (&people[0], &people[1], &people[2]);
    let mut members = vec![
        Member::join(&d, alice, &call).await,
        Member::join_relayed(&d, bob, &call, false).await,
        Member::join_relayed(&d, carol, &call, true).await,
    ];
    // Alice speaks (her packets' audio level, RFC 6464), the others are quiet.
    for (m, level) in members.iter_mut().zip([-20, -70, -75]) {
        m.media.p_mut().audio_level = Some(level);
    }
    let seen = run_until_media(&mut members, &call).await;
    for (m, seen) in members.iter().zip(&seen) {
        let speakers: Vec<&Value> = seen
            .iter()
            .filter(|f| f["event"] == "call:active-speaker")
            .map(|f| &f["data"])
            .collect();
        let want = json!({"callId": call, "userId": alice.id});
        assert_eq!(speakers, [&want], "{}", m.media.p().name);
    }
    for m in &members {
        assert_eq!(m.media.p().strays, 0);
    }
    let (fewest, what) = fewest_frames(&members);
    assert!(fewest > 50, "{what}");

    // The SFU grades each connection from its RTCP view (every 5 s): the others hear it as
    // `call:quality`, and the call keeps it.
    let mut seen = seen;
    let heard = |seen: &[Vec<Value>]| {
        seen.iter()
            .map(|s| {
                s.iter()
                    .filter(|f| {
                        f["event"] == "call:quality"
                            && f["data"]["stats"]["bitrate"].as_f64() > Some(0.0)
                    })
                    .map(|f| f["data"]["userId"].as_str().unwrap_or_default().to_owned())
                    .collect::<std::collections::HashSet<_>>()
                    .len()
            })
            .min()
            .unwrap_or(0)
    };
    for _ in 0..12 {
        if heard(&seen) == 2 {
            break;
        }
        let more = run(&mut members, &call, Duration::from_secs(1), Duration::ZERO).await;
        for (all, more) in seen.iter_mut().zip(more) {
            all.extend(more);
        }
    }
    assert_eq!(heard(&seen), 2, "{seen:?}");
    let stored = blocking(|| api.call(alice, &call));
    for p in stored["participants"].as_array().unwrap() {
        assert!(p["connectionQuality"].is_string(), "{stored}");
    }

    // Both ways inside the process, counted once (by the SFU), none dropped between the two;
    // the relay accounted them as relayed payload like any peer's.
    let metric = |name: &str| blocking(|| d.metric(name));
    let text = blocking(|| common::metrics_text(d.http));
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // What the SFU sent again is exposed by reason (how much depends on the path's losses and
    // the estimate's probes).
    for reason in ["nack", "probe"] {
        let name = format!("switchboard_sfu_resent_packets_total{{reason=\"{reason}\"}}");
        assert!(text.lines().any(|l| l.starts_with(&name)), "no {name}");
    }
    let from_relay = line("switchboard_sfu_relayed_datagrams_total{direction=\"from_relay\"}");
    let to_relay = line("switchboard_sfu_relayed_datagrams_total{direction=\"to_relay\"}");
    // Measured on a quiet box: 1,220 from the relay (two publishers, 3 s of media), 2,312 to
    // it (each gets the two others'); half of that under load still means media flowed.
    assert!(from_relay > 500, "{from_relay} datagrams from the relay");
    assert!(to_relay > 1000, "{to_relay} datagrams to the relay");
    assert_eq!(
        line("switchboard_sfu_dropped_datagrams_total{reason=\"relay_queue\"}"),
        0
    );
    // (The relay's counters are up to a second behind.)
    let to_peer = line("switchboard_turn_relayed_packets_total{direction=\"to_peer\"}");
    let from_peer = line("switchboard_turn_relayed_packets_total{direction=\"from_peer\"}");
    println!(
        "in-process: {from_relay} datagrams from the relay, {to_relay} to it; the relay's \
         count: {to_peer} to the SFU, {from_peer} from it"
    );
    assert!(to_peer > 500, "{to_peer} relayed to the SFU");
    assert!(from_peer > 1000, "{from_peer} relayed from the SFU");
    assert_eq!(metric("switchboard_turn_hairpin_packets_total"), 0);

    // Over: the call's quality_stats count the SFU's reports of each participant.
    let ended = blocking(|| {
        api.act_ok(alice, &call, "end");
        api.act_ok(bob, &call, "end");
        api.call(carol, &call)
    });
    assert_eq!(ended["status"], "ended", "{ended}");
    let stats = ended["qualityStats"]["participants"]
        .as_array()
        .expect("qualityStats");
    assert_eq!(stats.len(), 3, "{ended}");
    for p in stats {
        assert!(p["sfuReports"].as_u64() >= Some(1), "{p}");
        assert!(p["bitrate"]["max"].as_f64() > Some(0.0), "{p}");
    }
}

/// The SFU's events are for the peer connection that offered them, not for every device of its
/// user: Bob has a second socket (another tab, a phone) that made no peer connection, and gets
/// none of the SFU's answers, offers or active speakers, while both of his sockets get the
/// call's own events. Then that second device makes a connection of its own and offers: it takes
/// over (the newest offer wins), the SFU drops the first connection and the first socket is told
/// `call:sfu-closed` (`replaced`), and the media of the others reaches the new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sfu_events_go_to_the_socket_that_offered() {
    const SFU_EVENTS: [&str; 4] = [
        "call:sfu-offer",
        "call:sfu-answer",
        "call:sfu-closed",
        "call:active-speaker",
    ];
    let (d, api, people, call) = answered_group();
    let (alice, bob, carol) = (&people[0], &people[1], &people[2]);
    let mut phone = Hub::open(&d, bob).await;
    let mut members = vec![
        Member::join(&d, alice, &call).await,
        Member::join(&d, bob, &call).await,
        Member::join(&d, carol, &call).await,
    ];
    for (m, level) in members.iter_mut().zip([-20, -70, -75]) {
        m.media.p_mut().audio_level = Some(level);
    }
    let seen = run_until_media(&mut members, &call).await;
    let (fewest, what) = fewest_frames(&members);
    assert!(fewest > 50, "{what}");
    let speakers = |seen: &[Value]| {
        seen.iter()
            .filter(|f| f["event"] == "call:active-speaker")
            .count()
    };
    assert!(
        speakers(&seen[1]) > 0,
        "Bob's offering socket: {:?}",
        seen[1]
    );
    let mut on_phone = Vec::new();
    while let Next::Frame(f) = phone.next_within(Duration::from_millis(200)).await {
        on_phone.push(f);
    }
    let sfu = |frames: &[Value]| -> Vec<Value> {
        frames
            .iter()
            .filter(|f| SFU_EVENTS.contains(&f["event"].as_str().unwrap_or_default()))
            .cloned()
            .collect()
    };
    assert_eq!(sfu(&on_phone), Vec::<Value>::new(), "Bob's other socket");

    // The call's own events still reach both of Bob's sockets.
    blocking(|| api.act_ok(carol, &call, "end"));
    let carol_left = members.pop().unwrap();
    drop(carol_left);
    let seen = run(&mut members, &call, Duration::from_secs(1), Duration::ZERO).await;
    let left = |frames: &[Value]| {
        frames.iter().any(|f| {
            f["event"] == "call:participant-left" && f["data"]["userId"] == carol.id.to_string()
        })
    };
    assert!(left(&seen[1]), "Bob's offering socket: {:?}", seen[1]);
    let mut on_phone = Vec::new();
    while let Next::Frame(f) = phone.next_within(Duration::from_millis(200)).await {
        on_phone.push(f);
    }
    assert!(left(&on_phone), "Bob's other socket: {on_phone:?}");
    assert_eq!(sfu(&on_phone), Vec::<Value>::new(), "Bob's other socket");

    // The phone makes a connection of its own and offers it: it takes over.
    let localhost = "127.0.0.1".parse().unwrap();
    let (media, offer) = UdpParticipant::bind("Bob's phone", bob.id, localhost, &[]).unwrap();
    let data = json!({"callId": call, "sdp": offer});
    phone
        .send(json!({"event": "call:sfu-offer", "data": data, "id": "take"}))
        .await;
    let first = members.pop().unwrap();
    members.push(Member {
        hub: phone,
        media: Media::Direct(media),
        next_id: 0,
    });
    let mut first = first;
    // (What the SFU sent it before, not taken yet, may come first.)
    let closed = loop {
        let f = first.hub.recv().await;
        if f["event"] == "call:sfu-closed" {
            break f["data"].clone();
        }
    };
    assert_eq!(closed, json!({"callId": call, "reason": "replaced"}));
    let seen = run(&mut members, &call, Duration::from_secs(3), Duration::ZERO).await;
    let from_alice = members[1]
        .media
        .p()
        .frames_from(alice.id, MediaKind::Video)
        .len();
    assert!(
        from_alice > 20,
        "the phone got {from_alice} of Alice's frames: {:?}",
        seen[1]
    );
    // The first socket hears nothing more of the SFU.
    let mut on_first = Vec::new();
    while let Next::Frame(f) = first.hub.next_within(Duration::from_millis(200)).await {
        on_first.push(f);
    }
    assert_eq!(sfu(&on_first), Vec::<Value>::new(), "Bob's first socket");
}

/// Bob's socket goes and his client comes back on a new one (a new id, as Socket.IO's
/// reconnection gives) while his peer connection with the SFU stays up. Carol joins after: the
/// SFU's offer of her tracks reaches Bob's new socket (while no socket holds his connection, his
/// SFU events go to every socket of his), he answers from it and gets her media. Before, the
/// offer was dropped and he never got her.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_back_on_a_new_socket_hears_of_renegotiations() {
    let (d, _, people, call) = answered_group();
    let (bob, carol) = (&people[1], &people[2]);
    // Alice and Bob first.
    let mut members = Vec::new();
    for p in &people[..2] {
        members.push(Member::join(&d, p, &call).await);
    }
    let (fewest, what) = {
        run_until_media(&mut members, &call).await;
        fewest_frames(&members)
    };
    assert!(fewest > 50, "{what}");

    // Bob's socket goes; his client opens another, under a new id.
    members[1].hub.socket().close().await;
    run(
        &mut members[..1],
        &call,
        Duration::from_millis(500),
        Duration::ZERO,
    )
    .await;
    members[1].hub = Hub::open(&d, bob).await;

    members.push(Member::join(&d, carol, &call).await);
    run_until_media(&mut members, &call).await;
    let from_carol = members[1]
        .media
        .p()
        .frames_from(carol.id, MediaKind::Video)
        .len();
    assert!(from_carol > 20, "Bob got {from_carol} of Carol's frames");
}
