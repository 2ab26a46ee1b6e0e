//! Every refusal of the relay, over its real UDP socket: error codes per RFC 8489/8656, and
//! nothing allocated by a failed request.

use crate::common;
use crate::relay_abuse::Netns;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    code, credentials, nonce_of, relayed_of, request, unix_now, wait_until, Daemon, Options, REALM,
};
use stun_types::attribute::{AttributeStaticType, Nonce, Realm, UnknownAttributes};
use stun_types::message::{Message, MessageWrite, MessageWriteExt, MessageWriteVec, Method};
use turn_types::attribute::{
    AdditionalAddressFamily, ChannelNumber, Data, Lifetime, RequestedTransport, XorPeerAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, SEND};
use turn_types::AddressFamily;

/// A raw STUN client on its own UDP socket (its own 5-tuple); `relay_bandwidth` uses it too.
pub(crate) struct Client {
    pub(crate) sock: UdpSocket,
    server: SocketAddr,
    username: String,
    password: String,
}

impl Client {
    pub(crate) fn new(d: &Daemon, user: &str) -> Client {
        let (username, password) = d.credentials(user);
        Client::with(d, username, password)
    }

    fn with(d: &Daemon, username: String, password: String) -> Client {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        Client {
            sock,
            server: d.turn,
            username,
            password,
        }
    }

    /// Sends `bytes` and returns the answer (retransmitting a few times, bounded).
    fn exchange(&self, bytes: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        for _ in 0..6 {
            self.sock.send_to(bytes, self.server).unwrap();
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                return buf[..n].to_vec();
            }
        }
        panic!("no answer from the relay");
    }

    /// No answer within half a second.
    fn silent(&self, bytes: &[u8]) -> bool {
        self.sock.send_to(bytes, self.server).unwrap();
        let mut buf = vec![0u8; 2048];
        self.sock.recv_from(&mut buf).is_err()
    }

    /// An authenticated request: unauthenticated first for the nonce, as clients do.
    pub(crate) fn authed(&self, w: impl Fn() -> MessageWriteVec) -> Vec<u8> {
        // The nonce comes from an Allocate's challenge, as for real clients (the relay does
        // not challenge other requests from a 5-tuple without an allocation).
        let challenge = self.exchange(&allocate_req(17).finish());
        self.exchange(&self.seal(w(), &nonce_of(&challenge)))
    }

    fn seal(&self, w: MessageWriteVec, nonce: &str) -> Vec<u8> {
        common::seal(w, &self.username, &self.password, nonce)
    }

    pub(crate) fn allocate(&self) -> Vec<u8> {
        self.authed(|| allocate_req(17))
    }
}

fn allocate_req(transport: u8) -> MessageWriteVec {
    let mut w = request(ALLOCATE);
    w.add_attribute(&RequestedTransport::new(transport))
        .unwrap();
    w
}

pub(crate) fn with_peer(method: Method, peer: &str) -> MessageWriteVec {
    let mut w = request(method);
    let txid = w.transaction_id();
    w.add_attribute(&XorPeerAddress::new(peer.parse().unwrap(), txid))
        .unwrap();
    w
}

#[test]
fn challenge_is_small_stateless_and_repeatable() {
    let d = Daemon::start("");
    let c = Client::new(&d, "alice");
    let mut w = allocate_req(17);
    w.add_attribute(&Lifetime::new(600)).unwrap();
    let req = w.finish();
    assert_eq!(req.len(), 36);
    let first = c.exchange(&req);
    assert_eq!(code(&first), 401);
    assert!(
        first.len() <= 2 * req.len(),
        "a 36-byte Allocate is answered with {} bytes",
        first.len()
    );
    assert_eq!(
        c.exchange(&req),
        first,
        "a retransmission gets the same bytes"
    );
    let msg = Message::from_bytes(&first).unwrap();
    assert_eq!(msg.attribute::<Realm>().unwrap().realm(), REALM);
    assert!(!msg.has_attribute(stun_types::attribute::Software::TYPE));
}

