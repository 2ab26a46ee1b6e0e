//! The calls REST API through the real daemon: HTTP on port 0, a real SQLite file read back
//! directly (read-only, beside the running daemon), every transition of the call state machine
//! and every refusal, in the spec's shapes (shared/spec/phase4-calls.md, "API Endpoints") and
//! DESIGN.md's rules. Every refused request is checked to leave the store byte-for-byte as it
//! was.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{code, error_code, request, token, unix_now, Api, Daemon, Options};
use common::{ADMIN_TOKEN, JWT_SECRET, SECRET};
use serde_json::{json, Map, Value};
use stun_types::attribute::Nonce;
use stun_types::message::{Message, MessageWrite, MessageWriteExt, MessageWriteVec};
use switchboard_signaling::time::Timestamp;
use turn_types::attribute::{RequestedTransport, XorRelayedAddress};
use turn_types::message::ALLOCATE;
use uuid::Uuid;

/// The tables of the store, in the order the dumps list them.
const TABLES: &[(&str, &str)] = &[
    ("users", "id"),
    ("conversations", "id"),
    ("conversation_members", "conversation_id, user_id"),
    ("calls", "id"),
    ("call_participants", "id"),
    ("turn_credentials", "id"),
];

/// The default media state of a participant (schema.sql, the spec's default).
fn default_media() -> Value {
    json!({"audioEnabled": true, "videoEnabled": true, "screenSharing": false})
}

// ---------------------------------------------------------------------------------------------
// Users.

/// A user of the host application, with a token for the test daemons.
struct Person {
    id: Uuid,
    name: String,
    email: String,
    token: String,
}

fn person(name: &str) -> Person {
    let id = Uuid::new_v4();
    let email = format!("{}@example.com", name.to_lowercase());
    Person {
        id,
        token: token(id, Some(name), Some(&email)),
        name: name.to_owned(),
        email,
    }
}

impl Person {
    fn uid(&self) -> String {
        self.id.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// A daemon, its API and its store.

struct T {
    d: Daemon,
    api: Api,
}

type Row = Map<String, Value>;

impl T {
    fn start(options: Options) -> T {
        let d = Daemon::start_with(options);
        let api = d.api();
        T { d, api }
    }

    fn calls(calls: &str) -> T {
        T::start(Options {
            calls: calls.to_owned(),
            ..Options::default()
        })
    }

    fn closed() -> T {
        T::start(Options {
            auth: "open_conversations = false".to_owned(),
            ..Options::default()
        })
    }

    /// A read-only connection to the daemon's SQLite file (WAL: it sees every commit).
    fn db(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open_with_flags(
            self.d.store_path(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .expect("open the store read-only");
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        c
    }

    /// Every row of `sql`, as column → JSON value.
    fn rows(&self, sql: &str, params: &[&dyn rusqlite::ToSql]) -> Vec<Row> {
        let db = self.db();
        let mut stmt = db.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
        let rows = stmt
            .query_map(params, |r| {
                let mut m = Map::new();
                for (i, n) in names.iter().enumerate() {
                    m.insert(n.clone(), to_json(r.get(i)?));
                }
                Ok(m)
            })
            .unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    /// Every row of every table, one line each: what "nothing changed" compares.
    fn dump(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (table, order) in TABLES {
            for row in self.rows(&format!("SELECT * FROM {table} ORDER BY {order}"), &[]) {
                out.push(format!("{table}: {}", Value::Object(row)));
            }
        }
        out
    }

    /// The `calls` row of `id`.
    #[track_caller]
    fn call_row(&self, id: &str) -> Row {
        let mut rows = self.rows("SELECT * FROM calls WHERE id = ?1", &[&id]);
        assert_eq!(rows.len(), 1, "one calls row for {id}");
        rows.remove(0)
    }

    /// The `call_participants` rows of `call`, by user id.
    fn participants(&self, call: &str) -> BTreeMap<String, Row> {
        self.rows(
            "SELECT * FROM call_participants WHERE call_id = ?1",
            &[&call],
        )
        .into_iter()
        .map(|r| (r["user_id"].as_str().unwrap().to_owned(), r))
        .collect()
    }

    /// Asserts the participants of `call` are exactly `expected` (user, status) in the store.
    #[track_caller]
    fn assert_statuses(&self, call: &str, expected: &[(&Person, &str)]) {
        let got: BTreeMap<String, String> = self
            .participants(call)
            .into_iter()
            .map(|(u, r)| (u, r["status"].as_str().unwrap().to_owned()))
            .collect();
        let want: BTreeMap<String, String> = expected
            .iter()
            .map(|(p, s)| (p.uid(), (*s).to_owned()))
            .collect();
        assert_eq!(got, want, "participant statuses of {call}");
    }

    /// The members of a conversation in the store.
    fn members(&self, conversation: Uuid) -> BTreeSet<String> {
        self.rows(
            "SELECT user_id FROM conversation_members WHERE conversation_id = ?1",
            &[&conversation.to_string()],
        )
        .into_iter()
        .map(|r| r["user_id"].as_str().unwrap().to_owned())
        .collect()
    }

    /// Makes `p` known to the daemon, as any successful request of theirs does.
    #[track_caller]
    fn register(&self, p: &Person) {
        let (s, body) = self.api.get("/api/calls", &p.token);
        assert_eq!(s, 200, "history for {}: {body}", p.name);
    }

    fn try_initiate(
        &self,
        by: &Person,
        conversation: Uuid,
        kind: &str,
        to: &[&Person],
    ) -> (u16, Value) {
        let ids: Vec<String> = to.iter().map(|p| p.uid()).collect();
        self.api.json(
            "POST",
            "/api/calls/initiate",
            Some(&by.token),
            &json!({"conversationId": conversation, "type": kind, "participantIds": ids}),
        )
    }

    /// Starts a call; returns its id.
    #[track_caller]
    fn initiate(&self, by: &Person, conversation: Uuid, kind: &str, to: &[&Person]) -> String {
        let (s, body) = self.try_initiate(by, conversation, kind, to);
        assert_eq!(s, 201, "initiate by {}: {body}", by.name);
        body["callId"].as_str().expect("callId").to_owned()
    }

    /// `POST /api/calls/{call}/{action}` as `who`.
    fn act(&self, who: &Person, call: &str, action: &str) -> (u16, Value) {
        self.api
            .post(&format!("/api/calls/{call}/{action}"), &who.token)
    }

    /// `act`, which must succeed.
    #[track_caller]
    fn ok(&self, who: &Person, call: &str, action: &str) -> Value {
        let (s, body) = self.act(who, call, action);
        assert_eq!(s, 200, "{action} by {}: {body}", who.name);
        body
    }

    fn media(&self, who: &Person, call: &str, body: &Value) -> (u16, Value) {
        self.api.json(
            "PATCH",
            &format!("/api/calls/{call}/media"),
            Some(&who.token),
            body,
        )
    }

    /// `GET /api/calls/{call}` as `who`, which must succeed; returns `call`.
    #[track_caller]
    fn get_call(&self, who: &Person, call: &str) -> Value {
        let (s, body) = self.api.get(&format!("/api/calls/{call}"), &who.token);
        assert_eq!(s, 200, "GET call by {}: {body}", who.name);
        body["call"].clone()
    }

    /// Runs a request that must be refused with `status` and `code`, in the error shape, and
    /// leave every table exactly as it was. Returns the error body.
    #[track_caller]
    fn refused(&self, status: u16, code: &str, f: impl FnOnce(&Api) -> (u16, Value)) -> Value {
        let before = self.dump();
        let (s, body) = f(&self.api);
        assert_eq!((s, error_code(&body)), (status, code), "{body}");
        assert_error_shape(&body);
        assert_eq!(
            self.dump(),
            before,
            "a refused request changed the store: {body}"
        );
        body
    }
}

fn to_json(v: rusqlite::types::Value) -> Value {
    use rusqlite::types::Value as V;
    match v {
        V::Null => Value::Null,
        V::Integer(i) => json!(i),
        V::Real(f) => json!(f),
        V::Text(s) => Value::String(s),
        V::Blob(b) => json!(b),
    }
}

/// `{"error": {"code": "...", "message": "..."}}` and nothing else.
#[track_caller]
fn assert_error_shape(body: &Value) {
    let top = body
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {body}"));
    assert_eq!(top.keys().collect::<Vec<_>>(), ["error"], "{body}");
    let e = body["error"].as_object().expect("error object");
    let mut keys: Vec<&String> = e.keys().collect();
    keys.sort();
    assert_eq!(keys, ["code", "message"], "{body}");
    assert!(
        !e["code"].as_str().expect("code").is_empty()
            && !e["message"].as_str().expect("message").is_empty(),
        "{body}"
    );
}

/// The error message of an error body.
fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap()
}

/// Milliseconds since the epoch of a stored or returned timestamp.
#[track_caller]
fn ms(v: &Value) -> u64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    Timestamp::parse(s)
        .unwrap_or_else(|| panic!("not RFC 3339: {s}"))
        .unix_millis()
}

fn now_ms() -> u64 {
    Timestamp::now().unix_millis()
}

/// Polls `f` every 20 ms for at most `limit`.
fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 exchange over a plain socket (for chunked bodies, other schemes and response
/// headers): the status, the head, and the body as JSON (`null` if empty).
fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String, Value) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer (413) and close before reading everything: keep what it said.
    let _ = s
        .write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())
        .and_then(|()| s.write_all(body));
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head}"));
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
    };
    (status, head.to_owned(), json)
}

/// A header's value in a response head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

// ---------------------------------------------------------------------------------------------
// The relay, driven with minted credentials (the long-term credential flow of relay_errors.rs).

fn allocate_req() -> MessageWriteVec {
    let mut w = request(ALLOCATE);
    w.add_attribute(&RequestedTransport::new(17)).unwrap();
    w
}

/// An Allocate over UDP with `username`/`password`: challenged first for the nonce, as clients
/// are. Returns the final response.
fn allocate(turn: SocketAddr, username: &str, password: &str) -> Vec<u8> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let exchange = |bytes: &[u8]| -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        for _ in 0..6 {
            sock.send_to(bytes, turn).unwrap();
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                return buf[..n].to_vec();
            }
        }
        panic!("no answer from the relay at {turn}");
    };
    let challenge = exchange(&allocate_req().finish());
    assert_eq!(
        code(&challenge),
        401,
        "an unauthenticated Allocate is challenged"
    );
    let msg = Message::from_bytes(&challenge).unwrap();
    let nonce = msg
        .attribute::<Nonce>()
        .expect("a NONCE")
        .nonce()
        .to_owned();
    exchange(&common::seal(allocate_req(), username, password, &nonce))
}

