//! The worked host-app example (`examples/chat-app`, Node) beside the real daemon, each on its
//! own origin (two loopback ports):
//!
//! - in Chromium (tests/browser/chat_app.mjs), Alice and Bob sign in on the example's page and
//!   make a relay-only video call through the spec's client code against switchboard's origin
//!   (CORS, Socket.IO from another origin, `/webrtc.js` imported cross-origin); no page logs a
//!   CORS error or a failed request, Bob's page gets `call:ended`, the call is stored;
//! - the example's webhook receiver: a signature made here with the shared secret is
//!   accepted and becomes a "missed call" line, a replay is de-duplicated, a forged, stale or
//!   altered one is refused 401, and what it accepted survives its restart;
//! - the daemon's webhooks reaching it, signed (checked here too), a missed call becoming a
//!   line, and a webhook pending while the example is down and the daemon is SIGKILLed
//!   delivered once both are back.
//!
//! Prerequisites (Chromium, node, `npm ci` in tests/browser and examples/chat-app) are
//! installed by tests/run.sh; a missing one fails the test.

use crate::common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::browser::{check_prerequisites, node_script, result_line};
use common::webhook::signature;
use common::{collect_lines, terminate, unix_now, wait_until, Api, Daemon, Options};
use serde_json::{json, Value};

const WEBHOOK_SECRET: &str = "integration-test-webhook-secret";
const CALL_LIMIT: Duration = Duration::from_secs(90);
const NODE_LIMIT: Duration = Duration::from_secs(120);
/// How long a webhook may take to arrive, retries after a refused connection included.
const DELIVERY_LIMIT: Duration = Duration::from_secs(60);

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/chat-app")
}

fn check_example_installed() {
    let client = example_dir().join("node_modules/socket.io-client/package.json");
    assert!(
        client.exists(),
        "{} is missing: run `npm ci --ignore-scripts` in examples/chat-app (tests/run.sh does)",
        client.display()
    );
}

/// A loopback TCP port free right now, for the example (its origin must be in the daemon's
/// config before either starts).
fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port()
}

/// The daemon for an example app on `app_port`: its origin allowed, conversations provisioned
/// by the app only, webhooks to the app.
fn daemon(app_port: u16, calls: &str) -> Daemon {
    let webhooks = format!(
        "url = [\"http://127.0.0.1:{app_port}/webhooks/switchboard\"]\n\
         secret = \"{WEBHOOK_SECRET}\""
    );
    Daemon::start_with(Options {
        http: format!("allowed_origins = [\"http://127.0.0.1:{app_port}\"]"),
        auth: "open_conversations = false".into(),
        calls: calls.into(),
        webhooks,
        ..Options::default()
    })
}

/// The daemon (`calls` inside its `[calls]`) and the example beside it on a free port, the
/// example's data in the returned temp dir: (data, the example's port, daemon, example).
fn start_both(calls: &str) -> (tempfile::TempDir, u16, Daemon, ChatApp) {
    let data = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let daemon = daemon(port, calls);
    let app = ChatApp::start(port, daemon.http, data.path());
    (data, port, daemon, app)
}

