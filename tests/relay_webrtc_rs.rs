//! webrtc-rs' TURN client (crate `turn`) against the real daemon over loopback: a third-party
//! client's Allocate, CreatePermission, Send/Data indications, ChannelBind/ChannelData and
//! Refresh(0), the in-process hairpin between two allocations, the default peer policy and
//! authentication failures.
//!
//! Each test starts its own daemon (port 0) and bounds every wait.

mod common;

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

/// A relay `Conn` from `Client::allocate` as an `Arc<dyn Conn + Send + Sync>`, whose methods
/// (`send_to`, `recv_from`, `local_addr`, `close`) are then callable without importing `Conn`.
///
/// Why: `turn` 0.17 implements webrtc-util **0.17**'s `Conn`, while the dev-dependency is
/// `webrtc-util = "0.11"`, a different crate version whose `Conn` is another trait, so the right
/// one cannot be named here. `ClientConfig::conn` is typed with it, and coercing into that field
/// reaches it. With `webrtc-util = "0.17"` in Cargo.toml this becomes
/// `Arc::new($conn) as Arc<dyn webrtc_util::Conn + Send + Sync>`.
macro_rules! dyn_conn {
    ($conn:expr) => {
        ClientConfig {
            stun_serv_addr: String::new(),
            turn_serv_addr: String::new(),
            username: String::new(),
            password: String::new(),
            realm: String::new(),
            software: String::new(),
            rto_in_ms: 0,
            conn: Arc::new($conn),
            vnet: None,
        }
        .conn
    };
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

/// A UDP proxy between a client and the daemon that tallies what crosses it, by direction and
/// TURN message type, so a test can see which mechanisms the client really used.
struct Proxy {
    addr: SocketAddr,
    seen: Arc<Mutex<BTreeMap<(Dir, &'static str), u32>>>,
    task: tokio::task::JoinHandle<()>,
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
        let tally = seen.clone();
        let task = tokio::spawn(async move {
            let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
            let mut client = None;
            loop {
                tokio::select! {
                    r = front.recv_from(&mut a) => {
                        let Ok((n, from)) = r else { return };
                        client = Some(from);
                        *tally.lock().unwrap().entry((Dir::ToDaemon, kind(&a[..n]))).or_insert(0) += 1;
                        let _ = back.send(&a[..n]).await;
                    }
                    r = back.recv(&mut b) => {
                        let Ok(n) = r else { return };
                        *tally.lock().unwrap().entry((Dir::FromDaemon, kind(&b[..n]))).or_insert(0) += 1;
                        if let Some(c) = client {
                            let _ = front.send_to(&b[..n], c).await;
                        }
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
    let relay = dyn_conn!(timeout(STEP, client.allocate())
        .await
        .expect("allocate in time")
        .expect("allocate"));
    let relayed = relay.local_addr().unwrap();
    assert_eq!(relayed.ip(), LOOPBACK, "{relayed}");
    let ports = relay_ports(&daemon);
    assert!(ports.contains(&relayed.port()), "{relayed} not in {ports:?}");

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
