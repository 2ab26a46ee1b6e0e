//! A call between two webrtc-rs peers (crate `webrtc`) through the real daemon, made the way a
//! client app makes it: each user opens `/ws` with their token and fetches TURN credentials
//! over REST; Alice starts the call over REST, Bob is rung on his socket and answers over REST,
//! and Alice, told that Bob joined, sends the offer. The offer, the answer and every trickled
//! ICE candidate cross the signaling hub (`/ws`), never an in-process shortcut, and the peers
//! may only use relay candidates (`ice_transport_policy: relay`), so the data channel's bytes
//! cross the daemon's TURN relay.
//!
//! Checked: every data-channel message arrives intact and in order both ways; each peer's
//! selected candidate pair is relay <-> relay, on the daemon's relay address; the relay's
//! counters (`GET /metrics`, then the `allocation closed` log lines) account for the payload;
//! hanging up over REST sends `call:ended` and leaves the call `ended` in the store.
//!
//! Every wait is bounded ([`STEP`], [`CONNECT`]); the whole test by [`LIMIT`].

use crate::common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ws::Hub;
use common::{field, open_store, query_rows, Api, Daemon, Person};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use uuid::Uuid;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceCandidateType, RTCIceServer, RTCIceTransportPolicy,
    RTCPeerConnectionIceErrorEvent, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
    RTCSessionDescription, RTCStatsReportEntry, SettingEngineBuilder, StatsSelector,
};

