//! The hub through `/socket.io/`, driven by the stock npm `socket.io-client` (installed in
//! tests/browser by tests/run.sh) running the scripts `tests/browser/sio_*.mjs` under node:
//! - `sio_call.mjs`: refused handshakes, polling upgraded to websocket, a 1:1 call with offer,
//!   answer, candidates, media and end, a stranger refused;
//! - `sio_devices.mjs`: one user's two devices (websocket and polling) both rung, the first
//!   answer wins, the other hears `call:answered-elsewhere`;
//! - `sio_refused.mjs`: every forbidden message refused, in the acknowledgement when the
//!   client asks for one and with an `error` event when not, delivering nothing to anyone;
//!   messages over the size bound; data that is not an object.
//!
//! Each script prints `ok <step>` per step and exits 1 at the first failed expectation; every
//! wait in it is bounded, and the script itself is killed after [`SCRIPT_LIMIT`]. The test then
//! checks the steps and what the store says.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{peer_on, query_rows, run_bounded, Daemon, Options, Person, SECRET};
use serde_json::{json, Value};
use uuid::Uuid;

/// The longest a script may run.
const SCRIPT_LIMIT: Duration = Duration::from_secs(60);

/// A daemon with Alice, Bob and Eve members of one conversation, and Mallory, a user who is
/// not a member of it.
struct World {
    d: Daemon,
    alice: Person,
    bob: Person,
    eve: Person,
    mallory: Person,
    conversation: Uuid,
}

impl World {
    fn start() -> World {
        World::start_with(Options::default())
    }

    /// [`World::start`] with `options` added to the daemon's config.
    fn start_with(options: Options) -> World {
        let d = Daemon::start_with(options);
        let api = d.api();
        let [alice, bob, eve, mallory] = ["Alice", "Bob", "Eve", "Mallory"].map(|n| api.person(n));
        let conversation = api.conversation_of(&[&alice, &bob, &eve]);
        World {
            d,
            alice,
            bob,
            eve,
            mallory,
            conversation,
        }
    }

    /// The scripts' configuration: the daemon, the conversation, each person, and `extra`.
    fn config(&self, extra: Value) -> Value {
        let who = |p: &Person| json!({"id": p.id, "name": p.name, "token": p.token});
        let mut cfg = json!({
            "base": format!("http://{}", self.d.http),
            "conversation": self.conversation,
            "alice": who(&self.alice),
            "bob": who(&self.bob),
            "eve": who(&self.eve),
            "mallory": who(&self.mallory),
        });
        if let Value::Object(extra) = extra {
            cfg.as_object_mut().unwrap().extend(extra);
        }
        cfg
    }

    /// Runs `tests/browser/<script>` with the [`World::config`] with `extra`, which must
    /// succeed, and finds every one of `steps` among its `ok` lines: its output.
    #[track_caller]
    fn run(&self, script: &str, extra: Value, steps: &[&str]) -> String {
        let cfg = self.config(extra);
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/browser")
            .join(script);
        let started = std::time::Instant::now();
        let (code, out) = run_bounded(
            Command::new("node").arg(path).arg(cfg.to_string()),
            SCRIPT_LIMIT,
        );
        eprintln!("{script} took {:?}:\n{out}", started.elapsed());
        assert_eq!(
            code,
            Some(0),
            "{script}:\n{out}\ndaemon log:\n{:#?}",
            self.d.log()
        );
        for step in steps {
            assert!(
                out.lines().any(|l| l.starts_with(&format!("ok {step}"))),
                "no `ok {step}` in:\n{out}"
            );
        }
        out
    }