#[test]
fn bad_credentials_are_401_and_a_bad_nonce_is_438() {
    let d = Daemon::start("");
    // Expired.
    let (u, p) = credentials("alice", unix_now() - 5);
    assert_eq!(code(&Client::with(&d, u, p).allocate()), 401);
    // Forged password.
    let (u, _) = credentials("alice", unix_now() + 60);
    assert_eq!(
        code(&Client::with(&d, u, "Zm9yZ2Vk".into()).allocate()),
        401
    );
    // Not a REST username at all.
    assert_eq!(
        code(&Client::with(&d, "alice".into(), "x".into()).allocate()),
        401
    );
    // A nonce the relay never issued.
    let c = Client::new(&d, "alice");
    let bytes = c.exchange(&c.seal(allocate_req(17), "AAAAAAAAAAAAAAAA"));
    assert_eq!(code(&bytes), 438);
    assert!(Message::from_bytes(&bytes)
        .unwrap()
        .has_attribute(Nonce::TYPE));
    // Another client's nonce.
    let other = Client::new(&d, "alice");
    let theirs = common::nonce_of(&other.exchange(&allocate_req(17).finish()));
    assert_eq!(code(&c.exchange(&c.seal(allocate_req(17), &theirs))), 438);
}

#[test]
fn allocation_errors_437_441_442() {
    let d = Daemon::start("");
    let alice = Client::new(&d, "alice");
    assert_eq!(
        code(&alice.authed(|| request(REFRESH))),
        437,
        "no allocation yet"
    );
    assert_eq!(code(&alice.authed(|| allocate_req(6))), 442, "TCP relaying");
    let ok = alice.allocate();
    assert_eq!(code(&ok), 200);
    let relayed = relayed_of(&ok);
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");
    assert!((20000..=29999).contains(&relayed.port()));
    assert_eq!(
        code(&alice.allocate()),
        437,
        "a second Allocate on the same 5-tuple"
    );
    // Someone else's credentials on alice's 5-tuple.
    let (u, p) = d.credentials("mallory");
    let mallory = Client {
        sock: alice.sock.try_clone().unwrap(),
        server: d.turn,
        username: u,
        password: p,
    };
    assert_eq!(code(&mallory.authed(|| request(REFRESH))), 441);
    // Alice deletes it; then Refresh finds nothing.
    let del = || {
        let mut w = request(REFRESH);
        w.add_attribute(&Lifetime::new(0)).unwrap();
        w
    };
    assert_eq!(code(&alice.authed(del)), 200);
    assert_eq!(code(&alice.authed(|| request(REFRESH))), 437);
}

#[test]
fn user_quota_is_486() {
    let d = Daemon::start("user_quota = 2");
    assert_eq!(code(&Client::new(&d, "alice").allocate()), 200);
    assert_eq!(code(&Client::new(&d, "alice").allocate()), 200);
    assert_eq!(code(&Client::new(&d, "alice").allocate()), 486);
    assert_eq!(code(&Client::new(&d, "bob").allocate()), 200, "per user");
}

/// An allocation flood by holders of valid credentials: each attacker gets its user quota and
/// no more, a legitimate user still allocates, and the total quota holds when it is reached.
#[test]
fn quotas_hold_under_an_allocation_flood() {
    let d = Daemon::start("user_quota = 10\ntotal_quota = 30");
    let flood = |user: &str, n: usize| -> (Vec<Client>, usize) {
        let mut kept = Vec::new();
        let mut refused = 0;
        for _ in 0..n {
            let c = Client::new(&d, user);
            match code(&c.allocate()) {
                200 => kept.push(c), // holds its allocation while it lives
                486 => refused += 1,
                other => panic!("{user}: unexpected {other}"),
            }
        }
        (kept, refused)
    };
    let (mallory, refused) = flood("mallory", 200);
    assert_eq!((mallory.len(), refused), (10, 190));
    let (trudy, refused) = flood("trudy", 200);
    assert_eq!((trudy.len(), refused), (10, 190));
    let alice = Client::new(&d, "alice");
    assert_eq!(
        code(&alice.allocate()),
        200,
        "a legitimate user still allocates"
    );
    // Nine more users fill the relay to its 30; the next is refused whoever it is.
    let (others, refused) = flood("oscar", 9);
    assert_eq!((others.len(), refused), (9, 0));
    assert_eq!(
        code(&Client::new(&d, "bob").allocate()),
        486,
        "the total quota"
    );
}

