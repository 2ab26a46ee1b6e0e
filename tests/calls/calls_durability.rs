//! The call store's promises, tested through the real daemon and the real SQLite file:
//!
//! - **durability**: every transition the API acknowledged (a 2xx) is in the file after a
//!   SIGKILL, the file is intact, and nothing is half-written;
//! - **reconciliation**: a restart ends the calls a crash left live, with reason
//!   `server-restart`, and touches nothing else;
//! - **serialization**: concurrent transitions of one call (two answers, answer against end,
//!   reject against the ring timeout) end in one of the states a sequential order gives.
//!
//! The file is read with rusqlite directly (read-only), beside the daemon or after its death.
//! A SIGKILL loses the process, not the page cache: these tests prove that replies wait for
//! the commit, not that the disk honours fsync.
//!
//! HTTP goes through the tests' `Api`, whose `try_send_with` reports transport errors instead of
//! panicking: requests in flight when the daemon is killed fail, and that is expected.

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{assert_fields, error_code, field, open_store, query_rows};
use common::{Api, Daemon, Options, Person};
use rusqlite::Connection;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_signaling::time::Timestamp;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// The SQLite file, read directly.

const TABLES: [&str; 6] = [
    "users",
    "conversations",
    "conversation_members",
    "calls",
    "call_participants",
    "turn_credentials",
];
const LIVE: [&str; 3] = ["initiated", "ringing", "active"];
const DEFAULT_MEDIA: &str = r#"{"audioEnabled":true,"videoEnabled":true,"screenSharing":false}"#;

/// `PRAGMA integrity_check` says ok and `PRAGMA foreign_key_check` finds nothing.
fn assert_intact(conn: &Connection) {
    let integrity = query_rows(conn, "PRAGMA integrity_check", &[]);
    assert_eq!(
        integrity,
        [json!({"integrity_check": "ok"})],
        "integrity_check"
    );
    let bad = query_rows(conn, "PRAGMA foreign_key_check", &[]);
    assert!(bad.is_empty(), "foreign_key_check: {bad:?}");
}

fn counts(conn: &Connection) -> BTreeMap<&'static str, i64> {
    let tx = conn.unchecked_transaction().unwrap();
    TABLES
        .iter()
        .map(|t| {
            let n = tx
                .query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
                .unwrap();
            (*t, n)
        })
        .collect()
}

/// A `calls` row (the columns' names, but for `type` and `duration_seconds`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
struct DbCall {
    id: String,
    conversation_id: String,
    #[serde(rename = "type")]
    kind: String,
    status: String,
    initiated_by: String,
    started_at: Option<String>,
    ended_at: Option<String>,
    #[serde(rename = "duration_seconds")]
    duration: Option<i64>,
    end_reason: Option<String>,
    sfu_room_id: Option<String>,
    recording_url: Option<String>,
    quality_stats: Option<String>,
    created_at: String,
    updated_at: String,
    /// The initiator first, then in insertion order (as the API lists them).
    #[serde(default)]
    participants: Vec<DbParticipant>,
}

/// A `call_participants` row with its user's name and email.
#[derive(Clone, Debug, PartialEq, Deserialize)]
struct DbParticipant {
    id: String,
    user_id: String,
    status: String,
    joined_at: Option<String>,
    left_at: Option<String>,
    ice_candidates: Option<String>,
    media_state: String,
    media_stats: Option<String>,
    connection_quality: Option<String>,
    created_at: String,
    updated_at: String,
    name: Option<String>,
    email: Option<String>,
}

impl DbCall {
    fn is_live(&self) -> bool {
        LIVE.contains(&self.status.as_str())
    }

    fn participant(&self, user: Uuid) -> &DbParticipant {
        let user = user.to_string();
        self.participants
            .iter()
            .find(|p| p.user_id == user)
            .unwrap_or_else(|| panic!("{user} is not in call {self:#?}"))
    }

    /// The call as `GET /api/calls/{id}` shows it.
    fn view(&self) -> Value {
        let parse = |s: &str| serde_json::from_str::<Value>(s).expect("stored JSON");
        json!({
            "id": self.id,
            "conversationId": self.conversation_id,
            "type": self.kind,
            "status": self.status,
            "initiatedBy": self.initiated_by,
            "startedAt": self.started_at,
            "endedAt": self.ended_at,
            "duration": self.duration,
            "endReason": self.end_reason,
            "sfuRoomId": self.sfu_room_id,
            "qualityStats": self.quality_stats.as_deref().map(parse),
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "participants": self.participants.iter().map(|p| json!({
                "userId": p.user_id,
                "userName": p.name,
                "userIdentifier": p.email,
                "status": p.status,
                "joinedAt": p.joined_at,
                "leftAt": p.left_at,
                "mediaState": parse(&p.media_state),
                "connectionQuality": p.connection_quality,
            })).collect::<Vec<_>>(),
        })
    }
}

/// A row as `T`, by its columns' names.
fn from_row<T: DeserializeOwned>(row: Value) -> T {
    serde_json::from_value(row.clone()).unwrap_or_else(|e| panic!("{e}: {row}"))
}

/// Every call with its participants, read in one transaction.
fn db_calls(conn: &Connection) -> BTreeMap<String, DbCall> {
    let tx = conn.unchecked_transaction().unwrap();
    let calls_sql = "SELECT id, conversation_id, type, status, initiated_by, started_at, ended_at,
           duration_seconds, end_reason, sfu_room_id, recording_url, quality_stats,
           created_at, updated_at
         FROM calls";
    let mut calls: BTreeMap<String, DbCall> = query_rows(&tx, calls_sql, &[])
        .into_iter()
        .map(|row| {
            let call: DbCall = from_row(row);
            (call.id.clone(), call)
        })
        .collect();
    let participants_sql = "SELECT p.call_id, p.id, p.user_id, p.status, p.joined_at, p.left_at,
           p.ice_candidates, p.media_state, p.media_stats, p.connection_quality,
           p.created_at, p.updated_at, u.name, u.email
         FROM call_participants p LEFT JOIN users u ON u.id = p.user_id
         ORDER BY p.rowid";
    for row in query_rows(&tx, participants_sql, &[]) {
        let call = row["call_id"].as_str().expect("call_id").to_owned();
        let p: DbParticipant = from_row(row);
        calls
            .get_mut(&call)
            .unwrap_or_else(|| panic!("participant {p:?} of a call that is not there"))
            .participants
            .push(p);
    }
    for c in calls.values_mut() {
        let by = c.initiated_by.clone();
        c.participants.sort_by_key(|p| p.user_id != by);
    }
    calls
}