    /// The `calls` row of the call a script names in its `done <id>` line, and its
    /// participants' statuses by name.
    fn stored(&self, out: &str) -> (Value, Vec<(String, String)>) {
        let call = out
            .lines()
            .find_map(|l| l.strip_prefix("done "))
            .expect("the script names its call");
        let db = common::open_store(&self.d.store_path());
        let calls = query_rows(
            &db,
            "SELECT status, end_reason FROM calls WHERE id = ?1",
            &[&call],
        );
        assert_eq!(calls.len(), 1, "{calls:?}");
        let rows = query_rows(
            &db,
            "SELECT user_id, status FROM call_participants WHERE call_id = ?1",
            &[&call],
        );
        let people = [&self.alice, &self.bob, &self.eve, &self.mallory];
        let mut statuses: Vec<(String, String)> = rows
            .iter()
            .map(|r| {
                let who = people
                    .iter()
                    .find(|p| r["user_id"] == json!(p.uid()))
                    .map_or("?", |p| p.name.as_str());
                (who.to_owned(), r["status"].as_str().unwrap().to_owned())
            })
            .collect();
        statuses.sort();
        (calls[0].clone(), statuses)
    }

    /// The script's call is stored ended by a hang-up, Alice and Bob both left.
    #[track_caller]
    fn assert_hung_up(&self, out: &str) {
        let (call, participants) = self.stored(out);
        let ended = json!({"status": "ended", "end_reason": "ended-by-user"});
        assert_eq!(call, ended);
        let left = [
            ("Alice".into(), "left".into()),
            ("Bob".into(), "left".into()),
        ];
        assert_eq!(participants, left);
    }
}

