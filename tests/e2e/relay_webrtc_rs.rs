//! webrtc-rs' TURN client (crate `turn`) against the real daemon over loopback: a third-party
//! client's Allocate, CreatePermission, Send/Data indications, ChannelBind/ChannelData and
//! Refresh(0), the in-process hairpin between two allocations, the default peer policy and
//! authentication failures.
//!
//! Each test starts its own daemon (port 0) and bounds every wait.

use crate::common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Daemon;
use tokio::net::UdpSocket;
use tokio::time::timeout;
use turn::client::{Client, ClientConfig};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The bound on any single step (an allocation, a datagram, a log line).
const STEP: Duration = Duration::from_secs(5);

/// The relayed connection of an allocation of `client` (`who`), which must succeed within
/// [`STEP`], as a shareable trait object (`Client::allocate` gives an opaque `impl Conn`).
async fn allocated(client: &Client, who: &str) -> Arc<dyn webrtc_util::Conn + Send + Sync> {
    let relay = timeout(STEP, client.allocate())
        .await
        .unwrap_or_else(|_| panic!("{who}: no allocation in time"))
        .unwrap_or_else(|e| panic!("{who}: allocate: {e}"));
    Arc::new(relay)
}

/// The error of an allocation of `client` (`who`) that must be refused within [`STEP`].
async fn refused(client: &Client, who: &str) -> String {
    match timeout(STEP, client.allocate()).await {
        Err(_) => panic!("{who}: no answer in time"),
        Ok(Ok(_)) => panic!("{who}: allocated"),
        Ok(Err(e)) => e.to_string(),
    }
}

/// A webrtc-rs client over its own UDP socket on 127.0.0.1, reading (`listen`) already.
async fn client(server: SocketAddr, username: String, password: String) -> Client {
    let sock = UdpSocket::bind((LOOPBACK, 0)).await.expect("bind client");
    let client = Client::new(ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username,
        password,
        realm: common::REALM.to_owned(),
        software: "switchboard-tests".to_owned(),
        rto_in_ms: 0,
        conn: Arc::new(sock),
        vnet: None,
    })
    .await
    .expect("client");
    client.listen().await.expect("listen");
    client
}

/// The daemon's `relay_ports`, read back from the config the harness wrote.
fn relay_ports(daemon: &Daemon) -> RangeInclusive<u16> {
    let config = std::fs::read_to_string(daemon.dir.path().join("switchboard.toml")).unwrap();
    let value = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("relay_ports"))
        .and_then(|v| v.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"'))
        .expect("relay_ports in the config");
    let (lo, hi) = value.split_once('-').expect("a port range");
    lo.parse().unwrap()..=hi.parse().unwrap()
}

/// A UDP socket on `ip` whose port is outside `ports`: on the relay's own address a port in the
/// relay range is taken for another allocation's relayed address (delivered inside the process,
/// or dropped), never sent to the network.
async fn peer_socket(ip: IpAddr, ports: &RangeInclusive<u16>) -> UdpSocket {
    let mut rejected = Vec::new();
    for _ in 0..1000 {
        let sock = UdpSocket::bind((ip, 0)).await.expect("bind peer");
        if !ports.contains(&sock.local_addr().unwrap().port()) {
            return sock;
        }
        rejected.push(sock);
    }
    panic!("no free port outside {ports:?}");
}

/// Asserts that nothing arrives on `peer` for a second.
async fn assert_silent(peer: &UdpSocket) {
    let mut buf = [0u8; 2048];
    let got = timeout(Duration::from_secs(1), peer.recv_from(&mut buf)).await;
    assert!(got.is_err(), "{got:?} reached {:?}", peer.local_addr());
}

/// A UDP proxy between a client and the daemon that tallies what crosses it, by direction and
/// TURN message type, so a test can see which mechanisms the client really used. A datagram is
/// counted once it has been handed to the next socket.
struct Proxy {
    addr: SocketAddr,
    seen: Arc<Tally>,
    task: tokio::task::JoinHandle<()>,
}