fn ms(t: &str) -> u64 {
    Timestamp::parse(t)
        .unwrap_or_else(|| panic!("`{t}` is not a time"))
        .unix_millis()
}

fn media(m: &str) -> Value {
    serde_json::from_str(m).unwrap_or_else(|e| panic!("media_state `{m}`: {e}"))
}

/// The rules a stored call obeys whatever happened to it (the state machine's module doc and
/// the schema's CHECKs, read together): nothing half-written, nothing contradictory.
fn assert_consistent(c: &DbCall) {
    let fail = |why: &str| -> ! { panic!("inconsistent call: {why}: {c:#?}") };
    let live = c.is_live();
    const STATUSES: [&str; 7] = [
        "initiated",
        "ringing",
        "active",
        "ended",
        "missed",
        "rejected",
        "failed",
    ];
    if !STATUSES.contains(&c.status.as_str()) {
        fail("unknown status");
    }
    if live != c.ended_at.is_none()
        || live != c.duration.is_none()
        || live != c.end_reason.is_none()
    {
        fail("a live call has an end, or a finished one lacks one");
    }
    if c.status == "active" && c.started_at.is_none() {
        fail("active without started_at");
    }
    if matches!(c.status.as_str(), "initiated" | "ringing") && c.started_at.is_some() {
        fail("not yet active but started");
    }
    // A group call on the SFU names its room, its own id; nothing writes recording_url.
    if c.sfu_room_id.as_ref().is_some_and(|r| *r != c.id) {
        fail("sfu_room_id is not the call's id");
    }
    if c.recording_url.is_some() {
        fail("recording_url written");
    }
    if c.updated_at < c.created_at {
        fail("updated before created");
    }
    if c.participants.len() < 2 {
        fail("fewer than two participants");
    }
    let users: BTreeSet<&str> = c.participants.iter().map(|p| p.user_id.as_str()).collect();
    if users.len() != c.participants.len() {
        fail("a user twice");
    }
    let initiator = &c.participants[0];
    if initiator.user_id != c.initiated_by {
        fail("the initiator is not a participant");
    }
    if initiator.joined_at.as_deref() != Some(c.created_at.as_str()) {
        fail("the initiator did not join at creation");
    }
    if !matches!(initiator.status.as_str(), "joined" | "left") {
        fail("the initiator is neither joined nor left");
    }
    for p in &c.participants {
        if p.created_at != c.created_at {
            fail("participant created apart from its call");
        }
        if p.updated_at < p.created_at {
            fail("participant updated before created");
        }
        if p.ice_candidates.is_some() || p.media_stats.is_some() {
            fail("ice_candidates / media_stats written");
        }
        let m = media(&p.media_state);
        for k in ["audioEnabled", "videoEnabled", "screenSharing"] {
            if !m[k].is_boolean() {
                fail("media_state lacks a flag");
            }
        }
        match p.status.as_str() {
            "joined" => {
                if p.joined_at.is_none() || p.left_at.is_some() {
                    fail("joined without joined_at, or with left_at");
                }
                if !live {
                    fail("joined in a finished call");
                }
            }
            "left" => match (&p.joined_at, &p.left_at) {
                (Some(j), Some(l)) if j <= l => {}
                _ => fail("left without joined_at <= left_at"),
            },
            "invited" | "ringing" => {
                if p.joined_at.is_some() || p.left_at.is_some() {
                    fail("pending but has joined or left");
                }
                if !live {
                    fail("pending in a finished call");
                }
            }
            "rejected" | "missed" => {
                if p.joined_at.is_some() || p.left_at.is_some() {
                    fail("rejected/missed but has joined or left");
                }
            }
            _ => fail("unknown participant status"),
        }
        if let (Some(l), Some(e)) = (&p.left_at, &c.ended_at) {
            if l > e {
                fail("left after the call ended");
            }
        }
    }
    if live && !c.participants.iter().any(|p| p.status == "joined") {
        fail("live with nobody joined");
    }
    // Only an answer starts a call, and it starts it at the first answer.
    let first_join = c.participants[1..]
        .iter()
        .filter_map(|p| p.joined_at.as_deref())
        .min();
    match (&c.started_at, first_join) {
        (None, None) => {}
        (Some(s), Some(j)) if s.as_str() <= j => {}
        _ => fail("started_at does not match the invitees' answers"),
    }
    if let Some(e) = &c.ended_at {
        if &c.updated_at != e {
            fail("changed after it ended");
        }
        let expect = c
            .started_at
            .as_deref()
            .map_or(0, |s| (ms(e) - ms(s)) / 1000);
        if c.duration != Some(expect as i64) {
            fail("duration is not ended_at - started_at");
        }
        let reason = c.end_reason.as_deref().unwrap_or("");
        let ok = match c.status.as_str() {
            "ended" => match reason {
                "ended-by-user" => c.started_at.is_some(),
                "cancelled" => c.started_at.is_none(),
                "server-restart" | "server-shutdown" => true,
                _ => false,
            },
            "missed" => reason == "no-answer" && c.started_at.is_none(),
            "rejected" => reason == "rejected" && c.started_at.is_none(),
            _ => false,
        };
        if !ok {
            fail("end_reason does not fit the status");
        }
    }
}