#[test]
fn a_call_signaled_by_the_npm_socket_io_client() {
    let d = Daemon::start_with(Options::default());
    let api = d.api();
    let [alice, bob, eve] = ["Alice", "Bob", "Eve"].map(|n| api.person(n));
    let conversation = Uuid::new_v4();
    let who = |p: &Person| json!({"id": p.id, "token": p.token});
    let cfg = json!({
        "base": format!("http://{}", d.http),
        "conversation": conversation,
        "alice": who(&alice),
        "bob": who(&bob),
        "eve": who(&eve),
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/sio_call.mjs");
    let (code, out) = run_bounded(
        Command::new("node").arg(script).arg(cfg.to_string()),
        Duration::from_secs(60),
    );
    assert_eq!(
        code,
        Some(0),
        "sio_call.mjs:\n{out}\ndaemon log:\n{:#?}",
        d.log()
    );
    for step in [
        "bad token refused",
        "no token refused",
        "alice upgraded from polling to websocket",
        "bob got call:incoming",
        "bob's accept acked active",
        "alice got call:participant-joined",
        "bob got the offer from alice (not the spoofed sender)",
        "alice got the answer",
        "bob got 5 candidates in order",
        "alice got call:media-state-changed",
        "eve's offer refused: not_in_call",
        "eve's accept refused",
        "bob got call:ended",
    ] {
        assert!(
            out.contains(&format!("ok {step}")),
            "no `{step}` in:\n{out}"
        );
    }
    let call = out
        .lines()
        .find_map(|l| l.strip_prefix("done "))
        .expect("the script names its call");
    let rows = query_rows(
        &common::open_store(&d.store_path()),
        "SELECT status, end_reason FROM calls WHERE id = ?1",
        &[&call],
    );
    assert_eq!(
        rows,
        [json!({"status": "ended", "end_reason": "ended-by-user"})]
    );
}

#[test]
fn multi_device_answered_elsewhere_over_socket_io() {
    let w = World::start();
    let out = w.run(
        "sio_devices.mjs",
        json!({}),
        &[
            "bob's laptop stays on polling",
            "bob's phone got call:incoming",
            "bob's laptop got the same call:incoming",
            "the phone's accept acked active",
            "bob's laptop got call:answered-elsewhere",
            "alice got call:participant-joined",
            "the answering phone got nothing more",
            "a second accept refused in its ack",
            "a second accept refused with an error event",
            "a device of bob got alice's offer",
            "the laptop's answer acked as relayed",
            "alice got bob's answer from his laptop",
            "with the phone gone, the laptop got the candidate",
            "bob's laptop got call:ended",
        ],
    );
    w.assert_hung_up(&out);
}

/// Every forbidden message of `sio_refused.mjs` (`part` refusals), each sent with and without
/// an acknowledgement.
const REFUSALS: usize = 44;

#[test]
fn every_forbidden_message_is_refused_over_socket_io() {
    let w = World::start();
    let out = w.run(
        "sio_refused.mjs",
        json!({"part": "refusals"}),
        &[
            "a live call between alice and bob",
            "Eve: a member not in the call signals into it",
            "Mallory: a non-member signals into the call",
            "Alice: to oneself",
            "Alice: in an unknown call",
            "Alice: an invalid call id",
            "Alice: no data",
            "Alice: an unknown event",
            "Eve: a member not invited accepts",
            "Mallory: a non-member acts on the call",
            "Bob: accepting a call one has joined",
            "refused in a live call: Bob got only its",
            "refused in a live call: Eve got only its",
            "refused in a live call: Mallory got only its",
            "refused in a live call: Alice got only its",
            "after all that, alice's offer reaches bob",
            "the call is still active, its media unchanged",
            "Bob: answering an ended call",
            "refused after the end: Alice got only its",
        ],
    );
    let refused = out.lines().filter(|l| l.contains(" refused: ")).count();
    assert_eq!(refused, REFUSALS, "{out}");
    w.assert_hung_up(&out);
}

/// Messages over 256 KiB are refused on both transports (the connection may end for it, as on
/// `/ws`), never relayed; under it, and past the 64 KiB of `maxPayload` (a 150 KB offer), they
/// are relayed whole.
#[test]
fn oversized_messages_are_refused_over_socket_io() {
    let w = World::start();
    let out = w.run(
        "sio_refused.mjs",
        json!({"part": "oversized"}),
        &[
            "polling: a 150000-byte offer acked as relayed",
            "polling: bob got the 150000-byte offer whole",
            "websocket: a 150000-byte offer acked as relayed",
            "websocket: bob got the 150000-byte offer whole",
            "polling, with an ack: a 300000-byte offer refused",
            "polling, without an ack: a 300000-byte offer refused",
            "websocket, with an ack: a 300000-byte offer refused",
            "websocket, without an ack: a 300000-byte offer refused",
            "bob got the new socket's offer",
        ],
    );
    let (call, _) = w.stored(&out);
    assert_eq!(call["status"], "active", "{call}");
}

/// Data that is an array instead of an object is refused (`invalid_field`), performing
/// nothing: as over `/ws` (tests/hub/hub_ws.rs `data_that_is_an_array_is_refused`).
#[test]
fn data_that_is_an_array_is_refused_over_socket_io() {
    let w = World::start();
    let out = w.run(
        "sio_refused.mjs",
        json!({"part": "arrays"}),
        &[
            "Alice: an offer's fields as an array",
            "Alice: media flags as an array",
            "Alice: a call id in an array",
            "data as arrays: Bob got only its 0 error events",
        ],
    );
    let (call, participants) = w.stored(&out);
    assert_eq!(call["status"], "active", "{call}");
    assert_eq!(
        participants,
        [
            ("Alice".into(), "joined".into()),
            ("Bob".into(), "joined".into())
        ]
    );
}

/// One row of `sql` about `call`, which must exist.
fn row(d: &Daemon, sql: &str, call: &str) -> Value {
    let rows = query_rows(&common::open_store(&d.store_path()), sql, &[&call]);
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows[0].clone()
}

/// The id a script prints after `label`.
fn printed<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{out}"))
}

#[test]
fn reconnect_grace_over_socket_io() {
    let grace_ms = 1000;
    let w = World::start_with(Options {
        calls: format!("reconnect_grace = \"{grace_ms}ms\""),
        ..Options::default()
    });
    let out = w.run(
        "sio_presence.mjs",
        json!({"graceMs": grace_ms}),
        &[
            "emits made before the connection are all acked",
            "a reconnect within the grace: alice heard nothing",
            "the call goes on: bob's new socket signals alice",
            "bob gone past the grace: alice got call:ended (connection-lost)",
            "not before the grace",
            "eve gone past the grace: alice got call:participant-left (disconnected)",
            "the group call goes on between alice and bob",
            "eve is out of it",
        ],
    );
    // The 1:1 call ended for the connection lost by Bob, who had reconnected once.
    let one = printed(&out, "done1 ");
    let call = row(
        &w.d,
        "SELECT status, end_reason FROM calls WHERE id = ?1",
        one,
    );
    assert_eq!(
        call,
        json!({"status": "ended", "end_reason": "connection-lost"})
    );
    // The group call goes on without Eve.
    let group = printed(&out, "done2 ");
    let call = row(
        &w.d,
        "SELECT status, end_reason FROM calls WHERE id = ?1",
        group,
    );
    assert_eq!(call, json!({"status": "active", "end_reason": null}));
    let eve = query_rows(
        &common::open_store(&w.d.store_path()),
        "SELECT status, left_at IS NOT NULL AS gone FROM call_participants
         WHERE call_id = ?1 AND user_id = ?2",
        &[&group, &w.eve.uid()],
    );
    assert_eq!(eve, [json!({"status": "left", "gone": 1})]);
}

/// A socket.io socket with a 10 s token that it does not refresh (`sio_expiry.mjs`): warned,
/// its refreshes with a bad token and with another user's refused, told `token_expired` and
/// disconnected by the server at `exp`; back with a fresh token within the grace, still in
/// its call, which it then ends.
#[test]
fn a_socket_io_socket_is_disconnected_at_its_tokens_exp_and_keeps_its_call() {
    let w = World::start();
    let out = w.run(
        "sio_expiry.mjs",
        json!({"jwtSecret": common::JWT_SECRET, "ttl": 10}),
        &[
            "Bob answered",
            "warned",
            "a bad token is refused",
            "another user's token is refused",
            "disconnected by the server",
            "at exp",
            "told token_expired",
            "Alice signals Bob after he is back",
            "Bob is still in the call",
            "Bob ends the call",
        ],
    );
    assert!(!out.contains("FAIL"), "{out}");
}

#[test]
fn call_stats_are_graded_stored_and_summarised_with_the_relay_bytes() {
    let w = World::start_with(Options {
        turn: "allow_peers = [\"127.0.0.1/32\"]".into(),
        ..Options::default()
    });
    let api = w.d.api();
    let call = api.start_call(&w.alice, w.conversation, "video", &[&w.bob]);
    api.act_ok(&w.bob, &call, "answer");

    // Alice's client relays through the built-in TURN server with credentials for her user
    // id (coturn's uclient, TURN REST scheme): the relay counts it for her.
    let (_peer, port) = peer_on(&["127.0.0.1"]);
    let (messages, size) = (50u64, 120u64);
    let (code, uclient) = run_bounded(
        Command::new("turnutils_uclient")
            .args(["-c", "-W", SECRET, "-u", &w.alice.uid()])
            .args([
                "-l",
                &size.to_string(),
                "-n",
                &messages.to_string(),
                "-m",
                "1",
            ])
            .args(["-p", &w.d.turn.port().to_string()])
            .args(["-e", "127.0.0.1", "-r", &port.to_string(), "127.0.0.1"]),
        SCRIPT_LIMIT,
    );
    assert_eq!(code, Some(0), "turnutils_uclient:\n{uclient}");

    w.run(
        "sio_quality.mjs",
        json!({"callId": call}),
        &[
            "alice's report acked excellent",
            "bob got call:quality for alice",
            "a second report within a second: rate_limited",
            "packetLoss over 100: invalid_field",
            "an unknown field: invalid_field",
            "eve, not in the call: not_a_participant",
            "alice got nothing from the refusals",
            "bob got nothing from the refusals",
            "alice got call:quality poor for bob",
            "alice's second report (no ack): bob got call:quality good",
            "a report after the end: invalid_transition",
        ],
    );

    // Each participant's last grade and running summary.
    let db = common::open_store(&w.d.store_path());
    let people = query_rows(
        &db,
        "SELECT user_id, connection_quality, media_stats FROM call_participants
         WHERE call_id = ?1",
        &[&call],
    );
    let of = |p: &Person| {
        let r = people
            .iter()
            .find(|r| r["user_id"] == json!(p.uid()))
            .expect("a participant row");
        let stats: Value = serde_json::from_str(r["media_stats"].as_str().unwrap()).unwrap();
        (r["connection_quality"].clone(), stats)
    };
    let (alice_grade, alice) = of(&w.alice);
    assert_eq!(alice_grade, "good", "the last report's grade");
    assert_eq!(alice["reports"], 2);
    assert_eq!(alice["rtt"], json!({"n": 2, "avg": 120.0, "max": 200.0}));
    assert_eq!(
        alice["grades"],
        json!({"excellent": 1, "good": 1, "fair": 0, "poor": 0})
    );
    assert_eq!(alice["relayedReports"], 1);
    let (bob_grade, bob) = of(&w.bob);
    assert_eq!(bob_grade, "poor");
    assert_eq!(bob["reports"], 1);

    // The call's summary: both participants, the worst grade, and the relay's bytes for Alice
    // (uclient's payloads to the peer and their echoes back), none for Bob.
    let summary = row(&w.d, "SELECT quality_stats FROM calls WHERE id = ?1", &call);
    let q: Value = serde_json::from_str(summary["quality_stats"].as_str().unwrap()).unwrap();
    assert_eq!(q["quality"], "poor", "{q}");
    let part = |p: &Person| {
        q["participants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["userId"] == json!(p.uid()))
            .cloned()
            .unwrap_or_else(|| panic!("{} not in {q}", p.name))
    };
    let (a, b) = (part(&w.alice), part(&w.bob));
    assert_eq!(
        (a["quality"].clone(), a["reports"].clone()),
        // The grade of her averages: rtt 120 ms, jitter 7.5 ms, loss 0.6 %.
        (json!("excellent"), json!(2))
    );
    assert_eq!(
        (b["quality"].clone(), b["reports"].clone()),
        (json!("poor"), json!(1))
    );
    let sent = a["relay"]["bytesToPeer"].as_u64().unwrap();
    let echoed = a["relay"]["bytesFromPeer"].as_u64().unwrap();
    assert!(
        sent >= messages * size,
        "alice's relay bytes to the peer: {q}"
    );
    assert!(echoed > 0, "the echoes came back through the relay: {q}");
    assert_eq!(b["relay"]["bytesToPeer"], 0, "bob relayed nothing: {q}");
    assert_eq!(q["relayBytes"].as_u64().unwrap(), sent + echoed);
}

/// The spec's client code as written, over Socket.IO: see `sio_tolerance.mjs`.
#[test]
fn the_spec_client_patterns_work_over_socket_io() {
    let w = World::start();
    let zed = Person::new("Zed");
    let who = |p: &Person| json!({"id": p.id, "name": p.name, "token": p.token});
    let out = w.run(
        "sio_tolerance.mjs",
        json!({"zed": who(&zed), "open": Uuid::new_v4()}),
        &[
            "the caller and a duplicate among participantIds ignored",
            "bob's laptop got call:answered-elsewhere",
            "the answering phone was not told",
            "a null candidate acked as relayed",
            "a device of bob got the null candidate",
            "bob's phone got call:rejected-elsewhere",
            "without X-Socket-Id, a device of bob got call:rejected-elsewhere",
            "an unseen invitee is called, unnamed",
            "zed's first socket got call:incoming",
            "zed named by his socket's token",
            "zed answered",
        ],
    );
    // The last call (Alice and Zed, "?" to `stored`, which knows the World's people only).
    let (call, statuses) = w.stored(&out);
    assert_eq!(call["status"], "active", "{call}");
    let joined = |who: &str| (who.to_owned(), "joined".to_owned());
    assert_eq!(statuses, [joined("?"), joined("Alice")]);
    let db = common::open_store(&w.d.store_path());
    let named = query_rows(
        &db,
        "SELECT name, email FROM users WHERE id = ?1",
        &[&zed.uid()],
    );
    assert_eq!(named, [json!({"name": "Zed", "email": "zed@example.com"})]);
}