fn relayed_of(bytes: &[u8]) -> SocketAddr {
    let msg = Message::from_bytes(bytes).unwrap();
    msg.attribute::<XorRelayedAddress>()
        .unwrap()
        .addr(msg.transaction_id())
}

// =============================================================================================
// The 1:1 call.

#[test]
fn one_to_one_call_in_the_spec_shapes() {
    let t = T::start(Options::default());
    let (alice, bob) = (person("Alice"), person("Bob"));
    t.register(&alice);
    t.register(&bob);
    let conv = Uuid::new_v4();

    // Initiate: 201, the spec's shape, the invitee as the spec lists them.
    let (s, body) = t.try_initiate(&alice, conv, "video", &[&bob]);
    assert_eq!(s, 201, "{body}");
    let call = body["callId"].as_str().expect("callId").to_owned();
    assert!(Uuid::parse_str(&call).is_ok(), "{call}");
    assert_eq!(body["status"], "initiated");
    let invitees = body["participants"].as_array().expect("participants");
    assert_eq!(invitees.len(), 1, "{body}");
    assert_eq!(invitees[0]["userId"], bob.uid());
    assert_eq!(invitees[0]["userName"], "Bob");
    assert_eq!(invitees[0]["userIdentifier"], "bob@example.com");
    assert_eq!(invitees[0]["status"], "invited");

    // The store: the call, its participants, the conversation made on first use.
    let row = t.call_row(&call);
    assert_eq!(row["conversation_id"], conv.to_string());
    assert_eq!(row["type"], "video");
    assert_eq!(row["status"], "initiated");
    assert_eq!(row["initiated_by"], alice.uid());
    for col in ["started_at", "ended_at", "duration_seconds", "end_reason"] {
        assert_eq!(row[col], Value::Null, "{col}");
    }
    let ps = t.participants(&call);
    assert_eq!(ps.len(), 2);
    assert_eq!(ps[&alice.uid()]["status"], "joined");
    assert!(ps[&alice.uid()]["joined_at"].is_string());
    assert_eq!(ps[&bob.uid()]["status"], "invited");
    assert_eq!(ps[&bob.uid()]["joined_at"], Value::Null);
    for p in ps.values() {
        let m: Value = serde_json::from_str(p["media_state"].as_str().unwrap()).unwrap();
        assert_eq!(m, default_media());
    }
    assert_eq!(
        t.members(conv),
        BTreeSet::from([alice.uid(), bob.uid()]),
        "open_conversations: the caller and the invitee are members"
    );
    let users = t.rows("SELECT name, email FROM users WHERE id = ?1", &[&bob.uid()]);
    assert_eq!(users[0]["name"], "Bob");
    assert_eq!(users[0]["email"], "bob@example.com");

    // GET as the invitee: the spec's shape, everyone in it, the initiator first.
    let c = t.get_call(&bob, &call);
    assert_eq!(c["id"], call.as_str());
    assert_eq!(c["conversationId"], conv.to_string());
    assert_eq!(c["type"], "video");
    assert_eq!(c["status"], "initiated");
    assert_eq!(c["initiatedBy"], alice.uid());
    assert_eq!(c["startedAt"], Value::Null);
    let ps = c["participants"].as_array().unwrap();
    assert_eq!(ps.len(), 2);
    assert_eq!(
        (
            &ps[0]["userId"],
            &ps[0]["userName"],
            &ps[0]["userIdentifier"],
            &ps[0]["status"]
        ),
        (
            &json!(alice.uid()),
            &json!("Alice"),
            &json!("alice@example.com"),
            &json!("joined")
        )
    );
    assert_eq!(
        (&ps[1]["userId"], &ps[1]["status"]),
        (&json!(bob.uid()), &json!("invited"))
    );

    // Answer: the call is active from now.
    let before = now_ms();
    let body = t.ok(&bob, &call, "answer");
    assert_eq!(body["callId"], call.as_str());
    assert_eq!(body["status"], "active");
    let started = body["startedAt"].clone();
    assert!(ms(&started) >= before - 1 && ms(&started) <= now_ms() + 1);
    let row = t.call_row(&call);
    assert_eq!(row["status"], "active");
    assert_eq!(
        row["started_at"], started,
        "startedAt is what the store holds"
    );
    assert_eq!(row["ended_at"], Value::Null);
    t.assert_statuses(&call, &[(&alice, "joined"), (&bob, "joined")]);
    assert_eq!(t.participants(&call)[&bob.uid()]["joined_at"], started);

    // Media: the spec's response, stored as JSON; a partial change keeps the other flags.
    let (s, body) = t.media(&bob, &call, &json!({"audioEnabled": false}));
    assert_eq!(s, 200, "{body}");
    let bob_media = json!({"audioEnabled": false, "videoEnabled": true, "screenSharing": false});
    assert_eq!(body, json!({"success": true, "mediaState": bob_media}));
    let alice_media = json!({"audioEnabled": true, "videoEnabled": false, "screenSharing": true});
    let (s, body) = t.media(&alice, &call, &alice_media);
    assert_eq!(s, 200, "{body}");
    assert_eq!(body, json!({"success": true, "mediaState": alice_media}));
    let stored = |u: &Person| -> Value {
        serde_json::from_str(
            t.participants(&call)[&u.uid()]["media_state"]
                .as_str()
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(stored(&bob), bob_media);
    assert_eq!(stored(&alice), alice_media);

    let c = t.get_call(&alice, &call);
    assert_eq!(c["status"], "active");
    assert_eq!(c["startedAt"], started);
    assert_eq!(c["participants"][0]["mediaState"], alice_media);
    assert_eq!(c["participants"][1]["mediaState"], bob_media);
    assert_eq!(c["participants"][1]["status"], "joined");

    // End, a second later: ended-by-user with the duration since the answer.
    std::thread::sleep(Duration::from_millis(1100));
    let body = t.ok(&alice, &call, "end");
    assert_eq!(body["callId"], call.as_str());
    assert_eq!(body["status"], "ended");
    assert_eq!(body["endReason"], "ended-by-user");
    let duration = body["duration"].as_u64().expect("duration");
    assert!((1..5).contains(&duration), "{body}");
    let row = t.call_row(&call);
    assert_eq!(row["status"], "ended");
    assert_eq!(row["end_reason"], "ended-by-user");
    assert_eq!(row["duration_seconds"], json!(duration));
    assert_eq!(row["started_at"], started);
    let ended = row["ended_at"].clone();
    assert_eq!((ms(&ended) - ms(&started)) / 1000, duration);
    t.assert_statuses(&call, &[(&alice, "left"), (&bob, "left")]);
    for p in t.participants(&call).values() {
        assert_eq!(p["left_at"], ended);
    }
    let c = t.get_call(&bob, &call);
    assert_eq!(c["status"], "ended");
    assert_eq!(c["startedAt"], started);

    // Nothing more happens to a call that is over.
    t.refused(409, "invalid_transition", |_| t.act(&bob, &call, "answer"));
    t.refused(409, "invalid_transition", |_| t.act(&bob, &call, "reject"));
    t.refused(409, "invalid_transition", |_| t.act(&alice, &call, "end"));
    t.refused(409, "invalid_transition", |_| t.act(&bob, &call, "end"));
    t.refused(409, "invalid_transition", |_| {
        t.media(&bob, &call, &json!({"audioEnabled": true}))
    });
}

#[test]
fn type_is_audio_video_or_screen() {
    let t = T::start(Options::default());
    let (alice, bob) = (person("Alice"), person("Bob"));
    t.register(&alice);
    t.register(&bob);
    let conv = Uuid::new_v4();
    for kind in ["audio", "video", "screen"] {
        let call = t.initiate(&alice, conv, kind, &[&bob]);
        assert_eq!(t.call_row(&call)["type"], kind);
        assert_eq!(t.get_call(&bob, &call)["type"], kind);
        t.ok(&alice, &call, "end");
    }
    // Without a type, audio.
    let (s, body) = t.api.json(
        "POST",
        "/api/calls/initiate",
        Some(&alice.token),
        &json!({"conversationId": conv, "participantIds": [bob.id]}),
    );
    assert_eq!(s, 201, "{body}");
    assert_eq!(
        t.call_row(body["callId"].as_str().unwrap())["type"],
        "audio"
    );
    for bad in [json!("fax"), json!("Video"), json!(1), json!(null)] {
        let body = t.refused(400, "invalid_field", |api| {
            api.json(
                "POST",
                "/api/calls/initiate",
                Some(&alice.token),
                &json!({"conversationId": conv, "type": bad, "participantIds": [bob.id]}),
            )
        });
        assert!(message(&body).starts_with("type"), "{body}");
    }
}

#[test]
fn one_to_one_reject_rejects_the_call() {
    let t = T::start(Options::default());
    let (alice, bob) = (person("Alice"), person("Bob"));
    t.register(&alice);
    t.register(&bob);
    let call = t.initiate(&alice, Uuid::new_v4(), "audio", &[&bob]);

    let body = t.ok(&bob, &call, "reject");
    assert_eq!(body["callId"], call.as_str());
    assert_eq!(body["status"], "rejected");
    let row = t.call_row(&call);
    assert_eq!(row["status"], "rejected");
    assert_eq!(row["end_reason"], "rejected");
    assert_eq!(row["duration_seconds"], json!(0));
    assert_eq!(row["started_at"], Value::Null);
    assert!(row["ended_at"].is_string());
    t.assert_statuses(&call, &[(&alice, "left"), (&bob, "rejected")]);
    assert_eq!(t.get_call(&alice, &call)["status"], "rejected");

    t.refused(409, "invalid_transition", |_| t.act(&bob, &call, "answer"));
    t.refused(409, "invalid_transition", |_| t.act(&bob, &call, "reject"));
    t.refused(409, "invalid_transition", |_| t.act(&alice, &call, "end"));
}

#[test]
fn initiator_hanging_up_before_an_answer_cancels() {
    let t = T::start(Options::default());
    let (alice, bob) = (person("Alice"), person("Bob"));
    t.register(&alice);
    t.register(&bob);
    let call = t.initiate(&alice, Uuid::new_v4(), "video", &[&bob]);

    // The invitee cannot hang up a call they have not joined.
    t.refused(409, "invalid_transition", |_| t.act(&bob, &call, "end"));

    let body = t.ok(&alice, &call, "end");
    assert_eq!(body["status"], "ended");
    assert_eq!(body["endReason"], "cancelled");
    assert_eq!(body["duration"], json!(0));
    let row = t.call_row(&call);
    assert_eq!(row["status"], "ended");
    assert_eq!(row["end_reason"], "cancelled");
    assert_eq!(row["duration_seconds"], json!(0));
    assert_eq!(row["started_at"], Value::Null);
    t.assert_statuses(&call, &[(&alice, "left"), (&bob, "missed")]);

    t.refused(409, "invalid_transition", |_| t.act(&bob, &call, "answer"));
    t.refused(409, "invalid_transition", |_| t.act(&bob, &call, "reject"));
}

// =============================================================================================
// Group calls.

#[test]
fn group_call_reject_answer_leave_and_end_when_fewer_than_two_joined() {
    let t = T::start(Options::default());
    let [alice, bob, carol, dave] = ["Alice", "Bob", "Carol", "Dave"].map(person);
    for p in [&alice, &bob, &carol, &dave] {
        t.register(p);
    }
    let (s, body) = t.try_initiate(&alice, Uuid::new_v4(), "video", &[&bob, &carol, &dave]);
    assert_eq!(s, 201, "{body}");
    let call = body["callId"].as_str().unwrap().to_owned();
    let invited: Vec<(String, String)> = body["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["userId"].as_str().unwrap().into(),
                p["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [&bob, &carol, &dave]
        .iter()
        .map(|p| (p.uid(), "invited".to_owned()))
        .collect();
    assert_eq!(invited, want, "the invitees, in the order invited");

    // The initiator is not an invitee.
    t.refused(403, "not_invited", |_| t.act(&alice, &call, "answer"));
    t.refused(403, "not_invited", |_| t.act(&alice, &call, "reject"));

    // Carol rejects: only she is marked; the call still rings for the others.
    let body = t.ok(&carol, &call, "reject");
    assert_eq!(body["status"], "rejected");
    assert_eq!(body["callStatus"], "initiated");
    let row = t.call_row(&call);
    assert_eq!(row["status"], "initiated");
    assert_eq!(row["ended_at"], Value::Null);
    t.assert_statuses(
        &call,
        &[
            (&alice, "joined"),
            (&bob, "invited"),
            (&carol, "rejected"),
            (&dave, "invited"),
        ],
    );
    // A rejection is final while nobody has answered.
    t.refused(409, "invalid_transition", |_| {
        t.act(&carol, &call, "answer")
    });
    t.refused(409, "invalid_transition", |_| {
        t.act(&carol, &call, "reject")
    });

    // Bob answers first: the call is active from then; Dave's answer keeps that start.
    let first = t.ok(&bob, &call, "answer");
    assert_eq!(first["status"], "active");
    let started = first["startedAt"].clone();
    assert!(started.is_string());
    std::thread::sleep(Duration::from_millis(20));
    let second = t.ok(&dave, &call, "answer");
    assert_eq!(second["status"], "active");
    assert_eq!(
        second["startedAt"], started,
        "the first answer sets startedAt"
    );
    let row = t.call_row(&call);
    assert_eq!(
        (&row["status"], &row["started_at"]),
        (&json!("active"), &started)
    );
    t.assert_statuses(
        &call,
        &[
            (&alice, "joined"),
            (&bob, "joined"),
            (&carol, "rejected"),
            (&dave, "joined"),
        ],
    );
    t.refused(409, "invalid_transition", |_| t.act(&dave, &call, "answer"));
    t.refused(409, "invalid_transition", |_| t.act(&dave, &call, "reject"));

    // The initiator leaves: the call goes on with Bob and Dave.
    let body = t.ok(&alice, &call, "end");
    assert_eq!(body["callId"], call.as_str());
    assert_eq!(body["status"], "left");
    assert_eq!(body["callStatus"], "active");
    assert_eq!(body["duration"], Value::Null);
    assert_eq!(body["endReason"], Value::Null);
    let row = t.call_row(&call);
    assert_eq!(row["status"], "active");
    assert_eq!(row["ended_at"], Value::Null);
    t.assert_statuses(
        &call,
        &[
            (&alice, "left"),
            (&bob, "joined"),
            (&carol, "rejected"),
            (&dave, "joined"),
        ],
    );
    assert!(t.participants(&call)[&alice.uid()]["left_at"].is_string());
    // Who left cannot leave again, nor change their media.
    t.refused(409, "invalid_transition", |_| t.act(&alice, &call, "end"));
    t.refused(409, "invalid_transition", |_| {
        t.media(&alice, &call, &json!({"audioEnabled": false}))
    });

    // Bob leaves: one joined is fewer than two, so the call ends.
    let body = t.ok(&bob, &call, "end");
    assert_eq!(body["status"], "ended");
    assert_eq!(body["callStatus"], "ended");
    assert_eq!(body["endReason"], "ended-by-user");
    let duration = body["duration"].as_u64().expect("duration");
    let row = t.call_row(&call);
    assert_eq!(row["status"], "ended");
    assert_eq!(row["end_reason"], "ended-by-user");
    assert_eq!(row["duration_seconds"], json!(duration));
    assert_eq!(row["started_at"], started);
    assert_eq!((ms(&row["ended_at"]) - ms(&started)) / 1000, duration);
    t.assert_statuses(
        &call,
        &[
            (&alice, "left"),
            (&bob, "left"),
            (&carol, "rejected"),
            (&dave, "left"),
        ],
    );
    t.refused(409, "invalid_transition", |_| t.act(&dave, &call, "end"));
    t.refused(409, "invalid_transition", |_| {
        t.act(&carol, &call, "answer")
    });
}

#[test]
fn group_calls_settle_rejoin_and_cancel() {
    let t = T::start(Options::default());
    let [alice, bob, carol, dave] = ["Alice", "Bob", "Carol", "Dave"].map(person);
    for p in [&alice, &bob, &carol, &dave] {
        t.register(p);
    }
    let conv = Uuid::new_v4();

    // Rejoin: an active group call can be joined again after rejecting or leaving it.
    let call = t.initiate(&alice, conv, "audio", &[&bob, &carol, &dave]);
    let started = t.ok(&bob, &call, "answer")["startedAt"].clone();
    let body = t.ok(&carol, &call, "reject");
    assert_eq!(body["callStatus"], "active");
    t.assert_statuses(
        &call,
        &[
            (&alice, "joined"),
            (&bob, "joined"),
            (&carol, "rejected"),
            (&dave, "invited"),
        ],
    );
    let body = t.ok(&carol, &call, "answer");
    assert_eq!(
        (&body["status"], &body["startedAt"]),
        (&json!("active"), &started)
    );
    let body = t.ok(&bob, &call, "end");
    assert_eq!(body["status"], "left");
    let left = t.participants(&call)[&bob.uid()]["left_at"].clone();
    assert!(left.is_string());
    std::thread::sleep(Duration::from_millis(20));
    let body = t.ok(&bob, &call, "answer");
    assert_eq!(
        (&body["status"], &body["startedAt"]),
        (&json!("active"), &started)
    );
    let bob_row = &t.participants(&call)[&bob.uid()];
    assert_eq!(bob_row["status"], "joined");
    assert_eq!(bob_row["left_at"], Value::Null, "a rejoin clears left_at");
    assert!(
        ms(&bob_row["joined_at"]) > ms(&left),
        "a rejoin is a new join"
    );
    assert_eq!(t.call_row(&call)["started_at"], started);
    t.assert_statuses(
        &call,
        &[
            (&alice, "joined"),
            (&bob, "joined"),
            (&carol, "joined"),
            (&dave, "invited"),
        ],
    );
    // Its initiator too, after leaving (but never by rejecting: they were not invited).
    assert_eq!(t.ok(&alice, &call, "end")["status"], "left");
    t.refused(403, "not_invited", |_| t.act(&alice, &call, "reject"));
    let body = t.ok(&alice, &call, "answer");
    assert_eq!(
        (&body["status"], &body["startedAt"]),
        (&json!("active"), &started)
    );
    assert_eq!(t.participants(&call)[&alice.uid()]["status"], "joined");
    assert_eq!(t.participants(&call)[&alice.uid()]["left_at"], Value::Null);

    // Every invitee rejects an unanswered group call: it is rejected.
    let call = t.initiate(&alice, conv, "audio", &[&bob, &carol]);
    assert_eq!(t.ok(&bob, &call, "reject")["callStatus"], "initiated");
    let body = t.ok(&carol, &call, "reject");
    assert_eq!(body["status"], "rejected");
    assert_eq!(body["callStatus"], "rejected");
    let row = t.call_row(&call);
    assert_eq!(
        (&row["status"], &row["end_reason"]),
        (&json!("rejected"), &json!("rejected"))
    );
    t.assert_statuses(
        &call,
        &[(&alice, "left"), (&bob, "rejected"), (&carol, "rejected")],
    );
    // Not active, so nobody rejoins it.
    t.refused(409, "invalid_transition", |_| t.act(&bob, &call, "answer"));

    // The initiator of an unanswered group call hangs up: cancelled, the rest missed it.
    let call = t.initiate(&alice, conv, "video", &[&bob, &carol]);
    t.ok(&bob, &call, "reject");
    let body = t.ok(&alice, &call, "end");
    assert_eq!(body["status"], "ended");
    assert_eq!(body["endReason"], "cancelled");
    assert_eq!(body["duration"], json!(0));
    let row = t.call_row(&call);
    assert_eq!(
        (&row["status"], &row["end_reason"]),
        (&json!("ended"), &json!("cancelled"))
    );
    t.assert_statuses(
        &call,
        &[(&alice, "left"), (&bob, "rejected"), (&carol, "missed")],
    );
    t.refused(409, "invalid_transition", |_| {
        t.act(&carol, &call, "answer")
    });

    // A 1:1 call is over once someone hangs up: nothing to rejoin.
    let call = t.initiate(&alice, conv, "audio", &[&bob]);
    t.ok(&bob, &call, "answer");
    assert_eq!(t.ok(&bob, &call, "end")["status"], "ended");
    t.refused(409, "invalid_transition", |_| t.act(&bob, &call, "answer"));
}

// =============================================================================================
// Ring timeout.

#[test]
fn ring_timeout_misses_unanswered_calls() {
    let t = T::calls("ring_timeout = \"1s\"");
    let [alice, bob, carol, dave] = ["Alice", "Bob", "Carol", "Dave"].map(person);
    for p in [&alice, &bob, &carol, &dave] {
        t.register(p);
    }
    let one = t.initiate(&alice, Uuid::new_v4(), "audio", &[&bob]);
    let group = t.initiate(&alice, Uuid::new_v4(), "video", &[&carol, &dave]);
    t.ok(&carol, &group, "reject");
    assert_eq!(t.call_row(&group)["status"], "initiated");

    let over = |c: &str| t.call_row(c)["ended_at"].is_string();
    assert!(
        wait_until(Duration::from_secs(5), || over(&one) && over(&group)),
        "the ring timeout did not end the calls: {:?} {:?}",
        t.call_row(&one),
        t.call_row(&group)
    );
    for (call, statuses) in [
        (&one, vec![(&alice, "left"), (&bob, "missed")]),
        (
            &group,
            vec![(&alice, "left"), (&carol, "rejected"), (&dave, "missed")],
        ),
    ] {
        let row = t.call_row(call);
        assert_eq!(row["status"], "missed", "{row:?}");
        assert_eq!(row["end_reason"], "no-answer");
        assert_eq!(row["duration_seconds"], json!(0));
        assert_eq!(row["started_at"], Value::Null);
        let rang = ms(&row["ended_at"]) - ms(&row["created_at"]);
        assert!(
            (1000..4000).contains(&rang),
            "ended {rang} ms after it started"
        );
        t.assert_statuses(call, &statuses);
        assert_eq!(t.get_call(&alice, call)["status"], "missed");
    }
    t.refused(409, "invalid_transition", |_| t.act(&bob, &one, "answer"));
    t.refused(409, "invalid_transition", |_| t.act(&bob, &one, "reject"));
    t.refused(409, "invalid_transition", |_| {
        t.act(&dave, &group, "answer")
    });
}

#[test]
fn ring_timeout_in_an_answered_group_call_misses_only_the_silent() {
    let t = T::calls("ring_timeout = \"1s\"");
    let [alice, bob, carol, dave] = ["Alice", "Bob", "Carol", "Dave"].map(person);
    for p in [&alice, &bob, &carol, &dave] {
        t.register(p);
    }
    let call = t.initiate(&alice, Uuid::new_v4(), "video", &[&bob, &carol, &dave]);
    let started = t.ok(&bob, &call, "answer")["startedAt"].clone();
    let missed = || {
        let ps = t.participants(&call);
        ps[&carol.uid()]["status"] == "missed" && ps[&dave.uid()]["status"] == "missed"
    };
    assert!(
        wait_until(Duration::from_secs(5), missed),
        "the ring timeout did not miss the silent invitees: {:?}",
        t.participants(&call)
    );
    let row = t.call_row(&call);
    assert_eq!(row["status"], "active", "two joined: the call goes on");
    assert_eq!(row["started_at"], started);
    assert_eq!(row["ended_at"], Value::Null);
    t.assert_statuses(
        &call,
        &[
            (&alice, "joined"),
            (&bob, "joined"),
            (&carol, "missed"),
            (&dave, "missed"),
        ],
    );
    let view = t.get_call(&carol, &call);
    assert_eq!(view["status"], "active");
    assert_eq!(view["participants"][2]["status"], "missed");

    // A missed invitation is no longer rejectable, but the active group call can be joined.
    t.refused(409, "invalid_transition", |_| t.act(&dave, &call, "reject"));
    let body = t.ok(&carol, &call, "answer");
    assert_eq!(
        (&body["status"], &body["startedAt"]),
        (&json!("active"), &started)
    );
    t.assert_statuses(
        &call,
        &[
            (&alice, "joined"),
            (&bob, "joined"),
            (&carol, "joined"),
            (&dave, "missed"),
        ],
    );
    // Nobody is ringing any more: a while later nothing has changed.
    let before = t.dump();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(t.dump(), before);
}

// =============================================================================================
// Media.

#[test]
fn media_patch_validates_its_booleans_and_stores_the_state() {
    let t = T::start(Options::default());
    let [alice, bob, carol, dave] = ["Alice", "Bob", "Carol", "Dave"].map(person);
    for p in [&alice, &bob, &carol, &dave] {
        t.register(p);
    }
    let conv = Uuid::new_v4();
    // Carol becomes a member of the conversation through an earlier call.
    let earlier = t.initiate(&alice, conv, "audio", &[&bob, &carol]);
    t.ok(&alice, &earlier, "end");
    let call = t.initiate(&alice, conv, "video", &[&bob]);
    let stored = |u: &Person| -> Value {
        serde_json::from_str(
            t.participants(&call)[&u.uid()]["media_state"]
                .as_str()
                .unwrap(),
        )
        .unwrap()
    };

    // A still-invited participant may set theirs (muted before answering).
    let (s, body) = t.media(&bob, &call, &json!({"videoEnabled": false}));
    assert_eq!(s, 200, "{body}");
    let want = json!({"audioEnabled": true, "videoEnabled": false, "screenSharing": false});
    assert_eq!(body, json!({"success": true, "mediaState": want}));
    assert_eq!(stored(&bob), want);
    assert_eq!(stored(&alice), default_media());

    // Changes accumulate.
    for (change, want) in [
        (
            json!({"screenSharing": true}),
            json!({"audioEnabled": true, "videoEnabled": true, "screenSharing": true}),
        ),
        (
            json!({"audioEnabled": false}),
            json!({"audioEnabled": false, "videoEnabled": true, "screenSharing": true}),
        ),
        (
            json!({"audioEnabled": true, "videoEnabled": false, "screenSharing": false}),
            json!({"audioEnabled": true, "videoEnabled": false, "screenSharing": false}),
        ),
    ] {
        let (s, body) = t.media(&alice, &call, &change);
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["mediaState"], want);
        assert_eq!(stored(&alice), want);
    }

    // Wrong bodies: 400 naming the field, nothing stored.
    for (bad, field) in [
        (json!({"audioEnabled": "no"}), "audioEnabled"),
        (json!({"videoEnabled": 1}), "videoEnabled"),
        (json!({"screenSharing": "true"}), "screenSharing"),
        (json!({"audioEnabled": [true]}), "audioEnabled"),
        (json!({"audioEnabled": true, "mute": true}), "mute"),
        (json!({}), "body"),
        (json!([true]), "body"),
        (json!(true), "body"),
    ] {
        let body = t.refused(400, "invalid_field", |_| t.media(&alice, &call, &bad));
        assert!(message(&body).starts_with(field), "{bad} → {body}");
    }
    for bad in [
        &b"{\"audioEnabled\": tru"[..],
        b"",
        b"{\"audioEnabled\": true} {}",
    ] {
        t.refused(400, "invalid_json", |api| {
            api.send(
                "PATCH",
                &format!("/api/calls/{call}/media"),
                Some(&alice.token),
                Some(bad),
            )
        });
    }

    // Who may: a member who is not in the call is refused; a non-member does not see it.
    t.refused(403, "not_a_participant", |_| {
        t.media(&carol, &call, &json!({"audioEnabled": false}))
    });
    t.refused(404, "call_not_found", |_| {
        t.media(&dave, &call, &json!({"audioEnabled": false}))
    });
    let unknown = Uuid::new_v4();
    t.refused(404, "call_not_found", |_| {
        t.media(
            &alice,
            &unknown.to_string(),
            &json!({"audioEnabled": false}),
        )
    });
    let body = t.refused(400, "invalid_field", |_| {
        t.media(&alice, "not-a-call", &json!({"audioEnabled": false}))
    });
    assert!(message(&body).starts_with("callId"), "{body}");

    // Once the call is over, media is frozen.
    t.ok(&bob, &call, "reject");
    t.refused(409, "invalid_transition", |_| {
        t.media(&alice, &call, &json!({"audioEnabled": false}))
    });
    assert_eq!(
        stored(&alice),
        json!({"audioEnabled": true, "videoEnabled": false, "screenSharing": false})
    );
}

// =============================================================================================
// Authorization and visibility.

#[test]
fn only_members_see_calls_and_only_invitees_or_participants_act() {
    let t = T::start(Options::default());
    let [alice, bob, carol, dave] = ["Alice", "Bob", "Carol", "Dave"].map(person);
    for p in [&alice, &bob, &carol, &dave] {
        t.register(p);
    }
    let conv = Uuid::new_v4();
    let earlier = t.initiate(&alice, conv, "audio", &[&bob, &carol]);
    t.ok(&alice, &earlier, "end");
    let call = t.initiate(&alice, conv, "video", &[&bob]);

    // Carol is a member of the conversation but not in this call: she sees it, acts on nothing.
    assert_eq!(t.get_call(&carol, &call)["id"], call.as_str());
    t.refused(403, "not_invited", |_| t.act(&carol, &call, "answer"));
    t.refused(403, "not_invited", |_| t.act(&carol, &call, "reject"));
    t.refused(403, "not_a_participant", |_| t.act(&carol, &call, "end"));

    // Dave is not a member: for him the call does not exist, exactly as an unknown one.
    let unknown = Uuid::new_v4().to_string();
    for id in [&call, &unknown] {
        t.refused(404, "call_not_found", |api| {
            api.get(&format!("/api/calls/{id}"), &dave.token)
        });
        for action in ["answer", "reject", "end"] {
            t.refused(404, "call_not_found", |_| t.act(&dave, id, action));
        }
    }
    t.refused(404, "call_not_found", |api| {
        api.get(&format!("/api/calls/{unknown}"), &alice.token)
    });
    for action in ["answer", "reject", "end"] {
        t.refused(404, "call_not_found", |_| t.act(&alice, &unknown, action));
    }
    let body = t.refused(400, "invalid_field", |api| {
        api.get("/api/calls/nope", &alice.token)
    });
    assert!(message(&body).starts_with("callId"), "{body}");

    // A non-member cannot start a call in an existing conversation.
    t.refused(404, "conversation_not_found", |_| {
        t.try_initiate(&dave, conv, "audio", &[&alice])
    });

    // The initiator is not invited; the invitee has not joined yet.
    t.refused(403, "not_invited", |_| t.act(&alice, &call, "answer"));
    t.refused(403, "not_invited", |_| t.act(&alice, &call, "reject"));
    t.refused(409, "invalid_transition", |_| t.act(&bob, &call, "end"));
    t.ok(&bob, &call, "answer");
    t.refused(409, "invalid_transition", |_| t.act(&bob, &call, "answer"));
    t.refused(409, "invalid_transition", |_| t.act(&bob, &call, "reject"));
    t.refused(403, "not_a_participant", |_| t.act(&carol, &call, "end"));
    assert_eq!(t.call_row(&call)["status"], "active");
    t.ok(&bob, &call, "end");
}

#[test]
fn missing_expired_and_forged_tokens_are_401_and_change_nothing() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let t = T::start(Options::default());
    let (alice, bob) = (person("Alice"), person("Bob"));
    t.register(&alice);
    t.register(&bob);
    let conv = Uuid::new_v4();
    let call = t.initiate(&alice, conv, "audio", &[&bob]);

    let now = Timestamp::now();
    let expired = switchboard_signaling::auth::mint(
        JWT_SECRET,
        alice.id,
        Some("Alice"),
        None,
        now - Duration::from_secs(7200),
        Duration::from_secs(60),
    );
    let forged = switchboard_signaling::auth::mint(
        "not-the-daemon-secret",
        alice.id,
        Some("Alice"),
        None,
        now,
        Duration::from_secs(3600),
    );
    let parts: Vec<&str> = alice.token.split('.').collect();
    let none_header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let alg_none = format!("{none_header}.{}.", parts[1]);
    // Alice's signature over Bob's claims.
    let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = json!(bob.uid());
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(claims.to_string()),
        parts[2]
    );

    let bad: Vec<(Option<&str>, &str)> = vec![
        (None, "missing_token"),
        (Some(&expired), "token_expired"),
        (Some(&forged), "invalid_token"),
        (Some(&alg_none), "invalid_token"),
        (Some(&tampered), "invalid_token"),
        (Some("not.a.jwt"), "invalid_token"),
        (Some(ADMIN_TOKEN), "invalid_token"),
    ];
    let initiate =
        json!({"conversationId": conv, "type": "audio", "participantIds": [bob.id]}).to_string();
    let media = json!({"audioEnabled": false}).to_string();
    let requests: Vec<(&str, String, Option<&[u8]>)> = vec![
        (
            "POST",
            "/api/calls/initiate".into(),
            Some(initiate.as_bytes()),
        ),
        ("GET", format!("/api/calls/{call}"), None),
        ("POST", format!("/api/calls/{call}/answer"), None),
        ("POST", format!("/api/calls/{call}/reject"), None),
        ("POST", format!("/api/calls/{call}/end"), None),
        (
            "PATCH",
            format!("/api/calls/{call}/media"),
            Some(media.as_bytes()),
        ),
        ("GET", "/api/calls".into(), None),
        ("GET", format!("/api/calls?conversationId={conv}"), None),
        ("GET", "/api/calls/turn-credentials".into(), None),
    ];
    for (token, want) in &bad {
        for (method, path, body) in &requests {
            t.refused(401, want, |api| api.send(method, path, *token, *body));
        }
    }

    // Other schemes are no bearer token; a 401 says which scheme to use.
    for auth in [
        format!("Basic {}", b64.encode("alice:pw")),
        format!("Token {}", alice.token),
        "Bearer".to_owned(),
        "Bearer    ".to_owned(),
    ] {
        let before = t.dump();
        let (s, head, body) = raw(
            t.d.http,
            &format!("GET /api/calls HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"),
            b"",
        );
        assert_eq!(
            (s, error_code(&body)),
            (401, "missing_token"),
            "{auth}: {body}"
        );
        assert_eq!(header(&head, "www-authenticate"), Some("Bearer"), "{head}");
        assert_eq!(t.dump(), before);
    }

    // Nothing above touched the call; the real token still works.
    assert_eq!(t.call_row(&call)["status"], "initiated");
    assert_eq!(t.ok(&bob, &call, "answer")["status"], "active");
}

// =============================================================================================
// Initiate errors.

#[test]
fn initiate_refuses_bad_bodies_with_400_naming_the_field() {
    let t = T::start(Options::default());
    let (alice, bob) = (person("Alice"), person("Bob"));
    t.register(&alice);
    t.register(&bob);
    let conv = Uuid::new_v4().to_string();
    let bob_id = bob.uid();
    let post = |body: &[u8]| {
        t.api.send(
            "POST",
            "/api/calls/initiate",
            Some(&alice.token),
            Some(body),
        )
    };

    for bad in [
        &b"{\"conversationId\":"[..],
        b"",
        b"   ",
        b"{conversationId: 1}",
        b"nul",
        b"{\"a\": 1} trailing",
        b"\xff\xfe{}",
    ] {
        let body = t.refused(400, "invalid_json", |_| post(bad));
        assert!(!message(&body).is_empty());
    }

    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"conversationId": conv, "type": "audio", "participantIds": ["not-a-uuid"]}),
            "participantIds[0]",
        ),
        (
            json!({"conversationId": conv, "type": "audio", "participantIds": [bob_id, 7]}),
            "participantIds[1]",
        ),
        (
            json!({"conversationId": conv, "type": "audio", "participantIds": bob_id}),
            "participantIds",
        ),
        (
            json!({"conversationId": 42, "type": "audio", "participantIds": [bob_id]}),
            "conversationId",
        ),
        (
            json!({"conversationId": "general", "type": "audio", "participantIds": [bob_id]}),
            "conversationId",
        ),
        (
            json!({"conversationId": conv, "type": "hologram", "participantIds": [bob_id]}),
            "type",
        ),
        (json!({"conversationId": conv, "type": "audio"}), "body"),
        (json!({"type": "audio", "participantIds": [bob_id]}), "body"),
        (
            json!({"conversationId": conv, "participantIds": [bob_id], "video": true}),
            "video",
        ),
    ];
    for (bad, field) in cases {
        let body = t.refused(400, "invalid_field", |_| post(bad.to_string().as_bytes()));
        assert!(
            message(&body).starts_with(&format!("{field}:")),
            "{bad} → {body}"
        );
        if field == "body" {
            let m = message(&body);
            assert!(
                m.contains("participantIds") || m.contains("conversationId"),
                "the message says what is wrong: {m}"
            );
        }
    }
    assert_eq!(t.rows("SELECT * FROM calls", &[]).len(), 0);
}

