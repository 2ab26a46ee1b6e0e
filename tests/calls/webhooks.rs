//! Webhooks through the real daemon to a real HTTP receiver on loopback (a plain
//! `std::net::TcpListener` server written here):
//!
//! - every event type arrives, signed: the test checks each signature with its own
//!   HMAC-SHA256 (the `hmac` crate, not the daemon's `ring`), and the body's fields;
//! - a receiver that answers 500 gets the same event again, later, until it answers 2xx;
//! - durability: with the receiver down, a transition's webhook waits in the store; the daemon
//!   is SIGKILLed, and once the receiver and the daemon are back the same event arrives;
//! - a graceful stop sends the webhooks of the calls it ends before it exits.

use crate::common;

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read as _};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::webhook::signature;
use common::ws::Hub;
use common::{Daemon, Options, Person};
use serde_json::Value;

const SECRET: &str = "webhook-test-secret-0123456789";

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Hit {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    at: Instant,
}

impl Hit {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A webhook receiver on loopback: records each request and answers with the next scripted
/// status (200 once the script is used up). Stops when dropped.
struct Receiver {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(script: &[u16]) -> Receiver {
        Receiver::start_on("127.0.0.1:0".parse().unwrap(), script)
    }

    fn start_on(addr: SocketAddr, script: &[u16]) -> Receiver {
        Receiver::start_with(addr, script, None)
    }