/// What a restart did to a call that was live when the daemon died: ended `server-restart`
/// after `killed_at`, joined participants left then, pending ones missed, nothing else changed.
fn assert_reconciled(before: &DbCall, after: &DbCall, killed_at: u64) {
    assert_consistent(after);
    let ctx = || format!("before: {before:#?}\nafter: {after:#?}");
    assert_eq!(after.status, "ended", "{}", ctx());
    assert_eq!(
        after.end_reason.as_deref(),
        Some("server-restart"),
        "{}",
        ctx()
    );
    let ended = after.ended_at.as_deref().expect("ended_at");
    assert!(ms(ended) >= killed_at, "ended before the kill: {}", ctx());
    assert!(ended >= before.updated_at.as_str(), "{}", ctx());
    let expect = before
        .started_at
        .as_deref()
        .map_or(0, |s| (ms(ended) - ms(s)) / 1000);
    assert_eq!(after.duration, Some(expect as i64), "{}", ctx());
    let unchanged = DbCall {
        status: before.status.clone(),
        ended_at: None,
        duration: None,
        end_reason: None,
        updated_at: before.updated_at.clone(),
        participants: before.participants.clone(),
        quality_stats: before.quality_stats.clone(),
        ..after.clone()
    };
    assert_eq!(&unchanged, before, "only the end may change");
    // An answered call's end sums up its quality: nobody reported here, and the relay's
    // counters from before the restart are gone.
    match (&before.started_at, &after.quality_stats) {
        (None, None) => {}
        (Some(_), Some(q)) => {
            let q: serde_json::Value = serde_json::from_str(q).expect("quality_stats is JSON");
            assert_eq!(q["quality"], serde_json::Value::Null, "{q}");
            assert_eq!(q["relayBytes"], 0, "{q}");
            let people = q["participants"].as_array().expect("participants");
            assert_eq!(people.len(), before.participants.len(), "{q}");
            assert!(
                people
                    .iter()
                    .all(|p| p["reports"] == 0 && p["relay"].is_null()),
                "{q}"
            );
        }
        (started, q) => panic!("started {started:?} but quality_stats {q:?}: {}", ctx()),
    }
    assert_eq!(after.participants.len(), before.participants.len());
    for (b, a) in before.participants.iter().zip(&after.participants) {
        let mut expect = b.clone();
        match b.status.as_str() {
            "joined" => {
                expect.status = "left".into();
                expect.left_at = Some(ended.to_owned());
                expect.updated_at = ended.to_owned();
            }
            "invited" | "ringing" => {
                expect.status = "missed".into();
                expect.updated_at = ended.to_owned();
            }
            _ => {}
        }
        assert_eq!(a, &expect, "{}", ctx());
    }
}

/// The log line of the restart reconciliation, and how many calls it ended.
fn reconciled_in_log(daemon: &Daemon) -> Option<usize> {
    let line = daemon
        .log()
        .into_iter()
        .find(|l| l.contains("server-restart") && l.contains("ended"))?;
    Some(
        field(&line, "calls")
            .unwrap_or_else(|| panic!("no calls= in {line}"))
            .parse()
            .unwrap(),
    )
}

// ---------------------------------------------------------------------------------------------
// 1. A SIGKILL in the middle of calls.