/// `node examples/chat-app/server.mjs`, killed on drop.
struct ChatApp {
    child: Option<Child>,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

/// A user signed in to the example: their id and the token it minted.
struct User {
    id: String,
    token: String,
    conversation: String,
}

impl ChatApp {
    fn start(port: u16, switchboard: SocketAddr, data: &Path) -> ChatApp {
        check_example_installed();
        let mut child = Command::new("node")
            .arg(example_dir().join("server.mjs"))
            .env("SWITCHBOARD_URL", format!("http://{switchboard}"))
            .env("SWITCHBOARD_JWT_SECRET", common::JWT_SECRET)
            .env("SWITCHBOARD_ADMIN_TOKEN", common::ADMIN_TOKEN)
            .env("SWITCHBOARD_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("PORT", port.to_string())
            .env("DATA_DIR", data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node (>= 20; tests/run.sh checks)");
        let streams: Vec<Box<dyn std::io::Read + Send>> = vec![
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        let (log, rx) = collect_lines(streams, "chat-app listening");
        let mut app = ChatApp {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        if rx.recv_timeout(Duration::from_secs(15)).is_err() {
            app.stop();
            panic!("the example did not start: {:#?}", app.log());
        }
        app
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn api(&self) -> Api {
        Api::new(self.addr)
    }

    /// Signs `name` in: the app provisions them in switchboard and mints their token.
    #[track_caller]
    fn sign_in(&self, name: &str) -> User {
        let (s, body) = self
            .api()
            .json("POST", "/api/sign-in", None, &json!({"name": name}));
        assert_eq!(s, 200, "sign in {name}: {body}; {:#?}", self.log());
        User {
            id: body["user"]["id"].as_str().unwrap().to_owned(),
            token: body["token"].as_str().unwrap().to_owned(),
            conversation: body["conversationId"].as_str().unwrap().to_owned(),
        }
    }

    /// The webhooks the app accepted, in order.
    fn webhooks(&self) -> Vec<Value> {
        let (s, body) = self.api().send("GET", "/api/webhooks", None, None);
        assert_eq!(s, 401, "the webhook log is open to anyone: {body}");
        let (s, body) = self.api().get("/api/webhooks", common::ADMIN_TOKEN);
        assert_eq!(s, 200, "{body}");
        body["webhooks"].as_array().cloned().unwrap_or_default()
    }

    /// The texts of the conversation's messages, as `user` reads them.
    fn messages(&self, user: &User) -> Vec<String> {
        let path = format!("/api/conversations/{}/messages", user.conversation);
        let (s, body) = self.api().get(&path, &user.token);
        assert_eq!(s, 200, "{body}");
        body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// POSTs `body` to the webhook endpoint with these headers: the status.
    fn post_webhook(&self, body: &str, headers: &[(&str, String)]) -> u16 {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let path = "/webhooks/switchboard";
        let answer = self
            .api()
            .try_send_with("POST", path, None, &headers, Some(body.as_bytes()));
        answer.expect("POST /webhooks/switchboard").0
    }

    /// SIGTERM and wait (bounded).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(10));
        }
    }
}

impl Drop for ChatApp {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A webhook the app accepted carries a signature of its body valid with the shared secret,
/// checked here independently of the app, and the event id header of its body.
#[track_caller]
fn assert_signed(w: &Value) {
    let timestamp: u64 = w["timestamp"].as_str().unwrap().parse().unwrap();
    let body = w["body"].as_str().unwrap();
    let sent = w["signature"].as_str().unwrap();
    let want = signature(WEBHOOK_SECRET, timestamp, body);
    assert!(
        sent.split([',', ' ']).any(|s| s == want),
        "{sent} is not {want} for {body}"
    );
    let event: Value = serde_json::from_str(body).unwrap();
    assert_eq!(w["eventIdHeader"], event["id"], "{w}");
    assert!(unix_now().abs_diff(timestamp) < 600, "{w}");
}

/// The webhooks the app accepted of `kind` for `call`, once at least one is there (bounded).
fn wait_webhooks(app: &ChatApp, call: &str, kind: &str) -> Vec<Value> {
    let mut found = Vec::new();
    wait_until(DELIVERY_LIMIT, || {
        found = app
            .webhooks()
            .into_iter()
            .filter(|w| w["callId"] == call && w["type"] == kind)
            .collect();
        !found.is_empty()
    });
    found
}

/// The app accepted one webhook of `kind` for `call` (bounded wait), its signature checked.
#[track_caller]
fn expect_one_signed_webhook(app: &ChatApp, daemon: &Daemon, call: &str, kind: &str) {
    let got = wait_webhooks(app, call, kind);
    let log = daemon.log();
    assert_eq!(got.len(), 1, "{kind}: {got:?}; daemon log: {log:#?}");
    assert_signed(&got[0]);
}

/// Waits (bounded) until `user` reads a message of the conversation that `pred` accepts.
#[track_caller]
fn wait_message(app: &ChatApp, user: &User, pred: impl Fn(&str) -> bool) {
    let found = wait_until(Duration::from_secs(5), || {
        app.messages(user).iter().any(|m| pred(m))
    });
    assert!(found, "no such message: {:?}", app.messages(user));
}

#[test]
fn two_users_of_the_example_call_through_switchboard_on_another_origin() {
    let _browser = check_prerequisites();
    let (_data, _, daemon, app) = start_both("");
    let app_url = format!("http://{}/", app.addr);
    let (code, out) = node_script("chat_app.mjs", &["--app", &app_url], CALL_LIMIT, NODE_LIMIT);
    println!("{out}");
    let report = || {
        format!(
            "chat_app.mjs said:\n{out}\nthe example's log:\n{:#?}\ndaemon log:\n{:#?}",
            app.log(),
            daemon.log()
        )
    };
    assert_eq!(code, Some(0), "the call failed; {}", report());
    let r = result_line(&out).unwrap_or_else(|| panic!("no result line; {}", report()));
    assert_eq!(r["ok"], true, "{}", report());

    // The browser's side, again: no page reported a problem (a CORS refusal is a console
    // error), media relayed both ways, Socket.IO upgraded from the other origin, the end seen.
    assert_eq!(r["problems"], json!([]), "{}", report());
    for pair in ["Alice->Bob", "Bob->Alice"] {
        let s = &r["selected"][pair];
        assert_eq!(s["local"]["candidateType"], "relay", "{pair}: {s}");
        assert_eq!(s["remote"]["candidateType"], "relay", "{pair}: {s}");
        let b = &r["bytes"][pair];
        assert!(b[1].as_u64() > b[0].as_u64(), "{pair}: no video: {b}");
    }
    assert_eq!(
        r["transports"],
        json!({"Alice": "websocket", "Bob": "websocket"})
    );
    assert_eq!(r["title"], "Call with Bob", "Alice's title once Bob joined");
    let call_id = r["callId"].as_str().unwrap();
    assert_eq!(r["bobEnded"]["callId"], call_id, "{r}");
    assert_eq!(r["bobEnded"]["reason"], "ended-by-user", "{r}");
    assert_eq!(r["bobEnded"]["endedBy"], r["alice"], "{r}");

    // The call as switchboard stored it, read with a token the example mints.
    let alice = app.sign_in("Alice");
    assert_eq!(r["alice"], alice.id.as_str());
    let (s, body) = daemon
        .api()
        .get(&format!("/api/calls/{call_id}"), &alice.token);
    assert_eq!(s, 200, "{body}");
    let call = &body["call"];
    assert_eq!(call["status"], "ended", "{call}");
    assert_eq!(call["type"], "video", "{call}");
    assert_eq!(call["initiatedBy"], alice.id.as_str(), "{call}");
    assert_eq!(
        call["conversationId"],
        alice.conversation.as_str(),
        "{call}"
    );
    let mut who: Vec<(&str, &str, &str)> = call["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or_default();
            (s("userId"), s("userName"), s("status"))
        })
        .collect();
    who.sort();
    let bob = r["bob"].as_str().unwrap();
    let mut want = vec![(alice.id.as_str(), "Alice", "left"), (bob, "Bob", "left")];
    want.sort();
    assert_eq!(who, want, "{call}");

    // Every transition reached the example, signed; the end became a line.
    for kind in ["call.initiated", "call.answered", "call.ended"] {
        expect_one_signed_webhook(&app, &daemon, call_id, kind);
    }
    wait_message(&app, &alice, |m| m.starts_with("Call ended ("));
}

#[test]
fn the_example_checks_webhook_signatures_and_keeps_what_it_accepted() {
    let (data, port, daemon, mut app) = start_both("");
    let alice = app.sign_in("Alice");
    let bob = app.sign_in("Bob");

    let call = uuid::Uuid::new_v4().to_string();
    let event = |id: &str, kind: &str, extra: Value| {
        let mut e = json!({
            "id": id, "type": kind, "createdAt": "2026-01-01T00:00:00Z",
            "callId": call, "conversationId": alice.conversation,
            "initiatedBy": alice.id, "userId": bob.id,
        });
        e.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        e.to_string()
    };
    let headers = |id: &str, ts: u64, sig: String| {
        vec![
            ("x-switchboard-timestamp", ts.to_string()),
            ("x-switchboard-signature", sig),
            ("x-switchboard-event-id", id.to_owned()),
        ]
    };
    let now = unix_now();

    // Signed with the shared secret: accepted, a line in the conversation.
    let missed = event("evt-missed-1", "call.missed", json!({}));
    let signed = headers("evt-missed-1", now, signature(WEBHOOK_SECRET, now, &missed));
    assert_eq!(app.post_webhook(&missed, &signed), 200);
    assert_eq!(app.messages(&alice), ["Missed call from Alice"]);
    // Again (at-least-once delivery): acknowledged, nothing added.
    assert_eq!(app.post_webhook(&missed, &signed), 200);
    assert_eq!(app.messages(&bob), ["Missed call from Alice"]);

    // Refused 401: another secret, an altered body, a stale or missing timestamp, no signature.
    let forged = event("evt-forged", "call.missed", json!({}));
    let forged_sig = signature("not-the-secret", now, &forged);
    assert_eq!(
        app.post_webhook(&forged, &headers("evt-forged", now, forged_sig)),
        401
    );
    let altered = missed.replace("evt-missed-1", "evt-altered");
    assert_eq!(app.post_webhook(&altered, &signed), 401);
    let old = now - 6 * 60;
    let stale = event("evt-stale", "call.missed", json!({}));
    let stale_sig = signature(WEBHOOK_SECRET, old, &stale);
    assert_eq!(
        app.post_webhook(&stale, &headers("evt-stale", old, stale_sig)),
        401
    );
    assert_eq!(
        app.post_webhook(&missed, &[signed[1].clone(), signed[2].clone()]),
        401,
        "no timestamp"
    );
    assert_eq!(
        app.post_webhook(&missed, &[signed[0].clone(), signed[2].clone()]),
        401,
        "no signature"
    );

    // The end of a call never answered adds no line (its missed line says it all).
    let unanswered = event(
        "evt-ended-0",
        "call.ended",
        json!({"startedAt": null, "duration": 0, "endReason": "no-answer"}),
    );
    let sig = signature(WEBHOOK_SECRET, now, &unanswered);
    assert_eq!(
        app.post_webhook(&unanswered, &headers("evt-ended-0", now, sig)),
        200
    );
    assert_eq!(app.messages(&alice), ["Missed call from Alice"]);

    // An answered call's end: its duration as m:ss.
    let ended = event(
        "evt-ended-1",
        "call.ended",
        json!({"startedAt": "2026-01-01T00:00:00Z", "duration": 75, "endReason": "ended-by-user"}),
    );
    let sig = signature(WEBHOOK_SECRET, now, &ended);
    assert_eq!(
        app.post_webhook(&ended, &headers("evt-ended-1", now, sig)),
        200
    );
    let want = ["Missed call from Alice", "Call ended (1:15)"];
    assert_eq!(app.messages(&alice), want);
    let ids = |app: &ChatApp| -> Vec<String> {
        app.webhooks()
            .iter()
            .map(|w| w["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&app), ["evt-missed-1", "evt-ended-0", "evt-ended-1"]);
    for w in app.webhooks() {
        assert_signed(&w);
    }

    // A restart keeps what was accepted, and still knows the replay.
    app.stop();
    let app = ChatApp::start(port, daemon.http, data.path());
    assert_eq!(ids(&app), ["evt-missed-1", "evt-ended-0", "evt-ended-1"]);
    assert_eq!(app.post_webhook(&missed, &signed), 200);
    assert_eq!(ids(&app), ["evt-missed-1", "evt-ended-0", "evt-ended-1"]);
    let alice = app.sign_in("Alice");
    assert_eq!(app.messages(&alice), want);
}

/// A call nobody answers rings out (3 s here): the daemon's `call.missed` becomes the
/// example's "missed call" line.
#[test]
fn a_missed_call_becomes_a_line_in_the_conversation() {
    let (_data, _, daemon, app) = start_both("ring_timeout = \"3s\"");
    let alice = app.sign_in("Alice");
    let bob = app.sign_in("Bob");
    let body =
        json!({"conversationId": alice.conversation, "type": "audio", "participantIds": [bob.id]});
    let (s, answer) = daemon.api().post_initiate(&alice.token, &body);
    assert_eq!(s, 201, "{answer}");
    let call = answer["callId"].as_str().unwrap();

    expect_one_signed_webhook(&app, &daemon, call, "call.missed");
    wait_message(&app, &bob, |m| m.starts_with("Missed call"));
    let (_, got) = daemon.api().get(&format!("/api/calls/{call}"), &bob.token);
    assert_eq!(got["call"]["status"], "missed", "{got}");
}

/// At-least-once across failures: with the example down, Bob rejects Alice's call; the daemon
/// cannot deliver `call.rejected` and is SIGKILLed. Once both are back (the daemon on the
/// same store), the webhook arrives, and the example keeps it once.
#[test]
fn a_webhook_pending_across_a_sigkill_is_delivered_once_both_are_back() {
    let (data, port, daemon, mut app) = start_both("");
    let alice = app.sign_in("Alice");
    let bob = app.sign_in("Bob");
    app.stop();

    let body =
        json!({"conversationId": alice.conversation, "type": "video", "participantIds": [bob.id]});
    let (s, answer) = daemon.api().post_initiate(&alice.token, &body);
    assert_eq!(s, 201, "{answer}");
    let call = answer["callId"].as_str().unwrap().to_owned();
    let (s, answer) = daemon
        .api()
        .post(&format!("/api/calls/{call}/reject"), &bob.token);
    assert_eq!(s, 200, "{answer}");
    // A delivery attempt or two fail against the closed port; then the crash.
    std::thread::sleep(Duration::from_millis(500));
    let dir = daemon.kill();

    let daemon = Daemon::restart(dir);
    let app = ChatApp::start(port, daemon.http, data.path());
    for kind in ["call.initiated", "call.rejected"] {
        expect_one_signed_webhook(&app, &daemon, &call, kind);
    }
    wait_message(&app, &alice, |m| m == "Bob declined the call");
    // Later retries (if any) change nothing: still one of each.
    std::thread::sleep(Duration::from_secs(2));
    let rejected: Vec<Value> = app
        .webhooks()
        .into_iter()
        .filter(|w| w["callId"] == call.as_str() && w["type"] == "call.rejected")
        .collect();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
}