/// The bodies are JSON objects (the spec's, and openapi.json's `"type": "object"`): an array
/// that lists the fields in order is a wrong type, not a positional form of the object.
#[test]
fn request_bodies_must_be_json_objects() {
    let t = T::start(Options::default());
    let (alice, bob) = (person("Alice"), person("Bob"));
    t.register(&alice);
    t.register(&bob);
    let conv = Uuid::new_v4();
    let call = t.initiate(&alice, conv, "audio", &[&bob]);
    let cases: Vec<(&str, String, &str, Value)> = vec![
        (
            "POST",
            "/api/calls/initiate".into(),
            &alice.token,
            json!([Uuid::new_v4(), "video", [bob.id]]),
        ),
        (
            "PATCH",
            format!("/api/calls/{call}/media"),
            &alice.token,
            json!([false, false, true]),
        ),
        (
            "PUT",
            format!("/api/admin/users/{}", bob.id),
            ADMIN_TOKEN,
            json!(["Mallory", "mallory@example.com"]),
        ),
        (
            "PUT",
            format!("/api/admin/conversations/{conv}"),
            ADMIN_TOKEN,
            json!(["Renamed", [alice.id]]),
        ),
    ];
    let mut accepted = Vec::new();
    for (method, path, bearer, body) in &cases {
        let before = t.dump();
        let (s, answer) = t.api.json(method, path, Some(bearer), body);
        if s != 400 || error_code(&answer) != "invalid_field" {
            accepted.push(format!("{method} {path} {body} → {s} {answer}"));
            continue;
        }
        assert_error_shape(&answer);
        assert!(message(&answer).starts_with("body"), "{answer}");
        assert_eq!(t.dump(), before, "{method} {path}");
    }
    assert!(
        accepted.is_empty(),
        "JSON arrays accepted in place of objects:\n{}",
        accepted.join("\n")
    );
}