#[test]
fn no_free_relay_port_is_508() {
    // Two relay ports, both taken by someone else: the relay cannot open a socket.
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = a.local_addr().unwrap().port();
    let b = UdpSocket::bind(("127.0.0.1", port + 1));
    let Ok(_b) = b else {
        return; // The neighbour port is busy: nothing to prove with this pair.
    };
    let extra = format!("relay_ports = \"{}-{}\"\ntotal_quota = 2", port, port + 1);
    let d = Daemon::start(&extra);
    let bytes = Client::new(&d, "alice").allocate();
    assert_eq!(code(&bytes), 508);
    drop(a);
    assert_eq!(
        code(&Client::new(&d, "alice").allocate()),
        200,
        "the port is free again"
    );
}

/// The peer policy's whole matrix, on each of CreatePermission, ChannelBind and Send: every
/// special-purpose range of IPv4 and IPv6, and IPv6 addresses that embed a forbidden IPv4 one
/// (mapped, NAT64, 6to4). A refused permission or channel is 403, counted in `/metrics`; a Send
/// to such a peer is dropped silently (an indication has no answer), never having a permission.
#[test]
fn peer_policy_refuses_the_dangerous_addresses_with_403() {
    // Relay sockets on 127.0.0.2 and [::1], so that 127.0.0.1 is not one of the relay's own
    // addresses (which are always permitted: relay-to-relay traffic is delivered inside the
    // process), and IPv6 peers have an IPv6 relayed address to go from. (So [::1] is one of
    // its own: own addresses are tested below.)
    // No SFU: its address (127.0.0.1 in tests) is the one peer the relay serves inside the
    // process, permitted by IP (`turn` core test `the_sfu_beside_the_relay_is_a_local_peer`).
    let d = Daemon::start_with(Options {
        turn: "relay_ip = [\"127.0.0.2\", \"::1\"]".to_owned(),
        calls: "sfu_from = 0".to_owned(),
        ..Options::default()
    });
    let c = Client::new(&d, "alice");
    assert_eq!(code(&c.authed(dual_allocate_req)), 200);
    // A real service on 127.0.0.1: no Send may reach it.
    let service = UdpSocket::bind("127.0.0.1:0").unwrap();
    service
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let service_addr = service.local_addr().unwrap().to_string();
    let peers = [
        service_addr.as_str(),     // loopback
        "0.0.0.0:9",               // this network
        "10.0.0.1:9",              // private
        "172.16.0.1:9",            // private
        "192.168.1.1:9",           // private
        "100.64.0.1:9",            // CGNAT
        "169.254.169.254:80",      // link-local: cloud metadata
        "198.18.0.1:9",            // benchmarking
        "224.0.0.1:9",             // multicast
        "255.255.255.255:9",       // broadcast
        "240.0.0.1:9",             // reserved
        "[::]:9",                  // unspecified
        "[fc00::1]:9",             // unique local
        "[fe80::1]:9",             // link-local
        "[ff02::1]:9",             // multicast
        "[::ffff:127.0.0.1]:9",    // IPv4-mapped loopback
        "[::ffff:10.0.0.1]:9",     // IPv4-mapped private
        "[64:ff9b::7f00:1]:9",     // NAT64 of loopback
        "[64:ff9b::a9fe:a9fe]:80", // NAT64 of the metadata address
        "[2002:7f00:1::1]:9",      // 6to4 of loopback
        "[2002:a00:1::1]:9",       // 6to4 of 10.0.0.1
    ];
    let refusals_before = d.metric("switchboard_turn_peer_refusals_total");
    for peer in peers {
        let bytes = c.authed(|| with_peer(CREATE_PERMISSION, peer));
        assert_eq!(code(&bytes), 403, "CreatePermission {peer}");
        let bytes = c.authed(|| {
            let mut w = with_peer(CHANNEL_BIND, peer);
            w.add_attribute(&ChannelNumber::new(0x4000)).unwrap();
            w
        });
        assert_eq!(code(&bytes), 403, "ChannelBind {peer}");
        assert!(
            c.silent(&send_indication(peer, b"let me in")),
            "Send {peer}"
        );
    }
    let mut buf = [0u8; 64];
    assert!(service.recv(&mut buf).is_err(), "a Send reached 127.0.0.1");
    assert!(
        wait_until(Duration::from_secs(3), || d
            .metric("switchboard_turn_peer_refusals_total")
            == refusals_before + 2 * peers.len() as u64),
        "{} refusals counted for {} peers, two ways",
        d.metric("switchboard_turn_peer_refusals_total") - refusals_before,
        peers.len()
    );
    // A public address is fine, both families.
    for peer in ["8.8.8.8:53", "[2001:4860:4860::8888]:53"] {
        assert_eq!(
            code(&c.authed(|| with_peer(CREATE_PERMISSION, peer))),
            200,
            "{peer}"
        );
    }
}

