//! The relay driven by clients nobody here wrote: coturn's `turnutils_stunclient`,
//! `turnutils_uclient` and `turnutils_peer` (Debian package `coturn`, installed by .ci/run;
//! only its tools are run, never its server).

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{field, peer_on, run_bounded, Background, Daemon, TestCert, SECRET};

const LIMIT: Duration = Duration::from_secs(60);

fn peer() -> (Background, u16) {
    peer_on(&["127.0.0.1"])
}

/// `turnutils_uclient` with TURN REST credentials, no RTCP allocations (they need EVEN-PORT
/// reservations, which switchboard does not offer), paced at its default 20 ms per packet.
fn uclient(
    d: &Daemon,
    extra: &[&str],
    peer_port: Option<u16>,
    messages: u32,
    clients: u32,
) -> (Option<i32>, String) {
    let peer = peer_port.map(|p| ("127.0.0.1", p));
    uclient_at("127.0.0.1", d.turn.port(), extra, peer, messages, clients)
}

/// `turnutils_uclient` against `host:port` (`-t`: TCP, `-t -S`: TLS, `-x`: an IPv6 relayed
/// address), to the echo peer at `peer` when given.
fn uclient_at(
    host: &str,
    port: u16,
    extra: &[&str],
    peer: Option<(&str, u16)>,
    messages: u32,
    clients: u32,
) -> (Option<i32>, String) {
    let mut cmd = Command::new("turnutils_uclient");
    cmd.args(["-c", "-W", SECRET, "-u", "uclient", "-l", "120"])
        .args(["-p", &port.to_string()])
        .args(["-n", &messages.to_string(), "-m", &clients.to_string()])
        .args(extra);
    if let Some((peer_host, p)) = peer {
        cmd.args(["-e", peer_host, "-r", &p.to_string()]);
    }
    cmd.arg(host);
    run_bounded(&mut cmd, LIMIT)
}