#[test]
fn initiate_refuses_impossible_calls_with_422() {
    let t = T::calls("max_participants = 3");
    let [alice, bob, carol, dave] = ["Alice", "Bob", "Carol", "Dave"].map(person);
    for p in [&alice, &bob, &carol, &dave] {
        t.register(p);
    }
    let conv = Uuid::new_v4();

    // Four with the caller, at most three per call.
    let body = t.refused(422, "too_many_participants", |_| {
        t.try_initiate(&alice, conv, "video", &[&bob, &carol, &dave])
    });
    assert!(message(&body).starts_with("participantIds"), "{body}");
    assert!(
        message(&body).contains('3') && message(&body).contains('4'),
        "{body}"
    );

    // Invitees who are not users.
    let ghost = Uuid::new_v4();
    let body = t.refused(422, "unknown_participant", |api| {
        api.json(
            "POST",
            "/api/calls/initiate",
            Some(&alice.token),
            &json!({"conversationId": conv, "type": "audio", "participantIds": [bob.id, ghost]}),
        )
    });
    assert!(message(&body).contains(&ghost.to_string()), "{body}");
    assert!(
        !message(&body).contains(&bob.uid()),
        "only the unknown one: {body}"
    );

    // Nobody, or oneself.
    t.refused(422, "no_participants", |_| {
        t.try_initiate(&alice, conv, "audio", &[])
    });
    t.refused(422, "self_invite", |_| {
        t.try_initiate(&alice, conv, "audio", &[&alice])
    });
    t.refused(422, "self_invite", |_| {
        t.try_initiate(&alice, conv, "audio", &[&bob, &alice])
    });
    assert_eq!(t.rows("SELECT * FROM conversations", &[]).len(), 0);

    // Exactly the maximum is fine; duplicates count once.
    let call = t.initiate(&alice, conv, "video", &[&bob, &carol]);
    assert_eq!(t.participants(&call).len(), 3);
    let (s, body) = t.try_initiate(&alice, conv, "audio", &[&bob, &bob, &carol]);
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["participants"].as_array().unwrap().len(), 2);
    assert_eq!(t.participants(body["callId"].as_str().unwrap()).len(), 3);
}

