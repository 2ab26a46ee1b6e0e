//! The SFU core with real WebRTC peers: str0m participants (full ICE, DTLS-SRTP, frame-level
//! media as an application uses it, [`switchboard_sfu::client`]) join a room, publish Opus and
//! VP8, and receive each other through the SFU. The network is simulated in memory and the
//! clock is virtual: datagrams go from a participant's transmit straight to the SFU's input and
//! back. The `driver` tests do the same over loopback UDP through the SFU's thread.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::rtp::VideoOrientation;
use switchboard_sfu::client::{Participant, VIDEO_FRAME};
use switchboard_sfu::{Caps, Figures, Quality, Sfu, SfuConfig, SfuError, SfuEvent, START_ESTIMATE};
use uuid::Uuid;

const SFU: &str = "10.0.0.1:40000";
const STEP: Duration = Duration::from_millis(5);

/// One-way latency of the simulated network: str0m's bandwidth estimator times itself by the
/// round trip, which must not be zero.
const LATENCY: Duration = Duration::from_millis(10);
/// How long a datagram may wait for a capped link before it is dropped.
const LINK_QUEUE: Duration = Duration::from_millis(100);

struct World {
    now: Instant,
    sfu: Sfu,
    room: Uuid,
    clients: Vec<Participant>,
    /// The active speakers the SFU named, and to whom, in order.
    speakers: Vec<(Uuid, Vec<Uuid>)>,
    /// The participants' connections as the SFU saw them, in order.
    figures: Vec<(Uuid, Figures)>,
    /// The largest offer of the SFU's and answer of a participant's so far, in bytes.
    sdp_sizes: (usize, usize),
    /// Datagrams on their way: when they arrive, from, to, bytes.
    wire: VecDeque<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    /// Links to a client that carry at most so many bytes a second: (bytes/s, when the link is
    /// next free). A datagram waits its turn (up to [`LINK_QUEUE`]; later, it is dropped) and
    /// takes its length's share of a second, as on a real bottleneck.
    caps: HashMap<SocketAddr, (f64, Instant)>,
    /// Datagrams dropped by a cap.
    dropped: u64,
    /// Links to a client that lose one video datagram (over [`AUDIO_MAX`] bytes) in so many:
    /// (one in, counted so far).
    lossy: HashMap<SocketAddr, (u64, u64)>,
    /// Datagrams a lossy link lost.
    lost: u64,
    /// Every datagram the SFU sent to this address, in order.
    tap: Option<(SocketAddr, Vec<Vec<u8>>)>,
    /// Every datagram sent from this address (a client's, to the SFU), in order.
    tap_from: Option<(SocketAddr, Vec<Vec<u8>>)>,
    /// The SFU forwards through its direct egress.
    direct: bool,
}

/// Datagrams this long or shorter carry audio, RTCP or STUN, not video (frames of
/// [`VIDEO_FRAME`] bytes fill a datagram).
const AUDIO_MAX: usize = 300;

impl World {
    fn new() -> World {
        World::with_caps(Caps::default())
    }

    fn with_caps(caps: Caps) -> World {
        World::with(caps, false)
    }

    /// A world whose SFU forwards through its direct egress (`SfuConfig::direct_egress`).
    fn direct() -> World {
        World::with(Caps::default(), true)
    }

    /// A world whose SFU reads publishers' packets with its direct ingress, and forwards
    /// through its direct egress (`SfuConfig::direct_ingress`).
    fn direct_ingress() -> World {
        let mut w = World::with(Caps::default(), true);
        w.sfu = Sfu::new(
            SfuConfig {
                candidates: vec![SFU.parse().unwrap()],
                grace: Duration::from_secs(5),
                caps: Caps::default(),
                start_estimate: START_ESTIMATE,
                direct_egress: true,
                direct_ingress: true,
            },
            switchboard_sfu::crypto(),
        );
        w
    }

    fn with(caps: Caps, direct_egress: bool) -> World {
        let now = Instant::now();
        let config = SfuConfig {
            candidates: vec![SFU.parse().unwrap()],
            grace: Duration::from_secs(5),
            caps,
            start_estimate: START_ESTIMATE,
            direct_egress,
            direct_ingress: false,
        };
        World {
            now,
            sfu: Sfu::new(config, switchboard_sfu::crypto()),
            room: Uuid::new_v4(),
            clients: Vec::new(),
            speakers: Vec::new(),
            figures: Vec::new(),
            sdp_sizes: (0, 0),
            wire: VecDeque::new(),
            caps: HashMap::new(),
            dropped: 0,
            lossy: HashMap::new(),
            lost: 0,
            tap: None,
            tap_from: None,
            direct: direct_egress,
        }
    }

    fn join(&mut self, name: &'static str) -> usize {
        self.join_with_layers(name, &[])
    }

