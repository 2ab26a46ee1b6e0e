//! What the signaling fuzz targets share.
//!
//! # The daemon, in process
//! One switchboard per fuzzing process, assembled as `src/http.rs` assembles the daemon's: the
//! REST API ([`api::router`]), `/ws` ([`ws::handler`]) and `/socket.io/` ([`sio::Engine`]) over
//! one [`ApiState`], whose call store is an SQLite file on tmpfs with the hub as its event sink.
//! There is no panic-catching layer (the daemon turns a handler's panic into a 500): here a
//! panic anywhere reaches libFuzzer. Plain requests go through the router as tower calls;
//! WebSockets through hyper's HTTP/1 server (with upgrades, as the daemon's) over an in-memory
//! duplex, with tungstenite's client on the other end. Everything runs on one current-thread
//! tokio runtime, plus the store's own thread.
//!
//! # Fixtures
//! Alice, Bob and Carol are members of [`CONVERSATION`]; Dave is a user the admin target
//! renames. A live call is kept up in it (Alice, who started it, and Bob joined; Carol
//! invited): [`World::live_call`] makes a new one when an input ended it or made Alice leave.
//! Inputs name it by [`CALL_PLACEHOLDER`] (the seeds say that where the capture had a call id),
//! replaced with its id before use.
//!
//! # Mirrors
//! [`decode_eio`] classifies an Engine.IO packet as `Engine::on_packet` and `on_message` do
//! (those are not functions one can call without a session), with the crate's own splitters;
//! [`typed`] says what the hub makes of an event's data: the parser both transports use
//! ([`ClientEvent::parse`]), and the refusals the call service makes before it looks at a call.
//! The targets check the real server's answers, through each transport, against both.
//!
//! # Running
//! From `signaling/`, with cargo-fuzz (the toolchain is stable: `RUSTC_BOOTSTRAP=1` lets it
//! pass the sanitizer flags):
//!
//! ```text
//! RUSTC_BOOTSTRAP=1 cargo fuzz run sio_packet fuzz/corpus/sio_packet fuzz/seeds/sio_packet -- \
//!     -max_total_time=60 -rss_limit_mb=2048 -detect_leaks=0
//! ```
//!
//! (and `ws_frame`, `rest_bodies` alike; `tests/fuzz.sh` runs them all). The daemon lives for
//! the whole process, so the heap grows across inputs without leaking: `-detect_leaks=0`
//! saves the leak checks libFuzzer would otherwise run after many inputs (it gives them up by
//! itself after a thousand). The seeds are written by `capture-seeds.mjs` (`seeds/README.md`).

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::BodyExt as _;
use switchboard_signaling::api::{self, ApiState, UserLimits};
use switchboard_signaling::auth::{self, Auth};
use switchboard_signaling::call::{CallType, EndReason, User};
use switchboard_signaling::event::EventSink;
use switchboard_signaling::hub::Hub;
use switchboard_signaling::service::{CallService, InitiateRequest, Settings};
use switchboard_signaling::sio;
use switchboard_signaling::socket::{ClientEvent, Refusal};
use switchboard_signaling::store::Store;
use switchboard_signaling::time::{Clock, Timestamp};
use switchboard_signaling::turn::TurnIssuer;
use switchboard_signaling::ws;
use tokio::io::DuplexStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tower::ServiceExt as _;
use uuid::Uuid;

pub const JWT_SECRET: &str = "signaling-fuzz-jwt-secret";
pub const ADMIN_TOKEN: &str = "signaling-fuzz-admin-token";
/// `calls.max_participants` (the caller included).
pub const MAX_PARTICIPANTS: usize = 8;