#[test]
fn bodies_over_64_kib_are_413() {
    let t = T::start(Options::default());
    let (alice, bob) = (person("Alice"), person("Bob"));
    t.register(&alice);
    t.register(&bob);
    let conv = Uuid::new_v4();
    let call = t.initiate(&alice, conv, "audio", &[&bob]);
    // Valid JSON, 70 KiB of it: only the size is wrong.
    let pad = |json: Value| -> Vec<u8> {
        let mut s = json.to_string();
        s.pop();
        s.push_str(&" ".repeat(70 * 1024 - s.len()));
        s.push('}');
        assert_eq!(s.len(), 70 * 1024 + 1);
        assert!(serde_json::from_str::<Value>(&s).is_ok());
        s.into_bytes()
    };
    let big_initiate =
        pad(json!({"conversationId": conv, "type": "audio", "participantIds": [bob.id]}));
    let big_media = pad(json!({"audioEnabled": false}));

    // With a Content-Length.
    t.refused(413, "body_too_large", |api| {
        api.send(
            "POST",
            "/api/calls/initiate",
            Some(&alice.token),
            Some(&big_initiate),
        )
    });
    t.refused(413, "body_too_large", |api| {
        api.send(
            "PATCH",
            &format!("/api/calls/{call}/media"),
            Some(&alice.token),
            Some(&big_media),
        )
    });

    // Chunked, without a length: cut off at the limit all the same.
    let mut chunked = Vec::new();
    for chunk in big_initiate.chunks(8 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    t.refused(413, "body_too_large", |_| {
        let (s, _, body) = raw(
            t.d.http,
            &format!(
                "POST /api/calls/initiate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
                alice.token
            ),
            &chunked,
        );
        (s, body)
    });
    assert_eq!(t.rows("SELECT * FROM calls", &[]).len(), 1);

    // Just under the limit is read (and this one is a good request).
    let mut s =
        json!({"conversationId": conv, "type": "audio", "participantIds": [bob.id]}).to_string();
    s.pop();
    s.push_str(&" ".repeat(64 * 1024 - 1 - s.len()));
    s.push('}');
    assert_eq!(s.len(), 64 * 1024);
    let (status, body) = t.api.send(
        "POST",
        "/api/calls/initiate",
        Some(&alice.token),
        Some(s.as_bytes()),
    );
    assert_eq!(status, 201, "{body}");
}

#[test]
fn wrong_methods_are_405() {
    let t = T::start(Options::default());
    let (alice, bob) = (person("Alice"), person("Bob"));
    t.register(&alice);
    t.register(&bob);
    let call = t.initiate(&alice, Uuid::new_v4(), "audio", &[&bob]);
    for (method, path) in [
        ("GET", "/api/calls/initiate".to_owned()),
        ("PUT", "/api/calls/initiate".to_owned()),
        ("DELETE", format!("/api/calls/{call}")),
        ("GET", format!("/api/calls/{call}/answer")),
        ("PUT", format!("/api/calls/{call}/reject")),
        ("DELETE", format!("/api/calls/{call}/end")),
        ("POST", format!("/api/calls/{call}/media")),
        ("POST", "/api/calls/turn-credentials".to_owned()),
        ("DELETE", "/api/calls".to_owned()),
        ("POST", format!("/api/admin/users/{}", alice.id)),
        (
            "DELETE",
            format!("/api/admin/conversations/{}", Uuid::new_v4()),
        ),
    ] {
        t.refused(405, "method_not_allowed", |api| {
            api.send(method, &path, Some(&alice.token), None)
        });
    }
    t.refused(404, "route_not_found", |api| {
        api.get("/api/calls/a/b/c", &alice.token)
    });
    assert_eq!(t.call_row(&call)["status"], "initiated");
}

// =============================================================================================
// Admin provisioning and closed conversations.

#[test]
fn admin_endpoints_provision_users_and_conversations() {
    let t = T::closed();
    let [alice, bob, carol] = ["Alice", "Bob", "Carol"].map(person);
    let admin = |method: &str, path: &str, body: Option<Value>| -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        t.api.send(
            method,
            path,
            Some(ADMIN_TOKEN),
            body.as_deref().map(str::as_bytes),
        )
    };
    for p in [&alice, &bob, &carol] {
        let (s, body) = admin(
            "PUT",
            &format!("/api/admin/users/{}", p.id),
            Some(json!({"name": p.name, "email": p.email})),
        );
        assert_eq!(s, 200, "{body}");
        assert_eq!(
            body,
            json!({"user": {"id": p.uid(), "name": p.name, "email": p.email}})
        );
    }
    let users = t.rows("SELECT id, name, email FROM users ORDER BY name", &[]);
    assert_eq!(
        users
            .iter()
            .map(|u| (u["name"].as_str().unwrap(), u["email"].as_str().unwrap()))
            .collect::<Vec<_>>(),
        [
            ("Alice", "alice@example.com"),
            ("Bob", "bob@example.com"),
            ("Carol", "carol@example.com")
        ]
    );
    // A second PUT renames.
    let (s, body) = admin(
        "PUT",
        &format!("/api/admin/users/{}", carol.id),
        Some(json!({"name": "Caroline", "email": "carol@example.com"})),
    );
    assert_eq!(
        (s, &body["user"]["name"]),
        (200, &json!("Caroline")),
        "{body}"
    );
    assert_eq!(
        t.rows("SELECT name FROM users WHERE id = ?1", &[&carol.uid()])[0]["name"],
        "Caroline"
    );

    let conv = Uuid::new_v4();
    let path = format!("/api/admin/conversations/{conv}");
    let (s, body) = admin(
        "PUT",
        &path,
        Some(json!({"name": "Team", "memberIds": [alice.id, bob.id]})),
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["conversation"]["id"], conv.to_string());
    assert_eq!(body["conversation"]["name"], "Team");
    let ids = |body: &Value| -> BTreeSet<String> {
        body["conversation"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&body), BTreeSet::from([alice.uid(), bob.uid()]));
    let bob_view = body["conversation"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == bob.uid())
        .unwrap()
        .clone();
    assert_eq!(
        bob_view,
        json!({"id": bob.uid(), "name": "Bob", "email": "bob@example.com"})
    );
    assert_eq!(t.members(conv), BTreeSet::from([alice.uid(), bob.uid()]));
    assert_eq!(
        t.rows(
            "SELECT name FROM conversations WHERE id = ?1",
            &[&conv.to_string()]
        )[0]["name"],
        "Team"
    );
    let (s, got) = admin("GET", &path, None);
    assert_eq!((s, &got), (200, &body));

    // A second PUT replaces the members; a member not known yet becomes a user; the name stays.
    let dave = person("Dave");
    let (s, body) = admin(
        "PUT",
        &path,
        Some(json!({"memberIds": [alice.id, carol.id, dave.id]})),
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["conversation"]["name"], "Team");
    let want = BTreeSet::from([alice.uid(), carol.uid(), dave.uid()]);
    assert_eq!(ids(&body), want);
    assert_eq!(t.members(conv), want);
    let (_, got) = admin("GET", &path, None);
    assert_eq!(ids(&got), want);
    let dave_row = t.rows(
        "SELECT name, email FROM users WHERE id = ?1",
        &[&dave.uid()],
    );
    assert_eq!(dave_row.len(), 1);
    assert_eq!(
        (&dave_row[0]["name"], &dave_row[0]["email"]),
        (&Value::Null, &Value::Null)
    );
    // Bob is still a user, just not a member.
    assert_eq!(
        t.rows("SELECT 1 FROM users WHERE id = ?1", &[&bob.uid()])
            .len(),
        1
    );

    // Refusals, with nothing changed.
    let body = t.refused(400, "invalid_field", |_| {
        admin("PUT", &path, Some(json!({"memberIds": [alice.id, "nope"]})))
    });
    assert!(message(&body).starts_with("memberIds[1]"), "{body}");
    t.refused(400, "invalid_field", |_| {
        admin("PUT", &path, Some(json!({"name": "x"})))
    });
    t.refused(400, "invalid_json", |api| {
        api.send("PUT", &path, Some(ADMIN_TOKEN), Some(b"{\"memberIds\": ["))
    });
    let body = t.refused(400, "invalid_field", |_| {
        admin("PUT", "/api/admin/users/alice", Some(json!({"name": "A"})))
    });
    assert!(message(&body).starts_with("userId"), "{body}");
    let body = t.refused(400, "invalid_field", |_| {
        admin(
            "PUT",
            &format!("/api/admin/users/{}", alice.id),
            Some(json!({"name": 5})),
        )
    });
    assert!(message(&body).starts_with("name"), "{body}");
    t.refused(404, "conversation_not_found", |_| {
        admin(
            "GET",
            &format!("/api/admin/conversations/{}", Uuid::new_v4()),
            None,
        )
    });

    // The admin token is for the admin endpoints only, and only it opens them.
    let user_put = json!({"name": "Mallory"}).to_string();
    let conv_put = json!({"memberIds": [alice.id]}).to_string();
    for (method, path, body) in [
        (
            "PUT",
            format!("/api/admin/users/{}", alice.id),
            Some(user_put.as_bytes()),
        ),
        ("PUT", path.clone(), Some(conv_put.as_bytes())),
        ("GET", path.clone(), None),
    ] {
        t.refused(401, "invalid_token", |api| {
            api.send(method, &path, Some(&alice.token), body)
        });
        t.refused(401, "missing_token", |api| {
            api.send(method, &path, None, body)
        });
        t.refused(401, "invalid_token", |api| {
            api.send(method, &path, Some("integration-test-admin-tokeN"), body)
        });
    }
    let initiate =
        json!({"conversationId": conv, "type": "audio", "participantIds": [carol.id]}).to_string();
    for (method, path, body) in [
        ("GET", "/api/calls".to_owned(), None),
        ("GET", "/api/calls/turn-credentials".to_owned(), None),
        (
            "POST",
            "/api/calls/initiate".to_owned(),
            Some(initiate.as_bytes()),
        ),
        ("GET", format!("/api/calls/{}", Uuid::new_v4()), None),
    ] {
        t.refused(401, "invalid_token", |api| {
            api.send(method, &path, Some(ADMIN_TOKEN), body)
        });
    }
}

