//! TURN over TCP and TLS against the real daemon, with a client written here over real
//! sockets: the certificate reload on SIGHUP under a live allocation, and the bounds on
//! connections (malformed frames, the connection cap, the authentication and handshake
//! deadlines, a reader that stops reading). The cap per source is in `relay_flood`.

use crate::common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{code, nonce_of, request, Daemon, TestCert};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use stun_types::message::{Message, MessageWrite, MessageWriteExt, MessageWriteVec, BINDING};
use switchboard_turn::proto::stream::frame_len;
use turn_types::attribute::{ChannelNumber, Data, RequestedTransport, XorPeerAddress};
use turn_types::message::{ALLOCATE, CHANNEL_BIND};

const PEERS: &str = "allow_peers = [\"127.0.0.1/32\"]\n";

/// A TURN client on one stream (TCP, or TLS over TCP).
struct Client<S: Read + Write> {
    stream: S,
    username: String,
    password: String,
    /// Bytes read past the last frame.
    buf: Vec<u8>,
}

impl<S: Read + Write> Client<S> {
    fn new(stream: S, d: &Daemon, user: &str) -> Self {
        let (username, password) = d.credentials(user);
        Client {
            stream,
            username,
            password,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
    }

    /// The next frame (the socket's read timeout bounds the wait).
    fn frame(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(n) = frame_len(&self.buf).expect("the relay sends valid frames") {
                if self.buf.len() >= n {
                    return Ok(self.buf.drain(..n).collect());
                }
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn request(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.send(bytes);
        self.frame().expect("an answer")
    }

    fn seal(&self, w: MessageWriteVec, nonce: &str) -> Vec<u8> {
        common::seal(w, &self.username, &self.password, nonce)
    }

    /// Allocates (challenge, then authenticated) and binds channel 0x4000 to `peer`; returns
    /// the nonce for later requests.
    fn allocate_and_bind(&mut self, peer: SocketAddr) -> String {
        let challenge = self.request(&allocate().finish());
        assert_eq!(code(&challenge), 401);
        let nonce = nonce_of(&challenge);
        let answer = self.request(&self.seal(allocate(), &nonce));
        assert_eq!(code(&answer), 200, "Allocate");
        let mut w = request(CHANNEL_BIND);
        let txid = w.transaction_id();
        w.add_attribute(&XorPeerAddress::new(peer, txid)).unwrap();
        w.add_attribute(&ChannelNumber::new(0x4000)).unwrap();
        let answer = self.request(&self.seal(w, &nonce));
        assert_eq!(code(&answer), 200, "ChannelBind");
        nonce
    }

    /// ChannelData to the peer, and the peer's echo back as ChannelData (padded: a stream).
    fn round_trip(&mut self, peer: &UdpSocket, payload: &[u8]) {
        self.send(&channel_data(payload, true));
        let mut buf = [0u8; 2048];
        let (n, relayed) = peer.recv_from(&mut buf).expect("the peer receives");
        assert_eq!(&buf[..n], payload);
        peer.send_to(&buf[..n], relayed).unwrap();
        let frame = self.frame().expect("the echo comes back");
        assert_eq!(frame, channel_data(payload, true));
    }
}

fn allocate() -> MessageWriteVec {
    let mut w = request(ALLOCATE);
    w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
        .unwrap();
    w
}

/// ChannelData on channel 0x4000, padded to four bytes when `stream`.
fn channel_data(payload: &[u8], stream: bool) -> Vec<u8> {
    let mut v = vec![0x40, 0x00];
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    if stream {
        v.resize(v.len().next_multiple_of(4), 0);
    }
    v
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn peer() -> UdpSocket {
    let p = UdpSocket::bind("127.0.0.1:0").unwrap();
    p.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    p
}

/// A peer, and a TCP client relaying to it on channel 0x4000 (one round trip done).
fn relaying(d: &Daemon, user: &str) -> (UdpSocket, Client<TcpStream>) {
    let peer = peer();
    let mut client = Client::new(tcp(d.turn), d, user);
    client.allocate_and_bind(peer.local_addr().unwrap());
    client.round_trip(&peer, b"first");
    (peer, client)
}

/// Whether the relay has closed `s` (EOF or reset) within `within`.
fn closed_by_relay(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 512];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A TLS connection to the relay (TLS 1.3, or 1.2 when `v12`), its handshake completed, or
/// the handshake's error. `trusted` is the only root: the relay must present that certificate
/// (for `localhost`), verified as any client would.
fn tls_trusting(addr: SocketAddr, trusted: &TestCert, v12: bool) -> Result<Tls, io::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if v12 {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(trusted.der.clone()))
        .unwrap();
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let mut s = StreamOwned::new(conn, tcp(addr));
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// [`tls_trusting`] that must succeed, and whose relay presented `trusted` itself.
fn tls(addr: SocketAddr, trusted: &TestCert, v12: bool) -> Tls {
    let s = tls_trusting(addr, trusted, v12).expect("TLS handshake with the trusted certificate");
    let presented = s.conn.peer_certificates().expect("a certificate");
    assert_eq!(
        presented[0].as_ref(),
        trusted.der,
        "the certificate presented"
    );
    s
}

#[test]
fn tls_certificate_reloads_on_sighup_and_live_allocations_keep_relaying() {
    let certs = tempfile::tempdir().unwrap();
    let first = TestCert::generate(certs.path(), "turn");
    let d = Daemon::start(&format!("{PEERS}{}", first.turn_config()));
    let addr = d.tls.expect("a TLS listener");
    let peer = peer();
    let peer_addr = peer.local_addr().unwrap();

    // An allocation over TLS 1.3, relaying both ways.
    let mut live = Client::new(tls(addr, &first, false), &d, "alice");
    live.allocate_and_bind(peer_addr);
    live.round_trip(&peer, b"before the reload");

    // Replace the files (the same paths), then SIGHUP.
    let second = TestCert::generate(certs.path(), "turn");
    assert_ne!(first.der, second.der);
    d.sighup();
    let want = switchboard_turn::io::fingerprint(&second.der);
    let line = d
        .wait_log(Duration::from_secs(5), |l| {
            l.contains("turn certificate reloaded")
        })
        .expect("the daemon logs the reload");
    assert!(line.contains(&want), "{line} (want {want})");

    // New handshakes, TLS 1.3 and 1.2, present the new certificate (a client that trusts
    // only the old one now fails)...
    for v12 in [false, true] {
        assert!(tls_trusting(addr, &first, v12).is_err());
        let mut fresh = Client::new(tls(addr, &second, v12), &d, "bob");
        let answer = fresh.request(&request(BINDING).finish());
        assert_eq!(code(&answer), 200);
    }
    // ...while the allocation made before keeps relaying on its session.
    for i in 0..20 {
        live.round_trip(&peer, format!("after the reload {i}").as_bytes());
    }

    // A reload that fails (a key that is not the certificate's) keeps the one in use.
    std::fs::copy(&first.key, &second.key).unwrap();
    d.sighup();
    d.wait_log(Duration::from_secs(5), |l| {
        l.contains("turn certificate not reloaded")
    })
    .expect("the daemon logs the failed reload");
    let _ = Client::new(tls(addr, &second, false), &d, "carol");
    live.round_trip(&peer, b"still relaying");
}

#[test]
fn a_malformed_frame_closes_that_connection_only() {
    let d = Daemon::start(PEERS);
    let (peer, mut good) = relaying(&d, "alice");

    // Not STUN, not ChannelData; a STUN header with no magic cookie; HTTP; ChannelData before
    // any allocation: each closes its connection.
    let garbage: [&[u8]; 4] = [
        &[0xff; 32],
        &[0x00, 0x01, 0x00, 0x00, 0xde, 0xad, 0xbe, 0xef],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        &channel_data(b"x", true),
    ];
    for bytes in garbage {
        let mut bad = tcp(d.turn);
        bad.write_all(bytes).unwrap();
        assert!(
            closed_by_relay(&mut bad, Duration::from_secs(3)),
            "{bytes:?} left the connection open"
        );
    }
    // A frame cut across many writes is reassembled.
    let mut slow = Client::new(tcp(d.turn), &d, "bob");
    let binding = request(BINDING).finish();
    for b in &binding {
        slow.send(std::slice::from_ref(b));
    }
    assert_eq!(code(&slow.frame().unwrap()), 200);
    // The good connection and its allocation were never disturbed.
    good.round_trip(&peer, b"second");
}

#[test]
fn connections_are_capped_and_must_authenticate_in_time() {
    let d = Daemon::start(&format!("{PEERS}max_connections = 2\n"));
    let (peer, mut a) = relaying(&d, "alice");
    let mut idle = tcp(d.turn);
    // The third is closed on accept.
    let mut third = tcp(d.turn);
    assert!(closed_by_relay(&mut third, Duration::from_secs(3)));
    // The idle one, which never allocates, is closed after the 10 s deadline, not before.
    let start = Instant::now();
    assert!(closed_by_relay(&mut idle, Duration::from_secs(15)));
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(7),
        "closed after {waited:?}, before its deadline"
    );
    // Its slot is free again; the authenticated one is untouched by the deadline.
    let mut again = Client::new(tcp(d.turn), &d, "bob");
    assert_eq!(code(&again.request(&request(BINDING).finish())), 200);
    a.round_trip(&peer, b"still here");
}

/// A TLS client that never finishes its handshake is closed at the handshake deadline (5 s),
/// before the 10 s a connection has to authenticate, and meanwhile delays no other client's
/// handshake (they run off the relay thread, side by side).
#[test]
fn a_tls_handshake_must_end_in_time_and_a_stalled_one_delays_no_other() {
    let cert = TestCert::new();
    let d = Daemon::start(&format!("{PEERS}{}", cert.turn_config()));
    let addr = d.tls.unwrap();
    let started = Instant::now();
    let mut stalled = tcp(addr);
    stalled.write_all(&[0x16, 0x03, 0x01]).unwrap(); // A record header, cut short.
    let mut other = Client::new(tls(addr, &cert, true), &d, "bob");
    assert_eq!(code(&other.request(&request(BINDING).finish())), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the other handshake waited"
    );
    assert!(closed_by_relay(&mut stalled, Duration::from_secs(8)));
    let waited = started.elapsed();
    assert!(
        (Duration::from_secs(4)..Duration::from_secs(8)).contains(&waited),
        "closed after {waited:?}"
    );
}

#[test]
fn a_client_that_stops_reading_cannot_pin_memory() {
    let d = Daemon::start(PEERS);
    let (peer, mut client) = relaying(&d, "alice");
    client.send(&channel_data(b"where are you", true));
    let mut buf = [0u8; 64];
    let (_, relayed) = peer.recv_from(&mut buf).unwrap();
    let before = d.rss_kib();
    // 60 MiB toward a client that reads nothing, paced in bursts so the relay's UDP socket
    // buffer is not the thing that drops it all.
    let payload = vec![0x5a; 1200];
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..52_000 {
        peer.send_to(&payload, relayed).unwrap();
        if i % 64 == 63 {
            std::thread::sleep(Duration::from_micros(500));
        }
        if Instant::now() > deadline {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = d.rss_kib();
    let grown = after.saturating_sub(before);
    eprintln!("daemon RSS {before} KiB -> {after} KiB under the flood");
    assert!(
        grown < 8 * 1024,
        "RSS grew {grown} KiB ({before} -> {after}) for one stalled client"
    );
    // The client reads again: the stream is intact (every frame whole), and live.
    let mut frames = 0;
    client
        .stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    while let Ok(f) = client.frame() {
        assert_eq!(f, channel_data(&payload, true));
        frames += 1;
    }
    assert!(frames > 0);
    eprintln!("{frames} whole frames read after the stall");
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.round_trip(&peer, b"recovered");
}

/// A near-64 KiB datagram from a permitted peer without a channel becomes a Data indication
/// of about 64 KiB: it crosses TLS whole, and the connection goes on.
#[test]
fn a_near_64k_data_indication_crosses_tls_whole() {
    let cert = TestCert::new();
    let d = Daemon::start(&format!("{PEERS}{}", cert.turn_config()));
    let p1 = peer();
    let mut client = Client::new(tls(d.tls.unwrap(), &cert, false), &d, "alice");
    client.allocate_and_bind(p1.local_addr().unwrap());
    client.send(&channel_data(b"hello", true));
    let mut buf = [0u8; 64];
    let (_, relayed) = p1.recv_from(&mut buf).unwrap();
    // Same IP (permitted), another port (no channel): a Data indication.
    let p2 = peer();
    let big = vec![0xa5; 65_507]; // The largest IPv4 UDP payload: a 65,544-byte message.
    p2.send_to(&big, relayed).unwrap();
    let frame = client.frame().expect("the Data indication");
    let msg = Message::from_bytes(&frame).expect("a whole STUN message");
    assert_eq!(msg.attribute::<Data>().unwrap().data(), &big[..]);
    client.round_trip(&p1, b"and the connection goes on");
}