/// The bound on one step: a frame, a REST answer, a data-channel message, a counter update.
const STEP: Duration = Duration::from_secs(10);
/// From the offer to an open data channel on one side (TURN allocations, ICE, DTLS, SCTP).
const CONNECT: Duration = Duration::from_secs(20);
/// The whole test.
const LIMIT: Duration = Duration::from_secs(60);
/// Messages each way.
const MESSAGES: usize = 20;
/// Bytes per message: one SCTP chunk, well under the path MTU.
const MESSAGE_SIZE: usize = 1000;
/// The data-channel payload of the whole call, both ways.
const PAYLOAD: u64 = (2 * MESSAGES * MESSAGE_SIZE) as u64;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_webrtc_rs_peers_call_through_the_relay() {
    let started = Instant::now();
    let mut daemon = blocking(|| Daemon::start(""));
    let api = daemon.api();
    let before = blocking(|| relay_counters(&daemon));
    let (alice_user, bob_user) = (Person::new("Alice"), Person::new("Bob"));

    let (call, carried, figures) = tokio::time::timeout(LIMIT, async {
        // Each app, as it starts: its socket, its TURN credentials, its peer connection.
        let mut alice = App::start(&daemon, &api, &alice_user).await;
        let mut bob = App::start(&daemon, &api, &bob_user).await;

        // Alice calls Bob (a new conversation: the daemon runs with `open_conversations`).
        let call = blocking(|| api.start_call(&alice_user, Uuid::new_v4(), "audio", &[&bob_user]));
        let incoming = bob.signal.expect_past_candidates("call:incoming").await;
        assert_eq!(incoming["callId"], call, "{incoming}");
        assert_eq!(incoming["initiatedBy"], alice_user.uid(), "{incoming}");
        let answered = blocking(|| api.act_ok(&bob_user, &call, "answer"));
        assert_eq!(answered["status"], "active", "{answered}");
        // Answered over REST without naming his socket (`X-Socket-Id`): it is told too.
        let elsewhere = bob
            .signal
            .expect_past_candidates("call:answered-elsewhere")
            .await;
        assert_eq!(elsewhere["callId"], call, "{elsewhere}");
        let joined = alice
            .signal
            .expect_past_candidates("call:participant-joined")
            .await;
        assert_eq!(joined["callId"], call, "{joined}");
        assert_eq!(joined["userId"], bob_user.uid(), "{joined}");

        // Bob joined: Alice's cue to offer. Both trickle until their data channel is open.
        let offered = Instant::now();
        let (alice_dc, bob_dc) = tokio::join!(
            alice.offer(&call, &bob_user),
            bob.answer(&call, &alice_user)
        );
        let connect = offered.elapsed();
        // Under the relay policy the peers gathered, and so trickled, relay candidates only.
        for app in [&alice, &bob] {
            let sent = &app.candidates_sent;
            assert!(
                !sent.is_empty() && sent.iter().all(|c| c.contains(" typ relay")),
                "{}: {sent:?}",
                app.user.name
            );
        }

        // Alice sends every ping at once; Bob answers each with a pong as it arrives.
        let opened = Instant::now();
        tokio::join!(alice.ping(&alice_dc), bob.pong(&bob_dc));
        let exchange = opened.elapsed();

        // Both ends of both selected pairs are the daemon's relay candidates, and each peer's
        // local relay candidate is the other's remote one.
        let a = alice.selected_pair().await;
        let b = bob.selected_pair().await;
        for (who, pair) in [("Alice", &a), ("Bob", &b)] {
            for end in [&pair.local, &pair.remote] {
                assert_eq!(end.kind, RTCIceCandidateType::Relay, "{who}: {pair:#?}");
                assert_eq!(end.addr.ip(), daemon.turn.ip(), "{who}: {pair:#?}");
                assert!(RELAY_PORTS.contains(&end.addr.port()), "{who}: {pair:#?}");
            }
            assert!(
                pair.sent.bytes >= PAYLOAD / 2 && pair.received.bytes >= PAYLOAD / 2,
                "{who}'s pair carried less than the {} bytes of its messages: {pair:#?}",
                PAYLOAD / 2
            );
        }
        assert_eq!((a.local.addr, a.remote.addr), (b.remote.addr, b.local.addr));
        // What the two pairs carried: all of it crossed the relay.
        let carried = Carried {
            sent: a.sent + b.sent,
            received: a.received + b.received,
        };

        // Alice hangs up: everyone in the call hears it, then each app closes its connection
        // (which releases its TURN allocation).
        let ended = blocking(|| api.act_ok(&alice_user, &call, "end"));
        assert_eq!(ended["status"], "ended", "{ended}");
        let expected = json!({"callId": call, "reason": "ended-by-user",
                              "endedBy": alice_user.uid()});
        assert_eq!(
            bob.signal.expect_past_candidates("call:ended").await,
            expected
        );
        assert_eq!(
            alice.signal.expect_past_candidates("call:ended").await,
            expected
        );
        let figures = Figures {
            candidates_sent: [alice.candidates_sent.len(), bob.candidates_sent.len()],
            connect,
            exchange,
        };
        alice.close().await;
        bob.close().await;
        (call, carried, figures)
    })
    .await
    .unwrap_or_else(|_| panic!("the call did not finish within {LIMIT:?}"));

    // The relay's own view, first from its live counters: every packet a peer sent on its
    // selected pair went to the relay (to the peer, the other allocation), every one it received
    // came from it (from the peer). They are published about once a second, so poll (bounded).
    let mut delta = RelayCounters::default();
    let covered = blocking(|| {
        common::wait_until(STEP, || {
            delta = relay_counters(&daemon).since(&before);
            delta.covers(&carried)
        })
    });
    assert!(
        covered,
        "the relay's counters moved by {delta:?}, less than the selected pairs carried: \
         {carried:?}"
    );

    // The store: the call is over, ended by Alice, and both left it.
    let store = open_store(&daemon.store_path());
    let rows = query_rows(
        &store,
        "SELECT status, end_reason, initiated_by FROM calls WHERE id = ?1",
        &[&call],
    );
    assert_eq!(
        rows,
        [json!({"status": "ended", "end_reason": "ended-by-user",
                "initiated_by": alice_user.uid()})]
    );
    let rows = query_rows(
        &store,
        "SELECT status FROM call_participants WHERE call_id = ?1",
        &[&call],
    );
    assert_eq!(rows, [json!({"status": "left"}), json!({"status": "left"})]);
    drop(store);

    // Then from the allocations' own lines, logged when they close (the peers released theirs
    // when they closed; stopping the daemon would close any left).
    assert!(daemon.stop().success(), "{:#?}", daemon.log());
    let closed = closed_allocations(&daemon);
    let to_peer: u64 = closed.iter().map(|a| a.bytes_to_peer).sum();
    let from_peer: u64 = closed.iter().map(|a| a.bytes_from_peer).sum();
    assert!(
        to_peer >= carried.sent.bytes && from_peer >= carried.received.bytes,
        "the allocations relayed {to_peer} bytes to peers and {from_peer} from peers, less than \
         the selected pairs carried ({carried:?}): {closed:#?}"
    );
    // One allocation per peer carried the call.
    assert!(
        closed.iter().filter(|a| a.bytes_to_peer > 0).count() >= 2,
        "{closed:#?}"
    );

    println!(
        "call {call}: {MESSAGES} messages of {MESSAGE_SIZE} bytes each way ({PAYLOAD} bytes in \
         all); candidates trickled (Alice, Bob): {:?}; the selected pairs carried {carried:?}; \
         offer to open channels {:.1} s, exchange {:.1} s, whole test {:.1} s; relay counters \
         moved by {delta:?}; allocations closed: {closed:?}",
        figures.candidates_sent,
        figures.connect.as_secs_f64(),
        figures.exchange.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// What the test prints at the end.
struct Figures {
    candidates_sent: [usize; 2],
    /// From the offer to both data channels open.
    connect: Duration,
    /// The messages, both ways.
    exchange: Duration,
}

/// `relay_ports` of the harness's config.
const RELAY_PORTS: std::ops::RangeInclusive<u16> = 20000..=29999;

/// Runs the harness's blocking calls (daemon start, REST, the store) on the test's runtime.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    tokio::task::block_in_place(f)
}

/// Message `i` of a kind ("ping", "pong"): its kind and number, then bytes that depend on
/// both, so that a message cut, mixed up with another or reordered shows.
fn message(kind: &str, i: usize) -> Vec<u8> {
    let mut m = format!("{kind} {i:02} ").into_bytes();
    let seed = m.iter().map(|&b| b as usize).sum::<usize>();
    m.extend((m.len()..MESSAGE_SIZE).map(|j| ((seed + 7 * j) % 256) as u8));
    m
}

// ---------------------------------------------------------------------------------------------
// A client app: a signaling socket and a peer connection.

/// What the peer connection's handler reports, and its data channel's events.
enum PeerEvent {
    Candidate(RTCIceCandidateInit),
    CandidateError(String),
    State(RTCPeerConnectionState),
    /// The channel the other side opened (on the answerer).
    Channel(Arc<dyn DataChannel>),
    Data(DataChannelEvent),
}

impl std::fmt::Debug for PeerEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerEvent::Candidate(c) => write!(f, "Candidate({c:?})"),
            PeerEvent::CandidateError(e) => write!(f, "CandidateError({e})"),
            PeerEvent::State(s) => write!(f, "State({s})"),
            PeerEvent::Channel(c) => write!(f, "Channel(id {:?})", c.id()),
            PeerEvent::Data(e) => write!(f, "Data({e:?})"),
        }
    }
}