#[test]
fn closed_conversations_need_provisioned_members() {
    let t = T::closed();
    let [alice, bob, carol] = ["Alice", "Bob", "Carol"].map(person);
    let admin = |path: String, body: Value| {
        let (s, b) = t.api.json("PUT", &path, Some(ADMIN_TOKEN), &body);
        assert_eq!(s, 200, "{path}: {b}");
    };
    for p in [&alice, &bob, &carol] {
        admin(
            format!("/api/admin/users/{}", p.id),
            json!({"name": p.name, "email": p.email}),
        );
    }
    let conv = Uuid::new_v4();
    admin(
        format!("/api/admin/conversations/{conv}"),
        json!({"memberIds": [alice.id, bob.id]}),
    );

    // Unknown conversations are not created on first use.
    let nowhere = Uuid::new_v4();
    t.refused(404, "conversation_not_found", |_| {
        t.try_initiate(&alice, nowhere, "audio", &[&bob])
    });
    // Carol is a user but not a member: she cannot start a call there, nor be invited.
    t.refused(404, "conversation_not_found", |_| {
        t.try_initiate(&carol, conv, "audio", &[&alice])
    });
    let body = t.refused(422, "not_a_member", |_| {
        t.try_initiate(&alice, conv, "audio", &[&bob, &carol])
    });
    assert!(message(&body).contains(&carol.uid()), "{body}");
    let ghost = Uuid::new_v4();
    t.refused(422, "unknown_participant", |api| {
        api.json(
            "POST",
            "/api/calls/initiate",
            Some(&alice.token),
            &json!({"conversationId": conv, "type": "audio", "participantIds": [ghost]}),
        )
    });

    // Members call each other; the provisioned names are the spec's userName/userIdentifier.
    let (s, body) = t.try_initiate(&alice, conv, "video", &[&bob]);
    assert_eq!(s, 201, "{body}");
    let call = body["callId"].as_str().unwrap().to_owned();
    assert_eq!(body["participants"][0]["userName"], "Bob");
    assert_eq!(body["participants"][0]["userIdentifier"], "bob@example.com");
    assert_eq!(t.members(conv), BTreeSet::from([alice.uid(), bob.uid()]));

    // The call and the conversation's history are invisible to Carol.
    t.refused(404, "call_not_found", |api| {
        api.get(&format!("/api/calls/{call}"), &carol.token)
    });
    t.refused(404, "call_not_found", |_| t.act(&carol, &call, "answer"));
    t.refused(404, "conversation_not_found", |api| {
        api.get(&format!("/api/calls?conversationId={conv}"), &carol.token)
    });
    let (s, body) = t.api.get("/api/calls", &carol.token);
    assert_eq!((s, &body["calls"]), (200, &json!([])), "{body}");

    let body = t.ok(&bob, &call, "answer");
    assert_eq!(body["status"], "active");

    // Membership decides visibility: replace Bob with Carol.
    admin(
        format!("/api/admin/conversations/{conv}"),
        json!({"memberIds": [alice.id, carol.id]}),
    );
    assert_eq!(t.get_call(&carol, &call)["status"], "active");
    t.refused(404, "call_not_found", |api| {
        api.get(&format!("/api/calls/{call}"), &bob.token)
    });
    t.refused(404, "call_not_found", |_| t.act(&bob, &call, "end"));
    t.refused(403, "not_a_participant", |_| t.act(&carol, &call, "end"));
}