    /// A room of `names`, joined one after another `apart`, each connected when it returns.
    fn room(names: &[&'static str], apart: Duration) -> World {
        World::room_in(World::new(), names, apart)
    }

    fn room_in(mut w: World, names: &[&'static str], apart: Duration) -> World {
        for &name in names {
            w.join(name);
            w.run(apart, false);
        }
        w.run(Duration::from_millis(500), false);
        assert!(
            w.clients.iter().all(|c| c.connected),
            "every client connected"
        );
        w
    }

    fn join_with_layers(&mut self, name: &'static str, layers: &[&str]) -> usize {
        let port = self.clients.len() as u16 + 1;
        let addr = format!("10.0.1.{port}:{}", 50_000 + port).parse().unwrap();
        let (client, offer) = Participant::new(name, Uuid::new_v4(), addr, self.now, layers);
        let user = client.user;
        self.clients.push(client);
        self.sfu.offer(self.now, self.room, user, &offer).unwrap();
        self.clients.len() - 1
    }

    /// Alice publishing three simulcast layers (l, m, h) and Bob watching her, a second into
    /// their media: the world and their indices.
    fn simulcast_and_a_viewer() -> (World, usize, usize) {
        let mut w = World::new();
        let alice = w.join_with_layers("alice", &["l", "m", "h"]);
        w.run(Duration::from_millis(300), false);
        let bob = w.join("bob");
        w.run(Duration::from_millis(500), false);
        w.run(Duration::from_secs(1), true);
        (w, alice, bob)
    }

    /// The layer tags of the video frames `viewer` gets from `from` over the next `d` of media,
    /// and whether each was a key frame.
    fn layers_over(&mut self, viewer: usize, from: Uuid, d: Duration) -> Vec<(u8, bool)> {
        self.clients[viewer].got.clear();
        self.run(d, true);
        layers_seen(&self.clients[viewer], from)
    }

    /// Caps the link from the SFU to client `c` at `kbps` (None: lifts the cap).
    fn cap(&mut self, c: usize, kbps: Option<usize>) {
        let addr = self.clients[c].addr;
        match kbps {
            Some(k) => self.caps.insert(addr, (k as f64 * 1000.0 / 8.0, self.now)),
            None => self.caps.remove(&addr),
        };
    }

    /// Makes the link to client `c` lose one video datagram in `one_in` (None: none).
    fn lose(&mut self, c: usize, one_in: Option<u64>) {
        let addr = self.clients[c].addr;
        match one_in {
            Some(n) => self.lossy.insert(addr, (n, 0)),
            None => self.lossy.remove(&addr),
        };
    }

    /// Puts a datagram on the wire, unless a cap or a lossy link drops it.
    fn send(&mut self, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        if let Some((_, seen)) = self.tap.as_mut().filter(|(a, _)| *a == to) {
            seen.push(data.clone());
        }
        if let Some((_, seen)) = self.tap_from.as_mut().filter(|(a, _)| *a == from) {
            seen.push(data.clone());
        }
        if let Some((one_in, seen)) = self.lossy.get_mut(&to).filter(|_| data.len() > AUDIO_MAX) {
            *seen += 1;
            if (*seen).is_multiple_of(*one_in) {
                self.lost += 1;
                return;
            }
        }
        let mut at = self.now;
        if let Some((rate, free_at)) = self.caps.get_mut(&to) {
            let start = (*free_at).max(self.now);
            if start - self.now > LINK_QUEUE {
                self.dropped += 1;
                return;
            }
            *free_at = start + Duration::from_secs_f64(data.len() as f64 / *rate);
            at = *free_at;
        }
        // In order of arrival: a capped link's datagrams come later than others sent after them.
        let arrival = at + LATENCY;
        let i = self.wire.partition_point(|w| w.0 <= arrival);
        self.wire.insert(i, (arrival, from, to, data));
    }

    /// Everyone's output at `now` put on the wire, and signaling carried, until nothing moves.
    fn exchange(&mut self) {
        let now = self.now;
        for _ in 0..50 {
            let mut out = Vec::new();
            for c in &mut self.clients {
                let from = c.addr;
                c.poll(now, |to, data| out.push((from, to, data.to_vec())))
                    .unwrap();
            }
            while let Some(t) = self.sfu.poll_transmit() {
                out.push((t.source, t.destination, t.contents));
            }
            let mut moved = !out.is_empty();
            for (from, to, data) in out {
                self.send(from, to, data);
            }
            while let Some(e) = self.sfu.poll_event() {
                moved = true;
                self.signal(e);
            }
            if !moved {
                break;
            }
        }
    }

    /// One step of the network, [`STEP`] long: time goes from one event to the next (a
    /// datagram arriving, a deadline of the SFU's, which paces what it sends), then media.
    fn step(&mut self, media: bool) {
        let end = self.now + STEP;
        loop {
            self.exchange();
            let arrival = self.wire.front().map(|w| w.0);
            let next = [arrival, self.sfu.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .map(|t| t.max(self.now + Duration::from_micros(1)));
            let Some(next) = next.filter(|t| *t < end) else {
                break;
            };
            self.now = next;
            self.arrive();
            self.sfu.handle_timeout(self.now);
        }
        self.now = end;
        self.arrive();
        if media {
            for c in &mut self.clients {
                c.send_media(self.now).unwrap();
            }
        }
        self.sfu.handle_timeout(self.now);
        self.exchange();
    }

    /// The datagrams due by now, delivered.
    fn arrive(&mut self) {
        let now = self.now;
        while self.wire.front().is_some_and(|w| w.0 <= now) {
            let (_, from, to, data) = self.wire.pop_front().unwrap();
            if to == SFU.parse().unwrap() {
                self.sfu.handle_datagram(now, from, to, &data);
            } else if let Some(c) = self.clients.iter_mut().find(|c| c.addr == to) {
                c.receive(now, from, &data).unwrap();
            }
        }
    }

    /// What signaling would carry: the SFU's answers and offers to the clients, and their
    /// answers back.
    fn signal(&mut self, e: SfuEvent) {
        let (room, now) = (self.room, self.now);
        match e {
            SfuEvent::Answer { user, sdp, .. } => {
                let c = self.clients.iter_mut().find(|c| c.user == user).unwrap();
                c.accept_answer(&sdp).unwrap();
            }
            SfuEvent::Offer {
                user, sdp, tracks, ..
            } => {
                let c = self.clients.iter_mut().find(|c| c.user == user).unwrap();
                let answer = c
                    .accept_offer(&sdp, tracks.into_iter().map(|t| (t.mid, t.user)))
                    .unwrap();
                self.sdp_sizes.0 = self.sdp_sizes.0.max(sdp.len());
                self.sdp_sizes.1 = self.sdp_sizes.1.max(answer.len());
                self.sfu.answer(now, room, user, &answer).unwrap();
            }
            SfuEvent::ActiveSpeaker { user, to, .. } => self.speakers.push((user, to)),
            SfuEvent::Quality { user, figures, .. } => self.figures.push((user, figures)),
            SfuEvent::Connected { .. } | SfuEvent::Gone { .. } => {}
        }
    }

    fn run(&mut self, d: Duration, media: bool) {
        let steps = d.as_millis() / STEP.as_millis();
        for _ in 0..steps {
            self.step(media);
        }
    }
}

#[test]
fn three_participants_each_receive_the_other_two() {
    three_participants(World::new());
}

#[test]
fn three_participants_each_receive_the_other_two_through_the_direct_egress() {
    three_participants(World::direct());
}

/// The publishers' packets read by the SFU's own ingress once str0m knows their streams:
/// all but a stream's first few.
#[test]
fn three_participants_each_receive_the_other_two_through_the_direct_ingress() {
    let w = three_participants(World::direct_ingress());
    let c = w.sfu.counters();
    println!(
        "{} packets received, {} through the direct ingress",
        c.received, c.ingress
    );
    assert!(c.ingress * 100 > c.received * 95, "{c:?}");
}

/// With the direct ingress, the transport-wide feedback a publisher gets (its browser's
/// bandwidth estimate lives on it) is the SFU's own: one RTCP sender reports every packet Alice
/// numbered as received, read back by our parser and by str0m's, and none of str0m's
/// feedback goes out.
#[test]
fn the_direct_ingress_reports_every_arrival_to_the_publisher() {
    use str0m::rtp::rtcp::Rtcp;
    use switchboard_sfu::rtp::{ExtIds, RtpView};

    let mut w = World::direct_ingress();
    // In three layers. (Her offer declares each layer's SSRC, so str0m reads none of her RTP
    // here and makes no feedback of its own; that str0m's is taken out when it does, as with a
    // browser whose layers it learns from their first packets, is `egress::tests`'.)
    let alice = w.join_with_layers("alice", &["l", "m", "h"]);
    w.run(Duration::from_millis(300), false);
    w.join("bob");
    w.run(Duration::from_millis(500), false);
    w.run(Duration::from_millis(500), true);
    let addr = w.clients[alice].addr;
    w.tap = Some((addr, Vec::new()));
    w.tap_from = Some((addr, Vec::new()));
    w.run(Duration::from_secs(2), true);
    let numbered = w.tap_from.take().unwrap().1;
    // Time for the feedback about her last packets.
    w.run(Duration::from_millis(200), true);
    let (_, video_mid) = w.clients[alice].sending_mids();
    let ids = ExtIds::of(
        w.clients[alice]
            .rtc
            .media(video_mid)
            .unwrap()
            .remote_extmap(),
    );
    // What she numbered.
    let sent: HashSet<u16> = numbered
        .iter()
        .filter(|d| d.len() >= 12 && d[0] >> 6 == 2 && !(192..=223).contains(&d[1]))
        .filter_map(|d| RtpView::parse_header(d, &ids)?.ext.transport_cc)
        .collect();
    // What the SFU's feedback said arrived, and from which RTCP senders.
    let keys = w.sfu.srtp_keys(w.room, w.clients[alice].user).unwrap();
    let mut read = keys.reader_of_sent(&switchboard_sfu::crypto());
    let (mut clear, mut senders, mut reported) = (Vec::new(), HashSet::new(), HashSet::new());
    let mut messages = 0;
    for d in w.tap.take().unwrap().1 {
        if d.len() < 12 || d[0] >> 6 != 2 || !(192..=223).contains(&d[1]) {
            continue;
        }
        read.unprotect_rtcp(&d, &mut clear).expect("SRTCP checks");
        let mut at = 0;
        while at + 4 <= clear.len() {
            let len = 4 * (usize::from(u16::from_be_bytes([clear[at + 2], clear[at + 3]])) + 1);
            let p = &clear[at..at + len];
            if p[1] == 205 && p[0] & 0x1f == 15 {
                messages += 1;
                senders.insert(u32::from_be_bytes(p[4..8].try_into().unwrap()));
                let f = switchboard_sfu::twcc::parse(p).expect("our parser reads it");
                let unpadded = len
                    - if p[0] & 0x20 != 0 {
                        usize::from(p[len - 1])
                    } else {
                        0
                    };
                assert!(
                    matches!(Rtcp::try_from(&p[..unpadded]), Ok(Rtcp::Twcc(_))),
                    "str0m reads it"
                );
                for (i, a) in f.arrivals.iter().enumerate() {
                    if a.is_some() {
                        reported.insert(f.base.wrapping_add(i as u16));
                    }
                }
            }
            at += len;
        }
    }
    println!(
        "{} packets numbered, {} reported received in {messages} messages from {senders:?}",
        sent.len(),
        reported.len()
    );
    assert_eq!(senders.len(), 1, "one feedback sender: {senders:?}");
    // 2 s at one message per 50 ms or so.
    assert!(messages >= 20, "{messages} messages");
    let missing = sent.difference(&reported).count();
    assert_eq!(missing, 0, "{missing} of {} never reported", sent.len());
}

fn three_participants(w: World) -> World {
    let mut w = World::room_in(w, &["alice", "bob", "carol"], Duration::from_millis(300));
    w.run(Duration::from_secs(3), true);

    let users: Vec<(Uuid, u8)> = w.clients.iter().map(|c| (c.user, c.initial())).collect();
    for c in &w.clients {
        assert_eq!(c.strays, 0, "{}: media on an m-line no offer named", c.name);
        for &(other, initial) in &users {
            if other == c.user {
                assert!(
                    !c.got.keys().any(|(u, _)| *u == other),
                    "{} hears itself",
                    c.name
                );
                continue;
            }
            let audio = c.got.get(&(other, MediaKind::Audio)).map_or(&[][..], |v| v);
            let video = c.got.get(&(other, MediaKind::Video)).map_or(&[][..], |v| v);
            // 3 s of 5 ms audio frames; video every 15 ms.
            for (kind, frames, least) in [("audio", audio, 400), ("video", video, 100)] {
                let (name, from) = (&c.name, initial as char);
                let n = frames.len();
                assert!(n > least, "{name}: {n} {kind} frames of {from}");
            }
            assert!(audio.iter().all(|f| f[0] == b'a' && f[1] == initial));
            assert!(video
                .iter()
                .all(|f| f[1] == b'v' && f[2] == initial && f.len() == VIDEO_FRAME));
            // In order, none twice.
            let seqs: Vec<u64> = audio
                .iter()
                .map(|f| u64::from_be_bytes(f[2..10].try_into().unwrap()))
                .collect();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "{}: audio of {} out of order",
                c.name,
                initial as char
            );
        }
    }
    let counters = w.sfu.counters();
    println!(
        "{counters:?}; alice got {:?}",
        w.clients[0]
            .got
            .iter()
            .map(|(k, v)| (k.1, v.len()))
            .collect::<Vec<_>>()
    );
    assert_eq!(counters.unknown, 0);
    // Each packet to the two others, but for the few that came before a subscriber's m-line.
    assert!(
        counters.forwarded * 100 >= 2 * counters.received * 95,
        "{counters:?}"
    );
    w
}

/// str0m's pacer lets one packet go per deadline it sets and holds the next until that deadline
/// is handled; a driver's timer wakes at best every millisecond. A key frame of a dozen packets
/// must still leave for its subscriber in the instant it came: before the fix, one packet did
/// per call, and a room of twenty lost two thirds of its video (`bench/sfu.sh`).
#[test]
fn a_burst_leaves_for_the_subscriber_in_the_instant_it_came() {
    let mut w = World::room(&["alice", "bob"], Duration::from_millis(300));
    w.run(Duration::from_secs(1), true);
    w.run(Duration::from_millis(100), false);
    assert!(w.wire.is_empty());
    // Alice's next frames 14 KB: a dozen packets each.
    let (t, alice, bob) = (w.now, w.clients[0].addr, w.clients[1].addr);
    w.clients[0].set_frame_sizes(&[14_000]);
    let mut burst = Vec::new();
    for _ in 0..3 {
        w.clients[0].send_media(t).unwrap();
    }
    w.clients[0]
        .poll(t, |to, data| burst.push((to, data.to_vec())))
        .unwrap();
    assert!(burst.len() > 12, "{} datagrams", burst.len());
    for (to, data) in &burst {
        w.sfu.handle_datagram(t, alice, *to, data);
    }
    w.sfu.handle_timeout(t);
    let to_bob = std::iter::from_fn(|| w.sfu.poll_transmit())
        .filter(|x| x.destination == bob)
        .count();
    assert!(
        to_bob >= burst.len(),
        "{to_bob} datagrams to Bob of Alice's {}",
        burst.len()
    );
}

/// A forwarded video packet lost on the way to a subscriber is sent again from the SFU's history
/// when the subscriber asks for it (NACK, RFC 4585; resent on the RTX stream, RFC 4588): Bob's
/// link loses one video datagram in seven, and he still gets every frame of Alice's whole.
#[test]
fn a_video_packet_lost_on_the_way_to_a_subscriber_is_sent_again() {
    lost_and_sent_again(World::new());
}

#[test]
fn a_video_packet_lost_on_the_way_to_a_subscriber_is_sent_again_by_the_direct_egress() {
    lost_and_sent_again(World::direct());
}

fn lost_and_sent_again(w: World) {
    let mut w = World::room_in(w, &["alice", "bob"], Duration::from_millis(300));
    w.run(Duration::from_secs(1), true);
    let (alice, bob) = (w.clients[0].user, 1);
    let frames = |w: &World| w.clients[bob].frames_from(alice, MediaKind::Video).len();
    let (gaps, before) = (w.clients[bob].gaps, frames(&w));
    w.lose(bob, Some(7));
    w.run(Duration::from_secs(2), true);
    w.lose(bob, None);
    // The last losses' resends land.
    w.run(Duration::from_millis(300), false);
    let got = frames(&w) - before;
    println!("{} video datagrams lost, {got} frames", w.lost);
    // 2 s of a frame every 15 ms, two datagrams each.
    assert!(w.lost > 30, "{} lost", w.lost);
    assert!(got >= 130, "{got} frames of Alice's");
    assert_eq!(w.clients[bob].gaps, gaps, "a frame came after a gap");
    let video = w.clients[bob].frames_from(alice, MediaKind::Video);
    assert!(video.iter().all(|f| f.len() == VIDEO_FRAME));
    // The direct egress counts what it resent: each lost packet at least once (str0m's path
    // resends inside str0m, uncounted).
    if w.direct {
        let resent = w.sfu.counters().resent;
        assert!(resent >= w.lost, "{resent} resent of {} lost", w.lost);
    }
}

/// The SRTP packet index of RTP datagram `d` (its stream's rollover counter and sequence number),
/// as a receiver keeps it: one `srtp::Rollover` per SSRC in `rocs`.
fn srtp_index(rocs: &mut HashMap<u32, switchboard_sfu::srtp::Rollover>, d: &[u8]) -> u64 {
    let seq = u16::from_be_bytes([d[2], d[3]]);
    let ssrc = u32::from_be_bytes(d[8..12].try_into().unwrap());
    let rollover = rocs.entry(ssrc).or_default();
    let index = rollover.estimate(seq).expect("an index");
    rollover.accept(index);
    index
}

/// The SFU's SRTP of its own (`switchboard_sfu::srtp`) is str0m's, byte for byte: with the keys
/// the SFU's DTLS exported for Bob, every RTP and RTCP datagram it sent him (str0m protected
/// them) checks and decrypts, and protecting each again gives the same bytes.
#[test]
fn our_srtp_reads_and_writes_what_str0m_sends() {
    let mut w = World::new();
    w.join("alice");
    w.run(Duration::from_millis(300), false);
    let bob = w.join("bob");
    w.tap = Some((w.clients[bob].addr, Vec::new()));
    w.run(Duration::from_millis(500), false);
    w.run(Duration::from_secs(2), true);
    let keys = w
        .sfu
        .srtp_keys(w.room, w.clients[bob].user)
        .expect("Bob's keys, once connected");
    let crypto = switchboard_sfu::crypto();
    let (mut read, mut write) = (keys.reader_of_sent(&crypto), keys.sender(&crypto));
    let (mut clear, mut again) = (Vec::new(), Vec::new());
    let mut rocs = HashMap::new();
    let (mut rtp, mut rtcp) = (0, 0);
    for d in w.tap.take().unwrap().1 {
        // STUN starts 0b00, DTLS 20 to 63 (RFC 7983); RTP and RTCP are version 2.
        if d.len() < 12 || d[0] >> 6 != 2 {
            continue;
        }
        if (192..=223).contains(&d[1]) {
            let index = read.unprotect_rtcp(&d, &mut clear).expect("SRTCP checks");
            write.protect_rtcp_at(&clear, index, &mut again).unwrap();
            rtcp += 1;
        } else {
            let index = srtp_index(&mut rocs, &d);
            read.unprotect_rtp(&d, index, &mut clear)
                .expect("SRTP checks");
            write.protect_rtp(&clear, index, &mut again).unwrap();
            rtp += 1;
        }
        assert_eq!(again, d, "protected again, the same bytes");
    }
    println!("{:?}: {rtp} RTP, {rtcp} RTCP datagrams", keys.profile());
    // 2 s of Alice's audio (5 ms frames) and video, and the reports.
    assert!(rtp > 400, "{rtp} RTP datagrams");
    assert!(rtcp > 0, "{rtcp} RTCP datagrams");
}

/// What an ingress of our own needs, checked against a str0m publisher: with the keys the
/// SFU's DTLS exported for Alice, every RTP datagram she sends (three simulcast layers and
/// audio) checks and decrypts at the index `srtp::Rollover` estimates, and `rtp::RtpView`
/// reads it with the extension ids she negotiated: each SSRC's sequence numbers follow one
/// another, the transport-wide sequence runs on across all her packets, her audio carries the
/// level she speaks at, and her video names its three layers.
#[test]
fn our_srtp_and_rtp_reader_read_what_a_publisher_sends() {
    use switchboard_sfu::rtp::{ExtIds, RtpView};
    use switchboard_sfu::srtp::Rollover;

    let mut w = World::new();
    let alice = w.join_with_layers("alice", &["l", "m", "h"]);
    w.clients[alice].audio_level = Some(-20);
    w.run(Duration::from_millis(300), false);
    w.join("bob");
    w.run(Duration::from_millis(500), false);
    w.tap_from = Some((w.clients[alice].addr, Vec::new()));
    w.run(Duration::from_secs(2), true);
    let keys = w
        .sfu
        .srtp_keys(w.room, w.clients[alice].user)
        .expect("Alice's keys, once connected");
    let mut read = keys.receiver(&switchboard_sfu::crypto());
    let (audio_mid, video_mid) = w.clients[alice].sending_mids();
    let ids_of = |mid| ExtIds::of(w.clients[alice].rtc.media(mid).unwrap().remote_extmap());
    let (audio_ids, video_ids) = (ids_of(audio_mid), ids_of(video_mid));
    assert!(audio_ids.audio_level.is_some() && video_ids.rid.is_some());
    assert!(audio_ids.transport_cc.is_some());
    let audio_pt = |pt: u8| {
        w.clients[alice]
            .rtc
            .codec_config()
            .find(|p| *p.pt() == pt)
            .is_some_and(|p| p.spec().codec == str0m::format::Codec::Opus)
    };
    let mut rollovers: HashMap<u32, Rollover> = HashMap::new();
    let mut last_seq: HashMap<u32, u16> = HashMap::new();
    let (mut clear, mut twcc, mut rids) = (Vec::new(), None::<u16>, HashSet::new());
    let (mut audio, mut video) = (0, 0);
    for d in w.tap_from.take().unwrap().1 {
        if d.len() < 12 || d[0] >> 6 != 2 || (192..=223).contains(&d[1]) {
            continue; // STUN, DTLS, RTCP
        }
        let ssrc = u32::from_be_bytes(d[8..12].try_into().unwrap());
        let seq = u16::from_be_bytes([d[2], d[3]]);
        let rollover = rollovers.entry(ssrc).or_default();
        let index = rollover.estimate(seq).expect("an index");
        read.unprotect_rtp(&d, index, &mut clear)
            .expect("SRTP checks");
        rollover.accept(index);
        let is_audio = audio_pt(clear[1] & 0x7f);
        let ids = if is_audio { &audio_ids } else { &video_ids };
        let v = RtpView::parse(&clear, ids).expect("RTP reads");
        assert_eq!((v.ssrc, v.seq), (ssrc, seq));
        if let Some(last) = last_seq.insert(ssrc, v.seq) {
            assert_eq!(
                v.seq,
                last.wrapping_add(1),
                "SSRC {ssrc}: in order, none lost"
            );
        }
        let t = v
            .ext
            .transport_cc
            .expect("every packet has its TWCC number");
        if let Some(before) = twcc {
            assert_eq!(
                t,
                before.wrapping_add(1),
                "one TWCC sequence for the connection"
            );
        }
        twcc = Some(t);
        assert!(!v.payload.is_empty());
        if is_audio {
            assert_eq!(v.ext.audio_level, Some((-20, true)));
            audio += 1;
        } else {
            if let Some(rid) = v.ext.rid {
                rids.insert(String::from_utf8(rid.to_vec()).unwrap());
            }
            video += 1;
        }
    }
    println!(
        "{:?}: {audio} audio, {video} video packets; layers {rids:?}",
        keys.profile()
    );
    // 2 s of 5 ms audio frames, and three layers of video.
    assert!(audio > 300, "{audio} audio packets");
    assert!(video > 100, "{video} video packets");
    let want: HashSet<String> = ["l", "m", "h"].map(String::from).into();
    assert_eq!(rids, want);
}

/// Through the direct egress, the sender reports str0m makes for Bob's m-lines (it sent nothing
/// on them) are corrected on the way out: each counts exactly the packets and payload octets
/// sent on its SSRC before it, and its RTP time is the last packet's or a little later.
#[test]
fn the_direct_egress_corrects_the_sender_reports_of_what_it_sent() {
    let mut w = World::direct();
    w.join("alice");
    w.run(Duration::from_millis(300), false);
    let bob = w.join("bob");
    w.tap = Some((w.clients[bob].addr, Vec::new()));
    w.run(Duration::from_millis(500), false);
    w.run(Duration::from_secs(6), true);
    let keys = w.sfu.srtp_keys(w.room, w.clients[bob].user).unwrap();
    let mut read = keys.reader_of_sent(&switchboard_sfu::crypto());
    let (mut clear, mut rocs) = (Vec::new(), HashMap::new());
    // By SSRC: packets, payload octets, last RTP time.
    let mut sent: HashMap<u32, (u32, u32, u32)> = HashMap::new();
    let mut reports = 0;
    for d in w.tap.take().unwrap().1 {
        if d.len() < 12 || d[0] >> 6 != 2 {
            continue;
        }
        if !(192..=223).contains(&d[1]) {
            let ssrc = u32::from_be_bytes(d[8..12].try_into().unwrap());
            let index = srtp_index(&mut rocs, &d);
            read.unprotect_rtp(&d, index, &mut clear).unwrap();
            let header = switchboard_sfu::srtp::rtp_header_len(&clear).unwrap();
            let s = sent.entry(ssrc).or_default();
            s.0 += 1;
            s.1 += (clear.len() - header) as u32;
            s.2 = u32::from_be_bytes(clear[4..8].try_into().unwrap());
            continue;
        }
        read.unprotect_rtcp(&d, &mut clear).unwrap();
        let mut at = 0;
        while at + 4 <= clear.len() {
            let len = 4 * (usize::from(u16::from_be_bytes([clear[at + 2], clear[at + 3]])) + 1);
            let p = &clear[at..at + len];
            let ssrc = u32::from_be_bytes(p[4..8].try_into().unwrap());
            if let (200, Some(&(packets, octets, last))) = (p[1], sent.get(&ssrc)) {
                let word = |i: usize| u32::from_be_bytes(p[i..i + 4].try_into().unwrap());
                assert_eq!((word(20), word(24)), (packets, octets), "SR of {ssrc}");
                let ahead = word(16).wrapping_sub(last);
                assert!(
                    ahead < 90_000,
                    "SR of {ssrc}: RTP time {ahead} after the last"
                );
                reports += 1;
            }
            at += len;
        }
    }
    println!("{reports} sender reports of {} streams checked", sent.len());
    assert_eq!(sent.len(), 2, "Alice's audio and video");
    assert!(reports >= 2, "{reports} sender reports");
}

/// A phone sends its video unrotated with the rotation in the video orientation extension
/// (3GPP TS 26.114): the others' browsers rotate by it, so it is forwarded, through either
/// egress.
#[test]
fn the_video_orientation_of_a_phone_reaches_the_others() {
    for w in [World::new(), World::direct()] {
        let mut w = World::room_in(w, &["alice", "bob"], Duration::from_millis(300));
        w.clients[0].orientation = Some(VideoOrientation::Deg90);
        w.run(Duration::from_secs(1), true);
        assert_eq!(w.clients[1].orientation_got, Some(VideoOrientation::Deg90));
        w.clients[0].orientation = Some(VideoOrientation::Deg180);
        w.run(Duration::from_millis(500), true);
        assert_eq!(w.clients[1].orientation_got, Some(VideoOrientation::Deg180));
    }
}

#[test]
fn a_leaver_is_renegotiated_away_and_a_late_joiner_gets_everyone() {
    let mut w = World::room(&["alice", "bob", "carol"], Duration::from_millis(300));
    w.run(Duration::from_secs(1), true);
    let (room, carol) = (w.room, w.clients[2].user);
    w.sfu.leave(w.now, room, carol);
    w.clients.remove(2);
    assert_eq!(w.sfu.room_size(room), 2);
    // Alice and Bob answer offers that stop Carol's m-lines: their transceivers stop.
    w.run(Duration::from_millis(300), true);
    for c in &mut w.clients {
        let stopped = c
            .owners
            .iter()
            .filter(|(_, u)| **u == carol)
            .filter(|(mid, _)| {
                let mid = Mid::from(mid.as_str());
                c.rtc
                    .media(mid)
                    .is_none_or(|m| m.direction() == Direction::Inactive)
            })
            .count();
        assert_eq!(stopped, 2, "{}: Carol's two m-lines stopped", c.name);
    }

    // Dave joins late: he gets Alice's and Bob's tracks, and they get his.
    let dave = w.join("dave");
    w.run(Duration::from_millis(500), false);
    for c in &mut w.clients {
        c.got.clear();
    }
    w.run(Duration::from_secs(1), true);
    let users: Vec<Uuid> = w.clients.iter().map(|c| c.user).collect();
    for c in &w.clients {
        for &u in users.iter().filter(|u| **u != c.user) {
            for kind in [MediaKind::Audio, MediaKind::Video] {
                let n = c.got.get(&(u, kind)).map_or(0, Vec::len);
                assert!(n > 20, "{}: {n} {kind:?} frames from {u}", c.name);
            }
        }
    }
    assert!(w.clients[dave].got.keys().all(|(u, _)| *u != carol));
}

#[test]
fn datagrams_of_no_participant_are_dropped_and_counted() {
    let mut w = World::new();
    w.join("alice");
    w.run(Duration::from_millis(300), false);
    let before = w.sfu.counters();
    let (from, to) = ("10.9.9.9:1234".parse().unwrap(), SFU.parse().unwrap());
    // RTP, DTLS, garbage, and a binding request naming a ufrag nobody has.
    let mut binding = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
    binding.extend([1u8; 12]);
    binding.extend([0x00, 0x06, 0x00, 0x07]);
    binding.extend(b"nobody:x\0");
    binding.truncate(32);
    for d in [
        &[0x80u8, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2][..],
        &[0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[0xff; 3],
        &[],
        &binding,
    ] {
        w.sfu.handle_datagram(w.now, from, to, d);
    }
    assert_eq!(w.sfu.counters().unknown, before.unknown + 5);
    assert!(w.sfu.poll_transmit().is_none(), "nothing answers them");
}

#[test]
fn an_offer_whose_answer_is_refused_is_made_again() {
    let mut w = World::new();
    w.join("alice");
    w.run(Duration::from_millis(300), false);
    // Bob joins: the SFU answers him, then offers him Alice's two tracks.
    let bob = w.join("bob");
    let (room, user) = (w.room, w.clients[bob].user);
    let mut offer = None;
    while let Some(e) = w.sfu.poll_event() {
        match e {
            SfuEvent::Offer { user: u, sdp, .. } if u == user => offer = Some(sdp),
            e => w.signal(e),
        }
    }
    let offer = SdpOffer::from_sdp_string(&offer.expect("an offer of Alice's tracks")).unwrap();
    // His answer without its last m-line: SDP, which the SFU's connection refuses.
    let c = &mut w.clients[bob];
    let answer = c.rtc.sdp_api().accept_offer(offer).unwrap().to_sdp_string();
    let cut = &answer[..answer.rfind("\r\nm=").unwrap() + 2];
    let refused = w.sfu.answer(w.now, room, user, cut);
    assert!(matches!(refused, Err(SfuError::Refused(_))), "{refused:?}");
    // Before the fix the offer's m-lines stayed "offered" for good: Bob never got them.
    let again = std::iter::from_fn(|| w.sfu.poll_event()).find_map(|e| match e {
        SfuEvent::Offer {
            user: u, tracks, ..
        } if u == user => Some(tracks),
        _ => None,
    });
    let tracks = again.expect("the offer made again");
    assert_eq!(tracks.len(), 2, "{tracks:?}");
    assert!(tracks.iter().all(|t| t.user == w.clients[0].user));
}

/// The room's active speaker follows the audio level (RFC 6464) of the publishers' packets:
/// Alice speaks and everyone is told; Bob takes over when she stops; a late joiner is told who
/// speaks when its media connects.
#[test]
fn the_active_speaker_follows_the_audio_level() {
    let mut w = World::new();
    for (name, level) in [("alice", -20), ("bob", -70), ("carol", -75)] {
        let c = w.join(name);
        w.clients[c].audio_level = Some(level);
        w.run(Duration::from_millis(300), false);
    }
    w.run(Duration::from_millis(500), false);
    assert!(w.clients.iter().all(|c| c.connected));
    w.run(Duration::from_secs(2), true);
    let users: Vec<Uuid> = w.clients.iter().map(|c| c.user).collect();
    let (alice, bob) = (users[0], users[1]);
    let mut everyone = users.clone();
    everyone.sort();
    let told = |w: &World, who: Uuid| {
        w.speakers
            .iter()
            .filter(|(u, _)| *u == who)
            .map(|(_, to)| {
                let mut to = to.clone();
                to.sort();
                to
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(told(&w, alice), [everyone.clone()], "{:?}", w.speakers);
    assert_eq!(w.speakers.len(), 1, "{:?}", w.speakers);

    // Alice stops, Bob speaks: Bob, once.
    w.clients[0].audio_level = Some(-80);
    w.clients[1].audio_level = Some(-25);
    w.run(Duration::from_secs(2), true);
    assert_eq!(told(&w, bob), [everyone], "{:?}", w.speakers);
    assert_eq!(w.speakers.len(), 2, "{:?}", w.speakers);

    // Dave joins: told that Bob speaks, on its own.
    let dave = w.join("dave");
    w.run(Duration::from_secs(1), true);
    assert!(w.clients[dave].connected);
    assert_eq!(w.speakers.last(), Some(&(bob, vec![w.clients[dave].user])));
}

/// Every [`STATS_EVERY`](switchboard_sfu::core::quality::STATS_EVERY) the SFU grades each
/// connected participant from its own RTCP view: the media bit rate it sends them, the loss
/// either way (none on this network), the jitter and the round trip (one 5 ms step).
#[test]
fn each_participant_connection_is_measured_by_the_sfu() {
    connections_measured(World::new());
}

/// The same through the direct egress: the bit rate is what it sent, the loss what its TWCC
/// feedback told, the round trip by the receiver reports of the sender reports it corrected.
#[test]
fn each_participant_connection_is_measured_through_the_direct_egress() {
    connections_measured(World::direct());
}

fn connections_measured(mut w: World) {
    for name in ["alice", "bob"] {
        w.join(name);
        w.run(Duration::from_millis(300), false);
    }
    // Two stats intervals: the first gives the bit rate's start.
    w.run(Duration::from_millis(10_500), true);
    for c in &w.clients {
        let mine: Vec<&Figures> = w
            .figures
            .iter()
            .filter(|(u, _)| *u == c.user)
            .map(|(_, f)| f)
            .collect();
        assert!(mine.len() >= 2, "{}: {mine:?}", c.name);
        let last = mine.last().unwrap();
        println!("{}: {last:?}", c.name);
        // The other's audio and video: 1,800-byte frames at 66 a second, and audio.
        let bitrate = last.bitrate.expect("a bit rate");
        assert!(bitrate > 800_000.0, "{}: {last:?}", c.name);
        assert_eq!(
            last.loss_percent.unwrap_or(0.0),
            0.0,
            "{}: {last:?}",
            c.name
        );
        // Measured, but not small: the test clients stamp 20 ms of audio per 5 ms step.
        assert!(last.jitter_ms.is_some(), "{}: {last:?}", c.name);
        assert!(
            last.rtt_ms.is_some_and(|r| r < 50.0),
            "{}: {last:?}",
            c.name
        );
    }
}

/// A participant's caps: an offer sending more tracks than `max_tracks` is refused (its m-lines
/// that only receive do not count), and a publisher is told the video bit rate it may send
/// (RTCP REMB, which browsers take as their ceiling) as its video arrives and every second.
#[test]
fn a_participant_sends_within_its_caps() {
    let mut w = World::with_caps(Caps {
        max_tracks: 1,
        max_bitrate: Some(800_000),
    });
    let addr = "10.0.1.9:50009".parse().unwrap();
    let (_, offer) = Participant::new("greedy", Uuid::new_v4(), addr, w.now, &[]);
    let refused = w.sfu.offer(w.now, w.room, Uuid::new_v4(), &offer);
    assert_eq!(refused, Err(SfuError::TooManyTracks(2, 1)));
    assert_eq!(w.sfu.room_size(w.room), 0);

    let mut w = World::with_caps(Caps {
        max_tracks: 2,
        max_bitrate: Some(800_000),
    });
    let alice = w.join("alice");
    w.run(Duration::from_millis(300), false);
    w.join("bob");
    w.run(Duration::from_millis(500), false);
    assert_eq!(w.clients[alice].remb, None, "no video yet, nothing to cap");
    w.run(Duration::from_millis(2500), true);
    assert_eq!(w.clients[alice].remb, Some(800_000));
}

/// A room of twenty (the spec's largest call): every participant negotiates, the last joiner is
/// offered the 38 tracks of the 19 others. What it answers must fit one frame of the hub
/// (64 KiB, as JSON); prints the sizes.
#[test]
fn a_room_of_twenty_negotiates_within_a_hub_frame() {
    const NAMES: [&str; 20] = [
        "p00", "p01", "p02", "p03", "p04", "p05", "p06", "p07", "p08", "p09", "p10", "p11", "p12",
        "p13", "p14", "p15", "p16", "p17", "p18", "p19",
    ];
    let w = World::room(&NAMES, Duration::from_millis(100));
    let (offer, answer) = w.sdp_sizes;
    println!("room of 20: largest SFU offer {offer} bytes, largest answer {answer} bytes");
    let last = w.clients.last().unwrap();
    assert_eq!(
        last.owners.len(),
        38,
        "the last joiner is offered everyone's tracks"
    );
    // As JSON each line's CRLF takes four bytes instead of two (lines of ~40 bytes).
    assert!(answer + answer / 20 + 200 < 64 * 1024, "{answer}");
}

/// The layer tags of the video frames `c` got from `from`, and whether each was a key frame.
fn layers_seen(c: &Participant, from: Uuid) -> Vec<(u8, bool)> {
    c.got
        .get(&(from, MediaKind::Video))
        .map_or(Vec::new(), |v| {
            v.iter().map(|f| (f[3], f[0] == 0)).collect()
        })
}

/// Whether frames were seen and all of them are of `layer`.
fn only(seen: &[(u8, bool)], layer: u8) -> bool {
    !seen.is_empty() && seen.iter().all(|(l, _)| *l == layer)
}

#[test]
fn a_subscriber_gets_one_simulcast_layer_and_switches_at_a_key_frame() {
    let (mut w, alice, bob) = World::simulcast_and_a_viewer();
    let (room, a, b) = (w.room, w.clients[alice].user, w.clients[bob].user);

    // By default the best layer, and only it.
    let seen = layers_seen(&w.clients[bob], a);
    assert!(seen.len() > 50, "{} frames", seen.len());
    assert!(only(&seen, b'h'), "{seen:?}");
    let received = w.sfu.counters().received;
    assert!(received > 3 * seen.len() as u64, "Alice sends three layers");

    // A thumbnail: the SFU asks Alice for a key frame on the low layer and moves Bob to it
    // there, carrying the numbering on (no gap Bob's client would see).
    w.clients[bob].got.clear();
    w.sfu.set_quality(w.now, room, b, a, Quality::Low).unwrap();
    w.run(Duration::from_secs(1), true);
    let seen = layers_seen(&w.clients[bob], a);
    let first_low = seen
        .iter()
        .position(|(l, _)| *l == b'l')
        .expect("the low layer came");
    assert!(seen[first_low].1, "the switch is at a key frame: {seen:?}");
    assert!(seen[..first_low].iter().all(|(l, _)| *l == b'h'));
    assert!(
        seen[first_low..].iter().all(|(l, _)| *l == b'l'),
        "{seen:?}"
    );
    assert!(seen.len() - first_low > 50, "{seen:?}");
    assert_eq!(w.clients[bob].gaps, 0, "no frame after a gap");

    // Off, then back on.
    w.sfu.set_quality(w.now, room, b, a, Quality::Off).unwrap();
    w.run(Duration::from_millis(200), true);
    w.clients[bob].got.clear();
    w.run(Duration::from_millis(500), true);
    assert!(layers_seen(&w.clients[bob], a).is_empty());
    w.sfu
        .set_quality(w.now, room, b, a, Quality::Medium)
        .unwrap();
    w.run(Duration::from_millis(500), true);
    let seen = layers_seen(&w.clients[bob], a);
    assert!(
        seen.first().is_some_and(|(l, key)| *l == b'm' && *key),
        "{seen:?}"
    );
    assert!(only(&seen, b'm'), "{seen:?}");
}

/// The layer tag of the last video frame `c` got from `from`.
fn last_layer(c: &Participant, from: Uuid) -> Option<u8> {
    layers_seen(c, from).last().map(|(l, _)| *l)
}

/// Layers follow each subscriber's downlink, as str0m estimates it from TWCC feedback: Bob's
/// link is capped below Alice's high layer and he gets a lower one, with no gap in what he
/// receives once it has; when the cap goes, he gets the high layer again. Carol, uncapped,
/// keeps the high layer throughout.
#[test]
fn a_capped_subscriber_gets_a_lower_layer_and_the_best_again_when_the_cap_goes() {
    capped_subscriber(World::new());
}

/// The same through the direct egress, on its own estimate and probes.
#[test]
fn a_capped_subscriber_gets_a_lower_layer_and_the_best_again_through_the_direct_egress() {
    capped_subscriber(World::direct());
}

fn capped_subscriber(mut w: World) {
    let alice = w.join_with_layers("alice", &["l", "m", "h"]);
    // A frame every 15 ms: about 100, 400 and 1,200 kbit/s of payload.
    w.clients[alice].set_frame_sizes(&[190, 750, 2_250]);
    w.run(Duration::from_millis(300), false);
    let bob = w.join("bob");
    w.run(Duration::from_millis(300), false);
    let carol = w.join("carol");
    w.run(Duration::from_millis(500), false);
    let (room, a, b, c) = (
        w.room,
        w.clients[alice].user,
        w.clients[bob].user,
        w.clients[carol].user,
    );
    // Bob and Carol watch Alice only.
    w.sfu.set_quality(w.now, room, b, c, Quality::Off).unwrap();
    w.sfu.set_quality(w.now, room, c, b, Quality::Off).unwrap();
    // The estimate starts at 1.5 Mbit/s, under what the high layer needs with headroom: the
    // SFU probes for more (and gets it, nothing limits the link) within seconds.
    w.run(Duration::from_secs(6), true);
    let estimate = |w: &World, u| w.sfu.estimate(room, u).unwrap_or(0) / 1000;
    println!(
        "uncapped: estimates bob {} kbit/s, carol {}",
        estimate(&w, b),
        estimate(&w, c)
    );
    for (x, u) in [(bob, b), (carol, c)] {
        let name = &w.clients[x].name;
        assert_eq!(last_layer(&w.clients[x], a), Some(b'h'), "{name}");
        // Above where it started: TWCC feedback comes back and str0m's probes found room.
        assert!(estimate(&w, u) > 1_500, "{name}");
    }
    w.clients[carol].got.clear();

    // Bob's link carries 800 kbit/s: the high layer (some 1,300 with headers and audio) does
    // not fit, the medium one (500) does.
    w.cap(bob, Some(800));
    let capped = w.now;
    let mut down = None;
    for _ in 0..100 {
        w.run(Duration::from_millis(100), true);
        if down.is_none() && last_layer(&w.clients[bob], a).is_some_and(|l| l != b'h') {
            down = Some(w.now - capped);
            println!(
                "down after {:?}: estimate {} kbit/s",
                w.now - capped,
                estimate(&w, b)
            );
        }
    }
    let down = down.expect("Bob went down a layer");
    let gaps = w.clients[bob].gaps;
    let seen = w.layers_over(bob, a, Duration::from_secs(5));
    println!(
        "capped: estimate {} kbit/s, layers {:?}, {} datagrams dropped, gaps {} then {}",
        estimate(&w, b),
        seen.iter()
            .map(|(l, _)| *l as char)
            .collect::<std::collections::BTreeSet<_>>(),
        w.dropped,
        gaps,
        w.clients[bob].gaps
    );
    assert!(seen.len() > 250, "{} frames", seen.len());
    assert!(
        seen.iter().all(|(l, _)| *l == b'm' || *l == b'l'),
        "{seen:?}"
    );
    assert_eq!(
        w.clients[bob].gaps, gaps,
        "no gap once on a layer that fits"
    );

    // The cap goes: back to the high layer.
    w.cap(bob, None);
    let lifted = w.now;
    let dropped = w.dropped;
    let mut up = None;
    for _ in 0..300 {
        w.run(Duration::from_millis(100), true);
        if last_layer(&w.clients[bob], a) == Some(b'h') {
            up = Some(w.now - lifted);
            break;
        }
    }
    let up = up.expect("Bob back on the high layer");
    println!("up after {up:?}: estimate {} kbit/s", estimate(&w, b));
    let gaps = w.clients[bob].gaps;
    let seen = w.layers_over(bob, a, Duration::from_secs(3));
    assert!(only(&seen, b'h'), "{seen:?}");
    assert_eq!(w.clients[bob].gaps, gaps, "no gap without the cap");
    assert_eq!(w.dropped, dropped);
    println!("down after {down:?}, up after {up:?}");

    // Carol kept the best layer all along.
    let seen = layers_seen(&w.clients[carol], a);
    assert!(seen.len() > 1000, "{} frames", seen.len());
    assert!(only(&seen, b'h'), "{seen:?}");
    // Through the direct egress, the way back up was found by probes.
    if w.direct {
        assert!(w.sfu.counters().probes > 0);
    }
}

#[test]
fn a_paused_layer_hands_its_subscribers_the_next_one_down_until_it_comes_back() {
    let (mut w, alice, bob) = World::simulcast_and_a_viewer();
    let a = w.clients[alice].user;
    let seen = layers_seen(&w.clients[bob], a);
    assert!(only(&seen, b'h'), "{seen:?}");

    // Alice's browser stops its top layer (its bandwidth estimate fell): Bob, who wants it,
    // gets the medium one from its next key frame, a second later, with no gap in numbering.
    w.clients[alice].pause_layer("h", true);
    let seen = w.layers_over(bob, a, Duration::from_secs(2));
    let first_m = seen
        .iter()
        .position(|(l, _)| *l == b'm')
        .expect("the medium layer came");
    assert!(seen[first_m].1, "the switch is at a key frame: {seen:?}");
    assert!(seen[first_m..].iter().all(|(l, _)| *l == b'm'), "{seen:?}");
    assert!(seen.len() - first_m > 20, "{seen:?}");

    // Medium stops too: low. Then the top layer comes back (with a key frame): Bob is on it.
    w.clients[alice].pause_layer("m", true);
    w.run(Duration::from_secs(2), true);
    let seen = w.layers_over(bob, a, Duration::from_millis(500));
    assert!(only(&seen, b'l'), "{seen:?}");
    w.clients[alice].pause_layer("h", false);
    w.clients[alice].pause_layer("m", false);
    w.run(Duration::from_millis(500), true);
    let seen = w.layers_over(bob, a, Duration::from_millis(500));
    assert!(only(&seen, b'h'), "{seen:?}");
    assert_eq!(w.clients[bob].gaps, 0, "no frame after a gap");
}

/// The screen frames (tagged `s`) `c` got from `from`.
fn screen_frames(c: &Participant, from: Uuid) -> usize {
    layers_seen(c, from)
        .iter()
        .filter(|(l, _)| *l == b's')
        .count()
}

#[test]
fn a_second_video_track_is_offered_to_the_others_and_stopped_when_its_publisher_stops_it() {
    let mut w = World::new();
    let alice = w.join_with_layers("alice", &["l", "m", "h"]);
    let bob = w.join("bob");
    let carol = w.join("carol");
    w.run(Duration::from_millis(800), false);
    w.run(Duration::from_millis(500), true);
    let (room, a) = (w.room, w.clients[alice].user);
    let lines = |w: &World, c: usize| w.clients[c].owners.values().filter(|u| **u == a).count();
    assert_eq!(
        (lines(&w, bob), lines(&w, carol)),
        (2, 2),
        "Alice's audio and camera"
    );

    // Alice shares her screen: a second video m-line in her offer. Bob and Carol are offered
    // it as Alice's, beside her camera, and get its frames.
    let offer = w.clients[alice].share_screen(true).expect("an offer");
    w.sfu.offer(w.now, room, a, &offer).unwrap();
    w.run(Duration::from_secs(1), true);
    for c in [bob, carol] {
        assert_eq!(lines(&w, c), 3, "{}", w.clients[c].name);
        assert!(
            screen_frames(&w.clients[c], a) > 20,
            "{}",
            w.clients[c].name
        );
        assert!(layers_seen(&w.clients[c], a)
            .iter()
            .any(|(l, _)| *l == b'h'));
    }

    // She stops: the SFU offers them the end of that m-line, her camera goes on.
    let offer = w.clients[alice].share_screen(false).expect("an offer");
    w.sfu.offer(w.now, room, a, &offer).unwrap();
    w.run(Duration::from_millis(300), true);
    for c in [bob, carol] {
        w.clients[c].got.clear();
    }
    w.run(Duration::from_millis(500), true);
    for c in [bob, carol] {
        let client = &w.clients[c];
        let inactive = client
            .owners
            .iter()
            .filter(|(_, u)| **u == a)
            .filter_map(|(mid, _)| client.rtc.media(Mid::from(mid.as_str())))
            .filter(|m| m.kind() == MediaKind::Video && m.direction() == Direction::Inactive)
            .count();
        assert_eq!(
            inactive, 1,
            "the screen's m-line stopped for {}",
            w.clients[c].name
        );
        assert_eq!(screen_frames(&w.clients[c], a), 0);
        assert!(
            layers_seen(&w.clients[c], a).len() > 20,
            "the camera goes on"
        );
    }

    // And again: a new m-line for each of them, the screen's frames again.
    let offer = w.clients[alice].share_screen(true).expect("an offer");
    w.sfu.offer(w.now, room, a, &offer).unwrap();
    w.run(Duration::from_secs(1), true);
    for c in [bob, carol] {
        assert!(
            screen_frames(&w.clients[c], a) > 20,
            "{}",
            w.clients[c].name
        );
        assert_eq!(w.clients[c].strays, 0);
    }
}

/// The driver: the same room over real UDP sockets on loopback, the SFU on its own thread,
/// signaling through its handle and event queue as the hub does.
#[cfg(feature = "io")]
mod driver {
    use super::*;
    use std::sync::atomic::Ordering;
    use switchboard_sfu::client::UdpParticipant;
    use switchboard_sfu::io::{SfuHandle, SfuIoConfig};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_participants_over_loopback_through_the_sfu_thread() {
        let (sfu, mut events) = SfuHandle::start(SfuIoConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            public_ip: None,
            grace: Duration::from_secs(5),
            caps: Caps::default(),
            start_estimate: START_ESTIMATE,
            direct_egress: false,
            direct_ingress: false,
        })
        .unwrap();
        let room = Uuid::new_v4();
        let mut clients = Vec::new();
        for name in ["alice", "bob", "carol"] {
            let localhost = "127.0.0.1".parse().unwrap();
            let (c, offer) = UdpParticipant::bind(name, Uuid::new_v4(), localhost, &[]).unwrap();
            sfu.offer(room, c.p.user, offer).await.unwrap();
            clients.push(c);
        }
        let started = Instant::now();
        let mut last_media = started;
        while started.elapsed() < Duration::from_secs(4) {
            while let Ok(e) = events.try_recv() {
                match e {
                    SfuEvent::Answer { user, sdp, .. } => {
                        let c = clients.iter_mut().find(|c| c.p.user == user).unwrap();
                        c.p.accept_answer(&sdp).unwrap();
                    }
                    SfuEvent::Offer {
                        user, sdp, tracks, ..
                    } => {
                        let c = clients.iter_mut().find(|c| c.p.user == user).unwrap();
                        let tracks = tracks.into_iter().map(|t| (t.mid, t.user));
                        let answer = c.p.accept_offer(&sdp, tracks).unwrap();
                        sfu.answer(room, user, answer).await.unwrap();
                    }
                    _ => {}
                }
            }
            let now = Instant::now();
            let media = now.duration_since(last_media) >= STEP
                && started.elapsed() > Duration::from_secs(1);
            if media {
                last_media = now;
            }
            for c in &mut clients {
                c.pump(now, media).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for c in &clients {
            for o in clients.iter().filter(|o| o.p.user != c.p.user) {
                for kind in [MediaKind::Audio, MediaKind::Video] {
                    let n = c.p.frames_from(o.p.user, kind).len();
                    assert!(
                        n > 50,
                        "{} got {n} {kind:?} frames from {}",
                        c.p.name,
                        o.p.name
                    );
                }
            }
        }
        let stats = sfu.stats();
        let forwarded = stats.forwarded.load(Ordering::Relaxed);
        let received = stats.received.load(Ordering::Relaxed);
        println!("over loopback: {received} RTP packets received, {forwarded} forwarded");
        assert!(forwarded >= received, "{received} {forwarded}");
        assert_eq!(stats.participants.load(Ordering::Relaxed), 3);
        sfu.shutdown();
    }
}