/// An Allocate for an IPv4 and an IPv6 relayed address (ADDITIONAL-ADDRESS-FAMILY).
fn dual_allocate_req() -> MessageWriteVec {
    let mut w = allocate_req(RequestedTransport::UDP);
    w.add_attribute(&AdditionalAddressFamily::new(AddressFamily::IPV6))
        .unwrap();
    w
}

fn send_indication(peer: &str, payload: &[u8]) -> Vec<u8> {
    let mut w = Message::builder_indication(SEND, MessageWriteVec::new());
    let txid = w.transaction_id();
    let peer: SocketAddr = peer.parse().unwrap();
    w.add_attribute(&XorPeerAddress::new(peer, txid)).unwrap();
    w.add_attribute(&Data::new(payload)).unwrap();
    w.finish()
}

#[test]
fn malformed_and_unknown_requests() {
    let d = Daemon::start("");
    let c = Client::new(&d, "alice");
    // A request whose attribute runs past its end: 400 with the same transaction id.
    let good = request(Method::new(0x0001)).finish();
    let mut bad = good.clone();
    bad[3] = 8;
    bad.extend_from_slice(&[0x00, 0x06, 0x00, 0x40, 1, 2, 3, 4]);
    let answer = c.exchange(&bad);
    assert_eq!(code(&answer), 400);
    assert_eq!(answer[8..20], good[8..20]);
    // An unknown method: 400.
    assert_eq!(
        code(&c.exchange(&request(Method::new(0x0123)).finish())),
        400
    );
    // An unknown comprehension-required attribute: 420 naming it.
    let mut w = request(Method::new(0x0001));
    w.push_attribute_unchecked(&stun_types::attribute::RawAttribute::new(
        0x0031.into(),
        &[0, 0, 0, 0],
    ));
    let answer = c.exchange(&w.finish());
    assert_eq!(code(&answer), 420);
    let msg = Message::from_bytes(&answer).unwrap();
    assert!(msg
        .attribute::<UnknownAttributes>()
        .unwrap()
        .has_attribute(0x0031.into()));
    // Garbage: no answer, and the relay still serves.
    assert!(c.silent(b"\x17\x03\x03\x00\x10garbage-garbage!"));
    assert!(c.silent(&[0u8; 3]));
    assert_eq!(code(&c.exchange(&good)), 200);
}

#[test]
fn own_address_is_a_peer_only_on_relay_ports() {
    // The development default: relay sockets on 127.0.0.1. Permitting 127.0.0.1 is needed for
    // relay-to-relay calls on one box, but its other ports (the HTTP API, say) stay closed.
    let d = Daemon::start("");
    let c = Client::new(&d, "alice");
    assert_eq!(code(&c.allocate()), 200);
    assert_eq!(
        code(&c.authed(|| with_peer(CREATE_PERMISSION, "127.0.0.1:8080"))),
        200
    );
    let bind = |peer: &'static str| {
        move || {
            let mut w = with_peer(CHANNEL_BIND, peer);
            w.add_attribute(&ChannelNumber::new(0x4000)).unwrap();
            w
        }
    };
    assert_eq!(code(&c.authed(bind("127.0.0.1:8080"))), 403);
    assert_eq!(
        code(&c.authed(bind("127.0.0.1:20000"))),
        200,
        "a relay port"
    );
    // Nothing from a non-relay port of the box reaches the client either...
    assert!(!local_service_reaches_client(&d));
    // ...unless allow_peers names the address (the control: the same path does deliver).
    let open = Daemon::start("allow_peers = [\"127.0.0.1/32\"]");
    assert!(local_service_reaches_client(&open));
}

