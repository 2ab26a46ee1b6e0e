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

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{query_rows, run_bounded, Daemon, Options, Person, ADMIN_TOKEN};
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
        let d = Daemon::start_with(Options::default());
        let api = d.api();
        let alice = Person::new("Alice");
        let bob = Person::new("Bob");
        let eve = Person::new("Eve");
        let mallory = Person::new("Mallory");
        for p in [&alice, &bob, &eve, &mallory] {
            api.provision(p);
        }
        let conversation = Uuid::new_v4();
        let members = json!({"memberIds": [alice.id, bob.id, eve.id]});
        let path = format!("/api/admin/conversations/{conversation}");
        let (s, body) = api.json("PUT", &path, Some(ADMIN_TOKEN), &members);
        assert_eq!(s, 200, "PUT conversation: {body}");
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

    /// Runs `tests/browser/<script>` with `cfg`, which must succeed, and finds every one of
    /// `steps` among its `ok` lines: its output.
    #[track_caller]
    fn run(&self, script: &str, cfg: &Value, steps: &[&str]) -> String {
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
}

#[test]
fn a_call_signaled_by_the_npm_socket_io_client() {
    let d = Daemon::start_with(Options::default());
    let api = d.api();
    let (alice, bob, eve) = (Person::new("Alice"), Person::new("Bob"), Person::new("Eve"));
    for p in [&alice, &bob, &eve] {
        api.provision(p);
    }
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
    let cfg = w.config(json!({}));
    let out = w.run(
        "sio_devices.mjs",
        &cfg,
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
    let (call, participants) = w.stored(&out);
    assert_eq!(
        call,
        json!({"status": "ended", "end_reason": "ended-by-user"})
    );
    assert_eq!(
        participants,
        [
            ("Alice".into(), "left".into()),
            ("Bob".into(), "left".into())
        ]
    );
}

/// Every forbidden message of `sio_refused.mjs` (`part` refusals), each sent with and without
/// an acknowledgement.
const REFUSALS: usize = 44;

#[test]
fn every_forbidden_message_is_refused_over_socket_io() {
    let w = World::start();
    let cfg = w.config(json!({"part": "refusals"}));
    let out = w.run(
        "sio_refused.mjs",
        &cfg,
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
    let (call, participants) = w.stored(&out);
    assert_eq!(
        call,
        json!({"status": "ended", "end_reason": "ended-by-user"})
    );
    assert_eq!(
        participants,
        [
            ("Alice".into(), "left".into()),
            ("Bob".into(), "left".into())
        ]
    );
}

/// Messages over 64 KiB are refused on both transports (the connection may end for it, as on
/// `/ws`), never relayed; under it they are relayed whole.
#[test]
fn oversized_messages_are_refused_over_socket_io() {
    let w = World::start();
    let cfg = w.config(json!({"part": "oversized"}));
    let out = w.run(
        "sio_refused.mjs",
        &cfg,
        &[
            "polling: a 60000-byte offer acked as relayed",
            "polling: bob got the 60000-byte offer whole",
            "websocket: a 60000-byte offer acked as relayed",
            "websocket: bob got the 60000-byte offer whole",
            "polling, with an ack: a 100000-byte offer refused",
            "polling, without an ack: a 100000-byte offer refused",
            "websocket, with an ack: a 100000-byte offer refused",
            "websocket, without an ack: a 100000-byte offer refused",
            "bob got the new socket's offer",
        ],
    );
    let (call, _) = w.stored(&out);
    assert_eq!(call["status"], "active", "{call}");
}

/// Data that is an array instead of an object is refused (`invalid_field`), performing
/// nothing: as over `/ws` (tests/hub_ws.rs `data_that_is_an_array_is_refused`).
#[test]
fn data_that_is_an_array_is_refused_over_socket_io() {
    let w = World::start();
    let cfg = w.config(json!({"part": "arrays"}));
    let out = w.run(
        "sio_refused.mjs",
        &cfg,
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