#[test]
fn sigkill_mid_call_ends_it_server_restart_with_no_lost_rows() {
    let t0 = Instant::now();
    let daemon = Daemon::start_with(Options::default());
    let api = daemon.api();
    let [ada, bob, cy, dee] = ["Ada", "Bob", "Cy", "Dee"].map(|n| api.person(n));
    let [conv_ab, conv_abc, conv_all, conv_ac] = [(); 4].map(|()| Uuid::new_v4());
    let mut live = Vec::new();
    let mut finished = Vec::new();
    // Who may see each call (any member of its conversation): its initiator.
    let mut seer: HashMap<String, Person> = HashMap::new();

    // An active 1:1 call, both with media changed.
    let (s, created) = api.initiate(&ada, conv_ab, "video", &[&bob]);
    assert_eq!(s, 201, "{created}");
    let active_1to1 = created["callId"].as_str().expect("callId").to_owned();
    assert_eq!(created["status"], "initiated", "{created}");
    assert_eq!(created["participants"][0]["status"], "invited", "{created}");
    let b = api.act_ok(&bob, &active_1to1, "answer");
    assert_eq!(b["status"], "active", "{b}");
    assert!(b["startedAt"].is_string(), "{b}");
    let b = api.media_ok(&ada, &active_1to1, &json!({ "audioEnabled": false }));
    assert_eq!(
        b["mediaState"],
        json!({ "audioEnabled": false, "videoEnabled": true, "screenSharing": false })
    );
    let both = json!({ "videoEnabled": false, "screenSharing": true });
    api.media_ok(&bob, &active_1to1, &both);
    live.push(active_1to1.clone());
    seer.insert(active_1to1, ada.clone());

    // A group call nobody answered yet; an invitee muted before answering.
    let ringing_group = api.start_call(&ada, conv_abc, "audio", &[&bob, &cy]);
    api.media_ok(&cy, &ringing_group, &json!({ "audioEnabled": false }));
    live.push(ringing_group.clone());
    seer.insert(ringing_group, ada.clone());

    // An active group call: one answered, one rejected, one still invited.
    let mixed_group = api.start_call(&dee, conv_all, "video", &[&ada, &bob, &cy]);
    let b = api.act_ok(&bob, &mixed_group, "answer");
    assert_eq!(b["status"], "active", "{b}");
    let b = api.act_ok(&cy, &mixed_group, "reject");
    assert_fields(&b, &json!({"status": "rejected", "callStatus": "active"}));
    live.push(mixed_group.clone());
    seer.insert(mixed_group, dee.clone());

    // An active group call its initiator left: it goes on between the two who answered.
    let left_group = api.start_call(&dee, conv_all, "audio", &[&ada, &bob, &cy]);
    for p in [&ada, &bob] {
        api.act_ok(p, &left_group, "answer");
    }
    let b = api.act_ok(&dee, &left_group, "end");
    assert_fields(&b, &json!({"status": "left", "callStatus": "active"}));
    live.push(left_group.clone());
    seer.insert(left_group, dee.clone());

    // An ended 1:1 call.
    let ended = api.start_call(&ada, conv_ab, "audio", &[&bob]);
    api.act_ok(&bob, &ended, "answer");
    let b = api.act_ok(&ada, &ended, "end");
    assert_fields(
        &b,
        &json!({"status": "ended", "endReason": "ended-by-user"}),
    );
    assert!(b["duration"].is_u64(), "{b}");
    finished.push(ended.clone());
    seer.insert(ended, ada.clone());

    // A rejected 1:1 call.
    let rejected = api.start_call(&ada, conv_ac, "video", &[&cy]);
    let b = api.act_ok(&cy, &rejected, "reject");
    assert_fields(&b, &json!({"status": "rejected", "callStatus": "rejected"}));
    finished.push(rejected.clone());
    seer.insert(rejected, ada.clone());

    // A cancelled 1:1 call.
    let cancelled = api.start_call(&bob, conv_ab, "audio", &[&ada]);
    let b = api.act_ok(&bob, &cancelled, "end");
    assert_fields(&b, &json!({"endReason": "cancelled", "duration": 0}));
    finished.push(cancelled.clone());
    seer.insert(cancelled, bob.clone());

    let (s, b) = api.get("/api/calls/turn-credentials", &ada.token);
    assert_eq!(s, 200, "{b}");

    // What the API acknowledged, as it shows it.
    let before: BTreeMap<String, Value> = seer
        .iter()
        .map(|(id, p)| (id.clone(), api.call(p, id)))
        .collect();
    for id in &live {
        assert!(
            LIVE.contains(&before[id]["status"].as_str().unwrap()),
            "{}",
            before[id]
        );
    }

    let killed_at = Timestamp::now().unix_millis();
    let dir = daemon.kill();

    // The file as the crash left it: intact, every acknowledged row there, exactly as acked.
    let conn = open_store(&dir.path().join("switchboard.db"));
    assert_intact(&conn);
    let rows = counts(&conn);
    let expected: BTreeMap<&str, i64> = [
        ("users", 4),
        ("conversations", 4),
        // ab 2, abc 3, all 4, ac 2
        ("conversation_members", 11),
        ("calls", 7),
        ("call_participants", 2 + 3 + 4 + 4 + 2 + 2 + 2),
        ("turn_credentials", 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(rows, expected, "rows after the SIGKILL");
    let crashed = db_calls(&conn);
    assert_eq!(
        crashed.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (id, call) in &crashed {
        assert_consistent(call);
        assert_eq!(call.view(), before[id], "call {id} in the file vs the API");
    }
    drop(conn);

    let daemon = Daemon::restart(dir);
    let api = daemon.api();
    assert_eq!(
        reconciled_in_log(&daemon),
        Some(live.len()),
        "the log reports the reconciliation: {:#?}",
        daemon.log()
    );

    for id in &finished {
        assert_eq!(
            api.call(&seer[id], id),
            before[id],
            "a finished call changed"
        );
    }
    for id in &live {
        assert_reconciled_view(&before[id], &api.call(&seer[id], id), killed_at);
    }
    // The file agrees with the API, and no row was lost or added.
    let conn = open_store(&daemon.store_path());
    assert_intact(&conn);
    assert_eq!(counts(&conn), rows, "rows after the restart");
    let after = db_calls(&conn);
    for (id, call) in &after {
        assert_consistent(call);
        if live.contains(id) {
            assert_reconciled(&crashed[id], call, killed_at);
        } else {
            assert_eq!(call, &crashed[id], "a finished call's row changed");
        }
    }

    // New calls work after the restart.
    let fresh = api.start_call(&ada, conv_ab, "video", &[&bob]);
    let b = api.act_ok(&bob, &fresh, "answer");
    assert_eq!(b["status"], "active", "{b}");
    api.media_ok(&bob, &fresh, &json!({ "videoEnabled": false }));
    let b = api.act_ok(&bob, &fresh, "end");
    assert_eq!(b["endReason"], "ended-by-user", "{b}");
    assert_eq!(api.call(&ada, &fresh)["status"], "ended");
    let mut rows_now = rows.clone();
    *rows_now.get_mut("calls").unwrap() += 1;
    *rows_now.get_mut("call_participants").unwrap() += 2;
    assert_eq!(counts(&conn), rows_now);
    assert_consistent(&db_calls(&conn)[&fresh]);
    eprintln!(
        "sigkill_mid_call: {} live calls reconciled, {} finished untouched, in {:?}",
        live.len(),
        finished.len(),
        t0.elapsed()
    );
}

/// What a restart did to a call that was live when the daemon died, as the API shows it (`old`
/// before the kill, `new` after the restart): ended `server-restart` after `killed_at`, joined
/// participants left then, pending ones missed, nothing else changed.
fn assert_reconciled_view(old: &Value, new: &Value, killed_at: u64) {
    assert_fields(
        new,
        &json!({"status": "ended", "endReason": "server-restart"}),
    );
    let ended_at = new["endedAt"].as_str().expect("endedAt");
    assert!(ms(ended_at) >= killed_at, "{new}");
    assert_eq!(new["updatedAt"], new["endedAt"]);
    let expect = old["startedAt"]
        .as_str()
        .map_or(0, |s| (ms(ended_at) - ms(s)) / 1000);
    assert_eq!(new["duration"].as_u64(), Some(expect), "{new}");
    for k in [
        "id",
        "conversationId",
        "type",
        "initiatedBy",
        "startedAt",
        "createdAt",
    ] {
        assert_eq!(new[k], old[k], "{k} of {new}");
    }
    let (olds, news) = (
        old["participants"].as_array().unwrap(),
        new["participants"].as_array().unwrap(),
    );
    assert_eq!(olds.len(), news.len());
    for (o, n) in olds.iter().zip(news) {
        let mut expect = o.clone();
        match o["status"].as_str().unwrap() {
            "joined" => {
                expect["status"] = json!("left");
                expect["leftAt"] = json!(ended_at);
            }
            "invited" | "ringing" => expect["status"] = json!("missed"),
            _ => {}
        }
        assert_eq!(n, &expect, "participant of {new}");
    }
}
// ---------------------------------------------------------------------------------------------
// 2. SIGKILL under load.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Op {
    Initiate,
    Answer,
    Media,
    End,
}

/// A transition the API acknowledged with a 2xx.
#[derive(Clone, Debug)]
enum Ack {
    Initiated {
        call: String,
        pair: usize,
    },
    Answered {
        call: String,
        started_at: String,
    },
    Media {
        call: String,
        user: Uuid,
        state: Value,
    },
    Ended {
        call: String,
        duration: u64,
    },
}

#[derive(Default)]
struct Load {
    acks: Vec<Ack>,
    /// The request that was being sent when the daemon died (its call, if it had one).
    in_flight: Option<(Op, Option<String>)>,
    /// Non-2xx answers: none is expected.
    unexpected: Vec<String>,
    /// The transport error that stopped the client.
    error: Option<String>,
}

struct Pair {
    a: Person,
    b: Person,
    conv: Uuid,
}

/// Full lifecycles until the daemon dies (bounded by `deadline`): initiate → answer → media →
/// end. Only the kill stops a client, so each has a request in flight (or about to be) then.
fn lifecycles(api: &Api, pairs: &[Pair], i: usize, deadline: Instant) -> Load {
    let pair = &pairs[i];
    let mut out = Load::default();
    let mut n = 0u64;
    // One request: Some(body) if it got `want`; None (stop) otherwise.
    let step = |out: &mut Load,
                op: Op,
                call: Option<&str>,
                method: &str,
                path: String,
                who: &Person,
                body: Option<Value>,
                want: u16|
     -> Option<Value> {
        out.in_flight = Some((op, call.map(str::to_owned)));
        let body = body.map(|b| b.to_string());
        let body = body.as_deref().map(str::as_bytes);
        match api.try_send_with(method, &path, Some(&who.token), &[], body) {
            Err(e) => {
                out.error = Some(e);
                None
            }
            Ok((s, b)) if s == want => Some(b),
            Ok((s, b)) => {
                out.unexpected.push(format!("{method} {path}: {s} {b}"));
                None
            }
        }
    };
    while Instant::now() < deadline {
        n += 1;
        let body =
            json!({ "conversationId": pair.conv, "type": "audio", "participantIds": [pair.b.id] });
        let Some(r) = step(
            &mut out,
            Op::Initiate,
            None,
            "POST",
            "/api/calls/initiate".into(),
            &pair.a,
            Some(body),
            201,
        ) else {
            break;
        };
        let call = r["callId"].as_str().expect("callId").to_owned();
        out.acks.push(Ack::Initiated {
            call: call.clone(),
            pair: i,
        });
        let path = |what: &str| format!("/api/calls/{call}/{what}");

        let Some(r) = step(
            &mut out,
            Op::Answer,
            Some(&call),
            "POST",
            path("answer"),
            &pair.b,
            None,
            200,
        ) else {
            break;
        };
        match (r["status"].as_str(), r["startedAt"].as_str()) {
            (Some("active"), Some(t)) => out.acks.push(Ack::Answered {
                call: call.clone(),
                started_at: t.to_owned(),
            }),
            _ => {
                out.unexpected.push(format!("answer: {r}"));
                break;
            }
        }

        // Always differs from the default (audio off); the user alternates.
        let who = if n.is_multiple_of(2) {
            &pair.a
        } else {
            &pair.b
        };
        let change = json!({ "audioEnabled": false, "videoEnabled": n.is_multiple_of(3) });
        let Some(r) = step(
            &mut out,
            Op::Media,
            Some(&call),
            "PATCH",
            path("media"),
            who,
            Some(change),
            200,
        ) else {
            break;
        };
        out.acks.push(Ack::Media {
            call: call.clone(),
            user: who.id,
            state: r["mediaState"].clone(),
        });

        let who = if n.is_multiple_of(2) {
            &pair.b
        } else {
            &pair.a
        };
        let Some(r) = step(
            &mut out,
            Op::End,
            Some(&call),
            "POST",
            path("end"),
            who,
            None,
            200,
        ) else {
            break;
        };
        match (
            r["status"].as_str(),
            r["endReason"].as_str(),
            r["duration"].as_u64(),
        ) {
            (Some("ended"), Some("ended-by-user"), Some(d)) => out.acks.push(Ack::Ended {
                call: call.clone(),
                duration: d,
            }),
            _ => {
                out.unexpected.push(format!("end: {r}"));
                break;
            }
        }
        out.in_flight = None;
    }
    out
}

/// Checks the file a SIGKILL left against everything acknowledged so far, and that it holds
/// nothing unacknowledged but what was in flight.
fn check_after_kill(
    conn: &Connection,
    pairs: &[Pair],
    acks: &[Ack],
    in_flight: &HashSet<(Op, Option<String>)>,
    unacked_initiates_allowed: usize,
) -> Checked {
    assert_intact(conn);
    let calls = db_calls(conn);
    let mut acked_initiate = HashSet::new();
    let mut acked_answer = HashSet::new();
    let mut acked_media = HashSet::new();
    let mut acked_end = HashSet::new();
    for ack in acks {
        match ack {
            Ack::Initiated { call, pair } => {
                let c = calls
                    .get(call)
                    .unwrap_or_else(|| panic!("acknowledged call {call} is not in the file"));
                let p = &pairs[*pair];
                assert_eq!(c.conversation_id, p.conv.to_string());
                assert_eq!(c.initiated_by, p.a.id.to_string());
                let users: Vec<&str> = c.participants.iter().map(|x| x.user_id.as_str()).collect();
                assert_eq!(users, [p.a.id.to_string(), p.b.id.to_string()], "{c:#?}");
                acked_initiate.insert(call.clone());
            }
            Ack::Answered { call, started_at } => {
                let c = &calls[call];
                assert_eq!(
                    c.started_at.as_ref(),
                    Some(started_at),
                    "acked answer lost: {c:#?}"
                );
                let b = &c.participants[1];
                assert!(
                    matches!(b.status.as_str(), "joined" | "left")
                        && b.joined_at.as_ref() == Some(started_at),
                    "acked answer lost: {c:#?}"
                );
                acked_answer.insert(call.clone());
            }
            Ack::Media { call, user, state } => {
                let c = &calls[call];
                assert_eq!(
                    &media(&c.participant(*user).media_state),
                    state,
                    "acked media change lost: {c:#?}"
                );
                acked_media.insert(call.clone());
            }
            Ack::Ended { call, duration } => {
                let c = &calls[call];
                assert_eq!(c.status, "ended", "acked end lost: {c:#?}");
                assert_eq!(c.end_reason.as_deref(), Some("ended-by-user"), "{c:#?}");
                assert_eq!(c.duration, Some(*duration as i64), "{c:#?}");
                assert!(c.participants.iter().all(|p| p.status == "left"), "{c:#?}");
                acked_end.insert(call.clone());
            }
        }
    }
    // Nothing the server did not acknowledge, except what was in flight when it died (it may
    // have committed without its answer getting out): counted in `unacked`.
    let flying = |op: Op, call: &str| in_flight.contains(&(op, Some(call.to_owned())));
    let mut unacked = 0;
    let mut unacked_initiates = 0;
    let mut live = 0;
    for (id, c) in &calls {
        assert_consistent(c);
        let pair = pairs
            .iter()
            .find(|p| p.conv.to_string() == c.conversation_id)
            .unwrap_or_else(|| panic!("a call no client made: {c:#?}"));
        let users: Vec<&str> = c.participants.iter().map(|x| x.user_id.as_str()).collect();
        assert_eq!(
            users,
            [pair.a.id.to_string(), pair.b.id.to_string()],
            "{c:#?}"
        );
        live += usize::from(c.is_live());
        if !acked_initiate.contains(id) {
            unacked_initiates += 1;
            assert!(
                c.started_at.is_none(),
                "nobody knew {id} to answer it: {c:#?}"
            );
        }
        let mut committed_unacked = |acked: &HashSet<String>, op: Op| {
            if !acked.contains(id) {
                assert!(flying(op, id), "{op:?} nobody acknowledged: {c:#?}");
                unacked += 1;
            }
        };
        if c.started_at.is_some() {
            committed_unacked(&acked_answer, Op::Answer);
        }
        if c.participants
            .iter()
            .any(|p| media(&p.media_state) != media(DEFAULT_MEDIA))
        {
            committed_unacked(&acked_media, Op::Media);
        }
        if matches!(c.end_reason.as_deref(), Some("ended-by-user" | "cancelled")) {
            committed_unacked(&acked_end, Op::End);
        }
    }
    assert!(
        unacked_initiates <= unacked_initiates_allowed,
        "{unacked_initiates} calls nobody acknowledged, {unacked_initiates_allowed} initiates in flight"
    );
    Checked {
        calls,
        live,
        unacked: unacked + unacked_initiates,
    }
}

/// What [`check_after_kill`] found.
struct Checked {
    calls: BTreeMap<String, DbCall>,
    /// Live calls, which a restart must end.
    live: usize,
    /// Transitions committed whose answer never got out (in flight at a kill), so far.
    unacked: usize,
}

#[test]
fn sigkill_during_load_loses_no_acknowledged_transition() {
    const CLIENTS: usize = 8;
    // Three kills in the test run; `SWITCHBOARD_KILL_ROUNDS=20` for a longer hunt (at most 50).
    let rounds: usize = std::env::var("SWITCHBOARD_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .clamp(1, 50);
    let t0 = Instant::now();
    let mut daemon = Daemon::start_with(Options::default());
    let api = daemon.api();
    let pairs: Arc<Vec<Pair>> = Arc::new(
        (0..CLIENTS)
            .map(|i| Pair {
                a: api.person(&format!("Caller{i}")),
                b: api.person(&format!("Callee{i}")),
                conv: Uuid::new_v4(),
            })
            .collect(),
    );
    let mut acks: Vec<Ack> = Vec::new();
    let mut in_flight: HashSet<(Op, Option<String>)> = HashSet::new();
    let mut initiates_in_flight = 0;
    let mut in_flight_total = 0;
    for round in 1..=rounds {
        let api = daemon.api();
        let deadline = Instant::now() + Duration::from_secs(15);
        let threads: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (api, pairs) = (api.clone(), pairs.clone());
                std::thread::spawn(move || lifecycles(&api, &pairs, i, deadline))
            })
            .collect();
        // A random point of the load: 1.2 to 4.2 s into it.
        std::thread::sleep(Duration::from_millis(1200 + rand::random_range(0..3000)));
        let killed_at = Timestamp::now().unix_millis();
        let dir = daemon.kill();
        let mut round_acks = 0;
        let mut errors = 0;
        for t in threads {
            let load = t.join().expect("client thread");
            assert!(
                load.unexpected.is_empty(),
                "non-2xx answers: {:?}",
                load.unexpected
            );
            errors += usize::from(load.error.is_some());
            if let Some(f) = load.in_flight {
                initiates_in_flight += usize::from(f.0 == Op::Initiate);
                in_flight_total += 1;
                in_flight.insert(f);
            }
            round_acks += load.acks.len();
            acks.extend(load.acks);
        }
        assert_eq!(errors, CLIENTS, "every client was stopped by the kill");
        assert!(round_acks > 0, "no load before the kill");

        let conn = open_store(&dir.path().join("switchboard.db"));
        let Checked {
            calls: crashed,
            live,
            unacked,
        } = check_after_kill(&conn, &pairs, &acks, &in_flight, initiates_in_flight);
        let rows = counts(&conn);
        drop(conn);

        daemon = Daemon::restart(dir);
        let reconciled = reconciled_in_log(&daemon).unwrap_or(0);
        assert_eq!(reconciled, live, "calls reconciled vs live at the kill");
        let conn = open_store(&daemon.store_path());
        assert_intact(&conn);
        assert_eq!(counts(&conn), rows, "rows lost or added by the restart");
        let after = db_calls(&conn);
        assert!(
            after.values().all(|c| !c.is_live()),
            "live calls after the restart"
        );
        for (id, c) in &after {
            let old = &crashed[id];
            if old.is_live() {
                assert_reconciled(old, c, killed_at);
            } else {
                assert_eq!(c, old, "a finished call changed in the restart");
            }
        }
        // Everything acknowledged still holds after the reconciliation.
        check_after_kill(&conn, &pairs, &acks, &in_flight, initiates_in_flight);
        eprintln!(
            "load round {round}: {round_acks} acknowledged transitions ({} in all), {} calls in the \
             file, {live} live at the kill and reconciled; {} requests in flight at the kills so far, \
             {unacked} of them committed without their answer ({:?})",
            acks.len(),
            after.len(),
            in_flight_total,
            t0.elapsed()
        );
    }
    // The daemon serves after the last restart.
    let api = daemon.api();
    let p = &pairs[0];
    let id = api.start_call(&p.a, p.conv, "video", &[&p.b]);
    api.act_ok(&p.b, &id, "answer");
    api.act_ok(&p.a, &id, "end");
}

// ---------------------------------------------------------------------------------------------
// 3–6. Races on one call.

/// Runs `f(0)` and `f(1)` on two threads released together.
fn at_once<T: Send + 'static>(f: impl Fn(usize) -> T + Send + Sync + 'static) -> [T; 2] {
    let f = Arc::new(f);
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|i| {
            let (f, barrier) = (f.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                f(i)
            })
        })
        .collect();
    let mut out = threads.into_iter().map(|t| t.join().expect("racer"));
    [out.next().unwrap(), out.next().unwrap()]
}

