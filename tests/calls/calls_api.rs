//! The calls REST API through the real daemon: HTTP on port 0, a real SQLite file read back
//! directly (read-only, beside the running daemon), every transition of the call state machine
//! and every refusal, in the spec's shapes (shared/spec/phase4-calls.md, "API Endpoints") and
//! DESIGN.md's rules. Every refused request is checked to leave the store byte-for-byte as it
//! was.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{allocate, assert_fields, code, error_code, relayed_of, token, unix_now};
use common::{wait_until, Api, Daemon, Options, Person, ADMIN_TOKEN, JWT_SECRET, SECRET};
use serde_json::{json, Value};
use switchboard_signaling::time::Timestamp;
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
// The API's refusals: the status and the error code.

type Refusal = (u16, &'static str);

const INVALID_JSON: Refusal = (400, "invalid_json");
const INVALID_FIELD: Refusal = (400, "invalid_field");
const MISSING_TOKEN: Refusal = (401, "missing_token");
const INVALID_TOKEN: Refusal = (401, "invalid_token");
const TOKEN_EXPIRED: Refusal = (401, "token_expired");
const NOT_INVITED: Refusal = (403, "not_invited");
const NOT_A_PARTICIPANT: Refusal = (403, "not_a_participant");
const CALL_NOT_FOUND: Refusal = (404, "call_not_found");
const CONVERSATION_NOT_FOUND: Refusal = (404, "conversation_not_found");
const ROUTE_NOT_FOUND: Refusal = (404, "route_not_found");
const METHOD_NOT_ALLOWED: Refusal = (405, "method_not_allowed");
const INVALID_TRANSITION: Refusal = (409, "invalid_transition");
const BODY_TOO_LARGE: Refusal = (413, "body_too_large");
const TOO_MANY_PARTICIPANTS: Refusal = (422, "too_many_participants");
const NO_PARTICIPANTS: Refusal = (422, "no_participants");
const NOT_A_MEMBER: Refusal = (422, "not_a_member");

// ---------------------------------------------------------------------------------------------
// A daemon, its API and its store.

struct T {
    d: Daemon,
    api: Api,
}

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

    fn turn(turn: &str) -> T {
        T::start(Options {
            turn: turn.to_owned(),
            ..Options::default()
        })
    }

    fn closed() -> T {
        T::start(Options {
            auth: "open_conversations = false".to_owned(),
            ..Options::default()
        })
    }

    /// Every row of `sql` on the daemon's store, as column → JSON value.
    fn rows(&self, sql: &str, params: &[&dyn rusqlite::ToSql]) -> Vec<Value> {
        common::query_rows(&common::open_store(&self.d.store_path()), sql, params)
    }

    /// How many rows `sql` finds.
    fn count(&self, sql: &str, params: &[&dyn rusqlite::ToSql]) -> usize {
        self.rows(sql, params).len()
    }

    /// Every row of every table, one line each: what "nothing changed" compares.
    fn dump(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (table, order) in TABLES {
            for row in self.rows(&format!("SELECT * FROM {table} ORDER BY {order}"), &[]) {
                out.push(format!("{table}: {row}"));
            }
        }
        out
    }

    /// The `calls` row of `id`.
    #[track_caller]
    fn call_row(&self, id: &str) -> Value {
        let mut rows = self.rows("SELECT * FROM calls WHERE id = ?1", &[&id]);
        assert_eq!(rows.len(), 1, "one calls row for {id}");
        rows.remove(0)
    }

    /// Asserts the `calls` row of `call` is over: with `status`, `end_reason`, `duration_seconds`
    /// and `started_at` (`null`: never answered) as given, and an `ended_at`. Returns the row.
    #[track_caller]
    fn assert_over(
        &self,
        call: &str,
        (status, reason): (&str, &str),
        duration: u64,
        started: &Value,
    ) -> Value {
        let row = self.call_row(call);
        let over = json!({
            "status": status,
            "end_reason": reason,
            "duration_seconds": duration,
            "started_at": started,
        });
        assert_fields(&row, &over);
        assert!(row["ended_at"].is_string(), "{row}");
        row
    }

    /// The `users` row of `id` (name and email), if there is one.
    fn user_row(&self, id: &str) -> Option<Value> {
        let sql = "SELECT name, email FROM users WHERE id = ?1";
        self.rows(sql, &[&id]).into_iter().next()
    }

    /// The `call_participants` rows of `call`, by user id.
    fn participants(&self, call: &str) -> BTreeMap<String, Value> {
        let sql = "SELECT * FROM call_participants WHERE call_id = ?1";
        self.rows(sql, &[&call])
            .into_iter()
            .map(|r| (r["user_id"].as_str().unwrap().to_owned(), r))
            .collect()
    }

    /// `who`'s `call_participants` row in `call`.
    #[track_caller]
    fn participant(&self, call: &str, who: &Person) -> Value {
        let mut all = self.participants(call);
        all.remove(&who.uid())
            .unwrap_or_else(|| panic!("{} is not in {call}", who.name))
    }

    /// `GET /api/calls/turn-credentials` as `who`, which must succeed: its [`credentials_of`].
    #[track_caller]
    fn turn_credentials(&self, who: &Person) -> (Vec<String>, String, String) {
        let (s, body) = self.api.get("/api/calls/turn-credentials", &who.token);
        assert_eq!(s, 200, "{body}");
        credentials_of(&body)
    }

    /// `who`'s media state in `call`, as stored.
    fn stored_media(&self, call: &str, who: &Person) -> Value {
        let text = self.participant(call, who)["media_state"].clone();
        serde_json::from_str(text.as_str().unwrap()).unwrap()
    }

    /// The stored call has the fields of `row`, and `people` have `statuses` in it.
    #[track_caller]
    fn assert_stored(&self, call: &str, row: &Value, people: &[&Person], statuses: &[&str]) {
        assert_fields(&self.call_row(call), row);
        self.assert_statuses(call, people, statuses);
    }

    /// Asserts the participants of `call` in the store are exactly `people`, with `statuses`
    /// (in the same order).
    #[track_caller]
    fn assert_statuses(&self, call: &str, people: &[&Person], statuses: &[&str]) {
        assert_eq!(people.len(), statuses.len(), "a status for each");
        let got: BTreeMap<String, String> = self
            .participants(call)
            .into_iter()
            .map(|(u, r)| (u, r["status"].as_str().unwrap().to_owned()))
            .collect();
        let want: BTreeMap<String, String> = people
            .iter()
            .zip(statuses)
            .map(|(p, s)| (p.uid(), (*s).to_owned()))
            .collect();
        assert_eq!(got, want, "participant statuses of {call}");
    }

    /// The members of a conversation in the store.
    fn members(&self, conversation: Uuid) -> BTreeSet<String> {
        let sql = "SELECT user_id FROM conversation_members WHERE conversation_id = ?1";
        self.rows(sql, &[&conversation.to_string()])
            .into_iter()
            .map(|r| r["user_id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// People the daemon knows, as any successful request of theirs makes them.
    #[track_caller]
    fn people<const N: usize>(&self, names: [&str; N]) -> [Person; N] {
        names.map(|name| {
            let p = Person::new(name);
            let (s, body) = self.api.get("/api/calls", &p.token);
            assert_eq!(s, 200, "history for {name}: {body}");
            p
        })
    }

    /// People provisioned through the admin API (a closed deployment's users).
    #[track_caller]
    fn provisioned<const N: usize>(&self, names: [&str; N]) -> [Person; N] {
        names.map(|name| {
            let p = Person::new(name);
            let body = self.api.provision(&p);
            let user = json!({"user": {"id": p.uid(), "name": p.name, "email": p.email}});
            assert_eq!(body, user);
            p
        })
    }

    /// `PUT /api/admin/conversations/{conversation}` with `body`, as the admin.
    fn put_conversation(&self, conversation: Uuid, body: &Value) -> (u16, Value) {
        let path = format!("/api/admin/conversations/{conversation}");
        self.api.json("PUT", &path, Some(ADMIN_TOKEN), body)
    }

    fn try_initiate(
        &self,
        by: &Person,
        conversation: Uuid,
        kind: &str,
        to: &[&Person],
    ) -> (u16, Value) {
        self.api.initiate(by, conversation, kind, to)
    }

    /// Starts a call; returns its id.
    #[track_caller]
    fn initiate(&self, by: &Person, conversation: Uuid, kind: &str, to: &[&Person]) -> String {
        self.api.start_call(by, conversation, kind, to)
    }

    /// `POST /api/calls/{call}/{action}` as `who`.
    fn act(&self, who: &Person, call: &str, action: &str) -> (u16, Value) {
        self.api.act(who, call, action)
    }

    /// `act`, which must succeed.
    #[track_caller]
    fn ok(&self, who: &Person, call: &str, action: &str) -> Value {
        self.api.act_ok(who, call, action)
    }

    fn media(&self, who: &Person, call: &str, change: &Value) -> (u16, Value) {
        self.api.media(who, call, change)
    }

    /// `media`, which must succeed; returns the body.
    #[track_caller]
    fn media_ok(&self, who: &Person, call: &str, change: &Value) -> Value {
        self.api.media_ok(who, call, change)
    }

    /// `GET /api/calls/{call}` as `who`, which must succeed; returns `call`.
    #[track_caller]
    fn get_call(&self, who: &Person, call: &str) -> Value {
        self.api.call(who, call)
    }

    /// Runs a request that must be refused with `refusal`, in the error shape, and leave every
    /// table exactly as it was. Returns the error body.
    #[track_caller]
    fn refused(&self, refusal: Refusal, f: impl FnOnce(&Api) -> (u16, Value)) -> Value {
        let before = self.dump();
        let (s, body) = f(&self.api);
        assert_eq!((s, error_code(&body)), refusal, "{body}");
        assert_error_shape(&body);
        assert_eq!(
            self.dump(),
            before,
            "a refused request changed the store: {body}"
        );
        body
    }

    /// Each of `actions` (answer, reject, end) by `who` on `call` is [`T::refused`] with
    /// `refusal`.
    #[track_caller]
    fn refuses<const N: usize>(
        &self,
        who: &Person,
        call: &str,
        actions: [&str; N],
        refusal: Refusal,
    ) {
        for action in actions {
            self.refused(refusal, |_| self.act(who, call, action));
        }
    }

    /// [`T::refused`], with an error message that starts with `field`.
    #[track_caller]
    fn refused_naming(
        &self,
        refusal: Refusal,
        field: &str,
        f: impl FnOnce(&Api) -> (u16, Value),
    ) -> Value {
        let body = self.refused(refusal, f);
        assert!(message(&body).starts_with(field), "{field}: {body}");
        body
    }
}

/// `{"error": {"code": "...", "message": "..."}}` and nothing else.
#[track_caller]
fn assert_error_shape(body: &Value) {
    assert_keys(body, &["error"]);
    assert_keys(&body["error"], &["code", "message"]);
    let e = &body["error"];
    assert!(
        !e["code"].as_str().expect("code").is_empty()
            && !e["message"].as_str().expect("message").is_empty(),
        "{body}"
    );
}

/// Asserts `object` has exactly these keys (sorted).
#[track_caller]
fn assert_keys(object: &Value, keys: &[&str]) {
    let object = object
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {object}"));
    let mut got: Vec<&String> = object.keys().collect();
    got.sort();
    assert_eq!(got, keys, "{object:?}");
}

/// The error message of an error body.
fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap()
}

/// The `callId` of an initiate's answer.
fn call_id_of(body: &Value) -> &str {
    body["callId"]
        .as_str()
        .unwrap_or_else(|| panic!("no callId: {body}"))
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

/// A participant as the API lists one: who, and with what status.
fn view_of(p: &Person, status: &str) -> Value {
    json!({"userId": p.uid(), "userName": p.name, "userIdentifier": p.email, "status": status})
}

/// A daemon that knows Alice and Bob, where Alice has just called Bob (a call of `kind`) in a
/// new conversation: the daemon, the two, the conversation and the call.
fn alice_calls_bob(kind: &str) -> (T, [Person; 2], Uuid, String) {
    let t = T::start(Options::default());
    let [alice, bob] = t.people(["Alice", "Bob"]);
    let conv = Uuid::new_v4();
    let call = t.initiate(&alice, conv, kind, &[&bob]);
    (t, [alice, bob], conv, call)
}

/// A daemon that knows Alice, Bob, Carol and Dave, where Alice has called Bob in a conversation
/// that Carol is a member of (through an earlier call) and Dave is not: the daemon, the four,
/// the conversation and the call.
fn call_beside_a_member() -> (T, [Person; 4], Uuid, String) {
    let t = T::start(Options::default());
    let [alice, bob, carol, dave] = t.people(["Alice", "Bob", "Carol", "Dave"]);
    let conv = Uuid::new_v4();
    let earlier = t.initiate(&alice, conv, "audio", &[&bob, &carol]);
    t.ok(&alice, &earlier, "end");
    let call = t.initiate(&alice, conv, "video", &[&bob]);
    (t, [alice, bob, carol, dave], conv, call)
}

// ---------------------------------------------------------------------------------------------
// The relay, driven with minted credentials (the long-term credential flow of relay_errors.rs).

/// The `credentials` of a `GET /api/calls/turn-credentials` answer: (urls, username, credential).
fn credentials_of(body: &Value) -> (Vec<String>, String, String) {
    let c = &body["credentials"];
    let text = |v: &Value| {
        v.as_str()
            .unwrap_or_else(|| panic!("{v}: {body}"))
            .to_owned()
    };
    let urls = c["urls"]
        .as_array()
        .expect("urls")
        .iter()
        .map(text)
        .collect();
    (urls, text(&c["username"]), text(&c["credential"]))
}

// =============================================================================================
// The 1:1 call.

#[test]
fn one_to_one_call_in_the_spec_shapes() {
    let t = T::start(Options::default());
    let [alice, bob] = t.people(["Alice", "Bob"]);
    let conv = Uuid::new_v4();

    // Initiate: 201, the spec's shape, the invitee as the spec lists them.
    let (s, body) = t.try_initiate(&alice, conv, "video", &[&bob]);
    assert_eq!(s, 201, "{body}");
    let call = call_id_of(&body).to_owned();
    assert!(Uuid::parse_str(&call).is_ok(), "{call}");
    assert_eq!(body["status"], "initiated");
    let invitees = body["participants"].as_array().expect("participants");
    assert_eq!(invitees.len(), 1, "{body}");
    assert_fields(&invitees[0], &view_of(&bob, "invited"));

    // The store: the call, its participants, the conversation made on first use.
    let row = json!({
        "conversation_id": conv,
        "type": "video",
        "status": "initiated",
        "initiated_by": alice.uid(),
        "started_at": null,
        "ended_at": null,
        "duration_seconds": null,
        "end_reason": null,
    });
    assert_fields(&t.call_row(&call), &row);
    let ps = t.participants(&call);
    assert_eq!(ps.len(), 2);
    assert_eq!(ps[&alice.uid()]["status"], "joined");
    assert!(ps[&alice.uid()]["joined_at"].is_string());
    assert_fields(
        &ps[&bob.uid()],
        &json!({"status": "invited", "joined_at": null}),
    );
    for p in [&alice, &bob] {
        assert_eq!(t.stored_media(&call, p), default_media());
    }
    assert_eq!(
        t.members(conv),
        BTreeSet::from([alice.uid(), bob.uid()]),
        "open_conversations: the caller and the invitee are members"
    );
    let users = t.user_row(&bob.uid()).expect("Bob is a user");
    assert_fields(&users, &json!({"name": "Bob", "email": "bob@example.com"}));

    // GET as the invitee: the spec's shape, everyone in it, the initiator first.
    let c = t.get_call(&bob, &call);
    let view = json!({
        "id": call,
        "conversationId": conv,
        "type": "video",
        "status": "initiated",
        "initiatedBy": alice.uid(),
        "startedAt": null,
    });
    assert_fields(&c, &view);
    let ps = c["participants"].as_array().unwrap();
    assert_eq!(ps.len(), 2);
    assert_fields(&ps[0], &view_of(&alice, "joined"));
    assert_fields(&ps[1], &json!({"userId": bob.uid(), "status": "invited"}));

    // Answer: the call is active from now.
    let before = now_ms();
    let body = t.ok(&bob, &call, "answer");
    assert_fields(&body, &json!({"callId": call, "status": "active"}));
    let started = body["startedAt"].clone();
    assert!(ms(&started) >= before - 1 && ms(&started) <= now_ms() + 1);
    // startedAt is what the store holds.
    let row = json!({"status": "active", "started_at": started, "ended_at": null});
    t.assert_stored(&call, &row, &[&alice, &bob], &["joined", "joined"]);
    assert_eq!(t.participant(&call, &bob)["joined_at"], started);

    // Media: the spec's response, stored as JSON; a partial change keeps the other flags.
    let body = t.media_ok(&bob, &call, &json!({"audioEnabled": false}));
    let bob_media = json!({"audioEnabled": false, "videoEnabled": true, "screenSharing": false});
    assert_eq!(body, json!({"success": true, "mediaState": bob_media}));
    let alice_media = json!({"audioEnabled": true, "videoEnabled": false, "screenSharing": true});
    let body = t.media_ok(&alice, &call, &alice_media);
    assert_eq!(body, json!({"success": true, "mediaState": alice_media}));
    assert_eq!(t.stored_media(&call, &bob), bob_media);
    assert_eq!(t.stored_media(&call, &alice), alice_media);

    let c = t.get_call(&alice, &call);
    assert_fields(&c, &json!({"status": "active", "startedAt": started}));
    assert_eq!(c["participants"][0]["mediaState"], alice_media);
    let bob_view = json!({"mediaState": bob_media, "status": "joined"});
    assert_fields(&c["participants"][1], &bob_view);

    // End, a second later: ended-by-user with the duration since the answer.
    std::thread::sleep(Duration::from_millis(1100));
    let body = t.ok(&alice, &call, "end");
    let ended = json!({"callId": call, "status": "ended", "endReason": "ended-by-user"});
    assert_fields(&body, &ended);
    let duration = body["duration"].as_u64().expect("duration");
    assert!((1..5).contains(&duration), "{body}");
    let row = t.assert_over(&call, ("ended", "ended-by-user"), duration, &started);
    let ended = row["ended_at"].clone();
    assert_eq!((ms(&ended) - ms(&started)) / 1000, duration);
    t.assert_statuses(&call, &[&alice, &bob], &["left", "left"]);
    for p in t.participants(&call).values() {
        assert_eq!(p["left_at"], ended);
    }
    let c = t.get_call(&bob, &call);
    assert_fields(&c, &json!({"status": "ended", "startedAt": started}));

    // Nothing more happens to a call that is over.
    t.refuses(&bob, &call, ["answer", "reject", "end"], INVALID_TRANSITION);
    t.refuses(&alice, &call, ["end"], INVALID_TRANSITION);
    t.refused(INVALID_TRANSITION, |_| {
        t.media(&bob, &call, &json!({"audioEnabled": true}))
    });
}

#[test]
fn type_is_audio_video_or_screen() {
    let t = T::start(Options::default());
    let [alice, bob] = t.people(["Alice", "Bob"]);
    let conv = Uuid::new_v4();
    for kind in ["audio", "video", "screen"] {
        let call = t.initiate(&alice, conv, kind, &[&bob]);
        assert_eq!(t.call_row(&call)["type"], kind);
        assert_eq!(t.get_call(&bob, &call)["type"], kind);
        t.ok(&alice, &call, "end");
    }
    // Without a type, audio.
    let untyped = json!({"conversationId": conv, "participantIds": [bob.id]});
    let (s, body) = t.api.post_initiate(&alice.token, &untyped);
    assert_eq!(s, 201, "{body}");
    assert_eq!(t.call_row(call_id_of(&body))["type"], "audio");
    for bad in [json!("fax"), json!("Video"), json!(1), json!(null)] {
        let typed = json!({"conversationId": conv, "type": bad, "participantIds": [bob.id]});
        t.refused_naming(INVALID_FIELD, "type", |api| {
            api.post_initiate(&alice.token, &typed)
        });
    }
}

#[test]
fn one_to_one_reject_rejects_the_call() {
    let (t, [alice, bob], _, call) = alice_calls_bob("audio");

    let body = t.ok(&bob, &call, "reject");
    assert_fields(&body, &json!({"callId": call, "status": "rejected"}));
    t.assert_over(&call, ("rejected", "rejected"), 0, &Value::Null);
    t.assert_statuses(&call, &[&alice, &bob], &["left", "rejected"]);
    assert_eq!(t.get_call(&alice, &call)["status"], "rejected");

    t.refuses(&bob, &call, ["answer", "reject"], INVALID_TRANSITION);
    t.refuses(&alice, &call, ["end"], INVALID_TRANSITION);
}

#[test]
fn initiator_hanging_up_before_an_answer_cancels() {
    let (t, [alice, bob], _, call) = alice_calls_bob("video");

    // The invitee cannot hang up a call they have not joined.
    t.refuses(&bob, &call, ["end"], INVALID_TRANSITION);

    let body = t.ok(&alice, &call, "end");
    let cancelled = json!({"status": "ended", "endReason": "cancelled", "duration": 0});
    assert_fields(&body, &cancelled);
    t.assert_over(&call, ("ended", "cancelled"), 0, &Value::Null);
    t.assert_statuses(&call, &[&alice, &bob], &["left", "missed"]);

    t.refuses(&bob, &call, ["answer", "reject"], INVALID_TRANSITION);
}

// =============================================================================================
// Group calls.

#[test]
fn group_call_reject_answer_leave_and_end_when_fewer_than_two_joined() {
    let t = T::start(Options::default());
    let [alice, bob, carol, dave] = t.people(["Alice", "Bob", "Carol", "Dave"]);
    let everyone = [&alice, &bob, &carol, &dave];
    let (s, body) = t.try_initiate(&alice, Uuid::new_v4(), "video", &[&bob, &carol, &dave]);
    assert_eq!(s, 201, "{body}");
    let call = call_id_of(&body).to_owned();
    let invited: Vec<Value> = body["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| json!([p["userId"], p["status"]]))
        .collect();
    let want: Vec<Value> = [&bob, &carol, &dave]
        .iter()
        .map(|p| json!([p.uid(), "invited"]))
        .collect();
    assert_eq!(invited, want, "the invitees, in the order invited");

    // The initiator is not an invitee.
    t.refuses(&alice, &call, ["answer", "reject"], NOT_INVITED);

    // Carol rejects: only she is marked; the call still rings for the others.
    let body = t.ok(&carol, &call, "reject");
    assert_fields(
        &body,
        &json!({"status": "rejected", "callStatus": "initiated"}),
    );
    let row = json!({"status": "initiated", "ended_at": null});
    let statuses = ["joined", "invited", "rejected", "invited"];
    t.assert_stored(&call, &row, &everyone, &statuses);
    // A rejection is final while nobody has answered.
    t.refuses(&carol, &call, ["answer", "reject"], INVALID_TRANSITION);

    // Bob answers first: the call is active from then; Dave's answer keeps that start.
    let first = t.ok(&bob, &call, "answer");
    assert_eq!(first["status"], "active");
    let started = first["startedAt"].clone();
    assert!(started.is_string());
    std::thread::sleep(Duration::from_millis(20));
    let second = t.ok(&dave, &call, "answer");
    // The first answer sets startedAt.
    assert_fields(&second, &json!({"status": "active", "startedAt": started}));
    let row = json!({"status": "active", "started_at": started});
    let statuses = ["joined", "joined", "rejected", "joined"];
    t.assert_stored(&call, &row, &everyone, &statuses);
    t.refuses(&dave, &call, ["answer", "reject"], INVALID_TRANSITION);

    // The initiator leaves: the call goes on with Bob and Dave.
    let body = t.ok(&alice, &call, "end");
    let left = json!({
        "callId": call,
        "status": "left",
        "callStatus": "active",
        "duration": null,
        "endReason": null,
    });
    assert_fields(&body, &left);
    let row = json!({"status": "active", "ended_at": null});
    let statuses = ["left", "joined", "rejected", "joined"];
    t.assert_stored(&call, &row, &everyone, &statuses);
    assert!(t.participant(&call, &alice)["left_at"].is_string());
    // Who left cannot leave again, nor change their media.
    t.refuses(&alice, &call, ["end"], INVALID_TRANSITION);
    t.refused(INVALID_TRANSITION, |_| {
        t.media(&alice, &call, &json!({"audioEnabled": false}))
    });

    // Bob leaves: one joined is fewer than two, so the call ends.
    let body = t.ok(&bob, &call, "end");
    let ended = json!({"status": "ended", "callStatus": "ended", "endReason": "ended-by-user"});
    assert_fields(&body, &ended);
    let duration = body["duration"].as_u64().expect("duration");
    let row = t.assert_over(&call, ("ended", "ended-by-user"), duration, &started);
    assert_eq!((ms(&row["ended_at"]) - ms(&started)) / 1000, duration);
    let statuses = ["left", "left", "rejected", "left"];
    t.assert_statuses(&call, &everyone, &statuses);
    t.refuses(&dave, &call, ["end"], INVALID_TRANSITION);
    t.refuses(&carol, &call, ["answer"], INVALID_TRANSITION);
}

/// Asserts `who`'s answer joins (or rejoins) the active `call`, which keeps its start `started`.
#[track_caller]
fn assert_answer_joins(t: &T, who: &Person, call: &str, started: &Value) {
    let body = t.ok(who, call, "answer");
    assert_fields(&body, &json!({"status": "active", "startedAt": started}));
}

#[test]
fn group_calls_settle_rejoin_and_cancel() {
    let t = T::start(Options::default());
    let [alice, bob, carol, dave] = t.people(["Alice", "Bob", "Carol", "Dave"]);
    let everyone = [&alice, &bob, &carol, &dave];
    let conv = Uuid::new_v4();

    // Rejoin: an active group call can be joined again after rejecting or leaving it.
    let call = t.initiate(&alice, conv, "audio", &[&bob, &carol, &dave]);
    let started = t.ok(&bob, &call, "answer")["startedAt"].clone();
    let body = t.ok(&carol, &call, "reject");
    assert_eq!(body["callStatus"], "active");
    let statuses = ["joined", "joined", "rejected", "invited"];
    t.assert_statuses(&call, &everyone, &statuses);
    assert_answer_joins(&t, &carol, &call, &started);
    let body = t.ok(&bob, &call, "end");
    assert_eq!(body["status"], "left");
    let left = t.participant(&call, &bob)["left_at"].clone();
    assert!(left.is_string());
    std::thread::sleep(Duration::from_millis(20));
    assert_answer_joins(&t, &bob, &call, &started);
    let bob_row = t.participant(&call, &bob);
    assert_eq!(bob_row["status"], "joined");
    assert_eq!(bob_row["left_at"], Value::Null, "a rejoin clears left_at");
    assert!(
        ms(&bob_row["joined_at"]) > ms(&left),
        "a rejoin is a new join"
    );
    assert_eq!(t.call_row(&call)["started_at"], started);
    let statuses = ["joined", "joined", "joined", "invited"];
    t.assert_statuses(&call, &everyone, &statuses);
    // Its initiator too, after leaving (but never by rejecting: they were not invited).
    assert_eq!(t.ok(&alice, &call, "end")["status"], "left");
    t.refuses(&alice, &call, ["reject"], NOT_INVITED);
    assert_answer_joins(&t, &alice, &call, &started);
    let alice_row = json!({"status": "joined", "left_at": null});
    assert_fields(&t.participant(&call, &alice), &alice_row);

    // Every invitee rejects an unanswered group call: it is rejected.
    let call = t.initiate(&alice, conv, "audio", &[&bob, &carol]);
    assert_eq!(t.ok(&bob, &call, "reject")["callStatus"], "initiated");
    let body = t.ok(&carol, &call, "reject");
    assert_fields(
        &body,
        &json!({"status": "rejected", "callStatus": "rejected"}),
    );
    let row = json!({"status": "rejected", "end_reason": "rejected"});
    let statuses = ["left", "rejected", "rejected"];
    t.assert_stored(&call, &row, &everyone[..3], &statuses);
    // Not active, so nobody rejoins it.
    t.refuses(&bob, &call, ["answer"], INVALID_TRANSITION);

    // The initiator of an unanswered group call hangs up: cancelled, the rest missed it.
    let call = t.initiate(&alice, conv, "video", &[&bob, &carol]);
    t.ok(&bob, &call, "reject");
    let body = t.ok(&alice, &call, "end");
    let cancelled = json!({"status": "ended", "endReason": "cancelled", "duration": 0});
    assert_fields(&body, &cancelled);
    let row = json!({"status": "ended", "end_reason": "cancelled"});
    let statuses = ["left", "rejected", "missed"];
    t.assert_stored(&call, &row, &everyone[..3], &statuses);
    t.refuses(&carol, &call, ["answer"], INVALID_TRANSITION);

    // A 1:1 call is over once someone hangs up: nothing to rejoin.
    let call = t.initiate(&alice, conv, "audio", &[&bob]);
    t.ok(&bob, &call, "answer");
    assert_eq!(t.ok(&bob, &call, "end")["status"], "ended");
    t.refuses(&bob, &call, ["answer"], INVALID_TRANSITION);
}

// =============================================================================================
// Ring timeout.

#[test]
fn ring_timeout_misses_unanswered_calls() {
    let t = T::calls("ring_timeout = \"1s\"");
    let [alice, bob, carol, dave] = t.people(["Alice", "Bob", "Carol", "Dave"]);
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
    for (call, people, statuses) in [
        (&one, vec![&alice, &bob], vec!["left", "missed"]),
        (
            &group,
            vec![&alice, &carol, &dave],
            vec!["left", "rejected", "missed"],
        ),
    ] {
        let row = t.assert_over(call, ("missed", "no-answer"), 0, &Value::Null);
        let rang = ms(&row["ended_at"]) - ms(&row["created_at"]);
        assert!(
            (1000..4000).contains(&rang),
            "ended {rang} ms after it started"
        );
        t.assert_statuses(call, &people, &statuses);
        assert_eq!(t.get_call(&alice, call)["status"], "missed");
    }
    t.refuses(&bob, &one, ["answer", "reject"], INVALID_TRANSITION);
    t.refuses(&dave, &group, ["answer"], INVALID_TRANSITION);
}

#[test]
fn ring_timeout_in_an_answered_group_call_misses_only_the_silent() {
    let t = T::calls("ring_timeout = \"1s\"");
    let [alice, bob, carol, dave] = t.people(["Alice", "Bob", "Carol", "Dave"]);
    let everyone = [&alice, &bob, &carol, &dave];
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
    // Two joined: the call goes on.
    let row = json!({"status": "active", "started_at": started, "ended_at": null});
    let statuses = ["joined", "joined", "missed", "missed"];
    t.assert_stored(&call, &row, &everyone, &statuses);
    let view = t.get_call(&carol, &call);
    assert_eq!(view["status"], "active");
    assert_eq!(view["participants"][2]["status"], "missed");

    // A missed invitation is no longer rejectable, but the active group call can be joined.
    t.refuses(&dave, &call, ["reject"], INVALID_TRANSITION);
    assert_answer_joins(&t, &carol, &call, &started);
    let statuses = ["joined", "joined", "joined", "missed"];
    t.assert_statuses(&call, &everyone, &statuses);
    // Nobody is ringing any more: a while later nothing has changed.
    let before = t.dump();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(t.dump(), before);
}

// =============================================================================================
// Media.

#[test]
fn media_patch_validates_its_booleans_and_stores_the_state() {
    // Carol is a member of the conversation, through an earlier call; Dave is not.
    let (t, [alice, bob, carol, dave], _, call) = call_beside_a_member();

    // A still-invited participant may set theirs (muted before answering).
    let body = t.media_ok(&bob, &call, &json!({"videoEnabled": false}));
    let want = json!({"audioEnabled": true, "videoEnabled": false, "screenSharing": false});
    assert_eq!(body, json!({"success": true, "mediaState": want}));
    assert_eq!(t.stored_media(&call, &bob), want);
    assert_eq!(t.stored_media(&call, &alice), default_media());

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
        assert_eq!(t.media_ok(&alice, &call, &change)["mediaState"], want);
        assert_eq!(t.stored_media(&call, &alice), want);
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
        t.refused_naming(INVALID_FIELD, field, |_| t.media(&alice, &call, &bad));
    }
    let path = format!("/api/calls/{call}/media");
    for bad in [
        &b"{\"audioEnabled\": tru"[..],
        b"",
        b"{\"audioEnabled\": true} {}",
    ] {
        t.refused(INVALID_JSON, |api| {
            api.send("PATCH", &path, Some(&alice.token), Some(bad))
        });
    }

    // Who may: a member who is not in the call is refused; a non-member does not see it.
    let mute = json!({"audioEnabled": false});
    t.refused(NOT_A_PARTICIPANT, |_| t.media(&carol, &call, &mute));
    t.refused(CALL_NOT_FOUND, |_| t.media(&dave, &call, &mute));
    let unknown = Uuid::new_v4().to_string();
    t.refused(CALL_NOT_FOUND, |_| t.media(&alice, &unknown, &mute));
    t.refused_naming(INVALID_FIELD, "callId", |_| {
        t.media(&alice, "not-a-call", &mute)
    });

    // Once the call is over, media is frozen.
    t.ok(&bob, &call, "reject");
    t.refused(INVALID_TRANSITION, |_| t.media(&alice, &call, &mute));
    assert_eq!(
        t.stored_media(&call, &alice),
        json!({"audioEnabled": true, "videoEnabled": false, "screenSharing": false})
    );
}

// =============================================================================================
// Authorization and visibility.

#[test]
fn only_members_see_calls_and_only_invitees_or_participants_act() {
    // Carol is a member of the conversation, through an earlier call; Dave is not.
    let (t, [alice, bob, carol, dave], conv, call) = call_beside_a_member();

    // Carol is a member of the conversation but not in this call: she sees it, acts on nothing.
    assert_eq!(t.get_call(&carol, &call)["id"], call.as_str());
    t.refuses(&carol, &call, ["answer", "reject"], NOT_INVITED);
    t.refuses(&carol, &call, ["end"], NOT_A_PARTICIPANT);

    // Dave is not a member: for him the call does not exist, exactly as an unknown one.
    let unknown = Uuid::new_v4().to_string();
    for id in [&call, &unknown] {
        t.refused(CALL_NOT_FOUND, |api| api.get_call(&dave, id));
        t.refuses(&dave, id, ["answer", "reject", "end"], CALL_NOT_FOUND);
    }
    t.refused(CALL_NOT_FOUND, |api| api.get_call(&alice, &unknown));
    t.refuses(
        &alice,
        &unknown,
        ["answer", "reject", "end"],
        CALL_NOT_FOUND,
    );
    t.refused_naming(INVALID_FIELD, "callId", |api| api.get_call(&alice, "nope"));

    // A non-member cannot start a call in an existing conversation.
    t.refused(CONVERSATION_NOT_FOUND, |_| {
        t.try_initiate(&dave, conv, "audio", &[&alice])
    });

    // The initiator is not invited; the invitee has not joined yet.
    t.refuses(&alice, &call, ["answer", "reject"], NOT_INVITED);
    t.refuses(&bob, &call, ["end"], INVALID_TRANSITION);
    t.ok(&bob, &call, "answer");
    t.refuses(&bob, &call, ["answer", "reject"], INVALID_TRANSITION);
    t.refuses(&carol, &call, ["end"], NOT_A_PARTICIPANT);
    assert_eq!(t.call_row(&call)["status"], "active");
    t.ok(&bob, &call, "end");
}

#[test]
fn missing_expired_and_forged_tokens_are_401_and_change_nothing() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (t, [alice, bob], conv, call) = alice_calls_bob("audio");

    let now = Timestamp::now();
    let mint = |secret: &str, issued: Timestamp, ttl: u64| {
        let ttl = Duration::from_secs(ttl);
        switchboard_signaling::auth::mint(secret, alice.id, Some("Alice"), None, issued, ttl)
    };
    let expired = mint(JWT_SECRET, now - Duration::from_secs(7200), 60);
    let forged = mint("not-the-daemon-secret", now, 3600);
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

    let bad: Vec<(Option<&str>, Refusal)> = vec![
        (None, MISSING_TOKEN),
        (Some(&expired), TOKEN_EXPIRED),
        (Some(&forged), INVALID_TOKEN),
        (Some(&alg_none), INVALID_TOKEN),
        (Some(&tampered), INVALID_TOKEN),
        (Some("not.a.jwt"), INVALID_TOKEN),
        (Some(ADMIN_TOKEN), INVALID_TOKEN),
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
    for (token, refusal) in &bad {
        for (method, path, body) in &requests {
            t.refused(*refusal, |api| api.send(method, path, *token, *body));
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
        assert_eq!((s, error_code(&body)), MISSING_TOKEN, "{auth}: {body}");
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
    let [alice, bob] = t.people(["Alice", "Bob"]);
    let conv = Uuid::new_v4().to_string();
    let bob_id = bob.uid();
    let post = |api: &Api, body: &[u8]| {
        api.send(
            "POST",
            "/api/calls/initiate",
            Some(&alice.token),
            Some(body),
        )
    };

    let audio_to =
        |ids: Value| json!({"conversationId": conv, "type": "audio", "participantIds": ids});

    // Not JSON: every cut of a good body (the empty one too), and a good body made bad by
    // what is around it or by how it is written.
    let good = audio_to(json!([bob_id])).to_string();
    let mut not_json: Vec<Vec<u8>> = (0..good.len())
        .map(|n| good.as_bytes()[..n].to_vec())
        .collect();
    not_json.push(format!("{good} trailing").into_bytes());
    not_json.push(
        good.replace("\"conversationId\"", "conversationId")
            .into_bytes(),
    );
    not_json.push([b"\xff\xfe".as_slice(), good.as_bytes()].concat());
    not_json.push(b"   ".to_vec());
    for bad in &not_json {
        let body = t.refused(INVALID_JSON, |api| post(api, bad));
        assert!(
            !message(&body).is_empty(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let cases: Vec<(Value, &str)> = vec![
        (audio_to(json!(["not-a-uuid"])), "participantIds[0]"),
        (audio_to(json!([bob_id, 7])), "participantIds[1]"),
        (audio_to(json!(bob_id)), "participantIds"),
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
        let body = t.refused_naming(INVALID_FIELD, &format!("{field}:"), |api| {
            post(api, bad.to_string().as_bytes())
        });
        if field == "body" {
            let m = message(&body);
            assert!(
                m.contains("participantIds") || m.contains("conversationId"),
                "the message says what is wrong: {m}"
            );
        }
    }
    assert_eq!(t.count("SELECT * FROM calls", &[]), 0);
}

/// The bodies are JSON objects (the spec's, and openapi.json's `"type": "object"`): an array
/// that lists the fields in order is a wrong type, not a positional form of the object.
#[test]
fn request_bodies_must_be_json_objects() {
    let (t, [alice, bob], conv, call) = alice_calls_bob("audio");
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
        if s != INVALID_FIELD.0 || error_code(&answer) != INVALID_FIELD.1 {
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
    let [alice, bob, carol, dave] = t.people(["Alice", "Bob", "Carol", "Dave"]);
    let conv = Uuid::new_v4();

    // Four with the caller, at most three per call.
    let body = t.refused_naming(TOO_MANY_PARTICIPANTS, "participantIds", |_| {
        t.try_initiate(&alice, conv, "video", &[&bob, &carol, &dave])
    });
    assert!(
        message(&body).contains('3') && message(&body).contains('4'),
        "{body}"
    );

    // Nobody, or only oneself (the caller listed is ignored): nobody to call. The nil UUID is
    // nobody either.
    for to in [&[][..], &[&alice], &[&alice, &alice]] {
        t.refused(NO_PARTICIPANTS, |_| {
            t.try_initiate(&alice, conv, "audio", to)
        });
    }
    let to_nil = json!({"conversationId": conv, "participantIds": [bob.id, Uuid::nil()]});
    t.refused_naming(INVALID_FIELD, "participantIds[1]", |api| {
        api.post_initiate(&alice.token, &to_nil)
    });
    assert_eq!(t.count("SELECT * FROM conversations", &[]), 0);

    // Exactly the maximum is fine; duplicates, and the caller among the invitees (inviting
    // every member is a normal client pattern), count once.
    let (s, body) = t.try_initiate(&alice, conv, "video", &[&alice, &bob, &carol, &alice]);
    assert_eq!(s, 201, "{body}");
    let call = call_id_of(&body).to_owned();
    let invitees = common::each(&body["participants"], "userId");
    assert_eq!(invitees, [&json!(bob.uid()), &json!(carol.uid())], "{body}");
    assert_eq!(t.participants(&call).len(), 3);
    t.assert_statuses(
        &call,
        &[&alice, &bob, &carol],
        &["joined", "invited", "invited"],
    );
    let (s, body) = t.try_initiate(&alice, conv, "audio", &[&bob, &bob, &carol]);
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["participants"].as_array().unwrap().len(), 2);
    assert_eq!(t.participants(call_id_of(&body)).len(), 3);
}

#[test]
fn bodies_over_64_kib_are_413() {
    let (t, [alice, bob], conv, call) = alice_calls_bob("audio");
    // Valid JSON padded with spaces to `len` bytes: only the size can be wrong.
    let pad = |json: Value, len: usize| -> Vec<u8> {
        let mut s = json.to_string();
        s.pop();
        s.push_str(&" ".repeat(len - 1 - s.len()));
        s.push('}');
        assert_eq!(s.len(), len);
        assert!(serde_json::from_str::<Value>(&s).is_ok());
        s.into_bytes()
    };
    let initiate = json!({"conversationId": conv, "type": "audio", "participantIds": [bob.id]});
    let big_initiate = pad(initiate.clone(), 70 * 1024 + 1);
    let big_media = pad(json!({"audioEnabled": false}), 70 * 1024 + 1);

    // With a Content-Length.
    let media_path = format!("/api/calls/{call}/media");
    for (method, path, body) in [
        ("POST", "/api/calls/initiate", &big_initiate),
        ("PATCH", &media_path, &big_media),
    ] {
        t.refused(BODY_TOO_LARGE, |api| {
            api.send(method, path, Some(&alice.token), Some(body))
        });
    }

    // Chunked, without a length: cut off at the limit all the same.
    let mut chunked = Vec::new();
    for chunk in big_initiate.chunks(8 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    t.refused(BODY_TOO_LARGE, |_| {
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
    assert_eq!(t.count("SELECT * FROM calls", &[]), 1);

    // Just under the limit is read (and this one is a good request).
    let just_under = pad(initiate, 64 * 1024);
    let (status, body) = t.api.send(
        "POST",
        "/api/calls/initiate",
        Some(&alice.token),
        Some(&just_under),
    );
    assert_eq!(status, 201, "{body}");
}

#[test]
fn wrong_methods_are_405() {
    let (t, [alice, _], _, call) = alice_calls_bob("audio");
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
        t.refused(METHOD_NOT_ALLOWED, |api| {
            api.send(method, &path, Some(&alice.token), None)
        });
    }
    t.refused(ROUTE_NOT_FOUND, |api| {
        api.get("/api/calls/a/b/c", &alice.token)
    });
    assert_eq!(t.call_row(&call)["status"], "initiated");
}

// =============================================================================================
// Admin provisioning and closed conversations.

#[test]
fn admin_endpoints_provision_users_and_conversations() {
    let t = T::closed();
    let [alice, bob, carol] = t.provisioned(["Alice", "Bob", "Carol"]);
    let admin = |method: &str, path: &str, body: Option<Value>| -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        let body = body.as_deref().map(str::as_bytes);
        t.api.send(method, path, Some(ADMIN_TOKEN), body)
    };
    let users: Vec<Value> = t.rows("SELECT name, email FROM users ORDER BY name", &[]);
    let want = [
        json!({"name": "Alice", "email": "alice@example.com"}),
        json!({"name": "Bob", "email": "bob@example.com"}),
        json!({"name": "Carol", "email": "carol@example.com"}),
    ];
    assert_eq!(users, want);
    // A second PUT renames.
    let carol_path = format!("/api/admin/users/{}", carol.id);
    let renamed = json!({"name": "Caroline", "email": "carol@example.com"});
    let (s, body) = admin("PUT", &carol_path, Some(renamed));
    assert_eq!(
        (s, &body["user"]["name"]),
        (200, &json!("Caroline")),
        "{body}"
    );
    assert_eq!(t.user_row(&carol.uid()).unwrap()["name"], "Caroline");

    let conv = Uuid::new_v4();
    let path = format!("/api/admin/conversations/{conv}");
    let team = json!({"name": "Team", "memberIds": [alice.id, bob.id]});
    let (s, body) = t.put_conversation(conv, &team);
    assert_eq!(s, 200, "{body}");
    let conversation = &body["conversation"];
    assert_fields(conversation, &json!({"id": conv, "name": "Team"}));
    let members = |body: &Value| -> Vec<Value> {
        body["conversation"]["members"].as_array().unwrap().clone()
    };
    let ids = |body: &Value| -> BTreeSet<String> {
        members(body)
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&body), BTreeSet::from([alice.uid(), bob.uid()]));
    let bob_view = members(&body)
        .into_iter()
        .find(|m| m["id"] == bob.uid())
        .unwrap();
    assert_eq!(
        bob_view,
        json!({"id": bob.uid(), "name": "Bob", "email": "bob@example.com"})
    );
    assert_eq!(t.members(conv), BTreeSet::from([alice.uid(), bob.uid()]));
    let sql = "SELECT name FROM conversations WHERE id = ?1";
    assert_eq!(t.rows(sql, &[&conv.to_string()])[0]["name"], "Team");
    let (s, got) = admin("GET", &path, None);
    assert_eq!((s, &got), (200, &body));

    // A second PUT replaces the members; a member not known yet becomes a user; the name stays.
    let dave = Person::new("Dave");
    let members = json!({"memberIds": [alice.id, carol.id, dave.id]});
    let (s, body) = t.put_conversation(conv, &members);
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["conversation"]["name"], "Team");
    let want = BTreeSet::from([alice.uid(), carol.uid(), dave.uid()]);
    assert_eq!(ids(&body), want);
    assert_eq!(t.members(conv), want);
    let (_, got) = admin("GET", &path, None);
    assert_eq!(ids(&got), want);
    let dave_row = t.user_row(&dave.uid()).expect("Dave is a user");
    assert_eq!(dave_row, json!({"name": null, "email": null}));
    // Bob is still a user, just not a member.
    assert!(t.user_row(&bob.uid()).is_some());

    // Refusals, with nothing changed.
    t.refused_naming(INVALID_FIELD, "memberIds[1]", |_| {
        admin("PUT", &path, Some(json!({"memberIds": [alice.id, "nope"]})))
    });
    t.refused(INVALID_FIELD, |_| {
        admin("PUT", &path, Some(json!({"name": "x"})))
    });
    t.refused(INVALID_JSON, |api| {
        api.send("PUT", &path, Some(ADMIN_TOKEN), Some(b"{\"memberIds\": ["))
    });
    t.refused_naming(INVALID_FIELD, "userId", |_| {
        admin("PUT", "/api/admin/users/alice", Some(json!({"name": "A"})))
    });
    let alice_path = format!("/api/admin/users/{}", alice.id);
    t.refused_naming(INVALID_FIELD, "name", |_| {
        admin("PUT", &alice_path, Some(json!({"name": 5})))
    });
    let nowhere = format!("/api/admin/conversations/{}", Uuid::new_v4());
    t.refused(CONVERSATION_NOT_FOUND, |_| admin("GET", &nowhere, None));

    // The admin token is for the admin endpoints only, and only it opens them.
    let user_put = json!({"name": "Mallory"}).to_string();
    let conv_put = json!({"memberIds": [alice.id]}).to_string();
    for (method, path, body) in [
        ("PUT", alice_path.clone(), Some(user_put.as_bytes())),
        ("PUT", path.clone(), Some(conv_put.as_bytes())),
        ("GET", path.clone(), None),
    ] {
        for (bearer, refusal) in [
            (Some(alice.token.as_str()), INVALID_TOKEN),
            (None, MISSING_TOKEN),
            (Some("integration-test-admin-token-01234S"), INVALID_TOKEN),
        ] {
            t.refused(refusal, |api| api.send(method, &path, bearer, body));
        }
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
        t.refused(INVALID_TOKEN, |api| {
            api.send(method, &path, Some(ADMIN_TOKEN), body)
        });
    }
}

#[test]
fn closed_conversations_need_provisioned_members() {
    let t = T::closed();
    let [alice, bob, carol] = t.provisioned(["Alice", "Bob", "Carol"]);
    let conv = Uuid::new_v4();
    let set_members = |members: &[&Person]| {
        let ids: Vec<Uuid> = members.iter().map(|p| p.id).collect();
        let (s, b) = t.put_conversation(conv, &json!({"memberIds": ids}));
        assert_eq!(s, 200, "{b}");
    };
    set_members(&[&alice, &bob]);

    // Unknown conversations are not created on first use.
    let nowhere = Uuid::new_v4();
    t.refused(CONVERSATION_NOT_FOUND, |_| {
        t.try_initiate(&alice, nowhere, "audio", &[&bob])
    });
    // Carol is a user but not a member: she cannot start a call there, nor be invited.
    t.refused(CONVERSATION_NOT_FOUND, |_| {
        t.try_initiate(&carol, conv, "audio", &[&alice])
    });
    let body = t.refused(NOT_A_MEMBER, |_| {
        t.try_initiate(&alice, conv, "audio", &[&bob, &carol])
    });
    assert!(message(&body).contains(&carol.uid()), "{body}");
    // A user switchboard has never seen is an outsider like Carol.
    let ghost = Uuid::new_v4();
    let to_ghost = json!({"conversationId": conv, "type": "audio", "participantIds": [ghost]});
    let body = t.refused(NOT_A_MEMBER, |api| {
        api.post_initiate(&alice.token, &to_ghost)
    });
    assert!(message(&body).contains(&ghost.to_string()), "{body}");

    // Members call each other; the provisioned names are the spec's userName/userIdentifier.
    let (s, body) = t.try_initiate(&alice, conv, "video", &[&bob]);
    assert_eq!(s, 201, "{body}");
    let call = call_id_of(&body).to_owned();
    let bob_named = json!({"userName": "Bob", "userIdentifier": "bob@example.com"});
    assert_fields(&body["participants"][0], &bob_named);
    assert_eq!(t.members(conv), BTreeSet::from([alice.uid(), bob.uid()]));

    // The call and the conversation's history are invisible to Carol.
    t.refused(CALL_NOT_FOUND, |api| api.get_call(&carol, &call));
    t.refuses(&carol, &call, ["answer"], CALL_NOT_FOUND);
    t.refused(CONVERSATION_NOT_FOUND, |api| {
        api.get(&format!("/api/calls?conversationId={conv}"), &carol.token)
    });
    let (s, body) = t.api.get("/api/calls", &carol.token);
    assert_eq!((s, &body["calls"]), (200, &json!([])), "{body}");

    let body = t.ok(&bob, &call, "answer");
    assert_eq!(body["status"], "active");

    // Membership decides visibility: replace Bob with Carol.
    set_members(&[&alice, &carol]);
    assert_eq!(t.get_call(&carol, &call)["status"], "active");
    t.refused(CALL_NOT_FOUND, |api| api.get_call(&bob, &call));
    t.refuses(&bob, &call, ["end"], CALL_NOT_FOUND);
    t.refuses(&carol, &call, ["end"], NOT_A_PARTICIPANT);
}

/// Open conversations are made by their first call, with its participants; after that their
/// members are fixed like any others': a member cannot invite an outsider in (not even into a
/// conversation the admin API provisioned), nor can an outsider call into it.
#[test]
fn open_conversations_are_open_only_to_their_first_call() {
    let t = T::start(Options::default());
    let [alice, bob, carol] = t.provisioned(["Alice", "Bob", "Carol"]);
    let conv = Uuid::new_v4();
    let (s, body) = t.try_initiate(&alice, conv, "audio", &[&bob]);
    assert_eq!(s, 201, "{body}");
    assert_eq!(t.members(conv), BTreeSet::from([alice.uid(), bob.uid()]));
    t.refused(NOT_A_MEMBER, |_| {
        t.try_initiate(&bob, conv, "audio", &[&carol])
    });
    t.refused(CONVERSATION_NOT_FOUND, |_| {
        t.try_initiate(&carol, conv, "audio", &[&alice])
    });
    // Provisioned by the admin: the same.
    let provisioned = Uuid::new_v4();
    let ids = [alice.id, bob.id];
    let (s, b) = t.put_conversation(provisioned, &json!({"memberIds": ids}));
    assert_eq!(s, 200, "{b}");
    t.refused(NOT_A_MEMBER, |_| {
        t.try_initiate(&bob, provisioned, "audio", &[&carol])
    });
    assert_eq!(
        t.members(provisioned),
        BTreeSet::from([alice.uid(), bob.uid()])
    );
}

// =============================================================================================
// Invitees switchboard has not seen yet.

/// A chat app's members exist in the chat app: in a new open conversation any UUID is a user
/// (recorded bare, in the same transaction as the call); their first token names them. In a
/// provisioned conversation every member is, named or not.
#[test]
fn invitees_never_seen_are_called_and_named_by_their_first_token() {
    let t = T::start(Options::default());
    let [alice, bob] = t.people(["Alice", "Bob"]);
    let zed = Person::new("Zed");
    let conv = Uuid::new_v4();
    let (s, body) = t.try_initiate(&alice, conv, "video", &[&bob, &zed]);
    assert_eq!(s, 201, "{body}");
    let call = call_id_of(&body).to_owned();
    let bare = json!({"userId": zed.uid(), "userName": null, "userIdentifier": null,
                      "status": "invited"});
    common::assert_fields(&body["participants"][1], &bare);
    assert_eq!(
        t.user_row(&zed.uid()),
        Some(json!({"name": null, "email": null}))
    );
    assert_eq!(
        t.members(conv),
        BTreeSet::from([alice.uid(), bob.uid(), zed.uid()])
    );
    t.assert_statuses(
        &call,
        &[&alice, &bob, &zed],
        &["joined", "invited", "invited"],
    );

    // Zed's first request names him; the call shows it.
    let seen = t.get_call(&zed, &call);
    let named = json!({"userId": zed.uid(), "userName": "Zed",
                       "userIdentifier": "zed@example.com"});
    common::assert_fields(&seen["participants"][2], &named);
    assert_eq!(t.ok(&zed, &call, "answer")["status"], "active");

    // A provisioned conversation: a member the admin API named by id only is called too.
    let yan = Person::new("Yan");
    let provisioned = Uuid::new_v4();
    let (s, b) = t.put_conversation(provisioned, &json!({"memberIds": [alice.id, yan.id]}));
    assert_eq!(s, 200, "{b}");
    let (s, body) = t.try_initiate(&alice, provisioned, "audio", &[&yan]);
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["participants"][0]["userName"], Value::Null, "{body}");

    // A refused call leaves no bare user behind.
    let xi = Uuid::new_v4();
    let too_many: Vec<Uuid> = (0..30).map(|_| Uuid::new_v4()).collect();
    t.refused(TOO_MANY_PARTICIPANTS, |api| {
        api.post_initiate(
            &alice.token,
            &json!({"conversationId": Uuid::new_v4(),
                                                "participantIds": too_many}),
        )
    });
    let into_provisioned = json!({"conversationId": provisioned, "participantIds": [xi]});
    t.refused(NOT_A_MEMBER, |api| {
        api.post_initiate(&alice.token, &into_provisioned)
    });
    assert_eq!(t.user_row(&xi.to_string()), None);
}

/// An invitee who never connects misses the call when the ring timeout fires, like anyone
/// else; the call is in their history (they are a member of its conversation), `missed`.
#[test]
fn an_invitee_who_never_connects_misses_the_call_and_finds_it_in_their_history() {
    let t = T::calls("ring_timeout = \"1s\"");
    let [alice] = t.people(["Alice"]);
    let zed = Person::new("Zed");
    let conv = Uuid::new_v4();
    let call = t.initiate(&alice, conv, "audio", &[&zed]);
    let over = || t.call_row(&call)["ended_at"].is_string();
    assert!(
        wait_until(Duration::from_secs(5), over),
        "not missed: {}",
        t.call_row(&call)
    );
    t.assert_over(&call, ("missed", "no-answer"), 0, &Value::Null);
    t.assert_statuses(&call, &[&alice, &zed], &["left", "missed"]);
    assert_eq!(
        t.user_row(&zed.uid()),
        Some(json!({"name": null, "email": null}))
    );

    // Zed signs in later: the call is in his history, missed, with his name now.
    let (s, history) = t.api.get("/api/calls", &zed.token);
    assert_eq!(s, 200, "{history}");
    let calls = history["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{history}");
    common::assert_fields(
        &calls[0],
        &json!({"id": call, "conversationId": conv, "status": "missed",
                "endReason": "no-answer", "initiatedBy": alice.uid(), "duration": 0}),
    );
    common::assert_fields(
        &calls[0]["participants"][1],
        &json!({"userId": zed.uid(), "userName": "Zed", "status": "missed",
                "joinedAt": null}),
    );
    t.refuses(&zed, &call, ["answer", "reject"], INVALID_TRANSITION);
}

// =============================================================================================
// Refused requests leave no trace, not even of the caller.

#[test]
fn a_refused_request_records_nothing_about_its_caller() {
    let (t, [alice, bob], _, call) = alice_calls_bob("audio");

    // A new user whose every request is refused is never stored.
    let eve = Person::new("Eve");
    t.refused(CALL_NOT_FOUND, |api| api.get_call(&eve, &call));
    t.refuses(&eve, &call, ["answer"], CALL_NOT_FOUND);
    let conv = t.get_call(&alice, &call)["conversationId"].clone();
    let into_theirs = json!({"conversationId": conv, "participantIds": [alice.id]});
    t.refused(CONVERSATION_NOT_FOUND, |api| {
        api.post_initiate(&eve.token, &into_theirs)
    });
    assert_eq!(t.user_row(&eve.uid()), None);

    // A known user's new name is not taken from a refused request, only from a good one.
    let renamed = token(bob.id, Some("Robert"), Some("robert@example.com"));
    t.refused(CALL_NOT_FOUND, |api| {
        api.post(&format!("/api/calls/{}/answer", Uuid::new_v4()), &renamed)
    });
    t.refused(INVALID_TRANSITION, |api| {
        api.post(&format!("/api/calls/{call}/end"), &renamed)
    });
    let al = token(alice.id, Some("Al"), None);
    t.refused(NOT_INVITED, |api| {
        api.post(&format!("/api/calls/{call}/answer"), &al)
    });
    let name = |u: &Person| t.user_row(&u.uid()).expect("a user");
    assert_eq!(name(&bob)["name"], "Bob");
    assert_eq!(name(&alice)["name"], "Alice");
    let (s, _) = t.api.post(&format!("/api/calls/{call}/answer"), &renamed);
    assert_eq!(s, 200);
    let robert = json!({"name": "Robert", "email": "robert@example.com"});
    assert_eq!(name(&bob), robert);
    assert_eq!(
        t.get_call(&alice, &call)["participants"][1]["userName"],
        "Robert"
    );
}

#[test]
fn bad_input_is_never_a_500() {
    let (t, [alice, bob], _, call) = alice_calls_bob("audio");
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
    let media_path = format!("/api/calls/{call}/media");
    for body in &bodies {
        for (method, path) in [("POST", "/api/calls/initiate"), ("PATCH", &media_path)] {
            let (s, b) = t.api.send(method, path, Some(&alice.token), Some(body));
            assert!(
                (400..500).contains(&s),
                "{method} {path} {:?} → {s} {b}",
                &body[..body.len().min(40)]
            );
            assert_error_shape(&b);
        }
    }
    for path in [
        "/api/calls/%00/answer",
        "/api/calls/%E2%82%AC",
        "/api/calls/..%2F..%2Fetc%2Fpasswd",
        "/api/calls/00000000-0000-0000-0000-000000000000",
        &long_path,
        "/api/calls?limit=-1",
        "/api/calls?limit=99999999999",
        "/api/calls?limit=abc",
        "/api/calls?limit=0",
        "/api/calls?before=yesterday",
        "/api/calls?before=",
        "/api/calls?conversationId=",
        "/api/calls?conversationId=%FF",
        "/api/calls?surprise=1",
        "/api/admin/conversations/nope",
    ] {
        let (s, b) = t.api.get(path, &alice.token);
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

/// The ids of the calls `who` sees in the history (`query` is `conversationId=…&` or empty),
/// walked `limit` at a time by `nextBefore`, checking each page.
#[track_caller]
fn walk_history(t: &T, who: &Person, query: &str, limit: usize) -> Vec<String> {
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
}

#[test]
fn history_is_newest_first_paged_by_next_before_and_members_only() {
    let t = T::start(Options::default());
    let [alice, bob, carol, dave] = t.people(["Alice", "Bob", "Carol", "Dave"]);
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
    let sql = "SELECT id FROM calls WHERE conversation_id = ?1 ORDER BY created_at DESC";
    let stored: Vec<String> = t
        .rows(sql, &[&conv.to_string()])
        .into_iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored, newest_first);

    // Walk the conversation two at a time.
    let walk = |who: &Person, query: &str, limit: usize| walk_history(&t, who, query, limit);
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
    let newest = json!({
        "id": made[4],
        "conversationId": conv,
        "initiatedBy": alice.uid(),
        "status": "ended",
        "endReason": "cancelled",
    });
    assert_fields(&body["calls"][0], &newest);

    // Non-members see nothing of it.
    let history_of = |conversation: Uuid, who: &Person| {
        let path = format!("/api/calls?conversationId={conversation}");
        t.api.get(&path, &who.token)
    };
    for who in [&carol, &dave] {
        t.refused(CONVERSATION_NOT_FOUND, |_| history_of(conv, who));
    }
    t.refused(CONVERSATION_NOT_FOUND, |_| {
        history_of(Uuid::new_v4(), &alice)
    });
    for (query, field) in [
        ("limit=0", "limit"),
        ("before=last-week", "before"),
        ("conversationId=general", "conversationId"),
        ("limit=many", "limit"),
        ("page=2", "page"),
    ] {
        t.refused_naming(INVALID_FIELD, field, |api| {
            api.get(&format!("/api/calls?{query}"), &alice.token)
        });
    }
}

// =============================================================================================
// TURN credentials.

#[test]
fn turn_credentials_are_recorded_and_accepted_by_the_relay() {
    let t = T::start(Options::default());
    let alice = Person::new("Alice");
    let start = unix_now();
    let (s, body) = t.api.get("/api/calls/turn-credentials", &alice.token);
    let end = unix_now();
    assert_eq!(s, 200, "{body}");

    // The spec's shape.
    assert_keys(&body, &["credentials", "expiresAt"]);
    assert_keys(&body["credentials"], &["credential", "urls", "username"]);
    let (urls, username, credential) = credentials_of(&body);
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
    let recorded = json!({"user_id": alice.uid(), "username": username, "credential": credential});
    assert_fields(row, &recorded);
    assert_eq!(ms(&row["expires_at"]), expiry * 1000);
    let created = ms(&row["created_at"]) / 1000;
    assert!((start..=end).contains(&created));
    // The caller is a user now (the foreign key).
    assert!(t.user_row(&alice.uid()).is_some());

    // The relay takes them.
    let ok = allocate(t.d.turn, &username, &credential);
    assert_eq!(code(&ok), 200, "an Allocate with the minted credentials");
    assert_eq!(relayed_of(&ok).ip(), "127.0.0.1".parse::<IpAddr>().unwrap());
    // Control: the same username with another password is refused.
    assert_eq!(
        code(&allocate(t.d.turn, &username, "Zm9yZ2VkIGNyZWRlbnRpYWw=")),
        401
    );

    // Never cached by HTTP; asked again while they are fresh, the same credentials come back
    // (recomputed from the secret), and no second row is recorded.
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
    assert_eq!(body["credentials"]["username"], username.as_str());
    assert_eq!(body["credentials"]["credential"], credential.as_str());
    assert_eq!(t.count("SELECT * FROM turn_credentials", &[]), 1);

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

/// `turn.rest_api_separator` is what the API mints with and what the relay splits at.
#[test]
fn turn_credentials_use_the_configured_separator() {
    let t = T::turn("rest_api_separator = \"_\"");
    let alice = Person::new("Alice");
    let (_, username, credential) = t.turn_credentials(&alice);
    let (expiry, user) = username.split_once('_').expect("expiry_user");
    assert!(expiry.parse::<u64>().is_ok(), "{username}");
    assert_eq!(user, alice.uid());
    assert_eq!(code(&allocate(t.d.turn, &username, &credential)), 200);
    // The same user's credentials with a colon, signed right, do not split there.
    let colon = format!("{expiry}:{user}");
    let signed = switchboard_turn::credentials::password_for(SECRET.as_bytes(), &colon);
    assert_eq!(code(&allocate(t.d.turn, &colon, &signed)), 401);
}

#[test]
fn turn_credentials_advertise_the_external_ip() {
    let t = T::turn("external_ip = \"203.0.113.7\"");
    let alice = Person::new("Alice");
    let (urls, username, credential) = t.turn_credentials(&alice);
    assert_eq!(urls.len(), 2, "{urls:?}");
    assert!(urls[0].starts_with("turn:203.0.113.7:") && urls[0].ends_with("?transport=udp"));
    assert!(urls[1].starts_with("turn:203.0.113.7:") && urls[1].ends_with("?transport=tcp"));
    let ok = allocate(t.d.turn, &username, &credential);
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
    let t = T::turn("credential_ttl = \"1s\"");
    let alice = Person::new("Alice");
    // Expiry is whole seconds (floor(now) + 1 s): ask just after a second begins, so that the
    // row lives long enough to be seen.
    let into_second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_millis();
    std::thread::sleep(Duration::from_millis(u64::from(1000 - into_second) + 10));
    let (_, username, credential) = t.turn_credentials(&alice);
    let expiry: u64 = username.split_once(':').unwrap().0.parse().unwrap();
    let rows = t.rows(
        "SELECT username, expires_at FROM turn_credentials WHERE username = ?1",
        &[&username],
    );
    assert_eq!(rows.len(), 1, "recorded");
    assert_eq!(ms(&rows[0]["expires_at"]), expiry * 1000);

    let gone = wait_until(Duration::from_secs(5), || {
        t.count("SELECT 1 FROM turn_credentials", &[]) == 0
    });
    assert!(gone, "the expired credential is still stored");
    assert!(now_ms() >= expiry * 1000, "deleted before it expired");

    // And the relay no longer takes it. Its clock is monotonic, anchored to the wall clock when
    // it started, so it may trail ours by a little: a second past the expiry, not a few ms.
    assert!(wait_until(Duration::from_secs(4), || unix_now() > expiry + 1));
    assert_eq!(code(&allocate(t.d.turn, &username, &credential)), 401);
}

// =============================================================================================
// The token CLI.

#[test]
fn token_cli_mints_tokens_the_daemon_accepts() {
    let t = T::start(Options::default());
    let config = t.d.dir.path().join("switchboard.toml");
    let [bob] = t.people(["Bob"]);
    let ada = Uuid::new_v4();
    let run = |args: &[&str], config: &std::path::Path| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        cmd.arg("token").args(args).arg("--config").arg(config);
        common::run_bounded(&mut cmd, Duration::from_secs(10))
    };
    let ada_id = ada.to_string();
    let args = [
        "--user",
        &ada_id,
        "--name",
        "Ada",
        "--email",
        "ada@example.com",
    ];
    let (status, out) = run(&args, &config);
    assert_eq!(status, Some(0), "{out}");
    let tok = out.trim().to_owned();
    assert_eq!(tok.lines().count(), 1, "one line: {out}");
    assert_eq!(tok.split('.').count(), 3, "a JWT: {out}");

    let (s, body) = t.api.get("/api/calls", &tok);
    assert_eq!(s, 200, "{body}");
    let ada_row = json!({"name": "Ada", "email": "ada@example.com"});
    assert_eq!(t.user_row(&ada_id), Some(ada_row));
    let to_bob =
        json!({"conversationId": Uuid::new_v4(), "type": "audio", "participantIds": [bob.id]});
    let (s, body) = t.api.post_initiate(&tok, &to_bob);
    assert_eq!(s, 201, "{body}");
    let view = t.get_call(&bob, call_id_of(&body));
    assert_eq!(view["initiatedBy"], ada_id);
    assert_eq!(view["participants"][0]["userName"], "Ada");

    // Bad arguments exit 2 and print no token.
    let nil = Uuid::nil().to_string();
    for args in [
        &["--user", "not-a-uuid"][..],
        &["--user", &nil],
        &["--user", &ada_id, "--ttl", "0s"],
    ] {
        let (status, out) = run(args, &config);
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
        text.replace(JWT_SECRET, "another-deployment-jwt-secret-0123456"),
    )
    .unwrap();
    let (status, out) = run(&["--user", &ada_id], &other_config);
    assert_eq!(status, Some(0), "{out}");
    t.refused(INVALID_TOKEN, |api| api.get("/api/calls", out.trim()));
}