/// The box's own addresses, the public one (`external_ip`) as much as the private one
/// (`relay_ip`): a peer only on relay ports. Its HTTP port, or any other service, cannot be
/// reached through the relay by either, with a channel or with Send.
#[test]
fn own_addresses_public_and_private_reach_only_relay_ports() {
    let d = Daemon::start("external_ip = \"203.0.113.7\"");
    let c = Client::new(&d, "alice");
    assert_eq!(code(&c.allocate()), 200);
    let service = UdpSocket::bind("127.0.0.1:0").unwrap();
    service
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let (http, other) = (d.http.port(), service.local_addr().unwrap().port());
    let refusals_before = d.metric("switchboard_turn_peer_refusals_total");
    for (n, ip) in [(0, "127.0.0.1"), (1, "203.0.113.7")] {
        // A permission is per address, and these are the relay's own (relay-to-relay calls).
        let perm = c.authed(|| with_peer(CREATE_PERMISSION, &format!("{ip}:1")));
        assert_eq!(code(&perm), 200, "{ip}");
        for port in [http, other] {
            let peer = format!("{ip}:{port}");
            let bind = c.authed(|| {
                let mut w = with_peer(CHANNEL_BIND, &peer);
                w.add_attribute(&ChannelNumber::new(0x4000)).unwrap();
                w
            });
            assert_eq!(code(&bind), 403, "ChannelBind {peer}");
            assert!(
                c.silent(&send_indication(&peer, b"GET / HTTP/1.0")),
                "Send {peer}"
            );
        }
        // A relay port of its own is a peer (a channel number per peer).
        let relay_port = format!("{ip}:20000");
        let bind = c.authed(|| {
            let mut w = with_peer(CHANNEL_BIND, &relay_port);
            w.add_attribute(&ChannelNumber::new(0x4000 + n)).unwrap();
            w
        });
        assert_eq!(code(&bind), 200, "ChannelBind {relay_port}");
    }
    let mut buf = [0u8; 64];
    assert!(
        service.recv(&mut buf).is_err(),
        "a Send reached a local service"
    );
    // Each refused ChannelBind and Send is counted.
    assert!(
        wait_until(Duration::from_secs(3), || d
            .metric("switchboard_turn_peer_refusals_total")
            == refusals_before + 8),
        "{} refusals",
        d.metric("switchboard_turn_peer_refusals_total") - refusals_before
    );
}