pub const ALICE: Uuid = Uuid::from_u128(0xa11ce000_0000_4000_8000_000000000001);
pub const BOB: Uuid = Uuid::from_u128(0xb0b00000_0000_4000_8000_000000000002);
pub const CAROL: Uuid = Uuid::from_u128(0xca401000_0000_4000_8000_000000000003);
/// The user the admin target's `PUT /api/admin/users/{userId}` names.
pub const DAVE: Uuid = Uuid::from_u128(0xda7e0000_0000_4000_8000_000000000004);
/// Alice, Bob and Carol's conversation, where the live call is.
pub const CONVERSATION: Uuid = Uuid::from_u128(0xc0c00000_0000_4000_8000_000000000001);
/// The conversation the admin target's `PUT /api/admin/conversations/{id}` sets.
pub const ADMIN_CONVERSATION: Uuid = Uuid::from_u128(0xc0c00000_0000_4000_8000_000000000002);
/// Stands for the live call's id in inputs.
pub const CALL_PLACEHOLDER: &str = "ca11ca11-0000-4000-8000-000000000001";

/// The longest one input may take (a hang is a finding); under tests/fuzz.sh's `-timeout=10`.
const EXEC_LIMIT: Duration = Duration::from_secs(8);

/// The in-process daemon and its fixtures.
pub struct World {
    rt: tokio::runtime::Runtime,
    pub state: Arc<ApiState>,
    /// The daemon's routes: the API, `/ws` and `/socket.io/`, and its 404 fallback.
    pub app: Router,
    pub alice: User,
    pub bob: User,
    pub carol: User,
    pub alice_token: String,
    call: Mutex<Option<Uuid>>,
    _dir: PathBuf,
}

static WORLD: OnceLock<World> = OnceLock::new();

/// The process's daemon, started at the first call.
pub fn world() -> &'static World {
    WORLD.get_or_init(World::start)
}

fn user(id: Uuid, name: &str) -> User {
    User {
        id,
        name: Some(name.to_owned()),
        email: Some(format!("{}@example.com", name.to_lowercase())),
    }
}

