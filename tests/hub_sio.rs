//! The hub through `/socket.io/`, driven by the stock npm `socket.io-client` (installed in
//! tests/browser by tests/run.sh) running `tests/browser/sio_call.mjs` under node: refused
//! handshakes, polling upgraded to websocket, a 1:1 call with offer, answer, candidates, media
//! and end, a stranger refused; then the store says the call ended.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{query_rows, run_bounded, Daemon, Options, Person};
use serde_json::json;
use uuid::Uuid;

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