// =============================================================================================
// Refused requests leave no trace, not even of the caller.

#[test]
fn a_refused_request_records_nothing_about_its_caller() {
    let t = T::start(Options::default());
    let (alice, bob) = (person("Alice"), person("Bob"));
    t.register(&alice);
    t.register(&bob);
    let call = t.initiate(&alice, Uuid::new_v4(), "audio", &[&bob]);

    // A new user whose every request is refused is never stored.
    let eve = person("Eve");
    t.refused(404, "call_not_found", |api| {
        api.get(&format!("/api/calls/{call}"), &eve.token)
    });
    t.refused(404, "call_not_found", |_| t.act(&eve, &call, "answer"));
    t.refused(422, "unknown_participant", |api| {
        api.json(
            "POST",
            "/api/calls/initiate",
            Some(&eve.token),
            &json!({"conversationId": Uuid::new_v4(), "participantIds": [Uuid::new_v4()]}),
        )
    });
    assert!(t
        .rows("SELECT 1 FROM users WHERE id = ?1", &[&eve.uid()])
        .is_empty());

    // A known user's new name is not taken from a refused request, only from a good one.
    let renamed = token(bob.id, Some("Robert"), Some("robert@example.com"));
    t.refused(404, "call_not_found", |api| {
        api.post(&format!("/api/calls/{}/answer", Uuid::new_v4()), &renamed)
    });
    t.refused(409, "invalid_transition", |api| {
        api.post(&format!("/api/calls/{call}/end"), &renamed)
    });
    t.refused(403, "not_invited", |api| {
        api.post(
            &format!("/api/calls/{call}/answer"),
            &token(alice.id, Some("Al"), None),
        )
    });
    let name = |u: &Person| t.rows("SELECT name, email FROM users WHERE id = ?1", &[&u.uid()]);
    assert_eq!(name(&bob)[0]["name"], "Bob");
    assert_eq!(name(&alice)[0]["name"], "Alice");
    let (s, _) = t.api.post(&format!("/api/calls/{call}/answer"), &renamed);
    assert_eq!(s, 200);
    assert_eq!(name(&bob)[0]["name"], "Robert");
    assert_eq!(name(&bob)[0]["email"], "robert@example.com");
    assert_eq!(
        t.get_call(&alice, &call)["participants"][1]["userName"],
        "Robert"
    );
}

#[test]
fn bad_input_is_never_a_500() {
    let t = T::start(Options::default());
    let (alice, bob) = (person("Alice"), person("Bob"));
    t.register(&alice);
    t.register(&bob);
    let call = t.initiate(&alice, Uuid::new_v4(), "audio", &[&bob]);
    let before = t.dump();
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let many: Vec<String> = (0..1500).map(|_| Uuid::new_v4().to_string()).collect();
    let many = json!({"conversationId": Uuid::new_v4(), "participantIds": many}).to_string();
    let long_path = format!("/api/calls/{}/answer", "a".repeat(8000));
    let bodies: Vec<Vec<u8>> = vec![
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"string\"".to_vec(),
        b"1e999".to_vec(),
        b"{\"conversationId\": null, \"participantIds\": null}".to_vec(),
        b"{\"conversationId\": \"00000000-0000-0000-0000-000000000000\", \"participantIds\": [\"00000000-0000-0000-0000-000000000000\"]}".to_vec(),
        b"{\"participantIds\": [1e400]}".to_vec(),
        b"{\"\xff\": 1}".to_vec(),
        b"{\"a\":\"\\ud800\"}".to_vec(),
        deep.into_bytes(),
        many.into_bytes(),
        vec![0u8; 100],
    ];
    let mut seen = Vec::new();
    for body in &bodies {
        for path in [
            "/api/calls/initiate".to_owned(),
            format!("/api/calls/{call}/media"),
        ] {
            let method = if path.ends_with("media") {
                "PATCH"
            } else {
                "POST"
            };
            let (s, b) = t.api.send(method, &path, Some(&alice.token), Some(body));
            seen.push((s, path.clone()));
            assert!(
                (400..500).contains(&s),
                "{method} {path} {:?} → {s} {b}",
                &body[..body.len().min(40)]
            );
            assert_error_shape(&b);
        }
    }
    for path in [
        "/api/calls/%00/answer".to_owned(),
        "/api/calls/%E2%82%AC".to_owned(),
        "/api/calls/..%2F..%2Fetc%2Fpasswd".to_owned(),
        "/api/calls/00000000-0000-0000-0000-000000000000".to_owned(),
        long_path,
        "/api/calls?limit=-1".to_owned(),
        "/api/calls?limit=99999999999".to_owned(),
        "/api/calls?limit=abc".to_owned(),
        "/api/calls?limit=0".to_owned(),
        "/api/calls?before=yesterday".to_owned(),
        "/api/calls?before=".to_owned(),
        "/api/calls?conversationId=".to_owned(),
        "/api/calls?conversationId=%FF".to_owned(),
        "/api/calls?surprise=1".to_owned(),
        "/api/admin/conversations/nope".to_owned(),
    ] {
        let (s, b) = t.api.get(&path, &alice.token);
        assert!((400..500).contains(&s), "GET {path} → {s} {b}");
        assert_error_shape(&b);
    }
    // Odd but harmless: whatever the answer, it is no 5xx.
    for path in [
        "/api/calls?limit=1&limit=2",
        "/api/calls?limit=1000000",
        "/api/calls?",
    ] {
        let (s, b) = t.api.get(path, &alice.token);
        assert!(s < 500, "GET {path} → {s} {b}");
    }
    let huge = "x".repeat(6000);
    let (s, b) = t.api.send("GET", "/api/calls", Some(&huge), None);
    assert!((400..500).contains(&s), "a 6 KB token → {s} {b}");
    assert_eq!(t.dump(), before, "bad input changed the store");
    // The daemon is still fine.
    assert_eq!(t.get_call(&bob, &call)["status"], "initiated");
}

// =============================================================================================
// History.

#[test]
fn history_is_newest_first_paged_by_next_before_and_members_only() {
    let t = T::start(Options::default());
    let [alice, bob, carol, dave] = ["Alice", "Bob", "Carol", "Dave"].map(person);
    for p in [&alice, &bob, &carol, &dave] {
        t.register(p);
    }
    let conv = Uuid::new_v4();
    let other = Uuid::new_v4();
    let mut made = Vec::new();
    for i in 0..5 {
        let call = t.initiate(&alice, conv, "audio", &[&bob]);
        if i % 2 == 0 {
            t.ok(&alice, &call, "end");
        }
        made.push(call);
    }
    let elsewhere = t.initiate(&alice, other, "video", &[&carol]);
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();
    let stored: Vec<String> = t
        .rows(
            "SELECT id FROM calls WHERE conversation_id = ?1 ORDER BY created_at DESC",
            &[&conv.to_string()],
        )
        .into_iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored, newest_first);

    // Walk the conversation two at a time.
    let walk = |who: &Person, query: &str, limit: usize| -> Vec<String> {
        let mut ids = Vec::new();
        let mut before: Option<String> = None;
        for _ in 0..10 {
            let mut path = format!("/api/calls?{query}limit={limit}");
            if let Some(b) = &before {
                path.push_str(&format!("&before={b}"));
            }
            let (s, body) = t.api.get(&path, &who.token);
            assert_eq!(s, 200, "{path}: {body}");
            let page = body["calls"].as_array().unwrap();
            assert!(page.len() <= limit);
            for c in page {
                ids.push(c["id"].as_str().unwrap().to_owned());
                assert!(c["participants"].is_array() && c["status"].is_string());
            }
            match &body["nextBefore"] {
                Value::Null => return ids,
                Value::String(b) => {
                    assert_eq!(page.len(), limit, "a short page is the last: {body}");
                    assert_eq!(
                        page.last().unwrap()["createdAt"],
                        json!(b),
                        "nextBefore is the last call's createdAt"
                    );
                    before = Some(b.clone());
                }
                v => panic!("nextBefore: {v}"),
            }
        }
        panic!("more than 10 pages");
    };
    let q = format!("conversationId={conv}&");
    assert_eq!(walk(&alice, &q, 2), newest_first);
    assert_eq!(walk(&bob, &q, 2), newest_first);
    assert_eq!(
        walk(&alice, &q, 5),
        newest_first,
        "a full last page, then an empty one"
    );
    assert_eq!(walk(&alice, &q, 100), newest_first);
    // Without a conversation: every call the user can see.
    let mut all = vec![elsewhere.clone()];
    all.extend(newest_first.iter().cloned());
    assert_eq!(walk(&alice, "", 2), all);
    assert_eq!(walk(&bob, "", 3), newest_first);
    assert_eq!(walk(&carol, "", 2), std::slice::from_ref(&elsewhere));
    assert_eq!(walk(&dave, "", 2), Vec::<String>::new());

    // One page in detail: the spec's call fields.
    let (s, body) = t.api.get(
        &format!("/api/calls?conversationId={conv}&limit=1"),
        &bob.token,
    );
    assert_eq!(s, 200, "{body}");
    let c = &body["calls"][0];
    assert_eq!(c["id"], made[4].as_str());
    assert_eq!(c["conversationId"], conv.to_string());
    assert_eq!(c["initiatedBy"], alice.uid());
    assert_eq!(c["status"], "ended");
    assert_eq!(c["endReason"], "cancelled");

    // Non-members see nothing of it.
    for who in [&carol, &dave] {
        t.refused(404, "conversation_not_found", |api| {
            api.get(&format!("/api/calls?conversationId={conv}"), &who.token)
        });
    }
    t.refused(404, "conversation_not_found", |api| {
        api.get(
            &format!("/api/calls?conversationId={}", Uuid::new_v4()),
            &alice.token,
        )
    });
    for (query, field) in [
        ("limit=0", "limit"),
        ("before=last-week", "before"),
        ("conversationId=general", "conversationId"),
        ("limit=many", "limit"),
        ("page=2", "page"),
    ] {
        let body = t.refused(400, "invalid_field", |api| {
            api.get(&format!("/api/calls?{query}"), &alice.token)
        });
        assert!(message(&body).starts_with(field), "{query} → {body}");
    }
}