/// A daemon with `options`, its API, and a read-only connection to its store.
fn daemon_and_store(options: Options) -> (Daemon, Api, Connection) {
    let daemon = Daemon::start_with(options);
    let api = daemon.api();
    let conn = open_store(&daemon.store_path());
    (daemon, api, conn)
}

/// The stored call `id`, which must be consistent.
#[track_caller]
fn stored_call(conn: &Connection, id: &str) -> DbCall {
    let call = db_calls(conn)
        .remove(id)
        .unwrap_or_else(|| panic!("call {id} is not in the file"));
    assert_consistent(&call);
    call
}

#[test]
fn two_invitees_answering_at_once() {
    let t0 = Instant::now();
    let (_daemon, api, conn) = daemon_and_store(Options::default());
    let [a, b, cy] = ["Ada", "Bob", "Cy"].map(|n| api.person(n));
    let conv = Uuid::new_v4();
    let mut first = [0; 2];
    let mut same_ms = 0;
    for _ in 0..30 {
        let id = api.start_call(&a, conv, "video", &[&b, &cy]);
        let answerers = [b.clone(), cy.clone()];
        let (api2, id2) = (api.clone(), id.clone());
        let [rb, rc] = at_once(move |i| api2.act(&answerers[i], &id2, "answer"));
        for r in [&rb, &rc] {
            assert_eq!(
                (r.0, r.1["status"].as_str()),
                (200, Some("active")),
                "{}",
                r.1
            );
        }
        assert_eq!(rb.1["startedAt"], rc.1["startedAt"], "one start for both");
        let call = stored_call(&conn, &id);
        assert_eq!(call.status, "active");
        let joined: Vec<&str> = call.participants[1..]
            .iter()
            .map(|p| {
                assert_eq!(p.status, "joined", "{call:#?}");
                p.joined_at.as_deref().expect("joined_at")
            })
            .collect();
        let earlier = joined.iter().min().unwrap();
        assert_eq!(call.started_at.as_deref(), Some(*earlier), "{call:#?}");
        assert_eq!(rb.1["startedAt"].as_str(), Some(*earlier));
        match joined[0].cmp(joined[1]) {
            std::cmp::Ordering::Less => first[0] += 1,
            std::cmp::Ordering::Greater => first[1] += 1,
            std::cmp::Ordering::Equal => same_ms += 1,
        }
        assert_eq!(call.participants[0].status, "joined");
    }
    eprintln!(
        "two invitees: first answer by Bob {}, by Cy {}, same millisecond {same_ms} ({:?})",
        first[0],
        first[1],
        t0.elapsed()
    );
}