/// The store's directory: on tmpfs (fsync costs nothing there), one per process; those of
/// processes gone (a crash leaves its own) are removed first.
fn store_dir() -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    const PREFIX: &str = "switchboard-signaling-fuzz-";
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(PREFIX) {
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let dir = base.join(format!("{PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the store's directory");
    dir
}

impl World {
    fn start() -> World {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let dir = store_dir();
        let hub = Arc::new(Hub::new(ws::MAX_SOCKETS_PER_USER).0);
        let sink: Arc<dyn EventSink> = hub.clone();
        let store = Store::open(&dir.join("calls.db"), sink, None).expect("the call store");
        let settings = Settings {
            // Nobody's invitation lapses during a run: the fixture call's Carol stays invited.
            ring_timeout: Duration::from_secs(7 * 86_400),
            reconnect_grace: Duration::from_secs(7 * 86_400),
            max_participants: MAX_PARTICIPANTS,
            open_conversations: false,
            max_live_per_user: usize::MAX,
            sfu_from: None,
        };
        let turn = TurnIssuer::new(
            b"turn-secret",
            Duration::from_secs(3600),
            vec!["turn:127.0.0.1:3478?transport=udp".into()],
        );
        let state = Arc::new(ApiState {
            calls: CallService::new(store, settings, turn, None, None, Clock::system()),
            auth: Auth::new(Some(JWT_SECRET), Some(ADMIN_TOKEN)),
            hub,
            // Every request is one user's, as fast as it runs: no budget.
            limits: UserLimits::new(u32::MAX, u32::MAX),
        });
        let engine = sio::Engine::new(state.clone());
        let app = api::router(state.clone())
            .merge(
                Router::new()
                    .route("/ws", get(ws::handler))
                    .with_state(state.clone()),
            )
            .merge(engine.router())
            .fallback(api::not_found);
        let (alice, bob, carol) = (user(ALICE, "Alice"), user(BOB, "Bob"), user(CAROL, "Carol"));
        let month = Duration::from_secs(30 * 86_400);
        let alice_token = auth::mint(
            JWT_SECRET,
            ALICE,
            alice.name.as_deref(),
            alice.email.as_deref(),
            Timestamp::now(),
            month,
        );
        let world = World {
            rt,
            state,
            app,
            alice,
            bob,
            carol,
            alice_token,
            call: Mutex::new(None),
            _dir: dir,
        };
        world.rt.block_on(async {
            let calls = &world.state.calls;
            let members = vec![ALICE, BOB, CAROL];
            calls
                .admin_put_conversation(CONVERSATION, Some("fuzz".into()), members)
                .await
                .expect("the conversation");
            for u in [&world.alice, &world.bob, &world.carol, &user(DAVE, "Dave")] {
                calls.admin_upsert_user(u.clone()).await.expect("a user");
            }
        });
        world
    }

    /// Runs `f` to completion on the runtime (with whatever it spawned), within a bound.
    pub fn run<T>(&self, f: impl Future<Output = T>) -> T {
        self.rt.block_on(async {
            match tokio::time::timeout(EXEC_LIMIT, f).await {
                Ok(v) => v,
                Err(_) => panic!("no answer within {EXEC_LIMIT:?}: the server hangs"),
            }
        })
    }

    /// The live call: Alice (its caller) and Bob joined, Carol invited. A new one if an
    /// input ended it or made one of them leave; every other live call is ended then, so that
    /// rosters do not grow over a run.
    pub async fn live_call(&self) -> Uuid {
        let hub = &self.state.hub;
        let current = *self.call.lock().unwrap();
        if let Some(id) = current {
            if [ALICE, BOB, CAROL].iter().all(|u| hub.in_call(*u, id)) {
                return id;
            }
        }
        let calls = &self.state.calls;
        calls
            // As the server ends calls at a stop: no user's doing.
            .end_live_calls(EndReason::ServerShutdown)
            .await
            .expect("end the live calls");
        let req = InitiateRequest {
            conversation_id: CONVERSATION,
            kind: CallType::Video,
            participant_ids: vec![BOB, CAROL],
        };
        let made = calls
            .initiate(&self.alice, req)
            .await
            .expect("the fixture call");
        calls
            .answer(&self.bob, made.call_id)
            .await
            .expect("Bob answers the fixture call");
        *self.call.lock().unwrap() = Some(made.call_id);
        made.call_id
    }

    /// Ends every live call (those an input made).
    pub async fn end_other_calls(&self) {
        let _ = self
            .state
            .calls
            .end_live_calls(EndReason::ServerShutdown)
            .await;
        *self.call.lock().unwrap() = None;
    }

    /// A request through the daemon's router: the status and the body.
    pub async fn request(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        content_length: bool,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(b) = &body {
            req = req.header(header::CONTENT_TYPE, "application/json");
            if content_length {
                req = req.header(header::CONTENT_LENGTH, b.len());
            }
        }
        let req = req
            .body(body.map_or_else(Body::empty, Body::from))
            .expect("a request");
        let resp = self
            .app
            .clone()
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("a response body")
            .to_bytes()
            .to_vec();
        Reply { status, body }
    }

    /// A WebSocket to `path` (with its query), served as the daemon serves one.
    pub async fn websocket(&self, path: &str) -> Ws {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let service = hyper_util::service::TowerToHyperService::new(self.app.clone());
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(server), service)
                .with_upgrades()
                .await;
        });
        let (ws, _) = tokio_tungstenite::client_async(format!("ws://127.0.0.1{path}"), client)
            .await
            .unwrap_or_else(|e| panic!("WebSocket handshake at {path}: {e}"));
        Ws(ws)
    }

    /// Waits until Alice has no socket left in the hub (each input's sockets are gone before
    /// the next input's come: a user may hold only [`ws::MAX_SOCKETS_PER_USER`]).
    pub async fn settle(&self) {
        for i in 0..5_000 {
            if self.state.hub.sockets_of(ALICE) == 0 {
                return;
            }
            if i < 100 {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        panic!(
            "Alice still has {} sockets in the hub after hers were closed",
            self.state.hub.sockets_of(ALICE)
        );
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: a body that is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }
}

/// A client WebSocket.
pub struct Ws(pub WebSocketStream<DuplexStream>);

/// What a WebSocket read came to.
#[derive(Debug)]
pub enum Read {
    Text(String),
    /// A close frame, the end of the stream, or an error: the connection is over.
    Closed(String),
}

impl Ws {
    /// Sends `bytes` as one text frame; bytes that are not UTF-8 go as they are (a text frame
    /// no browser would send).
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        let m = match std::str::from_utf8(bytes) {
            Ok(t) => Message::text(t),
            Err(_) => Message::Frame(Frame::message(
                bytes.to_vec(),
                OpCode::Data(Data::Text),
                true,
            )),
        };
        self.0.send(m).await.is_ok()
    }

    /// Sends `bytes` as one binary frame.
    pub async fn send_binary(&mut self, bytes: &[u8]) -> bool {
        self.0.send(Message::binary(bytes.to_vec())).await.is_ok()
    }

    /// The next text frame (pings and pongs aside).
    pub async fn read(&mut self) -> Read {
        loop {
            match self.0.next().await {
                Some(Ok(Message::Text(t))) => return Read::Text(t.as_str().to_owned()),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Binary(b))) => panic!("a binary frame from the server: {b:?}"),
                Some(Ok(Message::Close(c))) => return Read::Closed(format!("close {c:?}")),
                Some(Err(e)) => return Read::Closed(format!("error {e}")),
                None => return Read::Closed("end of stream".into()),
            }
        }
    }

    /// Closes from the client's side, and waits for the server's side to be over.
    pub async fn close(mut self) {
        let _ = self.0.close(None).await;
        while let Some(Ok(_)) = self.0.next().await {}
    }
}