/// Datagrams seen, by direction and [`kind`].
type Tally = Mutex<BTreeMap<(Dir, &'static str), u32>>;

fn tally(seen: &Tally, dir: Dir, datagram: &[u8]) {
    *seen
        .lock()
        .unwrap()
        .entry((dir, kind(datagram)))
        .or_insert(0) += 1;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Dir {
    ToDaemon,
    FromDaemon,
}

impl Proxy {
    async fn start(daemon: SocketAddr) -> Proxy {
        let front = UdpSocket::bind((LOOPBACK, 0)).await.expect("bind proxy");
        let back = UdpSocket::bind((LOOPBACK, 0)).await.expect("bind proxy");
        back.connect(daemon).await.expect("connect proxy");
        let addr = front.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
            let mut client = None;
            loop {
                tokio::select! {
                    r = front.recv_from(&mut a) => {
                        let Ok((n, from)) = r else { return };
                        client = Some(from);
                        let _ = back.send(&a[..n]).await;
                        tally(&seen2, Dir::ToDaemon, &a[..n]);
                    }
                    r = back.recv(&mut b) => {
                        let Ok(n) = r else { return };
                        if let Some(c) = client {
                            let _ = front.send_to(&b[..n], c).await;
                        }
                        tally(&seen2, Dir::FromDaemon, &b[..n]);
                    }
                }
            }
        });
        Proxy { addr, seen, task }
    }

    fn count(&self, dir: Dir, kind: &str) -> u32 {
        let seen = self.seen.lock().unwrap();
        seen.get(&(dir, kind)).copied().unwrap_or(0)
    }

    /// Waits (bounded) until `n` datagrams of `kind` went `dir`.
    async fn wait_count(&self, dir: Dir, kind: &str, n: u32) {
        let deadline = tokio::time::Instant::now() + STEP;
        while self.count(dir, kind) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {n} {kind} {dir:?}: {}",
                self.summary()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn summary(&self) -> String {
        format!("{:?}", self.seen.lock().unwrap())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The TURN message type of a datagram (RFC 8656 §17, §12.4).
fn kind(d: &[u8]) -> &'static str {
    if d.first().is_some_and(|b| b & 0xC0 == 0x40) {
        return "ChannelData";
    }
    if d.len() < 20 {
        return "other";
    }
    match u16::from_be_bytes([d[0], d[1]]) {
        0x0001 => "Binding",
        0x0101 => "Binding success",
        0x0003 => "Allocate",
        0x0103 => "Allocate success",
        0x0113 => "Allocate error",
        0x0004 => "Refresh",
        0x0104 => "Refresh success",
        0x0114 => "Refresh error",
        0x0008 => "CreatePermission",
        0x0108 => "CreatePermission success",
        0x0118 => "CreatePermission error",
        0x0009 => "ChannelBind",
        0x0109 => "ChannelBind success",
        0x0119 => "ChannelBind error",
        0x0016 => "Send indication",
        0x0017 => "Data indication",
        _ => "other",
    }
}

/// `key=value` of a log line as a number.
fn num(line: &str, key: &str) -> u64 {
    common::field(line, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {key} in {line:?}"))
}

fn closed_lines(daemon: &Daemon) -> Vec<String> {
    daemon
        .log()
        .into_iter()
        .filter(|l| l.contains("allocation closed"))
        .collect()
}

/// Waits (bounded, without blocking the runtime) for `n` `allocation closed` lines.
fn wait_closed(daemon: &Daemon, n: usize) -> Vec<String> {
    tokio::task::block_in_place(|| {
        daemon.wait_log(STEP, |_| closed_lines(daemon).len() >= n);
    });
    let lines = closed_lines(daemon);
    assert_eq!(
        lines.len(),
        n,
        "allocation closed lines: {:#?}",
        daemon.log()
    );
    lines
}

fn payload(tag: &str, i: usize) -> Vec<u8> {
    // Lengths vary so DATA padding and ChannelData lengths get exercised.
    let mut p = format!("{tag}-{i}-").into_bytes();
    p.extend(vec![b'x'; i % 7]);
    p
}

/// 200 datagrams out through the relay to a plain UDP peer and 200 echoes back, none lost,
/// carried by Send/Data indications first and ChannelData once the channel is bound; the
/// allocation's close line counts them all.
#[tokio::test(flavor = "multi_thread")]
async fn relays_to_a_udp_peer_both_ways_without_loss() {
    const N: usize = 200;
    let mut daemon = Daemon::start(r#"allow_peers = ["127.0.0.1/32"]"#);
    let proxy = Proxy::start(daemon.turn).await;
    let (user, pass) = daemon.credentials("alice");
    let client = client(proxy.addr, user, pass).await;
    let relay = allocated(&client, "client").await;
    let relayed = relay.local_addr().unwrap();
    assert_eq!(relayed.ip(), LOOPBACK, "{relayed}");
    let ports = relay_ports(&daemon);
    assert!(
        ports.contains(&relayed.port()),
        "{relayed} not in {ports:?}"
    );

    let peer = peer_socket(LOOPBACK, &ports).await;
    let peer_addr = peer.local_addr().unwrap();
    let echo = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        for _ in 0..N {
            let (n, from) = peer.recv_from(&mut buf).await.expect("peer recv");
            assert_eq!(from, relayed, "the peer sees the relayed address");
            peer.send_to(&buf[..n], from).await.expect("peer send");
        }
    });
    let rx = relay.clone();
    let receive = tokio::spawn(async move {
        let mut got = Vec::with_capacity(N);
        let mut buf = vec![0u8; 2048];
        while got.len() < N {
            let (n, from) = rx.recv_from(&mut buf).await.expect("relay recv");
            assert_eq!(from, peer_addr, "data comes from the peer");
            got.push(buf[..n].to_vec());
        }
        got
    });

    let started = Instant::now();
    for i in 0..N {
        timeout(STEP, relay.send_to(&payload("out", i), peer_addr))
            .await
            .expect("send in time")
            .expect("send");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    timeout(STEP, echo)
        .await
        .unwrap_or_else(|_| panic!("peer did not get all {N}: {}", proxy.summary()))
        .unwrap();
    let got = timeout(STEP, receive)
        .await
        .unwrap_or_else(|_| panic!("client did not get all {N} echoes: {}", proxy.summary()))
        .unwrap();
    let want: Vec<Vec<u8>> = (0..N).map(|i| payload("out", i)).collect();
    assert_eq!(got, want, "every echo, in order");
    eprintln!(
        "{N} round trips in {:?}: {}",
        started.elapsed(),
        proxy.summary()
    );

    // The client used every mechanism: a permission, Send indications until the channel was
    // bound, then ChannelData both ways.
    assert_eq!(proxy.count(Dir::FromDaemon, "CreatePermission success"), 1);
    assert_eq!(proxy.count(Dir::FromDaemon, "ChannelBind success"), 1);
    assert!(proxy.count(Dir::ToDaemon, "Send indication") >= 1);
    assert!(proxy.count(Dir::ToDaemon, "ChannelData") >= 1);
    assert!(proxy.count(Dir::FromDaemon, "ChannelData") >= 1);
    assert_eq!(
        proxy.count(Dir::ToDaemon, "Send indication") + proxy.count(Dir::ToDaemon, "ChannelData"),
        N as u32
    );
    assert_eq!(
        proxy.count(Dir::FromDaemon, "Data indication")
            + proxy.count(Dir::FromDaemon, "ChannelData"),
        N as u32
    );

    // Closing the relay conn sends Refresh(LIFETIME=0): the daemon deletes the allocation and
    // reports what it relayed.
    relay.close().await.unwrap();
    let lines = wait_closed(&daemon, 1);
    client.close().await.unwrap();
    let line = &lines[0];
    assert_eq!(common::field(line, "reason"), Some("deleted"), "{line}");
    assert_eq!(num(line, "packets_to_peer"), N as u64, "{line}");
    assert_eq!(num(line, "packets_from_peer"), N as u64, "{line}");
    let bytes: u64 = (0..N).map(|i| payload("out", i).len() as u64).sum();
    assert_eq!(num(line, "bytes_to_peer"), bytes, "{line}");
    assert_eq!(num(line, "bytes_from_peer"), bytes, "{line}");
    assert!(daemon.stop().success());
}

/// Two allocations of the same relay reach each other through their relayed addresses, which
/// are on 127.0.0.1 (a refused peer by default): the daemon delivers them inside the process,
/// still under each receiver's permissions.
#[tokio::test(flavor = "multi_thread")]
async fn hairpins_between_two_allocations_under_the_default_policy() {
    const K: usize = 50;
    let mut daemon = Daemon::start("");
    let (pa, pb) = (
        Proxy::start(daemon.turn).await,
        Proxy::start(daemon.turn).await,
    );
    let (user, pass) = daemon.credentials("alice");
    let alice = client(pa.addr, user, pass).await;
    let (user, pass) = daemon.credentials("bob");
    let bob = client(pb.addr, user, pass).await;
    let a = allocated(&alice, "alice").await;
    let b = allocated(&bob, "bob").await;
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    assert_ne!(a_addr, b_addr);

    // Alice's first datagram creates her permission, then reaches Bob's allocation before Bob
    // has one for her: dropped. Bob's send returns once his permission is in place, so his
    // datagram reaches Alice, and everything after flows both ways.
    timeout(STEP, a.send_to(b"alice-0", b_addr))
        .await
        .expect("alice sends in time")
        .expect("alice's permission toward a relayed address");
    // In the daemon's socket before anything of Bob's (the proxies could reorder otherwise).
    pa.wait_count(Dir::ToDaemon, "Send indication", 1).await;
    timeout(STEP, b.send_to(b"bob-0", a_addr))
        .await
        .expect("bob sends in time")
        .expect("bob's permission toward a relayed address");
    let mut buf = vec![0u8; 2048];
    let (n, from) = timeout(STEP, a.recv_from(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("alice got nothing: {} / {}", pa.summary(), pb.summary()))
        .unwrap();
    assert_eq!((&buf[..n], from), (&b"bob-0"[..], b_addr));

    // One receiver per side, each collecting K datagrams in order.
    macro_rules! receiver {
        ($conn:expr, $tag:literal, $from:expr) => {{
            let conn = Arc::clone(&$conn);
            let from = $from;
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = vec![0u8; 2048];
                while got.len() < K {
                    let (n, src) = conn.recv_from(&mut buf).await.expect("recv");
                    assert_eq!(
                        src, from,
                        "{} gets data from the other relayed address",
                        $tag
                    );
                    got.push(buf[..n].to_vec());
                }
                got
            })
        }};
    }
    let to_bob = receiver!(b, "bob", a_addr);
    let to_alice = receiver!(a, "alice", b_addr);
    for i in 1..=K {
        timeout(STEP, a.send_to(&payload("alice", i), b_addr))
            .await
            .expect("in time")
            .expect("alice sends");
        timeout(STEP, b.send_to(&payload("bob", i), a_addr))
            .await
            .expect("in time")
            .expect("bob sends");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let got_bob = timeout(STEP, to_bob)
        .await
        .unwrap_or_else(|_| panic!("bob short: {} / {}", pa.summary(), pb.summary()))
        .unwrap();
    let got_alice = timeout(STEP, to_alice)
        .await
        .unwrap_or_else(|_| panic!("alice short: {} / {}", pa.summary(), pb.summary()))
        .unwrap();
    let want = |tag| (1..=K).map(|i| payload(tag, i)).collect::<Vec<_>>();
    assert_eq!(got_bob, want("alice"), "alice-0 dropped, the rest in order");
    assert_eq!(got_alice, want("bob"));
    eprintln!("alice: {}\nbob: {}", pa.summary(), pb.summary());
    for p in [&pa, &pb] {
        assert_eq!(p.count(Dir::FromDaemon, "ChannelBind success"), 1);
        assert!(
            p.count(Dir::ToDaemon, "ChannelData") >= 1,
            "{}",
            p.summary()
        );
        assert!(
            p.count(Dir::FromDaemon, "ChannelData") >= 1,
            "{}",
            p.summary()
        );
    }

    a.close().await.unwrap();
    b.close().await.unwrap();
    let lines = wait_closed(&daemon, 2);
    alice.close().await.unwrap();
    bob.close().await.unwrap();
    let mut usage: Vec<_> = lines
        .iter()
        .map(|l| {
            assert_eq!(common::field(l, "reason"), Some("deleted"), "{l}");
            (num(l, "packets_to_peer"), num(l, "packets_from_peer"))
        })
        .collect();
    usage.sort();
    let k = K as u64;
    // Alice's relay sent alice-0 (Bob's allocation dropped it); each side got what it was sent.
    assert_eq!(usage, [(k + 1, k), (k + 1, k + 1)], "{lines:#?}");
    assert!(daemon.stop().success());
}

/// Under the default policy nothing reaches a plain UDP peer on loopback: not on the relay's
/// own address (127.0.0.1, off the relay ports), not on another loopback address (127.0.0.2,
/// CreatePermission refused with 403). The daemon carries on.
#[tokio::test(flavor = "multi_thread")]
async fn default_policy_keeps_loopback_peers_unreachable() {
    let mut daemon = Daemon::start("");
    let proxy = Proxy::start(daemon.turn).await;
    let (user, pass) = daemon.credentials("mallory");
    let mallory = client(proxy.addr, user, pass).await;
    let relay = allocated(&mallory, "mallory").await;
    let ports = relay_ports(&daemon);
    let own = peer_socket(LOOPBACK, &ports).await;
    let other = peer_socket(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), &ports).await;

    for peer in [&own, &other] {
        let to = peer.local_addr().unwrap();
        for i in 0..5 {
            let sent = timeout(STEP, relay.send_to(&payload("ssrf", i), to))
                .await
                .expect("send in time");
            // Toward the relay's own address the permission is granted (its relay ports are
            // legitimate peers) and each Send is dropped; anywhere else on loopback it is 403.
            if to.ip() != LOOPBACK {
                let err = sent.expect_err("permission toward 127.0.0.2 refused");
                assert!(err.to_string().contains("403"), "{err}");
            }
        }
    }
    tokio::join!(assert_silent(&own), assert_silent(&other));
    eprintln!("{}", proxy.summary());
    // No channel to a refused peer either: the client kept to (dropped) Send indications.
    assert_eq!(proxy.count(Dir::FromDaemon, "ChannelBind success"), 0);
    assert_eq!(proxy.count(Dir::ToDaemon, "ChannelData"), 0);

    // Still serving: a new client allocates.
    let (user, pass) = daemon.credentials("carol");
    let carol = client(daemon.turn, user, pass).await;
    drop(allocated(&carol, "carol, after the refusals").await);
    assert!(daemon.stop().success(), "{:#?}", daemon.log());
}

/// A password that is not base64(HMAC-SHA1(secret, username)), or a username whose expiry has
/// passed, gets 401 and no allocation; right credentials on the same daemon still work.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_or_expired_credentials_get_401() {
    let mut daemon = Daemon::start("");
    let expiry = common::unix_now() + 3600;
    let forged = switchboard_turn::credentials::mint(b"not-the-secret", "mallory", expiry);
    let expired = common::credentials("mallory", common::unix_now() - 10);
    for (what, user, pass) in [
        ("forged password", forged.username, forged.password),
        ("expired username", expired.0, expired.1),
    ] {
        let c = client(daemon.turn, user, pass).await;
        let err = refused(&c, what).await;
        assert!(err.contains("401"), "{what}: {err}");
        c.close().await.unwrap();
    }
    let (user, pass) = daemon.credentials("alice");
    let alice = client(daemon.turn, user, pass).await;
    drop(allocated(&alice, "alice, with the right credentials").await);
    assert!(daemon.stop().success());
    // Shutdown closes what is open: alice's allocation, and nothing for the refused ones.
    let closed = closed_lines(&daemon);
    assert_eq!(closed.len(), 1, "{closed:#?}");
    assert_eq!(common::field(&closed[0], "reason"), Some("closed"));
}

/// Credentials minted by Matrix, Nextcloud Talk, Jitsi and BigBlueButton deployments (see
/// `common::foreign_usernames`) allocate and relay both ways; the same usernames with a wrong
/// password get 401 and no allocation.
#[tokio::test(flavor = "multi_thread")]
async fn other_deployments_credentials_relay_and_a_wrong_hmac_is_401() {
    const N: usize = 20;
    let mut daemon = Daemon::start(r#"allow_peers = ["127.0.0.1/32"]"#);
    let ports = relay_ports(&daemon);
    let shapes = common::foreign_usernames(common::unix_now() + 3600);
    for (who, username) in &shapes {
        let password = common::password_for(username);
        let c = client(daemon.turn, username.clone(), password).await;
        let relay = allocated(&c, &format!("{who} {username}")).await;
        let relayed = relay.local_addr().unwrap();
        let peer = peer_socket(LOOPBACK, &ports).await;
        let peer_addr = peer.local_addr().unwrap();
        let mut buf = vec![0u8; 2048];
        for i in 0..N {
            let out = payload(who, i);
            timeout(STEP, relay.send_to(&out, peer_addr))
                .await
                .expect("send in time")
                .expect("send");
            let (n, from) = timeout(STEP, peer.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{who}: datagram {i} did not reach the peer"))
                .unwrap();
            assert_eq!((&buf[..n], from), (&out[..], relayed), "{who}");
            peer.send_to(&buf[..n], from).await.unwrap();
            let (n, from) = timeout(STEP, relay.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{who}: echo {i} did not come back"))
                .unwrap();
            assert_eq!((&buf[..n], from), (&out[..], peer_addr), "{who}");
        }
        relay.close().await.unwrap();
        c.close().await.unwrap();
    }
    let lines = wait_closed(&daemon, shapes.len());
    for line in &lines {
        assert_eq!(common::field(line, "reason"), Some("deleted"), "{line}");
        assert_eq!(num(line, "packets_to_peer"), N as u64, "{line}");
        assert_eq!(num(line, "packets_from_peer"), N as u64, "{line}");
    }
    for (who, username) in &shapes {
        let wrong = switchboard_turn::credentials::password_for(b"not-the-secret", username);
        let c = client(daemon.turn, username.clone(), wrong).await;
        let err = refused(&c, who).await;
        assert!(err.contains("401"), "{who}: {err}");
        c.close().await.unwrap();
    }
    assert!(daemon.stop().success());
    assert_eq!(
        closed_lines(&daemon).len(),
        shapes.len(),
        "{:#?}",
        daemon.log()
    );
}

/// An explicitly allowed peer on the relay's own address, on a port inside the relay range that
/// no allocation holds (another process's socket): CreatePermission and ChannelBind succeed, yet
/// every datagram is taken for the hairpin, finds no allocation and is dropped silently
/// (`Server::forward`), uncounted. Ignored until the daemon relays it to the network (or refuses
/// the permission/channel with 403, so the client can tell).
#[tokio::test(flavor = "multi_thread")]
async fn allowed_peer_on_an_unheld_relay_port_is_reachable() {
    let mut daemon = Daemon::start(r#"allow_peers = ["127.0.0.1/32"]"#);
    let (user, pass) = daemon.credentials("alice");
    let client = client(daemon.turn, user, pass).await;
    let relay = allocated(&client, "client").await;
    let ports = relay_ports(&daemon);
    let mut peer = None;
    for port in ports.clone().rev() {
        if let Ok(s) = UdpSocket::bind((LOOPBACK, port)).await {
            peer = Some(s);
            break;
        }
    }
    let peer = peer.expect("a free port in the relay range");
    let to = peer.local_addr().unwrap();
    for i in 0..20 {
        timeout(STEP, relay.send_to(&payload("x", i), to))
            .await
            .expect("send in time")
            .expect("send");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut buf = [0u8; 2048];
    let got = timeout(Duration::from_secs(1), peer.recv_from(&mut buf)).await;
    relay.close().await.unwrap();
    let closed = wait_closed(&daemon, 1);
    assert!(got.is_ok(), "nothing reached {to}; {closed:?}");
    assert!(daemon.stop().success());
}