#[test]
fn the_same_invitee_answering_twice_at_once() {
    let (_daemon, api, conn) = daemon_and_store(Options::default());
    let [a, b] = ["Ada", "Bob"].map(|n| api.person(n));
    let conv = Uuid::new_v4();
    for _ in 0..20 {
        let id = api.start_call(&a, conv, "audio", &[&b]);
        let (api2, id2, b2) = (api.clone(), id.clone(), b.clone());
        let rs = at_once(move |_| api2.act(&b2, &id2, "answer"));
        let mut statuses: Vec<u16> = rs.iter().map(|r| r.0).collect();
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "{rs:?}");
        let conflict = rs.iter().find(|r| r.0 == 409).unwrap();
        assert_eq!(
            error_code(&conflict.1),
            "invalid_transition",
            "{}",
            conflict.1
        );
        let ok = rs.iter().find(|r| r.0 == 200).unwrap();
        let call = stored_call(&conn, &id);
        assert_eq!(call.status, "active");
        assert_eq!(call.participants[1].status, "joined");
        assert_eq!(call.started_at, call.participants[1].joined_at);
        assert_eq!(ok.1["startedAt"].as_str(), call.started_at.as_deref());
        api.act_ok(&a, &id, "end");
    }
}

#[test]
fn answer_racing_end() {
    let t0 = Instant::now();
    let (_daemon, api, conn) = daemon_and_store(Options::default());
    let [a, b] = ["Ada", "Bob"].map(|n| api.person(n));
    let conv = Uuid::new_v4();
    let (mut answered_first, mut ended_first) = (0, 0);
    for _ in 0..30 {
        let id = api.start_call(&a, conv, "video", &[&b]);
        let (api2, id2, who) = (api.clone(), id.clone(), [b.clone(), a.clone()]);
        let [answer, end] = at_once(move |i| api2.act(&who[i], &id2, ["answer", "end"][i]));
        assert_eq!(end.0, 200, "end: {}", end.1);
        assert_eq!(end.1["status"], "ended", "{}", end.1);
        let call = stored_call(&conn, &id);
        assert_eq!(call.status, "ended", "{call:#?}");
        let (ada, bob) = (&call.participants[0], &call.participants[1]);
        assert_eq!(ada.status, "left");
        match (answer.0, end.1["endReason"].as_str()) {
            (200, Some("ended-by-user")) => {
                answered_first += 1;
                assert_eq!(answer.1["status"], "active", "{}", answer.1);
                assert!(call.started_at.is_some(), "{call:#?}");
                assert_eq!(answer.1["startedAt"].as_str(), call.started_at.as_deref());
                assert_eq!(call.end_reason.as_deref(), Some("ended-by-user"));
                assert_eq!(end.1["duration"].as_i64(), call.duration);
                assert_eq!(bob.status, "left");
                assert_eq!(bob.joined_at, call.started_at);
            }
            (409, Some("cancelled")) => {
                ended_first += 1;
                assert_eq!(error_code(&answer.1), "invalid_transition", "{}", answer.1);
                assert_eq!(end.1["duration"], 0);
                assert_eq!(call.end_reason.as_deref(), Some("cancelled"));
                assert_eq!(call.started_at, None);
                assert_eq!(bob.status, "missed");
            }
            _ => panic!("answer {answer:?} with end {end:?} left {call:#?}"),
        }
    }
    eprintln!(
        "answer racing end: answer first {answered_first}, end first {ended_first} ({:?})",
        t0.elapsed()
    );
}

