//! The relay under a reflection attempt, from outside the box: a client in a network namespace
//! of the test's own (a veth pair; nothing leaves the machine) floods the daemon with minimal
//! unauthenticated Allocates from one address, as a spoofer would to aim the 401s at a victim.
//! The daemon answers the burst and then its sustained budget, drops the rest (counted in
//! `/metrics`), keeps answering another address in full, and answers the first again once its
//! budget refills.
//!
//! Needs root (namespaces) and `ip` (iproute2), as CI has; a missing one fails the test.

use crate::common;

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{code, request, Daemon, Options};
use stun_types::message::{MessageWrite, MessageWriteExt};
use turn_types::attribute::RequestedTransport;
use turn_types::message::ALLOCATE;

/// The daemon's budget per source (turn/src/proto/limit.rs).
const BURST: u64 = 100;
const PER_SECOND: u64 = 50;

/// A network namespace with a veth pair to the host: `host` is the host's end, `inside` the
/// addresses of the namespace's end (the first is the one connections leave from). Removed on
/// drop. Also used by `relay_flood`.
pub(crate) struct Netns {
    name: String,
    pub(crate) host: Ipv4Addr,
    pub(crate) inside: [Ipv4Addr; 2],
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("`ip` (iproute2) is needed: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {} (this test needs root)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// `tag` (0 to 40) tells apart the namespaces of tests that run at once: it is in their
    /// names and their network, 10.(200 + tag).x.0/24.
    pub(crate) fn new(tag: u8) -> Netns {
        let id = std::process::id() % 50_000;
        let name = format!("sbns{tag}x{id}");
        let (veth_host, veth_ns) = (format!("sb{tag}h{id}"), format!("sb{tag}n{id}"));
        let net = [10, 200 + tag, (id % 250) as u8];
        let at = |last: u8| Ipv4Addr::new(net[0], net[1], net[2], last);
        let n = Netns {
            name: name.clone(),
            host: at(1),
            inside: [at(2), at(3)],
        };
        // Leftovers of an earlier, killed run go first.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &veth_host])
            .output();
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &veth_host, "type", "veth", "peer", "name", &veth_ns,
        ]);
        ip(&["link", "set", &veth_ns, "netns", &name]);
        ip(&["addr", "add", &format!("{}/24", n.host), "dev", &veth_host]);
        ip(&["link", "set", &veth_host, "up"]);
        for a in n.inside {
            ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{a}/24"),
                "dev",
                &veth_ns,
            ]);
        }
        ip(&["-n", &name, "link", "set", &veth_ns, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        n
    }

    /// Runs `f` on a thread that has entered the namespace (setns affects the calling thread
    /// only; sockets it opens belong to the namespace).
    pub(crate) fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = File::open(format!("/var/run/netns/{}", self.name)).expect("the namespace");
        std::thread::spawn(move || {
            // SAFETY: setns(2) on an open namespace fd, for this thread only.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("the namespace thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end, and with it the host's.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn minimal_allocate() -> Vec<u8> {
    let mut w = request(ALLOCATE);
    w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
        .unwrap();
    w.finish()
}

/// Sends one minimal Allocate a millisecond for `span` from `from`, then counts the answers.
fn flood(from: Ipv4Addr, server: SocketAddr, span: Duration) -> (u64, u64, Duration) {
    let sock = UdpSocket::bind((from, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < span {
        sock.send_to(&minimal_allocate(), server).unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = start.elapsed();
    let mut answered = 0;
    let mut buf = [0u8; 1500];
    while let Ok(n) = sock.recv(&mut buf) {
        assert_eq!(code(&buf[..n]), 401, "every answer is a challenge");
        answered += 1;
    }
    (sent, answered, took)
}

fn one_challenge(from: Ipv4Addr, server: SocketAddr) -> Option<u16> {
    let sock = UdpSocket::bind((from, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    sock.send_to(&minimal_allocate(), server).unwrap();
    let mut buf = [0u8; 1500];
    sock.recv(&mut buf).ok().map(|n| code(&buf[..n]))
}

#[test]
fn challenges_to_one_outside_address_are_limited_and_others_still_served() {
    let ns = Netns::new(13);
    let d = Daemon::start_with(Options {
        turn: format!(
            "listen = [\"{0}:0\"]\nrelay_ip = \"{0}\"\nexternal_ip = \"{0}\"\n",
            ns.host
        ),
        ..Options::default()
    });
    let server = d.turn;
    let [attacker, bystander] = ns.inside;

    let (sent, answered, took, other) = ns.run(move || {
        let (sent, answered, took) = flood(attacker, server, Duration::from_millis(1500));
        // Meanwhile another address is answered as ever.
        let other = one_challenge(bystander, server);
        (sent, answered, took, other)
    });
    println!("flood: {sent} Allocates in {took:?}, {answered} challenges back");
    let budget = BURST + PER_SECOND * (took.as_millis() as u64 + 300) / 1000;
    assert!(
        sent > 2 * budget,
        "the flood was too slow to test anything: {sent}"
    );
    assert!(
        (BURST..=budget).contains(&answered),
        "{answered} challenges answered to {sent} requests in {took:?} (budget {budget})"
    );
    assert_eq!(other, Some(401), "the other address was not answered");
    let dropped = d.metric("switchboard_turn_challenges_dropped_total");
    assert_eq!(dropped, sent - answered, "the drops are counted");

    // Once its budget refills, the address is answered again (a real client's retry).
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(ns.run(move || one_challenge(attacker, server)), Some(401));
}