/// `input` with every [`CALL_PLACEHOLDER`] replaced by `call` (the same length).
pub fn substitute(input: &[u8], call: Uuid) -> Vec<u8> {
    let from = CALL_PLACEHOLDER.as_bytes();
    let to = call.hyphenated().to_string();
    let mut out = input.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to.as_bytes());
            i += from.len();
        } else {
            i += 1;
        }
    }
    out
}

/// The size-bound probe: an input starting with `trigger` is grown, by repeating `unit` in
/// front of it (the last repetition cut to fit), to exactly `limit - 8 + input[trigger.len()]
/// % 16` bytes, i.e. to either side of the bound `limit`; others are left as they are.
pub fn pad(input: &[u8], trigger: &[u8], unit: &[u8], limit: usize) -> Vec<u8> {
    let Some(&b) = input.strip_prefix(trigger).and_then(|r| r.first()) else {
        return input.to_vec();
    };
    let target = limit - 8 + usize::from(b % 16);
    let need = target.saturating_sub(input.len());
    let mut out: Vec<u8> = unit.iter().copied().cycle().take(need).collect();
    out.extend_from_slice(input);
    out
}

// -------------------------------------------------------------------------------------------
// The Engine.IO / Socket.IO decoder, as `sio.rs` uses its splitters.

/// The longest ping a client may send (`sio::MAX_PING`, private there).
pub const MAX_PING: usize = 64;

/// An Engine.IO packet from a client, as `Engine::on_packet` takes it.
#[derive(Debug, PartialEq)]
pub enum Eio<'a> {
    /// `4…`: a Socket.IO packet (`None`: too short, or not starting with an ASCII type).
    Message(Option<Sio<'a>>),
    /// `1`: the client closes the session.
    Close,
    /// `2…`: a ping, answered `3…` unless longer than [`MAX_PING`] (then the session ends).
    Ping(&'a str),
    /// Pongs, noops, anything else: only "heard".
    Other,
}

/// A Socket.IO packet, as `Engine::on_message` takes it.
#[derive(Debug, PartialEq)]
pub enum Sio<'a> {
    Connect {
        ns: &'a str,
        auth: &'a str,
    },
    Disconnect {
        ns: &'a str,
    },
    /// `2[<ack>]["event", data]`; `event`: what `split_event` makes of the body.
    Event {
        ns: &'a str,
        ack: Option<u64>,
        event: Option<(String, &'a str)>,
    },
    /// `5<n>-[<ack>]["event", ...]`: refused.
    Binary {
        ns: &'a str,
        ack: Option<u64>,
        event: Option<String>,
    },
    /// Acknowledgements, connect errors, binary acks, unknown types: nothing to do.
    Other {
        kind: u8,
        ns: &'a str,
    },
}

pub fn decode_eio(packet: &str) -> Eio<'_> {
    match packet.as_bytes().first() {
        Some(b'4') => Eio::Message(decode_sio(&packet[1..])),
        Some(b'1') => Eio::Close,
        Some(b'2') => Eio::Ping(&packet[1..]),
        _ => Eio::Other,
    }
}