#[test]
fn reject_racing_ring_timeout() {
    const CALLS: usize = 16;
    let t0 = Instant::now();
    let ring_timeout = Options {
        calls: "ring_timeout = \"1s\"".into(),
        ..Options::default()
    };
    let (_daemon, api, conn) = daemon_and_store(ring_timeout);
    let pairs: Vec<(Person, Person)> = (0..CALLS)
        .map(|i| {
            (
                api.person(&format!("Caller{i}")),
                api.person(&format!("Callee{i}")),
            )
        })
        .collect();
    let threads: Vec<_> = pairs
        .into_iter()
        .enumerate()
        .map(|(i, (a, b))| {
            let api = api.clone();
            std::thread::spawn(move || {
                let id = api.start_call(&a, Uuid::new_v4(), "audio", &[&b]);
                let created = ms(api.call(&a, &id)["createdAt"].as_str().unwrap());
                // From 40 ms before the deadline to 35 ms after it (the timer wakes ~5 ms late).
                let at = created + 1000 - 40 + 5 * i as u64;
                let now = Timestamp::now().unix_millis();
                std::thread::sleep(Duration::from_millis(at.saturating_sub(now)));
                let r = api.act(&b, &id, "reject");
                (id, created, at as i64 - (created as i64 + 1000), r)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    // Every call is settled by the time its reject is answered: a reject past the deadline
    // first applies the ring timeout (that write stands), then is refused.
    assert!(
        db_calls(&conn).values().all(|c| !c.is_live()),
        "calls still live: {:#?}",
        db_calls(&conn)
    );
    let calls = db_calls(&conn);
    let (mut rejected, mut missed) = (Vec::new(), Vec::new());
    for (id, created, offset, r) in results {
        let call = &calls[&id];
        assert_consistent(call);
        let (ada, bob) = (&call.participants[0], &call.participants[1]);
        assert_eq!(ada.status, "left", "{r:?} {call:#?}");
        assert_eq!(call.started_at, None);
        // The deadline holds to the millisecond: a reject sent at or after it finds the call
        // missed, whether or not the ring timer has run yet.
        if offset >= 0 {
            assert_eq!(
                r.0, 409,
                "a reject {offset} ms past the deadline: {r:?} {call:#?}"
            );
        }
        match r.0 {
            200 => {
                rejected.push(offset);
                assert_fields(
                    &r.1,
                    &json!({"status": "rejected", "callStatus": "rejected"}),
                );
                assert_eq!(call.status, "rejected", "{call:#?}");
                assert_eq!(call.end_reason.as_deref(), Some("rejected"));
                assert_eq!(bob.status, "rejected");
            }
            409 => {
                missed.push(offset);
                assert_eq!(error_code(&r.1), "invalid_transition", "{}", r.1);
                assert_eq!(call.status, "missed", "{call:#?}");
                assert_eq!(call.end_reason.as_deref(), Some("no-answer"));
                assert_eq!(bob.status, "missed");
                let ended = ms(call.ended_at.as_deref().unwrap());
                assert!(
                    ended >= created + 1000,
                    "missed before the ring timeout: {call:#?}"
                );
            }
            _ => panic!("reject: {r:?} left {call:#?}"),
        }
    }
    eprintln!(
        "reject racing ring timeout: rejected at offsets {rejected:?} ms, missed at {missed:?} ms ({:?})",
        t0.elapsed()
    );
}

/// A graceful stop (SIGTERM, systemd's stop) ends the calls still live as `server-shutdown`,
/// leaves finished ones alone, and the next start has nothing to reconcile.
#[test]
fn sigterm_ends_live_calls_server_shutdown() {
    let mut daemon = Daemon::start_with(Options::default());
    let api = daemon.api();
    let (ada, bo, cy) = (api.person("Ada"), api.person("Bo"), api.person("Cy"));
    // Three conversations (open mode makes each with its first call's participants).
    let active = api.start_call(&ada, Uuid::new_v4(), "video", &[&bo]);
    api.act_ok(&bo, &active, "answer");
    let ringing = api.start_call(&ada, Uuid::new_v4(), "audio", &[&bo, &cy]);
    let over = api.start_call(&bo, Uuid::new_v4(), "audio", &[&cy]);
    api.act_ok(&cy, &over, "reject");
    let over_before = api.call(&bo, &over);

    assert!(daemon.stop().success(), "{:#?}", daemon.log());
    assert!(
        daemon
            .log()
            .iter()
            .any(|l| l.contains("live calls ended (server-shutdown)") && l.contains("calls=2")),
        "{:#?}",
        daemon.log()
    );
    let conn = open_store(&daemon.store_path());
    assert_intact(&conn);
    let calls = db_calls(&conn);
    for id in [&active, &ringing] {
        let c = &calls[id.as_str()];
        assert_consistent(c);
        assert_eq!(c.end_reason.as_deref(), Some("server-shutdown"), "{c:#?}");
        assert_eq!(c.status, "ended", "{c:#?}");
    }
    let statuses = |id: &str| -> Vec<String> {
        calls[id]
            .participants
            .iter()
            .map(|p| p.status.clone())
            .collect()
    };
    assert_eq!(statuses(&active), ["left", "left"]);
    assert_eq!(statuses(&ringing), ["left", "missed", "missed"]);
    drop(conn);

    // Restarted on the same store: nothing left to reconcile, the finished call untouched.
    let dir = std::mem::replace(&mut daemon.dir, tempfile::tempdir().unwrap());
    let daemon = Daemon::restart(dir);
    assert_eq!(reconciled_in_log(&daemon), None, "{:#?}", daemon.log());
    assert_eq!(daemon.api().call(&bo, &over), over_before);
}