/// "Total lost packets N (...)" from uclient's summary.
fn lost(out: &str) -> Option<u64> {
    out.lines()
        .filter_map(|l| l.split("Total lost packets ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .next_back()
}

/// Sums a numeric field over the daemon's `allocation closed` lines.
fn closed_sum(d: &Daemon, key: &str) -> u64 {
    d.log()
        .iter()
        .filter(|l| l.contains("allocation closed"))
        .filter_map(|l| field(l, key)?.parse::<u64>().ok())
        .sum()
}

fn closed_count(d: &Daemon) -> usize {
    d.log()
        .iter()
        .filter(|l| l.contains("allocation closed"))
        .count()
}

/// Waits (bounded) until the daemon has logged `n` closed allocations.
fn wait_closed(d: &Daemon, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while closed_count(d) < n && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        closed_count(d) >= n,
        "expected {n} closed allocations: {:#?}",
        d.log()
    );
}

#[test]
fn stunclient_gets_its_reflexive_address() {
    let d = Daemon::start("");
    let (code, out) = run_bounded(
        Command::new("turnutils_stunclient").args(["-p", &d.turn.port().to_string(), "127.0.0.1"]),
        LIMIT,
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("UDP reflexive addr: 127.0.0.1:"), "{out}");
}

/// Channels (ChannelBind + ChannelData) to an echo peer, both directions, at a paced load.
#[test]
fn uclient_channels_to_a_peer_zero_loss() {
    let d = Daemon::start("allow_peers = [\"127.0.0.1/32\"]\nuser_quota = 100");
    let (_peer, port) = peer();
    let (messages, clients) = (100, 10);
    let (code, out) = uclient(&d, &[], Some(port), messages, clients);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(lost(&out), Some(0), "{out}");
    // uclient deletes its allocations at the end (Refresh, LIFETIME 0): the relay's counters
    // account for every packet each way.
    wait_closed(&d, clients as usize);
    let sent = u64::from(messages * clients);
    assert!(closed_sum(&d, "packets_to_peer") >= sent, "{:#?}", d.log());
    assert_eq!(
        closed_sum(&d, "packets_to_peer"),
        closed_sum(&d, "packets_from_peer")
    );
    assert_eq!(
        closed_sum(&d, "bytes_to_peer"),
        closed_sum(&d, "bytes_from_peer")
    );
    assert!(closed_sum(&d, "bytes_to_peer") >= sent * 120);
    assert!(d
        .log()
        .iter()
        .any(|l| l.contains("allocation closed") && field(l, "reason") == Some("deleted")));
}

/// The relay's counters over the allocations that closed on `transport` ("Tcp", "Tls", "Udp").
fn closed_sum_on(d: &Daemon, transport: &str, key: &str) -> u64 {
    d.log()
        .iter()
        .filter(|l| l.contains("allocation closed") && field(l, "transport") == Some(transport))
        .filter_map(|l| field(l, key)?.parse::<u64>().ok())
        .sum()
}

/// TURN over TCP (`-t`) and over TLS (`-t -S`): channels interleaved with STUN on one
/// stream, every packet back at a paced load, and the allocations counted per transport.
#[test]
fn uclient_over_tcp_and_tls_zero_loss() {
    let cert = TestCert::new();
    let d = Daemon::start(&format!(
        "allow_peers = [\"127.0.0.1/32\"]\nuser_quota = 100\n{}",
        cert.turn_config()
    ));
    let tls = d.tls.expect("a TLS listener").port();
    let (_peer, port) = peer();
    let (messages, clients) = (100, 10);
    let mut closed = 0;
    for (flags, listener, transport) in [
        (&["-t"][..], d.turn.port(), "Tcp"),
        (&["-t", "-S"][..], tls, "Tls"),
    ] {
        let peer = Some(("127.0.0.1", port));
        let (code, out) = uclient_at("127.0.0.1", listener, flags, peer, messages, clients);
        assert_eq!(code, Some(0), "{flags:?}: {out}");
        assert_eq!(lost(&out), Some(0), "{flags:?}: {out}");
        closed += clients as usize;
        wait_closed(&d, closed);
        let sent = u64::from(messages * clients);
        let to_peer = closed_sum_on(&d, transport, "packets_to_peer");
        assert!(to_peer >= sent, "{transport}: {to_peer} < {sent}");
        assert_eq!(to_peer, closed_sum_on(&d, transport, "packets_from_peer"));
        assert!(closed_sum_on(&d, transport, "bytes_to_peer") >= sent * 120);
    }
}

/// The same over IPv6 loopback, with IPv6 relayed addresses (`-x`) to an IPv6 peer: UDP, TCP
/// and TLS on [::1].
#[test]
fn uclient_over_ipv6_loopback_zero_loss() {
    let cert = TestCert::new();
    let d = Daemon::start(&format!(
        "listen = [\"[::1]:0\"]\nrelay_ip = [\"::1\"]\nallow_peers = [\"::1/128\"]\n\
         user_quota = 100\n{}",
        cert.turn_config_on("[::1]:0")
    ));
    assert!(d.turn.is_ipv6());
    let tls = d.tls.expect("a TLS listener").port();
    let (_peer, port) = peer_on(&["::1"]);
    let (messages, clients) = (100, 5);
    let mut closed = 0;
    for (flags, listener) in [
        (&["-x"][..], d.turn.port()),
        (&["-x", "-t"][..], d.turn.port()),
        (&["-x", "-t", "-S"][..], tls),
    ] {
        let (code, out) = uclient_at(
            "::1",
            listener,
            flags,
            Some(("::1", port)),
            messages,
            clients,
        );
        assert_eq!(code, Some(0), "{flags:?}: {out}");
        assert_eq!(lost(&out), Some(0), "{flags:?}: {out}");
        closed += clients as usize;
        wait_closed(&d, closed);
    }
    let sent = u64::from(messages * clients);
    for transport in ["Udp", "Tcp", "Tls"] {
        let to_peer = closed_sum_on(&d, transport, "packets_to_peer");
        assert!(to_peer >= sent, "{transport}: {to_peer} < {sent}");
    }
}

/// Send and Data indications (`-s`), with DONT-FRAGMENT (`-g`).
#[test]
fn uclient_send_indications_to_a_peer_zero_loss() {
    let d = Daemon::start("allow_peers = [\"127.0.0.1/32\"]\nuser_quota = 100");
    let (_peer, port) = peer();
    let (code, out) = uclient(&d, &["-s", "-g"], Some(port), 100, 5);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(lost(&out), Some(0), "{out}");
    wait_closed(&d, 5);
    assert!(closed_sum(&d, "packets_from_peer") >= 500);
}

/// Client to client (`-y`): each allocation's peer is another allocation of the same relay,
/// delivered inside the process; no loopback peer needs to be allowed.
#[test]
fn uclient_client_to_client_through_the_hairpin() {
    let d = Daemon::start("user_quota = 100");
    for extra in [&["-y"][..], &["-y", "-s"][..]] {
        let (code, out) = uclient(&d, extra, None, 100, 4);
        assert_eq!(code, Some(0), "{extra:?}: {out}");
        assert_eq!(lost(&out), Some(0), "{extra:?}: {out}");
    }
    wait_closed(&d, 8);
    assert_eq!(
        closed_sum(&d, "packets_to_peer"),
        closed_sum(&d, "packets_from_peer")
    );
    assert!(closed_sum(&d, "packets_to_peer") >= 800);
}

/// By default a loopback peer is refused (403), and nothing reaches it.
#[test]
fn uclient_loopback_peer_is_refused_by_default() {
    let mut d = Daemon::start("user_quota = 100");
    let (_peer, port) = peer();
    let (_, out) = uclient(&d, &[], Some(port), 5, 1);
    assert!(out.contains("error 403"), "{out}");
    // The allocation that was made relayed nothing: its counters, logged when the daemon
    // stops and closes it, say so.
    assert!(d.stop().success());
    assert!(closed_count(&d) >= 1, "{:#?}", d.log());
    assert_eq!(closed_sum(&d, "packets_to_peer"), 0);
    assert_eq!(closed_sum(&d, "packets_from_peer"), 0);
}

#[test]
fn uclient_with_a_wrong_secret_is_unauthorized() {
    let mut d = Daemon::start("");
    let mut cmd = Command::new("turnutils_uclient");
    cmd.args([
        "-c",
        "-y",
        "-W",
        "not-the-secret",
        "-u",
        "mallory",
        "-n",
        "1",
    ])
    .args(["-p", &d.turn.port().to_string(), "127.0.0.1"]);
    let (code, out) = run_bounded(&mut cmd, LIMIT);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("Cannot complete Allocation"), "{out}");
    assert!(d.stop().success());
    assert_eq!(
        closed_count(&d),
        0,
        "no allocation was made: {:#?}",
        d.log()
    );
}

