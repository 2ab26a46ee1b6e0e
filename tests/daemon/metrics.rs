//! `GET /metrics` in Prometheus text, each family moved by the real thing it counts: REST
//! requests (by route template, method and status), store jobs, a TURN Allocate with a wrong
//! password (an auth failure, by reason), coturn's `turnutils_uclient` relaying through the
//! built-in relay (allocations, packets and bytes each way), a signaling socket, and a live
//! call (calls by state).

use crate::common;

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{allocate, code, peer_on, run_bounded, Daemon, Options, Person, SECRET};
use tokio_tungstenite::tungstenite;
use uuid::Uuid;

/// The body of `GET /metrics`, whose content type must be Prometheus text.
fn scrape(d: &Daemon) -> String {
    let url = format!("http://{}/metrics", d.http);
    let mut r = ureq::get(&url).call().expect("GET /metrics");
    assert_eq!(r.status(), 200);
    let content_type = r
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    r.body_mut().read_to_string().unwrap()
}

/// The series of `family` in `text` (their names with labels).
fn series<'a>(text: &'a str, family: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.strip_prefix(family)?.strip_prefix('{')?.rsplit_once(' '))
        .map(|(labels, _)| labels)
        .collect()
}

/// The value of the sample `series` (`name` or `name{labels}` as the exporter writes it).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

#[track_caller]
fn expect(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

#[test]
fn metrics_count_what_happens() {
    let d = Daemon::start_with(Options {
        turn: "allow_peers = [\"127.0.0.1/32\"]".into(),
        ..Options::default()
    });
    let api = d.api();
    let (alice, bob) = (Person::new("Alice"), Person::new("Bob"));
    api.provision(&alice);
    api.provision(&bob);

    let first = scrape(&d);
    assert_eq!(expect(&first, "switchboard_turn_allocations"), 0.0);
    assert_eq!(expect(&first, "switchboard_calls{state=\"active\"}"), 0.0);
    for help in [
        "switchboard_turn_relayed_bytes_total",
        "switchboard_store_job_seconds",
    ] {
        assert!(first.contains(&format!("# HELP {help} ")), "{help}");
    }

    // REST: counted by route template, not by id.
    for _ in 0..2 {
        let (s, _) = api.get(&format!("/api/calls/{}", Uuid::new_v4()), &alice.token);
        assert_eq!(s, 404);
    }
    // A live call, answered.
    let conv = Uuid::new_v4();
    let call = api.start_call(&alice, conv, "audio", &[&bob]);
    api.act_ok(&bob, &call, "answer");

    // TURN: a wrong password is an auth failure with its reason.
    let (username, _) = d.credentials(&alice.uid());
    let refused = allocate(d.turn, &username, "not-the-password");
    assert_eq!(code(&refused), 401);
    // coturn's client relays 40 × 100-byte payloads through the relay, and echoes come back.
    let (_peer, port) = peer_on(&["127.0.0.1"]);
    let (code, out) = run_bounded(
        Command::new("turnutils_uclient")
            .args(["-c", "-W", SECRET, "-u", &alice.uid()])
            .args(["-l", "100", "-n", "40", "-m", "1"])
            .args(["-p", &d.turn.port().to_string()])
            .args(["-e", "127.0.0.1", "-r", &port.to_string(), "127.0.0.1"]),
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(0), "turnutils_uclient:\n{out}");

    // The relay publishes its totals about once a second.
    let mut text = String::new();
    let moved = common::wait_until(Duration::from_secs(5), || {
        text = scrape(&d);
        value(
            &text,
            "switchboard_turn_relayed_bytes_total{direction=\"to_peer\"}",
        )
        .is_some_and(|b| b >= 4000.0)
    });
    assert!(moved, "relayed bytes did not move:\n{text}");
    let from_peer = expect(
        &text,
        "switchboard_turn_relayed_packets_total{direction=\"from_peer\"}",
    );
    assert!(from_peer >= 1.0, "{text}");
    assert!(expect(&text, "switchboard_turn_allocations_total") >= 1.0);
    assert_eq!(
        expect(
            &text,
            "switchboard_turn_auth_failures_total{reason=\"bad_integrity\"}"
        ),
        1.0
    );
    assert_eq!(
        expect(
            &text,
            "switchboard_http_requests_total{route=\"/api/calls/{callId}\",method=\"GET\",status=\"404\"}"
        ),
        2.0
    );
    assert_eq!(
        expect(
            &text,
            "switchboard_http_requests_total{route=\"/api/calls/{callId}/answer\",method=\"POST\",status=\"200\"}"
        ),
        1.0
    );
    assert_eq!(expect(&text, "switchboard_calls{state=\"active\"}"), 1.0);
    // Every transition went through the store: its latency histogram has samples.
    assert!(
        expect(&text, "switchboard_store_job_seconds_count") >= 3.0,
        "{text}"
    );
    assert_eq!(expect(&text, "switchboard_hub_sockets"), 0.0);

    // A signaling socket (/ws, Alice's token): the sockets gauge follows it.
    let url = format!("ws://{}/ws?token={}", d.http, alice.token);
    let (_socket, _) = tungstenite::connect(url.as_str()).expect("ws upgrade");
    let attached = common::wait_until(Duration::from_secs(5), || {
        value(&scrape(&d), "switchboard_hub_sockets") == Some(1.0)
    });
    assert!(attached, "the sockets gauge did not count the socket");
}

/// Labels come from sets the daemon fixes: 1,000 requests with made-up 10 kB methods are one
/// `other` series, and the daemon does not grow by them (it grew by their size, and more,
/// when the method was the label).
#[test]
fn made_up_methods_are_counted_as_other_in_one_series() {
    const REQUESTS: usize = 1000;
    const METHOD_LEN: usize = 10_000;
    let d = Daemon::start_with(Options::default());
    let mut s = TcpStream::connect(d.http).unwrap();
    s.set_nodelay(true).unwrap();
    // A first one, so that what a first request allocates is not counted below.
    assert_eq!(
        crate::http_limits::request_on(&mut s, "GET", "/no-such-route"),
        404
    );
    let before = d.rss_kib();
    for i in 0..REQUESTS {
        let method = format!("X{i:0>width$}", width = METHOD_LEN - 1);
        let status = crate::http_limits::request_on(&mut s, &method, "/no-such-route");
        assert_eq!(status, 404, "request {i}");
    }
    let grown = d.rss_kib().saturating_sub(before);
    eprintln!("{REQUESTS} made-up methods: the daemon grew by {grown} KiB");

    let text = scrape(&d);
    let requests = series(&text, "switchboard_http_requests_total");
    let other: Vec<_> = requests
        .iter()
        .filter(|l| l.contains("method=\"other\""))
        .collect();
    assert_eq!(
        other,
        [&"route=\"unmatched\",method=\"other\",status=\"404\"}"],
        "{text}"
    );
    assert!(
        requests.iter().all(|l| !l.contains("method=\"X")),
        "a made-up method is a label: {} series",
        requests.len()
    );
    assert_eq!(
        expect(
            &text,
            "switchboard_http_requests_total{route=\"unmatched\",method=\"other\",status=\"404\"}"
        ),
        REQUESTS as f64
    );
    // 1,000 × 10 kB of methods would be 10 MB as labels.
    assert!(
        grown < 4 * 1024,
        "the daemon grew by {grown} KiB over {REQUESTS} requests"
    );
}
