//! A real browser's WebRTC stack through the relay: headless Chromium (Debian's `chromium`,
//! driven by `tests/browser/relay_call.mjs` through playwright-core) makes a call between two
//! RTCPeerConnections that may only use relay candidates (`iceTransportPolicy: 'relay'`), with
//! the fake camera and microphone sending RTP both ways, once with the client-to-relay leg over
//! UDP and once over TCP.
//!
//! The script checks the browser's side (selected pair relay <-> relay, `relayProtocol`, inbound
//! RTP growing); this file checks its JSON report again and the daemon's side: the allocations'
//! counters, logged when they close, must account for the media the browsers received.
//!
//! Both relay candidates are allocations of the same daemon on 127.0.0.1, delivered to each
//! other inside the process, so the default peer policy (loopback refused) needs no
//! `allow_peers`. Prerequisites (Chromium, node, `npm ci` in tests/browser) are installed by
//! tests/run.sh; when one is missing the test fails and says so, it never skips.

use crate::common;

use std::time::Duration;

use common::browser::{check_prerequisites, node_script, result_line};
use common::{field, Daemon};

/// The script's own overall limit. It exits (killing the browser it launched) when it passes,
/// and prints what it saw.
const CALL_LIMIT: Duration = Duration::from_secs(60);
/// Ours, above the script's: reaching it means node itself hung. `run_bounded` then kills node
/// with SIGKILL, which leaves no chance to stop Chromium, so it must stay the backstop only.
const NODE_LIMIT: Duration = Duration::from_secs(90);

/// What a failed assertion shows: the script's output and the daemon's log.
fn report(out: &str, d: &Daemon) -> String {
    format!("relay_call.mjs output:\n{out}\ndaemon log:\n{:#?}", d.log())
}

/// `(bytes_to_peer, bytes_from_peer)` of every `allocation closed` line.
fn closed_allocations(d: &Daemon) -> Vec<(u64, u64)> {
    let num = |l: &str, key| field(l, key).and_then(|v| v.parse::<u64>().ok());
    d.log()
        .iter()
        .filter(|l| l.contains("allocation closed"))
        .map(|l| {
            let to = num(l, "bytes_to_peer").expect("bytes_to_peer");
            let from = num(l, "bytes_from_peer").expect("bytes_from_peer");
            (to, from)
        })
        .collect()
}

/// One relay-only call with the client-to-relay leg over `transport` ("udp" or "tcp").
fn relay_only_call(transport: &str) {
    let _browser = check_prerequisites();
    let mut daemon = Daemon::start("");
    let (username, credential) = daemon.credentials("user-a");
    // TURN over TCP shares the UDP listener's port.
    let url = format!(
        "turn:127.0.0.1:{}?transport={transport}",
        daemon.turn.port()
    );
    let (code, out) = node_script(
        "relay_call.mjs",
        &[
            "--url",
            &url,
            "--username",
            &username,
            "--credential",
            &credential,
            "--expect-relay-protocol",
            transport,
        ],
        CALL_LIMIT,
        NODE_LIMIT,
    );
    println!("{out}");
    assert_eq!(code, Some(0), "the call failed; {}", report(&out, &daemon));
    let r = result_line(&out)
        .unwrap_or_else(|| panic!("no JSON result line; {}", report(&out, &daemon)));
    assert_eq!(r["ok"], true, "{}", report(&out, &daemon));

    // The script asserted these; checked again here so a change there cannot weaken the test
    // silently.
    for side in ["a", "b"] {
        for end in ["local", "remote"] {
            assert_eq!(
                r["selected"][side][end]["candidateType"],
                "relay",
                "{side} {end}: {}",
                report(&out, &daemon)
            );
        }
        assert_eq!(
            r["selected"][side]["local"]["relayProtocol"],
            transport,
            "{side}: {}",
            report(&out, &daemon)
        );
        let rx = &r["bytes_received"][side];
        let (before, after) = (rx[0].as_u64().unwrap(), rx[1].as_u64().unwrap());
        assert!(
            after > before,
            "{side} received no RTP: {}",
            report(&out, &daemon)
        );
    }
    let received: u64 = ["a", "b"]
        .iter()
        .map(|s| r["bytes_received"][*s][1].as_u64().unwrap())
        .sum();

    // The daemon's side. Each allocation's counters are in its `allocation closed` line (info;
    // `allocation created` is debug only). Chromium deallocates when the page closes its
    // connections and stopping the daemon closes whatever is left, so after stop() every
    // allocation of the call has been logged.
    assert!(daemon.stop().success(), "{:#?}", daemon.log());
    let closed = closed_allocations(&daemon);
    // Chromium allocates once per local interface it gathers on; the selected pair uses two of
    // those allocations, one per side, and both carried media to the other.
    let relaying = closed.iter().filter(|(to, _)| *to > 0).count();
    assert!(
        relaying >= 2,
        "expected two allocations with bytes_to_peer > 0, got {closed:?}; {}",
        report(&out, &daemon)
    );
    // Every RTP byte the browsers counted passed through the relay (bytesReceived counts RTP
    // payload only; the relay counts whole SRTP packets, plus ICE checks and DTLS).
    // The allocations that relayed were made over the transport the URL named.
    let want = if transport == "tcp" { "Tcp" } else { "Udp" };
    for l in daemon
        .log()
        .iter()
        .filter(|l| l.contains("allocation closed"))
    {
        if field(l, "bytes_to_peer").is_some_and(|b| b != "0") {
            assert_eq!(field(l, "transport"), Some(want), "{l}");
        }
    }
    let to_peer: u64 = closed.iter().map(|(to, _)| to).sum();
    let from_peer: u64 = closed.iter().map(|(_, from)| from).sum();
    assert!(
        to_peer >= received && from_peer >= received,
        "the relay counted {to_peer} bytes to peers and {from_peer} from peers, less than the \
         {received} RTP bytes the browsers received: {closed:?}"
    );
}

#[test]
fn chromium_relay_only_call_over_udp() {
    relay_only_call("udp");
}

/// TURN over TCP (RFC 8656 section 3.1): the client-to-relay leg is TCP, the relayed leg and the
/// relay candidates stay UDP. Same port as UDP.
#[test]
fn chromium_relay_only_call_over_tcp() {
    relay_only_call("tcp");
}