pub fn decode_sio(packet: &str) -> Option<Sio<'_>> {
    let (Some(&kind), Some(mut rest)) = (packet.as_bytes().first(), packet.get(1..)) else {
        return None;
    };
    if matches!(kind, b'5' | b'6') {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        rest = rest[digits..].strip_prefix('-').unwrap_or(&rest[digits..]);
    }
    let (ns, rest) = sio::split_namespace(rest);
    Some(match kind {
        b'0' => Sio::Connect { ns, auth: rest },
        b'1' => Sio::Disconnect { ns },
        b'2' => {
            let (ack, body) = sio::split_ack(rest);
            Sio::Event {
                ns,
                ack,
                event: sio::split_event(body),
            }
        }
        b'5' => {
            let (ack, body) = sio::split_ack(rest);
            Sio::Binary {
                ns,
                ack,
                event: sio::split_event(body).map(|(e, _)| e),
            }
        }
        kind => Sio::Other { kind, ns },
    })
}

// -------------------------------------------------------------------------------------------
// The client events, as the hub's own parser types them.

/// What the hub makes of `event` with `data` (JSON text), before it looks at any call.
#[derive(Debug)]
pub enum Verdict<'a> {
    /// Not one of the client events: `unknown_event`.
    UnknownEvent,
    /// A wrong or missing field: `invalid_field`.
    InvalidField(String),
    /// Well formed: relayed or performed (or refused for what the call says).
    Valid(ClientEvent<'a>),
}

/// [`ClientEvent::parse`], the parser both transports use, and then what the call service
/// refuses of a well-formed event before it looks at the call: a `call:media` without any
/// flag, `call:stats` figures out of `quality.rs`'s bounds.
pub fn typed<'a>(event: &str, data: &'a str) -> Verdict<'a> {
    let e = match ClientEvent::parse(event, data) {
        Ok(e) => e,
        Err(Refusal::UnknownEvent(_)) => return Verdict::UnknownEvent,
        Err(Refusal::InvalidField(message)) => return Verdict::InvalidField(message),
    };
    match &e {
        ClientEvent::Media(_, m)
            if [m.audio_enabled, m.video_enabled, m.screen_sharing]
                .iter()
                .all(Option::is_none) =>
        {
            Verdict::InvalidField("body: give at least one flag".into())
        }
        ClientEvent::Stats(_, figures) => match figures.validate() {
            Err((field, message)) => Verdict::InvalidField(format!("{field}: {message}")),
            Ok(()) => Verdict::Valid(e),
        },
        _ => Verdict::Valid(e),
    }
}

/// Checks that an error `code` from the hub for `event` with `data` is what [`typed`] says
/// it must be; `performed`: the answer was an ack or a relay (no error).
pub fn check_verdict(event: &str, data: &str, code: Option<&str>, origin: &str) {
    let verdict = typed(event, data);
    let ok = match (&verdict, code) {
        (Verdict::UnknownEvent, Some(c)) => c == "unknown_event",
        (Verdict::InvalidField(_), Some(c)) => c == "invalid_field",
        (Verdict::Valid(_), Some(c)) => {
            !matches!(c, "unknown_event" | "invalid_field" | "invalid_frame")
        }
        (Verdict::Valid(_), None) => true,
        (_, None) => false,
    };
    assert!(
        ok,
        "{origin}: the hub answered {code:?} to {event:?} with {data}, expected from the contract: {verdict:?}"
    );
}