/// The README's own example through the daemon: `relay_ip` a LAN address of the box (the host's
/// end of a veth pair into a namespace of the test's, 10.216.x.1) and
/// `allow_peers = ["10.0.0.0/8"]`. A UDP echo service of the box on that address, on a port that
/// is not a relay port, cannot be reached through the relay (ChannelBind 403, a Send dropped and
/// counted, the echo hears nothing), while a LAN host the range names (the namespace's
/// address) is a peer both ways. An entry naming the address alone, with the service's port,
/// opens the service: the same Send is echoed back to the client. (Before, the wide range
/// opened every UDP port of the box.)
#[test]
fn a_range_containing_the_box_does_not_open_its_services() {
    let ns = Netns::new(16);
    let (box_ip, lan_ip) = (ns.host, ns.inside[0]);
    let echo = Echo::on(box_ip);
    let lan_host = ns.run(move || UdpSocket::bind((lan_ip, 0)).unwrap());
    lan_host
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let service = echo.addr.to_string();

    let wide = Daemon::start(&format!(
        "relay_ip = \"{box_ip}\"\nallow_peers = [\"10.0.0.0/8\"]"
    ));
    let c = Client::new(&wide, "alice");
    let ok = c.allocate();
    assert_eq!(code(&ok), 200);
    let relayed = relayed_of(&ok);
    assert_eq!(relayed.ip(), box_ip);

    // The LAN host is a peer: a Send reaches it, its answer reaches the client.
    let lan = lan_host.local_addr().unwrap().to_string();
    assert_eq!(code(&c.authed(|| with_peer(CREATE_PERMISSION, &lan))), 200);
    c.sock
        .send_to(&send_indication(&lan, b"hello LAN"), wide.turn)
        .unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = lan_host
        .recv_from(&mut buf)
        .expect("the LAN host hears the Send");
    assert_eq!((&buf[..n], from), (&b"hello LAN"[..], relayed));
    lan_host.send_to(b"hello client", relayed).unwrap();
    assert_eq!(data_of(&c).as_deref(), Some(&b"hello client"[..]));

    // The box's own echo service is not.
    let refusals = wide.metric("switchboard_turn_peer_refusals_total");
    let bind = c.authed(|| {
        let mut w = with_peer(CHANNEL_BIND, &service);
        w.add_attribute(&ChannelNumber::new(0x4000)).unwrap();
        w
    });
    assert_eq!(code(&bind), 403, "ChannelBind {service}");
    assert_eq!(
        code(&c.authed(|| with_peer(CREATE_PERMISSION, &service))),
        200,
        "a permission is per address: the box's relay ports stay peers"
    );
    c.sock
        .send_to(&send_indication(&service, b"SELECT secrets"), wide.turn)
        .unwrap();
    assert_eq!(data_of(&c), None, "the service's echo came back");
    assert_eq!(echo.heard(), 0, "the service heard the relay");
    assert!(
        wait_until(Duration::from_secs(3), || wide
            .metric("switchboard_turn_peer_refusals_total")
            == refusals + 2),
        "the ChannelBind and the Send are counted as refusals"
    );
    drop(wide);

    // Named alone, with its port, the address opens that service.
    let port = echo.addr.port();
    let named = Daemon::start(&format!(
        "relay_ip = \"{box_ip}\"\nallow_peers = [\"10.0.0.0/8\", \"{box_ip}:{port}-{port}\"]"
    ));
    let c = Client::new(&named, "alice");
    assert_eq!(code(&c.allocate()), 200);
    assert_eq!(
        code(&c.authed(|| with_peer(CREATE_PERMISSION, &service))),
        200
    );
    c.sock
        .send_to(&send_indication(&service, b"ping"), named.turn)
        .unwrap();
    assert_eq!(data_of(&c).as_deref(), Some(&b"ping"[..]), "the echo");
    assert_eq!(echo.heard(), 1);
}

/// The payload of the next Data indication to `c`, if one comes within its read timeout.
fn data_of(c: &Client) -> Option<Vec<u8>> {
    let mut buf = [0u8; 1500];
    let (n, _) = c.sock.recv_from(&mut buf).ok()?;
    let msg = Message::from_bytes(&buf[..n]).expect("a Data indication");
    Some(msg.attribute::<Data>().unwrap().data().to_vec())
}