/// The handler: forwards everything to the app, which decides when to send what (a candidate
/// gathered before the description went out must wait for it).
struct Handler(UnboundedSender<PeerEvent>);

/// A handler method's future. The trait is `#[async_trait]`; its methods are implemented by
/// hand here (they only queue an event) so that the tests need no `async-trait` dependency.
type Done<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

impl Handler {
    fn emit<'a>(&self, event: PeerEvent) -> Done<'a> {
        // The app may be gone at the end of the test; nothing to do then.
        let _ = self.0.send(event);
        Box::pin(std::future::ready(()))
    }
}

impl PeerConnectionEventHandler for Handler {
    fn on_ice_candidate<'s, 'a>(&'s self, event: RTCPeerConnectionIceEvent) -> Done<'a>
    where
        's: 'a,
        Self: 'a,
    {
        // (Called on the connection's driver task: no panic here.)
        match event.candidate.to_json() {
            Ok(init) => self.emit(PeerEvent::Candidate(init)),
            Err(e) => self.emit(PeerEvent::CandidateError(format!("{e}: {event:?}"))),
        }
    }

    fn on_ice_candidate_error<'s, 'a>(&'s self, event: RTCPeerConnectionIceErrorEvent) -> Done<'a>
    where
        's: 'a,
        Self: 'a,
    {
        self.emit(PeerEvent::CandidateError(format!("{event:?}")))
    }

    fn on_connection_state_change<'s, 'a>(&'s self, state: RTCPeerConnectionState) -> Done<'a>
    where
        's: 'a,
        Self: 'a,
    {
        self.emit(PeerEvent::State(state))
    }

    fn on_data_channel<'s, 'a>(&'s self, channel: Arc<dyn DataChannel>) -> Done<'a>
    where
        's: 'a,
        Self: 'a,
    {
        self.emit(PeerEvent::Channel(channel))
    }
}

struct App {
    user: Person,
    signal: Hub,
    pc: Arc<dyn PeerConnection>,
    events: UnboundedReceiver<PeerEvent>,
    sender: UnboundedSender<PeerEvent>,
    /// The candidates this app trickled, as sent.
    candidates_sent: Vec<String>,
    /// What went wrong gathering candidates (a TURN error, say), for failure messages.
    candidate_errors: Vec<String>,
}

impl App {
    /// Connects `user`'s socket, fetches their TURN credentials and builds a peer connection
    /// that may only use the relay.
    async fn start(daemon: &Daemon, api: &Api, user: &Person) -> App {
        let signal = Hub::open_waiting(daemon, user, STEP).await;
        let (status, body) = blocking(|| api.get("/api/calls/turn-credentials", &user.token));
        assert_eq!(status, 200, "{}: turn-credentials: {body}", user.name);
        let credentials = &body["credentials"];
        let urls: Vec<&str> = credentials["urls"]
            .as_array()
            .unwrap_or_else(|| panic!("no urls: {body}"))
            .iter()
            .map(|u| u.as_str().expect("a URL"))
            .collect();
        // webrtc-rs allocates over UDP only: the `transport=tcp` URLs are left out.
        let udp: Vec<String> = urls
            .iter()
            .filter(|u| u.starts_with("turn:") && u.ends_with("?transport=udp"))
            .map(|u| u.to_string())
            .collect();
        assert_eq!(
            udp,
            [format!("turn:{}?transport=udp", daemon.turn)],
            "{}: {body}",
            user.name
        );
        let ice_server = RTCIceServer {
            urls: udp,
            username: credentials["username"].as_str().expect("username").into(),
            credential: credentials["credential"]
                .as_str()
                .expect("credential")
                .into(),
        };
        let config = RTCConfigurationBuilder::new()
            .with_ice_servers(vec![ice_server])
            // The point of the test: no host or server-reflexive path, only the relay.
            .with_ice_transport_policy(RTCIceTransportPolicy::Relay)
            .build();
        // No mDNS: by default (`QueryOnly`) its socket joins 224.0.0.251, which fails with
        // ENODEV on a host without a multicast route (a sandbox with only `lo`).
        // `MulticastDnsMode` comes from `rtc`, the crate under `webrtc` that does not re-export it.
        let settings = SettingEngineBuilder::default()
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .build();
        let (sender, events) = unbounded_channel();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_setting_engine(settings)
            .with_handler(Arc::new(Handler(sender.clone())))
            // The socket to the TURN server: loopback, where the daemon listens.
            .with_udp_addrs(vec!["127.0.0.1:0"])
            .build()
            .await
            .unwrap_or_else(|e| panic!("{}: peer connection: {e}", user.name));
        App {
            user: user.clone(),
            signal,
            pc: Arc::new(pc),
            events,
            sender,
            candidates_sent: Vec::new(),
            candidate_errors: Vec::new(),
        }
    }

    /// Forwards `channel`'s events to the app's event queue, until it closes.
    fn watch(&self, channel: Arc<dyn DataChannel>) {
        let sender = self.sender.clone();
        tokio::spawn(async move {
            while let Some(event) = channel.poll().await {
                if sender.send(PeerEvent::Data(event)).is_err() {
                    break;
                }
            }
        });
    }

    /// Sets `description` (an `offer` or an `answer`: `kind`) as the local one, and sends it
    /// as the peer connection then has it to `to` in `call` (`call:offer`, `call:answer`).
    async fn send_local(
        &mut self,
        kind: &str,
        description: RTCSessionDescription,
        call: &str,
        to: &Person,
    ) {
        self.pc
            .set_local_description(description)
            .await
            .unwrap_or_else(|e| panic!("set_local_description({kind}): {e:?}"));
        let description = self.pc.local_description().await.expect("the description");
        let data = json!({"callId": call, "targetUserId": to.id, kind: description});
        self.signal.emit(&format!("call:{kind}"), data).await;
    }

    /// Sets the `kind` (`offer` or `answer`) of a signaled event's `data` as the remote
    /// description.
    async fn take_remote(&mut self, kind: &str, data: &Value) {
        let description: RTCSessionDescription = serde_json::from_value(data[kind].clone())
            .unwrap_or_else(|e| panic!("an {kind} ({e}): {data}"));
        self.pc
            .set_remote_description(description)
            .await
            .unwrap_or_else(|e| panic!("set_remote_description({kind}): {e:?}"));
    }

    /// The caller's side: a data channel, the offer to `callee`, then ICE until the channel
    /// is open.
    async fn offer(&mut self, call: &str, callee: &Person) -> Arc<dyn DataChannel> {
        let channel = self
            .pc
            .create_data_channel("chat", None)
            .await
            .expect("create_data_channel");
        self.watch(channel.clone());
        let offer = self.pc.create_offer(None).await.expect("create_offer");
        self.send_local("offer", offer, call, callee).await;
        self.connect(call, callee, Some(channel)).await
    }

    /// The callee's side: the offer from `caller`, the answer, then ICE until the channel the
    /// caller opened is open.
    async fn answer(&mut self, call: &str, caller: &Person) -> Arc<dyn DataChannel> {
        let got = self.signal.expect_past_candidates("call:offer").await;
        assert_eq!(got["callId"], call, "{got}");
        assert_eq!(got["fromUserId"], caller.uid(), "{got}");
        self.take_remote("offer", &got).await;
        let answer = self.pc.create_answer(None).await.expect("create_answer");
        self.send_local("answer", answer, call, caller).await;
        self.connect(call, caller, None).await
    }

    /// Trickles ICE both ways through the hub until the data channel is open: this side's
    /// candidates out as they are gathered (its description went out first, so the other side
    /// can use them at once), the other side's in, and the answer on the caller's side.
    async fn connect(
        &mut self,
        call: &str,
        other: &Person,
        mut channel: Option<Arc<dyn DataChannel>>,
    ) -> Arc<dyn DataChannel> {
        let who = self.user.name.clone();
        let deadline = tokio::time::Instant::now() + CONNECT;
        loop {
            tokio::select! {
                // The deadline first, so that it is the one reported.
                biased;
                _ = tokio::time::sleep_until(deadline) => panic!(
                    "{who}: no open data channel within {CONNECT:?}; candidates sent {:?}, \
                     errors {:?}",
                    self.candidates_sent, self.candidate_errors
                ),
                event = self.events.recv() => match event.expect("the handler is alive") {
                    PeerEvent::Candidate(c) => {
                        self.candidates_sent.push(c.candidate.clone());
                        let data = json!({"callId": call, "targetUserId": other.id,
                                          "candidate": c});
                        self.signal.emit("call:ice-candidate", data).await;
                    }
                    PeerEvent::CandidateError(e) => self.candidate_errors.push(e),
                    PeerEvent::State(RTCPeerConnectionState::Failed) => panic!(
                        "{who}: the connection failed; candidates sent {:?}, errors {:?}",
                        self.candidates_sent, self.candidate_errors
                    ),
                    PeerEvent::State(_) => {}
                    PeerEvent::Channel(c) => {
                        assert!(channel.is_none(), "{who}: a second data channel");
                        self.watch(c.clone());
                        channel = Some(c);
                    }
                    PeerEvent::Data(DataChannelEvent::OnOpen) => {
                        return channel.expect("the channel that opened");
                    }
                    PeerEvent::Data(e) => panic!("{who}: before the channel opened: {e:?}"),
                },
                frame = self.signal.recv_by(deadline) => {
                    let data = &frame["data"];
                    assert_eq!(data["callId"], call, "{who}: {frame}");
                    assert_eq!(data["fromUserId"], other.uid(), "{who}: {frame}");
                    match frame["event"].as_str() {
                        Some("call:answer") => {
                            self.take_remote("answer", data).await;
                        }
                        Some("call:ice-candidate") => {
                            let c: RTCIceCandidateInit =
                                serde_json::from_value(data["candidate"].clone())
                                    .expect("a candidate");
                            self.pc
                                .add_ice_candidate(c)
                                .await
                                .unwrap_or_else(|e| panic!("{who}: add_ice_candidate: {e}"));
                        }
                        _ => panic!("{who}: unexpected during ICE: {frame}"),
                    }
                }
            }
        }
    }

    /// The next data-channel message, which must come within [`STEP`].
    async fn message(&mut self) -> Vec<u8> {
        let who = &self.user.name;
        loop {
            let event = tokio::time::timeout(STEP, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("{who}: no message within {STEP:?}"))
                .expect("the handler is alive");
            match event {
                PeerEvent::Data(DataChannelEvent::OnMessage(m)) => {
                    assert!(!m.is_string, "{who}: a text message");
                    return m.data.to_vec();
                }
                // Late candidates (the connection is up), the send buffer's flow control and
                // benign state changes.
                PeerEvent::Candidate(_) | PeerEvent::CandidateError(_) => {}
                PeerEvent::Data(
                    DataChannelEvent::OnBufferedAmountLow | DataChannelEvent::OnBufferedAmountHigh,
                ) => {}
                PeerEvent::State(
                    s @ (RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Disconnected
                    | RTCPeerConnectionState::Closed),
                ) => panic!("{who}: connection {s}"),
                PeerEvent::State(_) => {}
                other => panic!("{who}: expected a message, got {other:?}"),
            }
        }
    }

    /// Sends every ping at once, then reads the pongs, which must come in order.
    async fn ping(&mut self, channel: &Arc<dyn DataChannel>) {
        for i in 0..MESSAGES {
            let m = message("ping", i);
            channel.send(m.as_slice().into()).await.expect("send ping");
        }
        for i in 0..MESSAGES {
            assert_eq!(self.message().await, message("pong", i), "pong {i}");
        }
    }

    /// Answers each ping, which must come in order, with its pong.
    async fn pong(&mut self, channel: &Arc<dyn DataChannel>) {
        for i in 0..MESSAGES {
            assert_eq!(self.message().await, message("ping", i), "ping {i}");
            let m = message("pong", i);
            channel.send(m.as_slice().into()).await.expect("send pong");
        }
    }

    /// The selected candidate pair and its candidates, from the peer connection's stats.
    async fn selected_pair(&self) -> SelectedPair {
        let who = &self.user.name;
        let report = self.pc.get_stats(Instant::now(), StatsSelector::None).await;
        let as_json = |e: &RTCStatsReportEntry| -> Value {
            match e {
                RTCStatsReportEntry::Transport(s) => serde_json::to_value(s),
                RTCStatsReportEntry::IceCandidatePair(s) => serde_json::to_value(s),
                RTCStatsReportEntry::LocalCandidate(s) => serde_json::to_value(s),
                RTCStatsReportEntry::RemoteCandidate(s) => serde_json::to_value(s),
                _ => Ok(Value::Null),
            }
            .expect("stats as JSON")
        };
        let entries: Vec<Value> = report.iter().map(as_json).collect();
        let pair_id = report
            .iter()
            .find_map(|e| match e {
                RTCStatsReportEntry::Transport(t) => Some(t.selected_candidate_pair_id.clone()),
                _ => None,
            })
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| panic!("{who}: no selected pair: {entries:#?}"));
        let pair = report
            .iter()
            .find_map(|e| match e {
                RTCStatsReportEntry::IceCandidatePair(p) if p.stats.id == pair_id => Some(p),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{who}: no pair {pair_id}: {entries:#?}"));
        assert!(pair.nominated, "{who}: {entries:#?}");

        // The candidates, by the ids the pair names. webrtc-rs 0.21 names a candidate's stats
        // `RTCLocalIceCandidate_<id>` (`RTCRemoteIceCandidate_<id>`) while the pair names the
        // bare `<id>`; both spellings are accepted.
        let candidate = |local: bool, id: &str| {
            let prefixed = if local {
                format!("RTCLocalIceCandidate_{id}")
            } else {
                format!("RTCRemoteIceCandidate_{id}")
            };
            report
                .iter()
                .filter_map(|e| match e {
                    RTCStatsReportEntry::LocalCandidate(c) if local => Some(c),
                    RTCStatsReportEntry::RemoteCandidate(c) if !local => Some(c),
                    _ => None,
                })
                .find(|c| c.stats.id == id || c.stats.id == prefixed)
                .map(|c| Candidate {
                    kind: c.candidate_type,
                    addr: format!("{}:{}", c.address.as_deref().unwrap_or_default(), c.port)
                        .parse()
                        .unwrap_or_else(|e| panic!("{who}: candidate address: {e}: {c:?}")),
                })
                .unwrap_or_else(|| panic!("{who}: no candidate {id}: {entries:#?}"))
        };
        SelectedPair {
            local: candidate(true, &pair.local_candidate_id),
            remote: candidate(false, &pair.remote_candidate_id),
            sent: Traffic {
                bytes: pair.bytes_sent,
                packets: pair.packets_sent,
            },
            received: Traffic {
                bytes: pair.bytes_received,
                packets: pair.packets_received,
            },
        }
    }

    async fn close(&self) {
        let who = &self.user.name;
        tokio::time::timeout(STEP, self.pc.close())
            .await
            .unwrap_or_else(|_| panic!("{who}: close did not finish within {STEP:?}"))
            .unwrap_or_else(|e| panic!("{who}: close: {e}"));
    }
}

#[derive(Debug)]
struct SelectedPair {
    local: Candidate,
    remote: Candidate,
    sent: Traffic,
    received: Traffic,
}

/// Bytes and packets (UDP payloads, as a TURN relay counts them too).
#[derive(Clone, Copy, Debug)]
struct Traffic {
    bytes: u64,
    packets: u64,
}

impl std::ops::Add for Traffic {
    type Output = Traffic;
    fn add(self, other: Traffic) -> Traffic {
        Traffic {
            bytes: self.bytes + other.bytes,
            packets: self.packets + other.packets,
        }
    }
}

/// What both peers' selected pairs carried.
#[derive(Debug)]
struct Carried {
    sent: Traffic,
    received: Traffic,
}

#[derive(Debug)]
struct Candidate {
    kind: RTCIceCandidateType,
    addr: std::net::SocketAddr,
}

// ---------------------------------------------------------------------------------------------
// The relay's counters.

/// `switchboard_turn_relayed_{packets,bytes}_total` by direction (src/metrics.rs).
#[derive(Clone, Copy, Debug, Default)]
struct RelayCounters {
    packets_to_peer: u64,
    bytes_to_peer: u64,
    packets_from_peer: u64,
    bytes_from_peer: u64,
}

impl RelayCounters {
    fn since(&self, before: &RelayCounters) -> RelayCounters {
        RelayCounters {
            packets_to_peer: self.packets_to_peer - before.packets_to_peer,
            bytes_to_peer: self.bytes_to_peer - before.bytes_to_peer,
            packets_from_peer: self.packets_from_peer - before.packets_from_peer,
            bytes_from_peer: self.bytes_from_peer - before.bytes_from_peer,
        }
    }

    /// Whether the relay counted at least what the peers' pairs carried: what they sent to
    /// peers, what they received from peers.
    fn covers(&self, carried: &Carried) -> bool {
        self.bytes_to_peer >= carried.sent.bytes
            && self.packets_to_peer >= carried.sent.packets
            && self.bytes_from_peer >= carried.received.bytes
            && self.packets_from_peer >= carried.received.packets
    }
}

/// The relay's counters now, from `GET /metrics`.
fn relay_counters(daemon: &Daemon) -> RelayCounters {
    let url = format!("http://{}/metrics", daemon.http);
    let text = ureq::get(&url)
        .call()
        .expect("GET /metrics")
        .body_mut()
        .read_to_string()
        .expect("the metrics");
    let value = |name: &str, direction: &str| -> u64 {
        let series = format!("{name}{{direction=\"{direction}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series}in:\n{text}"))
    };
    RelayCounters {
        packets_to_peer: value("switchboard_turn_relayed_packets_total", "to_peer"),
        bytes_to_peer: value("switchboard_turn_relayed_bytes_total", "to_peer"),
        packets_from_peer: value("switchboard_turn_relayed_packets_total", "from_peer"),
        bytes_from_peer: value("switchboard_turn_relayed_bytes_total", "from_peer"),
    }
}

/// An `allocation closed` log line's figures.
#[derive(Debug)]
#[allow(dead_code)] // `reason` is read through Debug, in failure messages.
struct Closed {
    reason: String,
    bytes_to_peer: u64,
    bytes_from_peer: u64,
}

fn closed_allocations(daemon: &Daemon) -> Vec<Closed> {
    let num = |l: &str, key| -> u64 {
        field(l, key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {l}"))
    };
    daemon
        .log()
        .iter()
        .filter(|l| l.contains("allocation closed"))
        .map(|l| Closed {
            reason: field(l, "reason").unwrap_or_default().to_owned(),
            bytes_to_peer: num(l, "bytes_to_peer"),
            bytes_from_peer: num(l, "bytes_from_peer"),
        })
        .collect()
}