    /// A receiver serving HTTPS with `cert`.
    fn start_tls(cert: &common::TestCert) -> Receiver {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der.clone())],
                PrivateKeyDer::from_pem_file(&cert.key).expect("the key"),
            )
            .expect("a server config");
        Receiver::start_with("127.0.0.1:0".parse().unwrap(), &[], Some(Arc::new(config)))
    }

    fn start_with(
        addr: SocketAddr,
        script: &[u16],
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Receiver {
        let listener = TcpListener::bind(addr).expect("bind the receiver");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script: VecDeque<u16> = script.iter().copied().collect();
        let thread = {
            let (hits, stop) = (hits.clone(), stop.clone());
            std::thread::spawn(move || serve(listener, hits, stop, script, tls))
        };
        Receiver {
            addr,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/switchboard", self.addr)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits (bounded) until `pred` holds for the hits so far; returns them.
    fn wait(&self, limit: Duration, what: &str, pred: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
        let deadline = Instant::now() + limit;
        loop {
            let hits = self.hits();
            if pred(&hits) {
                return hits;
            }
            if Instant::now() > deadline {
                let seen: Vec<Value> = hits.iter().map(|h| h.json()["type"].clone()).collect();
                panic!("{what}: not within {limit:?}; received {seen:#?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    listener: TcpListener,
    hits: Arc<Mutex<Vec<Hit>>>,
    stop: Arc<AtomicBool>,
    mut script: VecDeque<u16>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    while !stop.load(Ordering::Relaxed) {
        let (conn, _) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(e) => panic!("accept: {e}"),
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let status = script.front().copied().unwrap_or(200);
        let answered = match &tls {
            None => exchange(conn, status),
            Some(config) => {
                let server = rustls::ServerConnection::new(config.clone()).unwrap();
                exchange(rustls::StreamOwned::new(server, conn), status)
            }
        };
        if let Some(hit) = answered {
            script.pop_front();
            hits.lock().unwrap().push(hit);
        }
    }
}

/// Reads one request from `stream` and answers `status`.
fn exchange<S: std::io::Read + std::io::Write>(mut stream: S, status: u16) -> Option<Hit> {
    let hit = read_request(&mut stream)?;
    write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    )
    .ok()?;
    stream.flush().ok()?;
    Some(hit)
}

/// One HTTP/1.1 request: its path, headers and `content-length` body.
fn read_request(conn: &mut impl std::io::Read) -> Option<Hit> {
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    assert_eq!(parts.next(), Some("POST"), "the method: {line}");
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))?
        .1
        .parse()
        .ok()?;
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Hit {
        path,
        headers,
        body,
        at: Instant::now(),
    })
}

/// Checks a hit as a receiver should: a fresh timestamp, and a signature that is
/// HMAC-SHA256(secret, "<timestamp>.<body>") in hex after `v1=`. Returns the body.
fn verified(hit: &Hit) -> Value {
    let ts = hit.header("x-switchboard-timestamp").expect("a timestamp");
    let sig = hit.header("x-switchboard-signature").expect("a signature");
    let now = common::unix_now();
    let ts_n: u64 = ts.parse().expect("unix seconds");
    assert!(
        now.abs_diff(ts_n) <= 5,
        "a stale timestamp: {ts} (now {now})"
    );
    let want = signature(SECRET, ts, &hit.body);
    assert_eq!(sig, want, "the signature of {}", hit.json());
    // A signature with another secret does not match.
    assert_ne!(sig, signature("another-secret", ts, &hit.body));
    assert_eq!(hit.header("content-type"), Some("application/json"));
    assert_eq!(hit.path, "/hooks/switchboard");
    let body = hit.json();
    assert_eq!(
        hit.header("x-switchboard-event-id"),
        body["id"].as_str(),
        "the event id header is the body's id"
    );
    body
}

/// Waits (bounded) until the metric `name` reads `value`.
#[track_caller]
fn settles(daemon: &Daemon, name: &str, value: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = daemon.metric(name);
        if now == value {
            return;
        }
        assert!(Instant::now() < deadline, "{name} is {now}, not {value}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A daemon's options sending webhooks to `url`, with `extra` lines in `[webhooks]`.
fn webhooks_to(url: &str, extra: &str) -> Options {
    Options {
        webhooks: format!("url = \"{url}\"\nsecret = \"{SECRET}\"\n{extra}"),
        ..Options::default()
    }
}

/// The bodies of a call's events, in the order they arrived.
fn of_call(hits: &[Hit], call: &str) -> Vec<Value> {
    hits.iter()
        .map(verified)
        .filter(|b| b["callId"] == call)
        .collect()
}

fn types(bodies: &[Value]) -> Vec<String> {
    bodies
        .iter()
        .map(|b| {
            let who = b["userId"]
                .as_str()
                .map(|u| format!(" {}", &u[..8]))
                .unwrap_or_default();
            format!("{}{who}", b["type"].as_str().unwrap())
        })
        .collect()
}

fn short(p: &Person) -> String {
    p.uid()[..8].to_owned()
}

#[test]
fn every_event_type_arrives_signed_in_order() {
    let receiver = Receiver::start(&[]);
    let daemon = Daemon::start_with(Options {
        calls: "ring_timeout = \"2s\"".into(),
        ..webhooks_to(&receiver.url(), "")
    });
    let api = daemon.api();
    let (alice, bob, carol) = (api.person("Alice"), api.person("Bob"), api.person("Carol"));
    let conv = || uuid::Uuid::new_v4();

    // Answered, then hung up; Bob has no socket: he is rung offline.
    let answered = api.start_call(&alice, conv(), "video", &[&bob]);
    api.act_ok(&bob, &answered, "answer");
    std::thread::sleep(Duration::from_millis(1100));
    api.act_ok(&alice, &answered, "end");
    // Rejected.
    let rejected = api.start_call(&alice, conv(), "audio", &[&bob]);
    api.act_ok(&bob, &rejected, "reject");
    // Missed: nobody answers within the ring timeout.
    let missed = api.start_call(&alice, conv(), "audio", &[&bob]);
    // A group call Bob leaves, then Carol ends.
    let group = api.start_call(&alice, conv(), "audio", &[&bob, &carol]);
    api.act_ok(&bob, &group, "answer");
    api.act_ok(&carol, &group, "answer");
    api.act_ok(&bob, &group, "end");
    api.act_ok(&carol, &group, "end");

    let hits = receiver.wait(Duration::from_secs(15), "every event", |h| {
        h.iter()
            .any(|h| h.json()["callId"] == missed && h.json()["type"] == "call.ended")
            && h.iter()
                .any(|h| h.json()["callId"] == group && h.json()["type"] == "call.ended")
    });
    let (a, b, c) = (short(&alice), short(&bob), short(&carol));
    let events = of_call(&hits, &answered);
    assert_eq!(
        types(&events),
        [
            "call.initiated".to_owned(),
            format!("call.ringing_user_offline {b}"),
            format!("call.answered {b}"),
            format!("call.participant_joined {b}"),
            "call.ended".to_owned(),
        ]
    );
    let initiated = &events[0];
    assert!(initiated["conversationId"].is_string());
    assert_eq!(initiated["callType"], "video");
    assert_eq!(initiated["initiatedBy"], alice.uid());
    assert_eq!(initiated["callStatus"], "initiated");
    assert_eq!(initiated["participantCount"], 2);
    assert_eq!(initiated["participants"][0]["userName"], "Alice");
    assert_eq!(initiated["participants"][1]["userId"], bob.uid());
    assert_eq!(initiated["participants"][1]["status"], "invited");
    assert!(initiated["createdAt"].as_str().unwrap().ends_with('Z'));
    let ended = &events[4];
    assert_eq!(ended["endReason"], "ended-by-user");
    assert_eq!(ended["callStatus"], "ended");
    assert!(ended["duration"].as_u64().unwrap() >= 1, "{ended}");
    assert!(ended["endedAt"].is_string() && ended["startedAt"].is_string());

    assert_eq!(
        types(&of_call(&hits, &rejected)),
        [
            "call.initiated".to_owned(),
            format!("call.ringing_user_offline {b}"),
            format!("call.rejected {b}"),
            "call.ended".to_owned(),
        ]
    );
    let events = of_call(&hits, &missed);
    assert_eq!(
        types(&events),
        [
            "call.initiated".to_owned(),
            format!("call.ringing_user_offline {b}"),
            format!("call.missed {b}"),
            "call.ended".to_owned(),
        ]
    );
    assert_eq!(events[3]["endReason"], "no-answer");
    assert_eq!(events[3]["callStatus"], "missed");
    assert_eq!(events[3]["duration"], 0);
    assert_eq!(
        types(&of_call(&hits, &group)),
        [
            "call.initiated".to_owned(),
            format!("call.ringing_user_offline {b}"),
            format!("call.ringing_user_offline {c}"),
            format!("call.answered {b}"),
            format!("call.participant_joined {b}"),
            format!("call.participant_joined {c}"),
            format!("call.participant_left {b}"),
            "call.ended".to_owned(),
        ]
    );
    let _ = a;
    // Every event once, each with its own id.
    let mut ids: Vec<String> = hits.iter().map(|h| h.json()["id"].to_string()).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "an event was delivered twice");
    // The receiver records a request before it answers: the daemon counts it after.
    settles(&daemon, "switchboard_webhooks_delivered_total", n as u64);
    settles(&daemon, "switchboard_webhooks_queued", 0);
    assert_eq!(daemon.metric("switchboard_webhooks_failed_total"), 0);
}

#[test]
fn a_failed_delivery_is_retried_until_it_is_accepted() {
    // 500, then a 302 (not followed: not delivered), then 200.
    let receiver = Receiver::start(&[500, 302]);
    let daemon = Daemon::start_with(webhooks_to(&receiver.url(), "timeout = \"2s\""));
    let api = daemon.api();
    let (alice, bob) = (api.person("Alice"), api.person("Bob"));
    let call = api.start_call(&alice, uuid::Uuid::new_v4(), "audio", &[&bob]);
    api.act_ok(&bob, &call, "reject");
    // call.initiated three times (500, 302, 200), then the later events in order: the queue
    // waits for its head.
    let hits = receiver.wait(Duration::from_secs(20), "the retries", |h| h.len() >= 6);
    let bodies: Vec<Value> = hits.iter().map(verified).collect();
    let kinds: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "call.initiated",
            "call.initiated",
            "call.initiated",
            "call.ringing_user_offline",
            "call.rejected",
            "call.ended"
        ]
    );
    // The same event each time (the same id and body), signed anew each time.
    assert_eq!(hits[0].body, hits[1].body);
    assert_eq!(hits[1].body, hits[2].body);
    // Backed off: about 1 s, then about 2 s (each ±25 %).
    let first = hits[1].at - hits[0].at;
    let second = hits[2].at - hits[1].at;
    // (The upper bounds leave room for a loaded CI machine, and still catch a schedule that
    // starts at the cap or doubles twice.)
    assert!(
        first >= Duration::from_millis(700) && first < Duration::from_millis(2500),
        "{first:?}"
    );
    assert!(
        second >= Duration::from_millis(1400) && second < Duration::from_millis(4000),
        "{second:?}"
    );
    assert_eq!(daemon.metric("switchboard_webhooks_failed_total"), 2);
    // No delivery failed for good, nothing is left.
    settles(&daemon, "switchboard_webhooks_delivered_total", 4);
    settles(&daemon, "switchboard_webhooks_queued", 0);
    assert_eq!(receiver.hits().len(), 6, "nothing more");
    assert_eq!(daemon.metric("switchboard_webhooks_dropped_total"), 0);
}

/// The rows of the outbox in the daemon's store file: (event id, type, attempts).
fn outbox(daemon: &Daemon) -> Vec<(String, String, i64)> {
    let conn = rusqlite::Connection::open_with_flags(
        daemon.store_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare("SELECT event_id, body ->> '$.type', attempts FROM webhook_outbox ORDER BY seq")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    rows.collect::<Result<_, _>>().unwrap()
}

#[test]
fn a_pending_webhook_survives_a_sigkill() {
    // A port with nothing behind it (yet): connections are refused.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}/hooks/switchboard");
    let daemon = Daemon::start_with(webhooks_to(&url, ""));
    let api = daemon.api();
    let (alice, bob) = (api.person("Alice"), api.person("Bob"));
    let call = api.start_call(&alice, uuid::Uuid::new_v4(), "audio", &[&bob]);
    // Tried and failed (the failure recorded on the row): the rows are committed and waiting.
    let deadline = Instant::now() + Duration::from_secs(10);
    let pending = loop {
        let pending = outbox(&daemon);
        if pending
            .first()
            .is_some_and(|(_, _, attempts)| *attempts >= 1)
        {
            break pending;
        }
        assert!(Instant::now() < deadline, "no failed attempt: {pending:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(daemon.metric("switchboard_webhooks_failed_total") >= 1);
    let kinds: Vec<&str> = pending.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["call.initiated", "call.ringing_user_offline"]);
    let dir = daemon.kill();

    let receiver = Receiver::start_on(addr, &[]);
    let daemon = Daemon::restart(dir);
    // The restart ends the call a crash left live: its call.missed and call.ended follow.
    let hits = receiver.wait(Duration::from_secs(15), "the pending webhooks", |h| {
        h.iter().any(|h| h.json()["type"] == "call.ended")
    });
    let bodies: Vec<Value> = hits.iter().map(verified).collect();
    let got: Vec<(String, String)> = bodies
        .iter()
        .map(|b| {
            (
                b["id"].as_str().unwrap().to_owned(),
                b["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = pending
        .iter()
        .map(|(id, kind, _)| (id.clone(), kind.clone()))
        .collect();
    // The same events, by id, each once, first; then the restart's own.
    assert_eq!(got[..2], expected[..]);
    assert_eq!(got[2].1, "call.missed");
    assert_eq!(got[3].1, "call.ended");
    assert_eq!(bodies[3]["callId"], call);
    assert_eq!(bodies[3]["endReason"], "server-restart");
    // Nothing more, not even a duplicate: the next retry would come within about a second.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(receiver.hits().len(), 4, "a webhook arrived twice");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !outbox(&daemon).is_empty() {
        assert!(Instant::now() < deadline, "the outbox is not emptied");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A graceful stop ends the live calls (`server-shutdown`) and sends their `call.ended` before
/// the process exits, not at some next start that may never come.
#[test]
fn a_graceful_stop_sends_the_shutdowns_own_webhooks() {
    let receiver = Receiver::start(&[]);
    let mut daemon = Daemon::start_with(webhooks_to(&receiver.url(), ""));
    let api = daemon.api();
    let (alice, bob) = (api.person("Alice"), api.person("Bob"));
    let call = api.start_call(&alice, uuid::Uuid::new_v4(), "audio", &[&bob]);
    api.act_ok(&bob, &call, "answer");
    receiver.wait(Duration::from_secs(10), "call.answered", |h| {
        h.iter().any(|h| h.json()["type"] == "call.answered")
    });
    assert!(daemon.stop().success(), "{:#?}", daemon.log());
    let ended: Vec<Value> = receiver
        .hits()
        .iter()
        .map(verified)
        .filter(|b| b["type"] == "call.ended")
        .collect();
    assert_eq!(ended.len(), 1, "{ended:#?}");
    assert_eq!(ended[0]["callId"], call);
    assert_eq!(ended[0]["endReason"], "server-shutdown");
}

#[test]
fn an_invitee_with_a_socket_is_not_rung_offline() {
    let receiver = Receiver::start(&[]);
    let daemon = Daemon::start_with(webhooks_to(&receiver.url(), ""));
    let api = daemon.api();
    let (alice, bob) = (api.person("Alice"), api.person("Bob"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut ws = rt.block_on(Hub::open(&daemon, &bob));
    let online = api.start_call(&alice, uuid::Uuid::new_v4(), "audio", &[&bob]);
    api.act_ok(&alice, &online, "end");
    // Until the server has seen the close: the socket is gone from the hub.
    rt.block_on(ws.socket().close());
    std::thread::sleep(Duration::from_millis(200));
    let offline = api.start_call(&alice, uuid::Uuid::new_v4(), "audio", &[&bob]);
    let hits = receiver.wait(Duration::from_secs(10), "both calls", |h| {
        h.iter().any(|h| h.json()["callId"] == offline)
    });
    let b = short(&bob);
    assert_eq!(
        types(&of_call(&hits, &online)),
        ["call.initiated", &format!("call.missed {b}"), "call.ended"]
    );
    let hits = receiver.wait(Duration::from_secs(10), "the offline ring", |h| {
        h.iter()
            .any(|h| h.json()["type"] == "call.ringing_user_offline")
    });
    assert_eq!(
        types(&of_call(&hits, &offline)),
        [
            "call.initiated".to_owned(),
            format!("call.ringing_user_offline {b}")
        ]
    );
}

#[test]
fn https_receivers_are_verified_against_the_ca_store() {
    let dir = tempfile::tempdir().unwrap();
    let cert = common::TestCert::generate(dir.path(), "receiver");
    let receiver = Receiver::start_tls(&cert);
    let url = format!(
        "https://localhost:{}/hooks/switchboard",
        receiver.addr.port()
    );
    // The daemon trusts the receiver's certificate (as its CA store) through SSL_CERT_FILE.
    let daemon = Daemon::start_with(Options {
        env: vec![("SSL_CERT_FILE".into(), cert.cert.display().to_string())],
        ..webhooks_to(&url, "")
    });
    let api = daemon.api();
    let (alice, bob) = (api.person("Alice"), api.person("Bob"));
    let call = api.start_call(&alice, uuid::Uuid::new_v4(), "audio", &[&bob]);
    let hits = receiver.wait(Duration::from_secs(10), "over https", |h| h.len() >= 2);
    assert_eq!(verified(&hits[0])["callId"], call);
    assert_eq!(
        hits[0].header("host"),
        Some(&*format!("localhost:{}", receiver.addr.port()))
    );

    // A daemon that does not trust it fails the handshake, and retries.
    let untrusting = Daemon::start_with(Options {
        env: vec![(
            "SSL_CERT_FILE".into(),
            dir.path().join("none.pem").display().to_string(),
        )],
        ..webhooks_to(&url, "")
    });
    let api = untrusting.api();
    let (alice, bob) = (api.person("Alice"), api.person("Bob"));
    api.start_call(&alice, uuid::Uuid::new_v4(), "audio", &[&bob]);
    let line = untrusting
        .wait_log(Duration::from_secs(10), |l| {
            l.contains("webhook not delivered")
        })
        .expect("a failed attempt");
    assert!(line.contains("tls"), "{line}");
    assert_eq!(receiver.hits().len(), 2, "nothing more arrived");
}