/// A UDP echo service on a port of its own, answering until dropped (for 30 s at most).
struct Echo {
    addr: SocketAddr,
    heard: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Echo {
    fn on(ip: Ipv4Addr) -> Echo {
        let sock = UdpSocket::bind((ip, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let (heard, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (h, s) = (heard.clone(), stop.clone());
        let addr = sock.local_addr().unwrap();
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(30);
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) && Instant::now() < until {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    h.fetch_add(1, Ordering::Relaxed);
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        Echo { addr, heard, stop }
    }

    /// Datagrams heard so far.
    fn heard(&self) -> u64 {
        self.heard.load(Ordering::Relaxed)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Allocates, permits 127.0.0.1, has a plain local socket (not a relay port) send to the
/// relayed address, and says whether the client got it.
fn local_service_reaches_client(d: &Daemon) -> bool {
    let c = Client::new(d, "carol");
    let ok = c.allocate();
    assert_eq!(code(&ok), 200);
    let relayed = relayed_of(&ok);
    let perm = c.authed(|| with_peer(CREATE_PERMISSION, "127.0.0.1:1"));
    assert_eq!(code(&perm), 200);
    let local = UdpSocket::bind("127.0.0.1:0").unwrap();
    local.send_to(b"from a local service", relayed).unwrap();
    let mut buf = [0u8; 256];
    match c.sock.recv_from(&mut buf) {
        Ok((n, _)) => {
            let msg = Message::from_bytes(&buf[..n]).expect("a Data indication");
            let data = msg.attribute::<turn_types::attribute::Data>().unwrap();
            assert_eq!(data.data(), b"from a local service");
            true
        }
        Err(_) => false,
    }
}

#[test]
fn unrefreshed_allocation_expires() {
    // turn.max_lifetime caps every lifetime granted; 2 s makes expiry observable here.
    let d = Daemon::start("max_lifetime = \"2s\"");
    let c = Client::new(&d, "alice");
    let bytes = c.allocate();
    assert_eq!(code(&bytes), 200);
    let msg = Message::from_bytes(&bytes).unwrap();
    assert_eq!(msg.attribute::<Lifetime>().unwrap().seconds(), 2);
    let relayed = relayed_of(&bytes);
    // A Refresh is answered within the cap...
    let refresh = || {
        let mut w = request(REFRESH);
        w.add_attribute(&Lifetime::new(600)).unwrap();
        w
    };
    let bytes = c.authed(refresh);
    assert_eq!(code(&bytes), 200);
    let msg = Message::from_bytes(&bytes).unwrap();
    assert_eq!(msg.attribute::<Lifetime>().unwrap().seconds(), 2);
    // ...and without another one the allocation and its relay socket go away.
    let line = d
        .wait_log(Duration::from_secs(6), |l| l.contains("allocation closed"))
        .expect("the allocation expired");
    assert_eq!(common::field(&line, "reason"), Some("expired"));
    assert_eq!(code(&c.authed(refresh)), 437);
    // Its port is free again: this process can bind it.
    assert!(
        UdpSocket::bind(relayed).is_ok(),
        "relay socket {relayed} closed"
    );
}

/// A port free right now for UDP and TCP on both wildcard addresses, as the daemon binds it
/// (a port only checked for UDP on loopback may be a busy machine's ephemeral TCP port).
fn wildcard_port() -> u16 {
    // std's sockets on `[::]` are dual-stack here (the daemon's are IPv6-only): holding UDP and
    // TCP on `[::]:port` shows the port free in both families.
    for _ in 0..100 {
        let Ok(udp) = UdpSocket::bind("[::]:0") else {
            continue;
        };
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("::", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for UDP and TCP on both wildcard addresses in 100 tries");
}

#[test]
fn wildcard_listeners_for_both_families_share_a_port() {
    // `[::]` is IPv6-only, so it and `0.0.0.0` bind the same port, and an IPv4 client is
    // answered with an IPv4 XOR-MAPPED-ADDRESS.
    let port = wildcard_port();
    let d = Daemon::start(&format!("listen = [\"0.0.0.0:{port}\", \"[::]:{port}\"]"));
    for (client, server) in [("127.0.0.1:0", "127.0.0.1"), ("[::1]:0", "::1")] {
        let sock = UdpSocket::bind(client).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let server: std::net::IpAddr = server.parse().unwrap();
        let req = request(Method::new(0x0001)).finish();
        sock.send_to(&req, (server, port)).unwrap();
        let mut buf = [0u8; 256];
        let (n, _) = sock.recv_from(&mut buf).expect("a Binding answer");
        let msg = Message::from_bytes(&buf[..n]).unwrap();
        let mapped = msg
            .attribute::<stun_types::attribute::XorMappedAddress>()
            .unwrap()
            .addr(msg.transaction_id());
        assert_eq!(mapped, sock.local_addr().unwrap());
    }
    drop(d);
}