// =============================================================================================
// TURN credentials.

#[test]
fn turn_credentials_are_recorded_and_accepted_by_the_relay() {
    let t = T::start(Options::default());
    let alice = person("Alice");
    let start = unix_now();
    let (s, body) = t.api.get("/api/calls/turn-credentials", &alice.token);
    let end = unix_now();
    assert_eq!(s, 200, "{body}");

    // The spec's shape.
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["credentials", "expiresAt"], "{body}");
    let mut keys: Vec<&String> = body["credentials"].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["credential", "urls", "username"], "{body}");
    let urls: Vec<String> = body["credentials"]["urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect();
    let username = body["credentials"]["username"].as_str().unwrap().to_owned();
    let credential = body["credentials"]["credential"]
        .as_str()
        .unwrap()
        .to_owned();
    let (expiry, user) = username.split_once(':').expect("expiry:user");
    assert_eq!(user, alice.uid());
    let expiry: u64 = expiry.parse().unwrap();
    // turn.credential_ttl defaults to 24 h.
    assert!(
        (start + 86400..=end + 86400).contains(&expiry),
        "{username}"
    );
    assert_eq!(
        credential,
        switchboard_turn::credentials::password_for(SECRET.as_bytes(), &username),
        "the relay's own scheme (coturn's use-auth-secret)"
    );
    assert_eq!(
        body["expiresAt"],
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(expiry)).to_string()
    );

    // The row.
    let rows = t.rows("SELECT * FROM turn_credentials", &[]);
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["user_id"], alice.uid());
    assert_eq!(row["username"], username.as_str());
    assert_eq!(row["credential"], credential.as_str());
    assert_eq!(ms(&row["expires_at"]), expiry * 1000);
    let created = ms(&row["created_at"]) / 1000;
    assert!((start..=end).contains(&created));
    // The caller is a user now (the foreign key).
    assert_eq!(
        t.rows("SELECT 1 FROM users WHERE id = ?1", &[&alice.uid()])
            .len(),
        1
    );

    // The relay takes them.
    let ok = allocate(t.d.turn, &username, &credential);
    assert_eq!(code(&ok), 200, "an Allocate with the minted credentials");
    assert_eq!(relayed_of(&ok).ip(), "127.0.0.1".parse::<IpAddr>().unwrap());
    // Control: the same username with another password is refused.
    assert_eq!(
        code(&allocate(t.d.turn, &username, "Zm9yZ2VkIGNyZWRlbnRpYWw=")),
        401
    );

    // Never cached; each request records its own row.
    let (s, head, body) = raw(
        t.d.http,
        &format!(
            "GET /api/calls/turn-credentials HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n",
            alice.token
        ),
        b"",
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(header(&head, "cache-control"), Some("no-store"), "{head}");
    assert_eq!(t.rows("SELECT * FROM turn_credentials", &[]).len(), 2);

    // The URLs: the daemon's TURN listener, for UDP and for TCP (checked last, as the rest
    // holds whatever they say).
    assert_eq!(
        urls,
        [
            format!("turn:{}?transport=udp", t.d.turn),
            format!("turn:{}?transport=tcp", t.d.turn)
        ],
        "every way into the daemon's relay, at the address it listens on"
    );
}

#[test]
fn turn_credentials_advertise_the_external_ip() {
    let t = T::start(Options {
        turn: "external_ip = \"203.0.113.7\"".to_owned(),
        ..Options::default()
    });
    let alice = person("Alice");
    let (s, body) = t.api.get("/api/calls/turn-credentials", &alice.token);
    assert_eq!(s, 200, "{body}");
    let urls: Vec<&str> = body["credentials"]["urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(urls.len(), 2, "{body}");
    assert!(urls[0].starts_with("turn:203.0.113.7:") && urls[0].ends_with("?transport=udp"));
    assert!(urls[1].starts_with("turn:203.0.113.7:") && urls[1].ends_with("?transport=tcp"));
    let username = body["credentials"]["username"].as_str().unwrap();
    let credential = body["credentials"]["credential"].as_str().unwrap();
    let ok = allocate(t.d.turn, username, credential);
    assert_eq!(code(&ok), 200);
    assert_eq!(
        relayed_of(&ok).ip(),
        "203.0.113.7".parse::<IpAddr>().unwrap(),
        "the relayed address is the public one too"
    );
    let port = t.d.turn.port();
    assert_eq!(
        urls,
        [
            format!("turn:203.0.113.7:{port}?transport=udp"),
            format!("turn:203.0.113.7:{port}?transport=tcp")
        ],
        "the public address with the port the relay listens on"
    );
}

#[test]
fn expired_turn_credentials_are_deleted() {
    // A one-second TTL is a valid config.
    let t = T::start(Options {
        turn: "credential_ttl = \"1s\"".to_owned(),
        ..Options::default()
    });
    let alice = person("Alice");
    // Expiry is whole seconds (floor(now) + 1 s): ask just after a second begins, so that the
    // row lives long enough to be seen.
    let into_second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_millis();
    std::thread::sleep(Duration::from_millis(u64::from(1000 - into_second) + 10));
    let (s, body) = t.api.get("/api/calls/turn-credentials", &alice.token);
    assert_eq!(s, 200, "{body}");
    let username = body["credentials"]["username"].as_str().unwrap().to_owned();
    let credential = body["credentials"]["credential"]
        .as_str()
        .unwrap()
        .to_owned();
    let expiry: u64 = username.split_once(':').unwrap().0.parse().unwrap();
    let rows = t.rows(
        "SELECT username, expires_at FROM turn_credentials WHERE username = ?1",
        &[&username],
    );
    assert_eq!(rows.len(), 1, "recorded");
    assert_eq!(ms(&rows[0]["expires_at"]), expiry * 1000);

    let gone = wait_until(Duration::from_secs(5), || {
        t.rows("SELECT 1 FROM turn_credentials", &[]).is_empty()
    });
    assert!(gone, "the expired credential is still stored");
    assert!(now_ms() >= expiry * 1000, "deleted before it expired");

    // And the relay no longer takes it.
    assert!(wait_until(Duration::from_secs(3), || unix_now() > expiry));
    assert_eq!(code(&allocate(t.d.turn, &username, &credential)), 401);
}

// =============================================================================================
// The token CLI.

#[test]
fn token_cli_mints_tokens_the_daemon_accepts() {
    let t = T::start(Options::default());
    let config = t.d.dir.path().join("switchboard.toml");
    let bob = person("Bob");
    t.register(&bob);
    let ada = Uuid::new_v4();
    let run = |args: &[&str], config: &std::path::Path| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        cmd.arg("token").args(args).arg("--config").arg(config);
        common::run_bounded(&mut cmd, Duration::from_secs(10))
    };
    let (status, out) = run(
        &[
            "--user",
            &ada.to_string(),
            "--name",
            "Ada",
            "--email",
            "ada@example.com",
        ],
        &config,
    );
    assert_eq!(status, Some(0), "{out}");
    let tok = out.trim().to_owned();
    assert_eq!(tok.lines().count(), 1, "one line: {out}");
    assert_eq!(tok.split('.').count(), 3, "a JWT: {out}");

    let (s, body) = t.api.get("/api/calls", &tok);
    assert_eq!(s, 200, "{body}");
    let users = t.rows(
        "SELECT name, email FROM users WHERE id = ?1",
        &[&ada.to_string()],
    );
    assert_eq!(
        (&users[0]["name"], &users[0]["email"]),
        (&json!("Ada"), &json!("ada@example.com"))
    );
    let (s, body) = t.api.json(
        "POST",
        "/api/calls/initiate",
        Some(&tok),
        &json!({"conversationId": Uuid::new_v4(), "type": "audio", "participantIds": [bob.id]}),
    );
    assert_eq!(s, 201, "{body}");
    let call = body["callId"].as_str().unwrap();
    let view = t.get_call(&bob, call);
    assert_eq!(view["initiatedBy"], ada.to_string());
    assert_eq!(view["participants"][0]["userName"], "Ada");

    // Bad arguments exit 2 and print no token.
    for args in [
        vec!["--user".to_owned(), "not-a-uuid".to_owned()],
        vec!["--user".to_owned(), Uuid::nil().to_string()],
        vec![
            "--user".to_owned(),
            ada.to_string(),
            "--ttl".to_owned(),
            "0s".to_owned(),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, out) = run(&args, &config);
        assert_eq!(status, Some(2), "{args:?}: {out}");
        assert!(out.starts_with("error:"), "{args:?}: {out}");
    }

    // A token minted with another deployment's secret is not accepted here.
    let other = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains(JWT_SECRET));
    let other_config = other.path().join("switchboard.toml");
    std::fs::write(
        &other_config,
        text.replace(JWT_SECRET, "another-deployment-secret"),
    )
    .unwrap();
    let (status, out) = run(&["--user", &ada.to_string()], &other_config);
    assert_eq!(status, Some(0), "{out}");
    t.refused(401, "invalid_token", |api| {
        api.get("/api/calls", out.trim())
    });
}