/// `turnutils_uclient` as a client of another deployment: the `username` and `password` it
/// was handed (`-u`, `-w`; no REST secret of its own), one client, to the echo peer.
fn uclient_as(d: &Daemon, username: &str, password: &str, peer_port: u16) -> (Option<i32>, String) {
    let mut cmd = Command::new("turnutils_uclient");
    cmd.args(["-c", "-u", username, "-w", password, "-l", "120"])
        .args(["-p", &d.turn.port().to_string(), "-n", "50", "-m", "1"])
        .args(["-e", "127.0.0.1", "-r", &peer_port.to_string(), "127.0.0.1"]);
    run_bounded(&mut cmd, LIMIT)
}

/// Credentials minted by Matrix, Nextcloud Talk, Jitsi and BigBlueButton deployments with
/// coturn's shared secret relay real bytes; the same usernames with a wrong password get
/// 401. The user names reach no metric label.
#[test]
fn uclient_with_other_deployments_credentials_relays_and_a_wrong_hmac_is_401() {
    let mut d = Daemon::start("allow_peers = [\"127.0.0.1/32\"]");
    let (_peer, port) = peer();
    // Each run also leaves a second, unused allocation of uclient's open (closed at
    // shutdown); the echoed packets are counted as the used one is deleted.
    let shapes = common::foreign_usernames(common::unix_now() + 3600);
    for (n, (who, username)) in shapes.iter().enumerate() {
        let (code, out) = uclient_as(&d, username, &common::password_for(username), port);
        assert_eq!(code, Some(0), "{who} {username}: {out}");
        assert_eq!(lost(&out), Some(0), "{who} {username}: {out}");
        wait_closed(&d, n + 1);
        assert!(
            closed_sum(&d, "packets_from_peer") >= 50 * (n as u64 + 1),
            "{who}"
        );
    }
    let refused_before = d.metric("switchboard_turn_auth_failures_total");
    let allocated_before = d.metric("switchboard_turn_allocations_total");
    for (who, username) in &shapes {
        // The HMAC of another secret: right shape, wrong password.
        let wrong = switchboard_turn::credentials::password_for(b"not-the-secret", username);
        let (code, out) = uclient_as(&d, username, &wrong, port);
        assert_ne!(code, Some(0), "{who} {username}: {out}");
        assert!(out.contains("Cannot complete Allocation"), "{who}: {out}");
    }
    let metrics = common::metrics_text(d.http);
    assert!(
        metrics.contains("switchboard_turn_auth_failures_total{reason=\"bad_integrity\"}"),
        "{metrics}"
    );
    assert!(d.metric("switchboard_turn_auth_failures_total") >= refused_before + 4);
    assert_eq!(
        d.metric("switchboard_turn_allocations_total"),
        allocated_before,
        "a wrong password allocated"
    );
    for needle in ["alice", "example.org", "q8+Zr", "w_k3v9"] {
        assert!(
            !metrics.contains(needle),
            "{needle} in /metrics:\n{metrics}"
        );
    }
    assert!(d.stop().success());
}

/// `turn.rest_api_separator` as coturn's `rest-api-separator`: uclient's own REST minting
/// with `-C _` (`<timestamp>_<user>`) is accepted, colons in the user and all.
#[test]
fn uclient_rest_minting_with_a_configured_separator() {
    let d = Daemon::start("allow_peers = [\"127.0.0.1/32\"]\nrest_api_separator = \"_\"");
    let (_peer, port) = peer();
    let (code, out) = uclient(
        &d,
        &["-C", "_", "-u", "@alice:example.org"],
        Some(port),
        50,
        1,
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(lost(&out), Some(0), "{out}");
    // With `:` as uclient's separator the expiry is not digits up to the `_`: refused.
    let (code, out) = uclient(&d, &["-u", "@alice:example.org"], Some(port), 5, 1);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("Cannot complete Allocation"), "{out}");
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let mut d = Daemon::start("");
    let status = d.stop();
    assert!(status.success(), "{status:?}");
}
